/* How an attention call is split over a tenant's cores (the plan the backend computes for real)
 * and what the chip takes to run it (the cost the backend charges).
 *
 * The split: KV heads first. With at least as many KV heads as cores, each core takes a run of
 * KV heads (with their query heads) for every sequence: one partial per (sequence, head). With
 * more cores, each KV head gets a run of neighbouring cores (in serpentine order, so they are
 * virtual neighbours) over which its sequences are spread whole, least loaded first, and a
 * sequence longer than the run's fair share is cut into chunks of whole blocks (of at least
 * min_chunk_tokens positions), one per core, when the cost model says the reduction of the
 * partials costs less than the time it saves.
 *
 * The cost of one call, phase after phase (each ends when its slowest part does):
 *   scatter  q enters at the memory port nearest the tenant's root (virtual core 0) and goes
 *            down the virtual tree (virtual row 0, then each virtual column); every tree edge
 *            carries the q its subtree needs, once even when several cores of the subtree need
 *            the same (a chunked sequence's q is multicast);
 *   compute  each core's matrix unit (two passes of the KV positions, ceil(head_dim / N) x
 *            ceil(query vectors / N) cycles each, plus the softmax on N lanes) or its SRAM
 *            reads, whichever is slower, plus the translation cursor's steps; off-chip KV comes
 *            through the ports at the tenant's share of the bandwidth, spread over every port
 *            and carried over the mesh links from there;
 *   reduce   each extra chunk's partial (o in f32, m, l) goes to the core with the first chunk,
 *            which merges them;
 *   gather   the outputs go up the virtual tree and out through the root's port.
 * A message takes hops x hop_cycles + route_cycles to arrive (store and forward at each tenant
 * core of the tree); a phase's traffic takes the busiest link's bytes over its width. Where the
 * tenant sits therefore decides the hops and which links its tree edges share: a bad mapping
 * costs more. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/npu/npu-impl.h"

/* Vector-unit operations per score in the softmax (max, subtract, exp, sum). */
#define HS__NPU_SOFTMAX_OPS 4
/* Vector-unit operations per element to merge a partial into another (two scales, a sum). */
#define HS__NPU_MERGE_OPS 3

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* ---- the plan ---- */

void hs__npu_plan_free(struct hs__npu_plan *p)
{
    if (!p) {
        return;
    }
    free(p->kvh0);
    free(p->n_kvh);
    free(p->core0);
    free(p->n_cores);
    free(p->group_of_core);
    free(p->shares);
    free(p->made);
    free(p->core_first);
    free(p->core_n);
    free(p->load);
    free(p->pick);
    memset(p, 0, sizeof(*p));
}

static bool grow(void **p, int32_t *cap, int32_t want, size_t elem)
{
    if (want <= *cap) {
        return true;
    }
    void *n = realloc(*p, (size_t)want * elem);
    if (!n) {
        return false;
    }
    *p = n;
    return true;
}

static hs_status plan_reserve(struct hs__npu_plan *p, int32_t n_groups, int32_t k, int32_t n_shares)
{
    int32_t cap = p->cap_groups;
    if (!grow((void **)&p->kvh0, &cap, n_groups, sizeof(int32_t)) ||
        !grow((void **)&p->n_kvh, &cap, n_groups, sizeof(int32_t)) ||
        !grow((void **)&p->core0, &cap, n_groups, sizeof(int32_t)) ||
        !grow((void **)&p->n_cores, &cap, n_groups, sizeof(int32_t))) {
        return HS_E_NOMEM;
    }
    p->cap_groups = HS_MAX(cap, n_groups);
    cap = p->cap_cores;
    if (!grow((void **)&p->group_of_core, &cap, k, sizeof(int32_t)) ||
        !grow((void **)&p->core_first, &cap, k, sizeof(int32_t)) ||
        !grow((void **)&p->core_n, &cap, k, sizeof(int32_t)) ||
        !grow((void **)&p->load, &cap, k, sizeof(double)) ||
        !grow((void **)&p->pick, &cap, k, sizeof(int32_t))) {
        return HS_E_NOMEM;
    }
    p->cap_cores = HS_MAX(cap, k);
    cap = p->cap_shares;
    if (!grow((void **)&p->shares, &cap, n_shares, sizeof(struct hs__npu_share)) ||
        !grow((void **)&p->made, &cap, n_shares, sizeof(struct hs__npu_share))) {
        return HS_E_NOMEM;
    }
    p->cap_shares = HS_MAX(cap, n_shares);
    return HS_OK;
}

