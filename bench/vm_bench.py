"""The VM lab from nothing to a passed nightly (issue 14): image, boot, lab up, each scenario.

A private copy of lab/vm.yaml (lab `vm`, 10.231.80.0/24) with its own state dir and its own,
empty image cache: the image is built from scratch (packages downloaded) as on a fresh
machine. Targets: all of it <= 10 minutes; the three VMs <= 3 GB of host memory (peak RSS
of the qemu processes, summed). Needs root. Figures, not pass/fail: exit 1 only if a
command itself failed or a scenario did not pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from benchlab import CHAINLAB, ROOT, timed

TOTAL_TARGET_S = 600.0
MEMORY_TARGET_MIB = 3 * 1024


def inventory(directory: Path) -> Path:
    doc = yaml.safe_load((ROOT / "lab" / "vm.yaml").read_text())
    doc["qemu"]["state_dir"] = str(directory / "state")
    doc["qemu"]["image_dir"] = str(directory / "images")
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class MemoryWatch:
    """Polls the VMs' qemu processes (those in the lab's namespace) for their summed RSS."""

    def __init__(self, netns: str):
        self.netns = netns
        self.peak_mib = 0
        self.per_vm_mib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
            total = 0
            for pid in pids:
                try:
                    rss = next(int(r.split()[1]) for r in Path(f"/proc/{pid}/status").read_text().splitlines()
                               if r.startswith("VmRSS:")) // 1024
                except (OSError, StopIteration):
                    continue
                self.per_vm_mib[int(pid)] = max(self.per_vm_mib.get(int(pid), 0), rss)
                total += rss
            self.peak_mib = max(self.peak_mib, total)


def main() -> int:
    if os.geteuid() != 0:
        print("the VM lab needs root", file=sys.stderr)
        return 1
    load = Path("/proc/loadavg").read_text().split()[:3]
    rows: list[tuple[str, float, bool]] = []  # (what, seconds, part of "from nothing to a passed nightly")
    with tempfile.TemporaryDirectory(prefix="chainlab-vm-bench-", dir="/var/tmp") as tmp:
        inv = inventory(Path(tmp))
        runs = Path(tmp) / "runs"
        failed = False
        try:
            with MemoryWatch("chainlab.vm") as memory:
                rows.append(("image (cold build)", timed(inv, "vm", "image"), True))
                rows.append(("vm up (boot 3 VMs)", timed(inv, "vm", "up"), True))
                rows.append(("lab up", timed(inv, "lab", "up"), True))
                started = time.monotonic()
                proc = subprocess.run([CHAINLAB, "-i", str(inv), "nightly", "--runs", str(runs)],
                                      capture_output=True, text=True)
                nightly = time.monotonic() - started
                summary = json.loads(next(runs.glob("nightly-*/summary.json")).read_text())
                for scenario in summary["scenarios"]:
                    mark = "" if scenario["passed"] else "  FAILED"
                    rows.append((f"  scenario {scenario['id']}: {scenario['title']}{mark}", scenario["duration_s"], False))
                rows.append(("nightly (all scenarios)", nightly, True))
                failed = proc.returncode != 0
                rows.append(("lab down", timed(inv, "lab", "down"), False))
            rows.append(("vm down", timed(inv, "vm", "down"), False))
        except (RuntimeError, StopIteration) as exc:
            print(exc, file=sys.stderr)
            subprocess.run([CHAINLAB, "-i", str(inv), "vm", "down"], capture_output=True)
            return 1
    total = sum(seconds for _, seconds, counts in rows if counts)
    for name, seconds, _ in rows:
        print(f"{name:<48} {seconds:7.1f} s")
    print(f"{'from nothing to a passed nightly':<48} {total:7.1f} s  (target <= {TOTAL_TARGET_S:.0f} s)"
          f" {'ok' if total <= TOTAL_TARGET_S and not failed else 'MISSED'}")
    per_vm = ", ".join(f"{m} MiB" for m in memory.per_vm_mib.values())
    print(f"{'host memory of the 3 VMs (peak, summed)':<48} {memory.peak_mib:7d} MiB (target <= {MEMORY_TARGET_MIB} MiB)"
          f" {'ok' if memory.peak_mib <= MEMORY_TARGET_MIB else 'MISSED'}; per VM peak: {per_vm}")
    print(f"load average before: {' '.join(load)} (2 cores; other work on the machine slows TCG)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
