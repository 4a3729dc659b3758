/* hetserve mkmodel: random-weight GGUF models of any shape, with a synthetic SentencePiece
 * vocabulary, for tests and benchmarks (no weights are ever downloaded). */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf/gguf.h"

struct hs_mkmodel_params hs_mkmodel_default_params(void)
{
    struct hs_mkmodel_params p = {
        .arch = HS_ARCH_LLAMA,
        .n_embd = 64,
        .n_layer = 2,
        .n_head = 4,
        .n_head_kv = 2,
        .n_ff = 128,
        .n_vocab = 512,
        .n_ctx = 512,
        .wtype = HS_TYPE_F32,
        .seed = 1,
        .tied_output = false,
        .weights_norm = -1,
    };
    return p;
}

struct hs_mkmodel_params hs_mkmodel_qwen2moe_params(void)
{
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    p.arch = HS_ARCH_QWEN2MOE;
    p.n_embd = 256;
    p.n_layer = 4;
    p.n_head = 8;
    p.n_head_kv = 4;
    p.n_ff = 512;
    p.n_vocab = 4096;
    p.n_ctx = 4096;
    p.n_expert = 8;
    p.n_expert_used = 4;
    p.n_ff_exp = 512;
    p.n_ff_shexp = 512;
    p.wtype = HS_TYPE_Q8_0;
    return p;
}

struct hs_mkmodel_params hs_mkmodel_hunyuan_large_params(void)
{
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    p.arch = HS_ARCH_HUNYUAN_LARGE;
    p.n_embd = 128;
    p.n_layer = 4;
    p.n_head = 8;
    p.n_head_kv = 2;
    p.n_ff = 256;
    p.n_vocab = 1024;
    p.n_expert = 16;
    p.n_expert_used = 1;
    p.n_ff_exp = 128;
    p.n_ff_shexp = 256;
    p.cla_share = 2;
    return p;
}

struct hs_mkmodel_params hs_mkmodel_smollm_params(void)
{
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    p.n_embd = 576;
    p.n_layer = 30;
    p.n_head = 9;
    p.n_head_kv = 3;
    p.n_ff = 1536;
    p.n_vocab = 49152;
    p.n_ctx = 2048;
    p.wtype = HS_TYPE_Q8_0;
    p.tied_output = true;
    return p;
}

/* ---- vocabulary: <unk> <s> </s>, 256 byte tokens, then letter pieces with and without the
 * word prefix, scored by rank ---- */

static hs_status add_vocab(struct hs_gguf_writer *w, int32_t n_vocab, bool image_tokens)
{
    hs_status st = HS_E_NOMEM;
    char **toks = calloc((size_t)n_vocab, sizeof(*toks));
    float *scores = calloc((size_t)n_vocab, sizeof(*scores));
    int32_t *types = calloc((size_t)n_vocab, sizeof(*types));
    if (!toks || !scores || !types) {
        goto done;
    }
    int32_t n = 0;
    const char *specials[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3 && n < n_vocab; i++, n++) {
        toks[n] = strdup(specials[i]);
        types[n] = i == 0 ? 2 : 3; /* unknown, control */
    }
    for (int b = 0; b < 256 && n < n_vocab; b++, n++) {
        char buf[8];
        snprintf(buf, sizeof(buf), "<0x%02X>", b);
        toks[n] = strdup(buf);
        types[n] = 6; /* byte */
    }
    /* Letter strings in length-then-lexicographic order: a..z, aa..zz, ... each also with "▁". */
    for (int64_t idx = 0; n < n_vocab; idx++) {
        char s[16];
        int64_t v = idx;
        int len = 1;
        int64_t span = 26;
        while (v >= span) {
            v -= span;
            span *= 26;
            len++;
        }
        for (int i = len - 1; i >= 0; i--) {
            s[i] = (char)('a' + v % 26);
            v /= 26;
        }
        s[len] = '\0';
        char word[24];
        snprintf(word, sizeof(word), "\xe2\x96\x81%s", s);
        for (int k = 0; k < 2 && n < n_vocab; k++, n++) {
            toks[n] = strdup(k == 0 ? word : s);
            types[n] = 1;
            scores[n] = -(float)n;
        }
    }
    if (image_tokens) {
        static const char *const img[3] = {"<fake_token_around_image>", "<global-img>", "\n\n"};
        for (int i = 0; i < 3; i++) {
            const int32_t id = n_vocab - 3 + i;
            free(toks[id]);
            toks[id] = strdup(img[i]);
            types[id] = 3; /* control */
            scores[id] = 0.0f;
        }
    }
    for (int32_t i = 0; i < n_vocab; i++) {
        if (!toks[i]) {
            goto done;
        }
    }
    if ((st = hs_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) != HS_OK ||
        (st = hs_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks,
                                         (uint64_t)n_vocab)) != HS_OK ||
        (st = hs_gguf_writer_set_arr(w, "tokenizer.ggml.scores", HS_GGUF_TYPE_FLOAT32, scores,
                                     (uint64_t)n_vocab)) != HS_OK ||
        (st = hs_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", HS_GGUF_TYPE_INT32, types,
                                     (uint64_t)n_vocab)) != HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) != HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) != HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) != HS_OK ||
        (st = hs_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true)) != HS_OK) {
        goto done;
    }
    st = HS_OK;
