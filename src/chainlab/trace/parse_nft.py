"""Parse nftables trace output: `xtables-monitor --trace` and `nft monitor trace`.

xtables-monitor prints a PACKET line (headers) and then TRACE lines that carry the trace
id, `table:chain:kind[:0xHANDLE]:VERDICT` and the matched rule in iptables syntax:
  PACKET: 2 b278c085 IN=left ... SRC=10.92.1.2 DST=10.92.2.2 LEN=84 TOS=0x0 TTL=64 ID=63276 DF
   TRACE: 2 b278c085 filter:FORWARD:rule:0x3:ACCEPT  -4 -t filter -A FORWARD -i left -j ACCEPT
nft monitor trace prints one line per event, the packet as nft expressions:
  trace id 4cc0afaa ip filter INPUT packet: iif "wg1" ip saddr 10.1.1.4 ... ip id 10304 ...
  trace id 4cc0afaa ip filter INPUT rule iifname "wg1" ... reject (verdict drop)
  trace id 4cc0afaa ip filter wg1-state verdict return
  trace id 4cc0afaa ip raw PREROUTING policy accept
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chainlab.trace.model import Fields, Step
from chainlab.trace.parse_kernel import IPV4, TCP_FLAGS, _int

XT_PACKET = re.compile(r"^\s*PACKET: (\d+) ([0-9a-f]+) (.*)$")
XT_TRACE = re.compile(
    r"^\s*TRACE: (\d+) ([0-9a-f]+) ([A-Za-z_][\w-]*):(\S+?):(rule|return|policy):"
    r"(?:(0x[0-9a-f]+):)?([A-Z]*)(?::(\S+))?(?:\s+(.*?))?\s*$"
)
NFT_LINE = re.compile(
    r"^\s*trace id ([0-9a-f]+) (ip|inet|ip6|bridge|arp|netdev) (\S+) (\S+) "
    r"(?:(packet): (.*)|rule (.*?) \(verdict ([^)]*)\)|(verdict|policy) (\S+))\s*$"
)
IPTABLES_PREFIX = re.compile(r"^-[46] -t \S+ ")
TCP_FLAG_WORDS = {w.lower(): w for w in TCP_FLAGS}


@dataclass(slots=True)
class NftRecord:
    """A trace step or (step None) a packet description, with its trace id."""

    trace_id: str
    step: Step | None
    fields: Fields | None


def xt_packet_fields(text: str) -> Fields:
    f = Fields()
    flags: set[str] = set()
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            if token in TCP_FLAGS:
                flags.add(token)
            continue
        if key in ("SRC", "DST") and IPV4.match(value):
            setattr(f, key.lower(), value)
        elif key == "IN":
            f.in_if = value or None
        elif key == "OUT":
            f.out_if = value or None
        elif key == "TTL":
            f.ttl = _int(value, 255)
        elif key == "ID":
            f.ip_id = _int(value, 65535)
        elif key in ("SPORT", "DPORT"):
            setattr(f, key[0].lower() + "port", _int(value, 65535))
        elif key == "PROTO":
            f.proto = value.upper()
    if f.sport is not None or f.dport is not None:
        f.proto = f.proto or ("TCP" if flags else "UDP")
    if flags:
        f.tcp_flags = frozenset(flags)
    f.damaged = f.ip_id is None or f.src is None or f.dst is None
    return f


def nft_packet_fields(text: str) -> Fields:
    """Fields from nft's `ip saddr X ip daddr Y ip id N tcp sport ...` description."""
    f = Fields()
    words = text.replace('"', "").split()
    pairs = {}
    for i in range(len(words) - 2):
        pairs.setdefault((words[i], words[i + 1]), words[i + 2])
    saddr, daddr = pairs.get(("ip", "saddr")), pairs.get(("ip", "daddr"))
    f.src = saddr if saddr and IPV4.match(saddr) else None
    f.dst = daddr if daddr and IPV4.match(daddr) else None
    f.ip_id = _int(pairs.get(("ip", "id"), ""), 65535)
    f.ttl = _int(pairs.get(("ip", "ttl"), ""), 255)
    following: dict[str, str] = {}
    for word, nxt in zip(words, words[1:]):
        following.setdefault(word, nxt)
    f.in_if = following.get("iif")
    f.out_if = following.get("oif")
    if ("icmp", "type") in pairs:
        f.proto = "ICMP"
        kind = pairs[("icmp", "type")]
        f.icmp_type = {"echo-request": 8, "echo-reply": 0}.get(kind, _int(kind, 255))
        f.icmp_id = _int(pairs.get(("icmp", "id"), ""), 65535)
        f.icmp_seq = _int(pairs.get(("icmp", "sequence"), ""), 65535)
    for proto in ("tcp", "udp"):
        if (proto, "sport") in pairs:
            f.proto = proto.upper()
            f.sport = _int(pairs[(proto, "sport")], 65535)
            f.dport = _int(pairs.get((proto, "dport"), ""), 65535)
    if f.proto == "TCP" and "flags" in words:
        start = words.index("flags") + 1
        tail = words[start + 1 :] if words[start : start + 1] == ["=="] else words[start:]
        flags = set()
        for word in tail:
            if word in TCP_FLAG_WORDS:
                flags.add(TCP_FLAG_WORDS[word])
            elif word != "|":
                break
        f.tcp_flags = frozenset(flags)
    f.damaged = f.ip_id is None or f.src is None or f.dst is None
    return f


def parse_xtables_monitor(line: str, number: int) -> NftRecord | None:
    match = XT_PACKET.match(line)
    if match:
        return NftRecord(match.group(2), None, xt_packet_fields(match.group(3)))
    match = XT_TRACE.match(line)
    if not match:
        return None
    _, trace_id, table, chain, kind, handle, verdict, target, rule = match.groups()
    if rule:
        rule = IPTABLES_PREFIX.sub("", rule)
    verdict_text = verdict + (f":{target}" if target else "") if verdict else None
    step = Step(table, chain, kind, handle=handle, verdict=verdict_text, rule=rule or None, line=number)
    return NftRecord(trace_id, step, None)


def parse_nft_monitor(line: str, number: int) -> NftRecord | None:
    match = NFT_LINE.match(line)
    if not match:
        return None
    trace_id, _family, table, chain, packet, packet_text, rule, rule_verdict, kind, verdict = match.groups()
    if packet:
        return NftRecord(trace_id, None, nft_packet_fields(packet_text))
    if rule is not None:
        step = Step(table, chain, "rule", verdict=rule_verdict.upper(), rule=rule, line=number)
    else:
        step = Step(table, chain, "policy" if kind == "policy" else "return", verdict=verdict.upper(), line=number)
    return NftRecord(trace_id, step, None)
