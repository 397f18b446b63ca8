"""The trace formats found in the wild: IPv6, no IP id, glued flags, unknown rule handles,
nft base chains with their own names, and traces cut off where the log ends.

The logs are real (tests/fixtures/README.md says where each comes from); where a test
builds lines, it builds them from these.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainlab.trace.hooks import hook_by_name, inferred_hook
from chainlab.trace.netfilter import hook_by_interfaces
from chainlab.trace.parse_kernel import parse_fields, parse_line
from chainlab.trace.parse_nft import parse_nft_monitor, parse_xtables_monitor
from chainlab.trace.pipeline import AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import load_rules, parse_rules

from ..conftest import FIXTURES

CAPTURED = FIXTURES / "captured"
PUBLIC = FIXTURES / "public"
ULOGD = CAPTURED / "ulogd-ip6tables-legacy.log"
NFT = CAPTURED / "nft-monitor-inet-t13.log"


def run(*paths: Path, rules: Path | None = None):
    options = AnalysisOptions(rules={"n": load_rules(rules)} if rules else {})
    return analyze([LogSource(path, "n") for path in paths], options)


def walks(result):
    return [(p.identity, p.protocol, p.hooks, p.verdict) for p in result.packets]


# -- kernel-format IPv6 (ulogd LOGEMU of ip6tables-legacy TRACE) --------------------------------


def test_ipv6_kernel_line_fields():
    line = ULOGD.read_text().splitlines()[0]
    (record,), bad = parse_line(line, 1)
    f = record.fields
    assert bad == 0 and record.host == "vm" and not f.damaged
    assert (f.src, f.dst, f.ttl, f.flow_label, f.ip_id) == ("fd00:231:60::1", "fd00:231:60::2", 64, 552291, None)
    assert (f.proto, f.icmp_type, f.icmp_id, f.icmp_seq) == ("ICMPV6", 128, 12600, 1)


def test_ipv6_written_out_in_full_as_the_kernel_prints_it():
    f = parse_fields("IN= OUT=eth1 SRC=fe80:0000:0000:0000:4262:31ff:fe07:d301 DST=ff02:0000:0000:0000:0000:0000:0000:0002 "
                     "LEN=56 TC=0 HOPLIMIT=255 FLOWLBL=0 PROTO=ICMPv6 TYPE=133 CODE=0")
    assert f.src == "fe80:0000:0000:0000:4262:31ff:fe07:d301" and f.flow_label == 0 and not f.damaged


def test_ipv6_tcp_sequence_number_is_kept():
    line = ULOGD.read_text().splitlines()[12]
    (record,), _ = parse_line(line, 1)
    assert (record.fields.proto, record.fields.sport, record.fields.dport, record.fields.tcp_seq) == ("TCP", 33102, 81, 1189008387)


def test_ipv6_kernel_log_grouped_by_flow():
    """No IP id: packets by addresses, ports, ICMP sequence, flow label and order. Two pings
    (seq 1, 2) each with its reply, two SYNs of one connection (retransmitted: another flow
    label), a SYN rejected by `guard` and the RST that answers it."""
    result = run(ULOGD, rules=CAPTURED / "ulogd-ip6tables-legacy.rules")
    assert walks(result) == [
        ("flow", "icmpv6", ["PREROUTING", "INPUT"], "accepted"),
        ("flow", "icmpv6", ["OUTPUT"], "accepted"),
        ("flow", "icmpv6", ["PREROUTING", "INPUT"], "accepted"),
        ("flow", "icmpv6", ["OUTPUT"], "accepted"),
        ("flow", "tcp", ["PREROUTING", "INPUT"], "dropped"),
        ("flow", "tcp", ["PREROUTING", "INPUT"], "dropped"),
        ("flow", "tcp", ["PREROUTING", "INPUT"], "dropped"),
        ("flow", "tcp", ["OUTPUT"], "accepted"),
    ]
    assert [p.fields.icmp_seq for p in result.packets[:4]] == [1, 1, 2, 2]
    assert [p.direction for p in result.packets[:4]] == ["request", "reply", "request", "reply"]
    assert [p.fields.flow_label for p in result.packets[4:6]] == [658, 495281]
    assert "-A guard -p tcp -m tcp --dport 82 -j REJECT" in result.packets[6].reason
    assert result.stats.identities == {"flow": 8} and result.stats.skipped_lines == 0
    assert sum(p.repaired_lines for p in result.packets) == 0  # no IP id is no damage in IPv6


def test_shortened_lines_still_group_by_addresses(tmp_path):
    """Lines people shortened before posting (`... SRC=a DST=b` and the rest cut): no id, no
    protocol, but addresses, interfaces and order. Built from the captured IPv6 log and
    from the kubernetes/kubernetes#24350 IPv4 lines."""
    v4 = (PUBLIC / "kubernetes-24350-docker0-tcp.log").read_text().splitlines()
    v6 = ULOGD.read_text().splitlines()[:4]
    shortened = [line[: line.index(" LEN=")] for line in v4 + v6]
    log = tmp_path / "short.log"
    log.write_text("\n".join(shortened) + "\n")
    result = run(log)
    assert [(p.identity, len(p.steps), p.first.src) for p in result.packets] == [
        ("flow", 3, "10.2.94.2"), ("flow", 4, "fd00:231:60::1")]
    assert result.stats.skipped_lines == 0
    assert all(p.repaired_lines == len(p.steps) for p in result.packets)  # every line was damaged


def test_an_ipv6_line_never_joins_an_ipv4_packet(tmp_path):
    v4 = (PUBLIC / "kubernetes-24350-docker0-tcp.log").read_text().splitlines()
    v6 = ULOGD.read_text().splitlines()[12]  # TCP too, and its ports would agree
    v6 = v6.replace("SPT=33102", "SPT=49802").replace("DPT=81", "DPT=8080")
    log = tmp_path / "mixed.log"
    log.write_text("\n".join([v4[0], v6, v4[1]]) + "\n")
    result = run(log)
    assert [(p.identity, len(p.steps)) for p in result.packets] == [("ip_id", 2), ("flow", 1)]


# -- xtables-monitor ---------------------------------------------------------------------------


def test_glued_df_flag_of_old_xtables_monitor():
    record = parse_xtables_monitor((PUBLIC / "xtables-monitor-manpage.log").read_text().splitlines()[1], 2)
    assert record.fields.ip_id == 38349 and not record.fields.damaged


def test_xtables_monitor_manpage_example():
    """The man page's reading: the packet got DROPPED by the policy of INPUT."""
    result = run(PUBLIC / "xtables-monitor-manpage.log")
    first, second = result.packets
    assert (first.identity, first.hooks, first.verdict, first.fields.ip_id) == ("trace_id", ["PREROUTING", "INPUT"], "dropped", 38349)
    assert first.reason == "dropped in filter:INPUT policy"
    assert second.verdict == "unknown" and "the log ends" in second.reason


def test_xtables_monitor_ipv6_and_its_crash():
    """IPv6 PACKET lines (`PACKET: 10`, no IP id), and a log that ends in the middle of a line."""
    result = run(CAPTURED / "xtables-monitor-ipv6-crash.log")
    assert [(p.protocol, p.first.src, p.verdict) for p in result.packets] == [
        ("icmp", "10.231.60.1", "accepted"),
        ("icmpv6", "fd00:231:60::1", "accepted"),  # the protocol from `-p ipv6-icmp -j TRACE`
        ("tcp", "10.231.60.1", "dropped"),
        ("tcp", "10.231.60.1", "dropped"),
        ("tcp", "fd00:231:60::1", "dropped"),
    ]
    assert result.packets[1].fields.flow_label == 552291
    assert result.stats.ignored_lines == 3  # xtables-monitor's own error lines


