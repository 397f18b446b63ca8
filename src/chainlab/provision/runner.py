"""Run the steps: lock, connect, facts, then phases of host steps (all hosts in parallel) and
lab-level steps (once), recap, lab state.

    up:   [lab] network.lab_first → [hosts] base steps + network.node_up → [lab] network.lab_up
          → [hosts] containers
    down: [hosts] containers → [lab] network.lab_down → [hosts] network.node_down + base undo
          → [lab] network.lab_last

A host whose connection fails (after the retries of `chainlab.remote.connect`) or whose step
fails stops there (lab up; lab down goes on with its other steps); the others finish; the
run is failed. Lab-level steps show in the recap as the pseudo-host `(lab)`. Offline
--check never connects: facts come from the inventory's hints and the provider's.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from chainlab.errors import ChainlabError
from chainlab.files import write_atomic
from chainlab.inventory import Inventory
from chainlab.labstate import HostState, LabState, load_state, remove_state, save_state
from chainlab.lock import lab_lock
from chainlab.networks import network_for
from chainlab.networks.base import HostStep, LabStep
from chainlab.providers import provider_for
from chainlab.provision.context import HostContext, RunContext
from chainlab.provision.dockerview import ANSWER_WITHIN_S, DIRECT, NOT_ANSWERED, DockerLook
from chainlab.provision.dockerview import SOCKET as DOCKER_SOCKET
from chainlab.provision.executor import run_step, why
from chainlab.provision.facts import Facts, assumed_facts, facts_script, parse_facts
from chainlab.provision.recap import HostReport, RunReport, StepResult, recap_lines
from chainlab.provision.steps import BASE_UP_STEPS, containers, up_probes
from chainlab.provision.teardown import BASE_DOWN_STEPS, down_probes
from chainlab.provision.teardown import containers as remove_containers
from chainlab.remote import kept
from chainlab.remote.batch import Batch
from chainlab.remote.session import HostSession
from chainlab.remote.timeouts import RemoteTimeout
from chainlab.render.console import make_console
from chainlab.run.deadline import DeadlineExceeded, Worker, call, cancel_in_background, fan_out, signals_interrupt

Action = Literal["up", "down"]
T = TypeVar("T")
COLOURS = {"ok": "green", "changed": "yellow", "failed": "red", "skipped": "cyan"}
LAB = "(lab)"  # the recap's name for lab-level steps (host names cannot contain parentheses)
#: Deadlines that turn a frozen host into that host's failure. Every command of a step has a
#: timeout of its own; these also bound what has none (paramiko opening a channel to a
#: frozen sshd, a docker SDK call): connecting (with its retries), the facts, each step.
CONNECT_DEADLINE_S = 60
FACTS_DEADLINE_S = 60
STEP_DEADLINE_S = 300
#: Steps that may install packages or build an image.
LONG_STEP_DEADLINE_S = {"trace_log": 900, "image": 1800, "calico_node": 900}


def step_deadline(name: str, limit: float | None = None) -> float:
    """A step's deadline: `limit` (`lab up --timeout`) if given, else its default."""
    return limit if limit is not None else LONG_STEP_DEADLINE_S.get(name, STEP_DEADLINE_S)


@dataclass(frozen=True)
class Phase:
    """Steps on every host (in parallel), or lab-level steps run once."""

    lab: bool
    steps: Sequence[tuple[str, HostStep]] | Sequence[tuple[str, LabStep]]


def phases(action: Action, run: RunContext) -> list[Phase]:
    network = run.network
    if action == "up":
        plan = [Phase(True, network.lab_first()), Phase(False, [*BASE_UP_STEPS, *network.node_up()]),
                Phase(True, network.lab_up()), Phase(False, [("containers", containers)])]
    else:
        plan = [Phase(False, [("containers", remove_containers)]), Phase(True, network.lab_down()),
                Phase(False, [*network.node_down(), *BASE_DOWN_STEPS]), Phase(True, network.lab_last())]
    return [p for p in plan if p.steps]


