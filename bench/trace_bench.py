#!/usr/bin/env python3
"""Analyzer benchmark: how fast and how lean is `chainlab analyze` on a big legacy TRACE log?

What is measured
  1. A realistic legacy iptables TRACE log (rsyslog format, as CentOS 7 writes it) of the
     requested size is generated into the work directory, or reused if an identical one is
     already there. It simulates a Calico cluster of three nodes whose kernel logs reach one
     file (each line's syslog host field names its node): ICMP pings and TCP handshakes
     walking raw/mangle/nat/filter with cali-* user chains on the forward (PREROUTING ->
     FORWARD -> POSTROUTING), local-out (OUTPUT -> POSTROUTING) and local-in (PREROUTING ->
     INPUT) routes, requests and replies, nat only on a connection's first packet, a few
     drops, some packets interleaved (also across nodes), lines with MAC=, MARK= (changing
     along the walk, as Calico's rules set bits) and UID=/GID=, ~1 % damaged lines (a piece
     cut out, the tail cut off, the header cut, two lines glued), a few non-trace
     kernel/syslog lines and blank lines.
  2. `chainlab analyze --format F FILE > /dev/null` runs as a child process for F = json,
     summary and the default text; its wall time and peak memory (the child's RSS high-water
     mark, or the sampled PSS sum of its process tree when the analyzer parses in a helper
     process) give lines/s, MB/s and peak memory. It runs on the C engine when it is built,
     which the report says; CHAINLAB_ENGINE=python in the environment measures the Python
     reference engine instead.
  3. `mawk '{print $7}'` (awk if mawk is not installed) prints one field (`table:chain`) of
     every line of the same file, as the baseline of what a one-line shell pipeline costs;
     each format's speed is reported relative to it. Wall time is what counts (the C engine
     reads a kernel log in two threads); CPU time (user + system) is shown next to it.
  The file is read once before timing so both tools run with a warm page cache. The tools
  take turns, round after round (--repeat rounds, 5 by default), and each one's fastest run
  counts: on a VM the machine's speed drifts, and a tool measured in a block of its own
  would meet a different machine.

Why these are targets, not tests
  The targets (each format's throughput >= 2x awk's, peak RSS <= 100 MB whatever the file
  size) describe where the analyzer should be for a multi-GB log from a busy cluster to be
  comfortable to analyse. They depend on the machine, on which awk is installed (mawk is
  several times faster than gawk) and on the mix of lines, so they are printed as met or not
  met and never fail the run; the exit status is non-zero only when a tool itself fails.

Usage
  .venv/bin/python bench/trace_bench.py                   # 1024 MB (1 GiB), the reference run
  .venv/bin/python bench/trace_bench.py --size-mb 50      # quick run
  .venv/bin/python bench/trace_bench.py --json bench/out/figures.json
  MB here means MiB (2**20 bytes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from userenv import like_a_user_shell

MIB = 1 << 20
GENERATOR_VERSION = 2
TARGET_RATIO = 2.0  # analyzer MB/s divided by awk MB/s, for each format
FORMATS = ("json", "summary", "text")
TARGET_RSS_MB = 100.0
AWK_PROGRAM = "{print $7}"  # one field: `table:chain` in the generated lines (month day time host kernel: TRACE: table:chain...)
N_UNITS = 3000  # distinct conversation blocks kept in memory and written repeatedly
IP_ID_SLOTS = 6  # placeholders {i0}..{i5}: IP ids of the packets of one block
WRITE_CHUNK = 16 * MIB

# -- the simulated node -------------------------------------------------------------------

HOST_IF = "ens33"


@dataclass(frozen=True)
class Node:
    """A node of the simulated cluster: its name (the syslog host field), address, MAC and
    the /24 its pods get."""

    name: str
    ip: str
    mac: str
    pod_net: str


NODES = (Node("master", "172.16.91.225", "00:0c:29:4f:8e:35", "172.20.219"),
         Node("slave1", "172.16.91.226", "00:0c:29:aa:bb:02", "172.20.104"),
         Node("slave2", "172.16.91.227", "00:0c:29:aa:bb:03", "172.20.166"))
#: How often each node's conversations come (the master runs most of the pods).
NODE_WEIGHTS = (0.5, 0.25, 0.25)
GATEWAY_MAC = "00:50:56:e8:12:7a"
CALI_MAC = "ee:ee:ee:ee:ee:ee"


@dataclass(frozen=True)
class Endpoint:
    """Where a packet comes from or goes to, seen from the master node."""

    ip: str
    iface: str  # the interface on the master: caliXXXX for a local pod, tunl0, ens33, or "" (host)
    mac: str  # the endpoint's MAC as the master's kernel logs it on reception
    kind: str  # "pod" (local workload), "remote" (pod on another node, via tunl0), "host", "lan"


def _random_pods(rng: random.Random, count: int, net: str) -> list[Endpoint]:
    pods = []
    for n in range(count):
        iface = "cali" + "".join(rng.choice("0123456789abcdef") for _ in range(11))
        mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        pods.append(Endpoint(f"{net}.{65 + n}", iface, mac, "pod"))
    return pods


def _remote_pods(rng: random.Random, count: int, node: Node) -> list[Endpoint]:
    nets = [n.pod_net for n in NODES if n is not node]
    return [Endpoint(f"{rng.choice(nets)}.{rng.randrange(2, 250)}", "tunl0", "", "remote") for _ in range(count)]


def _lan_hosts(rng: random.Random, count: int) -> list[Endpoint]:
    return [Endpoint(f"172.16.91.{rng.randrange(2, 224)}", HOST_IF, GATEWAY_MAC, "lan") for _ in range(count)]


# -- chain walks --------------------------------------------------------------------------
# A walk is a list of (table, chain, kind, position, mark) where mark is the packet mark
# the kernel prints on that line (0: no MARK= field), as Calico's rules set and clear bits.

Walk = list[tuple[str, str, str, int, int]]
M_RAW = 0x40000  # set in raw cali-PREROUTING / cali-OUTPUT ("untracked" bit checked later)
M_ACCEPT = 0x10000  # Calico's "policy accepted" bit
M_SCRATCH = 0x4000000


def _raw_prerouting(from_pod: bool) -> Walk:
    if from_pod:
        return [("raw", "PREROUTING", "rule", 1, 0), ("raw", "cali-PREROUTING", "rule", 1, 0),
                ("raw", "cali-PREROUTING", "rule", 2, 0), ("raw", "cali-PREROUTING", "return", 5, M_RAW),
                ("raw", "PREROUTING", "policy", 2, M_RAW)]
    return [("raw", "PREROUTING", "rule", 1, 0), ("raw", "cali-PREROUTING", "rule", 1, 0),
            ("raw", "cali-PREROUTING", "rule", 3, 0), ("raw", "cali-from-host-endpoint", "return", 1, 0),
            ("raw", "cali-PREROUTING", "return", 5, 0), ("raw", "PREROUTING", "policy", 2, 0)]


def _mangle(hook: str, mark: int, user: bool) -> Walk:
    if not user:
        return [("mangle", hook, "policy", 1, mark)]
    return [("mangle", hook, "rule", 1, mark), (("mangle", f"cali-{hook}", "rule", 3, mark)),
            ("mangle", "cali-from-host-endpoint", "return", 1, mark),
            ("mangle", f"cali-{hook}", "return", 5, mark), ("mangle", hook, "policy", 2, mark)]


def _nat_prerouting(mark: int, service: bool) -> Walk:
    walk: Walk = [("nat", "PREROUTING", "rule", 1, mark), ("nat", "cali-PREROUTING", "rule", 1, mark),
                  ("nat", "cali-fip-dnat", "return", 1, mark), ("nat", "cali-PREROUTING", "return", 2, mark),
                  ("nat", "PREROUTING", "rule", 2, mark)]
    if service:
        walk.append(("nat", "KUBE-SERVICES", "return", 12, mark))
    walk += [("nat", "PREROUTING", "rule", 3, mark), ("nat", "DOCKER", "return", 2, mark),
             ("nat", "PREROUTING", "policy", 4, mark)]
    return walk


def _nat_postrouting(mark: int, masquerade: bool) -> Walk:
    walk: Walk = [("nat", "POSTROUTING", "rule", 1, mark), ("nat", "cali-POSTROUTING", "rule", 1, mark),
                  ("nat", "cali-fip-snat", "return", 1, mark), ("nat", "cali-POSTROUTING", "rule", 2, mark)]
    if masquerade:
        return walk + [("nat", "cali-nat-outgoing", "rule", 1, mark)]
    return walk + [("nat", "cali-nat-outgoing", "return", 2, mark), ("nat", "cali-POSTROUTING", "return", 4, mark),
                   ("nat", "POSTROUTING", "rule", 2, mark), ("nat", "KUBE-POSTROUTING", "return", 2, mark),
                   ("nat", "POSTROUTING", "policy", 3, mark)]


def _filter_forward(src: Endpoint, dst: Endpoint, new: bool, drop: bool, mark: int) -> Walk:
    w: Walk = [("filter", "FORWARD", "rule", 1, mark), ("filter", "cali-FORWARD", "rule", 1, mark),
               ("filter", "cali-FORWARD", "rule", 2, 0), ("filter", "cali-from-hep-forward", "return", 1, 0)]
    mark = 0
    if src.kind == "pod":
        w += [("filter", "cali-FORWARD", "rule", 3, 0), ("filter", "cali-from-wl-dispatch", "rule", 3, 0)]
        fw = f"cali-fw-{src.iface}"
        if new:
            w += [(("filter", fw, "rule", 3, 0)), ("filter", fw, "rule", 6, 0),
                  ("filter", "cali-pro-kns.default", "rule", 1, 0), ("filter", "cali-pro-kns.default", "rule", 2, M_ACCEPT),
                  ("filter", fw, "rule", 7, M_ACCEPT)]
        else:
            w += [("filter", fw, "rule", 1, M_ACCEPT)]
        mark = M_ACCEPT
    w.append(("filter", "cali-FORWARD", "rule", 4, mark))
    if dst.kind == "pod":
        tw = f"cali-tw-{dst.iface}"
        w.append(("filter", "cali-to-wl-dispatch", "rule", 2, mark))
        if new:
            w += [("filter", tw, "rule", 3, mark), ("filter", tw, "rule", 4, 0),
                  ("filter", "cali-pri-kns.default", "rule", 1, 0)]
            if drop:  # no profile accepted it: the packet dies in the to-workload chain
                return w + [("filter", "cali-pri-kns.default", "return", 3, 0), ("filter", tw, "rule", 6, 0)]
            w += [("filter", "cali-pri-kns.default", "rule", 2, M_ACCEPT), ("filter", tw, "rule", 5, M_ACCEPT)]
        else:
            w.append(("filter", tw, "rule", 1, M_ACCEPT))
        mark = M_ACCEPT
    return w + [("filter", "cali-FORWARD", "rule", 5, mark), ("filter", "cali-to-hep-forward", "return", 1, mark),
                ("filter", "cali-FORWARD", "rule", 6, mark)]


def _filter_input(src: Endpoint, new: bool, mark: int) -> Walk:
    if src.kind == "pod":
        fw = f"cali-fw-{src.iface}"
        w: Walk = [("filter", "INPUT", "rule", 1, mark), ("filter", "cali-INPUT", "rule", 2, mark),
                   ("filter", "cali-wl-to-host", "rule", 1, mark), ("filter", "cali-from-wl-dispatch", "rule", 3, mark),
                   ("filter", "cali-from-wl-dispatch-2", "rule", 1, mark)]
        if new:
            w += [("filter", fw, "rule", 3, mark), ("filter", fw, "rule", 4, mark),
                  ("filter", "cali-pro-net1", "rule", 1, mark), ("filter", "cali-pro-net1", "rule", 2, mark | 0x1000000),
                  ("filter", fw, "rule", 5, mark | 0x1000000)]
        else:
            w.append(("filter", fw, "rule", 1, mark | 0x1000000))
        return w + [("filter", "cali-wl-to-host", "rule", 2, mark | 0x1000000)]
    return [("filter", "INPUT", "rule", 1, mark), ("filter", "cali-INPUT", "rule", 4, mark),
            ("filter", "cali-from-host-endpoint", "return", 1, mark), ("filter", "cali-INPUT", "rule", 5, mark),
            ("filter", "INPUT", "rule", 2, mark), ("filter", "KUBE-FIREWALL", "return", 2, mark),
            ("filter", "INPUT", "policy", 3, mark)]


def _output(new: bool, dst: Endpoint) -> Walk:
    w: Walk = [("raw", "OUTPUT", "rule", 1, 0), ("raw", "cali-OUTPUT", "rule", 1, 0),
               ("raw", "cali-to-host-endpoint", "return", 1, 0), ("raw", "cali-OUTPUT", "return", 4, 0),
               ("raw", "OUTPUT", "policy", 2, 0), ("mangle", "OUTPUT", "policy", 1, 0)]
    if new:
        w += [("nat", "OUTPUT", "rule", 1, 0), ("nat", "cali-OUTPUT", "rule", 1, 0),
              ("nat", "cali-fip-dnat", "return", 1, 0), ("nat", "cali-OUTPUT", "return", 2, 0),
              ("nat", "OUTPUT", "rule", 2, 0), ("nat", "KUBE-SERVICES", "return", 12, 0),
              ("nat", "OUTPUT", "policy", 3, 0)]
    w += [("filter", "OUTPUT", "rule", 1, 0), ("filter", "cali-OUTPUT", "rule", 2, 0)]
    if dst.kind != "pod":
        w += [("filter", "cali-to-host-endpoint", "return", 1, 0), ("filter", "cali-OUTPUT", "return", 5, 0),
              ("filter", "OUTPUT", "rule", 2, 0), ("filter", "KUBE-FIREWALL", "return", 2, 0)]
    return w + [("filter", "OUTPUT", "policy", 3 if dst.kind != "pod" else 2, 0)]


# -- lines --------------------------------------------------------------------------------


@dataclass
class Packet:
    """One simulated packet: its route's walk and the header fields the kernel prints."""

    slot: int  # which {iN} placeholder holds its IP id
    src: Endpoint
    dst: Endpoint
    route: str  # forward, local-in, local-out
    proto_text: str  # "PROTO=ICMP TYPE=8 CODE=0 ID=17 SEQ={s0}" or the TCP equivalent
    length: int
    df: bool
    new: bool
    drop: bool = False
    lines: list[str] = field(default_factory=list)


