"""The warm server: chainlab imported once, a forked child per command (see chainlab.warm).

`python -P -m chainlab.warm.server DIRECTORY SECONDS`, started by the client. One server per
installation and directory (a lock file); it ends after SECONDS without a command, when
chainlab's files change, or when a command's CHAINLAB_/PYTHON environment is not the one it
started with. Only its own user reaches it: the directory is 0700 and each peer's uid is
checked. A command whose client goes away (killed) is sent SIGTERM.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import importlib
import json
import os
import pkgutil
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import setproctitle

import chainlab
from chainlab import runtime_dir
from chainlab.warm import attributes, place

#: Not imported ahead: the pytest plugin (imports pytest) and this package.
NOT_PRELOADED = ("chainlab.pytest_plugin", "chainlab.warm")
#: Signals a command's child must not get before its own handlers are set.
HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD}
#: Seconds a client has to send its command once connected (it sends it at once).
REQUEST_WITHIN = 5
#: Seconds a new child has to take on its caller's process attributes (a few system calls).
READY_WITHIN = 5


class Unmatched(Exception):
    """A command's child could not take on its caller's process attributes."""


def preload() -> None:
    """Every chainlab module (and so what they import), so that no command imports any."""
    for info in pkgutil.walk_packages(chainlab.__path__, "chainlab."):
        if not info.name.startswith(NOT_PRELOADED):
            try:
                importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - a module that cannot load here loads (and fails) in the command
                pass


def code_key() -> str:
    """chainlab's files as they are now (path, size, mtime): a change ends the server."""
    digest = hashlib.sha256(sys.executable.encode())
    for root in chainlab.__path__:
        for path in sorted(Path(root).rglob("*")):
            if path.suffix in (".py", ".so"):
                info = path.stat()
                digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class Server:
    def __init__(self, where: str, idle: float):
        self.where, self.idle = where, idle
        self.children: dict[int, socket.socket | None] = {}  # PID -> its client (None: gone)
        self.pending: dict[socket.socket, float] = {}  # connected, command not read yet -> until when
        self.stopping = False
        self.ending = False  # a signal asked the server to end

    def lock(self) -> bool:
        """Take the installation's lock: False if another server has it."""
        fd = os.open(place.lock_path(self.where), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.lock_file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.lock_file.close()
            return False
        self.lock_file.truncate(0)
        self.lock_file.write(f"{os.getpid()}\n")  # which process serves (end_server trusts it under the lock)
        self.lock_file.flush()
        return True

    def listen(self) -> None:
        fd = os.open(place.log_path(self.where), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        self.log = os.fdopen(fd, "w", buffering=1)  # this server's commands only: it does not grow across servers
        path = place.socket_path(self.where)
        if os.path.lexists(path):
            os.unlink(path)  # a server that ended without removing it: the lock says none runs
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o077)
        try:
            self.listener.bind(path)
        finally:
            os.umask(old)
        self.listener.listen(16)

    def serve(self) -> None:
        self.env_key = place.environment_key(dict(os.environ))
        self.code = code_key()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # end as when idle: commands running finish
            signal.signal(signum, self.asked_to_end)
        gc.freeze()  # what the imports made stays out of the children's collections (and shared)
        last = time.monotonic()
        while True:
            if not self.children and not self.pending and (self.stopping or time.monotonic() - last >= self.idle):
                break
            now = time.monotonic()
            deadlines = list(self.pending.values()) + ([] if self.children else [last + self.idle])
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            clients = [c for c in self.children.values() if c is not None]
            watched: list[Any] = [self.wake_r, *clients, *self.pending] + ([] if self.stopping else [self.listener])
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            if self.wake_r in ready:
                os.read(self.wake_r, 512)
            if self.ending:
                self.stop()
            self.reap()
            self.hung_up([c for c in ready if c in clients])
            for conn in [c for c in self.pending if c in ready or self.pending[c] <= time.monotonic()]:
                del self.pending[conn]
                if conn in ready and not self.stopping:
                    self.take(conn)  # its command is there (or it closed): recv does not wait
                    last = time.monotonic()
                else:
                    conn.close()  # connected and said nothing in time (or the server is ending)
            if not self.stopping and self.listener in ready:
                conn, _ = self.listener.accept()
                self.pending[conn] = time.monotonic() + REQUEST_WITHIN
        self.stop()

    def asked_to_end(self, signum: int, frame: object) -> None:
        self.ending = True

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                ended = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.waitstatus_to_exitcode(status)}"
                try:
                    conn.send(ended.encode())
                except OSError:
                    pass
                conn.close()

    def hung_up(self, conns: list[socket.socket]) -> None:
        """A client that went away (killed): its command is sent SIGTERM (as a closed
        terminal would end it; SIGCONT too, for a command its client had stopped), and is
        reaped as usual."""
        for pid, conn in list(self.children.items()):
            if conn is not None and conn in conns and not _still_there(conn):
                try:
                    os.kill(pid, signal.SIGTERM)
                    os.killpg(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                conn.close()
                self.children[pid] = None

    def take(self, conn: socket.socket) -> None:
        """One command: checked, then run in a child."""
        fds: list[int] = []
        verdict = "no"
        pid = 0
        try:
            if runtime_dir.peer_uid(conn) != os.getuid():
                raise ValueError("another user")
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            if not message:  # connected and closed (a probe of whether one listens)
                verdict = ""
            else:
                request = json.loads(message)
                if len(fds) != 3 or request["install"] != place.install():
                    raise ValueError("not a command of this installation")
                if place.environment_key(request["env"]) != self.env_key or code_key() != self.code:
                    verdict = "stale"
                    raise ValueError("another environment or changed code")
                if not _still_there(conn):
                    raise ValueError("the client went away")
                pid = self.fork(conn, fds, request)
        except Unmatched as exc:  # this server's own limits, nice or cgroups are in the way:
            verdict = "stale"     # the client starts a server of its own
            self.note(f"not served ({exc}): {verdict}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.note(f"not served ({exc}): {verdict}")
        finally:
            for fd in fds:  # the child has its own copies
                os.close(fd)
        if not pid:
            try:
                if verdict:
                    conn.send(verdict.encode())
            except OSError:
                pass
            conn.close()
            if verdict == "stale":
                self.stop()  # the client runs the command itself and starts a new server
            return
        try:
            conn.send(f"pid {pid}".encode())
        except OSError:  # gone meanwhile: so is its command
            os.kill(pid, signal.SIGKILL)
        self.children[pid] = conn
        self.note(f"pid {pid}: {' '.join(request['argv'][1:])}")

    def fork(self, conn: socket.socket, fds: list[int], request: dict) -> int:
        """The command's child (its PID). Signals are held across the fork, so that none
        reaches the child before it has a command's handlers."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                self.child(conn, fds, request, ready_w)
        except OSError:
            os.close(ready_r)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
            os.close(ready_w)
        try:
            ready = select.select([ready_r], [], [], READY_WITHIN)[0] and os.read(ready_r, 1) == b"1"
        finally:
            os.close(ready_r)
        if not ready:  # it could not take on the caller's limits, groups or cgroups
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise Unmatched("the caller's process attributes cannot be taken on here")
        return pid

    def note(self, line: str) -> None:
        try:
            self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
        except (OSError, ValueError):
            pass  # a full disk does not stop the serving

    def child(self, conn: socket.socket, fds: list[int], request: dict, ready: int) -> None:
        """In the forked child: take on the caller's process attributes (or end, and the
        command is not served), then become the command (its streams, directory,
        environment) and run it."""
        try:
            os.setpgid(0, 0)  # a group of its own, for the terminal's signals the client forwards
            attributes.take_on(request["process"])
            os.write(ready, b"1")
        except BaseException:  # noqa: BLE001 - never back into the server's loop
            os._exit(1)
        os.close(ready)
        code: int = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
            for other in [*self.children.values(), *self.pending]:
                if other is not None:
                    other.close()
            self.listener.close()
            self.lock_file.close()
            self.log.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            sys.stdin = open(0, encoding="utf-8", errors="strict", closefd=False)  # noqa: SIM115
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1 if os.isatty(1) else -1)  # noqa: SIM115
            sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
            # typeshed calls them Final; the command's code (rich, invoke) reads them as its streams
            sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr  # type: ignore[misc]
            os.umask(request["umask"])
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = request["argv"]
            setproctitle.setproctitle(" ".join(request["argv"]))  # ps and lab-busy messages show the command
            from chainlab.cli import main

            main()
            code = 0
        except SystemExit as exc:
            if isinstance(exc.code, int) or exc.code is None:
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - what an uncaught exception would print
            traceback.print_exc()
        finally:
            try:
                import atexit

                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def stop(self) -> None:
        """No new commands: the socket and the lock go now (the next client starts a new
        server); the children running finish, and are reported."""
        if not self.stopping:
            self.stopping = True
            try:
                os.unlink(place.socket_path(self.where))
            except FileNotFoundError:
                pass
            self.listener.close()
            self.lock_file.close()


def _still_there(conn: socket.socket) -> bool:
    """Whether the client still waits (it sends nothing more: readable means it closed)."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return True
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def main(argv: list[str]) -> int:
    where, seconds = argv[0], float(argv[1])
    if place.directory() != where:
        return 2
    server = Server(where, seconds)
    if not server.lock():
        return 0  # another server has started meanwhile
    # listening before the imports: a command that comes meanwhile waits for them (its
    # alternative, importing everything itself, takes as long) instead of running here
    server.listen()
    preload()
    setproctitle.getproctitle()  # finds the title's room while the environment is the exec's: a child clears it
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
