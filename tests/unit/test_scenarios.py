"""Scenario files: the shipped ones load and agree with the inventory; bad ones fail cleanly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainlab.errors import InputError
from chainlab.inventory import load_inventory
from chainlab.scenario import Scenario, TcpProbe, find_scenario, load_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))

GOOD = """\
id: 9
title: t
source: {host: master}
target: {container: web1}
probe: {kind: ping}
outcome: reachable
expect:
  master:
    request: [OUTPUT, POSTROUTING]
    reply: [INPUT]
"""


def write(tmp_path: Path, text: str, name: str = "09-test.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list:
    with pytest.raises(InputError) as info:
        load_scenario(path)
    assert info.value.problems
    return info.value.problems


# --- the shipped scenarios ---------------------------------------------------------------

def test_there_are_seven_scenarios() -> None:
    assert len(FILES) == 7


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_scenario_loads_and_id_matches_file_name(path: Path) -> None:
    scenario = load_scenario(path)
    match = re.match(r"^(\d\d)-[a-z0-9-]+\.yaml$", path.name)
    assert match, path.name
    assert scenario.id == int(match.group(1))
    assert find_scenario(SCENARIOS, scenario.id) == path


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_scenario_refers_to_inventory_names(path: Path) -> None:
    inv = load_inventory(ROOT / "inventory.yaml")
    scenario = load_scenario(path)
    for endpoint in (scenario.source, scenario.target):
        if endpoint.host:
            assert endpoint.host in inv.hosts
        else:
            assert endpoint.container in inv.containers
    assert set(scenario.expect) <= set(inv.hosts)
    assert scenario.title


def test_ids_are_one_to_seven_and_unique() -> None:
    ids = [load_scenario(p).id for p in FILES]
    assert sorted(ids) == list(range(1, 8))


def test_reference_paths_of_scenarios_1_and_2() -> None:
    one = load_scenario(find_scenario(SCENARIOS, 1))
    assert one.expect["master"].request.hooks == ["OUTPUT", "POSTROUTING"]
    assert one.expect["master"].reply.hooks == ["INPUT"]
    two = load_scenario(find_scenario(SCENARIOS, 2))
    assert two.expect["master"].request.hooks == ["PREROUTING", "INPUT"]
    assert two.expect["master"].reply.hooks == ["OUTPUT"]


def test_scenario_4_expects_a_drop_in_cali_tw() -> None:
    four = load_scenario(find_scenario(SCENARIOS, 4))
    assert four.outcome == "unreachable"
    master = four.expect["master"]
    assert master.request.verdict == "dropped"
    assert master.request.drop_chain == "cali-tw-*"
    assert master.request.drop_chain_matches("cali-tw-cali1234abcd")
    assert not master.request.drop_chain_matches("cali-fw-cali1234abcd")
    assert not master.request.drop_chain_matches(None)
    assert master.reply.hooks == []  # `reply: none`


def test_scenario_7_uses_tcp_on_the_bridge() -> None:
    seven = load_scenario(find_scenario(SCENARIOS, 7))
    assert isinstance(seven.probe, TcpProbe) and seven.probe.kind == "tcp"
    assert seven.probe.port == 8080
    assert seven.network == "bridge"


def test_ping_scenarios_1_to_6_use_calico() -> None:
    for number in range(1, 7):
        scenario = load_scenario(find_scenario(SCENARIOS, number))
        assert scenario.probe.kind == "ping" and scenario.network == "calico"


def test_find_scenario_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected one file 42-"):
        find_scenario(SCENARIOS, 42)
    write(tmp_path, GOOD, "03-a.yaml")
    write(tmp_path, GOOD, "03-b.yaml")
    with pytest.raises(InputError, match="found 2"):
        find_scenario(tmp_path, 3)


# --- shorthand forms ----------------------------------------------------------------------

def test_path_shorthands(tmp_path: Path) -> None:
    text = GOOD.replace("reply: [INPUT]", "reply: none")
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.expect["master"].reply.hooks == []
    assert scenario.expect["master"].reply.verdict is None
    assert scenario.tables == ["nat", "filter"]
    assert scenario.probe.count == 1  # type: ignore[union-attr]


# --- errors -----------------------------------------------------------------------------

def test_typo_names_line_and_key_path(tmp_path: Path) -> None:
    found = problems(write(tmp_path, GOOD.replace("outcome:", "outcom:")))
    # both the unknown key and the then missing `outcome` are reported by one load
    assert {p.path for p in found} == {"outcom", "outcome"}
    problem = next(p for p in found if p.path == "outcom")
    assert problem.line == 6
    assert "unknown key" in problem.message and "`outcome`" in problem.message


def test_typo_inside_path_expectation(tmp_path: Path) -> None:
    text = GOOD.replace("    reply: [INPUT]", "    reply:\n      hooks: [INPUT]\n      verdit: accepted")
    [problem] = problems(write(tmp_path, text))
    assert problem.path == "expect.master.reply.verdit" and problem.line == 12
    assert "`verdict`" in problem.message


def test_typo_inside_probe_is_located_without_union_tag(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("probe: {kind: ping}", "probe: {kind: ping, cout: 3}")))
    assert problem.path == "probe.cout" and problem.line == 5
    assert "`count`" in problem.message


def test_tcp_without_port(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("{kind: ping}", "{kind: tcp}")))
    assert problem.path == "probe.port" and problem.line == 5


def test_unknown_probe_kind(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("{kind: ping}", "{kind: udp}")))
    assert problem.path == "probe" and "'udp'" in problem.message and "'tcp'" in problem.message


def test_bad_hook_name(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("[INPUT]", "[INPT]")))
    assert problem.path == "expect.master.reply.hooks[0]" and problem.line == 10
    assert "'INPT'" in problem.message and "INPUT" in problem.message


def test_bad_path_shorthand(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("reply: [INPUT]", "reply: nothing")))
    assert problem.path == "expect.master.reply" and problem.line == 10
    assert "`none`" in problem.message


@pytest.mark.parametrize(
    "source",
    ["{host: master, container: web1}", "{}"],
)
def test_endpoint_needs_exactly_one(tmp_path: Path, source: str) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("{host: master}", source, 1)))
    assert problem.path == "source" and problem.line == 3
    assert "exactly one" in problem.message and "Value error" not in problem.message


@pytest.mark.parametrize(
    "old, new, key_path",
    [
        ("{host: master}", '{host: "master;reboot"}', "source.host"),
        ("{container: web1}", '{container: "$(id)"}', "target.container"),
        ("  master:\n", '  "master x":\n', "expect.master x"),
    ],
)
def test_unsafe_names(tmp_path: Path, old: str, new: str, key_path: str) -> None:
    found = problems(write(tmp_path, GOOD.replace(old, new, 1)))
    assert key_path in [p.path for p in found]


@pytest.mark.parametrize(
    "old, new, key_path",
    [
        ("id: 9", "id: nine", "id"),
        ("id: 9", "id: 0", "id"),
        ("outcome: reachable", "outcome: maybe", "outcome"),
        ("probe: {kind: ping}", "probe: {kind: ping, count: 0}", "probe.count"),
        ("probe: {kind: ping}", "probe: {kind: tcp, port: 0}", "probe.port"),
        ("title: t", "title: ''", "title"),
        ("outcome: reachable", "outcome: reachable\ntables: [nat, filtr]", "tables[1]"),
    ],
)
def test_wrong_values(tmp_path: Path, old: str, new: str, key_path: str) -> None:
    found = problems(write(tmp_path, GOOD.replace(old, new)))
    assert key_path in [p.path for p in found]
    assert all(p.line is not None for p in found)


def test_expect_must_not_be_empty(tmp_path: Path) -> None:
    text = GOOD.split("expect:")[0] + "expect: {}\n"
    assert problems(write(tmp_path, text))[0].path == "expect"


def test_scenario_aliases_refused(tmp_path: Path) -> None:
    text = GOOD.replace("source: {host: master}", "source: &s {host: master}").replace(
        "target: {container: web1}", "target: *s"
    )
    assert "not allowed" in problems(write(tmp_path, text))[0].message


def test_missing_and_empty_scenario(tmp_path: Path) -> None:
    assert "cannot read" in problems(tmp_path / "none.yaml")[0].message
    assert "empty" in problems(write(tmp_path, ""))[0].message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(GOOD)), junk=st.text(max_size=12))
def test_fuzz_mangled_scenario(tmp_path: Path, cut: int, junk: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(GOOD[:cut] + junk + GOOD[cut:], encoding="utf-8", errors="surrogatepass")
    try:
        assert isinstance(load_scenario(path), Scenario)
    except InputError as exc:
        assert exc.problems


@pytest.mark.parametrize("change,key,said", [
    (("id: 9", "id: true"), "id", "integer"),
    (("id: 9", "id: 9.0"), "id", "integer"),
    (("id: 9", "id: 5"), "id", "the file name says 9"),
    (("target: {container: web1}", "target: {host: master}"), "target", "the target is the source"),
    (("outcome: reachable", "outcome: reachable\ntables: []"), "tables", "at least 1"),
    (("reply: [INPUT]", "reply: {hooks: [], verdict: dropped}"), "expect.master.reply", "no packet"),
    (("reply: [INPUT]", "reply: {hooks: [INPUT], verdict: accepted, drop_chain: cali-*}"), "expect.master.reply",
     "verdict dropped"),
])
def test_a_scenario_that_contradicts_itself_or_its_name_is_refused(tmp_path: Path, change: tuple[str, str],
                                                                    key: str, said: str) -> None:
    found = problems(write(tmp_path, GOOD.replace(*change)))
    assert any(p.path.startswith(key) and said in p.message for p in found), found


def test_names_the_inventory_does_not_have_are_said_before_connecting() -> None:
    scenario = load_scenario(SCENARIOS / "03-container-to-other-node.yaml")
    assert scenario.unknown_names(["master", "slave1", "slave2"], ["web1", "web2", "web3"]) == []
    assert sorted(scenario.unknown_names(["master", "slave2"], ["web2"])) == [
        "container web1 is not a container of the inventory", "host slave1 is not a host of the inventory"]
