"""What a probe runs, where, and what listens at the other end (pure).

A probe goes from an endpoint of the lab (a host's shell, or a container) to another
endpoint or an address: ICMP echo (`ping`), a TCP connect, or a UDP datagram that
expects one back. Probes of one run go to each source host as one shell script that runs
them all at once (`remote.batch.Batch`), so 30 probes cost 3 SSH round
trips, not 30.

- ICMP and TCP run where the source is: its host's shell, or `docker exec` in the
  container (busybox `ping` and `nc` in the test image; bash's /dev/tcp on a host).
- UDP: busybox has no UDP client or server that answers (its `nc` is the small one,
  without `-u`), so a few lines of Python on the host (python3, or CentOS 7's python)
  send and listen, inside the container's network namespace (`nsenter -n`) when the
  endpoint is a container. The packets take the same path as the container's own.
- A listener for TCP/UDP (`LISTENER`) is started in the target's network namespace
  before the probes and killed after; it also ends by itself after `life_s`. A port
  something already listens on (the test image's httpd on 80) is left to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from chainlab.errors import ChainlabError, InputError, Problem
from chainlab.labstate import LabState
from chainlab.scenario import Endpoint, PingProbe, Scenario
from chainlab.shell import command_line

Protocol = Literal["icmp", "tcp", "udp"]
PROTOCOLS: tuple[Protocol, ...] = ("icmp", "tcp", "udp")

#: The line a probe prints when its container is missing (the runner turns it into an error).
CONTAINER_GONE = "chainlab: no such container: "

#: Run Python with the script and arguments that follow: python3, else python (CentOS 7).
PYTHON = ("sh", "-c", 'exec "$(command -v python3 || command -v python)" "$@"', "python")

#: UDP client: argv ADDRESS PORT COUNT; one datagram at a time, exit 0 on the first answer.
UDP_CLIENT = r"""
import socket, sys
addr, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0 if count == 1 else 1.0)
s.connect((addr, port))
for i in range(count):
    try:
        s.send(("chainlab probe %d\n" % i).encode())
        data = s.recv(2048)
    except socket.timeout:
        print("datagram %d: no answer" % i)
        continue
    except socket.error as exc:
        print("datagram %d: %s" % (i, exc))
        continue
    print("datagram %d: answer of %d bytes from %s:%d" % (i, len(data), addr, port))
    sys.exit(0)
sys.exit(1)
"""

#: Listener: argv PROTO PORT LIFE_S. Prints `busy` (something listens there already) or
#: `listening PID` once bound, then serves in the background: TCP accepts and closes,
#: UDP echoes each datagram. It ends after LIFE_S seconds at the latest.
LISTENER = r"""
import os, socket, sys, time
proto, port, life = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
if proto == "tcp":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", port))
except socket.error:
    print("busy")
    sys.exit(0)
if proto == "tcp":
    s.listen(128)
pid = os.fork()
if pid:
    print("listening %d" % pid)
    sys.stdout.flush()
    os._exit(0)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
end = time.time() + life
while time.time() < end:
    s.settimeout(max(end - time.time(), 0.01))
    try:
        if proto == "tcp":
            s.accept()[0].close()
        else:
            data, peer = s.recvfrom(2048)
            s.sendto(data, peer)
    except socket.timeout:
        break
    except socket.error:
        pass
