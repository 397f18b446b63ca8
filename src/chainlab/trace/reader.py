"""Read trace log files of any supported format into events, counting what was skipped.

A big kernel-format file is parsed in a helper process while this one assembles packets.
The helper sends the records in batches through a pipe (whose small buffer keeps memory
flat). Lines that repeat a cached field parse share one Fields object here as they do in
the parser (less to send and build, and the assembler's shortcut for equal fields tries
identity first): each new shared Fields object travels once with a serial number, later
records name the serial, and both sides forget all serials whenever the parser empties its
cache.
"""

from __future__ import annotations

import contextlib
import gzip
import multiprocessing
import signal
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from chainlab.errors import InputError, Problem
from chainlab.trace.model import Event, Fields, Step
from chainlab.trace.parse_kernel import TRACE_LIKE, KernelLineParser
from chainlab.trace.parse_nft import XT_PACKET, XT_TRACE, NftRecord, parse_nft_monitor, parse_xtables_monitor

KERNEL, XTABLES_MONITOR, NFT_MONITOR = "kernel", "xtables-monitor", "nft-monitor"
SNIFF_LINES = 500
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
    formats: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogSource:
    """A log file and the node it belongs to (None: take it from each line's host field)."""

    path: Path
    node: str | None = None

    @property
    def fallback_node(self) -> str:
        return self.node or self.path.name.split(".")[0]


