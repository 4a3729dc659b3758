/* The simulated NPU's cost model (hand-computed phases, XY hops, SRAM against off-chip KV, a bad
 * mapping against a good one, chunked sequences) and the "npu" backend's attention against the
 * CPU backend's: the same bits when every (row, head) is one core's one partial, within the
 * merge's bound when sequences are chunked over cores, and simulated time that grows with the
 * context. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/backend-impl.h"
#include "backends/npu/npu-impl.h"
#include "tests/ref/ref-ops.h"

/* tests/attention/test-merge.c argues these bounds of one merged vector against the float64
 * reference (f32 accumulation; f16 V sums of the small-batch path); against the CPU backend,
 * itself within them, the triangle inequality gives twice. */
#define TOL_F32 1e-5
#define TOL_F16 5e-3

static struct hs_npu_mesh *make_mesh(const struct hs_npu_config *c)
{
    struct hs_npu_mesh *m = NULL;
    cr_assert_eq(hs_npu_mesh_create(c, &m), HS_OK);
    return m;
}

/* ---- the cost model ---- */

Test(npu_cost, two_cores_by_hand)
{
    /* 2 x 1 chip, one port on the west (at core 0); a 2 x 1 tenant on it: KV head h on core h.
     * One decode row over 16 SRAM positions, head_dim 8, f16. */
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
    c.mesh_x = 2;
    c.mesh_y = 1;
    c.mem_edges = HS_NPU_EDGE_WEST;
    struct hs_npu_mesh *m = make_mesh(&c);
    int32_t id;
    cr_assert_eq(hs_npu_tenant_create(m, 2, 1, HS_NPU_MAPPER_BEST, &id), HS_OK);
    struct hs__npu_tenant *t = hs__npu_tenant_get(m, id);
    cr_assert_eq(t->v2p[0], 0);
    const int32_t table[1] = {0};
    const struct hs_attn_seq seq = {.n_past = 15, .n_new = 1, .block_table = table};
    const struct hs__npu_shape sh = {
        .n_head = 2, .n_kv_head = 2, .head_dim = 8, .kv_elem_bytes = 2, .block_size = 16};
    const struct hs__npu_kv kv = {.n_sram_blocks = 1};
    struct hs__npu_plan p = {0};
    cr_assert_eq(hs__npu_plan_build(&p, m, t, &sh, &seq, 1, HS_NPU_SPLIT_AUTO), HS_OK);
    cr_assert_eq(p.n_groups, 2);
    cr_assert_eq(p.n_shares, 2);
    struct hs_npu_cost cost;
    cr_assert_eq(hs__npu_cost(m, t, &sh, &kv, &seq, 1, &p, &cost), HS_OK);
    /* scatter: core 1's q (8 x 2 bytes) one hop over a 4-byte link: 1 hop + 1 route cycle,
     * then 16 / 4 cycles; the host leg adds a route cycle: 2 + 1 + 4 = 7 cycles */
    const double cyc = 1.0 / 500e6;
    cr_assert_float_eq(cost.scatter_s, 7 * cyc, 1e-15);
    /* compute: 2 passes x 16 positions + softmax 4 x ceil(16 / 128); SRAM 512 B at 256 B/cycle
     * is faster: 36 cycles */
    cr_assert_float_eq(cost.compute_s, 36 * cyc, 1e-15);
    cr_assert_float_eq(cost.reduce_s, 0.0, 1e-18);
    cr_assert_float_eq(cost.gather_s, 7 * cyc, 1e-15);
    cr_assert_float_eq(cost.total_s, 50 * cyc, 1e-15);
    cr_assert_eq(cost.sram_bytes, 2 * 16 * 8 * 2 * 2);
    cr_assert_eq(cost.offchip_bytes, 0);
    cr_assert_eq(cost.n_cores_busy, 2);
    /* the same KV off chip: streamed at the tenant's share of 360 GB/s, through the west port
     * and, for core 1, one more link */
    const struct hs__npu_kv off = {.n_sram_blocks = 0};
    cr_assert_eq(hs__npu_cost(m, t, &sh, &off, &seq, 1, &p, &cost), HS_OK);
    cr_assert_eq(cost.offchip_bytes, 1024);
    cr_assert_eq(cost.sram_bytes, 0);
    cr_assert_float_eq(cost.offchip_s, 1024 / 360e9, 1e-18);
    /* core 1's 512 bytes cross its 4-byte link: 128 cycles, more than the matrix unit's 36 */
    cr_assert_float_eq(cost.compute_s, 128 * cyc, 1e-15);
    hs__npu_plan_free(&p);
    hs_npu_mesh_destroy(m);
}

