/* chainlab.trace._engine, records and packets: included by _engine.c, in its order (uses what the parts
 * before it define). */

enum { ID_IP, ID_TRACE, ID_FLOW };
static const char *IDENTITY_NAMES[] = {"ip_id", "trace_id", "flow"};
enum { FMT_KERNEL, FMT_XT, FMT_NFT };
enum { DIR_REQUEST, DIR_REPLY, DIR_ERROR };
static const char *DIRECTION_NAMES[] = {"request", "reply", "error"};
enum { MODE_JSON, MODE_TEXT, MODE_SUMMARY, MODE_DIAGRAM };

/* One trace event, as Assembler.feed sees it (model.Event + Step). */
typedef struct {
    int node;
    const char *table, *chain;
    size_t table_n, chain_n;
    int kind;
    const char *pos; /* digits without leading zeros ("" = 0); NULL: no position */
    size_t pos_n;
    Ref handle, verdict, rule; /* n -1: None */
    int family;                /* -1: None */
    const Fields *f;
    Ref trace_id; /* n -1: None */
    int base;     /* -1: no packet: line opened the chain, else bit 0 iif, bit 1 oif */
    Ref time;
    int names_known; /* table_index and chain_hook are set (kernel lines: from the header cache) */
    int table_index, chain_hook; /* TABLES and HOOKS index of table and chain, -1: other */
    int repeat; /* its fields are those of the record fed just before (same text) */
    uint64_t header_id; /* the parser thread's id of its header text (0: none; see step_head) */
    const char *json_tail; /* what its step JSON ends with after "line" (NULL: made in append_step) */
    size_t json_tail_n;
    int in_batch; /* f and its texts stay put until the parsed batch is assembled (see keep_last) */
} Rec;

/* A step's JSON in Packet.steps: at `at` its prefix, then `null`, then its suffix; the rule
 * (from the walk) goes where `null` is. Steps follow each other with ", " between them, so
 * that when every rule is null (a kernel log without --rules) Packet.steps is the steps'
 * list as it is written. */
typedef struct {
    size_t at, prefix_n, suffix_n;
    int in_tables;
    int table, family, kind; /* the step's (TABLES, FAMILIES, KINDS index; -1: other, None) */
    size_t sig_hook;         /* where its hook's byte is in Packet.sig */
    uint64_t piece_hash;     /* of its part of Packet.sig before the hook's byte (see walk_hash) */
} StepAt;

#define NULL_RULE_N 4 /* strlen("null") */

typedef struct Packet Packet;
struct Packet {
    int node, identity;
    long long seq, repaired, last_seen;
    Fields f;             /* opening line's fields, merged; its Refs are not used */
    char *in_if, *out_if; /* merged interfaces of a flow packet (NULL: None) */
    size_t in_if_n, out_if_n;
    int has_first, has_last;
    char first_src[ADDR_MAX], first_dst[ADDR_MAX], last_src[ADDR_MAX], last_dst[ADDR_MAX];
    long long first_ttl, first_sport, first_dport, last_ttl, last_sport, last_dport;
    int first_damaged, last_damaged; /* those lines' ports are not read (flows.endpoints) */
    int last_hook, last_table; /* last step's; last_hook -1: None; -2: no step yet */
    int last_bridge;           /* the last step is of an nft bridge table */
    int out_lo;                /* the last line that showed OUT= showed lo (Packet.left_on) */
    int looped;                /* it went out on lo and came back in (Packet.looped) */
    int at_end;
    char *entered; /* the base chain seen entered after the last step (NULL: None) */
    size_t entered_n;
    Buf sig;   /* the walk: what judging it depends on, step by step */
    Buf steps; /* the steps' JSON (when wanted), see StepAt */
    StepAt *at;
    size_t n_steps, cap_steps;
    int some_out_of_tables; /* a step of a table the analysis does not show */
    int json; /* every step's JSON is in `steps` */
    char **trace_ids;
    size_t *trace_id_n, n_trace_ids, cap_trace_ids;
    char *time0; /* the first step's time (NULL: None) */
    size_t time0_n;
    Packet *prev, *next;       /* open packets, least recently touched first */
    Packet *id_prev, *id_next; /* same (node, ip id) bucket, in opening order */
    size_t bucket;
    int indexed;
};

#define BUCKETS 4096
/* assemble.EXPIRE_EVERY */
#define EXPIRE_EVERY 64
/* steps a packet takes at most (assemble.MAX_STEPS) */
#define MAX_STEPS 1000
/* reader.PENDING_TRACE_IDS */
#define PENDING_TRACE_IDS 4096
/* distinct walks judged and kept (exported as WALK_CACHE) */
#define WALK_CACHE 8192
/* distinct steps whose Step objects steps_of keeps (exported as STEP_CACHE) */
#define STEP_CACHE 65536
/* analyze.Directions memory, flows.MEMORY and MAX_HOPS, summary.MAX_ROWS, diagram.MAX_WALKS */
#define DIRECTIONS_MEMORY 16384
#define FLOWS_MEMORY 20000
#define MAX_HOPS 32
#define SUMMARY_ROWS 10000
#define DIAGRAM_WALKS 500
#define ADDRESS_CACHE 4096
/* packets the text format shows in full (render.text.PACKET_LIMIT) */
#define TEXT_PACKETS 50
/* finished packets kept for reuse (see packet_release) */
#define SPARE_PACKETS 256
/* host names the parser thread gives ids (a log of more hosts: the others are looked up by name) */
#define PARSER_HOSTS 4096

typedef struct {
    PyObject *result; /* the Python walk tuple (see native.py) */
    const char *hooks_json, *verdict_json, *newconn_json;
    Py_ssize_t hooks_json_n, verdict_json_n, newconn_json_n;
    PyObject *step_rules; /* tuple of bytes: each step's "rule" JSON */
    int rules_null;       /* every one of them is null */
    const char *proto;    /* protocol from the rules, or NULL */
    int verdict, origin, walk_ok;
    long summary, diagram;
} Walk;

typedef struct {
    long long seq;
    int direction, node;
    PyObject *walk; /* result tuple */
    long long ttl, sport, dport, exit_sport, exit_dport;
    char src[ADDR_MAX], dst[ADDR_MAX], exit_src[ADDR_MAX], exit_dst[ADDR_MAX];
} Hop;

