"""Felix's iptables structure (Calico 2.x, emulated): a pure model and its Jinja2 rendering.

`dataplane(snapshot, host)` decides what a host needs (chains, ipsets, routes) from the etcd
snapshot; `render(model)` turns it into `iptables-restore` input for the raw, nat and filter
tables (templates in `templates/`). The input only declares chainlab-owned `cali-*` chains;
applied with `iptables-restore --noflush`, each declared chain is flushed and refilled in
one commit per table, so the dataplane never shows half a policy.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any



from chainlab.calico.datastore import IFACE_PREFIX, Endpoint, Snapshot

if TYPE_CHECKING:
    import jinja2

#: Felix's mark bits (IptablesMarkMask 0xff000000).
MARK_ACCEPT = 0x1000000
MARK_PASS = 0x2000000
MARK_SCRATCH0 = 0x4000000
CHAIN_MAX = 28  # iptables chain names: 28 characters at most
IPSET_MAX = 31
IPSET_MASQ = "cali4-masq-ipam-pools"
IPSET_ALL_POOLS = "cali4-all-ipam-pools"
TABLES = ("raw", "nat", "filter")
#: The jumps from built-in chains into ours: (table, built-in chain, our chain).
JUMPS: tuple[tuple[str, str, str], ...] = (
    ("raw", "PREROUTING", "cali-PREROUTING"),
    ("raw", "OUTPUT", "cali-OUTPUT"),
    ("nat", "PREROUTING", "cali-PREROUTING"),
    ("nat", "OUTPUT", "cali-OUTPUT"),
    ("nat", "POSTROUTING", "cali-POSTROUTING"),
    ("filter", "INPUT", "cali-INPUT"),
    ("filter", "FORWARD", "cali-FORWARD"),
    ("filter", "OUTPUT", "cali-OUTPUT"),
)
TEMPLATES = Path(__file__).with_name("templates")


def _limited(prefix: str, name: str, limit: int) -> str:
    """`prefix + name`, or a stable hash of `name` if that would exceed `limit`."""
    full = prefix + name
    if len(full) <= limit:
        return full
    return prefix + hashlib.sha256(name.encode()).hexdigest()[: limit - len(prefix)]


def chain(kind: str, name: str) -> str:
    """cali-fw-<iface>, cali-tw-<iface>, cali-pro-<profile>, cali-pri-<profile>."""
    return _limited(f"cali-{kind}-", name, CHAIN_MAX)


def tag_ipset(tag: str) -> str:
    """The ipset holding the addresses of every endpoint tagged `tag`."""
    return _limited("cali4-s:", tag, IPSET_MAX)


def hexmark(value: int) -> str:
    return f"{value:#x}"


# --- profile rules -> iptables matches ---------------------------------------------------

def _neg(rule: dict[str, Any], field_name: str) -> tuple[bool, Any]:
    if rule.get(field_name) is not None:
        return False, rule[field_name]
    if rule.get("!" + field_name) is not None:
        return True, rule["!" + field_name]
    return False, None


def _ports(value: Any) -> str:
    items = value if isinstance(value, list) else [value]
    return ",".join(str(p).replace("-", ":") for p in items)


def rule_match(rule: dict[str, Any]) -> str:
    """The iptables match of one Calico v1 profile rule (protocol, nets, tags, ports, icmp)."""
    parts: list[str] = []
    negated, proto = _neg(rule, "protocol")
    if proto is not None:
        parts.append(f"{'! ' if negated else ''}-p {proto}")
    for direction, flag in (("src", "-s"), ("dst", "-d")):
        negated, net = _neg(rule, f"{direction}_net")
        if net is not None:
            parts.append(f"{'! ' if negated else ''}{flag} {IPv4Network(net, strict=False)}")
        negated, tag = _neg(rule, f"{direction}_tag")
        if tag is not None:
            parts.append(f"-m set {'! ' if negated else ''}--match-set {tag_ipset(tag)} {direction}")
        negated, ports = _neg(rule, f"{direction}_ports")
        if ports:
            parts.append(f"-m multiport {'! ' if negated else ''}--{direction[0]}ports {_ports(ports)}")
    if rule.get("icmp_type") is not None:
        code = f"/{rule['icmp_code']}" if rule.get("icmp_code") is not None else ""
        parts.append(f"-m icmp --icmp-type {rule['icmp_type']}{code}")
    return " ".join(parts)


def rule_lines(rule: dict[str, Any]) -> list[str]:
    """The rule's body(ies) in a profile chain, felix 2.x style (allow = mark + return)."""
    match = rule_match(rule)
    lead = f"{match} " if match else ""
    action = rule.get("action", "allow")
    if action == "allow":
        return [f"{lead}-j MARK --set-xmark {hexmark(MARK_ACCEPT)}/{hexmark(MARK_ACCEPT)}",
                f"-m mark --mark {hexmark(MARK_ACCEPT)}/{hexmark(MARK_ACCEPT)} -j RETURN"]
    if action == "next-tier":
        return [f"{lead}-j MARK --set-xmark {hexmark(MARK_PASS)}/{hexmark(MARK_PASS)}",
                f"-m mark --mark {hexmark(MARK_PASS)}/{hexmark(MARK_PASS)} -j RETURN"]
    if action == "deny":
        return [f"{lead}-j DROP"]
    if action == "log":
        return [f"{lead}-j LOG --log-prefix calico-packet: --log-level 5"]
    raise ValueError(f"unknown rule action {action!r}")


