/* chainlab.trace._engine, finishing a packet: included by _engine.c, in its order (uses what the parts
 * before it define). */

static void walk_free(void *w) {
    Walk *walk = w;
    Py_XDECREF(walk->result);
    free(walk);
}

static int bytes_item(PyObject *t, Py_ssize_t i, const char **s, Py_ssize_t *n) {
    PyObject *o = PyTuple_GET_ITEM(t, i);
    if (!PyBytes_Check(o)) {
        PyErr_Format(PyExc_TypeError, "judge() item %zd must be bytes", i);
        return -1;
    }
    *s = PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

/* Python strings of the names a step's fields take from fixed lists (kind, hook, family). */
static PyObject *KIND_OBJECTS[3], *HOOK_OBJECTS[N_HOOKS], *FAMILY_OBJECTS[N_FAMILIES];

static int names_ready(void) {
    for (int i = 0; i < 3; i++)
        if (!KIND_OBJECTS[i] && !(KIND_OBJECTS[i] = PyUnicode_InternFromString(KINDS[i])))
            return -1;
    for (int i = 0; i < N_HOOKS; i++)
        if (!HOOK_OBJECTS[i] && !(HOOK_OBJECTS[i] = PyUnicode_InternFromString(HOOKS[i])))
            return -1;
    for (int i = 0; i < N_FAMILIES; i++)
        if (!FAMILY_OBJECTS[i] && !(FAMILY_OBJECTS[i] = PyUnicode_InternFromString(FAMILIES[i])))
            return -1;
    return 0;
}

/* One signature field (see sig_str) as str or None; advances *at. */
static PyObject *sig_text(const char *g, size_t n, size_t *at) {
    uint32_t len;
    if (*at + 4 > n)
        goto broken;
    memcpy(&len, g + *at, 4);
    *at += 4;
    if (len == 0xffffffffu)
        return Py_NewRef(Py_None);
    if (*at + len > n)
        goto broken;
    *at += len;
    return PyUnicode_DecodeUTF8(g + *at - len, (Py_ssize_t)len, "surrogatepass");
broken:
    PyErr_SetString(PyExc_SystemError, "_engine: a walk signature is cut short");
    return NULL;
}

/* One step of a walk signature (append_step writes it) as the tuple native.Calls.step takes:
 * (table, chain, kind, position, handle, verdict, rule, hook, family); *at: where it ends. */
static PyObject *step_tuple(const char *g, size_t n, size_t *at) {
    PyObject *table = sig_text(g, n, at), *chain = table ? sig_text(g, n, at) : NULL;
    int kind = chain && *at < n ? (unsigned char)g[(*at)++] : -1;
    PyObject *position = kind >= 0 && kind < 3 ? sig_text(g, n, at) : NULL;
    PyObject *handle = position ? sig_text(g, n, at) : NULL, *verdict = handle ? sig_text(g, n, at) : NULL;
    PyObject *rule = verdict ? sig_text(g, n, at) : NULL, *step = NULL;
    if (position && position != Py_None)
        Py_SETREF(position, PyLong_FromUnicodeObject(position, 10));
    if (rule && position && *at + 2 <= n) {
        int hook = (unsigned char)g[*at], family = (unsigned char)g[*at + 1];
        *at += 2;
        step = PyTuple_Pack(9, table, chain, KIND_OBJECTS[kind], position, handle, verdict, rule,
                            hook < N_HOOKS ? HOOK_OBJECTS[hook] : Py_None,
                            family < N_FAMILIES ? FAMILY_OBJECTS[family] : Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_SystemError, "_engine: a walk signature is cut short");
    }
    Py_XDECREF(table);
    Py_XDECREF(chain);
    Py_XDECREF(position);
    Py_XDECREF(handle);
    Py_XDECREF(verdict);
    Py_XDECREF(rule);
    return step;
}

static void decref_value(void *o) { Py_DECREF((PyObject *)o); }

/* The steps of a packet's walk signature for native.Calls.judge: a Step object per step, made
 * by Calls.step from the step's tuple the first time the step is met and the same object each
 * time after (decoding a walk's ~30 steps into new objects for each walk was most of judging).
 * A step's part of the signature ends after its hook and family bytes (StepAt.sig_hook). */
static PyObject *steps_of(Engine *e, const Packet *p) {
    if (names_ready())
        return NULL;
    const char *g = p->sig.p;
    PyObject *steps = PyList_New(0);
    for (size_t i = 0, start = 0; steps && i < p->n_steps; i++) {
        size_t end = p->at[i].sig_hook + 2;
        Entry *known = map_get(&e->step_objects, g + start, end - start);
        PyObject *step = NULL;
        if (known) {
            step = Py_NewRef((PyObject *)known->value);
        } else {
            size_t at = start;
            PyObject *t = step_tuple(g, end, &at);
            if (t)
                step = PyObject_CallMethod(e->calls, "step", "(O)", t); /* "O" would spread a tuple */
            Py_XDECREF(t);
            if (step) {
                if (e->step_objects.count >= STEP_CACHE)
                    map_clear(&e->step_objects, decref_value);
                int added;
                Entry *slot = map_put(&e->step_objects, g + start, end - start, &added);
                if (slot)
                    slot->value = Py_NewRef(step);
                else
                    e->failed = 1;
            }
        }
        if (!step || PyList_Append(steps, step))
            Py_CLEAR(steps);
        Py_XDECREF(step);
        start = end;
    }
    return steps;
}

/* The hash of a walk's key (`prefix`, then the packet's signature) for Engine.walks: the
 * prefix hashed, then each step's piece_hash and its hook and family bytes (returned_into may
 * change a hook after the step), not the signature's kilobyte hashed again for each packet.
 * Equal signatures have equal steps, so equal keys hash alike. */
static size_t walk_hash(const Packet *p, const Buf *prefix) {
    uint64_t h = hash_bytes(prefix->p, prefix->n);
    for (size_t i = 0; i < p->n_steps; i++) {
        const StepAt *at = &p->at[i];
        h = hash_mix(hash_mix(h, at->piece_hash),
                     (unsigned char)p->sig.p[at->sig_hook] | (uint64_t)(unsigned char)p->sig.p[at->sig_hook + 1] << 8);
    }
    h = (h ^ (h >> 32)) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    return h ? (size_t)h : 1;
}

/* The judged walk of a finished packet: from the cache, or judged in Python (native.Judge). */
static Walk *walk_of(Engine *e, Packet *p) {
    Buf *k = &e->key;
    k->n = 0;
    char flags[2] = {(char)p->at_end, (char)(p->f.proto[0] == 0)};
    uint32_t entered = p->entered ? (uint32_t)p->entered_n : 0xffffffffu;
    if (put(k, (const char *)&p->node, sizeof p->node) ||
        put(k, (const char *)&e->slot_version[p->node], sizeof(long long)) || put(k, flags, 2) ||
        put(k, (const char *)&entered, 4) || (p->entered && put(k, p->entered, p->entered_n))) {
        e->failed = 1;
        return NULL;
    }
    const char *sig = p->sig.p ? p->sig.p : "";
    size_t hash = walk_hash(p, k);
    Entry *cached = map_get_parts(&e->walks, k->p, k->n, sig, p->sig.n, hash);
    if (cached)
        return cached->value;
    PyObject *steps = steps_of(e, p);
    if (!steps) {
        call_failed(e);
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(e->calls, "judge", "iOiz#i", p->node, steps, p->at_end, p->entered,
                                      (Py_ssize_t)p->entered_n, p->f.proto[0] == 0);
    Py_DECREF(steps);
    if (!r)
        goto failed;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 12) {
        PyErr_SetString(PyExc_TypeError, "judge() must return a 12-tuple");
        goto failed;
    }
    Walk *w = calloc(1, sizeof *w);
    if (!w) {
        Py_DECREF(r);
        e->failed = 1;
        return NULL;
    }
    w->result = r;
    PyObject *proto = PyTuple_GET_ITEM(r, 4);
    if (bytes_item(r, 0, &w->hooks_json, &w->hooks_json_n) || bytes_item(r, 2, &w->verdict_json, &w->verdict_json_n) ||
        bytes_item(r, 3, &w->newconn_json, &w->newconn_json_n) || !PyTuple_Check(PyTuple_GET_ITEM(r, 1)) ||
        (proto != Py_None && !PyUnicode_Check(proto))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "judge() returned the wrong types");
        walk_free(w);
        r = NULL;
        goto failed;
    }
    w->step_rules = PyTuple_GET_ITEM(r, 1);
    w->rules_null = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(w->step_rules) && w->rules_null; i++) {
        PyObject *rule = PyTuple_GET_ITEM(w->step_rules, i);
        w->rules_null = PyBytes_Check(rule) && PyBytes_GET_SIZE(rule) == NULL_RULE_N &&
                        memcmp(PyBytes_AS_STRING(rule), "null", NULL_RULE_N) == 0;
    }
    w->proto = proto == Py_None ? NULL : PyUnicode_AsUTF8(proto);
    w->verdict = (int)PyLong_AsLong(PyTuple_GET_ITEM(r, 5));
    w->origin = PyObject_IsTrue(PyTuple_GET_ITEM(r, 6)) == 1;
    w->walk_ok = PyObject_IsTrue(PyTuple_GET_ITEM(r, 7)) == 1;
    w->summary = PyLong_AsLong(PyTuple_GET_ITEM(r, 9));
    w->diagram = PyLong_AsLong(PyTuple_GET_ITEM(r, 10));
    int learned = PyObject_IsTrue(PyTuple_GET_ITEM(r, 11)) == 1; /* cached walks of the node: judged anew */
    if (PyErr_Occurred() || (w->proto == NULL && proto != Py_None) || PyTuple_GET_SIZE(w->step_rules) != (Py_ssize_t)p->n_steps) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "judge() returned a rule for each step? no");
        walk_free(w);
        r = NULL;
        goto failed;
    }
    if (e->walks.count >= WALK_CACHE)
        map_clear(&e->walks, walk_free);
    int added;
    Entry *slot = map_put_parts(&e->walks, k->p, k->n, sig, p->sig.n, hash, &added);
    if (!slot) {
        walk_free(w);
        e->failed = 1;
        return NULL;
    }
    slot->value = w;
    if (learned)
        e->slot_version[p->node]++;
    return w;
