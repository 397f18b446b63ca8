"""Kernel TRACE records that a post or a mail hard-wrapped over several lines, joined again.

Blogs, forums and mails wrap a kernel log's long lines at word boundaries (a blog's 100
columns, a mail's 72): a record becomes its TRACE line, ending mid-record, and lines of
its fields under it (`MAC=...`, `PREC=0x00 TTL=128 ...`, `SYN URGP=0 OPT (...)`). Such a
file is read as if each record were one line again.

A line joins the record above it when it directly follows that record's TRACE line (or a
line already joined to it), holds no trace marker, and starts with what can only continue
a record: a kernel field (`KEY=` of a known key, an IP or TCP flag, `OPT`) that the record
does not hold yet (or a word a damaged log left, `DST225`, `DS.225`, then such a field), the `(...)` of
an `OPT` the record ends with, or the `table:chain:kind:N` header of a record ending in
`TRACE:`. A record repeats no field but an ICMP packet's `ID=`
(the IP id, then the echo's), a UDP packet's `LEN=` (IP, then UDP) and those of the packet an
ICMP error quotes in `[...]`, so a whole line followed by a line whose head was cut off
(`SRC=... DST=...`, a damaged log) stays two.

Line numbers stay those of the file: a joined record keeps its first line's number and is
followed by one empty line for each line joined to it, so every later line keeps its number
and the count of lines is the file's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

from chainlab.trace.parse_kernel import IP_FLAGS, KNOWN_KEYS, TCP_FLAGS

_MARKER = re.compile(rb"TRACE:|trace id|PACKET:")  # reader.MARKERS: no line of any trace format
_FIELD_WORDS = frozenset({f"{key}=".encode() for key in KNOWN_KEYS} | {w.encode() for w in TCP_FLAGS | IP_FLAGS}
                         | {b"OPT"})
_HEADER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*:\S+:(?:rule|return|policy):\d{1,10}(?:\s|$)")
_BLANKS = b" \t\r"
_DAMAGED = re.compile(rb"[A-Z][^\sa-z=]*(?:=\S*)?")


def _word_key(word: bytes) -> bytes:
    """What names a field's word: `KEY=` for `KEY=value`, the word itself for a flag."""
    equals = word.find(b"=")
    return word if equals < 0 else word[: equals + 1]


class _Record:
    """A TRACE line waiting for the lines that may continue it."""

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.joined = 0
        self._keys: Counter[bytes] | None = None  # counted when a line may continue the record (most never)

    @property
    def keys(self) -> Counter[bytes]:
        """How often the record holds each field's key."""
        if self._keys is None:
            self._keys = Counter(_word_key(word) for word in self.text[self.text.rfind(b"TRACE:") + 6 :].split())
        return self._keys

    def _quoting(self) -> bool:
        """Whether the record ends within the `[...]` of a quoted packet."""
        return self.text.rfind(b"[") > self.text.rfind(b"]")

    def _room_for(self, key: bytes) -> bool:
        """Whether the record may hold one more `key` (see the module's doc)."""
        held = self.keys[key]
        if held == 0 or self._quoting():
            return True
        icmp = b"PROTO=ICMP" in self.text or self.keys[b"CODE="] > 0
        twice = (key == b"ID=" and icmp) or (key == b"LEN=" and b"PROTO=UDP" in self.text)
        return held == 1 and twice

    def takes(self, line: bytes, limit: int) -> bool:
        """Whether `line` (without its newline) continues this record."""
        rest = line.lstrip(_BLANKS)
        if not rest or len(self.text) + 1 + len(rest) > limit or _MARKER.search(rest):
            return False
        ending = self.text.rstrip(_BLANKS)
        if ending.endswith(b"TRACE:"):
            return _HEADER.match(rest) is not None
        word = rest.split(None, 1)[0]
        if rest.startswith(b"(") and ending.rsplit(None, 1)[-1] == b"OPT":
            return True
        if word.startswith(b"["):  # the packet an ICMP error quotes
            return _word_key(word[1:]) in _FIELD_WORDS
        if word == b"]":
            return self._quoting()
        key = _word_key(word)
        if key in _FIELD_WORDS:
            return self._room_for(key) and (word != b"OPT" or rest[3:4] in (b" ", b""))
        # a word the log's damage left (`DST225`), then fields
        words = rest.split(None, 2)
        return (_DAMAGED.fullmatch(word) is not None and len(words) > 1 and _word_key(words[1]) in _FIELD_WORDS
                and self._room_for(_word_key(words[1])))

    def join(self, line: bytes) -> None:
        rest = line.strip(_BLANKS)
        keys = self.keys  # counted before the text grows
        self.text = self.text.rstrip(_BLANKS) + b" " + rest
        keys.update(_word_key(word) for word in rest.split())
        self.joined += 1

    def lines(self) -> bytes:
        """The record as one line, then an empty line for each line joined to it."""
        return self.text + b"\n" * (1 + self.joined)


class Joiner:
    """Lines in, lines out: each record's wrapped lines joined (see the module's doc)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # the longest line a record may grow to
        self.record: _Record | None = None
        self.joined = 0  # lines joined so far

    def line(self, line: bytes) -> bytes:
        """One line without its newline; what can be written out now (lines, each ended)."""
        record = self.record
        if record is not None and record.takes(line, self.limit):
            record.join(line)
            self.joined += 1
            return b""
        out = record.lines() if record is not None else b""
        if b"TRACE:" in line and len(line) < self.limit:
            self.record = _Record(line)
            return out
        self.record = None
        return out + line + b"\n"

    def end(self) -> bytes:
        """What is still held at the end of the input."""
        record, self.record = self.record, None
        return record.lines() if record is not None else b""


def is_wrapped(head: bytes, limit: int) -> bool:
    """Whether the first lines of a log (`head`, its last line possibly cut) hold a wrapped record."""
    joiner = Joiner(limit)
    for line in head.split(b"\n")[:-1]:
        joiner.line(line)
        if joiner.joined:
            return True
    return False


def unwrap(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The log's bytes (in chunks) with wrapped records joined. A line longer than `limit`
    is passed on as it comes, piece by piece: memory stays flat whatever the input."""
    joiner = Joiner(limit)
    carry = b""  # the start of a line that goes on in the next chunk (shorter than limit)
    passing = False  # within a line longer than limit, passed on as it comes
    for chunk in chunks:
        out: list[bytes] = []
        start = 0
        if passing:
            newline = chunk.find(b"\n")
            if newline < 0:
                yield chunk
                continue
            out.append(chunk[: newline + 1])
            passing, start = False, newline + 1
        data = carry + chunk[start:] if carry else chunk[start:]
        carry = b""
        pos = 0
        while (newline := data.find(b"\n", pos)) >= 0:
            out.append(joiner.line(data[pos:newline]))
            pos = newline + 1
        rest = data[pos:]
        if len(rest) >= limit:  # no record: what is held goes first, then the line as it comes
            out += [joiner.end(), rest]
            passing = True
        else:
            carry = rest
        yield b"".join(out)
    if not passing:
        yield (joiner.line(carry) if carry else b"") + joiner.end()
