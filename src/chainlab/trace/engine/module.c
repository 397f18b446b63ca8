/* chainlab.trace._engine, Python interface: included by _engine.c, in its order (uses what the parts
 * before it define). */

static int engine_ready(Engine *e, int in_file) {
    if (!e->calls)
        PyErr_SetString(PyExc_RuntimeError, "Engine.__init__ was not called");
    else if (in_file == 1 && !e->in_file)
        PyErr_SetString(PyExc_RuntimeError, "feed() or end() outside begin() ... end()");
    else if (in_file == 0 && e->in_file)
        PyErr_SetString(PyExc_RuntimeError, "begin() or flush() before end() of the last file");
    else
        return 1;
    return 0;
}

/* A failed write to write_to()'s descriptor, its errno as argument: not an OSError, so that
 * it is not taken for a read error of the log. */
static PyObject *WriteError;

static PyObject *write_failed(int err) {
    PyObject *code = PyLong_FromLong(err);
    if (code) {
        PyErr_SetObject(WriteError, code);
        Py_DECREF(code);
    }
    return NULL;
}

#ifdef _WIN32
struct iovec {
    void *iov_base;
    size_t iov_len;
};

/* The first buffer (write_iov writes the others after it). */
static Py_ssize_t writev(int fd, const struct iovec *iov, int count) {
    return count ? _write(fd, iov->iov_base, iov->iov_len < INT_MAX ? (unsigned)iov->iov_len : INT_MAX) : 0;
}
#endif

/* iov[0:count] (none empty) to fd, all of it: 0, an errno, or -1 when a signal's handler
 * raised. A signal cuts a pipe's write short (or fails it with EINTR): Ctrl-C while the
 * reader does not read is a KeyboardInterrupt, as for Python's own writes. */
static int write_iov(int fd, struct iovec *iov, int count) {
    while (count) {
        Py_ssize_t w;
        int err = 0;
        Py_BEGIN_ALLOW_THREADS
        w = writev(fd, iov, count);
        if (w < 0)
            err = errno;
        Py_END_ALLOW_THREADS
        if (w == 0 || (w < 0 && err != EINTR))
            return w < 0 ? err : EIO;
        for (; w > 0 && (size_t)w >= iov->iov_len; iov++, count--)
            w -= (Py_ssize_t)iov->iov_len;
        if (w > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
        if (count && PyErr_CheckSignals())
            return -1;
    }
    return 0;
}

#if defined(IOV_MAX) && IOV_MAX < 512
#define WRITE_IOVS IOV_MAX
#else
#define WRITE_IOVS 512 /* Linux, macOS and the BSDs take 1024 */
#endif

/* `out` and the steps lists left in place (Engine.pieces), in order, to write_to()'s
 * descriptor, as write_iov; then `out` is empty and the pieces' buffers serve packets again. */
static int write_out(Engine *e) {
    struct iovec iov[WRITE_IOVS];
    int result = 0;
    size_t pieces = e->n_pieces, from = 0; /* out[from:] and pieces[i:] are still to go */
    for (size_t i = 0; !result && i <= pieces;) {
        int count = 0;
        for (; i <= pieces && count + 2 <= WRITE_IOVS; i++) { /* out up to piece i, piece i */
            size_t to = i < pieces ? e->pieces[i].at : e->out.n;
            if (to > from)
                iov[count++] = (struct iovec){e->out.p + from, to - from};
            from = to;
            if (i < pieces)
                iov[count++] = (struct iovec){e->pieces[i].steps.p, e->pieces[i].steps.n};
        }
        if (count)
            result = write_iov(e->out_fd - 1, iov, count);
    }
    e->out.n = 0;
    for (size_t i = 0; i < pieces; i++) {
        if (e->n_free_steps < SPARE_PACKETS &&
            (e->free_steps || (e->free_steps = malloc(SPARE_PACKETS * sizeof *e->free_steps))))
            e->free_steps[e->n_free_steps++] = e->pieces[i].steps;
        else
            free(e->pieces[i].steps.p);
    }
    e->n_pieces = 0;
    return result;
}

/* What feed/end/flush give back: the JSON written so far, or the error that stopped them. */
static PyObject *hand_over(Engine *e) {
    if (e->error) {
        PyObject *error = e->error;
        if (error == Py_None)
            PyErr_SetString(PyExc_RuntimeError, "a call into Python failed");
        else
            PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        return NULL;
    }
    if (e->failed)
        return PyErr_NoMemory();
    if (e->write_errno) /* a write failed: no later JSON goes out with a gap before it */
        return write_failed(e->write_errno);
    if (e->out_fd) { /* straight to the descriptor: no bytes object to fill and for Python to copy */
        int err = write_out(e);
        if (err > 0)
            return write_failed(e->write_errno = err);
        if (err < 0) {
            e->write_errno = EINTR;
            return NULL;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(e->out.p ? e->out.p : "", (Py_ssize_t)e->out.n);
    e->out.n = 0;
    return out;
}

static int str_list(PyObject *seq, char ***items, size_t **lens, size_t *n) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of str");
    if (!fast)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    *items = calloc((size_t)count + 1, sizeof **items);
    *lens = calloc((size_t)count + 1, sizeof **lens);
    if (!*items || !*lens) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(fast, i), &len);
        if (!s || !((*items)[i] = copy_of(s, (size_t)len))) {
            Py_DECREF(fast);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return -1;
        }
        (*lens)[i] = (size_t)len;
        (*n)++;
    }
    Py_DECREF(fast);
    return 0;
}

