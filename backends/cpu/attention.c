/* The CPU backend's attention over the paged KV cache: online softmax with the precision of
 * ggml's CPU flash attention, one query row at a time for small batches (f16 V sums where the
 * cache is f16; with AVX2/F16C, the query heads of a GQA group together, scores, softmax weights
 * and the V sum in separate passes over chunks of positions: attn-fused.c) and in tiles of query
 * rows against blocks of K/V positions for big ones (f32 throughout). Arguments were validated by
 * backend.c. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "backends/cpu/attn-fused.h"
#include "backends/cpu/cpu-impl.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HS__CPU_X86 1
#else
#define HS__CPU_X86 0
#endif

/* Attention batches with at least this many query rows run with f32 accumulation. */
#define HS__ATTN_F32_MIN_ROWS 64
/* Query rows per attention work item (small batches). */
#define HS__ATTN_ROWS_PER_ITEM 16
/* Big batches run tiles of up to this many query vectors (rows of one sequence times the heads of
 * one GQA group) against blocks of this many K/V positions. */
#define HS__ATTN_TILE_Q 64
#define HS__ATTN_TILE_K 32

/* ---- f16 row helpers ---- */

/* acc = f16(acc + v * s) and acc = f16(acc * s) on f16 rows, as ggml_vec_mad_f16 and
 * ggml_vec_scale_f16 do (fused multiply-add in f32, rounded to nearest even once). */
#if HS__CPU_X86
__attribute__((target("avx2,fma,f16c"))) static void
f16_mad_avx2(uint16_t *acc, const uint16_t *v, float s, int64_t n)
{
    const __m256 vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc + i)));
        const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
        a = _mm256_fmadd_ps(x, vs, a);
        _mm_storeu_si128((__m128i *)(acc + i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) {
        acc[i] = hs_fp32_to_fp16(fmaf(hs_fp16_to_fp32(v[i]), s, hs_fp16_to_fp32(acc[i])));
    }
}

__attribute__((target("avx2,fma,f16c"))) static void f16_scale_avx2(uint16_t *acc, float s,
                                                                        int64_t n)
{
    const __m256 vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc + i)));
        _mm_storeu_si128((__m128i *)(acc + i),
                         _mm256_cvtps_ph(_mm256_mul_ps(a, vs), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) {
        acc[i] = hs_fp32_to_fp16(hs_fp16_to_fp32(acc[i]) * s);
    }
}
#endif

/* ---- one query row at a time (small batches) ---- */

/* The positions [*p0, *p1) query row j of seq attends to: its causal prefix, cut to the seq's
 * KV range when one is set (empty when p0 >= p1). */
static void attn_range(const struct hs_attn_seq *seq, int32_t j, int64_t *p0, int64_t *p1)
{
    const int64_t causal = (int64_t)seq->n_past + j + 1;
    *p0 = seq->kv_begin;
    *p1 = seq->kv_end > 0 ? HS_MIN(causal, (int64_t)seq->kv_end) : causal;
}

/* The partial's m and l of query row `row`, head h ([n_rows][n_head] tensors). */
static float *attn_ml(const struct hs_tensor *t, int64_t row, int64_t h)
{
    return (float *)((char *)t->data + (size_t)row * t->nb[1]) + h;
}

struct hs__attn_task {
    const struct hs_attn_args *a;
    const struct hs_quant_kernels *kdot; /* K's kernels: q converted to K's type, dot in f32 */
    const struct hs_quant_kernels *f16;  /* f16 conversions (V accumulation in f16) */
    int64_t n_head;
    int64_t n_kv_head;
    int64_t hd;
    int64_t n_items; /* sum over sequences of ceil(n_new / rows per item) * items per row */
    bool simd_f16;   /* AVX2/F16C fused f16 accumulation (same bits as the portable path) */
    bool f32_acc;    /* big batch: q, scores and the V sum all in f32 (ggml's tiled path) */
    bool partials;   /* write the unnormalised sum, m and l (a->m, a->l) instead of out / l */
    const struct hs_quant_kernels *f32;
    void (*mad)(int64_t n, float *y, const float *x, float a); /* y = fma(x, a, y) */
    bool fused;                  /* the fused f16 path (AVX2 / F16C; f16 K and V; attn_fused_hd) */
    struct hs__attn_fused fz;    /* its arguments */
    hs__attn_group_fn group_f16; /* its kernel: the AVX-512 or the AVX2 build */
    int32_t group_n;   /* query heads per work item: a GQA group, or a part of one */
    int32_t group_sub; /* work items per GQA group: ceil(n_head / n_kv_head / group_n) */
    atomic_llong next;
    float *tls;
    size_t tls_stride;
    /* Big batches: query rows per tile, and one block of the tiled kernel (AVX-512, AVX2 or
     * portable; hs__attn_block_f32_avx512's contract). */
    int32_t tile_rows;
    void (*block)(int64_t hd, int64_t nq, int64_t ldq, int64_t nk, float scale, const float *qt,
                  const float *k, const float *v, const int32_t *last, float *m, float *l,
                  float *acc, float *st);
};

