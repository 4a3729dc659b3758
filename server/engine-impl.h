/* Engine internals shared by the files of server/ that make up the engine (engine.c, channel.c,
 * sched.c, output.c, metrics.c); not for users, who see server/engine.h only.
 *
 * Threads: a struct hs_engine_handle is shared between the HTTP threads and the engine thread
 * (its channel under h->mu, its notify state under h->nmu, a few atomics); the submission queue
 * of struct hs_engine is under e->mu; everything marked "engine thread only" is touched by the
 * engine thread alone, without locks. Metrics are relaxed atomics, read from any thread. */
#ifndef HS_SERVER_ENGINE_IMPL_H
#define HS_SERVER_ENGINE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/buf.h"
#include "common/trace.h"
#include "kvcache/kvcache.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"
#include "server/grammar.h"
#include "server/lengthpred.h"
#include "server/sampling.h"
#include "server/suffix.h"

/* ---- metrics ---- */

struct histo {
    _Atomic uint64_t bucket[HS_ENGINE_TTFT_BUCKETS + 1]; /* non-cumulative; last: +Inf */
    _Atomic uint64_t sum_ns;
};

struct metrics {
    atomic_int n_running_req;
    atomic_int n_seqs_running;
    atomic_int kv_used, kv_cached, kv_free;
    _Atomic uint64_t submitted, rejected, finished[HS_FINISH_COUNT];
    _Atomic uint64_t prompt_tokens, gen_tokens, hit_tokens, prefill_tokens, preemptions;
    _Atomic uint64_t steps, batch_tokens;
    _Atomic uint64_t draws, draws_in_tasks, sampling_ns;
    _Atomic uint64_t migrations, migrated_bytes;
    atomic_int store_seqs[HS_KV_STORES_MAX]; /* running sequences per store */
    atomic_int store_used[HS_KV_STORES_MAX]; /* blocks held per store */
    /* split execution, published after each step under placement_mu */
    pthread_mutex_t placement_mu;
    struct hs_split_stats split;
    struct hs_backend_stats be_stats[HS_KV_STORES_MAX];
    struct hs_backend_stats be_total; /* every backend of the context, summed */
    struct histo ttft, tpot, e2e;
    struct histo lenerr; /* ratios, stored like seconds */
    _Atomic uint64_t predicted_tokens, lenerr_tokens;
    _Atomic uint64_t seg_yields, seg_resumes, seg_evictions, recomputed_tokens;
    _Atomic uint64_t pp_reorders;
    _Atomic uint64_t cancelled[HS_CANCEL_COUNT]; /* requests, by phase (channel.c) */
    /* speculative decoding, per draft source */
    _Atomic uint64_t spec_drafts[HS_SUFFIX_SOURCE_COUNT];   /* drafts verified */
    _Atomic uint64_t spec_drafted[HS_SUFFIX_SOURCE_COUNT];  /* tokens they proposed */
    _Atomic uint64_t spec_accepted[HS_SUFFIX_SOURCE_COUNT]; /* of those, accepted */
    _Atomic uint64_t spec_knee_milli;  /* the cost model's knee, in thousandths of a row */
    _Atomic uint64_t spec_store_bytes; /* the draft store's allocation (hs_suffix_store_bytes) */
    _Atomic uint64_t spec_store_responses;
    _Atomic uint64_t spec_text_bytes; /* the running sequences' own tries, summed */
};

#define INC(field, v) atomic_fetch_add_explicit(&(field), (v), memory_order_relaxed)

/* ---- requests and their channels ---- */

/* Growable output of one choice: text bytes (NUL-terminated), token ids and logprobs. The
 * alternatives of all its tokens lie end to end in top_ids/top_lps; lps[i].top_ids and
 * .top_logprobs point into them only once the buffer is an event's (take_event sets them). */
