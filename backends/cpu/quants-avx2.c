/* AVX2 + FMA + F16C kernels. Tiles are written once as always-inline templates over (NR, NC)
 * and instantiated for each of the 16 shapes, so accumulators live in registers; vec_dot is the
 * 1x1 instance, so a tile and vec_dot give bit-identical results (with HS_CPU_GEMM_ORDER=ggml
 * not Q4_K's tiles of 4 activation rows, as on AVX-512).
 *
 * F32, F16, Q8_0 and the K-quants compute bit for bit what
 * quants-avx512.c computes (llama.cpp's arithmetic on AVX-512 CPUs, where tests/model's
 * references come from), its 16-lane orders held in pairs of 8-lane registers. Q4_0, Q5_0, Q4_1
 * and Q5_1 have no AVX-512 kernels of their own: these serve both ISAs. */
#include "backends/cpu/quants.h"

#if defined(__AVX2__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backends/cpu/gemv-inl.h"

#define INLINE static inline __attribute__((always_inline))

/* ================================================================================================
 * Helpers
 * ============================================================================================= */

INLINE float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* Weight rows stream from memory: fetch the lines 4 KiB past [p, p + bytes) into L1, or the
 * block-at-a-time kernels keep too few loads in flight. */
INLINE void prefetch_ahead(const uint8_t *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64) {
        _mm_prefetch((const char *)p + 4096 + o, _MM_HINT_T0);
    }
}

/* For tiles that take one wsize-byte block b of each of NR weight rows per step: prefetch_ahead
 * once per 64-byte line of the rows (SmolLM-135M Q8_0 decode on 2 Zen 3 threads: 78 -> 120
 * t/s). */
INLINE void prefetch_rows(const void *w, size_t ws, const int NR, int64_t b, size_t wsize)
{
    if ((size_t)b * wsize % 64 < wsize) {
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)w + (size_t)r * ws + (size_t)b * wsize + 4096, _MM_HINT_T0);
        }
    }
}

/* Instantiates fn_tile for every (nr, nc) in 1..4 plus the vec_dot wrapper. */
/* clang-format off */
#define TILE_ENTRY_POINTS(t, isa)                                                              \
    void hs__gemm_tile_##t##_##isa(int64_t n, float *s, size_t bs, const void *w,             \
                                   size_t ws, const void *x, size_t xs, int nr, int nc)       \
    {                                                                                          \
        switch ((nr - 1) * 4 + (nc - 1)) {                                                     \
        case 0: t##_tile(n, s, bs, w, ws, x, xs, 1, 1); break;                                 \
        case 1: t##_tile(n, s, bs, w, ws, x, xs, 1, 2); break;                                 \
        case 2: t##_tile(n, s, bs, w, ws, x, xs, 1, 3); break;                                 \
        case 3: t##_tile(n, s, bs, w, ws, x, xs, 1, 4); break;                                 \
        case 4: t##_tile(n, s, bs, w, ws, x, xs, 2, 1); break;                                 \
        case 5: t##_tile(n, s, bs, w, ws, x, xs, 2, 2); break;                                 \
        case 6: t##_tile(n, s, bs, w, ws, x, xs, 2, 3); break;                                 \
        case 7: t##_tile(n, s, bs, w, ws, x, xs, 2, 4); break;                                 \
        case 8: t##_tile(n, s, bs, w, ws, x, xs, 3, 1); break;                                 \
        case 9: t##_tile(n, s, bs, w, ws, x, xs, 3, 2); break;                                 \
        case 10: t##_tile(n, s, bs, w, ws, x, xs, 3, 3); break;                                \
        case 11: t##_tile(n, s, bs, w, ws, x, xs, 3, 4); break;                                \
        case 12: t##_tile(n, s, bs, w, ws, x, xs, 4, 1); break;                                \
        case 13: t##_tile(n, s, bs, w, ws, x, xs, 4, 2); break;                                \
        case 14: t##_tile(n, s, bs, w, ws, x, xs, 4, 3); break;                                \
        case 15: t##_tile(n, s, bs, w, ws, x, xs, 4, 4); break;                                \
        default: HS_ASSERT(!"gemm_tile: nr and nc must be in 1..4"); break;                    \
        }                                                                                      \
    }                                                                                          \
    void hs__vec_dot_##t##_##isa(int64_t n, float *s, const void *w, const void *x)           \
    {                                                                                          \
        t##_tile(n, s, 0, w, 0, x, 0, 1, 1);                                                   \
    }
/* clang-format on */

#define ROWP(base, i, stride) ((const uint8_t *)(base) + (size_t)(i) * (stride))

/* ================================================================================================
 * F32 / F16 / BF16
 * ============================================================================================= */

