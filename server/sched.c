/* The scheduler: which sequences run in the next step, and with how many tokens.
 *
 * The policy. Every step runs one forward pass under a token budget (n_batch_tokens, never less
 * than n_parallel). The budget goes first to decodes: each running sequence whose only missing
 * token is its last sample gets one token, in admission order, so running streams never stall.
 * What is left goes to prefill chunks of running sequences (the rest of a prompt, or the tokens
 * of a preempted sequence being recomputed), each as much as the budget allows: a long prompt
 * is cut into chunks over several steps. Only then are waiting sequences admitted, in queue
 * order, while budget and a free slot (n_parallel) remain: an admission first adopts whatever
 * prefix of its tokens the KV pool's prefix cache holds, then reserves blocks for its first
 * chunk; when the blocks are not there admission stops for this step, because new work never
 * preempts running work.
 *
 * Preemption. When a running sequence cannot reserve blocks for its tokens, the most recently
 * admitted running sequence gives way: its blocks go back to the pool (full ones stay cached for
 * reuse), it returns to the front of the waiting queue, and when it is admitted again whatever
 * the prefix cache no longer holds is recomputed, which gives the same tokens. A sequence may
 * preempt itself when it is the most recent; a lone sequence always fits, since the pool holds at
 * least one full context.
 *
 * Choices. The choices of a request (n > 1) share its prompt: choice 0 goes first, and a choice
 * > 0 waits until choice 0 has its whole prompt in the KV (then it adopts those blocks through
 * the prefix cache) or has finished; a choice back from a preemption with tokens of its own
 * does not wait.
 *
 * Admission order (--schedule). FIFO admits in queue order. LENGTH admits, among the admissible
 * waiting sequences, preempted ones first (they were running), then those that have waited
 * longer than the fairness bound (--fair-wait-ms, aging: oldest first, so no sequence waits
 * behind shorter ones for ever), then the rest by shortest predicted remaining output (ties in
 * queue order). The prediction comes from the history of similar requests (server/lengthpred.h:
 * same prompt, same client, same reasoning mode and max_tokens bucket); a sequence that has
 * outrun its prediction is expected to run as long again. Each request's prediction, source and
 * real length go to the trace (a track per request), the error to /metrics.
 *
 * Segments (--segment-tokens S, UloRL's segment rollout). When every slot is taken and
 * admissible sequences wait, a running sequence that has generated S tokens since its admission
 * yields its slot at its next decode point: it is parked at the back of the waiting list with
 * its KV blocks (no token is lost or recomputed; resuming decodes its pending token as the next
 * step would have) and a spare kv object takes its place in the idle stack, so admission never
 * runs short of them (the engine holds n_parallel + parked kv objects). Under LENGTH order it
 * yields only to a sequence predicted to finish sooner or overdue. Under block pressure a parked
 * sequence's blocks go before any running one is preempted (full blocks stay in the prefix
 * cache, so coming back recomputes only what was evicted since, counted in
 * recomputed_tokens_total and logged, never silently), and an admission that finds no blocks
 * while nothing of its pool runs takes them from a parked sequence rather than waiting for
 * ever.
 *
 * Reaping. Before each step, sequences of canceled requests, of requests past their deadline,
 * and all sequences when the engine cancels everything (drain deadline, destroy) end, running or
 * waiting.
 *
 * Owns the waiting list (e->wait_head/tail, front: preempted sequences, then submit order), the
 * running array (e->running, admission order), the idle kv sequences (e->kv_free) and the
 * step's batch (e->batch, e->batch_n). Thread: engine only; it takes no lock itself (ending a
 * sequence, in output.c, publishes to the request's channel). */
#include "server/engine.h"
#include "server/engine-impl.h"

#include "attention/attention.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* ---- lists ---- */

void hs__sched_wait_remove(struct hs_engine *e, struct seq *s)
{
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        e->wait_head = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    } else {
        e->wait_tail = s->prev;
    }
    s->prev = s->next = NULL;
}

static void predict(struct hs_engine *e, struct hs_engine_handle *h);

void hs__sched_wait_push_back(struct hs_engine *e, struct seq *s)
{
    s->t_wait_ns = now_ns();
    predict(e, s->req);
    s->next = NULL;
    s->prev = e->wait_tail;
    if (e->wait_tail) {
        e->wait_tail->next = s;
    } else {
        e->wait_head = s;
    }
    e->wait_tail = s;
}

static void wait_push_front(struct hs_engine *e, struct seq *s)
{
    s->prev = NULL;
    s->next = e->wait_head;
    if (e->wait_head) {
        e->wait_head->prev = s;
    } else {
        e->wait_tail = s;
    }
    e->wait_head = s;
}

/* Returns the sequence's blocks to the pool (full blocks stay cached for reuse) and its kv
 * object to the idle stack. */
