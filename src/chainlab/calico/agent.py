"""felix-lite: the per-host agent of chainlab's Calico 2.x emulation (not Calico's felix).

Runs inside one lab host: reads the whole /calico tree from etcd (v2 API), computes this
host's dataplane (`chainlab.calico.rules`), applies it (`chainlab.calico.apply`), then
watches /calico recursively and re-applies within a second of any change (profile rules
or tags, endpoints, blocks). `--cleanup` removes what it made and exits.

    python -m chainlab.calico.agent --host master --etcd 10.231.91.195:2379 \
        [--daemon --pidfile /run/chainlab-felix.pid --log /var/log/chainlab-felix.log]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import etcd

from chainlab.calico.apply import ApplyError, apply, cleanup
from chainlab.calico.datastore import ROOT, parse_tree, read_tree
from chainlab.calico.rules import Dataplane, dataplane

WATCH_TIMEOUT = 5.0  # seconds: a watch that sees nothing ends, the tree is read again
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

    last: Dataplane | None = None  # the last applied model
    warned: set[str] = field(default_factory=set)


def sync(client: etcd.Client, host: str, state: AgentState) -> int:
    """Read /calico, apply this host's dataplane if it changed; returns the etcd index read."""
    items, index = read_tree(client)
    snapshot = parse_tree(items)
    state.warned = _warn_skipped(snapshot.skipped, state.warned)
    model = dataplane(snapshot, host)
    if model != state.last:
        started = time.monotonic()
        apply(model)
        state.last = model
        log.info("applied index %s: %d endpoints, %d profiles, %d routes in %.0f ms", index,
                 len(model.endpoints), len(model.profiles), len(model.routes),
                 (time.monotonic() - started) * 1000)
    return index


def iteration(client: etcd.Client, host: str, state: AgentState) -> None:
    """One sync and watch. Nothing raised here may end the daemon: after any failure the
    last applied state is forgotten (so the next sync re-renders) and it waits a bit."""
    try:
        _wait_for_change(client, sync(client, host, state))
    except etcd.EtcdException as exc:
        log.warning("etcd: %s; retrying", exc)
        time.sleep(RETRY_DELAY)
    except ApplyError as exc:
        log.error("apply failed: %s; retrying", exc)
        state.last = None
        time.sleep(RETRY_DELAY)
    except Exception:
        log.exception("sync failed; retrying")
        state.last = None
        time.sleep(RETRY_DELAY)


def serve(client: etcd.Client, host: str) -> None:
    state = AgentState()
    while True:
        iteration(client, host, state)


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
    with open(pidfile + ".tmp", "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(pidfile + ".tmp", pidfile)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.write(write_end, b"1")
    os.close(write_end)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chainlab.calico.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="this host's name in etcd")
    parser.add_argument("--etcd", default="127.0.0.1:2379", help="HOST:PORT of etcd (v2 API)")
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--pidfile", default="/run/chainlab-felix.pid")
    parser.add_argument("--log", default="/var/log/chainlab-felix.log")
    parser.add_argument("--cleanup", action="store_true", help="remove our chains, ipsets and routes, then exit")
    args = parser.parse_args(argv)
    if args.cleanup:
        cleanup()
        return
    if args.daemon:
        _daemonize(args.pidfile, args.log)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s felix-lite[{args.host}] %(levelname)s %(message)s")
    address, _, port = args.etcd.rpartition(":")
    client = etcd.Client(host=address, port=int(port), protocol="http", allow_redirect=False, read_timeout=10)
    log.info("started (pid %d), etcd %s", os.getpid(), args.etcd)
    serve(client, args.host)


if __name__ == "__main__":
    main()