/* load8(p, i): 8 floats from element i of a row of the given type. */
INLINE __m256 load8_f32(const void *p, int64_t i)
{
    return _mm256_loadu_ps((const float *)p + i);
}
INLINE __m256 load8_f16(const void *p, int64_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
INLINE __m256 load8_bf16(const void *p, int64_t i)
{
    const __m256i v =
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
INLINE float load1_bf16(const void *p, int64_t i)
{
    return hs_bf16_to_fp32(((const uint16_t *)p)[i]);
}

/* F32 and F16 compute what the AVX-512 kernels compute (ggml_vec_dot_f32 / _f16 on AVX-512, the
 * order of llama.cpp's references): four 16-lane FMA accumulators k over 64-element steps, each
 * held here as two 8-lane halves, so 8 chains ("slices") per dot, slice 2k + h over elements
 * 16k + 8h .. +8 of each step; (a0 + a2) + (a1 + a3) per half; _mm512_reduce_add_ps's tree is
 * lo + hi, then hsum_ps's; then the tail.
 *
 * That is 8 registers of state per dot product, so t##_sub runs a block of NR x NC dots (at most
 * 8 accumulators) in passes over SP slices each, every pass over the whole row: each chain still
 * sees its elements in order. One dot runs in one pass (as vec_dot, streaming its row once);
 * tiles run 2 x 4 blocks (8 passes of one slice: 6 loads per 8 FMAs, on rows that stay in L1);
 * a tile of one activation row (decode) runs its weight rows together in 4 passes of 2 slices,
 * sharing each activation load. */
#define FLOAT_TILE16(t)                                                                            \
    INLINE void t##_sub(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,   \
                        size_t xs, const int NR, const int NC)                                     \
    {                                                                                              \
        const int SP = 8 / (NR * NC) > 0 ? 8 / (NR * NC) : 1; /* slices per pass */                \
        const int64_t np = n & ~(int64_t)63;                                                       \
        __m256 fin[4][4][8];                                                                       \
        for (int s0 = 0; s0 < 8; s0 += SP) {                                                       \
            __m256 acc[4][4][8];                                                                   \
            for (int r = 0; r < NR; r++) {                                                         \
                for (int c = 0; c < NC; c++) {                                                     \
                    for (int q = 0; q < SP; q++) {                                                 \
                        acc[r][c][q] = _mm256_setzero_ps();                                        \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            for (int64_t i = 0; i < np; i += 64) {                                                 \
                for (int q = 0; q < SP; q++) {                                                     \
                    const int64_t e = i + 8 * (s0 + q);                                            \
                    __m256 xv[4];                                                                  \
                    for (int c = 0; c < NC; c++) {                                                 \
                        xv[c] = load8_##t(ROWP(x, c, xs), e);                                      \
                    }                                                                              \
                    for (int r = 0; r < NR; r++) {                                                 \
                        const __m256 wv = load8_##t(ROWP(w, r, ws), e);                            \
                        for (int c = 0; c < NC; c++) {                                             \
                            acc[r][c][q] = _mm256_fmadd_ps(wv, xv[c], acc[r][c][q]);               \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            for (int r = 0; r < NR; r++) {                                                         \
                for (int c = 0; c < NC; c++) {                                                     \
                    for (int q = 0; q < SP; q++) {                                                 \
                        fin[r][c][s0 + q] = acc[r][c][q];                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            for (int c = 0; c < NC; c++) {                                                         \
                __m256 half[2];                                                                    \
                for (int h = 0; h < 2; h++) {                                                      \
                    const __m256 a02 = _mm256_add_ps(fin[r][c][0 + h], fin[r][c][4 + h]);          \
                    const __m256 a13 = _mm256_add_ps(fin[r][c][2 + h], fin[r][c][6 + h]);          \
                    half[h] = _mm256_add_ps(a02, a13);                                             \
                }                                                                                  \
                const float red = hsum_ps(_mm256_add_ps(half[0], half[1]));                        \
                s[(size_t)c * bs + (size_t)r] =                                                    \
                    quant_dot_tail_##t(red, ROWP(w, r, ws), ROWP(x, c, xs), np, n);                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    INLINE void t##_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,  \
                         size_t xs, const int NR, const int NC)                                    \
    {                                                                                              \
        if (NC == 1) {                                                                             \
            t##_sub(n, s, bs, w, ws, x, xs, NR, 1);                                                \
            return;                                                                                \
        }                                                                                          \
        for (int r = 0; r < NR; r += 2) {                                                          \
            if (NR - r >= 2) {                                                                     \
                t##_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 2, NC);                           \
            } else {                                                                               \
                t##_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 1, NC);                           \
            }                                                                                      \
        }                                                                                          \
    }

/* BF16 (which the AVX-512 tables run through this code too): one 8-lane accumulator per dot. */
#define FLOAT_TILE8(t)                                                                             \
    INLINE void t##_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,  \
                         size_t xs, const int NR, const int NC)                                    \
    {                                                                                              \
        __m256 acc[4][4];                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            for (int c = 0; c < NC; c++) {                                                         \
                acc[r][c] = _mm256_setzero_ps();                                                   \
            }                                                                                      \
        }                                                                                          \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8) {                                                               \
            __m256 xv[4];                                                                          \
            for (int c = 0; c < NC; c++) {                                                         \
                xv[c] = load8_##t(ROWP(x, c, xs), i);                                              \
            }                                                                                      \
            for (int r = 0; r < NR; r++) {                                                         \
                const __m256 wv = load8_##t(ROWP(w, r, ws), i);                                    \
                for (int c = 0; c < NC; c++) {                                                     \
                    acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);                             \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            for (int c = 0; c < NC; c++) {                                                         \
                float sum = hsum_ps(acc[r][c]);                                                    \
                for (int64_t k = i; k < n; k++) {                                                  \
                    sum += load1_##t(ROWP(w, r, ws), k) * load1_##t(ROWP(x, c, xs), k);            \
                }                                                                                  \
                s[(size_t)c * bs + (size_t)r] = sum;                                               \
            }                                                                                      \
        }                                                                                          \
    }

FLOAT_TILE16(f32)
FLOAT_TILE16(f16)
FLOAT_TILE8(bf16)
TILE_ENTRY_POINTS(f32, avx2)
TILE_ENTRY_POINTS(f16, avx2)
TILE_ENTRY_POINTS(bf16, avx2)

void hs__from_float_f16_avx2(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(y + i), h);
    }
    for (; i < n; i++) {
        y[i] = hs_fp32_to_fp16(x[i]);
    }
}

void hs__to_float_f16_avx2(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, load8_f16(x, i));
    }
    for (; i < n; i++) {
        y[i] = f16(x[i]);
    }
}

void hs__from_float_bf16_avx2(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    int64_t i = 0;
    /* Round to nearest even on the bits; NaNs are left to the scalar code. */
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0) {
            break;
        }
        const __m256i u = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        const __m256i r = _mm256_srli_epi32(
            _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        const __m128i p =
            _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128((__m128i *)(y + i), p);
    }
    for (; i < n; i++) {
        y[i] = hs_fp32_to_bf16(x[i]);
    }
}

void hs__to_float_bf16_avx2(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, load8_bf16(x, i));
    }
    for (; i < n; i++) {
        y[i] = hs_bf16_to_fp32(x[i]);
    }
}

/* ================================================================================================
 * Q8_0, Q5_0 and Q4_0 (activations Q8_0)
 * ============================================================================================= */

/* 16 bytes of packed nibbles as 32 bytes: low nibbles (elements 0..15), then high (16..31). */
INLINE __m256i nibbles_32(const uint8_t *qs)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}

/* The f16 scales at p[0], p[stride], ... (N of them, the rest 0) as 4 floats: gathered in a
 * general register, one conversion, where one f16 at a time costs vector-pipe work per pair. */
INLINE __m128 f16x4(const void *p, size_t stride, const int N)
{
    uint64_t h = 0;
    for (int i = 0; i < N; i++) {
        h |= (uint64_t) * (const uint16_t *)(const void *)ROWP(p, i, stride) << (16 * i);
    }
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)h));
}

/* Tiles of Q8_0 activations against weights of 32-element blocks whose first field is the f16
 * scale. Per block pair the exact int32 lanes of the integer dot (t##_dot: 8 lanes, lane k the
 * sum of elements 4k .. 4k + 3), then acc = fma(d_w * d_x, lanes, acc), one 8-lane chain per
 * (row, column) in block order, hsum at the end: what vec_dot computes, whatever the shape.
 *
 * Register blocking: at most Q80_MAX_ACC chains run in one pass over the row (16 ymm registers
 * hold them, the weight block, its prepared form and a temporary; more spill, and a spilled
 * chain waits on store forwarding every block), a 4 x 4 tile in passes of 2 x 4, the activation
 * blocks re-read from L1. The NR x NC products d_w * d_x (exact: two f16 values) are made 4 at
 * a time per block and broadcast from memory, a load where a scalar multiply and broadcast per
 * pair took two vector-pipe slots of the ~7 per pair (bench-kernels, SmolLM-135M ffn_up shape,
 * 1 thread, 4 x 4 tiles: Q8_0 49.6 -> 58.1 GOP/s). One activation row (decode) keeps the
 * scalar products, which cost it less. The floor of this order on Zen 3 is the 5 vector ops per
 * pair (sign, maddubs, madd, cvt, fma; the Q5_0 form trades the sign for a subtract): about
 * 0.93 ns a pair on this VM against 1.12 here. t##_prep makes a weight block's per-row form,
 * t##_xprep an activation block's per-column extra (the Q5_0 offset sums). */
