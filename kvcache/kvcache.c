/* Paged KV block pool: free list, refcounts, chained block hashes for prefix reuse, and an LRU
 * list of cached (refcount 0, hashed) blocks. Every array is sized at create time. */
#include "kvcache/kvcache.h"

#include <stdlib.h>
#include <string.h>

#define HS__KV_HASH_SEED UINT64_C(0x6b76636163686531) /* parent "hash" of a sequence's block 0 */

struct hs_kv_pool {
    int32_t n_blocks;
    int32_t block_size;
    int32_t n_seqs; /* live sequences, checked at destroy */

    int32_t *refcount;     /* [n_blocks] sequences holding the block */
    bool *hashed;          /* [n_blocks] full block whose hash/parent_hash are valid */
    bool *in_table;        /* [n_blocks] hashed block registered in the hash table */
    uint64_t *hash;        /* [n_blocks] H(parent_hash, tokens of the block) */
    uint64_t *parent_hash; /* [n_blocks] hash of the previous block in its sequence */
    hs_token *tokens;      /* [n_blocks * block_size] token id recorded per slot */

    int32_t *free_stack; /* [n_blocks] free block ids; top is the next to hand out */
    int32_t n_free;

    int32_t *lru_prev; /* [n_blocks] cached blocks, head = oldest */
    int32_t *lru_next; /* [n_blocks] */
    int32_t lru_head;
    int32_t lru_tail;
    int32_t n_cached;

    int32_t n_used;

    int32_t *buckets;     /* [bucket_mask + 1] first block of each hash chain, -1 if none */
    int32_t *bucket_next; /* [n_blocks] next block in the same bucket */
    uint64_t bucket_mask;
};

struct hs_kv_seq {
    int32_t *blocks; /* owns, [cap_blocks]; the first n_blocks are valid */
    int32_t n_blocks;
    int32_t cap_blocks; /* grows by doubling up to what the sequence's context needs */
    int32_t n_tokens;   /* committed positions */
    int32_t n_ids;      /* leading positions whose token ids are recorded (<= n_tokens) */
    int32_t block_size;
    uint64_t seed; /* parent "hash" of block 0: HS__KV_HASH_SEED, or salted (a tenant's own) */
};

/* ---- hashing ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t block_hash(uint64_t parent, const hs_token *t, int32_t n)
{
    uint64_t h = mix64(parent + UINT64_C(0x9e3779b97f4a7c15));
    for (int32_t i = 0; i < n; i++) {
        h = mix64(h ^ ((uint64_t)(uint32_t)t[i] + UINT64_C(0x9e3779b97f4a7c15)));
    }
    return h;
}

static int32_t table_find(const struct hs_kv_pool *pool, uint64_t h, uint64_t parent,
                          const hs_token *t)
{
    size_t bs = (size_t)pool->block_size;
    for (int32_t b = pool->buckets[h & pool->bucket_mask]; b >= 0; b = pool->bucket_next[b]) {
        if (pool->hash[b] == h && pool->parent_hash[b] == parent &&
            memcmp(&pool->tokens[(size_t)b * bs], t, bs * sizeof(*t)) == 0) {
            return b;
        }
    }
    return -1;
}

static void table_insert(struct hs_kv_pool *pool, int32_t b)
{
    uint64_t k = pool->hash[b] & pool->bucket_mask;
    pool->bucket_next[b] = pool->buckets[k];
    pool->buckets[k] = b;
    pool->in_table[b] = true;
}

static void table_remove(struct hs_kv_pool *pool, int32_t b)
{
    int32_t *link = &pool->buckets[pool->hash[b] & pool->bucket_mask];
    while (*link != b) {
        HS_ASSERT(*link >= 0);
        link = &pool->bucket_next[*link];
    }
    *link = pool->bucket_next[b];
    pool->bucket_next[b] = -1;
    pool->in_table[b] = false;
}

/* ---- LRU of cached blocks ---- */

