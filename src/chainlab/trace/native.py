"""`--format json` on big kernel logs through the C engine (`_engine.c`).

The C engine parses and assembles the lines exactly as reader/assemble do and renders each
finished packet's steps as JSON; this module judges each distinct walk once (cached by
its signature), classifies directions and collects flows with the same Python code as the
reference pipeline, and writes the same bytes `render.jsonout.write_json` would.

It applies to kernel-format logs (plain or gzipped, any bytes), with --format json and
without --rules, --tables or --expect. `CHAINLAB_ENGINE=python`
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
from chainlab.trace.model import IDENTITIES, Fields, Packet, Step
from chainlab.trace.netfilter import TABLES, Slot, table_slots
from chainlab.trace.reader import KERNEL, LogSource, ReadStats, log_format, raw_chunks

try:
    from chainlab.trace import _engine
except ImportError:  # built without a C compiler: the Python engine does everything
    _engine = None  # type: ignore[assignment]

ENV = "CHAINLAB_ENGINE"
SWITCH_INTERVAL = 0.001
#: Finished-packet batches (of at most ~1500 packets) waiting to be written: bounds memory
#: while the reader runs ahead.
QUEUE_BATCHES = 2
#: Distinct walks judged and kept: a log of ever new walks must not grow memory.
WALK_CACHE = 4096
TCP_FLAG_NAMES = ("ACK", "CWR", "ECE", "FIN", "PSH", "RST", "SYN", "URG")  # bit order of _engine.c


def plan(sources: list[LogSource], python_only: list[str]) -> dict[Path, int | None] | None:
    """How many bytes of each plain log the C engine is to read (its size now, even if the
    log grows meanwhile; None for a gzipped one: all of it), or None: use the Python
    engine. `python_only` names the options in use that only the Python engine does.
    InputError if CHAINLAB_ENGINE=native and the C engine cannot run."""
    wanted = os.environ.get(ENV, "auto")
    if wanted not in ("auto", "native", "python"):
        raise InputError([Problem(ENV, "", f"{wanted!r}: choose auto, native or python")])
    if wanted == "python":
        return None
    sizes: dict[Path, int | None] = {}
    why = _why_not(sources, python_only, sizes)
    if why is not None and wanted == "native":
        raise InputError([Problem(ENV, "", f"native: the C engine cannot analyse this: {why}")])
    return sizes if why is None else None


def _why_not(sources: list[LogSource], python_only: list[str], sizes: dict[Path, int | None]) -> str | None:
    if _engine is None:
        return "chainlab.trace._engine is not built (no C compiler at install time?)"
    if python_only:
        return f"{', '.join(python_only)}: only the Python engine does that"
    for source in sources:
        if log_format(source.path) != KERNEL:
            return f"{source.path}: not a kernel-format log"
        sizes[source.path] = None if source.path.suffix == ".gz" else source.path.stat().st_size
    return None


_Row = tuple[Any, ...]


class _Stopped(Exception):
    """The writing side gave up (an error, a closed stdout, Ctrl-C): the reader stops too."""


def _produce(sources: list[LogSource], sizes: dict[Path, int | None], out: queue.Queue[object], stop: threading.Event) -> None:
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
            for piece in raw_chunks(source.path, sizes[source.path]):
                start = 0
                while start < len(piece):
                    rows, start = engine.feed(piece, start)
                    put(rows)
            put(engine.end())
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
        self.walks: dict[tuple[bytes, int, int], _Walk] = {}
        self.present: dict[int, set[Slot]] = {}

    def __call__(self, signature: bytes, mask: int, at_end: int) -> _Walk:
        key = (signature, mask, at_end)
        walk = self.walks.get(key)
        if walk is None:
            if len(self.walks) >= WALK_CACHE:
                self.walks.clear()
            walk = self.walks[key] = self._judge(signature, mask, bool(at_end))
        return walk

    def _judge(self, signature: bytes, mask: int, at_end: bool) -> _Walk:
        steps = []
        for line in signature.decode("utf-8").split("\n")[:-1]:
            table, chain, kind, position, hook = line.split("\t")
            steps.append(Step(table, chain, kind, int(position), hook=hook or None))
        packet = Packet(node="", fields=Fields(), steps=steps, at_end=at_end)
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


def write_json(out: IO[str], sources: list[LogSource], sizes: dict[Path, int | None]) -> None:
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


def _write_json(out: IO[str], sources: list[LogSource], sizes: dict[Path, int | None]) -> None:
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
    identities = dict.fromkeys(IDENTITIES, 0)
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
             mask, signature, head, steps, last_step, tail, at_end) = row
            walk = walks(signature, mask, at_end)
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
            identities[identity_of(head)] += 1
            flows.add(packet)
            repaired += lines_repaired
            name = node_json.get(node)
            if name is None:
                name = node_json[node] = json.dumps(node).encode()
            chunk += (separator, b'{"node": ', name, b', "direction": "', direction.encode(), b'", ', head,
                      walk.before_steps, steps, walk.after_steps, last_step, walk.after_last, tail)
            separator = b",\n  "
        binary.write(b"".join(chunk))
    lines, ignored, skipped, records, unattributed, cut = stats
    read = ReadStats(lines, records, skipped + unattributed, ignored, cut, {str(s.path): KERNEL for s in sources},
                     {name: count for name, count in identities.items() if count})
    binary.flush()
    write_tail(out, flows.flows, read, None, repaired)


def identity_of(head: bytes) -> str:
    """The packet's identity, from its rendered head (`..., "identity": "ip_id", ...`)."""
    at = head.index(b'"identity": "') + 13
    return head[at : head.index(b'"', at)].decode()


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
