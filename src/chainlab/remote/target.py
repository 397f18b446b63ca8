"""Where a host is and how to reach it, with the local lab's route safety rule applied."""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.local.lab import check_lab_route
from chainlab.local.plan import plan_lab


@dataclass(frozen=True)
class Target:
    """One host's SSH endpoint and credentials, all taken from validated inventory values."""

    name: str
    address: IPv4Address
    user: str
    port: int
    key_filename: Path | None
    known_hosts: Path | None  # None: the user's ~/.ssh/known_hosts
    connect_timeout: float
    ssh_home: Path | None  # a HOME whose .ssh/ the docker SDK reads (None: the real HOME)


def resolve_target(inv: Inventory, host: str) -> Target:
    """The target for `host`; for the local and VM labs, refuses unless the route uses the lab link."""
    if host not in inv.hosts:
        raise ChainlabError(f"unknown host {host!r}: the inventory has {', '.join(sorted(inv.hosts))}")
    address = inv.hosts[host].address
    if inv.provider == "local":
        plan = plan_lab(inv)
        check_lab_route(plan, address)
        return Target(host, address, plan.user, 22, plan.client_key, plan.known_hosts,
                      inv.ssh.connect_timeout, plan.home)
    if inv.provider == "qemu":
        from chainlab.vm.network import check_vm_route
        from chainlab.vm.plan import SSH_PORT, plan_vm_lab

        vms = plan_vm_lab(inv)
        check_vm_route(vms, address)
        return Target(host, address, vms.user, SSH_PORT, vms.client_key, vms.known_hosts,
                      inv.ssh.connect_timeout, vms.home)
    key = Path(os.path.expanduser(inv.ssh.key)) if inv.ssh.key else None
    known = Path(os.path.expanduser(inv.ssh.known_hosts)) if inv.ssh.known_hosts else None
    return Target(host, address, inv.ssh.user, inv.ssh.port, key, known, inv.ssh.connect_timeout, None)


def etcd_address(inv: Inventory) -> tuple[IPv4Address, int]:
    """etcd's address and port; for the local and VM labs, only if routed through the lab link."""
    if inv.etcd is None:
        raise ChainlabError("the inventory has no `etcd:` section")
    address = inv.hosts[inv.etcd.host].address
    if inv.provider == "local":
        check_lab_route(plan_lab(inv), address)
    elif inv.provider == "qemu":
        from chainlab.vm.network import check_vm_route
        from chainlab.vm.plan import plan_vm_lab

        check_vm_route(plan_vm_lab(inv), address)
    return address, inv.etcd.port
