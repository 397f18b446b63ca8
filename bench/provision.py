"""`lab up` on a fresh local lab: first (from nothing) vs second (idempotent) wall time, and the ratio.

Brings up its own local lab (lab `provbench`, lan 10.231.98.0/24, state in a temp dir),
runs the real CLI `lab up` twice and `lab down`, and always takes the lab down. Needs root.
Prints figures, never pass/fail (exit 1 only if a run itself failed).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchlab import private_lab, timed

LAN = "10.231.98"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chainlab-provbench-") as tmp, private_lab(Path(tmp), "provbench", LAN) as inv:
        try:
            timed(inv, "local", "up")
            first = timed(inv, "lab", "up")
            second = timed(inv, "lab", "up")
            down = timed(inv, "lab", "down")
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    print("provisioning (chainlab lab up on a 3-host local lab, wall time)")
    print(f"  first lab up  (from nothing): {first:6.2f} s")
    print(f"  second lab up (idempotent):   {second:6.2f} s")
    print(f"  ratio first/second:           {first / second:6.1f} x")
    print(f"  lab down:                     {down:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