def _hdr(in_if: str, out_if: str, mac: str) -> str:
    return f"IN={in_if} OUT={out_if} " + (f"MAC={mac} " if in_if else "")


def _render(p: Packet, node: Node) -> list[str]:
    """The TRACE lines of one packet, with {ts}, {iN} and {sN} placeholders left in."""
    local_out = p.route == "local-out"
    in_if = "" if local_out else p.src.iface
    ttl = 63 if p.src.kind == "remote" else 64  # a remote pod's packet was routed once already
    if p.src.kind == "pod":
        mac = f"{CALI_MAC}:{p.src.mac}:08:00"
    elif p.src.kind == "lan":
        mac = f"{node.mac}:{p.src.mac}:08:00"
    else:
        mac = ""  # tunl0 (IPIP) has no link-layer header: the kernel prints an empty MAC=
    out_if = p.dst.iface if p.route != "local-in" else ""
    walk: list[tuple[str, Walk]] = []  # (phase, steps): phase decides IN/OUT/TTL of the line
    if local_out:
        walk.append(("out", _output(p.new, p.dst)))
        walk.append(("post", _mangle("POSTROUTING", 0, False) + (_nat_postrouting(0, False) if p.new else [])))
    else:
        from_pod = p.src.kind == "pod"
        pre = _raw_prerouting(from_pod)
        mark = pre[-1][4]
        pre += _mangle("PREROUTING", mark, from_pod)
        if p.new:
            pre += _nat_prerouting(mark, service=from_pod)
        walk.append(("pre", pre))
        if p.route == "forward":
            fwd = _mangle("FORWARD", mark, False) + _filter_forward(p.src, p.dst, p.new, p.drop, mark)
            walk.append(("fwd", fwd))
            if not p.drop:
                last = fwd[-1][4]
                masq = p.src.kind == "pod" and p.dst.kind == "lan"
                walk.append(("post", _mangle("POSTROUTING", last, False)
                             + (_nat_postrouting(last, masq) if p.new else [])))
        else:
            inp = _mangle("INPUT", mark, False) + _filter_input(p.src, p.new, mark)
            if p.new:
                inp.append(("nat", "INPUT", "policy", 1, inp[-1][4]))
            walk.append(("in", inp))
    uid = " UID=0 GID=0" if local_out else ""
    df = " DF" if p.df else ""
    lines = []
    for phase, steps in walk:
        # A reply from a masqueraded LAN conversation arrives for the host's address and is
        # de-NATed by conntrack after PREROUTING.
        dst = node.ip if phase == "pre" and p.src.kind == "lan" else p.dst.ip
        if phase in ("pre", "in"):
            head, t = _hdr(in_if, "", mac), ttl
        elif phase == "fwd":
            head, t = _hdr(in_if, out_if, mac), ttl - 1
        elif phase == "out":
            head, t = _hdr("", out_if, ""), ttl
        else:  # post
            head, t = _hdr("", out_if, ""), ttl if local_out else ttl - 1
        for table, chain, kind, pos, mark in steps:
            tail = f" MARK={mark:#x}" if mark else ""
            lines.append(
                f"{{ts}} {node.name} kernel: TRACE: {table}:{chain}:{kind}:{pos} {head}SRC={p.src.ip} DST={dst} "
                f"LEN={p.length} TOS=0x00 PREC=0x00 TTL={t} ID={{i{p.slot}}}{df} {p.proto_text}{uid}{tail} "
            )
    return lines