typedef struct {
    Hop *hops;
    size_t n, cap;
} Hops;

typedef struct {
    long long count, first_seq, last_seq;
    char *first_time, *last_time, *example; /* first_time/last_time NULL: None */
    size_t first_time_n, last_time_n, example_n;
} Row;

typedef struct {
    long long min_seq, count;
    PyObject *walk;
} DiagramRow;

/* What kernel lines parse to, cached (see cached_fields and cached_header); each thread has its own. */
typedef struct {
    struct HeaderSlot *headers; /* HEADER_CACHE slots (NULL until the first kernel line) */
    struct FieldSlot *fields;   /* FIELD_CACHE slots and the last text's, likewise */
    uint64_t filled;            /* header slots filled so far: the next one's id */
} Caches;

typedef struct {
    PyObject_HEAD int window;
    PyObject *calls; /* node_added, slot_added, judge, address_ok */
    int mode, expect, match, match_src, match_dst;
    char **tables; /* --tables (NULL: all) */
    size_t *table_lens, n_tables;
    int all_tables;
    char **protocols; /* --match proto= */
    size_t *protocol_lens, n_protocols;
    long long *ports, *ip_ids;
    size_t n_ports, n_ip_ids;
    Map declared; /* node \0 family \0 table \0 chain -> hook + 1 (0: a regular chain) */
    long long count, seq, unattributed, open_flows;
    long long lines, ignored, skipped, records, cut_lines, matched, repaired;
    long long identities[3];
    Packet *head, *tail; /* open packets */
    Packet *spare;       /* finished packets to reuse, linked by `next` */
    int n_spare;
    Packet *bucket_head[BUCKETS], *bucket_tail[BUCKETS];
    Map by_trace; /* node + trace id -> packet */
    /* the assembler's `_last`: node, trace id, a copy of the fields, the packet (NULL: not open) */
    int has_last, last_node;
    Fields last_fields;
    const Fields *last_f; /* &last_fields, or a batch's fields until the batch is assembled */
    Buf last_text, last_tid;
    int last_has_tid;
    Packet *last_packet;
    /* nodes, by number */
    char **node_names;
    size_t *node_lens;
    int *table_masks;
    long long *began, *slot_version;
    PyObject **node_json;
    int *node_ok, *event_order; /* event_order: rank of the node's first event (-1: none yet) */
    int n_with_events;
    int n_nodes, cap_nodes;
    Map nodes;     /* name -> number + 1 */
    Map slots;     /* node + hook + table of nft base chains seen */
    Packet **done; /* finished by the assembler, not yet judged */
    size_t n_done, cap_done;
    int failed;  /* out of memory */
    PyObject *error; /* an exception from a Python call, to raise when feed() returns */
    int line_node, from_lines, format, in_file;
    /* the line being read across chunks (at most LINE_LIMIT bytes) */
    Buf carry;
    int carrying, carry_cut;
    Buf text; /* a line made valid UTF-8 */
    /* the last line's prefix (what precedes its first header): its node and time */
    Buf prefix_text;
    int has_prefix, prefix_node;
    Ref prefix_time;
    Header *headers;
    size_t cap_headers;
    Caches caches; /* the kernel lines read here (those the parser thread leaves) */
    struct StepHead *heads; /* STEP_HEADS slots (NULL until needed), see step_head */
    int placed_last; /* the last record fed was placed in a packet */
    struct Parser *parser; /* kernel logs: parses the next chunks while one is assembled (NULL: none) */
    char *read_buf;        /* feed_from without the parser: read_size bytes */
    size_t read_size;
    int carry_ahead;       /* the chunks handed to the parser so far end inside a line */
    int host_nodes[PARSER_HOSTS]; /* node of each Parser.hosts id, -1: not looked up yet */
    long long line_no;
    LineText line_text; /* for line_no (see line_text) */
    Buf step_text;      /* a step's JSON head and end, when no cache has them (see append_step) */
    /* nft / xtables-monitor: per trace id, the last packet line's fields and the pending base chain */
    Map nft_packets, pending;
    Words words;
    Buf scratch, scratch2, verdict;
    /* finishing */
    Map walks;      /* walk key -> Walk */
    Map step_objects; /* a step's part of a walk signature -> its Step (Calls.step), for Calls.judge */
    Buf key;        /* a walk key being built */
    Map directions; /* node + proto + endpoints -> which came first */
    Map flows;      /* proto + ip id + icmp seq -> Hops, by last use */
    Map rows;       /* summary: node + direction + summary id -> Row */
    long long other, other_verdicts[3]; /* packets beyond the summary's rows, by verdict (VERDICTS) */
    Map diagram;    /* node + direction + diagram id -> DiagramRow */
    Map addresses;  /* which + address -> ok */
    Buf out;        /* JSON written, not yet handed over */
    /* write_to(): a packet's steps list goes out from the packet's own buffer (writev), not
     * copied into `out` first (the copy was ~5 % of the assembling thread): pieces[i]'s
     * buffer goes out after out[:pieces[i].at]. Their buffers then serve packets again. */
    struct OutPiece { size_t at; Buf steps; } *pieces;
    size_t n_pieces, cap_pieces;
    Buf *free_steps; /* buffers written out, for packets without one (at most SPARE_PACKETS) */
    size_t n_free_steps;
    int written;    /* packets written to `out` so far */
    int out_fd;     /* write_to(): `out` goes to this descriptor, not back to Python (0: none, else fd + 1) */
    int write_errno; /* a write to out_fd failed (then every later call raises WriteError) */
    PyObject *items; /* list of text packets and expect packets, not yet handed over */
    long long kept;  /* text packets handed over */
} Engine;

static size_t bucket_of(int node, long long ip_id) { return ((size_t)node * 7919u + (size_t)ip_id) % BUCKETS; }

/* What a packet owns besides the buffers a spare one keeps (see packet_release). */
static void packet_free_parts(Packet *p) {
    free(p->in_if);
    free(p->out_if);
    free(p->entered);
    free(p->time0);
    for (size_t i = 0; i < p->n_trace_ids; i++)
        free(p->trace_ids[i]);
    free(p->trace_ids);
    free(p->trace_id_n);
}

static void packet_free(Packet *p) {
    packet_free_parts(p);
    free(p->steps.p);
    free(p->sig.p);
    free(p->at);
    free(p);
}

