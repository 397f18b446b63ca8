"""Recap formatting, --check on inventory.yaml without any network, the lock, --limit."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from chainlab.errors import ChainlabError
from chainlab.inventory import load_inventory
from chainlab.provision import provision
from chainlab.provision.recap import HostReport, RunReport, StepResult, recap_lines
from chainlab.lock import lab_lock, lab_lock_path
from chainlab.provision.runner import select_hosts

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "chainlab")


def test_recap_lines_align_and_count() -> None:
    report = RunReport(lab="x", action="up", check=False)
    report.hosts["master"] = HostReport("master", [StepResult("facts", "ok")] * 7 + [StepResult("c", "skipped")])
    report.hosts["slave10"] = HostReport("slave10", [StepResult("facts", "failed", "cannot ssh")],
                                         error="facts: cannot ssh")
    assert recap_lines(report) == [
        "master  : ok=7 changed=0 failed=0 skipped=1",
        "slave10 : ok=0 changed=0 failed=1 skipped=0",
        "          failed: facts: cannot ssh",
    ]
    assert report.failed
    data = report.as_dict()
    assert data["hosts"]["master"]["ok"] == 7 and data["hosts"]["slave10"]["error"] == "facts: cannot ssh"


def test_check_on_reference_inventory_plans_centos7_offline(no_network: None, tmp_path: Path) -> None:
    inv = load_inventory(ROOT / "inventory.yaml")
    out = io.StringIO()
    report = provision(inv, "up", check=True, offline=True, json_path=tmp_path / "plan.json",
                       console=Console(file=out, width=300, highlight=False))
    text = out.getvalue()
    assert not report.failed
    assert "systemctl restart rsyslog" in text  # CentOS 7: systemd, rsyslog, private kernel log
    assert "write /etc/rsyslog.d/90-chainlab.conf" in text and "kern.* /var/log/iptables.log" in text
    assert "iptables -w 5 -t raw -A PREROUTING -p icmp -m comment --comment chainlab -j TRACE" in text
    assert "FROM nginx" in text and "docker build -t mybusybox" in text
    assert "ulogd" not in text and "apt-get" not in text.replace("RUN apt-get", "")
    assert "RECAP lab up reference --check (nothing was changed)" in text
    assert "master : ok=2 changed=5 failed=0 skipped=1" in text
    # Calico the way Docker sees it: the reference's own two commands, and no emulation
    assert ("docker network create --driver calico --ipam-driver calico-ipam --subnet 172.20.0.0/16"
            " --label chainlab.lab=reference net1") in text
    assert "docker run -itd --net net1 --name web1" in text and "docker run -itd --net net1 --name web3" in text
    assert "chainlab.calico" not in text and "felix" not in text and "--network none" not in text
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["check"] is True and set(plan["hosts"]) == {"master", "slave1", "slave2", "(lab)"}


def test_step_lines_written_plain_are_what_rich_writes(no_network: None) -> None:
    """Without a terminal a step's line skips rich's rendering: the same characters, --check's
    commands included, as rich prints them (a recording console still goes through rich)."""
    inv = load_inventory(ROOT / "inventory.yaml")
    outputs = []
    for record in (False, True):
        out = io.StringIO()
        provision(inv, "up", check=True, offline=True, console=Console(file=out, width=80, highlight=False,
                                                                        record=record))
        # hosts run in parallel: each step's block (its line and commands) compared in any order
        outputs.append(sorted(re.split(r"\n(?= *(?:ok|changed|would change|failed|skipped) \S+: )",
                                       out.getvalue().split("\nRECAP")[0].rstrip("\n"))))
    assert outputs[0] == outputs[1] and len(outputs[0]) > 10
    text = "\n".join(outputs[0])
    assert "\n      $ " in text and len(max(text.splitlines(), key=len)) > 80  # commands; not wrapped


def test_check_debian_nft_plan_differs(no_network: None, tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    doc["hosts"]["slave1"].update(os="debian12", iptables="nft")
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    inv = load_inventory(path)
    out = io.StringIO()
    provision(inv, "up", check=True, offline=True, limit=("slave1",),
              console=Console(file=out, width=300, highlight=False))
    text = out.getvalue()
    assert "xtables-monitor --trace" in text and "rsyslog" not in text
    assert "master" not in text.split("RECAP")[1]


def test_cli_check_never_connects_for_ssh_inventory() -> None:
    proc = subprocess.run([CLI, "-i", str(ROOT / "inventory.yaml"), "lab", "down", "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "(assumed)" in proc.stdout
    assert "iptables -t raw -S, then -D every rule with --comment chainlab" in proc.stdout


def test_limit_and_lock(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["local"]["state_dir"] = str(tmp_path / "state")
    doc["lab"] = f"unit{os.getpid()}"  # the lab lock is per lab name: not the lock of a lab that is up
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    inv = load_inventory(path)
    assert select_hosts(inv, ("slave1",)) == ["slave1"]
    with pytest.raises(ChainlabError, match="unknown host"):
        select_hosts(inv, ("nope",))
    with lab_lock(inv):
        with pytest.raises(ChainlabError, match=rf"a chainlab command on lab {inv.lab} \(lab up/down, run, nightly,"
                                                 r" probe or matrix\) is already running .*: wait for it to end, then run"
                                                 r" this again"):
            with lab_lock(inv):
                pass
    with lab_lock(inv):  # released
        pass
    lab_lock_path(inv).unlink()
