/* AVX-512 (F/BW/VL/DQ) kernels, each int8 one built twice: with VNNI (vpdpbusd / vpdpwssd) and
 * without. Same template scheme as quants-avx2.c: always-inline tiles over constant (NR, NC);
 * vec_dot is the 1x1 instance. A row's weights are decoded once per block into registers and
 * reused for every activation row; activation blocks stay in L1 across weight rows. */
#include "backends/cpu/quants.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backends/cpu/avx512-inl.h"
#include "backends/cpu/gemv-inl.h"

#define INLINE static inline __attribute__((always_inline))
#define ROWP(base, i, stride) ((const uint8_t *)(base) + (size_t)(i) * (stride))

INLINE float f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* Entry points for every (nr, nc) in 1..4 and the vec_dot wrapper; extra is passed through. */
#define TILE_ENTRY_POINTS(t, isa, extra)                                                       \
    void hs__gemm_tile_##t##_##isa(int64_t n, float *s, size_t bs, const void *w,             \
                                   size_t ws, const void *x, size_t xs, int nr, int nc)       \
    {                                                                                          \
        switch ((nr - 1) * 4 + (nc - 1)) {                                                     \
        case 0: t##_tile(n, s, bs, w, ws, x, xs, 1, 1, extra); break;                          \
        case 1: t##_tile(n, s, bs, w, ws, x, xs, 1, 2, extra); break;                          \
        case 2: t##_tile(n, s, bs, w, ws, x, xs, 1, 3, extra); break;                          \
        case 3: t##_tile(n, s, bs, w, ws, x, xs, 1, 4, extra); break;                          \
        case 4: t##_tile(n, s, bs, w, ws, x, xs, 2, 1, extra); break;                          \
        case 5: t##_tile(n, s, bs, w, ws, x, xs, 2, 2, extra); break;                          \
        case 6: t##_tile(n, s, bs, w, ws, x, xs, 2, 3, extra); break;                          \
        case 7: t##_tile(n, s, bs, w, ws, x, xs, 2, 4, extra); break;                          \
        case 8: t##_tile(n, s, bs, w, ws, x, xs, 3, 1, extra); break;                          \
        case 9: t##_tile(n, s, bs, w, ws, x, xs, 3, 2, extra); break;                          \
        case 10: t##_tile(n, s, bs, w, ws, x, xs, 3, 3, extra); break;                         \
        case 11: t##_tile(n, s, bs, w, ws, x, xs, 3, 4, extra); break;                         \
        case 12: t##_tile(n, s, bs, w, ws, x, xs, 4, 1, extra); break;                         \
        case 13: t##_tile(n, s, bs, w, ws, x, xs, 4, 2, extra); break;                         \
        case 14: t##_tile(n, s, bs, w, ws, x, xs, 4, 3, extra); break;                         \
        case 15: t##_tile(n, s, bs, w, ws, x, xs, 4, 4, extra); break;                         \
        default: HS_ASSERT(!"gemm_tile: nr and nc must be in 1..4"); break;                    \
        }                                                                                      \
    }                                                                                          \
    void hs__vec_dot_##t##_##isa(int64_t n, float *s, const void *w, const void *x)           \
    {                                                                                          \
        t##_tile(n, s, 0, w, 0, x, 0, 1, 1, extra);                                            \
    }

#define ACC_INIT(acc)                                                                          \
    for (int r = 0; r < NR; r++) {                                                             \
        for (int c = 0; c < NC; c++) {                                                         \
            (acc)[r][c] = _mm512_setzero_ps();                                                 \
        }                                                                                      \
    }
#define ACC_STORE(acc)                                                                         \
    for (int r = 0; r < NR; r++) {                                                             \
        for (int c = 0; c < NC; c++) {                                                         \
            s[(size_t)c * bs + (size_t)r] = _mm512_reduce_add_ps((acc)[r][c]);                 \
        }                                                                                      \
    }

/* ================================================================================================
 * F32 / F16: 16 lanes, masked loads for the tail
 * ============================================================================================= */

INLINE __m512 load16_f32(const void *p, int64_t i, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

INLINE __m512 load16_f16(const void *p, int64_t i, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}

/* Summation order of ggml's ggml_vec_dot_f32 / ggml_vec_dot_f16 on AVX-512 (GGML_F32_STEP =
 * GGML_F16_STEP = 64): four 16-lane FMA accumulators over 64-element steps, reduced as
 * (a0 + a2) + (a1 + a3) and then across lanes; the n % 64 tail is added as quant_dot_tail_f32 /
 * _f16 (quants.h) say. llama.cpp's CPU backend runs F32 and F16 weight products through these
 * (not llamafile's sgemm), so matching the order makes results bit-identical. Four accumulators
 * per dot product leave registers for at most 2 x 2 dot products at once. */
#define FLOAT_TILE(t)                                                                          \
    INLINE void t##_tile2(int64_t n, float *s, size_t bs, const void *w, size_t ws,           \
                          const void *x, size_t xs, const int NR, const int NC)                \
    {                                                                                          \
        __m512 acc[2][2][4];                                                                   \
        for (int r = 0; r < NR; r++) {                                                         \
            for (int c = 0; c < NC; c++) {                                                     \
                for (int k = 0; k < 4; k++) {                                                  \
                    acc[r][c][k] = _mm512_setzero_ps();                                        \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        const int64_t np = n & ~(int64_t)63;                                                   \
        for (int64_t i = 0; i < np; i += 64) {                                                 \
            for (int k = 0; k < 4; k++) {                                                      \
                __m512 xv[2];                                                                  \
                for (int c = 0; c < NC; c++) {                                                 \
                    xv[c] = load16_##t(ROWP(x, c, xs), i + 16 * k, 0xFFFF);                    \
                }                                                                              \
                for (int r = 0; r < NR; r++) {                                                 \
                    const __m512 wv = load16_##t(ROWP(w, r, ws), i + 16 * k, 0xFFFF);          \
                    for (int c = 0; c < NC; c++) {                                             \
                        acc[r][c][k] = _mm512_fmadd_ps(wv, xv[c], acc[r][c][k]);               \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (int r = 0; r < NR; r++) {                                                         \
            for (int c = 0; c < NC; c++) {                                                     \
                const __m512 a02 = _mm512_add_ps(acc[r][c][0], acc[r][c][2]);                  \
                const __m512 a13 = _mm512_add_ps(acc[r][c][1], acc[r][c][3]);                  \
                const float red = _mm512_reduce_add_ps(_mm512_add_ps(a02, a13));               \
                s[(size_t)c * bs + (size_t)r] =                                                \
                    quant_dot_tail_##t(red, ROWP(w, r, ws), ROWP(x, c, xs), np, n);                      \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    INLINE void t##_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws,            \
                         const void *x, size_t xs, const int NR, const int NC, int unused)     \
    {                                                                                          \
        (void)unused;                                                                          \
        for (int r = 0; r < NR; r += 2) {                                                      \
            for (int c = 0; c < NC; c += 2) {                                                  \
                const int nr2 = NR - r < 2 ? NR - r : 2;                                       \
                const int nc2 = NC - c < 2 ? NC - c : 2;                                       \
                float *s2 = s + (size_t)c * bs + (size_t)r;                                    \
                const void *w2 = ROWP(w, r, ws);                                               \
                const void *x2 = ROWP(x, c, xs);                                               \
                if (nr2 == 2 && nc2 == 2) {                                                    \
                    t##_tile2(n, s2, bs, w2, ws, x2, xs, 2, 2);                                \
                } else if (nr2 == 2) {                                                         \
                    t##_tile2(n, s2, bs, w2, ws, x2, xs, 2, 1);                                \
                } else if (nc2 == 2) {                                                         \
                    t##_tile2(n, s2, bs, w2, ws, x2, xs, 1, 2);                                \
                } else {                                                                       \
                    t##_tile2(n, s2, bs, w2, ws, x2, xs, 1, 1);                                \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }

FLOAT_TILE(f32)
FLOAT_TILE(f16)
TILE_ENTRY_POINTS(f32, avx512, 0)
TILE_ENTRY_POINTS(f16, avx512, 0)

void hs__from_float_f16_avx512(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(y + i), h);
    }
    for (; i < n; i++) {
        y[i] = hs_fp32_to_fp16(x[i]);
    }
}

void hs__to_float_f16_avx512(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(y + i, load16_f16(x, i, 0xFFFF));
    }
    for (; i < n; i++) {
        y[i] = f16(x[i]);
    }
}

/* ================================================================================================
 * Q8_0 (activations Q8_0): one block per 256-bit register (ggml's order)
 * ============================================================================================= */

/* One block per 256-bit register, as ggml's ggml_vec_dot_q8_0_q8_0 on AVX2 / AVX-512 CPUs
 * (which has no 512-bit variant): lane i of the block's integer dot holds the products of bytes
 * 4i..4i+3, converted to float and accumulated as acc = fma(d_w * d_x, dot, acc) over blocks in
 * 8 float lanes, then summed (hi + lo halves, then pairs). Matching this order makes our Q8_0
 * products bit-identical to llama.cpp's. With VNNI the weights are offset to unsigned (w + 128)
 * so one vpdpbusd does the block; the accumulator starts at -128 * sum(x) (per lane), which
 * cancels the offset exactly. Without, the sign trick: |w| * (x with w's sign), maddubs, madd.
 * (Q4_0, Q5_0, Q4_1 and Q5_1 run the AVX2 kernels on AVX-512 CPUs too, but for Q4_0's and
 * Q5_0's gemvs below.) */
INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Weight block b of row r, and its f16 scale (the first field). */
#define QBLK(w, r, ws, b) (ROWP(w, r, ws) + (size_t)(b) * sizeof(struct hs_block_q8_0))

INLINE uint16_t qblk_d(const uint8_t *blk)
{
    uint16_t d;
    memcpy(&d, blk, 2);
    return d;
}

/* The block's 32 weights: VNNI: offset to unsigned (w + qoff); else signed. */
INLINE __m256i qblk_w256(const uint8_t *blk, const int VNNI)
{
    const __m256i wq = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 2));
    return VNNI ? _mm256_xor_si256(wq, _mm256_set1_epi8((char)0x80)) : wq;
}

/* Two blocks' weights as the low and high 256-bit halves, as qblk_w256 makes each. */
INLINE __m512i qblk_w512(const uint8_t *b0, const uint8_t *b1, const int VNNI)
{
    const __m512i wq = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(b0 + 2))),
        _mm256_loadu_si256((const __m256i *)(const void *)(b1 + 2)), 1);
    return VNNI ? _mm512_xor_si512(wq, _mm512_set1_epi8((char)0x80)) : wq;
}

/* The block's weights in both 256-bit halves. */
INLINE __m512i qblk_w512_bcast(const uint8_t *blk, const int VNNI)
{
    const __m512i wq =
        _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 2)));
    return VNNI ? _mm512_xor_si512(wq, _mm512_set1_epi8((char)0x80)) : wq;
}

/* The block's integer dot, 8 lanes; w as qblk_w256 gives it, negc = -128 * sum(x) per lane
 * (VNNI only). */
INLINE __m256i qdot256(__m256i w, __m256i xq, __m256i negc, const int VNNI)
{
    if (VNNI) {
        return _mm256_dpbusd_epi32(negc, w, xq);
    }
    const __m256i sx = _mm256_sign_epi8(xq, w);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), sx),
                             _mm256_set1_epi16(1));
}

