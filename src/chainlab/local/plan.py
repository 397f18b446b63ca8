"""Pure planning for the local lab: names, addresses, paths and config texts.

Nothing here touches the system, so every decision about *what* the lab creates can be
unit-tested without root. `chainlab.local.lab` does the I/O from a `LabPlan`.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Literal, Protocol

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.local.pki import Pki
from chainlab.lock import LOCK_DIR

Flavour = Literal["legacy", "nft"]

IFNAME_MAX = 15
HOST_IF = "eth0"
SSH_PORT = 22
ETCD_PEER_PORT = 2380
#: Calico workloads' gateway: the host answers its ARP by proxy, which needs a route to it.
CALICO_GATEWAY = "169.254.1.1"
#: Docker bridge subnets: host i gets 172.30.(i+1).1/24 (checked against the lan and pool).
BIP_BASE = IPv4Network("172.30.0.0/16")
#: Files and directories of a host's mount namespace that provisioning edits: they are
#: bind-mounted from per-host copies under the state dir (target -> name of the copy).
PRIVATE_PATHS: dict[str, str] = {
    "/var/log": "var-log",
    "/etc/sysctl.d": "etc-sysctl.d",
    "/etc/rsyslog.d": "etc-rsyslog.d",
    "/etc/docker": "etc-docker",
    "/etc/alternatives": "etc-alternatives",
    "/etc/ulogd.conf": "etc-ulogd.conf",
}
#: Directories copied from the machine into the host's private copy (others start empty).
SEEDED_PATHS = ("/etc/sysctl.d", "/etc/rsyslog.d", "/etc/alternatives", "/etc/ulogd.conf")
#: Alternatives that select the iptables backend.
IPTABLES_ALTERNATIVES = (
    "iptables", "iptables-save", "iptables-restore",
    "ip6tables", "ip6tables-save", "ip6tables-restore",
)
#: Commands a local lab needs on the machine (the Debian package that ships each).
REQUIRED_COMMANDS: dict[str, str] = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "dockerd": "docker.io",
    "containerd": "containerd",
    "iptables-legacy": "iptables",
    "iptables-nft": "iptables",
    "ipset": "ipset",
    "nft": "nftables",
    "rsyslogd": "rsyslog",
    "ulogd": "ulogd2",
    "ping": "iputils-ping",
    "busybox": "busybox-static",
}
ETCD_COMMAND = ("etcd", "etcd-server")
#: Paths a host bind-mounts over, and the Debian package that ships each.
PRIVATE_PATH_PACKAGES: dict[str, str] = {
    "/etc/sysctl.d": "procps",
    "/etc/rsyslog.d": "rsyslog",
    "/etc/docker": "docker.io",
    "/etc/alternatives": "dpkg",
    "/etc/ulogd.conf": "ulogd2",
}


def ifname(base: str) -> str:
    """An interface name from `base`, shortened with a stable hash if it exceeds 15 bytes."""
    if len(base) <= IFNAME_MAX:
        return base
    digest = hashlib.sha1(base.encode()).hexdigest()[:4]
    return base[: IFNAME_MAX - 4] + digest


@dataclass(frozen=True)
class HostPlan:
    """Everything about one local host."""

    name: str
    index: int
    address: IPv4Address
    lan: IPv4Interface  # the host's address with the lan prefix
    flavour: Flavour
    runs_etcd: bool
    netns: str
    lan_port: str  # its veth end in the lan namespace
    bip: IPv4Interface
    cgroup_parent: str
    dir: Path

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def fs_dir(self) -> Path:
        return self.dir / "fs"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def sshd_config_path(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def docker_root(self) -> Path:
        return self.dir / "docker"

    @property
    def etcd_dir(self) -> Path:
        return self.dir / "etcd"

    @property
    def home(self) -> Path:
        """HOME of SSH sessions: the machine's /root dotfiles (e.g. a bashrc that bash sources
        for every sshd command) are not the host's, and cost a fresh VM nothing."""
        return self.dir / "home"

    @property
    def log_dir(self) -> Path:
        """The machine-side path of the host's /var/log."""
        return self.fs_dir / PRIVATE_PATHS["/var/log"]

    def private_source(self, target: str) -> Path:
        return self.fs_dir / PRIVATE_PATHS[target]