def select_hosts(inv: Inventory, limit: tuple[str, ...]) -> list[str]:
    if not limit:
        return list(inv.hosts)
    unknown = [h for h in limit if h not in inv.hosts]
    if unknown:
        raise ChainlabError(f"--limit: unknown host(s) {', '.join(unknown)}: the inventory has"
                            f" {', '.join(inv.hosts)}")
    return [h for h in inv.hosts if h in limit]


def gather_facts(inv: Inventory, host: str, ssh: HostSession | None, probes: Sequence[Sequence[str]] = (),
                 full: bool = True, timeout: float = FACTS_DEADLINE_S) -> tuple[Facts, dict[int, tuple[int, str]]]:
    """The host's facts and, in the same round trip, the answers of read-only `probes`."""
    if ssh is None:
        return assumed_facts(inv, host), {}
    etcd = None
    if inv.etcd:
        etcd = (str(inv.hosts[inv.etcd.host].address), inv.etcd.port)
    batch = [["sh", "-c", facts_script(etcd, full)], *probes]  # the facts are probe 0, run with the others
    script = Batch.of_argvs(batch)
    # not checked: the frames say what each probe answered, and one probe's broken script (it
    # runs in the batch's own shell) must not take the other answers with it
    try:
        out = ssh.read(["sh", "-c", script.script()], timeout=timeout).stdout
    except RemoteTimeout:
        raise ChainlabError(f"{host}: the facts (and the read-only checks run with them) did not come within"
                            f" {timeout:g} s: the host, or a daemon they ask (dockerd, etcd), not answering?") from None
    answers = script.parse(out)
    if 0 not in answers:
        raise ChainlabError(f"{host}: no facts in the answer ({out[:200]!r})")
    return parse_facts(inv, host, answers.pop(0)[1]), {i - 1: answer for i, answer in answers.items()}


def gather_with_docker(inv: Inventory, host: str, ssh: HostSession, probes: Sequence[Sequence[str]],
                       look: DockerLook, timeout: float) -> tuple[Facts, dict[int, tuple[int, str]]]:
    """`gather_facts` (lab up's, not `full`), with dockerd's objects (`look`, one of `probes`)
    asked through the kept connection's forward while the host runs the other probes: no
    curl on the host. Where there is no forward, the forward fails or the user pointed docker
    elsewhere, that probe stays unanswered (it runs when a step needs it)."""
    gets = ssh.gets(look.api_paths(), ANSWER_WITHIN_S)
    if gets is None:
        return gather_facts(inv, host, ssh, probes, full=False, timeout=timeout)
    index = [list(p) for p in probes].index(look.argv())
    try:
        facts, answers = gather_facts(inv, host, ssh, [*probes[:index], look.direct_argv(), *probes[index + 1:]],
                                      full=False, timeout=timeout)
    except BaseException:
        gets.close()
        raise
    direct = answers.pop(index, None)
    if ssh.kept_lost:  # the master failed the batch: its forward would only say so again
        gets.close()
        return facts, answers
    bodies = gets.bodies(ANSWER_WITHIN_S)
    if direct is not None and direct[1].strip() == DIRECT:
        if bodies is not None:
            answers[index] = (0, "\n".join(body.decode("utf-8", "replace") for body in bodies))
        elif gets.timed_out:
            answers[index] = (NOT_ANSWERED[-1], "")  # as the probe says it: dockerd did not answer
    return facts, answers


