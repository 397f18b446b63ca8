"""Probes and matrices without a lab: attribution of real traces to probes, results, matrices.

The traces in tests/fixtures/matrix/ are a 6×6 matrix (ICMP, then UDP to port 53) on the
local lab (3 legacy hosts, web1 and web2 on master, web3 on slave1), all 30 probes in one
collection window, as `chainlab matrix` took them.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from chainlab.errors import InputError
from chainlab.labstate import LabState
from chainlab.render.probe import print_matrix, print_probe
from chainlab.run.attribute import attribute, plan_waves
from chainlab.run.matrix import (Matrix, apply_expect, cell_of, check_expect_names, compare_with, deciding_rules,
                                 expect_service, expect_text, load_matrix, parse_expect, write_matrix)
from chainlab.run.outcome import ProbeResult, flows_of
from chainlab.run.probe import ProbeRequest, endpoint_names, plan_probe
from chainlab.trace.pipeline import AnalysisOptions, analyze
from chainlab.trace.reader import LogSource
from chainlab.trace.rules import parse_iptables_save

from ..conftest import FIXTURES

MATRIX = FIXTURES / "matrix"
STATE = LabState.model_validate(json.loads((MATRIX / "lab-state.json").read_text()))
ADDRESSES = {name: frozenset({str(host.address)}) for name, host in STATE.hosts.items()}


def host_of(name: str) -> str:
    return name if name in STATE.hosts else STATE.containers[name].host


def results(kind: str, protocol: str, port: int | None) -> list[ProbeResult]:
    rules = {n: parse_iptables_save((MATRIX / "rules" / f"{n}.rules").read_text()) for n in STATE.hosts}
    analysis = analyze([LogSource(MATRIX / kind / f"{n}.log.gz", n) for n in STATE.hosts], AnalysisOptions(rules=rules))
    names = endpoint_names(STATE)
    specs = [plan_probe(ProbeRequest(s, t, protocol, port), STATE) for s in names for t in names if s != t]  # type: ignore[arg-type]
    parts = attribute(analysis.packets, specs, ADDRESSES)
    assert sum(len(p) for p in parts) == len(analysis.packets) == len({id(p) for part in parts for p in part})
    # the fixtures hold no probe output: a probe got its answer when its reply reached the source
    return [ProbeResult(spec, 0 if any(p.direction == "reply" and p.node == spec.host for p in part) else 1,
                        "", part, flows_of(part, protocol)) for spec, part in zip(specs, parts)]


@pytest.mark.parametrize("kind,protocol,port", [("icmp", "icmp", None), ("udp-53", "udp", 53)])
def test_thirty_concurrent_probes_each_get_exactly_their_packets(kind, protocol, port):
    for r in results(kind, protocol, port):
        source, target = r.spec.request.source, r.spec.request.target
        blocked = source in STATE.hosts and target in STATE.containers and host_of(target) != source
        nodes = {host_of(source), host_of(target)}
        if blocked:
            seen = {(p.node, p.direction, p.verdict) for p in r.packets}
            assert seen == {(source, "request", "accepted"), (host_of(target), "request", "dropped")}, r.label
            assert r.dropped_at(node=host_of(target), chain="cali-tw-*", direction="request")
            assert "Drop if no profiles matched" in (r.drop.rule or "")
            assert r.decision.startswith(f"dropped on {host_of(target)}: filter:cali-tw-")
        else:
            assert {(p.node, p.direction) for p in r.packets} == {(n, d) for n in nodes for d in ("request", "reply")}, r.label
            assert {p.verdict for p in r.packets} == {"accepted"} and r.drop is None
            assert r.passed_through(*nodes) and r.passed_through(*nodes, direction="reply")
        # every echo / datagram was sent once: one packet per node and direction
        assert len(r.packets) == len({(p.node, p.direction) for p in r.packets})


def test_results_read_like_the_scenarios():
    by_label = {r.label: r for r in results("icmp", "icmp", None)}
    four = by_label["slave1 → web1 icmp"]  # scenario 4
    assert four.path("slave1") == ["OUTPUT", "POSTROUTING"] and four.path("master") == ["PREROUTING", "FORWARD"]
    assert four.path("master", "reply") == [] and four.nodes == ["slave1", "master"]
    assert not four.dropped_at(node="slave1") and not four.dropped_at(chain="cali-fw-*")
    assert four.dropped_at(node="master", chain="cali-tw-*", table="filter")
    assert "dropped on master: filter:cali-tw-" in repr(four)
    three = by_label["web1 → slave1 icmp"]  # scenario 3: masqueraded
    assert three.path("master") == ["PREROUTING", "FORWARD", "POSTROUTING"] and three.path("slave1") == ["PREROUTING", "INPUT"]
    assert any(n.startswith("SNAT on master: src 172.20.0.1 → ") for n in three.nat)
    assert three.decision == "reachable" and three.verdicts("master", "reply") == ["accepted"]
    assert three.paths("master", tables=None)[0][0] == "PREROUTING"


def test_decision_when_nothing_or_no_rule_explains_it():
    spec = plan_probe(ProbeRequest("web1", "web3"), STATE)
    assert ProbeResult(spec, 1, "", []).decision == "no packet of the probe was traced"
    unroutable = ProbeResult(spec, 2, "ping: connect: Network is unreachable\n\n", [])
    assert unroutable.decision == "no packet of the probe was traced (ping: connect: Network is unreachable)"
    request = next(r for r in results("icmp", "icmp", None) if r.label == "web1 → web3 icmp")
    only_requests = [p for p in request.packets if p.direction == "request"]
    assert ProbeResult(spec, 1, "", only_requests).decision == "no answer traced, and no rule dropped the request"


def test_packets_masqueraded_to_another_address_are_not_followed():
    """A source address that changed on the way links two nodes' packets only when it became
    the sending node's own address (else IP id 0, as of SYN-ACKs, would link strangers)."""
    icmp = results("icmp", "icmp", None)
    packets = [p for r in icmp for p in r.packets]
    specs = [r.spec for r in icmp]
    without_addresses = attribute(packets, specs, {})
    blocked = {r.label for r in icmp if r.drop}
    for spec, part in zip(specs, without_addresses):
        if spec.request.label in blocked or host_of(spec.request.source) == host_of(spec.request.target):
            continue
        masqueraded = spec.source.container is not None and spec.request.target in STATE.hosts
        # without knowing master's address, a masqueraded request is not followed to the target's node
        seen = {(p.node, p.direction) for p in part}
        assert ((host_of(spec.request.target), "request") in seen) != masqueraded, spec.request.label


