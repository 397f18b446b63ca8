"""Conclusions about one packet: hook path, route, direction and verdict."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Set as AbstractSet

from chainlab.trace import ascii
from chainlab.trace.model import Packet, Step
from chainlab.trace.netfilter import ROUTES, TABLES, Slot, required_slots, route_of, slot_rank
from chainlab.trace.rules import RuleSet, policy_target, rule_target

DROP_VERDICTS = ("DROP", "REJECT")
#: Targets after which a packet leaves the table it is in (and goes on to the next one).
ENDING_TARGETS = ("ACCEPT", "MASQUERADE", "SNAT", "DNAT", "REDIRECT", "NETMAP")


def hook_path(steps: list[Step], tables: AbstractSet[str] | None = None) -> list[str]:
    """Built-in hooks the steps passed, in order; consecutive repeats collapse (one pass: the
    C engine has Python judge each distinct walk, this twice)."""
    path: list[str] = []
    last = None
    for step in steps:
        hook = step.hook
        if hook and hook != last and (tables is None or step.table in tables):
            path.append(hook)
            last = hook
    return path


def sent_here(steps: list[Step], hooks: list[str]) -> bool:
    """The node sent the packet: its walk starts in OUTPUT (flows put it first at equal TTL)."""
    return bool(hooks) and steps[0].hook == "OUTPUT"


def _policy(step: Step) -> str | None:
    """A policy step's policy, from its ruleset's text (a kernel-log TRACE line does not print it)."""
    return policy_target(step.rule) if step.rule and step.kind == "policy" else None


def _explicit_drop(step: Step) -> bool:
    if step.verdict and step.verdict.split(":")[0] in DROP_VERDICTS:
        return True
    if step.rule and step.kind == "rule":
        return rule_target(step.rule) in DROP_VERDICTS
    return _policy(step) in DROP_VERDICTS


def _where(step: Step) -> str:
    where = f"{step.table}:{step.chain}"
    if step.kind == "rule" and step.position is not None:
        where += f" rule {step.position}"
    elif step.kind == "rule" and step.handle:
        where += f" rule {step.handle}"
    elif step.kind == "policy":
        where += " policy"
    return where


#: nft families whose hooks are not IP's though they have the same names.
_OWN_HOOKS = ("bridge", "netdev", "arp")


def _hook_of(step: Step) -> str:
    """`table HOOK`; `bridge filter INPUT` for a family with hooks of its own: a bridge's INPUT
    accepts a frame into the host's IP stack, whose PREROUTING comes next."""
    if step.family not in _OWN_HOOKS:
        return f"{step.table} {step.hook}"
    said = f"{step.family} {step.table} {step.hook}"
    return said + (", the bridge's own hook, which hands the frame on to the host's IP stack (its PREROUTING)"
                   if step.family == "bridge" and step.hook == "INPUT" else "")


def drop_point(packet: Packet) -> str | None:
    """Where a dropped packet died: `table:chain rule N` and the rule's text if known."""
    if packet.verdict != "dropped" or not packet.steps:
        return None
    last = packet.steps[-1]
    return _where(last) + (f" `{last.rule}`" if last.rule else "")


def drop_chain(packet: Packet) -> str | None:
    """The `table:chain` a dropped packet died in (the diagram's drop point)."""
    if packet.verdict != "dropped" or not packet.steps:
        return None
    last = packet.steps[-1]
    return f"{last.table}:{last.chain}"


def walk_chains(steps: list[Step], tables: set[str] | None) -> dict[str, list[str]]:
    """hook → the `table:chain`s met there, in order, once each (only `tables`' when given)."""
    chains: dict[str, list[str]] = {}
    for step in steps:
        if step.hook and (tables is None or step.table in tables):
            names = chains.setdefault(step.hook, [])
            name = f"{step.table}:{step.chain}"
            if name not in names:
                names.append(name)
    return chains


