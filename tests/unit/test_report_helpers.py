"""Run directories built from fixture logs, as the scenario runner writes them (shared by report tests)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

from chainlab.render import diagram
from chainlab.render.jsonout import write_json
from chainlab.scenario import load_scenario
from chainlab.trace.expect import check_scenario
from chainlab.trace.pipeline import AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import load_rules

from ..conftest import FIXTURES, ROOT

LAB = FIXTURES / "lab"
SEED = FIXTURES / "seed-logs"
SCENARIO1 = ROOT / "scenarios" / "01-host-to-container.yaml"
SCENARIO4 = next((ROOT / "scenarios").glob("04-*.yaml"))

S1_LOGS = {"master": SEED / "scenario1-master.log"}
S4_LOGS = {"master": LAB / "scenario4-master.log", "slave1": LAB / "scenario4-slave1.log"}
S4_RULES = {"master": LAB / "scenario4-master.rules"}


def make_run(
    root: Path, scenario_path: Path, logs: dict[str, Path], rules: dict[str, Path] | None = None,
    stamp: str = "20250101-030000", passed: bool | None = None, duration: float = 1.25,
    svg: bool = True, mutate: Any = None,
) -> Path:
    """A complete run directory: scenario copy, logs, rules, probe output, diagram, analysis.json."""
    scenario = load_scenario(scenario_path)
    slug = scenario_path.stem.split("-", 1)[1]
    run_dir = root / f"{stamp}-{scenario.id:02d}-{slug}"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "rules").mkdir()
    (run_dir / "routes").mkdir()
    shutil.copy(scenario_path, run_dir / "scenario.yaml")
    for node, path in logs.items():
        shutil.copy(path, run_dir / "logs" / f"{node}.log")
        (run_dir / "routes" / f"{node}.txt").write_text("default via 172.16.91.2 dev ens33\n")
    for node, path in (rules or {}).items():
        shutil.copy(path, run_dir / "rules" / f"{node}.rules")
    (run_dir / "probe.txt").write_text("PING web1 (172.20.219.81) 56(84) bytes of data.\n--- 1 packets transmitted ---\n")

    tables = set(scenario.tables)
    options = AnalysisOptions(tables=tables, rules={n: load_rules(p) for n, p in (rules or {}).items()})
    result = analyze([LogSource(path, node) for node, path in logs.items()], options)
    checks = check_scenario(scenario, result.packets, set(result.nodes) | set(logs))
    buf = io.StringIO()
    write_json(buf, result.packets, lambda: result.flows, result.stats, tables, checks)
    doc = json.loads(buf.getvalue())
    ok = all(c.ok for c in checks)
    doc["run"] = {
        "scenario": {"id": scenario.id, "title": scenario.title, "description": scenario.description,
                     "outcome": scenario.outcome},
        "started": "2025-01-01T03:00:00+00:00", "duration_s": duration,
        "passed": ok if passed is None else passed, "lab": "local",
        "probe": {"command": "ping -c 1 172.20.219.81", "exit_code": 0 if scenario.outcome == "reachable" else 1},
    }
    if mutate is not None:
        mutate(doc)
    (run_dir / "analysis.json").write_text(json.dumps(doc, indent=1))
    if svg:
        model = diagram.build_model(result.packets, result.flows, tables)
        (run_dir / "diagram.svg").write_text(diagram.to_svg(model, f"scenario {scenario.id}: {scenario.title}"))
    return run_dir


def scenario4_run(root: Path, **kwargs: Any) -> Path:
    return make_run(root, SCENARIO4, S4_LOGS, S4_RULES, **kwargs)


def scenario1_run(root: Path, **kwargs: Any) -> Path:
    return make_run(root, SCENARIO1, S1_LOGS, **kwargs)


def test_helper_builds_a_complete_run_dir(tmp_path):
    run_dir = scenario4_run(tmp_path)
    assert run_dir.name == "20250101-030000-04-node-to-container"
    doc = json.loads((run_dir / "analysis.json").read_text())
    assert doc["expect"]["ok"] is True and doc["run"]["scenario"]["id"] == 4
    assert {"packets", "flows", "skipped_lines", "repaired_lines"} <= doc.keys()
    assert (run_dir / "diagram.svg").read_text().lstrip().startswith("<?xml")
