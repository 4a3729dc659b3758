/* Weight-type kernels against naive float64 references (tests/ref/ref-quants.c), on every ISA
 * this CPU supports. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/cpu/quants.h"
#include "common/common.h"
#include "tests/ref/ref-quants.h"

static const enum hs_type weight_types[] = {
    HS_TYPE_F32,  HS_TYPE_F16,  HS_TYPE_BF16, HS_TYPE_Q8_0, HS_TYPE_Q4_0, HS_TYPE_Q5_0,
    HS_TYPE_Q4_1, HS_TYPE_Q5_1, HS_TYPE_Q4_K, HS_TYPE_Q5_K, HS_TYPE_Q6_K,
};
static const int64_t row_lengths[] = {256, 512, 4096 + 256};
#define N_ROWS 4

static int64_t blck(enum hs_type t)
{
    return hs_type_traits(t)->blck_size;
}

/* Gaussian rows with a per-row scale; row 2 carries a few large outliers. */
static float *make_rows(struct hs_rng *rng, int64_t n, int rows)
{
    float *x = malloc((size_t)(n * rows) * sizeof(float));
    cr_assert_not_null(x);
    for (int r = 0; r < rows; r++) {
        const float scale = 0.05f + 2.0f * (float)hs_rng_uniform(rng);
        for (int64_t i = 0; i < n; i++) {
            x[r * n + i] = scale * (float)hs_rng_normal(rng);
        }
        if (r == 2) {
            for (int k = 0; k < 5; k++) {
                x[r * n + (int64_t)(hs_rng_next(rng) % (uint64_t)n)] *= 40.0f;
            }
        }
    }
    return x;
}

struct fixture {
    enum hs_type t, vt;
    int64_t n;
    size_t w_row, x_row; /* bytes per weight / activation row */
    float *wf, *xf;      /* [N_ROWS][n] source floats */
    uint8_t *w, *xq;     /* [N_ROWS][w_row], [N_ROWS][x_row] */
    double *wd, *xd;     /* [N_ROWS][n] naive dequantizations */
};

static void fixture_init(struct fixture *f, enum hs_type t, int64_t n, uint64_t seed)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, seed);
    const struct hs_quant_kernels *k = hs__cpu_kernels(t, HS_ISA_SCALAR);
    cr_assert_not_null(k, "type %s", hs_type_str(t));
    f->t = t;
    f->vt = k->vec_dot_type;
    f->n = n;
    f->w_row = hs_type_row_size(t, n);
    f->x_row = hs_type_row_size(f->vt, n);
    cr_assert(f->w_row > 0 && f->x_row > 0);
    f->wf = make_rows(&rng, n, N_ROWS);
    f->xf = make_rows(&rng, n, N_ROWS);
    f->w = malloc(f->w_row * N_ROWS);
    f->xq = malloc(f->x_row * N_ROWS);
    f->wd = malloc((size_t)(n * N_ROWS) * sizeof(double));
    f->xd = malloc((size_t)(n * N_ROWS) * sizeof(double));
    cr_assert(f->w && f->xq && f->wd && f->xd);
    for (int r = 0; r < N_ROWS; r++) {
        hs__quantize_row_ref(t, f->wf + r * n, f->w + r * f->w_row, n);
        cr_assert_eq(ref_dequantize(t, f->w + r * f->w_row, f->wd + r * n, n), 0);
    }
}

/* Activations as the given ISA's from_float makes them. */
static void fixture_activations(struct fixture *f, const struct hs_quant_kernels *k)
{
    for (int r = 0; r < N_ROWS; r++) {
        k->from_float(f->xf + r * f->n, f->xq + r * f->x_row, f->n);
        cr_assert_eq(ref_dequantize(f->vt, f->xq + r * f->x_row, f->xd + r * f->n, f->n), 0);
    }
}

static void fixture_finish(struct fixture *f)
{
    free(f->wf);
    free(f->xf);
    free(f->w);
    free(f->xq);
    free(f->wd);
    free(f->xd);
}

/* Naive dot and the scale errors are measured against: sum |w_i x_i|. Q8_1 activations (for
 * Q4_1 / Q5_1) carry s = d x sum(q) rounded to half, which the kernels take for the weights'
 * offset m times the block's activations: so does the reference. */
static double ref_dot(const struct fixture *f, int r, int c, double *abs_sum)
{
    double sum = 0, asum = 0;
    const uint8_t *wr = f->w + r * f->w_row, *xr = f->xq + c * f->x_row;
    const size_t wblk = hs_type_row_size(f->t, 32);
    for (int64_t i = 0; i < f->n; i++) {
        double w = f->wd[r * f->n + i];
        const double x = f->xd[c * f->n + i];
        asum += fabs(w * x);
        if (f->vt == HS_TYPE_Q8_1) {
            uint16_t m;
            memcpy(&m, wr + (size_t)(i / 32) * wblk + 2, sizeof(m));
            w -= hs_fp16_to_fp32(m);
        }
        sum += w * x;
    }
    if (f->vt == HS_TYPE_Q8_1) {
        for (int64_t b = 0; b < f->n / 32; b++) {
            uint16_t m, s;
            memcpy(&m, wr + (size_t)b * wblk + 2, sizeof(m));
            memcpy(&s, xr + (size_t)b * 36 + 2, sizeof(s));
            sum += (double)hs_fp16_to_fp32(m) * hs_fp16_to_fp32(s);
        }
    }
    *abs_sum = asum;
    return sum;
}

#define FOR_EACH_ISA(isa) for (enum hs_isa isa = HS_ISA_SCALAR; isa <= hs__cpu_detect_isa(); isa++)

/* HS_CPU_ISA caps the detection (read at the first call: each Criterion test runs in a fresh
 * process). "scalar" is below every CPU's best, so the default tables are the scalar ones. */
Test(quants, env_caps_the_detected_isa)
{
    cr_assert_eq(setenv("HS_CPU_ISA", "scalar", 1), 0);
    cr_assert_eq(hs__cpu_detect_isa(), HS_ISA_SCALAR);
    cr_assert_eq(hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_COUNT),
                 hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_SCALAR));
    cr_assert_eq(hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_AVX512),
                 hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_SCALAR), "a higher ISA is capped too");
}

/* HS_CPU_AVXVNNI=0 holds the AVX2 path to the kernels of CPUs without AVX-VNNI, whatever this
 * one has (read at the first call, as HS_CPU_ISA). */
