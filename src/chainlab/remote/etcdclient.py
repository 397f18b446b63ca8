"""python-etcd (v2 API) clients for the lab's etcd."""

from __future__ import annotations

import etcd
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from chainlab.calico.etcdconn import client as etcd_connection
from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.remote.target import etcd_endpoint


@retry(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=0.2, max=3),
       retry=retry_if_exception_type(etcd.EtcdConnectionFailed), reraise=True)
def _probe(client: etcd.Client) -> None:
    client.version  # a GET /version: fails fast if etcd is not answering


def etcd_client(inv: Inventory, read_timeout: int = 10) -> etcd.Client:
    """A connected etcd v2 client for the inventory's etcd (no redirects to other members)."""
    endpoint = etcd_endpoint(inv)
    client = etcd_connection(endpoint, read_timeout)
    try:
        _probe(client)
    except etcd.EtcdException as exc:
        raise ChainlabError(f"cannot reach etcd at {endpoint.url}: {exc}") from exc
    return client
