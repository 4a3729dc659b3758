/* attention/: flash-decoding partials computed by the CPU backend over KV ranges and merged by
 * hs_attn_merge, against the monolithic op and the float64 reference of tests/ref/ref-ops.c;
 * full-range partials finalised against the monolithic op's bits; the empty partial as the
 * identity of the combination. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention/attention.h"
#include "backends/backend.h"
#include "backends/cpu/cpu.h"
#include "tests/ref/ref-ops.h"

/* Error bounds, as hs_ref_rel_err of one (row, head) vector of head_dim values; the float64
 * reference reads the same (f16-rounded where the cache is f16) K and V.
 *
 * The V sum dominates. Over random V of either sign the running sum after k positions has a
 * size of about sqrt(k) (in units of |v| times the weights), as has the result; each position
 * rounds it once, by at most u of its size (u = 2^-p, p the bits of the format's significand),
 * so the total relative to the result is at most about u * (2/3) * n over n positions, and,
 * the roundings being of random sign, about u * sqrt(n / 6) typically. Here n <= 112:
 * - f32 accumulation (f32 caches, and every cache on the tiled path of big batches, which
 *   widens f16 K/V to f32): u = 2^-24, worst 4.5e-6, typically 3e-7; the roundings of the
 *   scores and the exponentials are of the same order. TOL_F32 = 1e-5 is above the worst case.
 * - f16 V on the per-row path (small batches, ggml's one_chunk precision: the V sum is rounded
 *   to f16 after every position, and q to f16 before the dot): u = 2^-11, typically 2e-3,
 *   worst 3.6e-2 (every rounding the same way, which random data does not do). TOL_F16 = 5e-3,
 *   test-backend-ops' bound for the same path, is 2.5 times the typical size (the largest
 *   error over the vectors checked here is 2.2e-3).
 * A merged result carries the errors of its partials (each over fewer positions) plus a few
 * roundings per element from the merge (two expf, two products, a sum, the final scale), so the
 * same bounds hold against the reference. Against the monolithic op, both being within the
 * bound of the reference, the triangle inequality gives twice the bound; nothing tighter holds
 * with f16, whose two rounding sequences part ways at the first split. */
#define TOL_F32 1e-5
#define TOL_F16 5e-3

enum {
    BS = 16,       /* tokens per block */
    N_BLOCKS = 28, /* cache blocks (the sequences below use 21) */
    MAX_SEQS = 5,
    MAX_CTX = 112,
    MAX_RANGES = 3,
    BIG_BATCH = 80, /* n_batch_rows that selects the tiled f32 path */
};

/* Decode rows (n_new 1) and prefill rows (several new rows over cached positions, or none), in
 * one batch of 32 rows over scattered blocks; positions 17, 38 and 112 end inside blocks. */
static const int32_t seq_n_past[MAX_SEQS] = {0, 37, 70, 16, 111};
static const int32_t seq_n_new[MAX_SEQS] = {7, 1, 23, 1, 1};

/* ---- a batch of sequences over a paged cache ---- */

struct scene {
    enum hs_type type;
    int64_t n_head, n_kv, hd, n_rows;
    int32_t tables[MAX_SEQS][(MAX_CTX + BS - 1) / BS];
    struct hs_attn_seq seqs[MAX_SEQS];
    void *kc, *vc; /* [N_BLOCKS][BS][n_kv][hd] of type */
    struct hs_tensor tk, tv;
    float *k[MAX_SEQS], *v[MAX_SEQS]; /* [n_ctx][n_kv][hd]: the values the cache holds */
    float *q;                         /* [n_rows][n_head][hd] */
    struct hs_tensor tq;
    float *ref; /* [n_rows][n_head][hd]: float64 reference attention over the causal prefix */
};