/* Matrix-unit and vector cycles of n_kvh KV heads of a share of P positions and qv query
 * vectors per KV head. */
static double share_cycles(const struct hs_npu_config *c, const struct hs__npu_shape *sh,
                           int32_t n_kvh, int64_t P, int64_t qv)
{
    const int64_t N = c->systolic;
    const double mac =
        2.0 * (double)P * (double)ceil_div(sh->head_dim, N) * (double)ceil_div(qv, N);
    const double soft = (double)HS__NPU_SOFTMAX_OPS * (double)ceil_div(P * qv, N);
    return (double)n_kvh * (mac + soft);
}

/* Cycles one extra partial of n_vec vectors costs: its transfer to the merging core (a hop or
 * two away in a good mapping) and the merge. */
static double partial_cycles(const struct hs_npu_config *c, const struct hs__npu_shape *sh,
                             int64_t n_vec)
{
    const double bytes = (double)n_vec * (sh->head_dim * 4.0 + 8.0);
    return bytes / c->link_bytes + 2.0 * (c->hop_cycles + c->route_cycles) +
           (double)n_vec * HS__NPU_MERGE_OPS * (double)ceil_div(sh->head_dim, c->systolic);
}

static int32_t n_blocks_in(int32_t b, int32_t e, int32_t bs)
{
    return e > b ? (e - 1) / bs - b / bs + 1 : 0;
}

/* The KV range [*b, *e) a sequence reads, and its blocks (none without rows). */
static int32_t seq_range(const struct hs_attn_seq *q, int32_t bs, int32_t *b, int32_t *e)
{
    *b = q->kv_begin;
    *e = q->kv_end > 0 ? q->kv_end : q->n_past + q->n_new;
    return q->n_new > 0 ? n_blocks_in(*b, *e, bs) : 0;
}

/* Chunks for a sequence of P positions (n_blocks blocks, n_new rows) on a run of G cores whose
 * fair share is `fair` positions. */
static int32_t choose_chunks(const struct hs_npu_config *c, const struct hs__npu_shape *sh,
                             enum hs_npu_split split, int32_t G, int32_t n_kvh, int64_t P,
                             int32_t n_blocks, int32_t n_new, int64_t fair)
{
    int32_t n = HS_MIN(G, n_blocks);
    if (split == HS_NPU_SPLIT_NEVER || n <= 1) {
        return 1;
    }
    if (split == HS_NPU_SPLIT_ALWAYS) {
        return n;
    }
    n = (int32_t)HS_MIN((int64_t)n, ceil_div(P, HS_MAX(fair, 1)));
    n = (int32_t)HS_MAX((int64_t)1, HS_MIN((int64_t)n, P / c->min_chunk_tokens));
    const int64_t qv = (int64_t)n_new * (sh->n_head / sh->n_kv_head);
    const double whole = share_cycles(c, sh, n_kvh, P, qv);
    const double extra = partial_cycles(c, sh, qv * n_kvh);
    for (; n > 1; n--) {
        const double saved = whole - share_cycles(c, sh, n_kvh, ceil_div(P, n), qv);
        if (saved > (n - 1) * extra) {
            break;
        }
    }
    return n;
}

