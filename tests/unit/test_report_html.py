"""report.html of a run: content, the drop point, the inline diagram, self-containment."""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser

import pytest

from chainlab.report.html import inline_svg, render_run_report

from .test_report_helpers import scenario1_run, scenario4_run

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")
ALLOWED_URLS = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


class _Collect(HTMLParser):
    """Tags and attributes of a page, and the text of elements with a given class."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _drop_rows(page: str) -> list[str]:
    return re.findall(r'<tr class="drop[^"]*" data-drop="1">(.*?)</tr>', page, re.S)


@needs_dot
def test_scenario4_report_shows_pass_drop_and_rule(tmp_path):
    run_dir = scenario4_run(tmp_path)
    out = render_run_report(run_dir)
    assert out == run_dir / "report.html"
    page = out.read_text()
    text = html.unescape(page)
    assert 'id="verdict">PASS<' in page and "FAIL" not in page
    assert "Scenario 4 · another node to a container" in text
    assert "Profile net1 admits only endpoints tagged net1" in text
    # expectation vs result per node and direction
    for row in ("slave1", "master"):
        assert f"<td>{row}</td>" in page
    assert "PREROUTING → FORWARD" in text and "no packet, as expected" in text
    # the drop point: highlighted row with the rule text
    rows = _drop_rows(page)
    assert len(rows) == 1
    drop = html.unescape(rows[0])
    assert "filter:cali-tw-cali282b0776936" in drop and "rule 4" in drop and "DROP" in drop
    assert '"Drop if no profiles matched" -j DROP' in drop
    assert "Dropped (as expected)" in text
    # chain walk with rule text of earlier steps, marks and hooks
    assert '-A cali-tw-cali282b0776936 -m comment --comment "cali:fo2qQYvTOvZSIOO-" -j cali-pri-net1' in text
    assert "filter:cali-pri-net1" in text and "return 2" in text
    # flows across nodes, counts, evidence links
    assert "ip id 2207" in text and "no address change along the way" in text
    assert re.search(r"\d+ skipped", text) and "damaged but attributed" in text
    assert 'href="logs/master.log"' in page and 'href="rules/master.rules"' in page
    # the diagram, inline
    assert "<svg" in page and "cali-tw-cali282b0776936" in text
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page


def test_report_counts_the_windows_other_packets(tmp_path):
    run_dir = scenario4_run(tmp_path, mutate=lambda doc: doc["run"]["probe"].update(other_packets=12))
    text = html.unescape(render_run_report(run_dir).read_text())
    assert "12 other packets in the window, not the probe's (in logs/, not shown)" in text
    quiet = scenario4_run(tmp_path / "quiet", mutate=lambda doc: doc["run"]["probe"].update(other_packets=0))
    assert "other packets in the window" not in render_run_report(quiet).read_text()


@needs_dot
def test_report_is_self_contained(tmp_path):
    for make in (scenario1_run, scenario4_run):
        page = render_run_report(make(tmp_path)).read_text()
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
        assert urls <= ALLOWED_URLS, urls - ALLOWED_URLS
        parser = _Collect()
        parser.feed(page)
        tags = [t for t, _ in parser.tags]
        assert "script" not in tags and "iframe" not in tags and "img" not in tags
        assert not any(t == "link" for t in tags)
        for tag, attrs in parser.tags:
            for name in ("src", "href"):
                value = attrs.get(name) or ""
                assert not re.match(r"^[a-z]+:", value) or value.startswith("#"), (tag, name, value)
        assert "@import" not in page and "url(" not in page


@needs_dot
def test_scenario1_report_from_the_damaged_seed_log(tmp_path):
    page = render_run_report(scenario1_run(tmp_path)).read_text()
    text = html.unescape(page)
    assert 'id="verdict">PASS<' in page
    assert "Scenario 1 · host to container" in text
    assert "OUTPUT → POSTROUTING" in text and "INPUT" in text
    assert not _drop_rows(page)
    doc = json.loads((tmp_path / "20250101-030000-01-host-to-container" / "analysis.json").read_text())
    assert f"{doc['repaired_lines']} damaged but attributed" in text and doc["repaired_lines"] > 0
    assert f"{doc['skipped_lines']} skipped" in text


def _fail_scenario4(doc):
    """As if net1 had been opened: master forwards the request, so the expected drop is missing."""
    doc["run"]["passed"] = False
    doc["expect"]["ok"] = False
    for check in doc["expect"]["checks"]:
        if check["node"] == "master" and check["direction"] == "request":
            check.update(ok=False, actual=[["PREROUTING", "FORWARD", "POSTROUTING"]], verdicts=["accepted"],
                         message="expected PREROUTING → FORWARD, saw PREROUTING → FORWARD → POSTROUTING")


def test_failed_run_says_fail_and_why_without_diagram(tmp_path):
    run_dir = scenario4_run(tmp_path, svg=False, mutate=_fail_scenario4)
    page = render_run_report(run_dir).read_text()
    text = html.unescape(page)
    assert 'id="verdict">FAIL<' in page
    assert "Why it failed" in text and "master request: expected PREROUTING → FORWARD, saw" in text
    assert 'class="check-fail"' in page
    assert "No diagram" in text and "<svg" not in page


def test_missing_analysis_still_renders(tmp_path):
    run_dir = tmp_path / "20250101-030000-03-container-to-other-node"
    run_dir.mkdir()
    page = render_run_report(run_dir).read_text()
    assert 'id="verdict">FAIL<' in page and "no analysis.json" in page
    assert "Scenario 3 · container to other node" in html.unescape(page)


def test_autoescape_of_log_and_scenario_text(tmp_path):
    def hostile(doc):
        doc["run"]["scenario"]["description"] = "<script>alert(1)</script>"
        doc["packets"][0]["steps"][0]["rule"] = '-A X -m comment --comment "<img src=x onerror=alert(1)>" -j ACCEPT'
    page = render_run_report(scenario4_run(tmp_path, svg=False, mutate=hostile)).read_text()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_inline_svg_strips_prolog_and_active_content():
    svg = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n<!-- c -->'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10pt">'
        '<script>alert(1)</script><g onclick="x()"><a xlink:href="https://example.org/"><text>FORWARD</text></a>'
        '<use xlink:href="#n1"/><set attributeName="href" to="javascript:x()"/><style>@import url(x)</style>'
        '<text HREF="javascript:x()" style="x">y</text></g><foreignObject><div/></foreignObject></svg>'
    )
    out = str(inline_svg(svg))
    assert out.startswith("<svg") and "FORWARD" in out
    for gone in ("<?xml", "DOCTYPE", "<!--", "script", "onclick", "example.org", "foreignObject", "javascript",
                 "@import", "style", "<set"):
        assert gone not in out
    assert 'xlink:href="#n1"' in out
    assert inline_svg("not xml") is None and inline_svg("<html/>") is None


def test_a_walk_shows_what_nat_changed_on_its_node(tmp_path):
    """A packet whose last line shows another destination port than its first (a DNAT of a
    published port) gets the note next to its path."""
    def redirect(doc):
        packet = doc["packets"][0]
        packet["sport"], packet["dport"] = 40000, 80
        packet["entry"] = {"src": packet["src"], "dst": packet["dst"], "sport": 40000, "dport": 80}
        packet["exit"] = {"src": packet["src"], "dst": packet["dst"], "sport": 40000, "dport": 8080}

    text = html.unescape(render_run_report(scenario4_run(tmp_path, mutate=redirect)).read_text())
    assert re.search(r"NAT on this node: DNAT: dst [\d.]+:80 → [\d.]+:8080", text)
    assert text.count("NAT on this node") == 1
