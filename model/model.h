/* Models: architectures, weights (mmap'd from GGUF) and the forward pass.
 *
 * A model is immutable after load and may be shared by contexts. A context owns the KV cache
 * tensors and the activation buffers of one engine; it runs the forward pass of a batch of
 * sequences, placing each operation on a backend. The paged-cache bookkeeping (which block a
 * sequence uses) is the caller's (kvcache/): the forward pass only reads block tables.
 * Thread: a context is used by one thread at a time (the engine thread). */
#ifndef HS_MODEL_MODEL_H
#define HS_MODEL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "common/common.h"
#include "moe/moe.h"

struct hs_gguf;
struct hs_vocab;
struct hs_model;
struct hs_context;

enum hs_arch {
    HS_ARCH_LLAMA,         /* also Mixtral-style MoE (ffn_*_exps) */
    HS_ARCH_QWEN2,         /* QKV bias */
    HS_ARCH_QWEN3,         /* per-head q/k RMSNorm */
    HS_ARCH_QWEN2MOE,      /* QKV bias; experts plus a shared expert behind a sigmoid gate */
    HS_ARCH_QWEN3MOE,      /* per-head q/k norm; experts */
    HS_ARCH_OLMOE,         /* q/k RMSNorm over the whole projection; experts */
    HS_ARCH_HUNYUAN_MOE,   /* q/k norm after RoPE; experts plus a shared MLP (Hunyuan-A13B) */
    HS_ARCH_HUNYUAN_LARGE, /* hunyuan-moe with cross-layer attention (our own GGUF keys) */
    HS_ARCH_QWEN2VL,       /* qwen2 with M-RoPE (rope.dimension_sections); text positions are
                            * equal in every section, which is plain NEOX RoPE */
    HS_ARCH_COUNT,
};
/* The general.architecture name ("llama", "qwen2moe", "hunyuan-large", ...). */
const char *hs_arch_str(enum hs_arch a);
/* The architecture named s; HS_ARCH_COUNT when none is. */
enum hs_arch hs_arch_from_str(const char *s);

/* Where the per-head q/k RMSNorm sits in attention. */
enum hs_qk_norm {
    HS_QK_NORM_NONE,
    HS_QK_NORM_HEAD,       /* each head's q and k, before RoPE (qwen3) */
    HS_QK_NORM_HEAD_AFTER, /* each head's q and k, after RoPE (Hunyuan) */
    HS_QK_NORM_FULL,       /* the whole q and k projections, before RoPE (OLMoE) */
    HS_QK_NORM_COUNT,
};

struct hs_model_hparams {
    enum hs_arch arch;
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim; /* attention.key_length, default n_embd / n_head */
    int32_t n_ff;
    float norm_eps;
    struct hs_rope_params rope;
    /* M-RoPE (qwen2vl, rope.dimension_sections): rotary pairs of each (time, row, column) section
     * in turn, repeating; zeros for other architectures. */
    int32_t rope_sections[3];
    bool tied_output; /* output.weight absent: logits from token_embd */
    bool qkv_bias;
    enum hs_qk_norm qk_norm;
    /* Cross-layer attention (Hunyuan-Large): layers [g*s, g*s + s) share the K/V that layer g*s
     * computes, so the cache holds n_layer_kv = ceil(n_layer / s) layers. s = 1: none. */
    int32_t cla_share;
    int32_t n_layer_kv;
    /* Mixture of experts; router.n_expert == 0 for dense models. GGUF keys <arch>.expert_count,
     * .expert_used_count, .expert_gating_func, .expert_weights_norm, .expert_weights_scale
     * select the router; architectures give the defaults. */
    struct hs_moe_router router;
    int32_t n_ff_exp;   /* rows of each expert (expert_feed_forward_length; default n_ff) */
    int32_t n_ff_shexp; /* width of the shared expert; 0: none */
};

/* Opens path (mmap), reads hyper-parameters, tokenizer and weights. Errors: HS_E_IO (cannot
 * open), HS_E_FORMAT (damaged file, missing tensor or key, wrong shape: err names it),
 * HS_E_NOTSUP (architecture, tokenizer or weight type we do not run). *out stays NULL on error.
 * Returns new (free with hs_model_destroy). Thread: any. */
hs_status hs_model_load(const char *path, struct hs_model **out, struct hs_error *err);
/* Same over a GGUF image in memory the caller keeps valid until hs_model_destroy (borrowed;
 * fuzzers and tests). */
hs_status hs_model_load_memory(const void *data, size_t size, struct hs_model **out,
                               struct hs_error *err);
void hs_model_destroy(struct hs_model *m);

