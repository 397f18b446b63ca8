"""A scenario run judges its own probe's packets, not everything the trace rules caught in its window."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from chainlab.labstate import HostState, LabState
from chainlab.run.attribute import attribute
from chainlab.run.probe import Place, ProbeRequest, ProbeSpec
from chainlab.run import runner
from chainlab.run.runner import own_addresses
from chainlab.run.snapshot import route_sources
from chainlab.scenario import load_scenario
from chainlab.trace.expect import check_scenario
from chainlab.trace.pipeline import AnalysisOptions, analyze
from chainlab.trace.reader import LogSource

from ..conftest import FIXTURES, ROOT

LAB = FIXTURES / "lab"
NAT_FILTER = {"nat", "filter"}
SLAVE1 = "172.16.91.226"  # scenario 3's target in the fixture's lab

#: A ping of master's own loopback during scenario 3's window (lines in the kernel's format,
#: as `ping -c1 127.0.0.1` on a traced host writes them; its echo id is not the probe's).
LOOPBACK_PING = "".join(
    f"Dec  2 03:38:09 master kernel: TRACE: {where} {inout} SRC=127.0.0.1 DST=127.0.0.1 LEN=84 TOS=0x00 PREC=0x00"
    f" TTL=64 ID={ip_id} DF PROTO=ICMP TYPE={icmp_type} CODE=0 ID=4242 SEQ=1 \n"
    for where, inout, ip_id, icmp_type in [
        ("raw:OUTPUT:policy:2", "IN= OUT=lo", 5001, 8), ("nat:OUTPUT:policy:1", "IN= OUT=lo", 5001, 8),
        ("filter:OUTPUT:policy:1", "IN= OUT=lo", 5001, 8), ("nat:POSTROUTING:policy:1", "IN= OUT=lo", 5001, 8),
        ("raw:PREROUTING:policy:3", "IN=lo OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00", 5001, 8),
        ("filter:INPUT:policy:1", "IN=lo OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00", 5001, 8),
        ("raw:OUTPUT:policy:2", "IN= OUT=lo", 5002, 0), ("filter:OUTPUT:policy:1", "IN= OUT=lo", 5002, 0),
        ("raw:PREROUTING:policy:3", "IN=lo OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00", 5002, 0),
        ("filter:INPUT:policy:1", "IN=lo OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00", 5002, 0),
    ])


def _scenario3_with_noise(tmp_path: Path):
    master = tmp_path / "master.log"
    lines = (LAB / "scenario3-master.log").read_text().splitlines(keepends=True)
    master.write_text("".join(lines[:3]) + LOOPBACK_PING + "".join(lines[3:]))
    return analyze([LogSource(master, "master"), LogSource(LAB / "scenario3-slave1.log", "slave1")],
                   AnalysisOptions(tables=NAT_FILTER))


def test_a_loopback_ping_in_the_window_is_not_the_probe(tmp_path: Path) -> None:
    """What `chainlab run 3` judges and writes: the packets run/attribute.py gives its probe."""
    result = _scenario3_with_noise(tmp_path)
    scenario = load_scenario(next((ROOT / "scenarios").glob("03-*.yaml")))
    nodes = {"master", "slave1"}
    spec = ProbeSpec(ProbeRequest("web1", "slave1"), Place("web1", "master", "172.20.219.81", "web1"),
                     Place("slave1", "slave1", SLAVE1), SLAVE1, (), "")
    mine = attribute(result.packets, [spec], {"master": frozenset({"172.16.91.225"}), "slave1": frozenset({SLAVE1})})[0]
    assert sorted((p.node, p.direction, p.fields.icmp_id) for p in mine) == [
        ("master", "reply", 17), ("master", "request", 17), ("slave1", "reply", 17), ("slave1", "request", 17)]
    assert all(c.ok for c in check_scenario(scenario, mine, nodes))
    # every ICMP packet of the window, as runs judged before: the loopback ping fails master
    failed = [c for c in check_scenario(scenario, result.packets, nodes) if not c.ok]
    assert {(c.node, c.direction) for c in failed} == {("master", "request"), ("master", "reply")}


def test_a_masquerade_to_another_interfaces_address_is_followed(tmp_path: Path) -> None:
    """A host reached on a management address masquerades to its lab link's address: the
    run knows that one from the routes it recorded (`ip route`'s `src`)."""
    hosts = {"master": HostState(address="192.168.122.10", trace_log="/var/log/iptables.log", trace_backend="rsyslog",
                                 iptables="legacy"),
             "slave1": HostState(address="192.168.122.11", trace_log="/var/log/iptables.log", trace_backend="rsyslog",
                                 iptables="legacy")}
    state = LabState(lab="vms", hosts=hosts)
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "master.txt").write_text(
        "default via 192.168.122.1 dev eth0\n192.168.122.0/24 dev eth0 proto kernel scope link src 192.168.122.10\n"
        "172.16.91.0/24 dev ens33 proto kernel scope link src 172.16.91.225 \n")
    result = analyze([LogSource(LAB / "scenario3-master.log", "master"), LogSource(LAB / "scenario3-slave1.log", "slave1")],
                     AnalysisOptions(tables=NAT_FILTER))
    spec = ProbeSpec(ProbeRequest("web1", "slave1"), Place("web1", "master", "172.20.219.81", "web1"),
                     Place("slave1", "slave1", SLAVE1), SLAVE1, (), "")
    addresses = own_addresses(state, tmp_path)
    assert addresses["master"] == {"192.168.122.10", "172.16.91.225"} and addresses["slave1"] == {"192.168.122.11"}
    mine = attribute(result.packets, [spec], addresses)[0]
    assert {p.node for p in mine} == {"master", "slave1"} and len(mine) == 4
    # with the inventory's address alone, slave1's request is not known as the probe's
    lost = attribute(result.packets, [spec], {n: frozenset({str(h.address)}) for n, h in hosts.items()})[0]
    assert sorted((p.node, p.direction) for p in lost) == [("master", "reply"), ("master", "request"), ("slave1", "reply")]