INLINE __m512i qdot512(__m512i w, __m512i xq, __m512i negc, const int VNNI)
{
    if (VNNI) {
        return _mm512_dpbusd_epi32(negc, w, xq);
    }
    /* x with w's sign (w = 0 gives a zero product either way, as _sign_epi8). */
    const __m512i sx = _mm512_mask_sub_epi8(xq, _mm512_movepi8_mask(w), _mm512_setzero_si512(), xq);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(w), sx), _mm512_set1_epi16(1));
}

INLINE void q8_0_step(__m256 acc[4][4], int64_t b, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    __m256i xq[4], negc[4];
    __m256 dx[4]; /* the scales, broadcast: d_w * d_x is one vmulps, as one float mul */
    for (int c = 0; c < NC; c++) {
        const struct hs_block_q8_0 *xb =
            (const struct hs_block_q8_0 *)(const void *)ROWP(x, c, xs) + b;
        xq[c] = _mm256_loadu_si256((const __m256i *)xb->qs);
        dx[c] = _mm256_cvtph_ps(_mm_set1_epi16((short)xb->d));
        if (VNNI) {
            negc[c] = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), xq[c]));
        } else {
            negc[c] = _mm256_setzero_si256();
        }
    }
    for (int r = 0; r < NR; r++) {
        const uint8_t *wb = QBLK(w, r, ws, b);
        const __m256i wq = qblk_w256(wb, VNNI);
        const __m256 dw = _mm256_cvtph_ps(_mm_set1_epi16((short)qblk_d(wb)));
        for (int c = 0; c < NC; c++) {
            const __m256i dot = qdot256(wq, xq[c], negc[c], VNNI);
            acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx[c]), _mm256_cvtepi32_ps(dot),
                                        acc[r][c]);
        }
    }
}

/* Two activation rows c, c + 1 side by side in one 512-bit register: lanes 0..7 are the 8-lane
 * chain of (r, c), lanes 8..15 that of (r, c + 1), each updated exactly as q8_0_step does (one
 * fma per block), so the bits are the same with half the instructions. */
INLINE void q8_0_step_pairs(__m512 acc[4][2], int64_t b, const void *w, size_t ws, const void *x,
                            size_t xs, const int NR, const int NP, const int VNNI)
{
    __m512i xq[2], negc[2];
    __m512 dx[2];
    for (int p = 0; p < NP; p++) {
        hs__q8_0_x_pair(x, xs, 2 * p, b, &xq[p], &dx[p]);
        if (VNNI) {
            negc[p] = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), xq[p]));
        } else {
            negc[p] = _mm512_setzero_si512();
        }
    }
    for (int r = 0; r < NR; r++) {
        const uint8_t *wb = QBLK(w, r, ws, b);
        const __m512i wq = qblk_w512_bcast(wb, VNNI);
        const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)qblk_d(wb)));
        for (int p = 0; p < NP; p++) {
            const __m512i dot = qdot512(wq, xq[p], negc[p], VNNI);
            acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx[p]), _mm512_cvtepi32_ps(dot),
                                        acc[r][p]);
        }
    }
}

/* One activation row against weight rows r, r + 1 side by side (decode): lanes 0..7 are the
 * chain of (r, 0), lanes 8..15 that of (r + 1, 0); same bits as q8_0_step. */
INLINE void q8_0_step_rows(__m512 *acc, int64_t b, const void *w, size_t ws, const void *x,
                           const int NQ, const int VNNI)
{
    const struct hs_block_q8_0 *xb = (const struct hs_block_q8_0 *)x + b;
    const __m512i xq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xb->qs));
    const __m512 dx = _mm512_cvtph_ps(_mm256_set1_epi16((short)xb->d));
    __m512i negc = _mm512_setzero_si512();
    if (VNNI) {
        negc = _mm512_sub_epi32(negc, _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                                          _mm512_set1_epi8((char)0x80), xq));
    }
    for (int q = 0; q < NQ; q++) {
        const uint8_t *w0 = QBLK(w, 2 * q, ws, b), *w1 = QBLK(w, 2 * q + 1, ws, b);
        const __m512i wq = qblk_w512(w0, w1, VNNI);
        const __m512 dw = _mm512_cvtph_ps(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_set1_epi16((short)qblk_d(w0))),
            _mm_set1_epi16((short)qblk_d(w1)), 1));
        const __m512i dot = qdot512(wq, xq, negc, VNNI);
        acc[q] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(dot), acc[q]);
    }
}

/* Weight rows stream from memory, one 34-byte block per step and row: fetch 32 blocks
 * ahead every other block, or the one-block steps keep too few loads in flight. */
INLINE void q8_0_prefetch(int64_t b, const void *w, size_t ws, const int NR)
{
    if ((b & 1) == 0) {
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)QBLK(w, r, ws, b + 32), _MM_HINT_T0);
        }
    }
}