static float *rand_floats(struct hs_rng *rng, int64_t n, float lo, float hi)
{
    float *p = malloc((size_t)n * sizeof(float));
    cr_assert_not_null(p);
    for (int64_t i = 0; i < n; i++) {
        p[i] = hs_rng_range(rng, lo, hi);
    }
    return p;
}

static int32_t n_ctx_of(int s)
{
    return seq_n_past[s] + seq_n_new[s];
}

static void scene_init(struct scene *sc, struct hs_rng *rng, enum hs_type type, int64_t n_head,
                       int64_t n_kv, int64_t hd)
{
    memset(sc, 0, sizeof(*sc));
    sc->type = type;
    sc->n_head = n_head;
    sc->n_kv = n_kv;
    sc->hd = hd;
    const int64_t kv_row = n_kv * hd;
    const size_t esz = type == HS_TYPE_F16 ? sizeof(uint16_t) : sizeof(float);
    const int64_t cne[4] = {hd, n_kv, BS, N_BLOCKS};
    sc->kc = calloc((size_t)(N_BLOCKS * BS * kv_row), esz);
    sc->vc = calloc((size_t)(N_BLOCKS * BS * kv_row), esz);
    cr_assert(sc->kc && sc->vc);
    cr_assert_eq(hs_tensor_init(&sc->tk, type, 4, cne, sc->kc), HS_OK);
    cr_assert_eq(hs_tensor_init(&sc->tv, type, 4, cne, sc->vc), HS_OK);

    /* Blocks handed out in a random order. */
    int32_t perm[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) {
        perm[i] = i;
    }
    for (int i = N_BLOCKS - 1; i > 0; i--) {
        const int j = (int)(hs_rng_next(rng) % (uint64_t)(i + 1));
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int next = 0;
    for (int s = 0; s < MAX_SEQS; s++) {
        const int32_t n_ctx = n_ctx_of(s);
        for (int b = 0; b < (n_ctx + BS - 1) / BS; b++) {
            cr_assert_lt(next, N_BLOCKS);
            sc->tables[s][b] = perm[next++];
        }
        sc->seqs[s] = (struct hs_attn_seq){.n_past = seq_n_past[s],
                                           .n_new = seq_n_new[s],
                                           .q_row = (int32_t)sc->n_rows,
                                           .block_table = sc->tables[s]};
        sc->n_rows += seq_n_new[s];
        /* K and V, rounded to the cache type, written at each position's slot. */
        sc->k[s] = rand_floats(rng, n_ctx * kv_row, -1.0f, 1.0f);
        sc->v[s] = rand_floats(rng, n_ctx * kv_row, -1.0f, 1.0f);
        for (int32_t p = 0; p < n_ctx; p++) {
            const int64_t slot = (int64_t)sc->tables[s][p / BS] * BS + p % BS;
            for (int64_t i = 0; i < kv_row; i++) {
                float *kf = &sc->k[s][p * kv_row + i], *vf = &sc->v[s][p * kv_row + i];
                const size_t at = (size_t)(slot * kv_row + i);
                if (type == HS_TYPE_F16) {
                    ((uint16_t *)sc->kc)[at] = hs_fp32_to_fp16(*kf);
                    ((uint16_t *)sc->vc)[at] = hs_fp32_to_fp16(*vf);
                    *kf = hs_fp16_to_fp32(((uint16_t *)sc->kc)[at]);
                    *vf = hs_fp16_to_fp32(((uint16_t *)sc->vc)[at]);
                } else {
                    ((float *)sc->kc)[at] = *kf;
                    ((float *)sc->vc)[at] = *vf;
                }
            }
        }
    }
    const int64_t qne[3] = {hd, n_head, sc->n_rows};
    sc->q = rand_floats(rng, sc->n_rows * n_head * hd, -1.0f, 1.0f);
    cr_assert_eq(hs_tensor_init(&sc->tq, HS_TYPE_F32, 3, qne, sc->q), HS_OK);

    /* The reference, once per scene: each query row over its whole causal prefix. */
    sc->ref = malloc((size_t)(sc->n_rows * n_head * hd) * sizeof(float));
    float *kh = malloc((size_t)(MAX_CTX * hd) * sizeof(float));
    float *vh = malloc((size_t)(MAX_CTX * hd) * sizeof(float));
    cr_assert(sc->ref && kh && vh);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int s = 0; s < MAX_SEQS; s++) {
        for (int64_t h = 0; h < n_head; h++) {
            const int64_t kvh = h / (n_head / n_kv);
            for (int32_t p = 0; p < n_ctx_of(s); p++) {
                memcpy(kh + p * hd, sc->k[s] + p * kv_row + kvh * hd, (size_t)hd * sizeof(float));
                memcpy(vh + p * hd, sc->v[s] + p * kv_row + kvh * hd, (size_t)hd * sizeof(float));
            }
            for (int32_t j = 0; j < seq_n_new[s]; j++) {
                const int64_t at = ((sc->seqs[s].q_row + j) * n_head + h) * hd;
                hs_ref_attention_row(sc->q + at, kh, vh, seq_n_past[s] + j + 1, hd, scale,
                                     sc->ref + at);
            }
        }
    }
    free(vh);
    free(kh);
}

