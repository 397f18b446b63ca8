"""The C engine (`_engine.c`): every format, option and input the Python engine takes.

The engine reads the lines, parses them, groups them into packets, classifies directions,
applies --match, keeps flows, summary rows and diagram walks, and writes the JSON. Python
keeps what depends on more than the line: judging a walk (verdict, hook path, rules
joined, the match's verdict and chain parts) is done here once per distinct walk (the
engine caches the result; a kernel walk once per analyze.judge_key, see Calls.judge), the
match's node and address parts once per node and address.
The Python modules (pipeline.py and what it uses) stay the reference: tests require the
same output from both engines, byte for byte.

A plain file is read by the engine itself (feed_from): a kernel log in a thread of its own
that reads and parses the next chunks (up to three ahead) while this thread assembles one. A `.gz` is
gunzipped here and fed chunk by chunk (the parser thread then parses what it is given).

`CHAINLAB_ENGINE=python` forces the Python engine, `native` insists on this one (an
error if it is not built), unset or `auto` picks it when it is built (else says on stderr
that the Python engine runs, and why). A build of another `_engine.c` (or parts in engine/)
than the ones beside this file (a failed compile leaves the last build in place) counts as
not built.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from chainlab.errors import InputError, OutputError, Problem
from chainlab.trace.analyze import (BaseChains, drop_chain, drop_point, hook_path, join_rules, judge, judge_key,
                                    protocol_from_rules, sent_here, walk_chains)
from chainlab.trace.contract import PacketRecord
from chainlab.trace.expect import Checker, is_probe
from chainlab.trace.flows import Entries, Flow, Hop, build_flows
from chainlab.trace.model import IDENTITIES, Fields, Packet, Step
from chainlab.trace.netfilter import HOOKS, Slot, table_slots
from chainlab.trace.pipeline import AnalysisOptions
from chainlab.trace import engine_source, reader
from chainlab.trace.reader import (
    KERNEL, NFT_MONITOR, XTABLES_MONITOR, LogSource, ReadStats, base_format, log_chunks, log_format,
    read_errors,
)
from chainlab.trace.summary import Row, Summary

try:
    _engine: Any = importlib.import_module("chainlab.trace._engine")  # C: no type information
except ImportError:  # built without a C compiler: the Python engine does everything
    _engine = None


def _stale(module: Any, trace_dir: Path) -> bool:
    """Whether `module` was built from other sources than the `_engine.c` and parts in
    `trace_dir` (when a compile of changed sources fails, the last build stays in place).
    Sources that cannot be read (an install that left them out) leave nothing to compare:
    the build is trusted."""
    try:
        digest = engine_source.digest(trace_dir)
    except OSError:
        return False
    return getattr(module, "SOURCE", None) != digest


#: The build found but refused: it was compiled from another _engine.c
STALE = _engine is not None and _stale(_engine, Path(__file__).parent)
if STALE:
    _engine = None

ENV = "CHAINLAB_ENGINE"
MODES = {"json": 0, "text": 1, "summary": 2, "diagram": 3}
FORMATS = {KERNEL: 0, XTABLES_MONITOR: 1, NFT_MONITOR: 2}
DIRECTIONS = ("request", "reply", "error")
VERDICTS = ("accepted", "dropped", "unknown")


def missing() -> str | None:
    """Why the C engine cannot run here, or None when it can."""
    if STALE:
        return ("chainlab.trace._engine was built from another _engine.c or engine/ part than the ones"
                " beside it (the last compile failed?)")
    if _engine is None:
        return "chainlab.trace._engine is not built (no C compiler at install time?)"
    return None


def wanted() -> bool:
    """Whether this run uses the C engine (CHAINLAB_ENGINE, and whether it is built)."""
    choice = os.environ.get(ENV, "auto")
    if choice not in ("auto", "native", "python"):
        raise InputError([Problem(ENV, "", f"{choice!r}: choose auto, native or python")])
    if choice == "native" and (why := missing()):
        raise InputError([Problem(ENV, "", f"native: {why}; reinstall: make venv")])
    return choice != "python" and _engine is not None


def fallback_note() -> str | None:
    """What to tell a user whose run falls back to the Python engine without asking for it."""
    why = missing()
    if why is None or os.environ.get(ENV, "auto") != "auto":
        return None
    return f"note: {why}: the Python engine analyses, slower on big logs (reinstall: make venv)"


#: json.dumps of one str, without json.dumps' per-call set-up (a walk's JSON has a dozen)
_json_str = json.encoder.encode_basestring_ascii


@dataclass(frozen=True)
class WalkInfo:
    """What Python parts of the run need of a judged walk (flows, diagrams, checks)."""

    hooks: list[str]
    verdict: str
    origin: bool
    drop_at: str | None
    chains: dict[str, list[str]]  # only for diagrams (empty otherwise)
    expect_hooks: list[str]
    last_chain: str | None


#: judgments Calls keeps by judge_key (the engine keeps as many walks: _engine.WALK_CACHE)
JUDGED_KEYS = 8192


class Calls:
    """What the engine asks of Python while it runs (see Engine's doc in _engine.c)."""

    def __init__(self, options: AnalysisOptions, checker: Checker | None, diagram: bool = False):
        self.options = options
        self.checker = checker
        self.diagram = diagram
        self.names: list[str] = []
        self.present: list[set[Slot]] = []
        self.chains: list[BaseChains] = []
        self.summary_keys: dict[tuple[tuple[str, ...], str, str | None], int] = {}
        self.diagram_keys: dict[tuple[tuple[str, ...], str, str | None], int] = {}
        #: judged walks by what judging reads of them (analyze.judge_key), when that is all a
        #: judgment here depends on (see judge): the engine's own cache tells walks apart by
        #: every chain and rule position, and judging each in Python was ~10 % of a json run
        self.judged: dict[tuple[object, ...], tuple[Any, ...]] = {}
        self.keyed = not diagram and not options.match.chains
        self.versions: list[int] = []  # per node: bumped when its tables present or BaseChains change

    def node_added(self, node: int, name: bytes) -> tuple[bytes, bool]:
        text = name.decode("utf-8", "surrogatepass")
        self.names.append(text)
        self.present.append(set())
        self.chains.append(BaseChains(self.options.rules.get(text)))
        self.versions.append(0)
        return json.dumps(text).encode(), self.options.match.node_ok(text)

    def slot_added(self, node: int, hook: str | None, table: str) -> None:
        self.versions[node] += 1
        if hook is None:
            self.present[node] |= table_slots(table)
        else:
            self.present[node].add((hook, table))

    def address_ok(self, which: int, address: str) -> bool:
        return self.options.match.address_ok("dst" if which else "src", address)

    def step(self, t: tuple[Any, ...]) -> Step:
        """A step the engine met for the first time: (table, chain, kind, position, handle,
        verdict, rule, hook, family). The engine hands the same Step to every walk that passes
        the step again."""
        return Step(t[0], t[1], t[2], t[3], t[4], t[5], t[6], None, 0, None, t[7], t[8])  # positional: keywords cost 0.1 µs a step

    def judge(self, node: int, walk: list[Step], at_end: int, entered: str | None,
              proto_none: int) -> tuple[Any, ...]:
        """Pipeline._finish's walk part: rules joined, verdict, hook path, match on the walk.
        `walk`: Steps shared with other walks (see step), copied where rules will be joined.
        The last item says whether the walk taught the node's BaseChains something: the
        engine then judges its cached walks of that node again (as the pipeline judges every
        packet with what is known when it finishes).

        A walk of the same judge_key as one judged before on the node, with its tables and
        BaseChains as they were then, gets that judgment: without rules, diagrams (which
        show every chain) and a --match on chains, nothing else of the walk is read."""
        key = None
        if self.keyed and self.names[node] not in self.options.rules:
            essence = judge_key(walk)
            if essence is not None:
                key = (node, self.versions[node], at_end, entered, proto_none, essence)
                known = self.judged.get(key)
                if known is not None:
                    return known
        result = self._judge(node, walk, at_end, entered, proto_none)
        if key is not None:
            if len(self.judged) >= JUDGED_KEYS:  # a log of ever new walks: memory stays flat
                self.judged.clear()
            self.judged[key] = result
        return result

    def _judge(self, node: int, walk: list[Step], at_end: int, entered: str | None,
               proto_none: int) -> tuple[Any, ...]:
        options = self.options
        name = self.names[node]
        rules = options.rules.get(name)
        steps = walk if rules is None else [replace(s) for s in walk]  # join_rules changes Steps
        packet = Packet(node=name, fields=Fields(), steps=steps, at_end=bool(at_end), entered=entered)
        join_rules(packet, rules)
        proto = protocol_from_rules(packet) if proto_none else None
        learned = self.chains[node].learn(steps)
        if learned:
            self.versions[node] += 1
        judge(packet, rules.slots if rules else self.present[node], self.chains[node])
        packet.hooks = hook_path(steps, options.tables)
        packet.origin = sent_here(steps, packet.hooks)
        last = steps[-1]
        drop_at = drop_chain(packet)
        chains = walk_chains(steps, options.tables) if self.diagram else {}
        hooks = tuple(packet.hooks)
        summary = self.summary_keys.setdefault((hooks, packet.verdict, drop_point(packet)), len(self.summary_keys))
        diagram = self.diagram_keys.setdefault((hooks, packet.verdict, drop_at), len(self.diagram_keys))
        expect_hooks = hook_path(steps, self.checker.tables) if self.checker else []
        info = WalkInfo(packet.hooks, packet.verdict, packet.origin, drop_at, chains, expect_hooks, last.chain)
        route = "null" if packet.route is None else _json_str(packet.route)
        texts = [s.rule for s in steps]
        return (
            f'"hooks": [{", ".join(map(_json_str, packet.hooks))}], "route": {route}'.encode(),
            tuple(b"null" if t is None else _json_str(t).encode() for t in texts)
            if texts.count(None) < len(texts) else (b"null",) * len(texts),
            f'"verdict": {_json_str(packet.verdict)}, "reason": {_json_str(packet.reason)}'.encode(),
            b"true" if packet.new_connection else b"false",
            proto, VERDICTS.index(packet.verdict), packet.origin, options.match.walk_ok(packet), info, summary, diagram,
            learned,
        )


@dataclass
class Result:
    """What a run gives the renderers besides the JSON it wrote."""

    stats: ReadStats
    nodes: list[str]
    flows: list[Flow]
    repaired: int
    kept: list[tuple[int, PacketRecord]] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    #: diagram mode: (node, direction, seq of the earliest packet, count, walk) per distinct walk
    walks: list[tuple[str, str, int, int, WalkInfo]] = field(default_factory=list)


def run(sources: list[LogSource], options: AnalysisOptions, mode: str, checker: Checker | None = None,
        out: IO[bytes] | None = None, out_fd: int | None = None) -> Result:
    """Analyse `sources` with the C engine; in json mode the packets' JSON goes to `out`
    as it comes (without the enclosing document: see render.jsonout), or, given `out_fd`,
    is written by the engine to that descriptor itself (the caller has flushed what it
    wrote there before)."""
    collecting = gc.isenabled()
    gc.disable()  # the run makes no reference cycles: collections would only walk its walks, again and again
    try:
        return _run(sources, options, mode, checker, out, out_fd)
    except _engine.WriteError as exc:  # the engine's own write to out's descriptor
        raise OutputError(OSError(exc.args[0], os.strerror(exc.args[0]))) from None
    finally:
        if collecting:
            gc.enable()


def _run(sources: list[LogSource], options: AnalysisOptions, mode: str, checker: Checker | None,
         out: IO[bytes] | None, out_fd: int | None) -> Result:
    calls = Calls(options, checker, mode == "diagram")
    match = options.match
    declared = {
        "\0".join((node, *key)).encode("utf-8", "surrogatepass"): (HOOKS.index(chain.hook) + 1 if chain.hook else 0)
        for node, ruleset in options.rules.items() for key, chain in ruleset.nft.items()
    }
    engine = _engine.Engine(
        calls, MODES[mode], checker is not None, sorted(options.tables) if options.tables is not None else None,
        match.protocols, match.ports, match.ip_ids, bool(match.src), bool(match.dst), bool(match), declared,
        options.window,
    )
    if out_fd is not None:
        engine.write_to(out_fd)  # the engine writes the JSON itself: no bytes object per chunk for Python to copy
    stats = ReadStats()
    kept: list[tuple[int, PacketRecord]] = []

    def take(written: bytes) -> None:
        if out is not None and written:
            out.write(written)
        for item in engine.take_items():
            if item[0] == "packet":
                kept.append((item[1], PacketRecord.from_dict(json.loads(item[2]))))  # type: ignore[arg-type]
            elif checker is not None:
                _, node, direction, protocol, syn, walk = item
                info: WalkInfo = walk[8]
                checker.add_walk(calls.names[node], DIRECTIONS[direction], is_probe(protocol, syn, checker.protocol),
                                 info.expect_hooks, info.verdict, info.last_chain)

    for source in sources:
        fmt = log_format(source.path)
        stats.formats[str(source.path)] = fmt
        engine.begin(source.fallback_node, source.node is None, FORMATS[base_format(fmt)])
        if source.path.suffix == ".gz" or reader.changed_on_reading(fmt):  # gunzipped, respaced or joined here
            for chunk in log_chunks(source.path, fmt):
                take(engine.feed(chunk))
        else:  # read by the engine (a kernel log: in its parser thread)
            with read_errors(source.path), open(source.path, "rb") as handle:
                try:
                    while (written := engine.feed_from(handle.fileno(), reader.CHUNK)) is not None:
                        take(written)
                finally:  # on an error (the output broke...) the parser thread may still read ahead
                    engine.stop_reading()
        take(engine.end())
    take(engine.flush())
    counts = engine.stats()
    stats.lines, stats.ignored_lines, stats.cut_lines = counts["lines"], counts["ignored_lines"], counts["cut_lines"]
    stats.trace_records = counts["trace_records"]
    stats.skipped_lines = counts["skipped_lines"] + counts["unattributed"]
    stats.identities = {name: n for name, n in zip(IDENTITIES, counts["identities"]) if n}
    stats.matched = counts["matched"] if match else None
    nodes = [calls.names[i] for i in counts["nodes"]]
    rows, diagram_rows, flow_entries = engine.results()
    summary = Summary()
    summary.packets, summary.other = counts["matched"], counts["other"]
    summary.other_verdicts = {v: n for v, n in zip(VERDICTS, counts["other_verdicts"]) if n}
    summary_keys = {i: key for key, i in calls.summary_keys.items()}
    for node, direction, sid, count, first_seq, first_time, last_seq, last_time, example in rows:
        hooks, verdict, drop = summary_keys[sid]
        key = (calls.names[node], DIRECTIONS[direction], hooks, verdict, drop)
        summary.rows[key] = Row(*key, count, first_seq, first_time, last_seq, last_time, example)
    walks = [(calls.names[node], DIRECTIONS[direction], min_seq, count, walk[8])
             for node, direction, min_seq, count, walk in diagram_rows]
    keyed: list[tuple[tuple[str | None, int, int | None], Entries]] = []
    for proto, ip_id, seq, hops in flow_entries:
        entries: Entries = []
        for hop_seq, direction, node, walk, ttl, src, dst, sport, dport, exit_src, exit_dst, exit_sport, exit_dport in hops:
            info = walk[8]
            hop = Hop(calls.names[node], info.hooks, info.verdict, ttl, (src, dst, sport, dport),
                      (exit_src, exit_dst, exit_sport, exit_dport), origin=info.origin)
            entries.append((hop_seq, DIRECTIONS[direction], hop))
        keyed.append(((proto, ip_id, seq), entries))
    return Result(stats, nodes, build_flows(keyed), counts["repaired"], kept, summary, walks)
