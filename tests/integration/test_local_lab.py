"""The local lab end to end: SSH, docker over ssh://, etcd, container traffic, per-host traces.

Order matters: the last tests take the lab down and check the machine is as before.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import fabric
import pytest

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.local import check_lab_route, down, plan_lab, status, up
from chainlab.provision.image import import_rootfs
from chainlab.local import system as S
from chainlab.local import plan as P
from chainlab.local.plan import LabPlan
from chainlab.remote import connect, connection, docker_client, etcd_client, resolve_target, run
from chainlab.remote.ssh import _QuickAckSocket

from .conftest import TEST_LAB, root_snapshot

pytestmark = pytest.mark.integration

ULOGD_CONF = """\
[global]
logfile="/var/log/ulogd.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU

[log1]
group=0

[emu1]
file="/var/log/iptables.log"
sync=1
"""


def test_status_all_up(lab: LabPlan) -> None:
    rows = {row.name: row for row in status(lab)}
    assert set(rows) == {"master", "slave1", "slave2"}
    for row in rows.values():
        assert row.daemons["sshd"] and row.daemons["dockerd"] and row.up_since
    assert rows["master"].daemons["etcd"] is True
    assert rows["slave1"].daemons["etcd"] is None


def test_up_is_idempotent(lab: LabPlan) -> None:
    before = {row.name: row.up_since for row in status(lab)}
    up(lab, log=lambda *_: None)
    assert {row.name: row.up_since for row in status(lab)} == before


def test_host_setup_keeps_a_peer_namespaces_mounts(plan: LabPlan) -> None:
    """The window `unshare --propagation private` leaves (it makes the new namespace's mounts
    private in a child forked afterwards), held open: the host setup script's first lines, up
    to its unmount of /run/netns, must not reach the mounts the namespace was copied from. All
    of it happens in a throwaway namespace with its own shared /run/netns, so that a
    regression unmounts nothing of the machine's."""
    lines = P.host_setup_script(plan, plan.hosts["master"], []).splitlines()
    prefix = "\n".join(lines[: lines.index("if mountpoint -q /run/netns; then umount -R /run/netns; fi") + 1])
    sandbox = "\n".join([
        "set -e",
        "mount -t tmpfs tmpfs /run",
        "mkdir /run/netns",
        "mount -t tmpfs netns /run/netns",
        "mount --make-shared /run/netns",
        "touch /run/netns/x /run/x",
        "mount --bind /run/x /run/netns/x",
        'unshare --mount --uts --propagation unchanged -- sh -c "$1"',
        "mountpoint -q /run/netns/x || { echo 'the peer unmounted /run/netns/x'; exit 1; }",
    ])
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", sandbox, "sh", prefix],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_fabric_hostname_forwarding_and_backend(lab: LabPlan, inventory: Inventory) -> None:
    seen = {}
    for name, host in inventory.hosts.items():
        with connect(inventory, name) as conn:
            assert isinstance(conn.client.get_transport().sock, _QuickAckSocket)  # acknowledges at once
            out = run(conn, ["sh", "-c", "hostname; sysctl net.ipv4.ip_forward; iptables -V"]).stdout
        hostname, forward, version = out.strip().splitlines()
        seen[name] = hostname
        assert forward.startswith("net.ipv4.ip_forward = ")
        assert f"({'legacy' if host.iptables == 'legacy' else 'nf_tables'})" in version
    assert seen == {n: n for n in inventory.hosts}


def test_remote_command_timeout_is_a_clean_error(lab: LabPlan, inventory: Inventory) -> None:
    with connect(inventory, "master") as conn:
        with pytest.raises(ChainlabError, match=r"`sleep 5` did not finish within 0\.5 s"):
            run(conn, ["sleep", "5"], timeout=0.5)
        assert run(conn, ["true"]).ok  # the connection is still usable


def test_unknown_host_key_is_rejected(lab: LabPlan, inventory: Inventory, tmp_path: Path) -> None:
    target = resolve_target(inventory, "master")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    conn = connection(replace(target, known_hosts=empty))
    with pytest.raises(Exception, match="not found in known_hosts"):
        conn.open()


def test_docker_sdk_over_ssh_lists_each_engine(lab: LabPlan, inventory: Inventory) -> None:
    for name in inventory.hosts:
        client = docker_client(inventory, name)
        try:
            assert client.info()["Name"] == name
            assert client.containers.list(all=True) is not None
        finally:
            client.close()


def test_etcd_v2_write_read(lab: LabPlan, inventory: Inventory) -> None:
    client = etcd_client(inventory)
    client.write("/chainlab/itest", "hello")
    assert client.read("/chainlab/itest").value == "hello"


def test_container_on_master_pings_slave1(lab: LabPlan, inventory: Inventory) -> None:
    client = docker_client(inventory, "master")
    try:
        import_rootfs(client, lab.image_tarball, inventory.image.name)
        slave1 = str(inventory.hosts["slave1"].address)
        out = client.containers.run(inventory.image.name, ["ping", "-c", "2", "-W", "3", slave1], remove=True)
    finally:
        client.close()
    assert b"2 packets received" in out


