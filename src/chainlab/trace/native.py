"""`--format json` on big kernel logs through the C engine (`_engine.c`).

The C engine parses and assembles the lines exactly as reader/assemble do and renders each
finished packet's steps as JSON; this module judges each distinct walk once (cached by
its signature), classifies directions and collects flows with the same Python code as the
reference pipeline, and writes the same bytes `render.jsonout.write_json` would.

It applies to kernel-format logs that are plain files of printable ASCII (plus '\\n'),
with --format json and without --rules, --tables or --expect. `CHAINLAB_ENGINE=python`
forces the Python engine, `native` insists on this one (an error if it cannot be used),
unset or `auto` picks it when it applies.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from chainlab.errors import InputError, Problem
from chainlab.render.jsonout import write_tail
from chainlab.trace.analyze import Directions, hook_path, judge, sent_here
from chainlab.trace.flows import FlowIndex
from chainlab.trace.model import Fields, Packet, Step
from chainlab.trace.netfilter import TABLES, Slot, table_slots
from chainlab.trace.reader import KERNEL, SNIFF_LINES, LogSource, ReadStats, open_lines, read_errors, sniff_format

try:
    from chainlab.trace import _engine
except ImportError:  # built without a C compiler: the Python engine does everything
    _engine = None  # type: ignore[assignment]

ENV = "CHAINLAB_ENGINE"
CHUNK = 4 << 20
SWITCH_INTERVAL = 0.001
#: Finished-packet batches (of at most ~1500 packets) waiting to be written: bounds memory
#: while the reader runs ahead.
QUEUE_BATCHES = 2
#: Distinct walks judged and kept: a log of ever new walks must not grow memory.
WALK_CACHE = 4096
TCP_FLAG_NAMES = ("ACK", "CWR", "ECE", "FIN", "PSH", "RST", "SYN", "URG")  # bit order of _engine.c


def plan(sources: list[LogSource], python_only: list[str]) -> dict[Path, int] | None:
    """How many bytes of each log the C engine is to read (the bytes checked here, even if
    the log grows meanwhile), or None: use the Python engine. `python_only` names the
    options in use that only the Python engine does. InputError if CHAINLAB_ENGINE=native
    and the C engine cannot run."""
    wanted = os.environ.get(ENV, "auto")
    if wanted not in ("auto", "native", "python"):
        raise InputError([Problem(ENV, "", f"{wanted!r}: choose auto, native or python")])
    if wanted == "python":
        return None
    sizes: dict[Path, int] = {}
    why = _why_not(sources, python_only, sizes)
    if why is not None and wanted == "native":
        raise InputError([Problem(ENV, "", f"native: the C engine cannot analyse this: {why}")])
    return sizes if why is None else None


def _why_not(sources: list[LogSource], python_only: list[str], sizes: dict[Path, int]) -> str | None:
    if _engine is None:
        return "chainlab.trace._engine is not built (no C compiler at install time?)"
    if python_only:
        return f"{', '.join(python_only)}: only the Python engine does that"
    for source in sources:
        if source.path.suffix == ".gz":
            return f"{source.path}: gzipped"
        head = []
        for line in open_lines(source.path):
            head.append(line)
            if len(head) >= SNIFF_LINES:
                break
        if sniff_format(head) != KERNEL:
            return f"{source.path}: not a kernel-format log"
        size = 0
        for piece in _chunks(source.path):
            if not _engine.printable(piece):
                return f"{source.path}: has bytes other than printable ASCII"
            size += len(piece)
        sizes[source.path] = size
    return None


def _chunks(path: Path, limit: int | None = None) -> Iterator[memoryview]:
    """The file's first `limit` bytes (default: all) in pieces of whole lines (the last line
    may lack its newline), read into one reused buffer: each piece is valid until the next
    one is asked for."""
    buf = bytearray(CHUNK)
    held = 0
    left = sys.maxsize if limit is None else limit
    with read_errors(path), open(path, "rb", buffering=0) as handle:
        while True:
            if held == len(buf):  # a line longer than the buffer
                buf = buf + bytes(len(buf))
            view = memoryview(buf)
            got = handle.readinto(view[held : held + min(len(buf) - held, left)]) if left else 0
            if not got:
                if held:
                    yield view[:held]
                return
            left -= got
            total = held + got
            cut = buf.rfind(b"\n", 0, total) + 1
            if cut:
                yield view[:cut]
            held = total - cut
            buf[:held] = bytes(view[cut:total])


_Row = tuple[Any, ...]


class _Stopped(Exception):
    """The writing side gave up (an error, a closed stdout, Ctrl-C): the reader stops too."""


def _produce(sources: list[LogSource], sizes: dict[Path, int], out: queue.Queue[object], stop: threading.Event) -> None:
    """Reader thread: feed every file to the engine, put batches of packet rows, then the
    stats (or the exception that ended it); return soon after `stop` is set."""

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    try:
        engine = _engine.Engine()
        for source in sources:
            engine.begin(source.fallback_node, source.node is None)
            for piece in _chunks(source.path, sizes[source.path]):
                start = 0
                while start < len(piece):
                    try:
                        rows, start = engine.feed(piece, start)
                    except ValueError as exc:
                        raise InputError([Problem(str(source.path), "", f"log: {exc}")]) from None
                    put(rows)
        put(engine.flush())
        put(engine.stats())
    except _Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - raised again in the writing thread
        with contextlib.suppress(_Stopped):
            put(exc)


@dataclass(frozen=True)
class _Walk:
    """What judging a walk concluded, and its JSON pieces around the per-packet ones."""

    route: str | None
    verdict: str
    hooks: list[str]
    origin: bool
    before_steps: bytes
    after_steps: bytes
    after_last: bytes


class _Judge:
    """judge() and hook_path() once per distinct walk on a node with the same tables."""

    def __init__(self) -> None:
        self.walks: dict[tuple[bytes, int], _Walk] = {}
        self.present: dict[int, set[Slot]] = {}

    def __call__(self, signature: bytes, mask: int) -> _Walk:
        walk = self.walks.get((signature, mask))
        if walk is None:
            if len(self.walks) >= WALK_CACHE:
                self.walks.clear()
            walk = self.walks[(signature, mask)] = self._judge(signature, mask)
        return walk

    def _judge(self, signature: bytes, mask: int) -> _Walk:
        steps = []
        for line in signature.decode("ascii").splitlines():
            table, chain, kind, position, hook = line.split("\t")
            steps.append(Step(table, chain, kind, int(position), hook=hook or None))
        packet = Packet(node="", fields=Fields(), steps=steps)
        present = self.present.get(mask)
        if present is None:
            present = self.present[mask] = set().union(*(table_slots(t) for i, t in enumerate(TABLES) if mask >> i & 1))
        judge(packet, present)
        hooks = hook_path(steps)
        before = f', "hooks": {json.dumps(hooks)}, "route": {json.dumps(packet.route)}, "steps": ['
        after = f'], "verdict": {json.dumps(packet.verdict)}, "reason": {json.dumps(packet.reason)}, "last_step": '
        last = f', "new_connection": {json.dumps(packet.new_connection)}, '
        return _Walk(packet.route, packet.verdict, hooks, sent_here(steps, hooks),
                     before.encode(), after.encode(), last.encode())


def write_json(out: IO[str], sources: list[LogSource], sizes: dict[Path, int]) -> None:
    """What render.jsonout.write_json writes for these sources, through the C engine
    (`sizes`: from plan())."""
    # The reader thread needs the GIL briefly after each chunk: hand it over sooner than
    # the default 5 ms. The packets here hold no cycles: the cyclic GC only costs time.
    interval = sys.getswitchinterval()
    gc_was_on = gc.isenabled()
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.disable()
    try:
        _write_json(out, sources, sizes)
    finally:
        sys.setswitchinterval(interval)
        if gc_was_on:
            gc.enable()


def _write_json(out: IO[str], sources: list[LogSource], sizes: dict[Path, int]) -> None:
    batches: queue.Queue[object] = queue.Queue(QUEUE_BATCHES)
    stop = threading.Event()
    reader = threading.Thread(target=_produce, args=(sources, sizes, batches, stop), name="chainlab-engine", daemon=True)
    reader.start()
    try:
        _write_packets(out, sources, batches)
    finally:
        stop.set()
        reader.join()


def _write_packets(out: IO[str], sources: list[LogSource], batches: queue.Queue[object]) -> None:
    node_json: dict[str, bytes] = {}
    walks = _Judge()
    directions = Directions()
    flows = FlowIndex()
    flag_sets: dict[int, frozenset[str] | None] = {0: None}
    repaired = 0
    out.write('{"packets": [')
    out.flush()
    binary = out.buffer  # type: ignore[attr-defined]
    separator = b"\n  "
    for item in _results(batches):
        if isinstance(item, tuple):
            stats = item
            break
        chunk = []
        for row in item:
            (node, seq, proto, ip_id, icmp_type, icmp_id, icmp_seq, sport, dport, flags, first, last, lines_repaired,
             mask, signature, head, steps, last_step, tail) = row
            walk = walks(signature, mask)
            tcp_flags = flag_sets.get(flags)
            if tcp_flags is None and flags:
                tcp_flags = flag_sets[flags] = frozenset(n for i, n in enumerate(TCP_FLAG_NAMES) if flags >> i & 1)
            packet = Packet(
                node, Fields(None, None, proto, ip_id, None, None, None, None, icmp_type, icmp_id, icmp_seq,
                                    sport, dport, tcp_flags),
                first=_endpoint(first), last=_endpoint(last), seq=seq, hooks=walk.hooks, route=walk.route,
                verdict=walk.verdict, origin=walk.origin,
            )
            packet.direction = direction = directions.classify(packet)
            flows.add(packet)
            repaired += lines_repaired
            name = node_json.get(node)
            if name is None:
                name = node_json[node] = json.dumps(node).encode()
            chunk += (separator, b'{"node": ', name, b', "direction": "', direction.encode(), b'", ', head,
                      walk.before_steps, steps, walk.after_steps, last_step, walk.after_last, tail)
            separator = b",\n  "
        binary.write(b"".join(chunk))
    lines, ignored, skipped, records, unattributed = stats
    read = ReadStats(lines, records, skipped + unattributed, ignored, {str(s.path): KERNEL for s in sources})
    binary.flush()
    write_tail(out, flows.flows, read, None, repaired)


def _results(batches: queue.Queue[object]) -> Iterator[object]:
    while True:
        item = batches.get()
        if isinstance(item, BaseException):
            raise item
        yield item
        if isinstance(item, tuple):
            return


def _endpoint(values: tuple[str | None, str | None, int | None, int | None, int | None] | None) -> Fields | None:
    if values is None:
        return None
    src, dst, ttl, sport, dport = values
    return Fields(src, dst, None, None, ttl, None, None, None, None, None, None, sport, dport)