#define Q80_MAX_ACC 12
#define Q80_ACT_TILE(t, wsize)                                                                     \
    INLINE void t##_sub(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,   \
                        size_t xs, const int NR, const int NC)                                     \
    {                                                                                              \
        __m256 acc[4][4];                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            for (int c = 0; c < NC; c++) {                                                         \
                acc[r][c] = _mm256_setzero_ps();                                                   \
            }                                                                                      \
        }                                                                                          \
        const int64_t nb = n / 32;                                                                 \
        for (int64_t b = 0; b < nb; b++) {                                                         \
            prefetch_rows(w, ws, NR, b, (wsize));                                                  \
            const uint8_t *xb0 = ROWP(x, 0, 0) + (size_t)b * sizeof(struct hs_block_q8_0);         \
            const uint8_t *wb0 = ROWP(w, 0, 0) + (size_t)b * (wsize);                              \
            float sc[4][4];                                                                        \
            if (NC == 1) {                                                                         \
                const float dx = f16(*(const uint16_t *)(const void *)xb0);                        \
                for (int r = 0; r < NR; r++) {                                                     \
                    sc[r][0] = f16(*(const uint16_t *)(const void *)ROWP(wb0, r, ws)) * dx;        \
                }                                                                                  \
            } else {                                                                               \
                const __m128 dx = f16x4(xb0, xs, NC);                                              \
                float dwv[4];                                                                      \
                _mm_storeu_ps(dwv, f16x4(wb0, ws, NR));                                            \
                for (int r = 0; r < NR; r++) {                                                     \
                    _mm_storeu_ps(sc[r], _mm_mul_ps(_mm_broadcast_ss(&dwv[r]), dx));               \
                }                                                                                  \
            }                                                                                      \
            __m256i xe[4];                                                                         \
            for (int c = 0; c < NC; c++) {                                                         \
                xe[c] = t##_xprep(ROWP(xb0, c, xs));                                               \
            }                                                                                      \
            for (int r = 0; r < NR; r++) {                                                         \
                const uint8_t *wb = ROWP(wb0, r, ws);                                              \
                __m256i wq, wp;                                                                    \
                t##_prep(wb, &wq, &wp);                                                            \
                for (int c = 0; c < NC; c++) {                                                     \
                    const __m256i xq = _mm256_loadu_si256(                                         \
                        (const __m256i *)((const struct hs_block_q8_0 *)(const void *)ROWP(        \
                                              xb0, c, xs))                                         \
                            ->qs);                                                                 \
                    const __m256 p = _mm256_cvtepi32_ps(t##_dot(wq, wp, xq, xe[c]));               \
                    const __m256 d = NC == 1 ? _mm256_set1_ps(sc[r][0])                            \
                                             : _mm256_broadcast_ss(&sc[r][c]);                     \
                    acc[r][c] = _mm256_fmadd_ps(d, p, acc[r][c]);                                  \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            for (int c = 0; c < NC; c++) {                                                         \
                s[(size_t)c * bs + (size_t)r] = hsum_ps(acc[r][c]);                                \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    INLINE void t##_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,  \
                         size_t xs, const int NR, const int NC)                                    \
    {                                                                                              \
        const int RG = HS_MAX(1, HS_MIN(NR, Q80_MAX_ACC / NC));                                    \
        for (int r = 0; r < NR; r += RG) {                                                         \
            const int nr = HS_MIN(RG, NR - r);                                                     \
            if (nr == RG) {                                                                        \
                t##_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, RG, NC);                          \
            } else if (nr == 1) {                                                                  \
                t##_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 1, NC);                           \
            } else if (nr == 2) {                                                                  \
                t##_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 2, NC);                           \
            } else {                                                                               \
                t##_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 3, NC);                           \
            }                                                                                      \
        }                                                                                          \
    }

/* Q8_0: 16-bit pairwise products of |w| and sign(w) * x (both signed bytes) summed into 8 x
 * i32; |w| once per weight block. */
INLINE void q8_0_prep(const uint8_t *wb, __m256i *wq, __m256i *wp)
{
    *wq = _mm256_loadu_si256((const __m256i *)((const struct hs_block_q8_0 *)(const void *)wb)->qs);
    *wp = _mm256_sign_epi8(*wq, *wq);
}
INLINE __m256i q8_0_xprep(const uint8_t *xb)
{
    (void)xb;
    return _mm256_setzero_si256();
}
INLINE __m256i q8_0_dot(__m256i wq, __m256i wp, __m256i xq, __m256i xe)
{
    (void)xe;
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wp, _mm256_sign_epi8(xq, wq)),
                             _mm256_set1_epi16(1));
}

Q80_ACT_TILE(q8_0, sizeof(struct hs_block_q8_0))

/* Prompt tiles on the split form (hs_quant_kernels.gemm_tile_split): weights and activations
 * both as a row's int8 values in 32-byte aligned blocks, then its block scales as floats (the
 * f16 values widened exactly); mm_range (matmul.c) splits a chunk of weight rows once and runs
 * every activation group over it. vec_dot's order for Q8_0, and Q5_0's too (its tiles' int32
 * lanes are the same exact sums): per block pair acc = fma(d_w * d_x, the 8 exact int32 lanes
 * of the sign / maddubs / madd dot, acc), hsum at the end. What it saves against the file
 * layout's tiles: every other 32-byte quant load of 34-byte blocks split across two cache
 * lines; each block's d_w * d_x products stored and at once read back as broadcasts (they are
 * made here for a run of Q8S_RUN blocks before the run); Q5_0's bit unpacking and offset sums
 * per pass; a prefetch per block. Passes of Q8S_ROWS(NC) weight rows, their blocks and
 * magnitudes held in registers, each activation block loaded once a pass. */
#define Q8S_RUN 32

INLINE const float *q8s_scales(const void *row, int64_t n)
{
    return (const float *)(const void *)((const uint8_t *)row + n);
}

INLINE void q8s_sub(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                    size_t xs, const int NR, const int NC)
{
    __m256 acc[4][4];
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            acc[r][c] = _mm256_setzero_ps();
        }
    }
    const int64_t nb = n / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    _Alignas(32) float sc[4][4][Q8S_RUN]; /* [r][c][block of the run] */
    for (int64_t b0 = 0; b0 < nb; b0 += Q8S_RUN) {
        const int64_t nrun = HS_MIN(Q8S_RUN, nb - b0);
        /* 8 blocks' products per vector: each row's scales are contiguous, padded with zeros
         * to a multiple of 8 (products past the run are made and not read) */
        for (int64_t i = 0; i < nrun; i += 8) {
            __m256 dx[4];
            for (int c = 0; c < NC; c++) {
                dx[c] = _mm256_loadu_ps(q8s_scales(ROWP(x, c, xs), n) + b0 + i);
            }
            for (int r = 0; r < NR; r++) {
                const __m256 dw = _mm256_loadu_ps(q8s_scales(ROWP(w, r, ws), n) + b0 + i);
                for (int c = 0; c < NC; c++) {
                    _mm256_store_ps(&sc[r][c][i], _mm256_mul_ps(dw, dx[c]));
                }
            }
        }
        for (int64_t i = 0; i < nrun; i++) {
            const size_t off = (size_t)(b0 + i) * 32;
            __m256i wq[4], wp[4];
            for (int r = 0; r < NR; r++) {
                wq[r] = _mm256_load_si256((const __m256i *)(const void *)(ROWP(w, r, ws) + off));
                wp[r] = _mm256_sign_epi8(wq[r], wq[r]);
            }
            for (int c = 0; c < NC; c++) {
                const __m256i xq =
                    _mm256_load_si256((const __m256i *)(const void *)(ROWP(x, c, xs) + off));
                for (int r = 0; r < NR; r++) {
                    const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(
                        _mm256_maddubs_epi16(wp[r], _mm256_sign_epi8(xq, wq[r])), ones));
                    acc[r][c] = _mm256_fmadd_ps(_mm256_broadcast_ss(&sc[r][c][i]), p, acc[r][c]);
                }
            }
        }
    }
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            s[(size_t)c * bs + (size_t)r] = hsum_ps(acc[r][c]);
        }
    }
}

/* Rows per pass for NC activation rows: NR x NC chains and 2 NR weight registers in 16. */
#define Q8S_ROWS(NC) ((NC) >= 3 ? 2 : (NC) == 2 ? 3 : 4)

INLINE void q8s_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                     size_t xs, const int NR, const int NC)
{
    const int RG = Q8S_ROWS(NC);
    for (int r = 0; r < NR; r += RG) {
        const int nr = HS_MIN(RG, NR - r);
        if (nr == 1) {
            q8s_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 1, NC);
        } else if (nr == 2) {
            q8s_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 2, NC);
        } else if (nr == 3) {
            q8s_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 3, NC);
        } else {
            q8s_sub(n, s + r, bs, ROWP(w, r, ws), ws, x, xs, 4, NC);
        }
    }
}

void hs__gemm_tile_q8s_avx2(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                            size_t xs, int nr, int nc)
{
    switch (nc) {
    case 1:
        q8s_tile(n, s, bs, w, ws, x, xs, nr, 1);
        break;
    case 2:
        q8s_tile(n, s, bs, w, ws, x, xs, nr, 2);
        break;
    case 3:
        q8s_tile(n, s, bs, w, ws, x, xs, nr, 3);
        break;
    case 4:
        q8s_tile(n, s, bs, w, ws, x, xs, nr, 4);
        break;
    default:
        HS_ASSERT(!"gemm_tile: nc must be in 1..4");
        break;
    }
}

/* hs__split_rows_<t>_avx2: weight rows of block type T in the split form, VALUES(block) giving a
 * block's 32 signed values as bytes, the scales widened. */
#define SPLIT_ROWS(t, T, VALUES)                                                                   \
    void hs__split_rows_##t##_avx2(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst, \
                                   size_t ds)                                                      \
    {                                                                                              \
        for (int64_t r = 0; r < n_rows; r++) {                                                     \
            const T *blk = (const T *)(const void *)ROWP(w, r, ws);                                \
            uint8_t *q = (uint8_t *)dst + (size_t)r * ds;                                          \
            float *d = (float *)(void *)(q + n);                                                   \
            int64_t b = 0;                                                                         \
            for (; b < n / 32; b++) {                                                              \
                _mm256_store_si256((__m256i *)(void *)(q + b * 32), VALUES(&blk[b]));              \
                d[b] = f16(blk[b].d);                                                              \
            }                                                                                      \
            for (; b % 8; b++) {                                                                   \
                d[b] = 0.0f;                                                                       \
            }                                                                                      \
        }                                                                                          \
    }

/* Q8_0: the quants as they are. */
INLINE __m256i q8_0_values(const struct hs_block_q8_0 *blk)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)blk->qs);
}
SPLIT_ROWS(q8_0, struct hs_block_q8_0, q8_0_values)

