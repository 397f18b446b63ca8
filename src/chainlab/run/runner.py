"""Run one scenario end to end and leave the evidence in its own run dir (see chainlab.rundir).

Every remote step has a deadline (chainlab.run.deadline): a host that does not answer in
time is that host's error, naming what was waited for; the other hosts' steps go on and
their evidence is written, and the run is an error (error.txt) rather than a PASS/FAIL.
"""

from __future__ import annotations

import io
import json
import logging
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import docker
import fabric

from chainlab.errors import ChainlabError
from chainlab.files import PRIVATE_FILE, private_dir, read_regular_file, write_atomic
from chainlab.inventory import Inventory
from chainlab.labstate import LabState, load_state
from chainlab.lock import lab_lock
from chainlab.remote import connect, docker_client, run
from chainlab.render import diagram
from chainlab.render.jsonout import write_json
from chainlab.report.html import render_run_report
from chainlab.run.collect import LogMark, mark_argv, parse_mark, read_slice
from chainlab.run.deadline import DeadlineExceeded, Interrupted, call, fan_out, signals_interrupt
from chainlab.run.probe import ProbeSpec, build_probe, locate
from chainlab.run.snapshot import Snapshot, container_problem, parse_snapshot, snapshot_command
from chainlab.rundir import check_runs_root, create_run_dir, mark_complete, slug
from chainlab.scenario import Scenario, load_scenario
from chainlab.trace.expect import Check, check_scenario
from chainlab.trace.pipeline import Analysis, AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import parse_iptables_save
from chainlab.yamlfile import MAX_BYTES

# A connection attempt given up on at its deadline ends later in paramiko's own thread,
# which logs the failure with a traceback; the run has already reported that host's error.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

COLLECT_TIMEOUT_S = 6.0
POLL_S = 0.15
T = TypeVar("T")
Log = Callable[[str], object]


@dataclass(frozen=True)
class Deadlines:
    """How long a run waits for a host, per step (seconds)."""

    connect: float = 15.0  # TCP connect, SSH banner, key exchange, authentication
    connect_again: float = 5.0  # to a host that could not be reached earlier in this nightly
    command: float = 15.0  # one command: mark + snapshot, one read of a log slice
    probe_slack: float = 15.0  # on top of the probe's own longest duration (docker exec included)
    close: float = 2.0


DEADLINES = Deadlines()


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


def check_network(inv: Inventory, scenario: Scenario) -> None:
    if scenario.network != inv.calico.driver:
        raise ChainlabError(
            f"scenario {scenario.id} needs a lab on the {scenario.network} network; "
            f"this inventory's network driver is {inv.calico.driver}"
        )


def run_scenario(inv: Inventory, scenario_path: Path, runs_root: Path, log: Log = print) -> RunResult:
    """`chainlab run N`: inputs and the runs dir checked first, then the run under the lab lock.

    Nothing is written (no run dir) when the scenario, the lab state or the runs dir is
    wrong, or when the lab is busy; SIGTERM/SIGINT end the run at once (see `run_locked`).
    """
    scenario = load_scenario(scenario_path)
    check_network(inv, scenario)
    state = load_state(inv)
    check_runs_root(runs_root)
    with signals_interrupt(), lab_lock(inv):
        return run_locked(inv, scenario_path, scenario, state, runs_root, log)


def run_locked(inv: Inventory, scenario_path: Path, scenario: Scenario, state: LabState, runs_root: Path,
               log: Log = print, deadlines: Deadlines = DEADLINES, unanswered: set[str] | None = None) -> RunResult:
    """With the lab lock held: a new run dir, then mark, snapshot, probe, collect, analyze.

    Any failure once the run dir exists is a RunFailed whose message is in `error.txt`
    (with the traceback, for an unexpected exception), and the dir is marked complete. An
    interrupt (SIGTERM/SIGINT) leaves the dir PARTIAL, says so in error.txt and goes on up.
    `unanswered`: hosts that could not be reached in an earlier run of the same nightly
    (kept up to date here).
    """
    run_dir = create_run_dir(runs_root, inv.lab, f"-{scenario.id:02d}-{slug(scenario.title)}")
    try:
        write_atomic(run_dir / "scenario.yaml", read_regular_file(scenario_path, MAX_BYTES))
        hosts = _Hosts(inv, deadlines, set() if unanswered is None else unanswered)
        result = _run_in(inv, scenario, state, run_dir, log, hosts)
    except Interrupted as exc:
        _write_error(run_dir, f"interrupted by {exc.name}: this run dir is partial")
        log(f"interrupted by {exc.name}: {run_dir} is left partial")
        exc.run_dir = run_dir
        raise
    except ChainlabError as exc:
        if _write_error(run_dir, str(exc)):
            mark_complete(run_dir)
        raise RunFailed(str(exc), run_dir) from exc
    except Exception as exc:
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        if _write_error(run_dir, f"{message}\n\n{traceback.format_exc()}"):
            mark_complete(run_dir)
        raise RunFailed(message, run_dir) from exc
    mark_complete(run_dir)
    return result


