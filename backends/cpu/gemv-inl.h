/* The gemv kernels' weight prefetch, shared by quants-avx2.c and quants-avx512.c. Internal to
 * backends/cpu. */
#ifndef HS_BACKENDS_CPU_GEMV_INL_H
#define HS_BACKENDS_CPU_GEMV_INL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

/* A gemv pass reads its rows, one contiguous span of rows x row-size bytes, block by block
 * across the rows; over its nb blocks it prefetches the same span HS__GEMV_PREFETCH_BYTES further
 * on, line by line in order (block b of nb: the b-th nb-th of the span), one sequential stream
 * the hardware prefetchers follow too. bench-kernels "stream" (49152 x 576, 1 thread, best of 5,
 * load 9-11, two rounds, AVX2): Q8_0 26.2 / 26.3 GB/s (one row a pass, a prefetch per row) ->
 * 34.5 / 28.3, where one per row at +8 KiB gave 21.1 / 15.6; Q4_0 11.4 / 16.3 -> 17.5 / 16.8;
 * Q5_0 12.2 / 11.3 -> 14.8 / 14.5. 4 KiB and 16 KiB ahead were no better. */
#define HS__GEMV_PREFETCH_BYTES 8192

static inline __attribute__((always_inline)) void hs__gemv_prefetch(const void *w, size_t span,
                                                                    int64_t b, int64_t nb)
{
    const char *p = (const char *)w + HS__GEMV_PREFETCH_BYTES;
    const size_t end = (size_t)(b + 1) * span / (size_t)nb;
    for (size_t o = ((size_t)b * span / (size_t)nb) & ~(size_t)63; o < end; o += 64) {
        _mm_prefetch(p + o, _MM_HINT_T0);
    }
}

#endif
