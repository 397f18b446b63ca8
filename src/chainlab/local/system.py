"""Small I/O primitives for the local lab: commands, namespaces, links, processes, cgroups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from chainlab.errors import ChainlabError

CGROUP_ROOT = Path("/sys/fs/cgroup")
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


def netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    return [int(p) for p in run(["ip", "netns", "pids", name], check=False).split()]


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return subprocess.run([*prefix, "link", "show", "dev", name], capture_output=True).returncode == 0


def route_device(address: IPv4Address) -> str | None:
    """The interface the machine would send a packet to `address` through (None: no route)."""
    proc = subprocess.run(["ip", "-j", "route", "get", str(address)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    routes = json.loads(proc.stdout or "[]")
    return routes[0].get("dev") if routes else None


def root_addresses() -> list[tuple[str, str]]:
    """(interface, address/prefix) of every IPv4 address in the machine's namespace."""
    result = []
    for link in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for addr in link.get("addr_info", []):
            result.append((link["ifname"], f"{addr['local']}/{addr['prefixlen']}"))
    return result


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


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them (container processes live in other netns)."""
    if not roots:
        return set()
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def kill_all(pids: set[int], timeout: float = 5.0) -> None:
    """SIGKILL every PID and wait until none runs (zombies count as gone)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [p for p in pids if (f := _stat_fields(p)) and f[0] not in ("Z", "X")]
        if not running:
            return
        time.sleep(0.05)
    raise ChainlabError(f"processes still running after SIGKILL: {sorted(running)}")


def stop(proc: Proc, timeout: float = 15.0) -> None:
    """SIGTERM, so a daemon cleans up after itself (dockerd its pidfile and containerd), then
    SIGKILL whatever is still running after `timeout`."""
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(proc):
        kill_all({proc.pid})


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
