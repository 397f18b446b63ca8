"""`chainlab run` and `chainlab nightly` end to end on an own, provisioned local lab."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chainlab.inventory import load_inventory
from chainlab.labstate import load_state, save_state
from chainlab.remote import connect, docker_client, run

from .conftest import ROOT, make_inventory_file

pytestmark = pytest.mark.integration

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
SCENARIOS = str(ROOT / "scenarios")


def cli(inv: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CHAINLAB, "-i", str(inv), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"chainlab {' '.join(args)} exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextmanager
def provisioned(inv: Path) -> Iterator[None]:
    """The lab of `inv` up and provisioned for the block; always taken down."""
    if os.geteuid() != 0:
        pytest.skip("the local lab needs root")
    try:
        cli(inv, "local", "up")
        cli(inv, "lab", "up")
        yield
    finally:
        subprocess.run([CHAINLAB, "-i", str(inv), "lab", "down"], capture_output=True)
        subprocess.run([CHAINLAB, "-i", str(inv), "local", "down"], capture_output=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("runs-lab")
    inv = make_inventory_file(directory, lab="runit", lan="10.231.96")
    with provisioned(inv):
        yield inv, directory / "runs"


def nightly(inv: Path, runs: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = cli(inv, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS, check=False)
    newest = sorted(runs.glob("nightly-*"))[-1]
    return proc, json.loads((newest / "summary.json").read_text())


def test_nightly_passes_all_calico_scenarios_and_diffs(lab):
    inv, runs = lab
    proc, summary = nightly(inv, runs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s["id"] for s in summary["scenarios"]] == [1, 2, 3, 4, 5, 6]
    assert all(s["passed"] for s in summary["scenarios"])
    out_dir = sorted(runs.glob("nightly-*"))[-1]
    for name in ("index.html", "junit.xml", "summary.json"):
        assert (out_dir / name).is_file()
    run4 = next(out_dir.glob("*-04-*"))
    for name in ("analysis.json", "report.html", "diagram.svg", "probe.txt", "logs/master.log", "rules/master.rules"):
        assert (run4 / name).is_file(), name
    analysis = json.loads((run4 / "analysis.json").read_text())
    drop = next(p for p in analysis["packets"] if p["node"] == "master" and p["direction"] == "request")
    assert drop["verdict"] == "dropped" and drop["last_step"]["chain"].startswith("cali-tw-")
    assert "Drop if no profiles matched" in drop["reason"]

    proc, summary = nightly(inv, runs)
    assert summary["diff"]["text"] == ["no change"], summary["diff"]

    cli(inv, "profile", "allow", "net1", "--from", "10.231.96.196/32")
    try:
        time.sleep(1)  # felix-lite applies the change within a second
        proc, summary = nightly(inv, runs)
        assert proc.returncode == 1
        assert summary["diff"]["status"] == "changed"
        assert any(line.startswith("scenario 4") for line in summary["diff"]["text"])
        assert not any(line.startswith(("scenario 1 ", "scenario 5 ")) for line in summary["diff"]["text"])
    finally:
        cli(inv, "profile", "reset", "net1")


def test_kill_9_during_a_run_leaves_nothing_behind(lab):
    inv, runs = lab
    before = rules(inv)
    proc = subprocess.Popen([CHAINLAB, "-i", str(inv), "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = cli(inv, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "PASS" in again.stdout
    assert rules(inv) == before


def test_a_container_with_another_address_than_the_lab_states_is_an_error(lab):
    """docker's own word on web1's address against the lab state's (as after a container was
    started again and given a new address): an error before probing, not a FAIL."""
    inv, runs = lab
    inventory = load_inventory(inv)
    state = load_state(inventory)
    web1 = state.containers["web1"]
    moved = web1.model_copy(update={"address": "172.20.250.250"})
    save_state(inventory, state.model_copy(update={"containers": {**state.containers, "web1": moved}}))
    try:
        proc = cli(inv, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        said = proc.stdout + proc.stderr
        assert f"target container web1 on master has address {web1.address}, the lab state says 172.20.250.250" in said
        cli(inv, "lab", "up")  # what the message says to do
        assert load_state(inventory).containers["web1"].address == web1.address
        assert cli(inv, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS).returncode == 0
    finally:
        save_state(inventory, state)


def test_a_scenario_that_cannot_run_is_an_error_and_lab_up_repairs(lab):
    inv, runs = lab
    client = docker_client(load_inventory(inv), "master")
    try:
        client.containers.get("web1").remove(force=True)
    finally:
        client.close()
    proc, summary = nightly(inv, runs)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = {s["id"]: s["error"] for s in summary["scenarios"] if s["error"]}
    # every scenario with web1 as source or target: an error before probing, never a FAIL
    assert set(errors) == {1, 2, 3, 4, 5, 6} and all("web1 is gone from master" in e for e in errors.values())
    assert len(summary["scenarios"]) == 6
    cli(inv, "lab", "up")
    proc, summary = nightly(inv, runs)
    assert proc.returncode == 0, proc.stdout


def rules(inv: Path) -> dict[str, str]:
    """Every host's rules without counters (chain headers carry them) and comment lines."""
    inventory = load_inventory(inv)
    out = {}
    for host in inventory.hosts:
        conn = connect(inventory, host)
        try:
            text = run(conn, ["iptables-save"]).stdout
        finally:
            conn.close()
        out[host] = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines() if not line.startswith("#"))
    return out


