/* AVX-512 (F/BW/VL/DQ) kernels, each int8 one built twice: with VNNI (vpdpbusd / vpdpwssd) and
 * without. Same template scheme as quants-avx2.c: always-inline tiles over constant (NR, NC);
 * vec_dot is the 1x1 instance. A row's weights are decoded once per block into registers and
 * reused for every activation row; activation blocks stay in L1 across weight rows. */
#include "backends/cpu/quants.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#include <string.h>

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

#define FLOAT_TILE(t)                                                                          \
    INLINE void t##_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws,            \
                         const void *x, size_t xs, const int NR, const int NC, int unused)     \
    {                                                                                          \
        (void)unused;                                                                          \
        __m512 acc[4][4];                                                                      \
        ACC_INIT(acc)                                                                          \
        for (int64_t i = 0; i < n; i += 16) {                                                  \
            const __mmask16 m =                                                                \
                n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);            \
            __m512 xv[4];                                                                      \
            for (int c = 0; c < NC; c++) {                                                     \
                xv[c] = load16_##t(ROWP(x, c, xs), i, m);                                      \
            }                                                                                  \
            for (int r = 0; r < NR; r++) {                                                     \
                const __m512 wv = load16_##t(ROWP(w, r, ws), i, m);                            \
                for (int c = 0; c < NC; c++) {                                                 \
                    acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);                         \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        ACC_STORE(acc)                                                                         \
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
 * Q8_0: two blocks per 512-bit register
 * ============================================================================================= */

/* The qs of blocks b and b + 1 (or b and zeros). */
INLINE __m512i q8_0_pair(const struct hs_block_q8_0 *blk, int two)
{
    const __m256i lo = _mm256_loadu_si256((const __m256i *)blk[0].qs);
    if (!two) {
        return _mm512_zextsi256_si512(lo);
    }
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                              _mm256_loadu_si256((const __m256i *)blk[1].qs), 1);
}

/* [d_b x 8, d_b+1 x 8] as floats (zeros for a missing second block): broadcast the halves,
 * convert once. */
INLINE __m512 q8_0_scales(const struct hs_block_q8_0 *blk, int two)
{
    const __m128i lo = _mm_set1_epi16((short)blk[0].d);
    const __m128i hi = two ? _mm_set1_epi16((short)blk[1].d) : _mm_setzero_si128();
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

/* With VNNI the weights are offset to unsigned (w + 128) so one vpdpbusd does the block; the
 * accumulator starts at -128 * sum(x) (per lane), which cancels the offset exactly. Without,
 * the sign trick: |w| * (x with w's sign), maddubs then madd. */
INLINE void q8_0_step(__m512 acc[4][4], int64_t b, int two, const void *w, size_t ws,
                      const void *x, size_t xs, const int NR, const int NC, const int VNNI)
{
    __m512i xq[4], negc[4];
    __m512 dx[4];
    for (int c = 0; c < NC; c++) {
        const struct hs_block_q8_0 *xb = (const struct hs_block_q8_0 *)(const void *)ROWP(x, c, xs) + b;
        xq[c] = q8_0_pair(xb, two);
        dx[c] = q8_0_scales(xb, two);
        if (VNNI) {
            negc[c] = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), xq[c]));
        } else {
            negc[c] = _mm512_setzero_si512();
        }
    }
    for (int r = 0; r < NR; r++) {
        const struct hs_block_q8_0 *wb = (const struct hs_block_q8_0 *)(const void *)ROWP(w, r, ws) + b;
        const __m512i wq = q8_0_pair(wb, two);
        const __m512 dw = q8_0_scales(wb, two);
        if (VNNI) {
            const __m512i wu = _mm512_xor_si512(wq, _mm512_set1_epi8((char)0x80));
            for (int c = 0; c < NC; c++) {
                const __m512i dot = _mm512_dpbusd_epi32(negc[c], wu, xq[c]);
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx[c]), _mm512_cvtepi32_ps(dot),
                                            acc[r][c]);
            }
        } else {
            const __m512i aw = _mm512_abs_epi8(wq);
            const __mmask64 neg = _mm512_movepi8_mask(wq);
            for (int c = 0; c < NC; c++) {
                const __m512i sx = _mm512_mask_sub_epi8(xq[c], neg, _mm512_setzero_si512(), xq[c]);
                const __m512i dot = _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx),
                                                      _mm512_set1_epi16(1));
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx[c]), _mm512_cvtepi32_ps(dot),
                                            acc[r][c]);
            }
        }
    }
}

