/* Prompt-processing kernels. Repacked weights (backends/cpu/repack.h): the 8-row Q4_0 kernel
 * against the file-layout tile (the same bits) and a float64 reference, the Q5_0 decode gemvs
 * (8 rows a group on AVX2, 16 on AVX-512) against the file layout's, and the CPU backend's
 * copies made by hs_backend_prepare_weight (same products bit for bit, memory counted, freed
 * with it). The AVX-512 tables' borrowed AVX2 tiles (tiles-avx512.c) give the AVX-512 bits. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend-impl.h"
#include "backends/cpu/quants.h"
#include "backends/cpu/repack.h"
#include "tests/ref/ref-ops.h"

static float *rand_floats(struct hs_rng *rng, int64_t n)
{
    float *p = malloc((size_t)n * sizeof(float));
    cr_assert_not_null(p);
    for (int64_t i = 0; i < n; i++) {
        p[i] = hs_rng_range(rng, -1.0f, 1.0f);
    }
    return p;
}

/* Rows [n_out][n_in] of type quantized from random floats, and their dequantization. */
static void *rand_q(enum hs_type type, struct hs_rng *rng, int64_t n_in, int64_t n_out, float *deq)
{
    const size_t row = hs_type_row_size(type, n_in);
    float *f = rand_floats(rng, n_in * n_out);
    char *q = malloc(row * (size_t)n_out);
    cr_assert_not_null(q);
    for (int64_t o = 0; o < n_out; o++) {
        hs__quantize_row_ref(type, f + o * n_in, q + (size_t)o * row, n_in);
        if (deq) {
            hs__dequantize_row_ref(type, q + (size_t)o * row, deq + o * n_in, n_in);
        }
    }
    free(f);
    return q;
}

static void *rand_q4_0(struct hs_rng *rng, int64_t n_in, int64_t n_out, float *deq)
{
    return rand_q(HS_TYPE_Q4_0, rng, n_in, n_out, deq);
}

/* Rows a group of the CPU backend's copy of type: Q5_0's on AVX-512 are 16. */
static int64_t group_rows(enum hs_type type)
{
    return type == HS_TYPE_Q5_0 && hs__cpu_detect_isa() >= HS_ISA_AVX512 ? 16 : 8;
}

/* Bytes of the CPU backend's copy of the first rows of a matrix of type with n elements a row:
 * its whole groups. */
static size_t copy_bytes(enum hs_type type, int64_t rows, int64_t n)
{
    const int64_t g = group_rows(type);
    return type == HS_TYPE_Q4_0 ? hs__q4_0x8_bytes(rows / g, n)
           : g == 16            ? hs__q5_0x16_bytes(rows / g, n)
                                : hs__q5_0x8_bytes(rows / g, n);
}

