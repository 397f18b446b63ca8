"""Run probes and leave the evidence in a run dir of their own (see chainlab.rundir).

`capture` is the bracketing every run shares (a scenario run, `chainlab probe`, `chainlab
matrix`): every node's trace file marked and its rules, routes and the probes' containers
snapshot, listeners up, all probes at once (one shell script per source host), listeners
down, then exactly the new log bytes of each node.

Every remote step has a deadline (chainlab.run.deadline): a host that does not answer in
time is that host's error, naming what was waited for; the other hosts' steps go on and
their evidence is written, and the run is an error (error.txt) rather than a result.
"""

from __future__ import annotations

import io
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import fabric

from chainlab.errors import ChainlabError, InputError, Problem
from chainlab.files import PRIVATE_FILE, private_dir, read_regular_file, write_atomic
from chainlab.inventory import Inventory
from chainlab.labstate import LabState, load_state
from chainlab.lock import lab_lock
from chainlab.providers import provider_for
from chainlab.remote.batch import Batch
from chainlab.remote import connect, run
from chainlab.render import diagram
from chainlab.render.jsonout import write_json
from chainlab.report.html import render_run_report
from chainlab.run.attribute import attribute
from chainlab.run.collect import INCOMPLETE, LogMark, mark_argv, parse_mark, read_slice
from chainlab.run.deadline import DeadlineExceeded, Interrupted, fan_out, signals_interrupt
from chainlab.run.outcome import flows_of
from chainlab.run.probe import (CONTAINER_GONE, ListenerSpec, ProbeSpec, build_probe, listeners_for, locate,
                                parse_listener, probe_command)
from chainlab.run.snapshot import Snapshot, container_problem, parse_snapshot, route_sources, snapshot_command
from chainlab.rundir import check_runs_root, create_run_dir, mark_complete, slug
from chainlab.scenario import Scenario, load_scenario
from chainlab.trace.expect import Check, check_scenario
from chainlab.trace.flows import Flow
from chainlab.trace.model import Packet
from chainlab.trace.pipeline import Analysis, AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import parse_iptables_save
from chainlab.yamlfile import MAX_BYTES

# A connection attempt given up on at its deadline ends later in paramiko's own thread,
# which logs the failure with a traceback; the run has already reported that host's error.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

COLLECT_TIMEOUT_S = 6.0
POLL_S = 0.15
#: A listener outlives a crashed or interrupted run by at most this long.
LISTENER_LIFE_S = 120.0
EVIDENCE_DIRS = ("logs", "rules", "routes")
T = TypeVar("T")
Log = Callable[[str], object]


@dataclass(frozen=True)
class Deadlines:
    """How long a run waits for a host, per step (seconds)."""

    connect: float = 15.0  # TCP connect, SSH banner, key exchange, authentication
    connect_again: float = 5.0  # to a host that could not be reached earlier in this nightly
    command: float = 15.0  # one command: mark + snapshot, listeners up or down, one read of a log slice
    probe_slack: float = 15.0  # on top of the longest probe's own duration (docker exec included)
    close: float = 2.0


DEADLINES = Deadlines()


class RunFailed(ChainlabError):
    """A run that stopped after its run dir was made; `error.txt` in it says why. Its exit
    status, 3, is neither a FAIL's or an unanswered probe's (1) nor bad input's (2): a
    script can tell "blocked" from "could not be probed"."""

    exit_code = 3

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


@dataclass(frozen=True)
class ProbeRun:
    """What one probe's command did."""

    exit_code: int
    output: str


@dataclass
class Capture:
    """One bracketing: every probe's run (in the order of the specs), every answering
    node's new log text, and notes on hosts the run did not need that failed."""

    probes: list[ProbeRun]
    slices: dict[str, str]
    duration_s: float
    notes: list[str] = field(default_factory=list)


def check_network(inv: Inventory, scenario: Scenario) -> None:
    if scenario.network != inv.calico.driver:
        raise ChainlabError(
            f"scenario {scenario.id} needs a lab on the {scenario.network} network; "
            f"this inventory's network driver is {inv.calico.driver}"
        )


