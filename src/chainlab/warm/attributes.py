"""A command's process attributes, so that a served command runs with its caller's.

A child of the warm server would otherwise have the server's: the resource limits, nice
value, cgroups, groups and namespaces of the command that started the server. The client collects its
own (`collect`); the server's child takes them on (`take_on`) before it becomes the command,
or the command is not served and runs in the caller's process. Lowering a limit or the
priority needs no privilege; raising them, other groups or another cgroup may (root can).
"""

from __future__ import annotations

import os
import resource

LIMITS = sorted(name for name in dir(resource) if name.startswith("RLIMIT_"))
#: Namespaces a command must share with its caller (`ip netns exec NS chainlab ...`): a child
#: of the server cannot enter them, so a caller in others is not served.
NAMESPACES = ("net", "mnt", "pid", "uts", "ipc", "user", "cgroup")


def collect() -> dict:
    """This process's attributes, as JSON-able data."""
    return {
        "limits": {name: list(resource.getrlimit(getattr(resource, name))) for name in LIMITS},
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "groups": [os.getgid(), os.getegid(), sorted(os.getgroups())],
        "cgroups": _cgroups(),
        "namespaces": _namespaces(),
    }


def take_on(wanted: dict) -> None:
    """Give this process `wanted`'s attributes; OSError or ValueError when it cannot."""
    if wanted["namespaces"] != _namespaces():
        raise ValueError("the caller is in other namespaces")
    gid, egid, groups = wanted["groups"]
    if [os.getgid(), os.getegid(), sorted(os.getgroups())] != [gid, egid, sorted(groups)]:
        os.setgroups(groups)
        os.setresgid(gid, egid, egid)
    if wanted["cgroups"] != _cgroups():
        _join_cgroups(wanted["cgroups"])
    for name, (soft, hard) in wanted["limits"].items():
        if name in LIMITS and resource.getrlimit(getattr(resource, name)) != (soft, hard):
            _fits(name, soft)
            resource.setrlimit(getattr(resource, name), (soft, hard))
    if os.getpriority(os.PRIO_PROCESS, 0) != wanted["nice"]:
        os.setpriority(os.PRIO_PROCESS, 0, wanted["nice"])


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:  # a cgroup's name is bytes
        return handle.read()


#: Memory limits and the /proc/self/status line of what they bound.
MEMORY = {"RLIMIT_AS": "VmSize", "RLIMIT_DATA": "VmData"}


def _fits(name: str, soft: int) -> None:
    """A memory limit below what the server's child already uses (it has imported
    everything) would fail the command where the caller's own process would not."""
    if name not in MEMORY or soft == resource.RLIM_INFINITY:
        return
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(MEMORY[name] + ":") and int(line.split()[1]) * 1024 >= soft:
            raise ValueError(f"{name} {soft} is below the server's own {line.split()[1]} kB")


def _namespaces() -> dict[str, int]:
    found = {}
    for name in NAMESPACES:
        try:
            found[name] = os.stat(f"/proc/self/ns/{name}").st_ino
        except OSError:  # a kernel without that kind
            pass
    return found


def _cgroups() -> str:
    try:
        return _read("/proc/self/cgroup")
    except OSError:
        return ""


def _join_cgroups(wanted: str) -> None:
    """Move this process into each hierarchy's cgroup of `wanted` (/proc/PID/cgroup's text),
    v1 and v2, through the hierarchy's mount point (pathlib only here: the client, which
    only collects, stays light)."""
    from pathlib import Path

    mounts = [line.split() for line in _read("/proc/self/mounts").splitlines()]
    own = _cgroups().splitlines()
    for line in wanted.splitlines():
        if line in own:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers:
            names = set(controllers.split(","))
            roots = [m[1] for m in mounts if m[2] == "cgroup" and names <= set(m[3].split(","))]
        else:
            roots = [m[1] for m in mounts if m[2] == "cgroup2"]
        if not roots:
            raise ValueError(f"no mount of the cgroup hierarchy {line!r}")
        root = Path(roots[0]).resolve()
        procs = (root / path.lstrip("/")).resolve() / "cgroup.procs"
        if not procs.is_relative_to(root):
            raise ValueError(f"cgroup {path!r} is outside its hierarchy")
        procs.write_text(str(os.getpid()))
