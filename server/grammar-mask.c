/* Token masks: the vocabulary as a byte trie in depth-first preorder, walked against a grammar
 * state with the cache's memoised byte steps (a dead step skips the whole subtree), and an LRU of
 * finished masks per state, so a state met again costs a lookup. Also tokens through the
 * matcher, and the matcher as a sampler constraint. */
#include "server/grammar-impl.h"

#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/vocab.h"

/* ---- the trie ---- */

struct sort_ctx {
    const uint32_t *off;
    const uint8_t *bytes;
};

static int cmp_piece(const void *pa, const void *pb, void *pctx)
{
    const struct sort_ctx *x = pctx;
    hs_token a = *(const hs_token *)pa, b = *(const hs_token *)pb;
    size_t la = x->off[a + 1] - x->off[a], lb = x->off[b + 1] - x->off[b];
    int r = memcmp(x->bytes + x->off[a], x->bytes + x->off[b], HS_MIN(la, lb));
    if (r != 0) {
        return r;
    }
    if (la != lb) {
        return la < lb ? -1 : 1; /* a prefix sorts before what extends it */
    }
    return (a > b) - (a < b);
}

/* Tokens that are never text. A user-defined token ("<tool_call>", "<think>", Gemma's runs of
 * spaces) is text written as is, so it joins the trie by its text, as in llama.cpp's grammar. */
static bool excluded(const struct hs_vocab *v, hs_token t)
{
    enum hs_token_attr a = hs_vocab_token_attr(v, t);
    return a == HS_TOKEN_CONTROL || a == HS_TOKEN_UNKNOWN || a == HS_TOKEN_UNUSED ||
           hs_vocab_is_eog(v, t);
}

static bool trie_add_node(struct hs_token_trie *t, size_t *cap, uint8_t byte, uint16_t depth,
                          uint32_t n_toks)
{
    size_t n = t->n_nodes;
    size_t c = *cap;
    if (n + 2 > c) {
        size_t nc = c ? c * 2 : 4096;
        uint8_t *b = realloc(t->byte, nc);
        if (b) {
            t->byte = b;
        }
        uint16_t *d = realloc(t->depth, nc * sizeof(*d));
        if (d) {
            t->depth = d;
        }
        uint32_t *e = realloc(t->end, nc * sizeof(*e));
        if (e) {
            t->end = e;
        }
        uint32_t *o = realloc(t->tok_off, (nc + 1) * sizeof(*o));
        if (o) {
            t->tok_off = o;
        }
        if (!b || !d || !e || !o || n >= UINT32_MAX - 2) {
            return false;
        }
        *cap = nc;
    }
    t->byte[n] = byte;
    t->depth[n] = depth;
    t->end[n] = 0;
    t->tok_off[n] = n_toks;
    t->n_nodes++;
    return true;
}

/* below[] and valid[]: one preorder pass decodes UTF-8 along every path (a node's parent is the
 * last node of depth d - 1 before it), then a reverse pass folds children into parents. */
