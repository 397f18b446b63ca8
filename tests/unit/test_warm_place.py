"""Which commands the warm server takes, and when a server fits a command (chainlab.warm.place)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chainlab.warm import place


@pytest.mark.parametrize(("argv", "command"), [
    (["lab", "up"], "lab"),
    (["-i", "lab/local.yaml", "run", "3"], "run"),
    (["--inventory", "x.yaml", "analyze", "a.log"], "analyze"),
    (["--inventory=x.yaml", "nightly"], "nightly"),
    (["--version"], None),
    (["-h"], None),
    ([], None),
    (["-i"], None),
])
def test_sub_command(argv: list[str], command: str | None) -> None:
    assert place.sub_command(argv) == command


def test_interactive_and_daemon_starting_commands_are_not_served() -> None:
    assert {"ssh", "local", "vm"}.isdisjoint(place.SERVED)
    assert {"lab", "run", "nightly", "analyze"} <= place.SERVED


def test_environment_key_keeps_what_imports_may_read() -> None:
    env = {"CHAINLAB_ENGINE": "python", "PYTHONPATH": "/x", "HOME": "/root", "CHAINLAB_PERSIST": "60", "TERM": "xterm"}
    assert place.environment_key(env) == [["CHAINLAB_ENGINE", "python"], ["PYTHONPATH", "/x"]]


def test_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    where = place.directory()
    assert where == str(tmp_path / f"chainlab-warm-{os.getuid()}")
    assert os.stat(where).st_mode & 0o777 == 0o700
    os.chmod(where, 0o750)
    assert place.directory() is None
    os.rmdir(where)
    os.symlink(tmp_path, where)
    assert place.directory() is None  # a symlink is not the user's private directory


def test_end_server_trusts_a_pid_only_under_a_held_lock(tmp_path: Path) -> None:
    Path(place.lock_path(str(tmp_path))).write_text(f"{os.getpid()}\n")  # a dead server's file, a live PID
    assert place.end_server(str(tmp_path)) is None  # this process is not signalled
    assert place.end_server(str(tmp_path / "none")) is None


def test_each_installation_has_its_own_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = place.socket_path("/d")
    monkeypatch.setattr("sys.prefix", "/opt/other-venv")
    assert place.socket_path("/d") != mine


def test_a_parent_directory_another_user_could_change_is_not_used(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "run-user"
    base.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    base.chmod(0o777)  # anyone could swap our directory in it
    assert place.directory() is None
    base.chmod(0o1777)  # sticky, as /tmp: they cannot
    assert place.directory() is not None
    os.chown(base, 65534, 65534)  # another user's (e.g. root under sudo -E with a user's XDG_RUNTIME_DIR)
    assert place.directory() is None
