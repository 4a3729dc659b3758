/* The simulated DIMM-PIM backend (pim-impl.h): attention rank by rank over the placement of
 * pim-map.h, charged by the timing model of pim-timing.h; every other op runs on the inner CPU
 * backend (sim-impl.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backends/attn-partial.h"
#include "backends/pim/pim-impl.h"
#include "backends/pim/pim-map.h"
#include "backends/sim-impl.h"
#include "common/buf.h"
#include "hs-config.h"

#if HS_HAVE_HWLOC
#include <hwloc.h>
#endif

/* A buffer this backend allocated (for the layer index and for freeing). */
struct pim_buf {
    char *base;
    size_t size;
    bool hw; /* from hwloc_alloc_membind */
};

/* One piece of a call's work: the positions [p0, p1) of head group `group` of sequence `seq`,
 * segment `seg`, on rank `rank`. */
struct pim_item {
    uint64_t key; /* sort key (item_key) */
    int64_t seg;
    int32_t d; /* the sequence's home rank: sequences of one home share their ranks */
    int32_t group;
    int32_t rank;
    int32_t seq;
    int32_t p0, p1;
    bool multi; /* the sequence's range spans several segments */
};

struct pim_backend {
    struct hs__sim_base sb; /* first */
    struct hs_pim_config cfg;
    struct pim_buf *bufs;
    int32_t n_bufs, cap_bufs;
#if HS_HAVE_HWLOC
    hwloc_topology_t topo;
    hwloc_bitmap_t nodeset; /* the NUMA node(s) of the threads' first core; NULL: no binding */
#endif
    /* scratch, grown on demand: accumulated and one call's partials, each o | m | l (for
     * sequences spread over several segments) */
    float *acc, *part;
    size_t cap_acc, cap_part;
    struct pim_item *items, *sorted;
    size_t cap_items, cap_sorted;
    size_t *counts;
    size_t cap_counts;
    struct hs_attn_seq *call;
    size_t cap_call;
    struct hs_pim_rank_load *loads;
    size_t cap_loads;
    struct hs_pim_stats stats;
    bool dry_run; /* benchmarks: skip the inner computation */
};

static struct pim_backend *pim(struct hs_backend *be)
{
    return (struct pim_backend *)be;
}

/* ---- memory: host buffers bound to the threads' NUMA node ---- */

static hs_status pim_buffer_alloc(struct hs_backend *be, size_t bytes, void **base)
{
    struct pim_backend *p = pim(be);
    if (p->n_bufs == p->cap_bufs) {
        const int32_t cap = p->cap_bufs ? 2 * p->cap_bufs : 8;
        struct pim_buf *b = realloc(p->bufs, (size_t)cap * sizeof(*b));
        if (!b) {
            return HS_E_NOMEM;
        }
        p->bufs = b;
        p->cap_bufs = cap;
    }
    struct pim_buf nb = {.size = bytes};
#if HS_HAVE_HWLOC
    if (p->nodeset) {
        nb.base = hwloc_alloc_membind(p->topo, bytes, p->nodeset, HWLOC_MEMBIND_BIND,
                                      HWLOC_MEMBIND_BYNODESET);
        nb.hw = nb.base != NULL;
    }
#endif
    if (!nb.base) {
        nb.base = hs_alloc_aligned(bytes);
    }
    if (!nb.base) {
        return HS_E_NOMEM;
    }
#ifdef MADV_HUGEPAGE
    /* A decode reads one head's rows at a stride of a whole position's K (or V) across many
     * blocks: huge pages keep that off the TLB's back (where the kernel honours madvise). */
    const uintptr_t page = 2u << 20;
    const uintptr_t lo = ((uintptr_t)nb.base + page - 1) / page * page;
    const uintptr_t hi = ((uintptr_t)nb.base + bytes) / page * page;
    if (hi > lo) {
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    }
#endif
    if (nb.hw) {
        memset(nb.base, 0, bytes); /* zero-filled, and first touched on the node */
    }
    p->bufs[p->n_bufs++] = nb;
    *base = nb.base;
    return HS_OK;
}

static void pim_buffer_free(struct hs_backend *be, void *base)
{
    struct pim_backend *p = pim(be);
    for (int32_t i = 0; i < p->n_bufs; i++) {
        if (p->bufs[i].base != base) {
            continue;
        }
#if HS_HAVE_HWLOC
        if (p->bufs[i].hw) {
            hwloc_free(p->topo, base, p->bufs[i].size);
        } else
#endif
        {
            hs_free_aligned(base);
        }
        p->bufs[i] = p->bufs[--p->n_bufs];
        return;
    }
    HS_ASSERT(!"pim: freeing a buffer it did not allocate");
}

