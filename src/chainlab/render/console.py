"""The rich console every command prints to: one rule for how output is laid out.

On a terminal, lines and tables fit its width (rich's own layout). Into a pipe or a file
nothing is wrapped or cut: a line is one line and a table is laid out at its natural width,
so that evidence paths, chain names and rule texts can be copied, grepped and read with
`less -S` (rich would otherwise lay everything out at 80 columns there).
"""

from __future__ import annotations

from rich.console import Console

#: The layout width where the output is no terminal: wider than any line we print, so no
#: table is squeezed (rich pads nothing to it: tables take their natural width).
UNLIMITED = 1_000_000


def make_console(*, stderr: bool = False, emoji: bool = True) -> Console:
    """A console on stdout (or stderr); no highlighting of numbers in our own lines."""
    out = Console(stderr=stderr, highlight=False, emoji=emoji)
    if not out.is_terminal:
        out.soft_wrap = True
        out.width = UNLIMITED
    return out
