/* chainlab.trace._engine, bytes to text: included by _engine.c, in its order (uses what the parts
 * before it define). */

/* Whether s[0:n] holds a byte >= 0x80 (then it needs utf8_normalize). */
static int has_high_bytes(const unsigned char *s, size_t n) {
    unsigned char any = 0;
    for (size_t i = 0; i < n; i++)
        any |= s[i];
    return any >= 0x80;
}

/* s[0:n] as Python's bytes.decode("utf-8", "replace") would read it, encoded back to
 * UTF-8: each maximal invalid subpart becomes U+FFFD (EF BF BD). */
static int utf8_normalize(const unsigned char *s, size_t n, Buf *out) {
    static const char REPLACEMENT[] = "\xef\xbf\xbd";
    out->n = 0;
    if (buf_grow(out, n * 3 + 1))
        return -1;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            out->p[out->n++] = (char)c;
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0xc2 || c > 0xf4) {
            memcpy(out->p + out->n, REPLACEMENT, 3);
            out->n += 3;
            i++;
            continue;
        } else if (c < 0xe0) {
            need = 1;
        } else if (c < 0xf0) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        }
        size_t j = i + 1, got = 0;
        while (got < need && j < n) {
            unsigned char d = s[j];
            if (d < (got ? 0x80 : lo) || d > (got ? 0xbf : hi))
                break;
            j++;
            got++;
        }
        if (got == need) {
            memcpy(out->p + out->n, s + i, j - i);
            out->n += j - i;
        } else {
            memcpy(out->p + out->n, REPLACEMENT, 3);
            out->n += 3;
        }
        i = j;
    }
    return 0;
}
