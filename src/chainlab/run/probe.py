"""What a scenario's probe runs, and where (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from chainlab.errors import ChainlabError
from chainlab.labstate import LabState
from chainlab.scenario import Endpoint, PingProbe, Scenario


@dataclass(frozen=True)
class ProbeSpec:
    """argv to run on `host`'s shell, or inside `container` (on `host`) via docker exec;
    `seconds`: how long it runs at most when the network drops every packet."""

    host: str
    container: str | None
    argv: tuple[str, ...]
    target_address: str
    seconds: float

    @property
    def where(self) -> str:
        return f"{self.container} (on {self.host})" if self.container else self.host


def locate(state: LabState, endpoint: Endpoint) -> tuple[str, str]:
    """(host it runs on, its address) of a scenario endpoint, from the lab state."""
    if endpoint.host:
        if endpoint.host not in state.hosts:
            raise ChainlabError(f"host {endpoint.host} is not in the lab state; is it in the inventory and provisioned?")
        return endpoint.host, str(state.hosts[endpoint.host].address)
    assert endpoint.container is not None
    if endpoint.container not in state.containers:
        raise ChainlabError(f"container {endpoint.container} is not in the lab state; run lab up")
    container = state.containers[endpoint.container]
    return container.host, str(container.address)


def build_probe(scenario: Scenario, state: LabState) -> ProbeSpec:
    """ping -c N -W 1 ADDR, or a TCP connect to ADDR:PORT with a 2 s timeout.

    In a container, busybox `nc ... -e true` (connect, then close; busybox-static's
    `wget -T` segfaults). On a host shell, bash's /dev/tcp, which every target OS has.
    """
    _, address = locate(state, scenario.target)
    host, _ = locate(state, scenario.source)
    if isinstance(scenario.probe, PingProbe):
        argv: tuple[str, ...] = ("ping", "-c", str(scenario.probe.count), "-W", "1", "-i", "0.2", address)
        seconds = 0.2 * (scenario.probe.count - 1) + 1
    else:
        port = str(scenario.probe.port)
        if scenario.source.container:
            argv = ("nc", "-w", "2", address, port, "-e", "true")
        else:
            argv = ("timeout", "2", "bash", "-c", 'exec 3<>"/dev/tcp/$1/$2"', "bash", address, port)
        seconds = 2
    return ProbeSpec(host, scenario.source.container, argv, address, seconds)