def test_waves_only_for_icmp_probes_meeting_nft_hosts_or_sharing_a_masquerade():
    """ICMP probes go at once but for those meeting an nft host (one per capture) and those
    of two containers of one node to one target (web1 and web2 on master: apart)."""
    names = endpoint_names(STATE)
    specs = [plan_probe(ProbeRequest(s, t), STATE) for s in names for t in names if s != t]

    def apart(wave: list[int]) -> bool:
        pairs = [(specs[i].host, specs[i].target_address) for i in wave if specs[i].container]
        return len(pairs) == len(set(pairs))

    waves = plan_waves(specs, set())
    assert len(waves) == 2 and sorted(i for w in waves for i in w) == list(range(30)) and all(map(apart, waves))
    waves = plan_waves(specs, {"slave2"})
    assert len(waves) == 10 and sorted(i for w in waves for i in w) == list(range(30)) and all(map(apart, waves))
    for wave in waves:
        assert sum(1 for i in wave if "slave2" in (specs[i].host, specs[i].target.host)) <= 1
    tcp = [plan_probe(ProbeRequest(s, t, "tcp", 80), STATE) for s in names for t in names if s != t]
    assert len(plan_waves(tcp, {"slave2"})) == 1


# --- the matrix ---------------------------------------------------------------------------

def matrix_of(kind: str = "icmp") -> Matrix:
    rs = results(kind, "icmp", None)
    names = endpoint_names(STATE)
    return Matrix("ex", "icmp", names, names, [cell_of(r, f"cells/{r.spec.request.source}--{r.spec.request.target}/report.html")
                                               for r in rs], run_dir="20261201-144023-matrix-icmp")


