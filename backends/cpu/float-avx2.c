/* AVX2 + FMA kernels on floats, beside the weight-type kernels of quants-avx2.c (built with the
 * same flags, -ffp-contract=off: every fused multiply-add is written out): rope's rotation, the
 * f32 mad, SwiGLU and the tiled attention block. SwiGLU and the attention block compute bit for
 * bit what quants-avx512.c computes (llama.cpp's arithmetic on AVX-512 CPUs), its 16-lane
 * orders held in 8-lane registers; rope and mad give the portable loops' bits (cpu.c,
 * attention.c). */
#include "backends/cpu/quants.h"

#if defined(__AVX2__)
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

/* Adjacent pairs (x0, x1) of v, cs = [c0 s0 c1 s1 ...][-s0 c0 -s1 c1 ...]: lane 2k gets
 * fma(x0, c, x1 * -s) and lane 2k + 1 fma(x0, s, x1 * c), rope_fn's scalar results. */
void hs__rope_norm_f32_avx2(float *v, const float *cs, int n_rot)
{
    const float *d = cs + n_rot;
    int i = 0;
    for (; i + 8 <= n_rot; i += 8) {
        const __m256 x = _mm256_loadu_ps(v + i);
        const __m256 x1 = _mm256_mul_ps(_mm256_movehdup_ps(x), _mm256_loadu_ps(d + i));
        _mm256_storeu_ps(v + i,
                         _mm256_fmadd_ps(_mm256_moveldup_ps(x), _mm256_loadu_ps(cs + i), x1));
    }
    for (; i < n_rot; i += 2) {
        const float x0 = v[i], x1 = v[i + 1];
        v[i] = fmaf(x0, cs[i], -(x1 * cs[i + 1]));
        v[i + 1] = fmaf(x0, cs[i + 1], x1 * cs[i]);
    }
}

/* Pairs (v[i], v[i + n_rot / 2]), cs = [c0 c1 ...][s0 s1 ...]: rope_fn's scalar results. */
void hs__rope_neox_f32_avx2(float *v, const float *cs, int n_rot)
{
    const int half = n_rot / 2;
    const float *sn = cs + half;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= half; i += 8) {
        const __m256 x0 = _mm256_loadu_ps(v + i);
        const __m256 x1 = _mm256_loadu_ps(v + half + i);
        const __m256 c = _mm256_loadu_ps(cs + i);
        const __m256 s = _mm256_loadu_ps(sn + i);
        const __m256 x1s = _mm256_xor_ps(_mm256_mul_ps(x1, s), sign);
        _mm256_storeu_ps(v + i, _mm256_fmadd_ps(x0, c, x1s));
        _mm256_storeu_ps(v + half + i, _mm256_fmadd_ps(x0, s, _mm256_mul_ps(x1, c)));
    }
    for (; i < half; i++) {
        const float x0 = v[i], x1 = v[i + half];
        v[i] = fmaf(x0, cs[i], -(x1 * sn[i]));
        v[i + half] = fmaf(x0, sn[i], x1 * cs[i]);
    }
}

void hs__mad_f32_avx2(int64_t n, float *y, const float *x, float a)
{
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(_mm256_loadu_ps(x + i), av, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) {
        y[i] = fmaf(x[i], a, y[i]);
    }
}

/* ================================================================================================
 * SwiGLU: silu(g) * u
 * ============================================================================================= */

/* quants-avx512.c's expf16 (ggml's AVX-512 ggml_v_expf) in 8 lanes, bit for bit: the same
 * constants and operations, up to _mm512_scalef_ps(poly, n), which is poly * 2^n rounded once.
 * poly is in [0.7, 1.5], so for |n| <= 125 the product by 2^n (built in the exponent field) is
 * exact; beyond, (poly * 2^a) * 2^(n - a) with a = floor(n / 2) makes the first product exact
 * and the second the one rounding (to a subnormal, or to inf). ggml's own AVX2 expf evaluates
 * the polynomial in another order, so it would not give llama.cpp's AVX-512 bits. */
