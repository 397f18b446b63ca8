"""Reaching lab hosts: fabric connections, docker SDK and etcd clients.

All factories take an inventory and check, for the local lab, that the route to the host
goes through the lab's own link before any connection is opened.
"""

from chainlab.remote.dockerclient import docker_client, docker_over
from chainlab.remote.etcdclient import etcd_client
from chainlab.remote.ssh import connect, connection, run
from chainlab.remote.target import etcd_endpoint, resolve_target

__all__ = [
    "connect", "connection", "docker_client", "docker_over", "etcd_endpoint",
    "etcd_client", "resolve_target", "run",
]