struct outbuf {
    struct hs__buf text;
    hs_token *tokens;
    struct hs_token_logprob *lps; /* [cap_tokens] when the request wants logprobs */
    int32_t n_tokens, cap_tokens;
    hs_token *top_ids; /* [n_top] */
    float *top_lps;    /* [n_top] */
    size_t n_top, cap_top;
};

enum seq_state { SEQ_WAITING, SEQ_RUNNING, SEQ_FINISHED };

struct seq;

/* One sequence's draw of this step (output.c): its logit row in, the token out. */
struct draw {
    struct seq *s;
    const float *logits; /* [n_vocab], borrowed for the step */
    hs_token t;          /* as hs_sampler_sample returns */
    bool drawn;          /* t is set (drawn on the engine thread before the tasks) */
};

/* One choice: engine thread only. */
struct seq {
    struct hs_engine_handle *req;
    int32_t index;
    enum seq_state state;
    hs_token *toks;                /* [cap_toks]: prompt then generated; grows with the output */
    size_t cap_toks;               /* allocated entries of toks */
    int32_t n_all;                 /* tokens in toks; KV holds the first hs_kv_seq_n_tokens(kv) */
    int32_t n_gen;                 /* sampled, EOS included */
    struct hs_kv_seq *kv;          /* while running */
    struct hs_grammar_matcher *gm; /* the request's grammar at this choice's output; owns */
    struct hs_reasoning rs;        /* the thinking-block tracker (rs.p.enabled false: none) */
    int32_t store; /* the KV store (and pool) kv belongs to: 0 the FFN backend's, 1 the
                    * attention backend's (split engines) */
    struct hs_sampler *smp;
    struct hs_detok dt;
    struct hs__buf hold; /* text not yet emitted: could begin a stop string */
    bool stopped;        /* a stop string matched */
    int64_t t_first_ns, t_last_ns;
    struct seq *prev, *next; /* waiting list */
    int32_t batch_slot;      /* index in this step's batch, -1 when not in it */
    /* length-aware scheduling and segments (sched.c) */
    int64_t t_wait_ns;  /* when it last entered the waiting list */
    int64_t t_admit_ns; /* when it was last admitted */
    int32_t seg_start;  /* n_gen when it was last admitted: its segment began there */
    int32_t n_kv_lost;  /* KV tokens it held when it last lost its blocks (preempted, evicted) */
    bool preempted;     /* back in the waiting list after a preemption (front of the queue) */
    bool parked;        /* waiting after a segment yield, with its KV (kv != NULL) */
    uint32_t pp_plan;   /* HS_PINGPONG_BALANCE_LENGTH: the layout plan it has a place in */
    int32_t pp_rank;    /* its place at the front of the batch in that plan */
    /* speculative decoding (spec.c) */
    struct hs_suffix_text *sfx; /* its prompt and output so far, from its first draft on; owns */
    size_t sfx_bytes;           /* its bytes as last counted into m.spec_text_bytes */
    int32_t n_draft;            /* this step's draft: toks[n_all .. n_all + n_draft), 0: none */
    enum hs_suffix_source draft_src;
    float draft_expect; /* its trie scores' sum: the tokens its source expected accepted */
    int32_t spec_len;   /* adaptive longest draft (0: not started) */
    float spec_rate;    /* recent share of drafted tokens accepted */
};

struct hs_engine_handle {
    struct hs_engine_image *images; /* [n_images] copies, rows in image_rows (mm.c); owns */
    int32_t n_images;
    float *image_rows;
    atomic_int refs;    /* caller + engine */
    atomic_bool cancel; /* set by hs_engine_cancel / release */
    atomic_bool done;   /* every choice finished (DONE is ready) */
    uint64_t id;

    /* notify: nmu guards released against a notify in progress */
    pthread_mutex_t nmu;
    bool released;
    hs_engine_notify_fn notify;
    void *notify_user;