static inline __m256 expf8(__m256 x)
{
    const __m256 shifter = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shifter);
    const __m256 n = _mm256_sub_ps(z, shifter);
    const __m256 b_hi = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), b_hi);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 p45 =
        _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 p23 =
        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 p01 = _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f));
    const __m256 poly = _mm256_fmadd_ps(_mm256_fmadd_ps(p45, u, p23), u, p01);
    const __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i bias = _mm256_set1_epi32(127);
    if (_mm256_movemask_ps(_mm256_cmp_ps(an, _mm256_set1_ps(125), _CMP_GT_OQ)) == 0) {
        const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, bias), 23));
        return _mm256_mul_ps(poly, scale);
    }
    const __m256i a = _mm256_srai_epi32(ni, 1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(a, bias), 23));
    const __m256 s2 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, a), bias), 23));
    const __m256 res = _mm256_mul_ps(_mm256_mul_ps(poly, s1), s2);
    /* |n| > 192: +inf or 0, as expf16. */
    const __m256 big = _mm256_cmp_ps(an, _mm256_set1_ps(192), _CMP_GT_OQ);
    const __m256 neg = _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ);
    const __m256 sat = _mm256_blendv_ps(_mm256_set1_ps(INFINITY), _mm256_setzero_ps(), neg);
    return _mm256_blendv_ps(res, sat, big);
}

void hs__swiglu_f32_avx2(int64_t n, float *y, const float *g, const float *u)
{
    /* The AVX-512 kernel's 16-element steps, so the same n % 16 elements go to libm expf. */
    const int64_t nv = n & ~(int64_t)15;
    int64_t i = 0;
    for (; i < nv; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = expf8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        const __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* ================================================================================================
 * libm's expf, 4 lanes of doubles at a time
 * ============================================================================================= */

/* The expf of glibc (since 2.28) and musl, Arm's optimized-routines algorithm, as vector code:
 * k = round(x * 32 / ln 2) by the 1.5 * 2^52 shifter, r = x * 32 / ln 2 - k, then
 * 2^(k / 32) * (1 + c2 r + c1 r^2 + c0 r^3) in double, one rounding to float at the end. Scale
 * and polynomial in the order and with the fused steps of its FMA build (glibc's __expf_fma,
 * which x86 CPUs with FMA run): c0 r + c1 and c2 r + 1 fused, then (c0 r + c1) r^2 + (c2 r + 1).
 * EXP_TAB[i] is 2^(i / 32) rounded to double, less i << 47, so that adding k << 47 puts k / 32
 * into the exponent; hs__expf_libm_check compares all this with the process's own expf. */
#define EXP_N 32
static const uint64_t EXP_TAB[EXP_N] = {
    0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull,
    0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull,
    0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
    0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,
    0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull,
    0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
    0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,
    0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull,
};

static inline __m128 expf_libm4(__m128 x)
{
    const __m256d shift = _mm256_set1_pd(0x1.8p+52);
    const __m256d z =
        _mm256_mul_pd(_mm256_set1_pd(0x1.71547652b82fep+0 * EXP_N), _mm256_cvtps_pd(x));
    const __m256d kd_s = _mm256_add_pd(z, shift);
    const __m256i ki = _mm256_castpd_si256(kd_s);
    const __m256d r = _mm256_sub_pd(z, _mm256_sub_pd(kd_s, shift));
    const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(EXP_N - 1));
    const __m256i t =
        _mm256_add_epi64(_mm256_i64gather_epi64((const long long *)(const void *)EXP_TAB, idx, 8),
                         _mm256_slli_epi64(ki, 52 - 5));
    const __m256d c0 = _mm256_set1_pd(0x1.c6af84b912394p-5 / EXP_N / EXP_N / EXP_N);
    const __m256d c1 = _mm256_set1_pd(0x1.ebfce50fac4f3p-3 / EXP_N / EXP_N);
    const __m256d c2 = _mm256_set1_pd(0x1.62e42ff0c52d6p-1 / EXP_N);
    const __m256d p = _mm256_fmadd_pd(c0, r, c1);
    const __m256d q = _mm256_fmadd_pd(c2, r, _mm256_set1_pd(1.0));
    const __m256d y = _mm256_fmadd_pd(p, _mm256_mul_pd(r, r), q);
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, _mm256_castsi256_pd(t)));
}

void hs__expf_libm_avx2(int64_t n, float *y, const float *x)
{
    /* Past |x| = 87 (and NaN) libm's special cases begin: those lanes go to libm itself. */
    const __m256 lim = _mm256_set1_ps(87.0f);
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        _mm_storeu_ps(y + i, expf_libm4(_mm256_castps256_ps128(v)));
        _mm_storeu_ps(y + i + 4, expf_libm4(_mm256_extractf128_ps(v, 1)));
        const int out = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, abs), lim, _CMP_NLT_UQ));
        for (int l = 0; out && l < 8; l++) {
            if (out & (1 << l)) {
                y[i + l] = expf(x[i + l]);
            }
        }
    }
    for (; i < n; i++) {
        y[i] = expf(x[i]);
    }
}

