/* The fused f16 decode attention: attention.c's one-query-row path (ggml's one_chunk precision)
 * for f16 K and V, the query heads of a GQA group together. Compiled into both kernel libraries:
 * with AVX-512 (hs__attn_group_f16_avx512) the K dot products and the V sums take 16 lanes a
 * register where the AVX2 build (hs__attn_group_f16_avx2) takes 8, each lane's operations the
 * same, so the same bits. */
#include <math.h>
#include <string.h>

#include "backends/cpu/attn-fused.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#if defined(__AVX512F__)
#define HS__ATTN_WIDE     1
#define HS__ATTN_GROUP_FN hs__attn_group_f16_avx512
#else
#define HS__ATTN_WIDE     0
#define HS__ATTN_GROUP_FN hs__attn_group_f16_avx2
#endif

#define INLINE static inline __attribute__((always_inline))

/* x rounded to f16 and widened back (what a store to an f16 row and a reload give); f16 values
 * widened. */
#if HS__ATTN_WIDE
INLINE __m512 round_f16x16(__m512 x)
{
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

INLINE __m512 load_f16x16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
#else
INLINE __m256 round_f16_avx2(__m256 x)
{
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

INLINE __m256 load_f16_avx2(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
#endif

/* The 8 lane sums of K's f16 vec_dot (quants-avx2.c's FLOAT_TILE16 with one row and one column:
 * slice j accumulates elements 64i + 8j in order, then (a0 + a4) + (a2 + a6) and (a1 + a5) +
 * (a3 + a7), added), before the horizontal sum. q: rounded to f16 and widened. */
INLINE __m256 dot_lanes_f16(const uint16_t *k, const float *q, const int64_t hd)
{
#if HS__ATTN_WIDE
    /* register j holds slices 2j and 2j + 1 side by side: the same lanes, the same order */
    __m512 w[4];
    for (int j = 0; j < 4; j++) {
        w[j] = _mm512_fmadd_ps(load_f16x16(k + 16 * j), _mm512_loadu_ps(q + 16 * j),
                               _mm512_setzero_ps());
    }
    for (int64_t i = 64; i < hd; i += 64) {
        for (int j = 0; j < 4; j++) {
            w[j] =
                _mm512_fmadd_ps(load_f16x16(k + i + 16 * j), _mm512_loadu_ps(q + i + 16 * j), w[j]);
        }
    }
    /* [(a0 + a4) + (a2 + a6) | (a1 + a5) + (a3 + a7)], then the halves added */
    const __m512 h = _mm512_add_ps(_mm512_add_ps(w[0], w[2]), _mm512_add_ps(w[1], w[3]));
    return _mm256_add_ps(_mm512_castps512_ps256(h),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(h), 1)));
#else
    __m256 a[8];
    for (int j = 0; j < 8; j++) {
        a[j] = _mm256_fmadd_ps(load_f16_avx2(k + 8 * j), _mm256_loadu_ps(q + 8 * j),
                               _mm256_setzero_ps());
    }
    for (int64_t i = 64; i < hd; i += 64) {
        for (int j = 0; j < 8; j++) {
            a[j] =
                _mm256_fmadd_ps(load_f16_avx2(k + i + 8 * j), _mm256_loadu_ps(q + i + 8 * j), a[j]);
        }
    }
    const __m256 h0 = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    const __m256 h1 = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    return _mm256_add_ps(h0, h1);
#endif
}

/* The horizontal sums of v[0..7] (quants-avx2.c's hsum_ps: ((x0 + x4) + (x2 + x6)) + ((x1 + x5)
 * + (x3 + x7)), the same pairs added in the same order, so the same bits) as one vector. */
INLINE __m256 hsum8_avx2(const __m256 *v)
{
    __m256 t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
    }
    __m256 u[2];
    for (int i = 0; i < 2; i++) {
        u[i] = _mm256_add_ps(_mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* r holds positions 0 2 4 6 1 3 5 7 */
    return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The V pass's blocks of 8 dims per head held in registers at once (NH heads x VJB sums). */
#define HS__ATTN_VJB(NH) ((NH) == 1 ? 8 : (NH) == 4 ? 2 : 4)

/* attn_row's f16 one_chunk path for NH query heads of one GQA group at once (the K and V rows of
 * a chunk are read from memory once for all of them), the same bits in three passes per chunk of
 * positions: all scores (8 positions' horizontal sums at once); the softmax weights, their
 * maxima in order, then the exponentials 8 at a time (t->expf: libm's bits), then the sums in
 * order; the V sum, rounded to f16 after every update as the f16 row of the one-pass loop is,
 * passes of VJB blocks of 8 dims over the chunk for all NH heads, so that NH x VJB chains of
 * round(fma) run side by side instead of one head's 8 (F16C's conversions, not the adds, bound
 * that pass). qf: NH rows of hd, q rounded to f16 and widened. At 1088 positions of
 * SmolLM-135M's 9 / 3 heads on 1 Zen 3 thread (bench-backend-ops 1 attn-decode), with the KV
 * cached / not: 115-170 / 226-253 us a call (a noisy VM), where one head at a time without
 * prefetches took 191-238 / 494. The AVX-512 build's 16 lanes: 104 -> 85 us cached on 1 thread
 * on a Zen 5 VM (bench-backend-ops 1 attn-decode, 1088 positions). */
INLINE void attn_group_f16_fused(const struct hs__attn_fused *t, const struct hs_attn_seq *seq,
                                 const float *qf, int64_t kvh, int64_t p0, int64_t p1,
                                 float *const *out, float *const *ml, float *scratch,
                                 const int64_t hd, const int NH)
{
    const struct hs_attn_args *a = t->a;
    const int C = HS__ATTN_CHUNK;
    float *acc = scratch;              /* [NH][hd] V sums (f16 values) */
    float *sc = acc + (size_t)NH * hd; /* [NH][C] scaled scores */
    float *vw = sc + (size_t)NH * C;   /* [NH][C] weight of the position's V row */
    float *rs = vw + (size_t)NH * C;   /* [NH][C] rescale of the sum before it (1: none) */
    float *mp = rs + (size_t)NH * C;   /* [NH][C] the maximum before the position */
    float *ex = mp + (size_t)NH * C;   /* [C] exponents */
    const uint16_t **kp = (const uint16_t **)(void *)(ex + C); /* [C + PREFETCH] */
    const uint16_t **vp = kp + C + HS__ATTN_PREFETCH;          /* [C + PREFETCH] */
    const int64_t nv = hd / 8;
    const int VJB = HS__ATTN_VJB(NH);
    float m[4], sum[4];
    for (int g = 0; g < NH; g++) {
        m[g] = -INFINITY;
        sum[g] = 0.0f;
    }
    memset(acc, 0, (size_t)NH * hd * sizeof(float));
    const __m256 scale = _mm256_set1_ps(a->scale);
    const size_t knb = a->k_cache->nb[2], vnb = a->v_cache->nb[2];
    const char *kbase = (const char *)a->k_cache->data + (size_t)kvh * a->k_cache->nb[1];
    const char *vbase = (const char *)a->v_cache->data + (size_t)kvh * a->v_cache->nb[1];
    for (int64_t c0 = p0; c0 < p1; c0 += C) {
        const int n = (int)HS_MIN(p1 - c0, C);
        const int n8 = (n + 7) & ~7;
        /* row pointers, one block-table lookup per block, and those of the next chunk's first
         * HS__ATTN_PREFETCH positions */
        const int n_ext = (int)HS_MIN(p1 - c0, C + HS__ATTN_PREFETCH);
        for (int i = 0; i < n_ext;) {
            const int64_t p = c0 + i;
            const int64_t off = p % a->block_size;
            const size_t slot = (size_t)seq->block_table[p / a->block_size] * a->block_size;
            const int run = (int)HS_MIN(a->block_size - off, n_ext - i);
            for (int r = 0; r < run; r++, i++) {
                kp[i] = (const uint16_t *)(kbase + (slot + off + r) * knb);
                vp[i] = (const uint16_t *)(vbase + (slot + off + r) * vnb);
            }
        }
        /* scores, 8 positions at a time: each K row widened once for the NH heads. The KV rows
         * come from memory (a decode step's weights have gone through the caches since this
         * layer's were written) from blocks all over the pool, which the hardware prefetchers
         * do not follow: K rows are fetched HS__ATTN_PREFETCH positions ahead, the V rows for
         * the V pass after this one as their scores are made. */
        for (int i = 0; i < n; i += 8) {
            for (int r = i + HS__ATTN_PREFETCH; r < HS_MIN(i + 8 + HS__ATTN_PREFETCH, n_ext); r++) {
                for (int64_t b = 0; b < hd * 2; b += 64) {
                    _mm_prefetch((const char *)kp[r] + b, _MM_HINT_T0);
                }
            }
            for (int r = i; r < HS_MIN(i + 8, n); r++) {
                for (int64_t b = 0; b < hd * 2; b += 64) {
                    _mm_prefetch((const char *)vp[r] + b, _MM_HINT_T0);
                }
            }
            __m256 v[4][8];
            for (int r = 0; r < 8; r++) {
                for (int g = 0; g < NH; g++) {
                    v[g][r] = i + r < n ? dot_lanes_f16(kp[i + r], qf + (size_t)g * hd, hd)
                                        : _mm256_setzero_ps();
                }
            }
            for (int g = 0; g < NH; g++) {
                _mm256_storeu_ps(sc + (size_t)g * C + i, _mm256_mul_ps(hsum8_avx2(v[g]), scale));
            }
        }
        /* softmax weights: a new maximum (s > m) rescales the sum by expf(m - s) and adds its
         * row with weight 1, any other position adds with weight expf(s - m). The maxima in
         * order, the NH heads' chains side by side, then the exponentials 8 at a time. */
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < NH; g++) {
                const float si = sc[(size_t)g * C + i];
                mp[(size_t)g * C + i] = m[g];
                m[g] = si > m[g] ? si : m[g];
            }
        }
        const __m256 one = _mm256_set1_ps(1.0f);
        for (int g = 0; g < NH; g++) {
            float *s = sc + (size_t)g * C, *mg = mp + (size_t)g * C;
            float *rsg = rs + (size_t)g * C, *vwg = vw + (size_t)g * C;
            for (int i = n; i < n8; i++) {
                mg[i] = 0.0f;
                s[i] = 0.0f;
            }
            for (int i = 0; i < n8; i += 8) {
                const __m256 sv = _mm256_loadu_ps(s + i), mv = _mm256_loadu_ps(mg + i);
                const __m256 up = _mm256_cmp_ps(sv, mv, _CMP_GT_OQ);
                _mm256_storeu_ps(
                    ex + i, _mm256_blendv_ps(_mm256_sub_ps(sv, mv), _mm256_sub_ps(mv, sv), up));
            }
            t->expf(n8, rsg, ex);
            for (int i = 0; i < n8; i += 8) {
                const __m256 up =
                    _mm256_cmp_ps(_mm256_loadu_ps(s + i), _mm256_loadu_ps(mg + i), _CMP_GT_OQ);
                const __m256 e = _mm256_loadu_ps(rsg + i);
                _mm256_storeu_ps(rsg + i, _mm256_blendv_ps(one, e, up));
                _mm256_storeu_ps(vwg + i, _mm256_blendv_ps(e, one, up));
            }
        }
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < NH; g++) {
                sum[g] = fmaf(sum[g], rs[(size_t)g * C + i], vw[(size_t)g * C + i]);
            }
        }
        /* the V sums (a rescale by exactly 1 leaves f16 values as they are) */
#if HS__ATTN_WIDE
        /* 16 dims a register: each lane's chain of updates is the 8-lane build's */
        for (int64_t j0 = 0; j0 < nv; j0 += VJB) {
            __m512 av[4][4];
            for (int g = 0; g < NH; g++) {
                for (int jb = 0; jb < VJB / 2; jb++) {
                    av[g][jb] = _mm512_loadu_ps(acc + (size_t)g * hd + 8 * j0 + 16 * jb);
                }
            }
            for (int i = 0; i < n; i++) {
                const uint16_t *vr = vp[i] + 8 * j0;
                for (int g = 0; g < NH; g++) {
                    const float r = rs[(size_t)g * C + i];
                    if (r != 1.0f) {
                        const __m512 msv = _mm512_set1_ps(r);
                        for (int jb = 0; jb < VJB / 2; jb++) {
                            av[g][jb] = round_f16x16(_mm512_mul_ps(av[g][jb], msv));
                        }
                    }
                    const __m512 vsv = _mm512_set1_ps(vw[(size_t)g * C + i]);
                    for (int jb = 0; jb < VJB / 2; jb++) {
                        av[g][jb] = round_f16x16(
                            _mm512_fmadd_ps(load_f16x16(vr + 16 * jb), vsv, av[g][jb]));
                    }
                }
            }
            for (int g = 0; g < NH; g++) {
                for (int jb = 0; jb < VJB / 2; jb++) {
                    _mm512_storeu_ps(acc + (size_t)g * hd + 8 * j0 + 16 * jb, av[g][jb]);
                }
            }
        }
#else
        for (int64_t j0 = 0; j0 < nv; j0 += VJB) {
            __m256 av[4][8];
            for (int g = 0; g < NH; g++) {
                for (int jb = 0; jb < VJB; jb++) {
                    av[g][jb] = _mm256_loadu_ps(acc + (size_t)g * hd + 8 * (j0 + jb));
                }
            }
            for (int i = 0; i < n; i++) {
                const uint16_t *vr = vp[i] + 8 * j0;
                for (int g = 0; g < NH; g++) {
                    const float r = rs[(size_t)g * C + i];
                    if (r != 1.0f) {
                        const __m256 msv = _mm256_set1_ps(r);
                        for (int jb = 0; jb < VJB; jb++) {
                            av[g][jb] = round_f16_avx2(_mm256_mul_ps(av[g][jb], msv));
                        }
                    }
                    const __m256 vsv = _mm256_set1_ps(vw[(size_t)g * C + i]);
                    for (int jb = 0; jb < VJB; jb++) {
                        av[g][jb] = round_f16_avx2(
                            _mm256_fmadd_ps(load_f16_avx2(vr + 8 * jb), vsv, av[g][jb]));
                    }
                }
            }
            for (int g = 0; g < NH; g++) {
                for (int jb = 0; jb < VJB; jb++) {
                    _mm256_storeu_ps(acc + (size_t)g * hd + 8 * (j0 + jb), av[g][jb]);
                }
            }
        }
#endif
    }
    for (int g = 0; g < NH; g++) {
        const float *ag = acc + (size_t)g * hd;
        if (ml) {
            memcpy(out[g], ag, (size_t)hd * sizeof(float));
            *ml[2 * g] = m[g];
            *ml[2 * g + 1] = sum[g];
            continue;
        }
        const __m256 inv = _mm256_set1_ps(sum[g] == 0.0f ? 0.0f : 1.0f / sum[g]);
        for (int64_t j = 0; j < nv; j++) {
            _mm256_storeu_ps(out[g] + 8 * j, _mm256_mul_ps(_mm256_loadu_ps(ag + 8 * j), inv));
        }
    }
}
void HS__ATTN_GROUP_FN(const struct hs__attn_fused *t, const struct hs_attn_seq *seq,
                       const float *qf, int64_t kvh, int64_t p0, int64_t p1, float *const *out,
                       float *const *ml, float *scratch, int nh)
{
#define HS__ATTN_GROUP_CASE(NH)                                                                    \
    case NH:                                                                                       \
        if (t->hd == 64) {                                                                         \
            attn_group_f16_fused(t, seq, qf, kvh, p0, p1, out, ml, scratch, 64, NH);               \
        } else if (t->hd == 128) {                                                                 \
            attn_group_f16_fused(t, seq, qf, kvh, p0, p1, out, ml, scratch, 128, NH);              \
        } else {                                                                                   \
            attn_group_f16_fused(t, seq, qf, kvh, p0, p1, out, ml, scratch, t->hd, NH);            \
        }                                                                                          \
        break;
    switch (nh) {
        HS__ATTN_GROUP_CASE(1)
        HS__ATTN_GROUP_CASE(2)
        HS__ATTN_GROUP_CASE(3)
        HS__ATTN_GROUP_CASE(4)
    default:
        HS_ASSERT(!"attn_group_f16: 1..HS__ATTN_GROUP_MAX heads");
    }
#undef HS__ATTN_GROUP_CASE
}

#else
typedef int hs__attn_fused_unavailable;
#endif
