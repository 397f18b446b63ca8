/* chainlab.trace._engine, lines of each format: included by _engine.c, in its order (uses what the parts
 * before it define). */

/* The node and time of a line whose first header starts at `at` (the prefix parse of the
 * previous line is reused when the text is the same, as KernelLineParser.prefix caches). */
static int line_origin(Engine *e, const char *line, size_t at, Ref *time) {
    Buf *b = &e->prefix_text;
    if (!(e->has_prefix && b->n == at && (at == 0 || memcmp(b->p, line, at) == 0))) {
        e->has_prefix = 0;
        b->n = 0;
        if (put(b, line, at)) {
            e->failed = 1;
            time->n = -1;
            return e->line_node;
        }
        Ref host;
        parse_prefix(b->p, at, &host, &e->prefix_time, NULL);
        int node = host.n > 0 && e->from_lines ? node_number(e, host.s, (size_t)host.n) : e->line_node;
        if (node < 0)
            node = e->line_node;
        e->prefix_node = node;
        e->has_prefix = 1;
    }
    *time = e->prefix_time;
    return e->prefix_node;
}

/* What a line's fields text parses to, for FIELD_CACHE recent texts of at most FIELD_TEXT_MAX
 * bytes: the lines of one packet repeat their fields (KernelLineParser.fields caches them
 * too). A slot's Fields point into its copy of the text. The kernel prints MARK= last
 * (nf_log_dump_packet) and Calico's rules change it along a packet's walk: what is cached is
 * the text before a last MARK= token, which is then read on its own, with the same result as
 * parse_fields on the whole text (a text with a '[', where brackets could hold the token, is
 * cached whole). */
#define FIELD_CACHE 256
#define FIELD_TEXT_MAX 480
#define MARK_TEXT_MAX 24
struct FieldSlot {
    size_t hash, n;
    int glued;   /* the text holds another "TRACE: " */
    int bracket; /* the text holds a '[' */
    Fields f;
    char text[FIELD_TEXT_MAX];
};

/* Where s[0:n]'s last token starts when it is a MARK= token (at most MARK_TEXT_MAX bytes to
 * the end), *end where it ends; n when it is not. */
static size_t mark_at(const char *s, size_t n, size_t *end) {
    size_t e = n;
    while (e && is_space(s[e - 1]))
        e--;
    size_t b = e;
    while (b && !is_space(s[b - 1]))
        b--;
    *end = e;
    return n - b <= MARK_TEXT_MAX && e - b >= 5 && memcmp(s + b, "MARK=", 5) == 0 ? b : n;
}

/* The slot holding what s[0:n] parses to, filled now if it did not. */
static struct FieldSlot *field_slot(Caches *c, const char *s, size_t n) {
    size_t hash = hash_bytes(s, n);
    struct FieldSlot *slot = &c->fields[hash & (FIELD_CACHE - 1)];
    if (!(slot->hash == hash && slot->n == n && memcmp(slot->text, s, n) == 0)) {
        memcpy(slot->text, s, n);
        slot->n = n;
        slot->hash = hash;
        parse_fields(slot->text, n, &slot->f);
        slot->glued = find_str(s, n, 0, "TRACE: ", 7) != NULL;
        slot->bracket = memchr(s, '[', n) != NULL;
    }
    return slot;
}

/* f's texts (pointing into `from`) moved to the same places in `to`. */
static void rebase_fields(Fields *f, const char *from, const char *to) {
    Ref *refs[] = {&f->in_if, &f->out_if, &f->mark};
    for (int i = 0; i < 3; i++)
        if (refs[i]->n >= 0)
            refs[i]->s = to + (refs[i]->s - from);
}

/* parse_fields(s, n, f), through the cache (f's texts point into s); returns whether s[0:n]
 * holds another "TRACE: " (then the line is glued). With `repeated`: *repeated tells whether
 * s[0:n] is the text of the last call, and then f is left as it is (the caller has it). */
