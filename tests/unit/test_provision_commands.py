"""Provisioning's pure builders: quoting, CentOS 7 vs Debian choices, rules, facts parsing."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chainlab.errors import ChainlabError, InputError
from chainlab.inventory import load_inventory
from chainlab.provision import commands as C
from chainlab.provision.facts import assumed_facts, facts_script, parse_facts
from chainlab.provision.image import render_dockerfile, tarball_path
from chainlab.networks import network_for
from chainlab.providers import provider_for
from chainlab.provision.context import RunContext
from chainlab.provision.steps import up_probes
from chainlab.remote.batch import Batch
from chainlab.shell import command_line

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "/var/log/x'; touch /tmp/pwned; echo '"


def test_install_and_restart_by_family() -> None:
    assert C.install_argv("rhel", "rsyslog") == ["yum", "install", "-y", "rsyslog"]
    assert C.install_argv("rhel", "ulogd") == ["yum", "install", "-y", "ulogd"]
    assert C.install_argv("debian", "ulogd")[-1] == "ulogd2"
    assert "apt-get" in C.install_argv("debian", "xtables-monitor")
    with pytest.raises(ValueError):
        C.install_argv("unknown", "rsyslog")
    assert C.restart_argv("systemd", "rsyslog") == ["systemctl", "restart", "rsyslog"]
    assert C.restart_argv("sysv", "rsyslog") == ["service", "rsyslog", "restart"]
    with pytest.raises(ValueError):
        C.restart_argv("none", "rsyslog")


def test_os_family() -> None:
    assert C.os_family("centos", "rhel fedora") == "rhel"
    assert C.os_family("debian") == "debian"
    assert C.os_family("ubuntu", "debian") == "debian"
    assert C.os_family("alpine") == "unknown"


@pytest.mark.parametrize("override,iptables,kernel_log,expected", [
    ("auto", "legacy", "private", "rsyslog"),
    ("auto", "legacy", "shared", "ulogd"),
    ("auto", "nft", "private", "nft-monitor"),
    ("auto", "nft", "shared", "nft-monitor"),
    ("ulogd", "legacy", "private", "ulogd"),
])
def test_choose_backend(override: str, iptables: str, kernel_log: str, expected: str) -> None:
    assert C.choose_backend(override, iptables, kernel_log) == expected


def test_sysctl_text_round_trip() -> None:
    text = C.sysctl_text("0")
    assert text.startswith(C.MARKER) and "net.ipv4.ip_forward = 1" in text
    assert C.sysctl_before(text) == "0"
    assert C.sysctl_before("net.ipv4.ip_forward = 1\n") is None  # not ours
    assert C.sysctl_set_argv("0") == ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"]
    with pytest.raises(ValueError):
        C.sysctl_set_argv("1; reboot")


def test_trace_rules_marked_and_management_ports_excluded() -> None:
    rules = C.trace_rules([22, 2379, 2380])
    assert len(rules) == 12
    assert {(r.chain, r.spec[1], r.spec[-1]) for r in rules} == {
        (c, p, t) for c in ("OUTPUT", "PREROUTING") for p in ("icmp", "tcp", "udp") for t in ("LOG", "TRACE")}
    for rule in rules:
        assert ["-m", "comment", "--comment", "chainlab"] == list(rule.spec[-6:-2])
        assert rule.argv("-C")[:6] == ["iptables", "-w", "5", "-t", "raw", "-C"]
    tcp = next(r for r in rules if r.spec[1] == "tcp")
    assert "! --ports 22,2379,2380" in " ".join(tcp.spec)
    # LOG before TRACE, as in the reference procedure
    udp = next(r for r in rules if r.spec[1] == "udp")
    assert "! --ports 22,2379,2380" in " ".join(udp.spec)  # Docker's serf gossips on TCP and UDP
    assert "--ports" not in next(r for r in rules if r.spec[1] == "icmp").spec
    # LOG before TRACE, as in the reference procedure
    assert [r.spec[-1] for r in rules] == ["LOG"] * 6 + ["TRACE"] * 6


def test_our_rules_from_save_only_ours() -> None:
    listing = "\n".join([
        "-P PREROUTING ACCEPT",
        "-A PREROUTING -p icmp -m comment --comment chainlab -j LOG",
        '-A PREROUTING -p tcp -m comment --comment "felix raw" -j MARK --set-xmark 0x4000000/0x4000000',
        "-A OUTPUT -p tcp -m multiport ! --ports 22,2379,2380 -m comment --comment chainlab -j TRACE",
        "-A OUTPUT -p icmp -j TRACE",
    ])
    deletes = C.our_rules_from_save(listing)
    assert deletes == [
        ["iptables", "-w", "5", "-t", "raw", "-D", "PREROUTING", "-p", "icmp", "-m", "comment", "--comment",
         "chainlab", "-j", "LOG"],
        ["iptables", "-w", "5", "-t", "raw", "-D", "OUTPUT", "-p", "tcp", "-m", "multiport", "!", "--ports",
         "22,2379,2380", "-m", "comment", "--comment", "chainlab", "-j", "TRACE"],
    ]


def _sh_words(argv: list[str]) -> list[str]:
    """What a shell makes of a command line we send (the remote side of run())."""
    return shlex.split(command_line(argv))


def test_hostile_values_stay_single_words(tmp_path: Path) -> None:
    assert _sh_words(["cat", HOSTILE]) == ["cat", HOSTILE]
    for argv in (C.ensure_trace_log_argv(HOSTILE), C.remove_created_trace_log_argv(HOSTILE),
                 C.monitor_start_argv(HOSTILE), C.backup_argv(HOSTILE), C.restore_argv(HOSTILE),
                 C.running_check_argv(HOSTILE, "ulogd"), C.stop_argv(HOSTILE, "ulogd")):
        words = _sh_words(argv)
        assert words[:2] == ["sh", "-c"] and len(words) == 3
        script = words[2]
        assert shlex.quote(HOSTILE) in script  # only ever as one quoted word
    # executed for real (a local sh, in a sandbox dir): the hostile path is a file name, no injection
    target = tmp_path / "a b'; touch pwned; '"
    script = C.backup_argv(str(target))[2]
    target.write_text("x")
    subprocess.run(["sh", "-c", script], check=True, cwd=tmp_path)
    assert not (tmp_path / "pwned").exists()
    assert Path(str(target) + C.BACKUP_SUFFIX).read_text() == "x"
    subprocess.run(["sh", "-c", C.restore_argv(str(target))[2]], check=True, cwd=tmp_path)
    assert target.read_text() == "x" and not (tmp_path / "pwned").exists()


def test_nf_log_parse_and_restore_refuse_junk() -> None:
    parsed = C.parse_nf_log("2=nf_log_ipv4\n7=nf_log_bridge\n10=NONE\n3=nf_log_arp\n13=x\n2x=y\n")
    assert parsed == {2: "nf_log_ipv4", 7: "nf_log_bridge", 10: "NONE", 3: "nf_log_arp"}
    assert C.parse_nf_log("2=a; reboot\n") == {}
    script = C.nf_log_restore_argv({2: "nf_log_ipv4", 10: "NONE"})[2]
    assert "echo nf_log_ipv4 > /proc/sys/net/netfilter/nf_log/2" in script
    assert script.endswith(f"rm -f {C.NF_LOG_BEFORE}")


def test_ulogd_and_rsyslog_texts() -> None:
    text = C.ulogd_text("/var/log/trace.log")
    assert "stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU" in text
    assert 'file="/var/log/trace.log"' in text and "sync=1" in text and "group=0" in text
    assert C.rsyslog_text("/var/log/iptables.log").endswith("kern.* /var/log/iptables.log\n")


def test_veth_for_ifindex() -> None:
    text = "1: lo: <LOOPBACK>\n7: vethab12@if6: <BROADCAST> mtu 1500\n9: eth0@if10: <UP>\n"
    assert C.veth_for_ifindex(text, 7) == "vethab12"
    assert C.veth_for_ifindex(text, 8) is None


def test_facts_parse_and_assume() -> None:
    inv = load_inventory(ROOT / "lab" / "local.yaml")
    text = "\n".join(["os_id=debian", "os_version=12", "os_like=", "os_name=Debian GNU/Linux 12 (bookworm)",
                      "init=none", "iptables=nft", "kernel_log=shared", "docker=20.10.24", "has_ulogd=yes",
                      "has_rsyslogd=yes", "has_xtables-monitor=no", "ip_forward=0", "etcd=reachable",
                      "junk line without equals"])
    facts = parse_facts(inv, "master", text)
    assert facts.family == "debian" and facts.init == "none" and facts.kernel_log == "shared"
    assert facts.iptables == "nft" and facts.trace_backend == "nft-monitor"  # gathered beats the hint
    assert facts.has("ulogd") and not facts.has("xtables-monitor")
    assert "emulation" in facts.calico
    ref = load_inventory(ROOT / "inventory.yaml")
    assumed = assumed_facts(ref, "master")
    assert (assumed.source, assumed.family, assumed.init, assumed.kernel_log) == ("assumed", "rhel", "systemd", "private")
    assert assumed.trace_backend == "rsyslog"


def test_facts_script_is_valid_sh_and_quotes_etcd() -> None:
    script = facts_script(("10.0.0.1", 2379))
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert "/dev/tcp/10.0.0.1/2379" in script


def test_lab_ups_facts_find_the_same_iptables_backend_without_asking_iptables() -> None:
    """Lab up's script tells the backend from the file `iptables` is (no process); on this
    machine it says what `iptables -V` says to `chainlab facts`' script."""
    said = {}
    for full in (True, False):
        etcd = ("127.0.0.1", 9)  # run here: loopback only (nothing listens: etcd=unreachable, at once)
        out = subprocess.run(["sh", "-c", facts_script(etcd, full)], capture_output=True, text=True).stdout
        said[full] = dict(row.split("=", 1) for row in out.splitlines() if row.startswith(("iptables=", "etcd=")))
    assert said[True]["iptables"] == said[False]["iptables"]
    assert said[False]["etcd"] == "unchecked" and "/dev/tcp/" not in facts_script(("192.0.2.1", 2379), full=False)


