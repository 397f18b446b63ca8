"""Docker's cluster store on a host, which Calico 2.x's global-scope network needs.

`calico.mode: install` (and `emulate` on hosts whose dockerd the provider does not start)
adds `cluster-store` (etcd), `cluster-advertise` and the TLS options to
/etc/docker/daemon.json and restarts docker, as the Calico 2.x Docker guide did; `lab down`
puts the file back and restarts docker again. `existing` only checks it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Generator
from typing import Any

from chainlab.calico.etcdconn import EtcdEndpoint
from chainlab.errors import ChainlabError
from chainlab.provision import commands as C
from chainlab.provision.actions import Action, Command, PutFile
from chainlab.provision.context import HostContext

DAEMON_JSON = "/etc/docker/daemon.json"
#: Marks that lab up wrote daemon.json where there was none (else its backup marks it).
CREATED = f"{C.RUN_DIR}/docker-daemon.json.created"
ADVERTISE_PORT = 2376


def cluster_settings(etcd: EtcdEndpoint, address: str) -> dict[str, Any]:
    """The daemon.json keys for etcd at `etcd` (TLS file paths as the host sees them)."""
    settings: dict[str, Any] = {
        "cluster-store": f"etcd://{etcd.host}:{etcd.port}",
        "cluster-advertise": f"{address}:{ADVERTISE_PORT}",
    }
    if etcd.tls:
        settings["cluster-store-opts"] = {"kv.cacertfile": etcd.tls.ca, "kv.certfile": etcd.tls.cert,
                                          "kv.keyfile": etcd.tls.key}
    return settings


def merged(text: str, settings: dict[str, Any]) -> str:
    """daemon.json with `settings` added (pure); refuses a file that is not a JSON object."""
    try:
        current = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ChainlabError(f"{DAEMON_JSON} is not valid JSON ({exc}): fix it first") from None
    if not isinstance(current, dict):
        raise ChainlabError(f"{DAEMON_JSON} is not a JSON object: fix it first")
    return json.dumps(current | settings, indent=2, sort_keys=True) + "\n"


def ensure(ctx: HostContext, etcd: EtcdEndpoint) -> Generator[Action, Any, bool]:
    """Actions that give the host's dockerd the cluster store; True if there were any."""
    if not ctx.offline and ctx.docker().info().get("ClusterStore"):
        return False
    address = str(ctx.inv.hosts[ctx.host].address)
    text = ctx.read(["sh", "-c", f"cat {DAEMON_JSON} 2>/dev/null || true"])
    q = shlex.quote
    if text:
        yield Command.of(C.backup_argv(DAEMON_JSON))
    else:
        yield Command.of(C.sh(f"mkdir -p {q(C.RUN_DIR)} /etc/docker && : > {q(CREATED)}"))
    yield PutFile(DAEMON_JSON, merged(text or "", cluster_settings(etcd, address)))
    yield Command.of(_restart(ctx), timeout=300)
    return True


def restore(ctx: HostContext) -> Generator[Action, Any, bool]:
    """Undo `ensure`: the original daemon.json back (or none), docker restarted."""
    q = shlex.quote
    backup = DAEMON_JSON + C.BACKUP_SUFFIX
    ours = ctx.read(C.sh(f"[ -e {q(CREATED)} ] || [ -e {q(backup)} ] && echo ours"))
    if ours is not None and ours.strip() != "ours":
        return False
    yield Command.of(C.sh(f"if [ -e {q(backup)} ]; then mv {q(backup)} {q(DAEMON_JSON)};"
                          f" else rm -f {q(DAEMON_JSON)}; fi; rm -f {q(CREATED)}"))
    yield Command.of(_restart(ctx), timeout=300)
    return True


def _restart(ctx: HostContext) -> list[str]:
    try:
        return C.restart_argv(ctx.facts.init, "docker")
    except ValueError as exc:
        raise ChainlabError(f"{exc}: restart dockerd by hand with the cluster store in {DAEMON_JSON}") from None
