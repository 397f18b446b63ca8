"""`calico.mode: existing`: Calico 2.x already runs on the hosts; chainlab starts nothing.

The node step checks what Docker's `--driver calico --ipam-driver calico-ipam` need, and says
exactly what is missing: both drivers discoverable by dockerd, dockerd's cluster store (the
network is global), and the node registered in etcd (calico/node writes its address).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from chainlab.calico import datastore as D
from chainlab.errors import ChainlabError
from chainlab.networks.calico.checks import drivers_argv, missing_drivers
from chainlab.networks.calico.modes import Mode
from chainlab.provision.actions import Action, Outcome
from chainlab.provision.context import HostContext


def node_problems(ctx: HostContext) -> list[str]:
    """What keeps `ctx.host` from being a usable Calico node for Docker (read-only)."""
    from chainlab.calico.etcdlib import etcd

    problems = []
    missing = missing_drivers(ctx.read(drivers_argv()) or "")
    if missing:
        problems.append(f"Docker network driver(s) {', '.join(missing)} not registered with dockerd (no socket or"
                        " spec file in /run/docker/plugins, /etc/docker/plugins or /usr/lib/docker/plugins):"
                        " is calico/node running with Docker networking?")
    if not ctx.docker().info().get("ClusterStore"):
        problems.append("dockerd has no cluster store (Calico's network is global: dockerd needs"
                        " --cluster-store etcd://...)")
    try:
        ctx.run.etcd().read(D.host_ip_key(ctx.host))
    except etcd.EtcdKeyNotFound:
        problems.append(f"the node is not known in etcd ({D.host_ip_key(ctx.host)} is absent)")
    return problems


class Existing(Mode):
    name = "existing"

    def node_up(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        if ctx.offline:
            return "", "not checked offline: drivers calico and calico-ipam, cluster store, node in etcd"
        problems = node_problems(ctx)
        if problems:
            raise ChainlabError("; ".join(problems))
        yield from ()
        return "", "Calico node ready: drivers calico and calico-ipam, cluster store, node in etcd"

    def probes(self) -> list[list[str]]:
        return [drivers_argv()]

    def node_down(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        yield from ()
        return "", "Calico was running before lab up: left as it is"

    def describe(self) -> str:
        return "Calico 2.x already running (calico/node + libnetwork plugin), checked, not started"
