/* Model loading: GGUF metadata -> hyper-parameters, tensors -> weight views. */
#include "model/model-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf/gguf.h"
#include "model/tokenizer/vocab.h"

/* What each architecture fixes; the router's options are GGUF keys with these defaults. */
struct arch_desc {
    const char *name;
    enum hs_rope_mode rope;
    bool qkv_bias;
    enum hs_qk_norm qk_norm;
    int moe;           /* 0: dense only, 1: experts when expert_count says so, 2: experts */
    bool norm_w;       /* renormalise the chosen experts' weights */
    bool shared;       /* a shared expert in every MoE layer */
    bool shared_gate;  /* ... scaled by sigmoid(ffn_gate_inp_shexp . x) */
    bool shared_is_ff; /* its default width is feed_forward_length (else the expert width) */
};

static const struct arch_desc archs[HS_ARCH_COUNT] = {
    [HS_ARCH_LLAMA] = {"llama", HS_ROPE_NORM, false, HS_QK_NORM_NONE, 1, true, false, false, false},
    [HS_ARCH_QWEN2] = {"qwen2", HS_ROPE_NEOX, true, HS_QK_NORM_NONE, 0, false, false, false, false},
    [HS_ARCH_QWEN3] = {"qwen3", HS_ROPE_NEOX, false, HS_QK_NORM_HEAD, 0, false, false, false,
                       false},
    [HS_ARCH_QWEN2MOE] = {"qwen2moe", HS_ROPE_NEOX, true, HS_QK_NORM_NONE, 2, false, true, true,
                          false},
    [HS_ARCH_QWEN3MOE] = {"qwen3moe", HS_ROPE_NEOX, false, HS_QK_NORM_HEAD, 2, true, false, false,
                          false},
    [HS_ARCH_OLMOE] = {"olmoe", HS_ROPE_NEOX, false, HS_QK_NORM_FULL, 2, false, false, false,
                       false},
    [HS_ARCH_HUNYUAN_MOE] = {"hunyuan-moe", HS_ROPE_NEOX, false, HS_QK_NORM_HEAD_AFTER, 2, true,
                             true, false, true},
    [HS_ARCH_HUNYUAN_LARGE] = {"hunyuan-large", HS_ROPE_NEOX, false, HS_QK_NORM_HEAD_AFTER, 2,
                               false, true, false, true},
    [HS_ARCH_QWEN2VL] = {"qwen2vl", HS_ROPE_NEOX, true, HS_QK_NORM_NONE, 0, false, false, false,
                         false},
};

const char *hs_arch_str(enum hs_arch a)
{
    return (unsigned)a < HS_ARCH_COUNT ? archs[a].name : "unknown";
}

enum hs_arch hs_arch_from_str(const char *s)
{
    int a = 0;
    while (a < HS_ARCH_COUNT && strcmp(s, archs[a].name) != 0) {
        a++;
    }
    return (enum hs_arch)a;
}

/* ---- metadata ---- */

static hs_status get_i32(const struct hs_gguf *g, const char *arch, const char *suffix,
                         bool required, int32_t def, int32_t *out, struct hs_error *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int64_t v = def;
    hs_status st = hs_gguf_get_int(g, key, &v);
    if (st == HS_E_NOENT && !required) {
        *out = def;
        return HS_OK;
    }
    if (st == HS_E_NOENT) {
        return hs_error_set(err, HS_E_FORMAT, "model metadata lacks the key '%s'", key);
    }
    if (st != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "model metadata key '%s' is not an integer", key);
    }
    if (v < 0 || v > INT32_MAX) {
        return hs_error_set(err, HS_E_FORMAT, "model metadata key '%s' = %lld is out of range", key,
                            (long long)v);
    }
    *out = (int32_t)v;
    return HS_OK;
}