def _write_error(run_dir: Path, text: str) -> bool:
    """error.txt, if the disk still takes it (the error at hand matters more than this one)."""
    try:
        write_atomic(run_dir / "error.txt", text.rstrip("\n") + "\n")
        return True
    except ChainlabError:
        return False


class _Hosts:
    """The SSH connections of one run and each host's error: a host that failed once is
    left out of every later step (its connection may be stuck).

    `unanswered` (shared by the runs of a nightly) holds the hosts that could not be
    connected to or missed a deadline: the next run gives them only `connect_again` seconds
    to connect, so a frozen host costs a nightly one full wait, not one per scenario."""

    def __init__(self, inv: Inventory, deadlines: Deadlines, unanswered: set[str]):
        self.inv = inv
        self.deadlines = deadlines
        self.unanswered = unanswered
        self.conns: dict[str, fabric.Connection] = {}
        self.errors: dict[str, ChainlabError] = {}

    def _record(self, results: dict[str, object], errors: dict[str, ChainlabError], connecting: bool = False) -> None:
        self.errors.update(errors)
        self.unanswered.difference_update(results)
        self.unanswered.update(h for h, e in errors.items() if connecting or isinstance(e, DeadlineExceeded))

    def connect(self, hosts: list[str]) -> None:
        d = self.deadlines
        conns, errors = fan_out({h: h for h in hosts}, lambda h, _: connect(self.inv, h),
                                lambda h: d.connect_again if h in self.unanswered else d.connect,
                                lambda h: "connecting over SSH", discard=lambda conn: conn.close())
        self.conns.update(conns)
        self._record(conns, errors, connecting=True)  # type: ignore[arg-type]

    def live(self, only: set[str] | None = None) -> dict[str, fabric.Connection]:
        return {h: c for h, c in self.conns.items() if h not in self.errors and (only is None or h in only)}

    def each(self, what: Callable[[str], str], work: Callable[[str, fabric.Connection], T],
             only: set[str] | None = None) -> dict[str, T]:
        """`work(host, conn)` on every live host at once; a host that fails or runs out of
        time is recorded (and its connection closed) and left out of the result."""
        results, errors = fan_out(self.live(only), work, self.deadlines.command, what,
                                  cancel=lambda _h, conn: conn.close())
        self._record(results, errors)  # type: ignore[arg-type]
        return results

    def failure(self, among: set[str]) -> ChainlabError | None:
        """One error naming every host of `among` that failed and what was waited for."""
        failed = sorted(h for h in self.errors if h in among)
        return ChainlabError("; ".join(str(self.errors[h]) for h in failed)) if failed else None

    def notes(self, besides: set[str]) -> list[str]:
        return [f"{self.errors[h]} (this scenario does not need {h}: its evidence is missing)"
                for h in sorted(self.errors) if h not in besides]

    def close(self) -> None:
        """Close every connection (each within its deadline; a failure to close is no news)."""
        def close(_host: str, conn: fabric.Connection) -> None:
            with suppress(Exception):
                conn.close()

        fan_out(self.conns, close, self.deadlines.close, lambda h: "closing the connection")


def _run_in(inv: Inventory, scenario: Scenario, state: LabState, run_dir: Path, log: Log, hosts: _Hosts) -> RunResult:
    spec = build_probe(scenario, state)
    needed = set(scenario.expect) | {spec.host, locate(state, scenario.target)[0]}
    started = datetime.now()
    t0 = time.monotonic()
    for sub in ("logs", "rules", "routes"):
        private_dir(run_dir / sub)
    try:
        hosts.connect(list(state.hosts))
        containers = _scenario_containers(scenario, state)
        marks: dict[str, LogMark] = {}
        for node, (mark, snap) in hosts.each(
            lambda node: f"marking its trace log {state.hosts[node].trace_log} and saving its rules and routes",
            lambda node, conn: _mark_and_snapshot(conn, state.hosts[node].trace_log, containers.get(node, [])),
        ).items():
            marks[node] = mark
            write_atomic(run_dir / "rules" / f"{node}.rules", snap.rules, PRIVATE_FILE)
            write_atomic(run_dir / "routes" / f"{node}.txt", snap.routes, PRIVATE_FILE)
            for role, name in containers.get(node, []):
                problem = container_problem(role, name, node, snap)
                if problem:
                    raise ChainlabError(problem)
        _raise_if_failed(hosts, needed)  # no probe when evidence it needs would be missing
        log(f"probe: {' '.join(spec.argv)} from {spec.where}")
        exit_code, output = _probe(inv, spec, hosts)
        write_atomic(run_dir / "probe.txt", f"$ {' '.join(spec.argv)}  # on {spec.where}\n{output}\nexit code {exit_code}\n")
        expected_nodes = {n for n, e in scenario.expect.items() if e.request.hooks or e.reply.hooks}
        slices = _collect(hosts, state, marks, lambda s: all(s.get(n) for n in expected_nodes & set(s)))
        for node, text in slices.items():
            write_atomic(run_dir / "logs" / f"{node}.log", text, PRIVATE_FILE)
        _raise_if_failed(hosts, needed)
    finally:
        hosts.close()
    return _analyze_run(scenario, run_dir, started, time.monotonic() - t0, spec, exit_code, inv.lab,
                        hosts.notes(needed))


