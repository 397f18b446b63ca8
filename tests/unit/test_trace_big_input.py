"""Hostile input sizes: one endless line, a gzip of zero bytes, a gzip of empty lines.

Both engines read such logs in flat memory (lines are cut at reader.LINE_LIMIT bytes and
counted in cut_lines) and finish. Peak memory is GNU time's %M of the analyzer process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
GNU_TIME = "/usr/bin/time"
MIB = 1 << 20
#: Far below what reading any of these inputs whole would take.
PEAK_LIMIT_MB = 160

pytestmark = pytest.mark.skipif(not os.access(GNU_TIME, os.X_OK), reason="GNU time is needed to measure peak memory")


def _gzip(path: Path, piece: bytes, total: int) -> Path:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    chunk = piece * (MIB // len(piece))
    with open(path, "wb") as out:
        for _ in range(total // len(chunk)):
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())
    return path


def _analyze(path: Path, engine: str, tmp_path: Path) -> tuple[dict, float]:
    figures = tmp_path / "time.txt"
    proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(figures), CHAINLAB, "analyze", "--format", "json", f"n={path}"],
                          capture_output=True, env={**os.environ, "CHAINLAB_ENGINE": engine}, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return json.loads(proc.stdout), int(figures.read_text().split()[-1]) / 1024


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("big")
    line = base / "one-line.log"
    with open(line, "wb") as out:  # 256 MiB without a newline, a TRACE header at its start
        out.write(b"Dec  2 03:38:09 master kernel: TRACE: raw:PREROUTING:policy:2 IN=eth0 OUT= SRC=1.1.1.1 ")
        block = b"x" * MIB
        for _ in range(256):
            out.write(block)
    return {
        "one-line": line,
        "zeros.gz": _gzip(base / "zeros.log.gz", b"\0", 256 * MIB),
        "newlines.gz": _gzip(base / "newlines.log.gz", b"\n", 256 * MIB),
    }


@pytest.mark.parametrize("engine", ["python", "native"])
@pytest.mark.parametrize("name,lines,cut", [("one-line", 1, 1), ("zeros.gz", 1, 1), ("newlines.gz", 256 * MIB, 0)])
def test_flat_memory(inputs, tmp_path, engine, name, lines, cut):
    if engine == "native" and shutil.which(CHAINLAB) is None:
        pytest.skip("no chainlab executable")
    doc, peak_mb = _analyze(inputs[name], engine, tmp_path)
    assert (doc["lines"], doc["cut_lines"]) == (lines, cut)
    assert peak_mb < PEAK_LIMIT_MB, f"{name} ({engine}): peak {peak_mb:.0f} MB"
