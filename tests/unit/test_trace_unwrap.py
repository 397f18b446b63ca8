"""Kernel, xtables-monitor and nft trace records hard-wrapped over several lines (as posts
and mails print them) are read as one line each, with the file's line numbers; other logs are
read as they are, and so are logs cut at a fixed column."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chainlab.trace.contract import PacketRecord
from chainlab.trace import reader
from chainlab.trace.pipeline import analyze
from chainlab.trace.reader import (KERNEL, KERNEL_WRAPPED, LINE_LIMIT, NFT_MONITOR, NFT_WRAPPED, XTABLES_MONITOR,
                                   XTABLES_WRAPPED, LogSource, base_format, log_format)
from chainlab.trace.unwrap import WORD_LIMIT, KernelJoiner, NftJoiner, XtablesJoiner, is_wrapped, unwrap

from ..conftest import FIXTURES

PUBLIC = FIXTURES / "public"
WRAPPED = PUBLIC / "melon-kernlog-wrapped-100col-syn80.log"
FIXTURE_LOGS = sorted(p for d in ("seed-logs", "lab", "public", "public-traces", "captured", "traces")
                      for p in (FIXTURES / d).glob("*.log"))
#: Kernel logs of whole lines: a reference to wrap (tests/fixtures/README.md says whence).
WHOLE = [p for p in FIXTURE_LOGS if base_format(log_format(p)) == KERNEL and p != WRAPPED]
LINE = ("Mar 24 22:41:52 enterprise kernel: [885386.325658] TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= "
        "MAC=00:1d:7d:aa:e3:4e:00:04:4b:05:b4:dc:08:00 SRC=192.168.32.18 DST=192.168.12.152 LEN=52 TOS=0x00 "
        "PREC=0x00 TTL=128 ID=30561 DF PROTO=TCP SPT=53054 DPT=80 SEQ=3653700382 ACK=0 WINDOW=8192 RES=0x00 "
        "SYN URGP=0 OPT (020405B40103030201010402)")


def joined(text: str) -> str:
    return b"".join(unwrap([text.encode()], KernelJoiner(LINE_LIMIT))).decode()


def wrap(text: str, width: int) -> str:
    """Each line broken at its spaces into pieces of at most `width` (a longer word alone),
    as a blog's or a mail's word wrap does."""
    out = []
    for line in text.split("\n"):
        while len(line) > width and (cut := line.rfind(" ", 1, width + 1) if " " in line[1 : width + 1]
                                     else line.find(" ", width)) > 0:
            out.append(line[:cut])
            line = line[cut + 1 :]
        out.append(line)
    return "\n".join(out)


def packets(path: Path) -> list[dict]:
    """The packets of an analysis, without line numbers (wrapping moves them) and with runs of
    spaces as one (a wrap at two spaces keeps one)."""
    records = [PacketRecord.from_packet(p).to_dict() for p in analyze([LogSource(path, "n")]).packets]
    for record in records:
        for step in record["steps"] + [record["last_step"]]:
            step.pop("line")
    return json.loads(re.sub(" {2,}", " ", json.dumps(records)))


def test_the_published_wrapped_trace_is_one_packet_walking_two_tables():
    """melon's kern.log excerpt: 4 lines a record, a blank line between; the author's SYN to
    port 80 passes raw and mangle PREROUTING (the excerpt ends there: verdict unknown)."""
    assert log_format(WRAPPED) == KERNEL_WRAPPED
    result = analyze([LogSource(WRAPPED)])
    (packet,) = result.packets
    assert (packet.node, packet.fields.src, packet.fields.dst, packet.fields.sport, packet.fields.dport) == (
        "enterprise", "192.168.32.18", "192.168.12.152", 53054, 80)
    assert packet.fields.ip_id == 30561 and "SYN" in packet.fields.tcp_flags and not packet.fields.damaged
    assert [(s.table, s.chain, s.kind, s.line) for s in packet.steps] == [
        ("raw", "PREROUTING", "policy", 2), ("mangle", "PREROUTING", "policy", 7)]
    assert packet.verdict == "unknown" and "the log ends after mangle:PREROUTING policy" in packet.reason
    assert (result.stats.lines, result.stats.trace_records, result.stats.skipped_lines) == (10, 2, 0)
    assert result.stats.formats == {str(WRAPPED): KERNEL_WRAPPED}


def test_a_record_keeps_its_first_line_number_and_every_later_line_keeps_its_own():
    text = wrap(LINE, 100) + "\nMar 24 22:41:53 enterprise sshd[1]: other\n"
    out = joined(text)
    assert out.split("\n") == [LINE, "", "", "", "Mar 24 22:41:53 enterprise sshd[1]: other", ""]


def test_what_continues_a_record():
    head = LINE[: LINE.index(" MAC=")]
    assert joined(f"{head}\n  MAC=00:1d SRC=1.2.3.4\n") == f"{head} MAC=00:1d SRC=1.2.3.4\n\n"  # indented
    assert joined(f"{head}\r\nMAC=00:1d\r\n") == f"{head} MAC=00:1d\n\n"  # CRLF
    assert joined(f"{head} OPT\n(0204)\n") == f"{head} OPT (0204)\n\n"  # the options' bytes
    cut = LINE.index("TRACE:") + 6
    assert joined(f"{LINE[:cut]}\n{LINE[cut + 1:]}\n") == f"{LINE}\n\n"  # a mail's 72 columns: after TRACE:
    assert joined(f"{head}\nDF SYN\n") == f"{head} DF SYN\n\n"  # flags


CALICO_LINES = [
    "Dec  2 03:10:16 master kernel: TRACE: raw:cali-PREROUTING:rule:1 IN=cali9c26c42917e OUT= "
    "MAC=ee:ee:ee:ee:ee:ee:76:8e:1f:39:39:c2:08:00 SRC=172.20.219.87 DST=172.16.91.219 LEN=84 TOS=0x00 PREC=0x00 "
    "TTL=64 ID=7937 DF PROTO=ICMP TYPE=8 CODE=0 ID=1805 SEQ=2 ",
    "Dec  2 03:10:16 master kernel: TRACE: filter:DOCKER-USER:return:1 IN=br-lan OUT=docker-br0 PHYSIN=veth-abc "
    "SRC=172.20.219.87 DST=172.16.91.219 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=7937 DF PROTO=ICMP TYPE=8 CODE=0 "
    "ID=1805 SEQ=2 "]


@pytest.mark.parametrize("line", CALICO_LINES)
def test_a_record_wrapped_at_any_width_also_at_hyphens_is_its_line_again(line):
    """Word-wrapped at every width from 40 to 130 columns, also at the hyphens of chain and
    interface names (textwrap's default: `raw:cali-` / `PREROUTING:rule:1`, `IN=br-` /
    `lan OUT=`), and with the header alone on its line (`raw:cali-PREROUTING:rule:1` / `IN=`):
    the record is its line again (before, 47 of these 182 wraps lost the record)."""
    for width in range(40, 131):
        for hyphens in (False, True):
            text = "\n".join(textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=hyphens)) + "\n"
            assert re.sub(" +", " ", joined(text).split("\n")[0]) == re.sub(" +", " ", line).rstrip(), (width, text)


def test_a_word_goes_on_over_lines_up_to_its_limit_only():
    """Lines of `a-` after a record ending in `IN=a-`: the word goes on up to WORD_LIMIT
    bytes, then the lines come as they are (each glue costs the new line's length: no
    record is read again); every line keeps its number, in each format's joiner."""
    pieces = "a-\n" * 300
    for joiner, head in ((KernelJoiner, "Dec  2 03:10:16 master kernel: TRACE: raw:PREROUTING:rule:1 IN=a-"),
                         (XtablesJoiner, "PACKET: 2 d922bdcd IN=a-"),
                         (XtablesJoiner, "TRACE: 2 d922bdcd filter:X:rule:0x1:CONTINUE -4 -t filter -A X -j a-")):
        out = b"".join(unwrap([f"{head}\n{pieces}".encode()], joiner(LINE_LIMIT))).decode()
        first = out.split("\n")[0]
        assert out.count("\n") == 301 and WORD_LIMIT <= len(first.rsplit(" ", 1)[-1]) <= WORD_LIMIT + 3, joiner
        assert out.split("\n")[-2] == "a-"


