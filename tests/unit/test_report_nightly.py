"""The nightly summary: index.html, junit.xml, summary.json, the diff against the previous nightly."""

from __future__ import annotations

import html
import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from chainlab.report.nightly import (
    CHANGED, NO_CHANGE, NO_PREVIOUS, diff_summaries, find_baseline, write_nightly,
)
from chainlab.rundir import PARTIAL

from .test_report_helpers import scenario1_run, scenario4_run

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")


def _net1_opened(doc):
    """Scenario 4 after profile net1 changed: master forwards the request to web1 instead of dropping it."""
    doc["run"]["passed"] = False
    doc["expect"]["ok"] = False
    for p in doc["packets"]:
        if p["node"] == "master" and p["direction"] == "request":
            p["hooks"] = ["PREROUTING", "FORWARD", "POSTROUTING"]
            p["verdict"], p["reason"] = "accepted", "passed every table up to nat POSTROUTING"
            p["steps"][-1].update(rule='-A cali-tw-cali282b0776936 -m comment --comment "cali:x" -j cali-pri-net1', position=3)
            p["steps"].append({"table": "nat", "chain": "POSTROUTING", "kind": "policy", "position": 3,
                               "rule": "-P POSTROUTING ACCEPT", "hook": "POSTROUTING", "line": 14})
            p["last_step"] = p["steps"][-1]
    for c in doc["expect"]["checks"]:
        if c["node"] == "master" and c["direction"] == "request":
            c.update(ok=False, actual=[["PREROUTING", "FORWARD", "POSTROUTING"]], verdicts=["accepted"],
                     message="expected PREROUTING → FORWARD, saw PREROUTING → FORWARD → POSTROUTING; "
                             "expected verdict dropped, saw accepted")


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    return root


def _nightly(runs, name, stamp, **s4):
    run_dirs = [scenario1_run(runs, stamp=stamp), scenario4_run(runs, stamp=stamp, **s4)]
    out = runs / name
    return write_nightly(out, run_dirs, find_baseline(runs, out)[0])


def test_first_nightly_files_and_contents(runs):
    summary = _nightly(runs, "nightly-20250101", "20250101-030000")
    assert summary.passed and not summary.changed
    assert summary.diff["status"] == NO_PREVIOUS and summary.diff["previous"] is None
    for path in (summary.index, summary.junit, summary.summary_json):
        assert path.parent == runs / "nightly-20250101" and path.is_file()

    doc = json.loads(summary.summary_json.read_text())
    assert [s["id"] for s in doc["scenarios"]] == [1, 4] and doc["passed"] is True
    s4 = doc["scenarios"][1]
    assert s4["title"] == "another node to a container" and s4["duration_s"] == 1.25
    assert s4["report"] == "../20250101-030000-04-node-to-container/report.html"
    master = next(p for p in s4["paths"] if p["node"] == "master" and p["direction"] == "request")
    assert master["hooks"] == [["PREROUTING", "FORWARD"]] and master["verdicts"] == ["dropped"]
    assert master["drop_chain"] == "filter:cali-tw-cali282b0776936"
    assert '"Drop if no profiles matched" -j DROP' in master["drop_rule"]
    assert "filter:cali-pri-net1" in master["chains"]
    assert any(r.startswith("filter:cali-tw-cali282b0776936 rule 3: ") for r in master["rules"])
    reply = next(p for p in s4["paths"] if p["node"] == "master" and p["direction"] == "reply")
    assert reply["hooks"] == [] and reply["packets"] == 0 and reply["ok"] is True

    # every run got its report, and the index links to it
    page = summary.index.read_text()
    assert (runs / "20250101-030000-04-node-to-container" / "report.html").is_file()
    assert 'href="../20250101-030000-04-node-to-container/report.html"' in page
    text = html.unescape(page)
    assert "no previous nightly" in text and "filter:cali-tw-cali282b0776936" in text
    assert text.count("PASS") >= 2 and "1.25 s" in text


def test_junit_one_testcase_per_scenario(runs):
    _nightly(runs, "nightly-20250101", "20250101-030000")
    summary = _nightly(runs, "nightly-20250102", "20250102-030000", mutate=_net1_opened)
    root = ET.parse(summary.junit).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["01 host to container", "04 another node to a container"]
    assert all(float(c.get("time")) == 1.25 for c in cases)
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert "master request: expected PREROUTING → FORWARD, saw PREROUTING → FORWARD → POSTROUTING" in failure.get("message")
    assert "master request" in failure.text