/* The layer of a K cache in this backend's buffers (pim-impl.h), else 0. */
static int32_t layer_of(const struct pim_backend *p, const struct hs_tensor *k)
{
    const char *d = k->data;
    const size_t layer_bytes = k->nb[3] * (size_t)k->ne[3];
    for (int32_t i = 0; i < p->n_bufs; i++) {
        const struct pim_buf *b = &p->bufs[i];
        if (d >= b->base && d < b->base + b->size && layer_bytes > 0) {
            return (int32_t)((size_t)(d - b->base) / (2 * layer_bytes));
        }
    }
    return 0;
}

/* ---- attention, rank by rank ---- */

static hs_status grow(void **p, size_t *cap, size_t n, size_t size)
{
    return hs__grow(p, cap, n, size) ? HS_OK : HS_E_NOMEM;
}

/* The range of positions [*b, *e) seq reads (empty when *b >= *e). */
static void seq_range(const struct hs_attn_seq *s, int64_t *b, int64_t *e)
{
    *b = s->kv_begin;
    *e = s->kv_end > 0 ? s->kv_end : (int64_t)s->n_past + s->n_new;
    if (s->n_new == 0) {
        *e = *b;
    }
}

/* Positions of [p0, p1) the rows of s read (each row its causal prefix). */
static int64_t tokens_read(const struct hs_attn_seq *s, int64_t p0, int64_t p1)
{
    int64_t n = 0;
    for (int32_t j = 0; j < s->n_new; j++) {
        const int64_t end = HS_MIN(p1, (int64_t)s->n_past + j + 1);
        n += HS_MAX(0, end - p0);
    }
    return n;
}

/* Sort order of the items: segment (position order, so merges go in it), then the sequences'
 * home d (sequences of one home put their head groups on the same ranks), then head group, then
 * whether the sequence spans several segments: a run of equal keys is one rank's share for one
 * inner call, and consecutive calls walk one class of sequences head group by head group, which
 * keeps a sequence's rows in the caches and TLB as the CPU backend's own order does. */
static uint64_t item_key(const struct pim_item *it, int64_t seg0, const struct hs_pim_map *m)
{
    return ((((uint64_t)(it->seg - seg0) * (uint64_t)m->n_ranks + (uint64_t)it->d) *
                 (uint64_t)m->groups_per_seq +
             (uint64_t)it->group) *
            2) +
           (it->multi ? 1u : 0u);
}

