/* What the gemv kernels of quants-avx2.c and quants-avx512.c share: the weight prefetch, the
 * K-quant scale unpacking and an 8-vector integer reduction. Internal to backends/cpu. */
#ifndef HS_BACKENDS_CPU_GEMV_INL_H
#define HS_BACKENDS_CPU_GEMV_INL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A gemv pass reads its rows, one contiguous span of rows x row-size bytes, block by block
 * across the rows; over its nb blocks it prefetches the same span HS__GEMV_PREFETCH_BYTES further
 * on, line by line in order (block b of nb: the b-th nb-th of the span), one sequential stream
 * the hardware prefetchers follow too (struct hs__gemv_stream). bench-kernels "stream" (49152 x
 * 576, 1 thread, best of 5, load 9-11, two rounds, AVX2): Q8_0 26.2 / 26.3 GB/s (one row a pass, a
 * prefetch per row) -> 34.5 / 28.3, where one per row at +8 KiB gave 21.1 / 15.6; Q4_0 11.4 / 16.3
 * -> 17.5 / 16.8; Q5_0 12.2 / 11.3 -> 14.8 / 14.5. 4 KiB and 16 KiB ahead were no better. */
#define HS__GEMV_PREFETCH_BYTES 8192

/* The prefetch cursor of one pass: its span split into nb shares as evenly as whole bytes allow
 * (block b's share ends at (b + 1) x span / nb), stepped without a division per block, each line
 * prefetched once, when the share that reaches it comes. */
struct hs__gemv_stream {
    const char *p;    /* the span's start, HS__GEMV_PREFETCH_BYTES on */
    size_t next;      /* offset of the first line not yet prefetched */
    size_t end;       /* end of the shares stepped so far */
    size_t step, rem; /* span = step x nb + rem */
    size_t frac, nb;  /* end = floor(b x span / nb) with frac = b x span mod nb */
};

static inline __attribute__((always_inline)) struct hs__gemv_stream
hs__gemv_stream_start(const void *w, size_t span, int64_t nb)
{
    const size_t n = nb > 0 ? (size_t)nb : 1;
    return (struct hs__gemv_stream){
        .p = (const char *)w + HS__GEMV_PREFETCH_BYTES,
        .step = span / n,
        .rem = span % n,
        .nb = n,
    };
}

/* Prefetch the next block's share of the span. */
static inline __attribute__((always_inline)) void hs__gemv_stream_next(struct hs__gemv_stream *s)
{
    s->end += s->step;
    s->frac += s->rem;
    if (s->frac >= s->nb) {
        s->frac -= s->nb;
        s->end++;
    }
    for (; s->next < s->end; s->next += 64) {
        _mm_prefetch(s->p + s->next, _MM_HINT_T0);
    }
}

/* Unpacks the 6-bit scales and mins of a Q4_K / Q5_K block into sc[8], m[8]. */
static inline __attribute__((always_inline)) void hs__unpack_scales_k4(const uint8_t *q,
                                                                       uint8_t *sc, uint8_t *m)
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

/* The lane sums of v[0..7] as lanes 0..7 (exact integers). */
static inline __attribute__((always_inline)) __m256i hs__reduce8_epi32(const __m256i v[8])
{
    const __m256i h0 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i h1 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                            _mm256_permute2x128_si256(h0, h1, 0x31));
}

#endif