def test_what_does_not_go_on_with_a_word_broken_at_a_hyphen():
    """After a rule whose last word ends in a hyphen, an author's sentence; after a kernel
    record's `IN=br-`, a word and then prose: each line stays as it came."""
    rule = "TRACE: 2 d922bdcd filter:X:rule:0x1:CONTINUE -4 -t filter -A X -j DOCKER-"
    text = f"{rule}\nHello world, this is my note\n"
    assert xt_joined(text) == text
    kernel = f"{LINE[:80]} IN=br-\nlan and then prose\n"
    assert joined(kernel) == kernel


def test_a_break_at_a_hyphen_before_a_digit_is_joined_too():
    """Another wrapper's break: `IN=br-` / `406f2a425e0c OUT=...`."""
    line = CALICO_LINES[1].replace("br-lan", "br-406f2a425e0c").rstrip()
    cut = line.index("br-") + 3
    assert joined(f"{line[:cut]}\n{line[cut:]}\n") == f"{line}\n\n"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(WHOLE), st.integers(60, 200))
def test_a_log_wrapped_at_hyphens_says_what_the_whole_one_says(tmp_path, path, width):
    """Any kernel fixture log, each line wrapped by textwrap (at hyphens too) at any width
    from 60 columns: the same packets (before, 35 of 525 such wraps lost some)."""
    wrapped = tmp_path / f"h{width}-{path.name}"
    wrapped.write_text(wrap_at_hyphens(path.read_text(), width))
    assert packets(wrapped) == packets(path), json.dumps(wrapped.read_text()[:2000])


