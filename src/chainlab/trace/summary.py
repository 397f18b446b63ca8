"""`--format summary`: packets counted by path signature, in bounded memory.

A signature is (node, direction, hook path, verdict, drop point); each row has its packet
count, the first and last packet (in the order packets began: time of their first step,
an example id) and, for drops, the rule text where known. At most MAX_ROWS signatures get
a row; packets of later new signatures are counted in `other`.
"""

from __future__ import annotations

from dataclasses import dataclass

from chainlab.trace.analyze import drop_point
from chainlab.trace.model import Packet

MAX_ROWS = 10_000

Signature = tuple[str, str, tuple[str, ...], str, "str | None"]


@dataclass
class Row:
    node: str
    direction: str
    hooks: tuple[str, ...]
    verdict: str
    drop: str | None
    count: int
    first_seq: int
    first_time: str | None
    last_seq: int
    last_time: str | None
    example: str


def example(packet: Packet) -> str:
    """How to find the packet again: its IP id, nft trace id, or its flow's ends."""
    if packet.fields.ip_id is not None:
        return f"ip id {packet.fields.ip_id}"
    if packet.trace_ids:
        return f"trace id {packet.trace_ids[0]}"
    ends = packet.first
    return f"flow {ends.src} → {ends.dst}" if ends else "flow"


def signature(packet: Packet) -> Signature:
    return packet.node, packet.direction, tuple(packet.hooks), packet.verdict, drop_point(packet)


class Summary:
    """Rows by signature, filled packet by packet."""

    def __init__(self, max_rows: int = MAX_ROWS):
        self.max_rows = max_rows
        self.rows: dict[Signature, Row] = {}
        self.other = 0  # packets on paths beyond the first max_rows: counted, by verdict too
        self.other_verdicts: dict[str, int] = {}
        self.packets = 0

    def add(self, packet: Packet) -> None:
        self.packets += 1
        key = signature(packet)
        row = self.rows.get(key)
        time = packet.steps[0].time if packet.steps else None
        if row is None:
            if len(self.rows) >= self.max_rows:
                self.other += 1
                self.other_verdicts[packet.verdict] = self.other_verdicts.get(packet.verdict, 0) + 1
                return
            self.rows[key] = Row(*key, 1, packet.seq, time, packet.seq, time, example(packet))
            return
        row.count += 1
        if packet.seq < row.first_seq:
            row.first_seq, row.first_time, row.example = packet.seq, time, example(packet)
        if packet.seq > row.last_seq:
            row.last_seq, row.last_time = packet.seq, time

    def sorted_rows(self, node_order: list[str]) -> list[Row]:
        """Drops first, then by count (most first), then in the order they began."""
        rank = {node: i for i, node in enumerate(node_order)}
        return sorted(self.rows.values(),
                      key=lambda r: (r.verdict != "dropped", -r.count, rank.get(r.node, len(rank)), r.first_seq))

    def verdicts(self) -> dict[str, int]:
        """Packets by verdict: every packet, also those beyond the rows."""
        out = dict(self.other_verdicts)
        for row in self.rows.values():
            out[row.verdict] = out.get(row.verdict, 0) + row.count
        return out
