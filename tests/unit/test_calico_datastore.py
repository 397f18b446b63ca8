"""The Calico 2.x v1 etcd layout the emulation reads and writes (keys and values, pure)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

from chainlab.calico import datastore as D
from tests.unit.test_calico_rules import endpoint_id
from chainlab.calico import ipam


def test_keys() -> None:
    assert D.pool_key(IPv4Network("172.20.0.0/16")) == "/calico/v1/ipam/v4/pool/172.20.0.0-16"
    assert D.profile_keys("net1") == {
        "rules": "/calico/v1/policy/profile/net1/rules",
        "tags": "/calico/v1/policy/profile/net1/tags",
        "labels": "/calico/v1/policy/profile/net1/labels",
    }
    assert D.endpoint_key("master", "abc") == "/calico/v1/host/master/workload/libnetwork/libnetwork/endpoint/abc"
    assert D.host_ip_key("slave1") == "/calico/bgp/v1/host/slave1/ip_addr_v4"
    net = IPv4Network("172.20.0.64/26")
    assert ipam.block_key(net) == "/calico/ipam/v2/assignment/ipv4/block/172.20.0.64-26"
    assert ipam.affinity_key("slave1", net) == "/calico/ipam/v2/host/slave1/ipv4/block/172.20.0.64-26"
    assert ipam.block_of(IPv4Address("172.20.0.77")) == net


def test_values() -> None:
    assert D.pool_value(IPv4Network("172.20.0.0/16"), True) == {
        "cidr": "172.20.0.0/16", "ipam": True, "masquerade": True, "disabled": False}
    profile = D.network_profile("net1")
    assert profile["rules"] == {"inbound_rules": [{"action": "allow", "src_tag": "net1"}],
                                "outbound_rules": [{"action": "allow"}]}
    assert profile["tags"] == ["net1"] and profile["labels"] == {}
    eid = endpoint_id("0123abcd")
    assert len(eid) == 64 and endpoint_id("0123abcd") == eid
    iface = D.interface_name(eid)
    assert iface == "cali" + eid[:11] and len(iface) == 15
    ep = D.endpoint_value(iface, IPv4Address("172.20.0.1"), "net1")
    assert ep["mac"] == "ee:ee:ee:ee:ee:ee" and ep["ipv4_nets"] == ["172.20.0.1/32"]
    assert ep["profile_ids"] == ["net1"] and ep["state"] == "active" and ep["name"] == iface


def test_parse_tree_round_trip_and_bad_values() -> None:
    eid = endpoint_id("c1")
    items = {
        D.pool_key("172.20.0.0/16"): D.dumps(D.pool_value(IPv4Network("172.20.0.0/16"), True)),
        D.endpoint_key("master", eid): D.dumps(
            D.endpoint_value(D.interface_name(eid), IPv4Address("172.20.0.1"), "net1")),
        D.endpoint_key("master", "broken"): "{not json",
        **{k: D.dumps(v) for k, v in zip(D.profile_keys("net1").values(), D.network_profile("net1").values())},
        D.host_ip_key("master"): "10.0.0.1",
        "/calico/ipam/v2/host/master/ipv4/block/172.20.0.0-26": "",
    }
    snap = D.parse_tree(items)
    assert [e.id for e in snap.endpoints] == [eid]
    assert snap.profiles["net1"].tags == ("net1",)
    assert snap.profiles["net1"].inbound == ({"action": "allow", "src_tag": "net1"},)
    assert snap.host_ips == {"master": "10.0.0.1"} and snap.blocks == {"172.20.0.0/26": "master"}
    assert snap.pools[0]["masquerade"] is True


def test_block_assign_and_release() -> None:
    block = ipam.new_block(IPv4Network("172.20.0.64/26"), "slave1")
    assert block["affinity"] == "host:slave1" and len(block["allocations"]) == 64
    first, second = ipam.assign(block), ipam.assign(block)
    assert (first, second) == (IPv4Address("172.20.0.65"), IPv4Address("172.20.0.66"))
    assert block["attributes"] == [ipam.NO_HANDLE]  # libnetwork hands over no handle: one shared entry
    assert ipam.allocated(block) == [first, second]
    assert ipam.release(block, first) and not ipam.release(block, first)
    assert ipam.allocated(block) == [second]
    assert ipam.assign_address(block, IPv4Address("172.20.0.64"))  # a given address, even ordinal 0
    assert not ipam.assign_address(block, second)
    json.dumps(block)  # stays JSON
    while ipam.assign(block) is not None:
        pass
    assert len(ipam.allocated(block)) == 64  # ordinal 0 only because it was asked for


def test_parse_tree_leaves_out_invalid_endpoints():
    base = "/calico/v1/host/master/workload/libnetwork/libnetwork/endpoint"
    items = {
        f"{base}/good": json.dumps({"name": "caligood", "ipv4_nets": ["172.20.1.2/32"], "profile_ids": ["net1"]}),
        f"{base}/bad": json.dumps({"name": "cali bad\n", "ipv4_nets": ["x"], "profile_ids": ["net1"]}),
        f"{base}/other": json.dumps({"name": "caliother", "ipv4_nets": ["172.20.1.3/32"], "profile_ids": ["net2"]}),
        f"{base}/garbled": "{not json",
    }
    assert [e.id for e in D.parse_tree(items).endpoints if "net1" in e.profiles] == ["good"]