static bool expf_libm_same;
static pthread_once_t expf_libm_once = PTHREAD_ONCE_INIT;

static void expf_libm_compare(void)
{
    /* Every 4099th float of magnitude below 88 (both signs, about a million values). */
    float x[256], got[256];
    int n = 0;
    for (uint32_t u = 0; u < 0x42b00000u; u += 4099) {
        for (uint32_t sign = 0; sign < 2; sign++) {
            const uint32_t b = u | sign << 31;
            memcpy(&x[n++], &b, sizeof(b));
        }
        if (n == 256) {
            hs__expf_libm_avx2(n, got, x);
            for (int i = 0; i < n; i++) {
                const float want = expf(x[i]);
                if (memcmp(&got[i], &want, sizeof(want)) != 0) {
                    return;
                }
            }
            n = 0;
        }
    }
    expf_libm_same = true;
}

bool hs__expf_libm_check(void)
{
    pthread_once(&expf_libm_once, expf_libm_compare);
    return expf_libm_same;
}

/* ================================================================================================
 * Flash attention, f32 accumulation: one block of K/V rows against a tile of queries
 * ============================================================================================= */

/* hs__attn_block_f32_avx512 in 8 lanes, bit for bit: every operation of that kernel is per query
 * (scores, mask, maxima, expf8 for expf16, sums) or per (query, column) (the V sums), in the
 * same order along d and along the K/V rows; only the blocking into registers differs. */
