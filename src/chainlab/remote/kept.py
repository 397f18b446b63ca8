"""Kept SSH connections: read-only commands as sessions on an OpenSSH master connection that
outlives the command (ControlMaster/ControlPersist, as Ansible keeps its connections).

Why: a warm `lab up` asks each host one read-only batch, and opening an SSH connection for it
cost more than the batch (on the local lab, where every host's sshd shares this machine's CPU:
~23 ms of CPU a connection, sshd's re-exec, key exchange and authentication, and chainlab's
side of them; a session on a kept connection ~8 ms, the `ssh` client's start included).

The first read-only command to a host starts an OpenSSH master in the background, with the
same key, user, port, known_hosts and policy as chainlab's own connections (unknown or changed
host keys refused, no SSH config read: `openssh.ssh_argv`); later ones, in this command and
in the next ones within CHAINLAB_SSH_PERSIST seconds (default 60; 0: none kept), are sessions
on it. Only read-only commands go this way: OpenSSH's own failures (and, rarely, a command's)
exit 255, and the caller then runs the command again over its own connection, which says
what failed in chainlab's words. Changes, files and docker stay on that connection.

Where: one socket per lab, host, address, port, user, key file, forward and known_hosts
text, in a 0700 directory of the user (`runtime_dir`); a lab rebuilt with new host keys gets
new masters, never one that checked the old keys. OpenSSH's master also refuses a client of
another uid (root excepted). `end(lab)` ends a lab's masters (lab down, local down, vm
down), killing one that does not answer; an idle master ends by itself. A master may also
forward a socket of ours to dockerd's on the host (`forward`: dockerd asked without a
process on the host).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from chainlab import runtime_dir
from chainlab.errors import ChainlabError
from chainlab.local import system as S
from chainlab.providers.base import Target
from chainlab.remote import mux
from chainlab.remote.openssh import ssh_argv

PERSIST_ENV = "CHAINLAB_SSH_PERSIST"
DEFAULT_PERSIST_S = 60
#: A master whose host stops answering ends after about INTERVAL x COUNT seconds.
SERVER_ALIVE = ("ServerAliveInterval=5", "ServerAliveCountMax=3")
#: A forward's socket is its master's, with this suffix.
FORWARD_SUFFIX = ".fwd"
#: Hex digits of a master's own part of its socket's name.
KEY_HEX = 24
#: Seconds a master has to answer the request to exit before it is killed.
EXIT_WITHIN_S = 2


def persist_seconds() -> int:
    """CHAINLAB_SSH_PERSIST: seconds an idle master is kept (0: no master)."""
    value = os.environ.get(PERSIST_ENV, "").strip()
    if not value:
        return DEFAULT_PERSIST_S
    if not value.isdigit():
        raise ChainlabError(f"{PERSIST_ENV}={value!r}: give the seconds an idle SSH connection is kept"
                            f" (0: none kept; default {DEFAULT_PERSIST_S})")
    return int(value)


@dataclass(frozen=True)
class Kept:
    """The `ssh` command line of one host's kept connection, up to `USER@ADDRESS`."""

    argv: tuple[str, ...]
    control_path: str
    #: Our end of the master's forward to a socket on the host (`kept_for`'s `forward_to`).
    forward_path: str | None = None

    def command(self, line: str) -> list[str]:
        """Run `line` (already quoted for the remote shell) as a session on the master."""
        return [*self.argv, "--", line]


def kept_for(lab: str, target: Target, forward_to: str | None = None) -> Kept | None:
    """The kept connection to `target`, or None when none is kept (CHAINLAB_SSH_PERSIST=0,
    no `ssh` client, or no private directory for its socket). With `forward_to` (a unix
    socket on the host, dockerd's), the master also forwards a socket of ours to it; a
    master with another forward (or none) is another master."""
    seconds = persist_seconds()
    if not seconds or _ssh_client() is None:
        return None
    where = runtime_dir.runtime_directory("ssh")
    if where is None:
        return None
    path = os.path.join(where, f"{_lab_key(lab)}-{_target_key(target, forward_to)}")
    *options, destination = ssh_argv(target)
    options += ["-o", "ControlMaster=auto", "-o", f"ControlPersist={seconds}", "-o", f"ControlPath={path}",
                "-o", "LogLevel=ERROR"]
    for option in SERVER_ALIVE:
        options += ["-o", option]
    forward_path = None
    if forward_to is not None:
        forward_path = f"{path}{FORWARD_SUFFIX}"  # 0600 (OpenSSH's StreamLocalBindMask), ours to replace
        options += ["-o", "StreamLocalBindUnlink=yes", "-L", f"{forward_path}:{forward_to}"]
    return Kept((*options, destination), path, forward_path)


