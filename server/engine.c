/* The serving engine's frame: create/destroy/drain, the engine thread's loop and the step.
 *
 * Data flow: hs_engine_submit (channel.c, HTTP thread) builds a request with one sequence per
 * choice and appends it to the incoming list under e->mu. The engine thread (engine_main) moves
 * incoming requests to its waiting list, ends canceled and timed-out sequences and runs one
 * step: the scheduler (sched.c) builds the batch, run_step runs one forward pass over it and
 * hands each sequence's logits to output.c, which samples and pushes output into the request's
 * channel (h->mu); at the end of the step the notify hooks of the requests touched run
 * (channel.c). The HTTP side takes the output with hs_engine_poll/wait. Everything after the
 * submission queue belongs to the engine thread alone.
 *
 * Owns the engine: the model context, the KV pool, the per-step scratch (batch, forward
 * descriptors, detokenizer output) and the engine thread. Threads: create, destroy, drain and
 * the accessors run on any thread (destroy and drain never on the engine's); engine_main and
 * run_step on the engine thread only. */
#include "server/engine.h"
#include "server/engine-impl.h"

#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h>
#include <math.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kvcache/kvcache.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"

struct hs_engine_params hs_engine_default_params(void)
{
    return (struct hs_engine_params){
        .n_parallel = 8,
        .n_ctx = 0,
        .n_kv_blocks = 0,
        .kv_bytes = 0,
        .block_size = 16,
        .n_batch_tokens = 512,
        .max_waiting = 256,
        .n_threads = 0,
        .timeout_ms = 0,
        .kv_type = HS_TYPE_F16,
        .backend = NULL,
        .expert_placement = NULL,
        .attn_backend = NULL,
        .attn_threads = 0,
        .pingpong = false,
        .long_context = 0,
        .trace_path = NULL,
        .backend_config = NULL,
        .backend_tenants = NULL,
        .order = HS_SCHED_FIFO,
        .fair_wait_ms = 1000,
        .segment_tokens = 0,
        .spec_max_draft = 0,
        .spec_store_bytes = 0,
        .serial_sampling = false,
    };
}

int32_t hs_engine_n_ctx(const struct hs_engine *e)
{
    return e->n_ctx;
}

struct hs_trace *hs_engine_trace(const struct hs_engine *e)
{
    return e->trace;
}

const struct hs_vocab *hs_engine_vocab(const struct hs_engine *e)
{
    return e->vocab;
}

size_t hs_engine_kv_bytes(const struct hs_engine *e)
{
    return hs_context_kv_bytes(e->ctx);
}

/* ---- tracing ---- */

enum { TRACE_PID = 1, TRACE_PID_TIMELINE = 2, TRACE_TID_ENGINE = 1, TRACE_TID_ATTN = 2 };
_Static_assert(HS_ENGINE_TRACE_TID_VISION != TRACE_TID_ENGINE &&
                   HS_ENGINE_TRACE_TID_VISION != TRACE_TID_ATTN,
               "the encoder's trace track is its own");

/* A forward-pass stage as a complete event on its thread's track (any thread). */
static void trace_stage(void *user, const struct hs_forward_stage *s)
{
    struct hs_engine *e = user;
    const double end_us =
        hs_trace_now_us(e->trace) - (double)(now_ns() - s->t0_ns - s->dur_ns) / 1e3;
    char name[32];
    snprintf(name, sizeof(name), "%s %c", s->stage, s->sub_batch ? 'B' : 'A');
    const struct hs_trace_arg args[] = {
        HS_TRACE_INT("layer", s->layer),     HS_TRACE_STR("sub_batch", s->sub_batch ? "B" : "A"),
        HS_TRACE_INT("rows", s->n_rows),     HS_TRACE_INT("seqs", s->n_seqs),
        HS_TRACE_STR("backend", s->backend), HS_TRACE_DBL("sim_us", (double)s->sim_ns / 1e3),
    };
    hs_trace_complete(e->trace, s->timeline ? TRACE_PID_TIMELINE : TRACE_PID,
                      s->on_attn_thread ? TRACE_TID_ATTN : TRACE_TID_ENGINE,
                      s->layer < 0 ? s->stage : name, s->on_attn_thread ? "attention" : "ffn",
                      end_us - (double)s->dur_ns / 1e3, (double)s->dur_ns / 1e3, args,
                      HS_ARRAY_LEN(args));
}

