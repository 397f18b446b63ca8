"""Group trace events into packets, streaming.

Legacy logs have no packet id: a line belongs to the open packet on its node whose
identity agrees with it (IP id, protocol, ICMP id/seq or one of the ports, ICMP type, TCP
flags; NAT may rewrite addresses and one port, never the IP id) and whose walk it can
continue (netfilter visits hooks and tables in a fixed order). A damaged line that lost
some of these fields still joins the one packet its remaining fields agree with. nft
traces carry a trace id, which is tried first. A packet no line has joined for `window`
events is complete and handed on, so memory stays flat on any file size.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator

from chainlab.trace.model import Event, Fields, Packet, Step
from chainlab.trace.netfilter import HOOKS, slot_rank


def _agree(a: int | str | frozenset[str] | None, b: int | str | frozenset[str] | None) -> bool:
    return a is None or b is None or a == b


def compatible(packet: Packet, f: Fields) -> bool:
    """Can a line with fields `f` belong to `packet`? Unknown fields agree with anything."""
    p = packet.fields
    if not (_agree(p.ip_id, f.ip_id) and _agree(p.proto, f.proto) and _agree(p.icmp_type, f.icmp_type)):
        return False
    if not _agree(p.tcp_flags, f.tcp_flags):
        return False
    if p.icmp_id is not None and f.icmp_id is not None and p.icmp_seq is not None and f.icmp_seq is not None:
        if p.icmp_id != f.icmp_id and p.icmp_seq != f.icmp_seq:
            return False
    if None not in (p.sport, p.dport, f.sport, f.dport):
        if p.sport != f.sport and p.dport != f.dport:
            return False
    return True


def _next_hook(packet: Packet, step: Step) -> tuple[bool, str | None]:
    """Can `step` be the next step of `packet`'s walk (no going back in hook order), and
    which hook it runs in (built-in chains name theirs; a user chain runs in the current one)."""
    last = packet.last_step
    chain = step.chain
    if last is None:
        return True, chain if chain in HOOKS else None
    hook = chain if chain in HOOKS else last.hook
    if last.hook is None:
        return True, hook
    return slot_rank(hook, step.table) >= slot_rank(last.hook, last.table), hook


def _merge(into: Fields, f: Fields) -> None:
    """Fill fields the packet does not know yet from a later line."""
    for name in ("ip_id", "proto", "icmp_type", "icmp_id", "icmp_seq", "sport", "dport", "tcp_flags"):
        if getattr(into, name) is None:
            value = getattr(f, name)
            if value is not None:
                setattr(into, name, value)


#: Quiet packets are handed on in batches: the window is `window` to `window + EXPIRE_EVERY`.
EXPIRE_EVERY = 64


class Assembler:
    """Feed events in log order; get complete packets back."""

    def __init__(self, window: int = 400):
        self.window = window
        self.count = 0
        self.seq = 0
        self.open: OrderedDict[int, Packet] = OrderedDict()
        self.by_ip_id: dict[tuple[str, int], list[Packet]] = {}
        self.by_trace: dict[tuple[str, str], Packet] = {}
        self.unattributed = 0
        self._last: tuple[str, str | None, Fields, Packet] | None = None

    def feed(self, event: Event) -> list[Packet]:
        """Add one event; returns the packets that have been quiet for `window` events."""
        self.count += 1
        f = event.fields
        last = self._last
        if last is not None and (last[2] is f or last[2] == f) and last[0] == event.node and last[1] == event.trace_id:
            # The same fields as the last line that was placed (the parser shares one object
            # between equal lines, so mostly `is` decides): same packet, nothing new to merge.
            packet = last[3]
            if id(packet) in self.open:
                ok, hook = _next_hook(packet, event.step)
                if ok:
                    if f.damaged:
                        packet.repaired_lines += 1
                    self._append(packet, event, hook)
                    return []
        found = self._find(event)
        if found is None:
            if f.ip_id is None:
                self.unattributed += 1
                return self._expire()
            packet = self._open(event)
            hook = _next_hook(packet, event.step)[1]
        else:
            packet, hook = found
            if f.damaged:
                packet.repaired_lines += 1
        _merge(packet.fields, f)
        if event.trace_id is not None:
            if event.trace_id not in packet.trace_ids:
                packet.trace_ids.append(event.trace_id)
            self.by_trace[(event.node, event.trace_id)] = packet
        self._append(packet, event, hook)
        self._last = (event.node, event.trace_id, f, packet)
        if self.count % EXPIRE_EVERY == 0:
            return self._expire()
        return []

    def _append(self, packet: Packet, event: Event, hook: str | None) -> None:
        f = event.fields
        step = event.step
        step.hook = hook
        packet.steps.append(step)
        if f.src is not None and f.dst is not None:
            if packet.first is None:
                packet.first = f
            packet.last = f
        packet.last_seen = self.count
        self.open.move_to_end(id(packet))

    def flush(self) -> Iterator[Packet]:
        """Every packet still open (end of input)."""
        while self.open:
            _, packet = self.open.popitem(last=False)
            self._forget(packet)
            yield packet

    def _find(self, event: Event) -> tuple[Packet, str | None] | None:
        """The open packet `event` continues, and the hook the step runs in."""
        f = event.fields
        if event.trace_id is not None:
            packet = self.by_trace.get((event.node, event.trace_id))
            if packet is not None and id(packet) in self.open and compatible(packet, f):
                ok, hook = _next_hook(packet, event.step)
                if ok:
                    return packet, hook
        if f.ip_id is not None:
            candidates = self.by_ip_id.get((event.node, f.ip_id), [])
        else:
            candidates = [p for p in self.open.values() if p.node == event.node]
        for packet in reversed(candidates):
            if compatible(packet, f):
                ok, hook = _next_hook(packet, event.step)
                if ok:
                    return packet, hook
        return None

    def _open(self, event: Event) -> Packet:
        self.seq += 1
        f = event.fields
        packet = Packet(node=event.node, fields=dataclasses.replace(f, damaged=False), seq=self.seq)
        if f.damaged:
            packet.repaired_lines += 1
        self.open[id(packet)] = packet
        assert f.ip_id is not None
        self.by_ip_id.setdefault((event.node, f.ip_id), []).append(packet)
        return packet

    def _expire(self) -> list[Packet]:
        expired = []
        while self.open:
            packet = next(iter(self.open.values()))
            if self.count - packet.last_seen < self.window:
                break
            self.open.popitem(last=False)
            self._forget(packet)
            expired.append(packet)
        return expired

    def _forget(self, packet: Packet) -> None:
        if packet.fields.ip_id is not None:
            key = (packet.node, packet.fields.ip_id)
            siblings = self.by_ip_id.get(key, [])
            if packet in siblings:
                siblings.remove(packet)
            if not siblings:
                self.by_ip_id.pop(key, None)
        for trace_id in packet.trace_ids:
            if self.by_trace.get((packet.node, trace_id)) is packet:
                del self.by_trace[(packet.node, trace_id)]