def test_what_does_not_continue_a_record():
    """A whole line then a line cut at its head (a damaged log), a field the record holds,
    a blank line, another record, a line of other text: each stays a line of its own."""
    for text in [f"{LINE}\nSRC=1.2.3.4 DST=5.6.7.8 LEN=52\n", f"{LINE}\nSYN URGP=0\n", f"{LINE[:80]}\n\nMAC=00:1d\n",
                 f"{LINE[:80]}\n{LINE}\n", f"{LINE[:80]}\nhello MAC=00:1d\n", f"{LINE[:80]}\nMACX=1\n",
                 f"{LINE[:80]}\nOPTIONS here\n", f"{LINE[:80]} IN=br-\nlan and then prose\n",
                 f"{LINE[:80]} br-\nlan OUT=\n"]:
        assert joined(text) == text
        assert not is_wrapped(text.encode(), KernelJoiner(LINE_LIMIT), whole=True)


def test_a_line_longer_than_the_limit_passes_as_it_comes():
    """Neither a record nor a continuation: memory stays flat (pieces as they come)."""
    long = b"x" * (3 * 4096)
    data = LINE[:80].encode() + b"\nMAC=1 " + long + b"\n" + LINE.encode()
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    out = list(unwrap(chunks, KernelJoiner(4096)))
    assert b"".join(out) == data + b"\n" and max(map(len, out)) <= 2 * 4096 + len(LINE)  # a chunk and a carry


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_chunks_never_change_the_result(data, cuts):
    pieces = [LINE.encode(), wrap(LINE, 70).encode(), b"MAC=1 DF", b"\r\n", b"\n", b"OPT", b" (01)", b"TRACE:"]
    data = b"\n".join([data, *pieces, data[:50]])
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    whole = b"".join(unwrap([data], KernelJoiner(LINE_LIMIT)))
    assert b"".join(unwrap(chunks, KernelJoiner(LINE_LIMIT))) == whole
    assert whole.count(b"\n") == data.count(b"\n") + (not data.endswith(b"\n"))  # every line keeps its number


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(WHOLE), st.integers(60, 200))
def test_a_wrapped_log_says_what_the_whole_one_says(tmp_path, path, width):
    """Any kernel fixture log, wrapped at any width from 60 columns: the same packets."""
    wrapped = tmp_path / f"w{width}-{path.name}"
    wrapped.write_text(wrap(path.read_text(), width))
    assert packets(wrapped) == packets(path), json.dumps(wrapped.read_text()[:2000])


def test_the_fields_an_icmp_packet_prints_twice_continue_it():
    """The echo's `ID=` after the IP id, and the `[...]` an ICMP error quotes (published
    LOG lines of that shape: `... PROTO=ICMP TYPE=3 CODE=3 [SRC=... LEN=109 ] MTU=1500`)."""
    echo = LINE.replace("PROTO=TCP SPT=53054 DPT=80 SEQ=3653700382 ACK=0 WINDOW=8192 RES=0x00 SYN URGP=0 OPT "
                        "(020405B40103030201010402)", "PROTO=ICMP TYPE=8 CODE=0 ID=17 SEQ=1")
    error = echo.replace("TYPE=8 CODE=0 ID=17 SEQ=1", "TYPE=3 CODE=4 [SRC=192.168.12.152 DST=192.168.32.18 LEN=129 "
                         "TOS=0x00 PREC=0x00 TTL=49 ID=0 DF PROTO=UDP SPT=9985 DPT=60435 LEN=109 ] MTU=1500")
    for line in (echo, error):
        for width in range(60, len(line), 7):
            text = wrap(line, width) + "\n"
            assert joined(text) == line + "\n" * (text.count("\n")), (width, text)


def test_a_record_split_after_its_header_counts_its_fields_once():
    """`TRACE:` at a line's end, the header and fields on the next: the echo's `ID=` on the
    line after that is the record's second (the IP id was the first), so it continues it."""
    line = ("Mar 24 22:41:52 enterprise kernel: TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= SRC=10.0.0.1 "
            "DST=10.0.0.2 LEN=84 TTL=64 ID=5 PROTO=ICMP TYPE=8 CODE=0 ID=17 SEQ=1")
    cut, echo = line.index("TRACE:") + 6, line.index(" ID=17")
    assert joined(f"{line[:cut]}\n{line[cut + 1 : echo]}\n{line[echo + 1 :]}\n") == f"{line}\n\n\n"


# -- nft monitor trace ----------------------------------------------------------------------------

