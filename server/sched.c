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

#include <stdatomic.h>
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

void hs__sched_wait_push_back(struct hs_engine *e, struct seq *s)
{
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
    hs__sched_release_kv(e, s);
    s->state = SEQ_WAITING;
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

/* Reserves n more tokens for running[i], preempting the most recently admitted sequences of
 * its KV pool while blocks are short. */
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

/* Builds this step's batch: decodes first, then prefill chunks of running sequences, then new
 * admissions, all under the token budget. Returns the number of entries. */
int32_t hs__sched_schedule(struct hs_engine *e)
{
    int32_t budget = e->n_batch;
    int32_t n_batch = 0;
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
    struct seq *next;
    for (struct seq *s = e->wait_head; s && budget > 0 && e->n_running < e->n_parallel; s = next) {
        next = s->next;
        if (!admissible(s)) {
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
            break; /* no blocks for more: new work never preempts running work */
        }
        e->n_kv_free[store]--;
        s->kv = kv;
        s->store = store;
        atomic_fetch_add_explicit(&e->m.store_seqs[store], 1, memory_order_relaxed);
        hs__sched_wait_remove(e, s);
        s->state = SEQ_RUNNING;
        e->running[e->n_running++] = s;
        atomic_fetch_add_explicit(&e->m.n_seqs_running, 1, memory_order_relaxed);
        struct hs_engine_handle *h = s->req;
        if (h->n_seqs_running++ == 0) {
            atomic_fetch_add_explicit(&e->m.n_running_req, 1, memory_order_relaxed);
        }
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
    hs_status st =
        hs_context_copy_blocks(e->ctx, 0, e->mig_src, 1, e->mig_dst, n_blocks, &bytes);
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
