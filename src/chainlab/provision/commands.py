"""Pure builders: the exact commands and file texts provisioning uses, no I/O.

Every value that comes from the inventory reaches a command either as one argv word
(quoted by `chainlab.shell.command_line`) or, inside a `sh -c` script, through
`shlex.quote`. Nothing here connects anywhere, so the CentOS 7 vs Debian choices and the
quoting are unit-tested directly.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from chainlab.networks.base import Network
    from chainlab.providers import Provider


Backend = Literal["rsyslog", "ulogd", "nft-monitor"]
Family = Literal["rhel", "debian", "unknown"]

#: The iptables comment that marks a rule as chainlab's (teardown removes rules by it).
RULE_COMMENT = "chainlab"
#: Marker line at the top of every file provisioning writes.
MARKER = "# written by chainlab lab up; removed by chainlab lab down"
#: Suffix of the backup kept when a file provisioning writes already existed (not ours).
BACKUP_SUFFIX = ".chainlab-orig"
SYSCTL_FILE = "/etc/sysctl.d/90-chainlab.conf"
RSYSLOG_FILE = "/etc/rsyslog.d/90-chainlab.conf"
#: Runtime directory on the host: the trace backend's config, pidfiles and before-values.
#: /run is per boot, as the processes and bindings it describes (and per local-lab host).
RUN_DIR = "/run/chainlab"
ULOGD_CONF = f"{RUN_DIR}/ulogd.conf"
ULOGD_PID = f"{RUN_DIR}/ulogd.pid"
ULOGD_LOG = f"{RUN_DIR}/ulogd.log"
MONITOR_PID = f"{RUN_DIR}/xtables-monitor.pid"
MONITOR_ERR = f"{RUN_DIR}/xtables-monitor.err"
NF_LOG_BEFORE = f"{RUN_DIR}/nf_log.before"
TRACE_LOG_CREATED = f"{RUN_DIR}/trace-log.created"
#: nft hosts: the ip family's tables and chains before lab up (lab down removes what it added).
NFT_BEFORE = f"{RUN_DIR}/nft.before"
NFT_LIST = ["sh", "-c", "nft list ruleset ip 2>/dev/null || true"]
#: Protocol families with an nf_log binding (NFPROTO_*, 0-12): lab down puts back all of them,
#: since the kernel's logger module, loaded by the first LOG or TRACE rule, binds every family
#: it serves (IPv4, ARP, netdev, bridge, IPv6: seen on VMs), and ulogd's NFLOG input takes some.
NF_LOG_FAMILIES = tuple(range(13))
#: Process names (/proc/PID/comm) of the backends we start, checked before any kill.
PROCESS_NAMES = {"ulogd": "ulogd", "nft-monitor": "xtables-monitor"}
ETCD_PEER_PORT = 2380
TRACE_TARGETS = ("LOG", "TRACE")
TRACE_CHAINS = ("OUTPUT", "PREROUTING")
TRACE_PROTOCOLS = ("icmp", "tcp", "udp")


def sh(script: str) -> list[str]:
    """argv that runs a small script built from quoted parts."""
    return ["sh", "-c", script]


def os_family(os_id: str, id_like: str = "") -> Family:
    words = {os_id, *id_like.split()}
    if words & {"centos", "rhel", "fedora", "rocky", "almalinux"}:
        return "rhel"
    if words & {"debian", "ubuntu"}:
        return "debian"
    return "unknown"


# --- packages and services ------------------------------------------------------------

#: Debian and CentOS/RHEL package names of what the trace backends need.
PACKAGES: dict[str, dict[Family, str]] = {
    "rsyslog": {"debian": "rsyslog", "rhel": "rsyslog"},
    "ulogd": {"debian": "ulogd2", "rhel": "ulogd"},  # CentOS 7: from EPEL
    "xtables-monitor": {"debian": "iptables", "rhel": "iptables-nft"},  # RHEL 8+
}


def install_argv(family: Family, tool: str) -> list[str]:
    """The package manager command that installs `tool` (rsyslog, ulogd, xtables-monitor)."""
    if family == "unknown":
        raise ValueError(f"unknown OS family: install {tool} by hand")
    package = PACKAGES[tool][family]
    if family == "rhel":
        return ["yum", "install", "-y", package]
    return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends", package]


def restart_argv(init: str, service: str) -> list[str]:
    if init == "systemd":
        return ["systemctl", "restart", service]
    if init == "sysv":
        return ["service", service, "restart"]
    raise ValueError(f"no init system to restart {service} with (init: {init})")


# --- step 1: ip_forward ---------------------------------------------------------------

def sysctl_text(before: str) -> str:
    """The persisted setting; the value before lab up rides along for lab down."""
    return f"{MARKER}\n# chainlab-before: net.ipv4.ip_forward={before}\nnet.ipv4.ip_forward = 1\n"


def sysctl_before(text: str) -> str | None:
    """The remembered pre-lab-up value from a file we wrote, else None."""
    if not text.startswith(MARKER):
        return None
    for row in text.splitlines():
        if row.startswith("# chainlab-before: net.ipv4.ip_forward="):
            value = row.rsplit("=", 1)[1].strip()
            return value if value in ("0", "1") else None
    return None


def sysctl_set_argv(value: str) -> list[str]:
    if value not in ("0", "1"):
        raise ValueError(f"ip_forward must be 0 or 1, not {value!r}")
    return ["sysctl", "-q", "-w", f"net.ipv4.ip_forward={value}"]


def backup_argv(path: str) -> list[str]:
    """Keep a foreign file at `path` before we write ours (only if no backup exists yet)."""
    q = shlex.quote
    return sh(f"if [ -e {q(path)} ] && [ ! -e {q(path + BACKUP_SUFFIX)} ]; then mv {q(path)} {q(path + BACKUP_SUFFIX)}; fi")


def restore_argv(path: str) -> list[str]:
    """Remove our file; put back the backup if we kept one."""
    q = shlex.quote
    return sh(f"rm -f {q(path)}; if [ -e {q(path + BACKUP_SUFFIX)} ]; then mv {q(path + BACKUP_SUFFIX)} {q(path)}; fi")


# --- step 2: trace log ----------------------------------------------------------------

def choose_backend(override: str, iptables: str, kernel_log: str) -> Backend:
    """nft → xtables-monitor; legacy with a private kernel log → rsyslog; shared → ulogd."""
    if override != "auto":
        return override  # type: ignore[return-value]
    if iptables == "nft":
        return "nft-monitor"
    return "rsyslog" if kernel_log == "private" else "ulogd"


def rsyslog_text(trace_log: str) -> str:
    return f"{MARKER}\nkern.* {trace_log}\n"


def ulogd_text(trace_log: str) -> str:
    """ulogd2: NFLOG group 0 → BASE → IFINDEX → IP2STR → PRINTPKT → LOGEMU(trace_log)."""
    return "\n".join([
        MARKER,
        "[global]",
        f'logfile="{ULOGD_LOG}"',
        "loglevel=3",
        "stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU",
        "",
        "[log1]",
        "group=0",
        "",
        "[emu1]",
        f'file="{trace_log}"',
        "sync=1",
        "",
    ])


def read_line(var: str, path: str) -> str:
    """Shell code setting `var` to the first line of `path` (a shell word: quoted, or with
    "$p" in it), empty if it cannot be read; succeeds iff a whole line was read. `read` is a
    built-in: no process, where `$(cat ...)` costs two."""
    return f"{{ {var}=; read -r {var} 2>/dev/null <{path}; }}"


def read_file_argv(path: str) -> list[str]:
    """A small file's text as `cat` prints it (NUL bytes aside), by built-ins: lab up reads
    several such files on every host in every run, and a `cat` is a process start each time.
    Prints nothing if the file cannot be read. dash's `read` takes a byte per system call:
    for files of a few KB, not for big ones."""
    return sh(f"while IFS= read -r l; do printf '%s\\n' \"$l\"; done <{shlex.quote(path)} && printf %s \"$l\"")


#: Whether PID $p lives in this shell's network namespace (`-ef`: the same namespace inode).
SAME_NETNS = '[ /proc/"$p"/ns/net -ef /proc/$$/ns/net ]'
#: PID $p's command name, as a shell word
PROC_COMM = '/proc/"$p"/comm'


def is_named(comm: str) -> str:
    """Shell test that PID $p is called `comm`. Built-ins only: every warm `lab up` asks it of
    three daemons per host."""
    return f'{read_line("c", PROC_COMM)} && [ "$c" = {shlex.quote(comm)} ]'


def _is_ours(comm: str) -> str:
    """Shell test that PID $p is a `comm` in this shell's network namespace: on a local-lab
    host the PIDs are the machine's, so a reused PID may be another host's daemon."""
    return f"{is_named(comm)} && {SAME_NETNS}"


def read_pid(pidfile: str) -> str:
    """Shell code setting $p from `pidfile`; succeeds iff it named something."""
    return f'{read_line("p", shlex.quote(pidfile))}; [ -n "$p" ]'


#: What a `holding` running check prints for a process that holds no open file at its path.
ELSEWHERE = "elsewhere"


def running_check_argv(pidfile: str, comm: str, or_known_by: str | None = None,
                       holding: str | None = None) -> list[str]:
    """Exit 0 and print the PID iff the pidfile names a live process of ours called `comm`
    (or, with `or_known_by`, one that shell test accepts: e.g. a daemon an earlier version
    started under another name). With `holding` (a trace backend's log), ELSEWHERE instead
    of the PID when none of the process's open files is that path's file now: it writes into
    a log rotated away (and deleted), which no run reads."""
    named = is_named(comm) if or_known_by is None else f"{{ {is_named(comm)} || {or_known_by}; }}"
    found = 'echo "$p"'
    if holding is not None:
        found = (f'h=; for f in /proc/"$p"/fd/*; do [ "$f" -ef {shlex.quote(holding)} ] && h=1; done; '
                 f'if [ -n "$h" ]; then echo "$p"; else echo {ELSEWHERE}; fi')
    return sh(f'{read_pid(pidfile)} && {named} && {SAME_NETNS} && {{ {found}; }}')


def stop_argv(pidfile: str, comm: str) -> list[str]:
    """Kill the recorded PID only if it is still the process we started; drop the pidfile."""
    q = shlex.quote
    return sh(f'if {read_pid(pidfile)} && {_is_ours(comm)}; then '
              f'kill "$p"; i=0; while [ -d /proc/$p ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; fi; '
              f'rm -f {q(pidfile)}')


def ensure_trace_log_argv(trace_log: str) -> list[str]:
    """Create the trace file if absent, remembering that we did (lab down removes it then)."""
    q = shlex.quote
    directory = str(PurePosixPath(trace_log).parent)
    return sh(f"mkdir -p {q(RUN_DIR)} && if [ ! -e {q(trace_log)} ]; then mkdir -p {q(directory)} && "
              f": > {q(trace_log)} && echo {q(trace_log)} > {q(TRACE_LOG_CREATED)}; fi")


def remove_created_trace_log_argv(trace_log: str) -> list[str]:
    q = shlex.quote
    return sh(f"if [ -e {q(TRACE_LOG_CREATED)} ] && [ \"$(cat {q(TRACE_LOG_CREATED)})\" = {q(trace_log)} ]; "
              f"then rm -f {q(trace_log)}; fi; rm -f {q(TRACE_LOG_CREATED)}")


def parse_nf_log(text: str) -> dict[int, str]:
    result = {}
    for row in text.splitlines():
        key, sep, value = row.strip().partition("=")
        if sep and key.isdigit() and int(key) in NF_LOG_FAMILIES and _logger_name(value):
            result[int(key)] = value
    return result


def _logger_name(value: str) -> bool:
    return bool(value) and all(c.isalnum() or c == "_" for c in value)


def nf_log_remember_argv() -> list[str]:
    """Save the nf_log bindings of every family once (the first lab up), for lab down to put back."""
    q = shlex.quote
    return sh(f"mkdir -p {q(RUN_DIR)} && if [ ! -e {q(NF_LOG_BEFORE)} ]; then "
              "for f in /proc/sys/net/netfilter/nf_log/*; do printf '%s=%s\\n' \"${f##*/}\" \"$(cat $f)\"; done"
              f" > {q(NF_LOG_BEFORE)}; fi")


def nf_log_bind_argv() -> list[str]:
    return sh("echo nfnetlink_log > /proc/sys/net/netfilter/nf_log/2")


#: The kernel's IPv4 logger, the one that writes TRACE lines to the kernel log (for rsyslog).
KERNEL_LOGGER = "nf_log_ipv4"


def nf_log_kernel_bind_argv() -> list[str]:
    """Bind IPv4 logging to the kernel log. The kernel binds it by itself only when the logger
    module first loads (with the first LOG/TRACE rule): once lab down has put back an
    unbound NONE, a later lab up's TRACE rules would log nothing without this."""
    return sh(f"modprobe -q nf_log_syslog 2>/dev/null || modprobe -q {KERNEL_LOGGER} 2>/dev/null; "
              f"echo {KERNEL_LOGGER} > /proc/sys/net/netfilter/nf_log/2")


def nf_log_restore_argv(before: dict[int, str]) -> list[str]:
    q = shlex.quote
    parts = [f"echo {q(v)} > /proc/sys/net/netfilter/nf_log/{k}" for k, v in sorted(before.items())
             if k in NF_LOG_FAMILIES and _logger_name(v)]
    parts.append(f"rm -f {q(NF_LOG_BEFORE)}")
    return sh("; ".join(parts))


def ulogd_start_argv() -> list[str]:
    return ["ulogd", "-d", "-c", ULOGD_CONF, "-p", ULOGD_PID]


def monitor_start_argv(trace_log: str) -> list[str]:
    """xtables-monitor --trace appending to the trace file, line-buffered, detached."""
    q = shlex.quote
    return sh(f"mkdir -p {q(RUN_DIR)} && setsid nohup stdbuf -oL xtables-monitor --trace "
              f">> {q(trace_log)} 2>> {q(MONITOR_ERR)} < /dev/null & echo $! > {q(MONITOR_PID)}")


# --- nftables tables and chains that iptables-nft makes on first use ----------------------

def nft_record_argv() -> list[str]:
    """Save the ip family's ruleset once (the first lab up), headed so it is never empty."""
    q = shlex.quote
    return sh(f"mkdir -p {q(RUN_DIR)} && if [ ! -e {q(NFT_BEFORE)} ]; then "
              f"{{ echo '# nft list ruleset ip, before lab up'; nft list ruleset ip; }} > {q(NFT_BEFORE)}.tmp && "
              f"mv {q(NFT_BEFORE)}.tmp {q(NFT_BEFORE)}; fi")


def parse_nft_chains(text: str) -> dict[str, dict[str, int]]:
    """`nft list ruleset ip` -> {table: {chain: number of rules}} (pure)."""
    tables: dict[str, dict[str, int]] = {}
    table = chain = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "table" and len(words) >= 3:
            table, chain = words[2], None
            tables.setdefault(table, {})
        elif words[0] == "chain" and table is not None and len(words) >= 2:
            chain = words[1]
            tables[table].setdefault(chain, 0)
        elif line == "}":
            if chain is not None:
                chain = None
            else:
                table = None
        elif table is not None and chain is not None and words[0] not in ("type", "policy"):
            tables[table][chain] += 1
    return tables


def nft_leftover_deletes(before: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> list[list[str]]:
    """`nft delete` commands for empty chains and tables that were not there before (pure)."""
    deletes = []
    for table, chains in sorted(now.items()):
        new_empty = [c for c, rules in sorted(chains.items()) if rules == 0 and c not in before.get(table, {})]
        if table not in before and len(new_empty) == len(chains):
            deletes.append(["nft", "delete", "table", "ip", table])
            continue
        deletes += [["nft", "delete", "chain", "ip", table, c] for c in new_empty]
    return deletes


# --- step 3: raw-table trace rules ----------------------------------------------------

@dataclass(frozen=True)
class TraceRule:
    chain: str
    spec: tuple[str, ...]

    def argv(self, op: Literal["-A", "-C", "-D"]) -> list[str]:
        return ["iptables", "-w", "5", "-t", "raw", op, self.chain, *self.spec]

    def listed(self) -> str:
        """The rule as `iptables -S` prints it (legacy and nft alike)."""
        return " ".join(["-A", self.chain, *self.spec])


#: The raw table's rules, one `iptables -S` line each: what lab up checks and lab down deletes by.
RAW_LIST = ["iptables", "-w", "5", "-t", "raw", "-S"]


def present_rules(listing: str, rules: Sequence[TraceRule]) -> list[bool]:
    """Which of `rules` an `iptables -t raw -S` listing holds (pure)."""
    lines = {row.strip() for row in listing.splitlines()}
    return [rule.listed() in lines for rule in rules]


def untraced_ports(provider: "Provider", network: "Network") -> list[int]:
    """The lab's control ports (SSH, and the network's: etcd, Docker's gossip), which the
    trace rules leave out for TCP and UDP (see trace_rules): a probe to one shows no packet."""
    return sorted({provider.ssh_port(), *network.management_ports()})


def trace_rules(management_ports: Sequence[int]) -> list[TraceRule]:
    """LOG and TRACE in raw OUTPUT and PREROUTING for ICMP, TCP and UDP, each marked as ours.

    TCP and UDP exclude the management ports (SSH, etcd, Docker's serf gossip on 7946 TCP
    and UDP): otherwise every packet of the provisioning and scenario sessions, and the
    gossip every second, would be traced on every host.
    """
    ports = ",".join(str(p) for p in sorted(set(management_ports)))
    rules = []
    for target in TRACE_TARGETS:
        for chain in TRACE_CHAINS:
            for proto in TRACE_PROTOCOLS:
                spec = ["-p", proto]
                if proto != "icmp" and ports:
                    spec += ["-m", "multiport", "!", "--ports", ports]
                spec += ["-m", "comment", "--comment", RULE_COMMENT, "-j", target]
                rules.append(TraceRule(chain, tuple(spec)))
    return rules


def our_rules_from_save(listing: str) -> list[list[str]]:
    """`iptables -t raw -S` lines carrying our comment, as delete commands."""
    deletes = []
    for row in listing.splitlines():
        if not row.startswith("-A "):
            continue
        try:
            words = shlex.split(row)
        except ValueError:
            continue
        comment = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--comment"]
        if RULE_COMMENT in comment:
            deletes.append(["iptables", "-w", "5", "-t", "raw", "-D", *words[1:]])
    return deletes


# --- step 6: containers ---------------------------------------------------------------

def veth_for_ifindex(ip_link: str, ifindex: int) -> str | None:
    """The interface name with index `ifindex` in `ip -o link` output (`7: veth1@if6: ...`)."""
    for row in ip_link.splitlines():
        idx, _, rest = row.partition(": ")
        if idx.strip() == str(ifindex):
            return rest.split(":", 1)[0].split("@", 1)[0].strip() or None
    return None


