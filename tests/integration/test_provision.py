"""lab up / lab down against our own local lab (lab `prov`, 10.231.93.0/24, slave2 nft).

Order matters: up from nothing, traces, idempotent second run, a host with sshd killed,
repair and converge, then down back to the snapshot taken before lab up.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from chainlab.inventory import Inventory, load_inventory
from chainlab.labstate import load_state, state_path
from chainlab.local import down, plan_lab, up
from chainlab.local.lab import load_state as load_local_state
from chainlab.networks import network_for
from chainlab.providers import provider_for
from chainlab.provision import provision
from chainlab.provision.context import RunContext
from chainlab.provision.dockerview import SOCKET as DOCKER_SOCKET
from chainlab.provision.dockerview import DockerView
from chainlab.provision.recap import RunReport
from chainlab.remote import connect, kept, run
from chainlab.remote.session import HostSession
from chainlab.runtime_dir import runtime_directory
from chainlab.warm import place

from .conftest import make_inventory_file

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "chainlab")
SNAPSHOT = r"""
echo '## iptables'; iptables-save | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'
echo '## sysctl'; sysctl net.ipv4.ip_forward
for f in 2 7 10; do echo "nf_log/$f=$(cat /proc/sys/net/netfilter/nf_log/$f)"; done
echo '## nft'; nft list ruleset ip 2>/dev/null | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
echo '## files'; ls -la --time-style=+ /etc/sysctl.d /etc/rsyslog.d /var/log /run/docker/plugins /etc/docker \
  | awk '$1 != "total" {print $1, $NF}'
