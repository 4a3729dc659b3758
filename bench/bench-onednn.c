/* The CPU backend's matmul on its own kernels beside oneDNN (backends/cpu/onednn.h) on
 * SmolLM-135M's FFN shapes (576 -> 1536 and 1536 -> 576): batched decode (16 rows), 64 rows and
 * prefill (512 rows), oneDNN at every row count here (the backend's HS__ONEDNN_MIN_ROWS aside) with
 * F32, F16 and BF16 weights; the same data, the same threads, the two interleaved trial by trial.
 * Prints the best and the median of the trials, their ratio and the largest difference relative to
 * the output's largest magnitude.
 *
 * For information, where they answer different questions: dnnl_sgemm (oneDNN's BLAS-like f32
 * call) on the F32 case, and oneDNN's u8s8s32 integer GEMM (one scale per tensor, which cannot
 * express Q8_0's scale per 32 weights) beside our Q8_0 matmul on the same shapes.
 *
 * The backend ignores HS_ONEDNN here: this program switches oneDNN on and off itself.
 * Usage: bench-onednn [n_threads (default 2)] [trials (default 15)] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/cpu/cpu-impl.h"
#include "backends/cpu/cpu.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/quants.h"
#include "bench/bench-util.h"

#define MAX_TRIALS 64

struct mm_case {
    enum hs_type type;
    int64_t n_out, n_in, n_rows;
    struct hs_tensor w, x, y;
};

static hs_status case_init(struct mm_case *c, enum hs_type type, int64_t n_out, int64_t n_in,
                           int64_t n_rows)
{
    memset(c, 0, sizeof(*c));
    c->type = type;
    c->n_out = n_out;
    c->n_in = n_in;
    c->n_rows = n_rows;
    const size_t row = hs_type_row_size(type, n_in);
    void *w = hs_alloc_aligned(row * (size_t)n_out);
    float *x = hs_alloc_aligned((size_t)(n_in * n_rows) * sizeof(float));
    float *y = hs_alloc_aligned((size_t)(n_out * n_rows) * sizeof(float));
    float *f = malloc((size_t)n_in * sizeof(float));
    if (!w || !x || !y || !f) {
        hs_free_aligned(w);
        hs_free_aligned(x);
        hs_free_aligned(y);
        free(f);
        return HS_E_NOMEM;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 7);
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++) {
            f[i] = hs_rng_range(&rng, -1.0f, 1.0f);
        }
        hs__quantize_row_ref(type, f, (char *)w + (size_t)o * row, n_in);
    }
    for (int64_t i = 0; i < n_in * n_rows; i++) {
        x[i] = hs_rng_range(&rng, -1.0f, 1.0f);
    }
    free(f);
    const int64_t wne[2] = {n_in, n_out}, xne[2] = {n_in, n_rows}, yne[2] = {n_out, n_rows};
    (void)hs_tensor_init(&c->w, type, 2, wne, w);
    (void)hs_tensor_init(&c->x, HS_TYPE_F32, 2, xne, x);
    (void)hs_tensor_init(&c->y, HS_TYPE_F32, 2, yne, y);
    return HS_OK;
}

static void case_finish(struct mm_case *c)
{
    hs_free_aligned(c->w.data);
    hs_free_aligned(c->x.data);
    hs_free_aligned(c->y.data);
}

/* Largest |a - b| over the largest |a|. */
static double max_rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    return m > 0.0 ? d / m : d;
}

/* Seconds of one matmul of c on be (a few calls, the mean, so that short ones time well). */
static double time_matmul(struct hs_backend *be, struct mm_case *c)
{
    const int calls = c->n_rows >= 256 ? 2 : 8;
    const double t0 = bench_now_s();
    for (int i = 0; i < calls; i++) {
        (void)hs_backend_matmul(be, &c->w, &c->x, &c->y);
    }
    return (bench_now_s() - t0) / calls;
}