hs_status hs__npu_plan_build(struct hs__npu_plan *p, const struct hs_npu_mesh *m,
                             const struct hs__npu_tenant *t, const struct hs__npu_shape *sh,
                             const struct hs_attn_seq *seqs, int32_t n_seqs,
                             enum hs_npu_split split)
{
    const int32_t k = t->k, n_kv = sh->n_kv_head, bs = sh->block_size;
    const bool by_heads = k <= n_kv;
    const int32_t n_groups = by_heads ? k : n_kv;
    const int32_t max_per_group = by_heads ? 1 : ceil_div(k, n_kv);
    HS_TRY(plan_reserve(p, n_groups, k, HS_MAX(1, n_seqs * n_groups * max_per_group)));
    p->n_groups = n_groups;
    p->n_shares = 0;
    for (int32_t c = 0; c < k; c++) {
        p->group_of_core[c] = -1;
        p->core_n[c] = 0;
    }
    for (int32_t g = 0; g < n_groups; g++) {
        if (by_heads) {
            p->kvh0[g] = g * n_kv / k;
            p->n_kvh[g] = (g + 1) * n_kv / k - p->kvh0[g];
            p->core0[g] = g;
            p->n_cores[g] = 1;
        } else {
            p->kvh0[g] = g;
            p->n_kvh[g] = 1;
            p->core0[g] = g * k / n_kv;
            p->n_cores[g] = (g + 1) * k / n_kv - p->core0[g];
        }
        for (int32_t j = 0; j < p->n_cores[g]; j++) {
            p->group_of_core[t->serp[p->core0[g] + j]] = g;
        }
    }
    for (int32_t g = 0; g < n_groups; g++) {
        const int32_t G = p->n_cores[g];
        int64_t work = 0;
        for (int32_t s = 0; s < n_seqs; s++) {
            const struct hs_attn_seq *q = &seqs[s];
            const int32_t e = q->kv_end > 0 ? q->kv_end : q->n_past + q->n_new;
            work += q->n_new > 0 ? (int64_t)HS_MAX(0, e - q->kv_begin) : 0;
        }
        const int64_t fair = ceil_div(work, G);
        for (int32_t j = 0; j < G; j++) {
            p->load[j] = 0;
        }
        for (int32_t s = 0; s < n_seqs; s++) {
            const struct hs_attn_seq *q = &seqs[s];
            if (q->n_new <= 0) {
                continue;
            }
            const int32_t b = q->kv_begin;
            const int32_t e = q->kv_end > 0 ? q->kv_end : q->n_past + q->n_new;
            const int64_t P = HS_MAX(0, e - b);
            const int32_t nc = choose_chunks(&m->cfg, sh, split, G, p->n_kvh[g], P,
                                             n_blocks_in(b, e, bs), q->n_new, fair);
            /* the nc least loaded cores of the run, in run order */
            int32_t *pick = p->pick;
            int32_t n_pick = 0;
            for (int32_t r = 0; r < nc; r++) {
                int32_t best = -1;
                for (int32_t j = 0; j < G; j++) {
                    bool taken = false;
                    for (int32_t i = 0; i < n_pick; i++) {
                        taken |= pick[i] == j;
                    }
                    if (!taken && (best < 0 || p->load[j] < p->load[best])) {
                        best = j;
                    }
                }
                pick[n_pick++] = best;
            }
            for (int32_t i = 1; i < n_pick; i++) { /* insertion sort into run order */
                const int32_t v = pick[i];
                int32_t j = i - 1;
                while (j >= 0 && pick[j] > v) {
                    pick[j + 1] = pick[j];
                    j--;
                }
                pick[j + 1] = v;
            }
            /* chunk boundaries on block boundaries (the range's own ends aside) */
            int32_t lo = b;
            for (int32_t i = 0; i < nc; i++) {
                int32_t hi = e;
                if (i + 1 < nc) {
                    hi = (int32_t)((b + (int64_t)(i + 1) * P / nc) / bs * bs);
                    hi = HS_MAX(hi, lo + 1);
                    hi = (hi + bs - 1) / bs * bs;
                    hi = HS_MIN(hi, e);
                }
                p->made[p->n_shares++] =
                    (struct hs__npu_share){.seq = s,
                                           .group = g,
                                           .core = t->serp[p->core0[g] + pick[i]],
                                           .begin = lo,
                                           .end = hi,
                                           .chunk = (int16_t)i,
                                           .n_chunks = (int16_t)nc};
                p->load[pick[i]] += (double)(hi - lo) * q->n_new;
                lo = hi;
            }
            HS_ASSERT(lo == e || P == 0);
        }
    }
    /* by core: counting sort, stable */
    for (int32_t i = 0; i < p->n_shares; i++) {
        p->core_n[p->made[i].core]++;
    }
    int32_t at = 0;
    for (int32_t c = 0; c < k; c++) {
        p->core_first[c] = at;
        at += p->core_n[c];
        p->core_n[c] = 0;
    }
    for (int32_t i = 0; i < p->n_shares; i++) {
        const int32_t c = p->made[i].core;
        p->shares[p->core_first[c] + p->core_n[c]++] = p->made[i];
    }
    return HS_OK;
}