done:
    if (toks) {
        for (int32_t i = 0; i < n_vocab; i++) {
            free(toks[i]);
        }
    }
    free(toks);
    free(scores);
    free(types);
    return st;
}

/* ---- weights ---- */

struct mk_state {
    struct hs_gguf_writer *w;
    struct hs_rng rng;
    float *f32; /* scratch: largest tensor in floats */
    void *qbuf; /* scratch: largest tensor quantized */
};

/* As llama-quantize: a K-quant whose rows are not a multiple of 256 falls back to a 32-element
 * type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0). */
static enum hs_type fallback_type(enum hs_type t, int64_t ne0)
{
    if (ne0 % hs_type_traits(t)->blck_size == 0) {
        return t;
    }
    return t == HS_TYPE_Q6_K ? HS_TYPE_Q8_0 : t == HS_TYPE_Q5_K ? HS_TYPE_Q5_1 : HS_TYPE_Q5_0;
}

/* llama-quantize's choice of the layers whose attn_v and ffn_down get more bits in its _M
 * mixes: the first and last eighth, and every third layer in between. */
static bool use_more_bits(int il, int n_layer)
{
    return il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
}

/* A tensor [ne2][ne1][ne0] (ne1, ne2 <= 0: fewer dimensions) of uniform random values. */
static hs_status add_weight3(struct mk_state *s, const char *name, enum hs_type type, int64_t ne0,
                             int64_t ne1, int64_t ne2, float center, float spread)
{
    type = fallback_type(type, ne0);
    const int64_t n_rows = (ne1 > 0 ? ne1 : 1) * (ne2 > 0 ? ne2 : 1);
    const int64_t n = ne0 * n_rows;
    for (int64_t i = 0; i < n; i++) {
        s->f32[i] = center + hs_rng_range(&s->rng, -spread, spread);
    }
    const int64_t ne[3] = {ne0, ne1 > 0 ? ne1 : 1, ne2 > 0 ? ne2 : 1};
    const uint32_t n_dims = ne2 > 0 ? 3 : ne1 > 0 ? 2 : 1;
    if (type == HS_TYPE_F32) {
        return hs_gguf_writer_add_tensor(s->w, name, type, n_dims, ne, s->f32);
    }
    HS_TRY(hs_quantize_rows(type, s->f32, s->qbuf, n_rows, ne0));
    return hs_gguf_writer_add_tensor(s->w, name, type, n_dims, ne, s->qbuf);
}

static hs_status add_weight(struct mk_state *s, const char *name, enum hs_type type, int64_t ne0,
                            int64_t ne1, float center, float spread)
{
    return add_weight3(s, name, type, ne0, ne1, 0, center, spread);
}

static bool arch_has_experts(enum hs_arch a)
{
    return a == HS_ARCH_QWEN2MOE || a == HS_ARCH_QWEN3MOE || a == HS_ARCH_OLMOE ||
           a == HS_ARCH_HUNYUAN_MOE || a == HS_ARCH_HUNYUAN_LARGE;
}

static bool arch_has_shared(enum hs_arch a)
{
    return a == HS_ARCH_QWEN2MOE || a == HS_ARCH_HUNYUAN_MOE || a == HS_ARCH_HUNYUAN_LARGE;
}