void hs__sched_release_kv(struct hs_engine *e, struct seq *s)
{
    struct hs_kv_block_copy cp;
    hs_status st = hs_kv_seq_truncate(e->pools[s->store], s->kv, 0, &cp);
    HS_ASSERT(st == HS_OK && cp.src < 0);
    e->kv_free[s->store][e->n_kv_free[s->store]++] = s->kv;
    atomic_fetch_sub_explicit(&e->m.store_seqs[s->store], 1, memory_order_relaxed);
    s->kv = NULL;
}

/* Removes running[i], keeping admission order. */
void hs__sched_running_remove_at(struct hs_engine *e, int32_t i)
{
    struct seq *s = e->running[i];
    memmove(&e->running[i], &e->running[i + 1],
            (size_t)(e->n_running - i - 1) * sizeof(*e->running));
    e->n_running--;
    atomic_fetch_sub_explicit(&e->m.n_seqs_running, 1, memory_order_relaxed);
    if (--s->req->n_seqs_running == 0) {
        atomic_fetch_sub_explicit(&e->m.n_running_req, 1, memory_order_relaxed);
    }
}

/* ---- preemption ---- */

/* Frees s's blocks and requeues it at the front, to be recomputed when blocks are free. */
static void preempt(struct hs_engine *e, int32_t i)
{
    struct seq *s = e->running[i];
    hs__sched_running_remove_at(e, i);
    if (s->batch_slot >= 0) {
        e->batch[s->batch_slot] = NULL;
        s->batch_slot = -1;
    }
    s->n_kv_lost = hs_kv_seq_n_tokens(s->kv);
    hs__sched_release_kv(e, s);
    s->state = SEQ_WAITING;
    s->preempted = true;
    s->t_wait_ns = now_ns();
    wait_push_front(e, s);
    INC(e->m.preemptions, 1);
    HS_LOG_DEBUG("engine: preempted req=%llu choice %d at %d tokens",
                 (unsigned long long)s->req->id, s->index, s->n_all);
}

enum reserve_result {
    RESERVED,  /* running[i] has room for n more tokens */
    PREEMPTED, /* running[i] itself had to go (it was the pool's last) */
    FAILED,    /* the reservation failed otherwise: running[i] ended with an error */
};

static bool evict_parked(struct hs_engine *e, int32_t store, const struct seq *keep);

/* Reserves n more tokens for running[i], taking the blocks of parked sequences of its KV pool,
 * then preempting the most recently admitted running ones, while blocks are short. */
static enum reserve_result reserve_or_preempt(struct hs_engine *e, int32_t i, int32_t n,
                                              int32_t *budget)
{
    struct seq *s = e->running[i];
    for (;;) {
        hs_status st = hs_kv_seq_reserve(e->pools[s->store], s->kv, n);
        if (st == HS_OK) {
            return RESERVED;
        }
        if (st != HS_E_BUSY) {
            /* not a shortage of blocks (e.g. past what the sequence's block table holds): this
             * request fails, the others go on */
            HS_LOG_WARN("engine: req=%llu choice %d: reserving %d tokens failed: %s",
                        (unsigned long long)s->req->id, s->index, n, hs_status_str(st));
            hs__output_finish_seq(e, s, HS_FINISH_ERROR, st);
            return FAILED;
        }
        if (evict_parked(e, s->store, NULL)) {
            continue;
        }
        int32_t last = e->n_running - 1;
        while (e->running[last]->store != s->store) {
            last--; /* i itself is of the pool, so this stops at i at the latest */
        }
        if (e->running[last]->batch_slot >= 0) {
            *budget += e->batch_n[e->running[last]->batch_slot];
        }
        preempt(e, last);
        if (last == i) {
            return PREEMPTED;
        }
    }
}

/* ---- the step's batch ---- */

static void batch_add(struct hs_engine *e, int32_t *n_batch, struct seq *s, int32_t n)
{
    s->batch_slot = *n_batch;
    e->batch[*n_batch] = s;
    e->batch_n[*n_batch] = n;
    (*n_batch)++;
}

/* A waiting choice > 0 starts once choice 0 has its prompt in the KV (so it can adopt the
 * prompt's blocks) or has finished. */
static bool admissible(const struct seq *s)
{
    if (s->index == 0 || s->n_all > s->req->n_prompt) {
        return true;
    }
    const struct seq *s0 = &s->req->seqs[0];
    return s0->state == SEQ_FINISHED ||
           (s0->state == SEQ_RUNNING && hs_kv_seq_n_tokens(s0->kv) >= s0->req->n_prompt);
}

/* Length-aware admission and segments (at the end of this file). */
static void segment_yield(struct hs_engine *e, int64_t t);
static struct seq *next_admission(struct hs_engine *e, int64_t t);
static bool resume(struct hs_engine *e, struct seq *s, int32_t *n_batch, int32_t *budget);
static bool pool_runs(const struct hs_engine *e, int32_t store);
static void make_running(struct hs_engine *e, struct seq *s);

/* Builds this step's batch: decodes first, then prefill chunks of running sequences, then new
 * admissions, all under the token budget. Returns the number of entries. */