static int item_cmp(const void *a, const void *b)
{
    const struct pim_item *x = a, *y = b;
    if (x->key != y->key) {
        return x->key < y->key ? -1 : 1;
    }
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Sorts the items by key (stable: sequences stay in batch order): counting sort when the keys
 * are few for the items, else qsort (the tie-break on the sequence keeps it stable). */
static hs_status sort_items(struct pim_backend *p, size_t n, uint64_t n_keys)
{
    if (n_keys > 8 * (uint64_t)n) {
        qsort(p->items, n, sizeof(*p->items), item_cmp);
        return HS_OK;
    }
    HS_TRY(grow((void **)&p->counts, &p->cap_counts, (size_t)n_keys + 1, sizeof(*p->counts)));
    HS_TRY(grow((void **)&p->sorted, &p->cap_sorted, n, sizeof(*p->sorted)));
    memset(p->counts, 0, ((size_t)n_keys + 1) * sizeof(*p->counts));
    for (size_t i = 0; i < n; i++) {
        p->counts[p->items[i].key + 1]++;
    }
    for (uint64_t k = 0; k < n_keys; k++) {
        p->counts[k + 1] += p->counts[k];
    }
    for (size_t i = 0; i < n; i++) {
        p->sorted[p->counts[p->items[i].key]++] = p->items[i];
    }
    struct pim_item *t = p->items;
    p->items = p->sorted;
    p->sorted = t;
    const size_t c = p->cap_items;
    p->cap_items = p->cap_sorted;
    p->cap_sorted = c;
    return HS_OK;
}

/* One inner call over items[0 .. n) (one rank, one head group, one segment). Sequences whose
 * range is that one segment go straight into the caller's output (normalised, or partials when
 * the caller asked for them): their single partial finalised is what the inner op computes
 * itself, bit for bit. Sequences spread over several segments get partials into part, combined
 * into acc in segment order. */
static hs_status run_call(struct pim_backend *p, const struct hs_attn_args *a,
                          const struct hs_pim_map *m, const struct pim_item *it, int32_t n)
{
    const int64_t hd = a->q->ne[0], n_head = a->q->ne[1], n_rows = a->q->ne[2];
    const int64_t n_kv = a->k_cache->ne[1];
    const int64_t kv0 = (int64_t)it[0].group * m->heads_per_rank;
    const int64_t nkv = HS_MIN((int64_t)m->heads_per_rank, n_kv - kv0);
    const int64_t h0 = kv0 * m->group, nh = nkv * m->group;
    const int64_t n_vec = n_rows * n_head;
    const bool multi = it[0].multi;
    for (int32_t i = 0; i < n; i++) {
        p->call[i] = a->seqs[it[i].seq];
        p->call[i].kv_begin = it[i].p0;
        p->call[i].kv_end = it[i].p1;
    }
    struct hs_tensor q = *a->q, k = *a->k_cache, v = *a->v_cache, o, ms, ls;
    q.data = (char *)q.data + (size_t)h0 * q.nb[1];
    q.ne[1] = nh;
    k.data = (char *)k.data + (size_t)kv0 * k.nb[1];
    k.ne[1] = nkv;
    v.data = (char *)v.data + (size_t)kv0 * v.nb[1];
    v.ne[1] = nkv;
    bool partials = true;
    if (!multi) {
        o = *a->out;
        o.data = (char *)o.data + (size_t)h0 * o.nb[1];
        o.ne[1] = nh;
        partials = a->m != NULL;
        if (partials) {
            ms = *a->m;
            ms.data = (char *)ms.data + (size_t)h0 * sizeof(float);
            ms.ne[0] = nh;
            ls = *a->l;
            ls.data = (char *)ls.data + (size_t)h0 * sizeof(float);
            ls.ne[0] = nh;
        }
    } else {
        const int64_t ne_o[3] = {hd, n_head, n_rows};
        const int64_t ne_m[2] = {n_head, n_rows};
        HS_TRY(hs_tensor_init(&o, HS_TYPE_F32, 3, ne_o, p->part + h0 * hd));
        o.ne[1] = nh;
        HS_TRY(hs_tensor_init(&ms, HS_TYPE_F32, 2, ne_m, p->part + n_vec * hd + h0));
        ms.ne[0] = nh;
        HS_TRY(hs_tensor_init(&ls, HS_TYPE_F32, 2, ne_m, p->part + n_vec * hd + n_vec + h0));
        ls.ne[0] = nh;
    }
    const struct hs_attn_args args = {
        .q = &q,
        .out = &o,
        .k_cache = &k,
        .v_cache = &v,
        .block_size = a->block_size,
        .seqs = p->call,
        .n_seqs = n,
        .scale = a->scale,
        .m = partials ? &ms : NULL,
        .l = partials ? &ls : NULL,
        .n_batch_rows = a->n_batch_rows > 0 ? a->n_batch_rows : (int32_t)n_rows,
    };
    if (!p->dry_run) {
        HS_TRY(hs_backend_attention(p->sb.inner, &args));
    }
    p->stats.n_inner_calls++;
    p->stats.rank_hits[HS_MIN(it[0].rank, 255)]++;
    if (!multi) {
        return HS_OK;
    }
    const struct hs_attn_partial acc = {p->acc, p->acc + n_vec * hd, p->acc + n_vec * hd + n_vec};
    const struct hs_attn_partial part = {p->part, p->part + n_vec * hd,
                                         p->part + n_vec * hd + n_vec};
    for (int32_t i = 0; i < n; i++) {
        const struct hs_attn_seq *s = &p->call[i];
        for (int64_t r = s->q_row; r < (int64_t)s->q_row + s->n_new; r++) {
            const int64_t at = r * n_head + h0;
            const struct hs_attn_partial pa = {acc.o + at * hd, acc.m + at, acc.l + at};
            const struct hs_attn_partial pp = {part.o + at * hd, part.m + at, part.l + at};
            hs_attn_partial_combine(&pa, &pp, nh, hd);
        }
    }
    return HS_OK;
}

/* Rows of sequence s into the caller's output from acc (several segments merged), or as the
 * empty range (no position read): what the CPU backend writes for those. */
static void write_rows(const struct pim_backend *p, const struct hs_attn_args *a,
                       const struct hs_attn_seq *sq, bool from_acc)
{
    const int64_t hd = a->q->ne[0], n_head = a->q->ne[1], n_rows = a->q->ne[2];
    const int64_t n_vec = n_rows * n_head;
    float zero_m = -INFINITY, zero_l = 0.0f;
    for (int64_t r = sq->q_row; r < (int64_t)sq->q_row + sq->n_new; r++) {
        for (int64_t h = 0; h < n_head; h++) {
            const int64_t at = r * n_head + h;
            float *out = (float *)((char *)a->out->data + (size_t)r * a->out->nb[2] +
                                   (size_t)h * a->out->nb[1]);
            struct hs_attn_partial pa = {out, &zero_m, &zero_l}; /* the empty partial */
            if (from_acc) {
                pa = (struct hs_attn_partial){p->acc + at * hd, p->acc + n_vec * hd + at,
                                              p->acc + n_vec * hd + n_vec + at};
            } else {
                memset(out, 0, (size_t)hd * sizeof(float));
            }
            if (!a->m) {
                if (from_acc) {
                    hs_attn_partial_finalize(&pa, 1, hd, out);
                }
                continue;
            }
            if (from_acc) {
                memcpy(out, pa.o, (size_t)hd * sizeof(float));
            }
            *(float *)((char *)a->m->data + (size_t)r * a->m->nb[1] + (size_t)h * 4) = *pa.m;
            *(float *)((char *)a->l->data + (size_t)r * a->l->nb[1] + (size_t)h * 4) = *pa.l;
        }
    }
}

static hs_status pim_attention(struct hs_backend *be, const struct hs_attn_args *a)
{
    struct pim_backend *p = pim(be);
    const int64_t hd = a->q->ne[0], n_head = a->q->ne[1], n_rows = a->q->ne[2];
    const int32_t n_kv = (int32_t)a->k_cache->ne[1];
    const int32_t eb = (int32_t)hs_type_traits(a->k_cache->type)->type_size;
    struct hs_pim_map m;
    HS_TRY(hs_pim_map_init(&m, &p->cfg, (int32_t)n_head, n_kv, (int32_t)hd, eb));
    const int32_t layer = layer_of(p, a->k_cache);

    /* The items: every (segment, head group) of every sequence's range, with its rank. */
    size_t n_items = 0;
    bool any_multi = false;
    int64_t seg_lo = INT64_MAX, seg_hi = 0;
    for (int32_t s = 0; s < a->n_seqs; s++) {
        int64_t b, e;
        seq_range(&a->seqs[s], &b, &e);
        if (b < e) {
            const int64_t g0 = hs_pim_map_segment(&m, b), g1 = hs_pim_map_segment(&m, e - 1);
            n_items += (size_t)(g1 - g0 + 1) * (size_t)m.groups_per_seq;
            any_multi = any_multi || g1 > g0;
            seg_lo = HS_MIN(seg_lo, g0);
            seg_hi = HS_MAX(seg_hi, g1);
        }
    }
    HS_TRY(grow((void **)&p->items, &p->cap_items, n_items, sizeof(*p->items)));
    HS_TRY(grow((void **)&p->call, &p->cap_call, (size_t)a->n_seqs, sizeof(*p->call)));
    HS_TRY(grow((void **)&p->loads, &p->cap_loads, (size_t)m.n_ranks, sizeof(*p->loads)));
    if (any_multi) {
        const size_t floats = (size_t)(n_rows * n_head) * (size_t)(hd + 2);
        HS_TRY(grow((void **)&p->acc, &p->cap_acc, floats, sizeof(float)));
        HS_TRY(grow((void **)&p->part, &p->cap_part, floats, sizeof(float)));
    }
    memset(p->loads, 0, (size_t)m.n_ranks * sizeof(*p->loads));
    double link = 0.0;
    size_t k = 0;
    for (int32_t s = 0; s < a->n_seqs; s++) {
        const struct hs_attn_seq *sq = &a->seqs[s];
        int64_t b, e;
        seq_range(sq, &b, &e);
        link += hs_pim_link_bytes(sq->n_new, sq->n_new, (int32_t)n_head, n_kv, (int32_t)hd, eb);
        if (b >= e) {
            write_rows(p, a, sq, false);
            continue;
        }
        const int64_t key = sq->block_table[b / a->block_size];
        const int32_t d = hs_pim_map_home(&m, key);
        const int64_t g0 = hs_pim_map_segment(&m, b), g1 = hs_pim_map_segment(&m, e - 1);
        p->stats.n_spilled += g1 > g0 ? (uint64_t)m.groups_per_seq : 0;
        if (g1 > g0) {
            const struct hs_attn_partial rows = {
                p->acc + (int64_t)sq->q_row * n_head * hd,
                p->acc + n_rows * n_head * hd + (int64_t)sq->q_row * n_head,
                p->acc + n_rows * n_head * (hd + 1) + (int64_t)sq->q_row * n_head};
            hs_attn_partial_clear(&rows, (int64_t)sq->n_new * n_head, hd);
        }
        for (int64_t g = g0; g <= g1; g++) {
            const int64_t p0 = HS_MAX(b, g * m.segment_tokens);
            const int64_t p1 = HS_MIN(e, (g + 1) * m.segment_tokens);
            const int64_t toks = tokens_read(sq, p0, p1);
            for (int32_t j = 0; j < m.groups_per_seq; j++) {
                const int32_t h_first = j * m.heads_per_rank;
                const struct hs_pim_place pl = hs_pim_map_place(&m, key, layer, h_first, g);
                struct pim_item *it = &p->items[k++];
                *it = (struct pim_item){.seg = g,
                                        .d = d,
                                        .group = j,
                                        .rank = pl.rank,
                                        .seq = s,
                                        .p0 = (int32_t)p0,
                                        .p1 = (int32_t)p1,
                                        .multi = g1 > g0};
                it->key = item_key(it, seg_lo, &m);
                const int32_t h_end = HS_MIN(h_first + m.heads_per_rank, n_kv);
                for (int32_t h = h_first; h < h_end; h++) {
                    hs_pim_load_add(&p->cfg, &p->loads[pl.rank],
                                    (h % m.heads_per_rank) * m.chips_per_head, m.chips_per_head,
                                    toks, (int32_t)hd, eb, m.group);
                }
            }
        }
    }
    HS_ASSERT(k == n_items);
    const uint64_t n_keys = n_items ? (uint64_t)(seg_hi - seg_lo + 1) * (uint64_t)m.n_ranks *
                                          (uint64_t)m.groups_per_seq * 2
                                    : 0;
    HS_TRY(sort_items(p, n_items, n_keys));
    /* Rank by rank: one inner call per run of equal keys. */
    for (size_t i = 0; i < n_items;) {
        size_t j = i + 1;
        while (j < n_items && p->items[j].key == p->items[i].key) {
            j++;
        }
        HS_TRY(run_call(p, a, &m, &p->items[i], (int32_t)(j - i)));
        i = j;
    }
    if (any_multi) {
        for (int32_t s = 0; s < a->n_seqs; s++) {
            int64_t b, e;
            seq_range(&a->seqs[s], &b, &e);
            if (b < e && hs_pim_map_segment(&m, e - 1) > hs_pim_map_segment(&m, b)) {
                write_rows(p, a, &a->seqs[s], true);
            }
        }
    }

    int32_t slowest = 0;
    const double t = hs_pim_layer_time_s(&p->cfg, p->loads, m.n_ranks, link, &slowest);
    hs__sim_charge(be, t);
    p->stats.n_attn++;
    p->stats.last_layer_s = t;
    p->stats.last_slowest = slowest;
    return HS_OK;
}

/* ---- lifetime ---- */

static void pim_destroy(struct hs_backend *be)
{
    struct pim_backend *p = pim(be);
    while (p->n_bufs > 0) { /* a caller that broke the contract: still no leak */
        pim_buffer_free(be, p->bufs[p->n_bufs - 1].base);
    }
    hs__sim_finish(&p->sb);
#if HS_HAVE_HWLOC
    if (p->nodeset) {
        hwloc_bitmap_free(p->nodeset);
    }
    if (p->topo) {
        hwloc_topology_destroy(p->topo);
    }
#endif
    free(p->bufs);
    free(p->acc);
    free(p->part);
    free(p->items);
    free(p->sorted);
    free(p->counts);
    free(p->call);
    free(p->loads);
    free(p);
}

static const struct hs_backend_iface pim_iface = {
    /* .version     = */ HS_BACKEND_IFACE_VERSION,
    /* .name        = */ "pim",
    /* .destroy     = */ pim_destroy,
    /* .supports_op = */ hs__sim_supports_op,
    /* .matmul      = */ hs__sim_matmul,
    /* .get_rows    = */ hs__sim_get_rows,
    /* .rms_norm    = */ hs__sim_rms_norm,
    /* .rope        = */ hs__sim_rope,
    /* .add         = */ hs__sim_add,
    /* .mul         = */ hs__sim_mul,
    /* .swiglu      = */ hs__sim_swiglu,
    /* .kv_store    = */ hs__sim_kv_store,
    /* .attention   = */ pim_attention,
    /* .ffn         = */ hs__sim_ffn,
    /* .synchronize = */ NULL,
    /* .moe_ffn     = */ hs__sim_moe_ffn,
    /* .matmul_multi = */ hs__sim_matmul_multi,
    /* .buffer_alloc = */ pim_buffer_alloc,
    /* .buffer_free = */ pim_buffer_free,
    /* .buffer_is_host = */ NULL,
    /* .buffer_set = */ NULL,
    /* .buffer_get = */ NULL,
    /* .buffer_copy = */ NULL,
    /* .bind_caller = */ hs__sim_bind_caller,
    /* .run_host    = */ hs__sim_run_host,
    /* .prepare_weight = */ NULL,
};

bool hs_pim_backend_is(const struct hs_backend *be)
{
    return be && be->iface == &pim_iface;
}

const struct hs_pim_config *hs_pim_backend_config(const struct hs_backend *be)
{
    HS_ASSERT(hs_pim_backend_is(be));
    return &((const struct pim_backend *)be)->cfg;
}

void hs_pim_backend_set_dry_run(struct hs_backend *be, bool on)
{
    HS_ASSERT(hs_pim_backend_is(be));
    ((struct pim_backend *)be)->dry_run = on;
}

void hs_pim_backend_get_stats(const struct hs_backend *be, struct hs_pim_stats *out)
{
    HS_ASSERT(hs_pim_backend_is(be));
    *out = ((const struct pim_backend *)be)->stats;
}

/* The NUMA node of the threads' first core, to bind the KV buffers there. */
static void numa_init(struct pim_backend *p, const struct hs_backend_params *params)
{
#if HS_HAVE_HWLOC
    if (hwloc_topology_init(&p->topo) != 0) {
        p->topo = NULL;
        return;
    }
    if (hwloc_topology_load(p->topo) != 0) {
        hwloc_topology_destroy(p->topo);
        p->topo = NULL;
        return;
    }
    const int n_cores = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_CORE);
    hwloc_obj_t core = n_cores > 0 ? hwloc_get_obj_by_type(p->topo, HWLOC_OBJ_CORE,
                                                           (unsigned)(params->first_core % n_cores))
                                   : NULL;
    if (core && core->nodeset && !hwloc_bitmap_iszero(core->nodeset)) {
        p->nodeset = hwloc_bitmap_dup(core->nodeset);
    }
#else
    (void)p;
    (void)params;
#endif
}

hs_status hs__backend_pim_create(const struct hs_backend_params *params, struct hs_backend **out)
{
    *out = NULL;
    struct pim_backend *p = calloc(1, sizeof(*p));
    if (!p) {
        return HS_E_NOMEM;
    }
    p->sb.base.iface = &pim_iface;
    hs_status st = hs_pim_config_preset("chime", &p->cfg);
    if (st == HS_OK && params->config && params->config[0]) {
        struct hs_error err = {0};
        st = hs_pim_config_load(params->config, &p->cfg, &err);
        if (st != HS_OK) {
            HS_LOG_ERROR("pim: %s", err.message);
        }
    }
    if (st == HS_OK && p->cfg.level == HS_PIM_LEVEL_HOST && p->cfg.host_gbs <= 0) {
        st = hs_pim_config_measure_host(&p->cfg);
        if (st == HS_OK) {
            HS_LOG_INFO("pim: host preset: this machine's DRAM streams %.1f GB/s", p->cfg.host_gbs);
        }
    }
    if (st == HS_OK) {
        st = hs__sim_init(&p->sb, params);
    }
    if (st != HS_OK) {
        free(p);
        return st;
    }
    numa_init(p, params);
    *out = &p->sb.base;
    return HS_OK;
}
