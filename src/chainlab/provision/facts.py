"""Facts: what a host is, gathered once over SSH (one command), or assumed from inventory hints.

Every step decides from these, never from guesses. `chainlab facts` prints them.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Literal

from chainlab.inventory import Inventory
from chainlab.provision.commands import Backend, Family, choose_backend, os_family, read_line

KernelLog = Literal["private", "shared"]

#: `os` hints of the inventory → (os-release ID, VERSION_ID, init) assumed by offline --check.
OS_HINTS: dict[str, tuple[str, str, str, str]] = {
    "centos7": ("centos", "7", "rhel fedora", "systemd"),
    "rhel8": ("rhel", "8", "fedora", "systemd"),
    "debian12": ("debian", "12", "", "systemd"),
    "ubuntu22": ("ubuntu", "22.04", "debian", "systemd"),
    "unknown": ("unknown", "", "", "systemd"),
}


#: The iptables backend and version, as `iptables -V` says them.
_BACKEND_BY_VERSION = ('v=$(iptables -V 2>/dev/null); case "$v" in *nf_tables*) echo iptables=nft;;'
                       ' "") echo iptables=missing;; *) echo iptables=legacy;; esac; echo "iptables_version=$v"')
#: The backend only, from which multi-call binary the `iptables` of PATH is, tested by the shell
#: itself (`-ef`: the same file, symlinks followed): no process. Anything else (an older
#: `xtables-multi`, a wrapper) is asked as above, which also gives its version.
_BACKEND_BY_FILE = (
    'p=; o=$IFS; IFS=:; for d in $PATH; do [ -x "$d/iptables" ] && { p=$d/iptables; break; }; done; IFS=$o',
    'if [ -n "$p" ] && [ "$p" -ef "${p%/*}/xtables-nft-multi" ]; then echo iptables=nft;'
    ' elif [ -n "$p" ] && [ "$p" -ef "${p%/*}/xtables-legacy-multi" ]; then echo iptables=legacy;'
    f' else {_BACKEND_BY_VERSION}; fi',
)


def facts_script(etcd: tuple[str, int] | None, full: bool = True) -> str:
    """One POSIX sh script printing `key=value` lines (read-only: changes nothing). Without
    `full` (lab up), only what lab up's steps decide on: no docker version, no iptables
    version where the backend shows without it, no test that etcd is reachable from the host
    (each a process or two per host and run); `chainlab facts` asks everything."""
    q = shlex.quote
    lines = [
        'if [ -r /etc/os-release ]; then . /etc/os-release; fi',
        'echo "os_id=${ID:-unknown}"; echo "os_version=${VERSION_ID:-}"; echo "os_like=${ID_LIKE:-}"',
        'echo "os_name=${PRETTY_NAME:-unknown}"',
        # built-ins where a file says it (`read`, `-ef`): each process is a fork and an exec
        f'{read_line("k", "/proc/sys/kernel/osrelease")}; echo "kernel=$k"',
        # init: systemd only if booted with it; sysv only if PID 1 is an init we can ask
        read_line("c1", "/proc/1/comm"),
        'if [ -d /run/systemd/system ]; then echo init=systemd;'
        ' elif [ "$c1" = init ] && [ -d /etc/init.d ]; then echo init=sysv; else echo init=none; fi',
    ]
    lines += [_BACKEND_BY_VERSION] if full else _BACKEND_BY_FILE
    lines += [
        # kernel log: private only if we share PID 1's network namespace and are no container
        'if [ /proc/1/ns/net -ef /proc/$$/ns/net ] && [ ! -e /.dockerenv ] && [ ! -e /run/.containerenv ];'
        ' then echo kernel_log=private; else echo kernel_log=shared; fi',
    ]
    if full:
        lines += [
            'd=$(docker version --format "{{.Server.Version}} {{.Server.APIVersion}}" 2>/dev/null || true)',
            'v=${d%% *}; a=${d#* }; [ "$a" = "$d" ] && a=; echo "docker=${v:-none}"; echo "docker_api=$a"',
        ]
    else:  # lab up: the docker CLI costs a start-up per host; the SDK asks the version if it is needed
        lines.append('if command -v docker >/dev/null 2>&1; then echo docker=present; else echo docker=none; fi')
    lines += [
        'for t in rsyslogd ulogd xtables-monitor stdbuf setsid bash; do'
        ' if command -v $t >/dev/null 2>&1 || [ -x /usr/sbin/$t ] || [ -x /sbin/$t ]; then echo "has_$t=yes";'
        ' else echo "has_$t=no"; fi; done',
        f'{read_line("f", "/proc/sys/net/ipv4/ip_forward")}; echo "ip_forward=$f"',
        f'{read_line("l", "/proc/sys/net/netfilter/nf_log/2")}; echo "nf_log_ipv4=$l"',
    ]
    if not etcd:
        lines.append("echo etcd=none")
    elif not full:
        lines.append("echo etcd=unchecked")
    else:
        address, port = etcd
        probe = f"exec 3<>/dev/tcp/{address}/{port}"
        lines.append(f"if timeout 3 bash -c {q(probe)} 2>/dev/null; then echo etcd=reachable;"
                     " else echo etcd=unreachable; fi")
    return "\n".join(lines) + "\n"


@dataclass
class Facts:
    host: str
    source: Literal["gathered", "assumed"]
    os_id: str = "unknown"
    os_version: str = ""
    os_like: str = ""
    os_name: str = "unknown"
    kernel: str = ""
    init: str = "none"
    iptables: str = "legacy"
    iptables_version: str = ""
    kernel_log: KernelLog = "private"
    docker: str = "none"
    docker_api: str = ""  # the engine's API version: the docker SDK then needs no GET /version
    tools: dict[str, bool] = field(default_factory=dict)
    ip_forward: str = ""
    nf_log_ipv4: str = ""
    etcd: str = "none"
    calico: str = ""
    trace_backend: Backend = "rsyslog"

    @property
    def family(self) -> Family:
        return os_family(self.os_id, self.os_like)

    def has(self, tool: str) -> bool:
        return self.tools.get(tool, False)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["family"] = self.family
        return data


def parse_facts(inv: Inventory, host: str, text: str) -> Facts:
    values: dict[str, str] = {}
    for row in text.splitlines():
        key, sep, value = row.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    facts = Facts(host=host, source="gathered")
    for name in ("os_id", "os_version", "os_like", "os_name", "kernel", "init", "iptables_version",
                 "docker", "docker_api", "ip_forward", "nf_log_ipv4", "etcd"):
        if name in values:
            setattr(facts, name, values[name])
    backend = values.get("iptables", "legacy")
    facts.iptables = backend if backend in ("legacy", "nft", "missing") else "legacy"
    facts.kernel_log = "shared" if values.get("kernel_log") == "shared" else "private"
    facts.tools = {k[4:]: v == "yes" for k, v in values.items() if k.startswith("has_")}
    _derive(inv, facts)
    return facts


def assumed_facts(inv: Inventory, host: str) -> Facts:
    """Facts from the inventory's hints, for a plan that must not connect (offline --check)."""
    from chainlab.providers import provider_for

    spec = inv.hosts[host]
    hints = provider_for(inv).hints(host)
    os_id, version, like, init = OS_HINTS[spec.os]
    facts = Facts(
        host=host, source="assumed", os_id=os_id, os_version=version, os_like=like,
        os_name=f"{spec.os} (from the inventory)", init=hints.init or init,
        iptables="nft" if spec.iptables == "nft" else "legacy",
        kernel_log=hints.kernel_log,
        docker="assumed present", ip_forward="0", nf_log_ipv4="NONE",
        etcd="assumed reachable" if inv.etcd else "none",
    )
    modern = spec.os not in ("centos7",)
    facts.tools = {"rsyslogd": True, "ulogd": False, "xtables-monitor": modern, "stdbuf": True,
                   "setsid": True, "bash": True} | hints.tools
    _derive(inv, facts)
    return facts


def _derive(inv: Inventory, facts: Facts) -> None:
    spec = inv.hosts[facts.host]
    # what the host says wins; the inventory's hint only stands in when nothing was gathered
    iptables = facts.iptables if facts.iptables in ("legacy", "nft") else spec.iptables
    facts.trace_backend = choose_backend(spec.trace_backend, iptables, facts.kernel_log)
    facts.calico = _network_kind(inv)


def _network_kind(inv: Inventory) -> str:
    from chainlab.networks import network_for
    from chainlab.providers import provider_for

    return network_for(inv, provider_for(inv)).describe()
