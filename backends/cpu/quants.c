/* Weight-type kernels: scalar paths, reference quantizers, and the per-ISA dispatch tables.
 * The scalar kernels are the portable fallback and the model the SIMD files follow. */
#include "backends/cpu/quants.h"
#include "common/log.h"

#include <math.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================================================
 * Small helpers
 * ============================================================================================= */

/* Round to nearest, ties to even, via the float adder (ggml's nearest_int); |x| < 2^22. */
static inline int nearest_int(float x)
{
    float v = x + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof(i));
    return (i & 0x007fffff) - 0x00400000;
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* ================================================================================================
 * Activation quantizers (from_float) and conversions
 * ============================================================================================= */

static void from_float_f32(const float *x, void *y, int64_t n)
{
    memcpy(y, x, (size_t)n * sizeof(float));
}

static void from_float_f16(const float *x, void *y, int64_t n)
{
    uint16_t *o = y;
    for (int64_t i = 0; i < n; i++) {
        o[i] = hs_fp32_to_fp16(x[i]);
    }
}

static void from_float_bf16(const float *x, void *y, int64_t n)
{
    uint16_t *o = y;
    for (int64_t i = 0; i < n; i++) {
        o[i] = hs_fp32_to_bf16(x[i]);
    }
}

/* ggml's reference rounding of one block of 32: d = amax / 127, q = roundf(x / d) (ties away
 * from zero). Returns d before its rounding to half. */
static float q8_ref_block(const float *xb, int8_t *qs)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        amax = fmaxf(amax, fabsf(xb[j]));
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) {
        qs[j] = (int8_t)roundf(xb[j] * id);
    }
    return d;
}

static void from_float_q8_0(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        y[b].d = hs_fp32_to_fp16(q8_ref_block(x + b * 32, y[b].qs));
    }
}

/* ggml's quantize_row_q8_1_ref: Q8_0's rounding, plus s = d * (the sum of the quants), d the
 * float scale before its rounding to half. */
static void from_float_q8_1(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = q8_ref_block(x + b * 32, y[b].qs);
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            sum += y[b].qs[j];
        }
        y[b].d = hs_fp32_to_fp16(d);
        y[b].s = hs_fp32_to_fp16((float)sum * d);
    }
}

/* ggml's quantize_row_q8_K: the signed value of largest magnitude (first one wins) maps to
 * -127; nearest_int rounding; bsums are the sums of each 16 quants. */
static void from_float_q8_k(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_k *y = vy;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float *xb = x + b * HS_QK_K;
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < HS_QK_K; j++) {
            const float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof(y[b]));
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < HS_QK_K; j++) {
            const int v = nearest_int(iscale * xb[j]);
            y[b].qs[j] = (int8_t)HS_MIN(127, v);
        }
        for (int g = 0; g < HS_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) {
                sum += y[b].qs[g * 16 + j];
            }
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ================================================================================================
 * Dequantization (to_float)
 * ============================================================================================= */

static void to_float_f32(const void *x, float *y, int64_t n)
{
    memcpy(y, x, (size_t)n * sizeof(float));
}

static void to_float_f16(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) {
        y[i] = hs_fp16_to_fp32(x[i]);
    }
}

static void to_float_bf16(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) {
        y[i] = hs_bf16_to_fp32(x[i]);
    }
}

/* Q8_0 and Q8_1 blocks: a half d first, the 32 quants at qs_off of a bsize-byte block. */
static void to_float_q8(const uint8_t *x, size_t bsize, size_t qs_off, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *blk = x + (size_t)b * bsize;
        uint16_t dh;
        memcpy(&dh, blk, sizeof(dh));
        const float d = hs_fp16_to_fp32(dh);
        for (int j = 0; j < 32; j++) {
            y[b * 32 + j] = d * (float)(int8_t)blk[qs_off + (size_t)j];
        }
    }
}

static void to_float_q8_0(const void *x, float *y, int64_t n)
{
    to_float_q8(x, sizeof(struct hs_block_q8_0), offsetof(struct hs_block_q8_0, qs), y, n);
}

static void to_float_q4_0(const void *vx, float *y, int64_t n)
{
    const struct hs_block_q4_0 *x = vx;
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = hs_fp16_to_fp32(x[b].d);
        for (int j = 0; j < 16; j++) {
            y[b * 32 + j] = d * (float)((x[b].qs[j] & 0xF) - 8);
            y[b * 32 + j + 16] = d * (float)((x[b].qs[j] >> 4) - 8);
        }
    }
}

/* Element j (0..31) of a Q5_0 / Q5_1 block's unsigned 5-bit quants (qh: the fifth bits). */
static inline int q5_bits(const uint8_t *qh4, const uint8_t *qs, int j)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof(qh));
    const int lo = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
    return lo | (int)((qh >> j) & 1) << 4;
}

/* Q5_0 element j of a block, as a signed value in -16..15. */
static inline int q5_0_value(const struct hs_block_q5_0 *b, int j)
{
    return q5_bits(b->qh, b->qs, j) - 16;
}

/* Element j of a Q4_1 (five 0) or Q5_1 (five 1) block's unsigned quants. */
static inline int q41_51_bits(const void *blk, int five, int j)
{
    if (five) {
        const struct hs_block_q5_1 *b = blk;
        return q5_bits(b->qh, b->qs, j);
    }
    const struct hs_block_q4_1 *b = blk;
    return j < 16 ? b->qs[j] & 0xF : b->qs[j - 16] >> 4;
}

/* Q4_1 and Q5_1 share their first fields: half d, half m. */
static void to_float_q41_51(const void *vx, float *y, int64_t n, int five)
{
    const size_t bsize = five ? sizeof(struct hs_block_q5_1) : sizeof(struct hs_block_q4_1);
    for (int64_t b = 0; b < n / 32; b++) {
        const struct hs_block_q4_1 *x =
            (const struct hs_block_q4_1 *)(const void *)((const uint8_t *)vx + (size_t)b * bsize);
        const float d = hs_fp16_to_fp32(x->d), m = hs_fp16_to_fp32(x->m);
        for (int j = 0; j < 32; j++) {
            y[b * 32 + j] = (float)q41_51_bits(x, five, j) * d + m;
        }
    }
}

static void to_float_q4_1(const void *x, float *y, int64_t n)
{
    to_float_q41_51(x, y, n, 0);
}

static void to_float_q5_1(const void *x, float *y, int64_t n)
{
    to_float_q41_51(x, y, n, 1);
}

static void to_float_q8_1(const void *x, float *y, int64_t n)
{
    to_float_q8(x, sizeof(struct hs_block_q8_1), offsetof(struct hs_block_q8_1, qs), y, n);
}