static int cached_fields(Caches *c, const char *s, size_t n, Fields *f, int *repeated) {
    if (repeated)
        *repeated = 0;
    if (n > FIELD_TEXT_MAX || (!c->fields && !(c->fields = calloc(FIELD_CACHE + 1, sizeof *c->fields)))) {
        if (c->fields) /* the last text is no longer the last call's */
            c->fields[FIELD_CACHE].hash = 0;
        parse_fields(s, n, f);
        return find_str(s, n, 0, "TRACE: ", 7) != NULL;
    }
    struct FieldSlot *last = &c->fields[FIELD_CACHE]; /* the last text (most lines repeat it) and its result; hash 0: none */
    if (last->hash && last->n == n && memcmp(last->text, s, n) == 0) {
        if (repeated)
            *repeated = 1;
    } else {
        size_t end, at = mark_at(s, n, &end);
        struct FieldSlot *slot = field_slot(c, s, at);
        if (at < n && slot->bracket)
            slot = field_slot(c, s, at = n);
        memcpy(last->text, s, n);
        last->n = n;
        last->hash = 1;
        last->glued = slot->glued || (at < n && find_str(s, n, at, "TRACE: ", 7)); /* in the token: then it ends the line */
        last->f = slot->f;
        rebase_fields(&last->f, slot->text, last->text);
        if (at < n)
            last->f.damaged |= !read_mark(last->text + at + 5, end - at - 5, &last->f);
    }
    if (!repeated || !*repeated) {
        *f = last->f;
        rebase_fields(f, last->text, s);
    }
    return last->glued;
}

/* match_header's result for the header text after "TRACE: " (up to the first whitespace,
 * where any header ends), for HEADER_CACHE recent ones of at most HEADER_TEXT_MAX bytes, with
 * the TABLES and HOOKS index of its table and chain. Offsets count from that text's start. */
#define HEADER_CACHE 4096
_Static_assert(HEADER_CACHE == STEP_HEADS, "a header slot's id ends in its index: step_head's slot");
#define HEADER_TEXT_MAX 96
struct HeaderSlot {
    size_t hash, n;
    uint64_t id; /* never the same for two fillings (0: none); modulo HEADER_CACHE: the slot's index */
    int ok, kind, table_index, chain_hook;
    size_t table_at, table_n, chain_at, chain_n, pos_at, pos_n;
    char text[HEADER_TEXT_MAX];
};

/* match_header(line, n, at, h) where line[at:] starts with "TRACE: "; *slot: the cache slot
 * (NULL: not cached). */
static int cached_header(Caches *cache, const char *line, size_t n, size_t at, Header *h, const struct HeaderSlot **slot) {
    size_t t = at + 7, w = space_from(line, n, t);
    size_t len = w - t;
    *slot = NULL;
    if (len > HEADER_TEXT_MAX || (!cache->headers && !(cache->headers = calloc(HEADER_CACHE, sizeof *cache->headers))))
        return match_header(line, n, at, h);
    size_t hash = hash_bytes(line + t, len);
    struct HeaderSlot *c = &cache->headers[hash & (HEADER_CACHE - 1)];
    if (!(c->hash == hash && c->n == len && memcmp(c->text, line + t, len) == 0)) {
        memcpy(c->text, line + t, len);
        c->n = len;
        c->hash = hash;
        c->ok = match_header(line, n, at, h);
        c->id = ++cache->filled * HEADER_CACHE + (uint64_t)(c - cache->headers); /* see step_head */
        if (c->ok) {
            c->kind = h->kind;
            c->table_at = (size_t)(h->table - line) - t, c->table_n = h->table_n;
            c->chain_at = (size_t)(h->chain - line) - t, c->chain_n = h->chain_n;
            c->pos_at = (size_t)(h->pos - line) - t, c->pos_n = h->pos_n;
            c->table_index = find_name(TABLES, N_TABLES, h->table, h->table_n);
            c->chain_hook = find_name(HOOKS, N_HOOKS, h->chain, h->chain_n);
        }
    }
    if (!c->ok)
        return 0;
    const char *b = line + t;
    *h = (Header){b + c->table_at, b + c->chain_at, b + c->pos_at, c->table_n, c->chain_n, c->pos_n, c->kind, at, w};
    *slot = c;
    return 1;
}

