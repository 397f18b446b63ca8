"""`vm up|down|status`: boot, repair and remove the VM lab described by a VmLabPlan.

As the local lab: everything is found again from the plan (deterministic names) and from
the state file, written *before* anything is created, so `down` also works after a crash
or `kill -9` of `up`. qemu runs in the lab's namespace; `down` kills by recorded PID
(checked against its start time) and by membership of that namespace, never by name.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import paramiko
from pydantic import BaseModel
from rich.console import Console

from chainlab.errors import ChainlabError
from chainlab.files import private_dir
from chainlab.remote import kept
from chainlab.local import system as S
from chainlab.local.lab import ProcRecord
from chainlab.local.certs import ensure_pki
from chainlab.local.plan import known_hosts_text, ssh_client_config
from chainlab.local.record import RecordFile, load_record
from chainlab.lock import exclusive, teardown_lock
from chainlab.providers import Target
from chainlab.remote.ssh import connection, run
from chainlab.vm import network as N
from chainlab.vm import plan as P
from chainlab.vm import wheel as W
from chainlab.vm.accel import AccelChoice, choose_accel
from chainlab.vm.image import ensure_image, manifest
from chainlab.vm.plan import VmHostPlan, VmLabPlan

#: Seconds from qemu's start to a booted system (sshd answering, systemd done), by accelerator.
#: TCG boots one VM in about 20 s, three at once on two cores in about 40 s.
BOOT_TIMEOUT = {"tcg": 300.0, "kvm": 90.0}
#: Host memory a VM costs beyond its guest memory (TCG translation cache, qemu itself).
OVERHEAD_MIB = {"tcg": P.TCG_TB_SIZE + 64, "kvm": 64}
REQUIRED_COMMANDS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ssh-keygen": "openssh-client",
    "nft": "nftables",
}
Log = Callable[[str], object]


class VmRecord(BaseModel):
    """What `up` started for one VM."""

    qemu: ProcRecord | None = None
    image_id: str | None = None  # the image build its overlay sits on
    accel: str | None = None
    started: float | None = None  # wall clock, when qemu started
    up_since: float | None = None  # wall clock, when the VM was first seen booted
    boot_seconds: float | None = None


class VmLabRecord(BaseModel):
    """What `up` made that the plan alone cannot tell: PIDs and pre-existing machine state."""

    lab: str
    created_dirs: list[str] = []  # directories that did not exist before (deepest last)
    run_netns_was_mounted: bool = True
    accel: str | None = None
    accel_reason: str = ""
    hosts: dict[str, VmRecord] = {}


class _Store(RecordFile[VmLabRecord]):
    def host(self, name: str) -> VmRecord:
        with self.lock:
            return self.state.hosts.setdefault(name, VmRecord())


def load_state(plan: VmLabPlan) -> VmLabRecord | None:
    """The lab's state file, None if there is none; an unreadable one is an error."""
    return load_record(VmLabRecord, plan.state_file, "chainlab vm down")


def _ours(plan: VmLabPlan) -> bool:
    """Whether `qemu.state_dir` may be removed (see `system.made_by_chainlab`)."""
    return S.made_by_chainlab(plan.state_dir, plan.state_file)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ChainlabError("the VM lab needs root (namespaces, taps, qemu)")


def preflight(plan: VmLabPlan) -> None:
    """Refuse early, with the fix, when the machine cannot host this lab safely."""
    _require_root()
    missing = {pkg for cmd, pkg in REQUIRED_COMMANDS.items()
               if not shutil.which(cmd, path=S.SYSTEM_PATH)}
    if missing:
        raise ChainlabError(f"missing Debian packages: {' '.join(sorted(missing))} (run `make deps`)")
    if not Path("/dev/net/tun").exists():
        raise ChainlabError("/dev/net/tun is missing: the VMs' taps need the tun module (modprobe tun)")
    N.check_free(plan)


