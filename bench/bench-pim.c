/* The host cost of simulating DIMM-PIM: decode attention of a batch of sequences on the pim
 * backend (placement, one inner call per rank and head group, the merge, the timing model's
 * charge) against the same attention on the CPU backend it computes with, per simulated decode
 * step (every layer) and per sequence. The difference is what simulation adds to the real
 * computation; it should stay well under a millisecond per step per sequence. "bookkeeping" is
 * a call with the inner CPU calls skipped (placement, sorting, views, the timing model): the
 * simulation's cost proper; "pim - cpu" adds what splitting the work rank by rank costs the real
 * computation (and the machine's noise: both are best-of, taken in turn). Times are the best of
 * several repetitions, cpu and pim taken in turn (a busy machine inflates them less); one thread
 * each.
 *
 * Usage: bench-pim [n_layers (default 32)] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench-util.h"
#include "backends/backend.h"
#include "backends/pim/pim-impl.h"

struct shape {
    const char *name;
    int64_t n_head, n_kv, hd;
};

/* One case: n_seqs decode sequences of n_ctx positions over a scattered f16 cache; the best of
 * reps calls on cpu and on pim taken in turn (so both see the same machine), seconds per call,
 * and pim's bookkeeping (its host time outside the inner CPU calls) per call. */
struct result {
    double cpu_s, pim_s, book_s, sim_s;
};

static struct result run_case(struct hs_backend *cpu, struct hs_backend *pim,
                              const struct shape *sh, int32_t n_seqs, int32_t n_ctx, int reps)
{
    enum { BS = 16 };
    struct result res = {INFINITY, INFINITY, INFINITY, 0.0};
    const int32_t blocks_per_seq = (n_ctx + BS - 1) / BS;
    const int64_t n_blocks = (int64_t)blocks_per_seq * n_seqs;
    const size_t cache_vals = (size_t)n_blocks * BS * (size_t)(sh->n_kv * sh->hd);
    /* the cache in the pim backend's memory, as the model context puts it; both compute over it */
    struct hs_backend_buffer *buf = NULL;
    if (hs_backend_buffer_alloc(pim, cache_vals * 4, &buf) != HS_OK) {
        return res;
    }
    uint16_t *kc = hs_backend_buffer_base(buf), *vc = kc + cache_vals;
    float *q = malloc((size_t)(n_seqs * sh->n_head * sh->hd) * sizeof(float));
    float *o = malloc((size_t)(n_seqs * sh->n_head * sh->hd) * sizeof(float));
    int32_t *tables = malloc((size_t)n_blocks * sizeof(int32_t));
    struct hs_attn_seq *seqs = malloc((size_t)n_seqs * sizeof(*seqs));
    if (!q || !o || !tables || !seqs) {
        goto done;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 5);
    for (size_t i = 0; i < cache_vals; i++) {
        kc[i] = hs_fp32_to_fp16(hs_rng_range(&rng, -1, 1));
        vc[i] = hs_fp32_to_fp16(hs_rng_range(&rng, -1, 1));
    }
    for (int64_t i = 0; i < n_seqs * sh->n_head * sh->hd; i++) {
        q[i] = hs_rng_range(&rng, -1, 1);
    }
    for (int64_t b = 0; b < n_blocks; b++) {
        tables[b] = (int32_t)((b * 7919) % n_blocks); /* scattered */
    }
    for (int32_t s = 0; s < n_seqs; s++) {
        seqs[s] = (struct hs_attn_seq){.n_past = n_ctx - 1,
                                       .n_new = 1,
                                       .q_row = s,
                                       .block_table = tables + (int64_t)s * blocks_per_seq};
    }
    struct hs_tensor tk, tv, tq, to;
    const int64_t cne[4] = {sh->hd, sh->n_kv, BS, n_blocks};
    const int64_t qne[3] = {sh->hd, sh->n_head, n_seqs};
    hs_tensor_init(&tk, HS_TYPE_F16, 4, cne, kc);
    hs_tensor_init(&tv, HS_TYPE_F16, 4, cne, vc);
    hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, q);
    hs_tensor_init(&to, HS_TYPE_F32, 3, qne, o);
    const struct hs_attn_args a = {
        .q = &tq,
        .out = &to,
        .k_cache = &tk,
        .v_cache = &tv,
        .block_size = BS,
        .seqs = seqs,
        .n_seqs = n_seqs,
        .scale = 1.0f / sqrtf((float)sh->hd),
    };
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now_s();
        if (hs_backend_attention(cpu, &a) != HS_OK) {
            break;
        }
        res.cpu_s = fmin(res.cpu_s, bench_now_s() - t0);
        struct hs_backend_stats b0, b1;
        hs_backend_get_stats(pim, &b0);
        t0 = bench_now_s();
        if (hs_backend_attention(pim, &a) != HS_OK) {
            break;
        }
        res.pim_s = fmin(res.pim_s, bench_now_s() - t0);
        hs_backend_get_stats(pim, &b1);
        hs_pim_backend_set_dry_run(pim, true);
        t0 = bench_now_s();
        const hs_status st = hs_backend_attention(pim, &a);
        res.book_s = fmin(res.book_s, bench_now_s() - t0);
        hs_pim_backend_set_dry_run(pim, false);
        if (st != HS_OK) {
            break;
        }
        res.sim_s = b1.sim_time_s - b0.sim_time_s;
    }