class Runner:
    def __init__(self, inv: Inventory, action: Action, *, check: bool = False, offline: bool = False,
                 limit: tuple[str, ...] = (), console: Console | None = None, step_timeout: float | None = None):
        self.inv = inv
        self.action = action
        self.check = check
        self.offline = offline
        self.hosts = select_hosts(inv, limit)
        self.limited = bool(limit)
        self.console = console or make_console()
        self._print_lock = threading.Lock()
        #: Where rich would write the same characters without colour (a pipe, a file), a step's
        #: line is written as it is: rich's rendering cost ~0.1-0.25 ms a line, lines * hosts.
        self._plain = not (self.console.is_terminal or self.console.record) and self.console.color_system is None
        provider = provider_for(inv)
        self.run_ctx = RunContext(inv, provider, network_for(inv, provider), check)
        self.report = RunReport(lab=inv.lab, action=action, check=check)
        self.phases = phases(action, self.run_ctx)
        self._dead: set[str] = set()
        self._workers: dict[str, Worker] = {}  # a thread per host for its steps
        self._sessions: dict[str, HostSession] = {}  # so that a host given up on while connecting is cut
        self.step_timeout = step_timeout
        #: lab down: the lab step that failed (the network's own steps on the hosts then wait)
        self._lab_failed: str | None = None
        self._network_node_steps = {name for name, _ in self.run_ctx.network.node_down()}

    # --- the run ----------------------------------------------------------------------

    def run(self) -> RunReport:
        started = time.monotonic()
        if not self.offline:
            self.run_ctx.provider.ready()
        if self.check:
            self._restore(dry_run=True)
            self._run()
        else:
            with lab_lock(self.inv):  # `local down` holds it while it removes what restore() would put back
                self._restore(dry_run=False)
                self._run()
                self._finish()
                if self.action == "down":  # those hosts are down: nothing to keep a connection for
                    kept.end(self.inv.lab, [ctx.ssh.kept_path for ctx in self.run_ctx.hosts.values()
                                            if ctx.ssh is not None and ctx.ssh.kept_path] if self.limited else None)
        self.report.seconds = time.monotonic() - started
        return self.report

    def _restore(self, dry_run: bool) -> None:
        if not self.offline and (note := self.run_ctx.provider.restore(dry_run)):
            self.console.print(f"warning: {note}", soft_wrap=True)

    def _run(self) -> None:
        """Hosts in parallel; every remote operation within a deadline, so that a frozen host
        is that host's failure and SIGTERM/SIGINT end the run at once (the lock is released
        on the way out; threads still blocked on a frozen host are daemons, left behind)."""
        if self.inv.etcd is not None:  # imported while the hosts connect, not before
            threading.Thread(target=importlib.import_module, args=("chainlab.remote.etcdclient",),
                             daemon=True).start()
        total = 1 + sum(len(p.steps) for p in self.phases if not p.lab)
        progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                            console=self.console, transient=True, disable=not self.console.is_terminal)
        with signals_interrupt(), progress:
            tasks = {h: progress.add_task(f"{h}: connecting", total=total) for h in self.hosts}
            reports, _ = fan_out({h: h for h in self.hosts}, lambda h, _: self._connect(h, progress, tasks[h]),
                                 CONNECT_DEADLINE_S + FACTS_DEADLINE_S, lambda _h: "connecting",
                                 cancel=lambda h, _: self._sessions[h].close() if h in self._sessions else None,
                                 discard=lambda report: None)
            for host in self.hosts:
                if host not in reports:
                    self._dead.add(host)  # a connection that still opens later is not used
                    reports[host] = self._lost(host, "facts", "connecting and reading facts",
                                               CONNECT_DEADLINE_S + FACTS_DEADLINE_S)
                self.report.hosts[host] = reports[host]
            try:
                for phase in self.phases:
                    if phase.lab:
                        self._lab_phase(phase)
                        continue
                    going = {h: self.run_ctx.hosts[h] for h in self._going()}
                    budget = sum(step_deadline(name, self.step_timeout) for name, _ in phase.steps) + 10
                    fan_out(going, lambda h, _ctx: self._host_phase(h, phase, progress, tasks[h]), budget,
                            lambda _h: "its steps")
            finally:
                for worker in self._workers.values():
                    worker.stop()
                for ctx in self.run_ctx.hosts.values():
                    cancel_in_background(ctx.close)

    def _lost(self, host: str, step: str, what: str, seconds: float) -> HostReport:
        report = HostReport(host)
        result = StepResult(step, "failed", f"no answer within {seconds:g} s while {what}")
        report.steps.append(result)
        report.error = f"{step}: {result.detail}"
        self._show(host, result)
        return report

    def _going(self) -> list[str]:
        """Hosts that take part in the next phase: connected, not given up on after a
        deadline, and (lab up) not failed."""
        return [h for h, ctx in self.run_ctx.hosts.items() if h not in self._dead
                and (self.action == "down" or not self.report.hosts[h].failed)]

    def _connect(self, host: str, progress: Progress, task: TaskID) -> HostReport:
        report = HostReport(host)
        started = time.monotonic()
        ssh = None
        probes = up_probes(self.run_ctx, host) if self.action == "up" else down_probes(self.run_ctx, host)
        try:
            timeout = min(self.step_timeout or FACTS_DEADLINE_S, FACTS_DEADLINE_S)
            if not self.offline:
                ssh = self._sessions[host] = HostSession(self.inv, host, forward_to=DOCKER_SOCKET)
            if ssh is not None and self.action == "up":
                facts, answers = gather_with_docker(self.inv, host, ssh, probes, self.run_ctx.docker_look(host), timeout)
            else:
                facts, answers = gather_facts(self.inv, host, ssh, probes, full=False, timeout=timeout)
        except Exception as exc:  # unreachable: retried by connect(), then this host fails
            if ssh is not None:
                ssh.close()
            result = StepResult("facts", "failed", why(exc), seconds=time.monotonic() - started)
            report.steps.append(result)
            report.error = f"facts: {why(exc)}"
            self._show(host, result)
            return report
        result = StepResult("facts", "ok", _facts_line(facts), seconds=time.monotonic() - started)
        report.steps.append(result)
        report.seconds += result.seconds
        self._show(host, result)
        progress.update(task, advance=1)
        ctx = HostContext(self.run_ctx, host, facts, ssh)
        ctx.preload(probes, answers)
        self.run_ctx.hosts[host] = ctx
        return report

    def _host_phase(self, host: str, phase: Phase, progress: Progress, task: TaskID) -> None:
        ctx = self.run_ctx.hosts[host]
        report = self.report.hosts[host]
        worker = self._workers.setdefault(host, Worker(f"chainlab-{host}"))
        for name, fn in phase.steps:
            progress.update(task, description=f"{host}: {name}")
            if self._lab_failed and name in self._network_node_steps:
                # the network is still there: its plugin on the hosts stays for the next lab down
                self._record(report, StepResult(name, "skipped", f"{LAB} {self._lab_failed} failed: the network"
                                                                 " stays, and what serves it here"))
                continue
            seconds = step_deadline(name, self.step_timeout)
            try:
                result = worker.call(lambda name=name, fn=fn: run_step(ctx, name, fn), seconds, host,  # type: ignore[misc]
                                     f"step {name}", cancel=ctx.close)
            except DeadlineExceeded as exc:
                self._dead.add(host)
                result = StepResult(name, "failed", str(exc).split(": ", 1)[1], seconds=seconds)
            self._record(report, result)
            progress.update(task, advance=1)
            if host in self._dead or (result.status == "failed" and self.action == "up"):
                break  # later steps build on this one; down undoes all it can, on a host that answers
        progress.update(task, description=f"{host}: done")

    def _lab_phase(self, phase: Phase) -> None:
        """Lab-level steps: not under --limit (they concern every host); lab down's last ones
        only when every host got through."""
        if self.limited or (self.action == "down" and phase is self.phases[-1] and self.report.failed):
            return
        report = self.report.hosts.setdefault(LAB, HostReport(LAB))
        if self.action == "up" and not self._going():
            return
        for name, fn in phase.steps:
            try:
                result = call(lambda name=name, fn=fn: run_step(self.run_ctx, name, fn),  # type: ignore[misc]
                              step_deadline(name, self.step_timeout), LAB, f"step {name}")
            except DeadlineExceeded as exc:
                result = StepResult(name, "failed", str(exc).split(": ", 1)[1], seconds=exc.seconds)
            self._record(report, result)
            if result.status == "failed" and self.action == "down":
                self._lab_failed = self._lab_failed or name
            if result.status == "failed" and self.action == "up":
                for host in self._going():  # nothing after it can work
                    self.report.hosts[host].error = self.report.hosts[host].error or f"{LAB} {name} failed"
                break

    def _record(self, report: HostReport, result: StepResult) -> None:
        report.steps.append(result)
        report.seconds += result.seconds
        self._show(report.host, result)
        if result.status == "failed":
            report.error = report.error or f"{result.name}: {result.detail}"

    def _show(self, host: str, result: StepResult) -> None:
        """One step's line (and, under --check, its commands) printed as one block."""
        label = "would change" if self.check and result.status == "changed" else result.status
        block = Text.assemble((f"{label:>12}", COLOURS[result.status]), f" {host}: {result.name}  ",
                              (result.detail, "dim"))
        if self.check:
            for cmd in result.commands:
                for i, text in enumerate(cmd.splitlines()):
                    block.append(("\n      $ " if i == 0 else "\n        ") + text)
        with self._print_lock:
            if self._plain:
                self.console.file.write(block.plain + "\n")
                self.console.file.flush()
            else:
                self.console.print(block, soft_wrap=True)

    # --- after the hosts ----------------------------------------------------------------

    def _finish(self) -> None:
        if self.action == "up":
            self._save_state()
        else:
            self._after_down()

    def _save_state(self) -> None:
        try:
            state = load_state(self.inv)
        except ChainlabError:
            state = LabState(lab=self.inv.lab)
        for host, ctx in self.run_ctx.hosts.items():
            if self.report.hosts[host].failed:
                continue
            spec = self.inv.hosts[host]
            iptables = ctx.facts.iptables if ctx.facts.iptables in ("legacy", "nft") else spec.iptables
            state.hosts[host] = HostState(address=str(spec.address), trace_log=spec.trace_log,
                                          trace_backend=ctx.facts.trace_backend,
                                          iptables="nft" if iptables == "nft" else "legacy")
            for name in [n for n, c in state.containers.items() if c.host == host]:
                if name not in self.inv.containers:
                    del state.containers[name]
            state.containers.update(ctx.containers)
        # in the inventory's order, not the order the hosts answered in (probe, matrix and
        # error messages list endpoints as the state has them)
        state.hosts = _in_order(state.hosts, list(self.inv.hosts))
        state.containers = _in_order(state.containers, list(self.inv.containers))
        path = save_state(self.inv, state)
        self.report.notes.append(f"lab state: {path}")

    def _after_down(self) -> None:
        if not self.limited and not self.report.failed:
            remove_state(self.inv)
            self.report.notes.append("lab state removed")
            return
        try:
            state = load_state(self.inv)
        except ChainlabError:
            return
        for host, report in self.report.hosts.items():
            if host != LAB and not report.failed:
                state.hosts.pop(host, None)
                for name in [n for n, c in state.containers.items() if c.host == host]:
                    del state.containers[name]
        save_state(self.inv, state)


