"""Network kind `calico`: Calico 2.x networking driven through Docker, as the reference did it.

    docker network create --driver calico --ipam-driver calico-ipam --subnet POOL net1
    docker run --net net1 --name web1 -itd mybusybox

Both are issued with the docker SDK, whatever runs Calico on the hosts (`calico.mode`, one
module each: `emulate`, `existing`, `install`). The network is global (Calico 2.x's plugin
declares that scope), so it is created once, on the first host, and every dockerd sees it
through Docker's cluster store. Around that: the IP pool in etcd (what `calicoctl create`
of an ipPool writes), and the /calico tree put back as it was at lab down.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from functools import cached_property, partial
from typing import Any

from chainlab.calico import datastore as D
from chainlab.calico.rules import chain
from chainlab.errors import ChainlabError
from chainlab.inventory import Inventory
from chainlab.labstate import ContainerState, LabState, load_etcd_baseline, load_state, save_etcd_baseline
from chainlab.networks.base import LABEL, HostStep, LabStep, Network
from chainlab.networks.calico import etcdtree
from chainlab.networks.calico.emulate import Emulate
from chainlab.networks.calico.existing import Existing
from chainlab.networks.calico.install import Install
from chainlab.networks.calico.modes import Mode
from chainlab.providers import Provider
from chainlab.provision import commands as C
from chainlab.provision.actions import Action, Call, Outcome
from chainlab.provision.context import HostContext, RunContext
from chainlab.provision.dockerview import DockerView, inspect_argv

def network_probe(name: str) -> list[str]:
    return ["docker", "network", "inspect", name]


MODES: dict[str, type[Mode]] = {"emulate": Emulate, "existing": Existing, "install": Install}
DRIVER = "calico"
IPAM_DRIVER = "calico-ipam"
ETCD_PEER_PORT = 2380
SERF_PORT = 7946  # Docker's cluster-store gossip between the hosts' dockerd
VISIBLE_TIMEOUT = 15.0
PROGRAMMED_TIMEOUT = 15


class CalicoNetwork(Network):
    kind = "calico"

    def __init__(self, inv: Inventory, provider: Provider):
        super().__init__(inv, provider)
        if inv.etcd is None:
            raise ChainlabError("calico.driver calico needs an `etcd:` section in the inventory")
        self.mode = MODES[inv.calico_mode](self)

    def networks(self) -> list[str]:
        return sorted({self.inv.calico.network, *(self.network_name(c) for c in self.inv.containers)})

    # --- lab up ---------------------------------------------------------------------------

    def lab_first(self) -> list[tuple[str, LabStep]]:
        return [("etcd_baseline", self._baseline)]

    def node_up(self) -> list[tuple[str, HostStep]]:
        return [("calico_node", self.mode.node_up)]

    def lab_up(self) -> list[tuple[str, LabStep]]:
        return [("calico_network", self._network_up)]

    def _baseline(self, run: RunContext) -> Generator[Action, Any, Outcome]:
        """Remember which /calico keys exist before lab up first touches etcd."""
        if load_etcd_baseline(self.inv) is None:
            yield Call("record the /calico keys present before lab up   # python-etcd, for lab down",
                       lambda: save_etcd_baseline(self.inv, etcdtree.tree(run.etcd())[0]))
        return "recorded the /calico keys present before lab up", "/calico keys before lab up on record"

    def _engine(self, run: RunContext) -> HostContext | None:
        """The host whose dockerd creates (and removes) the global network: the first of the
        inventory's hosts that is connected."""
        connected = (run.hosts.get(host) for host in self.inv.hosts)
        return next((ctx for ctx in connected if ctx is not None and not ctx.offline), None)

    def _network_up(self, run: RunContext) -> Generator[Action, Any, Outcome]:
        pool, nat = self.inv.calico.pool, self.inv.calico.nat_outgoing
        engine = self._engine(run)
        if engine is None or not etcdtree.pool_present(run.etcd(), pool):
            value = D.dumps(D.pool_value(pool, nat))
            yield Call(f"etcdctl mk {D.pool_key(pool)} '{value}'   # python-etcd, as calicoctl create ipPool",
                       lambda: etcdtree.create_pool(run.etcd(), pool, nat))
        where = engine.host if engine else next(iter(self.inv.hosts))
        for name in self.networks():
            if engine is not None and self._existing(engine, name):
                continue
            yield Call(f"docker network create --driver {DRIVER} --ipam-driver {IPAM_DRIVER} --subnet {pool}"
                       f" --label {LABEL}={self.inv.lab} {name}   # docker SDK on {where}",
                       partial(self._create, engine, name))
        return (f"pool {pool} and network(s) {', '.join(self.networks())} created",
                f"pool {pool} and network(s) {', '.join(self.networks())} present")

    def _existing(self, engine: HostContext, name: str) -> bool:
        """Whether network `name` exists there; one with other drivers is an error."""
        if name in self.docker_names(engine.host):
            attrs = engine.docker_view().networks.get(name)
        else:  # the first host is not connected: another one stands in
            attrs = DockerView.parse(engine.read(inspect_argv(networks=[name])) or "").networks.get(name)
        if attrs is None:
            return False
        drivers = (attrs.get("Driver"), (attrs.get("IPAM") or {}).get("Driver"))
        if drivers != (DRIVER, IPAM_DRIVER):
            raise ChainlabError(f"a Docker network {name} exists with drivers {drivers[0]}/{drivers[1]},"
                                f" not {DRIVER}/{IPAM_DRIVER}: remove it or choose another calico.network")
        return True

    def _create(self, engine: HostContext | None, name: str) -> Any:
        import docker

        assert engine is not None
        ipam = docker.types.IPAMConfig(driver=IPAM_DRIVER,
                                       pool_configs=[docker.types.IPAMPool(subnet=str(self.inv.calico.pool))])
        return engine.docker().networks.create(name, driver=DRIVER, ipam=ipam, labels={LABEL: self.inv.lab})

    def network_name(self, container: str) -> str:
        return self.inv.container_network(container)

    def run_options(self, container: str) -> tuple[dict[str, Any], str]:
        network = self.network_name(container)
        return {"network": network}, f"--net {network}"

    def before_container(self, ctx: HostContext, container: str) -> Generator[Action, Any, None]:
        """Wait (read-only, bounded) until this host's dockerd sees the global network: the
        cluster store carries it from the host that created it within a moment."""
        yield from ()
        if ctx.offline:
            return
        name = self.network_name(container)
        deadline = time.monotonic() + VISIBLE_TIMEOUT
        while not ctx.probe(network_probe(name)):
            if ctx.check:
                return  # not created yet: lab up would create it first
            if time.monotonic() > deadline:
                raise ChainlabError(f"network {name} is not visible to dockerd on {ctx.host} after"
                                    f" {VISIBLE_TIMEOUT:.0f} s: is its cluster store the lab's etcd?")
            time.sleep(0.2)

    def container_state(self, ctx: HostContext, attrs: dict[str, Any], container: str) -> ContainerState:
        network = self.network_name(container)
        settings = attrs["NetworkSettings"]["Networks"].get(network)
        if not settings or not settings.get("IPAddress"):
            raise ChainlabError(f"{container} has no address on {network} (docker inspect {container})")
        return ContainerState(host=ctx.host, address=settings["IPAddress"], network=network, driver="calico",
                              interface=D.interface_name(settings["EndpointID"]))

    def _programmed_argv(self, state: ContainerState, wait: int = 0) -> list[str]:
        """Exit 0 if felix's part is there: the route to the workload on its interface and its
        cali-tw chain; with `wait`, once it is (bounded by `wait` seconds, on the host)."""
        q = C.shlex.quote
        iface = state.interface or ""
        on_link = f" dev {iface}"  # a whole word of the route: followed by a space or the line's end
        check = (f"r=$(ip -4 route show {q(str(state.address) + '/32')}) && "
                 f'case "$r"{q(chr(10))} in *{q(on_link + " ")}*|*{q(on_link + chr(10))}*) ;; *) false;; esac && '
                 f"iptables -w -S {q(chain('tw', iface))} >/dev/null 2>&1")
        if not wait:
            return C.sh(check)
        return C.sh(f"end=$(( $(date +%s) + {wait} )); until {check}; do "
                    f"[ \"$(date +%s)\" -ge \"$end\" ] && exit 1; sleep 0.1; done")

    def wait_ready(self, ctx: HostContext, state: ContainerState) -> None:
        # The check run ahead with the facts if the container is unchanged; otherwise the
        # waiting check at once (it tests before it sleeps: no round trip of its own first).
        ready = ctx.preloaded(self._programmed_argv(state))
        if (ready is not None and ready[0] == 0) or ctx.probe(self._programmed_argv(state, PROGRAMMED_TIMEOUT)):
            return
        raise ChainlabError(f"{ctx.host}: felix has not programmed {state.address} on {state.interface}"
                            f" after {PROGRAMMED_TIMEOUT} s")

    @cached_property
    def _last_state(self) -> LabState | None:
        """The lab state the last lab up left (read once for all hosts), None if there is none."""
        try:
            return load_state(self.inv)
        except ChainlabError:
            return None

    def up_probes(self, host: str) -> list[list[str]]:
        """The node's probes, and the programmed-check of every container the last lab up left
        here (the same command `wait_ready` will run, if the container is unchanged)."""
        state = self._last_state
        known = [s for name, s in state.containers.items()
                 if s.host == host and name in self.inv.containers] if state else []
        return [*self.mode.probes(), *(self._programmed_argv(s) for s in known)]

    def docker_names(self, host: str) -> list[str]:
        """The networks, on the host that creates them if it is connected (the inventory's
        first, see `_engine`) and nowhere else: they are global, and each look at one makes
        that host's dockerd read the cluster store (etcd over TLS)."""
        return self.networks() if host == next(iter(self.inv.hosts)) else []

    # --- lab down -------------------------------------------------------------------------

    def lab_down(self) -> list[tuple[str, LabStep]]:
        return [("calico_network", self._network_down)]

    def node_down(self) -> list[tuple[str, HostStep]]:
        return [("calico_node", self.mode.node_down)]

    def lab_last(self) -> list[tuple[str, LabStep]]:
        return [("etcd_tree", self._restore_etcd)]

    def _network_down(self, run: RunContext) -> Generator[Action, Any, Outcome]:
        engine = self._engine(run)
        removed = []
        for name in self.networks():
            if engine is None:
                yield Call(f"docker network rm {name}   # docker SDK, only if labelled {LABEL}={self.inv.lab}",
                           lambda: None)
                removed.append(name)
                continue
            listed = [net for net in engine.docker().networks.list(names=[name]) if net.name == name]
            for net in listed:
                if (net.attrs.get("Labels") or {}).get(LABEL) == self.inv.lab:
                    yield from self._disconnect_stale(engine, net)
                    yield Call(f"docker network rm {name}   # docker SDK on {engine.host}", net.remove)
                    removed.append(name)
            if not listed and self._held(run, name):
                raise ChainlabError(f"dockerd on {engine.host} lists no network {name}, but its cluster store (etcd)"
                                    " holds one: dockerd cannot read etcd now; run lab down again once it can")
        return f"removed network(s) {', '.join(removed)}", "no network of the lab"

    def _disconnect_stale(self, engine: HostContext, net: Any) -> Generator[Action, Any, None]:
        """Endpoints of the lab's containers left in the network after they were removed (by
        a dockerd that could not write etcd meanwhile: the network then "has active
        endpoints" for good): `docker network disconnect -f`, Docker's way with a global
        network's stale endpoints. Other containers' endpoints are left to docker's refusal."""
        net.reload()
        for endpoint in (net.attrs.get("Containers") or {}).values():
            name = endpoint.get("Name")
            if name in self.inv.containers:
                yield Call(f"docker network disconnect -f {net.name} {name}   # docker SDK on {engine.host}",
                           partial(net.disconnect, name, force=True))

    @staticmethod
    def _held(run: RunContext, name: str) -> bool:
        """etcdtree.docker_network_held, with etcd's silence said as such."""
        from chainlab.remote.etcdclient import ETCD_ERRORS, reason

        try:
            return etcdtree.docker_network_held(run.etcd(), name)
        except ETCD_ERRORS as exc:
            raise ChainlabError(f"etcd did not answer ({reason(exc, 10)}): whether network {name} is gone is not"
                                " known; run lab down again once etcd answers") from None

    def _restore_etcd(self, run: RunContext) -> Generator[Action, Any, Outcome]:
        baseline = load_etcd_baseline(self.inv)
        if baseline is None:
            return "", "no record of /calico before lab up: etcd left as it is"
        if self._engine(run) is None:
            yield Call("etcdctl rm every /calico key added since lab up   # python-etcd", lambda: None)
            return "would restore /calico", ""
        leaves, dirs = etcdtree.tree(run.etcd())
        doomed, empty_dirs = etcdtree.added_since(baseline, leaves, dirs)
        if doomed or empty_dirs:
            yield Call(f"etcdctl rm the {len(doomed)} key(s) and {len(empty_dirs)} director(ies) lab up added"
                       " under /calico   # python-etcd", lambda: etcdtree.restore(run.etcd(), baseline))
        return (f"/calico back as before lab up ({len(doomed)} keys removed)",
                "/calico already as before lab up")

    # --- what the rest of chainlab asks ------------------------------------------------

    def management_ports(self) -> list[int]:
        assert self.inv.etcd is not None
        return [self.inv.etcd.port, ETCD_PEER_PORT, SERF_PORT]

    def describe(self) -> str:
        return self.mode.describe()
