"""The VM lab end to end on real qemu VMs: the smoke test CI runs (issue 14).

Boot two VMs from the image (built here first on a fresh machine), provision them through
the unchanged SSH path (facts from the real OS pick rsyslog), run scenario 7 with one VM's
clock set back, check the logs are rsyslog's lines from the VMs' own /var/log/iptables.log,
`lab down` leaves each VM as it was, `vm down` leaves nothing, also after `kill -9` of `up`.
Lab name vmt on 10.231.82.0/24 (its own, so it never meets a lab brought up by hand).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml

from chainlab.inventory import load_inventory
from chainlab.labstate import load_state
from chainlab.local import system as S
from chainlab.remote import connect, run
from chainlab.remote.ssh import connection
from chainlab.vm.lab import load_state as load_vm_state
from chainlab.vm.lab import target
from chainlab.vm.plan import VmLabPlan, plan_vm_lab

from .conftest import ROOT

pytestmark = pytest.mark.integration

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
LAB, LAN = "vmt", "10.231.82"
#: What `lab down` must give back as it was before `lab up`, inside each VM.
SNAPSHOT = r"""
echo "== iptables"; for t in raw mangle nat filter; do iptables-save -t $t | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'; done
echo "== sysctl"; sysctl -a 2>/dev/null | grep -E '^net\.' | grep -vE 'nf_conntrack_count|stable_secret|tcp_fastopen_key'
echo "== etc"; find /etc -xdev \( -type f -o -type l \) -printf '%p %l %m\n' | sort; find /etc -xdev -type f -exec md5sum {} + | sort -k2
echo "== var-log"; find /var/log -maxdepth 1 -printf '%p\n' | sort
echo "== run"; ls -a /run/chainlab 2>&1
echo "== docker"; docker ps -aq; docker images -q; docker network ls --format '{{.Name}}'
"""
RSYSLOG_TRACE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ (master|slave1) kernel: (\[ *\d+\.\d+\] )?TRACE: \S+:\S+:\S+:\d+ ")


def cli(inv: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CHAINLAB, "-i", str(inv), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"chainlab {' '.join(args)} exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def vm_inventory(directory: Path, source: Path = ROOT / "lab" / "vm-bridge.yaml") -> Path:
    """`source` as lab vmt on 10.231.82.0/24, state in `directory` (the image cache is shared)."""
    doc = yaml.safe_load(source.read_text())
    doc["lab"] = LAB
    doc["qemu"]["lan"] = f"{LAN}.1/24"
    doc["qemu"]["state_dir"] = str(directory / "state")
    for host in doc["hosts"].values():
        host["address"] = f"{LAN}.{str(host['address']).rsplit('.', 1)[1]}"
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def assert_nothing_left(plan: VmLabPlan) -> None:
    assert not S.netns_exists(plan.lan_netns)
    assert not S.link_exists(plan.root_if)
    assert not plan.state_dir.exists()
    assert all(S.route_device(h.address) != plan.root_if for h in plan.hosts.values())
    name = f"-name {plan.lab}."
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            assert not (cmdline.startswith("qemu-system") and name in cmdline and state != "Z"), cmdline


@pytest.fixture(scope="module")
def root_check() -> None:
    if os.geteuid() != 0:
        pytest.skip("the VM lab needs root")


def test_vm_down_after_kill_9_of_up(root_check: None, tmp_path: Path) -> None:
    inv = vm_inventory(tmp_path)
    plan = plan_vm_lab(load_inventory(inv))
    up = subprocess.Popen([CHAINLAB, "-i", str(inv), "vm", "up"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 900  # a fresh machine builds the image first
        while len(S.netns_pids(plan.lan_netns)) < len(plan.hosts):
            assert up.poll() is None, up.stderr.read().decode() if up.stderr else ""
            assert time.monotonic() < deadline, "the VMs were never started"
            time.sleep(0.5)
        state = load_vm_state(plan)
        assert state is not None and all(r.qemu for r in state.hosts.values())
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait()
        cli(inv, "vm", "down")
    assert_nothing_left(plan)


@pytest.fixture(scope="module")
def vm_lab(root_check: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    inv = vm_inventory(tmp_path_factory.mktemp("vm-lab"))
    plan = plan_vm_lab(load_inventory(inv))
    try:
        cli(inv, "vm", "up")
        yield inv
    finally:
        subprocess.run([CHAINLAB, "-i", str(inv), "lab", "down"], capture_output=True)
        cli(inv, "vm", "down")
    assert_nothing_left(plan)


def test_vms_have_their_own_kernel_systemd_and_checked_host_keys(vm_lab: Path, tmp_path: Path) -> None:
    inv = load_inventory(vm_lab)
    plan = plan_vm_lab(inv)
    status = cli(vm_lab, "vm", "status").stdout
    assert status.count(" tcg ") + status.count(" kvm ") == 2
    for name in plan.hosts:
        conn = connect(inv, name)
        try:
            out = run(conn, ["sh", "-c", "hostname; cat /proc/1/comm; uname -r; systemctl is-active docker"]).stdout
        finally:
            conn.close()
        hostname, init, kernel, docker = out.split()
        assert (hostname, init, docker) == (name, "systemd", "active")
        assert kernel != os.uname().release  # the VM's own kernel, not the machine's
    # master's address answering with slave1's host key is refused
    swapped = tmp_path / "known_hosts"
    lines = plan.known_hosts.read_text().splitlines()
    keys = {line.split()[0].split(",")[1]: line.split(None, 1)[1] for line in lines}
    swapped.write_text(f"{plan.hosts['master'].address} {keys['slave1']}\n")
    wrong = target(plan, plan.hosts["master"])
    conn = connection(dataclasses.replace(wrong, known_hosts=swapped))
    with pytest.raises(paramiko.BadHostKeyException):
        conn.open()
    conn.close()


def _snapshots(inv_path: Path) -> dict[str, str]:
    inv = load_inventory(inv_path)
    result = {}
    for name in inv.hosts:
        conn = connect(inv, name)
        try:
            result[name] = run(conn, ["sh", "-c", SNAPSHOT], timeout=120).stdout
        finally:
            conn.close()
    return result


def _shift_clock(inv_path: Path, host: str, seconds: int) -> None:
    conn = connect(load_inventory(inv_path), host)
    try:
        run(conn, ["sh", "-c", f"date -s @$(( $(date +%s) + {seconds} )) >/dev/null"])
    finally:
        conn.close()


def test_lab_up_scenario_7_and_lab_down_on_vms(vm_lab: Path, tmp_path: Path) -> None:
    before = _snapshots(vm_lab)
    up = cli(vm_lab, "lab", "up")
    assert "trace rsyslog" in up.stdout and "kernel log private" in up.stdout and "init systemd" in up.stdout
    state = load_state(load_inventory(vm_lab))
    assert {h.trace_backend for h in state.hosts.values()} == {"rsyslog"}
    # slave1's clock 5 minutes behind master's: bracketing is by file offsets, not time
    _shift_clock(vm_lab, "slave1", -300)
    try:
        proc = cli(vm_lab, "run", "7", "--runs", str(tmp_path / "runs"), check=False)
    finally:
        _shift_clock(vm_lab, "slave1", 300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout
    run_dir = next((tmp_path / "runs").glob("*-07-*"))
    for node in ("master", "slave1"):
        lines = (run_dir / "logs" / f"{node}.log").read_text().splitlines()
        traces = [line for line in lines if " TRACE: " in line]
        assert traces and all(RSYSLOG_TRACE.match(line) for line in traces), traces[:3]
        assert all(f" {node} kernel: " in line for line in lines)
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert {p["node"] for p in analysis["packets"]} == {"master", "slave1"}
    cli(vm_lab, "lab", "down")
    after = _snapshots(vm_lab)
    for name in before:
        assert after[name] == before[name], name
