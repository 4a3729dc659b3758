/* The forward pass of the decoder-only architectures, as stages a scheduler can drive per
 * sub-batch.
 *
 * Per layer a sub-batch (a contiguous range of the batch's sequences and rows) goes through:
 *   pre        norm -> QKV -> (bias, q/k norm) -> RoPE -> store K/V in the sequence's store,
 *              and the attention that stays on the FFN backend (store 0's sequences, and
 *              every prefill row);
 *   attention  the decode attention of store 1's sequences, on the attention backend, on its
 *              own thread;
 *   post       output projection -> residual -> norm -> FFN or MoE -> residual.
 * Not split, every sub-batch runs pre (with all its attention) then post, on one backend: the
 * operations of the monolithic pass, in its order. Split, the attention stage is posted to the
 * attention thread; with ping-pong two sub-batches take turns (L3/CHIME):
 *   engine:    pre A | pre B | post A, pre A' | post B, pre B' | ...
 *   attention:       | att A | att B         | att A'         | ...
 * Every row's arithmetic is that of the monolithic pass (the matmul kernels give the same bits
 * for any row count, and attention picks its precision from the whole batch's rows), so the
 * tokens and logprobs do not depend on the split. */
#include "model/model-impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Sub-batches split the batch on multiples of the CPU kernels' 4-row activation tiles (see
 * hs_split_choose). */
#define HS_FORWARD_ROW_ALIGN 4

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Validates the batch and fills tokens, positions, slots, stores, attention sequences and logit
 * rows. */
static hs_status prepare_batch(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                               const struct hs_forward_mm *mm, int32_t n_seqs, int32_t *n_tok_out)
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
            (mm && mm[s].mrope_pos && ctx->model->hp.rope_sections[0] == 0) ||
            (int64_t)fs->n_past + fs->n_tokens > ctx->n_ctx || fs->store < 0 ||
            fs->store >= ctx->n_stores) {
            return HS_E_INVAL;
        }
        n_tok += fs->n_tokens;
        if (n_tok > ctx->n_batch) {
            return HS_E_INVAL;
        }
    }
    int32_t row = 0;
    ctx->mrope_any = false;
    for (int32_t s = 0; s < n_seqs; s++) {
        const struct hs_forward_seq *fs = &seqs[s];
        const int32_t n_blocks = ctx->stores[fs->store].n_blocks;
        ctx->attn_seqs[s] = (struct hs_attn_seq){
            .n_past = fs->n_past,
            .n_new = fs->n_tokens,
            .q_row = row,
            .block_table = fs->block_table,
        };
        ctx->seq_store[s] = fs->store;
        for (int32_t i = 0; i < fs->n_tokens; i++, row++) {
            const hs_token t = fs->tokens[i];
            const int32_t p = fs->n_past + i;
            const int32_t blk = fs->block_table[p / ctx->block_size];
            if (t < 0 || t >= n_vocab || blk < 0 || blk >= n_blocks) {
                return HS_E_INVAL;
            }
            ctx->tokens[row] = t;
            ctx->pos[row] = p;
            HS_TRY(hs__mrope_row(ctx, mm ? &mm[s] : NULL, i, row));
            ctx->slots[row] = (int32_t)hs_kv_slot(fs->block_table, ctx->block_size, p);
            if (i >= fs->n_tokens - fs->n_logits) {
                ctx->out_rows[n_out++] = row;
            }
        }
    }
    ctx->n_logit_rows = n_out;
    *n_tok_out = (int32_t)n_tok;
    return HS_OK;
}

static struct hs_tensor heads(float *data, int64_t head_dim, int64_t n_head, int64_t rows)
{
    struct hs_tensor t;
    int64_t ne[3] = {head_dim, n_head, rows};
    hs_tensor_init(&t, HS_TYPE_F32, 3, ne, data);
    return t;
}

/* ---- sub-batches ---- */

/* A contiguous range of the batch's sequences and their rows, with this step's attention
 * lists: local (runs on the FFN backend inside pre: store 0's sequences and prefill rows) and
 * remote (decode rows of store 1, on the attention backend). */
