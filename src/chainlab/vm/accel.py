"""KVM or TCG: use KVM only where a guest kernel really runs under it.

`/dev/kvm` can exist and open and still run nothing: on this kind of machine (KVM in PVM
mode) qemu starts, the guest prints nothing and hangs, and `-cpu host` aborts. So the
probe boots the image's own kernel under KVM with no disk and waits for its first console
line (under working KVM it comes in well under a second). The answer is kept for the
machine's uptime in /run/chainlab, keyed by the kernel and qemu.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from chainlab.errors import ChainlabError
from chainlab.files import write_atomic
from chainlab.vm.plan import Accel

KVM_DEVICE = Path("/dev/kvm")
CACHE = Path("/run/chainlab/vm-accel.json")
PROBE_TIMEOUT = 6.0
BANNER = b"Linux version"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str

    def describe(self) -> str:
        return f"{'KVM' if self.accel == 'kvm' else 'TCG (software emulation)'}: {self.reason}"


def probe_argv(kernel: Path, console: Path) -> list[str]:
    """A diskless guest under KVM that only has to print its kernel banner."""
    return ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-no-reboot", "-accel", "kvm",
            "-cpu", "host", "-m", "256", "-display", "none", "-serial", f"file:{console}",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]


def _probe_key(kernel: Path) -> str:
    st = kernel.stat()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"{kernel}:{st.st_size}:{int(st.st_mtime)}:{qemu}"


def _probe(kernel: Path) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="chainlab-kvm-") as tmp:
        console = Path(tmp) / "console"
        started = time.monotonic()
        proc = subprocess.Popen(probe_argv(kernel, console), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while time.monotonic() - started < PROBE_TIMEOUT:
                if console.exists() and BANNER in console.read_bytes():
                    return True, f"a guest kernel booted under KVM in {time.monotonic() - started:.1f} s"
                if proc.poll() is not None:
                    err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                    last = err.splitlines()[-1] if err else f"exit {proc.returncode}"
                    return False, f"/dev/kvm is there but qemu -accel kvm failed ({last})"
                time.sleep(0.1)
            return False, f"/dev/kvm is there but a guest kernel printed nothing under KVM in {PROBE_TIMEOUT:.0f} s"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def choose_accel(wanted: str, kernel: Path) -> AccelChoice:
    """`wanted` is the inventory's qemu.accel: auto, kvm (required) or tcg."""
    if wanted == "tcg":
        return AccelChoice("tcg", "qemu.accel is tcg")
    if not KVM_DEVICE.exists() or not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        works, why = False, "no usable /dev/kvm"
    else:
        key = _probe_key(kernel)
        try:
            cached = json.loads(CACHE.read_text())
        except (OSError, ValueError):
            cached = {}
        if cached.get("key") == key:
            works, why = bool(cached["works"]), str(cached["why"])
        else:
            works, why = _probe(kernel)
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(CACHE, json.dumps({"key": key, "works": works, "why": why}))
    if works:
        return AccelChoice("kvm", why)
    if wanted == "kvm":
        raise ChainlabError(f"qemu.accel is kvm, but {why}: set qemu.accel to auto or tcg")
    return AccelChoice("tcg", why)
