"""`chainlab analyze`: TRACE logs → packet paths, verdicts, flows, diagrams."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from rich.console import Console

from chainlab.errors import InputError, Problem
from chainlab.names import HOST_NAME
from chainlab.render import diagram
from chainlab.render.jsonout import write_json
from chainlab.render.text import print_analysis
from chainlab.trace.expect import check_scenario
from chainlab.trace import native
from chainlab.trace.netfilter import TABLES
from chainlab.trace.pipeline import AnalysisOptions, Analyzer, analyze
from chainlab.trace.reader import LogSource, check_gzip_intact
from chainlab.trace.rules import load_rules

FORMATS = ("text", "json", "mermaid", "dot", "svg")


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


@click.command("analyze")
@click.argument("logs", nargs=-1, required=True, metavar="[NODE=]LOGFILE...")
@click.option("--rules", "rules_args", multiple=True, metavar="NODE=FILE", help="iptables-save snapshot of a node (repeatable).")
@click.option("--tables", "tables_arg", metavar="LIST", help="Only these tables, e.g. nat,filter (hook paths are computed in them).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--expect", "expect_path", type=click.Path(dir_okay=False, path_type=Path), help="Scenario file: exit 1 unless the paths match.")
@click.option("--title", default="", help="Diagram title.")
def analyze_command(
    logs: tuple[str, ...], rules_args: tuple[str, ...], tables_arg: str | None, fmt: str,
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
    scenario = None
    if expect_path:
        from chainlab.scenario import load_scenario  # pydantic: imported only when needed (0.1 s)

        scenario = load_scenario(expect_path)
    options = AnalysisOptions(tables=tables, rules=rules)
    console = Console()

    in_use = {"--rules": bool(rules), "--tables": tables is not None, "--expect": scenario is not None,
              f"--format {fmt}": fmt != "json"}
    python_only = [option for option, used in in_use.items() if used]
    sizes = native.plan(sources, python_only)
    if sizes is not None:
        for source in sources:
            check_gzip_intact(source.path)
        native.write_json(sys.stdout, sources, sizes)
        return
    if fmt == "json" and scenario is None:
        for source in sources:
            check_gzip_intact(source.path)
        analyzer = Analyzer(options)
        write_json(sys.stdout, analyzer.packets(sources), analyzer.flows, analyzer.stats, tables)
        return

    result = analyze(sources, options)
    checks = None
    if scenario is not None:
        checks = check_scenario(scenario, result.packets, set(result.nodes) | {s.node for s in sources if s.node})
    if fmt == "text":
        print_analysis(console, result.packets, result.flows, result.stats, tables, checks)
    elif fmt == "json":
        write_json(sys.stdout, result.packets, lambda: result.flows, result.stats, tables, checks)
    else:
        model = diagram.build_model(result.packets, result.flows, tables)
        render = {"mermaid": diagram.to_mermaid, "dot": diagram.to_dot, "svg": diagram.to_svg}[fmt]
        sys.stdout.write(render(model, title))
    if checks is not None and not all(c.ok for c in checks):
        sys.exit(1)


COMMANDS = [analyze_command]
