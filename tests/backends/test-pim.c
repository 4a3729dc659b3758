/* backends/pim: the backend's attention, computed rank by rank and merged, against the CPU
 * backend (the same bits where every head of a sequence sits on one rank; within the merge
 * bound of tests/attention/test-merge.c where heads spill over ranks) and the float64
 * reference; its simulated time; its configuration and buffers. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/backend.h"
#include "backends/pim/pim-impl.h"
#include "tests/ref/ref-ops.h"

/* tests/attention/test-merge.c's bounds against the float64 reference (hs_ref_rel_err of one
 * (row, head) vector): 1e-5 where the accumulation is f32 (f32 caches, and big batches), 5e-3
 * for f16 V sums on the per-row path; a merged result against the monolithic op gets twice the
 * bound (both are within it of the reference). */
#define TOL_F32 1e-5
#define TOL_F16 5e-3

enum { BS = 8, N_BLOCKS = 64, HD = 32, MAX_SEQS = 6, MAX_CTX = 96, BIG = 80 };

static struct hs_backend *make(const char *name, const char *config)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 1;
    p.pin_threads = false;
    p.config = config;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create(name, &p, &be), HS_OK, "%s", name);
    return be;
}

/* A config file of `text` (freed by the caller with unlink). */
static void write_config(char *path, size_t n, const char *text)
{
    static int seq;
    snprintf(path, n, "/tmp/hs-test-pim-%d-%d.cfg", (int)getpid(), seq++);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

struct scene {
    enum hs_type type;
    int64_t n_head, n_kv, n_rows;
    int n_seqs;
    int32_t tables[MAX_SEQS][MAX_CTX / BS];
    struct hs_attn_seq seqs[MAX_SEQS];
    void *kc, *vc;
    struct hs_tensor tk, tv, tq;
    float *q, *k, *v; /* k, v: [N_BLOCKS * BS][n_kv][HD] the values the cache holds */
};

/* Decodes and prefill rows over scattered blocks; K/V random, rounded as the cache holds them. */
static void scene_init(struct scene *sc, enum hs_type type, int64_t n_head, int64_t n_kv,
                       const int32_t *n_past, const int32_t *n_new, int n_seqs, uint64_t seed)
{
    memset(sc, 0, sizeof(*sc));
    struct hs_rng rng;
    hs_rng_seed(&rng, seed);
    sc->type = type;
    sc->n_head = n_head;
    sc->n_kv = n_kv;
    sc->n_seqs = n_seqs;
    int32_t perm[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) {
        perm[i] = i;
    }
    for (int i = N_BLOCKS - 1; i > 0; i--) {
        const int j = (int)(hs_rng_next(&rng) % (uint64_t)(i + 1));
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int next = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int n_ctx = n_past[s] + n_new[s];
        for (int b = 0; b < (n_ctx + BS - 1) / BS; b++) {
            sc->tables[s][b] = perm[next++];
        }
        sc->seqs[s] = (struct hs_attn_seq){.n_past = n_past[s],
                                           .n_new = n_new[s],
                                           .q_row = (int32_t)sc->n_rows,
                                           .block_table = sc->tables[s]};
        sc->n_rows += n_new[s];
    }
    const size_t n_slot_vals = (size_t)N_BLOCKS * BS * (size_t)(n_kv * HD);
    const size_t esz = type == HS_TYPE_F16 ? 2 : 4;
    sc->kc = calloc(n_slot_vals, esz);
    sc->vc = calloc(n_slot_vals, esz);
    sc->k = malloc(n_slot_vals * sizeof(float));
    sc->v = malloc(n_slot_vals * sizeof(float));
    sc->q = malloc((size_t)(sc->n_rows * n_head * HD) * sizeof(float));
    cr_assert(sc->kc && sc->vc && sc->k && sc->v && sc->q);
    for (size_t i = 0; i < n_slot_vals; i++) {
        float kf = hs_rng_range(&rng, -1.0f, 1.0f), vf = hs_rng_range(&rng, -1.0f, 1.0f);
        if (type == HS_TYPE_F16) {
            ((uint16_t *)sc->kc)[i] = hs_fp32_to_fp16(kf);
            ((uint16_t *)sc->vc)[i] = hs_fp32_to_fp16(vf);
            kf = hs_fp16_to_fp32(((uint16_t *)sc->kc)[i]);
            vf = hs_fp16_to_fp32(((uint16_t *)sc->vc)[i]);
        } else {
            ((float *)sc->kc)[i] = kf;
            ((float *)sc->vc)[i] = vf;
        }
        sc->k[i] = kf;
        sc->v[i] = vf;
    }
    for (int64_t i = 0; i < sc->n_rows * n_head * HD; i++) {
        sc->q[i] = hs_rng_range(&rng, -1.0f, 1.0f);
    }
    const int64_t cne[4] = {HD, n_kv, BS, N_BLOCKS};
    hs_tensor_init(&sc->tk, type, 4, cne, sc->kc);
    hs_tensor_init(&sc->tv, type, 4, cne, sc->vc);
    const int64_t qne[3] = {HD, n_head, sc->n_rows};
    hs_tensor_init(&sc->tq, HS_TYPE_F32, 3, qne, sc->q);
}

static void scene_free(struct scene *sc)
{
    free(sc->kc);
    free(sc->vc);
    free(sc->k);
    free(sc->v);
    free(sc->q);
}

/* out (and m, l when partials) of be over the scene. */
static void run(struct hs_backend *be, const struct scene *sc, int32_t n_batch_rows, bool partials,
                float *out, float *m, float *l)
{
    struct hs_tensor to, tm, tl;
    const int64_t one[3] = {HD, sc->n_head, sc->n_rows}, two[2] = {sc->n_head, sc->n_rows};
    hs_tensor_init(&to, HS_TYPE_F32, 3, one, out);
    hs_tensor_init(&tm, HS_TYPE_F32, 2, two, m);
    hs_tensor_init(&tl, HS_TYPE_F32, 2, two, l);
    const struct hs_attn_args a = {
        .q = &sc->tq,
        .out = &to,
        .k_cache = &sc->tk,
        .v_cache = &sc->tv,
        .block_size = BS,
        .seqs = sc->seqs,
        .n_seqs = sc->n_seqs,
        .scale = 1.0f / sqrtf((float)HD),
        .m = partials ? &tm : NULL,
        .l = partials ? &tl : NULL,
        .n_batch_rows = n_batch_rows,
    };
    cr_assert_eq(hs_backend_attention(be, &a), HS_OK);
}

static const int32_t past[MAX_SEQS] = {0, 37, 20, 60, 3, 80};
static const int32_t news[MAX_SEQS] = {5, 1, 3, 1, 9, 1};

/* Pim against CPU: bits equal, or within 2 * bound and within bound of the reference. */
static void compare(const char *config, bool exact)
{
    static const struct {
        int64_t n_head, n_kv;
        enum hs_type type;
        int32_t batch;
    } cases[] = {
        {8, 8, HS_TYPE_F16, 0},     {8, 2, HS_TYPE_F16, 0},  {8, 4, HS_TYPE_F32, 0},
        {12, 3, HS_TYPE_F16, 0},    {8, 1, HS_TYPE_F32, 0},  {8, 2, HS_TYPE_F16, BIG},
        {16, 16, HS_TYPE_F32, BIG}, {64, 8, HS_TYPE_F16, 0},
    };
    struct hs_backend *cpu = make("cpu", NULL);
    struct hs_backend *pim = make("pim", config);
    for (size_t c = 0; c < HS_ARRAY_LEN(cases); c++) {
        struct scene sc;
        scene_init(&sc, cases[c].type, cases[c].n_head, cases[c].n_kv, past, news, MAX_SEQS,
                   100 + c);
        const size_t nv = (size_t)(sc.n_rows * sc.n_head);
        float *o1 = calloc(nv * HD, 4), *o2 = calloc(nv * HD, 4);
        float *m1 = calloc(nv, 4), *m2 = calloc(nv, 4), *l1 = calloc(nv, 4), *l2 = calloc(nv, 4);
        const bool big = cases[c].batch >= 64;
        const double tol = cases[c].type == HS_TYPE_F16 && !big ? TOL_F16 : TOL_F32;
        for (int partials = 0; partials < 2; partials++) {
            run(cpu, &sc, cases[c].batch, partials, o1, m1, l1);
            run(pim, &sc, cases[c].batch, partials, o2, m2, l2);
            if (exact) {
                cr_assert_eq(memcmp(o1, o2, nv * HD * 4), 0, "case %zu partials %d: bits differ", c,
                             partials);
                cr_assert(!partials ||
                          (memcmp(m1, m2, nv * 4) == 0 && memcmp(l1, l2, nv * 4) == 0));
                continue;
            }
            if (partials) {
                /* every position counted once: the softmax denominators agree after rescaling */
                for (size_t i = 0; i < nv; i++) {
                    const double a = (double)l1[i] * exp((double)m1[i] - m2[i]);
                    cr_assert(fabs(a - l2[i]) <= 1e-4 * fabs(a), "case %zu vec %zu: l %g vs %g", c,
                              i, a, (double)l2[i]);
                }
                continue;
            }
            float ref[HD];
            float *kh = malloc(MAX_CTX * HD * 4), *vh = malloc(MAX_CTX * HD * 4);
            for (int s = 0; s < MAX_SEQS; s++) {
                for (int64_t h = 0; h < sc.n_head; h++) {
                    const int64_t kvh = h / (sc.n_head / sc.n_kv);
                    const int n_ctx = past[s] + news[s];
                    for (int p = 0; p < n_ctx; p++) {
                        const int64_t slot = hs_kv_slot(sc.tables[s], BS, p);
                        memcpy(kh + p * HD, sc.k + (slot * sc.n_kv + kvh) * HD, HD * 4);
                        memcpy(vh + p * HD, sc.v + (slot * sc.n_kv + kvh) * HD, HD * 4);
                    }
                    for (int j = 0; j < news[s]; j++) {
                        const int64_t at = (sc.seqs[s].q_row + j) * sc.n_head + h;
                        hs_ref_attention_row(sc.q + at * HD, kh, vh, past[s] + j + 1, HD,
                                             1.0f / sqrtf((float)HD), ref);
                        const double e_ref = hs_ref_rel_err(o2 + at * HD, ref, HD);
                        const double e_cpu = hs_ref_rel_err(o2 + at * HD, o1 + at * HD, HD);
                        cr_assert(e_ref < tol && e_cpu < 2 * tol,
                                  "case %zu seq %d head %lld row %d: err %g ref, %g cpu", c, s,
                                  (long long)h, j, e_ref, e_cpu);
                    }
                }
            }
            free(kh);
            free(vh);
        }
        free(o1);
        free(o2);
        free(m1);
        free(m2);
        free(l1);
        free(l2);
        scene_free(&sc);
    }
    struct hs_pim_stats st;
    hs_pim_backend_get_stats(pim, &st);
    cr_assert_gt(st.n_inner_calls, st.n_attn, "rank by rank: more inner calls than ops");
    if (exact) {
        cr_assert_eq(st.n_spilled, 0);
    } else {
        cr_assert_gt(st.n_spilled, 0);
    }
    hs_backend_destroy(pim);
    hs_backend_destroy(cpu);
}

Test(pim, attention_equals_the_cpu_bits_when_heads_sit_on_one_rank)
{
    compare(NULL, true);
    char path[128];
    write_config(path, sizeof(path), "preset = rpim\n");
    compare(path, true);
    unlink(path);
}

Test(pim, attention_spilled_over_ranks_is_within_the_merge_bound)
{
    char path[128];
    /* 7 positions per rank: every sequence but the first spills, over up to 12 ranks */
    write_config(path, sizeof(path), "rank_tokens_max = 7\n");
    compare(path, false);
    unlink(path);
}

/* One decode sequence at n_past positions: the charge of one call. */
static double decode_charge(struct hs_backend *be, int32_t n_past, int64_t n_head, int64_t n_kv)
{
    const int32_t p[1] = {n_past}, n[1] = {1};
    struct scene sc;
    scene_init(&sc, HS_TYPE_F16, n_head, n_kv, p, n, 1, 7);
    float *o = calloc((size_t)(n_head * HD), 4);
    struct hs_backend_stats a, b;
    hs_backend_get_stats(be, &a);
    run(be, &sc, 0, false, o, NULL, NULL);
    hs_backend_get_stats(be, &b);
    free(o);
    scene_free(&sc);
    return b.sim_time_s - a.sim_time_s;
}

Test(pim, sim_time_is_positive_and_monotone_in_kv_length)
{
    struct hs_backend *pim = make("pim", NULL);
    const struct hs_pim_config *c = hs_pim_backend_config(pim);
    double prev = 0.0;
    for (int32_t n = 0; n < MAX_CTX; n += 9) {
        const double t = decode_charge(pim, n, 8, 8);
        cr_assert_gt(t, prev, "n_past %d: %g s after %g s", n, t, prev);
        prev = t;
    }
    /* One MHA decode at 95 past positions, 8 heads each alone on its rank over 8 chips: the
     * slowest rank streams 96 positions of one head; the link hides behind it... or not. */
    struct hs_pim_rank_load l;
    memset(&l, 0, sizeof(l));
    hs_pim_load_add(c, &l, 0, 8, 96, HD, 2, 1);
    const double want = hs_pim_layer_time_s(c, &l, 1, hs_pim_link_bytes(1, 1, 8, 8, HD, 2), NULL);
    cr_assert(fabs(decode_charge(pim, 95, 8, 8) - want) <= 1e-12 * want);
    /* rank-level units stream through the pins: slower than the banks */
    char path[128];
    write_config(path, sizeof(path), "preset = rpim\n");
    struct hs_backend *rp = make("pim", path);
    unlink(path);
    cr_assert_gt(decode_charge(rp, 95, 8, 8), decode_charge(pim, 95, 8, 8));
    hs_backend_destroy(rp);
    hs_backend_destroy(pim);
}

Test(pim, a_bad_config_fails_the_create)
{
    char path[128];
    write_config(path, sizeof(path), "channels = 16\nbogus = 1\n");
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = 1;
    p.config = path;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("pim", &p, &be), HS_E_FORMAT);
    cr_assert_null(be);
    unlink(path);
    cr_assert_eq(hs_backend_create("pim", &p, &be), HS_E_IO);
    cr_assert_null(be);
    /* the CPU backend ignores a config */
    cr_assert_eq(hs_backend_create("cpu", &p, &be), HS_OK);
    hs_backend_destroy(be);
}

