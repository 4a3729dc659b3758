/* Model loading: GGUF metadata -> hyper-parameters, tensors -> weight views. */
#include "model/model-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/vocab.h"

static const char *const arch_names[HS_ARCH_COUNT] = {"llama", "qwen2", "qwen3"};

const char *hs_arch_str(enum hs_arch a)
{
    return (unsigned)a < HS_ARCH_COUNT ? arch_names[a] : "unknown";
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
        return hs_error_set(err, HS_E_FORMAT, "model metadata key '%s' = %lld is out of range",
                            key, (long long)v);
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

static hs_status load_hparams(struct hs_model *m, struct hs_error *err)
{
    const struct hs_gguf *g = m->gguf;
    struct hs_model_hparams *hp = &m->hp;
    struct hs_gguf_str arch_s;
    if (hs_gguf_get_str(g, "general.architecture", &arch_s) != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT,
                            "not a model file: general.architecture is missing");
    }
    int a = 0;
    for (; a < HS_ARCH_COUNT; a++) {
        if (hs_gguf_str_eq(arch_s, arch_names[a])) {
            break;
        }
    }
    if (a == HS_ARCH_COUNT) {
        return hs_error_set(err, HS_E_NOTSUP,
                            "architecture '%.*s' is not supported (supported: llama, qwen2, qwen3)",
                            (int)HS_MIN(arch_s.len, 64), arch_s.data);
    }
    hp->arch = (enum hs_arch)a;
    const char *an = arch_names[a];
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
    if (hp->n_head % hp->n_head_kv != 0) {
        return hs_error_set(err, HS_E_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                            hp->n_head, hp->n_head_kv);
    }
    HS_TRY(get_i32(g, an, "attention.key_length", false, hp->n_embd / hp->n_head, &hp->head_dim,
                   err));
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
    hp->rope.mode = hp->arch == HS_ARCH_LLAMA ? HS_ROPE_NORM : HS_ROPE_NEOX;
    return HS_OK;
}

/* ---- tensors ---- */

static hs_status bind_tensor(struct hs_model *m, struct hs_tensor *t, const char *name,
                             int64_t ne0, int64_t ne1, bool required, struct hs_error *err)
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
        return hs_error_set(err, HS_E_NOTSUP, "tensor '%s' has weight type %s, which is not supported",
                            name, hs_type_str(gt->type));
    }
    int64_t ne[2] = {ne0, one_d ? 1 : ne1};
    HS_TRY(hs_tensor_init(t, gt->type, 2, ne, (void *)gt->data));
    m->size_bytes += gt->size_bytes;
    m->n_params += ne[0] * ne[1];
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
    const bool bias = hp->arch == HS_ARCH_QWEN2;
    const bool qk_norm = hp->arch == HS_ARCH_QWEN3;
    char name[96];
#define BIND(field, suffix, ne0, ne1, req)                                                         \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%d." suffix, il);                                        \
        HS_TRY(bind_tensor(m, &l->field, name, (ne0), (ne1), (req), err));                         \
    } while (0)
    for (int il = 0; il < hp->n_layer; il++) {
        struct hs_layer *l = &m->layers[il];
        BIND(attn_norm, "attn_norm.weight", hp->n_embd, 0, true);
        BIND(wq, "attn_q.weight", hp->n_embd, n_q, true);
        BIND(wk, "attn_k.weight", hp->n_embd, n_kv, true);
        BIND(wv, "attn_v.weight", hp->n_embd, n_kv, true);
        BIND(wo, "attn_output.weight", n_q, hp->n_embd, true);
        BIND(bq, "attn_q.bias", n_q, 0, bias);
        BIND(bk, "attn_k.bias", n_kv, 0, bias);
        BIND(bv, "attn_v.bias", n_kv, 0, bias);
        BIND(q_norm, "attn_q_norm.weight", hp->head_dim, 0, qk_norm);
        BIND(k_norm, "attn_k_norm.weight", hp->head_dim, 0, qk_norm);
        BIND(ffn_norm, "ffn_norm.weight", hp->n_embd, 0, true);
        snprintf(name, sizeof(name), "blk.%d.ffn_gate_inp.weight", il);
        if (hs_gguf_find_tensor(m->gguf, name)) {
            return hs_error_set(err, HS_E_NOTSUP,
                                "mixture-of-experts layers are not supported yet ('%s')", name);
        }
        BIND(ffn_gate, "ffn_gate.weight", hp->n_embd, hp->n_ff, true);
        BIND(ffn_up, "ffn_up.weight", hp->n_embd, hp->n_ff, true);
        BIND(ffn_down, "ffn_down.weight", hp->n_ff, hp->n_embd, true);
    }
#undef BIND
    return HS_OK;
}

hs_status hs_model_load(const char *path, struct hs_model **out, struct hs_error *err)
{
    hs_status st;
    *out = NULL;
    struct hs_model *m = calloc(1, sizeof(*m));
    if (!m) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    st = hs_gguf_open(path, &m->gguf, err);
    if (st != HS_OK) {
        goto fail;
    }
    st = load_hparams(m, err);
    if (st != HS_OK) {
        goto fail;
    }
    st = hs_vocab_load(m->gguf, &m->vocab, err);
    if (st != HS_OK) {
        goto fail;
    }
    m->hp.n_vocab = hs_vocab_n_tokens(m->vocab);
    st = load_tensors(m, err);
    if (st != HS_OK) {
        goto fail;
    }
    struct hs_gguf_str tmpl;
    if (hs_gguf_get_str(m->gguf, "tokenizer.chat_template", &tmpl) == HS_OK) {
        m->chat_template = strndup(tmpl.data, tmpl.len);
        if (!m->chat_template) {
            st = hs_error_set(err, HS_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    snprintf(m->desc, sizeof(m->desc), "%s %dd %dL %d/%dh %s%s", hs_arch_str(m->hp.arch),
             m->hp.n_embd, m->hp.n_layer, m->hp.n_head, m->hp.n_head_kv,
             hs_type_str(m->layers[0].ffn_up.type), m->hp.tied_output ? " tied" : "");
    *out = m;
    return HS_OK;
fail:
    hs_model_destroy(m);
    return st;
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