int32_t hs__sched_schedule(struct hs_engine *e)
{
    int32_t budget = e->n_batch;
    int32_t n_batch = 0;
    const int64_t t_now = now_ns();
    segment_yield(e, t_now);
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t i = 0; i < e->n_running; i++) {
            struct seq *s = e->running[i];
            int32_t want = s->n_all - hs_kv_seq_n_tokens(s->kv);
            if ((pass == 0) != (want == 1) || s->batch_slot >= 0 || budget == 0) {
                continue;
            }
            int32_t n = HS_MIN(want, budget);
            const enum reserve_result rr = reserve_or_preempt(e, i, n, &budget);
            if (rr == PREEMPTED) {
                break; /* it was the last one */
            }
            if (rr == FAILED) {
                i--; /* running[i] is gone; the next one moved into its place */
                continue;
            }
            batch_add(e, &n_batch, s, n);
            budget -= n;
        }
    }
    struct seq *s;
    while (budget > 0 && e->n_running < e->n_parallel && (s = next_admission(e, t_now))) {
        if (s->parked) {
            if (!resume(e, s, &n_batch, &budget)) {
                break;
            }
            continue;
        }
        const int32_t store = hs__sched_store_for(e, s);
        struct hs_kv_pool *pool = e->pools[store];
        struct hs_kv_seq *kv = e->kv_free[store][e->n_kv_free[store] - 1];
        int32_t cached = 0;
        hs_kv_seq_set_salt(kv, s->req->cache_salt);
        hs_status st = hs_kv_seq_match_prefix(pool, kv, s->toks, s->n_all, &cached);
        if (st != HS_OK) {
            struct hs_kv_block_copy cp;
            hs_kv_seq_truncate(pool, kv, 0, &cp);
            HS_LOG_WARN("engine: req=%llu choice %d: prefix match failed: %s",
                        (unsigned long long)s->req->id, s->index, hs_status_str(st));
            hs__output_finish_seq(e, s, HS_FINISH_ERROR, st);
            continue;
        }
        int32_t n = HS_MIN(s->n_all - cached, budget);
        if (hs_kv_seq_reserve(pool, kv, n) != HS_OK) {
            struct hs_kv_block_copy cp;
            hs_kv_seq_truncate(pool, kv, 0, &cp);
            if (!pool_runs(e, store) && evict_parked(e, store, NULL)) {
                continue; /* parked sequences held the pool and nothing would free it */
            }
            break; /* no blocks for more: new work never preempts running work */
        }
        e->n_kv_free[store]--;
        s->kv = kv;
        s->store = store;
        atomic_fetch_add_explicit(&e->m.store_seqs[store], 1, memory_order_relaxed);
        if (s->n_kv_lost > cached) {
            INC(e->m.recomputed_tokens, (uint64_t)(s->n_kv_lost - cached));
        }
        s->n_kv_lost = 0;
        make_running(e, s);
        struct hs_engine_handle *h = s->req;
        if (!h->admitted_once) {
            h->admitted_once = true;
            h->usage.cached_tokens = cached; /* DONE reads it under h->mu, after this */
            INC(e->m.hit_tokens, (uint64_t)cached);
        }
        batch_add(e, &n_batch, s, n);
        budget -= n;
    }
    /* compact out entries of preempted sequences */
    int32_t k = 0;
    for (int32_t j = 0; j < n_batch; j++) {
        if (e->batch[j]) {
            e->batch[k] = e->batch[j];
            e->batch_n[k] = e->batch_n[j];
            e->batch[k]->batch_slot = k;
            k++;
        }
    }
    return k;
}

/* ---- placement ---- */

/* The threshold past which s's decode attention belongs on the attention backend. */
static int64_t threshold(const struct hs_engine *e, const struct seq *s)
{
    const struct hs_engine_handle *h = s->req;
    switch (h->place) {
    case HS_PLACE_ATTN:
        return 0;
    case HS_PLACE_FFN:
        return INT64_MAX;
    case HS_PLACE_AUTO:
    case HS_PLACE_COUNT:
        break;
    }
    return h->long_context >= 0 ? h->long_context : e->long_context;
}

int32_t hs__sched_store_for(const struct hs_engine *e, const struct seq *s)
{
    if (!e->split) {
        return 0;
    }
    const int64_t n = threshold(e, s);
    return n == 0 || s->n_all > n ? 1 : 0;
}

/* Moves running[i]'s KV from the FFN backend's pool to the attention backend's: reserves its
 * tokens there, copies the blocks, commits the tokens (full blocks enter that pool's prefix
 * cache) and frees the old blocks. False when the attention pool has no room now. */
