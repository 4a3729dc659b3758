/* backends/ops, the layer-sized ops: kv_store and paged attention (also on views of some heads,
 * and the validation of its KV ranges and partials), the dense FFN slot and the MoE expert FFN on
 * every registered backend against the float64 references in tests/ref/. */
#include "backends/cpu/cpu.h"
#include "tests/backends/backend-ops-fixtures.h"

/* ---- kv_store + attention ---- */

struct attn_case {
    int64_t n_head;
    int64_t n_kv_head;
    enum hs_type cache_type;
    bool big; /* a fifth sequence of 66 rows: 76 query rows, past the f32-accumulation bound */
    bool long_seqs; /* instead: two sequences of 70 and 100 new rows over cached positions */
};

/* Several sequences with different n_past / n_new in one batch over scattered blocks: K/V of
 * every position go into the cache through kv_store, then attention runs once. The reference
 * reads the same K/V values (rounded to f16 where the cache is f16). */
/* The CPU backend's SIMD setting the attention tests asked for last (restored after the SIMD
 * on / off comparison below). */
static bool cpu_simd_on = true;

static void check_attention(struct hs_backend *be, struct hs_rng *rng, const struct attn_case *c)
{
    enum { MAX_SEQS = 5, BS = 16, N_BLOCKS = 24, HD = 64, MAX_CTX = 160 };
    static const int32_t n_past_short[MAX_SEQS] = {0, 37, 20, 15, 3};
    static const int32_t n_new_short[MAX_SEQS] = {5, 1, 3, 1, 66};
    /* 8 + 70 and 45 + 100 positions: 23 blocks of 16. Under valgrind (HS_VALGRIND; ~50 times
     * slower) 8 + 70 and 45 + 12: still past the f32 bound, several query and K/V tiles. */
    static const int32_t n_past_long[MAX_SEQS] = {8, 45};
    static const int32_t n_new_long[MAX_SEQS] = {70, 100};
    static const int32_t n_new_long_vg[MAX_SEQS] = {70, 12};
    const int32_t *n_past = c->long_seqs ? n_past_long : n_past_short;
    const int32_t *n_new = !c->long_seqs           ? n_new_short
                           : getenv("HS_VALGRIND") ? n_new_long_vg
                                                   : n_new_long;
    const int N_SEQS = c->long_seqs ? 2 : c->big ? 5 : 4;
    const bool big = c->big || c->long_seqs;
    const int64_t n_head = c->n_head, n_kv = c->n_kv_head;
    const int64_t kv_row = n_kv * HD;

    /* A random permutation of blocks, handed out to sequences in turn. */
    int32_t perm[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) {
        perm[i] = i;
    }
    for (int i = N_BLOCKS - 1; i > 0; i--) {
        int j = (int)(hs_rng_next(rng) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int32_t tables[MAX_SEQS][MAX_CTX / BS];
    struct hs_attn_seq seqs[MAX_SEQS];
    int next_block = 0, n_rows = 0;
    for (int s = 0; s < N_SEQS; s++) {
        const int n_ctx = n_past[s] + n_new[s];
        for (int b = 0; b < (n_ctx + BS - 1) / BS; b++) {
            tables[s][b] = perm[next_block++];
        }
        seqs[s] = (struct hs_attn_seq){
            .n_past = n_past[s], .n_new = n_new[s], .q_row = n_rows, .block_table = tables[s]};
        n_rows += n_new[s];
    }

    const size_t esz = c->cache_type == HS_TYPE_F16 ? 2 : 4;
    const size_t cache_bytes = (size_t)N_BLOCKS * BS * (size_t)kv_row * esz;
    void *kc = calloc(1, cache_bytes), *vc = calloc(1, cache_bytes);
    cr_assert(kc && vc);
    struct hs_tensor tk, tv;
    const int64_t cne[4] = {HD, n_kv, BS, N_BLOCKS};
    cr_assert_eq(hs_tensor_init(&tk, c->cache_type, 4, cne, kc), HS_OK);
    cr_assert_eq(hs_tensor_init(&tv, c->cache_type, 4, cne, vc), HS_OK);

    /* Per sequence: K and V of every position, [n_ctx][n_kv][HD], as the cache holds them. */
    float *kv_k[MAX_SEQS], *kv_v[MAX_SEQS];
    for (int s = 0; s < N_SEQS; s++) {
        const int n_ctx = n_past[s] + n_new[s];
        kv_k[s] = rand_floats(rng, n_ctx * kv_row, -1.0f, 1.0f);
        kv_v[s] = rand_floats(rng, n_ctx * kv_row, -1.0f, 1.0f);
        int32_t *slots = malloc((size_t)n_ctx * sizeof(int32_t));
        for (int p = 0; p < n_ctx; p++) {
            slots[p] = tables[s][p / BS] * BS + p % BS;
        }
        struct hs_tensor src;
        const int64_t sne[3] = {HD, n_kv, n_ctx};
        hs_tensor_init(&src, HS_TYPE_F32, 3, sne, kv_k[s]);
        cr_assert_eq(hs_backend_kv_store(be, &src, &tk, slots), HS_OK);
        src.data = kv_v[s];
        cr_assert_eq(hs_backend_kv_store(be, &src, &tv, slots), HS_OK);
        /* kv_store wrote exactly the (rounded) values at the right slots. */
        for (int p = 0; p < n_ctx; p++) {
            for (int64_t i = 0; i < kv_row; i++) {
                const size_t at = (size_t)slots[p] * (size_t)kv_row + (size_t)i;
                float *kf = &kv_k[s][p * kv_row + i], *vf = &kv_v[s][p * kv_row + i];
                if (c->cache_type == HS_TYPE_F16) {
                    *kf = hs_fp16_to_fp32(hs_fp32_to_fp16(*kf));
                    *vf = hs_fp16_to_fp32(hs_fp32_to_fp16(*vf));
                    cr_assert_eq(hs_fp16_to_fp32(((uint16_t *)kc)[at]), *kf);
                    cr_assert_eq(hs_fp16_to_fp32(((uint16_t *)vc)[at]), *vf);
                } else {
                    cr_assert_eq(((float *)kc)[at], *kf);
                    cr_assert_eq(((float *)vc)[at], *vf);
                }
            }
        }
        free(slots);
    }

    float *q = rand_floats(rng, n_rows * n_head * HD, -1.0f, 1.0f);
    float *out = rand_floats(rng, n_rows * n_head * HD, -1.0f, 1.0f);
    struct hs_tensor tq, to;
    const int64_t qne[3] = {HD, n_head, n_rows};
    hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, q);
    hs_tensor_init(&to, HS_TYPE_F32, 3, qne, out);
    const struct hs_attn_args args = {
        .q = &tq,
        .out = &to,
        .k_cache = &tk,
        .v_cache = &tv,
        .block_size = BS,
        .seqs = seqs,
        .n_seqs = N_SEQS,
        .scale = 1.0f / sqrtf((float)HD),
    };
    cr_assert_eq(hs_backend_attention(be, &args), HS_OK);
    if (strcmp(hs_backend_name(be), "cpu") == 0) {
        /* The SIMD paths (fused f16 accumulation, f32 mad) give the portable path's bits; big
         * batches' tiled kernel uses a vector expf there (checked against the reference below). */
        const size_t out_bytes = (size_t)(n_rows * n_head * HD) * sizeof(float);
        float *o_simd = malloc(out_bytes), *o_port = malloc(out_bytes);
        cr_assert(o_simd && o_port);
        struct hs_attn_args a2 = args;
        struct hs_tensor t2 = to;
        a2.out = &t2;
        t2.data = o_simd;
        hs__cpu_set_simd(be, true);
        cr_assert_eq(hs_backend_attention(be, &a2), HS_OK);
        t2.data = o_port;
        hs__cpu_set_simd(be, false);
        cr_assert_eq(hs_backend_attention(be, &a2), HS_OK);
        hs__cpu_set_simd(be, cpu_simd_on);
        cr_assert(big || memcmp(o_simd, o_port, out_bytes) == 0,
                  "attention %s big %d: SIMD != portable", hs_type_str(c->cache_type), big);
        cr_assert(memcmp(cpu_simd_on ? o_simd : o_port, out, out_bytes) == 0,
                  "attention %s big %d: rerun differs", hs_type_str(c->cache_type), big);
        free(o_port);
        free(o_simd);
    }

    float *kh = malloc(MAX_CTX * HD * sizeof(float)), *vh = malloc(MAX_CTX * HD * sizeof(float));
    float ref[HD];
    /* Small f16 batches keep q and the V sum in f16 (as ggml's one_chunk path); big ones and f32
     * caches work in f32 on the stored values. */
    const double tol = c->cache_type == HS_TYPE_F16 && !big ? 5e-3 : 1e-5;
    for (int s = 0; s < N_SEQS; s++) {
        for (int64_t h = 0; h < n_head; h++) {
            const int64_t kvh = h / (n_head / n_kv);
            const int n_ctx = n_past[s] + n_new[s];
            for (int p = 0; p < n_ctx; p++) {
                memcpy(kh + p * HD, kv_k[s] + p * kv_row + kvh * HD, HD * sizeof(float));
                memcpy(vh + p * HD, kv_v[s] + p * kv_row + kvh * HD, HD * sizeof(float));
            }
            for (int j = 0; j < n_new[s]; j++) {
                const int64_t row = seqs[s].q_row + j;
                hs_ref_attention_row(q + (row * n_head + h) * HD, kh, vh, n_past[s] + j + 1, HD,
                                     args.scale, ref);
                const double err = hs_ref_rel_err(out + (row * n_head + h) * HD, ref, HD);
                cr_assert(err < tol,
                          "attention %s gqa %lld/%lld big %d seq %d head %lld row %d: err %g",
                          hs_type_str(c->cache_type), (long long)n_head, (long long)n_kv, big, s,
                          (long long)h, j, err);
            }
        }
    }
    free(vh);
    free(kh);
    free(out);
    free(q);
    for (int s = 0; s < N_SEQS; s++) {
        free(kv_k[s]);
        free(kv_v[s]);
    }
    free(vc);
    free(kc);
}

Test(backend_ops, attention_paged_gqa_f16_and_f32_caches)
{
    static const struct attn_case cases[] = {
        {8, 4, HS_TYPE_F32, false, false}, {8, 2, HS_TYPE_F32, false, false},
        {8, 4, HS_TYPE_F16, false, false}, {8, 2, HS_TYPE_F16, false, false},
        {8, 8, HS_TYPE_F16, false, false}, {8, 2, HS_TYPE_F16, true, false},
        {8, 4, HS_TYPE_F32, true, false},  {9, 3, HS_TYPE_F16, false, true},
        {8, 8, HS_TYPE_F32, false, true},  {8, 1, HS_TYPE_F16, false, true},
    };
    struct hs_rng rng;
    hs_rng_seed(&rng, 4242);
    const bool vg = getenv("HS_VALGRIND") != NULL;
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            /* under valgrind one thread count a backend, each count on one of them (the CPU
             * backend gets 3, an uneven split of every shape) */
            if (vg && ti != ((size_t)reg + 2) % HS_ARRAY_LEN(thread_counts)) {
                continue;
            }
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t c = 0; c < HS_ARRAY_LEN(cases); c++) {
                check_attention(be, &rng, &cases[c]);
            }
            if (strcmp(hs_backend_name(be), "cpu") == 0) {
                /* The portable path too (SIMD off), wherever the machine has SIMD. */
                hs__cpu_set_simd(be, false);
                cpu_simd_on = false;
                for (size_t c = 0; c < HS_ARRAY_LEN(cases); c++) {
                    check_attention(be, &rng, &cases[c]);
                }
            }
            cpu_simd_on = true;
            hs_backend_destroy(be);
        }
    }
}