static void lru_push_tail(struct hs_kv_pool *pool, int32_t b)
{
    pool->lru_prev[b] = pool->lru_tail;
    pool->lru_next[b] = -1;
    if (pool->lru_tail >= 0) {
        pool->lru_next[pool->lru_tail] = b;
    } else {
        pool->lru_head = b;
    }
    pool->lru_tail = b;
    pool->n_cached++;
}

static void lru_remove(struct hs_kv_pool *pool, int32_t b)
{
    int32_t p = pool->lru_prev[b];
    int32_t n = pool->lru_next[b];
    if (p >= 0) {
        pool->lru_next[p] = n;
    } else {
        pool->lru_head = n;
    }
    if (n >= 0) {
        pool->lru_prev[n] = p;
    } else {
        pool->lru_tail = p;
    }
    pool->lru_prev[b] = pool->lru_next[b] = -1;
    pool->n_cached--;
}

/* ---- block lifetime ---- */

/* Returns a block with refcount 1, or -1 when none is allocatable. */
static int32_t block_alloc(struct hs_kv_pool *pool)
{
    int32_t b;
    if (pool->n_free > 0) {
        b = pool->free_stack[--pool->n_free];
    } else if (pool->lru_head >= 0) {
        b = pool->lru_head;
        lru_remove(pool, b);
        table_remove(pool, b);
        pool->hashed[b] = false;
    } else {
        return -1;
    }
    HS_ASSERT(pool->refcount[b] == 0);
    pool->refcount[b] = 1;
    pool->n_used++;
    return b;
}

static void block_release(struct hs_kv_pool *pool, int32_t b)
{
    HS_ASSERT(pool->refcount[b] > 0);
    if (--pool->refcount[b] > 0) {
        return;
    }
    pool->n_used--;
    if (pool->in_table[b]) {
        lru_push_tail(pool, b);
    } else {
        pool->hashed[b] = false;
        pool->free_stack[pool->n_free++] = b;
    }
}

static void block_adopt(struct hs_kv_pool *pool, int32_t b)
{
    if (pool->refcount[b] == 0) {
        lru_remove(pool, b);
        pool->n_used++;
    }
    pool->refcount[b]++;
}

/* ---- pool ---- */

hs_status hs_kv_pool_create(int32_t n_blocks, int32_t block_size, struct hs_kv_pool **out)
{
    *out = NULL;
    if (n_blocks <= 0 || block_size <= 0 || (int64_t)n_blocks * block_size > INT32_MAX) {
        return HS_E_INVAL;
    }
    struct hs_kv_pool *pool = calloc(1, sizeof(*pool));
    if (!pool) {
        return HS_E_NOMEM;
    }
    size_t nb = (size_t)n_blocks;
    size_t n_buckets = 1;
    while (n_buckets < 2 * nb) {
        n_buckets *= 2;
    }
    pool->n_blocks = n_blocks;
    pool->block_size = block_size;
    pool->refcount = calloc(nb, sizeof(*pool->refcount));
    pool->hashed = calloc(nb, sizeof(*pool->hashed));
    pool->in_table = calloc(nb, sizeof(*pool->in_table));
    pool->hash = calloc(nb, sizeof(*pool->hash));
    pool->parent_hash = calloc(nb, sizeof(*pool->parent_hash));
    pool->tokens = calloc(nb * (size_t)block_size, sizeof(*pool->tokens));
    pool->free_stack = malloc(nb * sizeof(*pool->free_stack));
    pool->lru_prev = malloc(nb * sizeof(*pool->lru_prev));
    pool->lru_next = malloc(nb * sizeof(*pool->lru_next));
    pool->buckets = malloc(n_buckets * sizeof(*pool->buckets));
    pool->bucket_next = malloc(nb * sizeof(*pool->bucket_next));
    if (!pool->refcount || !pool->hashed || !pool->in_table || !pool->hash || !pool->parent_hash ||
        !pool->tokens || !pool->free_stack || !pool->lru_prev || !pool->lru_next ||
        !pool->buckets || !pool->bucket_next) {
        goto fail;
    }
    pool->bucket_mask = (uint64_t)n_buckets - 1;
    for (size_t i = 0; i < n_buckets; i++) {
        pool->buckets[i] = -1;
    }
    for (int32_t i = 0; i < n_blocks; i++) {
        pool->free_stack[i] = n_blocks - 1 - i; /* block 0 is handed out first */
        pool->lru_prev[i] = pool->lru_next[i] = -1;
        pool->bucket_next[i] = -1;
    }
    pool->n_free = n_blocks;
    pool->lru_head = pool->lru_tail = -1;
    *out = pool;
    return HS_OK;

fail:
    hs_kv_pool_destroy(pool);
    return HS_E_NOMEM;
}