static int int_list(PyObject *seq, long long **items, size_t *n) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of int");
    if (!fast)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    *items = calloc((size_t)count + 1, sizeof **items);
    if (!*items) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        (*items)[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        (*n)++;
    }
    Py_DECREF(fast);
    return 0;
}

PyDoc_STRVAR(engine_doc,
             "Engine(calls, mode, expect, tables, protocols, ports, ip_ids, match_src, match_dst, match, declared, window)\n"
             "calls: node_added(node, name) -> (json, ok), slot_added(node, hook, table), judge(node, steps,\n"
             "at_end, entered, proto_none) -> walk tuple, address_ok(which, address) -> bool (see native.py);\n"
             "mode: 0 json, 1 text, 2 summary, 3 diagram; tables: names or None; declared: {key: hook + 1}.");

static int Engine_init(Engine *e, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"calls", "mode", "expect", "tables", "protocols", "ports", "ip_ids", "match_src", "match_dst",
                         "match", "declared", "window", NULL};
    PyObject *calls, *tables, *protocols, *ports, *ip_ids, *declared;
    int mode, expect, match_src, match_dst, match, window = 400;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OipOOOOpppO|i", kw, &calls, &mode, &expect, &tables, &protocols, &ports,
                                     &ip_ids, &match_src, &match_dst, &match, &declared, &window))
        return -1;
    if (e->calls) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is already initialised");
        return -1;
    }
    if (window < 1 || mode < MODE_JSON || mode > MODE_DIAGRAM || !PyDict_Check(declared)) {
        PyErr_SetString(PyExc_ValueError, "window must be positive, mode 0-3, declared a dict");
        return -1;
    }
    e->all_tables = tables == Py_None;
    if ((!e->all_tables && str_list(tables, &e->tables, &e->table_lens, &e->n_tables)) ||
        str_list(protocols, &e->protocols, &e->protocol_lens, &e->n_protocols) || int_list(ports, &e->ports, &e->n_ports) ||
        int_list(ip_ids, &e->ip_ids, &e->n_ip_ids))
        return -1;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(declared, &pos, &key, &value)) {
        int added;
        if (!PyBytes_Check(key) || !PyLong_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "declared: bytes -> int");
            return -1;
        }
        Entry *d = map_put(&e->declared, PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key), &added);
        if (!d) {
            PyErr_NoMemory();
            return -1;
        }
        d->number = PyLong_AsLongLong(value);
    }
    if (!(e->items = PyList_New(0)))
        return -1;
    e->calls = Py_NewRef(calls);
    e->mode = mode;
    e->expect = expect;
    e->match = match;
    e->match_src = match_src;
    e->match_dst = match_dst;
    e->window = window;
    e->line_node = -1;
    for (int i = 0; i < PARSER_HOSTS; i++)
        e->host_nodes[i] = -1;
    return 0;
}