/* Floats of per-thread scratch attn_row needs: its 5 rows; or the fused path's q (f32 and f16)
 * and sums of HS__ATTN_GROUP_MAX heads, its chunk's rows per head and shared, row pointers. */
static size_t attn_row_floats(int64_t hd)
{
    const size_t fused =
        (2 * HS__ATTN_GROUP_MAX + 1) * (size_t)hd + (4 * HS__ATTN_GROUP_MAX + 1) * HS__ATTN_CHUNK +
        2 * (HS__ATTN_CHUNK + HS__ATTN_PREFETCH) * (sizeof(void *) / sizeof(float));
    return HS_MAX(5 * (size_t)hd, fused);
}

#if HS__CPU_X86
/* ---- the fused f16 decode path: f16 K and V, head size a multiple of 64 ---- */

/* Head sizes the fused path takes (hd / 8 registers of q and of the sum, at most 32 each). */
static bool attn_fused_hd(int64_t hd)
{
    return hd % 64 == 0 && hd <= 256;
}

#endif

/* Online softmax (flash-attention style) for one query row of one head, with the precision of
 * ggml's CPU flash attention. Batches of fewer than HS__ATTN_F32_MIN_ROWS query rows (the forward
 * batch's, n_batch_rows) follow its "one_chunk" path exactly (llama.cpp compiles it with FMA
 * contraction, which the fmaf calls reproduce):
 * - with an f16 K, q is rounded to f16 and q.k is K's vec_dot (f16 -> f32 products);
 * - with an f16 V, the running sum of V rows VKQ is kept in f16: a new maximum rescales it as
 *   f16(VKQ * ms), each row adds as f16(fma(v, vs, VKQ)) (ggml_vec_scale_f16 / _mad_f16; the
 *   AVX2/F16C kernels compute exactly this, 8 lanes at a time); with an f32 V, the same in f32;
 * - the running denominator is S = fma(S, ms, vs); the result is VKQ * (1 / S).
 * Batches of HS__ATTN_F32_MIN_ROWS rows or more (its tiled path): q stays f32, K and V rows are
 * widened to f32 and VKQ is kept in f32 (same fma updates).
 * Positions [p0, p1) are visited in order. With ml (partials), out receives VKQ widened to f32
 * and ml[0], ml[1] the maximum score and S, so that finalising them (VKQ * (1 / S)) repeats the
 * last step above bit for bit; an empty range leaves VKQ = 0, m = -inf, S = 0. */