int64_t hs__npu_sram_blocks(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t,
                            const struct hs__npu_shape *sh, uint64_t bytes_per_block)
{
    const int32_t k = t->k, n_kv = sh->n_kv_head;
    const double share =
        k <= n_kv ? (double)ceil_div(n_kv, k) / n_kv : 1.0 / ((double)n_kv * (double)(k / n_kv));
    const double per_core = (double)bytes_per_block * share;
    const double cap = (double)m->cfg.sram_bytes * m->cfg.sram_kv_fraction;
    return per_core > 0 ? (int64_t)floor(cap / per_core) : 0;
}

/* ---- the cost ---- */

static void clear_load(struct hs_npu_mesh *m)
{
    memset(m->load, 0, (size_t)m->n_links * sizeof(*m->load));
}

/* Busiest link's cycles, and the bytes x links of the phase. */
static double busiest(const struct hs_npu_mesh *m, int64_t *noc_bytes)
{
    double worst = 0.0, sum = 0.0;
    for (int32_t l = 0; l < m->n_links; l++) {
        if (m->load[l] > 0) {
            HS_ASSERT(m->link_width[l] > 0);
            worst = fmax(worst, m->load[l] / m->link_width[l]);
            sum += m->load[l];
        }
    }
    *noc_bytes += (int64_t)sum;
    return worst;
}

static void add_links(struct hs_npu_mesh *m, const int32_t *links, int32_t n, double bytes)
{
    for (int32_t i = 0; i < n; i++) {
        m->load[links[i]] += bytes;
    }
}

/* A message's latency over n hops. */
static double msg_cycles(const struct hs_npu_config *c, int32_t hops)
{
    return (double)hops * c->hop_cycles + c->route_cycles;
}

/* Traffic of bytes[v] (per virtual core) up (gather) or down (scatter) the virtual tree, plus
 * the host's leg through the root's port for those bytes and `more` (multicast, already on the
 * tree) arriving after tree_lat; returns the phase's latency in cycles. */
static double tree_phase(struct hs_npu_mesh *m, const struct hs__npu_tenant *t, double *bytes,
                         double *lat, bool down, int32_t *links, double more, double tree_lat)
{
    const int32_t k = t->k;
    double total = more, worst = tree_lat;
    for (int32_t v = 0; v < k; v++) {
        total += bytes[v];
    }
    for (int32_t v = k - 1; v > 0; v--) { /* children after their parents */
        bytes[t->parent[v]] += bytes[v];
    }
    lat[0] = 0.0;
    for (int32_t v = 1; v < k; v++) {
        const int32_t u = t->parent[v];
        lat[v] = lat[u] + msg_cycles(&m->cfg, t->hops[(size_t)u * k + v]);
        if (bytes[v] > 0) {
            const int32_t n = down ? hs__npu_route_links(m, t, u, v, links)
                                   : hs__npu_route_links(m, t, v, u, links);
            add_links(m, links, n, bytes[v]);
            worst = fmax(worst, lat[v]);
        }
    }
    if (total > 0) {
        const int32_t port = m->port_core[t->root_port];
        const int32_t pl = m->n_cores * HS__NPU_DIRS + 2 * t->root_port + (down ? 0 : 1);
        const int32_t n = down ? hs__npu_xy_links(m, port, t->v2p[0], links)
                               : hs__npu_xy_links(m, t->v2p[0], port, links);
        add_links(m, links, n, total);
        m->load[pl] += total;
        worst += msg_cycles(&m->cfg, n);
    }
    return worst;
}

