"""What one probe found, as objects: paths per node and direction, verdicts, the drop, flows.

`ProbeResult` is what `chainlab probe` prints, what a matrix cell is made of, and what the
pytest plugin's `lab.probe(...)` returns, so a test reads
`assert lab.probe("slave1", "web1").dropped_at(node="master", chain="cali-tw-*")`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chainlab.run.probe import ProbeSpec
from chainlab.trace.analyze import hook_path
from chainlab.trace.contract import PacketRecord
from chainlab.trace.expect import probe_packet
from chainlab.trace.flows import Flow, FlowIndex
from chainlab.trace.model import Packet

#: The tables hook paths are stated in, as in the scenario files.
DEFAULT_TABLES = frozenset({"nat", "filter"})
DIRECTION_ORDER = {"request": 0, "reply": 1, "error": 2}
ROUTING_LOSS = "lost at the routing decision"


@dataclass(frozen=True)
class Drop:
    """Where a packet of the probe died: node, table:chain, the step and the rule's text."""

    node: str
    direction: str
    table: str
    chain: str
    step: str
    rule: str | None
    reason: str

    @property
    def where(self) -> str:
        return f"{self.table}:{self.chain} {self.step}".rstrip()

    def __str__(self) -> str:
        return f"{self.node}: {self.where}" + (f" by `{self.rule}`" if self.rule else "")


def flows_of(packets: Iterable[Packet], protocol: str) -> list[Flow]:
    """The cross-node flows of the probe's own packets (TCP: the SYN and SYN-ACK)."""
    index = FlowIndex()
    for p in packets:
        if probe_packet(p, protocol):
            index.add(p)
    return index.flows()


def hop_order(p: Packet) -> tuple[int, int, bool, int]:
    """Requests before answers; along a direction, the way TTL falls (the sender first)."""
    ttl = (p.first.ttl if p.first else p.fields.ttl) or 0
    return (DIRECTION_ORDER.get(p.direction, 3), -ttl, not p.origin, p.seq)


def _step_label(p: Packet) -> str:
    last = p.last_step
    if last is None:
        return ""
    if last.kind == "rule":
        return f"rule {last.position if last.position is not None else last.handle or '?'}"
    return last.kind


@dataclass
class ProbeResult:
    """One probe: its command's exit code and output, and the packets that were its."""

    spec: ProbeSpec
    exit_code: int
    output: str
    packets: list[Packet]
    flows: list[Flow] = field(default_factory=list)
    run_dir: Path | None = None

    @property
    def label(self) -> str:
        return self.spec.request.label

    @property
    def reached(self) -> bool:
        """The probe got its answer (ping's echo reply, a TCP connect, a UDP answer)."""
        return self.exit_code == 0

    def packets_of(self, node: str | None = None, direction: str | None = None) -> list[Packet]:
        """The probe's packets (TCP: only the SYN and SYN-ACK, as scenarios state paths)."""
        return [p for p in self.packets if (node is None or p.node == node)
                and (direction is None or p.direction == direction) and probe_packet(p, self.spec.protocol)]

    def paths(self, node: str, direction: str = "request", tables: Iterable[str] | None = DEFAULT_TABLES) -> list[list[str]]:
        """The distinct hook paths of `node`'s packets in `direction` (in `tables`; None: all)."""
        chosen = None if tables is None else set(tables)
        paths = [hook_path(p.steps, chosen) for p in self.packets_of(node, direction)]
        return [list(x) for x in dict.fromkeys(tuple(p) for p in paths)]

    def path(self, node: str, direction: str = "request", tables: Iterable[str] | None = DEFAULT_TABLES) -> list[str]:
        """The hook path of `node`'s first packet in `direction`; [] when none was seen."""
        paths = self.paths(node, direction, tables)
        return paths[0] if paths else []

    def verdicts(self, node: str, direction: str = "request") -> list[str]:
        return sorted({p.verdict for p in self.packets_of(node, direction)})

    @property
    def nodes(self) -> list[str]:
        """Nodes in the order the probe's packets met them (requests first)."""
        return list(dict.fromkeys(p.node for p in sorted(self.packets, key=hop_order)))

    @property
    def drops(self) -> list[Drop]:
        """Every distinct drop, in the order the packets went."""
        out: list[Drop] = []
        for p in sorted(self.packets, key=hop_order):
            last = p.last_step
            if p.verdict != "dropped" or last is None:
                continue
            drop = Drop(p.node, p.direction, last.table, last.chain, _step_label(p), last.rule, p.reason)
            if drop not in out:
                out.append(drop)
        return out

    @property
    def drop(self) -> Drop | None:
        """The deciding drop: the first one on the way."""
        drops = self.drops
        return drops[0] if drops else None

    def dropped_at(self, node: str | None = None, chain: str | None = None, table: str | None = None,
                   direction: str | None = None) -> Drop | None:
        """The first drop on `node` in a chain matching the glob `chain` (e.g. `cali-tw-*`),
        else None: truthy in an assert."""
        for drop in self.drops:
            if ((node is None or drop.node == node) and (table is None or drop.table == table)
                    and (chain is None or fnmatch.fnmatchcase(drop.chain, chain))
                    and (direction is None or drop.direction == direction)):
                return drop
        return None

    def passed_through(self, *nodes: str, direction: str = "request") -> bool:
        """On each of `nodes` a packet in `direction` was seen, and none was dropped there."""
        return all(self.packets_of(n, direction) and "dropped" not in self.verdicts(n, direction) for n in nodes)

    @property
    def nat(self) -> list[str]:
        """The NAT the probe's packets met: along each flow, and on the one node of a packet
        no other node saw (a published port reached from its own host)."""
        return [note for flow in self.flows for note in flow.nat] + self.own_nat

    @property
    def own_nat(self) -> list[str]:
        """The NAT notes of the probe's packets that are in no flow, each with its node."""
        followed = {(flow.protocol, flow.ip_id) for flow in self.flows}
        notes = [note for p in self.packets_of() if (p.protocol, p.fields.ip_id) not in followed
                 for note in PacketRecord.from_packet(p).nat_notes(f" on {p.node}")]
        return list(dict.fromkeys(notes))

    @property
    def decision(self) -> str:
        """`reachable`, or why not: the drop, a loss after routing, or what was (not) seen."""
        if self.reached:
            return "reachable"
        drop = self.drop
        if drop is not None:
            return f"dropped on {drop}"
        lost = [p for p in sorted(self.packets, key=hop_order) if ROUTING_LOSS in p.reason]
        if lost:
            return f"lost after routing on {lost[0].node} ({lost[0].direction})"
        if not self.packets:
            said = [line.strip() for line in self.output.splitlines() if line.strip()]
            return "no packet of the probe was traced" + (f" ({said[-1][:100]})" if said else "")
        if not any(p.direction != "request" for p in self.packets):
            return "no answer traced, and no rule dropped the request"
        return "answered in the trace, but the probe got no answer"

    def __repr__(self) -> str:
        where = f", evidence in {self.run_dir}" if self.run_dir else ""
        return f"<ProbeResult {self.label}: {self.decision}{where}>"
