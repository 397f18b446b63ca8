"""`--match EXPR`: which packets an analysis reports (every expression must hold).

  src=ADDR|CIDR   the source as the packet entered or as it left (NAT) is in it
  dst=ADDR|CIDR   the same for the destination
  proto=NAME      the protocol (icmp, tcp, udp, icmpv6, or a number as the log gives it)
  port=N          source or destination port
  ip-id=N         the IPv4 id
  node=GLOB       the node (* and ? as in a shell)
  verdict=V       accepted, dropped or unknown
  chain=GLOB      a chain the packet walked, `chain` or `table:chain`

The parts are split by what they depend on, so that an engine can test each where it is
cheapest: the node once per node, an address once per address, the walk (verdict, chains)
once per distinct walk, the rest per packet.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from chainlab.errors import InputError, Problem
from chainlab.trace.ascii import is_digits, lower
from chainlab.trace.model import Packet

KEYS = ("src", "dst", "proto", "port", "ip-id", "node", "verdict", "chain")
VERDICTS = ("accepted", "dropped", "unknown")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Match:
    """Parsed --match expressions; an empty Match takes every packet."""

    src: tuple[Network, ...] = ()
    dst: tuple[Network, ...] = ()
    protocols: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    ip_ids: tuple[int, ...] = ()
    nodes: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    chains: tuple[str, ...] = ()
    text: tuple[str, ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.text)

    def node_ok(self, node: str) -> bool:
        return all(fnmatch.fnmatchcase(node, pattern) for pattern in self.nodes)

    def address_ok(self, which: str, address: str) -> bool:
        """Whether one address (as a line gives it) is in every `which` (src/dst) network."""
        networks = self.src if which == "src" else self.dst
        parsed = _address(address)
        return parsed is not None and all(parsed.version == n.version and parsed in n for n in networks)

    def walk_ok(self, packet: Packet) -> bool:
        """The parts that depend only on the packet's walk (verdict, chains walked)."""
        if self.verdicts and any(packet.verdict != v for v in self.verdicts):
            return False
        for pattern in self.chains:
            if not any(fnmatch.fnmatchcase(s.chain, pattern) or fnmatch.fnmatchcase(f"{s.table}:{s.chain}", pattern)
                       for s in packet.steps):
                return False
        return True

    def fields_ok(self, packet: Packet) -> bool:
        """The parts that depend on the packet's own header fields."""
        f = packet.fields
        if self.protocols and any(packet.protocol != p for p in self.protocols):
            return False
        if any(f.sport != port and f.dport != port for port in self.ports):
            return False
        return all(f.ip_id == ip_id for ip_id in self.ip_ids)

    def endpoints_ok(self, packet: Packet) -> bool:
        for which, networks in (("src", self.src), ("dst", self.dst)):
            if networks:
                seen = {getattr(f, which) for f in (packet.first, packet.last) if f is not None}
                if not any(a is not None and self.address_ok(which, a) for a in seen):
                    return False
        return True

    def __call__(self, packet: Packet) -> bool:
        return (self.node_ok(packet.node) and self.fields_ok(packet) and self.endpoints_ok(packet)
                and self.walk_ok(packet))


@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_match(expressions: list[str] | tuple[str, ...]) -> Match:
    """Match from `KEY=VALUE` expressions; a bad one is an InputError naming it."""
    parts: dict[str, list[object]] = {key: [] for key in KEYS}
    problems = []
    for expression in expressions:
        key, sep, value = expression.partition("=")
        try:
            if not sep or key not in KEYS:
                raise ValueError(f"expected KEY=VALUE with KEY one of {', '.join(KEYS)}")
            if not value:
                raise ValueError("empty value")
            parts[key].append(_value(key, value))
        except ValueError as exc:
            problems.append(Problem("--match", "", f"{expression!r}: {exc}"))
    if problems:
        raise InputError(problems)
    return Match(
        src=tuple(parts["src"]), dst=tuple(parts["dst"]),  # type: ignore[arg-type]
        protocols=tuple(parts["proto"]), ports=tuple(parts["port"]), ip_ids=tuple(parts["ip-id"]),  # type: ignore[arg-type]
        nodes=tuple(parts["node"]), verdicts=tuple(parts["verdict"]), chains=tuple(parts["chain"]),  # type: ignore[arg-type]
        text=tuple(expressions),
    )


def _value(key: str, value: str) -> object:
    if key in ("src", "dst"):
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError("not an address or CIDR") from None
    if key in ("port", "ip-id"):
        if not is_digits(value) or int(value) > 65535:
            raise ValueError("expected a number from 0 to 65535")
        return int(value)
    if key == "verdict":
        if value not in VERDICTS:
            raise ValueError(f"expected one of {', '.join(VERDICTS)}")
        return value
    if key == "proto":
        return lower(value)
    return value