static void kernel_record(Engine *e, int node, Ref time, const Header *h, const Fields *f,
                          const struct HeaderSlot *names) {
    Rec r = {node, h->table, h->chain, h->table_n, h->chain_n, h->kind, h->pos, h->pos_n,
             {NULL, -1}, {NULL, -1}, {NULL, -1}, -1, f, {NULL, -1}, -1, time,
             names != NULL, names ? names->table_index : -1, names ? names->chain_hook : -1, 0, 0};
    e->records++;
    feed_record(e, &r);
}

/* reader._kernel_records for one line (valid UTF-8, cut, '\r' stripped); `cut`: it was longer
 * than LINE_LIMIT; `first`: its first "TRACE:" if known. */
static void kernel_line(Engine *e, const char *line, size_t n, int cut, const char *first) {
    if (!first)
        first = find_str(line, n, 0, "TRACE:", 6);
    if (!first) {
        e->ignored++;
        return;
    }
    if ((size_t)(first - line) + 6 >= n || first[6] != ' ')
        first = find_str(line, n, (size_t)(first - line) + 6, "TRACE: ", 7);
    Header h;
    Fields f;
    /* the common case: one header, then fields (the header holds no space, so no other "TRACE: ") */
    Ref time;
    const struct HeaderSlot *names;
    if (first && cached_header(&e->caches, line, n, (size_t)(first - line), &h, &names) &&
        !cached_fields(&e->caches, line + h.end, n - h.end, &f, NULL)) {
        int node = line_origin(e, line, h.start, &time);
        f.damaged |= cut;
        kernel_record(e, node, time, &h, &f, names);
        return;
    }
    /* glued or damaged: every header on the line (finditer) */
    size_t count = 0, occurrences = 0;
    size_t from = 0;
    const char *hit;
    while ((hit = find_str(line, n, from, "TRACE: ", 7))) {
        size_t at = (size_t)(hit - line);
        occurrences++;
        if (match_header(line, n, at, &h)) {
            if (count == e->cap_headers) {
                size_t cap = e->cap_headers ? e->cap_headers * 2 : 16;
                Header *grown = realloc(e->headers, cap * sizeof *grown);
                if (!grown) {
                    e->failed = 1;
                    return;
                }
                e->headers = grown;
                e->cap_headers = cap;
            }
            e->headers[count++] = h;
            from = h.end;
        } else {
            from = at + 7;
        }
    }
    size_t bad = 0;
    if (occurrences != count) {
        size_t like = trace_like_count(line, n);
        bad = like > count ? like - count : 0;
    }
    e->skipped += (long long)bad;
    if (!count) {
        if (!bad)
            e->ignored++;
        return;
    }
    int node = line_origin(e, line, e->headers[0].start, &time);
    Ref glued_host, glued_time;
    int own = -1; /* the form of the line's own prefix (with a host), for glued records */
    if (count > 1)
        parse_prefix(line, e->headers[0].start, &glued_host, &glued_time, &own);
    for (size_t i = 0; i < count && !e->error; i++) {
        Header *hs = e->headers;
        if (i) { /* a record glued on after a syslog prefix of the line's own form: its host and time;
                  * on a line without a host (dmesg's), after an uptime: its time */
            const char *seg = line + hs[i - 1].end;
            size_t len = hs[i].start - hs[i - 1].end, p = before_next_prefix(seg, len), digits, up;
            int kind;
            if (p < len && own >= 0) {
                parse_prefix(seg + p, len - p, &glued_host, &glued_time, &kind);
                if (kind == own)
                    node = line_origin(e, seg + p, len - p, &time);
            } else if (p < len && own < 0 && (up = uptime_at(seg + p, len - p, &digits))) {
                time = (Ref){seg + p + digits, (Py_ssize_t)up};
            }
        }
        if (i + 1 < count) {
            const char *seg = line + hs[i].end;
            size_t len = hs[i + 1].start - hs[i].end;
            parse_fields(seg, before_next_prefix(seg, len), &f);
            f.damaged = 1;
        } else {
            cached_fields(&e->caches, line + hs[i].end, n - hs[i].end, &f, NULL);
            f.damaged |= cut;
        }
        kernel_record(e, node, time, &hs[i], &f, NULL);
    }
}