/* GPT-2-small-like decode: 12 layers, 12 heads of 64, f16 cache, 8 sequences. */
static struct hs_npu_workload gpt_workload(const int32_t *ctx)
{
    return (struct hs_npu_workload){.n_layer = 12,
                                    .n_head = 12,
                                    .n_kv_head = 12,
                                    .head_dim = 64,
                                    .kv_elem_bytes = 2,
                                    .block_size = 16,
                                    .n_seqs = 8,
                                    .n_ctx = ctx};
}

Test(npu_cost, a_bad_mapping_costs_more)
{
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
    /* short enough that the KV stays in SRAM: the cores' work does not depend on the mapping */
    const int32_t ctx[8] = {256, 256, 256, 256, 256, 256, 256, 256};
    const struct hs_npu_workload w = gpt_workload(ctx);
    struct hs_npu_cost cost[2];
    for (int z = 0; z < 2; z++) {
        struct hs_npu_mesh *m = make_mesh(&c);
        int32_t id;
        cr_assert_eq(
            hs_npu_tenant_create(m, 3, 3, z ? HS_NPU_MAPPER_ZIGZAG : HS_NPU_MAPPER_BEST, &id),
            HS_OK);
        cr_assert_eq(hs_npu_estimate_decode(m, id, &w, &cost[z]), HS_OK);
        cr_assert_eq(cost[z].offchip_bytes, 0);
        hs_npu_mesh_destroy(m);
    }
    cr_assert_gt(cost[1].scatter_s, cost[0].scatter_s);
    cr_assert_gt(cost[1].gather_s, cost[0].gather_s);
    cr_assert_float_eq(cost[1].compute_s, cost[0].compute_s, 1e-12, "same work per core");
    cr_assert_gt(cost[1].total_s, cost[0].total_s);
    cr_assert_gt(cost[1].noc_bytes, cost[0].noc_bytes);
}

Test(npu_cost, sram_or_off_chip_kv)
{
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
    const int32_t ctx[8] = {100, 200, 300, 400, 500, 600, 700, 800};
    const struct hs_npu_workload w = gpt_workload(ctx);
    const int64_t kv_bytes = 3600LL * 12 * 64 * 2 * 2 * 12; /* positions x heads x ... layers */
    struct hs_npu_cost in, out;
    int32_t id;
    struct hs_npu_mesh *m = make_mesh(&c);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &id), HS_OK);
    cr_assert_eq(hs_npu_estimate_decode(m, id, &w, &in), HS_OK);
    cr_assert_eq(in.sram_bytes, kv_bytes);
    cr_assert_eq(in.offchip_bytes, 0);
    cr_assert_eq(in.range_walks, 0);
    hs_npu_mesh_destroy(m);
    c.sram_kv_fraction = 0.0;
    m = make_mesh(&c);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &id), HS_OK);
    cr_assert_eq(hs_npu_estimate_decode(m, id, &w, &out), HS_OK);
    cr_assert_eq(out.offchip_bytes, kv_bytes);
    cr_assert_eq(out.sram_bytes, 0);
    cr_assert_float_eq(out.offchip_s, (double)kv_bytes / 360e9, 1e-12);
    cr_assert_geq(out.compute_s, out.offchip_s);
    cr_assert_gt(out.total_s, 2 * in.total_s, "off-chip KV goes over 4-byte links");
    /* a second tenant halves this one's off-chip share */
    int32_t other;
    cr_assert_eq(hs_npu_tenant_create(m, 2, 2, HS_NPU_MAPPER_BEST, &other), HS_OK);
    struct hs_npu_cost shared;
    cr_assert_eq(hs_npu_estimate_decode(m, id, &w, &shared), HS_OK);
    cr_assert_float_eq(shared.offchip_s, 2 * out.offchip_s, 1e-12);
    /* the workload's synthetic cache left no off-chip memory or range entry behind */
    cr_assert_eq(hs__npu_tenant_get(m, id)->n_ranges, 0);
    hs_npu_mesh_destroy(m);
}