static void to_float_q5_0(const void *vx, float *y, int64_t n)
{
    const struct hs_block_q5_0 *x = vx;
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = hs_fp16_to_fp32(x[b].d);
        for (int j = 0; j < 32; j++) {
            y[b * 32 + j] = d * (float)q5_0_value(&x[b], j);
        }
    }
}

static void to_float_q8_k(const void *vx, float *y, int64_t n)
{
    const struct hs_block_q8_k *x = vx;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        for (int j = 0; j < HS_QK_K; j++) {
            y[b * HS_QK_K + j] = x[b].d * (float)x[b].qs[j];
        }
    }
}

static void to_float_q4_k(const void *vx, float *y, int64_t n)
{
    const struct hs_block_q4_k *x = vx;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float d = hs_fp16_to_fp32(x[b].d);
        const float dmin = hs_fp16_to_fp32(x[b].dmin);
        float *yb = y + b * HS_QK_K;
        for (int k = 0; k < 4; k++) {
            uint8_t sc0, m0, sc1, m1;
            scale_min_k4(2 * k, x[b].scales, &sc0, &m0);
            scale_min_k4(2 * k + 1, x[b].scales, &sc1, &m1);
            const uint8_t *q = x[b].qs + 32 * k;
            for (int l = 0; l < 32; l++) {
                yb[64 * k + l] = d * sc0 * (float)(q[l] & 0xF) - dmin * m0;
                yb[64 * k + 32 + l] = d * sc1 * (float)(q[l] >> 4) - dmin * m1;
            }
        }
    }
}

static void to_float_q5_k(const void *vx, float *y, int64_t n)
{
    const struct hs_block_q5_k *x = vx;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float d = hs_fp16_to_fp32(x[b].d);
        const float dmin = hs_fp16_to_fp32(x[b].dmin);
        float *yb = y + b * HS_QK_K;
        for (int k = 0; k < 4; k++) {
            uint8_t sc0, m0, sc1, m1;
            scale_min_k4(2 * k, x[b].scales, &sc0, &m0);
            scale_min_k4(2 * k + 1, x[b].scales, &sc1, &m1);
            const uint8_t *q = x[b].qs + 32 * k;
            for (int l = 0; l < 32; l++) {
                const int h0 = (x[b].qh[l] >> (2 * k)) & 1;
                const int h1 = (x[b].qh[l] >> (2 * k + 1)) & 1;
                yb[64 * k + l] = d * sc0 * (float)((q[l] & 0xF) | (h0 << 4)) - dmin * m0;
                yb[64 * k + 32 + l] = d * sc1 * (float)((q[l] >> 4) | (h1 << 4)) - dmin * m1;
            }
        }
    }
}

/* The 256 quants of a Q6_K super-block as signed values (-32..31), in element order. Per half
 * of 128: ql[l] low / high nibble -> elements l / l + 64, ql[l + 32] -> l + 32 / l + 96; qh[l]
 * gives their top two bits at shifts 0, 4 (for ql[l]) and 2, 6 (for ql[l + 32]). */
static void q6_k_decode(const struct hs_block_q6_k *x, int8_t *q)
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = x->ql + 64 * h, *qh = x->qh + 32 * h;
        int8_t *o = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

static void to_float_q6_k(const void *vx, float *y, int64_t n)
{
    const struct hs_block_q6_k *x = vx;
    int8_t q[HS_QK_K];
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float d = hs_fp16_to_fp32(x[b].d);
        q6_k_decode(&x[b], q);
        for (int e = 0; e < HS_QK_K; e++) {
            y[b * HS_QK_K + e] = d * x[b].scales[e / 16] * (float)q[e];
        }
    }
}

/* ================================================================================================
 * Scalar dot products
 * ============================================================================================= */

static void vec_dot_f32(int64_t n, float *s, const void *vw, const void *vx)
{
    const float *w = vw, *x = vx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += (double)w[i] * x[i];
    }
    *s = (float)sum;
}

static void vec_dot_f16(int64_t n, float *s, const void *vw, const void *vx)
{
    const uint16_t *w = vw, *x = vx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += (double)hs_fp16_to_fp32(w[i]) * hs_fp16_to_fp32(x[i]);
    }
    *s = (float)sum;
}

static void vec_dot_bf16(int64_t n, float *s, const void *vw, const void *vx)
{
    const uint16_t *w = vw, *x = vx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += (double)hs_bf16_to_fp32(w[i]) * hs_bf16_to_fp32(x[i]);
    }
    *s = (float)sum;
}

static void vec_dot_q8_0(int64_t n, float *s, const void *vw, const void *vx)
{
    const struct hs_block_q8_0 *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int isum = 0;
        for (int j = 0; j < 32; j++) {
            isum += w[b].qs[j] * x[b].qs[j];
        }
        sum += hs_fp16_to_fp32(w[b].d) * hs_fp16_to_fp32(x[b].d) * (float)isum;
    }
    *s = sum;
}

static void vec_dot_q4_0(int64_t n, float *s, const void *vw, const void *vx)
{
    const struct hs_block_q4_0 *w = vw;
    const struct hs_block_q8_0 *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ((w[b].qs[j] & 0xF) - 8) * x[b].qs[j];
            isum += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + 16];
        }
        /* llama.cpp's repacked Q4_0 order, as the AVX2 kernel (d_w * d_x is exact). */
        sum = fmaf((float)isum, hs_fp16_to_fp32(w[b].d) * hs_fp16_to_fp32(x[b].d), sum);
    }
    *s = sum;
}

static void vec_dot_q5_0(int64_t n, float *s, const void *vw, const void *vx)
{
    const struct hs_block_q5_0 *w = vw;
    const struct hs_block_q8_0 *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        int isum = 0;
        for (int j = 0; j < 32; j++) {
            isum += q5_0_value(&w[b], j) * x[b].qs[j];
        }
        sum += hs_fp16_to_fp32(w[b].d) * hs_fp16_to_fp32(x[b].d) * (float)isum;
    }
    *s = sum;
}

/* Q4_1 / Q5_1 against Q8_1: d_w d_x sum(q x) + m_w s_x per block. */
static void vec_dot_q41_51(int64_t n, float *s, const void *vw, const void *vx, int five)
{
    const size_t bsize = five ? sizeof(struct hs_block_q5_1) : sizeof(struct hs_block_q4_1);
    const struct hs_block_q8_1 *x = vx;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        const struct hs_block_q4_1 *w =
            (const struct hs_block_q4_1 *)(const void *)((const uint8_t *)vw + (size_t)b * bsize);
        int isum = 0;
        for (int j = 0; j < 32; j++) {
            isum += q41_51_bits(w, five, j) * x[b].qs[j];
        }
        sum += hs_fp16_to_fp32(w->d) * hs_fp16_to_fp32(x[b].d) * (float)isum +
               hs_fp16_to_fp32(w->m) * hs_fp16_to_fp32(x[b].s);
    }
    *s = sum;
}

