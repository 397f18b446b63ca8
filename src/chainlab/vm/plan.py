"""Pure planning for the VM lab: names, addresses, paths, qemu command lines, seed texts.

Nothing here touches the system: `chainlab.vm.lab` does the I/O from a `VmLabPlan`.
The network is the local lab's, with VMs instead of namespaces: a namespace
`chainlab.<lab>` holds a bridge, one tap per VM and the lab end of the management veth
whose other end (`cl-<lab>`, with `qemu.lan`) is in the machine's namespace. qemu runs in
that namespace, so nothing of a VM's can reach the machine's real interfaces.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Literal

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.local.pki import Pki
from chainlab.local.plan import CALICO_GATEWAY, LabFiles, ifname
from chainlab.vm.recipe import ETCD_ENV, SEED_MOUNT, ImagePaths, image_paths

Accel = Literal["kvm", "tcg"]

SSH_PORT = 22
ETCD_PEER_PORT = 2380
LOCK_DIR = Path("/run/chainlab")
GUEST_IF = "eth0"
#: Where a VM keeps the lab's etcd certificates (the CA, the client's; the server's on etcd's VM).
GUEST_PKI = "/etc/chainlab/pki"
#: Translation cache of TCG: qemu's default (1 GiB on 64-bit hosts, used as the guest runs)
#: almost doubles a VM's host memory; 128 MiB costs no measurable speed here.
TCG_TB_SIZE = 128
SEED_SIZE = "8M"
#: Kernel command line. apparmor=0: dockerd 20.10 fails without the apparmor package
#: otherwise; net.ifnames=0: the NIC is eth0, as on the reference VMs; quiet: kernel
#: messages below "error" (TRACE and LOG lines among them) stay off the serial console.
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 apparmor=0 net.ifnames=0 quiet panic=-1"


@dataclass(frozen=True)
class VmHostPlan:
    """Everything about one VM."""

    name: str
    index: int
    address: IPv4Address
    lan: IPv4Interface  # the VM's address with the lan prefix
    flavour: Literal["legacy", "nft"]
    runs_etcd: bool
    mac: str
    tap: str  # in the lab namespace
    dir: Path

    @property
    def overlay(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def seed_dir(self) -> Path:
        return self.dir / "seed"

    @property
    def seed_image(self) -> Path:
        return self.dir / "seed.img"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"


@dataclass(frozen=True)
class VmLabPlan(LabFiles):
    """The whole VM lab, derived from an inventory with `provider: qemu`."""

    lab: str
    user: str
    state_dir: Path
    image: ImagePaths
    mgmt: IPv4Interface  # the machine's end of the management link
    lan_netns: str
    root_if: str  # the management veth end in the machine's namespace
    hosts: dict[str, VmHostPlan]
    etcd_port: int
    memory: int
    cpus: int
    accel: Literal["auto", "kvm", "tcg"]
    etcd_host: str | None  # the VM that runs etcd (with TLS), if the lab has one
    emulates_calico: bool  # the VMs run chainlab's Calico daemon (calico.mode emulate)

    @property
    def lock_file(self) -> Path:
        """Outside the state dir (which `down` removes), keyed by lab name like the namespace."""
        return LOCK_DIR / f"vm-{self.lab}.lock"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.lan_netns

    @property
    def wheel_cache(self) -> Path:
        return self.image.dir.parent / "wheels"


def guest_pki() -> Pki:
    """The same files, where a VM has them."""
    return Pki(Path(GUEST_PKI))


def guest_mac(address: IPv4Address) -> str:
    """A locally administered MAC (QEMU's 52:54:00 prefix) from the address's last 3 bytes."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in address.packed[1:])


def plan_vm_lab(inv: Inventory) -> VmLabPlan:
    """Derive the VM lab from the inventory; refuses anything but `provider: qemu`."""
    if inv.provider != "qemu" or inv.qemu is None:
        raise ChainlabError(
            f"this inventory has provider {inv.provider!r}: `chainlab vm` only works on an"
            " inventory with `provider: qemu` (e.g. -i lab/vm.yaml)"
        )
    settings = inv.qemu
    state_dir = Path(settings.state_dir)  # it and image_dir two levels deep at least (the provider's validation)
    if inv.ssh.user != "root":
        raise ChainlabError(f"ssh.user is {inv.ssh.user!r}: the VMs are reached as root (provisioning needs it)")
    lan = settings.lan
    etcd_host = inv.etcd.host if inv.etcd else None
    hosts = {
        name: VmHostPlan(
            name=name,
            index=index,
            address=host.address,
            lan=IPv4Interface(f"{host.address}/{lan.network.prefixlen}"),
            flavour="nft" if host.iptables == "nft" else "legacy",
            runs_etcd=name == etcd_host,
            mac=guest_mac(host.address),
            tap=ifname(f"tap-{name}"),
            dir=state_dir / "hosts" / name,
        )
        for index, (name, host) in enumerate(inv.hosts.items())
    }
    return VmLabPlan(
        lab=inv.lab,
        user=inv.ssh.user,
        state_dir=state_dir,
        image=image_paths(Path(settings.image_dir)),
        mgmt=lan,
        lan_netns=f"chainlab.{inv.lab}",
        root_if=ifname(f"cl-{inv.lab}"),
        hosts=hosts,
        etcd_port=inv.etcd.port if inv.etcd else 2379,
        memory=settings.memory,
        cpus=settings.cpus,
        accel=settings.accel,
        etcd_host=etcd_host,
        emulates_calico=inv.calico.driver == "calico" and inv.calico_mode == "emulate",
    )


# --- qemu ------------------------------------------------------------------------------

def accel_args(accel: Accel) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", f"tcg,thread=multi,tb-size={TCG_TB_SIZE}", "-cpu", "qemu64"]


def qemu_argv(plan: VmLabPlan, host: VmHostPlan, accel: Accel) -> list[str]:
    """qemu for one VM, run (by `nsenter`) inside the lab namespace, in the foreground.

    No default devices and no user-mode networking: the only NIC is the tap on the lab
    bridge. The balloon's free page reporting hands memory the guest freed back to the
    machine. -no-reboot: a guest that panics or reboots ends its qemu, and `vm status`
    shows it down (`vm up` boots it again).
    """
    image = plan.image
    return [
        "qemu-system-x86_64", "-name", f"{plan.lab}.{host.name}",
        "-nodefaults", "-no-user-config", "-no-reboot",
        *accel_args(accel),
        "-smp", str(plan.cpus), "-m", str(plan.memory),
        "-display", "none", "-serial", f"file:{host.console}",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", KERNEL_ARGS,
        "-drive", f"file={host.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-drive", f"file={host.seed_image},if=virtio,format=raw,readonly=on",
        "-netdev", f"tap,id=n0,ifname={host.tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={host.mac}",
        "-device", "virtio-balloon-pci,free-page-reporting=on",
        "-device", "virtio-rng-pci",
    ]


def enter_lan_argv(plan: VmLabPlan, argv: list[str]) -> list[str]:
    """Run `argv` in the lab namespace (network only: qemu needs the machine's files)."""
    return ["nsenter", f"--net={plan.netns_path}", "--", *argv]


def overlay_argv(plan: VmLabPlan, host: VmHostPlan) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(plan.image.rootfs), str(host.overlay)]


