"""Pure parts of scenario runs: what the probe runs, where a log slice starts."""

import subprocess

import pytest

from chainlab.errors import ChainlabError
from chainlab.labstate import ContainerState, HostState, LabState
from chainlab.run.collect import LogMark, mark_argv, parse_mark, parse_slice, slice_argv
from chainlab.run.probe import build_probe
from chainlab.run.snapshot import (
    CONTAINERS_SEPARATOR, ROUTES_SEPARATOR, Snapshot, container_problem, parse_snapshot, snapshot_command,
)
from chainlab.scenario import load_scenario

from ..conftest import ROOT

STATE = LabState(
    lab="t",
    hosts={
        "master": HostState(address="10.231.91.195", trace_log="/var/log/iptables.log", trace_backend="ulogd", iptables="legacy"),
        "slave1": HostState(address="10.231.91.196", trace_log="/var/log/iptables.log", trace_backend="ulogd", iptables="legacy"),
    },
    containers={
        "web1": ContainerState(host="master", address="172.20.1.2", network="net1", driver="calico", interface="cali0123456789a"),
        "web3": ContainerState(host="slave1", address="172.20.2.2", network="net1", driver="calico"),
    },
)


def scenario(number: int):
    return load_scenario(next((ROOT / "scenarios").glob(f"{number:02d}-*.yaml")))


def test_host_pings_container():
    spec = build_probe(scenario(1), STATE)
    assert spec.host == "master" and spec.container is None
    assert spec.argv == ("ping", "-c", "1", "-W", "1", "-i", "0.2", "172.20.1.2")


def test_container_pings_container_on_other_node():
    spec = build_probe(scenario(6), STATE)
    assert (spec.host, spec.container, spec.target_address) == ("master", "web1", "172.20.2.2")
    assert spec.where == "web1 (on master)"


def test_tcp_probe_from_container():
    spec = build_probe(scenario(7), STATE)
    assert spec.argv == ("nc", "-w", "2", "10.231.91.196", "8080", "-e", "true")


def test_tcp_probe_from_host_uses_bash_dev_tcp():
    from_host = scenario(7).model_copy(update={"source": scenario(1).source})
    spec = build_probe(from_host, STATE)
    assert spec.argv == ("timeout", "2", "bash", "-c", 'exec 3<>"/dev/tcp/$1/$2"', "bash", "10.231.91.196", "8080")


def test_unknown_container_is_a_clean_error():
    state = STATE.model_copy(update={"containers": {}})
    with pytest.raises(ChainlabError, match="web1 is not in the lab state"):
        build_probe(scenario(2), state)


def _read(path, before):
    out = subprocess.run(slice_argv(str(path), before), capture_output=True, text=True, check=True).stdout
    return parse_slice(out, before)


def _slice(path, before):
    return _read(path, before)[0]


def _mark(path):
    return parse_mark(subprocess.run(mark_argv(str(path)), capture_output=True, text=True, check=True).stdout)


def _append(path, text):
    with path.open("a") as f:
        f.write(text)


def test_log_slice_missing_created_appended(tmp_path):
    log = tmp_path / "iptables.log"
    missing = _mark(log)
    assert missing == LogMark(None, 0) and _slice(log, missing) == ""
    log.write_text("old\n")
    assert _slice(log, missing) == "old\n"  # created after the mark: all of it
    before = _mark(log)
    _append(log, "new line\n")
    assert _slice(log, before) == "new line\n"


def test_log_slice_truncated_in_place_even_when_grown_again(tmp_path):
    log = tmp_path / "iptables.log"
    log.write_text("line one\n")
    before = _mark(log)
    log.write_text("x\n")
    assert _slice(log, before) == "x\n"  # shorter: from the start
    log.write_text("A-B-C-D-E-F-G\n")  # copytruncate, then more than the mark was
    assert _slice(log, before) == "A-B-C-D-E-F-G\n"


def test_log_slice_renamed_away_keeps_what_the_old_file_got(tmp_path):
    log = tmp_path / "iptables.log"
    log.write_text("before\n")
    before = _mark(log)
    _append(log, "late in the old file\n")
    log.rename(tmp_path / "iptables.log.1")
    log.write_text("first in the new file\n")
    assert _slice(log, before) == "late in the old file\nfirst in the new file\n"


def test_log_slice_follows_a_symlinked_path(tmp_path):
    real = tmp_path / "real.log"
    real.write_text("old\n")
    link = tmp_path / "iptables.log"
    link.symlink_to(real)
    before = _mark(link)
    _append(real, "new\n")
    assert _slice(link, before) == "new\n"


