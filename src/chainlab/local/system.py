"""Small I/O primitives for the local lab: commands, namespaces, links, processes, cgroups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from contextlib import AbstractContextManager
from pathlib import Path

from chainlab.errors import ChainlabError
from chainlab.local import netlink

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Where a machine lab's preflight looks for the commands it needs (whatever PATH the caller has:
#: cron's lacks the sbin directories).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
#: Daemons start with a clean environment: nothing of the caller's (DOCKER_HOST, PATH...) leaks in.
DAEMON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> str:
    """Run a command (no shell) and return its stdout; a failure becomes a ChainlabError."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ChainlabError(f"{' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''} failed: "
                            f"{detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


# --- namespaces and links -------------------------------------------------------------

def netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(Path("/run/netns") / name).st_ino
    except FileNotFoundError:
        return None


def _netns_lock() -> AbstractContextManager[None]:
    """Held around every `ip netns add|del` and the unmount of /run/netns, by every lab of
    the machine: two `ip netns add` at once can both mount /run/netns (one on the other),
    and an unmount between another lab's look and its add loses that lab's namespaces."""
    from chainlab.lock import machine_lock

    return machine_lock("netns")


def netns_add(name: str) -> None:
    with _netns_lock():
        run(["ip", "netns", "add", name])


def netns_del(name: str) -> None:
    with _netns_lock():
        run(["ip", "netns", "del", name])


def netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    return [int(p) for p in run(["ip", "netns", "pids", name], check=False).split()]


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return subprocess.run([*prefix, "link", "show", "dev", name], capture_output=True).returncode == 0


def route_device(address: IPv4Address) -> str | None:
    """The interface the machine would send a packet to `address` through (None: no route)."""
    return netlink.route_device(address)


def root_addresses() -> list[tuple[str, str]]:
    """(interface, address/prefix) of every IPv4 address in the machine's namespace."""
    result = []
    for link in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for addr in link.get("addr_info", []):
            result.append((link["ifname"], f"{addr['local']}/{addr['prefixlen']}"))
    return result


def only_default_route(address: IPv4Address) -> bool:
    """True if the only route to `address` is the default one (so a lab link will win)."""
    routes = run(["ip", "-4", "route", "show", "match", str(address)]).splitlines()
    return all(r.startswith("default") for r in routes if r.strip())


def check_route(address: IPv4Address, root_if: str, link: str, hint: str) -> None:
    """The safety rule of the labs this machine builds: refuse unless the machine routes
    `address` through the lab's management link `root_if`."""
    dev = route_device(address)
    if dev != root_if:
        raise ChainlabError(f"refusing to connect to {address}: the machine routes it via {dev or 'nothing'},"
                            f" not the {link} {root_if} ({hint})")


def check_lan_free(section: str, mgmt: IPv4Interface, root_if: str, hosts: Iterable[tuple[str, IPv4Address]]) -> None:
    """A lab's lan (`section`, e.g. local.lan) must not overlap an address of the machine
    (but its own link `root_if`), nor its hosts be routed elsewhere than by default."""
    for dev, addr in root_addresses():
        if dev != root_if and mgmt.network.overlaps(IPv4Interface(addr).network):
            raise ChainlabError(f"{section} {mgmt.network} overlaps {addr} on {dev}: choose another lan")
    for name, address in hosts:
        via = route_device(address)
        if via not in (None, root_if) and not only_default_route(address):
            raise ChainlabError(f"{address} ({name}) is already routed via {via}: choose another lan")


def is_mountpoint(path: str) -> bool:
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return any(line.split()[4] == path for line in mounts)


# --- processes ------------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    """A process identified by PID *and* start time, so a recycled PID is never mistaken."""

    pid: int
    start: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()  # fields from #3 (state) on


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def proc_of(pid: int) -> Proc | None:
    start = start_time(pid)
    return Proc(pid, start) if start is not None else None


def alive(proc: Proc | None) -> bool:
    if proc is None:
        return False
    fields = _stat_fields(proc.pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == proc.start


def in_netns(pid: int, netns: str) -> bool:
    inode = netns_inode(netns)
    try:
        return inode is not None and os.stat(f"/proc/{pid}/ns/net").st_ino == inode
    except FileNotFoundError:
        return False


def _machine_mount_namespaces() -> set[int]:
    """This process's and init's mount namespaces (init's may be hidden in a sandbox)."""
    found = set()
    for pid in ("self", "1"):
        try:
            found.add(os.stat(f"/proc/{pid}/ns/mnt").st_ino)
        except OSError:
            pass
    return found


def same_mount_ns(pid: int) -> set[int]:
    """Every process in `pid`'s mount namespace (e.g. a shell that entered a host with -m only)."""
    try:
        inode = os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except FileNotFoundError:
        return set()
    if inode in _machine_mount_namespaces():
        # A holder that never left the machine's mount namespace (a host setup that failed
        # half-way): "its" namespace is everyone's, and nothing in it is the lab's alone.
        return set()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "mnt").st_ino == inode:
                    found.add(int(entry.name))
            except (FileNotFoundError, PermissionError):
                pass
    return found


def descendants(roots: set[int]) -> set[Proc]:
    """`roots` and every process below them (container processes live in other netns), each
    with its start time as the scan saw it."""
    if not roots:
        return set()
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
                starts[int(entry.name)] = int(fields[19])
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return {Proc(pid, starts[pid]) for pid in found if pid in starts}


def _signal(proc: Proc, sig: signal.Signals) -> bool:
    """Send `sig` to `proc` if it is still that process: a pidfd pins whatever has the PID
    now, and its start time, read after, says whether it is the one that was found. False:
    it is gone."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return False
    try:
        if start_time(proc.pid) != proc.start:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def kill_all(procs: set[Proc], timeout: float = 5.0) -> None:
    """SIGKILL every process (a PID reused since it was found is left alone) and wait until
    none runs (zombies count as gone)."""
    for proc in procs:
        _signal(proc, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [p.pid for p in procs if alive(p)]
        if not running:
            return
        time.sleep(0.05)
    raise ChainlabError(f"processes still running after SIGKILL: {sorted(running)}")


def stop(proc: Proc, timeout: float = 15.0) -> None:
    """SIGTERM, so a daemon cleans up after itself (dockerd its pidfile and containerd), then
    SIGKILL whatever is still running after `timeout`."""
    stop_all({proc}, timeout)


def stop_all(procs: set[Proc], timeout: float) -> None:
    """`stop` for several processes at once: one `timeout` for all of them."""
    signalled = {proc for proc in procs if _signal(proc, signal.SIGTERM)}
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in signalled) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running := {p for p in signalled if alive(p)}:
        kill_all(running)


def spawn(argv: list[str], log: Path | None = None) -> Proc:
    """Start a long-running process in its own session; it outlives this CLI invocation."""
    # 0600: a daemon's log (sshd's names who logged in from where) is root's only.
    out = os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), "ab") if log else subprocess.DEVNULL
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, close_fds=True, env=DAEMON_ENV)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    proc = proc_of(child.pid)
    if proc is None:
        raise ChainlabError(f"{argv[0]} exited at once (see {log})" if log else f"{argv[0]} exited at once")
    return proc


# --- what a lab on this machine leaves behind ------------------------------------------

def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at `path` (made once); the public key line."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text()


def made_by_chainlab(state_dir: Path, state_file: Path) -> bool:
    """Whether a lab's state dir may be removed: chainlab made it (its state file is in it)
    or it is empty. Anything else is someone's directory that an inventory points at."""
    try:
        return state_file.exists() or not any(state_dir.iterdir())
    except FileNotFoundError:
        return True


def missing_dirs(state_dir: Path) -> list[str]:
    """The state dir's ancestors, itself and /run/netns that do not exist yet (deepest last):
    what `down` may remove again."""
    return [str(p) for p in [*reversed(state_dir.parents), state_dir, Path("/run/netns")] if not p.exists()]


def remove_lab_dirs(state_dir: Path, state_file: Path, created: tuple[list[str], bool] | None,
                    log: Callable[[str], object]) -> None:
    """The end of a lab's `down`: its state dir if chainlab made it; then, if the record said
    (`created`: the directories it created, whether /run/netns was mounted before), unmount
    /run/netns if the lab mounted it and it is empty, and remove the directories it created
    that are empty (someone else may use them now)."""
    if made_by_chainlab(state_dir, state_file):
        remove_tree(state_dir)
    else:
        log(f"left {state_dir} in place: it has no {state_file.name}, so chainlab did not make it")
    if created is None:
        return
    created_dirs, run_netns_was_mounted = created
    with _netns_lock():  # no `ip netns add` (a lab's) between the look and the umount
        if not run_netns_was_mounted and is_mountpoint("/run/netns") and not any(Path("/run/netns").iterdir()):
            run(["umount", "/run/netns"])
    for path in reversed(created_dirs):
        try:
            Path(path).rmdir()
        except OSError:
            pass


# --- cgroups --------------------------------------------------------------------------

def _cgroup_hierarchies() -> list[Path]:
    """cgroup v2 (unified): the root itself; v1 or hybrid: one directory per hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return []
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return list(CGROUP_ROOT.iterdir())


def remove_cgroup(parent: str, retries: int = 50) -> None:
    """Remove the cgroup directories dockerd created under `parent` in every hierarchy."""
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / parent.lstrip("/")
        if not top.is_dir() or hierarchy.is_symlink():
            continue
        # Deepest first, `top` last; os.walk skips a cgroup that goes away meanwhile (dockerd
        # may still be removing its own when `local down --force` interrupts a run).
        for d in [Path(root) for root, _, _ in os.walk(top, topdown=False)]:
            for _ in range(retries):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def remove_tree(path: Path, retries: int = 20) -> None:
    for _ in range(retries):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    shutil.rmtree(path)
