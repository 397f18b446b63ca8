"""Cold `chainlab local up` and `local down` wall times (targets: up <= 30 s, down <= 10 s).

Runs the real CLI on a copy of lab/local.yaml with its own lab name, lan and state dir,
so it never touches a lab someone brought up by hand. Needs root. Exit 1 if a target is missed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAINLAB = str(Path(sys.executable).parent / "chainlab")
TARGETS = {"up": 30.0, "down": 10.0}


def inventory(directory: Path) -> Path:
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["lab"] = "bench"
    doc["local"] = {"lan": "10.231.93.1/24", "state_dir": str(directory / "state")}
    for host in doc["hosts"].values():
        host["address"] = "10.231.93." + str(host["address"]).rsplit(".", 1)[1]
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed(inv: Path, action: str) -> float:
    started = time.monotonic()
    subprocess.run([CHAINLAB, "-i", str(inv), "local", action], check=True, capture_output=True)
    return time.monotonic() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chainlab-bench-") as tmp:
        inv = inventory(Path(tmp))
        try:
            times = {"up": timed(inv, "up"), "down": timed(inv, "down")}
        finally:
            subprocess.run([CHAINLAB, "-i", str(inv), "local", "down"], capture_output=True)
    ok = True
    for action, seconds in times.items():
        met = seconds <= TARGETS[action]
        ok &= met
        print(f"local {action:<4} cold {seconds:6.2f} s  (target <= {TARGETS[action]:.0f} s) {'ok' if met else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