/* Q5_0 / Q5_1: byte i of the result is 0xFF where bit i of the block's qh[4] is set. */
INLINE __m256i high_bits_32(const uint8_t *qh4)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof(qh));
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)qh), _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                       0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

/* Signed weights in -16..15: a clear fifth bit means value - 16, i.e. the nibble | 0xF0. */
INLINE __m256i q5_0_weights(const void *blk)
{
    return _mm256_or_si256(
        nibbles_32(((const struct hs_block_q5_0 *)blk)->qs),
        _mm256_andnot_si256(high_bits_32(((const struct hs_block_q5_0 *)blk)->qh),
                            _mm256_set1_epi8((char)0xF0)));
}

/* Q5_0 in the split form: the signed values (-16..15). */
SPLIT_ROWS(q5_0, struct hs_block_q5_0, q5_0_weights)

/* Q5_0 with one activation row: the signed weights, as Q8_0. */
INLINE void q5_0_s_prep(const uint8_t *wb, __m256i *wq, __m256i *wp)
{
    *wq = q5_0_weights(wb);
    *wp = _mm256_sign_epi8(*wq, *wq);
}
#define q5_0_s_xprep q8_0_xprep
#define q5_0_s_dot q8_0_dot
Q80_ACT_TILE(q5_0_s, sizeof(struct hs_block_q5_0))

/* Q5_0 with 2 or more activation rows: sum (u - 16) x as maddubs(u, x) - 16 sum x, u the
 * unsigned weights (the value + 16), with the sums of x per 4-lane group taken once per
 * activation block. The int32 lanes equal the signed form's exactly, so the bits do not change, and each
 * row-column pair costs an integer op fewer (SmolLM-135M Q4_K_M-like pp512, 2 threads: ~451 ->
 * ~469 t/s; in Q80_ACT_TILE's passes, 38.0 -> 42.5 GOP/s on 4 x 4 tiles, 1 thread). One
 * activation row keeps the signed form: its per-block sums would cost more than they save. */
INLINE void q5_0_u_prep(const uint8_t *wb, __m256i *wq, __m256i *wp)
{
    const struct hs_block_q5_0 *blk = (const struct hs_block_q5_0 *)(const void *)wb;
    *wq = _mm256_or_si256(nibbles_32(blk->qs),
                          _mm256_and_si256(high_bits_32(blk->qh), _mm256_set1_epi8(0x10)));
    *wp = *wq;
}
INLINE __m256i q5_0_u_xprep(const uint8_t *xb)
{
    const __m256i xq =
        _mm256_loadu_si256((const __m256i *)((const struct hs_block_q8_0 *)(const void *)xb)->qs);
    return _mm256_slli_epi32(
        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), xq), _mm256_set1_epi16(1)), 4);
}
INLINE __m256i q5_0_u_dot(__m256i wq, __m256i wp, __m256i xq, __m256i xe)
{
    (void)wp;
    return _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(wq, xq), _mm256_set1_epi16(1)),
                            xe);
}
Q80_ACT_TILE(q5_0_u, sizeof(struct hs_block_q5_0))

INLINE void q5_0_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC)
{
    if (NC >= 2) {
        q5_0_u_tile(n, s, bs, w, ws, x, xs, NR, NC);
    } else {
        q5_0_s_tile(n, s, bs, w, ws, x, xs, NR, NC);
    }
}

/* Q4_0 in llama.cpp's order on AVX2 / AVX-512 CPUs, where it repacks Q4_0 matmul weights into
 * 8-row blocks (ggml_gemv / ggml_gemm_q4_0_8x8_q8_0; bench/crosscheck-ggml-kernels checks the
 * bits): per block the exact integer dot, then acc = fma(total, d_w * d_x, acc), one chain per
 * output in block order (d_w * d_x, two halves, is exact). The totals of the tile's weight rows
 * against one activation row are reduced together by hadd, so one 4-lane fma updates 4 outputs
 * and the tile keeps 4 accumulators, not 16; the bits do not depend on the tile's shape. */
INLINE void q4_0_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC)
{
    __m128 acc[4];
    for (int c = 0; c < NC; c++) {
        acc[c] = _mm_setzero_ps();
    }
    const int64_t nb = n / 32;
    const size_t wsize = sizeof(struct hs_block_q4_0);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        prefetch_rows(w, ws, NR, b, wsize);
        __m256i wu[4];
        uint16_t dwh[4] = {0, 0, 0, 0};
        for (int r = 0; r < NR; r++) {
            const struct hs_block_q4_0 *wb =
                (const struct hs_block_q4_0 *)(const void *)(ROWP(w, r, ws) + (size_t)b * wsize);
            wu[r] = nibbles_32(wb->qs); /* the value + 8 */
            dwh[r] = wb->d;
        }
        const __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)dwh));
        for (int c = 0; c < NC; c++) {
            const struct hs_block_q8_0 *xb =
                (const struct hs_block_q8_0 *)(const void *)ROWP(x, c, xs) + b;
            const __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
            /* sum (u - 8) x = maddubs(u, x) - 8 sum x, per 4-lane group: exact int32 lanes. */
            const __m256i xs8 =
                _mm256_slli_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, xq), ones16), 3);
            __m256i d[4];
            for (int r = 0; r < 4; r++) {
                d[r] = r < NR ? _mm256_sub_epi32(
                                    _mm256_madd_epi16(_mm256_maddubs_epi16(wu[r], xq), ones16), xs8)
                              : _mm256_setzero_si256();
            }
            const __m256i h =
                _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
            const __m128i tot =
                _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            acc[c] =
                _mm_fmadd_ps(_mm_cvtepi32_ps(tot), _mm_mul_ps(dw, _mm_set1_ps(f16(xb->d))), acc[c]);
        }
    }
    for (int c = 0; c < NC; c++) {
        float out[4];
        _mm_storeu_ps(out, acc[c]);
        for (int r = 0; r < NR; r++) {
            s[(size_t)c * bs + (size_t)r] = out[r];
        }
    }
}


/* ================================================================================================
 * One activation row (decode): gemv kernels
 * ============================================================================================= */

/* hs_gemv_fn for 32-element-block weights against one Q8_0 activation row: nr weight rows, ROWS
 * at a time. Each row keeps the tiles' chain (acc = fma(d_w * d_x, lanes, acc), one 8-lane fma
 * per block in block order, hsum at the end: the same bits as vec_dot), but the activation block
 * and its d_x are loaded once per block for all ROWS rows, the ROWS products d_w * d_x are made
 * by one F16C conversion and one multiply (broadcast from memory per row, a load rather than a
 * vector op) and ROWS independent chains hide the fma latency. The rows of a pass are contiguous,
 * so the pass reads one region of ROWS x ws bytes (see struct hs__gemv_stream). */
INLINE __m256 f16x8_mul(const uint8_t *p, size_t stride, const int N, __m256 dx)
{
    uint64_t h[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        h[i / 4] |= (uint64_t) * (const uint16_t *)(const void *)ROWP(p, i, stride)
                    << (16 * (i % 4));
    }
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_set_epi64x((long long)h[1], (long long)h[0])), dx);
}

#define Q80_GEMV(t, wsize)                                                                         \
    INLINE void t##_gemv_sub(int64_t n, float *s, const void *w, size_t ws, const void *x,         \
                             const int NR)                                                         \
    {                                                                                              \
        __m256 acc[8];                                                                             \
        for (int r = 0; r < NR; r++) {                                                             \
            acc[r] = _mm256_setzero_ps();                                                          \
        }                                                                                          \
        const int64_t nb = n / 32;                                                                 \
        struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);                 \
        for (int64_t b = 0; b < nb; b++) {                                                         \
            hs__gemv_stream_next(&pf);                                                             \
            const uint8_t *xb = (const uint8_t *)x + (size_t)b * sizeof(struct hs_block_q8_0);     \
            const uint8_t *wb0 = (const uint8_t *)w + (size_t)b * (wsize);                         \
            float sc[8];                                                                           \
            _mm256_storeu_ps(                                                                      \
                sc,                                                                                \
                f16x8_mul(wb0, ws, NR, _mm256_set1_ps(f16(*(const uint16_t *)(const void *)xb)))); \
            const __m256i xq = _mm256_loadu_si256(                                                 \
                (const __m256i *)((const struct hs_block_q8_0 *)(const void *)xb)->qs);            \
            const __m256i xe = t##_xprep(xb);                                                      \
            for (int r = 0; r < NR; r++) {                                                         \
                __m256i wq, wp;                                                                    \
                t##_prep(ROWP(wb0, r, ws), &wq, &wp);                                              \
                const __m256 p = _mm256_cvtepi32_ps(t##_dot(wq, wp, xq, xe));                      \
                acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&sc[r]), p, acc[r]);                  \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            s[r] = hsum_ps(acc[r]);                                                                \
        }                                                                                          \
    }