struct sub {
    struct hs_context *ctx;
    int32_t index; /* 0: A, 1: B */
    int32_t seq0, n_seqs;
    int32_t row0, n_rows;
    int32_t out0, n_out;       /* its logit rows: ctx->out_rows[out0 .. out0 + n_out) */
    int32_t n_tok;             /* rows of the whole batch */
    struct hs_attn_seq *local; /* store 0's entries, then store 1's, each in batch order */
    int32_t n_local;
    int32_t n_local_store[HS_KV_STORES_MAX];
    struct hs_attn_seq *remote;
    int32_t n_remote;
    int64_t remote_kv;   /* KV positions the remote attention reads */
    int32_t layer;       /* the layer of the attention job in flight */
    int64_t attn_ns;     /* its measured time */
    int64_t attn_sim_ns; /* the simulated time the attention backend charged for it (0: real) */
};

/* Fills sub's attention lists (into ctx->local/remote from its seq0 on). */
static void sub_init(struct hs_context *ctx, struct sub *sb, int32_t index, int32_t seq0,
                     int32_t n_seqs, int32_t out0, int32_t n_tok)
{
    *sb = (struct sub){
        .ctx = ctx, .index = index, .seq0 = seq0, .n_seqs = n_seqs, .out0 = out0, .n_tok = n_tok};
    sb->row0 = ctx->attn_seqs[seq0].q_row;
    sb->local = ctx->local + seq0;
    sb->remote = ctx->remote + seq0;
    const bool split = ctx->attn_be != ctx->be;
    for (int32_t s = seq0; s < seq0 + n_seqs; s++) {
        const struct hs_attn_seq *as = &ctx->attn_seqs[s];
        sb->n_rows += as->n_new;
        if (split && ctx->seq_store[s] == 1 && as->n_new == 1) {
            sb->remote[sb->n_remote++] = *as;
            sb->remote_kv += as->n_past + 1;
        }
    }
    for (int32_t store = 0; store < ctx->n_stores; store++) {
        for (int32_t s = seq0; s < seq0 + n_seqs; s++) {
            const struct hs_attn_seq *as = &ctx->attn_seqs[s];
            const bool remote = split && ctx->seq_store[s] == 1 && as->n_new == 1;
            if (!remote && ctx->seq_store[s] == store) {
                sb->local[sb->n_local++] = *as;
                sb->n_local_store[store]++;
            }
        }
    }
    for (int32_t i = 0; i < ctx->n_logit_rows; i++) {
        const int32_t r = ctx->out_rows[i];
        if (r >= sb->row0 && r < sb->row0 + sb->n_rows) {
            sb->n_out++;
        }
    }
}

/* ---- the step's timeline ----
 *
 * Where the attention backend is simulated, the step's time is not the wall time but the
 * critical path of the FFN stages' real times and the attention stages' simulated times through
 * the schedule's dependencies: pre(X) before attention(X) before post(X), one stage at a time
 * on each backend. Real attention stages take their real times, so with two real backends the
 * timeline is the ideal pipeline of the measured stages. Updated on the engine thread in
 * program order. */
struct timeline {
    int64_t origin_ns;      /* the step's real start */
    int64_t e_free, t_free; /* when each backend is next free, ns from origin */
    int64_t pre_end[2];     /* per sub-batch */
    int64_t attn_end[2];
    int64_t attn_ns[2]; /* per sub-batch, the step's attention time (simulated where it is) */
};

static void tl_event(struct hs_context *ctx, const char *stage, const struct sub *sb, int32_t layer,
                     bool attn, int64_t start, int64_t end)
{
    if (!ctx->trace) {
        return;
    }
    const struct hs_forward_stage s = {
        .stage = stage,
        .backend = attn ? "attention" : hs_backend_name(ctx->be),
        .layer = layer,
        .sub_batch = sb ? sb->index : 0,
        .n_rows = sb ? sb->n_rows : 0,
        .n_seqs = sb ? (attn ? sb->n_remote : sb->n_seqs) : 0,
        .on_attn_thread = attn,
        .timeline = true,
        .t0_ns = ctx->tl->origin_ns + start,
        .dur_ns = end - start,
        .sim_ns = attn && sb ? sb->attn_sim_ns : 0,
    };
    ctx->trace(ctx->trace_user, &s);
}

