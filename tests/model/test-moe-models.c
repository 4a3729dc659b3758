/* Mixture-of-experts models written by hs_mkmodel_write, every MoE architecture and router
 * option, against the naive float64 forward pass of tests/ref/ref-model.c; Hunyuan-Large's
 * cross-layer attention (one K/V copy per group of layers, batching invariance); expert
 * placement through the registry. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "tests/ref/ref-model.h"

#define N_PROMPT 13

struct loaded {
    struct hs_model *m;
    struct hs_context *ctx;
    char path[256];
};

static void write_model(const struct hs_mkmodel_params *p, char *path, size_t n, const char *tag)
{
    snprintf(path, n, "/tmp/hs-test-moe-%d-%s.gguf", (int)getpid(), tag);
    struct hs_error err = {0};
    cr_assert_eq(hs_mkmodel_write(p, path, &err), HS_OK, "%s: %s", tag, err.message);
}

static void load(struct loaded *l, const struct hs_mkmodel_params *p, const char *tag,
                 int32_t n_batch, const char *placement)
{
    write_model(p, l->path, sizeof(l->path), tag);
    struct hs_error err = {0};
    cr_assert_eq(hs_model_load(l->path, &l->m, &err), HS_OK, "%s: %s", tag, err.message);
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = 128;
    cp.n_batch = n_batch;
    cp.n_seq_max = 2;
    cp.kv_type = HS_TYPE_F32;
    cp.backend_params.n_threads = 2;
    cp.backend_params.pin_threads = false;
    cp.expert_placement = placement;
    cr_assert_eq(hs_context_create(l->m, &cp, &l->ctx, &err), HS_OK, "%s: %s", tag, err.message);
}

static void unload(struct loaded *l)
{
    hs_context_destroy(l->ctx);
    hs_model_destroy(l->m);
    unlink(l->path);
}

static void prompt(hs_token *toks, int n, int n_vocab, uint64_t seed)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, seed);
    toks[0] = 1;
    for (int i = 1; i < n; i++) {
        toks[i] = (hs_token)(3 + hs_rng_next(&rng) % (uint64_t)(n_vocab - 3));
    }
}

static double nrmse(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Logits of every position of one prompt, in one forward call. */
static void run_all(struct loaded *l, const hs_token *toks, int n, float *out)
{
    int32_t table[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    struct hs_forward_seq fs = {toks, n, 0, table, n, 0};
    cr_assert_eq(hs_model_forward(l->ctx, &fs, 1), HS_OK);
    const int32_t nv = hs_model_hparams(l->m)->n_vocab;
    memcpy(out, hs_context_logits(l->ctx), (size_t)(n * nv) * sizeof(float));
}

static struct hs_mkmodel_params small(enum hs_arch arch, int n_expert, int k)
{
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    p.arch = arch;
    p.n_embd = 64;
    p.n_head = 4;
    p.n_head_kv = 2;
    p.n_ff = 96;
    p.n_layer = 3;
    p.n_vocab = 400;
    p.n_expert = n_expert;
    p.n_expert_used = k;
    p.n_ff_exp = 64;
    p.seed = 4321;
    return p;
}

Test(moe_models, every_moe_architecture_matches_the_float64_forward_pass)
{
    /* With the router each architecture implies when the file has no router keys (norm: the
     * chosen weights renormalised), or the keys written. */
    struct {
        const char *tag;
        struct hs_mkmodel_params p;
        enum hs_moe_gating gating;
        bool norm;
        float scale;
    } cases[] = {
        {"mixtral", small(HS_ARCH_LLAMA, 8, 2), HS_MOE_GATING_SOFTMAX, true, 1.0f},
        {"qwen2moe", small(HS_ARCH_QWEN2MOE, 8, 4), HS_MOE_GATING_SOFTMAX, false, 1.0f},
        {"qwen3moe", small(HS_ARCH_QWEN3MOE, 16, 4), HS_MOE_GATING_SOFTMAX, true, 1.0f},
        {"olmoe", small(HS_ARCH_OLMOE, 8, 2), HS_MOE_GATING_SOFTMAX, false, 1.0f},
        {"hunyuan-moe", small(HS_ARCH_HUNYUAN_MOE, 8, 2), HS_MOE_GATING_SOFTMAX, true, 1.0f},
        {"hunyuan-large", small(HS_ARCH_HUNYUAN_LARGE, 16, 1), HS_MOE_GATING_SOFTMAX, false, 1.0f},
        {"hunyuan-large-cla3", small(HS_ARCH_HUNYUAN_LARGE, 16, 1), HS_MOE_GATING_SOFTMAX, false,
         1.0f},
        {"sigmoid-scaled", small(HS_ARCH_QWEN3MOE, 12, 3), HS_MOE_GATING_SIGMOID, true, 2.5f},
        {"softmax-weight", small(HS_ARCH_OLMOE, 8, 4), HS_MOE_GATING_SOFTMAX_WEIGHT, false, 1.0f},
        {"qwen2moe-norm", small(HS_ARCH_QWEN2MOE, 8, 2), HS_MOE_GATING_SOFTMAX, true, 1.0f},
    };
    cases[1].p.n_ff_shexp = 128;
    cases[4].p.n_ff_shexp = 80;
    cases[5].p.n_ff_shexp = 96;
    cases[5].p.cla_share = 2;
    cases[6].p.n_ff_shexp = 96;
    cases[6].p.cla_share = 3;
    cases[6].p.n_layer = 5; /* groups of 3 and 2 */
    cases[7].p.gating = HS_MOE_GATING_SIGMOID;
    cases[7].p.weights_norm = 1;
    cases[7].p.weights_scale = 2.5f;
    cases[8].p.gating = HS_MOE_GATING_SOFTMAX_WEIGHT;
    cases[9].p.n_ff_shexp = 64;
    cases[9].p.weights_norm = 1; /* the key, not the architecture, decides */
    for (size_t c = 0; c < HS_ARRAY_LEN(cases); c++) {
        struct loaded l;
        load(&l, &cases[c].p, cases[c].tag, 64, NULL);
        const struct hs_model_hparams *hp = hs_model_hparams(l.m);
        cr_assert_eq(hp->router.n_expert, cases[c].p.n_expert, "%s", cases[c].tag);
        cr_assert_eq(hp->router.n_expert_used, cases[c].p.n_expert_used, "%s", cases[c].tag);
        cr_assert_eq(hp->router.gating, cases[c].gating, "%s", cases[c].tag);
        cr_assert_eq(hp->router.norm_w, cases[c].norm, "%s", cases[c].tag);
        cr_assert_eq(hp->router.w_scale, cases[c].scale, "%s", cases[c].tag);
        cr_assert_eq(hp->cla_share, HS_MAX(cases[c].p.cla_share, 1), "%s", cases[c].tag);
        const int nv = hp->n_vocab;
        hs_token toks[N_PROMPT];
        prompt(toks, N_PROMPT, nv, 17 + c);
        float *got = malloc((size_t)(N_PROMPT * nv) * sizeof(float));
        float *ref = malloc((size_t)(N_PROMPT * nv) * sizeof(float));
        run_all(&l, toks, N_PROMPT, got);
        hs_ref_model_logits(l.m, toks, N_PROMPT, ref);
        const double e = nrmse(got, ref, (int64_t)N_PROMPT * nv);
        fprintf(stderr, "%-20s %s: normalised error %.2e against the float64 forward pass\n",
                cases[c].tag, hs_model_desc(l.m), e);
        cr_assert(e < 1e-5, "%s (%s): logits differ from the float64 forward pass by %.3g",
                  cases[c].tag, hs_model_desc(l.m), e);
        free(ref);
        free(got);
        unload(&l);
    }
}

Test(moe_models, cross_layer_attention_keeps_one_kv_copy_per_group)
{
    struct hs_mkmodel_params p = hs_mkmodel_hunyuan_large_params();
    const int shares[] = {1, 2, 4};
    size_t bytes[3];
    for (int i = 0; i < 3; i++) {
        p.cla_share = shares[i];
        struct loaded l;
        char tag[32];
        snprintf(tag, sizeof(tag), "cla%d", shares[i]);
        load(&l, &p, tag, 32, NULL);
        const struct hs_model_hparams *hp = hs_model_hparams(l.m);
        cr_assert_eq(hp->cla_share, shares[i]);
        cr_assert_eq(hp->n_layer_kv, 4 / shares[i]);
        bytes[i] = hs_context_kv_bytes(l.ctx);
        unload(&l);
    }
    cr_assert_eq(bytes[0], 2 * bytes[1], "share factor 2: half the KV memory");
    cr_assert_eq(bytes[0], 4 * bytes[2], "share factor 4: a quarter");
    /* 5 layers in groups of 2: three K/V layers. */
    p.cla_share = 2;
    p.n_layer = 5;
    struct loaded l;
    load(&l, &p, "cla2-5", 32, NULL);
    cr_assert_eq(hs_model_hparams(l.m)->n_layer_kv, 3);
    unload(&l);
}

Test(moe_models, shared_kv_is_batching_and_chunking_invariant)
{
    struct hs_mkmodel_params p = hs_mkmodel_hunyuan_large_params();
    p.n_expert_used = 2; /* more grouping work per batch */
    struct loaded l;
    load(&l, &p, "cla-batch", 64, NULL);
    const int nv = hs_model_hparams(l.m)->n_vocab;
    hs_token a[N_PROMPT], b[N_PROMPT];
    prompt(a, N_PROMPT, nv, 1);
    prompt(b, N_PROMPT, nv, 2);
    float *alone_a = malloc((size_t)nv * sizeof(float));
    float *alone_b = malloc((size_t)nv * sizeof(float));
    float *chunked = malloc((size_t)nv * sizeof(float));
    int32_t ta[8] = {0, 1, 2, 3, 4, 5, 6, 7}, tb[8] = {15, 9, 12, 8, 10, 11, 13, 14};
    struct hs_forward_seq fa = {a, N_PROMPT, 0, ta, 1, 0};
    cr_assert_eq(hs_model_forward(l.ctx, &fa, 1), HS_OK);
    memcpy(alone_a, hs_context_logits(l.ctx), (size_t)nv * sizeof(float));
    struct hs_forward_seq fb = {b, N_PROMPT, 0, tb, 1, 0};
    cr_assert_eq(hs_model_forward(l.ctx, &fb, 1), HS_OK);
    memcpy(alone_b, hs_context_logits(l.ctx), (size_t)nv * sizeof(float));
    /* The same prompt in chunks of 4 over scattered blocks. */
    for (int i = 0; i < N_PROMPT; i += 4) {
        const int n = HS_MIN(4, N_PROMPT - i);
        struct hs_forward_seq fs = {a + i, n, i, tb, 1, 0};
        cr_assert_eq(hs_model_forward(l.ctx, &fs, 1), HS_OK);
    }
    memcpy(chunked, hs_context_logits(l.ctx), (size_t)nv * sizeof(float));
    cr_assert(nrmse(chunked, alone_a, nv) < 1e-6, "chunked prefill differs: %g",
              nrmse(chunked, alone_a, nv));
    /* Both prompts in one batch. */
    struct hs_forward_seq both[2] = {{a, N_PROMPT, 0, ta, 1, 0}, {b, N_PROMPT, 0, tb, 1, 0}};
    cr_assert_eq(hs_model_forward(l.ctx, both, 2), HS_OK);
    const float *lg = hs_context_logits(l.ctx);
    cr_assert(nrmse(lg, alone_a, nv) < 1e-6 && nrmse(lg + nv, alone_b, nv) < 1e-6,
              "batched sequences differ from each alone: %g %g", nrmse(lg, alone_a, nv),
              nrmse(lg + nv, alone_b, nv));
    free(chunked);
    free(alone_b);
    free(alone_a);
    unload(&l);
}

Test(moe_models, experts_are_placed_by_name_through_the_registry)
{
    struct hs_mkmodel_params p = small(HS_ARCH_QWEN2MOE, 8, 2);
    p.n_ff_shexp = 64;
    struct loaded one, two;
    load(&one, &p, "place-one", 64, NULL);
    load(&two, &p, "place-two", 64,
         "blk\\.1\\.expert\\.[0-3]$=cpu:1,expert\\.shared=CPU:1,blk\\.2\\.ffn_up_exps=cpu,"
         "ffn_.*_exps=cpu:2");
    cr_assert_str_eq(hs_context_expert_backend(two.ctx, 1, 2), "cpu:1");
    cr_assert_str_eq(hs_context_expert_backend(two.ctx, 1, 5), "cpu:2");
    cr_assert_str_eq(hs_context_expert_backend(two.ctx, 0, -1), "cpu:1");
    cr_assert_str_eq(hs_context_expert_backend(two.ctx, 2, 1), "cpu");
    cr_assert_str_eq(hs_context_expert_backend(two.ctx, 0, 7), "cpu:2", "by tensor name");
    cr_assert_str_eq(hs_context_expert_backend(one.ctx, 1, 2), "cpu");
    cr_assert_null(hs_context_expert_backend(two.ctx, 1, 8));
    cr_assert_null(hs_context_expert_backend(two.ctx, 3, 0));
    const int nv = hs_model_hparams(one.m)->n_vocab;
    hs_token toks[N_PROMPT];
    prompt(toks, N_PROMPT, nv, 5);
    float *a = malloc((size_t)(N_PROMPT * nv) * sizeof(float));
    float *b = malloc((size_t)(N_PROMPT * nv) * sizeof(float));
    run_all(&one, toks, N_PROMPT, a);
    run_all(&two, toks, N_PROMPT, b);
    cr_assert_eq(memcmp(a, b, (size_t)(N_PROMPT * nv) * sizeof(float)), 0,
                 "placement changes where experts run, not what they compute");
    free(b);
    free(a);
    unload(&two);
    unload(&one);
}

/* Sets the u32 value of metadata key (stored as u32, found by its bytes) in a GGUF image. */
static void patch_u32(uint8_t *img, size_t len, const char *key, uint32_t v)
{
    const size_t kl = strlen(key);
    for (size_t i = 8; i + kl + 8 <= len; i++) {
        uint64_t n;
        memcpy(&n, img + i - 8, 8);
        if (n == kl && memcmp(img + i, key, kl) == 0) {
            uint32_t type;
            memcpy(&type, img + i + kl, 4);
            cr_assert_eq(type, 4, "%s is not a u32", key); /* GGUF_TYPE_UINT32 */
            memcpy(img + i + kl + 4, &v, 4);
            return;
        }
    }
    cr_assert_fail("key %s not found", key);
}

Test(moe_models, damaged_moe_metadata_is_an_error_that_says_why)
{
    struct hs_mkmodel_params p = small(HS_ARCH_HUNYUAN_LARGE, 8, 1);
    p.n_ff_shexp = 64;
    p.cla_share = 3;
    char path[256];
    write_model(&p, path, sizeof(path), "damaged");
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    const size_t len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *good = malloc(len), *img = malloc(len);
    cr_assert_eq(fread(good, 1, len, f), len);
    fclose(f);
    unlink(path);
    static const struct {
        const char *key;
        uint32_t v;
        const char *says;
    } bad[] = {
        {"hunyuan-large.block_count", 1u << 31, "block_count"},
        {"hunyuan-large.block_count", 1000000, "exceeds"},
        {"hunyuan-large.expert_used_count", 9, "expert_used_count"},
        {"hunyuan-large.expert_used_count", 0, "expert_used_count"},
        {"hunyuan-large.expert_count", 100000, "expert count"},
        {"hunyuan-large.attention.cla_share_factor", 0, "cla_share_factor"},
        {"hunyuan-large.attention.cla_share_factor", 2, "attn_k"}, /* layer 2 lacks K/V */
        {"hunyuan-large.expert_feed_forward_length", 65, "ffn_gate_exps"},
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        memcpy(img, good, len);
        patch_u32(img, len, bad[i].key, bad[i].v);
        struct hs_model *m = NULL;
        struct hs_error err = {0};
        const hs_status st = hs_model_load_memory(img, len, &m, &err);
        cr_assert(st == HS_E_FORMAT || st == HS_E_INVAL, "%s = %u: %s", bad[i].key, bad[i].v,
                  hs_status_str(st));
        cr_assert_null(m);
        cr_assert(strstr(err.message, bad[i].says), "%s = %u: '%s' lacks '%s'", bad[i].key,
                  bad[i].v, err.message, bad[i].says);
    }
    memcpy(img, good, len);
    struct hs_model *m = NULL;
    cr_assert_eq(hs_model_load_memory(img, len, &m, NULL), HS_OK);
    hs_model_destroy(m);
    free(img);
    free(good);
}

Test(moe_models, bad_placement_rules_are_errors_that_say_why)
{
    struct hs_mkmodel_params p = small(HS_ARCH_OLMOE, 8, 2);
    char path[256];
    write_model(&p, path, sizeof(path), "bad-place");
    struct hs_error err = {0};
    struct hs_model *m = NULL;
    cr_assert_eq(hs_model_load(path, &m, &err), HS_OK, "%s", err.message);
    static const struct {
        const char *rule;
        const char *says;
    } bad[] = {
        {"blk\\.0\\.expert\\.1=gpu", "not compiled in"},
        {"blk\\.0\\.expert\\.1", "REGEX=BACKEND"},
        {"blk\\.(0\\.expert=cpu", "pattern"},
        {"=cpu", "REGEX=BACKEND"},
        {"blk.*=cpu:x", "instance"},
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        struct hs_context_params cp = hs_context_default_params();
        cp.n_ctx = 64;
        cp.expert_placement = bad[i].rule;
        cp.backend_params.n_threads = 1;
        struct hs_context *ctx = NULL;
        cr_assert_eq(hs_context_create(m, &cp, &ctx, &err), HS_E_INVAL, "%s", bad[i].rule);
        cr_assert_null(ctx);
        cr_assert(strstr(err.message, bad[i].says), "'%s': %s", bad[i].rule, err.message);
    }
    hs_model_destroy(m);
    unlink(path);
}
