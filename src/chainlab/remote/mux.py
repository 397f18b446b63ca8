"""A command as a session on a running OpenSSH master: the client side of OpenSSH's
multiplexing protocol (PROTOCOL.mux in OpenSSH's sources, "passenger" sessions).

Why not `ssh -S PATH`: starting the `ssh` client (its libraries, OpenSSL's set-up) costs
~4-5 ms of CPU a command, more than the session itself; here it is a few system calls. The
protocol: a hello each way (version 4), a new-session request carrying the command (its
flags are uint32 in OpenSSH's mux.c, where PROTOCOL.mux says bool: no tty, X11, agent or
subsystem, no escape character), then
this process's stdin, stdout and stderr descriptors passed over the socket (SCM_RIGHTS), the
master's "session opened", and at the end its "exit message" with the command's status. The
master relays the command's output into the pipes passed to it.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import time
from dataclasses import dataclass

from chainlab import runtime_dir

HELLO, NEW_SESSION, TERMINATE = 0x00000001, 0x10000002, 0x10000005
OK, PERMISSION_DENIED, FAILURE, EXIT_MESSAGE = 0x80000001, 0x80000002, 0x80000003, 0x80000004
SESSION_OPENED, TTY_ALLOC_FAIL = 0x80000006, 0x80000008
VERSION = 4
NO_ESCAPE = 0xFFFFFFFF
#: A master's message larger than this is no message of this protocol.
MAX_MESSAGE = 256 * 1024
#: Seconds a master has to take a session (connect, hello, session opened): a master that
#: does not is stuck, and the caller goes another way (an idle master answers in ~1 ms).
HANDSHAKE_S = 5


class NoMaster(Exception):
    """No master listens on the socket (none started yet, or it ended)."""


class MuxError(Exception):
    """The master refused the session or spoke outside the protocol."""


class Cut(Exception):
    """The session ended without an exit status: the master went away, or `Mux.cut` was called."""


class Expired(Exception):
    """The command did not end within its timeout (the session was cut)."""


class Stuck(Exception):
    """The master did not take the session within HANDSHAKE_S (stopped, or far too busy)."""


@dataclass(frozen=True)
class Answer:
    status: int
    stdout: bytes
    stderr: bytes


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _packet(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", len(body)) + body


class Mux:
    """One session on the master listening at `path` (use once)."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._cut = False

    def cut(self) -> None:
        """End the session from another thread (a deadline): the master closes its channel.
        A cut before the master took the session is seen once it has (`_check_cut`)."""
        self._cut = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _check_cut(self) -> None:
        if self._cut:
            raise Cut()

    def run(self, command: str, timeout: float | None) -> Answer:
        """`command` (a line for the remote shell) with stdin empty; its status and output.
        The master must take the session (connect, hello, session opened) within
        HANDSHAKE_S (or `timeout` if shorter), else it is `Stuck`."""
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        handshake = now + (HANDSHAKE_S if timeout is None else min(HANDSHAKE_S, timeout))
        try:
            self._open(handshake - now)
            return self._session(command, deadline, handshake)
        except TimeoutError:
            raise Stuck() from None
        finally:
            self.sock.close()

    def terminate(self, timeout: float = HANDSHAKE_S) -> None:
        """Ask the master to end at once (`ssh -O exit`): it cuts its sessions and removes its
        socket. `Stuck` if it does not answer within `timeout`."""
        try:
            self._open(timeout)
            self.sock.sendall(_packet(struct.pack(">II", TERMINATE, 1)))
            try:
                kind, body = self._message()
            except Cut:
                return  # it ended before its answer went out (`ssh -O exit` takes that as done too)
            if kind != OK:
                raise MuxError(_reason(body) if kind in (PERMISSION_DENIED, FAILURE) else f"0x{kind:08x}")
        except TimeoutError:
            raise Stuck() from None
        finally:
            self.sock.close()

    def _open(self, timeout: float) -> None:
        """Connect to the master (ours) and exchange hellos, within `timeout` (socket timeout)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoMaster(str(exc)) from None
        uid = runtime_dir.peer_uid(self.sock)
        if uid != os.getuid():
            raise MuxError(f"the master at {self.path} is another user's (uid {uid})")
        self._check_cut()
        self.sock.sendall(_packet(struct.pack(">II", HELLO, VERSION)))
        kind, body = self._message()
        if kind != HELLO or struct.unpack(">I", body[:4])[0] != VERSION:
            raise MuxError(f"the master's hello is not protocol version {VERSION}")
        self._check_cut()

    def _session(self, command: str, deadline: float | None, handshake: float) -> Answer:
        request = _packet(struct.pack(">II", NEW_SESSION, 1), _string(b""),
                          struct.pack(">IIIII", 0, 0, 0, 0, NO_ESCAPE), _string(b""), _string(command.encode()))
        self.sock.sendall(request)
        out_r, out_w = os.pipe()
        try:
            err_r, err_w = os.pipe()
        except OSError:
            os.close(out_r)
            os.close(out_w)
            raise
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            try:
                for fd in (null, out_w, err_w):
                    socket.send_fds(self.sock, [b"\0"], [fd])
            finally:
                for fd in (null, out_w, err_w):
                    os.close(fd)
            return self._collect(out_r, err_r, deadline, handshake)
        finally:
            os.close(out_r)
            os.close(err_r)

    def _collect(self, out_r: int, err_r: int, deadline: float | None, handshake: float) -> Answer:
        """The pipes read to their end and the master's messages until the exit status (the
        session opened by `handshake`, else the master is `Stuck`)."""
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        status: int | None = None
        opened = False
        with selectors.DefaultSelector() as sel:
            for fd in chunks:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(self.sock, selectors.EVENT_READ)
            self.sock.setblocking(False)
            pending = b""
            open_pipes = 2
            while open_pipes or status is None:
                now = time.monotonic()
                if not opened and now >= handshake:
                    raise Stuck()
                left = None if deadline is None else deadline - now
                if left is not None and left <= 0:
                    raise Expired()
                if not opened:
                    left = handshake - now if left is None else min(left, handshake - now)
                for key, _ in sel.select(left):
                    if key.fileobj is self.sock:
                        data = self._read_socket()
                        if data is None:
                            continue
                        if not data:
                            sel.unregister(self.sock)
                            if status is None:
                                raise Cut()
                            continue
                        pending += data
                        pending, found, began = self._parse(pending)
                        status = found if found is not None else status
                        opened = opened or began or found is not None
                    else:
                        fd = key.fd
                        data = os.read(fd, 65536)
                        if data:
                            chunks[fd].append(data)
                        else:
                            sel.unregister(fd)
                            open_pipes -= 1
        return Answer(status, b"".join(chunks[out_r]), b"".join(chunks[err_r]))

    def _read_socket(self) -> bytes | None:
        """What the master sent (b"": it closed the connection); None: nothing after all."""
        if self._cut:
            raise Cut()
        try:
            return self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            raise Cut() from None

    def _parse(self, pending: bytes) -> tuple[bytes, int | None, bool]:
        """Whole messages off the front of `pending`: what is left, the exit status if one
        came, and whether the session opened."""
        status, opened = None, False
        while len(pending) >= 4:
            length = struct.unpack(">I", pending[:4])[0]
            if length < 4 or length > MAX_MESSAGE:
                raise MuxError(f"a message of {length} bytes from the master")
            if len(pending) < 4 + length:
                break
            kind, body = struct.unpack(">I", pending[4:8])[0], pending[8:4 + length]
            pending = pending[4 + length:]
            if kind in (PERMISSION_DENIED, FAILURE):
                raise MuxError(_reason(body))
            if kind == EXIT_MESSAGE:
                status = struct.unpack(">II", body[:8])[1]
            elif kind == SESSION_OPENED:
                opened = True
            elif kind not in (OK, TTY_ALLOC_FAIL):
                raise MuxError(f"an unknown message 0x{kind:08x} from the master")
        return pending, status, opened

    def _message(self) -> tuple[int, bytes]:
        head = self._exactly(4)
        length = struct.unpack(">I", head)[0]
        if length < 4 or length > MAX_MESSAGE:
            raise MuxError(f"a message of {length} bytes from the master")
        data = self._exactly(length)
        return struct.unpack(">I", data[:4])[0], data[4:]

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise Cut()
            data += chunk
        return data


def _reason(body: bytes) -> str:
    """A refusal's reason (request id, then a string)."""
    if len(body) < 8:
        return "refused"
    size = struct.unpack(">I", body[4:8])[0]
    return body[8:8 + size].decode("utf-8", "replace") or "refused"
