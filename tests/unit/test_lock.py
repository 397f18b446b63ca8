"""One run per lab: the flock helper, who holds a lock, and who can touch lock files."""

from __future__ import annotations

import os
import signal
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from chainlab.errors import ChainlabError
from chainlab.lock import LockHeld, exclusive, local_lab_lock_path, lock_holders, teardown_lock

ROOT = Path(__file__).resolve().parents[2]

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as nobody")

HOLD = ("import sys, time\nfrom pathlib import Path\nfrom chainlab.lock import exclusive\n"
        "with exclusive(Path(sys.argv[1]), 'a test run'):\n    print('held', flush=True)\n    time.sleep(60)\n")


def hold(path: Path) -> subprocess.Popen[str]:
    """Another process (`python .../holder-marker.py PATH`) holding the lock at `path` until killed."""
    script = path.parent / "holder-marker.py"
    script.write_text(HOLD)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_second_holder_is_refused_naming_the_live_holder(tmp_path):
    path = tmp_path / "lab.lock"
    holder = hold(path)
    try:
        with pytest.raises(LockHeld) as refused:
            with exclusive(path, "a lab up of lab x"):
                pass
        message = str(refused.value)
        assert message.startswith("a lab up of lab x is already running (")
        assert f"pid {holder.pid}: " in message and "holder-marker" in message and str(path) in message
        assert f"pid {holder.pid}" in refused.value.holder
    finally:
        holder.kill()
        holder.wait()
    with exclusive(path, "a lab up of lab x"):
        pass


def test_message_never_names_a_stale_pid(tmp_path):
    """Older chainlab wrote its PID into the file; nothing reads it any more."""
    path = tmp_path / "lab.lock"
    path.write_text("4242\n")
    with exclusive(path, "x"):
        pass
    holder = hold(path)
    holder.kill()
    holder.wait()
    with exclusive(path, "x"):  # the killed holder's lock went with it
        with pytest.raises(LockHeld) as refused:
            with exclusive(path, "x"):
                pass
    assert "4242" not in str(refused.value) and f"pid {holder.pid}" not in str(refused.value)
    assert f"pid {os.getpid()}" in str(refused.value)


def test_lock_holders_reads_the_kernel_table():
    info = os.stat_result((0o100600, 1234, os.makedev(0, 0x19), 1, 0, 0, 0, 0, 0, 0))
    table = ("1: FLOCK  ADVISORY  WRITE 555 00:19:1234 0 EOF\n"
             "1: -> FLOCK  ADVISORY  WRITE 666 00:19:1234 0 EOF\n"
             "2: POSIX  ADVISORY  WRITE 777 00:19:1234 0 EOF\n"
             "3: FLOCK  ADVISORY  WRITE 888 00:19:9999 0 EOF\n")
    assert lock_holders(info, table) == [555]


def test_lock_of_a_killed_process_is_free(tmp_path):
    path = tmp_path / "lab.lock"
    code = f"from chainlab.lock import exclusive\nfrom pathlib import Path\nimport os\n" \
           f"with exclusive(Path({str(path)!r}), 'x'):\n    os.kill(os.getpid(), 9)\n"
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    with exclusive(path, "x"):
        pass


def test_lock_file_is_0600_in_a_0700_directory(tmp_path):
    directory = tmp_path / "locks"
    with exclusive(directory / "lab.lock", "x"):
        assert stat.S_IMODE((directory / "lab.lock").stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "lab.lock").write_text("")
    os.chmod(old / "lab.lock", 0o644)  # as an older chainlab left it
    with exclusive(old / "lab.lock", "x"):
        pass
    assert stat.S_IMODE((old / "lab.lock").stat().st_mode) == 0o600
    assert stat.S_IMODE(old.stat().st_mode) == 0o700


