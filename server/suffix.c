/* Suffix tries over token ids (see suffix.h): a forest of nodes found by (parent, token) through
 * one chained hash table, the texts put in through a cursor of the nodes of their current
 * suffixes, drafting by the most frequent continuation, and the store of earlier responses with
 * its LRU. */
#include "server/suffix.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

const char *hs_suffix_source_str(enum hs_suffix_source s)
{
    switch (s) {
    case HS_SUFFIX_SOURCE_REQUEST:
        return "request";
    case HS_SUFFIX_SOURCE_PROMPT:
        return "prompt";
    case HS_SUFFIX_SOURCE_GLOBAL:
        return "global";
    case HS_SUFFIX_SOURCE_COUNT:
        break;
    }
    return "none";
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* ---- the forest ---- */

struct node {
    hs_token tok;    /* -1: a root */
    int32_t count;   /* occurrences of the node's string (a root: tokens put in); -1: free */
    int32_t parent;  /* -1: a root */
    int32_t child;   /* first child, -1: none */
    int32_t sibling; /* next child of parent; on the free list: the next free node */
    int32_t hnext;   /* next node of its hash bucket */
};

struct forest {
    struct node *nodes; /* [cap] */
    int32_t n_used;     /* nodes ever handed out: [0, n_used) are live or free */
    int32_t cap;
    int32_t free_head;
    int32_t n_live;
    int32_t max_live; /* never more live nodes than this */
    int32_t *buckets; /* [mask + 1] first node of each chain, -1: empty */
    uint32_t mask;
};

static uint32_t bucket_of(const struct forest *f, int32_t parent, hs_token tok)
{
    return (uint32_t)mix64((uint64_t)(uint32_t)parent << 32 | (uint32_t)tok) & f->mask;
}

static hs_status forest_init(struct forest *f, int32_t max_live)
{
    memset(f, 0, sizeof(*f));
    f->free_head = -1;
    f->max_live = max_live;
    f->mask = 63;
    f->buckets = malloc(((size_t)f->mask + 1) * sizeof(*f->buckets));
    if (!f->buckets) {
        return HS_E_NOMEM;
    }
    memset(f->buckets, 0xff, ((size_t)f->mask + 1) * sizeof(*f->buckets));
    return HS_OK;
}

static void forest_finish(struct forest *f)
{
    free(f->nodes);
    free(f->buckets);
    memset(f, 0, sizeof(*f));
}

static size_t forest_bytes(const struct forest *f)
{
    return (size_t)f->cap * sizeof(struct node) + ((size_t)f->mask + 1) * sizeof(int32_t);
}

/* Room for n more nodes without growing the array, whatever the free list holds. The array
 * doubles while small, then grows by FOREST_CHUNK nodes (about 1 MiB), and never past max_live:
 * what a bounded forest has allocated stays within its bound (pages a realloc leaves untouched
 * would not count in RSS, but the bytes reported would). */
#define FOREST_CHUNK ((int64_t)(1 << 20) / (int64_t)sizeof(struct node))
static bool forest_reserve(struct forest *f, int64_t n)
{
    const int64_t need = (int64_t)f->n_used + n;
    if (need <= f->cap) {
        return true;
    }
    if (need > f->max_live) {
        return false;
    }
    int64_t cap = (int64_t)f->cap + HS_MAX(64, HS_MIN((int64_t)f->cap, FOREST_CHUNK));
    cap = HS_MIN(HS_MAX(cap, need), (int64_t)f->max_live);
    struct node *p = realloc(f->nodes, (size_t)cap * sizeof(*p));
    if (!p) {
        return false;
    }
    f->nodes = p;
    f->cap = (int32_t)cap;
    return true;
}

/* Resizes the hash table to n_buckets (a power of two); on failure it stays as it was (the
 * chains just get longer). */
static void forest_rehash(struct forest *f, uint32_t n_buckets)
{
    int32_t *b = malloc((size_t)n_buckets * sizeof(*b));
    if (!b) {
        return;
    }
    memset(b, 0xff, (size_t)n_buckets * sizeof(*b));
    free(f->buckets);
    f->buckets = b;
    f->mask = n_buckets - 1;
    for (int32_t i = 0; i < f->n_used; i++) {
        struct node *x = &f->nodes[i];
        if (x->count >= 0 && x->parent >= 0) {
            const uint32_t h = bucket_of(f, x->parent, x->tok);
            x->hnext = b[h];
            b[h] = i;
        }
    }
}

static int32_t find(const struct forest *f, int32_t parent, hs_token tok)
{
    for (int32_t i = f->buckets[bucket_of(f, parent, tok)]; i >= 0; i = f->nodes[i].hnext) {
        if (f->nodes[i].parent == parent && f->nodes[i].tok == tok) {
            return i;
        }
    }
    return -1;
}

static int32_t alloc_node(struct forest *f)
{
    if (f->n_live >= f->max_live) {
        return -1;
    }
    int32_t i = f->free_head;
    if (i >= 0) {
        f->free_head = f->nodes[i].sibling;
    } else {
        if (!forest_reserve(f, 1)) {
            return -1;
        }
        i = f->n_used++;
    }
    f->n_live++;
    f->nodes[i] =
        (struct node){.tok = -1, .count = 0, .parent = -1, .child = -1, .sibling = -1, .hnext = -1};
    return i;
}

static int32_t new_root(struct forest *f)
{
    return alloc_node(f);
}

/* A new child tok of parent, count 0; -1 when no node can be had. */
static int32_t add_child(struct forest *f, int32_t parent, hs_token tok)
{
    const int32_t i = alloc_node(f);
    if (i < 0) {
        return -1;
    }
    if ((uint32_t)f->n_live > f->mask + 1) {
        forest_rehash(f, (f->mask + 1) * 2);
    }
    struct node *x = &f->nodes[i];
    x->tok = tok;
    x->parent = parent;
    x->sibling = f->nodes[parent].child;
    f->nodes[parent].child = i;
    const uint32_t h = bucket_of(f, parent, tok);
    x->hnext = f->buckets[h];
    f->buckets[h] = i;
    return i;
}

/* Frees node i. Its children must be free or being freed too; a parent already freed is left
 * alone (its child list died with it), so a set of nodes can be freed in any order. */
static void free_node(struct forest *f, int32_t i)
{
    struct node *x = &f->nodes[i];
    const int32_t p = x->parent;
    if (p >= 0) {
        if (f->nodes[p].count >= 0) {
            int32_t *link = &f->nodes[p].child;
            while (*link != i) {
                link = &f->nodes[*link].sibling;
            }
            *link = x->sibling;
        }
        int32_t *h = &f->buckets[bucket_of(f, p, x->tok)];
        while (*h != i) {
            h = &f->nodes[*h].hnext;
        }
        *h = x->hnext;
    }
    x->count = -1;
    x->sibling = f->free_head;
    f->free_head = i;
    f->n_live--;
}

/* ---- putting texts in and taking them out ---- */

/* The nodes of a text's current suffixes: act[L] is the suffix of length L (act[0] the root),
 * for L <= n_act; -1 where the trie could not hold it. */
struct cursor {
    int32_t act[HS_SUFFIX_DEPTH + 1];
    int32_t n_act;
};

static void cursor_init(struct cursor *c, int32_t root)
{
    c->act[0] = root;
    c->n_act = 0;
}

/* Nodes whose count dropped to 0 while a text was taken out. */
struct zeros {
    int32_t *ids;
    size_t n, cap;
};

/* Moves the cursor over tok, adding delta (+1: creating what is missing; -1: recording nodes
 * that reach 0 in z) to the count of every new suffix. Returns false when a node could not be
 * created; no node is created after that (so that taking the same text out again, cursor for
 * cursor, finds exactly the nodes whose counts went up). */
static bool cursor_push(struct forest *f, struct cursor *c, hs_token tok, int32_t delta,
                        struct zeros *z)
{
    bool ok = true;
    const int32_t top = HS_MIN(c->n_act, HS_SUFFIX_DEPTH - 1);
    for (int32_t L = top; L >= 0; L--) {
        const int32_t a = c->act[L];
        int32_t ch = -1;
        if (a >= 0) {
            ch = find(f, a, tok);
            if (ch < 0 && delta > 0 && ok) {
                ch = add_child(f, a, tok);
                ok = ok && ch >= 0;
            }
            if (ch >= 0) {
                f->nodes[ch].count += delta;
                if (f->nodes[ch].count == 0 && z) {
                    z->ids[z->n++] = ch;
                }
            }
        }
        c->act[L + 1] = ch;
    }
    f->nodes[c->act[0]].count += delta;
    c->n_act = top + 1;
    return ok;
}

/* ---- drafting ---- */

static int32_t walk(const struct forest *f, int32_t x, const hs_token *s, int32_t n)
{
    for (int32_t i = 0; i < n && x >= 0; i++) {
        x = find(f, x, s[i]);
    }
    return x;
}

/* The most frequent child of x (the lower token on ties), -1 when none. */
static int32_t best_child(const struct forest *f, int32_t x)
{
    int32_t best = -1;
    for (int32_t c = f->nodes[x].child; c >= 0; c = f->nodes[c].sibling) {
        if (best < 0 || f->nodes[c].count > f->nodes[best].count ||
            (f->nodes[c].count == f->nodes[best].count && f->nodes[c].tok < f->nodes[best].tok)) {
            best = c;
        }
    }
    return best;
}

/* The longest suffix of buf [n], at most max_m tokens, that the trie holds with a continuation:
 * its node (depth in *depth), or -1. What the trie holds is closed under suffixes, so the longest
 * held suffix is found by bisection, then shorter ones are tried for a continuation. */
static int32_t match(const struct forest *f, int32_t root, const hs_token *buf, int32_t n,
                     int32_t max_m, int32_t *depth)
{
    int32_t lo = 0;
    int32_t hi = HS_MIN(HS_MIN(max_m, n), HS_SUFFIX_DEPTH - 1);
    while (lo < hi) {
        const int32_t mid = (lo + hi + 1) / 2;
        if (walk(f, root, buf + n - mid, mid) >= 0) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    for (int32_t m = lo; m >= 1; m--) {
        const int32_t x = walk(f, root, buf + n - m, m);
        if (x >= 0 && f->nodes[x].child >= 0) {
            *depth = m;
            return x;
        }
    }
    return -1;
}

/* Drafts from the trie at root for the context ctx [n_ctx]. cur: the context's own cursor when
 * the trie holds the context itself (its suffixes' occurrences at the very end have no
 * continuation yet and do not count), else NULL. */
static void draft_from(const struct forest *f, int32_t root, const struct cursor *cur,
                       const hs_token *ctx, int32_t n_ctx, int32_t max_draft, float min_score,
                       struct hs_suffix_draft *d)
{
    hs_token buf[HS_SUFFIX_MAX_MATCH + HS_SUFFIX_MAX_DRAFT];
    int32_t nb = HS_MIN(n_ctx, HS_SUFFIX_MAX_MATCH);
    memcpy(buf, ctx + n_ctx - nb, (size_t)nb * sizeof(*buf));
    d->n_tokens = 0;
    d->expected = 0.0f;
    d->match_len = 0;
    max_draft = HS_MAX(0, HS_MIN(max_draft, HS_SUFFIX_MAX_DRAFT));
    if (max_draft == 0 || root < 0) {
        return;
    }
    int32_t depth = 0;
    int32_t x = -1;
    if (cur) {
        for (int32_t m = HS_MIN(cur->n_act, HS_MIN(HS_SUFFIX_MAX_MATCH, HS_SUFFIX_DEPTH - 1));
             m >= 1; m--) {
            if (cur->act[m] >= 0 && f->nodes[cur->act[m]].child >= 0) {
                x = cur->act[m];
                depth = m;
                break;
            }
        }
    } else {
        x = match(f, root, buf, nb, HS_SUFFIX_MAX_MATCH, &depth);
    }
    if (x < 0) {
        return;
    }
    d->match_len = depth;
    double score = 1.0;
    int32_t anchors = 0;
    while (d->n_tokens < max_draft) {
        if (depth >= HS_SUFFIX_DEPTH) {
            /* The trie ends here: go on from a shorter suffix of what is known by now. */
            if (++anchors > 4) {
                break;
            }
            x = match(f, root, buf, nb, HS_SUFFIX_DEPTH / 2, &depth);
            if (x < 0) {
                break;
            }
        }
        const int32_t c = best_child(f, x);
        if (c < 0) {
            break;
        }
        int32_t denom = f->nodes[x].count;
        if (cur && depth <= cur->n_act && cur->act[depth] == x) {
            denom--; /* the open occurrence at the end of the context */
        }
        if (denom <= 0) {
            break;
        }
        score *= (double)f->nodes[c].count / (double)denom;
        if (score < (double)min_score) {
            break;
        }
        d->tokens[d->n_tokens] = f->nodes[c].tok;
        d->score[d->n_tokens] = (float)score;
        d->expected += (float)score;
        d->n_tokens++;
        buf[nb++] = f->nodes[c].tok;
        x = c;
        depth++;
    }
}

/* ---- one growing text ---- */

struct hs_suffix_text {
    struct forest f;
    int32_t root;
    struct cursor cur;
    int32_t n_tokens;
};

hs_status hs_suffix_text_create(int32_t max_nodes, struct hs_suffix_text **out)
{
    *out = NULL;
    struct hs_suffix_text *t = calloc(1, sizeof(*t));
    if (!t) {
        return HS_E_NOMEM;
    }
    if (forest_init(&t->f, max_nodes > 0 ? max_nodes : HS_SUFFIX_TEXT_NODES) != HS_OK ||
        (t->root = new_root(&t->f)) < 0) {
        hs_suffix_text_destroy(t);
        return HS_E_NOMEM;
    }
    cursor_init(&t->cur, t->root);
    *out = t;
    return HS_OK;
}

void hs_suffix_text_destroy(struct hs_suffix_text *t)
{
    if (t) {
        forest_finish(&t->f);
        free(t);
    }
}

hs_status hs_suffix_text_append(struct hs_suffix_text *t, const hs_token *tokens, int32_t n)
{
    bool ok = true;
    for (int32_t i = 0; i < n; i++) {
        /* past max_nodes a node is simply not made: only running out of memory is an error */
        if (!cursor_push(&t->f, &t->cur, tokens[i], 1, NULL) && t->f.n_live < t->f.max_live) {
            ok = false;
        }
        t->n_tokens++;
    }
    return ok ? HS_OK : HS_E_NOMEM;
}

int32_t hs_suffix_text_n_tokens(const struct hs_suffix_text *t)
{
    return t->n_tokens;
}

size_t hs_suffix_text_bytes(const struct hs_suffix_text *t)
{
    return sizeof(*t) + forest_bytes(&t->f);
}

void hs_suffix_text_draft(const struct hs_suffix_text *t, const hs_token *text, int32_t max_draft,
                          float min_score, struct hs_suffix_draft *d)
{
    draft_from(&t->f, t->root, &t->cur, text, t->n_tokens, max_draft, min_score, d);
    d->source = HS_SUFFIX_SOURCE_REQUEST;
}

/* ---- earlier responses ---- */

/* A trie of the store: a prompt's (its responses) or a salt's (all its responses). */
struct trie {
    uint64_t key;
    int32_t root;   /* -1: free record */
    int32_t n_resp; /* responses in it */
    int32_t next;   /* next record of its map chain; on the free list: the next free record */
    int32_t first;  /* a prompt's trie: its first response (the list through resp.gnext) */
};

struct resp {
    hs_token *toks; /* owns, [n]: the prompt's lead, then the response */
    int32_t n;
    int32_t trie[2];      /* the prompt's trie, the salt's trie */
    int32_t prev, next;   /* LRU list, most recent first; on the free list: next */
    int32_t gprev, gnext; /* its prompt's list */
};

struct hs_suffix_store {
    struct forest f;
    size_t max_bytes;
    struct trie *tries; /* [cap_tries] */
    int32_t n_tries_used, cap_tries, tries_free, n_tries;
    int32_t *tmap; /* [tmask + 1] key -> first record of the chain */
    uint32_t tmask;
    struct resp *resps; /* [cap_resps] */
    int32_t n_resps_used, cap_resps, resps_free, n_resps;
    int32_t lru_head, lru_tail;
    size_t tok_bytes;
    uint64_t n_evicted;
    struct zeros z;
};

/* The store's bound in nodes: its bytes over this. A live node costs itself (24 bytes), one to
 * two hash buckets (4-8) and an entry of the zero list when a response as long as the store
 * allows is taken out (up to 2 per node of the bound); the rest is left to the responses' tokens
 * and records, which eviction keeps within the bytes. */
#define STORE_BYTES_PER_NODE 40

hs_status hs_suffix_store_create(size_t max_bytes, struct hs_suffix_store **out)
{
    *out = NULL;
    struct hs_suffix_store *s = calloc(1, sizeof(*s));
    if (!s) {
        return HS_E_NOMEM;
    }
    s->max_bytes = max_bytes ? max_bytes : HS_SUFFIX_STORE_BYTES;
    s->tries_free = s->resps_free = -1;
    s->lru_head = s->lru_tail = -1;
    s->tmask = 63;
    s->tmap = malloc(((size_t)s->tmask + 1) * sizeof(*s->tmap));
    const size_t max_live = HS_MIN(s->max_bytes / STORE_BYTES_PER_NODE, (size_t)INT32_MAX);
    if (!s->tmap || forest_init(&s->f, (int32_t)HS_MAX(max_live, 4 * HS_SUFFIX_DEPTH)) != HS_OK) {
        hs_suffix_store_destroy(s);
        return HS_E_NOMEM;
    }
    memset(s->tmap, 0xff, ((size_t)s->tmask + 1) * sizeof(*s->tmap));
    *out = s;
    return HS_OK;
}

void hs_suffix_store_destroy(struct hs_suffix_store *s)
{
    if (!s) {
        return;
    }
    for (int32_t i = 0; i < s->n_resps_used; i++) {
        free(s->resps[i].toks);
    }
    free(s->resps);
    free(s->tries);
    free(s->tmap);
    free(s->z.ids);
    forest_finish(&s->f);
    free(s);
}

uint64_t hs_suffix_prompt_key(uint64_t salt, const hs_token *prompt, int32_t n_prompt)
{
    uint64_t h = mix64(salt ^ 0x70726f6d70742121ULL) ^ (uint64_t)n_prompt;
    for (int32_t i = 0; i < n_prompt; i++) {
        h = mix64(h ^ (uint64_t)(uint32_t)prompt[i]) + 0x9e3779b97f4a7c15ULL;
    }
    return h;
}

static uint64_t salt_key(uint64_t salt)
{
    return mix64(salt ^ 0x676c6f62616c2121ULL) ^ 0x5a5a5a5a5a5a5a5aULL;
}

size_t hs_suffix_store_bytes(const struct hs_suffix_store *s)
{
    /* what is allocated, not what is in use: the node array and the records keep their peak */
    return sizeof(*s) + forest_bytes(&s->f) + s->tok_bytes +
           (size_t)s->cap_tries * sizeof(struct trie) + (size_t)s->cap_resps * sizeof(struct resp) +
           ((size_t)s->tmask + 1) * sizeof(int32_t) + s->z.cap * sizeof(*s->z.ids);
}

int32_t hs_suffix_store_n_responses(const struct hs_suffix_store *s)
{
    return s->n_resps;
}

uint64_t hs_suffix_store_n_evicted(const struct hs_suffix_store *s)
{
    return s->n_evicted;
}

static int32_t trie_find(const struct hs_suffix_store *s, uint64_t key)
{
    for (int32_t i = s->tmap[key & s->tmask]; i >= 0; i = s->tries[i].next) {
        if (s->tries[i].key == key) {
            return i;
        }
    }
    return -1;
}

static void tmap_rehash(struct hs_suffix_store *s)
{
    const uint32_t n = (s->tmask + 1) * 2;
    int32_t *m = malloc((size_t)n * sizeof(*m));
    if (!m) {
        return;
    }
    memset(m, 0xff, (size_t)n * sizeof(*m));
    free(s->tmap);
    s->tmap = m;
    s->tmask = n - 1;
    for (int32_t i = 0; i < s->n_tries_used; i++) {
        if (s->tries[i].root >= 0) {
            s->tries[i].next = m[s->tries[i].key & s->tmask];
            m[s->tries[i].key & s->tmask] = i;
        }
    }
}

/* The trie of key, made (empty) when missing; -1 when out of memory. */
static int32_t trie_get(struct hs_suffix_store *s, uint64_t key)
{
    int32_t i = trie_find(s, key);
    if (i >= 0) {
        return i;
    }
    if (s->tries_free < 0 && s->n_tries_used == s->cap_tries) {
        const int32_t cap = s->cap_tries ? s->cap_tries * 2 : 16;
        struct trie *p = realloc(s->tries, (size_t)cap * sizeof(*p));
        if (!p) {
            return -1;
        }
        s->tries = p;
        s->cap_tries = cap;
    }
    const int32_t root = new_root(&s->f);
    if (root < 0) {
        return -1;
    }
    if (s->tries_free >= 0) {
        i = s->tries_free;
        s->tries_free = s->tries[i].next;
    } else {
        i = s->n_tries_used++;
    }
    s->tries[i] = (struct trie){.key = key, .root = root, .n_resp = 0, .first = -1};
    s->tries[i].next = s->tmap[key & s->tmask];
    s->tmap[key & s->tmask] = i;
    s->n_tries++;
    if ((uint32_t)s->n_tries > s->tmask + 1) {
        tmap_rehash(s);
    }
    return i;
}

/* Frees an empty trie: its root and its record. */
static void trie_drop(struct hs_suffix_store *s, int32_t i)
{
    struct trie *t = &s->tries[i];
    int32_t *link = &s->tmap[t->key & s->tmask];
    while (*link != i) {
        link = &s->tries[*link].next;
    }
    *link = t->next;
    free_node(&s->f, t->root);
    t->root = -1;
    t->next = s->tries_free;
    s->tries_free = i;
    s->n_tries--;
}

static void lru_unlink(struct hs_suffix_store *s, int32_t i)
{
    struct resp *r = &s->resps[i];
    if (r->prev >= 0) {
        s->resps[r->prev].next = r->next;
    } else {
        s->lru_head = r->next;
    }
    if (r->next >= 0) {
        s->resps[r->next].prev = r->prev;
    } else {
        s->lru_tail = r->prev;
    }
    r->prev = r->next = -1;
}

static void lru_push_front(struct hs_suffix_store *s, int32_t i)
{
    struct resp *r = &s->resps[i];
    r->prev = -1;
    r->next = s->lru_head;
    if (s->lru_head >= 0) {
        s->resps[s->lru_head].prev = i;
    } else {
        s->lru_tail = i;
    }
    s->lru_head = i;
}

/* Puts text [n] into (delta +1) or takes it out of (-1) the trie at root; taking out frees the
 * nodes that no text holds any more. */
static void trie_put(struct hs_suffix_store *s, int32_t root, const hs_token *text, int32_t n,
                     int32_t delta)
{
    struct cursor c;
    cursor_init(&c, root);
    s->z.n = 0;
    for (int32_t i = 0; i < n; i++) {
        cursor_push(&s->f, &c, text[i], delta, delta < 0 ? &s->z : NULL);
    }
    for (size_t i = 0; i < s->z.n; i++) {
        free_node(&s->f, s->z.ids[i]);
    }
}

static void evict(struct hs_suffix_store *s, int32_t i)
{
    struct resp *r = &s->resps[i];
    for (int k = 0; k < 2; k++) {
        struct trie *t = &s->tries[r->trie[k]];
        trie_put(s, t->root, r->toks, r->n, -1);
        if (--t->n_resp == 0) {
            trie_drop(s, r->trie[k]);
        }
    }
    struct trie *g = &s->tries[r->trie[0]];
    if (r->gprev >= 0) {
        s->resps[r->gprev].gnext = r->gnext;
    } else if (g->root >= 0) {
        g->first = r->gnext;
    }
    if (r->gnext >= 0) {
        s->resps[r->gnext].gprev = r->gprev;
    }
    lru_unlink(s, i);
    free(r->toks);
    s->tok_bytes -= (size_t)r->n * sizeof(hs_token);
    r->toks = NULL;
    r->next = s->resps_free;
    s->resps_free = i;
    s->n_resps--;
    s->n_evicted++;
}

/* Puts text [n] into the trie at root; out of nodes, takes back what went in (cursor for cursor,
 * so every count is as it was) and returns false. */
static bool trie_put_all(struct hs_suffix_store *s, int32_t root, const hs_token *text, int32_t n)
{
    struct cursor c;
    cursor_init(&c, root);
    for (int32_t i = 0; i < n; i++) {
        if (!cursor_push(&s->f, &c, text[i], 1, NULL)) {
            trie_put(s, root, text, i + 1, -1);
            return false;
        }
    }
    return true;
}

/* Unpins trie i (see put_response), dropping it when no response holds it. */
static void trie_unpin(struct hs_suffix_store *s, int32_t i)
{
    if (--s->tries[i].n_resp == 0) {
        trie_drop(s, i);
    }
}

/* Puts toks [n] into the trie of prompt_key and the salt's (made when missing, pinned by a count
 * of responses that already includes this one) into tr[2]; false when the nodes ran out, with
 * everything as it was. */
static bool put_response(struct hs_suffix_store *s, uint64_t keys[2], const hs_token *toks,
                         int32_t n, int32_t tr[2])
{
    int32_t k = 0;
    for (; k < 2; k++) {
        tr[k] = trie_get(s, keys[k]);
        if (tr[k] < 0) {
            break;
        }
        s->tries[tr[k]].n_resp++;
        if (!trie_put_all(s, s->tries[tr[k]].root, toks, n)) {
            trie_unpin(s, tr[k]);
            break;
        }
    }
    if (k == 2) {
        return true;
    }
    while (k-- > 0) {
        trie_put(s, s->tries[tr[k]].root, toks, n, -1);
        trie_unpin(s, tr[k]);
    }
    return false;
}

hs_status hs_suffix_store_add(struct hs_suffix_store *s, uint64_t salt, uint64_t prompt_key,
                              const hs_token *prompt, int32_t n_prompt, const hs_token *resp,
                              int32_t n_resp)
{
    const int32_t lead = HS_MIN(HS_MAX(n_prompt, 0), HS_SUFFIX_MAX_MATCH);
    /* A text puts at most HS_SUFFIX_DEPTH nodes per token in each of its two tries: one longer
     * than the store's nodes could surely take alone is cut (a repeat drafts its beginning
     * first), which also bounds the zero list of taking a text out. */
    n_resp = HS_MIN(n_resp, (s->f.max_live - 2) / (2 * HS_SUFFIX_DEPTH) - lead);
    if (n_resp <= 0) {
        return HS_OK;
    }
    const int32_t n = lead + n_resp;
    const size_t worst = (size_t)n * HS_SUFFIX_DEPTH;
    if (worst > s->z.cap) {
        int32_t *z = realloc(s->z.ids, worst * sizeof(*z));
        if (!z) {
            return HS_E_NOMEM;
        }
        s->z.ids = z;
        s->z.cap = worst;
    }
    hs_token *toks = malloc((size_t)n * sizeof(*toks));
    if (!toks) {
        return HS_E_NOMEM;
    }
    memcpy(toks, prompt + n_prompt - lead, (size_t)lead * sizeof(*toks));
    memcpy(toks + lead, resp, (size_t)n_resp * sizeof(*toks));
    if (s->resps_free < 0 && s->n_resps_used == s->cap_resps) {
        const int32_t cap = s->cap_resps ? s->cap_resps * 2 : 16;
        struct resp *p = realloc(s->resps, (size_t)cap * sizeof(*p));
        if (!p) {
            free(toks);
            return HS_E_NOMEM;
        }
        s->resps = p;
        s->cap_resps = cap;
    }
    /* Out of nodes: evict least recently used responses until the free nodes have doubled (or
     * could hold the text's worst case), and try again; nothing is reserved up front, so a
     * response takes only the nodes it adds. */
    uint64_t keys[2] = {prompt_key, salt_key(salt)};
    int32_t tr[2];
    while (!put_response(s, keys, toks, n, tr)) {
        const int64_t free0 = (int64_t)s->f.max_live - s->f.n_live;
        const int64_t want = HS_MIN(2 * (int64_t)worst + 2, HS_MAX(2 * free0, 64));
        if (s->lru_tail < 0 || free0 >= want) {
            /* nothing left to evict, or the nodes were there and the allocator failed */
            free(toks);
            return HS_E_NOMEM;
        }
        while (s->lru_tail >= 0 && (int64_t)s->f.max_live - s->f.n_live < want) {
            evict(s, s->lru_tail);
        }
    }
    int32_t i = s->resps_free;
    if (i >= 0) {
        s->resps_free = s->resps[i].next;
    } else {
        i = s->n_resps_used++;
    }
    struct resp *r = &s->resps[i];
    *r = (struct resp){.toks = toks,
                       .n = n,
                       .trie = {tr[0], tr[1]},
                       .prev = -1,
                       .next = -1,
                       .gprev = -1,
                       .gnext = s->tries[tr[0]].first};
    if (r->gnext >= 0) {
        s->resps[r->gnext].gprev = i;
    }
    s->tries[tr[0]].first = i;
    s->tok_bytes += (size_t)n * sizeof(hs_token);
    s->n_resps++;
    lru_push_front(s, i);
    bool evicted = false;
    while (hs_suffix_store_bytes(s) > s->max_bytes && s->lru_tail >= 0) {
        evict(s, s->lru_tail);
        evicted = true;
    }
    /* The hash table shrinks with the nodes; the node array keeps its peak (node ids stay), which
     * the bound on live nodes keeps within the store's bytes. */
    uint32_t nb = s->f.mask + 1;
    while (evicted && nb > 64 && (uint32_t)s->f.n_live < nb / 4) {
        nb /= 2;
    }
    if (nb != s->f.mask + 1) {
        forest_rehash(&s->f, nb);
    }
    return HS_OK;
}

void hs_suffix_store_touch(struct hs_suffix_store *s, uint64_t prompt_key)
{
    const int32_t t = trie_find(s, prompt_key);
    if (t < 0) {
        return;
    }
    for (int32_t i = s->tries[t].first; i >= 0; i = s->resps[i].gnext) {
        lru_unlink(s, i);
        lru_push_front(s, i);
    }
}

void hs_suffix_store_draft_from(const struct hs_suffix_store *s, enum hs_suffix_source source,
                                uint64_t salt, uint64_t prompt_key, const hs_token *text, int32_t n,
                                int32_t max_draft, float min_score, struct hs_suffix_draft *d)
{
    const uint64_t key = source == HS_SUFFIX_SOURCE_PROMPT ? prompt_key : salt_key(salt);
    const int32_t t = source == HS_SUFFIX_SOURCE_PROMPT || source == HS_SUFFIX_SOURCE_GLOBAL
                          ? trie_find(s, key)
                          : -1;
    draft_from(&s->f, t >= 0 ? s->tries[t].root : -1, NULL, text, n, max_draft, min_score, d);
    d->source = source;
}

void hs_suffix_store_draft(const struct hs_suffix_store *s, uint64_t salt, uint64_t prompt_key,
                           const hs_token *text, int32_t n, int32_t max_draft, float min_score,
                           struct hs_suffix_draft *d)
{
    struct hs_suffix_draft g;
    hs_suffix_store_draft_from(s, HS_SUFFIX_SOURCE_PROMPT, salt, prompt_key, text, n, max_draft,
                               min_score, d);
    hs_suffix_store_draft_from(s, HS_SUFFIX_SOURCE_GLOBAL, salt, prompt_key, text, n, max_draft,
                               min_score, &g);
    if (g.expected > d->expected) {
        *d = g;
    }
}
