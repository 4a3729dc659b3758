/* Contexts and the forward pass of the dense decoder-only architectures (llama, qwen2, qwen3).
 *
 * Data flow of one call: gather the batch's tokens, positions and KV slots; embed; for each layer
 * norm -> QKV -> (bias, q/k norm) -> RoPE -> store K/V -> paged attention -> output projection ->
 * residual -> norm -> FFN -> residual; then the output norm and projection for the rows whose
 * logits were asked for. Every operation goes through the backend interface; attention may run
 * on a different backend than the rest. */
#include "model/model-impl.h"

#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct hs_context {
    struct hs_model *model;
    struct hs_backend *be;      /* dense ops and FFN */
    struct hs_backend *attn_be; /* attention; == be unless placed elsewhere */
    int32_t n_ctx;
    int32_t n_kv_blocks;
    int32_t block_size;
    int32_t n_batch;
    int32_t n_seq_max;
    enum hs_type kv_type;

    void *kv_mem; /* one allocation for all layers' K and V */
    size_t kv_bytes;
    struct hs_tensor *k_cache; /* [n_layer_kv] of [n_kv_blocks][block_size][n_head_kv][head_dim] */
    struct hs_tensor *v_cache; /* same */

    struct hs_moe *moe;           /* NULL for dense models */
    struct hs_backend **extra_be; /* [n_extra_be] backends experts are placed on; owns */
    char **extra_names;           /* [n_extra_be] their placement names ("cpu:1"); owns */
    int32_t n_extra_be;

    void *act_mem;                 /* activations, sized for n_batch rows */
    float *x;                      /* [n_batch][n_embd] residual stream */
    float *h;                      /* [n_batch][n_embd] normed input */
    float *q;                      /* [n_batch][n_head][head_dim] */
    float *k;                      /* [n_batch][n_head_kv][head_dim] */
    float *v;                      /* [n_batch][n_head_kv][head_dim] */
    float *attn;                   /* [n_batch][n_head][head_dim] */
    float *tmp;                    /* [n_batch][n_embd] */
    float *gate;                   /* [n_batch][n_ff] */
    float *up;                     /* [n_batch][n_ff] */
    float *logits;                 /* [n_batch][n_vocab] */
    hs_token *tokens;              /* [n_batch] */
    int32_t *pos;                  /* [n_batch] */
    int32_t *slots;                /* [n_batch] */
    int32_t *out_rows;             /* [n_batch] rows whose logits are wanted */
    struct hs_attn_seq *attn_seqs; /* [n_batch] (a sequence has at least one token) */
    int32_t n_logit_rows;
};

struct hs_context_params hs_context_default_params(void)
{
    struct hs_context_params p = {
        .n_ctx = 0,
        .n_kv_blocks = 0,
        .block_size = 16,
        .n_seq_max = 1,
        .n_batch = 512,
        .kv_type = HS_TYPE_F16,
        .backend = "cpu",
        .attn_backend = NULL,
        .expert_placement = NULL,
        .backend_params = hs_backend_default_params(),
    };
    return p;
}

static size_t carve(size_t *off, size_t bytes)
{
    size_t at = *off;
    *off += hs_align_up(bytes, HS_ALIGN_BYTES);
    return at;
}

/* The backend a placement rule names: "NAME" or "NAME:INSTANCE" (instance 0, the default, of
 * the context's own backend type is the context's backend; any other is created once and shared
 * by every expert placed there, e.g. "cpu:1" for a second CPU backend with its own threads). */
