"""The hook a trace step's chain runs in, when the chain is a base chain.

iptables (kernel log, xtables-monitor): the built-in chains are the base chains and are
named after their hook (PREROUTING, ...). nft (`nft monitor trace`): any chain can be a
base chain; its hook is, in this order,
  1. what `nft list ruleset` declares (`type filter hook prerouting priority -300`),
     given as --rules NODE=FILE;
  2. what its name says: `input`, `PREROUTING`, firewalld's `raw_PREROUTING`, OpenWrt
     fw4's `mangle_forward`, kube-proxy's `filter-input`;
  3. what the trace shows: a chain that a `packet:` line opens is a base chain, and the
     interfaces that line prints narrow its hook down (iif and oif: FORWARD or, for a
     forwarded packet, POSTROUTING; iif only: PREROUTING or INPUT; oif only: OUTPUT or
     POSTROUTING: netfilter.HOOK_INTERFACES). Of those it is the earliest
     that the packet's walk so far can go on to (or come back in at, over lo): a guess,
     where 1 or 2 are facts.
A chain that is none of these is a regular chain and runs in the hook it was jumped to from.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from chainlab.trace.model import Event
from chainlab.trace.netfilter import HOOK_BY_NFT_NAME, HOOK_INTERFACES, HOOKS, can_follow, re_enters
from chainlab.trace.rules import RuleSet

_NAMED = re.compile(
    r"(?:[A-Za-z0-9]+_)?(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING|prerouting|input|forward|output|postrouting)"
    r"|[a-z0-9]+-(prerouting|input|forward|output|postrouting)",
    re.ASCII,
)
#: the hooks at which a `packet:` line can print these interfaces (iif, oif), in HOOKS' order
_BY_INTERFACES = {ifs: tuple(h for h in HOOKS if ifs in HOOK_INTERFACES[h]) for ifs in ((True, False), (False, True), (True, True))}

#: (event, the hook the packet's walk is in so far) -> the hook of the event's chain if it
#: is a base chain, else None.
Resolver = Callable[[Event, "str | None"], "str | None"]


def hook_by_name(chain: str) -> str | None:
    """The hook an nft base chain's name gives, if it follows one of the usual schemes."""
    match = _NAMED.fullmatch(chain)
    if match is None:
        return None
    return HOOK_BY_NFT_NAME[(match.group(1) or match.group(2)).lower()]


def inferred_hook(base: tuple[bool, bool], current: str | None) -> str | None:
    """The earliest hook a base chain with these interfaces can run in, not going back
    from `current`; None when the `packet:` line printed neither interface."""
    candidates = _BY_INTERFACES.get(base)
    if candidates is None:
        return None
    if current is None:
        return candidates[0]
    for hook in candidates:
        if can_follow(current, hook) or re_enters(current, hook):
            return hook
    return candidates[-1]


def resolver(rules: dict[str, RuleSet]) -> Resolver:
    """The hook resolver for events, with each node's nft ruleset (if given)."""

    def resolve(event: Event, current: str | None) -> str | None:
        step = event.step
        if step.family is None:
            return step.chain if step.chain in HOOKS else None
        ruleset = rules.get(event.node)
        if ruleset is not None:
            declared = ruleset.declared_hook(step.family, step.table, step.chain)
            if declared is not None:
                return declared[0]
        named = hook_by_name(step.chain)
        if named is not None:
            return named
        return inferred_hook(event.base, current) if event.base is not None else None

    return resolve