static void Engine_dealloc(Engine *e) {
#ifdef PARSER_THREAD
    parser_free(e->parser);
#endif
    while (e->head) {
        Packet *p = e->head;
        lru_unlink(e, p);
        packet_free(p);
    }
    for (size_t i = 0; i < e->n_done; i++)
        packet_free(e->done[i]);
    while (e->spare) {
        Packet *p = e->spare;
        e->spare = p->next;
        packet_free(p);
    }
    for (int i = 0; i < e->n_nodes; i++) {
        free(e->node_names[i]);
        Py_XDECREF(e->node_json[i]);
    }
    for (size_t i = 0; i < e->n_tables; i++)
        free(e->tables[i]);
    for (size_t i = 0; i < e->n_protocols; i++)
        free(e->protocols[i]);
    void *arrays[] = {e->node_names, e->node_lens, e->table_masks, e->began, e->slot_version, e->node_json, e->node_ok,
                      e->event_order, e->done, e->headers, e->tables, e->table_lens, e->protocols, e->protocol_lens,
                      e->ports, e->ip_ids, e->words.w, e->caches.headers, e->caches.fields, e->read_buf, e->heads};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++)
        free(arrays[i]);
    Buf *bufs[] = {&e->last_text, &e->last_tid, &e->carry, &e->text, &e->prefix_text, &e->scratch,
                   &e->scratch2, &e->verdict, &e->key, &e->out, &e->step_text};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]->p);
    for (size_t i = 0; i < e->n_pieces; i++)
        free(e->pieces[i].steps.p);
    for (size_t i = 0; i < e->n_free_steps; i++)
        free(e->free_steps[i].p);
    free(e->pieces);
    free(e->free_steps);
    map_clear(&e->declared, NULL);
    map_clear(&e->by_trace, NULL);
    map_clear(&e->nodes, NULL);
    map_clear(&e->slots, NULL);
    map_clear(&e->nft_packets, nft_packet_free);
    map_clear(&e->pending, free);
    map_clear(&e->walks, walk_free);
    map_clear(&e->step_objects, decref_value);
    map_clear(&e->directions, NULL);
    map_clear(&e->flows, hops_free);
    map_clear(&e->rows, row_free);
    map_clear(&e->diagram, diagram_row_free);
    map_clear(&e->addresses, NULL);
    Py_XDECREF(e->calls);
    Py_XDECREF(e->items);
    Py_XDECREF(e->error);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

PyDoc_STRVAR(begin_doc, "begin(node, from_lines, format): the following chunks are a new file (lines count from 1)\n"
                        "of `node` (str); with from_lines each kernel line's syslog host field names its node;\n"
                        "format: 0 kernel, 1 xtables-monitor, 2 nft monitor.");

static PyObject *Engine_begin(Engine *e, PyObject *args) {
    PyObject *name;
    int from_lines, format;
    if (!engine_ready(e, 0) || !PyArg_ParseTuple(args, "Upi", &name, &from_lines, &format))
        return NULL;
    if (format < FMT_KERNEL || format > FMT_NFT) {
        PyErr_SetString(PyExc_ValueError, "format must be 0, 1 or 2");
        return NULL;
    }
    PyObject *encoded = PyUnicode_AsEncodedString(name, "utf-8", "surrogatepass");
    if (!encoded)
        return NULL;
    int node = node_number(e, PyBytes_AS_STRING(encoded), (size_t)PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    if (node < 0)
        return hand_over(e);
    e->line_node = node;
    e->from_lines = from_lines;
    e->format = format;
    e->has_prefix = 0;
    e->line_no = 0;
    e->in_file = 1;
    e->carrying = e->carry_cut = 0;
    e->carry_ahead = 0;
#ifdef PARSER_THREAD
    if (e->parser) /* the file's reading starts anew (feed_from called again after the end of a
                    * file that grew goes on from where it ended) */
        e->parser->carry_ahead = 0;
#endif
    e->carry.n = 0;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(feed_doc, "feed(chunk) -> JSON written: `chunk` is the next piece of the file, any bytes; its last line\n"
                       "may go on in the next chunk.");

static PyObject *Engine_feed(Engine *e, PyObject *arg) {
    Py_buffer view;
    if (!engine_ready(e, 1))
        return NULL;
#ifdef PARSER_THREAD
    if (e->parser && e->parser->reading) { /* its batches are the ring's */
        PyErr_SetString(PyExc_RuntimeError, "feed() while feed_from() reads a file: end() the file first");
        return NULL;
    }
#endif
    if (e->error || e->failed || e->write_errno)
        return hand_over(e);
#ifdef PARSER_THREAD
    if (e->format == FMT_KERNEL && feed_parallel(e, arg) == 0)
        return hand_over(e);
#endif
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE))
        return NULL;
    const char *data = view.buf;
    size_t n = (size_t)view.len, pos = 0;
    if (e->carrying && n)
        pos = complete_carry(e, data, n);
    feed_lines(e, data, n, pos);
    PyBuffer_Release(&view);
    return hand_over(e);
}