static bool migrate(struct hs_engine *e, struct seq *s)
{
    const int32_t n_tok = hs_kv_seq_n_tokens(s->kv);
    struct hs_kv_pool *to = e->pools[1];
    struct hs_kv_seq *kv = e->kv_free[1][e->n_kv_free[1] - 1];
    hs_kv_seq_set_salt(kv, s->req->cache_salt);
    if (hs_kv_seq_reserve(to, kv, n_tok) != HS_OK) {
        return false;
    }
    const int32_t bs = hs_kv_pool_block_size(to);
    const int32_t n_blocks = (n_tok + bs - 1) / bs;
    memcpy(e->mig_src, hs_kv_seq_block_table(s->kv), (size_t)n_blocks * sizeof(int32_t));
    memcpy(e->mig_dst, hs_kv_seq_block_table(kv), (size_t)n_blocks * sizeof(int32_t));
    uint64_t bytes = 0;
    hs_status st = hs_context_copy_blocks(e->ctx, 0, e->mig_src, 1, e->mig_dst, n_blocks, &bytes);
    HS_ASSERT(st == HS_OK); /* block ids come from the pools the stores were sized for */
    st = hs_kv_seq_append_tokens(to, kv, s->toks, n_tok);
    HS_ASSERT(st == HS_OK);
    e->n_kv_free[1]--;
    hs__sched_release_kv(e, s); /* from store 0 */
    s->kv = kv;
    s->store = 1;
    atomic_fetch_add_explicit(&e->m.store_seqs[1], 1, memory_order_relaxed);
    INC(e->m.migrations, 1);
    INC(e->m.migrated_bytes, bytes);
    HS_LOG_DEBUG("engine: req=%llu choice %d moves to the attention backend at %d tokens "
                 "(%llu bytes)",
                 (unsigned long long)s->req->id, s->index, n_tok, (unsigned long long)bytes);
    return true;
}

void hs__sched_migrate(struct hs_engine *e)
{
    if (!e->split) {
        return;
    }
    for (int32_t i = 0; i < e->n_running;) {
        struct seq *s = e->running[i];
        /* A sequence that has passed its threshold moves once its prompt is in (migrating a
         * prefill midway would only copy what the next chunk rewrites anyway). */
        if (s->store == 0 && hs__sched_store_for(e, s) == 1 &&
            hs_kv_seq_n_tokens(s->kv) == s->n_all - 1 && !migrate(e, s)) {
            /* No room on the attention backend now: it must not grow in a pool sized for
             * short sequences, so it waits and comes back there (recomputed, same tokens). */
            preempt(e, i);
            continue;
        }
        i++;
    }
}

/* ---- cancellation and timeouts ---- */

/* Cancellation and timeouts, for running and waiting sequences. */
static enum hs_finish_reason reap_reason(const struct seq *s, bool cancel_all, int64_t t)
{
    const struct hs_engine_handle *h = s->req;
    if (cancel_all || atomic_load_explicit(&h->cancel, memory_order_relaxed)) {
        return HS_FINISH_CANCELED;
    }
    if (h->deadline_ns && t >= h->deadline_ns) {
        return HS_FINISH_TIMEOUT;
    }
    return HS_FINISH_NONE;
}

void hs__sched_reap(struct hs_engine *e, bool cancel_all)
{
    int64_t t = now_ns();
    for (int32_t i = 0; i < e->n_running;) {
        enum hs_finish_reason why = reap_reason(e->running[i], cancel_all, t);
        if (why != HS_FINISH_NONE) {
            hs__output_finish_seq(e, e->running[i], why, HS_OK); /* removes running[i] */
        } else {
            i++;
        }
    }
    struct seq *next;
    for (struct seq *s = e->wait_head; s; s = next) {
        next = s->next;
        enum hs_finish_reason why = reap_reason(s, cancel_all, t);
        if (why != HS_FINISH_NONE) {
            hs__output_finish_seq(e, s, why, HS_OK);
        }
    }
}

/* ---- length-aware admission and segments ---- */

/* Moves waiting s (kv and store set) to the running array. */
static void make_running(struct hs_engine *e, struct seq *s)
{
    hs__sched_wait_remove(e, s);
    s->state = SEQ_RUNNING;
    s->preempted = false;
    s->seg_start = s->n_gen;
    s->t_admit_ns = now_ns();
    e->running[e->n_running++] = s;
    atomic_fetch_add_explicit(&e->m.n_seqs_running, 1, memory_order_relaxed);
    if (s->req->n_seqs_running++ == 0) {
        atomic_fetch_add_explicit(&e->m.n_running_req, 1, memory_order_relaxed);
    }
}

/* The output s is still expected to produce: its prediction less what it has made, or, once
 * past the prediction, as much again as it has made; never beyond its cap. */
static int64_t remaining(const struct seq *s)
{
    const struct hs_engine_handle *h = s->req;
    const int64_t done = s->n_gen;
    int64_t left = h->pred_tokens > done ? h->pred_tokens - done : done;
    left = HS_MIN(left, (int64_t)h->max_tokens - done);
    return HS_MAX(left, 1);
}

/* Admission classes of the LENGTH order: lower goes first. */
enum { CLASS_PREEMPTED, CLASS_OVERDUE, CLASS_BY_LENGTH };

