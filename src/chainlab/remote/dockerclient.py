"""Docker SDK clients over SSH, with host keys checked.

`docker_client(inv, host)` opens its own SSH connection (the docker SDK's paramiko mode, which
runs `docker system dial-stdio` on the host). `docker_over(conn, api_version)` reuses an open
fabric connection instead: no second handshake, no `GET /version` when the version is known
(facts gather it), so provisioning builds every host's client in parallel at no cost.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.remote.target import resolve_target

if TYPE_CHECKING:
    import docker
    import fabric

_HOME_LOCK = threading.Lock()
#: A placeholder address: requests for it go to the adapter mounted on it, never to the network.
_SHARED_URL = "http://ssh.chainlab.invalid"


@contextmanager
def _home(path: Path | None) -> Iterator[None]:
    """The docker SDK reads ~/.ssh/config and ~/.ssh/known_hosts while it builds the client."""
    if path is None:
        yield
        return
    with _HOME_LOCK:
        saved = os.environ.get("HOME")
        os.environ["HOME"] = str(path)
        try:
            yield
        finally:
            if saved is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = saved


@retry(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=0.2, max=3),
       retry=retry_if_exception_type((OSError, EOFError)), reraise=True)
def _client(base_url: str, home: Path | None, timeout: int) -> "docker.DockerClient":
    import docker

    with _home(home):
        return docker.DockerClient(base_url=base_url, use_ssh_client=False, timeout=timeout)


def docker_client(inv: Inventory, host: str, timeout: int = 120) -> "docker.DockerClient":
    """A DockerClient for `host`'s engine through `ssh://USER@ADDRESS` (route safety checked)."""
    import docker
    import paramiko

    target = resolve_target(inv, host)
    port = "" if target.port == 22 else f":{target.port}"
    base_url = f"ssh://{target.user}@{target.address}{port}"
    try:
        return _client(base_url, target.ssh_home, timeout)
    except (paramiko.SSHException, docker.errors.DockerException, OSError, EOFError) as exc:
        raise ChainlabError(f"cannot reach docker on {host} ({base_url}): {exc}") from exc


def docker_over(conn: "fabric.Connection", api_version: str | None = None, timeout: int = 120) -> "docker.DockerClient":
    """A DockerClient whose requests run over `conn`'s SSH transport (`docker system dial-stdio`)."""
    import docker
    from docker.transport.sshconn import SSHHTTPAdapter

    class SharedTransportAdapter(SSHHTTPAdapter):
        """The SDK's SSH adapter on an SSH client that is already connected (and not ours to close)."""

        def __init__(self, ssh_client: Any) -> None:
            super().__init__(_SHARED_URL, timeout=timeout, shell_out=True)  # shell_out: connects nothing
            self.ssh_client = ssh_client

        def close(self) -> None:
            self.pools.clear()

        def _connect(self) -> None:
            """The SDK reconnects a closed transport with parameters it made itself: not ours."""
            raise ChainlabError(f"{conn.host}: the SSH connection docker used was closed (a deadline ended it?)")

    client = docker.DockerClient(base_url="tcp://ssh.chainlab.invalid:80", version=api_version or "1.24",
                                 timeout=timeout)
    client.api.base_url = _SHARED_URL
    client.api.mount(_SHARED_URL, SharedTransportAdapter(conn.client))
    if api_version is None:
        client.api._version = client.api._retrieve_server_version()
    return client
