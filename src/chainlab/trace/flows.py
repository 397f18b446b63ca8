"""Follow one packet across nodes: same IP id (and ICMP seq), ordered by TTL.

Memory is bounded: the hops of the last MEMORY keys are kept, at most MAX_HOPS per key
(a key that comes back more often than that is IP ids wrapping around, not one packet).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chainlab.trace.ascii import lower
from chainlab.trace.model import Fields, Packet

MEMORY = 20_000
MAX_HOPS = 32
#: The hops seen for one key: (packet seq, direction, hop), in the order they came.
Entries = list[tuple[int, str, "Hop"]]


#: A packet's (src, dst, sport, dport) as one line shows them (None: not shown).
Endpoints = tuple[str | None, str | None, int | None, int | None]
NO_ENDPOINTS: Endpoints = (None, None, None, None)


@dataclass
class Hop:
    node: str
    hooks: list[str]
    verdict: str
    ttl: int | None
    entry: Endpoints  # on its first line
    exit: Endpoints  # on its last line
    origin: bool = False


def endpoints(f: Fields | None) -> Endpoints:
    """A line's endpoints. A damaged line's ports are left out: a line cut inside
    `DPT=52000` still reads as a port, and would show a NAT that never happened."""
    if f is None:
        return NO_ENDPOINTS
    return (f.src, f.dst, None, None) if f.damaged else (f.src, f.dst, f.sport, f.dport)


def _shown(e: Endpoints, which: int) -> tuple[str | None, int | None]:
    """The source (which=0) or destination (1) address and port of `e`."""
    return (e[0], e[2]) if which == 0 else (e[1], e[3])


def _side(address: str | None, port: int | None) -> str:
    if port is None:
        return f"{address}"
    return f"[{address}]:{port}" if address and ":" in address else f"{address}:{port}"


def changed(before: Endpoints, after: Endpoints, which: int, ports: bool = True) -> str | None:
    """`src 10.0.0.1:80 → 10.0.0.2:8080` when the source (which=0) or destination (1) address
    or (with `ports`) port differs between two lines that both show it (a port-only DNAT,
    REDIRECT, is a change too); None when nothing shown changed."""
    address = before[which] != after[which] and None not in (before[which], after[which])
    port = ports and before[which + 2] != after[which + 2] and None not in (before[which + 2], after[which + 2])
    if not (address or port):
        return None
    return f"{('src', 'dst')[which]} {_side(*_shown(before, which))} → {_side(*_shown(after, which))}"


def nat_kind(direction: str, which: int) -> str:
    """What changed a source (which=0) or destination (1): for a reply, conntrack undoing the
    request's DNAT or SNAT, not a translation of its own."""
    if direction == "reply":
        return ("DNAT reversed", "SNAT reversed")[which]
    return ("SNAT", "DNAT")[which]


def _one_port_agrees(a: Endpoints, b: Endpoints) -> bool:
    """NAT changes the ports of one side at most: two nodes' lines whose source and
    destination ports both differ are two packets that share an IP id, not one translated."""
    return not (None not in (a[2], b[2], a[3], b[3]) and a[2] != b[2] and a[3] != b[3])


@dataclass
class Flow:
    direction: str
    protocol: str
    ip_id: int
    hops: list[Hop] = field(default_factory=list)

    @property
    def nat(self) -> list[str]:
        """Address and port changes along the way, e.g. `SNAT on master: src 172.20.0.5 →
        10.0.0.1` or `DNAT on web: dst 10.0.0.2:80 → 10.0.0.2:8080`."""
        notes = []
        src, dst = nat_kind(self.direction, 0), nat_kind(self.direction, 1)
        for i, hop in enumerate(self.hops):
            if dnat := changed(hop.entry, hop.exit, 1):
                notes.append(f"{dst} on {hop.node}: {dnat}")
            if i + 1 < len(self.hops):
                nxt = self.hops[i + 1]
                ports = _one_port_agrees(hop.exit, nxt.entry)
                if snat := changed(hop.exit, nxt.entry, 0, ports):
                    notes.append(f"{src} on {hop.node}: {snat}")
                if dnat := changed(hop.exit, nxt.entry, 1, ports):
                    notes.append(f"{dst} on {hop.node} (after trace): {dnat}")
        return notes

    def to_dict(self) -> dict[str, Any]:
        """As the analysis contract writes it (trace/contract.py)."""
        from chainlab.trace.contract import FlowRecord

        return FlowRecord.from_flow(self).to_dict()


def flow_key(packet: Packet) -> tuple[str | None, int, int | None] | None:
    f = packet.fields
    if f.ip_id is None:
        return None
    return (f.proto, f.ip_id, f.icmp_seq if f.proto == "ICMP" else None)


def continues(a: Hop, b: Hop) -> bool:
    """Can `b` be the packet of `a` one node further on? Not on the same node, not sent by
    `b`'s node itself (its walk starts at OUTPUT), not after `a` dropped it or delivered it
    to itself (INPUT), and not with both addresses or both ports changed between them (NAT
    between two nodes rewrites one side): a shared IP id alone (ID=0 is common) does not
    make two packets one."""
    if b.node == a.node or b.origin or a.verdict == "dropped" or "INPUT" in a.hooks:
        return False
    out, into = a.exit, b.entry
    moved = [out[i] != into[i] for i in (0, 1) if None not in (out[i], into[i])]
    return not (len(moved) == 2 and all(moved)) and _one_port_agrees(out, into)


def build_flows(keyed: Iterable[tuple[tuple[str | None, int, int | None], Entries]]) -> list[Flow]:
    """The multi-node flows among the kept keys (in the order they were last seen). The hops
    of one key are chained in TTL order, each to the first chain whose last hop it
    `continues`; a chain of one hop is no flow."""
    out = []
    for key, entries in keyed:
        if len({hop.node for _, _, hop in entries}) < 2:
            continue
        # Along the way TTL only falls; at equal TTL the node that sent the packet is first.
        chains: list[Entries] = []
        for entry in sorted(entries, key=lambda e: (-(e[2].ttl or 0), not e[2].origin, e[0])):
            chain = next((c for c in chains if continues(c[-1][2], entry[2])), None)
            if chain is None:
                chains.append([entry])
            else:
                chain.append(entry)
        for chain in chains:
            if len(chain) > 1:
                flow = Flow(chain[0][1], lower(key[0] or "unknown"), key[1])
                flow.hops = [hop for _, _, hop in chain]
                out.append(flow)
    return out


class FlowIndex:
    """Collects hops of recent packets (bounded) and yields the multi-node flows."""

    def __init__(self, memory: int = MEMORY):
        self.memory = memory
        self.hops: OrderedDict[tuple[str | None, int, int | None], Entries] = OrderedDict()

    def add(self, packet: Packet) -> None:
        key = flow_key(packet)
        if key is None:
            return
        first = packet.first
        hop = Hop(packet.node, packet.hooks, packet.verdict, first.ttl if first else None, endpoints(first),
                  endpoints(packet.last), origin=packet.origin)
        entries = self.hops.setdefault(key, [])
        entries.append((packet.seq, packet.direction, hop))
        if len(entries) > MAX_HOPS:
            del entries[0]
        self.hops.move_to_end(key)
        while len(self.hops) > self.memory:
            self.hops.popitem(last=False)

    def flows(self) -> list[Flow]:
        return build_flows(self.hops.items())