static void scene_free(struct scene *sc)
{
    for (int s = 0; s < MAX_SEQS; s++) {
        free(sc->k[s]);
        free(sc->v[s]);
    }
    free(sc->ref);
    free(sc->q);
    free(sc->vc);
    free(sc->kc);
}

/* One partial's buffers: o [n_rows][n_head][hd], m and l [n_rows][n_head]. */
struct part_buf {
    float *o, *m, *l;
    struct hs_attn_partial p;
};

static void part_init(struct part_buf *pb, const struct scene *sc)
{
    const int64_t n_vec = sc->n_rows * sc->n_head;
    /* Filled with garbage: the op must write every value. */
    pb->o = malloc((size_t)(n_vec * sc->hd) * sizeof(float));
    pb->m = malloc((size_t)n_vec * sizeof(float));
    pb->l = malloc((size_t)n_vec * sizeof(float));
    cr_assert(pb->o && pb->m && pb->l);
    memset(pb->o, 0x7f, (size_t)(n_vec * sc->hd) * sizeof(float));
    memset(pb->m, 0x7f, (size_t)n_vec * sizeof(float));
    memset(pb->l, 0x7f, (size_t)n_vec * sizeof(float));
    pb->p = (struct hs_attn_partial){.o = pb->o, .m = pb->m, .l = pb->l};
}

static void part_free(struct part_buf *pb)
{
    free(pb->o);
    free(pb->m);
    free(pb->l);
}

/* Runs the op over the scene: each sequence over [begin[s], end[s]) (NULL: the whole prefix),
 * into out (normalised) or, with pb, into partials. */
static void run_attention(struct hs_backend *be, const struct scene *sc, const int32_t *begin,
                          const int32_t *end, int32_t n_batch_rows, float *out, struct part_buf *pb)
{
    struct hs_attn_seq seqs[MAX_SEQS];
    memcpy(seqs, sc->seqs, sizeof(seqs));
    for (int s = 0; begin && s < MAX_SEQS; s++) {
        seqs[s].kv_begin = begin[s];
        seqs[s].kv_end = end[s];
        /* [0, 0) cannot be said (zeros mean the whole prefix): the same empty range is said
         * as [n_ctx, n_ctx). */
        if (begin[s] == 0 && end[s] == 0) {
            seqs[s].kv_begin = seqs[s].kv_end = n_ctx_of(s);
        }
    }
    struct hs_tensor to, tm, tl;
    const int64_t qne[3] = {sc->hd, sc->n_head, sc->n_rows};
    cr_assert_eq(hs_tensor_init(&to, HS_TYPE_F32, 3, qne, pb ? pb->o : out), HS_OK);
    if (pb) {
        cr_assert_eq(hs_tensor_init_2d(&tm, HS_TYPE_F32, sc->n_head, sc->n_rows, pb->m), HS_OK);
        cr_assert_eq(hs_tensor_init_2d(&tl, HS_TYPE_F32, sc->n_head, sc->n_rows, pb->l), HS_OK);
    }
    const struct hs_attn_args args = {.q = &sc->tq,
                                      .out = &to,
                                      .k_cache = &sc->tk,
                                      .v_cache = &sc->tv,
                                      .block_size = BS,
                                      .seqs = seqs,
                                      .n_seqs = MAX_SEQS,
                                      .scale = 1.0f / sqrtf((float)sc->hd),
                                      .m = pb ? &tm : NULL,
                                      .l = pb ? &tl : NULL,
                                      .n_batch_rows = n_batch_rows};
    const hs_status st = hs_backend_attention(be, &args);
    cr_assert_eq(st, HS_OK, "attention: %s", hs_status_str(st));
}