def _check_memory(plan: VmLabPlan, accel: str, starting: int) -> None:
    """Refuse to start `starting` VMs that would not fit in the machine's available memory."""
    if not starting:
        return
    needed = starting * (plan.memory + OVERHEAD_MIB[accel])
    for row in Path("/proc/meminfo").read_text().splitlines():
        if row.startswith("MemAvailable:"):
            available = int(row.split()[1]) // 1024
            if needed > available:
                raise ChainlabError(f"{starting} VMs of {plan.memory} MiB need about {needed} MiB of memory;"
                                    f" {available} MiB are available: lower qemu.memory or stop something")


# --- up -------------------------------------------------------------------------------

def up(plan: VmLabPlan, console: Console) -> AccelChoice:
    """Boot the lab, or repair whatever part of it is missing or dead (idempotent).
    The console shows the image build's progress (if it has to be built) and each VM."""
    preflight(plan)
    if not _ours(plan):
        raise ChainlabError(f"qemu.state_dir {plan.state_dir} exists, is not empty and was not made by"
                            " chainlab (no state.json): choose a new or empty directory")
    with exclusive(plan.lock_file, f"a vm up/down of lab {plan.lab}"):
        return _up(plan, console)


def _up(plan: VmLabPlan, console: Console) -> AccelChoice:
    log = console.print
    state = load_state(plan)
    if state is None and S.netns_exists(plan.lan_netns):
        raise ChainlabError(
            f"a lab named {plan.lab} is up, but not from this inventory's state dir {plan.state_dir}:"
            " take it down with the inventory that made it, or give this lab another `lab:` name"
        )
    store = _Store(plan.state_file, state or _first_state(plan))
    private_dir(plan.state_dir)  # keys, etcd's CA, the VMs' disks: root's only
    store.save()
    image = ensure_image(plan.image.dir.parent, console)
    info = manifest(image) or {}
    image_id = str(info.get("id", ""))
    choice = choose_accel(plan.accel, image.kernel)
    store.state.accel, store.state.accel_reason = choice.accel, choice.reason
    store.save()
    log(f"accelerator: {choice.describe()}")
    keys = _write_ssh_files(plan)
    N.ensure_lan(plan)
    starting = [h for h in plan.hosts.values() if not _running(plan, store.host(h.name))]
    _check_memory(plan, choice.accel, len(starting))
    for host in starting:
        _start(plan, host, store, choice.accel, image_id, keys)
    wheel = W.ensure_wheel(plan.wheel_cache) if plan.emulates_calico else None  # while the VMs boot
    errors = []
    with ThreadPoolExecutor(max_workers=len(plan.hosts)) as pool:
        futures = {name: pool.submit(_boot_and_install, plan, host, store, log, wheel)
                   for name, host in plan.hosts.items()}
        for name, fut in futures.items():
            try:
                fut.result()
            except (ChainlabError, OSError) as exc:
                errors.append(f"{name}: {exc}")
    if errors:
        raise ChainlabError("vm up failed (run `chainlab vm down` to clean up): " + "; ".join(errors))
    return choice


def _first_state(plan: VmLabPlan) -> VmLabRecord:
    return VmLabRecord(lab=plan.lab, created_dirs=S.missing_dirs(plan.state_dir),
                       run_netns_was_mounted=S.is_mountpoint("/run/netns"))


@dataclass(frozen=True)
class _Keys:
    client_pub: str
    hosts: dict[str, tuple[str, str]]  # name -> (private key text, public key line)
    pki: dict[str, str]  # file name -> text: etcd's certificates for the VMs (never the CA key)


def _write_ssh_files(plan: VmLabPlan) -> _Keys:
    plan.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    client_pub = S.keygen(plan.client_key, f"chainlab-{plan.lab}")
    hosts = {}
    for name, host in plan.hosts.items():
        pub = S.keygen(host.host_key, f"{name}.{plan.lab}")
        hosts[name] = (host.host_key.read_text(), pub)
    plan.known_hosts.write_text(known_hosts_text(plan, {n: pub for n, (_, pub) in hosts.items()}))
    plan.ssh_config.write_text(ssh_client_config(plan))
    pki = {}
    if plan.etcd_host:
        ensure_pki(plan.pki, plan.lab, plan.hosts[plan.etcd_host].address)
        pki = {path.name: path.read_text() for path in (plan.pki.ca, plan.pki.client_cert, plan.pki.client_key,
                                                         plan.pki.server_cert, plan.pki.server_key)}
    return _Keys(client_pub, hosts, pki)


