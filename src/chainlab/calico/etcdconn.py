"""python-etcd (v2 API) clients for an etcd endpoint, with client-certificate TLS when given.

Shared by chainlab (provisioning, profiles, scenario runs) and the Calico daemon on the
hosts, which has nothing of chainlab but this package: no pydantic, no fabric here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import etcd


@dataclass(frozen=True)
class EtcdTLS:
    """Paths of the CA that signed etcd's certificate and of our client certificate and key."""

    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class EtcdEndpoint:
    host: str
    port: int
    tls: EtcdTLS | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str, tls: EtcdTLS | None = None) -> "EtcdEndpoint":
        """From `http://HOST:PORT` or `https://HOST:PORT` (https needs `tls`)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
            raise ValueError(f"etcd endpoint {url!r} is not http(s)://HOST:PORT")
        if (parts.scheme == "https") != (tls is not None):
            raise ValueError(f"etcd endpoint {url!r}: https goes with --etcd-ca/--etcd-cert/--etcd-key, http without")
        return cls(parts.hostname, parts.port, tls)


def client(endpoint: EtcdEndpoint, read_timeout: float = 10) -> "etcd.Client":
    """An unconnected client (python-etcd connects on first use); no redirects to other members,
    and no retries of urllib3's own: each of those waited a whole read timeout (a stopped etcd
    cost 40 s); callers retry, for a time they choose."""
    import ssl

    import urllib3

    from chainlab.calico.etcdlib import etcd

    kwargs: dict[str, object] = {}
    pool: dict[str, Any] = {"timeout": read_timeout, "retries": False}
    if endpoint.tls:
        kwargs = {"protocol": "https", "cert": (endpoint.tls.cert, endpoint.tls.key), "ca_cert": endpoint.tls.ca}
        pool |= {"cert_file": endpoint.tls.cert, "key_file": endpoint.tls.key, "ca_certs": endpoint.tls.ca,
                 "cert_reqs": ssl.CERT_REQUIRED}
    made = etcd.Client(host=endpoint.host, port=endpoint.port, allow_redirect=False, read_timeout=read_timeout,
                       **kwargs)
    made.http = urllib3.PoolManager(num_pools=10, **pool)
    return made
