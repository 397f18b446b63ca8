"""The Calico 2.x emulation's rendering: the rules the templates produce (pure)."""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv4Network

import pytest

from chainlab.calico import datastore as D
from chainlab.calico.apply import ipset_input, restore_input, saved_state
from chainlab.calico.rules import (
    JUMPS, dataplane, dispatch, render, render_cleanup, rule_lines, rule_match, tag_ipset,
)

POOL = IPv4Network("172.20.0.0/16")


def endpoint_id(container: str) -> str:
    """A stand-in for the 64-hex endpoint id Docker gives a container's network endpoint."""
    return hashlib.sha256(container.encode()).hexdigest()


def tree(*endpoints: tuple[str, str, str], profile: dict | None = None, masq: bool = True) -> dict[str, str]:
    items = {D.pool_key(POOL): D.dumps(D.pool_value(POOL, masq))}
    prof = profile or D.network_profile("net1")
    for part, key in D.profile_keys("net1").items():
        items[key] = D.dumps(prof[part])
    for host, container_id, address in endpoints:
        eid = endpoint_id(container_id)
        items[D.endpoint_key(host, eid)] = D.dumps(
            D.endpoint_value(D.interface_name(eid), IPv4Address(address), "net1"))
    items[D.host_ip_key("master")] = "10.0.0.1"
    items[D.host_ip_key("slave1")] = "10.0.0.2"
    items["/calico/ipam/v2/host/master/ipv4/block/172.20.0.0-26"] = ""
    items["/calico/ipam/v2/host/slave1/ipv4/block/172.20.0.64-26"] = ""
    return items


