"""Reading inputs and writing outputs safely.

- Inputs (inventory, scenario, `--expect`) are regular files only: a FIFO, a device or a
  directory is refused when opened (never read, so never a hang), and the size is checked
  from the open file before anything is read.
- Outputs are written atomically (a temporary file in the same directory, then renamed);
  when writing fails (disk full, read-only), the temporary file is removed and the error
  names the path and the reason.
- Private directories (0700) and files (0600): lab state, lock files, trace logs.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from chainlab.errors import ChainlabError, InputError, Problem

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def _refuse(path: Path, reason: str) -> InputError:
    return InputError([Problem(str(path), "", reason)])


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def others_may_change(info: os.stat_result) -> bool:
    """Whether a user other than this one (and root) could rename or replace what is in the
    directory `info` describes: it is another user's, or others may write in it and it is
    not sticky (as /tmp is: there no one renames what is not theirs)."""
    return info.st_uid not in (0, os.geteuid()) or bool(info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX)


def check_input_file(path: Path, what: str) -> Path:
    """`path` is there and a regular file (looked at with stat, which never blocks: opening a
    FIFO would): for a file read later by a library (a tarball, a TLS key); `what` says
    which input it is, in the error."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _refuse(path, f"{what}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, f"{what}: {_kind(info.st_mode)}, not a regular file")
    return path


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The whole content of `path`, which must be a regular file of at most `max_bytes`.

    Opened without blocking (a FIFO with no writer would block `open` forever), checked
    with fstat on the open descriptor (no race with a swap of the path), and read up to
    `max_bytes + 1` bytes, so a file that grows meanwhile is refused too, never read whole.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(path, f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(path, f"cannot read: {_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise _refuse(path, f"file larger than {max_bytes} bytes ({info.st_size} bytes)")
        os.set_blocking(fd, True)
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise _refuse(path, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise _refuse(path, f"file larger than {max_bytes} bytes (it grew while read)")
    return data


class OutputError(ChainlabError):
    """Writing an output failed; the message names the path and the reason."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


def describe_os_error(exc: OSError) -> str:
    """`No space left on device` and friends, with what to do for the common cases."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        return f"{reason} (free some space or choose another directory)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{reason} (choose a writable directory)"
    return reason


def check_output_file(path: Path) -> Path:
    """`path` as an output file, checked before any work is done: its directory exists and
    it is a regular file, a link or absent (a device, a FIFO or a directory there is
    refused: the rename of write_atomic would put a file in its place)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: no directory {path.parent}")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}", exc.errno) from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        raise OutputError(f"cannot write {path}: {_kind(info.st_mode)}, not a regular file")
    return path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Write `path` as a whole or not at all; the temporary file never stays behind."""
    path = check_output_file(path)
    tmp = path.with_name(f".{path.name}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # an older tmp file may have had another mode
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}", exc.errno) from None
    return path


def private_dir(path: Path) -> Path:
    """Make `path` (and missing parents) and restrict it to its owner (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path