static int admission_class(const struct hs_engine *e, const struct seq *s, int64_t t, int64_t *key)
{
    if (s->preempted) {
        *key = 0; /* queue order: they are at the front */
        return CLASS_PREEMPTED;
    }
    if (t - s->t_wait_ns >= e->fair_wait_ns) {
        *key = s->t_wait_ns;
        return CLASS_OVERDUE;
    }
    *key = remaining(s);
    return CLASS_BY_LENGTH;
}

/* The waiting sequence to admit next under the engine's order; NULL when none is admissible. */
static struct seq *next_admission(struct hs_engine *e, int64_t t)
{
    struct seq *best = NULL;
    int best_class = 0;
    int64_t best_key = 0;
    for (struct seq *s = e->wait_head; s; s = s->next) {
        if (!admissible(s)) {
            continue;
        }
        if (e->order == HS_SCHED_FIFO) {
            return s;
        }
        int64_t key;
        const int cls = admission_class(e, s, t, &key);
        if (!best || cls < best_class || (cls == best_class && key < best_key)) {
            best = s;
            best_class = cls;
            best_key = key;
        }
    }
    return best;
}

/* Whether a running sequence holds KV of the pool. */
static bool pool_runs(const struct hs_engine *e, int32_t store)
{
    for (int32_t i = 0; i < e->n_running; i++) {
        if (e->running[i]->store == store) {
            return true;
        }
    }
    return false;
}

/* A track of its own per request in the trace (pid 1, beside the engine's threads). */
enum { TRACE_PID_SCHED = 1, TRACE_TID_REQ0 = 1000 };

static void trace_segment(struct hs_engine *e, const struct seq *s, const char *why)
{
    if (!e->trace) {
        return;
    }
    const struct hs_engine_handle *h = s->req;
    const double t1 = hs_trace_now_us(e->trace);
    const double dur = (double)(now_ns() - s->t_admit_ns) / 1e3;
    const struct hs_trace_arg args[] = {
        HS_TRACE_INT("choice", s->index), HS_TRACE_INT("from_token", s->seg_start),
        HS_TRACE_INT("tokens", s->n_gen - s->seg_start), HS_TRACE_STR("ended_by", why),
        HS_TRACE_INT("predicted_tokens", h->pred_tokens)};
    hs_trace_complete(e->trace, TRACE_PID_SCHED, TRACE_TID_REQ0 + (int32_t)(h->id % 100000),
                      "segment", "sched", t1 - dur, dur, args, HS_ARRAY_LEN(args));
}

/* Parks running[i] after its segment: it leaves the running array for the back of the waiting
 * list, keeping its kv; a new kv object joins the idle stack in its stead. False (nothing
 * changed) when that object cannot be made. */
static bool park(struct hs_engine *e, int32_t i)
{
    struct seq *s = e->running[i];
    struct hs_kv_seq *spare = NULL;
    if (hs_kv_seq_create(e->pools[s->store], &spare) != HS_OK) {
        return false;
    }
    e->kv_free[s->store][e->n_kv_free[s->store]++] = spare;
    trace_segment(e, s, "yield");
    hs__sched_running_remove_at(e, i);
    s->state = SEQ_WAITING;
    s->parked = true;
    e->n_parked++;
    hs__sched_wait_push_back(e, s);
    INC(e->m.seg_yields, 1);
    HS_LOG_DEBUG("engine: req=%llu choice %d yields its slot after %d tokens (segment of %d)",
                 (unsigned long long)s->req->id, s->index, s->n_gen, s->n_gen - s->seg_start);
    return true;
}

/* Frees a parked sequence's kv object and blocks (full ones stay cached); it stays in the
 * waiting list as a plain waiting sequence. */
static void drop_parked_kv(struct hs_engine *e, struct seq *s)
{
    s->n_kv_lost = hs_kv_seq_n_tokens(s->kv);
    hs_kv_seq_destroy(e->pools[s->store], s->kv);
    atomic_fetch_sub_explicit(&e->m.store_seqs[s->store], 1, memory_order_relaxed);
    s->kv = NULL;
    s->parked = false;
    e->n_parked--;
}

/* Under block pressure in pool store: the parked sequence of that pool (other than keep) with the
 * most output still to come gives its blocks back. False when there is none. */
static bool evict_parked(struct hs_engine *e, int32_t store, const struct seq *keep)
{
    if (e->n_parked == 0) {
        return false;
    }
    struct seq *victim = NULL;
    for (struct seq *s = e->wait_head; s; s = s->next) {
        if (s->parked && s != keep && s->store == store &&
            (!victim || remaining(s) > remaining(victim))) {
            victim = s;
        }
    }
    if (!victim) {
        return false;
    }
    drop_parked_kv(e, victim);
    INC(e->m.seg_evictions, 1);
    HS_LOG_INFO("engine: req=%llu choice %d: parked KV of %d tokens released under block pressure "
                "(the prefix cache keeps its full blocks; the rest is recomputed on resume)",
                (unsigned long long)victim->req->id, victim->index, victim->n_kv_lost);
    return true;
}

