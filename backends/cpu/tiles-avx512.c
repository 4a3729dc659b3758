/* AVX-512 VNNI tiles of two or more activation rows (prompt processing) for weight types whose
 * kernels are otherwise the AVX2 ones on AVX-512 CPUs: Q5_0. Same bits as quants-avx2.c's tiles
 * (llama.cpp's order: per block pair the exact int32 lanes of the integer dot, lane k the sum of
 * elements 4k .. 4k + 3, then acc = fma(d_w * d_x, lanes, acc) in 8 float lanes per output,
 * summed at the end); one activation row (decode) stays on the AVX2 code. */
#include "backends/cpu/quants.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#include <string.h>

#include "backends/cpu/avx512-inl.h"

#define INLINE                static inline __attribute__((always_inline))
#define ROWP(base, i, stride) ((const uint8_t *)(base) + (size_t)(i) * (stride))

/* As quants-avx2.c's hsum_ps (the same additions). */
INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A Q5_0 block's unsigned weights (the value + 16, 0..31) in both 256-bit halves: the nibbles,
 * low (elements 0..15) then high (16..31), with 0x10 or-ed in under the qh bit mask. */
INLINE __m512i q5_0_u512(const struct hs_block_q5_0 *blk)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)blk->qs);
    const __m256i nib =
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
    uint32_t qh;
    memcpy(&qh, blk->qh, sizeof(qh));
    return _mm512_broadcast_i64x4(
        _mm256_mask_blend_epi8((__mmask32)qh, nib, _mm256_or_si256(nib, _mm256_set1_epi8(0x10))));
}

/* Activation rows 2p, 2p + 1 side by side (lanes 0..7 the chain of (r, 2p), 8..15 of
 * (r, 2p + 1)); NR weight rows x NP pairs. vpdpbusd(-16 sum x, u, x) gives the signed weights'
 * exact int32 lanes in one instruction. */
INLINE void q5_0_pairs(int64_t n, float *s, size_t bs, const void *w, size_t ws, const void *x,
                       size_t xs, const int NR, const int NP)
{
    __m512 acc[4][2];
    for (int r = 0; r < NR; r++) {
        for (int p = 0; p < NP; p++) {
            acc[r][p] = _mm512_setzero_ps();
        }
    }
    const int64_t nb = n / 32;
    const size_t wsize = sizeof(struct hs_block_q5_0);
    for (int64_t b = 0; b < nb; b++) {
        if ((size_t)b * wsize % 64 < wsize) {
            for (int r = 0; r < NR; r++) {
                _mm_prefetch((const char *)ROWP(w, r, ws) + (size_t)b * wsize + 4096, _MM_HINT_T0);
            }
        }
        __m512i xq[2], negc[2];
        __m512 dx[2];
        for (int p = 0; p < NP; p++) {
            hs__q8_0_x_pair(x, xs, 2 * p, b, &xq[p], &dx[p]);
            negc[p] = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(16), xq[p]));
        }
        for (int r = 0; r < NR; r++) {
            const struct hs_block_q5_0 *wb =
                (const struct hs_block_q5_0 *)(const void *)(ROWP(w, r, ws) + (size_t)b * wsize);
            const __m512i wu = q5_0_u512(wb);
            const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)wb->d));
            for (int p = 0; p < NP; p++) {
                const __m512i dot = _mm512_dpbusd_epi32(negc[p], wu, xq[p]);
                acc[r][p] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dw, dx[p]), _mm512_cvtepi32_ps(dot), acc[r][p]);
            }
        }
    }
    for (int r = 0; r < NR; r++) {
        for (int p = 0; p < NP; p++) {
            s[(size_t)(2 * p) * bs + (size_t)r] = hsum8(_mm512_castps512_ps256(acc[r][p]));
            s[(size_t)(2 * p + 1) * bs + (size_t)r] = hsum8(_mm512_extractf32x8_ps(acc[r][p], 1));
        }
    }
}

/* clang-format off */
void hs__gemm_tile_q5_0_avx512vnni(int64_t n, float *s, size_t bs, const void *w, size_t ws,
                                   const void *x, size_t xs, int nr, int nc)
{
    HS_ASSERT(nr >= 1 && nr <= 4 && nc >= 1 && nc <= 4);
    if (nc == 1) {
        hs__gemm_tile_q5_0_avx2(n, s, bs, w, ws, x, xs, nr, 1);
        return;
    }
    const int np = nc / 2;
    switch ((nr - 1) * 2 + (np - 1)) {
    case 0: q5_0_pairs(n, s, bs, w, ws, x, xs, 1, 1); break;
    case 1: q5_0_pairs(n, s, bs, w, ws, x, xs, 1, 2); break;
    case 2: q5_0_pairs(n, s, bs, w, ws, x, xs, 2, 1); break;
    case 3: q5_0_pairs(n, s, bs, w, ws, x, xs, 2, 2); break;
    case 4: q5_0_pairs(n, s, bs, w, ws, x, xs, 3, 1); break;
    case 5: q5_0_pairs(n, s, bs, w, ws, x, xs, 3, 2); break;
    case 6: q5_0_pairs(n, s, bs, w, ws, x, xs, 4, 1); break;
    default: q5_0_pairs(n, s, bs, w, ws, x, xs, 4, 2); break;
    }
    if (nc == 3) {
        hs__gemm_tile_q5_0_avx2(n, s + 2 * bs, bs, w, ws, ROWP(x, 2, xs), xs, nr, 1);
    }
}
/* clang-format on */

/* Q4_K with 2 or more activation rows: the AVX2 tile, whose bits the AVX-512 one shares (every
 * shape; tests/backends/test-repack.c) and which runs faster on Zen 5 (bench-kernels, 1 thread,
 * 4 x 4 tiles: 56-70 GOP/s with 512-bit registers against 94 in pairs of 256-bit ones). One
 * activation row (decode) stays on the AVX-512 kernel. */
void hs__gemm_tile_q4_k_pp_avx512vnni(int64_t n, float *s, size_t bs, const void *w, size_t ws,
                                      const void *x, size_t xs, int nr, int nc)
{
    if (nc == 1) {
        hs__gemm_tile_q4_k_avx512vnni(n, s, bs, w, ws, x, xs, nr, nc);
    } else {
        hs__gemm_tile_q4_k_avx2(n, s, bs, w, ws, x, xs, nr, nc);
    }
}

/* AVX-512 without VNNI: the AVX2 tile (a 512-bit maddubs form would save little). */
void hs__gemm_tile_q5_0_avx512(int64_t n, float *s, size_t bs, const void *w, size_t ws,
                               const void *x, size_t xs, int nr, int nc)
{
    hs__gemm_tile_q5_0_avx2(n, s, bs, w, ws, x, xs, nr, nc);
}

#else
typedef int hs__tiles_avx512_unavailable;
#endif