static bool summarise(struct hs_token_trie *t)
{
    size_t n = t->n_nodes;
    t->below = calloc(n, sizeof(*t->below));
    t->valid = malloc(n);
    uint32_t *parent = malloc(n * sizeof(*parent));
    uint32_t *last = malloc(((size_t)t->max_depth + 1) * sizeof(*last));
    uint8_t *lead = malloc((size_t)t->max_depth + 1); /* per depth: lead byte, 0 at a boundary */
    uint8_t *nb = malloc((size_t)t->max_depth + 1);   /* bytes of the open character so far */
    bool ok = t->below && t->valid && parent && last && lead && nb;
    if (ok) {
        last[0] = 0;
        lead[0] = 0;
        nb[0] = 0;
        t->valid[0] = 1;
        for (size_t i = 1; i < n; i++) {
            uint32_t d = t->depth[i];
            uint32_t p = last[d - 1];
            uint8_t b = t->byte[i];
            parent[i] = p;
            last[d] = (uint32_t)i;
            bool v = t->valid[p];
            uint8_t l = lead[d - 1], k = nb[d - 1];
            if (v && l == 0) {
                if (b >= 0x80 && (b < 0xC2 || b > 0xF4)) {
                    v = false;
                } else if (b >= 0x80) {
                    l = b, k = 1;
                }
            } else if (v) {
                v = grammar_utf8_cont_ok(l, k, b);
                k++;
                if (k == (l >= 0xF0 ? 4 : l >= 0xE0 ? 3 : 2)) {
                    l = 0, k = 0;
                }
            }
            lead[d] = l;
            nb[d] = k;
            t->valid[i] = v;
        }
        for (size_t i = n; i-- > 1;) {
            uint32_t p = parent[i];
            t->below[p] |= t->below[i] | (uint64_t)1 << grammar_byte_bucket(t->byte[i]);
            t->valid[p] &= t->valid[i];
        }
    }
    free(parent);
    free(last);
    free(lead);
    free(nb);
    return ok;
}

hs_status hs_token_trie_create(const struct hs_vocab *v, struct hs_token_trie **out)
{
    *out = NULL;
    int32_t nv = v ? hs_vocab_n_tokens(v) : 0;
    if (nv <= 0) {
        return HS_E_INVAL;
    }
    struct hs_token_trie *t = calloc(1, sizeof(*t));
    hs_token *order = malloc((size_t)nv * sizeof(*order));
    uint32_t *path = NULL;
    size_t cap_pieces = 0, cap_nodes = 0;
    if (!t || !order) {
        goto fail;
    }
    t->n_vocab = nv;
    t->piece_off = malloc(((size_t)nv + 1) * sizeof(*t->piece_off));
    t->is_eog = calloc((size_t)nv, sizeof(*t->is_eog));
    t->toks = malloc((size_t)nv * sizeof(*t->toks));
    t->eog = malloc((size_t)nv * sizeof(*t->eog));
    if (!t->piece_off || !t->is_eog || !t->toks || !t->eog) {
        goto fail;
    }
    /* every token's bytes; excluded tokens get none */
    size_t n_bytes = 0, n_order = 0, max_len = 0;
    for (hs_token i = 0; i < nv; i++) {
        t->piece_off[i] = (uint32_t)n_bytes;
        t->is_eog[i] = hs_vocab_is_eog(v, i);
        if (t->is_eog[i]) {
            t->eog[t->n_eog++] = i;
        }
        if (excluded(v, i)) {
            continue;
        }
        size_t len = hs_vocab_piece(v, i, false, NULL, 0);
        if (len == 0) {
            continue;
        }
        if (len > UINT16_MAX - 1 || n_bytes + len > UINT32_MAX ||
            !hs__grow((void **)&t->pieces, &cap_pieces, n_bytes + len, 1)) {
            goto fail;
        }
        hs_vocab_piece(v, i, false, (char *)t->pieces + n_bytes, len);
        n_bytes += len;
        max_len = HS_MAX(max_len, len);
        order[n_order++] = i;
    }
    t->piece_off[nv] = (uint32_t)n_bytes;
    struct sort_ctx ctx = {t->piece_off, t->pieces};
    qsort_r(order, n_order, sizeof(*order), cmp_piece, &ctx);

    /* preorder: sorted pieces visit the trie depth first, a node before its descendants */
    path = malloc((max_len + 1) * sizeof(*path));
    if (!path || !trie_add_node(t, &cap_nodes, 0, 0, 0)) {
        goto fail;
    }
    path[0] = 0;
    size_t depth = 0;
    uint32_t n_toks = 0;
    const uint8_t *prev = NULL;
    for (size_t k = 0; k < n_order; k++) {
        hs_token tok = order[k];
        const uint8_t *p = t->pieces + t->piece_off[tok];
        size_t len = t->piece_off[tok + 1] - t->piece_off[tok];
        size_t lcp = 0;
        while (prev && lcp < depth && lcp < len && p[lcp] == prev[lcp]) {
            lcp++;
        }
        for (size_t d = depth; d > lcp; d--) {
            t->end[path[d]] = t->n_nodes;
        }
        for (size_t d = lcp + 1; d <= len; d++) {
            if (!trie_add_node(t, &cap_nodes, p[d - 1], (uint16_t)d, n_toks)) {
                goto fail;
            }
            path[d] = t->n_nodes - 1;
        }
        t->toks[n_toks++] = tok; /* its node is the last one made */
        depth = len;
        prev = p;
    }
    for (size_t d = depth + 1; d-- > 0;) {
        t->end[path[d]] = t->n_nodes;
    }
    t->tok_off[t->n_nodes] = n_toks;
    t->max_depth = (uint16_t)max_len;
    if (!summarise(t)) {
        goto fail;
    }
    free(order);
    free(path);
    *out = t;
    return HS_OK;

fail:
    free(order);
    free(path);
    hs_token_trie_destroy(t);
    return HS_E_NOMEM;
}

