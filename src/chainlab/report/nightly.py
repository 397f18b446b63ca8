"""The nightly summary: `index.html`, `junit.xml`, `summary.json`, and what changed since last time."""

from __future__ import annotations

import io
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chainlab.calico.datastore import without_workload_names
from chainlab.files import write_atomic
from chainlab.report.html import environment, render_run_report
from chainlab.report.run import RunData, load_run, path_summaries
from chainlab.rundir import NIGHTLY_PREFIX, is_complete, nightly_lab_and_stamp

SUMMARY_VERSION = 1
NO_CHANGE = "no change"
NO_PREVIOUS = "no previous nightly"
CHANGED = "changed"
# What a change is made of, per node and direction (in the order changes are listed).
COMPARED = ("hooks", "verdicts", "drop_chain", "drop_rule", "chains", "rules", "ok")


@dataclass
class NightlySummary:
    out_dir: Path
    index: Path
    junit: Path
    summary_json: Path
    scenarios: list[dict[str, Any]] = field(default_factory=list)
    diff: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.scenarios) and all(s["passed"] for s in self.scenarios)

    @property
    def changed(self) -> bool:
        return self.diff.get("status") == CHANGED

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [s for s in self.scenarios if not s["passed"]]


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def scenario_summary(run: RunData, out_dir: Path) -> dict[str, Any]:
    report = run.run_dir / "report.html"
    return {
        "id": run.scenario_id,
        "title": run.title,
        "passed": run.passed,
        "duration_s": run.duration_s,
        "started": run.run.get("started"),
        "run_dir": run.run_dir.name,
        "report": _rel(report, out_dir) if report.is_file() else None,
        "failure": run.failure_message() or None,
        "paths": path_summaries(run),
    }


# --- diff -------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "PASS" if value else "FAIL"
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return "; ".join(" → ".join(v) or "(nothing)" for v in value) or "(no packet)"
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


def _result(s: dict[str, Any]) -> str:
    """PASS, FAIL, or ERROR (the scenario could not run: a host unreachable, a container gone)."""
    return "ERROR" if s.get("error") else "PASS" if s.get("passed") else "FAIL"


def _name(s: dict[str, Any]) -> str:
    sid = s.get("id")
    return f"scenario {sid} ({s.get('title', '')})"


def _change(s: dict[str, Any], node: str | None, direction: str | None, what: str, before: Any, after: Any) -> dict[str, Any]:
    where = f" {node} {direction}" if node else ""
    if what == "scenario":
        message = f"{_name(s)}: " + ("not in the previous nightly" if before == "(not run)" else "not run this time")
        return {"scenario": s.get("id"), "title": s.get("title"), "node": None, "direction": None,
                "what": what, "before": before, "after": after, "message": message}
    if what in ("chains", "rules") and isinstance(before, list) and isinstance(after, list):
        gone = [x for x in before if x not in after]
        new = [x for x in after if x not in before]
        parts = ([f"no longer {', '.join(gone)}"] if gone else []) + ([f"now {', '.join(new)}"] if new else [])
        text = "; ".join(parts) or "order changed"
    else:
        text = f"was {_show(before)}, now {_show(after)}"
    label = {
        "ok": "check", "passed": "result", "hooks": "path", "verdicts": "verdict", "drop_chain": "drop chain",
        "drop_rule": "drop rule",
    }.get(what, what)
    return {
        "scenario": s.get("id"), "title": s.get("title"), "node": node, "direction": direction,
        "what": what, "before": before, "after": after, "message": f"{_name(s)}{where}: {label} {text}",
    }


def _stable(value: Any) -> Any:
    """A compared value as it reads across a container's restart (see without_workload_names)."""
    if isinstance(value, str):
        return without_workload_names(value)
    if isinstance(value, list):
        return [_stable(item) for item in value]
    return value