/* A finished packet becomes a spare, up to SPARE_PACKETS of them: the next packet opened
 * takes it with its step buffers (a packet's signature and JSON grow to kilobytes; taking
 * them from malloc and giving them back, packet after packet, cost more than assembling). */
static void packet_release(Engine *e, Packet *p) {
    if (e->n_spare >= SPARE_PACKETS) {
        packet_free(p);
        return;
    }
    packet_free_parts(p);
    Buf sig = p->sig, steps = p->steps;
    StepAt *at = p->at;
    size_t cap_steps = p->cap_steps;
    memset(p, 0, sizeof *p); /* as calloc gives it, but for the buffers, emptied */
    p->sig = (Buf){sig.p, 0, sig.cap};
    p->steps = (Buf){steps.p, 0, steps.cap};
    p->at = at;
    p->cap_steps = cap_steps;
    p->next = e->spare;
    e->spare = p;
    e->n_spare++;
}

/* A zeroed packet, but for its buffers: a spare one or a new one; NULL: no memory. */
static Packet *packet_new(Engine *e) {
    Packet *p = e->spare;
    if (p) {
        e->spare = p->next;
        e->n_spare--;
        p->next = NULL;
    } else if (!(p = calloc(1, sizeof(Packet)))) {
        return NULL;
    }
    if (!p->steps.p && e->n_free_steps) { /* its own went out in place (see Engine.pieces) */
        p->steps = e->free_steps[--e->n_free_steps];
        p->steps.n = 0;
    }
    return p;
}

static void lru_unlink(Engine *e, Packet *p) {
    if (p->prev)
        p->prev->next = p->next;
    else
        e->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        e->tail = p->prev;
    p->prev = p->next = NULL;
}

static void lru_append(Engine *e, Packet *p) {
    p->prev = e->tail;
    p->next = NULL;
    if (e->tail)
        e->tail->next = p;
    else
        e->head = p;
    e->tail = p;
}

static int trace_key(Buf *b, int node, const char *tid, size_t n) {
    b->n = 0;
    return put(b, (const char *)&node, sizeof node) || put(b, tid, n);
}

/* Assembler._forget + the hand-over: the packet leaves the open structures. */
static void finish(Engine *e, Packet *p) {
    lru_unlink(e, p);
    if (p->identity == ID_FLOW)
        e->open_flows--;
    if (p->indexed) {
        size_t b = p->bucket;
        if (p->id_prev)
            p->id_prev->id_next = p->id_next;
        else
            e->bucket_head[b] = p->id_next;
        if (p->id_next)
            p->id_next->id_prev = p->id_prev;
        else
            e->bucket_tail[b] = p->id_prev;
    }
    for (size_t i = 0; i < p->n_trace_ids; i++) {
        if (trace_key(&e->scratch2, p->node, p->trace_ids[i], p->trace_id_n[i])) {
            e->failed = 1;
            continue;
        }
        Entry *t = map_get(&e->by_trace, e->scratch2.p, e->scratch2.n);
        if (t && t->value == p)
            map_remove(&e->by_trace, t);
    }
    if (e->last_packet == p)
        e->last_packet = NULL;
    if (e->n_done == e->cap_done) {
        size_t cap = e->cap_done ? e->cap_done * 2 : 256;
        Packet **done = realloc(e->done, cap * sizeof *done);
        if (!done) {
            e->failed = 1;
            packet_free(p);
            return;
        }
        e->done = done;
        e->cap_done = cap;
    }
    e->done[e->n_done++] = p;
}

static void expire(Engine *e) {
    while (e->head && e->count - e->head->last_seen >= e->window)
        finish(e, e->head);
}

static int agree(long long a, long long b) { return a == NONE || b == NONE || a == b; }

/* assemble._v6: 1 IPv6, 0 IPv4, -1 no address. */
static int v6_of(const char *src, const char *dst) {
    const char *a = src[0] ? src : dst;
    return a[0] ? strchr(a, ':') != NULL : -1;
}

static int text_agrees(const char *a, size_t an, Ref b) {
    return a == NULL || b.n < 0 || ((size_t)b.n == an && memcmp(a, b.s, an) == 0);
}

/* assemble._same_flow */
static int same_flow(const Packet *packet, const Fields *f) {
    const Fields *p = &packet->f;
    if (packet->has_last) {
        if (f->src[0] && strcmp(f->src, packet->last_src) != 0)
            return 0;
        if (f->dst[0] && strcmp(f->dst, packet->last_dst) != 0 && strcmp(packet->last_dst, packet->first_dst) != 0)
            return 0;
    }
    return text_agrees(packet->in_if, packet->in_if_n, f->in_if) &&
           text_agrees(packet->out_if, packet->out_if_n, f->out_if) && agree(p->flow_label, f->flow_label) &&
           agree(p->tcp_seq, f->tcp_seq) && agree(p->icmp_seq, f->icmp_seq);
}

/* assemble.compatible */
static int compatible(const Packet *packet, const Fields *f) {
    const Fields *p = &packet->f;
    if (!agree(p->ip_id, f->ip_id) || !agree(p->icmp_type, f->icmp_type))
        return 0;
    if (p->proto[0] && f->proto[0] && strcmp(p->proto, f->proto) != 0)
        return 0;
    if (p->flags && f->flags && p->flags != f->flags)
        return 0;
    if (p->icmp_id != NONE && f->icmp_id != NONE && p->icmp_seq != NONE && f->icmp_seq != NONE &&
        p->icmp_id != f->icmp_id && p->icmp_seq != f->icmp_seq)
        return 0;
    if (p->sport != NONE && p->dport != NONE && f->sport != NONE && f->dport != NONE && p->sport != f->sport &&
        p->dport != f->dport)
        return 0;
    int line_v6 = v6_of(f->src, f->dst);
    int packet_v6 = packet->has_last ? v6_of(packet->last_src, packet->last_dst) : -1;
    if (packet_v6 < 0 && p->ip_id != NONE)
        packet_v6 = 0;
    if (line_v6 >= 0 && packet_v6 >= 0 && line_v6 != packet_v6)
        return 0;
    return p->ip_id != NONE || same_flow(packet, f);
}

/* hooks.hook_by_name: `HOOK`, `hook`, `prefix_HOOK`, `prefix_hook` (prefix alphanumeric),
 * `prefix-hook` (prefix lowercase alphanumeric); -1 if none. */