def _iptables_stubs(root: Path) -> dict[str, Path]:
    """Directories, each with an `iptables` as a distribution installs it: a link to
    xtables-nft-multi, to xtables-legacy-multi, and an old single binary (CentOS 7)."""
    dirs = {}
    for name, binary, says in (("nft", "xtables-nft-multi", "iptables v1.8.9 (nf_tables)"),
                               ("legacy", "xtables-legacy-multi", "iptables v1.8.9 (legacy)"),
                               ("old", "iptables", "iptables v1.4.21")):
        where = root / name
        where.mkdir()
        (where / binary).write_text(f"#!/bin/sh\necho '{says}'\n")
        (where / binary).chmod(0o755)
        if binary != "iptables":
            (where / "iptables").symlink_to(binary)
        dirs[name] = where
    return dirs


@pytest.mark.parametrize("path,backend,version", [
    (["nft"], "nft", None), (["legacy"], "legacy", None), (["old"], "legacy", "iptables v1.4.21"),
    (["legacy", "nft"], "legacy", None), (["nft", "legacy"], "nft", None),  # the first in PATH, as the steps run it
])
def test_lab_ups_facts_tell_the_backend_of_the_iptables_in_path(tmp_path, path, backend, version) -> None:
    dirs = _iptables_stubs(tmp_path)
    env = {"PATH": ":".join([*(str(dirs[name]) for name in path), "/usr/bin", "/bin"])}
    facts = {}
    for full in (True, False):
        out = subprocess.run(["sh", "-c", facts_script(None, full)], capture_output=True, text=True, env=env).stdout
        facts[full] = dict(row.split("=", 1) for row in out.splitlines() if row.startswith("iptables"))
    assert facts[True]["iptables"] == facts[False]["iptables"] == backend  # chainlab facts and lab up agree
    assert facts[False].get("iptables_version") == version  # asked only where the file does not tell