def open_lines(path: Path) -> Iterator[str]:
    """Lines of a log, gunzipped if its name ends in .gz.

    A file that cannot be read to its end (unreadable, not gzip, truncated) is an
    InputError, even half-way through: its events would be an incomplete story.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with read_errors(path), opener(path, "rb") as handle:  # type: ignore[operator]
        for raw in handle:
            yield raw.decode("utf-8", "replace").rstrip("\r\n")


def check_gzip_intact(path: Path) -> None:
    """Decompress a .gz log to its end, for output that streams while the log is parsed:
    a truncated file is then refused before the first byte. Decompressing takes a few
    percent of the time parsing does."""
    if path.suffix != ".gz":
        return
    with read_errors(path), gzip.open(path, "rb") as handle:
        while handle.read(1 << 20):
            pass


@contextlib.contextmanager
def read_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError([Problem(str(path), "", f"log: {_read_failure(exc)}")]) from None


def _read_failure(exc: OSError | EOFError | zlib.error) -> str:
    if isinstance(exc, EOFError):
        return "gzip data ends early (truncated file?)"
    if isinstance(exc, gzip.BadGzipFile) and str(exc).startswith("Not a gzipped file"):
        return "not a gzip file"
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return f"corrupt gzip data ({exc})"
    return f"cannot read: {exc.strerror or exc}"


def sniff_format(lines: list[str]) -> str:
    """The format of a log, from its first lines (kernel format when nothing else fits)."""
    for line in lines:
        if XT_PACKET.match(line) or XT_TRACE.match(line):
            return XTABLES_MONITOR
        if line.lstrip().startswith("trace id "):
            return NFT_MONITOR
        if TRACE_LIKE.search(line):
            return KERNEL
    return KERNEL


def read_events(source: LogSource, stats: ReadStats) -> Iterator[Event]:
    """Events of one file, in file order."""
    lines = open_lines(source.path)
    head: list[str] = []
    for line in lines:
        head.append(line)
        if len(head) >= SNIFF_LINES:
            break
    fmt = sniff_format(head)
    stats.formats[str(source.path)] = fmt

    def all_lines() -> Iterator[str]:
        yield from head
        yield from lines

    if fmt == KERNEL and source.path.stat().st_size >= HELPER_MIN_BYTES:
        lines.close()
        yield from _kernel_events_from_helper(source, stats)
    elif fmt == KERNEL:
        yield from _kernel_events(all_lines(), source, stats)
    else:
        parse = parse_xtables_monitor if fmt == XTABLES_MONITOR else parse_nft_monitor
        yield from _nft_events(all_lines(), source, stats, parse)


def _kernel_records(lines: Iterator[str], parser: KernelLineParser, stats: ReadStats) -> Iterator[_Record]:
    parse_single = parser.parse_single
    for number, line in enumerate(lines, 1):
        stats.lines += 1
        if "TRACE:" not in line:
            stats.ignored_lines += 1
            continue
        single = parse_single(line, number)
        if single is not None:
            stats.trace_records += 1
            yield single[0], single[1], single[2], True
            continue
        records, bad = parser.parse(line, number)
        stats.skipped_lines += bad
        if not records and not bad:
            stats.ignored_lines += 1
        last = len(records) - 1
        for i, record in enumerate(records):
            stats.trace_records += 1
            yield record.step, record.fields, record.host, i == last


def _kernel_events(lines: Iterator[str], source: LogSource, stats: ReadStats) -> Iterator[Event]:
    fallback = source.fallback_node
    node = source.node
    parser = KernelLineParser(want_host=node is None)
    for step, fields, host, _ in _kernel_records(lines, parser, stats):
        yield Event(node or host or fallback, step, fields)


#: A helper's record: (serial (-1: not shared), field values (None: sent before), table,
#: chain, kind, position, line, time, host); None instead of a record: forget all serials.
_Row = tuple[int, tuple[Any, ...] | None, str, str, str, int | None, int, str | None, str | None] | None


def _counts(stats: ReadStats) -> tuple[int, int, int, int]:
    return stats.lines, stats.ignored_lines, stats.skipped_lines, stats.trace_records


def _helper(path: Path, want_host: bool, conn: Connection, reading_end: Connection) -> None:
    """Parse `path` and send ([row, ...], counts since the last batch) batches, then None
    (or the exception that stopped it)."""
    reading_end.close()  # so that a send fails, and this process ends, if the reader dies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the reading side's to handle
    parser = KernelLineParser(want_host=want_host)
    stats = ReadStats()
    sent = (0, 0, 0, 0)
    generation = parser.generation
    serials: dict[int, tuple[int, Fields]] = {}
    rows: list[_Row] = []
    try:
        for step, fields, host, shared in _kernel_records(open_lines(path), parser, stats):
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


def _kernel_events_from_helper(source: LogSource, stats: ReadStats) -> Iterator[Event]:
    """What `_kernel_events` yields for the whole file, parsed in a helper process."""
    node, fallback = source.node, source.fallback_node
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_helper, args=(source.path, node is None, sender, receiver), daemon=True)
    process.start()
    sender.close()
    objects: dict[int, Fields] = {}
    try:
        while (message := receiver.recv()) is not None:
            if isinstance(message, Exception):
                raise message
            rows, (lines, ignored, skipped, records) = message
            stats.lines += lines
            stats.ignored_lines += ignored
            stats.skipped_lines += skipped
            stats.trace_records += records
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


def _nft_events(lines: Iterator[str], source: LogSource, stats: ReadStats, parse) -> Iterator[Event]:  # type: ignore[no-untyped-def]
    node = source.fallback_node
    packets: dict[str, Fields] = {}
    for number, line in enumerate(lines, 1):
        stats.lines += 1
        if not line.strip():
            stats.ignored_lines += 1
            continue
        record: NftRecord | None = parse(line, number)
        if record is None:
            looks_like_trace = "TRACE:" in line or "trace id" in line or "PACKET:" in line
            if looks_like_trace:
                stats.skipped_lines += 1
            else:
                stats.ignored_lines += 1
            continue
        if record.step is None:
            assert record.fields is not None
            packets[record.trace_id] = record.fields
            if len(packets) > 4096:
                packets.pop(next(iter(packets)))
            continue
        stats.trace_records += 1
        fields = packets.get(record.trace_id) or Fields(damaged=True)
        yield Event(node, record.step, fields, record.trace_id)
