"""Calico 2.x's v1 etcd layout (emulated): keys and values, pure, plus small etcd helpers.

Layout (etcd v2 API, as libcalico 1.x / calicoctl 1.x wrote it for Calico 2.x):

- `/calico/v1/ipam/v4/pool/<a.b.c.d-nn>`: `{"cidr", "ipam", "masquerade", "disabled"}`
- `/calico/v1/policy/profile/<name>/rules`: `{"inbound_rules": [...], "outbound_rules": [...]}`
- `/calico/v1/policy/profile/<name>/tags`: `["net1"]`; `.../labels`: `{}`
- `/calico/v1/host/<host>/workload/libnetwork/libnetwork/endpoint/<id>`: the endpoint
- `/calico/bgp/v1/host/<host>/ip_addr_v4`: the host's address (what BIRD peers with)
- `/calico/ipam/v2/...`: blocks and affinities (see `chainlab.calico.ipam`)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any


from chainlab.calico import validate as V

if TYPE_CHECKING:
    import etcd

ROOT = "/calico"
ORCHESTRATOR = "libnetwork"
WORKLOAD = "libnetwork"
MAC = "ee:ee:ee:ee:ee:ee"
IFACE_PREFIX = "cali"


def cidr_key(cidr: IPv4Network | str) -> str:
    """`172.20.0.0/16` -> `172.20.0.0-16` (Calico puts no slash in a key segment)."""
    return str(cidr).replace("/", "-")


def pool_key(cidr: IPv4Network | str) -> str:
    return f"{ROOT}/v1/ipam/v4/pool/{cidr_key(cidr)}"


def profile_dir(name: str) -> str:
    return f"{ROOT}/v1/policy/profile/{name}"


def profile_keys(name: str) -> dict[str, str]:
    base = profile_dir(name)
    return {"rules": f"{base}/rules", "tags": f"{base}/tags", "labels": f"{base}/labels"}


def endpoint_dir(host: str) -> str:
    return f"{ROOT}/v1/host/{host}/workload/{ORCHESTRATOR}/{WORKLOAD}/endpoint"


def endpoint_key(host: str, endpoint_id: str) -> str:
    return f"{endpoint_dir(host)}/{endpoint_id}"


#: Where calico/node registers each host's address (`host_ip_key`).
HOST_IP_DIR = f"{ROOT}/bgp/v1/host"


def host_ip_key(host: str) -> str:
    return f"{HOST_IP_DIR}/{host}/ip_addr_v4"


def interface_name(endpoint: str) -> str:
    """`cali` + the first 11 characters of Docker's endpoint id, as the libnetwork plugin names it."""
    return IFACE_PREFIX + endpoint[:11]


#: A workload interface's name as `interface_name` makes it (Docker's endpoint ids are hex).
_WORKLOAD_INTERFACE = re.compile(rf"\b{IFACE_PREFIX}[0-9a-f]{{11}}\b")


def without_workload_names(text: str) -> str:
    """`text` with each workload interface's name as `cali*`: the chains and rules named
    after an endpoint (`cali-tw-cali<11 hex>`) read the same after its container restarted,
    which gives it a new endpoint, so a new name."""
    return _WORKLOAD_INTERFACE.sub(IFACE_PREFIX + "*", text)


def pool_value(cidr: IPv4Network, nat_outgoing: bool) -> dict[str, Any]:
    return {"cidr": str(cidr), "ipam": True, "masquerade": nat_outgoing, "disabled": False}


def network_profile(name: str) -> dict[str, Any]:
    """What the libnetwork plugin creates per network: tag = name, inbound from the tag only."""
    return {
        "rules": {"inbound_rules": [{"action": "allow", "src_tag": name}],
                  "outbound_rules": [{"action": "allow"}]},
        "tags": [name],
        "labels": {},
    }


def endpoint_value(iface: str, address: IPv4Address, profile: str, mac: str = MAC) -> dict[str, Any]:
    """A workload endpoint as the libnetwork plugin writes it at `CreateEndpoint`."""
    return {
        "state": "active", "name": iface, "mac": mac.lower(), "profile_ids": [profile],
        "ipv4_nets": [f"{address}/32"], "ipv6_nets": [], "labels": {},
    }


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- the whole /calico tree as the agent sees it --------------------------------------

@dataclass(frozen=True)
class Endpoint:
    host: str
    id: str
    iface: str
    addresses: tuple[str, ...]  # "a.b.c.d/32"
    profiles: tuple[str, ...]


@dataclass(frozen=True)
class Profile:
    name: str
    inbound: tuple[dict[str, Any], ...] = ()
    outbound: tuple[dict[str, Any], ...] = ()
    tags: tuple[str, ...] = ()


@dataclass
class Snapshot:
    """The parts of /calico that the dataplane depends on."""

    pools: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    host_ips: dict[str, str] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)  # block cidr -> host with affinity
    skipped: list[str] = field(default_factory=list)  # why each invalid entry was left out


def _json(value: str | None, default: Any) -> Any:
    try:
        return json.loads(value) if value else default
    except ValueError:
        return default


