"""Calico (`mode: emulate`) on real qemu VMs: the smoke test of lab/vm.yaml's path (issue 14).

Two VMs of lab/vm.yaml (master with etcd and web1, slave1 with web3): `vm up` unpacks
chainlab's wheel in each VM; `lab up` gives each dockerd its cluster store (etcd with the
lab's certificates) through /etc/docker/daemon.json and `systemctl restart docker`, starts
the Calico daemon from the wheel with Debian's python3, and runs the containers on net1.
Scenario 6 (web1 pings web3 across the VMs) passes with slave1's clock set back, from the
VMs' own rsyslog files; `lab down` gives each VM back as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chainlab.inventory import load_inventory
from chainlab.remote import connect, run
from chainlab.vm.wheel import GUEST_MARK

from .vmlab import assert_same, cli, run_with_clock_behind, snapshots, vm_inventory, vms

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def calico_vms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with vms(vm_inventory(tmp_path_factory.mktemp("vm-calico"), "vm.yaml", drop_hosts=("slave2",))) as inv:
        yield inv


def test_calico_emulation_on_vms_scenario_6_and_lab_down(calico_vms: Path, tmp_path: Path) -> None:
    inv = load_inventory(calico_vms)
    for name in inv.hosts:  # the daemon's code came in as a wheel, not from this machine's files
        conn = connect(inv, name)
        try:
            assert run(conn, ["cat", GUEST_MARK]).stdout.strip()
        finally:
            conn.close()
    before = snapshots(calico_vms)
    up = cli(calico_vms, "lab", "up")
    assert "docker cluster store, node registered, daemon started" in up.stdout
    run_dir = run_with_clock_behind(calico_vms, 6, tmp_path / "runs")
    for node in ("master", "slave1"):
        traces = [line for line in (run_dir / "logs" / f"{node}.log").read_text().splitlines() if " TRACE: " in line]
        assert traces and all(f" {node} kernel: " in line for line in traces)
        assert any(":cali-" in line for line in traces)  # felix-lite's chains, walked in the VM's kernel
    cli(calico_vms, "lab", "down")
    assert_same(before, snapshots(calico_vms))
