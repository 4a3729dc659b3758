/* Contexts: the backends a model runs on, its KV stores and activation buffers, and their
 * accessors. The forward pass (forward.c) reads what is set up here.
 *
 * Not split, a context has one backend and one KV store. Split, it has two: the FFN backend
 * (dense layers, prefill attention, and the decode attention of store 0) and the attention
 * backend (decode attention of store 1), each with its own threads on its own cores; the
 * attention backend is driven by a thread of its own (attention/'s worker). */
#include "model/gguf/gguf.h"
#include "model/model-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        .attn_threads = 0,
        .n_kv_blocks_ffn = 0,
        .pingpong = false,
        .expert_placement = NULL,
        .backend_params = hs_backend_default_params(),
    };
    return p;
}

/* Allocates store s of n_blocks blocks in be's memory, with per-layer tensor views. */
static hs_status store_init(struct hs_context *ctx, int32_t s, struct hs_backend *be,
                            int32_t n_blocks, struct hs_error *err)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    struct hs__kv_store *kv = &ctx->stores[s];
    kv->be = be;
    kv->n_blocks = n_blocks;
    const int64_t kv_row = (int64_t)hp->n_head_kv * hp->head_dim;
    kv->block_bytes = (size_t)ctx->block_size * hs_type_row_size(ctx->kv_type, kv_row);
    kv->layer_bytes = (size_t)n_blocks * kv->block_bytes;
    kv->k = calloc((size_t)hp->n_layer_kv, sizeof(*kv->k));
    kv->v = calloc((size_t)hp->n_layer_kv, sizeof(*kv->v));
    if (!kv->k || !kv->v) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    if (n_blocks == 0) {
        return HS_OK;
    }
    const size_t bytes = 2 * kv->layer_bytes * (size_t)hp->n_layer_kv;
    hs_status st = hs_backend_buffer_alloc(be, bytes, &kv->buf);
    if (st != HS_OK) {
        return hs_error_set(err, st, "out of memory for a KV cache of %zu MiB on %s", bytes >> 20,
                            hs_backend_name(be));
    }
    char *base = hs_backend_buffer_base(kv->buf);
    for (int il = 0; il < hp->n_layer_kv; il++) {
        int64_t ne[4] = {hp->head_dim, hp->n_head_kv, ctx->block_size, n_blocks};
        char *at = base + 2 * kv->layer_bytes * (size_t)il;
        hs_tensor_init(&kv->k[il], ctx->kv_type, 4, ne, at);
        hs_tensor_init(&kv->v[il], ctx->kv_type, 4, ne, at + kv->layer_bytes);
    }
    return HS_OK;
}

static void store_finish(struct hs__kv_store *kv)
{
    hs_backend_buffer_free(kv->buf);
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof(*kv));
}

/* The FFN backend, and with a split the attention backend and its driver thread. */
/* The error for a backend that could not be created: an unknown name lists the compiled ones. */
static hs_status backend_error(struct hs_error *err, hs_status st, const char *what,
                               const char *name)
{
    if (st != HS_E_NOENT) {
        return hs_error_set(err, st, "cannot create %s '%s': %s", what, name, hs_status_str(st));
    }
    char names[128] = "";
    for (int i = 0; i < hs_backend_reg_count(); i++) {
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                 hs_backend_reg_name(i));
    }
    return hs_error_set(err, HS_E_INVAL, "%s '%s' is not compiled in (backends: %s)", what, name,
                        names);
}

/* Offers every 2-D weight of the model to the backend once (the CPU backend repacks Q4_0
 * matrices, and Q5_0 ones for decode on AVX2 CPUs). Out of memory leaves the rest on the file's
 * layout. */
static void prepare_weights(struct hs_context *ctx)
{
    const struct hs_gguf *g = ctx->model->gguf;
    for (int64_t i = 0; i < hs_gguf_n_tensors(g); i++) {
        const struct hs_gguf_tensor *gt = hs_gguf_tensor(g, i);
        struct hs_tensor w;
        if (gt->n_dims != 2 || hs_tensor_init(&w, gt->type, 2, gt->ne, (void *)gt->data) != HS_OK) {
            continue;
        }
        if (hs_backend_prepare_weight(ctx->be, &w) == HS_E_NOMEM) {
            HS_LOG_WARN("not enough memory to repack the weights: the rest keep the file's layout");
            return;
        }
    }
}

