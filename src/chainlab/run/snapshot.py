"""What a run records of each host before the probe, in the round trip that marks its log
(pure: the shell text and the parsing of its output).

Rules with counters (`iptables-save -c`), routes (`ip route`), and the state of the
scenario's containers on that host (`docker inspect`), so that a stopped or missing
source or target container is an error before anything is probed, not a FAIL after.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

ROUTES_SEPARATOR = "#### chainlab: routes ####"
CONTAINERS_SEPARATOR = "#### chainlab: containers ####"
RUNNING = "running"


@dataclass(frozen=True)
class Snapshot:
    rules: str
    routes: str
    #: container name → docker's State.Status (`running`, `exited`, ...); absent: no such container
    containers: dict[str, str] = field(default_factory=dict)
    #: container name → its IPv4 addresses on its networks, as docker says them now
    addresses: dict[str, frozenset[str]] = field(default_factory=dict)
    #: docker's last complaint (e.g. `Error: No such container: web1`), for messages
    docker_said: str = ""


def snapshot_command(containers: Sequence[str]) -> str:
    """Shell text (names validated by the scenario schema, quoted all the same). A missing
    container is docker's exit 1: what it said is parsed, the round trip still succeeds."""
    text = f"iptables-save -c; echo {shlex.quote(ROUTES_SEPARATOR)}; ip route"
    if containers:
        names = " ".join(shlex.quote(c) for c in containers)
        text += (f"; echo {shlex.quote(CONTAINERS_SEPARATOR)}; "
                 "docker inspect --type container --format '{{.Name}} {{.State.Status}}"
                 f"{{{{range .NetworkSettings.Networks}}}} {{{{.IPAddress}}}}{{{{end}}}}' {names} 2>&1 || :")
    return text


def parse_snapshot(out: str) -> Snapshot:
    rules, _, rest = out.partition(ROUTES_SEPARATOR + "\n")
    routes, _, docker = rest.partition(CONTAINERS_SEPARATOR + "\n")
    states: dict[str, str] = {}
    addresses: dict[str, frozenset[str]] = {}
    said = ""
    for line in docker.splitlines():
        name, *words = line.split(" ")
        if name.startswith("/") and words and words[0]:
            states[name[1:]] = words[0]
            addresses[name[1:]] = frozenset(w for w in words[1:] if w)
        elif line.strip():
            said = line.strip()
    return Snapshot(rules, routes, states, addresses, said)


def route_sources(routes: str) -> frozenset[str]:
    """The addresses `ip route` names after `src`: the host's own addresses on its links. A
    masquerade gives a packet the address of the link it leaves by, which on a host with a
    management and a lab interface is not always the one the inventory connects to."""
    words = routes.split()
    return frozenset(words[i + 1] for i, word in enumerate(words[:-1]) if word == "src")


def container_problem(role: str, name: str, host: str, snapshot: Snapshot, address: str | None = None) -> str | None:
    """Why the scenario's `role` (source/target) container cannot take part, or None.
    `address`: the one the lab state gives it, which the probe and the search for its
    packets use; a container started again with another address would make a run see none."""
    status = snapshot.containers.get(name)
    if status is None:
        detail = f" (docker: {snapshot.docker_said})" if snapshot.docker_said else ""
        return f"{role} container {name} is gone from {host}{detail}: run lab up"
    if status != RUNNING:
        return f"{role} container {name} on {host} is {status}, not running: run lab up"
    now = snapshot.addresses.get(name)
    if address is not None and now and address not in now:
        return (f"{role} container {name} on {host} has address {', '.join(sorted(now))}, the lab state says"
                f" {address}: run lab up")
    return None
