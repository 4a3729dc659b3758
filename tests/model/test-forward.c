/* The forward pass on models written by hs_mkmodel_write: every weight type against the same
 * model in F32, every architecture, and the invariances the engine relies on (batching several
 * sequences, chunked prefill and scattered KV blocks change nothing). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf/gguf.h"
#include "model/model.h"

#define N_PROMPT 12

struct loaded {
    struct hs_model *m;
    struct hs_context *ctx;
    char path[256];
};

static void load_mk(struct loaded *l, enum hs_arch arch, enum hs_type t, int32_t n_batch,
                    int32_t n_seq)
{
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    p.arch = arch;
    p.n_embd = 256;
    p.n_head = 4;
    p.n_head_kv = 2;
    p.n_ff = 512;
    p.n_layer = 2;
    p.n_vocab = 600;
    p.wtype = t;
    p.seed = 1234;
    snprintf(l->path, sizeof(l->path), "/tmp/hs-test-forward-%d-%s-%d.gguf", (int)getpid(),
             hs_type_str(t), (int)arch);
    struct hs_error err = {0};
    cr_assert_eq(hs_mkmodel_write(&p, l->path, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_model_load(l->path, &l->m, &err), HS_OK, "%s", err.message);
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = 128;
    cp.n_batch = n_batch;
    cp.n_seq_max = n_seq;
    cp.kv_type = HS_TYPE_F32;
    cp.backend_params.n_threads = 2;
    cr_assert_eq(hs_context_create(l->m, &cp, &l->ctx, &err), HS_OK, "%s", err.message);
}

static void unload(struct loaded *l)
{
    hs_context_destroy(l->ctx);
    hs_model_destroy(l->m);
    unlink(l->path);
}

static void prompt(hs_token *toks, int n, uint64_t seed)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, seed);
    toks[0] = 1;
    for (int i = 1; i < n; i++) {
        toks[i] = (hs_token)(3 + hs_rng_next(&rng) % 590);
    }
}

/* Normalised RMS difference of a against the reference b. */
static double nrmse(const float *a, const float *b, int n)
{
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void run_prompt(struct loaded *l, const hs_token *toks, int n, float *out)
{
    int32_t table[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    struct hs_forward_seq fs = {toks, n, 0, table, 1, 0};
    cr_assert_eq(hs_model_forward(l->ctx, &fs, 1), HS_OK);
    memcpy(out, hs_context_logits(l->ctx), sizeof(float) * 600);
}

static void check_type(enum hs_arch arch, enum hs_type t, double tol)
{
    static float ref[600], got[600];
    hs_token toks[N_PROMPT];
    prompt(toks, N_PROMPT, 7);
    struct loaded f32 = {0}, q = {0};
    load_mk(&f32, arch, HS_TYPE_F32, 64, 1);
    load_mk(&q, arch, t, 64, 1);
    run_prompt(&f32, toks, N_PROMPT, ref);
    run_prompt(&q, toks, N_PROMPT, got);
    double e = nrmse(got, ref, 600);
    fprintf(stderr, "%s %s: normalised error %.3g against f32\n", hs_arch_str(arch), hs_type_str(t),
            e);
    cr_assert(e < tol, "%s %s: normalised error %.3g against f32 (tolerance %g)", hs_arch_str(arch),
              hs_type_str(t), e, tol);
    cr_assert(e > 0 || t == HS_TYPE_F32, "%s: identical to f32, so the type was not applied",
              hs_type_str(t));
    unload(&f32);
    unload(&q);
}

Test(forward, every_weight_type_tracks_f32, .timeout = 120)
{
    const struct {
        enum hs_type t;
        double tol;
    } cases[] = {
        {HS_TYPE_F16, 2e-3},  {HS_TYPE_BF16, 2e-2}, {HS_TYPE_Q8_0, 2e-2}, {HS_TYPE_Q6_K, 4e-2},
        {HS_TYPE_Q5_K, 8e-2}, {HS_TYPE_Q4_K, 0.15}, {HS_TYPE_Q5_0, 0.1},  {HS_TYPE_Q4_0, 0.25},
        {HS_TYPE_Q5_1, 0.1},  {HS_TYPE_Q4_1, 0.2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_type(HS_ARCH_LLAMA, cases[i].t, cases[i].tol);
    }
}

/* llama-quantize's Q4_K_M on a 16-layer model whose rows of 64 fit no K-quant except
 * ffn_down's (256): its use_more_bits layers are 0, 1, 4, 7, 10, 13, 14, 15. */
Test(forward, q4_k_writes_the_types_llama_quantize_picks_for_q4_k_m)
{
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    p.n_layer = 16;
    p.n_ff = 256;
    p.wtype = HS_TYPE_Q4_K;
    p.tied_output = true;
    char path[128];
    snprintf(path, sizeof(path), "/tmp/hs-test-mix-%d.gguf", (int)getpid());
    struct hs_error err = {0};
    cr_assert_eq(hs_mkmodel_write(&p, path, &err), HS_OK, "%s", err.message);
    struct hs_gguf *g;
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s", err.message);
    cr_assert_null(hs_gguf_find_tensor(g, "output.weight"));
    /* The tied output's Q6_K falls back to Q8_0 at 64 columns. */
    cr_assert_eq(hs_gguf_find_tensor(g, "token_embd.weight")->type, HS_TYPE_Q8_0);
    static const bool more[16] = {1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1};
    for (int il = 0; il < 16; il++) {
        static const char *const q4k[] = {"attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"};
        char name[64];
        for (size_t i = 0; i < HS_ARRAY_LEN(q4k); i++) {
            snprintf(name, sizeof(name), "blk.%d.%s.weight", il, q4k[i]);
            cr_assert_eq(hs_gguf_find_tensor(g, name)->type, HS_TYPE_Q5_0, "%s", name);
        }
        snprintf(name, sizeof(name), "blk.%d.attn_v.weight", il);
        cr_assert_eq(hs_gguf_find_tensor(g, name)->type, more[il] ? HS_TYPE_Q8_0 : HS_TYPE_Q5_0,
                     "%s", name);
        snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", il);
        cr_assert_eq(hs_gguf_find_tensor(g, name)->type, more[il] ? HS_TYPE_Q6_K : HS_TYPE_Q4_K,
                     "%s", name);
    }
    hs_gguf_close(g);
    unlink(path);
}

Test(forward, qwen2_and_qwen3_architectures_run, .timeout = 120)
{
    check_type(HS_ARCH_QWEN2, HS_TYPE_Q8_0, 2e-2);
    check_type(HS_ARCH_QWEN3, HS_TYPE_Q8_0, 2e-2);
}

Test(forward, batching_chunking_and_block_layout_change_nothing, .timeout = 120)
{
    static float alone[3][600], logits[600];
    hs_token a[N_PROMPT], b[N_PROMPT - 5], c[N_PROMPT + 9];
    prompt(a, N_PROMPT, 1);
    prompt(b, N_PROMPT - 5, 2);
    prompt(c, N_PROMPT + 9, 3);
    const hs_token *seqs[3] = {a, b, c};
    const int lens[3] = {N_PROMPT, N_PROMPT - 5, N_PROMPT + 9};

    struct loaded l = {0};
    load_mk(&l, HS_ARCH_QWEN2, HS_TYPE_F32, 64, 3);
    for (int s = 0; s < 3; s++) {
        run_prompt(&l, seqs[s], lens[s], alone[s]);
    }
    /* All three in one batch, each in scattered blocks of its own (block size 16). */
    int32_t tables[3][2] = {{5, 2}, {7, 0}, {3, 6}};
    struct hs_forward_seq fs[3];
    for (int s = 0; s < 3; s++) {
        fs[s] = (struct hs_forward_seq){seqs[s], lens[s], 0, tables[s], 1, 0};
    }
    cr_assert_eq(hs_model_forward(l.ctx, fs, 3), HS_OK);
    cr_assert_eq(hs_context_n_logit_rows(l.ctx), 3);
    for (int s = 0; s < 3; s++) {
        double e = nrmse(hs_context_logits(l.ctx) + 600 * s, alone[s], 600);
        cr_assert(e < 1e-5, "sequence %d in a batch differs from alone: %.3g", s, e);
    }
    /* The third sequence again, as chunks of 5 tokens then single tokens. */
    int32_t table[2] = {4, 1};
    int n_past = 0;
    while (n_past < lens[2]) {
        int n = n_past < 15 ? 5 : 1;
        struct hs_forward_seq one = {c + n_past, n, n_past, table, 1, 0};
        cr_assert_eq(hs_model_forward(l.ctx, &one, 1), HS_OK);
        n_past += n;
    }
    memcpy(logits, hs_context_logits(l.ctx), sizeof(logits));
    double e = nrmse(logits, alone[2], 600);
    cr_assert(e < 1e-5, "chunked prefill differs: %.3g", e);
    unload(&l);
}

Test(forward, bad_batches_are_rejected)
{
    struct loaded l = {0};
    load_mk(&l, HS_ARCH_LLAMA, HS_TYPE_F32, 16, 1);
    hs_token toks[20] = {1, 2, 3};
    int32_t table[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    struct hs_forward_seq too_many = {toks, 20, 0, table, 1, 0};
    cr_assert_eq(hs_model_forward(l.ctx, &too_many, 1), HS_E_INVAL, "more tokens than n_batch");
    hs_token bad = 600;
    struct hs_forward_seq oov = {&bad, 1, 0, table, 1, 0};
    cr_assert_eq(hs_model_forward(l.ctx, &oov, 1), HS_E_INVAL, "token id out of range");
    struct hs_forward_seq past_ctx = {toks, 3, 127, table, 1, 0};
    cr_assert_eq(hs_model_forward(l.ctx, &past_ctx, 1), HS_E_INVAL, "beyond n_ctx");
    int32_t bad_table[1] = {9999};
    struct hs_forward_seq bad_block = {toks, 3, 0, bad_table, 1, 0};
    cr_assert_eq(hs_model_forward(l.ctx, &bad_block, 1), HS_E_INVAL, "block id out of range");
    unload(&l);
}

Test(forward, mkmodel_rejects_bad_shapes)
{
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    struct hs_error err = {0};
    p.n_head = 3; /* 64 does not split into 3 heads */
    cr_assert_eq(hs_mkmodel_write(&p, "/tmp/hs-never-written.gguf", &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "n_head"), "%s", err.message);
    cr_assert_eq(access("/tmp/hs-never-written.gguf", F_OK), -1);
}

/* A long prompt in one batch (the tiled attention path for >= 64 query rows) against the same
 * prompt fed 5 tokens at a time (the small-batch path). */
Test(forward, long_prompt_in_one_batch_equals_small_chunks, .timeout = 120)
{
    enum { N = 120 }; /* of the 128-token context */
    static float whole[600];
    hs_token toks[N];
    prompt(toks, N, 11);
    struct loaded l = {0};
    load_mk(&l, HS_ARCH_QWEN3, HS_TYPE_F32, 256, 1);
    int32_t table[8] = {6, 0, 3, 7, 1, 5, 2, 4};
    struct hs_forward_seq fs = {toks, N, 0, table, 1, 0};
    cr_assert_eq(hs_model_forward(l.ctx, &fs, 1), HS_OK);
    memcpy(whole, hs_context_logits(l.ctx), sizeof(whole));
    for (int n_past = 0; n_past < N; n_past += 5) {
        struct hs_forward_seq part = {toks + n_past, 5, n_past, table, 1, 0};
        cr_assert_eq(hs_model_forward(l.ctx, &part, 1), HS_OK);
    }
    double e = nrmse(hs_context_logits(l.ctx), whole, 600);
    cr_assert(e < 1e-5, "one batch vs chunks of 5: %.3g", e);
    unload(&l);
}

/* qwen2vl is qwen2 with M-RoPE sections; a text prompt's positions are the same in every
 * section, so the same weights must give the same logits as qwen2. */
Test(forward, qwen2vl_text_prompt_matches_qwen2, .timeout = 120)
{
    static float ref[600], got[600];
    hs_token toks[N_PROMPT];
    prompt(toks, N_PROMPT, 11);
    struct loaded base = {0}, vl = {0};
    load_mk(&base, HS_ARCH_QWEN2, HS_TYPE_F32, 64, 1);
    load_mk(&vl, HS_ARCH_QWEN2VL, HS_TYPE_F32, 64, 1);
    run_prompt(&base, toks, N_PROMPT, ref);
    run_prompt(&vl, toks, N_PROMPT, got);
    cr_assert_lt(nrmse(got, ref, 600), 1e-6, "nrmse %g", nrmse(got, ref, 600));
    unload(&base);
    unload(&vl);
}