SHOREWALL = PUBLIC / "shorewall-nft-doc-wrapped-rule-accept.log"
NFT_WHOLE = [p for p in FIXTURE_LOGS if base_format(log_format(p)) == NFT_MONITOR and p != SHOREWALL]
MANPAGE = PUBLIC / "xtables-monitor-manpage.log"
MANPAGE_WRAPPED = PUBLIC / "xtables-monitor-manpage-wrapped-60col.log"
XT_WHOLE = [p for p in FIXTURE_LOGS if base_format(log_format(p)) == XTABLES_MONITOR and p != MANPAGE_WRAPPED]


def test_no_fixture_but_the_three_wrapped_ones_reads_as_wrapped():
    wrapped = [p.name for p in FIXTURE_LOGS if log_format(p) in (KERNEL_WRAPPED, XTABLES_WRAPPED, NFT_WRAPPED)]
    assert wrapped == [WRAPPED.name, SHOREWALL.name, MANPAGE_WRAPPED.name]
    assert len(WHOLE) > 15 and len(NFT_WHOLE) > 10 and len(XT_WHOLE) >= 5


def nft_joined(text: str) -> str:
    return b"".join(unwrap([text.encode()], NftJoiner(LINE_LIMIT))).decode()


def test_the_published_wrapped_rule_line_accepts_the_ping():
    """shorewall-nft's doc: the rule that accepted the ping, wrapped over four lines, is one
    step with its comment (before, its verdict was lost and the packet's fate unknown)."""
    assert log_format(SHOREWALL) == NFT_WRAPPED
    (packet,) = analyze([LogSource(SHOREWALL, "n")]).packets
    last = packet.steps[-1]
    assert (last.chain, last.verdict, last.line) == ("ACCEPT-fw", "ACCEPT", 4)
    assert last.rule == 'meta nfproto ipv4 counter name "r_ACCEPT_fw_0000" accept comment "rules:38: OrgAdmin/ACCEPT net $FW"'
    assert packet.verdict == "accepted"


def test_what_continues_an_nft_line():
    rule = "trace id 1 ip t input rule tcp dport 22 counter packets 0 bytes 0"
    packet = 'trace id 1 ip t input packet: iif "lo" ip saddr 127.0.0.1'
    assert nft_joined(f"{rule}\n  accept (verdict\n  accept)\n") == f"{rule} accept (verdict accept)\n\n\n"
    assert nft_joined(f"{packet}\n ip daddr 10.0.0.2 tcp dport 22\n@ll,0,8 0x1\nsaddr fd00::1 tcp flags == syn,ack\n"
                      ) == f"{packet} ip daddr 10.0.0.2 tcp dport 22 @ll,0,8 0x1 saddr fd00::1 tcp flags == syn,ack\n\n\n\n"
    policy = "trace id 1 inet t pre policy accept"
    assert nft_joined(f"{policy} meta\nmark 0x00000042\n") == f"{policy} meta mark 0x00000042\n\n"  # not whole yet
    quoted = f"> {rule}\n> accept (verdict accept)\n"  # a mail's reply quotes each line
    assert nft_joined(quoted) == f"> {rule} accept (verdict accept)\n\n"
    cut = LINE.index(" MAC=")
    assert joined(f"> {LINE[:cut]}\n> {LINE[cut + 1:]}\n") == f"> {LINE}\n\n"
    for text in [f"{rule}\n\naccept (verdict accept)\n",  # a blank line first
                 f"{rule}\n" + "x\n" * 7 + "(verdict accept)\n",  # too far
                 f"{rule}\n{packet}\n",  # another trace line
                 f"{packet}\nThe packet was dropped.\n",  # prose after a packet line
                 f"{packet}\nadd rule ip filter input tcp dport 22 accept\n",  # nft monitor's own event
                 f"{policy}\nmeta mark 0x00000042\n",  # a line that reads whole takes nothing (but packet lines)
                 f"{packet}\nnote: nothing after this, so it is accepted\n", f"{packet}\n$ sudo nft list ruleset\n",
                 f"{packet}\n...\n", f"{packet}\n# the reply\n",  # an elision, a comment
                 f"{rule} (verdict accept)\nmore words (verdict drop)\n"]:  # a whole rule line
        assert nft_joined(text) == text
        assert not is_wrapped(text.encode(), NftJoiner(LINE_LIMIT), whole=True)


def broken_at_one_length(text: str, width: int) -> bool:
    """Whether every nft line a wrap broke (three or more) has one and the same length: what a
    cut at a fixed column leaves, and the file is read so (a limit the README states)."""
    broken = [len(line) for line, after in zip(text.split("\n"), text.split("\n")[1:])
              if after and not re.match(r"\s*(trace id|#|$)", after) and len(line) > width - 20]
    return len(broken) >= 3 and len(set(broken)) == 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(NFT_WHOLE), st.integers(60, 160))
