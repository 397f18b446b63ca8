"""Teardown decisions, with a context that runs the real shell commands on temp files."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

from chainlab.provision import commands as C
from chainlab.provision import teardown as T
from chainlab.shell import command_line


class LocalCtx:
    """Duck-typed HostContext: reads and changes run here, in a shell, on temp paths."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.facts = SimpleNamespace(ip_forward="1", init="none", has=lambda _: False)

    def read(self, argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    def change(self, argv: list[str]) -> str:
        self.commands.append(command_line(argv))
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_a_backup_left_by_a_cut_off_lab_up_is_put_back(tmp_path, monkeypatch):
    path = tmp_path / "90-chainlab.conf"
    monkeypatch.setattr(C, "SYSCTL_FILE", str(path))
    (tmp_path / ("90-chainlab.conf" + C.BACKUP_SUFFIX)).write_text("net.ipv4.ip_forward = 1\n")
    ctx = LocalCtx()
    assert T.ip_forward(ctx) == ("changed", f"{path} put back")
    assert path.read_text() == "net.ipv4.ip_forward = 1\n"
    assert T.ip_forward(ctx) == ("ok", f"{path} absent or not ours")  # nothing left to do


def test_a_foreign_file_and_no_backup_is_left_alone(tmp_path, monkeypatch):
    path = tmp_path / "90-chainlab.conf"
    path.write_text("someone's\n")
    monkeypatch.setattr(C, "SYSCTL_FILE", str(path))
    ctx = LocalCtx()
    assert T.ip_forward(ctx)[0] == "ok" and ctx.commands == []
    assert path.read_text() == "someone's\n"