def check_names(inv: Inventory, scenario: Scenario) -> None:
    """The endpoints and nodes the scenario names are the inventory's (before any connection)."""
    unknown = scenario.unknown_names(inv.hosts, inv.containers)
    if unknown:
        raise ChainlabError(f"scenario {scenario.id}: {'; '.join(unknown)} ({inv.lab}: hosts {', '.join(inv.hosts)};"
                            f" containers {', '.join(inv.containers) or 'none'})")


def check_traced(inv: Inventory, port: int | None, what: str) -> None:
    """A TCP or UDP probe to a port that the trace rules leave out would show no packet, and
    so no path: refused before anything runs."""
    if port is None:
        return
    from chainlab.networks import network_for
    from chainlab.provision.commands import untraced_ports

    provider = provider_for(inv)
    ports = untraced_ports(provider, network_for(inv, provider))
    if port in ports:
        raise InputError([Problem(what, str(port), f"is not traced: the lab's trace rules leave out its control ports"
                                  f" ({', '.join(map(str, ports))}: SSH and the network's own traffic) so that chainlab's"
                                  " own sessions are not traced; probe another port")])


def run_scenario(inv: Inventory, scenario_path: Path, runs_root: Path, log: Log = print) -> RunResult:
    """`chainlab run N`: inputs and the runs dir checked first, then the run under the lab lock.

    Nothing is written (no run dir) when the scenario, the lab state or the runs dir is
    wrong, or when the lab is busy; SIGTERM/SIGINT end the run at once (see `run_locked`).
    """
    scenario = load_scenario(scenario_path)
    check_network(inv, scenario)
    check_names(inv, scenario)
    check_traced(inv, scenario.probe_port, f"scenario {scenario.id}: probe port")
    state = load_state(inv)
    check_runs_root(runs_root)
    with signals_interrupt(), lab_lock(inv):
        return run_locked(inv, scenario_path, scenario, state, runs_root, log)


def run_locked(inv: Inventory, scenario_path: Path, scenario: Scenario, state: LabState, runs_root: Path,
               log: Log = print, deadlines: Deadlines = DEADLINES, unanswered: set[str] | None = None) -> RunResult:
    """With the lab lock held: a new run dir, then mark, snapshot, probe, collect, analyze
    (see `recorded` for what a failure or an interrupt leaves behind).
    `unanswered`: hosts that could not be reached in an earlier run of the same nightly
    (kept up to date here).
    """
    run_dir = create_run_dir(runs_root, inv.lab, f"-{scenario.id:02d}-{slug(scenario.title)}")
    with recorded(run_dir, log):
        write_atomic(run_dir / "scenario.yaml", read_regular_file(scenario_path, MAX_BYTES))
        hosts = _Hosts(inv, deadlines, set() if unanswered is None else unanswered)
        return _run_in(inv, scenario, state, run_dir, log, hosts)


@contextmanager
def recorded(run_dir: Path, log: Log) -> Iterator[None]:
    """The block fills `run_dir`; once it ends, the dir is marked complete.

    Any failure is a RunFailed whose message is in `error.txt` (with the traceback, for an
    unexpected exception), and the dir is marked complete. An interrupt (SIGTERM/SIGINT)
    leaves the dir PARTIAL, says so in error.txt and goes on up.
    """
    try:
        yield
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


def _write_error(run_dir: Path, text: str) -> bool:
    """error.txt, if the disk still takes it (the error at hand matters more than this one)."""
    try:
        write_atomic(run_dir / "error.txt", text.rstrip("\n") + "\n")
        return True
    except ChainlabError:
        return False


def evidence_dirs(directory: Path) -> Path:
    """`directory` with the logs/, rules/ and routes/ a capture fills (0700)."""
    for sub in EVIDENCE_DIRS:
        private_dir(directory / sub)
    return directory