/* An FFN-backend stage of dur_ns; post stages wait for their sub-batch's attention. */
static void tl_ffn(struct hs_context *ctx, const char *stage, const struct sub *sb, int32_t layer,
                   int64_t dur_ns, bool post)
{
    struct timeline *tl = ctx->tl;
    int64_t start = tl->e_free;
    if (post && sb) {
        start = HS_MAX(start, tl->attn_end[sb->index]);
    }
    tl->e_free = start + dur_ns;
    if (!post && sb) {
        tl->pre_end[sb->index] = tl->e_free;
        tl->attn_end[sb->index] = tl->e_free; /* until it has attention of its own */
    }
    tl_event(ctx, stage, sb, layer, false, start, tl->e_free);
}

static void tl_attention(struct hs_context *ctx, const struct sub *sb)
{
    struct timeline *tl = ctx->tl;
    const int64_t dur = sb->attn_sim_ns > 0 ? sb->attn_sim_ns : sb->attn_ns;
    const int64_t start = HS_MAX(tl->t_free, tl->pre_end[sb->index]);
    tl->t_free = start + dur;
    tl->attn_end[sb->index] = tl->t_free;
    tl->attn_ns[sb->index] += dur;
    tl_event(ctx, "attention", sb, sb->layer, true, start, tl->t_free);
}

static void trace(struct hs_context *ctx, const char *stage, struct hs_backend *be,
                  const struct sub *sb, int32_t layer, bool attn_thread, int64_t t0)
{
    if (!ctx->trace) {
        return;
    }
    const int64_t t1 = now_ns();
    const struct hs_forward_stage s = {
        .stage = stage,
        .backend = be == ctx->be ? hs_backend_name(be) : "attention",
        .layer = layer,
        .sub_batch = sb ? sb->index : 0,
        .n_rows = sb ? sb->n_rows : 0,
        .n_seqs = sb ? (attn_thread ? sb->n_remote : sb->n_seqs) : 0,
        .on_attn_thread = attn_thread,
        .t0_ns = t0,
        .dur_ns = t1 - t0,
        .sim_ns = attn_thread && sb ? sb->attn_sim_ns : 0,
    };
    ctx->trace(ctx->trace_user, &s);
}

/* ---- stages ---- */

/* Per-head (or whole-projection) RMSNorm of q and, when this layer computes it, k. */
static hs_status qk_norm(struct hs_context *ctx, const struct hs_layer *l, const struct sub *sb)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const int64_t hd = hp->head_dim;
    const bool full = hp->qk_norm == HS_QK_NORM_FULL;
    float *q = ctx->q + (size_t)sb->row0 * (size_t)(hd * hp->n_head);
    float *k = ctx->k + (size_t)sb->row0 * (size_t)(hd * hp->n_head_kv);
    struct hs_tensor qh = full ? hs_tensor_f32_2d(q, hd * hp->n_head, sb->n_rows)
                               : hs_tensor_f32_2d(q, hd, (int64_t)sb->n_rows * hp->n_head);
    HS_TRY(hs_backend_rms_norm(ctx->be, &qh, &l->q_norm, hp->norm_eps, &qh));
    if (!l->wk.data) {
        return HS_OK;
    }
    struct hs_tensor kh = full ? hs_tensor_f32_2d(k, hd * hp->n_head_kv, sb->n_rows)
                               : hs_tensor_f32_2d(k, hd, (int64_t)sb->n_rows * hp->n_head_kv);
    return hs_backend_rms_norm(ctx->be, &kh, &l->k_norm, hp->norm_eps, &kh);
}

/* Attention of seqs (all of one store) on be, over the whole batch's q and output, through
 * attention/'s orchestration: each sequence's span is its store's cache on be. slot: 0 on the
 * engine thread, 1 on the attention thread (their scratch is their own). */