static struct hs_backend *make_cpu(void)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 2;
    p.pin_threads = false;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("cpu", &p, &be), HS_OK);
    return be;
}

/* The configurations every test runs: cache type x (n_head, n_kv_head). */
static const enum hs_type cache_types[] = {HS_TYPE_F32, HS_TYPE_F16};
static const int64_t head_shapes[][2] = {{8, 2}, {4, 4}, {6, 3}};
#define HD 64

/* ---- split points ---- */

/* Split points 0 = b[0] <= b[1] <= ... <= b[n_ranges] = n_ctx of one sequence, of kind `kind`:
 * 0 random (mostly inside blocks); 1 an empty first range; 2 an empty last range; 3 an empty
 * range in the middle (n_ranges 3) or a split on a block boundary (2); 4 a split 5 positions
 * into a block. A prefill's early rows see nothing of a range that starts after them. */
static void make_splits(struct hs_rng *rng, int kind, int n_ranges, int32_t n_ctx, int32_t *b)
{
    b[0] = 0;
    b[n_ranges] = n_ctx;
    for (int r = 1; r < n_ranges; r++) {
        b[r] = (int32_t)(hs_rng_next(rng) % (uint64_t)(n_ctx + 1));
    }
    switch (kind) {
    case 1:
        b[1] = 0;
        break;
    case 2:
        b[n_ranges - 1] = n_ctx;
        break;
    case 3:
        if (n_ranges == 3) {
            b[2] = b[1];
        } else {
            b[1] = b[1] / BS * BS;
        }
        break;
    case 4:
        b[1] = HS_MIN(b[1] / BS * BS + 5, n_ctx);
        break;
    default:
        break;
    }
    /* Sorted (insertion sort of at most two interior points). */
    for (int r = 2; r < n_ranges; r++) {
        for (int i = r; i > 1 && b[i] < b[i - 1]; i--) {
            const int32_t t = b[i];
            b[i] = b[i - 1];
            b[i - 1] = t;
        }
    }
    for (int r = 0; r < n_ranges; r++) {
        cr_assert(b[r] <= b[r + 1] && b[r] >= 0 && b[r + 1] <= n_ctx);
    }
}

/* ---- merged partials against the monolithic op and the reference ---- */

static void check_vectors(const struct scene *sc, const float *got, const float *want, double tol,
                          const char *what, const char *cfg)
{
    for (int64_t i = 0; i < sc->n_rows * sc->n_head; i++) {
        const double err = hs_ref_rel_err(got + i * sc->hd, want + i * sc->hd, sc->hd);
        cr_assert(err < tol, "%s: %s: row %lld head %lld: err %g (bound %g)", cfg, what,
                  (long long)(i / sc->n_head), (long long)(i % sc->n_head), err, tol);
    }
}

