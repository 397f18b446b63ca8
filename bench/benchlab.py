"""Shared by the lab benchmarks: a private copy of lab/local.yaml, and timed CLI calls."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from userenv import like_a_user_shell

from chainlab.warm.place import directory_in, end_server, listening

like_a_user_shell()  # every lab benchmark imports this module first: the tools it times run as from a user's shell

ROOT = Path(__file__).resolve().parents[1]
CHAINLAB = str(Path(sys.executable).parent / "chainlab")


def inventory(directory: Path, lab: str, lan: str) -> Path:
    """lab/local.yaml renamed `lab`, on `lan` (e.g. 10.231.98), with its state in `directory`."""
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["lab"] = lab
    doc["local"] = {"lan": f"{lan}.1/24", "state_dir": str(directory / "state")}
    for host in doc["hosts"].values():
        host["address"] = f"{lan}." + str(host["address"]).rsplit(".", 1)[1]
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed_argv(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    """Wall time of a command; a failure raises with its output."""
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started


def timed(inv: Path, *args: str, env: dict[str, str] | None = None) -> float:
    """Wall time of `chainlab -i INV ARGS...`; a failure raises with its output."""
    return timed_argv([CHAINLAB, "-i", str(inv), *args], env=env)


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy so far (every process: on a local lab the
    hosts' sshd and shells run here too), from /proc/stat."""
    return _cpu_times()[0] / os.sysconf("SC_CLK_TCK")


def background_cpu(seconds: float = 2.0) -> float:
    """The machine's busy CPU per second while nothing is run (a lab's own idle daemons)."""
    before = machine_cpu()
    time.sleep(seconds)
    return (machine_cpu() - before) / seconds


@dataclass(frozen=True)
class CpuRun:
    """One timed run: its wall time, the machine's CPU beyond the idle background, and the part
    of it that the command itself (with its own children, e.g. `ip`) used."""

    wall: float
    machine: float
    client: float

    @property
    def others(self) -> float:
        """What the rest of the machine did for the run: on a local lab, the hosts' sshd,
        shells, dockerd and the commands they start."""
        return self.machine - self.client


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_cpu(inv: Path, *args: str, background: float, env: dict[str, str] | None = None) -> CpuRun:
    """`chainlab -i INV ARGS...` timed, with the machine's CPU beyond `background` per second
    and the command's own."""
    before, client = machine_cpu(), _children_cpu()
    wall = timed(inv, *args, env=env)
    return CpuRun(wall, machine_cpu() - before - background * wall, _children_cpu() - client)


@contextmanager
def warm_server(directory: Path) -> Iterator[dict[str, str]]:
    """The environment of commands served by a warm server (CHAINLAB_PERSIST) of its own, in
    `directory`; the server is ended afterwards."""
    try:
        yield {**os.environ, "CHAINLAB_PERSIST": "600", "XDG_RUNTIME_DIR": str(directory)}
    finally:
        end_server(directory_in(str(directory)))


def wait_for_server(env: dict[str, str], timeout: float = 60) -> None:
    """Until the warm server that the first served command started listens."""
    where = directory_in(env["XDG_RUNTIME_DIR"])
    deadline = time.monotonic() + timeout
    while not listening(where):
        if time.monotonic() > deadline:
            raise RuntimeError("the warm server did not start")
        time.sleep(0.05)


@contextmanager
def private_lab(directory: Path, lab: str, lan: str) -> Iterator[Path]:
    """The inventory of a private copy of lab/local.yaml; its local lab is always taken down."""
    inv = inventory(directory, lab, lan)
    try:
        yield inv
    finally:
        subprocess.run([CHAINLAB, "-i", str(inv), "local", "down"], capture_output=True)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def settle(idle: float = 0.75, limit: float = 60.0) -> float:
    """Wait until the machine is at least `idle` idle over one second (a lab just brought up
    keeps its daemons busy for a while), at most `limit` seconds; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        busy0, total0 = _cpu_times()
        time.sleep(1.0)
        busy1, total1 = _cpu_times()
        if total1 > total0 and 1 - (busy1 - busy0) / (total1 - total0) >= idle:
            break
    return time.monotonic() - started