    /* channel: mu guards everything down to done_taken */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct outbuf prod[HS_ENGINE_MAX_CHOICES];
    enum hs_finish_reason fin[HS_ENGINE_MAX_CHOICES];
    bool fin_sent[HS_ENGINE_MAX_CHOICES];
    struct outbuf cons; /* what the last event points into */
    int32_t rr;         /* next choice to look at, for fairness */
    bool done_ready, done_taken;
    struct hs_engine_usage usage;
    hs_status status;
    double ttft_ms, e2e_ms;

    /* engine thread only from submit on */
    int32_t n_choices;
    int32_t n_prompt;
    int32_t max_tokens;
    bool logprobs;
    int32_t top_logprobs;
    bool ignore_eos;
    bool report_eos;
    bool spec;           /* speculative decoding allowed (the engine's on, not opted out) */
    bool spec_keyed;     /* prompt_key computed, the store touched */
    uint64_t prompt_key; /* hs_suffix_prompt_key of the prompt and cache_salt */
    enum hs_place place;
    struct hs_grammar *grammar;             /* owns; NULL: unconstrained */
    struct hs_grammar_cache *grammar_cache; /* owns; the choices' matchers share it */
    const char *detail;                     /* DONE's detail (static); under mu */
    int32_t long_context;                   /* < 0: the engine's */
    uint64_t cache_salt;                    /* hs_engine_request.cache_salt */
    struct hs_reasoning_params reasoning;   /* hs_engine_request.reasoning */
    int32_t n_vocab;                        /* the engine's (the trackers' masks) */
    int32_t n_stop;
    char *stop[HS_ENGINE_MAX_STOP];
    size_t stop_len[HS_ENGINE_MAX_STOP];
    int64_t t_submit_ns;
    struct hs_lengthpred_key len_key; /* what its length prediction is keyed on */
    int32_t pred_tokens;              /* predicted output tokens per choice */
    enum hs_lengthpred_source pred_source;
    bool predicted;      /* pred_tokens is set (on entering the queue) */
    uint64_t client;     /* hs_engine_request.client */
    int64_t deadline_ns; /* 0: none */
    int64_t t_first_ns;
    int32_t n_finished;
    int32_t n_seqs_running;
    bool admitted_once;
    bool touched; /* in this step's notify list */
    struct hs_engine_handle *next_touched;
    struct hs_engine_handle *next_incoming;
    struct seq seqs[HS_ENGINE_MAX_CHOICES];
};

/* ---- the engine ---- */

struct hs_engine {
    struct hs_model *model;
    const struct hs_vocab *vocab;
    int32_t n_vocab;
    struct hs_context *ctx;
    struct hs_kv_pool *pools[HS_KV_STORES_MAX]; /* one per KV store of ctx */
    int32_t n_pools;
    bool split;           /* the context has an attention backend of its own */
    int32_t long_context; /* see hs_engine_params */
    int32_t n_ctx;
    int32_t n_parallel;
    int32_t n_batch;
    int32_t max_waiting;
    int64_t timeout_ms;

    pthread_t thread;
    bool thread_started;

    /* submission queue: mu guards these */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* engine waits for work */
    pthread_cond_t idle_cv; /* drain waits for n_inflight == 0 */
    struct hs_engine_handle *in_head, *in_tail;
    int32_t n_inflight;
    bool draining, stopping, cancel_all;