def test_a_mark_shares_its_round_trip_with_what_follows(tmp_path):
    for path in (tmp_path / "missing.log", tmp_path / "there.log"):
        if path.name == "there.log":
            path.write_text("x\n")
        out = subprocess.run(mark_argv(str(path), then="echo snapshot"), capture_output=True, text=True).stdout
        line, _, rest = out.partition("\n")
        assert parse_mark(line) == _mark(path) and rest == "snapshot\n"


def test_probe_spec_says_how_long_the_probe_may_run():
    assert build_probe(scenario(1), STATE).seconds == 1  # one ping, -W 1
    five = scenario(1).model_copy(update={"probe": scenario(1).probe.model_copy(update={"count": 5})})
    assert build_probe(five, STATE).seconds == pytest.approx(1.8)
    assert build_probe(scenario(7), STATE).seconds == 2


def test_snapshot_reports_the_scenario_containers_state(tmp_path):
    """The snapshot's shell text, run by a real shell with a stand-in `docker` on PATH."""
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "/web1 exited"\necho "Error: No such container: web2" >&2\nexit 1\n')
    fake.chmod(0o755)
    text = snapshot_command(["web1", "web2"]).replace("iptables-save -c", "echo '*filter'").replace("ip route", "echo 'default via x'")
    proc = subprocess.run(["sh", "-c", text], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert proc.returncode == 0  # docker's complaint does not fail the round trip
    snap = parse_snapshot(proc.stdout)
    assert (snap.rules, snap.routes) == ("*filter\n", "default via x\n")
    assert snap.containers == {"web1": "exited"}
    assert container_problem("target", "web1", "master", snap) == "target container web1 on master is exited, not running: run lab up"
    assert container_problem("source", "web2", "master", snap) == (
        "source container web2 is gone from master (docker: Error: No such container: web2): run lab up")
    assert container_problem("source", "web1", "master", parse_snapshot("r\n" + ROUTES_SEPARATOR + "\n\n"
                                                                         + CONTAINERS_SEPARATOR + "\n/web1 running\n")) is None


def test_snapshot_reports_a_container_address_the_lab_state_does_not_know(tmp_path):
    """A container started again with another address (IPAM ran again): the probe and the
    search for its packets would use the lab state's, so the run is an error, not a FAIL."""
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "/web1 running 172.20.0.9"\necho "/web2 running  172.20.0.2"\n')
    fake.chmod(0o755)
    text = snapshot_command(["web1", "web2"]).replace("iptables-save -c", "echo r").replace("ip route", "echo x")
    snap = parse_snapshot(subprocess.run(["sh", "-c", text], capture_output=True, text=True,
                                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout)
    assert snap.addresses == {"web1": {"172.20.0.9"}, "web2": {"172.20.0.2"}}
    assert container_problem("source", "web1", "master", snap, "172.20.0.1") == (
        "source container web1 on master has address 172.20.0.9, the lab state says 172.20.0.1: run lab up")
    assert container_problem("target", "web2", "master", snap, "172.20.0.2") is None
    assert container_problem("target", "web1", "master", snap) is None  # no address to compare
    assert "{{range .NetworkSettings.Networks}} {{.IPAddress}}{{end}}" in snapshot_command(["web1"])


def test_snapshot_without_containers_asks_docker_nothing():
    assert "docker" not in snapshot_command([])
    assert parse_snapshot("rules\n" + ROUTES_SEPARATOR + "\nroutes\n") == Snapshot("rules\n", "routes\n")


def test_log_slice_says_how_the_file_went_since_the_mark(tmp_path):
    """after / new / rotated read all that came since the mark; truncated and lost may have
    missed some (the run makes that node an error, not a FAIL of its paths)."""
    log = tmp_path / "iptables.log"
    assert _read(log, _mark(log))[2] == "new"
    log.write_text("before\n")
    before = _mark(log)
    _append(log, "more\n")
    assert _read(log, before)[2] == "after"
    log.write_text("")
    assert _read(log, before)[2] == "truncated"
    log.write_text("before\nmore\n")
    before = _mark(log)
    log.rename(tmp_path / "iptables.log.1")
    log.write_text("new\n")
    assert _read(log, before)[2] == "rotated"
    (tmp_path / "iptables.log.1").unlink()
    assert _read(log, before)[2] == "lost"
    log.unlink()
    assert _read(log, before) == ("", LogMark(None, 0), "lost")