void hs_token_trie_destroy(struct hs_token_trie *t)
{
    if (!t) {
        return;
    }
    free(t->byte);
    free(t->depth);
    free(t->end);
    free(t->tok_off);
    free(t->below);
    free(t->valid);
    free(t->toks);
    free(t->piece_off);
    free(t->pieces);
    free(t->is_eog);
    free(t->eog);
    free(t);
}

int32_t hs_token_trie_n_vocab(const struct hs_token_trie *t)
{
    return t->n_vocab;
}

int64_t hs_token_trie_n_nodes(const struct hs_token_trie *t)
{
    return t->n_nodes;
}

/* ---- the LRU of masks ---- */

hs_status hs__cache_masks_init(struct hs_grammar_cache *c)
{
    c->slot_head = c->slot_tail = -1;
    if (!c->trie) {
        return HS_OK;
    }
    c->mask_words = HS_TOKEN_MASK_WORDS(c->trie->n_vocab);
    size_t per = c->mask_words * sizeof(uint32_t);
    size_t n = c->p.mask_cache_bytes / per;
    c->n_slots = (int32_t)HS_MAX((size_t)1, HS_MIN(n, (size_t)1 << 20));
    c->scratch_mask = malloc(per);
    c->walk = malloc(((size_t)c->trie->max_depth + 1) * sizeof(*c->walk));
    return c->scratch_mask && c->walk ? HS_OK : HS_E_NOMEM;
}

void hs__cache_masks_clear(struct hs_grammar_cache *c)
{
    c->n_used_slots = 0;
    c->slot_head = c->slot_tail = -1;
}

void hs__cache_masks_free(struct hs_grammar_cache *c)
{
    free(c->masks);
    free(c->slot_state);
    free(c->slot_prev);
    free(c->slot_next);
    free(c->scratch_mask);
    free(c->walk);
}

static void slot_unlink(struct hs_grammar_cache *c, int32_t s)
{
    int32_t p = c->slot_prev[s], n = c->slot_next[s];
    if (p >= 0) {
        c->slot_next[p] = n;
    } else {
        c->slot_head = n;
    }
    if (n >= 0) {
        c->slot_prev[n] = p;
    } else {
        c->slot_tail = p;
    }
}

static void slot_push_front(struct hs_grammar_cache *c, int32_t s)
{
    c->slot_prev[s] = -1;
    c->slot_next[s] = c->slot_head;
    if (c->slot_head >= 0) {
        c->slot_prev[c->slot_head] = s;
    }
    c->slot_head = s;
    if (c->slot_tail < 0) {
        c->slot_tail = s;
    }
}

