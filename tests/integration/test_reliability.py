"""Faults on a real local lab (nft flavour, lab `reln`): frozen hosts, signals, kill -9, a
full or read-only runs dir, concurrent runs, a stopped container, etcd stopped or killed,
`local down` during a run, and what another local user (`nobody`) can reach.

Every process this module stops or kills belongs to its own lab (found by PID in the lab's
network namespaces), and is resumed or restarted before the test ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chainlab.inventory import load_inventory
from chainlab.local import link_guard, plan_lab
from chainlab.local.plan import HOST_IF
from chainlab.lock import lab_lock, lab_lock_path
from chainlab.remote import docker_client
from chainlab.rundir import PARTIAL

from .conftest import ROOT, make_inventory_file

pytestmark = pytest.mark.integration

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
SCENARIOS = str(ROOT / "scenarios")
LAB = "reln"
LAN = "10.231.76"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def cli(inv: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINLAB, "-i", str(inv), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300"}, timeout=timeout)


def start(inv: Path, *args: str) -> subprocess.Popen[str]:
    """chainlab in the background, its output (stdout and stderr) read line by line."""
    return subprocess.Popen([CHAINLAB, "-i", str(inv), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "COLUMNS": "300"})


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> list[str]:
    lines: list[str] = []
    end = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} in output: {''.join(lines)}")


def lab_pids(host: str, comm: str) -> list[int]:
    """PIDs of `comm` processes in this lab's host `host` (its network namespace)."""
    out = subprocess.run(["ip", "netns", "pids", f"chainlab.{LAB}.{host}"], capture_output=True, text=True).stdout
    pids = []
    for pid in map(int, out.split()):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                pids.append(pid)
        except OSError:
            pass
    return pids


@contextmanager
def frozen(host: str, comm: str = "sshd") -> Iterator[list[int]]:
    """SIGSTOP every `comm` of the lab's `host` (sshd: the listener and every session);
    SIGCONT them on the way out, whatever happens."""
    pids = lab_pids(host, comm)
    assert pids, f"no {comm} in {host}"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def stuck(inv: Path, host: str, *args: str) -> tuple[subprocess.Popen[str], str, float]:
    """chainlab ARGS with every sshd of `host` frozen once it printed `probe:`: the process,
    its output, and how long it took from then."""
    proc = start(inv, *args)
    read_until(proc, "probe:")
    with frozen(host):
        started = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        return proc, out, time.monotonic() - started


