/* The grammar matcher: sets of stacks (llama_grammar's model) made cheap by hash-consing stacks
 * into frames and sets into states, and by memoising every transition, so that matching a byte
 * is a table lookup once a (state, code point) pair has been met: a DFA over UTF-8 built lazily
 * as matchers and mask walks need it. */
#include "server/grammar-impl.h"

#include <stdlib.h>
#include <string.h>

struct hs_grammar_cache_params hs_grammar_cache_default_params(void)
{
    return (struct hs_grammar_cache_params){
        .mask_cache_bytes = (size_t)8 << 20,
        .max_states = 1 << 17,
        .max_frames = 1 << 20,
        .max_stacks = 4096,
    };
}

/* ---- a 128-bit-key hash map ---- */

#define HTAB_EMPTY INT32_MIN

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdu;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53u;
    x ^= x >> 33;
    return x;
}

static void htab_free(struct hs__htab *t)
{
    free(t->ka);
    free(t->kb);
    free(t->val);
    memset(t, 0, sizeof(*t));
}

static void htab_clear(struct hs__htab *t)
{
    for (uint32_t i = 0; i < t->cap; i++) {
        t->val[i] = HTAB_EMPTY;
    }
    t->n = 0;
}

static inline int32_t htab_get(const struct hs__htab *t, uint64_t a, uint64_t b)
{
    if (t->cap == 0) {
        return HTAB_EMPTY;
    }
    uint32_t mask = t->cap - 1;
    uint32_t i = (uint32_t)mix64(a ^ mix64(b)) & mask;
    for (;;) {
        int32_t v = t->val[i];
        if (v == HTAB_EMPTY || (t->ka[i] == a && t->kb[i] == b)) {
            return v;
        }
        i = (i + 1) & mask;
    }
}

static void htab_insert_raw(struct hs__htab *t, uint64_t a, uint64_t b, int32_t v)
{
    uint32_t mask = t->cap - 1;
    uint32_t i = (uint32_t)mix64(a ^ mix64(b)) & mask;
    while (t->val[i] != HTAB_EMPTY && !(t->ka[i] == a && t->kb[i] == b)) {
        i = (i + 1) & mask;
    }
    t->n += t->val[i] == HTAB_EMPTY;
    t->ka[i] = a;
    t->kb[i] = b;
    t->val[i] = v;
}

static bool htab_put(struct hs__htab *t, uint64_t a, uint64_t b, int32_t v)
{
    if ((uint64_t)(t->n + 1) * 2 > t->cap) {
        if (t->cap >= (1u << 30)) {
            return false;
        }
        struct hs__htab n = {.cap = t->cap ? t->cap * 2 : 1024};
        n.ka = malloc((size_t)n.cap * sizeof(*n.ka));
        n.kb = malloc((size_t)n.cap * sizeof(*n.kb));
        n.val = malloc((size_t)n.cap * sizeof(*n.val));
        if (!n.ka || !n.kb || !n.val) {
            htab_free(&n);
            return false;
        }
        htab_clear(&n);
        for (uint32_t i = 0; i < t->cap; i++) {
            if (t->val[i] != HTAB_EMPTY) {
                htab_insert_raw(&n, t->ka[i], t->kb[i], t->val[i]);
            }
        }
        htab_free(t);
        *t = n;
    }
    htab_insert_raw(t, a, b, v);
    return true;
}

/* ---- frames and states ---- */

/* A failed step: st, or HS_E_RANGE where frame_get refused a frame (the callers see -1 either
 * way). */
static int32_t fail(struct hs_grammar_cache *c, hs_status st)
{
    c->error = c->frames_full ? HS_E_RANGE : st;
    c->frames_full = false;
    return HS__STATE_ERROR;
}

/* The frame (pos, parent), interned; -1 out of memory, or past cache_hard_frames
 * (frames_full set): the cache starts over past max_frames between steps, so only one step's
 * expansion gets there, as stacked repetitions do ("x+++...": each level doubles the ways to
 * continue), and that grammar is refused as too ambiguous rather than allowed the memory. */