def test_route_sources() -> None:
    assert route_sources("") == frozenset()
    assert route_sources("10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.5\n"
                         "default via 10.0.0.1 dev eth0\n172.30.1.0/24 dev docker0 proto kernel scope link src"
                         " 172.30.1.1 linkdown\n") == {"10.0.0.5", "172.30.1.1"}


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")
def test_a_run_writes_only_its_probes_packets_and_counts_the_others(tmp_path: Path) -> None:
    """runner._analyze_run on a run dir as a capture leaves it (no lab: the logs are given)."""
    run_dir = tmp_path / "run"
    for sub in ("logs", "rules", "routes"):
        (run_dir / sub).mkdir(parents=True)
    lines = (LAB / "scenario3-master.log").read_text().splitlines(keepends=True)
    (run_dir / "logs" / "master.log").write_text("".join(lines[:3]) + LOOPBACK_PING + "".join(lines[3:]))
    shutil.copy(LAB / "scenario3-slave1.log", run_dir / "logs" / "slave1.log")
    (run_dir / "routes" / "master.txt").write_text("172.16.91.0/24 dev ens33 proto kernel scope link src 172.16.91.225\n")
    hosts = {name: HostState(address=address, trace_log="/var/log/iptables.log", trace_backend="rsyslog", iptables="legacy")
             for name, address in (("master", "192.168.122.10"), ("slave1", SLAVE1))}
    spec = ProbeSpec(ProbeRequest("web1", "slave1"), Place("web1", "master", "172.20.219.81", "web1"),
                     Place("slave1", "slave1", SLAVE1), SLAVE1, ("ping", "-c", "1", SLAVE1), f"ping -c 1 {SLAVE1}")
    scenario = load_scenario(next((ROOT / "scenarios").glob("03-*.yaml")))
    result = runner._analyze_run(scenario, run_dir, datetime.now(), 0.5, spec, 0, LabState(lab="vms", hosts=hosts), [])
    assert result.passed and all(c.ok for c in result.checks)
    doc = json.loads((run_dir / "analysis.json").read_text())
    assert len(doc["packets"]) == 4 and all("127.0.0.1" not in (p["src"], p["dst"]) for p in doc["packets"])
    assert doc["run"]["probe"]["other_packets"] > 0 and doc["run"]["lab"] == "vms"
    assert "other packets in the window, not the probe's" in (run_dir / "report.html").read_text()