    /* engine thread only */
    struct seq *wait_head, *wait_tail;
    struct seq **running; /* [n_parallel], in admission order */
    int32_t n_running;
    struct hs_kv_seq **kv_free[HS_KV_STORES_MAX]; /* [n_parallel] idle kv sequences per pool */
    int32_t n_kv_free[HS_KV_STORES_MAX];
    int32_t *mig_src, *mig_dst; /* [blocks of one context] a migration's block ids */
    struct seq **batch;         /* [n_parallel] */
    int32_t *batch_n;           /* [n_parallel] tokens of each entry */
    struct hs_forward_seq *fwd; /* [n_parallel] */
    struct draw *draws;         /* [n_parallel] this step's draws (output.c) */
    bool serial_sampling;       /* draws one by one on the engine thread (hs_engine_params) */
    struct hs_forward_mm *mm;   /* [n_parallel], with mm_embd [n_batch] and mm_pos [n_batch][3]:
                                 * this step's image rows and M-RoPE positions (mm.c; lazily) */
    const float **mm_embd;
    int32_t *mm_pos;
    char *piece; /* detokenizer output scratch */
    size_t cap_piece;
    struct hs_token_logprob lp_scratch; /* points into lp_ids/lp_vals */
    hs_token lp_ids[HS_ENGINE_MAX_TOP_LOGPROBS];
    float lp_vals[HS_ENGINE_MAX_TOP_LOGPROBS];
    struct hs_engine_handle *touched_head;

    /* speculative decoding (spec.c); engine thread only */
    bool spec_on;
    int32_t spec_max_draft;
    struct hs_suffix_store *spec_store;    /* earlier responses; owns */
    double cm_w, cm_x, cm_y, cm_xx, cm_xy; /* decayed sums of (rows, seconds) of forward passes */
    double cm_knee;                        /* fixed cost of a step in rows (a / b of a + b rows) */
    bool cm_fixed;                         /* cm_knee given (spec_knee), not fitted */
    /* per draft source, decayed: tokens its drafts' scores expected accepted, tokens accepted */
    double cal_expect[HS_SUFFIX_SOURCE_COUNT], cal_accepted[HS_SUFFIX_SOURCE_COUNT];
    int32_t step_drafted, step_accepted; /* this step's, for the trace */

    struct metrics m;
    struct hs_trace *trace; /* --trace; NULL: none */
    /* length-aware scheduling (sched.c): engine thread only */
    enum hs_sched_order order;
    enum hs_pingpong_balance balance; /* split with ping-pong: how the batch is laid out */
    uint32_t pp_plan_gen;             /* LENGTH: the current layout plan (0: none yet) */
    int32_t pp_plan_n;                /* the sequences it places */
    int64_t fair_wait_ns;
    int32_t segment_tokens;      /* 0: no segments */
    int32_t n_parked;            /* sequences parked with their KV */
    struct hs_lengthpred *lpred; /* owns */
    bool trace_sched_named;      /* the trace's scheduler track is named */
    /* The vocabulary's token trie for grammars, built by the first submit that needs it. */
    pthread_mutex_t trie_mu;
    struct hs_token_trie *trie; /* owns; immutable once built */
};

/* CLOCK_MONOTONIC in nanoseconds. Thread: any. */
static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- channel.c ---- */

/* CLOCK_MONOTONIC's time timeout_ms from now (now when timeout_ms <= 0), for timed waits on the
 * engine's condition variables. Thread: any. */
struct timespec hs__engine_deadline(int64_t timeout_ms);

/* Appends n bytes of text to o, keeping it NUL-terminated; false when out of memory. Thread:
 * engine only, with the handle's mu held. */
bool hs__channel_outbuf_text(struct outbuf *o, const char *s, size_t n);

/* Appends token t (and *lp with its lp->n_top alternatives when the request wants logprobs; lp
 * NULL otherwise) to o; false when out of memory. Thread: engine only, with the handle's mu
 * held. */
bool hs__channel_outbuf_token(struct outbuf *o, hs_token t, const struct hs_token_logprob *lp);

/* Calls the notify hooks of the requests touched this step (e->touched_head, emptied), without
 * any engine or channel lock held; drops the engine's reference of the finished ones. Thread:
 * engine only. */
void hs__channel_notify_touched(struct hs_engine *e);

/* ---- sched.c ---- */

/* The waiting list: append s at the back (a new request's choices), or unlink s. Thread:
 * engine only. */
void hs__sched_wait_push_back(struct hs_engine *e, struct seq *s);
void hs__sched_wait_remove(struct hs_engine *e, struct seq *s);

