"""How a command is shown and sent to a remote shell: every word shell-quoted (pure)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def command_line(argv: Sequence[object]) -> str:
    """One shell command line from an argument vector; inventory values stay data."""
    return shlex.join(str(a) for a in argv)
