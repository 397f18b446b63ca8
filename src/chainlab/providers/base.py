"""What provisioning and scenario runs need to know about where the hosts come from.

A provider kind (`local`: namespaces on this machine; `ssh`: someone's hosts) lives in its
own module behind this interface, as containerlab keeps `nodes/<kind>/` behind its `Node`
interface; adding one (say, VMs booted by libvirt) is a new module and a registry line in
`chainlab.providers`. Nothing outside the provider modules asks which kind a lab is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from chainlab.calico.etcdconn import EtcdEndpoint, EtcdTLS
from chainlab.errors import ChainlabError

if TYPE_CHECKING:
    from chainlab.inventory import Inventory
    from chainlab.local.pki import Pki


@dataclass(frozen=True)
class Target:
    """One host's SSH endpoint and credentials, all taken from validated inventory values."""

    name: str
    address: IPv4Address
    user: str
    port: int
    key_filename: Path | None
    known_hosts: Path | None  # None: the user's ~/.ssh/known_hosts
    connect_timeout: float
    ssh_home: Path | None  # a HOME whose .ssh/ the docker SDK reads (None: the real HOME)

    @property
    def known_hosts_file(self) -> Path:
        """The one known_hosts file checked: `known_hosts`, else the user's (as paramiko's
        system host keys are)."""
        return self.known_hosts or Path.home() / ".ssh" / "known_hosts"


@dataclass(frozen=True)
class HostHints:
    """What offline `--check` assumes of a host it does not contact (besides the inventory's
    `os`/`iptables` hints): its kernel log, init system and the tools it has."""

    kernel_log: Literal["private", "shared"] = "private"
    init: str | None = None  # None: what the OS hint implies
    tools: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class EmulationRuntime:
    """How the Calico emulation's daemon is started on a host, as that host sees it."""

    argv: tuple[str, ...]  # the interpreter and module: (python, "-m", "chainlab.calico.agent")
    etcd: EtcdEndpoint  # etcd and the TLS files' paths, on the host


#: The inventory sections of the labs chainlab builds on this machine (each named as its kind).
MACHINE_SECTIONS = ("local", "qemu")


class Provider(ABC):
    """A provider kind; one instance per inventory."""

    kind: ClassVar[str]
    #: chainlab builds these hosts itself, so it may run the Calico emulation on them
    builds_hosts: ClassVar[bool] = False
    #: `lab up --check` may connect to read facts (the hosts are chainlab's own); else it
    #: plans from the inventory's hints without connecting
    check_connects: ClassVar[bool] = False
    #: dockerd on these hosts was started with Docker's cluster store by the provider itself
    starts_docker: ClassVar[bool] = False

    def __init__(self, inv: "Inventory"):
        self.inv = inv

    @classmethod
    def validate_inventory(cls, inv: "Inventory") -> None:
        """Raise LocatedValueError (file, line, key) for what this kind cannot take."""
        from chainlab.validation import LocatedValueError

        for section in MACHINE_SECTIONS:
            if getattr(inv, section) is not None:
                raise LocatedValueError((section,), f"a `{section}:` section is only allowed with provider: {section}")

    def _host(self, host: str) -> IPv4Address:
        if host not in self.inv.hosts:
            raise ChainlabError(f"unknown host {host!r}: the inventory has {', '.join(sorted(self.inv.hosts))}")
        return self.inv.hosts[host].address

    @abstractmethod
    def target(self, host: str) -> Target:
        """How to reach `host` over SSH; refuses (ChainlabError) where that would be unsafe."""

    def check_route(self, address: IPv4Address) -> None:
        """Raise unless `address` may be contacted now (the local lab's route safety rule)."""

    def probe_networks(self) -> tuple[IPv4Network, ...] | None:
        """Where a probe to an address may go: a lab built on this machine keeps its probes
        inside itself (its LAN and the Calico pool); None: the hosts' own network decides."""
        return None

    def state_dir(self) -> Path:
        """Where chainlab keeps what it knows of the lab (the lab state, the etcd baseline)."""
        from chainlab.labstate import user_state_dir

        return user_state_dir(self.inv.lab)

    def lab_lock_path(self) -> Path:
        """The file whose flock makes one lab up/down or scenario run at a time."""
        from chainlab.lock import ssh_lab_lock_path

        return ssh_lab_lock_path(self.inv)

    def ready(self) -> None:
        """Raise unless the hosts exist (e.g. the local lab is up) before provisioning connects."""

    def restore(self, dry_run: bool) -> str | None:
        """Put back what keeps the lab safe and can go while it is up (under the lab lock);
        what was (with `dry_run`: would be) done, or is amiss, to be said; None: nothing."""
        return None

    def ssh_port(self) -> int:
        return self.inv.ssh.port

    def etcd_endpoint(self) -> EtcdEndpoint:
        """etcd as chainlab reaches it from this machine (route-checked)."""
        if self.inv.etcd is None:
            raise ChainlabError("the inventory has no `etcd:` section")
        address = self.inv.hosts[self.inv.etcd.host].address
        self.check_route(address)
        tls = self.inv.etcd.tls
        return EtcdEndpoint(str(address), self.inv.etcd.port,
                            EtcdTLS(str(Path(tls.ca).expanduser()), str(Path(tls.cert).expanduser()),
                                    str(Path(tls.key).expanduser())) if tls else None)

    def hints(self, host: str) -> HostHints:
        return HostHints()

    def default_image_tarball(self) -> Path | None:
        """Where `image.source: tarball` finds its file when `image.tarball` is not set."""
        return None

    def make_default_image_tarball(self, path: Path) -> None:
        raise ChainlabError(f"image tarball {path} does not exist")

    def emulation_runtime(self, host: str) -> EmulationRuntime:
        raise ChainlabError(f"provider {self.kind} does not build its hosts: chainlab cannot run its Calico"
                            " emulation there (calico.mode existing or install)")

    def describe(self) -> str:
        return self.kind


