/* The rank mapping (pim-map.h). */
#include "backends/pim/pim-map.h"

#include <string.h>

hs_status hs_pim_map_init(struct hs_pim_map *m, const struct hs_pim_config *c, int32_t n_head,
                          int32_t n_kv_head, int32_t head_dim, int32_t elem_bytes)
{
    if (!m || !c || n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head != 0 || head_dim <= 0 ||
        elem_bytes <= 0) {
        return HS_E_INVAL;
    }
    memset(m, 0, sizeof(*m));
    const bool host = c->level == HS_PIM_LEVEL_HOST;
    m->n_ranks = host ? 1 : hs_pim_n_ranks(c);
    m->n_ranksets = host ? 1 : hs_pim_n_ranksets(c);
    m->n_channels = host ? 1 : c->channels;
    m->n_chips = host ? 1 : c->chips_per_rank;
    m->n_kv_head = n_kv_head;
    m->group = n_head / n_kv_head;
    m->chips_per_head = hs_pim_chips_per_head(c, m->group);
    m->heads_per_rank = HS_MAX(1, m->n_chips / m->chips_per_head);
    m->groups_per_seq = (n_kv_head + m->heads_per_rank - 1) / m->heads_per_rank;
    if (c->rank_tokens_max > 0) {
        m->segment_tokens = c->rank_tokens_max;
    } else {
        /* What one rank holds of one head when every head slot of the rank is full. */
        const double per_token = 2.0 * head_dim * elem_bytes * m->heads_per_rank;
        const double t = (double)c->rank_bytes / per_token;
        m->segment_tokens = t >= (double)INT64_MAX / 2 ? INT64_MAX / 2 : HS_MAX((int64_t)t, 1);
    }
    return HS_OK;
}

int32_t hs_pim_map_group(const struct hs_pim_map *m, int32_t kv_head)
{
    return kv_head / m->heads_per_rank;
}

int64_t hs_pim_map_segment(const struct hs_pim_map *m, int64_t pos)
{
    return pos / m->segment_tokens;
}

int32_t hs_pim_map_home(const struct hs_pim_map *m, int64_t key)
{
    /* splitmix64's finaliser: block ids handed out in strides (a sequence's blocks taken in a
     * run) must not pile their sequences onto one rank */
    uint64_t z = (uint64_t)key + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (int32_t)(z % (uint64_t)m->n_ranks);
}

struct hs_pim_place hs_pim_map_place(const struct hs_pim_map *m, int64_t key, int32_t layer,
                                     int32_t kv_head, int64_t seg)
{
    const int64_t j = hs_pim_map_group(m, kv_head);
    const int64_t rank0 = ((int64_t)hs_pim_map_home(m, key) + j) % m->n_ranks;
    const int64_t rankset = (rank0 / m->n_channels + (layer < 0 ? 0 : layer)) % m->n_ranksets;
    const int64_t channel = (rank0 % m->n_channels + seg % m->n_channels) % m->n_channels;
    return (struct hs_pim_place){
        .rank = (int32_t)(rankset * m->n_channels + channel),
        .chip0 = (kv_head % m->heads_per_rank) * m->chips_per_head,
        .n_chips = m->chips_per_head,
    };
}
