/* Grammar introspection for tests, fuzzing and debugging: random sentences and a GBNF dump of
 * the compiled rules. Nothing here runs while serving. */
#include "server/grammar-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random sentences ---- */

#define GEN_INF        ((uint64_t)1 << 40)
#define GEN_HARD_DEPTH 4000

struct gen {
    const struct hs_grammar *g;
    struct hs_rng *rng;
    int32_t max_depth;
    char *buf;
    size_t cap;
    size_t len;
    uint64_t *minlen;  /* [n_rules] shortest sentence, in code points */
    uint32_t *witness; /* [n_rules] the alternative that gives it */
    bool failed;
};

static uint64_t alt_minlen(const struct hs_grammar *g, const uint64_t *minlen, uint32_t start)
{
    uint64_t sum = 0;
    for (const struct hs__gelem *e = g->elems + start; e->type != HS__GE_END; e++) {
        sum += e->type == HS__GE_CLASS ? 1 : minlen[e->value];
        if (sum >= GEN_INF) {
            return GEN_INF;
        }
    }
    return sum;
}

/* Shortest derivations by relaxation; a witness changes only on a strict improvement, so
 * following witnesses always ends. */
static void compute_minlen(struct gen *s)
{
    const struct hs_grammar *g = s->g;
    for (uint32_t r = 0; r < g->n_rules; r++) {
        s->minlen[r] = GEN_INF;
        s->witness[r] = 0;
    }
    bool changed = true;
    while (changed) {
        changed = false;
        for (uint32_t r = 0; r < g->n_rules; r++) {
            const struct hs__grule *rule = &g->rules[r];
            for (uint32_t a = 0; a < rule->n_alts; a++) {
                uint64_t m = alt_minlen(g, s->minlen, g->alts[rule->first_alt + a]);
                if (m < s->minlen[r]) {
                    s->minlen[r] = m;
                    s->witness[r] = a;
                    changed = true;
                }
            }
        }
    }
}

static void emit(struct gen *s, uint32_t cp)
{
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xC0 | cp >> 6), u[1] = (uint8_t)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xE0 | cp >> 12), u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (uint8_t)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        u[0] = (uint8_t)(0xF0 | cp >> 18), u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (uint8_t)(0x80 | (cp & 0x3F)), n = 4;
    }
    for (size_t i = 0; i < n; i++) {
        if (s->len + i < s->cap) {
            s->buf[s->len + i] = (char)u[i];
        }
    }
    s->len += n;
}

static uint32_t rnd(struct gen *s, uint32_t n)
{
    return n ? (uint32_t)(hs_rng_next(s->rng) % n) : 0;
}

/* Characters a model is likely to write, tried first so that sentences look like text. */
static const uint32_t palette[] = {
    'a', 'e', 'i', 'o', 'u', 'n',  's',  't',   'x',    'z',    'A',     'Q',  'Z',  '0', '1',
    '5', '9', ' ', '.', ',', ':',  '-',  '_',   '/',    '"',    '\\',    '\n', '\t', '{', '}',
    '[', ']', 'e', 'E', '+', 0xE9, 0xFC, 0x3B1, 0x4E2D, 0x6587, 0x1F600, 0x7F, 0x1F, 0,
};

static bool pick_cp(struct gen *s, uint32_t cls, uint32_t *cp)
{
    const struct hs_grammar *g = s->g;
    const struct hs__gclass *c = &g->classes[cls];
    int tries = rnd(s, 4) == 0 ? 0 : 24; /* sometimes go straight to arbitrary code points */
    for (int i = 0; i < tries; i++) {
        uint32_t v = palette[rnd(s, (uint32_t)HS_ARRAY_LEN(palette))];
        if (hs__gclass_match(g, cls, v)) {
            *cp = v;
            return true;
        }
    }
    for (int i = 0; i < 256; i++) {
        uint32_t v;
        if (!c->negated && c->n_ranges > 0) {
            const uint32_t *r = g->ranges + 2 * ((size_t)c->first_range + rnd(s, c->n_ranges));
            v = r[0] + rnd(s, r[1] - r[0] + 1);
        } else {
            v = rnd(s, 8) == 0 ? rnd(s, HS__CP_MAX + 1) : rnd(s, 0x3000);
        }
        if ((v < 0xD800 || v > 0xDFFF) && hs__gclass_match(g, cls, v)) {
            *cp = v;
            return true;
        }
    }
    return false;
}

