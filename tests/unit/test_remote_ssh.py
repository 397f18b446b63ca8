"""SSH errors that happen before any packet is sent are clean ChainlabErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainlab.errors import ChainlabError
from chainlab.inventory import load_inventory
from chainlab.remote import connect
from chainlab.shell import command_line

ROOT = Path(__file__).resolve().parents[2]


def test_missing_known_hosts_is_a_clean_error_without_connecting(tmp_path):
    inv = load_inventory(ROOT / "inventory.yaml")
    inv = inv.model_copy(update={"ssh": inv.ssh.model_copy(update={"known_hosts": str(tmp_path / "nope")})})
    with pytest.raises(ChainlabError, match=r"master: cannot read known_hosts .*nope"):
        connect(inv, "master")


def test_command_line_quotes_every_word():
    assert command_line(["echo", "a b", "$(reboot)", 3]) == "echo 'a b' '$(reboot)' 3"