/* hs__gemv_NAME_avx2 over t##_gemv_sub: passes of ROWS rows, then one of the rest. */
/* clang-format off */
#define GEMV_ENTRY_POINT(t, name, ROWS)                                                            \
    void hs__gemv_##name##_avx2(int64_t n, float *s, const void *w, size_t ws, const void *x,      \
                                int64_t nr)                                                        \
    {                                                                                              \
        int64_t r = 0;                                                                             \
        for (; r + (ROWS) <= nr; r += (ROWS)) {                                                    \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, (ROWS));                                 \
        }                                                                                          \
        switch (nr - r) {                                                                          \
        case 0:                                                                                    \
            break;                                                                                 \
        case 1:                                                                                    \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, 1);                                      \
            break;                                                                                 \
        case 2:                                                                                    \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, 2);                                      \
            break;                                                                                 \
        case 3:                                                                                    \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, 3);                                      \
            break;                                                                                 \
        case 4:                                                                                    \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, 4);                                      \
            break;                                                                                 \
        case 5:                                                                                    \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, 5);                                      \
            break;                                                                                 \
        case 6:                                                                                    \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, 6);                                      \
            break;                                                                                 \
        default:                                                                                   \
            t##_gemv_sub(n, s + r, ROWP(w, r, ws), ws, x, 7);                                      \
            break;                                                                                 \
        }                                                                                          \
    }
/* clang-format on */

Q80_GEMV(q8_0, sizeof(struct hs_block_q8_0))
Q80_GEMV(q5_0_u, sizeof(struct hs_block_q5_0))

/* Q4_0 (the order of q4_0_tile: per row acc = fma(total, d_w * d_x, acc) over blocks, the total
 * the block's exact integer dot): 8 rows a pass, their totals reduced by hadd into one 8-lane
 * vector so one fma updates all 8 chains (bench-kernels q4_0 decode, ffn_up, 1 thread: 0.93-0.95
 * -> 0.91-0.93 ns per block pair; taking the - 8 sum x once per block from the totals, by two more
 * hadds, made it 1.40). */
INLINE void q4_0_gemv_sub(int64_t n, float *s, const void *w, size_t ws, const void *x,
                          const int NR)
{
    const size_t wsize = sizeof(struct hs_block_q4_0);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    const int64_t nb = n / 32;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        const struct hs_block_q8_0 *xb = (const struct hs_block_q8_0 *)x + b;
        const uint8_t *wb0 = (const uint8_t *)w + (size_t)b * wsize;
        const __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
        const __m256i xs8 =
            _mm256_slli_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, xq), ones16), 3);
        __m256i d[8];
        for (int r = 0; r < 8; r++) {
            d[r] = _mm256_setzero_si256();
            if (r < NR) {
                const struct hs_block_q4_0 *wb = (const void *)ROWP(wb0, r, ws);
                d[r] = _mm256_sub_epi32(
                    _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles_32(wb->qs), xq), ones16), xs8);
            }
        }
        const __m256i h0 =
            _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
        const __m256i h1 =
            _mm256_hadd_epi32(_mm256_hadd_epi32(d[4], d[5]), _mm256_hadd_epi32(d[6], d[7]));
        const __m256i tot = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                             _mm256_permute2x128_si256(h0, h1, 0x31));
        const __m256 sc = f16x8_mul(wb0, ws, NR, _mm256_set1_ps(f16(xb->d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), sc, acc);
    }
    float out[8];
    _mm256_storeu_ps(out, acc);
    for (int r = 0; r < NR; r++) {
        s[r] = out[r];
    }
}

/* Rows a pass: enough chains to hide the fma latency, few enough that the chains, the constants
 * and the temporaries fit the 16 ymm registers (8 rows spilled the accumulators and the loop's
 * state to the stack). bench-kernels decode, 1 thread, Zen 3, ns per row-block, 8 / 7 / 6 / 5 / 4
 * rows: Q8_0 1.40 / 1.22 / 1.22 / 1.25 / 1.28; Q5_0 (rows 8 / 6 / 5 / 4 / 3) 2.08 / 1.98 / 1.99
 * / 1.95 / 2.01. */
GEMV_ENTRY_POINT(q8_0, q8_0, 6)
GEMV_ENTRY_POINT(q5_0_u, q5_0, 4)
GEMV_ENTRY_POINT(q4_0, q4_0, 8)

/* ================================================================================================
 * Q4_1 and Q5_1 (activations Q8_1)
 * ============================================================================================= */

/* As ggml's ggml_vec_dot_q4_1_q8_1 / _q5_1_q8_1 on x86: per block the unsigned weights (0..15 or
 * 0..31) dotted with the activations by maddubs into 8 int32 lanes, acc = fma(d_w * d_x, lanes,
 * acc); beside it a float sum of m_w * s_x (a product of two halves, so exact in float: fused or
 * not, the same sum); the result is hsum(acc) + that sum. */
INLINE __m256i q4_1_uweights(const void *blk)
{
    return nibbles_32(((const struct hs_block_q4_1 *)blk)->qs);
}

INLINE __m256i q5_1_uweights(const void *blk)
{
    const struct hs_block_q5_1 *b = blk;
    return _mm256_or_si256(nibbles_32(b->qs),
                           _mm256_and_si256(high_bits_32(b->qh), _mm256_set1_epi8(0x10)));
}

#define Q81_ACT_TILE(t, wsize)                                                                     \
    INLINE void t##_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,  \
                         size_t xs, const int NR, const int NC)                                    \
    {                                                                                              \
        __m256 acc[4][4];                                                                          \
        float summ[4][4];                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            for (int c = 0; c < NC; c++) {                                                         \
                acc[r][c] = _mm256_setzero_ps();                                                   \
                summ[r][c] = 0.0f;                                                                 \
            }                                                                                      \
        }                                                                                          \
        const int64_t nb = n / 32;                                                                 \
        const __m256i ones16 = _mm256_set1_epi16(1);                                               \
        for (int64_t b = 0; b < nb; b++) {                                                         \
            prefetch_rows(w, ws, NR, b, (wsize));                                                  \
            __m256i xq[4];                                                                         \
            float dx[4], sx[4];                                                                    \
            for (int c = 0; c < NC; c++) {                                                         \
                const struct hs_block_q8_1 *xb =                                                   \
                    (const struct hs_block_q8_1 *)(const void *)ROWP(x, c, xs) + b;                \
                xq[c] = _mm256_loadu_si256((const __m256i *)xb->qs);                               \
                dx[c] = f16(xb->d);                                                                \
                sx[c] = f16(xb->s);                                                                \
            }                                                                                      \
            for (int r = 0; r < NR; r++) {                                                         \
                const uint8_t *wb = ROWP(w, r, ws) + (size_t)b * (wsize);                          \
                const __m256i wu = t##_uweights(wb);                                               \
                const float dw = f16(*(const uint16_t *)(const void *)wb);                         \
                const float mw = f16(*(const uint16_t *)(const void *)(wb + 2));                   \
                for (int c = 0; c < NC; c++) {                                                     \
                    const __m256i di = _mm256_madd_epi16(_mm256_maddubs_epi16(wu, xq[c]), ones16); \
                    acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[c]),                        \
                                                _mm256_cvtepi32_ps(di), acc[r][c]);                \
                    summ[r][c] += mw * sx[c];                                                      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int r = 0; r < NR; r++) {                                                             \
            for (int c = 0; c < NC; c++) {                                                         \
                s[(size_t)c * bs + (size_t)r] = hsum_ps(acc[r][c]) + summ[r][c];                   \
            }                                                                                      \
        }                                                                                          \
    }

Q81_ACT_TILE(q4_1, sizeof(struct hs_block_q4_1))
Q81_ACT_TILE(q5_1, sizeof(struct hs_block_q5_1))

