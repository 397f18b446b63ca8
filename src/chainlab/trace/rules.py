"""Rule snapshots: join trace steps to rule text, and tell nft base chains' hooks.

Two formats, told apart by their content:
  `iptables-save [-c]`: rule N of a chain is its Nth `-A` line;
  `nft [-a] list ruleset`: base chains declare their hook (`type filter hook input
  priority 0;`), and with -a every rule ends in `# handle N`, which `nft monitor trace`
  names when it cannot print the rule (`unknown rule handle 13`).
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from chainlab.errors import InputError, Problem
from chainlab.trace.model import Step
from chainlab.trace.netfilter import HOOK_BY_NFT_NAME, HOOKS, Slot

COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")
NFT_TABLE = re.compile(r"^table\s+(\S+)\s+(\S+)\s*\{", re.ASCII | re.MULTILINE)
NFT_BLOCK = re.compile(r"^(\S+)\s+(\S+)\s*\{", re.ASCII)
NFT_TYPE = re.compile(r"\btype\s+(\S+)\s+hook\s+(\w+)\b", re.ASCII)
NFT_POLICY = re.compile(r"\bpolicy\s+(\w+)\s*;", re.ASCII)
NFT_HANDLE = re.compile(r"\s*#\s*handle\s+(\d{1,10})\s*$", re.ASCII)
#: nft hooks of the families whose packets walk the IP hooks.
NFT_IP_FAMILIES = ("ip", "ip6", "inet")


@dataclass
class NftChain:
    """A chain of an nft ruleset: its hook if it is a base chain, rules by handle."""

    hook: str | None = None
    type: str | None = None  # a base chain's: filter, nat, route
    policy: str | None = None
    rules: dict[int, str] = field(default_factory=dict)


@dataclass
class RuleSet:
    """Rules of one node. iptables: table → chain → rule lines (`-A ...`) and built-in
    policies; nft: (family, table, chain) → chain."""

    rules: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    policies: dict[str, dict[str, str]] = field(default_factory=dict)
    nft: dict[tuple[str, str, str], NftChain] = field(default_factory=dict)

    @functools.cached_property
    def slots(self) -> set[Slot]:
        """(hook, table) of every base chain in the snapshot."""
        slots = {(chain, table) for table, chains in self.rules.items() for chain in chains if chain in HOOKS}
        slots |= {(c.hook, table) for (_, table, _), c in self.nft.items() if c.hook is not None}
        return slots

    def declared_hook(self, family: str, table: str, chain: str) -> tuple[str | None] | None:
        """(hook,) if the ruleset declares this nft chain (hook None: a regular chain, or a
        base chain outside the IP hooks); None if it does not know the chain."""
        found = self.nft.get((family, table, chain))
        return None if found is None else (found.hook,)

    def rule_text(self, step: Step) -> str | None:
        """The rule a step matched: rule N of an iptables chain is its Nth `-A` line; an nft
        step that names a rule handle gets that rule."""
        if step.family is not None:
            return self._nft_rule(step)
        if step.kind == "policy":
            policy = self.policies.get(step.table, {}).get(step.chain)
            return f"-P {step.chain} {policy}" if policy else None
        if step.kind != "rule" or step.position is None:
            return None
        chain = self.rules.get(step.table, {}).get(step.chain, [])
        return chain[step.position - 1] if 0 < step.position <= len(chain) else None

    def _nft_rule(self, step: Step) -> str | None:
        chain = self.nft.get((step.family or "", step.table, step.chain))
        if chain is None or step.kind != "rule" or step.handle is None or not step.handle.isdigit():
            return None
        return chain.rules.get(int(step.handle))


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


def _name(word: str) -> str:
    return word[1:-1] if len(word) >= 2 and word[0] == word[-1] == '"' else word


def parse_nft_ruleset(text: str) -> RuleSet:
    """Parse `nft [-a] list ruleset` output: chains, base chains' hooks and policies, and
    rules by handle. Blocks other than chains (sets, maps, flowtables) are skipped; lines
    it does not understand are ignored."""
    ruleset = RuleSet()
    table: tuple[str, str] | None = None
    chain: NftChain | None = None
    depth = 0  # 1: inside a table; 2 and more: inside one of its blocks
    pending = ""  # a rule whose braces are not balanced yet: it goes on on the next line
    for raw in text.splitlines():
        line = f"{pending} {raw.strip()}" if pending else raw.strip()
        pending = ""
        opens, closes = line.count("{"), line.count("}")
        if depth == 0:
            match = NFT_TABLE.match(line)
            if match:
                table, depth = (match.group(1), _name(match.group(2))), 1
        elif depth == 1:
            block = NFT_BLOCK.match(line)
            if line.startswith("}"):
                table, depth = None, 0
            elif block and table is not None:
                depth = 2
                if block.group(1) == "chain":
                    chain = ruleset.nft.setdefault((*table, _name(block.group(2))), NftChain())
        elif chain is None:  # inside a set, map or other block: wait for its end
            depth = max(depth + opens - closes, 1)
        elif line.startswith("}") and opens == 0:
            chain, depth = None, 1
        elif opens > closes:
            pending = line
        elif typed := NFT_TYPE.search(line):
            chain.hook = HOOK_BY_NFT_NAME.get(typed.group(2).lower()) if table and table[0] in NFT_IP_FAMILIES else None
            chain.type = typed.group(1)
            policy = NFT_POLICY.search(line)
            chain.policy = policy.group(1) if policy else chain.policy
        elif policy := NFT_POLICY.fullmatch(line):
            chain.policy = policy.group(1)
        elif handle := NFT_HANDLE.search(line):
            chain.rules[int(handle.group(1))] = line[: handle.start()].strip()
    return ruleset


def parse_rules(text: str) -> RuleSet:
    """A snapshot in either format."""
    return parse_nft_ruleset(text) if NFT_TABLE.search(text) else parse_iptables_save(text)


def load_rules(path: Path) -> RuleSet:
    """The snapshot in `path`; a file that cannot be read, or holds no table of either format
    (taken as a snapshot, it would say the node has no chain at all), is an InputError."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError([Problem(str(path), "", f"--rules: cannot read: {exc.strerror or exc}")]) from None
    rules = parse_rules(text)
    if not (rules.rules or rules.policies or rules.nft):
        raise InputError([Problem(str(path), "", "--rules: no iptables-save table (`*filter` ... `COMMIT`) and no"
                                                 " `nft -a list ruleset` table in it")])
    return rules


def policy_target(text: str) -> str | None:
    """The policy of a `-P CHAIN POLICY` text (as `RuleSet.rule_text` gives a policy step),
    upper-cased; None for any other text."""
    words = text.split()
    return words[2].upper() if len(words) == 3 and words[0] == "-P" else None


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
