"""A run directory as reports see it: `analysis.json` (with its `run` key) and the files beside it.

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
from chainlab.trace.expect import PROBE_PROTOCOL

DIRECTIONS = ("request", "reply")


@dataclass
class RunData:
    run_dir: Path
    analysis: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    protocol: str | None = None

    @property
    def run(self) -> dict[str, Any]:
        value = self.analysis.get("run")
        return value if isinstance(value, dict) else {}

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
    def checks(self) -> list[dict[str, Any]]:
        expect = self.analysis.get("expect")
        checks = expect.get("checks") if isinstance(expect, dict) else None
        return [c for c in checks if isinstance(c, dict)] if isinstance(checks, list) else []

    @property
    def passed(self) -> bool:
        if self.error:
            return False
        value = self.run.get("passed")
        if isinstance(value, bool):
            return value
        expect = self.analysis.get("expect")
        return bool(isinstance(expect, dict) and expect.get("ok") and self.checks)

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
    def packets(self) -> list[dict[str, Any]]:
        value = self.analysis.get("packets")
        return [p for p in value if isinstance(p, dict)] if isinstance(value, list) else []

    @property
    def flows(self) -> list[dict[str, Any]]:
        value = self.analysis.get("flows")
        return [f for f in value if isinstance(f, dict)] if isinstance(value, list) else []

    def failing_checks(self) -> list[str]:
        return [f"{c.get('node')} {c.get('direction')}: {c.get('message', '')}" for c in self.checks if not c.get("ok")]

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

    def probe_packets(self) -> list[dict[str, Any]]:
        """The packets expectations speak of (as `check_scenario` picks them)."""
        if self.protocol is None:
            return self.packets
        return [
            p for p in self.packets
            if p.get("protocol") == self.protocol and (self.protocol != "tcp" or "SYN" in (p.get("tcp_flags") or []))
        ]


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
            data.analysis = doc
        else:
            data.error = f"analysis.json in {run_dir} is not a JSON object"
    return data


def step_label(step: dict[str, Any]) -> str:
    """`rule 4`, `policy 3`, `return 1`, `rule handle 7`, with `→ VERDICT` when known."""
    text = str(step.get("kind", "?"))
    if step.get("position") is not None:
        text += f" {step['position']}"
    elif step.get("handle"):
        text += f" handle {step['handle']}"
    if step.get("verdict"):
        text += f" → {step['verdict']}"
    return text


def chain_name(step: dict[str, Any]) -> str:
    return f"{step.get('table', '?')}:{step.get('chain', '?')}"


def same_step(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if not a or not b:
        return False
    keys = ("table", "chain", "kind", "position", "line", "handle")
    return all(a.get(k) == b.get(k) for k in keys)


def path_summaries(run: RunData) -> list[dict[str, Any]]:
    """Per node and direction: hooks seen, verdicts, the drop, chains and rules met.

    The keys come from the scenario's checks first, then any other node/direction a probe
    packet was seen in. Everything is deterministic, so two summaries compare by value.
    """
    packets = run.probe_packets()
    keys: list[tuple[str, str]] = []
    checks: dict[tuple[str, str], dict[str, Any]] = {}
    for check in run.checks:
        key = (str(check.get("node")), str(check.get("direction")))
        checks[key] = check
        if key not in keys:
            keys.append(key)
    for p in packets:
        key = (str(p.get("node")), str(p.get("direction")))
        if key not in keys:
            keys.append(key)
    out = []
    for node, direction in keys:
        mine = [p for p in packets if p.get("node") == node and p.get("direction") == direction]
        check = checks.get((node, direction))
        if check is not None and isinstance(check.get("actual"), list):
            paths = [list(x) for x in check["actual"]]
        else:
            paths = [list(x) for x in dict.fromkeys(tuple(p.get("hooks") or []) for p in mine)]
        chains: list[str] = []
        rules: list[str] = []
        drops: list[str] = []
        drop_rules: list[str] = []
        for p in mine:
            for step in p.get("steps") or []:
                name = chain_name(step)
                if name not in chains:
                    chains.append(name)
                if step.get("rule"):
                    text = f"{name} {step_label(step)}: {step['rule']}"
                    if text not in rules:
                        rules.append(text)
            last = p.get("last_step")
            if p.get("verdict") == "dropped" and isinstance(last, dict):
                if chain_name(last) not in drops:
                    drops.append(chain_name(last))
                text = f"{chain_name(last)} {step_label(last)}" + (f": {last['rule']}" if last.get("rule") else "")
                if text not in drop_rules:
                    drop_rules.append(text)
        out.append({
            "node": node,
            "direction": direction,
            "expected": list(check.get("expected") or []) if check else None,
            "ok": bool(check.get("ok")) if check else None,
            "message": str(check.get("message", "")) if check else "",
            "packets": len(mine),
            "hooks": paths,
            "verdicts": sorted({str(p.get("verdict")) for p in mine}),
            "drop_chain": ", ".join(drops) or None,
            "drop_rule": "; ".join(drop_rules) or None,
            "chains": chains,
            "rules": rules,
        })
    return out
