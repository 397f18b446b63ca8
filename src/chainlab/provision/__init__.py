"""Provisioning: `chainlab lab up|down` and `chainlab facts`.

Modules:
- `commands`: pure builders of every command and file text (CentOS 7 vs Debian, quoting);
- `facts`: one read-only script per host over SSH, or facts assumed from inventory hints;
- `actions`, `executor`: a step yields actions (a command, a file, a call); the executor runs
  them, or under --check only shows them;
- `context`: what a step sees (facts, read-only probes, the run's shared etcd client);
- `steps` / `teardown`: the base steps (ip_forward, trace_log, trace_rules, image, containers)
  and the down steps that undo them; the network's own steps come from `chainlab.networks`;
- `runner`: phases of steps on all hosts in parallel, lab-level steps once, progress, lock
  per lab, recap, --json, lab state;
- `recap`: results and the Ansible-like recap (pure).

Public API: `provision(inv, "up"|"down", check=, offline=, limit=, json_path=)`,
`gather_facts(inv, host, session, full=)` (`chainlab facts`: full; lab up: what its steps decide on),
`assumed_facts(inv, host)`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Facts", "assumed_facts", "gather_facts", "provision"]


def __getattr__(name: str) -> Any:
    """Imported on first use: the network kinds import the actions of this package."""
    if name in ("Facts", "assumed_facts"):
        from chainlab.provision import facts

        return getattr(facts, name)
    if name in ("gather_facts", "provision"):
        from chainlab.provision import runner

        return getattr(runner, name)
    raise AttributeError(name)
