/* GBNF text -> compiled rules (server/grammar-impl.h): a recursive-descent parser in llama.cpp's
 * grammar-parser shape (repetitions and groups become generated rules), then the checks a
 * client's grammar needs: every rule defined once, the start rule present, no left recursion,
 * and bounds on size and nesting. Also the debugging dump and the random-sentence generator
 * tests and fuzz targets use. */
#include "server/grammar-impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hs_grammar_limits hs_grammar_default_limits(void)
{
    return (struct hs_grammar_limits){
        .max_text_bytes = (size_t)1 << 20,
        .max_rules = 65536,
        .max_elements = 1 << 20,
        .max_repeat = 10000,
        .max_nesting = 128,
    };
}

size_t hs__utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    if (n == 0) {
        return 0;
    }
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (b >= 0xC2 && b <= 0xDF) {
        len = 2, v = b & 0x1Fu, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
        len = 3, v = b & 0x0Fu, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4, v = b & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        v = v << 6 | (s[i] & 0x3Fu);
    }
    if (v < min || v > HS__CP_MAX || (v >= 0xD800 && v <= 0xDFFF)) {
        return 0;
    }
    *cp = v;
    return len;
}

/* ---- character classes ---- */

bool hs__gclass_match(const struct hs_grammar *g, uint32_t class_id, uint32_t cp)
{
    const struct hs__gclass *c = &g->classes[class_id];
    const uint32_t *r = g->ranges + 2 * (size_t)c->first_range;
    uint32_t lo = 0, hi = c->n_ranges;
    while (lo < hi) { /* first range with r.hi >= cp */
        uint32_t mid = lo + (hi - lo) / 2;
        if (r[2 * mid + 1] < cp) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    bool in = lo < c->n_ranges && r[2 * lo] <= cp;
    return in != c->negated;
}

bool hs__gclass_match_range(const struct hs_grammar *g, uint32_t class_id, uint32_t lo, uint32_t hi)
{
    const struct hs__gclass *c = &g->classes[class_id];
    const uint32_t *r = g->ranges + 2 * (size_t)c->first_range;
    if (!c->negated) {
        for (uint32_t i = 0; i < c->n_ranges; i++) {
            if (r[2 * i] <= hi && r[2 * i + 1] >= lo) {
                return true;
            }
        }
        return false;
    }
    /* Negated: some code point of [lo, hi] is outside every range (ranges sorted, disjoint). */
    uint32_t next = lo;
    for (uint32_t i = 0; i < c->n_ranges && next <= hi; i++) {
        if (r[2 * i + 1] < next) {
            continue;
        }
        if (r[2 * i] > next) {
            return true;
        }
        if (r[2 * i + 1] >= hi) {
            return false;
        }
        next = r[2 * i + 1] + 1;
    }
    return next <= hi;
}

bool hs__gclass_covers(const struct hs_grammar *g, uint32_t class_id, uint32_t lo, uint32_t hi)
{
    const struct hs__gclass *c = &g->classes[class_id];
    const uint32_t *r = g->ranges + 2 * (size_t)c->first_range;
    if (c->negated) {
        for (uint32_t i = 0; i < c->n_ranges; i++) {
            if (r[2 * i] <= hi && r[2 * i + 1] >= lo) {
                return false;
            }
        }
        return true;
    }
    for (uint32_t i = 0; i < c->n_ranges; i++) { /* merged ranges: one must hold it all */
        if (r[2 * i] <= lo && r[2 * i + 1] >= hi) {
            return true;
        }
    }
    return false;
}

/* ---- the parser ---- */

struct ebuf {
    struct hs__gelem *e;
    size_t n, cap;
};

struct rule_info {
    bool defined;
    bool generated;
    size_t def_off; /* where the definition starts (user rules) */
    size_t ref_off; /* first reference, for "undefined rule" */
    bool referenced;
};

struct parser {
    const char *src;
    size_t len;
    size_t pos;
    struct hs_grammar_limits lim;
    struct hs_error *err;
    hs_status st;
    int depth;
    uint32_t n_generated;

    struct hs_grammar *g;
    size_t cap_elems, cap_alts, cap_rules, cap_classes, cap_ranges, cap_names;
    struct rule_info *info;
    size_t cap_info;
    int32_t *sym; /* user rule names -> id; open addressing, -1 empty */
    size_t cap_sym;
    size_t n_sym;
    int32_t *cls; /* class interning; -1 empty */
    size_t cap_cls;
};

static void line_col(const char *src, size_t off, uint32_t *line, uint32_t *col)
{
    uint32_t l = 1, c = 1;
    for (size_t i = 0; i < off; i++) {
        if (src[i] == '\n') {
            l++;
            c = 1;
        } else if (((uint8_t)src[i] & 0xC0) != 0x80) {
            c++; /* columns count characters, not bytes */
        }
    }
    *line = l;
    *col = c;
}

static bool fail_at(struct parser *p, hs_status st, size_t off, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static bool fail_at(struct parser *p, hs_status st, size_t off, const char *fmt, ...)
{
    if (p->st != HS_OK) {
        return false; /* keep the first error */
    }
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint32_t line, col;
    line_col(p->src, off, &line, &col);
    p->st = st;
    if (p->err) {
        hs_error_set(p->err, st, "%u:%u: %s", line, col, msg);
        p->err->offset = (int64_t)off;
    }
    return false;
}

static bool nomem(struct parser *p)
{
    if (p->st == HS_OK) {
        p->st = HS_E_NOMEM;
        hs_error_set(p->err, HS_E_NOMEM, "out of memory compiling the grammar");
    }
    return false;
}

static int peek(const struct parser *p)
{
    return p->pos < p->len ? (uint8_t)p->src[p->pos] : -1;
}

static int peek_at(const struct parser *p, size_t k)
{
    return p->pos + k < p->len ? (uint8_t)p->src[p->pos + k] : -1;
}

static bool is_word_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static void skip_space(struct parser *p, bool newline_ok)
{
    for (;;) {
        int c = peek(p);
        if (c == ' ' || c == '\t') {
            p->pos++;
        } else if (c == '#') {
            while (p->pos < p->len && p->src[p->pos] != '\n' && p->src[p->pos] != '\r') {
                p->pos++;
            }
        } else if (newline_ok && (c == '\n' || c == '\r')) {
            p->pos++;
        } else {
            return;
        }
    }
}

static uint64_t hash_bytes(const void *data, size_t n)
{
    const uint8_t *b = data;
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3u;
    }
    return h ^ (h >> 29);
}

/* ---- building the grammar ---- */

static bool add_name(struct parser *p, const char *s, size_t n, uint32_t *off)
{
    struct hs_grammar *g = p->g;
    size_t need = (size_t)g->n_names_bytes + n + 1;
    if (need > UINT32_MAX || !hs__grow((void **)&g->names, &p->cap_names, need, 1)) {
        return nomem(p);
    }
    *off = g->n_names_bytes;
    memcpy(g->names + *off, s, n);
    g->names[*off + n] = '\0';
    g->n_names_bytes = (uint32_t)need;
    return true;
}

static bool new_rule(struct parser *p, const char *name, size_t n, uint32_t origin, bool generated,
                     size_t off, uint32_t *id)
{
    struct hs_grammar *g = p->g;
    if ((int64_t)g->n_rules >= p->lim.max_rules) {
        return fail_at(p, HS_E_RANGE, off, "more than %d rules (the limit)", (int)p->lim.max_rules);
    }
    if (!hs__grow((void **)&g->rules, &p->cap_rules, g->n_rules + 1, sizeof(*g->rules)) ||
        !hs__grow((void **)&p->info, &p->cap_info, g->n_rules + 1, sizeof(*p->info))) {
        return nomem(p);
    }
    uint32_t r = g->n_rules;
    struct hs__grule *rule = &g->rules[r];
    memset(rule, 0, sizeof(*rule));
    memset(&p->info[r], 0, sizeof(p->info[r]));
    if (!add_name(p, name, n, &rule->name)) {
        return false;
    }
    rule->origin = generated ? origin : r;
    p->info[r].generated = generated;
    g->n_rules++;
    *id = r;
    return true;
}

static bool sym_grow(struct parser *p)
{
    size_t cap = p->cap_sym ? p->cap_sym * 2 : 64;
    int32_t *t = malloc(cap * sizeof(*t));
    if (!t) {
        return nomem(p);
    }
    memset(t, 0xFF, cap * sizeof(*t));
    for (size_t i = 0; i < p->cap_sym; i++) {
        int32_t r = p->sym[i];
        if (r < 0) {
            continue;
        }
        const char *nm = p->g->names + p->g->rules[r].name;
        size_t h = (size_t)hash_bytes(nm, strlen(nm)) & (cap - 1);
        while (t[h] >= 0) {
            h = (h + 1) & (cap - 1);
        }
        t[h] = r;
    }
    free(p->sym);
    p->sym = t;
    p->cap_sym = cap;
    return true;
}

/* The id of the user rule called s[0..n), created (undefined) on first use. */
static bool lookup_rule(struct parser *p, const char *s, size_t n, size_t off, uint32_t *id)
{
    if ((p->n_sym + 1) * 2 > p->cap_sym && !sym_grow(p)) {
        return false;
    }
    size_t h = (size_t)hash_bytes(s, n) & (p->cap_sym - 1);
    while (p->sym[h] >= 0) {
        const char *nm = p->g->names + p->g->rules[p->sym[h]].name;
        if (strlen(nm) == n && memcmp(nm, s, n) == 0) {
            *id = (uint32_t)p->sym[h];
            return true;
        }
        h = (h + 1) & (p->cap_sym - 1);
    }
    if (!new_rule(p, s, n, 0, false, off, id)) {
        return false;
    }
    p->sym[h] = (int32_t)*id;
    p->n_sym++;
    return true;
}

static bool generated_rule(struct parser *p, uint32_t parent, size_t off, uint32_t *id)
{
    const struct hs__grule *pr = &p->g->rules[parent];
    uint32_t origin = pr->origin;
    char name[96];
    int n = snprintf(name, sizeof(name), "%.60s_%u", p->g->names + p->g->rules[origin].name,
                     (unsigned)++p->n_generated);
    return new_rule(p, name, (size_t)n, origin, true, off, id);
}

/* Interns a class over ranges r[0..2n) (sorted and merged here). */
static bool intern_class(struct parser *p, uint32_t *r, size_t n, bool negated, uint32_t *id)
{
    struct hs_grammar *g = p->g;
    /* insertion sort by lo (classes are short), then merge overlapping or adjacent ranges */
    for (size_t i = 1; i < n; i++) {
        uint32_t lo = r[2 * i], hi = r[2 * i + 1];
        size_t j = i;
        while (j > 0 && r[2 * (j - 1)] > lo) {
            r[2 * j] = r[2 * (j - 1)];
            r[2 * j + 1] = r[2 * (j - 1) + 1];
            j--;
        }
        r[2 * j] = lo;
        r[2 * j + 1] = hi;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && r[2 * i] <= r[2 * (m - 1) + 1] + 1) {
            if (r[2 * i + 1] > r[2 * (m - 1) + 1]) {
                r[2 * (m - 1) + 1] = r[2 * i + 1];
            }
        } else {
            r[2 * m] = r[2 * i];
            r[2 * m + 1] = r[2 * i + 1];
            m++;
        }
    }
    uint64_t h = hash_bytes(r, m * 2 * sizeof(*r)) ^ (negated ? 0x9e3779b97f4a7c15u : 0);
    if ((g->n_classes + 1) * 2 > p->cap_cls) {
        size_t cap = p->cap_cls ? p->cap_cls * 2 : 64;
        int32_t *t = malloc(cap * sizeof(*t));
        if (!t) {
            return nomem(p);
        }
        memset(t, 0xFF, cap * sizeof(*t));
        for (uint32_t c = 0; c < g->n_classes; c++) {
            const struct hs__gclass *k = &g->classes[c];
            uint64_t hc = hash_bytes(g->ranges + 2 * (size_t)k->first_range,
                                     (size_t)k->n_ranges * 2 * sizeof(uint32_t)) ^
                          (k->negated ? 0x9e3779b97f4a7c15u : 0);
            size_t s = (size_t)hc & (cap - 1);
            while (t[s] >= 0) {
                s = (s + 1) & (cap - 1);
            }
            t[s] = (int32_t)c;
        }
        free(p->cls);
        p->cls = t;
        p->cap_cls = cap;
    }
    size_t s = (size_t)h & (p->cap_cls - 1);
    while (p->cls[s] >= 0) {
        const struct hs__gclass *k = &g->classes[p->cls[s]];
        if (k->negated == negated && k->n_ranges == m &&
            memcmp(g->ranges + 2 * (size_t)k->first_range, r, m * 2 * sizeof(*r)) == 0) {
            *id = (uint32_t)p->cls[s];
            return true;
        }
        s = (s + 1) & (p->cap_cls - 1);
    }
    if (!hs__grow((void **)&g->classes, &p->cap_classes, g->n_classes + 1, sizeof(*g->classes)) ||
        !hs__grow((void **)&g->ranges, &p->cap_ranges, 2 * ((size_t)g->n_ranges + m),
                  sizeof(*g->ranges))) {
        return nomem(p);
    }
    memcpy(g->ranges + 2 * (size_t)g->n_ranges, r, m * 2 * sizeof(*r));
    g->classes[g->n_classes] = (struct hs__gclass){
        .first_range = g->n_ranges, .n_ranges = (uint32_t)m, .negated = negated};
    g->n_ranges += (uint32_t)m;
    p->cls[s] = (int32_t)g->n_classes;
    *id = g->n_classes++;
    return true;
}

