"""What a step may do to a host: the actions it yields, as pyinfra's operations yield commands.

A step is a generator: it reads facts (read-only probes, allowed under --check), then
yields each change as an action and gets the action's result back (`out = yield Command(...)`).
The executor (`chainlab.provision.executor`) decides whether an action runs: under --check
nothing runs, every action is only shown, and the step receives None. So a dry run is the
same code path as a real one, without a `check` branch in any step.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from chainlab.shell import command_line


@dataclass(frozen=True)
class Command:
    """A command on the host over SSH (its stdout is the result)."""

    argv: tuple[str, ...]
    timeout: float | None = 120

    @classmethod
    def of(cls, argv: Sequence[str], timeout: float | None = 120) -> "Command":
        return cls(tuple(argv), timeout)

    def shown(self) -> str:
        return command_line(self.argv)


@dataclass(frozen=True)
class PutFile:
    """A whole file written on the host."""

    path: str
    text: str

    def shown(self) -> str:
        return f"write {self.path} <<EOF\n{self.text.rstrip()}\nEOF"


@dataclass(frozen=True)
class Call:
    """A call that is not a shell command (the docker SDK, etcd), shown as what it stands for
    (`docker network create ...   # docker SDK on master`)."""

    text: str
    fn: Callable[[], Any] = field(compare=False)

    def shown(self) -> str:
        return self.text


Action = Union[Command, PutFile, Call]
#: What a step returns: its detail when it changed something and when it did not.
Outcome = tuple[str, str]
Step = Generator[Action, Any, Outcome]