failed:
    Py_XDECREF(r);
    call_failed(e);
    return NULL;
}

/* An endpoint as Directions compares it: (address or None, port or None). */
static int put_endpoint(Buf *b, const char *addr, long long port) {
    unsigned char len = (unsigned char)strlen(addr);
    char has = addr[0] != 0;
    return put(b, &has, 1) || put(b, (const char *)&len, 1) || put(b, addr, len) ||
           put(b, (const char *)&port, sizeof port);
}

/* The directions key of one (a, b) endpoint pair of the packet, a <= b or not. */
static int direction_key(Engine *e, const Packet *p, const char *proto, const char *as, long long ap,
                         const char *bs, long long bp, int *a_first) {
    Buf *k = &e->key, *x = &e->scratch, *y = &e->scratch2;
    x->n = y->n = k->n = 0;
    if (put_endpoint(x, as, ap) || put_endpoint(y, bs, bp))
        return -1;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, m);
    *a_first = c < 0 || (c == 0 && x->n <= y->n);
    Buf *lo = *a_first ? x : y, *hi = *a_first ? y : x;
    unsigned char plen = (unsigned char)strlen(proto);
    return put(k, (const char *)&p->node, sizeof p->node) || put(k, (const char *)&plen, 1) || put(k, proto, plen) ||
           put(k, lo->p, lo->n) || put(k, hi->p, hi->n);
}

