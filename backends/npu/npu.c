/* The "npu" backend: a simulated inter-core-connected NPU (npu.h). Every op but attention runs on
 * the inner CPU backend as it would on "cpu". Attention is split over the cores of the
 * backend's own tenant as the chip would run it (cost.c's plan): each core's share, a subset
 * of the KV heads and a range of each sequence's KV, is computed for real by the inner CPU
 * backend's attention op in partials mode over views of those heads; the partials of a (row,
 * head) are merged in position order by backends/attn-partial.c (attention/'s merge). A (row,
 * head) computed by one core is one partial over its whole range, whose finalisation is the CPU
 * op's last step: the CPU backend's bits. Then the cost model charges what the chip took, from
 * where the tenant's cores are and where the KV lives (SRAM, or off chip through the tenant's
 * range table). Buffers are host memory, each mapped into the tenant's virtual off-chip
 * space. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/attn-partial.h"
#include "backends/npu/npu-impl.h"
#include "backends/sim-impl.h"
#include "common/buf.h"

struct hs_npu_backend {
    struct hs__sim_base sim;  /* first */
    struct hs_npu_mesh *mesh; /* owns */
    int32_t tenant;           /* its own tenant's id */
    struct hs__npu_plan plan;
    float *qc;   /* [R][n_head][head_dim] the call's query rows, compacted */
    float *part; /* per core: o [R][its query heads][head_dim], then m and l [R][its heads] */
    size_t cap_qc, cap_part;
    size_t *off;              /* [k] where each core's partials start in part */
    int32_t *crow;            /* [n_seqs] each sequence's first compact row */
    struct hs_attn_seq *cseq; /* [n_shares] one core's sequences */
    int32_t cap_seqs, cap_cseq;
    struct hs_npu_cost last, sum;
    double host_s, inner_s; /* wall time in attention calls, and of it in the inner CPU calls */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const struct hs_backend_iface npu_iface;

static struct hs_npu_backend *npu(struct hs_backend *be)
{
    return be && be->iface == &npu_iface ? (struct hs_npu_backend *)be : NULL;
}

/* ---- memory ---- */

static hs_status npu_buffer_alloc(struct hs_backend *be, size_t bytes, void **base)
{
    struct hs_npu_backend *nb = npu(be);
    void *p = hs_alloc_aligned(bytes);
    if (!p) {
        return HS_E_NOMEM;
    }
    const hs_status st =
        hs__npu_region_map(nb->mesh, hs__npu_tenant_get(nb->mesh, nb->tenant), (uintptr_t)p, bytes);
    if (st != HS_OK) {
        HS_LOG_WARN("npu: no off-chip room for a buffer of %zu MiB (off-chip memory or the "
                    "tenant's %d range-table entries are full)",
                    bytes >> 20, (int)nb->mesh->cfg.range_entries);
        hs_free_aligned(p);
        return st;
    }
    *base = p;
    return HS_OK;
}

static void npu_buffer_free(struct hs_backend *be, void *base)
{
    struct hs_npu_backend *nb = npu(be);
    hs__npu_region_unmap(nb->mesh, hs__npu_tenant_get(nb->mesh, nb->tenant), (uintptr_t)base);
    hs_free_aligned(base);
}

/* ---- attention ---- */

/* Where this layer's KV lives: its blocks' virtual addresses when the cache is in one of the
 * backend's buffers (a context's KV store: every layer's K and V, so the buffer tells how many
 * layers share the SRAM), and how many blocks stay in SRAM. */
static struct hs__npu_kv kv_location(struct hs_npu_backend *nb, struct hs__npu_tenant *t,
                                     const struct hs_attn_args *a, const struct hs__npu_shape *sh)
{
    const struct hs_tensor *k = a->k_cache, *v = a->v_cache;
    struct hs__npu_kv kv = {.block_bytes = k->nb[3]};
    const struct hs__npu_region *rk = hs__npu_region_find(t, (uintptr_t)k->data);
    const struct hs__npu_region *rv = hs__npu_region_find(t, (uintptr_t)v->data);
    uint64_t layers = 1;
    if (rk && rv) {
        kv.mapped = true;
        kv.k_vbase = rk->vbase + ((uintptr_t)k->data - rk->host);
        kv.v_vbase = rv->vbase + ((uintptr_t)v->data - rv->host);
        const uint64_t layer_bytes = (uint64_t)k->nb[3] * (uint64_t)k->ne[3];
        layers = HS_MAX((uint64_t)1, rk->size / (2 * layer_bytes));
    }
    kv.n_sram_blocks = hs__npu_sram_blocks(nb->mesh, t, sh, 2 * layers * k->nb[3]);
    return kv;
}