/* A view of KV heads [kh0, kh0 + nkh) of a cache, as hs_attn_args allows. */
static struct hs_tensor head_view(const struct hs_tensor *c, int64_t kh0, int64_t nkh)
{
    struct hs_tensor v = *c;
    v.data = (char *)c->data + (size_t)kh0 * c->nb[1];
    v.ne[1] = nkh;
    return v;
}

/* Attention over views of some KV heads (and their query heads) gives the bits of the whole
 * op for those heads, normalised and as partials, on every backend and both precision paths;
 * kv_store into a view writes only its heads; views with a gap between blocks are refused. */
Test(backend_ops, attention_and_kv_store_on_views_of_some_heads)
{
    enum { HD = 32, N_HEAD = 8, N_KV = 4, G = N_HEAD / N_KV, BS = 8, N_BLOCKS = 6, N_ROWS = 3 };
    struct hs_rng rng;
    hs_rng_seed(&rng, 99);
    const int64_t n_cache = (int64_t)N_BLOCKS * BS * N_KV * HD;
    uint16_t *kc = rand_f16(&rng, n_cache, -1.0f, 1.0f), *vc = rand_f16(&rng, n_cache, -1.0f, 1.0f);
    float *q = rand_floats(&rng, N_ROWS * N_HEAD * HD, -1.0f, 1.0f);
    const size_t o_floats = (size_t)N_ROWS * N_HEAD * HD;
    float *full = malloc(o_floats * 4), *part = malloc(o_floats * 4);
    float *ml_full = malloc(8 * N_ROWS * N_HEAD), *ml_part = malloc(8 * N_ROWS * N_HEAD);
    cr_assert(full && part && ml_full && ml_part);
    struct hs_tensor tk, tv, tq, to;
    const int64_t cne[4] = {HD, N_KV, BS, N_BLOCKS};
    const int64_t qne[3] = {HD, N_HEAD, N_ROWS};
    hs_tensor_init(&tk, HS_TYPE_F16, 4, cne, kc);
    hs_tensor_init(&tv, HS_TYPE_F16, 4, cne, vc);
    hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, q);
    /* a decode row over 37 positions and a two-row prefill over 20 */
    static const int32_t tab0[5] = {4, 0, 5, 2, 1}, tab1[3] = {3, 1, 0};
    const struct hs_attn_seq seqs[2] = {
        {.n_past = 36, .n_new = 1, .q_row = 0, .block_table = tab0},
        {.n_past = 18, .n_new = 2, .q_row = 1, .block_table = tab1, .kv_begin = 3},
    };
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend *be = make_backend(reg, 2);
        for (int pass = 0; pass < 4; pass++) {
            const bool partials = pass & 1;
            const int32_t n_batch_rows = pass & 2 ? 100 : 0; /* the tiled f32 path */
            struct hs_tensor tm, tl;
            hs_tensor_init_2d(&tm, HS_TYPE_F32, N_HEAD, N_ROWS, ml_full);
            hs_tensor_init_2d(&tl, HS_TYPE_F32, N_HEAD, N_ROWS, ml_full + N_ROWS * N_HEAD);
            hs_tensor_init(&to, HS_TYPE_F32, 3, qne, full);
            struct hs_attn_args a = {.q = &tq,
                                     .out = &to,
                                     .k_cache = &tk,
                                     .v_cache = &tv,
                                     .block_size = BS,
                                     .seqs = seqs,
                                     .n_seqs = 2,
                                     .scale = 0.17f,
                                     .m = partials ? &tm : NULL,
                                     .l = partials ? &tl : NULL,
                                     .n_batch_rows = n_batch_rows};
            cr_assert_eq(hs_backend_attention(be, &a), HS_OK);
            /* KV heads [1, 3): query heads [2, 6), into the same places of other buffers */
            memset(part, 0, o_floats * 4);
            memset(ml_part, 0, 8 * N_ROWS * N_HEAD);
            struct hs_tensor vk = head_view(&tk, 1, 2), vv = head_view(&tv, 1, 2);
            struct hs_tensor vq = tq, vo, vm, vl;
            vq.data = q + G * HD;
            vq.ne[1] = 2 * G;
            hs_tensor_init(&vo, HS_TYPE_F32, 3, qne, part);
            vo.data = part + G * HD;
            vo.ne[1] = 2 * G;
            hs_tensor_init_2d(&vm, HS_TYPE_F32, N_HEAD, N_ROWS, ml_part + G);
            hs_tensor_init_2d(&vl, HS_TYPE_F32, N_HEAD, N_ROWS, ml_part + N_ROWS * N_HEAD + G);
            vm.ne[0] = vl.ne[0] = 2 * G;
            a.q = &vq;
            a.out = &vo;
            a.k_cache = &vk;
            a.v_cache = &vv;
            a.m = partials ? &vm : NULL;
            a.l = partials ? &vl : NULL;
            a.n_batch_rows = n_batch_rows > 0 ? n_batch_rows : N_ROWS;
            cr_assert_eq(hs_backend_attention(be, &a), HS_OK, "%s", hs_backend_name(be));
            for (int r = 0; r < N_ROWS; r++) {
                for (int h = G; h < 3 * G; h++) {
                    const size_t at = ((size_t)r * N_HEAD + (size_t)h) * HD;
                    cr_assert(memcmp(full + at, part + at, HD * 4) == 0,
                              "%s pass %d row %d head %d: the view's bits differ",
                              hs_backend_name(be), pass, r, h);
                    if (partials) {
                        const size_t mi = (size_t)r * N_HEAD + (size_t)h;
                        cr_assert(ml_full[mi] == ml_part[mi]);
                        cr_assert(ml_full[N_ROWS * N_HEAD + mi] == ml_part[N_ROWS * N_HEAD + mi]);
                    }
                }
            }
            /* a view whose blocks are not right after each other is no cache */
            vk.nb[3] += 2;
            cr_assert_eq(hs_backend_attention(be, &a), HS_E_INVAL);
        }
        /* kv_store into KV head 2 alone: slot 9 of that head, nothing else */
        uint16_t *before = malloc((size_t)n_cache * 2);
        cr_assert_not_null(before);
        memcpy(before, kc, (size_t)n_cache * 2);
        float row[HD];
        for (int d = 0; d < HD; d++) {
            row[d] = (float)d * 0.25f;
        }
        struct hs_tensor src, vk = head_view(&tk, 2, 1);
        const int64_t sne[3] = {HD, 1, 1};
        hs_tensor_init(&src, HS_TYPE_F32, 3, sne, row);
        const int32_t slot = 9;
        cr_assert_eq(hs_backend_kv_store(be, &src, &vk, &slot), HS_OK);
        for (int64_t i = 0; i < n_cache; i++) {
            const int64_t at = (int64_t)slot * N_KV * HD + 2 * HD;
            if (i >= at && i < at + HD) {
                cr_assert_eq(hs_fp16_to_fp32(kc[i]), row[i - at]);
            } else {
                cr_assert_eq(kc[i], before[i]);
            }
        }
        memcpy(kc, before, (size_t)n_cache * 2);
        free(before);
        hs_backend_destroy(be);
    }
    free(ml_part);
    free(ml_full);
    free(part);
    free(full);
    free(q);
    free(vc);
    free(kc);
}

