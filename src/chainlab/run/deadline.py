"""Deadlines for remote work, and signals that end a run promptly.

Paramiko can block for an hour opening a channel to a frozen sshd, and a thread blocked
in a socket read cannot be stopped from outside. So every remote operation of a run goes
through `fan_out` (or `call`): the work runs in a daemon thread, the caller waits until
the deadline and then gives up on it. A given-up operation is that host's error, naming
what was waited for; the thread is abandoned (`cancel` is asked to unblock it, e.g. by
closing the connection) and, being a daemon, never keeps the process alive. Nothing waits
on a stuck thread: not the caller, not interpreter exit (unlike a ThreadPoolExecutor,
whose workers are joined at exit).

The caller's waits are interruptible: with `signals_interrupt()`, SIGTERM and SIGINT raise
`Interrupted` in the main thread, so `finally` blocks run (the lab lock is released) and
the run ends at once.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from chainlab.errors import ChainlabError

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

#: How long a canceller (e.g. closing a connection to a frozen host) may take before it
#: is abandoned in turn.
CANCEL_GRACE_S = 1.0


class DeadlineExceeded(ChainlabError):
    """`host` did not answer within `seconds` while doing `what`."""

    def __init__(self, host: str, what: str, seconds: float):
        super().__init__(f"{host}: no answer within {seconds:g} s while {what}")
        self.host = host
        self.what = what
        self.seconds = seconds


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived; unwinds like Ctrl-C (not caught by `except Exception`).
    `run_dir`: the run dir it left partial, once a runner has said so."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_dir: Path | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Interrupted` in the main thread for the block (elsewhere,
    e.g. in a worker thread, signals are left as they are)."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class _Job(Generic[T]):
    """`work()` in a daemon thread of its own (`name`), or queued for a `Worker`'s thread
    (`tasks`); the waiter either gets its outcome or abandons it."""

    def __init__(self, work: Callable[[], T], discard: Callable[[T], object] | None, name: str,
                 tasks: queue.SimpleQueue[_Job[Any] | None] | None = None):
        self.result: T | None = None
        self.error: BaseException | None = None
        self._work = work
        self._discard = discard
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        if tasks is None:
            threading.Thread(target=self.run, name=name, daemon=True).start()
        else:
            tasks.put(self)

    def run(self) -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = self._work()
        except BaseException as exc:  # handed to the waiting thread
            error = exc
        with self._lock:
            self.result, self.error = result, error
            self._done.set()
            late = self._abandoned
        if late and error is None and self._discard is not None:
            _quietly(lambda: self._discard(result))  # type: ignore[misc, arg-type]

    def wait(self, timeout: float) -> bool:
        """True once the work ended; False if it is still running after `timeout` (then
        it is abandoned: a result it still produces goes to `discard`)."""
        if self._done.wait(timeout):
            return True
        with self._lock:
            self._abandoned = not self._done.is_set()
            return not self._abandoned


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:
        pass  # best effort: the host is already given up on


def cancel_in_background(action: Callable[[], object]) -> None:
    """Run `action` (e.g. closing a connection to a frozen host) in a daemon thread and wait
    for it at most CANCEL_GRACE_S."""
    thread = threading.Thread(target=_quietly, args=(action,), name="chainlab-cancel", daemon=True)
    thread.start()
    thread.join(CANCEL_GRACE_S)


def fan_out(items: Mapping[K, V], work: Callable[[K, V], T], seconds: float | Callable[[K], float],
            what: Callable[[K], str], host: Callable[[K], str] = str,
            cancel: Callable[[K, V], object] | None = None,
            discard: Callable[[T], object] | None = None) -> tuple[dict[K, T], dict[K, ChainlabError]]:
    """`work(key, item)` for every item at once, each in a daemon thread, each within its
    `seconds` (a number, or one per key).

    Returns (results, errors) by key: an error is the work's own ChainlabError, or
    DeadlineExceeded(host(key), what(key), seconds) for work still running at the deadline;
    then `cancel(key, item)` is called to unblock it, and a result that still arrives later
    goes to `discard` (e.g. a connection that opened too late is closed). Any other
    exception of a worker is raised here, after every worker ended or was given up on.
    """
    limit = seconds if callable(seconds) else (lambda _key: seconds)
    start = time.monotonic()
    jobs = {key: _Job(partial(work, key, item), discard, f"chainlab-{host(key)}")
            for key, item in items.items()}
    results: dict[K, T] = {}
    errors: dict[K, ChainlabError] = {}
    unexpected: BaseException | None = None
    for key, job in jobs.items():
        if not job.wait(max(0.0, start + limit(key) - time.monotonic())):
            errors[key] = DeadlineExceeded(host(key), what(key), limit(key))
            if cancel is not None:
                cancel_in_background(partial(cancel, key, items[key]))
        elif isinstance(job.error, ChainlabError):
            errors[key] = job.error
        elif job.error is not None:
            unexpected = unexpected or job.error
        else:
            results[key] = job.result  # type: ignore[assignment]
    if unexpected is not None:
        raise unexpected
    return results, errors


class Worker:
    """One daemon thread that does a host's operations one after the other, each within its
    deadline, as `call` does: a thread per host rather than one per operation (a warm `lab
    up` makes ~10 quick steps a host, and at 30 hosts starting their threads was a tenth of
    its own CPU). An operation given up on takes the thread with it; the next call starts
    another."""

    def __init__(self, name: str):
        self.name = name
        self._queue: queue.SimpleQueue[_Job[Any] | None] | None = None

    def call(self, work: Callable[[], T], seconds: float, host: str, what: str,
             cancel: Callable[[], object] | None = None) -> T:
        """`work()` within `seconds`, else DeadlineExceeded(host, what) (see `call`)."""
        if self._queue is None:
            self._queue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(self._queue,), name=self.name, daemon=True).start()
        job = _Job(work, None, self.name, self._queue)
        if not job.wait(seconds):
            self.stop()  # the stuck thread ends once its work returns, if ever
            if cancel is not None:
                cancel_in_background(cancel)
            raise DeadlineExceeded(host, what, seconds)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def stop(self) -> None:
        """Let the thread end once it has nothing left to do."""
        if self._queue is not None:
            self._queue.put(None)
            self._queue = None


def _serve(jobs: queue.SimpleQueue[_Job[Any] | None]) -> None:
    while (job := jobs.get()) is not None:
        job.run()


def call(work: Callable[[], T], seconds: float, host: str, what: str,
         cancel: Callable[[], object] | None = None, discard: Callable[[T], object] | None = None) -> T:
    """`work()` within `seconds`, else DeadlineExceeded(host, what) (see `fan_out`)."""
    results, errors = fan_out({host: None}, lambda _k, _v: work(), seconds, lambda _k: what, str,
                              None if cancel is None else lambda _k, _v: cancel(), discard)
    if errors:
        raise errors[host]
    return results[host]
