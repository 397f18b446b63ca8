"""One integration suite at a time on a machine, and no lab left over from a killed one.

The integration tests bring labs up under fixed names and lans (itest on 10.231.92, ex2, ...).
Two suites at once (CI next to a developer's run) would fight over them, and a suite killed
mid-way (SIGKILL, a machine restart of the runner) leaves its labs up: the next suite's `local
up` is then refused ("a lab named ex2 is up, but not from this inventory's state dir").

So every suite holds SUITE_LOCK for its whole session (a second one waits, and says so), and
every test inventory is registered in LABS_DIR (lab name -> inventory path) before its lab goes
up. Under the lock no other suite runs, so a registered lab whose namespace still exists was
left by a dead suite: it is taken down with `--force` before this suite starts.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from chainlab.local import system as S

STATE_DIR = Path("/run/chainlab-tests")
SUITE_LOCK = STATE_DIR / "suite.lock"
LABS_DIR = STATE_DIR / "labs"
CHAINLAB = str(Path(sys.executable).parent / "chainlab")


def hold_lock(say: Callable[[str], None]) -> int:
    """Take SUITE_LOCK, waiting for another suite if one holds it; returns the fd to keep open."""
    LABS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(SUITE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        say(f"waiting for another chainlab test suite on this machine (pid {holder}) to end")
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def register(inventory: Path) -> None:
    """Remember `inventory`'s lab so a later suite can take it down if this one dies."""
    if os.geteuid() != 0:  # no lab goes up
        return
    lab = yaml.safe_load(inventory.read_text())["lab"]
    LABS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    (LABS_DIR / lab).write_text(str(inventory))


def _provider(inventory: Path) -> str:
    return "vm" if yaml.safe_load(inventory.read_text()).get("provider") == "qemu" else "local"


def sweep(say: Callable[[str], None], fallback: Callable[[Path, str], Path]) -> None:
    """Take down every registered lab that is still up (call with the lock held), forget the rest.

    `fallback(directory, lab)` writes a local inventory of that name, for a lab whose
    inventory is gone with its session's temporary directory."""
    for entry in sorted(LABS_DIR.iterdir()):
        lab, inventory = entry.name, Path(entry.read_text())
        if S.netns_exists(f"chainlab.{lab}"):
            say(f"lab {lab} was left up by an earlier test session that did not end: taking it down")
            with tempfile.TemporaryDirectory() as scratch:
                if not inventory.is_file():
                    inventory = fallback(Path(scratch), lab)
                proc = subprocess.run([CHAINLAB, "-i", str(inventory), _provider(inventory), "down", "--force"],
                                      capture_output=True, text=True, timeout=600)
            if proc.returncode != 0 or S.netns_exists(f"chainlab.{lab}"):
                raise RuntimeError(f"could not take down the leftover lab {lab} ({inventory}):\n"
                                   f"{proc.stdout}{proc.stderr}")
        entry.unlink(missing_ok=True)
