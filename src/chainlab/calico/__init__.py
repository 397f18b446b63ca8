"""An emulation of Calico 2.x networking for the local lab (not Calico itself).

No Calico image or binary can be had offline, so this package reproduces what Calico 2.x
(calico/node + felix + the Docker libnetwork plugin, etcd v2 as datastore) does on a host,
closely enough that packets walk the same iptables chains as in the reference lab:
the v1 etcd layout under /calico/ (pool, IPAM blocks, workload endpoints, profiles with
rules and tags), veth wiring as the plugin does it, felix's chain structure and mark bits,
rendered from Jinja2 templates and applied atomically with iptables-restore, and a small
agent ("felix-lite") per host that watches etcd and re-renders on change.

Public API (used by provisioning, which opens one etcd client per run and passes it in):
- `ensure_network(inv, client) -> bool`
- `ensure_node(inv, client, host, conn) -> bool`
- `attach(inv, client, host, container_name, conn, docker) -> (address, interface, changed)`
- `detach(client, host, container_name, conn, docker) -> bool`
- `stop_node(client or None, host, conn) -> bool`
- `remove_network(inv, client) -> bool`
"""

from chainlab.calico.api import attach, detach, ensure_network, ensure_node, remove_network, stop_node

__all__ = ["attach", "detach", "ensure_network", "ensure_node", "remove_network", "stop_node"]