/* The view of a cache's KV heads [kvh0, kvh0 + n). */
static struct hs_tensor head_view(const struct hs_tensor *c, int64_t kvh0, int64_t n)
{
    struct hs_tensor v = *c;
    v.data = (char *)c->data + (size_t)kvh0 * c->nb[1];
    v.ne[1] = n;
    return v;
}

/* Writes one (row, head) result: the merged partial acc, as the caller asked (normalised, or
 * the partial itself). */
static void emit(const struct hs_attn_args *a, const struct hs_attn_partial *acc, int64_t row,
                 int64_t h, int64_t hd)
{
    float *out =
        (float *)((char *)a->out->data + (size_t)row * a->out->nb[2] + (size_t)h * a->out->nb[1]);
    if (!a->m) {
        hs_attn_partial_finalize(acc, 1, hd, out);
        return;
    }
    memcpy(out, acc->o, (size_t)hd * sizeof(float));
    *(float *)((char *)a->m->data + (size_t)row * a->m->nb[1] + (size_t)h * sizeof(float)) =
        acc->m[0];
    *(float *)((char *)a->l->data + (size_t)row * a->l->nb[1] + (size_t)h * sizeof(float)) =
        acc->l[0];
}

static hs_status attention_split(struct hs_npu_backend *nb, const struct hs_attn_args *a);

static hs_status npu_attention(struct hs_backend *be, const struct hs_attn_args *a)
{
    struct hs_npu_backend *nb = npu(be);
    const double t0 = now_s();
    const hs_status st = attention_split(nb, a);
    nb->host_s += now_s() - t0;
    return st;
}

/* Host memory a wave of sequences' KV may take (see attention_split). */
#define HS__NPU_WAVE_BYTES ((size_t)1 << 20)

/* Each core's shares of sequences [s0, s1): one inner attention call per core with shares
 * there, in partials mode over views of its KV heads, into its partial buffers (compact rows
 * of the call, R of them). */
static hs_status run_cores(struct hs_npu_backend *nb, const struct hs_attn_args *a, int32_t s0,
                           int32_t s1, int64_t R, int32_t n_batch_rows)
{
    const struct hs__npu_plan *p = &nb->plan;
    const struct hs__npu_tenant *t = hs__npu_tenant_get(nb->mesh, nb->tenant);
    const int64_t hd = a->q->ne[0], n_head = a->q->ne[1];
    const int64_t g = n_head / a->k_cache->ne[1];
    for (int32_t v = 0; v < t->k; v++) {
        const int32_t grp = p->group_of_core[v];
        int32_t n = 0;
        for (int32_t i = 0; i < p->core_n[v]; i++) {
            const struct hs__npu_share *sr = &p->shares[p->core_first[v] + i];
            if (sr->seq < s0 || sr->seq >= s1) {
                continue;
            }
            const struct hs_attn_seq *q = &a->seqs[sr->seq];
            nb->cseq[n++] = (struct hs_attn_seq){.n_past = q->n_past,
                                                 .n_new = q->n_new,
                                                 .q_row = nb->crow[sr->seq],
                                                 .block_table = q->block_table,
                                                 .kv_begin = sr->begin,
                                                 .kv_end = sr->end};
        }
        if (n == 0) {
            continue;
        }
        const int64_t kvh0 = p->kvh0[grp], nkvh = p->n_kvh[grp], nqh = nkvh * g;
        struct hs_tensor qv, ov, mv, lv;
        const int64_t ne_q[3] = {hd, nqh, R};
        hs_tensor_init(&qv, HS_TYPE_F32, 3, ne_q, nb->qc + kvh0 * g * hd);
        qv.nb[2] = (size_t)(n_head * hd) * sizeof(float);
        qv.nb[3] = qv.nb[2] * (size_t)R;
        float *o = nb->part + nb->off[v];
        hs_tensor_init(&ov, HS_TYPE_F32, 3, ne_q, o);
        hs_tensor_init_2d(&mv, HS_TYPE_F32, nqh, R, o + (size_t)R * (size_t)(nqh * hd));
        hs_tensor_init_2d(&lv, HS_TYPE_F32, nqh, R, o + (size_t)R * (size_t)(nqh * (hd + 1)));
        const struct hs_tensor kview = head_view(a->k_cache, kvh0, nkvh);
        const struct hs_tensor vview = head_view(a->v_cache, kvh0, nkvh);
        const struct hs_attn_args ca = {.q = &qv,
                                        .out = &ov,
                                        .k_cache = &kview,
                                        .v_cache = &vview,
                                        .block_size = a->block_size,
                                        .seqs = nb->cseq,
                                        .n_seqs = n,
                                        .scale = a->scale,
                                        .m = &mv,
                                        .l = &lv,
                                        .n_batch_rows = n_batch_rows};
        const double t0 = now_s();
        const hs_status st = hs_backend_attention(nb->sim.inner, &ca);
        nb->inner_s += now_s() - t0;
        HS_TRY(st);
    }
    return HS_OK;
}

