"""All scenarios of a lab in one go, with a summary and the difference from last time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from chainlab.inventory import Inventory
from chainlab.providers import provider_for
from chainlab.report.nightly import NightlySummary, find_previous_nightly, write_nightly
from chainlab.run.runner import RunFailed, RunResult, run_scenario
from chainlab.scenario import load_scenario


def scenario_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("[0-9][0-9]-*.yaml"))


def run_nightly(inv: Inventory, scenarios_dir: Path, runs_root: Path,
                log: Callable[[str], None] = print) -> tuple[NightlySummary, list[RunResult], list[RunFailed]]:
    """Every scenario that fits the lab's network; `runs/nightly-<time>/` gets the summary.

    A scenario that fails to run (host unreachable, container gone) is recorded as an error
    with its run dir (`error.txt`) and the others still run; errors before any run dir
    exists (no lab state) stop the nightly.
    """
    out_dir = runs_root / f"nightly-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir.mkdir(parents=True)
    results: list[RunResult] = []
    failed: list[RunFailed] = []
    for path in scenario_files(scenarios_dir):
        scenario = load_scenario(path)
        if scenario.network != inv.calico.driver:
            log(f"scenario {scenario.id}: skipped, needs a {scenario.network} lab")
            continue
        log(f"scenario {scenario.id}: {scenario.title}")
        try:
            results.append(run_scenario(inv, path, out_dir, log))
        except RunFailed as exc:
            log(f"scenario {scenario.id}: error: {exc}")
            failed.append(exc)
    previous = find_previous_nightly(runs_root, out_dir, inv.lab)
    summary = write_nightly(out_dir, sorted([r.run_dir for r in results] + [f.run_dir for f in failed]),
                            previous, inv.lab, provider_for(inv).describe())
    return summary, results, failed
