"""Scenario runs and the newcomer's path, on a private local lab (lab `scenbench`, 10.231.97.0/24).

Measures: the cold path `local up` + `lab up` + `nightly` (what `make demo` does once
dependencies are installed; target under 5 minutes), then one scenario run (`chainlab run 1`,
three times; target ≤ 2 s wall each). Always takes the lab down. Needs root. Figures, not
pass/fail: exit 1 only if a command itself failed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchlab import CHAINLAB, ROOT, inventory, timed

LAN = "10.231.97"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chainlab-scenbench-") as tmp:
        inv = inventory(Path(tmp), "scenbench", LAN)
        runs = Path(tmp) / "runs"
        try:
            up = timed(inv, "local", "up")
            provision = timed(inv, "lab", "up")
            nightly = timed(inv, "nightly", "--runs", str(runs), "--scenarios", str(ROOT / "scenarios"))
            singles = [timed(inv, "run", "1", "--runs", str(runs), "--scenarios", str(ROOT / "scenarios")) for _ in range(3)]
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            subprocess.run([CHAINLAB, "-i", str(inv), "local", "down"], capture_output=True)
    cold = up + provision + nightly
    print("scenario runs on a 3-host local lab (wall time)")
    print(f"  local up {up:.1f} s + lab up {provision:.1f} s + nightly {nightly:.1f} s = {cold:.1f} s"
          f"  (target < 300 s: {'ok' if cold < 300 else 'MISSED'})")
    print(f"  chainlab run 1: {', '.join(f'{s:.2f}' for s in singles)} s"
          f"  (target <= 2 s: {'ok' if min(singles) <= 2 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
