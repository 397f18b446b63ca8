"""Readable terminal output (rich): per packet the chain walk, and the summary table.

The default text format shows up to PACKET_LIMIT packets in full (in the order they began,
node by node), and when the log had more, the summary of all of them: memory stays flat
whatever the log's size.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chainlab.trace.contract import PacketRecord
from chainlab.trace.expect import Check
from chainlab.trace.flows import Flow
from chainlab.trace.model import IDENTITIES, Packet
from chainlab.trace.reader import ReadStats
from chainlab.trace.summary import Summary

VERDICT_STYLE = {"accepted": "green", "dropped": "bold red", "unknown": "yellow"}
PACKET_LIMIT = 50
FLOW_LIMIT = 50


def packet_table(p: PacketRecord, tables: set[str] | None) -> Table:
    steps = [s for s in p.steps if tables is None or s.table in tables]
    with_rules = any(s.rule for s in steps)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
    for column in ("hook", "table:chain", "step", "mark", *(["rule"] if with_rules else [])):
        table.add_column(column)
    for step in steps:
        mark = step.mark if step.mark not in (None, "0x0") else ""
        row = [step.hook or "?", escape(step.name), escape(step.label()), mark]
        table.add_row(*row, *([escape(step.rule or "")] if with_rules else []))
    return table


def render_packet(p: PacketRecord, tables: set[str] | None) -> Group:
    path = " → ".join(p.hooks) or "(no step in the selected tables)"
    verdict = Text.assemble(
        ("  path: ", "dim"), (path, "bold"), ("   verdict: ", "dim"),
        (p.verdict, VERDICT_STYLE.get(p.verdict, "")), (f"  ({p.reason})", "dim"),
    )
    title = Text(f"{p.node} · {p.direction} · {p.title()}", style="bold cyan")
    return Group(title, verdict, packet_table(p, tables), Text(""))


class TextReport:
    """Collects what the text format prints, packet by packet, in bounded memory."""

    def __init__(self, limit: int = PACKET_LIMIT):
        self.limit = limit
        self.kept: list[tuple[int, PacketRecord]] = []  # (seq, packet)
        self.summary = Summary()
        self.repaired = 0

    def add(self, packet: Packet) -> None:
        if len(self.kept) < self.limit:
            self.kept.append((packet.seq, PacketRecord.from_packet(packet)))
        self.summary.add(packet)
        self.repaired += packet.repaired_lines

    def feed(self, packets: Iterable[Packet]) -> None:
        for packet in packets:
            self.add(packet)

    def print(self, console: Console, flows: list[Flow], stats: ReadStats, nodes: list[str], tables: set[str] | None,
              checks: list[Check] | None = None) -> None:
        rank = {node: i for i, node in enumerate(nodes)}
        for _, p in sorted(self.kept, key=lambda k: (rank.get(k[1].node, len(rank)), k[0])):
            console.print(render_packet(p, tables))
        total = self.summary.packets
        if total > len(self.kept):
            console.print(Text(f"{len(self.kept)} of {total} packets shown; all of them by path:", style="bold"))
            print_summary_table(console, self.summary, nodes)
        if flows:
            console.print(Text("flows across nodes", style="bold"))
            for flow in flows[:FLOW_LIMIT]:
                hops = "  ⇒  ".join(f"{h.node}: {' → '.join(h.hooks)} ({h.verdict})" for h in flow.hops)
                console.print(f"  {flow.direction} {flow.protocol} ip id {flow.ip_id}: {escape(hops)}")
                for note in flow.nat:
                    console.print(f"    [magenta]{escape(note)}[/magenta]")
            if len(flows) > FLOW_LIMIT:
                console.print(f"  ({len(flows) - FLOW_LIMIT} more flows: --format json has them all)")
            console.print()
        console.print(f"[dim]{counts_line(stats, self.repaired, total)}[/dim]")
        if checks is not None:
            print_checks(console, checks)


def counts_line(stats: ReadStats, repaired: int, packets: int) -> str:
    line = (f"{stats.lines} lines, {stats.trace_records} trace records, {stats.skipped_lines} skipped, "
            f"{repaired} damaged but attributed, {stats.ignored_lines} not trace lines")
    if stats.cut_lines:
        line += f", {stats.cut_lines} cut at 64 KiB"
    line += f"; {packets} packets"
    if set(stats.identities) - {"ip_id"}:
        line += " (" + ", ".join(f"{stats.identities[n]} by {n.replace('_', ' ')}" for n in IDENTITIES
                                 if n in stats.identities) + ")"
    if stats.matched is not None:
        line += f" seen, {stats.matched} matched"
    return line


def print_summary_table(console: Console, summary: Summary, nodes: list[str]) -> None:
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
    for column in ("packets", "node", "direction", "path", "verdict", "first", "last", "example", "drop"):
        table.add_column(column, justify="right" if column == "packets" else "left")
    for row in summary.sorted_rows(nodes):
        table.add_row(
            str(row.count), escape(row.node), row.direction, " → ".join(row.hooks) or "(none)",
            Text(row.verdict, style=VERDICT_STYLE.get(row.verdict, "")), escape(row.first_time or ""),
            escape(row.last_time or ""), escape(row.example), escape(row.drop or ""),
        )
    console.print(table)
    if summary.other:
        console.print(f"  {summary.other} more packets on paths beyond the first {summary.max_rows}")


def print_summary(console: Console, summary: Summary, stats: ReadStats, nodes: list[str], repaired: int,
                  checks: list[Check] | None = None) -> None:
    """`--format summary`: the table, then totals by verdict and the line counts."""
    print_summary_table(console, summary, nodes)
    verdicts = summary.verdicts()
    console.print()
    console.print("  ".join(f"{verdicts.get(v, 0)} {v}" for v in ("dropped", "accepted", "unknown")))
    console.print(f"[dim]{counts_line(stats, repaired, summary.packets)}[/dim]")
    if checks is not None:
        print_checks(console, checks)


def print_checks(console: Console, checks: list[Check]) -> None:
    table = Table(title="expected vs seen")
    for column in ("node", "direction", "result", "detail"):
        table.add_column(column)
    for check in checks:
        result = "[green]PASS[/green]" if check.ok else "[bold red]FAIL[/bold red]"
        table.add_row(check.node, check.direction, result, escape(check.message))
    console.print(table)
    ok = all(c.ok for c in checks)
    console.print("[bold green]PASS[/bold green]" if ok else "[bold red]FAIL[/bold red]")
