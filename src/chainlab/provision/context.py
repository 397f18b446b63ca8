"""What a step sees of its host: facts, a connection (or none, offline), and how to change things.

Steps probe with `read` (read-only, also runs under --check when connected) and change with
`change`/`put`, which record the exact command and only execute it outside --check. Offline
(--check without connecting), `read` returns None and steps plan for the worst case.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fabric

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.labstate import ContainerState
from chainlab.provision.commands import batch_script, parse_batch
from chainlab.shell import command_line
from chainlab.provision.facts import Facts
from chainlab.remote import docker_client, etcd_client, run

T = TypeVar("T")


class Skip(Exception):
    """Raised by a step that does not apply: the step is reported `skipped` with the reason."""


class Shared:
    """Work done once per run for all hosts (etcd, the Calico network), with its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[str, tuple[str, object]] = {}

    def once(self, key: str, fn: Callable[[], T]) -> tuple[T, bool]:
        """(result, True if this call ran it). A failure is remembered and raised to every host."""
        with self._lock:
            if key in self._done:
                kind, value = self._done[key]
                if kind == "error":
                    raise ChainlabError(f"{key} failed (on another host): {value}")
                return value, False  # type: ignore[return-value]
            try:
                value = fn()
            except Exception as exc:
                self._done[key] = ("error", exc)
                raise
            self._done[key] = ("ok", value)
            return value, True

    def etcd(self, inv: Inventory) -> Any:
        """The run's one etcd client (route-checked and probed once, for every host)."""
        return self.once("etcd", lambda: etcd_client(inv))[0]


@dataclass
class HostContext:
    inv: Inventory
    host: str
    facts: Facts
    conn: fabric.Connection | None
    check: bool
    shared: Shared
    commands: list[str] = field(default_factory=list)
    containers: dict[str, ContainerState] = field(default_factory=dict)
    _docker: Any = None
    _cache: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return self.conn is None

    def prefetch(self, probes: Sequence[Sequence[str]]) -> None:
        """Run many read-only probes in one round trip; each answer serves the next identical read once."""
        if self.conn is None or not probes:
            return
        out = run(self.conn, ["sh", "-c", batch_script(probes)], check=False, timeout=60).stdout
        for index, answer in parse_batch(out, len(probes)).items():
            self._cache[command_line(probes[index])] = answer

    def _answer(self, argv: Sequence[str]) -> tuple[int, str]:
        cached = self._cache.pop(command_line(argv), None)
        if cached is not None:
            return cached
        assert self.conn is not None
        result = run(self.conn, argv, check=False)
        return result.exited, result.stdout

    def read(self, argv: Sequence[str]) -> str | None:
        """Run a read-only probe; its stdout, or None offline. Never fails on exit status."""
        if self.conn is None:
            return None
        return self._answer(argv)[1]

    def probe(self, argv: Sequence[str]) -> bool | None:
        """Exit status 0 of a read-only probe; None offline."""
        if self.conn is None:
            return None
        return self._answer(argv)[0] == 0

    def change(self, argv: Sequence[str], timeout: float | None = 120) -> str:
        """Record the command; run it unless --check. Its stdout ('' under --check)."""
        self._cache.clear()  # a change may invalidate any prefetched answer
        self.commands.append(command_line(argv))
        if self.check:
            return ""
        assert self.conn is not None
        return run(self.conn, argv, timeout=timeout).stdout

    def put(self, path: str, text: str) -> None:
        """Write a whole file (recorded as `write PATH` plus its text)."""
        self._cache.clear()
        self.commands.append(f"write {path} <<EOF\n{text.rstrip()}\nEOF")
        if self.check:
            return
        assert self.conn is not None
        self.conn.put(io.BytesIO(text.encode()), path)

    def note(self, text: str) -> None:
        """Record an action that is not a shell command (docker SDK, etcd)."""
        self.commands.append(text)

    def docker(self) -> Any:
        if self._docker is None:
            if self.conn is None:
                raise ChainlabError("no docker client offline")
            self._docker = docker_client(self.inv, self.host)
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            try:
                self._docker.close()
            except Exception:
                pass
        if self.conn is not None:
            self.conn.close()