static hs_status placement_backend(struct hs_context *ctx, const char *spec,
                                   const struct hs_backend_params *bp, struct hs_backend **out,
                                   struct hs_error *err)
{
    char name[64];
    long instance = 0;
    const char *colon = strchr(spec, ':');
    const size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (len == 0 || len >= sizeof(name)) {
        return hs_error_set(err, HS_E_INVAL, "expert placement backend '%s' is not NAME[:N]", spec);
    }
    for (size_t i = 0; i < len; i++) {
        name[i] = (char)tolower((unsigned char)spec[i]); /* llama.cpp writes "CPU" */
    }
    name[len] = '\0';
    if (colon) {
        char *end = NULL;
        instance = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || instance < 0 || instance > 64) {
            return hs_error_set(err, HS_E_INVAL,
                                "expert placement backend '%s': the instance after ':' must be a "
                                "number from 0 to 64",
                                spec);
        }
    }
    if (instance == 0 && strcmp(name, hs_backend_name(ctx->be)) == 0) {
        *out = ctx->be;
        return HS_OK;
    }
    for (int32_t i = 0; i < ctx->n_extra_be; i++) {
        if (strcasecmp(ctx->extra_names[i], spec) == 0 ||
            (instance == 0 && !colon && strcmp(ctx->extra_names[i], name) == 0)) {
            *out = ctx->extra_be[i];
            return HS_OK;
        }
    }
    struct hs_backend **grown =
        realloc(ctx->extra_be, (size_t)(ctx->n_extra_be + 1) * sizeof(*grown));
    if (grown) {
        ctx->extra_be = grown;
    }
    char **grown_names =
        realloc(ctx->extra_names, (size_t)(ctx->n_extra_be + 1) * sizeof(*grown_names));
    if (grown_names) {
        ctx->extra_names = grown_names;
    }
    char *copy = strdup(spec);
    for (char *c = copy; c && *c && *c != ':'; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    if (!grown || !grown_names || !copy) {
        free(copy);
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    struct hs_backend *be = NULL;
    hs_status st = hs_backend_create(name, bp, &be);
    if (st == HS_E_NOENT) {
        free(copy);
        char names[128] = "";
        for (int i = 0; i < hs_backend_reg_count(); i++) {
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                     hs_backend_reg_name(i));
        }
        return hs_error_set(err, HS_E_INVAL,
                            "expert placement names the backend '%s', which is not compiled in "
                            "(backends: %s)",
                            name, names);
    }
    if (st != HS_OK) {
        free(copy);
        return hs_error_set(err, st, "cannot create backend '%s' for experts: %s", spec,
                            hs_status_str(st));
    }
    ctx->extra_be[ctx->n_extra_be] = be;
    ctx->extra_names[ctx->n_extra_be] = copy;
    ctx->n_extra_be++;
    *out = be;
    return HS_OK;
}

