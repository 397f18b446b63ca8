"""The /calico tree around lab up and lab down: the pool, and leaving the tree as it was.

`lab up` records which /calico keys exist before it touches anything (in the lab's state,
`chainlab.labstate`); `lab down` deletes every key added since (pool, profile, endpoints,
IPAM blocks and affinities, node registrations) and the directories that held only those.
Keys that were there before lab up stay, whoever changed them since.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ipaddress import IPv4Network


from chainlab.calico import datastore as D

if TYPE_CHECKING:
    import etcd


def tree(client: etcd.Client) -> tuple[set[str], set[str]]:
    """(leaf keys, directories) under /calico; empty sets if there is none."""
    from chainlab.calico.etcdlib import etcd

    try:
        result = client.read(D.ROOT, recursive=True)
    except etcd.EtcdKeyNotFound:
        return set(), set()
    leaves: set[str] = set()
    dirs = {D.ROOT}
    for node in result.leaves:
        if not node.key or node.key == D.ROOT:
            continue
        (dirs if node.dir else leaves).add(node.key)
        parent = node.key.rsplit("/", 1)[0]
        while parent.startswith(D.ROOT):
            dirs.add(parent)
            parent = parent.rsplit("/", 1)[0]
    return leaves, dirs


def added_since(baseline: set[str], leaves: set[str], dirs: set[str]) -> tuple[list[str], list[str]]:
    """(leaves to delete, directories to delete, deepest first) to get back to `baseline` (pure)."""
    doomed = sorted(leaves - baseline)
    kept_dirs = {k.rsplit("/", i)[0] for k in baseline for i in range(1, k.count("/"))}
    empty_dirs = sorted((d for d in dirs if d not in kept_dirs), key=lambda d: (-d.count("/"), d))
    return doomed, empty_dirs


def restore(client: etcd.Client, baseline: set[str]) -> int:
    """Delete what lab up added; the number of keys deleted."""
    from chainlab.calico.etcdlib import etcd

    leaves, dirs = tree(client)
    doomed, empty_dirs = added_since(baseline, leaves, dirs)
    for key in doomed:
        try:
            client.delete(key)
        except etcd.EtcdKeyNotFound:
            pass
    for directory in empty_dirs:
        try:
            client.delete(directory, dir=True)
        except (etcd.EtcdKeyNotFound, etcd.EtcdDirNotEmpty):
            pass  # something new is in it: not ours to remove
    return len(doomed)


def pool_present(client: etcd.Client, pool: IPv4Network) -> bool:
    from chainlab.calico.etcdlib import etcd

    try:
        client.read(D.pool_key(pool))
        return True
    except etcd.EtcdKeyNotFound:
        return False


def create_pool(client: etcd.Client, pool: IPv4Network, nat_outgoing: bool) -> bool:
    """What `calicoctl create` of an ipPool writes (Calico 2.x v1 layout)."""
    return D.write_if_absent(client, D.pool_key(pool), D.dumps(D.pool_value(pool, nat_outgoing)))


#: Where dockerd keeps its global networks in its cluster store (libnetwork's datastore).
DOCKER_NETWORKS = "/docker/network/v1.0/network"


def docker_network_held(client: etcd.Client, name: str) -> bool:
    """Whether Docker's cluster store holds a network called `name`. What dockerd lists of a
    global network comes from there: while it cannot read etcd it lists none, so its
    "none" alone does not say that the network is gone."""
    from chainlab.calico.etcdlib import etcd

    try:
        result = client.read(DOCKER_NETWORKS, recursive=True)
    except etcd.EtcdKeyNotFound:
        return False
    for node in result.leaves:
        try:
            if not node.dir and node.value and json.loads(node.value).get("name") == name:
                return True
        except (ValueError, AttributeError):
            continue
    return False
