"""Provider and network kinds, Calico modes and the executor: pure decisions and --check plans."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from chainlab.calico.etcdconn import EtcdEndpoint, EtcdTLS
from chainlab.errors import ChainlabError, InputError
from chainlab.inventory import load_inventory
from chainlab.local.certs import _server_addresses, ensure_pki
from chainlab.local.pki import Pki
from chainlab.networks.calico import dockerd, emulate, etcdtree, install
from chainlab.networks.calico.checks import missing_drivers
from chainlab.providers import REGISTRY, provider_class
from chainlab.provision import commands as C
from chainlab.provision import provision
from chainlab.provision.actions import Call, Command
from chainlab.provision.executor import Skip, run_step

ROOT = Path(__file__).resolve().parents[2]


def _reference(tmp_path: Path, **calico: object) -> Path:
    doc = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    doc["calico"].update(calico)
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _plan(path: Path) -> str:
    out = io.StringIO()
    report = provision(load_inventory(path), "up", check=True, offline=True,
                       console=Console(file=out, width=400, highlight=False))
    assert not report.failed, out.getvalue()
    return out.getvalue()


def test_every_registered_provider_says_whether_it_builds_its_hosts() -> None:
    assert {kind: provider_class(kind).builds_hosts for kind in REGISTRY} == {"local": True, "ssh": False, "qemu": True}


def test_emulate_on_hosts_chainlab_did_not_build_is_an_inventory_error(tmp_path: Path) -> None:
    path = _reference(tmp_path, mode="emulate")
    with pytest.raises(InputError) as info:
        load_inventory(path)
    [problem] = info.value.problems
    assert problem.path == "calico.mode" and problem.line == path.read_text().splitlines().index(
        "  mode: emulate") + 1
    assert "provider ssh does not build" in problem.message and "existing" in problem.message


def test_mode_defaults_follow_the_provider(tmp_path: Path) -> None:
    assert load_inventory(ROOT / "lab" / "local.yaml").calico_mode == "emulate"
    doc = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    del doc["calico"]["mode"]
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_inventory(path).calico_mode == "existing"


def test_install_plan_shows_calicoctl_cluster_store_and_node_run(tmp_path: Path, no_network: None) -> None:
    text = _plan(_reference(tmp_path, mode="install"))
    assert "curl -fsSL -o /usr/local/bin/calicoctl.part" in text
    assert "releases/download/v1.6.12/calicoctl" in text
    assert '"cluster-store": "etcd://172.16.91.195:2379"' in text and "systemctl restart docker" in text
    assert "calicoctl node run --node-image=calico/node:v2.6.12 --name=slave1 --ip=172.16.91.196" in text
    assert "ETCD_ENDPOINTS=http://172.16.91.195:2379" in text
    assert "docker network create --driver calico --ipam-driver calico-ipam" in text
    assert "chainlab.calico" not in text


def test_install_url_is_data_not_shell(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="http"):
        load_inventory(_reference(tmp_path, install={"calicoctl_url": "https://x/$(reboot)"}))


def test_down_plan_removes_only_what_lab_up_made(tmp_path: Path, no_network: None) -> None:
    out = io.StringIO()
    provision(load_inventory(ROOT / "inventory.yaml"), "down", check=True, offline=True,
              console=Console(file=out, width=400, highlight=False))
    text = out.getvalue()
    assert "docker network rm net1" in text and "only if labelled chainlab.lab=reference" in text
    assert "no record of /calico before lab up: etcd left as it is" in text  # never provisioned from here
    assert "Calico was running before lab up: left as it is" in text


def test_cluster_store_merges_into_daemon_json() -> None:
    tls = EtcdTLS("/p/ca.crt", "/p/c.crt", "/p/c.key")
    settings = dockerd.cluster_settings(EtcdEndpoint("10.0.0.1", 2379, tls), "10.0.0.2")
    merged = json.loads(dockerd.merged('{"log-level": "warn"}', settings))
    assert merged == {"log-level": "warn", "cluster-store": "etcd://10.0.0.1:2379",
                      "cluster-advertise": "10.0.0.2:2376",
                      "cluster-store-opts": {"kv.cacertfile": "/p/ca.crt", "kv.certfile": "/p/c.crt",
                                             "kv.keyfile": "/p/c.key"}}
    with pytest.raises(ChainlabError, match="not valid JSON"):
        dockerd.merged("{oops", settings)


def test_driver_discovery_answer() -> None:
    assert missing_drivers("calico=/run/docker/plugins/calico.sock\ncalico-ipam=\n") == ["calico-ipam"]
    assert missing_drivers("calico=/a\ncalico-ipam=/b\n") == []


def test_emulation_commands_quote_every_word() -> None:
    endpoint = EtcdEndpoint("10.0.0.1", 2379, EtcdTLS("/s p/ca", "/c", "/k"))
    script = emulate.start_argv(("/usr/bin/python3", "-m", emulate.MODULE), "master", endpoint)[2]
    assert "--etcd https://10.0.0.1:2379 --etcd-ca '/s p/ca'" in script
    assert "[ -S /run/docker/plugins/calico.sock ]" in script and "cali-FORWARD" in script
    assert "--cleanup" in emulate.stop_argv(("/usr/bin/python3", "-m", emulate.MODULE))[2]
    run = install.node_run_argv("calico/node:v2.6.12", "slave1", "10.0.0.2",
                                EtcdEndpoint("10.0.0.1", 2379))[2]
    assert "env ETCD_ENDPOINTS=http://10.0.0.1:2379 calicoctl node run" in run


def test_etcd_baseline_arithmetic() -> None:
    baseline = {"/calico/v1/ipam/v4/pool/172.20.0.0-16"}
    leaves = baseline | {"/calico/v1/policy/profile/net1/rules", "/calico/bgp/v1/host/master/ip_addr_v4"}
    dirs = {"/calico", "/calico/v1", "/calico/v1/ipam", "/calico/v1/ipam/v4", "/calico/v1/ipam/v4/pool",
            "/calico/v1/policy", "/calico/v1/policy/profile", "/calico/v1/policy/profile/net1",
            "/calico/bgp", "/calico/bgp/v1", "/calico/bgp/v1/host", "/calico/bgp/v1/host/master"}
    doomed, empty = etcdtree.added_since(baseline, leaves, dirs)
    assert doomed == ["/calico/bgp/v1/host/master/ip_addr_v4", "/calico/v1/policy/profile/net1/rules"]
    assert empty[0].count("/") >= empty[-1].count("/")  # deepest first
    assert "/calico/v1/ipam/v4/pool" not in empty and "/calico" not in empty
    assert "/calico/v1/policy" in empty and "/calico/bgp" in empty


NFT_BEFORE = """# nft list ruleset ip, before lab up
table ip nat {
\tchain PREROUTING {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local counter packets 3 bytes 360 jump DOCKER
\t}
}
table ip filter {
\tchain FORWARD {
\t\ttype filter hook forward priority filter; policy accept;
\t\tcounter packets 0 bytes 0 jump DOCKER-USER
\t}
}
"""
NFT_AFTER = NFT_BEFORE.replace("table ip filter {\n", "table ip filter {\n\tchain INPUT {\n"
                               "\t\ttype filter hook input priority filter; policy accept;\n\t}\n") + """table ip raw {
\tchain PREROUTING {
\t\ttype filter hook prerouting priority raw; policy accept;
\t}
\tchain OUTPUT {
\t\ttype filter hook output priority raw; policy accept;
\t}
}
"""


def test_nft_leftovers_are_the_empty_chains_and_tables_that_were_not_there() -> None:
    before, after = C.parse_nft_chains(NFT_BEFORE), C.parse_nft_chains(NFT_AFTER)
    assert before == {"nat": {"PREROUTING": 1}, "filter": {"FORWARD": 1}}
    assert C.nft_leftover_deletes(before, after) == [
        ["nft", "delete", "chain", "ip", "filter", "INPUT"], ["nft", "delete", "table", "ip", "raw"]]
    busy = NFT_AFTER.replace("priority raw; policy accept;\n\t}\n\tchain OUTPUT",
                             "priority raw; policy accept;\n\t\tcounter log\n\t}\n\tchain OUTPUT")
    assert ["nft", "delete", "table", "ip", "raw"] not in C.nft_leftover_deletes(before, C.parse_nft_chains(busy))


def test_pki_reissues_the_server_certificate_when_etcd_moves(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    assert ensure_pki(pki, "t", IPv4Address("10.0.0.1")) is True
    client = pki.client_cert.read_bytes()
    assert ensure_pki(pki, "t", IPv4Address("10.0.0.1")) is False
    assert ensure_pki(pki, "t", IPv4Address("10.0.0.2")) is True
    assert IPv4Address("10.0.0.2") in _server_addresses(pki) and pki.client_cert.read_bytes() == client
    assert oct(pki.dir.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in pki.dir.iterdir())


class Ctx:
    def __init__(self, check: bool) -> None:
        self.check = check
        self.done: list[str] = []

    def perform(self, action: object) -> str:
        self.done.append(action.shown())  # type: ignore[attr-defined]
        return "out"


def _step(ctx: Ctx) -> Iterator[object]:
    got = yield Command.of(["echo", "a b"])
    yield Call(f"got {got}", lambda: None)
    return "did it", "nothing to do"


def test_executor_runs_actions_or_under_check_only_shows_them() -> None:
    real = Ctx(check=False)
    result = run_step(real, "s", _step)  # type: ignore[arg-type]
    assert (result.status, result.detail) == ("changed", "did it") and real.done == ["echo 'a b'", "got out"]
    dry = Ctx(check=True)
    result = run_step(dry, "s", _step)  # type: ignore[arg-type]
    assert result.status == "changed" and dry.done == [] and result.commands == ["echo 'a b'", "got None"]

    def skipped(ctx: Ctx) -> Iterator[object]:
        raise Skip("not here")
        yield

    assert run_step(real, "s", skipped).status == "skipped"  # type: ignore[arg-type]


def test_bridge_reads_a_hosts_links_once_for_all_its_containers(tmp_path: Path) -> None:
    """The host's `ip -o link` answers every container's veth lookup (one probe, not one per
    container); a change on the host makes the next lookup read it again."""
    from chainlab.networks import network_for
    from chainlab.networks.bridge import LINKS_PROBE
    from chainlab.providers import provider_for
    from chainlab.provision.context import HostContext, RunContext
    from chainlab.provision.facts import Facts

    doc = yaml.safe_load((ROOT / "lab" / "local-bridge.yaml").read_text())
    doc["containers"]["web2"] = {"host": "master", "publish": {8081: 80}}  # one host port is one container's
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    inv = load_inventory(path)
    provider = provider_for(inv)
    network = network_for(inv, provider)
    ctx = HostContext(RunContext(inv, provider, network, check=False), "master", Facts("master", "assumed"), ssh=object())  # type: ignore[arg-type]
    probes = network.up_probes("master")
    assert probes.count(LINKS_PROBE) == 1
    links = "1: lo: <LOOPBACK>\n7: veth1a@if6: <UP>\n9: veth2b@if8: <UP>\n"
    answers = {"web1": "7\n", "web2": "9\n"}
    ctx.preload(probes, {i: (0, links if p == LINKS_PROBE else answers[p[2]]) for i, p in enumerate(probes)})
    attrs = {"NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}}}
    # ssh=object(): any read over SSH would fail
    states = [network.container_state(ctx, attrs, name) for name in ("web1", "web2")]
    assert [s.interface for s in states] == ["veth1a", "veth2b"]
    ctx.perform(Call("a change", lambda: None))
    with pytest.raises(AttributeError):  # read again, over the connection
        network.container_state(ctx, attrs, "web1")


def test_one_provider_per_inventory_plans_once_and_the_daemons_etcd_is_not_route_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection asks the provider for the lab's plan: made once per inventory (it cost
    0.7 s of a warm 30-host `lab up` when made per call); the Calico daemon's etcd endpoint is
    data for a command run inside the lab, so this machine's route is not asked for it."""
    import chainlab.local.plan as plan_module
    from chainlab.providers import provider_for
    from chainlab.providers.local import LocalProvider

    local_yaml = Path(__file__).resolve().parents[2] / "lab" / "local.yaml"
    inv = load_inventory(local_yaml)
    made: list[str] = []
    real = plan_module.plan_lab
    monkeypatch.setattr(plan_module, "plan_lab", lambda i: made.append(i.lab) or real(i))
    routes: list[IPv4Address] = []
    monkeypatch.setattr(LocalProvider, "check_route", lambda self, address: routes.append(address))
    provider = provider_for(inv)
    assert provider is provider_for(inv) and provider_for(load_inventory(local_yaml)) is not provider
    runtime = provider.emulation_runtime("slave1")
    assert runtime.etcd == provider.etcd_endpoint() and routes == [IPv4Address(runtime.etcd.host)]
    assert provider.default_image_tarball() and made == ["local"]