def test_published_port_across_hosts(lab: LabPlan, inventory: Inventory) -> None:
    """The plain-Docker TCP reference: web1 on master fetches web2's httpd via slave1:8080.

    Both containers stay running, so the `down` test also proves running containers go.
    """
    master, slave1 = docker_client(inventory, "master"), docker_client(inventory, "slave1")
    try:
        import_rootfs(slave1, lab.image_tarball, inventory.image.name)
        slave1.containers.run(inventory.image.name, name="web2", detach=True, ports={"80/tcp": 8080})
        web1 = master.containers.run(inventory.image.name, name="web1", detach=True)
        url = f"http://{inventory.hosts['slave1'].address}:8080/"
        for _ in range(20):
            result = web1.exec_run(["wget", "-qO-", url])
            if result.exit_code == 0:
                break
            time.sleep(0.2)
    finally:
        master.close()
        slave1.close()
    assert b"chainlab mybusybox" in result.output


def _start_ulogd(conn: fabric.Connection) -> None:
    conn.put(io.BytesIO(ULOGD_CONF.encode()), "/etc/ulogd.conf")
    run(conn, ["ulogd", "-d", "-c", "/etc/ulogd.conf", "-p", "/run/ulogd.pid"])
    # NFLOG has loaded nfnetlink_log; bind IPv4 logging in this namespace to it
    run(conn, ["sh", "-c", "echo nfnetlink_log > /proc/sys/net/netfilter/nf_log/2"])


def test_trace_lands_in_master_log_only(lab: LabPlan, inventory: Inventory) -> None:
    master_addr = str(inventory.hosts["master"].address)
    with connect(inventory, "master") as master, connect(inventory, "slave1") as slave1:
        _start_ulogd(master)
        _start_ulogd(slave1)
        for chain in ("PREROUTING", "OUTPUT"):
            run(master, ["iptables", "-t", "raw", "-A", chain, "-p", "icmp", "-j", "TRACE"])
        run(slave1, ["ping", "-c", "2", "-W", "3", master_addr])
        deadline = time.monotonic() + 10
        while True:
            log = run(master, ["cat", "/var/log/iptables.log"], check=False).stdout
            if "TRACE: raw:PREROUTING" in log and "TRACE: raw:OUTPUT" in log or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        other = run(slave1, ["cat", "/var/log/iptables.log"]).stdout  # ulogd made it: it runs
    assert "TRACE: raw:PREROUTING" in log, log
    assert f"SRC={inventory.hosts['slave1'].address} DST={master_addr}" in log
    assert "TRACE:" not in other


def test_nft_trace_with_xtables_monitor(lab: LabPlan, inventory: Inventory) -> None:
    slave2_addr = str(inventory.hosts["slave2"].address)
    with connect(inventory, "slave2") as slave2, connect(inventory, "slave1") as slave1:
        run(slave2, ["iptables", "-t", "raw", "-A", "PREROUTING", "-p", "icmp", "-j", "TRACE"])
        run(slave2, ["sh", "-c", "(timeout 5 xtables-monitor --trace > /var/log/xtrace.log 2>&1 &); sleep 0.5"])
        run(slave1, ["ping", "-c", "1", "-W", "3", slave2_addr])
        deadline = time.monotonic() + 10
        while "raw:PREROUTING" not in (out := run(slave2, ["cat", "/var/log/xtrace.log"]).stdout):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert f"SRC={inventory.hosts['slave1'].address} DST={slave2_addr}" in out, out
    assert "TRACE: " in out and "raw:PREROUTING:rule:" in out


def test_route_safety_refuses_other_routes(lab: LabPlan, inventory: Inventory) -> None:
    with pytest.raises(ChainlabError, match="refusing to connect"):
        check_lab_route(lab, IPv4Address("192.0.2.123"))


def _process_names(netns: str) -> set[str]:
    names = set()
    for pid in S.netns_pids(netns):
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except FileNotFoundError:
            pass
    return names


def test_moving_etcd_stops_it_where_it_was(lab: LabPlan, inventory: Inventory) -> None:
    moved = plan_lab(inventory.model_copy(update={"etcd": inventory.etcd.model_copy(update={"host": "slave1"})}))
    try:
        up(moved, log=lambda *_: None)
        rows = {row.name: row.daemons["etcd"] for row in status(moved)}
        assert rows == {"master": None, "slave1": True, "slave2": None}
        assert "etcd" not in _process_names(lab.hosts["master"].netns)
    finally:
        up(lab, log=lambda *_: None)
    assert {row.name: row.daemons["etcd"] for row in status(lab)} == {"master": True, "slave1": None, "slave2": None}


def test_down_restores_root_namespace(lab: LabPlan, root_before: dict[str, str]) -> None:
    down(lab, log=lambda *_: None)
    assert root_snapshot() == root_before
    assert not lab.state_dir.exists()
    with pytest.raises(ChainlabError, match="refusing to connect"):
        check_lab_route(lab, next(iter(lab.hosts.values())).address)


def test_down_after_kill9_of_up(lab: LabPlan, inventory_path: Path, root_before: dict[str, str]) -> None:
    """A `local up` killed half-way leaves nothing behind once `local down` ran."""
    cli = [str(Path(sys.executable).parent / "chainlab")]
    for delay in (0.2, 0.6, 1.0):
        proc = subprocess.Popen([*cli, "-i", str(inventory_path), "local", "up"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run([*cli, "-i", str(inventory_path), "local", "down"], check=True, capture_output=True)
        assert root_snapshot() == root_before
        assert not subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count(f"chainlab.{TEST_LAB}")