def test_twice_in_a_row_says_no_change(runs):
    _nightly(runs, "nightly-20250101", "20250101-030000")
    summary = _nightly(runs, "nightly-20250102", "20250102-030000")
    assert summary.diff["status"] == NO_CHANGE and summary.diff["previous"] == "nightly-20250101"
    assert summary.diff["changes"] == [] and summary.diff["text"] == ["no change"]
    assert json.loads(summary.summary_json.read_text())["diff"]["status"] == "no change"
    assert "no change" in summary.index.read_text()


def test_changed_verdict_names_scenario_4_first(runs):
    _nightly(runs, "nightly-20250101", "20250101-030000")
    summary = _nightly(runs, "nightly-20250102", "20250102-030000", mutate=_net1_opened)
    assert summary.changed and not summary.passed and [s["id"] for s in summary.failed] == [4]
    changes = summary.diff["changes"]
    assert changes and {c["scenario"] for c in changes} == {4}
    whats = {c["what"] for c in changes if c["node"] == "master"}
    assert {"hooks", "verdicts", "drop_chain", "rules"} <= whats
    messages = summary.diff["text"]
    assert any("scenario 4 (another node to a container): result was PASS, now FAIL" in m for m in messages)
    assert any("master request: verdict was dropped, now accepted" in m for m in messages)
    assert any("master request: path was PREROUTING → FORWARD, now PREROUTING → FORWARD → POSTROUTING" in m for m in messages)
    # listed first on the page, before the results table
    page = html.unescape(summary.index.read_text())
    assert page.index("master request: verdict was dropped, now accepted") < page.index("Scenarios × nodes × directions")
    doc = json.loads(summary.summary_json.read_text())
    assert doc["diff"]["status"] == CHANGED and list(doc)[:5] == ["version", "lab", "generated", "passed", "diff"]


def test_a_rule_text_change_alone_is_a_change(runs):
    def other_comment(doc):
        for p in doc["packets"]:
            for s in p["steps"]:
                if s.get("rule") and "cali-pri-net1" in s["rule"]:
                    s["rule"] = s["rule"].replace("-j cali-pri-net1", "-j cali-pri-net2")
    _nightly(runs, "nightly-20250101", "20250101-030000")
    summary = _nightly(runs, "nightly-20250102", "20250102-030000", mutate=other_comment)
    assert summary.changed
    assert [c["what"] for c in summary.diff["changes"]] == ["rules"]
    assert "cali-pri-net2" in summary.diff["changes"][0]["message"]


def test_find_baseline_is_the_newest_complete_older_nightly(tmp_path):
    assert find_baseline(tmp_path, tmp_path / "nightly-20250103")[0] is None
    for name in ("nightly-20250101", "nightly-20250102", "nightly-20250104", "nightly-20250102-x-no-summary"):
        (tmp_path / name).mkdir()
    for name in ("nightly-20250101", "nightly-20250102", "nightly-20250104"):
        (tmp_path / name / "summary.json").write_text("{}")
    (tmp_path / "20250103-010000-04-node-to-container").mkdir()
    current = tmp_path / "nightly-20250103"
    current.mkdir()
    (current / "summary.json").write_text("{}")
    assert find_baseline(tmp_path, current)[0] == tmp_path / "nightly-20250102"
    assert find_baseline(tmp_path, tmp_path / "nightly-20250101")[0] is None


def test_previous_nightly_is_of_the_same_lab(tmp_path):
    for name, lab in (("nightly-20250101", "local"), ("nightly-20250102", "bridge")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"lab": lab}))
    current = tmp_path / "nightly-20250103"
    assert find_baseline(tmp_path, current, "local")[0] == tmp_path / "nightly-20250101"
    assert find_baseline(tmp_path, current, "bridge")[0] == tmp_path / "nightly-20250102"
    assert find_baseline(tmp_path, current, "other")[0] is None


def test_broken_run_is_a_junit_error_and_scenarios_added_or_gone_are_changes(runs):
    first = _nightly(runs, "nightly-20250101", "20250101-030000")
    broken = runs / "20250102-030000-03-container-to-other-node"
    broken.mkdir()
    out = runs / "nightly-20250102"
    summary = write_nightly(out, [scenario1_run(runs, stamp="20250102-030000"), broken], first.out_dir)
    case = ET.parse(summary.junit).getroot().find("testsuite").findall("testcase")[1]
    assert case.find("error") is not None and "no analysis.json" in case.find("error").get("message")
    messages = summary.diff["text"]
    assert any(m.startswith("scenario 3 (container to other node): not in the previous nightly") for m in messages)
    assert any(m.startswith("scenario 4 (another node to a container): not run this time") for m in messages)


def test_diff_without_previous_is_empty():
    assert diff_summaries(None, [{"id": 1, "paths": []}]) == []