void hs_kv_pool_destroy(struct hs_kv_pool *pool)
{
    if (!pool) {
        return;
    }
    HS_ASSERT(pool->n_seqs == 0);
    free(pool->refcount);
    free(pool->hashed);
    free(pool->in_table);
    free(pool->hash);
    free(pool->parent_hash);
    free(pool->tokens);
    free(pool->free_stack);
    free(pool->lru_prev);
    free(pool->lru_next);
    free(pool->buckets);
    free(pool->bucket_next);
    free(pool);
}

int32_t hs_kv_pool_n_blocks(const struct hs_kv_pool *pool)
{
    return pool->n_blocks;
}

int32_t hs_kv_pool_block_size(const struct hs_kv_pool *pool)
{
    return pool->block_size;
}

int32_t hs_kv_pool_n_free(const struct hs_kv_pool *pool)
{
    return pool->n_free;
}

int32_t hs_kv_pool_n_cached(const struct hs_kv_pool *pool)
{
    return pool->n_cached;
}

int32_t hs_kv_pool_n_used(const struct hs_kv_pool *pool)
{
    return pool->n_used;
}

int32_t hs_kv_pool_n_available(const struct hs_kv_pool *pool)
{
    return pool->n_free + pool->n_cached;
}

int32_t hs_kv_pool_block_refcount(const struct hs_kv_pool *pool, int32_t b)
{
    if (b < 0 || b >= pool->n_blocks) {
        return -1;
    }
    return pool->refcount[b];
}

/* ---- sequences ---- */

hs_status hs_kv_seq_create(struct hs_kv_pool *pool, struct hs_kv_seq **out)
{
    *out = NULL;
    struct hs_kv_seq *seq = calloc(1, sizeof(*seq));
    if (!seq) {
        return HS_E_NOMEM;
    }
    seq->block_size = pool->block_size;
    seq->seed = HS__KV_HASH_SEED;
    pool->n_seqs++;
    *out = seq;
    return HS_OK;
}

void hs_kv_seq_destroy(struct hs_kv_pool *pool, struct hs_kv_seq *seq)
{
    if (!seq) {
        return;
    }
    for (int32_t j = seq->n_blocks - 1; j >= 0; j--) {
        block_release(pool, seq->blocks[j]);
    }
    pool->n_seqs--;
    free(seq->blocks);
    free(seq);
}

int32_t hs_kv_seq_capacity_blocks(const struct hs_kv_seq *seq)
{
    return seq->cap_blocks;
}

/* Grows the block table to hold need entries (need <= pool n_blocks), doubling, so a sequence
 * reused across requests stops allocating once it has seen its longest context. */
static hs_status table_grow(const struct hs_kv_pool *pool, struct hs_kv_seq *seq, int64_t need)
{
    if (need <= seq->cap_blocks) {
        return HS_OK;
    }
    int64_t cap = seq->cap_blocks > 0 ? seq->cap_blocks : 4;
    while (cap < need) {
        cap *= 2;
    }
    if (cap > pool->n_blocks) {
        cap = pool->n_blocks;
    }
    int32_t *t = realloc(seq->blocks, (size_t)cap * sizeof(*t));
    if (!t) {
        return HS_E_NOMEM;
    }
    seq->blocks = t;
    seq->cap_blocks = (int32_t)cap;
    return HS_OK;
}