static void attn_row(const struct hs__attn_task *t, const struct hs_attn_seq *seq, const float *q,
                     int64_t kvh, int64_t p0, int64_t p1, float *out, float *const ml[2],
                     float *buf)
{
    const struct hs_attn_args *a = t->a;
    const int64_t hd = t->hd;
    const bool v_f16 = a->v_cache->type == HS_TYPE_F16;
    const bool k_widen = t->f32_acc && a->k_cache->type == HS_TYPE_F16;
    const bool v_round = v_f16 && !t->f32_acc;    /* keep the V sum in f16 */
    float *acc = buf;                             /* [hd] running sum of p * v in f32 */
    float *vrow = buf + hd;                       /* [hd] V row in f32 */
    void *qconv = buf + 2 * hd;                   /* [hd] q in K's type */
    uint16_t *acc16 = (uint16_t *)(buf + 3 * hd); /* [hd] running sum in f16 (v_round) */
    float *krow = buf + 4 * hd;                   /* [hd] K row widened to f32 */
    const struct hs_quant_kernels *kdot = k_widen ? t->f32 : t->kdot;

    const void *qk = q;
    if (a->k_cache->type != HS_TYPE_F32 && !k_widen) {
        t->kdot->from_float(q, qconv, hd);
        qk = qconv;
    }
    float m = -INFINITY;
    float sum = 0.0f;
#if HS__CPU_X86
    if (v_round && t->simd_f16) {
        /* The running sum lives in f16 (acc16), updated in one fused pass per position. */
        memset(acc16, 0, (size_t)hd * sizeof(uint16_t));
        for (int64_t p = p0; p < p1; p++) {
            const size_t slot = (size_t)hs_kv_slot(seq->block_table, a->block_size, p);
            const char *kr = (const char *)a->k_cache->data + slot * a->k_cache->nb[2] +
                             (size_t)kvh * a->k_cache->nb[1];
            const uint16_t *vr =
                (const uint16_t *)((const char *)a->v_cache->data + slot * a->v_cache->nb[2] +
                                   (size_t)kvh * a->v_cache->nb[1]);
            float s;
            t->kdot->vec_dot(hd, &s, kr, qk);
            s *= a->scale;
            float ms = 1.0f;
            float vs = 1.0f;
            if (s > m) {
                ms = expf(m - s);
                m = s;
                f16_scale_avx2(acc16, ms, hd);
            } else {
                vs = expf(s - m);
            }
            f16_mad_avx2(acc16, vr, vs, hd);
            sum = fmaf(sum, ms, vs);
        }
        if (ml) {
            for (int64_t d = 0; d < hd; d++) {
                out[d] = hs_fp16_to_fp32(acc16[d]);
            }
            *ml[0] = m;
            *ml[1] = sum;
            return;
        }
        const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
        for (int64_t d = 0; d < hd; d++) {
            out[d] = hs_fp16_to_fp32(acc16[d]) * inv;
        }
        return;
    }
#endif
    memset(acc, 0, (size_t)hd * sizeof(float));
    memset(acc16, 0, (size_t)hd * sizeof(uint16_t));
    for (int64_t p = p0; p < p1; p++) {
        const size_t slot = (size_t)hs_kv_slot(seq->block_table, a->block_size, p);
        const char *kr = (const char *)a->k_cache->data + slot * a->k_cache->nb[2] +
                         (size_t)kvh * a->k_cache->nb[1];
        const char *vr = (const char *)a->v_cache->data + slot * a->v_cache->nb[2] +
                         (size_t)kvh * a->v_cache->nb[1];
        float s;
        if (k_widen) {
            t->f16->to_float(kr, krow, hd);
            kr = (const char *)krow;
        }
        kdot->vec_dot(hd, &s, kr, qk);
        s *= a->scale;
        float ms = 1.0f;
        float vs = 1.0f;
        const bool rescale = s > m;
        if (rescale) {
            ms = expf(m - s);
            m = s;
        } else {
            vs = expf(s - m);
        }
        if (v_round) {
            t->f16->to_float(acc16, acc, hd);
            t->f16->to_float(vr, vrow, hd);
            if (rescale) {
                for (int64_t d = 0; d < hd; d++) {
                    acc[d] *= ms;
                }
                t->f16->from_float(acc, acc16, hd);
                t->f16->to_float(acc16, acc, hd);
            }
            t->mad(hd, acc, vrow, vs);
            t->f16->from_float(acc, acc16, hd);
        } else {
            const float *v = (const float *)vr;
            if (v_f16) { /* f32_acc: V widened, the sum kept in f32 */
                t->f16->to_float(vr, vrow, hd);
                v = vrow;
            }
            if (rescale) {
                for (int64_t d = 0; d < hd; d++) {
                    acc[d] *= ms;
                }
            }
            t->mad(hd, acc, v, vs);
        }
        sum = fmaf(sum, ms, vs);
    }
    if (v_round) {
        t->f16->to_float(acc16, acc, hd);
    }
    if (ml) {
        memcpy(out, acc, (size_t)hd * sizeof(float));
        *ml[0] = m;
        *ml[1] = sum;
        return;
    }
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int64_t d = 0; d < hd; d++) {
        out[d] = acc[d] * inv;
    }
}

static void mad_f32_scalar(int64_t n, float *y, const float *x, float a)
{
    for (int64_t i = 0; i < n; i++) {
        y[i] = fmaf(x[i], a, y[i]);
    }
}

