"""Cold `chainlab local up` and `local down` wall times (targets: up <= 30 s, down <= 10 s).

Runs the real CLI on a copy of lab/local.yaml with its own lab name, lan and state dir,
so it never touches a lab someone brought up by hand. Needs root. Figures, not pass/fail:
exit 1 only if a command itself failed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchlab import private_lab, timed

TARGETS = {"up": 30.0, "down": 10.0}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chainlab-bench-") as tmp, private_lab(Path(tmp), "bench", "10.231.93") as inv:
        try:
            times = {"up": timed(inv, "local", "up"), "down": timed(inv, "local", "down")}
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    for action, seconds in times.items():
        met = seconds <= TARGETS[action]
        print(f"local {action:<4} cold {seconds:6.2f} s  (target <= {TARGETS[action]:.0f} s) {'ok' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
