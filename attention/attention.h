/* Attention, device-neutral: flash-decoding partials and their exact merge, and the orchestration
 * that decides which backend computes which KV range of which sequence.
 *
 * A backend's attention op (hs_backend_attention with m and l set) returns, for each query row and
 * head, the partial (m, l, o) of one range of KV positions: m the maximum scaled score, l the sum
 * of exp(score - m), o the unnormalised sum of exp(score - m) * v. Partials of disjoint ranges
 * combine exactly (up to float rounding) into the attention over their union:
 *     M = max(m1, m2),  l = l1 e^(m1-M) + l2 e^(m2-M),  o = o1 e^(m1-M) + o2 e^(m2-M),
 * and the result is o / l. So a sequence whose older blocks live on one backend and recent ones on
 * another still gets the monolithic answer.
 *
 * Thread: the merge functions run on any thread over host memory. */
#ifndef HS_ATTENTION_ATTENTION_H
#define HS_ATTENTION_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/attn-partial.h"
#include "backends/backend.h"
#include "common/common.h"

/* ---- partials and their merge (host memory) ----
 *
 * struct hs_attn_partial and hs_attn_partial_clear/combine/finalize and hs_attn_merge live in
 * backends/attn-partial.h (included above), one layer down, so that a backend which splits an
 * attention op over units of its own (the npu backend's cores, the pim backend's ranks) merges
 * them with the same code; attention/ merges the spans of different backends with it. */

/* ---- which backend computes which range of which sequence ----
 *
 * A sequence's KV may live in several places: a span is one range of its positions whose blocks
 * are in one backend's cache. hs_attn_run computes the attention of a batch of sequences over
 * their spans: sequences with a single span run normalised on that span's backend (no partials,
 * so the bits of the monolithic op), grouped into one call per backend and cache; a sequence
 * with several spans gets partials from each span's backend, merged exactly here. */
struct hs_attn_span {
    struct hs_backend *be; /* computes this range; borrowed */
    const struct hs_tensor
        *k_cache; /* [n_blocks][block_size][n_kv_head][head_dim] in be's memory */
    const struct hs_tensor *v_cache;
    const int32_t *block_table; /* block ids of be's cache, indexed by position / block_size;
                                 * only the entries of this range are read */
    int32_t kv_begin, kv_end;   /* the range; 0, 0: the whole causal prefix */
};

struct hs_attn_span_seq {
    int32_t n_past, n_new, q_row; /* as struct hs_attn_seq */
    int32_t n_spans;              /* >= 1; spans must be disjoint and cover [0, n_past + n_new) */
    const struct hs_attn_span *spans;
};

/* Reusable scratch for the partials (grown on demand, host memory). */
struct hs_attn_exec;
hs_status hs_attn_exec_create(struct hs_attn_exec **out);
void hs_attn_exec_destroy(struct hs_attn_exec *x);

/* out[q_row ...] = attention of each sequence over its spans. q and out as in hs_attn_args
 * ([n_rows][n_head][head_dim] f32, host memory); n_batch_rows as there. Errors: HS_E_INVAL (no
 * spans, bad shapes: from the backends' validation), HS_E_NOMEM, or a backend's. Thread: the
 * caller drives every backend named (so, for a backend with a driver thread, that thread). */
hs_status hs_attn_run(struct hs_attn_exec *x, const struct hs_tensor *q, struct hs_tensor *out,
                      const struct hs_attn_span_seq *seqs, int32_t n_seqs, int32_t block_size,
                      float scale, int32_t n_batch_rows);

/* ---- the attention backend's driver thread ----
 *
 * Split execution runs the decode attention of one sub-batch on the attention backend while the
 * engine thread runs the other sub-batch's dense layers on the FFN backend. A CPU backend runs
 * its share of each op on the thread that calls it, so the attention backend gets a thread of
 * its own, bound to its cores (hs_backend_bind_caller): the engine posts one job at a time and
 * later waits for it. Posting and waiting spin briefly before sleeping, since a job lasts tens
 * of microseconds to milliseconds and a layer posts two. */