static hs_status check_params(const struct hs_mkmodel_params *p, struct hs_error *err)
{
    if (p->arch < 0 || p->arch >= HS_ARCH_COUNT) {
        return hs_error_set(err, HS_E_INVAL, "unknown architecture");
    }
    if (p->n_embd <= 0 || p->n_layer <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 || p->n_ff <= 0 ||
        p->n_ctx <= 0 || p->n_vocab < 300) {
        return hs_error_set(err, HS_E_INVAL,
                            "dimensions must be positive and the vocabulary at least 300 tokens");
    }
    if (p->n_embd % p->n_head != 0 || p->n_head % p->n_head_kv != 0 ||
        (p->n_embd / p->n_head) % 2 != 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "n_embd must split into an even head size and n_head must be a "
                            "multiple of n_head_kv");
    }
    const struct hs_type_traits *tr = hs_type_traits(p->wtype);
    if (!tr->supported) {
        return hs_error_set(err, HS_E_INVAL, "weight type %s is not supported",
                            hs_type_str(p->wtype));
    }
    /* K-quant rows that are not a multiple of 256 fall back per tensor (see fallback_type). */
    if (tr->blck_size > 1 && (p->n_embd % 32 != 0 || p->n_ff % 32 != 0 || p->n_ff_exp % 32 != 0 ||
                              p->n_ff_shexp % 32 != 0)) {
        return hs_error_set(err, HS_E_INVAL,
                            "n_embd and the FFN widths must be multiples of 32 for %s",
                            hs_type_str(p->wtype));
    }
    if (arch_has_experts(p->arch) && p->n_expert <= 0) {
        return hs_error_set(err, HS_E_INVAL, "%s models need experts (--experts N)",
                            hs_arch_str(p->arch));
    }
    if (p->n_expert > 0 && p->arch != HS_ARCH_LLAMA && !arch_has_experts(p->arch)) {
        return hs_error_set(err, HS_E_INVAL, "%s models have no experts (use %smoe)",
                            hs_arch_str(p->arch), hs_arch_str(p->arch));
    }
    if (p->n_expert < 0 || p->n_expert > HS_MOE_MAX_EXPERTS ||
        (p->n_expert > 0 && (p->n_expert_used < 1 || p->n_expert_used > p->n_expert ||
                             p->n_expert_used > HS_MOE_MAX_USED)) ||
        p->n_ff_exp < 0 || p->n_ff_shexp < 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "expert counts: 1..%d experts, 1..min(experts, %d) used per token",
                            HS_MOE_MAX_EXPERTS, HS_MOE_MAX_USED);
    }
    if (p->cla_share > 1 && (p->arch != HS_ARCH_HUNYUAN_LARGE || p->cla_share > p->n_layer)) {
        return hs_error_set(err, HS_E_INVAL,
                            "cross-layer attention (--cla N) needs --arch hunyuan-large and at "
                            "most as many layers");
    }
    return HS_OK;
}

hs_status hs_mkmodel_write(const struct hs_mkmodel_params *p, const char *path,
                           struct hs_error *err)
{
    hs_error_clear(err);
    HS_TRY(check_params(p, err));
    hs_status st;
    struct mk_state s = {0};
    hs_rng_seed(&s.rng, p->seed);
    const char *an = hs_arch_str(p->arch);
    const int64_t hd = p->n_embd / p->n_head;
    const int64_t n_kv = hd * p->n_head_kv;
    const int64_t n_ff_max = HS_MAX(p->n_ff, HS_MAX(p->n_ff_shexp, p->n_ff_exp));
    const int64_t biggest = HS_MAX(HS_MAX((int64_t)p->n_vocab * p->n_embd, n_ff_max * p->n_embd),
                                   (int64_t)HS_MAX(p->n_expert, 1) *
                                       (p->n_ff_exp > 0 ? p->n_ff_exp : p->n_ff) * p->n_embd);
    s.f32 = malloc((size_t)biggest * sizeof(float));
    s.qbuf = malloc((size_t)biggest * sizeof(float));
    st = hs_gguf_writer_create(&s.w);
    if (st != HS_OK || !s.f32 || !s.qbuf) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto done;
    }
    char key[128];