void hs__attn_block_f32_avx2(int64_t hd, int64_t nq, int64_t ldq, int64_t nk, float scale,
                             const float *qt, const float *k, const float *v, const int32_t *last,
                             float *m, float *l, float *acc, float *st)
{
    const int64_t nqv = ldq / 8;
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    /* Scores, transposed: st[j][i] = scale * q_i . k_j, four K rows by 16 queries at a time (8
     * independent fma chains: 4 would leave the fma units half idle on their latency). ldq is
     * a multiple of 16. */
    for (int64_t j = 0; j < nk; j += 4) {
        const int64_t nj = HS_MIN(4, nk - j);
        const float *k0 = k + j * hd;
        const float *k1 = k + (j + (nj > 1 ? 1 : 0)) * hd;
        const float *k2 = k + (j + (nj > 2 ? 2 : 0)) * hd;
        const float *k3 = k + (j + (nj > 3 ? 3 : 0)) * hd;
        for (int64_t c = 0; c < nqv; c += 2) {
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            __m256 t0 = s0, t1 = s0, t2 = s0, t3 = s0;
            const float *q = qt + c * 8;
            for (int64_t d = 0; d < hd; d++) {
                const __m256 qd = _mm256_load_ps(q + d * ldq);
                const __m256 qe = _mm256_load_ps(q + d * ldq + 8);
                const __m256 b0 = _mm256_set1_ps(k0[d]), b1 = _mm256_set1_ps(k1[d]);
                const __m256 b2 = _mm256_set1_ps(k2[d]), b3 = _mm256_set1_ps(k3[d]);
                s0 = _mm256_fmadd_ps(b0, qd, s0);
                t0 = _mm256_fmadd_ps(b0, qe, t0);
                s1 = _mm256_fmadd_ps(b1, qd, s1);
                t1 = _mm256_fmadd_ps(b1, qe, t1);
                s2 = _mm256_fmadd_ps(b2, qd, s2);
                t2 = _mm256_fmadd_ps(b2, qe, t2);
                s3 = _mm256_fmadd_ps(b3, qd, s3);
                t3 = _mm256_fmadd_ps(b3, qe, t3);
            }
            float *o = st + j * ldq + c * 8;
            _mm256_store_ps(o, _mm256_mul_ps(s0, vscale));
            _mm256_store_ps(o + 8, _mm256_mul_ps(t0, vscale));
            if (nj > 1) {
                _mm256_store_ps(o + ldq, _mm256_mul_ps(s1, vscale));
                _mm256_store_ps(o + ldq + 8, _mm256_mul_ps(t1, vscale));
            }
            if (nj > 2) {
                _mm256_store_ps(o + 2 * ldq, _mm256_mul_ps(s2, vscale));
                _mm256_store_ps(o + 2 * ldq + 8, _mm256_mul_ps(t2, vscale));
            }
            if (nj > 3) {
                _mm256_store_ps(o + 3 * ldq, _mm256_mul_ps(s3, vscale));
                _mm256_store_ps(o + 3 * ldq + 8, _mm256_mul_ps(t3, vscale));
            }
        }
    }
    /* Online softmax, 8 queries per vector: mask, new maxima, p = exp(s - m) in place of the
     * scores, and each query's rescale factor exp(m_old - m_new). */
    float ms_all[64];
    for (int64_t c = 0; c < nqv; c++) {
        const __m256i lastv = _mm256_loadu_si256((const __m256i *)(const void *)(last + c * 8));
        __m256 mx = ninf;
        for (int64_t j = 0; j < nk; j++) {
            const __m256 past =
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)j), lastv));
            __m256 s = _mm256_load_ps(st + j * ldq + c * 8);
            s = _mm256_blendv_ps(s, ninf, past);
            _mm256_store_ps(st + j * ldq + c * 8, s);
            mx = _mm256_max_ps(mx, s);
        }
        const __m256 mold = _mm256_loadu_ps(m + c * 8);
        const __m256 mnew = _mm256_max_ps(mold, mx);
        /* A query with no position seen yet (mnew = -inf) keeps its state: p = 0, factor 1. */
        const __m256 live = _mm256_cmp_ps(mnew, ninf, _CMP_NEQ_OQ);
        const __m256 ms =
            _mm256_blendv_ps(_mm256_set1_ps(1.0f), expf8(_mm256_sub_ps(mold, mnew)), live);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < nk; j++) {
            const __m256 s = _mm256_load_ps(st + j * ldq + c * 8);
            const __m256 p = _mm256_and_ps(live, expf8(_mm256_sub_ps(s, mnew)));
            _mm256_store_ps(st + j * ldq + c * 8, p);
            sum = _mm256_add_ps(sum, p);
        }
        _mm256_storeu_ps(m + c * 8, mnew);
        _mm256_storeu_ps(l + c * 8, _mm256_fmadd_ps(_mm256_loadu_ps(l + c * 8), ms, sum));
        _mm256_storeu_ps(ms_all + c * 8, ms);
    }
    /* acc_i = acc_i * ms_i + sum_j p_ji v_j: four queries by 16 columns per register tile. */
    for (int64_t d0 = 0; d0 < hd; d0 += 16) {
        int64_t i = 0;
        for (; i + 4 <= nq; i += 4) {
            __m256 r[4][2];
            for (int a = 0; a < 4; a++) {
                const __m256 f = _mm256_set1_ps(ms_all[i + a]);
                for (int b = 0; b < 2; b++) {
                    r[a][b] = _mm256_mul_ps(_mm256_loadu_ps(acc + (i + a) * hd + d0 + b * 8), f);
                }
            }
            for (int64_t j = 0; j < nk; j++) {
                const float *vj = v + j * hd + d0;
                const __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
                const float *pj = st + j * ldq + i;
                for (int a = 0; a < 4; a++) {
                    const __m256 p = _mm256_set1_ps(pj[a]);
                    r[a][0] = _mm256_fmadd_ps(p, v0, r[a][0]);
                    r[a][1] = _mm256_fmadd_ps(p, v1, r[a][1]);
                }
            }
            for (int a = 0; a < 4; a++) {
                for (int b = 0; b < 2; b++) {
                    _mm256_storeu_ps(acc + (i + a) * hd + d0 + b * 8, r[a][b]);
                }
            }
        }
        for (; i < nq; i++) {
            for (int b = 0; b < 2; b++) {
                float *ap = acc + i * hd + d0 + b * 8;
                __m256 r = _mm256_mul_ps(_mm256_loadu_ps(ap), _mm256_set1_ps(ms_all[i]));
                for (int64_t j = 0; j < nk; j++) {
                    r = _mm256_fmadd_ps(_mm256_set1_ps(st[j * ldq + i]),
                                        _mm256_loadu_ps(v + j * hd + d0 + b * 8), r);
                }
                _mm256_storeu_ps(ap, r);
            }
        }
    }
}

#else
typedef int hs__float_avx2_unavailable;
#endif