static hs_status attend(struct hs_context *ctx, struct hs_backend *be, int32_t store, int32_t kvl,
                        const struct hs_attn_seq *seqs, int32_t n_seqs, int32_t n_tok, int slot)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    struct hs_tensor q3 = heads(ctx->q, hp->head_dim, hp->n_head, n_tok);
    struct hs_tensor o3 = heads(ctx->attn, hp->head_dim, hp->n_head, n_tok);
    struct hs_attn_span_seq *ss = ctx->span_seqs[slot];
    struct hs_attn_span *sp = ctx->spans[slot];
    for (int32_t i = 0; i < n_seqs; i++) {
        sp[i] = (struct hs_attn_span){.be = be,
                                      .k_cache = &ctx->stores[store].k[kvl],
                                      .v_cache = &ctx->stores[store].v[kvl],
                                      .block_table = seqs[i].block_table};
        ss[i] = (struct hs_attn_span_seq){.n_past = seqs[i].n_past,
                                          .n_new = seqs[i].n_new,
                                          .q_row = seqs[i].q_row,
                                          .n_spans = 1,
                                          .spans = &sp[i]};
    }
    return hs_attn_run(ctx->attn_exec[slot], &q3, &o3, ss, n_seqs, ctx->block_size,
                       1.0f / sqrtf((float)hp->head_dim), n_tok);
}

/* pre: norm, projections, RoPE, K/V stores and the local attention of sb at layer il. */
static hs_status stage_pre(struct hs_context *ctx, struct sub *sb, int il)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const struct hs_layer *l = &ctx->model->layers[il];
    struct hs_backend *be = ctx->be;
    const int64_t hd = hp->head_dim;
    const size_t r0 = (size_t)sb->row0;
    const int32_t n = sb->n_rows;
    /* Cross-layer attention: a layer without K/V weights reads the K/V its group's first layer
     * stored. */
    const bool own_kv = l->wk.data != NULL;
    float *qd = ctx->q + r0 * (size_t)(hp->n_head * hd);
    float *kd = ctx->k + r0 * (size_t)(hp->n_head_kv * hd);
    float *vd = ctx->v + r0 * (size_t)(hp->n_head_kv * hd);

    struct hs_tensor x = hs_tensor_f32_2d(ctx->x + r0 * (size_t)hp->n_embd, hp->n_embd, n);
    struct hs_tensor h = hs_tensor_f32_2d(ctx->h + r0 * (size_t)hp->n_embd, hp->n_embd, n);
    struct hs_tensor q = hs_tensor_f32_2d(qd, hp->n_head * hd, n);
    struct hs_tensor k = hs_tensor_f32_2d(kd, hp->n_head_kv * hd, n);
    struct hs_tensor v = hs_tensor_f32_2d(vd, hp->n_head_kv * hd, n);

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
        HS_TRY(qk_norm(ctx, l, sb));
    }
    struct hs_tensor q3 = heads(qd, hd, hp->n_head, n);
    struct hs_tensor k3 = heads(kd, hd, hp->n_head_kv, n);
    const int32_t *pos = ctx->pos + r0;
    HS_TRY(hs_backend_rope(be, &q3, pos, &hp->rope));
    if (own_kv) {
        HS_TRY(hs_backend_rope(be, &k3, pos, &hp->rope));
    }
    if (ctx->mrope_any) {
        hs__mrope_adjust(ctx, qd, hp->n_head, r0, n);
        if (own_kv) {
            hs__mrope_adjust(ctx, kd, hp->n_head_kv, r0, n);
        }
    }
    if (l->q_norm.data && norm_after) {
        HS_TRY(qk_norm(ctx, l, sb));
    }

    /* K/V go to each sequence's store, a run of sequences with the same store at a time. The
     * stores are host memory here (cpu and the simulated backends), which the FFN backend
     * writes directly. */
    const int32_t kvl = l->kv_layer;
    if (own_kv) {
        for (int32_t s = sb->seq0; s < sb->seq0 + sb->n_seqs;) {
            const int32_t store = ctx->seq_store[s];
            const int32_t row = ctx->attn_seqs[s].q_row;
            int32_t rows = 0;
            for (; s < sb->seq0 + sb->n_seqs && ctx->seq_store[s] == store; s++) {
                rows += ctx->attn_seqs[s].n_new;
            }
            HS_ASSERT(hs_backend_buffer_is_host(ctx->stores[store].buf));
            const size_t off = (size_t)(row - sb->row0);
            struct hs_tensor ks =
                heads(kd + off * (size_t)(hp->n_head_kv * hd), hd, hp->n_head_kv, rows);
            struct hs_tensor vs =
                heads(vd + off * (size_t)(hp->n_head_kv * hd), hd, hp->n_head_kv, rows);
            HS_TRY(hs_backend_kv_store(be, &ks, &ctx->stores[store].k[kvl], ctx->slots + row));
            HS_TRY(hs_backend_kv_store(be, &vs, &ctx->stores[store].v[kvl], ctx->slots + row));
        }
    }
    /* Local attention, one call per store. */
    const struct hs_attn_seq *list = sb->local;
    for (int32_t store = 0; store < ctx->n_stores; store++) {
        if (sb->n_local_store[store] > 0) {
            HS_TRY(attend(ctx, be, store, kvl, list, sb->n_local_store[store], sb->n_tok, 0));
        }
        list += sb->n_local_store[store];
    }
    return HS_OK;
}