def write_probe_text(path: Path, probes: list[tuple[ProbeSpec, ProbeRun]]) -> None:
    """Each probe's command, where it ran, its output and exit code."""
    write_atomic(path, "".join(f"$ {spec.shown}  # on {spec.where}\n{run.output}\nexit code {run.exit_code}\n"
                               for spec, run in probes))


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
        self._record(conns, errors, connecting=True)

    def live(self, only: set[str] | None = None) -> dict[str, fabric.Connection]:
        return {h: c for h, c in self.conns.items() if h not in self.errors and (only is None or h in only)}

    def each(self, what: Callable[[str], str], work: Callable[[str, fabric.Connection], T],
             only: set[str] | None = None, seconds: float | Callable[[str], float] | None = None) -> dict[str, T]:
        """`work(host, conn)` on every live host (of `only`) at once, each within `seconds`
        (default: the command deadline); a host that fails or runs out of time is recorded
        (and its connection closed) and left out of the result."""
        results, errors = fan_out(self.live(only), work, self.deadlines.command if seconds is None else seconds,
                                  what, cancel=lambda _h, conn: conn.close())
        self._record(results, errors)  # type: ignore[arg-type]
        return results

    def fail(self, host: str, error: ChainlabError) -> None:
        """`host` answered with something wrong (not silence): left out from now on."""
        old = self.errors.get(host)
        self.errors[host] = error if old is None else ChainlabError(f"{old}; {error}")

    def raise_failure(self, among: set[str]) -> None:
        """One error naming every host of `among` that failed and what was waited for."""
        failed = sorted(h for h in self.errors if h in among)
        if failed:
            raise ChainlabError("; ".join(str(self.errors[h]) for h in failed))

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
    expected_nodes = {n for n, e in scenario.expect.items() if e.request.hooks or e.reply.hooks}
    started = datetime.now()
    captured = capture(inv, state, [spec], run_dir, lambda s: all(s.get(n) for n in expected_nodes & set(s)), log,
                       hosts=hosts, needed=needed)
    return _analyze_run(scenario, run_dir, started, captured.duration_s, spec, captured.probes[0].exit_code, state,
                        captured.notes)


def capture(inv: Inventory, state: LabState, specs: list[ProbeSpec], run_dir: Path,
            ready: Callable[[dict[str, str]], bool], log: Log = print, *, hosts: _Hosts | None = None,
            needed: set[str] | None = None, unavailable: dict[tuple[str, str], str] | None = None) -> Capture:
    """The bracketing every run shares; the caller holds the lab lock.

    Connect; every node's trace file marked and its rules, routes and the probes'
    containers snapshot (a stopped or missing container is an error before any probe; given
    `unavailable`, it is recorded there and the probes it takes part in are left out:
    `Capture.probes` then follows the specs that `unavailable_for` lets through);
    listeners up; all `specs` at once; listeners down; then exactly the new log bytes of
    each node, once the files are quiet and `ready` says all is in. run_dir gets logs/,
    rules/, routes/ and probe.txt. A host of `needed` (default: every host of the lab)
    that fails or misses a deadline is the capture's error; another one adds a note.
    Probes of one capture must be told apart by `attribute` (distinct source → target pairs).
    """
    hosts = hosts or _Hosts(inv, DEADLINES, set())
    needed = set(state.hosts) if needed is None else needed | {spec.host for spec in specs}
    evidence_dirs(run_dir)
    t0 = time.monotonic()
    try:
        hosts.connect(list(state.hosts))
        marks = _mark_and_snapshot(hosts, state, specs, run_dir, unavailable)
        hosts.raise_failure(needed)  # no probe when evidence it needs would be missing
        if unavailable:
            specs = [spec for spec in specs if unavailable_for(spec, unavailable) is None]
        for line in _announce(specs):
            log(line)
        listeners: dict[str, list[int]] = {}
        interrupted = False
        try:
            for line in _start_listeners(hosts, specs, listeners):
                log(line)
            hosts.raise_failure(needed)
            probes = _probe_all(hosts, specs)
            write_probe_text(run_dir / "probe.txt", [(s, p) for s, p in zip(specs, probes) if p is not None])
            hosts.raise_failure(needed)
        except Interrupted:
            interrupted = True  # no remote work now: the listeners end by themselves
            raise
        finally:
            if not interrupted:
                _stop_listeners(hosts, listeners)
        slices = _collect(hosts, state, marks, ready)
        for node, text in slices.items():
            write_atomic(run_dir / "logs" / f"{node}.log", text, PRIVATE_FILE)
        hosts.raise_failure(needed)
    finally:
        hosts.close()
    return Capture([p for p in probes if p is not None], slices, time.monotonic() - t0, hosts.notes(needed))


