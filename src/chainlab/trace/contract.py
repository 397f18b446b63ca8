"""The analysis contract: what `--format json` and a run's analysis.json hold, stated once.

Writers (`*.from_...`, `to_dict`) turn the analysis's objects into these records and the
records into JSON; readers (`from_dict`, `AnalysisDocument.from_json`) turn JSON back into
records, tolerating anything (a missing or mistyped field becomes None, an empty list, or
drops the item), so that a report never fails on an odd file. Labels for humans (a step's
`rule 4 → DROP`, a packet's title) are defined here too, next to the fields they read.

    {"packets": [PacketRecord...], "flows": [FlowRecord...],
     "skipped_lines": N, "repaired_lines": N, "ignored_lines": N, "cut_lines": N,
     "lines": N, "trace_records": N, "identities": {"ip_id": N, ...}, ["matched": N,]
     "formats": {path: format}, "tables": [...] | null, ["expect": {"ok": bool, "checks": [...]},]
     ["run": {...}  (written by the scenario runner, see report/run.py)]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chainlab.trace.expect import Check, is_probe
from chainlab.trace.flows import Endpoints, Flow, Hop, changed, endpoints, nat_kind
from chainlab.trace.model import ICMP_PROTOCOLS, IDENTITIES, Packet, Step


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strs(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class StepRecord:
    """One trace event of a packet: `table:chain`, what happened there, where in the log."""

    table: str
    chain: str
    kind: str
    position: int | None = None
    rule: str | None = None
    hook: str | None = None
    line: int | None = None
    handle: str | None = None
    verdict: str | None = None
    mark: str | None = None
    time: str | None = None
    family: str | None = None

    @classmethod
    def from_step(cls, s: Step) -> StepRecord:
        return cls(s.table, s.chain, s.kind, s.position, s.rule, s.hook, s.line, s.handle, s.verdict,
                   hex(s.mark) if s.mark is not None else None, s.time, s.family)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"table": self.table, "chain": self.chain, "kind": self.kind, "position": self.position,
                               "rule": self.rule, "hook": self.hook, "line": self.line}
        for name in ("handle", "verdict", "mark", "time", "family"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, d: object) -> StepRecord | None:
        if not isinstance(d, dict):
            return None
        return cls(_str(d.get("table")) or "?", _str(d.get("chain")) or "?", _str(d.get("kind")) or "?",
                   _int(d.get("position")), _str(d.get("rule")), _str(d.get("hook")), _int(d.get("line")),
                   _str(d.get("handle")), _str(d.get("verdict")), _str(d.get("mark")), _str(d.get("time")),
                   _str(d.get("family")))

    @property
    def name(self) -> str:
        """`table:chain`."""
        return f"{self.table}:{self.chain}"

    def label(self) -> str:
        """`rule 4`, `policy 3`, `return 1`, `rule handle 7`, with `→ VERDICT` when known."""
        text = self.kind
        if self.position is not None:
            text += f" {self.position}"
        elif self.handle:
            text += f" handle {self.handle}"
        if self.verdict:
            text += f" → {self.verdict}"
        return text

    def same_event(self, other: StepRecord | None) -> bool:
        """The same log event (a packet's last step appears in `steps` and as `last_step`)."""
        return other is not None and (self.table, self.chain, self.kind, self.position, self.line, self.handle) == (
            other.table, other.chain, other.kind, other.position, other.line, other.handle)


@dataclass(frozen=True)
class PacketRecord:
    """One packet on one node: its header fields, steps, hook path and verdict.

    `steps` holds the steps in the analysis's tables (all of them without --tables);
    `last_step` is the packet's last step whatever its table."""

    node: str
    direction: str
    protocol: str
    src: str | None
    dst: str | None
    ip_id: int | None
    identity: str
    ttl: int | None
    hooks: list[str]
    route: str | None
    steps: list[StepRecord]
    verdict: str
    reason: str
    last_step: StepRecord | None
    #: a nat chain was traced: conntrack sends only a connection's first packet through nat
    #: (so a SYN retransmission, or a log without nat lines, reads false)
    new_connection: bool
    exit_src: str | None = None
    exit_dst: str | None = None
    repaired_lines: int = 0
    icmp_type: int | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    has_icmp: bool = False
    sport: int | None = None
    dport: int | None = None
    tcp_flags: list[str] = field(default_factory=list)
    flow_label: int | None = None
    trace_ids: list[str] = field(default_factory=list)
    exit_sport: int | None = None  # the last line's ports (DNAT may change the destination port)
    exit_dport: int | None = None
    #: a line shows both addresses: `src`, `dst` and these ports are the first such line's
    #: (`exit_*` the last one's); a damaged line's ports are None (flows.endpoints)
    has_entry: bool = False
    entry_sport: int | None = None
    entry_dport: int | None = None

    @classmethod
    def from_packet(cls, p: Packet, tables: set[str] | None = None) -> PacketRecord:
        f = p.fields
        entry = p.first or f
        steps = [StepRecord.from_step(s) for s in p.steps if tables is None or s.table in tables]
        first, last = endpoints(p.first), endpoints(p.last)
        return cls(
            p.node, p.direction, p.protocol, entry.src, entry.dst, f.ip_id, p.identity, entry.ttl, list(p.hooks),
            p.route, steps, p.verdict, p.reason, StepRecord.from_step(p.steps[-1]) if p.steps else None,
            p.new_connection, last[0], last[1], p.repaired_lines,
            f.icmp_type, f.icmp_id, f.icmp_seq, f.proto in ICMP_PROTOCOLS, f.sport, f.dport,
            sorted(f.tcp_flags) if f.tcp_flags else [], f.flow_label, list(p.trace_ids),
            last[2], last[3], p.first is not None, first[2], first[3],
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node, "direction": self.direction, "protocol": self.protocol, "src": self.src,
            "dst": self.dst, "ip_id": self.ip_id, "identity": self.identity, "ttl": self.ttl, "hooks": self.hooks,
            "route": self.route, "steps": [s.to_dict() for s in self.steps], "verdict": self.verdict,
            "reason": self.reason, "last_step": self.last_step.to_dict() if self.last_step else None,
            "new_connection": self.new_connection,
            "entry": self._ends(self.src, self.dst, self.entry_sport, self.entry_dport) if self.has_entry else None,
            "exit": self._ends(self.exit_src, self.exit_dst, self.exit_sport, self.exit_dport)
            if self.exit_src is not None else None,
            "repaired_lines": self.repaired_lines,
        }
        if self.has_icmp:
            out["icmp"] = {"type": self.icmp_type, "id": self.icmp_id, "seq": self.icmp_seq}
        if self.sport is not None or self.dport is not None:
            out["sport"], out["dport"] = self.sport, self.dport
        if self.tcp_flags:
            out["tcp_flags"] = self.tcp_flags
        if self.flow_label is not None:
            out["flow_label"] = self.flow_label
        if self.trace_ids:
            out["trace_ids"] = self.trace_ids
        return out

    def _ends(self, src: str | None, dst: str | None, sport: int | None, dport: int | None) -> dict[str, Any]:
        """The addresses (and, for a packet with ports, the ports) on the packet's first
        (`entry`) or last (`exit`) line."""
        out: dict[str, Any] = {"src": src, "dst": dst}
        if self.sport is not None or self.dport is not None:
            out["sport"], out["dport"] = sport, dport
        return out

    @property
    def nat(self) -> list[str]:
        return self.nat_notes()

    def nat_notes(self, where: str = "") -> list[str]:
        """What NAT changed on this node between the packet's first and last lines, e.g.
        `DNAT: dst 10.0.0.4:80 → 10.0.0.4:52000` (an SNAT in nat POSTROUTING, the last table,
        is not seen on the node that does it: the flows across nodes show it). Ports are
        compared where both lines show them (a damaged line's are not read: flows.endpoints)."""
        if self.exit_src is None or not self.has_entry:
            return []
        entry: Endpoints = (self.src, self.dst, self.entry_sport, self.entry_dport)
        last: Endpoints = (self.exit_src, self.exit_dst, self.exit_sport, self.exit_dport)
        return [f"{nat_kind(self.direction, which)}{where}: {change}" for which in (0, 1)
                if (change := changed(entry, last, which))]

    @classmethod
    def from_dict(cls, d: object) -> PacketRecord | None:
        if not isinstance(d, dict):
            return None
        icmp = d.get("icmp")
        entry, exit_ = d.get("entry"), _dict(d.get("exit"))
        identity = _str(d.get("identity"))
        return cls(
            _str(d.get("node")) or "?", _str(d.get("direction")) or "unknown", _str(d.get("protocol")) or "unknown",
            _str(d.get("src")), _str(d.get("dst")), _int(d.get("ip_id")),
            identity if identity in IDENTITIES else "ip_id", _int(d.get("ttl")), _strs(d.get("hooks")),
            _str(d.get("route")), [s for s in map(StepRecord.from_dict, d.get("steps") or []) if s] if isinstance(
                d.get("steps"), list) else [],
            _str(d.get("verdict")) or "unknown", _str(d.get("reason")) or "", StepRecord.from_dict(d.get("last_step")),
            d.get("new_connection") is True, _str(exit_.get("src")), _str(exit_.get("dst")),
            _int(d.get("repaired_lines")) or 0, _int(_dict(icmp).get("type")), _int(_dict(icmp).get("id")),
            _int(_dict(icmp).get("seq")), isinstance(icmp, dict), _int(d.get("sport")), _int(d.get("dport")),
            _strs(d.get("tcp_flags")), _int(d.get("flow_label")), _strs(d.get("trace_ids")),
            _int(exit_.get("sport")), _int(exit_.get("dport")), isinstance(entry, dict),
            _int(_dict(entry).get("sport")), _int(_dict(entry).get("dport")),
        )

    def title(self) -> str:
        """`icmp 10.0.0.1 → 10.0.0.2 (ip id 7, icmp id 3 seq 1)`, `tcp ... (flow, ports 1 → 2 SYN)`."""
        if self.ip_id is not None:
            detail = f"ip id {self.ip_id}"
        elif self.identity == "trace_id" and self.trace_ids:
            detail = f"trace id {self.trace_ids[0]}"
        else:
            detail = self.identity.replace("_", " ")
        if self.has_icmp and self.icmp_seq is not None:
            detail += f", icmp id {self.icmp_id} seq {self.icmp_seq}"
        elif self.sport is not None:
            detail += f", ports {self.sport} → {self.dport}"
        if self.tcp_flags:
            detail += " " + ",".join(self.tcp_flags)
        ends = f"{self.src} → {self.dst}" if self.src is not None and self.dst is not None else "?"
        return f"{self.protocol} {ends} ({detail})"

    def is_probe(self, protocol: str) -> bool:
        """A packet a scenario's expectations speak of (expect.is_probe)."""
        return is_probe(self.protocol, "SYN" in self.tcp_flags, protocol)


@dataclass(frozen=True)
class HopRecord:
    """A flow's packet on one node: addresses (and ports, where its lines show them) on its
    first line and, `exit_*`, on its last."""

    node: str
    hooks: list[str]
    verdict: str
    ttl: int | None
    src: str | None
    dst: str | None
    exit_src: str | None
    exit_dst: str | None
    sport: int | None = None
    dport: int | None = None
    exit_sport: int | None = None
    exit_dport: int | None = None

    @classmethod
    def from_hop(cls, h: Hop) -> HopRecord:
        return cls(h.node, list(h.hooks), h.verdict, h.ttl, h.entry[0], h.entry[1], h.exit[0], h.exit[1],
                   h.entry[2], h.entry[3], h.exit[2], h.exit[3])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "hooks": self.hooks, "verdict": self.verdict, "ttl": self.ttl,
                               "src": self.src, "dst": self.dst, "exit_src": self.exit_src, "exit_dst": self.exit_dst}
        if any(port is not None for port in (self.sport, self.dport, self.exit_sport, self.exit_dport)):
            # (ICMP's hops keep their four addresses only)
            out |= {"sport": self.sport, "dport": self.dport, "exit_sport": self.exit_sport,
                    "exit_dport": self.exit_dport}
        return out

    @classmethod
    def from_dict(cls, d: object) -> HopRecord | None:
        if not isinstance(d, dict):
            return None
        return cls(_str(d.get("node")) or "?", _strs(d.get("hooks")), _str(d.get("verdict")) or "unknown",
                   _int(d.get("ttl")), _str(d.get("src")), _str(d.get("dst")), _str(d.get("exit_src")),
                   _str(d.get("exit_dst")), _int(d.get("sport")), _int(d.get("dport")), _int(d.get("exit_sport")),
                   _int(d.get("exit_dport")))