/* ---- tiles of query rows against blocks of positions (big batches) ---- */

/* hs__attn_block_f32_avx512 (and _avx2) in portable C (libm expf; not the same bits). */
static void attn_block_f32_scalar(int64_t hd, int64_t nq, int64_t ldq, int64_t nk, float scale,
                                  const float *qt, const float *k, const float *v,
                                  const int32_t *last, float *m, float *l, float *acc, float *st)
{
    for (int64_t i = 0; i < nq; i++) {
        float mx = -INFINITY;
        for (int64_t j = 0; j < nk; j++) {
            float s = -INFINITY;
            if (j <= last[i]) {
                s = 0.0f;
                for (int64_t d = 0; d < hd; d++) {
                    s = fmaf(qt[d * ldq + i], k[j * hd + d], s);
                }
                s *= scale;
            }
            st[j] = s;
            mx = s > mx ? s : mx;
        }
        const float mnew = mx > m[i] ? mx : m[i];
        if (mnew == -INFINITY) {
            continue; /* no position seen yet */
        }
        const float ms = expf(m[i] - mnew);
        float sum = 0.0f;
        float *a = acc + i * hd;
        for (int64_t d = 0; d < hd; d++) {
            a[d] *= ms;
        }
        for (int64_t j = 0; j < nk; j++) {
            const float p = expf(st[j] - mnew);
            sum += p;
            for (int64_t d = 0; d < hd; d++) {
                a[d] = fmaf(p, v[j * hd + d], a[d]);
            }
        }
        m[i] = mnew;
        l[i] = fmaf(l[i], ms, sum);
    }
}

/* Floats of per-thread scratch the tiled path needs. */
static size_t attn_tile_floats(int64_t hd)
{
    return (size_t)hd * HS__ATTN_TILE_Q * 2 + (size_t)hd * HS__ATTN_TILE_K * 2 +
           (size_t)HS__ATTN_TILE_K * HS__ATTN_TILE_Q + 4 * HS__ATTN_TILE_Q;
}

/* Big batches: query rows [j0, j1) of seq against K/V head kvh, for all query heads of its GQA
 * group at once. Each block of K/V positions is widened to f32 once for the whole tile; scores,
 * online softmax and the V sums run in f32 (hs__attn_block_f32_avx512's contract). Blocks start
 * at the range's first position (0, TILE_K, 2 TILE_K, ... for the whole prefix); a row's last
 * position masks the rest, and a row masked out of every block keeps the empty state. */
