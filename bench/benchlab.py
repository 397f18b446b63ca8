"""Shared by the lab benchmarks: a private copy of lab/local.yaml, and timed CLI calls."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAINLAB = str(Path(sys.executable).parent / "chainlab")


def inventory(directory: Path, lab: str, lan: str) -> Path:
    """lab/local.yaml renamed `lab`, on `lan` (e.g. 10.231.98), with its state in `directory`."""
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["lab"] = lab
    doc["local"] = {"lan": f"{lan}.1/24", "state_dir": str(directory / "state")}
    for host in doc["hosts"].values():
        host["address"] = f"{lan}." + str(host["address"]).rsplit(".", 1)[1]
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed(inv: Path, *args: str, cwd: Path | None = None) -> float:
    """Wall time of `chainlab -i INV ARGS...`; a failure raises with its output."""
    started = time.monotonic()
    proc = subprocess.run([CHAINLAB, "-i", str(inv), *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"chainlab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started