Test(npu_cost, long_sequences_are_chunked_over_a_heads_cores)
{
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
    struct hs_npu_mesh *m = make_mesh(&c);
    int32_t id;
    cr_assert_eq(hs_npu_tenant_create(m, 4, 4, HS_NPU_MAPPER_BEST, &id), HS_OK);
    /* GQA with 4 KV heads on 16 cores: 4 cores per KV head */
    const int32_t long_ctx[1] = {4096}, short_ctx[4] = {40, 40, 40, 40};
    struct hs_npu_workload w = {.n_layer = 1,
                                .n_head = 16,
                                .n_kv_head = 4,
                                .head_dim = 64,
                                .kv_elem_bytes = 2,
                                .block_size = 16,
                                .n_seqs = 1,
                                .n_ctx = long_ctx};
    struct hs_npu_cost one, split;
    cr_assert_eq(hs_npu_estimate_decode(m, id, &w, &split), HS_OK);
    cr_assert_gt(split.n_merged, 0);
    cr_assert_gt(split.reduce_s, 0.0);
    cr_assert_eq(split.n_cores_busy, 16);
    m->cfg.seq_split = HS_NPU_SPLIT_NEVER;
    cr_assert_eq(hs_npu_estimate_decode(m, id, &w, &one), HS_OK);
    cr_assert_eq(one.n_merged, 0);
    cr_assert_eq(one.n_cores_busy, 4);
    cr_assert_lt(split.total_s, one.total_s, "the chunks' reduction costs less than it saves");
    /* short sequences are spread whole, never cut */
    m->cfg.seq_split = HS_NPU_SPLIT_AUTO;
    w.n_ctx = short_ctx;
    w.n_seqs = 4;
    cr_assert_eq(hs_npu_estimate_decode(m, id, &w, &one), HS_OK);
    cr_assert_eq(one.n_merged, 0);
    cr_assert_eq(one.n_cores_busy, 16);
    hs_npu_mesh_destroy(m);
}

/* ---- the backend ---- */

static char config_path[64];

/* Writes a config file for the backend; returns its path. */
static const char *write_config(const char *text)
{
    snprintf(config_path, sizeof(config_path), "/tmp/hs-test-npu-%d.conf", (int)getpid());
    FILE *f = fopen(config_path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return config_path;
}

static struct hs_backend *make_npu(const char *config, const char *tenants)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 2;
    p.pin_threads = false;
    p.config = config;
    p.tenants = tenants;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("npu", &p, &be), HS_OK);
    return be;
}

static struct hs_backend *make_cpu(void)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 2;
    p.pin_threads = false;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("cpu", &p, &be), HS_OK);
    return be;
}

/* A batch over a paged cache in buffers of both backends (the same bytes): decode rows, a
 * prefill chunk over cached positions, a sequence with a KV range. */
enum { HD = 64, BS = 16, N_BLOCKS = 40, MAX_SEQS = 5, MAX_ROWS = 16 };

struct scene {
    enum hs_type type;
    int64_t n_head, n_kv;
    struct hs_backend_buffer *buf[2];
    struct hs_tensor k[2], v[2];
    int32_t tables[MAX_SEQS][N_BLOCKS];
    struct hs_attn_seq seqs[MAX_SEQS];
    int32_t n_seqs, n_rows;
    float q[MAX_ROWS * 16 * HD];
};

