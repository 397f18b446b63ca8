"""Read trace log files of any supported format into events, counting what was skipped.

Lines: a log is split at b"\n"; a line longer than LINE_LIMIT bytes keeps its first
LINE_LIMIT bytes and is counted in `cut_lines` (its records are damaged); trailing b"\r"
go; the rest is decoded as UTF-8 (bad bytes become U+FFFD). A line without `TRACE:`,
`trace id` or `PACKET:` is no trace line in any format and is only counted, so long runs
of other text (even 2 G empty lines) cost what searching them costs. Files are read in
chunks, gzip ones decompressed in chunks: memory stays flat whatever the input.

A big kernel-format file is parsed in a helper process while this one assembles packets.
The helper sends the records in batches through a pipe (whose small buffer keeps memory
flat). Lines that repeat a cached field parse share one Fields object here as they do in
the parser (less to send and build, and the assembler's shortcut for equal fields tries
identity first): each new shared Fields object travels once with a serial number, later
records name the serial, and both sides forget all serials whenever the parser empties its
cache.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gzip
import itertools
import re
import signal
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainlab.errors import InputError, Problem
from chainlab.trace.ascii import WHITESPACE
from chainlab.trace.model import MARKERS, Event, Fields, FileEnd, Step, fill_missing
from chainlab.trace.netfilter import TABLES
from chainlab.trace.parse_kernel import BARE_HEADER, TRACE_LIKE, KernelLineParser
from chainlab.trace.parse_nft import XT_PACKET, XT_TRACE, NftRecord, parse_nft_monitor, parse_xtables_monitor
from chainlab.trace.respace import needs_respace, respace
from chainlab.trace.unwrap import Joiner, KernelJoiner, NftJoiner, XtablesJoiner, is_wrapped, unwrap

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

KERNEL, XTABLES_MONITOR, NFT_MONITOR = "kernel", "xtables-monitor", "nft-monitor"
#: The formats with their records hard-wrapped over several lines (a post's, a mail's):
#: read through unwrap, which joins them.
KERNEL_WRAPPED, XTABLES_WRAPPED, NFT_WRAPPED = "kernel-wrapped", "xtables-monitor-wrapped", "nft-monitor-wrapped"
#: Each wrapped format: the format its lines are in once joined, and the joiner.
WRAPPED: dict[str, tuple[str, type[Joiner]]] = {
    KERNEL_WRAPPED: (KERNEL, KernelJoiner), XTABLES_WRAPPED: (XTABLES_MONITOR, XtablesJoiner),
    NFT_WRAPPED: (NFT_MONITOR, NftJoiner)}
#: Ends a format's name when the log's spacing was changed by a copy (a post's non-breaking
#: spaces, a lost space): read through respace first (`kernel+respaced`, `kernel-wrapped+respaced`).
RESPACED = "+respaced"
SNIFF_LINES = 500
#: The format is told from the first SNIFF_LINES lines within the first SNIFF_BYTES.
SNIFF_BYTES = 4 << 20
#: A log is read as wrapped when its first WRAP_SNIFF_BYTES show a wrapped record.
WRAP_SNIFF_BYTES = 64 << 10
LINE_LIMIT = 64 << 10
CHUNK = 1 << 20
#: nft trace ids whose `packet:` line (a base chain entered) no step followed yet, and the
#: headers of each trace id's last `packet:` line: kept for this many trace ids at most (the
#: ones used longest ago go first).
PENDING_TRACE_IDS = 4096
#: Kernel-format files from this size on are parsed in a helper process (below it, starting
#: one costs more than it saves).
HELPER_MIN_BYTES = 16 << 20
HELPER_BATCH_LINES = 2000
_FIELD_NAMES = Fields.__slots__

#: A kernel record: step, fields, host, and whether the parser may hand out the same
#: Fields object again (the last record of a line: its fields come from the cache).
_Record = tuple[Step, Fields, str | None, bool]


@dataclass
class ReadStats:
    """What happened to the lines of the inputs."""

    lines: int = 0
    trace_records: int = 0
    skipped_lines: int = 0
    ignored_lines: int = 0
    cut_lines: int = 0
    formats: dict[str, str] = field(default_factory=dict)
    #: Packets by how their lines were grouped (model.IDENTITIES).
    identities: dict[str, int] = field(default_factory=dict)
    #: Packets that --match took (None: no --match).
    matched: int | None = None


@dataclass(frozen=True)
class LogSource:
    """A log file and the node it belongs to (None: take it from each line's host field)."""

    path: Path
    node: str | None = None

    @property
    def fallback_node(self) -> str:
        return self.node or self.path.name.split(".")[0]


def raw_chunks(path: Path, limit: int | None = None) -> Iterator[bytes]:
    """The bytes of a log (gunzipped if its name ends in .gz) in chunks of at most CHUNK,
    up to `limit` bytes if given.

    A file that cannot be read to its end (unreadable, not gzip, truncated) is an
    InputError, even half-way through: its events would be an incomplete story.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    left = -1 if limit is None else limit
    with read_errors(path), opener(path, "rb") as handle:
        while left:
            chunk = handle.read(CHUNK if left < 0 else min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk) if left > 0 else 0
            yield chunk


def log_chunks(path: Path, fmt: str) -> Iterator[bytes]:
    """The bytes of a log as the parsers read them: raw_chunks, respaced and with a wrapped
    log's records joined as its format says."""
    chunks = raw_chunks(path)
    if fmt.endswith(RESPACED):
        chunks, fmt = respace(chunks), fmt.removesuffix(RESPACED)
    return unwrap(chunks, WRAPPED[fmt][1](LINE_LIMIT)) if fmt in WRAPPED else chunks


def base_format(fmt: str) -> str:
    """The format a log's lines are in once respaced and any wrapped records joined."""
    fmt = fmt.removesuffix(RESPACED)
    return WRAPPED[fmt][0] if fmt in WRAPPED else fmt


def changed_on_reading(fmt: str) -> bool:
    """Whether a log of format `fmt` is read changed (respaced, records joined): its bytes
    must then come from log_chunks, not from the file as it is."""
    return fmt.endswith(RESPACED) or fmt in WRAPPED


def headerless_records(path: Path, limit: int = CHUNK) -> int:
    """How many lines in the first `limit` bytes of a log look like kernel TRACE records
    whose `TRACE: ` was cut off (`raw:PREROUTING:policy:2 IN=...`): of an iptables table,
    so that a line cut inside its table's name (`w:PREROUTING:...`, a post's fixed column)
    is not taken for one."""
    head = next(raw_chunks(path, limit), b"")
    return sum(1 for line in head.splitlines()
               if (bare := BARE_HEADER.search(line)) and b"TRACE:" not in line
               and bare[0].lstrip().split(b":", 1)[0].decode() in TABLES)


def encoding_note(path: Path) -> str | None:
    """Why a log with lines but no (placed) trace record may have been read as noise: it is
    gzip without a .gz name, UTF-16 text (a log saved by a Windows tool), or a mail's
    quoted-printable body (`SRC=3D10.0.0.1`, lines broken with a trailing `=`)."""
    with open(path, "rb") as handle:
        head = handle.read(64 << 10)
    if head.startswith(b"\x1f\x8b") and path.suffix != ".gz":
        return f"{path} is gzip-compressed but not named .gz: name it FILE.gz, or `zcat FILE > LOG`"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"T\x00R\x00A\x00C\x00E\x00" in head:
        return f"{path} is UTF-16 text: `iconv -f UTF-16 -t UTF-8 FILE > LOG`, then analyse LOG"
    if QUOTED_PRINTABLE.search(head):
        return (f"{path} looks quoted-printable (a mail's `=3D` for `=`, long lines broken with a trailing `=`):"
                " `python3 -m quopri -d < FILE > LOG`, then analyse LOG")
    return None


def check_gzip_intact(path: Path) -> None:
    """Decompress a .gz log to its end, for output that streams while the log is parsed:
    a truncated file is then refused before the first byte. Decompressing takes a few
    percent of the time parsing does."""
    if path.suffix != ".gz":
        return
    for _ in raw_chunks(path):
        pass


#: A kernel trace field as a quoted-printable mail body writes it (`=` as `=3D`).
QUOTED_PRINTABLE = re.compile(rb"\b(?:IN|OUT|SRC|DST|LEN|TTL|ID|PROTO)=3D")

#: (line number, text, cut) of a line that holds a marker.
Line = tuple[int, str, bool]


def _text(raw: bytes) -> str:
    """A line's text, without what may stand before its first character: NUL bytes (a log
    truncated under its writer, as by logrotate's copytruncate) and a UTF-8 byte-order mark."""
    raw = raw.rstrip(b"\r").lstrip(b"\0")
    return raw.decode("utf-8-sig" if raw.startswith(codecs.BOM_UTF8) else "utf-8", "replace")


def _long_lines(data: bytes, start: int, end: int) -> int:
    """How many of the whole lines in data[start:end] (which ends with b"\n") are longer
    than LINE_LIMIT: jumps LINE_LIMIT bytes at a time, so short lines cost nothing each."""
    count = 0
    while end - start > LINE_LIMIT:
        newline = data.rfind(b"\n", start, start + LINE_LIMIT + 1)
        if newline >= 0:
            start = newline + 1
        else:
            count += 1
            start = data.find(b"\n", start + LINE_LIMIT, end) + 1
    return count


def marked_lines(chunks: Iterator[bytes], stats: ReadStats) -> Iterator[Line]:
    """The lines of a log that hold a marker (the rest are counted in `stats.lines`,
    `stats.ignored_lines` and, if too long, `stats.cut_lines`)."""
    number = 0  # lines before the current position
    carry = b""  # the start of a line that goes on in the next chunk (at most LINE_LIMIT bytes)
    carry_cut = False
    carrying = False
    for data in chunks:
        pos = 0
        if carrying:
            newline = data.find(b"\n")
            head = data if newline < 0 else data[:newline]
            room = LINE_LIMIT - len(carry)
            carry_cut |= len(head) > room
            carry += head[:room]
            if newline < 0:
                continue
            number += 1
            yield from _one_line(number, carry, carry_cut, stats)
            carry, carry_cut, carrying, pos = b"", False, False, newline + 1
        last = data.rfind(b"\n") + 1  # the whole lines of this chunk end here
        for match in MARKERS.finditer(data, pos, last):
            at = match.start()
            if at < pos:
                continue  # another marker on a line already handled
            start = data.rfind(b"\n", pos, at) + 1 or pos
            end = data.find(b"\n", at)
            skipped = data.count(b"\n", pos, start)
            number += skipped
            stats.lines += skipped
            stats.ignored_lines += skipped
            stats.cut_lines += _long_lines(data, pos, start)
            number += 1
            if end - start <= LINE_LIMIT:
                stats.lines += 1
                yield number, _text(data[start:end]), False
            else:
                yield from _one_line(number, data[start : start + LINE_LIMIT], True, stats)
            pos = end + 1
        skipped = data.count(b"\n", pos, last)
        number += skipped
        stats.lines += skipped
        stats.ignored_lines += skipped
        stats.cut_lines += _long_lines(data, pos, last)
        if last < len(data):
            rest = data[last:]
            carry, carry_cut, carrying = rest[:LINE_LIMIT], len(rest) > LINE_LIMIT, True
    if carrying:
        yield from _one_line(number + 1, carry, carry_cut, stats)


def _one_line(number: int, raw: bytes, cut: bool, stats: ReadStats) -> Iterator[Line]:
    """Count one line (already cut to LINE_LIMIT); yield it if it holds a marker."""
    stats.lines += 1
    stats.cut_lines += cut
    if MARKERS.search(raw):
        yield number, _text(raw), cut
    else:
        stats.ignored_lines += 1


@contextlib.contextmanager
def read_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError([Problem(str(path), "", f"log: {_read_failure(exc, path)}")]) from None


def _read_failure(exc: OSError | EOFError | zlib.error, path: Path) -> str:
    if isinstance(exc, EOFError):
        return "gzip data ends early (truncated file?)"
    if isinstance(exc, gzip.BadGzipFile) and str(exc).startswith("Not a gzipped file"):
        with open(path, "rb") as handle:
            if handle.read(2) == b"\x1f\x8b":  # the first member's magic was read: what follows it is not
                return ("bytes after the gzip data are not gzip (gzip -d ignores them, with a warning:"
                        " `gzip -dc FILE > LOG`, then analyse LOG)")
        return "not a gzip file"
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return f"corrupt gzip data ({exc})"
    return f"cannot read: {exc.strerror or exc}"


def sniff_format(lines: list[str]) -> str:
    """The format of a log, from its first lines (kernel format when nothing else fits)."""
    for line in lines:
        if XT_PACKET.match(line) or XT_TRACE.match(line):
            return XTABLES_MONITOR
        if line.lstrip(WHITESPACE + ">").startswith("trace id "):  # parse_nft.QUOTED
            return NFT_MONITOR
        if TRACE_LIKE.search(line):
            return KERNEL
    return KERNEL


def log_format(path: Path) -> str:
    """The format of a log file, from its first SNIFF_LINES lines (within SNIFF_BYTES); one
    of WRAPPED when its first WRAP_SNIFF_BYTES hold a record wrapped over lines; ending in
    RESPACED when they show spacing that a copy changed."""
    head = []
    chunks = raw_chunks(path, SNIFF_BYTES)
    first = next(chunks, b"")  # CHUNK bytes: the wrap sniff's too
    suffix = ""
    if needs_respace(first[:WRAP_SNIFF_BYTES]):
        suffix, chunks = RESPACED, respace(itertools.chain([first], chunks))
        first = next(chunks, b"")
    for number, text, _ in marked_lines(itertools.chain([first], chunks), ReadStats()):
        if number > SNIFF_LINES:
            break  # the rest of SNIFF_BYTES would only be read to be thrown away
        head.append(text)
    fmt = sniff_format(head)
    for wrapped, (unwrapped, joiner) in WRAPPED.items():
        if fmt == unwrapped:
            wrap_head = first[:WRAP_SNIFF_BYTES]
            if is_wrapped(wrap_head, joiner(LINE_LIMIT), whole=len(wrap_head) < WRAP_SNIFF_BYTES):
                return wrapped + suffix
    return fmt + suffix


def read_events(source: LogSource, stats: ReadStats) -> Iterator[Event | FileEnd]:
    """Events of one file, in file order, then a FileEnd."""
    fmt = log_format(source.path)
    stats.formats[str(source.path)] = fmt
    kernel = base_format(fmt) == KERNEL
    if kernel and source.path.stat().st_size >= HELPER_MIN_BYTES:
        yield from _kernel_events_from_helper(source, fmt, stats)
        yield FileEnd({})
    elif kernel:
        yield from _kernel_events(marked_lines(log_chunks(source.path, fmt), stats), source, stats)
        yield FileEnd({})
    else:
        parse = parse_xtables_monitor if base_format(fmt) == XTABLES_MONITOR else parse_nft_monitor
        yield from _nft_events(marked_lines(log_chunks(source.path, fmt), stats), source, stats, parse)


def _kernel_records(lines: Iterator[Line], parser: KernelLineParser, stats: ReadStats) -> Iterator[_Record]:
    parse_single = parser.parse_single
    for number, line, cut in lines:
        if "TRACE:" not in line:
            stats.ignored_lines += 1
            continue
        single = parse_single(line, number)
        if single is not None:
            stats.trace_records += 1
            if cut:
                yield single[0], dataclasses.replace(single[1], damaged=True), single[2], False
            else:
                yield single[0], single[1], single[2], True
            continue
        records, bad = parser.parse(line, number)
        stats.skipped_lines += bad
        if not records and not bad:
            stats.ignored_lines += 1
        last = len(records) - 1
        for i, record in enumerate(records):
            stats.trace_records += 1
            if cut and i == last:
                yield record.step, dataclasses.replace(record.fields, damaged=True), record.host, False
            else:
                yield record.step, record.fields, record.host, i == last and not cut


def _kernel_events(lines: Iterator[Line], source: LogSource, stats: ReadStats) -> Iterator[Event]:
    fallback = source.fallback_node
    node = source.node
    parser = KernelLineParser(want_host=node is None)
    for step, fields, host, _ in _kernel_records(lines, parser, stats):
        yield Event(node or host or fallback, step, fields)


#: A helper's record: (serial (-1: not shared), field values (None: sent before), table,
#: chain, kind, position, line, time, host); None instead of a record: forget all serials.
_Row = tuple[int, tuple[Any, ...] | None, str, str, str, int | None, int, str | None, str | None] | None


def _counts(stats: ReadStats) -> tuple[int, int, int, int, int]:
    return stats.lines, stats.ignored_lines, stats.skipped_lines, stats.trace_records, stats.cut_lines


def _helper(path: Path, fmt: str, want_host: bool, conn: Connection, reading_end: Connection) -> None:
    """Parse `path` and send ([row, ...], counts since the last batch) batches, then None
    (or the exception that stopped it)."""
    reading_end.close()  # so that a send fails, and this process ends, if the reader dies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the reading side's to handle
    parser = KernelLineParser(want_host=want_host)
    stats = ReadStats()
    sent = _counts(stats)
    generation = parser.generation
    serials: dict[int, tuple[int, Fields]] = {}
    rows: list[_Row] = []
    try:
        for step, fields, host, shared in _kernel_records(marked_lines(log_chunks(path, fmt), stats), parser, stats):
            if parser.generation != generation:
                generation = parser.generation
                serials.clear()
                rows.append(None)
            known = serials.get(id(fields)) if shared else None
            if known is not None:
                serial, values = known[0], None
            else:
                serial, values = -1, tuple(getattr(fields, name) for name in _FIELD_NAMES)
                if shared:
                    serial = len(serials)
                    # Holding the object keeps its id from being reused while the serial lives.
                    serials[id(fields)] = (serial, fields)
            rows.append((serial, values, step.table, step.chain, step.kind, step.position, step.line, step.time, host))
            if stats.lines - sent[0] >= HELPER_BATCH_LINES:
                conn.send((rows, _minus(_counts(stats), sent)))
                rows, sent = [], _counts(stats)
        conn.send((rows, _minus(_counts(stats), sent)))
        conn.send(None)
    except Exception as exc:  # noqa: BLE001 - handed to the reading side, which raises it
        with contextlib.suppress(OSError):  # the reading side may be gone
            conn.send(exc)
    finally:
        conn.close()


def _minus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x - y for x, y in zip(a, b))


