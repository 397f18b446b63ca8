"""Big kernel logs are parsed in a helper process: the analysis must not notice."""

import gzip
import random

import pytest

from chainlab.trace.contract import PacketRecord
from chainlab.errors import InputError
from chainlab.trace import reader
from chainlab.trace.parse_kernel import KernelLineParser
from chainlab.trace.pipeline import analyze
from chainlab.trace.reader import LogSource

from ..conftest import FIXTURES

KERNEL_LOGS = sorted(p for p in FIXTURES.rglob("*.log") if "monitor" not in p.name)


def _damaged_log(tmp_path, seed: int):
    """Real lines repeated, some cut, glued or garbled, and some noise."""
    rng = random.Random(seed)
    real = [line for path in KERNEL_LOGS for line in path.read_text(errors="replace").splitlines()]
    out = []
    for _ in range(3000):
        line = rng.choice(real)
        a, b = sorted(rng.randrange(len(line) + 1) for _ in range(2))
        roll = rng.random()
        if roll < 0.04:
            line = line[:a] + line[b:]
        elif roll < 0.06:
            line = line + rng.choice(real)
        elif roll < 0.08:
            line = line[:a]
        elif roll < 0.09:
            line = "random noise TRACE: " + line[a:]
        out.append(line)
    path = tmp_path / f"damaged{seed}.log"
    path.write_text("\n".join(out) + "\n")
    return path


def _summary(result):
    stats = result.stats
    return (
        [PacketRecord.from_packet(p).to_dict() for p in result.packets],
        [f.to_dict() for f in result.flows],
        (stats.lines, stats.trace_records, stats.skipped_lines, stats.ignored_lines),
        result.nodes,
    )


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("node", [None, "n"])
def test_helper_process_gives_the_same_analysis(tmp_path, monkeypatch, seed, node):
    paths = KERNEL_LOGS + [_damaged_log(tmp_path, seed)]
    sources = [LogSource(path, node) for path in paths]
    monkeypatch.setattr(KernelLineParser, "CACHE_SIZE", 8)  # serials forgotten often
    in_process = _summary(analyze(sources))
    monkeypatch.setattr(reader, "HELPER_MIN_BYTES", 0)
    monkeypatch.setattr(reader, "HELPER_BATCH_LINES", 5)
    assert _summary(analyze(sources)) == in_process


def test_helper_errors_reach_the_reader(tmp_path, monkeypatch):
    line = KERNEL_LOGS[0].read_text().splitlines()[0]
    path = tmp_path / "broken.log.gz"
    path.write_bytes(gzip.compress(("\n".join([line] * 600) + "\n").encode()) + b"not gzip")
    monkeypatch.setattr(reader, "HELPER_MIN_BYTES", 0)
    with pytest.raises(InputError, match="broken.log.gz: log: bytes after the gzip data are not gzip"):
        analyze([LogSource(path, "n")])


def test_a_truncated_file_is_the_same_clean_error_in_the_helper(tmp_path, monkeypatch):
    line = KERNEL_LOGS[0].read_text().splitlines()[0]
    data = gzip.compress(("\n".join([line] * 5000) + "\n").encode())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    monkeypatch.setattr(reader, "HELPER_MIN_BYTES", 0)
    with pytest.raises(InputError, match=r"cut.log.gz: log: gzip data ends early"):
        analyze([LogSource(path, "n")])