/* The CPU backend's f16 decode path (fused per chunk of positions with SIMD, the query heads of a
 * GQA group together) against its portable path, bit for bit: head sizes the fused path
 * specialises (64, 128), one it runs generically (192) and one it leaves to the old loop (32);
 * contexts across blocks and chunks of positions (1 to 300), KV ranges, scores wide enough for
 * frequent new maxima; normalised and partials; GQA groups of 3 (whole, or halved to 2 + 1 when
 * one sequence leaves too few work items for the threads), 4, 7 (4 + 3) and 1. */
static void check_f16_decode(int n_head, int n_kv, int n_seqs, int64_t hd, struct hs_rng *rng,
                             struct hs_backend *be);

Test(backend_ops, attention_f16_decode_simd_matches_portable_bit_for_bit)
{
    static const int64_t hds[] = {64, 128, 192, 32};
    static const int heads[][3] = {{6, 2, 4}, {6, 2, 1}, {8, 2, 4},
                                   {8, 2, 1}, {7, 1, 4}, {4, 4, 2}};
    struct hs_rng rng;
    hs_rng_seed(&rng, 515);
    struct hs_backend_params bp = hs_backend_default_params();
    bp.n_threads = 2;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("cpu", &bp, &be), HS_OK);
    for (size_t hi = 0; hi < HS_ARRAY_LEN(hds); hi++) {
        for (size_t c = 0; c < HS_ARRAY_LEN(heads); c++) {
            check_f16_decode(heads[c][0], heads[c][1], heads[c][2], hds[hi], &rng, be);
        }
    }
    hs_backend_destroy(be);
}

