"""`chainlab analyze`: TRACE logs → packet paths, verdicts, flows, summaries, diagrams."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import click

from chainlab.errors import InputError, Problem
from chainlab.render.jsonout import write_json, write_tail
from chainlab.trace import native
from chainlab.trace.expect import Check, Checker
from chainlab.trace.match import parse_match
from chainlab.trace.model import Packet
from chainlab.trace.netfilter import TABLES
from chainlab.trace.pipeline import AnalysisOptions, Analyzer
from chainlab.trace.reader import LogSource, ReadStats, check_gzip_intact, encoding_note, headerless_records
from chainlab.trace.rules import load_rules
from chainlab.trace.summary import Summary

if TYPE_CHECKING:
    from rich.console import Console

    from chainlab.render.diagram import DiagramModel

FORMATS = ("text", "summary", "json", "mermaid", "dot", "svg")


def _node_and_path(arg: str, what: str, node_required: bool = False) -> tuple[str | None, Path]:
    """`NODE=FILE` or (unless `node_required`) a bare FILE. NODE is any name a log's lines or
    file could give a node (node_a, node-a.example.com, 09-web), only not a path; a log whose
    own path holds '=' is read as that file when it exists."""
    name, sep, rest = arg.partition("=")
    named = bool(sep) and bool(name.strip()) and "/" not in name
    node: str | None
    if named and (node_required or not Path(arg).is_file()):
        node, path = name, Path(rest)
        if not rest:
            raise InputError([Problem(arg, "", f"{what}: {name}= names no file")])
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


@contextlib.contextmanager
def _stdin_spooled(logs: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """`logs` with `-` (or NODE=-) standing for standard input (`journalctl -k | chainlab
    analyze -`), copied first to a private temporary file: the engines read a log's head to
    know its format, then the whole. Memory stays flat; the copy goes when the command ends.
    A gzip stream is named .gz, so it is gunzipped as a .gz file is."""
    wanted = [a for a in logs if a == "-" or a.endswith("=-")]
    if not wanted:
        yield logs
        return
    if len(wanted) > 1:
        raise InputError([Problem("-", "", "log: standard input can be read once: give `-` once")])
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError([Problem("-", "", "log: `-` reads the log from standard input, which is a terminal:"
                                           " pipe a log into it (journalctl -k | chainlab analyze -)")])
    with tempfile.TemporaryDirectory(prefix="chainlab-stdin-") as tmp:
        path = Path(tmp) / "stdin"
        with open(path, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        with open(path, "rb") as copy:
            if copy.read(2) == b"\x1f\x8b":
                path = path.rename(path.with_name("stdin.gz"))
        yield tuple(str(path) if a == "-" else f"{a[:-1]}{path}" if a in wanted else a for a in logs)


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
    LOGFILE takes the node from each line's syslog host field; `-` (or NODE=-) reads
    standard input. Kernel-log (rsyslog, ulogd, dmesg), xtables-monitor --trace and nft
    monitor trace formats are detected.
    """
    with _stdin_spooled(logs) as logs:
        sources = [LogSource(path, node) for node, path in (_node_and_path(a, "log") for a in logs)]
        rules = {}
        for arg in rules_args:
            node, path = _node_and_path(arg, "--rules", node_required=True)
            assert node is not None  # required
            if node in rules:
                raise InputError([Problem(arg, "", f"--rules: a second snapshot of node {node}: give one per node")])
            rules[node] = load_rules(path)
        tables = parse_tables(tables_arg)
        match = parse_match(match_args)
        scenario = None
        if expect_path:
            from chainlab.scenario import load_scenario  # pydantic: imported only when needed (0.1 s)

            scenario = load_scenario(expect_path)
        options = AnalysisOptions(tables=tables, rules=rules, match=match)
        checker = Checker(scenario) if scenario is not None else None
        if fmt == "json":
            for source in sources:
                check_gzip_intact(source.path)  # JSON streams: a truncated .gz is refused before any output
        use_native = native.wanted()
        if not use_native and (note := native.fallback_note()):
            click.echo(note, err=True)
        run = _run_native if use_native else _run_python
        ok, stats, nodes = run(sources, options, fmt, checker, title)
        for node in [n for n in rules if n not in nodes and stats.trace_records]:
            click.echo(f"note: --rules {node}=...: no trace line is of node {node} (the logs' nodes: {', '.join(nodes)})",
                       err=True)
        if stats.lines and not stats.trace_records:
            unread = (f"; {stats.skipped_lines} of them show a trace marker but no record that can be read"
                      if stats.skipped_lines else "")
            click.echo(f"note: no packet trace in {stats.lines} line{'s' if stats.lines != 1 else ''}{unread}"
                       " (read are kernel TRACE records, `TRACE: table:chain:rule|return|policy:N IN=...`,"
                       " xtables-monitor --trace and nft monitor trace, also quoted with `>` or wrapped by a post;"
                       " not LOG-target lines)", err=True)
            _encoding_notes(sources)
            bare = sum(headerless_records(source.path) for source in sources)
            if bare:
                click.echo(f"note: {bare} line{'s' if bare != 1 else ''} look{'s' if bare == 1 else ''} like TRACE records"
                           " whose `TRACE: ` was cut off (`raw:PREROUTING:policy:2 IN=...`): put it back in front of"
                           " each `table:chain:...` (lines that start with it: sed 's/^/TRACE: /') and analyse again", err=True)
        elif stats.trace_records and stats.skipped_lines >= stats.trace_records:
            click.echo(f"note: none of the {stats.trace_records} trace lines could be placed in a packet: they show"
                       " nothing to group them by (an IP id, addresses and ports, an nft trace id: shortened, or"
                       " cut at a fixed column, before posting?) or are damaged beyond repair", err=True)
            _encoding_notes(sources)
        if not ok:
            sys.exit(1)


