/* chainlab.trace._engine, netfilter knowledge: included by _engine.c, in its order (uses what the parts
 * before it define). */

/* The hooks' names, in the one order every HOOKS-indexed table here follows. */
#define FOR_HOOKS(X) X("PREROUTING") X("INPUT") X("FORWARD") X("OUTPUT") X("POSTROUTING")
#define HOOK_NAME(name) name,
static const char *HOOKS[] = {FOR_HOOKS(HOOK_NAME)};
#define N_HOOKS 5
static const int HOOK_RANK[] = {0, 1, 1, 0, 2};
/* netfilter.HOOKS_AFTER as bits by hook index: PREROUTING -> INPUT, FORWARD, POSTROUTING; INPUT
   ends; FORWARD -> POSTROUTING; OUTPUT -> POSTROUTING (each hook itself included). */
static const int HOOKS_AFTER[] = {0x17, 0x02, 0x14, 0x18, 0x10};
static const char *TABLES[] = {"raw", "mangle", "nat", "filter", "security"};
#define N_TABLES 5
/* Index of each table at each hook (HOOK_TABLES in netfilter.py); -1: not there. */
static const int HOOK_TABLE_INDEX[N_HOOKS][N_TABLES] = {
    /* PREROUTING  raw mangle nat */ {0, 1, 2, -1, -1},
    /* INPUT       mangle filter security nat */ {-1, 0, 3, 1, 2},
    /* FORWARD     mangle filter security */ {-1, 0, -1, 1, 2},
    /* OUTPUT      raw mangle nat filter security */ {0, 1, 2, 3, 4},
    /* POSTROUTING mangle nat */ {-1, 0, 1, -1, -1},
};
static const int HOOK_TABLE_COUNT[] = {3, 4, 3, 5, 2};

/* netfilter.HOOK_INTERFACES: per hook, bit k set when the kernel knows the interfaces
 * k = (IN known) | (OUT known) << 1 there. */
static const int HOOK_INTERFACES[] = {1 << 1, 1 << 1, 1 << 3, 1 << 2, 1 << 2 | 1 << 3};

/* netfilter.hook_by_interfaces: the one hook at which `table` runs with the interfaces
 * `known` (bit 0: IN, bit 1: OUT) known; -1: several or none. */
static int hook_by_interfaces(int table, int known) {
    if (table < 0)
        return -1;
    int found = -1;
    for (int h = 0; h < N_HOOKS; h++)
        if (HOOK_TABLE_INDEX[h][table] >= 0 && (HOOK_INTERFACES[h] >> known & 1)) {
            if (found >= 0)
                return -1;
            found = h;
        }
    return found;
}

/* netfilter.ROUTES (local-in, forward, local-out) as hooks; -1: the route has ended. */
#define N_ROUTES 3
static const int ROUTES[N_ROUTES][3] = {{0, 1, -1}, {0, 2, 4}, {3, 4, -1}};

/* netfilter._next_hooks for one route: the first hook after `hook` at which `table` runs; -1: none. */
static int route_next_hook(const int *route, int hook, int table) {
    int i = 0;
    while (i < 3 && route[i] >= 0 && route[i] != hook)
        i++;
    for (i++; i < 3 && route[i] >= 0; i++)
        if (HOOK_TABLE_INDEX[route[i]][table] >= 0)
            return route[i];
    return -1;
}

/* netfilter.user_chain_hook: the hook of a step in a user chain of `table` (-1: not one of
 * netfilter's), the walk being in `hook`: `hook` where the table has a base chain, else the
 * next hook of a route where it has one; of several, the one the interfaces `known` fit
 * (bit 0: IN, bit 1: OUT; -1: a damaged line); `hook` when nothing tells. */
static int user_chain_hook(int hook, int table, int known) {
    if (table < 0 || HOOK_TABLE_INDEX[hook][table] >= 0)
        return hook;
    int next[N_ROUTES], n = 0;
    for (int r = 0; r < N_ROUTES; r++) {
        int later = route_next_hook(ROUTES[r], hook, table), seen = 0;
        for (int i = 0; i < n; i++)
            seen |= next[i] == later;
        if (later >= 0 && !seen)
            next[n++] = later;
    }
    if (n > 1 && known >= 0) {
        int kept = 0;
        for (int i = 0; i < n; i++)
            if (HOOK_INTERFACES[next[i]] >> known & 1)
                next[kept++] = next[i];
        n = kept;
    }
    return n == 1 ? next[0] : hook;
}

/* netfilter.re_enters: a walk going from `last_hook` back to PREROUTING (after OUTPUT or POSTROUTING). */
static int re_enters(int last_hook, int hook) { return hook == 0 && (last_hook == 3 || last_hook == 4); }

static int find_name(const char **names, int count, const char *s, size_t n) {
    for (int i = 0; i < count; i++)
        if (names[i][0] == s[0] && strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
            return i;
    return -1;
}

/* slot_rank(hook, table) as one comparable number; table -1: unknown table. */
static int slot_rank(int hook, int table) {
    int index = table >= 0 ? HOOK_TABLE_INDEX[hook][table] : -1;
    if (index < 0)
        index = HOOK_TABLE_COUNT[hook];
    return HOOK_RANK[hook] * 16 + index;
}

/* step_rank(hook, table, family): a bridge-family chain runs before the hook's IP tables. */
static int step_rank(int hook, int table, int bridge) {
    return bridge ? HOOK_RANK[hook] * 16 - 1 : slot_rank(hook, table);
}
