"""The steps of `lab up`, in order. Each checks first and changes only what is not as wanted.

A step returns (status, detail) with status `ok` or `changed`, raises `Skip` when it does
not apply, and lets any other exception fail the host. Commands go through the context,
which records them (for --check and --json) and runs them only outside --check.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import chainlab.calico as calico_layer
from chainlab.errors import ChainlabError
from chainlab.labstate import ContainerState
from chainlab.provision import commands as C
from chainlab.provision import image as I
from chainlab.provision.context import HostContext, Skip
from chainlab.shell import command_line

StepFn = Callable[[HostContext], tuple[str, str]]
LABEL = "chainlab.lab"
NF_LOG_READ = C.sh("cat /proc/sys/net/netfilter/nf_log/2")
IMAGE_MARK = f"{C.RUN_DIR}/image.loaded"


def _status(changed: bool, what: str, ok_detail: str) -> tuple[str, str]:
    return ("changed", what) if changed else ("ok", ok_detail)


def _cat(path: str) -> list[str]:
    return C.sh(f"cat {C.shlex.quote(path)} 2>/dev/null || true")


# --- 1 ip_forward ---------------------------------------------------------------------

def ip_forward(ctx: HostContext) -> tuple[str, str]:
    text = ctx.read(_cat(C.SYSCTL_FILE)) or ""
    runtime = ctx.facts.ip_forward if ctx.facts.ip_forward in ("0", "1") else "0"
    before = C.sysctl_before(text) or runtime
    wanted = C.sysctl_text(before)
    done = []
    if text != wanted:
        if text and not text.startswith(C.MARKER):
            ctx.change(C.backup_argv(C.SYSCTL_FILE))
        ctx.put(C.SYSCTL_FILE, wanted)
        done.append(f"persisted in {C.SYSCTL_FILE}")
    if runtime != "1":
        ctx.change(C.sysctl_set_argv("1"))
        done.append("set at run time")
    return _status(bool(done), ", ".join(done) + f" (was {before})", f"on (was {before} before lab up)")


# --- 2 trace log ----------------------------------------------------------------------

def _ensure_tool(ctx: HostContext, tool: str, fact: str) -> bool:
    if ctx.facts.has(fact):
        return False
    if ctx.facts.family == "rhel" and tool == "xtables-monitor" and ctx.facts.os_version.startswith("7"):
        raise ChainlabError("CentOS 7's iptables has no xtables-monitor: use trace_backend rsyslog")
    try:
        ctx.change(C.install_argv(ctx.facts.family, tool), timeout=600)
    except ValueError as exc:
        raise ChainlabError(str(exc)) from None
    return True


def _ensure_trace_file(ctx: HostContext) -> bool:
    log = ctx.inv.hosts[ctx.host].trace_log
    if ctx.probe(["test", "-e", log]):
        return False
    ctx.change(C.ensure_trace_log_argv(log))
    return True


def _wait_running(ctx: HostContext, pidfile: str, comm: str) -> str:
    if ctx.check:
        return "(check)"
    for _ in range(30):
        pid = (ctx.read(C.running_check_argv(pidfile, comm)) or "").strip()
        if pid:
            return pid
        time.sleep(0.1)
    raise ChainlabError(f"{comm} did not stay up (see {C.RUN_DIR} on the host)")


def trace_log(ctx: HostContext) -> tuple[str, str]:
    backend = ctx.facts.trace_backend
    log = ctx.inv.hosts[ctx.host].trace_log
    if backend == "rsyslog":
        return _rsyslog(ctx, log)
    if backend == "ulogd":
        return _ulogd(ctx, log)
    return _monitor(ctx, log)


def _rsyslog(ctx: HostContext, log: str) -> tuple[str, str]:
    if ctx.facts.kernel_log == "shared":
        raise ChainlabError("rsyslog would read the kernel log this host shares with others:"
                            " set trace_backend: ulogd (legacy) or nft-monitor (nft) for this host")
    changed = _ensure_tool(ctx, "rsyslog", "rsyslogd")
    text = ctx.read(_cat(C.RSYSLOG_FILE))
    wanted = C.rsyslog_text(log)
    if text != wanted:
        if text and not text.startswith(C.MARKER):
            ctx.change(C.backup_argv(C.RSYSLOG_FILE))
        ctx.put(C.RSYSLOG_FILE, wanted)
        try:
            ctx.change(C.restart_argv(ctx.facts.init, "rsyslog"))
        except ValueError as exc:
            raise ChainlabError(str(exc)) from None
        changed = True
    changed = _ensure_trace_file(ctx) or changed
    if (ctx.read(NF_LOG_READ) or "").strip() != C.KERNEL_LOGGER:
        ctx.change(C.nf_log_remember_argv())  # lab down puts the bindings back
        ctx.change(C.nf_log_kernel_bind_argv())
        changed = True
    return _status(changed, f"rsyslog: kern.* → {log}", f"rsyslog writes kern.* to {log}")


def _ulogd(ctx: HostContext, log: str) -> tuple[str, str]:
    changed = _ensure_tool(ctx, "ulogd", "ulogd")
    changed = _ensure_trace_file(ctx) or changed
    conf = ctx.read(_cat(C.ULOGD_CONF))
    wanted = C.ulogd_text(log)
    pid = (ctx.read(C.running_check_argv(C.ULOGD_PID, "ulogd")) or "").strip()
    if conf != wanted:
        ctx.change(["mkdir", "-p", C.RUN_DIR])
        ctx.put(C.ULOGD_CONF, wanted)
        if pid:
            ctx.change(C.stop_argv(C.ULOGD_PID, "ulogd"))
            pid = ""
        changed = True
    if not pid:
        ctx.change(C.nf_log_remember_argv())  # before ulogd's NFLOG input rebinds nf_log
        ctx.change(C.ulogd_start_argv())
        pid = _wait_running(ctx, C.ULOGD_PID, "ulogd")
        changed = True
    bound = ctx.read(NF_LOG_READ)
    if (bound or "").strip() != "nfnetlink_log":
        ctx.change(C.nf_log_bind_argv())
        changed = True
    return _status(changed, f"ulogd (pid {pid}) → {log}", f"ulogd running (pid {pid}) → {log}")


def _monitor(ctx: HostContext, log: str) -> tuple[str, str]:
    changed = _ensure_tool(ctx, "xtables-monitor", "xtables-monitor")
    changed = _ensure_trace_file(ctx) or changed
    pid = (ctx.read(C.running_check_argv(C.MONITOR_PID, "xtables-monitor")) or "").strip()
    if not pid:
        ctx.change(C.monitor_start_argv(log))
        pid = _wait_running(ctx, C.MONITOR_PID, "xtables-monitor")
        changed = True
    return _status(changed, f"xtables-monitor --trace (pid {pid}) → {log}",
                   f"xtables-monitor running (pid {pid}) → {log}")


# --- 3 trace rules --------------------------------------------------------------------

def management_ports(ctx: HostContext) -> list[int]:
    ports = [22 if ctx.inv.provider == "local" else ctx.inv.ssh.port]
    if ctx.inv.etcd:
        ports += [ctx.inv.etcd.port, C.ETCD_PEER_PORT]
    return ports


def _rules_check_argv(rules: list[C.TraceRule]) -> list[str]:
    return C.sh("; ".join(f"{command_line(r.argv('-C'))} >/dev/null 2>&1; echo $?" for r in rules))


def trace_rules(ctx: HostContext) -> tuple[str, str]:
    rules = C.trace_rules(management_ports(ctx))
    out = ctx.read(_rules_check_argv(rules))
    present = [code == "0" for code in out.split()] if out is not None else [False] * len(rules)
    if len(present) != len(rules):
        raise ChainlabError(f"unexpected answer checking the raw rules: {out!r}")
    missing = [r for r, there in zip(rules, present) if not there]
    if missing:  # one round trip: the appends joined with &&, in order
        ctx.change(C.sh(" && ".join(command_line(rule.argv("-A")) for rule in missing)))
    return _status(bool(missing), f"added {len(missing)} of {len(rules)} raw LOG/TRACE rules",
                   f"{len(rules)} raw LOG/TRACE rules present")


# --- 4 image --------------------------------------------------------------------------

def _image_present(ctx: HostContext, name: str) -> bool:
    if ctx.offline:
        return False
    import docker

    try:
        ctx.docker().images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def _mark_image(ctx: HostContext, image_id: str) -> None:
    """Remember that lab up put this image there, so lab down removes it and nothing else."""
    ctx.change(C.sh(f"mkdir -p {C.RUN_DIR} && echo {C.shlex.quote(image_id)} > {IMAGE_MARK}"))


def image(ctx: HostContext) -> tuple[str, str]:
    inv = ctx.inv
    name = inv.image.name
    names = {name, *(c.image for c in inv.containers.values() if c.host == ctx.host and c.image)}
    if _image_present(ctx, name):
        extra = sorted(n for n in names - {name} if not _image_present(ctx, n))
        if extra:
            raise ChainlabError(f"image(s) {', '.join(extra)} named by containers are not on the host")
        return "ok", f"{name} present"
    target = f"docker SDK over ssh://{inv.ssh.user}@{inv.hosts[ctx.host].address}"
    if inv.image.source == "tarball":
        tarball = I.tarball_path(inv)
        save = I.is_docker_save(tarball) if tarball.exists() else False
        ctx.note(f"{'docker load -i' if save else 'docker import'} {tarball} {name}   # {target}")
        if not ctx.check:
            if not tarball.exists():
                if inv.provider != "local" or inv.image.tarball:
                    raise ChainlabError(f"image tarball {tarball} does not exist")
                from chainlab.local import build_image_tarball

                build_image_tarball(tarball)
            client = ctx.docker()
            if save:
                with tarball.open("rb") as fh:
                    loaded = client.images.load(fh)
                image_id = loaded[0].id
                if name not in loaded[0].tags:
                    loaded[0].tag(name)
            else:
                from chainlab.local import load_image

                image_id = load_image(client, tarball, name)
            _mark_image(ctx, image_id)
        return "changed", f"{name} loaded from {tarball}"
    dockerfile = I.render_dockerfile(inv)
    ctx.note(f"docker build -t {name} - <<EOF   # {target}\n{dockerfile.rstrip()}\nEOF")
    if not ctx.check:
        built, _ = ctx.docker().images.build(fileobj=io.BytesIO(dockerfile.encode()),
                                            tag=name, rm=True, labels={LABEL: inv.lab})
        _mark_image(ctx, built.id)
    return "changed", f"{name} built from {I.dockerfile_path(inv)}"


# --- 5 Calico -------------------------------------------------------------------------

def calico(ctx: HostContext) -> tuple[str, str]:
    inv = ctx.inv
    if inv.calico.driver == "bridge":
        raise Skip("calico.driver is bridge: containers use Docker's bridge network")
    if inv.etcd is None:
        raise ChainlabError("calico.driver calico needs an `etcd:` section in the inventory")
    address = inv.hosts[inv.etcd.host].address
    ctx.note(f"etcd v2 GET http://{address}:{inv.etcd.port}/version   # python-etcd, retried")
    ctx.note(f"chainlab.calico.ensure_network({inv.calico.network}, pool {inv.calico.pool})")
    ctx.note(f"chainlab.calico.ensure_node({ctx.host})")
    if ctx.check:
        return "changed", "would ensure etcd, the network and the node (not checked under --check)"
    client = ctx.shared.etcd(inv)
    net_changed, ran = ctx.shared.once("network", lambda: calico_layer.ensure_network(inv, client))
    node_changed = calico_layer.ensure_node(inv, client, ctx.host, ctx.conn)
    changed = bool(node_changed) or (ran and bool(net_changed))
    return _status(changed, f"network {inv.calico.network} and node ready",
                   f"network {inv.calico.network} and node present")


# --- 6 containers ---------------------------------------------------------------------

def _placed(ctx: HostContext) -> list[str]:
    return [name for name, c in ctx.inv.containers.items() if c.host == ctx.host]


def containers(ctx: HostContext) -> tuple[str, str]:
    names = _placed(ctx)
    if not names:
        raise Skip("no containers placed on this host")
    changed = []
    for name in names:
        if _container(ctx, name):
            changed.append(name)
    return _status(bool(changed), f"created/started/wired: {', '.join(changed)}",
                   f"{', '.join(names)} running")


def _container(ctx: HostContext, name: str) -> bool:
    import docker

    inv = ctx.inv
    spec = inv.containers[name]
    image_name = inv.container_image(name)
    bridge = inv.calico.driver == "bridge"
    network = (spec.network or "bridge") if bridge else inv.container_network(name)
    ports = {f"{cport}/tcp": hport for hport, cport in spec.publish.items()}
    how = f"--network {network}" if bridge else "--network none"
    publish = " ".join(f"-p {h}:{c}" for h, c in spec.publish.items())
    ctx.note(f"docker run -d --name {name} --hostname {name} {how} {publish} --label {LABEL}={inv.lab} "
             f"{image_name}   # docker SDK, only if absent or stopped".replace("  ", " "))
    if not bridge:
        ctx.note(f"chainlab.calico.attach({ctx.host}, {name})")
    if ctx.offline:
        return True
    client = ctx.docker()
    if ctx.check:
        try:
            return client.containers.get(name).status != "running"
        except docker.errors.NotFound:
            return True
    changed = False
    try:
        box = client.containers.get(name)
        if box.labels.get(LABEL) != inv.lab:
            raise ChainlabError(f"a container {name} exists on {ctx.host} and was not made by lab {inv.lab}")
    except docker.errors.NotFound:
        if bridge and network != "bridge" and not client.networks.list(names=[network]):
            client.networks.create(network, driver="bridge", labels={LABEL: inv.lab})
        kwargs: dict[str, Any] = {"network": network, "ports": ports} if bridge else {"network_mode": "none"}
        box = client.containers.create(image_name, name=name, hostname=name, detach=True,
                                       labels={LABEL: inv.lab}, **kwargs)
        changed = True
    if box.status != "running":
        box.start()
        box.reload()
        changed = True
    if bridge:
        address = box.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        iflink = box.exec_run(["cat", "/sys/class/net/eth0/iflink"]).output.decode().strip()
        interface = None
        if iflink.isdigit():
            interface = C.veth_for_ifindex(ctx.read(["ip", "-o", "link", "show"]) or "", int(iflink))
    else:
        address, interface, wired = calico_layer.attach(inv, ctx.shared.etcd(inv), ctx.host, name, ctx.conn, client)
        changed = changed or wired
    ctx.containers[name] = ContainerState(host=ctx.host, address=address, network=network,
                                          driver=inv.calico.driver, interface=interface,
                                          published=dict(spec.publish))
    return changed


def up_probes(ctx: HostContext) -> list[list[str]]:
    """The read-only probes the up steps make first, fetched in one round trip."""
    log = ctx.inv.hosts[ctx.host].trace_log
    return [
        _cat(C.SYSCTL_FILE), _cat(C.RSYSLOG_FILE), _cat(C.ULOGD_CONF), ["test", "-e", log],
        C.running_check_argv(C.ULOGD_PID, "ulogd"), C.running_check_argv(C.MONITOR_PID, "xtables-monitor"),
        NF_LOG_READ, _rules_check_argv(C.trace_rules(management_ports(ctx))),
    ]


UP_STEPS: list[tuple[str, StepFn]] = [
    ("ip_forward", ip_forward),
    ("trace_log", trace_log),
    ("trace_rules", trace_rules),
    ("image", image),
    ("calico", calico),
    ("containers", containers),
]
