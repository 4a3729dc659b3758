/* Mixture-of-experts layers: routing, grouping of rows by expert, the expert FFNs on the
 * backends they are placed on, and the weighted combine.
 *
 * Data flow of one layer (hs_moe_forward): router logits = gate_inp x (a matmul on the layer's
 * backend) -> probabilities (softmax or sigmoid) -> the top k experts of each row and their
 * weights (optionally renormalised and scaled) -> rows gathered into groups, one per expert that
 * some row chose -> one expert FFN per backend over its groups (hs_backend_moe_ffn) -> each row's
 * k results weighted and summed in a fixed order -> plus the shared expert, if the layer has one
 * (optionally scaled by a sigmoid gate). Decode touches only the weights of chosen experts.
 *
 * Numerics follow llama.cpp's build_moe_ffn on its CPU backend (softmax with the sum in double,
 * ggml_top_k's slot order, the sum of weights in double, products rounded before the sum), so
 * that outputs match llama.cpp closely.
 *
 * Thread: a struct hs_moe belongs to the engine thread (it is part of a model context); the
 * token counters may be read from any thread. */
#ifndef HS_MOE_MOE_H
#define HS_MOE_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"
#include "common/common.h"

/* How router logits become expert probabilities (the values of llama.cpp's
 * <arch>.expert_gating_func key). */
enum hs_moe_gating {
    HS_MOE_GATING_SOFTMAX = 1,        /* softmax over all experts, then top k */
    HS_MOE_GATING_SIGMOID = 2,        /* sigmoid per expert, then top k */
    HS_MOE_GATING_SOFTMAX_WEIGHT = 3, /* top k of the logits, softmax over those k */
    HS_MOE_GATING_COUNT,
};
/* "softmax", "sigmoid", "softmax_weight"; "unknown" otherwise. */
const char *hs_moe_gating_str(enum hs_moe_gating g);

#define HS_MOE_MAX_EXPERTS 1024
#define HS_MOE_MAX_USED    64

struct hs_moe_router {
    int32_t n_expert;      /* experts per layer, 1..HS_MOE_MAX_EXPERTS */
    int32_t n_expert_used; /* k: experts per row, 1..min(n_expert, HS_MOE_MAX_USED) */
    enum hs_moe_gating gating;
    bool norm_w;   /* renormalise the k weights to sum to one (Mixtral, Qwen3-MoE) */
    float w_scale; /* weights multiplied by this after renormalising (1 or 0: none) */
};

/* HS_E_INVAL when a field is out of range (err, may be NULL, says which). */
hs_status hs_moe_router_check(const struct hs_moe_router *r, struct hs_error *err);

/* Routes n_rows rows. logits: [n_rows][n_expert]; ids, weights: [n_rows][n_expert_used], the
 * chosen experts and their weights in the order their outputs are summed (ggml_top_k's: the
 * best k by probability, ties to the lower id, with the first two slots swapped). probs, when not
 * NULL, receives the [n_rows][n_expert] probabilities. Thread: any. */
void hs_moe_route(const struct hs_moe_router *r, const float *logits, int32_t n_rows, int32_t *ids,
                  float *weights, float *probs);

/* ---- grouping ---- */

/* Rows grouped by expert: the (row, slot) pairs that chose expert e occupy grouped positions
 * [begin[e], begin[e + 1]), in increasing row order. */
struct hs_moe_plan {
    int32_t n_rows;
    int32_t n_used;
    int32_t n_expert;
    int32_t *begin;   /* [n_expert + 1] */
    int32_t *src_row; /* [n_rows * n_used] grouped position -> source row */
    int32_t *pos;     /* [n_rows * n_used] (row, slot) -> grouped position */
};

/* Fills plan (its arrays sized by the caller for n_rows * n_used pairs and n_expert + 1
 * bounds) from ids [n_rows][n_used]. Thread: any. */
void hs_moe_plan_build(struct hs_moe_plan *plan, const int32_t *ids, int32_t n_rows, int32_t n_used,
                       int32_t n_expert);

/* ---- layers ---- */

/* The weights of one MoE layer; all borrowed (the mmap'd model). */
struct hs_moe_layer {
    const struct hs_tensor *gate_inp;  /* [n_expert][n_embd] f32 router */
    const struct hs_tensor *gate_exps; /* [n_expert][n_ff][n_embd] */
    const struct hs_tensor *up_exps;   /* [n_expert][n_ff][n_embd] */
    const struct hs_tensor *down_exps; /* [n_expert][n_embd][n_ff] */
    /* Shared expert (NULL when the layer has none): a dense FFN every row runs. */
    const struct hs_tensor *gate_shexp; /* [n_ff_shexp][n_embd] */
    const struct hs_tensor *up_shexp;   /* [n_ff_shexp][n_embd] */
    const struct hs_tensor *down_shexp; /* [n_embd][n_ff_shexp] */
    /* [n_embd] f32: the shared expert's output is scaled by sigmoid(gate_inp_shexp . x) (qwen2moe);
     * NULL: added as is (Hunyuan). */
    const struct hs_tensor *gate_inp_shexp;
};

struct hs_moe_params {
    struct hs_moe_router router;
    int32_t n_layer; /* layers indexed by hs_moe_forward (dense ones included) */
    int32_t n_embd;
    int32_t n_ff;       /* rows of each expert's gate/up matrices */
    int32_t n_ff_shexp; /* 0: no layer has a shared expert */
    int32_t n_rows_max; /* most rows one hs_moe_forward call takes (the context's n_batch) */
};

struct hs_moe;

/* Allocates routing and activation buffers for n_rows_max rows up front. Errors: HS_E_INVAL
 * (bad router or shape: err says which), HS_E_NOMEM. Returns new (free with hs_moe_destroy). */
hs_status hs_moe_create(const struct hs_moe_params *p, struct hs_moe **out, struct hs_error *err);
void hs_moe_destroy(struct hs_moe *moe);

const struct hs_moe_router *hs_moe_get_router(const struct hs_moe *moe);

/* Places expert e of layer il (e == -1: the layer's shared expert) on be (borrowed: must outlive
 * moe; NULL: the backend passed to hs_moe_forward). HS_E_INVAL for an index out of range. */
hs_status hs_moe_set_backend(struct hs_moe *moe, int32_t il, int32_t e, struct hs_backend *be);
/* The backend expert e of layer il is placed on (NULL: the forward call's). */
struct hs_backend *hs_moe_get_backend(const struct hs_moe *moe, int32_t il, int32_t e);

/* y = the MoE FFN of layer il on x: [n_rows][n_embd] f32 each, y must not alias x; 1 <= n_rows
 * <= n_rows_max. be runs the router, the shared expert unless placed elsewhere, and every expert
 * not placed elsewhere. Errors: HS_E_INVAL (shapes), or a backend's error (y undefined then).
 * Engine thread only. */
hs_status hs_moe_forward(struct hs_moe *moe, struct hs_backend *be, int32_t il,
                         const struct hs_moe_layer *w, const struct hs_tensor *x,
                         struct hs_tensor *y);

/* Tokens routed to expert e of layer il since creation (each row counts once per expert it
 * chose). Thread: any (relaxed reads of counters the engine thread bumps). */
uint64_t hs_moe_expert_tokens(const struct hs_moe *moe, int32_t il, int32_t e);

#endif