hs_status hs__npu_cost(struct hs_npu_mesh *m, struct hs__npu_tenant *t,
                       const struct hs__npu_shape *sh, const struct hs__npu_kv *kv,
                       const struct hs_attn_seq *seqs, int32_t n_seqs, const struct hs__npu_plan *p,
                       struct hs_npu_cost *out)
{
    const struct hs_npu_config *c = &m->cfg;
    const int32_t k = t->k, bs = sh->block_size, hd = sh->head_dim;
    const int64_t g = sh->n_head / sh->n_kv_head;
    memset(out, 0, sizeof(*out));
    int32_t links[2 * 64 + 2 * 128 + 8];

    /* Per sequence and block of its range: positions in SRAM, off chip, translation steps. */
    size_t need = 1;
    int32_t b, e;
    for (int32_t s = 0; s < n_seqs; s++) {
        need += 3 * ((size_t)seq_range(&seqs[s], bs, &b, &e) + 1);
    }
    if (need > m->cap_pref) {
        double *np = realloc(m->pref, need * sizeof(*np));
        if (!np) {
            return HS_E_NOMEM;
        }
        m->pref = np;
        m->cap_pref = need;
    }
    if ((size_t)n_seqs > m->cap_pref_at) {
        size_t *np = realloc(m->pref_at, (size_t)n_seqs * sizeof(*np));
        if (!np) {
            return HS_E_NOMEM;
        }
        m->pref_at = np;
        m->cap_pref_at = (size_t)n_seqs;
    }
    size_t *pref_at = m->pref_at;
    size_t at = 0;
    int32_t cursor_k = 0, cursor_v = 0;
    hs_status st = HS_OK;
    for (int32_t s = 0; s < n_seqs && st == HS_OK; s++) {
        const struct hs_attn_seq *q = &seqs[s];
        const int32_t nb = seq_range(q, bs, &b, &e);
        double *res = m->pref + at, *off = res + nb + 1, *steps = off + nb + 1;
        pref_at[s] = at;
        at += 3 * ((size_t)nb + 1);
        res[0] = off[0] = steps[0] = 0.0;
        for (int32_t i = 0; i < nb && st == HS_OK; i++) {
            const int32_t blk = b / bs + i;
            const int32_t p0 = HS_MAX(b, blk * bs), p1 = HS_MIN(e, (blk + 1) * bs);
            const int32_t id = q->block_table[blk];
            const bool in_sram = id < kv->n_sram_blocks;
            int32_t st_k = 0, st_v = 0;
            if (!in_sram && kv->mapped) {
                uint64_t pa;
                st = hs__npu_translate(t, &cursor_k, kv->k_vbase + (uint64_t)id * kv->block_bytes,
                                       &pa, &st_k);
                if (st == HS_OK) {
                    st = hs__npu_translate(
                        t, &cursor_v, kv->v_vbase + (uint64_t)id * kv->block_bytes, &pa, &st_v);
                }
            }
            res[i + 1] = res[i] + (in_sram ? p1 - p0 : 0);
            off[i + 1] = off[i] + (in_sram ? 0 : p1 - p0);
            steps[i + 1] = steps[i] + st_k + st_v;
        }
    }
    if (st != HS_OK) {
        return st;
    }