/* The attention op: split, computed per core, merged, charged. */
static hs_status attention_split(struct hs_npu_backend *nb, const struct hs_attn_args *a)
{
    struct hs_backend *be = &nb->sim.base;
    struct hs__npu_tenant *t = hs__npu_tenant_get(nb->mesh, nb->tenant);
    const int64_t hd = a->q->ne[0], n_head = a->q->ne[1], n_kv = a->k_cache->ne[1];
    const int64_t g = n_head / n_kv;
    struct hs__npu_plan *p = &nb->plan;
    size_t cap_seqs = (size_t)nb->cap_seqs;
    if (!hs__grow((void **)&nb->crow, &cap_seqs, (size_t)HS_MAX(1, a->n_seqs), sizeof(int32_t))) {
        return HS_E_NOMEM;
    }
    nb->cap_seqs = (int32_t)cap_seqs;
    int64_t R = 0;
    for (int32_t s = 0; s < a->n_seqs; s++) {
        nb->crow[s] = (int32_t)R;
        R += a->seqs[s].n_new;
    }
    if (R == 0) {
        memset(&nb->last, 0, sizeof(nb->last));
        return HS_OK;
    }
    /* the call's query rows, compacted: cores read their heads of them */
    const size_t row_floats = (size_t)(n_head * hd);
    if (!hs__grow((void **)&nb->qc, &nb->cap_qc, (size_t)R * row_floats, sizeof(float))) {
        return HS_E_NOMEM;
    }
    for (int32_t s = 0; s < a->n_seqs; s++) {
        for (int32_t j = 0; j < a->seqs[s].n_new; j++) {
            const char *src =
                (const char *)a->q->data + (size_t)(a->seqs[s].q_row + j) * a->q->nb[2];
            float *dst = nb->qc + (size_t)(nb->crow[s] + j) * row_floats;
            for (int64_t h = 0; h < n_head; h++) {
                memcpy(dst + h * hd, src + (size_t)h * a->q->nb[1], (size_t)hd * sizeof(float));
            }
        }
    }
    const struct hs__npu_shape sh = {.n_head = (int32_t)n_head,
                                     .n_kv_head = (int32_t)n_kv,
                                     .head_dim = (int32_t)hd,
                                     .kv_elem_bytes = a->k_cache->type == HS_TYPE_F16 ? 2 : 4,
                                     .block_size = a->block_size};
    HS_TRY(hs__npu_plan_build(p, nb->mesh, t, &sh, a->seqs, a->n_seqs, nb->mesh->cfg.seq_split));

    /* each core's partials: o, then m and l, for its query heads and every compact row */
    size_t total = 0;
    for (int32_t v = 0; v < t->k; v++) {
        nb->off[v] = total;
        if (p->core_n[v] > 0) {
            total += (size_t)R * (size_t)(p->n_kvh[p->group_of_core[v]] * g) * (size_t)(hd + 2);
        }
    }
    size_t cap_cseq = (size_t)nb->cap_cseq;
    if (!hs__grow((void **)&nb->part, &nb->cap_part, total + (size_t)hd + 2, sizeof(float)) ||
        !hs__grow((void **)&nb->cseq, &cap_cseq, (size_t)HS_MAX(1, p->n_shares),
                  sizeof(*nb->cseq))) {
        return HS_E_NOMEM;
    }
    nb->cap_cseq = (int32_t)cap_cseq;
    const int32_t n_batch_rows = a->n_batch_rows > 0 ? a->n_batch_rows : (int32_t)a->q->ne[2];
    /* Each core's shares are computed by one inner call per wave of sequences: the host walks
     * the cores over one wave's KV (about a megabyte) before the next, as the monolithic op
     * walks the heads of one sequence before the next, so the heads of a block stay in cache
     * (core after core over the whole batch ran a quarter slower). The chip's cost does not
     * depend on it. */
    const size_t pos_bytes = 2 * (size_t)n_kv * (size_t)hd * (size_t)sh.kv_elem_bytes;
    for (int32_t s0 = 0, s1; s0 < a->n_seqs; s0 = s1) {
        size_t wave = 0;
        for (s1 = s0; s1 < a->n_seqs; s1++) {
            const struct hs_attn_seq *q = &a->seqs[s1];
            const int32_t e = q->kv_end > 0 ? q->kv_end : q->n_past + q->n_new;
            const size_t bytes = (size_t)HS_MAX(0, e - q->kv_begin) * pos_bytes;
            if (wave > 0 && wave + bytes > HS__NPU_WAVE_BYTES) {
                break;
            }
            wave += bytes;
        }
        HS_TRY(run_cores(nb, a, s0, s1, R, n_batch_rows));
    }

    /* merge: the chunks of a (sequence, group) in position order */
    float *acc_buf = nb->part + total;
    const struct hs_attn_partial acc = {acc_buf, acc_buf + hd, acc_buf + hd + 1};
    for (int32_t i = 0; i < p->n_shares; i += p->made[i].n_chunks) {
        const struct hs__npu_share *first = &p->made[i];
        const struct hs_attn_seq *q = &a->seqs[first->seq];
        const int64_t nqh = p->n_kvh[first->group] * g, qh0 = p->kvh0[first->group] * g;
        for (int32_t j = 0; j < q->n_new; j++) {
            const int64_t r = nb->crow[first->seq] + j;
            for (int64_t hh = 0; hh < nqh; hh++) {
                struct hs_attn_partial one = {0};
                for (int32_t c = 0; c < first->n_chunks; c++) {
                    float *o = nb->part + nb->off[first[c].core];
                    const size_t vec = (size_t)(r * nqh + hh);
                    one = (struct hs_attn_partial){o + vec * (size_t)hd,
                                                   o + (size_t)(R * nqh * hd) + vec,
                                                   o + (size_t)(R * nqh * (hd + 1)) + vec};
                    if (first->n_chunks > 1) {
                        if (c == 0) {
                            hs_attn_partial_clear(&acc, 1, hd);
                        }
                        hs_attn_partial_combine(&acc, &one, 1, hd);
                    }
                }
                emit(a, first->n_chunks > 1 ? &acc : &one, q->q_row + j, qh0 + hh, hd);
            }
        }
    }

    /* what the chip took */
    const struct hs__npu_kv kv = kv_location(nb, t, a, &sh);
    HS_TRY(hs__npu_cost(nb->mesh, t, &sh, &kv, a->seqs, a->n_seqs, p, &nb->last));
    hs__npu_cost_add(&nb->sum, &nb->last);
    hs__sim_charge(be, nb->last.total_s);
    return HS_OK;
}