def test_a_symlink_or_foreign_file_is_refused(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    link = tmp_path / "lab.lock"
    link.symlink_to(target)
    with pytest.raises(ChainlabError, match="symlink there is refused"):
        with exclusive(link, "x"):
            pass
    assert target.read_text() == "keep me"
    fifo = tmp_path / "fifo.lock"
    os.mkfifo(fifo)
    with pytest.raises(ChainlabError, match="not a regular file"):
        with exclusive(fifo, "x"):
            pass
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    with pytest.raises(ChainlabError, match="not a directory of this user"):
        with exclusive(tmp_path / "linked" / "lab.lock", "x"):
            pass


@needs_root
def test_nobody_can_neither_open_nor_block_a_lock(tmp_path):
    """flock works on a read-only descriptor: a lock another user can open, it can hold."""
    os.chmod(tmp_path, 0o755)  # nobody may reach the directory that holds the lock dir
    path = tmp_path / "locks" / "lab.lock"
    with exclusive(path, "x"):
        pass
    grab = ("import fcntl, sys, time\nf = open(sys.argv[1], 'rb')\nfcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "print('blocking', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.run([*NOBODY, sys.executable, "-c", grab, str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "PermissionError" in proc.stderr and "blocking" not in proc.stdout
    create = subprocess.run([*NOBODY, "touch", str(path.parent / "other.lock")], capture_output=True, timeout=30)
    assert create.returncode != 0
    started = time.monotonic()
    with exclusive(path, "x"):
        pass
    assert time.monotonic() - started < 1


@needs_root
def test_a_lock_dir_of_another_user_is_refused(tmp_path):
    directory = tmp_path / "locks"
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    with pytest.raises(ChainlabError, match="someone else's"):
        with exclusive(directory / "lab.lock", "x"):
            pass


def test_teardown_lock_refuses_a_held_lab_unless_forced(tmp_path, monkeypatch):
    monkeypatch.setattr("chainlab.lock.LOCK_DIR", tmp_path / "locks")
    (tmp_path / "locks").mkdir(mode=0o700)
    holder = hold(local_lab_lock_path("t1"))
    said: list[str] = []
    try:
        with pytest.raises(ChainlabError, match=rf"pid {holder.pid}: .*wait for it, or `chainlab vm down --force` interrupts it"):
            with teardown_lock("t1", "vm down", False, said.append):
                pytest.fail("ran without the lock")
        with teardown_lock("t1", "vm down", True, said.append):
            said.append("removed")
            assert holder.poll() == -signal.SIGTERM  # interrupted, and the lock taken once it let go
            with pytest.raises(LockHeld):
                with exclusive(local_lab_lock_path("t1"), "x"):
                    pass
    finally:
        holder.kill()
        holder.wait()
    assert said[0].startswith(f"warning: --force: interrupting pid {holder.pid}: ") and said[0].endswith("(SIGTERM)")
    assert said[1] == "removed"
    with teardown_lock("t1", "vm down", False, said.append):  # free again: taken, nothing said
        assert len(said) == 2


@needs_root
def test_vm_down_takes_the_lab_lock(tmp_path):
    """`vm down` of a lab that is not up removes nothing; with its lab lock held it is refused."""
    doc = yaml.safe_load((ROOT / "lab" / "vm.yaml").read_text())
    doc["lab"] = "locktest-vm"
    doc["qemu"] = {**doc["qemu"], "state_dir": str(tmp_path / "state")}
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(yaml.safe_dump(doc))
    chainlab = [str(Path(sys.executable).parent / "chainlab"), "-i", str(inventory), "vm", "down"]
    lab_lock = local_lab_lock_path("locktest-vm")
    holder = hold(lab_lock)  # another process: --force sends it SIGTERM
    try:
        refused = subprocess.run(chainlab, capture_output=True, text=True, timeout=60)
        forced = subprocess.run([*chainlab, "--force"], capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
        lab_lock.unlink(missing_ok=True)
        (lab_lock.parent / "holder-marker.py").unlink(missing_ok=True)
        (lab_lock.parent / "vm-locktest-vm.lock").unlink(missing_ok=True)  # vm up/down's own
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "`chainlab vm down --force` interrupts it" in refused.stderr.replace("\n", " "), refused.stderr
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert f"warning: --force: interrupting pid {holder.pid}" in forced.stdout and "lab locktest-vm: down" in forced.stdout
    assert holder.returncode == -signal.SIGTERM
