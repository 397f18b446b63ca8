"""Run one scenario end to end and leave the evidence in runs/<time>-<NN>-<slug>/."""

from __future__ import annotations

import io
import json
import shutil
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import docker
import fabric
from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.labstate import LabState, load_state
from chainlab.lock import lab_lock
from chainlab.remote import connect, docker_client, run
from chainlab.render import diagram
from chainlab.render.jsonout import write_json
from chainlab.report.html import render_run_report
from chainlab.run.collect import LogMark, mark_argv, parse_mark, read_slice
from chainlab.run.probe import ProbeSpec, build_probe
from chainlab.scenario import Scenario, load_scenario
from chainlab.trace.expect import Check, check_scenario
from chainlab.trace.pipeline import Analysis, AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import parse_iptables_save

COLLECT_TIMEOUT_S = 6.0
SNAPSHOT_SEPARATOR = "#### chainlab: routes ####"
T = TypeVar("T")
POLL_S = 0.15


class RunFailed(ChainlabError):
    """A run that stopped after its run dir was made; `error.txt` in it says why."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


@dataclass
class RunResult:
    scenario: Scenario
    run_dir: Path
    passed: bool
    checks: list[Check]
    outcome: str
    duration_s: float
    analysis: Analysis
    probe_exit: int
    notes: list[str] = field(default_factory=list)


def _slug(title: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())[:40]


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` runs."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _probe(inv: Inventory, spec: ProbeSpec, conns: dict[str, fabric.Connection]) -> tuple[int, str]:
    if spec.container is None:
        result = run(conns[spec.host], list(spec.argv), check=False, timeout=30)
        return result.exited, result.stdout + result.stderr
    client = docker_client(inv, spec.host)
    try:
        exit_code, output = client.containers.get(spec.container).exec_run(list(spec.argv))
        return exit_code, output.decode("utf-8", "replace")
    except docker.errors.NotFound:
        raise ChainlabError(f"container {spec.container} is gone from {spec.host}: run lab up") from None
    except docker.errors.DockerException as exc:
        raise ChainlabError(f"probe in {spec.where}: docker: {exc}") from None
    finally:
        client.close()


def _connect_all(inv: Inventory, hosts: list[str], conns: dict[str, fabric.Connection]) -> None:
    """Open a connection to every host at once into `conns`; the first failure is raised
    after all attempts ended, so every connection that did open is in `conns` to close."""
    with ThreadPoolExecutor(max_workers=len(hosts) or 1) as pool:
        futures = {host: pool.submit(connect, inv, host) for host in hosts}
    errors = []
    for host, future in futures.items():
        try:
            conns[host] = future.result()
        except ChainlabError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _each(conns: dict[str, fabric.Connection], work: Callable[[str, fabric.Connection], T]) -> dict[str, T]:
    """`work(node, conn)` on every node at once (one thread per node and connection)."""
    with ThreadPoolExecutor(max_workers=max(len(conns), 1)) as pool:
        futures = {node: pool.submit(work, node, conn) for node, conn in conns.items()}
        return {node: future.result() for node, future in futures.items()}


def _collect(conns: dict[str, fabric.Connection], state: LabState, marks: dict[str, LogMark],
             ready: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """Every node's new log text, once the files are quiet and `ready` says all is in."""
    last: dict[str, int] = {}
    slices: dict[str, str] = {}

    def poll() -> bool:
        read = _each(conns, lambda node, conn: read_slice(conn, state.hosts[node].trace_log, marks[node]))
        sizes = {}
        for node, (text, now) in read.items():
            slices[node] = text
            sizes[node] = now.size
        quiet = sizes == last
        last.clear()
        last.update(sizes)
        return quiet and ready(slices)

    waiter = retry(stop=stop_after_delay(COLLECT_TIMEOUT_S), wait=wait_fixed(POLL_S),
                   retry=retry_if_result(lambda done: not done))(poll)
    try:
        waiter()
    except RetryError:
        pass
    return slices


def _mark_and_snapshot(conn: fabric.Connection, node: str, trace_log: str, run_dir: Path) -> LogMark:
    """The trace file's mark, then rules with counters and routes: one round trip."""
    snapshot = f"iptables-save -c; echo {shlex.quote(SNAPSHOT_SEPARATOR)}; ip route"
    out = run(conn, mark_argv(trace_log, then=snapshot)).stdout
    line, _, rest = out.partition("\n")
    rules, _, routes = rest.partition(SNAPSHOT_SEPARATOR + "\n")
    (run_dir / "rules" / f"{node}.rules").write_text(rules)
    (run_dir / "routes" / f"{node}.txt").write_text(routes)
    return parse_mark(line)