    /* Per core: cycles, off-chip bytes, q in and outputs out (unicast), merges. */
    double *cyc = m->vbytes, *offb = m->vbytes + k, *merge = m->vbytes + 2 * k;
    double max_cycles = 0.0, off_total = 0.0;
    for (int32_t v = 0; v < k; v++) {
        cyc[v] = offb[v] = merge[v] = 0.0;
    }
    for (int32_t v = 0; v < k; v++) {
        double mac = 0.0, sram = 0.0, walk = 0.0;
        for (int32_t i = p->core_first[v]; i < p->core_first[v] + p->core_n[v]; i++) {
            const struct hs__npu_share *sr = &p->shares[i];
            const struct hs_attn_seq *q = &seqs[sr->seq];
            const int32_t nkvh = p->n_kvh[sr->group];
            const int64_t qv = (int64_t)q->n_new * g;
            mac += share_cycles(c, sh, nkvh, sr->end - sr->begin, qv);
            if (sr->end > sr->begin) {
                const double *res = m->pref + pref_at[sr->seq];
                const int32_t nb = seq_range(q, bs, &b, &e);
                const double *off = res + nb + 1, *steps = off + nb + 1;
                const int32_t i0 = sr->begin / bs - q->kv_begin / bs;
                const int32_t i1 = (sr->end - 1) / bs - q->kv_begin / bs + 1;
                const double row_bytes = (double)nkvh * hd * sh->kv_elem_bytes * 2.0;
                sram += (res[i1] - res[i0]) * row_bytes;
                offb[v] += (off[i1] - off[i0]) * row_bytes;
                walk += steps[i1] - steps[i0];
            }
            if (sr->n_chunks > 1 && sr->chunk == 0) {
                merge[v] += (double)(sr->n_chunks - 1) * (double)qv * nkvh * HS__NPU_MERGE_OPS *
                            (double)ceil_div(hd, c->systolic);
                out->n_merged += (int32_t)(qv * nkvh);
            }
        }
        cyc[v] = fmax(mac, sram / c->sram_bytes_per_cycle) + walk * c->range_walk_cycles;
        max_cycles = fmax(max_cycles, cyc[v]);
        out->sram_bytes += (int64_t)sram;
        out->offchip_bytes += (int64_t)offb[v];
        out->range_walks += (int64_t)walk;
        off_total += offb[v];
        out->n_cores_busy += p->core_n[v] > 0;
    }

    /* compute: cores, off-chip bandwidth, the links off-chip data crosses */
    clear_load(m);
    for (int32_t v = 0; v < k; v++) {
        if (offb[v] > 0) {
            for (int32_t i = t->mem_off[v]; i < t->mem_off[v + 1]; i++) {
                m->load[t->mem_link[i]] += offb[v] * t->mem_share[i];
            }
        }
    }
    int32_t n_live = 0;
    for (int32_t i = 0; i < m->cap_tenants; i++) {
        n_live += m->tenants[i].live;
    }
    const double share = c->offchip_share > 0 ? c->offchip_share : 1.0 / HS_MAX(1, n_live);
    out->offchip_s = off_total / (c->offchip_bytes_per_s * share);
    const double noc_mem = busiest(m, &out->noc_bytes);
    out->compute_s = fmax(fmax(max_cycles, noc_mem) / c->clock_hz, out->offchip_s);