static hs_status create_backends(struct hs_context *ctx, const struct hs_context_params *p,
                                 struct hs_error *err)
{
    const char *name = p->backend ? p->backend : "cpu";
    const char *attn_name = p->attn_backend ? p->attn_backend : name;
    const bool split = strcmp(attn_name, name) != 0 || p->attn_threads > 0;
    struct hs_backend_params bp = p->backend_params;
    struct hs_backend_params abp = p->backend_params;
    if (split) {
        abp.n_threads = p->attn_threads > 0 ? p->attn_threads : 1;
        if (bp.n_threads <= 0) {
            const int cores = hs_backend_physical_cores();
            bp.n_threads = cores > abp.n_threads ? cores - abp.n_threads : 1;
        }
        abp.first_core = bp.first_core + bp.n_threads;
    }
    hs_status st = hs_backend_create(name, &bp, &ctx->be);
    if (st != HS_OK) {
        return backend_error(err, st, "backend", name);
    }
    ctx->attn_be = ctx->be;
    if (!split) {
        return HS_OK;
    }
    st = hs_backend_create(attn_name, &abp, &ctx->attn_be);
    if (st != HS_OK) {
        ctx->attn_be = NULL;
        return backend_error(err, st, "attention backend", attn_name);
    }
    if (!hs_backend_supports(ctx->attn_be, HS_OP_ATTENTION, ctx->kv_type)) {
        return hs_error_set(err, HS_E_NOTSUP,
                            "attention backend '%s' cannot run attention on a "
                            "%s KV cache",
                            attn_name, hs_type_str(ctx->kv_type));
    }
    st = hs_attn_worker_create(ctx->attn_be, &ctx->attn_worker);
    if (st != HS_OK) {
        return hs_error_set(err, st, "cannot start the attention thread: %s", hs_status_str(st));
    }
    return HS_OK;
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
    hs_split_model_init(&ctx->split);
    if (ctx->kv_type != HS_TYPE_F16 && ctx->kv_type != HS_TYPE_F32) {
        st = hs_error_set(err, HS_E_INVAL, "KV cache type must be f16 or f32, not %s",
                          hs_type_str(ctx->kv_type));
        goto fail;
    }
    if (ctx->n_ctx > 1 << 24 || ctx->n_batch > 1 << 16 || ctx->block_size > 4096 ||
        p->attn_threads > 1024 || p->n_kv_blocks_ffn < 0) {
        st = hs_error_set(err, HS_E_INVAL,
                          "context, batch, block size, attention threads or "
                          "FFN-side KV blocks out of range");
        goto fail;
    }
    int64_t blocks_per_seq = (ctx->n_ctx + ctx->block_size - 1) / ctx->block_size;
    int64_t n_blocks = p->n_kv_blocks > 0 ? p->n_kv_blocks : blocks_per_seq * ctx->n_seq_max;
    if (n_blocks > INT32_MAX / ctx->block_size ||
        p->n_kv_blocks_ffn > INT32_MAX / ctx->block_size) {
        st = hs_error_set(err, HS_E_INVAL, "KV cache of %lld blocks is too large",
                          (long long)HS_MAX(n_blocks, (int64_t)p->n_kv_blocks_ffn));
        goto fail;
    }

    st = create_backends(ctx, p, err);
    if (st != HS_OK) {
        goto fail;
    }
    prepare_weights(ctx);
    const bool split = ctx->attn_be != ctx->be;
    ctx->pingpong = split && p->pingpong;
    if (split) {
        ctx->n_stores = 2;
        st = store_init(ctx, 0, ctx->be, p->n_kv_blocks_ffn, err);
        if (st == HS_OK) {
            st = store_init(ctx, 1, ctx->attn_be, (int32_t)n_blocks, err);
        }
    } else {
        ctx->n_stores = 1;
        st = store_init(ctx, 0, ctx->be, (int32_t)n_blocks, err);
    }
    if (st != HS_OK) {
        goto fail;
    }