Test(attention, merged_partials_match_monolithic_and_float64_reference)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 2024);
    struct hs_backend *be = make_cpu();
    int n_checked = 0;
    for (size_t ti = 0; ti < HS_ARRAY_LEN(cache_types); ti++) {
        for (size_t hi = 0; hi < HS_ARRAY_LEN(head_shapes); hi++) {
            struct scene sc;
            scene_init(&sc, &rng, cache_types[ti], head_shapes[hi][0], head_shapes[hi][1], HD);
            const int64_t n_out = sc.n_rows * sc.n_head * sc.hd;
            float *mono = malloc((size_t)n_out * sizeof(float));
            float *merged = malloc((size_t)n_out * sizeof(float));
            struct part_buf parts[MAX_RANGES], acc;
            cr_assert(mono && merged);
            for (int r = 0; r < MAX_RANGES; r++) {
                part_init(&parts[r], &sc);
            }
            part_init(&acc, &sc);
            for (int big = 0; big < 2; big++) {
                const int32_t n_batch_rows = big ? BIG_BATCH : 0;
                /* The per-row path rounds the V sum to f16 with an f16 cache. */
                const double tol = sc.type == HS_TYPE_F16 && !big ? TOL_F16 : TOL_F32;
                for (int simd = 0; simd < 2; simd++) {
                    hs__cpu_set_simd(be, simd);
                    run_attention(be, &sc, NULL, NULL, n_batch_rows, mono, NULL);
                    char cfg[96];
                    snprintf(cfg, sizeof(cfg), "%s %lld/%lld big %d simd %d", hs_type_str(sc.type),
                             (long long)sc.n_head, (long long)sc.n_kv, big, simd);
                    check_vectors(&sc, mono, sc.ref, tol, "monolithic vs reference", cfg);
                    for (int n_ranges = 2; n_ranges <= MAX_RANGES; n_ranges++) {
                        for (int kind = 0; kind < 5; kind++) {
                            /* Per sequence its own split points, of a kind that varies. */
                            int32_t b[MAX_SEQS][MAX_RANGES + 1];
                            for (int s = 0; s < MAX_SEQS; s++) {
                                make_splits(&rng, (kind + s) % 5, n_ranges, n_ctx_of(s), b[s]);
                            }
                            struct hs_attn_partial pp[MAX_RANGES];
                            for (int r = 0; r < n_ranges; r++) {
                                int32_t begin[MAX_SEQS], end[MAX_SEQS];
                                for (int s = 0; s < MAX_SEQS; s++) {
                                    begin[s] = b[s][r];
                                    end[s] = b[s][r + 1];
                                }
                                run_attention(be, &sc, begin, end, n_batch_rows, NULL, &parts[r]);
                                pp[r] = parts[r].p;
                            }
                            hs_attn_merge(pp, n_ranges, &acc.p, sc.n_rows * sc.n_head, sc.hd,
                                          merged);
                            check_vectors(&sc, merged, sc.ref, tol, "merged vs reference", cfg);
                            check_vectors(&sc, merged, mono, 2 * tol, "merged vs monolithic", cfg);
                            n_checked++;
                        }
                    }
                }
            }
            part_free(&acc);
            for (int r = 0; r < MAX_RANGES; r++) {
                part_free(&parts[r]);
            }
            free(merged);
            free(mono);
            scene_free(&sc);
        }
    }
    cr_assert_eq(n_checked, 2 * 3 * 2 * 2 * 2 * 5);
    hs_backend_destroy(be);
}

/* ---- full-range partials: the monolithic op's bits ---- */