Test(quants, env_turns_avxvnni_off)
{
    cr_assert_eq(setenv("HS_CPU_AVXVNNI", "0", 1), 0);
    cr_assert_not(hs__cpu_has_avxvnni());
    cr_assert_null(hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_AVX2)->gemm_group);
    cr_assert_null(hs__cpu_kernels(HS_TYPE_Q5_0, HS_ISA_AVX2)->gemm_group);
}

Test(quants, detect_and_tables)
{
    const enum hs_isa best = hs__cpu_detect_isa();
    cr_assert(best < HS_ISA_COUNT);
    cr_assert_str_eq(hs_isa_str(HS_ISA_AVX2), "avx2");
    cr_assert_null(hs__cpu_kernels(HS_TYPE_Q3_K, HS_ISA_COUNT), "q3_K is not computed with");
    cr_assert_null(hs__cpu_kernels(HS_TYPE_Q8_1, HS_ISA_COUNT), "q8_1 is for activations only");
    cr_assert_eq(hs__cpu_kernels(HS_TYPE_Q5_1, HS_ISA_COUNT)->vec_dot_type, HS_TYPE_Q8_1);
    cr_assert_eq(hs__cpu_kernels(HS_TYPE_Q4_K, HS_ISA_COUNT)->vec_dot_type, HS_TYPE_Q8_K);
    cr_assert_eq(hs__cpu_kernels(HS_TYPE_Q6_K, HS_ISA_COUNT)->vec_dot_type, HS_TYPE_Q8_K);
    cr_assert_eq(hs__cpu_kernels(HS_TYPE_Q4_0, HS_ISA_COUNT)->vec_dot_type, HS_TYPE_Q8_0);
    cr_assert_eq(hs__cpu_kernels(HS_TYPE_BF16, HS_ISA_COUNT)->vec_dot_type, HS_TYPE_BF16);
    for (size_t i = 0; i < HS_ARRAY_LEN(weight_types); i++) {
        FOR_EACH_ISA (isa) {
            const struct hs_quant_kernels *k = hs__cpu_kernels(weight_types[i], isa);
            cr_assert_not_null(k);
            cr_assert_eq(k->type, weight_types[i]);
            cr_assert(k->from_float && k->to_float && k->vec_dot && k->gemm_tile);
        }
    }
}

/* (1) to_float against the naive dequantizer. */
Test(quants, to_float_matches_naive_dequantizer)
{
    for (size_t ti = 0; ti < HS_ARRAY_LEN(weight_types); ti++) {
        for (size_t ni = 0; ni < HS_ARRAY_LEN(row_lengths); ni++) {
            struct fixture f;
            fixture_init(&f, weight_types[ti], row_lengths[ni], 100 + ti * 10 + ni);
            float *y = malloc((size_t)f.n * sizeof(float));
            FOR_EACH_ISA (isa) {
                const struct hs_quant_kernels *k = hs__cpu_kernels(f.t, isa);
                for (int r = 0; r < N_ROWS; r++) {
                    k->to_float(f.w + r * f.w_row, y, f.n);
                    double amax = 0;
                    for (int64_t i = 0; i < f.n; i++) {
                        amax = fmax(amax, fabs(f.wd[r * f.n + i]));
                    }
                    for (int64_t i = 0; i < f.n; i++) {
                        const double ref = f.wd[r * f.n + i];
                        cr_assert(fabs(y[i] - ref) <= 1e-6 * amax,
                                  "%s %s n=%ld row %d [%ld]: %g vs %g", hs_type_str(f.t),
                                  hs_isa_str(isa), (long)f.n, r, (long)i, y[i], ref);
                    }
                }
            }
            free(y);
            fixture_finish(&f);
        }
    }
}

/* (2) vec_dot against float64, (3) every tile shape equal to vec_dot, (4) ISAs against scalar. */
Test(quants, vec_dot_and_gemm_tile_match_float64)
{
    for (size_t ti = 0; ti < HS_ARRAY_LEN(weight_types); ti++) {
        for (size_t ni = 0; ni < HS_ARRAY_LEN(row_lengths) + 1; ni++) {
            /* Float types also get a length that is no multiple of the vector width. */
            const int64_t n = ni < HS_ARRAY_LEN(row_lengths) ? row_lengths[ni] : 4101;
            if (n % blck(weight_types[ti]) != 0) {
                continue;
            }
            struct fixture f;
            fixture_init(&f, weight_types[ti], n, 200 + ti * 10 + ni);
            float scalar_dots[N_ROWS][N_ROWS];
            FOR_EACH_ISA (isa) {
                const struct hs_quant_kernels *k = hs__cpu_kernels(f.t, isa);
                fixture_activations(&f, k);
                float dots[N_ROWS][N_ROWS];
                for (int r = 0; r < N_ROWS; r++) {
                    for (int c = 0; c < N_ROWS; c++) {
                        k->vec_dot(f.n, &dots[r][c], f.w + r * f.w_row, f.xq + c * f.x_row);
                        double asum;
                        const double ref = ref_dot(&f, r, c, &asum);
                        const double err = fabs(dots[r][c] - ref) / asum;
                        cr_assert(err < 2e-6, "%s %s n=%ld (%d,%d): %.9g vs %.9g (err %g)",
                                  hs_type_str(f.t), hs_isa_str(isa), (long)f.n, r, c, dots[r][c],
                                  ref, err);
                        if (isa == HS_ISA_SCALAR) {
                            scalar_dots[r][c] = dots[r][c];
                        }
                    }
                }
                /* The scalar activations and ours are the same bits, so the dots compare. */
                for (int r = 0; r < N_ROWS; r++) {
                    for (int c = 0; c < N_ROWS; c++) {
                        double asum;
                        ref_dot(&f, r, c, &asum);
                        cr_assert(fabs(dots[r][c] - scalar_dots[r][c]) / asum < 2e-6,
                                  "%s %s vs scalar (%d,%d)", hs_type_str(f.t), hs_isa_str(isa), r,
                                  c);
                    }
                }
                for (int nr = 1; nr <= 4; nr++) {
                    for (int nc = 1; nc <= 4; nc++) {
                        float s[4 * 5];
                        for (size_t i = 0; i < HS_ARRAY_LEN(s); i++) {
                            s[i] = -12345.0f;
                        }
                        /* Rows offset so the tile does not start at row 0. */
                        const int r0 = N_ROWS - nr, c0 = N_ROWS - nc;
                        k->gemm_tile(f.n, s, 5, f.w + r0 * f.w_row, f.w_row, f.xq + c0 * f.x_row,
                                     f.x_row, nr, nc);
                        for (int j = 0; j < 4; j++) {
                            for (int i = 0; i < 5; i++) {
                                const float got = s[j * 5 + i];
                                if (j >= nc || i >= nr) {
                                    cr_assert_eq(got, -12345.0f, "tile wrote outside");
                                    continue;
                                }
                                const float want = dots[r0 + i][c0 + j];
                                if (f.t == HS_TYPE_Q4_K && isa >= HS_ISA_AVX2 && nc == 4) {
                                    /* Groups of 4 activation rows follow ggml's repacked
                                     * Q4_K gemm, whose float order differs from its gemv. */
                                    double asum;
                                    const double ref = ref_dot(&f, r0 + i, c0 + j, &asum);
                                    cr_assert(fabs(got - ref) / asum < 2e-6, "q4_K gemm tile");
                                    continue;
                                }
                                if (hs_type_traits(f.t)->blck_size == 32) {
                                    /* Pairs of activation rows share 512-bit registers, each
                                     * half in vec_dot's order: the same bits. */
                                    cr_assert_eq(got, want, "%s %s tile %dx%d [%d,%d]",
                                                 hs_type_str(f.t), hs_isa_str(isa), nr, nc, i, j);
                                }
                                cr_assert(fabsf(got - want) <= 1e-6f * fabsf(want) + 1e-30f,
                                          "%s %s tile %dx%d [%d,%d]: %.9g vs %.9g",
                                          hs_type_str(f.t), hs_isa_str(isa), nr, nc, i, j, got,
                                          want);
                            }
                        }
                    }
                }
            }
            fixture_finish(&f);
        }
    }
}