static void attn_tile(const struct hs__attn_task *t, const struct hs_attn_seq *seq, int64_t kvh,
                      int32_t j0, int32_t j1, float *buf)
{
    const struct hs_attn_args *a = t->a;
    const int64_t hd = t->hd;
    const int64_t group = t->n_head / t->n_kv_head;
    const int64_t nq = (int64_t)(j1 - j0) * group;
    const int64_t ldq = (nq + 15) / 16 * 16;
    float *qt = buf;                                   /* [hd][ldq] */
    float *acc = qt + hd * HS__ATTN_TILE_Q;            /* [nq][hd] */
    float *kf = acc + hd * HS__ATTN_TILE_Q;            /* [TILE_K][hd] */
    float *vf = kf + hd * HS__ATTN_TILE_K;             /* [TILE_K][hd] */
    float *st = vf + hd * HS__ATTN_TILE_K;             /* [TILE_K][ldq] */
    float *m = st + HS__ATTN_TILE_K * HS__ATTN_TILE_Q; /* [ldq] */
    float *l = m + HS__ATTN_TILE_Q;                    /* [ldq] */
    int32_t *last_abs = (int32_t *)(l + HS__ATTN_TILE_Q);
    int32_t *last = last_abs + HS__ATTN_TILE_Q;
    HS_ASSERT(ldq <= HS__ATTN_TILE_Q);

    for (int64_t i = 0; i < ldq; i++) {
        const int64_t r = i < nq ? i / group : j1 - j0 - 1; /* padding: the last row's view */
        const int64_t g = i % group;
        const int64_t row = (int64_t)seq->q_row + j0 + r;
        const float *q = (const float *)((const char *)a->q->data + (size_t)row * a->q->nb[2] +
                                         (size_t)(kvh * group + g) * a->q->nb[1]);
        for (int64_t d = 0; d < hd; d++) {
            qt[d * ldq + i] = i < nq ? q[d] : 0.0f;
        }
        int64_t pb, pe;
        attn_range(seq, j0 + (int32_t)r, &pb, &pe);
        last_abs[i] = (int32_t)(pe - 1);
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    memset(acc, 0, (size_t)(nq * hd) * sizeof(float));
    int64_t p_begin, p_end; /* the last row's range: the union of the tile's */
    attn_range(seq, j1 - 1, &p_begin, &p_end);
    const bool k_f16 = a->k_cache->type == HS_TYPE_F16;
    const bool v_f16 = a->v_cache->type == HS_TYPE_F16;
    for (int64_t p0 = p_begin; p0 < p_end; p0 += HS__ATTN_TILE_K) {
        const int64_t nk = HS_MIN(HS__ATTN_TILE_K, p_end - p0);
        for (int64_t j = 0; j < nk; j++) {
            const size_t slot = (size_t)hs_kv_slot(seq->block_table, a->block_size, p0 + j);
            const char *kr = (const char *)a->k_cache->data + slot * a->k_cache->nb[2] +
                             (size_t)kvh * a->k_cache->nb[1];
            const char *vr = (const char *)a->v_cache->data + slot * a->v_cache->nb[2] +
                             (size_t)kvh * a->v_cache->nb[1];
            if (k_f16) {
                t->f16->to_float(kr, kf + j * hd, hd);
            } else {
                memcpy(kf + j * hd, kr, (size_t)hd * sizeof(float));
            }
            if (v_f16) {
                t->f16->to_float(vr, vf + j * hd, hd);
            } else {
                memcpy(vf + j * hd, vr, (size_t)hd * sizeof(float));
            }
        }
        for (int64_t i = 0; i < ldq; i++) {
            last[i] = (int32_t)(last_abs[i] - p0);
        }
        t->block(hd, nq, ldq, nk, a->scale, qt, kf, vf, last, m, l, acc, st);
    }
    for (int64_t i = 0; i < nq; i++) {
        const int64_t row = (int64_t)seq->q_row + j0 + i / group;
        const int64_t h = kvh * group + i % group;
        float *out = (float *)((char *)a->out->data + (size_t)row * a->out->nb[2] +
                               (size_t)h * a->out->nb[1]);
        if (t->partials) {
            memcpy(out, acc + i * hd, (size_t)hd * sizeof(float));
            *attn_ml(a->m, row, h) = m[i];
            *attn_ml(a->l, row, h) = l[i];
            continue;
        }
        const float inv = l[i] == 0.0f ? 0.0f : 1.0f / l[i];
        for (int64_t d = 0; d < hd; d++) {
            out[d] = acc[i * hd + d] * inv;
        }
    }
}

/* Big batches: items are (sequence, tile of query rows, K/V head), later (longer) tiles first. */
static void attn_tiled_fn(void *ctx, int ith, int nth)
{
    struct hs__attn_task *t = ctx;
    (void)nth;
    const struct hs_attn_args *a = t->a;
    float *buf = t->tls + (size_t)ith * t->tls_stride;
    for (;;) {
        int64_t item = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (item >= t->n_items) {
            break;
        }
        const struct hs_attn_seq *seq = NULL;
        int64_t n_tiles = 0;
        for (int32_t i = 0; i < a->n_seqs; i++) {
            n_tiles = (a->seqs[i].n_new + t->tile_rows - 1) / t->tile_rows;
            if (item < n_tiles * t->n_kv_head) {
                seq = &a->seqs[i];
                break;
            }
            item -= n_tiles * t->n_kv_head;
        }
        HS_ASSERT(seq);
        const int64_t kvh = item % t->n_kv_head;
        const int32_t j0 = (int32_t)(n_tiles - 1 - item / t->n_kv_head) * t->tile_rows;
        const int32_t j1 = HS_MIN(j0 + t->tile_rows, seq->n_new);
        attn_tile(t, seq, kvh, j0, j1, buf);
    }
}

/* ---- the op ---- */

#if HS__CPU_X86
/* The fused path's q rows: each rounded to f16 (K's from_float, as attn_row converts q) and
 * widened back. */
__attribute__((target("avx2,fma,f16c"))) static void
attn_q_f16_avx2(const struct hs__attn_task *t, const float *q, uint16_t *q16, float *qf)
{
    t->kdot->from_float(q, q16, t->hd);
    for (int64_t d = 0; d < t->hd; d += 8) {
        _mm256_storeu_ps(qf + d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(q16 + d))));
    }
}
#endif

