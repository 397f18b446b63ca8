"""Provisioning: `chainlab lab up|down` and `chainlab facts` (issue 4).

Modules:
- `commands`: pure builders of every command and file text (CentOS 7 vs Debian, quoting);
- `facts`: one read-only script per host over SSH, or facts assumed from inventory hints;
- `context`: what a step sees (read-only probes, recorded changes, --check);
- `steps` / `teardown`: the up steps (ip_forward, trace_log, trace_rules, image, calico,
  containers) and the down steps that undo them, each check → change-if-needed;
- `runner`: hosts in parallel, progress, lock per lab, recap, --json, lab state;
- `recap`: results and the Ansible-like recap (pure).

Public API: `provision(inv, "up"|"down", check=, offline=, limit=, json_path=)`,
`gather_facts(inv, host, conn)`, `assumed_facts(inv, host)`.
"""

from chainlab.provision.facts import Facts, assumed_facts
from chainlab.provision.runner import gather_facts, provision

__all__ = ["Facts", "assumed_facts", "gather_facts", "provision"]
