"""Reading and changing profiles in etcd (Calico 2.x v1 layout; the emulation's felix-lite
and, on real hosts, Calico's felix pick the change up by watching etcd)."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from typing import Any

import etcd

from chainlab.calico import datastore as D
from chainlab.errors import ChainlabError


def show(client: etcd.Client, name: str) -> dict[str, Any]:
    """{"rules": ..., "tags": ..., "labels": ...} of profile `name`."""
    out: dict[str, Any] = {}
    for part, key in D.profile_keys(name).items():
        try:
            out[part] = json.loads(client.read(key).value)
        except etcd.EtcdKeyNotFound:
            out[part] = None
    if out["rules"] is None and out["tags"] is None:
        raise ChainlabError(f"no profile {name!r} in etcd (is the network created?)")
    return out


def allow_from(client: etcd.Client, name: str, cidr: IPv4Network) -> bool:
    """Add an inbound `allow` rule for source `cidr` (compare-and-swap); True if added."""
    key = D.profile_keys(name)["rules"]
    for _ in range(10):
        try:
            node = client.read(key)
        except etcd.EtcdKeyNotFound:
            raise ChainlabError(f"no profile {name!r} in etcd (is the network created?)") from None
        rules = json.loads(node.value)
        rule = {"action": "allow", "src_net": str(cidr)}
        if rule in rules.get("inbound_rules", []):
            return False
        rules.setdefault("inbound_rules", []).append(rule)
        try:
            client.write(key, D.dumps(rules), prevIndex=node.modifiedIndex)
            return True
        except etcd.EtcdCompareFailed:
            continue
    raise ChainlabError(f"profile {name!r} kept changing under us; try again")


def reset(client: etcd.Client, name: str) -> bool:
    """Back to what the libnetwork plugin creates for a network; True if it changed."""
    changed = False
    default = D.network_profile(name)
    for part, key in D.profile_keys(name).items():
        value = D.dumps(default[part])
        try:
            if client.read(key).value == value:
                continue
        except etcd.EtcdKeyNotFound:
            pass
        client.write(key, value)
        changed = True
    return changed
