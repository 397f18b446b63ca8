"""`chainlab run N` and `chainlab nightly`: scenario runs with evidence and reports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chainlab.inventory import load_inventory
from chainlab.render.console import make_console
from chainlab.run.runner import RunFailed, RunResult, run_scenario
from chainlab.scenario import find_scenario

SCENARIOS = Path("scenarios")
RUNS = Path("runs")


@contextmanager
def run_errors(console: Console) -> Iterator[None]:
    """A run that failed after its run dir was made: ERROR, where its evidence is, exit 1."""
    try:
        yield
    except RunFailed as exc:
        console.print(f"[bold red]ERROR[/bold red] {escape(str(exc))}")
        console.print(f"evidence in {escape(str(exc.run_dir))}")
        sys.exit(exc.exit_code)


def print_result(console: Console, result: RunResult) -> None:
    table = Table(title=f"scenario {result.scenario.id}: {result.scenario.title}")
    for column in ("node", "direction", "expected", "seen", "verdict", "result"):
        table.add_column(column)
    for check in result.checks:
        seen = "; ".join(" → ".join(p) for p in check.actual) or "(none)"
        table.add_row(
            check.node, check.direction, " → ".join(check.expected) or "(none)", seen,
            ", ".join(sorted(set(check.verdicts))) or "-",
            "[green]PASS[/green]" if check.ok else f"[bold red]FAIL[/bold red] {check.message}",
        )
    console.print(table)
    for note in result.notes:
        console.print(f"[red]{note}[/red]")
    verdict = "[bold green]PASS[/bold green]" if result.passed else "[bold red]FAIL[/bold red]"
    console.print(f"{verdict} in {result.duration_s:.2f} s — evidence in {result.run_dir}")


@click.command("run")
@click.argument("number", type=click.IntRange(1, 999))
@click.option("--scenarios", "scenarios_dir", type=click.Path(file_okay=False, path_type=Path), default=SCENARIOS, show_default=True)
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=RUNS, show_default=True)
@click.pass_obj
def run_command(obj: object, number: int, scenarios_dir: Path, runs_dir: Path) -> None:
    """Run scenario NUMBER on the provisioned lab: probe, collect, analyze, PASS/FAIL (exit 0/1)."""
    inv = load_inventory(obj.inventory_path)  # type: ignore[attr-defined]
    console = make_console()
    with run_errors(console):
        result = run_scenario(inv, find_scenario(scenarios_dir, number), runs_dir, log=console.print)
    print_result(console, result)
    sys.exit(0 if result.passed else 1)


@click.command("nightly")
@click.option("--scenarios", "scenarios_dir", type=click.Path(file_okay=False, path_type=Path), default=SCENARIOS, show_default=True)
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=RUNS, show_default=True)
@click.pass_obj
def nightly_command(obj: object, scenarios_dir: Path, runs_dir: Path) -> None:
    """Every scenario that fits the lab; index.html, junit.xml, summary.json and the diff (exit 1 if any fails)."""
    from chainlab.run.nightly import run_nightly

    inv = load_inventory(obj.inventory_path)  # type: ignore[attr-defined]
    console = make_console()
    summary, results, failed = run_nightly(inv, scenarios_dir, runs_dir, log=console.print)
    for result in results:
        print_result(console, result)
    for error in failed:
        console.print(f"[bold red]ERROR[/bold red] {escape(error.run_dir.name)}: {escape(str(error))}")
    previous = summary.diff.get("previous")
    console.print("[bold]difference from the previous nightly[/bold]"
                  + (f" ({escape(previous)})" if previous else "") + "[bold]:[/bold]")
    for line in summary.diff["text"]:
        console.print(f"  {escape(line)}")
    skipped = summary.diff.get("skipped_partial") or []
    if skipped:
        console.print(f"  not compared, partial: {escape(', '.join(skipped))}")
    passed = sum(r.passed for r in results)
    total = len(results) + len(failed)
    console.print(f"{passed}/{total} scenarios passed; summary: {summary.index}")
    sys.exit(0 if results and passed == total else 1)


COMMANDS = [run_command, nightly_command]