    /* scatter: unicast q per core, multicast for chunked sequences */
    double *bytes = cyc, *lat = offb; /* reused: cycles and off-chip bytes are done */
    for (int32_t v = 0; v < k; v++) {
        bytes[v] = 0.0;
    }
    const double qvec = (double)hd * c->elem_bytes;
    clear_load(m);
    double multicast_total = 0.0, multicast_lat = 0.0;
    for (int32_t i = 0; i < p->n_shares;) {
        const struct hs__npu_share *sr = &p->made[i];
        const double vb = (double)seqs[sr->seq].n_new * g * p->n_kvh[sr->group] * qvec;
        if (sr->n_chunks == 1) {
            bytes[sr->core] += vb;
            i++;
            continue;
        }
        /* the tree edges on the way to any of the chunks' cores, once each */
        m->stamp_now++;
        for (int32_t j = i; j < i + sr->n_chunks; j++) {
            double l = 0.0;
            for (int32_t v = p->made[j].core; v > 0; v = t->parent[v]) {
                const int32_t u = t->parent[v];
                l += msg_cycles(c, t->hops[(size_t)u * k + v]);
                if (m->vstamp[v] == m->stamp_now) {
                    continue;
                }
                m->vstamp[v] = m->stamp_now;
                add_links(m, links, hs__npu_route_links(m, t, u, v, links), vb);
            }
            multicast_lat = fmax(multicast_lat, l);
        }
        multicast_total += vb;
        i += sr->n_chunks;
    }
    const double scatter =
        tree_phase(m, t, bytes, lat, true, links, multicast_total, multicast_lat);
    out->scatter_s = (scatter + busiest(m, &out->noc_bytes)) / c->clock_hz;

    /* reduce: chunk partials to the first chunk's core, merged there */
    clear_load(m);
    double reduce_lat = 0.0, merge_max = 0.0;
    const double pvec = hd * 4.0 + 8.0;
    for (int32_t i = 0; i < p->n_shares; i++) {
        const struct hs__npu_share *sr = &p->made[i];
        if (sr->chunk == 0) {
            continue;
        }
        const struct hs__npu_share *first = sr - sr->chunk;
        const double vb = (double)seqs[sr->seq].n_new * g * p->n_kvh[sr->group] * pvec;
        const int32_t n = hs__npu_route_links(m, t, sr->core, first->core, links);
        add_links(m, links, n, vb);
        reduce_lat = fmax(reduce_lat, msg_cycles(c, t->hops[(size_t)sr->core * k + first->core]));
    }
    for (int32_t v = 0; v < k; v++) {
        merge_max = fmax(merge_max, merge[v]);
    }
    const double red = busiest(m, &out->noc_bytes);
    out->reduce_s = red > 0 || merge_max > 0 ? (reduce_lat + red + merge_max) / c->clock_hz : 0.0;

    /* gather: each (sequence, group)'s output from its first chunk's core */
    for (int32_t v = 0; v < k; v++) {
        bytes[v] = 0.0;
    }
    for (int32_t i = 0; i < p->n_shares; i++) {
        const struct hs__npu_share *sr = &p->made[i];
        if (sr->chunk == 0) {
            bytes[sr->core] += (double)seqs[sr->seq].n_new * g * p->n_kvh[sr->group] * qvec;
        }
    }
    clear_load(m);
    const double gather = tree_phase(m, t, bytes, lat, false, links, 0.0, 0.0);
    out->gather_s = (gather + busiest(m, &out->noc_bytes)) / c->clock_hz;
    out->total_s = out->scatter_s + out->compute_s + out->reduce_s + out->gather_s;
    return HS_OK;
}

void hs__npu_cost_add(struct hs_npu_cost *a, const struct hs_npu_cost *b)
{
    a->total_s += b->total_s;
    a->scatter_s += b->scatter_s;
    a->compute_s += b->compute_s;
    a->reduce_s += b->reduce_s;
    a->gather_s += b->gather_s;
    a->offchip_s += b->offchip_s;
    a->sram_bytes += b->sram_bytes;
    a->offchip_bytes += b->offchip_bytes;
    a->noc_bytes += b->noc_bytes;
    a->range_walks += b->range_walks;
    a->n_merged += b->n_merged;
    a->n_cores_busy = HS_MAX(a->n_cores_busy, b->n_cores_busy);
}

/* ---- the cost model on a workload of its own ---- */