def seed_mkfs_argv(host: VmHostPlan) -> list[str]:
    return ["mkfs.ext4", "-q", "-F", "-L", "clseed", "-d", str(host.seed_dir), str(host.seed_image), SEED_SIZE]


# --- the seed: what makes one VM out of the shared image --------------------------------

def network_text(host: VmHostPlan) -> str:
    """systemd-networkd: the lab address on the NIC with the planned MAC; no route out. A
    real host's default route is what lets proxy ARP answer a Calico workload's ARP for its
    gateway 169.254.1.1: a VM has none (nothing may leave the lab), so it gets a route for
    that one address on its NIC instead, as the local lab's hosts do."""
    return "\n".join([
        "[Match]",
        f"MACAddress={host.mac}",
        "",
        "[Network]",
        f"Address={host.lan}",
        "LinkLocalAddressing=no",
        "IPv6AcceptRA=no",
        "",
        "[Route]",
        f"Destination={CALICO_GATEWAY}/32",
        "Scope=link",
        "",
    ])


def sshd_text() -> str:
    return "\n".join([
        "# written by chainlab vm up",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UseDNS no",
        "MaxStartups 100",
        "MaxSessions 100",
        "",
    ])


def etcd_env_text(plan: VmLabPlan, host: VmHostPlan) -> str:
    """Single-member etcd with the v2 API (Calico 2.x's datastore) on the VM's address, as the
    local lab's: clients need a certificate of the lab's CA (the lab address is reachable
    from this machine); the peer port listens on loopback (one member, nobody to peer with)."""
    client = f"https://{host.address}:{plan.etcd_port}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    pki = guest_pki()
    return "\n".join([
        f"ETCD_NAME={host.name}",
        f"ETCD_LISTEN_CLIENT_URLS={client},https://127.0.0.1:{plan.etcd_port}",
        f"ETCD_ADVERTISE_CLIENT_URLS={client}",
        f"ETCD_LISTEN_PEER_URLS={peer}",
        f"ETCD_INITIAL_ADVERTISE_PEER_URLS={peer}",
        f"ETCD_INITIAL_CLUSTER={host.name}={peer}",
        "ETCD_INITIAL_CLUSTER_STATE=new",
        "ETCD_ENABLE_V2=true",
        "ETCD_CLIENT_CERT_AUTH=true",
        f"ETCD_TRUSTED_CA_FILE={pki.ca}",
        f"ETCD_CERT_FILE={pki.server_cert}",
        f"ETCD_KEY_FILE={pki.server_key}",
        "",
    ])


