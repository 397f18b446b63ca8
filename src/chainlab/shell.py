"""How a command is shown and sent to a remote shell: every word shell-quoted (pure)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def command_line(argv: Sequence[object]) -> str:
    """One shell command line from an argument vector; inventory values stay data."""
    return shlex.join(str(a) for a in argv)


def shell_text(argv: Sequence[object]) -> str:
    """What a shell runs for `argv`: an `sh -c SCRIPT` as SCRIPT itself (inside another shell,
    no second one is started), anything else as its quoted command line."""
    words = [str(a) for a in argv]
    return words[2] if len(words) == 3 and words[:2] == ["sh", "-c"] else command_line(words)
