"""Where the warm server listens: a socket in a directory only its user can enter.

Imported by the client on every command: standard library `os` only (and `runtime_dir`).
"""

from __future__ import annotations

import os
import sys

from chainlab import runtime_dir

#: Sub-commands the server runs. Not `ssh` (an interactive terminal wants its own session),
#: nor `local` and `vm` (they start daemons, which should not be the server's descendants).
SERVED = frozenset({"analyze", "facts", "inventory", "lab", "matrix", "nightly", "probe", "profile", "run"})

#: Environment variables whose values the server's imports may have read: a command with
#: other values than the server started with gets a new server.
ENV_PREFIXES = ("CHAINLAB_", "PYTHON", "PYDANTIC_")


def directory(create: bool = True) -> str | None:
    """The user's private directory for the socket (see `runtime_dir.runtime_directory`)."""
    return runtime_dir.runtime_directory("warm", create)


def directory_in(base: str) -> str:
    """The user's socket directory under `base` (a runtime directory)."""
    return runtime_dir.directory_in(base, "warm")


def listening(where: str) -> bool:
    """Whether a server of this installation takes connections in `where` now."""
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(socket_path(where))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def install() -> str:
    """This chainlab installation (its Python environment and package directory): each has
    a server of its own, so a second checkout or a pipx install is never served by another."""
    import zlib

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    key = "\0".join((sys.prefix, package)).encode()
    return f"{zlib.crc32(key):08x}"


def socket_path(where: str) -> str:
    return os.path.join(where, f"server-{install()}.sock")


def lock_path(where: str) -> str:
    """The server holds it locked while it runs; it holds the server's PID."""
    return os.path.join(where, f"server-{install()}.lock")


def log_path(where: str) -> str:
    """The commands the running server has served (one line each: time, PID, command)."""
    return os.path.join(where, f"server-{install()}.log")


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
        lock = open(lock_path(where))  # noqa: SIM115 - closed below
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
