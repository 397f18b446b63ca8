"""Starting and stopping felix-lite on a host over SSH (Calico 2.x emulation)."""

from __future__ import annotations

import shlex
import sys
import time

import fabric

from chainlab.errors import ChainlabError
from chainlab.remote import run

PIDFILE = "/run/chainlab-felix.pid"
LOGFILE = "/var/log/chainlab-felix.log"
MODULE = "chainlab.calico.agent"
READY_TIMEOUT = 15.0


def python_on_host(conn: fabric.Connection) -> str:
    """The interpreter that runs the agent: this one, which the local lab's hosts share.

    A real host (the reference VMs) has no chainlab: there, Calico itself runs.
    """
    python = sys.executable
    if not run(conn, ["test", "-x", python], check=False).ok:
        raise ChainlabError(f"{conn.host}: {python} is not there: the Calico emulation (felix-lite) "
                            "runs only on local lab hosts, which share this machine's files")
    return python


def agent_pid(conn: fabric.Connection) -> int | None:
    """The running agent's PID (from its pidfile, checked against /proc/PID/cmdline)."""
    script = (f"p=$(cat {PIDFILE} 2>/dev/null) && [ -n \"$p\" ] && "
              f"tr '\\0' ' ' < /proc/$p/cmdline | grep -q -- {shlex.quote('-m ' + MODULE + ' ')} && echo $p")
    result = run(conn, ["sh", "-c", script], check=False)
    out = result.stdout.strip()
    return int(out) if result.ok and out.isdigit() else None


def start_agent(conn: fabric.Connection, host: str, etcd: str) -> int:
    python = python_on_host(conn)
    run(conn, [python, "-m", MODULE, "--host", host, "--etcd", etcd, "--daemon",
               "--pidfile", PIDFILE, "--log", LOGFILE])
    pid = agent_pid(conn)
    if pid is None:
        raise ChainlabError(f"{host}: felix-lite did not start (see {LOGFILE} on the host)")
    return pid


def wait_programmed(conn: fabric.Connection, host: str) -> None:
    """Until the agent's first apply is in (cali-FORWARD exists), bounded; polled on the
    host, so the wait is one SSH round trip."""
    poll = ('end=$(( $(date +%s) + $1 )); '
            'until iptables -w -S cali-FORWARD >/dev/null 2>&1; do '
            '[ "$(date +%s)" -ge "$end" ] && exit 1; sleep 0.1; done')
    if not run(conn, ["sh", "-c", poll, "sh", str(int(READY_TIMEOUT))], check=False, timeout=READY_TIMEOUT + 10).ok:
        log = run(conn, ["tail", "-n", "5", LOGFILE], check=False).stdout.strip()
        raise ChainlabError(f"{host}: felix-lite has not programmed iptables after {READY_TIMEOUT:.0f}s: {log}")


def stop_agent(conn: fabric.Connection) -> bool:
    pid = agent_pid(conn)
    if pid is None:
        run(conn, ["rm", "-f", PIDFILE])
        return False
    run(conn, ["kill", str(pid)], check=False)
    deadline = time.monotonic() + 5
    # agent_pid reads the cmdline: an exited agent (even a zombie not yet reaped) has none
    while agent_pid(conn) == pid:
        if time.monotonic() > deadline:
            run(conn, ["kill", "-9", str(pid)], check=False)
            break
        time.sleep(0.05)
    run(conn, ["rm", "-f", PIDFILE])
    return True


def cleanup(conn: fabric.Connection) -> bool:
    """Remove the agent's chains, jumps, ipsets and block routes; True if there were any."""
    had = run(conn, ["sh", "-c", "iptables-save | grep -q '^:cali-' || ipset list -n | grep -q '^cali4-'"],
              check=False).ok
    run(conn, [python_on_host(conn), "-m", MODULE, "--host", "-", "--cleanup"])
    return had
