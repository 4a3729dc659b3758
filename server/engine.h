/* The serving engine: continuous batching of generation requests over one model.
 *
 * One engine thread owns the model context, the scheduler and the KV pool; HTTP threads meet it
 * through one submission queue (a mutex held for a few instructions) and read results from a
 * per-request channel. Each engine step runs one forward pass over the decode tokens of all
 * running sequences plus prefill chunks of newly admitted ones, under a token budget (chunked
 * prefill: a long prompt never stalls running streams). Prompt prefixes are shared through the
 * KV pool's prefix cache; when blocks run out the most recently admitted sequence is preempted
 * (its blocks freed, it is requeued at the front and recomputed later, giving the same tokens).
 * Batching never changes results: a greedy request gives the same tokens alone or among others.
 *
 * Memory: requests are allocated at submit (token arrays sized for prompt + max_tokens); the
 * engine's per-step scratch at create; output buffers grow geometrically, so nothing is
 * malloc'd per token in the steady state.
 *
 * Typical use on an HTTP thread:
 *     struct hs_engine_request r;
 *     hs_engine_request_init(&r);
 *     r.prompt = ids; r.n_prompt = n; r.max_tokens = 64; r.notify = resume_cb; r.notify_user = c;
 *     st = hs_engine_submit(eng, &r, &h, &err);      // HS_E_BUSY -> 429, HS_E_INVAL -> 400
 *     ... on each notify (or in a loop):
 *     while (hs_engine_poll(h, &ev) == HS_OK) { send ev; if (ev.type == HS_EVENT_DONE) ... }
 *     hs_engine_release(h);                          // client gone early: hs_engine_cancel first
 *
 * JSON never appears here: api/ turns HTTP into a struct hs_engine_request and events into
 * JSON/SSE. */
#ifndef HS_SERVER_ENGINE_H
#define HS_SERVER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "model/model.h"
#include "server/reasoning.h"
#include "server/sampling.h"

struct hs_model;
struct hs_vocab;
struct hs_engine;
struct hs_engine_handle;

/* ---- limits ---- */

#define HS_ENGINE_MAX_CHOICES    16  /* n of one request */
#define HS_ENGINE_MAX_STOP       16  /* stop strings of one request */
#define HS_ENGINE_MAX_STOP_BYTES 256 /* length of one stop string */
/* Alternatives per token (hetserve generate --logprobs; api/ keeps OpenAI's 20). */
#define HS_ENGINE_MAX_TOP_LOGPROBS 100
#define HS_ENGINE_MAX_DRAFT        32 /* tokens of one speculative draft */

/* ---- engine parameters ---- */

