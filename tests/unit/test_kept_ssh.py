"""Kept SSH connections: their sockets' names, the setting, OpenSSH's mux messages, dockerd
asked through a forward, and the kernel route lookup the local lab asks before each connection. (A real master, sshd and
lab: tests/integration/test_provision.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

import pytest

from chainlab.errors import ChainlabError
from chainlab.inventory import load_inventory
from chainlab.providers import Target
from chainlab.provision import runner
from chainlab.provision.dockerview import NOT_ANSWERED, DockerLook, DockerView
from chainlab.remote import forward, kept, mux
from chainlab.runtime_dir import runtime_directory

ROOT = Path(__file__).resolve().parents[2]


def _target(tmp_path: Path, known: str = "10.0.0.1 ssh-ed25519 AAAA\n") -> Target:
    (tmp_path / "known_hosts").write_text(known)
    return Target("slave1", IPv4Address("10.0.0.1"), "root", 22, tmp_path / "id", tmp_path / "known_hosts", 5.0, None)


def test_the_setting_is_seconds_and_a_bad_value_says_what_to_give(monkeypatch):
    monkeypatch.delenv(kept.PERSIST_ENV, raising=False)
    assert kept.persist_seconds() == kept.DEFAULT_PERSIST_S
    monkeypatch.setenv(kept.PERSIST_ENV, "0")
    assert kept.persist_seconds() == 0
    monkeypatch.setenv(kept.PERSIST_ENV, "1m")
    with pytest.raises(ChainlabError, match=r"CHAINLAB_SSH_PERSIST='1m': give the seconds"):
        kept.persist_seconds()


def test_none_kept_when_off(monkeypatch, tmp_path):
    monkeypatch.setenv(kept.PERSIST_ENV, "0")
    assert kept.kept_for("lab", _target(tmp_path)) is None


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_a_master_per_lab_and_per_known_hosts_text(monkeypatch, tmp_path):
    """A lab rebuilt with new host keys (new known_hosts text) never reuses a master that
    checked the old ones; another lab at the same address neither."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv(kept.PERSIST_ENV, "30")
    (tmp_path / "t").mkdir()
    first = kept.kept_for("lab", _target(tmp_path / "t"))
    assert first is not None
    again = kept.kept_for("lab", _target(tmp_path / "t"))
    rekeyed = kept.kept_for("lab", _target(tmp_path / "t", "10.0.0.1 ssh-ed25519 BBBB\n"))
    other_lab = kept.kept_for("other", _target(tmp_path / "t"))
    assert again == first
    assert len({first.control_path, rekeyed.control_path, other_lab.control_path}) == 3  # type: ignore[union-attr]
    assert Path(first.control_path).parent.stat().st_mode & 0o777 == 0o700
    argv = first.command("true")
    assert argv[0] == "ssh" and argv[-3:] == ["root@10.0.0.1", "--", "true"]
    assert "StrictHostKeyChecking=yes" in argv and "ControlPersist=30" in argv and "BatchMode=yes" in argv