def test_a_wrapped_nft_log_says_what_the_whole_one_says(tmp_path, path, width):
    """Any nft fixture log wrapped at any width from 60 columns (a mail's 72 break a rule
    line after `... chain rule`, its verdict on a later line, and a packet line anywhere in
    its headers): the same packets. Not where every line the wrap broke (three or more) has
    one and the same length: a cut at a fixed column leaves just that, and the file is read
    so (a limit the README states; one fixture at 93-95 columns, its four broken lines 93 long)."""
    text = wrap(path.read_text(), width)
    assume(not broken_at_one_length(text, width))
    wrapped = tmp_path / f"w{width}-{path.name}"
    wrapped.write_text(text)
    assert packets(wrapped) == packets(path), json.dumps(wrapped.read_text()[:2000])


def fold(text: str, width: int) -> str:
    """Each line cut every `width` characters, inside words too (`fold -w`, a terminal's copy)."""
    return "\n".join(line[i : i + width] for line in text.split("\n") for i in range(0, max(len(line), 1), width))


def _outcomes(path: Path) -> set[tuple]:
    return {(p["ip_id"], p["src"], p["verdict"], tuple(p["hooks"])) for p in packets(path)}


@pytest.mark.parametrize("width", [60, 100, 180])
def test_a_log_cut_at_a_fixed_column_is_read_no_worse_than_without_joining(tmp_path, monkeypatch, width):
    """A cut at a fixed column (`fold -w`, a terminal's copy) starts pieces inside words;
    gluing them with a space would make up fields (`I D=13891 ... ID=17`). Such a file is
    mostly not read as wrapped (pieces that hold fields but cannot go on from where the
    record stopped); where it is (few lines cut), only pieces that begin where a word can
    are joined: against the whole log, no fewer packets come out right and none more wrong
    than with no joining at all."""
    read_as_cut = 0
    for i, path in enumerate(WHOLE + NFT_WHOLE + XT_WHOLE):
        folded = tmp_path / f"f{i}.log"
        folded.write_text(fold(path.read_text(), width))
        truth = _outcomes(path)
        joined = _outcomes(folded)
        with monkeypatch.context() as m:
            m.setattr(reader, "log_format", lambda p, sniff=reader.log_format: base_format(sniff(p)))
            plain = _outcomes(folded)
        read_as_cut += "wrapped" not in log_format(folded)
        assert len(joined & truth) >= len(plain & truth), path.name
        wrong = {o for o in joined - truth if o[2] != "unknown"} - {o for o in plain - truth if o[2] != "unknown"}
        assert not wrong, path.name
    if width < 100:  # most lines cut: nine in ten of these logs are read as they are
        assert read_as_cut * 10 >= 9 * len(WHOLE + NFT_WHOLE + XT_WHOLE)


def test_a_line_of_other_whitespace_is_no_continuation():
    """A form feed or vertical tab after a record (any bytes may come) is a line of its own."""
    for blank in ("\x0c", "\x0b", " \x0c "):
        text = f"{LINE}\n{blank}\n"
        assert joined(text) == text and nft_joined(text) == text


def test_the_whole_head_is_sniffed_to_its_last_line():
    """A file shorter than the sniff whose last line (without a newline) is the continuation."""
    cut = LINE.index(" MAC=")
    assert is_wrapped(f"{LINE[:cut]}\n{LINE[cut + 1:]}".encode(), KernelJoiner(LINE_LIMIT), whole=True)
    assert not is_wrapped(f"{LINE[:cut]}\n{LINE[cut + 1:]}".encode(), KernelJoiner(LINE_LIMIT), whole=False)
    packet = 'trace id 1 ip t input packet: iif "lo" ip saddr 127.0.0.1'
    assert is_wrapped(f"{packet}\nip daddr 10.0.0.2".encode(), NftJoiner(LINE_LIMIT), whole=True)


def test_a_long_line_is_read_the_same_whatever_the_chunks():
    """A line of limit bytes or more is never a continuation, whether it comes in one chunk
    or in several (it is then passed on as it comes)."""
    data = LINE[: LINE.index(" MAC=")].encode() + b"\n" + b" " * 150 + b"MAC=1\n"
    whole = b"".join(unwrap([data], KernelJoiner(100)))
    assert whole == data and b"".join(unwrap([data[:100], data[100:]], KernelJoiner(100))) == whole


def test_a_damaged_word_then_fields_and_a_quoted_packet_continue_a_record():
    head = LINE[: LINE.index(" DST=")]
    assert joined(f"{head}\nDST225 LEN=52\n") == f"{head} DST225 LEN=52\n\n"
    assert joined(f"{head}\nD=13891 LEN=52\n") == f"{head}\nD=13891 LEN=52\n"  # a word cut inside: no
    error = f"{head} PROTO=ICMP TYPE=3 CODE=3 [SRC=10.0.0.2 DST=10.0.0.1 LEN=40"
    assert joined(f"{error}\nPROTO=UDP SPT=53 DPT=5353 LEN=20\n]\nMTU=1500\n") == (
        f"{error} PROTO=UDP SPT=53 DPT=5353 LEN=20 ] MTU=1500\n\n\n\n")