PyDoc_STRVAR(feed_from_doc, "feed_from(fd, size) -> JSON written, or None at the end of the file: reads the next\n"
                            "`size` bytes of the file open as `fd` itself (a kernel log: while the last chunk is\n"
                            "assembled); OSError if a read fails. Between begin() and end(), use feed() or\n"
                            "feed_from() with one size, not both.");

static PyObject *Engine_feed_from(Engine *e, PyObject *args) {
    int fd;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "in", &fd, &size))
        return NULL;
    if (fd < 0 || size < 1) {
        PyErr_SetString(PyExc_ValueError, "feed_from: a file descriptor and a positive size");
        return NULL;
    }
    if (!engine_ready(e, 1))
        return NULL;
#ifdef PARSER_THREAD
    if (e->parser && e->parser->pending) { /* a chunk feed() handed over is not assembled yet */
        PyErr_SetString(PyExc_RuntimeError, "feed_from() after feed() in one file: end() the file first");
        return NULL;
    }
#endif
    if (e->error || e->failed || e->write_errno)
        return hand_over(e);
#ifdef PARSER_THREAD
    if (e->format == FMT_KERNEL && (e->parser || (e->parser = parser_start(e->mode == MODE_JSON)))) {
        int got = feed_from_parallel(e, fd, (size_t)size);
        if (got < 0)
            return NULL;
        if (got == 0 && !e->error && !e->failed)
            Py_RETURN_NONE;
        return hand_over(e);
    }
#endif
    if (e->read_size != (size_t)size) {
        free(e->read_buf);
        e->read_size = (e->read_buf = malloc((size_t)size)) ? (size_t)size : 0;
        if (!e->read_buf)
            return PyErr_NoMemory();
    }
    ssize_t got;
    Py_BEGIN_ALLOW_THREADS
    do
        got = read(fd, e->read_buf, (size_t)size);
    while (got < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
    if (got < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (got == 0)
        Py_RETURN_NONE;
    size_t n = (size_t)got, pos = 0;
    if (e->carrying)
        pos = complete_carry(e, e->read_buf, n);
    feed_lines(e, e->read_buf, n, pos);
    return hand_over(e);
}

PyDoc_STRVAR(write_to_doc, "write_to(fd): from now on feed/feed_from/end/flush write the JSON to the open descriptor\n"
                           "`fd` themselves (without the GIL) and give back b''; WriteError(errno) if a write fails (and\n"
                           "from every later call).");

static PyObject *Engine_write_to(Engine *e, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    if (fd < 0 || fd == INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "write_to: a file descriptor");
        return NULL;
    }
    e->out_fd = fd + 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stop_reading_doc, "stop_reading(): the parser thread is done with feed_from's descriptor when this returns\n"
                                "(call it before closing the file when feed_from did not reach its end, e.g. the output\n"
                                "broke: the thread may still be reading ahead from it).");

static PyObject *Engine_stop_reading(Engine *e, PyObject *unused) {
#ifdef PARSER_THREAD
    parser_stop_reading(e->parser);
#endif
    Py_RETURN_NONE;
}

PyDoc_STRVAR(end_doc, "end() -> JSON written: the file ends (its last line, if it has no '\\n', is read now).");

static PyObject *Engine_end(Engine *e, PyObject *unused) {
    if (!engine_ready(e, 1))
        return NULL;
#ifdef PARSER_THREAD
    parser_drain(e);
#endif
    if (e->carrying) {
        feed_line(e, e->carry.p ? e->carry.p : "", e->carry.n, e->carry_cut);
        e->carrying = e->carry_cut = 0;
        e->carry.n = 0;
    }
    mark_end(e, e->format == FMT_KERNEL ? NULL : &e->pending);
    map_clear(&e->nft_packets, nft_packet_free);
    map_clear(&e->pending, free);
    e->in_file = 0;
    return hand_over(e);
}

