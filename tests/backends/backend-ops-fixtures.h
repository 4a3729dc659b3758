/* Fixtures shared by test-backend-ops.c (matmul, matmul_multi, batch invariance, the
 * element-wise ops, validation, stats) and test-backend-ops-layers.c (attention, FFN, MoE): one
 * test program, backends/ops. */
#ifndef HS_TESTS_BACKENDS_BACKEND_OPS_FIXTURES_H
#define HS_TESTS_BACKENDS_BACKEND_OPS_FIXTURES_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend-impl.h"
#include "backends/cpu/quants.h"
#include "tests/ref/ref-ops.h"

static const int thread_counts[] = {1, 2, 3};

/* ---- helpers ---- */

static inline float *rand_floats(struct hs_rng *rng, int64_t n, float lo, float hi)
{
    float *p = malloc((size_t)n * sizeof(float));
    cr_assert_not_null(p);
    for (int64_t i = 0; i < n; i++) {
        p[i] = hs_rng_range(rng, lo, hi);
    }
    return p;
}

/* n f16 values uniform in [lo, hi) (a K or V cache's contents). */
static inline uint16_t *rand_f16(struct hs_rng *rng, int64_t n, float lo, float hi)
{
    uint16_t *p = malloc((size_t)n * sizeof(uint16_t));
    cr_assert_not_null(p);
    for (int64_t i = 0; i < n; i++) {
        p[i] = hs_fp32_to_fp16(hs_rng_range(rng, lo, hi));
    }
    return p;
}

static inline struct hs_backend *make_backend(int reg, int n_threads)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = n_threads;
    p.pin_threads = false;
    struct hs_backend *be = NULL;
    hs_status st = hs_backend_create(hs_backend_reg_name(reg), &p, &be);
    cr_assert_eq(st, HS_OK, "create %s: %s", hs_backend_reg_name(reg), hs_status_str(st));
    cr_assert_not_null(be);
    cr_assert_eq(hs_backend_n_threads(be), n_threads);
    return be;
}

/* A weight matrix [n_out][n_in] of type t quantized from random floats, and its exact
 * dequantization (what the reference multiplies by). */
struct weights {
    void *q;
    float *deq;
    struct hs_tensor t;
};

static inline void make_weights(struct weights *w, struct hs_rng *rng, enum hs_type type,
                                int64_t n_in, int64_t n_out)
{
    const size_t row = hs_type_row_size(type, n_in);
    cr_assert_gt(row, 0);
    float *f = rand_floats(rng, n_in * n_out, -1.0f, 1.0f);
    w->q = malloc(row * (size_t)n_out);
    w->deq = malloc((size_t)(n_in * n_out) * sizeof(float));
    cr_assert(w->q && w->deq);
    for (int64_t o = 0; o < n_out; o++) {
        hs__quantize_row_ref(type, f + o * n_in, (char *)w->q + (size_t)o * row, n_in);
        hs__dequantize_row_ref(type, (char *)w->q + (size_t)o * row, w->deq + o * n_in, n_in);
    }
    free(f);
    cr_assert_eq(hs_tensor_init_2d(&w->t, type, n_in, n_out, w->q), HS_OK);
}

static inline void free_weights(struct weights *w)
{
    free(w->q);
    free(w->deq);
}

static const enum hs_type weight_types[] = {
    HS_TYPE_F32,  HS_TYPE_F16,  HS_TYPE_BF16, HS_TYPE_Q8_0, HS_TYPE_Q4_0, HS_TYPE_Q5_0,
    HS_TYPE_Q4_1, HS_TYPE_Q5_1, HS_TYPE_Q4_K, HS_TYPE_Q5_K, HS_TYPE_Q6_K,
};

/* Error bound for a product with weights of type t: the activations are rounded to the type's
 * vec_dot_type (f16, bf16, q8_0, q8_1, q8_K), the weights are exact. */
static inline double matmul_tol(enum hs_type t)
{
    switch (t) {
    case HS_TYPE_F32:
        return 1e-5;
    case HS_TYPE_F16:
        return 2e-3;
    case HS_TYPE_BF16:
        return 1e-2;
    default:
        return 1e-2;
    }
}

#endif
