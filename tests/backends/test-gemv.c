/* The one-activation-row (decode) kernels, hs_quant_kernels.gemv: for every weight type and ISA
 * that has one, gemv over nr rows gives, bit for bit, what vec_dot and a 1 x 1 gemm_tile give
 * row by row (the decode output may not depend on how many rows a kernel runs together), and
 * writes nothing past s[nr - 1]. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/quants.h"
#include "common/common.h"

#define MAX_ROWS 40

static const enum hs_type types[] = {
    HS_TYPE_F32,  HS_TYPE_F16,  HS_TYPE_BF16, HS_TYPE_Q8_0, HS_TYPE_Q4_0, HS_TYPE_Q5_0,
    HS_TYPE_Q4_1, HS_TYPE_Q5_1, HS_TYPE_Q4_K, HS_TYPE_Q5_K, HS_TYPE_Q6_K,
};

/* Checks gemv (k's where NULL) against k's vec_dot on n-element rows for nr = 0 .. MAX_ROWS;
 * returns the cases checked. */
static int check_gemv(const struct hs_quant_kernels *k, hs_gemv_fn gemv, int64_t n,
                      struct hs_rng *rng)
{
    if (!gemv) {
        gemv = k->gemv;
    }
    const size_t w_row = hs_type_row_size(k->type, n);
    const size_t x_row = hs_type_row_size(k->vec_dot_type, n);
    uint8_t *w = malloc(w_row * MAX_ROWS);
    uint8_t *x = malloc(x_row);
    float *src = malloc((size_t)n * sizeof(float));
    cr_assert(w && x && src);
    for (int r = 0; r < MAX_ROWS; r++) {
        /* Rows of different magnitudes, so a mixed-up scale shows. */
        const double mag = 0.25 + 2.0 * hs_rng_uniform(rng);
        for (int64_t i = 0; i < n; i++) {
            src[i] = (float)(mag * hs_rng_normal(rng));
        }
        hs__quantize_row_ref(k->type, src, w + (size_t)r * w_row, n);
    }
    for (int64_t i = 0; i < n; i++) {
        src[i] = (float)hs_rng_normal(rng);
    }
    k->from_float(src, x, n);

    float want[MAX_ROWS];
    for (int r = 0; r < MAX_ROWS; r++) {
        float t;
        k->vec_dot(n, &want[r], w + (size_t)r * w_row, x);
        k->gemm_tile(n, &t, 1, w + (size_t)r * w_row, w_row, x, x_row, 1, 1);
        cr_assert(memcmp(&t, &want[r], sizeof(t)) == 0, "%s n=%ld row %d: tile %.9g vec_dot %.9g",
                  hs_type_str(k->type), (long)n, r, (double)t, (double)want[r]);
        cr_assert(isfinite(want[r]));
    }
    int cases = 0;
    for (int nr = 0; nr <= MAX_ROWS; nr++) {
        /* Start at a row other than 0 too, so a pass does not always begin the matrix. */
        const int r0 = nr < MAX_ROWS ? (nr * 7) % (MAX_ROWS - nr + 1) : 0;
        float got[MAX_ROWS + 1];
        for (int r = 0; r <= MAX_ROWS; r++) {
            got[r] = -12345.0f;
        }
        gemv(n, got, w + (size_t)r0 * w_row, w_row, x, nr);
        for (int r = 0; r < nr; r++) {
            cr_assert(memcmp(&got[r], &want[r0 + r], sizeof(float)) == 0,
                      "%s n=%ld nr=%d row %d: gemv %.9g vec_dot %.9g", hs_type_str(k->type),
                      (long)n, nr, r, (double)got[r], (double)want[r0 + r]);
        }
        for (int r = nr; r <= MAX_ROWS; r++) {
            cr_assert_eq(got[r], -12345.0f, "%s nr=%d wrote s[%d]", hs_type_str(k->type), nr, r);
        }
        cases++;
    }
    free(w);
    free(x);
    free(src);
    return cases;
}

