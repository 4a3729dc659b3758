/* KV block pool: counts, busy, slots, truncate, prefix sharing, LRU eviction, and a randomized
 * run checked against a model of what every sequence's KV slots must hold. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kvcache/kvcache.h"

static struct hs_kv_pool *make_pool(int32_t n_blocks, int32_t block_size)
{
    struct hs_kv_pool *pool = NULL;
    cr_assert_eq(hs_kv_pool_create(n_blocks, block_size, &pool), HS_OK);
    return pool;
}

static struct hs_kv_seq *make_seq(struct hs_kv_pool *pool)
{
    struct hs_kv_seq *seq = NULL;
    cr_assert_eq(hs_kv_seq_create(pool, &seq), HS_OK);
    return seq;
}

static void check_counts(const struct hs_kv_pool *pool, int32_t n_free, int32_t n_cached,
                         int32_t n_used)
{
    cr_assert_eq(hs_kv_pool_n_free(pool), n_free, "n_free %d, expected %d", hs_kv_pool_n_free(pool),
                 n_free);
    cr_assert_eq(hs_kv_pool_n_cached(pool), n_cached, "n_cached %d, expected %d",
                 hs_kv_pool_n_cached(pool), n_cached);
    cr_assert_eq(hs_kv_pool_n_used(pool), n_used, "n_used %d, expected %d", hs_kv_pool_n_used(pool),
                 n_used);
}

/* reserve + append in one go */
static void feed(struct hs_kv_pool *pool, struct hs_kv_seq *seq, const hs_token *t, int32_t n)
{
    cr_assert_eq(hs_kv_seq_reserve(pool, seq, n), HS_OK);
    cr_assert_eq(hs_kv_seq_append_tokens(pool, seq, t, n), HS_OK);
}

/* A sequence's block table is sized by its own context, not by the pool: 64 sequences over a
 * 200,000-block pool used to preallocate 64 x 200,000 entries. */