static void check_f16_decode(int n_head, int n_kv, int n_seqs, int64_t hd, struct hs_rng *rng,
                             struct hs_backend *be)
{
    enum { BS = 16, N_BLOCKS = 20, N_SEQS = 4, N_ROWS = 6, MAX_HEAD = 8 };
    const int N_HEAD = n_head, N_KV = n_kv;
    cr_assert(n_head <= MAX_HEAD && n_seqs <= N_SEQS);
    int32_t table[N_BLOCKS];
    for (int b = 0; b < N_BLOCKS; b++) {
        table[b] = b * 7 % N_BLOCKS; /* scattered */
    }
    /* one position; past a chunk (128); 300 from position 5; 3 rows cut at 30 */
    const struct hs_attn_seq seqs[N_SEQS] = {
        {.n_past = 130, .n_new = 1, .q_row = 1, .block_table = table},
        {.n_past = 0, .n_new = 1, .q_row = 0, .block_table = table},
        {.n_past = 299, .n_new = 1, .q_row = 2, .block_table = table, .kv_begin = 5},
        {.n_past = 40, .n_new = 3, .q_row = 3, .block_table = table, .kv_end = 30},
    };
    const int64_t n_cache = (int64_t)N_BLOCKS * BS * N_KV * hd;
    uint16_t *kc = rand_f16(rng, n_cache, -1.0f, 1.0f);
    uint16_t *vc = rand_f16(rng, n_cache, -4.0f, 4.0f);
    float *q = rand_floats(rng, N_ROWS * N_HEAD * hd, -2.0f, 2.0f);
    const size_t o_floats = (size_t)N_ROWS * N_HEAD * hd;
    float *out[2] = {malloc(o_floats * 4), malloc(o_floats * 4)};
    float *ml[2] = {malloc(8 * N_ROWS * N_HEAD), malloc(8 * N_ROWS * N_HEAD)};
    cr_assert(out[0] && out[1] && ml[0] && ml[1]);
    struct hs_tensor tk, tv, tq, to, tm, tl;
    const int64_t cne[4] = {hd, N_KV, BS, N_BLOCKS};
    const int64_t qne[3] = {hd, N_HEAD, N_ROWS};
    hs_tensor_init(&tk, HS_TYPE_F16, 4, cne, kc);
    hs_tensor_init(&tv, HS_TYPE_F16, 4, cne, vc);
    hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, q);
    for (int partials = 0; partials < 2; partials++) {
        for (int simd = 0; simd < 2; simd++) {
            memset(out[simd], 0xff, o_floats * 4);
            memset(ml[simd], 0xff, 8 * N_ROWS * N_HEAD);
            hs_tensor_init(&to, HS_TYPE_F32, 3, qne, out[simd]);
            hs_tensor_init_2d(&tm, HS_TYPE_F32, N_HEAD, N_ROWS, ml[simd]);
            hs_tensor_init_2d(&tl, HS_TYPE_F32, N_HEAD, N_ROWS, ml[simd] + N_ROWS * N_HEAD);
            const struct hs_attn_args a = {.q = &tq,
                                           .out = &to,
                                           .k_cache = &tk,
                                           .v_cache = &tv,
                                           .block_size = BS,
                                           .seqs = seqs,
                                           .n_seqs = n_seqs,
                                           .scale = 0.5f,
                                           .m = partials ? &tm : NULL,
                                           .l = partials ? &tl : NULL};
            hs__cpu_set_simd(be, simd);
            cr_assert_eq(hs_backend_attention(be, &a), HS_OK);
        }
        cr_assert(memcmp(out[0], out[1], o_floats * 4) == 0,
                  "hd %lld heads %d / %d, %d seqs, partials %d: SIMD != portable", (long long)hd,
                  n_head, n_kv, n_seqs, partials);
        cr_assert(!partials || memcmp(ml[0], ml[1], 8 * N_ROWS * N_HEAD) == 0,
                  "hd %lld heads %d / %d: SIMD m / l != portable", (long long)hd, n_head, n_kv);
    }
    /* and the portable path agrees with the float64 reference (f16 sums: loosely) */
    for (int h = 0; h < N_HEAD; h++) {
        const int64_t kvh = h / (N_HEAD / N_KV);
        float *kh = malloc(300 * (size_t)hd * 4), *vh = malloc(300 * (size_t)hd * 4);
        float *ref = malloc((size_t)hd * 4);
        cr_assert(kh && vh && ref);
        const struct hs_attn_seq *sq = &seqs[0]; /* the whole causal prefix, one row */
        for (int p = 0; p <= sq->n_past; p++) {
            const int64_t slot = hs_kv_slot(table, BS, p);
            for (int64_t d = 0; d < hd; d++) {
                kh[p * hd + d] = hs_fp16_to_fp32(kc[(slot * N_KV + kvh) * hd + d]);
                vh[p * hd + d] = hs_fp16_to_fp32(vc[(slot * N_KV + kvh) * hd + d]);
            }
        }
        hs_ref_attention_row(q + (sq->q_row * N_HEAD + h) * hd, kh, vh, sq->n_past + 1, hd, 0.5f,
                             ref);
        float *o = out[1] + (sq->q_row * N_HEAD + h) * hd;
        const float l = ml[1][N_ROWS * N_HEAD + sq->q_row * N_HEAD + h];
        for (int64_t d = 0; d < hd; d++) {
            o[d] /= l;
        }
        cr_assert(hs_ref_rel_err(o, ref, hd) < 5e-3, "hd %lld head %d: err %g", (long long)hd, h,
                  hs_ref_rel_err(o, ref, hd));
        free(ref);
        free(vh);
        free(kh);
    }
    free(ml[1]);
    free(ml[0]);
    free(out[1]);
    free(out[0]);
    free(q);
    free(vc);
    free(kc);
}

/* ---- ffn ---- */

/* Runs the FFN through the backend's own slot, or through backend.c's default composition
 * (matmul + swiglu + matmul) by hiding the slot behind a copy of the iface. */
static hs_status run_ffn(struct hs_backend *be, const struct hs_ffn_args *a, bool use_default)
{
    if (!use_default) {
        return hs_backend_ffn(be, a);
    }
    const struct hs_backend_iface *orig = be->iface;
    struct hs_backend_iface no_ffn = *orig;
    no_ffn.ffn = NULL;
    be->iface = &no_ffn;
    hs_status st = hs_backend_ffn(be, a);
    be->iface = orig;
    return st;
}