hs_status hs_npu_estimate_decode(struct hs_npu_mesh *m, int32_t id, const struct hs_npu_workload *w,
                                 struct hs_npu_cost *out)
{
    struct hs__npu_tenant *t = hs__npu_tenant_get(m, id);
    if (!t) {
        return HS_E_NOENT;
    }
    if (!w || w->n_layer < 1 || w->n_head < 1 || w->n_kv_head < 1 ||
        w->n_head % w->n_kv_head != 0 || w->head_dim < 1 || w->block_size < 1 ||
        (w->kv_elem_bytes != 2 && w->kv_elem_bytes != 4) || w->n_seqs < 1 || !w->n_ctx) {
        return HS_E_INVAL;
    }
    int64_t n_blocks = 0;
    for (int32_t s = 0; s < w->n_seqs; s++) {
        if (w->n_ctx[s] < 1) {
            return HS_E_INVAL;
        }
        n_blocks += ceil_div(w->n_ctx[s], w->block_size);
    }
    const struct hs__npu_shape sh = {.n_head = w->n_head,
                                     .n_kv_head = w->n_kv_head,
                                     .head_dim = w->head_dim,
                                     .kv_elem_bytes = w->kv_elem_bytes,
                                     .block_size = w->block_size};
    const uint64_t block_bytes = (uint64_t)w->block_size * (uint64_t)w->n_kv_head *
                                 (uint64_t)w->head_dim * (uint64_t)w->kv_elem_bytes;
    struct hs_attn_seq *seqs = calloc((size_t)w->n_seqs, sizeof(*seqs));
    int32_t *table = malloc((size_t)n_blocks * sizeof(*table));
    struct hs__npu_plan plan = {0};
    hs_status st = HS_E_NOMEM;
    int token = 0; /* the synthetic region's name: an address nothing else has */
    bool mapped = false;
    if (!seqs || !table) {
        goto done;
    }
    int32_t next = 0;
    for (int32_t s = 0; s < w->n_seqs; s++) {
        seqs[s] = (struct hs_attn_seq){
            .n_past = w->n_ctx[s] - 1, .n_new = 1, .q_row = s, .block_table = table + next};
        for (int64_t b = 0; b < ceil_div(w->n_ctx[s], w->block_size); b++) {
            table[next] = next;
            next++;
        }
    }
    /* the pool: every layer's K then V, as a context's KV store lays it out */
    const uint64_t layer_bytes = (uint64_t)n_blocks * block_bytes;
    st = hs__npu_region_map(m, t, (uintptr_t)&token, 2 * layer_bytes * (uint64_t)w->n_layer);
    if (st != HS_OK) {
        goto done;
    }
    mapped = true;
    const struct hs__npu_region *r = hs__npu_region_find(t, (uintptr_t)&token);
    const struct hs__npu_kv kv = {
        .mapped = true,
        .k_vbase = r->vbase,
        .v_vbase = r->vbase + layer_bytes,
        .block_bytes = block_bytes,
        .n_sram_blocks = hs__npu_sram_blocks(m, t, &sh, 2 * block_bytes * (uint64_t)w->n_layer),
    };
    st = hs__npu_plan_build(&plan, m, t, &sh, seqs, w->n_seqs, m->cfg.seq_split);
    if (st == HS_OK) {
        st = hs__npu_cost(m, t, &sh, &kv, seqs, w->n_seqs, &plan, out);
    }
    if (st == HS_OK) {
        const double L = w->n_layer;
        out->total_s *= L;
        out->scatter_s *= L;
        out->compute_s *= L;
        out->reduce_s *= L;
        out->gather_s *= L;
        out->offchip_s *= L;
        out->sram_bytes *= w->n_layer;
        out->offchip_bytes *= w->n_layer;
        out->noc_bytes *= w->n_layer;
        out->range_walks *= w->n_layer;
        out->n_merged *= w->n_layer;
    }
done:
    if (mapped) {
        hs__npu_region_unmap(m, t, (uintptr_t)&token);
    }
    hs__npu_plan_free(&plan);
    free(table);
    free(seqs);
    return st;
}