def test_a_prefix_alone_on_its_line_starts_the_record_below_it():
    """A long RFC 3339 time and an EC2 host fill a mail's 72 columns: `kernel: TRACE: ...`
    comes on the next line; the record keeps the prefix's host, time and line number. A line
    that is more than a prefix, or a prefix whose next line brings its own, stays apart."""
    prefix = "2024-01-31T22:41:52.123456+00:00 ip-10-0-12-34.eu-west-1.compute.internal"
    record = f"kernel: {LINE[LINE.index('TRACE:'):]}"
    assert joined(f"{prefix}\n{record}\n") == f"{prefix} {record}\n\n"
    log = f"> {prefix}\n> {record}\n"
    assert joined(log) == f"> {prefix} {record}\n\n"
    assert joined(f"> {prefix[:32]}\n> {prefix[33:]}\n> {record}\n") == f"> {prefix} {record}\n\n\n"
    for text in [f"Mar 24 22:41:52 host sshd[1]: Accepted\n{record[8:]}\n", "[ 12.5]\n[ 12.5] TRACE: x\n",
                 f"{prefix} kernel:\n{record}\n", f"{prefix}\nhello\n", f"{prefix}\n"]:
        assert joined(text) == text


def test_the_record_after_a_prefix_line_is_the_host_s(tmp_path):
    prefix = "2024-01-31T22:41:52.123456+00:00 ip-10-0-12-34.eu-west-1.compute.internal"
    log = tmp_path / "eks.log"
    log.write_text(f"{prefix}\nkernel: {LINE[LINE.index('TRACE:'):LINE.index(' MAC=')]}\n{LINE[LINE.index('MAC='):]}\n")
    assert log_format(log) == KERNEL_WRAPPED
    (packet,) = analyze([LogSource(log)]).packets
    assert packet.node == "ip-10-0-12-34.eu-west-1.compute.internal" and packet.steps[0].line == 1
    assert packet.fields.dport == 80 and packet.steps[0].time


EC2 = "2023-04-05T10:11:12.123456+00:00 ip-172-31-5-10.eu-west-1.compute.internal"


@pytest.mark.parametrize("text", [
    f"{EC2[:-8]}\ninternal kernel: [ 123.456] {LINE[LINE.index('TRACE:'):]}\n",  # cut inside the host's name
    f"{EC2[:32]}\n{EC2[33:]} kernel: [ 123.456] {LINE[LINE.index('TRACE:'):]}\n",  # the time alone (72 columns)
    f"{EC2} kernel: [\n123.456] {LINE[LINE.index('TRACE:'):]}\n",  # inside the uptime's brackets (90 columns)
    f"{EC2[:32]}\n{EC2[33:]} kernel: [\n123.456] {LINE[LINE.index('TRACE:'):]}\n",  # over three lines (60 columns)
])
def test_a_prefix_cut_anywhere_starts_the_record_below_it(tmp_path, text):
    """A long RFC 3339 time and an EC2 host broken over lines: joined at a space, or without
    one where the cut fell inside a word (the host's name); the record keeps the host, the
    time and its first line's number."""
    log = tmp_path / "ec2.log"
    log.write_text(text)
    assert log_format(log) == KERNEL_WRAPPED
    out = joined(text)
    assert out.count("\n") == text.count("\n") and out.endswith("\n" * text.count("\n"))
    (packet,) = analyze([LogSource(log)]).packets
    assert packet.node == "ip-172-31-5-10.eu-west-1.compute.internal" and packet.fields.dport == 80
    assert (packet.steps[0].line, packet.steps[0].time) == (1, "2023-04-05T10:11:12.123456+00:00")


@pytest.mark.parametrize("prefix", [f"{EC2} kernel: [  123.456789]", "Apr  5 10:11:12 some-very-long-hostname-of-the-"
                                    "cluster-node-number-seven kernel:", f"<13>1 {EC2} kernel:", "[  480.849238]"])
def test_a_prefix_wrapped_at_any_width_is_joined_again(prefix):
    """Word-wrapped at every width from 40 to 130 columns, also at hyphens (textwrap's
    default): the record is its line again (but for the spaces of a break)."""
    line = f"{prefix} {LINE[LINE.index('TRACE:'):]}"
    for width in range(40, 131):
        for hyphens in (False, True):
            text = "\n".join(textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=hyphens)) + "\n"
            first = joined(text).split("\n")[0]
            assert re.sub(" +", " ", first) == re.sub(" +", " ", line), (width, hyphens, text)


