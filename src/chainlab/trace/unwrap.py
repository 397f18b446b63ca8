"""Trace records that a post or a mail hard-wrapped over several lines, joined again.

Blogs, forums and mails wrap a log's long lines at word boundaries (a blog's 100 columns, a
mail's 72): a kernel TRACE record becomes its TRACE line, ending mid-record, and lines of
its fields under it (`MAC=...`, `PREC=0x00 TTL=128 ...`, `SYN URGP=0 OPT (...)`). Such a
file is read as if each record were one line again.

Kernel records: a line joins the record above it when it directly follows that record's
TRACE line (or a line already joined to it), holds no trace marker, and starts with what
can only continue a record: a kernel field (`KEY=` of a known key, an IP or TCP flag,
`OPT`) that the record does not hold yet (or a word a damaged log left, `DST225`,
`DS.225`, then such a field), the `(...)` of an `OPT` the record ends with, the `[` and `]`
of the packet an ICMP error quotes, or the `table:chain:kind:N IN=` header of a record
ending in `TRACE:`. A record repeats no field but an ICMP packet's `ID=` (the IP id, then
the echo's), a UDP packet's `LEN=` (IP, then UDP) and those of the quoted packet, so a whole
line followed by a line whose head was cut off (`SRC=... DST=...`, a damaged log) stays two.
After `TRACE:`, the header alone on its line (its `IN=` on the next) goes on too. A record's
line that ends in a letter and a hyphen was broken there (textwrap's default breaks at the
hyphens of `cali-PREROUTING`, `br-lan`; no kernel record ends so): a line that starts with a
letter or digit goes on with that word (up to WORD_LIMIT bytes), without a space, when that
completes the header (`raw:cali-` / `PREROUTING:rule:1 IN=...`) or goes on with a field's
value, then fields (`IN=br-` / `lan OUT=...`).
A log line's prefix broken over lines (a long RFC 3339 time and host fill a mail's 72
columns: the time alone, then `host kernel: [ 123.4] TRACE: ...`; or the host's name cut,
`... ip-10-0-1-2.eu-west-1.compute.` / `internal kernel: ...`) starts the record: lines
that are a prefix's start and nothing more (its time, then maybe its host or the host's
start, `kernel:`, an uptime or its `[`), up to PREFIX_LINES of them, join the line after
them when that completes the prefix and goes on with `TRACE:` (what comes before the
`TRACE:` is then a whole prefix and no more): at a space, or without one when only that
reads so (the cut fell inside the host's name or the time). The record keeps the prefix's
host and time and its first line's number.

`nft monitor trace` lines: a trace line that parse_nft's grammar does not read whole (a
`rule` line whose `(verdict ...)` is on a later line, a `verdict` or `policy` line without
its word) takes the lines after it, up to NFT_LINES of them, once the joined line reads
whole; a `packet:` or `conntrack:` line (whose grammar takes any words) takes the lines that
go on with its headers: lower-case words, numbers, addresses, `"names"`, `==`, the first of
them a header keyword (`ip`, `saddr`), a value (`10325`, `@th,64,96`) or a named value
(`not-ect`, `nd-router-solicit`, `syn`); not `nft monitor`'s own events (`add rule ...`), a
sentence, a `#` comment or an `...` line. After a line that ends in a letter and a hyphen, a
line that starts with a letter or digit goes on with that word, without a space (`ip filter
DOCKER-` / `USER rule ...`; in a packet line, when the word so glued is one it prints:
`iif "br-` / `lan"`).

`xtables-monitor --trace` lines: a PACKET line takes the lines that go on with its fields:
lines of words it prints (a `KEY=` of XT_PACKET_KEYS, an IP or TCP flag, `FRAG:N`, the
link layer header's bytes after `LL=`, the `(...)` after `OPT`), the first a field the
line does not hold yet. A TRACE line whose `table:chain:kind` went to the next line takes
that line when the two then read as a TRACE line. A TRACE line of a rule takes the lines
that go on with its rule, which xtables-monitor always starts with `-4 -t TABLE -A CHAIN`
(`-6`, `-0`; the line's own table and chain): while that start is not whole, a line that
goes on with it (`-4 -t` / `raw -A PREROUTING -p icmp -j TRACE`); after it, a line that
starts with an option (`-j`, `--dport`) or `!`, a line after one ending with an option or
`!` (its value: `-j` / `DOCKER-USER`) or with the first of an option's two arguments
(`--tcp-flags FIN,SYN,RST,ACK` / `SYN`), and any line within a `"..."` (a comment); not a
sentence after a whole rule, the command line (`xtables-monitor --trace`) or the tool's
own error lines (but after a rule that ends with an option of no argument, `--syn`, the
next line is taken whatever it holds). A policy or return line takes nothing. After a line
that ends in a letter and a hyphen, a line that starts with a letter or digit goes on with
that word, without a space, when the record so glued still reads: a PACKET line of fields, a
rule whose start is whole, a TRACE line (or its header's start, broken at a hyphen again).

A mail's quoting (`> `) before a wrapped line is not part of it. A file is read as wrapped
when its head shows records taking lines (is_wrapped), but not when the lines after a
record that it does not take although they look like pieces of records (kernel fields,
PACKET fields; nft header words: not an author's notes) are more than a quarter of those it
takes, nor (nft) when three or more lines were each continued at one and the same length:
that is a cut at a fixed column (`fold`, a terminal's copy), whose pieces start inside
words (`D=13891`, `dr 10.0.0.2`) and must not be glued together with a space.

Line numbers stay those of the file: a joined record keeps its first line's number and is
followed by one empty line for each line joined to it, so every later line keeps its number
and the count of lines is the file's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

from chainlab.trace.ascii import WHITESPACE
from chainlab.trace.model import MARKERS
from chainlab.trace.parse_kernel import (BARE_HEADER, HOST_WORD, IP_FLAGS, KNOWN_KEYS, PREFIX, PREFIX_TIME, TCP_FLAGS,
                                         UPTIME)
from chainlab.trace.parse_nft import NFT_LINE, XT_PACKET_KEYS, XT_TRACE

_BLANKS = WHITESPACE.encode()
_QUOTING = _BLANKS + b">"  # before a line a mail quotes (parse_nft.QUOTED)
_FIELD_WORDS = frozenset({f"{key}=".encode() for key in KNOWN_KEYS} | {w.encode() for w in TCP_FLAGS | IP_FLAGS}
                         | {b"OPT"})
_DAMAGED = re.compile(rb"[A-Z][^\sa-z=]*")
#: A record's header alone (`table:chain:kind:N`, its `IN=` on the next line), or its start
#: up to a hyphen that a wrap broke it at (`raw:cali-`).
_HEADER_ALONE = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*:\S+:(?:rule|return|policy):\d{1,10}|[A-Za-z_][A-Za-z0-9_]*:\S*[A-Za-z]-",
                           re.ASCII)
#: The end of a line broken at a hyphen (textwrap's default): a letter, then the hyphen.
_HYPHEN_END = re.compile(rb"[A-Za-z]-$")
#: The longest word a line broken at a hyphen goes on with (a chain's, a set's or an
#: interface's name is shorter): what bounds the work of gluing to the new line's length.
WORD_LIMIT = 256


def _last_word(text: bytes) -> bytes:
    """The last word of `text`, looking back at most WORD_LIMIT + 1 bytes."""
    words = text[-(WORD_LIMIT + 1) :].rsplit(None, 1)
    return words[-1] if words else b""


def _broken_word(ending: bytes, rest: bytes, word: bytes) -> bool:
    """Whether `ending` (a line's text so far, its last word `word`, across lines glued
    already) ends in a word a wrap broke at its hyphen that `rest` (the next line) may go on
    with: a letter and a hyphen, then a letter or a digit, the word no longer than WORD_LIMIT."""
    return _HYPHEN_END.search(ending) is not None and rest[:1].isalnum() and len(word) <= WORD_LIMIT


def _word_after(last: bytes, glue: bytes, words: list[bytes]) -> bytes:
    """A record's last word once a line of `words` joined it after `glue`: the word it ended
    in goes on when there is no glue and the line is one word, else the line's last word."""
    return last + words[0] if not glue and len(words) == 1 else words[-1]


