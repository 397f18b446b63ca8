"""`chainlab probe`, `matrix`, `ssh` and the pytest plugin on an own, provisioned local lab
(lab ex2 on 10.231.71.0/24: master and slave1 legacy, slave2 nft, as make_inventory_file
makes it; always taken down)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainlab.report.screenshot import dump_dom, find_chromium, screenshot

from .conftest import ROOT, make_inventory_file
from .test_scenario_runs import CHAINLAB, cli, provisioned

pytestmark = pytest.mark.integration

LAN = "10.231.71"
SLAVE1 = f"{LAN}.196"
#: What the Calico lab drops: a host's packets to a container on another host.
BLOCKED = {("master", "web3"), ("slave1", "web1"), ("slave1", "web2"), ("slave2", "web1"), ("slave2", "web2"),
           ("slave2", "web3")}


@pytest.fixture(scope="module")
def explore_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("explore-lab")
    inv = make_inventory_file(directory, lab="ex2", lan=LAN)
    with provisioned(inv):
        yield inv, directory / "runs"


def newest(runs: Path, pattern: str) -> Path:
    return sorted(runs.glob(pattern))[-1]


def test_probe_names_masters_cali_tw_rule_and_exits_1(explore_lab):
    inv, runs = explore_lab
    proc = cli(inv, "probe", "slave1", "web1", "--runs", str(runs), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "UNREACHABLE slave1 → web1 icmp: dropped on master: filter:cali-tw-cali" in proc.stdout
    assert "Drop if no profiles matched" in proc.stdout
    run_dir = newest(runs, "*-probe-slave1-web1-icmp")
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert {(p["node"], p["direction"], p["verdict"]) for p in analysis["packets"]} == {
        ("slave1", "request", "accepted"), ("master", "request", "dropped")}
    assert analysis["run"]["kind"] == "probe" and analysis["run"]["passed"] is False
    assert isinstance(analysis["run"]["probe"]["other_packets"], int)
    assert "UNREACHABLE" in (run_dir / "report.html").read_text()


def test_tcp_probe_passes_through_both_nodes(explore_lab):
    inv, runs = explore_lab
    proc = cli(inv, "probe", "web1", "web3", "--tcp", "80", "--runs", str(runs), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REACHABLE web1 → web3 tcp/80: reachable" in proc.stdout
    analysis = json.loads((newest(runs, "*-probe-web1-web3-tcp-80") / "analysis.json").read_text())
    syns = {(p["node"], p["direction"]): p for p in analysis["packets"] if "SYN" in p.get("tcp_flags", [])}
    assert set(syns) == {(n, d) for n in ("master", "slave1") for d in ("request", "reply")}
    assert all(p["verdict"] == "accepted" for p in syns.values())
    assert syns[("master", "request")]["hooks"][-1] == "POSTROUTING" and syns[("slave1", "request")]["dport"] == 80


def test_a_hosts_own_loopback_is_probed_and_traced(explore_lab):
    """The README allows the source's own loopback (it stays in its namespace): master's ping
    to 127.0.0.1 goes out and back in on lo, in master's trace."""
    inv, runs = explore_lab
    proc = cli(inv, "probe", "master", "127.0.0.1", "--runs", str(runs), check=False)
    assert proc.returncode == 0 and "REACHABLE master → 127.0.0.1 icmp: reachable" in proc.stdout, proc.stdout
    analysis = json.loads((newest(runs, "*-probe-master-127.0.0.1-icmp") / "analysis.json").read_text())
    request = [p for p in analysis["packets"] if p["node"] == "master" and p["direction"] == "request"]
    assert request and request[0]["hooks"][0] == "OUTPUT" and request[0]["hooks"][-1] == "INPUT"


