"""Helpers of the VM lab tests (test_vm_*.py): an own lab vmt on 10.231.82.0/24, the CLI,
what each VM must give back after `lab down`, and what must be gone after `vm down`."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from chainlab.inventory import load_inventory
from chainlab.local import link_guard
from chainlab.local import system as S
from chainlab.remote import connect, run
from chainlab.vm.plan import VmLabPlan, plan_vm_lab

from . import suite
from .conftest import ROOT

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
LAB, LAN = "vmt", "10.231.82"
#: What `lab down` must give back as it was before `lab up`, inside each VM.
SNAPSHOT = r"""
echo "== iptables"; for t in raw mangle nat filter; do iptables-save -t $t | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'; done
echo "== ipsets"; ipset list -n
echo "== routes"; ip route
echo "== sysctl"; sysctl -a 2>/dev/null | grep -E '^net\.' | grep -vE 'nf_conntrack_count|stable_secret|tcp_fastopen_key'
echo "== etc"; find /etc -xdev \( -type f -o -type l \) -printf '%p %l %m\n' | sort; find /etc -xdev -type f -exec md5sum {} + | sort -k2
echo "== var-log"; find /var/log -maxdepth 1 -printf '%p\n' | sort
echo "== run"; ls -a /run/chainlab 2>&1
echo "== docker"; docker ps -aq; docker images -q; docker network ls --format '{{.Name}}'; docker info --format '{{.ClusterStore}}'
"""


def cli(inv: Path, *args: str, check: bool = True, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CHAINLAB, "-i", str(inv), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"chainlab {' '.join(args)} exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def vm_inventory(directory: Path, source: str, drop_hosts: tuple[str, ...] = (),
                 drop_containers: tuple[str, ...] = ()) -> Path:
    """lab/`source` as lab vmt on 10.231.82.0/24 without `drop_hosts` (and their containers)
    and `drop_containers`, written to `directory`/`source`, its state in `directory`/state (so
    inventories written to one directory are views of the same VMs); the image cache is the
    machine's (built once)."""
    doc = yaml.safe_load((ROOT / "lab" / source).read_text())
    doc["lab"] = LAB
    doc["qemu"]["lan"] = f"{LAN}.1/24"
    doc["qemu"]["state_dir"] = str(directory / "state")
    for name in drop_hosts:
        del doc["hosts"][name]
    doc["containers"] = {n: c for n, c in doc.get("containers", {}).items()
                         if c["host"] not in drop_hosts and n not in drop_containers}
    for host in doc["hosts"].values():
        host["address"] = f"{LAN}.{str(host['address']).rsplit('.', 1)[1]}"
    path = directory / source
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    suite.register(path)
    return path


def assert_nothing_left(plan: VmLabPlan) -> None:
    """No namespace, link, qemu, state or route of the lab remains."""
    assert not S.netns_exists(plan.lan_netns)
    assert not S.link_exists(plan.root_if) and not link_guard.installed(plan.root_if)
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


@contextmanager
def vms(inv: Path) -> Iterator[Path]:
    """The VMs of `inv` up for the block; always taken down, and checked gone."""
    if os.geteuid() != 0:
        pytest.skip("the VM lab needs root")
    plan = plan_vm_lab(load_inventory(inv))
    try:
        cli(inv, "vm", "up")
        yield inv
    finally:
        subprocess.run([CHAINLAB, "-i", str(inv), "lab", "down"], capture_output=True)
        cli(inv, "vm", "down")
    assert_nothing_left(plan)


def snapshots(inv_path: Path) -> dict[str, str]:
    """Each VM's SNAPSHOT, taken in all VMs at once (each VM emulates its own CPU: in turn,
    the VMs' snapshots took ~9 s each of the suite's time under TCG)."""
    inv = load_inventory(inv_path)

    def snapshot(name: str) -> str:
        conn = connect(inv, name)
        try:
            return run(conn, ["sh", "-c", SNAPSHOT], timeout=120).stdout
        finally:
            conn.close()

    with ThreadPoolExecutor(len(inv.hosts)) as pool:
        return dict(zip(inv.hosts, pool.map(snapshot, inv.hosts)))


def assert_same(before: dict[str, str], after: dict[str, str]) -> None:
    """Each VM's snapshot after `lab down` as before `lab up`; the differing lines if not."""
    for name in before:
        diff = [line for line in difflib.unified_diff(before[name].splitlines(), after[name].splitlines(),
                                                      "before lab up", "after lab down", lineterm="", n=0)]
        assert not diff, f"{name}:\n" + "\n".join(diff[:40])


def shift_clock(inv_path: Path, host: str, seconds: int) -> None:
    conn = connect(load_inventory(inv_path), host)
    try:
        run(conn, ["sh", "-c", f"date -s @$(( $(date +%s) + {seconds} )) >/dev/null"])
    finally:
        conn.close()


def run_with_clock_behind(inv: Path, scenario: int, runs: Path, host: str = "slave1", seconds: int = 300) -> Path:
    """Run `scenario` with `host`'s clock `seconds` behind the other VMs' (runs bracket the logs
    by file offsets, not by time); check it passed with packets seen on master and slave1;
    its run dir."""
    shift_clock(inv, host, -seconds)
    try:
        proc = cli(inv, "run", str(scenario), "--runs", str(runs), check=False)
    finally:
        shift_clock(inv, host, seconds)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = next(runs.glob(f"*-{scenario:02d}-*"))
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert {p["node"] for p in analysis["packets"]} == {"master", "slave1"}
    return run_dir