static int64_t frame_get(struct hs_grammar_cache *c, uint32_t pos, uint32_t parent)
{
    uint64_t key = (uint64_t)pos << 32 | parent;
    int32_t v = htab_get(&c->frame_tab, key, 0);
    if (v != HTAB_EMPTY) {
        return v;
    }
    if (c->n_frames >= cache_hard_frames(c)) {
        c->frames_full = true;
        return -1;
    }
    if (c->n_frames >= INT32_MAX ||
        !hs__grow((void **)&c->frames, &c->cap_frames, c->n_frames + 1, sizeof(*c->frames)) ||
        !hs__grow((void **)&c->seen, &c->cap_seen, c->n_frames + 1, sizeof(*c->seen))) {
        return -1;
    }
    int32_t id = (int32_t)c->n_frames;
    if (!htab_put(&c->frame_tab, key, 0, id)) {
        return -1;
    }
    c->frames[id] = (struct hs__frame){pos, parent};
    c->seen[id] = 0;
    c->n_frames++;
    return id;
}

static uint64_t stacks_hash(const uint32_t *s, uint32_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h = mix64(h ^ s[i]) + i;
    }
    return h;
}

static bool state_tab_grow(struct hs_grammar_cache *c)
{
    uint32_t cap = c->cap_state_tab ? c->cap_state_tab * 2 : 1024;
    int32_t *t = malloc((size_t)cap * sizeof(*t));
    if (!t) {
        return false;
    }
    memset(t, 0xFF, (size_t)cap * sizeof(*t));
    for (size_t s = 0; s < c->n_states; s++) {
        uint32_t i = (uint32_t)c->states[s].hash & (cap - 1);
        while (t[i] >= 0) {
            i = (i + 1) & (cap - 1);
        }
        t[i] = (int32_t)s;
    }
    free(c->state_tab);
    c->state_tab = t;
    c->cap_state_tab = cap;
    return true;
}

/* The state of stacks s[0..n) (ascending frame ids), interned. */
static int32_t state_get(struct hs_grammar_cache *c, const uint32_t *s, uint32_t n)
{
    uint64_t h = stacks_hash(s, n);
    if ((c->n_states + 1) * 2 > c->cap_state_tab && !state_tab_grow(c)) {
        return fail(c, HS_E_NOMEM);
    }
    uint32_t mask = c->cap_state_tab - 1;
    uint32_t i = (uint32_t)h & mask;
    for (; c->state_tab[i] >= 0; i = (i + 1) & mask) {
        const struct hs__state *st = &c->states[c->state_tab[i]];
        if (st->hash == h && st->n == n &&
            (n == 0 || memcmp(c->stack_pool + st->off, s, (size_t)n * sizeof(*s)) == 0)) {
            return c->state_tab[i];
        }
    }
    if (c->n_states >= INT32_MAX / 2 || c->n_pool + n > UINT32_MAX ||
        !hs__grow((void **)&c->states, &c->cap_states, c->n_states + 1, sizeof(*c->states)) ||
        !hs__grow((void **)&c->stack_pool, &c->cap_pool, c->n_pool + n, sizeof(*c->stack_pool))) {
        return fail(c, HS_E_NOMEM);
    }
    int32_t id = (int32_t)c->n_states++;
    struct hs__state *st = &c->states[id];
    *st = (struct hs__state){.off = (uint32_t)c->n_pool,
                             .n = n,
                             .hash = h,
                             .mask_slot = -1,
                             .nonascii = HS__ASCII_UNKNOWN};
    if (n > 0) {
        memcpy(c->stack_pool + c->n_pool, s, (size_t)n * sizeof(*s));
    }
    c->n_pool += n;
    st->complete = n > 0 && s[0] == 0; /* frame 0, the empty stack, sorts first */
    c->state_tab[i] = id;
    c->stats.n_states++;
    return id;
}