INLINE void q80_act_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                         size_t xs, const int NR, const int NC, const int VNNI)
{
    __m256 acc[4][4];
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            acc[r][c] = _mm256_setzero_ps();
        }
    }
    const int64_t nb = n / 32;
    if (NC == 1 && (NR == 2 || NR == 4)) {
        __m512 acc2[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t b = 0; b < nb; b++) {
            q8_0_prefetch(b, w, ws, NR);
            q8_0_step_rows(acc2, b, w, ws, x, NR / 2, VNNI);
        }
        for (int q = 0; q < NR / 2; q++) {
            s[2 * q] = hsum8(_mm512_castps512_ps256(acc2[q]));
            s[2 * q + 1] = hsum8(_mm512_extractf32x8_ps(acc2[q], 1));
        }
        return;
    }
    if (NC == 2 || NC == 4) {
        __m512 acc2[4][2];
        for (int r = 0; r < NR; r++) {
            for (int p = 0; p < NC / 2; p++) {
                acc2[r][p] = _mm512_setzero_ps();
            }
        }
        for (int64_t b = 0; b < nb; b++) {
            q8_0_step_pairs(acc2, b, w, ws, x, xs, NR, NC / 2, VNNI);
        }
        for (int r = 0; r < NR; r++) {
            for (int p = 0; p < NC / 2; p++) {
                s[(size_t)(2 * p) * bs + (size_t)r] = hsum8(_mm512_castps512_ps256(acc2[r][p]));
                s[(size_t)(2 * p + 1) * bs + (size_t)r] =
                    hsum8(_mm512_extractf32x8_ps(acc2[r][p], 1));
            }
        }
        return;
    }
    for (int64_t b = 0; b < nb; b++) {
        q8_0_prefetch(b, w, ws, NR);
        q8_0_step(acc, b, w, ws, x, xs, NR, NC, VNNI);
    }
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            s[(size_t)c * bs + (size_t)r] = hsum8(acc[r][c]);
        }
    }
}

INLINE void q8_0_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    q80_act_tile(n, s, bs, w, ws, x, xs, NR, NC, VNNI);
}
TILE_ENTRY_POINTS(q8_0, avx512, 0)
TILE_ENTRY_POINTS(q8_0, avx512vnni, 1)

/* hs_gemv_fn for Q8_0 (decode): passes of 2 NQ weight rows, two per 512-bit register
 * (q8_0_step_rows: each row's 8-lane chain exactly as vec_dot makes it, so the same bits), NQ
 * chains in flight, and the pass's span streamed ahead as the AVX2 gemv does
 * (hs__gemv_stream). An odd last row runs the one-row tile. */
INLINE void q8_0_gemv_pass(int64_t n, float *s, const void *w, size_t ws, const void *x,
                           const int NQ, const int VNNI)
{
    __m512 acc[8];
    for (int q = 0; q < NQ; q++) {
        acc[q] = _mm512_setzero_ps();
    }
    const int64_t nb = n / 32;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)(2 * NQ) * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        q8_0_step_rows(acc, b, w, ws, x, NQ, VNNI);
    }
    for (int q = 0; q < NQ; q++) {
        s[2 * q] = hsum8(_mm512_castps512_ps256(acc[q]));
        s[2 * q + 1] = hsum8(_mm512_extractf32x8_ps(acc[q], 1));
    }
}

#define Q80_GEMV_ROWS 8

INLINE void q8_0_gemv(int64_t n, float *s, const void *w, size_t ws, const void *x, int64_t nr,
                      const int VNNI)
{
    int64_t r = 0;
    for (; r + Q80_GEMV_ROWS <= nr; r += Q80_GEMV_ROWS) {
        q8_0_gemv_pass(n, s + r, ROWP(w, r, ws), ws, x, Q80_GEMV_ROWS / 2, VNNI);
    }
    switch ((nr - r) / 2) {
    case 0:
        break;
    case 1:
        q8_0_gemv_pass(n, s + r, ROWP(w, r, ws), ws, x, 1, VNNI);
        break;
    case 2:
        q8_0_gemv_pass(n, s + r, ROWP(w, r, ws), ws, x, 2, VNNI);
        break;
    default:
        q8_0_gemv_pass(n, s + r, ROWP(w, r, ws), ws, x, 3, VNNI);
        break;
    }
    r += (nr - r) / 2 * 2;
    if (r < nr) {
        q80_act_tile(n, s + r, 1, ROWP(w, r, ws), ws, x, 0, 1, 1, VNNI);
    }
}

void hs__gemv_q8_0_avx512(int64_t n, float *s, const void *w, size_t ws, const void *x,
                          int64_t nr)
{
    q8_0_gemv(n, s, w, ws, x, nr, 0);
}

void hs__gemv_q8_0_avx512vnni(int64_t n, float *s, const void *w, size_t ws, const void *x,
                              int64_t nr)
{
    q8_0_gemv(n, s, w, ws, x, nr, 1);
}

/* ================================================================================================
 * Q5_0 decode (activations Q8_0): two weight rows per 512-bit register
 * ============================================================================================= */

/* The f16 scales of weight block b in rows 0 .. 2 NQ - 1 of a pass (row i past the pass's NR
 * rows repeats row NR - 1), times d_x: lane i is row i's d_w * d_x, one float multiply as
 * vec_dot makes it. */
INLINE __m512 gemv_scales(const uint8_t *wb0, size_t ws, const int NR, const int NQ, float dx)
{
    uint64_t h[4] = {0, 0, 0, 0};
    for (int i = 0; i < 2 * NQ; i++) {
        uint16_t d;
        memcpy(&d, ROWP(wb0, HS_MIN(i, NR - 1), ws), sizeof(d));
        h[i / 4] |= (uint64_t)d << (16 * (i % 4));
    }
    const __m256i hv =
        _mm256_set_epi64x((long long)h[3], (long long)h[2], (long long)h[1], (long long)h[0]);
    return _mm512_mul_ps(_mm512_cvtph_ps(hv), _mm512_set1_ps(dx));
}

/* f32 index vector for permutexvar_ps: lanes 0..7 -> a, 8..15 -> b. */
INLINE __m512i idx_pair_ps(int a, int b)
{
    return _mm512_inserti64x4(_mm512_set1_epi32(a), _mm256_set1_epi32(b), 1);
}

/* Two blocks' 16 bytes of nibbles (Q4_0 / Q5_0 layout) as 0..15: the first's low nibbles
 * (elements 0..15) then high ones (16..31) in the low 256-bit half, the second's in the high. */
INLINE __m512i nibbles_pair(const uint8_t *qs0, const uint8_t *qs1)
{
    __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)qs0));
    v = _mm512_mask_broadcast_i32x4(v, 0xFF00, _mm_loadu_si128((const __m128i *)(const void *)qs1));
    return _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFF00FF00u, v, 4), _mm512_set1_epi8(0x0F));
}

/* Activation block xb in both 256-bit halves (*xq), c * (the sum of each 4 activations) per
 * int32 lane (*xsc, c a small positive byte) and its negation (*negc, vpdpbusd's start). */
INLINE void x_offset(const struct hs_block_q8_0 *xb, char c, __m512i *xq, __m512i *xsc,
                     __m512i *negc, const int VNNI)
{
    const __m512i cv = _mm512_set1_epi8(c);
    *xq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xb->qs));
    *xsc = VNNI ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), cv, *xq)
                : _mm512_madd_epi16(_mm512_maddubs_epi16(cv, *xq), _mm512_set1_epi16(1));
    *negc = _mm512_sub_epi32(_mm512_setzero_si512(), *xsc);
}

/* The exact int32 lanes of (u - c) . x for unsigned weights u, with x_offset's parts. */
INLINE __m512i udot_offset(__m512i u, __m512i xq, __m512i xsc, __m512i negc, const int VNNI)
{
    if (VNNI) {
        return _mm512_dpbusd_epi32(negc, u, xq);
    }
    return _mm512_sub_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(u, xq), _mm512_set1_epi16(1)),
                            xsc);
}

/* Q5_0 blocks of two rows as unsigned weights (value + 16, 0..31): row 0's 32 in the low
 * 256-bit half, row 1's in the high one, each as low nibbles (elements 0..15) then high ones
 * (16..31); the fifth bits of both rows form one 64-bit mask that adds 16 under it. */
INLINE __m512i q5_0_u_pair(const struct hs_block_q5_0 *b0, const struct hs_block_q5_0 *b1)
{
    const __m512i v = nibbles_pair(b0->qs, b1->qs);
    uint32_t qh0, qh1;
    memcpy(&qh0, b0->qh, sizeof(qh0));
    memcpy(&qh1, b1->qh, sizeof(qh1));
    const __mmask64 hi = _cvtu64_mask64((uint64_t)qh0 | (uint64_t)qh1 << 32);
    return _mm512_mask_add_epi8(v, hi, v, _mm512_set1_epi8(16));
}

/* A gemv pass over NR (1 .. 2 NQ) Q5_0 weight rows: rows 2q, 2q + 1 side by side in acc[q]
 * (lanes 0..7 and 8..15, each row's 8-lane chain exactly as vec_dot makes it: the int32 lanes
 * of the exact 4-product sums, sum (u - 16) x = (u . x) - 16 sum x with 16 sum x per lane taken
 * once per block for all rows, converted, one fma by d_w * d_x a block); an odd NR repeats its
 * last row in the high half, which is not stored. */
