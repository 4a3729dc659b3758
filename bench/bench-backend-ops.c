/* Kernel benchmark of the CPU backend: thread-pool dispatch latency, matmul throughput for a few
 * weight types at decode (1 row) and prefill (512 rows) shapes, and decode attention over a paged
 * f16/f32 cache. Prints one line per case; times are the best of several repetitions, so a busy
 * machine inflates them less.
 *
 * Usage: bench-backend-ops [n_threads (default 2)] */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench-util.h"
#include "backends/backend.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/quants.h"

static void nop_task(void *ctx, int ith, int nth)
{
    (void)ctx;
    (void)ith;
    (void)nth;
}

static void bench_pool(int n_threads)
{
    struct hs_pool *pool = NULL;
    if (hs__pool_create(n_threads, true, 0, &pool) != HS_OK) {
        fprintf(stderr, "pool: create failed\n");
        return;
    }
    double best = 1e9;
    for (int b = 0; b < 2000; b++) {
        const double t0 = bench_now_s();
        for (int i = 0; i < 100; i++) {
            hs__pool_run(pool, nop_task, NULL);
        }
        const double t = (bench_now_s() - t0) / 100;
        best = t < best ? t : best;
    }
    printf("pool     threads=%d dispatch+barrier: %.2f us\n", n_threads, best * 1e6);
    hs__pool_destroy(pool);
}

static void bench_evict_caches(void);

static void bench_matmul(struct hs_backend *be, enum hs_type type, int64_t n_out, int64_t n_in,
                         int64_t n_rows)
{
    const size_t row = hs_type_row_size(type, n_in);
    float *f = malloc((size_t)(n_in * n_out) * sizeof(float));
    void *q = malloc(row * (size_t)n_out);
    float *x = malloc((size_t)(n_in * n_rows) * sizeof(float));
    float *y = malloc((size_t)(n_out * n_rows) * sizeof(float));
    if (!f || !q || !x || !y) {
        goto done;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 1);
    for (int64_t i = 0; i < n_in * n_out; i++) {
        f[i] = hs_rng_range(&rng, -1.0f, 1.0f);
    }
    for (int64_t i = 0; i < n_in * n_rows; i++) {
        x[i] = hs_rng_range(&rng, -1.0f, 1.0f);
    }
    for (int64_t o = 0; o < n_out; o++) {
        hs__quantize_row_ref(type, f + o * n_in, (char *)q + (size_t)o * row, n_in);
    }
    struct hs_tensor tw, tx, ty;
    hs_tensor_init_2d(&tw, type, n_in, n_out, q);
    hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, n_rows, x);
    hs_tensor_init_2d(&ty, HS_TYPE_F32, n_out, n_rows, y);
    const int reps = n_rows == 1 ? 200 : 3;
    double best = 1e9;
    for (int b = 0; b < 10; b++) {
        const double t0 = bench_now_s();
        for (int i = 0; i < reps; i++) {
            if (hs_backend_matmul(be, &tw, &tx, &ty) != HS_OK) {
                fprintf(stderr, "matmul failed\n");
                goto done;
            }
        }
        const double t = (bench_now_s() - t0) / reps;
        best = t < best ? t : best;
    }
    /* Decode's products also with the weights out of the caches, as in a decode step of a
     * model larger than L3, where each product streams its weights from memory. */
    double cold = 1e9;
    for (int b = 0; n_rows <= 16 && b < 10; b++) {
        bench_evict_caches();
        const double t0 = bench_now_s();
        if (hs_backend_matmul(be, &tw, &tx, &ty) != HS_OK) {
            fprintf(stderr, "matmul failed\n");
            goto done;
        }
        const double t = bench_now_s() - t0;
        cold = t < cold ? t : cold;
    }
    printf("matmul   %-5s [%lld][%lld] rows=%-4lld %9.1f us %7.1f GFLOP/s %6.1f GB/s weights",
           hs_type_str(type), (long long)n_out, (long long)n_in, (long long)n_rows, best * 1e6,
           2.0 * (double)(n_in * n_out * n_rows) / best * 1e-9,
           (double)(row * (size_t)n_out) / best * 1e-9);
    if (n_rows <= 16) {
        printf(" (not cached: %.1f us)", cold * 1e6);
    }
    printf("\n");
