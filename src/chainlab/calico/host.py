"""What the Calico daemon touches on its own host besides iptables: links and the Docker API.

Runs where the daemon runs (inside a lab host), without a shell; names were validated by
the caller (`chainlab.calico.plugin`).
"""

from __future__ import annotations

import http.client
import json
import socket

from chainlab.calico.apply import ApplyError, run

DOCKER_SOCK = "/run/docker.sock"


class IpLinks:
    """veth pairs with iproute2 (what the libnetwork plugin does with netlink)."""

    def create_veth(self, host_side: str, temp_side: str) -> None:
        run(["ip", "link", "add", host_side, "type", "veth", "peer", "name", temp_side])
        run(["ip", "link", "set", temp_side, "up"])
        run(["ip", "link", "set", host_side, "up"])

    def delete(self, name: str) -> bool:
        try:
            run(["ip", "link", "del", name])
            return True
        except ApplyError:
            return False  # already gone (e.g. with the container's namespace)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def docker_network_name(network_id: str, sock: str = DOCKER_SOCK, timeout: float = 10.0) -> str:
    """`docker network inspect ID` → its name, as the libnetwork plugin asks Docker."""
    conn = _UnixConnection(sock, timeout)
    try:
        conn.request("GET", f"/networks/{network_id}")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"Network {network_id} inspection error: {response.status} {body[:200]!r}")
    name = json.loads(body).get("Name")
    if not isinstance(name, str) or not name:
        raise RuntimeError(f"Network {network_id} has no name")
    return name