static hs_status get_f32(const struct hs_gguf *g, const char *arch, const char *suffix, float def,
                         float *out, struct hs_error *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    double v = def;
    hs_status st = hs_gguf_get_float(g, key, &v);
    if (st != HS_OK && st != HS_E_NOENT) {
        return hs_error_set(err, HS_E_FORMAT, "model metadata key '%s' is not a number", key);
    }
    *out = (float)v;
    return HS_OK;
}

static hs_status get_bool(const struct hs_gguf *g, const char *arch, const char *suffix, bool def,
                          bool *out, struct hs_error *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    hs_status st = hs_gguf_get_bool(g, key, out);
    if (st == HS_E_NOENT) {
        *out = def;
        return HS_OK;
    }
    if (st != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "model metadata key '%s' is not a boolean", key);
    }
    return HS_OK;
}

/* The router of a mixture-of-experts model: keys first, the architecture's defaults else. */
static hs_status load_router(const struct hs_gguf *g, const struct arch_desc *ad,
                             struct hs_model_hparams *hp, struct hs_error *err)
{
    const char *an = ad->name;
    struct hs_moe_router *r = &hp->router;
    HS_TRY(get_i32(g, an, "expert_count", ad->moe == 2, 0, &r->n_expert, err));
    if (ad->moe == 0 && r->n_expert > 0) {
        return hs_error_set(err, HS_E_FORMAT,
                            "%s.expert_count is %d, but %s models have no experts (use %smoe)", an,
                            r->n_expert, an, an);
    }
    if (r->n_expert == 0) {
        return HS_OK;
    }
    int32_t gating = HS_MOE_GATING_SOFTMAX;
    HS_TRY(get_i32(g, an, "expert_used_count", true, 0, &r->n_expert_used, err));
    HS_TRY(get_i32(g, an, "expert_gating_func", false, HS_MOE_GATING_SOFTMAX, &gating, err));
    r->gating = gating == 0 ? HS_MOE_GATING_SOFTMAX : (enum hs_moe_gating)gating;
    HS_TRY(get_bool(g, an, "expert_weights_norm", ad->norm_w, &r->norm_w, err));
    HS_TRY(get_f32(g, an, "expert_weights_scale", 1.0f, &r->w_scale, err));
    struct hs_error rerr = {0};
    if (hs_moe_router_check(r, &rerr) != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "bad mixture-of-experts metadata: %s", rerr.message);
    }
    HS_TRY(get_i32(g, an, "expert_feed_forward_length", false, hp->n_ff, &hp->n_ff_exp, err));
    int32_t n_shared = ad->shared ? 1 : 0;
    HS_TRY(get_i32(g, an, "expert_shared_count", false, n_shared, &n_shared, err));
    const int32_t def_sh = (ad->shared_is_ff ? hp->n_ff : hp->n_ff_exp) * HS_MAX(n_shared, 1);
    HS_TRY(get_i32(g, an, "expert_shared_feed_forward_length", false, n_shared ? def_sh : 0,
                   &hp->n_ff_shexp, err));
    if (hp->n_ff_exp <= 0 || (ad->shared && hp->n_ff_shexp <= 0)) {
        return hs_error_set(err, HS_E_FORMAT, "expert sizes must be positive");
    }
    return HS_OK;
}