static hs_status trace_open(struct hs_engine *e, const char *path, struct hs_error *err)
{
    HS_TRY(hs_trace_open(path, &e->trace, err));
    char name[96];
    hs_trace_name_process(e->trace, TRACE_PID, "hetserve engine");
    snprintf(name, sizeof(name), "engine thread: %s (FFN%s)",
             hs_backend_name(hs_context_backend(e->ctx)), e->split ? "" : " and attention");
    hs_trace_name_thread(e->trace, TRACE_PID, TRACE_TID_ENGINE, name);
    if (e->split) {
        snprintf(name, sizeof(name), "attention thread: %s (attention)",
                 hs_backend_name(hs_context_attn_backend(e->ctx)));
        hs_trace_name_thread(e->trace, TRACE_PID, TRACE_TID_ATTN, name);
        /* The same stages on the timeline: the FFN's real times, the attention backend's
         * simulated ones (real for a real backend), through the schedule's dependencies. */
        hs_trace_name_process(e->trace, TRACE_PID_TIMELINE,
                              "timeline (FFN real, attention as simulated)");
        hs_trace_name_thread(e->trace, TRACE_PID_TIMELINE, TRACE_TID_ENGINE, "FFN backend");
        hs_trace_name_thread(e->trace, TRACE_PID_TIMELINE, TRACE_TID_ATTN, "attention backend");
    }
    hs_context_set_trace(e->ctx, trace_stage, e);
    return HS_OK;
}

/* The step as a whole, and the KV blocks each store holds after it. */
static void trace_step(struct hs_engine *e, double t0_us, int32_t n_seqs, int32_t n_tok)
{
    if (!e->trace) {
        return;
    }
    const double t1 = hs_trace_now_us(e->trace);
    const struct hs_trace_arg args[] = {HS_TRACE_INT("seqs", n_seqs), HS_TRACE_INT("tokens", n_tok),
                                        HS_TRACE_INT("drafted", e->step_drafted),
                                        HS_TRACE_INT("accepted", e->step_accepted)};
    hs_trace_complete(e->trace, TRACE_PID, TRACE_TID_ENGINE, "step", "engine", t0_us, t1 - t0_us,
                      args, HS_ARRAY_LEN(args));
    struct hs_trace_arg held[HS_KV_STORES_MAX];
    for (int32_t s = 0; s < e->n_pools; s++) {
        held[s] = HS_TRACE_INT(s == 0 ? "ffn" : "attention", hs_kv_pool_n_used(e->pools[s]));
    }
    hs_trace_counter(e->trace, TRACE_PID, "kv_blocks", t1, held, (size_t)e->n_pools);
    hs_trace_flush(e->trace);
}

/* ---- engine thread: the step and the loop ---- */

/* One step: schedule, one forward pass, and the sampled tokens to output. */
static void run_step(struct hs_engine *e)
{
    const double t0_us = hs_trace_now_us(e->trace);
    const int64_t t0_ns = now_ns();
    hs__sched_migrate(e);
    int32_t n = hs__sched_schedule(e);
    if (n == 0) {
        return;
    }
    hs__spec_plan(e, n);
    hs__sched_balance(e, n);
    int32_t n_tok = 0;
    bool prefill = false;
    for (int32_t j = 0; j < n; j++) {
        struct seq *s = e->batch[j];
        int32_t n_past = hs_kv_seq_n_tokens(s->kv);
        /* a draft's tokens lie past n_all: the entry ends its sequence's known tokens too */
        bool last = n_past + e->batch_n[j] == s->n_all + s->n_draft;
        e->fwd[j] = (struct hs_forward_seq){
            .tokens = s->toks + n_past,
            .n_tokens = e->batch_n[j],
            .n_past = n_past,
            .block_table = hs_kv_seq_block_table(s->kv),
            .n_logits = last ? 1 + s->n_draft : 0,
            .store = s->store,
        };
        n_tok += e->batch_n[j];
        if (!(last && e->batch_n[j] == 1 + s->n_draft)) {
            prefill = true;
            INC(e->m.prefill_tokens, (uint64_t)e->batch_n[j]);
        }
    }
    hs_status st = hs__mm_forward(e, n);
    INC(e->m.steps, 1);
    INC(e->m.batch_tokens, (uint64_t)n_tok);
    hs__metrics_publish_placement(e); /* before the outputs: a reader of DONE sees its work */
    if (st != HS_OK) {
        HS_LOG_ERROR("engine: forward pass over %d sequences failed: %s", n, hs_status_str(st));
        for (int32_t j = 0; j < n; j++) {
            e->batch[j]->batch_slot = -1;
            e->batch[j]->n_draft = 0;
            hs__output_finish_seq(e, e->batch[j], HS_FINISH_ERROR, st);
        }
        return;
    }
    const float *logits = hs_context_logits(e->ctx);
    int32_t row = 0;
    int32_t n_draws = 0; /* sequences whose next token is drawn, all at once after the loop */
    int64_t t = now_ns();
    for (int32_t j = 0; j < n; j++) {
        struct seq *s = e->batch[j];
        s->batch_slot = -1;
        if (s->n_draft > 0) {
            hs__spec_verify(e, s, logits + (size_t)row * (size_t)e->n_vocab, t);
            row += e->fwd[j].n_logits;
            continue;
        }
        st = hs_kv_seq_append_tokens(e->pools[s->store], s->kv, e->fwd[j].tokens,
                                     e->fwd[j].n_tokens);
        const float *lg = logits + (size_t)row * (size_t)e->n_vocab;
        row += e->fwd[j].n_logits;
        if (st != HS_OK) {
            /* the request fails, not the process: its tokens could not be committed */
            hs__output_finish_seq(e, s, HS_FINISH_ERROR, st);
            continue;
        }
        if (e->fwd[j].n_logits == 0) {
            continue;
        }
        e->draws[n_draws++] = (struct draw){.s = s, .logits = lg};
    }
    hs__output_take_tokens(e, e->draws, n_draws, t);
    hs__metrics_update_kv_gauges(e);
    if (!prefill) {
        hs__spec_observe(e, n_tok, now_ns() - t0_ns);
    }
    trace_step(e, t0_us, n, n_tok);
}

