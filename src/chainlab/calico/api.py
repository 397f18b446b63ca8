"""The public API of the Calico 2.x emulation (see the package docstring)."""

from __future__ import annotations

from typing import Any

import fabric

from chainlab.inventory import Inventory


def ensure_network(inv: Inventory) -> bool:
    """Create the IP pool and the network's profile in etcd once; True if anything changed."""
    raise NotImplementedError


def ensure_node(inv: Inventory, host: str, conn: fabric.Connection) -> bool:
    """Start felix-lite on `host` if it is not running, and install routes to other hosts' blocks."""
    raise NotImplementedError


def attach(inv: Inventory, host: str, container_name: str, conn: fabric.Connection,
           docker: Any) -> tuple[str, str, bool]:
    """Wire a running container (started with network_mode="none") into the Calico network.

    Returns (address, host-side interface, changed); an attached container returns its
    existing values with changed False.
    """
    raise NotImplementedError


def detach(inv: Inventory, host: str, container_name: str, conn: fabric.Connection, docker: Any) -> bool:
    """Remove the container's endpoint, veth and address; True if anything changed."""
    raise NotImplementedError


def stop_node(inv: Inventory, host: str, conn: fabric.Connection) -> bool:
    """Stop felix-lite on `host` and remove its chains, ipsets and routes."""
    raise NotImplementedError


def remove_network(inv: Inventory) -> bool:
    """Remove the pool, profile, blocks and endpoints of the network from etcd."""
    raise NotImplementedError
