"""Workload wiring as Calico 2.x's libnetwork plugin and felix do it (emulated), over SSH.

Per workload: a veth pair, host side `cali<11 chars of the endpoint id>` with proxy ARP,
container side renamed `eth0` with MAC ee:ee:ee:ee:ee:ee, the workload's /32, a default
route via 169.254.1.1 (onlink), and a /32 route to the workload on the host. The container
runs with `network_mode="none"`; its network namespace is entered through its PID
(`docker inspect`) with nsenter, in one shell script whose every word is shlex-quoted.
"""

from __future__ import annotations

import shlex
from ipaddress import IPv4Address

import fabric

from chainlab.calico.datastore import MAC
from chainlab.remote import run

GATEWAY = "169.254.1.1"


def _in(pid: int, *argv: str) -> list[str]:
    return ["nsenter", "-t", str(pid), "-n", "--", *argv]


def wire_script(pid: int, iface: str, address: IPv4Address) -> str:
    """The shell script that wires container `pid` to host interface `iface` (pure)."""
    tmp = "tmp" + iface[4:]
    q = shlex.quote
    cmds = [
        ["ip", "link", "add", iface, "type", "veth", "peer", "name", tmp],
        ["ip", "link", "set", tmp, "netns", str(pid)],
        _in(pid, "ip", "link", "set", tmp, "name", "eth0"),
        _in(pid, "ip", "link", "set", "eth0", "address", MAC),
        _in(pid, "ip", "addr", "add", f"{address}/32", "dev", "eth0"),
        _in(pid, "ip", "link", "set", "eth0", "up"),
        _in(pid, "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0", "onlink"),
        ["ip", "link", "set", iface, "up"],
        ["ip", "route", "replace", f"{address}/32", "dev", iface, "scope", "link"],
    ]
    lines = ["set -e", f"ip link del {q(iface)} 2>/dev/null || true"]
    lines += [shlex.join(c) for c in cmds]
    # felix: proxy ARP on the host side, answered at once
    lines.append(f"echo 1 > {q(f'/proc/sys/net/ipv4/conf/{iface}/proxy_arp')}")
    lines.append(f"echo 0 > {q(f'/proc/sys/net/ipv4/neigh/{iface}/proxy_delay')}")
    # the host may have no route to 169.254.1.1 (no default route in a lab namespace), and
    # proxy ARP answers only for routable targets: also pin the gateway's MAC in the workload
    lines.append(f"mac=$(cat {q(f'/sys/class/net/{iface}/address')})")
    lines.append(shlex.join(_in(pid, "ip", "neigh", "replace", GATEWAY, "lladdr")) + ' "$mac" '
                 + shlex.join(["dev", "eth0", "nud", "permanent"]))
    return "\n".join(lines) + "\n"


def wire(conn: fabric.Connection, pid: int, iface: str, address: IPv4Address) -> None:
    run(conn, ["sh", "-c", wire_script(pid, iface, address)])


def is_wired(conn: fabric.Connection, pid: int, iface: str, address: IPv4Address) -> bool:
    """The host side exists and the container's eth0 carries the address."""
    script = "\n".join([
        shlex.join(["ip", "link", "show", "dev", iface]) + " >/dev/null",
        shlex.join(_in(pid, "ip", "-4", "-o", "addr", "show", "dev", "eth0")),
    ])
    result = run(conn, ["sh", "-c", script], check=False)
    return result.ok and f" {address}/32 " in result.stdout


def unwire(conn: fabric.Connection, iface: str) -> bool:
    """Delete the host side (the container side goes with it); True if it existed."""
    return run(conn, ["ip", "link", "del", iface], check=False).ok
