"""Provider `ssh`: hosts that exist already (the reference VMs); chainlab only connects."""

from __future__ import annotations

import os
from pathlib import Path

from chainlab.providers.base import Provider, Target


class SshProvider(Provider):
    kind = "ssh"

    def target(self, host: str) -> Target:
        address = self._host(host)
        ssh = self.inv.ssh
        key = Path(os.path.expanduser(ssh.key)) if ssh.key else None
        known = Path(os.path.expanduser(ssh.known_hosts)) if ssh.known_hosts else None
        return Target(host, address, ssh.user, ssh.port, key, known, ssh.connect_timeout, None)

    def describe(self) -> str:
        return "ssh (hosts that exist already)"