int32_t hs_kv_seq_n_tokens(const struct hs_kv_seq *seq)
{
    return seq->n_tokens;
}

int32_t hs_kv_seq_n_blocks(const struct hs_kv_seq *seq)
{
    return seq->n_blocks;
}

const int32_t *hs_kv_seq_block_table(const struct hs_kv_seq *seq)
{
    return seq->blocks;
}

hs_status hs_kv_seq_reserve(struct hs_kv_pool *pool, struct hs_kv_seq *seq, int32_t n_new)
{
    if (n_new < 0) {
        return HS_E_INVAL;
    }
    int64_t bs = pool->block_size;
    int64_t need = ((int64_t)seq->n_tokens + n_new + bs - 1) / bs;
    if (need > pool->n_blocks) {
        return HS_E_RANGE;
    }
    int64_t extra = need - seq->n_blocks;
    if (extra <= 0) {
        return HS_OK;
    }
    if (extra > (int64_t)pool->n_free + pool->n_cached) {
        return HS_E_BUSY;
    }
    if (table_grow(pool, seq, need) != HS_OK) {
        return HS_E_NOMEM;
    }
    for (int64_t i = 0; i < extra; i++) {
        int32_t b = block_alloc(pool);
        HS_ASSERT(b >= 0);
        seq->blocks[seq->n_blocks++] = b;
    }
    return HS_OK;
}

hs_status hs_kv_seq_slots(const struct hs_kv_seq *seq, int32_t pos0, int32_t n, int32_t *slots)
{
    int32_t bs = seq->block_size;
    if (pos0 < 0 || n < 0 || (int64_t)pos0 + n > (int64_t)seq->n_blocks * bs) {
        return HS_E_RANGE;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t p = pos0 + i;
        slots[i] = (int32_t)hs_kv_slot(seq->blocks, bs, p);
    }
    return HS_OK;
}

/* Gives block j of seq (full, ids recorded) its chained hash and registers it unless an equal
 * block is registered already (two sequences computed the same prefix concurrently). */
static void hash_full_block(struct hs_kv_pool *pool, struct hs_kv_seq *seq, int32_t j)
{
    int32_t b = seq->blocks[j];
    uint64_t parent = j == 0 ? seq->seed : pool->hash[seq->blocks[j - 1]];
    HS_ASSERT(j == 0 || pool->hashed[seq->blocks[j - 1]]);
    const hs_token *t = &pool->tokens[(size_t)b * (size_t)pool->block_size];
    uint64_t h = block_hash(parent, t, pool->block_size);
    pool->hash[b] = h;
    pool->parent_hash[b] = parent;
    pool->hashed[b] = true;
    if (table_find(pool, h, parent, t) < 0) {
        table_insert(pool, b);
    }
}

hs_status hs_kv_seq_append_tokens(struct hs_kv_pool *pool, struct hs_kv_seq *seq,
                                  const hs_token *tokens, int32_t n)
{
    if (n < 0) {
        return HS_E_INVAL;
    }
    int32_t bs = pool->block_size;
    if ((int64_t)seq->n_tokens + n > (int64_t)seq->n_blocks * bs) {
        return HS_E_RANGE;
    }
    int32_t old = seq->n_tokens;
    if (tokens && seq->n_ids == old) {
        for (int32_t i = 0; i < n; i++) {
            int32_t p = old + i;
            pool->tokens[hs_kv_slot(seq->blocks, bs, p)] = tokens[i];
        }
        seq->n_ids = old + n;
    }
    seq->n_tokens = old + n;
    for (int32_t j = old / bs; j < seq->n_tokens / bs; j++) {
        if (seq->n_ids >= (j + 1) * bs) {
            hash_full_block(pool, seq, j);
        }
    }
    return HS_OK;
}

