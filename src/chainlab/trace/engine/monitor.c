/* chainlab.trace._engine, xtables-monitor and nft monitor: included by _engine.c, in its order (uses what the parts
 * before it define). */

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