"""


@dataclass(frozen=True)
class Place:
    """An endpoint of the lab: a host, or a container on a host, and its address."""

    name: str
    host: str
    address: str
    container: str | None = None

    @property
    def where(self) -> str:
        return f"{self.container} (on {self.host})" if self.container else self.host


@dataclass(frozen=True)
class ProbeRequest:
    """What to probe, as a user says it: endpoint names (or an address as target)."""

    source: str
    target: str
    protocol: Protocol = "icmp"
    port: int | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError([Problem("probe", "protocol", f"{self.protocol!r} is not one of {', '.join(PROTOCOLS)}")])
        if (self.protocol == "icmp") != (self.port is None):
            raise InputError([Problem("probe", "port", "a port goes with tcp and udp, and only with them")])
        if self.port is not None and not 1 <= self.port <= 65535:
            raise InputError([Problem("probe", "port", f"{self.port} is not a port (1-65535)")])
        if not 1 <= self.count <= 100:
            raise InputError([Problem("probe", "count", f"{self.count} is not between 1 and 100")])
        if self.protocol == "tcp" and self.count != 1:
            raise InputError([Problem("probe", "count", "is for icmp and udp: a tcp probe makes one connection")])

    @property
    def service(self) -> str:
        """`icmp`, `tcp/80`, `udp/53`."""
        return self.protocol if self.port is None else f"{self.protocol}/{self.port}"

    @property
    def label(self) -> str:
        return f"{self.source} → {self.target} {self.service}"


@dataclass(frozen=True)
class ProbeSpec:
    """A planned probe: `argv` runs on `source.host`'s shell, in `source.container` via
    docker exec, or (`netns`) on the host inside the container's network namespace."""

    request: ProbeRequest
    source: Place
    target: Place | None  # None: an address that is no endpoint of the lab
    target_address: str
    argv: tuple[str, ...]
    shown: str  # the command as people read it (the UDP client's script elided)
    netns: bool = False
    listen: bool = False  # start a listener on the target's port first

    @property
    def host(self) -> str:
        return self.source.host

    @property
    def container(self) -> str | None:
        return self.source.container

    @property
    def where(self) -> str:
        return self.source.where

    @property
    def protocol(self) -> Protocol:
        return self.request.protocol

    @property
    def port(self) -> int | None:
        return self.request.port

    @property
    def seconds(self) -> float:
        """How long the probe runs at most when the network drops every packet (the
        runner's deadline for it adds a margin for docker exec and the round trip)."""
        return probe_seconds(self.request.protocol, self.request.count)


def _place(state: LabState, name: str, kind: Literal["host", "container"] | None) -> Place | None:
    host = state.hosts.get(name) if kind in (None, "host") else None
    container = state.containers.get(name) if kind in (None, "container") else None
    if host is not None and container is not None:
        raise InputError([Problem("probe", name, "is both a host and a container of the lab; rename one")])
    if host is not None:
        return Place(name, name, str(host.address))
    if container is not None:
        return Place(name, container.host, str(container.address), container=name)
    return None


def locate(state: LabState, endpoint: Endpoint) -> tuple[str, str]:
    """(host it runs on, its address) of a scenario endpoint, from the lab state."""
    place = _place(state, endpoint.label, "host" if endpoint.host else "container")
    if place is None:
        hint = "is it in the inventory and provisioned?" if endpoint.host else "run lab up"
        raise ChainlabError(f"{'host' if endpoint.host else 'container'} {endpoint.label} is not in the lab state; {hint}")
    return place.host, place.address


def endpoint_names(state: LabState) -> list[str]:
    """Every host, then every container of the lab."""
    return [*state.hosts, *state.containers]


def resolve(state: LabState, name: str, *, address_ok: bool = False) -> Place | str:
    """The endpoint called `name`, or (`address_ok`) the address it spells: the endpoint
    with that address if there is one, else the address itself."""
    place = _place(state, name, None)
    if place is not None:
        return place
    if address_ok:
        try:
            ip = IPv4Address(name)
        except ValueError:
            pass
        else:
            if ip.is_unspecified or ip.is_multicast or ip.is_reserved:  # a host's own loopback is a fair question
                raise InputError([Problem("probe", name, "is no address of one endpoint (unspecified, multicast or"
                                                         " reserved): give a host, a container or an address")])
            address = str(ip)
            return next((p for n in endpoint_names(state)
                         if (p := _place(state, n, None)) is not None and p.address == address), address)
    known = ", ".join(endpoint_names(state))
    what = "a host, a container or an IPv4 address" if address_ok else "a host or a container"
    raise InputError([Problem("probe", name, f"is not {what} of lab {state.lab} ({known})")])


def probe_argv(protocol: Protocol, address: str, port: int | None, count: int, from_container: bool) -> tuple[str, ...]:
    """ping -c N -W 1 ADDR, a TCP connect to ADDR:PORT with a 2 s timeout, or the UDP client.

    TCP in a container is busybox `nc ... -e true` (connect, then close; busybox-static's
    `wget -T` segfaults); on a host shell, bash's /dev/tcp, which every target OS has.
    """
    if protocol == "icmp":
        return ("ping", "-c", str(count), "-W", "1", "-i", "0.2", address)
    if protocol == "tcp":
        if from_container:
            return ("nc", "-w", "2", address, str(port), "-e", "true")
        return ("timeout", "2", "bash", "-c", 'exec 3<>"/dev/tcp/$1/$2"', "bash", address, str(port))
    return (*PYTHON, "-c", UDP_CLIENT, address, str(port), str(count))


