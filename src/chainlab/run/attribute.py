"""Which traced packets belong to which probe, when probes share one collection window (pure).

Probes of one run are distinct source → target pairs of one protocol. A packet is a probe's
when one of these rules reaches it:

- origin: on the source's node, a request to the target's address (and port) that the node
  sent itself (its walk starts in OUTPUT) for a host source, or that comes from the
  container's address for a container source;
- the same packet on another node: same protocol, IP id and direction, entering with the
  destination, destination port (ICMP: sequence) it left the other node with, and with the
  source and source port (ICMP: id) too, unless the source became the other node's own
  address (masquerade; SNAT happens after the last trace line). NAT never changes the IP id;
- an answer: on a node where a packet of the probe was seen, a reply whose addresses and
  ports (for ICMP: id and sequence) are those of that packet reversed. Conntrack keeps these
  unique per node among live connections, rewriting ports and ICMP ids where NAT would
  make two alike; so do ICMP errors from the probe's destination to its source. Answers
  are followed to other nodes as above.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from chainlab.run.probe import ProbeSpec
from chainlab.trace.model import Fields, Packet

Ends = tuple[str | None, str | None, int | None, int | None]


def _end(f: Fields, p: Packet) -> Ends:
    """(src, dst, sport, dport) of one line's fields (ICMP: id, seq); `p`'s fill gaps."""
    merged = p.fields
    if p.protocol == "icmp":
        return f.src, f.dst, _either(f.icmp_id, merged.icmp_id), _either(f.icmp_seq, merged.icmp_seq)
    return f.src, f.dst, _either(f.sport, merged.sport), _either(f.dport, merged.dport)


def _ends(p: Packet) -> set[Ends]:
    """The packet's ends as it entered and as it left the node."""
    return {_end(f, p) for f in (p.first, p.last) if f is not None}


def _either(value: int | None, fallback: int | None) -> int | None:
    return fallback if value is None else value


def _reversed(ends: Ends, icmp: bool) -> Ends:
    src, dst, a, b = ends
    return (dst, src, a, b) if icmp else (dst, src, b, a)


def _continues(left: Ends, entered: Ends, nat_sources: frozenset[str]) -> bool:
    """A packet that left a node with `left` entered the next with `entered` (see above;
    `nat_sources`: the addresses the node it left may have masqueraded it to)."""
    if left[1] != entered[1] or not _agree(left[3], entered[3]):
        return False
    return (left[0] == entered[0] and _agree(left[2], entered[2])) or (left[0] != entered[0] and entered[0] in nat_sources)


def _agree(a: int | None, b: int | None) -> bool:
    """Equal, or unknown on one side (xtables-monitor shows no ICMP id or sequence)."""
    return a is None or b is None or a == b


def _entry(p: Packet) -> Fields:
    return p.first or p.fields


def _exit(p: Packet) -> Fields:
    return p.last or p.fields


def is_origin(p: Packet, spec: ProbeSpec) -> bool:
    """`p` is a request of `spec` as its source sent it."""
    if p.node != spec.source.host or p.protocol != spec.protocol or p.direction != "request":
        return False
    entry = _entry(p)
    if entry.dst != spec.target_address:
        return False
    if spec.port is not None and _either(entry.dport, p.fields.dport) != spec.port:
        return False
    if spec.source.container is None:
        return p.origin
    return entry.src == spec.source.address and not p.origin


def _same_elsewhere(p: Packet, q: Packet, addresses: dict[str, frozenset[str]]) -> bool:
    """`q` is packet `p` (same protocol and IP id) seen on another node."""
    if q.node == p.node or q.direction != p.direction or q.protocol != p.protocol:
        return False
    return (_continues(_end(_exit(p), p), _end(_entry(q), q), addresses.get(p.node, frozenset()))
            or _continues(_end(_exit(q), q), _end(_entry(p), p), addresses.get(q.node, frozenset())))