/* attention: sb's decode rows of store 1 on the attention backend (on its thread). */
static hs_status stage_attention(void *arg)
{
    struct sub *sb = arg;
    struct hs_context *ctx = sb->ctx;
    const int64_t t0 = now_ns();
    const int32_t kvl = ctx->model->layers[sb->layer].kv_layer;
    struct hs_backend_stats before, after;
    hs_backend_get_stats(ctx->attn_be, &before);
    const hs_status st = attend(ctx, ctx->attn_be, 1, kvl, sb->remote, sb->n_remote, sb->n_tok, 1);
    sb->attn_ns = now_ns() - t0;
    hs_backend_get_stats(ctx->attn_be, &after);
    sb->attn_sim_ns = (int64_t)((after.sim_time_s - before.sim_time_s) * 1e9);
    trace(ctx, "attention", ctx->attn_be, sb, sb->layer, true, t0);
    return st;
}

static hs_status ffn_block(struct hs_context *ctx, int il, int32_t row0, int32_t n_rows)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const struct hs_layer *l = &ctx->model->layers[il];
    struct hs_backend *be = ctx->be;
    const size_t r0 = (size_t)row0;
    struct hs_tensor x = hs_tensor_f32_2d(ctx->x + r0 * (size_t)hp->n_embd, hp->n_embd, n_rows);
    struct hs_tensor h = hs_tensor_f32_2d(ctx->h + r0 * (size_t)hp->n_embd, hp->n_embd, n_rows);
    struct hs_tensor t = hs_tensor_f32_2d(ctx->tmp + r0 * (size_t)hp->n_embd, hp->n_embd, n_rows);
    HS_TRY(hs_backend_rms_norm(be, &x, &l->ffn_norm, hp->norm_eps, &h));
    if (l->moe.gate_inp) {
        HS_TRY(hs_moe_forward(ctx->moe, be, il, &l->moe, &h, &t));
        return hs_backend_add(be, &x, &t, &x);
    }
    struct hs_tensor g = hs_tensor_f32_2d(ctx->gate + r0 * (size_t)hp->n_ff, hp->n_ff, n_rows);
    struct hs_tensor u = hs_tensor_f32_2d(ctx->up + r0 * (size_t)hp->n_ff, hp->n_ff, n_rows);
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

/* Moves sb's rows whose logits are wanted to the front of its rows, so the last layer's FFN and
 * the output projection run on those rows only. */
static void compact_rows(struct hs_context *ctx, const struct sub *sb)
{
    const size_t row_bytes = (size_t)ctx->model->hp.n_embd * sizeof(float);
    const size_t x0 = (size_t)((char *)ctx->x - ctx->act_base);
    for (int32_t i = 0; i < sb->n_out; i++) {
        const int32_t from = ctx->out_rows[sb->out0 + i];
        const int32_t to = sb->row0 + i;
        if (from != to) {
            const hs_status st =
                hs_backend_buffer_copy(ctx->act_buf, x0 + (size_t)from * row_bytes, ctx->act_buf,
                                       x0 + (size_t)to * row_bytes, row_bytes);
            HS_ASSERT(st == HS_OK); /* rows of the buffer's own x */
        }
    }
}

