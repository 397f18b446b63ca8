"""`calico.mode: install`: Calico 2.x put on hosts that lack it, the reference's way.

Per host: calicoctl (downloaded from `calico.install.calicoctl_url` if absent), Docker's
cluster store in daemon.json (docker restarted), then `calicoctl node run` with the
inventory's calico/node image, which starts felix, BIRD and the libnetwork plugin (Docker
networking is on by default in calicoctl 1.x). Each part lab up adds is marked under
/run/chainlab so lab down removes exactly those. No Calico image can be had here: this mode
is checked with --check and unit tests only.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from typing import Any

from chainlab.calico.etcdconn import EtcdEndpoint
from chainlab.networks.calico import dockerd
from chainlab.networks.calico.checks import DRIVERS, drivers_argv, missing_drivers
from chainlab.networks.calico.modes import Mode
from chainlab.provision import commands as C
from chainlab.provision.actions import Action, Command, Outcome
from chainlab.provision.context import HostContext

CALICOCTL = "/usr/local/bin/calicoctl"
NODE_CONTAINER = "calico-node"
CALICOCTL_MARK = f"{C.RUN_DIR}/calicoctl.downloaded"
NODE_MARK = f"{C.RUN_DIR}/calico-node.started"
READY_TIMEOUT = 60


def has_calicoctl_argv() -> list[str]:
    return C.sh(f"command -v calicoctl >/dev/null 2>&1 || [ -x {CALICOCTL} ]")


def download_argv(url: str) -> list[str]:
    q = shlex.quote
    return C.sh(f"mkdir -p {q(C.RUN_DIR)} && curl -fsSL -o {q(CALICOCTL)}.part {q(url)} && "
                f"chmod 0755 {q(CALICOCTL)}.part && mv {q(CALICOCTL)}.part {q(CALICOCTL)} && : > {q(CALICOCTL_MARK)}")


def node_running_argv() -> list[str]:
    return ["docker", "inspect", "-f", "{{.State.Running}}", NODE_CONTAINER]


def etcd_env(etcd: EtcdEndpoint) -> list[str]:
    env = [f"ETCD_ENDPOINTS={etcd.url}"]
    if etcd.tls:
        env += [f"ETCD_CA_CERT_FILE={etcd.tls.ca}", f"ETCD_CERT_FILE={etcd.tls.cert}",
                f"ETCD_KEY_FILE={etcd.tls.key}"]
    return env


def node_run_argv(image: str, host: str, address: str, etcd: EtcdEndpoint) -> list[str]:
    """`calicoctl node run`, then wait (bounded) until dockerd can discover both drivers."""
    q = shlex.quote
    run = ["env", *etcd_env(etcd), "calicoctl", "node", "run", f"--node-image={image}", f"--name={host}",
           f"--ip={address}"]
    waits = " && ".join(f"[ -S /run/docker/plugins/{d}.sock ]" for d in DRIVERS)
    return C.sh(f"mkdir -p {q(C.RUN_DIR)} && {shlex.join(run)} && : > {q(NODE_MARK)} && "
                f"end=$(( $(date +%s) + {READY_TIMEOUT} )); until {waits}; do "
                f"[ \"$(date +%s)\" -ge \"$end\" ] && exit 1; sleep 0.5; done")


def node_remove_argv() -> list[str]:
    q = shlex.quote
    return C.sh(f"if [ -e {q(NODE_MARK)} ]; then docker rm -f {NODE_CONTAINER} >/dev/null 2>&1; rm -f {q(NODE_MARK)}; fi; "
                f"if [ -e {q(CALICOCTL_MARK)} ]; then rm -f {q(CALICOCTL)} {q(CALICOCTL_MARK)}; fi")


class Install(Mode):
    name = "install"

    def _etcd(self) -> EtcdEndpoint:
        """etcd as the hosts reach it: the inventory's address, its TLS files at the same paths."""
        return self.network.provider.etcd_endpoint()

    def node_up(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        settings = self.network.inv.calico.install
        etcd = self._etcd()
        done = []
        if not ctx.probe(has_calicoctl_argv()):
            yield Command.of(download_argv(settings.calicoctl_url), timeout=300)
            done.append("calicoctl downloaded")
        if (yield from dockerd.ensure(ctx, etcd)):
            done.append("docker cluster store")
        running = (ctx.read(node_running_argv()) or "").strip() == "true"
        if not running or missing_drivers(ctx.read(drivers_argv()) or ""):
            yield Command.of(node_run_argv(settings.node_image, ctx.host, str(ctx.inv.hosts[ctx.host].address), etcd),
                             timeout=READY_TIMEOUT + 600)
            done.append(f"calicoctl node run ({settings.node_image})")
        return ", ".join(done), f"calico/node running ({settings.node_image})"

    def probes(self) -> list[list[str]]:
        return [has_calicoctl_argv(), node_running_argv(), drivers_argv()]

    def node_down(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        marked = ctx.probe(C.sh(f"[ -e {shlex.quote(NODE_MARK)} ] || [ -e {shlex.quote(CALICOCTL_MARK)} ]"))
        if marked is not False:
            yield Command.of(node_remove_argv(), timeout=120)
        yield from dockerd.restore(ctx)
        return "calico/node and what lab up installed removed", "nothing of Calico installed by lab up"

    def describe(self) -> str:
        image = self.network.inv.calico.install.node_image
        return f"Calico 2.x installed by lab up (calicoctl node run, {image})"