/* One line: ours against oneDNN through the backend, trials interleaved. */
static void bench_case(struct hs_backend *be, struct mm_case *c, int trials)
{
    const int64_t ny = c->n_out * c->n_rows;
    float *ref = malloc((size_t)ny * sizeof(float));
    if (!ref) {
        return;
    }
    (void)hs__cpu_set_onednn(be, false);
    (void)hs_backend_matmul(be, &c->w, &c->x, &c->y);
    memcpy(ref, c->y.data, (size_t)ny * sizeof(float));
    (void)hs__cpu_set_onednn(be, true);
    (void)hs_backend_matmul(be, &c->w, &c->x, &c->y); /* primitive made, scratch grown */
    const double diff = max_rel_diff(ref, c->y.data, ny);
    double ours[MAX_TRIALS], dnn[MAX_TRIALS];
    for (int t = 0; t < trials; t++) {
        (void)hs__cpu_set_onednn(be, t % 2 == 0);
        double *first = t % 2 == 0 ? dnn : ours;
        first[t] = time_matmul(be, c);
        (void)hs__cpu_set_onednn(be, t % 2 != 0);
        double *second = t % 2 == 0 ? ours : dnn;
        second[t] = time_matmul(be, c);
    }
    double best_o = 1e9, best_d = 1e9;
    for (int t = 0; t < trials; t++) {
        best_o = fmin(best_o, ours[t]);
        best_d = fmin(best_d, dnn[t]);
    }
    const double med_o = bench_median(ours, trials), med_d = bench_median(dnn, trials);
    const double gflop = 2e-9 * (double)(c->n_out * c->n_in * c->n_rows);
    printf("%-4s %4lld x %4lld -> %4lld  ours %8.1f us (med %8.1f, %6.1f GFLOP/s)  onednn %8.1f "
           "us (med %8.1f)  best x%.2f med x%.2f  rel.diff %.1e\n",
           hs_type_str(c->type), (long long)c->n_rows, (long long)c->n_in, (long long)c->n_out,
           best_o * 1e6, med_o * 1e6, gflop / best_o, best_d * 1e6, med_d * 1e6, best_o / best_d,
           med_o / med_d, diff);
    (void)hs__cpu_set_onednn(be, false);
    free(ref);
}

/* dnnl_sgemm on the F32 case against the backend's own kernels, interleaved. */
static void bench_sgemm(struct hs_backend *be, struct mm_case *c, int trials)
{
    typedef int (*fn_t)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t,
                        const float *, int64_t, float, float *, int64_t);
    fn_t sgemm = (fn_t)(uintptr_t)hs__onednn_sym("dnnl_sgemm");
    if (!sgemm) {
        return;
    }
    const int64_t m = c->n_rows, n = c->n_out, k = c->n_in;
    float *ref = malloc((size_t)(m * n) * sizeof(float));
    if (!ref) {
        return;
    }
    (void)hs_backend_matmul(be, &c->w, &c->x, &c->y);
    memcpy(ref, c->y.data, (size_t)(m * n) * sizeof(float));
    double ours[MAX_TRIALS], dnn[MAX_TRIALS];
    for (int t = 0; t < trials; t++) {
        ours[t] = time_matmul(be, c);
        const int calls = m >= 256 ? 2 : 8;
        const double t0 = bench_now_s();
        for (int i = 0; i < calls; i++) {
            (void)sgemm('N', 'T', m, n, k, 1.0f, c->x.data, k, c->w.data, k, 0.0f, c->y.data, n);
        }
        dnn[t] = (bench_now_s() - t0) / calls;
    }
    const double diff = max_rel_diff(ref, c->y.data, m * n);
    const double med_o = bench_median(ours, trials), med_d = bench_median(dnn, trials);
    printf("f32  %4lld x %4lld -> %4lld  dnnl_sgemm: ours med %8.1f us  sgemm med %8.1f us  "
           "x%.2f  rel.diff %.1e\n",
           (long long)m, (long long)k, (long long)n, med_o * 1e6, med_d * 1e6, med_o / med_d, diff);
    free(ref);
}