/* post: output projection, residual, FFN or MoE (the last layer's on the logit rows only). */
static hs_status stage_post(struct hs_context *ctx, const struct sub *sb, int il)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const struct hs_layer *l = &ctx->model->layers[il];
    const size_t r0 = (size_t)sb->row0;
    const int64_t hd = hp->head_dim;
    struct hs_tensor o =
        hs_tensor_f32_2d(ctx->attn + r0 * (size_t)(hp->n_head * hd), hp->n_head * hd, sb->n_rows);
    struct hs_tensor t =
        hs_tensor_f32_2d(ctx->tmp + r0 * (size_t)hp->n_embd, hp->n_embd, sb->n_rows);
    struct hs_tensor x = hs_tensor_f32_2d(ctx->x + r0 * (size_t)hp->n_embd, hp->n_embd, sb->n_rows);
    HS_TRY(hs_backend_matmul(ctx->be, &l->wo, &o, &t));
    HS_TRY(hs_backend_add(ctx->be, &x, &t, &x));
    int32_t n_rows = sb->n_rows;
    if (il == hp->n_layer - 1) {
        /* Rows nobody reads need no FFN in the last layer. */
        compact_rows(ctx, sb);
        n_rows = sb->n_out;
    }
    return n_rows > 0 ? ffn_block(ctx, il, sb->row0, n_rows) : HS_OK;
}

/* ---- drivers ---- */

/* pre of layer il, timed and traced. */
static hs_status run_pre(struct hs_context *ctx, struct sub *sb, int il, int64_t *busy)
{
    const int64_t t0 = now_ns();
    const hs_status st = stage_pre(ctx, sb, il);
    const int64_t dur = now_ns() - t0;
    *busy += dur;
    trace(ctx, "pre", ctx->be, sb, il, false, t0);
    tl_ffn(ctx, "pre", sb, il, dur, false);
    return st;
}

static hs_status run_post(struct hs_context *ctx, struct sub *sb, int il, int64_t *busy)
{
    const int64_t t0 = now_ns();
    const hs_status st = stage_post(ctx, sb, il);
    const int64_t dur = now_ns() - t0;
    *busy += dur;
    trace(ctx, "post", ctx->be, sb, il, false, t0);
    tl_ffn(ctx, "post", sb, il, dur, true);
    return st;
}

/* Posts sb's attention of layer il to the attention thread (nothing when it has none). */
static void post_attention(struct hs_context *ctx, struct sub *sb, int il)
{
    if (sb->n_remote > 0) {
        sb->layer = il;
        hs_attn_worker_post(ctx->attn_worker, stage_attention, sb);
    }
}

static hs_status wait_attention(struct hs_context *ctx, struct sub *sb)
{
    if (sb->n_remote == 0) {
        return HS_OK;
    }
    const hs_status st = hs_attn_worker_wait(ctx->attn_worker);
    /* The balancer balances the hardware modelled: simulated time where there is one. */
    const int64_t t = sb->attn_sim_ns > 0 ? sb->attn_sim_ns : sb->attn_ns;
    hs_split_model_observe_attn(&ctx->split, sb->remote_kv, sb->n_remote, (double)t * 1e-9);
    ctx->split_stats.sim_attn_s += (double)sb->attn_sim_ns * 1e-9;
    tl_attention(ctx, sb);
    return st;
}

/* One sub-batch, layer by layer: pre, attention, post. */
static hs_status run_layers_one(struct hs_context *ctx, struct sub *sb, int64_t *busy)
{
    const int32_t n_layer = ctx->model->hp.n_layer;
    for (int il = 0; il < n_layer; il++) {
        int64_t f = 0;
        HS_TRY(run_pre(ctx, sb, il, &f));
        post_attention(ctx, sb, il);
        HS_TRY(wait_attention(ctx, sb));
        HS_TRY(run_post(ctx, sb, il, &f));
        *busy += f;
        if (ctx->attn_worker && il + 1 < n_layer) {
            hs_split_model_observe_ffn(&ctx->split, sb->n_rows, (double)f * 1e-9);
        }
    }
    return HS_OK;
}

