/* Paged KV cache bookkeeping: a pool of n_blocks fixed-size blocks of block_size token slots
 * and per-sequence block tables. The K/V tensors are owned by the model and indexed by slot
 * id = block * block_size + offset; this module only decides which slots a sequence uses.
 *
 * Prefix caching: blocks carry a reference count. Once a block is full and its sequence has
 * recorded every token id up to it (hs_kv_seq_append_tokens), the block gets a chained hash
 * H(parent block's hash, its tokens) and enters a hash table, so a later sequence with the same
 * prompt prefix can adopt it (hs_kv_seq_match_prefix) instead of recomputing it. Only full
 * blocks are ever shared and nobody writes into a full block, so no copy-on-write is needed,
 * except when a truncation cuts into a block other sequences also hold (see
 * hs_kv_seq_truncate). A hashed block whose refcount drops to zero stays cached on an LRU list;
 * blocks are taken from the free list first and cached blocks are evicted, oldest first, only
 * when the free list is empty.
 *
 * Tenants: a sequence's chain may start from a salt (hs_kv_seq_set_salt), so blocks cached for
 * one salt are never matched by a sequence with another: one tenant cannot learn from cache
 * hits (or from their speed) what another one's prompts held. Salt 0 is the shared chain.
 *
 * Thread: engine only (no locking). Nothing here allocates per token: the pool's arrays are
 * sized at hs_kv_pool_create; a sequence's block table grows by doubling in hs_kv_seq_reserve
 * up to the blocks its context needs (never the whole pool), so a sequence reused across
 * requests stops allocating once it has held its longest context. */
#ifndef HS_KVCACHE_KVCACHE_H
#define HS_KVCACHE_KVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"

struct hs_kv_pool;
struct hs_kv_seq;

/* Returns new (free with hs_kv_pool_destroy) in *out, all blocks free. HS_E_INVAL: n_blocks or
 * block_size <= 0, or n_blocks * block_size > INT32_MAX (slot ids are int32); HS_E_NOMEM. */
hs_status hs_kv_pool_create(int32_t n_blocks, int32_t block_size, struct hs_kv_pool **out);
/* Frees the pool; every sequence must have been destroyed first. NULL: no-op. */
void hs_kv_pool_destroy(struct hs_kv_pool *pool);

int32_t hs_kv_pool_n_blocks(const struct hs_kv_pool *pool);
int32_t hs_kv_pool_block_size(const struct hs_kv_pool *pool);
/* Blocks on the free list (hold no reusable data). */
int32_t hs_kv_pool_n_free(const struct hs_kv_pool *pool);
/* Blocks with refcount 0 kept for prefix reuse (on the LRU list); still allocatable. */
int32_t hs_kv_pool_n_cached(const struct hs_kv_pool *pool);
/* Blocks held by at least one sequence. n_free + n_cached + n_used == n_blocks. */
int32_t hs_kv_pool_n_used(const struct hs_kv_pool *pool);
/* Blocks an allocation can still obtain: n_free + n_cached. */
int32_t hs_kv_pool_n_available(const struct hs_kv_pool *pool);
/* Number of sequences holding block b (0 for free or cached blocks); -1 if b is out of range. */
int32_t hs_kv_pool_block_refcount(const struct hs_kv_pool *pool, int32_t b);

/* Returns a new empty sequence (no blocks, n_tokens 0, an empty block table) in *out, free with
 * hs_kv_seq_destroy. HS_E_NOMEM. */
hs_status hs_kv_seq_create(struct hs_kv_pool *pool, struct hs_kv_seq **out);
/* Releases the sequence's blocks, last block first (so that, among cached blocks, the tail of a
 * prefix is evicted before its head), and frees it. NULL: no-op. */
void hs_kv_seq_destroy(struct hs_kv_pool *pool, struct hs_kv_seq *seq);

/* Entries the block table has room for now: O(the sequence's longest context / block_size),
 * at most the pool's n_blocks. */