/* After a burst of requests the allocator keeps the pages their buffers freed (the HTTP threads'
 * arenas, the engine's), and RSS with them: an engine idle this long after work hands them back
 * to the kernel. The cancellation soak (bench/soak-cancel.mjs, 200 requests at 32 connections on
 * stories260K) ended 2.9-7.4% (1.0-2.5 MiB) above its start without it. */
#define ENGINE_TRIM_AFTER_MS 100

static void heap_trim(void)
{
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

static bool engine_idle_locked(const struct hs_engine *e)
{
    return !e->stopping && !e->cancel_all && !e->in_head && !e->wait_head && e->n_running == 0;
}

static void *engine_main(void *arg)
{
    struct hs_engine *e = arg;
    if (e->split) {
        /* The engine thread drives the FFN backend: keep it on that backend's cores, apart from
         * the attention backend's. */
        hs_backend_bind_caller(hs_context_backend(e->ctx));
    }
    bool trimmed = true;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (!trimmed && engine_idle_locked(e)) {
            const struct timespec dl = hs__engine_deadline(ENGINE_TRIM_AFTER_MS);
            while (engine_idle_locked(e) &&
                   pthread_cond_timedwait(&e->cv, &e->mu, &dl) != ETIMEDOUT) {
            }
            if (engine_idle_locked(e)) {
                pthread_mutex_unlock(&e->mu);
                heap_trim();
                trimmed = true;
                pthread_mutex_lock(&e->mu);
            }
        }
        while (engine_idle_locked(e)) {
            pthread_cond_wait(&e->cv, &e->mu);
        }
        trimmed = false;
        struct hs_engine_handle *in = e->in_head;
        e->in_head = e->in_tail = NULL;
        bool stop = e->stopping;
        bool cancel_all = e->cancel_all || stop;
        pthread_mutex_unlock(&e->mu);
        for (; in; in = in->next_incoming) {
            for (int32_t c = 0; c < in->n_choices; c++) {
                hs__sched_wait_push_back(e, &in->seqs[c]);
            }
        }
        hs__sched_reap(e, cancel_all);
        if (!cancel_all) {
            run_step(e);
        } else if (!stop) {
            /* drain's deadline: everything accepted is canceled now, and draining keeps new
             * work out, so the flag has done its job */
            pthread_mutex_lock(&e->mu);
            e->cancel_all = false;
            pthread_mutex_unlock(&e->mu);
        }
        hs__channel_notify_touched(e);
        if (stop) {
            break;
        }
    }
    return NULL;
}

/* ---- create / destroy / drain ---- */

static size_t max_piece_bytes(const struct hs_vocab *v)
{
    size_t m = 0;
    char dummy[1];
    int32_t n = hs_vocab_n_tokens(v);
    for (hs_token t = 0; t < n; t++) {
        m = HS_MAX(m, hs_vocab_piece(v, t, false, dummy, 0));
    }
    return m;
}

