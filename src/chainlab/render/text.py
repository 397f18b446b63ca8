"""Readable terminal output: per node, per packet, the chain walk (rich)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chainlab.trace.expect import Check
from chainlab.trace.flows import Flow
from chainlab.trace.model import Packet
from chainlab.trace.reader import ReadStats

VERDICT_STYLE = {"accepted": "green", "dropped": "bold red", "unknown": "yellow"}


def packet_title(p: Packet) -> str:
    f = p.fields
    ends = f"{p.first.src} → {p.first.dst}" if p.first else "?"
    detail = f"ip id {f.ip_id}"
    if f.proto == "ICMP" and f.icmp_seq is not None:
        detail += f", icmp id {f.icmp_id} seq {f.icmp_seq}"
    elif f.sport is not None:
        detail += f", ports {f.sport} → {f.dport}"
    return f"{p.node} · {p.direction} · {p.protocol} {ends} ({detail})"


def packet_table(p: Packet, tables: set[str] | None) -> Table:
    steps = [s for s in p.steps if tables is None or s.table in tables]
    with_rules = any(s.rule for s in steps)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="dim")
    for column in ("hook", "table:chain", "step", "mark", *(["rule"] if with_rules else [])):
        table.add_column(column)
    for step in steps:
        what = step.kind
        if step.position is not None:
            what += f" {step.position}"
        elif step.handle:
            what += f" {step.handle}"
        if step.verdict:
            what += f" → {step.verdict}"
        row = [step.hook or "?", f"{step.table}:{step.chain}", what, hex(step.mark) if step.mark else ""]
        table.add_row(*row, *([escape(step.rule or "")] if with_rules else []))
    return table


def render_packet(p: Packet, tables: set[str] | None) -> Group:
    path = " → ".join(p.hooks) or "(no step in the selected tables)"
    verdict = Text.assemble(
        ("  path: ", "dim"), (path, "bold"), ("   verdict: ", "dim"),
        (p.verdict, VERDICT_STYLE.get(p.verdict, "")), (f"  ({p.reason})", "dim"),
    )
    return Group(Text(packet_title(p), style="bold cyan"), verdict, packet_table(p, tables), Text(""))


def print_analysis(
    console: Console, packets: list[Packet], flows: list[Flow], stats: ReadStats,
    tables: set[str] | None, checks: list[Check] | None = None,
) -> None:
    for p in packets:
        console.print(render_packet(p, tables))
    if flows:
        console.print(Text("flows across nodes", style="bold"))
        for flow in flows:
            hops = "  ⇒  ".join(f"{h.node}: {' → '.join(h.hooks)} ({h.verdict})" for h in flow.hops)
            console.print(f"  {flow.direction} {flow.protocol} ip id {flow.ip_id}: {hops}")
            for note in flow.nat:
                console.print(f"    [magenta]{escape(note)}[/magenta]")
        console.print()
    repaired = sum(p.repaired_lines for p in packets)
    console.print(
        f"[dim]{stats.lines} lines, {stats.trace_records} trace records, "
        f"{stats.skipped_lines} skipped, {repaired} damaged but attributed, "
        f"{stats.ignored_lines} not trace lines; {len(packets)} packets[/dim]"
    )
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
