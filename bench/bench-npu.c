/* Host cost of simulating the NPU: decode attention on the "npu" backend against the same on the
 * "cpu" backend (same threads, same cache contents), per simulated decode step (all layers)
 * and per sequence. The difference is what simulation adds beyond the real computation: the
 * split over the tenant's cores (one inner call per core), the copy of the queries, the merge
 * and finalisation of the partials, and the cost model; the cost model (plan and cost) alone
 * is timed too. Times are the best of several repetitions (the machine is shared).
 *
 * Columns: the best step on each backend (interleaved runs), their difference per sequence
 * (noisy on a shared machine), the simulation overhead measured inside the npu backend (its
 * attention calls' wall time less the inner CPU calls'), and the cost model alone.
 *
 * Usage: bench-npu [n_threads (default 1)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench-util.h"
#include "backends/backend.h"
#include "backends/npu/npu-impl.h"

enum { HD = 128, N_HEAD = 32, N_KV = 8, BS = 16, LAYERS = 32, REPS = 9 };

struct setup {
    struct hs_backend *be;
    struct hs_backend_buffer *buf;
    struct hs_tensor k, v;
};

/* A one-layer f16 cache of n_blocks blocks in be's memory, filled from a fixed seed. */
static int setup_init(struct setup *s, const char *name, const char *tenants, int n_threads,
                      int32_t n_blocks)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = n_threads;
    p.tenants = tenants;
    if (hs_backend_create(name, &p, &s->be) != HS_OK) {
        return -1;
    }
    const size_t layer = (size_t)n_blocks * BS * N_KV * HD * 2;
    if (hs_backend_buffer_alloc(s->be, 2 * layer, &s->buf) != HS_OK) {
        return -1;
    }
    uint16_t *host = malloc(2 * layer);
    if (!host) {
        return -1;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 3);
    for (size_t i = 0; i < layer; i++) {
        host[i] = hs_fp32_to_fp16(hs_rng_range(&rng, -1.0f, 1.0f));
    }
    hs_backend_buffer_set(s->buf, 0, host, 2 * layer);
    free(host);
    const int64_t ne[4] = {HD, N_KV, BS, n_blocks};
    char *base = hs_backend_buffer_base(s->buf);
    hs_tensor_init(&s->k, HS_TYPE_F16, 4, ne, base);
    hs_tensor_init(&s->v, HS_TYPE_F16, 4, ne, base + layer);
    return 0;
}

static void setup_finish(struct setup *s)
{
    hs_backend_buffer_free(s->buf);
    hs_backend_destroy(s->be);
}

/* Seconds of one decode step (LAYERS attention calls) of seqs on s. */
static double run_step(struct setup *s, const struct hs_attn_seq *seqs, int32_t n_seqs, float *q,
                       float *out)
{
    struct hs_tensor tq, to;
    const int64_t ne[3] = {HD, N_HEAD, n_seqs};
    hs_tensor_init(&tq, HS_TYPE_F32, 3, ne, q);
    hs_tensor_init(&to, HS_TYPE_F32, 3, ne, out);
    const struct hs_attn_args a = {.q = &tq,
                                   .out = &to,
                                   .k_cache = &s->k,
                                   .v_cache = &s->v,
                                   .block_size = BS,
                                   .seqs = seqs,
                                   .n_seqs = n_seqs,
                                   .scale = 0.088f};
    const double t0 = bench_now_s();
    for (int l = 0; l < LAYERS; l++) {
        if (hs_backend_attention(s->be, &a) != HS_OK) {
            fprintf(stderr, "attention failed on %s\n", hs_backend_name(s->be));
            exit(1);
        }
    }
    return bench_now_s() - t0;
}

/* Best-of-REPS seconds of the cost model alone (plan and cost) for one step. */
static double time_model(struct setup *s, const struct hs_attn_seq *seqs, int32_t n_seqs)
{
    struct hs_npu_mesh *m = hs__npu_backend_mesh(s->be);
    struct hs__npu_tenant *t = hs__npu_tenant_get(m, hs__npu_backend_tenant(s->be));
    const struct hs__npu_shape sh = {
        .n_head = N_HEAD, .n_kv_head = N_KV, .head_dim = HD, .kv_elem_bytes = 2, .block_size = BS};
    const struct hs__npu_kv kv = {.mapped = true,
                                  .k_vbase = 0,
                                  .v_vbase = (uint64_t)s->k.nb[3] * (uint64_t)s->k.ne[3],
                                  .block_bytes = s->k.nb[3],
                                  .n_sram_blocks = s->k.ne[3] / 2};
    struct hs__npu_plan p = {0};
    struct hs_npu_cost c;
    double best = 1e9;
    for (int r = 0; r < REPS; r++) {
        const double t0 = bench_now_s();
        for (int l = 0; l < LAYERS; l++) {
            if (hs__npu_plan_build(&p, m, t, &sh, seqs, n_seqs, m->cfg.seq_split) != HS_OK ||
                hs__npu_cost(m, t, &sh, &kv, seqs, n_seqs, &p, &c) != HS_OK) {
                fprintf(stderr, "cost model failed\n");
                exit(1);
            }
        }
        const double dt = bench_now_s() - t0;
        best = dt < best ? dt : best;
    }
    hs__npu_plan_free(&p);
    return best;
}

