/*
 * chainlab.trace._engine: the trace analyzer in C (see native.py for how Python drives it).
 *
 * It does what reader.py, assemble.py and the pipeline's bookkeeping do, for every format
 * (kernel log, xtables-monitor, nft monitor) and option, line for line and with the same
 * results: it parses and groups the lines into packets, classifies directions, applies
 * --match, keeps flows, summary rows and diagram walks, and writes the JSON. Python judges
 * each distinct walk once (native.Calls.judge). The Python modules stay the reference: tests
 * compare both engines' output byte for byte.
 *
 * Input is any bytes, as reader.py reads them: lines split at '\n', cut to LINE_LIMIT
 * bytes, trailing '\r' dropped, then made valid UTF-8 the way Python's "replace" decoding
 * does (each invalid sequence becomes U+FFFD), so that equal text here is equal text there.
 * Only ASCII whitespace separates words (trace/ascii.py).
 *
 * One Engine is fed file after file (begin(), feed() or feed_from()..., end(), then
 * flush()). A kernel log is read in two threads (see "the parser thread" below): the
 * parser thread reads and parses chunk k while the calling thread assembles chunk k-1.
 */
#define PY_SSIZE_T_CLEAN
#ifndef ENGINE_SOURCE
#error "build with setup.py: it defines ENGINE_SOURCE, the SHA-256 of this file"
#endif
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#define PARSER_THREAD 1
#endif
#ifdef _WIN32
#include <io.h>
#define read _read
#define write _write
#else
#include <sys/uio.h>
#include <unistd.h>
#endif
#include <errno.h>
#include <limits.h>


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

/* ---------------------------------------------------------------- netfilter knowledge */

/* The hooks' names, in the one order every HOOKS-indexed table here follows. */
#define FOR_HOOKS(X) X("PREROUTING") X("INPUT") X("FORWARD") X("OUTPUT") X("POSTROUTING")
#define HOOK_NAME(name) name,
static const char *HOOKS[] = {FOR_HOOKS(HOOK_NAME)};
#define N_HOOKS 5
static const int HOOK_RANK[] = {0, 1, 1, 0, 2};
/* netfilter.HOOKS_AFTER as bits by hook index: PREROUTING -> INPUT, FORWARD, POSTROUTING; INPUT
   ends; FORWARD -> POSTROUTING; OUTPUT -> POSTROUTING (each hook itself included). */
static const int HOOKS_AFTER[] = {0x17, 0x02, 0x14, 0x18, 0x10};
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

/* netfilter.HOOK_INTERFACES: per hook, bit k set when the kernel knows the interfaces
 * k = (IN known) | (OUT known) << 1 there. */
static const int HOOK_INTERFACES[] = {1 << 1, 1 << 1, 1 << 3, 1 << 2, 1 << 2 | 1 << 3};

/* netfilter.hook_by_interfaces: the one hook at which `table` runs with the interfaces
 * `known` (bit 0: IN, bit 1: OUT) known; -1: several or none. */
static int hook_by_interfaces(int table, int known) {
    if (table < 0)
        return -1;
    int found = -1;
    for (int h = 0; h < N_HOOKS; h++)
        if (HOOK_TABLE_INDEX[h][table] >= 0 && (HOOK_INTERFACES[h] >> known & 1)) {
            if (found >= 0)
                return -1;
            found = h;
        }
    return found;
}

/* netfilter.ROUTES (local-in, forward, local-out) as hooks; -1: the route has ended. */
#define N_ROUTES 3
static const int ROUTES[N_ROUTES][3] = {{0, 1, -1}, {0, 2, 4}, {3, 4, -1}};

/* netfilter._next_hooks for one route: the first hook after `hook` at which `table` runs; -1: none. */
static int route_next_hook(const int *route, int hook, int table) {
    int i = 0;
    while (i < 3 && route[i] >= 0 && route[i] != hook)
        i++;
    for (i++; i < 3 && route[i] >= 0; i++)
        if (HOOK_TABLE_INDEX[route[i]][table] >= 0)
            return route[i];
    return -1;
}

/* netfilter.user_chain_hook: the hook of a step in a user chain of `table` (-1: not one of
 * netfilter's), the walk being in `hook`: `hook` where the table has a base chain, else the
 * next hook of a route where it has one; of several, the one the interfaces `known` fit
 * (bit 0: IN, bit 1: OUT; -1: a damaged line); `hook` when nothing tells. */
static int user_chain_hook(int hook, int table, int known) {
    if (table < 0 || HOOK_TABLE_INDEX[hook][table] >= 0)
        return hook;
    int next[N_ROUTES], n = 0;
    for (int r = 0; r < N_ROUTES; r++) {
        int later = route_next_hook(ROUTES[r], hook, table), seen = 0;
        for (int i = 0; i < n; i++)
            seen |= next[i] == later;
        if (later >= 0 && !seen)
            next[n++] = later;
    }
    if (n > 1 && known >= 0) {
        int kept = 0;
        for (int i = 0; i < n; i++)
            if (HOOK_INTERFACES[next[i]] >> known & 1)
                next[kept++] = next[i];
        n = kept;
    }
    return n == 1 ? next[0] : hook;
}

/* netfilter.re_enters: a walk going from `last_hook` back to PREROUTING (after OUTPUT or POSTROUTING). */
static int re_enters(int last_hook, int hook) { return hook == 0 && (last_hook == 3 || last_hook == 4); }

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