def _glued(parts: list[bytes], glues: list[bytes]) -> bytes:
    """A record's lines as one line, each after its glue (a space, or none)."""
    return parts[0] + b"".join(glue + part for glue, part in zip(glues, parts[1:]))
#: A line that is the start of a log line's prefix and nothing more: its time, then maybe
#: its host (or the host's start), `kernel:`, an uptime or the `[` that opens one (a long
#: time and host filled the line).
_PREFIX_HEAD = re.compile(rf"{PREFIX_TIME}(?:\s+{HOST_WORD}(?:\s+kernel:)?(?:\s+(?:\[|{UPTIME.pattern}))?)?\s*$".encode(),
                          re.ASCII)
#: How many lines a prefix's start may take (its time, its host, `kernel:` and an uptime are
#: four pieces: a narrow wrap puts each of them on a line of its own at most).
PREFIX_LINES = 3
#: A record's line up to its `TRACE:` when what precedes that is a whole prefix and no more.
_PREFIX_TRACE = re.compile(
    rf"(?:{PREFIX.pattern}(?:kernel:\s*)?(?:{UPTIME.pattern}\s*)?|\s*{UPTIME.pattern}\s*)TRACE:".encode(), re.ASCII)


def _word_key(word: bytes) -> bytes:
    """What names a field's word: `KEY=` for `KEY=value`, the word itself for a flag."""
    equals = word.find(b"=")
    return word if equals < 0 else word[: equals + 1]