class LabFiles:
    """Paths every lab this machine builds keeps in its state dir (local lab, VM lab)."""

    state_dir: Path

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def pki(self) -> Pki:
        """etcd's certificates (client-certificate authentication)."""
        return Pki(self.state_dir / "pki")

    @property
    def home(self) -> Path:
        """A HOME whose .ssh/ holds the lab's client key, config and known_hosts (the docker
        SDK reads ~/.ssh)."""
        return self.state_dir / "home"

    @property
    def ssh_dir(self) -> Path:
        return self.home / ".ssh"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"


@dataclass(frozen=True)
class LabPlan(LabFiles):
    """The whole local lab, derived from an inventory with `provider: local`."""

    lab: str
    user: str
    state_dir: Path
    mgmt: IPv4Interface  # the machine's end of the management link
    lan_netns: str
    root_if: str  # the management veth end in the root namespace
    hosts: dict[str, HostPlan]
    etcd_port: int
    #: dockerd gets Docker's cluster store (etcd), as Calico 2.x's global-scope network needs
    cluster_store: bool = False

    @property
    def etcd_host(self) -> HostPlan | None:
        return next((h for h in self.hosts.values() if h.runs_etcd), None)

    @property
    def lock_file(self) -> Path:
        """Outside the state dir, which `down` removes, and keyed like the namespaces (by
        lab name); /run/chainlab is root's own and empties at reboot."""
        return LOCK_DIR / f"local-{self.lab}.lock"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def image_tarball(self) -> Path:
        return self.state_dir / "images" / "mybusybox-rootfs.tar"


def plan_lab(inv: Inventory) -> LabPlan:
    """Derive the local lab from the inventory; refuses anything but `provider: local`."""
    if inv.provider != "local" or inv.local is None:
        raise ChainlabError(
            f"this inventory has provider {inv.provider!r}: `chainlab local` only works on an"
            " inventory with `provider: local` (e.g. -i lab/local.yaml)"
        )
    state_dir = Path(inv.local.state_dir)  # two levels deep at least (the provider's validation)
    lan = inv.local.lan
    etcd_host = inv.etcd.host if inv.etcd else None
    hosts: dict[str, HostPlan] = {}
    for index, (name, host) in enumerate(inv.hosts.items()):
        bip = IPv4Interface(f"{BIP_BASE.network_address + (index + 1) * 256 + 1}/24")
        for other, label in ((lan.network, "local.lan"), (inv.calico.pool, "calico.pool")):
            if bip.network.overlaps(other):
                raise ChainlabError(f"docker bridge {bip.network} of {name} overlaps {label} {other}")
        hosts[name] = HostPlan(
            name=name,
            index=index,
            address=host.address,
            lan=IPv4Interface(f"{host.address}/{lan.network.prefixlen}"),
            flavour="legacy" if host.iptables == "legacy" else "nft",
            runs_etcd=name == etcd_host,
            netns=f"chainlab.{inv.lab}.{name}",
            lan_port=ifname(f"p-{name}"),
            bip=bip,
            cgroup_parent=f"/chainlab.{inv.lab}.{name}",  # = "/" + netns: down relies on it
            dir=state_dir / "hosts" / name,
        )
    return LabPlan(
        lab=inv.lab,
        user=inv.ssh.user,
        state_dir=state_dir,
        mgmt=lan,
        lan_netns=f"chainlab.{inv.lab}",
        root_if=ifname(f"cl-{inv.lab}"),
        hosts=hosts,
        etcd_port=inv.etcd.port if inv.etcd else 2379,
        cluster_store=inv.calico.driver == "calico" and inv.etcd is not None,
    )


# --- config texts ---------------------------------------------------------------------