static hs_status load_hparams(struct hs_model *m, struct hs_error *err)
{
    const struct hs_gguf *g = m->gguf;
    struct hs_model_hparams *hp = &m->hp;
    struct hs_gguf_str arch_s;
    if (hs_gguf_get_str(g, "general.architecture", &arch_s) != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "not a model file: general.architecture is missing");
    }
    int a = 0;
    for (; a < HS_ARCH_COUNT; a++) {
        if (hs_gguf_str_eq(arch_s, archs[a].name)) {
            break;
        }
    }
    if (a == HS_ARCH_COUNT) {
        return hs_error_set(err, HS_E_NOTSUP,
                            "architecture '%.*s' is not supported (supported: llama, qwen2, qwen3, "
                            "qwen2moe, qwen3moe, olmoe, hunyuan-moe, hunyuan-large)",
                            (int)HS_MIN(arch_s.len, 64), arch_s.data);
    }
    hp->arch = (enum hs_arch)a;
    const struct arch_desc *ad = &archs[a];
    const char *an = ad->name;
    HS_TRY(get_i32(g, an, "embedding_length", true, 0, &hp->n_embd, err));
    HS_TRY(get_i32(g, an, "block_count", true, 0, &hp->n_layer, err));
    HS_TRY(get_i32(g, an, "feed_forward_length", true, 0, &hp->n_ff, err));
    HS_TRY(get_i32(g, an, "attention.head_count", true, 0, &hp->n_head, err));
    HS_TRY(get_i32(g, an, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv, err));
    HS_TRY(get_i32(g, an, "context_length", false, 2048, &hp->n_ctx_train, err));
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->n_ff <= 0 || hp->n_ctx_train <= 0) {
        return hs_error_set(err, HS_E_FORMAT, "model dimensions must be positive");
    }
    /* Every layer has several tensors: a count beyond the file's is damage, not a model to
     * allocate for (fuzz-model asked for 2^31 layers). */
    if (hp->n_layer > hs_gguf_n_tensors(g)) {
        return hs_error_set(err, HS_E_FORMAT,
                            "%s.block_count %d exceeds the %lld tensors in the file", an,
                            hp->n_layer, (long long)hs_gguf_n_tensors(g));
    }
    if (hp->n_head % hp->n_head_kv != 0) {
        return hs_error_set(err, HS_E_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                            hp->n_head, hp->n_head_kv);
    }
    HS_TRY(
        get_i32(g, an, "attention.key_length", false, hp->n_embd / hp->n_head, &hp->head_dim, err));
    int32_t v_len = hp->head_dim;
    HS_TRY(get_i32(g, an, "attention.value_length", false, hp->head_dim, &v_len, err));
    if (hp->head_dim <= 0 || hp->head_dim % 2 != 0 || v_len != hp->head_dim ||
        hp->head_dim > 1024) {
        return hs_error_set(err, HS_E_NOTSUP, "head dimension %d (value %d) is not supported",
                            hp->head_dim, v_len);
    }
    HS_TRY(get_f32(g, an, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->norm_eps, err));
    HS_TRY(get_f32(g, an, "rope.freq_base", 10000.0f, &hp->rope.freq_base, err));
    HS_TRY(get_i32(g, an, "rope.dimension_count", false, hp->head_dim, &hp->rope.n_rot, err));
    if (hp->rope.n_rot <= 0 || hp->rope.n_rot > hp->head_dim || hp->rope.n_rot % 2 != 0) {
        return hs_error_set(err, HS_E_FORMAT, "rope.dimension_count %d does not fit head dim %d",
                            hp->rope.n_rot, hp->head_dim);
    }
    hp->rope.freq_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", an);
    struct hs_gguf_str scaling;
    if (hs_gguf_get_str(g, key, &scaling) == HS_OK && !hs_gguf_str_eq(scaling, "none")) {
        if (!hs_gguf_str_eq(scaling, "linear")) {
            return hs_error_set(err, HS_E_NOTSUP, "rope scaling '%.*s' is not supported",
                                (int)HS_MIN(scaling.len, 32), scaling.data);
        }
        float factor = 1.0f;
        HS_TRY(get_f32(g, an, "rope.scaling.factor", 1.0f, &factor, err));
        if (!(factor > 0.0f)) {
            return hs_error_set(err, HS_E_FORMAT, "rope.scaling.factor must be positive");
        }
        hp->rope.freq_scale = 1.0f / factor;
    } else {
        float factor = 0.0f;
        HS_TRY(get_f32(g, an, "rope.scale_linear", 0.0f, &factor, err));
        if (factor > 0.0f) {
            hp->rope.freq_scale = 1.0f / factor;
        }
    }
    hp->rope.mode = ad->rope;
    if (hp->arch == HS_ARCH_QWEN2VL) {
        HS_TRY(hs__mrope_load_sections(g, an, hp, err));
    }
    hp->qkv_bias = ad->qkv_bias;
    hp->qk_norm = ad->qk_norm;
    HS_TRY(get_i32(g, an, "attention.cla_share_factor", false, 1, &hp->cla_share, err));
    if (hp->cla_share < 1 || hp->cla_share > hp->n_layer) {
        return hs_error_set(err, HS_E_FORMAT,
                            "attention.cla_share_factor %d must be between 1 and the %d layers",
                            hp->cla_share, hp->n_layer);
    }
    hp->n_layer_kv = (hp->n_layer + hp->cla_share - 1) / hp->cla_share;
    return load_router(g, ad, hp, err);
}