Test(pim, host_preset_measures_this_machine)
{
    char path[128];
    write_config(path, sizeof(path), "preset = host\n");
    struct hs_backend *be = make("pim", path);
    unlink(path);
    const struct hs_pim_config *c = hs_pim_backend_config(be);
    cr_assert_eq(c->level, HS_PIM_LEVEL_HOST);
    cr_assert_gt(c->host_gbs, 0.0);
    /* one decode of 64 positions x 8 heads x 32 dims x K, V in f16, over the measured bandwidth
     * plus the link (the host is one rank that cannot overlap it) */
    const double want = 64.0 * 8 * HD * 2 * 2 / (c->host_gbs * 1e9) +
                        hs_pim_link_bytes(1, 1, 8, 8, HD, 2) / (c->link_gbs * 1e9);
    const double got = decode_charge(be, 63, 8, 8);
    cr_assert(fabs(got - want) <= 1e-9 * want, "%g vs %g", got, want);
    hs_backend_destroy(be);
}

/* Caches in the backend's own buffer, laid out as the model context does ([layer][K, V]):
 * layer l's heads sit one rankset further than layer l - 1's. */
Test(pim, layers_of_its_buffer_rotate_across_ranksets)
{
    struct hs_backend *pim = make("pim", NULL);
    const int32_t p[1] = {40}, n[1] = {1};
    struct scene sc;
    scene_init(&sc, HS_TYPE_F16, 8, 8, p, n, 1, 9);
    const size_t layer_bytes = hs_tensor_nbytes(&sc.tk);
    struct hs_backend_buffer *buf = NULL;
    cr_assert_eq(hs_backend_buffer_alloc(pim, 3 * 2 * layer_bytes, &buf), HS_OK);
    char *base = hs_backend_buffer_base(buf);
    float *o = calloc(8 * HD, 4);
    int32_t seen[3][8];
    for (int layer = 0; layer < 3; layer++) {
        memcpy(base + 2 * layer_bytes * layer, sc.kc, layer_bytes);
        memcpy(base + 2 * layer_bytes * layer + layer_bytes, sc.vc, layer_bytes);
        struct scene view = sc;
        view.tk.data = base + 2 * layer_bytes * layer;
        view.tv.data = base + 2 * layer_bytes * layer + layer_bytes;
        struct hs_pim_stats before, after;
        hs_pim_backend_get_stats(pim, &before);
        run(pim, &view, 0, false, o, NULL, NULL);
        hs_pim_backend_get_stats(pim, &after);
        int k = 0;
        for (int r = 0; r < 64; r++) {
            if (after.rank_hits[r] > before.rank_hits[r]) {
                cr_assert_lt(k, 8);
                seen[layer][k++] = r;
            }
        }
        cr_assert_eq(k, 8, "MHA: 8 heads on 8 ranks");
    }
    /* the same ranks one rankset on per layer (as sets: sorted orders may differ) */
    for (int layer = 1; layer < 3; layer++) {
        for (int k = 0; k < 8; k++) {
            const int32_t want = ((seen[0][k] / 16 + layer) % 4) * 16 + seen[0][k] % 16;
            bool found = false;
            for (int i = 0; i < 8; i++) {
                found = found || seen[layer][i] == want;
            }
            cr_assert(found, "layer %d: rank %d of layer 0 should move to %d", layer,
                      seen[0][k], want);
        }
    }
    free(o);
    hs_backend_buffer_free(buf);
    scene_free(&sc);
    hs_backend_destroy(pim);
}