/* Expert placement rules "REGEX=BACKEND,..." (see hs_context_params.expert_placement). */
static hs_status place_experts(struct hs_context *ctx, const struct hs_context_params *p,
                               struct hs_error *err)
{
    if (!p->expert_placement || !p->expert_placement[0]) {
        return HS_OK;
    }
    const struct hs_model *m = ctx->model;
    const struct hs_model_hparams *hp = &m->hp;
    hs_status st = HS_OK;
    char *rules = strdup(p->expert_placement);
    if (!rules) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    enum { MAX_RULES = 32 };
    regex_t re[MAX_RULES];
    struct hs_backend *be[MAX_RULES];
    int n_rules = 0;
    char *save = NULL;
    for (char *rule = strtok_r(rules, ",", &save); rule; rule = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(rule, '=');
        if (!eq || eq == rule || !eq[1]) {
            st = hs_error_set(err, HS_E_INVAL,
                              "expert placement rule '%s' is not REGEX=BACKEND (e.g. "
                              "'blk\\.[0-9]+\\.expert\\.[0-3]=cpu')",
                              rule);
            goto done;
        }
        if (n_rules == MAX_RULES) {
            st = hs_error_set(err, HS_E_INVAL, "more than %d expert placement rules", MAX_RULES);
            goto done;
        }
        *eq = '\0';
        int rc = regcomp(&re[n_rules], rule, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &re[n_rules], why, sizeof(why));
            st = hs_error_set(err, HS_E_INVAL, "expert placement pattern '%s': %s", rule, why);
            goto done;
        }
        n_rules++;
        st = placement_backend(ctx, eq + 1, &p->backend_params, &be[n_rules - 1], err);
        if (st != HS_OK) {
            goto done;
        }
    }
    for (int32_t il = 0; il < hp->n_layer; il++) {
        if (!m->layers[il].ffn_gate_inp.data) {
            continue;
        }
        const bool shared = m->layers[il].moe.gate_shexp != NULL;
        for (int32_t e = shared ? -1 : 0; e < hp->router.n_expert; e++) {
            /* The expert's own name, then the tensors it lives in (as llama.cpp names them). */
            static const char *const parts[3] = {"gate", "up", "down"};
            char names[4][64];
            if (e < 0) {
                snprintf(names[0], sizeof(names[0]), "blk.%d.expert.shared", il);
            } else {
                snprintf(names[0], sizeof(names[0]), "blk.%d.expert.%d", il, e);
            }
            for (int i = 0; i < 3; i++) {
                snprintf(names[i + 1], sizeof(names[i + 1]), "blk.%d.ffn_%s_%s.weight", il,
                         parts[i], e < 0 ? "shexp" : "exps");
            }
            int hit = -1;
            for (int r = 0; r < n_rules && hit < 0; r++) {
                for (int i = 0; i < 4 && hit < 0; i++) {
                    hit = regexec(&re[r], names[i], 0, NULL, 0) == 0 ? r : -1;
                }
            }
            if (hit < 0) {
                continue;
            }
            /* The backend must run this expert's weight types (checked now, not mid-request). */
            const struct hs_moe_layer *w = &m->layers[il].moe;
            const struct hs_tensor *ts[3] = {e < 0 ? w->gate_shexp : w->gate_exps,
                                             e < 0 ? w->up_shexp : w->up_exps,
                                             e < 0 ? w->down_shexp : w->down_exps};
            for (int i = 0; i < 3; i++) {
                if (!hs_backend_supports(be[hit], e < 0 ? HS_OP_FFN : HS_OP_MOE_FFN, ts[i]->type)) {
                    st = hs_error_set(err, HS_E_NOTSUP, "backend '%s' cannot run %s (%s weights)",
                                      hs_backend_name(be[hit]), names[0], hs_type_str(ts[i]->type));
                    goto done;
                }
            }
            const hs_status pst = hs_moe_set_backend(ctx->moe, il, e, be[hit]);
            HS_ASSERT(pst == HS_OK);
        }
    }
done:
    for (int r = 0; r < n_rules; r++) {
        regfree(&re[r]);
    }
    free(rules);
    return st;
}

hs_status hs_context_create(struct hs_model *m, const struct hs_context_params *p,
                            struct hs_context **out, struct hs_error *err)
{
    hs_status st;
    *out = NULL;
    const struct hs_model_hparams *hp = &m->hp;
    struct hs_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    ctx->model = m;
    ctx->n_ctx = p->n_ctx > 0 ? p->n_ctx : hp->n_ctx_train;
    ctx->block_size = p->block_size > 0 ? p->block_size : 16;
    ctx->n_seq_max = p->n_seq_max > 0 ? p->n_seq_max : 1;
    ctx->n_batch = p->n_batch > 0 ? p->n_batch : 512;
    ctx->kv_type = p->kv_type;
    if (ctx->kv_type != HS_TYPE_F16 && ctx->kv_type != HS_TYPE_F32) {
        st = hs_error_set(err, HS_E_INVAL, "KV cache type must be f16 or f32, not %s",
                          hs_type_str(ctx->kv_type));
        goto fail;
    }
    if (ctx->n_ctx > 1 << 24 || ctx->n_batch > 1 << 16 || ctx->block_size > 4096) {
        st = hs_error_set(err, HS_E_INVAL, "context, batch or block size is too large");
        goto fail;
    }
    int64_t blocks_per_seq = (ctx->n_ctx + ctx->block_size - 1) / ctx->block_size;
    int64_t n_blocks = p->n_kv_blocks > 0 ? p->n_kv_blocks : blocks_per_seq * ctx->n_seq_max;
    if (n_blocks > INT32_MAX / ctx->block_size) {
        st = hs_error_set(err, HS_E_INVAL, "KV cache of %lld blocks is too large",
                          (long long)n_blocks);
        goto fail;
    }
    ctx->n_kv_blocks = (int32_t)n_blocks;