def _running(plan: VmLabPlan, record: VmRecord) -> bool:
    return (record.qemu is not None and S.alive(record.qemu.proc())
            and S.in_netns(record.qemu.pid, plan.lan_netns))


def _write_seed(plan: VmLabPlan, host: VmHostPlan, keys: _Keys) -> None:
    S.remove_tree(host.seed_dir)
    host.seed_dir.mkdir(parents=True)
    private, public = keys.hosts[host.name]
    for name, (text, mode) in P.seed_files(plan, host, keys.client_pub, private, public, keys.pki).items():
        path = host.seed_dir / name
        path.write_text(text)
        path.chmod(mode)
    host.seed_image.unlink(missing_ok=True)
    S.run(P.seed_mkfs_argv(host))
    host.seed_image.chmod(0o600)


def _start(plan: VmLabPlan, host: VmHostPlan, store: _Store, accel: P.Accel, image_id: str, keys: _Keys) -> None:
    """(Re)start one VM: its tap, its overlay (kept across restarts on the same image), its seed."""
    record = store.host(host.name)
    if record.qemu is not None and S.alive(record.qemu.proc()):
        S.kill_all({record.qemu.proc()})  # alive but not in the lab namespace: not usable
    N.ensure_tap(plan, host)
    if not host.overlay.exists() or record.image_id != image_id:
        host.overlay.unlink(missing_ok=True)
        host.dir.mkdir(parents=True, exist_ok=True)
        S.run(P.overlay_argv(plan, host))
    _write_seed(plan, host, keys)
    host.console.write_bytes(b"")
    proc = S.spawn(P.enter_lan_argv(plan, P.qemu_argv(plan, host, accel)), host.qemu_log)
    record.qemu = ProcRecord(pid=proc.pid, start=proc.start)
    record.image_id, record.accel, record.started = image_id, accel, time.time()
    record.up_since = record.boot_seconds = None
    store.save()


def target(plan: VmLabPlan, host: VmHostPlan, connect_timeout: float = 10.0) -> Target:
    """The SSH target of a VM (the route is checked by whoever connects through it)."""
    return Target(host.name, host.address, plan.user, P.SSH_PORT, plan.client_key, plan.known_hosts,
                  connect_timeout, plan.home)


def _console_tail(host: VmHostPlan, lines: int = 3) -> str:
    try:
        text = host.console.read_bytes().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _boot_and_install(plan: VmLabPlan, host: VmHostPlan, store: _Store, log: Log,
                      wheel: tuple[Path, str] | None) -> None:
    _wait_booted(plan, host, store, log)
    if wheel is not None:
        _install_wheel(plan, host, *wheel)


def _install_wheel(plan: VmLabPlan, host: VmHostPlan, wheel: Path, digest: str) -> None:
    """chainlab's wheel unpacked in the VM (for the Calico daemon), unless that one is there."""
    conn = connection(target(plan, host))
    try:
        conn.open()
        if run(conn, W.installed_argv()).stdout.strip() == digest:
            return
        remote = f"/tmp/{wheel.name}"
        conn.put(str(wheel), remote)
        run(conn, W.install_argv(remote, digest), timeout=120)
    finally:
        conn.close()


def _wait_booted(plan: VmLabPlan, host: VmHostPlan, store: _Store, log: Log) -> None:
    """Until the VM answers SSH with its own host key and systemd has finished booting."""
    record = store.host(host.name)
    assert record.qemu is not None and record.accel is not None
    N.check_vm_route(plan, host.address)  # once: the polls below only go where it allows
    deadline = (record.started or time.time()) + BOOT_TIMEOUT[record.accel]
    state = ""
    while True:
        if not S.alive(record.qemu.proc()):
            raise ChainlabError(f"qemu exited (see {host.qemu_log}; console: {_console_tail(host)})")
        if time.time() > deadline:
            raise ChainlabError(f"not booted after {BOOT_TIMEOUT[record.accel]:.0f} s"
                                f" (console {host.console}: {_console_tail(host)})")
        state = _boot_state(plan, host, max(deadline - time.time(), 1.0))
        if state:
            break
        time.sleep(0.5)
    if record.up_since is None:
        record.up_since = time.time()
        record.boot_seconds = round(record.up_since - (record.started or record.up_since), 1)
        store.save()
    took = f", booted in {record.boot_seconds:.0f} s" if record.boot_seconds else ""
    note = "" if state.startswith("running") else f" [yellow]({state})[/yellow]"
    log(f"{host.name}: up ({host.address}, {record.accel}{took}){note}")


