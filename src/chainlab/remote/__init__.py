"""Reaching lab hosts: fabric connections, docker SDK and etcd clients.

All factories take an inventory and ask its provider where a host is (and whether it is
safe to connect: the local lab's route check) before any connection is opened. Each is
imported on first use: python-etcd and the docker SDK cost a tenth of a second that a
`lab up` spends better connecting meanwhile.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "connect": "ssh", "connection": "ssh", "run": "ssh",
    "docker_client": "dockerclient", "docker_over": "dockerclient",
    "etcd_client": "etcdclient", "etcd_endpoint": "target", "resolve_target": "target",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"chainlab.remote.{_WHERE[name]}"), name)