Test(repack, q4_0x8_kernel_gives_the_tile_bits)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX2) {
        cr_skip_test("no AVX2");
    }
    /* The AVX2 kernel, and on AVX-512 VNNI CPUs the one taking two groups a register (three
     * groups here: a pair and the odd one left). */
    void (*const fns[2])(int64_t, float *, size_t, const void *, int64_t, const void *, size_t,
                         int) = {hs__gemm_q4_0x8_avx2, hs__gemm_q4_0x8_avx512vnni};
    const int n_fns = hs__cpu_detect_isa() >= HS_ISA_AVX512 && hs__cpu_has_avx512vnni() ? 2 : 1;
    /* 576: SmolLM's rows; 4128: an odd block count, well past the kernel's prefetch. */
    static const int64_t ns[] = {576, 4128};
    struct hs_rng rng;
    hs_rng_seed(&rng, 2020);
    for (size_t ni = 0; ni < HS_ARRAY_LEN(ns); ni++) {
        const int64_t n = ns[ni], n_out = 32, n_x = 4;
        const size_t w_row = hs_type_row_size(HS_TYPE_Q4_0, n);
        const size_t x_row = hs_type_row_size(HS_TYPE_Q8_0, n) + 6; /* a stride not the size */
        float *deq = malloc((size_t)(n * n_out) * sizeof(float));
        cr_assert_not_null(deq);
        char *w = rand_q4_0(&rng, n, n_out, deq);
        float *xf = rand_floats(&rng, n * n_x);
        char *xq = calloc((size_t)n_x, x_row);
        float *xd = malloc((size_t)(n * n_x) * sizeof(float));
        cr_assert(xq && xd);
        const struct hs_quant_kernels *k = hs__cpu_kernels(HS_TYPE_Q4_0, HS_ISA_AVX2);
        for (int64_t c = 0; c < n_x; c++) {
            k->from_float(xf + c * n, xq + (size_t)c * x_row, n);
            hs__dequantize_row_ref(HS_TYPE_Q8_0, xq + (size_t)c * x_row, xd + c * n, n);
        }
        const size_t bytes = hs__q4_0x8_bytes(n_out / 8, n);
        cr_assert_eq(bytes, w_row * (size_t)n_out, "the copy takes the file's bytes");
        void *wr = malloc(bytes);
        cr_assert_not_null(wr);
        hs__repack_q4_0x8(w, w_row, n_out / 8, n, wr);
        float ref[32 * 4];
        hs_ref_matmul(deq, xd, ref, n_out, n, n_x);
        for (int f = 0; f < n_fns; f++) {
            for (int nc = 1; nc <= 4; nc++) {
                /* The last three groups only, so the kernel starts inside the copy. */
                float got[4][25], want[4][25];
                for (int c = 0; c < 4; c++) {
                    for (int i = 0; i < 25; i++) {
                        got[c][i] = want[c][i] = -12345.0f;
                    }
                }
                fns[f](n, &got[0][0], 25, (const char *)wr + bytes / 4, 3, xq, x_row, nc);
                for (int r = 0; r < 24; r += 4) {
                    hs__gemm_tile_q4_0_avx2(n, &want[0][r], 25, w + (size_t)(8 + r) * w_row, w_row,
                                            xq, x_row, 4, nc);
                }
                for (int c = 0; c < 4; c++) {
                    for (int i = 0; i < 25; i++) {
                        cr_assert(memcmp(&got[c][i], &want[c][i], sizeof(float)) == 0,
                                  "kernel %d n %lld nc %d row %d col %d: %.9g repacked, %.9g tile",
                                  f, (long long)n, nc, i, c, got[c][i], want[c][i]);
                        if (c < nc && i < 24) {
                            const float e = ref[c * n_out + 8 + i];
                            cr_assert(fabsf(got[c][i] - e) <= 1e-4f * (1.0f + fabsf(e)),
                                      "n %lld: %.9g vs reference %.9g", (long long)n, got[c][i], e);
                        } else {
                            cr_assert_eq(got[c][i], -12345.0f, "wrote outside the tile");
                        }
                    }
                }
            }
        }
        free(wr);
        free(xd);
        free(xq);
        free(xf);
        free(w);
        free(deq);
    }
}

typedef void (*q5_gemv_fn)(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x);

/* A repacked Q5_0 gemv (groups of g rows, made by repack, bytes_fn of them) against the file
 * layout's gemv and vec_dot of isa's table (the same bits) and a float64 reference: one
 * activation row, groups 1 and 2 of a 4-group copy, row lengths with even and odd block counts.
 * Each of the n_fns gemvs is checked. */