def _announce(specs: list[ProbeSpec]) -> list[str]:
    if not specs:
        return ["probes: none can run"]
    if len(specs) == 1:
        return [f"probe: {specs[0].shown} from {specs[0].where}"]
    return [f"probes: {len(specs)} at once from {', '.join(sorted({s.host for s in specs}))}"]


def _probe_containers(specs: list[ProbeSpec]) -> dict[str, list[tuple[str, str, str]]]:
    """host → [(role, container, its address in the lab state)] for the probes' source and
    target containers."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for spec in specs:
        for role, place in (("source", spec.source), ("target", spec.target)):
            if place is not None and place.container is not None:
                seen = (role, place.container, place.address)
                if seen not in out.get(place.host, []):
                    out.setdefault(place.host, []).append(seen)
    return out


def _mark_and_snapshot(hosts: _Hosts, state: LabState, specs: list[ProbeSpec], run_dir: Path,
                       unavailable: dict[tuple[str, str], str] | None) -> dict[str, LogMark]:
    """Every host's trace-file mark, then its rules, routes and the probes' containers'
    states: one round trip each. rules/ and routes/ are written; a stopped or missing
    container is its host's error, or (given `unavailable`) goes there: (role, name) → why."""
    containers = _probe_containers(specs)

    def work(node: str, conn: fabric.Connection) -> tuple[LogMark, Snapshot]:
        names = list(dict.fromkeys(name for _, name, _ in containers.get(node, [])))
        out = run(conn, mark_argv(state.hosts[node].trace_log, then=snapshot_command(names))).stdout
        line, _, rest = out.partition("\n")
        return parse_mark(line), parse_snapshot(rest)

    marks: dict[str, LogMark] = {}
    for node, (mark, snap) in hosts.each(
        lambda node: f"marking its trace log {state.hosts[node].trace_log} and saving its rules and routes", work,
    ).items():
        marks[node] = mark
        write_atomic(run_dir / "rules" / f"{node}.rules", snap.rules, PRIVATE_FILE)
        write_atomic(run_dir / "routes" / f"{node}.txt", snap.routes, PRIVATE_FILE)
        for role, name, address in containers.get(node, []):
            problem = container_problem(role, name, node, snap, address)
            if problem and unavailable is not None:
                unavailable[(role, name)] = problem
            elif problem:
                hosts.fail(node, ChainlabError(problem))
    return marks


def unavailable_for(spec: ProbeSpec, unavailable: dict[tuple[str, str], str]) -> str | None:
    """Why `spec` cannot be probed (its source or target container could not take part), or None."""
    for role, place in (("source", spec.source), ("target", spec.target)):
        if place is not None and place.container is not None and (role, place.container) in unavailable:
            return unavailable[(role, place.container)]
    return None


def _batches(hosts: _Hosts, commands: dict[str, list[str]], what: Callable[[str], str],
             seconds: float | Callable[[str], float] | None = None) -> dict[str, list[tuple[int, str]]]:
    """Per host, its shell commands run at once (one round trip): (exit status, output) each."""
    def work(host: str, conn: fabric.Connection) -> list[tuple[int, str]]:
        mine = commands[host]
        batch = Batch.of(mine, stderr=True, concurrent=True)
        out = run(conn, ["sh", "-c", batch.script()], check=False).stdout
        parsed = batch.parse(out)
        return [parsed.get(i, (255, "chainlab: no result from the host")) for i in range(len(mine))]

    return hosts.each(what, work, only={h for h, c in commands.items() if c}, seconds=seconds)