/* Two sub-batches taking turns (see the top of the file). The engine thread always has one
 * sub-batch's dense work while the attention thread has the other's attention. */
static hs_status run_layers_pingpong(struct hs_context *ctx, struct sub *a, struct sub *b,
                                     int64_t *busy)
{
    const int32_t n_layer = ctx->model->hp.n_layer;
    int64_t fa = 0, fb = 0;
    hs_status st = run_pre(ctx, a, 0, &fa);
    if (st != HS_OK) {
        return st;
    }
    post_attention(ctx, a, 0);
    st = run_pre(ctx, b, 0, &fb);
    for (int il = 0; il < n_layer && st == HS_OK; il++) {
        const bool more = il + 1 < n_layer;
        hs_status wst = wait_attention(ctx, a);
        if (wst != HS_OK) {
            return wst;
        }
        post_attention(ctx, b, il);
        fa = 0;
        st = run_post(ctx, a, il, &fa);
        if (st == HS_OK && more) {
            st = run_pre(ctx, a, il + 1, &fa);
        }
        wst = wait_attention(ctx, b);
        if (st != HS_OK || wst != HS_OK) {
            return st != HS_OK ? st : wst;
        }
        if (more) {
            post_attention(ctx, a, il + 1);
        }
        fb = 0;
        st = run_post(ctx, b, il, &fb);
        if (st == HS_OK && more) {
            st = run_pre(ctx, b, il + 1, &fb);
        }
        *busy += fa + fb;
        if (more) {
            hs_split_model_observe_ffn(&ctx->split, a->n_rows, (double)fa * 1e-9);
            hs_split_model_observe_ffn(&ctx->split, b->n_rows, (double)fb * 1e-9);
        }
    }
    if (st != HS_OK) {
        (void)hs_attn_worker_wait(ctx->attn_worker); /* never leave a job behind */
    }
    return st;
}

/* Where to split the batch into A and B: the balancer's choice over the decode rows. */
static int32_t choose_split(struct hs_context *ctx, int32_t n_seqs, double *period_s)
{
    for (int32_t s = 0; s < n_seqs; s++) {
        const struct hs_attn_seq *as = &ctx->attn_seqs[s];
        ctx->items[s] = (struct hs_split_item){
            .rows = as->n_new,
            .out_rows = 0,
            .kv_tokens = as->n_past + as->n_new,
            .remote = ctx->seq_store[s] == 1 && as->n_new == 1,
        };
    }
    for (int32_t i = 0, s = 0; i < ctx->n_logit_rows; i++) {
        while (ctx->out_rows[i] >= ctx->attn_seqs[s].q_row + ctx->attn_seqs[s].n_new) {
            s++;
        }
        ctx->items[s].out_rows++;
    }
    return hs_split_choose(&ctx->split, ctx->items, n_seqs, HS_FORWARD_ROW_ALIGN, period_s);
}

hs_status hs_model_forward(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                           int32_t n_seqs)
{
    return hs_model_forward_mm(ctx, seqs, NULL, n_seqs);
}

