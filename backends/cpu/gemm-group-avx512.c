/* Q8_0 and Q5_0 prompt tiles on AVX-512 VNNI over weight rows interleaved in groups of 16 (the
 * group form, hs_quant_kernels.gemm_group), made per chunk of weight rows into a thread's
 * scratch: a register holds the same 4-byte quad of 16 rows, so one vpdpbusd gives that quad's
 * exact int32 sum for 16 rows and one activation row, and each of the 8 float lanes per output
 * (lane k: elements 4k .. 4k + 3) takes its block's fma for 16 rows in one instruction, where the
 * file-layout tile (hs__gemm_tile_q8x_avx512vnni) spends a convert, a multiply and an fma on 2
 * rows' lanes and loads its activation quads per pair of rows. The weights come as w + 128
 * (unsigned; Q5_0's values first widened to int8), the activations signed with each quad's
 * offset, -128 times its sum, precomputed: a quad's lanes start at it, so the tile keeps 8
 * registers of weights per block and reads the rest as 4-byte broadcasts. The same additions in
 * the same order as vec_dot, gemv and the other tiles: the same bits. */
#include "backends/cpu/quants.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#include <string.h>

#include "backends/cpu/group-inl.h"

#define INLINE static inline __attribute__((always_inline))

/* One block of a group: quad k (k < 8) of the 16 rows as 64 bytes, byte 4r + j being row r's
 * value 4k + j plus 128 (vpdpbusd's unsigned operand), then the 16 rows' scales as floats. */
#define Q8G_D 512
_Static_assert(Q8G_D + 16 * sizeof(float) == HS__Q8_0G_BLOCK_BYTES, "block layout");

/* Lane sources for _mm512_permutex2var_epi32 (0..15: a, 16..31: b) of the three rounds that
 * transpose 16 rows x 8 quads (one block of a group; see group_block). */
static void group_idx_init(int32_t g_idx[3][2][16])
{
    /* round 1: rows 4q..4q+3 (a: 4q, 4q + 1; b: 4q + 2, 4q + 3, each 8 quads) -> quads
     * 4h..4h + 3 of the 4 rows, lane 4k' + s */
    for (int h = 0; h < 2; h++) {
        for (int k = 0; k < 4; k++) {
            for (int r = 0; r < 4; r++) {
                g_idx[0][h][4 * k + r] = (r < 2 ? 0 : 16) + (r % 2) * 8 + 4 * h + k;
            }
        }
    }
    /* round 2: rows 8p..8p+3 (a) and 8p+4..8p+7 (b), quads 4h..4h + 3 -> quads 4h + 2m,
     * 4h + 2m + 1 of the 8 rows, lane 8kk + s */
    for (int m = 0; m < 2; m++) {
        for (int kk = 0; kk < 2; kk++) {
            for (int r = 0; r < 8; r++) {
                g_idx[1][m][8 * kk + r] = (r < 4 ? 0 : 16) + (2 * m + kk) * 4 + r % 4;
            }
        }
    }
    /* round 3: rows 0..7 (a) and 8..15 (b) -> quad 2m' + kk of the 16 rows, lane r */
    for (int kk = 0; kk < 2; kk++) {
        for (int r = 0; r < 16; r++) {
            g_idx[2][kk][r] = (r < 8 ? 0 : 16) + kk * 8 + r % 8;
        }
    }
}

/* The transposing permutes of group_block, built once per call of a converter. */
struct group_perm {
    __m512i idx[3][2];
};

INLINE struct group_perm group_perm_make(void)
{
    int32_t g_idx[3][2][16];
    group_idx_init(g_idx);
    struct group_perm gp;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 2; j++) {
            gp.idx[i][j] = _mm512_loadu_si512(g_idx[i][j]);
        }
    }
    return gp;
}

/* One block of a group into out (an hs__group_block_fn; ctx: the struct group_perm): v[r] the
 * 32 signed values of row r's block, d[r] its scale. */
INLINE void group_block(const void *ctx, const uint8_t *const *v, const float *d, uint8_t *out)
{
    const struct group_perm *gp = ctx;
    __m512i rr[8]; /* rows 2i, 2i + 1 */
    for (int i = 0; i < 8; i++) {
        rr[i] = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)v[2 * i])),
            _mm256_loadu_si256((const __m256i *)(const void *)v[2 * i + 1]), 1);
    }
    __m512i p[4][2]; /* rows 4q.., quads 4h.. */
    for (int q = 0; q < 4; q++) {
        for (int h = 0; h < 2; h++) {
            p[q][h] = _mm512_permutex2var_epi32(rr[2 * q], gp->idx[0][h], rr[2 * q + 1]);
        }
    }
    __m512i u[2][2][2]; /* rows 8pp.., quads 4h + 2m.. */
    for (int pp = 0; pp < 2; pp++) {
        for (int h = 0; h < 2; h++) {
            for (int m = 0; m < 2; m++) {
                u[pp][h][m] =
                    _mm512_permutex2var_epi32(p[2 * pp][h], gp->idx[1][m], p[2 * pp + 1][h]);
            }
        }
    }
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int h = 0; h < 2; h++) {
        for (int m = 0; m < 2; m++) {
            for (int kk = 0; kk < 2; kk++) {
                const __m512i t = _mm512_permutex2var_epi32(u[0][h][m], gp->idx[2][kk], u[1][h][m]);
                _mm512_store_si512(out + 64 * (4 * h + 2 * m + kk), _mm512_xor_si512(t, bias));
            }
        }
    }
    _mm512_store_ps(out + Q8G_D, _mm512_loadu_ps(d));
}

