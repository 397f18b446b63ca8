"""An emulation of Calico 2.x for hosts that have no Calico (not Calico itself).

No Calico image or binary can be had offline, so this package reproduces what calico/node
does on a Calico 2.x host (felix + the Docker libnetwork plugin, etcd v2 as datastore),
closely enough that Docker's own commands work as on the reference hosts and packets walk
the same iptables chains:
- `plugin`, `plugin_server`: Docker's network plugin API (remote driver `calico`, IPAM driver
  `calico-ipam`) on /run/docker/plugins, with IPAM blocks in etcd (`ipam`);
- `datastore`: the v1 etcd layout under /calico/ (pool, IPAM blocks, workload endpoints,
  profiles with rules and tags);
- `rules`, `apply`: felix's chain structure and mark bits, rendered from Jinja2 templates and
  applied atomically with iptables-restore, ipsets for tags, routes and proxy ARP;
- `agent`: the daemon that runs both on a host (`python -m chainlab.calico.agent`).

This package runs on the lab hosts and needs only python-etcd and jinja2 there (no pydantic,
fabric or docker SDK). Provisioning drives it from `chainlab.networks.calico`.
"""

#: The daemon's name in /proc/PID/comm (at most 15 bytes): provisioning tells it from a
#: recycled PID with shell built-ins, as it does ulogd and xtables-monitor.
PROCESS_NAME = "chainlab-calico"