#define SET_U32(suffix, val)                                                                       \
    do {                                                                                           \
        snprintf(key, sizeof(key), "%s." suffix, an);                                              \
        if ((st = hs_gguf_writer_set_u32(s.w, key, (uint32_t)(val))) != HS_OK) {                   \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    if ((st = hs_gguf_writer_set_str(s.w, "general.architecture", an)) != HS_OK ||
        (st = hs_gguf_writer_set_str(s.w, "general.name", "hetserve random model")) != HS_OK ||
        (st = hs_gguf_writer_set_u32(s.w, "general.alignment", 32)) != HS_OK) {
        goto done;
    }
    SET_U32("context_length", p->n_ctx);
    SET_U32("embedding_length", p->n_embd);
    SET_U32("block_count", p->n_layer);
    SET_U32("feed_forward_length", p->n_ff);
    SET_U32("attention.head_count", p->n_head);
    SET_U32("attention.head_count_kv", p->n_head_kv);
    SET_U32("rope.dimension_count", hd);
    const int64_t n_ff_e = p->n_ff_exp > 0 ? p->n_ff_exp : p->n_ff;
    const bool shared = p->n_expert > 0 && arch_has_shared(p->arch);
    const int64_t n_ff_sh = p->n_ff_shexp > 0 ? p->n_ff_shexp : n_ff_e;
    const int cla = p->cla_share > 1 ? p->cla_share : 1;
    if (p->n_expert > 0) {
        SET_U32("expert_count", p->n_expert);
        SET_U32("expert_used_count", p->n_expert_used);
        SET_U32("expert_feed_forward_length", n_ff_e);
        if (shared) {
            SET_U32("expert_shared_feed_forward_length", n_ff_sh);
        }
        if (p->gating > 0) {
            SET_U32("expert_gating_func", p->gating);
        }
    }
    if (cla > 1) {
        SET_U32("attention.cla_share_factor", cla);
    }
#undef SET_U32
    if (p->n_expert > 0 && p->weights_norm >= 0) {
        snprintf(key, sizeof(key), "%s.expert_weights_norm", an);
        if ((st = hs_gguf_writer_set_bool(s.w, key, p->weights_norm != 0)) != HS_OK) {
            goto done;
        }
    }
    if (p->n_expert > 0 && p->weights_scale != 0.0f) {
        snprintf(key, sizeof(key), "%s.expert_weights_scale", an);
        if ((st = hs_gguf_writer_set_f32(s.w, key, p->weights_scale)) != HS_OK) {
            goto done;
        }
    }
    snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", an);
    if ((st = hs_gguf_writer_set_f32(s.w, key, 1e-5f)) != HS_OK) {
        goto done;
    }
    snprintf(key, sizeof(key), "%s.rope.freq_base", an);
    if ((st = hs_gguf_writer_set_f32(s.w, key, 10000.0f)) != HS_OK) {
        goto done;
    }
    if (p->arch == HS_ARCH_QWEN2VL) {
        /* M-RoPE: the rotary pairs split time : height : width as Qwen2-VL's 16 : 24 : 24 of 64
         * (a quarter for time, the rest halved), the fourth section unused. */
        const int32_t t = (int32_t)(hd / 2 / 4);
        const int32_t hw = (int32_t)(hd / 2 - t) / 2;
        const int32_t sections[4] = {t, hw, (int32_t)(hd / 2) - t - hw, 0};
        snprintf(key, sizeof(key), "%s.rope.dimension_sections", an);
        if ((st = hs_gguf_writer_set_arr(s.w, key, HS_GGUF_TYPE_INT32, sections, 4)) != HS_OK) {
            goto done;
        }
    }
    if ((st = add_vocab(s.w, p->n_vocab, p->image_tokens)) != HS_OK) {
        goto done;
    }

    /* --type q4_K writes llama-quantize's Q4_K_M choice of types: Q6_K for the output projection
     * (the embeddings when tied) and for attn_v / ffn_down in use_more_bits layers, Q4_K for the
     * rest, each with fallback_type's rule for rows that are no multiple of 256. */
    const bool mix = p->wtype == HS_TYPE_Q4_K;
    const enum hs_type wt = p->wtype;
    const float ws = 0.08f; /* weight spread: keeps activations O(1) through the layers */
#define ADD(nm, type, ne0, ne1, c, sp)                                                             \
    do {                                                                                           \
        if ((st = add_weight(&s, (nm), (type), (ne0), (ne1), (c), (sp))) != HS_OK) {               \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    ADD("token_embd.weight", mix && p->tied_output ? HS_TYPE_Q6_K : wt, p->n_embd, p->n_vocab, 0.0f,
        1.0f);
    ADD("output_norm.weight", HS_TYPE_F32, p->n_embd, 0, 1.0f, 0.1f);
    if (!p->tied_output) {
        ADD("output.weight", mix ? HS_TYPE_Q6_K : wt, p->n_embd, p->n_vocab, 0.0f, ws);
    }
    char name[96];
    for (int il = 0; il < p->n_layer; il++) {
        const enum hs_type more_t = mix && use_more_bits(il, p->n_layer) ? HS_TYPE_Q6_K : wt;
#define LAYER(suffix, type, ne0, ne1, c, sp)                                                       \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%d." suffix, il);                                        \
        ADD(name, (type), (ne0), (ne1), (c), (sp));                                                \
    } while (0)
#define LAYER3(suffix, type, ne0, ne1, ne2, c, sp)                                                 \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%d." suffix, il);                                        \
        if ((st = add_weight3(&s, name, (type), (ne0), (ne1), (ne2), (c), (sp))) != HS_OK) {       \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
        /* Cross-layer attention: only each group's first layer has K/V weights. */
        const bool own_kv = il % cla == 0;
        const bool qkv_bias =
            p->arch == HS_ARCH_QWEN2 || p->arch == HS_ARCH_QWEN2MOE || p->arch == HS_ARCH_QWEN2VL;
        const bool head_norm = p->arch == HS_ARCH_QWEN3 || p->arch == HS_ARCH_QWEN3MOE ||
                               p->arch == HS_ARCH_HUNYUAN_MOE || p->arch == HS_ARCH_HUNYUAN_LARGE;
        LAYER("attn_norm.weight", HS_TYPE_F32, p->n_embd, 0, 1.0f, 0.1f);
        LAYER("attn_q.weight", wt, p->n_embd, p->n_embd, 0.0f, ws);
        if (own_kv) {
            LAYER("attn_k.weight", wt, p->n_embd, n_kv, 0.0f, ws);
            LAYER("attn_v.weight", more_t, p->n_embd, n_kv, 0.0f, ws);
        }
        LAYER("attn_output.weight", wt, p->n_embd, p->n_embd, 0.0f, ws);
        if (qkv_bias) {
            LAYER("attn_q.bias", HS_TYPE_F32, p->n_embd, 0, 0.0f, 0.1f);
        }
        if (qkv_bias && own_kv) {
            LAYER("attn_k.bias", HS_TYPE_F32, n_kv, 0, 0.0f, 0.1f);
            LAYER("attn_v.bias", HS_TYPE_F32, n_kv, 0, 0.0f, 0.1f);
        }
        if (head_norm) {
            LAYER("attn_q_norm.weight", HS_TYPE_F32, hd, 0, 1.0f, 0.1f);
            if (own_kv) {
                LAYER("attn_k_norm.weight", HS_TYPE_F32, hd, 0, 1.0f, 0.1f);
            }
        }
        if (p->arch == HS_ARCH_OLMOE) {
            LAYER("attn_q_norm.weight", HS_TYPE_F32, p->n_embd, 0, 1.0f, 0.1f);
            LAYER("attn_k_norm.weight", HS_TYPE_F32, n_kv, 0, 1.0f, 0.1f);
        }
        LAYER("ffn_norm.weight", HS_TYPE_F32, p->n_embd, 0, 1.0f, 0.1f);
        if (p->n_expert == 0) {
            LAYER("ffn_gate.weight", wt, p->n_embd, p->n_ff, 0.0f, ws);
            LAYER("ffn_up.weight", wt, p->n_embd, p->n_ff, 0.0f, ws);
            LAYER("ffn_down.weight", more_t, p->n_ff, p->n_embd, 0.0f, ws);
            continue;
        }
        /* The router stays f32, as llama.cpp's quantizer leaves it. */
        LAYER("ffn_gate_inp.weight", HS_TYPE_F32, p->n_embd, p->n_expert, 0.0f, ws);
        LAYER3("ffn_gate_exps.weight", wt, p->n_embd, n_ff_e, p->n_expert, 0.0f, ws);
        LAYER3("ffn_up_exps.weight", wt, p->n_embd, n_ff_e, p->n_expert, 0.0f, ws);
        LAYER3("ffn_down_exps.weight", more_t, n_ff_e, p->n_embd, p->n_expert, 0.0f, ws);
        if (shared) {
            LAYER("ffn_gate_shexp.weight", wt, p->n_embd, n_ff_sh, 0.0f, ws);
            LAYER("ffn_up_shexp.weight", wt, p->n_embd, n_ff_sh, 0.0f, ws);
            LAYER("ffn_down_shexp.weight", more_t, n_ff_sh, p->n_embd, 0.0f, ws);
        }
        if (shared && p->arch == HS_ARCH_QWEN2MOE) {
            LAYER("ffn_gate_inp_shexp.weight", HS_TYPE_F32, p->n_embd, 0, 0.0f, ws);
        }
#undef LAYER3
#undef LAYER
    }
#undef ADD
    st = hs_gguf_writer_write_file(s.w, path, err);
done:
    if (st != HS_OK && err && err->message[0] == '\0') {
        hs_error_set(err, st, "cannot write the model: %s", hs_status_str(st));
    }
    hs_gguf_writer_destroy(s.w);
    free(s.f32);
    free(s.qbuf);
    return st;
}
