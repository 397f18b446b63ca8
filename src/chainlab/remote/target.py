"""Where a host is and how to reach it: asked of the inventory's provider kind."""

from __future__ import annotations

from chainlab.calico.etcdconn import EtcdEndpoint
from chainlab.inventory import Inventory
from chainlab.providers import Target, provider_for


def resolve_target(inv: Inventory, host: str) -> Target:
    """The SSH target for `host`; the provider refuses where connecting would be unsafe."""
    return provider_for(inv).target(host)


def etcd_endpoint(inv: Inventory) -> EtcdEndpoint:
    """etcd's address, port and client TLS, as chainlab reaches it (route-checked)."""
    return provider_for(inv).etcd_endpoint()