/* Kernels with the split form (quants, then scales as floats): from_float_split holds the same
 * values as from_float's blocks (XORed with split_x_bias), split_weights the weights' values and
 * scales, and gemm_tile_split on both, and gemm_tile_xsplit on the file's weights and split
 * activations, give gemm_tile's bits for every tile shape, over rows long enough to cross the
 * kernels' runs of blocks. */
Test(quants, split_form_gives_the_tile_bits)
{
    /* runs of 8-block vectors only, and with 2 and 1 blocks past them (576: SmolLM's rows) */
    static const int64_t lengths[] = {256, 4096 + 256, 576, 1568};
    int checked = 0;
    for (size_t ti = 0; ti < HS_ARRAY_LEN(weight_types); ti++) {
        for (size_t ni = 0; ni < HS_ARRAY_LEN(lengths); ni++) {
            const int64_t n = lengths[ni];
            if (n % blck(weight_types[ti]) != 0) {
                continue;
            }
            struct fixture f;
            fixture_init(&f, weight_types[ti], n, 700 + ti * 10 + ni);
            FOR_EACH_ISA (isa) {
                const struct hs_quant_kernels *k = hs__cpu_kernels(f.t, isa);
                if (!k->gemm_tile_split && !k->gemm_tile_xsplit) {
                    continue;
                }
                cr_assert(k->from_float_split && k->vec_dot_type == HS_TYPE_Q8_0);
                cr_assert(!k->split_weights == !k->gemm_tile_split);
                fixture_activations(&f, k);
                const size_t ss = hs_align_up(hs_quant_split_row_size(n), 64);
                uint8_t *xsp = hs_alloc_aligned(ss * N_ROWS);
                uint8_t *wsp = hs_alloc_aligned(ss * N_ROWS);
                cr_assert(xsp && wsp);
                memset(xsp, 0x7f, ss * N_ROWS); /* no zeros the kernels did not write */
                memset(wsp, 0x7f, ss * N_ROWS);
                if (k->split_weights) {
                    k->split_weights(f.w, f.w_row, N_ROWS, n, wsp, ss);
                }
                float *wvals = malloc((size_t)n * sizeof(float));
                cr_assert_not_null(wvals);
                for (int r = 0; r < N_ROWS; r++) {
                    k->from_float_split(f.xf + r * n, xsp + r * ss, n);
                    const struct hs_block_q8_0 *blk =
                        (const struct hs_block_q8_0 *)(const void *)(f.xq + r * f.x_row);
                    const float *d = (const float *)(const void *)(xsp + r * ss + n);
                    const int8_t *wq = (const int8_t *)(wsp + r * ss);
                    const float *wd = (const float *)(const void *)(wsp + r * ss + n);
                    k->to_float(f.w + r * f.w_row, wvals, n);
                    for (int64_t b = 0; b < n / 32; b++) {
                        for (int i = 0; i < 32; i++) {
                            cr_assert_eq((int8_t)(xsp[r * ss + b * 32 + i] ^ k->split_x_bias),
                                         blk[b].qs[i], "row %d block %ld quant %d", r, (long)b, i);
                        }
                        cr_assert_eq(d[b], hs_fp16_to_fp32(blk[b].d), "row %d block %ld scale", r,
                                     (long)b);
                        for (int i = 0; k->split_weights && i < 32; i++) {
                            cr_assert_eq(wd[b] * (float)wq[b * 32 + i], wvals[b * 32 + i],
                                         "%s weight row %d element %ld", hs_type_str(f.t), r,
                                         (long)(b * 32 + i));
                        }
                    }
                    for (int64_t b = n / 32; b % 8; b++) {
                        cr_assert(d[b] == 0.0f && (!k->split_weights || wd[b] == 0.0f),
                                  "row %d: pad scale %ld not 0", r, (long)b);
                    }
                }
                for (int nr = 1; nr <= 4; nr++) {
                    for (int nc = 1; nc <= 4; nc++) {
                        float want[4 * 5], got[4 * 5];
                        for (size_t i = 0; i < HS_ARRAY_LEN(got); i++) {
                            want[i] = got[i] = -12345.0f;
                        }
                        const int r0 = N_ROWS - nr, c0 = N_ROWS - nc;
                        k->gemm_tile(n, want, 5, f.w + r0 * f.w_row, f.w_row, f.xq + c0 * f.x_row,
                                     f.x_row, nr, nc);
                        if (k->gemm_tile_split) {
                            k->gemm_tile_split(n, got, 5, wsp + r0 * ss, ss, xsp + c0 * ss, ss, nr,
                                               nc);
                            cr_assert(memcmp(want, got, sizeof(got)) == 0,
                                      "%s %s n=%ld tile %dx%d: split != gemm_tile",
                                      hs_type_str(f.t), hs_isa_str(isa), (long)n, nr, nc);
                        }
                        if (k->gemm_tile_xsplit) { /* the file's weights, split activations */
                            for (size_t i = 0; i < HS_ARRAY_LEN(got); i++) {
                                got[i] = -12345.0f;
                            }
                            k->gemm_tile_xsplit(n, got, 5, f.w + r0 * f.w_row, f.w_row,
                                                xsp + c0 * ss, ss, nr, nc);
                            cr_assert(memcmp(want, got, sizeof(got)) == 0,
                                      "%s %s n=%ld tile %dx%d: xsplit != gemm_tile",
                                      hs_type_str(f.t), hs_isa_str(isa), (long)n, nr, nc);
                        }
                        checked++;
                    }
                }
                free(wvals);
                hs_free_aligned(wsp);
                hs_free_aligned(xsp);
            }
            fixture_finish(&f);
        }
    }
    /* Where the CPU has AVX2, the Q8_0 and Q5_0 kernels have the split form. */
    cr_assert(checked > 0 || hs__cpu_kernels(HS_TYPE_Q8_0, HS_ISA_AVX2)->gemm_tile_split == NULL);
}

