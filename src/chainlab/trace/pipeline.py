"""From log files to judged packets and flows, streaming."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from chainlab.trace.analyze import (BaseChains, Directions, hook_path, join_rules, judge, protocol_from_rules,
                                    sent_here)
from chainlab.trace.assemble import Assembler
from chainlab.trace.flows import Flow, FlowIndex
from chainlab.trace.hooks import resolver
from chainlab.trace.match import Match
from chainlab.trace.model import FileEnd, Packet
from chainlab.trace.netfilter import Slot, table_slots
from chainlab.trace.reader import LogSource, ReadStats, read_events
from chainlab.trace.rules import RuleSet


@dataclass
class AnalysisOptions:
    """`tables`: the tables hook paths are computed in (None: all); `rules`: per node;
    `match`: which packets are reported (all of them are read, judged and classified)."""

    tables: set[str] | None = None
    rules: dict[str, RuleSet] = field(default_factory=dict)
    window: int = 400
    match: Match = field(default_factory=Match)


class Analyzer:
    """Streams packets out of log sources; `stats`, `flows()` and `nodes` fill as it goes."""

    def __init__(self, options: AnalysisOptions | None = None):
        self.options = options or AnalysisOptions()
        self.stats = ReadStats()
        self.nodes: list[str] = []
        self._assembler = Assembler(self.options.window, resolver(self.options.rules))
        self._directions = Directions()
        self._flows = FlowIndex()
        self._slots_seen: dict[str, set[Slot]] = {}
        self._chains: dict[str, BaseChains] = {}
        if self.options.match:
            self.stats.matched = 0

    def packets(self, sources: list[LogSource]) -> Iterator[Packet]:
        for source in sources:
            for event in read_events(source, self.stats):
                if isinstance(event, FileEnd):
                    self._assembler.mark_end(event.entered)
                    continue
                slots = self._slots_seen.get(event.node)
                if slots is None:
                    slots = self._slots_seen[event.node] = set()
                    self.nodes.append(event.node)
                step = event.step
                done = self._assembler.feed(event)  # sets step.hook
                if event.trace_id is None:
                    # A legacy table hooks into all its chains once loaded.
                    slots |= table_slots(step.table)
                elif step.hook is not None:
                    # nft creates a base chain only where one is declared: the slots seen.
                    slots.add((step.hook, step.table))
                for packet in done:
                    if self._finish(packet):
                        yield packet
        for packet in self._assembler.flush():
            if self._finish(packet):
                yield packet
        self.stats.skipped_lines += self._assembler.unattributed

    def _finish(self, packet: Packet) -> bool:
        """Judge and classify a complete packet; whether --match takes it."""
        rules = self.options.rules.get(packet.node)
        join_rules(packet, rules)
        present = rules.slots if rules else self._slots_seen.get(packet.node, set())
        if packet.fields.proto is None:
            packet.fields.proto = protocol_from_rules(packet)
        chains = self._chains.get(packet.node)
        if chains is None:
            chains = self._chains[packet.node] = BaseChains(rules)
        chains.learn(packet.steps)
        judge(packet, present, chains)
        self.stats.identities[packet.identity] = self.stats.identities.get(packet.identity, 0) + 1
        packet.direction = self._directions.classify(packet)
        packet.hooks = hook_path(packet.steps, self.options.tables)
        packet.origin = sent_here(packet.steps, packet.hooks)
        match = self.options.match
        if match:
            if not match(packet):
                return False
            self.stats.matched = (self.stats.matched or 0) + 1
        self._flows.add(packet)
        return True

    def flows(self) -> list[Flow]:
        return self._flows.flows()


@dataclass
class Analysis:
    """A whole analysis held in memory (for reports and checks; files of probe size)."""

    packets: list[Packet]
    flows: list[Flow]
    stats: ReadStats
    nodes: list[str]


def analyze(sources: list[LogSource], options: AnalysisOptions | None = None) -> Analysis:
    analyzer = Analyzer(options)
    packets = list(analyzer.packets(sources))
    order = {node: i for i, node in enumerate(analyzer.nodes)}
    packets.sort(key=lambda p: (order.get(p.node, 0), p.seq))
    return Analysis(packets, analyzer.flows(), analyzer.stats, analyzer.nodes)