def _target_unknown(step: Step) -> bool:
    """A rule or policy ended the walk, but neither the log nor a ruleset says whether it
    accepted or dropped: a kernel-log TRACE line names the rule, not its target (a nat rule
    cannot drop: iptables refuses DROP there), nor a chain's policy. A policy not shown is
    read as ACCEPT, the default, except filter FORWARD's: Docker sets it to DROP on every
    host it runs on (and routers' firewalls do), so there it is as likely one as the other."""
    if step.rule is not None or step.verdict:
        return False
    if step.kind == "policy":
        return step.table == "filter" and step.chain == "FORWARD"
    return step.kind == "rule" and not _cannot_drop(step)


def _decides(step: Step) -> bool:
    """The step ends the table the packet is in: a policy, an accept, a NAT target."""
    return step.kind == "policy" or _accepts(step)


def _cannot_drop(step: Step) -> bool:
    """A step of iptables' nat table: iptables refuses DROP there, so whatever its rule's
    target (a NAT target, RETURN, a jump to a nat chain), the packet leaves the table alive."""
    return step.family is None and step.table == "nat"


def _policy_unshown(step: Step) -> bool:
    """A policy step whose policy neither the line (a kernel-log TRACE line) nor a ruleset shows."""
    return step.kind == "policy" and not step.verdict and _policy(step) is None


def _accepts(step: Step) -> bool:
    """The step let the packet out of its table: an ACCEPT verdict, a rule whose target ends
    the table without dropping (ACCEPT, a NAT target), or a policy a ruleset says is ACCEPT.
    A policy not shown: in filter, where firewalls set DROP policies, a trace that stops at
    one with a table still ahead stopped there; every other table's (raw, mangle, nat,
    security) is read as ACCEPT, the default (DROP there is rare, and iptables refuses it in
    nat), so a trace stopping at one lost its lines after it."""
    if step.verdict and step.verdict.split(":")[0] == "ACCEPT":
        return True
    if _policy_unshown(step):
        return step.table != "filter"
    if step.kind == "policy":
        return _policy(step) == "ACCEPT"
    return bool(step.rule and step.kind == "rule" and rule_target(step.rule) in ENDING_TARGETS)


#: nft statements only a chain of `type nat` (or one it calls) may hold: nft refuses them elsewhere.
NAT_STATEMENTS = frozenset({"masquerade", "snat", "dnat", "redirect"})