static bool ebuf_push(struct parser *p, struct ebuf *b, uint32_t type, uint32_t value, size_t off)
{
    if (b->n + p->g->n_elems >= (size_t)p->lim.max_elements) {
        return fail_at(p, HS_E_RANGE, off,
                       "the grammar compiles to more than %d elements "
                       "(the limit)",
                       (int)p->lim.max_elements);
    }
    if (!hs__grow((void **)&b->e, &b->cap, b->n + 1, sizeof(*b->e))) {
        return nomem(p);
    }
    b->e[b->n++] = (struct hs__gelem){type, value};
    return true;
}

static bool ebuf_append(struct parser *p, struct ebuf *b, const struct hs__gelem *e, size_t n,
                        size_t off)
{
    for (size_t i = 0; i < n; i++) {
        if (!ebuf_push(p, b, e[i].type, e[i].value, off)) {
            return false;
        }
    }
    return true;
}

/* Gives rule r the alternatives in b (each ended by END). */
static bool commit_rule(struct parser *p, uint32_t r, const struct ebuf *b, size_t off)
{
    struct hs_grammar *g = p->g;
    size_t n_alts = 0;
    for (size_t i = 0; i < b->n; i++) {
        n_alts += b->e[i].type == HS__GE_END;
    }
    if ((size_t)g->n_elems + b->n > (size_t)p->lim.max_elements) {
        return fail_at(p, HS_E_RANGE, off,
                       "the grammar compiles to more than %d elements "
                       "(the limit)",
                       (int)p->lim.max_elements);
    }
    if (!hs__grow((void **)&g->elems, &p->cap_elems, g->n_elems + b->n, sizeof(*g->elems)) ||
        !hs__grow((void **)&g->alts, &p->cap_alts, g->n_alts + n_alts, sizeof(*g->alts))) {
        return nomem(p);
    }
    g->rules[r].first_alt = g->n_alts;
    g->rules[r].n_alts = (uint32_t)n_alts;
    bool start = true;
    for (size_t i = 0; i < b->n; i++) {
        if (start) {
            g->alts[g->n_alts++] = g->n_elems;
        }
        g->elems[g->n_elems++] = b->e[i];
        start = b->e[i].type == HS__GE_END;
    }
    return true;
}