def run_dirs(runs: Path) -> set[Path]:
    return set(runs.iterdir()) if runs.is_dir() else set()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the local lab needs root")
    directory = tmp_path_factory.mktemp("reln")
    inv = make_inventory_file(directory, lab=LAB, lan=LAN, source=ROOT / "lab" / "local-nft.yaml")
    try:
        assert cli(inv, "local", "up").returncode == 0
        up = cli(inv, "lab", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        yield inv
    finally:
        subprocess.run([CHAINLAB, "-i", str(inv), "lab", "down"], capture_output=True)
        subprocess.run([CHAINLAB, "-i", str(inv), "local", "down", "--force"], capture_output=True)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_a_host_frozen_during_a_run_is_that_hosts_error(lab, runs):
    proc, out, took = stuck(lab, "slave1", "run", "3", "--runs", str(runs), "--scenarios", SCENARIOS)
    assert proc.returncode == 3 and "Traceback" not in out  # 3: an ERROR (1 is a FAIL)
    assert 14 < took < 25, took  # the read deadline (15 s), not forever
    assert "ERROR slave1: no answer within 15 s while reading its trace log" in re.sub(r"\s+", " ", out)
    [run] = run_dirs(runs)
    assert (run / "error.txt").read_text().startswith("slave1: no answer within 15 s while reading its trace log")
    assert (run / "logs" / "master.log").is_file() and not (run / "logs" / "slave1.log").exists()  # others went on
    assert not (run / PARTIAL).exists()
    again = cli(lab, "run", "3", "--runs", str(runs), "--scenarios", SCENARIOS)  # the lock was released
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_host_frozen_during_a_probe_is_that_hosts_error(lab, runs):
    """`chainlab probe` shares the runs' bracketing: the probe's own deadline (ping -c 5:
    1.8 s, + 15 s), the run dir's name, PARTIAL marker and mode, the lock released."""
    proc, out, took = stuck(lab, "slave1", "probe", "slave1", "web1", "--count", "5", "--runs", str(runs))
    assert proc.returncode == 3 and "Traceback" not in out  # 3: not probed (1: no answer)
    assert 15 < took < 26, took
    said = r"slave1: no answer within 16\.8 s while running the probe `ping -c 5 -W 1 -i 0\.2 [\d.]+` in slave1"
    assert re.search(f"ERROR {said}", re.sub(r"\s+", " ", out)), out
    [run] = run_dirs(runs)
    assert re.fullmatch(rf"{LAB}-\d{{8}}-\d{{6}}\.\d{{3}}-probe-slave1-web1-icmp", run.name), run.name
    assert re.fullmatch(said + "\n", (run / "error.txt").read_text())
    assert not (run / PARTIAL).exists() and run.stat().st_mode & 0o777 == 0o700
    assert (run / "rules" / "master.rules").stat().st_mode & 0o777 == 0o600
    again = cli(lab, "probe", "slave1", "web1", "--runs", str(runs))  # the lock was released
    assert again.returncode == 1 and "UNREACHABLE slave1 → web1 icmp" in again.stdout, again.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_run_stuck_on_a_frozen_host_at_once(lab, runs, sig):
    proc = start(lab, "run", "3", "--runs", str(runs), "--scenarios", SCENARIOS)
    read_until(proc, "probe:")
    with frozen("slave1"):
        time.sleep(1.5)  # the run is now waiting for slave1's log
        started = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - started
    assert took < 3, took
    assert proc.returncode == 128 + sig and f"interrupted by {signal.Signals(sig).name}" in out
    [run] = run_dirs(runs)
    assert (run / PARTIAL).exists() and "interrupted" in (run / "error.txt").read_text()
    with lab_lock(load_inventory(lab)):  # released
        pass


def test_sigterm_ends_a_nightly_at_once_and_leaves_it_partial_with_a_summary(lab, runs):
    proc = start(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS)
    read_until(proc, "scenario 3")
    read_until(proc, "probe:")
    with frozen("slave1"):
        time.sleep(1.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - started
    assert took < 3 and proc.returncode == 143 and "interrupted by SIGTERM" in out
    [out_dir] = run_dirs(runs)
    assert (out_dir / PARTIAL).exists() and (out_dir / "summary.json").is_file()
    ids = [s["id"] for s in json.loads((out_dir / "summary.json").read_text())["scenarios"]]
    assert ids == [1, 2, 3]  # what ran, the interrupted one as an error
    with lab_lock(load_inventory(lab)):
        pass


def test_a_nightly_with_a_frozen_host_goes_on(lab, runs):
    with frozen("slave1"):
        started = time.monotonic()
        proc = cli(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS, timeout=200)
        took = time.monotonic() - started
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert took < 50, took  # one full wait to connect, then a short one per scenario
    [out_dir] = run_dirs(runs)
    summary = json.loads((out_dir / "summary.json").read_text())
    by_id = {s["id"]: s for s in summary["scenarios"]}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6]
    assert [i for i, s in by_id.items() if s["passed"]] == [1, 2, 5]  # slave1 is not needed there
    for i in (3, 4, 6):  # paramiko's own limit (connect_timeout) may say it first for the first one
        assert by_id[i]["error"].startswith("slave1: no answer within 5 s while connecting over SSH"), by_id[i]
    analysis = json.loads(next(out_dir.glob("*-01-*/analysis.json")).read_text())
    [note] = analysis["run"]["notes"]
    assert re.match(r"(slave1: no answer within 15 s while connecting over SSH|cannot ssh to slave1 )", note), note
    assert note.endswith("(this scenario does not need slave1: its evidence is missing)")
    assert "this scenario does not need slave1" in next(out_dir.glob("*-01-*/report.html")).read_text()
    for name in ("index.html", "junit.xml", "summary.json"):
        assert (out_dir / name).is_file()
    assert not list(runs.rglob(PARTIAL))


def test_a_stopped_target_container_is_an_error_not_a_fail(lab, runs):
    client = docker_client(load_inventory(lab), "master")
    try:
        client.containers.get("web1").stop(timeout=1)
    finally:
        client.close()
    try:
        proc = cli(lab, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS)
        assert proc.returncode == 3 and "FAIL" not in proc.stdout
        assert "ERROR target container web1 on master is exited, not running: run lab up" in proc.stdout
        assert "probe:" not in proc.stdout
        [run] = run_dirs(runs)
        assert not (run / "probe.txt").exists() and (run / "rules" / "master.rules").is_file()
        # a matrix probes the pairs it can: web1's are `?` cells saying why, slave1 → web3 is probed
        matrix = cli(lab, "matrix", "--from", "slave1,web3", "--to", "web1,web3", "--runs", str(runs))
        assert matrix.returncode == 3 and "ERROR" not in matrix.stdout, matrix.stdout
        assert matrix.stdout.count("? not probed: target container web1 on master is exited, not running") == 2
        assert "probe: " in matrix.stdout and "1/3 reachable, 2 not probed in" in matrix.stdout
        [grid] = run_dirs(runs) - {run}
        cells = {(c["source"], c["target"]): c["state"] for c in json.loads((grid / "matrix.json").read_text())["cells"]}
        assert cells == {("slave1", "web1"): "not probed", ("web3", "web1"): "not probed", ("slave1", "web3"): "reachable"}
        assert (grid / "cells" / "slave1--web3" / "report.html").is_file() and not (grid / PARTIAL).exists()
    finally:
        assert cli(lab, "lab", "up").returncode == 0
    assert cli(lab, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS).returncode == 0


def test_a_trace_log_truncated_during_a_run_is_that_nodes_error(lab, runs):
    """Truncated (as by logrotate's copytruncate) once `probe:` is printed: the probe's lines
    may be gone, so the run is an ERROR naming the node and the log, not a FAIL of its paths
    (found by fault injection: FAIL, `logs/master.log` empty)."""
    assert cli(lab, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS).returncode == 0  # the log has lines
    log = Path(load_inventory(lab).local.state_dir) / "hosts" / "master" / "fs" / "var-log" / "iptables.log"
    assert log.stat().st_size > 0
    proc = start(lab, "run", "3", "--runs", str(runs), "--scenarios", SCENARIOS)
    read_until(proc, "probe:")
    os.truncate(log, 0)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "FAIL" not in out, out
    assert re.search(r"ERROR .*master: its trace log /var/log/iptables.log was truncated in place", out), out


def test_lab_up_restarts_a_trace_backend_writing_into_a_deleted_log(lab, runs):
    """A log rotated away and deleted: xtables-monitor went on writing into the deleted file,
    lab up found it running, and every run after saw no packet there (found by fault
    injection). lab up now sees that it holds no file at the log's path and starts it anew."""
    log = Path(load_inventory(lab).local.state_dir) / "hosts" / "master" / "fs" / "var-log" / "iptables.log"
    log.rename(log.with_name("iptables.log.1"))
    log.touch()
    log.with_name("iptables.log.1").unlink()
    up = cli(lab, "lab", "up")
    assert up.returncode == 0 and re.search(r"changed master: trace_log  xtables-monitor --trace \(pid \d+\)", up.stdout), up.stdout
    assert cli(lab, "run", "3", "--runs", str(runs), "--scenarios", SCENARIOS).returncode == 0
    again = cli(lab, "lab", "up")
    assert "ok master: trace_log  xtables-monitor running" in again.stdout, again.stdout


@pytest.mark.parametrize(("options", "said"), [
    ("size=1m", r"has 1\.0 MB free; a run needs at least 32 MB"),
    ("size=64m,ro", r"cannot take a run's evidence: Read-only file system"),
])
def test_a_full_or_read_only_runs_dir_is_one_clear_error_before_probing(lab, tmpfs, options, said):
    where = tmpfs(options)
    for args in (("run", "1"), ("nightly",)):
        proc = cli(lab, *args, "--runs", str(where), "--scenarios", SCENARIOS)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert re.fullmatch(rf"error: runs directory {re.escape(str(where))} {said}.*\n", proc.stderr), proc.stderr
        assert "probe:" not in proc.stdout and "scenario 1" not in proc.stdout
        assert list(where.iterdir()) == []


def test_a_concurrent_run_is_refused_and_writes_into_no_run_dir(lab, runs):
    night = start(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS)
    try:
        read_until(night, "scenario 2")
        before = {p for p in runs.rglob("*")}
        refused = cli(lab, "run", "3", "--runs", str(runs), "--scenarios", SCENARIOS)
        assert refused.returncode == 1
        assert re.search(rf"error: a chainlab command on lab {LAB} \(lab up/down, run, nightly, probe or matrix\) is"
                         rf" already running \(pid {night.pid}: .*chainlab -i \S+ nightly.*: wait for it to end, then"
                         r" run this again", refused.stderr), refused.stderr
        other = cli(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS)
        assert other.returncode == 1 and "is already running" in other.stderr
        assert {p for p in runs.rglob("*") if p not in before and not str(p).startswith(str(
            next(runs.glob("nightly-*"))))} == set()
    finally:
        out, _ = night.communicate(timeout=120)
    assert night.returncode == 0, out
    [out_dir] = run_dirs(runs)
    assert len(list(out_dir.glob(f"{LAB}-*-0[1-6]-*"))) == 6


def test_kill_9_leaves_a_partial_nightly_that_the_next_one_skips_and_names(lab, runs):
    first = cli(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS)
    assert first.returncode == 0, first.stdout
    [complete] = run_dirs(runs)
    night = start(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS)
    read_until(night, "scenario 3")
    night.kill()
    night.wait()
    [killed] = run_dirs(runs) - {complete}
    assert (killed / PARTIAL).exists()
    third = cli(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS)
    assert third.returncode == 0, third.stdout
    assert f"difference from the previous nightly ({complete.name}):" in third.stdout
    assert f"not compared, partial: {killed.name}" in third.stdout
    [newest] = run_dirs(runs) - {complete, killed}
    diff = json.loads((newest / "summary.json").read_text())["diff"]
    assert diff["previous"] == complete.name and diff["skipped_partial"] == [killed.name]
    assert diff["text"] == ["no change"]


def test_profile_with_etcd_stopped_or_killed_is_a_prompt_clean_error(lab):
    with frozen("master", "etcd"):
        started = time.monotonic()
        proc = cli(lab, "profile", "show", "net1")
        took = time.monotonic() - started
    assert proc.returncode == 1 and took < 8, took
    assert proc.stderr.startswith(f"error: cannot reach etcd at https://{LAN}.195:2379: no answer within 2 s (retried for 4 s")
    assert len(proc.stderr.splitlines()) == 1
    [etcd] = lab_pids("master", "etcd")
    os.kill(etcd, signal.SIGKILL)
    try:
        for args in (("show", "net1"), ("reset", "net1"), ("allow", "net1", "--from", f"{LAN}.196/32")):
            started = time.monotonic()
            proc = cli(lab, "profile", *args)
            assert proc.returncode == 1 and time.monotonic() - started < 8
            assert proc.stderr.startswith(f"error: cannot reach etcd at https://{LAN}.195:2379: connection refused (retried")
            assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    finally:
        assert cli(lab, "local", "up").returncode == 0  # restarts etcd
    assert json.loads(cli(lab, "profile", "show", "net1").stdout)["tags"] == ["net1"]


def test_lab_down_with_etcd_silent_fails_and_the_next_one_converges(lab):
    """With etcd frozen, dockerd lists no global network: lab down said "no network of the
    lab" and succeeded, leaving the network with stale endpoints and, as the hosts' Calico
    steps went on, no plugin to remove it (neither lab down nor lab up converged after).
    Now that step fails, the hosts' Calico steps wait, and the next lab down, etcd answering,
    removes it all (the stale endpoints forced off); lab up then builds the lab again."""
    with frozen("master", "etcd"):
        down = cli(lab, "lab", "down", timeout=120)
    assert down.returncode == 1, down.stdout
    assert re.search(r"failed \(lab\): calico_network  .*(etcd|cluster store)", down.stdout), down.stdout
    assert re.search(r"skipped master: calico_node  \(lab\) calico_network failed", down.stdout), down.stdout
    again = cli(lab, "lab", "down", timeout=120)
    assert again.returncode == 0 and "removed network(s) net1" in again.stdout, again.stdout
    assert not docker_client(load_inventory(lab), "master").networks.list(names=["net1"])
    up = cli(lab, "lab", "up")
    assert up.returncode == 0, up.stdout


def test_another_local_user_reaches_no_state_log_or_lock(lab, runs):
    assert cli(lab, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS).returncode == 0
    inv = load_inventory(lab)
    state_dir = Path(inv.local.state_dir)
    [run] = run_dirs(runs)
    os.chmod(runs.parent, 0o755)  # nobody may reach the runs dir itself
    os.chmod(runs, 0o755)
    private = [state_dir / "state.json", state_dir / "lab-state.json", state_dir / "hosts" / "master" / "fs" / "var-log" / "sshd.log",
               state_dir / "home" / ".ssh" / "id_ed25519", run / "logs" / "master.log", run / "rules" / "master.rules",
               lab_lock_path(inv)]
    for path in private:
        assert path.is_file(), path
        proc = subprocess.run([*NOBODY, "cat", str(path)], capture_output=True, text=True)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, path
    for path in (state_dir / "state.json", state_dir / "lab-state.json", lab_lock_path(inv)):
        assert path.stat().st_mode & 0o077 == 0, path
    for path in (state_dir, run, lab_lock_path(inv).parent):
        assert path.stat().st_mode & 0o777 == 0o700, path
    grab = "import fcntl, sys\nfcntl.flock(open(sys.argv[1], 'rb'), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    proc = subprocess.run([*NOBODY, sys.executable, "-c", grab, str(lab_lock_path(inv))], capture_output=True, text=True)
    assert proc.returncode != 0 and "PermissionError" in proc.stderr


def test_another_local_user_reaches_no_lab_address(lab):
    """The management link is root's only: as `nobody`, every connect to the lab is refused at
    once, dockerd's gossip port (7946, unauthenticated) included, and over IPv6 link-local too;
    root reaches the same IPv4 ports."""
    inv = load_inventory(lab)
    plan = plan_lab(inv)
    ports = [f"{host.address}:22" for host in inv.hosts.values()]
    master = inv.hosts["master"].address
    ports += [f"{master}:2379", f"{master}:7946"]
    reach = ("import socket, sys\nfor each in sys.argv[1:]:\n    address, port = each.rsplit(':', 1)\n"
             "    try:\n        socket.create_connection((address, int(port)), timeout=5).close()\n"
             "        print('reached')\n    except OSError as exc:\n        print(type(exc).__name__)")
    as_root = subprocess.run([sys.executable, "-c", reach, *ports], capture_output=True, text=True)
    assert as_root.stdout.split() == ["reached"] * len(ports), as_root.stdout + as_root.stderr
    link_local = subprocess.run(["ip", "-n", plan.hosts["master"].netns, "-6", "-o", "addr", "show", "dev", HOST_IF,
                                 "scope", "link"],
                                capture_output=True, text=True).stdout.split()
    ports += [f"{word.split('/')[0]}%{plan.root_if}:22" for word in link_local if word.startswith("fe80:")]
    assert len(ports) == 6, link_local
    as_nobody = subprocess.run([*NOBODY, sys.executable, "-c", reach, *ports], capture_output=True, text=True)
    assert as_nobody.stdout.split() == ["ConnectionRefusedError"] * len(ports), as_nobody.stdout + as_nobody.stderr


def test_a_lost_guard_is_said_and_put_back_by_lab_up(lab):
    """An nftables reload flushes the guard's table: `local status` says so, `lab up --check`
    that it would put it back (and does not), `lab up` puts it back and says it did."""
    plan = plan_lab(load_inventory(lab))
    table = link_guard.table_name(plan.root_if)
    subprocess.run(["nft", "delete", "table", "inet", table], check=True)
    try:
        assert "NOT kept off" in cli(lab, "local", "status").stdout.replace("\n", " ")
        check = cli(lab, "lab", "up", "--check")
        assert check.returncode == 0 and "would put it back" in check.stdout and not link_guard.installed(plan.root_if)
        up = cli(lab, "lab", "up")
        assert up.returncode == 0 and f"table inet {table}" in up.stdout and "put back" in up.stdout, up.stdout
        assert link_guard.installed(plan.root_if) and "kept off the lab" in cli(lab, "local", "status").stdout
    finally:
        link_guard.ensure(plan.root_if)


def test_local_down_takes_the_lab_lock_and_force_says_what_it_interrupts(lab, runs):
    """Last in this module: it takes the lab down (the fixture's teardown copes)."""
    inv = load_inventory(lab)
    with lab_lock(inv):
        refused = cli(lab, "local", "down")
    assert refused.returncode == 1
    assert re.search(rf"is already running \(pid {os.getpid()}: .*\): wait for it, or `chainlab local down --force`"
                     " interrupts it", refused.stderr.replace("\n", " ")), refused.stderr
    assert cli(lab, "run", "1", "--runs", str(runs), "--scenarios", SCENARIOS).returncode == 0  # still up
    night = start(lab, "nightly", "--runs", str(runs), "--scenarios", SCENARIOS)
    read_until(night, "scenario 2")
    forced = cli(lab, "local", "down", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert re.search(rf"warning: --force: interrupting pid {night.pid}: .*chainlab -i \S+ nightly .*\(SIGTERM\)",
                     forced.stdout), forced.stdout
    out, _ = night.communicate(timeout=120)  # interrupted: it ends at once, partial (no baseline for the next)
    assert night.returncode == 128 + signal.SIGTERM and "Traceback" not in out
    out_dir = next(runs.glob("nightly-*"))
    assert (out_dir / "summary.json").is_file() and (out_dir / PARTIAL).exists()
