"""Trace lines whose spacing a web page or a copy changed, spaced again as the kernel and nft print them.

A log copied from a post comes back with non-breaking or other Unicode spaces (U+00A0,
U+202F, U+3000...) or tabs where the log had spaces, two spaces after `TRACE:`, or spaces
lost (`TRACE: raw:PREROUTING:policy:2IN=eth0`, `TTL=64ID=0`, a syslog time glued to its
day: `Apr 1811:50:23`). Read as they are, such lines are no records at all (the header is
not read), lose fields, or lose their host and time (the syslog prefix is not read). A file whose head shows any of
these (`needs_respace`) is read through `respace`:

- every Unicode space becomes a space, a tab too; a zero-width space goes;
- a trace marker (`TRACE:`, xtables-monitor's `PACKET:`) gets one space after it, a TRACE
  record's header one before a glued `IN=`, and a kernel field glued to the value before it
  (`LEN=84TOS=0x00`) its space, on any line (a wrapped record's next lines too);
- a syslog time glued to its day gets its space back, the day padded as syslog pads it.

Other runs of spaces stay: syslog pads a day to two places (`Dec  2`), which is how its
prefix is recognised, and ulogd writes two spaces before `IN=`, which the parsers read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from chainlab.trace.parse_kernel import HEADER_BYTES, KNOWN_KEYS

#: UTF-8 spaces a web page or a word processor puts where a log had spaces (U+00A0, U+2000-
#: U+200A, U+202F, U+205F, U+3000) and the tab, each a space; a zero-width space (U+200B) goes.
SPACES: tuple[tuple[bytes, bytes], ...] = (
    (b"\xc2\xa0", b" "), (b"\xe2\x80\xaf", b" "), (b"\xe2\x81\x9f", b" "), (b"\xe3\x80\x80", b" "),
    *((bytes((0xE2, 0x80, code)), b" ") for code in range(0x80, 0x8B)),
    (b"\xe2\x80\x8b", b""), (b"\t", b" "),
)
#: A trace marker of the kernel or xtables-monitor with no space or several before what
#: follows it (a kernel record's header; xtables-monitor's family and trace id).
_MARKER_SPACES = re.compile(rb"(TRACE:|PACKET:)(?: {2,})?(?=" + HEADER_BYTES + rb"|\d+ [0-9a-f]+ )")
#: A TRACE record's header with `IN=` glued to it.
_GLUED_HEADER = re.compile(rb"(TRACE: " + HEADER_BYTES + rb")(?=IN=)")
#: Where a kernel field's key was glued to the value before it (`LEN=84TOS=0x00`,
#: `TYPE=8CODE=0ID=28976SEQ=1`): a value's digit, lower-case letter or punctuation right
#: before a known key and its `=` (never a longer key's tail: `PHYSIN=`, `UID=` are preceded
#: by capitals).
_GLUED_KEY = re.compile(rb"(?<=[0-9a-z:.\-])(?=(?:" + b"|".join(sorted(k.encode() for k in KNOWN_KEYS)) + rb")=)")
#: A value with another `=` right after it: where a glued key may be (found at the speed of a
#: literal search; _GLUED_KEY, which looks behind at every byte, runs only where one is).
_TWO_VALUES = re.compile(rb"=[^\s=]*=")
#: The first bytes of what SPACES replaces.
_SPACE_BYTES = re.compile(rb"[\t\xc2\xe2\xe3]")
#: A syslog time glued to its day, at a line's start (after a quote's `>` marks).
_GLUED_DAY = re.compile(rb"^([ >]*[A-Z][a-z]{2}) {1,2}(\d{1,2})(?=\d\d:\d\d:\d\d )", re.MULTILINE)
#: Bytes of a line kept back for the next chunk, at most: a longer line is passed on in
#: pieces (the reader cuts it at its LINE_LIMIT anyway; a piece may then not be respaced).
CARRY_LIMIT = 1 << 20


def needs_respace(head: bytes) -> bool:
    """Whether a file's first bytes show spacing that a copy changed: what `respaced` would
    mend (a glued key only counts on a trace line)."""
    if _SPACE_BYTES.search(head) and any(space in head for space, _ in SPACES):
        return True
    if any(pattern.search(head) for pattern in (_MARKER_SPACES, _GLUED_HEADER, _GLUED_DAY)):
        return True
    for match in _TWO_VALUES.finditer(head):
        start, end = head.rfind(b"\n", 0, match.start()) + 1, head.find(b"\n", match.end())
        line = head[start:] if end < 0 else head[start:end]
        if (b"TRACE:" in line or b"PACKET:" in line) and _GLUED_KEY.search(line):
            return True
    return False


def respace(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks' bytes, respaced, in chunks that end at a line's end (but the last, or a
    line longer than CARRY_LIMIT)."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        end = data.rfind(b"\n") + 1
        if not end:
            if len(data) <= CARRY_LIMIT:
                carry = data
                continue
            end = len(data)
        carry = data[end:]
        yield respaced(data[:end])
    if carry:
        yield respaced(carry)


def respaced(text: bytes) -> bytes:
    """Whole lines, respaced (see the module's doc)."""
    if _SPACE_BYTES.search(text):
        for space, replacement in SPACES:
            if space in text:
                text = text.replace(space, replacement)
    text = _GLUED_DAY.sub(_day, text)
    text = _GLUED_HEADER.sub(rb"\1 ", _MARKER_SPACES.sub(rb"\1 ", text))
    return _GLUED_KEY.sub(b" ", text) if _TWO_VALUES.search(text) else text


def _day(match: re.Match[bytes]) -> bytes:
    return match[1] + b" " + match[2].rjust(2) + b" "
