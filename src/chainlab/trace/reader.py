"""Read trace log files of any supported format into events, counting what was skipped."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chainlab.trace.model import Event, Fields
from chainlab.trace.parse_kernel import TRACE_LIKE, KernelLineParser
from chainlab.trace.parse_nft import XT_PACKET, XT_TRACE, NftRecord, parse_nft_monitor, parse_xtables_monitor

KERNEL, XTABLES_MONITOR, NFT_MONITOR = "kernel", "xtables-monitor", "nft-monitor"
SNIFF_LINES = 500


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


def _open_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:  # type: ignore[operator]
        for raw in handle:
            yield raw.decode("utf-8", "replace").rstrip("\r\n")


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
    lines = _open_lines(source.path)
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

    if fmt == KERNEL:
        yield from _kernel_events(all_lines(), source, stats)
    else:
        parse = parse_xtables_monitor if fmt == XTABLES_MONITOR else parse_nft_monitor
        yield from _nft_events(all_lines(), source, stats, parse)


def _kernel_events(lines: Iterator[str], source: LogSource, stats: ReadStats) -> Iterator[Event]:
    fallback = source.fallback_node
    node = source.node
    parser = KernelLineParser(want_host=node is None)
    parse_single = parser.parse_single
    for number, line in enumerate(lines, 1):
        stats.lines += 1
        if "TRACE:" not in line:
            stats.ignored_lines += 1
            continue
        single = parse_single(line, number)
        if single is not None:
            stats.trace_records += 1
            step, fields, host = single
            yield Event(node or host or fallback, step, fields)
            continue
        records, bad = parser.parse(line, number)
        stats.skipped_lines += bad
        if not records and not bad:
            stats.ignored_lines += 1
        for record in records:
            stats.trace_records += 1
            yield Event(node or record.host or fallback, record.step, record.fields)


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
