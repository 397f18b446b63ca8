"""analyze.judge_key: what judging reads of a kernel-log walk, and the C engine's Python side
(native.Calls) judging a walk once per key.

Hypothesis builds kernel walks and twins of them that differ only where judge_key says
judging does not look (the chains, kinds, positions of every step but the last): judged
apart, from scratch, the two get the same judgment. The engine-level tests (test_native_engine)
hold the C engine, which now judges by key, to the Python engine's output on every fixture.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainlab.trace.analyze import judge_key
from chainlab.trace.match import parse_match
from chainlab.trace.model import Step
from chainlab.trace.native import Calls
from chainlab.trace.netfilter import HOOKS
from chainlab.trace.pipeline import AnalysisOptions

TABLES = ["raw", "mangle", "nat", "filter", "security"]
CHAINS = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING", "DOCKER", "cali-fw-eth0", "KUBE-SVC-X"]
KINDS = ["rule", "return", "policy"]

steps = st.builds(
    Step, table=st.sampled_from(TABLES), chain=st.sampled_from(CHAINS), kind=st.sampled_from(KINDS),
    position=st.one_of(st.none(), st.integers(1, 40)), hook=st.one_of(st.none(), st.sampled_from(list(HOOKS))),
)
walks = st.lists(steps, min_size=1, max_size=12)
slots = st.sets(st.tuples(st.sampled_from(list(HOOKS)), st.sampled_from(TABLES)), max_size=8)


def _calls(options: AnalysisOptions | None = None, present: set[tuple[str, str]] = frozenset()) -> Calls:
    calls = Calls(options or AnalysisOptions(), None)
    calls.node_added(0, b"n")
    for hook, table in present:
        calls.slot_added(0, hook, table)
    return calls


@settings(max_examples=300, deadline=None)
@given(walk=walks, data=st.data(), present=slots, at_end=st.integers(0, 1), proto_none=st.integers(0, 1),
       entered=st.one_of(st.none(), st.just("ip filter input")))
def test_walks_of_one_key_are_judged_alike(walk, data, present, at_end, proto_none, entered):
    twin = [replace(s, chain=data.draw(st.sampled_from(CHAINS)), kind=data.draw(st.sampled_from(KINDS)),
                    position=data.draw(st.one_of(st.none(), st.integers(1, 40))))
            for s in walk[:-1]] + walk[-1:]
    assert judge_key(twin) == judge_key(walk) is not None
    calls = _calls(present=present)
    assert calls._judge(0, walk, at_end, entered, proto_none) == calls._judge(0, twin, at_end, entered, proto_none)


def test_a_walk_with_nft_steps_or_rules_has_no_key():
    step = Step("filter", "INPUT", "rule", 1, hook="INPUT")
    assert judge_key([step]) is not None
    assert judge_key([replace(step, family="ip")]) is None
    assert judge_key([replace(step, rule="-A INPUT -j ACCEPT"), step]) is None


def test_a_key_judged_again_after_the_nodes_tables_changed():
    """A table seen later changes what lies ahead of a walk: its next walk of the same key
    is judged anew (the engine's own walk cache keys on its slot_version, bumped at the same
    events)."""
    calls = _calls(present={("PREROUTING", "raw")})
    walk = [Step("raw", "PREROUTING", "policy", 1, hook="PREROUTING")]
    before = calls.judge(0, walk, 0, None, 0)
    assert calls.judge(0, list(walk), 0, None, 0) is before
    calls.slot_added(0, None, "filter")
    after = calls.judge(0, walk, 0, None, 0)
    assert after is not before and after[2] != before[2]  # verdict and reason


@pytest.mark.parametrize("options", [
    AnalysisOptions(match=parse_match(["chain=cali-*"])),
], ids=["match-chain"])
def test_no_key_where_the_judgment_reads_every_chain(options):
    """--match chain= (and diagrams, and --rules) read the whole walk: each walk judged."""
    calls = _calls(options)
    walk = [Step("filter", "cali-fw-eth0", "rule", 1, hook="FORWARD"), Step("filter", "FORWARD", "policy", 2, hook="FORWARD")]
    twin = [replace(walk[0], chain="DOCKER"), walk[1]]
    assert calls.judge(0, walk, 0, None, 0)[7] is True  # walk_ok
    assert calls.judge(0, twin, 0, None, 0)[7] is False
    assert not Calls(AnalysisOptions(), None, diagram=True).keyed


def test_the_judgments_kept_are_bounded(monkeypatch):
    """A log of ever new kinds of walk: the judgments kept by key stay at most JUDGED_KEYS."""
    monkeypatch.setattr("chainlab.trace.native.JUDGED_KEYS", 10)
    calls = _calls()
    for position in range(25):
        calls.judge(0, [Step("raw", "PREROUTING", "rule", position + 1, hook="PREROUTING")], 0, None, 0)
        assert len(calls.judged) <= 10
