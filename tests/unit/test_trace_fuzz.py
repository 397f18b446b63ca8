"""Whatever a log contains, the analyzer counts and goes on: it never raises."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainlab.trace.contract import PacketRecord
from chainlab.trace.pipeline import analyze
from chainlab.trace.reader import LogSource

from ..conftest import FIXTURES

REAL_LINES = [
    line
    for path in sorted((FIXTURES).rglob("*.log"))
    for line in path.read_text(errors="replace").splitlines()
    if line.strip()
]


def _mutate(line: str, rng: random.Random) -> str:
    if not line:
        return line
    a, b = sorted(rng.randrange(len(line) + 1) for _ in range(2))
    choice = rng.randrange(4)
    if choice == 0:
        return line[:a] + line[b:]  # a chunk lost, the ends glued
    if choice == 1:
        return line[:a]  # cut
    if choice == 2:
        other = rng.choice(REAL_LINES)
        return line[:a] + other[rng.randrange(len(other)):]  # two lines glued
    return line[:a] + "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(b - a)) + line[b:]


def _run(tmp_path, text: str, name: str = "fuzz.log") -> None:
    path = tmp_path / name
    path.write_text(text)
    result = analyze([LogSource(path, "n")])
    for packet in result.packets:
        PacketRecord.from_packet(packet).to_dict()
    assert result.stats.skipped_lines >= 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 60))
def test_mutated_real_lines_never_raise(tmp_path, seed, count):
    rng = random.Random(seed)
    lines = [_mutate(rng.choice(REAL_LINES), rng) for _ in range(count)]
    _run(tmp_path, "\n".join(lines))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("TRACE: natfilr:PREOUTINGpolicyrule0123456789=IDSEQ xPACKETtrace id \n")), max_size=600))
def test_random_trace_like_text_never_raises(tmp_path, text):
    _run(tmp_path, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_never_raise(tmp_path, data):
    path = tmp_path / "bytes.log"
    path.write_bytes(data)
    analyze([LogSource(path)])
