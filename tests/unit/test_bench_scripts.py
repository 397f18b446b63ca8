"""`make bench`'s scripts at least import (each in its own interpreter: benchlab changes the
environment it runs in), so a helper renamed or removed is caught before a bench run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("module", sorted(p.stem for p in BENCH.glob("*.py")))
def test_bench_script_imports(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=BENCH, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(BENCH)})
    assert proc.returncode == 0, proc.stderr
