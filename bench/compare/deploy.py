"""pyinfra deploy doing what a warm `chainlab lab up` checks (see spec.py), idiomatically:
files by `files.put`/`files.file`, ip_forward by `server.sysctl`, every other check a `Command`
fact. Run: pyinfra -y INVENTORY deploy.py (with SPEC=path in the environment)."""

import io
import json
import os

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import files, server

spec = json.load(open(os.environ["SPEC"]))
mine = spec["hosts"][host.name]
for path, text in mine["files"].items():
    files.put(name=f"put {path}", src=io.StringIO(text), dest=path)
server.sysctl(name="ip_forward", key="net.ipv4.ip_forward", value=1)
for path in mine["exists"]:
    files.file(name=f"{path} exists", path=path, present=True)
for check in mine["checks"]:
    host.get_fact(Command, command=check)
if host.name == spec["lab_host"]:
    for check in spec["lab_checks"]:
        host.get_fact(Command, command=check)
