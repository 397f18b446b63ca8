"""The C engine against the Python reference: `chainlab analyze` must write the same bytes
and exit with the same status whichever engine runs, in every format and with every option.

CHAINLAB_ENGINE=python forces the pure-Python engine, `native` requires the C one
(chainlab.trace._engine, driven by chainlab.trace.native; exit 2 when it is not built),
unset or `auto` uses C when it is built. Every comparison here runs the real command line
in-process (chainlab.cli.main under click's CliRunner isolation), once per engine.

Inputs: every fixture log (kernel format, xtables-monitor, nft monitor; ours and the shared
public traces copied into tests/fixtures/public-traces) in every format, with --rules (iptables-save and nft rulesets), --tables,
--match and --expect; logs from the benchmark generator (alone, twice under two nodes, split
in two files mid-packet, read in small chunks); hand-made cases for the assembler's window
and fast path; and Hypothesis logs built from real-format lines, damaged the ways loggers
damage them and salted with bytes of every kind.
"""

from __future__ import annotations

import difflib
import gzip
import importlib
import importlib.util
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainlab import cli
from chainlab.trace import reader
from chainlab.trace.netfilter import HOOKS
from chainlab.trace.reader import (KERNEL, KERNEL_WRAPPED, NFT_MONITOR, NFT_WRAPPED, SNIFF_LINES, XTABLES_MONITOR,
                                   XTABLES_WRAPPED, log_format)

from ..conftest import FIXTURES, PUBLIC, ROOT

ENV = "CHAINLAB_ENGINE"
BENCH = ROOT / "bench" / "trace_bench.py"
CHAINLAB = str(Path(sys.executable).parent / "chainlab")
HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
#: The formats compared (svg is dot run through Graphviz: the same when dot is).
FORMATS = ("json", "text", "summary", "mermaid", "dot")


# -- running the command ------------------------------------------------------------------


@dataclass
class Run:
    code: int | str | None
    stdout: bytes
    stderr: str
    crash: str | None = None  # an exception the real CLI would print as a traceback (exit 1)


def analyze(args: list[str], engine: str | None, fmt: str = "json") -> Run:
    """`chainlab analyze --format FMT ARGS` in-process with CHAINLAB_ENGINE=engine (None: unset)."""
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        if engine is None:
            mp.delenv(ENV, raising=False)
        else:
            mp.setenv(ENV, engine)
        mp.setenv("COLUMNS", "120")
        mp.setattr(sys, "argv", ["chainlab", "analyze", "--format", fmt, *args])
        crash = None
        with runner.isolation() as (out, err, _):
            try:
                cli.main()
                code: int | str | None = 0
            except SystemExit as exc:
                code = exc.code
            except Exception as exc:  # noqa: BLE001 - the real CLI: traceback, exit 1
                code, crash = 1, f"{type(exc).__name__}: {exc}"[:500]
            sys.stdout.flush()
            sys.stderr.flush()
            return Run(code, out.getvalue(), err.getvalue().decode("utf-8", "replace"), crash)


def _explain(what: str, py: Run, other: Run, other_name: str, text: str | None = None) -> str:
    parts = [f"{what}: python exit {py.code!r}, {other_name} exit {other.code!r}"]
    for name, run in (("python", py), (other_name, other)):
        if run.crash:
            parts.append(f"{name} crashed: {run.crash}")
        if run.stderr.strip():
            parts.append(f"{name} stderr: {run.stderr.strip()[:600]}")
    if text is not None:
        shown = text if len(text) < 4000 else text[:4000] + "..."
        parts.append("input:\n" + "\n".join(repr(line) for line in shown.split("\n")))
    diff = difflib.unified_diff(
        py.stdout.decode("utf-8", "replace").splitlines(), other.stdout.decode("utf-8", "replace").splitlines(),
        "python", other_name, n=0, lineterm="",
    )
    parts.append("\n".join(line[:1500] for line in itertools.islice(diff, 40)))
    return "\n".join(parts)


def assert_same(args: list[str], what: str = "", text: str | None = None, auto: bool = False,
                formats: tuple[str, ...] = ("json",)) -> Run:
    """Both engines: same exit status, byte-identical stdout (and `auto` too if asked);
    returns the Python engine's run of the first format."""
    first = None
    for fmt in formats:
        py = analyze(args, "python", fmt)
        assert py.crash is None, _explain(f"{what or ' '.join(args)} --format {fmt}", py, py, "python", text)
        first = first or py
        for engine in ["native", "auto"] if auto else ["native"]:
            other = analyze(args, engine, fmt)
            assert (other.code, other.stdout) == (py.code, py.stdout), _explain(
                f"{what or ' '.join(args)} --format {fmt}", py, other, engine, text)
    assert first is not None
    return first


def check_file(path: Path, node: str = "n", what: str = "", text: str | None = None, auto: bool = False,
               formats: tuple[str, ...] = ("json",)) -> None:
    """Given as NODE=FILE, and bare (each line's host field names its node, else the file name)."""
    for args in ([f"{node}={path}"], [str(path)]):
        assert_same(args, what or path.name, text, auto=auto, formats=formats)


def load_bench() -> ModuleType:
    if str(BENCH.parent) not in sys.path:  # as `python bench/trace_bench.py` has it: its helpers beside it
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("chainlab_trace_bench", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# -- 4. the extension is built --------------------------------------------------------------


def test_engine_extension_is_built():
    """`pip install -e .` builds chainlab.trace._engine; without it every `auto` run is Python."""
    engine = importlib.import_module("chainlab.trace._engine")
    assert hasattr(engine, "Engine") and engine.utf8(b"a\xff") == "a\ufffd".encode()
    native = importlib.import_module("chainlab.trace.native")
    assert native._engine is engine


def test_native_without_the_extension_is_an_input_error(monkeypatch):
    native = importlib.import_module("chainlab.trace.native")
    monkeypatch.setattr(native, "_engine", None)
    run = analyze([f"n={FIXTURES / 'seed-logs' / 'scenario2-master.log'}"], "native")
    assert run.code == 2 and "not built" in run.stderr and run.stdout == b""
    run = analyze([f"n={FIXTURES / 'seed-logs' / 'scenario2-master.log'}"], None)  # auto: the Python engine, said
    assert run.code == 0 and "is not built" in run.stderr and "the Python engine analyses" in run.stderr


def test_a_build_of_another_engine_source_is_refused(tmp_path, monkeypatch):
    """A failed compile of a changed _engine.c or part leaves the last build in place: that
    build carries the digest of its sources (setup.py), and one that differs from the sources
    beside native.py counts as not built (native: exit 2; auto: the Python engine, said)."""
    native = importlib.import_module("chainlab.trace.native")
    engine = importlib.import_module("chainlab.trace._engine")
    trace = Path(native.__file__).parent
    shutil.copy(trace / "_engine.c", tmp_path / "_engine.c")
    shutil.copytree(trace / "engine", tmp_path / "engine")
    assert not native._stale(engine, tmp_path)
    part = tmp_path / "engine" / "maps.c"
    part.write_bytes(part.read_bytes() + b"\n/* changed */\n")
    assert native._stale(engine, tmp_path)  # a part changed
    shutil.copy(trace / "engine" / "maps.c", part)
    main = tmp_path / "_engine.c"
    main.write_bytes(main.read_bytes().replace(b'#include "engine/maps.c"\n', b""))
    assert native._stale(engine, tmp_path)  # a part left out
    assert not native._stale(engine, tmp_path / "absent")  # an installed wheel: nothing to compare
    monkeypatch.setattr(native, "_engine", None)
    monkeypatch.setattr(native, "STALE", True)
    log = f"n={FIXTURES / 'seed-logs' / 'scenario2-master.log'}"
    run = analyze([log], "native")
    assert run.code == 2 and "another _engine.c" in run.stderr and run.stdout == b""
    run = analyze([log], None)
    assert run.code == 0 and "another _engine.c" in run.stderr and "the Python engine analyses" in run.stderr
    assert "note:" not in analyze([log], "python").stderr


def test_engine_output_json_utf8_matches_python():
    engine = importlib.import_module("chainlab.trace._engine")
    for data in [b"", b"plain", b'q"b\\', b"\x00\x01\x1f\x7f", "é€😀".encode(), b"\xff\xfe", b"\xe2\x82", b"\xed\xa0\x80",
                 b"\xf4\x90\x80\x80", b"\xc0\xaf", b"a\xf0\x9f\x98"]:
        text = data.decode("utf-8", "replace")
        assert engine.utf8(data) == text.encode(), data
        import json

        assert engine.json_string(text.encode()) == json.dumps(text).encode(), data


# -- 1. every fixture log, every format ------------------------------------------------------

FIXTURE_DIRS = [FIXTURES / "seed-logs", FIXTURES / "public-traces", FIXTURES / "lab", FIXTURES / "traces",
                FIXTURES / "captured", FIXTURES / "public"]
FIXTURE_LOGS = sorted(p for d in FIXTURE_DIRS for p in d.iterdir() if p.suffix == ".log")
KERNEL_LOGS = [p for p in FIXTURE_LOGS if log_format(p) == KERNEL]
SCENARIO2 = FIXTURES / "seed-logs" / "scenario2-master.log"
LAB = FIXTURES / "lab"
CAPTURED = FIXTURES / "captured"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path)


@pytest.mark.parametrize("path", FIXTURE_LOGS, ids=_rel)
def test_fixture_log(path):
    """Every fixture, in every format, as NODE=FILE and bare."""
    check_file(path, auto=True, formats=FORMATS)


def test_all_fixtures_in_one_run():
    """Every fixture at once, one node each, then all on one node (packets of one file may
    continue in the next; the IP ids and trace ids of different files meet)."""
    assert KERNEL_LOGS
    assert_same([f"n{i}={p}" for i, p in enumerate(FIXTURE_LOGS)], "one node per file", formats=FORMATS)
    assert_same([f"n={p}" for p in FIXTURE_LOGS], "all on one node", formats=FORMATS)


def test_lab_scenarios_multi_node_flows():
    """Two nodes seeing the same packets: flows across nodes."""
    for scenario in ("scenario3", "scenario4"):
        master, slave = LAB / f"{scenario}-master.log", LAB / f"{scenario}-slave1.log"
        py = assert_same([f"master={master}", f"slave1={slave}"], scenario, auto=True, formats=FORMATS)
        assert b'"flows": [\n  {' in py.stdout  # the comparison covers flows, not an empty list


def test_public_cross_node_flow():
    b, a = PUBLIC / "02-gke-icmp-crossnode-hostB.log", PUBLIC / "03-gke-icmp-crossnode-hostA.log"
    assert_same([f"hostb={b}", f"hosta={a}"], formats=FORMATS)


S4 = [f"master={LAB / 'scenario4-master.log'}", f"slave1={LAB / 'scenario4-slave1.log'}"]
S4_RULES = ["--rules", f"master={LAB / 'scenario4-master.rules'}"]
NFT = [f"n={CAPTURED / 'nft-monitor-inet-t13.log'}"]
NFT_RULES = ["--rules", f"n={CAPTURED / 'nft-monitor-inet-t13.ruleset'}"]
ULOGD = [f"n={CAPTURED / 'ulogd-ip6tables-legacy.log'}"]
ULOGD_RULES = ["--rules", f"n={CAPTURED / 'ulogd-ip6tables-legacy.rules'}"]


@pytest.mark.parametrize(
    "args",
    [
        S4 + S4_RULES, S4 + ["--tables", "nat,filter"], S4 + S4_RULES + ["--tables", "filter"],
        NFT + NFT_RULES, NFT + ["--tables", "filter"], ULOGD + ULOGD_RULES,
        S4 + ["--match", "verdict=dropped"], S4 + S4_RULES + ["--match", "chain=cali-tw-*", "--match", "node=master"],
        S4 + ["--match", "dst=172.20.219.0/24"], S4 + ["--match", "src=172.16.91.226", "--match", "proto=icmp"],
        NFT + ["--match", "proto=tcp", "--match", "port=81"], NFT + ["--match", "src=fd00:231:60::/64"],
        NFT + NFT_RULES + ["--match", "chain=t13:guard"], ULOGD + ["--match", "ip-id=1"], ULOGD + ["--match", "node=x*"],
        [*S4, *S4_RULES, "--expect", "scenarios/04-node-to-container.yaml"],
        [f"master={FIXTURES / 'seed-logs' / 'scenario1-master.log'}", "--expect", "scenarios/01-host-to-container.yaml"],
        [f"master={SCENARIO2}", "--expect", "scenarios/01-host-to-container.yaml", "--tables", "nat,filter"],
    ],
    ids=lambda args: " ".join(a.split("/")[-1] for a in args),
)
def test_options(args):
    """--rules (iptables-save and nft), --tables, --match and --expect, every format."""
    assert_same(args, formats=FORMATS)