static void vec_dot_q4_1(int64_t n, float *s, const void *w, const void *x)
{
    vec_dot_q41_51(n, s, w, x, 0);
}

static void vec_dot_q5_1(int64_t n, float *s, const void *w, const void *x)
{
    vec_dot_q41_51(n, s, w, x, 1);
}

/* Shared by Q4_K and Q5_K: sum over sub-blocks of scale * dot and min * bsum, in integers. */
static void vec_dot_q45_k(int64_t n, float *s, const void *vw, const void *vx, int five)
{
    const struct hs_block_q8_k *x = vx;
    const size_t wsize = five ? sizeof(struct hs_block_q5_k) : sizeof(struct hs_block_q4_k);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const uint8_t *wb = (const uint8_t *)vw + (size_t)b * wsize;
        const struct hs_block_q4_k *w4 = (const struct hs_block_q4_k *)(const void *)wb;
        const struct hs_block_q5_k *w5 = (const struct hs_block_q5_k *)(const void *)wb;
        const uint8_t *scales = five ? w5->scales : w4->scales;
        const uint8_t *qs = five ? w5->qs : w4->qs;
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            scale_min_k4(j, scales, &sc, &m);
            const int k = j / 2, shift = (j & 1) * 4;
            int32_t dot = 0;
            for (int l = 0; l < 32; l++) {
                int q = (qs[32 * k + l] >> shift) & 0xF;
                if (five) {
                    q |= ((w5->qh[l] >> j) & 1) << 4;
                }
                dot += q * x[b].qs[32 * j + l];
            }
            sumi += sc * dot;
            summ += m * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        }
        const float d = hs_fp16_to_fp32(five ? w5->d : w4->d);
        const float dmin = hs_fp16_to_fp32(five ? w5->dmin : w4->dmin);
        sum += x[b].d * (d * (float)sumi - dmin * (float)summ);
    }
    *s = sum;
}

static void vec_dot_q4_k(int64_t n, float *s, const void *w, const void *x)
{
    vec_dot_q45_k(n, s, w, x, 0);
}

static void vec_dot_q5_k(int64_t n, float *s, const void *w, const void *x)
{
    vec_dot_q45_k(n, s, w, x, 1);
}

static void vec_dot_q6_k(int64_t n, float *s, const void *vw, const void *vx)
{
    const struct hs_block_q6_k *w = vw;
    const struct hs_block_q8_k *x = vx;
    int8_t q[HS_QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        q6_k_decode(&w[b], q);
        int32_t sumi = 0;
        for (int g = 0; g < 16; g++) {
            int32_t dot = 0;
            for (int l = 0; l < 16; l++) {
                dot += q[16 * g + l] * x[b].qs[16 * g + l];
            }
            sumi += w[b].scales[g] * dot;
        }
        sum += hs_fp16_to_fp32(w[b].d) * x[b].d * (float)sumi;
    }
    *s = sum;
}

/* The scalar tile just loops; the SIMD files have the real register-blocked tiles. */
#define SCALAR_TILE(t)                                                                             \
    static void gemm_tile_##t(int64_t n, float *s, size_t bs, const void *w, size_t w_stride,      \
                              const void *x, size_t x_stride, int nr, int nc)                      \
    {                                                                                              \
        for (int j = 0; j < nc; j++) {                                                             \
            for (int i = 0; i < nr; i++) {                                                         \
                vec_dot_##t(n, &s[(size_t)j * bs + (size_t)i],                                     \
                            (const uint8_t *)w + (size_t)i * w_stride,                             \
                            (const uint8_t *)x + (size_t)j * x_stride);                            \
            }                                                                                      \
        }                                                                                          \
    }
SCALAR_TILE(f32)
SCALAR_TILE(f16)
SCALAR_TILE(bf16)
SCALAR_TILE(q8_0)
SCALAR_TILE(q4_0)
SCALAR_TILE(q5_0)
SCALAR_TILE(q4_1)
SCALAR_TILE(q5_1)
SCALAR_TILE(q4_k)
SCALAR_TILE(q5_k)
SCALAR_TILE(q6_k)

/* ================================================================================================
 * Reference weight quantizers
 * ============================================================================================= */

/* The first value of largest magnitude in x[0..n), with its sign (0 when all are 0). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

/* ggml's reference Q4_0 / Q5_0 quantizers: d = signed_absmax / -8 (-16), q = trunc(x / d + 8.5
 * (16.5)) clipped to 15 (31); x / d >= -8 (-16), so the truncation is a floor. Each x / d is
 * rounded to float before the add, as there. */
static void quantize_q4_0(const float *x, void *vy, int64_t n)
{
    struct hs_block_q4_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        const float d = signed_absmax(xb, 32) / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = hs_fp32_to_fp16(d);
        for (int j = 0; j < 16; j++) {
            const float x0 = xb[j] * id, x1 = xb[j + 16] * id;
            const int q0 = HS_MIN(15, (int)(x0 + 8.5f));
            const int q1 = HS_MIN(15, (int)(x1 + 8.5f));
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q5_0(const float *x, void *vy, int64_t n)
{
    struct hs_block_q5_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        const float d = signed_absmax(xb, 32) / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = hs_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const float x0 = xb[j] * id, x1 = xb[j + 16] * id;
            const int q0 = HS_MIN(31, (int)(x0 + 16.5f));
            const int q1 = HS_MIN(31, (int)(x1 + 16.5f));
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, sizeof(qh));
    }
}

/* ggml's reference Q4_1 / Q5_1 quantizers: d = (max - min) / (2^bits - 1), m = min,
 * q = trunc((x - min) / d + 0.5) (Q4_1 clipped to 15; Q5_1, as ggml, not clipped). */