static int hook_by_name(const char *s, size_t n) {
    static const char *LOWER[] = {"prerouting", "input", "forward", "output", "postrouting"};
    int hook = find_in(HOOKS, N_HOOKS, s, n);
    if (hook < 0)
        hook = find_in(LOWER, N_HOOKS, s, n);
    if (hook >= 0)
        return hook;
    size_t u = 0;
    while (u < n && s[u] != '_' && s[u] != '-')
        u++;
    if (u == 0 || u >= n)
        return -1;
    for (size_t i = 0; i < u; i++) {
        char c = s[i];
        int lower_alnum = (c >= 'a' && c <= 'z') || is_digit(c);
        if (!(lower_alnum || (s[u] == '_' && c >= 'A' && c <= 'Z')))
            return -1;
    }
    const char *rest = s + u + 1;
    size_t rest_n = n - u - 1;
    hook = find_in(LOWER, N_HOOKS, rest, rest_n);
    if (hook < 0 && s[u] == '_')
        hook = find_in(HOOKS, N_HOOKS, rest, rest_n);
    return hook;
}

/* hooks.inferred_hook */
static int inferred_hook(int base, int current) {
    static const int CANDIDATES[4][2] = {{-1, -1}, {0, 1}, {3, 4}, {2, 4}}; /* by base: iif=1, oif=2 */
    if (base <= 0)
        return -1;
    const int *c = CANDIDATES[base];
    if (current < 0)
        return c[0];
    for (int i = 0; i < 2 && c[i] >= 0; i++)
        if (HOOKS_AFTER[current] >> c[i] & 1 || re_enters(current, c[i]))
            return c[i];
    return c[1] >= 0 ? c[1] : c[0];
}

/* hooks.resolver: the hook of the record's chain if it is a base chain, else -1. */
static int resolve_hook(Engine *e, const Rec *r, int current) {
    if (r->family < 0)
        return find_name(HOOKS, N_HOOKS, r->chain, r->chain_n);
    if (e->declared.count) {
        Buf *k = &e->scratch2;
        const char *family = FAMILIES[r->family];
        k->n = 0;
        if (put(k, e->node_names[r->node], e->node_lens[r->node]) || put(k, "", 1) ||
            put(k, family, strlen(family)) || put(k, "", 1) || put(k, r->table, r->table_n) || put(k, "", 1) ||
            put(k, r->chain, r->chain_n)) {
            e->failed = 1;
        } else {
            Entry *d = map_get(&e->declared, k->p, k->n);
            if (d)
                return (int)d->number - 1;
        }
    }
    int named = hook_by_name(r->chain, r->chain_n);
    if (named >= 0)
        return named;
    return r->base >= 0 ? inferred_hook(r->base, current) : -1;
}

/* The packet has the trace id `tid` (n >= 0) already. */
static int has_trace_id(const Packet *p, Ref tid) {
    for (size_t i = 0; tid.n >= 0 && i < p->n_trace_ids; i++)
        if (p->trace_id_n[i] == (size_t)tid.n && memcmp(p->trace_ids[i], tid.s, (size_t)tid.n) == 0)
            return 1;
    return 0;
}

/* Assembler._next_hook: may the record come next in `p`'s walk, and in which hook (-1: None). */
static int next_hook(Engine *e, const Packet *p, const Rec *r, int table, int *hook) {
    if (p->n_steps >= MAX_STEPS) {
        *hook = -1;
        return 0;
    }
    int current = p->last_hook >= 0 ? p->last_hook : -1;
    int base = r->family >= 0 || r->base >= 0 ? resolve_hook(e, r, current)
               : r->names_known                ? r->chain_hook
                                               : find_name(HOOKS, N_HOOKS, r->chain, r->chain_n);
    int known = (r->f->in_if.n > 0) | (r->f->out_if.n > 0) << 1;
    if (base < 0 && r->family < 0 && r->base < 0 && p->last_hook < 0) /* a walk that starts in a user chain */
        base = r->f->damaged ? -1 : hook_by_interfaces(table, known);
    if (p->last_hook < 0) { /* no step yet, or the last one in no hook */
        *hook = base;
        return 1;
    }
    *hook = base >= 0       ? base
            : r->family < 0 ? user_chain_hook(p->last_hook, table, r->f->damaged ? -1 : known)
                            : p->last_hook; /* _hook_of_regular_chain */
    if (re_enters(p->last_hook, *hook))
        return !p->looped && p->out_lo && is_loopback(r->f->in_if);
    if (*hook >= 0 && !(HOOKS_AFTER[p->last_hook] >> *hook & 1)) /* netfilter.can_follow */
        return 0;
    if (*hook == p->last_hook && r->family >= 0 && r->family != FAMILY_BRIDGE && !p->last_bridge &&
        (table < 0 || HOOK_TABLE_INDEX[*hook][table] < 0 || p->last_table < 0 ||
         HOOK_TABLE_INDEX[*hook][p->last_table] < 0) &&
        has_trace_id(p, r->trace_id)) /* a table with no place among the hook's: any order (_next_hook) */
        return 1;
    return step_rank(*hook, table, r->family == FAMILY_BRIDGE) >= step_rank(p->last_hook, p->last_table, p->last_bridge);
}

static int copy_text(char **into, size_t *into_n, Ref from) {
    if (*into || from.n < 0)
        return 0;
    *into = malloc((size_t)from.n + 1);
    if (!*into)
        return -1;
    memcpy(*into, from.s, (size_t)from.n);
    *into_n = (size_t)from.n;
    return 0;
}

/* assemble._merge */
static int merge(Packet *packet, const Fields *f) {
    Fields *into = &packet->f;
    if (into->ip_id == NONE)
        into->ip_id = f->ip_id;
    if (!into->proto[0])
        memcpy(into->proto, f->proto, sizeof into->proto);
    if (into->icmp_type == NONE)
        into->icmp_type = f->icmp_type;
    if (into->icmp_id == NONE)
        into->icmp_id = f->icmp_id;
    if (into->icmp_seq == NONE)
        into->icmp_seq = f->icmp_seq;
    if (into->sport == NONE)
        into->sport = f->sport;
    if (into->dport == NONE)
        into->dport = f->dport;
    if (!into->flags)
        into->flags = f->flags;
    if (into->flow_label == NONE)
        into->flow_label = f->flow_label;
    if (into->tcp_seq == NONE)
        into->tcp_seq = f->tcp_seq;
    if (f->out_if.n >= 0) /* an nft `oif ""` is known, as "" */
        packet->out_lo = is_loopback(f->out_if);
    if (packet->f.ip_id == NONE) /* only a packet without IP id compares interfaces */
        return copy_text(&packet->in_if, &packet->in_if_n, f->in_if) ||
               copy_text(&packet->out_if, &packet->out_if_n, f->out_if);
    return 0;
}