/* ---- advancing a set of stacks ---- */

static bool work_push(struct hs_grammar_cache *c, size_t *n, int64_t frame)
{
    if (frame < 0 || !hs__grow((void **)&c->work, &c->cap_work, *n + 1, sizeof(*c->work))) {
        return false;
    }
    c->work[(*n)++] = (uint32_t)frame;
    return true;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Expands the frames on c->work to the stacks whose tops are terminals (llama.cpp's
 * advance_stack, iteratively, each frame once), and interns their set. DEAD when empty unless
 * allow_empty. */
static int32_t expand(struct hs_grammar_cache *c, size_t n_work, bool allow_empty)
{
    const struct hs_grammar *g = c->g;
    if (++c->seen_stamp == 0) {
        memset(c->seen, 0, c->cap_seen * sizeof(*c->seen));
        c->seen_stamp = 1;
    }
    size_t n_res = 0;
    while (n_work > 0) {
        uint32_t f = c->work[--n_work];
        if (c->seen[f] == c->seen_stamp) {
            continue;
        }
        c->seen[f] = c->seen_stamp;
        if (f != 0 && g->elems[c->frames[f].pos].type == HS__GE_REF) {
            uint32_t pos = c->frames[f].pos, parent = c->frames[f].parent;
            const struct hs__grule *r = &g->rules[g->elems[pos].value];
            int64_t cont = parent;
            if (g->elems[pos + 1].type != HS__GE_END) {
                cont = frame_get(c, pos + 1, parent);
            }
            for (uint32_t a = 0; a < r->n_alts && cont >= 0; a++) {
                uint32_t start = g->alts[r->first_alt + a];
                int64_t nf =
                    g->elems[start].type == HS__GE_END ? cont : frame_get(c, start, (uint32_t)cont);
                if (!work_push(c, &n_work, nf)) {
                    return fail(c, HS_E_NOMEM);
                }
            }
            if (cont < 0) {
                return fail(c, HS_E_NOMEM);
            }
            continue;
        }
        if ((int64_t)n_res >= c->p.max_stacks) {
            return fail(c, HS_E_RANGE); /* an ambiguous grammar: too many ways to be here */
        }
        if (!hs__grow((void **)&c->result, &c->cap_result, n_res + 1, sizeof(*c->result))) {
            return fail(c, HS_E_NOMEM);
        }
        c->result[n_res++] = f; /* a terminal on top, or 0: complete */
    }
    if (n_res == 0 && !allow_empty) {
        return HS__STATE_DEAD;
    }
    if (n_res > 1) {
        qsort(c->result, n_res, sizeof(*c->result), cmp_u32);
    }
    return state_get(c, c->result, (uint32_t)n_res);
}

int32_t hs__cache_initial(struct hs_grammar_cache *c)
{
    if (c->initial >= 0) {
        return c->initial;
    }
    const struct hs_grammar *g = c->g;
    const struct hs__grule *r = &g->rules[g->root];
    size_t n = 0;
    for (uint32_t a = 0; a < r->n_alts; a++) {
        uint32_t start = g->alts[r->first_alt + a];
        int64_t f = g->elems[start].type == HS__GE_END ? 0 : frame_get(c, start, 0);
        if (!work_push(c, &n, f)) {
            return fail(c, HS_E_NOMEM);
        }
    }
    int32_t s = expand(c, n, true); /* a grammar with no sentence starts (and stays) empty */
    if (s >= 0) {
        c->initial = s;
    }
    return s;
}

/* The state after code point cp, computed (not memoised). */
static int32_t advance(struct hs_grammar_cache *c, int32_t sid, uint32_t cp)
{
    const struct hs_grammar *g = c->g;
    size_t n = 0;
    for (uint32_t i = 0; i < c->states[sid].n; i++) {
        uint32_t f = c->stack_pool[c->states[sid].off + i];
        if (f == 0 || !hs__gclass_match(g, g->elems[c->frames[f].pos].value, cp)) {
            continue;
        }
        uint32_t next = c->frames[f].pos + 1, parent = c->frames[f].parent;
        int64_t nf = g->elems[next].type == HS__GE_END ? parent : frame_get(c, next, parent);
        if (!work_push(c, &n, nf)) {
            return fail(c, HS_E_NOMEM);
        }
    }
    return n == 0 ? HS__STATE_DEAD : expand(c, n, false);
}

static int32_t *ascii_table(struct hs_grammar_cache *c)
{
    if (c->n_ascii_blocks == 0 || c->ascii_used == 256) {
        if (!hs__grow((void **)&c->ascii_blocks, &c->cap_ascii_blocks, c->n_ascii_blocks + 1,
                      sizeof(*c->ascii_blocks))) {
            return NULL;
        }
        int32_t *b = malloc((size_t)256 * 128 * sizeof(*b));
        if (!b) {
            return NULL;
        }
        c->ascii_blocks[c->n_ascii_blocks++] = b;
        c->ascii_used = 0;
    }
    int32_t *t = c->ascii_blocks[c->n_ascii_blocks - 1] + (size_t)c->ascii_used++ * 128;
    for (int i = 0; i < 128; i++) {
        t[i] = HS__ASCII_UNKNOWN;
    }
    return t;
}

/* The state after code point cp, memoised: per state an ASCII table, a hash map for the rest,
 * and under both a map keyed by which of the state's stacks cp matched (most code points of a
 * string body match the same stacks, so a large vocabulary's characters share one advance). */
static int32_t step_cp(struct hs_grammar_cache *c, int32_t sid, uint32_t cp)
{
    if (cp < 128 && c->states[sid].ascii && c->states[sid].ascii[cp] != HS__ASCII_UNKNOWN) {
        return c->states[sid].ascii[cp];
    }
    int32_t next = cp < 128 ? HTAB_EMPTY : htab_get(&c->trans, (uint64_t)sid << 32 | cp, 0);
    if (next != HTAB_EMPTY) {
        return next;
    }
    const struct hs_grammar *g = c->g;
    const struct hs__state *st = &c->states[sid];
    if (st->n <= 64) {
        uint64_t vec = 0;
        for (uint32_t i = 0; i < st->n; i++) {
            uint32_t f = c->stack_pool[st->off + i];
            if (f != 0 && hs__gclass_match(g, g->elems[c->frames[f].pos].value, cp)) {
                vec |= (uint64_t)1 << i;
            }
        }
        if (vec == 0) {
            next = HS__STATE_DEAD;
        } else {
            next = htab_get(&c->vec_tab, (uint64_t)sid, vec);
            if (next == HTAB_EMPTY) {
                next = advance(c, sid, cp);
                if (next == HS__STATE_ERROR) {
                    return next;
                }
                if (!htab_put(&c->vec_tab, (uint64_t)sid, vec, next)) {
                    return fail(c, HS_E_NOMEM);
                }
            }
        }
    } else {
        next = advance(c, sid, cp);
        if (next == HS__STATE_ERROR) {
            return next;
        }
    }
    if (cp < 128) {
        if (!c->states[sid].ascii) {
            int32_t *t = ascii_table(c);
            if (!t) {
                return fail(c, HS_E_NOMEM);
            }
            c->states[sid].ascii = t;
        }
        c->states[sid].ascii[cp] = next;
    } else if (!htab_put(&c->trans, (uint64_t)sid << 32 | cp, 0, next)) {
        return fail(c, HS_E_NOMEM);
    }
    return next;
}

/* ---- UTF-8 ---- */

#define PREFIX_TAG 0x40000000u

static uint32_t utf8_len(uint32_t lead)
{
    return lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
}

/* Whether some character starting with the packed prefix (count << 24 | bytes, big-endian) can
 * be matched by a stack of sid: sid itself, or DEAD. */
static int32_t prefix_alive(struct hs_grammar_cache *c, int32_t sid, uint32_t partial)
{
    uint64_t key = (uint64_t)sid << 32 | PREFIX_TAG | partial;
    int32_t v = htab_get(&c->trans, key, 0);
    if (v != HTAB_EMPTY) {
        return v;
    }
    uint32_t nb = partial >> 24, bytes = partial & 0xFFFFFFu;
    uint32_t lead = bytes >> (8 * (nb - 1)) & 0xFF;
    uint32_t len = utf8_len(lead);
    uint32_t lo = lead & (len == 2 ? 0x1Fu : len == 3 ? 0x0Fu : 0x07u), hi;
    for (uint32_t i = 1; i < nb; i++) {
        lo = lo << 6 | ((bytes >> (8 * (nb - 1 - i))) & 0x3F);
    }
    hi = lo;
    for (uint32_t i = nb; i < len; i++) {
        lo = lo << 6;
        hi = hi << 6 | 0x3F;
    }
    uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    uint32_t max = len == 2 ? 0x7FF : len == 3 ? 0xFFFF : HS__CP_MAX;
    lo = lo < min ? min : lo;
    hi = hi > max ? max : hi;
    v = HS__STATE_DEAD;
    const struct hs_grammar *g = c->g;
    const struct hs__state *st = &c->states[sid];
    for (uint32_t i = 0; i < st->n && v == HS__STATE_DEAD && lo <= hi; i++) {
        uint32_t f = c->stack_pool[st->off + i];
        if (f == 0) {
            continue;
        }
        uint32_t cls = g->elems[c->frames[f].pos].value;
        /* surrogates are not characters: look on either side of them */
        bool ok = (lo < 0xD800 && hs__gclass_match_range(g, cls, lo, HS_MIN(hi, 0xD7FFu))) ||
                  (hi > 0xDFFF && hs__gclass_match_range(g, cls, HS_MAX(lo, 0xE000u), hi));
        if (ok) {
            v = sid;
        }
    }
    if (!htab_put(&c->trans, key, 0, v)) {
        return fail(c, HS_E_NOMEM);
    }
    return v;
}

/* Where non-ASCII characters lead from sid when they all lead to one place (most states: a
 * string body takes every one, a number none), else HS__NONASCII_MIXED; memoised. */
static int32_t nonascii_next(struct hs_grammar_cache *c, int32_t sid)
{
    int32_t v = c->states[sid].nonascii;
    if (v != HS__ASCII_UNKNOWN) {
        return v;
    }
    const struct hs_grammar *g = c->g;
    bool any = false;
    v = HS__STATE_DEAD;
    for (uint32_t i = 0; i < c->states[sid].n; i++) {
        uint32_t f = c->stack_pool[c->states[sid].off + i];
        if (f == 0) {
            continue;
        }
        uint32_t cls = g->elems[c->frames[f].pos].value;
        bool all = hs__gclass_covers(g, cls, 0x80, 0xD7FF) &&
                   hs__gclass_covers(g, cls, 0xE000, HS__CP_MAX);
        bool none = !hs__gclass_match_range(g, cls, 0x80, 0xD7FF) &&
                    !hs__gclass_match_range(g, cls, 0xE000, HS__CP_MAX);
        if (!all && !none) {
            v = HS__NONASCII_MIXED;
            break;
        }
        any = any || all;
    }
    if (v != HS__NONASCII_MIXED && any) {
        v = step_cp(c, sid, 0xE9); /* any non-ASCII character stands for all */
        if (v == HS__STATE_ERROR) {
            return v;
        }
    }
    c->states[sid].nonascii = v;
    return v;
}

uint64_t hs__cache_breakers(struct hs_grammar_cache *c, int32_t sid)
{
    if (c->states[sid].loops_known) {
        return c->states[sid].breakers;
    }
    uint64_t br = 0;
    for (uint32_t b = 0; b < 128; b++) {
        int32_t n = step_cp(c, sid, b);
        if (n == HS__STATE_ERROR) {
            return UINT64_MAX;
        }
        if (n != sid) {
            br |= (uint64_t)1 << grammar_byte_bucket((uint8_t)b);
        }
    }
    int32_t na = nonascii_next(c, sid);
    if (na == HS__STATE_ERROR) {
        return UINT64_MAX;
    }
    if (na != sid) {
        br |= (uint64_t)1 << grammar_byte_bucket(0x80);
    }
    c->states[sid].breakers = br;
    c->states[sid].loops_known = true;
    return br;
}

int32_t hs__cache_step(struct hs_grammar_cache *c, int32_t sid, uint32_t *partial, uint8_t b)
{
    uint32_t p = *partial;
    if (p == 0) {
        if (b < 0x80) {
            return step_cp(c, sid, b);
        }
        if (b < 0xC2 || b > 0xF4) {
            return HS__STATE_DEAD;
        }
        int32_t na = nonascii_next(c, sid);
        if (na != HS__NONASCII_MIXED) { /* one answer for every character: no lookups */
            if (na >= 0) {
                *partial = 1u << 24 | b;
                return sid;
            }
            return na;
        }
        uint32_t np = 1u << 24 | b;
        int32_t r = prefix_alive(c, sid, np);
        if (r >= 0) {
            *partial = np;
        }
        return r;
    }
    if ((b & 0xC0) != 0x80) {
        return HS__STATE_DEAD;
    }
    uint32_t nb = p >> 24, bytes = p & 0xFFFFFFu;
    uint32_t lead = bytes >> (8 * (nb - 1)) & 0xFF;
    uint32_t len = utf8_len(lead);
    int32_t na = c->states[sid].nonascii; /* known: the lead byte asked */
    if (na >= 0) {
        if (!grammar_utf8_cont_ok(lead, nb, b)) {
            return HS__STATE_DEAD;
        }
        *partial = nb + 1 < len ? (nb + 1) << 24 | bytes << 8 | b : 0;
        return nb + 1 < len ? sid : na;
    }
    if (nb + 1 < len) {
        uint32_t np = (nb + 1) << 24 | bytes << 8 | b;
        int32_t r = prefix_alive(c, sid, np);
        if (r >= 0) {
            *partial = np;
        }
        return r;
    }
    uint32_t cp = lead & (len == 2 ? 0x1Fu : len == 3 ? 0x0Fu : 0x07u);
    for (uint32_t i = 1; i < nb; i++) {
        cp = cp << 6 | ((bytes >> (8 * (nb - 1 - i))) & 0x3F);
    }
    cp = cp << 6 | (b & 0x3Fu);
    uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > HS__CP_MAX || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return HS__STATE_DEAD; /* prefix_alive rules these out; kept for safety */
    }
    int32_t r = step_cp(c, sid, cp);
    if (r >= 0) {
        *partial = 0;
    }
    return r;
}

