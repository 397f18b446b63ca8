"""Calico the way Docker sees it, on its own local lab (lab `cal`, 10.231.94.0/24), per flavour.

`lab up` issues the reference's own commands through the docker SDK (`docker network create
--driver calico --ipam-driver calico-ipam`, `docker run --net net1`); dockerd calls the
emulation's libnetwork plugin on /run/docker/plugins; the scenarios then run as usual.
Each flavour's lab is brought up once and always torn down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml

from chainlab.calico import ipam
from chainlab.calico.plugin import FIXED_MAC
from chainlab.inventory import Inventory, load_inventory
from chainlab.local import down, plan_lab, up
from chainlab.local.plan import LabPlan
from chainlab.networks.calico.emulate import LOGFILE, PIDFILE
from chainlab.remote import etcd_client

from .conftest import ROOT, make_inventory_file

pytestmark = pytest.mark.integration

LAN = "10.231.94"
CHAINLAB = str(Path(sys.executable).parent / "chainlab")
PLACEMENT = {"web1": "master", "web2": "master", "web3": "slave1"}


@dataclass
class CalicoLab:
    flavour: str
    path: Path
    inventory: Inventory
    plan: LabPlan
    work: Path

    def cli(self, *args: str, inventory: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([CHAINLAB, "-i", str(inventory or self.path), *args], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "200"}, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"chainlab {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Over the lab's own SSH config, as a user would (`ssh -F <state_dir>/home/.ssh/config`)."""
        proc = subprocess.run(["ssh", "-F", str(self.plan.ssh_config), host, command], capture_output=True,
                              text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {command}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def inspect(self, host: str, container: str) -> dict:
        return json.loads(self.ssh(host, f"docker inspect {container}").stdout)[0]


@pytest.fixture(scope="module", params=["legacy", "nft"])
def calico_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalicoLab]:
    if os.geteuid() != 0:
        pytest.skip("the local lab needs root")
    flavour = request.param
    work = tmp_path_factory.mktemp(f"cal-{flavour}")
    path = make_inventory_file(work, lab="cal", lan=LAN)
    doc = yaml.safe_load(path.read_text())
    for host in doc["hosts"].values():
        host["iptables"] = flavour
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    inv = load_inventory(path)
    lab = CalicoLab(flavour, path, inv, plan_lab(inv), work)
    try:
        up(lab.plan, log=lambda *_: None)
        lab.cli("lab", "up")
        yield lab
    finally:
        subprocess.run([CHAINLAB, "-i", str(path), "lab", "down"], capture_output=True, timeout=600)
        down(lab.plan, log=lambda *_: None)


def test_docker_sees_calico_networks_and_addresses(calico_lab: CalicoLab) -> None:
    lab = calico_lab
    pool = lab.inventory.calico.pool
    for host in ("master", "slave1", "slave2"):  # global: every dockerd sees it
        net = json.loads(lab.ssh(host, "docker network inspect net1").stdout)[0]
        assert (net["Driver"], net["IPAM"]["Driver"], net["Scope"]) == ("calico", "calico-ipam", "global")
        assert net["IPAM"]["Config"][0]["Subnet"] == str(pool)
    for container, host in PLACEMENT.items():
        settings = lab.inspect(host, container)["NetworkSettings"]["Networks"]["net1"]
        assert IPv4Address(settings["IPAddress"]) in pool and settings["MacAddress"] == FIXED_MAC.lower()
        iface = "cali" + settings["EndpointID"][:11]
        inside = lab.ssh(host, f"docker exec {container} ip -o addr show cali0; docker exec {container} ip route").stdout
        assert f"{settings['IPAddress']}/32" in inside and "default via 169.254.1.1 dev cali0" in inside
        host_side = lab.ssh(host, f"cat /proc/sys/net/ipv4/conf/{iface}/proxy_arp; ip route show {settings['IPAddress']}")
        assert host_side.stdout.split("\n")[0] == "1" and f"dev {iface}" in host_side.stdout
    state = json.loads((lab.plan.state_dir / "lab-state.json").read_text())
    assert state["containers"]["web3"]["interface"].startswith("cali")


def test_every_plugin_call_is_answered(calico_lab: CalicoLab) -> None:
    log = calico_lab.ssh("master", f"cat {LOGFILE}").stdout
    for call in ("/Plugin.Activate", "/NetworkDriver.GetCapabilities", "/NetworkDriver.CreateNetwork",
                 "/IpamDriver.GetDefaultAddressSpaces", "/IpamDriver.RequestPool", "/IpamDriver.RequestAddress",
                 "/NetworkDriver.CreateEndpoint", "/NetworkDriver.Join", "/NetworkDriver.EndpointOperInfo"):
        assert f" {call} " in log, f"{call} not in the plugin's log:\n{log[-3000:]}"
    assert '"Scope": "global"' in log