done:
    hs_backend_buffer_free(buf);
    free(q);
    free(o);
    free(tables);
    free(seqs);
    return res;
}

int main(int argc, char **argv)
{
    const int n_layers = argc > 1 ? atoi(argv[1]) : 32;
    if (n_layers < 1 || n_layers > 1000) {
        fprintf(stderr, "usage: bench-pim [n_layers in 1..1000]\n");
        return 2;
    }
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 1;
    struct hs_backend *cpu = NULL, *pim = NULL;
    if (hs_backend_create("cpu", &p, &cpu) != HS_OK ||
        hs_backend_create("pim", &p, &pim) != HS_OK) {
        fprintf(stderr, "cannot create the backends\n");
        return 1;
    }
    static const struct shape shapes[] = {
        {"MHA 32x128", 32, 32, 128},
        {"GQA-8 32x128", 32, 4, 128},
        {"MHA 96x128", 96, 96, 128},
    };
    static const int32_t batches[] = {1, 8, 32};
    static const int32_t ctxs[] = {128, 512};
    printf("per simulated decode step (%d layers) and sequence, microseconds, best of 7 "
           "(cpu and pim in turn); one thread each\n",
           n_layers);
    printf("%-13s %5s %5s %10s %10s %10s %12s %12s\n", "shape", "seqs", "ctx", "cpu", "pim",
           "pim - cpu", "bookkeeping", "simulated");
    double worst_book = 0.0, worst_diff = 0.0;
    for (size_t si = 0; si < HS_ARRAY_LEN(shapes); si++) {
        for (size_t bi = 0; bi < HS_ARRAY_LEN(batches); bi++) {
            for (size_t ci = 0; ci < HS_ARRAY_LEN(ctxs); ci++) {
                const int32_t b = batches[bi], c = ctxs[ci];
                const struct result r = run_case(cpu, pim, &shapes[si], b, c, 7);
                const double k = (double)n_layers / b * 1e6; /* per step and sequence, us */
                worst_book = fmax(worst_book, r.book_s * k);
                worst_diff = fmax(worst_diff, (r.pim_s - r.cpu_s) * k);
                printf("%-13s %5d %5d %10.1f %10.1f %10.1f %12.2f %12.2f\n", shapes[si].name, b, c,
                       r.cpu_s * k, r.pim_s * k, (r.pim_s - r.cpu_s) * k, r.book_s * k,
                       r.sim_s * k);
            }
        }
    }
    printf("worst per decode step per sequence: bookkeeping %.1f us, pim - cpu %.1f us "
           "(aim: well under 1000)\n",
           worst_book, worst_diff);
    hs_backend_destroy(pim);
    hs_backend_destroy(cpu);
    return 0;
}
