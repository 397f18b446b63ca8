"""The VM lab end to end on real qemu VMs (issue 14): Docker bridge networking, and Calico.

Two VMs are booted once for the module (each boot costs ~1.5 min of CI under TCG) from
lab/vm.yaml without slave2: etcd with the lab's certificates on master, chainlab's wheel
unpacked in each VM. On them, in turn, with the VMs' own rsyslog files and one VM's clock
set back:
- lab/vm-bridge.yaml's lab (plain Docker bridge networking, no etcd: what master runs of
  vm.yaml's is left alone): provisioned through the unchanged SSH path (facts from the real
  OS pick rsyslog), scenario 7, `lab down` gives each VM back as it was;
- lab/vm.yaml's (`calico.mode: emulate`): `lab up` gives each dockerd its cluster store
  through /etc/docker/daemon.json and `systemctl restart docker`, starts the Calico daemon
  from the wheel with Debian's python3, runs web1 and web3 on net1; scenario 6 (web1 pings
  web3 across the VMs); `lab down` gives each VM back as it was.
`vm down` leaves nothing, also after `kill -9` of `up` (that test boots VMs of its own,
before the module's).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from chainlab.inventory import load_inventory
from chainlab.labstate import load_state
from chainlab.local import link_guard
from chainlab.local import system as S
from chainlab.remote import connect, connection, run
from chainlab.vm.lab import load_state as load_vm_state
from chainlab.vm.lab import target
from chainlab.vm.plan import plan_vm_lab
from chainlab.vm.wheel import GUEST_MARK

from .vmlab import CHAINLAB, assert_nothing_left, assert_same, cli, run_with_clock_behind, snapshots, vm_inventory, vms

pytestmark = pytest.mark.integration

#: `... <host> kernel: [uptime] TRACE: table:chain:type:rulenum ...` as rsyslog writes it (RFC 3339)
RSYSLOG_TRACE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ (master|slave1) kernel: (\[ *\d+\.\d+\] )?TRACE: \S+:\S+:\S+:\d+ ")


def test_vm_down_after_kill_9_of_up(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the VM lab needs root")
    inv = vm_inventory(tmp_path, "vm-bridge.yaml")
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


@dataclass(frozen=True)
class VmLab:
    """Two inventories of the same two VMs."""

    bridge: Path
    calico: Path


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmLab]:
    directory = tmp_path_factory.mktemp("vm-lab")
    bridge = vm_inventory(directory, "vm-bridge.yaml")
    # scenario 6 is web1 -> web3: web2 would cost ~40 s of docker under TCG and show nothing more
    with vms(vm_inventory(directory, "vm.yaml", drop_hosts=("slave2",), drop_containers=("web2",))) as calico:
        yield VmLab(bridge=bridge, calico=calico)


def test_vms_have_their_own_kernel_systemd_and_checked_host_keys(vm_lab: VmLab, tmp_path: Path) -> None:
    inv = load_inventory(vm_lab.bridge)
    plan = plan_vm_lab(inv)
    status = cli(vm_lab.bridge, "vm", "status").stdout
    assert status.count(" tcg ") + status.count(" kvm ") == 2
    assert link_guard.installed(plan.root_if)  # the VMs are root's only, as a local lab's hosts
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
    keys = {line.split()[0].split(",")[1]: line.split(None, 1)[1] for line in plan.known_hosts.read_text().splitlines()}
    swapped = tmp_path / "known_hosts"
    swapped.write_text(f"{plan.hosts['master'].address} {keys['slave1']}\n")
    conn = connection(dataclasses.replace(target(plan, plan.hosts["master"]), known_hosts=swapped))
    with pytest.raises(paramiko.BadHostKeyException):
        conn.open()
    conn.close()


def test_lab_up_scenario_7_and_lab_down_on_vms(vm_lab: VmLab, tmp_path: Path) -> None:
    bridge = vm_lab.bridge
    before = snapshots(bridge)
    up = cli(bridge, "lab", "up")
    assert "kernel log private → trace rsyslog" in up.stdout and "init systemd" in up.stdout
    state = load_state(load_inventory(bridge))
    assert {h.trace_backend for h in state.hosts.values()} == {"rsyslog"}
    run_dir = run_with_clock_behind(bridge, 7, tmp_path / "runs")
    for node in ("master", "slave1"):
        lines = (run_dir / "logs" / f"{node}.log").read_text().splitlines()
        traces = [line for line in lines if " TRACE: " in line]
        assert traces and all(RSYSLOG_TRACE.match(line) for line in traces), traces[:3]
        assert all(f" {node} kernel: " in line for line in lines)
    cli(bridge, "lab", "down")
    assert_same(before, snapshots(bridge))


def test_calico_emulation_on_vms_scenario_6_and_lab_down(vm_lab: VmLab, tmp_path: Path) -> None:
    calico = vm_lab.calico
    inv = load_inventory(calico)
    for name in inv.hosts:  # the daemon's code came in as a wheel, not from this machine's files
        conn = connect(inv, name)
        try:
            assert run(conn, ["cat", GUEST_MARK]).stdout.strip()
        finally:
            conn.close()
    before = snapshots(calico)
    up = cli(calico, "lab", "up")
    assert "docker cluster store, node registered, daemon started" in up.stdout
    run_dir = run_with_clock_behind(calico, 6, tmp_path / "runs")
    for node in ("master", "slave1"):
        traces = [line for line in (run_dir / "logs" / f"{node}.log").read_text().splitlines() if " TRACE: " in line]
        assert traces and all(f" {node} kernel: " in line for line in traces)
        assert any(":cali-" in line for line in traces)  # felix-lite's chains, walked in the VM's kernel
    cli(calico, "lab", "down")
    assert_same(before, snapshots(calico))
