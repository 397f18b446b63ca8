"""Docker SDK clients over ssh:// (paramiko), with host keys checked."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import paramiko
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.remote.target import resolve_target

_HOME_LOCK = threading.Lock()


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
def _client(base_url: str, home: Path | None, timeout: int) -> docker.DockerClient:
    with _home(home):
        return docker.DockerClient(base_url=base_url, use_ssh_client=False, timeout=timeout)


def docker_client(inv: Inventory, host: str, timeout: int = 120) -> docker.DockerClient:
    """A DockerClient for `host`'s engine through `ssh://USER@ADDRESS` (route safety checked)."""
    target = resolve_target(inv, host)
    port = "" if target.port == 22 else f":{target.port}"
    base_url = f"ssh://{target.user}@{target.address}{port}"
    try:
        return _client(base_url, target.ssh_home, timeout)
    except (paramiko.SSHException, docker.errors.DockerException, OSError, EOFError) as exc:
        raise ChainlabError(f"cannot reach docker on {host} ({base_url}): {exc}") from exc