INLINE void q5_0_gemv_pass(int64_t n, float *s, const void *w, size_t ws, const void *x,
                           const int NR, const int VNNI)
{
    const int NQ = (NR + 1) / 2;
    const size_t wsize = sizeof(struct hs_block_q5_0);
    __m512 acc[8];
    __m512i idx[8];
    for (int q = 0; q < NQ; q++) {
        acc[q] = _mm512_setzero_ps();
        idx[q] = idx_pair_ps(2 * q, 2 * q + 1);
    }
    const int64_t nb = n / 32;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        const struct hs_block_q8_0 *xb = (const struct hs_block_q8_0 *)x + b;
        const uint8_t *wb0 = (const uint8_t *)w + (size_t)b * wsize;
        __m512i xq, xs16, negc;
        x_offset(xb, 16, &xq, &xs16, &negc, VNNI);
        const __m512 sc = gemv_scales(wb0, ws, NR, NQ, f16(xb->d));
        for (int q = 0; q < NQ; q++) {
            const struct hs_block_q5_0 *b0 = (const void *)ROWP(wb0, 2 * q, ws);
            const struct hs_block_q5_0 *b1 = (const void *)ROWP(wb0, HS_MIN(2 * q + 1, NR - 1), ws);
            const __m512i wu = q5_0_u_pair(b0, b1);
            const __m512i dot = udot_offset(wu, xq, xs16, negc, VNNI);
            acc[q] =
                _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[q], sc), _mm512_cvtepi32_ps(dot), acc[q]);
        }
    }
    for (int q = 0; q < NQ; q++) {
        s[2 * q] = hsum8(_mm512_castps512_ps256(acc[q]));
        if (2 * q + 1 < NR) {
            s[2 * q + 1] = hsum8(_mm512_extractf32x8_ps(acc[q], 1));
        }
    }
}

/* hs__gemv_T_avx512 and _avx512vnni over T##_gemv_pass(n, s, w, ws, x, NR, VNNI): passes of
 * ROWS (<= 8) rows, then one of the rest. */
/* clang-format off */
#define GEMV_ENTRY_POINTS(t, ROWS)                                                                 \
    INLINE void t##_gemv(int64_t n, float *s, const void *w, size_t ws, const void *x,            \
                         int64_t nr, const int VNNI)                                               \
    {                                                                                              \
        int64_t r = 0;                                                                             \
        for (; r + (ROWS) <= nr; r += (ROWS)) {                                                    \
            t##_gemv_pass(n, s + r, ROWP(w, r, ws), ws, x, (ROWS), VNNI);                          \
        }                                                                                          \
        float *sr = s + r;                                                                         \
        const void *wr = ROWP(w, r, ws);                                                           \
        switch (nr - r) {                                                                          \
        case 0: break;                                                                             \
        case 1: t##_gemv_pass(n, sr, wr, ws, x, 1, VNNI); break;                                   \
        case 2: t##_gemv_pass(n, sr, wr, ws, x, 2, VNNI); break;                                   \
        case 3: t##_gemv_pass(n, sr, wr, ws, x, 3, VNNI); break;                                   \
        case 4: t##_gemv_pass(n, sr, wr, ws, x, 4, VNNI); break;                                   \
        case 5: t##_gemv_pass(n, sr, wr, ws, x, 5, VNNI); break;                                   \
        case 6: t##_gemv_pass(n, sr, wr, ws, x, 6, VNNI); break;                                   \
        default: t##_gemv_pass(n, sr, wr, ws, x, 7, VNNI); break;                                  \
        }                                                                                          \
    }                                                                                              \
    void hs__gemv_##t##_avx512(int64_t n, float *s, const void *w, size_t ws, const void *x,      \
                               int64_t nr)                                                         \
    {                                                                                              \
        t##_gemv(n, s, w, ws, x, nr, 0);                                                           \
    }                                                                                              \
    void hs__gemv_##t##_avx512vnni(int64_t n, float *s, const void *w, size_t ws, const void *x,  \
                                   int64_t nr)                                                     \
    {                                                                                              \
        t##_gemv(n, s, w, ws, x, nr, 1);                                                           \
    }
/* clang-format on */

GEMV_ENTRY_POINTS(q5_0, 8)

/* ================================================================================================
 * Q4_0 decode (activations Q8_0)
 * ============================================================================================= */

/* hs_gemv_fn for Q4_0 in its order (q4_0_gemv_sub's in quants-avx2.c: per row acc = fma(total,
 * d_w * d_x, acc), the total the block's exact integer dot): rows 2q, 2q + 1 side by side as for
 * Q5_0 (vpdpbusd of the nibbles from -8 sum x), the four pairs' int32 lanes reduced together
 * so that int32 lane 4k holds row k's total and lane 4k + 1 row k + 4's; one fma a block for
 * the pass's 8 chains. An odd NR repeats its last row, which is not stored. */
INLINE void q4_0_gemv_pass(int64_t n, float *s, const void *w, size_t ws, const void *x,
                           const int NR, const int VNNI)
{
    const int NQ = (NR + 1) / 2;
    const size_t wsize = sizeof(struct hs_block_q4_0);
    /* Lane 4k + j (j < 2): scale of row k + 4 j. */
    const __m512i idx = _mm512_setr_epi32(0, 4, 0, 0, 1, 5, 0, 0, 2, 6, 0, 0, 3, 7, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    const int64_t nb = n / 32;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        const struct hs_block_q8_0 *xb = (const struct hs_block_q8_0 *)x + b;
        const uint8_t *wb0 = (const uint8_t *)w + (size_t)b * wsize;
        __m512i xq, xs8, negc;
        x_offset(xb, 8, &xq, &xs8, &negc, VNNI);
        __m512i v[4];
        for (int q = 0; q < 4; q++) {
            v[q] = _mm512_setzero_si512();
            if (q < NQ) {
                const struct hs_block_q4_0 *b0 = (const void *)ROWP(wb0, 2 * q, ws);
                const struct hs_block_q4_0 *b1 =
                    (const void *)ROWP(wb0, HS_MIN(2 * q + 1, NR - 1), ws);
                v[q] = udot_offset(nibbles_pair(b0->qs, b1->qs), xq, xs8, negc, VNNI);
            }
        }
        /* 128-bit lane k of w01: row k's four partial sums (rows 0..3), of w23 rows 4..7. */
        const __m512i w01 = _mm512_add_epi32(_mm512_shuffle_i64x2(v[0], v[1], 0x88),
                                             _mm512_shuffle_i64x2(v[0], v[1], 0xDD));
        const __m512i w23 = _mm512_add_epi32(_mm512_shuffle_i64x2(v[2], v[3], 0x88),
                                             _mm512_shuffle_i64x2(v[2], v[3], 0xDD));
        const __m512i t =
            _mm512_add_epi32(_mm512_unpacklo_epi32(w01, w23), _mm512_unpackhi_epi32(w01, w23));
        const __m512i tot = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
        const __m512 sc = _mm512_permutexvar_ps(idx, gemv_scales(wb0, ws, NR, 4, f16(xb->d)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), sc, acc);
    }
    float out[16];
    _mm512_storeu_ps(out, acc);
    for (int r = 0; r < NR; r++) {
        s[r] = out[4 * (r % 4) + r / 4];
    }
}
GEMV_ENTRY_POINTS(q4_0, 8)

/* ================================================================================================
 * Activation quantizers
 * ============================================================================================= */

/* roundf (ties away from zero), exactly: trunc, then step away where |remainder| >= 1/2. */

void hs__from_float_q8_0_avx512(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        /* As ggml's x86 quantize_row_q8_0: id = 127 / amax (not 1 / d), round half to even. */
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m512 idv = _mm512_set1_ps(id);
        _mm_storeu_si128((__m128i *)y[b].qs,
                         _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, idv))));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16),
                         _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, idv))));
    }
}

/* ================================================================================================
 * Q8_0 / Q5_0 prompt tiles on the split form, VNNI (hs_quant_kernels.gemm_tile_split)
 * ============================================================================================= */

/* Split activations for the VNNI tiles: hs__from_float_q8_0_avx512's blocks, their values stored
 * as x + 128 (unsigned, vpdpbusd's first operand; split_x_bias), then the scales as floats. */
void hs__from_float_q8_0s_avx512vnni(const float *x, void *vy, int64_t n)
{
    uint8_t *qs = vy;
    float *d = (float *)(void *)(qs + n);
    int64_t b = 0;
    for (; b < n / 32; b++) {
        struct hs_block_q8_0 blk;
        hs__from_float_q8_0_avx512(x + b * 32, &blk, 32);
        const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)blk.qs);
        _mm256_store_si256((__m256i *)(void *)(qs + b * 32),
                           _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)));
        d[b] = f16(blk.d);
    }
    for (; b % 8; b++) {
        d[b] = 0.0f;
    }
}