# -- nft monitor trace -------------------------------------------------------------------------


def test_unknown_rule_handle():
    record = parse_nft_monitor("trace id c255b013 inet t13 input unknown rule handle 13 (verdict accept)", 1)
    step = record.step
    assert (step.kind, step.handle, step.verdict, step.rule, step.family) == ("rule", "13", "ACCEPT", None, "inet")


def test_policy_and_return_lines_with_the_packets_mark():
    """Once a rule sets a mark, nft ends policy and return lines with it (nftables' trace
    test): the line is a step, its verdict read."""
    for line, kind, verdict in [("trace id 0 inet t pre policy accept meta mark 0x00000042 ", "policy", "ACCEPT"),
                                ("trace id 9 ip filter c verdict return meta mark 0x8000", "return", "RETURN")]:
        step = parse_nft_monitor(line, 1).step
        assert (step.kind, step.verdict) == (kind, verdict), line
    for line in ["trace id 0 inet t pre policy accept meta mark", "trace id 0 inet t pre policy accept meta mark 0x",
                 "trace id 0 inet t pre policy accept meta mark 0x123456789", "trace id 0 inet t pre policy accept x"]:
        assert parse_nft_monitor(line, 1) is None, line


def test_nft_trace_test_output_with_marks():
    """nftables' own trace test: the echo request through `pre` and `input`, the reply out
    through `output`, each accepted by its policy (lines that end with the mark); both
    packets share the normalized trace id 0, told apart by their packet lines."""
    result = run(PUBLIC / "nftables-trace-test-policy-meta-mark.log")
    assert [(p.direction, p.hooks, p.verdict) for p in result.packets] == [
        ("request", ["PREROUTING", "INPUT"], "accepted"), ("reply", ["OUTPUT"], "accepted")]
    assert result.stats.skipped_lines == 0
    assert [s.kind for s in result.packets[0].steps if s.chain in ("pre", "input")].count("policy") == 2


def test_a_later_packet_line_keeps_the_headers_it_does_not_print():
    """OpenWrt's fw4 trace prints the headers on the trace id's first `packet:` line, then
    `packet: iif "br-lan2" oif "br-lan2"` per base chain: the packet keeps its addresses and
    ports (op1's SYN-ACK: a reply), its interfaces are each line's own."""
    result = run(PUBLIC / "therainstorm-openwrt-fw4-mss-short-packet-lines.log")
    synack = next(p for p in result.packets if p.fields.sport == 2202)
    assert (synack.direction, synack.fields.src, synack.fields.dst, synack.fields.dport) == (
        "reply", "192.168.35.1", "192.168.35.126", 49780)
    assert synack.fields.tcp_flags == frozenset({"SYN", "ACK"}) and synack.hooks == ["PREROUTING", "FORWARD"]
    # the author cut it after mangle_forward: fw4's forward chain, which the SYN's walk shows
    # coming after mangle_forward, still lies ahead (before fw4's postrouting chains)
    assert synack.verdict == "unknown" and synack.reason.endswith("(still ahead: fw4:forward FORWARD)")


def test_an_nft_table_of_its_own_name_at_a_later_hook_lies_ahead(tmp_path):
    """fw4-like tables (not iptables' names) count where the node has base chains: a
    forwarded packet whose lines stop after FORWARD has `t` POSTROUTING still ahead (unknown,
    not accepted); another table at the same hook is not ahead (its priority is not known)."""
    def packet(tid: int, *chains: str) -> str:
        head = (f'trace id {tid} inet t prerouting packet: iif "a" ip saddr 10.0.0.1 ip daddr 10.0.0.2 ip id {tid}'
                f" ip protocol icmp icmp type echo-request icmp id 1 icmp sequence {tid}\n")
        return head + "".join(f"trace id {tid} inet {chain} policy accept\n" for chain in chains)

    log = tmp_path / "fw.log"
    log.write_text(packet(1, "t prerouting", "t forward", "u forward", "t postrouting")
                   + packet(2, "t prerouting", "t forward") + packet(3, "t prerouting", "u forward", "t postrouting"))
    whole, stopped, _ = run(log).packets
    assert (whole.hooks, whole.verdict) == (["PREROUTING", "FORWARD", "POSTROUTING"], "accepted")
    assert (stopped.verdict, stopped.reason) == (
        "unknown", "accepted in t:forward policy, then no trace though t POSTROUTING lies ahead: lost where no rule shows it")


FW4_SYN = PUBLIC / "therainstorm-openwrt-fw4-mss-short-packet-lines.log"


def fw4_walk(trace_id: str, *chains: str) -> str:
    """A walk of fw4 base chains at forward, from the published trace's lines: each chain's
    `packet:` line, then its policy."""
    head = next(line for line in FW4_SYN.read_text().splitlines() if "trace_chain packet:" in line)
    head = (head.replace("938d2a85", trace_id).replace("trace_chain packet: iif", 'trace_chain packet: oif "br-lan2" iif')
            .replace("ip id 7498", f"ip id {7000 + int(trace_id)}").replace("sport 49780", f"sport {49000 + int(trace_id)}"))
    assert trace_id in head and f"ip id {7000 + int(trace_id)}" in head
    lines = [head]
    for chain in chains:
        lines += [f'trace id {trace_id} inet fw4 {chain} packet: iif "br-lan2" oif "br-lan2"',
                  f"trace id {trace_id} inet fw4 {chain} policy accept"]
    return "\n".join(lines) + "\n"


def test_the_base_chains_of_one_table_at_one_hook_follow_in_the_order_walks_show(tmp_path):
    """fw4 hooks `mangle_forward` and then `forward` into forward (their priorities are not
    in the trace): once a walk shows the order, a packet whose trace stops after
    mangle_forward's policy still had `forward` ahead (lost, not accepted); one that
    passed both passed every chain there is."""
    log = tmp_path / "fw4.log"
    log.write_text(fw4_walk("1", "mangle_forward", "forward") + fw4_walk("2", "mangle_forward")
                   + fw4_walk("3", "mangle_forward", "forward"))
    whole, stopped, again = run(log).packets
    assert (whole.verdict, again.verdict) == ("accepted", "accepted") and whole.reason == again.reason
    assert (stopped.verdict, stopped.reason) == ("unknown", "accepted in fw4:mangle_forward policy, then no trace "
                                                 "though fw4:forward FORWARD lies ahead: lost where no rule shows it")
    # before any walk showed the order, nothing is known to follow mangle_forward
    log.write_text(fw4_walk("2", "mangle_forward") + fw4_walk("1", "mangle_forward", "forward"))
    assert run(log).packets[0].verdict == "accepted"


