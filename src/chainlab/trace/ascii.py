"""Text rules every parser shares (and the C engine copies): only ASCII is structure.

A log may hold any bytes. Lines are decoded as UTF-8 (bad bytes become U+FFFD), but only
ASCII whitespace separates words, only ASCII digits make numbers and only a-z/A-Z change
case, so a non-ASCII character is always part of a word and never changes how the line
around it is read.
"""

from __future__ import annotations

import re

_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
#: ASCII whitespace: what separates words.
WHITESPACE = " \t\n\r\x0b\x0c"
_WORD = re.compile(r"[^ \t\n\r\x0b\x0c]+")
_SPACE = re.compile(r"[ \t\n\r\x0b\x0c]")
#: Characters str.split() splits at besides ASCII whitespace.
_OTHER_SPACE = re.compile(r"[\x1c-\x1f]")


def words(text: str) -> list[str]:
    """The words of `text`, split at ASCII whitespace only."""
    if text.isascii() and not _OTHER_SPACE.search(text):
        return text.split()
    return _WORD.findall(text)


def upper(text: str) -> str:
    """a-z made A-Z, every other character kept."""
    return text.translate(_UPPER)


def upper_keyword(text: str) -> str:
    """Its first word made upper case, the rest kept: a verdict `jump ACCEPT-fw` reads
    `JUMP ACCEPT-fw` (the chain it names is case-sensitive)."""
    space = _SPACE.search(text)
    end = space.start() if space else len(text)
    return upper(text[:end]) + text[end:]


def lower(text: str) -> str:
    """A-Z made a-z, every other character kept."""
    return text.translate(_LOWER)


def is_digits(text: str) -> bool:
    """1+ ASCII digits (str.isdigit() also takes other scripts' digits and superscripts)."""
    return text.isascii() and text.isdigit()