def _probe_all(hosts: _Hosts, specs: list[ProbeSpec]) -> list[ProbeRun | None]:
    """Every probe at once, one script per source host, within the longest probe's own
    duration + the probe slack; None for the probes of a host that failed. A probe whose
    container vanished since the snapshot is its host's error."""
    by_host: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_host.setdefault(spec.host, []).append(i)

    def what(host: str) -> str:
        mine = [specs[i] for i in by_host[host]]
        if len(mine) == 1:
            return f"running the probe `{mine[0].shown}` in {mine[0].where}"
        return f"running {len(mine)} probes"

    done = _batches(hosts, {h: [probe_command(specs[i]) for i in idx] for h, idx in by_host.items()}, what,
                    lambda h: max(specs[i].seconds for i in by_host[h]) + hosts.deadlines.probe_slack)
    runs: list[ProbeRun | None] = [None] * len(specs)
    for host, results in done.items():
        for i, (code, output) in zip(by_host[host], results):
            if output.startswith(CONTAINER_GONE):
                hosts.fail(host, ChainlabError(f"container {specs[i].container} is gone from {host}: run lab up"))
            runs[i] = ProbeRun(code, output)
    return runs


def _start_listeners(hosts: _Hosts, specs: list[ProbeSpec], started: dict[str, list[int]]) -> list[str]:
    """A listener on each target port the probes need that nothing listens on yet; their
    PIDs go to `started` (per host) for `_stop_listeners`; one that did not start is its
    host's error. Returns a line for each started: an answer from it says that the path is
    open, not that a service listens there."""
    by_host: dict[str, list[ListenerSpec]] = {}
    for listener in listeners_for(specs):
        by_host.setdefault(listener.place.host, []).append(listener)
    commands = {host: [listener.command(LISTENER_LIFE_S) for listener in mine] for host, mine in by_host.items()}
    said = []
    for host, results in _batches(hosts, commands, lambda h: "starting its listeners").items():
        pids = started.setdefault(host, [])
        problems = []
        for listener, (code, output) in zip(by_host[host], results):
            if output.startswith(CONTAINER_GONE):
                problems.append(f"{host}: a container is gone: run lab up ({output.strip()})")
            elif code != 0:
                problems.append(f"{host}: a listener did not start (exit {code}): {output.strip()[-300:]}")
            else:
                try:
                    pid = parse_listener(output)
                except ChainlabError as exc:
                    problems.append(f"{host}: {exc}")
                    continue
                if pid is not None:
                    pids.append(pid)
                    said.append(f"listener: nothing listened on {listener.protocol}/{listener.port} in"
                                f" {listener.place.where}: chainlab's own answers there for this run")
        if problems:
            hosts.fail(host, ChainlabError("; ".join(problems)))
    return said


def _stop_listeners(hosts: _Hosts, started: dict[str, list[int]]) -> None:
    """Kill the listeners we started (each would end by itself after LISTENER_LIFE_S)."""
    hosts.each(lambda host: f"stopping its listeners {started[host]}",
               lambda host, conn: run(conn, ["kill", *map(str, started[host])], check=False),
               only={h for h, pids in started.items() if pids})


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
        for node, (text, now, how) in read.items():
            slices[node] = text
            sizes[node] = now.size
            if how in INCOMPLETE and node not in hosts.errors:  # a FAIL would blame the paths
                log = state.hosts[node].trace_log
                hosts.fail(node, ChainlabError(f"{node}: its trace log {log} was {INCOMPLETE[how]} during the run:"
                                               " lines of the probe may be lost; run again"))
        quiet = sizes == last
        last = sizes
        if (quiet and ready(slices)) or time.monotonic() >= end or not read:
            return {node: text for node, text in slices.items() if node not in hosts.errors}
        time.sleep(POLL_S)


