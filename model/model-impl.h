/* Model internals shared by model.c (load) and forward.c (forward pass). */
#ifndef HS_MODEL_MODEL_IMPL_H
#define HS_MODEL_MODEL_IMPL_H

#include "attention/attention.h"
#include "model/model.h"

struct hs_layer {
    struct hs_tensor attn_norm;      /* [n_embd] f32 */
    struct hs_tensor wq;             /* [n_head * head_dim][n_embd] */
    struct hs_tensor wk;             /* [n_head_kv * head_dim][n_embd]; data NULL when the layer
                                        reads another layer's K/V (cross-layer attention) */
    struct hs_tensor wv;             /* [n_head_kv * head_dim][n_embd]; as wk */
    struct hs_tensor wo;             /* [n_embd][n_head * head_dim] */
    struct hs_tensor bq, bk, bv;     /* qwen2: [rows] f32 biases; data NULL when absent */
    struct hs_tensor q_norm, k_norm; /* [head_dim] f32 (HS_QK_NORM_FULL: [n_head(_kv) *
                                        head_dim]); data NULL when absent */
    struct hs_tensor ffn_norm;       /* [n_embd] f32 */
    struct hs_tensor ffn_gate;       /* [n_ff][n_embd] */
    struct hs_tensor ffn_up;         /* [n_ff][n_embd] */
    struct hs_tensor ffn_down;       /* [n_embd][n_ff] */
    int32_t kv_layer; /* the KV cache layer this layer reads (cross-layer attention) */
    /* Mixture of experts (data NULL in dense layers). */
    struct hs_tensor ffn_gate_inp;                 /* [n_expert][n_embd] f32 router */
    struct hs_tensor ffn_gate_exps;                /* [n_expert][n_ff_exp][n_embd] */
    struct hs_tensor ffn_up_exps;                  /* [n_expert][n_ff_exp][n_embd] */
    struct hs_tensor ffn_down_exps;                /* [n_expert][n_embd][n_ff_exp] */
    struct hs_tensor ffn_gate_shexp, ffn_up_shexp; /* [n_ff_shexp][n_embd]; NULL: no shared */
    struct hs_tensor ffn_down_shexp;               /* [n_embd][n_ff_shexp] */
    struct hs_tensor ffn_gate_inp_shexp;           /* [n_embd] f32 sigmoid gate (qwen2moe) */
    struct hs_moe_layer moe; /* views of the above for moe/; gate_inp NULL in dense layers */
};

struct hs_model {
    struct hs_gguf *gguf; /* owns the mapping every weight points into */
    struct hs_vocab *vocab;
    struct hs_model_hparams hp;
    struct hs_tensor tok_embd;    /* [n_vocab][n_embd] */
    struct hs_tensor output_norm; /* [n_embd] f32 */
    struct hs_tensor output;      /* [n_vocab][n_embd]; == tok_embd when tied */
    struct hs_layer *layers;      /* [n_layer] */
    char *chat_template;
    char desc[128];
    size_t size_bytes;
    int64_t n_params;
    size_t active_bytes;
    int64_t n_active_params;
};

/* ---- contexts (forward.c, placement.c) ---- */

/* A KV store: the cache layers of the sequences whose attention one backend runs, in a buffer
 * that backend owns. Layer il's K is at byte 2 * il * layer_bytes of the buffer, its V right
 * after; block b of a layer at b * block_bytes within it. */
struct hs__kv_store {
    struct hs_backend *be;         /* borrowed: ctx->be (store 0) or ctx->attn_be (store 1) */
    struct hs_backend_buffer *buf; /* owns; NULL when n_blocks is 0 */
    struct hs_tensor *k;           /* [n_layer_kv] of [n_blocks][block_size][n_head_kv][head_dim] */
    struct hs_tensor *v;           /* same */
    int32_t n_blocks;
    size_t block_bytes; /* one block of one layer's K (or V) */
    size_t layer_bytes; /* n_blocks * block_bytes */
};

struct hs_context {
    struct hs_model *model;
    struct hs_backend *be;              /* dense ops, FFN and the attention of store 0 */
    struct hs_backend *attn_be;         /* decode attention of store 1; == be when not split */
    struct hs_attn_worker *attn_worker; /* drives attn_be when split; NULL otherwise */
    int32_t n_ctx;
    int32_t block_size;
    int32_t n_batch;
    int32_t n_seq_max;
    enum hs_type kv_type;
    bool pingpong;

