"""Parse legacy iptables TRACE lines (kernel log format).

Accepted shapes, all from real tools:
  rsyslog   `Dec  2 03:38:09 master kernel: TRACE: nat:PREROUTING:rule:1 IN=... `
  ulogd     `Nov 22 10:07:14 master TRACE: raw:PREROUTING:policy:2  IN=... TOS=00 ... MARK=0x0`
  dmesg     `[  480.849238] TRACE: ...`
  RFC 3339  `2026-11-22T10:07:14.123456+00:00 master kernel: TRACE: ...`
Damaged lines (cut or glued by the logger) keep whatever fields are still readable and are
flagged `damaged`; a line whose TRACE header is unreadable is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chainlab.trace.ascii import is_digits, upper, words
from chainlab.trace.model import Fields, Step

#: A TRACE record header's parts: the table, the kinds of step, the rule position. A rule
#: position has at most 10 digits (a chain of 2**32 rules does not exist; a longer number is
#: damage, and int() of thousands of digits would raise).
_TABLE, _KINDS, _POSITION = r"[A-Za-z_][A-Za-z0-9_]*", r"rule|return|policy", r"\d{1,10}"
HEADER = re.compile(rf"TRACE: ({_TABLE}):(\S+?):({_KINDS}):({_POSITION})(?=\s|$)", re.ASCII)
#: HEADER's record header (after `TRACE: `) without its groups, for byte patterns (respace).
HEADER_BYTES = rf"{_TABLE}:\S+?:(?:{_KINDS}):{_POSITION}".encode()
TRACE_LIKE = re.compile(rf"TRACE: {_TABLE}:", re.ASCII)
#: A TRACE record's header and first field without the `TRACE: ` before it (cut off by whoever
#: posted the log): not read as a record, but worth saying so.
BARE_HEADER = re.compile(rf"(?:^|\s){_TABLE}:\S+:(?:{_KINDS}):{_POSITION}\s+IN=".encode(), re.ASCII | re.MULTILINE)
_SHORT_FULL = r"[A-Z][a-z]{2} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [A-Za-z0-9+-]+"  # weekday ... zone
#: A host name as a log line's prefix has it.
HOST_WORD = r"[^\s:\[\]]+"
_HOST = rf"\s+{HOST_WORD}\s"  # spaces, the host, a space
#: The start of a syslog or journal line, up to its time: the time as syslog (with
#: journalctl's `short-precise` fraction), RFC 3339 (also after an RFC 5424 `<PRI>1`),
#: journalctl's `short-full` (weekday, date, time, zone), `short-monotonic` (`[ uptime]`) or
#: `short-unix`; after the `>` marks of a quote (a log posted in a mail or a forum), as
#: parse_nft.QUOTED.
PREFIX_TIME = (
    r"^\s*(?:>\s*)*(?:<\d+>(?:1 )?)?"
    r"(?:(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?)|(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*)"
    rf"|(?P<full>{_SHORT_FULL})|\[\s*(?P<mono>\d+\.\d+)\]"
    r"|(?P<unix>\d{9,11}\.\d+))"
)
#: A syslog or journal line's time and host.
PREFIX = re.compile(rf"{PREFIX_TIME}\s+(?P<host>{HOST_WORD})\s", re.ASCII)
UPTIME = re.compile(r"\[\s*(\d+\.\d+)\]", re.ASCII)
#: Where a glued-on second line's prefix starts (syslog, journalctl's short-full prefix whole
#: with its host: a capitalised word before an RFC 3339 time is not one, or RFC 3339 time, or
#: dmesg uptime).
NEXT_PREFIX = re.compile(
    r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    rf"|{_SHORT_FULL}{_HOST}"
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\[\s*\d+\.\d+\]).*$",
    re.ASCII | re.DOTALL,
)
PROTOCOLS = frozenset({"ICMP", "TCP", "UDP", "UDPLITE", "SCTP", "DCCP", "GRE", "ESP", "AH", "IGMP", "ICMPV6"})
IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}", re.ASCII)
#: IPv6 as the kernel prints it (`%pI6`, every group written out) or compressed (ulogd,
#: nft): 2-45 characters of hex digits, colons and dots, with at least two colons.
IPV6 = re.compile(r"(?=(?:[^:]*:){2})[0-9A-Fa-f:.]{2,45}", re.ASCII)
HEX = re.compile(r"0x[0-9a-fA-F]+", re.ASCII)
TCP_FLAGS = frozenset({"CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN"})
IP_FLAGS = frozenset({"DF", "MF", "CE"})
#: A fragment after the first: its offset (it has no layer-4 header, so no ports).
FRAG_OFFSET = re.compile(r"FRAG:[0-9]+")
KNOWN_KEYS = frozenset(
    "IN OUT MAC PHYSIN PHYSOUT SRC DST LEN TOS PREC TTL ID FRAG OPT PROTO TYPE CODE SEQ ACK "
    "WINDOW RES URGP SPT DPT UID GID MARK MTU INCOMPLETE TC HOPLIMIT FLOWLBL".split()
)
#: Known keys whose values the analysis does not need (checked first: they are most tokens).
UNUSED_KEYS = frozenset("MAC PHYSIN PHYSOUT LEN TOS PREC FRAG OPT ACK RES UID GID MTU INCOMPLETE TC".split())


@dataclass(slots=True)
class KernelRecord:
    """One TRACE record: header, fields, and the syslog host/time if the line had them."""

    step: Step
    fields: Fields
    host: str | None


def protocol_name(name: str) -> str | None:
    """An upper-cased PROTO value as a protocol: a known name or a number of 1-3 digits."""
    return name if name in PROTOCOLS or (is_digits(name) and len(name) <= 3) else None


def _int(value: str, limit: int) -> int | None:
    """A decimal number of 1-10 ASCII digits up to `limit`, else None."""
    if len(value) <= 10 and is_digits(value):
        number = int(value)
        return number if number <= limit else None
    return None


def parse_fields(tail: str) -> Fields:
    """Parse the `IN=... OUT=... SRC=...` part of a kernel TRACE/LOG line (IPv4 or IPv6).

    The first `ID=` before any layer-4 key of an IPv4 line is the IP id, a later one (and
    any in an IPv6 line, which has no IP id) the ICMP echo id. Tokens inside `[...]` (the
    quoted header of an ICMP error) are skipped.
    """
    f = Fields()
    damaged = False
    proto: str | None = None
    seen_l4 = False
    ip_id_done = False
    v6 = False
    ids = 0
    proto_token = False
    flags: set[str] = set()
    depth = 0
    for token in words(tail):
        if depth or token[0] == "[":
            if token[0] == "[":
                depth += 1
            depth = max(depth - token.count("]"), 0)
            continue
        key, sep, value = token.partition("=")
        if not sep:
            if token in TCP_FLAGS:
                flags.add(token)
            elif (token not in IP_FLAGS and token != "OPT" and not (token.startswith("(") and token.endswith(")"))
                  and not FRAG_OFFSET.fullmatch(token)):
                damaged = True
            continue
        if key in UNUSED_KEYS:
            v6 |= key == "TC"
            continue
        if key not in KNOWN_KEYS:
            damaged = True
        elif key == "SRC" or key == "DST":
            if IPV4.fullmatch(value) or IPV6.fullmatch(value):
                v6 |= ":" in value
                if key == "SRC":
                    f.src = value
                else:
                    f.dst = value
            else:
                damaged = True
        elif key == "IN":
            f.in_if = value or None
        elif key == "OUT":
            f.out_if = value or None
        elif key == "TTL" or key == "HOPLIMIT":
            f.ttl = _int(value, 255)
            damaged |= f.ttl is None
            v6 |= key == "HOPLIMIT"
        elif key == "FLOWLBL":
            f.flow_label = _int(value, 0xFFFFF)
            damaged |= f.flow_label is None
            v6 = True
        elif key == "PROTO":
            name = upper(value)
            proto = protocol_name(name)
            damaged |= proto is None
            proto_token = True
            seen_l4 = True
        elif key == "ID":
            ids += 1
            number = _int(value, 65535)
            damaged |= number is None
            if not seen_l4 and not ip_id_done and not v6:
                f.ip_id = number
                ip_id_done = True
            else:
                f.icmp_id = number
        elif key == "TYPE":
            f.icmp_type = _int(value, 255)
            damaged |= f.icmp_type is None
            seen_l4 = True
            proto = proto or "ICMP"
        elif key == "CODE":
            seen_l4 = True
            proto = proto or "ICMP"
        elif key == "SEQ":
            if proto in (None, "ICMP", "ICMPV6") and f.sport is None:
                f.icmp_seq = _int(value, 0xFFFFFFFF)
                damaged |= f.icmp_seq is None
            else:
                f.tcp_seq = _int(value, 0xFFFFFFFF)
        elif key == "SPT" or key == "DPT":
            port = _int(value, 65535)
            damaged |= port is None
            seen_l4 = True
            if key == "SPT":
                f.sport = port
            else:
                f.dport = port
        elif key == "WINDOW" or key == "URGP":
            proto = proto or "TCP"
        elif key == "MARK":
            if HEX.fullmatch(value):
                f.mark = int(value, 16)
            else:
                damaged = True
    if flags and proto in (None, "TCP"):
        f.tcp_flags = frozenset(flags)
        proto = "TCP"
    if proto is None and f.sport is not None:
        damaged = True
    elif proto is None and ids == 1 and f.icmp_seq is not None and not v6:
        # One ID= and a SEQ= but no PROTO/TYPE/CODE: the glue ate the middle of the
        # line, so this ID may be the ICMP id as well as the IP id. Trust neither.
        f.icmp_id = f.ip_id
        f.ip_id = None
        damaged = True
    f.proto = proto
    if not proto_token or f.src is None or f.dst is None or (f.ip_id is None and not v6) or proto is None:
        damaged = True
    f.damaged = damaged
    return f


def prefix_kind(text: str) -> str | None:
    """Which of PREFIX's time forms a syslog prefix with a host has (`bsd`, `iso`, ...);
    None when the text is no such prefix."""
    match = PREFIX.match(text)
    return next(k for k in ("bsd", "iso", "full", "mono", "unix") if match.group(k)) if match else None


def _prefix(text: str) -> tuple[str | None, str | None]:
    """(host, time) from what precedes `TRACE:`; dmesg lines have no host."""
    match = PREFIX.match(text)
    if match:
        return match.group("host"), next(t for t in match.group("bsd", "iso", "full", "mono", "unix") if t)
    uptime = UPTIME.search(text)
    return None, uptime.group(1) if uptime else None


class KernelLineParser:
    """Parses kernel-format lines; remembers recent field parses, since the lines of one
    packet mostly repeat the same fields after the header, and recent prefix parses, since
    consecutive lines mostly share their syslog time and host."""

    CACHE_SIZE = 4096

    def __init__(self, want_host: bool = True):
        self.want_host = want_host
        self._cache: dict[str, Fields] = {}
        #: Bumped when the field cache is emptied: no Fields returned before will be again.
        self.generation = 0
        self._prefixes: dict[str, tuple[str | None, str | None]] = {}

    def fields(self, tail: str) -> Fields:
        cached = self._cache.get(tail)
        if cached is None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
                self.generation += 1
            cached = self._cache[tail] = parse_fields(tail)
        return cached

    def prefix(self, text: str) -> tuple[str | None, str | None]:
        """(host, time) of what precedes the first header (host None if unwanted)."""
        cached = self._prefixes.get(text)
        if cached is None:
            if len(self._prefixes) >= self.CACHE_SIZE:
                self._prefixes.clear()
            host, time = _prefix(text)
            cached = self._prefixes[text] = (host if self.want_host else None, time)
        return cached

    def parse_single(self, line: str, number: int) -> tuple[Step, Fields, str | None] | None:
        """The common case, cheaply: a line with one `TRACE: ` and a readable header.

        None for any other line (glued, damaged header, no header): `parse` handles those.
        """
        start = line.find("TRACE: ")
        if start < 0 or line.find("TRACE: ", start + 7) >= 0:
            return None
        match = HEADER.match(line, start)
        if match is None:
            return None
        host, time = self.prefix(line[:start])
        fields = self.fields(line[match.end() :])
        table, chain, kind, position = match.groups()
        return Step(table, chain, kind, int(position), None, None, None, fields.mark, number, time), fields, host

    def parse(self, line: str, number: int) -> tuple[list[KernelRecord], int]:
        """Records found on one line, and how many TRACE-looking fragments were unreadable.

        A glued line (two records run together) yields both records; the first one's
        fields end where the second header starts, and the second one's host and time are
        those of the syslog prefix glued on before it when that prefix has the line's own
        form with a host (a central log glues lines of different hosts), else the first
        one's (a time inside `[Thu Apr 23 ...]` or a lone `[ 100.5]` names no host); on a
        line without a host (dmesg's), a record glued on after its own `[ 100.5]` takes that
        time. Returned Fields are shared between equal lines: treat them as read-only.
        """
        single = self.parse_single(line, number)
        if single is not None:
            return [KernelRecord(*single)], 0
        headers = list(HEADER.finditer(line))
        bad = 0
        if line.count("TRACE: ") != len(headers):
            bad = max(len(TRACE_LIKE.findall(line)) - len(headers), 0)
        if not headers:
            return [], bad
        host, time = self.prefix(line[: headers[0].start()])
        records = []
        last = len(headers) - 1
        own = prefix_kind(line[: headers[0].start()]) if last else None  # the form glued prefixes must have
        for i, match in enumerate(headers):
            glued = NEXT_PREFIX.search(line, headers[i - 1].end(), match.start()) if i else None
            if glued and own and prefix_kind(glued.group()) == own:  # a syslog prefix of the line's own form
                host, time = self.prefix(glued.group())
            elif glued and not own and UPTIME.match(glued.group()):  # on a line without a host, dmesg's uptime
                time = self.prefix(glued.group())[1]
            if i < last:
                fields = parse_fields(NEXT_PREFIX.sub("", line[match.end() : headers[i + 1].start()]))
                fields.damaged = True
            else:
                fields = self.fields(line[match.end() :])
            table, chain, kind, position = match.groups()
            step = Step(table, chain, kind, int(position), mark=fields.mark, line=number, time=time)
            records.append(KernelRecord(step, fields, host))
        return records, bad


def parse_line(line: str, number: int) -> tuple[list[KernelRecord], int]:
    """Parse one line on its own (see KernelLineParser.parse)."""
    return KernelLineParser().parse(line, number)
