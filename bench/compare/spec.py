"""What a warm `chainlab lab up` checks on a provisioned lab, as plain data (commands, file
contents) for the pyinfra deploy and the Ansible playbook that do the same checks.

Built from chainlab's own command builders and from what lab up left on the hosts, so the
three tools check the same things with the same commands: the facts script, the files lab up
wrote (same content: a no-op `put`/`copy`), ip_forward, the trace backend, the raw rules, the
image and the containers (chainlab's one Docker probe per host), the Calico daemon and its
etcd registration, each container's programming, and, once per lab, the pool in etcd and the
Docker network.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from chainlab.calico import datastore as D
from chainlab.inventory import Inventory
from chainlab.labstate import load_state
from chainlab.local.plan import plan_lab
from chainlab.networks.calico.emulate import running_argv
from chainlab.provision import commands as C
from chainlab.provision.dockerview import inspect_argv
from chainlab.provision.facts import facts_script
from chainlab.provision.steps import NF_LOG_READ
from chainlab.remote import connect, run
from chainlab.shell import shell_text


def _docker_check(inv: Inventory, containers: list[str]) -> str:
    """chainlab's one Docker probe of the host (curl on dockerd's socket, else docker inspect),
    and that its answer has the image and each container, and a running container labelled with
    the lab (grep patterns, for the API's compact JSON and the CLI's indented one: looser than
    chainlab's reading of each container's state, the same processes)."""
    image = inv.image.name if ":" in inv.image.name.rsplit("/", 1)[-1] else f"{inv.image.name}:latest"
    wanted = [f'"{image}"', *(f'"Name": ?"/{c}"' for c in containers),
              *(['"Running": ?true', f'"chainlab.lab": ?"{inv.lab}"'] if containers else [])]
    return (f"o=$({shell_text(inspect_argv([inv.image.name], containers))}) && "
            + " && ".join(f"printf '%s' \"$o\" | grep -qE -e {shlex.quote(w)}" for w in wanted))


def build(inv: Inventory) -> dict:
    plan = plan_lab(inv)
    pki = plan.pki
    etcd = f"https://{inv.hosts[inv.etcd.host].address}:{inv.etcd.port}/v2/keys"
    curl = f"curl -fsS --cacert {pki.ca} --cert {pki.client_cert} --key {pki.client_key}"
    state = load_state(inv)
    ports = [22, inv.etcd.port, 2380, 7946]
    hosts = {}
    for name, host in inv.hosts.items():
        with connect(inv, name) as conn:
            files = {path: run(conn, ["cat", path]).stdout for path in (C.SYSCTL_FILE, C.ULOGD_CONF)}
        checks = [
            facts_script((str(inv.hosts[inv.etcd.host].address), inv.etcd.port), full=False),
            shell_text(C.running_check_argv(C.ULOGD_PID, "ulogd")), shell_text(NF_LOG_READ),
            "s=$(iptables -w 5 -t raw -S) && " + " && ".join(
                f"printf '%s\\n' \"$s\" | grep -qxF -e {shlex.quote(r.listed())}" for r in C.trace_rules(ports)),
            _docker_check(inv, [c for c, cs in state.containers.items() if cs.host == name]),
            shell_text(running_argv()),
            f"{curl} {etcd}{D.host_ip_key(name)}",
        ]
        for cstate in state.containers.values():
            if cstate.host == name:
                checks.append(f"ip -4 route show {cstate.address}/32 | grep -q 'dev {cstate.interface}' && "
                              f"iptables -w -S cali-tw-{cstate.interface} >/dev/null")
        hosts[name] = {"address": str(host.address), "files": files, "exists": [host.trace_log],
                       "checks": checks}
    net = inv.calico.network
    network_check = f"{shell_text(inspect_argv(networks=[net]))} | grep -qE -e " + shlex.quote(f'"Name": ?"{net}"')
    lab = [f"{curl} {etcd}{D.pool_key(inv.calico.pool)}", network_check]
    return {"ssh_config": str(plan.ssh_config), "key": str(plan.client_key), "known_hosts": str(plan.known_hosts),
            "hosts": hosts, "lab_host": next(iter(inv.hosts)), "lab_checks": lab}


def write(inv: Inventory, path: Path) -> dict:
    spec = build(inv)
    path.write_text(json.dumps(spec, indent=1))
    return spec
