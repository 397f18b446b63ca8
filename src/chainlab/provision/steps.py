"""The base steps of `lab up`, in order; the network's own steps come from `chainlab.networks`.

Each step is a generator (see `chainlab.provision.actions`): it checks first with read-only
probes and yields an action only for what is not as wanted, so a second run yields nothing
(`ok`). It raises `Skip` when it does not apply; any other exception fails the host.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Generator
from typing import Any

from chainlab.errors import ChainlabError
from chainlab.networks.base import LABEL
from chainlab.provision import commands as C
from chainlab.provision import image as I
from chainlab.provision.actions import Action, Command, PutFile, Step
from chainlab.provision.context import HostContext, RunContext
from chainlab.provision.executor import Skip
from chainlab.shell import command_line

StepFn = Callable[[HostContext], Step]
NF_LOG_READ = C.read_file_argv("/proc/sys/net/netfilter/nf_log/2")
IMAGE_MARK = f"{C.RUN_DIR}/image.loaded"


# --- 0 nftables baseline ----------------------------------------------------------------

def nft_baseline(ctx: HostContext) -> Step:
    """On nft hosts, what lab down compares with: iptables-nft makes tables and base chains on
    first use (raw for the trace rules, filter INPUT/OUTPUT for Calico's jumps)."""
    if ctx.facts.iptables != "nft":
        raise Skip("legacy iptables")
    if not ctx.probe(["test", "-e", C.NFT_BEFORE]):
        yield Command.of(C.nft_record_argv())
    return "recorded the nftables ruleset before lab up", "nftables ruleset before lab up on record"


# --- 1 ip_forward ---------------------------------------------------------------------

def ip_forward(ctx: HostContext) -> Step:
    text = ctx.read(C.read_file_argv(C.SYSCTL_FILE)) or ""
    runtime = ctx.facts.ip_forward if ctx.facts.ip_forward in ("0", "1") else "0"
    before = C.sysctl_before(text) or runtime
    wanted = C.sysctl_text(before)
    done = []
    if text != wanted:
        if text and not text.startswith(C.MARKER):
            yield Command.of(C.backup_argv(C.SYSCTL_FILE))
        yield PutFile(C.SYSCTL_FILE, wanted)
        done.append(f"persisted in {C.SYSCTL_FILE}")
    if runtime != "1":
        yield Command.of(C.sysctl_set_argv("1"))
        done.append("set at run time")
    return ", ".join(done) + f" (was {before})", f"on (was {before} before lab up)"


# --- 2 trace log ----------------------------------------------------------------------

def _ensure_tool(ctx: HostContext, tool: str, fact: str) -> Generator[Action, Any, None]:
    if ctx.facts.has(fact):
        return
    if ctx.facts.family == "rhel" and tool == "xtables-monitor" and ctx.facts.os_version.startswith("7"):
        raise ChainlabError("CentOS 7's iptables has no xtables-monitor: use trace_backend rsyslog")
    try:
        yield Command.of(C.install_argv(ctx.facts.family, tool), timeout=600)
    except ValueError as exc:
        raise ChainlabError(str(exc)) from None


def _ensure_trace_file(ctx: HostContext) -> Generator[Action, Any, None]:
    log = ctx.inv.hosts[ctx.host].trace_log
    if not ctx.probe(["test", "-e", log]):
        yield Command.of(C.ensure_trace_log_argv(log))


def _started(ctx: HostContext, pidfile: str, comm: str, start: list[str]) -> Generator[Action, Any, str]:
    """Start a backend and wait (on the host, bounded) until its pidfile names it; its PID."""
    wait = C.sh(f"{C.shlex.join(start)} && i=0; until p=$({C.running_check_argv(pidfile, comm)[2]}); do "
                f"i=$((i+1)); [ $i -gt 30 ] && echo {C.shlex.quote(comm + ' did not stay up (see ' + C.RUN_DIR + ')')} >&2"
                f" && exit 1; sleep 0.1; done; echo $p")
    return ((yield Command.of(wait)) or "").strip() or "?"


def trace_log(ctx: HostContext) -> Step:
    backend = ctx.facts.trace_backend
    log = ctx.inv.hosts[ctx.host].trace_log
    if backend == "rsyslog":
        return (yield from _rsyslog(ctx, log))
    if backend == "ulogd":
        return (yield from _ulogd(ctx, log))
    return (yield from _monitor(ctx, log))


def _rsyslog(ctx: HostContext, log: str) -> Step:
    if ctx.facts.kernel_log == "shared":
        raise ChainlabError("rsyslog would read the kernel log this host shares with others:"
                            " set trace_backend: ulogd (legacy) or nft-monitor (nft) for this host")
    yield from _ensure_tool(ctx, "rsyslog", "rsyslogd")
    text = ctx.read(C.read_file_argv(C.RSYSLOG_FILE))
    if text != C.rsyslog_text(log):
        if text and not text.startswith(C.MARKER):
            yield Command.of(C.backup_argv(C.RSYSLOG_FILE))
        yield PutFile(C.RSYSLOG_FILE, C.rsyslog_text(log))
        try:
            yield Command.of(C.restart_argv(ctx.facts.init, "rsyslog"))
        except ValueError as exc:
            raise ChainlabError(str(exc)) from None
    yield from _ensure_trace_file(ctx)
    if (ctx.read(NF_LOG_READ) or "").strip() != C.KERNEL_LOGGER:
        yield Command.of(C.nf_log_remember_argv())  # lab down puts the bindings back
        yield Command.of(C.nf_log_kernel_bind_argv())
    return f"rsyslog: kern.* → {log}", f"rsyslog writes kern.* to {log}"


def _ulogd(ctx: HostContext, log: str) -> Step:
    yield from _ensure_tool(ctx, "ulogd", "ulogd")
    yield from _ensure_trace_file(ctx)
    conf = ctx.read(C.read_file_argv(C.ULOGD_CONF))
    pid = (ctx.read(C.running_check_argv(C.ULOGD_PID, "ulogd", holding=log)) or "").strip()
    if conf != C.ulogd_text(log):
        yield Command.of(["mkdir", "-p", C.RUN_DIR])
        yield PutFile(C.ULOGD_CONF, C.ulogd_text(log))
    if pid and (conf != C.ulogd_text(log) or pid == C.ELSEWHERE):
        yield Command.of(C.stop_argv(C.ULOGD_PID, "ulogd"))
        pid = ""
    if not pid:
        yield Command.of(C.nf_log_remember_argv())  # before ulogd's NFLOG input rebinds nf_log
        pid = yield from _started(ctx, C.ULOGD_PID, "ulogd", C.ulogd_start_argv())
    if (ctx.read(NF_LOG_READ) or "").strip() != "nfnetlink_log":
        yield Command.of(C.nf_log_bind_argv())
    return f"ulogd (pid {pid}) → {log}", f"ulogd running (pid {pid}) → {log}"


def _monitor(ctx: HostContext, log: str) -> Step:
    yield from _ensure_tool(ctx, "xtables-monitor", "xtables-monitor")
    yield from _ensure_trace_file(ctx)
    pid = (ctx.read(C.running_check_argv(C.MONITOR_PID, "xtables-monitor", holding=log)) or "").strip()
    if pid == C.ELSEWHERE:
        yield Command.of(C.stop_argv(C.MONITOR_PID, "xtables-monitor"))
        pid = ""
    if not pid:
        pid = yield from _started(ctx, C.MONITOR_PID, "xtables-monitor", C.monitor_start_argv(log))
    return (f"xtables-monitor --trace (pid {pid}) → {log}", f"xtables-monitor running (pid {pid}) → {log}")


# --- 3 trace rules --------------------------------------------------------------------

def trace_rules(ctx: HostContext) -> Step:
    rules = C.trace_rules(C.untraced_ports(ctx.run.provider, ctx.run.network))
    listing = ctx.read(C.RAW_LIST)
    present = C.present_rules(listing, rules) if listing is not None else [False] * len(rules)
    missing = [r for r, there in zip(rules, present) if not there]
    if missing:  # one round trip: the appends joined with &&, in order
        yield Command.of(C.sh(" && ".join(command_line(rule.argv("-A")) for rule in missing)))
    return (f"added {len(missing)} of {len(rules)} raw LOG/TRACE rules",
            f"{len(rules)} raw LOG/TRACE rules present")


# --- 4 image --------------------------------------------------------------------------

def _image_present(ctx: HostContext, name: str) -> bool:
    return name in ctx.docker_view().images


def _mark_image(image: str) -> Command:
    """Remember that lab up puts this image there, so lab down removes it and nothing else:
    its name before the load or build starts (lab up cut off meanwhile leaves an image that
    was not there before, which lab down must remove too), its id once it is there."""
    return Command.of(C.sh(f"mkdir -p {C.RUN_DIR} && echo {C.shlex.quote(image)} > {IMAGE_MARK}"))


def image(ctx: HostContext) -> Step:
    inv = ctx.inv
    name = inv.image.name
    if _image_present(ctx, name):
        extra = [n for n in ctx.run.images(ctx.host) if n != name and not _image_present(ctx, n)]
        if extra:
            raise ChainlabError(f"image(s) {', '.join(extra)} named by containers are not on the host")
        return "", f"{name} present"
    if inv.image.source == "tarball":
        tarball = I.tarball_path(inv, ctx.run.provider)
        yield _mark_image(name)
        image_id = yield ctx.call(f"{I.load_words(tarball)} {command_line([str(tarball), name])}",
                                  lambda: I.load_tarball(ctx.run.provider, ctx.docker(), tarball, name))
        if image_id:
            yield _mark_image(image_id)
        return f"{name} loaded from {tarball}", ""
    dockerfile = I.render_dockerfile(inv)
    yield _mark_image(name)
    built = yield ctx.call(f"docker build -t {name} - <<EOF\n{dockerfile.rstrip()}\nEOF",
                           lambda: ctx.docker().images.build(fileobj=io.BytesIO(dockerfile.encode()),
                                                             tag=name, rm=True, labels={LABEL: inv.lab})[0])
    if built is not None:
        yield _mark_image(built.id)
    return f"{name} built from {I.dockerfile_path(inv)}", ""


# --- 5 containers (after the network's own steps) -------------------------------------

def _placed(ctx: HostContext) -> list[str]:
    return [name for name, c in ctx.inv.containers.items() if c.host == ctx.host]


def containers(ctx: HostContext) -> Step:
    names = _placed(ctx)
    if not names:
        raise Skip("no containers placed on this host")
    changed = []
    for name in names:
        if (yield from _container(ctx, name)):
            changed.append(name)
    return f"created/started: {', '.join(changed)}", f"{', '.join(names)} running"


def _container(ctx: HostContext, name: str) -> Generator[Action, Any, bool]:
    """Run (or start) the container if needed; True if it had to. Reads are the host's Docker
    probe (fetched with the facts); only changes go through the docker SDK."""
    inv = ctx.inv
    network = ctx.run.network
    image_name = inv.container_image(name)
    options, words = network.run_options(name)
    attrs = ctx.docker_view().containers.get(name)
    if attrs is not None and ((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL) != inv.lab:
        raise ChainlabError(f"a container {name} exists on {ctx.host} and was not made by lab {inv.lab}")
    running = attrs is not None and (attrs.get("State") or {}).get("Status") == "running"
    if attrs is None:
        yield from network.before_container(ctx, name)
        box = yield ctx.call(
            f"docker run -itd {words} --name {name} --hostname {name} --label {LABEL}={inv.lab} {image_name}",
            lambda: ctx.docker().containers.run(image_name, name=name, hostname=name, detach=True, tty=True,
                                                stdin_open=True, labels={LABEL: inv.lab}, **options))
    elif not running:
        box = yield ctx.call(f"docker start {name}", lambda: _start(ctx, name))
    if not running:
        if box is None:  # --check: nothing was run
            return True
        box.reload()
        attrs = box.attrs
    assert attrs is not None  # it ran, or it was there
    state = network.container_state(ctx, attrs, name)
    network.wait_ready(ctx, state)
    ctx.containers[name] = state
    return not running


def _start(ctx: HostContext, name: str) -> Any:
    box = ctx.docker().containers.get(name)
    box.start()
    return box


def up_probes(run: RunContext, host: str) -> list[list[str]]:
    """The read-only probes the up steps make first, fetched with the facts in one round trip."""
    log = run.inv.hosts[host].trace_log
    read = C.read_file_argv
    return [
        read(C.SYSCTL_FILE), read(C.RSYSLOG_FILE), read(C.ULOGD_CONF), ["test", "-e", log],
        C.running_check_argv(C.ULOGD_PID, "ulogd", holding=log),
        C.running_check_argv(C.MONITOR_PID, "xtables-monitor", holding=log),
        NF_LOG_READ, ["test", "-e", C.NFT_BEFORE], C.RAW_LIST,
        run.inspect_argv(host), *run.network.up_probes(host),
    ]


#: Before the network's node steps.
BASE_UP_STEPS: list[tuple[str, StepFn]] = [
    ("nft_baseline", nft_baseline),
    ("ip_forward", ip_forward),
    ("trace_log", trace_log),
    ("trace_rules", trace_rules),
    ("image", image),
]
