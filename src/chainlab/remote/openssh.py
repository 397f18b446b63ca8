"""The OpenSSH client command line for an inventory host (pure): `chainlab ssh`.

Same key, user, port and known_hosts file as chainlab's own connections (remote/ssh.py: the
inventory's, else ~/.ssh/known_hosts, and no other), and the same policy: unknown or changed
host keys are refused, none is written, no SSH config file is read.
"""

from __future__ import annotations

from collections.abc import Sequence

from chainlab.remote.target import Target
from chainlab.shell import command_line

#: ssh's exit status for its own failures (connection, host key, authentication, master).
SSH_FAILED = 255


def ssh_argv(target: Target, command: Sequence[str] = ()) -> list[str]:
    """`ssh ... USER@ADDRESS [-- COMMAND]`; each word of `command` is quoted for the remote shell."""
    argv = ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, int(target.connect_timeout))}", "-p", str(target.port),
            # only that file: not the machine's /etc/ssh/ssh_known_hosts, never written to
            "-o", f"UserKnownHostsFile={target.known_hosts_file}", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no"]
    if target.key_filename is not None:
        argv += ["-o", "IdentitiesOnly=yes", "-i", str(target.key_filename)]
    argv.append(f"{target.user}@{target.address}")
    if command:
        argv += ["--", command_line(command)]
    return argv