Test(kvcache, block_table_grows_with_the_context_not_the_pool)
{
    struct hs_kv_pool *pool = NULL;
    cr_assert_eq(hs_kv_pool_create(200000, 16, &pool), HS_OK);
    struct hs_kv_seq *seq = make_seq(pool);
    cr_assert_leq(hs_kv_seq_capacity_blocks(seq), 4);
    hs_token t[40];
    for (int i = 0; i < 40; i++) {
        t[i] = (hs_token)(i * 7 + 3);
    }
    feed(pool, seq, t, 40); /* 3 blocks */
    cr_assert_eq(hs_kv_seq_n_blocks(seq), 3);
    cr_assert_geq(hs_kv_seq_capacity_blocks(seq), 3);
    cr_assert_leq(hs_kv_seq_capacity_blocks(seq), 8);
    cr_assert_eq(hs_kv_seq_reserve(pool, seq, 16 * 100), HS_OK); /* 103 blocks in all */
    cr_assert_eq(hs_kv_seq_n_blocks(seq), 103);
    cr_assert_geq(hs_kv_seq_capacity_blocks(seq), 103);
    cr_assert_leq(hs_kv_seq_capacity_blocks(seq), 2 * 103);
    /* a prefix match into a fresh sequence grows its table too */
    struct hs_kv_seq *b = make_seq(pool);
    int32_t n_cached = 0;
    cr_assert_eq(hs_kv_seq_match_prefix(pool, b, t, 40, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 32);
    cr_assert_eq(hs_kv_seq_n_blocks(b), 2);
    cr_assert_eq(hs_kv_seq_block_table(b)[0], hs_kv_seq_block_table(seq)[0]);
    hs_kv_seq_destroy(pool, b);
    hs_kv_seq_destroy(pool, seq);
    check_counts(pool, 200000 - 2, 2, 0);
    hs_kv_pool_destroy(pool);
}

/* A pool of a few blocks caps the table at the pool's size. */
Test(kvcache, block_table_never_exceeds_the_pool)
{
    struct hs_kv_pool *pool = NULL;
    cr_assert_eq(hs_kv_pool_create(5, 4, &pool), HS_OK);
    struct hs_kv_seq *seq = make_seq(pool);
    cr_assert_eq(hs_kv_seq_reserve(pool, seq, 20), HS_OK);
    cr_assert_eq(hs_kv_seq_n_blocks(seq), 5);
    cr_assert_eq(hs_kv_seq_capacity_blocks(seq), 5);
    cr_assert_eq(hs_kv_seq_reserve(pool, seq, 21), HS_E_RANGE);
    hs_kv_seq_destroy(pool, seq);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, create_rejects_bad_sizes)
{
    struct hs_kv_pool *pool = (struct hs_kv_pool *)&pool;
    cr_assert_eq(hs_kv_pool_create(0, 16, &pool), HS_E_INVAL);
    cr_assert_null(pool);
    cr_assert_eq(hs_kv_pool_create(16, 0, &pool), HS_E_INVAL);
    cr_assert_eq(hs_kv_pool_create(1 << 20, 1 << 12, &pool), HS_E_INVAL);
    hs_kv_pool_destroy(NULL);
    hs_kv_seq_destroy(NULL, NULL);
}

Test(kvcache, allocation_and_free_counts)
{
    struct hs_kv_pool *pool = make_pool(8, 4);
    check_counts(pool, 8, 0, 0);
    struct hs_kv_seq *a = make_seq(pool);
    struct hs_kv_seq *b = make_seq(pool);
    cr_assert_eq(hs_kv_seq_reserve(pool, a, 10), HS_OK);
    cr_assert_eq(hs_kv_seq_n_blocks(a), 3);
    cr_assert_eq(hs_kv_seq_n_tokens(a), 0);
    const int32_t *tab = hs_kv_seq_block_table(a);
    cr_assert(tab[0] == 0 && tab[1] == 1 && tab[2] == 2);
    check_counts(pool, 5, 0, 3);
    cr_assert_eq(hs_kv_seq_reserve(pool, a, 12), HS_OK); /* already covered */
    check_counts(pool, 5, 0, 3);
    cr_assert_eq(hs_kv_seq_reserve(pool, b, 20), HS_OK);
    check_counts(pool, 0, 0, 8);
    for (int32_t i = 0; i < 8; i++) {
        cr_assert_eq(hs_kv_pool_block_refcount(pool, i), 1);
    }
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 8), -1);
    hs_kv_seq_destroy(pool, a);
    check_counts(pool, 3, 0, 5);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 1), 0);
    hs_kv_seq_destroy(pool, b);
    check_counts(pool, 8, 0, 0);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, busy_leaves_state_unchanged)
{
    struct hs_kv_pool *pool = make_pool(4, 4);
    struct hs_kv_seq *a = make_seq(pool);
    struct hs_kv_seq *b = make_seq(pool);
    cr_assert_eq(hs_kv_seq_reserve(pool, a, 12), HS_OK);
    hs_token t[6] = {1, 2, 3, 4, 5, 6};
    feed(pool, b, NULL, 0);
    cr_assert_eq(hs_kv_seq_reserve(pool, b, 8), HS_E_BUSY);
    cr_assert_eq(hs_kv_seq_n_blocks(b), 0);
    check_counts(pool, 1, 0, 3);
    cr_assert_eq(hs_kv_seq_reserve(pool, b, 17), HS_E_RANGE); /* more than the whole pool */
    cr_assert_eq(hs_kv_seq_reserve(pool, b, -1), HS_E_INVAL);
    feed(pool, b, t, 4);
    check_counts(pool, 0, 0, 4);
    cr_assert_eq(hs_kv_seq_reserve(pool, b, 1), HS_E_BUSY);
    cr_assert_eq(hs_kv_seq_n_blocks(b), 1);
    cr_assert_eq(hs_kv_seq_n_tokens(b), 4);
    /* appending past the reservation is refused */
    cr_assert_eq(hs_kv_seq_append_tokens(pool, b, t, 1), HS_E_RANGE);
    cr_assert_eq(hs_kv_seq_n_tokens(b), 4);
    hs_kv_seq_destroy(pool, a);
    hs_kv_seq_destroy(pool, b);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, slots_map_positions_to_blocks)
{
    struct hs_kv_pool *pool = make_pool(16, 4);
    struct hs_kv_seq *a = make_seq(pool);
    struct hs_kv_seq *b = make_seq(pool);
    hs_token t[4] = {9, 9, 9, 9};
    feed(pool, a, t, 4); /* block 0 */
    feed(pool, b, t, 4); /* block 1 */
    feed(pool, a, t, 3); /* block 2 */
    int32_t slots[8];
    cr_assert_eq(hs_kv_seq_slots(a, 0, 8, slots), HS_OK);
    int32_t want[8] = {0, 1, 2, 3, 8, 9, 10, 11};
    cr_assert_arr_eq(slots, want, sizeof(want));
    cr_assert_eq(hs_kv_seq_slots(a, 5, 2, slots), HS_OK);
    cr_assert(slots[0] == 9 && slots[1] == 10);
    cr_assert_eq(hs_kv_seq_slots(b, 2, 2, slots), HS_OK);
    cr_assert(slots[0] == 6 && slots[1] == 7);
    slots[0] = -7;
    cr_assert_eq(hs_kv_seq_slots(a, 6, 3, slots), HS_E_RANGE);
    cr_assert_eq(hs_kv_seq_slots(a, -1, 1, slots), HS_E_RANGE);
    cr_assert_eq(slots[0], -7);
    hs_kv_seq_destroy(pool, a);
    hs_kv_seq_destroy(pool, b);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, truncate_frees_whole_blocks)
{
    struct hs_kv_pool *pool = make_pool(8, 4);
    struct hs_kv_seq *a = make_seq(pool);
    hs_token t[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    cr_assert_eq(hs_kv_seq_reserve(pool, a, 16), HS_OK); /* 4 blocks, 10 used */
    cr_assert_eq(hs_kv_seq_append_tokens(pool, a, t, 10), HS_OK);
    struct hs_kv_block_copy cp;
    cr_assert_eq(hs_kv_seq_truncate(pool, a, 11, &cp), HS_E_INVAL);
    cr_assert_eq(hs_kv_seq_truncate(pool, a, 10, &cp), HS_OK);
    cr_assert_eq(hs_kv_seq_n_blocks(a), 3); /* unused reservation released */
    cr_assert_eq(hs_kv_seq_truncate(pool, a, 5, &cp), HS_OK);
    cr_assert_eq(cp.src, -1);
    cr_assert_eq(hs_kv_seq_n_tokens(a), 5);
    cr_assert_eq(hs_kv_seq_n_blocks(a), 2);
    /* block 0 stays full and hashed (in use); block 1 became partial: unhashed */
    check_counts(pool, 6, 0, 2);
    cr_assert_eq(hs_kv_seq_truncate(pool, a, 4, &cp), HS_OK);
    cr_assert_eq(hs_kv_seq_n_blocks(a), 1);
    cr_assert_eq(hs_kv_seq_truncate(pool, a, 0, &cp), HS_OK);
    cr_assert_eq(hs_kv_seq_n_blocks(a), 0);
    /* block 0 was full and hashed: it stays cached */
    check_counts(pool, 7, 1, 0);
    hs_kv_seq_destroy(pool, a);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, prefix_sharing_refcounts)
{
    struct hs_kv_pool *pool = make_pool(16, 4);
    hs_token prompt[10] = {11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    struct hs_kv_seq *a = make_seq(pool);
    feed(pool, a, prompt, 10); /* blocks 0, 1 full; 2 partial */
    struct hs_kv_seq *b = make_seq(pool);
    int32_t n_cached = -1;
    cr_assert_eq(hs_kv_seq_match_prefix(pool, b, prompt, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    cr_assert_eq(hs_kv_seq_n_tokens(b), 8);
    cr_assert_eq(hs_kv_seq_n_blocks(b), 2);
    cr_assert_eq(hs_kv_seq_block_table(b)[0], 0);
    cr_assert_eq(hs_kv_seq_block_table(b)[1], 1);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 0), 2);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 1), 2);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 2), 1);
    check_counts(pool, 13, 0, 3);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, b, prompt, 10, &n_cached), HS_E_INVAL);

    /* diverging in the second block: only the first is shared */
    hs_token other[10] = {11, 12, 13, 14, 15, 99, 17, 18, 19, 20};
    struct hs_kv_seq *c = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, c, other, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 4);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 0), 3);
    /* same tokens at a different depth never match (chained hash) */
    hs_token shifted[9] = {15, 16, 17, 18, 1, 2, 3, 4, 5};
    struct hs_kv_seq *d = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, d, shifted, 9, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 0);
    /* a prompt of exactly two blocks keeps its last token uncached */
    struct hs_kv_seq *e = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, e, prompt, 8, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 4);
    hs_kv_seq_destroy(pool, e);
    hs_kv_seq_destroy(pool, d);

    hs_kv_seq_destroy(pool, a);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 0), 2);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 1), 1);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 2), 0);
    hs_kv_seq_destroy(pool, b);
    hs_kv_seq_destroy(pool, c);
    check_counts(pool, 14, 2, 0); /* blocks 0 and 1 stay cached */

    /* a later request adopts the cached blocks back */
    struct hs_kv_seq *f = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, f, prompt, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    check_counts(pool, 14, 0, 2);
    hs_kv_seq_destroy(pool, f);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, salted_chains_share_only_within_their_salt)
{
    struct hs_kv_pool *pool = make_pool(16, 4);
    hs_token prompt[10] = {11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    int32_t n_cached = -1;
    /* tenant 7 computes the prompt */
    struct hs_kv_seq *a = make_seq(pool);
    hs_kv_seq_set_salt(a, 7);
    feed(pool, a, prompt, 10);
    /* unsalted and other salts see nothing; salt 7 shares both full blocks */
    const uint64_t others[] = {0, 8, UINT64_C(0x8000000000000007)};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        struct hs_kv_seq *x = make_seq(pool);
        hs_kv_seq_set_salt(x, others[i]);
        cr_assert_eq(hs_kv_seq_match_prefix(pool, x, prompt, 10, &n_cached), HS_OK);
        cr_assert_eq(n_cached, 0, "salt %llu matched tenant 7's blocks",
                     (unsigned long long)others[i]);
        hs_kv_seq_destroy(pool, x);
    }
    struct hs_kv_seq *b = make_seq(pool);
    hs_kv_seq_set_salt(b, 7);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, b, prompt, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    /* emptied, a sequence is back on the shared chain: its new blocks match unsalted lookups */
    struct hs_kv_block_copy cp;
    cr_assert_eq(hs_kv_seq_truncate(pool, b, 0, &cp), HS_OK);
    feed(pool, b, prompt, 10);
    struct hs_kv_seq *c = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, c, prompt, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    /* both chains live side by side in the cache after everyone leaves */
    hs_kv_seq_destroy(pool, a);
    hs_kv_seq_destroy(pool, b);
    hs_kv_seq_destroy(pool, c);
    check_counts(pool, 12, 4, 0);
    struct hs_kv_seq *d = make_seq(pool);
    hs_kv_seq_set_salt(d, 7);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, d, prompt, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    hs_kv_seq_destroy(pool, d);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, evicts_lru_block_when_full)
{
    struct hs_kv_pool *pool = make_pool(6, 2);
    hs_token p1[5] = {1, 2, 3, 4, 5};
    hs_token p2[5] = {6, 7, 8, 9, 10};
    struct hs_kv_seq *x = make_seq(pool);
    struct hs_kv_seq *y = make_seq(pool);
    feed(pool, x, p1, 5);       /* blocks 0, 1 full, 2 partial */
    feed(pool, y, p2, 5);       /* blocks 3, 4 full, 5 partial */
    hs_kv_seq_destroy(pool, x); /* LRU: 1, 0 (tail of the prefix first) */
    hs_kv_seq_destroy(pool, y); /* LRU: 1, 0, 4, 3 */
    check_counts(pool, 2, 4, 0);

    struct hs_kv_seq *z = make_seq(pool);
    cr_assert_eq(hs_kv_seq_reserve(pool, z, 4), HS_OK); /* the two free blocks, no eviction */
    check_counts(pool, 0, 4, 2);
    cr_assert_eq(hs_kv_seq_reserve(pool, z, 6), HS_OK); /* evicts the oldest: block 1 */
    cr_assert_eq(hs_kv_seq_block_table(z)[2], 1);
    check_counts(pool, 0, 3, 3);

    int32_t n_cached = -1;
    struct hs_kv_seq *m = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, m, p1, 5, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 2);  /* block 0 survived, block 1 is gone */
    hs_kv_seq_destroy(pool, m); /* LRU: 4, 3, 0 */

    cr_assert_eq(hs_kv_seq_reserve(pool, z, 8), HS_OK); /* evicts block 4 */
    cr_assert_eq(hs_kv_seq_block_table(z)[3], 4);
    m = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, m, p2, 5, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 2);
    hs_kv_seq_destroy(pool, m);                          /* LRU: 0, 3 */
    cr_assert_eq(hs_kv_seq_reserve(pool, z, 10), HS_OK); /* evicts block 0 */
    cr_assert_eq(hs_kv_seq_block_table(z)[4], 0);
    m = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, m, p1, 5, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 0);
    hs_kv_seq_destroy(pool, m);
    check_counts(pool, 0, 1, 5);
    cr_assert_eq(hs_kv_seq_reserve(pool, z, 12), HS_OK); /* evicts block 3, the last one */
    cr_assert_eq(hs_kv_seq_block_table(z)[5], 3);
    check_counts(pool, 0, 0, 6);
    struct hs_kv_seq *w = make_seq(pool);
    cr_assert_eq(hs_kv_seq_reserve(pool, w, 1), HS_E_BUSY);
    check_counts(pool, 0, 0, 6);
    hs_kv_seq_destroy(pool, w);
    hs_kv_seq_destroy(pool, z);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, truncate_into_shared_block_copies_on_write)
{
    struct hs_kv_pool *pool = make_pool(8, 4);
    hs_token prompt[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    struct hs_kv_seq *a = make_seq(pool);
    feed(pool, a, prompt, 10); /* blocks 0, 1, 2 */
    struct hs_kv_seq *b = make_seq(pool);
    int32_t n_cached;
    cr_assert_eq(hs_kv_seq_match_prefix(pool, b, prompt, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    struct hs_kv_block_copy cp;
    cr_assert_eq(hs_kv_seq_truncate(pool, a, 6, &cp), HS_OK);
    cr_assert_eq(cp.src, 1);
    cr_assert_eq(cp.dst, 2); /* block 2 was released first, then reused */
    cr_assert_eq(cp.n_tokens, 2);
    cr_assert_eq(hs_kv_seq_block_table(a)[1], 2);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 1), 1);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 2), 1);
    /* a's copy refills with other tokens; b's block 1 is still matchable */
    hs_token more[2] = {70, 80};
    feed(pool, a, more, 2);
    struct hs_kv_seq *c = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, c, prompt, 10, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    cr_assert_eq(hs_kv_seq_block_table(c)[1], 1);
    hs_kv_seq_destroy(pool, c);
    hs_token a_prompt[9] = {1, 2, 3, 4, 5, 6, 70, 80, 0};
    c = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, c, a_prompt, 9, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 8);
    cr_assert_eq(hs_kv_seq_block_table(c)[1], 2);
    hs_kv_seq_destroy(pool, c);

    /* no block to copy into: busy, nothing changes */
    c = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, c, prompt, 10, &n_cached), HS_OK);
    struct hs_kv_seq *fill = make_seq(pool);
    cr_assert_eq(hs_kv_seq_reserve(pool, fill, 4 * hs_kv_pool_n_available(pool)), HS_OK);
    check_counts(pool, 0, 0, 8);
    cr_assert_eq(hs_kv_seq_truncate(pool, b, 5, &cp), HS_E_BUSY);
    cr_assert_eq(cp.src, -1);
    cr_assert_eq(hs_kv_seq_n_tokens(b), 8);
    cr_assert_eq(hs_kv_seq_n_blocks(b), 2);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 0), 3);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 1), 2);
    cr_assert_eq(hs_kv_seq_truncate(pool, b, 2, &cp), HS_E_BUSY); /* tail block 1 stays held */
    cr_assert_eq(hs_kv_seq_n_blocks(b), 2);
    /* once c lets go, block 1 released by the truncation is the copy target */
    hs_kv_seq_destroy(pool, c);
    cr_assert_eq(hs_kv_seq_truncate(pool, b, 2, &cp), HS_OK);
    cr_assert_eq(cp.src, 0);
    cr_assert_eq(cp.dst, 1);
    cr_assert_eq(cp.n_tokens, 2);
    cr_assert_eq(hs_kv_pool_block_refcount(pool, 0), 1);
    check_counts(pool, 0, 0, 8);
    hs_kv_seq_destroy(pool, fill);
    hs_kv_seq_destroy(pool, a);
    hs_kv_seq_destroy(pool, b);
    hs_kv_pool_destroy(pool);
}

