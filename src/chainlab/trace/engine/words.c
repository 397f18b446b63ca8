/* chainlab.trace._engine, words: included by _engine.c, in its order (uses what the parts
 * before it define). */

typedef struct {
    const char *s;
    size_t n;
} Word;

typedef struct {
    Word *w;
    size_t n, cap;
} Words;

/* ascii.words(text): the runs between ASCII whitespace; `skip_quotes` drops every '"'
 * first (nft_packet_fields does text.replace('"', "")), copying the text into `scratch`. */
static int split_words(const char *s, size_t n, Words *out, int skip_quotes, Buf *scratch) {
    out->n = 0;
    if (skip_quotes) {
        scratch->n = 0;
        if (buf_grow(scratch, n + 1))
            return -1;
        for (size_t i = 0; i < n; i++)
            if (s[i] != '"')
                scratch->p[scratch->n++] = s[i];
        s = scratch->p;
        n = scratch->n;
    }
    size_t i = 0;
    while (i < n) {
        while (i < n && is_space(s[i]))
            i++;
        if (i >= n)
            break;
        size_t start = i;
        while (i < n && !is_space(s[i]))
            i++;
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 64;
            Word *w = realloc(out->w, cap * sizeof *w);
            if (!w)
                return -1;
            out->w = w;
            out->cap = cap;
        }
        out->w[out->n++] = (Word){s + start, i - start};
    }
    return 0;
}

static int word_is(Word w, const char *name) { return name_is(w.s, w.n, name); }

/* pairs.get((a, b)): the word after the first `a b` that has one (NULL n: none). */
static Word pair_get(const Words *ws, const char *a, const char *b) {
    for (size_t i = 0; i + 2 < ws->n; i++)
        if (word_is(ws->w[i], a) && word_is(ws->w[i + 1], b))
            return ws->w[i + 2];
    return (Word){NULL, 0};
}

/* following.get(a): the word after the first `a` that has one. */
static Word following_get(const Words *ws, const char *a) {
    for (size_t i = 0; i + 1 < ws->n; i++)
        if (word_is(ws->w[i], a))
            return ws->w[i + 1];
    return (Word){NULL, 0};
}

static long long word_int(Word w, long long limit) { return w.s ? small_int(w.s, w.n, limit) : NONE; }