static void check_q5_0_gemv(enum hs_isa isa, int64_t g, size_t (*bytes_fn)(int64_t, int64_t),
                            void (*repack)(const void *, size_t, int64_t, int64_t, void *),
                            const q5_gemv_fn *fns, int n_fns, uint64_t seed)
{
    static const int64_t ns[] = {576, 4128};
    struct hs_rng rng;
    hs_rng_seed(&rng, seed);
    for (size_t ni = 0; ni < HS_ARRAY_LEN(ns); ni++) {
        const int64_t n = ns[ni], n_out = 4 * g;
        const size_t w_row = hs_type_row_size(HS_TYPE_Q5_0, n);
        float *deq = malloc((size_t)(n * n_out) * sizeof(float));
        cr_assert_not_null(deq);
        char *w = rand_q(HS_TYPE_Q5_0, &rng, n, n_out, deq);
        float *xf = rand_floats(&rng, n);
        char *xq = malloc(hs_type_row_size(HS_TYPE_Q8_0, n));
        float *xd = malloc((size_t)n * sizeof(float));
        float *ref = malloc((size_t)n_out * sizeof(float));
        float *want = malloc((size_t)(2 * g) * sizeof(float));
        float *got = malloc((size_t)(2 * g + 2) * sizeof(float));
        cr_assert(xq && xd && ref && want && got);
        const struct hs_quant_kernels *k = hs__cpu_kernels(HS_TYPE_Q5_0, isa);
        k->from_float(xf, xq, n);
        hs__dequantize_row_ref(HS_TYPE_Q8_0, xq, xd, n);
        const size_t bytes = bytes_fn(4, n);
        cr_assert_eq(bytes, w_row * (size_t)n_out, "the copy takes the file's bytes");
        void *wr = malloc(bytes);
        cr_assert_not_null(wr);
        repack(w, w_row, 4, n, wr);
        hs_ref_matmul(deq, xd, ref, n_out, n, 1);
        k->gemv(n, want, w + (size_t)g * w_row, w_row, xq, 2 * g);
        for (int f = 0; f < n_fns; f++) {
            /* groups 1 and 2 (rows g .. 3g - 1), between sentinels */
            for (int64_t i = 0; i < 2 * g + 2; i++) {
                got[i] = -12345.0f;
            }
            fns[f](n, got + 1, (const char *)wr + bytes / 4, 2, xq);
            cr_assert(got[0] == -12345.0f && got[2 * g + 1] == -12345.0f, "wrote outside its rows");
            for (int64_t i = 0; i < 2 * g; i++) {
                const int64_t row = g + i;
                float v;
                k->vec_dot(n, &v, w + (size_t)row * w_row, xq);
                cr_assert(memcmp(&got[1 + i], &want[i], sizeof(float)) == 0,
                          "n %lld gemv %d row %lld: %.9g repacked, %.9g gemv", (long long)n, f,
                          (long long)row, got[1 + i], want[i]);
                cr_assert(memcmp(&got[1 + i], &v, sizeof(float)) == 0, "n %lld row %lld: vec_dot",
                          (long long)n, (long long)row);
                const float e = ref[row];
                cr_assert(fabsf(got[1 + i] - e) <= 1e-4f * (1.0f + fabsf(e)),
                          "n %lld: %.9g vs reference %.9g", (long long)n, got[1 + i], e);
            }
        }
        free(wr);
        free(got);
        free(want);
        free(ref);
        free(xd);
        free(xq);
        free(xf);
        free(w);
        free(deq);
    }
}

/* The AVX2 copy: groups of 8 rows, without AVX-VNNI and (where the CPU has it) with. */
Test(repack, q5_0x8_gemv_gives_the_gemv_bits)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX2) {
        cr_skip_test("no AVX2");
    }
    const q5_gemv_fn fns[] = {hs__gemv_q5_0x8_avx2, hs__gemv_q5_0x8_avxvnni};
    check_q5_0_gemv(HS_ISA_AVX2, 8, hs__q5_0x8_bytes, hs__repack_q5_0x8, fns,
                    hs__cpu_has_avxvnni() ? 2 : 1, 2121);
}

/* The AVX-512 copy: groups of 16 rows, with VNNI and (on any AVX-512 CPU) without. */
Test(repack, q5_0x16_gemv_gives_the_gemv_bits)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX512) {
        cr_skip_test("no AVX-512");
    }
    const q5_gemv_fn fns[] = {hs__gemv_q5_0x16_avx512, hs__gemv_q5_0x16_avx512vnni};
    check_q5_0_gemv(HS_ISA_AVX512, 16, hs__q5_0x16_bytes, hs__repack_q5_0x16, fns,
                    hs__cpu_has_avx512vnni() ? 2 : 1, 2122);
}

static struct hs_backend *make_cpu(int n_threads)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = n_threads;
    p.pin_threads = false;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("cpu", &p, &be), HS_OK);
    return be;
}

/* y[r] for r < n_rows, the product of w and n_rows rows of x in one call. */
static void product(struct hs_backend *be, const struct hs_tensor *w, const float *x,
                    int64_t n_rows, float *y)
{
    struct hs_tensor tx, ty;
    cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, w->ne[0], n_rows, (void *)x), HS_OK);
    cr_assert_eq(hs_tensor_init_2d(&ty, HS_TYPE_F32, w->ne[1], n_rows, y), HS_OK);
    cr_assert_eq(hs_backend_matmul(be, w, &tx, &ty), HS_OK);
}

/* Products of prepared (repacked) weights of type give the bits of the file layout's, for 1 to
 * 17 activation rows, each row alone, matmul_multi and the FFN; the copies are counted. */
