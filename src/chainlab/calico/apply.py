"""Applying a Dataplane on the host the agent runs on (Calico 2.x emulation).

Uses the host's own `iptables-save`/`iptables-restore` (legacy or nft, as the host's
/etc/alternatives decides), `ipset` and `ip`. Everything runs locally, without a shell.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Callable, Sequence

from chainlab.calico.datastore import IFACE_PREFIX
from chainlab.calico.rules import JUMPS, TABLES, Dataplane, render, render_cleanup

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROUTE_PROTO = "bird"  # routes to other hosts' blocks, as BIRD would install them
OUR_IPSET = re.compile(r"^cali4-")
Runner = Callable[[Sequence[str], str | None], str]


class ApplyError(RuntimeError):
    pass


def run(argv: Sequence[str], stdin: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, env={"PATH": PATH, "LANG": "C"})
    if proc.returncode != 0:
        raise ApplyError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def saved_state(save_text: str) -> tuple[dict[str, list[str]], list[tuple[str, str, str]]]:
    """From `iptables-save`: our cali-* chains per table and the JUMPS already present."""
    chains: dict[str, list[str]] = {}
    present = []
    table = ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":cali-"):
            chains.setdefault(table, []).append(line[1:].split()[0])
        elif line.startswith("-A "):
            for t, builtin, target in JUMPS:
                if t == table and line.strip() == f"-A {builtin} -j {target}":
                    present.append((t, builtin, target))
    return chains, present


def restore_input(model: Dataplane, save_text: str) -> str:
    existing, present = saved_state(save_text)
    wanted = model.chains
    stale = {t: [c for c in existing.get(t, []) if c not in wanted[t]] for t in TABLES}
    missing = [j for j in JUMPS if j not in present]
    return render(model, missing_jumps=missing, stale=stale)


def ipset_input(model: Dataplane, existing: set[str]) -> str:
    """`ipset restore` input: each set refilled atomically through a temporary set + swap."""
    lines = []
    for index, (name, (kind, _)) in enumerate(sorted(model.ipsets.items())):
        tmp = f"cali4-tmp-{index}"
        if name not in existing:
            lines.append(f"create {name} {kind} family inet")
        # a temporary set left by an interrupted run is emptied, not created
        lines.append(f"flush {tmp}" if tmp in existing else f"create {tmp} {kind} family inet")
        lines += [f"add {tmp} {member}" for member in model.ipset_members.get(name, [])]
        lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
    return "\n".join(lines) + "\n"


def ipset_names(runner: Runner = run) -> set[str]:
    return {n for n in runner(["ipset", "list", "-n"], None).split() if OUR_IPSET.match(n)}


def _routes(runner: Runner) -> dict[str, str]:
    out = runner(["ip", "-j", "-4", "route", "show", "proto", ROUTE_PROTO], None)
    return {r["dst"]: r.get("gateway", "") for r in json.loads(out or "[]")}


def workload_links() -> frozenset[str]:
    """The host's `cali*` interfaces: a new one (Docker's Join) needs its route and proxy ARP.
    Asked of the kernel directly (no `ip` process): the agent asks every second."""
    return frozenset(name for _, name in socket.if_nameindex() if name.startswith(IFACE_PREFIX))


def apply(model: Dataplane, links: frozenset[str], runner: Runner = run) -> None:
    """Make the host's ipsets, iptables and routes what `model` says; `links`: the workload
    interfaces there are (`workload_links`, as the caller saw them when it chose to apply)."""
    before = ipset_names(runner)
    runner(["ipset", "restore"], ipset_input(model, before))
    runner(["iptables-restore", "--noflush"], restore_input(model, runner(["iptables-save"], None)))
    for name in sorted(ipset_names(runner) - set(model.ipsets)):
        runner(["ipset", "destroy", name], None)
    current = _routes(runner)
    for dst, via in model.routes.items():
        if current.get(dst) != via:
            runner(["ip", "route", "replace", dst, "via", via, "proto", ROUTE_PROTO], None)
    for dst in current.keys() - model.routes.keys():
        runner(["ip", "route", "del", dst, "proto", ROUTE_PROTO], None)
    for address, iface in model.local_routes.items():
        if iface in links:  # Docker made it at Join: felix's part is the route and proxy ARP
            runner(["sysctl", "-q", "-w", f"net.ipv4.conf.{iface}.proxy_arp=1",
                    f"net.ipv4.neigh.{iface}.proxy_delay=0"], None)
            runner(["ip", "route", "replace", address, "dev", iface, "scope", "link"], None)


def cleanup(runner: Runner = run) -> None:
    """Remove every chain, jump, ipset and block route the agent made on this host."""
    existing, present = saved_state(runner(["iptables-save"], None))
    if existing or present:
        runner(["iptables-restore", "--noflush"], render_cleanup(existing, present))
    for name in sorted(ipset_names(runner)):
        runner(["ipset", "destroy", name], None)
    for dst in _routes(runner):
        runner(["ip", "route", "del", dst, "proto", ROUTE_PROTO], None)
