"""Inputs are regular files of bounded size (never a hang, never read whole when too big);
outputs are written whole or not at all, and no temporary file stays behind."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainlab.errors import ChainlabError, InputError
from chainlab.files import OutputError, check_output_file, read_regular_file, write_atomic

ROOT = Path(__file__).resolve().parents[2]
CHAINLAB = Path(sys.executable).parent / "chainlab"


def test_a_regular_file_is_read():
    path = ROOT / "scenarios" / "01-host-to-container.yaml"
    assert read_regular_file(path, 1_000_000) == path.read_bytes()


@pytest.mark.parametrize(("make", "kind"), [
    (lambda d: os.mkfifo(d / "fifo") or d / "fifo", "a FIFO"),
    (lambda d: Path("/dev/zero"), "a character device"),
    (lambda d: d, "a directory"),
])
def test_fifo_device_and_directory_are_refused_at_once(tmp_path, make, kind):
    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(InputError, match=f"cannot read: {kind}, not a regular file"):
        read_regular_file(path, 1_000_000)
    assert time.monotonic() - started < 1


def test_a_huge_file_is_refused_from_its_size_without_reading_it(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(2 * 1024**3)  # 2 GB, sparse
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match=r"file larger than 1000000 bytes \(2147483648 bytes\)"):
        read_regular_file(big, 1_000_000)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB


def test_missing_file_is_a_clean_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read: No such file"):
        read_regular_file(tmp_path / "nope.yaml", 10)


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHAINLAB), *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "03-fifo.yaml"
    os.mkfifo(path)
    yield path


@pytest.mark.skipif(not CHAINLAB.exists(), reason="console script not installed")
def test_cli_refuses_fifo_and_device_inputs_without_hanging(tmp_path, fifo):
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(2 * 1024**3)
    log = ROOT / "tests" / "fixtures" / "lab" / "scenario4-master.log"
    cases = [
        (("-i", str(fifo), "inventory", "check"), "a FIFO"),
        (("-i", "/dev/zero", "inventory", "check"), "a character device"),
        (("inventory", "check", str(fifo)), "a FIFO"),
        (("analyze", "--expect", str(fifo), f"master={log}"), "a FIFO"),
        (("analyze", "--expect", str(big), f"master={log}"), "file larger than"),
        (("-i", str(ROOT / "lab" / "local.yaml"), "run", "3", "--scenarios", str(tmp_path), "--runs",
          str(tmp_path / "runs")), "a FIFO"),
    ]
    for args, message in cases:
        started = time.monotonic()
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert time.monotonic() - started < 10
    assert not (tmp_path / "runs").exists()


def test_write_atomic_replaces_whole_and_sets_the_mode(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    write_atomic(path, "new", 0o600)
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KB tmpfs (root only): a disk that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_write_atomic_on_a_full_disk_is_one_clear_error_and_leaves_no_temporary(tiny_tmpfs):
    path = tiny_tmpfs / "report.html"
    path.write_text("the previous report")
    with pytest.raises(ChainlabError, match=r"cannot write .*report.html: No space left on device \(free some space"):
        write_atomic(path, "x" * 1_000_000)
    assert path.read_text() == "the previous report"
    assert [p.name for p in tiny_tmpfs.iterdir()] == ["report.html"]


def test_an_output_that_is_a_device_fifo_or_in_no_directory_is_refused(tmp_path):
    """`lab up --json /dev/full` (as root, the rename would have put a file in the device's
    place), a FIFO (a hang), a missing directory (it was made): refused, nothing written."""
    os.mkfifo(tmp_path / "fifo")
    for path, said in ((Path("/dev/full"), "a character device, not a regular file"),
                       (tmp_path / "fifo", "a FIFO, not a regular file"),
                       (tmp_path / "none" / "x.json", f"no directory {tmp_path / 'none'}")):
        with pytest.raises(OutputError, match=said):
            check_output_file(path)
        with pytest.raises(OutputError, match=said):
            write_atomic(path, "{}")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode) and not (tmp_path / "none").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
