/* CPU kernels for weight types: conversion, quantization and dot products, with scalar, AVX2
 * and AVX-512 paths picked at run time from the CPU's features. Internal to backends/ (and
 * tests, and model/'s writer which quantizes weights).
 *
 * Dot products take the weight row in its own type and the activation row already converted
 * to the weight type's vec_dot_type (as ggml does): F32 -> F32, F16 -> F16, BF16 -> BF16,
 * Q8_0, Q4_0 and Q5_0 -> Q8_0, Q4_1 and Q5_1 -> Q8_1, Q4_K / Q5_K / Q6_K -> Q8_K. Row lengths
 * are multiples of the block size. Thread: any; kernels keep no state. */
#ifndef HS_BACKENDS_CPU_QUANTS_H
#define HS_BACKENDS_CPU_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

enum hs_isa {
    HS_ISA_SCALAR,
    HS_ISA_AVX2,   /* AVX2 + FMA + F16C */
    HS_ISA_AVX512, /* AVX-512 F/BW/VL/DQ (+ VNNI where present) */
    HS_ISA_COUNT,
};
const char *hs_isa_str(enum hs_isa isa);

/* Best ISA this CPU supports, capped by the environment's HS_CPU_ISA (scalar, avx2 or avx512;
 * read once, at the first call) so that the lower paths can run where a higher one exists: e.g.
 * HS_CPU_ISA=avx2 runs the AVX2 kernels on an AVX-512 CPU. An unknown value is ignored with a
 * warning. */
enum hs_isa hs__cpu_detect_isa(void);

/* Whether this CPU has AVX512_VNNI (whatever HS_CPU_ISA says): HS_ISA_AVX512's kernels are then
 * the VNNI build. */
bool hs__cpu_has_avx512vnni(void);

/* Whether this CPU has AVX-VNNI (CPUID leaf 7.1 EAX bit 4: Alder Lake, Zen 5) and the environment's
 * HS_CPU_AVXVNNI is not 0 (read once): HS_ISA_AVX2's Q5_0 decode kernel is then the AVX-VNNI build
 * (repack.h), and its Q8_0 and Q5_0 tables have the group form (gemm-group-avxvnni.c), same bits.
 * HS_CPU_AVXVNNI=0 holds the AVX2 path to what a CPU without it (Haswell to Zen 3) runs. */
bool hs__cpu_has_avxvnni(void);

/* s[j * bs + i] = dot(w row i, x row j) for i < nr, j < nc (nr, nc in 1..4, else HS_ASSERT);
 * n elements per row; w_stride and x_stride are the byte distances between consecutive rows.
 * The prompt-processing kernel: each weight block is decoded once for all nc activation rows. */
typedef void (*hs_gemm_tile_fn)(int64_t n, float *s, size_t bs, const void *w, size_t w_stride,
                                const void *x, size_t x_stride, int nr, int nc);

/* s[i] = dot(w row i, x) for i < nr (any nr >= 0): one activation row x against nr weight rows,
 * w_stride bytes apart. The decode kernel; bit-identical to vec_dot row by row. */
typedef void (*hs_gemv_fn)(int64_t n, float *s, const void *w, size_t w_stride, const void *x,
                           int64_t nr);