struct hs_engine_params {
    int32_t n_parallel;     /* max sequences running at once (a request with n choices runs n
                             * sequences); <= 0: default 8; at most 4096 */
    int32_t n_ctx;          /* max tokens (prompt + generated) of one sequence; <= 0: the
                             * model's trained length, at most 4096 */
    int32_t n_kv_blocks;    /* KV pool size in blocks; <= 0: from kv_bytes, or when that is 0
                             * too, enough for n_parallel sequences of n_ctx tokens. Always at
                             * least one full context (ceil(n_ctx / block_size)), else
                             * HS_E_INVAL: a lone sequence must always be able to finish */
    size_t kv_bytes;        /* KV pool byte budget, used when n_kv_blocks <= 0 (0: unused) */
    int32_t block_size;     /* tokens per KV block; default 16 */
    int32_t n_batch_tokens; /* token budget of one step (decode + prefill chunks); default 512;
                             * raised to n_parallel if smaller so every decode fits */
    int32_t max_waiting;    /* accepted requests none of whose sequences runs yet: when that
                             * many wait, submit returns HS_E_BUSY; <= 0: default 256 */
    int32_t n_threads;      /* compute threads; <= 0: one per physical core */
    int64_t timeout_ms;     /* default request timeout from submit to the last token; 0: none */
    enum hs_type kv_type;   /* HS_TYPE_F16 (default) or HS_TYPE_F32 */
    const char *backend;    /* backend registry name; NULL: "cpu" */
    const char *expert_placement; /* MoE models: "REGEX=BACKEND[:N],..." rules placing experts
                                   * (hs_context_params.expert_placement); NULL: none */
    /* Split execution (hs_context_params): attn_backend runs the decode attention of the
     * sequences placed on it, in a KV pool of its own, with attn_threads threads on cores apart
     * from the FFN backend's n_threads. NULL with attn_threads 0: not split. */
    const char *attn_backend;
    int32_t attn_threads;
    bool pingpong; /* two sub-batches taking turns on the two backends */
    /* With ping-pong, how the decode batch is laid out for the split into sub-batches A and B
     * (the split point is the balancer's, hs_split_choose, either way). Only whole 4-row tiles
     * of single-row decodes are reordered, so every row keeps the tile it computes in and the
     * outputs do not change (README "Split execution"). */
    enum hs_pingpong_balance {
        HS_PINGPONG_BALANCE_CUT,    /* admission order (default) */
        HS_PINGPONG_BALANCE_KV,     /* laid out every step for the least predicted step time
                                     * (the balancer's cost model) given the KV now */
        HS_PINGPONG_BALANCE_LENGTH, /* laid out when the decoding sequences change, for the
                                     * least predicted step time now and along their predicted
                                     * remaining outputs (server/lengthpred: contexts grow,
                                     * sequences end), and kept while they decode */
        HS_PINGPONG_BALANCE_COUNT,
    } pingpong_balance;
    const char *trace_path; /* NULL: no trace; else every step is written there as Chrome trace
                             * events (Perfetto): each forward-pass stage per layer and
                             * sub-batch, on a track per backend thread, with KV counters */
    /* Backend-specific settings (hs_backend_params.config and .tenants), for the backends that
     * have them: npu takes a chip description file and its tenants (--npu-config,
     * --npu-tenants), pim its hardware model file (--pim-config). NULL: the backends'
     * defaults. */
    const char *backend_config;
    const char *backend_tenants;
    int32_t long_context; /* split: a sequence decodes on the attention backend once its context
                           * passes this many tokens (its blocks are copied over then), on the
                           * FFN backend before; 0 (default): from the start. Prompts longer
                           * than it are prefilled straight into the attention backend's pool.
                           * The FFN backend's pool gets room for n_parallel sequences of that
                           * length (and at least one whole context) */
    /* Scheduling of long outputs (server/sched.c's policy prose): the order waiting sequences
     * are admitted in, the fairness bound of the length order, and segments. */
    enum hs_sched_order {
        HS_SCHED_FIFO,   /* submit order (preempted sequences first) */
        HS_SCHED_LENGTH, /* shortest predicted remaining output first, within fair_wait_ms */
        HS_SCHED_ORDER_COUNT,
    } order;
    int32_t fair_wait_ms;   /* length order: a sequence waiting longer than this is admitted
                             * before any that has not, oldest first; <= 0: default 1000 */
    int32_t segment_tokens; /* > 0: a generation is decoded in segments of this many tokens;
                             * between segments it may yield its slot to waiting sequences,
                             * keeping its KV blocks (never changing its output); 0: off */
    /* Speculative decoding from history (server/spec.c): the longest draft a decoding
     * sequence verifies in one step, 0 (default): off; at most HS_ENGINE_MAX_DRAFT. Drafts come
     * from suffix tries over the sequence's own text and over earlier responses, kept in
     * at most spec_store_bytes (0: HS_SUFFIX_STORE_BYTES, 8 MiB; allocated as responses come,
     * not up front) and in at most HS_SUFFIX_TEXT_NODES nodes per sequence. Lossless: the tokens
     * (greedy) or their distribution (sampled) are those of plain decoding. */
    int32_t spec_max_draft;
    size_t spec_store_bytes;
    /* The cost model's knee (spec.c: a step of R rows takes a + b R; a / b in rows, at least 1)
     * held at this value instead of fitted from the steps' times: 0 (default) fits it online.
     * Fixing it makes which drafts are taken independent of timing (tests on loaded machines;
     * a deployment that knows its batch is memory-bound). */
    double spec_knee;
    /* Sampling: each step draws the decoding sequences' next tokens as tasks on the FFN
     * backend's threads (hs_backend_run_tasks), O(vocabulary) each, when there are enough of
     * them (sequences x vocabulary >= 65536); the tokens are the same
     * bits either way (each sequence has its own sampler and seed). true: one after another on
     * the engine thread, as before (benchmarks compare the two). Default false. */
    bool serial_sampling;
};

