"""One integration suite at a time on a machine, and no lab left over from a killed one.

The integration tests bring labs up under fixed names and lans (itest on 10.231.92, ex2, ...).
Two suites at once (CI next to a developer's run) would fight over them, and a suite killed
mid-way (SIGKILL, a machine restart of the runner) leaves its labs up: the next suite's `local
up` is then refused ("a lab named ex2 is up, but not from this inventory's state dir").

So every suite holds SUITE_LOCK for its whole session (a second one waits, and says so), and
every test inventory is copied to LABS_DIR (`<lab>.yaml`) before its lab goes up. Under the
lock no other suite runs, so at a suite's start a registered lab whose namespace still exists
was left by a dead suite: it is taken down with `--force`, from the copy. At a suite's end the
copies of labs that are down are forgotten, so a lab brought up later by hand is never taken.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from chainlab.inventory import load_inventory
from chainlab.local import system as S
from chainlab.local.plan import plan_lab
from chainlab.vm.plan import plan_vm_lab

STATE_DIR = Path("/run/chainlab-tests")
SUITE_LOCK = STATE_DIR / "suite.lock"
LABS_DIR = STATE_DIR / "labs"
CHAINLAB = str(Path(sys.executable).parent / "chainlab")
#: Seconds to wait for a killed suite's own `chainlab` process, still running, to let its lab go.
BUSY_FOR = 300


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
    """Keep a copy of `inventory`, so a later suite can take its lab down if this one dies."""
    if os.geteuid() != 0:  # no lab goes up
        return
    text = inventory.read_text()
    LABS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    (LABS_DIR / f"{yaml.safe_load(text)['lab']}.yaml").write_text(text)


def _lan_netns(copy: Path) -> tuple[str, str]:
    """The lab of inventory `copy`: its provider's command (`local`, `vm`) and its lan
    namespace, as the product's plan names it (up while that exists)."""
    inv = load_inventory(copy)
    if inv.provider == "qemu":
        return "vm", plan_vm_lab(inv).lan_netns
    return "local", plan_lab(inv).lan_netns


def sweep(say: Callable[[str], None]) -> None:
    """Take down every registered lab that is still up (call with the lock held), forget the rest."""
    for copy in sorted(LABS_DIR.glob("*.yaml")):
        provider, netns = _lan_netns(copy)
        if S.netns_exists(netns):
            say(f"lab {copy.stem} was left up by an earlier test session that did not end: taking it down")
            _take_down(copy, provider, netns)
        copy.unlink()


def _take_down(copy: Path, provider: str, netns: str) -> None:
    deadline = time.monotonic() + BUSY_FOR
    while True:
        proc = subprocess.run([CHAINLAB, "-i", str(copy), provider, "down", "--force"],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode == 0 and not S.netns_exists(netns):
            return
        # a `local up` of the dead suite still running holds the lab's up/down lock
        if "already running" not in proc.stderr or time.monotonic() > deadline:
            raise RuntimeError(f"could not take down the leftover lab {copy.stem} ({copy}):\n{proc.stdout}{proc.stderr}")
        time.sleep(2)


def forget_downed() -> None:
    """At a suite's end: forget the labs that are down (those still up are the next suite's to take)."""
    for copy in LABS_DIR.glob("*.yaml"):
        if not S.netns_exists(_lan_netns(copy)[1]):
            copy.unlink()
