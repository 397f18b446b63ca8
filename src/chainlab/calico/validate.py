"""Checks on values read from etcd before they reach iptables-restore, ipset restore or `ip`.

etcd has no auth in the lab, so anything in /calico is untrusted: a newline or a space in a
protocol, tag or interface name would add arbitrary lines or options to the restore input.
Each check raises `Invalid` (a ValueError) with a message that quotes the value with repr,
so a warning that reports it stays on one log line.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")  # profile ids and tags (network names are up to 63)
IFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # Linux IFNAMSIZ - 1
PROTOCOLS = frozenset({"tcp", "udp", "icmp", "sctp", "udplite"})
PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp", "udplite"})  # what `-m multiport` accepts
ACTIONS = frozenset({"allow", "deny", "next-tier", "log"})
PORT_RANGE = re.compile(r"(\d{1,5})[:-](\d{1,5})")
DIRECTIONS = ("src", "dst")


class Invalid(ValueError):
    pass


def name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Invalid(f"{what} {value!r} is not 1-63 letters, digits, '_', '.' or '-'")
    return value


def iface(value: Any) -> str:
    if not isinstance(value, str) or not IFACE.fullmatch(value):
        raise Invalid(f"interface name {value!r} is not 1-15 letters, digits, '_', '.' or '-'")
    return value


def network(value: Any, *, strict: bool = False) -> IPv4Network:
    if not isinstance(value, str):
        raise Invalid(f"network {value!r} is not a string")
    try:
        return IPv4Network(value, strict=strict)
    except ValueError as exc:
        raise Invalid(f"network {value!r}: {exc}") from None


def address(value: Any) -> str:
    """An endpoint address, `a.b.c.d` or `a.b.c.d/nn` (kept as written)."""
    if not isinstance(value, str):
        raise Invalid(f"address {value!r} is not a string")
    try:
        IPv4Interface(value)
    except ValueError as exc:
        raise Invalid(f"address {value!r}: {exc}") from None
    return value


def host_address(value: Any) -> str:
    """A host's own address, `a.b.c.d` (a route's next hop)."""
    if not isinstance(value, str):
        raise Invalid(f"address {value!r} is not a string")
    try:
        return str(IPv4Address(value))
    except ValueError as exc:
        raise Invalid(f"address {value!r}: {exc}") from None


def _int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{what} {value!r} is not an integer {low}-{high}")
    return value


def protocol(value: Any) -> str:
    """A protocol name from PROTOCOLS or a number 0-255."""
    if isinstance(value, str) and value in PROTOCOLS:
        return value
    return str(_int(value, 0, 255, "protocol"))


def port(value: Any) -> None:
    """A port (1-65535) or a range `a:b` / `a-b` with a <= b."""
    match = PORT_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _int(value, 1, 65535, "port")
        return
    first, last = (_int(p, 1, 65535, "port") for p in match.groups())
    if first > last:
        raise Invalid(f"port range {value!r} is backwards")


def _negatable(rule: dict[str, Any], field: str) -> Any:
    """The value of `field` or `!field` (None if neither); both at once is ambiguous."""
    if rule.get(field) is not None and rule.get("!" + field) is not None:
        raise Invalid(f"both {field} and !{field}")
    return rule.get(field) if rule.get(field) is not None else rule.get("!" + field)


def rule(value: Any) -> dict[str, Any]:
    """A Calico v1 profile rule whose every rendered field is safe and that iptables accepts."""
    if not isinstance(value, dict):
        raise Invalid(f"rule {value!r} is not an object")
    action = value.get("action", "allow")
    if not isinstance(action, str) or action not in ACTIONS:
        raise Invalid(f"action {action!r} is not one of {sorted(ACTIONS)}")
    proto = _negatable(value, "protocol")
    proto = protocol(proto) if proto is not None else None
    positive_proto = proto if value.get("protocol") is not None else None
    for direction in DIRECTIONS:
        net = _negatable(value, f"{direction}_net")
        if net is not None:
            network(net)
        tag = _negatable(value, f"{direction}_tag")
        if tag is not None:
            name(tag, "tag")
        ports = _negatable(value, f"{direction}_ports")
        if ports:
            for item in ports if isinstance(ports, list) else [ports]:
                port(item)
            if positive_proto not in PORT_PROTOCOLS:
                raise Invalid(f"{direction}_ports need protocol tcp, udp, sctp or udplite")
    if value.get("icmp_type") is not None:
        _int(value["icmp_type"], 0, 255, "icmp_type")
        if positive_proto != "icmp":
            raise Invalid("icmp_type needs protocol icmp")
    if value.get("icmp_code") is not None:
        _int(value["icmp_code"], 0, 255, "icmp_code")
        if value.get("icmp_type") is None:
            raise Invalid("icmp_code needs icmp_type")
    return value
