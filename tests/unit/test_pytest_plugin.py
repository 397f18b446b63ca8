"""The pytest plugin's behaviour without a lab (pytester); tests/integration/test_explore.py
runs it against one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from chainlab.pytest_plugin import failure_text
from chainlab.run.runner import RunResult
from chainlab.scenario import load_scenario
from chainlab.trace.expect import check_scenario

from ..conftest import ROOT
from .test_explore import results

SCENARIOS = ROOT / "scenarios"
LOCAL = ROOT / "lab" / "local.yaml"


def test_off_unless_asked_for(pytester: pytest.Pytester):
    shutil.copytree(SCENARIOS, pytester.path / "scenarios")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess()  # a fresh pytest: the plugin comes from its entry point
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*chainlab-*"])
    assert "yaml" not in result.stdout.str()


def test_scenario_files_are_items(pytester: pytest.Pytester):
    result = pytester.runpytest("--collect-only", "-q", str(SCENARIOS), "--chainlab-inventory", str(LOCAL))
    names = [line.split("::")[-1] for line in result.stdout.lines if ".yaml::" in line]
    assert names == [p.stem for p in sorted(SCENARIOS.glob("[0-9][0-9]-*.yaml"))] and len(names) == 7


def test_the_lab_fixture_skips_without_an_inventory(pytester: pytest.Pytester):
    pytester.makepyfile(test_lab="def test_probe(lab):\n    lab.probe('slave1', 'web1')\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*the `lab` fixture needs --chainlab-inventory PATH*"])


@pytest.mark.parametrize("args,message", [
    (["--chainlab-up"], "--chainlab-up needs --chainlab-inventory PATH"),
    (["--chainlab-inventory", "nowhere.yaml"], "--chainlab-inventory nowhere.yaml: no such file"),
])
def test_usage_errors(pytester: pytest.Pytester, args: list[str], message: str):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_a_lab_that_is_not_provisioned_fails_cleanly(pytester: pytest.Pytester):
    doc = yaml.safe_load(LOCAL.read_text())
    doc["local"]["state_dir"] = str(pytester.path / "state")
    inventory = pytester.path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(doc))
    for name in ("01-host-to-container.yaml", "07-docker-bridge-published-port.yaml"):
        shutil.copy(SCENARIOS / name, pytester.path / name)
    result = pytester.runpytest("--chainlab-inventory", str(inventory), "-rs")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*chainlab: no lab state at *lab-state.json: lab local is not provisioned; run `chainlab lab up`*",
                                 "*scenario 7 needs a bridge lab; lab local is calico*"])
    assert "Traceback" not in result.stdout.str()


def test_failure_text_is_the_expected_vs_seen_table():
    scenario = load_scenario(SCENARIOS / "04-node-to-container.yaml")
    # slave2's ping of web1: dropped on master as scenario 4 expects, but nothing from slave1
    probe = next(r for r in results("icmp", "icmp", None) if r.label == "slave2 → web1 icmp")
    checks = check_scenario(scenario, probe.packets, {"master", "slave1"})
    from chainlab.trace.pipeline import Analysis
    from chainlab.trace.reader import ReadStats

    result = RunResult(scenario, Path("runs/x"), False, checks, "unreachable", 1.0,
                       Analysis(probe.packets, probe.flows, ReadStats(), ["master", "slave2"]), 1)
    lines = failure_text(result).splitlines()
    assert lines[0] == "scenario 4: another node to a container: expected vs seen"
    master = next(line for line in lines if line.startswith("master  request"))
    assert "PREROUTING → FORWARD, dropped in cali-tw-*" in master and "PASS" in master
    assert "dropped in cali-tw-cali" in master
    slave1 = next(line for line in lines if line.startswith("slave1  request"))
    assert "FAIL: expected OUTPUT → POSTROUTING, saw no request packet of the probe (ICMP only)" in slave1
    assert lines[-1] == "evidence: runs/x/report.html"
