"""Diagrams and text output from an analysis."""

import html
import shutil

import pytest
from rich.console import Console

from chainlab.render import diagram
from chainlab.render.text import TextReport
from chainlab.trace.pipeline import AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import load_rules

from ..conftest import FIXTURES

LAB = FIXTURES / "lab"


@pytest.fixture
def scenario4():
    return analyze([LogSource(LAB / "scenario4-master.log", "master"), LogSource(LAB / "scenario4-slave1.log", "slave1")],
                   AnalysisOptions(tables={"nat", "filter"}, rules={"master": load_rules(LAB / "scenario4-master.rules")}))


def test_model_has_nodes_walks_and_the_drop(scenario4):
    model = diagram.build_model(scenario4.packets, scenario4.flows, {"nat", "filter"})
    assert model.nodes == ["master", "slave1"]
    drop = next(w for w in model.walks if w.verdict == "dropped")
    assert drop.node == "master" and drop.drop_at == "filter:cali-tw-cali282b0776936"
    assert "filter:cali-pri-net1" in drop.chains["FORWARD"]
    assert model.links == [("slave1", "POSTROUTING", "master", "PREROUTING", "request")]


def test_mermaid(scenario4):
    text = diagram.to_mermaid(diagram.build_model(scenario4.packets, scenario4.flows, None), "s4")
    assert text.startswith("---\ntitle: \"s4\"") and "flowchart LR" in text
    assert 'subgraph n0["master"]' in text and "dropped" in text and "linkStyle" in text


def test_dot_and_svg(scenario4):
    model = diagram.build_model(scenario4.packets, scenario4.flows, None)
    dot = diagram.to_dot(model, "s4")
    assert "cluster_n0" in dot and "cluster_n1" in dot and "label=master" in dot and "dropped" in dot
    if shutil.which("dot"):
        svg = diagram.to_svg(model, "s4")
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "cali-tw-cali282b0776936" in html.unescape(svg)


def test_text_output_names_path_verdict_and_counts(scenario4):
    console = Console(record=True, width=200)
    report = TextReport()
    report.feed(scenario4.packets)
    report.print(console, scenario4.flows, scenario4.stats, scenario4.nodes, {"nat", "filter"})
    out = console.export_text()
    assert "master · request · icmp 172.16.91.226 → 172.20.219.81" in out
    assert "path: PREROUTING → FORWARD" in out and "dropped" in out
    assert "0 skipped" in out and "flows across nodes" in out


def test_a_walk_with_no_hook_says_why_its_path_is_empty(tmp_path):
    """Steps in nat user chains only (IN= alone: PREROUTING or INPUT): no hook is known, which
    is not the same as --tables leaving every step out."""
    log = tmp_path / "nat.log"
    log.write_text("".join(
        f"Mar  9 02:07:11 node8 kernel: TRACE: nat:{step} IN=eth1 OUT= SRC=151.80.24.11 DST=164.132.217.81 LEN=60 "
        "TTL=62 ID=47335 DF PROTO=TCP SPT=56878 DPT=80 WINDOW=29200 RES=0x00 SYN URGP=0\n"
        for step in ("KUBE-SERVICES:rule:21", "KUBE-MARK-MASQ:rule:1", "KUBE-MARK-MASQ:return:2")))
    result = analyze([LogSource(log, "node8")], AnalysisOptions())
    for tables, path in ((None, "(no step placed in a hook)"), ({"filter"}, "(no step in the selected tables)")):
        console = Console(record=True, width=200)
        report = TextReport()
        report.feed(result.packets)
        report.print(console, result.flows, result.stats, result.nodes, tables)
        assert f"path: {path}" in console.export_text()


def test_node_names_that_differ_only_in_punctuation_stay_apart():
    """Ids are by a node's place, not its name made an id (node-a and node_a were one box)."""
    import re

    packets = analyze([LogSource(LAB / "scenario4-master.log", "node-a"), LogSource(LAB / "scenario4-slave1.log", "node_a"),
                       LogSource(LAB / "scenario3-master.log", "ßeta")], AnalysisOptions())
    model = diagram.build_model(packets.packets, packets.flows, None)
    assert set(model.nodes) == {"node-a", "node_a", "ßeta"}
    text = diagram.to_mermaid(model)
    subgraphs = re.findall(r'subgraph (\S+)\["([^"]+)"\]', text)
    assert sorted(label for _, label in subgraphs) == sorted(model.nodes) and len({i for i, _ in subgraphs}) == 3
    boxes = re.findall(r"^    (\w+)\[", text, re.M)
    assert len(boxes) == len(set(boxes))
    dot = diagram.to_dot(model)
    assert len(set(re.findall(r"subgraph (cluster_\w+)", dot))) == 3


def test_mermaid_title_is_yaml_text():
    """The front matter's title stays the text given: a colon, a leading # or {, a line break."""
    import yaml

    model = diagram.DiagramModel(nodes=[], walks=[], links=[])
    for title in ("Scenario 3: pod to pod", "#1 ping", "{x}", "two\nlines", 'say "hi"'):
        front = diagram.to_mermaid(model, title).split("---")[1]
        assert yaml.safe_load(front) == {"title": title}