static const Fields *damaged_fields(void) {
    static Fields unknown;
    static int ready;
    if (!ready) {
        fields_init(&unknown);
        unknown.damaged = 1;
        ready = 1;
    }
    return &unknown;
}

/* Bound a trace-id map: drop its oldest entry past PENDING_TRACE_IDS. */
static void trim(Map *m, int packets) {
    while (m->count > PENDING_TRACE_IDS) {
        Entry *oldest = m->head;
        if (packets)
            nft_packet_free(oldest->value);
        else
            free(oldest->value);
        map_remove(m, oldest);
    }
}

/* reader._carried: into `f` (a trace id's later packet line), when it prints no address, the
 * headers it does not print from `b` (its line before); interfaces and mark belong to the hook
 * and stay f's. Every Fields member but in_if, out_if, mark and damaged (reader._HEADERS). */
static void carry_headers(Fields *f, const Fields *b) {
    if (f->src[0] || f->dst[0])
        return;
    memcpy(f->src, b->src, sizeof f->src);
    memcpy(f->dst, b->dst, sizeof f->dst);
    if (!f->proto[0])
        memcpy(f->proto, b->proto, sizeof f->proto);
    long long *nums[] = {&f->ip_id, &f->ttl, &f->icmp_type, &f->icmp_id, &f->icmp_seq, &f->sport, &f->dport,
                         &f->flow_label, &f->tcp_seq};
    const long long *was[] = {&b->ip_id, &b->ttl, &b->icmp_type, &b->icmp_id, &b->icmp_seq, &b->sport, &b->dport,
                              &b->flow_label, &b->tcp_seq};
    for (size_t k = 0; k < sizeof nums / sizeof *nums; k++)
        if (*nums[k] == NONE)
            *nums[k] = *was[k];
    if (!f->flags)
        f->flags = b->flags;
    f->damaged = f->damaged && b->damaged;
}

/* A packet line: remember its fields for the trace id (NftPacket), and the base chain it opens. */
static void nft_packet_line(Engine *e, const NftLine *l, int cut) {
    NftPacket *np = calloc(1, sizeof *np);
    if (!np) {
        e->failed = 1;
        return;
    }
    int err = e->format == FMT_XT ? xt_packet_fields(l->packet.s, (size_t)l->packet.n, &np->f, &e->words)
                                  : nft_packet_fields(l->packet.s, (size_t)l->packet.n, &np->f, &e->words, &e->scratch);
    size_t in_n = np->f.in_if.n > 0 ? (size_t)np->f.in_if.n : 0, out_n = np->f.out_if.n > 0 ? (size_t)np->f.out_if.n : 0;
    np->text = malloc(in_n + out_n + 1);
    if (err || !np->text) {
        nft_packet_free(np);
        e->failed = 1;
        return;
    }
    Entry *before = map_get(&e->nft_packets, l->trace_id.s, (size_t)l->trace_id.n);
    if (before) /* reader._carried: the headers this line does not print, from the trace id's line before */
        carry_headers(&np->f, &((NftPacket *)before->value)->f);
    if (np->f.in_if.n >= 0) {
        memcpy(np->text, np->f.in_if.s, in_n);
        np->f.in_if.s = np->text;
    }
    if (np->f.out_if.n >= 0) {
        memcpy(np->text + in_n, np->f.out_if.s, out_n);
        np->f.out_if.s = np->text + in_n;
    }
    if (cut)
        np->f.damaged = 1;
    if (l->family >= 0) {
        np->base_table = copy_of(l->table.s, (size_t)l->table.n);
        np->base_chain = copy_of(l->chain.s, (size_t)l->chain.n);
        np->base_table_n = (size_t)l->table.n;
        np->base_chain_n = (size_t)l->chain.n;
        if (!np->base_table || !np->base_chain) {
            nft_packet_free(np);
            e->failed = 1;
            return;
        }
    }
    const char *tid = l->trace_id.s;
    size_t tn = (size_t)l->trace_id.n;
    int added;
    Entry *known = map_put(&e->nft_packets, tid, tn, &added);
    if (!known) {
        nft_packet_free(np);
        e->failed = 1;
        return;
    }
    map_move_to_end(&e->nft_packets, known); /* the trace ids used longest ago go first (trim) */
    if (known->value)
        nft_packet_free(known->value);
    known->value = np;
    Entry *pending = map_get(&e->pending, tid, tn);
    if (pending) {
        free(pending->value);
        map_remove(&e->pending, pending);
    }
    Buf *chain = &e->scratch2;
    chain->n = 0;
    if (np->base_table ? (put(chain, np->base_table, np->base_table_n) || PUTL(chain, " ") ||
                          put(chain, np->base_chain, np->base_chain_n))
                       : PUTL(chain, "a base chain")) {
        e->failed = 1;
        return;
    }
    pending = map_put(&e->pending, tid, tn, &added);
    if (!pending || !(pending->value = copy_of(chain->p, chain->n))) {
        e->failed = 1;
        return;
    }
    pending->number = (long long)chain->n;
    trim(&e->nft_packets, 1);
    trim(&e->pending, 0);
}

