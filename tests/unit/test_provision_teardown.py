"""Teardown decisions, with a context that runs the real shell commands on temp files."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

from chainlab.provision import commands as C
from chainlab.provision import teardown as T
from chainlab.provision.actions import Action, Command
from chainlab.provision.executor import run_step


class LocalCtx:
    """Duck-typed HostContext: reads and actions run here, in a shell, on temp paths."""

    check = False
    offline = False

    def __init__(self) -> None:
        self.facts = SimpleNamespace(ip_forward="1", init="none", has=lambda _: False)

    def read(self, argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    def perform(self, action: Action) -> str:
        assert isinstance(action, Command)
        return subprocess.run(action.argv, capture_output=True, text=True, check=True).stdout


def test_a_backup_left_by_a_cut_off_lab_up_is_put_back(tmp_path, monkeypatch):
    path = tmp_path / "90-chainlab.conf"
    monkeypatch.setattr(C, "SYSCTL_FILE", str(path))
    (tmp_path / ("90-chainlab.conf" + C.BACKUP_SUFFIX)).write_text("net.ipv4.ip_forward = 1\n")
    ctx = LocalCtx()
    result = run_step(ctx, "ip_forward", T.ip_forward)
    assert (result.status, result.detail) == ("changed", f"{path} put back")
    assert path.read_text() == "net.ipv4.ip_forward = 1\n"
    again = run_step(ctx, "ip_forward", T.ip_forward)  # nothing left to do
    assert (again.status, again.detail) == ("ok", f"{path} absent or not ours")


def test_a_foreign_file_and_no_backup_is_left_alone(tmp_path, monkeypatch):
    path = tmp_path / "90-chainlab.conf"
    path.write_text("someone's\n")
    monkeypatch.setattr(C, "SYSCTL_FILE", str(path))
    result = run_step(LocalCtx(), "ip_forward", T.ip_forward)
    assert result.status == "ok" and result.commands == []
    assert path.read_text() == "someone's\n"
