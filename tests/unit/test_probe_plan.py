"""Planning probes (pure), their shell scripts run for real in a private network namespace,
`chainlab ssh`'s command line, and the CLI's answers to bad input (no lab needed)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml

from chainlab.errors import ChainlabError, InputError
from chainlab.inventory import load_inventory
from chainlab.labstate import LabState
from chainlab.remote.batch import Batch
from chainlab.remote.openssh import ssh_argv
from chainlab.remote.target import Target
from chainlab.run.explore import check_addresses
from chainlab.run.runner import check_traced
from chainlab.run.probe import (CONTAINER_GONE, UDP_CLIENT, ListenerSpec, Place, ProbeRequest, ProbeSpec,
                                listeners_for, parse_listener, plan_probe, probe_command, resolve)

from ..conftest import FIXTURES, ROOT

STATE = LabState.model_validate_json((FIXTURES / "matrix" / "lab-state.json").read_text())
CHAINLAB = Path(sys.executable).parent / "chainlab"


def test_requests_are_checked():
    for bad in (dict(protocol="icmp", port=80), dict(protocol="tcp"), dict(protocol="udp", port=0),
                dict(count=0), dict(protocol="sctp", port=1), dict(protocol="tcp", port=80, count=2)):
        with pytest.raises(InputError):
            ProbeRequest("web1", "web3", **bad)  # type: ignore[arg-type]
    assert ProbeRequest("web1", "web3", "udp", 53).label == "web1 → web3 udp/53"


def test_endpoints_by_name_or_address():
    web3 = resolve(STATE, "web3")
    assert isinstance(web3, Place) and (web3.host, web3.container, web3.where) == ("slave1", "web3", "web3 (on slave1)")
    assert resolve(STATE, str(web3.address), address_ok=True) == web3
    assert resolve(STATE, "10.231.70.9", address_ok=True) == "10.231.70.9"
    with pytest.raises(InputError, match="is not a host or a container of lab ex .*master, slave1, slave2, web1"):
        resolve(STATE, "web9")
    with pytest.raises(InputError, match="not a host, a container or an IPv4 address"):
        resolve(STATE, "web9", address_ok=True)


@pytest.mark.parametrize("inventory,outside", [("lab/local.yaml", True), ("lab/vm.yaml", True), ("inventory.yaml", False)])
def test_a_lab_built_here_keeps_address_probes_inside(inventory: str, outside: bool):
    """Local and VM labs refuse an address outside their LAN and pool; real hosts' do not."""
    inv = load_inventory(ROOT / inventory)
    lan_host = next(iter(inv.hosts.values())).address

    def spec(address: str) -> ProbeSpec:
        return ProbeSpec(ProbeRequest("master", address), Place("master", "master", str(lan_host)), None, address, (), "")

    check_addresses(inv, [spec(str(lan_host + 50)), spec("172.20.9.9"), spec("127.0.0.1")])  # its own loopback
    if outside:
        with pytest.raises(InputError, match=r"198\.51\.100\.7: is outside the lab \(.*172\.20\.0\.0/16, or the source's own 127\.0\.0\.0/8\)"):
            check_addresses(inv, [spec("198.51.100.7")])
    else:
        check_addresses(inv, [spec("198.51.100.7")])


def test_what_each_probe_runs_and_where():
    udp = plan_probe(ProbeRequest("web1", "slave2", "udp", 53), STATE)
    assert udp.netns and udp.listen and UDP_CLIENT in udp.argv
    assert udp.shown == "python -c <udp client> 10.231.70.197 53 1"
    command = probe_command(udp)
    assert command.count("docker inspect") == 1
    assert "pid=$(docker inspect --type container -f '{{.State.Pid}}' web1 2>/dev/null) || " in command
    assert "nsenter -t \"$pid\" -n sh -c" in command
    assert CONTAINER_GONE + "web1" in command
    tcp = plan_probe(ProbeRequest("web1", "web3", "tcp", 80), STATE)
    assert probe_command(tcp).endswith("docker exec web1 nc -w 2 172.20.0.65 80 -e true")
    host = plan_probe(ProbeRequest("slave1", "web1", count=3), STATE)
    assert probe_command(host) == "ping -c 3 -W 1 -i 0.2 172.20.0.1" and not host.listen
    assert (udp.seconds, tcp.seconds, host.seconds) == (2, 2, pytest.approx(1.4))  # how long each may run
    assert plan_probe(ProbeRequest("web1", "slave2", "udp", 53, count=3), STATE).seconds == 3
    with pytest.raises(InputError, match="the source itself"):
        plan_probe(ProbeRequest("web1", "web1"), STATE)


def test_one_listener_per_target_port():
    specs = [plan_probe(ProbeRequest(s, "web3", "tcp", 80), STATE) for s in ("web1", "web2", "master")]
    specs.append(plan_probe(ProbeRequest("web1", "10.231.70.9", "tcp", 80), STATE))  # no endpoint: no listener
    assert listeners_for(specs) == [ListenerSpec(resolve(STATE, "web3"), "tcp", 80)]  # type: ignore[arg-type]
    assert "nsenter" in listeners_for(specs)[0].command(60)


def test_listener_answers():
    assert parse_listener("busy\n") is None and parse_listener("listening 4242\n") == 4242
    with pytest.raises(ChainlabError, match="did not start: Traceback"):
        parse_listener("Traceback (most recent call last)")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a network namespace")
