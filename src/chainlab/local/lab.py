"""`local up|down|status`: build, repair and remove the local lab described by a LabPlan.

Everything the lab makes is found again from the plan (deterministic names) and from the
state file written *before* anything is created, so `down` also works after a crash or
`kill -9` of `up`. Processes are killed by recorded PID (checked against its start time)
and by membership of the lab's own network namespaces, never by name.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from pydantic import BaseModel
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from chainlab.errors import ChainlabError
from chainlab.files import private_dir
from chainlab.remote import kept
from chainlab.lock import exclusive, teardown_lock
from chainlab.local import mgmt_link
from chainlab.local import plan as P
from chainlab.local import system as S
from chainlab.local.image import build_image_tarball
from chainlab.local.certs import ensure_pki
from chainlab.local.plan import HostPlan, LabPlan
from chainlab.local.record import RecordFile, load_record
from chainlab.local.route import check_lab_route

READY_TIMEOUT = 30.0
DAEMONS = ("sshd", "dockerd", "etcd")
Log = Callable[[str], object]


class ProcRecord(BaseModel):
    pid: int
    start: int
    argv: list[str] = []  # what it was started with: a daemon whose plan changed is restarted

    def proc(self) -> S.Proc:
        return S.Proc(self.pid, self.start)


class HostRecord(BaseModel):
    """What `up` started for one host (not labstate.HostState: what `lab up` provisioned)."""

    holder: ProcRecord | None = None
    setup_done: bool = False
    daemons: dict[str, ProcRecord] = {}
    up_since: float | None = None


class LocalLabRecord(BaseModel):
    """What `up` made that the plan alone cannot tell: PIDs and pre-existing machine state."""

    lab: str
    created_dirs: list[str] = []  # directories that did not exist before (deepest last)
    run_netns_was_mounted: bool = True
    hosts: dict[str, HostRecord] = {}


class _Store(RecordFile[LocalLabRecord]):
    def host(self, name: str) -> HostRecord:
        with self.lock:
            return self.state.hosts.setdefault(name, HostRecord())

    def reset_host(self, name: str) -> HostRecord:
        with self.lock:
            fresh = self.state.hosts[name] = HostRecord()
        self.save()
        return fresh


def load_state(plan: LabPlan) -> LocalLabRecord | None:
    """The lab's state file, None if there is none; an unreadable one is an error."""
    return load_record(LocalLabRecord, plan.state_file, "chainlab local down")


def _ours(plan: LabPlan) -> bool:
    """Whether `local.state_dir` may be removed (see `system.made_by_chainlab`)."""
    return S.made_by_chainlab(plan.state_dir, plan.state_file)


# --- preflight ------------------------------------------------------------------------

def preflight(plan: LabPlan) -> None:
    """Refuse early, with the fix, when the machine cannot host this lab safely."""
    if os.geteuid() != 0:
        raise ChainlabError("the local lab needs root (namespaces, mounts, daemons)")
    needed = dict(P.REQUIRED_COMMANDS)
    if any(h.runs_etcd for h in plan.hosts.values()):
        needed[P.ETCD_COMMAND[0]] = P.ETCD_COMMAND[1]
    missing = {pkg for cmd, pkg in needed.items() if not shutil.which(cmd, path=S.SYSTEM_PATH)}
    missing |= {pkg for path, pkg in P.PRIVATE_PATH_PACKAGES.items() if not Path(path).exists()}
    if missing:
        raise ChainlabError(f"missing Debian packages: {' '.join(sorted(missing))} (run `make local-deps`)")
    S.check_lan_free("local.lan", plan.mgmt, plan.root_if, ((h.name, h.address) for h in plan.hosts.values()))


# --- up -------------------------------------------------------------------------------

def up(plan: LabPlan, log: Log = print) -> None:
    """Bring the lab up; idempotent, and repairs whatever part is missing or dead."""
    preflight(plan)
    if not _ours(plan):
        raise ChainlabError(f"local.state_dir {plan.state_dir} exists, is not empty and was not made by"
                            " chainlab (no state.json): choose a new or empty directory")
    with exclusive(plan.lock_file, f"a local up/down of lab {plan.lab}"):
        _up(plan, log)