Test(backend_ops, ffn_slot_and_default_match_reference_and_each_other)
{
    static const enum hs_type types[][3] = {
        {HS_TYPE_F32, HS_TYPE_F32, HS_TYPE_F32},
        {HS_TYPE_Q8_0, HS_TYPE_Q8_0, HS_TYPE_Q8_0},
        {HS_TYPE_Q4_K, HS_TYPE_Q4_K, HS_TYPE_Q6_K},
        {HS_TYPE_Q4_K, HS_TYPE_Q8_0, HS_TYPE_F16},  /* gate and up with different vec_dot_types */
        {HS_TYPE_Q5_1, HS_TYPE_Q5_0, HS_TYPE_Q4_1}, /* Q8_1 and Q8_0 activations */
    };
    static const int64_t rows[] = {1, 5, 17};
    struct hs_rng rng;
    hs_rng_seed(&rng, 606);
    const int64_t n_embd = 256, n_ff = 512;
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t k = 0; k < HS_ARRAY_LEN(types); k++) {
                const int64_t n_rows = rows[(k + ti) % HS_ARRAY_LEN(rows)];
                struct weights wg, wu, wd;
                make_weights(&wg, &rng, types[k][0], n_embd, n_ff);
                make_weights(&wu, &rng, types[k][1], n_embd, n_ff);
                make_weights(&wd, &rng, types[k][2], n_ff, n_embd);
                float *x = rand_floats(&rng, n_embd * n_rows, -1.0f, 1.0f);
                float *y[2];
                y[0] = rand_floats(&rng, n_embd * n_rows, -1.0f, 1.0f);
                y[1] = rand_floats(&rng, n_embd * n_rows, -1.0f, 1.0f);
                float *sg = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                float *su = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                float *rg = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                float *ru = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                float *ref = malloc((size_t)(n_embd * n_rows) * sizeof(float));
                hs_ref_matmul(wg.deq, x, rg, n_ff, n_embd, n_rows);
                hs_ref_matmul(wu.deq, x, ru, n_ff, n_embd, n_rows);
                hs_ref_swiglu(rg, ru, rg, n_ff * n_rows);
                hs_ref_matmul(wd.deq, rg, ref, n_embd, n_ff, n_rows);
                const uint64_t wbytes = n_ff * (hs_type_row_size(types[k][0], n_embd) +
                                                hs_type_row_size(types[k][1], n_embd)) +
                                        n_embd * hs_type_row_size(types[k][2], n_ff);
                double tol = 0;
                for (int i = 0; i < 3; i++) {
                    tol = HS_MAX(tol, 2 * matmul_tol(types[k][i]));
                }
                for (int def = 0; def < 2; def++) {
                    struct hs_tensor tx, ty, tsg, tsu;
                    hs_tensor_init_2d(&tx, HS_TYPE_F32, n_embd, n_rows, x);
                    hs_tensor_init_2d(&ty, HS_TYPE_F32, n_embd, n_rows, y[def]);
                    hs_tensor_init_2d(&tsg, HS_TYPE_F32, n_ff, n_rows, sg);
                    hs_tensor_init_2d(&tsu, HS_TYPE_F32, n_ff, n_rows, su);
                    const struct hs_ffn_args a = {.w_gate = &wg.t,
                                                  .w_up = &wu.t,
                                                  .w_down = &wd.t,
                                                  .x = &tx,
                                                  .y = &ty,
                                                  .scratch_gate = &tsg,
                                                  .scratch_up = &tsu};
                    hs_backend_reset_stats(be);
                    cr_assert_eq(run_ffn(be, &a, def), HS_OK);
                    struct hs_backend_stats st;
                    hs_backend_get_stats(be, &st);
                    cr_assert_eq(st.n_ops[HS_OP_FFN], 1);
                    cr_assert_eq(st.weight_bytes_read, wbytes);
                    const double err = hs_ref_rel_err(y[def], ref, n_embd * n_rows);
                    cr_assert(err < tol, "ffn %s/%s/%s default %d rows %lld: err %g",
                              hs_type_str(types[k][0]), hs_type_str(types[k][1]),
                              hs_type_str(types[k][2]), def, (long long)n_rows, err);
                }
                /* Same kernels, same order of operations: the slot and the default agree. */
                cr_assert_eq(memcmp(y[0], y[1], (size_t)(n_embd * n_rows) * sizeof(float)), 0,
                             "ffn slot and default differ (%s)", hs_type_str(types[k][0]));
                free(ref);
                free(ru);
                free(rg);
                free(su);
                free(sg);
                free(y[1]);
                free(y[0]);
                free(x);
                free_weights(&wd);
                free_weights(&wu);
                free_weights(&wg);
            }
            hs_backend_destroy(be);
        }
    }
}

/* ---- moe_ffn ---- */

/* Runs the expert FFN through the backend's own slot, or through backend.c's default (each group
 * through the ffn path) by hiding the slot. */
static hs_status run_moe_ffn(struct hs_backend *be, const struct hs_moe_ffn_args *a,
                             bool use_default)
{
    if (!use_default) {
        return hs_backend_moe_ffn(be, a);
    }
    const struct hs_backend_iface *orig = be->iface;
    struct hs_backend_iface no_moe = *orig;
    no_moe.moe_ffn = NULL;
    be->iface = &no_moe;
    hs_status st = hs_backend_moe_ffn(be, a);
    be->iface = orig;
    return st;
}