/* ---- repetitions ---- */

/* A new rule `R ::= sym R | ` (star) and the REF to it in *out. */
static bool star_rule(struct parser *p, uint32_t parent, const struct hs__gelem *sym, size_t n,
                      size_t off, struct hs__gelem *out)
{
    uint32_t r;
    if (!generated_rule(p, parent, off, &r)) {
        return false;
    }
    struct ebuf t = {0};
    bool ok = ebuf_append(p, &t, sym, n, off) && ebuf_push(p, &t, HS__GE_REF, r, off) &&
              ebuf_push(p, &t, HS__GE_END, 0, off) && ebuf_push(p, &t, HS__GE_END, 0, off) &&
              commit_rule(p, r, &t, off);
    free(t.e);
    *out = (struct hs__gelem){HS__GE_REF, r};
    return ok;
}

/* A new rule `R ::= sym next | ` (next absent: `R ::= sym | `). */
static bool opt_rule(struct parser *p, uint32_t parent, const struct hs__gelem *sym, size_t n,
                     const struct hs__gelem *next, size_t off, struct hs__gelem *out)
{
    uint32_t r;
    if (!generated_rule(p, parent, off, &r)) {
        return false;
    }
    struct ebuf t = {0};
    bool ok = ebuf_append(p, &t, sym, n, off) &&
              (!next || ebuf_push(p, &t, next->type, next->value, off)) &&
              ebuf_push(p, &t, HS__GE_END, 0, off) && ebuf_push(p, &t, HS__GE_END, 0, off) &&
              commit_rule(p, r, &t, off);
    free(t.e);
    *out = (struct hs__gelem){HS__GE_REF, r};
    return ok;
}