def _in_order(items: dict[str, T], order: list[str]) -> dict[str, T]:
    """`items` with the names of `order` first, in that order; any other name after them."""
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(items.items(), key=lambda item: rank.get(item[0], len(rank))))


def _facts_line(f: Facts) -> str:
    return (f"{f.os_name}, init {f.init}, iptables {f.iptables}, kernel log {f.kernel_log}"
            f" → trace {f.trace_backend}, docker {f.docker}, etcd {f.etcd} ({f.source})")


def print_recap(report: RunReport, console: Console) -> None:
    title = f"lab {report.action} {report.lab}" + (" --check (nothing was changed)" if report.check else "")
    console.print(f"\n[bold]RECAP {escape(title)}[/bold] ({report.seconds:.1f}s)")
    for text in recap_lines(report):
        colour = "red" if "failed:" in text or "failed=0" not in text else "green"
        console.print(f"[{colour}]{escape(text)}[/{colour}]", soft_wrap=True)
    for note in report.notes:
        console.print(f"[dim]{escape(note)}[/dim]", soft_wrap=True)


def write_json(report: RunReport, path: Path) -> None:
    write_atomic(path, json.dumps(report.as_dict(), indent=1) + "\n")


def provision(inv: Inventory, action: Action, *, check: bool = False, offline: bool = False,
              limit: tuple[str, ...] = (), json_path: Path | None = None,
              console: Console | None = None, step_timeout: float | None = None) -> RunReport:
    """lab up / lab down: run, print the recap, write --json; the report (failed → non-zero exit)."""
    console = console or make_console()
    runner = Runner(inv, action, check=check, offline=offline, limit=limit, console=console,
                    step_timeout=step_timeout)
    report = runner.run()
    print_recap(report, console)
    if json_path is not None:
        write_json(report, json_path)
    return report