def diff_summaries(previous: list[dict[str, Any]] | None, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every path, verdict, drop, chain, rule or result that differs, scenario by scenario."""
    if previous is None:
        return []
    before = {str(s.get("id")): s for s in previous}
    after = {str(s.get("id")): s for s in current}
    changes: list[dict[str, Any]] = []
    for sid, cur in after.items():
        old = before.get(sid)
        if old is None:
            changes.append(_change(cur, None, None, "scenario", "(not run)", "run"))
            continue
        if _result(old) != _result(cur):
            changes.append(_change(cur, None, None, "passed", _result(old), _result(cur)))
        if "ERROR" in (_result(old), _result(cur)):
            continue  # a run that could not run has no paths: its result says it all
        old_paths = {(p.get("node"), p.get("direction")): p for p in old.get("paths") or []}
        cur_paths = {(p.get("node"), p.get("direction")): p for p in cur.get("paths") or []}
        for key in list(cur_paths) + [k for k in old_paths if k not in cur_paths]:
            a, b = old_paths.get(key), cur_paths.get(key)
            node, direction = key
            if a is None or b is None:
                changes.append(_change(cur, node, direction, "hooks",
                                       (a or {}).get("hooks") if a else "(not seen)", (b or {}).get("hooks") if b else "(not seen)"))
                continue
            for what in COMPARED:
                if _stable(a.get(what)) != _stable(b.get(what)):
                    changes.append(_change(cur, node, direction, what, a.get(what), b.get(what)))
    for sid, old in before.items():
        if sid not in after:
            changes.append(_change(old, None, None, "scenario", "run", "(not run)"))
    return changes


def load_summary(nightly_dir: Path | None) -> dict[str, Any] | None:
    if nightly_dir is None:
        return None
    try:
        doc = json.loads((nightly_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("scenarios"), list) else None


def find_baseline(runs_root: Path, current: Path, lab: str | None = None) -> tuple[Path | None, list[str]]:
    """The newest complete nightly of `lab` older than `current`, and the partial ones
    (killed or interrupted: PARTIAL still there) newer than it, which are skipped.

    Nightly names carry their time (`nightly-<lab>-YYYYmmdd-HHMMSS.mmm`, older ones
    `nightly-YYYYmmdd[-HHMMSS]`), so that is the order. With `lab`, only nightlies of that
    lab count: one `runs/` may serve several labs, and a Docker-bridge lab's nightly is no
    baseline for a Calico lab's. A complete nightly has a summary.json and no PARTIAL.
    """
    runs_root, current = Path(runs_root), Path(current)
    now = _nightly_key(current.name)
    skipped: list[str] = []
    try:
        dirs = sorted((d for d in runs_root.iterdir()
                       if d.name.startswith(NIGHTLY_PREFIX) and _nightly_key(d.name) < now
                       and d.is_dir() and d.resolve() != current.resolve()),
                      key=lambda d: _nightly_key(d.name), reverse=True)
    except OSError:
        return None, skipped
    for d in dirs:
        if not is_complete(d):
            if lab is None or _name_lab(d.name) == lab:
                skipped.append(d.name)
            continue
        if (d / "summary.json").is_file() and (lab is None or _summary_lab(d) == lab):
            return d, skipped
    return None, skipped


def _nightly_key(name: str) -> str:
    parsed = nightly_lab_and_stamp(name)
    return parsed[1] if parsed else name[len(NIGHTLY_PREFIX):]


def _name_lab(name: str) -> str | None:
    parsed = nightly_lab_and_stamp(name)
    return parsed[0] if parsed else None


def _summary_lab(directory: Path) -> str | None:
    try:
        doc = json.loads((directory / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return doc.get("lab") if isinstance(doc, dict) else None


# --- outputs ------------------------------------------------------------------------------


def write_junit(path: Path, scenarios: list[dict[str, Any]], timestamp: str) -> None:
    failures = sum(1 for s in scenarios if not s["passed"] and not s.get("error"))
    errors = sum(1 for s in scenarios if s.get("error"))
    total_time = sum(s["duration_s"] or 0.0 for s in scenarios)
    suites = ET.Element("testsuites", name="chainlab nightly", tests=str(len(scenarios)),
                        failures=str(failures), errors=str(errors), time=f"{total_time:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="chainlab.scenarios", tests=str(len(scenarios)),
                          failures=str(failures), errors=str(errors), skipped="0",
                          time=f"{total_time:.3f}", timestamp=timestamp)
    for s in scenarios:
        sid = s["id"]
        name = f"{sid:02d} {s['title']}" if isinstance(sid, int) else f"{sid} {s['title']}"
        case = ET.SubElement(suite, "testcase", classname="chainlab.scenarios", name=_xml(name),
                             time=f"{(s['duration_s'] or 0.0):.3f}")
        if s.get("error"):
            ET.SubElement(case, "error", message=_xml(s["error"]), type="RunError").text = _xml(s["error"])
        elif not s["passed"]:
            message = s["failure"] or "failed"
            detail = [message, ""] + [
                f"{p['node']} {p['direction']}: expected {_show(p['expected'])}, saw {_show(p['hooks'])}"
                f" ({_show(p['verdicts'])})" + (f"; dropped in {p['drop_chain']}" if p["drop_chain"] else "")
                for p in s["paths"]
            ]
            ET.SubElement(case, "failure", message=_xml(message.replace("\n", "; ")),
                          type="ExpectationFailed").text = _xml("\n".join(detail))
        if s.get("report"):
            ET.SubElement(case, "system-out").text = f"report: {s['report']}"
    ET.indent(suites)
    buffer = io.BytesIO()
    ET.ElementTree(suites).write(buffer, encoding="utf-8", xml_declaration=True)
    write_atomic(path, buffer.getvalue())


XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    """Text XML 1.0 can hold: control characters (from logs, rule comments) become '?'."""
    return XML_INVALID.sub("?", text)


def _scenario_entry(run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """One scenario of the summary; a run whose files make the report code fail is an
    error entry (with the exception), never the end of the summary."""
    run = load_run(run_dir)
    try:
        if run.error is None and not (run.run_dir / "report.html").is_file():
            render_run_report(run.run_dir)
        summary = scenario_summary(run, out_dir)
        summary["error"] = run.error
    except Exception as exc:
        error = f"cannot summarise {run_dir.name}: {type(exc).__name__}: {exc}"
        summary = {"id": run.scenario_id, "title": run.title, "passed": False, "duration_s": None, "started": None,
                   "run_dir": run_dir.name, "report": None, "failure": error, "paths": [], "error": error}
    return summary


def write_nightly(out_dir: Path, run_dirs: list[Path], previous: Path | None,
                  lab: str | None = None, skipped_partial: Sequence[str] = (),
                  hosts: str | None = None) -> NightlySummary:
    """Summarise the runs into `out_dir` (index.html, junit.xml, summary.json), diffed against
    `previous` (a complete nightly; `skipped_partial` names newer partial ones not used).
    `hosts` says what the lab's hosts are (the provider's description, e.g. VMs under TCG).

    A run without `report.html` gets one; a run without a readable `analysis.json` counts as
    an error (JUnit `<error>`), never stops the summary. Files are written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    scenarios = [_scenario_entry(Path(run_dir), out_dir) for run_dir in run_dirs]

    prev_doc = load_summary(previous)
    changes = diff_summaries(prev_doc["scenarios"] if prev_doc else None, scenarios)
    if prev_doc is None:
        status = NO_PREVIOUS
    else:
        status = CHANGED if changes else NO_CHANGE
    diff = {
        "status": status,
        "previous": previous.name if previous is not None and prev_doc is not None else None,
        "skipped_partial": list(skipped_partial),
        "changes": changes,
        "text": [c["message"] for c in changes] or [status],
    }
    doc = {
        "version": SUMMARY_VERSION,
        "lab": lab,
        "generated": generated,
        "passed": bool(scenarios) and all(s["passed"] for s in scenarios),
        "diff": diff,
        "hosts": hosts,
        "scenarios": scenarios,
    }
    summary = NightlySummary(out_dir, out_dir / "index.html", out_dir / "junit.xml", out_dir / "summary.json", scenarios, diff)
    write_atomic(summary.summary_json, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    write_junit(summary.junit, scenarios, generated)
    page = environment().get_template("nightly.html.j2").render(
        scenarios=scenarios, diff=diff, generated=generated, passed=summary.passed, name=out_dir.name, hosts=hosts,
        total_time=sum(s["duration_s"] or 0.0 for s in scenarios),
    )
    write_atomic(summary.index, page)
    return summary