def test_the_hosts_etcd_registrations_are_read_once_and_a_failure_fails_each_host_alike() -> None:
    """One request for every host's registration (the first host to ask makes it); when etcd
    does not answer, each host's step gets that error without asking etcd again."""
    from types import SimpleNamespace

    from chainlab.calico import datastore as D
    from chainlab.calico.etcdlib import etcd

    asked: list[str] = []

    class Answering:
        def read(self, key: str, recursive: bool = False) -> object:
            asked.append(key)
            leaf = SimpleNamespace(key=D.host_ip_key("master"), value="10.0.0.1", dir=False)
            return SimpleNamespace(leaves=[leaf], etcd_index=7)

    class Down:
        def read(self, key: str, recursive: bool = False) -> object:
            asked.append(key)
            raise etcd.EtcdConnectionFailed("connection refused")

    mode = emulate.Emulate(SimpleNamespace())  # type: ignore[arg-type]
    run = SimpleNamespace(etcd=Answering)
    seen = [mode._registered(SimpleNamespace(offline=False, host=h, run=run)) for h in ("master", "slave1")]
    assert (seen, asked) == (["10.0.0.1", None], [D.HOST_IP_DIR])
    asked.clear()
    mode = emulate.Emulate(SimpleNamespace())  # type: ignore[arg-type]
    for host in ("master", "slave1"):
        with pytest.raises(etcd.EtcdConnectionFailed, match="connection refused"):
            mode._registered(SimpleNamespace(offline=False, host=host, run=SimpleNamespace(etcd=Down)))
    assert asked == [D.HOST_IP_DIR]