def test_udp_probes_start_and_stop_their_listener(explore_lab):
    inv, runs = explore_lab
    proc = cli(inv, "probe", "web3", "slave1", "--udp", "5353", "--runs", str(runs), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "listener: nothing listened on udp/5353 in slave1: chainlab's own answers there" in proc.stdout
    assert "answer of 17 bytes" in (newest(runs, "*-probe-web3-slave1-udp-5353") / "probe.txt").read_text()
    listening = cli(inv, "ssh", "slave1", "--", "sh", "-c", "ss -Hlun sport = :5353").stdout
    assert listening == ""  # the listener went with the probe
    blocked = cli(inv, "probe", "slave1", "web1", "--udp", "5353", "--runs", str(runs), check=False)
    assert blocked.returncode == 1 and "dropped on master: filter:cali-tw-" in blocked.stdout


def test_matrix_six_by_six_with_rules_then_changed_cells_after_a_profile_change(explore_lab):
    inv, runs = explore_lab
    proc = cli(inv, "matrix", "--runs", str(runs))
    for name in ("master", "slave1", "slave2", "web1", "web2", "web3"):
        assert name in proc.stdout
    assert "24/30 reachable" in proc.stdout and proc.stdout.count("✗") == 6
    assert proc.stdout.count("Drop if no profiles matched") == 3  # one footnote per deciding rule
    first = newest(runs, "*-matrix-icmp")
    doc = json.loads((first / "matrix.json").read_text())
    assert len(doc["cells"]) == 30 and doc["waves"] > 1  # slave2's nft trace: its ICMP probes one at a time
    unreachable = {(c["source"], c["target"]): c for c in doc["cells"] if not c["reachable"]}
    assert set(unreachable) == BLOCKED
    for (source, target), cell in unreachable.items():
        expected_node = "slave1" if target == "web3" else "master"
        assert cell["drop"]["node"] == expected_node and cell["drop"]["chain"].startswith("cali-tw-")
        assert "Drop if no profiles matched" in cell["drop"]["rule"]
        assert (first / cell["report"]).is_file()

    if find_chromium():
        dom = dump_dom(first / "matrix.html")
        assert dom.count('data-state="reachable"') == 24 and dom.count('data-state="unreachable"') == 6
        assert dom.count('class="callout" id="rule-') == 3
        png = screenshot(first / "matrix.html", first / "matrix.png", width=1400, height=1000)
        assert png.stat().st_size > 10_000

    cli(inv, "profile", "allow", "net1", "--from", f"{SLAVE1}/32")
    try:
        time.sleep(1.5)  # felix-lite re-applies within a second
        proc = cli(inv, "matrix", "--runs", str(runs))
        assert f"changed since {first.name}: slave1 → web1 (master filter:cali-tw-" in proc.stdout
        doc = json.loads((newest(runs, "*-matrix-icmp") / "matrix.json").read_text())
        assert {(c["source"], c["target"]) for c in doc["cells"] if c["changed"]} == {("slave1", "web1"), ("slave1", "web2")}
        assert doc["previous"] == first.name and "26 of 30 reachable" in (newest(runs, "*-matrix-icmp") / "matrix.html").read_text()
    finally:
        cli(inv, "profile", "reset", "net1")


def test_matrix_against_an_expectation(explore_lab, tmp_path):
    inv, runs = explore_lab
    expect = tmp_path / "expect.txt"
    expect.write_text("ICMP    web1  web3\nslave1  X     .\nweb1    -     .\n")
    proc = cli(inv, "matrix", "--from", "slave1,web1", "--to", "web1,web3", "--expect", str(expect), "--runs", str(runs))
    assert proc.stdout.count("PASS") == 4 and proc.stdout.rstrip().splitlines()[-2] == "PASS"
    expect.write_text("ICMP    web1  web3\nslave1  .     .\nweb1    -     .\n")
    proc = cli(inv, "matrix", "--from", "slave1,web1", "--to", "web1,web3", "--expect", str(expect), "--runs", str(runs),
               check=False)
    assert proc.returncode == 1 and f"FAIL: 1 cell(s) differ from {expect}" in proc.stdout


def test_ssh_runs_a_command_with_chainlabs_keys(explore_lab):
    inv, _ = explore_lab
    assert cli(inv, "ssh", "slave1", "--", "hostname").stdout == "slave1\n"
    assert cli(inv, "ssh", "master", "--", "sh", "-c", "exit 3", check=False).returncode == 3
    names = cli(inv, "ssh", "master", "docker", "ps", "--format", "{{.Names}}").stdout.split()
    assert sorted(names) == ["web1", "web2"]
    # without a command: the login shell, here reading its commands from stdin (no terminal)
    shell = subprocess.run([CHAINLAB, "-i", str(inv), "ssh", "slave2"], input="hostname\n", capture_output=True,
                           text=True, timeout=60)
    assert shell.returncode == 0 and shell.stdout.strip().splitlines()[-1] == "slave2", shell.stderr


def test_pytest_runs_the_scenarios_through_the_plugin(explore_lab, pytester: pytest.Pytester):
    inv, runs = explore_lab
    args = [str(ROOT / "scenarios"), "--chainlab-inventory", str(inv), "--chainlab-runs", str(runs), "-rs",
            f"--junitxml={pytester.path / 'junit.xml'}"]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=6, skipped=1)
    assert 'tests="7"' in (pytester.path / "junit.xml").read_text()
    cli(inv, "profile", "allow", "net1", "--from", f"{SLAVE1}/32")
    try:
        time.sleep(1.5)
        result = pytester.runpytest_subprocess(*args, "-k", "04")
        result.assert_outcomes(failed=1, deselected=6)
        result.stdout.fnmatch_lines([
            "*scenario 4: another node to a container: expected vs seen*",
            "master*request*PREROUTING → FORWARD, dropped in cali-tw-*"
            "*expected verdict dropped, saw accepted*",
            "*probe outcome reachable, expected unreachable*",
        ])
    finally:
        cli(inv, "profile", "reset", "net1")