/* Admits parked s again on its own KV. False when its pending tokens find no blocks. */
static bool resume(struct hs_engine *e, struct seq *s, int32_t *n_batch, int32_t *budget)
{
    struct hs_kv_pool *pool = e->pools[s->store];
    const int32_t n = HS_MIN(s->n_all - hs_kv_seq_n_tokens(s->kv), *budget);
    while (hs_kv_seq_reserve(pool, s->kv, n) != HS_OK) {
        if (pool_runs(e, s->store) || !evict_parked(e, s->store, s)) {
            return false;
        }
    }
    /* back to n_parallel + parked kv objects: one idle object goes */
    HS_ASSERT(e->n_kv_free[s->store] > 0);
    hs_kv_seq_destroy(pool, e->kv_free[s->store][--e->n_kv_free[s->store]]);
    s->parked = false;
    e->n_parked--;
    make_running(e, s);
    INC(e->m.seg_resumes, 1);
    batch_add(e, n_batch, s, n);
    *budget -= n;
    return true;
}

/* Parks running sequences past their segment while admissible sequences wait for a slot: as
 * many as wait (less the free slots), oldest admitted first, at their decode point only. */
static void segment_yield(struct hs_engine *e, int64_t t)
{
    if (e->segment_tokens <= 0 || e->n_running < e->n_parallel) {
        return;
    }
    int32_t n_want = 0;
    int64_t first_left = INT64_MAX; /* the LENGTH order's key of the first of them */
    for (const struct seq *w = e->wait_head; w; w = w->next) {
        if (w->parked || !admissible(w)) {
            continue;
        }
        n_want++;
        int64_t key;
        const int cls = admission_class(e, w, t, &key);
        first_left = HS_MIN(first_left, cls == CLASS_BY_LENGTH ? key : 0);
    }
    for (int32_t i = 0; i < e->n_running && n_want > 0;) {
        struct seq *s = e->running[i];
        const bool at_decode = hs_kv_seq_n_tokens(s->kv) == s->n_all - 1;
        const bool done_segment = s->n_gen - s->seg_start >= e->segment_tokens;
        const bool behind = e->order == HS_SCHED_FIFO || remaining(s) > first_left;
        if (at_decode && done_segment && behind && s->batch_slot < 0 && park(e, i)) {
            n_want--;
            continue; /* running[i] is the next one now */
        }
        i++;
    }
}

/* ---- length prediction ---- */

static enum hs_lengthpred_mode length_mode(const struct hs_reasoning_params *r)
{
    if (!r->enabled || r->budget_tokens == 0) {
        return HS_LENGTHPRED_MODE_PLAIN; /* a budget of 0 closes the block at once (no_think) */
    }
    return r->budget_tokens >= 0 ? HS_LENGTHPRED_MODE_BUDGETED : HS_LENGTHPRED_MODE_THINK;
}

/* Predicts a new request's output length, once, when its first choice enters the queue. */
static void predict(struct hs_engine *e, struct hs_engine_handle *h)
{
    if (h->predicted || !e->lpred) {
        return;
    }
    h->len_key = (struct hs_lengthpred_key){
        .prompt_hash = hs_lengthpred_hash_tokens(h->seqs[0].toks, h->n_prompt),
        .client = h->client,
        .mode = length_mode(&h->reasoning),
        .budget_tokens = h->reasoning.budget_tokens,
        .max_tokens = h->max_tokens,
        .ignore_eos = h->ignore_eos,
    };
    h->pred_tokens = hs_lengthpred_predict(e->lpred, &h->len_key, &h->pred_source);
    h->predicted = true;
    HS_LOG_DEBUG("engine: req=%llu predicted output %d tokens (%s)", (unsigned long long)h->id,
                 h->pred_tokens, hs_lengthpred_source_str(h->pred_source));
}

const char *hs_sched_order_str(enum hs_sched_order o)
{
    static const char *const names[HS_SCHED_ORDER_COUNT] = {"fifo", "length"};
    return o >= 0 && o < HS_SCHED_ORDER_COUNT ? names[o] : "?";
}

hs_status hs__sched_init(struct hs_engine *e, const struct hs_engine_params *p,
                         struct hs_error *err)
{
    if ((unsigned)p->order >= HS_SCHED_ORDER_COUNT || p->segment_tokens < 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "the admission order must be fifo or length, and segment tokens not "
                            "negative");
    }
    e->order = p->order;
    if ((unsigned)p->pingpong_balance >= HS_PINGPONG_BALANCE_COUNT) {
        return hs_error_set(err, HS_E_INVAL, "the ping-pong balance must be cut, kv or length");
    }
    e->balance = p->pingpong && e->split ? p->pingpong_balance : HS_PINGPONG_BALANCE_CUT;
    e->fair_wait_ns = (int64_t)(p->fair_wait_ms > 0 ? p->fair_wait_ms : 1000) * 1000000;
    e->segment_tokens = p->segment_tokens;
    if (hs_lengthpred_create(0, &e->lpred) != HS_OK) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    return HS_OK;
}

void hs__sched_finish(struct hs_engine *e)
{
    hs_lengthpred_destroy(e->lpred);
    e->lpred = NULL;
}