struct hs_quant_kernels {
    enum hs_type type;         /* weight type */
    enum hs_type vec_dot_type; /* what activations are converted to */
    /* float -> vec_dot_type, n elements (the activation quantizer; fast). */
    void (*from_float)(const float *x, void *y, int64_t n);
    /* weight type -> float, n elements. */
    void (*to_float)(const void *x, float *y, int64_t n);
    /* *s = dot(w, x), one row each. */
    void (*vec_dot)(int64_t n, float *s, const void *w, const void *x);
    /* nr x nc block of dot products; may be NULL (callers loop over vec_dot). */
    hs_gemm_tile_fn gemm_tile;
    /* One activation row against many weight rows (decode); NULL where the type has none
     * (callers use gemm_tile with nc == 1). */
    hs_gemv_fn gemv;
    /* Optional, for products of 2 or more activation rows (from_float_split with split_weights
     * and gemm_tile_split, or with gemm_tile_xsplit, or with all four): the split form,
     * a row of n elements as n int8 values in 32-byte aligned blocks of 32, then its n / 32
     * block scales as floats, zeros after them up to a multiple of 8 floats (so that the tile
     * reads 8 scales a vector; hs_quant_split_row_size bytes). from_float_split makes it of
     * activations (vec_dot_type's values and scales), split_weights of n_rows weight rows ws
     * bytes apart (into rows ds bytes apart, 32-byte aligned), and gemm_tile_split is gemm_tile
     * on both in that form, with gemm_tile's bits. */
    void (*from_float_split)(const float *x, void *y, int64_t n);
    void (*split_weights)(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                          size_t ds);
    hs_gemm_tile_fn gemm_tile_split;
    /* XORed into every activation value of the split form: 0, or 0x80 where the tiles take the
     * activations as unsigned x + 128 (vpdpbusd's unsigned operand; the AVX-512 VNNI tiles). */
    uint8_t split_x_bias;
    /* gemm_tile on weights in the file's layout and activations in the split form
     * (from_float_split), with gemm_tile's bits: products of 2 or more rows that do not take
     * gemm_tile_split (none, or fewer rows than split_min_rows). */
    hs_gemm_tile_fn gemm_tile_xsplit;
    /* The fewest activation rows that go to gemm_tile_split (below, gemm_tile_xsplit, else
     * gemm_tile / gemv on the file layout; 0: 2), where converting each chunk of weight rows
     * costs more than it saves. */
    uint16_t split_min_rows;
    /* Optional, for products of group_min_rows or more activation rows, before the split form:
     * the group form. split_group makes n_rows weight rows (ws bytes apart) into groups of
     * group_rows rows ds bytes apart, group_block_bytes per block of 32 elements of a group
     * (rows past n_rows zeros); from_float_group makes an activation row of it
     * (hs_quant_group_x_size bytes); gemm_group gives s[c * bs + i] = dot(w row i, x row c) for
     * rows i < nr (1..group_rows) of one group g and nc >= 1 activation rows xs bytes apart,
     * with gemm_tile's bits. */
    void (*split_group)(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst, size_t ds);
    void (*from_float_group)(const float *x, void *y, int64_t n);
    void (*gemm_group)(int64_t n, float *s, size_t bs, const void *g, const void *x, size_t xs,
                       int nr, int nc);
    uint16_t group_block_bytes;
    uint16_t group_min_rows;
    uint8_t group_rows; /* 16 (AVX-512) or 8 (AVX-VNNI) */
};

/* Bytes of one activation row of n elements in the group form (from_float_group): n int8
 * values, the n / 32 block scales as floats (zeros up to a multiple of 8), 8 int32 per block. */
static inline size_t hs_quant_group_x_size(int64_t n)
{
    return (size_t)n + (size_t)((n / 32 + 7) / 8 * 8) * sizeof(float) +
           (size_t)(n / 32) * 8 * sizeof(int32_t);
}

/* Bytes of one row of n elements in the split form (hs_quant_kernels.from_float_split). */
static inline size_t hs_quant_split_row_size(int64_t n)
{
    return (size_t)n + (size_t)((n / 32 + 7) / 8 * 8) * sizeof(float);
}

/* Kernels for weight type t on the given ISA (HS_ISA_COUNT: the detected best; an ISA the CPU
 * lacks also gives the best it has, so callers may ask for any). HS_ISA_AVX512 uses the VNNI
 * build where the CPU has AVX512_VNNI. Types without their own SIMD kernel on an ISA get the
 * next lower ISA's (AVX-512: BF16 runs the AVX2 code). NULL when t is not a
 * weight type computed with (Q8_1 and Q8_K included: activation types only). Returned tables
 * are static; every slot but gemv is non-NULL. Results of vec_dot and of gemm_tile for the same
 * rows are bit-identical within one table, whatever the number of activation rows: a row's bits
 * never depend on the rows batched beside it. For Q4_K that is ggml's gemv order also where
 * ggml's repacked gemm of 4 activation rows sums in another; HS_CPU_GEMM_ORDER=ggml selects
 * that order for Q4_K's 4-row tiles on AVX2 and AVX-512 (prompt logits then match llama.cpp's
 * bit for bit, at the cost of batch invariance). The AVX2 and AVX-512 tables give the same
 * bits as each other, which for F32, F16, Q8_0, Q5_0, Q4_1, Q5_1, Q4_K and Q6_K are llama.cpp's
 * on AVX-512 CPUs, and for Q4_0 those of the repacked 8-row kernels llama.cpp runs for Q4_0
 * matmuls on AVX2 and AVX-512 CPUs (one fma per block of the exact integer dot). */