/* Replaces b->e[start..n) (the last item) by its repetition {min, max} (max < 0: unbounded). */
static bool repeat(struct parser *p, uint32_t rule, struct ebuf *b, size_t start, int64_t min,
                   int64_t max, size_t off)
{
    size_t n = b->n - start;
    if (n == 0) {
        return true; /* repeating "" is "" */
    }
    struct hs__gelem *sym = malloc(n * sizeof(*sym));
    if (!sym) {
        return nomem(p);
    }
    memcpy(sym, b->e + start, n * sizeof(*sym));
    b->n = start;
    bool ok = true;
    for (int64_t i = 0; ok && i < min; i++) {
        ok = ebuf_append(p, b, sym, n, off);
    }
    struct hs__gelem tail;
    if (ok && max < 0) {
        ok = star_rule(p, rule, sym, n, off, &tail) && ebuf_push(p, b, tail.type, tail.value, off);
    } else if (ok && max > min) {
        /* x{0,k} as nested optionals: R1 ::= x | ;  Rj ::= x R(j-1) | */
        ok = opt_rule(p, rule, sym, n, NULL, off, &tail);
        for (int64_t j = 1; ok && j < max - min; j++) {
            struct hs__gelem inner = tail;
            ok = opt_rule(p, rule, sym, n, &inner, off, &tail);
        }
        ok = ok && ebuf_push(p, b, tail.type, tail.value, off);
    }
    free(sym);
    return ok;
}

/* ---- items ---- */

/* One character of a literal or class, escapes decoded. */
static bool parse_char(struct parser *p, uint32_t *cp)
{
    size_t at = p->pos;
    int c = peek(p);
    if (c < 0) {
        return fail_at(p, HS_E_FORMAT, at, "unexpected end of the grammar");
    }
    if (c != '\\') {
        size_t k = hs__utf8_next((const uint8_t *)p->src + p->pos, p->len - p->pos, cp);
        if (k == 0) {
            return fail_at(p, HS_E_FORMAT, at, "invalid UTF-8");
        }
        p->pos += k;
        return true;
    }
    int e = peek_at(p, 1);
    p->pos += 2;
    int digits = 0;
    switch (e) {
    case 'n':
        *cp = '\n';
        return true;
    case 'r':
        *cp = '\r';
        return true;
    case 't':
        *cp = '\t';
        return true;
    case '\\':
    case '"':
    case '[':
    case ']':
    case '-':
        *cp = (uint32_t)e;
        return true;
    case 'x':
        digits = 2;
        break;
    case 'u':
        digits = 4;
        break;
    case 'U':
        digits = 8;
        break;
    default:
        if (e < 0) {
            return fail_at(p, HS_E_FORMAT, at, "unexpected end of the grammar after '\\'");
        }
        return fail_at(p, HS_E_FORMAT, at,
                       "unknown escape '\\%c' (expected one of \\n \\r \\t \\\\ \\\" \\[ \\] "
                       "\\- \\x \\u \\U)",
                       e >= 0x20 && e < 0x7F ? e : '?');
    }
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int h = hs_hex_digit(peek(p));
        if (h < 0) {
            return fail_at(p, HS_E_FORMAT, p->pos, "expected %d hex digits after '\\%c'", digits,
                           e);
        }
        v = v << 4 | (uint32_t)h;
        p->pos++;
    }
    if (v > HS__CP_MAX) {
        return fail_at(p, HS_E_FORMAT, at, "code point U+%X is past U+10FFFF", (unsigned)v);
    }
    *cp = v;
    return true;
}