def _raise_if_failed(hosts: _Hosts, needed: set[str]) -> None:
    failure = hosts.failure(needed)
    if failure is not None:
        raise failure


def _scenario_containers(scenario: Scenario, state: LabState) -> dict[str, list[tuple[str, str]]]:
    """host → [(role, container)] for the scenario's source and target containers."""
    out: dict[str, list[tuple[str, str]]] = {}
    for role, endpoint in (("source", scenario.source), ("target", scenario.target)):
        if endpoint.container and endpoint.container in state.containers:
            out.setdefault(state.containers[endpoint.container].host, []).append((role, endpoint.container))
    return out


def _mark_and_snapshot(conn: fabric.Connection, trace_log: str,
                       containers: list[tuple[str, str]]) -> tuple[LogMark, Snapshot]:
    """The trace file's mark, then rules, routes and the containers' states: one round trip."""
    names = list(dict.fromkeys(name for _, name in containers))
    out = run(conn, mark_argv(trace_log, then=snapshot_command(names))).stdout
    line, _, rest = out.partition("\n")
    return parse_mark(line), parse_snapshot(rest)


def _probe(inv: Inventory, spec: ProbeSpec, hosts: _Hosts) -> tuple[int, str]:
    deadlines = hosts.deadlines
    seconds = spec.seconds + deadlines.probe_slack
    what = f"running the probe `{' '.join(spec.argv)}` in {spec.where}"
    try:
        if spec.container is None:
            conn = hosts.conns[spec.host]
            result = call(lambda: run(conn, list(spec.argv), check=False, timeout=seconds), seconds + 1, spec.host,
                          what, cancel=conn.close)
            return result.exited, result.stdout + result.stderr
        return _docker_probe(inv, spec, seconds, deadlines.connect, what)
    except DeadlineExceeded:
        hosts.unanswered.add(spec.host)
        raise


def _docker_probe(inv: Inventory, spec: ProbeSpec, seconds: float, connect_s: float, what: str) -> tuple[int, str]:
    """`docker exec` of the probe in its container, within `seconds` + `connect_s`."""
    name = spec.container
    assert name is not None
    clients: list[docker.DockerClient] = []

    def exec_in_container() -> tuple[int, str]:
        client = docker_client(inv, spec.host, timeout=int(seconds))
        clients.append(client)
        try:
            exit_code, output = client.containers.get(name).exec_run(list(spec.argv))
            return exit_code, output.decode("utf-8", "replace")
        except docker.errors.NotFound:
            raise ChainlabError(f"container {name} is gone from {spec.host}: run lab up") from None
        except docker.errors.DockerException as exc:
            raise ChainlabError(f"probe in {spec.where}: docker: {exc}") from None
        finally:
            client.close()

    return call(exec_in_container, seconds + connect_s, spec.host, what,
                cancel=lambda: [c.close() for c in clients])


def _collect(hosts: _Hosts, state: LabState, marks: dict[str, LogMark],
             ready: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """Every answering node's new log text, once the files are quiet and `ready` says all
    is in (or COLLECT_TIMEOUT_S passed); a node that stops answering is left out."""
    slices: dict[str, str] = {}
    last: dict[str, int] = {}
    end = time.monotonic() + COLLECT_TIMEOUT_S
    while True:
        read = hosts.each(lambda node: f"reading its trace log {state.hosts[node].trace_log}",
                          lambda node, conn: read_slice(conn, state.hosts[node].trace_log, marks[node]),
                          only=set(marks))
        sizes = {}
        for node, (text, now) in read.items():
            slices[node] = text
            sizes[node] = now.size
        quiet = sizes == last
        last = sizes
        if (quiet and ready(slices)) or time.monotonic() >= end or not read:
            return {node: text for node, text in slices.items() if node not in hosts.errors}
        time.sleep(POLL_S)


def _analyze_run(scenario: Scenario, run_dir: Path, started: datetime, duration: float,
                 spec: ProbeSpec, exit_code: int, lab: str, host_notes: list[str]) -> RunResult:
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
        "notes": host_notes,
    }
    model = diagram.build_model(result.packets, result.flows, set(scenario.tables))
    write_atomic(run_dir / "diagram.svg", diagram.to_svg(model, f"scenario {scenario.id}: {scenario.title}"))
    write_atomic(run_dir / "analysis.json", json.dumps(doc, indent=1))
    render_run_report(run_dir)
    notes = host_notes + ([] if outcome == scenario.outcome else [f"probe outcome {outcome}, expected {scenario.outcome}"])
    return RunResult(scenario, run_dir, passed, checks, outcome, duration, result, exit_code, notes)