/* Kernels with the group form (Q8_0, Q5_0 on AVX-512 VNNI and AVX-VNNI): from_float_group holds
 * from_float's values, scales and each quad's offset (-128 times its sum); split_group
 * zero-fills the rows past the last; gemm_group over the groups gives gemm_tile's bits for
 * every row count of a group (1..16, 1..8) and 1..7 activation rows, and writes nothing else;
 * over rows long enough to cross the tile's blocks (1568: 49 blocks, an odd count, past the
 * scales' padding). */
Test(quants, group_form_gives_the_tile_bits)
{
    /* 1568: 49 blocks, past Q5_0's runs of 8 blocks too */
    static const int64_t lengths[] = {32, 576, 1568};
    static const enum hs_type types[] = {HS_TYPE_Q8_0, HS_TYPE_Q5_0};
    enum { R = 37, C = 7 };
    int checked[HS_ISA_COUNT] = {0};
    for (size_t ti = 0; ti < 2 * HS_ARRAY_LEN(lengths); ti++) {
        const enum hs_type type = types[ti / HS_ARRAY_LEN(lengths)];
        const int64_t n = lengths[ti % HS_ARRAY_LEN(lengths)], nb = n / 32;
        struct hs_rng rng;
        hs_rng_seed(&rng, 900 + ti);
        float *wf = make_rows(&rng, n, R), *xf = make_rows(&rng, n, C);
        const size_t w_row = hs_type_row_size(type, n);
        uint8_t *w = malloc(w_row * R);
        cr_assert_not_null(w);
        for (int r = 0; r < R; r++) {
            hs__quantize_row_ref(type, wf + r * n, w + r * w_row, n);
        }
        FOR_EACH_ISA (isa) {
            const struct hs_quant_kernels *k = hs__cpu_kernels(type, isa);
            if (!k->gemm_group) {
                continue;
            }
            cr_assert(k->split_group && k->from_float_group && k->group_block_bytes > 0);
            const int G = k->group_rows;
            cr_assert(G == 8 || G == 16, "%d rows a group", G);
            const size_t xs = hs_align_up(hs_quant_group_x_size(n), 64);
            const size_t gs = (size_t)nb * k->group_block_bytes;
            const size_t q_row = hs_type_row_size(HS_TYPE_Q8_0, n);
            uint8_t *xg = hs_alloc_aligned(xs * C), *xq = malloc(q_row * C);
            uint8_t *g = hs_alloc_aligned(gs * (size_t)((R + G - 1) / G));
            cr_assert(xg && xq && g);
            memset(g, 0x7f, gs * (size_t)((R + G - 1) / G));
            k->split_group(w, w_row, R, n, g, gs);
            for (int c = 0; c < C; c++) {
                k->from_float(xf + c * n, xq + c * q_row, n);
                k->from_float_group(xf + c * n, xg + c * xs, n);
                const struct hs_block_q8_0 *blk =
                    (const struct hs_block_q8_0 *)(const void *)(xq + c * q_row);
                const int8_t *v = (const int8_t *)(xg + c * xs);
                const float *d = (const float *)(const void *)(xg + c * xs + n);
                const int32_t *off = (const int32_t *)(const void *)(d + (nb + 7) / 8 * 8);
                for (int64_t b = 0; b < nb; b++) {
                    cr_assert_eq(d[b], hs_fp16_to_fp32(blk[b].d), "row %d block %ld scale", c,
                                 (long)b);
                    for (int q = 0; q < 8; q++) {
                        int32_t sum = 0;
                        for (int j = 0; j < 4; j++) {
                            cr_assert_eq(v[b * 32 + 4 * q + j], blk[b].qs[4 * q + j]);
                            sum += blk[b].qs[4 * q + j];
                        }
                        cr_assert_eq(off[b * 8 + q], -128 * sum, "row %d block %ld quad %d", c,
                                     (long)b, q);
                    }
                }
                for (int64_t b = nb; b % 8; b++) {
                    cr_assert_eq(d[b], 0.0f, "row %d: pad scale %ld not 0", c, (long)b);
                }
            }
            /* the last group's rows past R: weights w + 128 = 0x80, scales 0 */
            const uint8_t *last = g + (size_t)(R / G) * gs;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = last + (size_t)b * k->group_block_bytes;
                for (int q = 0; q < 8; q++) {
                    for (int r = R % G; r < G; r++) {
                        for (int j = 0; j < 4; j++) {
                            cr_assert_eq(blk[4 * G * q + 4 * r + j], 0x80, "pad row %d", r);
                        }
                    }
                }
            }
            float want[C][R], got[C][R + 1];
            for (int c = 0; c < C; c++) {
                for (int r = 0; r < R; r += 4) {
                    k->gemm_tile(n, &want[c][r], R, w + r * w_row, w_row, xq + c * q_row, q_row,
                                 (int)HS_MIN(4, R - r), 1);
                }
            }
            for (int nc = 1; nc <= C; nc++) {
                for (int nr = 1; nr <= G; nr++) {
                    for (int c = 0; c < C; c++) {
                        for (int r = 0; r <= R; r++) {
                            got[c][r] = -12345.0f;
                        }
                    }
                    /* every group, nr of its rows */
                    for (int r0 = 0; r0 < R; r0 += G) {
                        const int m = (int)HS_MIN(nr, R - r0);
                        k->gemm_group(n, &got[0][r0], R + 1, g + (size_t)(r0 / G) * gs, xg, xs, m,
                                      nc);
                    }
                    for (int c = 0; c < C; c++) {
                        for (int r = 0; r <= R; r++) {
                            if (c >= nc || r == R || r % G >= nr) {
                                cr_assert_eq(got[c][r], -12345.0f, "group tile wrote outside");
                                continue;
                            }
                            cr_assert(memcmp(&got[c][r], &want[c][r], sizeof(float)) == 0,
                                      "%s %s n=%ld nr=%d nc=%d [%d,%d]: %.9g vs %.9g",
                                      hs_type_str(type), hs_isa_str(isa), (long)n, nr, nc, r, c,
                                      got[c][r], want[c][r]);
                        }
                    }
                    checked[isa]++;
                }
            }
            hs_free_aligned(g);
            free(xq);
            hs_free_aligned(xg);
        }
        free(w);
        free(xf);
        free(wf);
    }
    /* Where the CPU has AVX-512 VNNI, Q8_0 and Q5_0 have the group form; with AVX-VNNI, on the
     * AVX2 path too (groups of 8) */
    const enum hs_isa best = hs__cpu_detect_isa();
    cr_assert(checked[HS_ISA_AVX512] == 2 * 3 * 7 * 16 || best < HS_ISA_AVX512 ||
                  !hs__cpu_has_avx512vnni(),
              "%d", checked[HS_ISA_AVX512]);
    cr_assert(checked[HS_ISA_AVX2] == 2 * 3 * 7 * 8 || best < HS_ISA_AVX2 || !hs__cpu_has_avxvnni(),
              "%d", checked[HS_ISA_AVX2]);
}