/* reader._nft_events for one line. */
static void nft_line(Engine *e, const char *line, size_t n, int cut) {
    NftLine l;
    int parsed = e->format == FMT_XT ? parse_xt(line, n, &l) : parse_nft(line, n, &l);
    if (parsed != 1) { /* 2: conntrack, the connection's state: no step */
        if (parsed)
            e->ignored++;
        else
            e->skipped++;
        return;
    }
    if (l.kind < 0) {
        nft_packet_line(e, &l, cut);
        return;
    }
    e->records++;
    const char *tid = l.trace_id.s;
    size_t tn = (size_t)l.trace_id.n;
    Entry *known = map_get(&e->nft_packets, tid, tn);
    NftPacket *np = known ? known->value : NULL;
    if (known)
        map_move_to_end(&e->nft_packets, known);
    Fields copy;
    const Fields *f = np ? &np->f : damaged_fields();
    if (cut && !f->damaged) {
        copy = *f;
        copy.damaged = 1;
        f = &copy;
    }
    Entry *pending = map_get(&e->pending, tid, tn);
    int base = -1;
    if (np && np->base_table && pending && np->base_table_n == (size_t)l.table.n && np->base_chain_n == (size_t)l.chain.n &&
        memcmp(np->base_table, l.table.s, np->base_table_n) == 0 && memcmp(np->base_chain, l.chain.s, np->base_chain_n) == 0)
        base = (f->in_if.n >= 0) | ((f->out_if.n >= 0) << 1);
    if (pending) {
        free(pending->value);
        map_remove(&e->pending, pending);
    }
    Rec r = {e->line_node, l.table.s, l.chain.s, (size_t)l.table.n, (size_t)l.chain.n, l.kind, NULL, 0,
             l.handle, {NULL, -1}, l.rule, l.family, f, l.trace_id, base, {NULL, -1}, 0, -1, -1, 0, 0};
    Buf *verdict = &e->verdict;
    verdict->n = 0;
    if (e->format == FMT_XT) {
        if (l.verdict.n > 0) { /* VERDICT[:target] */
            if (put(verdict, l.verdict.s, (size_t)l.verdict.n) ||
                (l.target.n > 0 && (PUTL(verdict, ":") || put(verdict, l.target.s, (size_t)l.target.n)))) {
                e->failed = 1;
                return;
            }
            r.verdict = (Ref){verdict->p, (Py_ssize_t)verdict->n};
        }
        if (r.rule.n >= 0) { /* IPTABLES_PREFIX `-4 -t TABLE ` goes */
            const char *s = r.rule.s;
            size_t rn = (size_t)r.rule.n;
            if (rn > 6 && s[0] == '-' && (s[1] == '4' || s[1] == '6') && memcmp(s + 2, " -t ", 4) == 0) {
                size_t t = nonspace_end(s, rn, 6);
                if (t > 6 && t < rn && s[t] == ' ')
                    r.rule = (Ref){s + t + 1, (Py_ssize_t)(rn - t - 1)};
            }
            if (r.rule.n == 0)
                r.rule.n = -1;
        }
    } else if (!upper_keyword(verdict, l.verdict, &r.verdict)) {
        e->failed = 1;
        return;
    }
    feed_record(e, &r);
}