TILE_ENTRY_POINTS(q8_0, avx2)
TILE_ENTRY_POINTS(q4_0, avx2)
TILE_ENTRY_POINTS(q5_0, avx2)
TILE_ENTRY_POINTS(q4_1, avx2)
TILE_ENTRY_POINTS(q5_1, avx2)

/* Packs 4 x 8 int32 (each in -127..127) into 32 int8 in order. */
INLINE __m256i pack_i32x32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i ab = _mm256_packs_epi32(a, b);
    const __m256i cd = _mm256_packs_epi32(c, d);
    const __m256i v = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

INLINE float hmax_ps(__m256 m)
{
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

/* One block of 32 as ggml's x86 quantize_row_q8_0 / _q8_1 (which llama.cpp runs on AVX2 and
 * AVX-512 CPUs alike, as hs__from_float_q8_0_avx512 does): id = 127 / amax, not 1 / d; round
 * half to even. Returns the float scale d = amax / 127; q gets the quants as int32. */
INLINE float q8_block(const float *xb, __m256i q[4])
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(xb + 8 * k);
        m = _mm256_max_ps(m, _mm256_and_ps(v[k], absmask));
    }
    const float amax = hmax_ps(m);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    for (int k = 0; k < 4; k++) {
        q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], idv));
    }
    return amax / 127.0f;
}

void hs__from_float_q8_0_avx2(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i q[4];
        const float d = q8_block(x + b * 32, q);
        y[b].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)y[b].qs, pack_i32x32(q[0], q[1], q[2], q[3]));
    }
}

/* Split Q8_0 activations (hs_quant_kernels.from_float_split): the row's quant blocks, 32 bytes
 * each and 32-byte aligned, then its scales as floats (the f16 values, widened exactly). */
void hs__from_float_q8_0s_avx2(const float *x, void *vy, int64_t n)
{
    int8_t *qs = vy;
    float *d = (float *)(void *)(qs + n);
    int64_t b = 0;
    for (; b < n / 32; b++) {
        __m256i q[4];
        const float db = q8_block(x + b * 32, q);
        d[b] = f16((uint16_t)_cvtss_sh(db, _MM_FROUND_TO_NEAREST_INT));
        _mm256_store_si256((__m256i *)(void *)(qs + b * 32), pack_i32x32(q[0], q[1], q[2], q[3]));
    }
    for (; b % 8; b++) {
        d[b] = 0.0f; /* the pad the tile's 8-scale loads read */
    }
}

/* Q8_1: Q8_0's block plus s = d * (the sum of the quants), d before its rounding to half. */
void hs__from_float_q8_1_avx2(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i q[4];
        const float d = q8_block(x + b * 32, q);
        y[b].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m256i t =
            _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
        y[b].s = (uint16_t)_cvtss_sh(d * (float)_mm_cvtsi128_si32(h), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)y[b].qs, pack_i32x32(q[0], q[1], q[2], q[3]));
    }
}

void hs__from_float_q8_k_avx2(const float *x, void *vy, int64_t n)
{
    struct hs_block_q8_k *y = vy;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const float *xb = x + b * HS_QK_K;
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++) {
            m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(xb + 8 * k), absmask));
        }
        const float amax = hmax_ps(m);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof(y[b]));
            continue;
        }
        /* The first element of that magnitude gives the sign, as in ggml's scalar loop. */
        float max = 0.0f;
        const __m256 am = _mm256_set1_ps(amax);
        for (int k = 0; k < 32; k++) {
            const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xb + 8 * k), absmask);
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(a, am, _CMP_EQ_OQ));
            if (mask) {
                max = xb[8 * k + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 isv = _mm256_set1_ps(iscale);
        for (int k = 0; k < 8; k++) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                /* cvtps rounds to nearest even, as ggml's nearest_int does. */
                const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xb + 32 * k + 8 * j), isv);
                q[j] = _mm256_min_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127));
            }
            _mm256_storeu_si256((__m256i *)(y[b].qs + 32 * k), pack_i32x32(q[0], q[1], q[2], q[3]));
        }
        for (int g = 0; g < 16; g++) {
            const __m128i q16 = _mm_loadu_si128((const __m128i *)(y[b].qs + 16 * g));
            const __m256i s = _mm256_madd_epi16(_mm256_cvtepi8_epi16(q16), _mm256_set1_epi16(1));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_hadd_epi32(s4, s4);
            s4 = _mm_hadd_epi32(s4, s4);
            y[b].bsums[g] = (int16_t)_mm_cvtsi128_si32(s4);
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ================================================================================================
 * K-quants (activations Q8_K)
 * ============================================================================================= */

/* [m0, m0, m1, m1, ..., m7, m7] as 16 x i16, to madd against the 16 bsums. */
INLINE __m256i mins_pairs(const uint8_t *m)
{
    uint64_t v;
    memcpy(&v, m, 8);
    const __m128i b =
        _mm_shuffle_epi8(_mm_cvtsi64_si128((long long)v),
                         _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
    return _mm256_cvtepu8_epi16(b);
}

/* The lane sums of a, b, c, d as the 4 lanes of one vector (exact integers). */
INLINE __m128i hsum4_epi32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* Q4_K and (FIVE) Q5_K: per row, the 8 x 32 quants of a super-block are decoded once and kept
 * for all activation rows; per (row, col), 8 maddubs + madd against the sub-block scales.
 *
 * The float order is quants-avx512.c's (llama.cpp's repacked Q4_K kernels on AVX2 and AVX-512
 * CPUs): per super-block the scaled integer dot and the min correction are exact integers, each
 * feeding its own chain acc = fma(int, d_w * d_x, acc) and accm = fma(int, dmin_w * d_x, accm),
 * the result acc - accm, for any number of activation rows, so a row's bits never depend on the
 * rows batched beside it. GGML (HS_CPU_GEMM_ORDER=ggml, Q4_K only): for groups of 4 activation
 * rows one fma per 64 elements instead, as ggml's gemm, to compare prompt logits with
 * llama.cpp's bit for bit. The chains of one weight row run as one 4-lane vector, a lane per
 * activation row (the same operations per lane), so the integer sums are reduced 4 at a time. */
INLINE void q45_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                       size_t xs, const int NR, const int NC, const int FIVE, const int GGML)
{
    const size_t bsize = FIVE ? sizeof(struct hs_block_q5_k) : sizeof(struct hs_block_q4_k);
    const bool per64 = GGML && NC == 4 && !FIVE;
    __m128 acc[4], accm[4];
    for (int r = 0; r < NR; r++) {
        acc[r] = _mm_setzero_ps();
        accm[r] = _mm_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < n / HS_QK_K; b++) {
        const struct hs_block_q8_k *xb[4];
        for (int c = 0; c < NC; c++) {
            xb[c] = (const struct hs_block_q8_k *)(const void *)ROWP(x, c, xs) + b;
        }
        /* Built in registers: a store of the scales and a vector load of them would stall on
         * store forwarding every block. */
        const __m128 dx = _mm_setr_ps(xb[0]->d, NC > 1 ? xb[1 % NC]->d : 0.0f,
                                      NC > 2 ? xb[2 % NC]->d : 0.0f, NC > 3 ? xb[3 % NC]->d : 0.0f);
        for (int r = 0; r < NR; r++) {
            const uint8_t *wbytes = ROWP(w, r, ws) + (size_t)b * bsize;
            prefetch_ahead(wbytes, bsize);
            const struct hs_block_q4_k *w4 = (const struct hs_block_q4_k *)(const void *)wbytes;
            const struct hs_block_q5_k *w5 = (const struct hs_block_q5_k *)(const void *)wbytes;
            const uint8_t *qs = FIVE ? w5->qs : w4->qs;
            uint8_t sc[8], mn[8];
            hs__unpack_scales_k4(FIVE ? w5->scales : w4->scales, sc, mn);
            const __m256i mins = mins_pairs(mn);
            __m256i q[8];
            for (int k = 0; k < 4; k++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                q[2 * k] = _mm256_and_si256(v, m4);
                q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            if (FIVE) {
                /* Bit j of qh[l] is the fifth bit of element 32 j + l. */
                const __m256i qh = _mm256_loadu_si256((const __m256i *)w5->qh);
                for (int j = 0; j < 8; j++) {
                    const __m256i bit =
                        _mm256_and_si256(_mm256_srli_epi16(qh, j), _mm256_set1_epi8(1));
                    q[j] = _mm256_or_si256(q[j], _mm256_slli_epi16(bit, 4));
                }
            }
            const float d = f16(FIVE ? w5->d : w4->d), dmin = f16(FIVE ? w5->dmin : w4->dmin);
            /* d_w * d_x and dmin_w * d_x per activation row, each one float product. */
            const __m128 dd = _mm_mul_ps(_mm_set1_ps(d), dx);
            const __m128 dm = _mm_mul_ps(_mm_set1_ps(dmin), dx);
            /* Sub-block j of column c: 8 lanes of scale * (q . x). */
#define Q45K_SUB(c, j)                                                                             \
    _mm256_madd_epi16(                                                                             \
        _mm256_maddubs_epi16(q[j], _mm256_loadu_si256((const __m256i *)(xb[c]->qs + 32 * (j)))),   \
        _mm256_set1_epi16((int16_t)sc[j]))
            __m256i pm[4];
            for (int c = 0; c < 4; c++) {
                pm[c] =
                    c < NC
                        ? _mm256_madd_epi16(
                              mins, _mm256_loadu_si256((const __m256i *)(const void *)xb[c]->bsums))
                        : _mm256_setzero_si256();
            }
            if (per64) {
                /* Lanes of h01: min terms of sub-block pairs (0 1, 2 3 | 4 5, 6 7) for columns
                 * 0, 1 (0, 0, 1, 1 within each half); h23 the same for columns 2, 3. */
                const __m256 h01 = _mm256_cvtepi32_ps(_mm256_hadd_epi32(pm[0], pm[1]));
                const __m256 h23 = _mm256_cvtepi32_ps(_mm256_hadd_epi32(pm[2], pm[3]));
                const __m128 lo01 = _mm256_castps256_ps128(h01),
                             hi01 = _mm256_extractf128_ps(h01, 1);
                const __m128 lo23 = _mm256_castps256_ps128(h23),
                             hi23 = _mm256_extractf128_ps(h23, 1);
                __m128 pmk[4];
                pmk[0] = _mm_shuffle_ps(lo01, lo23, _MM_SHUFFLE(2, 0, 2, 0));
                pmk[1] = _mm_shuffle_ps(lo01, lo23, _MM_SHUFFLE(3, 1, 3, 1));
                pmk[2] = _mm_shuffle_ps(hi01, hi23, _MM_SHUFFLE(2, 0, 2, 0));
                pmk[3] = _mm_shuffle_ps(hi01, hi23, _MM_SHUFFLE(3, 1, 3, 1));
                for (int k = 0; k < 4; k++) {
                    __m256i sk[4];
                    for (int c = 0; c < 4; c++) {
                        sk[c] = _mm256_add_epi32(Q45K_SUB(c, 2 * k), Q45K_SUB(c, 2 * k + 1));
                    }
                    const __m128 isk = _mm_cvtepi32_ps(hsum4_epi32(sk[0], sk[1], sk[2], sk[3]));
                    acc[r] = _mm_fmadd_ps(isk, dd, acc[r]);
                    accm[r] = _mm_fmadd_ps(pmk[k], dm, accm[r]);
                }
                continue;
            }
            __m256i sumi[4];
            for (int c = 0; c < 4; c++) {
                sumi[c] = _mm256_setzero_si256();
                for (int j = 0; c < NC && j < 8; j++) {
                    sumi[c] = _mm256_add_epi32(sumi[c], Q45K_SUB(c, j));
                }
            }
#undef Q45K_SUB
            if (NC <= 2) {
                /* Both chains in one vector: lanes c are acc, lanes 2 + c accm (one reduction
                 * and one fma for up to two columns, as decode's one). */
                __m128i sums;
                if (NC == 1) {
                    /* Lanes [S, S, P, P]: two hadds, where hsum4 takes three. */
                    const __m256i h = _mm256_hadd_epi32(sumi[0], pm[0]);
                    const __m128i h4 =
                        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                    sums = _mm_shuffle_epi32(_mm_hadd_epi32(h4, h4), _MM_SHUFFLE(3, 1, 2, 0));
                } else {
                    sums = hsum4_epi32(sumi[0], sumi[1], pm[0], pm[1]);
                }
                const __m128 both = _mm_cvtepi32_ps(sums);
                acc[r] = _mm_fmadd_ps(both, _mm_movelh_ps(dd, dm), acc[r]);
                continue;
            }
            const __m128 isum = _mm_cvtepi32_ps(hsum4_epi32(sumi[0], sumi[1], sumi[2], sumi[3]));
            const __m128 imin = _mm_cvtepi32_ps(hsum4_epi32(pm[0], pm[1], pm[2], pm[3]));
            acc[r] = _mm_fmadd_ps(isum, dd, acc[r]);
            accm[r] = _mm_fmadd_ps(imin, dm, accm[r]);
        }
    }
    for (int r = 0; r < NR; r++) {
        float out[4];
        if (NC <= 2) {
            _mm_storeu_ps(out, _mm_sub_ps(acc[r], _mm_movehl_ps(acc[r], acc[r])));
        } else {
            _mm_storeu_ps(out, _mm_sub_ps(acc[r], accm[r]));
        }
        for (int c = 0; c < NC; c++) {
            s[(size_t)c * bs + (size_t)r] = out[c];
        }
    }
}

INLINE void q4_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, 0, 0);
}

