"""The VM lab's pure planning: inventory section, names, qemu argv, seed texts, image recipe."""

from __future__ import annotations

import shlex
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
import yaml

from chainlab.errors import ChainlabError, InputError
from chainlab.inventory import Inventory, load_inventory
from chainlab.vm import plan as P
from chainlab.vm import recipe as R
from chainlab.vm.plan import plan_vm_lab

ROOT = Path(__file__).resolve().parents[2]
VM_YAML = ROOT / "lab" / "vm.yaml"
BRIDGE_YAML = ROOT / "lab" / "vm-bridge.yaml"


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(VM_YAML)


def _variant(tmp_path: Path, change: dict, source: Path = VM_YAML) -> Path:
    doc = yaml.safe_load(source.read_text())
    for key, value in change.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# --- inventory ---------------------------------------------------------------------------

def test_shipped_vm_inventories_are_valid() -> None:
    vm, bridge = load_inventory(VM_YAML), load_inventory(BRIDGE_YAML)
    assert vm.provider == bridge.provider == "qemu"
    assert list(vm.hosts) == ["master", "slave1", "slave2"] and vm.etcd and vm.etcd.host == "master"
    assert {n: c.host for n, c in vm.containers.items()} == {"web1": "master", "web2": "master", "web3": "slave1"}
    assert bridge.calico.driver == "bridge" and bridge.etcd is None
    assert {n: c.publish for n, c in bridge.containers.items()} == {"web1": {8080: 80}, "web2": {8080: 80}}
    assert vm.qemu and bridge.qemu and vm.qemu.lan.network != bridge.qemu.lan.network


def test_qemu_section_is_required_and_only_with_provider_qemu(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="provider qemu needs a `qemu:` section"):
        load_inventory(_variant(tmp_path, {"qemu": None}))
    with pytest.raises(InputError, match="`qemu:` section is only allowed with provider: qemu"):
        load_inventory(_variant(tmp_path, {"provider": "ssh"}))


def test_vm_addresses_must_be_inside_the_lan(tmp_path: Path) -> None:
    doc = yaml.safe_load(VM_YAML.read_text())
    doc["hosts"]["slave2"]["address"] = "10.231.99.7"
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"10.231.99.7 must be inside qemu.lan 10.231.80.0/24"):
        load_inventory(path)


@pytest.mark.parametrize("memory", [128, 100000])
def test_memory_is_bounded(tmp_path: Path, memory: int) -> None:
    doc = yaml.safe_load(VM_YAML.read_text())
    doc["qemu"]["memory"] = memory
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="qemu.memory"):
        load_inventory(path)


# --- plan --------------------------------------------------------------------------------

def test_plan_names_addresses_and_paths(inv: Inventory) -> None:
    plan = plan_vm_lab(inv)
    assert plan.lan_netns == "chainlab.vm" and plan.root_if == "cl-vm"
    assert plan.mgmt == IPv4Interface("10.231.80.1/24")
    master = plan.hosts["master"]
    assert master.address == IPv4Address("10.231.80.195") and master.lan == IPv4Interface("10.231.80.195/24")
    assert master.runs_etcd and not plan.hosts["slave1"].runs_etcd
    assert master.tap == "tap-master" and master.mac == "52:54:00:e7:50:c3"
    assert len({h.mac for h in plan.hosts.values()}) == 3
    assert master.overlay == Path("/var/lib/chainlab/vm/hosts/master/disk.qcow2")
    assert plan.image.dir.parent == Path("/var/cache/chainlab/vm")
    assert plan.lock_file == Path("/run/chainlab/vm-vm.lock")


def test_plan_refuses_other_providers_and_users(tmp_path: Path) -> None:
    with pytest.raises(ChainlabError, match="only works on an inventory with `provider: qemu`"):
        plan_vm_lab(load_inventory(ROOT / "lab" / "local.yaml"))
    doc = yaml.safe_load(VM_YAML.read_text())
    doc["ssh"]["user"] = "admin"
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ChainlabError, match="reached as root"):
        plan_vm_lab(load_inventory(path))