/* ---- lifetime ---- */

static void npu_destroy(struct hs_backend *be)
{
    struct hs_npu_backend *nb = npu(be);
    hs__npu_plan_free(&nb->plan);
    free(nb->qc);
    free(nb->part);
    free(nb->off);
    free(nb->crow);
    free(nb->cseq);
    hs_npu_mesh_destroy(nb->mesh);
    hs__sim_finish(&nb->sim);
    free(nb);
}

static const struct hs_backend_iface npu_iface = {
    /* .version        = */ HS_BACKEND_IFACE_VERSION,
    /* .name           = */ "npu",
    /* .destroy        = */ npu_destroy,
    /* .supports_op    = */ hs__sim_supports_op,
    /* .matmul         = */ hs__sim_matmul,
    /* .get_rows       = */ hs__sim_get_rows,
    /* .rms_norm       = */ hs__sim_rms_norm,
    /* .rope           = */ hs__sim_rope,
    /* .add            = */ hs__sim_add,
    /* .mul            = */ hs__sim_mul,
    /* .swiglu         = */ hs__sim_swiglu,
    /* .kv_store       = */ hs__sim_kv_store,
    /* .attention      = */ npu_attention,
    /* .ffn            = */ hs__sim_ffn,
    /* .synchronize    = */ NULL,
    /* .moe_ffn        = */ hs__sim_moe_ffn,
    /* .matmul_multi   = */ hs__sim_matmul_multi,
    /* .buffer_alloc   = */ npu_buffer_alloc,
    /* .buffer_free    = */ npu_buffer_free,
    /* .buffer_is_host = */ NULL,
    /* .buffer_set     = */ NULL,
    /* .buffer_get     = */ NULL,
    /* .buffer_copy    = */ NULL,
    /* .bind_caller    = */ hs__sim_bind_caller,
    /* .run_host    = */ hs__sim_run_host,
    /* .prepare_weight = */ NULL,
};