static void check_prepared(enum hs_type type)
{
    enum { N_IN = 576, N_OUT = 37, N_FF = 64, MAX_ROWS = 17 };
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    for (int nth = 1; nth <= 2; nth++) {
        struct hs_backend *be = make_cpu(nth);
        float *deq = malloc(sizeof(float) * N_IN * N_OUT);
        cr_assert_not_null(deq);
        void *q = rand_q(type, &rng, N_IN, N_OUT, deq);
        struct hs_tensor w;
        cr_assert_eq(hs_tensor_init_2d(&w, type, N_IN, N_OUT, q), HS_OK);
        float *x = rand_floats(&rng, N_IN * MAX_ROWS);
        float *before = malloc(sizeof(float) * N_OUT * MAX_ROWS * MAX_ROWS);
        float *after = malloc(sizeof(float) * N_OUT * MAX_ROWS);
        float *ref = malloc(sizeof(float) * N_OUT * MAX_ROWS);
        cr_assert(before && after && ref);
        for (int64_t n = 1; n <= MAX_ROWS; n++) {
            product(be, &w, x, n, before + (n - 1) * N_OUT * MAX_ROWS);
        }
        struct hs_backend_stats st;
        hs_backend_get_stats(be, &st);
        cr_assert_eq(st.repacked_bytes, 0);

        cr_assert_eq(hs_backend_prepare_weight(be, &w), HS_OK);
        cr_assert_eq(hs_backend_prepare_weight(be, &w), HS_OK, "a second time: nothing");
        hs_backend_get_stats(be, &st);
        /* 37 rows: 4 groups of 8 (2 of 16) repacked, the 5 left over stay on the file's
         * layout. */
        cr_assert_eq(st.repacked_bytes, copy_bytes(type, N_OUT, N_IN));
        cr_assert_eq(st.repacked_bytes, hs_type_row_size(type, N_IN) * 32);
        hs_backend_reset_stats(be);
        hs_backend_get_stats(be, &st);
        cr_assert_eq(st.repacked_bytes, copy_bytes(type, N_OUT, N_IN), "a gauge: kept by reset");

        hs_ref_matmul(deq, x, ref, N_OUT, N_IN, MAX_ROWS);
        for (int64_t n = 1; n <= MAX_ROWS; n++) {
            product(be, &w, x, n, after);
            const float *b = before + (n - 1) * N_OUT * MAX_ROWS;
            for (int64_t i = 0; i < N_OUT * n; i++) {
                cr_assert(memcmp(&after[i], &b[i], sizeof(float)) == 0,
                          "%s nth %d, %lld rows, row %lld out %lld: %.9g vs %.9g",
                          hs_type_str(type), nth, (long long)n, (long long)(i / N_OUT),
                          (long long)(i % N_OUT), after[i], b[i]);
            }
            cr_assert(hs_ref_rel_err(after, ref, N_OUT * n) < 1e-2);
        }
        /* Each row alone (decode, also from the repacked copy now) gives the batched bits. */
        for (int64_t r = 0; r < MAX_ROWS; r++) {
            float one[N_OUT];
            product(be, &w, x + r * N_IN, 1, one);
            cr_assert(memcmp(one, after + r * N_OUT, sizeof(one)) == 0, "row %lld", (long long)r);
        }

        /* matmul_multi (two prepared weights and one not) and the FFN, before and after. */
        void *q2 = rand_q(type, &rng, N_IN, N_FF, NULL), *q3 = rand_q(type, &rng, N_IN, N_FF, NULL);
        void *qd = rand_q(type, &rng, N_FF, N_IN, NULL);
        struct hs_tensor w2, w3, wd;
        cr_assert_eq(hs_tensor_init_2d(&w2, type, N_IN, N_FF, q2), HS_OK);
        cr_assert_eq(hs_tensor_init_2d(&w3, type, N_IN, N_FF, q3), HS_OK);
        cr_assert_eq(hs_tensor_init_2d(&wd, type, N_FF, N_IN, qd), HS_OK);
        float *m0[3], *m1[3], *f0[3], *f1[3];
        for (int pass = 0; pass < 2; pass++) {
            float **m = pass ? m1 : m0, **f = pass ? f1 : f0;
            if (pass) {
                cr_assert_eq(hs_backend_prepare_weight(be, &w2), HS_OK);
                cr_assert_eq(hs_backend_prepare_weight(be, &w3), HS_OK);
                cr_assert_eq(hs_backend_prepare_weight(be, &wd), HS_OK);
            }
            struct hs_tensor tx, ys[3];
            cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, N_IN, MAX_ROWS, x), HS_OK);
            const int64_t outs[3] = {N_OUT, N_FF, N_FF};
            for (int i = 0; i < 3; i++) {
                m[i] = malloc(sizeof(float) * N_IN * MAX_ROWS);
                f[i] = malloc(sizeof(float) * N_IN * MAX_ROWS);
                cr_assert(m[i] && f[i]);
                cr_assert_eq(hs_tensor_init_2d(&ys[i], HS_TYPE_F32, outs[i], MAX_ROWS, m[i]),
                             HS_OK);
            }
            const struct hs_tensor *ws[3] = {&w, &w2, &w3};
            struct hs_tensor *yp[3] = {&ys[0], &ys[1], &ys[2]};
            cr_assert_eq(hs_backend_matmul_multi(be, 3, ws, &tx, yp), HS_OK);
            struct hs_tensor fy, fg, fu;
            cr_assert_eq(hs_tensor_init_2d(&fy, HS_TYPE_F32, N_IN, MAX_ROWS, f[0]), HS_OK);
            cr_assert_eq(hs_tensor_init_2d(&fg, HS_TYPE_F32, N_FF, MAX_ROWS, f[1]), HS_OK);
            cr_assert_eq(hs_tensor_init_2d(&fu, HS_TYPE_F32, N_FF, MAX_ROWS, f[2]), HS_OK);
            const struct hs_ffn_args fa = {.w_gate = &w2,
                                           .w_up = &w3,
                                           .w_down = &wd,
                                           .x = &tx,
                                           .y = &fy,
                                           .scratch_gate = &fg,
                                           .scratch_up = &fu};
            cr_assert_eq(hs_backend_ffn(be, &fa), HS_OK);
        }
        hs_backend_get_stats(be, &st);
        cr_assert_eq(st.repacked_bytes, copy_bytes(type, N_OUT, N_IN) +
                                            2 * copy_bytes(type, N_FF, N_IN) +
                                            copy_bytes(type, N_IN, N_FF));
        cr_assert(memcmp(m0[0], m1[0], sizeof(float) * N_OUT * MAX_ROWS) == 0, "multi w");
        cr_assert(memcmp(m0[0], before + (MAX_ROWS - 1) * N_OUT * MAX_ROWS,
                         sizeof(float) * N_OUT * MAX_ROWS) == 0,
                  "multi = matmul");
        for (int i = 1; i < 3; i++) {
            cr_assert(memcmp(m0[i], m1[i], sizeof(float) * N_FF * MAX_ROWS) == 0, "multi %d", i);
        }
        cr_assert(memcmp(f0[0], f1[0], sizeof(float) * N_IN * MAX_ROWS) == 0, "ffn");
        for (int i = 0; i < 3; i++) {
            free(m0[i]);
            free(m1[i]);
            free(f0[i]);
            free(f1[i]);
        }
        free(q2);
        free(q3);
        free(qd);
        free(ref);
        free(after);
        free(before);
        free(x);
        free(q);
        free(deq);
        hs_backend_destroy(be); /* frees the copies (the ASan / valgrind runs check) */
    }
}