Test(kvcache, unknown_ids_stop_hashing_until_rolled_back)
{
    struct hs_kv_pool *pool = make_pool(8, 2);
    hs_token t[7] = {1, 2, 3, 4, 5, 6, 7};
    struct hs_kv_seq *a = make_seq(pool);
    feed(pool, a, t, 2);     /* block 0 hashed */
    feed(pool, a, NULL, 2);  /* block 1 full, ids unknown */
    feed(pool, a, t + 4, 2); /* block 2: no hash either (chain broken) */
    int32_t n_cached;
    struct hs_kv_seq *b = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, b, t, 7, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 2);
    hs_kv_seq_destroy(pool, b);
    /* rolling back before the gap makes the sequence hashable again */
    struct hs_kv_block_copy cp;
    cr_assert_eq(hs_kv_seq_truncate(pool, a, 2, &cp), HS_OK);
    feed(pool, a, t + 2, 4);
    b = make_seq(pool);
    cr_assert_eq(hs_kv_seq_match_prefix(pool, b, t, 7, &n_cached), HS_OK);
    cr_assert_eq(n_cached, 6);
    hs_kv_seq_destroy(pool, b);
    hs_kv_seq_destroy(pool, a);
    hs_kv_pool_destroy(pool);
}

/* ---- randomized run against a model ---- */

