/* Where the KV cache of a sequence lives on the DIMM ranks (L3/CHIME's mapping), as pure
 * functions: the placement the pim backend computes by, and charges for.
 *
 * The unit is one KV head of one sequence in one layer. A head spreads over chips_per_head
 * chips of one rank (all 8 for MHA, so each chip holds a slice of every row; one chip for
 * GQA-8), so a rank holds heads_per_rank = chips / chips_per_head heads side by side; a
 * sequence's KV heads fill its ranks in groups of heads_per_rank, group j on the chips of one
 * rank. The sequence's key (its first block id in the pool, which never changes while it runs
 * and is shared by sequences with a common prefix, whose blocks are stored once) hashes to its
 * home rank, and its head groups take the ranks from there on, channels first, then ranksets:
 *   rank0(key, j) = (home(key) + j) mod n_ranks,   ranks numbered rankset * channels + channel;
 * the hash spreads sequences whose first blocks come in strides (a pool handing out runs of
 * blocks) as evenly as chance does; a scheduler that placed by load would do better.
 * layer l sits l ranksets further on (same channel), so consecutive layers of a head alternate
 * ranksets and the host streams one layer's q/k/v to one rankset while another computes ("each
 * layer's KV interleaved across ranksets"). A head's positions stay on one rank up to
 * rank_tokens_max (default: what the rank holds); segment i of that many positions goes i
 * channels further on within the rankset, and its partial is merged with the others'. So in the
 * common case each (sequence, layer, KV head) is on exactly one rank and its attention is one
 * partial: the CPU backend's bits.
 *
 * The host level (CPU offload) is one "rank" of one chip: everything maps there.
 *
 * Thread: any (pure). */
#ifndef HS_BACKENDS_PIM_MAP_H
#define HS_BACKENDS_PIM_MAP_H

#include <stdint.h>

#include "backends/pim/pim-timing.h"

struct hs_pim_map {
    int32_t n_ranks;        /* ranks computing (1 at host level) */
    int32_t n_ranksets;     /* ranks per channel (1 at host level) */
    int32_t n_channels;     /* ranks per rankset */
    int32_t n_chips;        /* chips per rank */
    int32_t n_kv_head;      /* of the model */
    int32_t group;          /* g: query heads per KV head */
    int32_t chips_per_head; /* chips one KV head spreads over */
    int32_t heads_per_rank; /* KV heads of one sequence side by side on one rank */
    int32_t groups_per_seq; /* ceil(n_kv_head / heads_per_rank) */
    int64_t segment_tokens; /* positions of one head on one rank before spilling (> 0) */
};

/* Where a unit's rows are: a rank and its chips [chip0, chip0 + n_chips). */
struct hs_pim_place {
    int32_t rank;
    int32_t chip0;
    int32_t n_chips;
};

/* The mapping of a model with n_head query heads and n_kv_head KV heads of head_dim elements of
 * elem_bytes on configuration c. HS_E_INVAL when n_head is not a positive multiple of n_kv_head
 * or a size is not positive. */
hs_status hs_pim_map_init(struct hs_pim_map *m, const struct hs_pim_config *c, int32_t n_head,
                          int32_t n_kv_head, int32_t head_dim, int32_t elem_bytes);

/* The group of KV head h (its heads are [j * heads_per_rank, ...)) and the segment of position
 * pos. */
int32_t hs_pim_map_group(const struct hs_pim_map *m, int32_t kv_head);
int64_t hs_pim_map_segment(const struct hs_pim_map *m, int64_t pos);

/* The home rank of the sequence with key: a hash of it, in [0, n_ranks). */
int32_t hs_pim_map_home(const struct hs_pim_map *m, int64_t key);

/* Where KV head kv_head of the sequence with key lies in layer at segment seg. */
struct hs_pim_place hs_pim_map_place(const struct hs_pim_map *m, int64_t key, int32_t layer,
                                     int32_t kv_head, int64_t seg);

#endif