    struct hs__kv_store stores[HS_KV_STORES_MAX];
    int32_t n_stores;

    struct hs_split_model split; /* the sub-batch balance's fitted model */
    struct hs_split_stats split_stats;
    hs_forward_trace_fn trace; /* stage timings; NULL: none */
    struct timeline *tl;       /* the step's timeline (forward.c), valid during a step */
    void *trace_user;

    struct hs_moe *moe;           /* NULL for dense models */
    struct hs_backend **extra_be; /* [n_extra_be] backends experts are placed on; owns */
    char **extra_names;           /* [n_extra_be] their placement names ("cpu:1"); owns */
    int32_t n_extra_be;

    struct hs_backend_buffer *act_buf; /* activations in the FFN backend's memory; owns */
    char *act_base;                    /* its base (host memory today: checked at create) */
    void *host_mem;                    /* the batch's bookkeeping below tokens; owns */
    float *x;                          /* [n_batch][n_embd] residual stream */
    float *h;                          /* [n_batch][n_embd] normed input */
    float *q;                          /* [n_batch][n_head][head_dim] */
    float *k;                          /* [n_batch][n_head_kv][head_dim] */
    float *v;                          /* [n_batch][n_head_kv][head_dim] */
    float *attn;                       /* [n_batch][n_head][head_dim] */
    float *tmp;                        /* [n_batch][n_embd] */
    float *gate;                       /* [n_batch][n_ff] */
    float *up;                         /* [n_batch][n_ff] */
    float *logits;                     /* [n_batch][n_vocab] */
    hs_token *tokens;                  /* [n_batch] */
    int32_t *pos;                      /* [n_batch] rotary (M-RoPE: time) positions */
    int32_t *mrope_dhw;                /* [n_batch][2] M-RoPE row, column minus time position */
    bool mrope_any;                    /* some row of the batch has a nonzero mrope_dhw */
    int32_t *slots;                    /* [n_batch] */
    int32_t *out_rows;                 /* [n_batch] rows whose logits are wanted */
    struct hs_attn_seq *attn_seqs;     /* [n_batch] (a sequence has at least one token) */
    int32_t *seq_store;                /* [n_batch] store of each sequence */
    struct hs_attn_seq *local;         /* [n_batch] attention lists of the sub-batches */
    struct hs_attn_seq *remote;        /* [n_batch] */
    struct hs_split_item *items;       /* [n_batch] */
    /* attention/'s orchestration, one set per thread that calls it ([0] engine, [1] attention
     * thread): the spans of each sequence (one each today: its store) */
    struct hs_attn_exec *attn_exec[2];
    struct hs_attn_span_seq *span_seqs[2]; /* [n_batch] */
    struct hs_attn_span *spans[2];         /* [n_batch] */
    int32_t n_logit_rows;
};

/* Expert placement rules (placement.c): creates the backends they name in ctx->extra_be and
 * tells ctx->moe where each expert runs. */
hs_status hs__place_experts(struct hs_context *ctx, const struct hs_context_params *p,
                            struct hs_error *err);

/* ---- multimodal input (mrope.c) ---- */

/* Reads <an>.rope.dimension_sections (4 integers, the fourth 0) into hp->rope_sections; their
 * sum must be n_rot / 2. HS_E_FORMAT (err says why), HS_E_NOTSUP for a fourth section. */
hs_status hs__mrope_load_sections(const struct hs_gguf *g, const char *an,
                                  struct hs_model_hparams *hp, struct hs_error *err);
/* Sets batch row's rotary position and M-RoPE offsets from token i of mm (may be NULL). HS_E_INVAL
 * for negative positions. */
hs_status hs__mrope_row(struct hs_context *ctx, const struct hs_forward_mm *mm, int32_t i,
                        int32_t row);
/* Rotates rows [r0, r0 + n) of x ([rows][n_head][head_dim], already rotated by their time
 * position) further by their row/column offsets in the pairs of the row and column sections. */
void hs__mrope_adjust(const struct hs_context *ctx, float *x, int32_t n_head, size_t r0, int32_t n);
/* Copies the sequences' embd rows over the batch's token embeddings in ctx->x. */
void hs__embd_rows_set(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                       const struct hs_forward_mm *mm, int32_t n_seqs);

#endif