struct hs_attn_worker;

/* A job: runs on the worker thread; its status comes back from hs_attn_worker_wait. */
typedef hs_status (*hs_attn_job_fn)(void *arg);

/* Starts the thread that drives be (borrowed; must outlive the worker). HS_E_NOMEM,
 * HS_E_INTERNAL (thread creation); *out stays NULL on failure. Free with
 * hs_attn_worker_destroy. Thread: engine. */
hs_status hs_attn_worker_create(struct hs_backend *be, struct hs_attn_worker **out);
/* Waits for a posted job, stops and joins the thread. NULL: no-op. */
void hs_attn_worker_destroy(struct hs_attn_worker *w);
/* Posts fn(arg); at most one job is in flight (HS_ASSERT). Thread: engine. */
void hs_attn_worker_post(struct hs_attn_worker *w, hs_attn_job_fn fn, void *arg);
/* Waits for the posted job and returns its status (HS_OK when none is in flight). Thread:
 * engine. */
hs_status hs_attn_worker_wait(struct hs_attn_worker *w);
/* Seconds the worker spent inside jobs since creation. */
double hs_attn_worker_busy_s(const struct hs_attn_worker *w);

/* ---- sub-batch balance (L3/CHIME's two-sub-batch ping-pong) ----
 *
 * The running decode batch is split into two sub-batches A and B that take turns: while the
 * FFN backend runs A's dense layers the attention backend runs B's attention, and the other way
 * round. Per layer the pipeline then takes max(F_A, T_B) + max(F_B, T_A), where F is the FFN
 * side's time for a sub-batch (its dense layers and whatever attention stays on the FFN backend)
 * and T the attention backend's. The model predicts both, F linear in the sub-batch's rows and T
 * linear in its KV tokens and sequences on the attention backend, fitted online by recursive
 * least squares (with forgetting, so a drifting machine is followed) from measured (or
 * simulated) stage times. */
struct hs_split_model {
    double f[2];     /* F = f[0] + f[1] * rows, seconds per layer */
    double a[3];     /* T = a[0] + a[1] * kv_tokens + a[2] * n_seqs, seconds per layer */
    double pf[2][2]; /* RLS covariances */
    double pa[3][3];
    int64_t n_obs_f, n_obs_a;
};

/* One sequence of the batch, in batch order. */
struct hs_split_item {
    int32_t rows;      /* its query rows this step (1 for a decode) */
    int32_t out_rows;  /* of those, rows whose logits are wanted */
    int32_t kv_tokens; /* positions its attention reads */
    bool remote;       /* its attention runs on the attention backend */
};

/* A prior that splits rows and KV tokens evenly until measurements arrive. */
void hs_split_model_init(struct hs_split_model *m);
void hs_split_model_observe_ffn(struct hs_split_model *m, int32_t rows, double seconds);
void hs_split_model_observe_attn(struct hs_split_model *m, int64_t kv_tokens, int32_t n_seqs,
                                 double seconds);
double hs_split_predict_ffn(const struct hs_split_model *m, int32_t rows);
double hs_split_predict_attn(const struct hs_split_model *m, int64_t kv_tokens, int32_t n_seqs);

/* The split point k (A = items [0, k), B = [k, n)) with the least predicted time per layer,
 * max(F_A, T_B) + max(F_B, T_A), among the k that leave attention-backend rows on both sides;
 * *period_s (may be NULL) gets that time. Returns 0 when there is no such k (fewer than two
 * remote items), with *period_s the whole batch's sequential F + T. Whether a split beats the
 * whole batch is the caller's to compare (hs_split_predict_*). Only splits that leave A's rows
 * and A's logit rows multiples of row_align (>= 1) are considered: the CPU kernels compute
 * activation rows in tiles of 4 and Q4_K's 4-row tiles round in another order than its single
 * rows, so a split on a tile boundary keeps every row in the tile it has in the whole batch,
 * and so keeps its bits. */
int32_t hs_split_choose(const struct hs_split_model *m, const struct hs_split_item *items,
                        int32_t n, int32_t row_align, double *period_s);

#endif
