"""One run at a time per lab: an flock on a file, released by the kernel even on kill -9."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.labstate import state_path


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold `path` locked for the block, or fail at once saying `what` is already running."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ChainlabError(f"cannot open lock {path}: {exc.strerror} (a symlink there is refused)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise ChainlabError(f"lock {path} is not a regular file of this user: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ChainlabError(f"{what} is already running (pid {holder}, lock {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def lab_lock(inv: Inventory) -> AbstractContextManager[None]:
    """One provisioning run or scenario run per lab at a time: runs share the trace files
    and expect the lab to hold still. The lock lives next to the lab state."""
    return exclusive(state_path(inv).parent / "provision.lock", f"a lab up/down or scenario run on lab {inv.lab}")