for f in /etc/sysctl.d/* /etc/rsyslog.d/* /etc/docker/*; do [ -f "$f" ] && md5sum "$f"; done
ls -d /run/chainlab 2>/dev/null; echo end
"""


def _quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=200)


def _drop_empty_tables(text: str) -> str:
    """A legacy table, once loaded in a namespace, cannot be unloaded: ignore empty ones."""
    out, block = [], []
    for row in text.splitlines():
        if row.startswith("*"):
            block = [row]
        elif block and row == "COMMIT":
            block.append(row)
            rules = [r for r in block if r.startswith("-A")]
            policies_default = all(r.endswith("ACCEPT ") or r.endswith("ACCEPT") for r in block if r.startswith(":"))
            if rules or not policies_default:
                out.extend(block)
            block = []
        elif block:
            block.append(row)
        else:
            out.append(row)
    return "\n".join(out)


def snapshot(inv: Inventory) -> dict[str, str]:
    snaps = {}
    for host in inv.hosts:
        with connect(inv, host) as conn:
            text = run(conn, ["sh", "-c", SNAPSHOT]).stdout
        head, _, rest = text.partition("## sysctl")
        snaps[host] = _drop_empty_tables(head) + "## sysctl" + rest
    return snaps


@pytest.fixture(scope="module")
def prov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inventory]:
    if os.geteuid() != 0:
        pytest.skip("the local lab needs root")
    path = make_inventory_file(tmp_path_factory.mktemp("prov"), lab="prov", lan="10.231.93")
    inv = load_inventory(path)
    plan = plan_lab(inv)
    try:
        up(plan, log=lambda *_: None)
        yield inv
    finally:
        down(plan, log=lambda *_: None)


@pytest.fixture(scope="module")
def before(prov: Inventory) -> dict[str, str]:
    return snapshot(prov)


@pytest.fixture(scope="module")
def timings() -> dict[str, float]:
    return {}


def _changed(report: RunReport) -> dict[str, int]:
    return {h: r.count("changed") for h, r in report.hosts.items() if h != "(lab)"}


def test_up_from_nothing(prov: Inventory, before: dict[str, str], timings: dict[str, float],
                         tmp_path: Path) -> None:
    started = time.monotonic()
    report = provision(prov, "up", json_path=tmp_path / "up.json", console=_quiet())
    timings["first"] = time.monotonic() - started
    assert not report.failed, report.as_dict()
    assert {s.name: s.status for s in report.hosts["(lab)"].steps} == {
        "etcd_baseline": "changed", "calico_network": "changed"}
    for host in prov.hosts:
        rep = report.hosts[host]
        statuses = {s.name: s.status for s in rep.steps}
        assert statuses["facts"] == "ok"
        for step in ("ip_forward", "trace_log", "trace_rules", "image", "calico_node"):
            assert statuses[step] in ("changed", "ok"), (host, step, rep.steps)
        assert statuses["trace_log"] == "changed" and statuses["trace_rules"] == "changed"
    assert report.hosts["slave2"].steps[-1].status == "skipped"  # no container placed there
    assert '"changed": 6' in (tmp_path / "up.json").read_text()
    state = load_state(prov)
    assert state.hosts["master"].trace_backend == "ulogd"
    assert state.hosts["slave2"].trace_backend == "nft-monitor"
    assert {c: s.host for c, s in state.containers.items()} == {"web1": "master", "web2": "master",
                                                                 "web3": "slave1"}
    # in the inventory's order, whichever host answered first (probe and matrix list them so)
    assert list(state.hosts) == list(prov.hosts) and list(state.containers) == list(prov.containers)
    assert all(s.interface and s.interface.startswith("cali") for s in state.containers.values())


def test_traces_land_per_host(prov: Inventory) -> None:
    master, slave2 = (str(prov.hosts[h].address) for h in ("master", "slave2"))
    with connect(prov, "slave1") as slave1:
        run(slave1, ["ping", "-c", "1", "-W", "3", master])
        run(slave1, ["ping", "-c", "1", "-W", "3", slave2])
    logs = {}
    deadline = time.monotonic() + 10
    for host in ("master", "slave2"):
        with connect(prov, host) as conn:
            while True:
                logs[host] = run(conn, ["cat", "/var/log/iptables.log"]).stdout
                if "raw:PREROUTING" in logs[host] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    assert "TRACE: raw:PREROUTING" in logs["master"], logs["master"][-2000:]
    assert f"SRC={prov.hosts['slave1'].address} DST={master}" in logs["master"]
    assert "raw:PREROUTING:rule:" in logs["slave2"], logs["slave2"][-2000:]


def test_second_run_changes_nothing_and_is_faster(prov: Inventory, timings: dict[str, float]) -> None:
    started = time.monotonic()
    report = provision(prov, "up", console=_quiet())
    timings["second"] = time.monotonic() - started
    assert not report.failed
    assert _changed(report) == {"master": 0, "slave1": 0, "slave2": 0}
    assert timings["second"] < timings["first"] / 1.5, timings


def _accepted(inv: Inventory) -> dict[str, int]:
    """SSH connections each host's sshd has accepted so far (its log)."""
    return {h: (plan_lab(inv).hosts[h].log_dir / "sshd.log").read_text().count("Accepted publickey") for h in inv.hosts}


def _masters(inv: Inventory) -> set[int]:
    """PIDs of the lab's kept SSH connections (OpenSSH masters: `ssh: SOCKET [mux]`)."""
    where = runtime_directory("ssh", create=False)
    prefix = f"ssh: {where}/{kept._lab_key(inv.lab)}-".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(prefix):
                found.add(int(entry.name))
        except OSError:
            pass
    return found


def test_a_warm_lab_up_reads_its_hosts_on_kept_connections(prov: Inventory) -> None:
    """As Ansible's ControlPersist: the hosts' read-only batch is a session on the OpenSSH
    master an earlier command started; no host's sshd accepts a connection, the masters stay."""
    provision(prov, "up", console=_quiet())  # a master per host, if there is none yet
    masters, accepted = _masters(prov), _accepted(prov)
    assert len(masters) == len(prov.hosts)
    proc = subprocess.run([CLI, "-i", _inventory_file(prov), "lab", "up"], capture_output=True, text=True)
    assert proc.returncode == 0 and "changed=0 failed=0" in proc.stdout, proc.stdout + proc.stderr
    assert _accepted(prov) == accepted and _masters(prov) == masters


def test_other_users_cannot_reach_the_kept_connections(prov: Inventory) -> None:
    provision(prov, "up", console=_quiet())
    where = runtime_directory("ssh", create=False)
    assert where is not None
    sockets = [str(p) for p in Path(where).glob(f"{kept._lab_key(prov.lab)}-*")]
    assert len(sockets) == 2 * len(prov.hosts)  # a master's socket and its forward to dockerd, per host
    grab = ("import socket, sys\nfor path in sys.argv[1:]:\n    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n        s.connect(path)\n        print('reached', path)\n    except OSError as exc:\n"
            "        print(type(exc).__name__)")
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                           "-c", grab, *sockets], capture_output=True, text=True)
    assert proc.stdout.split() == ["PermissionError"] * len(sockets), proc.stdout + proc.stderr


def test_without_kept_connections_every_host_is_connected(prov: Inventory) -> None:
    accepted = _accepted(prov)
    proc = subprocess.run([CLI, "-i", _inventory_file(prov), "lab", "up"], capture_output=True, text=True,
                          env={**os.environ, kept.PERSIST_ENV: "0"})
    assert proc.returncode == 0 and "changed=0 failed=0" in proc.stdout, proc.stdout + proc.stderr
    assert _accepted(prov) == {h: n + 1 for h, n in accepted.items()}


def test_a_kept_connection_that_died_is_replaced(prov: Inventory) -> None:
    """Masters killed (their sockets left behind): the next command starts new ones."""
    old = _masters(prov)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    report = provision(prov, "up", console=_quiet())
    assert not report.failed and _changed(report) == {"master": 0, "slave1": 0, "slave2": 0}
    new = _masters(prov)
    assert len(new) == len(prov.hosts) and not new & old


def test_a_stopped_kept_connection_is_killed_and_the_host_read_without_it(prov: Inventory) -> None:
    """A master stopped (SIGSTOP): the session is given up on after the handshake's 5 s, the
    master killed, the host read on a connection of chainlab's own; the next command starts
    a new master. One stopped again: lab down ends it (it does not answer the request to exit)."""
    provision(prov, "up", console=_quiet())
    stopped = sorted(_masters(prov))[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        report = provision(prov, "up", console=_quiet())
        assert not report.failed and _changed(report) == {"master": 0, "slave1": 0, "slave2": 0}, report.as_dict()
        assert not Path(f"/proc/{stopped}").exists() or Path(f"/proc/{stopped}/stat").read_text().split()[2] == "Z"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
    provision(prov, "up", console=_quiet())
    assert len(_masters(prov)) == len(prov.hosts)
    again = sorted(_masters(prov))[0]
    os.kill(again, signal.SIGSTOP)
    try:
        assert kept.end(prov.lab) == len(prov.hosts)
        assert not _masters(prov) - {again} and not Path(f"/proc/{again}/cmdline").exists() or \
            Path(f"/proc/{again}/stat").read_text().split()[2] == "Z"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(again, signal.SIGCONT)


def test_sshd_not_listening_a_kept_connection_still_reads_the_host(prov: Inventory) -> None:
    """What Ansible's ControlPersist does too: a host whose sshd no longer takes connections
    is still read on the connection kept from before (a change would need a new one)."""
    provision(prov, "up", console=_quiet())
    local_state = load_local_state(plan_lab(prov))
    assert local_state is not None
    os.kill(local_state.hosts["slave1"].daemons["sshd"].pid, signal.SIGTERM)  # the listener only
    try:
        report = provision(prov, "up", console=_quiet())
        assert not report.failed and _changed(report) == {"master": 0, "slave1": 0, "slave2": 0}
    finally:
        up(plan_lab(prov), log=lambda *_: None)  # `chainlab local up` restarts it


def test_calico_daemons_are_known_by_their_name(prov: Inventory) -> None:
    """The warm run's check of the daemon reads its name with built-ins; the fallback (its
    command line, for a daemon an earlier chainlab started) would hide a daemon left unnamed."""
    from chainlab.calico import PROCESS_NAME
    from chainlab.networks.calico.emulate import running_argv

    for host in prov.hosts:
        with connect(prov, host) as conn:
            pid = run(conn, running_argv()).stdout.strip()
            assert pid, host
            assert run(conn, ["cat", f"/proc/{pid}/comm"]).stdout.strip() == PROCESS_NAME


def test_lab_up_served_by_the_warm_server_reads_as_run_here(prov: Inventory) -> None:
    """CHAINLAB_PERSIST: the same per-host recap as a `lab up` run in the shell's process,
    from a child of the warm server (its own SSH connections, Docker and etcd clients)."""
    runtime = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))  # a socket's path is at most 107 bytes
    env = {**os.environ, "CHAINLAB_PERSIST": "60", "XDG_RUNTIME_DIR": str(runtime)}
    where = place.directory_in(str(runtime))
    argv = [CLI, "-i", _inventory_file(prov), "lab", "up"]
    try:
        here = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)  # starts the server
        deadline = time.monotonic() + 60
        while not place.listening(where) and time.monotonic() < deadline:
            time.sleep(0.05)
        served = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert "lab up" in Path(place.log_path(where)).read_text()
    finally:
        place.end_server(where)
        subprocess.run(["rm", "-rf", str(runtime)], check=False)
    assert here.returncode == served.returncode == 0, served.stdout + served.stderr

    def lines(out: str) -> list[str]:  # hosts finish in any order; durations differ
        return sorted(re.sub(r"\b\d+(\.\d+)?s\b", "<t>", line) for line in out.splitlines())

    assert lines(here.stdout) == lines(served.stdout)
    assert re.search(r"master : ok=\d+ changed=0 failed=0", served.stdout), served.stdout


def test_check_on_local_lab_changes_nothing(prov: Inventory) -> None:
    report = provision(prov, "up", check=True, console=_quiet())
    assert not report.failed
    for host in ("master", "slave1", "slave2"):
        statuses = {s.name: s.status for s in report.hosts[host].steps}
        assert statuses["ip_forward"] == statuses["trace_rules"] == statuses["trace_log"] == "ok"


def test_a_wrong_or_missing_etcd_registration_is_written_again_for_that_host_alone(prov: Inventory) -> None:
    """Every host's registration is read in one request (the first host to ask reads them
    all): each host still sees its own."""
    from chainlab.calico import datastore as D
    from chainlab.remote.etcdclient import etcd_client

    client = etcd_client(prov)
    client.write(D.host_ip_key("slave1"), "10.9.9.9")
    client.delete(D.host_ip_key("master"))
    report = provision(prov, "up", console=_quiet())
    assert not report.failed
    assert _changed(report) == {"master": 1, "slave1": 1, "slave2": 0}
    for host in ("master", "slave1"):
        node = next(s for s in report.hosts[host].steps if s.name == "calico_node")
        assert "node registered" in node.detail, node
    for host, spec in prov.hosts.items():
        assert client.read(D.host_ip_key(host)).value == str(spec.address)


def test_docker_probe_reads_the_same_with_curl_with_the_cli_and_through_the_forward(prov: Inventory) -> None:
    provider = provider_for(prov)
    run_ctx = RunContext(prov, provider, network_for(prov, provider), False)
    for host in prov.hosts:
        argv = run_ctx.inspect_argv(host)
        with connect(prov, host) as conn:
            by_curl = run(conn, argv, check=False).stdout
            by_cli = run(conn, ["env", "DOCKER_HOST=unix:///var/run/docker.sock", *argv], check=False).stdout
        with HostSession(prov, host, forward_to=DOCKER_SOCKET) as ssh:
            ssh.read(["true"])  # the kept master, with its forward to dockerd, is there
            gets = ssh.gets(run_ctx.docker_look(host).api_paths(), 10)
            assert gets is not None
            bodies = gets.bodies(10)
        assert bodies is not None
        by_forward = "\n".join(body.decode() for body in bodies)
        assert by_curl.startswith("{") and by_cli.startswith("["), (by_curl[:80], by_cli[:80])
        view = DockerView.parse(by_curl)
        assert view == DockerView.parse(by_cli) == DockerView.parse(by_forward)
        assert prov.image.name in view.images
        assert sorted(view.containers) == sorted(c for c, spec in prov.containers.items() if spec.host == host)
        assert sorted(view.networks) == sorted(run_ctx.network.docker_names(host))


def test_host_with_sshd_down_fails_alone_then_converges(prov: Inventory) -> None:
    plan = plan_lab(prov)
    for pid in _sshd_pids(prov, "slave1"):  # the listener and its sessions: kept connections end too
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    proc = subprocess.run([CLI, "-i", _inventory_file(prov), "lab", "up"], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0, proc.stdout
    assert re.search(r"slave1 : ok=0 changed=0 failed=1", proc.stdout), proc.stdout
    assert "cannot ssh to slave1" in proc.stdout
    assert re.search(r"master : ok=7 changed=0 failed=0", proc.stdout), proc.stdout
    assert re.search(r"slave2 : ok=7 changed=0 failed=0 skipped=1", proc.stdout), proc.stdout
    assert elapsed > 2  # the connection was retried with backoff before giving up
    up(plan, log=lambda *_: None)  # `chainlab local up` restarts the dead sshd
    report = provision(prov, "up", console=_quiet())
    assert not report.failed
    assert _changed(report) == {"master": 0, "slave1": 0, "slave2": 0}


def _sshd_pids(inv: Inventory, host: str) -> list[int]:
    """Every sshd of the lab host (the listener and its sessions): ours, found in its netns."""
    from chainlab.local import system as S

    pids = S.netns_pids(plan_lab(inv).hosts[host].netns)
    return [p for p in pids if Path(f"/proc/{p}/comm").exists() and Path(f"/proc/{p}/comm").read_text().strip() == "sshd"]


def test_host_frozen_mid_run_fails_alone_within_the_timeout(prov: Inventory) -> None:
    """slave1's sshd (listener and sessions) stopped once lab up has read its facts: the
    host fails naming the step it was in, the others finish, the lock is released."""
    with connect(prov, "slave1") as conn:
        run(conn, ["docker", "rm", "-f", "web3"])  # so that slave1 has work to be frozen in
    proc = subprocess.Popen([CLI, "-i", _inventory_file(prov), "lab", "up", "--timeout", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    frozen: list[int] = []
    try:
        assert proc.stdout is not None
        out = []
        for line in proc.stdout:
            out.append(line)
            if "slave1: facts" in line and not frozen:
                frozen = _sshd_pids(prov, "slave1")
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                started = time.monotonic()
        proc.wait(60)
        elapsed = time.monotonic() - started
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    text = "".join(out)
    assert frozen and proc.returncode == 1, text
    assert re.search(r"failed slave1: \w+  no answer within 5 s while step \w+", text), text
    assert re.search(r"master : ok=\d+ changed=0 failed=0", text), text
    assert elapsed < 20, (elapsed, text)
    report = provision(prov, "up", console=_quiet())  # not locked out, and it converges
    assert not report.failed and report.hosts["slave1"].count("changed") == 1  # web3 is back


def test_sigterm_ends_lab_up_at_once_and_releases_the_lock(prov: Inventory) -> None:
    frozen = _sshd_pids(prov, "slave1")
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)  # slave1 never answers: lab up would wait for it
    try:
        proc = subprocess.Popen([CLI, "-i", _inventory_file(prov), "lab", "up"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - started < 2 and proc.returncode == 143
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert not provision(prov, "up", console=_quiet()).failed  # the lock was released


def test_down_restores_hosts(prov: Inventory, before: dict[str, str]) -> None:
    report = provision(prov, "down", console=_quiet())
    assert not report.failed, report.as_dict()
    assert not _masters(prov)  # the lab's kept SSH connections ended with it
    after = snapshot(prov)
    for host in prov.hosts:
        diff = "\n".join(difflib.unified_diff(before[host].splitlines(), after[host].splitlines(), lineterm=""))
        assert after[host] == before[host], f"{host}:\n{diff}"
    assert not state_path(prov).exists()
    again = provision(prov, "down", console=_quiet())  # re-runnable
    assert not again.failed
    assert all(r.count("changed") == 0 for r in again.hosts.values()), again.as_dict()
    # ... and etcd: the /calico tree lab up made is gone with it (it was empty before)
    from chainlab.remote import etcd_client

    client = etcd_client(prov)
    try:
        leaves = [n.key for n in client.read("/calico", recursive=True).leaves if n.key]
    except Exception as exc:  # EtcdKeyNotFound: no /calico at all
        leaves = [] if "Key not found" in str(exc) else [str(exc)]
    assert leaves == []


def _inventory_file(inv: Inventory) -> str:
    path = Path(plan_lab(inv).state_dir).parent / "inventory.yaml"
    assert path.exists()
    return str(path)