/* Defaults as documented above. Thread: any. */
struct hs_engine_params hs_engine_default_params(void);
/* "fifo", "length"; "?" out of range. Thread: any. */
const char *hs_sched_order_str(enum hs_sched_order o);
/* "cut", "kv", "length"; "?" out of range. Thread: any. */
const char *hs_pingpong_balance_str(enum hs_pingpong_balance b);

/* Creates the model context and KV pool and starts the engine thread. Borrows model (must
 * outlive the engine; its vocab is immutable and may be used by HTTP threads to tokenize).
 * Errors: HS_E_INVAL (bad params, err says which), HS_E_NOMEM, HS_E_NOENT (unknown backend),
 * HS_E_INTERNAL (thread creation failed). *out stays NULL on error. Returns new (free with
 * hs_engine_destroy). Thread: any. */
hs_status hs_engine_create(struct hs_model *model, const struct hs_engine_params *params,
                           struct hs_engine **out, struct hs_error *err);

/* Stops accepting, cancels every request still queued or running (their channels get their
 * final events, finish reason HS_FINISH_CANCELED), joins the engine thread and frees the
 * engine. Handles stay valid until released: hs_engine_release/poll/wait/cancel on them remain
 * safe after destroy. NULL: no-op. Thread: any but the engine's (not from a notify callback). */
void hs_engine_destroy(struct hs_engine *e);

/* Graceful stop (SIGTERM): from now on hs_engine_submit returns HS_E_CANCELED; requests already
 * accepted (waiting or running) go on until they finish or until timeout_ms (relative, < 0:
 * no limit) passes, after which the remainder is canceled. Blocks until no request is in
 * flight. Returns HS_OK when everything finished on its own, HS_E_BUSY when the deadline forced
 * cancellations. The engine keeps running (idle) until hs_engine_destroy. Thread: any but the
 * engine's. */
hs_status hs_engine_drain(struct hs_engine *e, int64_t timeout_ms);

/* Context length of one sequence, and the vocab (borrowed from the model). Thread: any. */
int32_t hs_engine_n_ctx(const struct hs_engine *e);
const struct hs_vocab *hs_engine_vocab(const struct hs_engine *e);

/* The engine's --trace (engine_params.trace_path), NULL: none; for other threads' events beside
 * the engine's (the API's image encoder), on track ids of their own (HS_ENGINE_TRACE_TID_VISION
 * of process 1). Borrowed until hs_engine_destroy. Thread: any. */
#define HS_ENGINE_TRACE_TID_VISION 3
struct hs_trace *hs_engine_trace(const struct hs_engine *e);

/* ---- requests ---- */

/* Called on the engine thread, without the engine's or the channel's lock held, after new
 * output reached the request's channel (coalesced: at most once per engine step per request)
 * and after its final event. Never called once the handle is released. Must be quick and must
 * not block (e.g. MHD_resume_connection, or a write to an eventfd); it may call hs_engine_poll,
 * hs_engine_cancel and hs_engine_release on its own handle, and hs_engine_get_metrics, but no
 * other engine function (no submit, wait, drain or destroy). */