def test_what_is_no_prefix_cut_in_two():
    """A time or a prefix's start before prose, before a whole record of its own, before
    another program's line, or itself followed by a message; and prose that holds a time:
    each line stays as it came."""
    record = LINE[LINE.index("TRACE:"):]
    for text in [f"{EC2[:32]}\nThe host then logged:\n", f"{EC2}\n{LINE}\n", f"{EC2[:32]}\n{LINE}\n",
                 f"{EC2}\nsshd[1]: {record}\n", f"{EC2} sshd[1]:\n{record}\n", f"{EC2[:32]} host\nbus kernel: hello\n",
                 f"At {EC2[:32]} the host\nkernel: {record}\n", f"{EC2[:32]}\n[ 1.5] [ 2.5] {record}\n",
                 f"{EC2[:32]}\n{EC2[:32]}\nkernel: {record}\n"]:
        assert joined(text) == text, text
        assert not is_wrapped(text.encode(), KernelJoiner(LINE_LIMIT), whole=True), text


# -- xtables-monitor --trace -----------------------------------------------------------------------

XT_RULE = (" TRACE: 2 d922bdcd filter:DOCKER-ISOLATION-STAGE-1:rule:0x42:JUMP:DOCKER-ISOLATION-STAGE-2  -4 -t filter -A "
           "DOCKER-ISOLATION-STAGE-1 -i br-406f2a425e0c ! -o br-406f2a425e0c -j DOCKER-ISOLATION-STAGE-2")
XT_PACKET = ("PACKET: 2 d922bdcd IN=br-406f2a425e0c OUT=ens160 MACSRC=2:42:ac:14:0:2 MACDST=2:42:a4:c7:f1:f1 "
             "MACPROTO=0800 SRC=172.20.0.2 DST=40.89.244.232 LEN=84 TOS=0x0 TTL=63 ID=43751DF")


def xt_joined(text: str) -> str:
    return b"".join(unwrap([text.encode()], XtablesJoiner(LINE_LIMIT))).decode()


def test_the_published_wrapped_xtables_monitor_example_says_what_the_whole_one_says():
    """xtables-monitor(8)'s example as a man page reader printed it at ~60 columns (the rule
    under its TRACE line, the packet's link layer bytes and addresses under its PACKET
    line): the packets of the unwrapped example, rules and addresses and all (before, the
    packet's addresses and IP id and every rule were lost)."""
    assert log_format(MANPAGE_WRAPPED) == XTABLES_WRAPPED
    first, _ = whole = packets(MANPAGE_WRAPPED)
    assert whole == packets(MANPAGE)
    assert (first["src"], first["ip_id"], first["verdict"]) == ("127.0.0.1", 38349, "dropped")
    assert first["steps"][0]["rule"] == "-A PREROUTING -p icmp -j TRACE"
    assert [s.line for s in analyze([LogSource(MANPAGE_WRAPPED, "n")]).packets[0].steps] == [1, 6, 7, 8, 9]


@pytest.mark.parametrize("cut", [
    XT_RULE.index(" filter:"),  # the header on the next line (a long chain's name)
    XT_RULE.index("  -4"),  # the rule on the next line
    XT_RULE.index(" filter -A"),  # inside the rule's start: `-4 -t` / `filter -A ...`
    XT_RULE.index(" DOCKER-ISOLATION-STAGE-1 -i"),  # `... -A` / the chain (xtables-monitor(8) in iptables 1.8.4, at 80)
    XT_RULE.index(" -A"),  # `... -t filter` / `-A ...` (xtables-monitor(8) in iptables 1.8.5)
    XT_RULE.index(" ! -o"),  # an option's `!` first
    XT_RULE.rindex(" DOCKER-ISOLATION-STAGE-2"),  # an option's value after it
])
def test_what_continues_an_xtables_monitor_trace_line(cut):
    text = f"{XT_RULE[:cut]}\n{XT_RULE[cut:].lstrip()}\n"
    assert re.sub(" +", " ", xt_joined(text)) == re.sub(" +", " ", f"{XT_RULE}\n\n")
    assert is_wrapped(text.encode(), XtablesJoiner(LINE_LIMIT), whole=True)


