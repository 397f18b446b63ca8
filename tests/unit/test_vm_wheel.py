"""The wheel the VMs' Calico daemon runs from: keyed by the source, unpacked whole."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from chainlab.vm import wheel as W


def _tree(root: Path) -> Path:
    for name in W.TOP_FILES:
        (root / name).write_text(name)
    package = root / "src" / "chainlab" / "calico"
    package.mkdir(parents=True)
    (package / "agent.py").write_text("print('agent')\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"\0")
    return root


def test_digest_follows_the_source_and_ignores_build_leftovers(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    first = W.source_digest(root)
    (root / "src" / "chainlab" / "calico" / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"\1")
    (root / "src" / "chainlab" / "_engine.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\1")
    assert W.source_digest(root) == first
    (root / "src" / "chainlab" / "calico" / "agent.py").write_text("print('changed')\n")
    assert W.source_digest(root) != first


def test_install_unpacks_the_wheel_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guest = tmp_path / "opt" / "chainlab"
    monkeypatch.setattr(W, "GUEST_DIR", str(guest))
    monkeypatch.setattr(W, "GUEST_MARK", str(guest / ".chainlab-source"))
    monkeypatch.setattr(W, "GUEST_PYTHON", "python3")
    guest.parent.mkdir()
    wheel = tmp_path / "chainlab-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("chainlab/__init__.py", "")
        zf.writestr("chainlab/calico/agent.py", "")
    subprocess.run(W.install_argv(str(wheel), "d1g3st"), check=True)
    assert (guest / "chainlab" / "calico" / "agent.py").is_file() and not wheel.exists()
    assert subprocess.run(W.installed_argv(), capture_output=True, text=True).stdout.strip() == "d1g3st"


def test_the_daemon_runs_from_the_unpacked_wheel_with_debians_python() -> None:
    assert W.agent_argv() == ("env", "PYTHONPATH=/opt/chainlab", "/usr/bin/python3", "-m", "chainlab.calico.agent")


def test_this_checkout_is_a_source_tree() -> None:
    root = W.source_root()
    assert (root / "src" / "chainlab" / "vm" / "wheel.py").is_file()
