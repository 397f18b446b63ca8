"""Where the warm server listens: a socket in a directory only its user can enter.

Imported by the client on every command: standard library `os` only.
"""

from __future__ import annotations

import os
import stat

#: Sub-commands the server runs. Not `ssh` (an interactive terminal wants its own session),
#: nor `local` and `vm` (they start daemons, which should not be the server's descendants).
SERVED = frozenset({"analyze", "facts", "inventory", "lab", "matrix", "nightly", "probe", "profile", "run"})

#: Environment variables whose values the server's imports may have read: a command with
#: other values than the server started with gets a new server.
ENV_PREFIXES = ("CHAINLAB_", "PYTHON", "PYDANTIC_")


def directory() -> str | None:
    """The user's private directory for the socket (made 0700 if missing), or None when it
    exists but is not private (then nothing is served)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or ("/run" if os.getuid() == 0 else "/tmp")
    path = os.path.join(base, f"chainlab-warm-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def socket_path(where: str) -> str:
    return os.path.join(where, "server.sock")


def environment_key(env: dict[str, str]) -> list[list[str]]:
    """The part of an environment that decides whether a server fits it."""
    return sorted([k, v] for k, v in env.items() if k.startswith(ENV_PREFIXES) and k != "CHAINLAB_PERSIST")


def sub_command(argv: list[str]) -> str | None:
    """The sub-command of a `chainlab` command line (after the group's own options)."""
    words = iter(argv)
    for word in words:
        if word in ("-i", "--inventory"):
            next(words, None)
        elif not word.startswith("-"):
            return word
        elif not word.startswith("--inventory="):
            return None  # --help, --version, or something click will refuse: run it here
    return None


def end_server(where: str) -> int | None:
    """SIGTERM to the server of `where` (running commands finish): its PID, or None when none
    runs. The PID in its lock file is trusted only while the lock is held (a server that
    died left a PID that may be someone else's by now)."""
    import fcntl
    import signal

    try:
        lock = open(os.path.join(where, "server.lock"))  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it: no server
        except BlockingIOError:
            pass
        text = lock.read().strip()
    if not text.isdigit():
        return None
    try:
        os.kill(int(text), signal.SIGTERM)
    except ProcessLookupError:
        return None
    return int(text)
