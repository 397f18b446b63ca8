"""Hypothesis: lines are grouped into the packets they came from, whatever their order.

Packets are built from the real line shapes of tests/fixtures/captured (ulogd LOGEMU of
ip6tables, nft monitor trace) and then interleaved as CPUs interleave them in a log.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainlab.trace.pipeline import analyze
from chainlab.trace.reader import LogSource

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: A request walk on the receiving node, chain by chain (as in ulogd-ip6tables-legacy.log).
WALK = ["raw:PREROUTING:policy:3", "mangle:PREROUTING:policy:1", "filter:INPUT:rule:2", "filter:guard:return:2",
        "filter:INPUT:policy:3"]
KERNEL = ("Dec  1 14:31:02 vm TRACE: {step}  IN=t13-vb OUT= MAC=fa:b2:a3:16:a4:0f:d2:83:b7:a0:76:09:86:dd "
          "SRC={src} DST=fd00:231:60::2 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL={label} PROTO=TCP SPT={sport} DPT=81 "
          "SEQ={seq} ACK=0 WINDOW=64800 SYN URGP=0 MARK=0x0 ")
NFT_PACKET = ('trace id {tid} inet t13 {chain} packet: iif "t13-vb" ether saddr d2:83:b7:a0:76:09 ip6 saddr {src} '
              "ip6 daddr fd00:231:60::2 ip6 dscp cs0 ip6 ecn not-ect ip6 hoplimit 64 ip6 flowlabel {label} ip6 nexthdr tcp "
              "ip6 length 40 tcp sport {sport} tcp dport 81 tcp flags == syn tcp window 64800")
NFT_STEPS = {"my-trace": ["rule meta l4proto tcp meta nftrace set 1 (verdict continue)", "policy accept"],
             "input": ["rule jump guard (verdict jump guard)", "policy accept"]}

_files = itertools.count()


def _run(tmp_path: Path, lines: list[str]):
    path = tmp_path / f"g{next(_files)}.log"
    path.write_text("\n".join(lines) + "\n")
    return analyze([LogSource(path, "n")])


@st.composite
def interleaving(draw, lengths: list[int]) -> list[tuple[int, int]]:
    """(packet, line of that packet) in an order that keeps each packet's own order."""
    left = list(lengths)
    taken = [0] * len(lengths)
    order = []
    while any(left):
        live = [i for i, n in enumerate(left) if n]
        i = draw(st.sampled_from(live))
        order.append((i, taken[i]))
        taken[i] += 1
        left[i] -= 1
    return order


@st.composite
def flows(draw):
    """Packets of different IPv6 flows: each differs from every other in an identity field
    (source address, flow label or TCP sequence number), and walks 2-5 chains."""
    count = draw(st.integers(2, 6))
    packets = []
    for i in range(count):
        differ = draw(st.sampled_from(["src", "label", "seq"]))
        fields = {"src": "fd00:231:60::1", "label": 7, "sport": 40000, "seq": 1000}
        fields[differ] = {"src": f"fd00:231:60::{i + 10:x}", "label": 100 + i, "seq": 5000 + i}[differ]
        steps = WALK[: draw(st.integers(2, len(WALK)))]
        packets.append([KERNEL.format(step=step, **fields) for step in steps])
    return packets


@SETTINGS
@given(data=st.data())
def test_interleaved_ipv6_flows_come_apart(tmp_path, data):
    packets = data.draw(flows())
    order = data.draw(interleaving([len(p) for p in packets]))
    result = _run(tmp_path, [packets[i][j] for i, j in order])
    got = sorted((p.first.src, p.fields.flow_label, p.fields.tcp_seq, [f"{s.table}:{s.chain}" for s in p.steps])
                 for p in result.packets)
    want = sorted((lines[0].split("SRC=")[1].split()[0], int(lines[0].split("FLOWLBL=")[1].split()[0]),
                   int(lines[0].split("SEQ=")[1].split()[0]), [line.split("TRACE: ")[1].split(":")[0] + ":" +
                                                                line.split("TRACE: ")[1].split(":")[1] for line in lines])
                  for lines in packets)
    assert got == want
    assert {p.identity for p in result.packets} == {"flow"}
    assert result.stats.identities == {"flow": len(packets)} and result.stats.skipped_lines == 0