    /* Activations. */
    const int64_t kv_row = (int64_t)hp->n_head_kv * hp->head_dim;
    const size_t nb = (size_t)ctx->n_batch;
    const size_t f = sizeof(float);
    size_t off = 0;
    size_t o_x = hs_carve(&off, nb * (size_t)hp->n_embd * f);
    size_t o_h = hs_carve(&off, nb * (size_t)hp->n_embd * f);
    size_t o_q = hs_carve(&off, nb * (size_t)hp->n_head * (size_t)hp->head_dim * f);
    size_t o_k = hs_carve(&off, nb * (size_t)kv_row * f);
    size_t o_v = hs_carve(&off, nb * (size_t)kv_row * f);
    size_t o_attn = hs_carve(&off, nb * (size_t)hp->n_head * (size_t)hp->head_dim * f);
    size_t o_tmp = hs_carve(&off, nb * (size_t)HS_MAX(hp->n_embd, hp->n_head * hp->head_dim) * f);
    size_t o_gate = hs_carve(&off, nb * (size_t)hp->n_ff * f);
    size_t o_up = hs_carve(&off, nb * (size_t)hp->n_ff * f);
    size_t o_logits = hs_carve(&off, nb * (size_t)hp->n_vocab * f);
    /* The activations above are the FFN backend's memory; the batch's bookkeeping below is the
     * host's (ids, positions and slots go to ops as host arrays). */
    const size_t act_bytes = off;
    off = 0;
    size_t o_tokens = hs_carve(&off, nb * sizeof(hs_token));
    size_t o_pos = hs_carve(&off, nb * sizeof(int32_t));
    size_t o_mrope = hs_carve(&off, nb * 2 * sizeof(int32_t));
    size_t o_slots = hs_carve(&off, nb * sizeof(int32_t));
    size_t o_rows = hs_carve(&off, nb * sizeof(int32_t));
    size_t o_seqs = hs_carve(&off, nb * sizeof(struct hs_attn_seq));
    size_t o_store = hs_carve(&off, nb * sizeof(int32_t));
    size_t o_local = hs_carve(&off, nb * sizeof(struct hs_attn_seq));
    size_t o_remote = hs_carve(&off, nb * sizeof(struct hs_attn_seq));
    size_t o_items = hs_carve(&off, nb * sizeof(struct hs_split_item));
    size_t o_sseq[2], o_span[2];
    for (int i = 0; i < 2; i++) {
        o_sseq[i] = hs_carve(&off, nb * sizeof(struct hs_attn_span_seq));
        o_span[i] = hs_carve(&off, nb * sizeof(struct hs_attn_span));
    }
    st = hs_backend_buffer_alloc(ctx->be, act_bytes, &ctx->act_buf);
    ctx->host_mem = hs_alloc_aligned(off);
    if (st != HS_OK || !ctx->host_mem) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory for activations (%zu MiB)",
                          (act_bytes + off) >> 20);
        goto fail;
    }
    if (!hs_backend_buffer_is_host(ctx->act_buf)) {
        /* The forward pass hands logits out as host memory and writes K/V and attention output
         * through host pointers: a backend with memory of its own needs those copies first. */
        st = hs_error_set(err, HS_E_NOTSUP,
                          "backend '%s' keeps activations off the host, which "
                          "the forward pass does not support yet",
                          hs_backend_name(ctx->be));
        goto fail;
    }
    char *a = hs_backend_buffer_base(ctx->act_buf);
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
    ctx->act_base = a;
    a = ctx->host_mem;
    ctx->tokens = (hs_token *)(a + o_tokens);
    ctx->pos = (int32_t *)(a + o_pos);
    ctx->mrope_dhw = (int32_t *)(a + o_mrope);
    ctx->slots = (int32_t *)(a + o_slots);
    ctx->out_rows = (int32_t *)(a + o_rows);
    ctx->attn_seqs = (struct hs_attn_seq *)(a + o_seqs);
    ctx->seq_store = (int32_t *)(a + o_store);
    ctx->local = (struct hs_attn_seq *)(a + o_local);
    ctx->remote = (struct hs_attn_seq *)(a + o_remote);
    ctx->items = (struct hs_split_item *)(a + o_items);
    for (int i = 0; i < 2; i++) {
        ctx->span_seqs[i] = (struct hs_attn_span_seq *)(a + o_sseq[i]);
        ctx->spans[i] = (struct hs_attn_span *)(a + o_span[i]);
        st = hs_attn_exec_create(&ctx->attn_exec[i]);
        if (st != HS_OK) {
            st = hs_error_set(err, st, "out of memory");
            goto fail;
        }
    }

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
        st = hs__place_experts(ctx, p, err);
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
    hs_attn_worker_destroy(ctx->attn_worker);
    for (int i = 0; i < 2; i++) {
        hs_attn_exec_destroy(ctx->attn_exec[i]);
    }
    for (int32_t s = 0; s < HS_KV_STORES_MAX; s++) {
        store_finish(&ctx->stores[s]);
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
    hs_backend_buffer_free(ctx->act_buf); /* before its backend */
    hs_backend_destroy(ctx->be);
    hs_free_aligned(ctx->host_mem);
    free(ctx);
}

