"""KVM or TCG: the choice, without booting anything (the probe itself is stubbed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainlab.errors import ChainlabError
from chainlab.vm import accel as A


@pytest.fixture
def fake_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A /dev/kvm that opens, a private cache, and a probe that counts its calls."""
    device = tmp_path / "kvm"
    device.write_text("")
    monkeypatch.setattr(A, "KVM_DEVICE", device)
    monkeypatch.setattr(A, "CACHE", tmp_path / "run" / "vm-accel.json")
    monkeypatch.setattr(A, "_probe_key", lambda kernel: f"{kernel}:1")
    calls: list[int] = []
    return calls


def test_tcg_when_asked() -> None:
    assert A.choose_accel("tcg", Path("/nonexistent")).accel == "tcg"


def test_tcg_without_a_kvm_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A, "KVM_DEVICE", tmp_path / "absent")
    choice = A.choose_accel("auto", Path("/k"))
    assert choice.accel == "tcg" and "no usable /dev/kvm" in choice.describe()
    with pytest.raises(ChainlabError, match="qemu.accel is kvm, but no usable /dev/kvm"):
        A.choose_accel("kvm", Path("/k"))


def test_a_kvm_that_boots_nothing_falls_back_to_tcg_once(fake_kvm: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(kernel: Path) -> tuple[bool, str]:
        fake_kvm.append(1)
        return False, "a guest kernel printed nothing under KVM in 6 s"

    monkeypatch.setattr(A, "_probe", probe)
    first = A.choose_accel("auto", Path("/k"))
    again = A.choose_accel("auto", Path("/k"))
    assert first == again and first.accel == "tcg" and "printed nothing" in first.reason
    assert len(fake_kvm) == 1  # the answer is cached
    assert json.loads(A.CACHE.read_text())["works"] is False


def test_kvm_when_the_probe_boots(fake_kvm: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A, "_probe", lambda kernel: (True, "booted in 0.4 s"))
    choice = A.choose_accel("auto", Path("/k"))
    assert choice.accel == "kvm" and choice.describe().startswith("KVM")


def test_probe_argv_is_diskless_and_networkless() -> None:
    argv = A.probe_argv(Path("/img/vmlinuz"), Path("/tmp/c"))
    assert "-nodefaults" in argv and "-drive" not in argv and "-netdev" not in argv
    assert argv[argv.index("-accel") + 1] == "kvm"