/* The 16 chains of a 4 x 4 tile (acc[q][c]: lanes 0..7 row 2q, 8..15 row 2q + 1, column c)
 * summed as hsum8 sums each, ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)), all in one
 * register: 7 adds and 14 shuffles where 16 hsum8 take 80 instructions. */
INLINE void q8s_vnni_store_4x4(float *s, size_t bs, __m512 acc[2][4])
{
    __m512 t[4]; /* column c; 128-bit lane k: row k's 4 sums v_i + v_(i + 4) */
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[0][c], acc[1][c], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(acc[0][c], acc[1][c], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    __m512 u[2]; /* lane k: (s0 + s2, s1 + s3) of row k, columns 2j and 2j + 1 */
    for (int j = 0; j < 2; j++) {
        u[j] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * j], t[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t[2 * j], t[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    /* lane k: row k's totals, columns 0..3 */
    const __m512 f = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* transposed: lane c holds column c's rows 0..3 */
    const __m512 g = _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), f);
    _mm_storeu_ps(s, _mm512_castps512_ps128(g));
    _mm_storeu_ps(s + bs, _mm512_extractf32x4_ps(g, 1));
    _mm_storeu_ps(s + 2 * bs, _mm512_extractf32x4_ps(g, 2));
    _mm_storeu_ps(s + 3 * bs, _mm512_extractf32x4_ps(g, 3));
}

/* NQ pairs of weight rows (2q, 2q + 1; with ODD the last pair's second row repeats its first
 * and is not stored) against NC activation rows, weights signed (hs__split_rows_*_avx2, or with
 * FILE_W Q8_0 rows as the file has them) and activations x + 128. Lanes 0..7 of acc[q][c] are the
 * 8-lane chain of (2q, c), lanes 8..15 that of (2q + 1, c), each updated per block exactly as
 * q8_0_step does: the exact int32 lanes (vpdpbusd of x + 128 and w, started at -128 * the sum of
 * each 4 weights, which cancels the offset), acc = fma(d_w * d_x, lanes, acc); so gemm_tile's bits.
 * Against the file layout's pairs tile (q8_0_step_pairs): aligned loads, no per-row offset or f16
 * conversion, and the correction made once per weight pair and block for all activation rows. */
INLINE void q8s_vnni_sub(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                         size_t xs, const int NQ, const int ODD, const int NC, const int FILE_W)
{
    __m512 acc[2][4];
    for (int q = 0; q < NQ; q++) {
        for (int c = 0; c < NC; c++) {
            acc[q][c] = _mm512_setzero_ps();
        }
    }
    const uint8_t *wr[4];
    const float *wd[4];
    for (int q = 0; q < NQ; q++) {
        wr[2 * q] = ROWP(w, 2 * q, ws);
        wr[2 * q + 1] = ODD && q == NQ - 1 ? wr[2 * q] : ROWP(w, 2 * q + 1, ws);
        wd[2 * q] = (const float *)(const void *)(wr[2 * q] + n);
        wd[2 * q + 1] = (const float *)(const void *)(wr[2 * q + 1] + n);
    }
    /* FILE_W: Q8_0 blocks as the file has them, 34 bytes (f16 scale, then the 32 values) */
    const size_t wblk = FILE_W ? sizeof(struct hs_block_q8_0) : 32, wval = FILE_W ? 2 : 0;
    const float *xd[4];
    for (int c = 0; c < NC; c++) {
        xd[c] = (const float *)(const void *)(ROWP(x, c, xs) + n);
    }
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const int64_t nb = n / 32;
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * 32; /* into the activation rows */
        __m512i wq[2], negw[2];
        __m512 dw[2];
        for (int q = 0; q < NQ; q++) {
            const uint8_t *b0 = wr[2 * q] + (size_t)b * wblk,
                          *b1 = wr[2 * q + 1] + (size_t)b * wblk;
            wq[q] = _mm512_inserti64x4(
                _mm512_castsi256_si512(
                    _mm256_loadu_si256((const __m256i *)(const void *)(b0 + wval))),
                _mm256_loadu_si256((const __m256i *)(const void *)(b1 + wval)), 1);
            negw[q] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                       _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, wq[q]));
            if (FILE_W) {
                dw[q] = _mm512_cvtph_ps(_mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_set1_epi16((short)qblk_d(b0))),
                    _mm_set1_epi16((short)qblk_d(b1)), 1));
            } else {
                dw[q] = _mm512_insertf32x8(_mm512_set1_ps(wd[2 * q][b]),
                                           _mm256_set1_ps(wd[2 * q + 1][b]), 1);
            }
        }
        for (int c = 0; c < NC; c++) {
            const __m512i xq = _mm512_broadcast_i64x4(
                _mm256_load_si256((const __m256i *)(const void *)(ROWP(x, c, xs) + off)));
            const __m512 dx = _mm512_set1_ps(xd[c][b]);
            for (int q = 0; q < NQ; q++) {
                const __m512i dot = _mm512_dpbusd_epi32(negw[q], xq, wq[q]);
                acc[q][c] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dw[q], dx), _mm512_cvtepi32_ps(dot), acc[q][c]);
            }
        }
    }
    if (NQ == 2 && !ODD && NC == 4) {
        q8s_vnni_store_4x4(s, bs, acc);
        return;
    }
    for (int q = 0; q < NQ; q++) {
        for (int c = 0; c < NC; c++) {
            s[(size_t)c * bs + (size_t)(2 * q)] = hsum8(_mm512_castps512_ps256(acc[q][c]));
            if (!(ODD && q == NQ - 1)) {
                s[(size_t)c * bs + (size_t)(2 * q + 1)] =
                    hsum8(_mm512_extractf32x8_ps(acc[q][c], 1));
            }
        }
    }
}

INLINE void q8s_vnni_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                          size_t xs, int nr, const int NC, const int FILE_W)
{
    switch (nr) {
    case 1:
        q8s_vnni_sub(n, s, bs, w, ws, x, xs, 1, 1, NC, FILE_W);
        break;
    case 2:
        q8s_vnni_sub(n, s, bs, w, ws, x, xs, 1, 0, NC, FILE_W);
        break;
    case 3:
        q8s_vnni_sub(n, s, bs, w, ws, x, xs, 2, 1, NC, FILE_W);
        break;
    case 4:
        q8s_vnni_sub(n, s, bs, w, ws, x, xs, 2, 0, NC, FILE_W);
        break;
    default:
        HS_ASSERT(!"gemm_tile: nr must be in 1..4");
        break;
    }
}

INLINE void q8s_vnni_entry(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                           size_t xs, int nr, int nc, const int FILE_W)
{
    switch (nc) {
    case 1:
        q8s_vnni_tile(n, s, bs, w, ws, x, xs, nr, 1, FILE_W);
        break;
    case 2:
        q8s_vnni_tile(n, s, bs, w, ws, x, xs, nr, 2, FILE_W);
        break;
    case 3:
        q8s_vnni_tile(n, s, bs, w, ws, x, xs, nr, 3, FILE_W);
        break;
    case 4:
        q8s_vnni_tile(n, s, bs, w, ws, x, xs, nr, 4, FILE_W);
        break;
    default:
        HS_ASSERT(!"gemm_tile: nc must be in 1..4");
        break;
    }
}

void hs__gemm_tile_q8s_avx512vnni(int64_t n, float *s, size_t bs, const void *w, size_t ws,
                                  const void *x, size_t xs, int nr, int nc)
{
    q8s_vnni_entry(n, s, bs, w, ws, x, xs, nr, nc, 0);
}

/* The same tile on Q8_0 weights as the file has them (gemm_tile_xsplit: too few activation
 * rows to pay for converting the weights; split activations still spare the per-row offset
 * and the activation pair's correction of the file-layout tile). */
void hs__gemm_tile_q8x_avx512vnni(int64_t n, float *s, size_t bs, const void *w, size_t ws,
                                  const void *x, size_t xs, int nr, int nc)
{
    q8s_vnni_entry(n, s, bs, w, ws, x, xs, nr, nc, 1);
}