static void scene_init(struct scene *s, struct hs_backend *be[2], enum hs_type type, int64_t n_head,
                       int64_t n_kv, const int32_t *n_past, const int32_t *n_new, int32_t n_seqs,
                       uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    s->type = type;
    s->n_head = n_head;
    s->n_kv = n_kv;
    s->n_seqs = n_seqs;
    struct hs_rng rng;
    hs_rng_seed(&rng, seed);
    const size_t esz = type == HS_TYPE_F16 ? 2 : 4;
    const size_t layer = (size_t)N_BLOCKS * BS * (size_t)(n_kv * HD) * esz;
    void *host = malloc(2 * layer);
    cr_assert_not_null(host);
    for (size_t i = 0; i < 2 * layer / esz; i++) {
        const float x = hs_rng_range(&rng, -1.0f, 1.0f);
        if (type == HS_TYPE_F16) {
            ((uint16_t *)host)[i] = hs_fp32_to_fp16(x);
        } else {
            ((float *)host)[i] = x;
        }
    }
    const int64_t ne[4] = {HD, n_kv, BS, N_BLOCKS};
    for (int b = 0; b < 2; b++) {
        cr_assert_eq(hs_backend_buffer_alloc(be[b], 2 * layer, &s->buf[b]), HS_OK);
        cr_assert_eq(hs_backend_buffer_set(s->buf[b], 0, host, 2 * layer), HS_OK);
        char *base = hs_backend_buffer_base(s->buf[b]);
        hs_tensor_init(&s->k[b], type, 4, ne, base);
        hs_tensor_init(&s->v[b], type, 4, ne, base + layer);
    }
    free(host);
    int32_t next = 0;
    for (int32_t i = 0; i < n_seqs; i++) {
        const int32_t nb = (n_past[i] + n_new[i] + BS - 1) / BS;
        for (int32_t b = 0; b < nb; b++) {
            s->tables[i][b] = (next * 7 + 3) % N_BLOCKS; /* scattered */
            next++;
        }
        cr_assert_leq(next, N_BLOCKS);
        s->seqs[i] = (struct hs_attn_seq){.n_past = n_past[i],
                                          .n_new = n_new[i],
                                          .q_row = s->n_rows,
                                          .block_table = s->tables[i]};
        s->n_rows += n_new[i];
    }
    cr_assert_leq(s->n_rows, MAX_ROWS);
    for (int64_t i = 0; i < s->n_rows * n_head * HD; i++) {
        s->q[i] = hs_rng_range(&rng, -1.0f, 1.0f);
    }
}

static void scene_finish(struct scene *s)
{
    hs_backend_buffer_free(s->buf[0]);
    hs_backend_buffer_free(s->buf[1]);
}

/* Runs the scene's attention on backend b into out (and m, l when partials). */
static void run(struct scene *s, struct hs_backend *be, int b, float *out, float *m, float *l,
                int32_t n_batch_rows)
{
    struct hs_tensor tq, to, tm, tl;
    const int64_t ne[3] = {HD, s->n_head, s->n_rows};
    hs_tensor_init(&tq, HS_TYPE_F32, 3, ne, s->q);
    hs_tensor_init(&to, HS_TYPE_F32, 3, ne, out);
    hs_tensor_init_2d(&tm, HS_TYPE_F32, s->n_head, s->n_rows, m);
    hs_tensor_init_2d(&tl, HS_TYPE_F32, s->n_head, s->n_rows, l);
    const struct hs_attn_args a = {.q = &tq,
                                   .out = &to,
                                   .k_cache = &s->k[b],
                                   .v_cache = &s->v[b],
                                   .block_size = BS,
                                   .seqs = s->seqs,
                                   .n_seqs = s->n_seqs,
                                   .scale = 1.0f / 8.0f,
                                   .m = m ? &tm : NULL,
                                   .l = l ? &tl : NULL,
                                   .n_batch_rows = n_batch_rows};
    cr_assert_eq(hs_backend_attention(be, &a), HS_OK, "%s", hs_backend_name(be));
}

/* Compares the npu backend with the CPU backend on one scene, normalised and as partials, on
 * the small-batch and the tiled path: equal bits, or (tol > 0) within tol per vector. */
