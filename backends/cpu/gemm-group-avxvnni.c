/* The group form on AVX2 with AVX-VNNI (Alder Lake, Zen 5; hs_quant_kernels.gemm_group of the
 * AVX2 table where hs__cpu_has_avxvnni): gemm-group-avx512.c's design in 256-bit registers,
 * groups of 8 rows. A register holds the same 4-byte quad of 8 rows (weights as w + 128), one
 * vpdpbusd started from the activation quad's offset (-128 times its sum) gives that quad's
 * exact int32 sum for the 8 rows, and each of the 8 float lanes per output takes its block's fma
 * for 8 rows in one instruction, where the AVX2 file-layout tile spends two signs, a maddubs, a
 * madd, a convert, a multiply and an fma on one row's lanes. The same additions in the same
 * order as the AVX2 vec_dot, gemv and tiles: the same bits (which are the AVX-512 ones too). */
#include "backends/cpu/quants.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && defined(__AVXVNNI__)
#include <immintrin.h>
#include <string.h>

#include "backends/cpu/group-inl.h"

#define INLINE static inline __attribute__((always_inline))

/* One block of a group: quad k (k < 8) of the 8 rows as 32 bytes, byte 4r + j being row r's
 * value 4k + j plus 128, then the 8 rows' scales as floats. */
#define G8_D 256
_Static_assert(G8_D + 8 * sizeof(float) == HS__Q8_0G8_BLOCK_BYTES, "block layout");

/* One block of a group into out (an hs__group_block_fn): v[r] the 32 signed values of row r's
 * block, d[r] its scale (an 8 x 8 transpose of dwords). */
INLINE void group8_block(const void *ctx, const uint8_t *const *v, const float *d, uint8_t *out)
{
    (void)ctx;
    __m256i r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = _mm256_loadu_si256((const __m256i *)(const void *)v[i]);
    }
    __m256i t[8], u[8];
    for (int i = 0; i < 4; i++) { /* rows 2i, 2i + 1: dwords 0 1 4 5 / 2 3 6 7 interleaved */
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) { /* rows 4h..4h + 3: dword j (and j + 4) of each */
        u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    for (int j = 0; j < 4; j++) {
        _mm256_store_si256((__m256i *)(void *)(out + 32 * j),
                           _mm256_xor_si256(_mm256_permute2x128_si256(u[j], u[4 + j], 0x20), bias));
        _mm256_store_si256((__m256i *)(void *)(out + 32 * (4 + j)),
                           _mm256_xor_si256(_mm256_permute2x128_si256(u[j], u[4 + j], 0x31), bias));
    }
    _mm256_store_ps((float *)(void *)(out + G8_D), _mm256_loadu_ps(d));
}

void hs__split_group_q8_0_avxvnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                  size_t ds)
{
    hs__group_split_q8_0(w, ws, n_rows, n, dst, ds, 8, HS__Q8_0G8_BLOCK_BYTES, group8_block, NULL);
}

void hs__split_group_q5_0_avxvnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                  size_t ds)
{
    hs__group_split_q5_0(w, ws, n_rows, n, dst, ds, 8, HS__Q8_0G8_BLOCK_BYTES, group8_block, NULL);
}

/* The AVX2 table's from_float, so the AVX2 quantizer. */
void hs__from_float_q8_0g_avxvnni(const float *x, void *vy, int64_t n)
{
    hs__group_from_float(x, vy, n, hs__from_float_q8_0_avx2);
}

/* Outputs of the group's rows for one activation row in the group form: s[r], r < nr. Its 8
 * chains fill half the 16 registers; the weights are loaded per quad. */
INLINE void q8g8_col(int64_t n, float *s, const uint8_t *g, const uint8_t *x, int nr)
{
    __m256 acc[8];
    for (int k = 0; k < 8; k++) {
        acc[k] = _mm256_setzero_ps();
    }
    const int64_t nb = n / 32, nd = (nb + 7) / 8 * 8;
    const float *xd = (const float *)(const void *)(x + (size_t)n);
    const int32_t *xo = (const int32_t *)(const void *)(xd + nd);
    for (int64_t b = 0; b < nb; b++, g += HS__Q8_0G8_BLOCK_BYTES) {
        const __m256 sc = _mm256_mul_ps(_mm256_load_ps((const float *)(const void *)(g + G8_D)),
                                        _mm256_set1_ps(xd[b]));
        for (int k = 0; k < 8; k++) {
            int32_t quad;
            memcpy(&quad, x + (size_t)b * 32 + 4 * k, sizeof(quad));
            const __m256i dot = _mm256_dpbusd_avx_epi32(
                _mm256_set1_epi32(xo[8 * b + k]),
                _mm256_load_si256((const __m256i *)(const void *)(g + 32 * k)),
                _mm256_set1_epi32(quad));
            acc[k] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(dot), acc[k]);
        }
    }
    /* as hsum_ps: ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)), 8 rows at once */
    const __m256 e = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    const __m256 o = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    const __m256i keep =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(s, keep, _mm256_add_ps(e, o));
}

/* gemm_group over one group of 8 rows (nr in 1..8 of them wanted) and nc >= 1 activation rows. */
void hs__gemm_group8_avxvnni(int64_t n, float *s, size_t bs, const void *g, const void *x,
                             size_t xs, int nr, int nc)
{
    HS_ASSERT(nr >= 1 && nr <= 8 && nc >= 1);
    for (int c = 0; c < nc; c++) {
        q8g8_col(n, s + (size_t)c * bs, g, (const uint8_t *)x + (size_t)c * xs, nr);
    }
}

#else
typedef int hs__gemm_group_avxvnni_unavailable;
#endif
