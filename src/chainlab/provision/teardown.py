"""The steps of `lab down`: remove exactly what `lab up` added, in reverse order.

Each step finds its traces on the host (our comment on rules, our marker in files, our
pidfiles under /run/chainlab, our label on containers), so it works on a half-provisioned
host and when run twice. Nothing that lacks our mark is touched.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import Any

from chainlab.errors import ChainlabError
from chainlab.networks.base import LABEL
from chainlab.provision import commands as C
from chainlab.provision.actions import Action, Command, Step
from chainlab.provision.context import HostContext, RunContext
from chainlab.provision.executor import Skip
from chainlab.provision.steps import IMAGE_MARK, StepFn
from chainlab.shell import command_line

#: The ruleset on record may be tens of KB: `cat` (a built-in read takes a byte per system call).
NFT_BEFORE_READ = ["cat", C.NFT_BEFORE]


def down_probes(run: RunContext, host: str) -> list[list[str]]:
    """The read-only probes the down steps make first, fetched with the facts in one round trip."""
    read = C.read_file_argv
    return [
        read(IMAGE_MARK), C.RAW_LIST, NFT_BEFORE_READ, C.NFT_LIST, C.running_check_argv(C.ULOGD_PID, "ulogd"),
        C.running_check_argv(C.MONITOR_PID, "xtables-monitor"), read(C.NF_LOG_BEFORE), read(C.RSYSLOG_FILE),
        read(C.TRACE_LOG_CREATED), read(C.SYSCTL_FILE), ["test", "-e", C.RUN_DIR],
    ]


def containers(ctx: HostContext) -> Step:
    """Every container labelled with the lab (Docker's Leave/DeleteEndpoint free its network)."""
    inv = ctx.inv
    if ctx.offline:
        placed = sorted(n for n, c in inv.containers.items() if c.host == ctx.host)
        for name in placed:
            yield ctx.call(f"docker rm -f {name}   # only if labelled {LABEL}={inv.lab}", lambda: None)
        return "would remove the lab's containers", "no containers"
    removed = []
    for box in ctx.docker().containers.list(all=True, filters={"label": f"{LABEL}={inv.lab}"}):
        yield ctx.call(f"docker rm -f {box.name}", partial(_remove, box))
        removed.append(box.name)
    return f"removed {', '.join(removed)}", "no lab containers"


def _remove(box: object) -> None:
    import docker

    try:
        box.remove(force=True)  # type: ignore[attr-defined]
    except docker.errors.NotFound:
        pass


def image(ctx: HostContext) -> Step:
    """Remove the image only if lab up loaded it (its id, or its name if lab up was cut off
    while loading it, is in /run/chainlab/image.loaded)."""
    mark = (ctx.read(C.read_file_argv(IMAGE_MARK)) or "").strip()
    if not mark and not ctx.offline:
        return "", "no image loaded by lab up"
    yield ctx.call(f"docker rmi {ctx.inv.image.name} ({mark[:19] or 'if lab up loaded it'})",
                   lambda: _remove_image(ctx, mark))
    yield Command.of(["rm", "-f", IMAGE_MARK])
    return f"removed {ctx.inv.image.name}", ""


def _remove_image(ctx: HostContext, image: str) -> None:
    import docker

    try:
        ctx.docker().images.remove(image)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise ChainlabError(f"docker rmi {ctx.inv.image.name}: {exc.explanation or exc}"
                            " (lab down will try again)") from None


def _backup_orphaned(ctx: HostContext, path: str, text: str) -> Generator[Action, Any, bool]:
    """Put back a file lab up moved aside when ours never replaced it (lab up cut off
    between the backup and the write): the file is absent, its backup is there."""
    if text:
        return False
    backup = path + C.BACKUP_SUFFIX
    if (ctx.read(C.sh(f"if [ -e {C.shlex.quote(backup)} ]; then echo kept; fi")) or "").strip() != "kept":
        return False
    yield Command.of(C.restore_argv(path))
    return True


def trace_rules(ctx: HostContext) -> Step:
    listing = ctx.read(C.RAW_LIST)
    deletes = C.our_rules_from_save(listing) if listing is not None else []
    if listing is None:
        yield Command.of(C.sh("iptables -t raw -S, then -D every rule with --comment chainlab"))
    elif deletes:  # one round trip: the deletes joined with &&
        yield Command.of(C.sh(" && ".join(command_line(argv) for argv in deletes)))
    return f"removed {len(deletes)} raw rules", "no chainlab raw rules"


def trace_log(ctx: HostContext) -> Step:
    """Stop whatever backend we started (by pidfile), restore bindings, drop-ins, trace file."""
    done = []
    log = ctx.inv.hosts[ctx.host].trace_log
    for backend, pidfile in (("ulogd", C.ULOGD_PID), ("nft-monitor", C.MONITOR_PID)):
        comm = C.PROCESS_NAMES[backend]
        if ctx.offline or ctx.read(C.running_check_argv(pidfile, comm)):
            yield Command.of(C.stop_argv(pidfile, comm))
            done.append(f"stopped {comm}")
    before = ctx.read(C.read_file_argv(C.NF_LOG_BEFORE))
    if before is None or before.strip():
        yield Command.of(C.nf_log_restore_argv(C.parse_nf_log(before or "")))
        done.append("nf_log restored")
    text = ctx.read(C.read_file_argv(C.RSYSLOG_FILE))
    if text is None or text.startswith(C.MARKER):
        yield Command.of(C.restore_argv(C.RSYSLOG_FILE))
        if ctx.facts.init != "none" and ctx.facts.has("rsyslogd"):
            yield Command.of(C.restart_argv(ctx.facts.init, "rsyslog"))
        done.append("rsyslog drop-in removed")
    elif (yield from _backup_orphaned(ctx, C.RSYSLOG_FILE, text)):
        done.append(f"{C.RSYSLOG_FILE} put back")
    created = ctx.read(C.read_file_argv(C.TRACE_LOG_CREATED))
    if created is None or created.strip():
        yield Command.of(C.remove_created_trace_log_argv(log))
        done.append(f"removed {log}")
    return ", ".join(done), "no trace backend of ours"


def nft_leftovers(ctx: HostContext) -> Step:
    """On nft hosts: the tables and base chains that iptables-nft made for our rules (raw, and
    the filter INPUT/OUTPUT of Calico's jumps) and that are empty now, if not there before."""
    if ctx.facts.iptables != "nft":
        raise Skip("legacy iptables: its tables are the kernel's, not removable")
    before = ctx.read(NFT_BEFORE_READ)
    now = ctx.read(C.NFT_LIST)
    if before is not None and not before.strip():
        return "", f"no record of nftables before lab up ({C.NFT_BEFORE})"
    deletes = C.nft_leftover_deletes(C.parse_nft_chains(before or ""), C.parse_nft_chains(now or "")) \
        if now is not None else []
    if now is None:
        yield Command.of(C.sh("nft delete the empty tables/chains lab up made (from " + C.NFT_BEFORE + ")"))
    elif deletes:
        yield Command.of(C.sh(" && ".join(command_line(argv) for argv in deletes)))
    return f"removed {len(deletes)} empty nftables table(s)/chain(s) lab up made", "no nftables leftovers"


def ip_forward(ctx: HostContext) -> Step:
    text = ctx.read(C.read_file_argv(C.SYSCTL_FILE))
    if text is not None and not text.startswith(C.MARKER):
        if (yield from _backup_orphaned(ctx, C.SYSCTL_FILE, text)):
            return f"{C.SYSCTL_FILE} put back", ""
        return "", f"{C.SYSCTL_FILE} absent or not ours"
    before = C.sysctl_before(text or "") or ("0" if text is None else None)
    if before is None:
        raise ChainlabError(f"{C.SYSCTL_FILE} is ours but lost the value before lab up")
    if ctx.facts.ip_forward != before:
        yield Command.of(C.sysctl_set_argv(before))
    yield Command.of(C.restore_argv(C.SYSCTL_FILE))
    return f"ip_forward back to {before}", ""


def run_dir(ctx: HostContext) -> Step:
    if ctx.probe(["test", "-e", C.RUN_DIR]) is not False:
        yield Command.of(["rm", "-rf", C.RUN_DIR])
    return f"removed {C.RUN_DIR}", f"{C.RUN_DIR} absent"


#: The per-host steps after the network's node steps, in order.
BASE_DOWN_STEPS: list[tuple[str, StepFn]] = [
    ("image", image),
    ("trace_rules", trace_rules),
    ("trace_log", trace_log),
    ("nft_leftovers", nft_leftovers),
    ("ip_forward", ip_forward),
    ("run_dir", run_dir),
]
