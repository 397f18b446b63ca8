"""What a scenario's probe runs, and where (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from chainlab.errors import ChainlabError
from chainlab.labstate import LabState
from chainlab.scenario import Endpoint, PingProbe, Scenario


@dataclass(frozen=True)
class ProbeSpec:
    """argv to run on `host`'s shell, or inside `container` (on `host`) via docker exec."""

    host: str
    container: str | None
    argv: tuple[str, ...]
    target_address: str

    @property
    def where(self) -> str:
        return f"{self.container} (on {self.host})" if self.container else self.host


def endpoint_address(state: LabState, endpoint: Endpoint) -> str:
    if endpoint.host:
        if endpoint.host not in state.hosts:
            raise ChainlabError(f"host {endpoint.host} is not in the lab state; is it in the inventory and provisioned?")
        return state.hosts[endpoint.host].address
    assert endpoint.container is not None
    if endpoint.container not in state.containers:
        raise ChainlabError(f"container {endpoint.container} is not in the lab state; run lab up")
    return state.containers[endpoint.container].address


def endpoint_host(state: LabState, endpoint: Endpoint) -> str:
    if endpoint.host:
        return endpoint.host
    assert endpoint.container is not None
    if endpoint.container not in state.containers:
        raise ChainlabError(f"container {endpoint.container} is not in the lab state; run lab up")
    return state.containers[endpoint.container].host


def build_probe(scenario: Scenario, state: LabState) -> ProbeSpec:
    """ping -c N -W 1 ADDR, or a TCP connect (busybox wget) to ADDR:PORT."""
    address = endpoint_address(state, scenario.target)
    host = endpoint_host(state, scenario.source)
    if isinstance(scenario.probe, PingProbe):
        argv: tuple[str, ...] = ("ping", "-c", str(scenario.probe.count), "-W", "1", "-i", "0.2", address)
    else:
        wget = ("wget", "-q", "-O", "/dev/null", "-T", "2", f"http://{address}:{scenario.probe.port}/")
        argv = wget if scenario.source.container else ("busybox", *wget)
    return ProbeSpec(host, scenario.source.container, argv, address)