NOISE = [
    "{ts} {node} kernel: IPVS: rr: TCP 10.96.0.1:443 - no destination available",
    "{ts} {node} kernel: IPv6: ADDRCONF(NETDEV_UP): cali0d3f5a1b2c9: link is not ready",
    "{ts} {node} kernel: device tunl0 entered promiscuous mode",
    "{ts} {node} kernel: nf_conntrack: falling back to vmalloc.",
    "{ts} {node} kernel: XFS (dm-0): Mounting V5 Filesystem",
    "{ts} {node} kubelet[1187]: I1202 03:10:15.442871    1187 kubelet.go:1926] SyncLoop (PLEG): event for pod",
    "{ts} {node} systemd[1]: Started Session 42 of user root.",
    "{ts} {node} kernel: net_ratelimit: 112 callbacks suppressed",
]


def _placeholder_spans(line: str) -> list[tuple[int, int]]:
    spans, start = [], line.find("{")
    while start >= 0:
        end = line.index("}", start) + 1
        spans.append((start, end))
        start = line.find("{", end)
    return spans


def _safe(line: str, pos: int, outward: int) -> int:
    """Move a cut position off any placeholder ({...}) so formatting still works."""
    for start, end in _placeholder_spans(line):
        if start < pos < end:
            return start if outward < 0 else end
    return pos


