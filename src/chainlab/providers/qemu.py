"""Provider `qemu`: the inventory's hosts as VMs on this machine (`chainlab vm up`).

Each VM has its own kernel, kernel log, systemd, rsyslog, sshd, dockerd (etcd on etcd's VM):
provisioning treats them as the reference VMs (facts from the real OS, docker restarted by
systemd for its cluster store). chainlab built them, so its Calico emulation may run there,
from the wheel `vm up` unpacked in each VM (`chainlab.vm.wheel`), with etcd's certificates
where the VM keeps them. Every address is contacted only through the lab's management link.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

from chainlab.calico.etcdconn import EtcdEndpoint, EtcdTLS
from chainlab.errors import ChainlabError
from chainlab.providers.base import EmulationRuntime, Provider, Target

if TYPE_CHECKING:
    from chainlab.inventory import Inventory
    from chainlab.local.pki import Pki
    from chainlab.vm.plan import VmLabPlan


class QemuProvider(Provider):
    kind = "qemu"
    builds_hosts = True
    check_connects = True
    starts_docker = False  # systemd starts the VMs' dockerd: provisioning configures and restarts it

    @classmethod
    def validate_inventory(cls, inv: "Inventory") -> None:
        from chainlab.validation import LocatedValueError

        if inv.local is not None:
            raise LocatedValueError(("local",), "a `local:` section is only allowed with provider: local")
        if inv.qemu is None:
            raise LocatedValueError(("provider",), "provider qemu needs a `qemu:` section (lan: ADDRESS/PREFIX)")
        for name, host in inv.hosts.items():
            if host.address not in inv.qemu.lan.network or host.address == inv.qemu.lan.ip:
                raise LocatedValueError(
                    ("hosts", name, "address"),
                    f"{host.address} must be inside qemu.lan {inv.qemu.lan.network} and differ from the machine's end",
                )

    def probe_networks(self) -> tuple[IPv4Network, ...]:
        assert self.inv.qemu is not None
        return (self.inv.qemu.lan.network, self.inv.calico.pool)

    def _plan(self) -> "VmLabPlan":
        from chainlab.vm.plan import plan_vm_lab

        return plan_vm_lab(self.inv)

    def check_route(self, address: IPv4Address) -> None:
        from chainlab.vm.network import check_vm_route

        check_vm_route(self._plan(), address)

    def target(self, host: str) -> Target:
        from chainlab.vm.plan import SSH_PORT

        address = self._host(host)
        plan = self._plan()
        self.check_route(address)
        return Target(host, address, plan.user, SSH_PORT, plan.client_key, plan.known_hosts,
                      self.inv.ssh.connect_timeout, plan.home)

    def state_dir(self) -> Path:
        assert self.inv.qemu is not None
        return Path(self.inv.qemu.state_dir)  # `vm down` removes it with the VMs

    def lab_lock_path(self) -> Path:
        from chainlab.lock import local_lab_lock_path

        return local_lab_lock_path(self.inv.lab)  # not in the state dir `vm down` removes

    def ready(self) -> None:
        if not self._plan().state_file.exists():
            raise ChainlabError(f"the VM lab {self.inv.lab} is not up: run `chainlab -i ... vm up` first")

    def ssh_port(self) -> int:
        from chainlab.vm.plan import SSH_PORT

        return SSH_PORT

    def _etcd(self, tls: EtcdTLS) -> EtcdEndpoint:
        if self.inv.etcd is None:
            raise ChainlabError("the inventory has no `etcd:` section")
        return EtcdEndpoint(str(self.inv.hosts[self.inv.etcd.host].address), self.inv.etcd.port, tls)

    def etcd_endpoint(self) -> EtcdEndpoint:
        endpoint = self._etcd(_tls(self._plan().pki))
        self.check_route(IPv4Address(endpoint.host))
        return endpoint

    def default_image_tarball(self) -> Path:
        """`mybusybox` from the VM image's own busybox-static (built with the image)."""
        return self._plan().image.busybox_tarball

    def make_default_image_tarball(self, path: Path) -> None:
        raise ChainlabError(f"{path} is missing: it is built with the VM image (`chainlab vm image`)")

    def emulation_runtime(self, host: str) -> EmulationRuntime:
        """The wheel unpacked in the VM, Debian's python3; etcd's certificates as the VM has them."""
        from chainlab.vm.plan import guest_pki
        from chainlab.vm.wheel import agent_argv

        return EmulationRuntime(agent_argv(), self._etcd(_tls(guest_pki())))

    def describe(self) -> str:
        """Says whether the VMs run under KVM or TCG (as `vm up` found)."""
        from chainlab.vm.lab import load_state

        try:
            state = load_state(self._plan())
        except ChainlabError:
            state = None
        accel = {"kvm": "KVM", "tcg": "TCG, software emulation"}.get(state.accel or "", "") if state else ""
        return f"qemu (VMs on this machine{', ' + accel if accel else ''})"


def _tls(pki: "Pki") -> EtcdTLS:
    return EtcdTLS(str(pki.ca), str(pki.client_cert), str(pki.client_key))