def _kernel_events_from_helper(source: LogSource, fmt: str, stats: ReadStats) -> Iterator[Event]:
    """What `_kernel_events` yields for the whole file, parsed in a helper process."""
    node, fallback = source.node, source.fallback_node
    import multiprocessing  # only the Python engine's big logs need it

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_helper, args=(source.path, fmt, node is None, sender, receiver), daemon=True)
    process.start()
    sender.close()
    objects: dict[int, Fields] = {}
    try:
        while (message := receiver.recv()) is not None:
            if isinstance(message, Exception):
                raise message
            rows, (lines, ignored, skipped, records, cut) = message
            stats.lines += lines
            stats.ignored_lines += ignored
            stats.skipped_lines += skipped
            stats.trace_records += records
            stats.cut_lines += cut
            for row in rows:
                if row is None:
                    objects.clear()
                    continue
                serial, values, table, chain, kind, position, number, time, host = row
                if values is None:
                    fields = objects[serial]
                else:
                    fields = Fields(*values)
                    if serial >= 0:
                        objects[serial] = fields
                step = Step(table, chain, kind, position, None, None, None, fields.mark, number, time)
                yield Event(node or host or fallback, step, fields)
    finally:
        if process.is_alive():
            process.terminate()
        process.join()
        receiver.close()