def test_the_readmes_test_file_passes_with_the_lab_fixture(explore_lab, pytester: pytest.Pytester):
    inv, runs = explore_lab
    shutil.copy(ROOT / "examples" / "test_calico_lab.py", pytester.path)
    result = pytester.runpytest_subprocess("--chainlab-inventory", str(inv), "--chainlab-runs", str(runs))
    result.assert_outcomes(passed=4)


def test_chainlab_up_brings_the_lab_up_and_takes_it_down(tmp_path, pytester: pytest.Pytester):
    """A lab that is not up (exn, 10.231.72.0/24): the session builds and provisions it
    for the test that needs it, and takes it down at the end."""
    inv = make_inventory_file(tmp_path, lab="exn", lan="10.231.72")
    pytester.makepyfile(test_up="""
        def test_probe(lab):
            assert lab.probe("web1", "web3").reached
    """)
    try:
        result = pytester.runpytest_subprocess("--chainlab-inventory", str(inv), "--chainlab-up",
                                               "--chainlab-runs", str(tmp_path / "runs"))
        result.assert_outcomes(passed=1)
        status = cli(inv, "local", "status").stdout
        assert "up" not in status.replace("up since", "") and not (tmp_path / "state" / "lab-state.json").exists()
    finally:
        cli(inv, "local", "down", check=False)


def test_probe_on_a_docker_bridge_lab_names_both_nats(tmp_path):
    """lab/local-bridge.yaml as lab exn: web1 → slave1:8080, published by web2."""
    inv = make_inventory_file(tmp_path, lab="exn", lan="10.231.72", source=ROOT / "lab" / "local-bridge.yaml")
    with provisioned(inv):
        proc = cli(inv, "probe", "web1", "slave1", "--tcp", "8080", "--runs", str(tmp_path / "runs"))
        assert re.search(r"SNAT on master: src 172\.30\.1\.2:\d+ → 10\.231\.72\.195:\d+", proc.stdout), proc.stdout
        assert "DNAT on slave1: dst 10.231.72.196:8080 → 172.30.2.2:80" in proc.stdout  # the published port
        proc = cli(inv, "matrix", "--from", "master,web1", "--to", "web2", "--runs", str(tmp_path / "runs"))
        assert "lost after routing on master (request)" in proc.stdout  # web1's packet: no route to slave1's bridge
        assert "no packet of the probe was traced (ping: connect: Network is unreachable)" in proc.stdout