const struct hs_model_hparams *hs_model_hparams(const struct hs_model *m);
const struct hs_vocab *hs_model_vocab(const struct hs_model *m);
const struct hs_gguf *hs_model_gguf(const struct hs_model *m);
/* tokenizer.chat_template (NUL-terminated, owned by the model) or NULL. */
const char *hs_model_chat_template(const struct hs_model *m);
/* "llama 256d 4L q8_0" style one-line description. */
const char *hs_model_desc(const struct hs_model *m);
/* Bytes of all weight tensors, and the parameter count. */
size_t hs_model_size_bytes(const struct hs_model *m);
int64_t hs_model_n_params(const struct hs_model *m);
/* Weights one decoded token reads, and their parameter count: everything but the embedding
 * table (one row of it), with each layer's experts counted for the n_expert_used a token runs.
 * Equal to the totals (less the embeddings) for dense models. */
size_t hs_model_active_bytes(const struct hs_model *m);
int64_t hs_model_n_active_params(const struct hs_model *m);

/* ---- contexts and the forward pass ---- */

struct hs_context_params {
    int32_t n_ctx;        /* max tokens of one sequence (<= 0: the model's trained length) */
    int32_t n_kv_blocks;  /* blocks in the KV pool (<= 0: enough for n_seq_max * n_ctx) */
    int32_t block_size;   /* tokens per KV block (default 16) */
    int32_t n_seq_max;    /* sequences that may be in flight together (default 1) */
    int32_t n_batch;      /* max tokens per forward call (default 512) */
    enum hs_type kv_type; /* HS_TYPE_F16 (default, as llama.cpp) or HS_TYPE_F32 */
    const char *backend;  /* registry name, default "cpu" */
    /* Split execution. attn_backend names the backend that runs the decode attention of the
     * sequences placed on it (forward seq store 1), in a KV store of its own; NULL or the same
     * name as backend with attn_threads 0: not split (one backend, one store). With a split, the
     * attention backend is its own instance with attn_threads threads (<= 0: 1), pinned to the
     * cores after the FFN backend's (backend_params.n_threads, <= 0: the physical cores less
     * attn_threads), and driven by a thread of its own, so both run at once. */
    const char *attn_backend;
    int32_t attn_threads;
    int32_t n_kv_blocks_ffn; /* split only: blocks of the FFN backend's own store 0, for the
                              * sequences that decode there (below the long-context threshold);
                              * n_kv_blocks then sizes the attention store 1. 0: no store 0 */
    bool pingpong; /* split only: run the decode batch as two sub-batches that take turns on the
                    * two backends (L3/CHIME), split where the fitted model predicts the least
                    * time */
    /* Expert placement, in the spirit of llama.cpp's --override-tensor: "REGEX=BACKEND[:N]"
     * rules separated by commas. A rule places an expert when its POSIX extended regex is found
     * in the expert's name, "blk.<layer>.expert.<id>" (the shared expert:
     * "blk.<layer>.expert.shared"), or in one of the tensors holding it
     * ("blk.<layer>.ffn_up_exps.weight", ..._shexp.weight: all experts of the layer); the first
     * rule that matches wins; unmatched experts run on backend. BACKEND is a registry name (any
     * case); ":N" asks for another instance of it (own threads), e.g. "cpu:1". NULL: none. */
    const char *expert_placement;
    struct hs_backend_params backend_params;
};

struct hs_context_params hs_context_default_params(void);

/* Allocates the KV cache and activation buffers up front. Errors: HS_E_INVAL (bad params: err
 * says which), HS_E_NOMEM, HS_E_NOENT (unknown backend). Borrows m (must outlive the context).
 * Returns new (free with hs_context_destroy). */
hs_status hs_context_create(struct hs_model *m, const struct hs_context_params *p,
                            struct hs_context **out, struct hs_error *err);
void hs_context_destroy(struct hs_context *ctx);

int32_t hs_context_n_ctx(const struct hs_context *ctx);
int32_t hs_context_n_kv_blocks(const struct hs_context *ctx);
int32_t hs_context_block_size(const struct hs_context *ctx);
int32_t hs_context_n_batch(const struct hs_context *ctx);
size_t hs_context_kv_bytes(const struct hs_context *ctx);
struct hs_backend *hs_context_backend(struct hs_context *ctx);
/* Stats summed over every backend the context runs on (dense ops, attention, placed experts),
 * and their reset. */
void hs_context_get_stats(const struct hs_context *ctx, struct hs_backend_stats *out);
void hs_context_reset_stats(struct hs_context *ctx);
/* The mixture-of-experts state (placement, hot-expert counters), NULL for dense models. */
const struct hs_moe *hs_context_moe(const struct hs_context *ctx);
/* Name of the backend expert e of layer il runs on (e == -1: the shared expert); NULL when the
 * model has no such expert. */
