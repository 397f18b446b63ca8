/* chainlab.trace._engine, fields of a line: included by _engine.c, in its order (uses what the parts
 * before it define). */

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

/* `FRAG:N`, the fragment offset the kernel prints for a fragment after the first (which has
 * no layer-4 header, so no ports) */
static int frag_offset(const char *t, size_t len) {
    if (len < 6 || memcmp(t, "FRAG:", 5) != 0)
        return 0;
    for (size_t i = 5; i < len; i++)
        if (t[i] < '0' || t[i] > '9')
            return 0;
    return 1;
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
                     !name_is(t, len, "OPT") && !(t[0] == '(' && t[len - 1] == ')') && !frag_offset(t, len))
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