def _up(plan: LabPlan, log: Log) -> None:
    state = load_state(plan)
    if state is None and S.netns_exists(plan.lan_netns):
        raise ChainlabError(
            f"a lab named {plan.lab} is up, but not from this inventory's state dir {plan.state_dir}:"
            " take it down with the inventory that made it, or give this lab another `lab:` name"
        )
    store = _Store(plan.state_file, state or _first_state(plan))
    private_dir(plan.state_dir)  # keys, lab state, the hosts' logs and files: root's only
    store.save()
    _write_ssh_files(plan)
    etcd = plan.etcd_host
    if etcd is not None:
        ensure_pki(plan.pki, plan.lab, etcd.address)
    mgmt_link.ensure(plan.lan_netns, plan.root_if, plan.mgmt)
    with ThreadPoolExecutor(max_workers=len(plan.hosts) + 1) as pool:
        image = pool.submit(_ensure_image, plan)
        futures = {name: pool.submit(_ensure_host, plan, host, store, log) for name, host in plan.hosts.items()}
        errors = []
        for name, fut in futures.items():
            try:
                fut.result()
            except (ChainlabError, OSError) as exc:
                errors.append(f"{name}: {exc}")
        image.result()
    if errors:
        raise ChainlabError("local up failed (run `chainlab local down` to clean up): " + "; ".join(errors))


def _first_state(plan: LabPlan) -> LocalLabRecord:
    return LocalLabRecord(lab=plan.lab, created_dirs=S.missing_dirs(plan.state_dir),
                          run_netns_was_mounted=S.is_mountpoint("/run/netns"))


def _write_ssh_files(plan: LabPlan) -> None:
    plan.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    client_pub = S.keygen(plan.client_key, f"chainlab-{plan.lab}")
    plan.authorized_keys.write_text(client_pub)
    host_keys = {name: S.keygen(h.host_key, f"{name}.{plan.lab}") for name, h in plan.hosts.items()}
    plan.known_hosts.write_text(P.known_hosts_text(plan, host_keys))
    plan.ssh_config.write_text(P.ssh_client_config(plan))


def _ensure_image(plan: LabPlan) -> None:
    if not plan.image_tarball.exists():
        build_image_tarball(plan.image_tarball)


def _host_ok(host: HostPlan, hs: HostRecord) -> bool:
    return (
        S.netns_exists(host.netns) and hs.setup_done and hs.holder is not None
        and S.alive(hs.holder.proc()) and S.in_netns(hs.holder.pid, host.netns)
    )


def _ensure_host(plan: LabPlan, host: HostPlan, store: _Store, log: Log) -> None:
    hs = store.host(host.name)
    if not _host_ok(host, hs):
        if hs.holder or S.netns_exists(host.netns):
            log(f"{host.name}: rebuilding")
        _destroy_host(plan, host, hs)
        hs = store.reset_host(host.name)
        _create_host(plan, host, hs, store)
    _ensure_host_link(plan, host)
    assert hs.holder is not None
    wanted = {"sshd": P.sshd_argv(host), "dockerd": P.dockerd_argv(plan, host)}
    if host.runs_etcd:
        wanted["etcd"] = P.etcd_argv(plan, host)
    for daemon in sorted(set(hs.daemons) - set(wanted)):  # e.g. etcd moved to another host
        record = hs.daemons.pop(daemon)
        if S.alive(record.proc()):
            S.kill_all({record.proc()})
            log(f"{host.name}: stopped {daemon}, which the inventory no longer puts here")
        store.save()
    for daemon, argv in wanted.items():
        running = hs.daemons.get(daemon)
        if running is not None and running.argv and running.argv != argv and S.alive(running.proc()):
            S.stop(running.proc())
            log(f"{host.name}: restarting {daemon} with its new settings")
        if running is None or not S.alive(running.proc()):
            proc = S.spawn(P.enter_argv(hs.holder.pid, argv), host.log_dir / f"{daemon}.log")
            hs.daemons[daemon] = ProcRecord(pid=proc.pid, start=proc.start, argv=argv)
            store.save()
    _wait_ready(plan, host, hs)
    if hs.up_since is None:
        hs.up_since = time.time()
        store.save()
    log(f"{host.name}: up ({host.address}, {host.flavour})")