Test(gemv, matches_vec_dot_bit_for_bit_for_every_row_count)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 20);
    const enum hs_isa best = hs__cpu_detect_isa();
    int kernels = 0;
    for (int isa = 0; isa <= (int)best; isa++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(types); ti++) {
            const struct hs_quant_kernels *k = hs__cpu_kernels(types[ti], (enum hs_isa)isa);
            if (!k || !k->gemv) {
                continue;
            }
            const int64_t bs = hs_type_traits(types[ti])->blck_size;
            /* One block, SmolLM-135M's 576 and 1536, and an odd block count. */
            const int64_t ns[] = {bs, bs == 256 ? 768 : 576, 1536, bs * 7};
            for (size_t i = 0; i < HS_ARRAY_LEN(ns); i++) {
                cr_assert_eq(check_gemv(k, NULL, ns[i], &rng), MAX_ROWS + 1);
            }
            kernels++;
        }
    }
    /* The AVX2 path has gemv kernels for Q8_0, Q5_0, Q4_0 and the K-quants, the AVX-512 one its
     * own for those too: a table that lost them would decode through the slower tiles without
     * any test noticing. */
    if (best >= HS_ISA_AVX2) {
        cr_assert(hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_AVX2)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q5_0, HS_ISA_AVX2)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q4_0, HS_ISA_AVX2)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q4_K, HS_ISA_AVX2)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q5_K, HS_ISA_AVX2)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q6_K, HS_ISA_AVX2)->gemv != NULL);
        cr_assert_geq(kernels, 6);
    }
    if (best >= HS_ISA_AVX512) {
        cr_assert(hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_AVX512)->gemv != NULL);
        /* Q5_0's own AVX-512 gemv, not the AVX2 one. */
        cr_assert(hs__cpu_kernels(HS_TYPE_Q5_0, HS_ISA_AVX512)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q5_0, HS_ISA_AVX512)->gemv != hs__gemv_q5_0_avx2);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q4_0, HS_ISA_AVX512)->gemv != hs__gemv_q4_0_avx2);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q4_K, HS_ISA_AVX512)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q5_K, HS_ISA_AVX512)->gemv != NULL);
        cr_assert(hs__cpu_kernels(HS_TYPE_Q6_K, HS_ISA_AVX512)->gemv != NULL);
    }
}

/* The AVX-512 gemvs without VNNI run only on CPUs that lack it: call them directly, against the
 * dispatched table's vec_dot. */
Test(gemv, avx512_without_vnni_matches_vec_dot)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX512) {
        cr_skip_test("no AVX-512");
    }
    static const struct {
        enum hs_type t;
        hs_gemv_fn gemv;
    } plain[] = {
        {HS_TYPE_Q8_0, hs__gemv_q8_0_avx512}, {HS_TYPE_Q4_0, hs__gemv_q4_0_avx512},
        {HS_TYPE_Q5_0, hs__gemv_q5_0_avx512}, {HS_TYPE_Q4_K, hs__gemv_q4_k_avx512},
        {HS_TYPE_Q5_K, hs__gemv_q5_k_avx512}, {HS_TYPE_Q6_K, hs__gemv_q6_k_avx512},
    };
    struct hs_rng rng;
    hs_rng_seed(&rng, 21);
    for (size_t i = 0; i < HS_ARRAY_LEN(plain); i++) {
        const struct hs_quant_kernels *k = hs__cpu_kernels(plain[i].t, HS_ISA_AVX512);
        const int64_t bs = hs_type_traits(plain[i].t)->blck_size;
        cr_assert_eq(check_gemv(k, plain[i].gemv, bs == 256 ? 768 : 576, &rng), MAX_ROWS + 1);
        cr_assert_eq(check_gemv(k, plain[i].gemv, bs * 7, &rng), MAX_ROWS + 1);
    }
}
