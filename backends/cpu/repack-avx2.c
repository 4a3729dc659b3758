/* Q4_0 weights repacked into groups of 8 rows, for every product (one activation row or more),
 * as llama.cpp does on x86 (block_q4_0x8, ggml_gemv / ggml_gemm_q4_0_8x8_q8_0): one 256-bit
 * register holds 4 bytes of each of the 8 rows, so the integer dot of a block comes out as the 8
 * rows' totals in the 8 int32 lanes with no horizontal reduction, and one 8-lane fma updates 8
 * outputs. The bits are those of quants-avx2.c's Q4_0 tile (llama.cpp's repacked order): per
 * block the exact integer dot, then acc = fma(total, d_w * d_x, acc), one chain per output in
 * block order.
 *
 * Layout (hs__q4_0x8_bytes): for each group of 8 rows, its nb blocks of 144 bytes: the 8 rows'
 * f16 scales, then 4 chunks of 32 bytes where byte 4r + j of chunk k is byte 4k + j of row r's
 * qs (low nibble: element 4k + j, high nibble: element 16 + 4k + j). As many bytes as the rows
 * take in the file. */
#include <string.h>

#include "backends/cpu/repack.h"

#if defined(__AVX2__)
#include <immintrin.h>

#define Q4_0X8_BLOCK_BYTES 144

/* Block b of row `row` of a matrix of bsize-byte blocks, rows w_stride bytes apart. */
static const uint8_t *row_block(const void *w, size_t w_stride, int64_t row, int64_t b,
                                size_t bsize)
{
    return (const uint8_t *)w + (size_t)row * w_stride + (size_t)b * bsize;
}

/* The part both 8-row layouts share: row r's f16 scale at dst[2r], and its 16 bytes of packed
 * nibbles 4 at a time into the 4 chunks of 32 bytes after the 8 scales. */
static void put_scale_and_nibbles(uint8_t *dst, int r, const void *d, const uint8_t *qs)
{
    memcpy(dst + 2 * r, d, 2);
    for (int c = 0; c < 4; c++) {
        memcpy(dst + 16 + 32 * c + 4 * r, qs + 4 * c, 4);
    }
}

size_t hs__q4_0x8_bytes(int64_t n_groups, int64_t n)
{
    return (size_t)n_groups * (size_t)(n / 32) * Q4_0X8_BLOCK_BYTES;
}

void hs__repack_q4_0x8(const void *w, size_t w_stride, int64_t n_groups, int64_t n, void *out)
{
    const int64_t nb = n / 32;
    uint8_t *dst = out;
    for (int64_t g = 0; g < n_groups; g++) {
        for (int64_t b = 0; b < nb; b++, dst += Q4_0X8_BLOCK_BYTES) {
            for (int r = 0; r < 8; r++) {
                const struct hs_block_q4_0 *src = (const void *)row_block(
                    w, w_stride, 8 * g + r, b, sizeof(struct hs_block_q4_0));
                put_scale_and_nibbles(dst, r, &src->d, src->qs);
            }
        }
    }
}

#define INLINE static inline __attribute__((always_inline))

INLINE __m256i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return _mm256_set1_epi32(v);
}

/* NC activation rows against n_groups groups. sum (u - 8) x = sum u x - 8 sum x with u the
 * unsigned nibbles; u x products summed in int16 over a block (16 products a lane, at most
 * 16 * 15 * 128 in magnitude: exact), then pairs into int32. */