/* ---- resets: bounded memory with matchers keeping their place ---- */

static void list_add(struct hs_grammar_cache *c, struct hs_grammar_matcher *m)
{
    m->link.next = c->matchers.next;
    m->link.prev = &c->matchers;
    c->matchers.next->prev = &m->link;
    c->matchers.next = &m->link;
}

static void list_del(struct hs_grammar_matcher *m)
{
    m->link.prev->next = m->link.next;
    m->link.next->prev = m->link.prev;
}

/* Writes m's stacks as [n_stacks, then per stack: depth, positions top to bottom]. */
static bool matcher_save(struct hs_grammar_matcher *m)
{
    struct hs_grammar_cache *c = m->c;
    const struct hs__state *st = &c->states[m->sid];
    size_t n = 1;
    for (uint32_t i = 0; i < st->n; i++) {
        n++;
        for (uint32_t f = c->stack_pool[st->off + i]; f != 0; f = c->frames[f].parent) {
            n++;
        }
    }
    if (!hs__grow((void **)&m->saved, &m->cap_saved, n, sizeof(*m->saved))) {
        return false;
    }
    size_t k = 0;
    m->saved[k++] = st->n;
    for (uint32_t i = 0; i < st->n; i++) {
        size_t at = k++;
        uint32_t d = 0;
        for (uint32_t f = c->stack_pool[st->off + i]; f != 0; f = c->frames[f].parent) {
            m->saved[k++] = c->frames[f].pos;
            d++;
        }
        m->saved[at] = d;
    }
    m->n_saved = k;
    return true;
}