hs_status hs_kv_seq_truncate(struct hs_kv_pool *pool, struct hs_kv_seq *seq, int32_t n_tokens,
                             struct hs_kv_block_copy *copy)
{
    copy->src = copy->dst = -1;
    copy->n_tokens = 0;
    if (n_tokens < 0 || n_tokens > seq->n_tokens) {
        return HS_E_INVAL;
    }
    int32_t bs = pool->block_size;
    int32_t keep = (n_tokens + bs - 1) / bs;
    int32_t off = n_tokens % bs;
    int32_t cut = off != 0 ? seq->blocks[keep - 1] : -1; /* kept block that becomes partial */
    bool cow = cut >= 0 && pool->refcount[cut] > 1;
    if (cow) {
        int64_t avail = (int64_t)pool->n_free + pool->n_cached;
        for (int32_t j = keep; j < seq->n_blocks; j++) {
            avail += pool->refcount[seq->blocks[j]] == 1;
        }
        if (avail == 0) {
            return HS_E_BUSY;
        }
    }
    for (int32_t j = seq->n_blocks - 1; j >= keep; j--) {
        block_release(pool, seq->blocks[j]);
    }
    seq->n_blocks = keep;
    if (cow) {
        int32_t nb = block_alloc(pool);
        HS_ASSERT(nb >= 0);
        memcpy(&pool->tokens[(size_t)nb * (size_t)bs], &pool->tokens[(size_t)cut * (size_t)bs],
               (size_t)off * sizeof(*pool->tokens));
        block_release(pool, cut);
        seq->blocks[keep - 1] = nb;
        copy->src = cut;
        copy->dst = nb;
        copy->n_tokens = off;
    } else if (cut >= 0 && pool->hashed[cut]) {
        /* ours alone: it will be written again, so it can no longer be matched */
        if (pool->in_table[cut]) {
            table_remove(pool, cut);
        }
        pool->hashed[cut] = false;
    }
    seq->n_tokens = n_tokens;
    seq->n_ids = HS_MIN(seq->n_ids, n_tokens);
    if (n_tokens == 0) {
        seq->seed = HS__KV_HASH_SEED; /* an emptied sequence forgets its tenant */
    }
    return HS_OK;
}

void hs_kv_seq_set_salt(struct hs_kv_seq *seq, uint64_t salt)
{
    HS_ASSERT(seq->n_blocks == 0 && seq->n_tokens == 0);
    /* Salt 0 keeps the shared chain; any other starts a chain no other salt can reach, since a
     * lookup checks the parent hash of block 0 exactly. */
    seq->seed = salt == 0 ? HS__KV_HASH_SEED : mix64(HS__KV_HASH_SEED ^ mix64(salt));
}

hs_status hs_kv_seq_match_prefix(struct hs_kv_pool *pool, struct hs_kv_seq *seq,
                                 const hs_token *tokens, int32_t n, int32_t *n_cached)
{
    *n_cached = 0;
    if (seq->n_blocks != 0 || seq->n_tokens != 0 || n < 0 || (n > 0 && !tokens)) {
        return HS_E_INVAL;
    }
    int32_t bs = pool->block_size;
    int32_t max_blocks = n > 0 ? (n - 1) / bs : 0;
    if (max_blocks > pool->n_blocks) {
        max_blocks = pool->n_blocks;
    }
    if (table_grow(pool, seq, max_blocks) != HS_OK) {
        return HS_E_NOMEM;
    }
    uint64_t parent = seq->seed;
    int32_t j = 0;
    for (; j < max_blocks; j++) {
        const hs_token *t = &tokens[(size_t)j * (size_t)bs];
        uint64_t h = block_hash(parent, t, bs);
        int32_t b = table_find(pool, h, parent, t);
        if (b < 0) {
            break;
        }
        block_adopt(pool, b);
        seq->blocks[seq->n_blocks++] = b;
        parent = h;
    }
    seq->n_tokens = seq->n_ids = j * bs;
    *n_cached = j * bs;
    return HS_OK;
}