/* ---- tensors ---- */

static hs_status bind_tensor(struct hs_model *m, struct hs_tensor *t, const char *name, int64_t ne0,
                             int64_t ne1, bool required, struct hs_error *err)
{
    const struct hs_gguf_tensor *gt = hs_gguf_find_tensor(m->gguf, name);
    memset(t, 0, sizeof(*t));
    if (!gt) {
        return required ? hs_error_set(err, HS_E_FORMAT, "model lacks the tensor '%s'", name)
                        : HS_OK;
    }
    bool one_d = ne1 == 0;
    if (gt->ne[0] != ne0 || (one_d ? gt->n_dims != 1 : (gt->ne[1] != ne1 || gt->n_dims != 2))) {
        return hs_error_set(err, HS_E_FORMAT,
                            "tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                            (long long)gt->ne[0], (long long)gt->ne[1], (long long)ne0,
                            (long long)(one_d ? 1 : ne1));
    }
    const struct hs_type_traits *tr = hs_type_traits(gt->type);
    if (!tr->supported || (one_d && gt->type != HS_TYPE_F32)) {
        return hs_error_set(err, HS_E_NOTSUP,
                            "tensor '%s' has weight type %s, which is not supported", name,
                            hs_type_str(gt->type));
    }
    int64_t ne[2] = {ne0, one_d ? 1 : ne1};
    HS_TRY(hs_tensor_init(t, gt->type, 2, ne, (void *)gt->data));
    m->size_bytes += gt->size_bytes;
    m->n_params += ne[0] * ne[1];
    return HS_OK;
}

/* A stack of n_expert matrices [ne2][ne1][ne0] (GGUF shape [ne0, ne1, ne2]). */
static hs_status bind_experts(struct hs_model *m, struct hs_tensor *t, const char *name,
                              int64_t ne0, int64_t ne1, int64_t ne2, struct hs_error *err)
{
    const struct hs_gguf_tensor *gt = hs_gguf_find_tensor(m->gguf, name);
    memset(t, 0, sizeof(*t));
    if (!gt) {
        return hs_error_set(err, HS_E_FORMAT, "model lacks the tensor '%s'", name);
    }
    if (gt->n_dims != 3 || gt->ne[0] != ne0 || gt->ne[1] != ne1 || gt->ne[2] != ne2) {
        return hs_error_set(err, HS_E_FORMAT,
                            "tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld]",
                            name, (long long)gt->ne[0], (long long)gt->ne[1], (long long)gt->ne[2],
                            (long long)ne0, (long long)ne1, (long long)ne2);
    }
    if (!hs_type_traits(gt->type)->supported) {
        return hs_error_set(err, HS_E_NOTSUP,
                            "tensor '%s' has weight type %s, which is not supported", name,
                            hs_type_str(gt->type));
    }
    const int64_t ne[3] = {ne0, ne1, ne2};
    HS_TRY(hs_tensor_init(t, gt->type, 3, ne, (void *)gt->data));
    m->size_bytes += gt->size_bytes;
    m->n_params += ne0 * ne1 * ne2;
    return HS_OK;
}

