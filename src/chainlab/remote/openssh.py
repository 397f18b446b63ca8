"""The OpenSSH client command line for an inventory host (pure): `chainlab ssh`.

Same key, user, port and known_hosts as chainlab's own connections (remote/ssh.py), and the
same policy: unknown or changed host keys are refused, no SSH config file is read.
"""

from __future__ import annotations

from collections.abc import Sequence

from chainlab.remote.target import Target
from chainlab.shell import command_line


def ssh_argv(target: Target, command: Sequence[str] = ()) -> list[str]:
    """`ssh ... USER@ADDRESS [-- COMMAND]`; each word of `command` is quoted for the remote shell."""
    argv = ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, int(target.connect_timeout))}", "-p", str(target.port)]
    if target.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={target.known_hosts}"]
    if target.key_filename is not None:
        argv += ["-o", "IdentitiesOnly=yes", "-i", str(target.key_filename)]
    argv.append(f"{target.user}@{target.address}")
    if command:
        argv += ["--", command_line(command)]
    return argv
