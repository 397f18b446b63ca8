"""`chainlab matrix` on a private local lab (lab `exn`, 10.231.72.0/24, all hosts legacy as in
lab/local.yaml): 3 hosts + 3 containers, all 30 pairs, ICMP three times (2 captures each: see attribute.plan_waves), then TCP to port 80.

Target: the 6×6 ICMP matrix in ≤ 15 s wall. Needs root; always takes the lab down.
Figures, not pass/fail: exit 1 only if a command itself failed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchlab import private_lab, timed

LAN = "10.231.72"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chainlab-matrixbench-") as tmp, private_lab(Path(tmp), "exn", LAN) as inv:
        runs = str(Path(tmp) / "runs")
        try:
            timed(inv, "local", "up")
            timed(inv, "lab", "up")
            icmp = [timed(inv, "matrix", "--runs", runs) for _ in range(3)]
            tcp = timed(inv, "matrix", "--proto", "tcp:80", "--runs", runs)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    load = os.getloadavg()[0]
    print(f"chainlab matrix, 6x6 (ICMP in 2 captures, TCP at once) on the local lab, wall time (load average {load:.1f})")
    print(f"  icmp: {', '.join(f'{s:.1f}' for s in icmp)} s  (target <= 15 s: {'ok' if min(icmp) <= 15 else 'MISSED'})")
    print(f"  tcp:80 (listeners on the hosts): {tcp:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