class BaseChains:
    """What a node's walks (and its nft ruleset, when given) show about its nft base chains:
    their order at one hook, and which are of type nat.

    Order: a table may hook several base chains into one hook at different priorities
    (OpenWrt's fw4: `mangle_forward`, then `forward`); the trace prints no priority, but a
    walk that leaves one base chain by its policy and goes on in another of the same table
    at the same hook shows their order. A packet whose trace stops after the first then
    still had the second ahead.

    Type nat: a chain whose traced rule holds a NAT statement (`masquerade`, `snat to`) is
    of type nat, and so is the base chain the walk was in at that hook (nft allows these
    statements nowhere else); a ruleset says it outright (`type nat hook postrouting`). Like
    iptables' nat table, such a chain sees only a connection's first packet: a later one
    does not have it ahead (`nat_slots`), and a walk through one is a new connection.

    It holds at most LIMIT pairs and nat chains: a hostile log of ever new chain names
    keeps memory flat (a table has a few base chains)."""

    LIMIT = 4096

    def __init__(self, rules: RuleSet | None = None) -> None:
        self._next: dict[tuple[str, str, str], set[str]] = {}  # (hook, table, chain) -> chains after it
        self._bases: dict[tuple[str, str], set[str]] = {}  # (hook, table) -> its base chains seen so far
        self._nat: dict[Slot, set[str]] = {}  # (hook, table) -> its chains of type nat
        self._pairs = 0
        for (_, table, chain), declared in (rules.nft.items() if rules else ()):
            if declared.hook is not None:
                self._bases.setdefault((declared.hook, table), set()).add(chain)
                if declared.type == "nat":
                    self._nat.setdefault((declared.hook, table), set()).add(chain)

    def learn(self, steps: list[Step]) -> bool:
        """Take what the walk shows; whether it showed something new."""
        if steps[0].family is None and steps[-1].family is None:  # a kernel log's walk: no nft base chains
            return False
        return self._learn_order(steps) | self._learn_nat(steps)

    def _learn_nat(self, steps: list[Step]) -> bool:
        learned = False
        base = ""  # the base chain the walk is in at the step's hook (set at the first step)
        for before, step in zip([None, *steps], steps):
            if before is None or (before.hook, before.table) != (step.hook, step.table) or before.kind == "policy":
                base = step.chain
            if (step.family is None or step.hook is None or not step.rule or self._pairs >= self.LIMIT
                    or NAT_STATEMENTS.isdisjoint(ascii.words(step.rule))):
                continue
            chains = self._nat.setdefault((step.hook, step.table), set())
            new = {step.chain, base} - chains
            if new:
                chains |= new
                self._pairs += len(new)
                learned = True
        return learned

    def _learn_order(self, steps: list[Step]) -> bool:
        learned = False
        for before, after in zip(steps, steps[1:]):
            if (before.kind == "policy" and before.family is not None and before.hook is not None
                    and (after.hook, after.table, after.family) == (before.hook, before.table, before.family)
                    and after.chain != before.chain):
                key = (before.hook, before.table, before.chain)
                if after.chain in self._next.get(key, ()) or self._pairs >= self.LIMIT:
                    continue
                self._next.setdefault(key, set()).add(after.chain)
                self._bases.setdefault(key[:2], set()).update((before.chain, after.chain))
                self._pairs += 1
                learned = True
        return learned

    def following(self, steps: list[Step]) -> list[Slot]:
        """The base chains that follow, at the last step's hook, the one the walk was last
        in there and that it has not passed (as `table:chain` slots of that hook, by name)."""
        last = steps[-1]
        if last.hook is None:
            return []
        bases = self._bases.get((last.hook, last.table), set())
        here = [s for s in steps if s.hook == last.hook and s.table == last.table]
        base = next((s.chain for s in reversed(here) if s.chain in bases), None)
        later = self._next.get((last.hook, last.table, base), set()) - {s.chain for s in here} if base else set()
        return [(last.hook, f"{last.table}:{chain}") for chain in sorted(later)]

    def is_nat(self, step: Step) -> bool:
        """The step is in a chain of type nat (iptables' nat table, or an nft chain known so)."""
        if step.family is None:
            return step.table == "nat"
        return step.chain in self._nat.get((step.hook or "", step.table), ())

    def any_nat(self, steps: list[Step]) -> bool:
        """Some step is in a chain of type nat (is_nat); a kernel log's walk (nothing learned
        of nft chains) looks at tables only."""
        if not self._nat:
            return "nat" in [s.table for s in steps if s.family is None]
        return any(map(self.is_nat, steps))

    def nat_slots(self) -> set[Slot]:
        """The (hook, table)s of nft tables whose every base chain known there is of type nat."""
        return {slot for slot, nat in self._nat.items() if self._bases.get(slot, set()) <= nat}


def _walk_order(slot: Slot) -> tuple[tuple[int, int], Slot]:
    """Slots in walk order; ties (INPUT or FORWARD ahead) by name, never by a set's order."""
    return slot_rank(*slot), slot