static hs_status matcher_restore(struct hs_grammar_matcher *m)
{
    struct hs_grammar_cache *c = m->c;
    size_t k = 0, n_res = 0;
    uint32_t n = m->saved[k++];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t d = m->saved[k++];
        int64_t f = 0;
        for (uint32_t j = d; j > 0 && f >= 0; j--) { /* bottom first */
            f = frame_get(c, m->saved[k + j - 1], (uint32_t)f);
        }
        k += d;
        if (f < 0 ||
            !hs__grow((void **)&c->result, &c->cap_result, n_res + 1, sizeof(*c->result))) {
            fail(c, HS_E_NOMEM);
            return c->error;
        }
        c->result[n_res++] = (uint32_t)f;
    }
    if (n_res > 1) {
        qsort(c->result, n_res, sizeof(*c->result), cmp_u32);
    }
    int32_t s = state_get(c, c->result, (uint32_t)n_res);
    if (s < 0) {
        return c->error;
    }
    m->sid = s;
    return HS_OK;
}

static void cache_clear(struct hs_grammar_cache *c)
{
    c->n_frames = 1; /* frame 0: the empty stack */
    htab_clear(&c->frame_tab);
    c->n_states = 0;
    c->n_pool = 0;
    if (c->state_tab) {
        memset(c->state_tab, 0xFF, (size_t)c->cap_state_tab * sizeof(*c->state_tab));
    }
    htab_clear(&c->trans);
    htab_clear(&c->vec_tab);
    for (size_t i = 1; i < c->n_ascii_blocks; i++) {
        free(c->ascii_blocks[i]);
    }
    c->n_ascii_blocks = c->n_ascii_blocks ? 1 : 0;
    c->ascii_used = 0;
    c->initial = -1;
    hs__cache_masks_clear(c);
}

