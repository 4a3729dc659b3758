/* bench-kernels: single-thread throughput of the weight-type kernels, per type and ISA.
 *
 *   vec_dot    one activation row against every weight row, a row at a time; GB/s of weight
 *              bytes.
 *   decode     the same through the engine's decode path: the type's gemv kernel where it has
 *              one, else gemm_tile with one activation row (as backends/cpu's mm_range).
 *   stream     decode over the whole matrix per trial, best of 5, for matrices over 8 MiB (the
 *              output shape: 16-30 MB, mostly from DRAM); 0 where not run.
 *   gemm_tile  32 activation rows, 4 x 4 tiles, weight-row blocks outer (prompt processing);
 *              "eff GB/s" = weight bytes x activation rows / s (comparable to vec_dot's),
 *              and GOP/s (2 ops per multiply-add).
 *   repacked decode  (Q5_0 on AVX2 and up) decode and stream as above from the copy the CPU
 *              backend makes at load (repack.h: groups of 8 rows on AVX2, 16 on AVX-512).
 *   split form gemm  (types whose kernels have it: AVX2 Q8_0, Q5_0) the prompt path as
 *              backends/cpu's mm_range runs it: each 16 KiB of weight rows converted once into
 *              the split form, then gemm_tile_split on it against split activations.
 *   group form gemm  (Q8_0, Q5_0 on AVX-512 VNNI and AVX-VNNI) the same with the group form:
 *              each group's weight rows (16, or 8) interleaved once, then gemm_group against
 *              the 32 activation rows in the group form.
 *
 * Shapes follow SmolLM-135M: FFN 1536 x 576 and output 49152 x 576. 576 is no multiple of
 * 256, so the K-quants (which GGUF writers then avoid for those tensors) run the same bytes as
 * 576 x 1536 (ffn_down) and 49152 x 768.
 *
 * Weight bytes per second are best-of-many short trials (see bench_one).
 *
 * Usage: bench-kernels [type-name ...]   (default: all) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench-util.h"
#include "backends/cpu/quants.h"
#include "backends/cpu/repack.h"
#include "common/common.h"

#define N_COLS 32

struct shape {
    const char *name;
    int64_t rows, n;
};

static volatile float sink;

/* Rows [r0, r1) against activation row x the way mm_range decodes them. */
static void decode_rows(const struct hs_quant_kernels *k, int64_t n, float *out, const uint8_t *w,
                        size_t w_row, const uint8_t *x, size_t x_row, int64_t r0, int64_t r1)
{
    if (k->gemv) {
        k->gemv(n, out + r0, w + (size_t)r0 * w_row, w_row, x, r1 - r0);
        return;
    }
    for (int64_t r = r0; r < r1; r += 4) {
        k->gemm_tile(n, out + r, 1, w + (size_t)r * w_row, w_row, x, x_row, (int)HS_MIN(4, r1 - r),
                     1);
    }
}