def judge(packet: Packet, present: set[Slot], chains: BaseChains | None = None) -> None:
    """Set route, new_connection, verdict and reason of a complete packet.

    A packet whose trace stops while a table it must still pass (given the tables that
    exist on the node, the base chains `chains` knows to follow at the hook it stopped in,
    and whether it is a connection's first packet) lies ahead was
    dropped at its last step, unless that step let it out of its table (an accept, a NAT
    target): then it was lost after, where no rule shows it, and the verdict is unknown.
    Stopping at the end of PREROUTING is a loss at the routing decision, which netfilter
    does not see, or (with no traced table known after it) a walk through hooks without
    chains on the node: verdict unknown. Where the log itself ends
    after the packet's last step (`at_end`), only an explicit drop, or a policy or accept
    that ends its walk with nothing ahead, decides; otherwise the verdict is unknown.
    """
    steps = packet.steps
    packet.route = route_of(hook_path(steps))
    chains = chains or BaseChains()
    packet.new_connection = chains.any_nat(steps)
    last = steps[-1]
    by_rule = f" by `{last.rule}`" if last.rule else ""
    if _explicit_drop(last):
        packet.verdict, packet.reason = "dropped", f"dropped in {_where(last)}{by_rule}"
        return
    if last.hook is None:
        packet.verdict, packet.reason = "unknown", f"trace stops in {_where(last)}"
        return
    present = present | {(s.hook, s.table) for s in steps if s.hook}
    here = slot_rank(last.hook, last.table)
    routes = [packet.route] if packet.route else [r for r in ROUTES if last.hook in ROUTES[r]]
    # ahead: what the route still holds; at the walk's own hook not an nft table of another
    # name than iptables' (its place among the others is not known)
    nat_slots = chains.nat_slots()
    ahead_by_route = {r: {slot for slot in required_slots(r, present, packet.new_connection, nat_slots)
                          if slot_rank(*slot) > here and (slot[0] != last.hook or slot[1] in TABLES)}
                      for r in routes}
    untraced = [r for r in routes if not ahead_by_route[r]]
    # what lies next on each route the packet may take (one slot when its route is known);
    # the first of them is the first of all that lies ahead
    ahead = sorted({min(slots, key=_walk_order) for slots in ahead_by_route.values() if slots}, key=_walk_order)
    following = chains.following(steps) if last.family is not None else []
    if following:  # at the hook it stopped in: what comes next, before any later hook's
        ahead, untraced = following[:1], []
    next_text = " or ".join(f"{table} {hook}" for hook, table in ahead)
    left_prerouting = last.hook == "PREROUTING" and bool(ahead) and ahead[0][0] != "PREROUTING"
    if packet.at_end and (ahead or packet.entered or not packet.route or not (_decides(last) or _cannot_drop(last))):
        packet.verdict = "unknown"
        decided = ("whose target the log does not show" if _target_unknown(last)
                   else "which let it on" if _accepts(last)
                   else "which cannot drop it (iptables' nat table)" if _cannot_drop(last)
                   else "whose policy the log does not show" if _policy_unshown(last)
                   else "before a rule or policy decided")
        packet.reason = f"the log ends after {_where(last)}, {decided}"
        if packet.entered:
            packet.reason += f" (it went on into {packet.entered})"
        elif ahead:
            packet.reason += f" (still ahead: {next_text})"
        if not packet.entered and left_prerouting and _decides(last):
            packet.reason += ": the log was cut there, or the packet was lost at the routing decision"
    elif not ahead and packet.route and _target_unknown(last):
        packet.verdict = "unknown"
        packet.reason = (f"decided by {_where(last)}, whose target the log does not show"
                         " (ACCEPT or DROP: --rules NODE=FILE with the node's iptables-save tells)")
    elif not ahead and packet.route:
        packet.verdict = "accepted"
        packet.reason = f"passed every table up to {_hook_of(last)}"
    elif last.hook == "PREROUTING" and untraced:
        packet.verdict = "unknown"
        packet.reason = (f"no trace after PREROUTING, and no traced table known after it on the {untraced[0]}"
                         " route: lost at the routing decision, or passed on through hooks without chains")
    elif left_prerouting:
        packet.verdict = "unknown"
        packet.reason = "no trace after PREROUTING: lost at the routing decision, not by a rule"
    elif not ahead:
        packet.verdict = "unknown"
        packet.reason = f"passed every table up to {_hook_of(last)}"
    elif _accepts(last) or _cannot_drop(last):
        packet.verdict = "unknown"
        passed = (f"passed {_where(last)} (read as ACCEPT, the default: a TRACE line does not show the policy)"
                  if _policy_unshown(last) else f"accepted in {_where(last)}{by_rule}" if _accepts(last)
                  else f"left {_where(last)}{by_rule} (iptables' nat table cannot drop)")
        packet.reason = f"{passed}, then no trace though {next_text} lies ahead: lost where no rule shows it"
    else:
        packet.verdict = "dropped"
        packet.reason = f"dropped in {_where(last)}{by_rule}, never reached {next_text}"


