"""Readable terminal output (rich): per packet the chain walk, and the summary table.

The default text format shows up to PACKET_LIMIT packets in full (in the order they began,
node by node), and when the log had more, the summary of all of them: memory stays flat
whatever the log's size. On a terminal, tables wider than it wrap; into a pipe or a file
they do not (a row is one line, for grep and less -S), as ps and kubectl print.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, Group, RenderableType
from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table
from rich.text import Span, Text

from chainlab.trace.contract import PacketRecord
from chainlab.trace.expect import Check
from chainlab.trace.flows import Flow
from chainlab.trace.model import IDENTITIES, Packet
from chainlab.trace.reader import ReadStats
from chainlab.trace.summary import Summary

VERDICT_STYLE = {"accepted": "green", "dropped": "bold red", "unknown": "yellow"}
PACKET_LIMIT = 50
FLOW_LIMIT = 50


#: A table cell: its text, or its text and style.
Cell = str | tuple[str, str]


def _plain(text: str) -> bool:
    """One terminal cell per character, no edge spaces: nothing rich would lay out otherwise."""
    return text.isprintable() and cell_len(text) == len(text) and text.strip(" ") == text


def layout_width(console: Console) -> int | None:
    """The width tables are laid out to: the terminal's, or None (no limit) where the console
    does not wrap."""
    return None if console.soft_wrap else console.width


def grid(columns: list[str], rows: list[list[Cell]], width: int | None, right: tuple[int, ...] = ()) -> RenderableType:
    """A table without borders (header dim, columns two spaces apart, `right` ones right-justified,
    cells as they are: no markup, no emoji codes): what rich's Table(show_edge=False,
    pad_edge=False, box=None, header_style="dim") of Text cells prints.
    When every cell is printable ASCII and the table fits `width` (None: any width), it is
    laid out here as one Text, the same characters rich would print, without rich's per-table
    measuring (which takes milliseconds: the text format prints 50 tables and a summary of up
    to 10,000 rows); otherwise rich's Table does it. The Text is made of its lines and
    style spans at once (Text.append, piece by piece, took most of the text format's
    printing)."""
    texts = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in texts)]) for i, name in enumerate(columns)]
    fits = width is None or sum(widths) + 2 * (len(columns) - 1) <= width
    if fits and all(_plain(t) for row in [columns, *texts] for t in row):
        parts: list[str] = []
        spans: list[Span] = []
        at = 0
        header: list[Cell] = [(name, "dim") for name in columns]
        for n, row in enumerate([header, *rows]):
            for i, cell in enumerate(row):
                text, style = (cell, "") if isinstance(cell, str) else cell
                padded = text.rjust(widths[i]) if i in right else text.ljust(widths[i])
                if i:  # the padding right of the last cell and left of this one, in the row's style
                    if n == 0:
                        spans += (Span(at, at + 1, "dim"), Span(at + 1, at + 2, "dim"))
                    parts.append("  ")
                    at += 2
                if style and padded:
                    spans.append(Span(at, at + len(padded), style))
                parts.append(padded)
                at += len(padded)
            if n < len(rows):
                parts.append("\n")
                at += 1
        return Text("".join(parts), spans=spans)
    # where nothing wraps (width None), as wide as its cells print: rich would fit it to the
    # console's 80 columns otherwise, cutting cells with an ellipsis
    whole = None
    if width is None:
        printed = [max([cell_len(name), *(cell_len(row[i]) for row in texts)]) for i, name in enumerate(columns)]
        whole = sum(printed) + 2 * (len(columns) - 1)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim", width=whole)
    for i, name in enumerate(columns):
        table.add_column(Text(name), justify="right" if i in right else "left")
    for row in rows:  # Text, not markup: a log's text is printed as it is (no [tags], no :emoji:)
        table.add_row(*(Text(c) if isinstance(c, str) else Text(c[0], style=c[1]) for c in row))
    return table


def packet_table(p: PacketRecord, tables: set[str] | None, width: int | None = 80) -> RenderableType:
    steps = [s for s in p.steps if tables is None or s.table in tables]
    with_rules = any(s.rule for s in steps)
    rows: list[list[Cell]] = []
    for step in steps:
        mark = step.mark if step.mark not in (None, "0x0") else ""
        rows.append([step.hook or "?", step.name, step.label(), mark, *([step.rule or ""] if with_rules else [])])
    return grid(["hook", "table:chain", "step", "mark", *(["rule"] if with_rules else [])], rows, width)


def render_packet(p: PacketRecord, tables: set[str] | None, width: int | None = 80) -> Group:
    path = " → ".join(p.hooks) or ("(no step placed in a hook)" if any(tables is None or s.table in tables for s in p.steps)
                                   else "(no step in the selected tables)")
    verdict = Text.assemble(
        ("  path: ", "dim"), (path, "bold"), ("   verdict: ", "dim"),
        (p.verdict, VERDICT_STYLE.get(p.verdict, "")), (f"  ({p.reason})", "dim"),
    )
    title = Text(f"{p.node} · {p.direction} · {p.title()}", style="bold cyan")
    nat = [Text(f"  {note}", "magenta") for note in p.nat]
    return Group(title, verdict, *nat, packet_table(p, tables, width), Text(""))


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
        width = layout_width(console)
        for _, p in sorted(self.kept, key=lambda k: (rank.get(k[1].node, len(rank)), k[0])):
            console.print(render_packet(p, tables, width))
        total = self.summary.packets
        if total > len(self.kept):
            console.print(Text(f"{len(self.kept)} of {total} packets shown; all of them by path:", style="bold"))
            print_summary_table(console, self.summary, nodes)
        if flows:
            console.print(Text("flows across nodes", style="bold"))
            console.print(Text("\n").join(flow_text(flow) for flow in flows[:FLOW_LIMIT]))
            if len(flows) > FLOW_LIMIT:
                console.print(f"  ({len(flows) - FLOW_LIMIT} more flows: --format json has them all)")
            console.print()
        console.print(Text(counts_line(stats, self.repaired, total), style="dim"))
        if checks is not None:
            print_checks(console, checks)


def flow_text(flow: Flow, prefix: str = "") -> Text:
    """One cross-node flow: its hops on a line, then its NAT notes."""
    hops = "  ⇒  ".join(f"{h.node}: {' → '.join(h.hooks)} ({h.verdict})" for h in flow.hops)
    text = Text(f"  {prefix}{flow.direction} {flow.protocol} ip id {flow.ip_id}: {hops}")
    for note in flow.nat:
        text.append(f"\n    {note}", "magenta")
    return text


def counts_line(stats: ReadStats, repaired: int, packets: int) -> str:
    """The read's counts; `packets` are those shown (with --match: those that matched, of
    all the packets seen, which the identities count)."""
    line = (f"{stats.lines} lines, {stats.trace_records} trace records, {stats.skipped_lines} skipped, "
            f"{repaired} damaged but attributed, {stats.ignored_lines} not trace lines")
    if stats.cut_lines:
        line += f", {stats.cut_lines} cut at 64 KiB"
    line += f"; {packets if stats.matched is None else sum(stats.identities.values())} packets"
    if set(stats.identities) - {"ip_id"}:
        line += " (" + ", ".join(f"{stats.identities[n]} by {n.replace('_', ' ')}" for n in IDENTITIES
                                 if n in stats.identities) + ")"
    if stats.matched is not None:
        line += f" seen, {stats.matched} matched"
    return line


def print_summary_table(console: Console, summary: Summary, nodes: list[str]) -> None:
    rows: list[list[Cell]] = [
        [str(row.count), row.node, row.direction, " → ".join(row.hooks) or "(none)",
         (row.verdict, VERDICT_STYLE.get(row.verdict, "")), row.first_time or "", row.last_time or "", row.example,
         row.drop or ""]
        for row in summary.sorted_rows(nodes)
    ]
    columns = ["packets", "node", "direction", "path", "verdict", "first", "last", "example", "drop"]
    width = layout_width(console)
    console.print(grid(columns, rows, width, right=(0,)))
    if summary.other:
        console.print(f"  {summary.other} more packets on paths beyond the first {summary.max_rows}")


def print_summary(console: Console, summary: Summary, stats: ReadStats, nodes: list[str], repaired: int,
                  checks: list[Check] | None = None) -> None:
    """`--format summary`: the table, then totals by verdict and the line counts."""
    print_summary_table(console, summary, nodes)
    verdicts = summary.verdicts()
    console.print()
    console.print("  ".join(f"{verdicts.get(v, 0)} {v}" for v in ("dropped", "accepted", "unknown")))
    console.print(Text(counts_line(stats, repaired, summary.packets), style="dim"))
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