/* (4b) The SIMD kernels compute llama.cpp's AVX-512 float order bit for bit (the AVX2 ones in
 * 8-lane halves), in vec_dot and in every tile shape: the references of tests/model are from an
 * AVX-512 machine, and CI may run on either kind. */
Test(quants, simd_dots_follow_ggml_avx512_order_bit_exact)
{
    static const enum hs_type types[] = {HS_TYPE_F32, HS_TYPE_F16, HS_TYPE_Q8_0, HS_TYPE_Q4_0,
                                         HS_TYPE_Q5_0};
    static const int64_t lengths[] = {32, 64, 100, 576, 4101};
    for (size_t ti = 0; ti < HS_ARRAY_LEN(types); ti++) {
        for (size_t ni = 0; ni < HS_ARRAY_LEN(lengths); ni++) {
            const int64_t n = lengths[ni];
            if (n % blck(types[ti]) != 0) {
                continue;
            }
            struct fixture f;
            fixture_init(&f, types[ti], n, 600 + ti * 10 + ni);
            FOR_EACH_ISA (isa) {
                if (isa == HS_ISA_SCALAR) {
                    continue;
                }
                const struct hs_quant_kernels *k = hs__cpu_kernels(f.t, isa);
                fixture_activations(&f, k);
                float want[N_ROWS][N_ROWS];
                for (int r = 0; r < N_ROWS; r++) {
                    for (int c = 0; c < N_ROWS; c++) {
                        want[r][c] =
                            ref_dot_ggml_avx512(f.t, f.w + r * f.w_row, f.xq + c * f.x_row, n);
                        float got;
                        k->vec_dot(n, &got, f.w + r * f.w_row, f.xq + c * f.x_row);
                        cr_assert_eq(got, want[r][c], "%s %s n=%ld (%d,%d): %.9g vs %.9g",
                                     hs_type_str(f.t), hs_isa_str(isa), (long)n, r, c, got,
                                     want[r][c]);
                    }
                }
                for (int nr = 1; nr <= 4; nr++) {
                    for (int nc = 1; nc <= 4; nc++) {
                        float s[16];
                        k->gemm_tile(n, s, 4, f.w, f.w_row, f.xq, f.x_row, nr, nc);
                        for (int c = 0; c < nc; c++) {
                            for (int r = 0; r < nr; r++) {
                                cr_assert_eq(s[c * 4 + r], want[r][c], "%s %s n=%ld tile %dx%d",
                                             hs_type_str(f.t), hs_isa_str(isa), (long)n, nr, nc);
                            }
                        }
                    }
                }
            }
            fixture_finish(&f);
        }
    }
}

static bool same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof(a)) == 0 || (isnan(a) && isnan(b));
}

/* The fused f16 decode attention's vector expf gives this libm's expf bit for bit (glibc's and
 * musl's share its algorithm; the attention falls back to libm where the start-up check says
 * otherwise): every 61st float below 88 in magnitude, both signs, and the special inputs. */
Test(quants, expf_libm_avx2_gives_libm_bits)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX2) {
        cr_skip_test("no AVX2");
    }
#ifdef __GLIBC__
    cr_assert(hs__expf_libm_check(), "glibc's expf differs from hs__expf_libm_avx2");
#endif
    if (!hs__expf_libm_check()) {
        return; /* another libm: its expf is used as it is */
    }
    enum { N = 4096 };
    static float x[N], y[N];
    static const float edges[] = {0.0f,   -0.0f,     87.0f,      -87.0f,    87.5f,     -87.5f,
                                  88.75f, -88.75f,   -103.5f,    -104.5f,   INFINITY,  -INFINITY,
                                  NAN,    0x1p-149f, -0x1p-149f, 0x1p-126f, -0x1p-126f};
    int n = 0;
    long checked = 0;
    for (uint32_t u = 0; u < 0x42b00000u + 61 * HS_ARRAY_LEN(edges); u += 61) {
        for (uint32_t sign = 0; sign < 2; sign++) {
            const uint32_t b = u | sign << 31;
            if (u < 0x42b00000u) {
                memcpy(&x[n++], &b, sizeof(b));
            } else if (sign == 0) {
                x[n++] = edges[(u - 0x42b00000u) / 61];
            }
        }
        if (n >= N - 1 || u + 61 >= 0x42b00000u + 61 * HS_ARRAY_LEN(edges)) {
            hs__expf_libm_avx2(n, y, x);
            for (int i = 0; i < n; i++) {
                const float want = expf(x[i]);
                cr_assert(memcmp(&y[i], &want, sizeof(want)) == 0 || (isnan(want) && isnan(y[i])),
                          "expf(%a) = %a, libm %a", (double)x[i], (double)y[i], (double)want);
            }
            checked += n;
            n = 0;
        }
    }
    cr_assert_gt(checked, 36000000);
}

/* (4c) SwiGLU and the tiled attention block use ggml's AVX-512 vector expf on every SIMD ISA:
 * the AVX2 kernels emulate it bit for bit, down to the saturated and subnormal results. */