#: iptables alternatives switched by flavour (the save/restore links follow as slaves).
IPTABLES_ALTERNATIVES = ("iptables", "ip6tables")


def seed_script(host: VmHostPlan) -> str:
    """apply.sh, run at every boot before the network and sshd come up (idempotent)."""
    q = shlex.quote
    s = SEED_MOUNT
    lines = [
        "set -eu",
        f"S={s}",
        f"echo {q(host.name)} > /etc/hostname",
        f"hostname {q(host.name)}",
        f"printf '127.0.0.1 localhost\\n127.0.1.1 %s\\n' {q(host.name)} > /etc/hosts",
        "install -d -m 700 /root/.ssh",
        'install -m 600 "$S/authorized_keys" /root/.ssh/authorized_keys',
        "rm -f /etc/ssh/ssh_host_*",
        'install -m 600 "$S/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key',
        'install -m 644 "$S/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub',
        'install -m 644 "$S/sshd.conf" /etc/ssh/sshd_config.d/chainlab.conf',
        "mkdir -p /etc/systemd/network",
        'install -m 644 "$S/lab.network" /etc/systemd/network/10-chainlab.network',
    ]
    for name in IPTABLES_ALTERNATIVES:
        lines.append(f"update-alternatives --quiet --set {name} /usr/sbin/{name}-{host.flavour}")
    pki = guest_pki()
    lines.append(f"install -d -m 700 {GUEST_PKI}")
    lines.append(f'install -m 644 "$S/{pki.ca.name}" {pki.ca}')  # a public certificate (etcd reads it too)
    for path in (pki.client_cert, pki.client_key):
        lines.append(f'install -m 600 "$S/{path.name}" {path}')
    server = (pki.server_cert, pki.server_key)
    if host.runs_etcd:  # etcd runs as user etcd
        lines.append(f"chown etcd {GUEST_PKI}")
        lines += [f'install -m 600 -o etcd "$S/{path.name}" {path}' for path in server]
        lines.append(f'install -m 644 "$S/etcd.env" {ETCD_ENV}')
    else:
        lines.append(f"chown root {GUEST_PKI}")
        lines.append("rm -f " + " ".join(str(path) for path in (*server, ETCD_ENV)))
    return "\n".join(lines) + "\n"


def seed_files(plan: VmLabPlan, host: VmHostPlan, client_pub: str, host_key: str, host_pub: str,
               pki: dict[str, str]) -> dict[str, tuple[str, int]]:
    """The seed disk's files: name -> (text, mode). `pki`: file name -> text of the lab's
    etcd certificates (the server's are put on etcd's VM only)."""
    server = {plan.pki.server_cert.name, plan.pki.server_key.name}
    files = {name: (text, 0o600) for name, text in pki.items() if host.runs_etcd or name not in server}
    files |= {
        "apply.sh": (seed_script(host), 0o644),
        "authorized_keys": (client_pub, 0o644),
        "ssh_host_ed25519_key": (host_key, 0o600),
        "ssh_host_ed25519_key.pub": (host_pub, 0o644),
        "sshd.conf": (sshd_text(), 0o644),
        "lab.network": (network_text(host), 0o644),
    }
    if host.runs_etcd:
        files["etcd.env"] = (etcd_env_text(plan, host), 0o644)
    return files
