/* chainlab.trace._engine, maps: included by _engine.c, in its order (uses what the parts
 * before it define). */

/* A hash map of byte-string keys, in insertion order (which move_to_end changes): what the
 * Python side's dicts and OrderedDicts do here. Entries hold a pointer or a number. */
typedef struct Entry Entry;
struct Entry {
    Entry *prev, *next; /* order */
    size_t hash, klen;
    void *value;
    long long number;
    char key[];
};

typedef struct {
    Entry **slots;
    size_t n_slots, count, used; /* used: filled or deleted slots */
    Entry *head, *tail;
} Map;

static Entry DELETED;

static inline uint64_t hash_mix(uint64_t h, uint64_t w) {
    h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 29);
}

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* 8 bytes at a time, in four independent lanes for long keys (a walk's kilobyte, a line's
 * fields): multiply-xorshift per word, the length mixed in. Never 0. */
static size_t hash_bytes(const char *s, size_t n) {
    uint64_t a = 0x9E3779B97F4A7C15ULL ^ n, b = 0x632BE59BD9B4E019ULL, c = 0x85EBCA77C2B2AE63ULL,
             d = 0xC2B2AE3D27D4EB4FULL, w[4];
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        memcpy(w, s + i, 32);
        a = hash_mix(a, w[0]);
        b = hash_mix(b, w[1]);
        c = hash_mix(c, w[2]);
        d = hash_mix(d, w[3]);
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(w, s + i, 8);
        a = hash_mix(a, w[0]);
    }
    if (i < n) {
        w[0] = 0;
        memcpy(w, s + i, n - i);
        a = hash_mix(a, w[0]);
    }
    uint64_t h = a ^ rotl64(b, 17) ^ rotl64(c, 31) ^ rotl64(d, 47);
    h = (h ^ (h >> 32)) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    return h ? (size_t)h : 1;
}

/* The slot of the key a + b (b may be empty): where it is, or (found NULL) the first free slot for it. */
static size_t map_slot_parts(const Map *m, const char *a, size_t an, const char *b, size_t bn, size_t hash,
                             Entry **found) {
    size_t mask = m->n_slots - 1, i = hash & mask, free_at = (size_t)-1;
    for (;; i = (i + 1) & mask) {
        Entry *e = m->slots[i];
        if (!e) {
            *found = NULL;
            return free_at != (size_t)-1 ? free_at : i;
        }
        if (e == &DELETED) {
            if (free_at == (size_t)-1)
                free_at = i;
        } else if (e->hash == hash && e->klen == an + bn && memcmp(e->key, a, an) == 0 &&
                   (!bn || memcmp(e->key + an, b, bn) == 0)) {
            *found = e;
            return i;
        }
    }
}

static size_t map_slot(const Map *m, const char *key, size_t klen, size_t hash, Entry **found) {
    return map_slot_parts(m, key, klen, NULL, 0, hash, found);
}

/* Rehash into a table a quarter full: bigger as entries come, the same size or smaller when
 * deleted slots are what filled it (a bounded map's size stays bounded). */
static int map_grow(Map *m) {
    size_t n = 16;
    while ((m->count + 1) * 4 > n)
        n *= 2;
    Entry **slots = calloc(n, sizeof *slots);
    if (!slots)
        return -1;
    free(m->slots);
    m->slots = slots;
    m->n_slots = n;
    m->used = m->count;
    for (Entry *e = m->head; e; e = e->next) {
        size_t i = e->hash & (n - 1);
        while (slots[i])
            i = (i + 1) & (n - 1);
        slots[i] = e;
    }
    return 0;
}

/* The entry of the key a + b whose hash is `hash` (see map_put_parts), NULL if none. */
static Entry *map_get_parts(const Map *m, const char *a, size_t an, const char *b, size_t bn, size_t hash) {
    if (!m->n_slots)
        return NULL;
    Entry *found;
    map_slot_parts(m, a, an, b, bn, hash, &found);
    return found;
}

static Entry *map_get(const Map *m, const char *key, size_t klen) {
    return m->n_slots ? map_get_parts(m, key, klen, NULL, 0, hash_bytes(key, klen)) : NULL;
}

/* Entry e (in no order yet) becomes the last in insertion order. */
static void map_link_last(Map *m, Entry *e) {
    e->prev = m->tail;
    if (m->tail)
        m->tail->next = e;
    else
        m->head = e;
    m->tail = e;
}

/* The entry of the key a + b whose hash is `hash`, added at the end (value NULL, number 0) if
 * new; NULL when out of memory. A map's keys are all hashed one way (hash_bytes, or walk_hash). */
static Entry *map_put_parts(Map *m, const char *a, size_t an, const char *b, size_t bn, size_t hash, int *added) {
    if ((m->used + 1) * 2 > m->n_slots && map_grow(m))
        return NULL;
    Entry *found;
    size_t i = map_slot_parts(m, a, an, b, bn, hash, &found);
    *added = found == NULL;
    if (found)
        return found;
    Entry *e = calloc(1, sizeof *e + an + bn + 1);
    if (!e)
        return NULL;
    memcpy(e->key, a, an);
    if (bn)
        memcpy(e->key + an, b, bn);
    e->klen = an + bn;
    e->hash = hash;
    if (m->slots[i] != &DELETED)
        m->used++;
    m->slots[i] = e;
    m->count++;
    map_link_last(m, e);
    return e;
}

/* The entry of `key`, added at the end (value NULL, number 0) if new; NULL when out of memory. */
static Entry *map_put(Map *m, const char *key, size_t klen, int *added) {
    return map_put_parts(m, key, klen, NULL, 0, hash_bytes(key, klen), added);
}

static void map_unlink(Map *m, Entry *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        m->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        m->tail = e->prev;
    e->prev = e->next = NULL;
}

static void map_move_to_end(Map *m, Entry *e) {
    if (m->tail == e)
        return;
    map_unlink(m, e);
    map_link_last(m, e);
}

/* Remove and free an entry (its value is the caller's). */
static void map_remove(Map *m, Entry *e) {
    Entry *found;
    size_t i = map_slot(m, e->key, e->klen, e->hash, &found);
    if (found == e)
        m->slots[i] = &DELETED;
    map_unlink(m, e);
    m->count--;
    free(e);
}

static void map_clear(Map *m, void (*drop)(void *)) {
    Entry *e = m->head;
    while (e) {
        Entry *next = e->next;
        if (drop && e->value)
            drop(e->value);
        free(e);
        e = next;
    }
    free(m->slots);
    memset(m, 0, sizeof *m);
}