static void bench_one(enum hs_type t, enum hs_isa isa, const struct shape *sh)
{
    const struct hs_quant_kernels *k = hs__cpu_kernels(t, isa);
    const size_t w_row = hs_type_row_size(t, sh->n);
    const size_t x_row = hs_type_row_size(k->vec_dot_type, sh->n);
    uint8_t *w = malloc(w_row * (size_t)sh->rows);
    uint8_t *x = malloc(x_row * N_COLS);
    float *src = malloc((size_t)sh->n * sizeof(float));
    float *out = malloc((size_t)sh->rows * N_COLS * sizeof(float));
    if (!w || !x || !src || !out) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 1);
    /* 64 distinct quantized rows, repeated over the matrix. */
    for (int64_t r = 0; r < sh->rows; r++) {
        if (r < 64) {
            for (int64_t i = 0; i < sh->n; i++) {
                src[i] = (float)hs_rng_normal(&rng);
            }
            hs__quantize_row_ref(t, src, w + (size_t)r * w_row, sh->n);
        } else {
            memcpy(w + (size_t)r * w_row, w + (size_t)(r % 64) * w_row, w_row);
        }
    }
    for (int c = 0; c < N_COLS; c++) {
        for (int64_t i = 0; i < sh->n; i++) {
            src[i] = (float)hs_rng_normal(&rng);
        }
        k->from_float(src, x + (size_t)c * x_row, sh->n);
    }
    const double bytes = (double)w_row * (double)sh->rows;

    /* The machine is shared and time-sliced: each trial is one short slice of rows (about
     * 256 KiB of weights, well under a scheduler tick), rotating through the matrix; the best
     * trial of many is the undisturbed speed. */
    const int64_t chunk = HS_MIN(sh->rows, HS_MAX(4, (int64_t)(262144 / w_row) / 4 * 4));
    double best_vd = 0, best_dc = 0, best_gm = 0, best_rp = 0, best_sp = 0, best_gp = 0;
    double spent = 0;
    /* Kernels with the split form (quants.h): also the prompt path mm_range runs with them,
     * each 16 KiB of weight rows split into scratch once, then the tiles on both split. */
    uint8_t *xs = NULL, *wsc = NULL;
    const size_t ss = hs_align_up(hs_quant_split_row_size(sh->n), 64);
    const int64_t sc_rows = HS_MAX((int64_t)(16384 / w_row) / 4 * 4, 4);
    if (k->gemm_tile_split) {
        xs = hs_alloc_aligned(ss * N_COLS);
        wsc = hs_alloc_aligned(ss * (size_t)sc_rows);
        if (!xs || !wsc) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        for (int c = 0; c < N_COLS; c++) {
            for (int64_t i = 0; i < sh->n; i++) {
                src[i] = (float)hs_rng_normal(&rng);
            }
            k->from_float_split(src, xs + (size_t)c * ss, sh->n);
        }
    }
    /* Kernels with the group form (quants.h): its prompt path, a group of 16 rows at a time. */
    uint8_t *xg = NULL, *wg = NULL;
    const size_t gxs = hs_align_up(hs_quant_group_x_size(sh->n), 64);
    const size_t gs = (size_t)(sh->n / 32) * k->group_block_bytes;
    if (k->gemm_group) {
        xg = hs_alloc_aligned(gxs * N_COLS);
        wg = hs_alloc_aligned(gs);
        if (!xg || !wg) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        for (int c = 0; c < N_COLS; c++) {
            for (int64_t i = 0; i < sh->n; i++) {
                src[i] = (float)hs_rng_normal(&rng);
            }
            k->from_float_group(src, xg + (size_t)c * gxs, sh->n);
        }
    }
    /* Q4_0 on AVX2 and up: also the repacked 8-row kernel (repack.h) over a copy. */
    uint8_t *wr = NULL;
    size_t group_bytes = 0;
    if (t == HS_TYPE_Q4_0 && isa >= HS_ISA_AVX2 && sh->rows % 8 == 0 && chunk % 8 == 0) {
        group_bytes = hs__q4_0x8_bytes(1, sh->n);
        wr = malloc(group_bytes * (size_t)(sh->rows / 8));
        if (!wr) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        hs__repack_q4_0x8(w, w_row, sh->rows / 8, sh->n, wr);
    }
    /* Q5_0 on AVX2 and up: the decode gemv over the copy (repack.h). */
    uint8_t *wq5 = NULL;
    int64_t g5 = 0;
    size_t g5_bytes = 0;
    void (*gemv5)(int64_t, float *, const void *, int64_t, const void *) = NULL;
    if (t == HS_TYPE_Q5_0 && isa >= HS_ISA_AVX2) {
        g5 = isa >= HS_ISA_AVX512 ? 16 : 8;
        g5_bytes = g5 == 16 ? hs__q5_0x16_bytes(1, sh->n) : hs__q5_0x8_bytes(1, sh->n);
        wq5 = malloc(g5_bytes * (size_t)(sh->rows / g5));
        if (!wq5) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        if (g5 == 16) {
            hs__repack_q5_0x16(w, w_row, sh->rows / 16, sh->n, wq5);
            gemv5 =
                hs__cpu_has_avx512vnni() ? hs__gemv_q5_0x16_avx512vnni : hs__gemv_q5_0x16_avx512;
        } else {
            hs__repack_q5_0x8(w, w_row, sh->rows / 8, sh->n, wq5);
            gemv5 = hs__cpu_has_avxvnni() ? hs__gemv_q5_0x8_avxvnni : hs__gemv_q5_0x8_avx2;
        }
    }
    double best_q5 = 0;
    for (int trial = 0; trial < 400 || spent < 0.5; trial++) {
        const int64_t r0 = (trial * chunk) % (sh->rows - chunk + 1) / 4 * 4;
        double t0 = bench_now_s();
        for (int64_t r = r0; r < r0 + chunk; r++) {
            k->vec_dot(sh->n, &out[r], w + (size_t)r * w_row, x);
        }
        double t1 = bench_now_s();
        best_vd = HS_MAX(best_vd, (double)chunk / (t1 - t0));
        spent += t1 - t0;

        t0 = bench_now_s();
        decode_rows(k, sh->n, out, w, w_row, x, x_row, r0, r0 + chunk);
        t1 = bench_now_s();
        best_dc = HS_MAX(best_dc, (double)chunk / (t1 - t0));
        spent += t1 - t0;

        /* 4 weight rows x 4 activation rows, weight blocks outer so they stay in L1. */
        t0 = bench_now_s();
        for (int64_t r = r0; r < r0 + chunk; r += 4) {
            const int nr = (int)HS_MIN(4, r0 + chunk - r);
            for (int c = 0; c < N_COLS; c += 4) {
                k->gemm_tile(sh->n, &out[(size_t)c * (size_t)sh->rows + (size_t)r],
                             (size_t)sh->rows, w + (size_t)r * w_row, w_row, x + (size_t)c * x_row,
                             x_row, nr, 4);
            }
        }
        t1 = bench_now_s();
        best_gm = HS_MAX(best_gm, (double)chunk / (t1 - t0));
        spent += t1 - t0;
        if (wr) {
            /* The same rows repacked (chunk is a multiple of 8 here), 4 activation rows a call. */
            const int64_t r8 = r0 / 8 * 8;
            t0 = bench_now_s();
            for (int c = 0; c < N_COLS; c += 4) {
                hs__gemm_q4_0x8_avx2(sh->n, &out[(size_t)c * (size_t)sh->rows + (size_t)r8],
                                     (size_t)sh->rows, wr + (size_t)(r8 / 8) * group_bytes,
                                     chunk / 8, x + (size_t)c * x_row, x_row, 4);
            }
            t1 = bench_now_s();
            best_rp = HS_MAX(best_rp, (double)chunk / (t1 - t0));
            spent += t1 - t0;
        }
        if (wq5) {
            const int64_t gr0 = r0 / g5, ng = HS_MAX(chunk / g5, 1);
            t0 = bench_now_s();
            gemv5(sh->n, out + gr0 * g5, wq5 + (size_t)gr0 * g5_bytes, ng, x);
            t1 = bench_now_s();
            best_q5 = HS_MAX(best_q5, (double)(ng * g5) / (t1 - t0));
            spent += t1 - t0;
        }
        if (xs) {
            t0 = bench_now_s();
            for (int64_t oc = r0; oc < r0 + chunk; oc += sc_rows) {
                const int64_t oe = HS_MIN(oc + sc_rows, r0 + chunk);
                k->split_weights(w + (size_t)oc * w_row, w_row, oe - oc, sh->n, wsc, ss);
                for (int c = 0; c < N_COLS; c += 4) {
                    for (int64_t r = oc; r < oe; r += 4) {
                        k->gemm_tile_split(sh->n, &out[(size_t)c * (size_t)sh->rows + (size_t)r],
                                           (size_t)sh->rows, wsc + (size_t)(r - oc) * ss, ss,
                                           xs + (size_t)c * ss, ss, (int)HS_MIN(4, oe - r), 4);
                    }
                }
            }
            t1 = bench_now_s();
            best_sp = HS_MAX(best_sp, (double)chunk / (t1 - t0));
            spent += t1 - t0;
        }
        if (xg) {
            t0 = bench_now_s();
            for (int64_t oc = r0; oc < r0 + chunk; oc += k->group_rows) {
                const int nr = (int)HS_MIN(k->group_rows, r0 + chunk - oc);
                k->split_group(w + (size_t)oc * w_row, w_row, nr, sh->n, wg, gs);
                for (int c = 0; c < N_COLS; c += 4) {
                    k->gemm_group(sh->n, &out[(size_t)c * (size_t)sh->rows + (size_t)oc],
                                  (size_t)sh->rows, wg, xg + (size_t)c * gxs, gxs, nr, 4);
                }
            }
            t1 = bench_now_s();
            best_gp = HS_MAX(best_gp, (double)chunk / (t1 - t0));
            spent += t1 - t0;
        }
        if (spent > 3.0) {
            break;
        }
    }
    double best_st = 0;
    for (int trial = 0; trial < 5 && sh->rows * (int64_t)w_row > (8 << 20); trial++) {
        const double t0 = bench_now_s();
        decode_rows(k, sh->n, out, w, w_row, x, x_row, 0, sh->rows);
        best_st = HS_MAX(best_st, (double)sh->rows / (bench_now_s() - t0));
    }
    double best_q5st = 0;
    for (int trial = 0; wq5 && trial < 5 && sh->rows * (int64_t)w_row > (8 << 20); trial++) {
        const double t0 = bench_now_s();
        gemv5(sh->n, out, wq5, sh->rows / g5, x);
        best_q5st = HS_MAX(best_q5st, (double)(sh->rows / g5 * g5) / (bench_now_s() - t0));
    }
    /* best_* are weight rows per second. */
    const double vd_gbs = (double)w_row * best_vd / 1e9;
    const double gm_gbs = (double)w_row * N_COLS * best_gm / 1e9;
    const double gops = 2.0 * (double)sh->n * N_COLS * best_gm / 1e9;
    sink = out[0];
    if (wr) {
        printf("%-5s %-7s %-14s repacked 8-row gemm %7.2f eff GB/s %7.1f GOP/s\n", hs_type_str(t),
               hs_isa_str(isa), sh->name, (double)w_row * N_COLS * best_rp / 1e9,
               2.0 * (double)sh->n * N_COLS * best_rp / 1e9);
        free(wr);
    }

    if (wq5) {
        printf("%-5s %-7s %-14s repacked decode   %7.2f GB/s  stream %6.2f GB/s (%d-row groups)\n",
               hs_type_str(t), hs_isa_str(isa), sh->name, (double)w_row * best_q5 / 1e9,
               (double)w_row * best_q5st / 1e9, (int)g5);
        free(wq5);
    }
    if (xs) {
        printf("%-5s %-7s %-14s split form gemm   %7.2f eff GB/s %7.1f GOP/s\n", hs_type_str(t),
               hs_isa_str(isa), sh->name, (double)w_row * N_COLS * best_sp / 1e9,
               2.0 * (double)sh->n * N_COLS * best_sp / 1e9);
        hs_free_aligned(wsc);
        hs_free_aligned(xs);
    }
    if (xg) {
        printf("%-5s %-7s %-14s group form gemm   %7.2f eff GB/s %7.1f GOP/s\n", hs_type_str(t),
               hs_isa_str(isa), sh->name, (double)w_row * N_COLS * best_gp / 1e9,
               2.0 * (double)sh->n * N_COLS * best_gp / 1e9);
        hs_free_aligned(wg);
        hs_free_aligned(xg);
    }
    printf("%-5s %-7s %-14s %6ldx%-5ld %8.2f MB  vec_dot %7.2f GB/s  decode %7.2f GB/s (%5.2f ns "
           "/ 32 el.)  stream %6.2f GB/s  gemm_tile %7.2f eff GB/s %7.1f GOP/s\n",
           hs_type_str(t), hs_isa_str(isa), sh->name, (long)sh->rows, (long)sh->n, bytes / 1e6,
           vd_gbs, (double)w_row * best_dc / 1e9, 1e9 / (best_dc * (double)(sh->n / 32)),
           (double)w_row * best_st / 1e9, gm_gbs, gops);
    fflush(stdout);
    free(w);
    free(x);
    free(src);
    free(out);
}