/* A free slot (unlinked), evicting the least recently used when all are taken; -1 no memory. */
static int32_t slot_take(struct hs_grammar_cache *c)
{
    if (c->n_used_slots < c->n_slots) {
        size_t need = (size_t)c->n_used_slots + 1;
        if (need > c->cap_slots) {
            size_t cap = HS_MIN(HS_MAX(c->cap_slots * 2, (size_t)8), (size_t)c->n_slots);
            size_t bytes;
            if (hs_mul_overflow(cap, c->mask_words * sizeof(uint32_t), &bytes)) {
                return -1;
            }
            uint32_t *m = realloc(c->masks, bytes);
            if (m) {
                c->masks = m;
            }
            int32_t *a = realloc(c->slot_state, cap * sizeof(*a));
            if (a) {
                c->slot_state = a;
            }
            int32_t *b = realloc(c->slot_prev, cap * sizeof(*b));
            if (b) {
                c->slot_prev = b;
            }
            int32_t *d = realloc(c->slot_next, cap * sizeof(*d));
            if (d) {
                c->slot_next = d;
            }
            if (!m || !a || !b || !d) {
                return -1;
            }
            c->cap_slots = cap;
        }
        return c->n_used_slots++;
    }
    int32_t s = c->slot_tail;
    slot_unlink(c, s);
    if (c->slot_state[s] >= 0) {
        c->states[c->slot_state[s]].mask_slot = -1;
    }
    return s;
}

/* ---- the walk ---- */

/* Fills mask with the tokens whose bytes can follow (sid, partial). */
static hs_status walk(struct hs_grammar_cache *c, int32_t sid, uint32_t partial, uint32_t *mask)
{
    const struct hs_token_trie *t = c->trie;
    uint32_t(*w)[2] = c->walk;
    memset(mask, 0, c->mask_words * sizeof(*mask));
    w[0][0] = (uint32_t)sid;
    w[0][1] = partial;
    /* A walk cannot reset the cache under itself; past these it gives up instead. */
    uint64_t hard_states = HS_MAX(4 * (uint64_t)c->p.max_states, (uint64_t)1 << 18);
    uint64_t hard_frames = cache_hard_frames(c);
    uint32_t i = 1, check = 0;
    while (i < t->n_nodes) {
        uint32_t d = t->depth[i];
        uint32_t ps = w[d - 1][0], pp = w[d - 1][1];
        uint8_t b = t->byte[i];
        int32_t ns = HS__ASCII_UNKNOWN;
        if (pp == 0 && b < 0x80 && c->states[ps].ascii) {
            ns = c->states[ps].ascii[b];
        }
        if (ns == HS__ASCII_UNKNOWN) {
            ns = hs__cache_step(c, (int32_t)ps, &pp, b);
            if (ns == HS__STATE_ERROR) {
                return c->error;
            }
            if (++check % 4096 == 0 && (c->n_states > hard_states || c->n_frames > hard_frames)) {
                return HS_E_RANGE; /* a grammar whose states explode over this vocabulary */
            }
        }
        if (ns < 0) {
            i = t->end[i];
            continue;
        }
        w[d][0] = (uint32_t)ns;
        w[d][1] = pp;
        for (uint32_t k = t->tok_off[i]; k < t->tok_off[i + 1]; k++) {
            hs_token_mask_set(mask, t->toks[k]);
        }
        /* A large subtree whose bytes all lead from ns back to ns (a string body under a
         * subtree without quotes or backslashes) is allowed whole, without stepping it. */
        if (pp == 0 && t->valid[i] && t->end[i] - i > 32) {
            uint64_t br = hs__cache_breakers(c, ns);
            if (br == UINT64_MAX) {
                return c->error;
            }
            if ((t->below[i] & br) == 0) {
                for (uint32_t k = t->tok_off[i + 1]; k < t->tok_off[t->end[i]]; k++) {
                    hs_token_mask_set(mask, t->toks[k]);
                }
                i = t->end[i];
                continue;
            }
        }
        i++;
    }
    if (partial == 0 && c->states[sid].complete) {
        for (int32_t k = 0; k < t->n_eog; k++) {
            hs_token_mask_set(mask, t->eog[k]);
        }
    }
    return HS_OK;
}

