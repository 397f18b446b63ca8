/* chainlab.trace._engine, TRACE headers: included by _engine.c, in its order (uses what the parts
 * before it define). */

typedef struct {
    const char *table, *chain, *pos;
    size_t table_n, chain_n, pos_n; /* pos: digits with leading zeros stripped ("" = 0) */
    int kind;                       /* 0 rule, 1 return, 2 policy */
    size_t start, end;              /* of the whole match, from "TRACE: " */
} Header;

static const char *KINDS[] = {"rule", "return", "policy"};
static const size_t KIND_LEN[] = {4, 6, 6};

/* HEADER.match(line, at): `TRACE: ident:chain:(rule|return|policy):` 1-10 digits, then whitespace or end. */
static int match_header(const char *line, size_t n, size_t at, Header *h) {
    if (at + 7 > n || memcmp(line + at, "TRACE: ", 7) != 0)
        return 0;
    size_t p = at + 7;
    if (p >= n || !ident_start(line[p]))
        return 0;
    size_t t0 = p;
    while (p < n && ident_char(line[p]))
        p++;
    if (p >= n || line[p] != ':')
        return 0;
    size_t c0 = ++p;
    for (size_t k = c0 + 1; k <= n && !is_space(line[k - 1]); k++) { /* chain = line[c0:k], lazily */
        if (k >= n || line[k] != ':')
            continue;
        size_t q = k + 1;
        int kind = -1;
        for (int j = 0; j < 3 && kind < 0; j++) {
            size_t kl = KIND_LEN[j];
            if (q + kl < n && memcmp(line + q, KINDS[j], kl) == 0 && line[q + kl] == ':')
                kind = j;
        }
        if (kind < 0)
            continue;
        q += KIND_LEN[kind] + 1;
        size_t d0 = q;
        while (q < n && is_digit(line[q]))
            q++;
        if (q == d0 || q - d0 > 10 || (q < n && !is_space(line[q])))
            continue;
        size_t z = d0;
        while (z < q && line[z] == '0')
            z++;
        *h = (Header){line + t0, line + c0, line + z, c0 - 1 - t0, k - c0, q - z, kind, at, q};
        return 1;
    }
    return 0;
}

/* TRACE_LIKE: `TRACE: ` + identifier + `:`. */
static size_t trace_like_count(const char *line, size_t n) {
    size_t count = 0;
    const char *hit;
    size_t from = 0;
    while ((hit = find_str(line, n, from, "TRACE: ", 7))) {
        size_t p = (size_t)(hit - line) + 7;
        if (p < n && ident_start(line[p])) {
            while (p < n && ident_char(line[p]))
                p++;
            if (p < n && line[p] == ':')
                count++;
        }
        from = p;
    }
    return count;
}

/* The timestamps parse_kernel's regexes know, each matched at t[0:r]. */

/* `[A-Z][a-z]{2} `: a month's or a weekday's name and a space, 4 characters. */
static int day_name_at(const char *t, size_t r) {
    return r >= 4 && t[0] >= 'A' && t[0] <= 'Z' && t[1] >= 'a' && t[1] <= 'z' && t[2] >= 'a' && t[2] <= 'z' && t[3] == ' ';
}

/* `[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d` (syslog), 15 characters. */
static int bsd_time_at(const char *t, size_t r) {
    return r >= 15 && day_name_at(t, r) && (t[4] == ' ' || is_digit(t[4])) && is_digit(t[5]) && t[6] == ' ' &&
           all_digits(t + 7, 2) && t[9] == ':' && all_digits(t + 10, 2) && t[12] == ':' && all_digits(t + 13, 2);
}

/* `\d{4}-\d\d-\d\d[T ]\d\d:\d\d` (RFC 3339 to the minute), 16 characters. */
static int iso_minute_at(const char *t, size_t r) {
    return r >= 16 && all_digits(t, 4) && t[4] == '-' && all_digits(t + 5, 2) && t[7] == '-' && all_digits(t + 8, 2) &&
           (t[10] == 'T' || t[10] == ' ') && all_digits(t + 11, 2) && t[13] == ':' && all_digits(t + 14, 2);
}

/* `\[\s*(\d+\.\d+)\]` (dmesg uptime): the group's length (its start is *digits), 0 if none. */
static size_t uptime_at(const char *t, size_t r, size_t *digits) {
    if (r == 0 || t[0] != '[')
        return 0;
    size_t q = 1;
    while (q < r && is_space(t[q]))
        q++;
    size_t d0 = q;
    while (q < r && is_digit(t[q]))
        q++;
    if (q == d0 || q >= r || t[q] != '.')
        return 0;
    size_t d1 = ++q;
    while (q < r && is_digit(t[q]))
        q++;
    if (q == d1 || q >= r || t[q] != ']')
        return 0;
    *digits = d0;
    return q - d0;
}

static void parse_prefix(const char *t, size_t n, Ref *host, Ref *time, int *kind);

/* A whole journalctl short-full prefix with its host at t (`Tue 2026-12-01 12:00:00 UTC host `):
 * a capitalised word before an RFC 3339 time is not one. */
