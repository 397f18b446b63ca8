"""Trace logs whose spacing a web page or a copy changed: read as the kernel wrote them (trace/respace.py).

The engines' agreement on such logs is tested in test_native_engine.py (respaced copies of
fixtures); here the rules themselves, which real formats they leave alone, and a published
repost that lost its spaces.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from chainlab.trace.pipeline import AnalysisOptions, analyze
from chainlab.trace.reader import LogSource, log_format
from chainlab.trace.respace import CARRY_LIMIT, needs_respace, respace, respaced

from ..conftest import FIXTURES

RECORD = ("Dec  2 10:00:01 master kernel: [ 12.5] TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= PHYSIN=veth1"
          " SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=7 DF PROTO=ICMP TYPE=8 CODE=0 ID=5"
          " SEQ=1 UID=0 GID=0\n")


@pytest.mark.parametrize("changed", [
    RECORD.replace(" ", "\u00a0"),  # a web page's non-breaking spaces, the syslog day's padding too
    RECORD.replace(" ", "\t"),
    RECORD.replace(" ", "\u202f").replace("TRACE:", "TRACE:\u200b"),
    RECORD.replace("TRACE: ", "TRACE:   "),
    RECORD.replace("TRACE: ", "TRACE:"),
    RECORD.replace("policy:2 IN=", "policy:2IN="),
    RECORD.replace("Dec  2 10:", "Dec  210:"),
    RECORD.replace("Dec  2 10:", "Dec 210:"),
    RECORD.replace("LEN=84 TOS", "LEN=84TOS").replace("TTL=64 ID", "TTL=64ID").replace("CODE=0 ID=5 SEQ",
                                                                                         "CODE=0ID=5SEQ"),
    RECORD.replace("IN=eth0 OUT=", "IN=eth0OUT="),
])
def test_a_changed_record_is_read_as_written(changed):
    assert needs_respace(changed.encode())
    assert respaced(changed.encode()).decode() == RECORD


@pytest.mark.parametrize("kept", [
    RECORD,
    RECORD.replace("policy:2 IN=", "policy:2  IN="),  # ulogd writes two spaces there
    "Dec 12 10:00:01 master kernel: TRACE: 2 e37a7e41 raw:PREROUTING:rule:0x2:CONTINUE  -4 -t raw -A PREROUTING\n",
    'trace id 4cc0afaa ip filter INPUT packet: iif "wg1" ip saddr 10.1.1.4 ip id 10304\n',
    "Apr 18 11:50:23 host kernel: TRACE: filter:INPUT:rule:1 IN=eth0 OUT= PHYSIN=br0 PHYSOUT=x UID=5 GID=6\n",
])
def test_what_a_log_writes_is_left_alone(kept):
    """Two spaces where ulogd and xtables-monitor write them, a syslog day's padding, keys that
    end in another key's name (PHYSIN, UID): unchanged, and no sign of a changed copy."""
    assert not needs_respace(kept.encode())
    assert respaced(kept.encode()).decode() == kept


def test_no_captured_or_published_log_is_respaced_but_the_changed_copies():
    """The signs never fire on the formats as tools write them: of every log in the fixtures
    only kmille's dmesg (a tab before `CODE=0`, as its source has it) and the repost that lost
    its spaces are read respaced."""
    respaced_logs = set()
    for path in sorted(FIXTURES.rglob("*.log*")):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        if needs_respace(data[: 64 << 10]):
            respaced_logs.add(path.relative_to(FIXTURES).as_posix())
    assert respaced_logs == {"public/kmille-dmesg-T-icmp-output.log",
                             "public/openstack-repost-glued-spaces-postrouting-accept.log"}


def test_chunks_are_respaced_at_line_ends():
    """A non-breaking space and a glued header split over chunk boundaries are still whole
    when respaced; a line longer than CARRY_LIMIT goes on in pieces (memory stays flat)."""
    text = RECORD.replace(" ", "\u00a0").replace("policy:2\u00a0IN=", "policy:2IN=").encode() * 3
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
    out = list(respace(pieces))
    assert b"".join(out).decode() == RECORD * 3 and all(chunk.endswith(b"\n") for chunk in out)
    long = [b"x" * (CARRY_LIMIT // 2)] * 5 + [b"\n"]
    assert max(len(chunk) for chunk in respace(long)) <= CARRY_LIMIT + CARRY_LIMIT // 2


def test_the_repost_that_lost_its_spaces():
    """The published repost (tests/fixtures/README.md): glued day, header and fields. Read
    respaced it is the author's one ping, undamaged, through PREROUTING, FORWARD's policy and
    POSTROUTING, where rule 1 of quantum-l3-agent-POSTROUTING (an ACCEPT) is its last step;
    before, no record was read at all."""
    log = FIXTURES / "public" / "openstack-repost-glued-spaces-postrouting-accept.log"
    assert log_format(log) == "kernel+respaced"
    result = analyze([LogSource(log)], AnalysisOptions())
    (packet,) = result.packets
    assert (packet.node, packet.hooks, packet.verdict) == (
        "openstack-network", ["PREROUTING", "FORWARD", "POSTROUTING"], "accepted")
    last = packet.steps[-1]
    assert (last.table, last.chain, last.kind, last.position) == ("nat", "quantum-l3-agent-POSTROUTING", "rule", 1)
    assert (packet.fields.ip_id, packet.fields.icmp_id, packet.fields.icmp_seq) == (0, 28976, 1)
    assert packet.steps[0].time == "Apr 18 11:50:23"
    assert result.stats.skipped_lines == 0 and packet.repaired_lines == 0 and not packet.fields.damaged


def test_a_line_cut_inside_its_table_is_not_called_headerless(tmp_path):
    """A post cut at a fixed column inside `TRACE: raw:...`: the next line starts `w:PREROUTING:...`,
    which putting `TRACE: ` back would not mend: no such note."""
    log = tmp_path / "cut.log"
    log.write_text("Dec  2 10:00:01 master kernel: [ 12.5] TRACE: ra\nw:PREROUTING:policy:2 IN=eth0 OUT= SRC=10.0.0.1"
                   " DST=10.0.0.2 LEN=84 TTL=64 ID=7 PROTO=ICMP TYPE=8 CODE=0 ID=5 SEQ=1\n")
    chainlab = Path(sys.executable).parent / "chainlab"
    proc = subprocess.run([chainlab, "analyze", str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "note: no packet trace in 2 lines" in proc.stderr
    assert "was cut off" not in proc.stderr