/* Returns the sequence's blocks to the pool (full blocks stay cached for reuse) and its kv
 * object to the idle stack. Thread: engine only. */
void hs__sched_release_kv(struct hs_engine *e, struct seq *s);

/* Removes running[i], keeping admission order, and updates the running gauges. Thread: engine
 * only. */
void hs__sched_running_remove_at(struct hs_engine *e, int32_t i);

/* Builds this step's batch in e->batch[] / e->batch_n[] (decodes, prefill chunks, admissions
 * under the token budget; may preempt). Returns the number of entries, 0 when there is nothing
 * to run. Thread: engine only. */
int32_t hs__sched_schedule(struct hs_engine *e);
/* With ping-pong and a balance other than cut, reorders the first entries of the step's n
 * batch entries (single-row decodes, whole 4-row tiles) so that the balancer finds a split of
 * less predicted time (hs_pingpong_balance); the batch slots follow. Call after
 * hs__spec_plan. */
void hs__sched_balance(struct hs_engine *e, int32_t n);

/* The KV store a sequence being admitted goes to: 1 (the attention backend's) when the engine
 * is split and its context is past its threshold, else 0. Thread: engine only. */
int32_t hs__sched_store_for(const struct hs_engine *e, const struct seq *s);

/* Moves every running sequence that has passed its long-context threshold to the attention
 * backend's store (block copies between backends); one that cannot move for lack of blocks is
 * preempted and comes back there. Thread: engine only. */
void hs__sched_migrate(struct hs_engine *e);

/* Ends the sequences of canceled and timed-out requests, running or waiting; every sequence
 * when cancel_all. Thread: engine only. */
void hs__sched_reap(struct hs_engine *e, bool cancel_all);

/* Sets up length-aware scheduling from p (order, fairness bound, segments) and creates the
 * length predictor: HS_E_INVAL (err says which value), HS_E_NOMEM. Thread: the creating thread,
 * before the engine thread runs. */
hs_status hs__sched_init(struct hs_engine *e, const struct hs_engine_params *p,
                         struct hs_error *err);
/* Frees what hs__sched_init made. Thread: after the engine thread has ended. */
void hs__sched_finish(struct hs_engine *e);

/* A sequence ends (hs__output_finish_seq calls it before anything else): a parked one gives its
 * KV back; one that ended on its own or at its cap teaches the length predictor its length and
 * counts its prediction's error. Thread: engine only. */
void hs__sched_seq_ending(struct hs_engine *e, struct seq *s, enum hs_finish_reason why);

/* ---- output.c ---- */

/* Ends a sequence, waiting or running: frees its KV, records its finish reason (and status, the
 * request's when it is the first error) in the channel; the request's DONE when it was the last
 * choice. Thread: engine only. */
void hs__output_finish_seq(struct hs_engine *e, struct seq *s, enum hs_finish_reason why,
                           hs_status status);

/* Samples s's next token from logits ([n_vocab]) and nothing else (no output, no sampler
 * state advanced): the token, -1 when every token is banned, or < -1 when nothing could be drawn
 * for a reason the client is told (*status and the request's detail are set). Thread: engine. */
hs_token hs__output_sample(struct seq *s, const float *logits, hs_status *status);

/* As hs__output_sample, verifying draft token draft (hs_sampler_verify): *accepted says
 * whether the token returned is the draft. Thread: engine only. */
hs_token hs__output_verify(struct seq *s, const float *logits, hs_token draft, bool *accepted,
                           hs_status *status);

/* Emits token t sampled from logits ([n_vocab], of time t_ns): counts it, advances the sampler
 * (penalties, constraint), detokenizes, checks stop strings and max_tokens and pushes output.
 * Returns as hs__output_take_token. Thread: engine only. */
enum hs_finish_reason hs__output_emit(struct hs_engine *e, struct seq *s, hs_token t,
                                      const float *logits, int64_t t_ns, hs_status *status);

