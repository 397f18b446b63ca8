"""Provider `local`: the local lab, hosts built on this machine from namespaces (`chainlab local`).

The hosts share this machine's files, so the Calico emulation runs there with this very
interpreter, and etcd's certificates are read where `local up` wrote them. Every address
is contacted only through the lab's management link (route safety rule).
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from chainlab.providers.base import EmulationRuntime, HostHints, MachineProvider

if TYPE_CHECKING:
    from chainlab.local.plan import LabPlan

SSH_PORT = 22


class LocalProvider(MachineProvider):
    kind = "local"
    lab_name = "local lab"
    up_command = "local up"
    starts_docker = True

    def _make_plan(self) -> LabPlan:
        from chainlab.local.plan import plan_lab

        return plan_lab(self.inv)

    def check_route(self, address: IPv4Address) -> None:
        from chainlab.local.route import check_lab_route

        check_lab_route(self._plan(), address)

    def ssh_port(self) -> int:
        return SSH_PORT

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
        """This machine's interpreter (the hosts see this machine's files) and etcd as here (the
        daemon reaches it inside the lab: this machine's route is not asked)."""
        return EmulationRuntime((sys.executable, "-m", "chainlab.calico.agent"), self._etcd(self._plan().pki))

    def describe(self) -> str:
        return "local (namespaces on this machine)"