static int put_mark(Buf *b, Ref mark) {
    if (mark.n == 0)
        return PUTL(b, "\"0x0\"");
    if (buf_grow(b, (size_t)mark.n + 4))
        return -1;
    char *o = b->p + b->n;
    memcpy(o, "\"0x", 3);
    for (Py_ssize_t i = 0; i < mark.n; i++) {
        char c = mark.s[i];
        o[3 + i] = (c >= 'A' && c <= 'F') ? (char)(c + 32) : c;
    }
    o[3 + mark.n] = '"';
    b->n += (size_t)mark.n + 4;
    return 0;
}

/* A signature field: 4-byte length (0xffffffff: None), then the bytes. */
static int sig_str(Buf *g, const char *s, Py_ssize_t n) {
    uint32_t len = n < 0 ? 0xffffffffu : (uint32_t)n;
    return put(g, (const char *)&len, 4) || (n > 0 && put(g, s, (size_t)n));
}

static int sig_byte(Buf *g, int v) {
    char c = (char)(unsigned char)v;
    return put(g, &c, 1);
}

/* ascii.upper_keyword: the first word upper case, the rest as it is (`jump ACCEPT-fw`). */
static const char *upper_keyword(Buf *b, Ref r, Ref *out) {
    b->n = 0;
    if (r.n < 0) {
        *out = r;
        return "";
    }
    if (buf_grow(b, (size_t)r.n + 1))
        return NULL;
    int word = 1;
    for (Py_ssize_t i = 0; i < r.n; i++) {
        word &= !is_space(r.s[i]);
        b->p[i] = word && r.s[i] >= 'a' && r.s[i] <= 'z' ? (char)(r.s[i] - 32) : r.s[i];
    }
    b->n = (size_t)r.n;
    *out = (Ref){b->p, r.n};
    return b->p;
}

static int table_in_tables(Engine *e, const char *t, size_t n) {
    if (e->all_tables)
        return 1;
    for (size_t i = 0; i < e->n_tables; i++)
        if (e->table_lens[i] == n && memcmp(e->tables[i], t, n) == 0)
            return 1;
    return 0;
}

/* What a step's JSON and signature start with, by header (table, chain, kind, position), for
 * the headers in the parser thread's header cache (one slot each: see step_head): the
 * header's text is then not read again here. */
#define STEP_HEADS 4096
#define STEP_HEAD_MAX 192
#define NONES_N 12 /* three None fields of a walk signature (see sig_str) */
struct StepHead {
    uint64_t id, sig_hash; /* sig_hash: hash_bytes(sig) */
    int in_tables;
    size_t json_n, sig_n;
    char json[STEP_HEAD_MAX]; /* `{"table": ..., "rule": ` */
    char sig[STEP_HEAD_MAX + NONES_N]; /* table, chain, kind, position; then handle, verdict
                                          * and rule as None (a kernel step's, see append_step) */
};

static int put_step_json_head(Buf *b, const Rec *r) {
    int err = PUTL(b, "{\"table\": ") || put_jstr(b, r->table, r->table_n) || PUTL(b, ", \"chain\": ") ||
              put_jstr(b, r->chain, r->chain_n) || PUTL(b, ", \"kind\": \"") || put(b, KINDS[r->kind], KIND_LEN[r->kind]) ||
              PUTL(b, "\", \"position\": ");
    if (r->pos)
        err = err || (r->pos_n ? put(b, r->pos, r->pos_n) : PUTL(b, "0"));
    else
        err = err || PUTL(b, "null");
    return err || PUTL(b, ", \"rule\": ");
}

static int put_step_sig_head(Buf *g, const Rec *r) {
    return sig_str(g, r->table, (Py_ssize_t)r->table_n) || sig_str(g, r->chain, (Py_ssize_t)r->chain_n) ||
           sig_byte(g, r->kind) ||
           (r->pos ? sig_str(g, r->pos_n ? r->pos : "0", r->pos_n ? (Py_ssize_t)r->pos_n : 1) : sig_str(g, NULL, -1));
}

/* The record's StepHead (made now if not cached), or NULL: none (no id, too long, no memory).
 * Its slot is its header's slot in the parser's cache (the id's low bits): a head stays as
 * long as its header does, however long ago that was filled. */
static const struct StepHead *step_head(Engine *e, const Rec *r) {
    if (!r->header_id || (!e->heads && !(e->heads = calloc(STEP_HEADS, sizeof *e->heads))))
        return NULL;
    struct StepHead *h = &e->heads[r->header_id & (STEP_HEADS - 1)];
    if (h->id == r->header_id)
        return h;
    Buf b = {0}, g = {0};
    h->id = 0;
    if (!put_step_json_head(&b, r) && !put_step_sig_head(&g, r) && b.n <= STEP_HEAD_MAX && g.n <= STEP_HEAD_MAX) {
        memcpy(h->json, b.p, b.n);
        memcpy(h->sig, g.p, g.n);
        memset(h->sig + g.n, 0xff, NONES_N);
        h->json_n = b.n;
        h->sig_n = g.n;
        h->sig_hash = hash_bytes(g.p, g.n);
        h->in_tables = table_in_tables(e, r->table, r->table_n);
        h->id = r->header_id;
    }
    free(b.p);
    free(g.p);
    return h->id ? h : NULL;
}

/* A step's JSON after its `"line": N`: handle, verdict, mark (iptables steps: nft ones have
 * none), time, family (nft steps), the closing brace. family -1: None. */