def _prepare_files(plan: LabPlan, host: HostPlan) -> None:
    """Fresh per-host copies of what the host's mount namespace makes private."""
    S.remove_tree(host.fs_dir)
    host.home.mkdir(parents=True, exist_ok=True)
    for target, name in P.PRIVATE_PATHS.items():
        dst = host.fs_dir / name
        src = Path(target)
        if target in P.SEEDED_PATHS and src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        elif target in P.SEEDED_PATHS:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        else:
            dst.mkdir(parents=True)
    for name, target in P.alternatives_targets(host.flavour).items():
        link = host.private_source("/etc/alternatives") / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    (host.private_source("/etc/docker") / "daemon.json").write_text(P.daemon_json())
    host.sshd_config_path.write_text(P.sshd_config(plan, host))


def _create_host(plan: LabPlan, host: HostPlan, hs: HostRecord, store: _Store) -> None:
    _prepare_files(plan, host)
    S.netns_add(host.netns)
    proc = S.spawn(P.holder_argv(host))
    hs.holder = ProcRecord(pid=proc.pid, start=proc.start)
    store.save()
    own_mnt = os.stat("/proc/self/ns/mnt").st_ino
    deadline = time.monotonic() + 5
    while os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino == own_mnt or not S.in_netns(proc.pid, host.netns):
        if time.monotonic() > deadline or not S.alive(proc):
            raise ChainlabError(f"the namespace holder of {host.name} did not start")
        time.sleep(0.02)
    cgroups = P.cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    S.run(P.enter_argv(proc.pid, ["sh", "-c", P.host_setup_script(plan, host, cgroups)]))
    hs.setup_done = True
    store.save()


def _ensure_host_link(plan: LabPlan, host: HostPlan) -> None:
    lan = plan.lan_netns
    if not S.link_exists(P.HOST_IF, host.netns):
        if S.link_exists(host.lan_port, lan):
            S.run(["ip", "-n", lan, "link", "del", host.lan_port])
        S.run(["ip", "-n", lan, "link", "add", host.lan_port, "type", "veth",
               "peer", "name", P.HOST_IF, "netns", host.netns])
    S.run(["ip", "-n", lan, "link", "set", host.lan_port, "master", mgmt_link.BRIDGE, "up"])
    S.run(["ip", "-n", host.netns, "addr", "replace", str(host.lan), "dev", P.HOST_IF])
    S.run(["ip", "-n", host.netns, "link", "set", P.HOST_IF, "up"])
    # A real host's default route is what lets proxy ARP answer a Calico workload's ARP for its
    # gateway 169.254.1.1; a lab host has no default route (nothing may leave the lab), so it
    # gets a route for that one address on its lab link instead.
    S.run(["ip", "-n", host.netns, "route", "replace", f"{P.CALICO_GATEWAY}/32", "dev", P.HOST_IF])


class _NotReady(Exception):
    pass


def _etcd_tls(plan: LabPlan) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(plan.pki.ca))
    context.load_cert_chain(str(plan.pki.client_cert), str(plan.pki.client_key))
    return context


def _wait_ready(plan: LabPlan, host: HostPlan, hs: HostRecord) -> None:
    assert hs.holder is not None
    holder = hs.holder.pid

    import docker

    @retry(stop=stop_after_delay(READY_TIMEOUT), wait=wait_fixed(0.1),
           retry=retry_if_exception_type(_NotReady), reraise=True)
    def check(daemon: str) -> None:
        if not S.alive(hs.daemons[daemon].proc()):
            raise ChainlabError(f"{daemon} exited (see {host.log_dir / (daemon + '.log')})")
        try:
            if daemon == "sshd":
                socket.create_connection((str(host.address), P.SSH_PORT), timeout=1).close()
            elif daemon == "dockerd":
                # /proc/PID/root resolves inside the host's mount namespace, where the socket is.
                api = docker.APIClient(base_url=f"unix:///proc/{holder}/root/run/docker.sock", timeout=2)
                try:
                    api.ping()
                finally:
                    api.close()
            else:
                urllib.request.urlopen(f"https://{host.address}:{plan.etcd_port}/version", timeout=1,
                                       context=_etcd_tls(plan)).read()
        except (OSError, docker.errors.DockerException) as exc:
            raise _NotReady(str(exc)) from exc

    check_lab_route(plan, host.address)  # once: the polls below only go where it allows
    for daemon in hs.daemons:
        try:
            check(daemon)
        except _NotReady as exc:
            raise ChainlabError(f"{daemon} not ready after {READY_TIMEOUT:.0f}s: {exc}") from exc