def probe_seconds(protocol: Protocol, count: int) -> float:
    """The longest `probe_argv`'s command runs: ping's -W 1 after its last request (sent
    every 0.2 s), the TCP connect's 2 s, the UDP client's 2 s for one datagram or 1 s each."""
    if protocol == "icmp":
        return 0.2 * (count - 1) + 1
    if protocol == "tcp":
        return 2.0
    return 2.0 if count == 1 else float(count)


def _shown(argv: tuple[str, ...]) -> str:
    if UDP_CLIENT in argv:
        return "python -c <udp client> " + " ".join(argv[argv.index(UDP_CLIENT) + 1:])
    return " ".join(argv)


def plan_probe(request: ProbeRequest, state: LabState, *, listen: bool = True,
               source_kind: Literal["host", "container"] | None = None,
               target_kind: Literal["host", "container"] | None = None) -> ProbeSpec:
    """The probe of `request` on the lab of `state`."""
    if source_kind is None:
        source = resolve(state, request.source)
    else:
        source = _place(state, request.source, source_kind) or resolve(state, request.source)
    target = (_place(state, request.target, target_kind) if target_kind else None) \
        or resolve(state, request.target, address_ok=True)
    assert isinstance(source, Place)
    address = target.address if isinstance(target, Place) else target
    if isinstance(target, Place) and target.name == source.name:
        raise InputError([Problem("probe", request.target, "is the source itself")])
    argv = probe_argv(request.protocol, address, request.port, request.count, source.container is not None)
    return ProbeSpec(
        request, source, target if isinstance(target, Place) else None, address, argv, _shown(argv),
        netns=request.protocol == "udp" and source.container is not None,
        listen=listen and request.protocol != "icmp" and isinstance(target, Place),
    )


def build_probe(scenario: Scenario, state: LabState) -> ProbeSpec:
    """A scenario's probe (no listener is started: the scenario states what listens)."""
    locate(state, scenario.target)
    locate(state, scenario.source)
    probe = scenario.probe
    request = ProbeRequest(
        scenario.source.label, scenario.target.label,
        "icmp" if isinstance(probe, PingProbe) else "tcp",
        None if isinstance(probe, PingProbe) else probe.port,
        probe.count if isinstance(probe, PingProbe) else 1,
    )
    return plan_probe(request, state, listen=False,
                      source_kind="host" if scenario.source.host else "container",
                      target_kind="host" if scenario.target.host else "container")


# --- shell text for the source's host ------------------------------------------------

def _in_container(container: str, command: str, netns: bool) -> str:
    """`command` in `container`: docker exec, or (netns) its network namespace only."""
    q = command_line([container])
    gone = f"{{ echo {command_line([CONTAINER_GONE + container])}; exit 125; }}"
    if netns:  # one inspect: the PID, or the container is gone
        return (f"pid=$(docker inspect --type container -f '{{{{.State.Pid}}}}' {q} 2>/dev/null) || {gone}; "
                f"nsenter -t \"$pid\" -n {command}")
    return f"docker inspect --type container {q} >/dev/null 2>&1 || {gone}; docker exec {q} {command}"


def probe_command(spec: ProbeSpec) -> str:
    """The probe as one command for the shell of `spec.host`."""
    command = command_line(spec.argv)
    return command if spec.container is None else _in_container(spec.container, command, spec.netns)


@dataclass(frozen=True)
class ListenerSpec:
    place: Place
    protocol: Literal["tcp", "udp"]
    port: int

    def command(self, life_s: float) -> str:
        """Start the listener in the place's network namespace; prints `busy` or `listening PID`."""
        command = command_line([*PYTHON, "-c", LISTENER, self.protocol, str(self.port), f"{life_s:g}"])
        return command if self.place.container is None else _in_container(self.place.container, command, netns=True)


def listeners_for(specs: list[ProbeSpec]) -> list[ListenerSpec]:
    """One listener per target place, protocol and port the probes need."""
    out: list[ListenerSpec] = []
    for spec in specs:
        if spec.listen and spec.target is not None and spec.port is not None and spec.protocol != "icmp":
            listener = ListenerSpec(spec.target, spec.protocol, spec.port)
            if listener not in out:
                out.append(listener)
    return out


def parse_listener(output: str) -> int | None:
    """The PID of a listener we started, or None when the port was already taken."""
    words = output.split()
    if words[:1] == ["busy"]:
        return None
    if len(words) == 2 and words[0] == "listening" and words[1].isdigit():
        return int(words[1])
    raise ChainlabError(f"the listener did not start: {output.strip()[-300:] or 'no output'}")
