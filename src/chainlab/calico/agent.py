"""The Calico daemon of chainlab's Calico 2.x emulation: felix-lite plus the libnetwork plugin.

Runs inside one lab host, as calico/node does on a Calico 2.x host:
- the libnetwork plugin (`chainlab.calico.plugin`) answers dockerd's network and IPAM driver
  calls on /run/docker/plugins/calico.sock and calico-ipam.sock;
- felix-lite (not Calico's felix) reads the whole /calico tree from etcd (v2 API), computes
  this host's dataplane (`chainlab.calico.rules`), applies it (`chainlab.calico.apply`), then
  watches /calico and re-applies within a second of any change (profile rules or tags,
  endpoints, blocks) or of a new workload interface (Docker's Join: a thread looks at the
  host's interfaces every second, without a process or a request). With nothing changing it
  reads the tree again every WATCH_TIMEOUT seconds (felix, too, refreshes periodically); a
  watch that ends sooner would cost a new TLS connection to etcd each time (a timed-out
  request's connection is not reused), per host, all the time the lab is up.
`--cleanup` removes what it made and exits.

    python -m chainlab.calico.agent --host master --etcd https://10.231.91.195:2379 \
        --etcd-ca CA --etcd-cert CERT --etcd-key KEY \
        [--daemon --pidfile /run/chainlab-calico.pid --log /var/log/chainlab-calico.log]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chainlab.calico import PROCESS_NAME
from chainlab.calico.apply import ApplyError, apply, cleanup, workload_links
from chainlab.calico.datastore import ROOT, parse_tree, read_tree
from chainlab.calico.etcdconn import EtcdEndpoint, EtcdTLS, client as etcd_client
from chainlab.calico.etcdlib import etcd
from chainlab.calico.host import DOCKER_SOCK, IpLinks, docker_network_name
from chainlab.calico.plugin import Plugin
from chainlab.calico.plugin_server import remove_sockets
from chainlab.calico.sockets import PLUGIN_DIR
from chainlab.calico.plugin_server import serve as serve_plugin
from chainlab.calico.rules import Dataplane, dataplane

WATCH_TIMEOUT = 30.0  # seconds: a watch that sees nothing ends; the tree is read again
LINK_POLL = 1.0  # seconds between looks at the host's workload interfaces
RETRY_DELAY = 1.0  # seconds after a failed sync
log = logging.getLogger("felix-lite")


def _wait_for_change(client: etcd.Client, index: int) -> None:
    try:
        client.read(ROOT, wait=True, waitIndex=index + 1, recursive=True, timeout=WATCH_TIMEOUT)
    except etcd.EtcdWatchTimedOut:
        pass
    except etcd.EtcdEventIndexCleared:
        log.info("watch index cleared: full resync")


def _warn_skipped(skipped: list[str], warned: set[str]) -> set[str]:
    """Log each invalid etcd entry once (not on every resync); returns the entries now skipped."""
    for reason in skipped:
        if reason not in warned:
            log.warning("skipped invalid etcd entry: %s", reason)
    return set(skipped)


@dataclass
class AgentState:
    """What the loop remembers between iterations."""

    last: tuple[Dataplane, frozenset[str]] | None = None  # the last applied model and the links it saw
    warned: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one sync at a time (loop, link thread)


def sync(client: etcd.Client, host: str, state: AgentState) -> int:
    """Read /calico, apply this host's dataplane if it changed; returns the etcd index read."""
    items, index = read_tree(client)
    snapshot = parse_tree(items)
    state.warned = _warn_skipped(snapshot.skipped, state.warned)
    model = dataplane(snapshot, host)
    seen = (model, workload_links())
    if seen != state.last:
        started = time.monotonic()
        apply(*seen)
        state.last = seen
        log.info("applied index %s: %d endpoints, %d profiles, %d routes in %.0f ms", index,
                 len(model.endpoints), len(model.profiles), len(model.routes),
                 (time.monotonic() - started) * 1000)
    return index


def guarded_sync(client: etcd.Client, host: str, state: AgentState) -> int | None:
    """`sync`, one at a time; None after a failure, which is logged (an apply or render
    failure also forgets the last applied state, so that the next sync re-renders)."""
    try:
        with state.lock:
            return sync(client, host, state)
    except etcd.EtcdException as exc:
        log.warning("etcd: %s; retrying", exc)
    except ApplyError as exc:
        log.error("apply failed: %s; retrying", exc)
        state.last = None
    except Exception:
        log.exception("sync failed; retrying")
        state.last = None
    return None