/* Draws the next token of each of draws[0 .. n) from its logit row (of time t_ns), as tasks
 * on the FFN backend's threads (hs_backend_run_tasks; on the engine thread alone with
 * e->serial_sampling, and when the step has too few logits to draw from to be worth it), then,
 * on the engine thread and in order, emits each (hs__output_emit) and
 * ends the sequences that finish: a draw that failed ends its sequence with an error, an emit
 * that failed (out of memory) with HS_FINISH_ERROR and HS_E_NOMEM. Choices of one request that
 * share a grammar cache are drawn on the engine thread (the cache is not shared across
 * threads). Thread: engine only. */
void hs__output_take_tokens(struct hs_engine *e, struct draw *draws, int32_t n, int64_t t_ns);

/* ---- spec.c ---- */

/* Creates the draft store when p asks for speculation; HS_E_NOMEM. Thread: create's. */
hs_status hs__spec_create(struct hs_engine *e, const struct hs_engine_params *p);
void hs__spec_destroy(struct hs_engine *e);

/* Extends this step's decode entries (e->batch[0 .. n)) with drafts where the leftover token
 * budget, KV blocks and the cost model allow: writes each draft after s->toks[n_all], sets
 * s->n_draft and adds it to e->batch_n[j]. Never preempts. Thread: engine only. */
void hs__spec_plan(struct hs_engine *e, int32_t n);

/* After the forward pass: commits s's input token, verifies its draft against its 1 + n_draft
 * logit rows (lg), emitting accepted tokens one by one and then the correction or bonus token,
 * commits the accepted positions' KV and rolls back the rest; ends s on a finish. Thread:
 * engine only. */
void hs__spec_verify(struct hs_engine *e, struct seq *s, const float *lg, int64_t t_ns);

/* A step of rows rows (schedule, forward pass, outputs), each of them a decode or a draft
 * position with its logit row, took dt_ns: feeds the cost model (steps with prefill rows, which
 * cost less and scale otherwise, are not given). Thread: engine only. */
void hs__spec_observe(struct hs_engine *e, int32_t rows, int64_t dt_ns);

/* s ends (why): records its response in the store when it finished normally and frees its
 * own text. Thread: engine only. */
void hs__spec_seq_end(struct hs_engine *e, struct seq *s, enum hs_finish_reason why);

/* ---- metrics.c ---- */

/* Counts one observation of s seconds into h, whose n bucket bounds are bounds. Thread: engine
 * only (any writer would do: the counters are atomics). */
void hs__metrics_observe(struct histo *h, const double *bounds, int n, double s);

/* Publishes the KV pool's used/cached/free block counts to e->m. Thread: engine only. */
void hs__metrics_update_kv_gauges(struct hs_engine *e);

/* Publishes the backends' stats (per store and summed over the context's backends) and the split
 * execution's figures to e->m (under its placement_mu); called after each forward pass, before
 * its outputs reach the channels. Thread: engine only. */
void hs__metrics_publish_placement(struct hs_engine *e);

/* ---- images in prompts (mm.c) ---- */

/* Checks r's images against the prompt and the model (HS_E_INVAL, err says why). */
hs_status hs__mm_check(const struct hs_engine *e, const struct hs_engine_request *r,
                       struct hs_error *err);
/* Copies r's images into h (HS_E_NOMEM). */
hs_status hs__mm_copy(const struct hs_engine *e, struct hs_engine_handle *h,
                      const struct hs_engine_request *r);
void hs__mm_free(struct hs_engine_handle *h);
void hs__mm_engine_free(struct hs_engine *e);
/* The forward pass of the step's n batch entries (e->fwd): hs_model_forward, with the image rows
 * and M-RoPE positions of the sequences that have images. Engine thread. */
hs_status hs__mm_forward(struct hs_engine *e, int32_t n);

#endif