static int put_step_end(Buf *b, Ref handle, Ref verdict, Ref mark, Ref time, int family) {
    int err = 0;
    if (handle.n >= 0)
        err |= PUTL(b, ", \"handle\": ") || put_jstr(b, handle.s, (size_t)handle.n);
    if (verdict.n >= 0)
        err |= PUTL(b, ", \"verdict\": ") || put_jstr(b, verdict.s, (size_t)verdict.n);
    if (family < 0 && mark.n >= 0)
        err |= PUTL(b, ", \"mark\": ") || put_mark(b, mark);
    if (time.n >= 0)
        err |= PUTL(b, ", \"time\": ") || put_jstr(b, time.s, (size_t)time.n);
    if (family >= 0)
        err |= PUTL(b, ", \"family\": \"") || puts_(b, FAMILIES[family]) || PUTL(b, "\"");
    return err || PUTL(b, "}");
}

/* A step's JSON from its rule (null until the rules are joined) to its line number, by hook
 * + 1 (HOOKS' order; 0: none): one piece a step. */
#define TEXT_N(text) {text, sizeof(text) - 1}
static const struct {
    const char *s;
    size_t n;
} STEP_MIDDLES[N_HOOKS + 1] = {
#define STEP_MIDDLE(name) TEXT_N("null, \"hook\": \"" name "\", \"line\": "),
    TEXT_N("null, \"hook\": null, \"line\": "), FOR_HOOKS(STEP_MIDDLE)
#undef STEP_MIDDLE
};

/* assemble._returned_into: the packet's last steps, all of `table` and in no hook, the last
 * one a `return`, were called from `table`'s base chain in `hook` (the step coming next):
 * they take that hook, in the walk signature and in their JSON. */
static int returned_into(Packet *p, int table, int hook) {
    size_t first = p->n_steps;
    while (first && p->at[first - 1].table == table && p->at[first - 1].family < 0)
        first--;
    for (size_t i = first; i < p->n_steps; i++)
        p->sig.p[p->at[i].sig_hook] = (char)hook;
    if (!p->json || first == p->n_steps)
        return 0;
    Buf *b = &p->steps;
    size_t from = p->at[first].at, old_n = b->n - from;
    char *old = malloc(old_n);
    if (!old)
        return -1;
    memcpy(old, b->p + from, old_n);
    b->n = from;
    /* a suffix starts with STEP_MIDDLES[0] after its "null": `, "hook": null, "line": ` */
    size_t skip = STEP_MIDDLES[0].n - NULL_RULE_N, middle_n = STEP_MIDDLES[hook + 1].n - NULL_RULE_N;
    int err = 0;
    for (size_t i = first; i < p->n_steps; i++) {
        StepAt *at = &p->at[i];
        const char *step = old + (at->at - from);
        if (i > first)
            err |= PUTL(b, ", ");
        at->at = b->n;
        err |= put(b, step, at->prefix_n + NULL_RULE_N) || put(b, STEP_MIDDLES[hook + 1].s + NULL_RULE_N, middle_n) ||
               put(b, step + at->prefix_n + NULL_RULE_N + skip, at->suffix_n - skip);
        at->suffix_n += middle_n - skip;
    }
    free(old);
    return err;
}

/* Assembler._append: the step joins the packet (its JSON pieces, if wanted, and the walk signature). */
static void append_step(Engine *e, Packet *p, const Rec *r, int hook, int table) {
    int err = 0;
    const Fields *f = r->f;
    if (hook >= 0 && r->family < 0 && table >= 0 && p->last_hook == -1 && p->n_steps &&
        p->at[p->n_steps - 1].kind == 1 /* return */ && p->at[p->n_steps - 1].table == table &&
        (r->names_known ? r->chain_hook : find_name(HOOKS, N_HOOKS, r->chain, r->chain_n)) >= 0)
        err |= returned_into(p, table, hook);
    if (p->n_steps == p->cap_steps) {
        size_t cap = p->cap_steps ? p->cap_steps * 2 : 16;
        StepAt *at = realloc(p->at, cap * sizeof *at);
        if (!at) {
            e->failed = 1;
            return;
        }
        p->at = at;
        p->cap_steps = cap;
    }
    if (p->n_steps == 0 && r->time.n >= 0) {
        p->time0 = malloc((size_t)r->time.n + 1);
        if (p->time0) {
            memcpy(p->time0, r->time.s, (size_t)r->time.n);
            p->time0_n = (size_t)r->time.n;
        } else {
            err = 1;
        }
    }
    int want_json = e->mode == MODE_JSON || (e->mode == MODE_TEXT && e->kept < TEXT_PACKETS);
    if (!want_json)
        p->json = 0;
    const struct StepHead *head = step_head(e, r);
    if (p->json) {
        /* the step's JSON: its head and end as the caches hold them (a fast line's, most
         * lines) or written now into step_text, then every piece copied in one reservation
         * (a put per piece cost ~3 % of a json run's CPU) */
        Buf *t = &e->step_text;
        t->n = 0;
        size_t head_n = head ? head->json_n : 0, tail_at = 0, tail_n = r->json_tail_n;
        if (!head) {
            err |= put_step_json_head(t, r);
            head_n = tail_at = t->n;
        }
        if (!r->json_tail) { /* the parser thread writes a fast line's */
            err |= put_step_end(t, r->handle, r->verdict, f->mark, r->time, r->family);
            tail_n = t->n - tail_at;
        }
        const char *head_json = head ? head->json : t->p, *tail = r->json_tail ? r->json_tail : t->p + tail_at;
        int middle = hook >= 0 ? hook + 1 : 0;
        size_t middle_n = STEP_MIDDLES[middle].n, line_n = line_text(&e->line_text, e->line_no);
        Buf *b = &p->steps;
        if (err || line_n > sizeof e->line_text.text || buf_grow(b, 2 + head_n + middle_n + line_n + tail_n)) {
            err = 1;
        } else {
            StepAt *at = &p->at[p->n_steps];
            char *d = b->p + b->n;
            if (p->n_steps) {
                memcpy(d, ", ", 2);
                d += 2;
            }
            at->at = (size_t)(d - b->p);
            at->in_tables = head ? head->in_tables : table_in_tables(e, r->table, r->table_n);
            at->prefix_n = head_n;
            at->suffix_n = middle_n - NULL_RULE_N + line_n + tail_n; /* after the rule's "null" */
            p->some_out_of_tables |= !at->in_tables;
            copy_bytes(d, head_json, head_n);
            d += head_n;
            copy_bytes(d, STEP_MIDDLES[middle].s, middle_n);
            d += middle_n;
            copy_bytes(d, e->line_text.text + e->line_text.start, line_n);
            d += line_n;
            copy_bytes(d, tail, tail_n);
            b->n = (size_t)(d + tail_n - b->p);
        }
    }
    StepAt *at = &p->at[p->n_steps++];
    at->table = table;
    at->family = r->family;
    at->kind = r->kind;
    Buf *g = &p->sig;
    int nones = r->handle.n < 0 && r->verdict.n < 0 && r->rule.n < 0; /* a kernel log's steps */
    if (head && nones) { /* the head's piece and the three Nones in one copy (6 puts: ~2 % of a json run) */
        size_t n = head->sig_n + NONES_N;
        if (buf_grow(g, n + 2)) {
            err = 1;
        } else {
            copy_bytes(g->p + g->n, head->sig, n);
            g->n += n;
            at->sig_hook = g->n;
            g->p[g->n++] = (char)(hook >= 0 ? hook : 255);
            g->p[g->n++] = (char)(r->family >= 0 ? r->family : 255);
            at->piece_hash = hash_mix(head->sig_hash, 0);
        }
    } else { /* no head cached (only a kernel line the parser read has one), or nft fields */
        size_t piece = g->n;
        err |= put_step_sig_head(g, r);
        size_t extras = g->n;
        err |= sig_str(g, r->handle.s, r->handle.n);
        err |= sig_str(g, r->verdict.s, r->verdict.n);
        err |= sig_str(g, r->rule.s, r->rule.n);
        at->sig_hook = g->n;
        if (!err) /* handle, verdict and rule: None in a kernel log's steps (any constant serves) */
            at->piece_hash = hash_mix(hash_bytes(g->p + piece, extras - piece),
                                      nones ? 0 : hash_bytes(g->p + extras, g->n - extras));
        err |= sig_byte(g, hook >= 0 ? hook : 255);
        err |= sig_byte(g, r->family >= 0 ? r->family : 255);
    }
    if (err)
        e->failed = 1;
    p->looped |= re_enters(p->last_hook, hook);
    p->last_hook = hook;
    p->last_table = table;
    p->last_bridge = r->family == FAMILY_BRIDGE;
    p->at_end = 0;
    free(p->entered);
    p->entered = NULL;
    if (f->src[0] && f->dst[0]) {
        if (!p->has_first) {
            p->has_first = 1;
            memcpy(p->first_src, f->src, ADDR_MAX);
            memcpy(p->first_dst, f->dst, ADDR_MAX);
            p->first_ttl = f->ttl;
            p->first_sport = f->sport;
            p->first_dport = f->dport;
            p->first_damaged = f->damaged;
        }
        p->has_last = 1;
        memcpy(p->last_src, f->src, ADDR_MAX);
        memcpy(p->last_dst, f->dst, ADDR_MAX);
        p->last_ttl = f->ttl;
        p->last_sport = f->sport;
        p->last_dport = f->dport;
        p->last_damaged = f->damaged;
    }
    p->last_seen = e->count;
    lru_unlink(e, p);
    lru_append(e, p);
}