Test(repack, prepared_q4_0_weights_give_the_same_products_bit_for_bit)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX2) {
        cr_skip_test("no AVX2");
    }
    check_prepared(HS_TYPE_Q4_0);
}

/* Q5_0's copy serves one-row products (decode; groups of 8 rows on AVX2, 16 on AVX-512 (the
 * backends/repack-avx2 run takes the first on AVX-512 CPUs); 2+ rows keep the file layout. */
Test(repack, prepared_q5_0_weights_give_the_same_products_bit_for_bit)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX2) {
        cr_skip_test("no AVX2");
    }
    check_prepared(HS_TYPE_Q5_0);
}

/* One decode-like step of products on one activation row, in the order given (0: matmul_multi
 * of w[0], w[1]; 1: matmul of w[2]; 2: the FFN of w[3], w[4], w[5]), outputs appended at *y. */
static void hint_step(struct hs_backend *be, const struct hs_tensor *w, const float *x,
                      const int *order, int n_ops, float **y)
{
    struct hs_tensor tx;
    cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, w[0].ne[0], 1, (void *)x), HS_OK);
    for (int i = 0; i < n_ops; i++) {
        if (order[i] == 0) {
            struct hs_tensor ya, yb;
            cr_assert_eq(hs_tensor_init_2d(&ya, HS_TYPE_F32, w[0].ne[1], 1, *y), HS_OK);
            cr_assert_eq(hs_tensor_init_2d(&yb, HS_TYPE_F32, w[1].ne[1], 1, *y + w[0].ne[1]),
                         HS_OK);
            const struct hs_tensor *ws[2] = {&w[0], &w[1]};
            struct hs_tensor *ys[2] = {&ya, &yb};
            cr_assert_eq(hs_backend_matmul_multi(be, 2, ws, &tx, ys), HS_OK);
            *y += w[0].ne[1] + w[1].ne[1];
        } else if (order[i] == 1) {
            product(be, &w[2], x, 1, *y);
            *y += w[2].ne[1];
        } else {
            float g[512], u[512];
            struct hs_tensor fy, fg, fu;
            cr_assert_eq(hs_tensor_init_2d(&fy, HS_TYPE_F32, w[5].ne[1], 1, *y), HS_OK);
            cr_assert_eq(hs_tensor_init_2d(&fg, HS_TYPE_F32, w[3].ne[1], 1, g), HS_OK);
            cr_assert_eq(hs_tensor_init_2d(&fu, HS_TYPE_F32, w[4].ne[1], 1, u), HS_OK);
            const struct hs_ffn_args fa = {.w_gate = &w[3],
                                           .w_up = &w[4],
                                           .w_down = &w[5],
                                           .x = &tx,
                                           .y = &fy,
                                           .scratch_gate = &fg,
                                           .scratch_up = &fu};
            cr_assert_eq(hs_backend_ffn(be, &fa), HS_OK);
            *y += w[5].ne[1];
        }
    }
}