typedef void (*hs_engine_notify_fn)(void *user);

/* An image in a prompt: prompt tokens [first, first + n_tokens) are its placeholders, whose
 * input rows are rows (n_tokens x the model's n_embd floats, merged-grid raster order of a
 * grid_x x grid_y grid) instead of their token embeddings. With an M-RoPE model (qwen2vl) they
 * take (time, row, column) positions and the tokens after the image go on from its time
 * position + max(grid_x, grid_y), as llama.cpp's libmtmd does. The placeholder token ids are
 * the caller's: the prefix cache matches them, so they should spell the image's hash. */
struct hs_engine_image {
    int32_t first, n_tokens;
    int32_t grid_x, grid_y;
    const float *rows; /* borrowed during submit only (copied) */
};

/* A generation request, in caller memory; everything is copied by hs_engine_submit. */
struct hs_engine_request {
    const hs_token *prompt; /* [n_prompt] token ids, tokenized by the caller (BOS included if
                             * wanted); borrowed during submit only */
    int32_t n_prompt;       /* >= 1 */
    int32_t max_tokens;     /* generated tokens per choice; <= 0 or more than the context
                             * allows: capped to n_ctx - n_prompt (the finish reason is then
                             * "length" when the context fills) */
    int32_t n;              /* choices, 1 .. HS_ENGINE_MAX_CHOICES (default 1); choice i samples
                             * with seed sampling.seed + i; the choices share the prompt's KV
                             * blocks through the prefix cache */
    struct hs_sampling_params sampling; /* validated with hs_sampling_params_check; logit_bias
                                         * is copied */
    const char *const *stop; /* [n_stop] NUL-terminated stop strings, 1 .. MAX_STOP_BYTES bytes
                              * each; generation of a choice ends when its text contains one;
                              * the stop string and anything after it is never emitted */
    int32_t n_stop;          /* 0 .. HS_ENGINE_MAX_STOP */
    bool logprobs;           /* report each token's log-probability (raw logits' log-softmax) */
    int32_t top_logprobs;    /* and this many alternatives, 0 .. HS_ENGINE_MAX_TOP_LOGPROBS
                              * (needs logprobs) */
    bool ignore_eos;         /* keep generating past end-of-generation tokens */
    bool report_eos;         /* list the end-of-generation token that ends a choice as the
                              * last of its final DELTA's tokens (with its logprobs when
                              * asked), for callers that show every step; its text stays out
                              * of text either way */
    int64_t timeout_ms;      /* from submit to the final event; 0: the engine's default; < 0:
                              * none. On expiry the choices end with HS_FINISH_TIMEOUT */
    uint64_t id;             /* caller's request id, for logs ("req=<id>") */
    /* Structured output: a GBNF grammar (llama.cpp's syntax, server/grammar.h) every choice's
     * output must follow, [n_grammar] bytes, borrowed during submit only (compiled there: a
     * syntax error is HS_E_INVAL with err saying where). NULL: none. The sampler draws only
     * tokens the grammar allows next, and an end-of-generation token only where the output is
     * complete; when the grammar allows no token (or only tokens logit_bias bans) the choice
     * ends with HS_FINISH_ERROR and DONE's detail says so. */
    const char *grammar;
    size_t n_grammar;
    /* Split engines: where this request's decode attention runs. HS_PLACE_AUTO: by the
     * engine's long_context (or by long_context below when >= 0); HS_PLACE_ATTN: on the
     * attention backend from the start; HS_PLACE_FFN: on the FFN backend throughout. Ignored
     * when the engine is not split. */
    enum hs_place { HS_PLACE_AUTO, HS_PLACE_ATTN, HS_PLACE_FFN, HS_PLACE_COUNT } place;
    int32_t long_context; /* < 0: the engine's */
    uint64_t cache_salt;  /* prefix cache namespace: requests share cached prompt blocks only
                           * with requests of the same salt (kvcache.h); 0 (default): shared */
    /* Thinking block (server/reasoning.h): with reasoning.enabled, stop strings apply only after
     * the block, budget_tokens bounds it (then the close sequence is forced) and the grammar
     * constrains only what follows it. Zeroed (default): none. */
    struct hs_reasoning_params reasoning;
    /* Images in the prompt, in increasing, disjoint spans (HS_E_INVAL otherwise); 0: none. */
    const struct hs_engine_image *images;
    int32_t n_images;
    uint64_t client;     /* who asks, for the output length history (server/lengthpred.h): e.g. a
                          * hash of the API key's tenant and the `user` field; 0: anonymous */
    bool no_speculation; /* never draft for this request (the engine's spec_max_draft aside) */
    hs_engine_notify_fn notify; /* may be NULL (then poll or wait) */
    void *notify_user;
};