def _damage(lines: list[str], rng: random.Random) -> list[str]:
    """~1 % of TRACE lines damaged the ways loggers do it (see the seed logs)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        r = rng.random()
        body = line.find("IN=")
        if body < 0 or r >= 0.0095:
            out.append(line)
        elif r < 0.005:  # a piece cut out of the middle ("ID=45708CMP TYPE=8")
            a = _safe(line, rng.randrange(body, len(line) - 20), -1)
            b = _safe(line, min(a + rng.randrange(3, 40), len(line) - 1), +1)
            out.append(line[:a] + line[b:])
        elif r < 0.0075 and i + 1 < len(lines):  # glued to the next line
            a = _safe(line, rng.randrange(body, len(line)), -1)
            out.append(line[:a] + lines[i + 1])
            i += 1
        elif r < 0.009:  # tail cut off
            a = _safe(line, rng.randrange(body + 10, len(line)), -1)
            out.append(line[:a])
        else:  # header cut: "TRACE: filter:cali-FORW" then garbage
            head = line.find("TRACE: ") + 7
            a = rng.randrange(head + 2, body - 4)
            out.append(line[:a] + line[body:])
        i += 1
    return out


def _interleave(a: list[str], b: list[str], rng: random.Random) -> list[str]:
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rng.random() < 0.5):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


@dataclass
class World:
    """One node and what it talks to."""

    node: Node
    pods: list[Endpoint]
    remotes: list[Endpoint]
    lans: list[Endpoint]

    @property
    def host(self) -> Endpoint:
        return Endpoint(self.node.ip, "", "", "host")


def _conversation(world: World, rng: random.Random, slot0: int, sslot: int) -> list[list[str]]:
    """Packets (each a list of lines) of one conversation: ping request+reply or a TCP handshake."""
    pods, host = world.pods, world.host
    choice = rng.random()
    a = rng.choice(pods)
    if choice < 0.35:
        b = rng.choice([p for p in pods if p is not a])  # pod -> pod, same node
        req_route, rep_route = "forward", "forward"
    elif choice < 0.55:
        b = rng.choice(world.remotes)  # pod -> pod on another node, IPIP
        req_route, rep_route = "forward", "forward"
    elif choice < 0.70:
        b = host  # pod -> host
        req_route, rep_route = "local-in", "local-out"
    elif choice < 0.85:
        a, b = host, a  # host -> pod
        req_route, rep_route = "local-out", "local-in"
    else:
        b = rng.choice(world.lans)  # pod -> LAN host, masqueraded
        req_route, rep_route = "forward", "forward"
    new = rng.random() < 0.25
    drop = req_route == "forward" and b.kind == "pod" and new and rng.random() < 0.08
    if rng.random() < 0.75:  # ping
        icmp_id = rng.randrange(1, 65536)
        seq = "1" if new else f"{{s{sslot}}}"
        req = Packet(slot0, a, b, req_route, f"PROTO=ICMP TYPE=8 CODE=0 ID={icmp_id} SEQ={seq}", 84, True, new, drop)
        packets = [req]
        if not drop:
            packets.append(Packet(slot0 + 1, b, a, rep_route,
                                  f"PROTO=ICMP TYPE=0 CODE=0 ID={icmp_id} SEQ={seq}", 84, False, False))
    else:
        sport, dport = rng.randrange(32768, 61000), rng.choice((80, 443, 8080, 6443, 10250, 53, 5432))
        isn, risn = rng.randrange(1 << 32), rng.randrange(1 << 32)
        syn = Packet(slot0, a, b, req_route,
                     f"PROTO=TCP SPT={sport} DPT={dport} SEQ={isn} ACK=0 WINDOW=29200 RES=0x00 SYN URGP=0",
                     60, True, True, drop)
        packets = [syn]
        if not drop:
            packets.append(Packet(slot0 + 1, b, a, rep_route,
                                  f"PROTO=TCP SPT={dport} DPT={sport} SEQ={risn} ACK={(isn + 1) % (1 << 32)} "
                                  "WINDOW=28960 RES=0x00 ACK SYN URGP=0", 60, True, False))
            packets.append(Packet(slot0 + 2, a, b, req_route,
                                  f"PROTO=TCP SPT={sport} DPT={dport} SEQ={(isn + 1) % (1 << 32)} "
                                  f"ACK={(risn + 1) % (1 << 32)} WINDOW=229 RES=0x00 ACK URGP=0", 52, True, False))
    blocks = []
    for p in packets:
        lines = _render(p, world.node)
        if rng.random() < 0.05:
            lines.append("")
        blocks.append(lines)
    return blocks


def build_units(seed: int, count: int = N_UNITS) -> list[str]:
    """`count` distinct blocks of log text, each a format string with {ts}, {i0..i5}, {s0,s1}."""
    rng = random.Random(seed)
    worlds = [World(node, _random_pods(rng, 24, node.pod_net), _remote_pods(rng, 40, node), _lan_hosts(rng, 10))
              for node in NODES]
    units = []
    for _ in range(count):
        world = rng.choices(worlds, NODE_WEIGHTS)[0]
        first = _conversation(world, rng, 0, 0)
        lines = [line for block in first for line in block]
        if rng.random() < 0.15:  # two conversations at once (on any node): their lines interleave
            second = _conversation(rng.choices(worlds, NODE_WEIGHTS)[0], rng, 3, 1)
            lines = _interleave(lines, [line for block in second for line in block], rng)
        lines = _damage(lines, rng)
        if rng.random() < 0.3:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(NOISE).replace("{node}", world.node.name))
        units.append("\n".join(lines) + "\n")
    return units


@dataclass
class LogInfo:
    path: str
    bytes: int
    lines: int
    generator_version: int
    seed: int
    seconds: float = 0.0
    reused: bool = False


def generate(path: Path, size: int, seed: int) -> LogInfo:
    """Write at least `size` bytes of log (whole blocks) to `path`; reuse a matching file."""
    meta = path.with_name(path.name + ".json")
    if path.exists() and meta.exists():
        try:
            info = LogInfo(**json.loads(meta.read_text()))
        except (ValueError, TypeError):
            info = None
        if (info and info.generator_version == GENERATOR_VERSION and info.seed == seed
                and info.bytes == path.stat().st_size and size <= info.bytes < size + MIB):
            info.reused, info.seconds = True, 0.0
            return info
    start = time.perf_counter()
    units = build_units(seed)
    unit_lines = [u.count("\n") for u in units]
    n = len(units)
    stamp = dt.datetime(2019, 12, 2, 3, 10, 15)
    written = lines = 0
    ip_id = 0x1F00
    buf: list[str] = []
    buffered = 0
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="ascii", newline="\n") as out:
        k = 0
        while written + buffered < size:
            if k % 25 == 0:
                stamp += dt.timedelta(seconds=1)
                ts = f"{stamp:%b} {stamp.day:2d} {stamp:%H:%M:%S}"
            u = k % n
            ids = {f"i{j}": (ip_id + j) % 65535 + 1 for j in range(IP_ID_SLOTS)}
            ip_id = (ip_id + IP_ID_SLOTS) % 65535
            rnd = k // n
            text = units[u].format(ts=ts, s0=2 + rnd % 60000, s1=2 + (rnd * 7 + 3) % 60000, **ids)
            buf.append(text)
            buffered += len(text)
            lines += unit_lines[u]
            k += 1
            if buffered >= WRITE_CHUNK:
                out.write("".join(buf))
                written += buffered
                buf, buffered = [], 0
        if buf:
            out.write("".join(buf))
            written += buffered
    tmp.replace(path)
    info = LogInfo(str(path), path.stat().st_size, lines, GENERATOR_VERSION, seed)
    meta.write_text(json.dumps(asdict(info), indent=1) + "\n")
    info.seconds = time.perf_counter() - start
    return info


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stderr_tail: str
    cpu_seconds: float = 0.0  # user + system, all threads (0: not known)


# Why not os.wait4 on our own child: Linux seeds a forked child's ru_maxrss with the
# parent's high-water mark (kept across execve), so a child of this script (which held the
# generator's buffers) would report at least this script's peak. The child is therefore
# started from a tiny process: GNU time if installed, else a minimal Python runner whose own
# footprint (~10 MB) is then the floor of what can be reported.
RUNNER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {usage.ru_utime} {usage.ru_stime}\\n")
"""
GNU_TIME = "/usr/bin/time"