/* hs_gemv_fn for Q4_K and (FIVE) Q5_K (decode): passes of up to 4 weight rows, each row's two
 * chains as q45_k_tile's with one column (the same bits). A super-block's scaled dots and min
 * corrections of the pass's rows are reduced together (lanes r and 4 + r of one vector), and one
 * 8-lane fma updates all the chains: lane r is row r's acc, lane 4 + r its accm. The sub-block
 * scales come out of one 16-bit vector by a byte shuffle each, where the tile broadcasts them one
 * at a time from memory. */
INLINE void q45_k_gemv_sub(int64_t n, float *s, const void *w, size_t ws, const void *x,
                           const int NR, const int FIVE)
{
    const size_t bsize = FIVE ? sizeof(struct hs_block_q5_k) : sizeof(struct hs_block_q4_k);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    /* (d, dmin) of rows 0..3 as f16 pairs -> d of rows 0..3, then dmin of rows 0..3 */
    const __m128i dpairs = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    __m256 acc = _mm256_setzero_ps();
    const int64_t nb = n / HS_QK_K;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        const struct hs_block_q8_k *xb = (const struct hs_block_q8_k *)x + b;
        const __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);
        const uint8_t *wb0 = (const uint8_t *)w + (size_t)b * bsize;
        __m256i v[8]; /* v[r]: row r's scaled dot lanes, v[4 + r]: its min correction lanes */
        int32_t dm[4] = {0, 0, 0, 0};
        for (int r = 0; r < 4; r++) {
            if (r >= NR) {
                v[r] = v[4 + r] = _mm256_setzero_si256();
                continue;
            }
            const uint8_t *wbytes = ROWP(wb0, r, ws);
            const struct hs_block_q4_k *w4 = (const struct hs_block_q4_k *)(const void *)wbytes;
            const struct hs_block_q5_k *w5 = (const struct hs_block_q5_k *)(const void *)wbytes;
            memcpy(&dm[r], wbytes, 4); /* d, dmin: the block's first fields in both types */
            const uint8_t *qs = FIVE ? w5->qs : w4->qs;
            uint8_t sc[8], mn[8];
            hs__unpack_scales_k4(FIVE ? w5->scales : w4->scales, sc, mn);
            uint64_t sc64;
            memcpy(&sc64, sc, 8);
            const __m256i scv =
                _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc64)));
            v[4 + r] = _mm256_madd_epi16(mins_pairs(mn), bsums);
            __m256i qh = _mm256_setzero_si256();
            if (FIVE) {
                qh = _mm256_loadu_si256((const __m256i *)(const void *)w5->qh);
            }
            __m256i sumi = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                const __m256i qv = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * k));
                __m256i q[2] = {_mm256_and_si256(qv, m4),
                                _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4)};
                for (int h = 0; h < 2; h++) {
                    const int j = 2 * k + h;
                    if (FIVE) {
                        /* bit j of qh[l]: the fifth bit of element 32 j + l */
                        const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(qh, j), one);
                        q[h] = _mm256_or_si256(q[h], _mm256_slli_epi16(bit, 4));
                    }
                    const __m256i sj = _mm256_shuffle_epi8(
                        scv, _mm256_set1_epi16((short)((2 * j + 1) << 8 | 2 * j)));
                    const __m256i p = _mm256_maddubs_epi16(
                        q[h], _mm256_loadu_si256((const __m256i *)(const void *)(xb->qs + 32 * j)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sj));
                }
            }
            v[r] = sumi;
        }
        /* d_w * d_x (lanes 0..3) and dmin_w * d_x (4..7), each one float product */
        const __m256 dd =
            _mm256_mul_ps(_mm256_cvtph_ps(_mm_shuffle_epi8(
                              _mm_loadu_si128((const __m128i *)(const void *)dm), dpairs)),
                          _mm256_set1_ps(xb->d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hs__reduce8_epi32(v)), dd, acc);
    }
    float out[4];
    _mm_storeu_ps(out, _mm_sub_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
    for (int r = 0; r < NR; r++) {
        s[r] = out[r];
    }
}