def iteration(client: etcd.Client, host: str, state: AgentState) -> None:
    """One sync and watch. Nothing raised here may end the daemon: after a failure it waits a
    bit."""
    index = guarded_sync(client, host, state)
    try:
        if index is None:
            time.sleep(RETRY_DELAY)
        else:
            _wait_for_change(client, index)
    except etcd.EtcdException as exc:
        log.warning("etcd: %s; retrying", exc)
        time.sleep(RETRY_DELAY)
    except Exception:
        log.exception("watch failed; retrying")
        time.sleep(RETRY_DELAY)


def follow_links(client: etcd.Client, host: str, state: AgentState) -> None:
    """Syncs when a workload interface came or went (Docker's Join changes no etcd key the
    watch would see), and again after its own sync failed: the loop meanwhile waits in its
    watch (it retries its own failures itself)."""
    failed = False
    while True:
        time.sleep(LINK_POLL)
        if failed or (state.last is not None and state.last[1] != workload_links()):
            failed = guarded_sync(client, host, state) is None


def serve(client: etcd.Client, host: str) -> None:
    state = AgentState()
    threading.Thread(target=follow_links, args=(client, host, state), name="links", daemon=True).start()
    while True:
        iteration(client, host, state)


def _name_process(name: str) -> None:
    """Set this process's comm (Linux; elsewhere the name stays the interpreter's)."""
    try:
        Path("/proc/self/comm").write_text(name)
    except OSError:
        pass


def _daemonize(pidfile: str, logfile: str) -> None:
    """Double fork; the first parent exits once the daemon has written its pidfile."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        ok = os.read(read_end, 1)
        sys.exit(0 if ok == b"1" else 1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    _name_process(PROCESS_NAME)
    with open(pidfile + ".tmp", "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(pidfile + ".tmp", pidfile)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.write(write_end, b"1")
    os.close(write_end)


def _endpoint(args: argparse.Namespace) -> EtcdEndpoint:
    parts = (args.etcd_ca, args.etcd_cert, args.etcd_key)
    if any(parts) and not all(parts):
        raise SystemExit("--etcd-ca, --etcd-cert and --etcd-key go together")
    try:
        return EtcdEndpoint.parse(args.etcd, EtcdTLS(*parts) if all(parts) else None)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _stop_on_sigterm(plugin_dir: str | None) -> None:
    """SIGTERM (lab down) removes the plugin sockets before exiting: Docker then says at once
    that the plugin is gone instead of retrying a dead socket."""
    def handler(signum: int, frame: object) -> None:
        if plugin_dir:
            remove_sockets(plugin_dir)
        log.info("stopped by signal %d", signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chainlab.calico.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="this host's name in etcd")
    parser.add_argument("--etcd", default="http://127.0.0.1:2379", help="http(s)://HOST:PORT of etcd (v2 API)")
    parser.add_argument("--etcd-ca", help="CA certificate of etcd's server certificate (https)")
    parser.add_argument("--etcd-cert", help="client certificate (https)")
    parser.add_argument("--etcd-key", help="client key (https)")
    parser.add_argument("--plugin-dir", default=PLUGIN_DIR, help="where dockerd looks for legacy plugin sockets")
    parser.add_argument("--docker-sock", default=DOCKER_SOCK, help="the Docker API (network names)")
    parser.add_argument("--no-plugin", action="store_true", help="felix-lite only, no libnetwork plugin")
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--pidfile", default="/run/chainlab-calico.pid")
    parser.add_argument("--log", default="/var/log/chainlab-calico.log")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove our chains, ipsets, routes and plugin sockets, then exit")
    args = parser.parse_args(argv)
    if args.cleanup:
        cleanup()
        remove_sockets(args.plugin_dir)
        return
    endpoint = _endpoint(args)
    if args.daemon:
        _daemonize(args.pidfile, args.log)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s calico[{args.host}] %(name)s %(levelname)s %(message)s")
    client = etcd_client(endpoint)
    plugin_dir = None if args.no_plugin else args.plugin_dir
    _stop_on_sigterm(plugin_dir)
    if plugin_dir:
        plugin = Plugin(client, args.host, IpLinks(),
                        functools.partial(docker_network_name, sock=args.docker_sock))
        serve_plugin(plugin, plugin_dir)
    log.info("started (pid %d), etcd %s, plugin %s", os.getpid(), endpoint.url, plugin_dir or "off")
    serve(client, args.host)


if __name__ == "__main__":
    main()