@dataclass(frozen=True)
class FlowRecord:
    """One packet followed across nodes (same IP id), with the NAT seen on the way."""

    direction: str
    protocol: str
    ip_id: int | None
    hops: list[HopRecord]
    nat: list[str]

    @classmethod
    def from_flow(cls, f: Flow) -> FlowRecord:
        return cls(f.direction, f.protocol, f.ip_id, [HopRecord.from_hop(h) for h in f.hops], f.nat)

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "protocol": self.protocol, "ip_id": self.ip_id,
                "hops": [h.to_dict() for h in self.hops], "nat": self.nat}

    @classmethod
    def from_dict(cls, d: object) -> FlowRecord | None:
        if not isinstance(d, dict):
            return None
        hops = [h for h in map(HopRecord.from_dict, d.get("hops") or []) if h] if isinstance(d.get("hops"), list) else []
        return cls(_str(d.get("direction")) or "unknown", _str(d.get("protocol")) or "unknown", _int(d.get("ip_id")),
                   hops, _strs(d.get("nat")))


def check_to_dict(c: Check) -> dict[str, Any]:
    return {"node": c.node, "direction": c.direction, "expected": c.expected, "actual": c.actual,
            "verdicts": c.verdicts, "ok": c.ok, "message": c.message}


def check_from_dict(d: object) -> Check | None:
    if not isinstance(d, dict):
        return None
    actual = d.get("actual")
    return Check(str(d.get("node", "?")), str(d.get("direction", "?")), _strs(d.get("expected")),
                 [_strs(a) for a in actual] if isinstance(actual, list) else [], _strs(d.get("verdicts")),
                 d.get("ok") is True, str(d.get("message", "")))


