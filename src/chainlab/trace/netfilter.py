"""What netfilter does with an IPv4 packet: hooks, tables and their order.

Pure knowledge, no I/O. Priorities are the kernel's (NF_IP_PRI_*): at each hook the
tables run in this order; nat runs only for the first packet of a connection.
"""

from __future__ import annotations

HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
#: A hook by its nft name (`prerouting` → PREROUTING).
HOOK_BY_NFT_NAME = {hook.lower(): hook for hook in HOOKS}
TABLES = ("raw", "mangle", "nat", "filter", "security")

HOOK_TABLES: dict[str, tuple[str, ...]] = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}

ROUTES: dict[str, tuple[str, ...]] = {
    "local-in": ("PREROUTING", "INPUT"),
    "forward": ("PREROUTING", "FORWARD", "POSTROUTING"),
    "local-out": ("OUTPUT", "POSTROUTING"),
}

#: Which of a packet's interfaces the kernel knows at each hook, as a trace line's IN= and
#: OUT= show them: (in, out). POSTROUTING knows both for a forwarded packet, OUT alone for
#: a packet sent from this host.
HOOK_INTERFACES: dict[str, tuple[tuple[bool, bool], ...]] = {
    "PREROUTING": ((True, False),),
    "INPUT": ((True, False),),
    "FORWARD": ((True, True),),
    "OUTPUT": ((False, True),),
    "POSTROUTING": ((False, True), (True, True)),
}

# Rank of each hook along any route, so that steps can be checked for order.
HOOK_RANK = {"PREROUTING": 0, "OUTPUT": 0, "INPUT": 1, "FORWARD": 1, "POSTROUTING": 2}
#: The hooks a walk can go on to from each hook without coming back in (itself included):
#: the rest of each route through it. Ranks alone would let INPUT lead to FORWARD.
HOOKS_AFTER: dict[str, frozenset[str]] = {
    hook: frozenset(h for route in ROUTES.values() if hook in route for h in route[route.index(hook):]) for hook in HOOKS
}


def _rank(hook: str, table: str) -> tuple[int, int]:
    tables = HOOK_TABLES.get(hook, ())
    return HOOK_RANK.get(hook, 0), tables.index(table) if table in tables else len(tables)


_RANKS = {(hook, table): _rank(hook, table) for hook in HOOKS for table in TABLES}


def slot_rank(hook: str, table: str) -> tuple[int, int]:
    """Sort key of a (hook, table) pair along a packet's walk."""
    rank = _RANKS.get((hook, table))
    return rank if rank is not None else _rank(hook, table)


def step_rank(hook: str, table: str, family: str | None) -> tuple[int, int]:
    """Sort key of a step along a packet's walk. An nft `bridge` table's chain runs at its
    hook before br_netfilter hands the packet to the IP tables of the same hook (bridge
    filter FORWARD, then ip mangle FORWARD)."""
    if family == "bridge":
        return HOOK_RANK.get(hook, 0), -1
    return slot_rank(hook, table)


def route_of(hooks: list[str]) -> str | None:
    """The route a packet took, from the hooks it was seen in (None if undecided): a walk
    that came back in (`re_enters`) is a packet this host sent itself over `lo`."""
    if any(re_enters(before, after) for before, after in zip(hooks, hooks[1:])):
        return LOOPBACK_ROUTE
    if "FORWARD" in hooks:
        return "forward"
    if "INPUT" in hooks:
        return "local-in"
    if "OUTPUT" in hooks:
        return "local-out"
    return None


#: The interface a packet this host sends to itself goes out and comes back in on.
LOOPBACK = "lo"
#: The route of such a packet: out (local-out), then back in at PREROUTING (local-in). Not
#: one of ROUTES, each of which passes every hook once (a walk's order compares hooks on them).
LOOPBACK_ROUTE = "loopback"


def re_enters(last_hook: str | None, hook: str | None) -> bool:
    """A walk going from `last_hook` back to PREROUTING: only a packet that left this host in
    OUTPUT or POSTROUTING, and came back in, does."""
    return hook == "PREROUTING" and last_hook in ("OUTPUT", "POSTROUTING")


def can_follow(last_hook: str, hook: str) -> bool:
    """A walk in `last_hook` can go on in `hook`, going on along one route (coming back in
    at PREROUTING is `re_enters`, judged apart)."""
    return hook in HOOKS_AFTER.get(last_hook, HOOKS)


