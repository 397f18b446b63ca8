"""`--format summary`, the text format's packet limit, and `--match`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from chainlab.errors import InputError
from chainlab.render.text import TextReport
from chainlab.trace.match import parse_match
from chainlab.trace.pipeline import AnalysisOptions, Analyzer, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import load_rules
from chainlab.trace.summary import Summary

from ..conftest import FIXTURES

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
LAB = FIXTURES / "lab"
ULOGD = FIXTURES / "captured" / "ulogd-ip6tables-legacy.log"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINLAB, "analyze", *args], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_summary_rows_drops_first_with_their_rule():
    rules = load_rules(LAB / "scenario4-master.rules")
    result = analyze([LogSource(LAB / "scenario4-master.log", "master"), LogSource(LAB / "scenario4-slave1.log", "slave1")],
                     AnalysisOptions(rules={"master": rules}))
    summary = Summary()
    for p in result.packets:
        summary.add(p)
    first, *rest = summary.sorted_rows(result.nodes)
    assert (first.node, first.direction, first.verdict, first.count) == ("master", "request", "dropped", 1)
    assert first.drop.startswith("filter:cali-tw-cali282b0776936 rule 4 `-A cali-tw-cali282b0776936")
    assert first.example == "ip id 2207" and first.first_time == "Dec  2 03:38:09"
    assert all(r.verdict != "dropped" for r in rest)


def test_summary_counts_repeated_walks(tmp_path):
    """Ten times the same two pings: two rows (request, reply), ten packets each."""
    text = (FIXTURES / "seed-logs" / "scenario2-master.log").read_text()
    log = tmp_path / "ten.log"
    log.write_text("".join(text.replace("ID=45306", f"ID={45306 + i}").replace("ID=20759", f"ID={20759 + i}")
                           for i in range(10)))
    proc = _run("--format", "summary", f"master={log}")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("10 ")]
    assert len(rows) == 2 and {r[2] for r in rows} == {"request", "reply"}
    assert "20 accepted" in proc.stdout and "20 packets" in proc.stdout


def test_summary_rows_are_bounded():
    result = analyze([LogSource(ULOGD, "n")])
    summary = Summary(max_rows=2)
    for p in result.packets:
        summary.add(p)
    assert len(summary.rows) == 2 and summary.other == len(result.packets) - sum(r.count for r in summary.rows.values())


def test_text_shows_at_most_the_limit_then_the_summary(tmp_path):
    analyzer = Analyzer()
    report = TextReport(limit=3)
    report.feed(analyzer.packets([LogSource(ULOGD, "n")]))
    console = Console(record=True, width=200)
    report.print(console, analyzer.flows(), analyzer.stats, analyzer.nodes, None)
    out = console.export_text()
    assert out.count(" · request · ") + out.count(" · reply · ") == 3
    assert "3 of 8 packets shown; all of them by path:" in out and "8 packets (8 by flow)" in out


def test_small_logs_print_as_before():
    """Up to the limit: every packet, no summary table."""
    proc = _run("--tables", "nat,filter", f"master={FIXTURES / 'seed-logs' / 'scenario1-master.log'}")
    assert proc.returncode == 0 and "packets shown" not in proc.stdout
    assert proc.stdout.count("master · ") == 2


def test_match_expressions():
    match = parse_match(["src=fd00:231:60::/64", "proto=TCP", "port=81"])
    result = analyze([LogSource(ULOGD, "n")], AnalysisOptions(match=match))
    assert [(p.protocol, p.fields.dport) for p in result.packets] == [("tcp", 81), ("tcp", 81)]
    assert result.stats.matched == 2 and result.stats.identities == {"flow": 8}


@pytest.mark.parametrize(
    "exprs,count",
    [(["verdict=dropped"], 1), (["chain=cali-tw-*"], 1), (["chain=filter:cali-tw-*"], 1), (["node=sl*"], 1),
     (["dst=172.20.219.81"], 2), (["ip-id=2207", "node=master"], 1), (["ip-id=2207", "node=nobody"], 0),
     (["src=10.0.0.0/8"], 0), (["src=::/0"], 0), (["proto=icmp"], 2)],
)
def test_match_parts(exprs, count):
    rules = load_rules(LAB / "scenario4-master.rules")
    result = analyze([LogSource(LAB / "scenario4-master.log", "master"), LogSource(LAB / "scenario4-slave1.log", "slave1")],
                     AnalysisOptions(rules={"master": rules}, match=parse_match(exprs)))
    assert len(result.packets) == count


@pytest.mark.parametrize("expr", ["nope", "src=", "src=1.2.3", "port=70000", "port=x", "verdict=maybe", "colour=red"])
def test_bad_match_is_an_input_error(expr):
    with pytest.raises(InputError, match="--match"):
        parse_match([expr])
    proc = _run("--match", expr, f"m={ULOGD}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--match" in proc.stderr


def test_match_on_the_command_line_json():
    proc = _run("--format", "json", "--match", "proto=icmpv6", "--match", "verdict=accepted", f"n={ULOGD}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('"protocol": "icmpv6"') == 4 and '"matched": 4' in proc.stdout
