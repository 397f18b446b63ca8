"""Scenario runs and the newcomer's path, on a private local lab (lab `scenbench`, 10.231.97.0/24).

Measures what `make demo` does on a fresh clone once the Debian packages are installed:
`make venv` in a fresh clone of this repository (pip from the package index), then the cold
path `local up` + `lab up` + `nightly` (target for all of it: under 5 minutes), then one
scenario run (`chainlab run 1`, three times; target ≤ 2 s wall each). Always takes the lab
down. Needs root. Figures, not pass/fail: exit 1 only if a command itself failed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchlab import ROOT, private_lab, timed, timed_argv

LAN = "10.231.97"


def fresh_venv(directory: Path) -> float:
    """Wall time of `make venv` in a fresh clone (the apt part is already done here)."""
    clone = directory / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    return timed_argv(["make", "-C", str(clone), "venv"])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chainlab-scenbench-") as tmp, private_lab(Path(tmp), "scenbench", LAN) as inv:
        runs = Path(tmp) / "runs"
        try:
            venv = fresh_venv(Path(tmp))
            up = timed(inv, "local", "up")
            provision = timed(inv, "lab", "up")
            nightly = timed(inv, "nightly", "--runs", str(runs), "--scenarios", str(ROOT / "scenarios"))
            singles = [timed(inv, "run", "1", "--runs", str(runs), "--scenarios", str(ROOT / "scenarios")) for _ in range(3)]
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    cold = venv + up + provision + nightly
    print("make demo's path on a fresh clone, Debian packages present, and scenario runs (wall time)")
    print(f"  make venv {venv:.1f} s + local up {up:.1f} s + lab up {provision:.1f} s + nightly {nightly:.1f} s"
          f" = {cold:.1f} s  (target < 300 s: {'ok' if cold < 300 else 'MISSED'})")
    print(f"  chainlab run 1: {', '.join(f'{s:.2f}' for s in singles)} s"
          f"  (target <= 2 s: {'ok' if min(singles) <= 2 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
