"""The inventory: which hosts, how to reach them, what the lab puts on them."""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from chainlab.names import ContainerName, HostName, ImageName, NetworkName, SafePath, UserName
from chainlab.validation import LocatedValueError, validate_document
from chainlab.yamlfile import load_yaml

DEFAULT_INVENTORY = "inventory.yaml"
INVENTORY_ENV = "CHAINLAB_INVENTORY"
_IP = TypeVar("_IP")
_URL = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+-]*)?$"


def _not_a_number(value: Any) -> Any:
    """YAML reads `pool: 5` or `pool: true` as numbers, which ipaddress would take as
    0.0.0.5: an address must be written out."""
    if isinstance(value, (bool, int, float)):
        raise ValueError("expected an address written out, e.g. 10.231.91.195 or 172.20.0.0/16")
    return value


#: An IPv4 address, network or interface that must be written in dotted form.
Dotted = Annotated[_IP, BeforeValidator(_not_a_number)]


def _url(value: str) -> str:
    if not re.fullmatch(_URL, value):
        raise ValueError("expected an http(s) URL of letters, digits and ._~%/+- (no query, no spaces)")
    return value


#: A download URL that reaches a remote command (checked, then quoted anyway).
HttpUrl = Annotated[str, AfterValidator(_url)]


class Strict(BaseModel):
    """Base for every file-backed model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SshSettings(Strict):
    user: UserName = "root"
    port: int = Field(22, ge=1, le=65535)
    key: SafePath | None = Field(None, description="private key file")
    known_hosts: SafePath | None = None
    connect_timeout: float = Field(10.0, gt=0, le=300)


class Host(Strict):
    address: Dotted[IPv4Address]
    roles: list[Literal["master", "worker", "etcd"]] = Field(default_factory=list)
    os: Literal["centos7", "rhel8", "debian12", "ubuntu22", "unknown"] = "unknown"
    iptables: Literal["auto", "legacy", "nft"] = "auto"
    trace_backend: Literal["auto", "rsyslog", "ulogd", "nft-monitor"] = "auto"
    trace_log: SafePath = "/var/log/iptables.log"


class EtcdTLSSettings(Strict):
    """Client-certificate TLS for an etcd that requires it (the local lab's always does)."""

    ca: SafePath = Field(description="CA certificate that signed etcd's server certificate")
    cert: SafePath = Field(description="client certificate")
    key: SafePath = Field(description="client key")


class EtcdSettings(Strict):
    host: HostName
    port: int = Field(2379, ge=1, le=65535)
    tls: EtcdTLSSettings | None = None


class ImageSettings(Strict):
    name: ImageName = "mybusybox"
    source: Literal["build", "tarball"] = "build"
    dockerfile: str = "lab/Dockerfile.j2"
    base: ImageName = Field("nginx", description="the Dockerfile's FROM (template variable `base`)")
    tarball: str | None = None


CalicoMode = Literal["emulate", "existing", "install"]


class CalicoInstall(Strict):
    """`calico.mode: install`: what `calicoctl node run` starts (Calico 2.x, as the reference)."""

    node_image: ImageName = "calico/node:v2.6.12"
    calicoctl_url: HttpUrl = Field("https://github.com/projectcalico/calicoctl/releases/download/v1.6.12/calicoctl",
                                   description="where the hosts download calicoctl from if they lack it")


class CalicoSettings(Strict):
    network: NetworkName = "net1"
    pool: Dotted[IPv4Network] = IPv4Network("172.20.0.0/16")
    nat_outgoing: bool = True
    driver: Literal["calico", "bridge"] = "calico"
    mode: CalicoMode | None = Field(
        None, description="emulate (chainlab's daemon; default where chainlab builds the hosts), existing"
                          " (Calico already runs; default elsewhere) or install (calicoctl node run)")
    install: CalicoInstall = CalicoInstall()


class Container(Strict):
    host: HostName
    network: NetworkName | None = None
    image: ImageName | None = None
    publish: dict[int, int] = Field(default_factory=dict, description="host port -> container port")


class LocalSettings(Strict):
    """Only for `provider: local`: how the lab is built on this machine."""

    lan: Dotted[IPv4Interface] = Field(description="the machine's end of the management link, with prefix")
    state_dir: SafePath = "/var/lib/chainlab/local"


class Inventory(Strict):
    lab: HostName = "lab"
    provider: Literal["ssh", "local"] = "ssh"
    ssh: SshSettings = SshSettings()
    hosts: dict[HostName, Host]
    etcd: EtcdSettings | None = None
    image: ImageSettings = ImageSettings()
    calico: CalicoSettings = CalicoSettings()
    containers: dict[ContainerName, Container] = Field(default_factory=dict)
    local: LocalSettings | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> "Inventory":
        if not self.hosts:
            raise LocatedValueError(("hosts",), "at least one host is needed")
        known = ", ".join(sorted(self.hosts))
        if self.etcd and self.etcd.host not in self.hosts:
            raise LocatedValueError(
                ("etcd", "host"), f"{self.etcd.host!r} is not one of the hosts ({known})"
            )
        for name, container in self.containers.items():
            if container.host not in self.hosts:
                raise LocatedValueError(
                    ("containers", name, "host"), f"{container.host!r} is not one of the hosts ({known})"
                )
        seen: dict[IPv4Address, str] = {}
        for name, host in self.hosts.items():
            if host.address in seen:
                raise LocatedValueError(
                    ("hosts", name, "address"), f"{host.address} is already the address of {seen[host.address]}"
                )
            seen[host.address] = name
        from chainlab.providers import provider_class

        provider_class(self.provider).validate_inventory(self)
        if self.calico.driver == "calico" and self.calico_mode == "emulate" and not provider_class(
                self.provider).builds_hosts:
            raise LocatedValueError(
                ("calico", "mode"),
                f"mode emulate runs chainlab's Calico emulation on the hosts, which provider {self.provider}"
                " does not build: use existing (Calico already runs there) or install (calicoctl node run)")
        return self

    @property
    def calico_mode(self) -> CalicoMode:
        """`calico.mode`, or its default: emulate where chainlab builds the hosts, else existing."""
        if self.calico.mode is not None:
            return self.calico.mode
        from chainlab.providers import provider_class

        return "emulate" if provider_class(self.provider).builds_hosts else "existing"

    def container_image(self, name: str) -> str:
        return self.containers[name].image or self.image.name

    def container_network(self, name: str) -> str:
        return self.containers[name].network or self.calico.network


def resolve_inventory_path(option: str | None) -> Path:
    """`-i/--inventory`, else $CHAINLAB_INVENTORY, else ./inventory.yaml."""
    return Path(option or os.environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY)


def load_inventory(path: Path) -> Inventory:
    return validate_document(Inventory, load_yaml(path))
