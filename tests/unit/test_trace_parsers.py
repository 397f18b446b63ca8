"""Each supported input format, with lines as the real tools print them."""

import pytest

from chainlab.trace.parse_kernel import parse_fields, parse_line
from chainlab.trace.parse_nft import parse_nft_monitor, parse_xtables_monitor

RSYSLOG = (
    "Dec  2 03:38:09 master kernel: TRACE: nat:PREROUTING:rule:1 IN=cali282b0776936 OUT= "
    "MAC=4a:0c:7a:74:5d:26:ee:ee:ee:ee:ee:ee:08:00 SRC=172.20.219.81 DST=172.16.91.226 LEN=84 "
    "TOS=0x00 PREC=0x00 TTL=64 ID=13891 DF PROTO=ICMP TYPE=8 CODE=0 ID=17 SEQ=1 MARK=0x4000000"
)
ULOGD = (
    "Nov 22 10:07:14 h1 TRACE: raw:PREROUTING:policy:2  IN=vb OUT= MAC=36:63:bd:51:89:22:ae:e9:08:2b:40:03:08:00 "
    "SRC=10.91.1.2 DST=10.91.1.1 LEN=84 TOS=00 PREC=0x00 TTL=64 ID=57181 DF PROTO=ICMP TYPE=8 CODE=0 ID=4999 SEQ=1 MARK=0x0"
)
DMESG = (
    "[  480.849238] TRACE: filter:FORWARD:rule:2 IN=eno1 OUT=docker0 SRC=10.0.0.9 DST=10.111.1.2 LEN=60 "
    "TOS=0x00 PREC=0x00 TTL=63 ID=0 DF PROTO=TCP SPT=80 DPT=40512 SEQ=2990 ACK=1201 WINDOW=65160 RES=0x00 ACK SYN URGP=0"
)
RFC3339 = (
    "2026-11-22T10:07:14.123456+00:00 slave1 kernel: TRACE: filter:INPUT:policy:1 IN=ens33 OUT= "
    "SRC=10.0.0.1 DST=10.0.0.2 LEN=76 TOS=0x00 PREC=0x00 TTL=64 ID=4711 PROTO=UDP SPT=123 DPT=123 LEN=56"
)


def test_rsyslog_line():
    (record,), bad = parse_line(RSYSLOG, 7)
    assert bad == 0 and record.host == "master"
    s, f = record.step, record.fields
    assert (s.table, s.chain, s.kind, s.position, s.line) == ("nat", "PREROUTING", "rule", 1, 7)
    assert (f.ip_id, f.proto, f.icmp_type, f.icmp_id, f.icmp_seq) == (13891, "ICMP", 8, 17, 1)
    assert (f.src, f.dst, f.ttl, f.mark, f.in_if, f.out_if) == ("172.20.219.81", "172.16.91.226", 64, 0x4000000, "cali282b0776936", None)
    assert not f.damaged


def test_ulogd_logemu_line():
    (record,), _ = parse_line(ULOGD, 1)
    assert record.host == "h1" and record.step.kind == "policy" and record.step.position == 2
    assert record.fields.ip_id == 57181 and record.fields.icmp_id == 4999 and record.fields.mark == 0
    assert not record.fields.damaged


def test_dmesg_tcp_line():
    (record,), _ = parse_line(DMESG, 1)
    f = record.fields
    assert record.host is None and record.step.time == "480.849238"
    assert (f.proto, f.sport, f.dport, f.ip_id, f.icmp_seq) == ("TCP", 80, 40512, 0, None)
    assert f.tcp_flags == frozenset({"SYN", "ACK"})


def test_rfc3339_udp_line():
    (record,), _ = parse_line(RFC3339, 1)
    assert record.host == "slave1" and record.step.time.startswith("2026-11-22T10:07:14")
    assert (record.fields.proto, record.fields.sport, record.fields.dport) == ("UDP", 123, 123)


def test_journalctl_and_dmesg_T_prefixes():
    """`journalctl -k` writes a zero-padded day; `dmesg -T` a bracketed date, which is not
    one of the times read (the line's fields count all the same)."""
    fields = RSYSLOG[RSYSLOG.index("TRACE:"):]
    (record,), _ = parse_line(f"Dec 02 03:38:09 master kernel: {fields}", 1)
    assert record.host == "master" and record.step.time == "Dec 02 03:38:09" and record.fields.ip_id == 13891
    (record,), _ = parse_line(f"[Tue Dec  2 03:38:09 2026] {fields}", 1)
    assert record.host is None and record.step.time is None and record.fields.ip_id == 13891
    assert not record.fields.damaged