/* dnnl_gemm_u8s8s32 (x as u8 with offset 128, w as s8) beside our Q8_0 matmul: speed only. */
static void bench_u8s8(struct hs_backend *be, int64_t n_out, int64_t n_in, int64_t n_rows,
                       int trials)
{
    typedef int (*fn_t)(char, char, char, int64_t, int64_t, int64_t, float, const uint8_t *,
                        int64_t, uint8_t, const int8_t *, int64_t, int8_t, float, int32_t *,
                        int64_t, const int32_t *);
    fn_t gemm = (fn_t)(uintptr_t)hs__onednn_sym("dnnl_gemm_u8s8s32");
    struct mm_case c;
    if (!gemm || case_init(&c, HS_TYPE_Q8_0, n_out, n_in, n_rows) != HS_OK) {
        return;
    }
    uint8_t *a = malloc((size_t)(n_rows * n_in));
    int8_t *b = malloc((size_t)(n_out * n_in));
    int32_t *cc = malloc((size_t)(n_rows * n_out) * sizeof(int32_t));
    if (a && b && cc) {
        for (int64_t i = 0; i < n_rows * n_in; i++) {
            a[i] = (uint8_t)(i * 131 + 7);
        }
        for (int64_t i = 0; i < n_out * n_in; i++) {
            b[i] = (int8_t)(i * 37 + 3);
        }
        const int32_t co = 0;
        double ours[MAX_TRIALS], dnn[MAX_TRIALS];
        for (int t = 0; t < trials; t++) {
            ours[t] = time_matmul(be, &c);
            const int calls = n_rows >= 256 ? 2 : 8;
            const double t0 = bench_now_s();
            for (int i = 0; i < calls; i++) {
                (void)gemm('N', 'T', 'F', n_rows, n_out, n_in, 1.0f, a, n_in, 128, b, n_in, 0, 0.0f,
                           cc, n_out, &co);
            }
            dnn[t] = (bench_now_s() - t0) / calls;
        }
        const double med_o = bench_median(ours, trials), med_d = bench_median(dnn, trials);
        printf("q8_0 %4lld x %4lld -> %4lld  u8s8s32: ours(Q8_0) med %8.1f us  onednn med %8.1f "
               "us  x%.2f (not a replacement: one scale per tensor)\n",
               (long long)n_rows, (long long)n_in, (long long)n_out, med_o * 1e6, med_d * 1e6,
               med_o / med_d);
    }
    free(a);
    free(b);
    free(cc);
    case_finish(&c);
}

int main(int argc, char **argv)
{
    const int n_threads = argc > 1 ? atoi(argv[1]) : 2;
    int trials = argc > 2 ? atoi(argv[2]) : 15;
    trials = trials < 1 ? 1 : trials > MAX_TRIALS ? MAX_TRIALS : trials;
    struct hs_backend_params params = hs_backend_default_params();
    params.n_threads = n_threads;
    struct hs_backend *be = NULL;
    if (hs_backend_create("cpu", &params, &be) != HS_OK) {
        fprintf(stderr, "bench-onednn: cpu backend: create failed\n");
        return 1;
    }
    if (hs__cpu_set_onednn(be, true) != HS_OK) {
        fprintf(stderr, "bench-onednn: oneDNN not available (build or libdnnl)\n");
        hs_backend_destroy(be);
        return 1;
    }
    struct hs__onednn *dnn = cpu_backend_of(be)->dnn;
    hs__onednn_set_min_rows(dnn, 1); /* batched decode's rows too: the comparison asked */
    printf("threads %d, %d trials each, interleaved; oneDNN matmul: f32 %s, bf16 %s%s\n", n_threads,
           trials, hs__onednn_impl(cpu_backend_of(be)->dnn, HS_TYPE_F32),
           hs__onednn_impl(cpu_backend_of(be)->dnn, HS_TYPE_BF16), dnn ? "" : " (off)");
    static const int64_t shapes[2][2] = {{1536, 576}, {576, 1536}}; /* n_out, n_in */
    static const int64_t rows[] = {16, 64, 512};
    static const enum hs_type types[] = {HS_TYPE_F32, HS_TYPE_F16, HS_TYPE_BF16};
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        for (size_t s = 0; s < 2; s++) {
            for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
                struct mm_case c;
                if (case_init(&c, types[t], shapes[s][0], shapes[s][1], rows[r]) != HS_OK) {
                    continue;
                }
                bench_case(be, &c, trials);
                if (types[t] == HS_TYPE_F32) {
                    (void)hs__cpu_set_onednn(be, true); /* loads the library for the symbol */
                    (void)hs__cpu_set_onednn(be, false);
                    bench_sgemm(be, &c, trials);
                }
                case_finish(&c);
            }
            bench_u8s8(be, shapes[s][0], shapes[s][1], rows[r], trials);
        }
    }
    hs_backend_destroy(be);
    return 0;
}