int32_t hs_context_n_ctx(const struct hs_context *ctx)
{
    return ctx->n_ctx;
}

int32_t hs_context_n_kv_blocks(const struct hs_context *ctx)
{
    return ctx->stores[ctx->n_stores - 1].n_blocks;
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
    size_t bytes = 0;
    for (int32_t s = 0; s < ctx->n_stores; s++) {
        bytes += hs_backend_buffer_size(ctx->stores[s].buf);
    }
    return bytes;
}

struct hs_backend *hs_context_backend(struct hs_context *ctx)
{
    return ctx->be;
}

struct hs_backend *hs_context_attn_backend(struct hs_context *ctx)
{
    return ctx->attn_be;
}

int32_t hs_context_n_stores(const struct hs_context *ctx)
{
    return ctx->n_stores;
}

int32_t hs_context_store_n_blocks(const struct hs_context *ctx, int32_t s)
{
    return s >= 0 && s < ctx->n_stores ? ctx->stores[s].n_blocks : 0;
}

struct hs_backend *hs_context_store_backend(struct hs_context *ctx, int32_t s)
{
    return s >= 0 && s < ctx->n_stores ? ctx->stores[s].be : NULL;
}

hs_status hs_context_copy_blocks(struct hs_context *ctx, int32_t src_store, const int32_t *src,
                                 int32_t dst_store, const int32_t *dst, int32_t n, uint64_t *bytes)
{
    if (bytes) {
        *bytes = 0;
    }
    if (src_store < 0 || src_store >= ctx->n_stores || dst_store < 0 ||
        dst_store >= ctx->n_stores || n < 0 || (n > 0 && (!src || !dst))) {
        return HS_E_INVAL;
    }
    const struct hs__kv_store *a = &ctx->stores[src_store];
    struct hs__kv_store *b = &ctx->stores[dst_store];
    for (int32_t i = 0; i < n; i++) {
        if (src[i] < 0 || src[i] >= a->n_blocks || dst[i] < 0 || dst[i] >= b->n_blocks ||
            (src_store == dst_store && src[i] == dst[i])) {
            return HS_E_INVAL;
        }
    }
    uint64_t moved = 0;
    for (int32_t il = 0; il < ctx->model->hp.n_layer_kv; il++) {
        for (int kv = 0; kv < 2; kv++) { /* K, then V */
            const size_t a0 = (2 * (size_t)il + (size_t)kv) * a->layer_bytes;
            const size_t b0 = (2 * (size_t)il + (size_t)kv) * b->layer_bytes;
            for (int32_t i = 0; i < n; i++) {
                HS_TRY(hs_backend_buffer_copy(a->buf, a0 + (size_t)src[i] * a->block_bytes, b->buf,
                                              b0 + (size_t)dst[i] * b->block_bytes,
                                              a->block_bytes));
                moved += a->block_bytes;
            }
        }
    }
    if (bytes) {
        *bytes = moved;
    }
    return HS_OK;
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
        out->busy_s += st.busy_s;
        out->bytes_copied_in += st.bytes_copied_in;
        out->bytes_copied_out += st.bytes_copied_out;
        out->buffer_bytes += st.buffer_bytes;
        out->repacked_bytes += st.repacked_bytes;
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

void hs_context_get_split_stats(const struct hs_context *ctx, struct hs_split_stats *out)
{
    *out = ctx->split_stats;
}

const struct hs_split_model *hs_context_split_model(const struct hs_context *ctx)
{
    return &ctx->split;
}

void hs_context_set_trace(struct hs_context *ctx, hs_forward_trace_fn fn, void *user)
{
    ctx->trace = fn;
    ctx->trace_user = user;
}