def test_matrix_cells_and_deciding_rules():
    m = matrix_of()
    assert len(m.cells) == 30 and sum(not c.reachable for c in m.cells) == 6
    assert m.cell("web1", "web1") is None
    four = m.cell("slave1", "web1")
    assert four.drop["node"] == "master" and four.drop["chain"].startswith("cali-tw-") and four.drop["step"] == "rule 6"
    assert four.short == f"master filter:{four.drop['chain']} rule 6"
    rules = deciding_rules(m)
    assert [len(e["cells"]) for e in rules] == [2, 2, 2] and {e["drop"]["node"] for e in rules} == {"master", "slave1"}
    assert all("Drop if no profiles matched" in e["drop"]["rule"] for e in rules)


def test_matrix_json_round_trip_and_changes(tmp_path):
    m = matrix_of()
    write_matrix(tmp_path, m)
    again = load_matrix(tmp_path)
    assert again is not None and again.to_dict() == m.to_dict()
    doc = json.loads((tmp_path / "matrix.json").read_text())
    assert doc["version"] == 1 and {c["state"] for c in doc["cells"]} == {"reachable", "unreachable"}
    after = matrix_of()
    for name in ("web1", "web2"):  # what `profile allow net1 --from <slave1>/32` changes
        cell = after.cell("slave1", name)
        cell.reachable, cell.decision, cell.drop = True, "reachable", None
    compare_with(after, again)
    assert after.previous == "20261201-144023-matrix-icmp"
    assert [(c.source, c.target) for c in after.changes] == [("slave1", "web1"), ("slave1", "web2")]
    assert after.cell("slave1", "web1").previous.startswith("master filter:cali-tw-")
    restarted = matrix_of()  # web3's container restarted: its interface, so its chains, have a new name
    for cell in restarted.cells:
        if cell.drop is not None:
            cell.drop = {**cell.drop, "chain": re.sub(r"cali[0-9a-f]{11}", "cali0123456789a", cell.drop["chain"])}
    compare_with(restarted, again)
    assert not restarted.changes and any("cali0123456789a" in c.short for c in restarted.cells)
    assert (tmp_path / "nothing").mkdir() is None and load_matrix(tmp_path / "nothing") is None


def test_a_matrix_compares_with_the_newest_complete_one_and_names_the_partial_ones(tmp_path):
    """As a nightly does: a matrix killed before it finished is skipped, and said."""
    from chainlab.rundir import PARTIAL, create_run_dir, mark_complete
    from chainlab.run.matrix import find_previous

    older = create_run_dir(tmp_path, "ex", "-matrix-icmp")
    write_matrix(older, matrix_of())
    mark_complete(older)
    killed = create_run_dir(tmp_path, "ex", "-matrix-icmp")  # PARTIAL stays
    other = create_run_dir(tmp_path, "ex", "-matrix-tcp-80")  # another service: not named
    current = create_run_dir(tmp_path, "ex", "-matrix-icmp")
    previous, skipped = find_previous(tmp_path, current, matrix_of())
    assert previous is not None and skipped == [killed.name] and (killed / PARTIAL).exists() and other.name not in skipped


CYCLONUS = """\
# expected reachability of the Calico lab
+--------+--------+--------+--------+------+------+------+
| ICMP   | master | slave1 | slave2 | web1 | web2 | web3 |
+--------+--------+--------+--------+------+------+------+
| master | -      | .      | .      | .    | .    | X    |
| slave1 | .      | -      | .      | X    | X    | .    |
| slave2 | .      | .      | -      | X    | X    | X    |
| web1   | .      | .      | .      | -    | .    | .    |
| web2   | .      | .      | .      | .    | -    | .    |
| web3   | .      | .      | .      | .    | .    | -    |
+--------+--------+--------+--------+------+------+------+
"""


