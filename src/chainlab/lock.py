"""One run at a time per lab: an flock on a file, released by the kernel even on kill -9.

`flock` works on any open file, read-only too, so whoever can open a lock file can block
its lab. Lock files are therefore 0600 in a 0700 directory of the user that runs
chainlab (root for local labs: /run/chainlab), symlinks are refused, and a lock whose
file or directory belongs to someone else is an error, never waited on.

Who holds a lock comes from the kernel's lock table (/proc/locks) at the moment of the
refusal: the file holds no PID that could outlive its process.
"""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from chainlab.errors import ChainlabError
from chainlab.files import PRIVATE_DIR, PRIVATE_FILE
from chainlab.inventory import Inventory
from chainlab.labstate import state_path

PROC_LOCKS = Path("/proc/locks")
#: Root's lock directory for local labs; it empties at reboot.
LOCK_DIR = Path("/run/chainlab")
#: Seconds `--force` waits for the process it interrupted to let the lab go.
FORCE_WAIT_S = 15


class LockHeld(ChainlabError):
    """Someone else holds the lock; `holder` describes them ('' when the kernel does not say)."""

    def __init__(self, message: str, holder: str, pids: tuple[int, ...] = ()):
        super().__init__(message)
        self.holder = holder
        self.pids = pids


def _lock_dir(directory: Path) -> None:
    """Create `directory` 0700, or check that an existing one is this user's own real
    directory (tightened to 0700 if it was more open)."""
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ChainlabError(f"lock directory {directory} is not a directory of this user"
                            " (a symlink or someone else's): remove it")
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR:
        os.chmod(directory, PRIVATE_DIR)


def lock_holders(info: os.stat_result, locks_text: str | None = None) -> list[int]:
    """PIDs holding an flock on the file `info` describes, from /proc/locks (pure when
    `locks_text` is given). Waiters (`->` lines) do not hold it."""
    if locks_text is None:
        try:
            locks_text = PROC_LOCKS.read_text()
        except OSError:
            return []
    dev = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    pids = []
    for line in locks_text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev and fields[4].isdigit():
            pids.append(int(fields[4]))
    return pids


def describe_process(pid: int) -> str:
    """`pid 123: chainlab -i lab/local.yaml nightly` (just `pid 123` if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    words = raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")
    command = "".join(c if c.isprintable() else "?" for c in " ".join(words))
    if len(command) > 160:
        command = command[:157] + "..."
    return f"pid {pid}: {command}" if command else f"pid {pid}"


@contextmanager
def exclusive(path: Path, what: str, advice: str = "") -> Iterator[None]:
    """Hold `path` locked for the block, or fail at once (LockHeld) saying `what` is running
    (and then `advice`, what to do about it)."""
    _lock_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, PRIVATE_FILE)
    except OSError as exc:
        raise ChainlabError(f"cannot open lock {path}: {exc.strerror} (a symlink there is refused)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise ChainlabError(f"lock {path} is not a regular file of this user: remove it")
        if stat.S_IMODE(info.st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)  # a lock file from an older chainlab was 0644
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pids = lock_holders(info)
            holder = "; ".join(describe_process(pid) for pid in pids)
            raise LockHeld(f"{what} is already running ({holder + ', ' if holder else ''}lock {path})"
                           + (f": {advice}" if advice else ""), holder, tuple(pids)) from None
        yield
    finally:
        os.close(fd)


def _lab_what(lab: str) -> str:
    return f"a chainlab command on lab {lab} (lab up/down, run, nightly, probe or matrix)"


def lab_lock_path(inv: Inventory) -> Path:
    """Where the provider keeps the lab's lock (see `Provider.lab_lock_path`)."""
    from chainlab.providers import provider_for

    return provider_for(inv).lab_lock_path()


def ssh_lab_lock_path(inv: Inventory) -> Path:
    """Labs over SSH: next to the lab state, in the user's own state dir."""
    return state_path(inv).parent / "provision.lock"


def local_lab_lock_path(lab: str) -> Path:
    """Labs chainlab builds on this machine: /run/chainlab/lab-<lab>.lock (root's, outside the
    state dir that their `down` removes)."""
    return LOCK_DIR / f"lab-{lab}.lock"


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Wait for, then hold, a machine-wide lock /run/chainlab/<name>.lock for a short critical
    section (e.g. making and removing network namespaces: `ip netns add` races with
    itself and with unmounting /run/netns)."""
    _lock_dir(LOCK_DIR)
    fd = os.open(LOCK_DIR / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def lab_lock(inv: Inventory) -> AbstractContextManager[None]:
    """One provisioning run, scenario run, nightly, probe, matrix or `local down` per lab at a
    time: runs share the trace files and expect the lab to hold still."""
    return exclusive(lab_lock_path(inv), _lab_what(inv.lab), "wait for it to end, then run this again")


@contextmanager
def teardown_lock(lab: str, command: str, force: bool, log: Callable[[str], object]) -> Iterator[None]:
    """Hold the lab lock of `lab`, a lab chainlab built on this machine, while `command` (e.g.
    `local down`, which has no inventory to hand `lab_lock`) removes it. A lab up/down, scenario
    run or nightly holding it is refused, unless `force`: then it is interrupted (SIGTERM: a run
    or nightly ends at once, its run dir left partial, and lets the lock go), `log` says so,
    and the teardown takes the lock, or goes on without it after FORCE_WAIT_S."""
    path, what = local_lab_lock_path(lab), _lab_what(lab)
    with ExitStack() as stack:
        try:
            stack.enter_context(exclusive(path, what, f"wait for it, or `chainlab {command} --force` interrupts it"))
        except LockHeld as exc:
            if not force:
                raise
            log(f"warning: --force: interrupting {exc.holder or 'the holder of the lab lock'} (SIGTERM)")
            for pid in exc.pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + FORCE_WAIT_S
            while True:
                try:
                    stack.enter_context(exclusive(path, what))
                    break
                except LockHeld:
                    if time.monotonic() >= deadline:
                        log(f"warning: --force: the lab is still held after {FORCE_WAIT_S:g} s: going on without its lock")
                        break
                    time.sleep(0.1)
        yield