hs_status hs_model_forward_mm(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                              const struct hs_forward_mm *mm, int32_t n_seqs)
{
    const struct hs_model *m = ctx->model;
    const struct hs_model_hparams *hp = &m->hp;
    int32_t n_tok = 0;
    ctx->n_logit_rows = 0;
    HS_TRY(prepare_batch(ctx, seqs, mm, n_seqs, &n_tok));

    struct hs_tensor x = hs_tensor_f32_2d(ctx->x, hp->n_embd, n_tok);
    HS_TRY(hs_backend_get_rows(ctx->be, &m->tok_embd, ctx->tokens, &x));
    if (mm) {
        hs__embd_rows_set(ctx, seqs, mm, n_seqs);
    }

    struct sub subs[2];
    int32_t n_subs = 1;
    double predicted_s = 0.0;
    int32_t k = 0;
    if (ctx->attn_worker) {
        k = ctx->pingpong ? choose_split(ctx, n_seqs, &predicted_s) : 0;
    }
    if (k > 0) {
        sub_init(ctx, &subs[0], 0, 0, k, 0, n_tok);
        sub_init(ctx, &subs[1], 1, k, n_seqs - k, subs[0].n_out, n_tok);
        n_subs = subs[0].n_remote > 0 && subs[1].n_remote > 0 ? 2 : 1;
    }
    if (n_subs == 1) {
        sub_init(ctx, &subs[0], 0, 0, n_seqs, 0, n_tok);
    }
    const int64_t t0 = now_ns();
    struct timeline tl = {.origin_ns = t0};
    ctx->tl = &tl;
    int64_t busy = 0;
    const double attn_busy0 = hs_attn_worker_busy_s(ctx->attn_worker);
    const double sim0 = ctx->split_stats.sim_attn_s;
    hs_status st = n_subs == 2 ? run_layers_pingpong(ctx, &subs[0], &subs[1], &busy)
                               : run_layers_one(ctx, &subs[0], &busy);
    HS_TRY(st);
    if (ctx->attn_worker) {
        const double wall = (double)(now_ns() - t0) * 1e-9;
        const double attn = hs_attn_worker_busy_s(ctx->attn_worker) - attn_busy0;
        const double ffn = (double)busy * 1e-9;
        struct hs_split_stats *ss = &ctx->split_stats;
        ss->n_steps++;
        ss->n_steps_split += n_subs == 2;
        if (n_subs == 2) {
            ss->attn_max_s += (double)HS_MAX(tl.attn_ns[0], tl.attn_ns[1]) * 1e-9;
            ss->attn_pair_s += (double)(tl.attn_ns[0] + tl.attn_ns[1]) * 1e-9;
        }
        if (n_subs == 2 && subs[0].remote_kv + subs[1].remote_kv > 0) {
            ss->kv_imbalance += fabs((double)(subs[0].remote_kv - subs[1].remote_kv)) /
                                (double)(subs[0].remote_kv + subs[1].remote_kv);
        }
        ss->wall_s += wall;
        ss->ffn_busy_s += ffn;
        ss->attn_busy_s += attn;
        ss->overlap_s += fmax(0.0, ffn + attn - wall);
        if (n_subs == 1) {
            /* the whole batch as one sub-batch: F + T per layer */
            int32_t n_remote = subs[0].n_remote;
            predicted_s = hs_split_predict_ffn(&ctx->split, subs[0].n_rows) +
                          hs_split_predict_attn(&ctx->split, subs[0].remote_kv, n_remote);
        }
        predicted_s *= hp->n_layer;
        const double timeline = (double)HS_MAX(tl.e_free, tl.t_free) * 1e-9;
        const bool simulated = ss->sim_attn_s > sim0;
        ss->predicted_s += predicted_s;
        ss->abs_err_s += fabs(predicted_s - (simulated ? timeline : wall));
        ss->timeline_s += timeline;
    }

    /* The logit rows, compacted per sub-batch, become one block for the output projection. */
    if (n_subs == 2 && subs[1].n_out > 0 && subs[1].row0 != subs[0].n_out) {
        const size_t row_bytes = (size_t)hp->n_embd * sizeof(float);
        const size_t x0 = (size_t)((char *)ctx->x - ctx->act_base);
        HS_TRY(hs_backend_buffer_copy(ctx->act_buf, x0 + (size_t)subs[1].row0 * row_bytes,
                                      ctx->act_buf, x0 + (size_t)subs[0].n_out * row_bytes,
                                      (size_t)subs[1].n_out * row_bytes));
    }
    const int32_t n_out = ctx->n_logit_rows;
    if (n_out == 0) {
        return HS_OK;
    }
    const int64_t t_out = now_ns();
    struct hs_tensor xo = hs_tensor_f32_2d(ctx->x, hp->n_embd, n_out);
    struct hs_tensor ho = hs_tensor_f32_2d(ctx->h, hp->n_embd, n_out);
    struct hs_tensor lo = hs_tensor_f32_2d(ctx->logits, hp->n_vocab, n_out);
    HS_TRY(hs_backend_rms_norm(ctx->be, &xo, &m->output_norm, hp->norm_eps, &ho));
    st = hs_backend_matmul(ctx->be, &m->output, &ho, &lo);
    trace(ctx, "output", ctx->be, NULL, -1, false, t_out);
    return st;
}
