"""The `chainlab` command's entry point: hand the command to the warm server when there is one.

Imports only the standard library's light modules: the point is to start in ~20 ms. Without
CHAINLAB_PERSIST (or for a command the server does not run) it is chainlab.cli.main().
"""

from __future__ import annotations

import os
import sys

from chainlab.warm import place


def main() -> None:
    seconds = _persist_seconds()
    if seconds and place.sub_command(sys.argv[1:]) in place.SERVED:
        code = _served(seconds)
        if code is not None:
            sys.exit(code)
    from chainlab.cli import main as cli_main

    cli_main()


def _persist_seconds() -> int:
    value = os.environ.get("CHAINLAB_PERSIST", "")
    return int(value) if value.isdigit() else 0


def _served(seconds: int) -> int | None:
    """Run the command on the server: its exit status, or None to run it here (no server
    yet: one is started for the next command; or the one there no longer fits)."""
    import json
    import signal
    import socket

    where = place.directory()
    if where is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(place.socket_path(where))
        mask = os.umask(0o077)
        os.umask(mask)
        request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": mask}
        socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
        answer = sock.recv(64).decode()
    except OSError:
        answer = ""
    if not answer.startswith("pid "):  # none there, or it went (stale: it ends itself)
        sock.close()
        _start_server(where, seconds)
        return None
    pid = int(answer[4:])

    def forward(signum: int, frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    status = sock.recv(64).decode()  # forward() returns: recv goes on waiting (PEP 475)
    if status.startswith("exit "):
        return int(status[5:])
    if status.startswith("signal "):
        return 128 + int(status[7:])
    print("chainlab: the warm server went away before the command ended", file=sys.stderr)
    return 1


def _start_server(where: str, seconds: int) -> None:
    """A server in the background (its own session, no terminal), for the next command."""
    import subprocess

    subprocess.Popen(
        [sys.executable, "-m", "chainlab.warm.server", where, str(seconds)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