# --- down -----------------------------------------------------------------------------

def _recorded_processes(hs: HostRecord) -> set[int]:
    """A host's recorded processes still running, and whatever shares its holder's mount ns."""
    records = [hs.holder, *hs.daemons.values()]
    pids = {r.pid for r in records if r is not None and S.alive(r.proc())}
    if hs.holder and S.alive(hs.holder.proc()):
        pids |= S.same_mount_ns(hs.holder.pid)
    return pids


def _host_processes(host: HostPlan, hs: HostRecord | None) -> set[int]:
    return set(S.netns_pids(host.netns)) | (_recorded_processes(hs) if hs else set())


def _destroy_host(plan: LabPlan, host: HostPlan, hs: HostRecord | None) -> None:
    S.kill_all(S.descendants(_host_processes(host, hs)))
    if S.link_exists(host.lan_port, plan.lan_netns):
        S.run(["ip", "-n", plan.lan_netns, "link", "del", host.lan_port])
    if S.netns_exists(host.netns):
        S.netns_del(host.netns)
    S.remove_cgroup(host.cgroup_parent)


def down(plan: LabPlan, log: Log = print, force: bool = False) -> None:
    """Remove everything the lab made; safe to run on a half-built or already removed lab.

    Host namespaces are also found by name prefix, so a host dropped from the inventory
    while the lab was up is removed too. Another chainlab command on the lab (the lab lock)
    is refused, unless `force`: then the log says what is interrupted.
    """
    if os.geteuid() != 0:
        raise ChainlabError("the local lab needs root (namespaces, mounts, daemons)")
    with exclusive(plan.lock_file, f"a local up/down of lab {plan.lab}"), teardown_lock(plan.lab, "local down", force, log):
        _down(plan, log)


def _down(plan: LabPlan, log: Log) -> None:
    try:
        state = load_state(plan)
    except ChainlabError as exc:
        log(f"warning: {exc}")
        state = None
    mgmt_link.remove(plan.root_if)
    host_netns = {h.netns for h in plan.hosts.values()}
    host_netns |= {ns for ns in S.list_netns() if ns.startswith(f"{plan.lan_netns}.")}
    pids: set[int] = set()
    for netns in [*host_netns, plan.lan_netns]:
        pids |= set(S.netns_pids(netns))
    for hs in state.hosts.values() if state else []:
        pids |= _recorded_processes(hs)
    S.kill_all(S.descendants(pids))
    for netns in [*host_netns, plan.lan_netns]:
        if S.netns_exists(netns):
            S.netns_del(netns)
    for netns in host_netns:
        S.remove_cgroup("/" + netns)
    S.remove_lab_dirs(plan.state_dir, plan.state_file,
                      (state.created_dirs, state.run_netns_was_mounted) if state else None, log)
    kept.end(plan.lab)  # its hosts are gone: their kept SSH connections go too
    log(f"lab {plan.lab}: down")


# --- status ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HostStatus:
    name: str
    address: IPv4Address
    flavour: str
    holder: bool
    daemons: dict[str, bool | None]  # None: not run on this host
    up_since: float | None


def status(plan: LabPlan) -> list[HostStatus]:
    state = load_state(plan)
    rows = []
    for name, host in plan.hosts.items():
        hs = state.hosts.get(name) if state else None
        holder = bool(hs and _host_ok(host, hs))
        daemons: dict[str, bool | None] = {}
        for daemon in DAEMONS:
            if daemon == "etcd" and not host.runs_etcd:
                daemons[daemon] = None
                continue
            record = hs.daemons.get(daemon) if hs else None
            daemons[daemon] = holder and record is not None and S.alive(record.proc())
        rows.append(HostStatus(name, host.address, host.flavour, holder, daemons,
                               hs.up_since if hs and holder else None))
    return rows