done:
    free(y);
    free(x);
    free(q);
    free(f);
}

/* Reads and writes 64 MiB, twice the L3 of most desktop and small server parts, so that what was
 * cached before is gone. */
static void bench_evict_caches(void)
{
    enum { BYTES = 64 << 20 };
    static volatile uint8_t *buf;
    if (!buf) {
        buf = calloc(BYTES, 1);
        if (!buf) {
            return;
        }
    }
    for (size_t i = 0; i < BYTES; i += 64) {
        buf[i]++;
    }
}

/* n_new query rows (1: a decode step; more: a prompt's) after n_past positions. */
static void bench_attention(struct hs_backend *be, enum hs_type cache_type, int n_past, int n_new,
                            int n_head, int n_kv)
{
    enum { HD = 64, BS = 16 };
    const int n_tok = n_past + n_new;
    const int n_blocks = (n_tok + BS - 1) / BS;
    const size_t esz = cache_type == HS_TYPE_F16 ? 2 : 4;
    const size_t n_cache = (size_t)n_blocks * BS * n_kv * HD;
    void *kc = calloc(n_cache, esz), *vc = calloc(n_cache, esz);
    float *src = malloc((size_t)n_tok * n_kv * HD * sizeof(float));
    int32_t *slots = malloc((size_t)n_tok * sizeof(int32_t));
    int32_t *table = malloc((size_t)n_blocks * sizeof(int32_t));
    float *q = malloc((size_t)n_new * n_head * HD * sizeof(float));
    float *out = malloc((size_t)n_new * n_head * HD * sizeof(float));
    if (!kc || !vc || !src || !slots || !table || !q || !out) {
        goto done;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 2);
    for (int b = 0; b < n_blocks; b++) {
        table[b] = n_blocks - 1 - b; /* scattered: reversed */
    }
    for (int p = 0; p < n_tok; p++) {
        slots[p] = table[p / BS] * BS + p % BS;
    }
    for (size_t i = 0; i < (size_t)n_tok * n_kv * HD; i++) {
        src[i] = hs_rng_range(&rng, -1.0f, 1.0f);
    }
    for (int i = 0; i < n_new * n_head * HD; i++) {
        q[i] = hs_rng_range(&rng, -1.0f, 1.0f);
    }
    struct hs_tensor tk, tv, ts, tq, to;
    const int64_t cne[4] = {HD, n_kv, BS, n_blocks};
    const int64_t sne[3] = {HD, n_kv, n_tok};
    const int64_t qne[3] = {HD, n_head, n_new};
    hs_tensor_init(&tk, cache_type, 4, cne, kc);
    hs_tensor_init(&tv, cache_type, 4, cne, vc);
    hs_tensor_init(&ts, HS_TYPE_F32, 3, sne, src);
    hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, q);
    hs_tensor_init(&to, HS_TYPE_F32, 3, qne, out);
    if (hs_backend_kv_store(be, &ts, &tk, slots) != HS_OK ||
        hs_backend_kv_store(be, &ts, &tv, slots) != HS_OK) {
        fprintf(stderr, "kv_store failed\n");
        goto done;
    }
    const struct hs_attn_seq seq = {
        .n_past = n_past, .n_new = n_new, .q_row = 0, .block_table = table};
    const struct hs_attn_args args = {.q = &tq,
                                      .out = &to,
                                      .k_cache = &tk,
                                      .v_cache = &tv,
                                      .block_size = BS,
                                      .seqs = &seq,
                                      .n_seqs = 1,
                                      .scale = 0.125f};
    const int reps = n_new > 1 ? 2 : 20;
    double best = 1e9;
    for (int b = 0; b < 10; b++) {
        const double t0 = bench_now_s();
        for (int i = 0; i < reps; i++) {
            if (hs_backend_attention(be, &args) != HS_OK) {
                fprintf(stderr, "attention failed\n");
                goto done;
            }
        }
        const double t = (bench_now_s() - t0) / reps;
        best = t < best ? t : best;
    }
    /* Decode also with the KV cache out of the caches, as in a decode step, where the layer's
     * weights pass through them between one layer's attention and the next's. */
    double cold = 1e9;
    for (int b = 0; n_new == 1 && b < 10; b++) {
        bench_evict_caches();
        const double t0 = bench_now_s();
        if (hs_backend_attention(be, &args) != HS_OK) {
            fprintf(stderr, "attention failed\n");
            goto done;
        }
        const double t = bench_now_s() - t0;
        cold = t < cold ? t : cold;
    }
    if (n_new == 1) {
        printf("attn     %-5s decode n_ctx=%-5d heads=%d/%d hd=%d %9.1f us (KV not cached: "
               "%.1f us)\n",
               hs_type_str(cache_type), n_tok, n_head, n_kv, HD, best * 1e6, cold * 1e6);
    } else {
        /* causal: a row's scores and V sum over its prefix, 2 flops a multiply-add */
        const double macs =
            2.0 * HD * n_head * ((double)n_new * n_past + 0.5 * n_new * (n_new + 1));
        printf("attn     %-5s prefill %d rows after %d heads=%d/%d hd=%d %9.1f us %6.1f GFLOP/s\n",
               hs_type_str(cache_type), n_new, n_past, n_head, n_kv, HD, best * 1e6,
               2.0 * macs / best * 1e-9);
    }
