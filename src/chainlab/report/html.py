"""`report.html` of one scenario run: self-contained (inline CSS and SVG, no scripts, no network)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from chainlab.files import write_atomic
from chainlab.report.run import DIRECTIONS, RunData, load_run
from chainlab.trace.contract import PacketRecord, StepRecord

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
PROBE_TEXT_LIMIT = 20_000
EVIDENCE = ("scenario.yaml", "probe.txt", "analysis.json", "diagram.svg")
EVIDENCE_DIRS = ("logs", "rules", "routes")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("chainlab.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hooks"] = lambda hooks: " → ".join(hooks) if hooks else "(none)"
    env.filters["seconds"] = lambda s: "" if s is None else f"{s:.2f} s"
    return env


#: What Graphviz draws with; any other element (script, foreignObject, style, animation)
#: goes with its content, any other attribute (event handlers, style) goes too.
SVG_ELEMENTS = frozenset(
    "svg g title desc defs use a path polygon polyline ellipse circle rect line text tspan".split())
SVG_ATTRIBUTES = frozenset(
    "id class transform viewBox width height version preserveAspectRatio x y x1 y1 x2 y2 cx cy r rx ry "
    "points d fill stroke stroke-width stroke-dasharray opacity fill-opacity stroke-opacity "
    "font-family font-size font-weight font-style text-anchor href".split())


def inline_svg(text: str) -> Markup | None:
    """The diagram as an inline `<svg>` element, or None when it is not a well-formed SVG.

    Graphviz output is parsed and written back through an allowlist: the XML declaration,
    DOCTYPE and comments go, and so does anything active or external (only drawing
    elements and presentation attributes stay; links only within the document), so the
    page stays self-contained and inert.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    if root.tag != f"{{{SVG_NS}}}svg":
        return None
    for parent in list(root.iter()):
        for child in list(parent):
            if not isinstance(child.tag, str) or not _allowed_element(child.tag):
                parent.remove(child)
    for element in root.iter():
        for name in list(element.attrib):
            local = name.rsplit("}", 1)[-1]
            if local not in SVG_ATTRIBUTES or (local == "href" and not element.attrib[name].startswith("#")):
                del element.attrib[name]
    root.set("role", "img")
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    return Markup(ET.tostring(root, encoding="unicode"))


def _allowed_element(tag: str) -> bool:
    namespace, _, local = tag.rpartition("}")
    return namespace == f"{{{SVG_NS}" and local in SVG_ELEMENTS


def _rows(p: PacketRecord) -> list[dict[str, Any]]:
    steps = p.steps
    last = p.last_step
    dropped = p.verdict == "dropped" and last is not None
    rows = []
    previous_hook = None
    marked = False
    for i, step in enumerate(steps, 1):
        is_drop = dropped and not marked and i == len(steps) and step.same_event(last)
        marked = marked or is_drop
        rows.append(_row(i, step, is_drop, step.hook != previous_hook))
        previous_hook = step.hook
    if dropped and not marked and last is not None:
        rows.append(_row(len(steps) + 1, last, True, True, note="outside the selected tables"))
    return rows


def _row(n: int, step: StepRecord, is_drop: bool, hook_start: bool, note: str = "") -> dict[str, Any]:
    return {
        "n": n, "hook": step.hook or "?", "chain": step.name, "step": step.label(),
        "mark": step.mark or "", "rule": step.rule or "", "drop": is_drop,
        "hook_start": hook_start, "note": note, "line": step.line,
    }


def _walk_key(p: PacketRecord) -> tuple[object, ...]:
    steps = tuple((s.hook, s.table, s.chain, s.kind, s.position, s.handle, s.verdict, s.rule, s.mark) for s in p.steps)
    return (p.src, p.dst, p.protocol, tuple(p.hooks), p.verdict, p.reason, steps)


#: NAT notes shown per walk; the rest are counted.
NAT_NOTES = 3