def _fields_text(text: bytes) -> bytes:
    """What follows a record's last `TRACE:`: its header and fields."""
    return text[text.rfind(b"TRACE:") + 6 :]


class _Record:
    """A kernel TRACE line waiting for the lines that may continue it (`taken`: how many of
    the file's lines `text` already is: more than one when a prefix's start came first).
    Each test and join costs what the new line's length costs (the record is kept in parts,
    each after its glue: a space, or none where a word broken at a hyphen goes on)."""

    def __init__(self, text: bytes, taken: int = 1) -> None:
        self.parts = [text]
        self.glues: list[bytes] = []  # before each part after the first
        self.last = _last_word(text)  # the record's last word, across parts glued without a space
        self.field_words = len(_fields_text(text).split())  # words after `TRACE:`: 1, the header (or its start) alone
        self.taken = taken
        self.size = len(text)
        self._keys: Counter[bytes] | None = None  # counted when a line may continue the record (most never)
        self.quoting = self._brackets(_fields_text(text), False)
        self.icmp = b"PROTO=ICMP" in text
        self.udp = b"PROTO=UDP" in text

    @staticmethod
    def _brackets(text: bytes, inside: bool) -> bool:
        """Whether, after `text`, the record is within the `[...]` of a quoted packet."""
        opened, closed = text.rfind(b"["), text.rfind(b"]")
        return inside if opened == closed else opened > closed

    @property
    def keys(self) -> Counter[bytes]:
        """How often the record holds each field's key."""
        if self._keys is None:
            self._keys = Counter(_word_key(w) for w in _fields_text(self.text()).split())
        return self._keys

    def text(self) -> bytes:
        """The record as one line."""
        return _glued(self.parts, self.glues)

    def _room_for(self, key: bytes) -> bool:
        """Whether the record may hold one more `key` (see the module's doc)."""
        held = self.keys[key]
        if held == 0 or self.quoting:
            return True
        icmp = self.icmp or self.keys[b"CODE="] > 0
        return held == 1 and ((key == b"ID=" and icmp) or (key == b"LEN=" and self.udp))

    def takes(self, rest: bytes, limit: int) -> bytes | None:
        """How `rest` (a line without its quoting and newline) continues this record: after a
        space, or with none (the word a wrap broke at a hyphen goes on); None if it does not."""
        if not rest or self.size + 1 + len(rest) > limit or MARKERS.search(rest):
            return None
        ending = self.parts[-1].rstrip(_BLANKS)
        if ending.endswith(b"TRACE:"):
            return b" " if BARE_HEADER.match(rest) is not None or self._header_alone(rest) else None
        if _broken_word(ending, rest, self.last):
            return b"" if self._goes_on_in_word(rest) else None  # a word broken at its hyphen
        return b" " if self._takes_after_space(ending, rest) else None

    @staticmethod
    def _header_alone(rest: bytes) -> bool:
        """A header alone on its line, or its start up to a hyphen, then at most `IN=...`."""
        words = rest.split(None, 1)
        return _HEADER_ALONE.fullmatch(words[0]) is not None and (len(words) == 1 or words[1].startswith(b"IN="))

    def _goes_on_in_word(self, rest: bytes) -> bool:
        """Whether `rest` goes on with the record's last word, which a wrap broke at its
        hyphen: the record's header (`raw:cali-` / `PREROUTING:rule:1 IN=...`) or a field's
        value (`IN=br-` / `lan OUT=`), then fields."""
        last = self.last
        if self.field_words == 1:
            return self._header_alone(last + rest)
        if b"=" not in last:
            return False
        words = rest.split(None, 2)[1:]
        return not words or (_word_key(words[0]) in _FIELD_WORDS and self._room_for(_word_key(words[0])))

    def _takes_after_space(self, ending: bytes, rest: bytes) -> bool:
        words = rest.split(None, 2)
        word = words[0]
        if word.startswith(b"(") and ending.rsplit(None, 1)[-1] == b"OPT":
            return True
        if word.startswith(b"["):  # the packet an ICMP error quotes
            return _word_key(word[1:]) in _FIELD_WORDS
        if word == b"]":
            return self.quoting
        key = _word_key(word)
        if key in _FIELD_WORDS:
            return self._room_for(key) and (word != b"OPT" or len(words) == 1 or words[1].startswith(b"("))
        # a word the log's damage left (`DST225`), then fields
        return (_DAMAGED.fullmatch(word) is not None and len(words) > 1 and _word_key(words[1]) in _FIELD_WORDS
                and self._room_for(_word_key(words[1])))

    def join(self, rest: bytes, glue: bytes = b" ") -> None:
        """Add a line that continues the record (`rest`: without quoting and newline), after
        `glue` (takes)."""
        rest = rest.rstrip(_BLANKS)
        keys = self.keys  # counted before the record grows
        words = rest.split()
        self.parts[-1] = self.parts[-1].rstrip(_BLANKS)
        self.parts.append(rest)
        self.glues.append(glue)
        self.last = _word_after(self.last, glue, words)
        if not glue:  # the last word goes on: its key is counted already
            words = words[1:]
        self.field_words += len(words)
        self.taken += 1
        self.size += len(glue) + len(rest)
        keys.update(_word_key(word) for word in words)
        self.quoting = self._brackets(rest, self.quoting)
        self.icmp |= b"PROTO=ICMP" in rest
        self.udp |= b"PROTO=UDP" in rest

    def lines(self) -> bytes:
        """The record as one line, then an empty line for each line joined to it."""
        return self.text() + b"\n" * self.taken