static hs_status state_mask(struct hs_grammar_cache *c, int32_t sid, uint32_t partial,
                            const uint32_t **out)
{
    if (partial != 0) { /* inside a character: rare, not worth a slot */
        HS_TRY(walk(c, sid, partial, c->scratch_mask));
        c->stats.n_mask_walks++;
        *out = c->scratch_mask;
        return HS_OK;
    }
    int32_t s = c->states[sid].mask_slot;
    if (s >= 0) {
        slot_unlink(c, s);
        slot_push_front(c, s);
        c->stats.n_mask_hits++;
        *out = c->masks + (size_t)s * c->mask_words;
        return HS_OK;
    }
    s = slot_take(c);
    if (s < 0) {
        return HS_E_NOMEM;
    }
    uint32_t *m = c->masks + (size_t)s * c->mask_words;
    hs_status st = walk(c, sid, 0, m);
    if (st != HS_OK) {
        c->slot_state[s] = -1; /* back as the least recently used, owned by no state */
        c->slot_next[s] = -1;
        c->slot_prev[s] = c->slot_tail;
        if (c->slot_tail >= 0) {
            c->slot_next[c->slot_tail] = s;
        } else {
            c->slot_head = s;
        }
        c->slot_tail = s;
        return st;
    }
    c->stats.n_mask_walks++;
    c->slot_state[s] = sid;
    c->states[sid].mask_slot = s;
    slot_push_front(c, s);
    *out = m;
    return HS_OK;
}

/* ---- matchers over tokens ---- */

hs_status hs_grammar_matcher_mask(struct hs_grammar_matcher *m, const uint32_t **mask)
{
    *mask = NULL;
    struct hs_grammar_cache *c = m->c;
    if (!c->trie) {
        return HS_E_NOTSUP;
    }
    HS_TRY(hs__cache_maybe_reset(c));
    if (m->done) {
        memset(c->scratch_mask, 0, c->mask_words * sizeof(uint32_t));
        *mask = c->scratch_mask;
        return HS_OK;
    }
    return state_mask(c, m->sid, m->partial, mask);
}

hs_status hs_grammar_matcher_accept_token(struct hs_grammar_matcher *m, hs_token t)
{
    const struct hs_token_trie *trie = m->c->trie;
    if (!trie) {
        return HS_E_NOTSUP;
    }
    if (t < 0 || t >= trie->n_vocab || m->done) {
        return HS_E_INVAL;
    }
    if (trie->is_eog[t]) {
        if (!hs_grammar_matcher_can_complete(m)) {
            return HS_E_INVAL;
        }
        m->done = true;
        return HS_OK;
    }
    uint32_t off = trie->piece_off[t], len = trie->piece_off[t + 1] - off;
    if (len == 0) {
        return HS_E_INVAL; /* a special token: never part of constrained output */
    }
    return hs_grammar_matcher_accept_bytes(m, trie->pieces + off, len);
}

static hs_status constraint_allowed(void *user, struct hs_token_set *set)
{
    const uint32_t *mask;
    HS_TRY(hs_grammar_matcher_mask(user, &mask));
    set->kind = HS_TOKEN_SET_MASK;
    set->mask = mask;
    return HS_OK;
}

static hs_status constraint_accept(void *user, hs_token t)
{
    return hs_grammar_matcher_accept_token(user, t);
}

struct hs_sampler_constraint hs_grammar_matcher_constraint(struct hs_grammar_matcher *m)
{
    return (struct hs_sampler_constraint){
        .allowed = constraint_allowed,
        .accept = constraint_accept,
        .user = m,
    };
}