def test_qemu_has_only_the_tap_nic_and_no_user_networking(inv: Inventory) -> None:
    plan = plan_vm_lab(inv)
    host = plan.hosts["slave1"]
    argv = P.qemu_argv(plan, host, "tcg")
    line = shlex.join(argv)
    assert "-nodefaults" in argv and "user" not in line.replace("-no-user-config", "")
    assert [a for a in argv if a.startswith("tap,")] == [f"tap,id=n0,ifname={host.tap},script=no,downscript=no"]
    assert "-nic" not in argv and "-net" not in argv
    assert f"virtio-net-pci,netdev=n0,mac={host.mac}" in argv
    assert "tcg,thread=multi,tb-size=128" in argv and argv[argv.index("-m") + 1] == "768"
    assert f"file={host.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap" in argv
    assert f"file={host.seed_image},if=virtio,format=raw,readonly=on" in argv
    assert "-daemonize" not in argv  # it is spawned and tracked by PID
    kvm = P.qemu_argv(plan, host, "kvm")
    assert kvm[kvm.index("-accel") + 1] == "kvm"
    wrapped = P.enter_lan_argv(plan, argv)
    assert wrapped[:3] == ["nsenter", "--net=/run/netns/chainlab.vm", "--"]


def test_seed_sets_name_address_keys_flavour_and_etcd(inv: Inventory) -> None:
    plan = plan_vm_lab(inv)
    master, slave = plan.hosts["master"], plan.hosts["slave1"]
    pki = {name: name.upper() for name in ("ca.crt", "client.crt", "client.key", "etcd-server.crt", "etcd-server.key")}
    files = P.seed_files(plan, master, "ssh-ed25519 CLIENT c", "PRIVATE", "ssh-ed25519 HOST h", pki)
    assert set(files) == {"apply.sh", "authorized_keys", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
                          "sshd.conf", "lab.network", "etcd.env", *pki}
    assert files["client.key"] == ("CLIENT.KEY", 0o600)
    assert files["ssh_host_ed25519_key"] == ("PRIVATE", 0o600)
    script = files["apply.sh"][0]
    assert "hostname master" in script and "rm -f /etc/ssh/ssh_host_*" in script
    assert "update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy" in script
    assert f"install -m 644 \"$S/etcd.env\" {R.ETCD_ENV}" in script
    assert "Address=10.231.80.195/24" in files["lab.network"][0]
    assert "MACAddress=52:54:00:e7:50:c3" in files["lab.network"][0]
    assert "Gateway" not in files["lab.network"][0]  # no route out of the lab
    assert "Destination=169.254.1.1/32" in files["lab.network"][0]  # proxy ARP for Calico workloads
    env = files["etcd.env"][0]
    assert "ETCD_ENABLE_V2=true" in env and "ETCD_LISTEN_CLIENT_URLS=https://10.231.80.195:2379," in env
    assert "ETCD_CLIENT_CERT_AUTH=true" in env and "ETCD_KEY_FILE=/etc/chainlab/pki/etcd-server.key" in env
    assert 'install -m 600 -o etcd "$S/etcd-server.key" /etc/chainlab/pki/etcd-server.key' in script
    other = P.seed_files(plan, slave, "k", "p", "ssh-ed25519 X", pki)
    assert "etcd.env" not in other and "etcd-server.key" not in other and "client.key" in other
    assert f"/etc/chainlab/pki/etcd-server.key {R.ETCD_ENV}" in other["apply.sh"][0]  # removed there
    assert "ca.key" not in pki  # the CA's key never leaves this machine


def test_seed_flavour_nft(tmp_path: Path) -> None:
    doc = yaml.safe_load(VM_YAML.read_text())
    doc["hosts"]["slave2"]["iptables"] = "nft"
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    plan = plan_vm_lab(load_inventory(path))
    script = P.seed_script(plan.hosts["slave2"])
    assert "--set iptables /usr/sbin/iptables-nft" in script and "--set ip6tables /usr/sbin/ip6tables-nft" in script


def test_ssh_client_files(inv: Inventory) -> None:
    from chainlab.local.plan import known_hosts_text, ssh_client_config

    plan = plan_vm_lab(inv)
    keys = {name: f"ssh-ed25519 KEY{name} {name}.vm" for name in plan.hosts}
    known = known_hosts_text(plan, keys)
    assert known.splitlines()[0] == "10.231.80.195,master ssh-ed25519 KEYmaster"
    config = ssh_client_config(plan)
    assert "Host master 10.231.80.195" in config and "StrictHostKeyChecking yes" in config
    assert f"UserKnownHostsFile {plan.known_hosts}" in config


# --- image recipe ------------------------------------------------------------------------

def test_recipe_has_what_provisioning_and_the_emulation_need() -> None:
    for package in ("openssh-server", "rsyslog", "iptables", "ipset", "docker.io", "etcd-server", "busybox-static",
                    "python3", "python3-etcd", "python3-jinja2", "python3-venv", "linux-image-amd64"):
        assert package in R.PACKAGES
    argv = R.mmdebstrap_argv(Path("/x/root"), Path("/x/hooks"))
    assert argv[0] == "mmdebstrap" and argv[-2:] == ["bookworm", "/x/root"]
    assert "--variant=minbase" in argv and f"--include={','.join(R.PACKAGES)}" in argv