done:
    free(out);
    free(q);
    free(table);
    free(slots);
    free(src);
    free(vc);
    free(kc);
}

int main(int argc, char **argv)
{
    const int n_threads = argc > 1 ? atoi(argv[1]) : 2;
    if (n_threads < 1 || n_threads > 1024) {
        fprintf(stderr, "usage: %s [n_threads [attn|attn-decode]]\n", argv[0]);
        return 2;
    }
    const bool attn_only = argc > 2 && strncmp(argv[2], "attn", 4) == 0;
    const bool decode_only = argc > 2 && strcmp(argv[2], "attn-decode") == 0;
    if (!attn_only) {
        bench_pool(n_threads);
    }
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = n_threads;
    struct hs_backend *be = NULL;
    if (hs_backend_create("cpu", &p, &be) != HS_OK) {
        fprintf(stderr, "cpu backend: create failed\n");
        return 1;
    }
    static const int64_t rows[] = {1, 16, 64, 512};
    for (size_t r = 0; r < HS_ARRAY_LEN(rows) && !attn_only; r++) {
        bench_matmul(be, HS_TYPE_Q8_0, 1536, 576, rows[r]);
        bench_matmul(be, HS_TYPE_Q8_0, 576, 1536, rows[r]);
        bench_matmul(be, HS_TYPE_Q4_0, 1536, 576, rows[r]);
        bench_matmul(be, HS_TYPE_Q5_0, 1536, 576, rows[r]);
        bench_matmul(be, HS_TYPE_Q4_K, 576, 1536, rows[r]);
        bench_matmul(be, HS_TYPE_Q6_K, 576, 1536, rows[r]);
        bench_matmul(be, HS_TYPE_F16, 1536, 576, rows[r]);
    }
    /* SmolLM-135M's heads (9 / 3) at a served context and at tg128 @ d1024's middle, and
     * Qwen2-0.5B's (14 / 2) at a long one. */
    bench_attention(be, HS_TYPE_F16, 255, 1, 9, 3);
    bench_attention(be, HS_TYPE_F16, 1087, 1, 9, 3);
    bench_attention(be, HS_TYPE_F16, 1000, 1, 14, 2);
    bench_attention(be, HS_TYPE_F32, 1000, 1, 14, 2);
    /* a 512-token prompt from empty (pp512) and after 1024 (pp512 @ d1024) */
    if (!decode_only) {
        bench_attention(be, HS_TYPE_F16, 0, 512, 9, 3);
        bench_attention(be, HS_TYPE_F16, 1024, 512, 9, 3);
    }
    hs_backend_destroy(be);
    return 0;
}
