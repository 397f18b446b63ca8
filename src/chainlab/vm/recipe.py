"""The VM image recipe (pure): Debian packages, the files baked in, and the cache key.

One image serves every VM of every VM lab: what differs between VMs (name, address, keys,
iptables flavour, etcd) comes from a small seed disk read at boot (`chainlab.vm.plan`).
Anything that changes the image's bytes is in `recipe_key`, so a changed recipe gets a
new cache entry and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
#: Bumped when the build procedure changes in a way the texts below do not show.
RECIPE_VERSION = 1
#: Size of the root filesystem (sparse; about 1.1 GB is used).
ROOTFS_SIZE = "4G"
ROOT_LABEL = "clroot"

#: What a reference VM has (systemd, sshd, rsyslog, iptables, dockerd), what the VM lab adds
#: (etcd on the etcd host, busybox for the test image) and what the Calico emulation needs
#: inside a VM (python3 with etcd and jinja2, ipset, a venv for the chainlab wheel).
PACKAGES: tuple[str, ...] = (
    # boot and base system
    "systemd-sysv", "udev", "dbus", "kmod", "procps", "netbase", "iproute2", "iputils-ping",
    "linux-image-amd64", "initramfs-tools", "zstd",
    # what provisioning uses on a reference VM
    "openssh-server", "rsyslog", "iptables", "ipset", "conntrack", "docker.io",
    # the lab's etcd and test image
    "etcd-server", "busybox-static",
    # the Calico emulation inside the VMs
    "python3", "python3-etcd", "python3-jinja2", "python3-venv",
)

#: Kernel modules the initramfs needs to mount the root disk. Only these (MODULES=list):
#: Debian's default (most) makes a 31 MB initrd that takes seconds to unpack under TCG.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "ext4")

#: Where the seed disk is mounted while the seed script runs.
SEED_MOUNT = "/run/chainlab-seed"
#: The etcd settings the seed writes on the etcd host only; etcd.service runs only if present.
ETCD_ENV = "/etc/chainlab/etcd.env"

SEED_UNIT = """\
[Unit]
Description=chainlab seed: this VM's name, address, keys and roles from the second disk
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target network-pre.target systemd-networkd.service ssh.service
Wants=network-pre.target
ConditionPathExists=/dev/vdb

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/chainlab-seed

[Install]
WantedBy=sysinit.target
"""

SEED_RUNNER = f"""\
#!/bin/sh
# Mount the seed disk read-only, run its apply.sh, unmount (written by chainlab vm image).
set -e
mkdir -p {SEED_MOUNT}
mount -o ro /dev/vdb {SEED_MOUNT}
rc=0
sh {SEED_MOUNT}/apply.sh || rc=$?
umount {SEED_MOUNT}
exit $rc
"""

ETCD_DROPIN = f"""\
[Unit]
ConditionPathExists={ETCD_ENV}
# it listens on the VM's lab address: only once that is configured
After=network-online.target