/* analyze.Directions.classify */
static int classify(Engine *e, const Packet *p) {
    const Fields *f = &p->f;
    int direction = -1;
    if (strcmp(f->proto, "ICMP") == 0 && (f->icmp_type == 8 || f->icmp_type == 0))
        direction = f->icmp_type == 8 ? DIR_REQUEST : DIR_REPLY;
    else if (strcmp(f->proto, "ICMP") == 0 && f->icmp_type != NONE)
        direction = DIR_ERROR;
    else if (strcmp(f->proto, "ICMPV6") == 0 && (f->icmp_type == 128 || f->icmp_type == 129))
        direction = f->icmp_type == 128 ? DIR_REQUEST : DIR_REPLY;
    else if (strcmp(f->proto, "ICMPV6") == 0 && f->icmp_type != NONE && f->icmp_type < 128)
        direction = DIR_ERROR;
    else if (strcmp(f->proto, "TCP") == 0 && (f->flags & 64)) /* SYN (TCP_FLAG_NAMES[6]) */
        direction = (f->flags & 1) ? DIR_REPLY : DIR_REQUEST;  /* ACK */
    /* the endpoint pairs: as the packet entered and as it left, once if NAT changed nothing */
    const char *as[2], *bs[2];
    long long ap[2], bp[2];
    int pairs = 0;
    if (p->has_first) {
        as[0] = p->first_src, ap[0] = p->first_sport, bs[0] = p->first_dst, bp[0] = p->first_dport;
        pairs = 1;
        if (strcmp(p->last_src, p->first_src) || ap[0] != p->last_sport || strcmp(p->last_dst, p->first_dst) ||
            bp[0] != p->last_dport) {
            as[1] = p->last_src, ap[1] = p->last_sport, bs[1] = p->last_dst, bp[1] = p->last_dport;
            pairs = 2;
        }
    }
    if (direction < 0) { /* Directions._by_first_seen */
        for (int i = 0; i < pairs; i++) {
            int a_first;
            if (direction_key(e, p, f->proto, as[i], ap[i], bs[i], bp[i], &a_first)) {
                e->failed = 1;
                break;
            }
            Entry *known = map_get(&e->directions, e->key.p, e->key.n);
            if (known) {
                int same = known->number == 2 || (known->number == 1) == a_first; /* 2: a == b */
                direction = same ? DIR_REQUEST : DIR_REPLY;
                break;
            }
        }
        if (direction < 0) /* from a well-known port to an ephemeral one (analyze.EPHEMERAL) */
            direction = f->sport != NONE && f->dport != NONE && f->sport < 1024 && f->dport >= 32768 ? DIR_REPLY
                                                                                                   : DIR_REQUEST;
    }
    for (int i = 0; i < pairs; i++) {
        int a_first, added;
        if (direction_key(e, p, f->proto, as[i], ap[i], bs[i], bp[i], &a_first)) {
            e->failed = 1;
            break;
        }
        int equal = e->scratch.n == e->scratch2.n && memcmp(e->scratch.p, e->scratch2.p, e->scratch.n) == 0;
        Entry *known = map_put(&e->directions, e->key.p, e->key.n, &added);
        if (!known) {
            e->failed = 1;
            break;
        }
        /* remember (a, b) for a request, else (b, a): number 1 if the first one is the lower one */
        int first_is_a = direction == DIR_REQUEST;
        known->number = equal ? 2 : (first_is_a == a_first) ? 1 : 0;
        map_move_to_end(&e->directions, known);
        while (e->directions.count > DIRECTIONS_MEMORY)
            map_remove(&e->directions, e->directions.head);
    }
    return direction;
}