static void expf_libm_scalar(int64_t n, float *y, const float *x)
{
    for (int64_t i = 0; i < n; i++) {
        y[i] = expf(x[i]);
    }
}

/* Work items are (sequence, chunk of up to HS__ATTN_ROWS_PER_ITEM query rows, K/V head, part of
 * its GQA group of group_n query heads), handed out dynamically: later rows see more positions,
 * and a long prefill still spreads over all threads. */
static void attn_fn(void *ctx, int ith, int nth)
{
    struct hs__attn_task *t = ctx;
    (void)nth;
    const struct hs_attn_args *a = t->a;
    float *buf = t->tls + (size_t)ith * t->tls_stride;
    const int64_t group = t->n_head / t->n_kv_head;
    const int64_t per_row = t->n_kv_head * t->group_sub;
    for (;;) {
        int64_t item = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (item >= t->n_items) {
            break;
        }
        const struct hs_attn_seq *seq = NULL;
        for (int32_t i = 0; i < a->n_seqs; i++) {
            const int64_t n_chunks =
                (a->seqs[i].n_new + HS__ATTN_ROWS_PER_ITEM - 1) / HS__ATTN_ROWS_PER_ITEM;
            if (item < n_chunks * per_row) {
                seq = &a->seqs[i];
                break;
            }
            item -= n_chunks * per_row;
        }
        HS_ASSERT(seq);
        const int64_t kvh = item % per_row / t->group_sub;
        const int64_t h0 = kvh * group + item % t->group_sub * t->group_n;
        const int nh = (int)HS_MIN(t->group_n, kvh * group + group - h0);
        const int32_t j0 = (int32_t)(item / per_row) * HS__ATTN_ROWS_PER_ITEM;
        const int32_t j1 = HS_MIN(j0 + HS__ATTN_ROWS_PER_ITEM, seq->n_new);
        for (int32_t j = j0; j < j1; j++) {
            const int64_t row = (int64_t)seq->q_row + j;
            float *out[HS__ATTN_GROUP_MAX];
            float *ml[2 * HS__ATTN_GROUP_MAX];
            const float *q[HS__ATTN_GROUP_MAX];
            for (int g = 0; g < nh; g++) {
                q[g] = (const float *)((const char *)a->q->data + (size_t)row * a->q->nb[2] +
                                       (size_t)(h0 + g) * a->q->nb[1]);
                out[g] = (float *)((char *)a->out->data + (size_t)row * a->out->nb[2] +
                                   (size_t)(h0 + g) * a->out->nb[1]);
                ml[2 * g] = t->partials ? attn_ml(a->m, row, h0 + g) : NULL;
                ml[2 * g + 1] = t->partials ? attn_ml(a->l, row, h0 + g) : NULL;
            }
            int64_t p0, p1;
            attn_range(seq, j, &p0, &p1);
#if HS__CPU_X86
            if (t->fused) {
                float *qf = buf;
                uint16_t *q16 = (uint16_t *)(void *)(buf + HS__ATTN_GROUP_MAX * t->hd);
                for (int g = 0; g < nh; g++) {
                    attn_q_f16_avx2(t, q[g], q16, qf + (size_t)g * t->hd);
                }
                t->group_f16(&t->fz, seq, qf, kvh, p0, p1, out, t->partials ? ml : NULL,
                             buf + (HS__ATTN_GROUP_MAX + 1) * t->hd, nh);
                continue;
            }
#endif
            for (int g = 0; g < nh; g++) {
                attn_row(t, seq, q[g], kvh, p0, p1, out[g], t->partials ? &ml[2 * g] : NULL, buf);
            }
        }
    }
}