#define ST_BLOCKS 24
#define ST_BS     4
#define ST_SEQS   5
#define ST_MAXTOK (ST_BLOCKS * ST_BS)

struct model_seq {
    struct hs_kv_seq *seq;
    hs_token tokens[ST_MAXTOK]; /* what each committed position must hold */
    int32_t n;
};

/* kv[slot]: the token whose KV was last written to the slot, as the model would hold it */
static hs_token kv[ST_BLOCKS * ST_BS];

static void check_model(struct hs_kv_pool *pool, struct model_seq *ms)
{
    int32_t refs[ST_BLOCKS] = {0};
    for (int s = 0; s < ST_SEQS; s++) {
        if (!ms[s].seq) {
            continue;
        }
        int32_t nb = hs_kv_seq_n_blocks(ms[s].seq);
        const int32_t *tab = hs_kv_seq_block_table(ms[s].seq);
        cr_assert_eq(hs_kv_seq_n_tokens(ms[s].seq), ms[s].n);
        cr_assert_geq(nb * ST_BS, ms[s].n);
        for (int32_t j = 0; j < nb; j++) {
            cr_assert(tab[j] >= 0 && tab[j] < ST_BLOCKS);
            for (int32_t k = 0; k < j; k++) {
                cr_assert_neq(tab[j], tab[k], "block %d twice in one sequence", tab[j]);
            }
            refs[tab[j]]++;
        }
        int32_t slots[ST_MAXTOK];
        cr_assert_eq(hs_kv_seq_slots(ms[s].seq, 0, ms[s].n, slots), HS_OK);
        for (int32_t p = 0; p < ms[s].n; p++) {
            cr_assert_eq(kv[slots[p]], ms[s].tokens[p], "seq %d pos %d: slot holds %d, want %d", s,
                         p, kv[slots[p]], ms[s].tokens[p]);
        }
    }
    int32_t used = 0;
    for (int32_t b = 0; b < ST_BLOCKS; b++) {
        cr_assert_eq(hs_kv_pool_block_refcount(pool, b), refs[b], "block %d refcount", b);
        used += refs[b] > 0;
    }
    cr_assert_eq(hs_kv_pool_n_used(pool), used);
    cr_assert_eq(hs_kv_pool_n_free(pool) + hs_kv_pool_n_cached(pool), ST_BLOCKS - used);
}

