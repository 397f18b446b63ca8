"""Errors that the CLI turns into clean messages (never a traceback)."""

from __future__ import annotations

from dataclasses import dataclass, field


def visible(text: str) -> str:
    """`text` with its control characters as escapes (`\\x1b`, `\\n`): a name from an input
    file or a remote answer printed in a message must not drive the terminal (colours, a
    title) or split the line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


@dataclass
class Problem:
    """One thing wrong with an input file: where it is and what was expected."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ChainlabError(Exception):
    """An expected failure: the CLI prints it and exits with `exit_code`."""

    exit_code = 1


class NoLabState(ChainlabError):
    """The inventory's lab was never provisioned (or was taken down): no lab state to run on."""


@dataclass
class InputError(ChainlabError):
    """Invalid user input (inventory, scenario, arguments); exit code 2."""

    problems: list[Problem] = field(default_factory=list)
    exit_code = 2

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class OutputError(Exception):
    """Writing the command's output (stdout) failed: `closed` when its reader went away (a
    closed pipe), else a full disk, /dev/full, an I/O error. Not an OSError on purpose: click
    would turn one into exit 1, rich's Console into SystemExit(1), and nothing on the way
    should mistake it for an input's read error."""

    def __init__(self, error: OSError):
        super().__init__(error.strerror or str(error))
        self.closed = isinstance(error, BrokenPipeError)
