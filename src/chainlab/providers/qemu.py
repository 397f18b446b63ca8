"""Provider `qemu`: the inventory's hosts as VMs on this machine (`chainlab vm up`).

Each VM has its own kernel, kernel log, systemd, rsyslog, sshd, dockerd (etcd on etcd's VM):
provisioning treats them as the reference VMs (facts from the real OS, docker restarted by
systemd for its cluster store). chainlab built them, so its Calico emulation may run there,
from the wheel `vm up` unpacked in each VM (`chainlab.vm.wheel`), with etcd's certificates
where the VM keeps them. Every address is contacted only through the lab's management link.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from chainlab.errors import ChainlabError
from chainlab.providers.base import EmulationRuntime, MachineProvider

if TYPE_CHECKING:
    from chainlab.vm.plan import VmLabPlan


class QemuProvider(MachineProvider):
    kind = "qemu"
    lab_name = "VM lab"
    up_command = "vm up"
    starts_docker = False  # systemd starts the VMs' dockerd: provisioning configures and restarts it

    def _make_plan(self) -> "VmLabPlan":
        from chainlab.vm.plan import plan_vm_lab

        return plan_vm_lab(self.inv)

    def check_route(self, address: IPv4Address) -> None:
        from chainlab.vm.network import check_vm_route

        check_vm_route(self._plan(), address)

    def ssh_port(self) -> int:
        from chainlab.vm.plan import SSH_PORT

        return SSH_PORT

    def default_image_tarball(self) -> Path:
        """`mybusybox` from the VM image's own busybox-static (built with the image)."""
        return self._plan().image.busybox_tarball

    def make_default_image_tarball(self, path: Path) -> None:
        raise ChainlabError(f"{path} is missing: it is built with the VM image (`chainlab vm image`)")

    def emulation_runtime(self, host: str) -> EmulationRuntime:
        """The wheel unpacked in the VM, Debian's python3; etcd's certificates as the VM has them."""
        from chainlab.vm.plan import guest_pki
        from chainlab.vm.wheel import agent_argv

        return EmulationRuntime(agent_argv(), self._etcd(guest_pki()))

    def describe(self) -> str:
        """Says whether the VMs run under KVM or TCG (as `vm up` found)."""
        from chainlab.vm.lab import load_state

        try:
            state = load_state(self._plan())
        except ChainlabError:
            state = None
        accel = {"kvm": "KVM", "tcg": "TCG, software emulation"}.get(state.accel or "", "") if state else ""
        return f"qemu (VMs on this machine{', ' + accel if accel else ''})"