static void quantize_q41_51(const float *x, void *vy, int64_t n, int five)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + b * 32;
        float lo = INFINITY, hi = -INFINITY;
        for (int j = 0; j < 32; j++) {
            lo = fminf(lo, xb[j]);
            hi = fmaxf(hi, xb[j]);
        }
        const float d = (hi - lo) / (five ? 31.0f : 15.0f);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t *qs;
        if (five) {
            struct hs_block_q5_1 *y = (struct hs_block_q5_1 *)vy + b;
            y->d = hs_fp32_to_fp16(d);
            y->m = hs_fp32_to_fp16(lo);
            qs = y->qs;
        } else {
            struct hs_block_q4_1 *y = (struct hs_block_q4_1 *)vy + b;
            y->d = hs_fp32_to_fp16(d);
            y->m = hs_fp32_to_fp16(lo);
            qs = y->qs;
        }
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const float x0 = (xb[j] - lo) * id, x1 = (xb[j + 16] - lo) * id;
            int q0 = (uint8_t)(x0 + 0.5f), q1 = (uint8_t)(x1 + 0.5f);
            if (!five) {
                q0 = HS_MIN(15, q0);
                q1 = HS_MIN(15, q1);
            }
            qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + 16);
        }
        if (five) {
            memcpy(((struct hs_block_q5_1 *)vy + b)->qh, &qh, sizeof(qh));
        }
    }
}

/* Fit value ~ scale * q - mn over one sub-block with q in 0..qmax, mn >= 0 (a min clipped at
 * zero), by a small search over the step followed by a least-squares refit. Writes q. */
static void fit_scale_min(const float *x, int len, int qmax, float *scale, float *mn, uint8_t *q)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < len; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    lo = fminf(lo, 0.0f);
    if (hi <= lo) {
        *scale = 0.0f;
        *mn = -lo;
        memset(q, 0, (size_t)len);
        return;
    }
    float best_err = INFINITY, best_s = (hi - lo) / (float)qmax, best_m = -lo;
    uint8_t tmp[64];
    for (int step = -4; step <= 8; step++) {
        const float iscale = ((float)qmax + 0.1f * (float)step) / (hi - lo);
        for (int i = 0; i < len; i++) {
            tmp[i] = (uint8_t)HS_MIN(qmax, HS_MAX(0, nearest_int(iscale * (x[i] - lo))));
        }
        /* Least squares for x = s * q + b, then clip b <= 0. */
        double sq = 0, sqq = 0, sx = 0, sqx = 0;
        for (int i = 0; i < len; i++) {
            sq += tmp[i];
            sqq += (double)tmp[i] * tmp[i];
            sx += x[i];
            sqx += (double)tmp[i] * x[i];
        }
        const double det = len * sqq - sq * sq;
        double s = det > 0 ? (len * sqx - sq * sx) / det : (double)(hi - lo) / qmax;
        double bb = det > 0 ? (sqq * sx - sq * sqx) / det : lo;
        if (bb > 0) {
            bb = 0;
            s = sqq > 0 ? sqx / sqq : 0;
        }
        if (s < 0) {
            continue;
        }
        double err = 0;
        for (int i = 0; i < len; i++) {
            const double e = s * tmp[i] + bb - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = (float)err;
            best_s = (float)s;
            best_m = (float)-bb;
        }
    }
    *scale = best_s;
    *mn = best_m;
    (void)q;
}

/* Q4_K (qmax 15) and Q5_K (qmax 31): per-sub-block fit, 6-bit scales and mins against the
 * super-block's d and dmin, then the quants again against the rounded scales. */
