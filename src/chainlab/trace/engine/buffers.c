/* chainlab.trace._engine, buffers: included by _engine.c, in its order (uses what the parts
 * before it define). */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
    if (b->n + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* s[0:n] to d as two blocks of `width` bytes (a constant where inlined, so each memcpy is a
 * load or a store), the first and the last, overlapping when n < 2 * width. */
static inline void copy_ends(char *d, const char *s, size_t n, size_t width) {
    char head[16], tail[16];
    memcpy(head, s, width);
    memcpy(tail, s + n - width, width);
    memcpy(d, head, width);
    memcpy(d + n - width, tail, width);
}

/* memcpy(d, s, n), the small sizes inline: 16 bytes at a time with the last block
 * overlapping the one before, or two overlapping blocks below 16 bytes (what put copies is
 * mostly small: a step's pieces, a line number, an address), where a call to libc's memmove
 * cost ~5 % of the assembling thread in json. */
static inline void copy_bytes(char *d, const char *s, size_t n) {
    if (n > 128) {
        memcpy(d, s, n);
    } else if (n >= 16) {
        for (size_t i = 0; i + 16 < n; i += 16)
            copy_ends(d + i, s + i, 16, 16);
        copy_ends(d + n - 16, s + n - 16, 16, 16);
    } else if (n >= 8) {
        copy_ends(d, s, n, 8);
    } else if (n >= 4) {
        copy_ends(d, s, n, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    }
}

static int put(Buf *b, const char *s, size_t n) {
    if (n == 0)
        return 0;
    if (buf_grow(b, n))
        return -1;
    copy_bytes(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int puts_(Buf *b, const char *s) { return put(b, s, strlen(s)); }

#define PUTL(b, literal) put((b), (literal), sizeof(literal) - 1)

static const char DIGIT_PAIRS[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                  "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                  "8081828384858687888990919293949596979899";

/* v's decimal digits, ending at tmp[24]; returns where they start. */
static int int_digits(char tmp[24], long long v) {
    int i = 24;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    while (u >= 100) { /* two digits a step */
        unsigned pair = (unsigned)(u % 100) * 2;
        u /= 100;
        tmp[--i] = DIGIT_PAIRS[pair + 1];
        tmp[--i] = DIGIT_PAIRS[pair];
    }
    if (u >= 10) {
        tmp[--i] = DIGIT_PAIRS[u * 2 + 1];
        tmp[--i] = DIGIT_PAIRS[u * 2];
    } else {
        tmp[--i] = (char)('0' + u);
    }
    if (v < 0)
        tmp[--i] = '-';
    return i;
}

static int put_int(Buf *b, long long v) {
    char tmp[24];
    int i = int_digits(tmp, v);
    size_t n = sizeof tmp - (size_t)i;
    return n <= sizeof tmp ? put(b, tmp + i, n) : -1; /* (the bound tells the compiler the copy is small) */
}

/* The decimal text of a line number, kept: a step's line is most often the one after the
 * last step's, and counting the text up in place costs less than put_int's divisions on
 * every step (they were ~5 % of the assembling thread in json mode). */
typedef struct {
    long long value; /* 0: none yet */
    char text[24];   /* digits in text[start:24] */
    int start;
} LineText;

/* t's text made line_no's; its length. */
static size_t line_text(LineText *t, long long line_no) {
    if (t->value != line_no) {
        if (t->value > 0 && line_no == t->value + 1) {
            int i = 23;
            while (i >= t->start && t->text[i] == '9')
                t->text[i--] = '0';
            if (i < t->start)
                t->text[t->start = i] = '1';
            else
                t->text[i]++;
        } else {
            t->start = int_digits(t->text, line_no);
        }
        t->value = line_no;
    }
    return sizeof t->text - (size_t)t->start;
}

static int put_opt_int(Buf *b, long long v) { return v == NONE ? PUTL(b, "null") : put_int(b, v); }

static const char HEX_DIGITS[] = "0123456789abcdef";

static int put_u16_escape(Buf *b, unsigned int u) {
    char esc[6] = {'\\', 'u', HEX_DIGITS[(u >> 12) & 15], HEX_DIGITS[(u >> 8) & 15], HEX_DIGITS[(u >> 4) & 15],
                   HEX_DIGITS[u & 15]};
    return put(b, esc, 6);
}

/* json.dumps of a string given as valid UTF-8 (ensure_ascii): '"' '\\' and the control
 * characters escaped as Python does, every non-ASCII character as \uXXXX (a surrogate pair
 * above U+FFFF), DEL as \u007f. */
static int put_jstr(Buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n && u[i] >= 0x20 && u[i] < 0x7f && u[i] != '"' && u[i] != '\\')
        i++;
    if (i == n) { /* nothing to escape (most strings: addresses, names): one reservation */
        if (buf_grow(b, n + 2))
            return -1;
        char *d = b->p + b->n;
        d[0] = '"';
        copy_bytes(d + 1, s, n);
        d[n + 1] = '"';
        b->n += n + 2;
        return 0;
    }
    if (put(b, "\"", 1))
        return -1;
    size_t done = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (put(b, s + done, i - done))
            return -1;
        int err = 0;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            err = put(b, esc, 2);
            i++;
        } else if (c < 0x80) {
            const char *short_form = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                                   : c == '\f' ? "\\f" : NULL;
            err = short_form ? put(b, short_form, 2) : put_u16_escape(b, c);
            i++;
        } else {
            unsigned int cp;
            size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (len == 2)
                cp = ((c & 0x1fu) << 6) | (u[i + 1] & 0x3fu);
            else if (len == 3)
                cp = ((c & 0x0fu) << 12) | ((u[i + 1] & 0x3fu) << 6) | (u[i + 2] & 0x3fu);
            else
                cp = ((c & 0x07u) << 18) | ((u[i + 1] & 0x3fu) << 12) | ((u[i + 2] & 0x3fu) << 6) | (u[i + 3] & 0x3fu);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                err = put_u16_escape(b, 0xd800 + (cp >> 10)) || put_u16_escape(b, 0xdc00 + (cp & 0x3ff));
            } else {
                err = put_u16_escape(b, cp);
            }
            i += len;
        }
        if (err)
            return -1;
        done = i;
    }
    return put(b, s + done, n - done) || put(b, "\"", 1);
}
