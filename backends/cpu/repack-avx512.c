/* AVX-512 kernels on repacked weights (repack.h): Q5_0's decode copy, 16 rows a group, so that
 * one register holds lane k of all 16 rows and one activation quad, broadcast, serves them all;
 * and Q4_0's 8-row copy read two groups a register for products of 2+ activation rows. */
#include "backends/cpu/repack.h"

#include <string.h>

#include "backends/cpu/quants.h"

#define Q5_0X16_BLOCK_BYTES 352
#define Q5_0X16_MASKS 256
#define Q5_0X16_SCALES 320

size_t hs__q5_0x16_bytes(int64_t n_groups, int64_t n)
{
    return (size_t)n_groups * (size_t)(n / 32) * Q5_0X16_BLOCK_BYTES;
}

void hs__repack_q5_0x16(const void *w, size_t w_stride, int64_t n_groups, int64_t n, void *out)
{
    const int64_t nb = n / 32;
    const size_t bsize = sizeof(struct hs_block_q5_0);
    uint8_t *dst = out;
    for (int64_t g = 0; g < n_groups; g++) {
        for (int64_t b = 0; b < nb; b++, dst += Q5_0X16_BLOCK_BYTES) {
            uint64_t masks[8] = {0};
            for (int r = 0; r < 16; r++) {
                const struct hs_block_q5_0 *src =
                    (const void *)((const uint8_t *)w + (size_t)(16 * g + r) * w_stride +
                                   (size_t)b * bsize);
                for (int c = 0; c < 4; c++) {
                    memcpy(dst + 64 * c + 4 * r, src->qs + 4 * c, 4);
                }
                uint32_t qh;
                memcpy(&qh, src->qh, sizeof(qh));
                for (int k = 0; k < 8; k++) {
                    for (int j = 0; j < 4; j++) {
                        masks[k] |= (uint64_t)(qh >> (4 * k + j) & 1u) << (4 * r + j);
                    }
                }
                memcpy(dst + Q5_0X16_SCALES + 2 * r, &src->d, 2);
            }
            memcpy(dst + Q5_0X16_MASKS, masks, sizeof(masks));
        }
    }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>

#include "backends/cpu/gemv-inl.h"

#define INLINE static inline __attribute__((always_inline))

/* One activation row against n_groups groups of 16 rows. Lane r of acc[k] is row r's lane k of
 * vec_dot (the exact int32 sum of elements 4k .. 4k + 3 of each block, converted, one fma by
 * d_w * d_x a block), and the end is vec_dot's hsum of the 8 lanes, the same pairs in the same
 * order, for 16 rows at once: the bits of the Q5_0 vec_dot and gemv. */
INLINE void q5_0x16_gemv(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x,
                         const int VNNI)
{
    const int64_t nb = n / 32;
    HS_ASSERT(nb <= HS__REPACK_MAX_BLOCKS);
    /* Per activation block: -16 x each quad's sum (the offset of the unsigned weights, value +
     * 16; vpdpbusd starts from it) and d_x, made once for all the groups. */
    int32_t negc[8 * HS__REPACK_MAX_BLOCKS];
    float dx[HS__REPACK_MAX_BLOCKS];
    const struct hs_block_q8_0 *xb = x;
    for (int64_t b = 0; b < nb; b++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)xb[b].qs);
        const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                                               _mm256_set1_epi16(1));
        _mm256_storeu_si256((__m256i *)(void *)(negc + 8 * b),
                            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sums, 4)));
        dx[b] = _cvtsh_ss(xb[b].d);
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F), k16 = _mm512_set1_epi8(16);
    const uint8_t *gb = wr;
    /* the whole span, HS__GEMV_PREFETCH_BYTES ahead, a block's lines at a time */
    const char *pf = (const char *)wr + HS__GEMV_PREFETCH_BYTES;
    size_t pf_next = 0, pf_end = 0;
    for (int64_t g = 0; g < n_groups; g++) {
        __m512 acc[8];
        for (int k = 0; k < 8; k++) {
            acc[k] = _mm512_setzero_ps();
        }
        for (int64_t b = 0; b < nb; b++, gb += Q5_0X16_BLOCK_BYTES) {
            for (pf_end += Q5_0X16_BLOCK_BYTES; pf_next < pf_end; pf_next += 64) {
                _mm_prefetch(pf + pf_next, _MM_HINT_T0);
            }
            const __m512 dd = _mm512_mul_ps(
                _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(gb +
                                                                                    Q5_0X16_SCALES))),
                _mm512_set1_ps(dx[b]));
            const int8_t *xq = xb[b].qs;
            for (int c = 0; c < 4; c++) {
                const __m512i p = _mm512_loadu_si512((const void *)(gb + 64 * c));
                const __m512i nib[2] = {_mm512_and_si512(p, m4),
                                        _mm512_and_si512(_mm512_srli_epi16(p, 4), m4)};
                for (int h = 0; h < 2; h++) {
                    const int k = c + 4 * h; /* lane k: elements 4k .. 4k + 3 of each row */
                    uint64_t mk;
                    memcpy(&mk, gb + Q5_0X16_MASKS + 8 * k, sizeof(mk));
                    const __m512i u = _mm512_mask_add_epi8(nib[h], _cvtu64_mask64(mk), nib[h], k16);
                    int32_t x4;
                    memcpy(&x4, xq + 4 * k, sizeof(x4));
                    const __m512i xk = _mm512_set1_epi32(x4);
                    const __m512i c0 = _mm512_set1_epi32(negc[8 * b + k]);
                    const __m512i lanes =
                        VNNI ? _mm512_dpbusd_epi32(c0, u, xk)
                             : _mm512_add_epi32(
                                   _mm512_madd_epi16(_mm512_maddubs_epi16(u, xk),
                                                     _mm512_set1_epi16(1)),
                                   c0);
                    acc[k] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(lanes), acc[k]);
                }
            }
        }
        const __m512 t0 = _mm512_add_ps(acc[0], acc[4]), t1 = _mm512_add_ps(acc[1], acc[5]);
        const __m512 t2 = _mm512_add_ps(acc[2], acc[6]), t3 = _mm512_add_ps(acc[3], acc[7]);
        _mm512_storeu_ps(s + 16 * g, _mm512_add_ps(_mm512_add_ps(t0, t2), _mm512_add_ps(t1, t3)));
    }
}

