"""Certificates for the local lab's etcd: only holders of the client key may read or write it.

etcd listens on the lab address, which the management link puts on this machine: without
client-certificate authentication any local user could rewrite Calico's policy and fake a
scenario's result. `local up` makes a CA, a server certificate for etcd's host and one
client certificate, used by chainlab, Docker's cluster store and the Calico daemon. The CA
key stays (0600, root's, like the client key) so that etcd moving to another host gets a new
server certificate without invalidating the clients'. Everything is 0600 in a 0700 directory.

The layout only: making the certificates is `chainlab.local.certs` (cryptography's x509 is
imported by the commands that make them, not by every one that reads a lab's plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """The file names under a lab's pki directory."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "etcd-server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "etcd-server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def complete(self) -> bool:
        return all(p.exists() for p in (self.ca, self.ca_key, self.server_cert, self.server_key, self.client_cert,
                                        self.client_key))
