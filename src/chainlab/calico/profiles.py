"""Reading and changing profiles in etcd (Calico 2.x v1 layout; the emulation's felix-lite
and, on real hosts, Calico's felix pick the change up by watching etcd).

Every failure (etcd unreachable or answering an error, a stored value that is not the JSON
expected) is a ChainlabError that says which profile and step failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network
from typing import Any

from chainlab.calico import datastore as D
from chainlab.calico.etcdlib import etcd
from chainlab.errors import ChainlabError
from chainlab.patterns import NETWORK_NAME, PATTERN_HELP
from chainlab.remote.etcdclient import ETCD_ERRORS


@contextmanager
def _etcd(what: str) -> Iterator[None]:
    try:
        yield
    except ETCD_ERRORS as exc:
        raise ChainlabError(f"{what}: {str(exc) or type(exc).__name__}") from exc


def _keys(name: str) -> dict[str, str]:
    """Profile `name`'s etcd keys; the name is checked first, as it becomes part of the keys."""
    if not re.fullmatch(NETWORK_NAME, name):
        raise ChainlabError(f"profile name {name!r} is not {PATTERN_HELP[NETWORK_NAME]}")
    return D.profile_keys(name)


def _decode(name: str, part: str, value: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise ChainlabError(f"profile {name!r}: the {part} value stored in etcd is not valid JSON ({exc})") from None


def _missing(name: str) -> ChainlabError:
    return ChainlabError(f"no profile {name!r} in etcd (is the network created?)")


def show(client: etcd.Client, name: str) -> dict[str, Any]:
    """{"rules": ..., "tags": ..., "labels": ...} of profile `name`."""
    out: dict[str, Any] = {}
    for part, key in _keys(name).items():
        with _etcd(f"reading profile {name!r} {part} from etcd"):
            try:
                value = client.read(key).value
            except etcd.EtcdKeyNotFound:
                out[part] = None
                continue
        out[part] = _decode(name, part, value)
    if out["rules"] is None and out["tags"] is None:
        raise _missing(name)
    return out


def _inbound(name: str, rules: Any) -> list[Any]:
    """The inbound rule list of a stored rules object (created if absent)."""
    inbound = rules.setdefault("inbound_rules", []) if isinstance(rules, dict) else None
    if not isinstance(inbound, list):
        raise ChainlabError(f"profile {name!r}: stored rules are not {{\"inbound_rules\": [...]}};"
                            f" `chainlab profile reset {name}` rewrites them")
    return inbound


def allow_from(client: etcd.Client, name: str, cidr: IPv4Network) -> bool:
    """Add an inbound `allow` rule for source `cidr` (compare-and-swap); True if added."""
    key = _keys(name)["rules"]
    rule = {"action": "allow", "src_net": str(cidr)}
    for _ in range(10):
        with _etcd(f"reading profile {name!r} rules from etcd"):
            try:
                node = client.read(key)
            except etcd.EtcdKeyNotFound:
                raise _missing(name) from None
        rules = _decode(name, "rules", node.value)
        inbound = _inbound(name, rules)
        if rule in inbound:
            return False
        inbound.append(rule)
        with _etcd(f"writing profile {name!r} rules to etcd"):
            try:
                client.write(key, D.dumps(rules), prevIndex=node.modifiedIndex)
                return True
            except etcd.EtcdCompareFailed:
                continue
    raise ChainlabError(f"profile {name!r} kept changing under us; try again")


def reset(client: etcd.Client, name: str) -> bool:
    """Back to what the libnetwork plugin creates for a network; True if it changed.

    Only an existing profile (rules or tags in etcd) is reset: a name that is not one is an
    error, not a new profile."""
    default = D.network_profile(name)
    current: dict[str, str | None] = {}
    for part, key in _keys(name).items():
        with _etcd(f"reading profile {name!r} {part} from etcd"):
            try:
                current[part] = client.read(key).value
            except etcd.EtcdKeyNotFound:
                current[part] = None
    if current["rules"] is None and current["tags"] is None:
        raise _missing(name)
    changed = False
    for part, key in _keys(name).items():
        value = D.dumps(default[part])
        if current[part] == value:
            continue
        with _etcd(f"resetting profile {name!r} {part} in etcd"):
            client.write(key, value)
        changed = True
    return changed