INLINE void q8_0_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    __m512 acc[4][4];
    ACC_INIT(acc)
    const int64_t nb = n / 32;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        q8_0_step(acc, b, 1, w, ws, x, xs, NR, NC, VNNI);
    }
    if (b < nb) {
        q8_0_step(acc, b, 0, w, ws, x, xs, NR, NC, VNNI);
    }
    ACC_STORE(acc)
}
TILE_ENTRY_POINTS(q8_0, avx512, 0)
TILE_ENTRY_POINTS(q8_0, avx512vnni, 1)

/* ================================================================================================
 * Activation quantizers
 * ============================================================================================= */

/* roundf (ties away from zero), exactly: trunc, then step away where |remainder| >= 1/2. */
INLINE __m512i round_away(__m512 v)
{
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 rem = _mm512_sub_ps(v, t);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(rem), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 one = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
    return _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, one));
}

void hs__from_float_q8_0_avx512(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m512 idv = _mm512_set1_ps(id);
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtsepi32_epi8(round_away(_mm512_mul_ps(v0, idv))));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16),
                         _mm512_cvtsepi32_epi8(round_away(_mm512_mul_ps(v1, idv))));
    }
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

INLINE void unpack_scales_k4(const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    /* Bytes 0..3 hold scales 0..3 (low 6 bits) and the top bits of scales 4..7; bytes 4..7 the
     * same for mins; bytes 8..11 the low nibbles of scales 4..7 (low) and mins 4..7 (high).
     * Done on 32-bit words; every shift is masked back into its own byte. */
    uint32_t a, b, c;
    memcpy(&a, q, 4);
    memcpy(&b, q + 4, 4);
    memcpy(&c, q + 8, 4);
    const uint32_t sc_lo = a & 0x3f3f3f3fu, m_lo = b & 0x3f3f3f3fu;
    const uint32_t sc_hi = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
    const uint32_t m_hi = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
    memcpy(sc, &sc_lo, 4);
    memcpy(sc + 4, &sc_hi, 4);
    memcpy(m, &m_lo, 4);
    memcpy(m + 4, &m_hi, 4);
}

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

/* Q4_K and (FIVE) Q5_K share the layout of d, dmin and scales; Q5_K adds qh, whose bit j of
 * byte l is the fifth bit of element 32 j + l. */
