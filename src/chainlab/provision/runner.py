"""Run the steps on every host in parallel: lock, connect, facts, steps, recap, lab state.

One thread per host. A host whose connection fails (after the retries of
`chainlab.remote.connect`) or whose step fails stops there; the others finish; the
run is failed (non-zero exit). Offline --check never connects: facts come from the
inventory's hints.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import chainlab.calico as calico_layer
from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.labstate import HostState, LabState, remove_state, save_state
from chainlab.lock import lab_lock
from chainlab.provision.context import HostContext, Shared, Skip
from chainlab.provision.facts import Facts, assumed_facts, facts_script, parse_facts
from chainlab.provision.recap import HostReport, RunReport, StepResult, recap_lines
from chainlab.provision.steps import UP_STEPS, StepFn, up_probes
from chainlab.provision.teardown import DOWN_STEPS, down_probes
from chainlab.remote import connect, run

Action = Literal["up", "down"]
COLOURS = {"ok": "green", "changed": "yellow", "failed": "red", "skipped": "cyan"}


def select_hosts(inv: Inventory, limit: tuple[str, ...]) -> list[str]:
    if not limit:
        return list(inv.hosts)
    unknown = [h for h in limit if h not in inv.hosts]
    if unknown:
        raise ChainlabError(f"--limit: unknown host(s) {', '.join(unknown)}: the inventory has"
                            f" {', '.join(inv.hosts)}")
    return [h for h in inv.hosts if h in limit]


def gather_facts(inv: Inventory, host: str, conn: object | None) -> Facts:
    if conn is None:
        return assumed_facts(inv, host)
    etcd = None
    if inv.etcd:
        etcd = (str(inv.hosts[inv.etcd.host].address), inv.etcd.port)
    out = run(conn, ["sh", "-c", facts_script(etcd)], timeout=60).stdout  # type: ignore[arg-type]
    return parse_facts(inv, host, out)


class Runner:
    def __init__(self, inv: Inventory, action: Action, *, check: bool = False, offline: bool = False,
                 limit: tuple[str, ...] = (), console: Console | None = None):
        self.inv = inv
        self.action = action
        self.check = check
        self.offline = offline
        self.hosts = select_hosts(inv, limit)
        self.limited = bool(limit)
        self.console = console or Console(highlight=False)
        self.shared = Shared()
        self._print_lock = threading.Lock()
        self.report = RunReport(lab=inv.lab, action=action, check=check)
        self.contexts: dict[str, HostContext] = {}
        self.steps: list[tuple[str, StepFn]] = UP_STEPS if action == "up" else DOWN_STEPS

    # --- the run ----------------------------------------------------------------------

    def run(self) -> RunReport:
        started = time.monotonic()
        if self.inv.provider == "local" and not self.offline:
            from chainlab.local import plan_lab

            plan = plan_lab(self.inv)
            if not plan.state_file.exists():
                raise ChainlabError(f"the local lab {self.inv.lab} is not up: run `chainlab -i ... local up` first")
        if self.check:
            self._run_hosts()
        else:
            with lab_lock(self.inv):
                self._run_hosts()
                self._finish()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _run_hosts(self) -> None:
        progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                            console=self.console, transient=True)
        with progress:
            tasks = {h: progress.add_task(f"{h}: connecting", total=len(self.steps) + 1) for h in self.hosts}
            with ThreadPoolExecutor(max_workers=max(1, len(self.hosts))) as pool:
                futures = {h: pool.submit(self._host, h, progress, tasks[h]) for h in self.hosts}
                for host, fut in futures.items():
                    self.report.hosts[host] = fut.result()

    def _host(self, host: str, progress: Progress, task: object) -> HostReport:
        report = HostReport(host)
        started = time.monotonic()
        conn = None
        ctx: HostContext | None = None
        try:
            t0 = time.monotonic()
            try:
                if not self.offline:
                    conn = connect(self.inv, host)
                facts = gather_facts(self.inv, host, conn)
            except Exception as exc:  # unreachable: retried by connect(), then this host fails
                result = StepResult("facts", "failed", _why(exc), seconds=time.monotonic() - t0)
                report.steps.append(result)
                report.error = f"facts: {_why(exc)}"
                self._show(host, result)
                return report
            result = StepResult("facts", "ok", _facts_line(facts), seconds=time.monotonic() - t0)
            report.steps.append(result)
            self._show(host, result)
            progress.update(task, advance=1)  # type: ignore[arg-type]
            ctx = HostContext(self.inv, host, facts, conn, self.check, self.shared)
            self.contexts[host] = ctx
            try:
                ctx.prefetch(up_probes(ctx) if self.action == "up" else down_probes(ctx))
            except Exception:
                pass  # only an optimisation: every step probes again by itself
            for name, fn in self.steps:
                progress.update(task, description=f"{host}: {name}")  # type: ignore[arg-type]
                result = self._step(ctx, name, fn)
                report.steps.append(result)
                self._show(host, result)
                progress.update(task, advance=1)  # type: ignore[arg-type]
                if result.status == "failed":
                    report.error = report.error or f"{name}: {result.detail}"
                    if self.action == "up":
                        break  # later steps build on this one; down undoes all it can
            return report
        finally:
            report.seconds = time.monotonic() - started
            progress.update(task, description=f"{host}: done")  # type: ignore[arg-type]
            if ctx is not None:
                ctx.close()
            elif conn is not None:
                conn.close()

    def _step(self, ctx: HostContext, name: str, fn: StepFn) -> StepResult:
        ctx.commands = []
        t0 = time.monotonic()
        try:
            status, detail = fn(ctx)
        except Skip as exc:
            status, detail = "skipped", str(exc)
        except Exception as exc:
            status, detail = "failed", _why(exc)
        commands = list(ctx.commands) if status in ("changed", "failed") else []
        return StepResult(name, status, detail, commands, time.monotonic() - t0)  # type: ignore[arg-type]

    def _show(self, host: str, result: StepResult) -> None:
        """One step's line (and, under --check, its commands) printed as one block."""
        colour = COLOURS[result.status]
        label = "would change" if self.check and result.status == "changed" else result.status
        lines = [f"[{colour}]{label:>12}[/{colour}] {escape(host)}: {result.name}"
                 f"  [dim]{escape(result.detail)}[/dim]"]
        if self.check:
            for cmd in result.commands:
                for i, text in enumerate(cmd.splitlines()):
                    lines.append(("      $ " if i == 0 else "        ") + escape(text))
        with self._print_lock:
            self.console.print("\n".join(lines), soft_wrap=True)

    # --- after the hosts ----------------------------------------------------------------

    def _finish(self) -> None:
        if self.action == "up":
            self._save_state()
        else:
            self._after_down()

    def _save_state(self) -> None:
        try:
            from chainlab.labstate import load_state

            state = load_state(self.inv)
        except ChainlabError:
            state = LabState(lab=self.inv.lab)
        for host, report in self.report.hosts.items():
            ctx = self.contexts.get(host)
            if ctx is None or report.failed:
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
        path = save_state(self.inv, state)
        self.report.notes.append(f"lab state: {path}")

    def _after_down(self) -> None:
        all_hosts = not self.limited and not self.report.failed
        if all_hosts and self.inv.calico.driver == "calico":
            try:
                changed = calico_layer.remove_network(self.inv, self.shared.etcd(self.inv))
                self.report.notes.append(f"calico network {self.inv.calico.network}: "
                                         + ("removed" if changed else "already absent"))
            except Exception as exc:
                self.report.notes.append(f"calico network: NOT removed ({_why(exc)})")
                self.report.hosts.setdefault("(network)", HostReport("(network)")).error = _why(exc)
        if all_hosts:
            remove_state(self.inv)
            self.report.notes.append("lab state removed")
            return
        try:
            from chainlab.labstate import load_state

            state = load_state(self.inv)
        except ChainlabError:
            return
        for host, report in self.report.hosts.items():
            if not report.failed:
                state.hosts.pop(host, None)
                for name in [n for n, c in state.containers.items() if c.host == host]:
                    del state.containers[name]
        save_state(self.inv, state)


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0] if len(text) < 400 else text[:400] + "…"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=1) + "\n")


def provision(inv: Inventory, action: Action, *, check: bool = False, offline: bool = False,
              limit: tuple[str, ...] = (), json_path: Path | None = None,
              console: Console | None = None) -> RunReport:
    """lab up / lab down: run, print the recap, write --json; the report (failed → non-zero exit)."""
    console = console or Console(highlight=False)
    runner = Runner(inv, action, check=check, offline=offline, limit=limit, console=console)
    report = runner.run()
    print_recap(report, console)
    if json_path is not None:
        write_json(report, json_path)
    return report