def test_scenarios_pass_through_docker_wired_containers(calico_lab: CalicoLab) -> None:
    lab = calico_lab
    proc = lab.cli("nightly", "--runs", str(lab.work / "runs"), "--scenarios", str(ROOT / "scenarios"), check=False)
    assert proc.returncode == 0 and "6/6 scenarios passed" in proc.stdout, proc.stdout + proc.stderr
    run4 = next((lab.work / "runs").glob("nightly-*/*-04-*"))
    text = (run4 / "analysis.json").read_text()
    assert "cali-tw-" in text and "Drop if no profiles matched" in text


def test_container_removed_behind_chainlabs_back_comes_back_through_docker(calico_lab: CalicoLab) -> None:
    lab = calico_lab
    before = lab.inspect("master", "web2")["NetworkSettings"]["Networks"]["net1"]
    iface, endpoint = "cali" + before["EndpointID"][:11], before["EndpointID"]
    lab.ssh("master", "docker rm -f web2")
    assert lab.ssh("master", f"ip link show {iface}", check=False).returncode != 0  # Leave removed the veth
    client = etcd_client(lab.inventory)
    keys = {leaf.key for leaf in client.read("/calico", recursive=True).leaves}
    assert not any(endpoint in k for k in keys)  # DeleteEndpoint
    address = IPv4Address(before["IPAddress"])
    block = json.loads(client.read(ipam.block_key(ipam.block_of(address))).value)
    assert address not in ipam.allocated(block)  # ReleaseAddress
    out = lab.cli("lab", "up").stdout
    assert "changed master: containers  created/started: web2" in out
    after = lab.inspect("master", "web2")["NetworkSettings"]["Networks"]["net1"]
    web1 = lab.inspect("master", "web1")["Name"]
    assert web1 and lab.ssh("master", f"docker exec web1 ping -c 1 -W 2 {after['IPAddress']}").returncode == 0


def test_killed_plugin_daemon_fails_dockers_calls_clearly_and_lab_up_repairs(calico_lab: CalicoLab) -> None:
    lab = calico_lab
    pid = int(lab.ssh("slave1", f"cat {PIDFILE}").stdout)
    os.kill(pid, signal.SIGKILL)  # our own daemon, by its recorded PID: its sockets stay, dead
    started = time.monotonic()
    failed = lab.ssh("slave1", "docker run -d --net net1 --name probe-x mybusybox", check=False)
    assert failed.returncode != 0 and "calico" in failed.stderr.lower(), failed.stderr
    assert time.monotonic() - started < 90
    lab.ssh("slave1", "docker rm -f probe-x", check=False)
    out = lab.cli("lab", "up").stdout
    assert "changed slave1: calico_node" in out and "daemon started" in out
    ok = lab.ssh("slave1", "docker run -d --net net1 --name probe-x mybusybox && docker rm -f probe-x", check=False)
    assert ok.returncode == 0, ok.stderr


def test_existing_mode_checks_and_names_what_is_missing(calico_lab: CalicoLab) -> None:
    lab = calico_lab
    doc = yaml.safe_load(lab.path.read_text())
    doc["calico"]["mode"] = "existing"
    existing = lab.work / "existing.yaml"
    existing.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = lab.cli("lab", "up", inventory=existing).stdout  # the emulation is what runs there: found
    assert "ok slave2: calico_node  Calico node ready" in out and "changed=0" in out
    lab.ssh("slave2", f"kill $(cat {PIDFILE})")  # a clean stop: its sockets go with it
    proc = lab.cli("lab", "up", inventory=existing, check=False)
    assert proc.returncode != 0
    assert "Docker network driver(s) calico, calico-ipam not registered with dockerd" in proc.stdout
    assert "failed slave2: calico_node" in proc.stdout and "started" not in proc.stdout
    assert "changed slave2: calico_node" in lab.cli("lab", "up").stdout  # emulate starts it again


def test_etcd_needs_the_labs_client_certificate(calico_lab: CalicoLab) -> None:
    lab = calico_lab
    pki = lab.plan.pki
    assert oct(pki.dir.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (pki.client_key, pki.server_key))
    url = f"{lab.inventory.hosts['master'].address}:{lab.inventory.etcd.port}/v2/keys/x"
    for args in (["http://" + url], ["--cacert", str(pki.ca), "https://" + url]):
        proc = subprocess.run(["curl", "-s", "-m", "5", "-X", "PUT", "-d", "value=y", *args], capture_output=True)
        assert proc.returncode != 0 or b'"action":"set"' not in proc.stdout
