"""`calico.mode: emulate`: chainlab's Calico daemon (felix-lite + libnetwork plugin) on each host.

Only where chainlab builds the hosts (the provider says how the daemon starts there). The
daemon is what calico/node is on a Calico 2.x host: it registers nothing by itself, so the
node step writes the host's address under /calico/bgp (as calico/node does), starts the
daemon, and waits until its plugin sockets answer and felix-lite has programmed the chains.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from chainlab.calico import PROCESS_NAME
from chainlab.calico import datastore as D
from chainlab.calico.etcdconn import EtcdEndpoint
from chainlab.calico.sockets import socket_paths
from chainlab.networks.calico import dockerd
from chainlab.networks.calico.modes import Mode
from chainlab.provision import commands as C
from chainlab.provision.actions import Action, Command, Outcome
from chainlab.provision.context import HostContext

if TYPE_CHECKING:
    from chainlab.networks.calico import CalicoNetwork

MODULE = "chainlab.calico.agent"
PIDFILE = f"{C.RUN_DIR}/calico.pid"
LOGFILE = f"{C.RUN_DIR}/calico.log"
READY_TIMEOUT = 20


def running_argv(pidfile: str = PIDFILE) -> list[str]:
    """Print the daemon's PID iff its pidfile names a live daemon of this host's network
    namespace (local-lab hosts share the machine's PIDs). The daemon names itself
    (`PROCESS_NAME`, read by built-ins); one that an earlier chainlab started kept the
    interpreter's name and is known by its command line."""
    by_cmdline = f"tr '\\0' ' ' < /proc/\"$p\"/cmdline 2>/dev/null | grep -q -- {shlex.quote('-m ' + MODULE + ' ')}"
    return C.running_check_argv(pidfile, PROCESS_NAME, or_known_by=by_cmdline)


def start_argv(argv: tuple[str, ...], host: str, etcd: EtcdEndpoint) -> list[str]:
    """Start the daemon, then wait (bounded, on the host) until both plugin sockets exist and
    felix-lite's first apply is in (cali-FORWARD); on failure print the log's tail."""
    q = shlex.quote
    daemon = [*argv, "--host", host, "--etcd", etcd.url]
    if etcd.tls:
        daemon += ["--etcd-ca", etcd.tls.ca, "--etcd-cert", etcd.tls.cert, "--etcd-key", etcd.tls.key]
    daemon += ["--daemon", "--pidfile", PIDFILE, "--log", LOGFILE]
    sockets = " && ".join(f"[ -S {q(str(p))} ]" for p in socket_paths())
    return C.sh(
        f"mkdir -p {q(C.RUN_DIR)} && {shlex.join(daemon)} && "
        f"end=$(( $(date +%s) + {READY_TIMEOUT} )); "
        f"until {sockets} && iptables -w -S cali-FORWARD >/dev/null 2>&1; do "
        f"if [ \"$(date +%s)\" -ge \"$end\" ]; then tail -n 5 {q(LOGFILE)} >&2; exit 1; fi; sleep 0.1; done")


def stop_argv(argv: tuple[str, ...]) -> list[str]:
    """Stop the daemon (if it is ours and alive), then remove its chains, ipsets, routes and
    plugin sockets with `--cleanup`, and its log."""
    q = shlex.quote
    running = running_argv()[2]
    return C.sh(
        f"p=$({running}); if [ -n \"$p\" ]; then kill \"$p\"; i=0; "
        f"while [ -d /proc/$p ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
        f"[ -d /proc/$p ] && kill -9 \"$p\"; fi; "
        f"{shlex.join([*argv, '--host', '-', '--cleanup'])} && rm -f {q(PIDFILE)} {q(LOGFILE)}")


def leftovers_argv() -> list[str]:
    """Exit 0 iff anything of the daemon is on the host (pid, chains, ipsets, sockets, log)."""
    q = shlex.quote
    sockets = " || ".join(f"[ -e {q(str(p))} ]" for p in socket_paths())
    return C.sh(f"[ -e {q(PIDFILE)} ] || [ -e {q(LOGFILE)} ] || {sockets} || "
                "iptables-save 2>/dev/null | grep -q '^:cali-' || ipset list -n 2>/dev/null | grep -q '^cali4-'")


class Emulate(Mode):
    name = "emulate"

    def __init__(self, network: "CalicoNetwork"):
        super().__init__(network)
        self._lock = threading.Lock()
        self._host_ips: dict[str, str] | Exception | None = None

    def node_up(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        runtime = self.network.provider.emulation_runtime(ctx.host)
        address = str(ctx.inv.hosts[ctx.host].address)
        done = []
        if not self.network.provider.starts_docker and (yield from dockerd.ensure(ctx, runtime.etcd)):
            done.append("docker cluster store")
        if self._registered(ctx) != address:
            yield ctx.call(f"etcdctl set {D.host_ip_key(ctx.host)} {address}   # python-etcd",
                           lambda: ctx.run.etcd().write(D.host_ip_key(ctx.host), address))
            done.append("node registered")
        if not (ctx.read(running_argv()) or "").strip():
            yield Command.of(start_argv(runtime.argv, ctx.host, runtime.etcd), timeout=READY_TIMEOUT + 30)
            done.append("daemon started")
        return (f"{', '.join(done)} (felix-lite + libnetwork plugin, emulated)",
                "daemon running (felix-lite + libnetwork plugin, emulated)")

    def probes(self) -> list[list[str]]:
        return [running_argv()]

    def _registered(self, ctx: HostContext) -> str | None:
        """The address etcd registers for this host. Every host's is read in one request by
        the first host to ask (the run's hosts do this step at once): a request per host cost
        each its own TLS connection to etcd (urllib3 keeps one per pool). A failed read fails
        every host's step with the same error, without each host waiting for etcd in turn."""
        if ctx.offline:
            return None
        with self._lock:
            if self._host_ips is None:
                try:
                    items, _ = D.read_tree(ctx.run.etcd(), D.HOST_IP_DIR)
                    self._host_ips = {host: str(address) for host, address in D.parse_tree(items).host_ips.items()}
                except Exception as exc:  # noqa: BLE001 (run_step reports it, for each host)
                    self._host_ips = exc
            if isinstance(self._host_ips, Exception):
                raise self._host_ips
            return self._host_ips.get(ctx.host)

    def node_down(self, ctx: HostContext) -> Generator[Action, Any, Outcome]:
        runtime = self.network.provider.emulation_runtime(ctx.host)
        if ctx.probe(leftovers_argv()) is not False:
            yield Command.of(stop_argv(runtime.argv), timeout=60)
        if not self.network.provider.starts_docker:
            yield from dockerd.restore(ctx)
        return "daemon stopped, chains, ipsets, routes and plugin sockets removed", "no Calico daemon of ours"

    def describe(self) -> str:
        return "emulation of Calico 2.x (chainlab's felix-lite + libnetwork plugin, not Calico itself)"