@pytest.mark.parametrize("route,iptables_status,programmed", [
    ("172.20.0.65 dev cali43777a9992e scope link", 0, True),
    ("172.20.0.65 dev cali43777a9992e", 0, True),  # the interface ends the line
    ("172.20.0.65 dev cali43777a9992ef scope link", 0, False),  # another interface that starts alike
    ("", 0, False),  # no route
    ("172.20.0.65 dev cali43777a9992e scope link", 1, False),  # no cali-tw chain yet
])
def test_calicos_programmed_check_reads_the_route_without_grep(tmp_path: Path, route, iptables_status, programmed) -> None:
    """The route's interface is matched by the shell itself (one process less per container
    and lab up); `ip` and `iptables` are stand-ins printing a route and exiting as told."""
    import subprocess

    from chainlab.labstate import ContainerState
    from chainlab.networks import network_for
    from chainlab.providers import provider_for

    for name, body in (("ip", f"printf '%s\\n' {C.shlex.quote(route)}" if route else "true"),
                       ("iptables", f"exit {iptables_status}"), ("grep", "exit 99")):
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    inv = load_inventory(ROOT / "lab" / "local.yaml")
    network = network_for(inv, provider_for(inv))
    state = ContainerState(host="slave1", address=IPv4Address("172.20.0.65"), network="net1", driver="calico",
                           interface="cali43777a9992e")
    argv = network._programmed_argv(state)
    done = subprocess.run(argv, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert (done.returncode == 0) is programmed, done.stderr