static void model_write(struct model_seq *m, const hs_token *t, int32_t n)
{
    int32_t slots[ST_MAXTOK];
    cr_assert_eq(hs_kv_seq_slots(m->seq, m->n, n, slots), HS_OK);
    for (int32_t i = 0; i < n; i++) {
        kv[slots[i]] = t[i];
        m->tokens[m->n + i] = t[i];
    }
    m->n += n;
}

Test(kvcache, randomized_against_model)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 2024);
    struct hs_kv_pool *pool = make_pool(ST_BLOCKS, ST_BS);
    struct model_seq ms[ST_SEQS];
    memset(ms, 0, sizeof(ms));
    for (size_t i = 0; i < HS_ARRAY_LEN(kv); i++) {
        kv[i] = -1;
    }
    /* prompts drawn from a few stems so prefixes recur */
    hs_token stems[3][ST_MAXTOK];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < ST_MAXTOK; i++) {
            stems[s][i] = (hs_token)(hs_rng_next(&rng) % 5);
        }
    }
    int n_hits = 0, n_busy = 0, n_copies = 0;
    for (int it = 0; it < 20000; it++) {
        int s = (int)(hs_rng_next(&rng) % ST_SEQS);
        struct model_seq *m = &ms[s];
        int op = (int)(hs_rng_next(&rng) % 10);
        if (!m->seq) {
            m->seq = make_seq(pool);
            m->n = 0;
            const hs_token *stem = stems[hs_rng_next(&rng) % 3];
            int32_t len = 1 + (int32_t)(hs_rng_next(&rng) % 20);
            int32_t n_cached = -1;
            cr_assert_eq(hs_kv_seq_match_prefix(pool, m->seq, stem, len, &n_cached), HS_OK);
            cr_assert(n_cached % ST_BS == 0 && n_cached < len);
            /* adopted slots must already hold the prompt */
            memcpy(m->tokens, stem, (size_t)n_cached * sizeof(hs_token));
            m->n = n_cached;
            n_hits += n_cached > 0;
            int32_t rest = len - n_cached;
            int32_t before = hs_kv_pool_n_available(pool);
            int32_t nb_before = hs_kv_seq_n_blocks(m->seq);
            hs_status st = hs_kv_seq_reserve(pool, m->seq, rest);
            if (st == HS_E_BUSY) {
                n_busy++;
                cr_assert_eq(hs_kv_pool_n_available(pool), before);
                cr_assert_eq(hs_kv_seq_n_blocks(m->seq), nb_before);
            } else {
                cr_assert_eq(st, HS_OK);
                model_write(m, stem + n_cached, rest);
                cr_assert_eq(hs_kv_seq_append_tokens(pool, m->seq, stem + n_cached, rest), HS_OK);
            }
        } else if (op < 5) { /* generate a few tokens (ids sometimes unknown) */
            int32_t k = 1 + (int32_t)(hs_rng_next(&rng) % 6);
            if (m->n + k > ST_MAXTOK) {
                continue;
            }
            hs_token t[8];
            for (int32_t i = 0; i < k; i++) {
                t[i] = (hs_token)(hs_rng_next(&rng) % 5);
            }
            int32_t before = hs_kv_pool_n_available(pool);
            hs_status st = hs_kv_seq_reserve(pool, m->seq, k);
            if (st == HS_E_BUSY) {
                n_busy++;
                cr_assert_eq(hs_kv_pool_n_available(pool), before);
            } else {
                cr_assert_eq(st, HS_OK);
                model_write(m, t, k);
                bool ids = hs_rng_next(&rng) % 16 != 0;
                cr_assert_eq(hs_kv_seq_append_tokens(pool, m->seq, ids ? t : NULL, k), HS_OK);
            }
        } else if (op < 8) { /* roll back */
            int32_t to = m->n - (int32_t)(hs_rng_next(&rng) % (uint64_t)(m->n + 1));
            struct hs_kv_block_copy cp;
            hs_status st = hs_kv_seq_truncate(pool, m->seq, to, &cp);
            if (st == HS_E_BUSY) {
                n_busy++;
                cr_assert_eq(cp.src, -1);
            } else {
                cr_assert_eq(st, HS_OK);
                if (cp.src >= 0) {
                    n_copies++;
                    for (int32_t i = 0; i < cp.n_tokens; i++) {
                        kv[cp.dst * ST_BS + i] = kv[cp.src * ST_BS + i];
                    }
                }
                m->n = to;
            }
        } else { /* finish */
            hs_kv_seq_destroy(pool, m->seq);
            m->seq = NULL;
        }
        check_model(pool, ms);
    }
    cr_assert_gt(n_hits, 100, "prefix hits %d", n_hits);
    cr_assert_gt(n_busy, 10, "busy %d", n_busy);
    cr_assert_gt(n_copies, 0, "copies %d", n_copies);
    for (int s = 0; s < ST_SEQS; s++) {
        hs_kv_seq_destroy(pool, ms[s].seq);
    }
    cr_assert_eq(hs_kv_pool_n_used(pool), 0);
    hs_kv_pool_destroy(pool);
}
