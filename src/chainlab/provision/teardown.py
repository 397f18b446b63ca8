"""The steps of `lab down`: remove exactly what `lab up` added, in reverse order.

Each step finds its traces on the host (our comment on rules, our marker in files, our
pidfiles under /run/chainlab, our label on containers), so it works on a half-provisioned
host and when run twice. Nothing that lacks our mark is touched.
"""

from __future__ import annotations

import chainlab.calico as calico_layer
from chainlab.errors import ChainlabError
from chainlab.provision import commands as C
from chainlab.provision.context import HostContext, Skip
from chainlab.provision.steps import IMAGE_MARK, LABEL, StepFn, _cat, _status
from chainlab.shell import command_line


RAW_LIST = ["iptables", "-w", "5", "-t", "raw", "-S"]


def down_probes(ctx: HostContext) -> list[list[str]]:
    """The read-only probes the down steps make first, fetched in one round trip."""
    return [
        _cat(IMAGE_MARK), RAW_LIST, C.running_check_argv(C.ULOGD_PID, "ulogd"),
        C.running_check_argv(C.MONITOR_PID, "xtables-monitor"), _cat(C.NF_LOG_BEFORE), _cat(C.RSYSLOG_FILE),
        _cat(C.TRACE_LOG_CREATED), _cat(C.SYSCTL_FILE), ["test", "-e", C.RUN_DIR],
    ]


def containers(ctx: HostContext) -> tuple[str, str]:
    import docker

    inv = ctx.inv
    placed = {n for n, c in inv.containers.items() if c.host == ctx.host}
    if ctx.offline:
        for name in sorted(placed):
            ctx.note(f"docker rm -f {name}   # docker SDK, only if labelled {LABEL}={inv.lab}")
        return ("changed", "would remove the lab's containers") if placed else ("ok", "no containers")
    client = ctx.docker()
    ours = client.containers.list(all=True, filters={"label": f"{LABEL}={inv.lab}"})
    removed = []
    for box in ours:
        if inv.calico.driver == "calico":
            ctx.note(f"chainlab.calico.detach({ctx.host}, {box.name})")
            if not ctx.check:
                calico_layer.detach(ctx.shared.etcd(inv), ctx.host, box.name, ctx.conn, client)
        ctx.note(f"docker rm -f {box.name}   # docker SDK")
        if not ctx.check:
            try:
                box.remove(force=True)
            except docker.errors.NotFound:
                pass
        removed.append(box.name)
    for net in client.networks.list(filters={"label": f"{LABEL}={inv.lab}"}):
        ctx.note(f"docker network rm {net.name}   # docker SDK")
        if not ctx.check:
            net.remove()
        removed.append(f"network {net.name}")
    return _status(bool(removed), f"removed {', '.join(removed)}", "no lab containers")


def calico(ctx: HostContext) -> tuple[str, str]:
    inv = ctx.inv
    if inv.calico.driver == "bridge":
        raise Skip("calico.driver is bridge")
    ctx.note(f"chainlab.calico.stop_node({ctx.host})")
    if ctx.check:
        return "changed", "would stop the node"
    try:
        client = ctx.shared.etcd(inv)
    except ChainlabError:
        client = None  # etcd already gone: nothing to deregister from
    changed = calico_layer.stop_node(client, ctx.host, ctx.conn)
    return _status(bool(changed), "node stopped", "node not running")


def image(ctx: HostContext) -> tuple[str, str]:
    """Remove the image only if lab up loaded it (its id is in /run/chainlab/image.loaded)."""
    import docker

    mark = (ctx.read(_cat(IMAGE_MARK)) or "").strip()
    if not mark:
        return "ok", "no image loaded by lab up" if not ctx.offline else "image left in place unless lab up loaded it"
    ctx.note(f"docker rmi {ctx.inv.image.name} ({mark[:19]})   # docker SDK")
    if not ctx.check:
        try:
            ctx.docker().images.remove(mark)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ChainlabError(f"docker rmi {ctx.inv.image.name}: {exc.explanation or exc}"
                                " (lab down will try again)") from None
    ctx.change(["rm", "-f", IMAGE_MARK])
    return "changed", f"removed {ctx.inv.image.name}"