# -- any bytes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,data",
    [
        ("tab", b"x\tTRACE: raw:PREROUTING:policy:2 IN=eth0\n"),
        ("tab-separated", SCENARIO2.read_bytes().split(b"\n")[3].replace(b" ", b"\t") + b"\n"),
        ("utf8", "Dec  2 03:10:15 m\u00e4ster kernel: hello\n".encode()),
        ("utf8-host", SCENARIO2.read_bytes().split(b"\n")[2].replace(b" master ", " m\u00e4ster ".encode()) + b"\n"),
        ("utf8-chain", SCENARIO2.read_bytes().split(b"\n")[2].replace(b"cali-PREROUTING", "cali-\u00fc\U0001f600".encode()) + b"\n"),
        ("crlf", b"CRLF\r\n"),
        ("crlf-trace", SCENARIO2.read_bytes().split(b"\n")[2] + b"\r\r\n"),
        ("nul", b"\0\n"),
        ("nul-in-host", SCENARIO2.read_bytes().split(b"\n")[2].replace(b" master ", b" ma\0ster ") + b"\n"),
        ("del", b"\x7f\n"),
        ("latin1", b"\xff\n"),
        ("invalid-utf8-hosts", b"Dec  2 03:10:15 \xff kernel: TRACE: raw:PREROUTING:policy:2 IN=e OUT= SRC=1.1.1.1 DST=2.2.2.2 "
                               b"TTL=1 ID=1 PROTO=UDP SPT=1 DPT=2\n"
                               b"Dec  2 03:10:15 \xfe kernel: TRACE: nat:PREROUTING:policy:2 IN=e OUT= SRC=1.1.1.1 DST=2.2.2.2 "
                               b"TTL=1 ID=1 PROTO=UDP SPT=1 DPT=2\n"),
        ("vertical-tab", SCENARIO2.read_bytes().split(b"\n")[4].replace(b" SRC=", b"\x0bSRC=") + b"\n"),
        ("unit-separator", SCENARIO2.read_bytes().split(b"\n")[4].replace(b" SRC=", b"\x1fSRC=") + b"\n"),
        ("superscript-digit", SCENARIO2.read_bytes().split(b"\n")[4].replace(b"TTL=64", "TTL=6\u00b2".encode()) + b"\n"),
        ("markup", SCENARIO2.read_bytes().split(b"\n")[4].replace(b"cali-PREROUTING", b"[bold]x[/bold]") + b"\n"),
    ],
)
def test_any_bytes(tmp_path, name, data):
    """Bytes other than printable ASCII anywhere in the file: both engines read them alike."""
    text = SCENARIO2.read_bytes()
    for where, content in (("middle", text[: len(text) // 2] + data + text[len(text) // 2 :]), ("alone", data)):
        log = tmp_path / f"{name}-{where}.log"
        log.write_bytes(content)
        check_file(log, what=f"{name} ({where})", auto=True, formats=("json", "text", "summary"))


def test_any_bytes_in_nft_traces(tmp_path):
    lines = (CAPTURED / "nft-monitor-inet-t13.log").read_bytes().split(b"\n")
    salted = [line.replace(b"t13", "t\u00fc\U0001f600".encode()).replace(b"my-trace", b"my\ttrace") if i % 3 == 0 else
              line.replace(b"(verdict", b"\xff (verdict") if i % 3 == 1 else line for i, line in enumerate(lines)]
    log = tmp_path / "salted.log"
    log.write_bytes(b"\n".join(salted))
    check_file(log, formats=FORMATS)


def test_late_non_ascii_byte(tmp_path):
    """Odd bytes far beyond the first chunk the C engine reads."""
    bench = load_bench()
    log = tmp_path / "late.log"
    bench.generate(log, 5 << 20, 3)
    with open(log, "ab") as f:
        f.write(b"Dec  2 03:10:15 master kernel: caf\xc3\xa9 TRACE: raw:PREROUTING:policy:2 \xe9\n")
    assert_same([f"n={log}"], "non-ASCII bytes at the end of a 5 MB log")


def test_gzip_and_mixed_formats(tmp_path):
    gz = tmp_path / "scenario2.log.gz"
    gz.write_bytes(gzip.compress(SCENARIO2.read_bytes()))
    assert_same([f"n={gz}"], "gzipped", auto=True, formats=FORMATS)
    nft_gz = tmp_path / "nft.log.gz"
    nft_gz.write_bytes(gzip.compress((CAPTURED / "nft-monitor-inet-t13.log").read_bytes()))
    assert_same([f"n={SCENARIO2}", f"m={FIXTURES / 'traces' / 'nft-monitor-local-in.log'}", f"x={nft_gz}"], "kernel + nft",
                formats=FORMATS)


def test_lines_longer_than_the_limit(tmp_path):
    """A line beyond reader.LINE_LIMIT bytes keeps its first LINE_LIMIT bytes, is counted in
    cut_lines and its records are damaged; a TRACE header beyond the cut is not seen."""
    limit = reader.LINE_LIMIT
    line = SCENARIO2.read_text().split("\n")[3]
    lines = [line, line + " X" * limit, "y" * (limit + 5) + line, line[:40] + "\u00e9" * limit, "z" * (3 * limit), line]
    log = tmp_path / "long.log"
    log.write_text("\n".join(lines))
    py = assert_same([f"n={log}"], "lines longer than LINE_LIMIT", auto=True)
    assert b'"cut_lines": 4' in py.stdout
    for chunk in (4096, limit - 3, limit + 1):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(reader, "CHUNK", chunk)
            assert_same([f"n={log}"], f"long lines, CHUNK={chunk}")
    nft = (CAPTURED / "nft-monitor-inet-t13.log").read_text().split("\n")
    nft[3] = nft[3] + " x" * limit
    nft[20] = nft[20].replace(" (verdict", "y" * limit + " (verdict")
    log.write_text("\n".join(nft))
    assert_same([f"n={log}"], "nft lines longer than LINE_LIMIT", formats=("json", "summary"))


def test_format_sniffed_from_the_head(tmp_path):
    """Format is decided by the first decisive line among the first 500."""
    kernel = SCENARIO2.read_text()
    nft = "trace id 71562a3a ip raw PREROUTING policy accept\n"
    late = tmp_path / "late.log"
    late.write_text(kernel + nft)
    assert log_format(late) == KERNEL
    assert_same([f"n={late}"], "nft line after kernel lines")
    early = tmp_path / "early.log"
    early.write_text("hello\n" + nft + kernel)
    assert log_format(early) != KERNEL
    assert_same([f"n={early}"], "nft line first")
    beyond = tmp_path / "beyond.log"
    beyond.write_text("noise\n" * SNIFF_LINES + kernel)
    assert_same([f"n={beyond}"], "TRACE lines only after the sniffed head")


def test_unknown_engine_name_is_an_input_error():
    run = analyze([f"n={SCENARIO2}"], "fast")
    assert run.code == 2 and ENV in run.stderr and run.stdout == b""


# -- small edge files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,data",
    [
        ("empty", b""),
        ("newline", b"\n"),
        ("blank-lines", b"\n\n   \n"),
        ("no-final-newline", SCENARIO2.read_bytes().rstrip(b"\n")),
        ("only-trace-colon", b"TRACE:\nTRACE: \nTRACE: x\nTRACE: x:\nTRACE: :a:rule:1\n"),
        ("header-at-end", b"TRACE: raw:PREROUTING:policy:2\nTRACE: raw:PREROUTING:policy:2 \n"),
        ("one-field-line", b"TRACE: raw:PREROUTING:policy:2 ID=1\nTRACE: raw:PREROUTING:policy:2 ID=1\n"),
        ("200-glued-headers", b"[ 1.5] " + b"TRACE: raw:PREROUTING:policy:1 ID=3 SRC=1.1.1.1 DST=2.2.2.2 PROTO=UDP SPT=1 DPT=2 " * 200 + b"\n"),
        ("many-bare-headers", b"TRACE: nat:PREROUTING:rule:1 " * 50 + b"TRACE: filter:INPUT:rule:2 ID=3\n" + b"TRACE: " * 40 + b"\n"),
        ("nft-odd", b"trace id 1 ip t c rule  (verdict accept)\ntrace id 1 ip t c rule x (verdict a) (verdict b)\n"
                    b"trace id 1 ip t c unknown rule handle 12345678901 (verdict accept)\ntrace id 1 ip t c policy accept x\n"
                    b"trace id 2 inet t c verdict jump\ttarget\ntrace id 2 ip6 t c packet:\ntrace id 3 bridge t c rule (verdict)\n"),
        ("xt-odd", b"PACKET: 2 ab IN=a SRC=1.1.1.1 DST=2.2.2.2 ID=12DFX PROTO=weird SPORT=1\n TRACE: 2 ab raw:PRE:rule:x:rule:ACCEPT\n"
                   b" TRACE: 2 ab t:c:return:\n TRACE: 2 ab t:c:rule:0x1:JUMP:\n TRACE: 2 ab t:c:policy:DROP   -4 -t raw \n"
                   b" TRACE: 2 ab t:c:rule:0xZ:ACCEPT\n TRACE: 10 ab t-x:c:rule:0x2:ACCEPT:chain -6 -t filter -A c -j x\n"),
    ],
)
def test_edge_files(tmp_path, name, data):
    log = tmp_path / f"{name}.log"
    log.write_bytes(data)
    assert_same([f"n={log}"], name, data.decode("ascii", "replace"), auto=True, formats=("json", "text", "summary"))


@pytest.mark.parametrize("log", [LAB / "scenario3-master.log", FIXTURES / "traces" / "nft-monitor-local-in.log",
                                 FIXTURES / "traces" / "xtables-monitor-local-in.log"], ids=lambda p: p.stem)
@pytest.mark.parametrize("before", [b"\xef\xbb\xbf", b"\0" * 1000, b"\0" * 70000, b"\0\0\xef\xbb\xbf"],
                         ids=["bom", "nul-1000", "nul-70000", "nul-bom"])
def test_what_stands_before_the_first_line(tmp_path, log, before):
    """A byte-order mark, or NUL bytes (a log truncated under its writer: logrotate's
    copytruncate), before the first line: each line keeps its host field, so its node (the
    first line was read as the file's node: one packet split in two, a flow invented)."""
    prefixed = tmp_path / log.name
    prefixed.write_bytes(before + log.read_bytes())
    for args in ([str(log)], [str(prefixed)]):
        runs = [assert_same(args, formats=(fmt,)) for fmt in ("json", "summary")]
        if args[0] == str(log):
            expected = [r.stdout.replace(str(log).encode(), str(prefixed).encode()) for r in runs]
        elif len(before) < 65536:
            assert [r.stdout for r in runs] == expected
        else:  # longer than a line may be: the first line is cut (and so damaged), the others stay
            assert json.loads(runs[0].stdout)["cut_lines"] == 1


def test_one_record_repeated_is_packets_of_at_most_max_steps(tmp_path):
    """The same line over and over fits one packet's walk forever: a packet takes at most
    MAX_STEPS steps, so that memory stays flat (2,000,000 repeats held 0.5-0.75 GB before)."""
    from chainlab.trace.assemble import MAX_STEPS

    line = (b"Mar  3 10:00:01 n1 kernel: [ 1.000001] TRACE: filter:INPUT:rule:1 IN=eth0 OUT= SRC=192.0.2.10"
            b" DST=192.0.2.20 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=1111 DF PROTO=ICMP TYPE=8 CODE=0 ID=77 SEQ=1 \n")
    log = tmp_path / "repeated.log"
    log.write_bytes(line * (MAX_STEPS * 5 + 3))
    run = assert_same([str(log)], formats=("json", "summary"))
    packets = json.loads(run.stdout)["packets"]
    assert [len(p["steps"]) for p in packets] == [MAX_STEPS] * 5 + [3]


def test_a_later_fragment_is_not_damaged(tmp_path):
    """A fragment after the first: the kernel prints its offset (`FRAG:185`) and no ports."""
    head = "Mar  3 10:00:01 fr kernel: TRACE: {} IN=eth0 OUT={} SRC=192.0.2.10 DST=198.51.100.20 LEN=1500 TOS=0x00"
    lines = [head.format("raw:PREROUTING:policy:2", "") + " PREC=0x00 TTL=64 ID=3000 MF PROTO=UDP SPT=5000 DPT=6000 LEN=3008",
             head.format("filter:FORWARD:policy:1", "eth1") + " PREC=0x00 TTL=63 ID=3000 MF PROTO=UDP SPT=5000 DPT=6000 LEN=3008",
             head.format("raw:PREROUTING:policy:2", "") + " PREC=0x00 TTL=64 ID=3000 FRAG:185 PROTO=UDP",
             head.format("filter:FORWARD:policy:1", "eth1") + " PREC=0x00 TTL=63 ID=3000 FRAG:185 PROTO=UDP"]
    log = tmp_path / "fragments.log"
    log.write_text("\n".join(lines) + "\n")
    run = assert_same([str(log)])
    assert json.loads(run.stdout)["repaired_lines"] == 0


NFT_SYN = "iif \"e\" ip saddr 10.0.0.1 ip daddr 10.0.0.2 ip id {id} ip protocol tcp tcp sport 5000 tcp dport 80"


@pytest.mark.parametrize("name,lines,walks", [
    ("filter-then-nat-at-prerouting",  # an nft `filter` table at prerouting has no iptables place
     ["trace id a1 inet filter prerouting packet: " + NFT_SYN.format(id=7), "trace id a1 inet filter prerouting policy accept",
      "trace id a1 inet nat prerouting policy accept", "trace id a1 inet filter forward rule drop (verdict drop)"],
     [(["a1"], 3)]),
    ("own-tables-two-trace-ids",  # a retransmission traced anew, same IP id: two packets
     ["trace id b1 inet filter input packet: " + NFT_SYN.format(id=0), "trace id b1 inet filter input policy accept",
      "trace id b1 inet fw input policy accept", "trace id b2 inet filter input packet: " + NFT_SYN.format(id=0),
      "trace id b2 inet filter input policy accept", "trace id b2 inet fw input policy accept"],
     [(["b1"], 2), (["b2"], 2)]),
    ("bridge-then-ip-then-bridge",  # bridge chains run before the hook's IP tables: back again is a new walk
     ["trace id c1 bridge mytbl prerouting packet: " + NFT_SYN.format(id=9), "trace id c1 bridge mytbl prerouting policy accept",
      "trace id c1 ip raw prerouting policy accept", "trace id c1 bridge mytbl prerouting policy accept"],
     [(["c1"], 2), (["c1"], 1)]),
])
def test_nft_tables_order_within_a_hook(tmp_path, name, lines, walks):
    """Within one hook of one nft trace, a table that is not iptables' there has no known
    place (its priority is not in the trace); both engines group the same."""
    log = tmp_path / f"{name}.log"
    log.write_text("\n".join(lines) + "\n")
    packets = json.loads(assert_same([f"n={log}"], name).stdout)["packets"]
    assert [(p["trace_ids"], len(p["steps"])) for p in packets] == walks


def test_unnamed_base_chains_hooks_from_interfaces(tmp_path):
    """nft base chains whose names say no hook: a `packet:` line with iif and oif is FORWARD,
    or POSTROUTING once the walk is there (a forwarded packet's later table), never back."""
    fwd = NFT_SYN.replace('iif "e"', 'iif "e" oif "f"')
    out = NFT_SYN.replace('iif "e"', 'oif "f"')
    lines = ["trace id d1 inet a one packet: " + fwd.format(id=5), "trace id d1 inet a one policy accept",
             "trace id d1 inet b two packet: " + out.format(id=5), "trace id d1 inet b two policy accept",
             "trace id d1 inet c three packet: " + fwd.format(id=5), "trace id d1 inet c three policy accept"]
    log = tmp_path / "unnamed.log"
    log.write_text("\n".join(lines) + "\n")
    packets = json.loads(assert_same([f"n={log}"], "unnamed base chains").stdout)["packets"]
    assert [[s["hook"] for s in p["steps"]] for p in packets] == [["FORWARD", "POSTROUTING", "POSTROUTING"]]


def test_a_trace_id_in_use_outlives_the_ones_after_it(tmp_path):
    """More trace ids than the reader keeps (reader.PENDING_TRACE_IDS) begin while one
    packet's trace goes on: the ids used longest ago are forgotten, not the one in use, whose
    later steps still have its packet's headers (both engines)."""
    count = reader.PENDING_TRACE_IDS + 500
    lines = ["trace id ffff0000 inet filter input packet: " + NFT_SYN.format(id=1)]
    for i in range(count):
        lines += [f"trace id {i:08x} inet filter input packet: " + NFT_SYN.format(id=2 + i % 60000),
                  f"trace id {i:08x} inet filter input policy accept"]
        if i % 1000 == 0:
            lines.append("trace id ffff0000 inet filter input rule counter (verdict continue)")
    lines.append("trace id ffff0000 inet filter input policy accept")
    log = tmp_path / "ids.log"
    log.write_text("\n".join(lines) + "\n")
    packets = json.loads(assert_same([f"n={log}"], "a long trace among many", formats=("json",)).stdout)["packets"]
    kept = [p for p in packets if "ffff0000" in p["trace_ids"]]
    assert sum(len(p["steps"]) for p in kept) == 2 + count // 1000  # (the walk's pauses split it into packets)
    assert all(p["src"] == "10.0.0.1" for p in kept)


@pytest.mark.parametrize("quote", ["> ", "    > ", ">>", "> > ", "\t>"])
@pytest.mark.parametrize("name", ["public/xtables-monitor-manpage.log", "captured/nft-monitor-inet-t13.log",
                                  "public/openwrt-19814-fw4-ipv4.log"])
def test_quoted_nft_and_xtables_monitor_lines(tmp_path, name, quote):
    """nft monitor and xtables-monitor traces quoted in a post or a mail (`> ` before each
    line) read as the lines themselves, in both engines."""
    source = FIXTURES / name
    quoted = tmp_path / "quoted.log"
    quoted.write_text("".join(quote + line for line in source.read_text().splitlines(keepends=True)))
    plain = json.loads(assert_same([f"n={source}"], name).stdout)
    seen = json.loads(assert_same([f"n={quoted}"], f"{name} quoted with {quote!r}").stdout)
    assert seen["packets"] == plain["packets"] and plain["packets"]


@pytest.mark.parametrize("quote", ["> ", "    > ", ">>", "> > "])
@pytest.mark.parametrize("name", ["seed-logs/scenario2-master.log", "public/xixiliguo-libvirt-virbr0-snat.log",
                                  "public/conntracker-kmsg-raw-output-policy.log"])
def test_quoted_kernel_lines(tmp_path, name, quote):
    """Kernel-log traces quoted in a post or a mail (`> ` before each line) keep their host
    and time (syslog, RFC 3339 and dmesg prefixes), in both engines."""
    source = FIXTURES / name
    quoted = tmp_path / source.name  # the node of a log without hosts: the file's name
    quoted.write_text("".join(quote + line for line in source.read_text().splitlines(keepends=True)))
    plain = json.loads(assert_same([str(source)], name).stdout)
    seen = json.loads(assert_same([str(quoted)], f"{name} quoted with {quote!r}").stdout)
    assert seen["packets"] == plain["packets"] and plain["packets"]  # each with its node, each step with its time


#: How a copy from a web page or a paste changes a log's spacing (trace/respace.py): each
#: applies to the whole text; the kernel ones only where a TRACE record's header or fields are.
RESPACINGS = {
    "nbsp": lambda text: text.replace(" ", "\u00a0"),
    "tabs": lambda text: text.replace(" ", "\t"),
    "narrow nbsp and zero-width": lambda text: text.replace(" ", "\u202f").replace("trace id", "trace\u200b id"),
    "TRACE: spaced": lambda text: text.replace("TRACE: ", "TRACE:\t  "),
    "header glued": lambda text: re.sub(r"(TRACE: \S+:(?:rule|return|policy):\d+) (IN=)", r"\1\2", text),
    "fields glued": lambda text: re.sub(r"(?<=[0-9a-z]) (?=(?:TOS|TTL|ID|SEQ|CODE|OUT|DST|LEN)=)", "", text),
    "day glued": lambda text: re.sub(r"^([A-Z][a-z]{2} [ \d]\d) (?=\d\d:)", r"\1", text, flags=re.MULTILINE),
}


@pytest.mark.parametrize("respacing", RESPACINGS)
@pytest.mark.parametrize("name", ["seed-logs/scenario2-master.log", "public/xixiliguo-libvirt-virbr0-snat.log",
                                  "public/kubernetes-24350-docker0-tcp.log", "captured/ulogd-ip6tables-legacy.log",
                                  "public/xtables-monitor-manpage.log", "captured/nft-monitor-inet-t13.log",
                                  "public/melon-kernlog-wrapped-100col-syn80.log"])
def test_respaced_copies_read_as_the_log(tmp_path, name, respacing):
    """A log whose spacing a copy changed (non-breaking spaces, tabs, lost spaces) gives the
    packets of the log itself, hosts and times too, in both engines."""
    source = FIXTURES / name
    changed = tmp_path / source.name  # the node of a log without hosts: the file's name
    changed.write_text(RESPACINGS[respacing](source.read_text()))
    plain = json.loads(assert_same([str(source)], name).stdout)
    seen = json.loads(assert_same([str(changed)], f"{name} changed: {respacing}").stdout)
    assert seen["packets"] == plain["packets"] and plain["packets"]


@pytest.mark.parametrize(
    "ip_id",
    ["43007SPORT=80", "4884DF", "12DFSPORT=1", "123DF=5", "12DFX", "1SPORT=", "5ID=6", "12345678901SPORT=1",
     "7PROTO=TCP", "7DPORT=9SPORT=8", "DF", "=5", "7sport=1"],
)
def test_glued_ip_id_forms(tmp_path, ip_id):
    """xtables-monitor before iptables 1.8.5 glued the IP flags, or without flags the next
    field, to the IP id (`ID=43007SPORT=80`): both engines read the same fields from it."""
    log = tmp_path / "glued.log"
    log.write_text(f"PACKET: 2 ab IN=e OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=60 TTL=64 ID={ip_id} DPORT=443 SYN \n"
                   " TRACE: 2 ab raw:PREROUTING:policy:ACCEPT \n")
    py = assert_same([f"n={log}"], f"ID={ip_id}", formats=("json", "text"))
    packet = json.loads(py.stdout)["packets"][0]
    expected = {"43007SPORT=80": (43007, 80), "4884DF": (4884, None), "12DFSPORT=1": (12, 1), "123DF=5": (123, None),
                "12DFX": (None, None), "1SPORT=": (1, None), "5ID=6": (6, None), "12345678901SPORT=1": (None, None)}
    if ip_id in expected:
        assert (packet["ip_id"], packet["sport"]) == expected[ip_id]
    if ip_id == "43007SPORT=80":
        assert (packet["dport"], packet["protocol"]) == (443, "tcp")


@pytest.mark.parametrize(
    "position",
    ["9999999999", "0000000007", "00000000007", "7" * 11, "0" * 4300 + "7", "0" * 4301, "7" * 4301,
     "12345678901:rule:5", "12345678901:return:0000000003"],
    ids=["10-digits", "10-with-zeros", "11-with-zeros", "11-digits", "4300-zeros-7", "4301-zeros", "4301-sevens",
         "11-digits-then-header", "11-digits-then-10"],
)
def test_long_rule_position(tmp_path, position):
    """A position has at most 10 digits; a longer one is no header, or the chain goes on
    (the Python engine used to raise on more than 4300 digits, which int() refuses)."""
    log = tmp_path / "pos.log"
    log.write_text(f"TRACE: raw:PREROUTING:rule:{position} IN=e OUT= SRC=1.1.1.1 DST=2.2.2.2 TTL=1 ID=1 PROTO=UDP SPT=1 DPT=2\n"
                   f"TRACE: nat:PREROUTING:rule:{position}\n")
    assert_same([f"n={log}"], f"position {position[:12]}... ({len(position)} characters)")


def test_a_long_fields_text_between_two_equal_ones(tmp_path):
    """A fields text longer than the cache takes (480 bytes) between two equal ones: the third
    line is not taken for a repeat of the second (it was, with the second's fields)."""
    head = "Dec  2 03:10:16 n kernel: TRACE: raw:PREROUTING:rule:{} IN=e OUT= SRC=fe80::1 DST=fe80::2 LEN=80 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=128 CODE=0 ID=1 SEQ=1 "
    lines = [head.format(1) + "MARK=0x1", head.format(2) + "OPT (" + "AB" * 260 + ") MARK=0x2", head.format(3) + "MARK=0x1"]
    log = tmp_path / "long.log"
    log.write_text("\n".join(lines) + "\n")
    run = assert_same([str(log)], "long fields text", formats=("json",))
    assert b'"line": 3, "mark": "0x1"' in run.stdout


def test_mark_read_apart_from_the_rest_of_the_fields(tmp_path):
    """The C engine caches a line's fields without a last MARK= token and reads the token on
    its own (Calico's rules change the mark along a walk): every way a mark can be written
    comes out as the Python engine reads the whole text."""
    base = "IN=cali1 OUT=eth0 MAC=ee:ee:ee:ee:ee:ee:76:8e:1f:39:39:c2:08:00 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TTL=64 ID={id} DF PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1 "
    tails = ["", "MARK=0x40000 ", "MARK=0x40000", "MARK=0x0 ", "MARK=0x00000 ", "MARK=0xABCdef ", "MARK=0x4 MARK=0x8 ",
             "MARK=0xzz ", "MARK= ", "MARK=0x ", "MARK=40000 ", "MARK=0x1\t", "MARK=0x1 \t ", "MARK=0x" + "1" * 30 + " ",
             "[SRC=1.1.1.1 MARK=0x5 ", "[SRC=1.1.1.1] MARK=0x6 ", "UID=0 GID=0 MARK=0x7 ", "XMARK=0x8 ", "mark=0x9 ",
             "MARK=0x1TRACE: ", "MARK=0x1TRACE: x "]
    chains = ["raw:PREROUTING:rule:1", "raw:cali-PREROUTING:rule:2", "mangle:PREROUTING:policy:1", "filter:FORWARD:rule:3"]
    lines = []
    for i, tail in enumerate(tails):
        for order in (tails, tails[::-1]):  # the same packet's lines with every other mark in between
            for j, chain in enumerate(chains):
                lines.append(f"Dec  2 03:10:16 n kernel: TRACE: {chain} {base.format(id=100 + i)}{order[(i + j) % len(order)]}")
                lines.append(f"Dec  2 03:10:16 n kernel: TRACE: {chain} {base.format(id=100 + i)}{tail}")
    log = tmp_path / "marks.log"
    log.write_text("\n".join(lines) + "\n")
    run = assert_same([str(log)], "marks", formats=("json", "text", "summary"))
    assert b'"mark": "0x40000"' in run.stdout and b'"mark": "0xabcdef"' in run.stdout


def test_more_distinct_headers_than_the_caches_hold(tmp_path):
    """Header texts and their step JSON are cached by slot (4096): a log with three times as
    many distinct headers, each seen again after others took its slot, reads as in Python."""
    lines = []
    for rnd in range(2):  # the same headers in both rounds, the second in the other order
        for i in range(12000) if rnd == 0 else reversed(range(12000)):
            position = i * 7919 % 12000 + 1
            lines.append(f"Dec  2 03:10:16 n kernel: TRACE: filter:cali-fw-{i % 40}:rule:{position} IN=a OUT=b "
                         f"SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TTL=64 ID={i % 60000 + 1} PROTO=ICMP TYPE=8 CODE=0 ID=1 SEQ=1 ")
    log = tmp_path / "headers.log"
    log.write_text("\n".join(lines) + "\n")
    assert_same([str(log)], "distinct headers", formats=("json", "summary"))


# -- 2. the benchmark generator ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "trace.log"
    load_bench().generate(path, 2 << 20, 11)
    return path


def test_generated_log(bench_log):
    py = assert_same([f"master={bench_log}"], "generated 2 MB log", auto=True, formats=FORMATS)
    assert py.code == 0 and py.stdout.count(b'"node"') > 100


def test_generated_log_twice_as_two_nodes(bench_log):
    """Same packets on two nodes: every ICMP packet becomes a two-hop flow."""
    py = assert_same([f"a={bench_log}", f"b={bench_log}"], "one file as two nodes", formats=("json", "text"))
    assert b'"hops"' in py.stdout


def test_generated_log_twice_on_one_node(bench_log):
    assert_same([f"a={bench_log}", f"a={bench_log}"], "one file twice on one node")


def test_generated_log_split_mid_packet(bench_log, tmp_path):
    """Two files of one node, cut inside a packet's lines: the packet continues in file two."""
    lines = bench_log.read_bytes().split(b"\n")
    cut = len(lines) // 2
    while b"TRACE: " not in lines[cut] or b"TRACE: " not in lines[cut - 1]:
        cut += 1
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_bytes(b"\n".join(lines[:cut]) + b"\n")
    two.write_bytes(b"\n".join(lines[cut:]))
    assert_same([f"m={one}", f"m={two}"], "split on one node")
    assert_same([f"m={one}", f"s={two}"], "split across two nodes")
    assert_same([f"m={two}", f"m={one}"], "halves swapped")


def test_a_file_read_again_after_it_grew(bench_log, tmp_path):
    """feed_from on a file that ended inside a line, called again once the file grew (the
    parser reads ahead from its descriptor): the line is read once, as feed() of the whole
    file reads it."""
    native = importlib.import_module("chainlab.trace.native")
    from chainlab.trace.pipeline import AnalysisOptions

    options = AnalysisOptions()

    def engine():  # type: ignore[no-untyped-def]
        e = native._engine.Engine(native.Calls(options, None), 0, False, None, (), (), (), False, False, False, {},
                                  options.window)
        e.begin("m", True, 0)
        return e

    data = bench_log.read_bytes()[:300_000]
    whole = engine()
    expected = whole.feed(data) + whole.end() + whole.flush()
    cut = data.index(b"\n", 150_000) - 20  # inside a line
    grown = tmp_path / "grown.log"
    grown.write_bytes(data[:cut])
    e, out = engine(), b""
    with grown.open("rb") as handle:
        while (written := e.feed_from(handle.fileno(), 65536)) is not None:
            out += written
        with grown.open("ab") as more:
            more.write(data[cut:])
        while (written := e.feed_from(handle.fileno(), 65536)) is not None:
            out += written
    out += e.end() + e.flush()
    assert (out, e.stats()["lines"]) == (expected, whole.stats()["lines"])


def test_feed_and_feed_from_are_not_mixed_in_one_file(bench_log):
    """While the parser reads a file ahead (feed_from), feed() would hand it chunks into the
    batches the ring holds; a chunk feed() handed over waits for the next feed(): each refuses
    the other until end()."""
    native = importlib.import_module("chainlab.trace.native")
    from chainlab.trace.pipeline import AnalysisOptions

    options = AnalysisOptions()
    e = native._engine.Engine(native.Calls(options, None), 0, False, None, (), (), (), False, False, False, {},
                              options.window)
    data = bench_log.read_bytes()
    with bench_log.open("rb") as handle:
        e.begin("m", True, 0)
        e.feed_from(handle.fileno(), 65536)
        with pytest.raises(RuntimeError, match="feed\\(\\) while feed_from"):
            e.feed(data[:1000])
        e.end()
        e.begin("m", True, 0)
        e.feed(data[:65536])
        with pytest.raises(RuntimeError, match="after feed"):
            e.feed_from(handle.fileno(), 65536)
        e.end()
    e.flush()


def test_generated_log_parsed_in_a_helper_process(tmp_path):
    """From HELPER_MIN_BYTES on, the Python engine parses in a helper process (other code)."""
    from chainlab.trace.reader import HELPER_MIN_BYTES

    log = tmp_path / "big.log"
    load_bench().generate(log, HELPER_MIN_BYTES + 1000, 2)
    assert log.stat().st_size >= HELPER_MIN_BYTES
    assert_same([f"master={log}"], "log parsed in the Python engine's helper process", formats=("json", "summary"))


def test_file_names_in_formats(tmp_path):
    """The `formats` map is keyed by the path as given: quotes, spaces, non-ASCII, relative."""
    text = SCENARIO2.read_bytes()
    names = ['we"ird\\ name.log', "caf\u00e9.log", "no-suffix", "x.GZ"]
    paths = []
    for name in names:
        (tmp_path / name).write_bytes(text)
        paths.append(tmp_path / name)
    assert_same([f"n{i}={p}" for i, p in enumerate(paths)], "odd file names")
    assert_same([str(p) for p in paths], "odd file names, bare: fallback nodes")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert_same([f"n=./{names[0]}", f"m={names[1]}"], "relative paths")


def test_generated_and_fixture_files(bench_log):
    assert_same([f"master={SCENARIO2}", f"master={bench_log}", f"slave1={LAB / 'scenario3-slave1.log'}"],
                "fixture + generated + another node", formats=FORMATS)


@pytest.mark.parametrize("chunk", [4096, 333])
def test_generated_log_in_small_chunks(bench_log, tmp_path, monkeypatch, chunk):
    """Logs are read in reader.CHUNK-byte pieces, lines going on from one to the next; small
    pieces put many piece boundaries (and the expiry of packets) at every kind of place.
    333 < a line: most lines span pieces."""
    monkeypatch.setattr(reader, "CHUNK", chunk)
    head = tmp_path / "head.log"
    head.write_bytes(bench_log.read_bytes()[: 300_000])
    assert_same([f"m={head}", f"s={SCENARIO2}"], f"CHUNK={chunk}")
    gz = tmp_path / "head.log.gz"  # gunzipped in Python, handed to the engine chunk by chunk
    gz.write_bytes(gzip.compress(head.read_bytes()))
    assert_same([f"m={gz}"], f"gzip, CHUNK={chunk}")


def test_more_lines_in_a_chunk_than_the_parser_takes(tmp_path):
    """The parser thread takes at most 16384 lines of a chunk (BATCH_LINES); the rest of a
    chunk of short lines is read after them, in order."""
    line = "TRACE: raw:PREROUTING:policy:2 IN=e OUT= SRC=1.1.1.1 DST=2.2.2.2 ID={} PROTO=UDP SPT=1 DPT=2\nx\n"
    log = tmp_path / "short.log"
    log.write_text("".join(line.format(i % 65536) for i in range(20000)))
    assert log.read_bytes()[: reader.CHUNK].count(b"\n") > 16384
    assert_same([f"n={log}"], "20000 lines a chunk", formats=("json", "summary"))


def test_packet_dense_log(tmp_path):
    """One-line packets: thousands of packets per chunk."""
    line = "TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 TTL=64 ID={} PROTO=UDP SPT=1 DPT={}"
    log = tmp_path / "dense.log"
    log.write_text("".join(line.format(i % 65536, i) + "\n" for i in range(5000)))
    assert_same([f"n={log}"], "5000 one-line packets", formats=("json", "summary"))


def test_more_hosts_than_the_parser_names(tmp_path):
    """The parser thread gives the first 4096 host names ids (PARSER_HOSTS); lines of the
    others are attributed by name: every line still goes to its host's node, in a bare file."""
    line = "Dec  2 03:14:07 {} kernel: TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 ID={} PROTO=UDP SPT=1 DPT=2"
    log = tmp_path / "hosts.log"
    log.write_text("".join(line.format(f"h{i % 4500}", i % 65536) + "\n" for i in range(9000)))
    run = assert_same([str(log)], "4500 hosts", formats=("json", "summary"))
    assert len({p["node"] for p in json.loads(run.stdout)["packets"]}) == 4500


def test_walk_cache_is_bounded(tmp_path):
    """A log of ever new walks (more than the engine keeps): output unchanged."""
    line = "TRACE: raw:c{}:rule:{} IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 TTL=64 ID={} PROTO=UDP SPT=1 DPT=2"
    log = tmp_path / "walks.log"
    log.write_text("".join(line.format(i, i % 5, i % 65536) + "\n" for i in range(9000)))
    assert_same([f"n={log}"], "9000 packets, 9000 walks", formats=("json", "summary"))


def test_step_cache_is_bounded(tmp_path):
    """More distinct steps than the engine keeps Step objects for (_engine.STEP_CACHE): output unchanged."""
    engine_module = importlib.import_module("chainlab.trace._engine")
    line = "TRACE: raw:c{}:rule:1 IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 TTL=64 ID={} PROTO=UDP SPT=1 DPT=2"
    log = tmp_path / "steps.log"
    steps = engine_module.STEP_CACHE + 500
    log.write_text("".join(line.format(i, i % 65536) + "\n" for i in range(steps)))
    assert_same([f"n={log}"], f"{steps} packets of one distinct step each", formats=("summary",))


def test_a_step_met_again_is_the_same_object():
    """The engine makes a Step once for each distinct step (Calls.step) and hands that object
    to every walk that passes the step (without --rules: join_rules changes Steps, so with
    rules judge copies them; the differential tests with --rules hold that)."""
    engine_module = importlib.import_module("chainlab.trace._engine")
    native = importlib.import_module("chainlab.trace.native")
    from chainlab.trace.pipeline import AnalysisOptions

    made: list[tuple[object, ...]] = []
    walks: list[list[object]] = []

    class Recording(native.Calls):
        def step(self, t):  # type: ignore[no-untyped-def]
            made.append(t)
            return super().step(t)

        def judge(self, node, walk, *args):  # type: ignore[no-untyped-def]
            walks.append(list(walk))
            return super().judge(node, walk, *args)

    line = "TRACE: {} IN=eth0 OUT= SRC=1.1.1.1 DST=2.2.2.2 TTL=64 ID={} PROTO=UDP SPT=1 DPT=2\n"
    chains = ["raw:PREROUTING:policy:2", "mangle:PREROUTING:policy:1", "nat:PREROUTING:policy:1"]
    log = "".join(line.format(chain, ip_id) for ip_id, n in ((1, 2), (2, 3), (3, 2)) for chain in chains[:n])
    engine = engine_module.Engine(Recording(AnalysisOptions(), None), 0, False, None, (), (), (), False, False, False, {})
    engine.begin("n", False, 0)
    engine.feed(log.encode())
    engine.end()
    engine.flush()
    passed = [step for walk in walks for step in walk]
    assert len(walks) == 3 and len(made) == len(set(made)) == 3
    assert len({id(step) for step in passed}) == 3
    assert all(a is b for a, b in zip(walks[0], walks[1])) and all(a is b for a, b in zip(walks[0], walks[2]))


def test_engine_misuse_is_an_error_not_a_crash():
    engine_module = importlib.import_module("chainlab.trace._engine")
    bare = engine_module.Engine.__new__(engine_module.Engine)
    for call in (lambda: bare.feed(b"x\n"), bare.flush, bare.stats, lambda: bare.begin("n", False, 0)):
        with pytest.raises(RuntimeError):
            call()
    native = importlib.import_module("chainlab.trace.native")
    from chainlab.trace.pipeline import AnalysisOptions

    calls = native.Calls(AnalysisOptions(), None)
    engine = engine_module.Engine(calls, 0, False, None, (), (), (), False, False, False, {})
    for call in (lambda: engine.feed(b"TRACE: raw:PREROUTING:policy:2\n"), engine.end,
                 lambda: engine.__init__(calls, 0, False, None, (), (), (), False, False, False, {})):
        with pytest.raises(RuntimeError):
            call()
    with pytest.raises(ValueError):
        engine.begin("n", False, 7)
    engine.begin("n", False, 0)
    for call in (lambda: engine.begin("m", False, 0), engine.flush, engine.results):
        with pytest.raises(RuntimeError):
            call()
    assert engine.feed(b"x\n") == b""
    assert engine.end() == b"" and engine.flush() == b""
    with pytest.raises(ValueError):
        engine_module.Engine(calls, 9, False, None, (), (), (), False, False, False, {})


def test_a_failing_python_call_is_raised_not_swallowed():
    engine_module = importlib.import_module("chainlab.trace._engine")
    native = importlib.import_module("chainlab.trace.native")
    from chainlab.trace.pipeline import AnalysisOptions

    class Broken(native.Calls):
        def judge(self, *args):  # type: ignore[no-untyped-def]
            raise KeyError("boom")

    engine = engine_module.Engine(Broken(AnalysisOptions(), None), 0, False, None, (), (), (), False, False, False, {})
    engine.begin("n", False, 0)
    engine.feed(SCENARIO2.read_bytes())
    engine.end()
    with pytest.raises(KeyError, match="boom"):
        engine.flush()


def test_closed_stdout_exit_status(bench_log):
    """`chainlab analyze ... | head -c 20`: the reader goes away; both engines end the same way
    (141, as a shell reports a SIGPIPE death)."""
    codes = {}
    for engine in ("python", "native"):
        proc = subprocess.Popen([CHAINLAB, "analyze", "--format", "json", f"master={bench_log}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**_env(), ENV: engine})
        assert proc.stdout and proc.stderr
        proc.stdout.read(20)
        proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace")
        codes[engine] = (proc.wait(timeout=60), err.strip()[-300:])
    assert codes["native"] == codes["python"], codes


@pytest.mark.parametrize("engine", ["python", "native"])
def test_ctrl_c_while_the_reader_does_not_read(bench_log, engine):
    """`chainlab analyze --format json BIG | less`, the pager stopped, then Ctrl-C: the write
    that waits for the pipe ends, the command says "aborted" and exits 130 (the C engine's
    own writes check for signals when a pipe's write is cut short). Ctrl-C's SIGINT as a
    terminal delivers it: a command started in the background of a shell script (as a CI
    runner may start the suite) inherits SIGINT ignored, and Python then leaves it so."""
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)  # what the child inherits, as from a terminal
    try:
        proc = subprocess.Popen([CHAINLAB, "analyze", "--format", "json", f"master={bench_log}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**_env(), ENV: engine})
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stdout and proc.stderr
    try:
        proc.stdout.read(100)  # it writes; then the pipe fills (the log's JSON is ~20 times the pipe)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "aborted" in proc.stderr.read().decode()


@pytest.mark.parametrize("into", ["file", "pipe"])
def test_json_written_by_the_engine_to_stdout(bench_log, tmp_path, into):
    """With a real stdout the C engine writes the packets' JSON to its descriptor itself (the
    in-process runs above hand it back as bytes): the same bytes as the Python engine's, in
    order with what Python writes before and after."""
    args = ["analyze", "--format", "json", f"master={bench_log}", f"slave1={LAB / 'scenario3-slave1.log'}"]
    outputs = {}
    for engine in ("python", "native"):
        env = {**_env(), ENV: engine}
        if into == "file":
            path = tmp_path / f"{engine}.json"
            with path.open("wb") as handle:
                code = subprocess.run([CHAINLAB, *args], stdout=handle, stderr=subprocess.PIPE, env=env, timeout=120).returncode
            outputs[engine] = (code, path.read_bytes())
        else:
            proc = subprocess.run([CHAINLAB, *args], capture_output=True, env=env, timeout=120)
            outputs[engine] = (proc.returncode, proc.stdout)
    assert outputs["native"][0] == outputs["python"][0] == 0
    assert outputs["native"][1] == outputs["python"][1]
    assert json.loads(outputs["native"][1])["packets"]


def test_the_engines_failed_write_is_an_output_error_not_a_read_error(bench_log):
    """A full disk under the engine's own writes, while it still reads the log (a 2 MB log:
    packets are finished, and written, inside feed_from): OutputError (the CLI's clean
    message), not the OSError that the log's reading would report as "cannot read"."""
    native = importlib.import_module("chainlab.trace.native")
    from chainlab.errors import OutputError
    from chainlab.trace.pipeline import AnalysisOptions
    from chainlab.trace.reader import LogSource

    with open("/dev/full", "wb") as full, pytest.raises(OutputError) as info:
        native.run([LogSource(bench_log, "master")], AnalysisOptions(), "json", out=full, out_fd=full.fileno())
    assert (str(info.value), info.value.closed) == ("No space left on device", False)


def test_the_engine_writes_to_the_descriptor_itself(bench_log, tmp_path):
    """Given out_fd, no JSON goes through Python's stream (whose write fails here); the file
    then holds what the bytes path hands back."""
    native = importlib.import_module("chainlab.trace.native")
    from chainlab.trace.pipeline import AnalysisOptions
    from chainlab.trace.reader import LogSource

    class NoWrites(io.BytesIO):
        def write(self, data):  # type: ignore[no-untyped-def, override]
            raise AssertionError("Python wrote JSON that the engine should have written")

    sources = [LogSource(bench_log, "master")]
    handed_back = io.BytesIO()
    native.run(sources, AnalysisOptions(), "json", out=handed_back)
    with (tmp_path / "out.json").open("wb") as file:
        native.run(sources, AnalysisOptions(), "json", out=NoWrites(), out_fd=file.fileno())
    assert (tmp_path / "out.json").read_bytes() == handed_back.getvalue() != b""


def test_analyze_imports_neither_pydantic_nor_the_diagram_renderer():
    """analyze's fixed cost: pydantic (~50 ms) and the diagram renderer (~10 ms) are for
    other commands and formats."""
    code = ("import sys, chainlab.cli, chainlab.commands.analyze; "
            "print(sorted(m for m in ('pydantic', 'chainlab.render.diagram', 'rich') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ENV}


# -- the assembler's window and fast path, by hand ----------------------------------------------

PFX = "Dec  2 03:38:09 master kernel: TRACE: "


def _icmp(step: str, ip_id: int, extra: str = "", seq: int = 1) -> str:
    return (f"{PFX}{step} IN=eth0 OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 "
            f"ID={ip_id} DF PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ={seq}{extra} ")


def _udp(step: str, ip_id: int, sport: int, dport: int, length: int = 62) -> str:
    return (f"{PFX}{step} IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=82 TOS=0x00 PREC=0x00 TTL=64 "
            f"ID={ip_id} PROTO=UDP SPT={sport} DPT={dport} LEN={length} ")


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    log = tmp_path / name
    log.write_text("\n".join(lines) + "\n")
    return log


def test_tables_seen_when_a_packet_expires(tmp_path):
    """A packet judged at expiry sees the tables of the node up to that line only: a table
    first logged later (mangle here) must not turn its `unknown` (filter FORWARD's policy,
    which the log does not show) into `dropped`."""
    lines = [_icmp("filter:FORWARD:policy:1", 1)]
    lines += [_icmp("filter:INPUT:rule:1", 2 + i % 2) for i in range(447)]  # 448th event: expiry check
    lines.append(_icmp("mangle:INPUT:rule:1", 3))
    log = _write(tmp_path, "mask.log", lines)
    py = assert_same([f"n={log}"], "table first seen after an expiry")
    assert b'"verdict": "unknown", "reason": "decided by filter:FORWARD policy, whose target' in py.stdout


def test_packet_joined_after_its_window(tmp_path):
    """A packet quiet for 400 events is finished at the next 64th event: a later line of it
    opens a new packet. The 448th event repeats the previous line's fields exactly, the 449th
    has equal fields in different text (LEN), the 450th belongs to the first packet."""
    for repeat in ("same", "equal", "different"):
        lines = [_icmp("raw:PREROUTING:policy:1", 1)]
        lines += [_icmp("filter:INPUT:rule:1", 2 + i % 2) for i in range(446)]
        last = lines[-1]
        lines.append({"same": last, "equal": last.replace("LEN=84", "LEN=85"), "different": _icmp("filter:INPUT:rule:2", 5)}[repeat])
        lines.append(_icmp("mangle:PREROUTING:policy:1", 1))
        log = _write(tmp_path, f"window-{repeat}.log", lines)
        assert_same([f"n={log}"], f"window, 448th line {repeat}")


def test_equal_fields_in_different_text(tmp_path):
    """Two open packets share an IP id; a line joins the older one; the next line has the same
    fields in different text (another LEN=, spacing) and fits both: both engines must pick the same."""
    a = _udp("raw:PREROUTING:policy:1", 5, 1, 2)
    b = _udp("nat:POSTROUTING:policy:1", 5, 3, 4)
    l1 = _udp("filter:INPUT:rule:1", 5, 1, 4)
    variants = {
        "same text": _udp("nat:POSTROUTING:rule:1", 5, 1, 4),
        "other LEN": _udp("nat:POSTROUTING:rule:1", 5, 1, 4, length=63),
        "double space": _udp("nat:POSTROUTING:rule:1", 5, 1, 4).replace(" OUT=", "  OUT="),
        "no trailing space": _udp("nat:POSTROUTING:rule:1", 5, 1, 4).rstrip(),
        "MARK case": _udp("filter:INPUT:rule:1", 5, 1, 4) + "MARK=0xAB",
    }
    for name, l2 in variants.items():
        lines = [a, b, l1 + ("MARK=0xab" if "MARK" in name else ""), l2]
        log = _write(tmp_path, "fast.log", lines)
        assert_same([f"n={log}"], name, "\n".join(lines))


def test_glued_lines_with_equal_segments(tmp_path):
    """Glued records are damaged and parsed afresh; the last one is cached like a whole line."""
    seg = "IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 TTL=64 ID=4 PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1 "
    glued = f"{PFX}raw:PREROUTING:policy:1 {seg}TRACE: mangle:PREROUTING:policy:1 {seg}TRACE: nat:PREROUTING:policy:1 {seg}"
    lines = [glued, glued, f"{PFX}nat:PREROUTING:policy:1 {seg}", f"{PFX}filter:INPUT:rule:1 {seg}", glued]
    log = _write(tmp_path, "glued.log", lines)
    assert_same([f"n={log}"], "glued", "\n".join(lines))


def test_glued_lines_of_two_hosts(tmp_path):
    """A record glued on after another host's syslog prefix of the line's own form (syslog,
    journalctl's short-full) goes to that host, and the next whole line is its own host's
    again; an uptime alone, a time found inside a prefix of another form (dmesg -T's
    brackets) name no host: the record stays with the line's."""
    def slave1(step: str) -> str:
        return _icmp(step, 9).replace("03:38:09 master", "03:38:10 slave1")

    lines = [_icmp("raw:PREROUTING:policy:1", 4), _icmp("mangle:PREROUTING:policy:1", 4)[:90] + slave1("raw:PREROUTING:policy:1"),
             _icmp("nat:PREROUTING:policy:1", 4), slave1("mangle:PREROUTING:policy:1"),
             _icmp("filter:INPUT:rule:1", 4)[:90] + "[ 3.0] " + slave1("nat:PREROUTING:policy:1")[len(PFX) - 7:]]
    lines += [_icmp("mangle:INPUT:policy:1", 4)[:90] + "[Thu Apr 23 21:55:11 2020] " + slave1("filter:INPUT:rule:1")[len(PFX) - 7:],
              "Mon 2024-01-01 00:00:01 UTC master kernel: " + _icmp("security:INPUT:rule:1", 4)[len(PFX) - 7:90]
              + "Mon 2024-01-01 00:00:02 UTC slave1 kernel: " + slave1("filter:INPUT:rule:2")[len(PFX) - 7:]]
    log = _write(tmp_path, "central.log", lines)
    run = assert_same([str(log)], "glued hosts", "\n".join(lines))
    packets = json.loads(run.stdout)["packets"]
    nodes_of_9 = {(p["node"], s["line"]) for p in packets if p["ip_id"] == 9 for s in p["steps"]}
    # line 7: its first record (cut before its ID) joins master's packet; the glued one is slave1's
    assert nodes_of_9 == {("slave1", 2), ("slave1", 4), ("master", 5), ("master", 6), ("master", 7), ("slave1", 7)}


@pytest.mark.parametrize("before", ["", "Foo ", "DeMon "])
def test_glued_rfc3339_and_short_full_prefixes(tmp_path, before):
    """A glued RFC 3339 or short-full prefix of the line's own form names its host in both
    engines, also after a capitalised word (which makes no short-full prefix of a date)."""
    body = _icmp("raw:PREROUTING:policy:1", 9)[len(PFX) - 7:]
    lines = ["2024-01-01 00:00:01 nodeA kernel: " + body + before + "2024-01-01 00:00:02 nodeF kernel: " + body,
             "Mon 2024-01-01 00:00:03 UTC nodeA kernel: " + body + before + "Mon 2024-01-01 00:00:04 UTC nodeF kernel: " + body]
    log = _write(tmp_path, "glued.log", lines)
    packets = json.loads(assert_same([str(log)], "glued prefixes", "\n".join(lines)).stdout)["packets"]
    assert {(p["node"], s["line"]) for p in packets for s in p["steps"]} == {("nodeA", 1), ("nodeF", 1), ("nodeA", 2),
                                                                           ("nodeF", 2)}


def test_walks_starting_in_user_chains(tmp_path):
    """A log that starts inside user chains: the hook the table and interfaces give (filter
    with IN= and OUT=: FORWARD), none where they give several (mangle with IN=), none for a
    damaged line."""
    lines = [_icmp("filter:cali-fw-x:rule:3", 1), _icmp("filter:FORWARD:rule:4", 1),
             _icmp("mangle:cali-x:rule:1", 2).replace("OUT=eth1", "OUT="), _icmp("mangle:INPUT:policy:1", 2).replace("OUT=eth1", "OUT="),
             _icmp("filter:cali-y:rule:1", 3)[:-4], _udp("raw:cali-z:rule:2", 4, 1, 2).replace("IN=eth0 OUT=", "IN= OUT=eth0")]
    log = _write(tmp_path, "excerpt.log", lines)
    run = assert_same([f"n={log}"], "user chains first", "\n".join(lines), formats=("json", "text"))
    assert [[s["hook"] for s in p["steps"]] for p in json.loads(run.stdout)["packets"]] == [
        ["FORWARD", "FORWARD"], [None, "INPUT"], [None], ["OUTPUT"]]


def test_user_chains_after_a_hook_their_table_has_no_chain_in(tmp_path):
    """A user chain whose table has no base chain at the walk's hook runs at the next hook of
    the route where it has one: nat after FORWARD in POSTROUTING; filter and security after
    PREROUTING in INPUT or FORWARD, as IN=/OUT= say; a damaged line (INPUT or FORWARD) and raw
    after FORWARD (no raw chain follows) keep the walk's hook."""
    def local(step: str, ip_id: int) -> str:
        return _icmp(step, ip_id).replace("OUT=eth1", "OUT=")

    lines = [local("raw:PREROUTING:policy:1", 1), _icmp("filter:FORWARD:rule:1", 1),
             _icmp("nat:KUBE-POSTROUTING:rule:1", 1).replace("IN=eth0", "IN="), _icmp("nat:POSTROUTING:policy:1", 1),
             local("nat:PREROUTING:policy:1", 2), local("filter:KUBE-FIREWALL:rule:1", 2), local("filter:INPUT:policy:1", 2),
             local("mangle:PREROUTING:policy:1", 3), _icmp("security:cali-x:rule:1", 3),
             local("raw:PREROUTING:policy:1", 4), _icmp("filter:cali-y:rule:2", 4)[:-4],
             _icmp("filter:FORWARD:rule:2", 5), _icmp("raw:cali-z:rule:1", 5),
             _icmp("filter:FORWARD:rule:3", 6), _icmp("nat:KUBE-POSTROUTING:rule:1", 6)]  # the same fields
    log = _write(tmp_path, "after.log", lines)
    run = assert_same([f"n={log}"], "user chains after a hook", "\n".join(lines), formats=("json", "text", "summary"))
    assert [[s["hook"] for s in p["steps"]] for p in json.loads(run.stdout)["packets"]] == [
        ["PREROUTING", "FORWARD", "POSTROUTING", "POSTROUTING"], ["PREROUTING", "INPUT", "INPUT"],
        ["PREROUTING", "FORWARD"], ["PREROUTING", "PREROUTING"], ["FORWARD", "FORWARD"], ["FORWARD", "POSTROUTING"]]


def test_user_chains_after_every_hook(tmp_path):
    """Every table's user chain after every hook's base chain, with every IN=/OUT= (and cut):
    both engines place it alike."""
    interfaces = {"in": "IN=eth0 OUT=", "out": "IN= OUT=eth1", "both": "IN=eth0 OUT=eth1", "none": "IN= OUT="}
    lines, ip_id = [], 0
    for hook in HOOKS:
        for table in ("raw", "mangle", "nat", "filter", "security"):
            for ifs in [*interfaces.values(), "cut"]:
                ip_id += 1
                lines.append(_icmp(f"mangle:{hook}:policy:1", ip_id))
                user = _icmp(f"{table}:chain-x:rule:1", ip_id)
                lines.append(user[:-4] if ifs == "cut" else user.replace("IN=eth0 OUT=eth1", ifs))
    log = _write(tmp_path, "every.log", lines)
    assert_same([f"n={log}"], "user chains after every hook", formats=("json", "summary"))


def test_a_packet_looped_over_lo(tmp_path):
    """Out on lo, back in on lo at PREROUTING: one packet, once (the published SYN_SENT post,
    with its rebuilt rules; made lines: nat on the way out, two packets interleaved, a
    damaged line back in, out or in on another interface, a second way back in, rerouted to
    lo in OUTPUT, IPv6 (no IP id), nft with one trace id and with one per half, nft rerouted
    to or from lo)."""
    public = FIXTURES / "public" / "synsent-dmesg-loopback-syn-input-drop.log"
    run = assert_same(["--rules", f"n={public.with_suffix('.rules')}", f"n={public}"], "SYN_SENT", formats=FORMATS)
    assert [p["verdict"] for p in json.loads(run.stdout)["packets"]] == ["dropped", "dropped"]

    def lo(step: str, ip_id: int, ifs: str) -> str:
        return _icmp(step, ip_id).replace("IN=eth0 OUT=eth1", ifs).replace("10.0.0.", "127.0.0.")

    out, back = "IN= OUT=lo", "IN=lo OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00"
    lines = [lo("raw:OUTPUT:policy:2", 1, out), lo("nat:OUTPUT:policy:1", 1, out), lo("filter:OUTPUT:policy:1", 1, out),
             lo("raw:OUTPUT:policy:2", 2, out), lo("nat:POSTROUTING:policy:1", 1, out),
             lo("filter:OUTPUT:policy:1", 2, out), lo("raw:PREROUTING:policy:3", 1, back),
             lo("raw:PREROUTING:policy:3", 2, back), lo("filter:INPUT:policy:1", 1, back),
             lo("filter:INPUT:rule:1", 2, back)[:-4],  # damaged
             lo("raw:OUTPUT:policy:2", 3, "IN= OUT=eth0"), lo("raw:PREROUTING:policy:3", 3, back),
             lo("raw:OUTPUT:policy:2", 4, out), lo("raw:PREROUTING:policy:3", 4, "IN=eth0 OUT="),
             lo("raw:OUTPUT:policy:2", 5, out), lo("raw:PREROUTING:policy:3", 5, back)[:-4],
             lo("nat:POSTROUTING:policy:1", 5, out),
             lo("raw:PREROUTING:policy:3", 5, back),
             lo("mangle:OUTPUT:policy:1", 6, "IN= OUT=eth0"), lo("nat:POSTROUTING:policy:1", 6, out),
             lo("raw:PREROUTING:policy:3", 6, back)]
    log = _write(tmp_path, "lo.log", lines)
    run = assert_same([f"n={log}"], "looped over lo", "\n".join(lines), formats=FORMATS)
    assert [(p["ip_id"], p["hooks"], p["route"]) for p in json.loads(run.stdout)["packets"]] == [
        (1, ["OUTPUT", "POSTROUTING", "PREROUTING", "INPUT"], "loopback"),
        (2, ["OUTPUT", "PREROUTING", "INPUT"], "loopback"), (3, ["OUTPUT"], "local-out"), (3, ["PREROUTING"], None),
        (4, ["OUTPUT"], "local-out"), (4, ["PREROUTING"], None),
        (5, ["OUTPUT", "PREROUTING", "POSTROUTING"], "loopback"), (5, ["PREROUTING"], None),
        (6, ["OUTPUT", "POSTROUTING", "PREROUTING"], "loopback")]

    v6_walk = (("raw:OUTPUT:policy:2", out), ("filter:OUTPUT:policy:1", out), ("raw:PREROUTING:policy:3", back),
               ("filter:INPUT:rule:1", back))
    v6 = [f"{PFX}{step} {ifs} SRC=::1 DST=::1 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=5 PROTO=TCP SPT=40000 DPT=81 SEQ=1000 "
          "ACK=0 WINDOW=64800 SYN URGP=0 " for step, ifs in v6_walk]
    run = assert_same([f"n={_write(tmp_path, 'lo6.log', v6)}"], "IPv6 looped over lo", "\n".join(v6), formats=FORMATS)
    assert [(p["identity"], p["hooks"]) for p in json.loads(run.stdout)["packets"]] == [
        ("flow", ["OUTPUT", "PREROUTING", "INPUT"])]

    def nft(tid: str, chain: str, what: str) -> str:
        return f"trace id {tid} ip t {chain} {what}"

    def packet(ifs: str) -> str:
        return (f"packet: {ifs} ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip ttl 64 ip id 7 ip protocol icmp ip length 84 "
                "icmp type echo-request icmp code net-unreachable icmp id 1 icmp sequence 1")

    # the last interface out is the one the packet left on (an empty one too): rerouted from
    # eth0 (or "") to lo in OUTPUT it comes back in; from lo to eth0 (or "") it does not
    one, two = [["OUTPUT", "POSTROUTING", "PREROUTING", "INPUT"]], [["OUTPUT", "POSTROUTING"], ["PREROUTING", "INPUT"]]
    for back_tid, first_out, last_out, walks in (("0000aaaa", "lo", "lo", one), ("0000bbbb", "lo", "lo", one),
                                                 ("0000aaaa", "", "lo", one), ("0000aaaa", "eth0", "lo", one),
                                                 ("0000aaaa", "lo", "", two), ("0000aaaa", "lo", "eth0", two)):
        lines = [nft("0000aaaa", "output", packet(f'oif "{first_out}"')), nft("0000aaaa", "output", "policy accept"),
                 nft("0000aaaa", "postrouting", packet(f'oif "{last_out}"')),
                 nft("0000aaaa", "postrouting", "policy accept"),
                 nft(back_tid, "prerouting", packet('iif "lo"')), nft(back_tid, "prerouting", "policy accept"),
                 nft(back_tid, "input", packet('iif "lo"')), nft(back_tid, "input", "policy accept")]
        log = _write(tmp_path, "lo-nft.log", lines)
        run = assert_same([f"n={log}"], f"nft over lo, {back_tid}, out {first_out!r} then {last_out!r}", "\n".join(lines),
                          formats=FORMATS)
        assert [p["hooks"] for p in json.loads(run.stdout)["packets"]] == walks


def test_back_in_over_lo_through_an_unnamed_base_chain(tmp_path):
    """nft: out through `postrouting` on lo, back in through a base chain whose name says no
    hook (`iif "lo"` only): its hook is guessed as PREROUTING, the way back in, and the walk
    is one packet (before, the guess was INPUT, which cannot follow POSTROUTING: two)."""
    def line(chain: str, what: str) -> str:
        return f"trace id 0000cccc ip t {chain} {what}"

    def packet(ifs: str) -> str:
        return (f"packet: {ifs} ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip ttl 64 ip id 7 ip protocol icmp "
                "ip length 84 icmp type echo-request icmp code net-unreachable icmp id 1 icmp sequence 1")

    lines = [line("output", packet('oif "lo"')), line("output", "policy accept"),
             line("postrouting", packet('oif "lo"')), line("postrouting", "policy accept"),
             line("from-lo", packet('iif "lo"')), line("from-lo", "policy accept")]
    run = assert_same([f"n={_write(tmp_path, 'lo-unnamed.log', lines)}"], "unnamed base chain back in",
                      "\n".join(lines), formats=FORMATS)
    assert [(p["hooks"], p["route"]) for p in json.loads(run.stdout)["packets"]] == [
        (["OUTPUT", "POSTROUTING", "PREROUTING"], "loopback")]


def test_a_walk_goes_on_only_along_one_route(tmp_path):
    """INPUT then FORWARD and the like are two packets (test_trace_analysis)."""
    from .test_trace_analysis import across_routes

    check_file(_write(tmp_path, "routes.log", [across_routes()]), "master", formats=FORMATS)


def test_user_chains_returning_into_their_base_chain(tmp_path):
    """Steps in mangle user chains, the last a return, then mangle's base chain: the run
    takes the base chain's hook (the JSON of steps already written is redone), in every
    format and with --tables; a raw step before them keeps its own."""
    def mangle(step: str, ip_id: int) -> str:
        return _icmp(step, ip_id).replace("OUT=eth1", "OUT=")

    lines = [mangle("mangle:cali-a:rule:2", 1), mangle("mangle:cali-b:rule:1", 2), mangle("mangle:cali-a:return:4", 1),
             mangle("mangle:cali-b:return:3", 2), mangle("mangle:PREROUTING:policy:1", 1), mangle("mangle:INPUT:policy:1", 2),
             mangle("raw:cali-c:rule:1", 3), mangle("mangle:cali-d:return:1", 3), mangle("mangle:PREROUTING:policy:2", 3),
             mangle("nat:PREROUTING:policy:1", 3)]
    log = _write(tmp_path, "returns.log", lines)
    run = assert_same([f"n={log}"], "returns", "\n".join(lines), formats=("json", "text", "summary"))
    assert [[s["hook"] for s in p["steps"]] for p in json.loads(run.stdout)["packets"]] == [
        ["PREROUTING"] * 3, ["INPUT"] * 3, ["PREROUTING"] * 4]
    assert_same(["--tables", "mangle", f"n={log}"], "returns, mangle only", formats=("json", "text"))
    odd = [mangle("foo:cali-a:return:1", 4), mangle("foo:PREROUTING:policy:1", 4)]  # a table netfilter has not
    assert_same([f"n={_write(tmp_path, 'odd.log', odd)}"], "returns in an unknown table", "\n".join(odd))


def test_a_conversation_seen_from_its_answer_on(tmp_path):
    """A log that starts with a DNS answer (53 → 36520) whose query it does not hold: the
    answer is a reply, the next query of that conversation a request; a first packet between
    two high ports, or from a privileged port to a service's (NFS, 800 → 2049), stays a request."""
    lines = [_udp("raw:OUTPUT:policy:1", 1, 53, 36520), _udp("raw:OUTPUT:policy:1", 2, 36520, 53),
             _udp("raw:OUTPUT:policy:1", 3, 40000, 50000), _udp("raw:OUTPUT:policy:1", 4, 800, 2049)]
    log = _write(tmp_path, "dns.log", lines)
    run = assert_same([f"n={log}"], "answer first", "\n".join(lines), formats=("json", "summary"))
    assert [p["direction"] for p in json.loads(run.stdout)["packets"]] == ["reply", "request", "request", "request"]


def test_nft_conntrack_lines_are_no_steps(tmp_path):
    """Newer nft prints the connection's state after a `packet:` line (`conntrack: ct
    direction original ct state new ...`): counted as lines that are no trace step, not as
    skipped ones, and the walk is the same as without them."""
    lines = (CAPTURED / "nft-monitor-inet-t13.log").read_text().splitlines()
    with_ct = []
    for line in lines:
        with_ct.append(line)
        if " packet: " in line:
            head = line.split(" packet: ")[0]
            with_ct.append(f"{head} conntrack: ct direction original ct state new ct id 2641368242")
    plain, ct = _write(tmp_path, "plain.log", lines), _write(tmp_path, "ct.log", with_ct)
    before = json.loads(assert_same([f"n={plain}"], "no conntrack lines").stdout)
    after = json.loads(assert_same([f"n={ct}"], "conntrack lines", "\n".join(with_ct), formats=("json", "text")).stdout)
    def walks(doc: dict) -> list:
        return [(p["hooks"], p["verdict"], [(s["chain"], s["kind"]) for s in p["steps"]]) for p in doc["packets"]]

    assert walks(after) == walks(before) and after["skipped_lines"] == before["skipped_lines"]
    assert after["ignored_lines"] == before["ignored_lines"] + len(with_ct) - len(lines)


def test_long_mixed_log_exercises_the_window(tmp_path):
    """Hundreds of interleaved packets, reused IP ids: packets expire while others open."""
    lines = []
    walk = ["raw:PREROUTING:policy:2", "mangle:PREROUTING:rule:1", "nat:PREROUTING:policy:1", "mangle:FORWARD:policy:1",
            "filter:FORWARD:rule:3", "mangle:POSTROUTING:policy:1", "nat:POSTROUTING:rule:2"]
    for k in range(900):
        ip_id = k % 37
        step = walk[(k * 5) % len(walk)]
        lines.append(_icmp(step, ip_id, seq=k % 11) if k % 3 else _udp(step, ip_id, 1000 + k % 5, 53))
        if k % 97 == 50:
            lines.append(lines[-1][: len(lines[-1]) // 2] + lines[-2])
    log = _write(tmp_path, "mixed.log", lines)
    assert_same([f"n={log}"], "long mixed log")


# -- 3. Hypothesis: real-format lines, damaged ----------------------------------------------------


def _pool() -> list[str]:
    """TRACE lines as they come: the fixtures' kernel lines and the benchmark generator's."""
    lines: list[str] = []
    for path in KERNEL_LOGS:
        lines += [line for line in path.read_text().splitlines() if "TRACE" in line]
    bench = load_bench()
    ids = {f"i{j}": j + 1 for j in range(bench.IP_ID_SLOTS)}
    for unit in bench.build_units(5, count=40):
        lines += unit.format(ts="Dec  2 03:10:16", s0=2, s1=9, **ids).splitlines()
    return sorted(set(lines))


POOL = _pool()
PREFIXES = [
    "Dec  2 03:38:09 master kernel: ",
    "Nov 22 10:07:14 master ",
    "[  480.849238] ",
    "[90332.179725] ",
    "2026-11-22T10:07:14.123456+00:00 master kernel: ",
    "2026-11-22 10:07:14 master kernel: ",
    "Jun 22 12:47:55 yangxikun kernel: [ 1713.241250] ",
    "<4>Dec  2 03:38:09 master kernel: ",
    # journalctl -o short-precise, short-full, short-monotonic, short-unix; RFC 5424; near misses
    "Dec 02 03:38:09.123456 master kernel: ",
    "Tue 2026-12-01 03:38:09 UTC master kernel: ",
    "Tue 2026-12-01 03:38:09.5 +0100 n2 kernel: ",
    "[ 1234.567890] master kernel: ",
    "1733054400.123456 master kernel: ",
    "<4>1 2026-12-01T03:38:09.123456+00:00 master kernel - - - ",
    "Dec 02 03:38:09.x master kernel: ",
    "Tue 2026-12-01T03:38:09 UTC master ",
    "173305440.5master ",
    "123456789012.5 master ",
    "[ 12.5]master ",
    "<4>1 ",
    "",
    "  ",
]
TABLE_NAMES = ["raw", "mangle", "nat", "filter", "security", "raw", "nat", "filter", "broute", "Filter", "_x9", "natx"]
CHAINS = [*HOOKS, *HOOKS, "cali-FORWARD", "KUBE-SVC-ABC", "DOCKER-USER", "a:b", 'x"y', "back\\slash", "c:rule:1",
          "PRE:ROUTING", "-", "INPUT:", "::", 'q"\\:"']
POSITIONS = st.one_of(st.integers(0, 12).map(str), st.sampled_from(["007", "0", "00", "010", "4294967296", "99999999999999999999"]))
IPS = ["10.0.0.1", "10.0.0.2", "172.20.219.81", "192.168.1.1", "300.1.1.1", "1.2.3", "01.002.3.4", "xxx", "",
       "fd00:231:60::1", "fd00:231:60::2", "fe80:0000:0000:0000:4262:31ff:fe07:d301", "::", ":::", "1:2", "::ffff:1.2.3.4"]
IDS = st.one_of(st.integers(1, 4).map(str), st.sampled_from(["0", "65535", "65536", "99999", "0012", "", "x1"]))
SMALL = st.sampled_from(["0", "1", "2", "7", "53", "255", "256", "65535", "65536", "4294967295", "4294967296", "007", "", "-1"])
IFACES = ["eth0", "cali1234", "", "tunl0", "cbr0"]
TOKENS = [
    "[SRC=1.2.3.4", "DST=5.6.7.8]", "[SRC=1.2.3.4 DST=5.6.7.8 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=99 PROTO=UDP SPT=1 DPT=2 LEN=8 ]",
    "[SRC=1.2.3.4 [nested ID=5] ID=6]", "]", "[", "]]", "[[", "PROTO=17", "PROTO=icmp", "PROTO=", "PROTO=1234", "PROTO=UDPLITE",
    "PROTO=ICMPv6", "MARK=0x00FF", "MARK=0xff", "MARK=0x", "MARK=0X1", "MARK=0x0", "MARK=0x000", "MARK=0xfffffffffffffffffffff",
    "ID=99999", "ID=0", "ID=", "ID=00012", "ID=1", "ID=2", "TTL=300", "TTL=", "TTL=0255", "SEQ=4294967296", "SEQ=1", "SEQ=2",
    "SPT=65536", "SPT=1", "DPT=0", "DPT=4", "TYPE=0", "TYPE=8", "TYPE=256", "TYPE=3", "CODE=3", "SYN", "ACK", "FIN", "RST", "PSH",
    "URG", "ECE", "CWR", "DF", "MF", "CE", "OPT", "(0101)", "(", ")", "()", "=", "==", "=x", "SRC=1.2.3", "SRC=10.0.0.1",
    "DST=10.0.0.2", "DST=1.2.3.4.5", "IN=", "OUT=", "IN=eth1", "WINDOW=0", "URGP=0", "UID=0", "INCOMPLETE", "INCOMPLETE=",
    "LEN=", "RES=0x00", "TRACE:", "TRACE: ", "TRACE: raw:", "TRACE: nat:PREROUTING:rule:1", "TRACE: x:y:return:007",
    "TRACE: 9raw:PREROUTING:rule:1", "TRACE: filter:INPUT:policy:", "TRACE: mangle:a:b:rule:1:rule:2", "Dec  2 03:38:09",
    "[ 12.5]", "[12.5]", "2026-11-22T10:07", "trace id", "PACKET:", "kernel:", "master",
    "HOPLIMIT=64", "HOPLIMIT=", "FLOWLBL=0", "FLOWLBL=552291", "FLOWLBL=1048576", "TC=0", "TYPE=128", "TYPE=129", "SRC=fd00::1",
    "DST=fd00::2", "SRC=::1", "PROTO=ICMPV6",
]
NOISE = [
    "Dec  2 03:10:16 master kernel: IPVS: rr: TCP 10.96.0.1:443 - no destination available",
    "[   89.209365] ip_tables: TRACE: acpar.hotdrop=0 verdict=1",
    "Dec  2 03:10:16 master systemd[1]: Started Session 42 of user root.",
    "TRACE: 2 e37a7e41 raw:PREROUTING:policy:ACCEPT",
    " PACKET: 2 e37a7e41 IN=clabt-va SRC=10.239.1.2 DST=10.239.1.1 LEN=84 TTL=64 ID=3960 DF",
    "trace id 71562a3a ip raw PREROUTING policy accept",
    "TRACE:TRACE: TRACE:  TRACE: raw:PREROUTING:policy:1",
]
printable_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


@st.composite
def synth_line(draw) -> str:
    """A TRACE line in one of the real shapes, with fields drawn so that lines share packets."""
    header = (f"TRACE: {draw(st.sampled_from(TABLE_NAMES))}:{draw(st.sampled_from(CHAINS))}:"
              f"{draw(st.sampled_from(['rule', 'return', 'policy']))}:{draw(POSITIONS)}")
    tokens = [f"IN={draw(st.sampled_from(IFACES))}", f"OUT={draw(st.sampled_from(IFACES))}"]
    if draw(st.booleans()):
        tokens.append("MAC=ee:ee:ee:ee:ee:ee:32:bb:37:fe:19:df:08:00")
    tokens += [f"SRC={draw(st.sampled_from(IPS))}", f"DST={draw(st.sampled_from(IPS))}", "LEN=84"]
    if draw(st.integers(0, 3)):
        tokens += ["TOS=0x00", "PREC=0x00", f"TTL={draw(st.sampled_from(['64', '63', '1', '255', '0', '300']))}", f"ID={draw(IDS)}"]
        if draw(st.booleans()):
            tokens.append("DF")
    else:  # IPv6: no IP id
        tokens += ["TC=0", f"HOPLIMIT={draw(st.sampled_from(['64', '255', '300']))}",
                   f"FLOWLBL={draw(st.sampled_from(['0', '552291', '658', '1048576']))}"]
    proto = draw(st.sampled_from(["ICMP", "TCP", "UDP", "17", "icmp", "GRE", "", "FOO", "ICMPv6", None]))
    if proto is not None:
        tokens.append(f"PROTO={proto}")
    kind = draw(st.sampled_from(["icmp", "tcp", "udp", "icmp-error", "none"]))
    if kind == "icmp":
        tokens += [f"TYPE={draw(st.sampled_from(['8', '0', '3', '11', '128', '129', '135']))}", "CODE=0", f"ID={draw(IDS)}",
                   f"SEQ={draw(SMALL)}"]
    elif kind == "tcp":
        flags = draw(st.lists(st.sampled_from(["SYN", "ACK", "FIN", "RST", "PSH"]), max_size=3))
        tokens += [f"SPT={draw(SMALL)}", f"DPT={draw(SMALL)}", f"SEQ={draw(SMALL)}", "ACK=0", "WINDOW=29200", "RES=0x00",
                   *flags, "URGP=0"]
    elif kind == "udp":
        tokens += [f"SPT={draw(SMALL)}", f"DPT={draw(SMALL)}", "LEN=62"]
    elif kind == "icmp-error":
        tokens += ["TYPE=3", "CODE=3", "[SRC=10.0.0.2", "DST=10.0.0.1", "LEN=28", f"ID={draw(IDS)}", "PROTO=UDP", "SPT=53",
                   "DPT=4000", "LEN=8", "]"]
    if draw(st.booleans()):
        tokens += ["UID=0", "GID=0"]
    if draw(st.booleans()):
        tokens.append(f"MARK={draw(st.sampled_from(['0x0', '0x40000', '0x00FF', '0xff', '0x10000', '0xAbC']))}")
    sep = draw(st.sampled_from([" ", " ", "  "]))
    pad = draw(st.sampled_from(["", "", "    "]))
    trail = draw(st.sampled_from(["", " "]))
    return draw(st.sampled_from(PREFIXES)) + header + " " + pad + sep.join(tokens) + trail


def _spaces(line: str) -> list[int]:
    return [i for i, c in enumerate(line) if c == " "] or [len(line)]


@st.composite
def mutated_lines(draw, max_lines: int = 30) -> list[str]:
    """Real-format lines (fixtures, generator, synthesized), then damaged and shuffled."""
    base = st.one_of(st.sampled_from(POOL), synth_line(), synth_line())
    lines = draw(st.lists(base, min_size=1, max_size=max_lines))
    ops = ["cut_piece", "cut_tail", "cut_head", "glue", "glue_bare", "glue_cut", "duplicate", "swap", "move", "number",
           "number", "token", "token", "random", "replace_token", "empty", "many_trace", "noise", "spacing", "char", "reverse"]
    for op in draw(st.lists(st.sampled_from(ops), max_size=10)):
        if not lines:
            lines = [draw(base)]
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        pos = draw(st.integers(0, len(line)))
        if op == "cut_piece":
            end = draw(st.integers(pos, min(len(line), pos + 60)))
            lines[i] = line[:pos] + line[end:]
        elif op == "cut_tail":
            lines[i] = line[:pos]
        elif op == "cut_head":
            lines[i] = line[pos:]
        elif op in ("glue", "glue_bare", "glue_cut") and i + 1 < len(lines):
            nxt = lines.pop(i + 1)
            if op == "glue_bare" and "TRACE: " in nxt:
                nxt = nxt[nxt.index("TRACE: ") :]
            lines[i] = (line[:pos] if op == "glue_cut" else line) + nxt
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], line
        elif op == "move":
            lines.insert(draw(st.integers(0, len(lines) - 1)), lines.pop(i))
        elif op == "number":
            numbers = list(re.finditer(r"\d+", line))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                lines[i] = line[: m.start()] + draw(SMALL | IDS) + line[m.end() :]
        elif op in ("token", "random"):
            at = draw(st.sampled_from(_spaces(line)))
            token = draw(st.sampled_from(TOKENS)) if op == "token" else draw(printable_text)
            lines[i] = line[:at] + " " + token + line[at:]
        elif op == "replace_token":
            parts = line.split(" ")
            parts[draw(st.integers(0, len(parts) - 1))] = draw(st.sampled_from(TOKENS) | printable_text)
            lines[i] = " ".join(parts)
        elif op == "empty":
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", " ", "   "])))
        elif op == "many_trace":
            piece = draw(st.sampled_from(["TRACE: ", "TRACE: raw:", "TRACE: nat:PREROUTING:rule:1 ", "TRACE:"]))
            lines[i] = line[:pos] + piece * draw(st.integers(1, 6)) + line[pos:]
        elif op == "noise":
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(NOISE)))
        elif op == "spacing":
            at = draw(st.sampled_from(_spaces(line)))
            lines[i] = line[:at] + draw(st.sampled_from(["  ", "", "     "])) + line[at + 1 :]
        elif op == "char":
            lines[i] = line[:pos] + draw(st.characters(min_codepoint=0x20, max_codepoint=0x7E)) + line[pos + 1 :]
        elif op == "reverse":
            j = draw(st.integers(i, len(lines)))
            lines[i:j] = lines[i:j][::-1]
    return lines


@st.composite
def log_text(draw, max_lines: int = 30) -> str:
    lines = draw(mutated_lines(max_lines))
    repeat = draw(st.sampled_from([1, 1, 1, 1, 3, 30, 80]))  # 30, 80: mostly past the 400-event window
    if repeat > 1:
        shift = draw(st.booleans())  # later copies: other IP ids, so new packets open
        copies = []
        for k in range(repeat):
            copies += [re.sub(r"ID=(\d)\b", lambda m, k=k: f"ID={int(m.group(1)) + k % 3}", line) if shift else line for line in lines]
        lines = copies
    return "\n".join(lines) + draw(st.sampled_from(["\n", "\n", ""]))


_counter = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hypothesis")


def _log_file(workdir: Path, text: str) -> Path:
    path = workdir / f"h{next(_counter)}.log"
    path.write_text(text, encoding="utf-8", newline="")
    return path


@HYPOTHESIS
@given(text=log_text(), fmt=st.sampled_from(["json", "json", "summary", "text"]))
def test_mutated_logs(workdir, text, fmt):
    check_file(_log_file(workdir, text), text=text, formats=(fmt,))


@HYPOTHESIS
@given(first=log_text(max_lines=15), second=log_text(max_lines=15), same_node=st.booleans(), twice=st.booleans(),
       bare=st.sampled_from(["none", "first", "both"]))
def test_mutated_logs_two_files(workdir, first, second, same_node, twice, bare):
    """Two sources in one run: a packet may stay open from one file into the next. A bare
    file's lines name their nodes (`master`, ...), which may be another file's NODE."""
    one, two = _log_file(workdir, first), _log_file(workdir, second)
    node = "master" if same_node else "b"
    args = [str(one) if bare != "none" else f"master={one}", str(two) if bare == "both" else f"{node}={two}"]
    args += [f"c={one}"] if twice else []
    assert_same(args, text=first + "\n--- second file ---\n" + second)


ODD_BYTES = st.one_of(
    st.binary(min_size=1, max_size=6),
    st.sampled_from([b"\t", b"\r", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1f", b"\0", b"\x7f", b"\xff", b"\xc3\xa9",
                     "\U0001f600".encode(), b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x85",
                     "\u00a0".encode(), "\u2003".encode(), "\u00b2".encode(), "\u0663".encode(), "\u0131cmp".encode()]),
)


@HYPOTHESIS
@given(text=log_text(), inserts=st.lists(st.tuples(st.floats(0, 1), ODD_BYTES, st.booleans()), max_size=8))
def test_mutated_logs_with_any_bytes(workdir, text, inserts):
    """The same logs with bytes of every kind put in (or put over a space): tabs and other
    ASCII whitespace, control bytes, valid and invalid UTF-8, Unicode spaces and digits."""
    data = text.encode()
    for where, piece, over in inserts:
        at = int(where * len(data))
        if over:
            space = data.find(b" ", at)
            at = space if space >= 0 else at
        data = data[:at] + piece + data[at + (1 if over and data[at : at + 1] == b" " else 0) :]
    path = workdir / f"b{next(_counter)}.log"
    path.write_bytes(data)
    check_file(path, text=data.decode("utf-8", "backslashreplace"))


NFT_POOL = sorted({line for p in FIXTURE_LOGS if log_format(p) != KERNEL for line in p.read_text().splitlines() if line.strip()})
TRACE_IDS = ["04511049", "9318b4be", "ab", "0", "fffffffff", "x1"]


@st.composite
def nft_log_text(draw) -> str:
    """xtables-monitor and nft monitor lines (fixtures), trace ids reassigned among a few,
    cut, glued, repeated and reordered."""
    lines = draw(st.lists(st.sampled_from(NFT_POOL), min_size=1, max_size=40))
    out = []
    for line in lines:
        op = draw(st.sampled_from(["keep", "keep", "tid", "tid", "cut", "glue", "number", "dup", "word"]))
        if op == "tid":
            line = re.sub(r"\b[0-9a-f]{8}\b", draw(st.sampled_from(TRACE_IDS)), line, count=1)
        elif op == "cut":
            line = line[: draw(st.integers(0, len(line)))]
        elif op == "glue" and out:
            line = out.pop() + line
        elif op == "number":
            numbers = list(re.finditer(r"\d+", line))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                line = line[: m.start()] + draw(SMALL | IDS) + line[m.end() :]
        elif op == "dup":
            out.append(line)
        elif op == "word":
            words = line.split(" ")
            at = draw(st.integers(0, len(words)))
            words.insert(at, draw(st.sampled_from(["packet:", "rule", "(verdict", "accept)", "policy", "verdict", "flags",
                                                   "==", "0x12", "syn", "|", "iif", "oif", "ip6", "saddr", "PACKET:", "TRACE:",
                                                   "unknown", "handle", "ID=77DF", "SPORT=1", "FLOWLBL=3", ""])))
            line = " ".join(words)
        out.append(line)
    return "\n".join(out) + draw(st.sampled_from(["\n", ""]))


@HYPOTHESIS
@given(text=nft_log_text(), fmt=st.sampled_from(["json", "json", "summary", "text", "mermaid"]))
def test_mutated_nft_logs(workdir, text, fmt):
    check_file(_log_file(workdir, text), text=text, formats=(fmt,))


@pytest.mark.parametrize("width", [72, 100])
def test_wrapped_kernel_logs(tmp_path, width):
    """Kernel logs hard-wrapped as posts and mails print them (unwrap joins their records
    before either engine reads them): the engines agree, in every format."""
    from .test_trace_unwrap import wrap

    paths = []
    for i, path in enumerate(KERNEL_LOGS):
        wrapped = tmp_path / f"w{i}.log"
        wrapped.write_text(wrap(path.read_text(errors="replace"), width))
        paths.append(wrapped)
    assert all(log_format(p) == KERNEL_WRAPPED for p in paths[:3])
    assert_same([f"n{i}={p}" for i, p in enumerate(paths)], f"wrapped at {width}", formats=FORMATS)


def test_wrapped_nft_logs(tmp_path):
    """nft logs wrapped at a mail's 72 columns, joined by unwrap before either engine reads
    them: the engines agree, in every format."""
    from .test_trace_unwrap import wrap

    paths = []
    for i, path in enumerate(p for p in FIXTURE_LOGS if log_format(p) == NFT_MONITOR):
        wrapped = tmp_path / f"w{i}.log"
        wrapped.write_text(wrap(path.read_text(errors="replace"), 72))
        paths.append(wrapped)
    assert sum(log_format(p) == NFT_WRAPPED for p in paths) > 5
    assert_same([f"n{i}={p}" for i, p in enumerate(paths)], "nft wrapped at 72", formats=FORMATS)


@pytest.mark.parametrize("width", [72, 100])
def test_wrapped_xtables_monitor_logs(tmp_path, width):
    """xtables-monitor logs wrapped as posts and mails print them: unwrap joins them before
    either engine reads them (the C engine is fed the joined lines, not the file): the
    engines agree, in every format."""
    from .test_trace_unwrap import wrap

    paths = []
    for i, path in enumerate(p for p in FIXTURE_LOGS if log_format(p) == XTABLES_MONITOR):
        wrapped = tmp_path / f"w{i}.log"
        wrapped.write_text(wrap(path.read_text(errors="replace"), width))
        paths.append(wrapped)
    assert sum(log_format(p) == XTABLES_WRAPPED for p in paths) >= 4
    assert_same([f"n{i}={p}" for i, p in enumerate(paths)], f"xtables-monitor wrapped at {width}", formats=FORMATS)


def test_a_prefix_cut_in_two(tmp_path):
    """A long RFC 3339 time and an EC2 host broken over two and three lines, joined with and
    without a space: both engines read the joined record's host and time."""
    from .test_trace_unwrap import EC2, LINE

    record = LINE[LINE.index("TRACE:"):]
    log = tmp_path / "ec2.log"
    log.write_text(f"{EC2[:-8]}\ninternal kernel: [ 123.456] {record}\n{EC2[:32]}\n{EC2[33:]} kernel: [\n"
                   f"124.5] {record.replace('ID=30561', 'ID=30562')}\n")
    assert log_format(log) == KERNEL_WRAPPED
    run = assert_same([str(log)], "a prefix cut in two", formats=FORMATS)
    assert [p["node"] for p in json.loads(run.stdout)["packets"]] == [EC2[33:]] * 2


def test_a_walk_judged_before_the_order_of_its_base_chains_was_known_is_judged_again(tmp_path):
    """The engine caches each walk's judgment; a later walk that shows which fw4 base chain
    follows which must make it judge the cached ones again, as the Python engine judges
    every packet with what it knows when the packet ends."""
    from .test_trace_formats import fw4_walk

    log = tmp_path / "fw4.log"
    log.write_text(fw4_walk("1", "mangle_forward") + fw4_walk("2", "mangle_forward", "forward")
                   + fw4_walk("3", "mangle_forward") + fw4_walk("4", "mangle_forward", "forward"))
    run = assert_same([f"n={log}"], "fw4 order learned mid-log", formats=FORMATS)
    verdicts = [p["verdict"] for p in json.loads(run.stdout)["packets"]]
    assert verdicts == ["accepted", "accepted", "unknown", "accepted"]