# --- the model ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalEndpoint:
    iface: str
    fw_chain: str
    tw_chain: str
    addresses: tuple[str, ...]
    pro_chains: tuple[str, ...]
    pri_chains: tuple[str, ...]


@dataclass(frozen=True)
class ProfileChains:
    name: str
    pro_chain: str
    pri_chain: str
    outbound: tuple[str, ...]  # rule bodies
    inbound: tuple[str, ...]


@dataclass(frozen=True)
class Dispatch:
    """A dispatch tree: root rules go to children (by prefix) or straight to endpoint chains."""

    root: str
    direction: str  # "-i" (from workload) or "-o" (to workload)
    children: tuple[tuple[str, str], ...]  # (match interface, chain)
    leaves: dict[str, tuple[tuple[str, str], ...]]  # chain -> ((iface, endpoint chain), ...)


@dataclass
class Dataplane:
    host: str
    endpoints: list[LocalEndpoint] = field(default_factory=list)
    profiles: list[ProfileChains] = field(default_factory=list)
    from_dispatch: Dispatch | None = None
    to_dispatch: Dispatch | None = None
    ipsets: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (type, members...)
    ipset_members: dict[str, list[str]] = field(default_factory=dict)
    masquerade: bool = False
    routes: dict[str, str] = field(default_factory=dict)  # block cidr -> via address
    local_routes: dict[str, str] = field(default_factory=dict)  # a.b.c.d/32 -> iface

    @property
    def chains(self) -> dict[str, list[str]]:
        """Every chain this model owns, per table (for declaring and for stale-chain removal)."""
        filter_chains = ["cali-INPUT", "cali-OUTPUT", "cali-FORWARD", "cali-wl-to-host",
                         "cali-from-host-endpoint", "cali-to-host-endpoint"]
        for dispatch in (self.from_dispatch, self.to_dispatch):
            if dispatch:
                filter_chains += [dispatch.root, *(c for _, c in dispatch.children)]
        filter_chains += [c for ep in self.endpoints for c in (ep.fw_chain, ep.tw_chain)]
        filter_chains += [c for p in self.profiles for c in (p.pro_chain, p.pri_chain)]
        return {
            "raw": ["cali-PREROUTING", "cali-OUTPUT", "cali-from-host-endpoint", "cali-to-host-endpoint"],
            "nat": ["cali-PREROUTING", "cali-OUTPUT", "cali-POSTROUTING", "cali-fip-dnat", "cali-fip-snat",
                    "cali-nat-outgoing"],
            "filter": list(dict.fromkeys(filter_chains)),
        }


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def dispatch(root: str, direction: str, kind: str, ifaces: list[str]) -> Dispatch:
    """Felix's shallow dispatch tree: one level if all interfaces share the next character,
    else one child chain per next character (`cali-from-wl-dispatch-2`, `-d`...)."""
    names = sorted(ifaces)
    if not names:
        return Dispatch(root, direction, (), {root: ()})
    prefix = _common_prefix(names) if len(names) > 1 else names[0]
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name[len(prefix): len(prefix) + 1], []).append(name)
    if len(groups) <= 1:
        return Dispatch(root, direction, (), {root: tuple((n, chain(kind, n)) for n in names)})
    children: list[tuple[str, str]] = []
    leaves: dict[str, tuple[tuple[str, str], ...]] = {root: ()}
    for key, members in sorted(groups.items()):
        child = f"{root}-{key}"
        children.append((f"{prefix}{key}+", child))
        leaves[child] = tuple((n, chain(kind, n)) for n in members)
    return Dispatch(root, direction, tuple(children), leaves)


def _tag_members(snapshot: Snapshot) -> dict[str, list[str]]:
    members: dict[str, set[str]] = {}
    for ep in snapshot.endpoints:
        for profile in ep.profiles:
            for tag in snapshot.profiles.get(profile, _NO_PROFILE).tags:
                members.setdefault(tag, set()).update(a.split("/")[0] for a in ep.addresses)
    return {tag: sorted(addrs, key=_ip_key) for tag, addrs in members.items()}


def _ip_key(address: str) -> tuple[int, ...]:
    return tuple(int(x) for x in address.split("/")[0].split("."))


