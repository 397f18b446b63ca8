"""The analysis contract (trace/contract.py): what is written reads back the same, and
reading never fails on an odd document."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainlab.render.jsonout import write_json
from chainlab.trace.contract import AnalysisDocument, FlowRecord, PacketRecord, StepRecord
from chainlab.trace.pipeline import AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import load_rules

from ..conftest import FIXTURES

LOGS = [
    [("master", FIXTURES / "lab" / "scenario4-master.log"), ("slave1", FIXTURES / "lab" / "scenario4-slave1.log")],
    [("n", FIXTURES / "captured" / "nft-monitor-inet-t13.log")],
    [("n", FIXTURES / "captured" / "ulogd-ip6tables-legacy.log")],
    [("n", FIXTURES / "captured" / "xtables-monitor-ipv6-crash.log")],
]


@pytest.mark.parametrize("logs", LOGS, ids=lambda logs: logs[0][1].name)
@pytest.mark.parametrize("tables", [None, {"nat", "filter"}])
def test_written_document_reads_back_the_same(logs, tables):
    rules = {"master": load_rules(FIXTURES / "lab" / "scenario4-master.rules")}
    result = analyze([LogSource(path, node) for node, path in logs], AnalysisOptions(tables=tables, rules=rules))
    buf = io.StringIO()
    write_json(buf, result.packets, lambda: result.flows, result.stats, tables)
    doc = json.loads(buf.getvalue())
    read = AnalysisDocument.from_json(doc)
    assert [p.to_dict() for p in read.packets] == doc["packets"]
    assert [f.to_dict() for f in read.flows] == doc["flows"]
    assert read.counts["lines"] == result.stats.lines and read.identities == result.stats.identities
    assert read.tables == (sorted(tables) if tables else None)


def test_labels():
    step = StepRecord("filter", "cali-tw-x", "rule", 4, verdict="DROP")
    assert (step.name, step.label()) == ("filter:cali-tw-x", "rule 4 → DROP")
    assert StepRecord("inet", "input", "rule", handle="13").label() == "rule handle 13"
    packet = PacketRecord.from_dict({"protocol": "tcp", "src": "fd00::1", "dst": "fd00::2", "identity": "flow",
                                     "sport": 1, "dport": 2, "tcp_flags": ["SYN"]})
    assert packet.title() == "tcp fd00::1 → fd00::2 (flow, ports 1 → 2 SYN)"
    assert packet.is_probe("tcp") and not packet.is_probe("icmp")


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                       max_leaves=12)
KEYS = st.sampled_from(["packets", "flows", "steps", "hops", "last_step", "icmp", "exit", "node", "hooks", "ip_id",
                        "expect", "checks", "identities", "formats", "tables", "lines"])


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(KEYS, JSONISH | st.lists(st.dictionaries(KEYS, JSONISH, max_size=5), max_size=3), max_size=6))
def test_reading_never_fails(doc):
    read = AnalysisDocument.from_json(doc)
    for packet in read.packets:
        packet.title()
        packet.to_dict()
    for flow in read.flows:
        FlowRecord.from_dict(flow.to_dict())
