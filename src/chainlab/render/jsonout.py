"""`--format json`: the analysis contract (trace/contract.py) written as it comes, streamed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any

from chainlab.trace.contract import FlowRecord, PacketRecord, check_to_dict
from chainlab.trace.flows import Flow
from chainlab.trace.model import IDENTITIES, Packet
from chainlab.trace.reader import ReadStats

if TYPE_CHECKING:
    from chainlab.trace.expect import Check


def write_json(
    out: IO[str], packets: Iterable[Packet], flows_after: Callable[[], list[Flow]],
    stats: ReadStats, tables: set[str] | None, checks: list[Check] | None = None,
    checks_after: Callable[[], list[Check] | None] | None = None,
) -> None:
    """Write packets as they come (the list may be a stream); flows, stats and checks (or
    those `checks_after` gives once the packets are written) at the end."""
    out.write('{"packets": [')
    repaired = 0
    for i, packet in enumerate(packets):
        repaired += packet.repaired_lines
        out.write(("," if i else "") + "\n  " + json.dumps(PacketRecord.from_packet(packet, tables).to_dict()))
    write_tail(out, flows_after, stats, tables, repaired, checks_after() if checks_after else checks)


def write_tail(
    out: IO[str], flows_after: Callable[[], list[Flow]], stats: ReadStats, tables: set[str] | None,
    repaired: int, checks: list[Check] | None = None,
) -> None:
    """Close the packet list; then flows, line counts and the scenario checks."""
    out.write("\n ],\n")
    tail: dict[str, Any] = {
        "flows": [FlowRecord.from_flow(f).to_dict() for f in flows_after()],
        "skipped_lines": stats.skipped_lines,
        "repaired_lines": repaired,
        "ignored_lines": stats.ignored_lines,
        "cut_lines": stats.cut_lines,
        "lines": stats.lines,
        "trace_records": stats.trace_records,
        "identities": {name: stats.identities[name] for name in IDENTITIES if name in stats.identities},
        **({"matched": stats.matched} if stats.matched is not None else {}),
        "formats": stats.formats,
        "tables": sorted(tables) if tables else None,
    }
    if checks is not None:
        tail["expect"] = {"ok": all(c.ok for c in checks), "checks": [check_to_dict(c) for c in checks]}
    body = json.dumps(tail, indent=1)
    out.write(" " + body[1:] + "\n")