def test_a_packet_line_that_prints_addresses_is_a_packet_of_its_own(tmp_path):
    """A trace id that comes back for another packet (ids are the skb's, reused) carries
    nothing over: the ICMP reply gets no TCP ports or flags, the IPv6 packet no IP id."""
    log = tmp_path / "reused.log"
    log.write_text(
        'trace id 0 ip filter input packet: iif "eth0" ip saddr 10.0.0.1 ip daddr 10.0.0.2 ip id 7 ip ttl 64'
        " ip protocol tcp tcp sport 40000 tcp dport 22 tcp flags == syn tcp sequence 12345\n"
        "trace id 0 ip filter input policy accept\n"
        'trace id 0 ip filter output packet: oif "eth0" ip saddr 10.0.0.2 ip daddr 10.0.0.1 ip id 9 ip ttl 64'
        " ip protocol icmp icmp type echo-reply icmp id 3 icmp sequence 4\n"
        "trace id 0 ip filter output policy accept\n"
        'trace id 0 ip6 filter output packet: oif "eth0" ip6 saddr fd00::2 ip6 daddr fd00::1 ip6 hoplimit 64'
        " ip6 nexthdr udp udp sport 53 udp dport 5353\n"
        "trace id 0 ip6 filter output policy accept\n")
    tcp, icmp, udp = (p.fields for p in run(log).packets)
    assert (tcp.sport, tcp.tcp_flags) == (40000, frozenset({"SYN"}))
    assert (icmp.proto, icmp.sport, icmp.dport, icmp.tcp_flags, icmp.tcp_seq, icmp.icmp_id) == ("ICMP", None, None, None, None, 3)
    assert (udp.proto, udp.ip_id, udp.tcp_flags, udp.sport) == ("UDP", None, None, 53)


def test_nft_ipv6_packet_line():
    line = next(x for x in NFT.read_text().splitlines() if "ip6 saddr fd00" in x and "packet:" in x)
    record = parse_nft_monitor(line, 1)
    f = record.fields
    assert record.base == ("t13", "my-trace")
    assert (f.src, f.dst, f.ttl, f.flow_label, f.proto, f.icmp_type, f.ip_id) == (
        "fd00:231:60::1", "fd00:231:60::2", 64, 552291, "ICMPV6", 128, None)
    assert not f.damaged


def test_numeric_tcp_flags():
    line = next(x for x in NFT.read_text().splitlines() if "tcp flags == 0x14" in x)
    assert parse_nft_monitor(line, 1).fields.tcp_flags == frozenset({"ACK", "RST"})


def test_nft_capture_with_its_own_chain_names():
    """`my-trace` and `trace-out` are base chains only the trace shows (a `packet:` line opens
    them; iif only: PREROUTING, oif only: OUTPUT); `input`/`output` say it by name. The
    neighbour solicitation to ff02::2 that b does not route is lost after PREROUTING."""
    result = run(NFT)
    summary = [(p.protocol, p.hooks, p.verdict) for p in result.packets]
    assert summary[:4] == [("icmp", ["PREROUTING", "INPUT"], "accepted"), ("icmp", ["OUTPUT"], "accepted"),
                           ("icmpv6", ["PREROUTING", "INPUT"], "accepted"), ("icmpv6", ["OUTPUT"], "accepted")]
    assert [s.hook for s in result.packets[0].steps] == ["PREROUTING", "PREROUTING", "INPUT", "INPUT"]
    lost = result.packets[6]
    assert (lost.first.dst, lost.hooks, lost.verdict) == ("ff02::2", ["PREROUTING"], "unknown")
    assert "routing decision" in lost.reason
    reject = result.packets[12]
    assert reject.steps[-1].chain == "guard" and reject.steps[-1].hook == "INPUT" and reject.verdict == "dropped"
    handle = result.packets[-2]
    assert handle.steps[-1].handle == "13" and handle.verdict == "accepted" and handle.steps[-1].rule is None
    assert result.stats.identities == {"trace_id": 16} and result.stats.skipped_lines == 0


def test_nft_ruleset_gives_hooks_and_the_handled_rule():
    result = run(NFT, rules=CAPTURED / "nft-monitor-inet-t13.ruleset")
    handle = result.packets[-2]
    assert handle.steps[-1].rule == "tcp dport 83 counter packets 1 bytes 60 accept"
    assert [s.hook for s in result.packets[0].steps] == ["PREROUTING", "PREROUTING", "INPUT", "INPUT"]


def test_ruleset_hook_beats_the_name(tmp_path):
    """A chain called `input` that the ruleset hooks into forward runs in FORWARD."""
    rules = tmp_path / "r.nft"
    rules.write_text("table inet t13 {\n  chain input {\n    type filter hook forward priority 0; policy drop;\n  }\n}\n")
    log = tmp_path / "t.log"
    log.write_text('trace id 1 inet t13 input packet: iif "a" oif "b" ip saddr 1.1.1.1 ip daddr 2.2.2.2 ip id 9 ip ttl 9\n'
                   "trace id 1 inet t13 input policy drop\n")
    assert [s.hook for s in run(log).packets[0].steps] == ["INPUT"]
    assert [s.hook for s in run(log, rules=rules).packets[0].steps] == ["FORWARD"]


def test_nft_ruleset_parse():
    rules = parse_rules((CAPTURED / "nft-monitor-inet-t13.ruleset").read_text())
    assert rules.declared_hook("inet", "t13", "my-trace") == ("PREROUTING",)
    assert rules.declared_hook("inet", "t13", "guard") == (None,)
    assert rules.declared_hook("inet", "t13", "nope") is None
    assert ("INPUT", "t13") in rules.slots and ("OUTPUT", "t13") in rules.slots


@pytest.mark.parametrize(
    "chain,hook",
    [("input", "INPUT"), ("PREROUTING", "PREROUTING"), ("raw_PREROUTING", "PREROUTING"), ("filter_INPUT", "INPUT"),
     ("mangle_forward", "FORWARD"), ("raw_prerouting", "PREROUTING"), ("filter-output", "OUTPUT"),
     ("nat-postrouting", "POSTROUTING"), ("input_wan", None), ("filter_INPUT_POLICIES", None), ("cali-INPUT", None),
     ("my-trace", None), ("Input", None), ("dstnat", None)],
)
def test_hook_by_name(chain, hook):
    assert hook_by_name(chain) == hook


def test_hook_inferred_from_interfaces():
    assert inferred_hook((True, False), None) == "PREROUTING"
    assert inferred_hook((True, False), "PREROUTING") == "PREROUTING"
    assert inferred_hook((True, False), "FORWARD") == "INPUT"
    assert inferred_hook((True, True), "PREROUTING") == "FORWARD"
    assert inferred_hook((True, True), None) == "FORWARD"
    assert inferred_hook((True, True), "POSTROUTING") == "POSTROUTING"  # a forwarded packet's later table
    assert inferred_hook((False, True), None) == "OUTPUT"
    assert inferred_hook((False, True), "FORWARD") == "POSTROUTING"
    assert inferred_hook((False, False), None) is None


def test_hook_of_a_table_from_its_interfaces():
    """Where only one hook of a table sees a packet's IN=/OUT= as they are."""
    assert hook_by_interfaces("filter", (True, True)) == "FORWARD"
    assert hook_by_interfaces("filter", (True, False)) == "INPUT"
    assert hook_by_interfaces("raw", (False, True)) == "OUTPUT"
    assert hook_by_interfaces("nat", (True, True)) == "POSTROUTING"
    assert hook_by_interfaces("mangle", (True, False)) is None  # PREROUTING or INPUT
    assert hook_by_interfaces("nat", (False, True)) is None  # OUTPUT or POSTROUTING
    assert hook_by_interfaces("filter", (False, False)) is None