/* The workers' prefetch hints (hints.c) only read ahead of the products: steps in one order,
 * then in another (the remembered order forgotten and learnt again), then a lone product, give
 * the same bits with hints as without (HS_CPU_HINT_KB=0), repacked copies and the file's rows
 * alike. */
Test(repack, hints_leave_every_product_bit_for_bit)
{
    enum { N_IN = 576, N_OUT = 256, N_FF = 512, STEPS = 12, PER_STEP = 2 * N_OUT + 2 * N_IN };
    struct hs_rng rng;
    hs_rng_seed(&rng, 78);
    /* wq, wk (Q5_0: repacked where the CPU has AVX2), wo (Q8_0), gate, up (Q5_0), down (Q8_0) */
    const enum hs_type types[6] = {HS_TYPE_Q5_0, HS_TYPE_Q5_0, HS_TYPE_Q8_0,
                                   HS_TYPE_Q5_0, HS_TYPE_Q5_0, HS_TYPE_Q8_0};
    const int64_t ins[6] = {N_IN, N_IN, N_OUT, N_IN, N_IN, N_FF};
    const int64_t outs[6] = {N_OUT, N_OUT, N_IN, N_FF, N_FF, N_IN};
    void *q[6];
    struct hs_tensor w[6];
    for (int i = 0; i < 6; i++) {
        q[i] = rand_q(types[i], &rng, ins[i], outs[i], NULL);
        cr_assert_eq(hs_tensor_init_2d(&w[i], types[i], ins[i], outs[i], q[i]), HS_OK);
    }
    float *x = rand_floats(&rng, N_IN * STEPS);
    float *y[2];
    size_t n_y[2];
    for (int run = 0; run < 2; run++) {
        cr_assert_eq(setenv("HS_CPU_HINT_KB", run ? "128" : "0", 1), 0);
        struct hs_backend *be = make_cpu(2);
        for (int i = 0; i < 6; i++) {
            cr_assert_eq(hs_backend_prepare_weight(be, &w[i]), HS_OK);
        }
        y[run] = malloc(sizeof(float) * PER_STEP * STEPS);
        cr_assert_not_null(y[run]);
        float *at = y[run];
        static const int order_a[] = {0, 1, 2}, order_b[] = {2, 0, 1}, order_c[] = {1};
        for (int s = 0; s < STEPS; s++) {
            const int *order = s < 6 ? order_a : s < 11 ? order_b : order_c;
            hint_step(be, w, x + s * N_IN, order, s < 11 ? 3 : 1, &at);
        }
        n_y[run] = (size_t)(at - y[run]);
        cr_assert_eq(n_y[run], (size_t)(PER_STEP * 11 + N_IN));
        hs_backend_destroy(be);
    }
    cr_assert(memcmp(y[0], y[1], sizeof(float) * n_y[0]) == 0);
    free(y[0]);
    free(y[1]);
    free(x);
    for (int i = 0; i < 6; i++) {
        free(q[i]);
    }
}