Test(backend_ops, moe_ffn_slot_and_default_match_reference_and_dense_ffn)
{
    static const enum hs_type types[][3] = {
        {HS_TYPE_F32, HS_TYPE_F32, HS_TYPE_F32},
        {HS_TYPE_Q8_0, HS_TYPE_Q8_0, HS_TYPE_Q8_0},
        {HS_TYPE_Q4_K, HS_TYPE_Q4_K, HS_TYPE_Q6_K},
    };
    /* Groups as routing makes them: decode (one row each), uneven prefill groups with an empty
     * one, and a single group. Experts in no particular order. */
    static const struct {
        int32_t n_groups;
        int32_t experts[5];
        int32_t rows[5];
    } cases[] = {
        {4, {5, 0, 3, 1}, {1, 1, 1, 1}},
        {5, {2, 4, 0, 1, 5}, {7, 0, 3, 12, 1}},
        {1, {3}, {9}},
    };
    struct hs_rng rng;
    hs_rng_seed(&rng, 4242);
    const int64_t n_embd = 256, n_ff = 256, n_expert = 6;
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t k = 0; k < HS_ARRAY_LEN(types); k++) {
                /* Expert stacks: n_expert matrices back to back, as a GGUF 3-D tensor. */
                struct weights wg, wu, wd;
                make_weights(&wg, &rng, types[k][0], n_embd, n_ff * n_expert);
                make_weights(&wu, &rng, types[k][1], n_embd, n_ff * n_expert);
                make_weights(&wd, &rng, types[k][2], n_ff, n_embd * n_expert);
                struct hs_tensor sg3 = wg.t, su3 = wu.t, sd3 = wd.t;
                sg3.ne[1] = n_ff, sg3.ne[2] = n_expert, sg3.nb[2] = sg3.nb[1] * (size_t)n_ff;
                su3.ne[1] = n_ff, su3.ne[2] = n_expert, su3.nb[2] = su3.nb[1] * (size_t)n_ff;
                sd3.ne[1] = n_embd, sd3.ne[2] = n_expert, sd3.nb[2] = sd3.nb[1] * (size_t)n_embd;
                for (size_t c = 0; c < HS_ARRAY_LEN(cases); c++) {
                    int32_t begin[6] = {0};
                    for (int32_t g = 0; g < cases[c].n_groups; g++) {
                        begin[g + 1] = begin[g] + cases[c].rows[g];
                    }
                    const int64_t n_rows = begin[cases[c].n_groups];
                    float *x = rand_floats(&rng, n_embd * n_rows, -1.0f, 1.0f);
                    float *y[3];
                    for (int i = 0; i < 3; i++) {
                        y[i] = rand_floats(&rng, n_embd * n_rows, -1.0f, 1.0f);
                    }
                    float *sg = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                    float *su = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                    float *rg = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                    float *ru = malloc((size_t)(n_ff * n_rows) * sizeof(float));
                    float *ref = malloc((size_t)(n_embd * n_rows) * sizeof(float));
                    for (int32_t g = 0; g < cases[c].n_groups; g++) {
                        const int64_t e = cases[c].experts[g], r0 = begin[g];
                        const int64_t n = cases[c].rows[g];
                        if (n == 0) {
                            continue;
                        }
                        hs_ref_matmul(wg.deq + e * n_ff * n_embd, x + r0 * n_embd, rg, n_ff, n_embd,
                                      n);
                        hs_ref_matmul(wu.deq + e * n_ff * n_embd, x + r0 * n_embd, ru, n_ff, n_embd,
                                      n);
                        hs_ref_swiglu(rg, ru, rg, n_ff * n);
                        hs_ref_matmul(wd.deq + e * n_embd * n_ff, rg, ref + r0 * n_embd, n_embd,
                                      n_ff, n);
                    }
                    int64_t active = 0;
                    for (int32_t g = 0; g < cases[c].n_groups; g++) {
                        active += cases[c].rows[g] > 0;
                    }
                    const uint64_t wbytes =
                        (uint64_t)active * (n_ff * (hs_type_row_size(types[k][0], n_embd) +
                                                    hs_type_row_size(types[k][1], n_embd)) +
                                            n_embd * hs_type_row_size(types[k][2], n_ff));
                    double tol = 0;
                    for (int i = 0; i < 3; i++) {
                        tol = HS_MAX(tol, 2 * matmul_tol(types[k][i]));
                    }
                    struct hs_tensor tx, tsg, tsu;
                    hs_tensor_init_2d(&tx, HS_TYPE_F32, n_embd, n_rows, x);
                    hs_tensor_init_2d(&tsg, HS_TYPE_F32, n_ff, n_rows, sg);
                    hs_tensor_init_2d(&tsu, HS_TYPE_F32, n_ff, n_rows, su);
                    for (int def = 0; def < 2; def++) {
                        struct hs_tensor ty;
                        hs_tensor_init_2d(&ty, HS_TYPE_F32, n_embd, n_rows, y[def]);
                        const struct hs_moe_ffn_args a = {.w_gate = &sg3,
                                                          .w_up = &su3,
                                                          .w_down = &sd3,
                                                          .x = &tx,
                                                          .y = &ty,
                                                          .experts = cases[c].experts,
                                                          .row_begin = begin,
                                                          .n_groups = cases[c].n_groups,
                                                          .scratch_gate = &tsg,
                                                          .scratch_up = &tsu};
                        hs_backend_reset_stats(be);
                        cr_assert_eq(run_moe_ffn(be, &a, def), HS_OK);
                        struct hs_backend_stats st;
                        hs_backend_get_stats(be, &st);
                        cr_assert_eq(st.n_ops[HS_OP_MOE_FFN], 1);
                        cr_assert_eq(st.weight_bytes_read, wbytes,
                                     "only the experts with rows are read");
                        const double err = hs_ref_rel_err(y[def], ref, n_embd * n_rows);
                        cr_assert(err < tol, "moe_ffn %s case %zu default %d: err %g",
                                  hs_type_str(types[k][0]), c, def, err);
                    }
                    /* Each group through the dense FFN op on its expert's planes. */
                    for (int32_t g = 0; g < cases[c].n_groups; g++) {
                        const int64_t e = cases[c].experts[g], r0 = begin[g];
                        const int64_t n = cases[c].rows[g];
                        if (n == 0) {
                            continue;
                        }
                        struct hs_tensor pg = hs_tensor_plane(&sg3, e);
                        struct hs_tensor pu = hs_tensor_plane(&su3, e);
                        struct hs_tensor pd = hs_tensor_plane(&sd3, e);
                        struct hs_tensor gx, gy, gsg, gsu;
                        hs_tensor_init_2d(&gx, HS_TYPE_F32, n_embd, n, x + r0 * n_embd);
                        hs_tensor_init_2d(&gy, HS_TYPE_F32, n_embd, n, y[2] + r0 * n_embd);
                        hs_tensor_init_2d(&gsg, HS_TYPE_F32, n_ff, n, sg);
                        hs_tensor_init_2d(&gsu, HS_TYPE_F32, n_ff, n, su);
                        const struct hs_ffn_args f = {.w_gate = &pg,
                                                      .w_up = &pu,
                                                      .w_down = &pd,
                                                      .x = &gx,
                                                      .y = &gy,
                                                      .scratch_gate = &gsg,
                                                      .scratch_up = &gsu};
                        cr_assert_eq(hs_backend_ffn(be, &f), HS_OK);
                    }
                    const size_t bytes = (size_t)(n_embd * n_rows) * sizeof(float);
                    cr_assert_eq(memcmp(y[0], y[1], bytes), 0, "moe_ffn slot and default differ");
                    cr_assert_eq(memcmp(y[0], y[2], bytes), 0,
                                 "moe_ffn differs from the dense ffn on each group (%s case %zu)",
                                 hs_type_str(types[k][0]), c);
                    free(ref);
                    free(ru);
                    free(rg);
                    free(su);
                    free(sg);
                    for (int i = 0; i < 3; i++) {
                        free(y[i]);
                    }
                    free(x);
                }
                free_weights(&wd);
                free_weights(&wu);
                free_weights(&wg);
            }
            hs_backend_destroy(be);
        }
    }
}