const struct hs_quant_kernels *hs__cpu_kernels(enum hs_type t, enum hs_isa isa);

/* Reference quantization of a weight row (float -> t; t any supported type, including Q8_1 and
 * Q8_K). Used by the GGUF writer and tests; not on the hot path. Q8_0, Q8_1 and Q8_K round
 * exactly as the scalar activation quantizers (from_float) do (Q8_0 / Q8_1 as ggml's reference;
 * the AVX2 and AVX-512 ones follow ggml's x86 quantize_row_q8_0 / _q8_1 instead); Q4_0, Q5_0,
 * Q4_1 and Q5_1 follow ggml's reference, byte for byte; Q4_K / Q5_K fit a scale and min per 32
 * by a small search with a least-squares refit; Q6_K as llama-quantize without an importance
 * matrix, byte for byte. Aborts (HS_ASSERT) for other types: the caller checks the type first. */
void hs__quantize_row_ref(enum hs_type t, const float *x, void *y, int64_t n);

/* Reference dequantization (scalar, any supported type, Q8_1 and Q8_K included). */
void hs__dequantize_row_ref(enum hs_type t, const void *x, float *y, int64_t n);

/* The n % 64 tails of ggml's ggml_vec_dot_f32 / _f16 (which the AVX2 and AVX-512 F32 / F16
 * kernels reproduce): F32 keeps adding rounded products in float (its leftover loop, not
 * contracted: checked against llama.cpp's outputs), F16 adds each f32 product in double. red is
 * the vector part's sum; elements i .. n - 1 remain. */
static inline float quant_dot_tail_f32(float red, const void *w, const void *x, int64_t i,
                                       int64_t n)
{
    const float *wf = w, *xf = x;
    float sum = red;
    for (; i < n; i++) {
        const float p = wf[i] * xf[i];
        sum += p;
    }
    return sum;
}

static inline float quant_dot_tail_f16(float red, const void *w, const void *x, int64_t i,
                                       int64_t n)
{
    const uint16_t *wh = w, *xh = x;
    double sum = (double)red;
    for (; i < n; i++) {
        const float p = hs_fp16_to_fp32(wh[i]) * hs_fp16_to_fp32(xh[i]);
        sum += (double)p;
    }
    return (float)sum;
}

/* ---- Per-ISA entry points (quants-avx2.c, float-avx2.c, quants-avx512.c): the weight-type
 * kernels for quants.c's tables, the float ones (rope, mad, SwiGLU, attention) for cpu.c and
 * attention.c. The _avx512 kernels come in two builds: plain AVX-512 BW, and _avx512vnni
 * which also needs AVX512_VNNI (vpdpbusd / vpdpwssd); hs__cpu_kernels picks by the CPU's
 * features. ---- */
#define HS__QUANT_DOT_DECL(t, isa)                                                                 \
    void hs__vec_dot_##t##_##isa(int64_t n, float *s, const void *w, const void *x);               \
    void hs__gemm_tile_##t##_##isa(int64_t n, float *s, size_t bs, const void *w, size_t w_stride, \
                                   const void *x, size_t x_stride, int nr, int nc)

HS__QUANT_DOT_DECL(f32, avx2);
HS__QUANT_DOT_DECL(f16, avx2);
HS__QUANT_DOT_DECL(bf16, avx2);
HS__QUANT_DOT_DECL(q8_0, avx2);
HS__QUANT_DOT_DECL(q4_0, avx2);
HS__QUANT_DOT_DECL(q5_0, avx2); /* Q4_0, Q5_0, Q4_1, Q5_1: also the AVX-512 tables' */
HS__QUANT_DOT_DECL(q4_1, avx2);
HS__QUANT_DOT_DECL(q5_1, avx2);
HS__QUANT_DOT_DECL(q4_k, avx2);
HS__QUANT_DOT_DECL(q4_k_ggml, avx2); /* HS_CPU_GEMM_ORDER=ggml */
HS__QUANT_DOT_DECL(q5_k, avx2);
HS__QUANT_DOT_DECL(q6_k, avx2);
void hs__gemv_q8_0_avx2(int64_t n, float *s, const void *w, size_t w_stride, const void *x,
                        int64_t nr);
void hs__from_float_q8_0s_avx2(const float *x, void *y, int64_t n);
void hs__split_rows_q8_0_avx2(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                              size_t ds);
void hs__split_rows_q5_0_avx2(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                              size_t ds);
void hs__gemm_tile_q8s_avx2(int64_t n, float *s, size_t bs, const void *w, size_t w_stride,
                            const void *x, size_t x_stride, int nr, int nc);