/* ---- Q4_0 (hs__repack_q4_0x8's layout), two groups a register ---- */

/* NC (2..4) activation rows against n_pairs pairs of groups (16 rows): lanes 0..7 rows of the
 * first group of a pair, 8..15 of the second. A block's exact int32 total per row and column
 * (sum u x - 8 sum x, u the unsigned nibbles: 8 vpdpbusd of 4 products a lane in four chains of
 * two, the first started at -8 sum x; one chain of eight was latency-bound), then acc =
 * fma(total, d_w * d_x, acc): hs__gemm_q4_0x8_avx2's bits. */
INLINE void q4_0x16_gemm(int64_t n, float *s, size_t bs, const uint8_t *wr, int64_t n_pairs,
                         const void *x, size_t xs, const int NC, const int32_t *negsx,
                         const float *dx)
{
    const int64_t nb = n / 32;
    const size_t bbytes = hs__q4_0x8_bytes(1, 32), gstride = hs__q4_0x8_bytes(1, n);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t p = 0; p < n_pairs; p++) {
        __m512 acc[4];
        for (int c = 0; c < NC; c++) {
            acc[c] = _mm512_setzero_ps();
        }
        const uint8_t *g0 = wr + (size_t)(2 * p) * gstride, *g1 = g0 + gstride;
        for (int64_t b = 0; b < nb; b++, g0 += bbytes, g1 += bbytes) {
            for (int l = 0; l < 3; l++) {
                _mm_prefetch((const char *)g0 + 2048 + 64 * l, _MM_HINT_T0);
                _mm_prefetch((const char *)g1 + 2048 + 64 * l, _MM_HINT_T0);
            }
            const __m512 dw = _mm512_cvtph_ps(_mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)g0)),
                _mm_loadu_si128((const __m128i *)(const void *)g1), 1));
            __m512i lo[4], hi[4];
            for (int k = 0; k < 4; k++) {
                const __m512i q = _mm512_inserti64x4(
                    _mm512_castsi256_si512(
                        _mm256_loadu_si256((const __m256i *)(const void *)(g0 + 16 + 32 * k))),
                    _mm256_loadu_si256((const __m256i *)(const void *)(g1 + 16 + 32 * k)), 1);
                lo[k] = _mm512_and_si512(q, m4);
                hi[k] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            }
            for (int c = 0; c < NC; c++) {
                const int8_t *xq =
                    ((const struct hs_block_q8_0 *)(const void *)((const uint8_t *)x +
                                                                  (size_t)c * xs) +
                     b)
                        ->qs;
                __m512i part[4];
                for (int k = 0; k < 4; k++) {
                    int32_t xl, xh;
                    memcpy(&xl, xq + 4 * k, sizeof(xl));
                    memcpy(&xh, xq + 16 + 4 * k, sizeof(xh));
                    part[k] = _mm512_dpbusd_epi32(k ? _mm512_setzero_si512()
                                                    : _mm512_set1_epi32(negsx[c * nb + b]),
                                                  lo[k], _mm512_set1_epi32(xl));
                    part[k] = _mm512_dpbusd_epi32(part[k], hi[k], _mm512_set1_epi32(xh));
                }
                const __m512i tot = _mm512_add_epi32(_mm512_add_epi32(part[0], part[1]),
                                                     _mm512_add_epi32(part[2], part[3]));
                acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot),
                                         _mm512_mul_ps(dw, _mm512_set1_ps(dx[c * nb + b])), acc[c]);
            }
        }
        for (int c = 0; c < NC; c++) {
            _mm512_storeu_ps(s + (size_t)c * bs + (size_t)(16 * p), acc[c]);
        }
    }
}

