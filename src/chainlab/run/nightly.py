"""All scenarios of a lab in one go, with a summary and the difference from last time."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

from chainlab.errors import ChainlabError
from chainlab.files import write_atomic
from chainlab.inventory import Inventory
from chainlab.labstate import LabState, load_state
from chainlab.lock import lab_lock
from chainlab.providers import provider_for
from chainlab.report.nightly import NightlySummary, find_baseline, write_nightly
from chainlab.run.deadline import Interrupted, signals_interrupt
from chainlab.run.runner import RunFailed, RunResult, check_names, check_traced, run_locked
from chainlab.rundir import NIGHTLY_PREFIX, check_runs_root, create_run_dir, mark_complete, slug
from chainlab.scenario import load_scenario

Log = Callable[[str], object]


def scenario_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("[0-9][0-9]-*.yaml"))


def run_nightly(inv: Inventory, scenarios_dir: Path, runs_root: Path,
                log: Log = print) -> tuple[NightlySummary, list[RunResult], list[RunFailed]]:
    """Every scenario that fits the lab's network; `runs/nightly-<lab>-<time>/` gets the summary.

    Before anything runs: the lab state, the runs dir (writable, space) and the lab lock,
    held for the whole nightly. Then whatever one scenario raises (a host unreachable, a
    container gone, a file that does not load, a bug) is that scenario's error, recorded in
    its run dir (`error.txt`), and the others still run. index.html, junit.xml and
    summary.json are always written; the nightly dir is marked complete after them. On
    SIGTERM/SIGINT the summary of what ran is written, the dir stays PARTIAL and the
    interrupt goes on up.
    """
    paths = scenario_files(scenarios_dir)
    numbers = [p.name[:2] for p in paths]
    if twice := sorted({n for n in numbers if numbers.count(n) > 1}):
        raise ChainlabError(f"{scenarios_dir}: more than one file for scenario(s) {', '.join(twice)}"
                            " (one NN-*.yaml each, as run N needs)")
    state = load_state(inv)
    check_runs_root(runs_root)
    with signals_interrupt(), lab_lock(inv):
        out_dir = create_run_dir(runs_root, f"{NIGHTLY_PREFIX}{inv.lab}")
        results: list[RunResult] = []
        failed: list[RunFailed] = []
        unanswered: set[str] = set()
        try:
            for path in paths:
                outcome = _one(inv, path, state, out_dir, log, unanswered)
                if isinstance(outcome, RunResult):
                    results.append(outcome)
                elif isinstance(outcome, RunFailed):
                    failed.append(outcome)
        except Interrupted as exc:
            try:
                _summarise(inv, runs_root, out_dir, results, failed, exc.run_dir)
            except Exception:
                pass  # what ran is in its run dirs; the summary is a convenience here
            raise
        summary = _summarise(inv, runs_root, out_dir, results, failed)
        mark_complete(out_dir)
    return summary, results, failed


def _summarise(inv: Inventory, runs_root: Path, out_dir: Path, results: list[RunResult],
               failed: list[RunFailed], interrupted: Path | None = None) -> NightlySummary:
    previous, skipped = find_baseline(runs_root, out_dir, inv.lab)
    run_dirs = [r.run_dir for r in results] + [f.run_dir for f in failed] + ([interrupted] if interrupted else [])
    return write_nightly(out_dir, sorted(run_dirs), previous, inv.lab, skipped, provider_for(inv).describe())


def _one(inv: Inventory, path: Path, state: LabState, out_dir: Path, log: Log,
         unanswered: set[str]) -> RunResult | RunFailed | None:
    """Scenario `path`'s result, its error, or None when it does not fit the lab."""
    try:
        scenario = load_scenario(path)
    except ChainlabError as exc:
        return _error_without_run(inv, path, out_dir, str(exc), log)
    except Exception as exc:
        return _error_without_run(inv, path, out_dir, f"unexpected error: {type(exc).__name__}: {exc}\n\n"
                                  f"{traceback.format_exc()}", log)
    if scenario.network != inv.calico.driver:
        log(f"scenario {scenario.id}: skipped, needs a {scenario.network} lab")
        return None
    try:
        check_names(inv, scenario)
        check_traced(inv, scenario.probe_port, f"scenario {scenario.id}: probe port")
    except ChainlabError as exc:
        return _error_without_run(inv, path, out_dir, str(exc), log)
    log(f"scenario {scenario.id}: {scenario.title}")
    try:
        return run_locked(inv, path, scenario, state, out_dir, log, unanswered=unanswered)
    except RunFailed as exc:
        log(f"scenario {scenario.id}: error: {exc}")
        return exc
    except Exception as exc:  # before its run dir existed (e.g. the disk is full)
        log(f"scenario {scenario.id}: error, no run dir: {exc}")
        return None


def _error_without_run(inv: Inventory, path: Path, out_dir: Path, message: str, log: Log) -> RunFailed | None:
    """A run dir holding only error.txt, for a scenario file that did not load: named
    after the file (`NN-title.yaml`), so the summary lists it under its number."""
    number, _, rest = path.stem.partition("-")
    log(f"scenario file {path.name}: error: {message.splitlines()[0] if message else ''}")
    try:
        run_dir = create_run_dir(out_dir, inv.lab, f"-{number}-{slug(rest)}")
        write_atomic(run_dir / "error.txt", message.rstrip("\n") + "\n")
        mark_complete(run_dir)
    except ChainlabError as exc:
        log(f"scenario file {path.name}: {exc}")
        return None
    return RunFailed(message.splitlines()[0], run_dir)