hs_status hs__cache_maybe_reset(struct hs_grammar_cache *c)
{
    uint64_t max_states = (uint64_t)c->p.max_states;
    if (c->n_states <= max_states && c->n_frames <= (uint64_t)c->p.max_frames &&
        c->trans.n <= 8 * max_states && c->vec_tab.n <= 8 * max_states) {
        return HS_OK;
    }
    for (struct hs__matcher_link *l = c->matchers.next; l != &c->matchers; l = l->next) {
        if (!matcher_save((struct hs_grammar_matcher *)l)) {
            return HS_E_NOMEM; /* nothing reset yet: the cache stays as it was */
        }
    }
    cache_clear(c);
    c->generation++;
    c->stats.n_resets++;
    for (struct hs__matcher_link *l = c->matchers.next; l != &c->matchers; l = l->next) {
        HS_TRY(matcher_restore((struct hs_grammar_matcher *)l));
    }
    return HS_OK;
}

/* ---- the cache ---- */

hs_status hs_grammar_cache_create(const struct hs_grammar *g, const struct hs_token_trie *t,
                                  const struct hs_grammar_cache_params *p,
                                  struct hs_grammar_cache **out)
{
    *out = NULL;
    struct hs_grammar_cache_params params = p ? *p : hs_grammar_cache_default_params();
    if (!g || params.max_states <= 0 || params.max_frames <= 0 || params.max_stacks <= 0) {
        return HS_E_INVAL;
    }
    struct hs_grammar_cache *c = calloc(1, sizeof(*c));
    if (!c) {
        return HS_E_NOMEM;
    }
    c->g = g;
    c->trie = t;
    c->p = params;
    c->initial = -1;
    c->matchers.next = c->matchers.prev = &c->matchers;
    c->n_frames = 1;
    if (!hs__grow((void **)&c->frames, &c->cap_frames, 1024, sizeof(*c->frames)) ||
        !hs__grow((void **)&c->seen, &c->cap_seen, 1024, sizeof(*c->seen))) {
        goto fail;
    }
    memset(c->seen, 0, c->cap_seen * sizeof(*c->seen));
    c->frames[0] = (struct hs__frame){0, 0};
    if (hs__cache_masks_init(c) != HS_OK) {
        goto fail;
    }
    *out = c;
    return HS_OK;

fail:
    hs_grammar_cache_destroy(c);
    return HS_E_NOMEM;
}

