"""The warm server: chainlab imported once, a forked child per command (see chainlab.warm).

`python -m chainlab.warm.server DIRECTORY SECONDS`, started by the client. One server per
directory (a lock file); it ends after SECONDS without a command, when chainlab's files
change, or when a command's CHAINLAB_/PYTHON environment is not the one it started with.
Only its own user reaches it: the directory is 0700 and each peer's uid is checked.
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
import struct
import sys
import time
import traceback
from pathlib import Path

import chainlab
from chainlab.warm import place

#: Not imported ahead: the pytest plugin (imports pytest) and this package.
NOT_PRELOADED = ("chainlab.pytest_plugin", "chainlab.warm")


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
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.ending = False  # a signal asked the server to end

    def listen(self) -> bool:
        """Bind the socket: False if another server has it."""
        self.lock = open(os.path.join(self.where, "server.lock"), "a")  # noqa: SIM115 - held while serving
        os.chmod(self.lock.name, 0o600)
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        self.lock.truncate(0)
        self.lock.write(f"{os.getpid()}\n")  # which process serves (tests end it by this PID)
        self.lock.flush()
        self.log = open(os.path.join(self.where, "server.log"), "a", buffering=1)  # noqa: SIM115
        path = place.socket_path(self.where)
        if os.path.exists(path):
            os.unlink(path)  # a server that ended without removing it: the lock says none runs
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o077)
        try:
            self.listener.bind(path)
        finally:
            os.umask(old)
        self.listener.listen(16)
        return True

    def serve(self) -> None:
        self.env_key = place.environment_key(dict(os.environ))
        self.code = code_key()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # end as when idle: commands running finish
            signal.signal(signum, self.asked_to_end)
        gc.freeze()  # what the imports made stays out of the children's collections (and shared)
        last = time.monotonic()
        while True:
            if not self.children and (self.stopping or time.monotonic() - last >= self.idle):
                break
            timeout = None if self.children else max(0.0, self.idle - (time.monotonic() - last))
            watched = [self.wake_r] + ([] if self.stopping else [self.listener])
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            if self.wake_r in ready:
                os.read(self.wake_r, 512)
            if self.ending:
                self.stop()
            self.reap()
            if not self.stopping and self.listener in ready:
                conn, _ = self.listener.accept()
                self.take(conn)
                last = time.monotonic()
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

    def take(self, conn: socket.socket) -> None:
        """One command: checked, then run in a child."""
        fds: list[int] = []
        try:
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            request = json.loads(message)
            fits = (uid == os.getuid() and len(fds) == 3
                    and place.environment_key(request["env"]) == self.env_key and code_key() == self.code)
        except (OSError, ValueError, KeyError, TypeError):
            fits = False
        if not fits:
            self.stop()  # a command it cannot run: the client runs it itself and starts a new server
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        pid = os.fork()
        if pid == 0:
            self.child(conn, fds, request)
        self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {pid}: {' '.join(request['argv'][1:])}\n")
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        try:
            conn.send(f"pid {pid}".encode())
        except OSError:
            pass

    def child(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        """In the forked child: become the command (its streams, directory, environment) and run it."""
        code: int = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.listener.close()
            self.lock.close()
            self.log.close()
            os.close(self.wake_r)
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            sys.stdin = open(0, encoding="utf-8", errors="strict", closefd=False)  # noqa: SIM115
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1 if os.isatty(1) else -1)  # noqa: SIM115
            sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
            sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
            os.umask(request["umask"])
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = request["argv"]
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
            self.lock.close()
            self.log.close()


def main(argv: list[str]) -> int:
    where, seconds = argv[0], float(argv[1])
    if place.directory() != where:
        return 2
    preload()
    server = Server(where, seconds)
    if not server.listen():
        return 0  # another server has started meanwhile
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
