"""SSH errors that happen before any packet is sent are clean ChainlabErrors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from invoke.runners import Result

from chainlab.errors import ChainlabError
from chainlab.inventory import load_inventory
from chainlab.remote import connect, run
from chainlab.shell import command_line

ROOT = Path(__file__).resolve().parents[2]


def test_missing_known_hosts_is_a_clean_error_without_connecting(tmp_path):
    inv = load_inventory(ROOT / "inventory.yaml")
    inv = inv.model_copy(update={"ssh": inv.ssh.model_copy(update={"known_hosts": str(tmp_path / "nope")})})
    with pytest.raises(ChainlabError, match=r"master: cannot read known_hosts .*nope"):
        connect(inv, "master")


def test_command_line_quotes_every_word():
    assert command_line(["echo", "a b", "$(reboot)", 3]) == "echo 'a b' '$(reboot)' 3"


class _Conn:
    """A connection whose run() comes back as invoke's does when its timer closed the channel
    but had not returned yet: no CommandTimedOut, exit -1, after the timeout."""

    host = "master"

    def __init__(self, exited: int) -> None:
        self.exited = exited

    def run(self, line: str, **kwargs: object) -> Result:
        time.sleep(float(kwargs["timeout"]))  # type: ignore[arg-type]
        return Result(command=line, exited=self.exited)


def test_a_channel_closed_by_the_timeout_is_a_timeout_even_if_invoke_missed_it():
    with pytest.raises(ChainlabError, match=r"master: `sleep 5` did not finish within 0\.05 s"):
        run(_Conn(-1), ["sleep", "5"], timeout=0.05)  # type: ignore[arg-type]
    with pytest.raises(ChainlabError, match=r"`sleep 5` failed \(exit 1\)"):
        run(_Conn(1), ["sleep", "5"], timeout=0.05)  # type: ignore[arg-type]
