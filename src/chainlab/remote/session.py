"""One host's SSH for provisioning: read-only commands on the kept connection (`kept`), the
rest (changes, files, docker) on chainlab's own fabric connection, opened on first need.

A warm `lab up` then opens no connection of its own: its one read-only batch per host is a
session on the kept master. Where no master can be used (none kept, or ssh failed: exit 255),
the command runs again on the fabric connection, whose errors (unreachable, host key, frozen
sshd) are chainlab's usual ones.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.remote import forward, kept, mux
from chainlab.remote.openssh import SSH_FAILED
from chainlab.remote.target import resolve_target
from chainlab.remote.timeouts import RemoteTimeout
from chainlab.shell import command_line

if TYPE_CHECKING:  # fabric (and invoke, paramiko) only once a step needs chainlab's own connection
    import fabric
    from invoke.runners import Result


@dataclass(frozen=True)
class Reading:
    """What a read-only command gave, whichever connection ran it."""

    exited: int
    stdout: str
    stderr: str


class HostSession:
    def __init__(self, inv: Inventory, host: str, forward_to: str | None = None):
        """`forward_to`: a unix socket on the host (dockerd's) that `gets` may ask."""
        self.inv, self.host = inv, host
        self._kept = kept.kept_for(inv.lab, resolve_target(inv, host), forward_to)  # the route check comes first
        #: the socket of the master this session would use (None: none kept)
        self.kept_path = self._kept.control_path if self._kept is not None else None
        #: the kept master failed (its forward is not to be trusted either)
        self.kept_lost = False
        self._conn: fabric.Connection | None = None
        self._running: set[mux.Mux | subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def connection(self) -> fabric.Connection:
        """chainlab's own connection to the host, opened now if it is not yet."""
        with self._lock:
            self._check_open()
            if self._conn is not None:
                return self._conn
        from chainlab.remote.ssh import connect

        conn = connect(self.inv, self.host)  # not under the lock: close() must not wait for it
        with self._lock:
            if self._closed or self._conn is not None:
                conn.close()
            self._check_open()
            if self._conn is None:
                self._conn = conn
            return self._conn

    def _check_open(self) -> None:
        if self._closed:
            raise ChainlabError(f"{self.host}: the SSH session was closed (a deadline ended it?)")

    def read(self, argv: Sequence[str], timeout: float | None = None) -> Reading:
        """A read-only command's result, whatever its exit status; a timeout or a broken
        session is a ChainlabError."""
        if self._kept is not None:
            started = time.monotonic()
            reading = self._on_kept(self._kept, argv, timeout)
            if reading is not None:
                return reading
            self._kept = None  # this run goes on without it
            self.kept_lost = True
            if timeout is not None:  # the fallback has what the kept connection left of the time
                timeout -= time.monotonic() - started
                if timeout <= 0:
                    raise RemoteTimeout(f"{self.host}: `{command_line(argv)}` did not finish within the time given")
        from chainlab.remote.ssh import run

        result = run(self.connection, argv, check=False, timeout=timeout)
        return Reading(result.exited, result.stdout, result.stderr)

    def gets(self, api_paths: Sequence[str], timeout: float) -> forward.Gets | None:
        """GET requests sent now to the socket given as `forward_to`, through the kept
        connection; None where there is no such forward (none kept, or a master started
        without it): the caller asks another way."""
        if self._kept is None or self._kept.forward_path is None:
            return None
        return forward.start(self._kept.forward_path, api_paths, timeout)

    def run(self, argv: Sequence[str], timeout: float | None = None) -> Result:
        """A change: on chainlab's own connection, a failure is a ChainlabError."""
        from chainlab.remote.ssh import run

        return run(self.connection, argv, timeout=timeout)

    def _on_kept(self, on: kept.Kept, argv: Sequence[str], timeout: float | None) -> Reading | None:
        """The result of `argv` as a session on the kept master (started by the `ssh` client
        if none runs); None when there is none to use."""
        line = command_line(argv)
        session = mux.Mux(on.control_path)
        self._track(session)
        answer: mux.Answer | None
        try:
            answer = session.run(line, timeout)
        except mux.NoMaster:
            answer = self._with_ssh_client(on, line, timeout)
        except mux.Expired:
            assert timeout is not None  # only a timeout expires
            raise RemoteTimeout.of(self.host, line, timeout) from None
        except mux.Stuck:  # stopped or far too busy: the next command starts another
            kept.kill_master(on.control_path)
            self._check_open()
            return None
        except (mux.Cut, mux.MuxError, OSError):
            self._check_open()  # cut by close(): a deadline ended it
            return None
        finally:
            self._untrack(session)
        if answer is None:
            return None
        return Reading(answer.status, answer.stdout.decode("utf-8", "replace"), answer.stderr.decode("utf-8", "replace"))

    def _with_ssh_client(self, on: kept.Kept, line: str, timeout: float | None) -> mux.Answer | None:
        """`line` run by the `ssh` client, which starts the master in the background (it then
        serves the next commands); None when ssh failed (exit 255)."""
        with self._lock:  # started and tracked at once: close() meanwhile would miss it
            self._check_open()
            proc = subprocess.Popen(on.command(line), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            self._running.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            assert timeout is not None  # only a timeout expires
            raise RemoteTimeout.of(self.host, line, timeout) from None
        finally:
            self._untrack(proc)
        self._check_open()  # killed by close(): a deadline ended it
        if proc.returncode == SSH_FAILED or proc.returncode < 0:
            return None
        return mux.Answer(proc.returncode, out, err)

    def _track(self, running: mux.Mux) -> None:
        with self._lock:
            self._check_open()
            self._running.add(running)

    def _untrack(self, running: mux.Mux | subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(running)

    def close(self) -> None:
        """Cut what runs on the host (kept sessions) and close the own connection; the kept
        master stays for the next command."""
        with self._lock:
            self._closed = True
            running, conn = list(self._running), self._conn
        for each in running:
            if isinstance(each, mux.Mux):
                each.cut()
            else:
                each.kill()
        if conn is not None:
            conn.close()

    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