def test_dockerfile_template_renders_reference_image() -> None:
    ref = load_inventory(ROOT / "inventory.yaml")
    text = render_dockerfile(ref)
    assert text.splitlines()[1:] == [
        "FROM nginx",
        "RUN apt-get update",
        "RUN apt-get install -y iputils-ping iproute2 wget",
        'LABEL chainlab.lab="reference"',
    ]


def test_dockerfile_template_is_sandboxed(tmp_path: Path) -> None:
    """The template is the user's and even `lab up --check` renders it: it reaches no Python
    object beyond its variables and filters."""
    ref = load_inventory(ROOT / "inventory.yaml")
    touched = tmp_path / "touched"
    escape = "{{ cycler.__init__.__globals__.os.system('touch %s') }}" % touched
    with pytest.raises(ChainlabError, match="image.dockerfile: .*unsafe"):
        render_dockerfile(ref, "FROM {{ base }}\n" + escape + "\n")
    assert not touched.exists()
    assert render_dockerfile(ref, "FROM {{ base }}\nRUN echo {{ packages | join(' ') | upper }}\n") == \
        "FROM nginx\nRUN echo IPUTILS-PING IPROUTE2 WGET\n"


@pytest.mark.parametrize("kind", ["fifo", "device", "missing"])
def test_image_files_that_are_no_regular_files_are_refused_at_once(tmp_path: Path, kind: str) -> None:
    """A Dockerfile template or a tarball that is a FIFO (a hang), a device (/dev/zero: read
    until memory ran out) or missing: a clear error naming the input, at once."""
    path = {"fifo": tmp_path / "fifo", "device": Path("/dev/zero"), "missing": tmp_path / "none"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    ref = load_inventory(ROOT / "inventory.yaml")
    dockerfile = ref.model_copy(update={"image": ref.image.model_copy(update={"dockerfile": str(path)})})
    tarball = ref.model_copy(update={"image": ref.image.model_copy(update={"source": "tarball", "tarball": str(path)})})
    started = time.monotonic()
    with pytest.raises(InputError, match=str(path)):
        render_dockerfile(dockerfile)
    with pytest.raises(InputError, match="image.tarball: "):
        tarball_path(tarball, provider_for(tarball))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("concurrent", [False, True])
def test_batch_round_trips_through_sh(tmp_path: Path, concurrent: bool) -> None:
    f = tmp_path / "it's here.txt"
    f.write_text("line 1\n\nlast line x9\n\n@@0 begin\n")
    probes = [["cat", str(f)], ["test", "-e", str(tmp_path / "absent")], ["sh", "-c", "printf 'no newline'; exit 3"]]
    batch = Batch.of([command_line(p) for p in probes], concurrent=concurrent)
    out = subprocess.run(["sh", "-c", batch.script()], capture_output=True, text=True, check=True).stdout
    assert batch.parse(out + f"@@{batch.token} 1 begin\nnoise\n") == {
        0: (0, "line 1\n\nlast line x9\n\n@@0 begin\n"), 1: (1, ""), 2: (3, "no newline")}
    assert Batch.of(batch.commands).parse(out) == {}  # another batch's token: nothing is taken for an answer
    both = ["echo out; echo err >&2; exit 4"]
    for stderr, said in ((False, "out\n"), (True, "out\nerr\n")):
        other = Batch.of(both, stderr=stderr, concurrent=concurrent)
        out = subprocess.run(["sh", "-c", other.script()], capture_output=True, text=True).stdout
        assert other.parse(out) == {0: (4, said)}


def test_batch_of_argvs_runs_sh_scripts_in_its_own_subshells(tmp_path):
    """`sh -c SCRIPT` probes run as SCRIPT: same answers and statuses, no second shell; a
    script's variables, `set -e`, `exit` and a last-line comment stay inside its subshell."""
    probes = [["sh", "-c", "x=1; set -e; printf 'a %s' \"$x\"; false; echo never"],
              ["sh", "-c", 'echo "x=${x:-unset}"; exit 3  # a comment on the last line'],
              ["test", "-e", str(tmp_path / "absent")], ["echo", HOSTILE]]
    batch = Batch.of_argvs(probes)
    assert batch.commands[0] == probes[0][2] and batch.commands[3] == command_line(probes[3])
    out = subprocess.run(["sh", "-c", batch.script()], capture_output=True, text=True, check=True).stdout
    assert batch.parse(out) == {0: (1, "a 1"), 1: (3, "x=unset\n"), 2: (1, ""), 3: (0, HOSTILE + "\n")}


def test_every_sh_probe_of_lab_up_is_valid_sh():
    """They run inside the batch's own shell: a syntax error there would end the whole batch."""
    inv = load_inventory(ROOT / "lab" / "local.yaml")
    provider = provider_for(inv)
    run_ctx = RunContext(inv, provider, network_for(inv, provider), False)
    scripts = [facts_script(("192.0.2.1", 2379), full=False)]
    for host in inv.hosts:
        scripts += [argv[2] for argv in up_probes(run_ctx, host) if argv[:2] == ["sh", "-c"]]
    assert len(scripts) > 3
    for script in scripts:
        checked = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, (script, checked.stderr)


def test_backend_pidfile_checks_name_and_namespace_before_a_kill(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "x.pid"
        pidfile.write_text(f"{sleeper.pid}\n")
        check = subprocess.run(C.running_check_argv(str(pidfile), "sleep"), capture_output=True, text=True)
        assert check.stdout.strip() == str(sleeper.pid)
        subprocess.run(C.stop_argv(str(pidfile), "ulogd"), check=True)  # another name: not ours
        assert sleeper.poll() is None and not pidfile.exists()
        pidfile.write_text(f"{sleeper.pid}\n")
        subprocess.run(C.stop_argv(str(pidfile), "sleep"), check=True)
        assert sleeper.wait(timeout=5) is not None
    finally:
        sleeper.kill()


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_small_file_read_prints_what_cat_prints(tmp_path: Path, shell: str) -> None:
    """Built-ins only, byte for byte as `cat`: no trailing newline, blank lines, backslashes,
    leading blanks, tabs, CR; nothing for a missing file. A hostile name stays one word."""
    texts = ["a b\n  lead\\x\ttab \n\nlast-no-nl", "x\n", "", "\n\n", "a\\\\b\\\n-c\r\n", "$(touch pwned)\n"]
    for i, text in enumerate(texts):
        f = tmp_path / f"{i}{HOSTILE.replace('/', '_')}"
        f.write_text(text)
        script = C.read_file_argv(str(f))[2]
        out = subprocess.run([shell, "-c", script], capture_output=True, cwd=tmp_path).stdout
        assert out == f.read_bytes(), (text, out)
    assert subprocess.run([shell, "-c", C.read_file_argv(str(tmp_path / "absent"))[2]],
                          capture_output=True).stdout == b""
    assert not (tmp_path / "pwned").exists()


def test_calico_daemon_known_by_its_name_or_by_an_earlier_command_line(tmp_path: Path) -> None:
    from chainlab.calico import PROCESS_NAME
    from chainlab.networks.calico.emulate import running_argv

    named = subprocess.Popen([sys.executable, "-c", "from chainlab.calico.agent import _name_process as n;"
                              f" n({PROCESS_NAME!r}); import time; time.sleep(30)"])
    earlier = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-m", "chainlab.calico.agent", "--x"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "calico.pid"
        deadline = time.monotonic() + 10
        while Path(f"/proc/{named.pid}/comm").read_text().strip() != PROCESS_NAME and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc, known in ((named, True), (earlier, True), (other, False)):
            pidfile.write_text(f"{proc.pid}\n")
            out = subprocess.run(running_argv(str(pidfile)), capture_output=True, text=True).stdout.strip()
            assert out == (str(proc.pid) if known else ""), (proc.args, out)
    finally:
        for proc in (named, earlier, other):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("signum", [None, signal.SIGHUP, signal.SIGTERM])
def test_a_concurrent_batch_leaves_no_directory_when_its_caller_goes_away(tmp_path, signum):
    """Ctrl-C or a deadline closes the SSH session while the probes run: the script's answers
    then meet a closed pipe (or sshd's signal), and its temporary directory goes anyway
    (before, one was left in the host's /tmp per interrupted probe)."""
    batch = Batch.of(["sleep 0.3; echo late"], concurrent=True)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(["sh", "-c", batch.script()], stdout=subprocess.PIPE, env=env)
    time.sleep(0.1)
    assert len(list(tmp_path.iterdir())) == 1  # the probes' directory, while they run
    if signum is None:
        proc.stdout.close()  # the caller gone: the answers meet a closed pipe
    else:
        proc.send_signal(signum)
    proc.wait(timeout=10)
    if signum is not None:
        proc.stdout.close()
    deadline = time.monotonic() + 5
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(tmp_path.iterdir())