static int full_prefix_at(const char *t, size_t r) {
    if (!(r >= 24 && day_name_at(t, r) && iso_minute_at(t + 4, r - 4) && t[14] == ' '))
        return 0;
    Ref host, time;
    int kind;
    parse_prefix(t, r, &host, &time, &kind);
    return kind == 2;
}

/* Length of s[0:n] before NEXT_PREFIX (where a glued-on line's syslog/short-full/RFC 3339/dmesg time starts). */
static size_t before_next_prefix(const char *s, size_t n) {
    size_t digits;
    for (size_t p = 0; p < n; p++)
        if (bsd_time_at(s + p, n - p) || full_prefix_at(s + p, n - p) || iso_minute_at(s + p, n - p) ||
            uptime_at(s + p, n - p, &digits))
            return p;
    return n;
}

/* parse_kernel._prefix: (host, time) of the text before a line's first header. PREFIX is
 * `^\s*(?:<\d+>)?(BSD time|RFC 3339 time\S*)\s+(host: [^\s:\[\]]+)\s`, else the time is UPTIME
 * `\[\s*(\d+\.\d+)\]` anywhere. n == -1 in a Ref: None. */
/* `(?:\.\d+)?` at t[i:n]: where it ends. */
static size_t fraction_end(const char *t, size_t n, size_t i) {
    size_t q = i + 1;
    while (q < n && is_digit(t[q]))
        q++;
    return i < n && t[i] == '.' && q > i + 1 ? q : i;
}

/* PREFIX's time alternatives (parse_kernel.py) at t[p:n]: where the time ends (0: none),
 * and the time's own text t[*t0:*t1] (short-monotonic's is inside the brackets). */
static size_t prefix_time(const char *t, size_t n, size_t p, size_t *t0, size_t *t1, int *kind) {
    size_t r = n - p, end = 0;
    const char *u = t + p;
    *t0 = p;
    if (bsd_time_at(u, r)) {
        *kind = 0;
        end = fraction_end(t, n, p + 15);
    } else if (iso_minute_at(u, r) && r >= 19 && u[16] == ':' && all_digits(u + 17, 2)) {
        *kind = 1;
        end = p + 19;
        while (end < n && !is_space(t[end]))
            end++;
    } else if (r >= 24 && day_name_at(u, r) && iso_minute_at(u + 4, r - 4) && u[14] == ' ' && u[20] == ':' &&
               all_digits(u + 21, 2)) {
        size_t z = fraction_end(t, n, p + 23), z0; /* short-full: `Tue 2026-12-01 12:00:00[.123] UTC` */
        *kind = 2;
        if (z < n && t[z] == ' ') {
            for (z0 = ++z; z < n && ((t[z] >= 'A' && t[z] <= 'Z') || (t[z] >= 'a' && t[z] <= 'z') || is_digit(t[z]) ||
                                     t[z] == '+' || t[z] == '-');
                 z++)
                ;
            end = z > z0 ? z : 0;
        }
    } else if (r && u[0] == '[') {
        size_t digits, len = uptime_at(u, r, &digits);
        *kind = 3;
        if (len) {
            *t0 = p + digits;
            *t1 = *t0 + len;
            return *t1 + 1; /* past the `]` */
        }
    } else {
        size_t q = p;
        while (q < n && is_digit(t[q]))
            q++;
        size_t f = fraction_end(t, n, q);
        *kind = 4;
        if (q - p >= 9 && q - p <= 11 && f > q) /* short-unix: seconds since 1970 */
            end = f;
    }
    *t1 = end;
    return end;
}

/* *kind (unless NULL): which of PREFIX's time forms (0 bsd, 1 iso, 2 full, 3 mono, 4 unix) a
 * prefix with a host has, -1 when it has none (parse_kernel.prefix_kind). */
static void parse_prefix(const char *t, size_t n, Ref *host, Ref *time, int *kind) {
    host->n = time->n = -1;
    int form = -1;
    size_t p = 0;
    while (p < n && (is_space(t[p]) || t[p] == '>')) /* spaces and a quote's marks: PREFIX_TIME */
        p++;
    size_t q = p;
    if (q < n && t[q] == '<') {
        size_t d = ++q;
        while (q < n && is_digit(t[q]))
            q++;
        if (q > d && q < n && t[q] == '>') {
            p = q + 1;
            if (n - p >= 2 && t[p] == '1' && t[p + 1] == ' ') /* RFC 5424's version */
                p += 2;
        }
    }
    size_t t0, t1, end = prefix_time(t, n, p, &t0, &t1, &form);
    if (kind)
        *kind = -1;
    if (end) {
        size_t h = end;
        while (h < n && is_space(t[h]))
            h++;
        size_t h0 = h;
        while (h < n && !is_space(t[h]) && t[h] != ':' && t[h] != '[' && t[h] != ']')
            h++;
        if (h0 > end && h > h0 && h < n && is_space(t[h])) {
            *host = (Ref){t + h0, (Py_ssize_t)(h - h0)};
            *time = (Ref){t + t0, (Py_ssize_t)(t1 - t0)};
            if (kind)
                *kind = form;
            return;
        }
    }
    for (size_t b = 0; b < n; b++) {
        size_t digits, len = uptime_at(t + b, n - b, &digits);
        if (len) {
            *time = (Ref){t + b + digits, (Py_ssize_t)len};
            return;
        }
    }
}