def _backup_orphaned(ctx: HostContext, path: str, text: str) -> bool:
    """Put back a file lab up moved aside when ours never replaced it (lab up cut off
    between the backup and the write): the file is absent, its backup is there."""
    if text:
        return False
    backup = path + C.BACKUP_SUFFIX
    if (ctx.read(C.sh(f"if [ -e {C.shlex.quote(backup)} ]; then echo kept; fi")) or "").strip() != "kept":
        return False
    ctx.change(C.restore_argv(path))
    return True


def trace_rules(ctx: HostContext) -> tuple[str, str]:
    listing = ctx.read(RAW_LIST)
    if listing is None:
        ctx.note("iptables -t raw -S, then -D every rule with --comment chainlab")
        return "changed", "would remove our raw rules"
    deletes = C.our_rules_from_save(listing)
    if deletes:  # one round trip: the deletes joined with &&
        ctx.change(C.sh(" && ".join(command_line(argv) for argv in deletes)))
    return _status(bool(deletes), f"removed {len(deletes)} raw rules", "no chainlab raw rules")


def trace_log(ctx: HostContext) -> tuple[str, str]:
    """Stop whatever backend we started (by pidfile), restore bindings, drop-ins, trace file."""
    done = []
    log = ctx.inv.hosts[ctx.host].trace_log
    for backend, pidfile in (("ulogd", C.ULOGD_PID), ("nft-monitor", C.MONITOR_PID)):
        comm = C.PROCESS_NAMES[backend]
        if ctx.offline or ctx.read(C.running_check_argv(pidfile, comm)):
            ctx.change(C.stop_argv(pidfile, comm))
            done.append(f"stopped {comm}")
    before = ctx.read(_cat(C.NF_LOG_BEFORE))
    if before is None or before.strip():
        ctx.change(C.nf_log_restore_argv(C.parse_nf_log(before or "")))
        done.append("nf_log restored")
    text = ctx.read(_cat(C.RSYSLOG_FILE))
    if text is None or text.startswith(C.MARKER):
        ctx.change(C.restore_argv(C.RSYSLOG_FILE))
        if ctx.facts.init != "none" and ctx.facts.has("rsyslogd"):
            ctx.change(C.restart_argv(ctx.facts.init, "rsyslog"))
        done.append("rsyslog drop-in removed")
    elif _backup_orphaned(ctx, C.RSYSLOG_FILE, text):
        done.append(f"{C.RSYSLOG_FILE} put back")
    created = ctx.read(_cat(C.TRACE_LOG_CREATED))
    if created is None or created.strip():
        ctx.change(C.remove_created_trace_log_argv(log))
        done.append(f"removed {log}")
    return _status(bool(done), ", ".join(done), "no trace backend of ours")


def ip_forward(ctx: HostContext) -> tuple[str, str]:
    text = ctx.read(_cat(C.SYSCTL_FILE))
    if text is not None and not text.startswith(C.MARKER):
        if _backup_orphaned(ctx, C.SYSCTL_FILE, text):
            return "changed", f"{C.SYSCTL_FILE} put back"
        return "ok", f"{C.SYSCTL_FILE} absent or not ours"
    before = C.sysctl_before(text or "") or ("0" if text is None else None)
    if before is None:
        raise ChainlabError(f"{C.SYSCTL_FILE} is ours but lost the value before lab up")
    if ctx.facts.ip_forward != before:
        ctx.change(C.sysctl_set_argv(before))
    ctx.change(C.restore_argv(C.SYSCTL_FILE))
    return "changed", f"ip_forward back to {before}"


def run_dir(ctx: HostContext) -> tuple[str, str]:
    present = ctx.probe(["test", "-e", C.RUN_DIR])
    if present is False:
        return "ok", f"{C.RUN_DIR} absent"
    ctx.change(["rm", "-rf", C.RUN_DIR])
    return "changed", f"removed {C.RUN_DIR}"


DOWN_STEPS: list[tuple[str, StepFn]] = [
    ("containers", containers),
    ("calico", calico),
    ("image", image),
    ("trace_rules", trace_rules),
    ("trace_log", trace_log),
    ("ip_forward", ip_forward),
    ("run_dir", run_dir),
]
