"""The `chainlab` command's entry point: hand the command to the warm server when there is one.

Imports only the standard library's light modules: the point is to start in ~20 ms. Without
CHAINLAB_PERSIST (or for a command the server does not run) it is chainlab.cli.main();
CHAINLAB_PERSIST=0 ends this installation's server first.
"""

from __future__ import annotations

import os
import sys

from chainlab import runtime_dir
from chainlab.warm import attributes, place

#: Seconds to wait for the server to take a command (it may be busy starting).
ANSWER_WITHIN = 10


def main() -> None:
    seconds = _persist_seconds()
    if seconds and place.sub_command(sys.argv[1:]) in place.SERVED:
        code = _served(seconds)
        if code is not None:
            sys.exit(code)
    elif os.environ.get("CHAINLAB_PERSIST") == "0":
        _end_server()
    from chainlab.cli import main as cli_main

    cli_main()


def _persist_seconds() -> int:
    value = os.environ.get("CHAINLAB_PERSIST", "")
    return int(value) if value.isdigit() else 0


def _end_server() -> None:
    """CHAINLAB_PERSIST=0: keep no server, so end this installation's if one runs (its
    running commands finish); the command then runs here."""
    where = place.directory(create=False)
    if where is not None and place.end_server(where) is not None:
        print("chainlab: warm server ended (CHAINLAB_PERSIST=0)", file=sys.stderr)


def _served(seconds: int) -> int | None:
    """Run the command on the server: its exit status, or None to run it here (no server
    yet: one is started for the next command; or the one there does not take it)."""
    import json
    import signal
    import socket

    where = place.directory()
    if where is None:
        return None
    # Signals that come before the command has a PID are kept, then forwarded. The command
    # leads a process group of its own: what a terminal sends to its foreground group (Ctrl-C,
    # Ctrl-\ and Ctrl-Z) goes to that group, its subprocesses too; SIGTERM and SIGHUP to its PID.
    pending: list[int] = []
    pid = 0
    to_group = {signal.SIGINT, signal.SIGQUIT, signal.SIGSTOP, signal.SIGCONT}

    def send(signum: int) -> None:
        try:
            if signum in to_group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def forward(signum: int, frame: object) -> None:
        if pid:
            send(signum)
        else:
            pending.append(signum)

    def stop(signum: int, frame: object) -> None:
        """Job control (Ctrl-Z, then fg or bg): the command stops and goes on with the client.
        Blocked until the command has a PID (see below); SIGSTOP, as the command's group is
        not in the terminal's session and the kernel would not stop it with SIGTSTP."""
        if pid:
            send(signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)
        if pid:  # continued (fg, bg)
            send(signal.SIGCONT)

    forwarded: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    for signum in forwarded:
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, stop)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(place.socket_path(where))
        peer_uid = runtime_dir.peer_uid(sock)
    except OSError:  # none there: run here, and start one for the next command
        sock.close()
        _start_server(where, seconds)
        _not_served(forwarded, pending)
        return None
    try:
        if peer_uid != os.getuid():
            raise OSError("the server is another user's")
        mask = os.umask(0o077)
        os.umask(mask)
        request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": mask,
                   "install": place.install(), "process": attributes.collect()}
        # Ctrl-Z waits for the PID: a client stopped now would stop without its command, and
        # its wait for the answer would time out meanwhile (then it would run the command too).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTSTP})
        socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
        sock.settimeout(ANSWER_WITHIN)
        answer = sock.recv(64).decode()
    except (OSError, ValueError):  # too big a request, a server that does not answer: run here
        answer = ""
    if not answer.startswith("pid "):
        sock.close()
        _not_served(forwarded, pending)
        if answer == "stale":  # it ends: the next one fits this command
            _start_server(where, seconds)
        return None
    pid = int(answer[4:])
    for signum in pending:
        forward(signum, None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTSTP})
    sock.settimeout(None)
    status = sock.recv(64).decode()  # forward() returns: recv goes on waiting (PEP 475)
    if status.startswith("exit "):
        return int(status[5:])
    if status.startswith("signal "):  # die as the command died (the shell sees the same)
        signum = int(status[7:])
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum
    print("chainlab: the warm server went away before the command ended", file=sys.stderr)
    return 1


def _not_served(forwarded: tuple[int, ...], pending: list[int]) -> None:
    """Back to running here: the signals' usual handling, and any that came meanwhile."""
    import signal

    signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTSTP})  # a Ctrl-Z meanwhile stops it now
    for signum in forwarded:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    for signum in pending:  # interrupted before the command started: end as a program would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return None


def _start_server(where: str, seconds: int) -> None:
    """A server in the background (its own session, no terminal, in `/`, and without the
    caller's directory on its module path: `-P`), for the next command."""
    import subprocess

    try:
        subprocess.Popen(
            [sys.executable, "-P", "-m", "chainlab.warm.server", where, str(seconds)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, cwd="/",
        )
    except OSError:  # no server then (a cache): the command runs here all the same
        pass
