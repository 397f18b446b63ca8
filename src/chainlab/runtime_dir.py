"""The user's private runtime directory for one kind of chainlab socket (the warm server's,
the kept SSH connections'): made 0700 in a runtime directory no other user can change; and
who is at the other end of such a socket.

Imported by the `chainlab` entry point on every command: standard library `os` and `stat` only.
"""

from __future__ import annotations

import os
import stat


def runtime_directory(kind: str, create: bool = True) -> str | None:
    """`chainlab-<kind>-<uid>` in the user's runtime directory (made 0700 if missing and
    `create`), or None when it is not there or not private, or its parent could be changed by
    another user (then the caller keeps nothing there: e.g. root under `sudo -E` with a
    user's XDG_RUNTIME_DIR)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or ("/run" if os.getuid() == 0 else "/tmp")
    try:
        parent = os.stat(base)
    except OSError:
        return None
    # files.others_may_change, written out: the entry point imports the standard library only
    sticky = parent.st_mode & stat.S_ISVTX  # /tmp: others cannot rename what is ours in it
    if parent.st_uid not in (0, os.getuid()) or (parent.st_mode & 0o022 and not sticky):
        return None
    path = directory_in(base, kind)
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def directory_in(base: str, kind: str) -> str:
    """The user's directory of `kind` under `base` (a runtime directory)."""
    return os.path.join(base, f"chainlab-{kind}-{os.getuid()}")


def peer_uid(sock: object) -> int:
    """The uid of the process at the other end of a connected unix socket (SO_PEERCRED)."""
    import socket
    import struct

    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)  # type: ignore[attr-defined]
    return struct.unpack("3i", raw)[1]
