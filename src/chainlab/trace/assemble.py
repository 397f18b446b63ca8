"""Group trace events into packets, streaming.

Legacy logs have no packet id: a line belongs to the open packet on its node whose
identity agrees with it (IP id, protocol, ICMP id/seq or one of the ports, ICMP type, TCP
flags; NAT may rewrite addresses and one port, never the IP id) and whose walk it can
continue (netfilter visits hooks and tables in a fixed order). A damaged line that lost
some of these fields still joins the one packet its remaining fields agree with. nft
traces carry a trace id, which is tried first.

A line with no IPv4 id (IPv6 has none; a damaged or shortened line may have lost it)
that joins no open packet opens one of identity "flow" if it still shows both addresses:
later such lines join it while their source address, destination address (which DNAT may
change once), ports, ICMP sequence, interfaces, IPv6 flow label and TCP sequence number
agree with it, and the walk goes on in order (a walk that starts again is the flow's next
packet). The most recently touched packet is tried first. An IPv4 flow packet is a damaged
start of a packet: the first line with an IP id that fits it adopts it (identity "ip_id").

A packet no line has joined for `window` events is complete and handed on, so memory
stays flat on any file size. When an input file ends, the open packets after whose last
step no other packet of their node began are marked `at_end` (until a later line joins
them): their walk may go on where the log stops. (A packet walks netfilter in one burst
of lines; once the next packet has begun, the one before had ended, give or take lines
that other CPUs interleave.)
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator

from chainlab.trace.hooks import Resolver, resolver
from chainlab.trace.model import Event, Fields, Packet, Step, fill_missing
from chainlab.trace.netfilter import (HOOKS, TABLES, can_follow, hook_by_interfaces, loops_back, re_enters, step_rank,
                                      table_slots, user_chain_hook)


def _agree(a: int | str | frozenset[str] | None, b: int | str | frozenset[str] | None) -> bool:
    return a is None or b is None or a == b


def _v6(f: Fields | None) -> bool | None:
    """Whether the addresses of `f` are IPv6 (None: no address)."""
    if f is None:
        return None
    address = f.src or f.dst
    return None if address is None else ":" in address


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
    # An IPv4 packet never takes an IPv6 line, nor the other way round (a packet with an
    # IP id is IPv4).
    line_v6, packet_v6 = _v6(f), _v6(packet.last)
    if packet_v6 is None and p.ip_id is not None:
        packet_v6 = False
    if line_v6 is not None and packet_v6 is not None and line_v6 != packet_v6:
        return False
    return p.ip_id is not None or _same_flow(packet, f)


def _same_flow(packet: Packet, f: Fields) -> bool:
    """The identity checks of a packet that has no IP id (see the module doc)."""
    p = packet.fields
    first, last = packet.first, packet.last
    if first is not None and last is not None:
        # NAT: DNAT changes the destination once (after the nat hook of PREROUTING or
        # OUTPUT); a changed source is never seen on later lines of the same walk.
        if f.src is not None and f.src != last.src:
            return False
        if f.dst is not None and f.dst != last.dst and last.dst != first.dst:
            return False
    for a, b in ((p.in_if, f.in_if), (p.out_if, f.out_if), (p.flow_label, f.flow_label), (p.tcp_seq, f.tcp_seq),
                 (p.icmp_seq, f.icmp_seq)):
        if a is not None and b is not None and a != b:
            return False
    return True


#: Fields a packet learns from later lines when its first line did not show them.
_MERGED = ("ip_id", "proto", "icmp_type", "icmp_id", "icmp_seq", "sport", "dport", "tcp_flags", "in_if", "out_if",
           "flow_label", "tcp_seq")


#: Quiet packets are handed on in batches: the window is `window` to `window + EXPIRE_EVERY`.
EXPIRE_EVERY = 64
#: Steps a packet takes at most: a real walk has tens (every hook's tables, the rules and
#: returns a busy ruleset matches, a loop back in once); a longer run of lines that all fit
#: one packet (the same record repeated a million times) goes on as the next packet, so
#: that memory stays flat on any input.
MAX_STEPS = 1000


class Assembler:
    """Feed events in log order; get complete packets back."""

    def __init__(self, window: int = 400, resolve: Resolver | None = None):
        self.window = window
        self.resolve = resolve or resolver({})
        self.count = 0
        self.seq = 0
        self.open: OrderedDict[int, Packet] = OrderedDict()
        self.by_ip_id: dict[tuple[str, int], list[Packet]] = {}
        self.by_trace: dict[tuple[str, str], Packet] = {}
        self.unattributed = 0
        #: Open packets of identity "flow" (IPv4 ones may be adopted by an IP id).
        self.open_flows = 0
        #: Per node, the event count at which its latest packet began.
        self._began: dict[str, int] = {}
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
                ok, hook = self._next_hook(packet, event)
                if ok:
                    if f.damaged:
                        packet.repaired_lines += 1
                    self._append(packet, event, hook)
                    return self._expire() if self.count % EXPIRE_EVERY == 0 else []
        found = self._find(event)
        if found is None:
            if event.trace_id is None and f.ip_id is None and (f.src is None or f.dst is None):
                self.unattributed += 1
                return self._expire()
            packet = self._open(event)
            hook = self._next_hook(packet, event)[1]
        else:
            packet, hook = found
            if f.damaged:
                packet.repaired_lines += 1
        fill_missing(packet.fields, f, _MERGED)
        if f.out_if is not None:
            packet.left_on = f.out_if
        if packet.identity == "flow" and packet.fields.ip_id is not None:
            packet.identity = "ip_id"
            self.open_flows -= 1
            self.by_ip_id.setdefault((event.node, packet.fields.ip_id), []).append(packet)
        if event.trace_id is not None:
            if event.trace_id not in packet.trace_ids:
                packet.trace_ids.append(event.trace_id)
            self.by_trace[(event.node, event.trace_id)] = packet
        self._append(packet, event, hook)
        self._last = (event.node, event.trace_id, f, packet)
        if self.count % EXPIRE_EVERY == 0:
            return self._expire()
        return []

    def mark_end(self, entered: dict[tuple[str, str], str]) -> None:
        """An input file ended: the packets whose walk may have gone on beyond it are
        marked; `entered` names the base chains some were seen entering after their last
        step."""
        began = self._began
        for packet in self.open.values():
            if began.get(packet.node, 0) <= packet.last_seen:
                packet.at_end = True
        for key, chain in entered.items():
            traced = self.by_trace.get(key)
            if traced is not None and id(traced) in self.open:
                traced.entered = chain

    def _next_hook(self, packet: Packet, event: Event) -> tuple[bool, str | None]:
        """Can the event's step be the next step of `packet`'s walk (no going back in hook
        order, nor over to a hook of another route: INPUT, then FORWARD), and which hook it
        runs in (a base chain's own, else the current one). Within one hook of the same nft
        trace (its trace id already the packet's), a table that is not iptables' at that hook
        (`trace_debug`, `filter` at prerouting) has no known place among the others (its
        priority is not in the trace): any order is the walk's. Not
        across trace ids (a retransmission traced anew), nor for the bridge family, whose
        chains run before the hook's IP tables. Back to PREROUTING after OUTPUT or POSTROUTING
        only a packet that went out on `lo` goes, once: it came back in (netfilter.loops_back)."""
        if len(packet.steps) >= MAX_STEPS:
            return False, None
        last = packet.last_step
        step = event.step
        if step.family is None and event.base is None:
            base = step.chain if step.chain in HOOKS else None
            if base is None and (last is None or last.hook is None) and not event.fields.damaged:
                # a walk that starts in a user chain (the log or excerpt starts mid-chain)
                base = hook_by_interfaces(step.table, (event.fields.in_if is not None, event.fields.out_if is not None))
        else:
            base = self.resolve(event, last.hook if last is not None else None)
        if last is None or last.hook is None:
            return True, base
        hook = base if base is not None else _hook_of_regular_chain(event, last.hook)
        if re_enters(last.hook, hook):
            return not packet.looped and loops_back(packet.left_on, event.fields.in_if), hook
        if not can_follow(last.hook, hook):
            return False, hook
        if (hook == last.hook and step.family not in (None, "bridge") and last.family != "bridge"
                and ((hook, step.table) not in table_slots(step.table) or (hook, last.table) not in table_slots(last.table))
                and event.trace_id in packet.trace_ids):
            return True, hook
        return step_rank(hook, step.table, step.family) >= step_rank(last.hook, last.table, last.family), hook

    def _append(self, packet: Packet, event: Event, hook: str | None) -> None:
        f = event.fields
        step = event.step
        step.hook = hook
        last = packet.last_step
        if last is not None and re_enters(last.hook, hook):
            packet.looped = True
        if hook is not None and step.family is None and step.chain in HOOKS and step.table in TABLES:
            _returned_into(packet.steps, step)
        packet.steps.append(step)
        packet.at_end = False
        packet.entered = None
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
                ok, hook = self._next_hook(packet, event)
                if ok:
                    return packet, hook
            if f.ip_id is None:
                return None
        if f.ip_id is not None:
            candidates = self.by_ip_id.get((event.node, f.ip_id), [])
        else:
            candidates = [p for p in self.open.values() if p.node == event.node]
        for packet in reversed(candidates):
            if compatible(packet, f):
                ok, hook = self._next_hook(packet, event)
                if ok:
                    return packet, hook
        if f.ip_id is not None and self.open_flows:
            for packet in reversed(self.open.values()):
                if packet.identity == "flow" and packet.node == event.node and compatible(packet, f):
                    ok, hook = self._next_hook(packet, event)
                    if ok:
                        return packet, hook
        return None

    def _open(self, event: Event) -> Packet:
        self.seq += 1
        f = event.fields
        identity = "trace_id" if event.trace_id is not None else "ip_id" if f.ip_id is not None else "flow"
        packet = Packet(node=event.node, fields=dataclasses.replace(f, damaged=False), seq=self.seq, identity=identity)
        self._began[event.node] = self.count
        if f.damaged:
            packet.repaired_lines += 1
        self.open[id(packet)] = packet
        if f.ip_id is not None:
            self.by_ip_id.setdefault((event.node, f.ip_id), []).append(packet)
        elif identity == "flow":
            self.open_flows += 1
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
        if packet.identity == "flow":
            self.open_flows -= 1
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


def _hook_of_regular_chain(event: Event, current: str) -> str:
    """The hook of a step in a chain that is no base chain, the walk being in `current`: an
    iptables user chain runs where its table has a base chain (netfilter.user_chain_hook), an
    nft regular chain in the hook it was jumped to from."""
    if event.step.family is not None:
        return current
    f = event.fields
    interfaces = None if f.damaged else (f.in_if is not None, f.out_if is not None)
    return user_chain_hook(current, event.step.table, interfaces)


def _returned_into(steps: list[Step], base: Step) -> None:
    """A walk that starts in iptables user chains (a log cut mid-chain), none of them placed
    in a hook: when the last one returned (`return`) and the next step is its table's base
    chain, the user chains were called from that base chain, in its hook. Their steps of
    that table (the run before `base`) take its hook."""
    if not steps or steps[-1].hook is not None or steps[-1].kind != "return" or steps[-1].table != base.table:
        return
    for step in reversed(steps):
        if step.table != base.table or step.family is not None:
            return
        step.hook = base.hook
