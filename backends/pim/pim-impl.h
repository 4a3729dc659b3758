/* The simulated DIMM-PIM backend ("pim"), for tests and benchmarks; users create it through
 * hs_backend_create("pim") with hs_backend_params.config naming a configuration file
 * (pim-timing.h's format; NULL: the chime preset).
 *
 * What it is: the KV cache of the sequences placed on it lives in buffers of host memory bound
 * to the NUMA node of its threads (hwloc; this VM has one node), in the model's view
 * [n_blocks][block_size][n_kv_head][head_dim] that every attention kernel reads. A literal rank
 * layout (each rank's rows contiguous) would break that view, so the rank layout is the
 * placement logic of pim-map.h instead: it decides, for every (sequence, layer, KV head,
 * segment of positions), which rank and chips hold it, and the backend computes rank by rank by
 * it: one inner CPU attention call per rank's share (one head group, one segment, for the
 * call's sequences that put them there), and charges each call the layer time of the timing
 * model (pim-timing.h) over the ranks' loads, the slowest rank deciding, plus the host link.
 * Calls go segment by segment (position order), and within a segment sequence home by sequence
 * home and head group by head group, so that one sequence's rows are read together as the CPU
 * backend's own order does (head-major order costs half again the time on a big batch).
 *
 * Exactness: a (sequence, KV head) whose positions all lie on one rank (always, with the default
 * rank capacity) has a single partial, and the merge of a single partial is its finalisation, so
 * its rank's call computes it normalised (or as the caller's partials) straight into the
 * caller's output: the CPU backend's bits, which computing partials and finalising them would
 * give too (attention.h). Heads spilled over ranks (rank_tokens_max) get partials per rank,
 * combined in position order with backends/attn-partial.h's merge (attention/'s) and finalised:
 * within the merge bound argued in tests/attention/test-merge.c.
 *
 * The layer index (which rotates heads across ranksets) is the position of the K cache in the
 * buffer this backend allocated, where the model context lays layers out one after another
 * ([layer][K, V][...]); caches of other memory count as layer 0.
 *
 * Thread: as every backend, one driving thread at a time. */
#ifndef HS_BACKENDS_PIM_PIM_IMPL_H
#define HS_BACKENDS_PIM_PIM_IMPL_H

#include <stdint.h>

#include "backends/backend-impl.h"
#include "backends/pim/pim-timing.h"

/* Counters of a pim backend since creation. */
struct hs_pim_stats {
    uint64_t n_attn;         /* attention calls */
    uint64_t n_inner_calls;  /* inner CPU calls (one per rank and head group and segment) */
    uint64_t n_spilled;      /* (sequence, head group) units whose positions span ranks */
    double last_layer_s;     /* the last call's charge */
    int32_t last_slowest;    /* the last call's slowest rank */
    uint64_t rank_hits[256]; /* inner calls per rank (ranks >= 256 fold onto 255) */
};

/* The configuration be runs with (host_gbs measured for the host preset). be must be a pim
 * backend (HS_ASSERT). */
const struct hs_pim_config *hs_pim_backend_config(const struct hs_backend *be);
void hs_pim_backend_get_stats(const struct hs_backend *be, struct hs_pim_stats *out);

/* Benchmarks: with on, attention places, sorts, merges what there is and charges as usual but
 * skips the inner CPU calls (so its outputs are not the attention): the host cost of the
 * simulation alone. */
void hs_pim_backend_set_dry_run(struct hs_backend *be, bool on);

/* Whether be is a pim backend. */
bool hs_pim_backend_is(const struct hs_backend *be);

#endif