class _NoProfile:
    tags: tuple[str, ...] = ()


_NO_PROFILE = _NoProfile()


def _referenced_tags(rules: list[dict[str, Any]]) -> set[str]:
    tags = set()
    for rule in rules:
        for key in ("src_tag", "dst_tag", "!src_tag", "!dst_tag"):
            if rule.get(key):
                tags.add(str(rule[key]))
    return tags


def dataplane(snapshot: Snapshot, host: str) -> Dataplane:
    """What `host`'s dataplane must be, from the /calico snapshot (pure)."""
    model = Dataplane(host)
    local: list[Endpoint] = sorted((ep for ep in snapshot.endpoints if ep.host == host), key=lambda e: e.iface)
    used_profiles = sorted({p for ep in local for p in ep.profiles if p in snapshot.profiles})
    for ep in local:
        profiles = [p for p in ep.profiles if p in snapshot.profiles]
        model.endpoints.append(LocalEndpoint(
            ep.iface, chain("fw", ep.iface), chain("tw", ep.iface), ep.addresses,
            tuple(chain("pro", p) for p in profiles), tuple(chain("pri", p) for p in profiles)))
        for address in ep.addresses:
            model.local_routes[address] = ep.iface
    referenced: set[str] = set()
    for name in used_profiles:
        prof = snapshot.profiles[name]
        referenced |= _referenced_tags([*prof.inbound, *prof.outbound])
        model.profiles.append(ProfileChains(
            name, chain("pro", name), chain("pri", name),
            tuple(line for r in prof.outbound for line in rule_lines(r)),
            tuple(line for r in prof.inbound for line in rule_lines(r))))
    ifaces = [ep.iface for ep in local]
    model.from_dispatch = dispatch("cali-from-wl-dispatch", "-i", "fw", ifaces)
    model.to_dispatch = dispatch("cali-to-wl-dispatch", "-o", "tw", ifaces)
    members = _tag_members(snapshot)
    for tag in sorted(referenced):
        model.ipsets[tag_ipset(tag)] = ("hash:ip", "")
        model.ipset_members[tag_ipset(tag)] = members.get(tag, [])
    pools = [p for p in snapshot.pools if not p.get("disabled")]
    model.ipsets[IPSET_ALL_POOLS] = ("hash:net", "")
    model.ipset_members[IPSET_ALL_POOLS] = sorted({str(IPv4Network(p["cidr"])) for p in pools}, key=_ip_key)
    model.ipsets[IPSET_MASQ] = ("hash:net", "")
    model.ipset_members[IPSET_MASQ] = sorted(
        {str(IPv4Network(p["cidr"])) for p in pools if p.get("masquerade")}, key=_ip_key)
    model.masquerade = bool(model.ipset_members[IPSET_MASQ])
    for block, owner in sorted(snapshot.blocks.items()):
        via = snapshot.host_ips.get(owner)
        if owner != host and via:
            model.routes[block] = via
    return model


# --- rendering ---------------------------------------------------------------------------

@functools.cache
def _environment() -> "jinja2.Environment":
    """Built and its templates parsed once per process (felix-lite renders on every change)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals.update(ACCEPT=hexmark(MARK_ACCEPT), PASS=hexmark(MARK_PASS), SCRATCH0=hexmark(MARK_SCRATCH0),
                       SCRATCH_ALL=hexmark(MARK_ACCEPT | MARK_PASS | MARK_SCRATCH0),
                       IPSET_MASQ=IPSET_MASQ, IPSET_ALL_POOLS=IPSET_ALL_POOLS, IFACE_PREFIX=IFACE_PREFIX)
    return env


def render(model: Dataplane, *, missing_jumps: list[tuple[str, str, str]] | None = None,
           stale: dict[str, list[str]] | None = None) -> str:
    """`iptables-restore --noflush` input for raw, nat and filter.

    `missing_jumps`: jumps from built-in chains to insert (at the top); `stale`: cali-* chains
    of an earlier model to flush and delete, per table.
    """
    env = _environment()
    stale = stale or {}
    missing = missing_jumps if missing_jumps is not None else list(JUMPS)
    parts = []
    for table in TABLES:
        parts.append(env.get_template(f"{table}.j2").render(
            m=model, chains=model.chains[table], stale=stale.get(table, []),
            jumps=[(b, c) for t, b, c in missing if t == table]))
    return "".join(parts)


def render_cleanup(existing: dict[str, list[str]], present_jumps: list[tuple[str, str, str]]) -> str:
    """Input that removes our jumps and every cali-* chain in `existing` (per table)."""
    env = _environment()
    return env.get_template("cleanup.j2").render(
        tables=[t for t in TABLES if existing.get(t) or any(j[0] == t for j in present_jumps)],
        existing=existing, jumps=present_jumps)