void hs__gemm_q4_0x8_avx512vnni(int64_t n, float *s, size_t bs, const void *wr, int64_t n_groups,
                                const void *x, size_t xs, int nc)
{
    const int64_t nb = n / 32;
    HS_ASSERT(nc >= 1 && nc <= 4 && nb <= HS__REPACK_MAX_BLOCKS);
    /* One activation row (decode) stays on the AVX2 kernel: reading two groups at once was
     * slower there (SmolLM-135M Q4_0 tg128, 2 Zen 5 threads, interleaved: 351 -> 296 t/s with
     * one chain of 8 vpdpbusd, 282 / 307 -> 252 / 277 with four) */
    const int64_t n_pairs = nc > 1 ? n_groups / 2 : 0;
    if (n_pairs > 0) {
        /* Per activation row and block: -8 sum(x) and d_x, made once for all the groups. */
        int32_t negsx[4 * HS__REPACK_MAX_BLOCKS];
        float dx[4 * HS__REPACK_MAX_BLOCKS];
        for (int c = 0; c < nc; c++) {
            const struct hs_block_q8_0 *xb =
                (const struct hs_block_q8_0 *)(const void *)((const uint8_t *)x + (size_t)c * xs);
            for (int64_t b = 0; b < nb; b++) {
                int32_t sum = 0;
                for (int i = 0; i < 32; i++) {
                    sum += xb[b].qs[i];
                }
                negsx[c * nb + b] = -8 * sum;
                dx[c * nb + b] = _cvtsh_ss(xb[b].d);
            }
        }
        const uint8_t *w8 = wr;
        switch (nc) {
        case 2:
            q4_0x16_gemm(n, s, bs, w8, n_pairs, x, xs, 2, negsx, dx);
            break;
        case 3:
            q4_0x16_gemm(n, s, bs, w8, n_pairs, x, xs, 3, negsx, dx);
            break;
        default:
            q4_0x16_gemm(n, s, bs, w8, n_pairs, x, xs, 4, negsx, dx);
            break;
        }
    }
    if (2 * n_pairs < n_groups) { /* the rest (an odd last group): the AVX2 kernel, same bits */
        hs__gemm_q4_0x8_avx2(n, s + 16 * n_pairs, bs,
                             (const uint8_t *)wr + (size_t)(2 * n_pairs) * hs__q4_0x8_bytes(1, n),
                             n_groups - 2 * n_pairs, x, xs, nc);
    }
}

void hs__gemv_q5_0x16_avx512(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x)
{
    q5_0x16_gemv(n, s, wr, n_groups, x, 0);
}

void hs__gemv_q5_0x16_avx512vnni(int64_t n, float *s, const void *wr, int64_t n_groups,
                                 const void *x)
{
    q5_0x16_gemv(n, s, wr, n_groups, x, 1);
}
#endif
