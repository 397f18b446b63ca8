"""Terminal output of `chainlab probe` and `chainlab matrix` (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chainlab.render.text import VERDICT_STYLE, flow_text
from chainlab.run.matrix import Matrix, deciding_rules, rule_number
from chainlab.run.outcome import ProbeResult, hop_order


def _verdicts(verdicts: list[str]) -> str:
    return ", ".join(f"[{VERDICT_STYLE.get(v, '')}]{v}[/]" for v in verdicts)


def print_probe(console: Console, result: ProbeResult) -> None:
    """Per node the hook path, verdict and the drop; the flows with NAT; the run dir."""
    verdict = "[bold green]REACHABLE[/]" if result.reached else "[bold red]UNREACHABLE[/]"
    console.print(f"{verdict} {escape(result.label)}: {escape(result.decision)}")
    table = Table(show_edge=False, box=None, header_style="dim", pad_edge=False)
    for column in ("node", "direction", "path (nat, filter)", "verdict", "detail"):
        table.add_column(column)
    seen: list[tuple[str, str]] = []
    for p in sorted(result.packets_of(), key=hop_order):
        if (p.node, p.direction) not in seen:
            seen.append((p.node, p.direction))
    for node, direction in seen:
        packets = result.packets_of(node, direction)
        details = list(dict.fromkeys(
            f"{p.last_step.table}:{p.last_step.chain}" if p.verdict == "dropped" and p.last_step else p.reason
            for p in packets if p.verdict != "accepted"))
        table.add_row(node, direction, "; ".join(" → ".join(path) or "(none)" for path in result.paths(node, direction)),
                      _verdicts(result.verdicts(node, direction)), escape("; ".join(details)))
    if seen:
        console.print(table)
    else:
        console.print("[yellow]no packet of this probe in any node's trace[/]")
    for flow in result.flows:
        console.print(flow_text(flow, "flow: "))
    for note in result.own_nat:
        console.print(f"  [magenta]{escape(note)}[/magenta]")
    if result.run_dir is not None:
        console.print(f"[dim]probe exit code {result.exit_code}; evidence in {result.run_dir}/report.html[/dim]")


def print_matrix(console: Console, matrix: Matrix) -> None:
    """The truth table, each unreachable cell with its deciding rule (full text below)."""
    rules = deciding_rules(matrix)
    table = Table(title=f"lab {matrix.lab} · {matrix.service} · rows: from, columns: to", show_lines=True)
    table.add_column("from \\ to", style="bold")
    for target in matrix.targets:
        table.add_column(target, overflow="fold")
    for source in matrix.sources:
        row = []
        for target in matrix.targets:
            cell = matrix.cell(source, target)
            if cell is None:
                row.append("[dim]-[/dim]")
                continue
            text = ("[yellow]?[/yellow] " + escape(cell.short) if not cell.probed
                    else "[green]✓[/green]" if cell.reachable else "[red]✗[/red] " + escape(cell.short))
            note = rule_number(rules, cell)
            if note is not None:
                text += f" [{note}]"
            if cell.ok is not None:
                text = ("[green]PASS[/green] " if cell.ok else "[bold red]FAIL[/bold red] ") + text
            if cell.changed:
                text += f"\n[yellow]was: {escape(cell.previous or '')}[/yellow]"
            row.append(text)
        table.add_row(source, *row)
    console.print(table)
    for entry in rules:
        drop = entry["drop"]
        console.print(f"[{entry['n']}] {escape(drop['node'])} {escape(drop['table'])}:{escape(drop['chain'])} "
                      f"{escape(drop['step'])}: {escape(drop['rule'] or '(no rule text)')}", soft_wrap=True)
    reachable = sum(c.reachable for c in matrix.cells)
    unprobed = f", {len(matrix.not_probed)} not probed" if matrix.not_probed else ""
    console.print(f"{reachable}/{len(matrix.cells)} reachable{unprobed} in {matrix.duration_s:.1f} s")
    if matrix.skipped_partial:
        console.print(f"not compared, partial: {', '.join(matrix.skipped_partial)}", soft_wrap=True)
    if matrix.previous:
        console.print(f"changed since {matrix.previous}: " + (", ".join(
            f"{c.source} → {c.target} ({escape(c.previous or '')} → {escape(c.short)})" for c in matrix.changes)
            or "nothing"), soft_wrap=True)
    if matrix.expect_file:
        failures = matrix.failures
        console.print("[bold green]PASS[/bold green]" if not failures else
                      f"[bold red]FAIL[/bold red]: {len(failures)} cell(s) differ from {escape(matrix.expect_file)}")