class MachineProvider(Provider):
    """A lab chainlab builds on this machine (namespaces, VMs), from the inventory section named
    as its kind (`lan`, `state_dir`): the hosts sit behind one management link, their probes
    stay inside the lab, and the lab lock lives in /run/chainlab, outside the state dir that
    the lab's `down` removes."""

    builds_hosts = True
    check_connects = True
    #: how messages name the lab, and the command that brings it up
    lab_name: ClassVar[str]
    up_command: ClassVar[str]

    def __init__(self, inv: "Inventory"):
        super().__init__(inv)
        self._made_plan: Any = None

    @classmethod
    def validate_inventory(cls, inv: "Inventory") -> None:
        from chainlab.validation import LocatedValueError

        for section in MACHINE_SECTIONS:
            if section != cls.kind and getattr(inv, section) is not None:
                raise LocatedValueError((section,), f"a `{section}:` section is only allowed with provider: {section}")
        settings = getattr(inv, cls.kind)
        if settings is None:
            raise LocatedValueError(("provider",), f"provider {cls.kind} needs a `{cls.kind}:` section (lan: ADDRESS/PREFIX)")
        lan = settings.lan
        if not 8 <= lan.network.prefixlen <= 30 or lan.ip in (lan.network.network_address, lan.network.broadcast_address):
            raise LocatedValueError((cls.kind, "lan"), f"{lan} must be an address of a network of /8 to /30, not its"
                                                       " network or broadcast address (e.g. 10.231.91.1/24)")
        for name, host in inv.hosts.items():
            if (host.address not in lan.network or host.address == lan.ip
                    or host.address in (lan.network.network_address, lan.network.broadcast_address)):
                raise LocatedValueError(
                    ("hosts", name, "address"),
                    f"{host.address} must be inside {cls.kind}.lan {lan.network}, not its network or broadcast"
                    " address, and differ from the machine's end",
                )
        if inv.calico.pool.overlaps(lan.network):
            raise LocatedValueError(("calico", "pool"), f"{inv.calico.pool} overlaps {cls.kind}.lan {lan.network}")
        for key in [k for k in ("state_dir", "image_dir") if hasattr(settings, k)]:  # image_dir: qemu only
            path = Path(getattr(settings, key))
            if not path.is_absolute() or len(path.parts) < 3:
                raise LocatedValueError((cls.kind, key), f"{path} must be an absolute path at least two levels deep")

    def _settings(self) -> Any:
        settings = getattr(self.inv, self.kind)
        assert settings is not None  # validate_inventory
        return settings

    @abstractmethod
    def _make_plan(self) -> Any:
        """The lab's plan: user, keys, known_hosts and HOME for SSH, and the lab's state file."""

    def _plan(self) -> Any:
        """`_make_plan`, made once: a pure function of the inventory, asked for by every connection
        (at 30 hosts, making it each time cost 0.7 s of a warm `lab up`)."""
        if self._made_plan is None:
            self._made_plan = self._make_plan()
        return self._made_plan

    def probe_networks(self) -> tuple[IPv4Network, ...]:
        return (self._settings().lan.network, self.inv.calico.pool)

    def _etcd(self, pki: "Pki") -> EtcdEndpoint:
        """etcd's address and port, with the client certificate of `pki` (this machine's, or
        where a host keeps it)."""
        if self.inv.etcd is None:
            raise ChainlabError("the inventory has no `etcd:` section")
        return EtcdEndpoint(str(self.inv.hosts[self.inv.etcd.host].address), self.inv.etcd.port,
                            EtcdTLS(str(pki.ca), str(pki.client_cert), str(pki.client_key)))

    def etcd_endpoint(self) -> EtcdEndpoint:
        endpoint = self._etcd(self._plan().pki)
        self.check_route(IPv4Address(endpoint.host))
        return endpoint

    def target(self, host: str) -> Target:
        address = self._host(host)
        plan = self._plan()
        self.check_route(address)
        return Target(host, address, plan.user, self.ssh_port(), plan.client_key, plan.known_hosts,
                      self.inv.ssh.connect_timeout, plan.home)

    def state_dir(self) -> Path:
        return Path(self._settings().state_dir)  # the lab's `down` removes it with the lab

    def lab_lock_path(self) -> Path:
        from chainlab.lock import local_lab_lock_path

        return local_lab_lock_path(self.inv.lab)

    def ready(self) -> None:
        if not self._plan().state_file.exists():
            raise ChainlabError(f"the {self.lab_name} {self.inv.lab} is not up: run `chainlab -i ... {self.up_command}` first")

    def restore(self, dry_run: bool) -> str | None:
        """The guard that keeps other users off the lab's management link, if an nftables
        reload flushed it."""
        from chainlab.local import link_guard

        root_if = self._plan().root_if
        table = f"nftables table inet {link_guard.table_name(root_if)}"
        if not link_guard.available():
            return f"the nft command is missing: the {table} cannot keep other users off the lab (`make local-deps`)"
        if link_guard.installed(root_if):
            return None
        if dry_run:
            return f"the {table}, which keeps other users off the lab, is gone (an nftables reload flushes it): would put it back"
        link_guard.ensure(root_if)
        return f"the {table}, which keeps other users off the lab, was gone (an nftables reload flushes it): put back"