#: The counts in the document's tail, in the order written.
COUNTS = ("skipped_lines", "repaired_lines", "ignored_lines", "cut_lines", "lines", "trace_records")


@dataclass
class AnalysisDocument:
    """A whole analysis as read back from JSON."""

    packets: list[PacketRecord] = field(default_factory=list)
    flows: list[FlowRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    identities: dict[str, int] = field(default_factory=dict)
    matched: int | None = None
    formats: dict[str, str] = field(default_factory=dict)
    tables: list[str] | None = None
    checks: list[Check] | None = None
    expect_ok: bool | None = None

    @classmethod
    def from_json(cls, doc: object) -> AnalysisDocument:
        d = _dict(doc)
        expect = d.get("expect")
        checks = expect.get("checks") if isinstance(expect, dict) else None
        return cls(
            [p for p in map(PacketRecord.from_dict, d.get("packets") or []) if p] if isinstance(d.get("packets"), list) else [],
            [f for f in map(FlowRecord.from_dict, d.get("flows") or []) if f] if isinstance(d.get("flows"), list) else [],
            {k: _int(d.get(k)) or 0 for k in COUNTS},
            {k: v for k, v in _dict(d.get("identities")).items() if k in IDENTITIES and _int(v) is not None},
            _int(d.get("matched")),
            {k: v for k, v in _dict(d.get("formats")).items() if isinstance(v, str)},
            _strs(d.get("tables")) if isinstance(d.get("tables"), list) else None,
            [c for c in map(check_from_dict, checks) if c] if isinstance(checks, list) else None,
            expect.get("ok") if isinstance(expect, dict) and isinstance(expect.get("ok"), bool) else None,
        )
