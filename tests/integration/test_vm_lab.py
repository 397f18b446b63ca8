"""The VM lab end to end on real qemu VMs, Docker bridge networking (issue 14).

Boot two VMs from the image (built here first on a fresh machine), provision them through
the unchanged SSH path (facts from the real OS pick rsyslog), run scenario 7 with one VM's
clock set back, check the logs are rsyslog's lines from the VMs' own /var/log/iptables.log,
`lab down` leaves each VM as it was, `vm down` leaves nothing, also after `kill -9` of `up`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from chainlab.inventory import load_inventory
from chainlab.labstate import load_state
from chainlab.local import system as S
from chainlab.remote import connect, connection, run
from chainlab.vm.lab import load_state as load_vm_state
from chainlab.vm.lab import target
from chainlab.vm.plan import plan_vm_lab

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


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with vms(vm_inventory(tmp_path_factory.mktemp("vm-lab"), "vm-bridge.yaml")) as inv:
        yield inv


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
    keys = {line.split()[0].split(",")[1]: line.split(None, 1)[1] for line in plan.known_hosts.read_text().splitlines()}
    swapped = tmp_path / "known_hosts"
    swapped.write_text(f"{plan.hosts['master'].address} {keys['slave1']}\n")
    conn = connection(dataclasses.replace(target(plan, plan.hosts["master"]), known_hosts=swapped))
    with pytest.raises(paramiko.BadHostKeyException):
        conn.open()
    conn.close()


def test_lab_up_scenario_7_and_lab_down_on_vms(vm_lab: Path, tmp_path: Path) -> None:
    before = snapshots(vm_lab)
    up = cli(vm_lab, "lab", "up")
    assert "kernel log private → trace rsyslog" in up.stdout and "init systemd" in up.stdout
    state = load_state(load_inventory(vm_lab))
    assert {h.trace_backend for h in state.hosts.values()} == {"rsyslog"}
    run_dir = run_with_clock_behind(vm_lab, 7, tmp_path / "runs")
    for node in ("master", "slave1"):
        lines = (run_dir / "logs" / f"{node}.log").read_text().splitlines()
        traces = [line for line in lines if " TRACE: " in line]
        assert traces and all(RSYSLOG_TRACE.match(line) for line in traces), traces[:3]
        assert all(f" {node} kernel: " in line for line in lines)
    cli(vm_lab, "lab", "down")
    assert_same(before, snapshots(vm_lab))