void hs__split_group_q8_0_avx512vnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                     size_t ds)
{
    const struct group_perm gp = group_perm_make();
    hs__group_split_q8_0(w, ws, n_rows, n, dst, ds, 16, HS__Q8_0G_BLOCK_BYTES, group_block, &gp);
}

void hs__split_group_q5_0_avx512vnni(const void *w, size_t ws, int64_t n_rows, int64_t n, void *dst,
                                     size_t ds)
{
    const struct group_perm gp = group_perm_make();
    hs__group_split_q5_0(w, ws, n_rows, n, dst, ds, 16, HS__Q8_0G_BLOCK_BYTES, group_block, &gp);
}

void hs__from_float_q8_0g_avx512vnni(const float *x, void *vy, int64_t n)
{
    hs__group_from_float(x, vy, n, hs__from_float_q8_0_avx512);
}

/* Outputs of the group's rows for NC (1 or 2) activation rows in the group form, xs bytes
 * apart: s[c * bs + r], r < nr. */
INLINE void q8g_cols(int64_t n, float *s, size_t bs, const uint8_t *g, const uint8_t *x, size_t xs,
                     int nr, const int NC)
{
    __m512 acc[2][8];
    for (int c = 0; c < NC; c++) {
        for (int k = 0; k < 8; k++) {
            acc[c][k] = _mm512_setzero_ps();
        }
    }
    const int64_t nb = n / 32, nd = (nb + 7) / 8 * 8;
    const float *xd[2];
    const int32_t *xo[2];
    for (int c = 0; c < NC; c++) {
        xd[c] = (const float *)(const void *)(x + (size_t)c * xs + (size_t)n);
        xo[c] = (const int32_t *)(const void *)(xd[c] + nd);
    }
    for (int64_t b = 0; b < nb; b++, g += HS__Q8_0G_BLOCK_BYTES) {
        const __m512 dw = _mm512_load_ps(g + Q8G_D);
        __m512 sc[2];
        for (int c = 0; c < NC; c++) {
            sc[c] = _mm512_mul_ps(dw, _mm512_set1_ps(xd[c][b]));
        }
        __m512i wq[8];
        for (int k = 0; k < 8; k++) {
            wq[k] = _mm512_load_si512(g + 64 * k);
        }
        for (int k = 0; k < 8; k++) {
            for (int c = 0; c < NC; c++) {
                int32_t quad;
                memcpy(&quad, x + (size_t)c * xs + (size_t)b * 32 + 4 * k, sizeof(quad));
                const __m512i dot = _mm512_dpbusd_epi32(_mm512_set1_epi32(xo[c][8 * b + k]), wq[k],
                                                        _mm512_set1_epi32(quad));
                acc[c][k] = _mm512_fmadd_ps(sc[c], _mm512_cvtepi32_ps(dot), acc[c][k]);
            }
        }
    }
    const __mmask16 keep = (__mmask16)((1u << nr) - 1);
    for (int c = 0; c < NC; c++) {
        /* as hsum8: ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)), 16 rows at once */
        const __m512 e =
            _mm512_add_ps(_mm512_add_ps(acc[c][0], acc[c][4]), _mm512_add_ps(acc[c][2], acc[c][6]));
        const __m512 o =
            _mm512_add_ps(_mm512_add_ps(acc[c][1], acc[c][5]), _mm512_add_ps(acc[c][3], acc[c][7]));
        _mm512_mask_storeu_ps(s + (size_t)c * bs, keep, _mm512_add_ps(e, o));
    }
}

void hs__gemm_group_q8_0_avx512vnni(int64_t n, float *s, size_t bs, const void *g, const void *x,
                                    size_t xs, int nr, int nc)
{
    HS_ASSERT(nr >= 1 && nr <= 16 && nc >= 1);
    const uint8_t *xr = x;
    int c = 0;
    for (; c + 2 <= nc; c += 2) {
        q8g_cols(n, s + (size_t)c * bs, bs, g, xr + (size_t)c * xs, xs, nr, 2);
    }
    if (c < nc) {
        q8g_cols(n, s + (size_t)c * bs, bs, g, xr + (size_t)c * xs, xs, nr, 1);
    }
}

#endif