    st = hs_backend_create(p->backend ? p->backend : "cpu", &p->backend_params, &ctx->be);
    if (st != HS_OK) {
        hs_error_set(err, st, "cannot create backend '%s': %s", p->backend ? p->backend : "cpu",
                     hs_status_str(st));
        goto fail;
    }
    ctx->attn_be = ctx->be;
    if (p->attn_backend && strcmp(p->attn_backend, hs_backend_name(ctx->be)) != 0) {
        st = hs_backend_create(p->attn_backend, &p->backend_params, &ctx->attn_be);
        if (st != HS_OK) {
            ctx->attn_be = NULL;
            hs_error_set(err, st, "cannot create attention backend '%s': %s", p->attn_backend,
                         hs_status_str(st));
            goto fail;
        }
    }

    /* KV cache: one allocation, per-layer views. */
    const int64_t kv_row = (int64_t)hp->n_head_kv * hp->head_dim;
    const size_t layer_bytes =
        (size_t)n_blocks * (size_t)ctx->block_size * hs_type_row_size(ctx->kv_type, kv_row);
    ctx->kv_bytes = 2 * layer_bytes * (size_t)hp->n_layer_kv;
    ctx->kv_mem = hs_alloc_aligned(ctx->kv_bytes);
    ctx->k_cache = calloc((size_t)hp->n_layer_kv, sizeof(*ctx->k_cache));
    ctx->v_cache = calloc((size_t)hp->n_layer_kv, sizeof(*ctx->v_cache));
    if (!ctx->kv_mem || !ctx->k_cache || !ctx->v_cache) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory for a KV cache of %zu MiB",
                          ctx->kv_bytes >> 20);
        goto fail;
    }
    for (int il = 0; il < hp->n_layer_kv; il++) {
        int64_t ne[4] = {hp->head_dim, hp->n_head_kv, ctx->block_size, n_blocks};
        char *base = (char *)ctx->kv_mem + 2 * layer_bytes * (size_t)il;
        hs_tensor_init(&ctx->k_cache[il], ctx->kv_type, 4, ne, base);
        hs_tensor_init(&ctx->v_cache[il], ctx->kv_type, 4, ne, base + layer_bytes);
    }

    /* Activations. */
    const size_t nb = (size_t)ctx->n_batch;
    const size_t f = sizeof(float);
    size_t off = 0;
    size_t o_x = carve(&off, nb * (size_t)hp->n_embd * f);
    size_t o_h = carve(&off, nb * (size_t)hp->n_embd * f);
    size_t o_q = carve(&off, nb * (size_t)hp->n_head * (size_t)hp->head_dim * f);
    size_t o_k = carve(&off, nb * (size_t)kv_row * f);
    size_t o_v = carve(&off, nb * (size_t)kv_row * f);
    size_t o_attn = carve(&off, nb * (size_t)hp->n_head * (size_t)hp->head_dim * f);
    size_t o_tmp = carve(&off, nb * (size_t)HS_MAX(hp->n_embd, hp->n_head * hp->head_dim) * f);
    size_t o_gate = carve(&off, nb * (size_t)hp->n_ff * f);
    size_t o_up = carve(&off, nb * (size_t)hp->n_ff * f);
    size_t o_logits = carve(&off, nb * (size_t)hp->n_vocab * f);
    size_t o_tokens = carve(&off, nb * sizeof(hs_token));
    size_t o_pos = carve(&off, nb * sizeof(int32_t));
    size_t o_slots = carve(&off, nb * sizeof(int32_t));
    size_t o_rows = carve(&off, nb * sizeof(int32_t));
    size_t o_seqs = carve(&off, nb * sizeof(struct hs_attn_seq));
    ctx->act_mem = hs_alloc_aligned(off);
    if (!ctx->act_mem) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory for activations (%zu MiB)", off >> 20);
        goto fail;
    }
    char *a = ctx->act_mem;
    ctx->x = (float *)(a + o_x);
    ctx->h = (float *)(a + o_h);
    ctx->q = (float *)(a + o_q);
    ctx->k = (float *)(a + o_k);
    ctx->v = (float *)(a + o_v);
    ctx->attn = (float *)(a + o_attn);
    ctx->tmp = (float *)(a + o_tmp);
    ctx->gate = (float *)(a + o_gate);
    ctx->up = (float *)(a + o_up);
    ctx->logits = (float *)(a + o_logits);
    ctx->tokens = (hs_token *)(a + o_tokens);
    ctx->pos = (int32_t *)(a + o_pos);
    ctx->slots = (int32_t *)(a + o_slots);
    ctx->out_rows = (int32_t *)(a + o_rows);
    ctx->attn_seqs = (struct hs_attn_seq *)(a + o_seqs);

    if (hp->router.n_expert > 0) {
        const struct hs_moe_params mp = {
            .router = hp->router,
            .n_layer = hp->n_layer,
            .n_embd = hp->n_embd,
            .n_ff = hp->n_ff_exp,
            .n_ff_shexp = hp->n_ff_shexp,
            .n_rows_max = ctx->n_batch,
        };
        st = hs_moe_create(&mp, &ctx->moe, err);
        if (st != HS_OK) {
            goto fail;
        }
        st = place_experts(ctx, p, err);
        if (st != HS_OK) {
            goto fail;
        }
    } else if (p->expert_placement && p->expert_placement[0]) {
        st = hs_error_set(err, HS_E_INVAL, "expert placement given, but %s has no experts",
                          hs_model_desc(m));
        goto fail;
    }
    *out = ctx;
    return HS_OK;
