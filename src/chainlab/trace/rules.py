"""Rule snapshots (`iptables-save [-c]` output): join trace steps to rule text."""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from chainlab.errors import InputError, Problem
from chainlab.trace.model import Step
from chainlab.trace.netfilter import HOOKS, Slot

COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")


@dataclass
class RuleSet:
    """Rules of one node: table → chain → rule lines (`-A ...`), and built-in policies."""

    rules: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    policies: dict[str, dict[str, str]] = field(default_factory=dict)

    @functools.cached_property
    def slots(self) -> set[Slot]:
        """(hook, table) of every built-in chain in the snapshot."""
        return {(chain, table) for table, chains in self.rules.items() for chain in chains if chain in HOOKS}

    def rule_text(self, step: Step) -> str | None:
        """The rule a step matched: rule N of a chain is its Nth `-A` line."""
        if step.kind == "policy":
            policy = self.policies.get(step.table, {}).get(step.chain)
            return f"-P {step.chain} {policy}" if policy else None
        if step.kind != "rule" or step.position is None:
            return None
        chain = self.rules.get(step.table, {}).get(step.chain, [])
        return chain[step.position - 1] if 0 < step.position <= len(chain) else None


def parse_iptables_save(text: str) -> RuleSet:
    """Parse iptables-save output; lines it does not understand are ignored."""
    ruleset = RuleSet()
    table = None
    for raw in text.splitlines():
        line = COUNTERS.sub("", raw.strip())
        if line.startswith("*"):
            table = line[1:].strip()
            ruleset.rules.setdefault(table, {})
        elif table is None or not line or line.startswith("#") or line == "COMMIT":
            continue
        elif line.startswith(":"):
            parts = line[1:].split()
            if len(parts) >= 2:
                ruleset.rules[table].setdefault(parts[0], [])
                if parts[1] != "-":
                    ruleset.policies.setdefault(table, {})[parts[0]] = parts[1]
        elif line.startswith("-A "):
            chain = line.split()[1]
            ruleset.rules[table].setdefault(chain, []).append(line)
    return ruleset


def load_rules(path: Path) -> RuleSet:
    """The snapshot in `path`; a file that cannot be read is an InputError."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError([Problem(str(path), "", f"--rules: cannot read: {exc.strerror or exc}")]) from None
    return parse_iptables_save(text)


def rule_target(rule: str) -> str | None:
    """The `-j`/`-g` target of a rule line, e.g. DROP."""
    try:
        words = shlex.split(rule)
    except ValueError:
        words = rule.split()
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "--jump", "-g", "--goto"):
            return words[i + 1]
    return None