int32_t hs_kv_seq_capacity_blocks(const struct hs_kv_seq *seq);
/* Committed tokens: positions 0 .. n_tokens-1 hold KV. */
int32_t hs_kv_seq_n_tokens(const struct hs_kv_seq *seq);
/* Blocks in the table; capacity is n_blocks * block_size token positions. */
int32_t hs_kv_seq_n_blocks(const struct hs_kv_seq *seq);
/* Borrowed block table [hs_kv_seq_n_blocks], valid until the next call that changes seq. */
const int32_t *hs_kv_seq_block_table(const struct hs_kv_seq *seq);

/* Ensures capacity for n_new more tokens past n_tokens, taking blocks from the free list, then
 * evicting cached blocks oldest first. n_tokens is unchanged (hs_kv_seq_append_tokens commits).
 * HS_E_BUSY: not enough allocatable blocks now; HS_E_RANGE: more than the whole pool would be
 * needed; HS_E_INVAL: n_new < 0; HS_E_NOMEM: the block table could not grow. On error nothing
 * changes. */
hs_status hs_kv_seq_reserve(struct hs_kv_pool *pool, struct hs_kv_seq *seq, int32_t n_new);

/* Writes the slot ids (block * block_size + offset) of positions pos0 .. pos0+n-1 to slots[n].
 * HS_E_RANGE: a position lies outside the reserved capacity (or pos0 < 0, n < 0); slots is then
 * untouched. */
hs_status hs_kv_seq_slots(const struct hs_kv_seq *seq, int32_t pos0, int32_t n, int32_t *slots);

/* Commits n tokens at positions n_tokens .. n_tokens+n-1 (their KV has been written) and records
 * their ids (tokens [n], may be NULL when ids are not known: then no block from here on gets a
 * hash until a truncation goes back before this point). Blocks that become full get their
 * chained hash and, if no equal block is cached already, enter the hash table.
 * HS_E_RANGE: the positions exceed the reserved capacity; HS_E_INVAL: n < 0. Nothing changes on
 * error. */
hs_status hs_kv_seq_append_tokens(struct hs_kv_pool *pool, struct hs_kv_seq *seq,
                                  const hs_token *tokens, int32_t n);

/* A KV copy the caller must perform: the first n_tokens slots of block src into block dst.
 * src = dst = -1, n_tokens = 0 when there is nothing to copy. */
struct hs_kv_block_copy {
    int32_t src;
    int32_t dst;
    int32_t n_tokens;
};

/* Rolls back to n_tokens (<= the current count), e.g. after rejected speculative tokens: blocks
 * wholly past the end are released (last first); the reserved capacity shrinks to the blocks
 * still needed. A kept partial block that was full loses its hash. If that block is shared with
 * another sequence it is copied on write: seq gets a fresh block and *copy names the rows to
 * copy before writing into it (otherwise *copy is {-1, -1, 0}). HS_E_INVAL: n_tokens out of
 * [0, current]; HS_E_BUSY: a copy was needed and no block is allocatable. Nothing changes on
 * error. */
hs_status hs_kv_seq_truncate(struct hs_kv_pool *pool, struct hs_kv_seq *seq, int32_t n_tokens,
                             struct hs_kv_block_copy *copy);

/* Salts seq's block hash chain (see the top of this file); seq must be empty (no blocks, no
 * tokens), which is an invariant of the caller (asserted). The salt holds until the sequence is
 * emptied again (hs_kv_seq_truncate to 0), which brings back salt 0. Set it before
 * hs_kv_seq_match_prefix or before the first hs_kv_seq_append_tokens. */
void hs_kv_seq_set_salt(struct hs_kv_seq *seq, uint64_t salt);

/* Adopts cached full blocks that hold tokens [0, n) of a new prompt: walks the prompt block by
 * block, looking each chained hash up (verifying the parent hash and the token ids) and
 * stopping at the first miss. Adopted blocks get their refcount incremented (leaving the LRU
 * list if they were there); seq's n_tokens becomes *n_cached. At least one prompt token is
 * always left uncached, since the engine needs logits for the last one. HS_E_INVAL: seq is not
 * empty or n < 0; HS_E_NOMEM: the block table could not grow. Nothing changes on error. */
hs_status hs_kv_seq_match_prefix(struct hs_kv_pool *pool, struct hs_kv_seq *seq,
                                 const hs_token *tokens, int32_t n, int32_t *n_cached);

#endif