Test(backend_ops, moe_ffn_rejects_bad_groups_and_leaves_outputs)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    struct hs_backend *be = make_backend(0, 2);
    const int64_t n_embd = 64, n_ff = 32, n_expert = 3, n_rows = 4;
    struct weights wg, wu, wd;
    make_weights(&wg, &rng, HS_TYPE_F32, n_embd, n_ff * n_expert);
    make_weights(&wu, &rng, HS_TYPE_F32, n_embd, n_ff * n_expert);
    make_weights(&wd, &rng, HS_TYPE_F32, n_ff, n_embd * n_expert);
    struct hs_tensor g3 = wg.t, u3 = wu.t, d3 = wd.t;
    g3.ne[1] = n_ff, g3.ne[2] = n_expert, g3.nb[2] = g3.nb[1] * (size_t)n_ff;
    u3.ne[1] = n_ff, u3.ne[2] = n_expert, u3.nb[2] = u3.nb[1] * (size_t)n_ff;
    d3.ne[1] = n_embd, d3.ne[2] = n_expert, d3.nb[2] = d3.nb[1] * (size_t)n_embd;
    float *x = rand_floats(&rng, n_embd * n_rows, -1.0f, 1.0f);
    float *y = rand_floats(&rng, n_embd * n_rows, -1.0f, 1.0f);
    float *y0 = malloc((size_t)(n_embd * n_rows) * sizeof(float));
    memcpy(y0, y, (size_t)(n_embd * n_rows) * sizeof(float));
    float *sg = malloc((size_t)(n_ff * n_rows) * sizeof(float));
    float *su = malloc((size_t)(n_ff * n_rows) * sizeof(float));
    struct hs_tensor tx, ty, tsg, tsu;
    hs_tensor_init_2d(&tx, HS_TYPE_F32, n_embd, n_rows, x);
    hs_tensor_init_2d(&ty, HS_TYPE_F32, n_embd, n_rows, y);
    hs_tensor_init_2d(&tsg, HS_TYPE_F32, n_ff, n_rows, sg);
    hs_tensor_init_2d(&tsu, HS_TYPE_F32, n_ff, n_rows, su);
    static const struct {
        int32_t n_groups;
        int32_t experts[3];
        int32_t begin[4];
    } bad[] = {
        {1, {3}, {0, 2}},       /* no such expert */
        {1, {-1}, {0, 2}},      /* negative expert */
        {2, {1, 1}, {0, 1, 2}}, /* an expert twice */
        {2, {0, 1}, {0, 3, 2}}, /* decreasing bounds */
        {1, {0}, {0, 5}},       /* past the rows */
        {1, {0}, {-1, 2}},      /* before the rows */
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        struct hs_moe_ffn_args a = {.w_gate = &g3,
                                    .w_up = &u3,
                                    .w_down = &d3,
                                    .x = &tx,
                                    .y = &ty,
                                    .experts = bad[i].experts,
                                    .row_begin = bad[i].begin,
                                    .n_groups = bad[i].n_groups,
                                    .scratch_gate = &tsg,
                                    .scratch_up = &tsu};
        cr_assert_eq(hs_backend_moe_ffn(be, &a), HS_E_INVAL, "case %zu", i);
    }
    /* Experts whose shapes disagree: up with one expert fewer. */
    struct hs_tensor u2 = u3;
    u2.ne[2] = 2;
    const int32_t e0[1] = {0}, b0[2] = {0, 2};
    struct hs_moe_ffn_args a = {.w_gate = &g3,
                                .w_up = &u2,
                                .w_down = &d3,
                                .x = &tx,
                                .y = &ty,
                                .experts = e0,
                                .row_begin = b0,
                                .n_groups = 1,
                                .scratch_gate = &tsg,
                                .scratch_up = &tsu};
    cr_assert_eq(hs_backend_moe_ffn(be, &a), HS_E_INVAL);
    cr_assert_eq(memcmp(y, y0, (size_t)(n_embd * n_rows) * sizeof(float)), 0);
    struct hs_backend_stats st;
    hs_backend_get_stats(be, &st);
    cr_assert_eq(st.n_ops[HS_OP_MOE_FFN], 0, "failed calls are not counted");
    free(su);
    free(sg);
    free(y0);
    free(y);
    free(x);
    free_weights(&wd);
    free_weights(&wu);
    free_weights(&wg);
    hs_backend_destroy(be);
}

/* The KV range and partials fields of attention: m and l together and shaped [n_rows][n_head]
 * f32, ranges inside the sequence, n_batch_rows not negative; block ids are checked only for the
 * positions the range reads. Rejected calls leave out, m and l untouched. */
enum attn_ml {
    ML_NONE,
    ML_BOTH,
    ML_M_ONLY,
    ML_L_ONLY,
    ML_M_COLS, /* m of n_head + 1 columns */
    ML_L_ROWS, /* l of n_rows + 1 rows */
    ML_M_F16,
};

struct attn_bad_case {
    const char *what;
    const int32_t *table;
    int32_t kv_begin, kv_end;
    enum attn_ml ml;
    int32_t n_batch_rows;
    hs_status want;
};