static int address_ok(Engine *e, int which, const char *address) {
    Buf *k = &e->scratch2;
    k->n = 0;
    char w = (char)which;
    int added;
    if (put(k, &w, 1) || put(k, address, strlen(address))) {
        e->failed = 1;
        return 0;
    }
    Entry *known = map_get(&e->addresses, k->p, k->n);
    if (known)
        return (int)known->number;
    PyObject *r = PyObject_CallMethod(e->calls, "address_ok", "is", which, address);
    if (!r) {
        call_failed(e);
        return 0;
    }
    int ok = PyObject_IsTrue(r) == 1;
    Py_DECREF(r);
    if (e->addresses.count >= ADDRESS_CACHE)
        map_clear(&e->addresses, NULL);
    known = map_put(&e->addresses, k->p, k->n, &added);
    if (known)
        known->number = ok;
    return ok;
}

static void lower_proto(const char *proto, char *out) {
    const char *src = proto[0] ? proto : "unknown";
    size_t k = 0;
    for (; src[k]; k++)
        out[k] = (src[k] >= 'A' && src[k] <= 'Z') ? (char)(src[k] + 32) : src[k];
    out[k] = 0;
}

/* match.Match.__call__ (the walk's part is the judge's walk_ok) */
static int matches(Engine *e, const Packet *p, const Walk *w) {
    if (!e->match)
        return 1;
    if (!e->node_ok[p->node] || !w->walk_ok)
        return 0;
    char protocol[8];
    lower_proto(p->f.proto, protocol);
    for (size_t i = 0; i < e->n_protocols; i++)
        if (e->protocol_lens[i] != strlen(protocol) || memcmp(e->protocols[i], protocol, e->protocol_lens[i]) != 0)
            return 0;
    for (size_t i = 0; i < e->n_ports; i++)
        if (p->f.sport != e->ports[i] && p->f.dport != e->ports[i])
            return 0;
    for (size_t i = 0; i < e->n_ip_ids; i++)
        if (p->f.ip_id != e->ip_ids[i])
            return 0;
    for (int which = 0; which < 2; which++) {
        if (!(which ? e->match_dst : e->match_src))
            continue;
        if (!p->has_first)
            return 0;
        const char *a = which ? p->first_dst : p->first_src, *b = which ? p->last_dst : p->last_src;
        if (!address_ok(e, which, a) && (strcmp(a, b) == 0 || !address_ok(e, which, b)))
            return 0;
    }
    return 1;
}