const char *hs_context_expert_backend(const struct hs_context *ctx, int32_t il, int32_t e);

/* One sequence of a forward batch: n_tokens new tokens at positions [n_past, n_past + n_tokens).
 * block_table must cover all n_past + n_tokens positions (blocks owned by this sequence alone
 * for the new positions). Logits are produced for the last n_logits new tokens. */
struct hs_forward_seq {
    const hs_token *tokens;
    int32_t n_tokens;
    int32_t n_past;
    const int32_t *block_table; /* block ids of the sequence's store */
    int32_t n_logits;
    int32_t store; /* the KV store its blocks live in: 0 (the FFN backend's; the only one when not
                    * split) or 1 (the attention backend's, which runs its decode attention;
                    * its prefill attention stays on the FFN backend) */
};

/* Multimodal input of one sequence of a forward batch (hs_model_forward_mm); both NULL for text.
 * embd[i], when not NULL, is token i's input row (n_embd floats: an image's embedding) in place
 * of its token's embedding. mrope_pos: [n_tokens][3] (time, row, column) rotary positions for
 * M-RoPE models (qwen2vl; HS_E_INVAL for others); NULL: n_past + i in all three. Borrowed for the
 * call. */
struct hs_forward_mm {
    const float *const *embd;
    const int32_t *mrope_pos;
};

/* KV stores: 1 when not split, 2 when split (0: the FFN backend's, 1: the attention
 * backend's). */
#define HS_KV_STORES_MAX 2
int32_t hs_context_n_stores(const struct hs_context *ctx);
/* Blocks of store s (0 when s is out of range or the store is empty). */
int32_t hs_context_store_n_blocks(const struct hs_context *ctx, int32_t s);
/* The backend holding store s, NULL when out of range. */
struct hs_backend *hs_context_store_backend(struct hs_context *ctx, int32_t s);
/* The attention backend (== hs_context_backend when not split). */
struct hs_backend *hs_context_attn_backend(struct hs_context *ctx);

/* Copies whole blocks (every layer's K and V): block src[i] of store src_store into block dst[i]
 * of dst_store, for i < n; the same store is allowed (copy-on-write), the same block is not.
 * Between two backends the bytes count in their stats. *bytes (may be NULL) gets the bytes
 * moved. HS_E_INVAL: a store or block id out of range. Thread: engine. */
hs_status hs_context_copy_blocks(struct hs_context *ctx, int32_t src_store, const int32_t *src,
                                 int32_t dst_store, const int32_t *dst, int32_t n, uint64_t *bytes);

/* Split execution as measured: steps, their predicted and measured layer-loop time, how much of
 * the two sides' work overlapped. */
struct hs_split_model; /* attention/attention.h */

struct hs_split_stats {
    uint64_t n_steps;       /* forward calls that used the attention backend */
    uint64_t n_steps_split; /* of those, run as two ping-pong sub-batches */
    double wall_s;          /* layer loops of those steps, wall time */
    double ffn_busy_s;      /* engine thread inside stages (FFN backend) */
    double attn_busy_s;     /* attention thread inside attention jobs */
    double overlap_s;       /* both busy at once: ffn_busy + attn_busy - wall, summed per step
                             * (>= 0) */
    double predicted_s;     /* the balancer's predicted layer-loop time, summed over steps */
    double abs_err_s;       /* sum of |predicted - measured| per step (measured: the timeline's
                             * time when attention ran on simulated time, else wall) */
    double timeline_s;      /* the steps' layer loops on the timeline: the critical path of the
                             * FFN stages' real times and the attention stages' simulated times
                             * (real where the backend is real) through the ping-pong's
                             * dependencies; what the step takes on the modelled hardware */
    double sim_attn_s;      /* simulated attention time charged by the attention backend */
    double kv_imbalance;    /* ping-pong steps: sum of |kv_A - kv_B| / (kv_A + kv_B), the
                             * sub-batches' KV tokens on the attention backend (0: even, 1: one
                             * side has it all) */
    double attn_max_s;      /* ping-pong steps: the slower sub-batch's attention time (all
                             * layers; simulated where the backend simulates), summed: the
                             * attention side's critical path */
    double attn_pair_s;     /* the same steps' attention time of both sub-batches */
};
void hs_context_get_split_stats(const struct hs_context *ctx, struct hs_split_stats *out);
/* The sub-batch balance's fitted cost model (attention/attention.h; borrowed: valid while ctx
 * is, updated by each forward call), for a caller laying out the next batch. Thread: the one
 * that calls forward. */
const struct hs_split_model *hs_context_split_model(const struct hs_context *ctx);

/* A stage of the forward pass as it ran, for tracing: called on the thread that ran it (the
 * engine's, or the attention thread's for "attention" on the attention backend), right after
 * it. t0_ns is CLOCK_MONOTONIC. Must be quick and thread-safe. */