Test(quants, swiglu_follows_ggml_avx512_expf_bit_exact)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX2) {
        cr_skip_test("no AVX2");
    }
    enum { N = 4096 + 13 }; /* a tail of 13 for libm */
    static float g[N], u[N], y[N];
    struct hs_rng rng;
    hs_rng_seed(&rng, 700);
    static const float edges[] = {0.0f,    -0.0f,  87.5f,   -87.5f, 89.0f,   -89.0f, 103.0f,
                                  -103.0f, 110.0f, -110.0f, 130.0f, -130.0f, 1e30f,  -1e30f};
    for (int i = 0; i < N; i++) {
        g[i] =
            i < (int)HS_ARRAY_LEN(edges) ? edges[i] : (float)(hs_rng_uniform(&rng) * 240.0 - 120.0);
        u[i] = (float)hs_rng_normal(&rng);
    }
    void (*const fns[])(int64_t, float *, const float *, const float *) = {hs__swiglu_f32_avx2,
                                                                           hs__swiglu_f32_avx512};
    for (int isa = 0; isa < (hs__cpu_detect_isa() >= HS_ISA_AVX512 ? 2 : 1); isa++) {
        for (int i = 0; i < N; i++) {
            y[i] = g[i];
        }
        fns[isa](N, y, y, u); /* in place, as the FFN runs it */
        for (int i = 0; i < N; i++) {
            const float e = i < N / 16 * 16 ? ref_expf_ggml_avx512(0.0f - g[i]) : expf(-g[i]);
            const float want = g[i] / (1.0f + e) * u[i];
            cr_assert(same_bits(y[i], want), "swiglu %s [%d] g=%.9g: %.9g vs %.9g",
                      isa ? "avx512" : "avx2", i, g[i], y[i], want);
        }
    }
}

typedef void (*attn_block_fn)(int64_t hd, int64_t nq, int64_t ldq, int64_t nk, float scale,
                              const float *qt, const float *k, const float *v, const int32_t *last,
                              float *m, float *l, float *acc, float *st);

/* The tiled attention block against a scalar rendering of its operations, over two blocks (the
 * second rescales the first's sums; one query sees nothing in the first). */
static void check_attention_block(attn_block_fn block, const char *name)
{
    enum { HD = 32, NQ = 21, LDQ = 32, NK = 32 };
    static _Alignas(64) float qt[HD * LDQ], st[NK * LDQ];
    static float k[NK * HD], v[NK * HD], m[LDQ], l[LDQ], acc[NQ * HD];
    static float em[LDQ], el[LDQ], eacc[NQ * HD], es[NK];
    int32_t last[LDQ];
    struct hs_rng rng;
    hs_rng_seed(&rng, 701);
    for (int i = 0; i < HD * LDQ; i++) {
        qt[i] = (float)hs_rng_normal(&rng) * 3.0f;
    }
    for (int i = 0; i < LDQ; i++) {
        m[i] = em[i] = -INFINITY;
        l[i] = el[i] = 0.0f;
    }
    memset(acc, 0, sizeof(acc));
    memset(eacc, 0, sizeof(eacc));
    const float scale = 1.0f / sqrtf((float)HD);
    for (int blk = 0; blk < 2; blk++) {
        const int nk = blk == 0 ? NK : 7;
        for (int i = 0; i < nk * HD; i++) {
            k[i] = (float)hs_rng_normal(&rng) * (blk ? 4.0f : 1.0f);
            v[i] = (float)hs_rng_normal(&rng);
        }
        for (int i = 0; i < LDQ; i++) {
            last[i] = blk == 0 ? (i == 3 ? -1 : i) : nk - 1;
        }
        block(HD, NQ, LDQ, nk, scale, qt, k, v, last, m, l, acc, st);
        for (int i = 0; i < LDQ; i++) {
            float mx = -INFINITY;
            for (int j = 0; j < nk; j++) {
                float s = 0.0f;
                for (int d = 0; d < HD; d++) {
                    s = fmaf(k[j * HD + d], qt[d * LDQ + i], s);
                }
                s = j <= last[i] ? s * scale : -INFINITY;
                es[j] = s;
                mx = mx > s ? mx : s;
            }
            const float mnew = em[i] > mx ? em[i] : mx;
            const bool live = mnew != -INFINITY;
            const float ms = live ? ref_expf_ggml_avx512(em[i] - mnew) : 1.0f;
            float sum = 0.0f;
            for (int j = 0; j < nk; j++) {
                es[j] = live ? ref_expf_ggml_avx512(es[j] - mnew) : 0.0f;
                sum += es[j];
            }
            em[i] = mnew;
            el[i] = fmaf(el[i], ms, sum);
            cr_assert(same_bits(m[i], em[i]) && same_bits(l[i], el[i]), "%s block %d query %d m, l",
                      name, blk, i);
            for (int d = 0; i < NQ && d < HD; d++) {
                float r = eacc[i * HD + d] * ms;
                for (int j = 0; j < nk; j++) {
                    r = fmaf(es[j], v[j * HD + d], r);
                }
                eacc[i * HD + d] = r;
                cr_assert(same_bits(acc[i * HD + d], r), "%s block %d query %d [%d]: %.9g vs %.9g",
                          name, blk, i, d, acc[i * HD + d], r);
            }
        }
    }
}

Test(quants, attention_block_follows_ggml_avx512_expf_bit_exact)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX2) {
        cr_skip_test("no AVX2");
    }
    check_attention_block(hs__attn_block_f32_avx2, "avx2");
    if (hs__cpu_detect_isa() >= HS_ISA_AVX512) {
        check_attention_block(hs__attn_block_f32_avx512, "avx512");
    }
}

