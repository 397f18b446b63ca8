"""GET requests to a host's dockerd through the kept SSH connection's forwarded socket.

The kept master forwards a socket of ours to dockerd's on the host (`kept`: OpenSSH's
`-L LOCAL:REMOTE`, a direct-streamlocal channel per connection, opened by the host's sshd
itself). A warm `lab up` asks dockerd about its objects this way instead of starting curl
on the host (~6 ms of the host's CPU a look, the largest part of what a warm run costs a
host). HTTP/1.0, one connection per request: the response ends with the connection and is
never chunked. The requests go out at once and their answers are read later (meanwhile the
host runs its batch of other checks).
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import time
from collections.abc import Sequence

#: An answer larger than this is no answer about a few objects.
MAX_ANSWER = 16 << 20


class Gets:
    """Requests sent; `bodies` reads their answers."""

    def __init__(self, socks: list[socket.socket]):
        self._socks = socks
        #: `bodies` gave up waiting (rather than seeing the forward fail)
        self.timed_out = False

    def bodies(self, timeout: float) -> list[bytes] | None:
        """Each answer's body (whatever its status: dockerd's JSON, or its message about a
        missing object), in order; None if any did not come whole (`timed_out`: not within
        `timeout`)."""
        deadline = time.monotonic() + timeout
        received: dict[socket.socket, list[bytes]] = {s: [] for s in self._socks}
        sizes = dict.fromkeys(self._socks, 0)
        try:
            with selectors.DefaultSelector() as sel:
                for sock in self._socks:
                    sock.setblocking(False)
                    sel.register(sock, selectors.EVENT_READ, sock)
                waiting = len(self._socks)
                while waiting:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.timed_out = True
                        return None
                    for key, _ in sel.select(left):
                        sock = key.data
                        data = sock.recv(65536)
                        if not data:
                            sel.unregister(sock)
                            waiting -= 1
                            continue
                        received[sock].append(data)
                        sizes[sock] += len(data)
                        if sizes[sock] > MAX_ANSWER:
                            return None
        except OSError:
            return None
        finally:
            self.close()
        bodies = []
        for sock in self._socks:
            body = _whole_body(b"".join(received[sock]))
            if body is None:
                return None
            bodies.append(body)
        return bodies

    def close(self) -> None:
        for sock in self._socks:
            sock.close()


def _whole_body(answer: bytes) -> bytes | None:
    """The body of an HTTP/1.0 answer, if it came whole: as long as its Content-Length says,
    or else one JSON value (dockerd's answers are; a body cut short by a connection that
    dropped is not). None: the forward failed (nothing came), something else answered, or
    the body is cut short (the caller then asks another way)."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found or not head.startswith(b"HTTP/1."):
        return None
    length = re.search(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$", head)
    if length is not None:
        return body if len(body) == int(length[1]) else None
    try:
        json.loads(body)
    except ValueError:
        return None
    return body


def start(path: str, api_paths: Sequence[str], timeout: float) -> Gets | None:
    """Connect to the forwarded socket at `path` and send a GET of each API path now; None
    when the socket is not there (no forward: the caller asks another way)."""
    socks: list[socket.socket] = []
    try:
        for api_path in api_paths:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(f"GET {api_path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
    except OSError:
        for sock in socks:
            sock.close()
        return None
    return Gets(socks)
