"""Network kind `bridge`: Docker's own bridge networking (the second reference, scenario 7)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from chainlab.labstate import ContainerState
from chainlab.networks.base import LABEL, HostStep, Network
from chainlab.provision.actions import Action, Outcome
from chainlab.provision.commands import veth_for_ifindex
from chainlab.provision.context import HostContext


LINKS_PROBE = ["ip", "-o", "link", "show"]


def _iflink_probe(container: str) -> list[str]:
    return ["docker", "exec", container, "cat", "/sys/class/net/eth0/iflink"]


class BridgeNetwork(Network):
    kind = "bridge"

    def network_name(self, container: str) -> str:
        return self.inv.containers[container].network or "bridge"

    def run_options(self, container: str) -> tuple[dict[str, Any], str]:
        spec = self.inv.containers[container]
        network = self.network_name(container)
        ports = {f"{cport}/tcp": hport for hport, cport in spec.publish.items()}
        words = " ".join([f"--net {network}", *(f"-p {h}:{c}" for h, c in spec.publish.items())])
        return {"network": network, "ports": ports}, words

    def before_container(self, ctx: HostContext, container: str) -> Generator[Action, Any, None]:
        network = self.network_name(container)
        if network == "bridge" or network in ctx.docker_view().networks:
            return
        yield ctx.call(f"docker network create --driver bridge --label {LABEL}={self.inv.lab} {network}",
                       lambda: ctx.docker().networks.create(network, driver="bridge", labels={LABEL: self.inv.lab}))

    def container_state(self, ctx: HostContext, attrs: dict[str, Any], container: str) -> ContainerState:
        network = self.network_name(container)
        address = attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        iflink = (ctx.read(_iflink_probe(container)) or "").strip()
        interface = None
        if iflink.isdigit():
            interface = veth_for_ifindex(ctx.read_held(LINKS_PROBE) or "", int(iflink))
        return ContainerState(host=ctx.host, address=address, network=network, driver="bridge",
                              interface=interface, published=dict(self.inv.containers[container].publish))

    def docker_names(self, host: str) -> list[str]:
        return sorted({self.network_name(c) for c, spec in self.inv.containers.items() if spec.host == host}
                      - {"bridge"})

    def up_probes(self, host: str) -> list[list[str]]:
        """The host-side veth of each container: its eth0's peer index, then the host's links."""
        mine = [c for c, spec in self.inv.containers.items() if spec.host == host]
        return [*(_iflink_probe(c) for c in mine), *([LINKS_PROBE] if mine else [])]

    def node_down(self) -> list[tuple[str, HostStep]]:
        return [("networks", self._remove_networks)]

    def _remove_networks(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        """The host's networks labelled with the lab (bridge networks are per host)."""
        if ctx.offline:
            for name in self.docker_names(ctx.host):
                yield ctx.call(f"docker network rm {name}   # only if labelled {LABEL}={self.inv.lab}", lambda: None)
            return "would remove the lab's networks", "no networks of the lab"
        removed = []
        for net in ctx.docker().networks.list(filters={"label": f"{LABEL}={self.inv.lab}"}):
            yield ctx.call(f"docker network rm {net.name}", net.remove)
            removed.append(net.name)
        return f"removed {', '.join(removed)}", "no networks of the lab"

    def describe(self) -> str:
        return "none (Docker bridge networking)"
