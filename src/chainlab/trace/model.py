"""The data that trace analysis produces: fields of a logged packet, steps, packets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chainlab.trace.ascii import lower


@dataclass(slots=True)
class Fields:
    """Packet header fields as one trace line shows them; None = absent or damaged."""

    src: str | None = None
    dst: str | None = None
    proto: str | None = None
    ip_id: int | None = None
    ttl: int | None = None
    in_if: str | None = None
    out_if: str | None = None
    mark: int | None = None
    icmp_type: int | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: frozenset[str] | None = None
    damaged: bool = False
    #: IPv6 flow label (FLOWLBL= / `ip6 flowlabel`), and the TCP sequence number: with the
    #: addresses and ports they tell apart packets that carry no IPv4 id.
    flow_label: int | None = None
    tcp_seq: int | None = None


def fill_missing(into: Fields, source: Fields, names: tuple[str, ...]) -> None:
    """Set each of `names` that `into` does not know (None) to what `source` knows."""
    for name in names:
        if getattr(into, name) is None:
            value = getattr(source, name)
            if value is not None:
                setattr(into, name, value)


@dataclass(slots=True)
class Step:
    """One trace event: the packet met `table:chain` (rule N matched, return, or policy)."""

    table: str
    chain: str
    kind: str
    position: int | None = None
    handle: str | None = None
    verdict: str | None = None
    rule: str | None = None
    mark: int | None = None
    line: int = 0
    time: str | None = None
    hook: str | None = None
    #: nft family (`ip`, `inet`, `ip6`, ...) for `nft monitor trace` steps; None for the
    #: iptables formats, whose base chains are the built-in ones (PREROUTING, ...).
    family: str | None = None


@dataclass(slots=True)
class Event:
    """A parsed trace line: which node, what step, what the packet looked like."""

    node: str
    step: Step
    fields: Fields
    trace_id: str | None = None
    #: An nft `packet:` line opened this base chain for the trace id: (iif seen, oif seen).
    base: tuple[bool, bool] | None = None


@dataclass(slots=True)
class FileEnd:
    """An input file ended. `entered`: (node, trace id) → the base chain (`table chain`)
    whose `packet:` line came after the trace id's last step (nft traces)."""

    entered: dict[tuple[str, str], str]


#: What every trace line of every format holds; other lines are only counted.
MARKERS = re.compile(rb"TRACE:|trace id|PACKET:")
#: How the lines of a packet were grouped: by IPv4 id, by nft trace id, or (no id at all,
#: e.g. IPv6 in a kernel log) by addresses, ports, interfaces, flow label and adjacency.
IDENTITIES = ("ip_id", "trace_id", "flow")
ICMP_PROTOCOLS = ("ICMP", "ICMPV6")


@dataclass(slots=True, eq=False)
class Packet:
    """All steps of one packet on one node, and what analysis concluded."""

    node: str
    fields: Fields
    steps: list[Step] = field(default_factory=list)
    first: Fields | None = None
    last: Fields | None = None
    trace_ids: list[str] = field(default_factory=list)
    seq: int = 0
    last_seen: int = 0
    repaired_lines: int = 0
    direction: str = "unknown"
    hooks: list[str] = field(default_factory=list)
    route: str | None = None
    verdict: str = "unknown"
    reason: str = ""
    new_connection: bool = False
    #: The packet was sent by this node (its walk starts in OUTPUT).
    origin: bool = False
    identity: str = "ip_id"
    #: Its log ended (the end of an input file) after its last step: the walk may go on
    #: beyond the evidence. `entered`: the base chain it was seen entering after that step.
    at_end: bool = False
    entered: str | None = None
    #: It went out on `lo` and came back in: its walk started again at PREROUTING (once at most).
    looped: bool = False
    #: The interface its last line with one out (OUT=, oif) names: the one it leaves on, also
    #: when a rule in OUTPUT rerouted it (its first OUT= is the route before).
    left_on: str | None = None

    @property
    def protocol(self) -> str:
        return lower(self.fields.proto or "unknown")

    @property
    def last_step(self) -> Step | None:
        return self.steps[-1] if self.steps else None