hs_status hs_engine_create(struct hs_model *model, const struct hs_engine_params *params,
                           struct hs_engine **out, struct hs_error *err)
{
    *out = NULL;
    struct hs_engine_params p = params ? *params : hs_engine_default_params();
    const struct hs_model_hparams *hp = hs_model_hparams(model);
    hs_status st = HS_E_INVAL;
    if (p.n_parallel <= 0) {
        p.n_parallel = 8;
    }
    if (p.block_size <= 0) {
        p.block_size = 16;
    }
    if (p.n_batch_tokens <= 0) {
        p.n_batch_tokens = 512;
    }
    p.n_batch_tokens = HS_MAX(p.n_batch_tokens, p.n_parallel);
    if (p.max_waiting <= 0) {
        p.max_waiting = 256;
    }
    if (p.n_ctx <= 0) {
        p.n_ctx = HS_MIN(hp->n_ctx_train, 4096);
    }
    if (p.n_parallel > 4096 || p.n_ctx < 2 || p.timeout_ms < 0 || p.long_context < 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "n_parallel must be at most 4096, n_ctx at least 2, and the timeout "
                            "and long-context threshold not negative");
    }
    const int64_t per_seq = ((int64_t)p.n_ctx + p.block_size - 1) / p.block_size;
    int64_t n_blocks = p.n_kv_blocks;
    if (n_blocks <= 0 && p.kv_bytes > 0) {
        size_t row = hs_type_row_size(p.kv_type, (int64_t)hp->n_head_kv * hp->head_dim);
        size_t per_block = row * 2 * (size_t)hp->n_layer_kv * (size_t)p.block_size;
        n_blocks = per_block ? (int64_t)(p.kv_bytes / per_block) : 0;
    }
    if (n_blocks <= 0) {
        n_blocks = per_seq * p.n_parallel;
    }
    if (n_blocks < per_seq || n_blocks > INT32_MAX) {
        return hs_error_set(err, HS_E_INVAL,
                            "a KV pool of %lld blocks of %d tokens cannot hold one context of %d "
                            "tokens (needs %lld blocks)",
                            (long long)n_blocks, p.block_size, p.n_ctx, (long long)per_seq);
    }

    struct hs_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    e->model = model;
    e->vocab = hs_model_vocab(model);
    e->n_vocab = hp->n_vocab;
    e->n_parallel = p.n_parallel;
    e->n_batch = p.n_batch_tokens;
    e->max_waiting = p.max_waiting;
    e->timeout_ms = p.timeout_ms;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->trie_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cv, &ca);
    pthread_cond_init(&e->idle_cv, &ca);
    pthread_condattr_destroy(&ca);

    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = p.n_ctx;
    cp.n_kv_blocks = (int32_t)n_blocks;
    cp.block_size = p.block_size;
    cp.n_seq_max = p.n_parallel;
    cp.n_batch = p.n_batch_tokens;
    cp.kv_type = p.kv_type;
    if (p.backend) {
        cp.backend = p.backend;
    }
    cp.backend_params.n_threads = p.n_threads;
    cp.backend_params.config = p.backend_config;
    cp.backend_params.tenants = p.backend_tenants;
    cp.expert_placement = p.expert_placement;
    cp.attn_backend = p.attn_backend;
    cp.attn_threads = p.attn_threads;
    cp.pingpong = p.pingpong;
    /* The FFN backend's own pool, when split: room for every sequence up to the threshold (and
     * its next token), and at least one whole context, for requests that keep their attention
     * there. */
    const int64_t below = ((int64_t)p.long_context + 1 + p.block_size - 1) / p.block_size + 1;
    cp.n_kv_blocks_ffn = (int32_t)HS_MAX(per_seq, HS_MIN(n_blocks, below * p.n_parallel));
    st = hs_context_create(model, &cp, &e->ctx, err);
    if (st != HS_OK) {
        goto fail;
    }
    e->n_ctx = hs_context_n_ctx(e->ctx);
    e->n_pools = hs_context_n_stores(e->ctx);
    e->split = e->n_pools > 1;
    e->long_context = p.long_context;
    pthread_mutex_init(&e->m.placement_mu, NULL);
    if (!(p.spec_knee >= 0.0) || !isfinite(p.spec_knee)) {
        st = hs_error_set(err, HS_E_INVAL, "the cost model's knee must be finite and >= 0, got %g",
                          p.spec_knee);
        goto fail;
    }
    if (p.spec_max_draft < 0 || p.spec_max_draft > HS_ENGINE_MAX_DRAFT) {
        st = hs_error_set(err, HS_E_INVAL, "the longest draft must be in [0, %d], got %d",
                          HS_ENGINE_MAX_DRAFT, p.spec_max_draft);
        goto fail;
    }
    if ((st = hs__spec_create(e, &p)) != HS_OK) {
        hs_error_set(err, st, "out of memory for the speculative draft store");
        goto fail;
    }
    if (p.trace_path && (st = trace_open(e, p.trace_path, err)) != HS_OK) {
        goto fail;
    }
    if ((st = hs__sched_init(e, &p, err)) != HS_OK) {
        goto fail;
    }
    for (int32_t s = 0; s < e->n_pools; s++) {
        st = hs_kv_pool_create(hs_context_store_n_blocks(e->ctx, s), hs_context_block_size(e->ctx),
                               &e->pools[s]);
        if (st != HS_OK) {
            hs_error_set(err, st, "cannot create the KV pool: %s", hs_status_str(st));
            goto fail;
        }
    }
    st = HS_E_NOMEM;
    e->running = calloc((size_t)p.n_parallel, sizeof(*e->running));
    e->batch = calloc((size_t)p.n_parallel, sizeof(*e->batch));
    e->batch_n = calloc((size_t)p.n_parallel, sizeof(*e->batch_n));
    e->fwd = calloc((size_t)p.n_parallel, sizeof(*e->fwd));
    e->draws = calloc((size_t)p.n_parallel, sizeof(*e->draws));
    e->serial_sampling = p.serial_sampling;
    e->mig_src = calloc((size_t)per_seq, sizeof(*e->mig_src));
    e->mig_dst = calloc((size_t)per_seq, sizeof(*e->mig_dst));
    e->cap_piece = 2 * max_piece_bytes(e->vocab) + 128; /* a push plus a flush */
    e->piece = malloc(e->cap_piece);
    if (!e->running || !e->batch || !e->batch_n || !e->fwd || !e->draws || !e->piece ||
        !e->mig_src || !e->mig_dst) {
        hs_error_set(err, st, "out of memory");
        goto fail;
    }
    for (int32_t s = 0; s < e->n_pools; s++) {
        e->kv_free[s] = calloc((size_t)p.n_parallel, sizeof(*e->kv_free[s]));
        if (!e->kv_free[s]) {
            hs_error_set(err, st, "out of memory");
            goto fail;
        }
        for (int32_t i = 0; i < p.n_parallel; i++) {
            st = hs_kv_seq_create(e->pools[s], &e->kv_free[s][i]);
            if (st != HS_OK) {
                hs_error_set(err, st, "out of memory");
                goto fail;
            }
            e->n_kv_free[s]++;
        }
    }
    hs__metrics_update_kv_gauges(e);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        st = hs_error_set(err, HS_E_INTERNAL, "cannot start the engine thread");
        goto fail;
    }
    e->thread_started = true;
    *out = e;
    return HS_OK;