fail:
    hs_context_destroy(ctx);
    return st;
}

void hs_context_destroy(struct hs_context *ctx)
{
    if (!ctx) {
        return;
    }
    if (ctx->attn_be && ctx->attn_be != ctx->be) {
        hs_backend_destroy(ctx->attn_be);
    }
    hs_moe_destroy(ctx->moe);
    for (int32_t i = 0; i < ctx->n_extra_be; i++) {
        hs_backend_destroy(ctx->extra_be[i]);
        free(ctx->extra_names[i]);
    }
    free(ctx->extra_be);
    free(ctx->extra_names);
    hs_backend_destroy(ctx->be);
    hs_free_aligned(ctx->kv_mem);
    hs_free_aligned(ctx->act_mem);
    free(ctx->k_cache);
    free(ctx->v_cache);
    free(ctx);
}

int32_t hs_context_n_ctx(const struct hs_context *ctx)
{
    return ctx->n_ctx;
}

int32_t hs_context_n_kv_blocks(const struct hs_context *ctx)
{
    return ctx->n_kv_blocks;
}

int32_t hs_context_block_size(const struct hs_context *ctx)
{
    return ctx->block_size;
}

int32_t hs_context_n_batch(const struct hs_context *ctx)
{
    return ctx->n_batch;
}

size_t hs_context_kv_bytes(const struct hs_context *ctx)
{
    return ctx->kv_bytes;
}

struct hs_backend *hs_context_backend(struct hs_context *ctx)
{
    return ctx->be;
}

/* The context's distinct backends: the main one, attention's, placed experts'. */
static int32_t context_backends(const struct hs_context *ctx, struct hs_backend **out, int32_t max)
{
    int32_t n = 0;
    out[n++] = ctx->be;
    if (ctx->attn_be != ctx->be) {
        out[n++] = ctx->attn_be;
    }
    for (int32_t i = 0; i < ctx->n_extra_be && n < max; i++) {
        out[n++] = ctx->extra_be[i];
    }
    return n;
}

void hs_context_get_stats(const struct hs_context *ctx, struct hs_backend_stats *out)
{
    struct hs_backend *bes[64];
    const int32_t n = context_backends(ctx, bes, 64);
    memset(out, 0, sizeof(*out));
    for (int32_t i = 0; i < n; i++) {
        struct hs_backend_stats st;
        hs_backend_get_stats(bes[i], &st);
        for (int op = 0; op < HS_OP_COUNT; op++) {
            out->n_ops[op] += st.n_ops[op];
        }
        out->weight_bytes_read += st.weight_bytes_read;
        out->sim_time_s += st.sim_time_s;
    }
}