struct hs_forward_stage {
    const char *stage;   /* "pre", "attention", "post", "output" */
    const char *backend; /* the backend's placement name, e.g. "cpu" or "cpu (attention)" */
    int32_t layer;       /* -1 for the output */
    int32_t sub_batch;   /* 0 (A) or 1 (B); 0 when not split */
    int32_t n_rows;
    int32_t n_seqs;
    bool on_attn_thread;
    bool timeline; /* a stage placed on the timeline (real FFN, simulated attention): t0_ns and
                    * dur_ns are then on that clock, which starts at the step's real start */
    int64_t t0_ns;
    int64_t dur_ns;
    int64_t sim_ns; /* attention: the simulated time charged for it (0: a real backend) */
};
typedef void (*hs_forward_trace_fn)(void *user, const struct hs_forward_stage *s);
void hs_context_set_trace(struct hs_context *ctx, hs_forward_trace_fn fn, void *user);

/* Runs the batch (sum of n_tokens <= n_batch). Errors: HS_E_INVAL (token id out of range,
 * n_past + n_tokens > n_ctx, too many tokens: nothing is written), HS_E_DEVICE/HS_E_NOMEM from a
 * backend (the new positions' KV content is then undefined). On success the logits of the
 * requested rows, in sequence order, are at hs_context_logits(). */
hs_status hs_model_forward(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                           int32_t n_seqs);
/* hs_model_forward with multimodal input: mm[s] (mm may be NULL) for seqs[s]. Same errors and
 * results. Thread: engine. */
hs_status hs_model_forward_mm(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                              const struct hs_forward_mm *mm, int32_t n_seqs);

/* [n_rows][n_vocab] logits of the last forward call; valid until the next call. */
const float *hs_context_logits(const struct hs_context *ctx);
int32_t hs_context_n_logit_rows(const struct hs_context *ctx);

/* ---- random-weight models (hetserve mkmodel) ---- */

struct hs_mkmodel_params {
    enum hs_arch arch;
    int32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    /* F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. Q4_K writes the types
     * llama-quantize's Q4_K_M picks (Q6_K for the output, the embeddings when tied, and attn_v /
     * ffn_down in its use_more_bits layers). K-quant rows that are no multiple of 256 fall
     * back as llama-quantize's do: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0. */
    enum hs_type wtype;
    uint64_t seed;
    bool tied_output;
    /* Experts (n_expert 0: dense). The MoE architectures need them; llama takes them too
     * (Mixtral-style). n_ff_exp 0: n_ff. n_ff_shexp: shared expert width (qwen2moe and the
     * Hunyuan architectures need one; 0: n_ff_exp). */
    int32_t n_expert, n_expert_used, n_ff_exp, n_ff_shexp;
    int32_t gating;       /* written as expert_gating_func when > 0 */
    int32_t weights_norm; /* written as expert_weights_norm when >= 0 (-1: absent) */
    float weights_scale;  /* written as expert_weights_scale when not 0 */
    int32_t cla_share;    /* cross-layer attention share factor (hunyuan-large; 0/1: none) */
    /* SmolVLM's image tokens as the vocabulary's last three (CONTROL) entries:
     * "<fake_token_around_image>", "<global-img>" and "\n\n", which llama.cpp's libmtmd looks up
     * by text around an idefics3 projector's images (n_vocab >= 300 still holds). */
    bool image_tokens;
};

/* Defaults: a tiny llama (dim 64, 2 layers). */
struct hs_mkmodel_params hs_mkmodel_default_params(void);
/* The SmolLM-135M shape: dim 576, 30 layers, 9/3 heads, ffn 1536, vocab 49152. */
struct hs_mkmodel_params hs_mkmodel_smollm_params(void);
/* The MoE benchmark shape: qwen2moe, dim 256, 4 layers, 8/4 heads, 8 experts (4 used) of ffn
 * 512, a shared expert of 512, vocab 4096, Q8_0. */
struct hs_mkmodel_params hs_mkmodel_qwen2moe_params(void);
/* A small Hunyuan-Large: dim 128, 4 layers, 8/2 heads, cross-layer attention sharing K/V in
 * pairs, 16 experts of 128 with top-1 routing, a shared MLP of 256, vocab 1024, F32. */
struct hs_mkmodel_params hs_mkmodel_hunyuan_large_params(void);

/* Writes a random-weight GGUF with a synthetic SentencePiece vocabulary of n_vocab tokens.
 * Errors: HS_E_INVAL (bad shape: err says which), HS_E_IO. Thread: any. */
hs_status hs_mkmodel_write(const struct hs_mkmodel_params *p, const char *path,
                           struct hs_error *err);

#endif