/* hs__gemv_NAME_avx2 over SUB(n, s, w, ws, x, NR): passes of 4 rows, then one of the rest. */
/* clang-format off */
#define GEMV4_ENTRY_POINT(name, SUB)                                                               \
    void hs__gemv_##name##_avx2(int64_t n, float *s, const void *w, size_t ws, const void *x,      \
                                int64_t nr)                                                        \
    {                                                                                              \
        int64_t r = 0;                                                                             \
        for (; r + 4 <= nr; r += 4) {                                                              \
            SUB(n, s + r, ROWP(w, r, ws), ws, x, 4);                                               \
        }                                                                                          \
        switch (nr - r) {                                                                          \
        case 0:                                                                                    \
            break;                                                                                 \
        case 1:                                                                                    \
            SUB(n, s + r, ROWP(w, r, ws), ws, x, 1);                                               \
            break;                                                                                 \
        case 2:                                                                                    \
            SUB(n, s + r, ROWP(w, r, ws), ws, x, 2);                                               \
            break;                                                                                 \
        default:                                                                                   \
            SUB(n, s + r, ROWP(w, r, ws), ws, x, 3);                                               \
            break;                                                                                 \
        }                                                                                          \
    }
/* clang-format on */
#define Q4K_GEMV_SUB(n, s, w, ws, x, NR) q45_k_gemv_sub(n, s, w, ws, x, NR, 0)
#define Q5K_GEMV_SUB(n, s, w, ws, x, NR) q45_k_gemv_sub(n, s, w, ws, x, NR, 1)
GEMV4_ENTRY_POINT(q4_k, Q4K_GEMV_SUB)
GEMV4_ENTRY_POINT(q5_k, Q5K_GEMV_SUB)

INLINE void q4_k_ggml_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws,
                           const void *x, size_t xs, const int NR, const int NC)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, 0, 1);
}

INLINE void q5_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC)
{
    q45_k_tile(n, s, bs, w, ws, x, xs, NR, NC, 1, 0);
}
TILE_ENTRY_POINTS(q4_k, avx2)
TILE_ENTRY_POINTS(q4_k_ggml, avx2)
TILE_ENTRY_POINTS(q5_k, avx2)

/* The 8 x 32 quants (0..63) of a Q6_K block: q[j] holds elements 32 j .. 32 j + 31. */
INLINE void q6_k_quants(const struct hs_block_q6_k *wb, __m256i q[8])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; h++) {
        const __m256i qa = _mm256_loadu_si256((const __m256i *)(wb->ql + 64 * h));
        const __m256i qb = _mm256_loadu_si256((const __m256i *)(wb->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(wb->qh + 32 * h));
        q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(qa, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
        q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(qb, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
        q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4),
                                       _mm256_and_si256(qh, m30));
        q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
    }
}

/* Q6_K: per row, the 8 x 32 quants (0..63) and the 16 scales; per (row, col), maddubs against
 * Q8_K and madd by scale, minus 32 * sum(scale * bsum) for the offset. */
INLINE void q6_k_tile(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                      size_t xs, const int NR, const int NC)
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
            prefetch_ahead((const uint8_t *)wb, sizeof(*wb));
            __m256i q[8], scv[8];
            q6_k_quants(wb, q);
            const __m128i sc8 = _mm_loadu_si128((const __m128i *)(const void *)wb->scales);
            for (int j = 0; j < 8; j++) {
                /* Scales 2j (first 16 elements) and 2j + 1, each repeated 8 times as i16. */
                const char a = (char)(2 * j), z = (char)(2 * j + 1);
                const __m128i idx = _mm_setr_epi8(a, a, a, a, a, a, a, a, z, z, z, z, z, z, z, z);
                scv[j] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, idx));
            }
            const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
            const float d = f16(wb->d);
            for (int c = 0; c < NC; c++) {
                const struct hs_block_q8_k *xb =
                    (const struct hs_block_q8_k *)(const void *)ROWP(x, c, xs) + b;
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);
                __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5);
                sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
                for (int j = 0; j < 8; j++) {
                    const __m256i xq = _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * j));
                    const __m256i p = _mm256_maddubs_epi16(q[j], xq);
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scv[j]));
                }
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(sumi), acc[r][c]);
            }
        }
    }
    for (int r = 0; r < NR; r++) {
        for (int c = 0; c < NC; c++) {
            s[(size_t)c * bs + (size_t)r] = hsum_ps(acc[r][c]);
        }
    }
}
TILE_ENTRY_POINTS(q6_k, avx2)

/* hs_gemv_fn for Q6_K (decode): passes of up to 4 weight rows, each row's chain as q6_k_tile's
 * with one column (the same bits), the pass's span streamed ahead. A sub-block pair's scales
 * come out of the row's 16 scales, widened once, by one byte shuffle (the tile makes each pair
 * with a shuffle and a widening). */
INLINE void q6_k_gemv_sub(int64_t n, float *s, const void *w, size_t ws, const void *x,
                          const int NR)
{
    __m256 acc[4];
    for (int r = 0; r < NR; r++) {
        acc[r] = _mm256_setzero_ps();
    }
    const int64_t nb = n / HS_QK_K;
    struct hs__gemv_stream pf = hs__gemv_stream_start(w, (size_t)NR * ws, nb);
    for (int64_t b = 0; b < nb; b++) {
        hs__gemv_stream_next(&pf);
        const struct hs_block_q8_k *xb = (const struct hs_block_q8_k *)x + b;
        const __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)xb->bsums);
        for (int r = 0; r < NR; r++) {
            const struct hs_block_q6_k *wb =
                (const struct hs_block_q6_k *)(const void *)ROWP(w, r, ws) + b;
            __m256i q[8];
            q6_k_quants(wb, q);
            const __m256i sc16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)wb->scales));
            /* scales 0..7 and 8..15 as i16, each in both 128-bit lanes */
            const __m256i half[2] = {_mm256_permute2x128_si256(sc16, sc16, 0x00),
                                     _mm256_permute2x128_si256(sc16, sc16, 0x11)};
            __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(),
                                            _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5));
            for (int j = 0; j < 8; j++) {
                /* scale 2j in the low lane's 8 i16, 2j + 1 in the high lane's */
                const char a = (char)(2 * (2 * j % 8)), z = (char)(2 * ((2 * j + 1) % 8));
                const __m256i scv = _mm256_shuffle_epi8(
                    half[j / 4],
                    _mm256_setr_epi8(
                        a, (char)(a + 1), a, (char)(a + 1), a, (char)(a + 1), a, (char)(a + 1), a,
                        (char)(a + 1), a, (char)(a + 1), a, (char)(a + 1), a, (char)(a + 1), z,
                        (char)(z + 1), z, (char)(z + 1), z, (char)(z + 1), z, (char)(z + 1), z,
                        (char)(z + 1), z, (char)(z + 1), z, (char)(z + 1), z, (char)(z + 1)));
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * j));
                sumi =
                    _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], xq), scv));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb->d) * xb->d), _mm256_cvtepi32_ps(sumi),
                                     acc[r]);
        }
    }
    for (int r = 0; r < NR; r++) {
        s[r] = hsum_ps(acc[r]);
    }
}

GEMV4_ENTRY_POINT(q6_k, q6_k_gemv_sub)

#else
typedef int hs__quants_avx2_unavailable;
#endif