hs_status hs__backend_npu_create(const struct hs_backend_params *params, struct hs_backend **out)
{
    *out = NULL;
    struct hs_npu_config cfg;
    struct hs_error err = {0};
    hs_status st;
    if (params->config && params->config[0]) {
        st = hs_npu_config_load(&cfg, params->config, &err);
        if (st != HS_OK) {
            HS_LOG_ERROR("%s", err.message);
            return st;
        }
    } else {
        hs_npu_config_preset(HS_NPU_PRESET_VNPU, &cfg);
    }
    struct hs_npu_tenant_req req[HS_NPU_TENANTS_MAX];
    int32_t n_req = 1;
    if (params->tenants && params->tenants[0]) {
        st = hs_npu_tenants_parse(params->tenants, req, HS_NPU_TENANTS_MAX, &n_req, &err);
        if (st != HS_OK) {
            HS_LOG_ERROR("%s", err.message);
            return st;
        }
    } else {
        req[0] = (struct hs_npu_tenant_req){.w = cfg.mesh_x, .h = cfg.mesh_y, .own = true};
    }
    struct hs_npu_backend *nb = calloc(1, sizeof(*nb));
    if (!nb) {
        return HS_E_NOMEM;
    }
    nb->sim.base.iface = &npu_iface;
    nb->tenant = -1;
    st = hs__sim_init(&nb->sim, params);
    if (st != HS_OK) {
        free(nb);
        return st;
    }
    st = hs_npu_mesh_create(&cfg, &nb->mesh);
    nb->off = malloc((size_t)cfg.mesh_x * (size_t)cfg.mesh_y * sizeof(*nb->off));
    if (st != HS_OK || !nb->off) {
        st = st != HS_OK ? st : HS_E_NOMEM;
        goto fail;
    }
    for (int32_t i = 0; i < n_req; i++) {
        int32_t id;
        st = hs_npu_tenant_create(nb->mesh, req[i].w, req[i].h, cfg.mapper, &id);
        if (st != HS_OK) {
            HS_LOG_ERROR("npu: tenant %d (%s%s%dx%d) does not fit on the %dx%d chip with the "
                         "%s mapper: %s",
                         (int)i, req[i].name, req[i].name[0] ? " " : "", (int)req[i].w,
                         (int)req[i].h, (int)cfg.mesh_x, (int)cfg.mesh_y,
                         hs_npu_mapper_str(cfg.mapper), hs_status_str(st));
            st = st == HS_E_BUSY ? HS_E_INVAL : st; /* the parameters ask the impossible */
            goto fail;
        }
        if (req[i].own) {
            nb->tenant = id;
        }
    }
    *out = &nb->sim.base;
    return HS_OK;
fail:
    npu_destroy(&nb->sim.base);
    return st;
}

struct hs_npu_mesh *hs__npu_backend_mesh(struct hs_backend *be)
{
    struct hs_npu_backend *nb = npu(be);
    return nb ? nb->mesh : NULL;
}

int32_t hs__npu_backend_tenant(struct hs_backend *be)
{
    struct hs_npu_backend *nb = npu(be);
    return nb ? nb->tenant : -1;
}

void hs__npu_backend_host_time(struct hs_backend *be, double *attention_s, double *inner_s)
{
    struct hs_npu_backend *nb = npu(be);
    *attention_s = nb ? nb->host_s : 0.0;
    *inner_s = nb ? nb->inner_s : 0.0;
}

void hs__npu_backend_costs(struct hs_backend *be, struct hs_npu_cost *last, struct hs_npu_cost *sum)
{
    struct hs_npu_backend *nb = npu(be);
    if (last) {
        *last = nb ? nb->last : (struct hs_npu_cost){0};
    }
    if (sum) {
        *sum = nb ? nb->sum : (struct hs_npu_cost){0};
    }
}