INLINE void q45_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                       size_t xs, const int NR, const int NC, const int VNNI, const int FIVE)
{
    const size_t bsize = FIVE ? sizeof(struct hs_block_q5_k) : sizeof(struct hs_block_q4_k);
    __m512 acc[4][4];
    ACC_INIT(acc)
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        for (int r = 0; r < NR; r++) {
            const uint8_t *wbytes = ROWP(w, r, ws) + (size_t)b * bsize;
            const struct hs_block_q4_k *w4 = (const struct hs_block_q4_k *)(const void *)wbytes;
            const struct hs_block_q5_k *w5 = (const struct hs_block_q5_k *)(const void *)wbytes;
            const uint8_t *qs = FIVE ? w5->qs : w4->qs;
            uint8_t sc[8], mn[8];
            unpack_scales_k4(FIVE ? w5->scales : w4->scales, sc, mn);
            uint64_t sc64, mn64;
            memcpy(&sc64, sc, 8);
            memcpy(&mn64, mn, 8);
            const __m512i scv =
                _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc64)));
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
                _mm_cvtsi64_si128((long long)mn64),
                _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
            __m512i q[4], scales[4], qh2 = _mm512_setzero_si512();
            if (FIVE) {
                const __m256i qh = _mm256_loadu_si256((const __m256i *)w5->qh);
                qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
            }
            for (int k = 0; k < 4; k++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                const __m512i z =
                    _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
                q[k] = _mm512_and_si512(z, m4);
                if (FIVE) {
                    /* Bits 2k (low half, sub-block 2k) and 2k + 1 (high half) of qh. */
                    const __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * k)),
                                                           _mm256_set1_epi16((short)(2 * k + 1)), 1);
                    const __m512i bit =
                        _mm512_and_si512(_mm512_srlv_epi16(qh2, cnt), _mm512_set1_epi8(1));
                    q[k] = _mm512_or_si512(q[k], _mm512_slli_epi16(bit, 4));
                }
                scales[k] = _mm512_permutexvar_epi16(idx_halves(2 * k, 2 * k + 1), scv);
            }
            const float d = f16(FIVE ? w5->d : w4->d), dmin = f16(FIVE ? w5->dmin : w4->dmin);
            for (int c = 0; c < NC; c++) {
                const struct hs_block_q8_k *xb =
                    (const struct hs_block_q8_k *)(const void *)ROWP(x, c, xs) + b;
                __m512i sumi = _mm512_setzero_si512();
                for (int k = 0; k < 4; k++) {
                    const __m512i xq = _mm512_loadu_si512((const void *)(xb->qs + 64 * k));
                    sumi = madd_scaled(sumi, _mm512_maddubs_epi16(q[k], xq), scales[k], VNNI);
                }
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);
                const __m256 pm = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bsums));
                acc[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(d * xb->d), _mm512_cvtepi32_ps(sumi),
                                            acc[r][c]);
                acc[r][c] = _mm512_fnmadd_ps(_mm512_set1_ps(dmin * xb->d),
                                             _mm512_zextps256_ps512(pm), acc[r][c]);
            }
        }
    }
    ACC_STORE(acc)
}
INLINE void q4_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, VNNI, 0);
}

INLINE void q5_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, VNNI, 1);
}
TILE_ENTRY_POINTS(q4_k, avx512, 0)
TILE_ENTRY_POINTS(q4_k, avx512vnni, 1)
TILE_ENTRY_POINTS(q5_k, avx512, 0)
TILE_ENTRY_POINTS(q5_k, avx512vnni, 1)

/* ================================================================================================
 * Q6_K
 * ============================================================================================= */

INLINE void q6_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC, const int VNNI)
{
    __m512 acc[4][4];
    ACC_INIT(acc)
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    /* Per 256-bit half: shift counts that bring the right 2 bits of qh to bits 4..5. */
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        for (int r = 0; r < NR; r++) {
            const struct hs_block_q6_k *wb =
                (const struct hs_block_q6_k *)(const void *)ROWP(w, r, ws) + b;
            __m512i q[4], scales[4];
            for (int h = 0; h < 2; h++) {
                const __m512i ql = _mm512_loadu_si512((const void *)(wb->ql + 64 * h));
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(wb->qh + 32 * h));
                const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
                q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                           _mm512_and_si512(_mm512_sllv_epi16(qh2, shl), m30));
                q[2 * h + 1] =
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                    _mm512_and_si512(_mm512_srlv_epi16(qh2, shr), m30));
            }
            const __m256i sc16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)wb->scales));
            const __m512i sc512 = _mm512_castsi256_si512(sc16);
            for (int k = 0; k < 4; k++) {
                scales[k] = _mm512_permutexvar_epi16(idx_quarters(4 * k), sc512);
            }
            const float d = f16(wb->d);
            for (int c = 0; c < NC; c++) {
                const struct hs_block_q8_k *xb =
                    (const struct hs_block_q8_k *)(const void *)ROWP(x, c, xs) + b;
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);
                const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5);
                __m512i sumi = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), corr));
                for (int k = 0; k < 4; k++) {
                    const __m512i xq = _mm512_loadu_si512((const void *)(xb->qs + 64 * k));
                    sumi = madd_scaled(sumi, _mm512_maddubs_epi16(q[k], xq), scales[k], VNNI);
                }
                acc[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(d * xb->d), _mm512_cvtepi32_ps(sumi),
                                            acc[r][c]);
            }
        }
    }
    ACC_STORE(acc)
}
TILE_ENTRY_POINTS(q6_k, avx512, 0)
TILE_ENTRY_POINTS(q6_k, avx512vnni, 1)

#else
typedef int hs__quants_avx512_unavailable;
#endif
