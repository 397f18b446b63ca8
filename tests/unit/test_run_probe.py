"""Pure parts of scenario runs: what the probe runs, where a log slice starts."""

import subprocess

import pytest

from chainlab.errors import ChainlabError
from chainlab.labstate import ContainerState, HostState, LabState
from chainlab.run.collect import LogMark, parse_slice, slice_argv
from chainlab.run.probe import build_probe
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


def _slice(path, before):
    out = subprocess.run(slice_argv(str(path), before), capture_output=True, text=True, check=True).stdout
    return parse_slice(out)


def test_log_slice_appended_rotated_truncated_missing(tmp_path):
    log = tmp_path / "iptables.log"
    text, missing = _slice(log, LogMark(None, 0))
    assert (text, missing) == ("", LogMark(None, 0))
    log.write_text("old\n")
    text, before = _slice(log, missing)  # created after the mark: all of it
    assert text == "old\n" and before.size == 4
    with log.open("a") as f:
        f.write("new line\n")
    text, now = _slice(log, before)  # appended: only the new bytes
    assert text == "new line\n" and now.inode == before.inode
    log.write_text("x\n")
    assert _slice(log, now)[0] == "x\n"  # truncated: from the start
    log.unlink()
    (tmp_path / "other").write_text("pad")  # a new inode for the rotated file
    log.write_text("rotated\n")
    assert _slice(log, now)[0] == "rotated\n"
