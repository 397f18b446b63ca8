"""Docker's network plugin API as Calico 2.x's libnetwork plugin answers it (emulated).

Calico 2.x shipped, for Docker, a libnetwork *remote* network driver `calico` and IPAM driver
`calico-ipam` (projectcalico/libnetwork-plugin v1.1, run inside calico/node). dockerd finds
them through the legacy plugin discovery (`/run/docker/plugins/<name>.sock`) and calls them
over HTTP (`POST /NetworkDriver.Join`, JSON in and out). This module holds the answers, with
the same behaviour as that plugin (see `chainlab.calico.plugin_server` for the sockets):

- `GetCapabilities` declares scope **global**, as Calico 2.x did: a network made on one host is
  seen by every dockerd through Docker's cluster store (`dockerd --cluster-store etcd://...`).
- `RequestPool`: no sub-pools or options; `--subnet` must be a Calico pool in etcd; the pool's
  gateway is the dummy `0.0.0.0/0` (so Docker asks for no gateway address); `CreateNetwork`
  refuses any other IPAM (its gateway is not that dummy) and any driver option.
- `RequestAddress`/`ReleaseAddress`: a /32 from the host's affine blocks (`chainlab.calico.ipam`).
- `CreateEndpoint`: the network's profile (tag = name, inbound from the tag, outbound allowed)
  if absent, then the workload endpoint in etcd; the container MAC `EE:EE:EE:EE:EE:EE`.
- `Join`: a veth pair `cali<11 chars of the endpoint id>` / `temp<11>`; Docker moves the temp
  end into the container and names it `cali0`; gateway 169.254.1.1 with a connected /32 route
  to it. Felix (here felix-lite) then adds the host route and proxy ARP.
- `Leave` deletes the host side; `DeleteEndpoint` the endpoint; `DeleteNetwork` nothing.

Everything that reaches a command or a key is validated first (ids are Docker's hex ids).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Protocol

from chainlab.calico import datastore as D
from chainlab.calico import ipam
from chainlab.calico import validate as V
from chainlab.calico.etcdlib import etcd
from chainlab.calico.sockets import NETWORK_DRIVER

SCOPE = "global"
POOL_ID_V4 = "CalicoPoolIPv4"
LOCAL_ADDRESS_SPACE = "CalicoLocalAddressSpace"
GLOBAL_ADDRESS_SPACE = "CalicoGlobalAddressSpace"
DUMMY_GATEWAY = "0.0.0.0/0"
NEXT_HOP = "169.254.1.1"
FIXED_MAC = "EE:EE:EE:EE:EE:EE"
CONTAINER_PREFIX = "cali"  # Docker names the container end cali0
TEMP_PREFIX = "temp"
KNOWN_OPTIONS = {"com.docker.network.enable_ipv6"}
DOCKER_ID = re.compile(r"[0-9a-f]{12,64}")


class PluginError(Exception):
    """An answer `{"Err": message}`: Docker shows the message to whoever ran the command."""


class Links(Protocol):
    """The host's links, as far as the plugin touches them."""

    def create_veth(self, host_side: str, temp_side: str) -> None: ...

    def delete(self, name: str) -> bool: ...


def _docker_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not DOCKER_ID.fullmatch(value):
        raise PluginError(f"{what} {value!r} is not a Docker id")
    return value


def host_interface(endpoint_id: str) -> str:
    return D.interface_name(endpoint_id)


def temp_interface(endpoint_id: str) -> str:
    return TEMP_PREFIX + endpoint_id[:11]


