"""Where lab up looks at the Calico network: on the host that creates it, and only there."""

from __future__ import annotations

from pathlib import Path

from chainlab.inventory import load_inventory
from chainlab.networks import network_for
from chainlab.providers import provider_for
from chainlab.provision.dockerview import DockerView, inspect_argv

ROOT = Path(__file__).resolve().parents[2]
NETWORK = '{"Name":"net1","Driver":"calico","IPAM":{"Driver":"calico-ipam"}}\n'


class _Engine:
    """A connected host whose prefetched view has no networks; `read` answers like dockerd."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.reads: list[list[str]] = []

    def docker_view(self) -> DockerView:
        return DockerView()

    def read(self, argv: list[str]) -> str:
        self.reads.append(argv)
        return NETWORK


def test_only_the_first_host_inspects_the_networks_and_a_stand_in_asks_for_them():
    inv = load_inventory(ROOT / "lab" / "local.yaml")
    network = network_for(inv, provider_for(inv))
    first, *others = inv.hosts
    assert network.docker_names(first) == network.networks() != []
    assert all(network.docker_names(h) == [] for h in others)
    stand_in = _Engine(others[0])  # the first host did not connect
    assert network._existing(stand_in, "net1")
    assert stand_in.reads == [inspect_argv(networks=["net1"])]
