"""A nightly survives whatever one scenario raises, and says which nightlies it compares.

The remote part of each run (`_run_in`'s SSH work) is replaced by the reference logs of
tests/fixtures; everything else is the real nightly: lock, run dirs, analysis, diagram
(Graphviz), reports, summary."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory, load_inventory
from chainlab.labstate import ContainerState, HostState, LabState, save_state
from chainlab.lock import lab_lock_path
from chainlab.run import nightly, runner
from chainlab.run.deadline import Interrupted
from chainlab.run.probe import build_probe
from chainlab.rundir import PARTIAL

from .test_report_helpers import S1_LOGS, S4_LOGS, S4_RULES, SCENARIO1, SCENARIO4

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the local lab's lock lives in /run/chainlab (root)"),
]


@pytest.fixture
def inv(tmp_path: Path) -> Iterator[Inventory]:
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["lab"] = f"unitn{os.getpid()}"
    doc["local"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    inventory = load_inventory(path)
    hosts = {n: HostState(address=h.address, trace_log="/var/log/iptables.log", trace_backend="ulogd",
                          iptables="legacy") for n, h in inventory.hosts.items()}
    containers = {"web1": ContainerState(host="master", address="172.20.219.80", network="net1", driver="calico"),
                  "web2": ContainerState(host="master", address="172.20.219.81", network="net1", driver="calico"),
                  "web3": ContainerState(host="slave1", address="172.20.1.2", network="net1", driver="calico")}
    save_state(inventory, LabState(lab=inventory.lab, hosts=hosts, containers=containers))
    yield inventory
    lab_lock_path(inventory).unlink(missing_ok=True)


def _scenario(directory: Path, name: str, source: Path, **changes: object) -> None:
    doc = yaml.safe_load(source.read_text())
    doc.update(changes)
    (directory / name).write_text(yaml.safe_dump(doc, allow_unicode=True))


@pytest.fixture
def scenarios(tmp_path: Path) -> Path:
    """01 passes, 02 has a NUL in its title (Graphviz fails after the probe), 03 is a FIFO,
    04 passes, 05 is not YAML, 06 hits a bug (ValueError)."""
    d = tmp_path / "scenarios"
    d.mkdir()
    shutil.copy(SCENARIO1, d / SCENARIO1.name)
    _scenario(d, "02-nul.yaml", SCENARIO1, id=2, title="nul \x00 in the title")
    os.mkfifo(d / "03-fifo.yaml")
    shutil.copy(SCENARIO4, d / SCENARIO4.name)
    (d / "05-broken.yaml").write_text("id: [\n")
    _scenario(d, "06-bug.yaml", SCENARIO1, id=6, title="a bug")
    return d


def fake_run_in(inv, scenario, state, run_dir, log, hosts):  # noqa: ANN001 - the signature of runner._run_in
    """The reference logs instead of SSH; scenario 6 is a bug."""
    if scenario.id == 6:
        raise ValueError("boom")
    logs, rules = (S4_LOGS, S4_RULES) if scenario.id == 4 else (S1_LOGS, {})
    for sub in ("logs", "rules", "routes"):
        (run_dir / sub).mkdir(exist_ok=True)
    for node, path in logs.items():
        shutil.copy(path, run_dir / "logs" / f"{node}.log")
    for node, path in rules.items():
        shutil.copy(path, run_dir / "rules" / f"{node}.rules")
    if scenario.id == 4:  # its logs come from a lab where web1 had the address .81
        web1 = state.containers["web1"].model_copy(update={"address": "172.20.219.81"})
        state = state.model_copy(update={"containers": {**state.containers, "web1": web1}})
    spec = build_probe(scenario, state)
    exit_code = 0 if scenario.outcome == "reachable" else 1
    (run_dir / "probe.txt").write_text(f"exit code {exit_code}\n")
    return runner._analyze_run(scenario, run_dir, datetime.now(), 0.1, spec, exit_code, state, [])


def test_every_scenario_error_is_its_own_and_the_summary_is_always_written(inv, scenarios, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_run_in", fake_run_in)
    runs = tmp_path / "runs"
    lines: list[str] = []
    summary, results, failed = nightly.run_nightly(inv, scenarios, runs, log=lines.append)
    assert [r.scenario.id for r in results] == [1, 4] and all(r.passed for r in results)
    doc = json.loads(summary.summary_json.read_text())
    by_id = {s["id"]: s for s in doc["scenarios"]}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6]
    assert by_id[1]["passed"] and by_id[4]["passed"]
    assert by_id[2]["error"].startswith("unexpected error: CalledProcessError") and "dot" in by_id[2]["error"]
    assert "a FIFO, not a regular file" in by_id[3]["error"]
    assert "invalid YAML" in by_id[5]["error"]
    assert by_id[6]["error"].startswith("unexpected error: ValueError: boom")
    errors = ET.parse(summary.junit).getroot().findall(".//error")
    assert len(errors) == 4 and all("\x00" not in e.get("message", "") for e in errors)
    assert summary.index.is_file() and "nul" in summary.index.read_text()
    out_dir = summary.out_dir
    assert out_dir.name.startswith(f"nightly-{inv.lab}-") and not (out_dir / PARTIAL).exists()
    assert not list(runs.rglob(PARTIAL)) and not list(runs.rglob("*.tmp"))
    bug = next(out_dir.glob("*-06-a-bug"))
    assert "Traceback" in (bug / "error.txt").read_text()  # the details are in the evidence, not on the terminal


def test_an_interrupted_nightly_stays_partial_and_the_next_one_says_it_skipped_it(inv, scenarios, tmp_path,
                                                                                   monkeypatch):
    runs = tmp_path / "runs"
    for name in ("03-fifo.yaml", "05-broken.yaml", "06-bug.yaml", "02-nul.yaml"):
        (scenarios / name).unlink()

    def interrupted_at_4(inv, scenario, *args):  # noqa: ANN001
        if scenario.id == 4:
            raise Interrupted(15)
        return fake_run_in(inv, scenario, *args)

    monkeypatch.setattr(runner, "_run_in", fake_run_in)
    first, _, _ = nightly.run_nightly(inv, scenarios, runs, log=lambda _: None)
    monkeypatch.setattr(runner, "_run_in", interrupted_at_4)
    with pytest.raises(Interrupted):
        nightly.run_nightly(inv, scenarios, runs, log=lambda _: None)
    partial = max((d for d in runs.iterdir() if d != first.out_dir), key=lambda d: d.name)
    assert (partial / PARTIAL).exists() and (partial / "summary.json").is_file()  # what ran is summarised
    summarised = json.loads((partial / "summary.json").read_text())["scenarios"]
    assert [(s["id"], s["error"]) for s in summarised] == [(1, None), (4, "interrupted by SIGTERM: this run dir is partial")]
    run4 = next(partial.glob("*-04-*"))
    assert (run4 / PARTIAL).exists() and "interrupted by SIGTERM" in (run4 / "error.txt").read_text()
    with pytest.raises(ChainlabError, match="is already running"):  # not while the lock is held ...
        with nightly.lab_lock(inv):
            nightly.run_nightly(inv, scenarios, runs, log=lambda _: None)
    monkeypatch.setattr(runner, "_run_in", fake_run_in)  # ... but it was released by the interrupt
    third, _, _ = nightly.run_nightly(inv, scenarios, runs, log=lambda _: None)
    assert third.diff["previous"] == first.out_dir.name
    assert third.diff["skipped_partial"] == [partial.name]
    assert third.diff["status"] == "no change"
    assert partial.name in third.index.read_text()


def test_a_refused_nightly_writes_nothing(inv, scenarios, tmp_path):
    runs = tmp_path / "runs"
    with nightly.lab_lock(inv):
        with pytest.raises(ChainlabError, match=rf"a chainlab command on lab {inv.lab} \(lab up/down, run, nightly,"
                                                rf" probe or matrix\) is already running \(pid {os.getpid()}: "):
            nightly.run_nightly(inv, scenarios, runs, log=lambda _: None)
    assert not list(runs.iterdir())
