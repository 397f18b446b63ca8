"""chainlab as a wheel, for the VMs: the Calico emulation's daemon runs from it there.

The VMs share nothing of this machine's files: `vm up` builds a wheel from this source tree
(pip, in a scratch copy so the tree stays clean), keyed by the tree's contents, and unpacks
it to /opt/chainlab in each VM over SSH, next to Debian's python3, python3-etcd and
python3-jinja2 from the image. The daemon then runs as
`env PYTHONPATH=/opt/chainlab python3 -m chainlab.calico.agent`.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from chainlab.errors import ChainlabError

GUEST_DIR = "/opt/chainlab"
#: The source digest of the wheel unpacked in GUEST_DIR.
GUEST_MARK = f"{GUEST_DIR}/.chainlab-source"
GUEST_PYTHON = "/usr/bin/python3"
#: What goes into the wheel: the package and the files its build reads.
TOP_FILES = ("pyproject.toml", "setup.py", "README.md")
SKIPPED = ("__pycache__", ".pyc", ".so", ".egg-info")


def source_root() -> Path:
    """The source tree chainlab runs from (an editable install or a checkout)."""
    root = Path(__file__).resolve().parents[3]
    if not all((root / name).is_file() for name in TOP_FILES) or not (root / "src" / "chainlab").is_dir():
        raise ChainlabError(f"no chainlab source tree at {root}: the VMs' Calico daemon is built from one"
                            " (run chainlab from a clone, installed with `make venv`)")
    return root


def _files(root: Path) -> list[Path]:
    package = [p for p in (root / "src" / "chainlab").rglob("*")
               if p.is_file() and not any(s in str(p.relative_to(root)) for s in SKIPPED)]
    return sorted([root / name for name in TOP_FILES] + package)


def source_digest(root: Path) -> str:
    """sha256 over every file of the wheel's source, names and bytes."""
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_wheel(cache: Path) -> tuple[Path, str]:
    """The wheel of the current source tree (built into `cache/<digest>/` once) and its digest."""
    root = source_root()
    digest = source_digest(root)
    out = cache / digest[:16]
    built = sorted(out.glob("chainlab-*.whl")) if out.is_dir() else []
    if built:
        return built[0], digest
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chainlab-wheel-", dir=cache) as tmp:
        copy = Path(tmp) / "src-tree"
        for path in _files(root):
            target = copy / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        dist = Path(tmp) / "dist"
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(copy)],
                              capture_output=True, text=True)
        wheels = sorted(dist.glob("chainlab-*.whl"))
        if proc.returncode != 0 or not wheels:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise ChainlabError(f"building chainlab's wheel failed: {detail[-1] if detail else proc.returncode}")
        staged = Path(tmp) / "out"
        staged.mkdir()
        shutil.move(str(wheels[0]), staged / wheels[0].name)
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    for older in cache.iterdir():  # wheels of earlier sources: VMs get theirs at the next vm up
        if older.is_dir() and older != out and len(older.name) == len(out.name):
            shutil.rmtree(older, ignore_errors=True)
    return next(out.glob("chainlab-*.whl")), digest


def installed_argv() -> list[str]:
    """Print the digest of the wheel unpacked in the VM (nothing if none)."""
    return ["sh", "-c", f"cat {GUEST_MARK} 2>/dev/null || true"]


def install_argv(wheel: str, digest: str) -> list[str]:
    """Unpack the copied wheel to GUEST_DIR (whole, or not at all), then drop the copy."""
    q = shlex.quote
    new = GUEST_DIR + ".new"
    return ["sh", "-c", (
        f"rm -rf {q(new)} && {GUEST_PYTHON} -m zipfile -e {q(wheel)} {q(new)} && "
        f"echo {q(digest)} > {q(new)}/.chainlab-source && rm -rf {q(GUEST_DIR)} && mv {q(new)} {q(GUEST_DIR)}"
        f" && rm -f {q(wheel)}")]


def agent_argv() -> tuple[str, ...]:
    """How a VM runs the Calico emulation's daemon from the unpacked wheel."""
    return ("env", f"PYTHONPATH={GUEST_DIR}", GUEST_PYTHON, "-m", "chainlab.calico.agent")
