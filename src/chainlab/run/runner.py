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

import fabric
from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.labstate import LabState, load_state
from chainlab.lock import lab_lock
from chainlab.provision.commands import parse_batch
from chainlab.remote import connect, run
from chainlab.render import diagram
from chainlab.render.jsonout import write_json
from chainlab.report.html import render_run_report
from chainlab.run.collect import LogMark, mark_argv, parse_mark, read_slice
from chainlab.run.probe import (CONTAINER_GONE, ProbeSpec, build_probe, concurrent_script, listeners_for,
                                parse_listener, probe_command)
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


@dataclass(frozen=True)
class ProbeRun:
    """What one probe's command did."""

    exit_code: int
    output: str


@dataclass
class Capture:
    """One bracketing: every probe's run (in the order of the specs) and every node's new log text."""

    probes: list[ProbeRun]
    slices: dict[str, str]
    duration_s: float


#: A listener outlives a crashed run by at most this long.
LISTENER_LIFE_S = 120.0


def _batches(conns: dict[str, fabric.Connection], commands: dict[str, list[str]],
             timeout: float) -> dict[str, list[tuple[int, str]]]:
    """Per host, its shell commands run at once (one round trip): (exit status, output) each."""
    def work(host: str, conn: fabric.Connection) -> list[tuple[int, str]]:
        mine = commands[host]
        out = run(conn, ["sh", "-c", concurrent_script(mine)], check=False, timeout=timeout).stdout
        parsed = parse_batch(out, len(mine))
        return [parsed.get(i, (255, "chainlab: no result from the host")) for i in range(len(mine))]

    return _each({h: c for h, c in conns.items() if commands.get(h)}, work)


def _probe_all(conns: dict[str, fabric.Connection], specs: list[ProbeSpec]) -> list[ProbeRun]:
    """Every probe at once, one script per source host."""
    by_host: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_host.setdefault(spec.host, []).append(i)
    count = max(spec.request.count for spec in specs)
    done = _batches(conns, {h: [probe_command(specs[i]) for i in idx] for h, idx in by_host.items()},
                    timeout=30 + count)
    runs: list[ProbeRun | None] = [None] * len(specs)
    for host, idx in by_host.items():
        for i, (code, output) in zip(idx, done[host]):
            if output.startswith(CONTAINER_GONE):
                raise ChainlabError(f"container {specs[i].container} is gone from {host}: run lab up")
            runs[i] = ProbeRun(code, output)
    return [r for r in runs if r is not None]


def _start_listeners(conns: dict[str, fabric.Connection], specs: list[ProbeSpec],
                     started: dict[str, list[int]]) -> None:
    """A listener on each target port the probes need that nothing listens on yet; their
    PIDs go to `started` (per host) for `_stop_listeners`."""
    by_host: dict[str, list[str]] = {}
    for listener in listeners_for(specs):
        by_host.setdefault(listener.place.host, []).append(listener.command(LISTENER_LIFE_S))
    for host, results in _batches(conns, by_host, timeout=30).items():
        for code, output in results:
            if output.startswith(CONTAINER_GONE):
                raise ChainlabError(f"a container is gone from {host}: run lab up ({output.strip()})")
            if code != 0:
                raise ChainlabError(f"{host}: a listener did not start (exit {code}): {output.strip()[-300:]}")
            pid = parse_listener(output)
            if pid is not None:
                started.setdefault(host, []).append(pid)


def _stop_listeners(conns: dict[str, fabric.Connection], started: dict[str, list[int]],
                    log: Callable[[str], None]) -> None:
    """Kill the listeners we started (each would end by itself after LISTENER_LIFE_S)."""
    for host, pids in started.items():
        if host in conns and pids:
            try:
                run(conns[host], ["kill", *map(str, pids)], check=False, timeout=10)
            except ChainlabError as exc:
                log(f"{host}: could not stop listeners {pids}: {exc}")


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


def new_run_dir(runs_root: Path, name: str, started: datetime) -> Path:
    """runs/<YYYYmmdd-HHMMSS>-<name>/ with logs/, rules/ and routes/."""
    return evidence_dirs(runs_root / f"{started:%Y%m%d-%H%M%S}-{name}")