Test(repack, prepare_leaves_other_types_and_refuses_malformed_weights)
{
    struct hs_backend *be = make_cpu(1);
    struct hs_rng rng;
    hs_rng_seed(&rng, 5);
    const size_t row = hs_type_row_size(HS_TYPE_Q8_0, 64);
    char *q = calloc(16, row);
    cr_assert_not_null(q);
    float *f = rand_floats(&rng, 64);
    for (int r = 0; r < 16; r++) {
        hs__quantize_row_ref(HS_TYPE_Q8_0, f, q + (size_t)r * row, 64);
    }
    struct hs_tensor w;
    cr_assert_eq(hs_tensor_init_2d(&w, HS_TYPE_Q8_0, 64, 16, q), HS_OK);
    cr_assert_eq(hs_backend_prepare_weight(be, &w), HS_OK);
    struct hs_backend_stats st;
    hs_backend_get_stats(be, &st);
    cr_assert_eq(st.repacked_bytes, 0, "Q8_0 is not repacked");
    w.data = NULL;
    cr_assert_eq(hs_backend_prepare_weight(be, &w), HS_E_INVAL);
    cr_assert_eq(hs_backend_prepare_weight(be, NULL), HS_E_INVAL);
    cr_assert_eq(hs_backend_prepare_weight(NULL, &w), HS_E_INVAL);
    free(f);
    free(q);
    hs_backend_destroy(be);
}

/* The VNNI table runs Q4_K tiles of 2+ activation rows on the AVX2 code: every shape must give
 * the AVX-512 kernel's bits (4-row tiles included, ggml's gemm order on both). */
Test(tiles, q4_k_avx2_tiles_give_the_avx512_bits)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX512 ||
        hs__cpu_kernels(HS_TYPE_Q4_K, HS_ISA_AVX512)->gemm_tile !=
            hs__gemm_tile_q4_k_pp_avx512vnni) {
        cr_skip_test("no AVX-512 VNNI");
    }
    enum { N = 4096 + 256, ROWS = 4 };
    struct hs_rng rng;
    hs_rng_seed(&rng, 31);
    const size_t w_row = hs_type_row_size(HS_TYPE_Q4_K, N);
    const size_t x_row = hs_type_row_size(HS_TYPE_Q8_K, N);
    char *w = malloc(w_row * ROWS), *x = malloc(x_row * ROWS);
    cr_assert(w && x);
    float *f = rand_floats(&rng, N);
    const struct hs_quant_kernels *k = hs__cpu_kernels(HS_TYPE_Q4_K, HS_ISA_AVX512);
    for (int r = 0; r < ROWS; r++) {
        for (int i = 0; i < N; i++) {
            f[i] = hs_rng_range(&rng, -1.0f, 1.0f);
        }
        hs__quantize_row_ref(HS_TYPE_Q4_K, f, w + (size_t)r * w_row, N);
        for (int i = 0; i < N; i++) {
            f[i] = hs_rng_range(&rng, -1.0f, 1.0f);
        }
        k->from_float(f, x + (size_t)r * x_row, N);
    }
    for (int nr = 1; nr <= 4; nr++) {
        for (int nc = 1; nc <= 4; nc++) {
            float a[16], b[16];
            hs__gemm_tile_q4_k_avx2(N, a, 4, w, w_row, x, x_row, nr, nc);
            hs__gemm_tile_q4_k_avx512vnni(N, b, 4, w, w_row, x, x_row, nr, nc);
            for (int c = 0; c < nc; c++) {
                for (int r = 0; r < nr; r++) {
                    cr_assert(memcmp(&a[c * 4 + r], &b[c * 4 + r], sizeof(float)) == 0,
                              "%dx%d [%d,%d]: %.9g avx2, %.9g avx512", nr, nc, r, c, a[c * 4 + r],
                              b[c * 4 + r]);
                }
            }
        }
    }
    free(f);
    free(x);
    free(w);
}