@pytest.mark.parametrize("prefix,host,time", [
    ("Dec 02 03:38:09.123456 master kernel: ", "master", "Dec 02 03:38:09.123456"),  # journalctl -o short-precise
    ("Tue 2026-12-02 03:38:09 UTC master kernel: ", "master", "Tue 2026-12-02 03:38:09 UTC"),  # short-full
    ("[ 1713.241250] master kernel: ", "master", "1713.241250"),  # short-monotonic
    ("1764646689.123456 master kernel: ", "master", "1764646689.123456"),  # short-unix
    ("<4>1 2026-12-02T03:38:09.123456+00:00 master kernel - - - ", "master", "2026-12-02T03:38:09.123456+00:00"),  # RFC 5424
    ("[ 1713.241250] ", None, "1713.241250"),  # dmesg: no host
])
def test_journal_and_rfc5424_prefixes_name_their_host(prefix, host, time):
    """A journal or syslog server that gathers several nodes' kernel logs writes each line's
    host: every journalctl output format with a host, and RFC 5424, keep it."""
    fields = RSYSLOG[RSYSLOG.index("TRACE:"):]
    (record,), _ = parse_line(prefix + fields, 1)
    assert (record.host, record.step.time, record.fields.ip_id) == (host, time, 13891)


def test_column_padded_dmesg_prefix():
    line = "[90332.179725] TRACE: raw:PREROUTING:policy:2                  IN=cbr0 OUT=     PHYSIN=veth4a3719bc SRC=10.24.12.40 DST=10.27.240.10  LEN=82 TOS=0x00 PREC=0x00 TTL=64 ID=43592 PROTO=UDP SPT=36775 DPT=53 LEN=62"
    (record,), _ = parse_line(line, 1)
    assert record.fields.ip_id == 43592 and record.fields.out_if is None


def test_glued_line_yields_both_records():
    glued = RSYSLOG[:120] + RSYSLOG[RSYSLOG.index("TRACE:"):].replace("rule:1", "rule:2", 1)
    records, bad = parse_line(glued, 1)
    assert bad == 0 and [r.step.position for r in records] == [1, 2]
    assert records[0].fields.damaged and not records[1].fields.damaged


def test_glued_line_of_another_host_keeps_that_hosts_name_and_time():
    """A central syslog glues lines of different hosts: the glued-on record comes from the
    host (and time) of the prefix glued on before it, not from the first line's."""
    other = RFC3339.replace("2026-11-22T10:07:14.123456+00:00 slave1", "Dec  2 03:38:10 slave2")
    records, bad = parse_line(RSYSLOG[:150] + other, 1)
    assert bad == 0 and [(r.host, r.step.time) for r in records] == [("master", "Dec  2 03:38:09"),
                                                                       ("slave2", "Dec  2 03:38:10")]
    assert records[1].fields.ip_id == 4711 and records[0].fields.damaged
    dmesg = parse_line(RSYSLOG[:150] + DMESG, 2)[0]  # a dmesg prefix names no host: the line's stays
    assert [(r.host, r.step.time) for r in dmesg] == [("master", "Dec  2 03:38:09")] * 2


@pytest.mark.parametrize("first,glued", [
    ("[Thu Apr 23 21:55:11 2020] ", "[Thu Apr 23 21:55:12 2020] "),  # dmesg -T: a time inside brackets, no host
    ("Jan  1 00:00:01 nodeA kernel: [  100.4] ", "01 nodeB kernel: [  100.5] "),  # the glued prefix lost its start
])
def test_glued_prefix_of_another_form_keeps_the_lines_host(first, glued):
    """Where the glued-on text is not a prefix of the line's own form with a host (a time
    found inside it, an uptime alone), the glued record keeps the line's host and time."""
    tail = RSYSLOG[RSYSLOG.index("TRACE: "):]
    records, _ = parse_line(first + tail + " " + glued + tail.replace("rule:1", "rule:2"), 1)
    assert len(records) == 2 and records[1].host == records[0].host and records[1].step.time == records[0].step.time


def test_glued_short_full_prefix_names_its_host():
    """journalctl's short-full prefix glued on (weekday, date, time, zone, host) is of the
    line's own form: the glued record is that host's, at that time."""
    tail = RSYSLOG[RSYSLOG.index("TRACE: "):]
    line = ("Mon 2024-01-01 00:00:01 UTC nodeA kernel: " + tail + " Mon 2024-01-01 00:00:02 UTC nodeB kernel: "
            + tail.replace("rule:1", "rule:2"))
    records, _ = parse_line(line, 1)
    assert [(r.host, r.step.time) for r in records] == [("nodeA", "Mon 2024-01-01 00:00:01 UTC"),
                                                         ("nodeB", "Mon 2024-01-01 00:00:02 UTC")]
    assert records[0].fields.damaged and records[1].fields.ip_id == records[0].fields.ip_id