def test_expectations_as_cyclonus_prints_them():
    expected = parse_expect(CYCLONUS, "expect.txt")
    assert expected[("slave1", "web1")] is False and expected[("web1", "slave1")] is True
    assert expected[("master", "master")] is None and len(expected) == 36
    m = matrix_of()
    check_expect_names(expected, "expect.txt", set(endpoint_names(STATE)), "ex")
    apply_expect(m, expected, "expect.txt")
    assert m.passed is True and not m.failures
    m.cell("web3", "web1").expected = False
    assert m.passed is False and [(c.source, c.target) for c in m.failures] == [("web3", "web1")]


def test_a_matrix_reads_back_as_its_own_expectation():
    m = matrix_of()
    expected = parse_expect(expect_text(m), "expect.txt")
    assert {k: v for k, v in expected.items() if v is not None} == {(c.source, c.target): c.reachable for c in m.cells}
    assert expect_service(expect_text(m)) == m.service


def test_the_protocol_a_truth_tables_corner_names():
    """`matrix --expect` says so when the corner names another protocol than the one probed
    (the README's ICMP table checked against a tcp:80 matrix passed without a word)."""
    assert expect_service(CYCLONUS) == "icmp"
    assert expect_service(CYCLONUS.replace("| ICMP  ", "| tcp:80")) == "tcp/80"
    assert expect_service(CYCLONUS.replace("| ICMP  ", "| UDP/53")) == "udp/53"
    assert expect_service(CYCLONUS.replace("| ICMP  ", "| cells ")) is None  # a label of its own
    assert expect_service("  a  b\na  -  .\nb  .  -\n") is None  # no corner


def test_bad_expectations_name_file_line_and_cell():
    with pytest.raises(InputError) as bad:
        parse_expect("     a  b\na    -  y\nb    .\n", "e.txt")
    text = str(bad.value)
    assert "e.txt:2: a → b: 'y': expected '.'" in text and "e.txt:3: b: 1 cells, the header names 2 targets" in text
    with pytest.raises(InputError, match="expected a header"):
        parse_expect("# nothing\n", "e.txt")
    with pytest.raises(InputError, match="web9: not a host or container of lab ex"):
        check_expect_names({("web9", "web1"): True}, "e.txt", set(endpoint_names(STATE)), "ex")


def test_matrix_report_links_every_cell_to_its_walk(tmp_path):
    from chainlab.report.matrix import render_matrix_report

    m = matrix_of()
    m.previous, m.cell("slave1", "web1").previous = "20261201-100000-matrix-icmp", "reachable"
    html = render_matrix_report(tmp_path, m).read_text()
    assert html.count('data-state="reachable"') == 24 and html.count('data-state="unreachable"') == 6
    assert 'href="cells/slave1--web1/report.html#walks"' in html
    assert html.count('id="rule-') == 3 and "Drop if no profiles matched" in html
    assert "Changed since 20261201-100000-matrix-icmp" in html and "was: reachable" in html and "<script" not in html
    assert 'href="logs/"' in html and "waves/" not in html.split('id="evidence"')[1]
    m.waves = 2  # the evidence of each capture is under waves/N/: no link to a logs/ at the top
    html = render_matrix_report(tmp_path, m).read_text()
    evidence = html.split('id="evidence"')[1]
    assert 'href="logs/"' not in evidence and 'href="waves/1/logs/"' in evidence and 'href="waves/2/routes/"' in evidence


def test_terminal_table_has_every_unreachable_cells_rule():
    import io

    from rich.console import Console

    from chainlab.render.probe import print_matrix

    out = io.StringIO()
    print_matrix(Console(file=out, width=250, color_system=None), matrix_of())
    text = out.getvalue()
    assert text.count("✗") == 6 and text.count("✓") == 24
    assert text.count("[1]") == 3 and "24/30 reachable" in text
    assert "-A cali-tw-" in text and "Drop if no profiles matched" in text


