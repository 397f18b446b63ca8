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
    #: docker's last complaint (e.g. `Error: No such container: web1`), for messages
    docker_said: str = ""


def snapshot_command(containers: Sequence[str]) -> str:
    """Shell text (names validated by the scenario schema, quoted all the same). A missing
    container is docker's exit 1: what it said is parsed, the round trip still succeeds."""
    text = f"iptables-save -c; echo {shlex.quote(ROUTES_SEPARATOR)}; ip route"
    if containers:
        names = " ".join(shlex.quote(c) for c in containers)
        text += (f"; echo {shlex.quote(CONTAINERS_SEPARATOR)}; "
                 f"docker inspect --type container --format '{{{{.Name}}}} {{{{.State.Status}}}}' {names} 2>&1 || :")
    return text


def parse_snapshot(out: str) -> Snapshot:
    rules, _, rest = out.partition(ROUTES_SEPARATOR + "\n")
    routes, _, docker = rest.partition(CONTAINERS_SEPARATOR + "\n")
    states: dict[str, str] = {}
    said = ""
    for line in docker.splitlines():
        name, _, status = line.partition(" ")
        if name.startswith("/") and status and " " not in status:
            states[name[1:]] = status
        elif line.strip():
            said = line.strip()
    return Snapshot(rules, routes, states, said)


def route_sources(routes: str) -> frozenset[str]:
    """The addresses `ip route` names after `src`: the host's own addresses on its links. A
    masquerade gives a packet the address of the link it leaves by, which on a host with a
    management and a lab interface is not always the one the inventory connects to."""
    words = routes.split()
    return frozenset(words[i + 1] for i, word in enumerate(words[:-1]) if word == "src")


def container_problem(role: str, name: str, host: str, snapshot: Snapshot) -> str | None:
    """Why the scenario's `role` (source/target) container cannot take part, or None."""
    status = snapshot.containers.get(name)
    if status is None:
        detail = f" (docker: {snapshot.docker_said})" if snapshot.docker_said else ""
        return f"{role} container {name} is gone from {host}{detail}: run lab up"
    if status != RUNNING:
        return f"{role} container {name} on {host} is {status}, not running: run lab up"
    return None