fail:
    hs_engine_destroy(e);
    return st;
}

void hs_engine_destroy(struct hs_engine *e)
{
    if (!e) {
        return;
    }
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    for (int32_t s = 0; s < e->n_pools; s++) {
        for (int32_t i = 0; i < e->n_kv_free[s]; i++) {
            hs_kv_seq_destroy(e->pools[s], e->kv_free[s][i]);
        }
        free(e->kv_free[s]);
        hs_kv_pool_destroy(e->pools[s]);
    }
    if (e->n_pools > 0) {
        pthread_mutex_destroy(&e->m.placement_mu);
    }
    hs__sched_finish(e);
    free(e->mig_src);
    free(e->mig_dst);
    free(e->running);
    free(e->batch);
    free(e->batch_n);
    free(e->fwd);
    free(e->draws);
    hs__mm_engine_free(e);
    free(e->piece);
    hs__spec_destroy(e);
    hs_context_destroy(e->ctx);
    if (hs_trace_close(e->trace) != HS_OK) {
        HS_LOG_ERROR("engine: the trace file could not be written in full");
    }
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->idle_cv);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->trie_mu);
    hs_token_trie_destroy(e->trie);
    free(e);
}

hs_status hs_engine_drain(struct hs_engine *e, int64_t timeout_ms)
{
    const struct timespec dl = hs__engine_deadline(timeout_ms);
    hs_status st = HS_OK;
    pthread_mutex_lock(&e->mu);
    e->draining = true;
    while (e->n_inflight > 0) {
        if (timeout_ms < 0 || e->cancel_all) {
            pthread_cond_wait(&e->idle_cv, &e->mu);
        } else if (pthread_cond_timedwait(&e->idle_cv, &e->mu, &dl) == ETIMEDOUT &&
                   e->n_inflight > 0) {
            e->cancel_all = true;
            st = HS_E_BUSY;
            pthread_cond_signal(&e->cv);
        }
    }
    e->cancel_all = false;
    pthread_mutex_unlock(&e->mu);
    return st;
}