static hs_status load_tensors(struct hs_model *m, struct hs_error *err)
{
    const struct hs_model_hparams *hp = &m->hp;
    const int64_t n_q = (int64_t)hp->n_head * hp->head_dim;
    const int64_t n_kv = (int64_t)hp->n_head_kv * hp->head_dim;
    HS_TRY(bind_tensor(m, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, true, err));
    HS_TRY(bind_tensor(m, &m->output_norm, "output_norm.weight", hp->n_embd, 0, true, err));
    HS_TRY(bind_tensor(m, &m->output, "output.weight", hp->n_embd, hp->n_vocab, false, err));
    if (!m->output.data) {
        m->output = m->tok_embd;
        m->hp.tied_output = true;
    }
    m->layers = calloc((size_t)hp->n_layer, sizeof(*m->layers));
    if (!m->layers) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory for %d layers", hp->n_layer);
    }
    const bool bias = hp->qkv_bias;
    const bool qk_norm = hp->qk_norm != HS_QK_NORM_NONE;
    const bool full = hp->qk_norm == HS_QK_NORM_FULL;
    const int32_t n_exp = hp->router.n_expert;
    const int64_t n_ff_e = hp->n_ff_exp;
    char name[96];
#define BIND(field, suffix, ne0, ne1, req)                                                         \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%d." suffix, il);                                        \
        HS_TRY(bind_tensor(m, &l->field, name, (ne0), (ne1), (req), err));                         \
    } while (0)
#define BIND3(field, suffix, ne0, ne1)                                                             \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%d." suffix, il);                                        \
        HS_TRY(bind_experts(m, &l->field, name, (ne0), (ne1), n_exp, err));                        \
    } while (0)
    for (int il = 0; il < hp->n_layer; il++) {
        struct hs_layer *l = &m->layers[il];
        /* Cross-layer attention: the first layer of each group computes the K/V all of them
         * read; the others have no K/V weights. */
        const bool own_kv = il % hp->cla_share == 0;
        l->kv_layer = il / hp->cla_share;
        BIND(attn_norm, "attn_norm.weight", hp->n_embd, 0, true);
        BIND(wq, "attn_q.weight", hp->n_embd, n_q, true);
        BIND(wk, "attn_k.weight", hp->n_embd, n_kv, own_kv);
        BIND(wv, "attn_v.weight", hp->n_embd, n_kv, own_kv);
        if (!own_kv && (l->wk.data || l->wv.data)) {
            return hs_error_set(err, HS_E_FORMAT,
                                "layer %d has K/V weights, but with cla_share_factor %d it reads "
                                "layer %d's",
                                il, hp->cla_share, il - il % hp->cla_share);
        }
        BIND(wo, "attn_output.weight", n_q, hp->n_embd, true);
        BIND(bq, "attn_q.bias", n_q, 0, bias);
        BIND(bk, "attn_k.bias", n_kv, 0, bias && own_kv);
        BIND(bv, "attn_v.bias", n_kv, 0, bias && own_kv);
        BIND(q_norm, "attn_q_norm.weight", full ? n_q : hp->head_dim, 0, qk_norm);
        BIND(k_norm, "attn_k_norm.weight", full ? n_kv : hp->head_dim, 0, qk_norm && own_kv);
        BIND(ffn_norm, "ffn_norm.weight", hp->n_embd, 0, true);
        snprintf(name, sizeof(name), "blk.%d.ffn_gate_inp.weight", il);
        const bool moe_layer = hs_gguf_find_tensor(m->gguf, name) != NULL;
        if (moe_layer && n_exp == 0) {
            return hs_error_set(err, HS_E_FORMAT,
                                "'%s' is an expert router, but the model's metadata has no "
                                "%s.expert_count",
                                name, hs_arch_str(hp->arch));
        }
        if (!moe_layer && archs[hp->arch].moe == 2) {
            return hs_error_set(err, HS_E_FORMAT, "model lacks the tensor '%s'", name);
        }
        if (!moe_layer) {
            BIND(ffn_gate, "ffn_gate.weight", hp->n_embd, hp->n_ff, true);
            BIND(ffn_up, "ffn_up.weight", hp->n_embd, hp->n_ff, true);
            BIND(ffn_down, "ffn_down.weight", hp->n_ff, hp->n_embd, true);
            continue;
        }
        BIND(ffn_gate_inp, "ffn_gate_inp.weight", hp->n_embd, n_exp, true);
        if (l->ffn_gate_inp.type != HS_TYPE_F32) {
            return hs_error_set(err, HS_E_NOTSUP, "expert router '%s' is %s; only f32 is supported",
                                name, hs_type_str(l->ffn_gate_inp.type));
        }
        BIND3(ffn_gate_exps, "ffn_gate_exps.weight", hp->n_embd, n_ff_e);
        BIND3(ffn_up_exps, "ffn_up_exps.weight", hp->n_embd, n_ff_e);
        BIND3(ffn_down_exps, "ffn_down_exps.weight", n_ff_e, hp->n_embd);
        const bool shared = hp->n_ff_shexp > 0;
        BIND(ffn_gate_shexp, "ffn_gate_shexp.weight", hp->n_embd, hp->n_ff_shexp, shared);
        BIND(ffn_up_shexp, "ffn_up_shexp.weight", hp->n_embd, hp->n_ff_shexp, shared);
        BIND(ffn_down_shexp, "ffn_down_shexp.weight", hp->n_ff_shexp, hp->n_embd, shared);
        BIND(ffn_gate_inp_shexp, "ffn_gate_inp_shexp.weight", hp->n_embd, 0,
             shared && archs[hp->arch].shared_gate);
        l->moe = (struct hs_moe_layer){
            .gate_inp = &l->ffn_gate_inp,
            .gate_exps = &l->ffn_gate_exps,
            .up_exps = &l->ffn_up_exps,
            .down_exps = &l->ffn_down_exps,
            .gate_shexp = shared ? &l->ffn_gate_shexp : NULL,
            .up_shexp = shared ? &l->ffn_up_shexp : NULL,
            .down_shexp = shared ? &l->ffn_down_shexp : NULL,
            .gate_inp_shexp = l->ffn_gate_inp_shexp.data ? &l->ffn_gate_inp_shexp : NULL,
        };
    }