def test_recipe_key_is_stable_and_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    key = R.recipe_key()
    assert key == R.recipe_key() and len(key) == 64
    monkeypatch.setattr(R, "PACKAGES", (*R.PACKAGES, "tcpdump"))
    assert R.recipe_key() != key
    assert R.image_paths(Path("/c")).dir != R.image_paths(Path("/c"), key).dir


def test_customize_hook_removes_shared_host_keys_and_installs_the_seed() -> None:
    hook = R.customize_hook()
    assert 'rm -f "$R"/etc/ssh/ssh_host_*' in hook
    assert "systemctl enable --quiet chainlab-seed.service systemd-networkd.service" in hook
    assert "/usr/local/sbin/chainlab-seed" in hook and "apt-daily.timer" in hook
    assert "MODULES=list" in R.essential_hook()


@pytest.mark.parametrize("line, expected", [
    ("I: downloading packages with apt...", R.BuildEvent(stage="downloading packages")),
    ("0 upgraded, 69 newly installed, 0 to remove and 0 not upgraded.", R.BuildEvent(total=69)),
    ("Get:3 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 2.36-9 [2759 kB]", R.BuildEvent(fetched=True)),
    ("Setting up libc6:amd64 (2.36-9+deb12u14) ...", R.BuildEvent(unpacked=True)),
    ("Reading package lists...", None),
])
def test_build_progress_lines(line: str, expected: R.BuildEvent | None) -> None:
    assert R.parse_build_line(line) == expected


# --- SSH targets and the route rule --------------------------------------------------------

def test_targets_go_only_through_the_lab_link(inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    from chainlab.local import system
    from chainlab.remote.target import etcd_endpoint, resolve_target

    plan = plan_vm_lab(inv)
    monkeypatch.setattr(system, "route_device", lambda address: "eth0")
    with pytest.raises(ChainlabError, match="routes it via eth0, not the VM lab link cl-vm"):
        resolve_target(inv, "slave1")
    with pytest.raises(ChainlabError, match="not the VM lab link"):
        etcd_endpoint(inv)
    monkeypatch.setattr(system, "route_device", lambda address: "cl-vm")
    target = resolve_target(inv, "slave1")
    assert (target.address, target.user, target.port) == (IPv4Address("10.231.80.196"), "root", 22)
    assert (target.key_filename, target.known_hosts, target.ssh_home) == (plan.client_key, plan.known_hosts, plan.home)
    endpoint = etcd_endpoint(inv)
    assert endpoint.url == "https://10.231.80.195:2379" and endpoint.tls is not None
    assert endpoint.tls.cert == str(plan.pki.client_cert)


def test_the_calico_daemon_runs_from_the_wheel_in_the_vm(inv: Inventory) -> None:
    from chainlab.providers import provider_for

    provider = provider_for(inv)
    assert provider.builds_hosts and not provider.starts_docker and inv.calico_mode == "emulate"
    runtime = provider.emulation_runtime("slave1")
    assert runtime.argv == ("env", "PYTHONPATH=/opt/chainlab", "/usr/bin/python3", "-m", "chainlab.calico.agent")
    assert runtime.etcd.url == "https://10.231.80.195:2379"
    assert runtime.etcd.tls and runtime.etcd.tls.key == "/etc/chainlab/pki/client.key"  # as the VM has it
    assert plan_vm_lab(inv).emulates_calico and not plan_vm_lab(load_inventory(BRIDGE_YAML)).emulates_calico


def test_lab_state_and_image_tarball_live_with_the_vm_lab(inv: Inventory) -> None:
    from chainlab.labstate import state_path
    from chainlab.providers import provider_for
    from chainlab.provision.image import tarball_path

    assert state_path(inv) == Path("/var/lib/chainlab/vm/lab-state.json")
    assert tarball_path(inv, provider_for(inv)) == plan_vm_lab(inv).image.busybox_tarball


def test_the_provider_says_kvm_or_tcg_as_vm_up_found(tmp_path: Path) -> None:
    from chainlab.providers import provider_for
    from chainlab.vm.lab import VmLabRecord

    doc = yaml.safe_load(VM_YAML.read_text())
    doc["qemu"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    inv = load_inventory(path)
    assert provider_for(inv).describe() == "qemu (VMs on this machine)"  # not up: nothing known
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text(VmLabRecord(lab="vm", accel="tcg").model_dump_json())
    assert provider_for(inv).describe() == "qemu (VMs on this machine, TCG, software emulation)"