def _joined(head: bytes, rest: bytes, pattern: re.Pattern[bytes]) -> bytes | None:
    """`head` and the line after it (`rest`, without quoting) as one line that `pattern`
    matches (without its quoting): joined at a space, or without one when only that matches
    (the cut fell inside a word: the host's name, the time); None when neither does."""
    head = head.rstrip(_BLANKS)
    for glue in (b" ", b""):
        line = head + glue + rest
        if pattern.match(line.lstrip(_QUOTING)):
            return line
    return None


class KernelJoiner:
    """Lines in, lines out: each kernel record's wrapped lines joined (see the module's doc)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # the longest line a record may grow to
        self.record: _Record | None = None
        self.joined = self.rejected = 0  # lines records took, and lines after one they did not
        self.head: list[bytes] = []  # lines that are a prefix's start: the record may start on the next
        self.head_text = b""  # those lines joined

    def looks_cut(self) -> bool:
        """Whether what was read looks cut at a fixed column (see the module's doc)."""
        return self.rejected * 4 > self.joined

    def line(self, line: bytes) -> bytes:
        """One line without its newline; what can be written out now (lines, each ended)."""
        record = self.record
        rest = line.lstrip(_QUOTING)
        glue = record.takes(rest, self.limit) if record is not None and len(line) < self.limit else None
        if record is not None and glue is not None:
            record.join(rest, glue)
            self.joined += 1
            return b""
        if record is not None and not MARKERS.search(rest) and any(_word_key(w) in _FIELD_WORDS for w in rest.split()):
            self.rejected += 1  # a piece of a record (it holds fields) that could not go on from there
        out = record.lines() if record is not None else b""
        self.record = None
        if self.head and len(line) < self.limit and self._goes_on_with_head(line, rest):
            return out
        out += self._drop_head()
        if b"TRACE:" in line and len(line) < self.limit:
            self.record = _Record(line)
            return out
        if len(line) < self.limit and not MARKERS.search(line) and _PREFIX_HEAD.match(line.lstrip(_QUOTING)):
            self.head, self.head_text = [line], line
            return out
        return out + line + b"\n"

    def _goes_on_with_head(self, line: bytes, rest: bytes) -> bool:
        """Whether `line` completes the prefix's start held (the record starts) or goes on
        with it (held too)."""
        head = self.head
        completed = _joined(self.head_text, rest, _PREFIX_TRACE)
        if completed is not None and len(completed) < self.limit:
            self.record = _Record(completed, len(head) + 1)
            self.joined += len(head)
            self.head = []
            return True
        extended = _joined(self.head_text, rest, _PREFIX_HEAD) if len(head) < PREFIX_LINES else None
        if extended is not None:
            head.append(line)
            self.head_text = extended
        return extended is not None

    def _drop_head(self) -> bytes:
        """The prefix's start held, as it came (no record went on from it)."""
        head, self.head = self.head, []
        return b"".join(line + b"\n" for line in head)

    def end(self) -> bytes:
        """What is still held at the end of the input."""
        record, self.record = self.record, None
        return (record.lines() if record is not None else b"") + self._drop_head()


#: How many lines a trace line that is not whole may take to read whole.
NFT_LINES = 6
#: A word of what a `packet:` or `conntrack:` line prints: keywords, values (numbers,
#: addresses, MACs, flags), quoted interface names, operators (and `$ns1mac`, which a test
#: script left).
_NFT_WORD = re.compile(rb'[a-z0-9@.$][a-zA-Z0-9@,.:_/+-]*|"[^"\s]*"|==|!=|[{}]')
#: What a line that goes on with a packet's headers may start with besides a value: the
#: header keywords and field names nft prints, and its common named values.
_NFT_HEADS = frozenset(
    b"ip ip6 tcp udp udplite sctp dccp icmp icmpv6 igmp esp ah comp ether vlan arp meta ct th iif oif iifname "
    b"oifname saddr daddr dscp ecn ttl id protocol length sport dport flags window sequence ackseq doff reserved "
    b"urgptr type code hoplimit flowlabel nexthdr checksum mtu gateway pcp dei cfi htype ptype hlen plen operation "
    b"direction state status mark expiration helper label l3proto ce ef syn ack fin rst psh urg cwr ecn original "
    b"reply request new established related untracked invalid".split()
) | {f"cs{n}".encode() for n in range(8)} | {f"af{a}{b}".encode() for a in range(1, 5) for b in range(1, 4)}
_VALUE = re.compile(rb'[0-9@".:]|\$\w|.*[0-9,-]|[=!]=')  # a number, address, `@th,64,96`, `"name"`, a named value, `==`


def _nft_words(rest: bytes) -> bool:
    """Whether a line holds only words of a packet's headers (and more than an elision's dots)."""
    words = rest.split()
    return all(_NFT_WORD.fullmatch(w) for w in words) and any(w.strip(b".") for w in words)


def _goes_on(rest: bytes) -> bool:
    """Whether a line goes on with a packet's headers (see the module's doc)."""
    first = rest.split(None, 1)[0]
    return _nft_words(rest) and (first in _NFT_HEADS or _VALUE.match(first) is not None)


def _nft_match(line: bytes) -> re.Match[str] | None:
    return NFT_LINE.match(line.decode("utf-8", "replace"))


class NftJoiner:
    """Lines in, lines out: each `nft monitor trace` line's wrapped lines joined (see the
    module's doc)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.record: bytes | None = None
        self.whole = False  # the record reads whole (a packet or conntrack line): lines go on with it
        self.held: list[tuple[bytes, bytes, bytes]] = []  # (line as it came, without its quoting, glue before it)
        self.size = 0  # the joined line's length
        self.joined = self.rejected = 0  # lines records took, and lines after one they did not
        self.continued: list[int] = []  # the length of each line another was joined to
        self._previous = 0

    def looks_cut(self) -> bool:
        """Whether what was read looks cut at a fixed column (see the module's doc): nft
        lines, unlike kernel ones, are never padded into columns, so lines that were each
        continued at one and the same length say so too."""
        lengths = self.continued
        return self.rejected * 4 > self.joined or (len(lengths) >= 3 and len(set(lengths)) == 1)

    @staticmethod
    def _goes_on(ending: bytes, rest: bytes, glue: bytes) -> bool:
        """Whether `rest` goes on with a packet's headers after `ending`, the word `ending`
        ends in going on when there is no glue."""
        return _goes_on(rest) if glue else _nft_words(ending.rsplit(None, 1)[-1] + rest)

    def _text(self) -> bytes:
        """The record and the lines held after it as one line."""
        assert self.record is not None
        return self.record.rstrip(_BLANKS) + b"".join(glue + rest for _, rest, glue in self.held)

    def _flush(self, joined: bool) -> bytes:
        """The record and the lines held after it: one line (joined), or as they came."""
        if self.record is None:
            return b""
        text = self._text() if joined else b""
        record, held, self.record, self.held = self.record, self.held, None, []
        if joined:
            self.joined += len(held)
            return text + b"\n" * (1 + len(held))
        self.rejected += len(held)
        return b"".join(line + b"\n" for line in [record, *(line for line, _, _ in held)])

    def line(self, line: bytes) -> bytes:
        """One line without its newline; what can be written out now (lines, each ended)."""
        previous, self._previous = self._previous, len(line)
        out = b""
        if self.record is not None:
            rest = line.lstrip(_QUOTING).rstrip(_BLANKS)
            fits = rest and len(line) < self.limit and self.size + 1 + len(rest) <= self.limit and not MARKERS.search(rest)
            # a word a wrap broke at its hyphen (`ip filter cali-` / `fw-eth0 rule ...`) goes on
            ending = (self.held[-1][1] if self.held else self.record).rstrip(_BLANKS)
            glue = b"" if _broken_word(ending, rest, _last_word(ending)) else b" "
            if fits and (self._goes_on(ending, rest, glue) if self.whole else len(self.held) < NFT_LINES):
                self.held.append((line, rest, glue))
                self.size += len(glue) + len(rest)
                if self.whole:
                    self.continued.append(previous)
                    return b""
                if _nft_match(self._text()) is None:
                    return b""
                self.continued += [len(self.record), *(len(held) for held, _, _ in self.held[:-1])]
                return self._flush(True)
            if rest and not MARKERS.search(rest) and _nft_words(rest):
                self.rejected += 1  # a piece of trace output that could not go on from there
            out = self._flush(self.whole)  # a line that never read whole stays as it came
        if len(line) < self.limit and b"trace id " in line:
            match = _nft_match(line)
            # not whole yet, or a packet or conntrack line (parse_nft_monitor's groups 5 and 13)
            if match is None or any(match.group(5, 13)):
                self.record, self.whole, self.size = line, match is not None, len(line)
                return out
        return out + line + b"\n"

    def end(self) -> bytes:
        """What is still held at the end of the input."""
        return self._flush(self.whole)


_XT_KEYS = frozenset(f"{key}=".encode() for key in XT_PACKET_KEYS)
#: A word of what an xtables-monitor PACKET line prints, by its key (`FRAG:` for `FRAG:N`).
_XT_FIELD_WORDS = _XT_KEYS | {w.encode() for w in TCP_FLAGS | IP_FLAGS} | {b"OPT", b"FRAG:"}
_LL_BYTES = re.compile(rb"[0-9a-f]+")  # `%02x` of each byte (of a signed char: `ffffff80` for 0x80)
#: An option of an iptables rule (`-p`, `--dport`) or the `!` that negates one.
_OPTION = re.compile(rb"!|-[A-Za-z0-9]|--[a-z0-9][a-z0-9-]*")
#: Options that take two arguments: a line may start with the second (`--tcp-flags
#: FIN,SYN,RST,ACK` / `SYN`, `--match-set KUBE-CLUSTER-IP` / `dst,dst`).
_TWO_ARGUMENTS = frozenset({b"--tcp-flags", b"--match-set", b"--add-set", b"--del-set", b"--map-set"})
#: The family a rule xtables-monitor prints starts with (rule_cb: IPv4, IPv6, ARP).
_FAMILIES = frozenset({b"-4", b"-6", b"-0"})
_XT_TRACE = re.compile(XT_TRACE.pattern.encode(), re.ASCII)


def _xt_key(word: bytes) -> bytes:
    """What names a PACKET line's word (see _word_key; `FRAG:` for `FRAG:N`)."""
    return b"FRAG:" if word.startswith(b"FRAG:") else _word_key(word)


def _packet_word(word: bytes, previous: bytes) -> bool:
    """Whether a PACKET line prints `word` after `previous`: a field or flag, the link layer
    header's bytes after `LL=`, the `(...)` after `OPT`."""
    return (_xt_key(word) in _XT_FIELD_WORDS or (previous.startswith(b"LL=") and _LL_BYTES.fullmatch(word) is not None)
            or (previous == b"OPT" and word.startswith(b"(")))


def _packet_words(words: list[bytes], previous: bytes) -> bool:
    """Whether a PACKET line prints each of `words` in turn, after `previous`."""
    for word in words:
        if not _packet_word(word, previous):
            return False
        previous = word
    return True


class _XtPacket:
    """A PACKET line waiting for the lines that go on with its fields: lines of words it
    prints, the first a field it does not hold yet (it prints each once)."""

    def __init__(self, text: bytes) -> None:
        words = text.split()[3:]  # after `PACKET: N ID`
        self.held = {_xt_key(word) for word in words}
        self.before, self.last = ([b"", b"", *words])[-2:]

    def takes(self, rest: bytes) -> bool:
        words = rest.split()
        return _xt_key(words[0]) not in self.held and _packet_words(words, self.last)

    def join(self, rest: bytes) -> _XtPacket:
        words = rest.split()
        self.held.update(_xt_key(word) for word in words)
        self.before, self.last = [self.last, *words][-2:]
        return self

    def goes_on_in_word(self, rest: bytes) -> bool:
        """Whether `rest` goes on with the last word (broken at its hyphen), then fields."""
        first, *words = rest.split()
        return _packet_words([self.last + first, *words], self.before)

    def join_in_word(self, rest: bytes) -> _XtPacket:
        first, *words = rest.split()
        self.last += first
        self.held.add(_xt_key(self.last))
        return self.join(b" ".join(words)) if words else self


class _XtRule:
    """The rule a TRACE line of a rule prints, waiting for the lines that go on with it. It
    starts as xtables-monitor prints every rule, `-4 -t TABLE -A CHAIN` with the line's
    table and chain: a line goes on with that start while it is not whole; after it, a line
    that starts with an option or `!`, a line after one that ends with an option or `!` or
    with an option's first of two arguments, and any line within a `"..."`."""

    def __init__(self, table: bytes, chain: bytes) -> None:
        self.start = (_FAMILIES, {b"-t"}, {table}, {b"-A"}, {chain})
        self.seen = 0  # how many words of the start it holds; -1: a rule that starts otherwise (it takes nothing)
        self.quoted = False
        self.tail = [b"", b""]  # its last two words

    def _starts(self, words: list[bytes]) -> bool:
        """Whether `words` go on with the rule's start (as far as they reach into it)."""
        return self.seen >= 0 and all(word in self.start[self.seen + i] for i, word in enumerate(words[: 5 - self.seen]))

    def takes(self, rest: bytes) -> bool:
        words = rest.split()
        if self.seen < 5:
            return self._starts(words)
        before, last = self.tail
        return (self.quoted or _OPTION.fullmatch(words[0]) is not None or _OPTION.fullmatch(last) is not None
                or before in _TWO_ARGUMENTS)

    def goes_on_in_word(self, rest: bytes) -> bool:
        """Whether `rest` goes on with the rule's last word (broken at its hyphen, its start
        whole), then, if anything, with an option or `!`, or with its value when the word is
        an option (`--dst-` / `type LOCAL`): not an author's sentence."""
        words = rest.split(None, 2)
        return self.seen == 5 and (len(words) == 1 or self.quoted or _OPTION.fullmatch(words[1]) is not None
                                   or _OPTION.fullmatch(self.tail[-1] + words[0]) is not None)

    def join_in_word(self, rest: bytes) -> _XtRule:
        first, _, after = rest.partition(b" ")
        self.quoted ^= (first.count(b'"') - first.count(b'\\"')) % 2 == 1
        self.tail[-1] += first
        return self.join(after) if after.strip() else self

    def join(self, rest: bytes) -> _XtRule:
        words = rest.split()
        if 0 <= self.seen < 5:
            self.seen = min(self.seen + len(words), 5) if self._starts(words) else -1
        for word in words:
            self.quoted ^= (word.count(b'"') - word.count(b'\\"')) % 2 == 1
        self.tail = [*self.tail, *words][-2:]
        return self


class _XtHeader:
    """A TRACE line cut before its `table:chain:kind` (a long chain's name went to the next
    line): it takes the next line when the two read as one TRACE line."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def takes(self, rest: bytes) -> bool:
        return _XT_TRACE.match(self.text + b" " + rest) is not None

    def join(self, rest: bytes) -> _XtState | None:
        return _xt_state(self.text + b" " + rest)


_XtState = _XtPacket | _XtRule | _XtHeader


def _xt_state(text: bytes) -> _XtState | None:
    """What may go on with an xtables-monitor line (`text`: without quoting): a PACKET line's
    fields, a rule's rule, a TRACE line's header; None: nothing (a policy or return line)."""
    if text.startswith(b"PACKET: "):
        return _XtPacket(text)
    match = _XT_TRACE.match(text)
    if match is None:
        return _XtHeader(text)
    if match.group(5) != b"rule":
        return None
    return _XtRule(match.group(3), match.group(4)).join(match.group(9) or b"")


class XtablesJoiner:
    """Lines in, lines out: each `xtables-monitor --trace` line's wrapped lines joined (see
    the module's doc)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []  # the record's lines: the first as it came, the others without quoting
        self.glues: list[bytes] = []  # before each part after the first: a space, or none (a word going on)
        self.word = b""  # the record's last word, across parts glued without a space
        self.size = 0  # the joined line's length
        self.state: _XtState | None = None  # what may go on with the record
        self.joined = self.rejected = 0  # lines records took, and lines after one they did not

    def looks_cut(self) -> bool:
        """Whether what was read looks cut at a fixed column (see the module's doc)."""
        return self.rejected * 4 > self.joined

    def line(self, line: bytes) -> bytes:
        """One line without its newline; what can be written out now (lines, each ended)."""
        rest = line.lstrip(_QUOTING).rstrip(_BLANKS)
        out = b""
        if self.parts:
            piece = bool(rest) and not MARKERS.search(rest)
            fits = piece and self.state is not None and len(line) < self.limit and self.size + 1 + len(rest) <= self.limit
            if fits and self._goes_on_in_word(rest):
                self._add(rest, b"")
                return b""
            if fits and self.state is not None and self.state.takes(rest):
                self.state = self.state.join(rest)
                self._add(rest, b" ")
                return b""
            if piece and any(_word_key(word) in _XT_KEYS for word in rest.split()):
                self.rejected += 1  # a piece of a PACKET line (it holds fields) that could not go on from there
            out = self.end()
        if len(line) < self.limit and rest.startswith((b"PACKET: ", b"TRACE: ")):
            self.parts, self.glues, self.size, self.state = [line], [], len(line), _xt_state(rest)
            self.word = _last_word(rest)
            return out
        return out + line + b"\n"

    def _add(self, rest: bytes, glue: bytes) -> None:
        """Take `rest` into the record after `glue`."""
        self.parts[-1] = self.parts[-1].rstrip(_BLANKS)
        self.parts.append(rest)
        self.glues.append(glue)
        self.size += len(glue) + len(rest)
        self.word = _word_after(self.word, glue, rest.split())
        self.joined += 1

    def _goes_on_in_word(self, rest: bytes) -> bool:
        """Whether `rest` goes on with the word the record ends in, which a wrap broke at its
        hyphen (`filter:DOCKER-` / `USER:return:1`, `-j DOCKER-` / `ISOLATION-STAGE-2`,
        `IN=br-` / `lan OUT=...`), and if so the state after it: a PACKET line's words all
        fields, a rule whose start is whole then an option, or (read again, glued: a TRACE line
        and its rule's start are short) a TRACE line, its header's start broken at a hyphen
        again, or its rule's start."""
        state = self.state
        if not _broken_word(self.parts[-1].rstrip(_BLANKS), rest, self.word):
            return False
        if isinstance(state, _XtPacket) or (isinstance(state, _XtRule) and state.seen == 5):
            if not state.goes_on_in_word(rest):
                return False
            self.state = state.join_in_word(rest)
            return True
        text = self.text().lstrip(_QUOTING).rstrip(_BLANKS) + rest
        glued = _xt_state(text)
        broken_again = _HYPHEN_END.search(text) is not None
        if isinstance(glued, _XtRule):
            reads = glued.seen != -1 or broken_again
        else:
            reads = not isinstance(glued, (_XtHeader, _XtPacket)) or broken_again
        if reads:
            self.state = glued
        return reads

    def text(self) -> bytes:
        """The record as one line."""
        return _glued(self.parts, self.glues)

    def end(self) -> bytes:
        """What is still held at the end of the input."""
        if not self.parts:
            return b""
        text, taken = self.text(), len(self.parts)
        self.parts, self.glues = [], []
        return text + b"\n" * taken


Joiner = KernelJoiner | NftJoiner | XtablesJoiner


def is_wrapped(head: bytes, joiner: Joiner, whole: bool) -> bool:
    """Whether the first lines of a log (`head`; `whole`: all of it, else its last line may be
    cut) hold a wrapped record, and not a cut at a fixed column (see the module's doc)."""
    lines = head.split(b"\n")
    if not whole or not lines[-1]:
        lines.pop()
    for line in lines:
        joiner.line(line)
    joiner.end()
    return joiner.joined > 0 and not joiner.looks_cut()


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