static void gen_rule(struct gen *s, uint32_t r, int32_t depth)
{
    const struct hs_grammar *g = s->g;
    const struct hs__grule *rule = &g->rules[r];
    if (s->failed || depth > GEN_HARD_DEPTH || s->minlen[r] >= GEN_INF) {
        s->failed = true;
        return;
    }
    uint32_t a = s->witness[r];
    if (depth < s->max_depth && s->len < s->cap / 2) {
        uint32_t k = rnd(s, rule->n_alts);
        for (uint32_t i = 0; i < rule->n_alts; i++) {
            uint32_t cand = (k + i) % rule->n_alts;
            if (alt_minlen(g, s->minlen, g->alts[rule->first_alt + cand]) < GEN_INF) {
                a = cand;
                break;
            }
        }
    }
    for (const struct hs__gelem *e = g->elems + g->alts[rule->first_alt + a];
         e->type != HS__GE_END && !s->failed; e++) {
        if (e->type == HS__GE_CLASS) {
            uint32_t cp;
            if (!pick_cp(s, e->value, &cp)) {
                s->failed = true;
                return;
            }
            emit(s, cp);
        } else {
            gen_rule(s, e->value, depth + 1);
        }
    }
}

int64_t hs__grammar_generate(const struct hs_grammar *g, struct hs_rng *rng, int32_t max_depth,
                             char *buf, size_t cap)
{
    struct gen s = {.g = g, .rng = rng, .max_depth = max_depth, .buf = buf, .cap = cap};
    s.minlen = malloc((size_t)g->n_rules * sizeof(*s.minlen));
    s.witness = malloc((size_t)g->n_rules * sizeof(*s.witness));
    if (!s.minlen || !s.witness) {
        free(s.minlen);
        free(s.witness);
        return -1;
    }
    compute_minlen(&s);
    gen_rule(&s, g->root, 0);
    free(s.minlen);
    free(s.witness);
    return s.failed ? -1 : (int64_t)s.len;
}

/* ---- dump ---- */

struct out {
    char *buf;
    size_t cap;
    size_t len;
};

static void put(struct out *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (o->len + i + 1 < o->cap) {
            o->buf[o->len + i] = s[i];
        }
    }
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* One code point as GBNF writes it inside a literal or class. */
static void put_cp(struct out *o, uint32_t cp)
{
    char tmp[16];
    if (cp >= 0x20 && cp < 0x7F && !strchr("\"\\[]-^", (int)cp)) {
        tmp[0] = (char)cp;
        put(o, tmp, 1);
    } else if (cp < 0x100) {
        snprintf(tmp, sizeof(tmp), "\\x%02X", (unsigned)cp);
        puts_(o, tmp);
    } else if (cp < 0x10000) {
        snprintf(tmp, sizeof(tmp), "\\u%04X", (unsigned)cp);
        puts_(o, tmp);
    } else {
        snprintf(tmp, sizeof(tmp), "\\U%08X", (unsigned)cp);
        puts_(o, tmp);
    }
}

size_t hs__grammar_dump(const struct hs_grammar *g, char *buf, size_t cap)
{
    struct out o = {.buf = buf, .cap = cap};
    for (uint32_t r = 0; r < g->n_rules; r++) {
        const struct hs__grule *rule = &g->rules[r];
        puts_(&o, g->names + rule->name);
        puts_(&o, " ::=");
        for (uint32_t a = 0; a < rule->n_alts; a++) {
            if (a > 0) {
                puts_(&o, " |");
            }
            if (g->elems[g->alts[rule->first_alt + a]].type == HS__GE_END) {
                puts_(&o, " \"\""); /* an empty last alternative would run into the next line */
            }
            for (const struct hs__gelem *e = g->elems + g->alts[rule->first_alt + a];
                 e->type != HS__GE_END; e++) {
                put(&o, " ", 1);
                if (e->type == HS__GE_REF) {
                    puts_(&o, g->names + g->rules[e->value].name);
                    continue;
                }
                const struct hs__gclass *c = &g->classes[e->value];
                const uint32_t *rg = g->ranges + 2 * (size_t)c->first_range;
                if (!c->negated && c->n_ranges == 1 && rg[0] == rg[1]) {
                    put(&o, "\"", 1);
                    put_cp(&o, rg[0]);
                    put(&o, "\"", 1);
                    continue;
                }
                puts_(&o, c->negated ? "[^" : "[");
                for (uint32_t i = 0; i < c->n_ranges; i++) {
                    put_cp(&o, rg[2 * i]);
                    if (rg[2 * i + 1] != rg[2 * i]) {
                        put(&o, "-", 1);
                        put_cp(&o, rg[2 * i + 1]);
                    }
                }
                put(&o, "]", 1);
            }
        }
        put(&o, "\n", 1);
    }
    if (cap > 0) {
        buf[o.len < cap ? o.len : cap - 1] = '\0';
    }
    return o.len;
}