def end(lab: str, paths: Iterable[str] | None = None) -> int:
    """End `lab`'s masters (or only those at `paths`; their sessions are cut) and remove
    their forwards' sockets: at how many sockets' paths a master was ended. One that does not answer the
    request to exit (stopped) is killed; on return none of them runs (one that outlives
    SIGKILL aside), not even one that answered and is still on its way out, nor one whose
    socket is gone (in this user's runtime directory)."""
    where = runtime_dir.runtime_directory("ssh", create=False)
    if where is None:
        return 0
    if paths is None:  # every master of the lab, and every forward's socket (its master may have ended)
        lab_socket = re.compile(rf"{re.escape(os.path.join(where, _lab_key(lab)))}-[0-9a-f]{{{KEY_HEX}}}")
        paths = {path for entry in os.listdir(where)
                 if lab_socket.fullmatch(path := os.path.join(where, entry.removesuffix(FORWARD_SUFFIX)))}
        chosen: Callable[[str], object] = lab_socket.fullmatch
    else:
        paths = set(paths)
        chosen = paths.__contains__
    ended = set()
    for path in paths:
        if os.path.exists(path):
            try:
                mux.Mux(path).terminate(EXIT_WITHIN_S)
                ended.add(path)
            except mux.Stuck:
                if kill_master(path):
                    ended.add(path)
            except (mux.NoMaster, mux.Cut, mux.MuxError, OSError):
                pass  # gone meanwhile, or not ours: nothing to end
        with contextlib.suppress(FileNotFoundError):  # OpenSSH leaves a forward's socket behind
            os.unlink(f"{path}{FORWARD_SUFFIX}")
    if left := _masters(chosen):  # exiting after its answer, or without a socket (replaced, removed)
        with contextlib.suppress(ChainlabError):  # one that outlives SIGKILL is left: it no longer listens
            S.stop_all(set(left), timeout=EXIT_WITHIN_S)
        ended.update(left.values())
    return len(ended)


def kill_master(path: str) -> bool:
    """SIGKILL the master listening at `path` (a stuck one: stopped, or not answering) and
    remove its socket (the next command starts another): whether there was one."""
    found = _masters(lambda each: each == path)
    if found:
        with contextlib.suppress(ChainlabError):  # one that outlives SIGKILL is left: it no longer listens
            S.kill_all(set(found), timeout=EXIT_WITHIN_S)  # a PID reused since the scan is left alone
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return bool(found)


def _masters(chosen: Callable[[str], object]) -> dict[S.Proc, str]:
    """Our uid's OpenSSH masters whose socket's path is `chosen`, and that path. Found by
    their command line (`ssh: PATH [mux]`): the PID a socket gives (SO_PEERCRED) is the
    `ssh` client's that made it before the master forked away, and a master may have lost
    its socket."""
    found = {}
    for entry in os.scandir("/proc"):
        try:
            if not entry.name.isdigit() or entry.stat().st_uid != os.getuid():
                continue
            title = Path(entry.path, "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if title.startswith(b"ssh: ") and title.endswith(b" [mux]"):
            path = os.fsdecode(title[len(b"ssh: "):-len(b" [mux]")])
            if chosen(path) and (proc := S.proc_of(int(entry.name))) is not None:
                found[proc] = path
    return found


@functools.cache
def _ssh_client() -> str | None:
    return shutil.which("ssh")


def _lab_key(lab: str) -> str:
    return hashlib.sha256(lab.encode()).hexdigest()[:16]


def _target_key(target: Target, forward_to: str | None) -> str:
    """What a master was checked and authenticated with, and what it forwards: another
    value, another master."""
    digest = hashlib.sha256()
    for part in (target.name, str(target.address), str(target.port), target.user, str(target.key_filename),
                 forward_to or ""):
        digest.update(part.encode() + b"\0")
    try:
        digest.update(target.known_hosts_file.read_bytes())
    except OSError:
        digest.update(b"\1")  # unreadable: ssh says so, and the caller falls back
    return digest.hexdigest()[:KEY_HEX]
