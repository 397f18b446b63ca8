"""What a step sees: its host's facts and SSH session (or none, offline), and the whole run.

Steps probe with `read`/`probe` (read-only: they run under --check too when connected;
offline they return None and steps plan for the worst case) and change things only by
yielding actions (`chainlab.provision.actions`), which `perform` carries out.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.labstate import ContainerState
from chainlab.providers import Provider
from chainlab.provision.actions import Action, Call, Command, PutFile
from chainlab.provision.dockerview import ANSWER_WITHIN_S, NOT_ANSWERED, DockerLook, DockerView
from chainlab.provision.facts import Facts
from chainlab.remote.session import HostSession
from chainlab.shell import command_line

if TYPE_CHECKING:
    from chainlab.networks.base import Network

T = TypeVar("T")


@dataclass
class RunContext:
    """The run as a whole: inventory, kinds, --check, and what is made once for every host."""

    inv: Inventory
    provider: Provider
    network: "Network"
    check: bool
    hosts: dict[str, "HostContext"] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _etcd: Any = None

    def images(self, host: str) -> list[str]:
        """The images lab up puts on `host`: the test image and those its containers name."""
        inv = self.inv
        return sorted({inv.image.name, *(c.image for c in inv.containers.values() if c.host == host and c.image)})

    def docker_look(self, host: str) -> DockerLook:
        """Every Docker object lab up looks at on `host`."""
        return DockerLook(self.images(host), [n for n, c in self.inv.containers.items() if c.host == host],
                          self.network.docker_names(host))

    def inspect_argv(self, host: str) -> list[str]:
        """The one probe of every Docker object lab up looks at on `host`."""
        return self.docker_look(host).argv()

    def etcd(self) -> Any:
        """The run's one etcd client (route-checked and probed once, for every host)."""
        from chainlab.remote.etcdclient import etcd_client

        with self._lock:
            if self._etcd is None:
                self._etcd = etcd_client(self.inv)
            return self._etcd

    def perform(self, action: Action) -> Any:
        """A lab-level action (etcd, one docker engine): only calls."""
        if not isinstance(action, Call):
            raise ChainlabError(f"a lab-level step cannot run {action.shown()!r} on no host")
        return action.fn()


@dataclass
class HostContext:
    run: RunContext
    host: str
    facts: Facts
    ssh: HostSession | None  # None: offline
    containers: dict[str, ContainerState] = field(default_factory=dict)
    _view: DockerView | None = None
    _docker: Any = None
    _cache: dict[str, tuple[int, str]] = field(default_factory=dict)
    _held: dict[str, str | None] = field(default_factory=dict)

    @property
    def inv(self) -> Inventory:
        return self.run.inv

    @property
    def check(self) -> bool:
        return self.run.check

    @property
    def offline(self) -> bool:
        return self.ssh is None

    def preload(self, probes: Sequence[Sequence[str]], answers: dict[int, tuple[int, str]]) -> None:
        """Answers of probes run ahead (with the facts); each serves the next identical read once."""
        for index, answer in answers.items():
            self._cache[command_line(probes[index])] = answer

    def preloaded(self, argv: Sequence[str]) -> tuple[int, str] | None:
        """The answer run ahead for `argv` (exit status, stdout), used up; None if there is none
        (nothing is run)."""
        return self._cache.pop(command_line(argv), None)

    def _answer(self, argv: Sequence[str]) -> tuple[int, str]:
        cached = self.preloaded(argv)
        if cached is not None:
            return cached
        assert self.ssh is not None
        result = self.ssh.read(argv)
        return result.exited, result.stdout

    def read(self, argv: Sequence[str]) -> str | None:
        """Run a read-only probe; its stdout, or None offline. Never fails on exit status."""
        if self.ssh is None:
            return None
        return self._answer(argv)[1]

    def read_held(self, argv: Sequence[str]) -> str | None:
        """`read`, whose answer then serves every `read_held` of `argv` until this host changes
        (`perform`): for what several objects look up, e.g. the host's links for each container."""
        key = command_line(argv)
        if key not in self._held:
            self._held[key] = self.read(argv)
        return self._held[key]

    def probe(self, argv: Sequence[str]) -> bool | None:
        """Exit status 0 of a read-only probe; None offline."""
        if self.ssh is None:
            return None
        return self._answer(argv)[0] == 0

    def docker_view(self) -> DockerView:
        """The host's images, containers and networks of the lab, from one probe (fetched with
        the facts; read again after any change). Empty offline."""
        if self._view is None:
            code, out = self._answer(self.run.inspect_argv(self.host)) if self.ssh is not None else (0, "")
            if code in NOT_ANSWERED:  # nothing would be there to see, and every step would wait on it
                raise ChainlabError(f"{self.host}: dockerd did not answer within {ANSWER_WITHIN_S} s")
            self._view = DockerView.parse(out)
        return self._view

    def perform(self, action: Action) -> Any:
        """Carry out one action (never called under --check)."""
        self._cache.clear()  # a change may invalidate any prefetched or held answer
        self._held.clear()
        self._view = None
        if isinstance(action, Call):
            return action.fn()
        assert self.ssh is not None
        if isinstance(action, Command):
            return self.ssh.run(action.argv, timeout=action.timeout).stdout
        assert isinstance(action, PutFile)
        self.ssh.connection.put(io.BytesIO(action.text.encode()), action.path)
        return None

    def docker(self) -> Any:
        """The docker SDK client of this host's engine (read-only use is fine under --check)."""
        if self._docker is None:
            if self.ssh is None:
                raise ChainlabError("no docker client offline")
            from chainlab.remote.dockerclient import docker_over

            self._docker = docker_over(self.ssh.connection, self.facts.docker_api or None)
        return self._docker

    def call(self, text: str, fn: Callable[[], T]) -> Call:
        """A docker SDK (or etcd) action shown as the command it stands for, `text   # on HOST`."""
        return Call(f"{text}   # on {self.host}", fn)

    def close(self) -> None:
        if self._docker is not None:
            try:
                self._docker.close()
            except Exception:
                pass
        if self.ssh is not None:
            self.ssh.close()