static void quantize_q45_k(const float *x, void *vy, int64_t n, int five)
{
    const int qmax = five ? 31 : 15;
    const size_t bsize = five ? sizeof(struct hs_block_q5_k) : sizeof(struct hs_block_q4_k);
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float *xb = x + b * HS_QK_K;
        uint8_t *out = (uint8_t *)vy + (size_t)b * bsize;
        float scales[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
        uint8_t L[HS_QK_K];
        for (int j = 0; j < 8; j++) {
            fit_scale_min(xb + 32 * j, 32, qmax, &scales[j], &mins[j], L + 32 * j);
            max_scale = fmaxf(max_scale, scales[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        const float d = max_scale / 63.0f, dmin = max_min / 63.0f;
        const uint16_t dh = hs_fp32_to_fp16(d), dminh = hs_fp32_to_fp16(dmin);
        const float df = hs_fp16_to_fp32(dh), dminf = hs_fp16_to_fp32(dminh);
        uint8_t sc[8], mq[8], packed[12] = {0};
        for (int j = 0; j < 8; j++) {
            sc[j] = (uint8_t)(df > 0 ? HS_MIN(63, HS_MAX(0, nearest_int(scales[j] / df))) : 0);
            mq[j] = (uint8_t)(dminf > 0 ? HS_MIN(63, HS_MAX(0, nearest_int(mins[j] / dminf))) : 0);
            if (j < 4) {
                packed[j] |= sc[j];
                packed[j + 4] |= mq[j];
            } else {
                packed[j + 4] = (uint8_t)((sc[j] & 0xF) | ((mq[j] & 0xF) << 4));
                packed[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
                packed[j] |= (uint8_t)((mq[j] >> 4) << 6);
            }
        }
        for (int j = 0; j < 8; j++) {
            const float ds = df * sc[j], dm = dminf * mq[j];
            for (int l = 0; l < 32; l++) {
                const int q = ds > 0 ? nearest_int((xb[32 * j + l] + dm) / ds) : 0;
                L[32 * j + l] = (uint8_t)HS_MIN(qmax, HS_MAX(0, q));
            }
        }
        uint8_t *qs, *qh = NULL;
        if (five) {
            struct hs_block_q5_k *y = (struct hs_block_q5_k *)(void *)out;
            y->d = dh;
            y->dmin = dminh;
            memcpy(y->scales, packed, 12);
            memset(y->qh, 0, sizeof(y->qh));
            qs = y->qs;
            qh = y->qh;
        } else {
            struct hs_block_q4_k *y = (struct hs_block_q4_k *)(void *)out;
            y->d = dh;
            y->dmin = dminh;
            memcpy(y->scales, packed, 12);
            qs = y->qs;
        }
        for (int k = 0; k < 4; k++) {
            for (int l = 0; l < 32; l++) {
                const uint8_t a = L[64 * k + l], c = L[64 * k + 32 + l];
                qs[32 * k + l] = (uint8_t)((a & 0xF) | ((c & 0xF) << 4));
                if (qh) {
                    qh[l] |= (uint8_t)(((a >> 4) << (2 * k)) | ((c >> 4) << (2 * k + 1)));
                }
            }
        }
    }
}

/* The scale of one group of n values quantized symmetrically to [-nmax, nmax): start from the
 * group's largest magnitude, then try 18 nearby starting scales, each refitted by weighted least
 * squares (weights x^2), keeping the best fit. L gets the quants offset by nmax. The arithmetic
 * (float sums in element order) is the one llama-quantize uses, so that our Q6_K weights are
 * byte for byte its own. */
static float q6_group_scale(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float scale = 0.0f, best = 0.0f;
    for (int is = 0; is <= 18; is++) {
        /* is 0: the plain start, which is kept unconditionally; then -9..-1, 1..9 tenths */
        const int step = is == 0 ? 0 : is <= 9 ? is - 10 : is - 9;
        const float iscale = -((float)nmax + 0.1f * (float)step) / max;
        float sumlx = 0.0f, suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = HS_MAX(-nmax, HS_MIN(nmax - 1, nearest_int(iscale * x[i])));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (is == 0 || (suml2 > 0.0f && sumlx * sumlx > best * suml2)) {
            for (int i = 0; i < n; i++) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + HS_MAX(-nmax, HS_MIN(nmax - 1, l)));
            }
            scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q6_K: a scale per 16 (q6_group_scale), the 16 scales as int8 against the super-block's d, then
 * every value re-rounded against its final scale; as llama-quantize without an importance
 * matrix. */
static void quantize_q6_k(const float *x, void *vy, int64_t n)
{
    struct hs_block_q6_k *y = vy;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float *xb = x + b * HS_QK_K;
        int8_t L[HS_QK_K];
        float scales[16], max_scale = 0.0f, amax_scale = 0.0f;
        for (int g = 0; g < 16; g++) {
            scales[g] = q6_group_scale(16, 32, xb + 16 * g, L + 16 * g);
            if (fabsf(scales[g]) > amax_scale) {
                amax_scale = fabsf(scales[g]);
                max_scale = scales[g];
            }
        }
        memset(&y[b], 0, sizeof(y[b]));
        if (amax_scale < 1e-15f) {
            continue;
        }
        const float iscale = -128.0f / max_scale;
        y[b].d = hs_fp32_to_fp16(1.0f / iscale);
        for (int g = 0; g < 16; g++) {
            y[b].scales[g] = (int8_t)HS_MIN(127, nearest_int(iscale * scales[g]));
        }
        for (int g = 0; g < 16; g++) {
            const float ds = hs_fp16_to_fp32(y[b].d) * (float)y[b].scales[g];
            if (ds == 0.0f) {
                continue; /* the group keeps its first fit's quants */
            }
            for (int l = 0; l < 16; l++) {
                const int q = nearest_int(xb[16 * g + l] / ds);
                L[16 * g + l] = (int8_t)(32 + HS_MAX(-32, HS_MIN(31, q)));
            }
        }
        for (int e = 0; e < HS_QK_K; e++) {
            const int u = L[e];
            const int half = e / 128, r = e % 128, quad = r / 32, l = r % 32;
            uint8_t *ql = &y[b].ql[64 * half + 32 * (quad & 1) + l];
            *ql |= (uint8_t)(quad < 2 ? (u & 0xF) : ((u & 0xF) << 4));
            y[b].qh[32 * half + l] |= (uint8_t)((u >> 4) << (2 * quad));
        }
    }
}

static void quantize_q4_k(const float *x, void *y, int64_t n)
{
    quantize_q45_k(x, y, n, 0);
}

static void quantize_q5_k(const float *x, void *y, int64_t n)
{
    quantize_q45_k(x, y, n, 1);
}

/* ================================================================================================
 * Dispatch
 * ============================================================================================= */

const char *hs_isa_str(enum hs_isa isa)
{
    switch (isa) {
    case HS_ISA_SCALAR:
        return "scalar";
    case HS_ISA_AVX2:
        return "avx2";
    case HS_ISA_AVX512:
        return "avx512";
    case HS_ISA_COUNT:
        break;
    }
    return "unknown";
}

#if defined(__x86_64__) || defined(__i386__)
#define HS_X86 1
#include <cpuid.h>
#else
#define HS_X86 0
#endif

#if HS_X86
/* F16C (CPUID leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports does not know it. */
static bool cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}
#endif

static enum hs_isa detect_isa_uncached(void)
{
#if HS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()) {
        return HS_ISA_AVX512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()) {
        return HS_ISA_AVX2;
    }
#endif
    return HS_ISA_SCALAR;
}

/* cpuid traps to the hypervisor in a VM (microseconds), and kernels are looked up on every
 * operation: detect once. A race between first callers computes the same value twice. */
static _Atomic int detected_isa = -1;

/* HS_CPU_ISA caps the detected ISA (see quants.h); an unknown value is ignored with a warning. */
static enum hs_isa isa_env_cap(enum hs_isa best)
{
    const char *want = getenv("HS_CPU_ISA");
    if (!want || !*want) {
        return best;
    }
    for (int i = 0; i < HS_ISA_COUNT; i++) {
        if (strcmp(want, hs_isa_str((enum hs_isa)i)) == 0) {
            return (enum hs_isa)HS_MIN(i, (int)best);
        }
    }
    HS_LOG_WARN("HS_CPU_ISA=%s is not scalar, avx2 or avx512: ignored (using %s)", want,
                hs_isa_str(best));
    return best;
}

enum hs_isa hs__cpu_detect_isa(void)
{
    int isa = atomic_load_explicit(&detected_isa, memory_order_relaxed);
    if (isa < 0) {
        isa = (int)isa_env_cap(detect_isa_uncached());
        atomic_store_explicit(&detected_isa, isa, memory_order_relaxed);
    }
    return (enum hs_isa)isa;
}

/* AVX-VNNI (CPUID leaf 7 subleaf 1, EAX bit 4); its VEX-coded registers are the AVX ones, whose
 * OS support the AVX2 detection already checked. */
static bool cpu_has_avxvnni_uncached(void)
{
#if HS_X86
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || (a & (1u << 4)) == 0) {
        return false;
    }
    const char *want = getenv("HS_CPU_AVXVNNI");
    return !want || strcmp(want, "0") != 0;
#else
    return false;
#endif
}

bool hs__cpu_has_avxvnni(void)
{
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = cpu_has_avxvnni_uncached() ? 1 : 0;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v != 0;
}

bool hs__cpu_has_avx512vnni(void)
{
#if HS_X86
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512vnni") ? 1 : 0;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v != 0;
#else
    return false;
#endif
}

#define ROW(t, vdt, ff, tf, vd, gt)                                                                \
    {                                                                                              \
        .type = t, .vec_dot_type = vdt, .from_float = ff, .to_float = tf, .vec_dot = vd,           \
        .gemm_tile = gt                                                                            \
    }
/* A row with a gemv kernel and the initializers in extra (each with its leading comma). */
#define ROWGX(t, vdt, ff, tf, vd, gt, gv, extra)                                                   \
    {                                                                                              \
        .type = t, .vec_dot_type = vdt, .from_float = ff, .to_float = tf, .vec_dot = vd,           \
        .gemm_tile = gt, .gemv = gv extra                                                          \
    }
/* A row with a gemv kernel too. */
#define ROWG(t, vdt, ff, tf, vd, gt, gv)                                                           \
    {                                                                                              \
        .type = t, .vec_dot_type = vdt, .from_float = ff, .to_float = tf, .vec_dot = vd,           \
        .gemm_tile = gt, .gemv = gv                                                                \
    }

static const struct hs_quant_kernels k_scalar[] = {
    ROW(HS_TYPE_F32, HS_TYPE_F32, from_float_f32, to_float_f32, vec_dot_f32, gemm_tile_f32),
    ROW(HS_TYPE_F16, HS_TYPE_F16, from_float_f16, to_float_f16, vec_dot_f16, gemm_tile_f16),
    ROW(HS_TYPE_BF16, HS_TYPE_BF16, from_float_bf16, to_float_bf16, vec_dot_bf16, gemm_tile_bf16),
    ROW(HS_TYPE_Q8_0, HS_TYPE_Q8_0, from_float_q8_0, to_float_q8_0, vec_dot_q8_0, gemm_tile_q8_0),
    ROW(HS_TYPE_Q4_0, HS_TYPE_Q8_0, from_float_q8_0, to_float_q4_0, vec_dot_q4_0, gemm_tile_q4_0),
    ROW(HS_TYPE_Q5_0, HS_TYPE_Q8_0, from_float_q8_0, to_float_q5_0, vec_dot_q5_0, gemm_tile_q5_0),
    ROW(HS_TYPE_Q4_1, HS_TYPE_Q8_1, from_float_q8_1, to_float_q4_1, vec_dot_q4_1, gemm_tile_q4_1),
    ROW(HS_TYPE_Q5_1, HS_TYPE_Q8_1, from_float_q8_1, to_float_q5_1, vec_dot_q5_1, gemm_tile_q5_1),
    ROW(HS_TYPE_Q4_K, HS_TYPE_Q8_K, from_float_q8_k, to_float_q4_k, vec_dot_q4_k, gemm_tile_q4_k),
    ROW(HS_TYPE_Q5_K, HS_TYPE_Q8_K, from_float_q8_k, to_float_q5_k, vec_dot_q5_k, gemm_tile_q5_k),
    ROW(HS_TYPE_Q6_K, HS_TYPE_Q8_K, from_float_q8_k, to_float_q6_k, vec_dot_q6_k, gemm_tile_q6_k),
};

#if HS_X86
#define AVX2_TABLE(name, group)                                                                    \
    static const struct hs_quant_kernels name[] = {                                                \
        ROW(HS_TYPE_F32, HS_TYPE_F32, from_float_f32, to_float_f32, hs__vec_dot_f32_avx2,          \
            hs__gemm_tile_f32_avx2),                                                               \
        ROW(HS_TYPE_F16, HS_TYPE_F16, hs__from_float_f16_avx2, hs__to_float_f16_avx2,              \
            hs__vec_dot_f16_avx2, hs__gemm_tile_f16_avx2),                                         \
        ROW(HS_TYPE_BF16, HS_TYPE_BF16, hs__from_float_bf16_avx2, hs__to_float_bf16_avx2,          \
            hs__vec_dot_bf16_avx2, hs__gemm_tile_bf16_avx2),                                       \
        {.type = HS_TYPE_Q8_0,                                                                     \
         .vec_dot_type = HS_TYPE_Q8_0,                                                             \
         .from_float = hs__from_float_q8_0_avx2,                                                   \
         .to_float = to_float_q8_0,                                                                \
         .vec_dot = hs__vec_dot_q8_0_avx2,                                                         \
         .gemm_tile = hs__gemm_tile_q8_0_avx2,                                                     \
         .gemv = hs__gemv_q8_0_avx2,                                                               \
         .from_float_split = hs__from_float_q8_0s_avx2,                                            \
         .split_weights = hs__split_rows_q8_0_avx2,                                                \
         .gemm_tile_split = hs__gemm_tile_q8s_avx2 group(q8_0)},                                   \
        ROWG(HS_TYPE_Q4_0, HS_TYPE_Q8_0, hs__from_float_q8_0_avx2, to_float_q4_0,                  \
             hs__vec_dot_q4_0_avx2, hs__gemm_tile_q4_0_avx2, hs__gemv_q4_0_avx2),                  \
        {.type = HS_TYPE_Q5_0,                                                                     \
         .vec_dot_type = HS_TYPE_Q8_0,                                                             \
         .from_float = hs__from_float_q8_0_avx2,                                                   \
         .to_float = to_float_q5_0,                                                                \
         .vec_dot = hs__vec_dot_q5_0_avx2,                                                         \
         .gemm_tile = hs__gemm_tile_q5_0_avx2,                                                     \
         .gemv = hs__gemv_q5_0_avx2,                                                               \
         .from_float_split = hs__from_float_q8_0s_avx2,                                            \
         .split_weights = hs__split_rows_q5_0_avx2,                                                \
         .gemm_tile_split = hs__gemm_tile_q8s_avx2 group(q5_0)},                                   \
        ROW(HS_TYPE_Q4_1, HS_TYPE_Q8_1, hs__from_float_q8_1_avx2, to_float_q4_1,                   \
            hs__vec_dot_q4_1_avx2, hs__gemm_tile_q4_1_avx2),                                       \
        ROW(HS_TYPE_Q5_1, HS_TYPE_Q8_1, hs__from_float_q8_1_avx2, to_float_q5_1,                   \
            hs__vec_dot_q5_1_avx2, hs__gemm_tile_q5_1_avx2),                                       \
        ROWG(HS_TYPE_Q4_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx2, to_float_q4_k,                  \
             hs__vec_dot_q4_k_avx2, hs__gemm_tile_q4_k_avx2, hs__gemv_q4_k_avx2),                  \
        ROWG(HS_TYPE_Q5_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx2, to_float_q5_k,                  \
             hs__vec_dot_q5_k_avx2, hs__gemm_tile_q5_k_avx2, hs__gemv_q5_k_avx2),                  \
        ROWG(HS_TYPE_Q6_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx2, to_float_q6_k,                  \
             hs__vec_dot_q6_k_avx2, hs__gemm_tile_q6_k_avx2, hs__gemv_q6_k_avx2),                  \
    }
#define NO_GROUP(t)
/* AVX-VNNI: Q8_0's and Q5_0's group form, 8 rows a group (gemm-group-avxvnni.c). */
#define VNNI_GROUP(t)                                                                              \
    , .split_group = hs__split_group_##t##_avxvnni,                                                \
      .from_float_group = hs__from_float_q8_0g_avxvnni, .gemm_group = hs__gemm_group8_avxvnni,     \
      .group_block_bytes = HS__Q8_0G8_BLOCK_BYTES, .group_min_rows = 32, .group_rows = 8
AVX2_TABLE(k_avx2, NO_GROUP);
AVX2_TABLE(k_avx2vnni, VNNI_GROUP);

/* Q4_0, Q5_0, Q4_1 and Q5_1 run the AVX2 kernels (but Q5_0's VNNI tiles of 2+ activation rows,
 * tiles-avx512.c, its VNNI split-form tiles from 16, and Q4_0's and Q5_0's AVX-512 gemvs; VNNI
 * Q4_K's tiles of 2+ rows are the AVX2 ones there): the same bits (ggml has no 512-bit kernels
 * for the last three either; its Q4_0 matmuls are repacked 8-row kernels, whose order the AVX2
 * Q4_0 kernels follow). */
#define AVX512_TABLE(name, isa, q4_k_tile, q8_0_split, q5_0_split)                                 \
    static const struct hs_quant_kernels name[] = {                                                \
        ROW(HS_TYPE_F32, HS_TYPE_F32, from_float_f32, to_float_f32, hs__vec_dot_f32_avx512,        \
            hs__gemm_tile_f32_avx512),                                                             \
        ROW(HS_TYPE_F16, HS_TYPE_F16, hs__from_float_f16_avx512, hs__to_float_f16_avx512,          \
            hs__vec_dot_f16_avx512, hs__gemm_tile_f16_avx512),                                     \
        ROW(HS_TYPE_BF16, HS_TYPE_BF16, hs__from_float_bf16_avx2, hs__to_float_bf16_avx2,          \
            hs__vec_dot_bf16_avx2, hs__gemm_tile_bf16_avx2),                                       \
        ROWGX(HS_TYPE_Q8_0, HS_TYPE_Q8_0, hs__from_float_q8_0_avx512, to_float_q8_0,               \
              hs__vec_dot_q8_0_##isa, hs__gemm_tile_q8_0_##isa, hs__gemv_q8_0_##isa,               \
              q8_0_split()),                                                                       \
        ROWG(HS_TYPE_Q4_0, HS_TYPE_Q8_0, hs__from_float_q8_0_avx512, to_float_q4_0,                \
             hs__vec_dot_q4_0_avx2, hs__gemm_tile_q4_0_avx2, hs__gemv_q4_0_##isa),                 \
        ROWGX(HS_TYPE_Q5_0, HS_TYPE_Q8_0, hs__from_float_q8_0_avx512, to_float_q5_0,               \
              hs__vec_dot_q5_0_avx2, hs__gemm_tile_q5_0_##isa, hs__gemv_q5_0_##isa, q5_0_split()), \
        ROW(HS_TYPE_Q4_1, HS_TYPE_Q8_1, hs__from_float_q8_1_avx2, to_float_q4_1,                   \
            hs__vec_dot_q4_1_avx2, hs__gemm_tile_q4_1_avx2),                                       \
        ROW(HS_TYPE_Q5_1, HS_TYPE_Q8_1, hs__from_float_q8_1_avx2, to_float_q5_1,                   \
            hs__vec_dot_q5_1_avx2, hs__gemm_tile_q5_1_avx2),                                       \
        ROWG(HS_TYPE_Q4_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx512, to_float_q4_k,                \
             hs__vec_dot_q4_k_##isa, q4_k_tile, hs__gemv_q4_k_##isa),                              \
        ROWG(HS_TYPE_Q5_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx512, to_float_q5_k,                \
             hs__vec_dot_q5_k_##isa, hs__gemm_tile_q5_k_##isa, hs__gemv_q5_k_##isa),               \
        ROWG(HS_TYPE_Q6_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx512, to_float_q6_k,                \
             hs__vec_dot_q6_k_##isa, hs__gemm_tile_q6_k_##isa, hs__gemv_q6_k_##isa),               \
    }
/* The split form on AVX-512 VNNI (hs__gemm_tile_q8s_avx512vnni; bench-backend-ops on 2 Zen 5
 * threads, [1536][576] products): Q5_0 from 16 activation rows, weights and activations split
 * (512 rows 207 -> 379 GFLOP/s, 64 rows 221 -> 306, 16 rows even); Q8_0 from 2 rows on split
 * activations and the file's weights (gemm_tile_xsplit: its blocks need no unpacking, and
 * converting chunks of weight rows cost more than it saved below ~64 rows; against split
 * weights from 64 rows and the file-layout tile below: 512 rows the same, 386-395 GFLOP/s; 64
 * rows 294-298 -> 371-374; 16 rows 294-302 -> 338-354, 147-157 -> 137-143 us not cached). */
/* Q8_0's and Q5_0's group form from 32 activation rows (gemm-group-avx512.c; a chunk of weight rows
 * made groups of 16 costs more than it saves in batched decode's 16 rows, whose weights come
 * from DRAM): bench-kernels 1 thread, 32 rows, Q8_0 171 -> 274 GOP/s (file-layout tile), Q5_0
 * 216 -> 245 (split form); SmolLM-135M on 2 Zen 5 threads, Q8_0 pp512 1441-1469 -> 1666-1733
 * t/s, pp64 1462-1511 -> 1674-1744, pp32 even, tg32 x16 on the group form 3-6% slower than on
 * the xsplit tile; Q4_K_M (mostly Q5_0) pp512 1162-1283 -> 1388-1431. */
#define NO_SPLIT()
#define VNNI_SPLIT_Q8_0()                                                                          \
    , .from_float_split = hs__from_float_q8_0s_avx512vnni, .split_x_bias = 0x80,                   \
      .gemm_tile_xsplit = hs__gemm_tile_q8x_avx512vnni,                                            \
      .split_group = hs__split_group_q8_0_avx512vnni,                                              \
      .from_float_group = hs__from_float_q8_0g_avx512vnni,                                         \
      .gemm_group = hs__gemm_group_q8_0_avx512vnni, .group_block_bytes = HS__Q8_0G_BLOCK_BYTES,    \
      .group_min_rows = 32, .group_rows = 16
#define VNNI_SPLIT_Q5_0()                                                                          \
    , .from_float_split = hs__from_float_q8_0s_avx512vnni,                                         \
      .split_weights = hs__split_rows_q5_0_avx2, .gemm_tile_split = hs__gemm_tile_q8s_avx512vnni,  \
      .split_x_bias = 0x80, .split_min_rows = 16, .split_group = hs__split_group_q5_0_avx512vnni,  \
      .from_float_group = hs__from_float_q8_0g_avx512vnni,                                         \
      .gemm_group = hs__gemm_group_q8_0_avx512vnni, .group_block_bytes = HS__Q8_0G_BLOCK_BYTES,    \
      .group_min_rows = 32, .group_rows = 16
AVX512_TABLE(k_avx512, avx512, hs__gemm_tile_q4_k_avx512, NO_SPLIT, NO_SPLIT);
AVX512_TABLE(k_avx512vnni, avx512vnni, hs__gemm_tile_q4_k_pp_avx512vnni, VNNI_SPLIT_Q8_0,
             VNNI_SPLIT_Q5_0);
#endif

static const struct hs_quant_kernels *find_row(const struct hs_quant_kernels *tab, size_t len,
                                               enum hs_type t)
{
    for (size_t i = 0; i < len; i++) {
        if (tab[i].type == t) {
            return &tab[i];
        }
    }
    return NULL;
}

#if HS_X86
/* HS_CPU_GEMM_ORDER=ggml: Q4_K's tiles of 4 activation rows sum in the order of ggml's repacked
 * gemm (see quants.h), for comparing prompt logits with llama.cpp's bit for bit. */
static bool ggml_gemm_order(void)
{
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        const char *want = getenv("HS_CPU_GEMM_ORDER");
        v = want && strcmp(want, "ggml") == 0;
        if (want && *want && !v) {
            HS_LOG_WARN("HS_CPU_GEMM_ORDER=%s is not 'ggml': ignored", want);
        }
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

static const struct hs_quant_kernels k_q4_k_ggml[] = {
    ROW(HS_TYPE_Q4_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx2, to_float_q4_k, hs__vec_dot_q4_k_avx2,
        hs__gemm_tile_q4_k_ggml_avx2),
    ROW(HS_TYPE_Q4_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx512, to_float_q4_k,
        hs__vec_dot_q4_k_avx512, hs__gemm_tile_q4_k_ggml_avx512),
    ROW(HS_TYPE_Q4_K, HS_TYPE_Q8_K, hs__from_float_q8_k_avx512, to_float_q4_k,
        hs__vec_dot_q4_k_avx512vnni, hs__gemm_tile_q4_k_ggml_avx512vnni),
};
#endif

const struct hs_quant_kernels *hs__cpu_kernels(enum hs_type t, enum hs_isa isa)
{
    const enum hs_isa best = hs__cpu_detect_isa();
    if (isa == HS_ISA_COUNT || isa > best) {
        isa = best;
    }
#if HS_X86
    if (t == HS_TYPE_Q4_K && isa >= HS_ISA_AVX2 && ggml_gemm_order()) {
        return &k_q4_k_ggml[isa == HS_ISA_AVX2 ? 0 : hs__cpu_has_avx512vnni() ? 2 : 1];
    }
    if (isa == HS_ISA_AVX512) {
        return hs__cpu_has_avx512vnni() ? find_row(k_avx512vnni, HS_ARRAY_LEN(k_avx512vnni), t)
                                        : find_row(k_avx512, HS_ARRAY_LEN(k_avx512), t);
    }
    if (isa == HS_ISA_AVX2) {
        return hs__cpu_has_avxvnni() ? find_row(k_avx2vnni, HS_ARRAY_LEN(k_avx2vnni), t)
                                     : find_row(k_avx2, HS_ARRAY_LEN(k_avx2), t);
    }
#endif
    return find_row(k_scalar, HS_ARRAY_LEN(k_scalar), t);
}

/* ================================================================================================
 * Reference entry points
 * ============================================================================================= */

void hs__quantize_row_ref(enum hs_type t, const float *x, void *y, int64_t n)
{
    switch (t) {
    case HS_TYPE_F32:
        from_float_f32(x, y, n);
        break;
    case HS_TYPE_F16:
        from_float_f16(x, y, n);
        break;
    case HS_TYPE_BF16:
        from_float_bf16(x, y, n);
        break;
    case HS_TYPE_Q8_0:
        from_float_q8_0(x, y, n);
        break;
    case HS_TYPE_Q4_0:
        quantize_q4_0(x, y, n);
        break;
    case HS_TYPE_Q5_0:
        quantize_q5_0(x, y, n);
        break;
    case HS_TYPE_Q4_1:
        quantize_q41_51(x, y, n, 0);
        break;
    case HS_TYPE_Q5_1:
        quantize_q41_51(x, y, n, 1);
        break;
    case HS_TYPE_Q8_1:
        from_float_q8_1(x, y, n);
        break;
    case HS_TYPE_Q4_K:
        quantize_q4_k(x, y, n);
        break;
    case HS_TYPE_Q5_K:
        quantize_q5_k(x, y, n);
        break;
    case HS_TYPE_Q6_K:
        quantize_q6_k(x, y, n);
        break;
    case HS_TYPE_Q8_K:
        from_float_q8_k(x, y, n);
        break;
    default:
        HS_ASSERT(!"hs__quantize_row_ref: unsupported type");
    }
}

void hs__dequantize_row_ref(enum hs_type t, const void *x, float *y, int64_t n)
{
    switch (t) {
    case HS_TYPE_F32:
        to_float_f32(x, y, n);
        break;
    case HS_TYPE_F16:
        to_float_f16(x, y, n);
        break;
    case HS_TYPE_BF16:
        to_float_bf16(x, y, n);
        break;
    case HS_TYPE_Q8_0:
        to_float_q8_0(x, y, n);
        break;
    case HS_TYPE_Q4_0:
        to_float_q4_0(x, y, n);
        break;
    case HS_TYPE_Q5_0:
        to_float_q5_0(x, y, n);
        break;
    case HS_TYPE_Q4_1:
        to_float_q4_1(x, y, n);
        break;
    case HS_TYPE_Q5_1:
        to_float_q5_1(x, y, n);
        break;
    case HS_TYPE_Q8_1:
        to_float_q8_1(x, y, n);
        break;
    case HS_TYPE_Q4_K:
        to_float_q4_k(x, y, n);
        break;
    case HS_TYPE_Q5_K:
        to_float_q5_k(x, y, n);
        break;
    case HS_TYPE_Q6_K:
        to_float_q6_k(x, y, n);
        break;
    case HS_TYPE_Q8_K:
        to_float_q8_k(x, y, n);
        break;
    default:
        HS_ASSERT(!"hs__dequantize_row_ref: unsupported type");
    }
}