/* (5) The activation quantizers follow ggml's rounding bit for bit, on every ISA. */
Test(quants, activation_quantizers_match_ggml_rounding_bit_exact)
{
    const enum hs_type acts[] = {HS_TYPE_Q8_0, HS_TYPE_Q4_1, HS_TYPE_Q4_K};
    for (size_t ai = 0; ai < HS_ARRAY_LEN(acts); ai++) {
        for (size_t ni = 0; ni < HS_ARRAY_LEN(row_lengths); ni++) {
            struct hs_rng rng;
            hs_rng_seed(&rng, 300 + ai * 10 + ni);
            const int64_t n = row_lengths[ni];
            float *x = make_rows(&rng, n, N_ROWS);
            /* Exact ties: a block with amax 127 (d = 1) and values on .5; a Q8_K block whose
             * largest magnitude is -127 (iscale = 1) with ties as well. */
            x[0] = 127.0f;
            x[1] = 2.5f;
            x[2] = -3.5f;
            x[3] = 0.5f;
            for (int j = 4; j < 32; j++) {
                x[j] = (float)(j - 16) + 0.5f;
            }
            if (acts[ai] == HS_TYPE_Q4_K) {
                x[0] = -127.0f;
                for (int j = 32; j < 256; j++) {
                    x[j] = (float)(j % 50) - 24.5f;
                }
            }
            /* A zero block. */
            memset(x + n, 0, 256 * sizeof(float));
            const enum hs_type vt = hs__cpu_kernels(acts[ai], HS_ISA_SCALAR)->vec_dot_type;
            const size_t row = hs_type_row_size(vt, n);
            uint8_t *want = malloc(row), *got = malloc(row);
            FOR_EACH_ISA (isa) {
                const struct hs_quant_kernels *k = hs__cpu_kernels(acts[ai], isa);
                for (int r = 0; r < N_ROWS; r++) {
                    if (vt == HS_TYPE_Q8_0 && isa >= HS_ISA_AVX2) {
                        ref_quantize_q8_0_x86(x + r * n, want, n);
                    } else if (vt == HS_TYPE_Q8_0) {
                        ref_quantize_q8_0(x + r * n, want, n);
                    } else if (vt == HS_TYPE_Q8_1 && isa >= HS_ISA_AVX2) {
                        ref_quantize_q8_1_x86(x + r * n, want, n);
                    } else if (vt == HS_TYPE_Q8_1) {
                        ref_quantize_q8_1(x + r * n, want, n);
                    } else {
                        ref_quantize_q8_k(x + r * n, want, n);
                    }
                    memset(got, 0xAB, row);
                    k->from_float(x + r * n, got, n);
                    for (size_t i = 0; i < row; i++) {
                        cr_assert_eq(got[i], want[i], "%s %s n=%ld row %d byte %zu: %d vs %d",
                                     hs_type_str(vt), hs_isa_str(isa), (long)n, r, i, got[i],
                                     want[i]);
                    }
                }
            }
            free(want);
            free(got);
            free(x);
        }
    }
}

/* F16 and BF16 activations: round to nearest even, same bits on every ISA. */
Test(quants, float_activations_round_to_nearest_even)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 11);
    const int64_t n = 4101;
    float *x = make_rows(&rng, n, 1);
    x[0] = 1.0f + 0x1.0p-11f;     /* half tie -> 1.0 */
    x[1] = 1.0f + 3 * 0x1.0p-11f; /* half tie -> up to even */
    x[2] = 1.0f + 0x1.0p-8f;      /* bf16 tie -> 1.0 */
    x[3] = 1.0f + 3 * 0x1.0p-8f;  /* bf16 tie -> up */
    uint16_t *got = malloc((size_t)n * 2);
    FOR_EACH_ISA (isa) {
        hs__cpu_kernels(HS_TYPE_F16, isa)->from_float(x, got, n);
        cr_assert_eq(got[0], 0x3c00);
        cr_assert_eq(got[1], 0x3c02);
        for (int64_t i = 0; i < n; i++) {
            cr_assert_eq(got[i], hs_fp32_to_fp16(x[i]), "f16 %s [%ld]", hs_isa_str(isa), (long)i);
        }
        hs__cpu_kernels(HS_TYPE_BF16, isa)->from_float(x, got, n);
        cr_assert_eq(got[2], 0x3f80);
        cr_assert_eq(got[3], 0x3f82);
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            const uint32_t rne = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
            cr_assert_eq(got[i], rne, "bf16 %s [%ld]", hs_isa_str(isa), (long)i);
        }
    }
    free(got);
    free(x);
}

/* Q4_0 and Q5_0 round x / d + 8 (16) by truncating x / d + 8.5 (16.5), as ggml's reference
 * quantizers: ties go up, and the top clips (llama-quantize's files have these bytes). */
Test(quants, q4_0_and_q5_0_round_ties_as_ggml)
{
    static const struct {
        enum hs_type t;
        float max;
        float in[6], want[6];
    } cases[] = {
        {HS_TYPE_Q4_0, -8.0f, {0.5f, -0.5f, 1.5f, -2.5f, 7.5f, -7.5f}, {1, 0, 2, -2, 7, -7}},
        {HS_TYPE_Q5_0, -16.0f, {0.5f, -0.5f, 2.5f, -3.5f, 15.5f, -15.5f}, {1, 0, 3, -3, 15, -15}},
    };
    for (size_t ci = 0; ci < HS_ARRAY_LEN(cases); ci++) {
        float x[32] = {0};
        x[0] = cases[ci].max; /* d = 1 */
        memcpy(x + 1, cases[ci].in, sizeof(cases[ci].in));
        uint8_t q[32];
        double y[32];
        hs__quantize_row_ref(cases[ci].t, x, q, 32);
        cr_assert_eq(ref_dequantize(cases[ci].t, q, y, 32), 0);
        cr_assert_eq(y[0], cases[ci].max);
        for (int j = 0; j < 6; j++) {
            cr_assert_eq(y[1 + j], cases[ci].want[j], "%s: %g -> %g, want %g",
                         hs_type_str(cases[ci].t), cases[ci].in[j], y[1 + j], cases[ci].want[j]);
        }
    }
}