void hs_context_reset_stats(struct hs_context *ctx)
{
    struct hs_backend *bes[64];
    const int32_t n = context_backends(ctx, bes, 64);
    for (int32_t i = 0; i < n; i++) {
        hs_backend_reset_stats(bes[i]);
    }
}

const struct hs_moe *hs_context_moe(const struct hs_context *ctx)
{
    return ctx->moe;
}

const char *hs_context_expert_backend(const struct hs_context *ctx, int32_t il, int32_t e)
{
    const struct hs_model *m = ctx->model;
    if (!ctx->moe || il < 0 || il >= m->hp.n_layer || !m->layers[il].ffn_gate_inp.data || e < -1 ||
        e >= m->hp.router.n_expert || (e < 0 && !m->layers[il].moe.gate_shexp)) {
        return NULL;
    }
    const struct hs_backend *be = hs_moe_get_backend(ctx->moe, il, e);
    for (int32_t i = 0; be && i < ctx->n_extra_be; i++) {
        if (ctx->extra_be[i] == be) {
            return ctx->extra_names[i];
        }
    }
    return hs_backend_name(ctx->be);
}

const float *hs_context_logits(const struct hs_context *ctx)
{
    return ctx->logits;
}

int32_t hs_context_n_logit_rows(const struct hs_context *ctx)
{
    return ctx->n_logit_rows;
}

/* ---- the forward pass ---- */

/* Validates the batch and fills tokens, positions, slots, attention sequences and logit rows. */
static hs_status prepare_batch(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                               int32_t n_seqs, int32_t *n_tok_out)
{
    const int32_t n_vocab = ctx->model->hp.n_vocab;
    int64_t n_tok = 0;
    int32_t n_out = 0;
    if (n_seqs <= 0) {
        return HS_E_INVAL;
    }
    for (int32_t s = 0; s < n_seqs; s++) {
        const struct hs_forward_seq *fs = &seqs[s];
        if (fs->n_tokens <= 0 || fs->n_past < 0 || !fs->tokens || !fs->block_table ||
            fs->n_logits < 0 || fs->n_logits > fs->n_tokens ||
            (int64_t)fs->n_past + fs->n_tokens > ctx->n_ctx) {
            return HS_E_INVAL;
        }
        n_tok += fs->n_tokens;
        if (n_tok > ctx->n_batch) {
            return HS_E_INVAL;
        }
    }
    int32_t row = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        const struct hs_forward_seq *fs = &seqs[s];
        ctx->attn_seqs[s] = (struct hs_attn_seq){
            .n_past = fs->n_past,
            .n_new = fs->n_tokens,
            .q_row = row,
            .block_table = fs->block_table,
        };
        for (int32_t i = 0; i < fs->n_tokens; i++, row++) {
            const hs_token t = fs->tokens[i];
            const int32_t p = fs->n_past + i;
            const int32_t blk = fs->block_table[p / ctx->block_size];
            if (t < 0 || t >= n_vocab || blk < 0 || blk >= ctx->n_kv_blocks) {
                return HS_E_INVAL;
            }
            ctx->tokens[row] = t;
            ctx->pos[row] = p;
            ctx->slots[row] = blk * ctx->block_size + p % ctx->block_size;
            if (i >= fs->n_tokens - fs->n_logits) {
                ctx->out_rows[n_out++] = row;
            }
        }
    }
    ctx->n_logit_rows = n_out;
    *n_tok_out = (int32_t)n_tok;
    return HS_OK;
}

static struct hs_tensor mat(float *data, int64_t cols, int64_t rows)
{
    struct hs_tensor t;
    hs_tensor_init_2d(&t, HS_TYPE_F32, cols, rows, data);
    return t;
}

static struct hs_tensor heads(float *data, int64_t head_dim, int64_t n_head, int64_t rows)
{
    struct hs_tensor t;
    int64_t ne[3] = {head_dim, n_head, rows};
    hs_tensor_init(&t, HS_TYPE_F32, 3, ne, data);
    return t;
}

