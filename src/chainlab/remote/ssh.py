"""Fabric connections with host keys checked (RejectPolicy) and retried connects."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import fabric
import fabric.runners
import paramiko
from invoke.exceptions import CommandTimedOut
from invoke.runners import Result
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.providers import Target
from chainlab.remote.target import resolve_target
from chainlab.remote.timeouts import RemoteTimeout
from chainlab.shell import command_line

CONNECT_ATTEMPTS = 5


class _Remote(fabric.runners.Remote):
    """fabric's runner, sure of its own timeouts and without invoke's polling delay.

    Timeouts: invoke asks whether the timeout fired by looking whether its timer thread has
    finished, but that thread ends the command by closing the channel, and the run can see the
    closed channel (exit -1) and ask before the thread has returned; the run then came back as
    a plain failure. The kill is recorded before the close.

    Delay: invoke's `wait` looks whether the command has ended every `input_sleep` (10 ms) and
    sleeps in between, which cost ~15 ms a command (a bare channel's `true`: 4.5 ms, through
    fabric: 22 ms). Here it waits on the channel's own event, which paramiko sets the moment
    the exit status arrives or the channel closes (a timeout's kill closes it)."""

    _killed = False

    def wait(self) -> None:
        while not (self.process_is_finished or self.has_dead_threads):
            self.channel.status_event.wait(self.input_sleep)

    def kill(self) -> None:
        self._killed = True
        super().kill()

    @property
    def timed_out(self) -> bool:
        return self._killed or super().timed_out


def connection(target: Target) -> fabric.Connection:
    """An unopened fabric Connection to `target` that rejects unknown host keys.

    SSH config files are not read: everything comes from the inventory (or the local lab).
    """
    connect_kwargs: dict[str, object] = {"allow_agent": False, "look_for_keys": target.key_filename is None}
    if target.key_filename:
        connect_kwargs["key_filename"] = [str(target.key_filename)]
    conn = fabric.Connection(
        host=str(target.address), user=target.user, port=target.port,
        connect_timeout=int(target.connect_timeout), connect_kwargs=connect_kwargs,
        config=fabric.Config(overrides={"load_ssh_configs": False, "runners": {"remote": _Remote}}),
    )
    if target.known_hosts:
        name = str(target.address) if target.port == 22 else f"[{target.address}]:{target.port}"
        entries = _host_keys(target.known_hosts).lookup(name)
        for keytype, key in (entries or {}).items():
            conn.client.get_host_keys().add(name, keytype, key)
    else:
        conn.client.load_system_host_keys()
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


_KNOWN_HOSTS_LOCK = threading.Lock()
_KNOWN_HOSTS: dict[str, tuple[bytes, paramiko.HostKeys]] = {}  # by path: the text parsed, its keys


def _host_keys(path: os.PathLike[str]) -> paramiko.HostKeys:
    """known_hosts parsed once per text of the file, not once per connection: parsing makes
    a key object of every line, and a lab's file has a line per host (at 30 hosts, 30
    connections each parsing 30 keys was a tenth of a warm `lab up`'s CPU). The file is read
    every time (a lab rebuilt rewrites it): a text unlike the one parsed is parsed anew. Each
    connection gets only its own host's keys (`connection`). Connections are made in
    parallel: the lock makes the first one parse and the others wait for it."""
    with _KNOWN_HOSTS_LOCK:
        text = Path(path).read_bytes()
        parsed = _KNOWN_HOSTS.get(str(path))
        if parsed is None or parsed[0] != text:
            parsed = _KNOWN_HOSTS[str(path)] = (text, paramiko.HostKeys(str(path)))
        return parsed[1]


#: Linux's TCP_QUICKACK (absent elsewhere: there the socket stays a plain one).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once.

    Right after authentication, OpenSSH's sshd sends small unsolicited packets (the
    `hostkeys-00@openssh.com` announcement, the key options as debug messages) that need no
    answer. Its answer to the first channel opened then waits, by Nagle's rule, until those
    are acknowledged, and Linux delays that acknowledgement (~40 ms): every connection's first
    command took ~48 ms instead of ~5. TCP_QUICKACK does not stay set, so it is set again after
    each read (one system call; SSH's control traffic is small)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        return data


@retry(stop=stop_after_attempt(CONNECT_ATTEMPTS), wait=wait_exponential(multiplier=0.2, max=3),
       retry=retry_if_exception_type((OSError, EOFError)), reraise=True)
def _open(conn: fabric.Connection) -> None:
    """Connect on a socket of our own with TCP_NODELAY set before the SSH handshake (its
    back-to-back small packets, and every short command after it, would otherwise wait for
    delayed ACKs, ~40 ms each), which acknowledges at once (`_QuickAckSocket`, on Linux)."""
    sock = socket.create_connection((conn.host, conn.port), timeout=conn.connect_timeout)
    try:
        if _QUICKACK is not None:
            sock = _QuickAckSocket(fileno=sock.detach())
            sock.settimeout(conn.connect_timeout)  # a socket made from a descriptor starts without one
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.connect_kwargs["sock"] = sock
        conn.open()
    except BaseException:
        sock.close()
        raise
    finally:
        conn.connect_kwargs.pop("sock", None)


def connect(inv: Inventory, host: str) -> fabric.Connection:
    """An open fabric Connection to inventory host `host` (route safety checked first)."""
    target = resolve_target(inv, host)
    try:
        conn = connection(target)
    except OSError as exc:
        raise ChainlabError(f"{host}: cannot read known_hosts {target.known_hosts}: {exc.strerror}") from None
    try:
        _open(conn)
    except paramiko.BadHostKeyException as exc:
        conn.close()
        raise ChainlabError(f"{host} ({target.address}): host key does not match known_hosts") from exc
    except (paramiko.SSHException, OSError, EOFError) as exc:
        conn.close()
        raise ChainlabError(f"cannot ssh to {host} ({target.address}): {_said(exc, target.connect_timeout)}") from exc
    return conn


def _said(exc: BaseException, timeout: float) -> str:
    """paramiko's words for a server that accepts TCP but never speaks SSH ("No existing
    session", "Error reading SSH protocol banner") say what happened, not why."""
    text = str(exc) or type(exc).__name__
    if "No existing session" in text or "protocol banner" in text or isinstance(exc, EOFError):
        return f"sshd accepted the connection but did not answer (frozen or overloaded?) ({text})"
    return text


def run(conn: fabric.Connection, argv: Sequence[str], *, check: bool = True, timeout: float | None = None) -> Result:
    """Run argv on the host (quoted, no output echoed); a failure becomes a ChainlabError
    (with `check`), a timeout or a broken session always does."""
    line = command_line(argv)
    try:
        result = conn.run(line, hide=True, warn=True, in_stream=False, timeout=timeout)
    except CommandTimedOut as exc:
        raise RemoteTimeout.of(conn.host, line, exc.timeout) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ChainlabError(f"{conn.host}: `{line}`: the SSH session failed: {exc}") from exc
    if check and not result.ok:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ChainlabError(f"{conn.host}: `{line}` failed (exit {result.exited})"
                            + (f": {detail[-1]}" if detail else ""))
    return result