static bool parse_literal(struct parser *p, struct ebuf *b)
{
    size_t open = p->pos++;
    for (;;) {
        int c = peek(p);
        if (c == '"') {
            p->pos++;
            return true;
        }
        if (c < 0 || c == '\n' || c == '\r') {
            return fail_at(p, HS_E_FORMAT, open, "unterminated string literal");
        }
        uint32_t cp, id;
        uint32_t r[2];
        if (!parse_char(p, &cp)) {
            return false;
        }
        r[0] = r[1] = cp;
        if (!intern_class(p, r, 1, false, &id) || !ebuf_push(p, b, HS__GE_CLASS, id, open)) {
            return false;
        }
    }
}

static bool parse_class(struct parser *p, struct ebuf *b)
{
    size_t open = p->pos++;
    bool negated = false;
    if (peek(p) == '^') {
        negated = true;
        p->pos++;
    }
    uint32_t *r = NULL;
    size_t n = 0, cap = 0;
    bool ok = true;
    for (;;) {
        int c = peek(p);
        if (c == ']') {
            p->pos++;
            break;
        }
        if (c < 0 || c == '\n' || c == '\r') {
            ok = fail_at(p, HS_E_FORMAT, open, "unterminated character class (expected ']')");
            break;
        }
        uint32_t lo, hi;
        size_t at = p->pos;
        if (!parse_char(p, &lo)) {
            ok = false;
            break;
        }
        hi = lo;
        if (peek(p) == '-' && peek_at(p, 1) != ']' && peek_at(p, 1) >= 0) {
            p->pos++;
            if (!parse_char(p, &hi)) {
                ok = false;
                break;
            }
            if (hi < lo) {
                ok = fail_at(p, HS_E_FORMAT, at, "character range is backwards (U+%04X-U+%04X)",
                             (unsigned)lo, (unsigned)hi);
                break;
            }
        }
        if (!hs__grow((void **)&r, &cap, 2 * (n + 1), sizeof(*r))) {
            ok = nomem(p);
            break;
        }
        r[2 * n] = lo;
        r[2 * n + 1] = hi;
        n++;
    }
    if (ok && n == 0) {
        ok = fail_at(p, HS_E_FORMAT, open, "empty character class");
    }
    uint32_t id;
    ok = ok && intern_class(p, r, n, negated, &id) && ebuf_push(p, b, HS__GE_CLASS, id, open);
    free(r);
    return ok;
}

static bool parse_alternates(struct parser *p, uint32_t rule, bool nested);

/* A decimal count inside braces, at most max_repeat. */
static bool parse_count(struct parser *p, int64_t *v)
{
    size_t at = p->pos;
    int c = peek(p);
    if (c < '0' || c > '9') {
        return fail_at(p, HS_E_FORMAT, at, "expected a number in the repetition braces");
    }
    int64_t x = 0;
    while ((c = peek(p)) >= '0' && c <= '9') {
        x = x * 10 + (c - '0');
        if (x > p->lim.max_repeat) {
            return fail_at(p, HS_E_RANGE, at, "repetition count above %d (the limit)",
                           (int)p->lim.max_repeat);
        }
        p->pos++;
    }
    *v = x;
    return true;
}

static bool parse_braces(struct parser *p, int64_t *min, int64_t *max)
{
    size_t open = p->pos++;
    skip_space(p, false);
    if (!parse_count(p, min)) {
        return false;
    }
    skip_space(p, false);
    *max = *min;
    if (peek(p) == ',') {
        p->pos++;
        skip_space(p, false);
        *max = -1;
        if (peek(p) != '}' && !parse_count(p, max)) {
            return false;
        }
        skip_space(p, false);
    }
    if (peek(p) != '}') {
        return fail_at(p, HS_E_FORMAT, p->pos,
                       "expected '}' to close the repetition opened at "
                       "byte %zu",
                       open);
    }
    p->pos++;
    if (*max >= 0 && *max < *min) {
        return fail_at(p, HS_E_FORMAT, open, "repetition {%lld,%lld} has max < min",
                       (long long)*min, (long long)*max);
    }
    return true;
}