[Service]
EnvironmentFile={ETCD_ENV}
"""

#: Units that would reach for the network (apt) or do maintenance while a scenario runs,
#: and module preloads nothing in the lab needs (each costs boot time under TCG).
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
                "fstrim.timer", "e2scrub_reap.service", "modprobe@drm.service", "modprobe@fuse.service")


def essential_hook() -> str:
    """Runs after the essential packages, before the kernel: the initramfs settings must be
    in place when linux-image-amd64 builds the initrd (once)."""
    modules = "\\n".join(INITRAMFS_MODULES)
    return "\n".join([
        "set -e",
        'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"',
        'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/chainlab.conf"',
        f'printf "{modules}\\n" > "$1/usr/share/initramfs-tools/modules.d/chainlab"',
        "",
    ])


def customize_hook() -> str:
    """Runs on the finished root filesystem ("$1"): fstab, the seed unit, no shared host keys."""
    q = shlex.quote
    return "\n".join([
        "set -e",
        'R="$1"',
        'echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$R/etc/fstab"',
        # every VM gets its own host key from its seed; none may be shared through the image
        'rm -f "$R"/etc/ssh/ssh_host_*',
        f'printf %s {q(SEED_UNIT)} > "$R/etc/systemd/system/chainlab-seed.service"',
        f'printf %s {q(SEED_RUNNER)} > "$R/usr/local/sbin/chainlab-seed"',
        'chmod 755 "$R/usr/local/sbin/chainlab-seed"',
        'mkdir -p "$R/etc/systemd/system/etcd.service.d"',
        f'printf %s {q(ETCD_DROPIN)} > "$R/etc/systemd/system/etcd.service.d/chainlab.conf"',
        'chroot "$R" systemctl enable --quiet chainlab-seed.service systemd-networkd.service',
        f'chroot "$R" systemctl mask --quiet {" ".join(MASKED_UNITS)}',
        # a VM is told its name by the seed; machine-id is made at first boot (one per VM)
        'rm -f "$R/etc/hostname"; : > "$R/etc/machine-id"',
        "",
    ])


def mmdebstrap_argv(root: Path, hooks: Path) -> list[str]:
    """mmdebstrap into directory `root`; the hook scripts were written to `hooks`."""
    return [
        "mmdebstrap", "--variant=minbase", "--verbose",
        f"--include={','.join(PACKAGES)}",
        f"--essential-hook=sh {hooks / 'essential.sh'} \"$1\"",
        f"--customize-hook=sh {hooks / 'customize.sh'} \"$1\"",
        SUITE, str(root),
    ]


def mkfs_argv(root: Path, image: Path) -> list[str]:
    return ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root), str(image), ROOTFS_SIZE]


def recipe_key() -> str:
    """Hex digest of everything that decides the image's contents."""
    recipe = {
        "version": RECIPE_VERSION, "suite": SUITE, "packages": sorted(PACKAGES), "size": ROOTFS_SIZE,
        "essential": essential_hook(), "customize": customize_hook(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ImagePaths:
    """One built image in the cache: `image_dir/<key>/`."""

    dir: Path

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def busybox_tarball(self) -> Path:
        """The `mybusybox` rootfs, from the image's own busybox-static."""
        return self.dir / "mybusybox-rootfs.tar"

    @property
    def manifest(self) -> Path:
        """Written last: an image whose manifest exists is complete."""
        return self.dir / "manifest.json"


def image_paths(image_dir: Path, key: str | None = None) -> ImagePaths:
    return ImagePaths(image_dir / (key or recipe_key())[:16])


# --- progress ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildEvent:
    """What one line of mmdebstrap --verbose output tells about progress."""

    stage: str | None = None  # a new stage's description
    total: int | None = None  # packages to fetch/install
    fetched: bool = False  # one more package downloaded
    unpacked: bool = False  # one more package set up


STAGES = {
    "I: running apt-get update": "reading package lists",
    "I: downloading packages with apt": "downloading packages",
    "I: extracting archives": "extracting",
    "I: installing essential packages": "installing essential packages",
    "I: installing remaining packages": "installing packages",
    "I: running --customize-hook": "customizing",
    "I: cleaning package lists": "cleaning up",
}


def parse_build_line(line: str) -> BuildEvent | None:
    """Progress from one line of mmdebstrap --verbose (apt and dpkg speak through it)."""
    for prefix, stage in STAGES.items():
        if line.startswith(prefix):
            return BuildEvent(stage=stage)
    words = line.split()
    if len(words) > 4 and words[1] == "upgraded," and words[3] == "newly" and words[2].isdigit():
        return BuildEvent(total=int(words[2]))  # "0 upgraded, 250 newly installed, 0 to remove ..."
    if line.startswith("Get:"):
        return BuildEvent(fetched=True)
    if line.startswith("Setting up "):
        return BuildEvent(unpacked=True)
    return None