void hs_grammar_cache_destroy(struct hs_grammar_cache *c)
{
    if (!c) {
        return;
    }
    HS_ASSERT(c->matchers.next == &c->matchers || c->matchers.next == NULL);
    free(c->frames);
    htab_free(&c->frame_tab);
    free(c->states);
    free(c->stack_pool);
    free(c->state_tab);
    htab_free(&c->trans);
    htab_free(&c->vec_tab);
    for (size_t i = 0; i < c->n_ascii_blocks; i++) {
        free(c->ascii_blocks[i]);
    }
    free(c->ascii_blocks);
    free(c->work);
    free(c->result);
    free(c->seen);
    hs__cache_masks_free(c);
    free(c);
}

void hs_grammar_cache_stats(const struct hs_grammar_cache *c, struct hs_grammar_cache_stats *out)
{
    *out = c->stats;
}

/* ---- matchers ---- */

hs_status hs_grammar_matcher_create(struct hs_grammar_cache *c, struct hs_grammar_matcher **out)
{
    *out = NULL;
    HS_TRY(hs__cache_maybe_reset(c));
    int32_t s = hs__cache_initial(c);
    if (s < 0) {
        return c->error;
    }
    struct hs_grammar_matcher *m = calloc(1, sizeof(*m));
    if (!m) {
        return HS_E_NOMEM;
    }
    m->c = c;
    m->sid = s;
    list_add(c, m);
    *out = m;
    return HS_OK;
}