/* flows.endpoints: a line's port as read; a damaged line's is not (a cut `DPT=52000` reads as 52). */
static long long line_port(long long port, int damaged) { return damaged ? NONE : port; }

static void hops_free(void *h) {
    Hops *hops = h;
    for (size_t i = 0; i < hops->n; i++)
        Py_XDECREF(hops->hops[i].walk);
    free(hops->hops);
    free(hops);
}

/* flows.FlowIndex.add */
static void add_hop(Engine *e, const Packet *p, const Walk *w, int direction) {
    if (p->f.ip_id == NONE)
        return;
    Buf *k = &e->key;
    k->n = 0;
    long long seq = strcmp(p->f.proto, "ICMP") == 0 ? p->f.icmp_seq : NONE;
    int added;
    if (put(k, p->f.proto, strlen(p->f.proto) + 1) || put(k, (const char *)&p->f.ip_id, sizeof(long long)) ||
        put(k, (const char *)&seq, sizeof seq)) {
        e->failed = 1;
        return;
    }
    Entry *entry = map_get(&e->flows, k->p, k->n);
    if (!entry) {
        Hops *reuse = NULL; /* the oldest flow's, when the index is full (flows.MEMORY) */
        if (e->flows.count >= FLOWS_MEMORY) {
            Entry *oldest = e->flows.head;
            reuse = oldest->value;
            for (size_t i = 0; i < reuse->n; i++)
                Py_XDECREF(reuse->hops[i].walk);
            reuse->n = 0;
            map_remove(&e->flows, oldest);
        }
        entry = map_put(&e->flows, k->p, k->n, &added);
        if (entry)
            entry->value = reuse ? reuse : calloc(1, sizeof(Hops));
        if (!entry || !entry->value) {
            if (reuse)
                hops_free(reuse);
            if (entry)
                map_remove(&e->flows, entry);
            e->failed = 1;
            return;
        }
    }
    Hops *hops = entry->value;
    if (hops->n == MAX_HOPS) {
        Py_XDECREF(hops->hops[0].walk);
        memmove(hops->hops, hops->hops + 1, (MAX_HOPS - 1) * sizeof *hops->hops);
        hops->n--;
    }
    if (hops->n == hops->cap) {
        size_t cap = hops->cap ? hops->cap * 2 : 2;
        Hop *grown = realloc(hops->hops, cap * sizeof *grown);
        if (!grown) {
            e->failed = 1;
            return;
        }
        hops->hops = grown;
        hops->cap = cap;
    }
    Hop *h = &hops->hops[hops->n++];
    memset(h, 0, sizeof *h);
    h->seq = p->seq;
    h->direction = direction;
    h->node = p->node;
    h->walk = Py_NewRef(w->result);
    h->ttl = p->has_first ? p->first_ttl : NONE;
    h->sport = h->dport = h->exit_sport = h->exit_dport = NONE;
    if (p->has_first) {
        memcpy(h->src, p->first_src, ADDR_MAX);
        memcpy(h->dst, p->first_dst, ADDR_MAX);
        h->sport = line_port(p->first_sport, p->first_damaged);
        h->dport = line_port(p->first_dport, p->first_damaged);
    }
    if (p->has_last) {
        memcpy(h->exit_src, p->last_src, ADDR_MAX);
        memcpy(h->exit_dst, p->last_dst, ADDR_MAX);
        h->exit_sport = line_port(p->last_sport, p->last_damaged);
        h->exit_dport = line_port(p->last_dport, p->last_damaged);
    }
    map_move_to_end(&e->flows, entry);
}

static char *copy_of(const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}

static void row_free(void *r) {
    Row *row = r;
    free(row->first_time);
    free(row->last_time);
    free(row->example);
    free(row);
}

/* summary.example */
static int put_example(Buf *b, const Packet *p) {
    b->n = 0;
    if (p->f.ip_id != NONE)
        return PUTL(b, "ip id ") || put_int(b, p->f.ip_id);
    if (p->n_trace_ids)
        return PUTL(b, "trace id ") || put(b, p->trace_ids[0], p->trace_id_n[0]);
    if (p->has_first)
        return PUTL(b, "flow ") || puts_(b, p->first_src) || PUTL(b, " \xe2\x86\x92 ") || puts_(b, p->first_dst);
    return PUTL(b, "flow");
}