@SETTINGS
@given(walks=st.lists(st.integers(2, len(WALK)), min_size=1, max_size=8))
def test_one_flow_packet_after_packet(tmp_path, walks):
    """The same flow's packets one after the other (retransmissions: every field equal):
    each new walk is the next packet."""
    fields = {"src": "fd00:231:60::1", "label": 7, "sport": 40000, "seq": 1000}
    lines = [KERNEL.format(step=step, **fields) for n in walks for step in WALK[:n]]
    result = _run(tmp_path, lines)
    assert [len(p.steps) for p in sorted(result.packets, key=lambda p: p.seq)] == walks


@st.composite
def nft_traces(draw):
    """nft traces of IPv6 packets (no IP id), their fields possibly all alike: the trace id
    alone tells them apart."""
    count = draw(st.integers(2, 6))
    same = draw(st.booleans())
    traces = []
    for i in range(count):
        tid = f"{0x9318b4be + i * 7919:08x}"
        fields = {"src": "fd00:231:60::1" if same else f"fd00:231:60::{i + 1:x}", "label": 5 if same else i, "sport": 40000}
        lines = []
        for chain in ("my-trace", "input")[: draw(st.integers(1, 2))]:
            lines.append(NFT_PACKET.format(tid=tid, chain=chain, **fields))
            lines += [f"trace id {tid} inet t13 {chain} {step}" for step in NFT_STEPS[chain]]
        traces.append(lines)
    return traces


@SETTINGS
@given(data=st.data())
def test_interleaved_nft_traces_come_apart(tmp_path, data):
    traces = data.draw(nft_traces())
    order = data.draw(interleaving([len(t) for t in traces]))
    result = _run(tmp_path, [traces[i][j] for i, j in order])
    got = sorted((p.trace_ids, len(p.steps), p.hooks) for p in result.packets)
    want = sorted(([lines[0].split()[2]], sum("packet:" not in line for line in lines),
                   ["PREROUTING", "INPUT"][: sum("packet:" in line for line in lines)]) for lines in traces)
    assert got == want
    assert result.stats.identities == {"trace_id": len(traces)}


@SETTINGS
@given(data=st.data())
def test_interleaved_ipv4_packets_by_ip_id(tmp_path, data):
    """IPv4: the IP id keeps packets apart whatever else they share."""
    base = KERNEL.replace("TC=0 HOPLIMIT=64 FLOWLBL={label}", "TOS=0x00 PREC=0x00 TTL=64 ID={label} DF")
    count = data.draw(st.integers(2, 6))
    packets = [[base.format(step=step, src="10.231.60.1", label=100 + i, sport=1, seq=1).replace("fd00:231:60::2", "10.231.60.2")
                for step in WALK[: data.draw(st.integers(2, len(WALK)))]] for i in range(count)]
    order = data.draw(interleaving([len(p) for p in packets]))
    result = _run(tmp_path, [packets[i][j] for i, j in order])
    assert sorted((p.fields.ip_id, len(p.steps)) for p in result.packets) == [(100 + i, len(p)) for i, p in enumerate(packets)]
    assert result.stats.identities == {"ip_id": count}


@pytest.mark.parametrize("cut", [" LEN=", " HOPLIMIT=", " PROTO="])
def test_counts_add_up(tmp_path, cut):
    """Every trace record is in exactly one packet or counted as skipped."""
    text = (Path(__file__).resolve().parent.parent / "fixtures" / "captured" / "ulogd-ip6tables-legacy.log").read_text()
    lines = [line[: line.index(cut)] if i % 3 == 0 else line for i, line in enumerate(text.splitlines())]
    result = _run(tmp_path, lines)
    assert sum(len(p.steps) for p in result.packets) + result.stats.skipped_lines == result.stats.trace_records
    assert sum(result.stats.identities.values()) == len(result.packets)