static void compare(struct scene *s, struct hs_backend *be[2], double tol, const char *what)
{
    const size_t n = (size_t)(s->n_rows * s->n_head * HD);
    const size_t nm = (size_t)(s->n_rows * s->n_head);
    float *o[2], *m[2], *l[2];
    for (int b = 0; b < 2; b++) {
        o[b] = malloc(n * sizeof(float));
        m[b] = malloc(nm * sizeof(float));
        l[b] = malloc(nm * sizeof(float));
        cr_assert(o[b] && m[b] && l[b]);
    }
    for (int pass = 0; pass < 4; pass++) {
        const bool partials = pass & 1;
        const int32_t n_batch_rows = pass & 2 ? 100 : 0;
        for (int b = 0; b < 2; b++) {
            memset(o[b], 0x55, n * sizeof(float));
            run(s, be[b], b, o[b], partials ? m[b] : NULL, partials ? l[b] : NULL, n_batch_rows);
        }
        if (tol == 0) {
            cr_assert(memcmp(o[0], o[1], n * sizeof(float)) == 0, "%s pass %d: outputs differ",
                      what, pass);
            if (partials) {
                cr_assert(memcmp(m[0], m[1], nm * sizeof(float)) == 0, "%s: m differs", what);
                cr_assert(memcmp(l[0], l[1], nm * sizeof(float)) == 0, "%s: l differs", what);
            }
            continue;
        }
        for (size_t v = 0; v < nm; v++) {
            float x[HD], y[HD];
            for (int d = 0; d < HD; d++) { /* partials: compare what they normalise to */
                x[d] = o[0][v * HD + d] / (partials ? l[0][v] : 1.0f);
                y[d] = o[1][v * HD + d] / (partials ? l[1][v] : 1.0f);
            }
            const double err = hs_ref_rel_err(x, y, HD);
            cr_assert(err < tol, "%s pass %d vector %zu: err %g (bound %g)", what, pass, v, err,
                      tol);
        }
    }
    for (int b = 0; b < 2; b++) {
        free(o[b]);
        free(m[b]);
        free(l[b]);
    }
}

Test(npu_backend, attention_gives_the_cpu_bits_when_no_sequence_is_chunked)
{
    static const int32_t n_past[4] = {37, 0, 90, 15}, n_new[4] = {1, 6, 1, 1};
    static const struct {
        int64_t n_head, n_kv;
        const char *tenants;
    } cases[] = {
        {8, 2, "3x3"},  /* more cores than KV heads: sequences spread over a head's cores */
        {8, 4, "2x1"},  /* fewer: each core takes KV heads */
        {12, 3, "2x2"}, /* uneven: 3 heads on 4 cores */
        {8, 8, NULL},   /* the whole 6 x 6 chip */
    };
    for (size_t c = 0; c < HS_ARRAY_LEN(cases); c++) {
        for (int ty = 0; ty < 2; ty++) {
            struct hs_backend *be[2] = {make_cpu(), make_npu(NULL, cases[c].tenants)};
            struct scene s;
            scene_init(&s, be, ty ? HS_TYPE_F32 : HS_TYPE_F16, cases[c].n_head, cases[c].n_kv,
                       n_past, n_new, 4, 10 + c);
            char what[64];
            snprintf(what, sizeof(what), "case %zu %s", c, ty ? "f32" : "f16");
            compare(&s, be, 0, what);
            struct hs_npu_cost last;
            hs__npu_backend_costs(be[1], &last, NULL);
            cr_assert_eq(last.n_merged, 0);
            cr_assert_gt(last.total_s, 0.0);
            scene_finish(&s);
            hs_backend_destroy(be[0]);
            hs_backend_destroy(be[1]);
        }
    }
}