static int set_time(char **into, size_t *into_n, const Packet *p) {
    free(*into);
    *into = NULL;
    if (!p->time0)
        return 0;
    *into = copy_of(p->time0, p->time0_n);
    *into_n = p->time0_n;
    return *into ? 0 : -1;
}

/* summary.Summary.add */
static void add_row(Engine *e, const Packet *p, const Walk *w, int direction) {
    Buf *k = &e->key;
    k->n = 0;
    char d = (char)direction;
    int added;
    if (put(k, (const char *)&p->node, sizeof p->node) || put(k, &d, 1) || put(k, (const char *)&w->summary, sizeof w->summary)) {
        e->failed = 1;
        return;
    }
    Entry *entry = map_get(&e->rows, k->p, k->n);
    if (!entry) {
        if (e->rows.count >= SUMMARY_ROWS) {
            e->other++;
            if (w->verdict >= 0 && w->verdict < 3)
                e->other_verdicts[w->verdict]++;
            return;
        }
        entry = map_put(&e->rows, k->p, k->n, &added);
        Row *row = entry ? calloc(1, sizeof *row) : NULL;
        if (!row || put_example(&e->scratch, p) || set_time(&row->first_time, &row->first_time_n, p) ||
            set_time(&row->last_time, &row->last_time_n, p) ||
            !(row->example = copy_of(e->scratch.p, e->scratch.n))) {
            if (row)
                row_free(row);
            if (entry)
                map_remove(&e->rows, entry);
            e->failed = 1;
            return;
        }
        row->example_n = e->scratch.n;
        row->count = 1;
        row->first_seq = row->last_seq = p->seq;
        entry->value = row;
        return;
    }
    Row *row = entry->value;
    row->count++;
    if (p->seq < row->first_seq) {
        row->first_seq = p->seq;
        free(row->example);
        row->example = NULL;
        if (set_time(&row->first_time, &row->first_time_n, p) || put_example(&e->scratch, p) ||
            !(row->example = copy_of(e->scratch.p, e->scratch.n)))
            e->failed = 1;
        row->example_n = e->scratch.n;
    }
    if (p->seq > row->last_seq) {
        row->last_seq = p->seq;
        if (set_time(&row->last_time, &row->last_time_n, p))
            e->failed = 1;
    }
}

static void diagram_row_free(void *r) {
    DiagramRow *row = r;
    Py_XDECREF(row->walk);
    free(row);
}

/* diagram.DiagramBuilder.add */
static void add_diagram(Engine *e, const Packet *p, const Walk *w, int direction) {
    Buf *k = &e->key;
    k->n = 0;
    char d = (char)direction;
    int added;
    if (put(k, (const char *)&p->node, sizeof p->node) || put(k, &d, 1) || put(k, (const char *)&w->diagram, sizeof w->diagram)) {
        e->failed = 1;
        return;
    }
    Entry *entry = map_get(&e->diagram, k->p, k->n);
    if (entry) {
        DiagramRow *row = entry->value;
        row->count++;
        if (p->seq < row->min_seq) {
            row->min_seq = p->seq;
            Py_SETREF(row->walk, Py_NewRef(w->result));
        }
        return;
    }
    if (e->diagram.count >= DIAGRAM_WALKS)
        return;
    entry = map_put(&e->diagram, k->p, k->n, &added);
    DiagramRow *row = entry ? calloc(1, sizeof *row) : NULL;
    if (!row) {
        if (entry)
            map_remove(&e->diagram, entry);
        e->failed = 1;
        return;
    }
    row->min_seq = p->seq;
    row->count = 1;
    row->walk = Py_NewRef(w->result);
    entry->value = row;
}

static int put_step(Buf *b, const Packet *p, size_t i, const Walk *w) {
    const StepAt *at = &p->at[i];
    const char *step = p->steps.p + at->at;
    if (w->rules_null)
        return put(b, step, at->prefix_n + NULL_RULE_N + at->suffix_n);
    PyObject *rule = PyTuple_GET_ITEM(w->step_rules, (Py_ssize_t)i);
    if (!PyBytes_Check(rule))
        return -1;
    return put(b, step, at->prefix_n) || put(b, PyBytes_AS_STRING(rule), (size_t)PyBytes_GET_SIZE(rule)) ||
           put(b, step + at->prefix_n + NULL_RULE_N, at->suffix_n);
}