/* Assembler._last (the fields, node and trace id of the last record placed): its fields, and
 * the texts they point to, copied into the engine. */
static void own_last(Engine *e) {
    if (!e->has_last || e->last_f == &e->last_fields)
        return;
    const Fields *f = e->last_f;
    e->last_fields = *f;
    e->last_f = &e->last_fields;
    Buf *t = &e->last_text;
    t->n = 0;
    if (buf_grow(t, (size_t)(f->in_if.n > 0 ? f->in_if.n : 0) + (size_t)(f->out_if.n > 0 ? f->out_if.n : 0) +
                        (size_t)(f->mark.n > 0 ? f->mark.n : 0) + 1)) {
        e->failed = 1;
        e->has_last = 0;
        return;
    }
    Ref *refs[] = {&e->last_fields.in_if, &e->last_fields.out_if, &e->last_fields.mark};
    for (int i = 0; i < 3; i++) {
        if (refs[i]->n > 0) {
            memcpy(t->p + t->n, refs[i]->s, (size_t)refs[i]->n);
            refs[i]->s = t->p + t->n;
            t->n += (size_t)refs[i]->n;
        }
    }
}

/* Keep the fields of the record placed last. A fast line's fields stay in its batch until the
 * batch is assembled, so they are only pointed at, and copied (own_last) when the batch ends:
 * copying every record's fields cost ~4 % of the assembling thread. */
static void keep_last(Engine *e, const Rec *r, Packet *p) {
    e->has_last = 1;
    e->last_node = r->node;
    e->last_packet = p;
    e->last_has_tid = r->trace_id.n >= 0;
    e->last_tid.n = 0;
    if (e->last_has_tid && put(&e->last_tid, r->trace_id.s, (size_t)r->trace_id.n)) {
        e->failed = 1;
        e->has_last = 0;
        return;
    }
    e->last_f = r->f;
    if (!r->in_batch)
        own_last(e);
}

static int same_trace_id(Engine *e, const Rec *r) {
    if (r->trace_id.n < 0)
        return !e->last_has_tid;
    return e->last_has_tid && e->last_tid.n == (size_t)r->trace_id.n &&
           memcmp(e->last_tid.p, r->trace_id.s, (size_t)r->trace_id.n) == 0;
}

/* Into the (node, ip id) bucket of its IP id. */
static void index_packet(Engine *e, Packet *p) {
    size_t b = p->bucket = bucket_of(p->node, p->f.ip_id);
    p->indexed = 1;
    p->id_next = NULL;
    p->id_prev = e->bucket_tail[b];
    if (e->bucket_tail[b])
        e->bucket_tail[b]->id_next = p;
    else
        e->bucket_head[b] = p;
    e->bucket_tail[b] = p;
}

/* Assembler._open */
static Packet *open_packet(Engine *e, const Rec *r) {
    const Fields *f = r->f;
    Packet *p = packet_new(e);
    if (!p) {
        e->failed = 1;
        return NULL;
    }
    p->node = r->node;
    p->seq = ++e->seq;
    p->identity = r->trace_id.n >= 0 ? ID_TRACE : f->ip_id != NONE ? ID_IP : ID_FLOW;
    p->f = *f;
    p->f.damaged = 0;
    p->first_ttl = p->first_sport = p->first_dport = p->last_ttl = p->last_sport = p->last_dport = NONE;
    p->last_hook = -2;
    p->json = 1;
    if (f->damaged)
        p->repaired++;
    e->began[r->node] = e->count;
    lru_append(e, p);
    if (f->ip_id != NONE)
        index_packet(e, p);
    else if (p->identity == ID_FLOW)
        e->open_flows++;
    return p;
}