#undef BIND3
#undef BIND
    return HS_OK;
}

/* What one decoded token reads: every weight but the embeddings (one row of them), and k of
 * each layer's n experts. */
static void count_active(struct hs_model *m)
{
    const struct hs_model_hparams *hp = &m->hp;
    const size_t emb_row = hs_type_row_size(m->tok_embd.type, hp->n_embd);
    size_t bytes = m->size_bytes - (m->hp.tied_output ? 0 : hs_tensor_nbytes(&m->tok_embd)) +
                   (m->hp.tied_output ? 0 : emb_row);
    int64_t params = m->n_params - (m->hp.tied_output ? 0 : (int64_t)hp->n_vocab * hp->n_embd) +
                     (m->hp.tied_output ? 0 : hp->n_embd);
    const int32_t n = hp->router.n_expert, k = hp->router.n_expert_used;
    for (int il = 0; il < hp->n_layer; il++) {
        const struct hs_layer *l = &m->layers[il];
        if (!l->ffn_gate_inp.data) {
            continue;
        }
        const struct hs_tensor *e[3] = {&l->ffn_gate_exps, &l->ffn_up_exps, &l->ffn_down_exps};
        for (int i = 0; i < 3; i++) {
            const size_t all = hs_tensor_nbytes(e[i]);
            bytes -= all - all / (size_t)n * (size_t)k;
            const int64_t np = e[i]->ne[0] * e[i]->ne[1] * e[i]->ne[2];
            params -= np - np / n * k;
        }
    }
    m->active_bytes = bytes;
    m->n_active_params = params;
}