def _encoding_notes(sources: list[LogSource]) -> None:
    """Say of each log whose bytes are not plain text lines what they are (see encoding_note)."""
    for note in filter(None, (encoding_note(source.path) for source in sources)):
        click.echo(f"note: {note}", err=True)


def _checks(checker: Checker | None, nodes: list[str], sources: list[LogSource]) -> list[Check] | None:
    return None if checker is None else checker.checks(set(nodes) | {s.node for s in sources if s.node})


def _text_output() -> tuple[Console, ModuleType]:
    """A console and the text renderer, imported only for the formats that print them (rich:
    ~30 ms that a json or diagram run does without)."""
    from chainlab.render import text
    from chainlab.render.console import make_console

    return make_console(emoji=False), text


def _run_python(sources: list[LogSource], options: AnalysisOptions, fmt: str, checker: Checker | None,
                title: str) -> tuple[bool, ReadStats, list[str]]:
    """The Python engine (the reference): packets stream into the chosen output; whether the
    checks (if any) passed, what happened to the lines, and the nodes they named."""
    analyzer = Analyzer(options)
    packets = _checked(analyzer.packets(sources), checker)
    checks: list[Check] | None = None

    def checks_after() -> list[Check] | None:
        nonlocal checks
        checks = _checks(checker, analyzer.nodes, sources)
        return checks

    if fmt == "json":
        write_json(sys.stdout, packets, analyzer.flows, analyzer.stats, options.tables, checks_after=checks_after)
    elif fmt == "text":
        console, text = _text_output()
        report = text.TextReport()
        report.feed(packets)
        report.print(console, analyzer.flows(), analyzer.stats, analyzer.nodes, options.tables, checks_after())
    elif fmt == "summary":
        summary, repaired = Summary(), 0
        for packet in packets:
            summary.add(packet)
            repaired += packet.repaired_lines
        console, text = _text_output()
        text.print_summary(console, summary, analyzer.stats, analyzer.nodes, repaired, checks_after())
    else:
        diagram = _diagram_output()
        builder = diagram.DiagramBuilder(options.tables)
        for packet in packets:
            builder.add(packet)
        _write_diagram(builder.model(analyzer.nodes, analyzer.flows()), fmt, title)
        checks_after()
    return checks is None or all(c.ok for c in checks), analyzer.stats, analyzer.nodes


def _run_native(sources: list[LogSource], options: AnalysisOptions, fmt: str, checker: Checker | None,
                title: str) -> tuple[bool, ReadStats, list[str]]:
    """The C engine (native.py): the same outputs, the same bytes, as `_run_python` returns."""
    mode = fmt if fmt in ("json", "text", "summary") else "diagram"
    if fmt == "json":
        sys.stdout.write('{"packets": [')
        sys.stdout.flush()
        result = native.run(sources, options, mode, checker, out=sys.stdout.buffer, out_fd=_stdout_descriptor())
        checks = _checks(checker, result.nodes, sources)
        write_tail(sys.stdout, lambda: result.flows, result.stats, options.tables, result.repaired, checks)
    else:
        result = native.run(sources, options, mode, checker)
        checks = _checks(checker, result.nodes, sources)
        if fmt == "text":
            console, text = _text_output()
            report = text.TextReport()
            report.kept, report.summary, report.repaired = result.kept, result.summary, result.repaired
            report.print(console, result.flows, result.stats, result.nodes, options.tables, checks)
        elif fmt == "summary":
            console, text = _text_output()
            text.print_summary(console, result.summary, result.stats, result.nodes, result.repaired, checks)
        else:
            diagram = _diagram_output()
            builder = diagram.DiagramBuilder(options.tables)
            for node, direction, seq, count, info in result.walks:
                builder.put(seq, diagram.Walk(node, direction, info.hooks, info.chains, info.verdict, info.drop_at, count))
            _write_diagram(builder.model(result.nodes, result.flows), fmt, title)
    return checks is None or all(c.ok for c in checks), result.stats, result.nodes


def _stdout_descriptor() -> int | None:
    """stdout's file descriptor, for the C engine to write to itself; None when stdout is an
    in-memory stream (as under click's test runner)."""
    try:
        return sys.stdout.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation
        return None


def _diagram_output() -> ModuleType:
    """The diagram renderer, imported only for diagrams (~10 ms the other formats do without)."""
    from chainlab.render import diagram

    return diagram


def _write_diagram(model: DiagramModel, fmt: str, title: str) -> None:
    diagram = _diagram_output()
    render = {"mermaid": diagram.to_mermaid, "dot": diagram.to_dot, "svg": diagram.to_svg}[fmt]
    sys.stdout.write(render(model, title))


COMMANDS = [analyze_command]