void hs__from_float_q8_k_avx512(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_k *y = vy;
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float *xb = x + b * HS_QK_K;
        __m512 m = _mm512_setzero_ps();
        for (int k = 0; k < 16; k++) {
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xb + 16 * k)));
        }
        const float amax = _mm512_reduce_max_ps(m);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof(y[b]));
            continue;
        }
        /* The first element of that magnitude gives the sign, as in ggml's scalar loop. */
        float max = 0.0f;
        const __m512 am = _mm512_set1_ps(amax);
        for (int k = 0; k < 16; k++) {
            const __mmask16 eq =
                _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(xb + 16 * k)), am, _CMP_EQ_OQ);
            if (eq) {
                max = xb[16 * k + __builtin_ctz((unsigned)eq)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m512 isv = _mm512_set1_ps(iscale);
        for (int k = 0; k < 16; k++) {
            /* cvtps rounds to nearest even, as ggml's nearest_int does. */
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * k), isv));
            q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(y[b].qs + 16 * k), _mm512_cvtsepi32_epi8(q));
            y[b].bsums[k] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ================================================================================================
 * Q4_K and Q5_K
 * ============================================================================================= */

INLINE __m512i madd_scaled(__m512i acc, __m512i p16, __m512i sc16, const int VNNI)
{
    if (VNNI) {
        return _mm512_dpwssd_epi32(acc, p16, sc16);
    }
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p16, sc16));
}

/* i16 index vector: lanes 0..15 -> a, 16..31 -> b (for permutexvar_epi16). */
INLINE __m512i idx_halves(int a, int b)
{
    return _mm512_inserti64x4(_mm512_set1_epi16((short)a), _mm256_set1_epi16((short)b), 1);
}

/* i16 index vector: lanes 8q..8q+7 -> base + q, q = 0..3. */
INLINE __m512i idx_quarters(int base)
{
    const __m128i a = _mm_set1_epi16((short)base), b = _mm_set1_epi16((short)(base + 1));
    const __m128i c = _mm_set1_epi16((short)(base + 2)), d = _mm_set1_epi16((short)(base + 3));
    const __m256i lo = _mm256_set_m128i(b, a), hi = _mm256_set_m128i(d, c);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* The lane sums of v[0..3] as lanes 0..3 (exact integers). */
INLINE __m128i reduce4_epi32(const __m512i v[4])
{
    __m128i h[4];
    for (int i = 0; i < 4; i++) {
        const __m256i a = _mm256_add_epi32(_mm512_castsi512_si256(v[i]),
                                           _mm512_extracti64x4_epi64(v[i], 1));
        h[i] = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    }
    return _mm_hadd_epi32(_mm_hadd_epi32(h[0], h[1]), _mm_hadd_epi32(h[2], h[3]));
}

/* A Q4_K / (FIVE) Q5_K super-block's weights (four 64-byte quarters, sub-blocks 2k and 2k + 1
 * in quarter k's halves), its scales as i16 lanes per quarter, its mins as i16 pairs (one per
 * bsums pair) and d, dmin. */
INLINE void q45_k_decode(const uint8_t *wbytes, __m512i q[4], __m512i scales[4], __m256i *mins,
                         float *d, float *dmin, const int FIVE)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const struct hs_block_q4_k *w4 = (const struct hs_block_q4_k *)(const void *)wbytes;
    const struct hs_block_q5_k *w5 = (const struct hs_block_q5_k *)(const void *)wbytes;
    const uint8_t *qs = FIVE ? w5->qs : w4->qs;
    uint8_t sc[8], mn[8];
    hs__unpack_scales_k4(FIVE ? w5->scales : w4->scales, sc, mn);
    uint64_t sc64, mn64;
    memcpy(&sc64, sc, 8);
    memcpy(&mn64, mn, 8);
    const __m512i scv =
        _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc64)));
    *mins = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(_mm_cvtsi64_si128((long long)mn64),
                         _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
    __m512i qh2 = _mm512_setzero_si512();
    if (FIVE) {
        const __m256i qh = _mm256_loadu_si256((const __m256i *)w5->qh);
        qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
    }
    for (int k = 0; k < 4; k++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
        const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
        q[k] = _mm512_and_si512(z, m4);
        if (FIVE) {
            /* Bits 2k (low half, sub-block 2k) and 2k + 1 (high half) of qh. */
            const __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * k)),
                                                   _mm256_set1_epi16((short)(2 * k + 1)), 1);
            const __m512i bit = _mm512_and_si512(_mm512_srlv_epi16(qh2, cnt), _mm512_set1_epi8(1));
            q[k] = _mm512_or_si512(q[k], _mm512_slli_epi16(bit, 4));
        }
        scales[k] = _mm512_permutexvar_epi16(idx_halves(2 * k, 2 * k + 1), scv);
    }
    *d = f16(FIVE ? w5->d : w4->d);
    *dmin = f16(FIVE ? w5->dmin : w4->dmin);
}

/* The super-block's scaled integer dot against activation block xb, in int32 lanes to be summed
 * (exact). */
INLINE __m512i q45_k_sumi(const __m512i q[4], const __m512i scales[4],
                          const struct hs_block_q8_k *xb, const int VNNI)
{
    __m512i sumi = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) {
        const __m512i xq = _mm512_loadu_si512((const void *)(xb->qs + 64 * k));
        sumi = madd_scaled(sumi, _mm512_maddubs_epi16(q[k], xq), scales[k], VNNI);
    }
    return sumi;
}

/* The min correction's int32 lanes, likewise. */
INLINE __m256i q45_k_pmin(__m256i mins, const struct hs_block_q8_k *xb)
{
    return _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums));
}

/* The super-block's scaled integer dot and min correction against activation block xb. */
INLINE void q45_k_dot(const __m512i q[4], const __m512i scales[4], __m256i mins,
                      const struct hs_block_q8_k *xb, int32_t *isum, int32_t *imin, const int VNNI)
{
    *isum = _mm512_reduce_add_epi32(q45_k_sumi(q, scales, xb, VNNI));
    *imin = _mm512_reduce_add_epi32(_mm512_zextsi256_si512(q45_k_pmin(mins, xb)));
}

/* Q4_K and (FIVE) Q5_K share the layout of d, dmin and scales; Q5_K adds qh, whose bit j of
 * byte l is the fifth bit of element 32 j + l.
 *
 * Float order of llama.cpp on AVX2 / AVX-512 CPUs, which repacks Q4_K weights (8 rows
 * interleaved, ggml_gemv / ggml_gemm_q4_K_8x8_q8_K): per super-block the scaled integer dot and
 * the min correction are exact integers; each feeds its own chain acc = fma(int, d_w * d_x, acc)
 * and accm = fma(int, dmin_w * d_x, accm); the result is acc - accm. Q5_K runs the same order
 * (its integer parts are exact either way; not checked against llama.cpp's Q5_K order). */
INLINE void q45_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                       size_t xs, const int NR, const int NC, const int VNNI, const int FIVE,
                       const int GGML)
{
    const size_t bsize = FIVE ? sizeof(struct hs_block_q5_k) : sizeof(struct hs_block_q4_k);
    float acc[4][4], accm[4][4];
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            acc[r][c] = 0.0f;
            accm[r][c] = 0.0f;
        }
    }
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        for (int r = 0; r < NR; r++) {
            __m512i q[4], scales[4];
            __m256i mins;
            float d, dmin;
            q45_k_decode(ROWP(w, r, ws) + (size_t)b * bsize, q, scales, &mins, &d, &dmin, FIVE);
            for (int c = 0; c < NC; c++) {
                const struct hs_block_q8_k *xb =
                    (const struct hs_block_q8_k *)(const void *)ROWP(x, c, xs) + b;
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);
                const __m256i pm = _mm256_madd_epi16(mins, bsums);
                const float dd = d * xb->d, dm = dmin * xb->d;
                if (GGML && NC == 4 && !FIVE) {
                    /* HS_CPU_GEMM_ORDER=ggml: ggml's Q4_K gemm (groups of 4 activation rows),
                     * one fma per 64 elements. Q5_K is not repacked by llama.cpp: its tiles keep the gemv
                     * order, the same bits as its vec_dot. */
                    int32_t pmin[8];
                    _mm256_storeu_si256((__m256i *)(void *)pmin, pm);
                    __m512i sk[4];
                    for (int k = 0; k < 4; k++) {
                        const __m512i xq = _mm512_loadu_si512((const void *)(xb->qs + 64 * k));
                        sk[k] = madd_scaled(_mm512_setzero_si512(), _mm512_maddubs_epi16(q[k], xq),
                                            scales[k], VNNI);
                    }
                    int32_t isk[4];
                    _mm_storeu_si128((__m128i *)(void *)isk, reduce4_epi32(sk));
                    for (int k = 0; k < 4; k++) {
                        acc[r][c] = fmaf((float)isk[k], dd, acc[r][c]);
                        accm[r][c] = fmaf((float)(pmin[2 * k] + pmin[2 * k + 1]), dm, accm[r][c]);
                    }
                    continue;
                }
                int32_t isum, imin;
                q45_k_dot(q, scales, mins, xb, &isum, &imin, VNNI);
                acc[r][c] = fmaf((float)isum, dd, acc[r][c]);
                accm[r][c] = fmaf((float)imin, dm, accm[r][c]);
            }
        }
    }
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            s[(size_t)c * bs + (size_t)r] = acc[r][c] - accm[r][c];
        }
    }
}
INLINE void q4_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, VNNI, 0, 0);
}