/* Everything after the GGUF is open; m->gguf is set. */
static hs_status load_model(struct hs_model *m, struct hs_error *err)
{
    HS_TRY(load_hparams(m, err));
    HS_TRY(hs_vocab_load(m->gguf, &m->vocab, err));
    m->hp.n_vocab = hs_vocab_n_tokens(m->vocab);
    HS_TRY(load_tensors(m, err));
    struct hs_gguf_str tmpl;
    if (hs_gguf_get_str(m->gguf, "tokenizer.chat_template", &tmpl) == HS_OK) {
        m->chat_template = strndup(tmpl.data, tmpl.len);
        if (!m->chat_template) {
            return hs_error_set(err, HS_E_NOMEM, "out of memory");
        }
    }
    count_active(m);
    const struct hs_layer *l0 = &m->layers[0];
    char moe[48] = "";
    if (m->hp.router.n_expert > 0) {
        snprintf(moe, sizeof(moe), " moe %d/%d%s", m->hp.router.n_expert_used,
                 m->hp.router.n_expert, m->hp.n_ff_shexp > 0 ? "+shared" : "");
    }
    char cla[24] = "";
    if (m->hp.cla_share > 1) {
        snprintf(cla, sizeof(cla), " cla %d", m->hp.cla_share);
    }
    snprintf(m->desc, sizeof(m->desc), "%s %dd %dL %d/%dh %s%s%s%s", hs_arch_str(m->hp.arch),
             m->hp.n_embd, m->hp.n_layer, m->hp.n_head, m->hp.n_head_kv,
             hs_type_str(l0->ffn_up.data ? l0->ffn_up.type : l0->ffn_up_exps.type), moe, cla,
             m->hp.tied_output ? " tied" : "");
    return HS_OK;
}

hs_status hs_model_load(const char *path, struct hs_model **out, struct hs_error *err)
{
    *out = NULL;
    struct hs_model *m = calloc(1, sizeof(*m));
    if (!m) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    hs_status st = hs_gguf_open(path, &m->gguf, err);
    if (st == HS_OK) {
        st = load_model(m, err);
    }
    if (st != HS_OK) {
        hs_model_destroy(m);
        return st;
    }
    *out = m;
    return HS_OK;
}

hs_status hs_model_load_memory(const void *data, size_t size, struct hs_model **out,
                               struct hs_error *err)
{
    *out = NULL;
    struct hs_model *m = calloc(1, sizeof(*m));
    if (!m) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    hs_status st = hs_gguf_open_memory(data, size, &m->gguf, err);
    if (st == HS_OK) {
        st = load_model(m, err);
    }
    if (st != HS_OK) {
        hs_model_destroy(m);
        return st;
    }
    *out = m;
    return HS_OK;
}

void hs_model_destroy(struct hs_model *m)
{
    if (!m) {
        return;
    }
    free(m->chat_template);
    free(m->layers);
    hs_vocab_destroy(m->vocab);
    hs_gguf_close(m->gguf);
    free(m);
}

const struct hs_model_hparams *hs_model_hparams(const struct hs_model *m)
{
    return &m->hp;
}

const struct hs_vocab *hs_model_vocab(const struct hs_model *m)
{
    return m->vocab;
}

const struct hs_gguf *hs_model_gguf(const struct hs_model *m)
{
    return m->gguf;
}

const char *hs_model_chat_template(const struct hs_model *m)
{
    return m->chat_template;
}

const char *hs_model_desc(const struct hs_model *m)
{
    return m->desc;
}

size_t hs_model_size_bytes(const struct hs_model *m)
{
    return m->size_bytes;
}

int64_t hs_model_n_params(const struct hs_model *m)
{
    return m->n_params;
}

size_t hs_model_active_bytes(const struct hs_model *m)
{
    return m->active_bytes;
}

int64_t hs_model_n_active_params(const struct hs_model *m)
{
    return m->n_active_params;
}