def test_excerpt_starting_in_a_user_chain_gets_its_hook_from_the_interfaces(tmp_path):
    """A log cut in the middle of filter INPUT (Calico's workload chains): the steps before
    any base chain are INPUT's, since filter sees IN= without OUT= only there."""
    lines = (FIXTURES / "seed-logs" / "scenario2-master.log").read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "cali-from-wl-dispatch-2" in line)
    excerpt = tmp_path / "excerpt.log"
    excerpt.write_text("".join(lines[start:]))
    request = next(p for p in run(excerpt).packets if p.direction == "request")
    assert request.steps[0].chain == "cali-from-wl-dispatch-2" and {s.hook for s in request.steps} == {"INPUT"}
    assert request.hooks == ["INPUT"] and request.verdict == "accepted"


def test_excerpt_starting_with_a_return_takes_the_hook_of_the_base_chain_it_returns_to():
    """The published kube-proxy trace starts at `mangle:cali-PREROUTING:return:5` (IN=eth0
    fits PREROUTING and INPUT); the next line, mangle PREROUTING's policy, is where that
    return went: PREROUTING. The author's notes between the lines are set aside."""
    (packet,) = run(PUBLIC / "kube-firewall-mark-drop-annotated.log").packets
    assert [(s.chain, s.hook) for s in packet.steps[:2]] == [("cali-PREROUTING", "PREROUTING"),
                                                             ("PREROUTING", "PREROUTING")]
    assert packet.hooks == ["PREROUTING", "INPUT"] and packet.steps[-1].chain == "KUBE-FIREWALL"
    assert packet.verdict == "unknown" and "KUBE-FIREWALL rule 1" in packet.reason


def test_a_return_into_another_tables_base_chain_says_nothing(tmp_path):
    """Only a return into its own table's base chain places the user chain: mangle's return
    followed by nat PREROUTING leaves it unplaced (mangle with IN= alone: PREROUTING or INPUT)."""
    lines = (PUBLIC / "kube-firewall-mark-drop-annotated.log").read_text().splitlines(keepends=True)
    excerpt = tmp_path / "excerpt.log"
    excerpt.write_text("".join(line for line in lines if ":PREROUTING:policy:2 " not in line))
    (packet,) = run(excerpt).packets
    assert [(s.chain, s.hook) for s in packet.steps[:2]] == [("cali-PREROUTING", None), ("PREROUTING", "PREROUTING")]


# -- cut-off traces ------------------------------------------------------------------------------


def test_a_trace_that_stops_at_a_raw_policy_lost_its_next_lines():
    """conntracker's README: each packet of one ssh session shows one or two lines; two stop
    at raw OUTPUT's policy, which a kernel TRACE line does not show. Read as ACCEPT (the
    default; the other packets pass it), their verdict is unknown, not a drop by that policy."""
    result = run(PUBLIC / "conntracker-kmsg-raw-output-policy.log")
    verdicts = {p.fields.ip_id: (p.verdict, p.reason) for p in result.packets}
    assert {ip_id: v for ip_id, (v, _) in verdicts.items()} == {
        26607: "unknown", 26608: "accepted", 26610: "unknown", 26611: "accepted"}
    assert "read as ACCEPT" in verdicts[26607][1] and "filter OUTPUT lies ahead" in verdicts[26607][1]


def test_a_filter_policy_where_the_trace_stops_still_dropped_it(tmp_path):
    """In filter, where firewalls set DROP policies, a trace that stops at a policy with a
    table still ahead (mangle POSTROUTING, which the node's other packets pass) stopped there;
    where the log ends after it, the verdict is unknown."""
    line = ("Dec  2 03:10:16 n kernel: TRACE: {} IN= OUT=e SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TTL=64 ID={} "
            "PROTO=ICMP TYPE=8 CODE=0 ID=1 SEQ={} \n")
    log = tmp_path / "filter.log"
    log.write_text(line.format("filter:OUTPUT:policy:1", 5, 1) + line.format("mangle:POSTROUTING:policy:1", 5, 1)
                   + line.format("filter:OUTPUT:policy:1", 7, 2) + line.format("filter:OUTPUT:policy:1", 8, 3)
                   + line.format("mangle:POSTROUTING:policy:1", 8, 3) + line.format("filter:OUTPUT:policy:1", 9, 4))
    packets = {p.fields.ip_id: p for p in run(log).packets}
    assert packets[7].verdict == "dropped" and "never reached mangle POSTROUTING" in packets[7].reason
    assert packets[9].verdict == "unknown" and packets[9].reason == (  # where the log itself ends
        "the log ends after filter:OUTPUT policy, whose policy the log does not show (still ahead: mangle POSTROUTING)")


@pytest.mark.parametrize(
    "name,hooks,reason",
    [
        ("openwrt-19814-fw4-ipv4.log", ["PREROUTING"], "it went on into fw4 mangle_prerouting"),
        ("openwrt-19814-fw4-ipv6.log", ["PREROUTING"], "the log ends after fw4:mangle_prerouting policy"),
        ("openwrt-19359-fw4-forward.log", ["PREROUTING", "FORWARD"], "it went on into fw4 forward"),
        ("kubernetes-24350-docker0-tcp.log", ["PREROUTING"], "still ahead: nat INPUT"),
    ],
)
def test_published_excerpts_cut_off_have_no_verdict(name, hooks, reason):
    """Each excerpt ends in the middle of its packet's walk: unknown, saying why."""
    (packet,) = run(PUBLIC / name).packets
    assert (packet.hooks, packet.verdict) == (hooks, "unknown") and reason in packet.reason
    assert packet.at_end


def test_fw4_ipv6_excerpt_is_grouped_by_trace_id():
    (packet,) = run(PUBLIC / "openwrt-19814-fw4-ipv6.log").packets
    assert packet.identity == "trace_id" and packet.first.src == "2001:470:971f:99::6" and packet.fields.flow_label == 653951
    assert [s.chain for s in packet.steps] == ["raw_prerouting"] * 3 + ["mangle_prerouting"] * 2


def test_a_rule_or_policy_in_the_lines_still_decides(tmp_path):
    """At the end of the log, an explicit drop or a final policy is a verdict all the same."""
    rules = FIXTURES / "lab" / "scenario4-master.rules"
    (packet,) = run(FIXTURES / "lab" / "scenario4-master.log", rules=rules).packets
    assert packet.at_end and packet.verdict == "dropped"
    (reply,) = [p for p in run(FIXTURES / "seed-logs" / "scenario2-master.log").packets if p.direction == "reply"]
    assert reply.at_end and reply.verdict == "accepted" and reply.steps[-1].kind == "policy"


def test_a_first_line_that_lost_its_ip_id_is_adopted(tmp_path):
    """A damaged first line (its ID= cut out) opens a flow packet; the packet's next line,
    with the IP id, adopts it: one packet of identity ip_id, no false one-step drop."""
    lines = (FIXTURES / "lab" / "scenario3-slave1.log").read_text().splitlines()
    damaged = lines[0].replace(" ID=13891", "")
    log = tmp_path / "adopt.log"
    log.write_text("\n".join([damaged, *lines[1:]]) + "\n")
    first = run(log).packets[0]
    assert first.identity == "ip_id" and first.fields.ip_id == 13891 and first.repaired_lines == 1
    assert first.steps[0].line == 1 and len(run(log).packets) == len(run(FIXTURES / "lab" / "scenario3-slave1.log").packets)


