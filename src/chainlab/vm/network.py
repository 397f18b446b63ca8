"""The VM lab's network on the machine: its namespace, bridge, taps and management link,
and the route safety rule (a lab address is only contacted through that link)."""

from __future__ import annotations

from ipaddress import IPv4Address

from chainlab.local import mgmt_link
from chainlab.local import system as S
from chainlab.local.mgmt_link import BRIDGE
from chainlab.vm.plan import VmHostPlan, VmLabPlan


def check_vm_route(plan: VmLabPlan, address: IPv4Address) -> None:
    """Refuse unless the machine routes `address` through the lab's management link."""
    S.check_route(address, plan.root_if, "VM lab link", "is the VM lab up? `chainlab vm up`")


def check_free(plan: VmLabPlan) -> None:
    """The lab's lan must not overlap an address of the machine, nor its VMs be routed elsewhere."""
    S.check_lan_free("qemu.lan", plan.mgmt, plan.root_if, ((h.name, h.address) for h in plan.hosts.values()))


def _stale(plan: VmLabPlan) -> bool:
    """/run/netns/NAME is there but no namespace is mounted on it (someone unmounted it)."""
    return S.netns_exists(plan.lan_netns) and not S.is_mountpoint(str(plan.netns_path))


def ensure_lan(plan: VmLabPlan) -> None:
    """The lab namespace with its bridge, and the management link (root's only)."""
    if _stale(plan):
        S.netns_del(plan.lan_netns)
    mgmt_link.ensure(plan.lan_netns, plan.root_if, plan.mgmt)


def ensure_tap(plan: VmLabPlan, host: VmHostPlan) -> None:
    """The VM's tap on the lab bridge (qemu opens it by name, from inside the namespace)."""
    lan = plan.lan_netns
    if not S.link_exists(host.tap, lan):
        S.run(["ip", "-n", lan, "tuntap", "add", "dev", host.tap, "mode", "tap"])
    S.run(["ip", "-n", lan, "link", "set", host.tap, "master", BRIDGE, "up"])


def remove_lan(plan: VmLabPlan) -> None:
    """The management link, every tap and the namespace (call once no qemu holds a tap)."""
    mgmt_link.remove(plan.root_if)
    if not S.netns_exists(plan.lan_netns):
        return
    if _stale(plan):  # the namespace went with its last process, taps and all
        S.netns_del(plan.lan_netns)
        return
    # every tap, also of a VM dropped from the inventory while the lab was up
    for row in S.run(["ip", "-n", plan.lan_netns, "tuntap", "show"]).splitlines():
        tap = row.split(":", 1)[0].strip()
        if tap:
            S.run(["ip", "-n", plan.lan_netns, "link", "del", tap])
    S.netns_del(plan.lan_netns)