INLINE void q4_k_ggml_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws,
                           const void *x, size_t xs, const int NR, const int NC, const int VNNI)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, VNNI, 0, 1);
}

INLINE void q5_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, VNNI, 1, 0);
}
/* hs_gemv_fn for Q4_K and (FIVE) Q5_K (decode): passes of up to Q45K_GEMV_ROWS rows, each row's
 * two chains as q45_k_tile's (the same bits), the pass's span streamed ahead
 * (hs__gemv_stream). */
#define Q45K_GEMV_ROWS 8

/* Rows in lanes: lane r of acc / accm is row r's chain, updated by one fma a super-block as the
 * tile's scalar fmaf (the integer sums exact, d_w * d_x one float multiply). */
INLINE void q45_k_gemv_pass(int64_t n, float *s, const void *w, size_t ws, const void *x,
                            const int NR, const int VNNI, const int FIVE)
{
    const size_t bsize = FIVE ? sizeof(struct hs_block_q5_k) : sizeof(struct hs_block_q4_k);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    const int64_t nb = n / HS_QK_K;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        const struct hs_block_q8_k *xb = (const struct hs_block_q8_k *)x + b;
        const uint8_t *wb0 = (const uint8_t *)w + (size_t)b * bsize;
        __m256i sums[8], pmins[8];
        for (int r = 0; r < 8; r++) {
            sums[r] = _mm256_setzero_si256();
            pmins[r] = _mm256_setzero_si256();
            if (r < NR) {
                __m512i q[4], scales[4];
                __m256i mins;
                float d, dmin;
                q45_k_decode(ROWP(wb0, r, ws), q, scales, &mins, &d, &dmin, FIVE);
                const __m512i sumi = q45_k_sumi(q, scales, xb, VNNI);
                sums[r] = _mm256_add_epi32(_mm512_castsi512_si256(sumi),
                                           _mm512_extracti64x4_epi64(sumi, 1));
                pmins[r] = q45_k_pmin(mins, xb);
            }
        }
        const __m512 dd = gemv_scales(wb0, ws, NR, 4, xb->d);
        const __m512 dm = gemv_scales(wb0 + 2, ws, NR, 4, xb->d);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hs__reduce8_epi32(sums)),
                              _mm512_castps512_ps256(dd), acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hs__reduce8_epi32(pmins)),
                               _mm512_castps512_ps256(dm), accm);
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_sub_ps(acc, accm));
    for (int r = 0; r < NR; r++) {
        s[r] = out[r];
    }
}
INLINE void q4_k_gemv_pass(int64_t n, float *s, const void *w, size_t ws, const void *x,
                           const int NR, const int VNNI)
{
    q45_k_gemv_pass(n, s, w, ws, x, NR, VNNI, 0);
}
INLINE void q5_k_gemv_pass(int64_t n, float *s, const void *w, size_t ws, const void *x,
                           const int NR, const int VNNI)
{
    q45_k_gemv_pass(n, s, w, ws, x, NR, VNNI, 1);
}
GEMV_ENTRY_POINTS(q4_k, Q45K_GEMV_ROWS)
GEMV_ENTRY_POINTS(q5_k, Q45K_GEMV_ROWS)
TILE_ENTRY_POINTS(q4_k, avx512, 0)
TILE_ENTRY_POINTS(q4_k, avx512vnni, 1)
TILE_ENTRY_POINTS(q4_k_ggml, avx512, 0)
TILE_ENTRY_POINTS(q4_k_ggml, avx512vnni, 1)
TILE_ENTRY_POINTS(q5_k, avx512, 0)
TILE_ENTRY_POINTS(q5_k, avx512vnni, 1)

/* ================================================================================================
 * Q6_K
 * ============================================================================================= */

/* Float order of ggml's ggml_vec_dot_q6_K_q8_K on AVX2 / AVX-512 CPUs: per super-block, 8 exact
 * integer lanes, lane L holding q * q8 * scale over the elements e with e % 32 in 4L..4L+3,
 * minus 32 * (the scale times the q8 sum) of 16-element groups 2L and 2L + 1; then
 * acc = fma(d_x * d_w, lane, acc) in 8 float lanes, summed at the end (hi + lo halves, then
 * pairs). */

/* A Q6_K super-block's weights (0..63, four 64-byte quarters) and its scales as i16 lanes:
 * scales[k] per quarter for madd_scaled, *sc16 the 16 of them in order. */
INLINE void q6_k_decode(const struct hs_block_q6_k *wb, __m512i q[4], __m512i scales[4],
                        __m256i *sc16)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    /* Per 256-bit half: shift counts that bring the right 2 bits of qh to bits 4..5. */
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    for (int h = 0; h < 2; h++) {
        const __m512i ql = _mm512_loadu_si512((const void *)(wb->ql + 64 * h));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(wb->qh + 32 * h));
        const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
        q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                   _mm512_and_si512(_mm512_sllv_epi16(qh2, shl), m30));
        q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                       _mm512_and_si512(_mm512_srlv_epi16(qh2, shr), m30));
    }
    *sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)wb->scales));
    const __m512i sc512 = _mm512_castsi256_si512(*sc16);
    for (int k = 0; k < 4; k++) {
        scales[k] = _mm512_permutexvar_epi16(idx_quarters(4 * k), sc512);
    }
}

/* The super-block's 8 exact integer lanes against activation block xb. */
INLINE __m256i q6_k_dot(const __m512i q[4], const __m512i scales[4], __m256i sc16,
                        const struct hs_block_q8_k *xb, const int VNNI)
{
    __m512i sumi = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) {
        const __m512i xq = _mm512_loadu_si512((const void *)(xb->qs + 64 * k));
        sumi = madd_scaled(sumi, _mm512_maddubs_epi16(q[k], xq), scales[k], VNNI);
    }
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);
    const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5);
    return _mm256_sub_epi32(
        _mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1)), corr);
}

INLINE void q6_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    __m256 acc[4][4];
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            acc[r][c] = _mm256_setzero_ps();
        }
    }
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        for (int r = 0; r < NR; r++) {
            const struct hs_block_q6_k *wb =
                (const struct hs_block_q6_k *)(const void *)ROWP(w, r, ws) + b;
            __m512i q[4], scales[4];
            __m256i sc16;
            q6_k_decode(wb, q, scales, &sc16);
            const float d = f16(wb->d);
            for (int c = 0; c < NC; c++) {
                const struct hs_block_q8_k *xb =
                    (const struct hs_block_q8_k *)(const void *)ROWP(x, c, xs) + b;
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(xb->d * d),
                                            _mm256_cvtepi32_ps(q6_k_dot(q, scales, sc16, xb, VNNI)),
                                            acc[r][c]);
            }
        }
    }
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            s[(size_t)c * bs + (size_t)r] = hsum8(acc[r][c]);
        }
    }
}

/* hs_gemv_fn for Q6_K (decode): passes of up to Q6K_GEMV_ROWS rows, each row's chain as
 * q6_k_tile's (the same bits), the pass's span streamed ahead (hs__gemv_stream). */
#define Q6K_GEMV_ROWS 8
INLINE void q6_k_gemv_pass(int64_t n, float *s, const void *w, size_t ws, const void *x,
                           const int NR, const int VNNI)
{
    __m256 acc[Q6K_GEMV_ROWS];
    for (int r = 0; r < NR; r++) {
        acc[r] = _mm256_setzero_ps();
    }
    const int64_t nb = n / HS_QK_K;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        const struct hs_block_q8_k *xb = (const struct hs_block_q8_k *)x + b;
        for (int r = 0; r < NR; r++) {
            const struct hs_block_q6_k *wb =
                (const struct hs_block_q6_k *)(const void *)ROWP(w, r, ws) + b;
            __m512i q[4], scales[4];
            __m256i sc16;
            q6_k_decode(wb, q, scales, &sc16);
            acc[r] =
                _mm256_fmadd_ps(_mm256_set1_ps(xb->d * f16(wb->d)),
                                _mm256_cvtepi32_ps(q6_k_dot(q, scales, sc16, xb, VNNI)), acc[r]);
        }
    }
    for (int r = 0; r < NR; r++) {
        s[r] = hsum8(acc[r]);
    }
}