/* reader.marked_lines + the format's reader for one whole line of the input (already cut). */
static void feed_line(Engine *e, const char *raw, size_t n, int cut) {
    e->lines++;
    e->line_no++;
    e->cut_lines += cut;
    while (n && raw[n - 1] == '\r')
        n--;
    /* before a line's first character: NUL bytes (a log truncated under its writer, as by
     * logrotate's copytruncate) and a UTF-8 byte-order mark (a file an editor saved) */
    while (n && raw[0] == '\0')
        raw++, n--;
    if (n >= 3 && memcmp(raw, "\xef\xbb\xbf", 3) == 0)
        raw += 3, n -= 3;
    /* a kernel log's lines count only with "TRACE:" (kernel_line ignores the others) */
    const char *first = find_str(raw, n, 0, "TRACE:", 6);
    if (!(first || (e->format != FMT_KERNEL && (find_str(raw, n, 0, "trace id", 8) || find_str(raw, n, 0, "PACKET:", 7))))) {
        e->ignored++;
        return;
    }
    if (has_high_bytes((const unsigned char *)raw, n)) {
        if (utf8_normalize((const unsigned char *)raw, n, &e->text)) {
            e->failed = 1;
            return;
        }
        raw = e->text.p;
        n = e->text.n;
        first = NULL; /* moved */
    }
    if (e->format == FMT_KERNEL)
        kernel_line(e, raw, n, cut, first);
    else
        nft_line(e, raw, n, cut);
}

/* The line carried over from the last chunk, completed by `data` up to its first '\n'
 * (or all of it); returns where the rest of `data` starts (n: the line goes on). */
static size_t complete_carry(Engine *e, const char *data, size_t n) {
    const char *nl = memchr(data, '\n', n);
    size_t head = nl ? (size_t)(nl - data) : n;
    size_t room = LINE_LIMIT - e->carry.n;
    if (head > room)
        e->carry_cut = 1;
    if (put(&e->carry, data, head < room ? head : room))
        e->failed = 1;
    if (!nl)
        return n;
    feed_line(e, e->carry.p ? e->carry.p : "", e->carry.n, e->carry_cut);
    e->carry.n = 0;
    e->carrying = e->carry_cut = 0;
    return head + 1;
}

/* Lines of data[pos:n]; the last line without '\n' is carried. */
static void feed_lines(Engine *e, const char *data, size_t n, size_t pos) {
    while (pos < n && !e->error && !e->failed) {
        if (data[pos] == '\n') { /* a run of empty lines: only counted */
            size_t q = pos;
            while (q < n && data[q] == '\n')
                q++;
            long long k = (long long)(q - pos);
            e->lines += k;
            e->line_no += k;
            e->ignored += k;
            pos = q;
            continue;
        }
        const char *nl = memchr(data + pos, '\n', n - pos);
        if (!nl) {
            size_t rest = n - pos;
            e->carry.n = 0;
            e->carry_cut = rest > LINE_LIMIT;
            if (put(&e->carry, data + pos, rest < LINE_LIMIT ? rest : LINE_LIMIT))
                e->failed = 1;
            e->carrying = 1;
            return;
        }
        size_t end = (size_t)(nl - data), len = end - pos;
        feed_line(e, data + pos, len > LINE_LIMIT ? LINE_LIMIT : len, len > LINE_LIMIT);
        pos = end + 1;
    }
}
