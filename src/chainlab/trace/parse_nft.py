"""Parse nftables trace output: `xtables-monitor --trace` and `nft monitor trace`.

xtables-monitor prints a PACKET line (headers) and then TRACE lines that carry the trace
id, `table:chain:kind[:0xHANDLE]:VERDICT` and the matched rule in iptables syntax:
  PACKET: 2 b278c085 IN=left ... SRC=10.92.1.2 DST=10.92.2.2 LEN=84 TOS=0x0 TTL=64 ID=63276 DF
   TRACE: 2 b278c085 filter:FORWARD:rule:0x3:ACCEPT  -4 -t filter -A FORWARD -i left -j ACCEPT
(iptables 1.8.4 and older glue the DF flag to the IP id: `ID=38349DF`; IPv6 packets are
`PACKET: 10 ...` with `TC= HOPLIMIT= FLOWLBL=` and no IP id.)
nft monitor trace prints one line per event, the packet as nft expressions; a `packet:`
line opens each base chain the packet enters:
  trace id 4cc0afaa ip filter INPUT packet: iif "wg1" ip saddr 10.1.1.4 ... ip id 10304 ...
  trace id 4cc0afaa ip filter INPUT rule iifname "wg1" ... reject (verdict drop)
  trace id 4cc0afaa ip filter wg1-state verdict return
  trace id 4cc0afaa ip raw PREROUTING policy accept
  trace id c255b013 inet t13 input unknown rule handle 13 (verdict accept)
  trace id 5a2e1c07 inet t pre policy accept meta mark 0x00000042
(a policy or return line ends with the packet's mark once a rule set one: not kept, as no
nft step keeps a mark) and (newer nft) the packet's connection tracking state, read as no step:
  trace id 32 inet filter input conntrack: ct direction original ct state new ct id 2641368242
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chainlab.trace.model import Fields, Step
from chainlab.trace import ascii
from chainlab.trace.parse_kernel import IPV4, IPV6, TCP_FLAGS, _int, protocol_name

#: Where a line's text starts: after spaces and the `>` marks of a quote (a mail, a Markdown
#: post: `    > trace id ...`).
QUOTED = r"^\s*(?:>\s*)*"
XT_PACKET = re.compile(QUOTED + r"PACKET: (\d+) ([0-9a-f]+) (.*)$", re.ASCII)
XT_TRACE = re.compile(
    QUOTED + r"TRACE: (\d+) ([0-9a-f]+) ([A-Za-z_][\w-]*):(\S+?):(rule|return|policy):"
    r"(?:(0x[0-9a-f]+):)?([A-Z]*)(?::(\S+))?(?:\s+(.*?))?\s*$",
    re.ASCII,
)
#: nft families, in the order the C engine numbers them.
FAMILIES = ("ip", "inet", "ip6", "bridge", "arp", "netdev")
NFT_LINE = re.compile(
    QUOTED + r"trace id ([0-9a-f]+) (" + "|".join(FAMILIES) + r") (\S+) (\S+) "
    r"(?:(packet): (.*)|rule (.*?) \(verdict ([^)]*)\)|unknown rule handle (\d{1,10}) \(verdict ([^)]*)\)"
    r"|(verdict|policy) (\S+)(?: meta mark 0x[0-9a-fA-F]{1,8})?|(conntrack): .*)\s*$",
    re.ASCII,
)
#: The `KEY=` fields an xtables-monitor PACKET line may print (trace_print_packet, iptables
#: 1.8): besides them, IP and TCP flags, `FRAG:N`, `OPT (...)` and, after `LL=`, the link
#: layer header's bytes.
XT_PACKET_KEYS = frozenset(
    "IN OUT NFPROTO MACSRC MACDST MACPROTO LL SRC DST LEN TOS TTL ID TC HOPLIMIT FLOWLBL NH SPORT DPORT MARK".split())
IPTABLES_PREFIX = re.compile(r"^-[46] -t \S+ ", re.ASCII)
#: `ID=38349DF`: xtables-monitor before iptables 1.8.5 printed the IP flags without a space,
#: and a packet without flags got the next field glued on: `ID=43007SPORT=80`.
GLUED_ID = re.compile(r"(\d{1,10})(?:DF|MF|CE)?([A-Z]+=\S*)?", re.ASCII)
TCP_FLAG_WORDS = {w.lower(): w for w in TCP_FLAGS}
#: Bit values of the TCP flags, for nft's numeric form (`tcp flags == 0x14`).
TCP_FLAG_BITS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20),
                 ("ECE", 0x40), ("CWR", 0x80))
ICMP_TYPES = {"echo-request": 8, "echo-reply": 0}
ICMPV6_TYPES = {"echo-request": 128, "echo-reply": 129}
HEX_NUMBER = re.compile(r"0x[0-9a-fA-F]{1,8}", re.ASCII)


@dataclass(slots=True)
class NftRecord:
    """A trace step, or (step None) a packet description, or (both None) a `conntrack:` line,
    with its trace id; `base` is the (table, chain) a `packet:` line opens (nft monitor trace
    only)."""

    trace_id: str
    step: Step | None
    fields: Fields | None
    base: tuple[str, str] | None = None


def xt_packet_fields(text: str) -> Fields:
    f = Fields()
    flags: set[str] = set()
    v6 = False
    tokens = ascii.words(text)
    tokens.reverse()
    while tokens:
        token = tokens.pop()
        key, sep, value = token.partition("=")
        if not sep:
            if token in TCP_FLAGS:
                flags.add(token)
            continue
        if key in ("SRC", "DST") and (IPV4.fullmatch(value) or IPV6.fullmatch(value)):
            v6 |= ":" in value
            if key == "SRC":
                f.src = value
            else:
                f.dst = value
        elif key == "IN":
            f.in_if = value or None
        elif key == "OUT":
            f.out_if = value or None
        elif key == "TTL" or key == "HOPLIMIT":
            f.ttl = _int(value, 255)
        elif key == "FLOWLBL":
            f.flow_label = _int(value, 0xFFFFF)
            v6 = True
        elif key == "ID":
            glued = GLUED_ID.fullmatch(value)
            f.ip_id = _int(glued.group(1), 65535) if glued else None
            if glued and glued.group(2):
                tokens.append(glued.group(2))
        elif key in ("SPORT", "DPORT"):
            setattr(f, key[0].lower() + "port", _int(value, 65535))
        elif key == "PROTO":
            name = ascii.upper(value)
            f.proto = protocol_name(name)
    if f.sport is not None or f.dport is not None:
        f.proto = f.proto or ("TCP" if flags else "UDP")
    if flags:
        f.tcp_flags = frozenset(flags)
    f.damaged = (f.ip_id is None and not v6) or f.src is None or f.dst is None
    return f


def _tcp_flags(words: list[str]) -> frozenset[str]:
    """`tcp flags == syn | ack`, `tcp flags syn`, or the numeric `tcp flags == 0x14`."""
    start = words.index("flags") + 1
    tail = words[start + 1 :] if words[start : start + 1] == ["=="] else words[start:]
    if tail and HEX_NUMBER.fullmatch(tail[0]):
        bits = int(tail[0], 16)
        return frozenset(name for name, bit in TCP_FLAG_BITS if bits & bit)
    flags = set()
    for word in tail:
        if word in TCP_FLAG_WORDS:
            flags.add(TCP_FLAG_WORDS[word])
        elif word != "|":
            break
    return frozenset(flags)


def nft_packet_fields(text: str) -> Fields:
    """Fields from nft's `ip saddr X ip daddr Y ip id N tcp sport ...` description (or
    `ip6 saddr ... ip6 flowlabel N icmpv6 type echo-request ...`)."""
    f = Fields()
    words = ascii.words(text.replace('"', ""))
    pairs: dict[tuple[str, str], str] = {}
    for i in range(len(words) - 2):
        pairs.setdefault((words[i], words[i + 1]), words[i + 2])
    v6 = ("ip6", "saddr") in pairs or ("ip6", "daddr") in pairs
    family, address = ("ip6", IPV6) if v6 else ("ip", IPV4)
    saddr, daddr = pairs.get((family, "saddr")), pairs.get((family, "daddr"))
    f.src = saddr if saddr and address.fullmatch(saddr) else None
    f.dst = daddr if daddr and address.fullmatch(daddr) else None
    if v6:
        f.ttl = _int(pairs.get(("ip6", "hoplimit"), ""), 255)
        f.flow_label = _int(pairs.get(("ip6", "flowlabel"), ""), 0xFFFFF)
    else:
        f.ip_id = _int(pairs.get(("ip", "id"), ""), 65535)
        f.ttl = _int(pairs.get(("ip", "ttl"), ""), 255)
    following: dict[str, str] = {}
    for word, nxt in zip(words, words[1:]):
        following.setdefault(word, nxt)
    f.in_if = following.get("iif")
    f.out_if = following.get("oif")
    for icmp, proto, names in (("icmp", "ICMP", ICMP_TYPES), ("icmpv6", "ICMPV6", ICMPV6_TYPES)):
        if (icmp, "type") in pairs:
            f.proto = proto
            kind = pairs[(icmp, "type")]
            f.icmp_type = names.get(kind, _int(kind, 255))
            f.icmp_id = _int(pairs.get((icmp, "id"), ""), 65535)
            f.icmp_seq = _int(pairs.get((icmp, "sequence"), ""), 65535)
    for proto in ("tcp", "udp"):  # either port: a post may elide the other (`.. tcp dport 22`)
        if (proto, "sport") in pairs or (proto, "dport") in pairs:
            f.proto = ascii.upper(proto)
            f.sport = _int(pairs.get((proto, "sport"), ""), 65535)
            f.dport = _int(pairs.get((proto, "dport"), ""), 65535)
    if f.proto == "TCP":
        f.tcp_seq = _int(pairs.get(("tcp", "sequence"), ""), 0xFFFFFFFF)
        if "flags" in words:
            f.tcp_flags = _tcp_flags(words) or None
    f.damaged = (f.ip_id is None and not v6) or f.src is None or f.dst is None
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
    (trace_id, family, table, chain, packet, packet_text, rule, rule_verdict, handle, handle_verdict,
     kind, verdict, conntrack) = match.groups()
    if conntrack:
        return NftRecord(trace_id, None, None)
    if packet:
        return NftRecord(trace_id, None, nft_packet_fields(packet_text), (table, chain))
    if rule is not None:
        step = Step(table, chain, "rule", verdict=ascii.upper_keyword(rule_verdict), rule=rule, line=number, family=family)
    elif handle is not None:
        step = Step(table, chain, "rule", handle=handle, verdict=ascii.upper_keyword(handle_verdict), line=number, family=family)
    else:
        step = Step(table, chain, "policy" if kind == "policy" else "return", verdict=ascii.upper_keyword(verdict), line=number,
                    family=family)
    return NftRecord(trace_id, step, None)