def test_listeners_and_clients_for_real_in_a_private_namespace():
    """Everything binds and talks on the loopback of a new network namespace."""
    here = Place("here", "here", "127.0.0.1")
    listeners = [ListenerSpec(here, "tcp", 8081), ListenerSpec(here, "udp", 5353), ListenerSpec(here, "tcp", 8081)]
    state = STATE.model_copy(update={"hosts": {"here": STATE.hosts["master"]}})
    probes = [plan_probe(ProbeRequest("here", "127.0.0.1", p, port), state)
              for p, port in (("tcp", 8081), ("udp", 5353), ("udp", 5354), ("tcp", 8082))]
    batch = Batch.of([probe_command(p) for p in probes], stderr=True, concurrent=True)
    script = "".join(f"{l.command(20)}\n" for l in listeners) + batch.script()
    proc = subprocess.run(["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec sh -c "$1"', "sh", script],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    pids = [parse_listener(line) for line in lines[:3]]
    try:
        assert pids[0] and pids[1] and pids[2] is None, lines  # the second tcp/8081 finds the port taken
        results = batch.parse(proc.stdout)
        assert results[0][0] == 0 and results[1][0] == 0, results
        assert "answer of 17 bytes" in results[1][1]
        assert results[2][0] == 1 and "Connection refused" in results[2][1]  # nothing listens on udp/5354
        assert results[3][0] != 0
    finally:
        for pid in pids:
            if pid:
                os.kill(pid, signal.SIGTERM)


def test_ssh_command_line():
    target = Target("slave1", IPv4Address("10.231.70.196"), "root", 22, Path("/k/id"), Path("/k/known_hosts"), 10, None)
    argv = ssh_argv(target, ["sh", "-c", "echo $HOSTNAME; hostname"])
    assert argv[:3] == ["ssh", "-F", "/dev/null"] and "StrictHostKeyChecking=yes" in argv
    assert argv[argv.index("-i") + 1] == "/k/id" and "UserKnownHostsFile=/k/known_hosts" in argv
    assert argv[-3:] == ["root@10.231.70.196", "--", "sh -c 'echo $HOSTNAME; hostname'"]
    plain = ssh_argv(Target("m", IPv4Address("192.0.2.1"), "ops", 2222, None, None, 5, None))
    assert plain[-1] == "ops@192.0.2.1" and "-i" not in plain and plain[plain.index("-p") + 1] == "2222"
    # the one known_hosts file chainlab's own connections read, nothing else, never written
    assert f"UserKnownHostsFile={Path.home() / '.ssh' / 'known_hosts'}" in plain
    assert "GlobalKnownHostsFile=/dev/null" in plain and "UpdateHostKeys=no" in plain


# --- the CLI on bad input: exit 2, a clean message, nothing run -------------------------

@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """lab/local.yaml with its state dir here and a lab state as `lab up` writes it."""
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["local"]["state_dir"] = str(tmp_path / "state")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "lab-state.json").write_text(STATE.model_dump_json())
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("inventory,untraced", [("lab/local.yaml", {22, 2379, 2380, 7946}),
                                                ("lab/local-bridge.yaml", {22}), ("lab/vm.yaml", {22, 2379, 2380, 7946})])
def test_probes_to_the_ports_the_trace_rules_leave_out_are_refused(inventory: str, untraced: set[int]):
    """The trace rules leave the lab's control ports out (SSH, and a Calico lab's etcd and
    gossip): a probe to one would show no packet, so probe, matrix and run refuse it."""
    inv = load_inventory(ROOT / inventory)
    for port in untraced:
        with pytest.raises(InputError, match=rf"{port}: is not traced: the lab's trace rules leave out its control ports"):
            check_traced(inv, port, "probe port")
    for port in ({22, 80, 2379, 2380, 7946, 8080} - untraced) | {None}:
        check_traced(inv, port, "probe port")


@pytest.mark.skipif(not CHAINLAB.exists(), reason="console script not installed")
@pytest.mark.parametrize("args,message", [
    (["probe", "web9", "web1"], "web9: is not a host or a container"),
    (["probe", "slave1", "8.8.8.8"], "8.8.8.8: is outside the lab (10.231.91.0/24, 172.20.0.0/16, or the source's own 127.0.0.0/8)"),
    (["probe", "slave1", "web1", "--tcp", "80", "--udp", "53"], "give one of --icmp, --tcp PORT, --udp PORT"),
    (["probe", "slave1", "web1", "--tcp", "0"], "0 is not in the range"),
    (["matrix", "--proto", "tcp"], "'tcp': expected icmp, tcp:PORT or udp:PORT"),
    (["matrix", "--from", "web1", "--to", "web1"], "no pair to probe"),
    (["matrix", "--to", "nosuch"], "matrix --to: nosuch: is not a host or a container"),
    (["probe", "slave1", "master", "--tcp", "2380"], "2380: is not traced"),
    (["matrix", "--proto", "udp:7946"], "7946: is not traced"),
])  # `chainlab ssh`'s own failures exit 255, as OpenSSH's (test_cli_errors.py)
def test_bad_input_is_exit_2(inventory: Path, tmp_path: Path, args: list[str], message: str):
    proc = subprocess.run([str(CHAINLAB), "-i", str(inventory), *args, "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not CHAINLAB.exists(), reason="console script not installed")
def test_bad_expectation_file_is_exit_2_with_its_line(inventory: Path, tmp_path: Path):
    expect = tmp_path / "expect.txt"
    expect.write_text("        web1 web2\nweb1    -    maybe\n")
    proc = subprocess.run([str(CHAINLAB), "-i", str(inventory), "matrix", "--expect", str(expect), "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{expect}:2: web1 → web2: 'maybe'" in proc.stderr, proc.stderr
    expect.write_text("        web1 web9\nweb1    -    .\n")
    proc = subprocess.run([str(CHAINLAB), "-i", str(inventory), "matrix", "--expect", str(expect), "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "web9: not a host or container of lab local" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