/* Per-head (or whole-projection) RMSNorm of q and, when this layer computes it, k. */
static hs_status qk_norm(struct hs_context *ctx, const struct hs_layer *l, int32_t n_tok)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const int64_t hd = hp->head_dim;
    const bool full = hp->qk_norm == HS_QK_NORM_FULL;
    struct hs_tensor qh =
        full ? mat(ctx->q, hd * hp->n_head, n_tok) : mat(ctx->q, hd, (int64_t)n_tok * hp->n_head);
    HS_TRY(hs_backend_rms_norm(ctx->be, &qh, &l->q_norm, hp->norm_eps, &qh));
    if (!l->wk.data) {
        return HS_OK;
    }
    struct hs_tensor kh = full ? mat(ctx->k, hd * hp->n_head_kv, n_tok)
                               : mat(ctx->k, hd, (int64_t)n_tok * hp->n_head_kv);
    return hs_backend_rms_norm(ctx->be, &kh, &l->k_norm, hp->norm_eps, &kh);
}

static hs_status attention_block(struct hs_context *ctx, int il, int32_t n_tok, int32_t n_seqs)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const struct hs_layer *l = &ctx->model->layers[il];
    struct hs_backend *be = ctx->be;
    const int64_t hd = hp->head_dim;
    /* Cross-layer attention: a layer without K/V weights reads the K/V its group's first layer
     * stored. */
    const bool own_kv = l->wk.data != NULL;

    struct hs_tensor x = mat(ctx->x, hp->n_embd, n_tok);
    struct hs_tensor h = mat(ctx->h, hp->n_embd, n_tok);
    struct hs_tensor q = mat(ctx->q, hp->n_head * hd, n_tok);
    struct hs_tensor k = mat(ctx->k, hp->n_head_kv * hd, n_tok);
    struct hs_tensor v = mat(ctx->v, hp->n_head_kv * hd, n_tok);

    HS_TRY(hs_backend_rms_norm(be, &x, &l->attn_norm, hp->norm_eps, &h));
    const struct hs_tensor *ws[3] = {&l->wq, &l->wk, &l->wv};
    struct hs_tensor *ys[3] = {&q, &k, &v};
    HS_TRY(hs_backend_matmul_multi(be, own_kv ? 3 : 1, ws, &h, ys));
    if (l->bq.data) {
        HS_TRY(hs_backend_add(be, &q, &l->bq, &q));
    }
    if (own_kv && l->bk.data) {
        HS_TRY(hs_backend_add(be, &k, &l->bk, &k));
        HS_TRY(hs_backend_add(be, &v, &l->bv, &v));
    }
    const bool norm_after = hp->qk_norm == HS_QK_NORM_HEAD_AFTER;
    if (l->q_norm.data && !norm_after) {
        HS_TRY(qk_norm(ctx, l, n_tok));
    }
    struct hs_tensor q3 = heads(ctx->q, hd, hp->n_head, n_tok);
    struct hs_tensor k3 = heads(ctx->k, hd, hp->n_head_kv, n_tok);
    struct hs_tensor v3 = heads(ctx->v, hd, hp->n_head_kv, n_tok);
    HS_TRY(hs_backend_rope(be, &q3, ctx->pos, &hp->rope));
    if (own_kv) {
        HS_TRY(hs_backend_rope(be, &k3, ctx->pos, &hp->rope));
    }
    if (l->q_norm.data && norm_after) {
        HS_TRY(qk_norm(ctx, l, n_tok));
    }

    struct hs_backend *abe = ctx->attn_be;
    const int32_t kvl = l->kv_layer;
    if (own_kv) {
        HS_TRY(hs_backend_kv_store(abe, &k3, &ctx->k_cache[kvl], ctx->slots));
        HS_TRY(hs_backend_kv_store(abe, &v3, &ctx->v_cache[kvl], ctx->slots));
    }
    struct hs_tensor o3 = heads(ctx->attn, hd, hp->n_head, n_tok);
    struct hs_attn_args args = {
        .q = &q3,
        .out = &o3,
        .k_cache = &ctx->k_cache[kvl],
        .v_cache = &ctx->v_cache[kvl],
        .block_size = ctx->block_size,
        .seqs = ctx->attn_seqs,
        .n_seqs = n_seqs,
        .scale = 1.0f / sqrtf((float)hd),
    };
    HS_TRY(hs_backend_attention(abe, &args));

    struct hs_tensor o = mat(ctx->attn, hp->n_head * hd, n_tok);
    struct hs_tensor t = mat(ctx->tmp, hp->n_embd, n_tok);
    HS_TRY(hs_backend_matmul(be, &l->wo, &o, &t));
    return hs_backend_add(be, &x, &t, &x);
}

