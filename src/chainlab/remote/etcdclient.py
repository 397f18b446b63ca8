"""python-etcd (v2 API) clients for the lab's etcd.

python-etcd 0.4.5 turns connection errors into EtcdConnectionFailed for key reads and
writes, but not in `Client.version`, where urllib3's own exception comes through
(MaxRetryError with urllib3 2.x): `ETCD_ERRORS` is what any call may raise, whatever the
urllib3 version. urllib3's own retries are off (`chainlab.calico.etcdconn`): with its
default (3 retries, each waiting a whole read timeout) a stopped etcd cost 40 s; chainlab
retries instead, for a bounded time, and then says why in one line. python-etcd's error
log lines are silenced: the error chainlab reports says it all.
"""

from __future__ import annotations

import http.client
import logging
import re
from pathlib import Path

import urllib3
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from chainlab.calico.etcdconn import client as etcd_connection
from chainlab.calico.etcdlib import etcd
from chainlab.errors import ChainlabError
from chainlab.files import check_input_file
from chainlab.inventory import Inventory
from chainlab.providers import provider_class
from chainlab.remote.target import etcd_endpoint

#: What reaching etcd can raise (python-etcd wraps most connection errors, not all).
ETCD_ERRORS = (etcd.EtcdException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
#: Of those, the ones worth another try: etcd not (yet) answering.
RETRIED = (etcd.EtcdConnectionFailed, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
RETRY_WAIT_S = 0.5

logging.getLogger("etcd").addHandler(logging.NullHandler())


def _inner(exc: BaseException) -> BaseException | None:
    """The exception `exc` wraps: python-etcd's `cause`, urllib3's `reason`, an exception
    among the args (urllib3's ProtocolError), or Python's own chaining."""
    for value in (getattr(exc, "cause", None), getattr(exc, "reason", None), *exc.args, exc.__cause__):
        if isinstance(value, BaseException) and value is not exc:
            return value
    return None


def reason(exc: BaseException, read_timeout: float) -> str:
    """The innermost cause of an etcd failure, in words (`connection refused`, ...)."""
    seen = exc
    for _ in range(10):
        inner = _inner(seen)
        if inner is None:
            break
        seen = inner
    text = re.sub(r"<[^>]*>:?\s*|^None: ", "", str(seen)).strip()
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if isinstance(seen, urllib3.exceptions.NewConnectionError) and errno_text:
        said = errno_text[1]
    elif isinstance(seen, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return f"no answer within {read_timeout:g} s"
    elif isinstance(seen, OSError) and seen.strerror:
        said = seen.strerror
    else:
        said = errno_text[1] if errno_text else text or type(seen).__name__
    return said[0].lower() + said[1:] if said[:1].isupper() and said[1:2].islower() else said


def etcd_client(inv: Inventory, read_timeout: float = 10, retry_for: float = 5) -> etcd.Client:
    """A connected etcd v2 client for the inventory's etcd (no redirects to other members).

    Connecting is retried for `retry_for` seconds; each request waits at most
    `read_timeout` seconds for an answer.
    """
    endpoint = etcd_endpoint(inv)
    if endpoint.tls is not None:  # a missing or special file is said at once, not retried as a network error
        for what, path in (("etcd.tls.ca", endpoint.tls.ca), ("etcd.tls.cert", endpoint.tls.cert),
                           ("etcd.tls.key", endpoint.tls.key)):
            check_input_file(Path(path), what)
    client = etcd_connection(endpoint, read_timeout)

    @retry(stop=stop_after_delay(retry_for), wait=wait_fixed(RETRY_WAIT_S),
           retry=retry_if_exception_type(RETRIED), reraise=True)
    def probe() -> None:
        client.version  # a GET /version: fails fast if etcd is not answering

    try:
        probe()
    except ETCD_ERRORS as exc:
        hint = "; is the lab up?" if provider_class(inv.provider).builds_hosts else ""
        raise ChainlabError(f"cannot reach etcd at {endpoint.url}: {reason(exc, read_timeout)}"
                            f" (retried for {retry_for:g} s{hint})") from None
    return client