static bool parse_sequence(struct parser *p, uint32_t rule, struct ebuf *b, bool nested)
{
    size_t last = b->n;
    bool have = false;
    for (;;) {
        int c = peek(p);
        size_t at = p->pos;
        if (c == '"') {
            last = b->n;
            have = true;
            if (!parse_literal(p, b)) {
                return false;
            }
        } else if (c == '[') {
            last = b->n;
            have = true;
            if (!parse_class(p, b)) {
                return false;
            }
        } else if (c == '.') {
            p->pos++;
            last = b->n;
            have = true;
            uint32_t r[2] = {0, HS__CP_MAX}, id;
            if (!intern_class(p, r, 1, false, &id) || !ebuf_push(p, b, HS__GE_CLASS, id, at)) {
                return false;
            }
        } else if (is_word_char(c)) {
            size_t n = 0;
            while (is_word_char(peek_at(p, n))) {
                n++;
            }
            uint32_t r;
            if (!lookup_rule(p, p->src + at, n, at, &r)) {
                return false;
            }
            if (!p->info[r].referenced) {
                p->info[r].referenced = true;
                p->info[r].ref_off = at;
            }
            p->pos += n;
            last = b->n;
            have = true;
            if (!ebuf_push(p, b, HS__GE_REF, r, at)) {
                return false;
            }
        } else if (c == '(') {
            if (p->depth >= p->lim.max_nesting) {
                return fail_at(p, HS_E_RANGE, at, "parentheses nested deeper than %d (the limit)",
                               (int)p->lim.max_nesting);
            }
            p->pos++;
            skip_space(p, true);
            uint32_t r;
            if (!generated_rule(p, rule, at, &r)) {
                return false;
            }
            p->depth++;
            bool ok = parse_alternates(p, r, true);
            p->depth--;
            if (!ok) {
                return false;
            }
            if (peek(p) != ')') {
                uint32_t line, col;
                line_col(p->src, at, &line, &col);
                return fail_at(p, HS_E_FORMAT, p->pos,
                               "expected ')' to close the group opened at %u:%u", line, col);
            }
            p->pos++;
            last = b->n;
            have = true;
            if (!ebuf_push(p, b, HS__GE_REF, r, at)) {
                return false;
            }
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (!have) {
                return fail_at(p, HS_E_FORMAT, at, "expected an item before '%c'", c);
            }
            int64_t min, max;
            if (c == '{') {
                if (!parse_braces(p, &min, &max)) {
                    return false;
                }
            } else {
                p->pos++;
                min = c == '+' ? 1 : 0;
                max = c == '?' ? 1 : -1;
            }
            if (!repeat(p, rule, b, last, min, max, at)) {
                return false;
            }
        } else {
            return ebuf_push(p, b, HS__GE_END, 0, at);
        }
        skip_space(p, nested);
    }
}

static bool parse_alternates(struct parser *p, uint32_t rule, bool nested)
{
    struct ebuf b = {0};
    size_t at = p->pos;
    bool ok = parse_sequence(p, rule, &b, nested);
    while (ok && peek(p) == '|') {
        p->pos++;
        skip_space(p, true);
        ok = parse_sequence(p, rule, &b, nested);
    }
    ok = ok && commit_rule(p, rule, &b, at);
    free(b.e);
    return ok;
}

static bool parse_rule(struct parser *p)
{
    size_t at = p->pos;
    size_t n = 0;
    while (is_word_char(peek_at(p, n))) {
        n++;
    }
    if (n == 0) {
        int c = peek(p);
        return fail_at(p, HS_E_FORMAT, at, "expected a rule name, got %s%c%s",
                       c >= 0x20 && c < 0x7F ? "'" : "", c >= 0x20 && c < 0x7F ? c : '?',
                       c >= 0x20 && c < 0x7F ? "'" : " (a non-ASCII or control character)");
    }
    uint32_t r;
    if (!lookup_rule(p, p->src + at, n, at, &r)) {
        return false;
    }
    p->pos += n;
    skip_space(p, false);
    if (!(peek(p) == ':' && peek_at(p, 1) == ':' && peek_at(p, 2) == '=')) {
        return fail_at(p, HS_E_FORMAT, p->pos, "expected '::=' after rule name '%.*s'", (int)n,
                       p->src + at);
    }
    if (p->info[r].defined) {
        uint32_t line, col;
        line_col(p->src, p->info[r].def_off, &line, &col);
        return fail_at(p, HS_E_FORMAT, at, "rule '%.*s' is defined twice (first at %u:%u)", (int)n,
                       p->src + at, line, col);
    }
    p->info[r].defined = true;
    p->info[r].def_off = at;
    p->pos += 3;
    skip_space(p, true);
    if (!parse_alternates(p, r, false)) {
        return false;
    }
    int c = peek(p);
    if (c == '\r' || c == '\n' || c < 0) {
        skip_space(p, true);
        return true;
    }
    if (c == ')') {
        return fail_at(p, HS_E_FORMAT, p->pos, "unexpected ')' with no group open");
    }
    return fail_at(p, HS_E_FORMAT, p->pos, "expected an item, '|' or the end of the line");
}

/* ---- checks after parsing ---- */

/* Marks the rules that derive the empty string, in time linear in the grammar: each
 * alternative counts its elements not yet known nullable (a class never is); a rule found
 * nullable lowers the count of every alternative that mentions it, and an alternative that
 * reaches zero makes its rule nullable. (Sweeping until nothing changes is quadratic on a long
 * chain of rules, which a client can send.) */
