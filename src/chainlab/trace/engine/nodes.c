/* chainlab.trace._engine, nodes: included by _engine.c, in its order (uses what the parts
 * before it define). */

static int node_room(Engine *e) {
    if (e->n_nodes < e->cap_nodes)
        return 0;
    int cap = e->cap_nodes ? e->cap_nodes * 2 : 8;
#define GROW(field)                                                            \
    do {                                                                       \
        void *grown = realloc(e->field, (size_t)cap * sizeof *e->field);       \
        if (!grown)                                                            \
            return -1;                                                         \
        e->field = grown;                                                      \
    } while (0)
    GROW(node_names);
    GROW(node_lens);
    GROW(table_masks);
    GROW(began);
    GROW(slot_version);
    GROW(node_json);
    GROW(node_ok);
    GROW(event_order);
#undef GROW
    e->cap_nodes = cap;
    return 0;
}

/* The number of node `name` (valid UTF-8, or as Python gave it), registered if new: Python
 * gives its JSON and whether --match takes it. -1 on failure. */
static int node_number(Engine *e, const char *name, size_t n) {
    Entry *known = map_get(&e->nodes, name, n);
    if (known)
        return (int)known->number - 1;
    int added;
    Entry *entry = map_put(&e->nodes, name, n, &added);
    char *copy = malloc(n + 1);
    if (!entry || !copy || node_room(e)) {
        free(copy);
        e->failed = 1;
        return -1;
    }
    memcpy(copy, name, n);
    copy[n] = 0;
    int i = e->n_nodes;
    PyObject *r = PyObject_CallMethod(e->calls, "node_added", "iy#", i, name, (Py_ssize_t)n);
    if (!r || !PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(r, 0))) {
        if (r)
            PyErr_SetString(PyExc_TypeError, "node_added() must return (bytes, bool)");
        Py_XDECREF(r);
        free(copy);
        call_failed(e);
        map_remove(&e->nodes, entry);
        return -1;
    }
    e->n_nodes++;
    entry->number = i + 1;
    e->node_names[i] = copy;
    e->node_lens[i] = n;
    e->table_masks[i] = 0;
    e->began[i] = 0;
    e->slot_version[i] = 0;
    e->event_order[i] = -1;
    e->node_json[i] = Py_NewRef(PyTuple_GET_ITEM(r, 0));
    e->node_ok[i] = PyObject_IsTrue(PyTuple_GET_ITEM(r, 1)) == 1;
    Py_DECREF(r);
    return i;
}

static void table_seen(Engine *e, int node, int table) {
    e->table_masks[node] |= 1 << table;
    e->slot_version[node]++;
    PyObject *r = PyObject_CallMethod(e->calls, "slot_added", "izs", node, NULL, TABLES[table]);
    if (r)
        Py_DECREF(r);
    else
        call_failed(e);
}

static void slot_seen(Engine *e, int node, int hook, const char *table, size_t table_n) {
    Buf *k = &e->scratch2;
    k->n = 0;
    char h = (char)hook;
    int added;
    if (put(k, (const char *)&node, sizeof node) || put(k, &h, 1) || put(k, table, table_n)) {
        e->failed = 1;
        return;
    }
    Entry *s = map_put(&e->slots, k->p, k->n, &added);
    if (!s) {
        e->failed = 1;
        return;
    }
    if (!added)
        return;
    e->slot_version[node]++;
    PyObject *r = PyObject_CallMethod(e->calls, "slot_added", "iss#", node, HOOKS[hook], table, (Py_ssize_t)table_n);
    if (r)
        Py_DECREF(r);
    else
        call_failed(e);
}