hs_status hs_grammar_matcher_clone(const struct hs_grammar_matcher *m,
                                   struct hs_grammar_matcher **out)
{
    *out = NULL;
    struct hs_grammar_matcher *n = calloc(1, sizeof(*n));
    if (!n) {
        return HS_E_NOMEM;
    }
    n->c = m->c;
    n->sid = m->sid;
    n->partial = m->partial;
    n->done = m->done;
    list_add(m->c, n);
    *out = n;
    return HS_OK;
}

void hs_grammar_matcher_destroy(struct hs_grammar_matcher *m)
{
    if (!m) {
        return;
    }
    list_del(m);
    free(m->saved);
    free(m);
}

hs_status hs_grammar_matcher_accept_bytes(struct hs_grammar_matcher *m, const void *bytes, size_t n)
{
    struct hs_grammar_cache *c = m->c;
    if (m->done) {
        return n == 0 ? HS_OK : HS_E_INVAL;
    }
    HS_TRY(hs__cache_maybe_reset(c));
    const uint8_t *b = bytes;
    int32_t s = m->sid;
    uint32_t partial = m->partial;
    for (size_t i = 0; i < n; i++) {
        s = hs__cache_step(c, s, &partial, b[i]);
        if (s == HS__STATE_DEAD) {
            return HS_E_INVAL;
        }
        if (s == HS__STATE_ERROR) {
            return c->error;
        }
    }
    m->sid = s;
    m->partial = partial;
    return HS_OK;
}

bool hs_grammar_matcher_can_complete(const struct hs_grammar_matcher *m)
{
    return !m->done && m->partial == 0 && m->c->states[m->sid].complete;
}

bool hs_grammar_matcher_is_done(const struct hs_grammar_matcher *m)
{
    return m->done;
}
