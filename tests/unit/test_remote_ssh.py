"""SSH errors that happen before any packet is sent are clean ChainlabErrors."""

from __future__ import annotations

import threading
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