def _boot_state(plan: VmLabPlan, host: VmHostPlan, timeout: float) -> str:
    """'' while sshd does not answer; else systemd's state once booting is over (running,
    or degraded with the failed units)."""
    try:
        socket.create_connection((str(host.address), P.SSH_PORT), timeout=1).close()
    except OSError:
        return ""
    conn = connection(target(plan, host))
    try:
        try:
            conn.open()
        except paramiko.BadHostKeyException:
            raise ChainlabError(f"{host.address} answers with another host key than {host.name}'s") from None
        except (paramiko.SSHException, OSError, EOFError):
            return ""  # sshd starting, or still reading its keys
        script = ("s=$(systemctl is-system-running --wait 2>/dev/null); echo \"$s\";"
                  " [ \"$s\" = running ] || systemctl --failed --no-legend --plain | cut -d' ' -f1")
        result = run(conn, ["sh", "-c", script], check=False, timeout=timeout)
        words = result.stdout.split()
        if not words or words[0] in ("initializing", "starting"):
            return ""
        return words[0] if words[0] == "running" else f"{words[0]}: {' '.join(words[1:]) or '?'}"
    finally:
        conn.close()


# --- down -----------------------------------------------------------------------------

def down(plan: VmLabPlan, log: Log = print, force: bool = False) -> None:
    """Remove everything the lab made; safe on a half-built or already removed lab.
    The image cache stays (`chainlab vm image` rebuilds it). A lab up/down, scenario run or
    nightly in progress (the lab lock) is refused, unless `force`."""
    _require_root()
    with exclusive(plan.lock_file, f"a vm up/down of lab {plan.lab}"), teardown_lock(plan.lab, "vm down", force, log):
        _down(plan, log)


def _down(plan: VmLabPlan, log: Log) -> None:
    try:
        state = load_state(plan)
    except ChainlabError as exc:
        log(f"warning: {exc}")
        state = None
    pids = set(S.netns_pids(plan.lan_netns))
    for record in state.hosts.values() if state else []:
        if record.qemu and S.alive(record.qemu.proc()):
            pids.add(record.qemu.pid)
    S.kill_all(S.descendants(pids))
    N.remove_lan(plan)
    S.remove_lab_dirs(plan.state_dir, plan.state_file,
                      (state.created_dirs, state.run_netns_was_mounted) if state else None, log)
    kept.end(plan.lab)  # its hosts are gone: their kept SSH connections go too
    log(f"lab {plan.lab}: down")


# --- status ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VmStatus:
    name: str
    address: IPv4Address
    flavour: str
    running: bool
    pid: int | None
    accel: str | None
    rss_mib: int | None
    sshd: bool
    up_since: float | None


def _rss_mib(pid: int) -> int | None:
    try:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) // 1024
    except OSError:
        pass
    return None


def _sshd_answers(plan: VmLabPlan, address: IPv4Address) -> bool:
    if S.route_device(address) != plan.root_if:
        return False  # the route rule: nothing goes anywhere but through the lab link
    try:
        socket.create_connection((str(address), P.SSH_PORT), timeout=1).close()
        return True
    except OSError:
        return False


def status(plan: VmLabPlan) -> list[VmStatus]:
    state = load_state(plan)
    rows = []
    for name, host in plan.hosts.items():
        record = state.hosts.get(name) if state else None
        running = bool(record and _running(plan, record))
        pid = record.qemu.pid if running and record and record.qemu else None
        rows.append(VmStatus(
            name, host.address, host.flavour, running, pid, record.accel if record and running else None,
            _rss_mib(pid) if pid else None, running and _sshd_answers(plan, host.address),
            record.up_since if record and running else None,
        ))
    return rows