def test_what_continues_an_xtables_monitor_line():
    for line in [XT_PACKET, XT_PACKET.replace("MACSRC=2:42:ac:14:0:2 MACDST=2:42:a4:c7:f1:f1 MACPROTO=0800",
                                              "LL=0x304 0000000000000000000000000800"),  # the link layer's bytes
                 XT_PACKET + " SPORT=80 DPORT=443 SYN ACK MARK=0x8000",
                 XT_RULE.replace("-i br-406f2a425e0c", '-m comment --comment "kubernetes forwarding rules"'),
                 XT_RULE.replace("-i br-406f2a425e0c", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN")]:
        for width in range(30, len(line), 4):
            text = "\n".join(textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False)) + "\n"
            assert re.sub(" +", " ", xt_joined(text)) == re.sub(" +", " ", f"{line}\n" + "\n" * (text.count("\n") - 1))
    cut = XT_PACKET.index(" MACSRC")
    assert xt_joined(f"> {XT_PACKET[:cut]}\n> {XT_PACKET[cut + 1:]}\n") == f"> {XT_PACKET}\n\n"  # a mail's quoting


def test_what_does_not_continue_an_xtables_monitor_line():
    """A whole line before prose, the command line, an error xtables-monitor printed, a
    blank line, a field the PACKET line holds, another table's rule, a header that does not
    read: each line stays as it came."""
    policy = " TRACE: 2 d922bdcd raw:PREROUTING:policy:ACCEPT"
    for text in [f"{XT_RULE}\nThe packet goes on to DOCKER-ISOLATION-STAGE-2.\n", f"{XT_RULE}\nxtables-monitor --trace\n",
                 f"{policy}\nError: unsupported layer 4 protocol value\n", f"{policy}\n-j ACCEPT\n",
                 f"{XT_RULE[:XT_RULE.rindex(' -j')]}\n\n-j DOCKER-ISOLATION-STAGE-2\n",
                 f"{XT_PACKET}\nSRC=1.2.3.4 DST=5.6.7.8\n", f"{XT_PACKET}\nhello SPORT=80\n",
                 f"{XT_PACKET[:XT_PACKET.index(' TTL=')]}\nTTL=63 ID=43751DF and more\n",
                 f"{XT_RULE[:XT_RULE.index(' filter -A')]}\nraw -A PREROUTING -j TRACE\n",
                 f"{XT_RULE[:XT_RULE.index(' filter:')]}\nhello world\n", f"{XT_RULE}\n{XT_PACKET}\n"]:
        assert xt_joined(text) == text, text
        assert not is_wrapped(text.encode(), XtablesJoiner(LINE_LIMIT), whole=True), text


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(XT_WHOLE), st.integers(60, 200))
def test_a_wrapped_xtables_monitor_log_says_what_the_whole_one_says(tmp_path, path, width):
    """Any xtables-monitor fixture log wrapped at any width from 60 columns (a rule's words,
    a PACKET line's fields, a TRACE line's header on lines of their own): the same packets."""
    wrapped = tmp_path / f"w{width}-{path.name}"
    wrapped.write_text(wrap(path.read_text(), width))
    assert packets(wrapped) == packets(path), json.dumps(wrapped.read_text()[:2000])


def wrap_at_hyphens(text: str, width: int) -> str:
    """Each line as textwrap wraps it by default: at spaces and at the hyphens of words."""
    return "\n".join("\n".join(textwrap.wrap(line, width, break_long_words=False)) or line for line in text.split("\n"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(NFT_WHOLE + XT_WHOLE), st.integers(60, 160))
def test_nft_and_xtables_monitor_logs_wrapped_at_hyphens_say_what_the_whole_ones_say(tmp_path, path, width):
    """Any nft or xtables-monitor fixture log wrapped by textwrap, at hyphens too (`ip filter
    DOCKER-` / `USER rule ...`, `-j DOCKER-` / `ISOLATION-STAGE-2`, `iif "br-` / `lan"`): the
    same packets, every line keeping its number (by hand, 2026-12-04, every 9th width from 60
    to 159: 27 of 204 nft and 14 of 60 xtables-monitor wraps lost packets before, none now).
    Not an nft file whose broken lines all have one length (read as cut, as above)."""
    text = wrap_at_hyphens(path.read_text(), width)
    assume(path not in NFT_WHOLE or not broken_at_one_length(text, width))
    wrapped = tmp_path / f"h{width}-{path.name}"
    wrapped.write_text(text)
    assert packets(wrapped) == packets(path), json.dumps(text[:2000])
    joiner = NftJoiner if path in NFT_WHOLE else XtablesJoiner
    assert b"".join(unwrap([text.encode()], joiner(LINE_LIMIT))).count(b"\n") == text.count("\n") + (not text.endswith("\n"))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 900), max_size=6))
def test_chunks_never_change_what_xtables_monitor_lines_join_to(data, cuts):
    pieces = [XT_PACKET.encode(), wrap(XT_PACKET, 50).encode(), wrap(XT_RULE, 60).encode(), b"TRACE: 2", b"\r\n", b"-j"]
    data = b"\n".join([data, *pieces, data[:50]])
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    whole = b"".join(unwrap([data], XtablesJoiner(LINE_LIMIT)))
    assert b"".join(unwrap([data[a:b] for a, b in zip(bounds, bounds[1:])], XtablesJoiner(LINE_LIMIT))) == whole
    assert whole.count(b"\n") == data.count(b"\n") + (not data.endswith(b"\n"))
