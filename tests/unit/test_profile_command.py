"""`chainlab profile show|allow|reset`: checked NAME and CIDR, etcd failures as clean errors."""

from __future__ import annotations

import http.client
import socket
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace

import etcd
import pytest
import urllib3

from chainlab import cli
from chainlab.calico import datastore as D
from chainlab.calico import profiles
from chainlab.commands import profile as command
from chainlab.calico.etcdconn import EtcdEndpoint
from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory, load_inventory
from chainlab.remote import etcdclient

ROOT = Path(__file__).resolve().parents[2]


class FakeEtcd:
    """A dict as etcd; `fail` (if set) is raised by every call."""

    def __init__(self, items: dict[str, str] | None = None, fail: BaseException | None = None):
        self.items = dict(items or {})
        self.fail = fail
        self.writes: list[str] = []

    def read(self, key: str) -> SimpleNamespace:
        if self.fail:
            raise self.fail
        if key not in self.items:
            raise etcd.EtcdKeyNotFound(key)
        return SimpleNamespace(value=self.items[key], modifiedIndex=1)

    def write(self, key: str, value: str, **_: object) -> None:
        if self.fail:
            raise self.fail
        self.writes.append(key)
        self.items[key] = value


def stored(name: str = "net1") -> dict[str, str]:
    return {key: D.dumps(D.network_profile(name)[part]) for part, key in D.profile_keys(name).items()}


def chainlab(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, client: FakeEtcd | None,
             *args: str) -> tuple[int | str | None, str, str]:
    """Run the CLI in-process (as `main` does) against `client`; (exit code, stdout, stderr)."""
    if client is not None:
        monkeypatch.setattr(command, "_client", lambda obj: client)
    monkeypatch.setattr(sys, "argv", ["chainlab", *args])
    code = cli._run()
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args", [
    ("show", "../../v1/host/master"), ("reset", "../../v1/host/master"), ("reset", "net1/rules"),
    ("allow", "net 1", "--from", "10.0.0.0/8"), ("show", ".hidden"), ("show", "net1\n"), ("show", "x" * 64)])
def test_bad_profile_name_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                           args: tuple[str, ...]) -> None:
    client = FakeEtcd(stored())
    code, _, err = chainlab(monkeypatch, capsys, client, "profile", *args)
    assert code == 2 and "Invalid value for 'NAME'" in err and "Traceback" not in err
    assert client.writes == []


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "10.0.0.0/8\n-A", "fe80::/64", "net1"])
def test_bad_from_cidr_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                        cidr: str) -> None:
    client = FakeEtcd(stored())
    code, _, err = chainlab(monkeypatch, capsys, client, "profile", "allow", "net1", "--from", cidr)
    assert code == 2 and "Invalid value for '--from'" in err and client.writes == []


def test_allow_and_reset_round_trip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    client = FakeEtcd(stored())
    code, out, _ = chainlab(monkeypatch, capsys, client, "profile", "allow", "net1", "--from", "10.0.0.0/8")
    assert code == 0 and out.strip() == "profile net1: allowed 10.0.0.0/8"
    assert profiles.show(client, "net1")["rules"]["inbound_rules"][-1] == {"action": "allow", "src_net": "10.0.0.0/8"}
    code, out, _ = chainlab(monkeypatch, capsys, client, "profile", "reset", "net1")
    assert code == 0 and out.strip() == "profile net1: reset" and client.items == stored()


@pytest.mark.parametrize("fail", [
    etcd.EtcdConnectionFailed("Connection to etcd failed due to MaxRetryError"),
    etcd.EtcdException("Raft Internal Error"),
    urllib3.exceptions.ReadTimeoutError(None, "/v2/keys", "Read timed out."),
    ConnectionRefusedError(111, "Connection refused"),
])
@pytest.mark.parametrize("args", [("show", "net1"), ("reset", "net1"), ("allow", "net1", "--from", "10.0.0.1")])
def test_etcd_failures_are_clean_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                        fail: BaseException, args: tuple[str, ...]) -> None:
    code, _, err = chainlab(monkeypatch, capsys, FakeEtcd(stored(), fail=fail), "profile", *args)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: ") and "profile 'net1'" in err and "etcd" in err


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "the rules value stored in etcd is not valid JSON"),
    ('["a list"]', "stored rules are not"),
    ('{"inbound_rules": "all"}', "stored rules are not"),
])
def test_bad_stored_rules_are_clean_errors(value: str, message: str) -> None:
    client = FakeEtcd({**stored(), D.profile_keys("net1")["rules"]: value})
    with pytest.raises(ChainlabError, match=message):
        profiles.allow_from(client, "net1", IPv4Network("10.0.0.0/8"))
    if "JSON" in message:
        with pytest.raises(ChainlabError, match=message):
            profiles.show(client, "net1")
    assert profiles.reset(client, "net1") is True and client.items == stored()


def test_missing_profile_and_library_name_check() -> None:
    with pytest.raises(ChainlabError, match="no profile 'net2' in etcd"):
        profiles.show(FakeEtcd(stored()), "net2")
    with pytest.raises(ChainlabError, match="no profile 'net2' in etcd"):
        profiles.allow_from(FakeEtcd(stored()), "net2", IPv4Network("10.0.0.0/8"))
    with pytest.raises(ChainlabError, match="profile name '../x' is not"):
        profiles.reset(FakeEtcd(), "../x")


@pytest.mark.parametrize(("cidr", "widened"), [("10.1.2.3/8", "10.0.0.0/8"), ("10.1.2.3/255.0.0.0", "10.0.0.0/8"),
                                               ("172.20.0.1/16", "172.20.0.0/16")])