def measure(argv: list[str]) -> Run:
    """Run `argv` with stdout to /dev/null: wall time and peak memory (the largest process's
    RSS high-water mark, or the sampled PSS sum over its process tree if that is larger)."""
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "rusage"
        if os.access(GNU_TIME, os.X_OK):
            wrapped = [GNU_TIME, "-f", "%x %M %U %S", "-o", str(figures), *argv]
        else:
            wrapped = [sys.executable, "-S", "-c", RUNNER, str(figures), *argv]
        with open(Path(tmp) / "stderr", "w+b") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            tree_peak_kib = 0
            while True:  # the wait ends as the process does: the time is exact, sampling aside
                try:
                    proc.wait(timeout=0.05)
                    break
                except subprocess.TimeoutExpired:
                    tree = _descendants(proc.pid)
                    if len(tree) > 1:  # a helper beside the analyzer (see below); alone, %M is exact
                        tree_peak_kib = max(tree_peak_kib, sum(_pss_kib(pid) for pid in tree))
            seconds = time.perf_counter() - start
            err.seek(0)
            tail = err.read()[-2000:].decode("utf-8", "replace")
        try:
            code_text, rss_text, user, system = figures.read_text().split()[-4:]
            code, rss_kib, cpu = int(code_text), int(rss_text), float(user) + float(system)
        except (OSError, ValueError):
            code, rss_kib, cpu = proc.returncode or 1, 0, 0.0
    # ru_maxrss / %M (KiB) is the largest single process; the analyzer may run a forked
    # parsing helper next to it, so the sampled sum of the tree's PSS (shared pages counted
    # once) counts when it is larger. It is sampled only while there is such a helper:
    # reading a process's smaps_rollup takes its memory map's lock, and sampling the
    # analyzer alone every 50 ms slowed json by 2-4 % (8 interleaved runs each, 2026-12-04:
    # 1.11-1.20 s sampled, 1.09-1.11 s not).
    return Run(seconds, max(rss_kib, tree_peak_kib) / 1024, code, tail, cpu)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (not `pid` itself: that is the tiny measuring wrapper)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found += map(int, children)
        todo += map(int, children)
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def best_interleaved(commands: dict[str, list[str]], repeat: int) -> dict[str, Run]:
    """Each command's fastest of `repeat` runs, the commands taking turns round after round
    (a VM's speed drifts over a minute: runs of one tool in a row would each meet another
    machine); a failed run is returned as it is."""
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, argv in commands.items():
            run = measure(argv)
            if run.returncode != 0:
                return {**{n: min(r, key=lambda x: x.seconds) for n, r in runs.items() if r}, name: run}
            runs[name].append(run)
    return {name: min(r, key=lambda x: x.seconds) for name, r in runs.items()}