def analyze_logs(run_dir: Path) -> Analysis:
    """The run dir's logs/, with each node's rules/ snapshot joined in."""
    nodes = sorted(p.stem for p in (run_dir / "logs").glob("*.log"))
    rules = {n: parse_iptables_save((run_dir / "rules" / f"{n}.rules").read_text()) for n in nodes
             if (run_dir / "rules" / f"{n}.rules").is_file()}
    return analyze([LogSource(run_dir / "logs" / f"{n}.log", n) for n in nodes], AnalysisOptions(rules=rules))


def own_addresses(state: LabState, directory: Path) -> dict[str, frozenset[str]]:
    """Each host's own addresses (what it may masquerade packets to): its address in the lab
    state and the sources its routes name (routes/ of the capture in `directory`)."""
    out = {}
    for name, host in state.hosts.items():
        try:
            routes = (directory / "routes" / f"{name}.txt").read_text(encoding="utf-8", errors="replace")
        except OSError:
            routes = ""
        out[name] = frozenset({str(host.address)}) | route_sources(routes)
    return out


def probe_part(whole: Analysis, spec: ProbeSpec, exit_code: int, packets: list[Packet],
               flows: list[Flow]) -> tuple[Analysis, dict[str, object]]:
    """The part of a capture's analysis that is one probe's (its `packets` and `flows`), and
    the run info's `probe` block: `other_packets` counts the capture's packets that were not
    its (the evidence shows the probe's; logs/ keep every line)."""
    info: dict[str, object] = {"command": spec.shown, "where": spec.where, "exit_code": exit_code,
                               "other_packets": len(whole.packets) - len(packets)}
    return Analysis(packets, flows, whole.stats, whole.nodes), info


def write_evidence(run_dir: Path, result: Analysis, run_info: dict[str, object], tables: Sequence[str],
                   checks: list[Check] | None = None) -> None:
    """analysis.json (with `run_info` as its `run` key), diagram.svg and report.html."""
    buffer = io.StringIO()
    write_json(buffer, result.packets, lambda: result.flows, result.stats, None, checks)
    doc = json.loads(buffer.getvalue())
    doc["run"] = run_info
    model = diagram.build_model(result.packets, result.flows, set(tables))
    write_atomic(run_dir / "diagram.svg", diagram.to_svg(model, str(run_info.get("title", ""))))
    write_atomic(run_dir / "analysis.json", json.dumps(doc, indent=1))
    render_run_report(run_dir)


def _analyze_run(scenario: Scenario, run_dir: Path, started: datetime, duration: float,
                 spec: ProbeSpec, exit_code: int, state: LabState, host_notes: list[str]) -> RunResult:
    whole = analyze_logs(run_dir)
    # The window holds whatever else the hosts sent (a local etcd client, SSH): the probe's
    # packets are judged and make the evidence, as a `chainlab probe`'s do; logs/ keep everything.
    mine = attribute(whole.packets, [spec], own_addresses(state, run_dir))[0]
    result, probe = probe_part(whole, spec, exit_code, mine, flows_of(mine, spec.protocol))
    checks = check_scenario(scenario, mine, {p.stem for p in (run_dir / "logs").glob("*.log")})
    outcome = "reachable" if exit_code == 0 else "unreachable"
    passed = all(c.ok for c in checks) and outcome == scenario.outcome
    write_evidence(run_dir, result, {
        "scenario": {"id": scenario.id, "title": scenario.title, "description": scenario.description,
                     "outcome": scenario.outcome, "tables": scenario.tables},
        "title": f"scenario {scenario.id}: {scenario.title}",
        "started": started.isoformat(timespec="seconds"), "duration_s": round(duration, 3),
        "passed": passed, "outcome": outcome, "lab": state.lab,
        "probe": probe,
        "notes": host_notes,
    }, scenario.tables, checks)
    notes = host_notes + ([] if outcome == scenario.outcome else [f"probe outcome {outcome}, expected {scenario.outcome}"])
    return RunResult(scenario, run_dir, passed, checks, outcome, duration, result, exit_code, notes)