@pytest.fixture(scope="module")
def bridge_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """lab/local-bridge.yaml (plain Docker, no Calico) on its own subnet and state dir."""
    directory = tmp_path_factory.mktemp("bridge-lab")
    inv = make_inventory_file(directory, lab="bridgeit", lan="10.231.99", source=ROOT / "lab" / "local-bridge.yaml")
    with provisioned(inv):
        yield inv, directory / "runs"


def test_scenario_7_tcp_to_a_published_port_on_a_docker_bridge_lab(bridge_lab):
    inv, runs = bridge_lab
    before = rules(inv)
    proc = cli(inv, "run", "7", "--runs", str(runs), "--scenarios", SCENARIOS, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    analysis = json.loads(next(runs.glob("*-07-*/analysis.json")).read_text())
    master_syn = next(p for p in analysis["packets"] if p["node"] == "master" and p["direction"] == "request")
    assert master_syn["protocol"] == "tcp"
    rules_seen = " ".join(step.get("rule") or "" for p in analysis["packets"] for step in p["steps"])
    assert "MASQUERADE" in rules_seen and "DNAT --to-destination" in rules_seen
    assert rules(inv) == before


def test_a_hosts_own_traffic_in_the_window_is_not_the_probe(bridge_lab):
    """What a real host does while a scenario runs (a local etcd client on loopback, a ping)
    is traced too; the run judges only its own probe's packets."""
    inv, runs = bridge_lab
    inventory = load_inventory(inv)
    noise = ("for i in $(seq 150); do curl -s -m 1 http://127.0.0.1:2379/ >/dev/null; ping -c 1 -W 1 127.0.0.1"
             " >/dev/null; sleep 0.1; done")
    conn = connect(inventory, "master")
    try:
        pid = run(conn, ["sh", "-c", f"({noise}) </dev/null >/dev/null 2>&1 & echo $!"]).stdout.strip()
        try:
            proc = cli(inv, "run", "7", "--runs", str(runs), "--scenarios", SCENARIOS, check=False)
        finally:
            run(conn, ["sh", "-c", f"kill {int(pid)} 2>/dev/null; true"])
    finally:
        conn.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    newest = sorted(runs.glob("*-07-*"))[-1]
    analysis = json.loads((newest / "analysis.json").read_text())
    assert {p["node"] for p in analysis["packets"]} == {"master", "slave1"}
    assert all("127.0.0.1" not in (p["src"], p["dst"]) for p in analysis["packets"])
    assert analysis["run"]["probe"]["other_packets"] > 0
    assert "SRC=127.0.0.1" in (newest / "logs" / "master.log").read_text()  # the raw evidence keeps it
    assert "other packets in the window, not the probe's" in (newest / "report.html").read_text()
