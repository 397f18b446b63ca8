"""Calico 2.x IPAM in etcd (emulated): /26 blocks with host affinity, compare-and-swap updates.

What the libnetwork plugin's `IpamDriver.RequestAddress`/`ReleaseAddress` do through
libcalico's AutoAssign/AssignIP/ReleaseIPs (Docker hands no handle over, so none is kept):

- `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-26>`: `{"cidr", "affinity": "host:<h>",
  "strictAffinity", "allocations": [attribute index or null per address], "unallocated",
  "attributes": [{"handle_id", "secondary"}]}`
- `/calico/ipam/v2/host/<host>/ipv4/block/<a.b.c.d-26>`: "" (the host's affinity)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from chainlab.calico.datastore import cidr_key, dumps
from chainlab.calico.etcdlib import etcd
from chainlab.errors import ChainlabError

BLOCK_PREFIX = 26
IPAM = "/calico/ipam/v2"
#: Address 0 of a block is never handed out by auto-assignment (no x.y.z.0 workloads).
FIRST_ORDINAL = 1
CAS_ATTEMPTS = 20
#: libnetwork gives no handle: every allocation shares this attribute entry.
NO_HANDLE: dict[str, Any] = {"handle_id": None, "secondary": None}


def block_key(cidr: IPv4Network) -> str:
    return f"{IPAM}/assignment/ipv4/block/{cidr_key(cidr)}"


def affinity_dir(host: str) -> str:
    return f"{IPAM}/host/{host}/ipv4/block"


def affinity_key(host: str, cidr: IPv4Network) -> str:
    return f"{affinity_dir(host)}/{cidr_key(cidr)}"


def block_of(address: IPv4Address) -> IPv4Network:
    return IPv4Network(f"{address}/{BLOCK_PREFIX}", strict=False)


def new_block(cidr: IPv4Network, host: str) -> dict[str, Any]:
    size = cidr.num_addresses
    return {"cidr": str(cidr), "affinity": f"host:{host}", "strictAffinity": False,
            "allocations": [None] * size, "unallocated": list(range(FIRST_ORDINAL, size)), "attributes": []}


def _attribute(block: dict[str, Any]) -> int:
    """The index of the shared no-handle attribute entry (added on first use)."""
    attrs = block["attributes"]
    if NO_HANDLE not in attrs:
        attrs.append(dict(NO_HANDLE))
    return attrs.index(NO_HANDLE)


def assign(block: dict[str, Any]) -> IPv4Address | None:
    """Take the first free address of `block` (mutates; None if full). Pure."""
    cidr = IPv4Network(block["cidr"])
    for index, ordinal in enumerate(block["unallocated"]):
        if block["allocations"][ordinal] is None:
            block["unallocated"].pop(index)
            block["allocations"][ordinal] = _attribute(block)
            return cidr.network_address + ordinal
    return None


def assign_address(block: dict[str, Any], address: IPv4Address) -> bool:
    """Take `address` in `block` (mutates); False if it is already taken. Pure."""
    ordinal = int(address) - int(IPv4Network(block["cidr"]).network_address)
    if block["allocations"][ordinal] is not None:
        return False
    block["allocations"][ordinal] = _attribute(block)
    if ordinal in block["unallocated"]:
        block["unallocated"].remove(ordinal)
    return True


def release(block: dict[str, Any], address: IPv4Address) -> bool:
    """Free `address` in `block` (mutates); False if it was not allocated. Pure."""
    ordinal = int(address) - int(IPv4Network(block["cidr"]).network_address)
    if block["allocations"][ordinal] is None:
        return False
    block["allocations"][ordinal] = None
    block["unallocated"].append(ordinal)
    return True


def allocated(block: dict[str, Any]) -> list[IPv4Address]:
    cidr = IPv4Network(block["cidr"])
    return [cidr.network_address + i for i, a in enumerate(block["allocations"]) if a is not None]


def _host_blocks(client: etcd.Client, host: str) -> list[IPv4Network]:
    try:
        result = client.read(affinity_dir(host))
    except etcd.EtcdKeyNotFound:
        return []
    return sorted(IPv4Network(leaf.key.rsplit("/", 1)[1].replace("-", "/"))
                  for leaf in result.leaves if leaf.key and not leaf.dir)


def _claim(client: etcd.Client, cidr: IPv4Network, host: str) -> bool:
    """Create block `cidr` with affinity to `host`; False if it exists already."""
    try:
        client.write(block_key(cidr), dumps(new_block(cidr, host)), prevExist=False)
    except etcd.EtcdAlreadyExist:
        return False
    client.write(affinity_key(host, cidr), "")
    return True


def _claim_any(client: etcd.Client, pools: Sequence[IPv4Network], host: str) -> IPv4Network:
    for pool in pools:
        for cidr in pool.subnets(new_prefix=BLOCK_PREFIX):
            if _claim(client, cidr, host):
                return cidr
    raise ChainlabError(f"IP pool(s) {', '.join(map(str, pools))} exhausted")


def _update(client: etcd.Client, cidr: IPv4Network, change: Any) -> Any:
    """Read block `cidr`, apply `change(block)` and write it back if the block did not move
    meanwhile (compare-and-swap), retried. Returns what `change` returned (None: no write)."""
    for _ in range(CAS_ATTEMPTS):
        node = client.read(block_key(cidr))
        block = json.loads(node.value)
        result = change(block)
        if result is None or result is False:
            return result
        try:
            client.write(node.key, dumps(block), prevIndex=node.modifiedIndex)
            return result
        except etcd.EtcdCompareFailed:
            continue
    raise ChainlabError(f"IPAM block {cidr}: too much contention")


def auto_assign(client: etcd.Client, host: str, pools: Sequence[IPv4Network]) -> IPv4Address:
    """An address from one of `host`'s blocks inside `pools` (claiming a block if needed)."""
    for _ in range(CAS_ATTEMPTS):
        blocks = [b for b in _host_blocks(client, host) if any(b.subnet_of(p) for p in pools)]
        for cidr in blocks:
            address = _update(client, cidr, assign)
            if address is not None:
                return address
        _claim_any(client, pools, host)
    raise ChainlabError(f"could not assign an address on {host} (contention)")


def assign_ip(client: etcd.Client, host: str, address: IPv4Address) -> None:
    """Reserve a given address (`docker run --ip`), claiming its block for `host` if free."""
    cidr = block_of(address)
    _claim(client, cidr, host)
    if not _update(client, cidr, lambda block: assign_address(block, address)):
        raise ChainlabError(f"address {address} is already assigned")


def release_address(client: etcd.Client, address: IPv4Address) -> bool:
    """Free `address`; True if it was allocated (freeing a free address is not an error)."""
    try:
        return bool(_update(client, block_of(address), lambda block: release(block, address)))
    except etcd.EtcdKeyNotFound:
        return False