def sshd_config(plan: LabPlan, host: HostPlan) -> str:
    """Key-only sshd listening on the host's lab address only."""
    return "\n".join([
        "# written by chainlab local up",
        f"ListenAddress {host.address}:{SSH_PORT}",
        f"HostKey {host.host_key}",
        "PidFile /run/sshd.pid",
        f"AuthorizedKeysFile {plan.authorized_keys}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "X11Forwarding no",
        "PrintMotd no",
        f"SetEnv HOME={host.home}",
        "MaxStartups 100",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        "",
    ])


class _SshHost(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> IPv4Address: ...


class SshLab(Protocol):
    """What the SSH client files need of a lab this machine builds (local or VM lab)."""

    @property
    def user(self) -> str: ...
    @property
    def client_key(self) -> Path: ...
    @property
    def known_hosts(self) -> Path: ...
    @property
    def hosts(self) -> Mapping[str, _SshHost]: ...


def ssh_client_config(plan: SshLab) -> str:
    """An OpenSSH client config usable by `ssh -F`, paramiko and the docker SDK."""
    blocks = ["# written by chainlab: ssh -F THIS_FILE HOST"]
    for host in plan.hosts.values():
        blocks.append("\n".join([
            f"Host {host.name} {host.address}",
            f"    HostName {host.address}",
            f"    User {plan.user}",
            f"    Port {SSH_PORT}",
            f"    IdentityFile {plan.client_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {plan.known_hosts}",
            "    StrictHostKeyChecking yes",
            "    ConnectTimeout 10",
        ]))
    return "\n\n".join(blocks) + "\n"


def known_hosts_text(plan: SshLab, public_keys: dict[str, str]) -> str:
    """known_hosts lines from each host's public host key (`TYPE BASE64 [COMMENT]`)."""
    lines = []
    for name, host in plan.hosts.items():
        key_type, key_data = public_keys[name].split()[:2]
        lines.append(f"{host.address},{name} {key_type} {key_data}")
    return "\n".join(lines) + "\n"


def dockerd_argv(plan: LabPlan, host: HostPlan) -> list[str]:
    """dockerd with everything private to the host; its iptables rules land in its netns.

    With Calico, Docker's cluster store points at the lab's etcd (with the client
    certificate), as on Calico 2.x hosts: the `calico` driver's networks are global.
    """
    argv = [
        "/usr/sbin/dockerd",
        "--data-root", str(host.docker_root),
        "--exec-root", "/run/docker-exec",
        "--pidfile", "/run/docker.pid",
        "--host", "unix:///run/docker.sock",
        "--bip", str(host.bip),
        "--cgroup-parent", host.cgroup_parent,
        "--config-file", "/etc/docker/daemon.json",
    ]
    etcd = plan.etcd_host
    if plan.cluster_store and etcd is not None:
        argv += [
            "--cluster-store", f"etcd://{etcd.address}:{plan.etcd_port}",
            "--cluster-advertise", f"{HOST_IF}:2376",
            "--cluster-store-opt", f"kv.cacertfile={plan.pki.ca}",
            "--cluster-store-opt", f"kv.certfile={plan.pki.client_cert}",
            "--cluster-store-opt", f"kv.keyfile={plan.pki.client_key}",
        ]
    return argv


def etcd_argv(plan: LabPlan, host: HostPlan) -> list[str]:
    """Single-member etcd with the v2 API (Calico 2.x's datastore) on the host's address.

    Clients need a certificate signed by the lab's CA (see `chainlab.local.pki`); the peer
    port listens on the host's loopback only (one member, nobody to peer with).
    """
    client = f"https://{host.address}:{plan.etcd_port}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    pki = plan.pki
    return [
        "/usr/bin/etcd",
        "--name", host.name,
        "--data-dir", str(host.etcd_dir),
        "--listen-client-urls", f"{client},https://127.0.0.1:{plan.etcd_port}",
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{host.name}={peer}",
        "--initial-cluster-state", "new",
        "--enable-v2",
        "--client-cert-auth",
        "--trusted-ca-file", str(pki.ca),
        "--cert-file", str(pki.server_cert),
        "--key-file", str(pki.server_key),
    ]


def sshd_argv(host: HostPlan) -> list[str]:
    return ["/usr/sbin/sshd", "-D", "-f", str(host.sshd_config_path), "-E", "/var/log/sshd.log"]


def holder_argv(host: HostPlan) -> list[str]:
    """The process that keeps the host's mount and UTS namespaces (and joins its netns).

    `--kill-child` makes killing the recorded unshare PID also end its `sleep` child.
    """
    return [
        "nsenter", f"--net={host.netns_path}", "--",
        "unshare", "--mount", "--uts", "--propagation", "private", "--kill-child", "--",
        "sleep", "infinity",
    ]


def enter_argv(holder_pid: int, argv: list[str]) -> list[str]:
    """Run `argv` inside a host (its network, mount and UTS namespaces)."""
    return ["nsenter", "-t", str(holder_pid), "-m", "-u", "-n", "--", *argv]


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup hierarchy as mounted on the machine under /sys/fs/cgroup."""

    path: str  # e.g. /sys/fs/cgroup/devices
    fstype: Literal["cgroup", "cgroup2"]
    options: str  # super options without rw/ro, e.g. "devices" or "name=systemd"


def cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup hierarchies in a /proc/PID/mountinfo text."""
    result = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line:
            continue
        sep = fields.index("-")
        fstype, super_opts = fields[sep + 1], fields[sep + 3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        path = fields[4]
        if not path.startswith("/sys/fs/cgroup"):
            continue
        options = ",".join(o for o in super_opts.split(",") if o not in ("rw", "ro"))
        result.append(CgroupMount(path=path, fstype=fstype, options=options))  # type: ignore[arg-type]
    return result


def host_setup_script(plan: LabPlan, host: HostPlan, cgroups: list[CgroupMount]) -> str:
    """Shell script run once inside a fresh host (mount + UTS namespace of its holder).

    Its mounts are made private before anything else: `unshare --propagation private` does
    that in a child it forks after entering the new namespace, so when this script starts its
    mounts can still be peers of the machine's shared ones (/run/netns always is: `ip netns
    add` makes it shared), and an unmount or mount here would then happen on the machine too
    (seen: `umount -R /run/netns` unmounted every network namespace under the machine's
    /run/netns). The copies of the machine's /run/netns mounts are dropped next: they would
    keep other hosts' network namespaces alive after `ip netns del`. A fresh sysfs shows the
    host's own interfaces; the cgroup hierarchies are mounted again under it (dockerd needs
    them).
    """
    q = shlex.quote
    lines = [
        "set -e",
        "mount --make-rprivate /",
        f"hostname {q(host.name)}",
        "if mountpoint -q /run/netns; then umount -R /run/netns; fi",
        "mount -t sysfs sysfs /sys",
    ]
    if cgroups and any(c.path != "/sys/fs/cgroup" for c in cgroups):
        lines.append("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup")
    for cg in cgroups:
        opts = cg.options
        if cg.fstype == "cgroup" and opts.startswith("name="):
            opts = "none," + opts
        lines.append(f"mkdir -p {q(cg.path)}")
        lines.append(f"mount -t {cg.fstype} -o {q(opts or 'defaults')} {cg.fstype} {q(cg.path)}")
    lines += [
        "mount -t tmpfs -o mode=755 tmpfs /run",
        "mkdir -p -m 755 /run/sshd /run/lock",
    ]
    for target in PRIVATE_PATHS:
        lines.append(f"mount --bind {q(str(host.private_source(target)))} {q(target)}")
    lines.append("ip link set lo up")
    return "\n".join(lines) + "\n"


def alternatives_targets(flavour: Flavour) -> dict[str, str]:
    """Where the host's private /etc/alternatives links for iptables point."""
    return {name: f"/usr/sbin/{name.replace('tables', 'tables-' + flavour, 1)}" for name in IPTABLES_ALTERNATIVES}


def daemon_json() -> str:
    """The host's /etc/docker/daemon.json: settings live on the command line."""
    return "{}\n"
