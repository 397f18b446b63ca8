"""Values from etcd are untrusted: invalid ones are skipped at parse time, never rendered."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainlab.calico import datastore as D
from tests.unit.test_calico_rules import endpoint_id
from chainlab.calico import validate as V
from chainlab.calico.agent import _warn_skipped
from chainlab.calico.apply import ipset_input
from chainlab.calico.rules import dataplane, render
from tests.unit.test_calico_rules import LAB, iface, tree

INJECT = "\n-A INPUT -j ACCEPT"
ALLOW_80 = {"action": "allow", "protocol": "tcp", "dst_ports": [80]}


def with_inbound(*rules: object) -> dict[str, str]:
    profile = D.network_profile("net1")
    profile["rules"]["inbound_rules"] += list(rules)
    return tree(("master", "web1", "172.20.0.1"), profile=profile)


@pytest.mark.parametrize("bad", [
    {"action": "allow", "protocol": "tcp" + INJECT},
    {"action": "allow", "!protocol": "udp " + INJECT},
    {"action": "allow", "protocol": 256},
    {"action": "allow", "src_net": "10.0.0.0/8" + INJECT},
    {"action": "allow", "dst_net": ["10.0.0.0/8"]},
    {"action": "allow", "src_tag": "net1" + INJECT},
    {"action": "allow", "!dst_tag": "a b"},
    {"action": "allow", "protocol": "tcp", "dst_ports": ["80" + INJECT]},
    {"action": "allow", "protocol": "tcp", "src_ports": [0]},
    {"action": "allow", "protocol": "tcp", "dst_ports": ["90:80"]},
    {"action": "allow", "protocol": "tcp", "dst_ports": [True]},
    {"action": "allow", "dst_ports": [80]},  # iptables needs a protocol for ports
    {"action": "allow", "protocol": "icmp", "icmp_type": "8" + INJECT},
    {"action": "allow", "protocol": "icmp", "icmp_type": 8, "icmp_code": 300},
    {"action": "allow", "icmp_type": 8},
    {"action": "teleport"},
    {"action": ["allow"]},
    {"action": "allow", "src_net": "10.0.0.0/8", "!src_net": "10.1.0.0/16"},
    "allow everything",
])
def test_invalid_rule_is_skipped_and_the_rest_renders(bad: object) -> None:
    snap = D.parse_tree(with_inbound(bad, ALLOW_80))
    assert snap.profiles["net1"].inbound == ({"action": "allow", "src_tag": "net1"}, ALLOW_80)
    assert len(snap.skipped) == 1 and snap.skipped[0].startswith("profile net1 inbound_rules[1]: ")
    assert "\n" not in snap.skipped[0]  # the value is quoted with repr: one log line
    text = render(dataplane(snap, "master"))
    assert "-A INPUT" not in text and "teleport" not in text
    assert "-A cali-pri-net1 -p tcp -m multiport --dports 80 -j MARK --set-xmark 0x1000000/0x1000000" in text
    assert "-A cali-pri-net1 -m set --match-set cali4-s:net1 src -j MARK" in text


JSON = st.recursive(st.none() | st.booleans() | st.integers(-1, 70000) | st.floats(allow_nan=False) | st.text(),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
                    max_leaves=6)
RULE_FIELDS = ("action", "protocol", "!protocol", "src_net", "!dst_net", "src_tag", "!dst_tag", "src_ports",
               "!dst_ports", "icmp_type", "icmp_code")
OURS = ("*raw", "*nat", "*filter", ":cali-", "-A cali-", "-I ", "-X cali-", "COMMIT")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(RULE_FIELDS), JSON | st.sampled_from(["tcp", "icmp", "net1", "10.0.0.0/8"])))
def test_any_rule_json_renders_without_error_or_foreign_lines(rule: dict) -> None:
    model = dataplane(D.parse_tree(with_inbound(rule)), "master")
    text = render(model) + ipset_input(model, set())
    restore, ipsets = text.split("COMMIT\n")[:3], text.split("COMMIT\n")[3]
    assert all(line.startswith(OURS) for part in restore for line in part.splitlines())
    assert all(line.split(" ", 1)[0] in ("create", "flush", "add", "swap", "destroy") for line in ipsets.splitlines())


@pytest.mark.parametrize("good", [
    {"action": "deny", "!protocol": 6, "icmp_type": None},
    {"action": "allow", "protocol": "udp", "src_ports": [53, "1000:2000", "3000-4000"], "dst_net": "10.0.0.1/8"},
    {"action": "log", "protocol": "icmp", "icmp_type": 8, "icmp_code": 0, "!dst_tag": "other.net_1"},
    {"protocol": "sctp", "dst_ports": "80"},
])
def test_valid_rules_are_kept(good: dict) -> None:
    snap = D.parse_tree(with_inbound(good))
    assert snap.skipped == [] and snap.profiles["net1"].inbound[-1] == good


def test_invalid_endpoint_is_skipped_others_still_apply() -> None:
    items = dict(LAB)
    eid = endpoint_id("evil")
    for field, value in (("name", "cali1" + INJECT), ("profile_ids", ["net1" + INJECT]),
                         ("ipv4_nets", ["172.20.0.9/32" + INJECT])):
        ep = D.endpoint_value(D.interface_name(eid), IPv4Address("172.20.0.9"), "net1")
        ep[field] = value
        items[D.endpoint_key("master", eid)] = D.dumps(ep)
        snap = D.parse_tree(items)
        assert [e.id for e in snap.endpoints] == sorted(endpoint_id(c) for c in ("web1", "web2", "web3"))
        assert len(snap.skipped) == 1 and repr(eid)[1:-1] in snap.skipped[0]
        model = dataplane(snap, "master")
        text = render(model) + ipset_input(model, set())
        assert "-A INPUT" not in text and "172.20.0.9" not in text and "evil" not in text
        assert f"-A cali-tw-{iface('web1')} -j cali-pri-net1" in text


def test_invalid_profile_name_tags_pools_blocks_and_host_ips_are_skipped() -> None:
    items = dict(LAB)
    items["/calico/v1/policy/profile/bad name/tags"] = '["x"]'
    items[D.profile_keys("net1")["tags"]] = D.dumps(["net1", "a\nb"])
    items["/calico/v1/ipam/v4/pool/10.0.0.1-8"] = D.dumps({"cidr": "10.0.0.1/8"})  # host bits set
    items["/calico/ipam/v2/host/slave2/ipv4/block/172.20.1.0-99"] = ""
    items[D.host_ip_key("slave2")] = "10.0.0.3 via 1.2.3.4"
    snap = D.parse_tree(items)
    assert set(snap.profiles) == {"net1"} and snap.profiles["net1"].tags == ("net1",)
    assert len(snap.skipped) == 5 and snap.skipped[-1].startswith("profile net1 tags: tag 'a\\nb' is not")
    assert [p["cidr"] for p in snap.pools] == ["172.20.0.0/16"]
    assert snap.blocks == {"172.20.0.0/26": "master", "172.20.0.64/26": "slave1"}
    assert snap.host_ips == {"master": "10.0.0.1", "slave1": "10.0.0.2"}


@pytest.mark.parametrize(("value", "ok"), [
    ("cali0123456789a", True), ("cali0123456789ab", False), ("eth0 ", False), ("", False), (5, False)])
def test_interface_names(value: object, ok: bool) -> None:
    if ok:
        assert V.iface(value) == value
    else:
        with pytest.raises(V.Invalid):
            V.iface(value)


def test_name_rejects_trailing_newline() -> None:
    with pytest.raises(V.Invalid):
        V.name("net1\n")


def test_agent_warns_once_per_skipped_entry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="felix-lite")
    warned = _warn_skipped(["profile net1 inbound_rules[1]: x"], set())
    warned = _warn_skipped(["profile net1 inbound_rules[1]: x", "'/calico/k': y"], warned)
    assert [r.getMessage() for r in caplog.records] == [
        "skipped invalid etcd entry: profile net1 inbound_rules[1]: x", "skipped invalid etcd entry: '/calico/k': y"]
    assert warned == {"profile net1 inbound_rules[1]: x", "'/calico/k': y"}