INLINE void q4_0x8_gemm(int64_t n, float *s, size_t bs, const uint8_t *wr, int64_t n_groups,
                        const void *x, size_t xs, const int NC, const int32_t *sx8, const float *dx)
{
    const int64_t nb = n / 32;
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
    for (int64_t g = 0; g < n_groups; g++) {
        __m256 acc[4];
        for (int c = 0; c < NC; c++) {
            acc[c] = _mm256_setzero_ps();
        }
        const uint8_t *gb = wr + (size_t)g * (size_t)nb * Q4_0X8_BLOCK_BYTES;
        for (int64_t b = 0; b < nb; b++, gb += Q4_0X8_BLOCK_BYTES) {
            _mm_prefetch((const char *)gb + 2048, _MM_HINT_T0);
            _mm_prefetch((const char *)gb + 2048 + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)gb + 2048 + 128, _MM_HINT_T0);
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)gb));
            __m256i lo[4], hi[4];
            for (int k = 0; k < 4; k++) {
                const __m256i p =
                    _mm256_loadu_si256((const __m256i *)(const void *)(gb + 16 + 32 * k));
                lo[k] = _mm256_and_si256(p, m4);
                hi[k] = _mm256_and_si256(_mm256_srli_epi16(p, 4), m4);
            }
            for (int c = 0; c < NC; c++) {
                const int8_t *xq =
                    ((const struct hs_block_q8_0 *)(const void *)((const uint8_t *)x +
                                                                  (size_t)c * xs) +
                     b)
                        ->qs;
                __m256i a = _mm256_maddubs_epi16(lo[0], bcast4(xq));
                a = _mm256_add_epi16(a, _mm256_maddubs_epi16(hi[0], bcast4(xq + 16)));
                for (int k = 1; k < 4; k++) {
                    a = _mm256_add_epi16(a, _mm256_maddubs_epi16(lo[k], bcast4(xq + 4 * k)));
                    a = _mm256_add_epi16(a, _mm256_maddubs_epi16(hi[k], bcast4(xq + 16 + 4 * k)));
                }
                const __m256i tot = _mm256_sub_epi32(_mm256_madd_epi16(a, ones16),
                                                     _mm256_set1_epi32(sx8[c * nb + b]));
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot),
                                         _mm256_mul_ps(dw, _mm256_set1_ps(dx[c * nb + b])), acc[c]);
            }
        }
        for (int c = 0; c < NC; c++) {
            _mm256_storeu_ps(s + (size_t)c * bs + (size_t)(8 * g), acc[c]);
        }
    }
}

void hs__gemm_q4_0x8_avx2(int64_t n, float *s, size_t bs, const void *wr, int64_t n_groups,
                          const void *x, size_t xs, int nc)
{
    const int64_t nb = n / 32;
    HS_ASSERT(nc >= 1 && nc <= 4 && nb <= HS__REPACK_MAX_BLOCKS);
    /* Per activation row and block: 8 sum(x) and d_x, made once for all the groups. */
    int32_t sx8[4 * HS__REPACK_MAX_BLOCKS];
    float dx[4 * HS__REPACK_MAX_BLOCKS];
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int c = 0; c < nc; c++) {
        const struct hs_block_q8_0 *xb =
            (const struct hs_block_q8_0 *)(const void *)((const uint8_t *)x + (size_t)c * xs);
        for (int64_t b = 0; b < nb; b++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)xb[b].qs);
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
            sx8[c * nb + b] = 8 * _mm_cvtsi128_si32(t);
            dx[c * nb + b] = _cvtsh_ss(xb[b].d);
        }
    }
    switch (nc) {
    case 1:
        q4_0x8_gemm(n, s, bs, wr, n_groups, x, xs, 1, sx8, dx);
        break;
    case 2:
        q4_0x8_gemm(n, s, bs, wr, n_groups, x, xs, 2, sx8, dx);
        break;
    case 3:
        q4_0x8_gemm(n, s, bs, wr, n_groups, x, xs, 3, sx8, dx);
        break;
    default:
        q4_0x8_gemm(n, s, bs, wr, n_groups, x, xs, 4, sx8, dx);
        break;
    }
}

/* ---- Q5_0, one activation row (the kernel: gemv-q5_0x8.c) ---- */

size_t hs__q5_0x8_bytes(int64_t n_groups, int64_t n)
{
    return (size_t)n_groups * (size_t)(n / 32) * HS__Q5_0X8_BLOCK_BYTES;
}

void hs__repack_q5_0x8(const void *w, size_t w_stride, int64_t n_groups, int64_t n, void *out)
{
    const int64_t nb = n / 32;
    uint8_t *dst = out;
    for (int64_t g = 0; g < n_groups; g++) {
        for (int64_t b = 0; b < nb; b++, dst += HS__Q5_0X8_BLOCK_BYTES) {
            for (int r = 0; r < 8; r++) {
                const struct hs_block_q5_0 *src = (const void *)row_block(
                    w, w_stride, 8 * g + r, b, sizeof(struct hs_block_q5_0));
                put_scale_and_nibbles(dst, r, &src->d, src->qs);
                uint32_t qh;
                memcpy(&qh, src->qh, sizeof(qh));
                for (int j = 0; j < 4; j++) {
                    uint8_t h = 0;
                    for (int k = 0; k < 8; k++) {
                        h |= (uint8_t)((qh >> (4 * k + j) & 1u) << k);
                    }
                    dst[144 + 4 * r + j] = h;
                }
            }
        }
    }
}

#else
typedef int hs__repack_avx2_unavailable;
#endif
