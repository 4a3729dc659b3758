/* Inline helpers shared by the AVX-512 kernel files (quants-avx512.c, tiles-avx512.c), which
 * include it after <immintrin.h> with AVX-512 F/BW enabled. Internal to backends/cpu. */
#ifndef HS_BACKENDS_CPU_AVX512_INL_H
#define HS_BACKENDS_CPU_AVX512_INL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* Block b of Q8_0 activation rows c and c + 1 (rows xs bytes apart) side by side: their quants
 * in the low and high 256-bit halves of *xq, their scales over the same halves of *dx. */
static inline __attribute__((always_inline)) void
hs__q8_0_x_pair(const void *x, size_t xs, int c, int64_t b, __m512i *xq, __m512 *dx)
{
    const struct hs_block_q8_0 *x0 =
        (const struct hs_block_q8_0 *)(const void *)((const uint8_t *)x + (size_t)c * xs) + b;
    const struct hs_block_q8_0 *x1 =
        (const struct hs_block_q8_0 *)(const void *)((const uint8_t *)x + (size_t)(c + 1) * xs) + b;
    *xq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x0->qs)),
                             _mm256_loadu_si256((const __m256i *)x1->qs), 1);
    *dx = _mm512_cvtph_ps(_mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_set1_epi16((short)x0->d)), _mm_set1_epi16((short)x1->d), 1));
}

#endif
