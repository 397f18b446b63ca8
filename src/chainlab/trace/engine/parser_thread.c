/* chainlab.trace._engine, the parser thread: included by _engine.c, in its order (uses what the parts
 * before it define). */

/* A kernel log is read by two threads: the parser thread reads chunk k's lines (splits them,
 * finds each header and parses its prefix and fields, the pure part of the work; reading the
 * file itself, up to SLOTS - 1 chunks ahead) while the thread that called feed() or
 * feed_from() assembles an earlier chunk's (packets, walks, output: what needs the
 * engine's state and Python). A line the parser does not read the common way (no header
 * where expected, glued, bytes >= 0x80, too long) goes over as it is, and is read by
 * feed_line then, in its place: the result is the same as reading every line in one thread. */

enum { L_FAST, L_SLOW, L_IGNORED };

typedef struct {
    int kind;
    int cut, repeat;         /* L_SLOW: the line was cut; L_FAST: its fields are the previous line's */
    size_t at, n;            /* L_FAST, L_SLOW: the line is data[at:at+n]; L_IGNORED: n lines */
    size_t fields;           /* L_FAST: index in Batch.fields */
    Header h;                /* L_FAST: pointers into data */
    Ref host, time;          /* L_FAST: in data (n -1: none) */
    int host_id;             /* L_FAST: Parser.hosts index of host; -1: no host, -2: not kept there */
    size_t tail_at, tail_n;  /* L_FAST, json: its step JSON's end in Batch.tails (see parser_tail) */
    int table_index, chain_hook;
    uint64_t header_id;      /* L_FAST: the header slot's id */
} Parsed;

/* at most this many lines a chunk (the rest of a chunk of tiny lines is read by feed_lines) */
#define BATCH_LINES 16384

typedef struct {
    Parsed *lines;
    size_t n;
    Fields *fields; /* their texts point into data */
    size_t n_fields;
    Buf tails;      /* json: the lines' step JSON ends */
    size_t limit;   /* lines the parser takes (at most BATCH_LINES): see share */
    size_t start, stop, end; /* lines data[start:stop] read; data[stop:end] left to feed_lines; data[end:] unfinished */
    int failed;
} Batch;

/* feed_from: chunks the parser reads and parses ahead of the one being assembled (the other
 * slots). With one only, the parser stopped whenever the assembling thread was slow on a chunk
 * (judging new walks in Python, mostly), and that thread waited whenever the parser was: in a
 * json run of a 1 GiB log the two idled ~0.2 s and ~0.08 s. Each slot: a chunk (1 MiB) and its
 * batch (~2 MB of it used). */
#define SLOTS 4

#ifdef PARSER_THREAD
typedef struct Parser {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy, quit;
    size_t limit; /* lines of a chunk the parser takes; the assembling thread reads the rest (see share) */
    const char *data; /* the job: the lines of data[batch->start:n] */
    size_t n;
    Batch *batch;
    Caches caches;
    int prev_fast; /* the last line read went into the batch as L_FAST */
    int want_tails; /* json: render each line's step JSON end here (parser_tail) */
    Ref tail_mark, tail_time; /* what the last tail rendered in this chunk was made of */
    size_t tail_at, tail_n;   /* and where it is (tail_n 0: none yet) */
    /* the last prefix parsed: its text and where host and time are in it */
    Buf prefix;
    int has_prefix;
    Py_ssize_t host_at, host_n, time_at, time_n;
    int host_id;
    /* the host names read so far, each given an id: the assembler then looks a line's node up
     * by it, without reading the line again (a line it does not otherwise read, most of the
     * time: reading it would cost a cache miss, the line was read on the other core). Entries
     * are only added (while the assembler reads those of the chunks handed over). */
    struct { char *s; size_t n; } hosts[PARSER_HOSTS];
    int n_hosts;
    int host_slots[2 * PARSER_HOSTS]; /* open addressing by hash: index + 1, 0: empty */
    Batch batches[SLOTS];
    /* feed(): two slots take turns, the one being parsed (or parsed) is views[current] */
    Py_buffer views[2];
    int held[2], current, pending;
    /* feed_from: the parser reads the file itself into the ring bufs[head], bufs[head + 1]...
     * while the assembling thread assembles bufs[tail]: `filled` chunks read and parsed, not
     * yet assembled (the one being assembled among them) */
    int fd;
    char *bufs[SLOTS]; /* of `size` bytes, the size of a read */
    size_t size, got[SLOTS];
    int read_errno[SLOTS]; /* that read failed */
    int reading;     /* feed_from has a file in the ring */
    int head, tail, filled;
    int at_end;      /* the last chunk read was the file's end (or a failed read): no more */
    int working;     /* the parser is reading and parsing bufs[head] */
    int carry_ahead; /* the chunks read so far end inside a line */
} Parser;