/* (6) Reference quantization round trip: relative RMS error per type. */
Test(quants, quantize_row_ref_round_trip_error)
{
    static const struct {
        enum hs_type t;
        double max_rel_rms;
    } bounds[] = {
        {HS_TYPE_F32, 0},      {HS_TYPE_F16, 1e-3},   {HS_TYPE_BF16, 5e-3}, {HS_TYPE_Q8_0, 0.01},
        {HS_TYPE_Q4_0, 0.15},  {HS_TYPE_Q5_0, 0.075}, {HS_TYPE_Q4_K, 0.1},  {HS_TYPE_Q5_K, 0.05},
        {HS_TYPE_Q6_K, 0.025}, {HS_TYPE_Q8_K, 0.01},
    };
    struct hs_rng rng;
    hs_rng_seed(&rng, 400);
    const int64_t n = 4096 + 256;
    float *x = make_rows(&rng, n, N_ROWS);
    uint8_t *q = malloc(hs_type_row_size(HS_TYPE_F32, n));
    double *y = malloc((size_t)n * sizeof(double));
    float *yf = malloc((size_t)n * sizeof(float));
    for (size_t bi = 0; bi < HS_ARRAY_LEN(bounds); bi++) {
        for (int r = 0; r < N_ROWS; r++) {
            if (r == 2) {
                continue; /* outliers make RMS meaningless; they are covered elsewhere */
            }
            const float *xr = x + r * n;
            hs__quantize_row_ref(bounds[bi].t, xr, q, n);
            cr_assert_eq(ref_dequantize(bounds[bi].t, q, y, n), 0);
            hs__dequantize_row_ref(bounds[bi].t, q, yf, n);
            double se = 0, ss = 0;
            for (int64_t i = 0; i < n; i++) {
                se += (y[i] - xr[i]) * (y[i] - xr[i]);
                ss += (double)xr[i] * xr[i];
                cr_assert(fabs(yf[i] - y[i]) <= 1e-6 * (fabs(y[i]) + 1e-3),
                          "dequantize_row_ref %s [%ld]", hs_type_str(bounds[bi].t), (long)i);
            }
            const double rel = sqrt(se / ss);
            cr_assert(rel <= bounds[bi].max_rel_rms, "%s row %d: rel rms %g > %g",
                      hs_type_str(bounds[bi].t), r, rel, bounds[bi].max_rel_rms);
            cr_log_info("%s rel rms %.5f", hs_type_str(bounds[bi].t), rel);
        }
    }
    free(yf);
    free(y);
    free(q);
    free(x);
}

/* The AVX-512 kernels without VNNI are only picked on CPUs that lack it; call them directly and
 * check they give the same integers (so the same bits) as the dispatched ones. */
Test(quants, avx512_without_vnni_matches)
{
    if (hs__cpu_detect_isa() < HS_ISA_AVX512) {
        cr_skip_test("no AVX-512");
    }
    static const struct {
        enum hs_type t;
        void (*vec_dot)(int64_t, float *, const void *, const void *);
        hs_gemm_tile_fn tile;
    } plain[] = {
        {HS_TYPE_Q8_0, hs__vec_dot_q8_0_avx512, hs__gemm_tile_q8_0_avx512},
        {HS_TYPE_Q4_K, hs__vec_dot_q4_k_avx512, hs__gemm_tile_q4_k_avx512},
        {HS_TYPE_Q5_K, hs__vec_dot_q5_k_avx512, hs__gemm_tile_q5_k_avx512},
        {HS_TYPE_Q6_K, hs__vec_dot_q6_k_avx512, hs__gemm_tile_q6_k_avx512},
    };
    for (size_t pi = 0; pi < HS_ARRAY_LEN(plain); pi++) {
        /* Q8_0 gets an odd block count, for the tail of the two-blocks-at-a-time prefetch. */
        const bool q80_act = plain[pi].t == HS_TYPE_Q8_0;
        const int64_t n = q80_act ? 4096 + 256 + 32 : 4096 + 256;
        struct fixture f;
        fixture_init(&f, plain[pi].t, n, 500 + pi);
        const struct hs_quant_kernels *k = hs__cpu_kernels(f.t, HS_ISA_AVX512);
        fixture_activations(&f, k);
        for (int r = 0; r < N_ROWS; r++) {
            for (int c = 0; c < N_ROWS; c++) {
                float a, b;
                k->vec_dot(f.n, &a, f.w + r * f.w_row, f.xq + c * f.x_row);
                plain[pi].vec_dot(f.n, &b, f.w + r * f.w_row, f.xq + c * f.x_row);
                double asum;
                const double ref = ref_dot(&f, r, c, &asum);
                cr_assert(fabs(b - ref) / asum < 2e-6, "%s plain avx512", hs_type_str(f.t));
                cr_assert_eq(a, b, "%s: vnni %.9g vs plain %.9g", hs_type_str(f.t), a, b);
            }
        }
        float s[16], sv[16];
        plain[pi].tile(f.n, s, 4, f.w, f.w_row, f.xq, f.x_row, 4, 4);
        k->gemm_tile(f.n, sv, 4, f.w, f.w_row, f.xq, f.x_row, 4, 4);
        for (int r = 0; r < N_ROWS; r++) {
            for (int c = 0; c < N_ROWS; c++) {
                cr_assert_eq(s[c * 4 + r], sv[c * 4 + r], "%s plain tile", hs_type_str(f.t));
            }
        }
        fixture_finish(&f);
    }
}

/* The public writer's entry (backends/backend.h): every writable type gives the reference
 * quantizer's bytes row by row; other types and ragged rows are refused, y untouched. */
Test(quants, quantize_rows_is_the_reference_and_refuses_what_it_cannot_write)
{
    enum { ROWS = 3, N = 512 };
    float *x = malloc(sizeof(float) * ROWS * N);
    unsigned char *a = malloc(ROWS * N * 4 + 64), *b = malloc(ROWS * N * 4 + 64);
    cr_assert(x && a && b);
    struct hs_rng rng;
    hs_rng_seed(&rng, 4242);
    for (int i = 0; i < ROWS * N; i++) {
        x[i] = hs_rng_range(&rng, -2.0f, 2.0f);
    }
    int n_ok = 0;
    for (int t = 0; t < HS_TYPE_COUNT; t++) {
        if (!hs_type_traits((enum hs_type)t)->name) {
            continue;
        }
        memset(a, 0xAB, ROWS * N * 4 + 64);
        if (!hs_quantize_supports((enum hs_type)t)) {
            cr_assert_eq(hs_quantize_rows((enum hs_type)t, x, a, ROWS, N), HS_E_INVAL, "%s",
                         hs_type_str((enum hs_type)t));
            cr_assert_eq(a[0], 0xAB);
            continue;
        }
        n_ok++;
        const size_t row = hs_type_row_size((enum hs_type)t, N);
        cr_assert_eq(hs_quantize_rows((enum hs_type)t, x, a, ROWS, N), HS_OK);
        for (int r = 0; r < ROWS; r++) {
            hs__quantize_row_ref((enum hs_type)t, x + r * N, b + (size_t)r * row, N);
        }
        cr_assert(!memcmp(a, b, row * ROWS), "%s", hs_type_str((enum hs_type)t));
        if (hs_type_traits((enum hs_type)t)->blck_size > 1) {
            cr_assert_eq(hs_quantize_rows((enum hs_type)t, x, a, ROWS, N + 1), HS_E_INVAL);
        }
    }
    cr_assert_eq(n_ok, 13);
    free(x);
    free(a);
    free(b);
}