void hs__from_float_q8_0s_avx512vnni(const float *x, void *y, int64_t n);
void hs__gemm_tile_q8s_avx512vnni(int64_t n, float *s, size_t bs, const void *w, size_t w_stride,
                                  const void *x, size_t x_stride, int nr, int nc);
void hs__gemm_tile_q8x_avx512vnni(int64_t n, float *s, size_t bs, const void *w, size_t w_stride,
                                  const void *x, size_t x_stride, int nr, int nc);
/* The group form on AVX-512 VNNI (gemm-group-avx512.c; hs_quant_kernels.gemm_group): Q8_0 and
 * Q5_0 weights, Q8_0 activations. */
#define HS__Q8_0G_BLOCK_BYTES 576
void hs__split_group_q8_0_avx512vnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                     size_t ds);
void hs__split_group_q5_0_avx512vnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                     size_t ds);
void hs__from_float_q8_0g_avx512vnni(const float *x, void *y, int64_t n);
void hs__gemm_group_q8_0_avx512vnni(int64_t n, float *s, size_t bs, const void *g, const void *x,
                                    size_t xs, int nr, int nc);
/* The group form on AVX2 with AVX-VNNI (gemm-group-avxvnni.c): groups of 8 rows, the AVX-512
 * one's activation form. */
#define HS__Q8_0G8_BLOCK_BYTES 288
void hs__split_group_q8_0_avxvnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                  size_t ds);
void hs__split_group_q5_0_avxvnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                  size_t ds);
void hs__from_float_q8_0g_avxvnni(const float *x, void *y, int64_t n);
void hs__gemm_group8_avxvnni(int64_t n, float *s, size_t bs, const void *g, const void *x,
                             size_t xs, int nr, int nc);
void hs__gemv_q8_0_avx512(int64_t n, float *s, const void *w, size_t w_stride, const void *x,
                        int64_t nr);
void hs__gemv_q8_0_avx512vnni(int64_t n, float *s, const void *w, size_t w_stride, const void *x,
                        int64_t nr);
#define HS__GEMV_DECL(t, isa)                                                                      \
    void hs__gemv_##t##_##isa(int64_t n, float *s, const void *w, size_t w_stride, const void *x,  \
                              int64_t nr)
HS__GEMV_DECL(q4_0, avx512);
HS__GEMV_DECL(q4_0, avx512vnni);
HS__GEMV_DECL(q5_0, avx512);
HS__GEMV_DECL(q5_0, avx512vnni);
HS__GEMV_DECL(q4_k, avx512);
HS__GEMV_DECL(q4_k, avx512vnni);
HS__GEMV_DECL(q5_k, avx512);
HS__GEMV_DECL(q5_k, avx512vnni);
HS__GEMV_DECL(q6_k, avx512);
HS__GEMV_DECL(q6_k, avx512vnni);
void hs__gemv_q4_0_avx2(int64_t n, float *s, const void *w, size_t w_stride, const void *x,
                        int64_t nr);
void hs__gemv_q5_0_avx2(int64_t n, float *s, const void *w, size_t w_stride, const void *x,
                        int64_t nr);
HS__GEMV_DECL(q4_k, avx2);
HS__GEMV_DECL(q5_k, avx2);
HS__GEMV_DECL(q6_k, avx2);
void hs__from_float_f16_avx2(const float *x, void *y, int64_t n);
void hs__from_float_bf16_avx2(const float *x, void *y, int64_t n);
void hs__from_float_q8_0_avx2(const float *x, void *y, int64_t n);
void hs__from_float_q8_1_avx2(const float *x, void *y, int64_t n);
void hs__from_float_q8_k_avx2(const float *x, void *y, int64_t n);
void hs__to_float_f16_avx2(const void *x, float *y, int64_t n);
void hs__to_float_bf16_avx2(const void *x, float *y, int64_t n);
/* Rotate one head's first n_rot dims by a row's cos / sin in the layouts rope_fn (cpu.c) makes:
 * NORM pairs adjacent, NEOX halves; the same bits as its portable loops. */
