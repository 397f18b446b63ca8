"""The public API of the Calico 2.x emulation (see the package docstring).

Functions take the inventory and, per host, an open fabric Connection (`chainlab.remote.
connect`) and a docker SDK client to that host (`chainlab.remote.docker_client`). Each
returns whether it changed anything, so provisioning can report ok/changed.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import etcd
import fabric

from chainlab.calico import datastore as D
from chainlab.calico import ipam, node, wiring
from chainlab.calico import validate as V
from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory


def ensure_network(inv: Inventory, client: etcd.Client) -> bool:
    """Create the IP pool (nat-outgoing per inventory) and the network's profile in etcd once.

    The profile is what the libnetwork plugin makes per network: tag = network name,
    outbound allowed, inbound allowed only from the tag. Existing keys are left alone (a
    changed profile stays changed). True if anything was created.
    """
    pool = inv.calico.pool
    changed = D.write_if_absent(client, D.pool_key(pool), D.dumps(D.pool_value(pool, inv.calico.nat_outgoing)))
    profile = D.network_profile(inv.calico.network)
    for part, key in D.profile_keys(inv.calico.network).items():
        changed |= D.write_if_absent(client, key, D.dumps(profile[part]))
    return changed


def ensure_node(inv: Inventory, client: etcd.Client, host: str, conn: fabric.Connection) -> bool:
    """Register `host` (its BGP address key) and start felix-lite there if it is not running.

    felix-lite then programs iptables/ipsets and the routes to the other hosts' blocks
    (what BIRD would install) and keeps them in step with etcd. Returns once the host's
    chains are programmed. True if the key was written or the agent started.
    """
    address = str(inv.hosts[host].address)
    changed = False
    try:
        changed = client.read(D.host_ip_key(host)).value != address
    except etcd.EtcdKeyNotFound:
        changed = True
    if changed:
        client.write(D.host_ip_key(host), address)
    if node.agent_pid(conn) is None:
        node.start_agent(conn, host, f"{client.host}:{client.port}")
        changed = True
    node.wait_programmed(conn, host)
    return changed


def _container(docker: Any, name: str) -> Any:
    import docker as docker_sdk

    try:
        return docker.containers.get(name)
    except docker_sdk.errors.NotFound:
        return None


def _endpoint(client: etcd.Client, host: str, endpoint_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(client.read(D.endpoint_key(host, endpoint_id)).value)
    except etcd.EtcdKeyNotFound:
        return None


def _endpoint_by_name(client: etcd.Client, host: str, container: str) -> str | None:
    try:
        result = client.read(D.endpoint_dir(host))
    except etcd.EtcdKeyNotFound:
        return None
    for leaf in result.leaves:
        if leaf.dir or not leaf.value:
            continue
        labels = json.loads(leaf.value).get("labels") or {}
        if labels.get(D.CONTAINER_LABEL) == container:
            return leaf.key.rsplit("/", 1)[1]
    return None


def attach(inv: Inventory, client: etcd.Client, host: str, container_name: str, conn: fabric.Connection,
           docker: Any) -> tuple[str, str, bool]:
    """Wire a running container (started with network_mode="none") into the Calico network.

    Assigns an address from `host`'s IPAM block, wires the veth pair, then writes the
    workload endpoint (profile = the network) so that every felix-lite updates its tag
    ipsets and this host's felix-lite its dispatch and endpoint chains.
    Returns (address, host-side interface, changed); idempotent.
    """
    container = _container(docker, container_name)
    if container is None or container.status != "running":
        raise ChainlabError(f"{host}: container {container_name} is not running")
    pid = int(container.attrs["State"]["Pid"])
    endpoint_id = D.endpoint_id(container.id)
    iface = D.interface_name(endpoint_id)
    existing = _endpoint(client, host, endpoint_id)
    if existing is not None:
        address = IPv4Address(existing["ipv4_nets"][0].split("/")[0])
        if wiring.is_wired(conn, pid, iface, address):
            return str(address), iface, False
    else:
        address = ipam.auto_assign(client, inv.calico.pool, host, endpoint_id)
    wiring.wire(conn, pid, iface, address)
    client.write(D.endpoint_key(host, endpoint_id),
                 D.dumps(D.endpoint_value(iface, address, inv.calico.network, container_name)))
    return str(address), iface, True


def detach(client: etcd.Client, host: str, container_name: str, conn: fabric.Connection, docker: Any) -> bool:
    """Remove the container's endpoint, veth and address (also if the container is gone)."""
    container = _container(docker, container_name)
    endpoint_id = D.endpoint_id(container.id) if container is not None else None
    if endpoint_id is None or _endpoint(client, host, endpoint_id) is None:
        endpoint_id = _endpoint_by_name(client, host, container_name)
    if endpoint_id is None:
        return False
    changed = wiring.unwire(conn, D.interface_name(endpoint_id))
    try:
        client.delete(D.endpoint_key(host, endpoint_id))
        changed = True
    except etcd.EtcdKeyNotFound:
        pass
    changed |= ipam.release_handle(client, endpoint_id)
    return changed


def stop_node(client: etcd.Client | None, host: str, conn: fabric.Connection) -> bool:
    """Stop felix-lite on `host`, remove its chains, jumps, ipsets and routes, deregister
    (unless etcd is already gone: `client` None)."""
    changed = node.stop_agent(conn)
    changed |= node.cleanup(conn)
    if client is not None:
        changed |= D.delete_tree(client, f"{D.ROOT}/bgp/v1/host/{host}")
    return changed


def remove_network(inv: Inventory, client: etcd.Client) -> bool:
    """Remove the network's pool, profile, endpoints and IPAM data from etcd."""
    network, pool = inv.calico.network, inv.calico.pool
    changed = D.delete_tree(client, D.pool_key(pool))
    changed |= D.delete_tree(client, D.profile_dir(network))
    items, _ = D.read_tree(client)
    for key, endpoint_id in D.endpoints_of_profile(items, network):
        changed |= D.delete_tree(client, key)
        try:
            ipam.release_handle(client, V.name(endpoint_id, "endpoint id"))
        except V.Invalid:
            continue  # no handle can have been made for it
    for key in list(items):
        if key.startswith(f"{ipam.IPAM}/") and "/block/" in key:
            cidr = IPv4Network(key.rsplit("/", 1)[1].replace("-", "/"))
            if cidr.subnet_of(pool):
                changed |= D.delete_tree(client, key)
    return changed
