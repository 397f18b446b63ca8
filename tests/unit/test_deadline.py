"""Deadlines for remote work: a stuck worker is given up on, never waited for."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from chainlab.errors import ChainlabError
from chainlab.run.deadline import DeadlineExceeded, Worker, call, fan_out


def test_a_stuck_worker_is_that_keys_error_and_the_others_finish():
    release = threading.Event()
    cancelled: list[str] = []
    late: list[object] = []

    def work(host: str, item: int) -> int:
        if host == "slave1":
            release.wait(10)
        return item * 10

    started = time.monotonic()
    results, errors = fan_out({"master": 1, "slave1": 2}, work, 0.3, lambda h: f"reading {h}'s log",
                              cancel=lambda h, _: cancelled.append(h), discard=late.append)
    assert time.monotonic() - started < 2
    assert results == {"master": 10}
    assert isinstance(errors["slave1"], DeadlineExceeded)
    assert str(errors["slave1"]) == "slave1: no answer within 0.3 s while reading slave1's log"
    assert cancelled == ["slave1"]
    release.set()
    for _ in range(100):
        if late:
            break
        time.sleep(0.01)
    assert late == [20]  # a result that came too late is handed to `discard` (e.g. closed)


def test_per_key_deadlines_and_own_errors():
    def work(host: str, _: None) -> str:
        if host == "bad":
            raise ChainlabError("bad: refused")
        time.sleep(1.0 if host == "slow" else 0.2)
        return host

    results, errors = fan_out({"fast": None, "slow": None, "bad": None}, work,
                              lambda h: 1.0 if h == "fast" else 0.1, lambda h: "working")
    assert results == {"fast": "fast"}
    assert str(errors["bad"]) == "bad: refused" and isinstance(errors["slow"], DeadlineExceeded)


def test_a_worker_does_a_hosts_operations_on_one_thread_and_gives_up_on_a_stuck_one():
    worker = Worker("chainlab-slave1")
    threads = {worker.call(lambda: threading.get_ident(), 1, "slave1", "step a") for _ in range(5)}
    assert len(threads) == 1  # one thread for all of them
    with pytest.raises(ChainlabError, match="refused"):
        worker.call(lambda: (_ for _ in ()).throw(ChainlabError("slave1: refused")), 1, "slave1", "step b")
    release, cancelled = threading.Event(), []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"slave1: no answer within 0\.2 s while step c"):
        worker.call(lambda: release.wait(10), 0.2, "slave1", "step c", cancel=lambda: cancelled.append(1))
    assert time.monotonic() - started < 2 and cancelled == [1]
    after = worker.call(lambda: threading.get_ident(), 1, "slave1", "step d")
    assert after not in threads  # the stuck thread is left behind: a new one serves
    release.set()
    worker.stop()


def test_an_unexpected_exception_comes_through():
    with pytest.raises(ZeroDivisionError):
        call(lambda: 1 / 0, 1, "master", "dividing")


SCRIPT = """
import signal, sys, threading, time
from chainlab.run.deadline import call, signals_interrupt
from chainlab.lock import exclusive
from pathlib import Path
with signals_interrupt(), exclusive(Path(sys.argv[1]), "a test"):
    print("waiting", flush=True)
    call(lambda: threading.Event().wait(), 600, "slave1", "reading its log")
"""


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGTERM, "Interrupted: SIGTERM"), (signal.SIGINT, "Interrupted: SIGINT")])
def test_sigterm_and_sigint_end_a_wait_on_a_stuck_thread_at_once(tmp_path, sig, name):
    """The ThreadPoolExecutor this replaces joined its stuck worker: SIGTERM did nothing."""
    lock = tmp_path / "lab.lock"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(lock)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
    started = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < 2
    assert name in err
    from chainlab.lock import exclusive

    with exclusive(lock, "x"):  # released
        pass