static bool compute_nullable(struct hs_grammar *g)
{
    uint32_t nr = g->n_rules, na = g->n_alts;
    uint32_t *left = malloc(((size_t)na + 1) * sizeof(*left)); /* per alternative */
    uint32_t *alt_rule = malloc(((size_t)na + 1) * sizeof(*alt_rule));
    uint32_t *off = calloc((size_t)nr + 2, sizeof(*off));                    /* rule -> mentions */
    uint32_t *mention = malloc(((size_t)g->n_elems + 1) * sizeof(*mention)); /* alternatives */
    uint32_t *queue = malloc(((size_t)nr + 1) * sizeof(*queue));
    bool ok = left && alt_rule && off && mention && queue;
    if (ok) {
        for (uint32_t r = 0; r < nr; r++) {
            for (uint32_t a = 0; a < g->rules[r].n_alts; a++) {
                alt_rule[g->rules[r].first_alt + a] = r;
            }
        }
        for (uint32_t a = 0; a < na; a++) {
            uint32_t n = 0;
            for (const struct hs__gelem *e = g->elems + g->alts[a]; e->type != HS__GE_END; e++) {
                n += e->type == HS__GE_CLASS ? (uint32_t)1 << 30 : 1; /* never reaches 0 */
                if (e->type == HS__GE_REF) {
                    off[e->value + 2]++;
                }
            }
            left[a] = n;
        }
        for (uint32_t r = 0; r < nr; r++) {
            off[r + 2] += off[r + 1];
        }
        for (uint32_t a = 0; a < na; a++) { /* off[r + 1] is the fill point of rule r */
            for (const struct hs__gelem *e = g->elems + g->alts[a]; e->type != HS__GE_END; e++) {
                if (e->type == HS__GE_REF) {
                    mention[off[e->value + 1]++] = a;
                }
            }
        }
        uint32_t head = 0, tail = 0;
        for (uint32_t a = 0; a < na; a++) {
            uint32_t r = alt_rule[a];
            if (left[a] == 0 && !g->rules[r].nullable) {
                g->rules[r].nullable = true;
                queue[tail++] = r;
            }
        }
        while (head < tail) {
            uint32_t r = queue[head++];
            for (uint32_t k = off[r]; k < off[r + 1]; k++) {
                uint32_t a = mention[k];
                uint32_t q = alt_rule[a];
                if (--left[a] == 0 && !g->rules[q].nullable) {
                    g->rules[q].nullable = true;
                    queue[tail++] = q;
                }
            }
        }
    }
    free(left);
    free(alt_rule);
    free(off);
    free(mention);
    free(queue);
    return ok;
}

/* Left recursion: a cycle of "A can call B at its start" (B preceded only by nullable elements
 * in an alternative of A) through at least one call that is not the alternative's last element.
 * Such a call pushes a frame each time round, so expanding it would never end; a cycle of
 * last-element calls only re-expands frames already seen, which the matcher stops on. Tarjan's
 * strongly connected components, iteratively (client grammars may be deep). */
