/* Model internals shared by model.c (load) and forward.c (forward pass). */
#ifndef HS_MODEL_MODEL_IMPL_H
#define HS_MODEL_MODEL_IMPL_H

#include "model/model.h"

struct hs_layer {
    struct hs_tensor attn_norm; /* [n_embd] f32 */
    struct hs_tensor wq;        /* [n_head * head_dim][n_embd] */
    struct hs_tensor wk;        /* [n_head_kv * head_dim][n_embd] */
    struct hs_tensor wv;        /* [n_head_kv * head_dim][n_embd] */
    struct hs_tensor wo;        /* [n_embd][n_head * head_dim] */
    struct hs_tensor bq, bk, bv; /* qwen2: [rows] f32 biases; data NULL when absent */
    struct hs_tensor q_norm, k_norm; /* qwen3: [head_dim] f32; data NULL when absent */
    struct hs_tensor ffn_norm;  /* [n_embd] f32 */
    struct hs_tensor ffn_gate;  /* [n_ff][n_embd] */
    struct hs_tensor ffn_up;    /* [n_ff][n_embd] */
    struct hs_tensor ffn_down;  /* [n_embd][n_ff] */
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
};

#endif