def judge_key(steps: list[Step]) -> tuple[object, ...] | None:
    """What judge(), hook_path() and sent_here() read of a kernel-log walk: each step's hook
    and table (in order) and the last step whole; None for a walk with nft steps or rule
    texts (BaseChains learns from those, rules name protocols: all of the walk counts).
    Walks of one key, judged on one node with the same tables present and nothing learned
    in between, at the same end of the log, get the same verdict and reason."""
    last = steps[-1]
    if any(s.family is not None or s.rule is not None for s in steps):
        return None
    return (tuple([(s.hook, s.table) for s in steps]), last.table, last.chain, last.kind, last.position,
            last.handle, last.verdict)


def protocol_from_rules(packet: Packet) -> str | None:
    """The protocol the rules a packet matched name (xtables-monitor prints no protocol
    for ICMP packets, but the TRACE rule that picked them says `-p icmp`)."""
    for step in packet.steps:
        if step.rule:
            words = ascii.words(step.rule)
            for protocol, names in (("ICMP", ("icmp",)), ("ICMPV6", ("ipv6-icmp", "icmpv6", "icmp6"))):
                if any(w == "-p" and n in names for w, n in zip(words, words[1:])):
                    return protocol
    return None


def join_rules(packet: Packet, rules: RuleSet | None) -> None:
    """Give each step the text of the rule it matched, when a snapshot is at hand."""
    if rules is None:
        return
    for step in packet.steps:
        if step.rule is None:
            step.rule = rules.rule_text(step)


Endpoint = tuple[str | None, int | None]


def _endpoint_pairs(packet: Packet) -> list[tuple[Endpoint, Endpoint]]:
    """(source, destination) as the packet entered and as it left; once if NAT changed nothing."""
    pairs: list[tuple[Endpoint, Endpoint]] = []
    for f in (packet.first, packet.last):
        if f is not None:
            pair = ((f.src, f.sport), (f.dst, f.dport))
            if not pairs or pairs[0] != pair:
                pairs.append(pair)
    return pairs


#: Where the ports a client picks start (Linux: 32768-60999; IANA, BSD, Windows: 49152-65535).
EPHEMERAL = 32768


class Directions:
    """Tell requests from replies: by ICMP type or TCP flags, else by who spoke first."""

    def __init__(self, memory: int = 16384):
        self.memory = memory
        self.seen: OrderedDict[tuple[str, str, frozenset[object]], tuple[object, object]] = OrderedDict()

    def classify(self, packet: Packet) -> str:
        f = packet.fields
        if f.proto == "ICMP" and f.icmp_type in (8, 0):
            direction = "request" if f.icmp_type == 8 else "reply"
        elif f.proto == "ICMP" and f.icmp_type is not None:
            direction = "error"
        elif f.proto == "ICMPV6" and f.icmp_type in (128, 129):
            direction = "request" if f.icmp_type == 128 else "reply"
        elif f.proto == "ICMPV6" and f.icmp_type is not None and f.icmp_type < 128:
            direction = "error"
        elif f.proto == "TCP" and f.tcp_flags and "SYN" in f.tcp_flags:
            direction = "reply" if "ACK" in f.tcp_flags else "request"
        else:
            direction = self._by_first_seen(packet)
        self._remember(packet, direction)
        return direction

    def _by_first_seen(self, packet: Packet) -> str:
        """By the conversation's first packet seen; the first of one is a request unless it
        goes from a well-known port to an ephemeral one (a DNS answer, 53 → 36520, whose
        query is not in the log; an NFS client's 800 → 2049 stays a request)."""
        base = (packet.node, packet.fields.proto or "")
        for a, b in _endpoint_pairs(packet):
            known = self.seen.get((*base, frozenset((a, b))))
            if known is not None:
                return "request" if known == (a, b) else "reply"
        sport, dport = packet.fields.sport, packet.fields.dport
        return "reply" if sport is not None and dport is not None and sport < 1024 and dport >= EPHEMERAL else "request"

    def _remember(self, packet: Packet, direction: str) -> None:
        base = (packet.node, packet.fields.proto or "")
        seen = self.seen
        for a, b in _endpoint_pairs(packet):
            key = (*base, frozenset((a, b)))
            seen[key] = (a, b) if direction == "request" else (b, a)
            seen.move_to_end(key)
        while len(seen) > self.memory:
            seen.popitem(last=False)