PyDoc_STRVAR(flush_doc, "flush() -> JSON written: every packet still open is finished (end of input).");

static PyObject *Engine_flush(Engine *e, PyObject *unused) {
    if (!engine_ready(e, 0))
        return NULL;
    while (e->head && !e->error) {
        finish(e, e->head);
        process_done(e);
    }
    return hand_over(e);
}

PyDoc_STRVAR(take_items_doc, "take_items() -> [(\"packet\", seq, json) | (\"expect\", node, direction, protocol, syn, walk)]");

static PyObject *Engine_take_items(Engine *e, PyObject *unused) {
    if (!engine_ready(e, -1))
        return NULL;
    PyObject *items = e->items;
    if (!(e->items = PyList_New(0))) {
        e->items = items;
        return NULL;
    }
    return items;
}

PyDoc_STRVAR(stats_doc, "stats() -> dict of counts.");

static PyObject *Engine_stats(Engine *e, PyObject *unused) {
    if (!engine_ready(e, -1))
        return NULL;
    PyObject *order = PyList_New(e->n_with_events);
    if (!order)
        return NULL;
    for (int i = 0; i < e->n_nodes; i++)
        if (e->event_order[i] >= 0)
            PyList_SET_ITEM(order, e->event_order[i], PyLong_FromLong(i));
    return Py_BuildValue("{sLsLsLsLsLsLsLsLs(LLL)sLs(LLL)sN}", "lines", e->lines, "ignored_lines", e->ignored, "skipped_lines",
                         e->skipped, "trace_records", e->records, "unattributed", e->unattributed, "cut_lines",
                         e->cut_lines, "matched", e->matched, "repaired", e->repaired, "identities", e->identities[0],
                         e->identities[1], e->identities[2], "other", e->other, "other_verdicts", e->other_verdicts[0],
                         e->other_verdicts[1], e->other_verdicts[2], "nodes", order);
}

static PyObject *str_or_none(const char *s, size_t n) {
    return s ? PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "replace") : Py_NewRef(Py_None);
}

static PyObject *addr_or_none(const char *s) { return s[0] ? PyUnicode_FromString(s) : Py_NewRef(Py_None); }

static PyObject *int_or_none(long long v) { return v == NONE ? Py_NewRef(Py_None) : PyLong_FromLongLong(v); }

PyDoc_STRVAR(results_doc, "results() -> (summary rows, diagram rows, flow entries): what the end of the run needs\n"
                            "(the flow entries of the keys seen on more than one node).");

static PyObject *Engine_results(Engine *e, PyObject *unused) {
    if (!engine_ready(e, 0))
        return NULL;
    PyObject *rows = PyList_New(0), *diagram = PyList_New(0), *flows = PyList_New(0);
    if (!rows || !diagram || !flows)
        goto failed;
    for (Entry *x = e->rows.head; x; x = x->next) {
        Row *r = x->value;
        int node;
        long summary;
        memcpy(&node, x->key, sizeof node);
        memcpy(&summary, x->key + sizeof node + 1, sizeof summary);
        PyObject *item = Py_BuildValue("(iilLLNLNN)", node, x->key[sizeof node], summary, r->count, r->first_seq,
                                       str_or_none(r->first_time, r->first_time_n), r->last_seq,
                                       str_or_none(r->last_time, r->last_time_n), str_or_none(r->example, r->example_n));
        if (!item || PyList_Append(rows, item))
            goto failed;
        Py_DECREF(item);
    }
    for (Entry *x = e->diagram.head; x; x = x->next) {
        DiagramRow *r = x->value;
        int node;
        memcpy(&node, x->key, sizeof node);
        PyObject *item = Py_BuildValue("(iiLLO)", node, x->key[sizeof node], r->min_seq, r->count, r->walk);
        if (!item || PyList_Append(diagram, item))
            goto failed;
        Py_DECREF(item);
    }
    for (Entry *x = e->flows.head; x; x = x->next) {
        Hops *hops = x->value;
        size_t other = 1;
        while (other < hops->n && hops->hops[other].node == hops->hops[0].node)
            other++;
        if (other >= hops->n) /* seen on one node: not a flow (flows.build_flows), most keys */
            continue;
        size_t plen = strlen(x->key);
        long long ip_id, seq;
        memcpy(&ip_id, x->key + plen + 1, sizeof ip_id);
        memcpy(&seq, x->key + plen + 1 + sizeof ip_id, sizeof seq);
        PyObject *list = PyList_New((Py_ssize_t)hops->n);
        if (!list)
            goto failed;
        for (size_t i = 0; i < hops->n; i++) {
            Hop *h = &hops->hops[i];
            PyObject *hop = Py_BuildValue("(LiiONNNNNNNNN)", h->seq, h->direction, h->node, h->walk,
                                          int_or_none(h->ttl), addr_or_none(h->src), addr_or_none(h->dst),
                                          int_or_none(h->sport), int_or_none(h->dport), addr_or_none(h->exit_src),
                                          addr_or_none(h->exit_dst), int_or_none(h->exit_sport),
                                          int_or_none(h->exit_dport));
            if (!hop) {
                Py_DECREF(list);
                goto failed;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, hop);
        }
        PyObject *item = Py_BuildValue("(NLNN)", plen ? PyUnicode_FromString(x->key) : Py_NewRef(Py_None), ip_id,
                                       seq == NONE ? Py_NewRef(Py_None) : PyLong_FromLongLong(seq), list);
        if (!item || PyList_Append(flows, item))
            goto failed;
        Py_DECREF(item);
    }
    return Py_BuildValue("(NNN)", rows, diagram, flows);
failed:
    Py_XDECREF(rows);
    Py_XDECREF(diagram);
    Py_XDECREF(flows);
    return NULL;
}