static int put_opt_str(Buf *b, const char *s, int has) { return has ? put_jstr(b, s, strlen(s)) : PUTL(b, "null"); }

/* PacketRecord._ends: a line's addresses and, for a packet with ports, its ports as read
 * (line_port). */
static int put_ends(Buf *b, const Packet *p, const char *src, const char *dst, long long sport, long long dport,
                    int damaged) {
    int err = PUTL(b, "{\"src\": ") || put_jstr(b, src, strlen(src)) || PUTL(b, ", \"dst\": ") ||
              put_jstr(b, dst, strlen(dst));
    if (p->f.sport != NONE || p->f.dport != NONE)
        err = err || PUTL(b, ", \"sport\": ") || put_opt_int(b, line_port(sport, damaged)) ||
              PUTL(b, ", \"dport\": ") || put_opt_int(b, line_port(dport, damaged));
    return err || PUTL(b, "}");
}

/* contract.PacketRecord.to_dict, as JSON: steps in the analysis's tables (all of them when
 * `filter` is 0), the walk's pieces from `w`. */
/* The steps list as append_step wrote it, after b's JSON: copied, or given `taken` (b is
 * `out` and goes to write_to()'s descriptor) left in the packet's buffer, which *taken says
 * then belongs to Engine.pieces. */
static int put_steps(Engine *e, Buf *b, const Packet *p, int *taken) {
    if (taken && p->steps.n) {
        if (e->n_pieces == e->cap_pieces) {
            size_t cap = e->cap_pieces ? 2 * e->cap_pieces : 256;
            struct OutPiece *pieces = realloc(e->pieces, cap * sizeof *pieces);
            if (!pieces)
                return -1;
            e->pieces = pieces;
            e->cap_pieces = cap;
        }
        e->pieces[e->n_pieces++] = (struct OutPiece){b->n, p->steps};
        *taken = 1;
        return 0;
    }
    return put(b, p->steps.p, p->steps.n);
}

static int render_packet(Engine *e, Buf *b, const Packet *p, const Walk *w, int direction, int filter, int *taken) {
    char protocol[8];
    lower_proto(p->f.proto, protocol);
    PyObject *node = e->node_json[p->node];
    int err = PUTL(b, "{\"node\": ") || put(b, PyBytes_AS_STRING(node), (size_t)PyBytes_GET_SIZE(node));
    err |= PUTL(b, ", \"direction\": \"") || puts_(b, DIRECTION_NAMES[direction]) || PUTL(b, "\", \"protocol\": ");
    err |= put_jstr(b, protocol, strlen(protocol));
    err |= PUTL(b, ", \"src\": ") || put_opt_str(b, p->has_first ? p->first_src : p->f.src, p->has_first || p->f.src[0]);
    err |= PUTL(b, ", \"dst\": ") || put_opt_str(b, p->has_first ? p->first_dst : p->f.dst, p->has_first || p->f.dst[0]);
    err |= PUTL(b, ", \"ip_id\": ") || put_opt_int(b, p->f.ip_id);
    err |= PUTL(b, ", \"identity\": \"") || puts_(b, IDENTITY_NAMES[p->identity]);
    err |= PUTL(b, "\", \"ttl\": ") || put_opt_int(b, p->has_first ? p->first_ttl : p->f.ttl);
    err |= PUTL(b, ", ") || put(b, w->hooks_json, (size_t)w->hooks_json_n);
    err |= PUTL(b, ", \"steps\": [");
    if (w->rules_null && !(filter && p->some_out_of_tables)) { /* the list as append_step wrote it */
        err |= put_steps(e, b, p, taken);
    } else {
        int first = 1;
        for (size_t i = 0; i < p->n_steps; i++) {
            if (filter && !p->at[i].in_tables)
                continue;
            if (!first)
                err |= PUTL(b, ", ");
            first = 0;
            err |= put_step(b, p, i, w);
        }
    }
    err |= PUTL(b, "], ") || put(b, w->verdict_json, (size_t)w->verdict_json_n);
    err |= PUTL(b, ", \"last_step\": ");
    err |= p->n_steps ? put_step(b, p, p->n_steps - 1, w) : PUTL(b, "null");
    err |= PUTL(b, ", \"new_connection\": ") || put(b, w->newconn_json, (size_t)w->newconn_json_n);
    err |= PUTL(b, ", \"entry\": ");
    err |= p->has_first ? put_ends(b, p, p->first_src, p->first_dst, p->first_sport, p->first_dport, p->first_damaged)
                        : PUTL(b, "null");
    err |= PUTL(b, ", \"exit\": ");
    err |= p->has_last ? put_ends(b, p, p->last_src, p->last_dst, p->last_sport, p->last_dport, p->last_damaged)
                       : PUTL(b, "null");
    err |= PUTL(b, ", \"repaired_lines\": ") || put_int(b, p->repaired);
    if (strcmp(p->f.proto, "ICMP") == 0 || strcmp(p->f.proto, "ICMPV6") == 0)
        err |= PUTL(b, ", \"icmp\": {\"type\": ") || put_opt_int(b, p->f.icmp_type) || PUTL(b, ", \"id\": ") ||
               put_opt_int(b, p->f.icmp_id) || PUTL(b, ", \"seq\": ") || put_opt_int(b, p->f.icmp_seq) || PUTL(b, "}");
    if (p->f.sport != NONE || p->f.dport != NONE)
        err |= PUTL(b, ", \"sport\": ") || put_opt_int(b, p->f.sport) || PUTL(b, ", \"dport\": ") ||
               put_opt_int(b, p->f.dport);
    if (p->f.flags) {
        err |= PUTL(b, ", \"tcp_flags\": [");
        int firstflag = 1;
        for (int i = 0; i < N_TCP_FLAGS; i++)
            if (p->f.flags & (1 << i)) {
                err |= puts_(b, firstflag ? "\"" : ", \"") || puts_(b, TCP_FLAG_NAMES[i]) || PUTL(b, "\"");
                firstflag = 0;
            }
        err |= PUTL(b, "]");
    }
    if (p->f.flow_label != NONE)
        err |= PUTL(b, ", \"flow_label\": ") || put_int(b, p->f.flow_label);
    if (p->n_trace_ids) {
        err |= PUTL(b, ", \"trace_ids\": [");
        for (size_t i = 0; i < p->n_trace_ids; i++)
            err |= (i && PUTL(b, ", ")) || put_jstr(b, p->trace_ids[i], p->trace_id_n[i]);
        err |= PUTL(b, "]");
    }
    return err || PUTL(b, "}");
}