/* step_rank(hook, table, family): a bridge-family chain runs before the hook's IP tables. */
static int step_rank(int hook, int table, int bridge) {
    return bridge ? HOOK_RANK[hook] * 16 - 1 : slot_rank(hook, table);
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

/* netfilter.LOOPBACK (loops_back) */
static int is_loopback(Ref name) { return name.n == 2 && memcmp(name.s, "lo", 2) == 0; }

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

/* A MARK= value: 0x and hex digits (f->mark: the digits, leading zeros stripped); 0 when it is not. */
static int read_mark(const char *v, size_t vlen, Fields *f) {
    int ok = vlen > 2 && v[0] == '0' && v[1] == 'x';
    for (size_t j = 2; ok && j < vlen; j++)
        ok = is_hex_digit(v[j]);
    if (ok) {
        size_t j = 2;
        while (j < vlen && v[j] == '0')
            j++;
        f->mark = (Ref){v + j, (Py_ssize_t)(vlen - j)};
    }
    return ok;
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
        i = space_from(s, n, i);
        size_t len = (size_t)(s + i - t);
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
        const char *eq = NULL; /* memchr(t, '=', len), without a call for the short keys */
        for (size_t j = 0; j < len && j < 11 && !eq; j++)
            if (t[j] == '=')
                eq = t + j;
        if (!eq && len > 11)
            eq = memchr(t + 11, '=', len - 11);
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
        case K_MARK:
            damaged |= !read_mark(v, vlen, f);
            break;
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


/* ---------------------------------------------------------------- maps */

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
    e->prev = m->tail;
    if (m->tail)
        m->tail->next = e;
    else
        m->head = e;
    m->tail = e;
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
    e->prev = m->tail;
    if (m->tail)
        m->tail->next = e;
    else
        m->head = e;
    m->tail = e;
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

/* ---------------------------------------------------------------- words */

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

/* ---------------------------------------------------------------- xtables-monitor and nft monitor */

static const char *FAMILIES[] = {"ip", "inet", "ip6", "bridge", "arp", "netdev"};
#define N_FAMILIES 6
#define FAMILY_BRIDGE 3 /* FAMILIES index of "bridge" */

/* A PACKET / packet: line's fields, kept per trace id with its own copy of the interfaces. */
typedef struct {
    Fields f;
    char *text;           /* in_if and out_if point here */
    char *base_table, *base_chain; /* the base chain a `packet:` line opens (NULL: xtables-monitor) */
    size_t base_table_n, base_chain_n;
} NftPacket;

static void nft_packet_free(void *p) {
    NftPacket *np = p;
    free(np->text);
    free(np->base_table);
    free(np->base_chain);
    free(np);
}

static int proto_name(const char *v, size_t n, char *out) {
    if (n == 0 || n >= 8)
        return 0;
    for (size_t j = 0; j < n; j++)
        out[j] = (v[j] >= 'a' && v[j] <= 'z') ? (char)(v[j] - 32) : v[j];
    out[n] = 0;
    return find_in(PROTOCOL_NAMES, 11, out, n) >= 0 || (all_digits(out, n) && n <= 3);
}

/* parse_nft.xt_packet_fields */
/* v[at:] starts with `[A-Z]+=` (a word glued on after an IP id). */
static int glued_key_at(const char *v, size_t vlen, size_t at) {
    size_t k = at;
    while (k < vlen && v[k] >= 'A' && v[k] <= 'Z')
        k++;
    return k > at && k < vlen && v[k] == '=';
}

/* One `KEY=VALUE` word (or flag) of an xtables-monitor packet line into f. */
static void xt_word(const char *t, size_t len, Fields *f, int *flags, int *v6) {
    for (;;) {
        const char *eq = memchr(t, '=', len);
        if (!eq) {
            int flag = find_in(TCP_FLAG_NAMES, N_TCP_FLAGS, t, len);
            if (flag >= 0)
                *flags |= 1 << flag;
            return;
        }
        size_t klen = (size_t)(eq - t);
        const char *v = eq + 1;
        size_t vlen = len - klen - 1;
        if ((name_is(t, klen, "SRC") || name_is(t, klen, "DST")) && (is_ipv4(v, vlen) || is_ipv6(v, vlen))) {
            set_address(t[0] == 'S' ? f->src : f->dst, v, vlen);
            if (memchr(v, ':', vlen))
                *v6 = 1;
        } else if (name_is(t, klen, "IN")) {
            f->in_if = (Ref){v, vlen ? (Py_ssize_t)vlen : -1};
        } else if (name_is(t, klen, "OUT")) {
            f->out_if = (Ref){v, vlen ? (Py_ssize_t)vlen : -1};
        } else if (name_is(t, klen, "TTL") || name_is(t, klen, "HOPLIMIT")) {
            f->ttl = small_int(v, vlen, 255);
        } else if (name_is(t, klen, "FLOWLBL")) {
            f->flow_label = small_int(v, vlen, 0xFFFFF);
            *v6 = 1;
        } else if (name_is(t, klen, "ID")) {
            /* GLUED_ID: 1-10 digits, then DF, MF or CE or nothing, then a glued `KEY=...` or nothing */
            size_t d = 0;
            while (d < vlen && is_digit(v[d]))
                d++;
            int flag = vlen - d >= 2 && (memcmp(v + d, "DF", 2) == 0 || memcmp(v + d, "MF", 2) == 0 ||
                                         memcmp(v + d, "CE", 2) == 0);
            size_t g = flag && (d + 2 == vlen || glued_key_at(v, vlen, d + 2)) ? d + 2
                       : d == vlen || glued_key_at(v, vlen, d)              ? d
                                                                            : vlen + 1;
            int glued = d >= 1 && d <= 10 && g <= vlen;
            f->ip_id = glued ? small_int(v, d, 65535) : NONE;
            if (glued && g < vlen) { /* the glued-on word, read as one of its own */
                t = v + g, len = vlen - g;
                continue;
            }
        } else if (name_is(t, klen, "SPORT")) {
            f->sport = small_int(v, vlen, 65535);
        } else if (name_is(t, klen, "DPORT")) {
            f->dport = small_int(v, vlen, 65535);
        } else if (name_is(t, klen, "PROTO")) {
            if (!proto_name(v, vlen, f->proto))
                f->proto[0] = 0;
        }
        return;
    }
}

static int xt_packet_fields(const char *s, size_t n, Fields *f, Words *ws) {
    fields_init(f);
    if (split_words(s, n, ws, 0, NULL))
        return -1;
    int v6 = 0, flags = 0;
    for (size_t k = 0; k < ws->n; k++)
        xt_word(ws->w[k].s, ws->w[k].n, f, &flags, &v6);
    if ((f->sport != NONE || f->dport != NONE) && !f->proto[0])
        strcpy(f->proto, flags ? "TCP" : "UDP");
    f->flags = flags;
    f->damaged = (f->ip_id == NONE && !v6) || !f->src[0] || !f->dst[0];
    return 0;
}

static const char *FLAG_BITS_NAMES[] = {"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}; /* bit 0..7 */
static const char *FLAG_WORDS[] = {"fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"};

/* The TCP_FLAG_NAMES mask of a flag name. */
static int flag_bit(const char *name) { return 1 << find_in(TCP_FLAG_NAMES, N_TCP_FLAGS, name, strlen(name)); }

/* parse_nft._tcp_flags: after the first `flags`: `== syn | ack`, `syn`, or `0x14`. */
static int nft_tcp_flags(const Words *ws) {
    size_t start = 0;
    while (start < ws->n && !word_is(ws->w[start], "flags"))
        start++;
    start++;
    if (start < ws->n && word_is(ws->w[start], "=="))
        start++;
    int flags = 0;
    if (start < ws->n) {
        Word w = ws->w[start];
        int hex = w.n >= 3 && w.n <= 10 && w.s[0] == '0' && w.s[1] == 'x';
        unsigned long bits = 0;
        for (size_t j = 2; hex && j < w.n; j++) {
            char c = w.s[j];
            hex = is_hex_digit(c);
            bits = bits * 16 + (unsigned long)(is_digit(c) ? c - '0' : (c | 32) - 'a' + 10);
        }
        if (hex) {
            for (int b = 0; b < 8; b++)
                if (bits & (1ul << b))
                    flags |= flag_bit(FLAG_BITS_NAMES[b]);
            return flags;
        }
    }
    for (size_t k = start; k < ws->n; k++) {
        int b = find_in(FLAG_WORDS, 8, ws->w[k].s, ws->w[k].n);
        if (b >= 0)
            flags |= flag_bit(FLAG_BITS_NAMES[b]);
        else if (!word_is(ws->w[k], "|"))
            break;
    }
    return flags;
}

static int icmp_kind(Word kind, int v6) {
    if (word_is(kind, "echo-request"))
        return v6 ? 128 : 8;
    if (word_is(kind, "echo-reply"))
        return v6 ? 129 : 0;
    return (int)word_int(kind, 255);
}

/* parse_nft.nft_packet_fields */
static int nft_packet_fields(const char *s, size_t n, Fields *f, Words *ws, Buf *scratch) {
    fields_init(f);
    if (split_words(s, n, ws, 1, scratch))
        return -1;
    int v6 = pair_get(ws, "ip6", "saddr").s || pair_get(ws, "ip6", "daddr").s;
    const char *family = v6 ? "ip6" : "ip";
    Word saddr = pair_get(ws, family, "saddr"), daddr = pair_get(ws, family, "daddr");
    if (saddr.s && (v6 ? is_ipv6(saddr.s, saddr.n) : is_ipv4(saddr.s, saddr.n)))
        set_address(f->src, saddr.s, saddr.n);
    if (daddr.s && (v6 ? is_ipv6(daddr.s, daddr.n) : is_ipv4(daddr.s, daddr.n)))
        set_address(f->dst, daddr.s, daddr.n);
    if (v6) {
        f->ttl = word_int(pair_get(ws, "ip6", "hoplimit"), 255);
        f->flow_label = word_int(pair_get(ws, "ip6", "flowlabel"), 0xFFFFF);
    } else {
        f->ip_id = word_int(pair_get(ws, "ip", "id"), 65535);
        f->ttl = word_int(pair_get(ws, "ip", "ttl"), 255);
    }
    Word iif = following_get(ws, "iif"), oif = following_get(ws, "oif");
    if (iif.s)
        f->in_if = (Ref){iif.s, (Py_ssize_t)iif.n};
    if (oif.s)
        f->out_if = (Ref){oif.s, (Py_ssize_t)oif.n};
    static const char *ICMPS[] = {"icmp", "icmpv6"};
    for (int k = 0; k < 2; k++) {
        Word kind = pair_get(ws, ICMPS[k], "type");
        if (kind.s) {
            strcpy(f->proto, k ? "ICMPV6" : "ICMP");
            long long type = icmp_kind(kind, k);
            f->icmp_type = type < 0 ? NONE : type;
            f->icmp_id = word_int(pair_get(ws, ICMPS[k], "id"), 65535);
            f->icmp_seq = word_int(pair_get(ws, ICMPS[k], "sequence"), 65535);
        }
    }
    static const char *L4[] = {"tcp", "udp"};
    for (int k = 0; k < 2; k++) {
        Word sport = pair_get(ws, L4[k], "sport"), dport = pair_get(ws, L4[k], "dport");
        if (sport.s || dport.s) { /* either port: a post may elide the other */
            strcpy(f->proto, k ? "UDP" : "TCP");
            f->sport = word_int(sport, 65535);
            f->dport = word_int(dport, 65535);
        }
    }
    if (strcmp(f->proto, "TCP") == 0) {
        f->tcp_seq = word_int(pair_get(ws, "tcp", "sequence"), 0xFFFFFFFFLL);
        for (size_t k = 0; k < ws->n; k++)
            if (word_is(ws->w[k], "flags")) {
                f->flags = nft_tcp_flags(ws);
                break;
            }
    }
    f->damaged = (f->ip_id == NONE && !v6) || !f->src[0] || !f->dst[0];
    return 0;
}

/* One xtables-monitor / nft monitor line: a step, or (kind -1) a packet description. */
typedef struct {
    Ref trace_id;
    int kind; /* -1: PACKET / packet: line; else 0 rule 1 return 2 policy */
    Ref table, chain;
    Ref handle;  /* xtables-monitor `0x3`, nft `unknown rule handle 13`; n -1: None */
    Ref verdict; /* as written (nft: lowercase, upper() on use); n -1: None */
    Ref target;  /* xtables-monitor `JUMP:target` */
    Ref rule;    /* n -1: None (an empty rule text is "") */
    int family;  /* -1: none (xtables-monitor) */
    Ref packet;  /* the fields' text of a packet line */
} NftLine;

static size_t skip_space(const char *s, size_t n, size_t i) {
    while (i < n && is_space(s[i]))
        i++;
    return i;
}

static int only_space_from(const char *s, size_t n, size_t i) { return skip_space(s, n, i) == n; }

/* parse_nft.QUOTED: past spaces and the `>` marks of a quote. */
static size_t skip_quote(const char *s, size_t n) {
    size_t i = skip_space(s, n, 0);
    while (i < n && s[i] == '>')
        i = skip_space(s, n, i + 1);
    return i;
}

static int lit(const char *s, size_t n, size_t i, const char *text) {
    size_t m = strlen(text);
    return i + m <= n && memcmp(s + i, text, m) == 0;
}

/* `\d+` at i: its end, or i when none. */
static size_t digits_end(const char *s, size_t n, size_t i) {
    while (i < n && is_digit(s[i]))
        i++;
    return i;
}

static size_t lower_hex_end(const char *s, size_t n, size_t i) {
    while (i < n && (is_digit(s[i]) || (s[i] >= 'a' && s[i] <= 'f')))
        i++;
    return i;
}

static size_t nonspace_end(const char *s, size_t n, size_t i) {
    while (i < n && !is_space(s[i]))
        i++;
    return i;
}

/* What XT_TRACE matches after `kind:`, from i: `(?:(0x[0-9a-f]+):)?([A-Z]*)(?::(\S+))?(?:\s+(.*?))?\s*$`. */
static int xt_rest(const char *s, size_t n, size_t i, NftLine *out) {
    out->handle.n = out->target.n = out->rule.n = -1;
    if (lit(s, n, i, "0x")) {
        size_t h = lower_hex_end(s, n, i + 2);
        if (h > i + 2 && h < n && s[h] == ':') {
            out->handle = (Ref){s + i, (Py_ssize_t)(h - i)};
            i = h + 1;
        }
    }
    size_t v = i;
    while (i < n && s[i] >= 'A' && s[i] <= 'Z')
        i++;
    out->verdict = (Ref){s + v, (Py_ssize_t)(i - v)};
    if (i < n && s[i] == ':') {
        size_t t = nonspace_end(s, n, i + 1);
        if (t == i + 1)
            return 0;
        out->target = (Ref){s + i + 1, (Py_ssize_t)(t - i - 1)};
        i = t;
    }
    if (i == n)
        return 1;
    if (!is_space(s[i]))
        return 0;
    size_t r = skip_space(s, n, i), end = n;
    while (end > r && is_space(s[end - 1]))
        end--;
    out->rule = (Ref){s + r, (Py_ssize_t)(end - r)};
    return 1;
}

/* parse_xtables_monitor: XT_PACKET or XT_TRACE; 0: neither. */
static int parse_xt(const char *s, size_t n, NftLine *out) {
    size_t i = skip_quote(s, n);
    memset(out, 0, sizeof *out);
    out->family = -1;
    out->handle.n = out->verdict.n = out->target.n = out->rule.n = out->packet.n = -1;
    int packet = lit(s, n, i, "PACKET: ");
    if (!packet && !lit(s, n, i, "TRACE: "))
        return 0;
    i += packet ? 8 : 7;
    size_t d = digits_end(s, n, i);
    if (d == i || d >= n || s[d] != ' ')
        return 0;
    size_t t0 = d + 1, t1 = lower_hex_end(s, n, t0);
    if (t1 == t0 || t1 >= n || s[t1] != ' ')
        return 0;
    out->trace_id = (Ref){s + t0, (Py_ssize_t)(t1 - t0)};
    i = t1 + 1;
    if (packet) {
        out->kind = -1;
        out->packet = (Ref){s + i, (Py_ssize_t)(n - i)};
        return 1;
    }
    /* ([A-Za-z_][\w-]*):(\S+?):(rule|return|policy):REST */
    if (i >= n || !ident_start(s[i]))
        return 0;
    size_t tb = i;
    while (i < n && (ident_char(s[i]) || s[i] == '-'))
        i++;
    if (i >= n || s[i] != ':')
        return 0;
    out->table = (Ref){s + tb, (Py_ssize_t)(i - tb)};
    size_t c0 = ++i;
    for (size_t k = c0 + 1; k <= n && !is_space(s[k - 1]); k++) {
        if (k >= n || s[k] != ':')
            continue;
        for (int j = 0; j < 3; j++) {
            size_t q = k + 1, kl = KIND_LEN[j];
            if (q + kl < n && memcmp(s + q, KINDS[j], kl) == 0 && s[q + kl] == ':' && xt_rest(s, n, q + kl + 1, out)) {
                out->chain = (Ref){s + c0, (Py_ssize_t)(k - c0)};
                out->kind = j;
                return 1;
            }
        }
    }
    return 0;
}

/* `(verdict X)` with only whitespace after it, at s[i:]: its end and X; 0 if not. */
static int verdict_tail(const char *s, size_t n, size_t i, Ref *verdict) {
    if (!lit(s, n, i, " (verdict "))
        return 0;
    size_t v = i + 10, close = v;
    while (close < n && s[close] != ')')
        close++;
    if (close >= n || !only_space_from(s, n, close + 1))
        return 0;
    *verdict = (Ref){s + v, (Py_ssize_t)(close - v)};
    return 1;
}

/* parse_nft_monitor: NFT_LINE; 0 if it does not match, 2 for a `conntrack:` line. */
static int parse_nft(const char *s, size_t n, NftLine *out) {
    size_t i = skip_quote(s, n);
    memset(out, 0, sizeof *out);
    out->handle.n = out->verdict.n = out->target.n = out->rule.n = out->packet.n = -1;
    if (!lit(s, n, i, "trace id "))
        return 0;
    i += 9;
    size_t t1 = lower_hex_end(s, n, i);
    if (t1 == i || t1 >= n || s[t1] != ' ')
        return 0;
    out->trace_id = (Ref){s + i, (Py_ssize_t)(t1 - i)};
    i = t1 + 1;
    out->family = -1;
    for (int k = 0; k < N_FAMILIES; k++) {
        size_t m = strlen(FAMILIES[k]);
        if (lit(s, n, i, FAMILIES[k]) && i + m < n && s[i + m] == ' ') {
            out->family = k;
            i += m + 1;
            break;
        }
    }
    if (out->family < 0)
        return 0;
    Ref *names[] = {&out->table, &out->chain};
    for (int k = 0; k < 2; k++) {
        size_t e = nonspace_end(s, n, i);
        if (e == i || e >= n || s[e] != ' ')
            return 0;
        *names[k] = (Ref){s + i, (Py_ssize_t)(e - i)};
        i = e + 1;
    }
    if (lit(s, n, i, "conntrack: "))
        return 2;
    if (lit(s, n, i, "packet: ")) {
        out->kind = -1;
        out->packet = (Ref){s + i + 8, (Py_ssize_t)(n - i - 8)};
        return 1;
    }
    if (lit(s, n, i, "rule ")) {
        size_t r = i + 5;
        for (size_t j = r; j < n; j++) {
            if (s[j] == ' ' && verdict_tail(s, n, j, &out->verdict)) {
                out->kind = 0;
                out->rule = (Ref){s + r, (Py_ssize_t)(j - r)};
                return 1;
            }
        }
    }
    if (lit(s, n, i, "unknown rule handle ")) {
        size_t h = i + 20, e = digits_end(s, n, h);
        if (e > h && e - h <= 10 && verdict_tail(s, n, e, &out->verdict)) {
            out->kind = 0;
            out->handle = (Ref){s + h, (Py_ssize_t)(e - h)};
            return 1;
        }
    }
    int policy = lit(s, n, i, "policy ");
    if (policy || lit(s, n, i, "verdict ")) {
        size_t v = i + (policy ? 7 : 8), e = nonspace_end(s, n, v), m = e;
        if (lit(s, n, e, " meta mark 0x")) { /* the packet's mark, once set (nft's trace_print_expr) */
            size_t h = e + 13;
            for (m = h; m < n && m - h < 8 && is_hex_digit(s[m]); m++)
                ;
            if (m == h)
                m = e;
        }
        if (e > v && only_space_from(s, n, m)) {
            out->kind = policy ? 2 : 1;
            out->verdict = (Ref){s + v, (Py_ssize_t)(e - v)};
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- records and packets */

enum { ID_IP, ID_TRACE, ID_FLOW };
static const char *IDENTITY_NAMES[] = {"ip_id", "trace_id", "flow"};
enum { FMT_KERNEL, FMT_XT, FMT_NFT };
enum { DIR_REQUEST, DIR_REPLY, DIR_ERROR };
static const char *DIRECTION_NAMES[] = {"request", "reply", "error"};
enum { MODE_JSON, MODE_TEXT, MODE_SUMMARY, MODE_DIAGRAM };

/* One trace event, as Assembler.feed sees it (model.Event + Step). */
typedef struct {
    int node;
    const char *table, *chain;
    size_t table_n, chain_n;
    int kind;
    const char *pos; /* digits without leading zeros ("" = 0); NULL: no position */
    size_t pos_n;
    Ref handle, verdict, rule; /* n -1: None */
    int family;                /* -1: None */
    const Fields *f;
    Ref trace_id; /* n -1: None */
    int base;     /* -1: no packet: line opened the chain, else bit 0 iif, bit 1 oif */
    Ref time;
    int names_known; /* table_index and chain_hook are set (kernel lines: from the header cache) */
    int table_index, chain_hook; /* TABLES and HOOKS index of table and chain, -1: other */
    int repeat; /* its fields are those of the record fed just before (same text) */
    uint64_t header_id; /* the parser thread's id of its header text (0: none; see step_head) */
    const char *json_tail; /* what its step JSON ends with after "line" (NULL: made in append_step) */
    size_t json_tail_n;
    int in_batch; /* f and its texts stay put until the parsed batch is assembled (see keep_last) */
} Rec;

/* A step's JSON in Packet.steps: at `at` its prefix, then `null`, then its suffix; the rule
 * (from the walk) goes where `null` is. Steps follow each other with ", " between them, so
 * that when every rule is null (a kernel log without --rules) Packet.steps is the steps'
 * list as it is written. */
typedef struct {
    size_t at, prefix_n, suffix_n;
    int in_tables;
    int table, family, kind; /* the step's (TABLES, FAMILIES, KINDS index; -1: other, None) */
    size_t sig_hook;         /* where its hook's byte is in Packet.sig */
    uint64_t piece_hash;     /* of its part of Packet.sig before the hook's byte (see walk_hash) */
} StepAt;

#define NULL_RULE_N 4 /* strlen("null") */

typedef struct Packet Packet;
struct Packet {
    int node, identity;
    long long seq, repaired, last_seen;
    Fields f;             /* opening line's fields, merged; its Refs are not used */
    char *in_if, *out_if; /* merged interfaces of a flow packet (NULL: None) */
    size_t in_if_n, out_if_n;
    int has_first, has_last;
    char first_src[ADDR_MAX], first_dst[ADDR_MAX], last_src[ADDR_MAX], last_dst[ADDR_MAX];
    long long first_ttl, first_sport, first_dport, last_ttl, last_sport, last_dport;
    int first_damaged, last_damaged; /* those lines' ports are not read (flows.endpoints) */
    int last_hook, last_table; /* last step's; last_hook -1: None; -2: no step yet */
    int last_bridge;           /* the last step is of an nft bridge table */
    int out_lo;                /* the last line that showed OUT= showed lo (Packet.left_on) */
    int looped;                /* it went out on lo and came back in (Packet.looped) */
    int at_end;
    char *entered; /* the base chain seen entered after the last step (NULL: None) */
    size_t entered_n;
    Buf sig;   /* the walk: what judging it depends on, step by step */
    Buf steps; /* the steps' JSON (when wanted), see StepAt */
    StepAt *at;
    size_t n_steps, cap_steps;
    int some_out_of_tables; /* a step of a table the analysis does not show */
    int json; /* every step's JSON is in `steps` */
    char **trace_ids;
    size_t *trace_id_n, n_trace_ids, cap_trace_ids;
    char *time0; /* the first step's time (NULL: None) */
    size_t time0_n;
    Packet *prev, *next;       /* open packets, least recently touched first */
    Packet *id_prev, *id_next; /* same (node, ip id) bucket, in opening order */
    size_t bucket;
    int indexed;
};

#define BUCKETS 4096
/* assemble.EXPIRE_EVERY */
#define EXPIRE_EVERY 64
/* reader.PENDING_TRACE_IDS */
#define PENDING_TRACE_IDS 4096
/* distinct walks judged and kept (exported as WALK_CACHE) */
#define WALK_CACHE 8192
/* distinct steps whose Step objects steps_of keeps (exported as STEP_CACHE) */
#define STEP_CACHE 65536
/* analyze.Directions memory, flows.MEMORY and MAX_HOPS, summary.MAX_ROWS, diagram.MAX_WALKS */
#define DIRECTIONS_MEMORY 16384
#define FLOWS_MEMORY 20000
#define MAX_HOPS 32
#define SUMMARY_ROWS 10000
#define DIAGRAM_WALKS 500
#define ADDRESS_CACHE 4096
/* packets the text format shows in full (render.text.PACKET_LIMIT) */
#define TEXT_PACKETS 50
/* finished packets kept for reuse (see packet_release) */
#define SPARE_PACKETS 256
/* host names the parser thread gives ids (a log of more hosts: the others are looked up by name) */
#define PARSER_HOSTS 4096

typedef struct {
    PyObject *result; /* the Python walk tuple (see native.py) */
    const char *hooks_json, *verdict_json, *newconn_json;
    Py_ssize_t hooks_json_n, verdict_json_n, newconn_json_n;
    PyObject *step_rules; /* tuple of bytes: each step's "rule" JSON */
    int rules_null;       /* every one of them is null */
    const char *proto;    /* protocol from the rules, or NULL */
    int verdict, origin, walk_ok;
    long summary, diagram;
} Walk;

typedef struct {
    long long seq;
    int direction, node;
    PyObject *walk; /* result tuple */
    long long ttl, sport, dport, exit_sport, exit_dport;
    char src[ADDR_MAX], dst[ADDR_MAX], exit_src[ADDR_MAX], exit_dst[ADDR_MAX];
} Hop;

typedef struct {
    Hop *hops;
    size_t n, cap;
} Hops;

typedef struct {
    long long count, first_seq, last_seq;
    char *first_time, *last_time, *example; /* first_time/last_time NULL: None */
    size_t first_time_n, last_time_n, example_n;
} Row;

typedef struct {
    long long min_seq, count;
    PyObject *walk;
} DiagramRow;

/* What kernel lines parse to, cached (see cached_fields and cached_header); each thread has its own. */
typedef struct {
    struct HeaderSlot *headers; /* HEADER_CACHE slots (NULL until the first kernel line) */
    struct FieldSlot *fields;   /* FIELD_CACHE slots and the last text's, likewise */
    uint64_t filled;            /* header slots filled so far: the next one's id */
} Caches;

typedef struct {
    PyObject_HEAD int window;
    PyObject *calls; /* node_added, slot_added, judge, address_ok */
    int mode, expect, match, match_src, match_dst;
    char **tables; /* --tables (NULL: all) */
    size_t *table_lens, n_tables;
    int all_tables;
    char **protocols; /* --match proto= */
    size_t *protocol_lens, n_protocols;
    long long *ports, *ip_ids;
    size_t n_ports, n_ip_ids;
    Map declared; /* node \0 family \0 table \0 chain -> hook + 1 (0: a regular chain) */
    long long count, seq, unattributed, open_flows;
    long long lines, ignored, skipped, records, cut_lines, matched, repaired;
    long long identities[3];
    Packet *head, *tail; /* open packets */
    Packet *spare;       /* finished packets to reuse, linked by `next` */
    int n_spare;
    Packet *bucket_head[BUCKETS], *bucket_tail[BUCKETS];
    Map by_trace; /* node + trace id -> packet */
    /* the assembler's `_last`: node, trace id, a copy of the fields, the packet (NULL: not open) */
    int has_last, last_node;
    Fields last_fields;
    const Fields *last_f; /* &last_fields, or a batch's fields until the batch is assembled */
    Buf last_text, last_tid;
    int last_has_tid;
    Packet *last_packet;
    /* nodes, by number */
    char **node_names;
    size_t *node_lens;
    int *table_masks;
    long long *began, *slot_version;
    PyObject **node_json;
    int *node_ok, *event_order; /* event_order: rank of the node's first event (-1: none yet) */
    int n_with_events;
    int n_nodes, cap_nodes;
    Map nodes;     /* name -> number + 1 */
    Map slots;     /* node + hook + table of nft base chains seen */
    Packet **done; /* finished by the assembler, not yet judged */
    size_t n_done, cap_done;
    int failed;  /* out of memory */
    PyObject *error; /* an exception from a Python call, to raise when feed() returns */
    int line_node, from_lines, format, in_file;
    /* the line being read across chunks (at most LINE_LIMIT bytes) */
    Buf carry;
    int carrying, carry_cut;
    Buf text; /* a line made valid UTF-8 */
    /* the last line's prefix (what precedes its first header): its node and time */
    Buf prefix_text;
    int has_prefix, prefix_node;
    Ref prefix_time;
    Header *headers;
    size_t cap_headers;
    Caches caches; /* the kernel lines read here (those the parser thread leaves) */
    struct StepHead *heads; /* STEP_HEADS slots (NULL until needed), see step_head */
    int placed_last; /* the last record fed was placed in a packet */
    struct Parser *parser; /* kernel logs: parses the next chunks while one is assembled (NULL: none) */
    char *read_buf;        /* feed_from without the parser: read_size bytes */
    size_t read_size;
    int carry_ahead;       /* the chunks handed to the parser so far end inside a line */
    int host_nodes[PARSER_HOSTS]; /* node of each Parser.hosts id, -1: not looked up yet */
    long long line_no;
    LineText line_text; /* for line_no (see line_text) */
    Buf step_text;      /* a step's JSON head and end, when no cache has them (see append_step) */
    /* nft / xtables-monitor: per trace id, the last packet line's fields and the pending base chain */
    Map nft_packets, pending;
    Words words;
    Buf scratch, scratch2, verdict;
    /* finishing */
    Map walks;      /* walk key -> Walk */
    Map step_objects; /* a step's part of a walk signature -> its Step (Calls.step), for Calls.judge */
    Buf key;        /* a walk key being built */
    Map directions; /* node + proto + endpoints -> which came first */
    Map flows;      /* proto + ip id + icmp seq -> Hops, by last use */
    Map rows;       /* summary: node + direction + summary id -> Row */
    long long other;
    Map diagram;    /* node + direction + diagram id -> DiagramRow */
    Map addresses;  /* which + address -> ok */
    Buf out;        /* JSON written, not yet handed over */
    /* write_to(): a packet's steps list goes out from the packet's own buffer (writev), not
     * copied into `out` first (the copy was ~5 % of the assembling thread): pieces[i]'s
     * buffer goes out after out[:pieces[i].at]. Their buffers then serve packets again. */
    struct OutPiece { size_t at; Buf steps; } *pieces;
    size_t n_pieces, cap_pieces;
    Buf *free_steps; /* buffers written out, for packets without one (at most SPARE_PACKETS) */
    size_t n_free_steps;
    int written;    /* packets written to `out` so far */
    int out_fd;     /* write_to(): `out` goes to this descriptor, not back to Python (0: none, else fd + 1) */
    int write_errno; /* a write to out_fd failed (then every later call raises WriteError) */
    PyObject *items; /* list of text packets and expect packets, not yet handed over */
    long long kept;  /* text packets handed over */
} Engine;

static size_t bucket_of(int node, long long ip_id) { return ((size_t)node * 7919u + (size_t)ip_id) % BUCKETS; }

/* What a packet owns besides the buffers a spare one keeps (see packet_release). */
static void packet_free_parts(Packet *p) {
    free(p->in_if);
    free(p->out_if);
    free(p->entered);
    free(p->time0);
    for (size_t i = 0; i < p->n_trace_ids; i++)
        free(p->trace_ids[i]);
    free(p->trace_ids);
    free(p->trace_id_n);
}

static void packet_free(Packet *p) {
    packet_free_parts(p);
    free(p->steps.p);
    free(p->sig.p);
    free(p->at);
    free(p);
}

/* A finished packet becomes a spare, up to SPARE_PACKETS of them: the next packet opened
 * takes it with its step buffers (a packet's signature and JSON grow to kilobytes; taking
 * them from malloc and giving them back, packet after packet, cost more than assembling). */
static void packet_release(Engine *e, Packet *p) {
    if (e->n_spare >= SPARE_PACKETS) {
        packet_free(p);
        return;
    }
    packet_free_parts(p);
    Buf sig = p->sig, steps = p->steps;
    StepAt *at = p->at;
    size_t cap_steps = p->cap_steps;
    memset(p, 0, sizeof *p); /* as calloc gives it, but for the buffers, emptied */
    p->sig = (Buf){sig.p, 0, sig.cap};
    p->steps = (Buf){steps.p, 0, steps.cap};
    p->at = at;
    p->cap_steps = cap_steps;
    p->next = e->spare;
    e->spare = p;
    e->n_spare++;
}

/* A zeroed packet, but for its buffers: a spare one or a new one; NULL: no memory. */
static Packet *packet_new(Engine *e) {
    Packet *p = e->spare;
    if (p) {
        e->spare = p->next;
        e->n_spare--;
        p->next = NULL;
    } else if (!(p = calloc(1, sizeof(Packet)))) {
        return NULL;
    }
    if (!p->steps.p && e->n_free_steps) { /* its own went out in place (see Engine.pieces) */
        p->steps = e->free_steps[--e->n_free_steps];
        p->steps.n = 0;
    }
    return p;
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

static int trace_key(Buf *b, int node, const char *tid, size_t n) {
    b->n = 0;
    return put(b, (const char *)&node, sizeof node) || put(b, tid, n);
}

/* Assembler._forget + the hand-over: the packet leaves the open structures. */
static void finish(Engine *e, Packet *p) {
    lru_unlink(e, p);
    if (p->identity == ID_FLOW)
        e->open_flows--;
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
    for (size_t i = 0; i < p->n_trace_ids; i++) {
        if (trace_key(&e->scratch2, p->node, p->trace_ids[i], p->trace_id_n[i])) {
            e->failed = 1;
            continue;
        }
        Entry *t = map_get(&e->by_trace, e->scratch2.p, e->scratch2.n);
        if (t && t->value == p)
            map_remove(&e->by_trace, t);
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

/* hooks.hook_by_name: `HOOK`, `hook`, `prefix_HOOK`, `prefix_hook` (prefix alphanumeric),
 * `prefix-hook` (prefix lowercase alphanumeric); -1 if none. */
static int hook_by_name(const char *s, size_t n) {
    static const char *LOWER[] = {"prerouting", "input", "forward", "output", "postrouting"};
    int hook = find_in(HOOKS, N_HOOKS, s, n);
    if (hook < 0)
        hook = find_in(LOWER, N_HOOKS, s, n);
    if (hook >= 0)
        return hook;
    size_t u = 0;
    while (u < n && s[u] != '_' && s[u] != '-')
        u++;
    if (u == 0 || u >= n)
        return -1;
    for (size_t i = 0; i < u; i++) {
        char c = s[i];
        int lower_alnum = (c >= 'a' && c <= 'z') || is_digit(c);
        if (!(lower_alnum || (s[u] == '_' && c >= 'A' && c <= 'Z')))
            return -1;
    }
    const char *rest = s + u + 1;
    size_t rest_n = n - u - 1;
    hook = find_in(LOWER, N_HOOKS, rest, rest_n);
    if (hook < 0 && s[u] == '_')
        hook = find_in(HOOKS, N_HOOKS, rest, rest_n);
    return hook;
}

/* hooks.inferred_hook */
static int inferred_hook(int base, int current) {
    static const int CANDIDATES[4][2] = {{-1, -1}, {0, 1}, {3, 4}, {2, 4}}; /* by base: iif=1, oif=2 */
    if (base <= 0)
        return -1;
    const int *c = CANDIDATES[base];
    if (current < 0)
        return c[0];
    for (int i = 0; i < 2 && c[i] >= 0; i++)
        if (HOOKS_AFTER[current] >> c[i] & 1 || re_enters(current, c[i]))
            return c[i];
    return c[1] >= 0 ? c[1] : c[0];
}

/* hooks.resolver: the hook of the record's chain if it is a base chain, else -1. */
static int resolve_hook(Engine *e, const Rec *r, int current) {
    if (r->family < 0)
        return find_name(HOOKS, N_HOOKS, r->chain, r->chain_n);
    if (e->declared.count) {
        Buf *k = &e->scratch2;
        const char *family = FAMILIES[r->family];
        k->n = 0;
        if (put(k, e->node_names[r->node], e->node_lens[r->node]) || put(k, "", 1) ||
            put(k, family, strlen(family)) || put(k, "", 1) || put(k, r->table, r->table_n) || put(k, "", 1) ||
            put(k, r->chain, r->chain_n)) {
            e->failed = 1;
        } else {
            Entry *d = map_get(&e->declared, k->p, k->n);
            if (d)
                return (int)d->number - 1;
        }
    }
    int named = hook_by_name(r->chain, r->chain_n);
    if (named >= 0)
        return named;
    return r->base >= 0 ? inferred_hook(r->base, current) : -1;
}

/* The packet has the trace id `tid` (n >= 0) already. */
static int has_trace_id(const Packet *p, Ref tid) {
    for (size_t i = 0; tid.n >= 0 && i < p->n_trace_ids; i++)
        if (p->trace_id_n[i] == (size_t)tid.n && memcmp(p->trace_ids[i], tid.s, (size_t)tid.n) == 0)
            return 1;
    return 0;
}

/* Assembler._next_hook: may the record come next in `p`'s walk, and in which hook (-1: None). */
static int next_hook(Engine *e, const Packet *p, const Rec *r, int table, int *hook) {
    int current = p->last_hook >= 0 ? p->last_hook : -1;
    int base = r->family >= 0 || r->base >= 0 ? resolve_hook(e, r, current)
               : r->names_known                ? r->chain_hook
                                               : find_name(HOOKS, N_HOOKS, r->chain, r->chain_n);
    int known = (r->f->in_if.n > 0) | (r->f->out_if.n > 0) << 1;
    if (base < 0 && r->family < 0 && r->base < 0 && p->last_hook < 0) /* a walk that starts in a user chain */
        base = r->f->damaged ? -1 : hook_by_interfaces(table, known);
    if (p->last_hook < 0) { /* no step yet, or the last one in no hook */
        *hook = base;
        return 1;
    }
    *hook = base >= 0       ? base
            : r->family < 0 ? user_chain_hook(p->last_hook, table, r->f->damaged ? -1 : known)
                            : p->last_hook; /* _hook_of_regular_chain */
    if (re_enters(p->last_hook, *hook))
        return !p->looped && p->out_lo && is_loopback(r->f->in_if);
    if (*hook >= 0 && !(HOOKS_AFTER[p->last_hook] >> *hook & 1)) /* netfilter.can_follow */
        return 0;
    if (*hook == p->last_hook && r->family >= 0 && r->family != FAMILY_BRIDGE && !p->last_bridge &&
        (table < 0 || HOOK_TABLE_INDEX[*hook][table] < 0 || p->last_table < 0 ||
         HOOK_TABLE_INDEX[*hook][p->last_table] < 0) &&
        has_trace_id(p, r->trace_id)) /* a table with no place among the hook's: any order (_next_hook) */
        return 1;
    return step_rank(*hook, table, r->family == FAMILY_BRIDGE) >= step_rank(p->last_hook, p->last_table, p->last_bridge);
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
    if (f->out_if.n >= 0) /* an nft `oif ""` is known, as "" */
        packet->out_lo = is_loopback(f->out_if);
    if (packet->f.ip_id == NONE) /* only a packet without IP id compares interfaces */
        return copy_text(&packet->in_if, &packet->in_if_n, f->in_if) ||
               copy_text(&packet->out_if, &packet->out_if_n, f->out_if);
    return 0;
}

static int put_mark(Buf *b, Ref mark) {
    if (mark.n == 0)
        return PUTL(b, "\"0x0\"");
    if (buf_grow(b, (size_t)mark.n + 4))
        return -1;
    char *o = b->p + b->n;
    memcpy(o, "\"0x", 3);
    for (Py_ssize_t i = 0; i < mark.n; i++) {
        char c = mark.s[i];
        o[3 + i] = (c >= 'A' && c <= 'F') ? (char)(c + 32) : c;
    }
    o[3 + mark.n] = '"';
    b->n += (size_t)mark.n + 4;
    return 0;
}

/* A signature field: 4-byte length (0xffffffff: None), then the bytes. */
static int sig_str(Buf *g, const char *s, Py_ssize_t n) {
    uint32_t len = n < 0 ? 0xffffffffu : (uint32_t)n;
    return put(g, (const char *)&len, 4) || (n > 0 && put(g, s, (size_t)n));
}

static int sig_byte(Buf *g, int v) {
    char c = (char)(unsigned char)v;
    return put(g, &c, 1);
}

/* ascii.upper_keyword: the first word upper case, the rest as it is (`jump ACCEPT-fw`). */
static const char *upper_keyword(Buf *b, Ref r, Ref *out) {
    b->n = 0;
    if (r.n < 0) {
        *out = r;
        return "";
    }
    if (buf_grow(b, (size_t)r.n + 1))
        return NULL;
    int word = 1;
    for (Py_ssize_t i = 0; i < r.n; i++) {
        word &= !is_space(r.s[i]);
        b->p[i] = word && r.s[i] >= 'a' && r.s[i] <= 'z' ? (char)(r.s[i] - 32) : r.s[i];
    }
    b->n = (size_t)r.n;
    *out = (Ref){b->p, r.n};
    return b->p;
}

static int table_in_tables(Engine *e, const char *t, size_t n) {
    if (e->all_tables)
        return 1;
    for (size_t i = 0; i < e->n_tables; i++)
        if (e->table_lens[i] == n && memcmp(e->tables[i], t, n) == 0)
            return 1;
    return 0;
}

/* What a step's JSON and signature start with, by header (table, chain, kind, position), for
 * the headers in the parser thread's header cache (one slot each: see step_head): the
 * header's text is then not read again here. */
#define STEP_HEADS 4096
#define STEP_HEAD_MAX 192
#define NONES_N 12 /* three None fields of a walk signature (see sig_str) */
struct StepHead {
    uint64_t id, sig_hash; /* sig_hash: hash_bytes(sig) */
    int in_tables;
    size_t json_n, sig_n;
    char json[STEP_HEAD_MAX]; /* `{"table": ..., "rule": ` */
    char sig[STEP_HEAD_MAX + NONES_N]; /* table, chain, kind, position; then handle, verdict
                                          * and rule as None (a kernel step's, see append_step) */
};

static int put_step_json_head(Buf *b, const Rec *r) {
    int err = PUTL(b, "{\"table\": ") || put_jstr(b, r->table, r->table_n) || PUTL(b, ", \"chain\": ") ||
              put_jstr(b, r->chain, r->chain_n) || PUTL(b, ", \"kind\": \"") || put(b, KINDS[r->kind], KIND_LEN[r->kind]) ||
              PUTL(b, "\", \"position\": ");
    if (r->pos)
        err = err || (r->pos_n ? put(b, r->pos, r->pos_n) : PUTL(b, "0"));
    else
        err = err || PUTL(b, "null");
    return err || PUTL(b, ", \"rule\": ");
}

static int put_step_sig_head(Buf *g, const Rec *r) {
    return sig_str(g, r->table, (Py_ssize_t)r->table_n) || sig_str(g, r->chain, (Py_ssize_t)r->chain_n) ||
           sig_byte(g, r->kind) ||
           (r->pos ? sig_str(g, r->pos_n ? r->pos : "0", r->pos_n ? (Py_ssize_t)r->pos_n : 1) : sig_str(g, NULL, -1));
}

/* The record's StepHead (made now if not cached), or NULL: none (no id, too long, no memory).
 * Its slot is its header's slot in the parser's cache (the id's low bits): a head stays as
 * long as its header does, however long ago that was filled. */
static const struct StepHead *step_head(Engine *e, const Rec *r) {
    if (!r->header_id || (!e->heads && !(e->heads = calloc(STEP_HEADS, sizeof *e->heads))))
        return NULL;
    struct StepHead *h = &e->heads[r->header_id & (STEP_HEADS - 1)];
    if (h->id == r->header_id)
        return h;
    Buf b = {0}, g = {0};
    h->id = 0;
    if (!put_step_json_head(&b, r) && !put_step_sig_head(&g, r) && b.n <= STEP_HEAD_MAX && g.n <= STEP_HEAD_MAX) {
        memcpy(h->json, b.p, b.n);
        memcpy(h->sig, g.p, g.n);
        memset(h->sig + g.n, 0xff, NONES_N);
        h->json_n = b.n;
        h->sig_n = g.n;
        h->sig_hash = hash_bytes(g.p, g.n);
        h->in_tables = table_in_tables(e, r->table, r->table_n);
        h->id = r->header_id;
    }
    free(b.p);
    free(g.p);
    return h->id ? h : NULL;
}

/* A step's JSON after its `"line": N`: handle, verdict, mark (iptables steps: nft ones have
 * none), time, family (nft steps), the closing brace. family -1: None. */
static int put_step_end(Buf *b, Ref handle, Ref verdict, Ref mark, Ref time, int family) {
    int err = 0;
    if (handle.n >= 0)
        err |= PUTL(b, ", \"handle\": ") || put_jstr(b, handle.s, (size_t)handle.n);
    if (verdict.n >= 0)
        err |= PUTL(b, ", \"verdict\": ") || put_jstr(b, verdict.s, (size_t)verdict.n);
    if (family < 0 && mark.n >= 0)
        err |= PUTL(b, ", \"mark\": ") || put_mark(b, mark);
    if (time.n >= 0)
        err |= PUTL(b, ", \"time\": ") || put_jstr(b, time.s, (size_t)time.n);
    if (family >= 0)
        err |= PUTL(b, ", \"family\": \"") || puts_(b, FAMILIES[family]) || PUTL(b, "\"");
    return err || PUTL(b, "}");
}

/* A step's JSON from its rule (null until the rules are joined) to its line number, by hook
 * + 1 (HOOKS' order; 0: none): one piece a step. */
#define TEXT_N(text) {text, sizeof(text) - 1}
static const struct {
    const char *s;
    size_t n;
} STEP_MIDDLES[N_HOOKS + 1] = {
#define STEP_MIDDLE(name) TEXT_N("null, \"hook\": \"" name "\", \"line\": "),
    TEXT_N("null, \"hook\": null, \"line\": "), FOR_HOOKS(STEP_MIDDLE)
#undef STEP_MIDDLE
};

/* assemble._returned_into: the packet's last steps, all of `table` and in no hook, the last
 * one a `return`, were called from `table`'s base chain in `hook` (the step coming next):
 * they take that hook, in the walk signature and in their JSON. */
static int returned_into(Packet *p, int table, int hook) {
    size_t first = p->n_steps;
    while (first && p->at[first - 1].table == table && p->at[first - 1].family < 0)
        first--;
    for (size_t i = first; i < p->n_steps; i++)
        p->sig.p[p->at[i].sig_hook] = (char)hook;
    if (!p->json || first == p->n_steps)
        return 0;
    Buf *b = &p->steps;
    size_t from = p->at[first].at, old_n = b->n - from;
    char *old = malloc(old_n);
    if (!old)
        return -1;
    memcpy(old, b->p + from, old_n);
    b->n = from;
    /* a suffix starts with STEP_MIDDLES[0] after its "null": `, "hook": null, "line": ` */
    size_t skip = STEP_MIDDLES[0].n - NULL_RULE_N, middle_n = STEP_MIDDLES[hook + 1].n - NULL_RULE_N;
    int err = 0;
    for (size_t i = first; i < p->n_steps; i++) {
        StepAt *at = &p->at[i];
        const char *step = old + (at->at - from);
        if (i > first)
            err |= PUTL(b, ", ");
        at->at = b->n;
        err |= put(b, step, at->prefix_n + NULL_RULE_N) || put(b, STEP_MIDDLES[hook + 1].s + NULL_RULE_N, middle_n) ||
               put(b, step + at->prefix_n + NULL_RULE_N + skip, at->suffix_n - skip);
        at->suffix_n += middle_n - skip;
    }
    free(old);
    return err;
}

/* Assembler._append: the step joins the packet (its JSON pieces, if wanted, and the walk signature). */
static void append_step(Engine *e, Packet *p, const Rec *r, int hook, int table) {
    int err = 0;
    const Fields *f = r->f;
    if (hook >= 0 && r->family < 0 && table >= 0 && p->last_hook == -1 && p->n_steps &&
        p->at[p->n_steps - 1].kind == 1 /* return */ && p->at[p->n_steps - 1].table == table &&
        (r->names_known ? r->chain_hook : find_name(HOOKS, N_HOOKS, r->chain, r->chain_n)) >= 0)
        err |= returned_into(p, table, hook);
    if (p->n_steps == p->cap_steps) {
        size_t cap = p->cap_steps ? p->cap_steps * 2 : 16;
        StepAt *at = realloc(p->at, cap * sizeof *at);
        if (!at) {
            e->failed = 1;
            return;
        }
        p->at = at;
        p->cap_steps = cap;
    }
    if (p->n_steps == 0 && r->time.n >= 0) {
        p->time0 = malloc((size_t)r->time.n + 1);
        if (p->time0) {
            memcpy(p->time0, r->time.s, (size_t)r->time.n);
            p->time0_n = (size_t)r->time.n;
        } else {
            err = 1;
        }
    }
    int want_json = e->mode == MODE_JSON || (e->mode == MODE_TEXT && e->kept < TEXT_PACKETS);
    if (!want_json)
        p->json = 0;
    const struct StepHead *head = step_head(e, r);
    if (p->json) {
        /* the step's JSON: its head and end as the caches hold them (a fast line's, most
         * lines) or written now into step_text, then every piece copied in one reservation
         * (a put per piece cost ~3 % of a json run's CPU) */
        Buf *t = &e->step_text;
        t->n = 0;
        size_t head_n = head ? head->json_n : 0, tail_at = 0, tail_n = r->json_tail_n;
        if (!head) {
            err |= put_step_json_head(t, r);
            head_n = tail_at = t->n;
        }
        if (!r->json_tail) { /* the parser thread writes a fast line's */
            err |= put_step_end(t, r->handle, r->verdict, f->mark, r->time, r->family);
            tail_n = t->n - tail_at;
        }
        const char *head_json = head ? head->json : t->p, *tail = r->json_tail ? r->json_tail : t->p + tail_at;
        int middle = hook >= 0 ? hook + 1 : 0;
        size_t middle_n = STEP_MIDDLES[middle].n, line_n = line_text(&e->line_text, e->line_no);
        Buf *b = &p->steps;
        if (err || line_n > sizeof e->line_text.text || buf_grow(b, 2 + head_n + middle_n + line_n + tail_n)) {
            err = 1;
        } else {
            StepAt *at = &p->at[p->n_steps];
            char *d = b->p + b->n;
            if (p->n_steps) {
                memcpy(d, ", ", 2);
                d += 2;
            }
            at->at = (size_t)(d - b->p);
            at->in_tables = head ? head->in_tables : table_in_tables(e, r->table, r->table_n);
            at->prefix_n = head_n;
            at->suffix_n = middle_n - NULL_RULE_N + line_n + tail_n; /* after the rule's "null" */
            p->some_out_of_tables |= !at->in_tables;
            copy_bytes(d, head_json, head_n);
            d += head_n;
            copy_bytes(d, STEP_MIDDLES[middle].s, middle_n);
            d += middle_n;
            copy_bytes(d, e->line_text.text + e->line_text.start, line_n);
            d += line_n;
            copy_bytes(d, tail, tail_n);
            b->n = (size_t)(d + tail_n - b->p);
        }
    }
    StepAt *at = &p->at[p->n_steps++];
    at->table = table;
    at->family = r->family;
    at->kind = r->kind;
    Buf *g = &p->sig;
    int nones = r->handle.n < 0 && r->verdict.n < 0 && r->rule.n < 0; /* a kernel log's steps */
    if (head && nones) { /* the head's piece and the three Nones in one copy (6 puts: ~2 % of a json run) */
        size_t n = head->sig_n + NONES_N;
        if (buf_grow(g, n + 2)) {
            err = 1;
        } else {
            copy_bytes(g->p + g->n, head->sig, n);
            g->n += n;
            at->sig_hook = g->n;
            g->p[g->n++] = (char)(hook >= 0 ? hook : 255);
            g->p[g->n++] = (char)(r->family >= 0 ? r->family : 255);
            at->piece_hash = hash_mix(head->sig_hash, 0);
        }
    } else { /* no head cached (only a kernel line the parser read has one), or nft fields */
        size_t piece = g->n;
        err |= put_step_sig_head(g, r);
        size_t extras = g->n;
        err |= sig_str(g, r->handle.s, r->handle.n);
        err |= sig_str(g, r->verdict.s, r->verdict.n);
        err |= sig_str(g, r->rule.s, r->rule.n);
        at->sig_hook = g->n;
        if (!err) /* handle, verdict and rule: None in a kernel log's steps (any constant serves) */
            at->piece_hash = hash_mix(hash_bytes(g->p + piece, extras - piece),
                                      nones ? 0 : hash_bytes(g->p + extras, g->n - extras));
        err |= sig_byte(g, hook >= 0 ? hook : 255);
        err |= sig_byte(g, r->family >= 0 ? r->family : 255);
    }
    if (err)
        e->failed = 1;
    p->looped |= re_enters(p->last_hook, hook);
    p->last_hook = hook;
    p->last_table = table;
    p->last_bridge = r->family == FAMILY_BRIDGE;
    p->at_end = 0;
    free(p->entered);
    p->entered = NULL;
    if (f->src[0] && f->dst[0]) {
        if (!p->has_first) {
            p->has_first = 1;
            memcpy(p->first_src, f->src, ADDR_MAX);
            memcpy(p->first_dst, f->dst, ADDR_MAX);
            p->first_ttl = f->ttl;
            p->first_sport = f->sport;
            p->first_dport = f->dport;
            p->first_damaged = f->damaged;
        }
        p->has_last = 1;
        memcpy(p->last_src, f->src, ADDR_MAX);
        memcpy(p->last_dst, f->dst, ADDR_MAX);
        p->last_ttl = f->ttl;
        p->last_sport = f->sport;
        p->last_dport = f->dport;
        p->last_damaged = f->damaged;
    }
    p->last_seen = e->count;
    lru_unlink(e, p);
    lru_append(e, p);
}

/* Assembler._last (the fields, node and trace id of the last record placed): its fields, and
 * the texts they point to, copied into the engine. */
static void own_last(Engine *e) {
    if (!e->has_last || e->last_f == &e->last_fields)
        return;
    const Fields *f = e->last_f;
    e->last_fields = *f;
    e->last_f = &e->last_fields;
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

/* Keep the fields of the record placed last. A fast line's fields stay in its batch until the
 * batch is assembled, so they are only pointed at, and copied (own_last) when the batch ends:
 * copying every record's fields cost ~4 % of the assembling thread. */
static void keep_last(Engine *e, const Rec *r, Packet *p) {
    e->has_last = 1;
    e->last_node = r->node;
    e->last_packet = p;
    e->last_has_tid = r->trace_id.n >= 0;
    e->last_tid.n = 0;
    if (e->last_has_tid && put(&e->last_tid, r->trace_id.s, (size_t)r->trace_id.n)) {
        e->failed = 1;
        e->has_last = 0;
        return;
    }
    e->last_f = r->f;
    if (!r->in_batch)
        own_last(e);
}

static int same_trace_id(Engine *e, const Rec *r) {
    if (r->trace_id.n < 0)
        return !e->last_has_tid;
    return e->last_has_tid && e->last_tid.n == (size_t)r->trace_id.n &&
           memcmp(e->last_tid.p, r->trace_id.s, (size_t)r->trace_id.n) == 0;
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
static Packet *open_packet(Engine *e, const Rec *r) {
    const Fields *f = r->f;
    Packet *p = packet_new(e);
    if (!p) {
        e->failed = 1;
        return NULL;
    }
    p->node = r->node;
    p->seq = ++e->seq;
    p->identity = r->trace_id.n >= 0 ? ID_TRACE : f->ip_id != NONE ? ID_IP : ID_FLOW;
    p->f = *f;
    p->f.damaged = 0;
    p->first_ttl = p->first_sport = p->first_dport = p->last_ttl = p->last_sport = p->last_dport = NONE;
    p->last_hook = -2;
    p->json = 1;
    if (f->damaged)
        p->repaired++;
    e->began[r->node] = e->count;
    lru_append(e, p);
    if (f->ip_id != NONE)
        index_packet(e, p);
    else if (p->identity == ID_FLOW)
        e->open_flows++;
    return p;
}

/* Assembler._find */
static Packet *find(Engine *e, const Rec *r, int table, int *hook) {
    const Fields *f = r->f;
    int node = r->node;
    if (r->trace_id.n >= 0) {
        if (trace_key(&e->scratch2, node, r->trace_id.s, (size_t)r->trace_id.n)) {
            e->failed = 1;
            return NULL;
        }
        Entry *t = map_get(&e->by_trace, e->scratch2.p, e->scratch2.n);
        if (t && compatible(t->value, f) && next_hook(e, t->value, r, table, hook))
            return t->value;
        if (f->ip_id == NONE)
            return NULL;
    }
    if (f->ip_id != NONE) {
        for (Packet *p = e->bucket_tail[bucket_of(node, f->ip_id)]; p; p = p->id_prev)
            if (p->node == node && p->f.ip_id == f->ip_id && compatible(p, f) && next_hook(e, p, r, table, hook))
                return p;
        if (e->open_flows) /* an IPv4 flow packet: a damaged start this line's IP id may adopt */
            for (Packet *p = e->tail; p; p = p->prev)
                if (p->identity == ID_FLOW && p->node == node && compatible(p, f) && next_hook(e, p, r, table, hook))
                    return p;
        return NULL;
    }
    for (Packet *p = e->tail; p; p = p->prev)
        if (p->node == node && compatible(p, f) && next_hook(e, p, r, table, hook))
            return p;
    return NULL;
}

static int add_trace_id(Packet *p, Ref tid) {
    if (has_trace_id(p, tid))
        return 0;
    if (p->n_trace_ids == p->cap_trace_ids) {
        size_t cap = p->cap_trace_ids ? p->cap_trace_ids * 2 : 2;
        char **ids = realloc(p->trace_ids, cap * sizeof *ids);
        if (ids)
            p->trace_ids = ids;
        size_t *lens = realloc(p->trace_id_n, cap * sizeof *lens);
        if (lens)
            p->trace_id_n = lens;
        if (!ids || !lens)
            return -1;
        p->cap_trace_ids = cap;
    }
    char *copy = malloc((size_t)tid.n + 1);
    if (!copy)
        return -1;
    memcpy(copy, tid.s, (size_t)tid.n);
    p->trace_ids[p->n_trace_ids] = copy;
    p->trace_id_n[p->n_trace_ids++] = (size_t)tid.n;
    return 0;
}

static void process_done(Engine *e);
static void slot_seen(Engine *e, int node, int hook, const char *table, size_t table_n);
static void table_seen(Engine *e, int node, int table);

/* Analyzer.packets + Assembler.feed for one record. */
static void feed_record(Engine *e, const Rec *r) {
    const Fields *f = r->f;
    int table = r->names_known ? r->table_index : find_name(TABLES, N_TABLES, r->table, r->table_n);
    int legacy = r->trace_id.n < 0;
    if (e->event_order[r->node] < 0)
        e->event_order[r->node] = e->n_with_events++;
    if (legacy && table >= 0 && !(e->table_masks[r->node] & (1 << table)))
        table_seen(e, r->node, table); /* a legacy table hooks into all its chains once loaded */
    e->count++;
    int hook;
    Packet *p = NULL;
    int fast = 0;
    if (e->has_last && e->last_packet && e->last_node == r->node && same_trace_id(e, r) &&
        ((r->repeat && e->placed_last) || e->last_f == f || fields_eq(e->last_f, f))) {
        p = e->last_packet;
        if (next_hook(e, p, r, table, &hook)) {
            if (f->damaged)
                p->repaired++;
            append_step(e, p, r, hook, table);
            fast = 1;
        } else {
            p = NULL;
        }
    }
    if (!fast) {
        p = find(e, r, table, &hook);
        if (!p) {
            if (legacy && f->ip_id == NONE && (!f->src[0] || !f->dst[0])) {
                e->unattributed++;
                e->placed_last = 0;
                expire(e);
                process_done(e);
                return;
            }
            p = open_packet(e, r);
            if (!p)
                return;
            next_hook(e, p, r, table, &hook);
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
        if (!legacy) {
            if (add_trace_id(p, r->trace_id) ||
                trace_key(&e->scratch2, r->node, r->trace_id.s, (size_t)r->trace_id.n)) {
                e->failed = 1;
            } else {
                int added;
                Entry *t = map_put(&e->by_trace, e->scratch2.p, e->scratch2.n, &added);
                if (t)
                    t->value = p;
                else
                    e->failed = 1;
            }
        }
        append_step(e, p, r, hook, table);
        keep_last(e, r, p);
    }
    e->placed_last = 1; /* so e->last_f are the record's */
    if (e->count % EXPIRE_EVERY == 0)
        expire(e);
    if (!legacy && hook >= 0) /* nft creates a base chain only where one is declared: the slots seen */
        slot_seen(e, r->node, hook, r->table, r->table_n);
    process_done(e);
}

/* Assembler.mark_end: the open packets after whose last step no other packet of their node
 * began; `entered` (nft): trace id -> the base chain its packet went on into. */
static void mark_end(Engine *e, Map *entered) {
    for (Packet *p = e->head; p; p = p->next)
        if (e->began[p->node] <= p->last_seen)
            p->at_end = 1;
    if (!entered)
        return;
    for (Entry *x = entered->head; x; x = x->next) {
        if (trace_key(&e->scratch2, e->line_node, x->key, x->klen)) {
            e->failed = 1;
            continue;
        }
        Entry *t = map_get(&e->by_trace, e->scratch2.p, e->scratch2.n);
        if (!t)
            continue;
        Packet *p = t->value;
        free(p->entered);
        p->entered = malloc((size_t)x->number + 1);
        if (!p->entered) {
            e->failed = 1;
            continue;
        }
        memcpy(p->entered, x->value, (size_t)x->number);
        p->entered_n = (size_t)x->number;
    }
}

/* ---------------------------------------------------------------- calls into Python */

/* A Python call failed: keep the first exception, stop feeding (feed() raises it). */
static void call_failed(Engine *e) {
    if (!e->error) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb && value)
            PyException_SetTraceback(value, tb);
        e->error = value ? value : Py_NewRef(Py_None);
        Py_XDECREF(type);
        Py_XDECREF(tb);
    } else {
        PyErr_Clear();
    }
}

/* ---------------------------------------------------------------- nodes */

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

/* ---------------------------------------------------------------- finishing a packet */

static void walk_free(void *w) {
    Walk *walk = w;
    Py_XDECREF(walk->result);
    free(walk);
}

static int bytes_item(PyObject *t, Py_ssize_t i, const char **s, Py_ssize_t *n) {
    PyObject *o = PyTuple_GET_ITEM(t, i);
    if (!PyBytes_Check(o)) {
        PyErr_Format(PyExc_TypeError, "judge() item %zd must be bytes", i);
        return -1;
    }
    *s = PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

/* Python strings of the names a step's fields take from fixed lists (kind, hook, family). */
static PyObject *KIND_OBJECTS[3], *HOOK_OBJECTS[N_HOOKS], *FAMILY_OBJECTS[N_FAMILIES];

static int names_ready(void) {
    for (int i = 0; i < 3; i++)
        if (!KIND_OBJECTS[i] && !(KIND_OBJECTS[i] = PyUnicode_InternFromString(KINDS[i])))
            return -1;
    for (int i = 0; i < N_HOOKS; i++)
        if (!HOOK_OBJECTS[i] && !(HOOK_OBJECTS[i] = PyUnicode_InternFromString(HOOKS[i])))
            return -1;
    for (int i = 0; i < N_FAMILIES; i++)
        if (!FAMILY_OBJECTS[i] && !(FAMILY_OBJECTS[i] = PyUnicode_InternFromString(FAMILIES[i])))
            return -1;
    return 0;
}

/* One signature field (see sig_str) as str or None; advances *at. */
static PyObject *sig_text(const char *g, size_t n, size_t *at) {
    uint32_t len;
    if (*at + 4 > n)
        goto broken;
    memcpy(&len, g + *at, 4);
    *at += 4;
    if (len == 0xffffffffu)
        return Py_NewRef(Py_None);
    if (*at + len > n)
        goto broken;
    *at += len;
    return PyUnicode_DecodeUTF8(g + *at - len, (Py_ssize_t)len, "surrogatepass");
broken:
    PyErr_SetString(PyExc_SystemError, "_engine: a walk signature is cut short");
    return NULL;
}

/* One step of a walk signature (append_step writes it) as the tuple native.Calls.step takes:
 * (table, chain, kind, position, handle, verdict, rule, hook, family); *at: where it ends. */
static PyObject *step_tuple(const char *g, size_t n, size_t *at) {
    PyObject *table = sig_text(g, n, at), *chain = table ? sig_text(g, n, at) : NULL;
    int kind = chain && *at < n ? (unsigned char)g[(*at)++] : -1;
    PyObject *position = kind >= 0 && kind < 3 ? sig_text(g, n, at) : NULL;
    PyObject *handle = position ? sig_text(g, n, at) : NULL, *verdict = handle ? sig_text(g, n, at) : NULL;
    PyObject *rule = verdict ? sig_text(g, n, at) : NULL, *step = NULL;
    if (position && position != Py_None)
        Py_SETREF(position, PyLong_FromUnicodeObject(position, 10));
    if (rule && position && *at + 2 <= n) {
        int hook = (unsigned char)g[*at], family = (unsigned char)g[*at + 1];
        *at += 2;
        step = PyTuple_Pack(9, table, chain, KIND_OBJECTS[kind], position, handle, verdict, rule,
                            hook < N_HOOKS ? HOOK_OBJECTS[hook] : Py_None,
                            family < N_FAMILIES ? FAMILY_OBJECTS[family] : Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_SystemError, "_engine: a walk signature is cut short");
    }
    Py_XDECREF(table);
    Py_XDECREF(chain);
    Py_XDECREF(position);
    Py_XDECREF(handle);
    Py_XDECREF(verdict);
    Py_XDECREF(rule);
    return step;
}

static void decref_value(void *o) { Py_DECREF((PyObject *)o); }

/* The steps of a packet's walk signature for native.Calls.judge: a Step object per step, made
 * by Calls.step from the step's tuple the first time the step is met and the same object each
 * time after (decoding a walk's ~30 steps into new objects for each walk was most of judging).
 * A step's part of the signature ends after its hook and family bytes (StepAt.sig_hook). */
static PyObject *steps_of(Engine *e, const Packet *p) {
    if (names_ready())
        return NULL;
    const char *g = p->sig.p;
    PyObject *steps = PyList_New(0);
    for (size_t i = 0, start = 0; steps && i < p->n_steps; i++) {
        size_t end = p->at[i].sig_hook + 2;
        Entry *known = map_get(&e->step_objects, g + start, end - start);
        PyObject *step = NULL;
        if (known) {
            step = Py_NewRef((PyObject *)known->value);
        } else {
            size_t at = start;
            PyObject *t = step_tuple(g, end, &at);
            if (t)
                step = PyObject_CallMethod(e->calls, "step", "(O)", t); /* "O" would spread a tuple */
            Py_XDECREF(t);
            if (step) {
                if (e->step_objects.count >= STEP_CACHE)
                    map_clear(&e->step_objects, decref_value);
                int added;
                Entry *slot = map_put(&e->step_objects, g + start, end - start, &added);
                if (slot)
                    slot->value = Py_NewRef(step);
                else
                    e->failed = 1;
            }
        }
        if (!step || PyList_Append(steps, step))
            Py_CLEAR(steps);
        Py_XDECREF(step);
        start = end;
    }
    return steps;
}

/* The hash of a walk's key (`prefix`, then the packet's signature) for Engine.walks: the
 * prefix hashed, then each step's piece_hash and its hook and family bytes (returned_into may
 * change a hook after the step), not the signature's kilobyte hashed again for each packet.
 * Equal signatures have equal steps, so equal keys hash alike. */
static size_t walk_hash(const Packet *p, const Buf *prefix) {
    uint64_t h = hash_bytes(prefix->p, prefix->n);
    for (size_t i = 0; i < p->n_steps; i++) {
        const StepAt *at = &p->at[i];
        h = hash_mix(hash_mix(h, at->piece_hash),
                     (unsigned char)p->sig.p[at->sig_hook] | (uint64_t)(unsigned char)p->sig.p[at->sig_hook + 1] << 8);
    }
    h = (h ^ (h >> 32)) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    return h ? (size_t)h : 1;
}

/* The judged walk of a finished packet: from the cache, or judged in Python (native.Judge). */
static Walk *walk_of(Engine *e, Packet *p) {
    Buf *k = &e->key;
    k->n = 0;
    char flags[2] = {(char)p->at_end, (char)(p->f.proto[0] == 0)};
    uint32_t entered = p->entered ? (uint32_t)p->entered_n : 0xffffffffu;
    if (put(k, (const char *)&p->node, sizeof p->node) ||
        put(k, (const char *)&e->slot_version[p->node], sizeof(long long)) || put(k, flags, 2) ||
        put(k, (const char *)&entered, 4) || (p->entered && put(k, p->entered, p->entered_n))) {
        e->failed = 1;
        return NULL;
    }
    const char *sig = p->sig.p ? p->sig.p : "";
    size_t hash = walk_hash(p, k);
    Entry *cached = map_get_parts(&e->walks, k->p, k->n, sig, p->sig.n, hash);
    if (cached)
        return cached->value;
    PyObject *steps = steps_of(e, p);
    if (!steps) {
        call_failed(e);
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(e->calls, "judge", "iOiz#i", p->node, steps, p->at_end, p->entered,
                                      (Py_ssize_t)p->entered_n, p->f.proto[0] == 0);
    Py_DECREF(steps);
    if (!r)
        goto failed;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 12) {
        PyErr_SetString(PyExc_TypeError, "judge() must return a 12-tuple");
        goto failed;
    }
    Walk *w = calloc(1, sizeof *w);
    if (!w) {
        Py_DECREF(r);
        e->failed = 1;
        return NULL;
    }
    w->result = r;
    PyObject *proto = PyTuple_GET_ITEM(r, 4);
    if (bytes_item(r, 0, &w->hooks_json, &w->hooks_json_n) || bytes_item(r, 2, &w->verdict_json, &w->verdict_json_n) ||
        bytes_item(r, 3, &w->newconn_json, &w->newconn_json_n) || !PyTuple_Check(PyTuple_GET_ITEM(r, 1)) ||
        (proto != Py_None && !PyUnicode_Check(proto))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "judge() returned the wrong types");
        walk_free(w);
        r = NULL;
        goto failed;
    }
    w->step_rules = PyTuple_GET_ITEM(r, 1);
    w->rules_null = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(w->step_rules) && w->rules_null; i++) {
        PyObject *rule = PyTuple_GET_ITEM(w->step_rules, i);
        w->rules_null = PyBytes_Check(rule) && PyBytes_GET_SIZE(rule) == NULL_RULE_N &&
                        memcmp(PyBytes_AS_STRING(rule), "null", NULL_RULE_N) == 0;
    }
    w->proto = proto == Py_None ? NULL : PyUnicode_AsUTF8(proto);
    w->verdict = (int)PyLong_AsLong(PyTuple_GET_ITEM(r, 5));
    w->origin = PyObject_IsTrue(PyTuple_GET_ITEM(r, 6)) == 1;
    w->walk_ok = PyObject_IsTrue(PyTuple_GET_ITEM(r, 7)) == 1;
    w->summary = PyLong_AsLong(PyTuple_GET_ITEM(r, 9));
    w->diagram = PyLong_AsLong(PyTuple_GET_ITEM(r, 10));
    int learned = PyObject_IsTrue(PyTuple_GET_ITEM(r, 11)) == 1; /* cached walks of the node: judged anew */
    if (PyErr_Occurred() || (w->proto == NULL && proto != Py_None) || PyTuple_GET_SIZE(w->step_rules) != (Py_ssize_t)p->n_steps) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "judge() returned a rule for each step? no");
        walk_free(w);
        r = NULL;
        goto failed;
    }
    if (e->walks.count >= WALK_CACHE)
        map_clear(&e->walks, walk_free);
    int added;
    Entry *slot = map_put_parts(&e->walks, k->p, k->n, sig, p->sig.n, hash, &added);
    if (!slot) {
        walk_free(w);
        e->failed = 1;
        return NULL;
    }
    slot->value = w;
    if (learned)
        e->slot_version[p->node]++;
    return w;
failed:
    Py_XDECREF(r);
    call_failed(e);
    return NULL;
}

/* An endpoint as Directions compares it: (address or None, port or None). */
static int put_endpoint(Buf *b, const char *addr, long long port) {
    unsigned char len = (unsigned char)strlen(addr);
    char has = addr[0] != 0;
    return put(b, &has, 1) || put(b, (const char *)&len, 1) || put(b, addr, len) ||
           put(b, (const char *)&port, sizeof port);
}

/* The directions key of one (a, b) endpoint pair of the packet, a <= b or not. */
static int direction_key(Engine *e, const Packet *p, const char *proto, const char *as, long long ap,
                         const char *bs, long long bp, int *a_first) {
    Buf *k = &e->key, *x = &e->scratch, *y = &e->scratch2;
    x->n = y->n = k->n = 0;
    if (put_endpoint(x, as, ap) || put_endpoint(y, bs, bp))
        return -1;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, m);
    *a_first = c < 0 || (c == 0 && x->n <= y->n);
    Buf *lo = *a_first ? x : y, *hi = *a_first ? y : x;
    unsigned char plen = (unsigned char)strlen(proto);
    return put(k, (const char *)&p->node, sizeof p->node) || put(k, (const char *)&plen, 1) || put(k, proto, plen) ||
           put(k, lo->p, lo->n) || put(k, hi->p, hi->n);
}

/* analyze.Directions.classify */
static int classify(Engine *e, const Packet *p) {
    const Fields *f = &p->f;
    int direction = -1;
    if (strcmp(f->proto, "ICMP") == 0 && (f->icmp_type == 8 || f->icmp_type == 0))
        direction = f->icmp_type == 8 ? DIR_REQUEST : DIR_REPLY;
    else if (strcmp(f->proto, "ICMP") == 0 && f->icmp_type != NONE)
        direction = DIR_ERROR;
    else if (strcmp(f->proto, "ICMPV6") == 0 && (f->icmp_type == 128 || f->icmp_type == 129))
        direction = f->icmp_type == 128 ? DIR_REQUEST : DIR_REPLY;
    else if (strcmp(f->proto, "ICMPV6") == 0 && f->icmp_type != NONE && f->icmp_type < 128)
        direction = DIR_ERROR;
    else if (strcmp(f->proto, "TCP") == 0 && (f->flags & 64)) /* SYN (TCP_FLAG_NAMES[6]) */
        direction = (f->flags & 1) ? DIR_REPLY : DIR_REQUEST;  /* ACK */
    /* the endpoint pairs: as the packet entered and as it left, once if NAT changed nothing */
    const char *as[2], *bs[2];
    long long ap[2], bp[2];
    int pairs = 0;
    if (p->has_first) {
        as[0] = p->first_src, ap[0] = p->first_sport, bs[0] = p->first_dst, bp[0] = p->first_dport;
        pairs = 1;
        if (strcmp(p->last_src, p->first_src) || ap[0] != p->last_sport || strcmp(p->last_dst, p->first_dst) ||
            bp[0] != p->last_dport) {
            as[1] = p->last_src, ap[1] = p->last_sport, bs[1] = p->last_dst, bp[1] = p->last_dport;
            pairs = 2;
        }
    }
    if (direction < 0) { /* Directions._by_first_seen */
        for (int i = 0; i < pairs; i++) {
            int a_first;
            if (direction_key(e, p, f->proto, as[i], ap[i], bs[i], bp[i], &a_first)) {
                e->failed = 1;
                break;
            }
            Entry *known = map_get(&e->directions, e->key.p, e->key.n);
            if (known) {
                int same = known->number == 2 || (known->number == 1) == a_first; /* 2: a == b */
                direction = same ? DIR_REQUEST : DIR_REPLY;
                break;
            }
        }
        if (direction < 0) /* from a well-known port to an ephemeral one (analyze.EPHEMERAL) */
            direction = f->sport != NONE && f->dport != NONE && f->sport < 1024 && f->dport >= 32768 ? DIR_REPLY
                                                                                                   : DIR_REQUEST;
    }
    for (int i = 0; i < pairs; i++) {
        int a_first, added;
        if (direction_key(e, p, f->proto, as[i], ap[i], bs[i], bp[i], &a_first)) {
            e->failed = 1;
            break;
        }
        int equal = e->scratch.n == e->scratch2.n && memcmp(e->scratch.p, e->scratch2.p, e->scratch.n) == 0;
        Entry *known = map_put(&e->directions, e->key.p, e->key.n, &added);
        if (!known) {
            e->failed = 1;
            break;
        }
        /* remember (a, b) for a request, else (b, a): number 1 if the first one is the lower one */
        int first_is_a = direction == DIR_REQUEST;
        known->number = equal ? 2 : (first_is_a == a_first) ? 1 : 0;
        map_move_to_end(&e->directions, known);
        while (e->directions.count > DIRECTIONS_MEMORY)
            map_remove(&e->directions, e->directions.head);
    }
    return direction;
}

static int address_ok(Engine *e, int which, const char *address) {
    Buf *k = &e->scratch2;
    k->n = 0;
    char w = (char)which;
    int added;
    if (put(k, &w, 1) || put(k, address, strlen(address))) {
        e->failed = 1;
        return 0;
    }
    Entry *known = map_get(&e->addresses, k->p, k->n);
    if (known)
        return (int)known->number;
    PyObject *r = PyObject_CallMethod(e->calls, "address_ok", "is", which, address);
    if (!r) {
        call_failed(e);
        return 0;
    }
    int ok = PyObject_IsTrue(r) == 1;
    Py_DECREF(r);
    if (e->addresses.count >= ADDRESS_CACHE)
        map_clear(&e->addresses, NULL);
    known = map_put(&e->addresses, k->p, k->n, &added);
    if (known)
        known->number = ok;
    return ok;
}

static void lower_proto(const char *proto, char *out) {
    const char *src = proto[0] ? proto : "unknown";
    size_t k = 0;
    for (; src[k]; k++)
        out[k] = (src[k] >= 'A' && src[k] <= 'Z') ? (char)(src[k] + 32) : src[k];
    out[k] = 0;
}

/* match.Match.__call__ (the walk's part is the judge's walk_ok) */
static int matches(Engine *e, const Packet *p, const Walk *w) {
    if (!e->match)
        return 1;
    if (!e->node_ok[p->node] || !w->walk_ok)
        return 0;
    char protocol[8];
    lower_proto(p->f.proto, protocol);
    for (size_t i = 0; i < e->n_protocols; i++)
        if (e->protocol_lens[i] != strlen(protocol) || memcmp(e->protocols[i], protocol, e->protocol_lens[i]) != 0)
            return 0;
    for (size_t i = 0; i < e->n_ports; i++)
        if (p->f.sport != e->ports[i] && p->f.dport != e->ports[i])
            return 0;
    for (size_t i = 0; i < e->n_ip_ids; i++)
        if (p->f.ip_id != e->ip_ids[i])
            return 0;
    for (int which = 0; which < 2; which++) {
        if (!(which ? e->match_dst : e->match_src))
            continue;
        if (!p->has_first)
            return 0;
        const char *a = which ? p->first_dst : p->first_src, *b = which ? p->last_dst : p->last_src;
        if (!address_ok(e, which, a) && (strcmp(a, b) == 0 || !address_ok(e, which, b)))
            return 0;
    }
    return 1;
}

/* flows.endpoints: a line's port as read; a damaged line's is not (a cut `DPT=52000` reads as 52). */
static long long line_port(long long port, int damaged) { return damaged ? NONE : port; }

static void hops_free(void *h) {
    Hops *hops = h;
    for (size_t i = 0; i < hops->n; i++)
        Py_XDECREF(hops->hops[i].walk);
    free(hops->hops);
    free(hops);
}

/* flows.FlowIndex.add */
static void add_hop(Engine *e, const Packet *p, const Walk *w, int direction) {
    if (p->f.ip_id == NONE)
        return;
    Buf *k = &e->key;
    k->n = 0;
    long long seq = strcmp(p->f.proto, "ICMP") == 0 ? p->f.icmp_seq : NONE;
    int added;
    if (put(k, p->f.proto, strlen(p->f.proto) + 1) || put(k, (const char *)&p->f.ip_id, sizeof(long long)) ||
        put(k, (const char *)&seq, sizeof seq)) {
        e->failed = 1;
        return;
    }
    Entry *entry = map_get(&e->flows, k->p, k->n);
    if (!entry) {
        Hops *reuse = NULL; /* the oldest flow's, when the index is full (flows.MEMORY) */
        if (e->flows.count >= FLOWS_MEMORY) {
            Entry *oldest = e->flows.head;
            reuse = oldest->value;
            for (size_t i = 0; i < reuse->n; i++)
                Py_XDECREF(reuse->hops[i].walk);
            reuse->n = 0;
            map_remove(&e->flows, oldest);
        }
        entry = map_put(&e->flows, k->p, k->n, &added);
        if (entry)
            entry->value = reuse ? reuse : calloc(1, sizeof(Hops));
        if (!entry || !entry->value) {
            if (reuse)
                hops_free(reuse);
            if (entry)
                map_remove(&e->flows, entry);
            e->failed = 1;
            return;
        }
    }
    Hops *hops = entry->value;
    if (hops->n == MAX_HOPS) {
        Py_XDECREF(hops->hops[0].walk);
        memmove(hops->hops, hops->hops + 1, (MAX_HOPS - 1) * sizeof *hops->hops);
        hops->n--;
    }
    if (hops->n == hops->cap) {
        size_t cap = hops->cap ? hops->cap * 2 : 2;
        Hop *grown = realloc(hops->hops, cap * sizeof *grown);
        if (!grown) {
            e->failed = 1;
            return;
        }
        hops->hops = grown;
        hops->cap = cap;
    }
    Hop *h = &hops->hops[hops->n++];
    memset(h, 0, sizeof *h);
    h->seq = p->seq;
    h->direction = direction;
    h->node = p->node;
    h->walk = Py_NewRef(w->result);
    h->ttl = p->has_first ? p->first_ttl : NONE;
    h->sport = h->dport = h->exit_sport = h->exit_dport = NONE;
    if (p->has_first) {
        memcpy(h->src, p->first_src, ADDR_MAX);
        memcpy(h->dst, p->first_dst, ADDR_MAX);
        h->sport = line_port(p->first_sport, p->first_damaged);
        h->dport = line_port(p->first_dport, p->first_damaged);
    }
    if (p->has_last) {
        memcpy(h->exit_src, p->last_src, ADDR_MAX);
        memcpy(h->exit_dst, p->last_dst, ADDR_MAX);
        h->exit_sport = line_port(p->last_sport, p->last_damaged);
        h->exit_dport = line_port(p->last_dport, p->last_damaged);
    }
    map_move_to_end(&e->flows, entry);
}

static char *copy_of(const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}

static void row_free(void *r) {
    Row *row = r;
    free(row->first_time);
    free(row->last_time);
    free(row->example);
    free(row);
}

/* summary.example */
static int put_example(Buf *b, const Packet *p) {
    b->n = 0;
    if (p->f.ip_id != NONE)
        return PUTL(b, "ip id ") || put_int(b, p->f.ip_id);
    if (p->n_trace_ids)
        return PUTL(b, "trace id ") || put(b, p->trace_ids[0], p->trace_id_n[0]);
    if (p->has_first)
        return PUTL(b, "flow ") || puts_(b, p->first_src) || PUTL(b, " \xe2\x86\x92 ") || puts_(b, p->first_dst);
    return PUTL(b, "flow");
}

static int set_time(char **into, size_t *into_n, const Packet *p) {
    free(*into);
    *into = NULL;
    if (!p->time0)
        return 0;
    *into = copy_of(p->time0, p->time0_n);
    *into_n = p->time0_n;
    return *into ? 0 : -1;
}

/* summary.Summary.add */
static void add_row(Engine *e, const Packet *p, const Walk *w, int direction) {
    Buf *k = &e->key;
    k->n = 0;
    char d = (char)direction;
    int added;
    if (put(k, (const char *)&p->node, sizeof p->node) || put(k, &d, 1) || put(k, (const char *)&w->summary, sizeof w->summary)) {
        e->failed = 1;
        return;
    }
    Entry *entry = map_get(&e->rows, k->p, k->n);
    if (!entry) {
        if (e->rows.count >= SUMMARY_ROWS) {
            e->other++;
            return;
        }
        entry = map_put(&e->rows, k->p, k->n, &added);
        Row *row = entry ? calloc(1, sizeof *row) : NULL;
        if (!row || put_example(&e->scratch, p) || set_time(&row->first_time, &row->first_time_n, p) ||
            set_time(&row->last_time, &row->last_time_n, p) ||
            !(row->example = copy_of(e->scratch.p, e->scratch.n))) {
            if (row)
                row_free(row);
            if (entry)
                map_remove(&e->rows, entry);
            e->failed = 1;
            return;
        }
        row->example_n = e->scratch.n;
        row->count = 1;
        row->first_seq = row->last_seq = p->seq;
        entry->value = row;
        return;
    }
    Row *row = entry->value;
    row->count++;
    if (p->seq < row->first_seq) {
        row->first_seq = p->seq;
        free(row->example);
        row->example = NULL;
        if (set_time(&row->first_time, &row->first_time_n, p) || put_example(&e->scratch, p) ||
            !(row->example = copy_of(e->scratch.p, e->scratch.n)))
            e->failed = 1;
        row->example_n = e->scratch.n;
    }
    if (p->seq > row->last_seq) {
        row->last_seq = p->seq;
        if (set_time(&row->last_time, &row->last_time_n, p))
            e->failed = 1;
    }
}

static void diagram_row_free(void *r) {
    DiagramRow *row = r;
    Py_XDECREF(row->walk);
    free(row);
}

/* diagram.DiagramBuilder.add */
static void add_diagram(Engine *e, const Packet *p, const Walk *w, int direction) {
    Buf *k = &e->key;
    k->n = 0;
    char d = (char)direction;
    int added;
    if (put(k, (const char *)&p->node, sizeof p->node) || put(k, &d, 1) || put(k, (const char *)&w->diagram, sizeof w->diagram)) {
        e->failed = 1;
        return;
    }
    Entry *entry = map_get(&e->diagram, k->p, k->n);
    if (entry) {
        DiagramRow *row = entry->value;
        row->count++;
        if (p->seq < row->min_seq) {
            row->min_seq = p->seq;
            Py_SETREF(row->walk, Py_NewRef(w->result));
        }
        return;
    }
    if (e->diagram.count >= DIAGRAM_WALKS)
        return;
    entry = map_put(&e->diagram, k->p, k->n, &added);
    DiagramRow *row = entry ? calloc(1, sizeof *row) : NULL;
    if (!row) {
        if (entry)
            map_remove(&e->diagram, entry);
        e->failed = 1;
        return;
    }
    row->min_seq = p->seq;
    row->count = 1;
    row->walk = Py_NewRef(w->result);
    entry->value = row;
}

static int put_step(Buf *b, const Packet *p, size_t i, const Walk *w) {
    const StepAt *at = &p->at[i];
    const char *step = p->steps.p + at->at;
    if (w->rules_null)
        return put(b, step, at->prefix_n + NULL_RULE_N + at->suffix_n);
    PyObject *rule = PyTuple_GET_ITEM(w->step_rules, (Py_ssize_t)i);
    if (!PyBytes_Check(rule))
        return -1;
    return put(b, step, at->prefix_n) || put(b, PyBytes_AS_STRING(rule), (size_t)PyBytes_GET_SIZE(rule)) ||
           put(b, step + at->prefix_n + NULL_RULE_N, at->suffix_n);
}

static int put_opt_str(Buf *b, const char *s, int has) { return has ? put_jstr(b, s, strlen(s)) : PUTL(b, "null"); }

/* PacketRecord._ends: a line's addresses and, for a packet with ports, its ports as read
 * (line_port). */
static int put_ends(Buf *b, const Packet *p, const char *src, const char *dst, long long sport, long long dport,
                    int damaged) {
    int err = PUTL(b, "{\"src\": ") || put_jstr(b, src, strlen(src)) || PUTL(b, ", \"dst\": ") ||
              put_jstr(b, dst, strlen(dst));
    if (p->f.sport != NONE || p->f.dport != NONE)
        err = err || PUTL(b, ", \"sport\": ") || put_opt_int(b, line_port(sport, damaged)) ||
              PUTL(b, ", \"dport\": ") || put_opt_int(b, line_port(dport, damaged));
    return err || PUTL(b, "}");
}

/* contract.PacketRecord.to_dict, as JSON: steps in the analysis's tables (all of them when
 * `filter` is 0), the walk's pieces from `w`. */
/* The steps list as append_step wrote it, after b's JSON: copied, or given `taken` (b is
 * `out` and goes to write_to()'s descriptor) left in the packet's buffer, which *taken says
 * then belongs to Engine.pieces. */
static int put_steps(Engine *e, Buf *b, const Packet *p, int *taken) {
    if (taken && p->steps.n) {
        if (e->n_pieces == e->cap_pieces) {
            size_t cap = e->cap_pieces ? 2 * e->cap_pieces : 256;
            struct OutPiece *pieces = realloc(e->pieces, cap * sizeof *pieces);
            if (!pieces)
                return -1;
            e->pieces = pieces;
            e->cap_pieces = cap;
        }
        e->pieces[e->n_pieces++] = (struct OutPiece){b->n, p->steps};
        *taken = 1;
        return 0;
    }
    return put(b, p->steps.p, p->steps.n);
}

static int render_packet(Engine *e, Buf *b, const Packet *p, const Walk *w, int direction, int filter, int *taken) {
    char protocol[8];
    lower_proto(p->f.proto, protocol);
    PyObject *node = e->node_json[p->node];
    int err = PUTL(b, "{\"node\": ") || put(b, PyBytes_AS_STRING(node), (size_t)PyBytes_GET_SIZE(node));
    err |= PUTL(b, ", \"direction\": \"") || puts_(b, DIRECTION_NAMES[direction]) || PUTL(b, "\", \"protocol\": ");
    err |= put_jstr(b, protocol, strlen(protocol));
    err |= PUTL(b, ", \"src\": ") || put_opt_str(b, p->has_first ? p->first_src : p->f.src, p->has_first || p->f.src[0]);
    err |= PUTL(b, ", \"dst\": ") || put_opt_str(b, p->has_first ? p->first_dst : p->f.dst, p->has_first || p->f.dst[0]);
    err |= PUTL(b, ", \"ip_id\": ") || put_opt_int(b, p->f.ip_id);
    err |= PUTL(b, ", \"identity\": \"") || puts_(b, IDENTITY_NAMES[p->identity]);
    err |= PUTL(b, "\", \"ttl\": ") || put_opt_int(b, p->has_first ? p->first_ttl : p->f.ttl);
    err |= PUTL(b, ", ") || put(b, w->hooks_json, (size_t)w->hooks_json_n);
    err |= PUTL(b, ", \"steps\": [");
    if (w->rules_null && !(filter && p->some_out_of_tables)) { /* the list as append_step wrote it */
        err |= put_steps(e, b, p, taken);
    } else {
        int first = 1;
        for (size_t i = 0; i < p->n_steps; i++) {
            if (filter && !p->at[i].in_tables)
                continue;
            if (!first)
                err |= PUTL(b, ", ");
            first = 0;
            err |= put_step(b, p, i, w);
        }
    }
    err |= PUTL(b, "], ") || put(b, w->verdict_json, (size_t)w->verdict_json_n);
    err |= PUTL(b, ", \"last_step\": ");
    err |= p->n_steps ? put_step(b, p, p->n_steps - 1, w) : PUTL(b, "null");
    err |= PUTL(b, ", \"new_connection\": ") || put(b, w->newconn_json, (size_t)w->newconn_json_n);
    err |= PUTL(b, ", \"entry\": ");
    err |= p->has_first ? put_ends(b, p, p->first_src, p->first_dst, p->first_sport, p->first_dport, p->first_damaged)
                        : PUTL(b, "null");
    err |= PUTL(b, ", \"exit\": ");
    err |= p->has_last ? put_ends(b, p, p->last_src, p->last_dst, p->last_sport, p->last_dport, p->last_damaged)
                       : PUTL(b, "null");
    err |= PUTL(b, ", \"repaired_lines\": ") || put_int(b, p->repaired);
    if (strcmp(p->f.proto, "ICMP") == 0 || strcmp(p->f.proto, "ICMPV6") == 0)
        err |= PUTL(b, ", \"icmp\": {\"type\": ") || put_opt_int(b, p->f.icmp_type) || PUTL(b, ", \"id\": ") ||
               put_opt_int(b, p->f.icmp_id) || PUTL(b, ", \"seq\": ") || put_opt_int(b, p->f.icmp_seq) || PUTL(b, "}");
    if (p->f.sport != NONE || p->f.dport != NONE)
        err |= PUTL(b, ", \"sport\": ") || put_opt_int(b, p->f.sport) || PUTL(b, ", \"dport\": ") ||
               put_opt_int(b, p->f.dport);
    if (p->f.flags) {
        err |= PUTL(b, ", \"tcp_flags\": [");
        int firstflag = 1;
        for (int i = 0; i < N_TCP_FLAGS; i++)
            if (p->f.flags & (1 << i)) {
                err |= puts_(b, firstflag ? "\"" : ", \"") || puts_(b, TCP_FLAG_NAMES[i]) || PUTL(b, "\"");
                firstflag = 0;
            }
        err |= PUTL(b, "]");
    }
    if (p->f.flow_label != NONE)
        err |= PUTL(b, ", \"flow_label\": ") || put_int(b, p->f.flow_label);
    if (p->n_trace_ids) {
        err |= PUTL(b, ", \"trace_ids\": [");
        for (size_t i = 0; i < p->n_trace_ids; i++)
            err |= (i && PUTL(b, ", ")) || put_jstr(b, p->trace_ids[i], p->trace_id_n[i]);
        err |= PUTL(b, "]");
    }
    return err || PUTL(b, "}");
}

static void add_item(Engine *e, PyObject *item) {
    if (!item || PyList_Append(e->items, item))
        call_failed(e);
    Py_XDECREF(item);
}

/* Analyzer._finish for one packet, then what the output mode keeps of it. */
static void finish_packet(Engine *e, Packet *p) {
    Walk *w = walk_of(e, p);
    if (!w)
        return;
    if (!p->f.proto[0] && w->proto && strlen(w->proto) < sizeof p->f.proto)
        strcpy(p->f.proto, w->proto);
    e->identities[p->identity]++;
    int direction = classify(e, p);
    if (!matches(e, p, w))
        return;
    e->matched++;
    e->repaired += p->repaired;
    if (e->mode != MODE_SUMMARY) /* the one format that prints no flows */
        add_hop(e, p, w, direction);
    int err = 0, taken = 0;
    if (e->mode == MODE_JSON) {
        err = (e->written ? PUTL(&e->out, ",\n  ") : PUTL(&e->out, "\n  ")) ||
              render_packet(e, &e->out, p, w, direction, !e->all_tables, e->out_fd ? &taken : NULL);
        e->written++;
    } else if (e->mode == MODE_TEXT) {
        if (e->kept < TEXT_PACKETS && p->json) {
            Buf b = {0};
            if (render_packet(e, &b, p, w, direction, 0, NULL))
                err = 1;
            else
                add_item(e, Py_BuildValue("(sLy#)", "packet", p->seq, b.p, (Py_ssize_t)b.n));
            free(b.p);
            e->kept++;
        }
        add_row(e, p, w, direction);
    } else if (e->mode == MODE_SUMMARY) {
        add_row(e, p, w, direction);
    } else {
        add_diagram(e, p, w, direction);
    }
    if (e->expect) {
        char protocol[8];
        lower_proto(p->f.proto, protocol);
        add_item(e, Py_BuildValue("(siisiO)", "expect", p->node, direction, protocol, (p->f.flags & 64) != 0, w->result));
    }
    if (taken)
        p->steps = (Buf){0};
    if (err)
        e->failed = 1;
}

static void process_done(Engine *e) {
    for (size_t i = 0; i < e->n_done; i++) {
        if (!e->error)
            finish_packet(e, e->done[i]);
        packet_release(e, e->done[i]);
    }
    e->n_done = 0;
}

/* ---------------------------------------------------------------- lines of each format */

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
        parse_prefix(b->p, at, &host, &e->prefix_time, NULL);
        int node = host.n > 0 && e->from_lines ? node_number(e, host.s, (size_t)host.n) : e->line_node;
        if (node < 0)
            node = e->line_node;
        e->prefix_node = node;
        e->has_prefix = 1;
    }
    *time = e->prefix_time;
    return e->prefix_node;
}

/* What a line's fields text parses to, for FIELD_CACHE recent texts of at most FIELD_TEXT_MAX
 * bytes: the lines of one packet repeat their fields (KernelLineParser.fields caches them
 * too). A slot's Fields point into its copy of the text. The kernel prints MARK= last
 * (nf_log_dump_packet) and Calico's rules change it along a packet's walk: what is cached is
 * the text before a last MARK= token, which is then read on its own, with the same result as
 * parse_fields on the whole text (a text with a '[', where brackets could hold the token, is
 * cached whole). */
#define FIELD_CACHE 256
#define FIELD_TEXT_MAX 480
#define MARK_TEXT_MAX 24
struct FieldSlot {
    size_t hash, n;
    int glued;   /* the text holds another "TRACE: " */
    int bracket; /* the text holds a '[' */
    Fields f;
    char text[FIELD_TEXT_MAX];
};

/* Where s[0:n]'s last token starts when it is a MARK= token (at most MARK_TEXT_MAX bytes to
 * the end), *end where it ends; n when it is not. */
static size_t mark_at(const char *s, size_t n, size_t *end) {
    size_t e = n;
    while (e && is_space(s[e - 1]))
        e--;
    size_t b = e;
    while (b && !is_space(s[b - 1]))
        b--;
    *end = e;
    return n - b <= MARK_TEXT_MAX && e - b >= 5 && memcmp(s + b, "MARK=", 5) == 0 ? b : n;
}

/* The slot holding what s[0:n] parses to, filled now if it did not. */
static struct FieldSlot *field_slot(Caches *c, const char *s, size_t n) {
    size_t hash = hash_bytes(s, n);
    struct FieldSlot *slot = &c->fields[hash & (FIELD_CACHE - 1)];
    if (!(slot->hash == hash && slot->n == n && memcmp(slot->text, s, n) == 0)) {
        memcpy(slot->text, s, n);
        slot->n = n;
        slot->hash = hash;
        parse_fields(slot->text, n, &slot->f);
        slot->glued = find_str(s, n, 0, "TRACE: ", 7) != NULL;
        slot->bracket = memchr(s, '[', n) != NULL;
    }
    return slot;
}

/* f's texts (pointing into `from`) moved to the same places in `to`. */
static void rebase_fields(Fields *f, const char *from, const char *to) {
    Ref *refs[] = {&f->in_if, &f->out_if, &f->mark};
    for (int i = 0; i < 3; i++)
        if (refs[i]->n >= 0)
            refs[i]->s = to + (refs[i]->s - from);
}

/* parse_fields(s, n, f), through the cache (f's texts point into s); returns whether s[0:n]
 * holds another "TRACE: " (then the line is glued). With `repeated`: *repeated tells whether
 * s[0:n] is the text of the last call, and then f is left as it is (the caller has it). */
static int cached_fields(Caches *c, const char *s, size_t n, Fields *f, int *repeated) {
    if (repeated)
        *repeated = 0;
    if (n > FIELD_TEXT_MAX || (!c->fields && !(c->fields = calloc(FIELD_CACHE + 1, sizeof *c->fields)))) {
        if (c->fields) /* the last text is no longer the last call's */
            c->fields[FIELD_CACHE].hash = 0;
        parse_fields(s, n, f);
        return find_str(s, n, 0, "TRACE: ", 7) != NULL;
    }
    struct FieldSlot *last = &c->fields[FIELD_CACHE]; /* the last text (most lines repeat it) and its result; hash 0: none */
    if (last->hash && last->n == n && memcmp(last->text, s, n) == 0) {
        if (repeated)
            *repeated = 1;
    } else {
        size_t end, at = mark_at(s, n, &end);
        struct FieldSlot *slot = field_slot(c, s, at);
        if (at < n && slot->bracket)
            slot = field_slot(c, s, at = n);
        memcpy(last->text, s, n);
        last->n = n;
        last->hash = 1;
        last->glued = slot->glued || (at < n && find_str(s, n, at, "TRACE: ", 7)); /* in the token: then it ends the line */
        last->f = slot->f;
        rebase_fields(&last->f, slot->text, last->text);
        if (at < n)
            last->f.damaged |= !read_mark(last->text + at + 5, end - at - 5, &last->f);
    }
    if (!repeated || !*repeated) {
        *f = last->f;
        rebase_fields(f, last->text, s);
    }
    return last->glued;
}

/* match_header's result for the header text after "TRACE: " (up to the first whitespace,
 * where any header ends), for HEADER_CACHE recent ones of at most HEADER_TEXT_MAX bytes, with
 * the TABLES and HOOKS index of its table and chain. Offsets count from that text's start. */
#define HEADER_CACHE 4096
_Static_assert(HEADER_CACHE == STEP_HEADS, "a header slot's id ends in its index: step_head's slot");
#define HEADER_TEXT_MAX 96
struct HeaderSlot {
    size_t hash, n;
    uint64_t id; /* never the same for two fillings (0: none); modulo HEADER_CACHE: the slot's index */
    int ok, kind, table_index, chain_hook;
    size_t table_at, table_n, chain_at, chain_n, pos_at, pos_n;
    char text[HEADER_TEXT_MAX];
};

/* match_header(line, n, at, h) where line[at:] starts with "TRACE: "; *slot: the cache slot
 * (NULL: not cached). */
static int cached_header(Caches *cache, const char *line, size_t n, size_t at, Header *h, const struct HeaderSlot **slot) {
    size_t t = at + 7, w = space_from(line, n, t);
    size_t len = w - t;
    *slot = NULL;
    if (len > HEADER_TEXT_MAX || (!cache->headers && !(cache->headers = calloc(HEADER_CACHE, sizeof *cache->headers))))
        return match_header(line, n, at, h);
    size_t hash = hash_bytes(line + t, len);
    struct HeaderSlot *c = &cache->headers[hash & (HEADER_CACHE - 1)];
    if (!(c->hash == hash && c->n == len && memcmp(c->text, line + t, len) == 0)) {
        memcpy(c->text, line + t, len);
        c->n = len;
        c->hash = hash;
        c->ok = match_header(line, n, at, h);
        c->id = ++cache->filled * HEADER_CACHE + (uint64_t)(c - cache->headers); /* see step_head */
        if (c->ok) {
            c->kind = h->kind;
            c->table_at = (size_t)(h->table - line) - t, c->table_n = h->table_n;
            c->chain_at = (size_t)(h->chain - line) - t, c->chain_n = h->chain_n;
            c->pos_at = (size_t)(h->pos - line) - t, c->pos_n = h->pos_n;
            c->table_index = find_name(TABLES, N_TABLES, h->table, h->table_n);
            c->chain_hook = find_name(HOOKS, N_HOOKS, h->chain, h->chain_n);
        }
    }
    if (!c->ok)
        return 0;
    const char *b = line + t;
    *h = (Header){b + c->table_at, b + c->chain_at, b + c->pos_at, c->table_n, c->chain_n, c->pos_n, c->kind, at, w};
    *slot = c;
    return 1;
}

static void kernel_record(Engine *e, int node, Ref time, const Header *h, const Fields *f,
                          const struct HeaderSlot *names) {
    Rec r = {node, h->table, h->chain, h->table_n, h->chain_n, h->kind, h->pos, h->pos_n,
             {NULL, -1}, {NULL, -1}, {NULL, -1}, -1, f, {NULL, -1}, -1, time,
             names != NULL, names ? names->table_index : -1, names ? names->chain_hook : -1, 0, 0};
    e->records++;
    feed_record(e, &r);
}

/* reader._kernel_records for one line (valid UTF-8, cut, '\r' stripped); `cut`: it was longer
 * than LINE_LIMIT; `first`: its first "TRACE:" if known. */
static void kernel_line(Engine *e, const char *line, size_t n, int cut, const char *first) {
    if (!first)
        first = find_str(line, n, 0, "TRACE:", 6);
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
    const struct HeaderSlot *names;
    if (first && cached_header(&e->caches, line, n, (size_t)(first - line), &h, &names) &&
        !cached_fields(&e->caches, line + h.end, n - h.end, &f, NULL)) {
        int node = line_origin(e, line, h.start, &time);
        f.damaged |= cut;
        kernel_record(e, node, time, &h, &f, names);
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
    int node = line_origin(e, line, e->headers[0].start, &time);
    Ref glued_host, glued_time;
    int own = -1; /* the form of the line's own prefix (with a host), for glued records */
    if (count > 1)
        parse_prefix(line, e->headers[0].start, &glued_host, &glued_time, &own);
    for (size_t i = 0; i < count && !e->error; i++) {
        Header *hs = e->headers;
        if (i) { /* a record glued on after a syslog prefix of the line's own form: its host and time;
                  * on a line without a host (dmesg's), after an uptime: its time */
            const char *seg = line + hs[i - 1].end;
            size_t len = hs[i].start - hs[i - 1].end, p = before_next_prefix(seg, len), digits, up;
            int kind;
            if (p < len && own >= 0) {
                parse_prefix(seg + p, len - p, &glued_host, &glued_time, &kind);
                if (kind == own)
                    node = line_origin(e, seg + p, len - p, &time);
            } else if (p < len && own < 0 && (up = uptime_at(seg + p, len - p, &digits))) {
                time = (Ref){seg + p + digits, (Py_ssize_t)up};
            }
        }
        if (i + 1 < count) {
            const char *seg = line + hs[i].end;
            size_t len = hs[i + 1].start - hs[i].end;
            parse_fields(seg, before_next_prefix(seg, len), &f);
            f.damaged = 1;
        } else {
            cached_fields(&e->caches, line + hs[i].end, n - hs[i].end, &f, NULL);
            f.damaged |= cut;
        }
        kernel_record(e, node, time, &hs[i], &f, NULL);
    }
}

static const Fields *damaged_fields(void) {
    static Fields unknown;
    static int ready;
    if (!ready) {
        fields_init(&unknown);
        unknown.damaged = 1;
        ready = 1;
    }
    return &unknown;
}

/* Bound a trace-id map: drop its oldest entry past PENDING_TRACE_IDS. */
static void trim(Map *m, int packets) {
    while (m->count > PENDING_TRACE_IDS) {
        Entry *oldest = m->head;
        if (packets)
            nft_packet_free(oldest->value);
        else
            free(oldest->value);
        map_remove(m, oldest);
    }
}

/* reader._carried: into `f` (a trace id's later packet line), when it prints no address, the
 * headers it does not print from `b` (its line before); interfaces and mark belong to the hook
 * and stay f's. Every Fields member but in_if, out_if, mark and damaged (reader._HEADERS). */
static void carry_headers(Fields *f, const Fields *b) {
    if (f->src[0] || f->dst[0])
        return;
    memcpy(f->src, b->src, sizeof f->src);
    memcpy(f->dst, b->dst, sizeof f->dst);
    if (!f->proto[0])
        memcpy(f->proto, b->proto, sizeof f->proto);
    long long *nums[] = {&f->ip_id, &f->ttl, &f->icmp_type, &f->icmp_id, &f->icmp_seq, &f->sport, &f->dport,
                         &f->flow_label, &f->tcp_seq};
    const long long *was[] = {&b->ip_id, &b->ttl, &b->icmp_type, &b->icmp_id, &b->icmp_seq, &b->sport, &b->dport,
                              &b->flow_label, &b->tcp_seq};
    for (size_t k = 0; k < sizeof nums / sizeof *nums; k++)
        if (*nums[k] == NONE)
            *nums[k] = *was[k];
    if (!f->flags)
        f->flags = b->flags;
    f->damaged = f->damaged && b->damaged;
}

/* A packet line: remember its fields for the trace id (NftPacket), and the base chain it opens. */
static void nft_packet_line(Engine *e, const NftLine *l, int cut) {
    NftPacket *np = calloc(1, sizeof *np);
    if (!np) {
        e->failed = 1;
        return;
    }
    int err = e->format == FMT_XT ? xt_packet_fields(l->packet.s, (size_t)l->packet.n, &np->f, &e->words)
                                  : nft_packet_fields(l->packet.s, (size_t)l->packet.n, &np->f, &e->words, &e->scratch);
    size_t in_n = np->f.in_if.n > 0 ? (size_t)np->f.in_if.n : 0, out_n = np->f.out_if.n > 0 ? (size_t)np->f.out_if.n : 0;
    np->text = malloc(in_n + out_n + 1);
    if (err || !np->text) {
        nft_packet_free(np);
        e->failed = 1;
        return;
    }
    Entry *before = map_get(&e->nft_packets, l->trace_id.s, (size_t)l->trace_id.n);
    if (before) /* reader._carried: the headers this line does not print, from the trace id's line before */
        carry_headers(&np->f, &((NftPacket *)before->value)->f);
    if (np->f.in_if.n >= 0) {
        memcpy(np->text, np->f.in_if.s, in_n);
        np->f.in_if.s = np->text;
    }
    if (np->f.out_if.n >= 0) {
        memcpy(np->text + in_n, np->f.out_if.s, out_n);
        np->f.out_if.s = np->text + in_n;
    }
    if (cut)
        np->f.damaged = 1;
    if (l->family >= 0) {
        np->base_table = copy_of(l->table.s, (size_t)l->table.n);
        np->base_chain = copy_of(l->chain.s, (size_t)l->chain.n);
        np->base_table_n = (size_t)l->table.n;
        np->base_chain_n = (size_t)l->chain.n;
        if (!np->base_table || !np->base_chain) {
            nft_packet_free(np);
            e->failed = 1;
            return;
        }
    }
    const char *tid = l->trace_id.s;
    size_t tn = (size_t)l->trace_id.n;
    int added;
    Entry *known = map_put(&e->nft_packets, tid, tn, &added);
    if (!known) {
        nft_packet_free(np);
        e->failed = 1;
        return;
    }
    map_move_to_end(&e->nft_packets, known); /* the trace ids used longest ago go first (trim) */
    if (known->value)
        nft_packet_free(known->value);
    known->value = np;
    Entry *pending = map_get(&e->pending, tid, tn);
    if (pending) {
        free(pending->value);
        map_remove(&e->pending, pending);
    }
    Buf *chain = &e->scratch2;
    chain->n = 0;
    if (np->base_table ? (put(chain, np->base_table, np->base_table_n) || PUTL(chain, " ") ||
                          put(chain, np->base_chain, np->base_chain_n))
                       : PUTL(chain, "a base chain")) {
        e->failed = 1;
        return;
    }
    pending = map_put(&e->pending, tid, tn, &added);
    if (!pending || !(pending->value = copy_of(chain->p, chain->n))) {
        e->failed = 1;
        return;
    }
    pending->number = (long long)chain->n;
    trim(&e->nft_packets, 1);
    trim(&e->pending, 0);
}

/* reader._nft_events for one line. */
static void nft_line(Engine *e, const char *line, size_t n, int cut) {
    NftLine l;
    int parsed = e->format == FMT_XT ? parse_xt(line, n, &l) : parse_nft(line, n, &l);
    if (parsed != 1) { /* 2: conntrack, the connection's state: no step */
        if (parsed)
            e->ignored++;
        else
            e->skipped++;
        return;
    }
    if (l.kind < 0) {
        nft_packet_line(e, &l, cut);
        return;
    }
    e->records++;
    const char *tid = l.trace_id.s;
    size_t tn = (size_t)l.trace_id.n;
    Entry *known = map_get(&e->nft_packets, tid, tn);
    NftPacket *np = known ? known->value : NULL;
    if (known)
        map_move_to_end(&e->nft_packets, known);
    Fields copy;
    const Fields *f = np ? &np->f : damaged_fields();
    if (cut && !f->damaged) {
        copy = *f;
        copy.damaged = 1;
        f = &copy;
    }
    Entry *pending = map_get(&e->pending, tid, tn);
    int base = -1;
    if (np && np->base_table && pending && np->base_table_n == (size_t)l.table.n && np->base_chain_n == (size_t)l.chain.n &&
        memcmp(np->base_table, l.table.s, np->base_table_n) == 0 && memcmp(np->base_chain, l.chain.s, np->base_chain_n) == 0)
        base = (f->in_if.n >= 0) | ((f->out_if.n >= 0) << 1);
    if (pending) {
        free(pending->value);
        map_remove(&e->pending, pending);
    }
    Rec r = {e->line_node, l.table.s, l.chain.s, (size_t)l.table.n, (size_t)l.chain.n, l.kind, NULL, 0,
             l.handle, {NULL, -1}, l.rule, l.family, f, l.trace_id, base, {NULL, -1}, 0, -1, -1, 0, 0};
    Buf *verdict = &e->verdict;
    verdict->n = 0;
    if (e->format == FMT_XT) {
        if (l.verdict.n > 0) { /* VERDICT[:target] */
            if (put(verdict, l.verdict.s, (size_t)l.verdict.n) ||
                (l.target.n > 0 && (PUTL(verdict, ":") || put(verdict, l.target.s, (size_t)l.target.n)))) {
                e->failed = 1;
                return;
            }
            r.verdict = (Ref){verdict->p, (Py_ssize_t)verdict->n};
        }
        if (r.rule.n >= 0) { /* IPTABLES_PREFIX `-4 -t TABLE ` goes */
            const char *s = r.rule.s;
            size_t rn = (size_t)r.rule.n;
            if (rn > 6 && s[0] == '-' && (s[1] == '4' || s[1] == '6') && memcmp(s + 2, " -t ", 4) == 0) {
                size_t t = nonspace_end(s, rn, 6);
                if (t > 6 && t < rn && s[t] == ' ')
                    r.rule = (Ref){s + t + 1, (Py_ssize_t)(rn - t - 1)};
            }
            if (r.rule.n == 0)
                r.rule.n = -1;
        }
    } else if (!upper_keyword(verdict, l.verdict, &r.verdict)) {
        e->failed = 1;
        return;
    }
    feed_record(e, &r);
}

/* reader.marked_lines + the format's reader for one whole line of the input (already cut). */
static void feed_line(Engine *e, const char *raw, size_t n, int cut) {
    e->lines++;
    e->line_no++;
    e->cut_lines += cut;
    while (n && raw[n - 1] == '\r')
        n--;
    /* a kernel log's lines count only with "TRACE:" (kernel_line ignores the others) */
    const char *first = find_str(raw, n, 0, "TRACE:", 6);
    if (!(first || (e->format != FMT_KERNEL && (find_str(raw, n, 0, "trace id", 8) || find_str(raw, n, 0, "PACKET:", 7))))) {
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
        first = NULL; /* moved */
    }
    if (e->format == FMT_KERNEL)
        kernel_line(e, raw, n, cut, first);
    else
        nft_line(e, raw, n, cut);
}

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

/* Lines of data[pos:n]; the last line without '\n' is carried. */
static void feed_lines(Engine *e, const char *data, size_t n, size_t pos) {
    while (pos < n && !e->error && !e->failed) {
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
            return;
        }
        size_t end = (size_t)(nl - data), len = end - pos;
        feed_line(e, data + pos, len > LINE_LIMIT ? LINE_LIMIT : len, len > LINE_LIMIT);
        pos = end + 1;
    }
}

/* ---------------------------------------------------------------- the parser thread */

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
    int common = first && fa + 6 < m && first[6] == ' ' && !has_high_bytes((const unsigned char *)line, m) &&
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

/* ---------------------------------------------------------------- Python interface */

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
    return Py_BuildValue("{sLsLsLsLsLsLsLsLs(LLL)sLsN}", "lines", e->lines, "ignored_lines", e->ignored, "skipped_lines",
                         e->skipped, "trace_records", e->records, "unattributed", e->unattributed, "cut_lines",
                         e->cut_lines, "matched", e->matched, "repaired", e->repaired, "identities", e->identities[0],
                         e->identities[1], e->identities[2], "other", e->other, "nodes", order);
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
    /* SOURCE: the SHA-256 of the _engine.c this was built from (setup.py), for native.py to
     * refuse a build that a failed compile of a newer _engine.c left in place */
    if (!WriteError || PyModule_AddStringConstant(m, "SOURCE", ENGINE_SOURCE) < 0 ||
        PyModule_AddIntMacro(m, WALK_CACHE) < 0 || PyModule_AddIntMacro(m, STEP_CACHE) < 0 ||
        PyModule_AddObjectRef(m, "WriteError", WriteError) < 0 ||
        PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