/* Fills r with defaults: n 1, max_tokens 16, hs_sampling_default_params(), no stop, no
 * logprobs, timeout 0 (engine default). Thread: any. */
void hs_engine_request_init(struct hs_engine_request *r);

/* Validates and queues r. On HS_OK *out is a new handle (the request's result channel), to be
 * released with hs_engine_release. Errors (nothing queued, *out NULL):
 *   HS_E_INVAL     bad values: err says which field and value (prompt empty or holding token
 *                  ids outside the vocab, prompt alone filling the context, n, stop, logprobs,
 *                  sampling ranges);
 *   HS_E_BUSY      the waiting queue is full (max_waiting): retry later (429/503 +
 *                  Retry-After);
 *   HS_E_CANCELED  the engine is draining or stopping (503);
 *   HS_E_NOMEM.
 * Thread: any (HTTP threads). */
hs_status hs_engine_submit(struct hs_engine *e, const struct hs_engine_request *r,
                           struct hs_engine_handle **out, struct hs_error *err);

/* ---- results ---- */

enum hs_finish_reason {
    HS_FINISH_NONE,     /* not finished */
    HS_FINISH_STOP,     /* end-of-generation token or stop string ("stop") */
    HS_FINISH_LENGTH,   /* max_tokens or the context reached ("length") */
    HS_FINISH_CANCELED, /* hs_engine_cancel, release before the end, drain deadline, destroy */
    HS_FINISH_TIMEOUT,  /* the request's timeout passed */
    HS_FINISH_ERROR,    /* the forward pass failed (the DONE event's status says how) */
    HS_FINISH_COUNT,
};
/* "stop", "length", "canceled", "timeout", "error", "none"; static. Thread: any. */
const char *hs_finish_reason_str(enum hs_finish_reason r);

/* One generated token's log-probabilities (log-softmax of the raw logits, before sampling
 * transforms, as OpenAI reports them). The alternatives are sized by the request: a token in a
 * channel costs sizeof(struct hs_token_logprob) plus 8 bytes per alternative. */
struct hs_token_logprob {
    hs_token token;
    float logprob;
    int32_t n_top;             /* top_logprobs of the request, or fewer when the vocab is smaller */
    const hs_token *top_ids;   /* [n_top] descending, ties by lower id; borrowed like the event */
    const float *top_logprobs; /* [n_top] */
};

struct hs_engine_usage {
    int32_t prompt_tokens;     /* n_prompt (counted once for all choices) */
    int32_t completion_tokens; /* generated tokens of all choices, an EOS token included */
    int32_t cached_tokens;     /* prompt tokens of the first admission found in the prefix
                                * cache (choices > 0 sharing the first choice's blocks do not
                                * count) */
    int32_t reasoning_tokens;  /* thinking tokens of all choices (hs_reasoning_n_think; 0
                                * without hs_engine_request.reasoning) */
};