/* Assembler._find */
static Packet *find(Engine *e, const Rec *r, int table, int *hook) {
    const Fields *f = r->f;
    int node = r->node;
    if (r->trace_id.n >= 0) {
        if (trace_key(&e->scratch2, node, r->trace_id.s, (size_t)r->trace_id.n)) {
            e->failed = 1;
            return NULL;
        }
        Entry *t = map_get(&e->by_trace, e->scratch2.p, e->scratch2.n);
        if (t && compatible(t->value, f) && next_hook(e, t->value, r, table, hook))
            return t->value;
        if (f->ip_id == NONE)
            return NULL;
    }
    if (f->ip_id != NONE) {
        for (Packet *p = e->bucket_tail[bucket_of(node, f->ip_id)]; p; p = p->id_prev)
            if (p->node == node && p->f.ip_id == f->ip_id && compatible(p, f) && next_hook(e, p, r, table, hook))
                return p;
        if (e->open_flows) /* an IPv4 flow packet: a damaged start this line's IP id may adopt */
            for (Packet *p = e->tail; p; p = p->prev)
                if (p->identity == ID_FLOW && p->node == node && compatible(p, f) && next_hook(e, p, r, table, hook))
                    return p;
        return NULL;
    }
    for (Packet *p = e->tail; p; p = p->prev)
        if (p->node == node && compatible(p, f) && next_hook(e, p, r, table, hook))
            return p;
    return NULL;
}

static int add_trace_id(Packet *p, Ref tid) {
    if (has_trace_id(p, tid))
        return 0;
    if (p->n_trace_ids == p->cap_trace_ids) {
        size_t cap = p->cap_trace_ids ? p->cap_trace_ids * 2 : 2;
        char **ids = realloc(p->trace_ids, cap * sizeof *ids);
        if (ids)
            p->trace_ids = ids;
        size_t *lens = realloc(p->trace_id_n, cap * sizeof *lens);
        if (lens)
            p->trace_id_n = lens;
        if (!ids || !lens)
            return -1;
        p->cap_trace_ids = cap;
    }
    char *copy = malloc((size_t)tid.n + 1);
    if (!copy)
        return -1;
    memcpy(copy, tid.s, (size_t)tid.n);
    p->trace_ids[p->n_trace_ids] = copy;
    p->trace_id_n[p->n_trace_ids++] = (size_t)tid.n;
    return 0;
}

static void process_done(Engine *e);
static void slot_seen(Engine *e, int node, int hook, const char *table, size_t table_n);
static void table_seen(Engine *e, int node, int table);

/* Analyzer.packets + Assembler.feed for one record. */
static void feed_record(Engine *e, const Rec *r) {
    const Fields *f = r->f;
    int table = r->names_known ? r->table_index : find_name(TABLES, N_TABLES, r->table, r->table_n);
    int legacy = r->trace_id.n < 0;
    if (e->event_order[r->node] < 0)
        e->event_order[r->node] = e->n_with_events++;
    if (legacy && table >= 0 && !(e->table_masks[r->node] & (1 << table)))
        table_seen(e, r->node, table); /* a legacy table hooks into all its chains once loaded */
    e->count++;
    int hook;
    Packet *p = NULL;
    int fast = 0;
    if (e->has_last && e->last_packet && e->last_node == r->node && same_trace_id(e, r) &&
        ((r->repeat && e->placed_last) || e->last_f == f || fields_eq(e->last_f, f))) {
        p = e->last_packet;
        if (next_hook(e, p, r, table, &hook)) {
            if (f->damaged)
                p->repaired++;
            append_step(e, p, r, hook, table);
            fast = 1;
        } else {
            p = NULL;
        }
    }
    if (!fast) {
        p = find(e, r, table, &hook);
        if (!p) {
            if (legacy && f->ip_id == NONE && (!f->src[0] || !f->dst[0])) {
                e->unattributed++;
                e->placed_last = 0;
                expire(e);
                process_done(e);
                return;
            }
            p = open_packet(e, r);
            if (!p)
                return;
            next_hook(e, p, r, table, &hook);
        } else if (f->damaged) {
            p->repaired++;
        }
        if (merge(p, f))
            e->failed = 1;
        if (p->identity == ID_FLOW && p->f.ip_id != NONE) { /* adopted by its IP id */
            p->identity = ID_IP;
            e->open_flows--;
            index_packet(e, p);
        }
        if (!legacy) {
            if (add_trace_id(p, r->trace_id) ||
                trace_key(&e->scratch2, r->node, r->trace_id.s, (size_t)r->trace_id.n)) {
                e->failed = 1;
            } else {
                int added;
                Entry *t = map_put(&e->by_trace, e->scratch2.p, e->scratch2.n, &added);
                if (t)
                    t->value = p;
                else
                    e->failed = 1;
            }
        }
        append_step(e, p, r, hook, table);
        keep_last(e, r, p);
    }
    e->placed_last = 1; /* so e->last_f are the record's */
    if (e->count % EXPIRE_EVERY == 0)
        expire(e);
    if (!legacy && hook >= 0) /* nft creates a base chain only where one is declared: the slots seen */
        slot_seen(e, r->node, hook, r->table, r->table_n);
    process_done(e);
}

/* Assembler.mark_end: the open packets after whose last step no other packet of their node
 * began; `entered` (nft): trace id -> the base chain its packet went on into. */
static void mark_end(Engine *e, Map *entered) {
    for (Packet *p = e->head; p; p = p->next)
        if (e->began[p->node] <= p->last_seen)
            p->at_end = 1;
    if (!entered)
        return;
    for (Entry *x = entered->head; x; x = x->next) {
        if (trace_key(&e->scratch2, e->line_node, x->key, x->klen)) {
            e->failed = 1;
            continue;
        }
        Entry *t = map_get(&e->by_trace, e->scratch2.p, e->scratch2.n);
        if (!t)
            continue;
        Packet *p = t->value;
        free(p->entered);
        p->entered = malloc((size_t)x->number + 1);
        if (!p->entered) {
            e->failed = 1;
            continue;
        }
        memcpy(p->entered, x->value, (size_t)x->number);
        p->entered_n = (size_t)x->number;
    }
}