Test(backend_ops, attention_ranges_and_partials_are_validated)
{
    /* One sequence of 30 + 2 positions over two blocks of 16; block ids out of range (-1, 9)
     * sit in the block that a range leaves out. */
    static const int32_t table_ok[2] = {1, 3};
    static const int32_t table_bad0[2] = {-1, 2};
    static const int32_t table_bad1[2] = {1, 9};
    static const struct attn_bad_case cases[] = {
        {"whole prefix", table_ok, 0, 0, ML_NONE, 0, HS_OK},
        {"partials", table_ok, 0, 0, ML_BOTH, 0, HS_OK},
        {"range and partials", table_ok, 5, 20, ML_BOTH, 0, HS_OK},
        {"empty range", table_ok, 7, 7, ML_BOTH, 0, HS_OK},
        {"empty range at the end", table_ok, 32, 0, ML_BOTH, 0, HS_OK},
        {"range ends at n_ctx", table_ok, 0, 32, ML_NONE, 0, HS_OK},
        {"big batch", table_ok, 3, 0, ML_BOTH, 100, HS_OK},
        {"m alone", table_ok, 0, 0, ML_M_ONLY, 0, HS_E_INVAL},
        {"l alone", table_ok, 0, 0, ML_L_ONLY, 0, HS_E_INVAL},
        {"m columns", table_ok, 0, 0, ML_M_COLS, 0, HS_E_INVAL},
        {"l rows", table_ok, 0, 0, ML_L_ROWS, 0, HS_E_INVAL},
        {"m f16", table_ok, 0, 0, ML_M_F16, 0, HS_E_INVAL},
        {"kv_begin negative", table_ok, -1, 0, ML_BOTH, 0, HS_E_INVAL},
        {"kv_end negative", table_ok, 0, -1, ML_BOTH, 0, HS_E_INVAL},
        {"kv_end past n_ctx", table_ok, 0, 33, ML_BOTH, 0, HS_E_INVAL},
        {"kv_end before kv_begin", table_ok, 9, 8, ML_BOTH, 0, HS_E_INVAL},
        {"kv_begin past n_ctx", table_ok, 33, 0, ML_BOTH, 0, HS_E_INVAL},
        {"n_batch_rows negative", table_ok, 0, 0, ML_NONE, -1, HS_E_INVAL},
        {"bad block 0, whole prefix", table_bad0, 0, 0, ML_NONE, 0, HS_E_INVAL},
        {"bad block 0, range from it", table_bad0, 15, 0, ML_BOTH, 0, HS_E_INVAL},
        {"bad block 0, range past it", table_bad0, 16, 0, ML_BOTH, 0, HS_OK},
        {"bad block 1, range into it", table_bad1, 0, 17, ML_BOTH, 0, HS_E_INVAL},
        {"bad block 1, range before it", table_bad1, 0, 16, ML_BOTH, 0, HS_OK},
        {"bad block 1, empty range in it", table_bad1, 20, 20, ML_BOTH, 0, HS_OK},
    };
    enum { HD = 64, N_HEAD = 4, N_KV = 2, BS = 16, N_BLOCKS = 4, N_ROWS = 2 };
    struct hs_rng rng;
    hs_rng_seed(&rng, 5);
    const int64_t n_cache = (int64_t)N_BLOCKS * BS * N_KV * HD;
    uint16_t *cache = malloc((size_t)n_cache * sizeof(uint16_t));
    cr_assert_not_null(cache);
    for (int64_t i = 0; i < n_cache; i++) {
        cache[i] = hs_fp32_to_fp16(hs_rng_range(&rng, -1.0f, 1.0f));
    }
    float *q = rand_floats(&rng, N_ROWS * N_HEAD * HD, -1.0f, 1.0f);
    float *out = rand_floats(&rng, N_ROWS * N_HEAD * HD, -1.0f, 1.0f);
    float *ml = rand_floats(&rng, 2 * (N_ROWS + 1) * (N_HEAD + 1), -1.0f, 1.0f);
    const size_t out_bytes = (size_t)(N_ROWS * N_HEAD * HD) * sizeof(float);
    const size_t ml_bytes = (size_t)(2 * (N_ROWS + 1) * (N_HEAD + 1)) * sizeof(float);
    float *out0 = malloc(out_bytes), *ml0 = malloc(ml_bytes);
    cr_assert(out0 && ml0);
    struct hs_tensor tc, tq, to;
    const int64_t cne[4] = {HD, N_KV, BS, N_BLOCKS};
    const int64_t qne[3] = {HD, N_HEAD, N_ROWS};
    cr_assert_eq(hs_tensor_init(&tc, HS_TYPE_F16, 4, cne, cache), HS_OK);
    cr_assert_eq(hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, q), HS_OK);
    cr_assert_eq(hs_tensor_init(&to, HS_TYPE_F32, 3, qne, out), HS_OK);
    float *m_data = ml, *l_data = ml + (N_ROWS + 1) * (N_HEAD + 1);
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend *be = make_backend(reg, 2);
        for (size_t c = 0; c < HS_ARRAY_LEN(cases); c++) {
            const struct attn_bad_case *k = &cases[c];
            struct hs_tensor tm, tl;
            cr_assert_eq(hs_tensor_init_2d(&tm, HS_TYPE_F32, N_HEAD, N_ROWS, m_data), HS_OK);
            cr_assert_eq(hs_tensor_init_2d(&tl, HS_TYPE_F32, N_HEAD, N_ROWS, l_data), HS_OK);
            if (k->ml == ML_M_COLS) {
                cr_assert_eq(hs_tensor_init_2d(&tm, HS_TYPE_F32, N_HEAD + 1, N_ROWS, m_data),
                             HS_OK);
            } else if (k->ml == ML_L_ROWS) {
                cr_assert_eq(hs_tensor_init_2d(&tl, HS_TYPE_F32, N_HEAD, N_ROWS + 1, l_data),
                             HS_OK);
            } else if (k->ml == ML_M_F16) {
                cr_assert_eq(hs_tensor_init_2d(&tm, HS_TYPE_F16, N_HEAD, N_ROWS, m_data), HS_OK);
            }
            const bool has_m = k->ml != ML_NONE && k->ml != ML_L_ONLY;
            const bool has_l = k->ml != ML_NONE && k->ml != ML_M_ONLY;
            const struct hs_attn_seq seq = {.n_past = 30,
                                            .n_new = N_ROWS,
                                            .q_row = 0,
                                            .block_table = k->table,
                                            .kv_begin = k->kv_begin,
                                            .kv_end = k->kv_end};
            const struct hs_attn_args aa = {.q = &tq,
                                            .out = &to,
                                            .k_cache = &tc,
                                            .v_cache = &tc,
                                            .block_size = BS,
                                            .seqs = &seq,
                                            .n_seqs = 1,
                                            .scale = 0.125f,
                                            .m = has_m ? &tm : NULL,
                                            .l = has_l ? &tl : NULL,
                                            .n_batch_rows = k->n_batch_rows};
            memcpy(out0, out, out_bytes);
            memcpy(ml0, ml, ml_bytes);
            const hs_status st = hs_backend_attention(be, &aa);
            cr_assert_eq(st, k->want, "%s: %s: %s, want %s", hs_backend_name(be), k->what,
                         hs_status_str(st), hs_status_str(k->want));
            if (st != HS_OK) {
                cr_assert(memcmp(out0, out, out_bytes) == 0 && memcmp(ml0, ml, ml_bytes) == 0,
                          "%s: %s: outputs touched", hs_backend_name(be), k->what);
            }
        }
        hs_backend_destroy(be);
    }
    free(ml0);
    free(out0);
    free(ml);
    free(out);
    free(q);
    free(cache);
}

/* The CPU backend's rope kernels (AVX2 + FMA) against its portable loops, bit for bit: both
 * modes, rotated widths with and without a tail past the 8-lane steps, partial rotation, one
 * row (decode) and a prompt's rows. */
Test(backend_ops, rope_simd_matches_portable_bit_for_bit)
{
    static const int n_rots[] = {64, 32, 20, 2};
    static const int64_t rows[] = {1, 37};
    const int64_t hd = 64, n_head = 5;
    struct hs_rng rng;
    hs_rng_seed(&rng, 516);
    struct hs_backend_params bp = hs_backend_default_params();
    bp.n_threads = 2;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("cpu", &bp, &be), HS_OK);
    for (int mode = 0; mode < HS_ROPE_MODE_COUNT; mode++) {
        for (size_t ri = 0; ri < HS_ARRAY_LEN(n_rots); ri++) {
            for (size_t ni = 0; ni < HS_ARRAY_LEN(rows); ni++) {
                const int64_t nr = rows[ni];
                const int64_t n = hd * n_head * nr;
                const struct hs_rope_params p = {.mode = (enum hs_rope_mode)mode,
                                                 .n_rot = n_rots[ri],
                                                 .freq_base = 10000.0f,
                                                 .freq_scale = ri == 1 ? 0.25f : 1.0f};
                int32_t pos[37];
                for (int64_t r = 0; r < nr; r++) {
                    pos[r] = (int32_t)(hs_rng_next(&rng) % 5000);
                }
                float *x[2];
                x[0] = rand_floats(&rng, n, -3.0f, 3.0f);
                x[1] = malloc((size_t)n * sizeof(float));
                cr_assert(x[1]);
                memcpy(x[1], x[0], (size_t)n * sizeof(float));
                const int64_t ne[3] = {hd, n_head, nr};
                for (int simd = 0; simd < 2; simd++) {
                    struct hs_tensor tx;
                    hs_tensor_init(&tx, HS_TYPE_F32, 3, ne, x[simd]);
                    hs__cpu_set_simd(be, simd);
                    cr_assert_eq(hs_backend_rope(be, &tx, pos, &p), HS_OK);
                }
                cr_assert(memcmp(x[0], x[1], (size_t)n * sizeof(float)) == 0,
                          "%s n_rot %d rows %lld: SIMD != portable", hs_rope_mode_str(p.mode),
                          p.n_rot, (long long)nr);
                free(x[1]);
                free(x[0]);
            }
        }
    }
    hs_backend_destroy(be);
}