static bool check_left_recursion(struct parser *p)
{
    struct hs_grammar *g = p->g;
    uint32_t nr = g->n_rules;
    uint32_t *off = calloc((size_t)nr + 1, sizeof(*off));
    uint32_t *to = NULL;
    uint8_t *grows = NULL;
    int32_t *index = malloc((size_t)nr * sizeof(*index));
    int32_t *low = malloc((size_t)nr * sizeof(*low));
    int32_t *comp = malloc((size_t)nr * sizeof(*comp));
    uint32_t *stack = malloc((size_t)nr * sizeof(*stack));
    uint32_t *call = malloc((size_t)nr * sizeof(*call));
    uint32_t *edge = malloc((size_t)nr * sizeof(*edge));
    bool *on = calloc((size_t)nr, sizeof(*on));
    bool ok = false;
    if (!off || !index || !low || !comp || !stack || !call || !edge || !on) {
        goto done;
    }
    /* pass 0 counts, pass 1 fills the CSR adjacency */
    for (int pass = 0; pass < 2; pass++) {
        uint32_t n = 0;
        for (uint32_t r = 0; r < nr; r++) {
            const struct hs__grule *rule = &g->rules[r];
            if (pass == 1) {
                n = off[r];
            }
            for (uint32_t a = 0; a < rule->n_alts; a++) {
                const struct hs__gelem *e = g->elems + g->alts[rule->first_alt + a];
                for (; e->type == HS__GE_REF; e++) {
                    if (pass == 1) {
                        to[n] = e->value;
                        grows[n] = e[1].type != HS__GE_END;
                    }
                    n++;
                    if (!g->rules[e->value].nullable) {
                        break;
                    }
                }
            }
            if (pass == 0) {
                off[r + 1] = n;
            }
        }
        if (pass == 0) { /* off[r + 1] holds the running count: CSR offsets already */
            to = malloc((size_t)(n ? n : 1) * sizeof(*to));
            grows = malloc((size_t)(n ? n : 1));
            if (!to || !grows) {
                goto done;
            }
        }
    }
    int32_t next_index = 0, n_comp = 0;
    uint32_t sp = 0, cp = 0;
    for (uint32_t r = 0; r < nr; r++) {
        index[r] = -1;
    }
    for (uint32_t root = 0; root < nr; root++) {
        if (index[root] >= 0) {
            continue;
        }
        call[cp] = root;
        edge[cp++] = off[root];
        index[root] = low[root] = next_index++;
        stack[sp++] = root;
        on[root] = true;
        while (cp > 0) {
            uint32_t v = call[cp - 1];
            if (edge[cp - 1] < off[v + 1]) {
                uint32_t w = to[edge[cp - 1]++];
                if (index[w] < 0) {
                    index[w] = low[w] = next_index++;
                    stack[sp++] = w;
                    on[w] = true;
                    call[cp] = w;
                    edge[cp++] = off[w];
                } else if (on[w] && index[w] < low[v]) {
                    low[v] = index[w];
                }
                continue;
            }
            if (low[v] == index[v]) {
                uint32_t w;
                do {
                    w = stack[--sp];
                    on[w] = false;
                    comp[w] = n_comp;
                } while (w != v);
                n_comp++;
            }
            cp--;
            if (cp > 0 && low[v] < low[call[cp - 1]]) {
                low[call[cp - 1]] = low[v];
            }
        }
    }
    ok = true;
    for (uint32_t r = 0; r < nr && ok; r++) {
        for (uint32_t k = off[r]; k < off[r + 1]; k++) {
            if (grows[k] && comp[to[k]] == comp[r]) {
                uint32_t origin = g->rules[r].origin;
                const char *name = g->names + g->rules[origin].name;
                ok = fail_at(p, HS_E_FORMAT, p->info[origin].def_off,
                             "left recursion: rule '%s' can reach itself without consuming "
                             "input (rewrite it to recurse on the right)",
                             name);
                break;
            }
        }
    }
done:
    if (!ok && p->st == HS_OK) {
        nomem(p);
    }
    free(off);
    free(to);
    free(grows);
    free(index);
    free(low);
    free(comp);
    free(stack);
    free(call);
    free(edge);
    free(on);
    return ok;
}

static bool check_rules(struct parser *p, const char *root)
{
    struct hs_grammar *g = p->g;
    for (uint32_t r = 0; r < g->n_rules; r++) {
        if (!p->info[r].generated && !p->info[r].defined) {
            return fail_at(p, HS_E_FORMAT, p->info[r].ref_off, "undefined rule '%s'",
                           g->names + g->rules[r].name);
        }
    }
    size_t n = strlen(root);
    bool found = false;
    for (size_t h = 0; h < p->cap_sym && !found; h++) {
        int32_t r = p->sym[h];
        if (r >= 0 && strcmp(g->names + g->rules[r].name, root) == 0) {
            g->root = (uint32_t)r;
            found = true;
        }
    }
    if (!found) {
        return fail_at(p, HS_E_FORMAT, p->len, "no rule '%.*s' (the start rule)",
                       (int)HS_MIN(n, 64), root);
    }
    for (uint32_t r = 0; r < g->n_rules; r++) {
        g->rules[r].def_off = (uint32_t)p->info[g->rules[r].origin].def_off;
    }
    if (!compute_nullable(g)) {
        return nomem(p);
    }
    return check_left_recursion(p);
}

hs_status hs_grammar_parse(const char *text, size_t len, const char *root,
                           const struct hs_grammar_limits *lim, struct hs_grammar **out,
                           struct hs_error *err)
{
    *out = NULL;
    struct parser p = {.src = text, .len = len, .err = err};
    p.lim = lim ? *lim : hs_grammar_default_limits();
    if (!text && len > 0) {
        return hs_error_set(err, HS_E_INVAL, "grammar text missing");
    }
    if (len > p.lim.max_text_bytes) {
        return hs_error_set(err, HS_E_RANGE, "grammar text of %zu bytes is over the limit of %zu",
                            len, p.lim.max_text_bytes);
    }
    if (p.lim.max_rules <= 0 || p.lim.max_elements <= 0 || p.lim.max_repeat < 0 ||
        p.lim.max_nesting < 0) {
        return hs_error_set(err, HS_E_INVAL, "grammar limits must be positive");
    }
    p.g = calloc(1, sizeof(*p.g));
    if (!p.g) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory compiling the grammar");
    }
    skip_space(&p, true);
    while (p.st == HS_OK && p.pos < p.len) {
        parse_rule(&p);
    }
    if (p.st == HS_OK) {
        check_rules(&p, root ? root : "root");
    }
    free(p.info);
    free(p.sym);
    free(p.cls);
    if (p.st != HS_OK) {
        hs_grammar_destroy(p.g);
        return p.st;
    }
    *out = p.g;
    return HS_OK;
}

void hs_grammar_destroy(struct hs_grammar *g)
{
    if (!g) {
        return;
    }
    free(g->elems);
    free(g->alts);
    free(g->rules);
    free(g->classes);
    free(g->ranges);
    free(g->names);
    free(g);
}

int32_t hs_grammar_n_rules(const struct hs_grammar *g)
{
    return (int32_t)g->n_rules;
}
