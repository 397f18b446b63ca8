"""Build the VM image once from Debian's packages and keep it, keyed by its recipe.

`image_dir/<key>/` holds the ext4 root filesystem (the VMs' qcow2 overlays sit on it),
the kernel and initrd taken from it, and the `mybusybox` tarball made from its
busybox-static. The manifest is written last: a directory without one is no image.
Builds of the same key wait for each other (flock); a build cut off (kill -9) leaves a
`.KEY.build-PID` directory that the next build of that key removes, mounts first.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from chainlab.errors import ChainlabError
from chainlab.local.image import build_image_tarball
from chainlab.local.system import SYSTEM_PATH, run
from chainlab.vm import recipe as R
from chainlab.vm.recipe import ImagePaths

#: Commands an image build needs on the machine (the Debian package that ships each).
BUILD_COMMANDS = {"mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "dpkg-query": "dpkg"}
LOG_TAIL = 8


def manifest(paths: ImagePaths) -> dict[str, object] | None:
    """The image's manifest, None if the image is not (completely) built."""
    try:
        return json.loads(paths.manifest.read_text())
    except (FileNotFoundError, ValueError):
        return None


def ensure_image(image_dir: Path, console: Console, *, rebuild: bool = False) -> ImagePaths:
    """The cached image for the current recipe, built first if missing (or if `rebuild`)."""
    paths = R.image_paths(image_dir)
    if not rebuild and manifest(paths) is not None:
        return paths
    with _build_lock(paths, console) as lock_fd:
        if rebuild or manifest(paths) is None:  # another build may have finished meanwhile
            _build(paths, console, lock_fd)
    return paths


@contextmanager
def _build_lock(paths: ImagePaths, console: Console) -> Iterator[int]:
    """Hold the build lock of this key; yields its fd, which mmdebstrap inherits: if this
    process is killed, the lock stays held until the orphaned build has ended too."""
    paths.dir.parent.mkdir(parents=True, exist_ok=True)
    lock = paths.dir.parent / f".{paths.dir.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"image {paths.dir.name}: another build is running, waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(path) or p.startswith(prefix)]


def remove_build_dir(path: Path) -> None:
    """Remove a (maybe half-made) build directory; mmdebstrap's mounts in it go first, so
    nothing is ever deleted through a mount of /proc, /sys or /dev."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise ChainlabError(f"cannot remove {path}: still mounted: {', '.join(left)}")
    if path.exists():
        shutil.rmtree(path)


def _preflight() -> None:
    if os.geteuid() != 0:
        raise ChainlabError("building the VM image needs root (mmdebstrap in root mode)")
    missing = sorted({pkg for cmd, pkg in BUILD_COMMANDS.items()
                      if not shutil.which(cmd, path=SYSTEM_PATH)})
    if missing:
        raise ChainlabError(f"missing Debian packages: {' '.join(missing)} (run `make deps`)")


def _build(paths: ImagePaths, console: Console, lock_fd: int) -> None:
    _preflight()
    key = paths.dir.name
    for stale in paths.dir.parent.glob(f".{key}.build-*"):
        remove_build_dir(stale)
    work = paths.dir.parent / f".{key}.build-{os.getpid()}"
    work.mkdir()
    started = time.monotonic()
    try:
        hooks = work / "hooks"
        hooks.mkdir()
        (hooks / "essential.sh").write_text(R.essential_hook())
        (hooks / "customize.sh").write_text(R.customize_hook())
        root = work / "root"
        log = paths.dir.parent / f"{key}.build.log"
        _mmdebstrap(R.mmdebstrap_argv(root, hooks), log, console, started, lock_fd)
        _say(console, started, "ext4 root filesystem")
        run(R.mkfs_argv(root, work / paths.rootfs.name))
        shutil.copyfile(root / "vmlinuz", work / paths.kernel.name)
        shutil.copyfile(root / "initrd.img", work / paths.initrd.name)
        build_image_tarball(work / paths.busybox_tarball.name, busybox=root / "bin" / "busybox")
        versions = dict(row.split("\t", 1) for row in run(
            ["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f", "${Package}\t${Version}\n"]
        ).splitlines() if "\t" in row)
        info = {
            "key": R.recipe_key(), "id": uuid.uuid4().hex, "suite": R.SUITE, "packages": list(R.PACKAGES),
            "kernel": os.path.basename(os.path.realpath(root / "vmlinuz")).removeprefix("vmlinuz-"),
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1), "installed": len(versions), "versions": versions,
        }
        remove_build_dir(root)
        shutil.rmtree(hooks)
        (work / paths.manifest.name).write_text(json.dumps(info, indent=1) + "\n")
        if paths.dir.exists():  # a rebuild: running VMs keep the old files open
            old = paths.dir.parent / f".{key}.build-{os.getpid()}-old"
            paths.dir.rename(old)
            shutil.rmtree(old)
        work.rename(paths.dir)
    except BaseException:
        remove_build_dir(work)
        raise
    _say(console, started, f"done: {paths.dir} ({info['installed']} packages, kernel {info['kernel']})")


def _say(console: Console, started: float, what: str) -> None:
    console.print(f"image: {what} [dim]({time.monotonic() - started:.0f} s)[/dim]", highlight=False)


def _mmdebstrap(argv: list[str], log: Path, console: Console, started: float, lock_fd: int) -> None:
    """Run mmdebstrap with a progress bar (packages fetched and set up) and its full output in `log`."""
    progress = Progress(SpinnerColumn(), TextColumn("image: {task.description}"), BarColumn(bar_width=30),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
    tail: list[str] = []
    with log.open("w") as out, progress:
        task = progress.add_task("starting mmdebstrap", total=None)
        total = 0
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", pass_fds=(lock_fd,))
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            tail = (tail + [line.rstrip()])[-LOG_TAIL:]
            event = R.parse_build_line(line)
            if event is None:
                continue
            if event.stage:
                progress.update(task, description=event.stage)
                if not console.is_terminal:
                    _say(console, started, event.stage)
            if event.total:
                total += 2 * event.total  # each package: fetched, then set up
                progress.update(task, total=total)
            if (event.fetched and total) or event.unpacked:
                progress.advance(task)
        code = proc.wait()
    if code != 0:
        detail = "\n  ".join(tail)
        raise ChainlabError(f"mmdebstrap failed (exit {code}; full output in {log}):\n  {detail}")