Test(npu_backend, chunked_sequences_merge_within_the_bound)
{
    /* every sequence cut over all cores of its KV head, ranges included */
    const char *cfg = write_config("seq_split = always\n");
    static const int32_t n_past[3] = {150, 70, 200}, n_new[3] = {1, 3, 1};
    for (int ty = 0; ty < 2; ty++) {
        struct hs_backend *be[2] = {make_cpu(), make_npu(cfg, "4x2")};
        struct scene s;
        scene_init(&s, be, ty ? HS_TYPE_F32 : HS_TYPE_F16, 8, 2, n_past, n_new, 3, 77);
        s.seqs[2].kv_begin = 33; /* a range, as attention/ hands out */
        s.seqs[2].kv_end = 170;
        /* f16 on the small-batch path rounds the V sum to f16 in every chunk */
        compare(&s, be, 2 * (ty ? TOL_F32 : TOL_F16), ty ? "f32" : "f16");
        struct hs_npu_cost last;
        hs__npu_backend_costs(be[1], &last, NULL);
        cr_assert_gt(last.n_merged, 0);
        cr_assert_gt(last.reduce_s, 0.0);
        scene_finish(&s);
        hs_backend_destroy(be[0]);
        hs_backend_destroy(be[1]);
    }
    unlink(cfg);
}

Test(npu_backend, sim_time_is_charged_and_grows_with_the_context)
{
    struct hs_backend *be[2] = {make_cpu(), make_npu(NULL, "3x3")};
    double prev = 0.0;
    for (int i = 0; i < 3; i++) {
        const int32_t n_past[1] = {i == 0 ? 20 : i == 1 ? 200 : 600}, n_new[1] = {1};
        struct scene s;
        scene_init(&s, be, HS_TYPE_F16, 8, 8, n_past, n_new, 1, 5);
        struct hs_backend_stats st0, st1;
        hs_backend_get_stats(be[1], &st0);
        float out[8 * HD];
        run(&s, be[1], 1, out, NULL, NULL, 0);
        hs_backend_get_stats(be[1], &st1);
        const double dt = st1.sim_time_s - st0.sim_time_s;
        cr_assert_gt(dt, prev, "context %d: %g s after %g s", n_past[0] + 1, dt, prev);
        prev = dt;
        scene_finish(&s);
    }
    hs_backend_destroy(be[0]);
    hs_backend_destroy(be[1]);
}

Test(npu_backend, buffers_are_mapped_in_the_tenant_and_bad_setups_refused)
{
    struct hs_backend *be = make_npu(NULL, "2x2,*3x3");
    struct hs_npu_mesh *m = hs__npu_backend_mesh(be);
    const int32_t own = hs__npu_backend_tenant(be);
    struct hs_npu_tenant_info ti;
    cr_assert_eq(hs_npu_tenant_info(m, own, &ti), HS_OK);
    cr_assert_eq(ti.n_cores, 9, "the tenant marked '*' is the backend's");
    cr_assert_eq(hs_npu_mesh_n_tenants(m), 2);
    struct hs_backend_buffer *buf;
    cr_assert_eq(hs_backend_buffer_alloc(be, 5 << 20, &buf), HS_OK);
    cr_assert_eq(hs_npu_tenant_info(m, own, &ti), HS_OK);
    cr_assert_eq(ti.n_ranges, 1);
    cr_assert_not_null(hs__npu_region_find(hs__npu_tenant_get(m, own),
                                           (uintptr_t)hs_backend_buffer_base(buf) + 12345));
    hs_backend_buffer_free(buf);
    cr_assert_eq(hs_npu_tenant_info(m, own, &ti), HS_OK);
    cr_assert_eq(ti.n_ranges, 0);
    hs_backend_destroy(be);

    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 1;
    p.pin_threads = false;
    struct hs_backend *bad = (struct hs_backend *)1;
    p.tenants = "6x6,1x1"; /* the second does not fit */
    cr_assert_eq(hs_backend_create("npu", &p, &bad), HS_E_INVAL);
    cr_assert_null(bad);
    p.tenants = "3x";
    cr_assert_eq(hs_backend_create("npu", &p, &bad), HS_E_FORMAT);
    p.tenants = NULL;
    p.config = write_config("mesh_x = 2\nhop_cycles = -1\n");
    cr_assert_eq(hs_backend_create("npu", &p, &bad), HS_E_INVAL);
    p.config = "/nonexistent/npu.conf";
    cr_assert_eq(hs_backend_create("npu", &p, &bad), HS_E_IO);
    unlink(config_path);
}