@pytest.mark.parametrize("before", ["Foo ", "MARK=0x1 Abc ", "DeMon "])
def test_a_word_before_a_glued_rfc3339_prefix_is_no_short_full_one(before):
    """A capitalised word before a glued RFC 3339 prefix (the line's own form) does not make
    a short-full prefix of it: the glued record is still that prefix's host's."""
    tail = RSYSLOG[RSYSLOG.index("TRACE: "):]
    line = "2024-01-01 00:00:01 nodeA kernel: " + tail + " " + before + "2024-01-01 00:00:02 nodeF kernel: " + tail
    assert [r.host for r in parse_line(line, 1)[0]] == ["nodeA", "nodeF"]


def test_cut_ip_id_is_not_guessed():
    f = parse_fields("IN= OUT=x SRC=1.2.3.4 DST=5.6.7.8 LEN=84 TTL=64 ID=4570ICMP TYPE=8 CODE=0 ID=3584 SEQ=1")
    assert f.ip_id is None and f.icmp_id == 3584 and f.damaged


def test_lone_id_with_seq_is_ambiguous():
    f = parse_fields("IN= OUT=x SRC=1.2.3.4 DST=5.6.7.8 LEN=84 TTL=64 ID=3584 SEQ=1")
    assert f.ip_id is None and f.damaged


def test_icmp_error_quoted_header_is_skipped():
    f = parse_fields(
        "IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=112 TOS=0x00 PREC=0xC0 TTL=64 ID=900 PROTO=ICMP TYPE=3 CODE=3 "
        "[SRC=10.0.0.2 DST=10.0.0.1 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=UDP SPT=1 DPT=2 LEN=64 ] MARK=0x1"
    )
    assert (f.ip_id, f.src, f.icmp_type, f.sport, f.mark) == (900, "10.0.0.1", 3, None, 1)


def test_debug_lines_mentioning_trace_are_not_records():
    assert parse_line("[   89.209365] ip_tables: TRACE: acpar.hotdrop=0 verdict=1", 1) == ([], 0)


def test_broken_header_counts_as_bad():
    records, bad = parse_line("Dec  2 03:38:09 master kernel: TRACE: nat:PRERO", 1)
    assert records == [] and bad == 1


def test_xtables_monitor_lines():
    packet = parse_xtables_monitor(
        "PACKET: 2 b278c085 IN=left MACSRC=36:63:bd:51:89:22 MACDST=ae:e9:8:2b:40:3 MACPROTO=0800 "
        "SRC=10.92.1.2 DST=10.92.2.2 LEN=84 TOS=0x0 TTL=64 ID=63276 DF", 1)
    assert packet.trace_id == "b278c085" and packet.step is None and packet.fields.ip_id == 63276
    trace = parse_xtables_monitor(
        " TRACE: 2 b278c085 filter:FORWARD:rule:0x3:ACCEPT  -4 -t filter -A FORWARD -i left -o right -p icmp -j ACCEPT", 2)
    s = trace.step
    assert (s.table, s.chain, s.kind, s.handle, s.verdict) == ("filter", "FORWARD", "rule", "0x3", "ACCEPT")
    assert s.rule == "-A FORWARD -i left -o right -p icmp -j ACCEPT"
    policy = parse_xtables_monitor(" TRACE: 2 b278c085 raw:PREROUTING:policy:ACCEPT ", 3)
    assert policy.step.kind == "policy" and policy.step.verdict == "ACCEPT"


def test_nft_monitor_lines():
    packet = parse_nft_monitor(
        'trace id 4cc0afaa ip filter INPUT packet: iif "wg1" ip saddr 10.1.1.4 ip daddr 10.1.1.5 ip dscp cs0 '
        "ip ecn not-ect ip ttl 64 ip id 10304 ip length 60 tcp sport 47410 tcp dport 873 tcp flags == syn tcp window 64860 ", 1)
    f = packet.fields
    assert (f.ip_id, f.proto, f.sport, f.dport, f.tcp_flags, f.in_if) == (10304, "TCP", 47410, 873, frozenset({"SYN"}), "wg1")
    rule = parse_nft_monitor('trace id 4cc0afaa ip filter INPUT rule iifname "wg1" counter packets 0 bytes 0 reject (verdict drop)', 2)
    assert rule.step.verdict == "DROP" and rule.step.rule.endswith("reject")
    ret = parse_nft_monitor("trace id 4cc0afaa ip filter wg1-state verdict return ", 3)
    assert ret.step.kind == "return" and ret.step.chain == "wg1-state"
    # a verdict's keyword reads upper case; the chain a jump names keeps its own case
    jump = parse_nft_monitor("trace id 4cc0afaa inet shorewall input rule jump ACCEPT-fw (verdict jump ACCEPT-fw)", 4)
    assert jump.step.verdict == "JUMP ACCEPT-fw"
