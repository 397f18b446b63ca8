"""A machine lab's network (the local lab's namespaces, the VM lab's taps): a namespace with
the lab's bridge, and the management link, a veth from the machine's namespace to that
bridge, which only root may use (`link_guard`)."""

from __future__ import annotations

from ipaddress import IPv4Interface

from chainlab.local import link_guard
from chainlab.local import system as S

#: The lab's bridge, in the lab's namespace.
BRIDGE = "lan0"
#: The management link's end on the bridge.
LAN_MGMT_PORT = "mgmt0"


def ensure(lan_netns: str, root_if: str, mgmt: IPv4Interface) -> None:
    """The namespace `lan_netns` with its bridge, and the management link `root_if` with the
    machine's address `mgmt`; whatever part is missing is made, a link whose peer went with an
    earlier namespace is made again."""
    link_guard.ensure(root_if)  # before the link is there: no moment open to other users
    if not S.netns_exists(lan_netns):
        if S.link_exists(root_if):  # its peer died with an earlier lab namespace
            S.run(["ip", "link", "del", root_if])
        S.netns_add(lan_netns)
    if not S.link_exists(BRIDGE, lan_netns):
        S.run(["ip", "-n", lan_netns, "link", "add", BRIDGE, "type", "bridge"])
    S.run(["ip", "-n", lan_netns, "link", "set", "lo", "up"])
    S.run(["ip", "-n", lan_netns, "link", "set", BRIDGE, "up"])
    if S.link_exists(root_if) and not S.link_exists(LAN_MGMT_PORT, lan_netns):
        S.run(["ip", "link", "del", root_if])
    if not S.link_exists(root_if):
        S.run(["ip", "link", "add", root_if, "type", "veth", "peer", "name", LAN_MGMT_PORT, "netns", lan_netns])
    S.run(["ip", "-n", lan_netns, "link", "set", LAN_MGMT_PORT, "master", BRIDGE, "up"])
    S.run(["ip", "addr", "replace", str(mgmt), "dev", root_if])
    S.run(["ip", "link", "set", root_if, "up"])


def remove(root_if: str) -> None:
    """The management link, then its guard (the namespace is the caller's to remove)."""
    if S.link_exists(root_if):
        S.run(["ip", "link", "del", root_if])
    link_guard.remove(root_if)
