"""Provider `local`: the local lab, hosts built on this machine from namespaces (`chainlab local`).

The hosts share this machine's files, so the Calico emulation runs there with this very
interpreter, and etcd's certificates are read where `local up` wrote them. Every address
is contacted only through the lab's management link (route safety rule).
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

from chainlab.calico.etcdconn import EtcdEndpoint, EtcdTLS
from chainlab.errors import ChainlabError
from chainlab.providers.base import EmulationRuntime, HostHints, Provider, Target

if TYPE_CHECKING:
    from chainlab.inventory import Inventory

SSH_PORT = 22


class LocalProvider(Provider):
    kind = "local"
    builds_hosts = True
    check_connects = True
    starts_docker = True

    @classmethod
    def validate_inventory(cls, inv: "Inventory") -> None:
        from chainlab.validation import LocatedValueError

        if inv.local is None:
            raise LocatedValueError(("provider",), "provider local needs a `local:` section (lan: ADDRESS/PREFIX)")
        for name, host in inv.hosts.items():
            if host.address not in inv.local.lan.network or host.address == inv.local.lan.ip:
                raise LocatedValueError(
                    ("hosts", name, "address"),
                    f"{host.address} must be inside local.lan {inv.local.lan.network} and differ from the machine's end",
                )

    def probe_networks(self) -> tuple[IPv4Network, ...]:
        assert self.inv.local is not None
        return (self.inv.local.lan.network, self.inv.calico.pool)

    def _plan(self):  # type: ignore[no-untyped-def]
        from chainlab.local.plan import plan_lab

        return plan_lab(self.inv)

    def check_route(self, address: IPv4Address) -> None:
        from chainlab.local.route import check_lab_route

        check_lab_route(self._plan(), address)

    def target(self, host: str) -> Target:
        address = self._host(host)
        plan = self._plan()
        self.check_route(address)
        return Target(host, address, plan.user, SSH_PORT, plan.client_key, plan.known_hosts,
                      self.inv.ssh.connect_timeout, plan.home)

    def state_dir(self) -> Path:
        assert self.inv.local is not None
        return Path(self.inv.local.state_dir)  # `local down` removes it with the lab

    def lab_lock_path(self) -> Path:
        from chainlab.lock import local_lab_lock_path

        return local_lab_lock_path(self.inv.lab)

    def ready(self) -> None:
        if not self._plan().state_file.exists():
            raise ChainlabError(f"the local lab {self.inv.lab} is not up: run `chainlab -i ... local up` first")

    def ssh_port(self) -> int:
        return SSH_PORT

    def etcd_endpoint(self) -> EtcdEndpoint:
        if self.inv.etcd is None:
            raise ChainlabError("the inventory has no `etcd:` section")
        address = self.inv.hosts[self.inv.etcd.host].address
        self.check_route(address)
        pki = self._plan().pki
        return EtcdEndpoint(str(address), self.inv.etcd.port,
                            EtcdTLS(str(pki.ca), str(pki.client_cert), str(pki.client_key)))

    def hints(self, host: str) -> HostHints:
        """Namespaces share the machine's kernel log; no init system runs in them."""
        return HostHints(kernel_log="shared", init="none",
                         tools={"rsyslogd": False, "ulogd": True, "xtables-monitor": True})

    def default_image_tarball(self) -> Path:
        return self._plan().image_tarball

    def make_default_image_tarball(self, path: Path) -> None:
        from chainlab.local import build_image_tarball

        build_image_tarball(path)

    def emulation_runtime(self, host: str) -> EmulationRuntime:
        """This machine's interpreter (the hosts see this machine's files) and etcd as here."""
        return EmulationRuntime((sys.executable, "-m", "chainlab.calico.agent"), self.etcd_endpoint())

    def describe(self) -> str:
        return "local (namespaces on this machine)"