Test(attention, full_range_partials_finalised_are_the_monolithic_bits)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    struct hs_backend *be = make_cpu();
    for (size_t ti = 0; ti < HS_ARRAY_LEN(cache_types); ti++) {
        for (size_t hi = 0; hi < HS_ARRAY_LEN(head_shapes); hi++) {
            struct scene sc;
            scene_init(&sc, &rng, cache_types[ti], head_shapes[hi][0], head_shapes[hi][1], HD);
            const int64_t n_vec = sc.n_rows * sc.n_head;
            const size_t out_bytes = (size_t)(n_vec * sc.hd) * sizeof(float);
            float *mono = malloc(out_bytes), *fin = malloc(out_bytes);
            cr_assert(mono && fin);
            struct part_buf part, acc;
            part_init(&part, &sc);
            part_init(&acc, &sc);
            /* The whole prefix said two ways: zeros (the scene's seqs), and [0, n_ctx) (blocks
             * still from 0). */
            int32_t zeros[MAX_SEQS] = {0}, ends[MAX_SEQS];
            for (int s = 0; s < MAX_SEQS; s++) {
                ends[s] = n_ctx_of(s);
            }
            for (int big = 0; big < 2; big++) {
                for (int simd = 0; simd < 2; simd++) {
                    hs__cpu_set_simd(be, simd);
                    const int32_t n_batch_rows = big ? BIG_BATCH : 0;
                    run_attention(be, &sc, NULL, NULL, n_batch_rows, mono, NULL);
                    for (int how = 0; how < 2; how++) {
                        run_attention(be, &sc, how ? zeros : NULL, how ? ends : NULL, n_batch_rows,
                                      NULL, &part);
                        const char *cfg = hs_type_str(sc.type);
                        hs_attn_partial_finalize(&part.p, n_vec, sc.hd, fin);
                        cr_assert(memcmp(fin, mono, out_bytes) == 0,
                                  "%s %lld/%lld big %d simd %d how %d: finalize differs", cfg,
                                  (long long)sc.n_head, (long long)sc.n_kv, big, simd, how);
                        /* Merged alone, into a separate acc and into itself: the same bits. */
                        hs_attn_merge(&part.p, 1, &acc.p, n_vec, sc.hd, fin);
                        cr_assert(memcmp(fin, mono, out_bytes) == 0,
                                  "%s big %d simd %d how %d: merge of one differs", cfg, big, simd,
                                  how);
                        hs_attn_merge(&part.p, 1, &part.p, n_vec, sc.hd, fin);
                        cr_assert(memcmp(fin, mono, out_bytes) == 0,
                                  "%s big %d simd %d how %d: merge in place differs", cfg, big,
                                  simd, how);
                        /* ... and finalised in place. */
                        hs_attn_partial_finalize(&part.p, n_vec, sc.hd, part.o);
                        cr_assert(memcmp(part.o, mono, out_bytes) == 0,
                                  "%s big %d simd %d how %d: in-place finalize differs", cfg, big,
                                  simd, how);
                    }
                }
            }
            part_free(&acc);
            part_free(&part);
            free(fin);
            free(mono);
            scene_free(&sc);
        }
    }
    hs_backend_destroy(be);
}

/* ---- the empty partial ---- */

static bool partials_equal(const struct hs_attn_partial *a, const struct hs_attn_partial *b,
                           int64_t n_vec, int64_t hd)
{
    return memcmp(a->o, b->o, (size_t)(n_vec * hd) * sizeof(float)) == 0 &&
           memcmp(a->m, b->m, (size_t)n_vec * sizeof(float)) == 0 &&
           memcmp(a->l, b->l, (size_t)n_vec * sizeof(float)) == 0;
}

static void copy_partial(const struct hs_attn_partial *dst, const struct hs_attn_partial *src,
                         int64_t n_vec, int64_t hd)
{
    memcpy(dst->o, src->o, (size_t)(n_vec * hd) * sizeof(float));
    memcpy(dst->m, src->m, (size_t)n_vec * sizeof(float));
    memcpy(dst->l, src->l, (size_t)n_vec * sizeof(float));
}

