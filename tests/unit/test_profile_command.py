"""`chainlab profile show|allow|reset`: checked NAME and CIDR, etcd failures as clean errors."""

from __future__ import annotations

import sys
from ipaddress import IPv4Network
from types import SimpleNamespace

import etcd
import pytest
import urllib3

from chainlab import cli
from chainlab.calico import datastore as D
from chainlab.calico import profiles
from chainlab.commands import profile as command
from chainlab.errors import ChainlabError


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
    code, out, _ = chainlab(monkeypatch, capsys, client, "profile", "allow", "net1", "--from", "10.1.2.3/8")
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