TILE_ENTRY_POINTS(q6_k, avx512, 0)
TILE_ENTRY_POINTS(q6_k, avx512vnni, 1)
GEMV_ENTRY_POINTS(q6_k, Q6K_GEMV_ROWS)

/* ================================================================================================
 * SwiGLU: silu(g) * u
 * ============================================================================================= */

/* exp(x) for 16 lanes, the same polynomial and operation order as ggml's ggml_v_expf on AVX-512
 * (after Arm's optimized-routines expf): x = n ln2 + b with n rounded by the 1.5 * 2^23 shifter,
 * b in two steps (ln2 split hi/lo), a degree-5 polynomial in b evaluated as
 * ((c5 b + c4) u + (c3 b + c2)) u + (c1 b + 1) with u = b^2, scaled by 2^n; |n| > 192 gives
 * +inf or 0. llama.cpp's SwiGLU uses it, so matching it bit for bit keeps the FFN identical. */
static inline __m512 expf16(__m512 x)
{
    const __m512 shifter = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), shifter);
    const __m512 n = _mm512_sub_ps(z, shifter);
    const __m512 b_hi = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f), b_hi);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 p45 = _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b,
                                       _mm512_set1_ps(0x1.573e2ep-5f));
    const __m512 p23 = _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b,
                                       _mm512_set1_ps(0x1.fffdb6p-2f));
    const __m512 p01 = _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f));
    const __m512 poly = _mm512_fmadd_ps(_mm512_fmadd_ps(p45, u, p23), u, p01);
    const __m512 res = _mm512_scalef_ps(poly, n);
    const __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    if (big == 0) {
        return res;
    }
    const __mmask16 neg = _mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ);
    const __m512 sat = _mm512_mask_blend_ps(neg, _mm512_set1_ps(INFINITY), _mm512_setzero_ps());
    return _mm512_mask_blend_ps(big, res, sat);
}

void hs__swiglu_f32_avx512(int64_t n, float *y, const float *g, const float *u)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 gv = _mm512_loadu_ps(g + i);
        const __m512 e = expf16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        const __m512 silu = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(silu, _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* ================================================================================================
 * Flash attention, f32 accumulation: one block of K/V rows against a tile of queries
 * ============================================================================================= */

void hs__attn_block_f32_avx512(int64_t hd, int64_t nq, int64_t ldq, int64_t nk, float scale,
                               const float *qt, const float *k, const float *v, const int32_t *last,
                               float *m, float *l, float *acc, float *st)
{
    const int64_t nqv = ldq / 16;
    const __m512 vscale = _mm512_set1_ps(scale);
    /* Scores, transposed: st[j][i] = scale * q_i . k_j, four K rows at a time. */
    for (int64_t j = 0; j < nk; j += 4) {
        const int64_t nj = HS_MIN(4, nk - j);
        for (int64_t c = 0; c < nqv; c++) {
            __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            const float *q = qt + c * 16;
            const float *k0 = k + j * hd;
            const float *k1 = k + (j + (nj > 1 ? 1 : 0)) * hd;
            const float *k2 = k + (j + (nj > 2 ? 2 : 0)) * hd;
            const float *k3 = k + (j + (nj > 3 ? 3 : 0)) * hd;
            for (int64_t d = 0; d < hd; d++) {
                const __m512 qd = _mm512_load_ps(q + d * ldq);
                s0 = _mm512_fmadd_ps(_mm512_set1_ps(k0[d]), qd, s0);
                s1 = _mm512_fmadd_ps(_mm512_set1_ps(k1[d]), qd, s1);
                s2 = _mm512_fmadd_ps(_mm512_set1_ps(k2[d]), qd, s2);
                s3 = _mm512_fmadd_ps(_mm512_set1_ps(k3[d]), qd, s3);
            }
            float *o = st + j * ldq + c * 16;
            _mm512_store_ps(o, _mm512_mul_ps(s0, vscale));
            if (nj > 1) {
                _mm512_store_ps(o + ldq, _mm512_mul_ps(s1, vscale));
            }
            if (nj > 2) {
                _mm512_store_ps(o + 2 * ldq, _mm512_mul_ps(s2, vscale));
            }
            if (nj > 3) {
                _mm512_store_ps(o + 3 * ldq, _mm512_mul_ps(s3, vscale));
            }
        }
    }
    /* Online softmax, 16 queries per vector: mask, new maxima, p = exp(s - m) in place of the
     * scores, and each query's rescale factor exp(m_old - m_new). */
    float ms_all[64];
    for (int64_t c = 0; c < nqv; c++) {
        const __m512i lastv = _mm512_loadu_si512((const void *)(last + c * 16));
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < nk; j++) {
            const __mmask16 ok = _mm512_cmple_epi32_mask(_mm512_set1_epi32((int32_t)j), lastv);
            __m512 s = _mm512_load_ps(st + j * ldq + c * 16);
            s = _mm512_mask_blend_ps(ok, _mm512_set1_ps(-INFINITY), s);
            _mm512_store_ps(st + j * ldq + c * 16, s);
            mx = _mm512_max_ps(mx, s);
        }
        const __m512 mold = _mm512_loadu_ps(m + c * 16);
        const __m512 mnew = _mm512_max_ps(mold, mx);
        /* A query with no position seen yet (mnew = -inf) keeps its state: p = 0, factor 1. */
        const __mmask16 live = _mm512_cmp_ps_mask(mnew, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        const __m512 ms =
            _mm512_mask_blend_ps(live, _mm512_set1_ps(1.0f), expf16(_mm512_sub_ps(mold, mnew)));
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < nk; j++) {
            const __m512 s = _mm512_load_ps(st + j * ldq + c * 16);
            const __m512 p = _mm512_maskz_mov_ps(live, expf16(_mm512_sub_ps(s, mnew)));
            _mm512_store_ps(st + j * ldq + c * 16, p);
            sum = _mm512_add_ps(sum, p);
        }
        _mm512_storeu_ps(m + c * 16, mnew);
        _mm512_storeu_ps(l + c * 16, _mm512_fmadd_ps(_mm512_loadu_ps(l + c * 16), ms, sum));
        _mm512_storeu_ps(ms_all + c * 16, ms);
    }
    /* acc_i = acc_i * ms_i + sum_j p_ji v_j: four queries by 64 columns per register tile. */
    for (int64_t d0 = 0; d0 < hd; d0 += 64) {
        const int64_t nd = HS_MIN(64, hd - d0) / 16;
        int64_t i = 0;
        for (; nd == 4 && i + 4 <= nq; i += 4) {
            __m512 r[4][4];
            for (int a = 0; a < 4; a++) {
                const __m512 f = _mm512_set1_ps(ms_all[i + a]);
                for (int b = 0; b < 4; b++) {
                    r[a][b] = _mm512_mul_ps(_mm512_loadu_ps(acc + (i + a) * hd + d0 + b * 16), f);
                }
            }
            for (int64_t j = 0; j < nk; j++) {
                const float *vj = v + j * hd + d0;
                const __m512 v0 = _mm512_loadu_ps(vj), v1 = _mm512_loadu_ps(vj + 16);
                const __m512 v2 = _mm512_loadu_ps(vj + 32), v3 = _mm512_loadu_ps(vj + 48);
                const float *pj = st + j * ldq + i;
                for (int a = 0; a < 4; a++) {
                    const __m512 p = _mm512_set1_ps(pj[a]);
                    r[a][0] = _mm512_fmadd_ps(p, v0, r[a][0]);
                    r[a][1] = _mm512_fmadd_ps(p, v1, r[a][1]);
                    r[a][2] = _mm512_fmadd_ps(p, v2, r[a][2]);
                    r[a][3] = _mm512_fmadd_ps(p, v3, r[a][3]);
                }
            }
            for (int a = 0; a < 4; a++) {
                for (int b = 0; b < 4; b++) {
                    _mm512_storeu_ps(acc + (i + a) * hd + d0 + b * 16, r[a][b]);
                }
            }
        }
        for (; i < nq; i++) {
            for (int64_t b = 0; b < nd; b++) {
                float *ap = acc + i * hd + d0 + b * 16;
                __m512 r = _mm512_mul_ps(_mm512_loadu_ps(ap), _mm512_set1_ps(ms_all[i]));
                for (int64_t j = 0; j < nk; j++) {
                    r = _mm512_fmadd_ps(_mm512_set1_ps(st[j * ldq + i]),
                                        _mm512_loadu_ps(v + j * hd + d0 + b * 16), r);
                }
                _mm512_storeu_ps(ap, r);
            }
        }
    }
}

#else
typedef int hs__quants_avx512_unavailable;
#endif