static PyMethodDef Engine_methods[] = {
    {"begin", (PyCFunction)Engine_begin, METH_VARARGS, begin_doc},
    {"feed", (PyCFunction)Engine_feed, METH_O, feed_doc},
    {"feed_from", (PyCFunction)Engine_feed_from, METH_VARARGS, feed_from_doc},
    {"write_to", (PyCFunction)Engine_write_to, METH_VARARGS, write_to_doc},
    {"stop_reading", (PyCFunction)Engine_stop_reading, METH_NOARGS, stop_reading_doc},
    {"end", (PyCFunction)Engine_end, METH_NOARGS, end_doc},
    {"flush", (PyCFunction)Engine_flush, METH_NOARGS, flush_doc},
    {"take_items", (PyCFunction)Engine_take_items, METH_NOARGS, take_items_doc},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, stats_doc},
    {"results", (PyCFunction)Engine_results, METH_NOARGS, results_doc},
    {NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chainlab.trace._engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = engine_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

PyDoc_STRVAR(normalize_doc, "utf8(data) -> data as bytes.decode('utf-8', 'replace') reads it, encoded back (a test hook).");

static PyObject *py_utf8(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE))
        return NULL;
    Buf out = {0};
    PyObject *result = utf8_normalize(view.buf, (size_t)view.len, &out)
                           ? PyErr_NoMemory()
                           : PyBytes_FromStringAndSize(out.p ? out.p : "", (Py_ssize_t)out.n);
    free(out.p);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(jstr_doc, "json_string(data) -> json.dumps of data (valid UTF-8) as bytes (a test hook).");

static PyObject *py_json_string(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE))
        return NULL;
    Buf out = {0};
    PyObject *result = put_jstr(&out, view.buf, (size_t)view.len) ? PyErr_NoMemory()
                                                                    : PyBytes_FromStringAndSize(out.p, (Py_ssize_t)out.n);
    free(out.p);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef module_methods[] = {
    {"utf8", py_utf8, METH_O, normalize_doc},
    {"json_string", py_json_string, METH_O, jstr_doc},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chainlab.trace._engine", "The trace analyzer in C (see native.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    WriteError = PyErr_NewExceptionWithDoc("chainlab.trace._engine.WriteError",
                                           "write_to()'s descriptor could not be written: args[0] is the errno.", NULL, NULL);
    /* SOURCE: the digest of the _engine.c and parts this was built from (setup.py), for
     * native.py to refuse a build that a failed compile of newer sources left in place */
    if (!WriteError || PyModule_AddStringConstant(m, "SOURCE", ENGINE_SOURCE) < 0 ||
        PyModule_AddIntMacro(m, WALK_CACHE) < 0 || PyModule_AddIntMacro(m, STEP_CACHE) < 0 ||
        PyModule_AddObjectRef(m, "WriteError", WriteError) < 0 ||
        PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
