/*
 * chainlab.trace._engine: the trace analyzer's hot path in C.
 *
 * It does what reader.py + assemble.py do for kernel-format TRACE lines, line for line
 * and with the same results, and renders each finished packet's node-independent JSON
 * pieces (steps, last step, header fields), so that Python only judges each distinct walk
 * once and classifies directions and flows. The Python modules stay the reference: tests
 * compare both engines' output byte for byte.
 *
 * Input is any bytes, as reader.py reads them: lines split at '\n', cut to LINE_LIMIT
 * bytes, trailing '\r' dropped, then made valid UTF-8 the way Python's "replace" decoding
 * does (each invalid sequence becomes U+FFFD), so that equal text here is equal text there.
 * Only ASCII whitespace separates words (trace/ascii.py).
 *
 * One Engine is fed raw chunks file after file (begin(), feed()..., end()); feed()
 * releases the GIL while it parses, so a reader thread can feed while Python renders.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NONE (-1LL)
/* reader.LINE_LIMIT */
#define LINE_LIMIT (64 * 1024)

/* ---------------------------------------------------------------- buffers */

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

static int put(Buf *b, const char *s, size_t n) {
    if (n == 0)
        return 0;
    if (buf_grow(b, n))
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int puts_(Buf *b, const char *s) { return put(b, s, strlen(s)); }

#define PUTL(b, literal) put((b), (literal), sizeof(literal) - 1)

static int put_int(Buf *b, long long v) {
    char tmp[24];
    int i = sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    return put(b, tmp + i, sizeof tmp - (size_t)i);
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
    if (put(b, "\"", 1))
        return -1;
    size_t done = 0, i = 0;
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

/* ---------------------------------------------------------------- bytes to text */

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

/* ---------------------------------------------------------------- character classes */

/* ASCII whitespace (trace/ascii.py WHITESPACE, and Python's \s under re.ASCII). */
static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_hex_digit(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int ident_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static int ident_char(char c) { return ident_start(c) || is_digit(c); }

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

/* ---------------------------------------------------------------- netfilter knowledge */

static const char *HOOKS[] = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"};
static const size_t HOOK_LEN[] = {10, 5, 7, 6, 11};
#define N_HOOKS 5
static const int HOOK_RANK[] = {0, 1, 1, 0, 2};
static const char *TABLES[] = {"raw", "mangle", "nat", "filter", "security"};
#define N_TABLES 5
/* Index of each table at each hook (HOOK_TABLES in netfilter.py); -1: not there. */
static const int HOOK_TABLE_INDEX[N_HOOKS][N_TABLES] = {
    /* PREROUTING  raw mangle nat */ {0, 1, 2, -1, -1},
    /* INPUT       mangle filter security nat */ {-1, 0, 3, 1, 2},
    /* FORWARD     mangle filter security */ {-1, 0, -1, 1, 2},
    /* OUTPUT      raw mangle nat filter security */ {0, 1, 2, 3, 4},
    /* POSTROUTING mangle nat */ {-1, 0, 1, -1, -1},
};
static const int HOOK_TABLE_COUNT[] = {3, 4, 3, 5, 2};

static int find_name(const char **names, int count, const char *s, size_t n) {
    for (int i = 0; i < count; i++)
        if (names[i][0] == s[0] && strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
            return i;
    return -1;
}

/* slot_rank(hook, table) as one comparable number; table -1: unknown table. */
static int slot_rank(int hook, int table) {
    int index = table >= 0 ? HOOK_TABLE_INDEX[hook][table] : -1;
    if (index < 0)
        index = HOOK_TABLE_COUNT[hook];
    return HOOK_RANK[hook] * 16 + index;
}

/* ---------------------------------------------------------------- fields of a line */

static const char *TCP_FLAG_NAMES[] = {"ACK", "CWR", "ECE", "FIN", "PSH", "RST", "SYN", "URG"}; /* sorted */
#define N_TCP_FLAGS 8
static const char *PROTOCOL_NAMES[] = {"ICMP", "TCP", "UDP", "UDPLITE", "SCTP", "DCCP", "GRE", "ESP", "AH", "IGMP", "ICMPV6"};
enum { K_UNKNOWN, K_UNUSED, K_TC, K_IN, K_OUT, K_SRC, K_DST, K_TTL, K_HOPLIMIT, K_FLOWLBL, K_ID, K_PROTO, K_TYPE, K_CODE,
       K_SEQ, K_WINDOW, K_URGP, K_SPT, K_DPT, K_MARK };

/* parse_kernel's KNOWN_KEYS; K_UNUSED for its UNUSED_KEYS (values the analysis ignores). */
static int key_of(const char *k, size_t n) {
#define IS(name) (n == sizeof(name) - 1 && memcmp(k, name, sizeof(name) - 1) == 0)
    switch (n) {
    case 2:
        return IS("IN") ? K_IN : IS("ID") ? K_ID : IS("TC") ? K_TC : K_UNKNOWN;
    case 3:
        if (IS("OUT")) return K_OUT;
        if (IS("SRC")) return K_SRC;
        if (IS("DST")) return K_DST;
        if (IS("TTL")) return K_TTL;
        if (IS("SEQ")) return K_SEQ;
        if (IS("SPT")) return K_SPT;
        if (IS("DPT")) return K_DPT;
        if (IS("MAC") || IS("LEN") || IS("TOS") || IS("OPT") || IS("ACK") || IS("RES") || IS("UID") || IS("GID") ||
            IS("MTU"))
            return K_UNUSED;
        return K_UNKNOWN;
    case 4:
        if (IS("TYPE")) return K_TYPE;
        if (IS("CODE")) return K_CODE;
        if (IS("URGP")) return K_URGP;
        if (IS("MARK")) return K_MARK;
        return IS("PREC") || IS("FRAG") ? K_UNUSED : K_UNKNOWN;
    case 5:
        return IS("PROTO") ? K_PROTO : K_UNKNOWN;
    case 6:
        return IS("WINDOW") ? K_WINDOW : IS("PHYSIN") ? K_UNUSED : K_UNKNOWN;
    case 7:
        return IS("PHYSOUT") ? K_UNUSED : IS("FLOWLBL") ? K_FLOWLBL : K_UNKNOWN;
    case 8:
        return IS("HOPLIMIT") ? K_HOPLIMIT : K_UNKNOWN;
    case 10:
        return IS("INCOMPLETE") ? K_UNUSED : K_UNKNOWN;
    }
    return K_UNKNOWN;
#undef IS
}

/* A string inside the current line (or inside a copy, for the assembler's last fields). */
typedef struct {
    const char *s;
    Py_ssize_t n; /* -1: None */
} Ref;

#define ADDR_MAX 46 /* an address is at most 45 characters (parse_kernel.IPV6) */

typedef struct {
    char src[ADDR_MAX], dst[ADDR_MAX]; /* "" = None; validated addresses */
    char proto[8];                     /* "" = None */
    long long ip_id, ttl, icmp_type, icmp_id, icmp_seq, sport, dport, flow_label, tcp_seq;
    int flags; /* bit i: TCP_FLAG_NAMES[i]; 0 = None */
    int damaged;
    Ref in_if, out_if; /* n == -1: None (an empty IN= is None too) */
    Ref mark;          /* hex digits, leading zeros stripped ("" = 0); n == -1: None */
} Fields;

static int ref_eq(Ref a, Ref b) { return a.n == b.n && (a.n <= 0 || memcmp(a.s, b.s, (size_t)a.n) == 0); }

static int mark_eq(Ref a, Ref b) { return a.n == b.n && (a.n <= 0 || strncasecmp(a.s, b.s, (size_t)a.n) == 0); }

/* Fields.__eq__ */
static int fields_eq(const Fields *a, const Fields *b) {
    return strcmp(a->src, b->src) == 0 && strcmp(a->dst, b->dst) == 0 && strcmp(a->proto, b->proto) == 0 &&
           a->ip_id == b->ip_id && a->ttl == b->ttl && a->icmp_type == b->icmp_type && a->icmp_id == b->icmp_id &&
           a->icmp_seq == b->icmp_seq && a->sport == b->sport && a->dport == b->dport && a->flags == b->flags &&
           a->damaged == b->damaged && a->flow_label == b->flow_label && a->tcp_seq == b->tcp_seq &&
           ref_eq(a->in_if, b->in_if) && ref_eq(a->out_if, b->out_if) && mark_eq(a->mark, b->mark);
}

static void fields_init(Fields *f) {
    memset(f, 0, sizeof *f);
    f->ip_id = f->ttl = f->icmp_type = f->icmp_id = f->icmp_seq = f->sport = f->dport = f->flow_label = f->tcp_seq = NONE;
    f->in_if.n = f->out_if.n = f->mark.n = -1;
}

static void set_address(char *into, const char *v, size_t n) {
    memcpy(into, v, n);
    into[n] = 0;
}

/* parse_kernel.parse_fields on s[0:n]. */
static void parse_fields(const char *s, size_t n, Fields *f) {
    fields_init(f);
    int damaged = 0, seen_l4 = 0, ip_id_done = 0, proto_token = 0, flags = 0, v6 = 0;
    long long ids = 0, depth = 0;
    char proto[8] = "";
    size_t i = 0;
    while (i < n) {
        while (i < n && is_space(s[i]))
            i++;
        if (i >= n)
            break;
        const char *t = s + i;
        size_t len = 0;
        while (i < n && !is_space(s[i])) {
            i++;
            len++;
        }
        if (depth || t[0] == '[') {
            if (t[0] == '[')
                depth++;
            for (size_t j = 0; j < len; j++)
                if (t[j] == ']')
                    depth--;
            if (depth < 0)
                depth = 0;
            continue;
        }
        const char *eq = memchr(t, '=', len);
        if (!eq) {
            int flag = find_in(TCP_FLAG_NAMES, N_TCP_FLAGS, t, len);
            if (flag >= 0)
                flags |= 1 << flag;
            else if (!name_is(t, len, "DF") && !name_is(t, len, "MF") && !name_is(t, len, "CE") &&
                     !name_is(t, len, "OPT") && !(t[0] == '(' && t[len - 1] == ')'))
                damaged = 1;
            continue;
        }
        size_t klen = (size_t)(eq - t);
        const char *v = eq + 1;
        size_t vlen = len - klen - 1;
        switch (key_of(t, klen)) {
        case K_UNUSED:
            break;
        case K_TC:
            v6 = 1;
            break;
        case K_SRC:
        case K_DST: {
            char *into = t[0] == 'S' ? f->src : f->dst;
            if (is_ipv4(v, vlen) || is_ipv6(v, vlen)) {
                set_address(into, v, vlen);
                if (memchr(v, ':', vlen))
                    v6 = 1;
            } else {
                damaged = 1;
            }
            break;
        }
        case K_IN:
            f->in_if = (Ref){v, vlen ? (Py_ssize_t)vlen : -1};
            break;
        case K_OUT:
            f->out_if = (Ref){v, vlen ? (Py_ssize_t)vlen : -1};
            break;
        case K_TTL:
        case K_HOPLIMIT:
            f->ttl = small_int(v, vlen, 255);
            damaged |= f->ttl == NONE;
            if (t[0] == 'H')
                v6 = 1;
            break;
        case K_FLOWLBL:
            f->flow_label = small_int(v, vlen, 0xFFFFF);
            damaged |= f->flow_label == NONE;
            v6 = 1;
            break;
        case K_PROTO: {
            char upper[8];
            int ok = 0;
            if (vlen > 0 && vlen < 8) {
                for (size_t j = 0; j < vlen; j++)
                    upper[j] = (v[j] >= 'a' && v[j] <= 'z') ? (char)(v[j] - 32) : v[j];
                upper[vlen] = 0;
                ok = find_in(PROTOCOL_NAMES, 11, upper, vlen) >= 0 || (all_digits(upper, vlen) && vlen <= 3);
            }
            if (ok)
                memcpy(proto, upper, vlen + 1);
            else
                proto[0] = 0;
            damaged |= !ok;
            proto_token = seen_l4 = 1;
            break;
        }
        case K_ID: {
            ids++;
            long long number = small_int(v, vlen, 65535);
            damaged |= number == NONE;
            if (!seen_l4 && !ip_id_done && !v6) {
                f->ip_id = number;
                ip_id_done = 1;
            } else {
                f->icmp_id = number;
            }
            break;
        }
        case K_TYPE:
            f->icmp_type = small_int(v, vlen, 255);
            damaged |= f->icmp_type == NONE;
            seen_l4 = 1;
            if (!proto[0])
                strcpy(proto, "ICMP");
            break;
        case K_CODE:
            seen_l4 = 1;
            if (!proto[0])
                strcpy(proto, "ICMP");
            break;
        case K_SEQ:
            if ((!proto[0] || strcmp(proto, "ICMP") == 0 || strcmp(proto, "ICMPV6") == 0) && f->sport == NONE) {
                f->icmp_seq = small_int(v, vlen, 0xFFFFFFFFLL);
                damaged |= f->icmp_seq == NONE;
            } else {
                f->tcp_seq = small_int(v, vlen, 0xFFFFFFFFLL);
            }
            break;
        case K_SPT:
        case K_DPT: {
            long long port = small_int(v, vlen, 65535);
            damaged |= port == NONE;
            seen_l4 = 1;
            if (t[0] == 'S')
                f->sport = port;
            else
                f->dport = port;
            break;
        }
        case K_WINDOW:
        case K_URGP:
            if (!proto[0])
                strcpy(proto, "TCP");
            break;
        case K_MARK: {
            int ok = vlen > 2 && v[0] == '0' && v[1] == 'x';
            for (size_t j = 2; ok && j < vlen; j++)
                ok = is_hex_digit(v[j]);
            if (ok) {
                size_t j = 2;
                while (j < vlen && v[j] == '0')
                    j++;
                f->mark = (Ref){v + j, (Py_ssize_t)(vlen - j)};
            } else {
                damaged = 1;
            }
            break;
        }
        case K_UNKNOWN:
            damaged = 1;
        }
    }
    if (flags && (!proto[0] || strcmp(proto, "TCP") == 0)) {
        f->flags = flags;
        strcpy(proto, "TCP");
    }
    if (!proto[0] && f->sport != NONE) {
        damaged = 1;
    } else if (!proto[0] && ids == 1 && f->icmp_seq != NONE && !v6) {
        f->icmp_id = f->ip_id;
        f->ip_id = NONE;
        damaged = 1;
    }
    memcpy(f->proto, proto, sizeof proto);
    if (!proto_token || !f->src[0] || !f->dst[0] || (f->ip_id == NONE && !v6) || !proto[0])
        damaged = 1;
    f->damaged = damaged;
}

/* ---------------------------------------------------------------- TRACE headers */

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

/* `[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d` (syslog), 15 characters. */
static int bsd_time_at(const char *t, size_t r) {
    return r >= 15 && t[0] >= 'A' && t[0] <= 'Z' && t[1] >= 'a' && t[1] <= 'z' && t[2] >= 'a' && t[2] <= 'z' &&
           t[3] == ' ' && (t[4] == ' ' || is_digit(t[4])) && is_digit(t[5]) && t[6] == ' ' && all_digits(t + 7, 2) &&
           t[9] == ':' && all_digits(t + 10, 2) && t[12] == ':' && all_digits(t + 13, 2);
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

/* Length of s[0:n] before NEXT_PREFIX (where a glued-on line's syslog/RFC 3339/dmesg time starts). */
static size_t before_next_prefix(const char *s, size_t n) {
    size_t digits;
    for (size_t p = 0; p < n; p++)
        if (bsd_time_at(s + p, n - p) || iso_minute_at(s + p, n - p) || uptime_at(s + p, n - p, &digits))
            return p;
    return n;
}

/* parse_kernel._prefix: (host, time) of the text before a line's first header. PREFIX is
 * `^\s*(?:<\d+>)?(BSD time|RFC 3339 time\S*)\s+(host: [^\s:\[]+)\s`, else the time is UPTIME
 * `\[\s*(\d+\.\d+)\]` anywhere. n == -1 in a Ref: None. */
static void parse_prefix(const char *t, size_t n, Ref *host, Ref *time) {
    host->n = time->n = -1;
    size_t p = 0;
    while (p < n && is_space(t[p]))
        p++;
    size_t q = p;
    if (q < n && t[q] == '<') {
        size_t d = ++q;
        while (q < n && is_digit(t[q]))
            q++;
        if (q > d && q < n && t[q] == '>')
            p = q + 1;
    }
    size_t r = n - p, end = 0;
    const char *u = t + p;
    if (bsd_time_at(u, r)) {
        end = p + 15;
    } else if (iso_minute_at(u, r) && r >= 19 && u[16] == ':' && all_digits(u + 17, 2)) {
        end = p + 19;
        while (end < n && !is_space(t[end]))
            end++;
    }
    if (end) {
        size_t h = end;
        while (h < n && is_space(t[h]))
            h++;
        size_t h0 = h;
        while (h < n && !is_space(t[h]) && t[h] != ':' && t[h] != '[')
            h++;
        if (h0 > end && h > h0 && h < n && is_space(t[h])) {
            *host = (Ref){t + h0, (Py_ssize_t)(h - h0)};
            *time = (Ref){t + p, (Py_ssize_t)(end - p)};
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

/* ---------------------------------------------------------------- packets */

enum { ID_IP, ID_TRACE, ID_FLOW };
static const char *IDENTITY_NAMES[] = {"ip_id", "trace_id", "flow"};

typedef struct Packet Packet;
struct Packet {
    int node;
    int identity;
    long long seq, repaired, last_seen;
    Fields f;                /* opening line's fields, merged; its Refs are not used */
    char *in_if, *out_if;    /* merged interfaces of a packet without IP id (NULL: None) */
    size_t in_if_n, out_if_n;
    int has_first, has_last;
    char first_src[ADDR_MAX], first_dst[ADDR_MAX], last_src[ADDR_MAX], last_dst[ADDR_MAX];
    long long first_ttl, first_sport, first_dport, last_ttl, last_sport, last_dport;
    int last_hook, last_table; /* last step's; last_hook -1: None; -2: no step yet */
    int tables_seen;           /* the node's table mask when the packet was finished */
    int at_end;                /* assemble.Packet.at_end */
    Buf steps, sig;
    size_t last_step_at;       /* where the last step's JSON starts in `steps` */
    Packet *prev, *next;       /* open packets, least recently touched first */
    Packet *id_prev, *id_next; /* same (node, ip id) bucket, in opening order */
    size_t bucket;
    int indexed;               /* in an ip id bucket */
};

#define BUCKETS 4096
/* feed() hands over at most about this many packets at a time (memory stays flat). */
#define BATCH_PACKETS 1024
/* assemble.EXPIRE_EVERY */
#define EXPIRE_EVERY 64

typedef struct {
    PyObject_HEAD int window;
    long long count, seq, unattributed;
    long long open_flows; /* open packets of identity flow */
    long long lines, ignored, skipped, records, cut_lines;
    Packet *head, *tail; /* open packets */
    Packet *bucket_head[BUCKETS], *bucket_tail[BUCKETS];
    /* the assembler's `_last`: node, a copy of the fields, the packet (NULL: not open) */
    int has_last, last_node;
    Fields last_fields;
    Buf last_text;
    Packet *last_packet;
    /* nodes, by number: name, tables seen (bit i = TABLES[i]), when its latest packet
     * began, the name as a Python str */
    char **node_names;
    size_t *node_lens;
    int *table_masks;
    long long *began;
    PyObject **node_objects; /* made when first needed (with the GIL) */
    int n_nodes, cap_nodes;
    int *node_slots; /* open-addressing index of the names: node number + 1, 0 = free */
    size_t n_slots;
    Packet **done; /* finished, not yet handed to Python */
    size_t n_done, cap_done;
    int failed;     /* out of memory */
    int busy;       /* feed() runs without the GIL: no other call meanwhile */
    int line_node;  /* node of the lines being fed, or of lines without a host field */
    int from_lines; /* take the node from each line's syslog host field */
    int in_file;    /* begin() was called and end() not yet */
    /* the line being read across chunks (at most LINE_LIMIT bytes) */
    Buf carry;
    int carrying, carry_cut;
    Buf text; /* a line made valid UTF-8 */
    /* the last line's prefix (what precedes its first header): its node and time */
    Buf prefix_text;
    int has_prefix, prefix_node;
    Ref prefix_time;
    Header *headers; /* the headers of a glued line */
    /* the last record's field text and its parse: most lines repeat the previous line's */
    Buf tail_text;
    Fields tail_fields;
    int has_tail, tail_glued;
    size_t cap_headers;
    long long line_no;
} Engine;

static size_t bucket_of(int node, long long ip_id) { return ((size_t)node * 7919u + (size_t)ip_id) % BUCKETS; }

static void packet_free(Packet *p) {
    free(p->steps.p);
    free(p->sig.p);
    free(p->in_if);
    free(p->out_if);
    free(p);
}

static void lru_unlink(Engine *e, Packet *p) {
    if (p->prev)
        p->prev->next = p->next;
    else
        e->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        e->tail = p->prev;
    p->prev = p->next = NULL;
}

static void lru_append(Engine *e, Packet *p) {
    p->prev = e->tail;
    p->next = NULL;
    if (e->tail)
        e->tail->next = p;
    else
        e->head = p;
    e->tail = p;
}

static void finish(Engine *e, Packet *p) {
    lru_unlink(e, p);
    if (p->identity == ID_FLOW)
        e->open_flows--;
    p->tables_seen = e->table_masks[p->node];
    if (p->indexed) {
        size_t b = p->bucket;
        if (p->id_prev)
            p->id_prev->id_next = p->id_next;
        else
            e->bucket_head[b] = p->id_next;
        if (p->id_next)
            p->id_next->id_prev = p->id_prev;
        else
            e->bucket_tail[b] = p->id_prev;
    }
    if (e->last_packet == p)
        e->last_packet = NULL;
    if (e->n_done == e->cap_done) {
        size_t cap = e->cap_done ? e->cap_done * 2 : 256;
        Packet **done = realloc(e->done, cap * sizeof *done);
        if (!done) {
            e->failed = 1;
            packet_free(p);
            return;
        }
        e->done = done;
        e->cap_done = cap;
    }
    e->done[e->n_done++] = p;
}

static void expire(Engine *e) {
    while (e->head && e->count - e->head->last_seen >= e->window)
        finish(e, e->head);
}

static int agree(long long a, long long b) { return a == NONE || b == NONE || a == b; }

/* assemble._v6: 1 IPv6, 0 IPv4, -1 no address. */
static int v6_of(const char *src, const char *dst) {
    const char *a = src[0] ? src : dst;
    return a[0] ? strchr(a, ':') != NULL : -1;
}

static int text_agrees(const char *a, size_t an, Ref b) {
    return a == NULL || b.n < 0 || ((size_t)b.n == an && memcmp(a, b.s, an) == 0);
}

/* assemble._same_flow */
static int same_flow(const Packet *packet, const Fields *f) {
    const Fields *p = &packet->f;
    if (packet->has_last) {
        if (f->src[0] && strcmp(f->src, packet->last_src) != 0)
            return 0;
        if (f->dst[0] && strcmp(f->dst, packet->last_dst) != 0 && strcmp(packet->last_dst, packet->first_dst) != 0)
            return 0;
    }
    return text_agrees(packet->in_if, packet->in_if_n, f->in_if) &&
           text_agrees(packet->out_if, packet->out_if_n, f->out_if) && agree(p->flow_label, f->flow_label) &&
           agree(p->tcp_seq, f->tcp_seq) && agree(p->icmp_seq, f->icmp_seq);
}

/* assemble.compatible */
static int compatible(const Packet *packet, const Fields *f) {
    const Fields *p = &packet->f;
    if (!agree(p->ip_id, f->ip_id) || !agree(p->icmp_type, f->icmp_type))
        return 0;
    if (p->proto[0] && f->proto[0] && strcmp(p->proto, f->proto) != 0)
        return 0;
    if (p->flags && f->flags && p->flags != f->flags)
        return 0;
    if (p->icmp_id != NONE && f->icmp_id != NONE && p->icmp_seq != NONE && f->icmp_seq != NONE &&
        p->icmp_id != f->icmp_id && p->icmp_seq != f->icmp_seq)
        return 0;
    if (p->sport != NONE && p->dport != NONE && f->sport != NONE && f->dport != NONE && p->sport != f->sport &&
        p->dport != f->dport)
        return 0;
    int line_v6 = v6_of(f->src, f->dst);
    int packet_v6 = packet->has_last ? v6_of(packet->last_src, packet->last_dst) : -1;
    if (packet_v6 < 0 && p->ip_id != NONE)
        packet_v6 = 0;
    if (line_v6 >= 0 && packet_v6 >= 0 && line_v6 != packet_v6)
        return 0;
    return p->ip_id != NONE || same_flow(packet, f);
}

typedef struct {
    Header h;
    int hook;  /* index into HOOKS if the chain is a built-in one, else -1 */
    int table; /* index into TABLES, -1: another table */
} Step;

/* Assembler._next_hook: may `s` come next in `p`'s walk, and in which hook (-1: None). */
static int next_hook(const Packet *p, const Step *s, int *hook) {
    if (p->last_hook == -2) {
        *hook = s->hook;
        return 1;
    }
    *hook = s->hook >= 0 ? s->hook : p->last_hook;
    if (p->last_hook < 0)
        return 1;
    return slot_rank(*hook, s->table) >= slot_rank(p->last_hook, p->last_table);
}

static int copy_text(char **into, size_t *into_n, Ref from) {
    if (*into || from.n < 0)
        return 0;
    *into = malloc((size_t)from.n + 1);
    if (!*into)
        return -1;
    memcpy(*into, from.s, (size_t)from.n);
    *into_n = (size_t)from.n;
    return 0;
}

/* assemble._merge */
static int merge(Packet *packet, const Fields *f) {
    Fields *into = &packet->f;
    if (into->ip_id == NONE)
        into->ip_id = f->ip_id;
    if (!into->proto[0])
        memcpy(into->proto, f->proto, sizeof into->proto);
    if (into->icmp_type == NONE)
        into->icmp_type = f->icmp_type;
    if (into->icmp_id == NONE)
        into->icmp_id = f->icmp_id;
    if (into->icmp_seq == NONE)
        into->icmp_seq = f->icmp_seq;
    if (into->sport == NONE)
        into->sport = f->sport;
    if (into->dport == NONE)
        into->dport = f->dport;
    if (!into->flags)
        into->flags = f->flags;
    if (into->flow_label == NONE)
        into->flow_label = f->flow_label;
    if (into->tcp_seq == NONE)
        into->tcp_seq = f->tcp_seq;
    if (packet->identity == ID_FLOW)  /* only a packet without IP id compares interfaces */
        return copy_text(&packet->in_if, &packet->in_if_n, f->in_if) ||
               copy_text(&packet->out_if, &packet->out_if_n, f->out_if);
    return 0;
}

static int put_mark(Buf *b, Ref mark) {
    if (PUTL(b, "\"0x"))
        return -1;
    if (mark.n == 0)
        return PUTL(b, "0\"");
    for (Py_ssize_t i = 0; i < mark.n; i++) {
        char c = mark.s[i];
        c = (c >= 'A' && c <= 'F') ? (char)(c + 32) : c;
        if (put(b, &c, 1))
            return -1;
    }
    return PUTL(b, "\"");
}

/* The position as JSON and signature give it: digits without leading zeros, "0" for none. */
static int put_position(Buf *b, const Header *h) { return h->pos_n ? put(b, h->pos, h->pos_n) : PUTL(b, "0"); }

static int put_kind(Buf *b, const Header *h) { return put(b, KINDS[h->kind], KIND_LEN[h->kind]); }

static void append_step(Engine *e, Packet *p, const Step *s, const Fields *f, int hook, Ref time) {
    Buf *b = &p->steps;
    int err = 0;
    if (p->last_hook != -2)
        err |= PUTL(b, ", ");
    p->last_step_at = b->n;
    err |= PUTL(b, "{\"table\": ");
    err |= put_jstr(b, s->h.table, s->h.table_n);
    err |= PUTL(b, ", \"chain\": ");
    err |= put_jstr(b, s->h.chain, s->h.chain_n);
    err |= PUTL(b, ", \"kind\": \"");
    err |= put_kind(b, &s->h);
    err |= PUTL(b, "\", \"position\": ");
    err |= put_position(b, &s->h);
    err |= PUTL(b, ", \"rule\": null, \"hook\": ");
    if (hook >= 0) {
        err |= PUTL(b, "\"");
        err |= put(b, HOOKS[hook], HOOK_LEN[hook]);
        err |= PUTL(b, "\"");
    } else {
        err |= PUTL(b, "null");
    }
    err |= PUTL(b, ", \"line\": ");
    err |= put_int(b, e->line_no);
    if (f->mark.n >= 0) {
        err |= PUTL(b, ", \"mark\": ");
        err |= put_mark(b, f->mark);
    }
    if (time.n >= 0) {
        err |= PUTL(b, ", \"time\": ");
        err |= put_jstr(b, time.s, (size_t)time.n);
    }
    err |= PUTL(b, "}");
    /* the walk's signature: table TAB chain TAB kind TAB position TAB hook NEWLINE */
    Buf *g = &p->sig;
    err |= put(g, s->h.table, s->h.table_n);
    err |= PUTL(g, "\t");
    err |= put(g, s->h.chain, s->h.chain_n);
    err |= PUTL(g, "\t");
    err |= put_kind(g, &s->h);
    err |= PUTL(g, "\t");
    err |= put_position(g, &s->h);
    err |= PUTL(g, "\t");
    if (hook >= 0)
        err |= put(g, HOOKS[hook], HOOK_LEN[hook]);
    err |= PUTL(g, "\n");
    if (err)
        e->failed = 1;
    p->last_hook = hook;
    p->last_table = s->table;
    p->at_end = 0;
    if (f->src[0] && f->dst[0]) {
        if (!p->has_first) {
            p->has_first = 1;
            memcpy(p->first_src, f->src, ADDR_MAX);
            memcpy(p->first_dst, f->dst, ADDR_MAX);
            p->first_ttl = f->ttl;
            p->first_sport = f->sport;
            p->first_dport = f->dport;
        }
        p->has_last = 1;
        memcpy(p->last_src, f->src, ADDR_MAX);
        memcpy(p->last_dst, f->dst, ADDR_MAX);
        p->last_ttl = f->ttl;
        p->last_sport = f->sport;
        p->last_dport = f->dport;
    }
    p->last_seen = e->count;
    lru_unlink(e, p);
    lru_append(e, p);
}

static void keep_last(Engine *e, int node, const Fields *f, Packet *p) {
    e->has_last = 1;
    e->last_node = node;
    e->last_packet = p;
    e->last_fields = *f;
    Buf *t = &e->last_text;
    t->n = 0;
    if (buf_grow(t, (size_t)(f->in_if.n > 0 ? f->in_if.n : 0) + (size_t)(f->out_if.n > 0 ? f->out_if.n : 0) +
                        (size_t)(f->mark.n > 0 ? f->mark.n : 0) + 1)) {
        e->failed = 1;
        e->has_last = 0;
        return;
    }
    Ref *refs[] = {&e->last_fields.in_if, &e->last_fields.out_if, &e->last_fields.mark};
    for (int i = 0; i < 3; i++) {
        if (refs[i]->n > 0) {
            memcpy(t->p + t->n, refs[i]->s, (size_t)refs[i]->n);
            refs[i]->s = t->p + t->n;
            t->n += (size_t)refs[i]->n;
        }
    }
}

/* Into the (node, ip id) bucket of its IP id. */
static void index_packet(Engine *e, Packet *p) {
    size_t b = p->bucket = bucket_of(p->node, p->f.ip_id);
    p->indexed = 1;
    p->id_next = NULL;
    p->id_prev = e->bucket_tail[b];
    if (e->bucket_tail[b])
        e->bucket_tail[b]->id_next = p;
    else
        e->bucket_head[b] = p;
    e->bucket_tail[b] = p;
}

/* Assembler._open */
static Packet *open_packet(Engine *e, int node, const Fields *f) {
    Packet *p = calloc(1, sizeof *p);
    if (!p) {
        e->failed = 1;
        return NULL;
    }
    p->node = node;
    p->seq = ++e->seq;
    p->identity = f->ip_id != NONE ? ID_IP : ID_FLOW;
    p->f = *f;
    p->f.damaged = 0;
    p->first_ttl = p->first_sport = p->first_dport = p->last_ttl = p->last_sport = p->last_dport = NONE;
    p->last_hook = -2;
    if (f->damaged)
        p->repaired++;
    e->began[node] = e->count;
    lru_append(e, p);
    if (f->ip_id != NONE)
        index_packet(e, p);
    else
        e->open_flows++;
    return p;
}

/* Assembler._find */
static Packet *find(Engine *e, int node, const Step *s, const Fields *f, int *hook) {
    if (f->ip_id != NONE) {
        for (Packet *p = e->bucket_tail[bucket_of(node, f->ip_id)]; p; p = p->id_prev)
            if (p->node == node && p->f.ip_id == f->ip_id && compatible(p, f) && next_hook(p, s, hook))
                return p;
        if (e->open_flows) /* an IPv4 flow packet: a damaged start this line's IP id may adopt */
            for (Packet *p = e->tail; p; p = p->prev)
                if (p->identity == ID_FLOW && p->node == node && compatible(p, f) && next_hook(p, s, hook))
                    return p;
        return NULL;
    }
    for (Packet *p = e->tail; p; p = p->prev)
        if (p->node == node && compatible(p, f) && next_hook(p, s, hook))
            return p;
    return NULL;
}

/* Assembler.mark_end: the open packets after whose last step no other packet of their node began. */
static void mark_end(Engine *e) {
    for (Packet *p = e->head; p; p = p->next)
        if (e->began[p->node] <= p->last_seen)
            p->at_end = 1;
}

/* ---------------------------------------------------------------- nodes */

static size_t name_hash(const char *name, size_t n) {
    size_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
    return h;
}

/* The slot of `name` in node_slots: where it is, or the free slot where it would go. */
static size_t name_slot(const Engine *e, const char *name, size_t n) {
    size_t i = name_hash(name, n) & (e->n_slots - 1);
    for (;; i = (i + 1) & (e->n_slots - 1)) {
        int node = e->node_slots[i] - 1;
        if (node < 0 || (e->node_lens[node] == n && memcmp(e->node_names[node], name, n) == 0))
            return i;
    }
}

/* Room for one more node (arrays and a half-empty index); -1 when out of memory. */
static int node_room(Engine *e) {
    if (e->n_nodes == e->cap_nodes) {
        int cap = e->cap_nodes ? e->cap_nodes * 2 : 8;
        char **names = realloc(e->node_names, (size_t)cap * sizeof *names);
        if (names)
            e->node_names = names;
        size_t *lens = realloc(e->node_lens, (size_t)cap * sizeof *lens);
        if (lens)
            e->node_lens = lens;
        int *masks = realloc(e->table_masks, (size_t)cap * sizeof *masks);
        if (masks)
            e->table_masks = masks;
        long long *began = realloc(e->began, (size_t)cap * sizeof *began);
        if (began)
            e->began = began;
        PyObject **objects = realloc(e->node_objects, (size_t)cap * sizeof *objects);
        if (objects)
            e->node_objects = objects;
        if (!names || !lens || !masks || !began || !objects)
            return -1;
        e->cap_nodes = cap;
    }
    if ((size_t)(e->n_nodes + 1) * 2 > e->n_slots) {
        size_t n_slots = e->n_slots ? e->n_slots * 2 : 16;
        int *slots = calloc(n_slots, sizeof *slots);
        if (!slots)
            return -1;
        free(e->node_slots);
        e->node_slots = slots;
        e->n_slots = n_slots;
        for (int i = 0; i < e->n_nodes; i++)
            e->node_slots[name_slot(e, e->node_names[i], e->node_lens[i])] = i + 1;
    }
    return 0;
}

/* The number of node `name`, registered if new; -1 when out of memory. */
static int node_number(Engine *e, const char *name, size_t n) {
    if (e->n_slots) {
        int node = e->node_slots[name_slot(e, name, n)] - 1;
        if (node >= 0)
            return node;
    }
    char *copy = malloc(n + 1);
    if (!copy || node_room(e)) {
        free(copy);
        return -1;
    }
    memcpy(copy, name, n);
    copy[n] = 0;
    int i = e->n_nodes++;
    e->node_names[i] = copy;
    e->node_lens[i] = n;
    e->table_masks[i] = 0;
    e->began[i] = 0;
    e->node_objects[i] = NULL;
    e->node_slots[name_slot(e, copy, n)] = i + 1;
    return i;
}

/* ---------------------------------------------------------------- lines */

/* The node and time of a line whose first header starts at `at` (the prefix parse of the
 * previous line is reused when the text is the same, as KernelLineParser.prefix caches). */
static int line_origin(Engine *e, const char *line, size_t at, Ref *time) {
    Buf *b = &e->prefix_text;
    if (!(e->has_prefix && b->n == at && (at == 0 || memcmp(b->p, line, at) == 0))) {
        e->has_prefix = 0;
        b->n = 0;
        if (put(b, line, at)) {
            e->failed = 1;
            time->n = -1;
            return e->line_node;
        }
        Ref host;
        parse_prefix(b->p, at, &host, &e->prefix_time);
        int node = host.n > 0 && e->from_lines ? node_number(e, host.s, (size_t)host.n) : e->line_node;
        if (node < 0) {
            e->failed = 1;
            node = e->line_node;
        }
        e->prefix_node = node;
        e->has_prefix = 1;
    }
    *time = e->prefix_time;
    return e->prefix_node;
}

/* Assembler.feed for one record (the node's table mask is updated first, as Analyzer.packets does). */
static void feed_record(Engine *e, int node, Ref time, const Header *h, const Fields *f) {
    Step s = {*h, find_name(HOOKS, N_HOOKS, h->chain, h->chain_n), find_name(TABLES, N_TABLES, h->table, h->table_n)};
    if (s.table >= 0)
        e->table_masks[node] |= 1 << s.table;
    e->records++;
    e->count++;
    int hook;
    if (e->has_last && e->last_packet && e->last_node == node && fields_eq(&e->last_fields, f)) {
        Packet *p = e->last_packet;
        if (next_hook(p, &s, &hook)) {
            if (f->damaged)
                p->repaired++;
            append_step(e, p, &s, f, hook, time);
            if (e->count % EXPIRE_EVERY == 0)
                expire(e);
            return;
        }
    }
    Packet *p = find(e, node, &s, f, &hook);
    if (!p) {
        if (f->ip_id == NONE && (!f->src[0] || !f->dst[0])) {
            e->unattributed++;
            expire(e);
            return;
        }
        p = open_packet(e, node, f);
        if (!p)
            return;
        hook = s.hook;
    } else if (f->damaged) {
        p->repaired++;
    }
    if (merge(p, f))
        e->failed = 1;
    if (p->identity == ID_FLOW && p->f.ip_id != NONE) { /* adopted by its IP id */
        p->identity = ID_IP;
        e->open_flows--;
        index_packet(e, p);
    }
    append_step(e, p, &s, f, hook, time);
    keep_last(e, node, f, p);
    if (e->count % EXPIRE_EVERY == 0)
        expire(e);
}

/* parse_fields, remembering the last result (KernelLineParser.fields caches the same way);
 * returns whether s[0:n] holds another "TRACE: " (then the line is glued). */
static int tail_fields(Engine *e, const char *s, size_t n, Fields *f) {
    Buf *t = &e->tail_text;
    if (!(e->has_tail && t->n == n && (n == 0 || memcmp(t->p, s, n) == 0))) {
        t->n = 0;
        e->has_tail = 0;
        if (put(t, s, n)) {
            e->failed = 1;
            parse_fields(s, n, f);
            return find_str(s, n, 0, "TRACE: ", 7) != NULL;
        }
        parse_fields(t->p, n, &e->tail_fields);
        e->tail_glued = find_str(s, n, 0, "TRACE: ", 7) != NULL;
        e->has_tail = 1;
    }
    *f = e->tail_fields;
    return e->tail_glued;
}

/* reader._kernel_records for one line (valid UTF-8, cut, '\r' stripped); `cut`: it was longer than LINE_LIMIT. */
static void kernel_line(Engine *e, const char *line, size_t n, int cut) {
    const char *first = find_str(line, n, 0, "TRACE:", 6);
    if (!first) {
        e->ignored++;
        return;
    }
    if ((size_t)(first - line) + 6 >= n || first[6] != ' ')
        first = find_str(line, n, (size_t)(first - line) + 6, "TRACE: ", 7);
    Header h;
    Fields f;
    /* the common case: one header, then fields (the header holds no space, so no other "TRACE: ") */
    Ref time;
    if (first && match_header(line, n, (size_t)(first - line), &h) && !tail_fields(e, line + h.end, n - h.end, &f)) {
        int node = line_origin(e, line, h.start, &time);
        f.damaged |= cut;
        feed_record(e, node, time, &h, &f);
        return;
    }
    /* glued or damaged: every header on the line (finditer) */
    size_t count = 0, occurrences = 0;
    size_t from = 0;
    const char *hit;
    while ((hit = find_str(line, n, from, "TRACE: ", 7))) {
        size_t at = (size_t)(hit - line);
        occurrences++;
        if (match_header(line, n, at, &h)) {
            if (count == e->cap_headers) {
                size_t cap = e->cap_headers ? e->cap_headers * 2 : 16;
                Header *grown = realloc(e->headers, cap * sizeof *grown);
                if (!grown) {
                    e->failed = 1;
                    return;
                }
                e->headers = grown;
                e->cap_headers = cap;
            }
            e->headers[count++] = h;
            from = h.end;
        } else {
            from = at + 7;
        }
    }
    Header *headers = e->headers;
    size_t bad = 0;
    if (occurrences != count) {
        size_t like = trace_like_count(line, n);
        bad = like > count ? like - count : 0;
    }
    e->skipped += (long long)bad;
    if (!count) {
        if (!bad)
            e->ignored++;
        return;
    }
    int node = line_origin(e, line, headers[0].start, &time);
    for (size_t i = 0; i < count; i++) {
        if (i + 1 < count) {
            const char *seg = line + headers[i].end;
            size_t len = headers[i + 1].start - headers[i].end;
            parse_fields(seg, before_next_prefix(seg, len), &f);
            f.damaged = 1;
        } else {
            tail_fields(e, line + headers[i].end, n - headers[i].end, &f);
            f.damaged |= cut;
        }
        feed_record(e, node, time, &headers[i], &f);
    }
}

static int has_marker(const char *s, size_t n) {
    return find_str(s, n, 0, "TRACE:", 6) || find_str(s, n, 0, "trace id", 8) || find_str(s, n, 0, "PACKET:", 7);
}

/* reader.marked_lines + _kernel_records for one whole line of the input (already cut). */
static void feed_line(Engine *e, const char *raw, size_t n, int cut) {
    e->lines++;
    e->line_no++;
    e->cut_lines += cut;
    while (n && raw[n - 1] == '\r')
        n--;
    if (!has_marker(raw, n)) {
        e->ignored++;
        return;
    }
    if (has_high_bytes((const unsigned char *)raw, n)) {
        if (utf8_normalize((const unsigned char *)raw, n, &e->text)) {
            e->failed = 1;
            return;
        }
        raw = e->text.p;
        n = e->text.n;
    }
    kernel_line(e, raw, n, cut);
}

/* ---------------------------------------------------------------- feeding */

/* The line carried over from the last chunk, completed by `data` up to its first '\n'
 * (or all of it); returns where the rest of `data` starts (n: the line goes on). */
static size_t complete_carry(Engine *e, const char *data, size_t n) {
    const char *nl = memchr(data, '\n', n);
    size_t head = nl ? (size_t)(nl - data) : n;
    size_t room = LINE_LIMIT - e->carry.n;
    if (head > room)
        e->carry_cut = 1;
    if (put(&e->carry, data, head < room ? head : room))
        e->failed = 1;
    if (!nl)
        return n;
    feed_line(e, e->carry.p ? e->carry.p : "", e->carry.n, e->carry_cut);
    e->carry.n = 0;
    e->carrying = e->carry_cut = 0;
    return head + 1;
}

/* Lines of data[pos:n] until a batch of packets is ready; the last line without '\n' is carried. */
static size_t feed_lines(Engine *e, const char *data, size_t n, size_t pos) {
    while (pos < n && e->n_done < BATCH_PACKETS) {
        if (data[pos] == '\n') { /* a run of empty lines: only counted */
            size_t q = pos;
            while (q < n && data[q] == '\n')
                q++;
            long long k = (long long)(q - pos);
            e->lines += k;
            e->line_no += k;
            e->ignored += k;
            pos = q;
            continue;
        }
        const char *nl = memchr(data + pos, '\n', n - pos);
        if (!nl) {
            size_t rest = n - pos;
            e->carry.n = 0;
            e->carry_cut = rest > LINE_LIMIT;
            if (put(&e->carry, data + pos, rest < LINE_LIMIT ? rest : LINE_LIMIT))
                e->failed = 1;
            e->carrying = 1;
            return n;
        }
        size_t end = (size_t)(nl - data), len = end - pos;
        feed_line(e, data + pos, len > LINE_LIMIT ? LINE_LIMIT : len, len > LINE_LIMIT);
        pos = end + 1;
    }
    return pos;
}

/* ---------------------------------------------------------------- Python interface */

/* Set up by __init__ (and begin(), `fed`), and not in use by another thread; else an exception. */
static int engine_ready(Engine *e, int fed) {
    if (!e->window)
        PyErr_SetString(PyExc_RuntimeError, "Engine.__init__ was not called");
    else if (e->busy)
        PyErr_SetString(PyExc_RuntimeError, "the engine is busy in another thread");
    else if (fed && !e->in_file)
        PyErr_SetString(PyExc_RuntimeError, "feed() or end() outside begin() ... end()");
    else
        return 1;
    return 0;
}

static PyObject *py_str_or_none(const char *s) { return s[0] ? PyUnicode_FromString(s) : Py_NewRef(Py_None); }

static PyObject *py_int_or_none(long long v) { return v == NONE ? Py_NewRef(Py_None) : PyLong_FromLongLong(v); }

static PyObject *endpoint(int has, const char *src, const char *dst, long long ttl, long long sport, long long dport) {
    if (!has)
        Py_RETURN_NONE;
    return Py_BuildValue("(NNNNN)", py_str_or_none(src), py_str_or_none(dst), py_int_or_none(ttl),
                         py_int_or_none(sport), py_int_or_none(dport));
}

static int put_str_or_null(Buf *b, const char *s) { return s[0] ? put_jstr(b, s, strlen(s)) : PUTL(b, "null"); }

static int is_icmp(const char *proto) { return strcmp(proto, "ICMP") == 0 || strcmp(proto, "ICMPV6") == 0; }

/* The node-independent JSON pieces around what Python decides (see native.py). */
static int render_head(const Packet *p, Buf *b) {
    char protocol[8];
    const char *proto = p->f.proto[0] ? p->f.proto : "unknown";
    size_t k = 0;
    for (; proto[k]; k++)
        protocol[k] = (proto[k] >= 'A' && proto[k] <= 'Z') ? (char)(proto[k] + 32) : proto[k];
    protocol[k] = 0;
    int err = PUTL(b, "\"protocol\": ");
    err |= put_jstr(b, protocol, k);
    err |= PUTL(b, ", \"src\": ");
    err |= put_str_or_null(b, p->has_first ? p->first_src : p->f.src);
    err |= PUTL(b, ", \"dst\": ");
    err |= put_str_or_null(b, p->has_first ? p->first_dst : p->f.dst);
    err |= PUTL(b, ", \"ip_id\": ");
    err |= put_opt_int(b, p->f.ip_id);
    err |= PUTL(b, ", \"identity\": \"");
    err |= puts_(b, IDENTITY_NAMES[p->identity]);
    err |= PUTL(b, "\", \"ttl\": ");
    err |= put_opt_int(b, p->has_first ? p->first_ttl : p->f.ttl);
    return err;
}

static int render_tail(const Packet *p, Buf *b) {
    int err = PUTL(b, "\"exit\": ");
    if (p->has_last) {
        err |= PUTL(b, "{\"src\": ");
        err |= put_jstr(b, p->last_src, strlen(p->last_src));
        err |= PUTL(b, ", \"dst\": ");
        err |= put_jstr(b, p->last_dst, strlen(p->last_dst));
        err |= PUTL(b, "}");
    } else {
        err |= PUTL(b, "null");
    }
    err |= PUTL(b, ", \"repaired_lines\": ");
    err |= put_int(b, p->repaired);
    if (is_icmp(p->f.proto)) {
        err |= PUTL(b, ", \"icmp\": {\"type\": ");
        err |= put_opt_int(b, p->f.icmp_type);
        err |= PUTL(b, ", \"id\": ");
        err |= put_opt_int(b, p->f.icmp_id);
        err |= PUTL(b, ", \"seq\": ");
        err |= put_opt_int(b, p->f.icmp_seq);
        err |= PUTL(b, "}");
    }
    if (p->f.sport != NONE || p->f.dport != NONE) {
        err |= PUTL(b, ", \"sport\": ");
        err |= put_opt_int(b, p->f.sport);
        err |= PUTL(b, ", \"dport\": ");
        err |= put_opt_int(b, p->f.dport);
    }
    if (p->f.flags) {
        err |= PUTL(b, ", \"tcp_flags\": [");
        int firstflag = 1;
        for (int i = 0; i < N_TCP_FLAGS; i++) {
            if (p->f.flags & (1 << i)) {
                err |= puts_(b, firstflag ? "\"" : ", \"");
                err |= puts_(b, TCP_FLAG_NAMES[i]);
                err |= PUTL(b, "\"");
                firstflag = 0;
            }
        }
        err |= PUTL(b, "]");
    }
    if (p->f.flow_label != NONE) {
        err |= PUTL(b, ", \"flow_label\": ");
        err |= put_int(b, p->f.flow_label);
    }
    err |= PUTL(b, "}");
    return err;
}

/* (node name, seq, proto, ip_id, icmp_type, icmp_id, icmp_seq, sport, dport, tcp_flags mask,
 *  first, last, repaired_lines, tables mask, signature, head, steps, last_step, tail, at_end);
 *  first/last: (src, dst, ttl, sport, dport) or None. */
static PyObject *packet_tuple(Engine *e, Packet *p) {
    Buf head = {0}, tail = {0};
    PyObject *out = NULL;
    PyObject **node = &e->node_objects[p->node];
    if (!*node && !(*node = PyUnicode_DecodeUTF8(e->node_names[p->node], (Py_ssize_t)e->node_lens[p->node], "replace")))
        return NULL;
    if (render_head(p, &head) || render_tail(p, &tail)) {
        PyErr_NoMemory();
    } else {
        const char *last_step = p->steps.p + p->last_step_at;
        out = Py_BuildValue(
            "(OLNNNNNNNiNNLiy#y#y#y#y#i)", *node, p->seq, py_str_or_none(p->f.proto), py_int_or_none(p->f.ip_id),
            py_int_or_none(p->f.icmp_type), py_int_or_none(p->f.icmp_id), py_int_or_none(p->f.icmp_seq),
            py_int_or_none(p->f.sport), py_int_or_none(p->f.dport), p->f.flags,
            endpoint(p->has_first, p->first_src, p->first_dst, p->first_ttl, p->first_sport, p->first_dport),
            endpoint(p->has_last, p->last_src, p->last_dst, p->last_ttl, p->last_sport, p->last_dport), p->repaired,
            p->tables_seen, p->sig.p, (Py_ssize_t)p->sig.n, head.p, (Py_ssize_t)head.n, p->steps.p,
            (Py_ssize_t)p->steps.n, last_step, (Py_ssize_t)(p->steps.n - p->last_step_at), tail.p,
            (Py_ssize_t)tail.n, p->at_end);
    }
    free(head.p);
    free(tail.p);
    return out;
}

static PyObject *take_done(Engine *e) {
    if (e->failed) {
        e->failed = 0;
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New((Py_ssize_t)e->n_done);
    if (!list)
        return NULL;
    for (size_t i = 0; i < e->n_done; i++) {
        PyObject *item = packet_tuple(e, e->done[i]);
        if (!item) {
            Py_DECREF(list);
            list = NULL;
            for (size_t j = i; j < e->n_done; j++)
                packet_free(e->done[j]);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        packet_free(e->done[i]);
    }
    e->n_done = 0;
    return list;
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"window", NULL};
    int window = 400;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i", kw, &window))
        return -1;
    if (window < 1) {
        PyErr_SetString(PyExc_ValueError, "window must be positive");
        return -1;
    }
    if (e->window) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is already initialised");
        return -1;
    }
    e->window = window;
    e->line_node = -1;
    return 0;
}

static void Engine_dealloc(Engine *e) {
    while (e->head) {
        Packet *p = e->head;
        lru_unlink(e, p);
        packet_free(p);
    }
    for (size_t i = 0; i < e->n_done; i++)
        packet_free(e->done[i]);
    for (int i = 0; i < e->n_nodes; i++) {
        free(e->node_names[i]);
        Py_XDECREF(e->node_objects[i]);
    }
    free(e->node_names);
    free(e->node_lens);
    free(e->table_masks);
    free(e->began);
    free(e->node_objects);
    free(e->node_slots);
    free(e->done);
    free(e->last_text.p);
    free(e->headers);
    free(e->tail_text.p);
    free(e->prefix_text.p);
    free(e->carry.p);
    free(e->text.p);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

PyDoc_STRVAR(begin_doc, "begin(node, from_lines): the following chunks are a new file (lines count from 1) of `node`;\n"
                        "with from_lines, each line's syslog host field names its node, and `node` is for lines without one.");

static PyObject *Engine_begin(Engine *e, PyObject *args) {
    if (!engine_ready(e, 0))
        return NULL;
    if (e->in_file) {
        PyErr_SetString(PyExc_RuntimeError, "begin() before end() of the last file");
        return NULL;
    }
    PyObject *name;
    int from_lines;
    if (!PyArg_ParseTuple(args, "Up", &name, &from_lines))
        return NULL;
    PyObject *encoded = PyUnicode_AsEncodedString(name, "utf-8", "surrogatepass");
    if (!encoded)
        return NULL;
    int node = node_number(e, PyBytes_AS_STRING(encoded), (size_t)PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    if (node < 0)
        return PyErr_NoMemory();
    if (!e->node_objects[node])
        e->node_objects[node] = Py_NewRef(name);
    e->line_node = node;
    e->from_lines = from_lines;
    e->has_prefix = 0;
    e->line_no = 0;
    e->in_file = 1;
    e->carrying = e->carry_cut = 0;
    e->carry.n = 0;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(feed_doc, "feed(chunk, start=0) -> (finished packets, where to start next): `chunk` is the next\n"
                       "piece of the file, any bytes, lines may go on in the next chunk. It stops early once it has a\n"
                       "batch of packets to hand over: call again from the returned start until that is len(chunk).");

static PyObject *Engine_feed(Engine *e, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start = 0;
    if (!PyArg_ParseTuple(args, "y*|n", &view, &start))
        return NULL;
    PyObject *out = NULL;
    const char *data = view.buf;
    size_t n = (size_t)view.len, pos = start >= 0 ? (size_t)start : n + 1;
    if (!engine_ready(e, 1)) {
        /* the exception is set */
    } else if (pos > n) {
        PyErr_SetString(PyExc_ValueError, "start is outside the chunk");
    } else {
        e->busy = 1;
        Py_BEGIN_ALLOW_THREADS;
        if (pos == 0 && e->carrying && n)
            pos = complete_carry(e, data, n);
        pos = feed_lines(e, data, n, pos);
        Py_END_ALLOW_THREADS;
        e->busy = 0;
        PyObject *done = take_done(e);
        if (done)
            out = Py_BuildValue("(Nn)", done, (Py_ssize_t)pos);
    }
    PyBuffer_Release(&view);
    return out;
}

PyDoc_STRVAR(end_doc, "end() -> finished packets: the file ends (its last line, if it has no '\\n', is read now).");

static PyObject *Engine_end(Engine *e, PyObject *unused) {
    if (!engine_ready(e, 1))
        return NULL;
    if (e->carrying) {
        feed_line(e, e->carry.p ? e->carry.p : "", e->carry.n, e->carry_cut);
        e->carrying = e->carry_cut = 0;
        e->carry.n = 0;
    }
    mark_end(e);
    e->in_file = 0;
    return take_done(e);
}

PyDoc_STRVAR(flush_doc, "flush() -> every packet still open (end of input).");

static PyObject *Engine_flush(Engine *e, PyObject *unused) {
    if (!engine_ready(e, 0))
        return NULL;
    if (e->in_file) {
        PyErr_SetString(PyExc_RuntimeError, "flush() before end() of the last file");
        return NULL;
    }
    while (e->head)
        finish(e, e->head);
    return take_done(e);
}

PyDoc_STRVAR(stats_doc, "stats() -> (lines, ignored_lines, skipped_lines, trace_records, unattributed, cut_lines).");

static PyObject *Engine_stats(Engine *e, PyObject *unused) {
    if (!engine_ready(e, 0))
        return NULL;
    return Py_BuildValue("(LLLLLL)", e->lines, e->ignored, e->skipped, e->records, e->unattributed, e->cut_lines);
}

static PyMethodDef Engine_methods[] = {
    {"begin", (PyCFunction)Engine_begin, METH_VARARGS, begin_doc},
    {"feed", (PyCFunction)Engine_feed, METH_VARARGS, feed_doc},
    {"end", (PyCFunction)Engine_end, METH_NOARGS, end_doc},
    {"flush", (PyCFunction)Engine_flush, METH_NOARGS, flush_doc},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, stats_doc},
    {NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chainlab.trace._engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("Engine(window=400): kernel-format TRACE lines in, finished packets out."),
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
    PyObject *result = utf8_normalize(view.buf, (size_t)view.len, &out) ? PyErr_NoMemory()
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
    PyModuleDef_HEAD_INIT, "chainlab.trace._engine",
    "The trace analyzer's hot path (see native.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