def warm(path: Path) -> None:
    """Read the file once so the timed runs do not measure the disk."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(8 * MIB):
            pass


def source_state(repo: Path) -> str:
    """The commit the analyzer was measured at, "+dirty" if src/chainlab/trace has local edits."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src/chainlab/trace"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def engine_used() -> str:
    """Which engine `chainlab analyze` runs on (as CHAINLAB_ENGINE says and the build allows)."""
    from chainlab.trace import native

    return "C" if native.wanted() else "Python"


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


# -- report -------------------------------------------------------------------------------


def report(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    log, awk = figures["log"], figures["awk"]
    console = Console()
    console.print(
        f"[bold]log[/bold] {log['path']}: {log['mb']:.0f} MB, {log['lines']:,} lines "
        + ("(reused)" if log["reused"] else f"(generated in {log['seconds']:.1f} s)")
    )
    table = Table(show_header=True, header_style="bold")
    for col in ("", "wall s", "cpu s", "lines/s", "MiB/s", "peak RSS MB", "vs awk"):
        table.add_column(col, justify="right" if col else "left")
    for fmt, an in figures["analyzer"].items():
        table.add_row(f"chainlab analyze --format {fmt} ({an['engine']} engine)", f"{an['seconds']:.2f}",
                      f"{an['cpu_seconds']:.2f}", f"{an['lines_per_s']:,.0f}", f"{an['mb_per_s']:.1f}",
                      f"{an['peak_rss_mb']:.1f}", f"{an['ratio']:.2f}x")
    table.add_row(f"awk '{awk['program']}' ({awk['binary']})", f"{awk['seconds']:.2f}", f"{awk['cpu_seconds']:.2f}",
                  f"{awk['lines_per_s']:,.0f}", f"{awk['mb_per_s']:.1f}", f"{awk['peak_rss_mb']:.1f}", "1x")
    console.print(table)

    def mark(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]not met[/red]"

    for fmt, an in figures["analyzer"].items():
        console.print(f"{fmt}: [bold]{an['ratio']:.2f}x[/bold] awk (target >= {TARGET_RATIO:.1f}x: {mark(an['ratio_met'])}), "
                      f"peak [bold]{an['peak_rss_mb']:.0f} MB[/bold] (target <= {TARGET_RSS_MB:.0f} MB: {mark(an['rss_met'])})")
    if figures["dropped_env"]:
        console.print(f"[dim]run without {', '.join(figures['dropped_env'])} (not in a user's shell: see bench/userenv.py)[/dim]")
    console.print(f"[dim]load average before measuring: {figures['machine']['load_before']}; "
                  "targets, not tests: they never fail this run[/dim]")


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="log size in MiB (default 1024)")
    parser.add_argument("--workdir", type=Path, default=here / "out", help="where the log goes (default bench/out)")
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the figures to this file")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (each tool once a round); the fastest counts (default 5)")
    parser.add_argument("--seed", type=int, default=2, help="generator seed (default 2)")
    parser.add_argument("--chainlab", default=str(Path(sys.executable).parent / "chainlab"),
                        help="the chainlab executable (default: next to this Python)")
    parser.add_argument("--generate-only", action="store_true", help="write the log and stop")
    args = parser.parse_args(argv)
    if args.size_mb <= 0:
        parser.error("--size-mb must be positive")

    args.workdir.mkdir(parents=True, exist_ok=True)
    log = generate(args.workdir / f"trace-{args.size_mb}mb.log", args.size_mb * MIB, args.seed)
    if args.generate_only:
        print(f"{log.path}: {log.bytes / MIB:.0f} MiB, {log.lines:,} lines, "
              + ("reused" if log.reused else f"generated in {log.seconds:.1f} s"))
        return 0
    path = Path(log.path)
    dropped = like_a_user_shell()  # best of --repeat runs: the first one writes the bytecode cache
    warm(path)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.2f} before measuring; other work on this machine skews the figures",
              file=sys.stderr)

    awk_path = shutil.which("mawk") or shutil.which("awk")
    if not awk_path:
        print("awk not found", file=sys.stderr)
        return 2
    engine = engine_used()
    commands = {"awk": [awk_path, AWK_PROGRAM, str(path)]}
    for fmt in FORMATS:
        commands[fmt] = [args.chainlab, "analyze", *(["--format", fmt] if fmt != "text" else []), str(path)]
    fastest = best_interleaved(commands, args.repeat)
    awk = fastest["awk"]
    if awk.returncode != 0:
        print(f"awk failed (exit {awk.returncode}):\n{awk.stderr_tail}", file=sys.stderr)
        return 1
    mb = log.bytes / MIB

    def speeds(run: Run) -> dict[str, float]:
        return {"seconds": round(run.seconds, 3), "cpu_seconds": round(run.cpu_seconds, 3),
                "lines_per_s": round(log.lines / run.seconds), "mb_per_s": round(mb / run.seconds, 2),
                "peak_rss_mb": round(run.peak_rss_mb, 1)}

    analyzer: dict[str, Any] = {}
    for fmt in FORMATS:
        an = fastest[fmt]
        if an.returncode != 0:
            print(f"analyzer failed (exit {an.returncode}):\n{an.stderr_tail}", file=sys.stderr)
            return 1
        ratio = awk.seconds / an.seconds
        analyzer[fmt] = {"argv": commands[fmt], "engine": engine, **speeds(an), "ratio": round(ratio, 3),
                         "ratio_met": ratio >= TARGET_RATIO, "rss_met": an.peak_rss_mb <= TARGET_RSS_MB}
    figures: dict[str, Any] = {
        "log": {"path": log.path, "bytes": log.bytes, "mb": round(mb, 1), "lines": log.lines,
                "reused": log.reused, "seconds": round(log.seconds, 2), "seed": log.seed},
        "source": source_state(here.parent),
        "analyzer": analyzer,
        "awk": {"binary": os.path.realpath(awk_path), "version": tool_version([awk_path, "-W", "version"]),
                "program": AWK_PROGRAM, **speeds(awk)},
        "rss_method": "GNU time %M" if os.access(GNU_TIME, os.X_OK) else "python runner, os.wait4 ru_maxrss",
        "targets": {"ratio": TARGET_RATIO, "rss_mb": TARGET_RSS_MB},
        "dropped_env": dropped,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_before": round(load, 2), "when": dt.datetime.now().isoformat(timespec="seconds")},
    }
    report(figures)
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
