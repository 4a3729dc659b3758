/* Model internals shared by model.c (load) and forward.c (forward pass). */
#ifndef HS_MODEL_MODEL_IMPL_H
#define HS_MODEL_MODEL_IMPL_H

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

#endif