def _answers(r: Packet, q: Packet) -> bool:
    """`r` answers `q` (both on one node)."""
    if r.direction == "error" and r.protocol == "icmp":
        return (_entry(r).src in (_entry(q).dst, _exit(q).dst)
                and _entry(r).dst in (_entry(q).src, _exit(q).src))
    if r.direction == "request" or r.protocol != q.protocol:
        return False
    back = {_reversed(e, q.protocol == "icmp") for e in _ends(q)}
    return not back.isdisjoint(_ends(r))


class _Index:
    def __init__(self, packets: list[Packet], addresses: dict[str, frozenset[str]]):
        self.addresses = addresses
        self.by_id: dict[tuple[str, int | None], list[Packet]] = defaultdict(list)
        self.by_node: dict[str, list[Packet]] = defaultdict(list)
        for p in packets:
            self.by_id[(p.protocol, p.fields.ip_id)].append(p)
            self.by_node[p.node].append(p)

    def follow(self, seeds: Iterable[Packet], into: dict[int, Packet]) -> None:
        """Add `seeds` and the same packets on other nodes to `into` (by id())."""
        queue = [s for s in seeds if id(s) not in into]
        for s in queue:
            into[id(s)] = s
        while queue:
            p = queue.pop()
            if p.fields.ip_id is None:
                continue
            for q in self.by_id[(p.protocol, p.fields.ip_id)]:
                if id(q) not in into and _same_elsewhere(p, q, self.addresses):
                    into[id(q)] = q
                    queue.append(q)


def attribute(packets: list[Packet], specs: list[ProbeSpec],
              addresses: dict[str, frozenset[str]] | None = None) -> list[list[Packet]]:
    """Per spec (in order), its packets in the order of `packets`; `addresses`: each
    node's own addresses (what it masquerades to)."""
    index = _Index(packets, addresses or {})
    order = {id(p): i for i, p in enumerate(packets)}
    out = []
    for spec in specs:
        origins = [p for p in index.by_node[spec.source.host] if is_origin(p, spec)]
        if spec.protocol != "icmp":  # the rest of the connection on the source node
            ends = set().union(*(_ends(p) for p in origins)) if origins else set()
            origins += [p for p in index.by_node[spec.source.host]
                        if p.protocol == spec.protocol and p.direction == "request" and p not in origins
                        and not ends.isdisjoint(_ends(p))]
        mine: dict[int, Packet] = {}
        index.follow(origins, mine)
        index.follow([r for q in list(mine.values()) for r in index.by_node[q.node]
                      if id(r) not in mine and _answers(r, q)], mine)
        out.append(sorted(mine.values(), key=lambda p: order[id(p)]))
    return out


def plan_waves(specs: list[ProbeSpec], untold: set[str]) -> list[list[int]]:
    """Indices of `specs` per capture: all at once, except for ICMP probes
    - meeting a node in `untold` (whose trace shows no ICMP type, id or sequence:
      xtables-monitor): one per such node per capture, since nothing there tells their
      packets apart;
    - from two containers of one node to one address: in different captures. Their pings
      may send the same ICMP id (each one's ping has the same PID in its own namespace);
      masqueraded to the node's address at the same instant, conntrack drops one of them."""
    waves: list[list[int]] = []
    used: list[set[str]] = []
    pairs: list[set[tuple[str, str]]] = []
    for i, spec in enumerate(specs):
        icmp = spec.protocol == "icmp"
        meets = {spec.source.host, *([spec.target.host] if spec.target else [])} & untold if icmp else set()
        pair = (spec.host, spec.target_address) if icmp and spec.container else None
        k = next((k for k in range(len(waves)) if not used[k] & meets and pair not in pairs[k]), len(waves))
        if k == len(waves):
            waves.append([])
            used.append(set())
            pairs.append(set())
        waves[k].append(i)
        used[k] |= meets
        if pair:
            pairs[k].add(pair)
    return waves