hs_status hs__cpu_attention(struct hs_backend *be, const struct hs_attn_args *args)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    struct hs__attn_task t = {
        .a = args,
        .kdot = hs__cpu_kernels(args->k_cache->type, HS_ISA_COUNT),
        .f16 = hs__cpu_kernels(HS_TYPE_F16, HS_ISA_COUNT),
        .n_head = args->q->ne[1],
        .n_kv_head = args->k_cache->ne[1],
        .hd = args->q->ne[0],
        .simd_f16 = cpu->simd,
        .f32 = hs__cpu_kernels(HS_TYPE_F32, HS_ISA_COUNT),
        .mad = cpu->simd ? hs__mad_f32_avx2 : mad_f32_scalar,
        .partials = args->m != NULL,
    };
    /* As ggml picks its tiled path: enough query rows in the batch (the whole forward batch's,
     * so that a batch split over calls keeps its path), one cache type, and a head size its
     * SIMD handles. */
    const int64_t n_batch_rows = args->n_batch_rows > 0 ? args->n_batch_rows : args->q->ne[2];
    t.f32_acc = n_batch_rows >= HS__ATTN_F32_MIN_ROWS &&
                args->k_cache->type == args->v_cache->type && t.hd % 16 == 0;
    if (!t.kdot || !t.f16 || !t.f32) {
        return HS_E_NOTSUP;
    }
    void (*fn)(void *, int, int) = attn_fn;
    if (t.f32_acc) {
        const int64_t group = t.n_head / t.n_kv_head;
        t.tile_rows = (int32_t)HS_MAX(1, HS__ATTN_TILE_Q / group);
        t.block = attn_block_f32_scalar;
#if HS__CPU_X86
        if (cpu->simd && cpu->isa >= HS_ISA_AVX512) {
            t.block = hs__attn_block_f32_avx512;
        } else if (cpu->simd && cpu->isa >= HS_ISA_AVX2) {
            t.block = hs__attn_block_f32_avx2; /* the same bits */
        }
#endif
        for (int32_t i = 0; i < args->n_seqs; i++) {
            t.n_items += (args->seqs[i].n_new + t.tile_rows - 1) / t.tile_rows * t.n_kv_head;
        }
        HS_TRY(hs__cpu_reserve_tls(cpu, attn_tile_floats(t.hd)));
        fn = attn_tiled_fn;
    } else {
        /* The fused path takes a GQA group's heads together (up to HS__ATTN_GROUP_MAX), halved
         * while that leaves fewer than 2 items a thread (one decoding sequence). */
        const int64_t group = t.n_head / t.n_kv_head;
        int64_t n_chunks = 0;
        for (int32_t i = 0; i < args->n_seqs; i++) {
            n_chunks += (args->seqs[i].n_new + HS__ATTN_ROWS_PER_ITEM - 1) / HS__ATTN_ROWS_PER_ITEM;
        }
#if HS__CPU_X86
        t.fused = t.simd_f16 && args->k_cache->type == HS_TYPE_F16 &&
                  args->v_cache->type == HS_TYPE_F16 && attn_fused_hd(t.hd);
#endif
        t.group_n = 1;
#if HS__CPU_X86
        if (t.fused) {
            const int64_t want = 2 * (int64_t)hs__pool_n_threads(cpu->pool);
            t.group_n = (int32_t)HS_MIN(group, HS__ATTN_GROUP_MAX);
            while (t.group_n > 1 &&
                   n_chunks * t.n_kv_head * ((group + t.group_n - 1) / t.group_n) < want) {
                t.group_n = (t.group_n + 1) / 2;
            }
            t.fz = (struct hs__attn_fused){
                .a = args,
                .hd = t.hd,
                .expf = hs__expf_libm_check() ? hs__expf_libm_avx2 : expf_libm_scalar,
            };
            t.group_f16 =
                cpu->isa >= HS_ISA_AVX512 ? hs__attn_group_f16_avx512 : hs__attn_group_f16_avx2;
        }
#endif
        t.group_sub = (int32_t)((group + t.group_n - 1) / t.group_n);
        t.n_items = n_chunks * t.n_kv_head * t.group_sub;
        HS_TRY(hs__cpu_reserve_tls(cpu, attn_row_floats(t.hd)));
    }
    t.tls = cpu->tls;
    t.tls_stride = cpu->tls_stride;
    atomic_init(&t.next, 0);
    if (t.n_items <= 1) {
        hs__pool_run1_named(cpu->pool, fn, &t, "attention");
    } else {
        hs__pool_run_dyn_named(cpu->pool, fn, &t, "attention");
    }
    return HS_OK;
}