int main(int argc, char **argv)
{
    static const enum hs_type types[] = {
        HS_TYPE_Q8_0, HS_TYPE_Q4_K, HS_TYPE_Q6_K, HS_TYPE_Q5_K, HS_TYPE_Q4_0, HS_TYPE_Q5_0,
        HS_TYPE_Q4_1, HS_TYPE_Q5_1, HS_TYPE_F16,  HS_TYPE_BF16, HS_TYPE_F32,
    };
    const enum hs_isa best = hs__cpu_detect_isa();
    printf("best ISA: %s, single thread, %d activation rows for gemm_tile\n", hs_isa_str(best),
           N_COLS);
    for (size_t ti = 0; ti < HS_ARRAY_LEN(types); ti++) {
        const enum hs_type t = types[ti];
        if (argc > 1) {
            int wanted = 0;
            for (int a = 1; a < argc; a++) {
                wanted |= strcmp(argv[a], hs_type_str(t)) == 0;
            }
            if (!wanted) {
                continue;
            }
        }
        const int kq = hs_type_traits(t)->blck_size == HS_QK_K;
        const struct shape shapes[] = {
            {kq ? "ffn_down" : "ffn_up", kq ? 576 : 1536, kq ? 1536 : 576},
            {"output", 49152, kq ? 768 : 576},
        };
        for (int isa = (int)best; isa >= 0; isa--) {
            for (size_t si = 0; si < HS_ARRAY_LEN(shapes); si++) {
                bench_one(t, (enum hs_isa)isa, &shapes[si]);
            }
        }
    }
    return 0;
}
