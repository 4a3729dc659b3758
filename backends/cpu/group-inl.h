/* What the group-form converters of gemm-group-avx512.c and gemm-group-avxvnni.c share: the loops
 * that walk Q8_0 and Q5_0 weight rows group by group and block by block, handing each block of a
 * group (its rows' 32 signed values and scales, zeros past the last row) to the file's writer,
 * and the activation form. Internal to backends/cpu; for files built with AVX2 and F16C. */
#ifndef HS_BACKENDS_CPU_GROUP_INL_H
#define HS_BACKENDS_CPU_GROUP_INL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/cpu/quants.h"

/* Writes one block of a group of G rows: v[r] row r's 32 signed values, d[r] its scale. */
typedef void (*hs__group_block_fn)(const void *ctx, const uint8_t *const *v, const float *d,
                                   uint8_t *out);

static const uint8_t group_zero_values[32];

/* Rows [0, n_rows) of a Q8_0 matrix (rows ws bytes apart, n elements) into groups of G rows ds
 * bytes apart, block_bytes a block. */
static inline __attribute__((always_inline)) void
hs__group_split_q8_0(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst, size_t ds,
                     const int G, const size_t block_bytes, const hs__group_block_fn block,
                     const void *ctx)
{
    const int64_t nb = n / 32;
    for (int64_t g = 0; g * G < n_rows; g++) {
        const int m = (int)HS_MIN(G, n_rows - g * G);
        const struct hs_block_q8_0 *rows[16];
        for (int r = 0; r < m; r++) {
            rows[r] = (const void *)((const uint8_t *)w + (size_t)(g * G + r) * ws);
        }
        uint8_t *out = (uint8_t *)dst + (size_t)g * ds;
        for (int64_t b = 0; b < nb; b++, out += block_bytes) {
            const uint8_t *v[16];
            float d[16];
            for (int r = 0; r < G; r++) {
                v[r] = r < m ? (const uint8_t *)rows[r][b].qs : group_zero_values;
                d[r] = r < m ? _cvtsh_ss(rows[r][b].d) : 0.0f;
            }
            block(ctx, v, d, out);
        }
    }
}

/* Blocks of Q5_0 rows widened at a time (hs__split_rows_q5_0_avx2's signed values and float
 * scales) before they are made groups. */
#define HS__GROUP_Q5_0_RUN 8

/* As hs__group_split_q8_0 for Q5_0 rows (the signed values, -16..15). */
static inline __attribute__((always_inline)) void
hs__group_split_q5_0(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst, size_t ds,
                     const int G, const size_t block_bytes, const hs__group_block_fn block,
                     const void *ctx)
{
    enum { RS = HS__GROUP_Q5_0_RUN * (32 + sizeof(float)) }; /* bytes of a row's run, widened */
    _Alignas(64) uint8_t run[16][RS];
    const int64_t nb = n / 32;
    for (int64_t g = 0; g * G < n_rows; g++) {
        const int m = (int)HS_MIN(G, n_rows - g * G);
        const uint8_t *rows = (const uint8_t *)w + (size_t)(g * G) * ws;
        uint8_t *out = (uint8_t *)dst + (size_t)g * ds;
        for (int64_t b0 = 0; b0 < nb; b0 += HS__GROUP_Q5_0_RUN) {
            const int nk = (int)HS_MIN(HS__GROUP_Q5_0_RUN, nb - b0);
            hs__split_rows_q5_0_avx2(rows + (size_t)b0 * sizeof(struct hs_block_q5_0), ws, m,
                                     (int64_t)nk * 32, run, RS);
            for (int k = 0; k < nk; k++, out += block_bytes) {
                const uint8_t *v[16];
                float d[16];
                for (int r = 0; r < G; r++) {
                    const float *rd = (const float *)(const void *)(run[r] + nk * 32);
                    v[r] = r < m ? run[r] + 32 * k : group_zero_values;
                    d[r] = r < m ? rd[k] : 0.0f;
                }
                block(ctx, v, d, out);
            }
        }
    }
}

/* Activations in the group form (hs_quant_kernels.from_float_group): quantize's Q8_0 blocks (the
 * table's from_float, so the bits every Q8_0 kernel of it takes) as n signed values in 32-byte
 * blocks, then the block scales as floats (zeros up to a multiple of 8), then per block 8 int32
 * offsets, -128 times the sum of quad k (exact: maddubs of ones and the values, then madd). The
 * weights come as w + 128: a quad's lanes started at its offset cancel that. */
static inline __attribute__((always_inline)) void
hs__group_from_float(const float *x, void *vy, int64_t n,
                     void (*const quantize)(const float *, void *, int64_t))
{
    uint8_t *qs = vy;
    const int64_t nb = n / 32, nd = (nb + 7) / 8 * 8;
    float *d = (float *)(void *)(qs + n);
    int32_t *off = (int32_t *)(void *)(d + nd);
    for (int64_t b = 0; b < nb; b++) {
        struct hs_block_q8_0 blk;
        quantize(x + b * 32, &blk, 32);
        const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)blk.qs);
        _mm256_store_si256((__m256i *)(void *)(qs + b * 32), v);
        d[b] = _cvtsh_ss(blk.d);
        const __m256i sum =
            _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
        _mm256_store_si256((__m256i *)(void *)(off + 8 * b),
                           _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
    }
    for (int64_t b = nb; b < nd; b++) {
        d[b] = 0.0f;
    }
}

#endif
