"""The runs directory: run dir names, exclusive creation, and which run dirs are complete.

    runs/<lab>-<YYYYmmdd-HHMMSS.mmm>-<NN>-<slug>/   one scenario run
    runs/nightly-<lab>-<YYYYmmdd-HHMMSS.mmm>/        a nightly (its scenario runs inside)

A run dir is made with mkdir, never reused: when the name is taken (two runs in the same
millisecond), the next millisecond is tried. It is 0700: it holds trace logs, rules and
routes. Its first file is `PARTIAL`, removed as the very last step once every piece of
evidence is written; a run killed (even with kill -9) or interrupted leaves `PARTIAL`
behind. A run dir without `PARTIAL` is complete (run dirs from before this marker existed
count as complete).

Before a run probes anything, `check_runs_root` makes sure the runs directory can take
its evidence (writable, enough free space and inodes), so a full or read-only disk is one
clear error up front.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from chainlab.errors import ChainlabError
from chainlab.files import PRIVATE_DIR, describe_os_error, others_may_change

PARTIAL = "PARTIAL"
NIGHTLY_PREFIX = "nightly-"
#: What a run dir must be able to take: a nightly of six scenarios writes about 2 MB
#: (reports, logs, rule snapshots); a big ruleset makes that grow.
MIN_FREE_BYTES = 32 * 1024 * 1024
MIN_FREE_INODES = 256

_STAMP = r"(?P<stamp>\d{8}(?:-\d{6}(?:\.\d{3})?)?)"
#: `<lab>-<stamp>-<NN>-<slug>`; also the older `<stamp>-<NN>-<slug>` (no lab, no millis).
RUN_NAME = re.compile(rf"^(?:(?P<lab>.+?)-)?{_STAMP}-(?P<nn>\d+)-(?P<slug>.+)$")
#: `nightly-<lab>-<stamp>`; also the older `nightly-<stamp>`.
NIGHTLY_NAME = re.compile(rf"^{NIGHTLY_PREFIX}(?:(?P<lab>.+?)-)?{_STAMP}$")


@dataclass(frozen=True)
class RunName:
    lab: str | None
    stamp: str
    scenario_id: int
    slug: str


def parse_run_name(name: str) -> RunName | None:
    m = RUN_NAME.match(name)
    return RunName(m["lab"], m["stamp"], int(m["nn"]), m["slug"]) if m else None


def nightly_lab_and_stamp(name: str) -> tuple[str | None, str] | None:
    """(lab or None for old names, time stamp) of a nightly dir name; None if it is not one."""
    m = NIGHTLY_NAME.match(name)
    return (m["lab"], m["stamp"]) if m else None


def slug(title: str) -> str:
    """A title as a file name part: lower-case words of letters and digits, at most 40 chars."""
    return "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())[:40] or "scenario"


def _stamp(when: datetime) -> str:
    return f"{when:%Y%m%d-%H%M%S}.{when.microsecond // 1000:03d}"


def _only_ours(root: Path) -> None:
    """No other user can change `root` or its place: it and its directory are ours (or
    root's), and others write in them only if they are sticky (as /tmp: then no one renames
    what is not theirs, and run dirs are made exclusively). Otherwise another user could put
    a link where a run's evidence goes (found: `runs/` made by `nobody` beforehand, each new
    entry swapped for a link to nobody's directory)."""
    for what, info in (("runs directory", os.stat(root)), ("the directory of runs directory", os.stat(root.resolve().parent))):
        if others_may_change(info):
            raise ChainlabError(f"{what} {root} belongs to another user, or others may write in it: a run's"
                                " evidence goes only where no one else can change it (choose another --runs)")


def create_run_dir(root: Path, prefix: str, suffix: str = "", now: datetime | None = None) -> Path:
    """A new, empty-but-PARTIAL run dir `root/<prefix>-<stamp><suffix>`, made exclusively in
    a root no other user can change."""
    when = now or datetime.now()
    root.mkdir(parents=True, exist_ok=True)
    _only_ours(root)
    for _ in range(1000):
        path = root / f"{prefix}-{_stamp(when)}{suffix}"
        try:
            os.mkdir(path, PRIVATE_DIR)
        except FileExistsError:
            when += timedelta(milliseconds=1)
            continue
        except OSError as exc:
            raise ChainlabError(f"cannot create a run dir in {root}: {describe_os_error(exc)}") from None
        try:
            os.chmod(path, PRIVATE_DIR)  # mkdir's mode went through the umask
            fd = os.open(path / PARTIAL, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, f"started {when.isoformat(timespec='milliseconds')} by pid {os.getpid()};"
                             " removed once every piece of evidence is written\n".encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise ChainlabError(f"cannot create run dir {path}: {describe_os_error(exc)}") from None
        return path
    raise ChainlabError(f"cannot find a free run dir name in {root} for {prefix}")


def mark_complete(run_dir: Path) -> None:
    """The evidence of `run_dir` is all written: remove its PARTIAL marker."""
    try:
        (run_dir / PARTIAL).unlink(missing_ok=True)
    except OSError as exc:
        raise ChainlabError(f"cannot mark {run_dir} complete: {describe_os_error(exc)}") from None


def is_complete(run_dir: Path) -> bool:
    return run_dir.is_dir() and not (run_dir / PARTIAL).exists()


def check_runs_root(root: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Refuse, before anything runs, a runs directory that cannot take a run's evidence, or
    that another user could change (see `_only_ours`)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ChainlabError(f"runs directory {root} exists and is not a directory") from None
    except OSError as exc:
        raise ChainlabError(f"cannot create the runs directory {root}: {describe_os_error(exc)}") from None
    if not root.is_dir():
        raise ChainlabError(f"runs directory {root} is not a directory")
    _only_ours(root)
    probe = root / f".chainlab-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        fs = os.statvfs(root)
    except OSError as exc:
        raise ChainlabError(f"runs directory {root} cannot take a run's evidence: {describe_os_error(exc)}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = fs.f_bavail * fs.f_frsize
    if free < min_free:
        raise ChainlabError(
            f"runs directory {root} has {free / 2**20:.1f} MB free; a run needs at least {min_free / 2**20:.0f} MB"
            " (free some space or choose another --runs)")
    if fs.f_files and fs.f_favail < MIN_FREE_INODES:
        raise ChainlabError(f"runs directory {root} has {fs.f_favail} free inodes; a run needs at least"
                            f" {MIN_FREE_INODES} (free some or choose another --runs)")