#: What a packet line says of the packet's headers: every field but the hook's (interfaces,
#: mark) and the damage flag.
_HEADERS = tuple(f.name for f in dataclasses.fields(Fields) if f.name not in ("in_if", "out_if", "mark", "damaged"))


def _carried(before: Fields, now: Fields) -> Fields:
    """A trace id's later packet line that prints no address (OpenWrt's nft prints the
    headers once, then `packet: iif "br-lan2"` per base chain; posts shorten them), with the
    headers of the line before. A line that prints an address is a packet of its own (a
    trace id can come back for another packet): kept as it is. Interfaces and mark belong
    to the hook: never carried."""
    if now.src is not None or now.dst is not None:
        return now
    merged = dataclasses.replace(now, damaged=now.damaged and before.damaged)
    fill_missing(merged, before, _HEADERS)
    return merged


def _nft_events(lines: Iterator[Line], source: LogSource, stats: ReadStats,
                parse: Callable[..., Any]) -> Iterator[Event | FileEnd]:
    """Events of an xtables-monitor or nft monitor trace log, then a FileEnd naming the
    trace ids whose last `packet:` line (a base chain entered) no step followed."""
    node = source.fallback_node
    packets: dict[str, tuple[Fields, tuple[str, str] | None]] = {}
    pending: dict[str, str] = {}
    for number, line, cut in lines:
        record: NftRecord | None = parse(line, number)
        if record is None:
            stats.skipped_lines += 1
            continue
        trace_id = record.trace_id
        if record.step is None and record.fields is None:  # conntrack: the connection's state, no step
            stats.ignored_lines += 1
            continue
        if record.step is None:
            assert record.fields is not None
            fields = record.fields
            before = packets.pop(trace_id, None)  # put back last: the ids used longest ago go first
            if before is not None:
                fields = _carried(before[0], fields)
            if cut:
                fields = dataclasses.replace(fields, damaged=True)
            packets[trace_id] = (fields, record.base)
            pending.pop(trace_id, None)
            pending[trace_id] = f"{record.base[0]} {record.base[1]}" if record.base else "a base chain"
            for table in (packets, pending):
                if len(table) > PENDING_TRACE_IDS:
                    table.pop(next(iter(table)))
            continue
        stats.trace_records += 1
        known = packets.pop(trace_id, None)
        if known is not None:
            packets[trace_id] = known
        fields = known[0] if known else Fields(damaged=True)
        if cut and not fields.damaged:
            fields = dataclasses.replace(fields, damaged=True)
        step = record.step
        base = None
        if known is not None and known[1] == (step.table, step.chain) and trace_id in pending:
            base = (fields.in_if is not None, fields.out_if is not None)
        pending.pop(trace_id, None)
        yield Event(node, step, fields, trace_id, base)
    yield FileEnd({(node, trace_id): chain for trace_id, chain in pending.items()})