def test_no_master_without_a_private_directory(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # writable by others, no sticky bit: not a place for sockets
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    monkeypatch.setenv(kept.PERSIST_ENV, "30")
    assert kept.kept_for("lab", _target(tmp_path)) is None


def _message(kind: int, *fields: bytes) -> bytes:
    body = struct.pack(">I", kind) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def test_the_masters_messages_up_to_the_exit_status():
    session = mux.Mux("/nonexistent")
    opened = _message(mux.SESSION_OPENED, struct.pack(">II", 1, 7))
    exited = _message(mux.EXIT_MESSAGE, struct.pack(">II", 7, 3))
    rest, status, began = session._parse(opened + exited[:5])
    assert (rest, status, began) == (exited[:5], None, True)  # a message cut in two waits for its end
    assert session._parse(rest + exited[5:]) == (b"", 3, False)


def test_a_refusal_or_a_foreign_message_is_an_error():
    session = mux.Mux("/nonexistent")
    refused = _message(mux.PERMISSION_DENIED, struct.pack(">I", 1), struct.pack(">I", 6) + b"denied")
    with pytest.raises(mux.MuxError, match="denied"):
        session._parse(refused)
    with pytest.raises(mux.MuxError, match="unknown message 0x12345678"):
        session._parse(_message(0x12345678))
    with pytest.raises(mux.MuxError, match="a message of 1073741824 bytes"):
        session._parse(struct.pack(">I", 1 << 30) + b"\0" * 8)


def test_no_master_listening_is_said_as_such(tmp_path):
    with pytest.raises(mux.NoMaster):
        mux.Mux(str(tmp_path / "none.sock")).run("true", 1)


_ROUTES = """
import json, sys
from ipaddress import IPv4Address
from chainlab.local.netlink import route_device
print(json.dumps({a: route_device(IPv4Address(a)) for a in sys.argv[1:]}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare and ip")
def test_the_kernels_route_as_ip_route_get_says_it(tmp_path):
    """In a network namespace of its own (nothing of the machine's routing touched): a
    route through a link, an unreachable, a prohibited and a blackhole route, and none."""
    script = tmp_path / "routes.py"
    script.write_text(_ROUTES)
    setup = ("ip link set lo up && ip link add cl-t0 type veth peer name cl-t1 && ip link set cl-t0 up"
             " && ip route add 10.9.1.0/24 dev cl-t0 && ip route add unreachable 10.9.2.0/24"
             " && ip route add prohibit 10.9.3.0/24 && ip route add blackhole 10.9.4.0/24")
    addresses = ["127.0.0.1", "10.9.1.5", "10.9.2.5", "10.9.3.5", "10.9.4.5", "10.9.9.9"]
    asked = " && ".join(f"{{ ip -j route get {a} 2>/dev/null || echo '[]'; }}" for a in addresses)
    shell = f"{setup} && {sys.executable} {script} {' '.join(addresses)} && {asked}"
    out = subprocess.run(["unshare", "--net", "sh", "-c", shell], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = json.loads(out[0])
    theirs = [(json.loads(line) or [{}])[0].get("dev") for line in out[1:]]
    assert ours == dict(zip(addresses, theirs))
    assert ours == {"127.0.0.1": "lo", "10.9.1.5": "cl-t0", "10.9.2.5": None, "10.9.3.5": None,
                    "10.9.4.5": None, "10.9.9.9": None}


def test_target_fields_feed_the_name(tmp_path):
    base = _target(tmp_path)
    names = {kept._target_key(t, f) for t, f in ((base, None), (replace(base, port=2222), None),
                                                  (replace(base, user="admin"), None),
                                                  (replace(base, key_filename=tmp_path / "other"), None),
                                                  (base, "/var/run/docker.sock"))}
    assert len(names) == 5  # the forward too: a master without it is another master


def _server(path: Path, answer: bytes | None) -> threading.Thread:
    """A one-request-per-connection server on a unix socket: `answer` to each request, or
    (None) the connection held open without a word."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)

    def serve() -> None:
        held = []
        with listener:
            for _ in range(2):
                conn, _ = listener.accept()
                request = conn.recv(4096)
                if answer is None:
                    held.append(conn)
                    continue
                conn.sendall(answer.replace(b"PATH", request.split()[1]))
                conn.close()
            time.sleep(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_gets_read_each_answer_whatever_its_status(tmp_path):
    sock = tmp_path / "fwd"
    _server(sock, b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"message\": \"PATH\"}")
    gets = forward.start(str(sock), ["/images/a/json", "/networks/n"], 5)
    assert gets is not None
    assert gets.bodies(5) == [b'{"message": "/images/a/json"}', b'{"message": "/networks/n"}']


def test_gets_without_a_forward_or_an_answer(tmp_path):
    assert forward.start(str(tmp_path / "none"), ["/images/a/json"], 1) is None
    _server(tmp_path / "mute", None)
    gets = forward.start(str(tmp_path / "mute"), ["/images/a/json"], 5)
    assert gets is not None and gets.bodies(0.3) is None and gets.timed_out
    _server(tmp_path / "closes", b"")  # the forward opened, the host's end failed: nothing comes
    gets = forward.start(str(tmp_path / "closes"), ["/images/a/json"], 5)
    assert gets is not None and gets.bodies(5) is None and not gets.timed_out


class _StandIn:
    """A host session whose batch answers are given, and whose forward answers `bodies`."""

    def __init__(self, direct: str, bodies: list[bytes] | None, timed_out: bool = False):
        self.direct, self._bodies, self._timed_out, self.asked = direct, bodies, timed_out, []
        self.kept_lost = False

    def gets(self, paths, timeout):
        outer = self

        class Gets:
            timed_out = outer._timed_out

            def bodies(self, timeout):
                return outer._bodies

            def close(self):
                pass

        return Gets()

    def read(self, argv, timeout=None):
        commands = argv[2]  # `sh -c BATCH`: its framing token read off the script
        self.asked.append(commands)
        token = re.search(r"@@([0-9a-f]+) 0 begin", commands)[1]
        frames = "".join(f"@@{token} {i} begin\n{out}\n@@{token} {i} 0\n"
                         for i, out in enumerate(["os_id=debian", "raw rules", self.direct]))
        return SimpleNamespace(stdout=frames, exited=0)


def _gather(session):
    inv = load_inventory(ROOT / "lab" / "local.yaml")
    look = DockerLook(["mybusybox"], ["web1"], ["net1"])
    probes = [["iptables", "-S"], look.argv()]
    return runner.gather_with_docker(inv, "master", session, probes, look, 10), look


def test_dockerd_asked_through_the_forward_answers_the_docker_probe():
    session = _StandIn("direct", [b'{"RepoTags": ["mybusybox:latest"]}', b"{}"])
    (_, answers), look = _gather(session)
    assert look.argv()[2] not in session.asked[0] and look.direct_argv()[2] in session.asked[0]  # no curl on the host
    assert answers == {0: (0, "raw rules"), 1: (0, '{"RepoTags": ["mybusybox:latest"]}\n{}')}
    assert "mybusybox" in DockerView.parse(answers[1][1]).images


def test_where_docker_points_elsewhere_or_the_forward_fails_the_probe_runs_later():
    for session in (_StandIn("", [b"{}"]), _StandIn("direct", None)):
        (_, answers), _ = _gather(session)
        assert answers == {0: (0, "raw rules")}  # unanswered: a step that needs it runs it
    (_, answers), _ = _gather(_StandIn("direct", None, timed_out=True))
    assert answers[1][0] in NOT_ANSWERED  # dockerd did not answer: said as the probe says it


def test_a_master_that_does_not_take_the_session_is_stuck(monkeypatch, tmp_path):
    """A listener that accepts and says nothing (a stopped master: the kernel queues the
    connection) is given up on after the handshake's seconds, with its PID for the caller."""
    monkeypatch.setattr(mux, "HANDSHAKE_S", 0.3)
    path = tmp_path / "master.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    with listener:
        started = time.monotonic()
        with pytest.raises(mux.Stuck):
            mux.Mux(str(path)).run("true", None)  # no timeout of its own: the handshake's still holds
        assert time.monotonic() - started < 3


def test_only_the_master_named_by_its_socket_is_killed(tmp_path):
    """A process is killed only if its command line is that master's, `ssh: PATH [mux]`
    (here none is: nothing is killed, this test's process included); the socket goes."""
    path = tmp_path / "master.sock"
    path.touch()
    assert not kept.kill_master(str(path)) and not path.exists()


def test_a_body_cut_short_is_no_answer():
    whole = b'{"Id": "sha256:1", "RepoTags": ["mybusybox:latest"]}'
    assert forward._whole_body(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + whole) == whole
    assert forward._whole_body(b"HTTP/1.0 200 OK\r\n\r\n" + whole[:20]) is None  # no length: must be whole JSON
    sized = f"HTTP/1.0 200 OK\r\nContent-Length: {len(whole)}\r\n\r\n".encode()
    assert forward._whole_body(sized + whole) == whole and forward._whole_body(sized + whole[:-1]) is None
    assert forward._whole_body(b"SSH-2.0-OpenSSH\r\n") is None  # something else answered


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_ending_a_lab_removes_its_forwards_sockets_even_when_their_masters_ended(monkeypatch, tmp_path):
    """OpenSSH leaves a forward's socket behind when its master ends (idle); the lab's end
    removes them, and nothing of another lab nor OpenSSH's temporary names."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    where = Path(runtime_directory("ssh"))
    mine, other = kept._lab_key("lab"), kept._lab_key("other")
    names = [f"{mine}-{'a' * 24}.fwd", f"{mine}-{'b' * 24}.fwd", f"{other}-{'a' * 24}.fwd",
             f"{mine}-{'c' * 24}.Xy3kQ0pLmN8rT2vW"]
    for name in names:
        (where / name).touch()
    assert kept.end("lab") == 0  # no master was there to end
    assert sorted(p.name for p in where.iterdir()) == sorted(names[2:])


def test_ending_a_lab_ends_its_masters_that_lost_their_socket(monkeypatch, tmp_path):
    """A master found by its command line alone (its socket removed or replaced, or on its
    way out after answering) is ended too; another lab's is left alone."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    where = runtime_directory("ssh")
    mine, other = (os.path.join(where, f"{kept._lab_key(lab)}-{'a' * 24}") for lab in ("lab", "other"))
    masters = {path: subprocess.Popen(["bash", "-c", f'exec -a "ssh: {path} [mux]" sleep 60']) for path in (mine, other)}
    try:
        deadline = time.monotonic() + 30  # until both have their title (a loaded machine may take a while)
        while len(kept._masters(lambda path: path in masters)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kept.end("lab") == 1
        assert masters[mine].wait(5) == -signal.SIGTERM and masters[other].poll() is None
    finally:
        for proc in masters.values():
            proc.kill()
            proc.wait()


def test_a_warm_lab_up_loads_no_ssh_library():
    """What a warm `lab up` runs (the CLI, the runner, its steps, the kept connection) loads
    neither fabric, invoke, paramiko nor the docker SDK: they come with the first connection
    of chainlab's own."""
    code = ("import sys\nimport chainlab.cli, chainlab.commands.lab, chainlab.provision.runner, chainlab.provision.steps\n"
            "import chainlab.provision.teardown, chainlab.networks.calico, chainlab.networks.bridge\n"
            "import chainlab.remote.session, chainlab.remote.kept, chainlab.remote.forward, chainlab.local.link_guard\n"
            "print(sorted(m for m in ('fabric', 'invoke', 'paramiko', 'docker') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