void hs__sched_seq_ending(struct hs_engine *e, struct seq *s, enum hs_finish_reason why)
{
    struct hs_engine_handle *h = s->req;
    if (s->parked) {
        drop_parked_kv(e, s);
    } else if (s->state == SEQ_RUNNING) {
        trace_segment(e, s, hs_finish_reason_str(why));
    }
    if (!h->predicted || (why != HS_FINISH_STOP && why != HS_FINISH_LENGTH)) {
        return;
    }
    const int32_t actual = HS_MAX(s->n_gen, 1);
    hs_lengthpred_record(e->lpred, &h->len_key, actual);
    const int32_t diff =
        h->pred_tokens > actual ? h->pred_tokens - actual : actual - h->pred_tokens;
    hs__metrics_observe(&e->m.lenerr, hs_engine_lenerr_bounds, HS_ENGINE_LENERR_BUCKETS,
                        (double)diff / actual);
    INC(e->m.predicted_tokens, (uint64_t)h->pred_tokens);
    INC(e->m.lenerr_tokens, (uint64_t)diff);
    if (e->trace) {
        const int32_t tid = TRACE_TID_REQ0 + (int32_t)(h->id % 100000);
        char name[48];
        snprintf(name, sizeof(name), "req %llu", (unsigned long long)h->id);
        hs_trace_name_thread(e->trace, TRACE_PID_SCHED, tid, name);
        const double t1 = hs_trace_now_us(e->trace);
        const double dur = (double)(now_ns() - h->t_submit_ns) / 1e3;
        const struct hs_trace_arg args[] = {
            HS_TRACE_INT("choice", s->index),
            HS_TRACE_INT("predicted_tokens", h->pred_tokens),
            HS_TRACE_STR("prediction_source", hs_lengthpred_source_str(h->pred_source)),
            HS_TRACE_INT("output_tokens", actual),
            HS_TRACE_INT("max_tokens", h->max_tokens),
            HS_TRACE_STR("finish", hs_finish_reason_str(why))};
        hs_trace_complete(e->trace, TRACE_PID_SCHED, tid, "request", "sched", t1 - dur, dur, args,
                          HS_ARRAY_LEN(args));
    }
}

/* ---- ping-pong balance ---- */

/* The most decodes reordered at the front of a batch (stack arrays; the rest keep their
 * order). */
#define HS_SCHED_BALANCE_MAX 256
/* LENGTH looks this many steps ahead at most. */
#define HS_SCHED_BALANCE_HORIZON 256

const char *hs_pingpong_balance_str(enum hs_pingpong_balance b)
{
    static const char *const names[HS_PINGPONG_BALANCE_COUNT] = {"cut", "kv", "length"};
    return b >= 0 && b < HS_PINGPONG_BALANCE_COUNT ? names[b] : "?";
}

/* The balancer's view of batch entry j, as the forward pass builds it (hs_split_item). */
static struct hs_split_item entry_item(const struct hs_engine *e, int32_t j)
{
    const struct seq *s = e->batch[j];
    const int32_t n_past = hs_kv_seq_n_tokens(s->kv);
    const bool last = n_past + e->batch_n[j] == s->n_all + s->n_draft;
    return (struct hs_split_item){
        .rows = e->batch_n[j],
        .out_rows = last ? 1 + s->n_draft : 0,
        .kv_tokens = n_past + e->batch_n[j],
        .remote = s->store == 1 && e->batch_n[j] == 1,
    };
}

/* Scratch of a layout search (on the engine thread's stack, ~14 KiB). */
struct layout {
    int32_t p, n;                        /* reorderable prefix, batch entries */
    int64_t kv[HS_SCHED_BALANCE_MAX];    /* the prefix's attention-backend KV now */
    int64_t rem[HS_SCHED_BALANCE_MAX];   /* predicted remaining output (LENGTH) */
    int32_t by_kv[HS_SCHED_BALANCE_MAX]; /* prefix indices, heaviest KV first */
    int32_t order[HS_SCHED_BALANCE_MAX]; /* a candidate order of the prefix */
    struct hs_split_item items[HS_SCHED_BALANCE_MAX * 2];
};

/* The balancer's predicted time per layer of the batch laid out as L->order (then the entries
 * past the prefix as they are), h steps ahead when h > 0: by then every prefix sequence reads h
 * more positions and the ones predicted to have ended are gone (LENGTH's horizon; the rest of the
 * batch is a transient prefill, left out). */
static double layout_period(const struct hs_engine *e, const struct hs_split_model *m,
                            struct layout *L, int64_t h)
{
    int32_t n = 0;
    for (int32_t i = 0; i < L->p; i++) {
        const int32_t j = L->order[i];
        if (h > 0 && L->rem[j] <= h) {
            continue;
        }
        struct hs_split_item it = entry_item(e, j);
        it.kv_tokens += (int32_t)h;
        L->items[n++] = it;
    }
    for (int32_t j = L->p; j < L->n && h == 0; j++) {
        L->items[n++] = entry_item(e, j);
    }
    double period = 0;
    /* ahead, rows have gone: any cut is allowed (the layout is judged, not the tiles) */
    hs_split_choose(m, L->items, n, h > 0 ? 1 : 4, &period);
    return period;
}

