"""Local-lab helpers that need no root: image tarball, process identity, route safety, commands."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from chainlab.errors import ChainlabError
from chainlab.inventory import load_inventory
from chainlab.local import build_image_tarball, check_lab_route, plan_lab
from chainlab.local import link_guard
from chainlab.local import system as S
from chainlab.local.image import BUSYBOX
from chainlab.remote import resolve_target
from chainlab.shell import command_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed")
def test_image_tarball(tmp_path: Path) -> None:
    tarball = build_image_tarball(tmp_path / "img" / "rootfs.tar")
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        assert {"bin/busybox", "bin/ping", "bin/ip", "bin/wget", "bin/httpd", "bin/sh", "www/index.html"} <= names
        assert tar.getmember("bin/ping").issym() and tar.getmember("bin/ping").linkname == "busybox"
    assert not (tmp_path / "img" / "rootfs.tmp").exists()


def test_proc_identity_survives_only_with_same_start_time() -> None:
    me = S.proc_of(os.getpid())
    assert me is not None and S.alive(me)
    assert not S.alive(S.Proc(me.pid, me.start + 1))
    assert me in S.descendants({os.getppid()})


def test_kill_all_spares_a_reused_pid() -> None:
    """A process found earlier whose PID now belongs to another process is not signalled."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        found = S.proc_of(child.pid)
        assert found is not None
        S.kill_all({S.Proc(found.pid, found.start - 1)}, timeout=0.2)  # not the process that was found
        assert child.poll() is None
        S.kill_all({found})
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_route_safety_refuses_addresses_outside_the_lab_link() -> None:
    plan = plan_lab(load_inventory(ROOT / "lab" / "local.yaml"))
    with pytest.raises(ChainlabError, match="refusing to connect to 198.51.100.7"):
        check_lab_route(plan, IPv4Address("198.51.100.7"))


def test_resolve_target_checks_the_route_before_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = load_inventory(ROOT / "lab" / "local.yaml")
    monkeypatch.setattr(S, "route_device", lambda address: "eth0")
    with pytest.raises(ChainlabError, match="via eth0, not the lab link cl-local"):
        resolve_target(inv, "master")
    monkeypatch.setattr(S, "route_device", lambda address: "cl-local")
    target = resolve_target(inv, "master")
    assert target.address == IPv4Address("10.231.91.195") and target.known_hosts is not None
    with pytest.raises(ChainlabError, match="unknown host"):
        resolve_target(inv, "nosuch")


def test_command_line_quotes_every_word() -> None:
    assert command_line(["echo", "a b", "$(id)", "x;y"]) == "echo 'a b' '$(id)' 'x;y'"


def test_the_machines_own_mount_namespace_is_never_a_hosts():
    from chainlab.local import system as S

    assert S.same_mount_ns(os.getpid()) == set()


@pytest.mark.parametrize("unified", [True, False])
def test_remove_cgroup_on_v1_and_v2_layouts(tmp_path, monkeypatch, unified):
    from chainlab.local import system as S

    monkeypatch.setattr(S, "CGROUP_ROOT", tmp_path)
    if unified:
        (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
        lab = tmp_path / "chainlab.x.master" / "docker" / "abc"
    else:
        lab = tmp_path / "memory" / "chainlab.x.master" / "docker" / "abc"
    lab.mkdir(parents=True)
    S.remove_cgroup("/chainlab.x.master")
    assert not lab.parents[1].exists()


def test_the_link_guard_is_one_table_per_link_and_rejects_other_users() -> None:
    names = {link_guard.table_name(link) for link in ("cl-lab", "cl-lab2", "cl-a-b")}
    assert names == {"chainlab_guard_cl_lab", "chainlab_guard_cl_lab2", "chainlab_guard_cl_a_b"}
    rules = link_guard.ruleset("cl-lab")
    assert 'oifname "cl-lab" meta skuid != 0 meta l4proto tcp counter reject with tcp reset' in rules
    assert 'oifname "cl-lab" meta skuid != 0 counter reject' in rules and "hook output" in rules
    assert 'iifname "cl-lab" counter drop' in rules and 'oifname "cl-lab" counter drop' in rules  # forwarding
    nft = shutil.which("nft", path=S.SYSTEM_PATH)
    if os.geteuid() == 0 and nft:  # nftables' own check: the script would load
        assert subprocess.run([nft, "--check", "-f", "-"], input=rules, text=True).returncode == 0
