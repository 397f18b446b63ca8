"""`lab up` on a fresh local lab: first (from nothing) vs second (idempotent) wall time, and the ratio.

Brings up its own local lab (lab `provbench`, lan 10.231.98.0/24, state in a temp dir),
runs the real CLI `lab up` twice and `lab down`, and always takes the lab down. Needs root.
Prints figures, never pass/fail (exit 1 only if a run itself failed).
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
LAN = "10.231.98"


def inventory(directory: Path) -> Path:
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["lab"] = "provbench"
    doc["local"] = {"lan": f"{LAN}.1/24", "state_dir": str(directory / "state")}
    for host in doc["hosts"].values():
        host["address"] = f"{LAN}." + str(host["address"]).rsplit(".", 1)[1]
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed(inv: Path, *args: str) -> float:
    started = time.monotonic()
    proc = subprocess.run([CHAINLAB, "-i", str(inv), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"chainlab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chainlab-provbench-") as tmp:
        inv = inventory(Path(tmp))
        try:
            timed(inv, "local", "up")
            first = timed(inv, "lab", "up")
            second = timed(inv, "lab", "up")
            down = timed(inv, "lab", "down")
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            subprocess.run([CHAINLAB, "-i", str(inv), "local", "down"], capture_output=True)
    print("provisioning (chainlab lab up on a 3-host local lab, wall time)")
    print(f"  first lab up  (from nothing): {first:6.2f} s")
    print(f"  second lab up (idempotent):   {second:6.2f} s")
    print(f"  ratio first/second:           {first / second:6.1f} x")
    print(f"  lab down:                     {down:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