def lines(text: str, chain: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


LAB = tree(("master", "web1", "172.20.0.1"), ("master", "web2", "172.20.0.2"), ("slave1", "web3", "172.20.0.65"))


def iface(container: str) -> str:
    return D.interface_name(endpoint_id(container))


def test_endpoint_chains_as_felix_builds_them() -> None:
    text = render(dataplane(D.parse_tree(LAB), "master"))
    tw = lines(text, f"cali-tw-{iface('web1')}")
    assert tw == [
        f"-A cali-tw-{iface('web1')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A cali-tw-{iface('web1')} -m conntrack --ctstate INVALID -j DROP",
        f"-A cali-tw-{iface('web1')} -j MARK --set-xmark 0x0/0x1000000",
        f"-A cali-tw-{iface('web1')} -j cali-pri-net1",
        f"-A cali-tw-{iface('web1')} -m mark --mark 0x1000000/0x1000000 -m comment"
        ' --comment "Return if profile accepted" -j RETURN',
        f'-A cali-tw-{iface("web1")} -m comment --comment "Drop if no profiles matched" -j DROP',
    ]
    assert f"-A cali-fw-{iface('web1')} -j cali-pro-net1" in text
    assert f"cali-tw-{iface('web3')}" not in text  # slave1's workload: not master's chains


def test_profile_chains_inbound_from_tag_only() -> None:
    text = render(dataplane(D.parse_tree(LAB), "master"))
    assert lines(text, "cali-pri-net1") == [
        "-A cali-pri-net1 -m set --match-set cali4-s:net1 src -j MARK --set-xmark 0x1000000/0x1000000",
        "-A cali-pri-net1 -m mark --mark 0x1000000/0x1000000 -j RETURN",
    ]
    assert lines(text, "cali-pro-net1") == [
        "-A cali-pro-net1 -j MARK --set-xmark 0x1000000/0x1000000",
        "-A cali-pro-net1 -m mark --mark 0x1000000/0x1000000 -j RETURN",
    ]


def test_tag_ipset_has_every_hosts_members_and_pools() -> None:
    model = dataplane(D.parse_tree(LAB), "slave1")
    assert model.ipset_members["cali4-s:net1"] == ["172.20.0.1", "172.20.0.2", "172.20.0.65"]
    assert model.ipset_members["cali4-masq-ipam-pools"] == ["172.20.0.0/16"]
    assert model.ipset_members["cali4-all-ipam-pools"] == ["172.20.0.0/16"]
    assert model.routes == {"172.20.0.0/26": "10.0.0.1"}  # other hosts' blocks, via them
    assert dataplane(D.parse_tree(LAB), "master").routes == {"172.20.0.64/26": "10.0.0.2"}


def test_nat_outgoing_and_raw_marks() -> None:
    text = render(dataplane(D.parse_tree(LAB), "master"))
    nat = text.split("*nat")[1].split("COMMIT")[0]
    assert ("-A cali-nat-outgoing -m set --match-set cali4-masq-ipam-pools src"
            " -m set ! --match-set cali4-all-ipam-pools dst -j MASQUERADE") in nat
    assert "-A cali-POSTROUTING -j cali-fip-snat\n-A cali-POSTROUTING -j cali-nat-outgoing" in nat
    raw = text.split("*raw")[1].split("COMMIT")[0]
    assert "-i cali+ -m comment --comment \"Mark packets from workloads\" -j MARK --set-xmark 0x4000000/0x4000000" in raw
    no_masq = render(dataplane(D.parse_tree(tree(masq=False)), "master"))
    assert "MASQUERADE" not in no_masq


def test_builtin_jumps_and_tables() -> None:
    text = render(dataplane(D.parse_tree(LAB), "master"))
    assert [line for line in text.splitlines() if line.startswith("*")] == ["*raw", "*nat", "*filter"]
    assert text.count("COMMIT") == 3
    for table, builtin, target in JUMPS:
        section = text.split(f"*{table}")[1].split("COMMIT")[0]
        assert f"-I {builtin} 1 -j {target}" in section
    for chain in ("cali-INPUT", "cali-OUTPUT", "cali-FORWARD", "cali-wl-to-host", "cali-from-host-endpoint",
                  "cali-to-host-endpoint", "cali-from-wl-dispatch", "cali-to-wl-dispatch", "cali-fip-dnat",
                  "cali-fip-snat", "cali-PREROUTING", "cali-POSTROUTING"):
        assert f":{chain} - [0:0]" in text
    assert '-A cali-INPUT -i cali+ -m comment --comment "Jump to workload-to-host chain" -g cali-wl-to-host' in text
    assert '-A cali-OUTPUT -o cali+ -m comment --comment "Return if to workload" -j RETURN' in text


def test_dispatch_tree_splits_by_next_character() -> None:
    two = dispatch("cali-from-wl-dispatch", "-i", "fw", ["cali282b0776936", "calid0f2a1b3c4e"])
    assert two.children == (("cali2+", "cali-from-wl-dispatch-2"), ("calid+", "cali-from-wl-dispatch-d"))
    assert two.leaves["cali-from-wl-dispatch-2"] == (("cali282b0776936", "cali-fw-cali282b0776936"),)
    one = dispatch("cali-to-wl-dispatch", "-o", "tw", ["cali282b0776936"])
    assert one.children == () and one.leaves == {"cali-to-wl-dispatch": (("cali282b0776936", "cali-tw-cali282b0776936"),)}
    text = render(dataplane(D.parse_tree(tree(("slave1", "web3", "172.20.0.65"))), "slave1"))
    w3 = iface("web3")
    assert lines(text, "cali-to-wl-dispatch") == [
        f"-A cali-to-wl-dispatch -o {w3} -g cali-tw-{w3}",
        '-A cali-to-wl-dispatch -m comment --comment "Unknown interface" -j DROP',
    ]


@pytest.mark.parametrize(("rule", "expected"), [
    ({"action": "allow", "src_tag": "net1"}, "-m set --match-set cali4-s:net1 src"),
    ({"action": "allow", "src_net": "10.231.94.196/32"}, "-s 10.231.94.196/32"),
    ({"action": "allow", "protocol": "tcp", "dst_ports": [80, "8000-8080"]}, "-p tcp -m multiport --dports 80,8000:8080"),
    ({"action": "deny", "!src_net": "10.0.0.0/8", "protocol": "icmp", "icmp_type": 8},
     "-p icmp ! -s 10.0.0.0/8 -m icmp --icmp-type 8"),
    ({"action": "allow"}, ""),
])
def test_rule_match(rule: dict, expected: str) -> None:
    assert rule_match(rule) == expected


def test_rule_actions() -> None:
    assert rule_lines({"action": "deny", "src_net": "1.2.3.4/32"}) == ["-s 1.2.3.4/32 -j DROP"]
    assert rule_lines({"action": "next-tier"})[0] == "-j MARK --set-xmark 0x2000000/0x2000000"
    with pytest.raises(ValueError):
        rule_lines({"action": "teleport"})


def test_allow_from_address_renders_in_pri_chain() -> None:
    profile = D.network_profile("net1")
    profile["rules"]["inbound_rules"].append({"action": "allow", "src_net": "10.231.94.196/32"})
    text = render(dataplane(D.parse_tree(tree(("master", "web1", "172.20.0.1"), profile=profile)), "master"))
    assert "-A cali-pri-net1 -s 10.231.94.196/32 -j MARK --set-xmark 0x1000000/0x1000000" in text


def test_long_names_are_hashed_within_limits() -> None:
    assert len(tag_ipset("a-very-long-tag-name-for-a-network")) <= 31
    profile = D.network_profile("a-very-long-network-name-indeed")
    assert len(dataplane(D.parse_tree({}), "x").chains["filter"][0]) <= 28
    assert profile["tags"] == ["a-very-long-network-name-indeed"]


SAVE = """\
*raw
:PREROUTING ACCEPT [0:0]
:cali-PREROUTING - [0:0]
-A PREROUTING -j cali-PREROUTING
COMMIT
*filter
:FORWARD DROP [0:0]
:cali-FORWARD - [0:0]
:cali-tw-caliold0000000 - [0:0]
-A FORWARD -j cali-FORWARD
COMMIT
"""


def test_restore_input_inserts_only_missing_jumps_and_deletes_stale_chains() -> None:
    existing, present = saved_state(SAVE)
    assert existing == {"raw": ["cali-PREROUTING"], "filter": ["cali-FORWARD", "cali-tw-caliold0000000"]}
    assert present == [("raw", "PREROUTING", "cali-PREROUTING"), ("filter", "FORWARD", "cali-FORWARD")]
    text = restore_input(dataplane(D.parse_tree(LAB), "master"), SAVE)
    assert "-I PREROUTING 1 -j cali-PREROUTING\n" not in text.split("*nat")[0]
    assert "-I FORWARD 1 -j cali-FORWARD" not in text
    assert "-I INPUT 1 -j cali-INPUT" in text
    assert ":cali-tw-caliold0000000 - [0:0]" in text and "-X cali-tw-caliold0000000" in text
    cleanup = render_cleanup(existing, present)
    assert "-D FORWARD -j cali-FORWARD" in cleanup and "-X cali-tw-caliold0000000" in cleanup


def test_ipset_input_swaps_atomically() -> None:
    model = dataplane(D.parse_tree(LAB), "master")
    text = ipset_input(model, existing={"cali4-s:net1", "cali4-tmp-2"})
    assert "create cali4-s:net1" not in text
    assert "create cali4-all-ipam-pools hash:net family inet" in text
    assert "flush cali4-tmp-2" in text  # left by an interrupted run
    assert "add cali4-tmp-2 172.20.0.65\nswap cali4-tmp-2 cali4-s:net1\ndestroy cali4-tmp-2" in text