# -- more published traces: dmesg -T, libvirt, firewalld, ip6 and bridge nft families -------------


def test_dmesg_T_bracketed_dates():
    """`dmesg -wHT` prefixes (`[Thu Apr 23 21:55:11 2020]`, one line with a tab in it), a
    local ping out (UID=/GID=) and its reply, which the excerpt ends at filter INPUT rule 3."""
    result = run(PUBLIC / "kmille-dmesg-T-icmp-output.log")
    assert walks(result) == [
        ("ip_id", "icmp", ["OUTPUT", "POSTROUTING"], "accepted"),
        ("ip_id", "icmp", ["PREROUTING", "INPUT"], "unknown"),
    ]
    request, reply = result.packets
    assert (request.direction, request.fields.ip_id, reply.direction, reply.fields.ip_id) == ("request", 31519, "reply", 44374)
    assert [s.chain for s in request.steps] == ["OUTPUT"] * 3 + ["POSTROUTING"]
    assert "the log ends after filter:INPUT rule 3" in reply.reason
    assert result.stats.skipped_lines == 0


def test_libvirt_virbr0_guest_forwarded_and_masqueraded():
    """A libvirt guest's SYN from virbr0 out of bond0: the author says it is forwarded and
    SNATed in nat POSTROUTING (rule 3 is MASQUERADE in the author's listing). The log ends
    there; without the rules the rule's target is not known, but a nat rule cannot drop
    (iptables refuses DROP in nat) and no table follows nat POSTROUTING: accepted."""
    (packet,) = run(PUBLIC / "xixiliguo-libvirt-virbr0-snat.log").packets
    assert (packet.identity, packet.protocol, packet.hooks) == ("ip_id", "tcp", ["PREROUTING", "FORWARD", "POSTROUTING"])
    assert (packet.first.src, packet.first.dst, packet.verdict) == ("192.168.122.17", "10.44.32.217", "accepted")
    assert packet.reason == "passed every table up to nat POSTROUTING"


def test_firewalld_ipv6_rpfilter_drops_in_raw_prerouting():
    """ip6tables-nft's `ip6 raw PREROUTING`, then firewalld's `inet firewalld raw_PREROUTING`
    (its hook from its name), where `fib saddr . iif oif missing drop` drops the echo reply:
    the author's finding (IPv6_rpfilter)."""
    (packet,) = run(PUBLIC / "imlk0-dn42-firewalld-ip6-rpfilter-drop.log").packets
    assert (packet.identity, packet.protocol, packet.direction) == ("trace_id", "icmpv6", "reply")
    assert (packet.hooks, packet.verdict) == (["PREROUTING"], "dropped")
    assert [(s.family, s.chain, s.hook) for s in packet.steps] == [("ip6", "PREROUTING", "PREROUTING")] * 3 + [
        ("inet", "raw_PREROUTING", "PREROUTING")]
    assert packet.reason == "dropped in firewalld:raw_PREROUTING by `meta nfproto ipv6 fib saddr . iif oif missing drop`"


def test_ipv6_gateway_in_a_container_netns_loses_the_packet_after_prerouting():
    """The author's gateway container had IPv6 forwarding off: the echo request stops after
    `ip6 raw PREROUTING`, lost at the routing decision. The reply (a later trace) is where
    the excerpt ends."""
    request, reply = run(PUBLIC / "imlk0-dn42-ip6-gateway-lost.log").packets
    assert (request.direction, request.hooks, request.verdict) == ("request", ["PREROUTING"], "unknown")
    assert "lost at the routing decision" in request.reason and not request.at_end
    assert (reply.direction, reply.hooks, reply.verdict, reply.at_end) == ("reply", ["PREROUTING"], "unknown", True)
    assert len(reply.steps) == 5 and reply.first.dst == "fd42:d2aa:8a0e::3"


def test_firewalld_rejects_in_filter_forward_and_bridge_chains_run_first():
    """docker/for-linux#1353: firewalld's `filter_FORWARD` rejects a container's SYN (the
    excerpt starts in the middle of that trace, in firewalld's zone chains, which no name
    places in a hook). The next SYN's trace walks `bridge filter` chains, then br_netfilter's
    `ip mangle FORWARD`: one packet (its trace id), not two."""
    rejected, next_syn = run(PUBLIC / "docker-for-linux-1353-firewalld-bridge-reject.log").packets
    assert (rejected.trace_ids, rejected.hooks, rejected.verdict) == (["a0369369"], ["FORWARD"], "dropped")
    assert rejected.reason == "dropped in firewalld:filter_FORWARD by `reject with icmpx type admin-prohibited`"
    assert [s.hook for s in rejected.steps] == [None] * 3 + ["FORWARD"] * 3
    assert (next_syn.trace_ids, next_syn.protocol, next_syn.hooks, next_syn.verdict) == (["6d9a826f"], "tcp", ["FORWARD"], "unknown")
    assert [(s.family, s.table) for s in next_syn.steps] == [("bridge", "filter")] * 5 + [("ip", "mangle")]
    assert "still ahead: filter FORWARD" in next_syn.reason


def test_bridge_family_arp_frames_are_forwarded():
    """The same issue's bridge-only traces: an ARP reply (no IP fields) through `bridge filter`
    FORWARD and `bridge nat` POSTROUTING, accepted; the SYN's trace is cut by the excerpt."""
    result = run(PUBLIC / "docker-for-linux-1353-firewalld-bridge-arp.log")
    assert [(p.trace_ids, p.hooks, p.verdict) for p in result.packets] == [
        (["d91c35db"], ["FORWARD", "POSTROUTING"], "accepted"),
        (["13ca8ca9"], ["FORWARD", "POSTROUTING"], "accepted"),
        (["a0369369"], ["FORWARD"], "unknown"),
    ]
    assert result.packets[1].fields.src is None and result.stats.skipped_lines == 0


# -- verdicts that the lines do not prove (traces found in published notes) ----------------------


def test_an_accept_followed_by_nothing_is_no_drop():
    """xtables-monitor on a kernel that lost user-defined bridge traffic after filter FORWARD
    (the author's fix was a newer kernel): `filter:FORWARD:rule:0x34:ACCEPT`, then no nat
    POSTROUTING though the node has one. An ACCEPT is not where a packet dies: unknown, said
    why. The docker0 ping of the same log is masqueraded and accepted."""
    lost, masqueraded, reply = run(PUBLIC / "notes-docker-usernet-xtmon-forward-accept-lost.log").packets
    assert (lost.first.src, lost.hooks, lost.verdict) == ("172.20.0.2", ["PREROUTING", "FORWARD"], "unknown")
    assert lost.reason.startswith("accepted in filter:FORWARD rule 0x34 by `-A FORWARD -i br-406f2a425e0c")
    assert "then no trace though nat POSTROUTING lies ahead" in lost.reason
    assert (masqueraded.hooks[-1], masqueraded.verdict, reply.verdict) == ("POSTROUTING", "accepted", "accepted")


