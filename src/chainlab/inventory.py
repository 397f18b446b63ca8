"""The inventory: which hosts, how to reach them, what the lab puts on them."""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from chainlab.errors import InputError, Problem
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
#: A TCP/UDP port: an integer as written (YAML's `true` or `80.0` is no port).
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]


def _reachable(address: IPv4Address) -> IPv4Address:
    """A host's address: one a machine can be reached at (not 0.0.0.0, loopback, multicast
    or reserved, which includes 255.255.255.255: they would name this machine or no one)."""
    for test, what in ((address.is_unspecified, "the unspecified address"), (address.is_loopback, "a loopback address"),
                       (address.is_multicast, "a multicast address"), (address.is_reserved, "a reserved address")):
        if test:
            raise ValueError(f"{address} is {what}: a host's address is one it is reached at")
    return address


#: Directories a trace log must not be in: rsyslog would append the kernel's lines to
#: whatever file is named there.
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr")


def _log_file(path: str) -> str:
    if path.endswith("/") or Path(path).name in ("", ".") or any(
            path == d or path.startswith(d + "/") for d in SYSTEM_DIRS):
        raise ValueError(f"{path} is no place for a log file: give a file name, e.g. /var/log/iptables.log"
                         f" (not in {', '.join(SYSTEM_DIRS)})")
    return path


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
    port: Port = 22
    key: SafePath | None = Field(None, description="private key file")
    known_hosts: SafePath | None = None
    connect_timeout: float = Field(10.0, gt=0, le=300)


class Host(Strict):
    address: Annotated[Dotted[IPv4Address], AfterValidator(_reachable)]
    roles: list[Literal["master", "worker", "etcd"]] = Field(default_factory=list)
    os: Literal["centos7", "rhel8", "debian12", "ubuntu22", "unknown"] = "unknown"
    iptables: Literal["auto", "legacy", "nft"] = "auto"
    trace_backend: Literal["auto", "rsyslog", "ulogd", "nft-monitor"] = "auto"
    trace_log: Annotated[SafePath, AfterValidator(_log_file)] = "/var/log/iptables.log"


class EtcdTLSSettings(Strict):
    """Client-certificate TLS for an etcd that requires it (the local lab's always does)."""

    ca: SafePath = Field(description="CA certificate that signed etcd's server certificate")
    cert: SafePath = Field(description="client certificate")
    key: SafePath = Field(description="client key")


class EtcdSettings(Strict):
    host: HostName
    port: Port = 2379
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
    publish: dict[Port, Port] = Field(default_factory=dict, description="host port -> container port")


class LocalSettings(Strict):
    """Only for `provider: local`: how the lab is built on this machine."""

    lan: Dotted[IPv4Interface] = Field(description="the machine's end of the management link, with prefix")
    state_dir: SafePath = "/var/lib/chainlab/local"


class QemuSettings(Strict):
    """Only for `provider: qemu`: the VMs `chainlab vm up` boots on this machine."""

    lan: Dotted[IPv4Interface] = Field(description="the machine's end of the management link, with prefix")
    state_dir: SafePath = "/var/lib/chainlab/vm"
    image_dir: SafePath = Field("/var/cache/chainlab/vm", description="built VM images, shared by every VM lab")
    memory: int = Field(768, ge=384, le=8192, description="MiB of guest memory per VM")
    cpus: int = Field(1, ge=1, le=8)
    accel: Literal["auto", "kvm", "tcg"] = Field("auto", description="auto: KVM if a probe boots under it, else TCG")


class Inventory(Strict):
    lab: HostName = "lab"
    provider: Literal["ssh", "local", "qemu"] = "ssh"
    ssh: SshSettings = SshSettings()
    hosts: dict[HostName, Host]
    etcd: EtcdSettings | None = None
    image: ImageSettings = ImageSettings()
    calico: CalicoSettings = CalicoSettings()
    containers: dict[ContainerName, Container] = Field(default_factory=dict)
    local: LocalSettings | None = None
    qemu: QemuSettings | None = None

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
        self._check_containers()
        self._check_pool()
        from chainlab.providers import provider_class

        provider_class(self.provider).validate_inventory(self)
        if self.calico.driver == "calico" and self.calico_mode == "emulate" and not provider_class(
                self.provider).builds_hosts:
            raise LocatedValueError(
                ("calico", "mode"),
                f"mode emulate runs chainlab's Calico emulation on the hosts, which provider {self.provider}"
                " does not build: use existing (Calico already runs there) or install (calicoctl node run)")
        return self

    def _check_containers(self) -> None:
        """A container is no host (probe and matrix name both), and two containers of a host
        do not publish the same port of it."""
        published: dict[tuple[str, int], str] = {}
        for name, container in self.containers.items():
            if name in self.hosts:
                raise LocatedValueError(("containers", name), f"{name} is also a host of the lab: rename one")
            if container.publish and self.calico.driver != "bridge":
                raise LocatedValueError(("containers", name, "publish"),
                                        "published ports are for calico.driver bridge (Docker's port mapping)")
            for port in container.publish:
                other = published.setdefault((container.host, port), name)
                if other != name:
                    raise LocatedValueError(("containers", name, "publish"),
                                            f"port {port} of {container.host} is already published by {other}")

    def _check_pool(self) -> None:
        """The containers' pool is a network of their own: room for them, and none of the
        hosts' addresses in it."""
        pool = self.calico.pool
        if pool.prefixlen < 8 or pool.num_addresses - 2 < max(len(self.containers), 1):
            raise LocatedValueError(("calico", "pool"), f"{pool} is no pool for the lab's containers: give a"
                                                        " network of /8 to /30, e.g. 172.20.0.0/16")
        for name, host in self.hosts.items():
            if host.address in pool:
                raise LocatedValueError(("calico", "pool"), f"{pool} holds {name}'s address {host.address}:"
                                                            " the containers' pool must be a network of its own")

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
    """`-i/--inventory`, else $CHAINLAB_INVENTORY, else ./inventory.yaml. An empty `-i` is
    refused: taken as not given, it fell back to ./inventory.yaml (real VMs)."""
    if option is not None and not option.strip():
        raise InputError([Problem("-i/--inventory", "", "an empty path: give the inventory file (e.g. -i lab/local.yaml)")])
    return Path(option or os.environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY)


def load_inventory(path: Path) -> Inventory:
    try:
        return validate_document(Inventory, load_yaml(path))
    except InputError as exc:
        if path == Path(DEFAULT_INVENTORY) and not path.exists():  # neither -i nor CHAINLAB_INVENTORY
            exc.problems.append(Problem(str(path), "", "no -i given and CHAINLAB_INVENTORY unset: give the"
                                                       " inventory, e.g. -i lab/local.yaml for the local lab"))
        raise