def _pool(value: str) -> dict[str, Any]:
    pool = _json(value, None)
    if not isinstance(pool, dict) or "cidr" not in pool:
        raise V.Invalid("not a pool object")
    V.network(pool["cidr"], strict=True)
    return pool


def _endpoint(host: str, endpoint: str, value: str) -> Endpoint:
    ep = _json(value, None)
    if not isinstance(ep, dict):
        raise V.Invalid("not an endpoint object")
    addresses, profiles = ep.get("ipv4_nets") or [], ep.get("profile_ids") or []
    if not isinstance(addresses, list) or not isinstance(profiles, list):
        raise V.Invalid("ipv4_nets and profile_ids must be lists")
    return Endpoint(host=host, id=endpoint, iface=V.iface(ep.get("name")),
                    addresses=tuple(V.address(a) for a in addresses),
                    profiles=tuple(V.name(p, "profile id") for p in profiles))


def _rules(profile: str, rules: dict[str, Any], direction: str, skipped: list[str]) -> tuple[dict[str, Any], ...]:
    listed = rules.get(direction) or []
    kept = []
    for index, rule in enumerate(listed if isinstance(listed, list) else []):
        try:
            kept.append(V.rule(rule))
        except V.Invalid as exc:
            skipped.append(f"profile {profile} {direction}[{index}]: {exc}")
    return tuple(kept)


def _tags(profile: str, tags: list[Any], skipped: list[str]) -> tuple[str, ...]:
    kept = []
    for tag in tags:
        try:
            kept.append(V.name(tag, "tag"))
        except V.Invalid as exc:
            skipped.append(f"profile {profile} tags: {exc}")
    return tuple(kept)


def _profile(name: str, data: dict[str, Any], skipped: list[str]) -> Profile:
    """Profile `name` without its invalid rules and tags (each noted in `skipped`)."""
    V.name(name, "profile name")
    raw_rules, raw_tags = data.get("rules"), data.get("tags")
    rules = raw_rules if isinstance(raw_rules, dict) else {}
    tags = raw_tags if isinstance(raw_tags, list) else []
    return Profile(name, _rules(name, rules, "inbound_rules", skipped), _rules(name, rules, "outbound_rules", skipped),
                   _tags(name, tags, skipped))


def _parse_leaf(snap: Snapshot, profiles: dict[str, dict[str, Any]], parts: list[str], value: str) -> None:
    """File one /calico leaf into `snap` (profiles are gathered first: they span three keys)."""
    if parts[:5] == ["calico", "v1", "ipam", "v4", "pool"] and len(parts) == 6:
        snap.pools.append(_pool(value))
    elif parts[:4] == ["calico", "v1", "policy", "profile"] and len(parts) == 6:
        profiles.setdefault(parts[4], {})[parts[5]] = _json(value, None)
    elif (parts[:3] == ["calico", "v1", "host"] and len(parts) == 9 and parts[4] == "workload"
          and parts[7] == "endpoint"):
        snap.endpoints.append(_endpoint(parts[3], parts[8], value))
    elif parts[:4] == ["calico", "bgp", "v1", "host"] and len(parts) == 6 and parts[5] == "ip_addr_v4":
        if value:
            snap.host_ips[parts[4]] = V.host_address(value)
    elif parts[:4] == ["calico", "ipam", "v2", "host"] and len(parts) == 8 and parts[6] == "block":
        snap.blocks[str(V.network(parts[7].replace("-", "/"), strict=True))] = parts[4]


def parse_tree(items: dict[str, str]) -> Snapshot:
    """A Snapshot from `{key: value}` of every leaf under /calico.

    Invalid entries (bad JSON, or a value that could inject into the rendered rules) are
    left out, each with a reason in `skipped`; the rest of the tree still applies.
    """
    snap = Snapshot()
    profiles: dict[str, dict[str, Any]] = {}
    for key, value in sorted(items.items()):
        try:
            _parse_leaf(snap, profiles, key.strip("/").split("/"), value)
        except V.Invalid as exc:
            snap.skipped.append(f"{key!r}: {exc}")
    for name, data in profiles.items():
        try:
            snap.profiles[name] = _profile(name, data, snap.skipped)
        except V.Invalid as exc:
            snap.skipped.append(f"profile {name!r}: {exc}")
    return snap


def read_tree(client: etcd.Client, root: str = ROOT) -> tuple[dict[str, str], int]:
    """Every leaf under `root` and the etcd index the read reflects ({} if absent)."""
    from chainlab.calico.etcdlib import etcd

    try:
        result = client.read(root, recursive=True)
    except etcd.EtcdKeyNotFound as exc:
        return {}, int((getattr(exc, "payload", None) or {}).get("index", 0) or 0)
    items = {leaf.key: leaf.value for leaf in result.leaves if not leaf.dir and leaf.key}
    return items, int(result.etcd_index)


def write_if_absent(client: etcd.Client, key: str, value: str) -> bool:
    """Create `key` unless it exists; True if created."""
    from chainlab.calico.etcdlib import etcd

    try:
        client.write(key, value, prevExist=False)
        return True
    except etcd.EtcdAlreadyExist:
        return False