void hs__rope_norm_f32_avx2(float *v, const float *cs, int n_rot);
void hs__rope_neox_f32_avx2(float *v, const float *cs, int n_rot);
/* y[i] = fma(x[i], a, y[i]), one rounding (ggml_vec_mad_f32 / _f16 with FMA). */
void hs__mad_f32_avx2(int64_t n, float *y, const float *x, float a);
/* hs__swiglu_f32_avx512's results (ggml's AVX-512 vector expf) on AVX2 + FMA CPUs. */
void hs__swiglu_f32_avx2(int64_t n, float *y, const float *g, const float *u);
/* y[i] = expf(x[i]) with the bits of glibc's (and musl's) expf, 8 lanes at a time (the few
 * inputs past its fast path go to libm); hs__expf_libm_check says whether this process's libm
 * gives the same bits (on a sample of a million inputs), as it must before the first is used.
 * x and y must not overlap. */
void hs__expf_libm_avx2(int64_t n, float *y, const float *x);
bool hs__expf_libm_check(void);
/* hs__attn_block_f32_avx512's results (same contract) on AVX2 + FMA CPUs. */
void hs__attn_block_f32_avx2(int64_t hd, int64_t nq, int64_t ldq, int64_t nk, float scale,
                             const float *qt, const float *k, const float *v, const int32_t *last,
                             float *m, float *l, float *acc, float *st);

HS__QUANT_DOT_DECL(f32, avx512);
HS__QUANT_DOT_DECL(f16, avx512);
HS__QUANT_DOT_DECL(q8_0, avx512);
HS__QUANT_DOT_DECL(q4_k, avx512);
HS__QUANT_DOT_DECL(q4_k_ggml, avx512);
HS__QUANT_DOT_DECL(q5_k, avx512);
HS__QUANT_DOT_DECL(q6_k, avx512);
HS__QUANT_DOT_DECL(q8_0, avx512vnni);
HS__QUANT_DOT_DECL(q4_k, avx512vnni);
HS__QUANT_DOT_DECL(q4_k_ggml, avx512vnni);
HS__QUANT_DOT_DECL(q5_k, avx512vnni);
HS__QUANT_DOT_DECL(q6_k, avx512vnni);
/* Q5_0 tiles (tiles-avx512.c): VNNI for 2 or more activation rows, the AVX2 tile otherwise;
 * the same bits as hs__gemm_tile_q5_0_avx2. */
void hs__gemm_tile_q5_0_avx512(int64_t n, float *s, size_t bs, const void *w, size_t w_stride,
                               const void *x, size_t x_stride, int nr, int nc);
/* Q4_K tiles (tiles-avx512.c): hs__gemm_tile_q4_k_avx512vnni for one activation row, the AVX2
 * tile (the same bits, faster) for more. */
void hs__gemm_tile_q4_k_pp_avx512vnni(int64_t n, float *s, size_t bs, const void *w,
                                      size_t w_stride, const void *x, size_t x_stride, int nr,
                                      int nc);
void hs__gemm_tile_q5_0_avx512vnni(int64_t n, float *s, size_t bs, const void *w, size_t w_stride,
                                   const void *x, size_t x_stride, int nr, int nc);
void hs__from_float_f16_avx512(const float *x, void *y, int64_t n);
void hs__from_float_q8_0_avx512(const float *x, void *y, int64_t n);
void hs__from_float_q8_k_avx512(const float *x, void *y, int64_t n);
void hs__to_float_f16_avx512(const void *x, float *y, int64_t n);
/* y[i] = silu(g[i]) * u[i] with ggml's AVX-512 vector expf (bit-identical to llama.cpp's
 * SwiGLU on AVX-512 CPUs); y may alias g or u. */
void hs__swiglu_f32_avx512(int64_t n, float *y, const float *g, const float *u);
/* One block of f32 flash attention (online softmax) for nq query vectors against nk <= 32 K/V
 * rows. qt [hd][ldq] holds the (unscaled) queries transposed, ldq = nq rounded up to 16 (padding
 * columns finite); k and v are [nk][hd] f32; last[i] (i < ldq) is the last block-relative
 * position query i sees (positions past it are masked; a query masked out of the whole block
 * keeps its state). m, l [ldq]: running maxima (-inf at first) and denominators; acc [nq][hd]:
 * running sums of p * v; st: scratch of 32 * ldq floats. ldq <= 64, hd a multiple of 16; qt and
 * st 64-byte aligned. Exponentials use ggml's vector expf. */
void hs__attn_block_f32_avx512(int64_t hd, int64_t nq, int64_t ldq, int64_t nk, float scale,
                               const float *qt, const float *k, const float *v, const int32_t *last,
                               float *m, float *l, float *acc, float *st);

#endif