def _option_set(value: Any) -> bool:
    """Whether Docker passed an option that asks for something (a true flag, a non-empty map)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return bool(value)
    return value not in (None, "")


def _pools(client: etcd.Client) -> list[IPv4Network]:
    items, _ = D.read_tree(client, f"{D.ROOT}/v1/ipam/v4/pool")
    snapshot = D.parse_tree(items)
    return [IPv4Network(p["cidr"]) for p in snapshot.pools if not p.get("disabled")]


@dataclass
class Plugin:
    """The two drivers' answers for one host. `network_name` asks Docker for a network's name
    (the plugin inspects the network, as Calico's did, to name the profile after it)."""

    client: etcd.Client
    host: str
    links: Links
    network_name: Callable[[str], str]

    # --- shared -----------------------------------------------------------------------

    def activate(self, kind: str) -> dict[str, Any]:
        return {"Implements": [kind]}

    # --- NetworkDriver ------------------------------------------------------------------

    def get_capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Scope": SCOPE}

    def create_network(self, request: dict[str, Any]) -> dict[str, Any]:
        for key, value in sorted((request.get("Options") or {}).items()):
            if key not in KNOWN_OPTIONS and _option_set(value):
                flags = ", ".join(sorted(value)) if isinstance(value, dict) else key
                raise PluginError(f"Calico driver does not support the flag(s) {flags}.")
        for data in request.get("IPv4Data") or []:
            if data.get("Gateway") != DUMMY_GATEWAY:
                raise PluginError("Non-Calico IPAM driver is used")
        if request.get("IPv6Data"):
            raise PluginError("IPv6 is not supported by chainlab's Calico emulation")
        return {}

    def delete_network(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}

    def create_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = _docker_id(request.get("EndpointID"), "endpoint id")
        network_id = _docker_id(request.get("NetworkID"), "network id")
        interface = request.get("Interface") or {}
        if not interface.get("Address"):
            raise PluginError("No address assigned for endpoint")
        try:
            address = IPv4Interface(interface["Address"]).ip
        except ValueError:
            raise PluginError(f"Parsing {interface['Address']!r} as CIDR failed") from None
        user_mac = interface.get("MacAddress") or ""
        try:
            name = V.name(self.network_name(network_id), "network name")
        except V.Invalid as exc:
            raise PluginError(str(exc)) from None
        profile = D.network_profile(name)
        for part, key in D.profile_keys(name).items():
            D.write_if_absent(self.client, key, D.dumps(profile[part]))
        value = D.endpoint_value(host_interface(endpoint_id), address, name, user_mac or FIXED_MAC)
        self.client.write(D.endpoint_key(self.host, endpoint_id), D.dumps(value))
        return {"Interface": {"MacAddress": "" if user_mac else FIXED_MAC}}

    def delete_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = _docker_id(request.get("EndpointID"), "endpoint id")
        try:
            self.client.delete(D.endpoint_key(self.host, endpoint_id))
        except etcd.EtcdKeyNotFound:
            pass
        return {}

    def endpoint_oper_info(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Value": {}}

    def join(self, request: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = _docker_id(request.get("EndpointID"), "endpoint id")
        host_side, temp_side = host_interface(endpoint_id), temp_interface(endpoint_id)
        self.links.create_veth(host_side, temp_side)
        return {
            "InterfaceName": {"SrcName": temp_side, "DstPrefix": CONTAINER_PREFIX},
            "Gateway": NEXT_HOP,
            "StaticRoutes": [{"Destination": f"{NEXT_HOP}/32", "RouteType": 1, "NextHop": ""}],
        }

    def leave(self, request: dict[str, Any]) -> dict[str, Any]:
        self.links.delete(host_interface(_docker_id(request.get("EndpointID"), "endpoint id")))
        return {}

    def nothing(self, _: dict[str, Any]) -> dict[str, Any]:
        """DiscoverNew/DiscoverDelete, external connectivity, swarm allocation: not used."""
        return {}

    # --- IpamDriver ---------------------------------------------------------------------

    def ipam_capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"RequiresMACAddress": False}

    def default_address_spaces(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE, "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE}

    def request_pool(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("SubPool"):
            raise PluginError("Calico IPAM does not support sub pool configuration on 'docker create network'."
                              " Calico IP Pools should be configured first and IP assignment is from those"
                              " pre-configured pools.")
        if request.get("Options"):
            raise PluginError("Arbitrary options are not supported")
        if request.get("V6"):
            raise PluginError("IPv6 is not supported by chainlab's Calico emulation")
        pool, pool_id = "0.0.0.0/0", POOL_ID_V4
        if request.get("Pool"):
            try:
                wanted = IPv4Network(request["Pool"])
            except ValueError:
                raise PluginError("Invalid CIDR") from None
            if wanted not in _pools(self.client):
                raise PluginError("The requested subnet must match the CIDR of a configured Calico IP Pool.")
            pool = pool_id = str(wanted)
        return {"PoolID": pool_id, "Pool": pool, "Data": {"com.docker.network.gateway": DUMMY_GATEWAY}}

    def release_pool(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}

    def request_address(self, request: dict[str, Any]) -> dict[str, Any]:
        if (request.get("Options") or {}).get("RequestAddressType") == "com.docker.network.gateway":
            raise PluginError("Calico IPAM does not support specifying a gateway.")
        if request.get("Address"):
            try:
                address = IPv4Address(request["Address"])
            except ValueError:
                raise PluginError(f"invalid address {request['Address']!r}") from None
            ipam.assign_ip(self.client, self.host, address)
            return {"Address": f"{address}/32", "Data": {}}
        pools = _pools(self.client)
        pool_id = request.get("PoolID")
        if pool_id != POOL_ID_V4:
            try:
                wanted = IPv4Network(pool_id)
            except ValueError:
                raise PluginError(f"Invalid CIDR - {pool_id}") from None
            if wanted not in pools:
                raise PluginError("The network references a Calico pool which has been deleted. Please"
                                  " re-instate the Calico pool before using the network.")
            pools = [wanted]
        if not pools:
            raise PluginError("no Calico IP pool is configured")
        return {"Address": f"{ipam.auto_assign(self.client, self.host, pools)}/32", "Data": {}}

    def release_address(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            address = IPv4Address(request.get("Address"))
        except ValueError:
            raise PluginError(f"invalid address {request.get('Address')!r}") from None
        ipam.release_address(self.client, address)
        return {}

    # --- dispatch -------------------------------------------------------------------------

    def routes(self, kind: str) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """URL path (`/NetworkDriver.Join`) -> handler, for the driver `kind` a socket serves."""
        common = {"/Plugin.Activate": lambda _: self.activate(kind)}
        if kind == NETWORK_DRIVER:
            handlers = {
                "GetCapabilities": self.get_capabilities, "CreateNetwork": self.create_network,
                "DeleteNetwork": self.delete_network, "CreateEndpoint": self.create_endpoint,
                "DeleteEndpoint": self.delete_endpoint, "EndpointOperInfo": self.endpoint_oper_info,
                "Join": self.join, "Leave": self.leave, "DiscoverNew": self.nothing,
                "DiscoverDelete": self.nothing, "ProgramExternalConnectivity": self.nothing,
                "RevokeExternalConnectivity": self.nothing, "AllocateNetwork": self.nothing,
                "FreeNetwork": self.nothing,
            }
        else:
            handlers = {
                "GetCapabilities": self.ipam_capabilities, "GetDefaultAddressSpaces": self.default_address_spaces,
                "RequestPool": self.request_pool, "ReleasePool": self.release_pool,
                "RequestAddress": self.request_address, "ReleaseAddress": self.release_address,
            }
        return common | {f"/{kind}.{name}": fn for name, fn in handlers.items()}
