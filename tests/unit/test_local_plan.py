"""The local lab's pure planning: names, addresses, config texts (no root needed)."""

from __future__ import annotations

import shlex
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory, load_inventory
from chainlab.local import plan as P
from chainlab.local.plan import plan_lab

ROOT = Path(__file__).resolve().parents[2]

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 27 0:50 / /mnt/other rw,relatime - cgroup cgroup rw,memory
"""


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(ROOT / "lab" / "local.yaml")


def test_local_yaml_plans_three_hosts(inv: Inventory) -> None:
    plan = plan_lab(inv)
    assert list(plan.hosts) == ["master", "slave1", "slave2"]
    master = plan.hosts["master"]
    assert master.address == IPv4Address("10.231.91.195")
    assert master.lan == IPv4Interface("10.231.91.195/24")
    assert master.runs_etcd and not plan.hosts["slave1"].runs_etcd
    assert master.netns == "chainlab.local.master" and plan.lan_netns == "chainlab.local"
    assert plan.root_if == "cl-local"
    assert plan.mgmt == IPv4Interface("10.231.91.1/24")
    assert {h.flavour for h in plan.hosts.values()} == {"legacy"}
    assert len({h.bip.network for h in plan.hosts.values()}) == 3
    assert master.dir == Path("/var/lib/chainlab/local/hosts/master")


def test_lock_file_outlives_the_state_dir_and_is_per_lab_name(inv: Inventory) -> None:
    plan = plan_lab(inv)
    assert plan.lock_file == Path("/run/chainlab/local-local.lock")
    assert plan.state_dir not in plan.lock_file.parents
    moved = plan_lab(inv.model_copy(update={"local": inv.local.model_copy(update={"state_dir": Path("/tmp/x")})}))
    assert moved.lock_file == plan.lock_file  # same lab name: same namespaces, same lock
    assert plan_lab(inv.model_copy(update={"lab": "other"})).lock_file != plan.lock_file


def test_refuses_ssh_provider() -> None:
    inv = load_inventory(ROOT / "inventory.yaml")
    with pytest.raises(ChainlabError, match="provider: local"):
        plan_lab(inv)


def test_auto_flavour_is_nft_and_long_names_fit_interfaces() -> None:
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    doc["hosts"]["slave2"]["iptables"] = "auto"
    doc["lab"] = "a-rather-long-lab-name"
    plan = plan_lab(Inventory.model_validate(doc))
    assert plan.hosts["slave2"].flavour == "nft"
    assert len(plan.root_if) <= 15 and plan.root_if.startswith("cl-a-rather")
    assert plan_lab(Inventory.model_validate({**doc, "lab": "a-rather-long-lab-nam2"})).root_if != plan.root_if


def test_ifname() -> None:
    assert P.ifname("short") == "short"
    long = P.ifname("p-averyveryverylonghostname")
    assert len(long) == 15 and long == P.ifname("p-averyveryverylonghostname")


def test_docker_bridge_must_not_overlap_the_lan() -> None:
    with pytest.raises(ChainlabError, match="overlaps local.lan"):
        doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
        doc["local"]["lan"] = "172.30.1.254/16"
        for i, host in enumerate(doc["hosts"].values()):
            host["address"] = f"172.30.9.{i + 10}"
        plan_lab(Inventory.model_validate(doc))


def test_state_dir_must_be_deep() -> None:
    """Said by the inventory's validation (inventory check), not first by local up."""
    doc = yaml.safe_load((ROOT / "lab" / "local.yaml").read_text())
    for state_dir in ("/var", "/"):
        doc["local"]["state_dir"] = state_dir
        with pytest.raises(ValidationError, match="at least two levels deep"):
            Inventory.model_validate(doc)


def test_sshd_config_is_key_only_on_lab_address(inv: Inventory) -> None:
    plan = plan_lab(inv)
    text = P.sshd_config(plan, plan.hosts["slave1"])
    assert "ListenAddress 10.231.91.196:22" in text
    assert "PasswordAuthentication no" in text and "UsePAM no" in text
    assert f"AuthorizedKeysFile {plan.authorized_keys}" in text
    assert f"HostKey {plan.hosts['slave1'].host_key}" in text
    assert f"SetEnv HOME={plan.hosts['slave1'].home}" in text


