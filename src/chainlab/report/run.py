"""A run directory as reports see it: `analysis.json` (with its `run` key) and the files beside it.

analysis.json is read back through the analysis contract (trace/contract.py); only the
`run` key, which the scenario runner adds, is read here.

Layout (written by the scenario runner):

    runs/<lab>-<YYYYmmdd-HHMMSS.mmm>-<NN>-<slug>/   (name: chainlab.rundir)
      scenario.yaml  logs/<node>.log  rules/<node>.rules  routes/<node>.txt
      probe.txt  diagram.svg  analysis.json  report.html (ours)
      error.txt (a run that stopped: why)  PARTIAL (until everything is written)

A run that crashed may lack files; loading never raises for that, it records `error`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chainlab.rundir import parse_run_name
from chainlab.trace.contract import AnalysisDocument, FlowRecord, PacketRecord
from chainlab.trace.expect import PROBE_PROTOCOL, Check

DIRECTIONS = ("request", "reply")


@dataclass
class RunData:
    run_dir: Path
    error: str | None = None
    protocol: str | None = None
    document: AnalysisDocument = field(default_factory=AnalysisDocument)
    #: analysis.json's `run` key: what the runner recorded (scenario, probe, hosts...)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def scenario(self) -> dict[str, Any]:
        value = self.run.get("scenario")
        return value if isinstance(value, dict) else {}

    @property
    def scenario_id(self) -> int | str:
        value = self.scenario.get("id")
        if isinstance(value, (int, str)) and value != "":
            return value
        name = parse_run_name(self.run_dir.name)
        return name.scenario_id if name else self.run_dir.name

    @property
    def title(self) -> str:
        value = self.scenario.get("title")
        if value:
            return str(value)
        name = parse_run_name(self.run_dir.name)
        return name.slug.replace("-", " ") if name else self.run_dir.name

    @property
    def label(self) -> str:
        sid = self.scenario_id
        return f"{sid:02d} {self.title}" if isinstance(sid, int) else f"{sid} {self.title}"

    @property
    def checks(self) -> list[Check]:
        return self.document.checks or []

    @property
    def passed(self) -> bool:
        if self.error:
            return False
        value = self.run.get("passed")
        if isinstance(value, bool):
            return value
        return bool(self.document.expect_ok and self.checks)

    @property
    def notes(self) -> list[str]:
        """What the run noted besides the result (e.g. a host it did not need did not answer)."""
        value = self.run.get("notes")
        return [str(n) for n in value] if isinstance(value, list) else []

    @property
    def duration_s(self) -> float | None:
        value = self.run.get("duration_s")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def packets(self) -> list[PacketRecord]:
        return self.document.packets

    @property
    def flows(self) -> list[FlowRecord]:
        return self.document.flows

    def failing_checks(self) -> list[str]:
        return [f"{c.node} {c.direction}: {c.message}" for c in self.checks if not c.ok]

    def failure_message(self) -> str:
        """Why the run failed, in a line per reason ('' when it passed)."""
        if self.passed:
            return ""
        if self.error:
            return self.error
        reasons = self.failing_checks()
        probe = self.run.get("probe")
        if not self.checks:
            reasons.append("no expectation was checked")
        if not reasons:
            code = probe.get("exit_code") if isinstance(probe, dict) else None
            reasons.append(f"run did not pass (probe exit code {code})" if code is not None else "run did not pass")
        return "\n".join(reasons)

    def probe_packets(self) -> list[PacketRecord]:
        """The packets expectations speak of (as `check_scenario` picks them)."""
        if self.protocol is None:
            return self.packets
        return [p for p in self.packets if p.is_probe(self.protocol)]


def _protocol(run_dir: Path) -> str | None:
    try:
        doc = yaml.safe_load((run_dir / "scenario.yaml").read_text(encoding="utf-8"))
        return PROBE_PROTOCOL.get(doc["probe"]["kind"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    data = RunData(run_dir, protocol=_protocol(run_dir))
    path = run_dir / "analysis.json"
    why = run_dir / "error.txt"
    if why.is_file():  # the run stopped, whatever else it wrote before
        data.error = why.read_text(encoding="utf-8", errors="replace").strip() or f"error in {run_dir}"
        return data
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data.error = f"no analysis.json in {run_dir}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        data.error = f"unreadable analysis.json in {run_dir}: {exc}"
    else:
        if isinstance(doc, dict):
            data.document = AnalysisDocument.from_json(doc)
            run = doc.get("run")
            data.run = run if isinstance(run, dict) else {}
        else:
            data.error = f"analysis.json in {run_dir} is not a JSON object"
    return data


def path_summaries(run: RunData) -> list[dict[str, Any]]:
    """Per node and direction: hooks seen, verdicts, the drop, chains and rules met.

    The keys come from the scenario's checks first, then any other node/direction a probe
    packet was seen in. Everything is deterministic, so two summaries compare by value.
    """
    packets = run.probe_packets()
    keys: list[tuple[str, str]] = []
    checks: dict[tuple[str, str], Check] = {}
    for given in run.checks:
        key = (given.node, given.direction)
        checks[key] = given
        if key not in keys:
            keys.append(key)
    for p in packets:
        key = (p.node, p.direction)
        if key not in keys:
            keys.append(key)
    out = []
    for node, direction in keys:
        mine = [p for p in packets if p.node == node and p.direction == direction]
        check = checks.get((node, direction))
        if check is not None:
            paths = [list(x) for x in check.actual]
        else:
            paths = [list(x) for x in dict.fromkeys(tuple(p.hooks) for p in mine)]
        chains: list[str] = []
        rules: list[str] = []
        drops: list[str] = []
        drop_rules: list[str] = []
        for p in mine:
            for step in p.steps:
                if step.name not in chains:
                    chains.append(step.name)
                if step.rule:
                    text = f"{step.name} {step.label()}: {step.rule}"
                    if text not in rules:
                        rules.append(text)
            last = p.last_step
            if p.verdict == "dropped" and last is not None:
                if last.name not in drops:
                    drops.append(last.name)
                text = f"{last.name} {last.label()}" + (f": {last.rule}" if last.rule else "")
                if text not in drop_rules:
                    drop_rules.append(text)
        out.append({
            "node": node,
            "direction": direction,
            "expected": list(check.expected) if check else None,
            "ok": check.ok if check else None,
            "message": check.message if check else "",
            "packets": len(mine),
            "hooks": paths,
            "verdicts": sorted({p.verdict for p in mine}),
            "drop_chain": ", ".join(drops) or None,
            "drop_rule": "; ".join(drop_rules) or None,
            "chains": chains,
            "rules": rules,
        })
    return out
