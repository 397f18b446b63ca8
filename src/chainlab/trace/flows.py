"""Follow one packet across nodes: same IP id (and ICMP seq), ordered by TTL."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from chainlab.trace.model import Packet


@dataclass
class Hop:
    node: str
    hooks: list[str]
    verdict: str
    ttl: int | None
    entry: tuple[str | None, str | None]
    exit: tuple[str | None, str | None]
    origin: bool = False


@dataclass
class Flow:
    direction: str
    protocol: str
    ip_id: int
    hops: list[Hop] = field(default_factory=list)

    @property
    def nat(self) -> list[str]:
        """Address changes along the way, e.g. `SNAT on master: src 172.20.0.5 → 10.0.0.1`."""
        notes = []
        for i, hop in enumerate(self.hops):
            if hop.entry[1] != hop.exit[1] and None not in (hop.entry[1], hop.exit[1]):
                notes.append(f"DNAT on {hop.node}: dst {hop.entry[1]} → {hop.exit[1]}")
            if i + 1 < len(self.hops):
                nxt = self.hops[i + 1]
                if hop.exit[0] != nxt.entry[0] and None not in (hop.exit[0], nxt.entry[0]):
                    notes.append(f"SNAT on {hop.node}: src {hop.exit[0]} → {nxt.entry[0]}")
                if hop.exit[1] != nxt.entry[1] and None not in (hop.exit[1], nxt.entry[1]):
                    notes.append(f"DNAT on {hop.node} (after trace): dst {hop.exit[1]} → {nxt.entry[1]}")
        return notes

    def to_dict(self) -> dict[str, Any]:
        """As the analysis contract writes it (trace/contract.py)."""
        from chainlab.trace.contract import FlowRecord

        return FlowRecord.from_flow(self).to_dict()


def _key(packet: Packet) -> tuple[object, ...] | None:
    f = packet.fields
    if f.ip_id is None:
        return None
    return (f.proto, f.ip_id, f.icmp_seq if f.proto == "ICMP" else None)


class FlowIndex:
    """Collects hops of recent packets (bounded) and yields the multi-node flows."""

    def __init__(self, memory: int = 20_000):
        self.memory = memory
        self.hops: OrderedDict[tuple[object, ...], list[tuple[int, str, Hop]]] = OrderedDict()

    def add(self, packet: Packet) -> None:
        key = _key(packet)
        if key is None:
            return
        first, last = packet.first, packet.last
        hop = Hop(
            packet.node, packet.hooks, packet.verdict, first.ttl if first else None,
            (first.src, first.dst) if first else (None, None),
            (last.src, last.dst) if last else (None, None),
            origin=packet.origin,
        )
        self.hops.setdefault(key, []).append((packet.seq, packet.direction, hop))
        self.hops.move_to_end(key)
        while len(self.hops) > self.memory:
            self.hops.popitem(last=False)

    def flows(self) -> list[Flow]:
        out = []
        for key, entries in self.hops.items():
            if len({hop.node for _, _, hop in entries}) < 2:
                continue
            # Along the way TTL only falls; at equal TTL the node that sent the packet is first.
            entries = sorted(entries, key=lambda e: (-(e[2].ttl or 0), not e[2].origin, e[0]))
            protocol = str(key[0] or "unknown").lower()
            flow = Flow(entries[0][1], protocol, int(key[1]))  # type: ignore[call-overload]
            flow.hops = [hop for _, _, hop in entries]
            out.append(flow)
        return out
