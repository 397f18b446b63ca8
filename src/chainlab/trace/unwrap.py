"""Trace records that a post or a mail hard-wrapped over several lines, joined again.

Blogs, forums and mails wrap a kernel log's long lines at word boundaries (a blog's 100
columns, a mail's 72): a record becomes its TRACE line, ending mid-record, and lines of
its fields under it (`MAC=...`, `PREC=0x00 TTL=128 ...`, `SYN URGP=0 OPT (...)`). Such a
file is read as if each record were one line again.

A line joins the record above it when it directly follows that record's TRACE line (or a
line already joined to it), holds no trace marker, and starts with what can only continue
a record: a kernel field (`KEY=` of a known key, an IP or TCP flag, `OPT`) that the record
does not hold yet (or a word a damaged log left, `DST225`, `DS.225`, then such a field),
the `(...)` of an `OPT` the record ends with, or the `table:chain:kind:N` header of a
record ending in `TRACE:`. A record repeats no field but an ICMP packet's `ID=` (the IP
id, then the echo's), a UDP packet's `LEN=` (IP, then UDP) and those of the packet an ICMP
error quotes in `[...]`, so a whole line followed by a line whose head was cut off (`SRC=...
DST=...`, a damaged log) stays two.

An `nft monitor trace` line wraps the same way: a `rule` line whose `(verdict ...)` comes on
a later line (the lines between and that one join it, when it comes within a few lines and
no blank or trace line comes first), and any other trace line (`packet:`, `policy`,
`verdict`, `conntrack:`) whose words go on: a line made only of what such a line prints
(lower-case words, numbers, addresses, MACs, `"names"`, `==`, `@th,64,96`), with more than
an elision's dots, joins it; a sentence, a `#` comment or an `...` line does not. A mail's
quoting (`> `) before a wrapped line is not part of it.

Line numbers stay those of the file: a joined record keeps its first line's number and is
followed by one empty line for each line joined to it, so every later line keeps its number
and the count of lines is the file's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

from chainlab.trace.model import MARKERS
from chainlab.trace.parse_kernel import IP_FLAGS, KNOWN_KEYS, TCP_FLAGS

_FIELD_WORDS = frozenset({f"{key}=".encode() for key in KNOWN_KEYS} | {w.encode() for w in TCP_FLAGS | IP_FLAGS}
                         | {b"OPT"})
_HEADER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*:\S+:(?:rule|return|policy):\d{1,10}(?:\s|$)")
_BLANKS = b" \t\r"
_QUOTING = b" \t\r>"  # before a line a mail quotes
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
        rest = line.lstrip(_QUOTING)
        if not rest or len(self.text) + 1 + len(rest) > limit or MARKERS.search(rest):
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
        rest = line.lstrip(_QUOTING).rstrip(_BLANKS)
        keys = self.keys  # counted before the text grows
        self.text = self.text.rstrip(_BLANKS) + b" " + rest
        keys.update(_word_key(word) for word in rest.split())
        self.joined += 1

    def lines(self) -> bytes:
        """The record as one line, then an empty line for each line joined to it."""
        return self.text + b"\n" * (1 + self.joined)


class KernelJoiner:
    """Lines in, lines out: each kernel record's wrapped lines joined (see the module's doc)."""

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


_NFT_LINE = re.compile(rb"trace id [0-9a-f]+ ")
_NFT_RULE = re.compile(rb"trace id [0-9a-f]+ \S+ \S+ \S+ (?:rule|unknown rule handle)(?:\s|$)")
_NFT_VERDICT = re.compile(rb"\(verdict [^()]*\)[ \t\r]*$")  # what ends a rule line
#: A word of what a trace line prints after its chain (but a rule): keywords, values (numbers,
#: addresses, MACs, flags), quoted interface names, operators (and `$ns1mac`, which a test script left).
_NFT_WORD = re.compile(rb'[a-z0-9@.$][a-zA-Z0-9@,.:_/+-]*|"[^"\s]*"|==|!=|[{}]')
#: How many lines may come between a rule line and its `(verdict ...)`.
NFT_RULE_LINES = 6


def _headers_only(text: bytes) -> bool:
    """Whether a line holds only what a trace line prints after its chain (and more than dots)."""
    words = text.split()
    return all(_NFT_WORD.fullmatch(w) for w in words) and any(w.strip(b".") for w in words)


class NftJoiner:
    """Lines in, lines out: each `nft monitor trace` line's wrapped lines joined (see the
    module's doc)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.record: bytes | None = None
        self.rule = False  # the record is a rule line waiting for its verdict (else another trace line)
        self.held: list[bytes] = []  # lines after a rule line, joined once its verdict comes
        self.joined = 0

    def _continues(self, line: bytes) -> bytes | None:
        """`line` without its blanks if it may continue the record, else None."""
        rest = line.lstrip(_QUOTING).rstrip(_BLANKS)
        if not rest or MARKERS.search(rest) or self.record is None:
            return None
        size = len(self.record) + sum(len(h) + 1 for h in self.held) + 1 + len(rest)
        return rest if size <= self.limit else None

    def _flush(self, joined: bool) -> bytes:
        """The record and the lines held after it: one line (joined), or as they came."""
        record, held, self.record, self.held = self.record, self.held, None, []
        if record is None:
            return b""
        if joined:
            self.joined += len(held)
            return b" ".join([record.rstrip(_BLANKS), *held]) + b"\n" * (1 + len(held))
        return b"".join(line + b"\n" for line in [record, *held])

    def line(self, line: bytes) -> bytes:
        """One line without its newline; what can be written out now (lines, each ended)."""
        out = b""
        if self.record is not None:
            rest = self._continues(line)
            if rest is not None and self.rule and len(self.held) < NFT_RULE_LINES:
                self.held.append(rest)
                return self._flush(True) if _NFT_VERDICT.search(b" ".join([self.record, *self.held])) else b""
            if rest is not None and not self.rule and _headers_only(rest):
                self.held.append(rest)
                return b""
            out = self._flush(not self.rule)  # a rule line whose verdict never came stays as it was
        if len(line) < self.limit and _NFT_LINE.search(line):
            rule = _NFT_RULE.search(line) is not None
            if not (rule and _NFT_VERDICT.search(line)):  # a rule line with its verdict is whole
                self.record, self.rule = line, rule
                return out
        return out + line + b"\n"

    def end(self) -> bytes:
        """What is still held at the end of the input."""
        return self._flush(not self.rule)


Joiner = KernelJoiner | NftJoiner


def is_wrapped(head: bytes, joiner: Joiner) -> bool:
    """Whether the first lines of a log (`head`, its last line possibly cut) hold a wrapped record."""
    for line in head.split(b"\n")[:-1]:
        joiner.line(line)
        if joiner.joined:
            return True
    return False


def unwrap(chunks: Iterable[bytes], joiner: Joiner) -> Iterator[bytes]:
    """The log's bytes (in chunks) with wrapped records joined. A line longer than the
    joiner's limit is passed on as it comes, piece by piece: memory stays flat whatever the
    input."""
    limit = joiner.limit
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