def test_ssh_client_config_and_known_hosts(inv: Inventory) -> None:
    plan = plan_lab(inv)
    config = P.ssh_client_config(plan)
    assert "Host master 10.231.91.195\n    HostName 10.231.91.195" in config
    assert "StrictHostKeyChecking yes" in config and f"IdentityFile {plan.client_key}" in config
    keys = {name: f"ssh-ed25519 AAAA{name} {name}.local\n" for name in plan.hosts}
    lines = P.known_hosts_text(plan, keys).splitlines()
    assert lines[0] == "10.231.91.195,master ssh-ed25519 AAAAmaster"
    assert len(lines) == 3


def test_daemon_argv(inv: Inventory) -> None:
    plan = plan_lab(inv)
    master = plan.hosts["master"]
    dockerd = P.dockerd_argv(plan, master)
    assert dockerd[dockerd.index("--bip") + 1] == "172.30.1.1/24"
    assert dockerd[dockerd.index("--data-root") + 1] == str(master.docker_root)
    assert "--cgroup-parent" in dockerd and "/chainlab.local.master" in dockerd
    # Calico 2.x's network is global: Docker's cluster store is the lab's etcd, over TLS
    assert dockerd[dockerd.index("--cluster-store") + 1] == "etcd://10.231.91.195:2379"
    assert f"kv.certfile={plan.pki.client_cert}" in dockerd
    etcd = P.etcd_argv(plan, master)
    assert "--enable-v2" in etcd and "--client-cert-auth" in etcd
    assert etcd[etcd.index("--listen-client-urls") + 1] == "https://10.231.91.195:2379,https://127.0.0.1:2379"
    assert etcd[etcd.index("--listen-peer-urls") + 1] == "http://127.0.0.1:2380"  # never on the lab address
    assert P.enter_argv(42, ["true"]) == ["nsenter", "-t", "42", "-m", "-u", "-n", "--", "true"]
    holder = P.holder_argv(master)
    assert "--net=/run/netns/chainlab.local.master" in holder and "--kill-child" in holder


def test_cgroup_mounts_parse() -> None:
    mounts = P.cgroup_mounts(MOUNTINFO)
    assert [m.path for m in mounts] == [
        "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/devices", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified",
    ]
    assert mounts[2].options == "name=systemd" and mounts[3].fstype == "cgroup2"


def test_setup_script(inv: Inventory) -> None:
    plan = plan_lab(inv)
    host = plan.hosts["slave2"]
    script = P.host_setup_script(plan, host, P.cgroup_mounts(MOUNTINFO))
    lines = script.splitlines()
    assert lines[:5] == ["set -e", "mount --make-rprivate /", "hostname slave2",
                         "if mountpoint -q /run/netns; then umount -R /run/netns; fi", "mount -t sysfs sysfs /sys"]
    assert "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd" in lines
    assert "mount -t cgroup2 -o defaults cgroup2 /sys/fs/cgroup/unified" in lines
    assert lines.index("mount -t tmpfs -o mode=755 tmpfs /run") < lines.index("mkdir -p -m 755 /run/sshd /run/lock")
    binds = [shlex.split(line)[2:] for line in lines if line.startswith("mount --bind")]
    assert {target for _, target in binds} == set(P.PRIVATE_PATHS)
    assert all(src.startswith(str(host.fs_dir)) for src, _ in binds)


def test_alternatives_targets() -> None:
    legacy = P.alternatives_targets("legacy")
    assert legacy["iptables"] == "/usr/sbin/iptables-legacy"
    assert legacy["iptables-save"] == "/usr/sbin/iptables-legacy-save"
    assert legacy["ip6tables-restore"] == "/usr/sbin/ip6tables-legacy-restore"
    assert P.alternatives_targets("nft")["iptables-restore"] == "/usr/sbin/iptables-nft-restore"


def test_shipped_local_labs_plan_on_their_own_subnets_and_state_dirs() -> None:
    plans = [plan_lab(load_inventory(path)) for path in sorted((ROOT / "lab").glob("local*.yaml"))]
    assert [p.lab for p in plans] == ["bridge", "nft", "local"]
    assert len({p.mgmt.network for p in plans}) == len({p.state_dir for p in plans}) == len({p.lan_netns for p in plans}) == 3
    nft = plans[1]
    assert {h.flavour for h in nft.hosts.values()} == {"nft"}
