"""SSH errors that happen before any packet is sent are clean ChainlabErrors."""

from __future__ import annotations

import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

import pytest

from chainlab.errors import ChainlabError
from chainlab.inventory import load_inventory
from chainlab.providers import Target
from chainlab.remote import connect, connection
from chainlab.shell import command_line

ROOT = Path(__file__).resolve().parents[2]


def test_missing_known_hosts_is_a_clean_error_without_connecting(tmp_path):
    inv = load_inventory(ROOT / "inventory.yaml")
    inv = inv.model_copy(update={"ssh": inv.ssh.model_copy(update={"known_hosts": str(tmp_path / "nope")})})
    with pytest.raises(ChainlabError, match=r"master: cannot read known_hosts .*nope"):
        connect(inv, "master")


def test_command_line_quotes_every_word():
    assert command_line(["echo", "a b", "$(reboot)", 3]) == "echo 'a b' '$(reboot)' 3"



def test_the_runner_knows_its_timeout_fired_before_the_timer_thread_returns(tmp_path):
    """invoke's own answer (timer thread finished?) is still no while the thread closes the
    channel; the runner's connections use records the kill first."""
    target = Target("master", IPv4Address("192.0.2.1"), "root", 22, None, tmp_path / "known_hosts", 5.0, None)
    (tmp_path / "known_hosts").touch()
    runner = connection(target)._remote_runner()
    runner.channel = SimpleNamespace(close=lambda: None)
    runner._timer = threading.Timer(60, lambda: None)
    runner._timer.start()
    try:
        assert not runner.timed_out  # running, not killed
        runner.kill()  # what the timer does, here while the timer thread is still alive
        assert runner.timed_out
    finally:
        runner._timer.cancel()


def test_the_runner_wakes_when_the_exit_status_arrives_not_at_its_next_poll(tmp_path):
    """invoke's wait sleeps `input_sleep` between looks; the runner waits on paramiko's event
    instead. With an hour between looks, only an event-driven wait comes back."""
    target = Target("master", IPv4Address("192.0.2.1"), "root", 22, None, tmp_path / "known_hosts", 5.0, None)
    (tmp_path / "known_hosts").touch()
    runner = connection(target)._remote_runner()
    status = threading.Event()
    runner.channel = SimpleNamespace(status_event=status, exit_status_ready=status.is_set)
    runner.threads = {}
    runner.input_sleep = 3600
    waiting = threading.Thread(target=runner.wait, daemon=True)
    waiting.start()
    time.sleep(0.05)
    assert waiting.is_alive()  # the command runs: wait waits
    status.set()  # what paramiko does when the exit status (or the channel's close) arrives
    waiting.join(30)
    assert not waiting.is_alive()


def _public_key(kind: str = "ed25519") -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    return private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def test_each_connection_holds_its_own_hosts_keys_from_one_parse_of_known_hosts(tmp_path, monkeypatch):
    import paramiko
    from paramiko.hostkeys import HostKeyEntry

    from chainlab.remote import ssh

    keys = {f"192.0.2.{i}": _public_key() for i in range(1, 4)}
    ecdsa = _public_key("ecdsa")
    hashed = HostKeyEntry.from_line(f"192.0.2.7 {ecdsa}").hostnames[0]
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"{addr},node{i} {key}\n" for i, (addr, key) in enumerate(keys.items()))
                     + f"192.0.2.2 {ecdsa}\n"  # a second key type for a host
                     + f"[192.0.2.9]:2222 {keys['192.0.2.1']}\n"
                     + f"{paramiko.HostKeys.hash_host(hashed)} {ecdsa}\n")  # hashed, as HashKnownHosts writes
    parses = []

    class Counted(paramiko.HostKeys):
        def __init__(self, filename: str) -> None:
            parses.append(filename)
            time.sleep(0.05)  # long enough for the other threads to ask meanwhile
            super().__init__(filename)

    monkeypatch.setattr(ssh, "_KNOWN_HOSTS", {})
    monkeypatch.setattr(paramiko, "HostKeys", Counted)

    def held(address: str, port: int = 22) -> list[str]:
        target = Target("h", IPv4Address(address), "root", port, None, known, 5.0, None)
        host_keys = connection(target).client.get_host_keys()
        return sorted(f"{name} {key.get_name()} {key.get_base64()}" for name in host_keys.keys()
                      for key in host_keys[name].values())

    from concurrent.futures import ThreadPoolExecutor

    two = sorted([f"192.0.2.2 {keys['192.0.2.2']}", f"192.0.2.2 {ecdsa}"])
    with ThreadPoolExecutor(8) as pool:  # as lab up connects: every host at once
        assert list(pool.map(lambda _: held("192.0.2.2"), range(8))) == [two] * 8
    assert held("192.0.2.9", 2222) == [f"[192.0.2.9]:2222 {keys['192.0.2.1']}"]
    assert held("192.0.2.7") == [f"192.0.2.7 {ecdsa}"]
    assert held("192.0.2.9") == []  # on port 22 it is another host: unknown, refused when it answers
    assert len(parses) == 1
    keys["192.0.2.2"] = _public_key()  # the file rewritten (a lab rebuilt), even to the same size: read again
    known.write_text(f"192.0.2.2 {keys['192.0.2.2']}\n")
    assert held("192.0.2.2") == [f"192.0.2.2 {keys['192.0.2.2']}"]
    assert len(parses) == 2


def test_the_ssh_socket_acknowledges_each_read_at_once():
    """TCP_QUICKACK (which Linux drops again) is set after every read, so a server's small
    unsolicited packets are acknowledged at once and its next answer does not wait ~40 ms
    for a delayed acknowledgement (Nagle). Over loopback."""
    import socket

    from chainlab.remote.ssh import _QuickAckSocket

    with socket.create_server(("127.0.0.1", 0)) as server:
        plain = socket.create_connection(server.getsockname())
        client = _QuickAckSocket(fileno=plain.detach())
        peer, _ = server.accept()
        with client, peer:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)  # delayed acknowledgements
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
            peer.sendall(b"hostkeys")
            assert client.recv(64) == b"hostkeys"
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_without_tcp_quickack_the_connection_uses_a_plain_socket(tmp_path, monkeypatch):
    """Off Linux (no TCP_QUICKACK) the SSH socket stays a plain one, with TCP_NODELAY set.
    Over loopback; fabric's own open is replaced by a look at the socket it would use."""
    import socket

    import chainlab.remote.ssh as ssh

    seen = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        target = Target("master", IPv4Address("127.0.0.1"), "root", port, None, tmp_path / "known_hosts", 5.0, None)
        (tmp_path / "known_hosts").touch()
        for quickack in (None, socket.TCP_QUICKACK):
            monkeypatch.setattr(ssh, "_QUICKACK", quickack)
            conn = connection(target)
            monkeypatch.setattr(conn, "open", lambda conn=conn: seen.append(conn.connect_kwargs["sock"]))
            ssh._open(conn)
            server.accept()[0].close()
    assert [type(s) for s in seen] == [socket.socket, ssh._QuickAckSocket]
    for sock in seen:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1 and sock.gettimeout() == 5.0
        sock.close()