enum hs_event_type {
    HS_EVENT_DELTA, /* new output of one choice; its last one has finish_reason set */
    HS_EVENT_DONE,  /* every choice has finished: usage and status; the last event */
    HS_EVENT_COUNT,
};

/* An event taken from a channel. Pointers are borrowed: valid until the next poll/wait/release
 * on the same handle. Consecutive outputs of a choice not yet taken are merged into one DELTA
 * (a slow reader gets fewer, bigger events). */
struct hs_engine_event {
    enum hs_event_type type;
    int32_t choice;   /* DELTA: 0 .. n-1 */
    const char *text; /* DELTA: newly completed UTF-8 text, never split inside a
                       * character, never holding (part of) a stop string; NUL-terminated
                       * at text[n_text]; may be empty (n_text 0) */
    size_t n_text;
    const hs_token *tokens; /* DELTA: new token ids [n_tokens] in order (the EOS that ends a
                             * choice excluded, unless the request set report_eos). Text
                             * may lag behind tokens (held back for an incomplete character or
                             * a possible stop string); tokens whose text falls after a stop
                             * string match are still listed */
    int32_t n_tokens;
    const struct hs_token_logprob *logprobs; /* DELTA: [n_tokens] when the request asked for
                                              * logprobs, else NULL */
    enum hs_finish_reason finish_reason;     /* DELTA: HS_FINISH_NONE until the choice's last
                                              * DELTA */
    struct hs_engine_usage usage;            /* DONE */
    hs_status status;   /* DONE: HS_OK, or the forward pass error behind HS_FINISH_ERROR */
    const char *detail; /* DONE: why a choice ended with HS_FINISH_ERROR, for the client
                         * (static text; NULL when status says it all) */
    double ttft_ms;     /* DONE: submit to the first sampled token (0 if none) */
    double e2e_ms;      /* DONE: submit to done */
};

/* Takes the next event without blocking: HS_OK with *ev filled; HS_E_BUSY when nothing is
 * pending yet; HS_E_NOENT after the DONE event was taken (the stream is over). DELTA events of
 * all choices come before DONE; events of one choice are in order. Thread: any, but one reader
 * per handle. */
hs_status hs_engine_poll(struct hs_engine_handle *h, struct hs_engine_event *ev);

/* As hs_engine_poll, waiting up to timeout_ms (< 0: forever) for an event; HS_E_BUSY when the
 * time passed without one. Thread: any but the engine's. */
hs_status hs_engine_wait(struct hs_engine_handle *h, struct hs_engine_event *ev,
                         int64_t timeout_ms);

/* Asks the engine to stop the request (client disconnected): within one engine step its
 * choices end with HS_FINISH_CANCELED, its KV blocks return to the pool and DONE follows.
 * No effect once finished. Thread: any. */
void hs_engine_cancel(struct hs_engine_handle *h);

/* Gives up the caller's reference; cancels the request first if it has not finished. The
 * handle must not be used afterwards; memory is freed once the engine is done with it too.
 * NULL: no-op. Thread: any. */
void hs_engine_release(struct hs_engine_handle *h);

/* The request's id as given in hs_engine_request. Thread: any. */
uint64_t hs_engine_handle_id(const struct hs_engine_handle *h);

/* ---- metrics ---- */

/* Histogram bucket upper bounds in seconds, as vLLM's (Prometheus "le" labels; +Inf implied). */
#define HS_ENGINE_TTFT_BUCKETS   22 /* 0.001 .. 2560 s */
#define HS_ENGINE_TPOT_BUCKETS   19 /* 0.01 .. 80 s */
#define HS_ENGINE_E2E_BUCKETS    21 /* 0.3 .. 7680 s */
#define HS_ENGINE_LENERR_BUCKETS 10 /* relative error of output length predictions, 0.05 .. 10 */
extern const double hs_engine_ttft_bounds_s[HS_ENGINE_TTFT_BUCKETS];
extern const double hs_engine_tpot_bounds_s[HS_ENGINE_TPOT_BUCKETS];
extern const double hs_engine_e2e_bounds_s[HS_ENGINE_E2E_BUCKETS];
extern const double hs_engine_lenerr_bounds[HS_ENGINE_LENERR_BUCKETS];