def test_junit_stays_valid_xml_with_control_characters_in_messages(tmp_path):
    from chainlab.report.nightly import write_junit

    scenario = {"id": 2, "title": "t\x07", "duration_s": 1.0, "passed": False, "error": "ssh: \x1b[31mboom\x00",
                "report": None}
    write_junit(tmp_path / "junit.xml", [scenario], "2026-01-01T00:00:00+00:00")
    error = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase/error")
    assert error.get("message") == "ssh: ?[31mboom?"


def test_only_complete_nightlies_are_compared_and_partial_ones_are_named(tmp_path):
    def nightly(name: str, lab: str | None, complete: bool = True) -> None:
        d = tmp_path / name
        d.mkdir()
        if complete:
            (d / "summary.json").write_text(json.dumps({"lab": lab, "scenarios": []}))
        else:
            (d / PARTIAL).write_text("")

    nightly("nightly-20250101", "rel")  # before lab names and PARTIAL markers
    nightly("nightly-rel-20250102-030000.000", "rel")
    nightly("nightly-rel-20250103-030000.000", "rel", complete=False)  # killed
    nightly("nightly-other-20250103-040000.000", "other")
    nightly("nightly-rel-20250104-030000.000", "rel", complete=False)  # interrupted
    current = tmp_path / "nightly-rel-20250105-030000.000"
    assert find_baseline(tmp_path, current, "rel") == (
        tmp_path / "nightly-rel-20250102-030000.000",
        ["nightly-rel-20250104-030000.000", "nightly-rel-20250103-030000.000"])
    assert find_baseline(tmp_path, tmp_path / "nightly-rel-20250102-050000.000", "rel") == (
        tmp_path / "nightly-rel-20250102-030000.000", [])
    assert find_baseline(tmp_path, tmp_path / "nightly-rel-20250101-050000.000", "rel") == (
        tmp_path / "nightly-20250101", [])
    assert find_baseline(tmp_path, current, "other")[0] == tmp_path / "nightly-other-20250103-040000.000"


def test_a_run_dir_the_report_code_chokes_on_is_an_error_entry(runs, monkeypatch):
    import chainlab.report.nightly as N

    good = scenario1_run(runs, stamp="20250101-030000")
    bad = scenario4_run(runs, stamp="20250101-030000")
    real = N.scenario_summary
    monkeypatch.setattr(N, "scenario_summary",
                        lambda run, out: (_ for _ in ()).throw(KeyError("x")) if run.run_dir == bad else real(run, out))
    summary = write_nightly(runs / "nightly-20250101", [good, bad], None)
    entries = {s["id"]: s for s in json.loads(summary.summary_json.read_text())["scenarios"]}
    assert entries[1]["passed"] and entries[4]["error"].startswith(f"cannot summarise {bad.name}: KeyError")
    assert not list(runs.rglob("*.tmp"))


def test_a_scenario_that_could_not_run_is_an_error_in_the_diff_not_a_fail():
    """It was shown as `result was PASS, now FAIL`, followed by every path as not seen."""
    paths = [{"node": "master", "direction": "request", "hooks": ["PREROUTING", "INPUT"]}]
    passed = {"id": 3, "title": "t", "passed": True, "paths": paths}
    errored = {"id": 3, "title": "t", "passed": False, "error": "slave1: no answer within 15 s", "paths": []}
    [change] = diff_summaries([passed], [errored])
    assert change["message"] == "scenario 3 (t): result was PASS, now ERROR"
    [back] = diff_summaries([errored], [passed])
    assert back["before"] == "ERROR" and back["after"] == "PASS"
    assert diff_summaries([errored], [errored]) == []


def test_a_workload_chain_renamed_by_a_restarted_container_is_no_change():
    """A restarted container gets a new endpoint, so a new interface (`cali<11 hex>`) and new
    chain names: the same path through them is no change; another chain or rule is one."""
    def summary(chain: str, rule: int = 6) -> list[dict]:
        return [{"id": 4, "title": "t", "passed": True, "paths": [
            {"node": "master", "direction": "request", "hooks": ["PREROUTING", "FORWARD"], "verdicts": ["dropped"],
             "drop_chain": f"filter:{chain}", "drop_rule": rule, "chains": [f"filter:cali-FORWARD", f"filter:{chain}"],
             "rules": [f"-A {chain} -j DROP"], "ok": True}]}]

    before = summary("cali-tw-cali4f552c0fc0c")
    assert diff_summaries(before, summary("cali-tw-calie85f81972ea")) == []
    moved = diff_summaries(before, summary("cali-tw-calie85f81972ea", rule=7))
    assert [c["what"] for c in moved] == ["drop_rule"]
    other = diff_summaries(before, summary("cali-fw-calie85f81972ea"))
    assert {c["what"] for c in other} == {"drop_chain", "chains", "rules"}
