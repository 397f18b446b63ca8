"""The libnetwork plugin's answers, against a real etcd (v2 API) on loopback and over its real
unix-socket HTTP server; only the host's links are a stand-in (the lab tests use real ones)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import etcd
import pytest

from chainlab.calico import datastore as D
from chainlab.calico import ipam
from chainlab.calico.plugin import FIXED_MAC, Plugin, PluginError
from chainlab.calico.plugin_server import remove_sockets, serve
from chainlab.calico.sockets import IPAM_DRIVER, NETWORK_DRIVER, socket_paths
from chainlab.networks.calico import etcdtree

pytestmark = pytest.mark.integration

POOL = IPv4Network("172.20.0.0/16")
NET_ID = "a" * 64
EP_ID = "0123456789abcdef" * 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not shutil.which("etcd"):
        pytest.skip("etcd (Debian etcd-server) is not installed: make deps")
    client_port, peer_port = _free_port(), _free_port()
    data = tmp_path_factory.mktemp("etcd")
    proc = subprocess.Popen(
        ["etcd", "--name", "t", "--data-dir", str(data / "d"), "--enable-v2",
         "--listen-client-urls", f"http://127.0.0.1:{client_port}",
         "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"t=http://127.0.0.1:{peer_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                etcd.Client(port=client_port).version
                break
            except Exception:
                assert time.monotonic() < deadline, "etcd did not start"
                time.sleep(0.1)
        yield client_port
    finally:
        proc.terminate()
        proc.wait(10)


class FakeLinks:
    def __init__(self) -> None:
        self.made: list[tuple[str, str]] = []
        self.deleted: list[str] = []

    def create_veth(self, host_side: str, temp_side: str) -> None:
        self.made.append((host_side, temp_side))

    def delete(self, name: str) -> bool:
        self.deleted.append(name)
        return True


@pytest.fixture
def plugin(etcd_server: int) -> Iterator[Plugin]:
    client = etcd.Client(port=etcd_server)
    etcdtree.create_pool(client, POOL, True)
    yield Plugin(client, "master", FakeLinks(), lambda network_id: "net1")
    try:
        client.delete("/calico", recursive=True, dir=True)
    except etcd.EtcdKeyNotFound:
        pass


def test_capabilities_and_address_spaces(plugin: Plugin) -> None:
    assert plugin.get_capabilities({}) == {"Scope": "global"}  # as Calico 2.x declared
    assert plugin.default_address_spaces({}) == {"LocalDefaultAddressSpace": "CalicoLocalAddressSpace",
                                                 "GlobalDefaultAddressSpace": "CalicoGlobalAddressSpace"}


def test_pool_must_be_a_calico_pool(plugin: Plugin) -> None:
    answer = plugin.request_pool({"Pool": "172.20.0.0/16", "SubPool": "", "Options": {}, "V6": False})
    assert answer == {"PoolID": "172.20.0.0/16", "Pool": "172.20.0.0/16",
                      "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
    assert plugin.request_pool({})["PoolID"] == "CalicoPoolIPv4"
    for bad, message in (({"Pool": "10.9.0.0/16"}, "must match the CIDR"), ({"SubPool": "172.20.1.0/24"}, "sub pool"),
                         ({"Options": {"x": "y"}}, "options"), ({"Pool": "nonsense"}, "Invalid CIDR")):
        with pytest.raises(PluginError, match=message):
            plugin.request_pool(bad)


def test_create_network_refuses_options_and_other_ipam(plugin: Plugin) -> None:
    good = {"NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": False,
                                             "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "CalicoGlobalAddressSpace", "Pool": "172.20.0.0/16",
                          "Gateway": "0.0.0.0/0"}]}
    assert plugin.create_network(good) == {}
    with pytest.raises(PluginError, match="does not support the flag"):
        plugin.create_network({**good, "Options": {"com.docker.network.generic": {"mtu": "1400"}}})
    with pytest.raises(PluginError, match="Non-Calico IPAM"):
        plugin.create_network({**good, "IPv4Data": [{"Gateway": "172.20.0.1/16"}]})


def test_addresses_come_from_host_affine_blocks_and_go_back(plugin: Plugin) -> None:
    first = plugin.request_address({"PoolID": "172.20.0.0/16", "Address": "", "Options": None})["Address"]
    second = plugin.request_address({"PoolID": "CalicoPoolIPv4", "Address": ""})["Address"]
    assert first.endswith("/32") and second.endswith("/32") and first != second
    a = IPv4Address(first.split("/")[0])
    assert a in POOL
    affinity = plugin.client.read(ipam.affinity_dir("master"))
    assert [leaf.key.rsplit("/", 1)[1] for leaf in affinity.leaves] == [D.cidr_key(ipam.block_of(a))]
    assert plugin.request_address({"PoolID": "172.20.0.0/16", "Address": "172.20.9.9"}) == {
        "Address": "172.20.9.9/32", "Data": {}}
    with pytest.raises(Exception, match="already assigned"):
        plugin.request_address({"PoolID": "172.20.0.0/16", "Address": "172.20.9.9"})
    with pytest.raises(PluginError, match="gateway"):
        plugin.request_address({"PoolID": "172.20.0.0/16",
                                "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    assert plugin.release_address({"PoolID": "172.20.0.0/16", "Address": str(a)}) == {}
    block = json.loads(plugin.client.read(ipam.block_key(ipam.block_of(a))).value)
    assert a not in ipam.allocated(block)
    plugin.release_address({"PoolID": "172.20.0.0/16", "Address": str(a)})  # twice: no error


def test_endpoint_join_leave_delete(plugin: Plugin) -> None:
    answer = plugin.create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID,
                                     "Interface": {"Address": "172.20.0.7/32", "MacAddress": ""}})
    assert answer == {"Interface": {"MacAddress": FIXED_MAC}}
    endpoint = json.loads(plugin.client.read(D.endpoint_key("master", EP_ID)).value)
    assert endpoint["name"] == "cali0123456789a" and endpoint["ipv4_nets"] == ["172.20.0.7/32"]
    assert endpoint["profile_ids"] == ["net1"] and endpoint["mac"] == "ee:ee:ee:ee:ee:ee"
    assert json.loads(plugin.client.read(D.profile_keys("net1")["tags"]).value) == ["net1"]  # made with it
    joined = plugin.join({"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": "/x"})
    assert joined["InterfaceName"] == {"SrcName": "temp0123456789a", "DstPrefix": "cali"}
    assert joined["Gateway"] == "169.254.1.1"
    assert joined["StaticRoutes"] == [{"Destination": "169.254.1.1/32", "RouteType": 1, "NextHop": ""}]
    assert plugin.links.made == [("cali0123456789a", "temp0123456789a")]  # type: ignore[attr-defined]
    assert plugin.leave({"NetworkID": NET_ID, "EndpointID": EP_ID}) == {}
    assert plugin.links.deleted == ["cali0123456789a"]  # type: ignore[attr-defined]
    assert plugin.delete_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID}) == {}
    with pytest.raises(etcd.EtcdKeyNotFound):
        plugin.client.read(D.endpoint_key("master", EP_ID))
    with pytest.raises(PluginError, match="not a Docker id"):
        plugin.join({"EndpointID": "../../etc; rm -rf /"})
    with pytest.raises(PluginError, match="No address"):
        plugin.create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {}})


def _post(path: Path, call: str, body: object) -> tuple[int, dict]:
    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(path))

    conn = Conn("localhost", timeout=10)
    conn.request("POST", call, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_sockets_answer_docker_over_http(plugin: Plugin, tmp_path: Path) -> None:
    servers = serve(plugin, str(tmp_path))
    try:
        network, ipam_socket = socket_paths(str(tmp_path))
        assert oct(network.stat().st_mode & 0o777) == "0o600"
        assert _post(network, "/Plugin.Activate", {}) == (200, {"Implements": [NETWORK_DRIVER]})
        assert _post(ipam_socket, "/Plugin.Activate", {}) == (200, {"Implements": [IPAM_DRIVER]})
        assert _post(network, "/NetworkDriver.GetCapabilities", {}) == (200, {"Scope": "global"})
        status, answer = _post(ipam_socket, "/IpamDriver.RequestPool", {"Pool": "10.0.0.0/8"})
        assert status == 500 and "Calico IP Pool" in answer["Err"]
        assert _post(ipam_socket, "/NetworkDriver.Join", {})[0] == 404  # the IPAM socket is IPAM only
        # its body is read before the answer (a client still sending it got a broken pipe)
        assert _post(ipam_socket, "/NetworkDriver.Join", {"pad": "x" * 500_000})[0] == 404
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        remove_sockets(str(tmp_path))
    assert not any(p.exists() for p in socket_paths(str(tmp_path)))


def test_etcd_tree_back_to_its_baseline(plugin: Plugin) -> None:
    client = plugin.client
    baseline, _ = etcdtree.tree(client)  # the pool only
    plugin.request_address({"PoolID": "CalicoPoolIPv4"})
    plugin.create_endpoint({"NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": "172.20.0.9/32"}})
    leaves, dirs = etcdtree.tree(client)
    assert len(leaves) > len(baseline)
    assert etcdtree.restore(client, baseline) == len(leaves) - len(baseline)
    assert etcdtree.tree(client)[0] == baseline
    assert etcdtree.tree(client)[1] == {"/calico", "/calico/v1", "/calico/v1/ipam", "/calico/v1/ipam/v4",
                                        "/calico/v1/ipam/v4/pool"}