/* Cumulative counts as Prometheus wants them: le[i] observations <= bounds[i]; count (the +Inf
 * bucket) and sum of all observations in seconds. Only the first n_buckets of le are used. */
struct hs_engine_histogram {
    int32_t n_buckets;
    const double *bounds_s; /* static */
    uint64_t le[HS_ENGINE_TTFT_BUCKETS];
    uint64_t count;
    double sum_s;
};

/* Where a request was when it was canceled (hs_engine_cancel, a release before the end, a
 * drain deadline): waiting for its first admission, admitted but no token sampled yet, or
 * generating. */
enum hs_cancel_phase {
    HS_CANCEL_QUEUE,
    HS_CANCEL_PREFILL,
    HS_CANCEL_DECODE,
    HS_CANCEL_COUNT,
};
/* "queue", "prefill", "decode"; static. Thread: any. */
const char *hs_cancel_phase_str(enum hs_cancel_phase p);

/* A snapshot of counters (monotonic) and gauges (current). */
struct hs_engine_metrics {
    int32_t n_running;           /* gauge: requests with at least one sequence running */
    int32_t n_waiting;           /* gauge: requests accepted, none of whose sequences run yet */
    int32_t n_seqs_running;      /* gauge: sequences (choices) running */
    int32_t kv_blocks_total;     /* gauge */
    int32_t kv_blocks_used;      /* gauge: held by running sequences */
    int32_t kv_blocks_cached;    /* gauge: unreferenced, kept for prefix reuse */
    int32_t kv_blocks_free;      /* gauge */
    uint64_t requests_submitted; /* counter: accepted by hs_engine_submit */
    uint64_t requests_rejected;  /* counter: HS_E_BUSY from hs_engine_submit */
    uint64_t requests_finished[HS_FINISH_COUNT]; /* counter per finish reason (of choices) */
    uint64_t prompt_tokens;                      /* counter: prompt tokens of accepted requests */
    uint64_t generation_tokens;                  /* counter: sampled tokens */
    uint64_t prefix_hit_tokens; /* counter: prompt tokens found in the prefix cache */
    uint64_t prefill_tokens;    /* counter: tokens run through the model that were not the
                                 * previous step's sample (prompt chunks and recomputation) */
    uint64_t preemptions;       /* counter */
    uint64_t steps;             /* counter: forward passes */
    uint64_t batch_tokens;      /* counter: tokens through the forward pass, all steps */
    uint64_t draws;             /* counter: next tokens drawn (one per decoding sequence and
                                 * step, speculative verification aside) */
    uint64_t draws_in_tasks;    /* counter: of those, drawn as tasks on the FFN backend's
                                 * threads (the rest on the engine thread) */
    double sampling_s;          /* counter: wall time of the steps' draw phases */
    double prefix_hit_rate;     /* prefix_hit_tokens / prompt_tokens (0 when none) */
    /* Placement: one entry per backend holding a KV store (1, or 2 when split: [0] the FFN
     * backend, [1] the attention backend). */
    int32_t n_backends;
    struct hs_engine_backend_metrics {
        const char *name;        /* registry name (static) */
        const char *role;        /* "all" (not split), "ffn" or "attention" (static) */
        double busy_s;           /* counter: time inside forward-pass stages on this backend */
        double sim_s;            /* counter: simulated hardware time (simulated backends) */
        uint64_t bytes_in;       /* counter: bytes copied in from the other backend */
        uint64_t bytes_out;      /* counter: bytes copied out to the other backend */
        int32_t kv_blocks_total; /* gauge: blocks of its KV pool */
        int32_t kv_blocks_used;  /* gauge: of those, held by running sequences */
        int32_t n_seqs;          /* gauge: running sequences whose KV it holds */
        int32_t n_threads;       /* its compute threads */
    } backends[HS_KV_STORES_MAX];
    uint64_t migrations;         /* counter: sequences moved to the attention backend */
    uint64_t migrated_bytes;     /* counter: KV bytes they took along */
    struct hs_split_stats split; /* counters of split steps (model/model.h) */
    /* Speculative decoding, per draft source (enum hs_suffix_source: the sequence's own text,
     * earlier responses to the same prompt, all earlier responses): drafts verified, tokens
     * they proposed and tokens accepted (counters). Mean accepted length: accepted / drafts. */
    uint64_t spec_drafts[3];
    uint64_t spec_drafted[3];
    uint64_t spec_accepted[3];
    uint64_t spec_store_bytes;     /* gauge: bytes the store of earlier responses allocates */
    uint64_t spec_store_responses; /* gauge: responses it holds */
    uint64_t spec_text_bytes;      /* gauge: bytes of the running sequences' own tries */
    double spec_cost_knee; /* gauge: the cost model's a / b (a step of R rows takes a + b R), in
                            * rows; 0 without speculation */
    struct hs_engine_histogram ttft; /* time to first token */
    struct hs_engine_histogram tpot; /* mean time per output token after the first, per choice
                                      * with >= 2 tokens */
    struct hs_engine_histogram e2e;  /* submit to done, per request */
    /* Length prediction and segments (server/sched.c). */
    struct hs_engine_histogram length_error; /* |predicted - actual| / actual output tokens, per
                                              * choice that ended on its own or at its cap (the
                                              * bounds are ratios, not seconds) */
    uint64_t predicted_tokens;               /* counter: predicted output tokens of those choices */
    uint64_t length_abs_error_tokens;        /* counter: sum of |predicted - actual| over them */
    uint64_t pingpong_reorders; /* counter: steps whose decodes --pingpong-balance reordered */
    uint64_t segment_yields;    /* counter: running sequences that gave up their slot after a
                                 * segment, keeping their KV */
    uint64_t segment_resumes;   /* counter: such sequences admitted again on their own KV */
    uint64_t segment_evictions; /* counter: parked sequences whose blocks were taken under
                                 * pressure (they come back through the prefix cache) */
    uint64_t recomputed_tokens; /* counter: tokens run again for preempted or evicted
                                 * sequences (what the prefix cache no longer held) */
    uint64_t requests_cancelled[HS_CANCEL_COUNT]; /* counter: requests with a canceled choice,
                                                   * by where they were */
};

/* Copies the current metrics into *m (each field read atomically; fields may be from slightly
 * different instants). Thread: any. */
void hs_engine_get_metrics(const struct hs_engine *e, struct hs_engine_metrics *m);

/* The stats of every backend the engine's context runs on (FFN, attention, placed experts),
 * summed: counters since create (take differences), published after each forward pass before
 * its outputs reach the channels, so a caller that has taken a request's DONE sees at least
 * that request's work counted. Thread: any. */
void hs_engine_get_backend_stats(const struct hs_engine *e, struct hs_backend_stats *out);

/* Bytes of the KV cache (every store), fixed at create. Thread: any. */
size_t hs_engine_kv_bytes(const struct hs_engine *e);

/* Hot-expert statistics of a mixture-of-experts model: tokens routed to expert `expert` of layer
 * il since the engine started (each token counts once per expert it chose), and the name of
 * the backend that expert runs on (expert -1: the layer's shared expert). 0 and NULL for dense
 * layers and models, or indices out of range. Thread: any. */
uint64_t hs_engine_expert_tokens(const struct hs_engine *e, int32_t il, int32_t expert);
const char *hs_engine_expert_backend(const struct hs_engine *e, int32_t il, int32_t expert);

#endif