def loops_back(out_if: str | None, in_if: str | None) -> bool:
    """A packet that went out on `out_if` comes back in on `in_if` as the same packet: `lo`."""
    return out_if == LOOPBACK and in_if == LOOPBACK


Slot = tuple[str, str]


def table_slots(table: str) -> frozenset[Slot]:
    """Every (hook, table) a loaded legacy table registers."""
    return _TABLE_SLOTS.get(table, frozenset())


_TABLE_SLOTS = {t: frozenset((h, t) for h, ts in HOOK_TABLES.items() if t in ts) for t in TABLES}


def required_slots(route: str, present: set[Slot], new_connection: bool,
                   nat_slots: frozenset[Slot] | set[Slot] = frozenset()) -> list[Slot]:
    """Every (hook, table) a packet on `route` must pass, given the ones that exist.

    Legacy tables hook into all their chains once loaded; iptables-nft creates a base
    chain only when something uses it, so `present` is kept per (hook, table). An nft
    table of another name (fw4, firewalld's) comes after iptables' at its hook: its
    priority is not in the trace. A connection's later packets pass neither the nat table
    nor `nat_slots`, nft tables whose base chains at that hook are all of type nat. On the
    loopback route, what the packet must pass once back in: local-in's tables but those,
    which took it on its way out (conntrack set its NAT up in OUTPUT and POSTROUTING; nat
    PREROUTING and INPUT do not see it again).
    """
    if route == LOOPBACK_ROUTE:
        route, new_connection = "local-in", False
    others: dict[str, list[str]] = {}  # hook -> nft tables of other names there
    for hook, table in present:
        if table not in TABLES:
            others.setdefault(hook, []).append(table)
    return [
        (hook, table)
        for hook in ROUTES[route]
        for table in (*HOOK_TABLES[hook], *sorted(others.get(hook, ())))
        if (hook, table) in present and (new_connection or (table != "nat" and (hook, table) not in nat_slots))
    ]


def _one_hook(table: str, interfaces: tuple[bool, bool]) -> str | None:
    hooks = [h for h in HOOKS if table in HOOK_TABLES[h] and interfaces in HOOK_INTERFACES[h]]
    return hooks[0] if len(hooks) == 1 else None


_HOOK_BY_INTERFACES = {(table, ifs): hook for table in TABLES for ifs in ((True, False), (False, True), (True, True))
                       if (hook := _one_hook(table, ifs)) is not None}


def hook_by_interfaces(table: str, interfaces: tuple[bool, bool]) -> str | None:
    """The one hook at which `table` runs with these interfaces known (filter with IN and
    OUT: FORWARD; raw with OUT alone: OUTPUT), None when several could (mangle with IN
    alone: PREROUTING or INPUT). Gives the hook of a user chain that a trace excerpt
    starts in, before any base chain says it."""
    return _HOOK_BY_INTERFACES.get((table, interfaces))


def _next_hooks(hook: str, table: str) -> tuple[str, ...]:
    """On each route through `hook`, the first hook after it at which `table` runs."""
    found: list[str] = []
    for route in ROUTES.values():
        if hook in route:
            later = next((h for h in route[route.index(hook) + 1:] if table in HOOK_TABLES[h]), None)
            if later is not None and later not in found:
                found.append(later)
    return tuple(found)


_NEXT_HOOKS = {(hook, table): hooks for hook in HOOKS for table in TABLES
               if table not in HOOK_TABLES[hook] and (hooks := _next_hooks(hook, table))}


def user_chain_hook(hook: str, table: str, interfaces: tuple[bool, bool] | None) -> str:
    """The hook a step of a user chain of iptables' `table` runs in, the packet's walk being
    in `hook`: that one if the table has a base chain there to jump from, else the next hook
    of the route where it has one (nat after FORWARD: POSTROUTING, an excerpt that left out
    nat POSTROUTING's own line); where routes part (filter after PREROUTING: INPUT or FORWARD)
    the one whose interfaces the line shows (`interfaces`: IN and OUT known; None: a damaged
    line). `hook` itself when nothing tells."""
    hooks = _NEXT_HOOKS.get((hook, table), ())
    if len(hooks) > 1 and interfaces is not None:
        hooks = tuple(h for h in hooks if interfaces in HOOK_INTERFACES[h])
    return hooks[0] if len(hooks) == 1 else hook
