"""Logs and rule snapshots that cannot be read are clean InputErrors, never tracebacks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from chainlab.trace.contract import PacketRecord
from chainlab.errors import InputError
from chainlab.trace import reader
from chainlab.trace.pipeline import analyze
from chainlab.trace.reader import LogSource, check_gzip_intact
from chainlab.trace.rules import load_rules

from ..conftest import FIXTURES

LOG = FIXTURES / "seed-logs" / "scenario1-master.log"


def _gzipped_log(tmp_path: Path, keep: float = 1.0) -> Path:
    data = gzip.compress(LOG.read_bytes())
    path = tmp_path / "master.log.gz"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_a_gzipped_log_is_read(tmp_path: Path) -> None:
    plain = analyze([LogSource(LOG, "m")]).packets
    gzipped = analyze([LogSource(_gzipped_log(tmp_path), "m")]).packets
    assert plain and [PacketRecord.from_packet(p).to_dict() for p in gzipped] == [PacketRecord.from_packet(p).to_dict() for p in plain]


def test_gz_name_without_gzip_data(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_text("not gzip\n")
    with pytest.raises(InputError) as info:
        analyze([LogSource(path)])
    assert str(info.value) == f"{path}: log: not a gzip file"
    assert info.value.exit_code == 2


def test_truncated_gzip(tmp_path: Path) -> None:
    path = _gzipped_log(tmp_path, keep=0.5)
    with pytest.raises(InputError, match="log: gzip data ends early"):
        analyze([LogSource(path, "m")])


def test_corrupt_gzip_data(tmp_path: Path) -> None:
    path = _gzipped_log(tmp_path)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC in the trailer
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="log: corrupt gzip data"):
        analyze([LogSource(path, "m")])


def test_unreadable_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads a chmod 000 file, so the refusal is simulated.
    def refuse(path: object, mode: str = "r") -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(reader, "open", refuse, raising=False)
    with pytest.raises(InputError) as info:
        analyze([LogSource(LOG, "m")])
    assert str(info.value) == f"{LOG}: log: cannot read: Permission denied"


def test_directory_as_log(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="log: cannot read: Is a directory"):
        analyze([LogSource(tmp_path, "m")])


def test_unreadable_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    path = tmp_path / "rules.txt"
    path.write_text("*filter\nCOMMIT\n")
    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(InputError) as info:
        load_rules(path)
    assert str(info.value) == f"{path}: --rules: cannot read: Permission denied"


def test_check_gzip_intact(tmp_path: Path) -> None:
    check_gzip_intact(LOG)  # not gzip: nothing to check
    check_gzip_intact(_gzipped_log(tmp_path))
    with pytest.raises(InputError, match="log: gzip data ends early"):
        check_gzip_intact(_gzipped_log(tmp_path, keep=0.9))