Test(attention, combining_with_the_empty_partial_is_the_identity)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 5);
    struct hs_backend *be = make_cpu();
    struct scene sc;
    scene_init(&sc, &rng, HS_TYPE_F16, 8, 2, HD);
    const int64_t n_vec = sc.n_rows * sc.n_head;
    struct part_buf part, acc, empty, ranged;
    part_init(&part, &sc);
    part_init(&acc, &sc);
    part_init(&empty, &sc);
    part_init(&ranged, &sc);
    run_attention(be, &sc, NULL, NULL, 0, NULL, &part);
    /* Ranges some rows see nothing of (sequence 0's first rows, 1 and 3 wholly, 2's first
     * ten): empty partials from the op itself. */
    const int32_t begin[MAX_SEQS] = {3, 38, 80, 17, 40}, end[MAX_SEQS] = {0, 0, 0, 0, 60};
    run_attention(be, &sc, begin, end, 0, NULL, &ranged);
    int n_empty = 0;
    for (int64_t i = 0; i < n_vec; i++) {
        if (ranged.m[i] == -INFINITY) {
            n_empty++;
            cr_assert_eq(ranged.l[i], 0.0f);
            for (int64_t d = 0; d < sc.hd; d++) {
                cr_assert_eq(ranged.o[i * sc.hd + d], 0.0f);
            }
        }
    }
    cr_assert_gt(n_empty, 0);
    /* A signed zero in a live vector must survive too. */
    part.o[3] = -0.0f;
    hs_attn_partial_clear(&empty.p, n_vec, sc.hd);

    /* acc (+) empty = acc. */
    copy_partial(&acc.p, &part.p, n_vec, sc.hd);
    hs_attn_partial_combine(&acc.p, &empty.p, n_vec, sc.hd);
    cr_assert(partials_equal(&acc.p, &part.p, n_vec, sc.hd), "acc (+) empty changed acc");
    /* empty (+) part = part. */
    hs_attn_partial_clear(&acc.p, n_vec, sc.hd);
    hs_attn_partial_combine(&acc.p, &part.p, n_vec, sc.hd);
    cr_assert(partials_equal(&acc.p, &part.p, n_vec, sc.hd), "empty (+) part differs from part");
    cr_assert(signbit(acc.o[3]), "the sign of a zero was lost");
    /* The op's own empty vectors act the same: combining ranged into part, then part into
     * ranged's empty vectors, leaves exactly part's values there. */
    copy_partial(&acc.p, &ranged.p, n_vec, sc.hd);
    hs_attn_partial_combine(&acc.p, &part.p, n_vec, sc.hd);
    for (int64_t i = 0; i < n_vec; i++) {
        if (ranged.m[i] == -INFINITY) {
            cr_assert(
                memcmp(acc.o + i * sc.hd, part.o + i * sc.hd, (size_t)sc.hd * sizeof(float)) == 0 &&
                    acc.m[i] == part.m[i] && acc.l[i] == part.l[i],
                "vector %lld: empty (+) part differs", (long long)i);
        }
    }
    /* Merging with empties interleaved gives the bits of merging without them. */
    const size_t out_bytes = (size_t)(n_vec * sc.hd) * sizeof(float);
    float *a = malloc(out_bytes), *b = malloc(out_bytes);
    cr_assert(a && b);
    const struct hs_attn_partial two[2] = {part.p, ranged.p};
    const struct hs_attn_partial four[4] = {empty.p, part.p, empty.p, ranged.p};
    hs_attn_merge(two, 2, &acc.p, n_vec, sc.hd, a);
    hs_attn_merge(four, 4, &acc.p, n_vec, sc.hd, b);
    cr_assert(memcmp(a, b, out_bytes) == 0, "empty partials changed a merge");
    /* Nothing to merge: zeros. */
    hs_attn_merge(NULL, 0, &acc.p, n_vec, sc.hd, a);
    for (int64_t i = 0; i < n_vec * sc.hd; i++) {
        cr_assert_eq(a[i], 0.0f);
    }
    free(b);
    free(a);
    part_free(&ranged);
    part_free(&empty);
    part_free(&acc);
    part_free(&part);
    scene_free(&sc);
    hs_backend_destroy(be);
}