/* Candidate: side A gets k of the prefix (k a multiple of 4), filled heaviest first while its KV
 * stays within target; laid out A then B in L->order. */
static void layout_candidate(struct layout *L, int32_t k, double target)
{
    int32_t a = 0, b = k;
    double kv_a = 0;
    for (int32_t r = 0; r < L->p; r++) {
        const int32_t j = L->by_kv[r];
        const bool room_a = a < k, room_b = b < L->p;
        const bool must_a = L->p - r <= k - a; /* what is left only fills A */
        if (room_a && (must_a || !room_b || kv_a + (double)L->kv[j] <= target)) {
            L->order[a++] = j;
            kv_a += (double)L->kv[j];
        } else {
            L->order[b++] = j;
        }
    }
}

/* The search: for each tile-aligned size of side A and KV share aimed at, the candidate with the
 * least predicted time per layer, now (KV) or averaged over the horizon of the sequences'
 * predicted lives (LENGTH). Leaves the best in L->order. */
static void layout_search(const struct hs_engine *e, struct layout *L, bool ahead)
{
    const struct hs_split_model *m = hs_context_split_model(e->ctx);
    double total = 0;
    int64_t horizon = 0;
    for (int32_t r = 0; r < L->p; r++) {
        total += (double)L->kv[r];
        horizon = HS_MAX(horizon, L->rem[r]);
        int32_t i = r;
        while (i > 0 && L->kv[L->by_kv[i - 1]] < L->kv[r]) {
            L->by_kv[i] = L->by_kv[i - 1];
            i--;
        }
        L->by_kv[i] = r;
    }
    horizon = HS_MIN(horizon, HS_SCHED_BALANCE_HORIZON);
    int32_t best[HS_SCHED_BALANCE_MAX];
    double best_cost = INFINITY;
    for (int32_t k = 4; k < L->p; k += 4) {
        for (int f = 0; f <= 8; f++) {
            layout_candidate(L, k, total * f / 8);
            double cost = layout_period(e, m, L, 0);
            for (int q = 1; ahead && q < 4; q++) {
                cost += layout_period(e, m, L, horizon * q / 4);
            }
            if (cost < best_cost) {
                best_cost = cost;
                memcpy(best, L->order, (size_t)L->p * sizeof(*best));
            }
        }
    }
    memcpy(L->order, best, (size_t)L->p * sizeof(*best));
}

void hs__sched_balance(struct hs_engine *e, int32_t n)
{
    if (e->balance == HS_PINGPONG_BALANCE_CUT) {
        return;
    }
    /* The reorderable prefix: decodes of one row without a draft (they come first), in whole
     * 4-row tiles: each of their rows stays in a tile, so its bits do not move. */
    int32_t p = 0;
    while (p < n && p < HS_SCHED_BALANCE_MAX && e->batch_n[p] == 1 && e->batch[p]->n_draft == 0 &&
           hs_kv_seq_n_tokens(e->batch[p]->kv) + 1 == e->batch[p]->n_all) {
        p++;
    }
    p -= p % 4;
    if (p < 8) {
        return; /* a side needs a whole tile */
    }
    struct layout layout;
    struct layout *L = &layout;
    L->p = p;
    L->n = n;
    /* LENGTH keeps its plan while the same sequences decode: ranks from the last search */
    bool same = e->balance == HS_PINGPONG_BALANCE_LENGTH && p == e->pp_plan_n;
    for (int32_t j = 0; j < p; j++) {
        const struct seq *s = e->batch[j];
        L->kv[j] = s->store == 1 ? hs_kv_seq_n_tokens(s->kv) + 1 : 0;
        L->rem[j] = remaining(s);
        same = same && s->pp_plan == e->pp_plan_gen && s->pp_rank < p;
    }
    if (same) {
        for (int32_t j = 0; j < p; j++) {
            L->order[e->batch[j]->pp_rank] = j;
        }
    } else {
        layout_search(e, L, e->balance == HS_PINGPONG_BALANCE_LENGTH);
        e->pp_plan_gen++;
        e->pp_plan_n = p;
        for (int32_t i = 0; i < p; i++) {
            e->batch[L->order[i]]->pp_plan = e->pp_plan_gen;
            e->batch[L->order[i]]->pp_rank = i;
        }
    }
    struct seq *moved[HS_SCHED_BALANCE_MAX];
    bool changed = false;
    for (int32_t i = 0; i < p; i++) {
        moved[i] = e->batch[L->order[i]];
    }
    for (int32_t j = 0; j < p; j++) {
        changed |= e->batch[j] != moved[j];
        e->batch[j] = moved[j];
        e->batch[j]->batch_slot = j; /* batch_n[j] is 1 for all of them */
    }
    INC(e->m.pp_reorders, changed ? 1 : 0);
}
