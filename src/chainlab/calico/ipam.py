"""Calico 2.x IPAM in etcd (emulated): /26 blocks with host affinity, compare-and-swap updates.

- `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-26>`: `{"cidr", "affinity": "host:<h>",
  "strictAffinity", "allocations": [attr index or null per address], "unallocated",
  "attributes": [{"handle_id", "secondary"}]}`
- `/calico/ipam/v2/host/<host>/ipv4/block/<a.b.c.d-26>`: "" (the host's affinity)
- `/calico/ipam/v2/handle/<handle>`: `{"handleID", "block": {"<cidr>": count}}`
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import etcd

from chainlab.calico.datastore import cidr_key, dumps
from chainlab.errors import ChainlabError

BLOCK_PREFIX = 26
IPAM = "/calico/ipam/v2"
#: Address 0 of a block is never handed out (aesthetics: no x.y.z.0 workloads).
FIRST_ORDINAL = 1
CAS_ATTEMPTS = 20


def block_key(cidr: IPv4Network) -> str:
    return f"{IPAM}/assignment/ipv4/block/{cidr_key(cidr)}"


def affinity_dir(host: str) -> str:
    return f"{IPAM}/host/{host}/ipv4/block"


def affinity_key(host: str, cidr: IPv4Network) -> str:
    return f"{affinity_dir(host)}/{cidr_key(cidr)}"


def handle_key(handle: str) -> str:
    return f"{IPAM}/handle/{handle}"


def new_block(cidr: IPv4Network, host: str) -> dict[str, Any]:
    size = cidr.num_addresses
    return {"cidr": str(cidr), "affinity": f"host:{host}", "strictAffinity": False,
            "allocations": [None] * size, "unallocated": list(range(FIRST_ORDINAL, size)), "attributes": []}


def assign(block: dict[str, Any], handle: str) -> IPv4Address | None:
    """Take the first free address of `block` for `handle` (mutates; None if full). Pure."""
    cidr = IPv4Network(block["cidr"])
    for index, ordinal in enumerate(block["unallocated"]):
        if block["allocations"][ordinal] is None:
            block["unallocated"].pop(index)
            block["attributes"].append({"handle_id": handle, "secondary": None})
            block["allocations"][ordinal] = len(block["attributes"]) - 1
            return cidr.network_address + ordinal
    return None


def owned_by(block: dict[str, Any], handle: str) -> list[IPv4Address]:
    cidr = IPv4Network(block["cidr"])
    attrs = block["attributes"]
    return [cidr.network_address + i for i, a in enumerate(block["allocations"])
            if a is not None and attrs[a]["handle_id"] == handle]


def release(block: dict[str, Any], handle: str) -> int:
    """Free every address of `handle` in `block` (mutates); the number freed. Pure."""
    attrs = block["attributes"]
    freed = 0
    for ordinal, attr in enumerate(block["allocations"]):
        if attr is not None and attrs[attr]["handle_id"] == handle:
            block["allocations"][ordinal] = None
            block["unallocated"].append(ordinal)
            freed += 1
    return freed


def _host_blocks(client: etcd.Client, host: str) -> list[IPv4Network]:
    try:
        result = client.read(affinity_dir(host))
    except etcd.EtcdKeyNotFound:
        return []
    return sorted(IPv4Network(leaf.key.rsplit("/", 1)[1].replace("-", "/"))
                  for leaf in result.leaves if leaf.key and not leaf.dir)


def _claim_block(client: etcd.Client, pool: IPv4Network, host: str) -> IPv4Network:
    for cidr in pool.subnets(new_prefix=BLOCK_PREFIX):
        try:
            client.write(block_key(cidr), dumps(new_block(cidr, host)), prevExist=False)
        except etcd.EtcdAlreadyExist:
            continue
        client.write(affinity_key(host, cidr), "")
        return cidr
    raise ChainlabError(f"IP pool {pool} is exhausted")


def auto_assign(client: etcd.Client, pool: IPv4Network, host: str, handle: str) -> IPv4Address:
    """An address for `handle` from one of `host`'s blocks (claiming a block if needed)."""
    for _ in range(CAS_ATTEMPTS):
        blocks = _host_blocks(client, host) or [_claim_block(client, pool, host)]
        for cidr in blocks:
            node = client.read(block_key(cidr))
            block = json.loads(node.value)
            address = assign(block, handle)
            if address is None:
                continue
            try:
                client.write(block_key(cidr), dumps(block), prevIndex=node.modifiedIndex)
            except etcd.EtcdCompareFailed:
                break  # someone else changed it: start over
            client.write(handle_key(handle), dumps({"handleID": handle, "block": {str(cidr): 1}}))
            return address
        else:
            _claim_block(client, pool, host)
    raise ChainlabError(f"could not assign an address for {handle} on {host} (contention)")


def release_handle(client: etcd.Client, handle: str) -> bool:
    """Free every address of `handle`; True if anything was freed."""
    try:
        data = json.loads(client.read(handle_key(handle)).value)
    except etcd.EtcdKeyNotFound:
        return False
    freed = False
    for cidr in data.get("block", {}):
        for _ in range(CAS_ATTEMPTS):
            try:
                node = client.read(block_key(IPv4Network(cidr)))
            except etcd.EtcdKeyNotFound:
                break
            block = json.loads(node.value)
            if not release(block, handle):
                break
            try:
                client.write(node.key, dumps(block), prevIndex=node.modifiedIndex)
                freed = True
                break
            except etcd.EtcdCompareFailed:
                continue
    try:
        client.delete(handle_key(handle))
    except etcd.EtcdKeyNotFound:
        pass
    return freed
