/* chainlab.trace._engine, character classes: included by _engine.c, in its order (uses what the parts
 * before it define). */

/* ASCII whitespace (trace/ascii.py WHITESPACE, and Python's \s under re.ASCII). */
static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_hex_digit(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int ident_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static int ident_char(char c) { return ident_start(c) || is_digit(c); }

/* The first whitespace (is_space) in s[i:n], or n: 8 bytes at a time, looking for a byte
 * below '!' (whitespace or another control character) in each word. */
static size_t space_from(const char *s, size_t n, size_t i) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t below = (w - 0x2121212121212121ULL) & ~w & 0x8080808080808080ULL; /* lowest set byte: exact */
        if (!below) {
            i += 8;
            continue;
        }
        i += (size_t)__builtin_ctzll(below) >> 3;
        if (is_space(s[i]))
            return i;
        i++;
    }
#endif
    while (i < n && !is_space(s[i]))
        i++;
    return i;
}

static int all_digits(const char *s, size_t n) {
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[i]))
            return 0;
    return 1;
}

static int name_is(const char *s, size_t n, const char *name) { return strlen(name) == n && memcmp(s, name, n) == 0; }

static int find_in(const char **names, int count, const char *s, size_t n) {
    for (int i = 0; i < count; i++)
        if (name_is(s, n, names[i]))
            return i;
    return -1;
}

/* memmem for the short needles used here: memchr for the first byte, then compare. */
static const char *find_str(const char *s, size_t n, size_t from, const char *needle, size_t m) {
    while (from < n && n - from >= m) {
        const char *hit = memchr(s + from, needle[0], n - from - m + 1);
        if (!hit)
            return NULL;
        if (memcmp(hit + 1, needle + 1, m - 1) == 0)
            return hit;
        from = (size_t)(hit - s) + 1;
    }
    return NULL;
}

/* parse_kernel._int: 1-10 ASCII digits, at most `limit`; else None. */
static long long small_int(const char *s, size_t n, long long limit) {
    if (n > 10 || !all_digits(s, n))
        return NONE;
    long long v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v <= limit ? v : NONE;
}

/* parse_kernel.IPV4 (fullmatch): four groups of 1-3 digits. */
static int is_ipv4(const char *s, size_t n) {
    int part = 0, digits = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_digit(s[i])) {
            if (++digits > 3)
                return 0;
        } else if (s[i] == '.' && digits > 0 && part < 3) {
            part++;
            digits = 0;
        } else {
            return 0;
        }
    }
    return part == 3 && digits > 0;
}

/* parse_kernel.IPV6 (fullmatch): 2-45 characters of hex digits, ':' and '.', two ':' at least. */
static int is_ipv6(const char *s, size_t n) {
    if (n < 2 || n > 45)
        return 0;
    int colons = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ':')
            colons++;
        else if (s[i] != '.' && !is_hex_digit(s[i]))
            return 0;
    }
    return colons >= 2;
}