def run_scenario(inv: Inventory, scenario_path: Path, runs_root: Path, log: Callable[[str], None] = print) -> RunResult:
    """Mark, snapshot, probe, collect, analyze, compare; evidence goes to a new run dir."""
    scenario = load_scenario(scenario_path)
    if scenario.network != inv.calico.driver:
        raise ChainlabError(
            f"scenario {scenario.id} needs a lab on the {scenario.network} network; "
            f"this inventory's network driver is {inv.calico.driver}"
        )
    state = load_state(inv)
    spec = build_probe(scenario, state)
    started = datetime.now()
    run_dir = runs_root / f"{started:%Y%m%d-%H%M%S}-{scenario.id:02d}-{_slug(scenario.title)}"
    for sub in ("logs", "rules", "routes"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(scenario_path, run_dir / "scenario.yaml")
    try:
        with lab_lock(inv):
            return _run_in(inv, scenario, state, spec, run_dir, started, log)
    except ChainlabError as exc:
        (run_dir / "error.txt").write_text(f"{exc}\n")
        raise RunFailed(str(exc), run_dir) from exc


def _run_in(inv: Inventory, scenario: Scenario, state: LabState, spec: ProbeSpec, run_dir: Path,
            started: datetime, log: Callable[[str], None]) -> RunResult:
    t0 = time.monotonic()
    conns: dict[str, fabric.Connection] = {}
    with _sigterm_as_interrupt():
        try:
            _connect_all(inv, list(state.hosts), conns)
            marks = _each(conns, lambda node, conn: _mark_and_snapshot(conn, node, state.hosts[node].trace_log, run_dir))
            log(f"probe: {' '.join(spec.argv)} from {spec.where}")
            exit_code, output = _probe(inv, spec, conns)
            (run_dir / "probe.txt").write_text(f"$ {' '.join(spec.argv)}  # on {spec.where}\n{output}\nexit code {exit_code}\n")
            expected_nodes = {n for n, e in scenario.expect.items() if e.request.hooks or e.reply.hooks}
            slices = _collect(conns, state, marks, lambda s: all(s.get(n) for n in expected_nodes & set(s)))
        finally:
            for conn in conns.values():
                conn.close()
    for node, text in slices.items():
        (run_dir / "logs" / f"{node}.log").write_text(text)
    return _analyze_run(scenario, run_dir, started, time.monotonic() - t0, spec, exit_code, inv.lab)


def _analyze_run(scenario: Scenario, run_dir: Path, started: datetime, duration: float,
                 spec: ProbeSpec, exit_code: int, lab: str) -> RunResult:
    nodes = sorted(p.stem for p in (run_dir / "logs").glob("*.log"))
    rules = {n: parse_iptables_save((run_dir / "rules" / f"{n}.rules").read_text()) for n in nodes
             if (run_dir / "rules" / f"{n}.rules").is_file()}
    sources = [LogSource(run_dir / "logs" / f"{n}.log", n) for n in nodes]
    result = analyze(sources, AnalysisOptions(rules=rules))
    checks = check_scenario(scenario, result.packets, set(nodes))
    outcome = "reachable" if exit_code == 0 else "unreachable"
    passed = all(c.ok for c in checks) and outcome == scenario.outcome
    buffer = io.StringIO()
    write_json(buffer, result.packets, lambda: result.flows, result.stats, None, checks)
    doc = json.loads(buffer.getvalue())
    doc["run"] = {
        "scenario": {"id": scenario.id, "title": scenario.title, "description": scenario.description,
                     "outcome": scenario.outcome, "tables": scenario.tables},
        "started": started.isoformat(timespec="seconds"), "duration_s": round(duration, 3),
        "passed": passed, "outcome": outcome, "lab": lab,
        "probe": {"command": " ".join(spec.argv), "where": spec.where, "exit_code": exit_code},
    }
    (run_dir / "analysis.json").write_text(json.dumps(doc, indent=1))
    model = diagram.build_model(result.packets, result.flows, set(scenario.tables))
    (run_dir / "diagram.svg").write_text(diagram.to_svg(model, f"scenario {scenario.id}: {scenario.title}"))
    render_run_report(run_dir)
    notes = [] if outcome == scenario.outcome else [f"probe outcome {outcome}, expected {scenario.outcome}"]
    return RunResult(scenario, run_dir, passed, checks, outcome, duration, result, exit_code, notes)
