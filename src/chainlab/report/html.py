"""`report.html` of one scenario run: self-contained (inline CSS and SVG, no scripts, no network)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from chainlab.files import write_atomic
from chainlab.report.run import DIRECTIONS, RunData, chain_name, load_run, same_step, step_label

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


def _packet_title(p: dict[str, Any]) -> str:
    detail = f"ip id {p.get('ip_id')}"
    icmp = p.get("icmp")
    if isinstance(icmp, dict) and icmp.get("seq") is not None:
        detail += f", icmp id {icmp.get('id')} seq {icmp.get('seq')}"
    elif p.get("sport") is not None:
        detail += f", ports {p.get('sport')} → {p.get('dport')}"
    if p.get("tcp_flags"):
        detail += " " + ",".join(p["tcp_flags"])
    return f"{p.get('protocol', '?')} {p.get('src')} → {p.get('dst')} ({detail})"


def _rows(p: dict[str, Any]) -> list[dict[str, Any]]:
    steps = [s for s in p.get("steps") or [] if isinstance(s, dict)]
    last = p.get("last_step") if isinstance(p.get("last_step"), dict) else None
    dropped = p.get("verdict") == "dropped" and last is not None
    rows = []
    previous_hook = None
    marked = False
    for i, step in enumerate(steps, 1):
        is_drop = dropped and not marked and i == len(steps) and same_step(step, last)
        marked = marked or is_drop
        rows.append(_row(i, step, is_drop, step.get("hook") != previous_hook))
        previous_hook = step.get("hook")
    if dropped and not marked and last is not None:
        rows.append(_row(len(steps) + 1, last, True, True, note="outside the selected tables"))
    return rows


def _row(n: int, step: dict[str, Any], is_drop: bool, hook_start: bool, note: str = "") -> dict[str, Any]:
    return {
        "n": n, "hook": step.get("hook") or "?", "chain": chain_name(step), "step": step_label(step),
        "mark": step.get("mark") or "", "rule": step.get("rule") or "", "drop": is_drop,
        "hook_start": hook_start, "note": note, "line": step.get("line"),
    }


def _walk_key(p: dict[str, Any]) -> tuple[object, ...]:
    steps = tuple(
        (s.get("hook"), s.get("table"), s.get("chain"), s.get("kind"), s.get("position"), s.get("handle"),
         s.get("verdict"), s.get("rule"), s.get("mark"))
        for s in p.get("steps") or [] if isinstance(s, dict)
    )
    return (p.get("src"), p.get("dst"), p.get("protocol"), tuple(p.get("hooks") or []), p.get("verdict"), p.get("reason"), steps)


def walk_groups(run: RunData) -> list[dict[str, Any]]:
    """Per node and direction (in log order), the distinct chain walks with their packets."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for p in run.packets:
        key = (str(p.get("node")), str(p.get("direction")))
        group = groups.setdefault(key, {"node": key[0], "direction": key[1], "walks": [], "index": {}})
        wkey = _walk_key(p)
        walk = group["index"].get(wkey)
        if walk is None:
            walk = {
                "title": _packet_title(p), "hooks": list(p.get("hooks") or []), "verdict": str(p.get("verdict", "unknown")),
                "reason": str(p.get("reason", "")), "route": p.get("route"), "rows": _rows(p), "ip_ids": [],
                "repaired": 0, "new_connection": bool(p.get("new_connection")),
            }
            group["index"][wkey] = walk
            group["walks"].append(walk)
        walk["ip_ids"].append(p.get("ip_id"))
        walk["repaired"] += int(p.get("repaired_lines") or 0)
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
        last = p.get("last_step")
        if p.get("verdict") != "dropped" or not isinstance(last, dict):
            continue
        item = {
            "node": p.get("node"), "direction": p.get("direction"), "chain": chain_name(last),
            "step": step_label(last), "rule": last.get("rule") or "", "reason": p.get("reason", ""),
        }
        if item not in out:
            out.append(item)
    return out


def flows(run: RunData) -> list[dict[str, Any]]:
    out = []
    for flow in run.flows:
        hops = [h for h in flow.get("hops") or [] if isinstance(h, dict)]
        out.append({
            "direction": flow.get("direction"), "protocol": flow.get("protocol"), "ip_id": flow.get("ip_id"),
            "hops": hops, "nat": [str(n) for n in flow.get("nat") or []],
        })
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


def _check(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": str(c.get("node", "?")), "direction": str(c.get("direction", "?")),
        "expected": list(c.get("expected") or []), "actual": [list(a) for a in c.get("actual") or []],
        "verdicts": [str(v) for v in c.get("verdicts") or []], "ok": bool(c.get("ok")),
        "message": str(c.get("message", "")),
    }


def report_context(run: RunData) -> dict[str, Any]:
    analysis = run.analysis
    try:
        svg = inline_svg((run.run_dir / "diagram.svg").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        svg = None
    probe = run.run.get("probe") if isinstance(run.run.get("probe"), dict) else {}
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
        "checks": [_check(c) for c in run.checks],
        "drops": drops(run),
        "groups": groups,
        "flows": flows(run),
        "svg": svg,
        "counts": {
            "lines": analysis.get("lines", 0), "trace_records": analysis.get("trace_records", 0),
            "skipped": analysis.get("skipped_lines", 0), "repaired": analysis.get("repaired_lines", 0),
            "ignored": analysis.get("ignored_lines", 0), "packets": len(packets),
        },
        "formats": analysis.get("formats") or {},
        "tables": analysis.get("tables"),
        "evidence": evidence(run.run_dir),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def render_run_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from `analysis.json` and `diagram.svg`; return its path."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    page = environment().get_template("report.html.j2").render(report_context(run))
    return write_atomic(run_dir / "report.html", page)