int main(int argc, char **argv)
{
    const int n_threads = argc > 1 ? atoi(argv[1]) : 1;
    static const int32_t batches[] = {1, 4, 16};
    static const int32_t contexts[] = {128, 512};
    static const char *const tenants[] = {NULL, "3x3", "2x2"};
    printf("decode attention, %d layers x (%d heads, %d KV heads, head dim %d), f16 cache, "
           "%d thread(s); best of %d\n",
           LAYERS, N_HEAD, N_KV, HD, n_threads, REPS);
    printf("%-6s %5s %6s %12s %12s %12s %12s %12s\n", "tenant", "seqs", "ctx", "cpu us/step",
           "npu us/step", "diff us/seq", "sim us/seq", "model us/seq");
    double worst = 0;
    for (size_t ti = 0; ti < sizeof(tenants) / sizeof(tenants[0]); ti++) {
        for (size_t ci = 0; ci < sizeof(contexts) / sizeof(contexts[0]); ci++) {
            for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
                const int32_t n_seqs = batches[bi], ctx = contexts[ci];
                const int32_t per_seq = (ctx + BS - 1) / BS;
                struct setup cpu = {0}, npu = {0};
                if (setup_init(&cpu, "cpu", NULL, n_threads, per_seq * n_seqs) != 0 ||
                    setup_init(&npu, "npu", tenants[ti], n_threads, per_seq * n_seqs) != 0) {
                    fprintf(stderr, "setup failed\n");
                    return 1;
                }
                struct hs_attn_seq *seqs = calloc((size_t)n_seqs, sizeof(*seqs));
                int32_t *table = malloc((size_t)(per_seq * n_seqs) * sizeof(*table));
                float *q = malloc((size_t)n_seqs * N_HEAD * HD * sizeof(float));
                float *out = malloc((size_t)n_seqs * N_HEAD * HD * sizeof(float));
                if (!seqs || !table || !q || !out) {
                    return 1;
                }
                struct hs_rng rng;
                hs_rng_seed(&rng, 9);
                for (int64_t i = 0; i < (int64_t)n_seqs * N_HEAD * HD; i++) {
                    q[i] = hs_rng_range(&rng, -1.0f, 1.0f);
                }
                for (int32_t b = 0; b < per_seq * n_seqs; b++) {
                    table[b] = (b * 13 + 5) % (per_seq * n_seqs);
                }
                for (int32_t s = 0; s < n_seqs; s++) {
                    seqs[s] = (struct hs_attn_seq){.n_past = ctx - 1,
                                                   .n_new = 1,
                                                   .q_row = s,
                                                   .block_table = table + s * per_seq};
                }
                /* interleaved, best of REPS each: the machine is shared */
                double tc = 1e9, tn = 1e9, sim = 1e9;
                for (int r = 0; r < REPS; r++) {
                    const double c = run_step(&cpu, seqs, n_seqs, q, out);
                    double a0, i0, a1, i1;
                    hs__npu_backend_host_time(npu.be, &a0, &i0);
                    const double n = run_step(&npu, seqs, n_seqs, q, out);
                    hs__npu_backend_host_time(npu.be, &a1, &i1);
                    tc = c < tc ? c : tc;
                    tn = n < tn ? n : tn;
                    const double o = (a1 - a0) - (i1 - i0);
                    sim = o < sim ? o : sim;
                }
                const double tm = time_model(&npu, seqs, n_seqs);
                worst = sim / n_seqs > worst ? sim / n_seqs : worst;
                printf("%-6s %5d %6d %12.1f %12.1f %12.1f %12.1f %12.1f\n",
                       tenants[ti] ? tenants[ti] : "6x6", (int)n_seqs, (int)ctx, tc * 1e6, tn * 1e6,
                       (tn - tc) * 1e6 / n_seqs, sim * 1e6 / n_seqs, tm * 1e6 / n_seqs);
                free(out);
                free(q);
                free(table);
                free(seqs);
                setup_finish(&npu);
                setup_finish(&cpu);
            }
        }
    }
    printf("worst simulation overhead per simulated decode step per sequence: %.1f us\n",
           worst * 1e6);
    return 0;
}