def test_a_trace_that_ends_after_prerouting_is_lost_after_routing():
    import copy

    from chainlab.trace.analyze import judge

    blocked = next(r for r in results("icmp", "icmp", None) if r.label == "slave1 → web1 icmp")
    packets = copy.deepcopy(blocked.packets)
    on_master = next(p for p in packets if p.node == "master")
    on_master.steps = [s for s in on_master.steps if s.hook == "PREROUTING"]
    judge(on_master, parse_iptables_save((MATRIX / "rules" / "master.rules").read_text()).slots)
    assert on_master.verdict == "unknown"
    lost = ProbeResult(blocked.spec, 1, "", packets)
    assert lost.drop is None and lost.decision == "lost after routing on master (request)"


def test_a_probes_packet_seen_on_one_node_names_its_nat_with_the_node():
    """The published kube-proxy trace as a probe's only packet (host 172.28.129.2 to port 80 of
    cos74, which DNATs it to 52000): no flow, so the packet's own note, with its node, is the
    probe's NAT; the matrix traces' flows keep theirs."""
    from chainlab.run.probe import Place, ProbeSpec

    analysis = analyze([LogSource(FIXTURES / "public" / "kube-nodeport-port80-dnat-52000.log", "cos74")],
                       AnalysisOptions())
    spec = ProbeSpec(ProbeRequest("cos72", "cos74", "tcp", 80), Place("cos72", "cos72", "172.28.129.2"),
                     Place("cos74", "cos74", "172.28.129.4"), "172.28.129.4", (), "")
    result = ProbeResult(spec, 0, "", analysis.packets, flows_of(analysis.packets, "tcp"))
    assert result.flows == []
    assert result.nat == result.own_nat == ["DNAT on cos74: dst 172.28.129.4:80 → 172.28.129.4:52000"]
    out = io.StringIO()
    print_probe(Console(file=out, width=200), result)  # what `chainlab probe` prints
    assert "  DNAT on cos74: dst 172.28.129.4:80 → 172.28.129.4:52000\n" in out.getvalue()
    three = {r.label: r for r in results("icmp", "icmp", None)}["web1 → slave1 icmp"]
    assert three.own_nat == [] and three.nat


@pytest.mark.parametrize("address", ["0.0.0.0", "255.255.255.255", "224.0.0.1", "240.0.0.1"])
def test_a_probe_to_an_address_no_endpoint_can_have_is_refused(address):
    """It made a run dir and probed no one (a host's own loopback stays a fair question)."""
    from chainlab.run.probe import resolve

    with pytest.raises(InputError, match="is no address of one endpoint"):
        resolve(STATE, address, address_ok=True)
    assert resolve(STATE, "127.0.0.1", address_ok=True) == "127.0.0.1"


def test_a_pair_with_a_container_that_cannot_take_part_is_not_probed(tmp_path):
    """web3 stopped: its pairs are `?` cells saying why (in the table, matrix.html, matrix.json
    and expect.txt), never a check's FAIL or a change, and the matrix says how many."""
    from chainlab.report.matrix import render_matrix_report

    m = matrix_of()
    m.previous = "20261201-100000-matrix-icmp"
    why = "not probed: target container web3 on slave1 is exited, not running: run lab up"
    for cell in m.cells:
        if cell.target == "web3":
            cell.reachable, cell.decision, cell.drop, cell.report, cell.probed = False, why, None, None, False
            cell.previous = "reachable"
    assert len(m.not_probed) == 5 and not m.changes
    apply_expect(m, parse_expect(CYCLONUS, "expect.txt"), "expect.txt")
    assert all(c.ok is None for c in m.not_probed) and m.passed
    write_matrix(tmp_path, m)
    again = load_matrix(tmp_path)
    assert again is not None and [c.state for c in again.not_probed] == ["not probed"] * 5
    assert {c["state"] for c in json.loads((tmp_path / "matrix.json").read_text())["cells"]} == {
        "reachable", "unreachable", "not probed"}
    assert all(row.split()[-1] == "?" for row in expect_text(m).splitlines()[2:] if not row.startswith("web3"))
    html = render_matrix_report(tmp_path, m).read_text()
    assert html.count('data-state="not probed"') == 5 and "None#walks" not in html and "5 not probed" in html
    out = io.StringIO()
    print_matrix(Console(file=out, width=300), m)
    assert "? not probed: target container web3" in out.getvalue() and "reachable, 5 not probed in" in out.getvalue()