def test_host_bits_in_a_cidr_are_refused_not_widened(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                     cidr: str, widened: str) -> None:
    client = FakeEtcd(stored())
    code, _, err = chainlab(monkeypatch, capsys, client, "profile", "allow", "net1", "--from", cidr)
    assert code == 2 and "has host bits set" in err and f"write {widened} for the whole network" in err
    assert client.writes == []


def test_allowing_every_source_warns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    client = FakeEtcd(stored())
    code, out, err = chainlab(monkeypatch, capsys, client, "profile", "allow", "net1", "--from", "0.0.0.0/0")
    assert code == 0 and out.strip() == "profile net1: allowed 0.0.0.0/0"
    assert "warning: 0.0.0.0/0 admits every source address to profile net1" in err
    code, _, err = chainlab(monkeypatch, capsys, client, "profile", "allow", "net1", "--from", "10.0.0.0/8")
    assert code == 0 and "warning" not in err


def test_reset_of_an_unknown_profile_is_an_error_and_writes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    client = FakeEtcd(stored())
    code, _, err = chainlab(monkeypatch, capsys, client, "profile", "reset", "NEWNAME")
    assert code == 1 and "no profile 'NEWNAME' in etcd" in err and client.writes == []
    only_tags = FakeEtcd({D.profile_keys("net1")["tags"]: '["net1"]'})
    assert profiles.reset(only_tags, "net1") is True and only_tags.items == stored()


# --- etcd that does not answer: real sockets on loopback --------------------------------


@pytest.fixture
def local_inventory() -> Inventory:
    return load_inventory(ROOT / "lab" / "local.yaml")


def _etcd_at(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setattr(etcdclient, "etcd_endpoint", lambda inv: EtcdEndpoint("127.0.0.1", port))


def test_etcd_refusing_connections_is_retried_then_a_clean_error(monkeypatch: pytest.MonkeyPatch,
                                                                 local_inventory: Inventory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections to it are refused
    _etcd_at(monkeypatch, port)
    attempts = []
    monkeypatch.setattr(etcdclient, "RETRY_WAIT_S", 0.2)
    real_pool = etcdclient.urllib3.PoolManager

    def counting_pool(*args: object, **kwargs: object) -> object:
        pool = real_pool(*args, **kwargs)
        request = pool.request
        pool.request = lambda *a, **k: attempts.append(1) or request(*a, **k)  # type: ignore[method-assign]
        return pool

    monkeypatch.setattr(etcdclient.urllib3, "PoolManager", counting_pool)
    started = time.monotonic()
    with pytest.raises(ChainlabError) as failed:
        etcdclient.etcd_client(local_inventory, read_timeout=1, retry_for=1)
    assert time.monotonic() - started < 3 and len(attempts) >= 3
    assert str(failed.value) == (f"cannot reach etcd at http://127.0.0.1:{port}: connection refused"
                                 " (retried for 1 s; is the lab up?)")


def test_a_stopped_etcd_costs_seconds_not_40(monkeypatch: pytest.MonkeyPatch, local_inventory: Inventory) -> None:
    """A SIGSTOPped etcd accepts connections (the kernel does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        _etcd_at(monkeypatch, listener.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(ChainlabError, match=r"no answer within 1 s \(retried for 2 s"):
            etcdclient.etcd_client(local_inventory, read_timeout=1, retry_for=2)
        assert time.monotonic() - started < 4


@pytest.mark.parametrize(("exc", "said"), [
    (urllib3.exceptions.MaxRetryError(None, "/version", urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")), "connection refused"),
    (urllib3.exceptions.MaxRetryError(None, "/version", urllib3.exceptions.ReadTimeoutError(None, "/version", "x")),
     "no answer within 2 s"),
    (etcd.EtcdConnectionFailed("failed", cause=urllib3.exceptions.ProtocolError("Connection aborted.",
                                                                                ConnectionResetError(104, "Connection reset by peer"))),
     "connection reset by peer"),
    (etcd.EtcdConnectionFailed("failed", cause=ConnectionRefusedError(111, "Connection refused")), "connection refused"),
    (http.client.RemoteDisconnected("Remote end closed connection without response"),
     "remote end closed connection without response"),
])
def test_every_shape_of_etcd_failure_reads_as_one_reason(exc: BaseException, said: str) -> None:
    assert isinstance(exc, etcdclient.ETCD_ERRORS)
    assert etcdclient.reason(exc, 2) == said


def test_etcd_tls_files_that_are_no_regular_files_are_said_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLS file that is a FIFO hung `profile show`; a missing one was retried as a network
    error for 4 s and named no file. Nothing connects (the connection is replaced)."""
    import os

    from chainlab.calico.etcdconn import EtcdTLS
    from chainlab.errors import InputError

    os.mkfifo(tmp_path / "ca.fifo")
    (tmp_path / "cert.pem").write_text("x")
    monkeypatch.setattr(etcdclient, "etcd_connection", lambda *a: pytest.fail("connected"))
    for ca, said in ((tmp_path / "ca.fifo", "etcd.tls.ca: a FIFO, not a regular file"),
                     (tmp_path / "none.pem", "etcd.tls.ca: No such file")):
        tls = EtcdTLS(ca=str(ca), cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "cert.pem"))
        monkeypatch.setattr(etcdclient, "etcd_endpoint", lambda inv, tls=tls: EtcdEndpoint("192.0.2.1", 2379, tls))
        started = time.monotonic()
        with pytest.raises(InputError, match=said):
            etcdclient.etcd_client(load_inventory(ROOT / "inventory.yaml"))
        assert time.monotonic() - started < 1