/* feed_from's job for the parser: read the next chunk of ps->fd into bufs[k] (then it is parsed). */
static void read_chunk(Parser *ps, int k) {
    size_t got = 0;
    ps->read_errno[k] = 0;
    while (got < ps->size) {
        ssize_t r = read(ps->fd, ps->bufs[k] + got, ps->size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            ps->read_errno[k] = errno;
            break;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    ps->data = ps->bufs[k];
    ps->n = ps->got[k] = got;
    size_t start = 0; /* after the end of the line the chunks before it left open */
    if (ps->carry_ahead) {
        const char *nl = memchr(ps->data, '\n', got);
        start = nl ? (size_t)(nl - ps->data) + 1 : got;
    }
    const char *last = got ? memrchr(ps->data, '\n', got) : NULL;
    ps->carry_ahead = last ? (size_t)(last - ps->data) + 1 < got : (ps->carry_ahead || got > 0);
    ps->batch->start = start;
}

static Parsed *batch_add(Batch *b, int kind) {
    if (b->n == b->limit)
        return NULL;
    Parsed *l = &b->lines[b->n++];
    l->kind = kind;
    l->cut = l->repeat = 0;
    return l;
}

/* `count` lines that are only counted; 0 when the batch is full. */
static int batch_ignored(Batch *b, size_t count) {
    if (b->n && b->lines[b->n - 1].kind == L_IGNORED) {
        b->lines[b->n - 1].n += count;
        return 1;
    }
    Parsed *l = batch_add(b, L_IGNORED);
    if (l)
        l->n = count;
    return l != NULL;
}

/* json: put_step_end of a kernel line (its mark and time), written here on the parser thread
 * (the assembling thread is the busier one); the last line's when its mark and time texts are
 * the same (most lines). */
static int parser_tail(Parser *ps, Batch *b, Parsed *l, const Fields *f) {
    if (ps->tail_n && ref_eq(ps->tail_mark, f->mark) && ref_eq(ps->tail_time, l->time)) {
        l->tail_at = ps->tail_at, l->tail_n = ps->tail_n;
        return 0;
    }
    Buf *t = &b->tails;
    size_t at = t->n;
    if (put_step_end(t, (Ref){NULL, -1}, (Ref){NULL, -1}, f->mark, l->time, -1))
        return -1;
    ps->tail_mark = f->mark, ps->tail_time = l->time;
    l->tail_at = ps->tail_at = at;
    l->tail_n = ps->tail_n = t->n - at;
    return 0;
}

/* The id of host name s[0:n] (added if new), -2: the table is full, -3: no memory. */
static int parser_host(Parser *ps, const char *s, size_t n) {
    size_t mask = 2 * PARSER_HOSTS - 1, i = hash_bytes(s, n) & mask;
    for (; ps->host_slots[i]; i = (i + 1) & mask) {
        int id = ps->host_slots[i] - 1;
        if (ps->hosts[id].n == n && memcmp(ps->hosts[id].s, s, n) == 0)
            return id;
    }
    if (ps->n_hosts == PARSER_HOSTS)
        return -2;
    char *copy = malloc(n ? n : 1);
    if (!copy)
        return -3;
    memcpy(copy, s, n);
    int id = ps->n_hosts++;
    ps->hosts[id].s = copy;
    ps->hosts[id].n = n;
    ps->host_slots[i] = id + 1;
    return id;
}

/* One line data[at:at+n] of a kernel log (n already cut to LINE_LIMIT): the common way, or
 * handed over as it is; 0 when the batch is full. */
static int parse_line(Parser *ps, Batch *b, const char *data, size_t at, size_t n, int cut) {
    const char *line = data + at;
    size_t m = n;
    while (m && line[m - 1] == '\r')
        m--;
    const char *first = cut ? NULL : find_str(line, m, 0, "TRACE:", 6);
    Parsed *l;
    if (!cut && !first) /* feed_line: a line without a marker is only counted */
        return batch_ignored(b, 1);
    Header h;
    const struct HeaderSlot *names = NULL;
    int repeated = 0;
    size_t fa = first ? (size_t)(first - line) : 0;
    /* a line that starts with a NUL byte goes to feed_line, which drops them (a byte-order
     * mark is a high byte) */
    int common = first && fa + 6 < m && first[6] == ' ' && line[0] != '\0' && !has_high_bytes((const unsigned char *)line, m) &&
                 cached_header(&ps->caches, line, m, fa, &h, &names) && names;
    Fields f;
    if (common) /* the previous line's fields can be this one's: see below */
        common = !cached_fields(&ps->caches, line + h.end, m - h.end, &f, ps->prev_fast && b->n_fields ? &repeated : NULL);
    if (!common) {
        if (!(l = batch_add(b, L_SLOW)))
            return 0;
        l->at = at;
        l->n = n;
        l->cut = cut;
        ps->prev_fast = 0;
        return 1;
    }
    if (!(l = batch_add(b, L_FAST)))
        return 0;
    l->at = at;
    l->n = m;
    l->h = h;
    l->table_index = names->table_index;
    l->chain_hook = names->chain_hook;
    l->header_id = names->id;
    /* the prefix: node and time (parse_prefix, the last one remembered) */
    size_t pn = h.start;
    if (!(ps->has_prefix && ps->prefix.n == pn && memcmp(ps->prefix.p ? ps->prefix.p : "", line, pn) == 0)) {
        ps->has_prefix = 0;
        ps->prefix.n = 0;
        if (put(&ps->prefix, line, pn)) {
            b->failed = 1;
            return 0;
        }
        Ref host, time;
        parse_prefix(line, pn, &host, &time, NULL);
        ps->host_at = host.n < 0 ? 0 : host.s - line, ps->host_n = host.n;
        ps->time_at = time.n < 0 ? 0 : time.s - line, ps->time_n = time.n;
        ps->host_id = host.n > 0 ? parser_host(ps, host.s, (size_t)host.n) : -1;
        if (ps->host_id == -3) {
            b->failed = 1;
            return 0;
        }
        ps->has_prefix = 1;
    }
    l->host_id = ps->host_id;
    l->host = (Ref){line + ps->host_at, ps->host_n};
    l->time = (Ref){line + ps->time_at, ps->time_n};
    /* the fields: the previous line's, or a copy whose texts point into this line */
    l->tail_n = 0;
    if (repeated) {
        l->fields = b->n_fields - 1;
        l->repeat = 1;
        if (ps->want_tails && parser_tail(ps, b, l, &b->fields[l->fields])) {
            b->failed = 1;
            return 0;
        }
        return 1;
    }
    l->fields = b->n_fields;
    b->fields[b->n_fields++] = f;
    ps->prev_fast = 1;
    if (ps->want_tails && parser_tail(ps, b, l, &f)) {
        b->failed = 1;
        return 0;
    }
    return 1;
}

/* The parser thread's work on one chunk: feed_lines' loop over data[start:end]. */
static void parse_batch(Parser *ps, const char *data, size_t n, Batch *b) {
    b->n = b->n_fields = b->tails.n = 0;
    b->failed = 0;
    ps->prev_fast = 0;
    ps->tail_n = 0; /* a tail's texts are in this chunk */
    const char *last = n ? memrchr(data + b->start, '\n', n - b->start) : NULL;
    b->end = last ? (size_t)(last - data) + 1 : b->start;
    size_t pos = b->start;
    while (pos < b->end) {
        size_t line_at = pos;
        if (data[pos] == '\n') { /* a run of empty lines: only counted */
            size_t q = pos;
            while (q < b->end && data[q] == '\n')
                q++;
            if (!batch_ignored(b, q - pos))
                break;
            pos = q;
            continue;
        }
        const char *nl = memchr(data + pos, '\n', b->end - pos);
        size_t len = (size_t)(nl - data) - pos;
        if (!parse_line(ps, b, data, pos, len > LINE_LIMIT ? LINE_LIMIT : len, len > LINE_LIMIT) || b->failed) {
            pos = line_at;
            break;
        }
        pos = (size_t)(nl - data) + 1;
    }
    b->stop = pos;
}

static void *parser_main(void *arg) {
    Parser *ps = arg;
    pthread_mutex_lock(&ps->mu);
    while (!ps->quit) {
        if (ps->reading && !ps->at_end && ps->filled < SLOTS) { /* feed_from: the next chunk */
            int k = ps->head;
            ps->batch = &ps->batches[k];
            ps->batch->limit = ps->limit;
            ps->working = 1;
            pthread_mutex_unlock(&ps->mu);
            read_chunk(ps, k);
            parse_batch(ps, ps->data, ps->n, ps->batch);
            pthread_mutex_lock(&ps->mu);
            ps->working = 0;
            ps->head = (k + 1) % SLOTS;
            ps->filled++;
            ps->at_end = ps->got[k] == 0 || ps->read_errno[k];
            pthread_cond_broadcast(&ps->cv);
        } else if (ps->busy) { /* feed(): the chunk handed over */
            pthread_mutex_unlock(&ps->mu);
            parse_batch(ps, ps->data, ps->n, ps->batch);
            pthread_mutex_lock(&ps->mu);
            ps->busy = 0;
            pthread_cond_broadcast(&ps->cv);
        } else {
            pthread_cond_wait(&ps->cv, &ps->mu);
        }
    }
    pthread_mutex_unlock(&ps->mu);
    return NULL;
}

/* The two threads' shares follow who waits (called with ps->mu held): when the assembling
 * thread was kept waiting for a parsed chunk, the parser takes fewer of a chunk's lines (that
 * thread reads the rest after assembling, with feed_lines: the same result); when a chunk was
 * ready, it takes more again. */
static void share(Parser *ps, int waited) {
    if (waited)
        ps->limit = ps->limit > 512 ? ps->limit - ps->limit / 16 : 256;
    else
        ps->limit = ps->limit + ps->limit / 16 < BATCH_LINES ? ps->limit + ps->limit / 16 : BATCH_LINES;
}

/* Until a parsed chunk is there (without the GIL: it may take a while): feed()'s, the parser
 * done with the one handed over (`ring` 0), or feed_from's, the ring holding one (`ring` 1). */
static void parser_wait(Parser *ps, int ring) {
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&ps->mu);
    int waited = 0;
    while (ring ? !ps->filled : ps->busy) {
        waited = 1;
        pthread_cond_wait(&ps->cv, &ps->mu);
    }
    share(ps, waited);
    pthread_mutex_unlock(&ps->mu);
    Py_END_ALLOW_THREADS
}

static void parser_free(Parser *ps) {
    if (!ps)
        return;
    pthread_mutex_lock(&ps->mu);
    ps->quit = 1;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
    pthread_join(ps->thread, NULL);
    pthread_mutex_destroy(&ps->mu);
    pthread_cond_destroy(&ps->cv);
    for (int i = 0; i < 2; i++)
        if (ps->held[i])
            PyBuffer_Release(&ps->views[i]);
    for (int i = 0; i < SLOTS; i++) {
        free(ps->batches[i].lines);
        free(ps->batches[i].fields);
        free(ps->batches[i].tails.p);
        free(ps->bufs[i]);
    }
    for (int i = 0; i < ps->n_hosts; i++)
        free(ps->hosts[i].s);
    free(ps->caches.headers);
    free(ps->caches.fields);
    free(ps->prefix.p);
    free(ps);
}

/* The parser thread, started (NULL: no memory, or no thread: feed_lines reads everything). */
static Parser *parser_start(int want_tails) {
    Parser *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->fd = -1;
    ps->want_tails = want_tails;
    ps->limit = BATCH_LINES;
    for (int i = 0; i < SLOTS; i++) {
        ps->batches[i].lines = malloc(BATCH_LINES * sizeof(Parsed));
        ps->batches[i].fields = malloc(BATCH_LINES * sizeof(Fields));
        if (!ps->batches[i].lines || !ps->batches[i].fields) {
            for (int j = 0; j <= i; j++)
                free(ps->batches[j].lines), free(ps->batches[j].fields);
            free(ps);
            return NULL;
        }
    }
    pthread_mutex_init(&ps->mu, NULL);
    pthread_cond_init(&ps->cv, NULL);
    if (pthread_create(&ps->thread, NULL, parser_main, ps)) {
        pthread_mutex_destroy(&ps->mu);
        pthread_cond_destroy(&ps->cv);
        for (int i = 0; i < SLOTS; i++)
            free(ps->batches[i].lines), free(ps->batches[i].fields);
        free(ps);
        return NULL;
    }
    return ps;
}

/* kernel_line's common case for a line the parser read. */
static void fast_line(Engine *e, const Parsed *l, const Batch *b) {
    e->lines++;
    e->line_no++;
    int node = e->line_node;
    if (l->host.n > 0 && e->from_lines) {
        int id = l->host_id, known = id >= 0 ? e->host_nodes[id] : -1;
        if (known >= 0) {
            node = known;
        } else {
            known = id >= 0 ? node_number(e, e->parser->hosts[id].s, e->parser->hosts[id].n)
                            : node_number(e, l->host.s, (size_t)l->host.n);
            if (known >= 0 && id >= 0)
                e->host_nodes[id] = known;
            node = known >= 0 ? known : e->line_node;
        }
    }
    Rec r = {node, l->h.table, l->h.chain, l->h.table_n, l->h.chain_n, l->h.kind, l->h.pos, l->h.pos_n,
             {NULL, -1}, {NULL, -1}, {NULL, -1}, -1, &b->fields[l->fields], {NULL, -1}, -1, l->time,
             1, l->table_index, l->chain_hook, l->repeat, l->header_id,
             l->tail_n ? b->tails.p + l->tail_at : NULL, l->tail_n, 1};
    e->records++;
    feed_record(e, &r);
}

/* Assemble a parsed chunk, in the order of its lines (see Engine_feed). */
static void assemble_batch(Engine *e, const char *data, size_t n, const Batch *b) {
    if (e->carrying && n)
        complete_carry(e, data, n);
    const Parsed *prev = NULL;
    for (size_t i = 0; i < b->n && !e->error && !e->failed; i++) {
        const Parsed *l = &b->lines[i];
        if (l->kind == L_FAST) {
            if (l->repeat && !(prev && prev->kind == L_FAST)) { /* a slow line came between */
                Parsed copy = *l;
                copy.repeat = 0;
                fast_line(e, &copy, b);
            } else {
                fast_line(e, l, b);
            }
        } else if (l->kind == L_SLOW) {
            feed_line(e, data + l->at, l->n, l->cut);
        } else {
            e->lines += (long long)l->n;
            e->line_no += (long long)l->n;
            e->ignored += (long long)l->n;
        }
        if (l->kind != L_IGNORED)
            prev = l;
    }
    if (!e->error && !e->failed)
        feed_lines(e, data, b->end, b->stop); /* what the batch had no room for */
    if (b->end < n && !e->error && !e->failed)
        feed_lines(e, data, n, b->end); /* the unfinished last line: carried */
    own_last(e); /* the batch's fields are about to be parsed over */
}

/* feed(): give the parser its next job, parse data[start:n] into batch k. */
static void parser_go(Parser *ps, int k, const char *data, size_t n) {
    pthread_mutex_lock(&ps->mu);
    ps->current = k;
    ps->data = data;
    ps->n = n;
    ps->batch = &ps->batches[k];
    ps->batch->limit = ps->limit;
    ps->busy = 1;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
}

static void parser_stop_reading(Parser *ps);

/* feed_from on a kernel log: the parser reads and parses the chunks after chunk k (as many as
 * the ring holds) while chunk k is assembled. 1: a chunk was read; 0: the file ended; -1: a
 * read failed (the error is set). */
static int feed_from_parallel(Engine *e, int fd, size_t size) {
    Parser *ps = e->parser;
    if (!ps->reading) { /* the file's first chunk */
        if (ps->size != size) {
            ps->size = size;
            for (int i = 0; i < SLOTS; i++) {
                free(ps->bufs[i]);
                if (!(ps->bufs[i] = malloc(size)))
                    ps->size = 0;
            }
            if (!ps->size)
                return e->failed = 1, 1;
        }
        pthread_mutex_lock(&ps->mu);
        ps->fd = fd;
        ps->head = ps->tail = ps->filled = ps->at_end = 0;
        ps->reading = 1;
        pthread_cond_broadcast(&ps->cv);
        pthread_mutex_unlock(&ps->mu);
    }
    parser_wait(ps, 1);
    int k = ps->tail, failed = ps->read_errno[k];
    if (failed || ps->got[k] == 0) {
        parser_stop_reading(ps);
        if (!failed)
            return 0;
        errno = failed;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    assemble_batch(e, ps->bufs[k], ps->got[k], &ps->batches[k]);
    pthread_mutex_lock(&ps->mu);
    ps->tail = (k + 1) % SLOTS;
    ps->filled--;
    pthread_cond_broadcast(&ps->cv);
    pthread_mutex_unlock(&ps->mu);
    return 1;
}

/* feed_from is done with its file (at its end, or stopped before it): the parser finishes the
 * chunk it is reading and forgets the descriptor (what it read ahead goes). */
static void parser_stop_reading(Parser *ps) {
    if (!ps || !ps->reading)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&ps->mu);
    ps->reading = 0;
    while (ps->working)
        pthread_cond_wait(&ps->cv, &ps->mu);
    ps->head = ps->tail = ps->filled = 0;
    ps->fd = -1;
    pthread_mutex_unlock(&ps->mu);
    Py_END_ALLOW_THREADS
}

/* Assemble the chunk the parser holds, if any, and let it go. */
static void parser_drain(Engine *e) {
    Parser *ps = e->parser;
    parser_stop_reading(ps);
    if (!ps || !ps->pending)
        return;
    parser_wait(ps, 0);
    int k = ps->current;
    ps->pending = 0;
    assemble_batch(e, ps->views[k].buf, (size_t)ps->views[k].len, &ps->batches[k]);
    PyBuffer_Release(&ps->views[k]);
    ps->held[k] = 0;
}

/* feed() on a kernel log with the parser thread: chunk k goes to the parser, chunk k-1 is
 * assembled meanwhile. 0: done; -1: the caller reads the chunk itself (no parser thread). */
static int feed_parallel(Engine *e, PyObject *arg) {
    if (!e->parser && !(e->parser = parser_start(e->mode == MODE_JSON)))
        return -1;
    Parser *ps = e->parser;
    int k = 1 - ps->current;
    if (PyObject_GetBuffer(arg, &ps->views[k], PyBUF_SIMPLE)) {
        call_failed(e);
        return 0;
    }
    ps->held[k] = 1;
    const char *data = ps->views[k].buf;
    size_t n = (size_t)ps->views[k].len;
    parser_wait(ps, 0);
    /* where chunk k's own lines start: after the end of the line the chunks before it left open */
    size_t start = 0;
    if (e->carry_ahead) {
        const char *nl = memchr(data, '\n', n);
        start = nl ? (size_t)(nl - data) + 1 : n;
    }
    const char *last = n ? memrchr(data, '\n', n) : NULL;
    e->carry_ahead = last ? (size_t)(last - data) + 1 < n : (e->carry_ahead || n > 0);
    int previous = ps->pending ? ps->current : -1;
    ps->batches[k].start = start;
    parser_go(ps, k, data, n);
    if (previous >= 0) {
        assemble_batch(e, ps->views[previous].buf, (size_t)ps->views[previous].len, &ps->batches[previous]);
        PyBuffer_Release(&ps->views[previous]);
        ps->held[previous] = 0;
    }
    ps->pending = 1;
    return 0;
}
#endif