static hs_status ffn_block(struct hs_context *ctx, int il, int32_t n_rows)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const struct hs_layer *l = &ctx->model->layers[il];
    struct hs_backend *be = ctx->be;
    struct hs_tensor x = mat(ctx->x, hp->n_embd, n_rows);
    struct hs_tensor h = mat(ctx->h, hp->n_embd, n_rows);
    struct hs_tensor t = mat(ctx->tmp, hp->n_embd, n_rows);
    HS_TRY(hs_backend_rms_norm(be, &x, &l->ffn_norm, hp->norm_eps, &h));
    if (l->moe.gate_inp) {
        HS_TRY(hs_moe_forward(ctx->moe, be, il, &l->moe, &h, &t));
        return hs_backend_add(be, &x, &t, &x);
    }
    struct hs_tensor g = mat(ctx->gate, hp->n_ff, n_rows);
    struct hs_tensor u = mat(ctx->up, hp->n_ff, n_rows);
    struct hs_ffn_args args = {
        .w_gate = &l->ffn_gate,
        .w_up = &l->ffn_up,
        .w_down = &l->ffn_down,
        .x = &h,
        .y = &t,
        .scratch_gate = &g,
        .scratch_up = &u,
    };
    HS_TRY(hs_backend_ffn(be, &args));
    return hs_backend_add(be, &x, &t, &x);
}

/* Moves the rows whose logits are wanted to the front of the residual stream, so the last
 * layer's FFN and the output projection run on those rows only. */
static void compact_rows(struct hs_context *ctx)
{
    const size_t row_bytes = (size_t)ctx->model->hp.n_embd * sizeof(float);
    for (int32_t i = 0; i < ctx->n_logit_rows; i++) {
        if (ctx->out_rows[i] != i) {
            memmove(ctx->x + (size_t)i * ctx->model->hp.n_embd,
                    ctx->x + (size_t)ctx->out_rows[i] * ctx->model->hp.n_embd, row_bytes);
        }
    }
}

hs_status hs_model_forward(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                           int32_t n_seqs)
{
    const struct hs_model *m = ctx->model;
    const struct hs_model_hparams *hp = &m->hp;
    int32_t n_tok = 0;
    ctx->n_logit_rows = 0;
    HS_TRY(prepare_batch(ctx, seqs, n_seqs, &n_tok));

    struct hs_tensor x = mat(ctx->x, hp->n_embd, n_tok);
    HS_TRY(hs_backend_get_rows(ctx->be, &m->tok_embd, ctx->tokens, &x));
    for (int il = 0; il < hp->n_layer; il++) {
        HS_TRY(attention_block(ctx, il, n_tok, n_seqs));
        int32_t n_rows = n_tok;
        if (il == hp->n_layer - 1) {
            /* Rows nobody reads need no FFN in the last layer. */
            compact_rows(ctx);
            n_rows = ctx->n_logit_rows;
        }
        if (n_rows > 0) {
            HS_TRY(ffn_block(ctx, il, n_rows));
        }
    }
    const int32_t n_out = ctx->n_logit_rows;
    if (n_out == 0) {
        return HS_OK;
    }
    struct hs_tensor xo = mat(ctx->x, hp->n_embd, n_out);
    struct hs_tensor ho = mat(ctx->h, hp->n_embd, n_out);
    struct hs_tensor lo = mat(ctx->logits, hp->n_vocab, n_out);
    HS_TRY(hs_backend_rms_norm(ctx->be, &xo, &m->output_norm, hp->norm_eps, &ho));
    return hs_backend_matmul(ctx->be, &m->output, &ho, &lo);
}
