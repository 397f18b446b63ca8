"""The warm server (CHAINLAB_PERSIST): real processes, a real socket, real signals.

Each test has its own runtime directory (XDG_RUNTIME_DIR), so its own server, ended by the
PID in its lock file whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainlab.lock import describe_process
from chainlab.warm import attributes, place

CHAINLAB = str(Path(sys.executable).parent / "chainlab")
LOG = Path(__file__).parents[1] / "fixtures" / "seed-logs" / "scenario1-master.log"
pytestmark = pytest.mark.integration  # root: a `nobody` is tried

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


class Warm:
    """A runtime directory and the commands run with it."""

    def __init__(self, base: Path, seconds: int = 60):
        self.base = base
        self.dir = Path(place.directory_in(str(base)))
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(base), "CHAINLAB_PERSIST": str(seconds)}

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CHAINLAB, *args], capture_output=True, text=True, env=env or self.env, timeout=timeout)

    def server_pid(self) -> int | None:
        try:
            text = Path(place.lock_path(str(self.dir))).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text and alive(int(text)) else None

    def wait_server(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.server_pid()
            if pid and place.listening(str(self.dir)):
                return pid
            time.sleep(0.05)
        raise AssertionError("no warm server started")

    def served(self) -> list[str]:
        path = Path(place.log_path(str(self.dir)))
        return [line for line in path.read_text().splitlines() if " pid " in line] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes().find(b"chainlab.warm.server") >= 0


@pytest.fixture
def warm() -> Iterator[Warm]:
    base = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))  # a short path: a socket's is at most 107 bytes
    w = Warm(base)
    try:
        yield w
    finally:
        place.end_server(str(w.dir))
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_commands_served_match_commands_run_here(warm: Warm) -> None:
    here = warm.run("analyze", "--format", "json", str(LOG), env={**os.environ})
    first = warm.run("analyze", "--format", "json", str(LOG))  # no server yet: runs here, starts one
    warm.wait_server()
    served = warm.run("analyze", "--format", "json", str(LOG))
    assert here.returncode == first.returncode == served.returncode == 0
    assert here.stdout == first.stdout == served.stdout
    assert len(warm.served()) == 1 and "analyze --format json" in warm.served()[0]
    failed_here = warm.run("analyze", "/nonexistent.log", env={**os.environ})
    failed = warm.run("analyze", "/nonexistent.log")
    assert failed.returncode == failed_here.returncode == 2
    assert failed.stderr == failed_here.stderr and "no such file" in failed.stderr
    assert len(warm.served()) == 2


def test_directory_and_socket_are_the_users_alone(warm: Warm) -> None:
    warm.run("analyze", str(LOG))
    warm.wait_server()
    assert warm.dir.stat().st_mode & 0o777 == 0o700
    assert Path(place.socket_path(str(warm.dir))).stat().st_mode & 0o077 == 0
    grab = "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])"
    proc = subprocess.run([*NOBODY, sys.executable, "-c", grab, place.socket_path(str(warm.dir))],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "PermissionError" in proc.stderr


def test_a_directory_others_can_enter_is_not_used(warm: Warm) -> None:
    warm.dir.mkdir(mode=0o755)
    warm.dir.chmod(0o755)
    proc = warm.run("analyze", str(LOG))
    assert proc.returncode == 0
    time.sleep(1)
    assert not Path(place.socket_path(str(warm.dir))).exists() and warm.server_pid() is None


def test_other_settings_get_a_new_server(warm: Warm) -> None:
    warm.run("analyze", str(LOG))
    old = warm.wait_server()
    other = {**warm.env, "CHAINLAB_ENGINE": "python"}
    proc = warm.run("analyze", "--format", "json", str(LOG), env=other)  # the old server cannot run it
    assert proc.returncode == 0 and proc.stdout == warm.run("analyze", "--format", "json", str(LOG), env={
        **os.environ, "CHAINLAB_ENGINE": "python"}).stdout
    deadline = time.monotonic() + 30
    while alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(old)
    assert warm.wait_server() != old


def test_signals_reach_the_command_and_end_it(warm: Warm) -> None:
    big = warm.base / "zeros.log"
    with big.open("wb") as handle:
        handle.truncate(8 << 30)  # sparse: 8 GiB of NUL bytes to read, no disk used
    warm.run("analyze", str(LOG))
    warm.wait_server()
    proc = subprocess.Popen([CHAINLAB, "analyze", "--format", "json", str(big)], env=warm.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert proc.poll() is None
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 130, err
    children = subprocess.run(["pgrep", "-P", str(warm.server_pid())], capture_output=True, text=True).stdout
    assert children.strip() == ""  # the child ended too


def test_the_server_ends_when_idle(warm: Warm) -> None:
    short = Warm(warm.base, seconds=1)
    short.run("analyze", str(LOG))
    pid = short.wait_server()
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)
    assert not Path(place.socket_path(str(short.dir))).exists()


def test_commands_not_served_run_here(warm: Warm) -> None:
    proc = warm.run("--version")
    assert proc.returncode == 0 and "chainlab" in proc.stdout
    time.sleep(0.5)
    assert warm.server_pid() is None  # nothing to serve: no server started


def test_a_socket_nobody_listens_on_is_replaced(warm: Warm) -> None:
    warm.dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(place.socket_path(str(warm.dir)))
    stale.close()  # the file stays, nobody listens (a server killed with -9)
    assert warm.run("analyze", str(LOG)).returncode == 0
    warm.wait_server()
    assert warm.run("analyze", str(LOG)).returncode == 0
    assert len(warm.served()) == 1


def test_sigterm_lets_the_running_command_finish(warm: Warm) -> None:
    big = warm.base / "big.log"
    big.write_bytes(LOG.read_bytes() * 2000)  # seconds on the Python engine
    warm.env["CHAINLAB_ENGINE"] = "python"
    warm.run("analyze", str(LOG))
    pid = warm.wait_server()
    proc = subprocess.Popen([CHAINLAB, "analyze", "--format", "json", str(big)], env=warm.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not warm.served() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    assert not Path(place.socket_path(str(warm.dir))).exists()  # no new command from now on
    assert proc.poll() is None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # the one running finished, and its status came back
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_the_command_has_the_callers_umask_and_directory(warm: Warm) -> None:
    big = warm.base / "big.log"
    big.write_bytes(LOG.read_bytes() * 2000)  # seconds on the Python engine: time to look at it
    warm.env["CHAINLAB_ENGINE"] = "python"
    warm.run("analyze", str(LOG))
    warm.wait_server()
    proc = subprocess.Popen(["sh", "-c", f"umask 027; exec {CHAINLAB} analyze --format json big.log"], cwd=warm.base,
                            env=warm.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not warm.served() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(warm.served()[0].split(" pid ")[1].split(":")[0])
    # the log names the child once it has the caller's limits and groups; its streams, umask
    # and directory come a moment later, before the command starts
    deadline = time.monotonic() + 10
    while "Umask:\t0027" not in (status := Path(f"/proc/{child}/status").read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "Umask:\t0027" in status
    assert os.readlink(f"/proc/{child}/cwd") == str(warm.base)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def test_the_first_commands_directory_is_not_on_the_servers_module_path(warm: Warm) -> None:
    evil = warm.base / "evil"
    evil.mkdir()
    marker = warm.base / "imported"
    (evil / "hashlib.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError\n")
    proc = subprocess.run([CHAINLAB, "analyze", str(LOG)], cwd=evil, env=warm.env, capture_output=True, text=True)
    assert proc.returncode == 0
    warm.wait_server()
    assert warm.run("analyze", str(LOG)).returncode == 0 and len(warm.served()) == 1
    assert not marker.exists()
    assert os.readlink(f"/proc/{warm.server_pid()}/cwd") == "/"


def _slow_command(warm: Warm, wrapper: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], int]:
    """A served analyze that takes seconds (the Python engine on a 9 MB log), and its child's
    PID; the client is started through `wrapper` (prlimit, nice...)."""
    big = warm.base / "big.log"
    big.write_bytes(LOG.read_bytes() * 2000)
    warm.env["CHAINLAB_ENGINE"] = "python"
    warm.run("analyze", str(LOG))
    warm.wait_server()
    proc = subprocess.Popen([*wrapper, CHAINLAB, "analyze", "--format", "json", str(big)], env=warm.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not warm.served() and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc, int(warm.served()[0].split(" pid ")[1].split(":")[0])


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_a_killed_client_takes_its_command_with_it(warm: Warm, stopped: bool) -> None:
    proc, child = _slow_command(warm)
    if stopped:  # by Ctrl-Z: the server's SIGTERM needs a SIGCONT to be acted on
        proc.send_signal(signal.SIGTSTP)
        assert _wait_state(child, {"T"}) == "T"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()


def test_the_child_holds_no_other_descriptor_of_the_server(warm: Warm) -> None:
    first, first_child = _slow_command(warm)
    second = subprocess.Popen([CHAINLAB, "analyze", "--format", "json", str(warm.base / "big.log")], env=warm.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(warm.served()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    second_child = int(warm.served()[1].split(" pid ")[1].split(":")[0])
    theirs = os.readlink(f"/proc/{second.pid}/fd/2")
    while os.readlink(f"/proc/{second_child}/fd/2") != theirs and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has become the command (its streams are the client's)
    targets = [os.readlink(f"/proc/{second_child}/fd/{fd}") for fd in os.listdir(f"/proc/{second_child}/fd")]
    assert not [t for t in targets if t.startswith(("socket:", "pipe:")) and t not in (
        os.readlink(f"/proc/{second.pid}/fd/1"), os.readlink(f"/proc/{second.pid}/fd/2"))], targets
    for proc in (first, second):
        proc.communicate(timeout=120)
        assert proc.returncode == 0


def test_a_connection_that_says_nothing_neither_blocks_nor_ends_the_server(warm: Warm) -> None:
    warm.run("analyze", str(LOG))
    pid = warm.wait_server()
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    idle.connect(place.socket_path(str(warm.dir)))
    started = time.monotonic()
    assert warm.run("analyze", str(LOG)).returncode == 0
    idle.close()
    assert warm.run("analyze", str(LOG)).returncode == 0
    assert warm.server_pid() == pid
    assert sum(" pid " in line for line in warm.served()) >= 1
    assert time.monotonic() - started < 30


def test_a_command_ended_by_a_signal_ends_the_client_by_it(warm: Warm) -> None:
    proc, child = _slow_command(warm)
    os.kill(child, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # as a shell sees a command killed by SIGTERM


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_state(pid: int, wanted: set[str], timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while (state := _state(pid)) not in wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    return state


def test_job_control_stops_and_continues_the_command_with_its_client(warm: Warm) -> None:
    proc, child = _slow_command(warm)
    assert os.getpgid(child) == child  # a group of its own: the terminal's signals reach its subprocesses too
    proc.send_signal(signal.SIGTSTP)  # Ctrl-Z
    assert _wait_state(proc.pid, {"T"}) == "T"
    assert _wait_state(child, {"T"}) == "T"
    time.sleep(0.3)
    assert _state(child) == "T"  # stays stopped while the client is
    proc.send_signal(signal.SIGCONT)  # fg / bg
    assert _wait_state(child, {"R", "S", "D"}) in {"R", "S", "D"}
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def test_a_served_command_shows_its_own_command_line(warm: Warm) -> None:
    proc, child = _slow_command(warm)
    try:
        deadline = time.monotonic() + 10
        while "analyze" not in describe_process(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert describe_process(child) == f"pid {child}: {CHAINLAB} analyze --format json {warm.base / 'big.log'}"
    finally:
        proc.kill()
        proc.wait()


def _limits(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): " ".join(line[26:].split()[:2]) for line in lines}


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_served_command_has_its_callers_limits_and_nice(warm: Warm) -> None:
    proc, child = _slow_command(warm, ("prlimit", "--nofile=100:200", "--stack=4194304:8388608", "--",
                                       "nice", "-n", "7"))
    try:
        limits = _limits(child)
        assert limits["Max open files"] == "100 200"
        assert limits["Max stack size"] == "4194304 8388608"
        assert _nice(child) == 7
        assert _nice(warm.server_pid() or 0) == 0  # the server's own stay
    finally:
        proc.kill()
        proc.wait()


def test_a_served_command_joins_its_callers_cgroup(warm: Warm) -> None:
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    unified = next((Path(m[1]) for m in mounts if m[2] == "cgroup2"), None)
    if unified is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    own = Path("/proc/self/cgroup").read_text().splitlines()
    base = unified / next(line.split(":", 2)[2] for line in own if line.startswith("0::")).lstrip("/")
    group = base / f"chainlab-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:  # a container's read-only cgroupfs, say
        pytest.skip(f"cannot make a cgroup in {base}: {exc}")
    try:
        enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        proc, child = _slow_command(warm, ("sh", "-c", enter, str(group)))
        try:
            relative = "/" + str(group.relative_to(unified))
            assert f"0::{relative}" in Path(f"/proc/{child}/cgroup").read_text().splitlines()
            assert f"0::{relative}" not in Path(f"/proc/{warm.server_pid()}/cgroup").read_text().splitlines()
        finally:
            proc.kill()
            proc.wait()
    finally:
        deadline = time.monotonic() + 10
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        group.rmdir()


def test_a_command_whose_limits_the_server_cannot_give_gets_a_new_server(warm: Warm) -> None:
    warm.run("analyze", str(LOG))
    warm.wait_server()
    beyond = int(Path("/proc/sys/fs/nr_open").read_text()) + 1  # not even root may set this
    process = attributes.collect()
    process["limits"]["RLIMIT_NOFILE"] = [beyond, beyond]
    request = {"argv": [CHAINLAB, "analyze", str(LOG)], "cwd": "/", "env": warm.env, "umask": 0o022,
               "install": place.install(), "process": process}
    old = warm.server_pid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock, open(os.devnull, "r+b") as null:
        sock.connect(place.socket_path(str(warm.dir)))
        socket.send_fds(sock, [json.dumps(request).encode()], [null.fileno()] * 3)
        sock.settimeout(30)
        # The client runs the command itself and starts a server of its own (with its attributes).
        assert sock.recv(64) == b"stale"
    log_text = Path(place.log_path(str(warm.dir))).read_text()
    assert "not served (the caller's process attributes cannot be taken on here): stale" in log_text
    deadline = time.monotonic() + 30
    while old and alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old and not alive(old)


def test_a_caller_in_another_network_namespace_runs_the_command_itself(warm: Warm) -> None:
    warm.run("analyze", str(LOG))
    old = warm.wait_server()
    netns = f"cwtest{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        inside = subprocess.run(["ip", "netns", "exec", netns, CHAINLAB, "analyze", "--format", "json", str(LOG)],
                                capture_output=True, text=True, env=warm.env, timeout=120)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)
    assert inside.returncode == 0, inside.stderr
    deadline = time.monotonic() + 30
    while alive(old) and time.monotonic() < deadline:  # it was not its command: it ends ("stale")
        time.sleep(0.05)
    assert not alive(old)
    outside = warm.run("analyze", "--format", "json", str(LOG))
    assert outside.returncode == 0 and inside.stdout == outside.stdout
    assert not [line for line in warm.served() if "--format json" in line]  # neither was served


def test_persist_zero_ends_the_server_and_runs_here(warm: Warm) -> None:
    """CHAINLAB_PERSIST=0: this installation's server ends (SIGTERM: what runs finishes) and
    the command runs in the shell's process; with none running it says nothing and makes no
    directory."""
    warm.run("analyze", str(LOG))
    pid = warm.wait_server()
    ended = warm.run("analyze", "--format", "json", str(LOG), env={**warm.env, "CHAINLAB_PERSIST": "0"})
    assert ended.returncode == 0 and "warm server ended" in ended.stderr and json.loads(ended.stdout)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid) and len(warm.served()) == 0  # the command was not served
    again = warm.run("--version", env={**warm.env, "CHAINLAB_PERSIST": "0"})
    assert again.returncode == 0 and again.stderr == ""
    fresh = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))
    try:
        subprocess.run([CHAINLAB, "--version"], env={**warm.env, "XDG_RUNTIME_DIR": str(fresh), "CHAINLAB_PERSIST": "0"},
                       check=True, capture_output=True, timeout=60)
        assert list(fresh.iterdir()) == []
    finally:
        subprocess.run(["rm", "-rf", str(fresh)], check=False)