static void add_item(Engine *e, PyObject *item) {
    if (!item || PyList_Append(e->items, item))
        call_failed(e);
    Py_XDECREF(item);
}

/* Analyzer._finish for one packet, then what the output mode keeps of it. */
static void finish_packet(Engine *e, Packet *p) {
    Walk *w = walk_of(e, p);
    if (!w)
        return;
    if (!p->f.proto[0] && w->proto && strlen(w->proto) < sizeof p->f.proto)
        strcpy(p->f.proto, w->proto);
    e->identities[p->identity]++;
    int direction = classify(e, p);
    if (!matches(e, p, w))
        return;
    e->matched++;
    e->repaired += p->repaired;
    if (e->mode != MODE_SUMMARY) /* the one format that prints no flows */
        add_hop(e, p, w, direction);
    int err = 0, taken = 0;
    if (e->mode == MODE_JSON) {
        err = (e->written ? PUTL(&e->out, ",\n  ") : PUTL(&e->out, "\n  ")) ||
              render_packet(e, &e->out, p, w, direction, !e->all_tables, e->out_fd ? &taken : NULL);
        e->written++;
    } else if (e->mode == MODE_TEXT) {
        if (e->kept < TEXT_PACKETS && p->json) {
            Buf b = {0};
            if (render_packet(e, &b, p, w, direction, 0, NULL))
                err = 1;
            else
                add_item(e, Py_BuildValue("(sLy#)", "packet", p->seq, b.p, (Py_ssize_t)b.n));
            free(b.p);
            e->kept++;
        }
        add_row(e, p, w, direction);
    } else if (e->mode == MODE_SUMMARY) {
        add_row(e, p, w, direction);
    } else {
        add_diagram(e, p, w, direction);
    }
    if (e->expect) {
        char protocol[8];
        lower_proto(p->f.proto, protocol);
        add_item(e, Py_BuildValue("(siisiO)", "expect", p->node, direction, protocol, (p->f.flags & 64) != 0, w->result));
    }
    if (taken)
        p->steps = (Buf){0};
    if (err)
        e->failed = 1;
}

static void process_done(Engine *e) {
    for (size_t i = 0; i < e->n_done; i++) {
        if (!e->error)
            finish_packet(e, e->done[i]);
        packet_release(e, e->done[i]);
    }
    e->n_done = 0;
}
