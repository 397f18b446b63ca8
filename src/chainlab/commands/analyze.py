"""`chainlab analyze`: TRACE logs → packet paths, verdicts, flows, summaries, diagrams."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console

from chainlab.errors import InputError, Problem
from chainlab.names import HOST_NAME
from chainlab.render import diagram
from chainlab.render.jsonout import write_json
from chainlab.render.text import TextReport, print_summary
from chainlab.trace import native
from chainlab.trace.expect import Check, Checker
from chainlab.trace.match import parse_match
from chainlab.trace.model import Packet
from chainlab.trace.netfilter import TABLES
from chainlab.trace.pipeline import AnalysisOptions, Analyzer
from chainlab.trace.reader import LogSource, check_gzip_intact
from chainlab.trace.rules import load_rules
from chainlab.trace.summary import Summary

FORMATS = ("text", "summary", "json", "mermaid", "dot", "svg")


def _node_and_path(arg: str, what: str, node_required: bool = False) -> tuple[str | None, Path]:
    node, sep, rest = arg.partition("=")
    if sep and re.match(HOST_NAME, node):
        path = Path(rest)
    elif node_required:
        raise InputError([Problem(arg, "", f"{what} must be NODE=FILE")])
    else:
        node, path = None, Path(arg)
    if not path.is_file():
        why = "a directory, not a file" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise InputError([Problem(str(path), "", f"{what}: {why}")])
    return node, path


def parse_tables(value: str | None) -> set[str] | None:
    if not value:
        return None
    tables = {t.strip() for t in value.split(",") if t.strip()}
    unknown = tables - set(TABLES)
    if unknown:
        raise InputError([Problem("--tables", "", f"unknown table(s) {', '.join(sorted(unknown))}; choose from {', '.join(TABLES)}")])
    return tables


def _checked(packets: Iterator[Packet], checker: Checker | None) -> Iterator[Packet]:
    """The packets, each also shown to the scenario checker."""
    for packet in packets:
        if checker is not None:
            checker.add(packet)
        yield packet


@click.command("analyze")
@click.argument("logs", nargs=-1, required=True, metavar="[NODE=]LOGFILE...")
@click.option("--rules", "rules_args", multiple=True, metavar="NODE=FILE",
              help="iptables-save or `nft -a list ruleset` snapshot of a node (repeatable).")
@click.option("--tables", "tables_arg", metavar="LIST", help="Only these tables, e.g. nat,filter (hook paths are computed in them).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--match", "match_args", multiple=True, metavar="EXPR",
              help="Only packets with KEY=VALUE (src, dst, proto, port, ip-id, node, verdict, chain; repeatable, all must hold).")
@click.option("--expect", "expect_path", type=click.Path(dir_okay=False, path_type=Path), help="Scenario file: exit 1 unless the paths match.")
@click.option("--title", default="", help="Diagram title.")
def analyze_command(
    logs: tuple[str, ...], rules_args: tuple[str, ...], tables_arg: str | None, fmt: str, match_args: tuple[str, ...],
    expect_path: Path | None, title: str,
) -> None:
    """Turn TRACE logs into the path each packet took.

    Each LOGFILE may be prefixed with its node (master=/var/log/iptables.log); a bare
    LOGFILE takes the node from each line's syslog host field. Kernel-log (rsyslog,
    ulogd, dmesg), xtables-monitor --trace and nft monitor trace formats are detected.
    """
    sources = [LogSource(path, node) for node, path in (_node_and_path(a, "log") for a in logs)]
    rules = {}
    for arg in rules_args:
        node, path = _node_and_path(arg, "--rules", node_required=True)
        rules[node] = load_rules(path)
    tables = parse_tables(tables_arg)
    match = parse_match(match_args)
    scenario = None
    if expect_path:
        from chainlab.scenario import load_scenario  # pydantic: imported only when needed (0.1 s)

        scenario = load_scenario(expect_path)
    options = AnalysisOptions(tables=tables, rules=rules, match=match)

    in_use = {"--rules": bool(rules), "--tables": tables is not None, "--expect": scenario is not None,
              "--match": bool(match), f"--format {fmt}": fmt != "json"}
    python_only = [option for option, used in in_use.items() if used]
    sizes = native.plan(sources, python_only)
    if fmt == "json":
        for source in sources:
            check_gzip_intact(source.path)  # JSON streams: a truncated .gz is refused before any output
    if sizes is not None:
        native.write_json(sys.stdout, sources, sizes)
        return

    analyzer = Analyzer(options)
    checker = Checker(scenario) if scenario is not None else None
    packets = _checked(analyzer.packets(sources), checker)

    def checks() -> list[Check] | None:
        return None if checker is None else checker.checks(set(analyzer.nodes) | {s.node for s in sources if s.node})

    console = Console()
    if fmt == "json":
        write_json(sys.stdout, packets, analyzer.flows, analyzer.stats, tables, checks_after=checks)
    elif fmt == "text":
        report = TextReport()
        report.feed(packets)
        report.print(console, analyzer.flows(), analyzer.stats, analyzer.nodes, tables, checks())
    elif fmt == "summary":
        summary, repaired = Summary(), 0
        for packet in packets:
            summary.add(packet)
            repaired += packet.repaired_lines
        print_summary(console, summary, analyzer.stats, analyzer.nodes, repaired, checks())
    else:
        builder = diagram.DiagramBuilder(tables)
        for packet in packets:
            builder.add(packet)
        model = builder.model(analyzer.nodes, analyzer.flows())
        render = {"mermaid": diagram.to_mermaid, "dot": diagram.to_dot, "svg": diagram.to_svg}[fmt]
        sys.stdout.write(render(model, title))
    if checker is not None and not all(c.ok for c in checks() or []):
        sys.exit(1)


COMMANDS = [analyze_command]
