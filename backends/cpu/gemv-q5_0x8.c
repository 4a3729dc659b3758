/* Q5_0 decode over the 8-row repacked copy (repack.h: hs__repack_q5_0x8), built twice: into the
 * AVX2 kernel library (hs__gemv_q5_0x8_avx2) and, with -mavxvnni, into the AVX-VNNI one
 * (hs__gemv_q5_0x8_avxvnni), which the CPU backend picks where the CPU has it. Both give the bits
 * of the AVX2 Q5_0 vec_dot: lane k of a row is the exact int32 sum (u - 16) x over elements 4k ..
 * 4k + 3, u the unsigned weight (value + 16); AVX2 makes it as madd(maddubs(u, x), 1) - 16 sum x,
 * VNNI as one vpdpbusd started from -16 sum x. */
#include <string.h>

#include "backends/cpu/repack.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#if defined(__AVXVNNI__)
#define HS__Q5_0X8_GEMV hs__gemv_q5_0x8_avxvnni
#define HS__Q5_0X8_VNNI 1
#else
#define HS__Q5_0X8_GEMV hs__gemv_q5_0x8_avx2
#define HS__Q5_0X8_VNNI 0
#endif

#define INLINE static inline __attribute__((always_inline))

INLINE __m256i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return _mm256_set1_epi32(v);
}

/* Lane k's exact int32 sums for the 8 rows: u . x over each row's quad, plus off = -16 sum x. */
INLINE __m256i lane_sums(__m256i u, __m256i xq, int32_t off)
{
#if HS__Q5_0X8_VNNI
    return _mm256_dpbusd_avx_epi32(_mm256_set1_epi32(off), u, xq);
#else
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(u, xq), _mm256_set1_epi16(1)),
                            _mm256_set1_epi32(off));
#endif
}

void HS__Q5_0X8_GEMV(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x)
{
    const int64_t nb = n / 32;
    HS_ASSERT(nb <= HS__REPACK_MAX_BLOCKS);
    /* Per activation block: -16 x each lane's sum of x (the offset of the unsigned weights) and
     * d_x, made once for all the groups. */
    int32_t off[8 * HS__REPACK_MAX_BLOCKS];
    float dx[HS__REPACK_MAX_BLOCKS];
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    const struct hs_block_q8_0 *xb = x;
    for (int64_t b = 0; b < nb; b++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)xb[b].qs);
        const __m256i sx = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
        _mm256_storeu_si256((__m256i *)(void *)(off + 8 * b),
                            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sx, 4)));
        dx[b] = _cvtsh_ss(xb[b].d);
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10);
    const uint8_t *gb = wr;
    for (int64_t g = 0; g < n_groups; g++) {
        __m256 acc[8];
        for (int k = 0; k < 8; k++) {
            acc[k] = _mm256_setzero_ps();
        }
        for (int64_t b = 0; b < nb; b++, gb += HS__Q5_0X8_BLOCK_BYTES) {
            _mm_prefetch((const char *)gb + 2048, _MM_HINT_T0);
            _mm_prefetch((const char *)gb + 2048 + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)gb + 2048 + 128, _MM_HINT_T0);
            const __m256 dd =
                _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)gb)),
                              _mm256_set1_ps(dx[b]));
            const int8_t *xq = xb[b].qs;
            /* byte 4r + j, bit k: the fifth bit of row r's element 4k + j */
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)(gb + 144));
            for (int c = 0; c < 4; c++) {
                const __m256i p =
                    _mm256_loadu_si256((const __m256i *)(const void *)(gb + 16 + 32 * c));
                const __m256i nib[2] = {_mm256_and_si256(p, m4),
                                        _mm256_and_si256(_mm256_srli_epi16(p, 4), m4)};
                for (int h = 0; h < 2; h++) {
                    const int k = c + 4 * h; /* lane k: elements 4k .. 4k + 3 of each row */
                    /* bit k of each byte moved to bit 4 (16-bit shifts: no bit crosses into
                     * the other byte's bit 4) */
                    const __m256i hs = k < 4    ? _mm256_slli_epi16(hb, 4 - k)
                                       : k == 4 ? hb
                                                : _mm256_srli_epi16(hb, k - 4);
                    const __m256i hi = _mm256_and_si256(hs, b4);
                    const __m256i u = _mm256_or_si256(nib[h], hi); /* the value + 16 */
                    const __m256i lanes = lane_sums(u, bcast4(xq + 4 * k), off[8 * b + k]);
                    acc[k] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc[k]);
                }
            }
        }
        /* each row's hsum_ps of its 8 lanes, the same pairs in the same order */
        const __m256 t0 = _mm256_add_ps(acc[0], acc[4]), t1 = _mm256_add_ps(acc[1], acc[5]);
        const __m256 t2 = _mm256_add_ps(acc[2], acc[6]), t3 = _mm256_add_ps(acc[3], acc[7]);
        _mm256_storeu_ps(s + 8 * g, _mm256_add_ps(_mm256_add_ps(t0, t2), _mm256_add_ps(t1, t3)));
    }
}

#else
typedef int hs__gemv_q5_0x8_unavailable;
#endif