def evidence_dirs(directory: Path) -> Path:
    """`directory` with the logs/, rules/ and routes/ a capture fills."""
    for sub in ("logs", "rules", "routes"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def recorded_failure(run_dir: Path) -> Iterator[None]:
    """A ChainlabError in the block is written to `error.txt` and raised as RunFailed."""
    try:
        yield
    except ChainlabError as exc:
        (run_dir / "error.txt").write_text(f"{exc}\n")
        raise RunFailed(str(exc), run_dir) from exc


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
    run_dir = new_run_dir(runs_root, f"{scenario.id:02d}-{_slug(scenario.title)}", started)
    shutil.copy(scenario_path, run_dir / "scenario.yaml")
    expected_nodes = {n for n, e in scenario.expect.items() if e.request.hooks or e.reply.hooks}
    with recorded_failure(run_dir):
        log(f"probe: {spec.shown} from {spec.where}")
        captured = capture(inv, state, [spec], run_dir, lambda s: all(s.get(n) for n in expected_nodes & set(s)), log)
    probe = captured.probes[0]
    write_probe_text(run_dir / "probe.txt", [(spec, probe)])
    return _analyze_run(scenario, run_dir, started, captured.duration_s, spec, probe.exit_code, inv.lab)


def write_probe_text(path: Path, probes: list[tuple[ProbeSpec, ProbeRun]]) -> None:
    """Each probe's command, where it ran, its output and exit code."""
    path.write_text("".join(f"$ {spec.shown}  # on {spec.where}\n{run.output}\nexit code {run.exit_code}\n"
                            for spec, run in probes))


def capture(inv: Inventory, state: LabState, specs: list[ProbeSpec], run_dir: Path,
            ready: Callable[[dict[str, str]], bool], log: Callable[[str], None] = print) -> Capture:
    """The bracketing every run shares, under the lab's lock: listeners up, every node's
    trace file marked and its rules and routes snapshot, all `specs` at once, listeners
    down, then exactly the new log bytes of each node (into run_dir/logs/) once the files
    are quiet and `ready` says all is in. Probes of one capture must be told apart by
    `attribute` (distinct source → target pairs)."""
    t0 = time.monotonic()
    conns: dict[str, fabric.Connection] = {}
    listeners: dict[str, list[int]] = {}
    with lab_lock(inv), _sigterm_as_interrupt():
        try:
            _connect_all(inv, list(state.hosts), conns)
            try:
                _start_listeners(conns, specs, listeners)
                marks = _each(conns, lambda node, conn: _mark_and_snapshot(conn, node, state.hosts[node].trace_log, run_dir))
                probes = _probe_all(conns, specs)
            finally:
                _stop_listeners(conns, listeners, log)
            slices = _collect(conns, state, marks, ready)
        finally:
            for conn in conns.values():
                conn.close()
    for node, text in slices.items():
        (run_dir / "logs" / f"{node}.log").write_text(text)
    return Capture(probes, slices, time.monotonic() - t0)


def analyze_logs(run_dir: Path) -> Analysis:
    """The run dir's logs/, with each node's rules/ snapshot joined in."""
    nodes = sorted(p.stem for p in (run_dir / "logs").glob("*.log"))
    rules = {n: parse_iptables_save((run_dir / "rules" / f"{n}.rules").read_text()) for n in nodes
             if (run_dir / "rules" / f"{n}.rules").is_file()}
    return analyze([LogSource(run_dir / "logs" / f"{n}.log", n) for n in nodes], AnalysisOptions(rules=rules))


def write_evidence(run_dir: Path, result: Analysis, run_info: dict[str, object], tables: list[str],
                   checks: list[Check] | None = None) -> None:
    """analysis.json (with `run_info` as its `run` key), diagram.svg and report.html."""
    buffer = io.StringIO()
    write_json(buffer, result.packets, lambda: result.flows, result.stats, None, checks)
    doc = json.loads(buffer.getvalue())
    doc["run"] = run_info
    (run_dir / "analysis.json").write_text(json.dumps(doc, indent=1))
    model = diagram.build_model(result.packets, result.flows, set(tables))
    (run_dir / "diagram.svg").write_text(diagram.to_svg(model, str(run_info.get("title", ""))))
    render_run_report(run_dir)


def _analyze_run(scenario: Scenario, run_dir: Path, started: datetime, duration: float,
                 spec: ProbeSpec, exit_code: int, lab: str) -> RunResult:
    result = analyze_logs(run_dir)
    checks = check_scenario(scenario, result.packets, {p.stem for p in (run_dir / "logs").glob("*.log")})
    outcome = "reachable" if exit_code == 0 else "unreachable"
    passed = all(c.ok for c in checks) and outcome == scenario.outcome
    write_evidence(run_dir, result, {
        "scenario": {"id": scenario.id, "title": scenario.title, "description": scenario.description,
                     "outcome": scenario.outcome, "tables": scenario.tables},
        "title": f"scenario {scenario.id}: {scenario.title}",
        "started": started.isoformat(timespec="seconds"), "duration_s": round(duration, 3),
        "passed": passed, "outcome": outcome, "lab": lab,
        "probe": {"command": spec.shown, "where": spec.where, "exit_code": exit_code},
    }, scenario.tables, checks)
    notes = [] if outcome == scenario.outcome else [f"probe outcome {outcome}, expected {scenario.outcome}"]
    return RunResult(scenario, run_dir, passed, checks, outcome, duration, result, exit_code, notes)