def walk_groups(run: RunData) -> list[dict[str, Any]]:
    """Per node and direction (in log order), the distinct chain walks with their packets."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for p in run.packets:
        key = (p.node, p.direction)
        group = groups.setdefault(key, {"node": key[0], "direction": key[1], "walks": [], "index": {}})
        wkey = _walk_key(p)
        walk = group["index"].get(wkey)
        if walk is None:
            walk = {
                "title": p.title(), "hooks": list(p.hooks), "verdict": p.verdict, "reason": p.reason, "route": p.route,
                "rows": _rows(p), "ip_ids": [], "repaired": 0, "new_connection": p.new_connection, "nat": [],
                "nat_more": 0,
            }
            group["index"][wkey] = walk
            group["walks"].append(walk)
        walk["ip_ids"].append(p.ip_id)
        walk["repaired"] += p.repaired_lines
        for note in p.nat:  # the walk's packets' NAT, each note once (ports differ by connection)
            if note in walk["nat"]:
                continue
            if len(walk["nat"]) < NAT_NOTES:
                walk["nat"].append(note)
            else:
                walk["nat_more"] += 1
    order = {d: i for i, d in enumerate(DIRECTIONS)}
    out = list(groups.values())
    nodes = list(dict.fromkeys(g["node"] for g in out))
    out.sort(key=lambda g: (nodes.index(g["node"]), order.get(g["direction"], len(order))))
    for g in out:
        del g["index"]
    return out


def drops(run: RunData) -> list[dict[str, Any]]:
    """Every distinct drop point: node, direction, chain, step and rule text, reason."""
    out: list[dict[str, Any]] = []
    for p in run.packets:
        last = p.last_step
        if p.verdict != "dropped" or last is None:
            continue
        item = {"node": p.node, "direction": p.direction, "chain": last.name, "step": last.label(),
                "rule": last.rule or "", "reason": p.reason}
        if item not in out:
            out.append(item)
    return out


def evidence(run_dir: Path) -> list[dict[str, Any]]:
    """Files of the run, as relative links (they open from the report's directory)."""
    files = [run_dir / name for name in EVIDENCE]
    for sub in EVIDENCE_DIRS:
        if (run_dir / sub).is_dir():
            files += sorted(p for p in (run_dir / sub).iterdir() if p.is_file())
    return [
        {"href": p.relative_to(run_dir).as_posix(), "size": p.stat().st_size}
        for p in files if p.is_file()
    ]


def _probe_output(run_dir: Path) -> str | None:
    try:
        text = (run_dir / "probe.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text if len(text) <= PROBE_TEXT_LIMIT else text[:PROBE_TEXT_LIMIT] + "\n… (cut; see probe.txt)"


def report_context(run: RunData) -> dict[str, Any]:
    document = run.document
    try:
        svg = inline_svg((run.run_dir / "diagram.svg").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        svg = None
    given = run.run.get("probe")
    probe = given if isinstance(given, dict) else {}
    groups = walk_groups(run)
    packets = run.packets
    kind = "probe" if run.run.get("kind") == "probe" else "scenario"
    if kind == "probe":
        badge, heading = ("REACHABLE" if run.passed else "UNREACHABLE"), f"Probe · {run.title}"
        failure = str(run.run.get("decision") or "") if not run.passed else ""
    else:
        badge, heading, failure = ("PASS" if run.passed else "FAIL"), f"Scenario {run.scenario_id} · {run.title}", run.failure_message()
    return {
        "run": run,
        "kind": kind,
        "badge": badge,
        "heading": heading,
        "scenario_id": run.scenario_id,
        "label": run.label,
        "title": run.title,
        "description": run.scenario.get("description") or "",
        "outcome": run.scenario.get("outcome") or "",
        "passed": run.passed,
        "error": run.error,
        "failure": failure,
        "started": run.run.get("started") or "",
        "duration": run.duration_s,
        "lab": run.run.get("lab") or "",
        "probe": {"command": probe.get("command") or "", "exit_code": probe.get("exit_code")},
        "notes": run.notes,
        "probe_output": _probe_output(run.run_dir),
        "checks": run.checks,
        "drops": drops(run),
        "groups": groups,
        "flows": run.flows,
        "svg": svg,
        "counts": {
            "lines": document.counts.get("lines", 0), "trace_records": document.counts.get("trace_records", 0),
            "skipped": document.counts.get("skipped_lines", 0), "repaired": document.counts.get("repaired_lines", 0),
            "ignored": document.counts.get("ignored_lines", 0), "packets": len(packets),
            "others": probe.get("other_packets") if isinstance(probe.get("other_packets"), int) else None,
        },
        "formats": document.formats,
        "tables": document.tables,
        "evidence": evidence(run.run_dir),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render_run_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from `analysis.json` and `diagram.svg`; return its path."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    page = environment().get_template("report.html.j2").render(report_context(run))
    return write_atomic(run_dir / "report.html", page)