def test_glued_id_and_port_and_a_packet_for_this_host():
    """The same notes: `ID=43007SPORT=80` (no IP flags, the next field glued on) gives the IP
    id and the port; a packet for this host (the SYN-ACK to 192.168.91.132) stops after
    PREROUTING where iptables-nft has no INPUT chain: not called lost at routing alone."""
    packets = run(PUBLIC / "notes-desktop-xtmon-glued-id-sport.log").packets
    (syn_ack,) = [p for p in packets if p.fields.ip_id == 43007]
    assert (syn_ack.fields.sport, syn_ack.fields.dport, syn_ack.protocol) == (80, 58366, "tcp")
    assert syn_ack.verdict == "unknown" and "no traced table known after it on the local-in route" in syn_ack.reason


def test_filter_forward_policy_is_not_shown_in_a_kernel_trace(tmp_path):
    """Docker sets filter FORWARD's policy to DROP; a kernel TRACE line says `policy:7`, not
    which: the author found the drop by the policy. Unknown without the ruleset; with it,
    dropped or accepted as the policy says."""
    log = PUBLIC / "dockerhost-legacy-forward-policy.log"
    (packet,) = run(log).packets
    assert (packet.hooks, packet.verdict) == (["PREROUTING", "FORWARD"], "unknown")
    assert packet.reason.startswith("decided by filter:FORWARD policy, whose target the log does not show")
    for policy, verdict in (("DROP", "dropped"), ("ACCEPT", "accepted")):
        rules = tmp_path / f"{policy}.rules"
        rules.write_text(f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
        (judged,) = run(log, rules=rules).packets
        assert judged.verdict == verdict, judged.reason
    assert judged.steps[-1].rule == "-P FORWARD ACCEPT"


def test_nft_table_of_its_own_name_before_nat_is_one_walk():
    """Fedora Magazine's NAT tracing article: a `trace_debug` table (prerouting, priority
    -301) sets nftrace, then `inet nat prerouting` DNATs and `inet filter allowed_dnats`
    drops. One trace id, one packet: a table of its own name has no known place among the
    hook's others, so it does not start a new walk."""
    (packet,) = run(PUBLIC / "fedoramag-nft-trace-debug-dnat-drop.log").packets
    assert (packet.trace_ids, packet.hooks, packet.verdict) == (["9c01f8"], ["PREROUTING", "FORWARD"], "dropped")
    assert [s.table for s in packet.steps][:4] == ["trace_debug"] * 3 + ["nat"]
    assert packet.reason == "dropped in filter:allowed_dnats by `drop`"
    assert (packet.protocol, packet.fields.sport, packet.fields.dport) == ("tcp", None, 1222)  # `..` elided the rest


def test_rules_for_a_node_named_after_its_file(tmp_path):
    """A bare log file's node is its name up to the first dot (`06-docker.log`: `06-docker`),
    and `--rules` takes that name, though it is no host name."""
    log = tmp_path / "06-docker.log"
    log.write_bytes((PUBLIC / "dockerhost-legacy-forward-policy.log").read_bytes())
    rules = tmp_path / "06.rules"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    chainlab = Path(sys.executable).parent / "chainlab"
    proc = subprocess.run([chainlab, "analyze", "--format", "json", "--rules", f"06-docker={rules}", str(log)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (packet,) = json.loads(proc.stdout)["packets"]
    assert (packet["node"], packet["verdict"]) == ("06-docker", "dropped")


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_log_without_traces_says_so(tmp_path, engine):
    """LOG-target lines (no TRACE) give no packets, and a note on stderr says why, rather than
    an empty result alone; the exit status stays 0."""
    log = tmp_path / "log-target.log"
    log.write_text("Mar 30 10:00:01 web kernel: IN=eth0 OUT=docker0 SRC=10.0.0.1 DST=172.17.0.2 LEN=60 TTL=63 ID=1"
                   " PROTO=TCP SPT=1234 DPT=80 SYN\n")
    chainlab = Path(sys.executable).parent / "chainlab"
    proc = subprocess.run([chainlab, "analyze", str(log)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CHAINLAB_ENGINE": engine})
    assert proc.returncode == 0 and "0 packets" in proc.stdout
    assert proc.stderr.startswith("note: no packet trace in 1 line (read are kernel TRACE records")
    assert "not LOG-target lines)" in proc.stderr


def test_records_whose_trace_prefix_was_cut_off_say_so(tmp_path):
    """A published note whose author cut `TRACE: ` off every line: a note says which lines
    look like records and how to put it back; put back, the SYN and the ACK (both ID=0) are
    two packets and the SYN goes PREROUTING → FORWARD → POSTROUTING, as the author says."""
    log = PUBLIC / "k8s-nodeport-trace-prefix-cut-id0.log"
    chainlab = Path(sys.executable).parent / "chainlab"
    proc = subprocess.run([chainlab, "analyze", str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "0 packets" in proc.stdout
    assert "note: 14 lines look like TRACE records whose `TRACE: ` was cut off" in proc.stderr
    fixed = tmp_path / "fixed.log"
    fixed.write_text("".join("TRACE: " + line for line in log.read_text().splitlines(keepends=True)))
    syn, ack = run(fixed).packets
    assert (syn.hooks, syn.verdict, ack.fields.tcp_flags) == (["PREROUTING", "FORWARD", "POSTROUTING"], "accepted",
                                                              frozenset({"ACK"}))


@pytest.mark.parametrize("engine", ["native", "python"])
def test_trace_lines_that_fit_no_packet_say_so(engine):
    """A netdev reply quoting five TRACE lines shortened to `IN=enp9s0 ...` (no id, no
    addresses): every line is skipped, and a note on stderr says why; the exit status stays 0."""
    chainlab = Path(sys.executable).parent / "chainlab"
    proc = subprocess.run([chainlab, "analyze", str(PUBLIC / "netdev-2022-trace-duplicates-elided.log")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "CHAINLAB_ENGINE": engine})
    assert proc.returncode == 0 and "5 trace records, 5 skipped" in proc.stdout and "0 packets" in proc.stdout
    assert proc.stderr.startswith("note: none of the 5 trace lines could be placed in a packet: they show nothing"
                                  " to group them by")


def test_an_accept_where_the_log_ends_says_so():
    """NixOS notes: `nft monitor trace` of a rule that sets nftrace and accepts (`unknown rule
    handle 22 (verdict accept)`) in a regular chain `services`, the whole trace: the accept
    let the packet on, where to the log does not show (the chain's hook is only guessed from
    `iif`)."""
    (packet,) = run(PUBLIC / "nixos-notes-nft-services-unknown-rule-accept.log").packets
    assert (packet.trace_ids, packet.verdict, packet.at_end) == (["5ac77d91"], "unknown", True)
    assert packet.reason == "the log ends after fw:services rule 22, which let it on"
    assert (packet.fields.ip_id, packet.fields.dport) == (1816, 443)


def test_a_trace_quoted_in_documentation_is_read():
    """O-X-L's nftables troubleshooting docs print `nft monitor trace` with `    > ` before
    each line: an ICMP echo reply from 8.8.8.8 accepted by `ct state established,related`."""
    (packet,) = run(PUBLIC / "oxl-docs-quoted-nft-icmp-reply.log").packets
    assert (packet.protocol, packet.direction, packet.hooks, packet.verdict) == ("icmp", "reply", ["PREROUTING", "INPUT"],
                                                                                "accepted")
    assert packet.first.src == "8.8.8.8" and "ct state established,related" in packet.steps[-1].rule


def test_a_policy_the_ruleset_says_accepts_is_no_drop(tmp_path):
    """A packet stopping at filter FORWARD's policy with nat POSTROUTING still ahead: with a
    ruleset saying `-P FORWARD ACCEPT` it was let on and lost after (unknown), not dropped
    there; with `-P FORWARD DROP`, dropped by the policy."""
    def line(chain: str, ip_id: int) -> str:
        return (f"[1.0] TRACE: {chain} IN=eth0 OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TTL=63 ID={ip_id} PROTO=ICMP"
                " TYPE=8 CODE=0 ID=5 SEQ=1\n")
    walk = ["raw:PREROUTING:policy:2", "nat:PREROUTING:policy:1", "filter:FORWARD:policy:1"]
    log = tmp_path / "fwd.log"
    log.write_text("".join([*(line(c, 1) for c in [*walk, "nat:POSTROUTING:policy:1"]), *(line(c, 2) for c in walk),
                            line("raw:PREROUTING:policy:2", 3)]))
    for policy, verdict, reason in (
            ("ACCEPT", "unknown", "accepted in filter:FORWARD policy by `-P FORWARD ACCEPT`, then no trace though nat"
                                  " POSTROUTING lies ahead: lost where no rule shows it"),
            ("DROP", "dropped", "dropped in filter:FORWARD policy by `-P FORWARD DROP`")):
        rules = tmp_path / f"{policy}.rules"
        rules.write_text(f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
                         "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                         ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
        packet = run(log, rules=rules).packets[1]
        assert (packet.fields.ip_id, packet.verdict, packet.reason) == (2, verdict, reason)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_port_only_dnat_on_one_node_is_named(engine):
    """A kube-proxy host's published trace: nat PREROUTING rule 3 sends port 80 to 52000 of
    the same address, then INPUT accepts it. Only the port changes: the packet gets a DNAT
    note, and the JSON's exit holds the last line's ports."""
    chainlab = Path(sys.executable).parent / "chainlab"
    log = PUBLIC / "kube-nodeport-port80-dnat-52000.log"
    env = {**os.environ, "CHAINLAB_ENGINE": engine}
    text = subprocess.run([chainlab, "analyze", str(log)], capture_output=True, text=True, timeout=60, env=env)
    assert "DNAT: dst 172.28.129.4:80 → 172.28.129.4:52000" in text.stdout, text.stdout
    proc = subprocess.run([chainlab, "analyze", "--format", "json", str(log)], capture_output=True, text=True,
                          timeout=60, env=env)
    (packet,) = json.loads(proc.stdout)["packets"]
    assert (packet["hooks"], packet["verdict"]) == (["PREROUTING", "INPUT"], "accepted")
    assert (packet["sport"], packet["dport"]) == (42182, 80)  # as it entered
    assert packet["exit"] == {"src": "172.28.129.2", "dst": "172.28.129.4", "sport": 42182, "dport": 52000}


def _analyze_lines(tmp_path: Path, lines: list[str], engine: str, *args: str) -> str:
    log = tmp_path / "edited.log"
    log.write_text("\n".join(lines) + "\n")
    chainlab = Path(sys.executable).parent / "chainlab"
    proc = subprocess.run([chainlab, "analyze", *args, str(log)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CHAINLAB_ENGINE": engine})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_damaged_line_between_intact_ones_hides_no_nat(tmp_path, engine):
    """The trace with its last line cut inside `DPT=52000` and the whole line glued on after
    the cut: the cut piece is damaged, its ports not read; the intact lines around it still
    show the DNAT of port 80 to 52000."""
    lines = (PUBLIC / "kube-nodeport-port80-dnat-52000.log").read_text().splitlines()
    last = lines[-1]
    out = _analyze_lines(tmp_path, [*lines[:-1], last[:last.index("DPT=52000") + 6] + last], engine)
    assert "1 damaged but attributed" in out and "1 packets" in out
    assert "DNAT: dst 172.28.129.4:80 → 172.28.129.4:52000" in out


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_damaged_last_line_gives_no_port_note(tmp_path, engine):
    """The last line cut inside `DPT=52000`, another kernel line glued on: the cut number
    still reads as a port, so the packet's exit has no ports and no port note is made."""
    lines = (PUBLIC / "kube-nodeport-port80-dnat-52000.log").read_text().splitlines()
    last = lines[-1]
    cut = last[:last.index("DPT=52000") + 6] + "Jan  3 13:49:23 cos74 kernel: eth0: link becomes ready"
    packet = json.loads(_analyze_lines(tmp_path, [*lines[:-1], cut], engine, "--format", "json"))["packets"][0]
    assert packet["repaired_lines"] == 1
    assert packet["entry"] == {"src": "172.28.129.2", "dst": "172.28.129.4", "sport": 42182, "dport": 80}
    assert packet["exit"] == {"src": "172.28.129.2", "dst": "172.28.129.4", "sport": None, "dport": None}
    assert "DNAT" not in _analyze_lines(tmp_path, [*lines[:-1], cut], engine)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_first_line_without_ports_shows_none_in_the_nat_note(tmp_path, engine):
    """A shortened first line (no SPT=/DPT=) whose next lines come after a DNAT: the packet's
    ports are the later lines' (52000), but the note shows the first line's destination
    without a port instead of with the translated one on both sides."""
    lines = (PUBLIC / "kube-nodeport-port80-dnat-52000.log").read_text().splitlines()
    first = lines[0].replace(" SPT=42182 DPT=80", "")
    later = [line.replace("DST=172.28.129.4", "DST=10.244.1.5") for line in lines[15:]]
    out = _analyze_lines(tmp_path, [first, *later], engine)
    assert "DNAT: dst 172.28.129.4 → 10.244.1.5:52000" in out
    packet = json.loads(_analyze_lines(tmp_path, [first, *later], engine, "--format", "json"))["packets"][0]
    assert (packet["sport"], packet["dport"]) == (42182, 52000)
    assert packet["entry"] == {"src": "172.28.129.2", "dst": "172.28.129.4", "sport": None, "dport": None}


def test_the_base_chain_order_a_node_learns_is_bounded(monkeypatch):
    """Ever new chain names (a hostile log) stop being learned at LIMIT pairs."""
    from chainlab.trace.analyze import BaseChains
    from chainlab.trace.model import Step

    monkeypatch.setattr(BaseChains, "LIMIT", 3)
    order = BaseChains()
    learned = []
    for n in range(5):
        walk = [Step("t", f"c{n}", "policy", hook="FORWARD", family="inet"), Step("t", f"d{n}", "policy", hook="FORWARD", family="inet")]
        learned.append(order.learn(walk))
    assert learned == [True, True, True, False, False]
    assert order.following(walk[:1]) == [] and order.following([walk[0].__class__("t", "c0", "policy", hook="FORWARD", family="inet")]) == [("FORWARD", "t:d0")]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_walk_ending_in_a_nat_rule_at_the_end_of_the_log_is_accepted(engine):
    """Three DNS queries of one walk, ending in `nat:KUBE-POSTROUTING:rule:1` (a published
    kube-dns trace): the last is the log's last line too, but a nat rule cannot drop and no
    table follows nat POSTROUTING, so all three are accepted, as the author says."""
    log = PUBLIC / "centos-weave-kubedns-nat-postrouting-last.log"
    proc = subprocess.run([Path(sys.executable).parent / "chainlab", "analyze", "--format", "json", str(log)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "CHAINLAB_ENGINE": engine})
    packets = json.loads(proc.stdout)["packets"]
    assert [(p["ip_id"], p["hooks"], p["verdict"]) for p in packets] == [
        (ip_id, ["PREROUTING", "FORWARD", "POSTROUTING"], "accepted") for ip_id in (20539, 20790, 20808)]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_a_nat_rule_is_never_read_as_a_drop(tmp_path, engine):
    """An excerpt of that trace (what a grep leaves): filter FORWARD, then the nat user chain,
    the nat:POSTROUTING line between them gone. Whatever hook the nat chain is put in, a nat
    rule cannot drop: the packet is not `dropped`."""
    lines = (PUBLIC / "centos-weave-kubedns-nat-postrouting-last.log").read_text().splitlines()
    log = tmp_path / "excerpt.log"
    log.write_text("\n".join(lines[i] for i in (0, 8, 21, 43, 51, 64)) + "\n")
    proc = subprocess.run([Path(sys.executable).parent / "chainlab", "analyze", "--format", "json", str(log)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "CHAINLAB_ENGINE": engine})
    packets = json.loads(proc.stdout)["packets"]
    assert [p["last_step"]["chain"] for p in packets] == ["KUBE-POSTROUTING"] * 2
    assert "dropped" not in [p["verdict"] for p in packets]


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("with_rules", [False, True])
def test_an_established_packet_passes_no_nft_nat_chain(tmp_path, engine, with_rules):
    """The published `inet egress` trace: its `postrouting` is a `type nat` chain. Its rule
    `masquerade` shows it (nft allows NAT statements only in nat chains), or the ruleset
    says it: the SYN is a new connection, masqueraded; the later ACK, accepted in forward,
    does not have that nat chain ahead, so it is accepted, as the author says."""
    log = PUBLIC / "es-nft-egress-masquerade-established-ack.log"
    args = []
    if with_rules:  # the chains' declarations as the post shows them, only the hooks
        rules = tmp_path / "egress.nft"
        rules.write_text("table inet egress {\n"
                         "\tchain prerouting {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\t}\n"
                         "\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n"
                         "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t}\n}\n")
        args = ["--rules", f"{log.stem}={rules}"]
    proc = subprocess.run([Path(sys.executable).parent / "chainlab", "analyze", "--format", "json", *args, str(log)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "CHAINLAB_ENGINE": engine})
    syn, ack = json.loads(proc.stdout)["packets"]
    assert (syn["hooks"], syn["new_connection"], syn["verdict"]) == (["PREROUTING", "FORWARD", "POSTROUTING"], True, "accepted")
    assert (ack["hooks"], ack["new_connection"], ack["verdict"]) == (["PREROUTING", "FORWARD"], False, "accepted")


def test_the_nat_chains_a_node_learns():
    """From a rule's NAT statement: its chain and the base chain the walk was in at that hook;
    a slot is nat-only while no other base chain of its table is known there (fw4: `srcnat`
    and `mangle_postrouting` both at postrouting)."""
    from chainlab.trace.analyze import BaseChains
    from chainlab.trace.model import Step

    chains = BaseChains()
    walk = [Step("fw4", "forward", "policy", hook="FORWARD", family="inet"),
            Step("fw4", "mangle_postrouting", "policy", hook="POSTROUTING", family="inet"),
            Step("fw4", "srcnat", "rule", rule="jump srcnat_wan", hook="POSTROUTING", family="inet"),
            Step("fw4", "srcnat_wan", "rule", rule='meta nfproto ipv4 masquerade comment "!fw4"', hook="POSTROUTING",
                 family="inet")]
    assert chains.learn(walk) and not chains.learn(walk)
    assert [chains.is_nat(s) for s in walk] == [False, False, True, True]
    assert chains.nat_slots() == set()  # mangle_postrouting, of type filter, is there too
    alone = BaseChains()
    alone.learn(walk[2:])
    assert alone.nat_slots() == {("POSTROUTING", "fw4")}


@pytest.mark.parametrize("engine", ["native", "python"])
def test_dmesg_records_glued_on_one_line_keep_their_own_times(tmp_path, engine):
    """dmesg records whose line breaks a web copy lost: each record glued on after its own
    `[ uptime]` takes that time (a line with a host keeps the rule for hosts: the glued
    prefix must have the line's own form)."""
    record = ("[ {t}] TRACE: {h} IN=eth1 OUT= MAC=08:00:27:f6:4b:48:0a:00:27:00:00:00:08:00 SRC=192.168.56.1 "
              "DST={d} LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF PROTO=ICMP TYPE=8 CODE=0 ID=2337 SEQ=1 ")
    line = "".join(record.format(t=t, h=h, d=d) for t, h, d in (
        ("5281.733217", "raw:PREROUTING:policy:2", "1.2.3.4"), ("5281.737057", "nat:PREROUTING:rule:1", "1.2.3.4"),
        ("5281.737090", "filter:FORWARD:rule:1", "192.168.42.4")))
    log = tmp_path / "glued.log"
    log.write_text(line.rstrip() + "\n")
    proc = subprocess.run([Path(sys.executable).parent / "chainlab", "analyze", "--format", "json", str(log)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "CHAINLAB_ENGINE": engine})
    (packet,) = json.loads(proc.stdout)["packets"]
    assert [s["time"] for s in packet["steps"]] == ["5281.733217", "5281.737057", "5281.737090"]


def test_a_quoted_printable_mail_body_says_how_to_decode_it(tmp_path):
    """A mail archive's raw body (`SRC=3D...`, soft line breaks): no packet can be placed, and
    a note says it is quoted-printable and how to decode it; decoded as the note says, it is the
    author's SYN-ACK, accepted in PREROUTING and INPUT (filter INPUT rule 1, security INPUT)."""
    log = PUBLIC / "netdev-2019-vrf-quoted-printable-mail.log"
    chainlab = Path(sys.executable).parent / "chainlab"
    proc = subprocess.run([chainlab, "analyze", str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "0 packets" in proc.stdout
    assert "looks quoted-printable" in proc.stderr and "`python3 -m quopri -d < FILE > LOG`" in proc.stderr
    decoded = tmp_path / "decoded.log"
    with open(log, "rb") as raw, open(decoded, "wb") as out:
        subprocess.run([sys.executable, "-m", "quopri", "-d"], stdin=raw, stdout=out, check=True, timeout=60)
    (packet,) = run(decoded).packets
    assert (packet.hooks, packet.verdict) == (["PREROUTING", "INPUT"], "accepted")
    assert ("filter", "INPUT", "rule", 1) in [(s.table, s.chain, s.kind, s.position) for s in packet.steps]


def test_a_bridge_input_says_the_frame_goes_on_to_ip(tmp_path):
    """nft's bridge family has hooks of IP's names: its INPUT accepting a frame hands it to the
    host's IP stack, which the reason says, naming the family (it read like IP's filter INPUT)."""
    log = tmp_path / "bridge.log"
    log.write_text("trace id b15e4b55 bridge filter INPUT verdict continue \n"
                   "trace id b15e4b55 bridge filter INPUT policy accept \n")
    (packet,) = run(log).packets
    assert packet.hooks == ["INPUT"] and packet.verdict == "accepted"
    assert packet.reason == ("passed every table up to bridge filter INPUT, the bridge's own hook, which hands"
                             " the frame on to the host's IP stack (its PREROUTING)")
