/* Output and stop handling: what happens to a sampled token (sampler, detokenizer, stop strings,
 * logprobs, the request's channel) and how a sequence ends (finish_seq: its KV back to the pool,
 * its finish reason and, for the last choice, the request's DONE).
 *
 * Owns no state of its own: it works on the engine's per-step scratch (e->piece, e->lp_scratch),
 * each sequence's hold buffer (text that could still begin a stop string) and the touched list
 * that hs__channel_notify_touched empties at the end of the step.
 *
 * Threads: engine only (it takes h->mu to publish into a channel, and e->mu when a request ends),
 * except hs_finish_reason_str (any). */
#include "server/engine.h"
#include "server/engine-impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

const char *hs_finish_reason_str(enum hs_finish_reason r)
{
    switch (r) {
    case HS_FINISH_STOP:
        return "stop";
    case HS_FINISH_LENGTH:
        return "length";
    case HS_FINISH_CANCELED:
        return "canceled";
    case HS_FINISH_TIMEOUT:
        return "timeout";
    case HS_FINISH_ERROR:
        return "error";
    default:
        return "none";
    }
}

/* ---- engine thread: ending a sequence ---- */

static void mark_touched(struct hs_engine *e, struct hs_engine_handle *h)
{
    if (!h->touched) {
        h->touched = true;
        h->next_touched = e->touched_head;
        e->touched_head = h;
    }
}

/* Ends a sequence: frees its KV, records its finish reason; the request's DONE when it was the
 * last. */
void hs__output_finish_seq(struct hs_engine *e, struct seq *s, enum hs_finish_reason why,
                           hs_status status)
{
    struct hs_engine_handle *h = s->req;
    hs__sched_seq_ending(e, s, why); /* length history; a parked sequence's KV */
    hs__spec_seq_end(e, s, why);
    if (s->state == SEQ_RUNNING) {
        for (int32_t i = 0; i < e->n_running; i++) {
            if (e->running[i] == s) {
                hs__sched_running_remove_at(e, i);
                break;
            }
        }
        hs__sched_release_kv(e, s);
        hs__metrics_update_kv_gauges(e);
    } else if (s->state == SEQ_WAITING) {
        hs__sched_wait_remove(e, s);
    }
    s->state = SEQ_FINISHED;
    INC(e->m.finished[why], 1);
    if (s->n_gen >= 2) {
        double tpot = (double)(s->t_last_ns - s->t_first_ns) / 1e9 / (s->n_gen - 1);
        hs__metrics_observe(&e->m.tpot, hs_engine_tpot_bounds_s, HS_ENGINE_TPOT_BUCKETS, tpot);
    }
    h->n_finished++;
    bool last = h->n_finished == h->n_choices;
    int64_t t = now_ns();
    pthread_mutex_lock(&h->mu);
    h->fin[s->index] = why;
    h->usage.completion_tokens += s->n_gen;
    h->usage.reasoning_tokens += h->reasoning.enabled ? hs_reasoning_n_think(&s->rs) : 0;
    if (status != HS_OK && h->status == HS_OK) {
        h->status = status;
    }
    if (last) {
        h->done_ready = true;
        h->e2e_ms = (double)(t - h->t_submit_ns) / 1e6;
        h->ttft_ms = h->t_first_ns ? (double)(h->t_first_ns - h->t_submit_ns) / 1e6 : 0.0;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    mark_touched(e, h);
    if (last) {
        HS_LOG_DEBUG("engine: req=%llu done: prompt %d, completion %d, cached %d tokens, %.1f ms",
                     (unsigned long long)h->id, h->n_prompt, h->usage.completion_tokens,
                     h->usage.cached_tokens, (double)(t - h->t_submit_ns) / 1e6);
        atomic_store(&h->done, true);
        hs__metrics_observe(&e->m.e2e, hs_engine_e2e_bounds_s, HS_ENGINE_E2E_BUCKETS,
                            (double)(t - h->t_submit_ns) / 1e9);
        pthread_mutex_lock(&e->mu);
        e->n_inflight--;
        pthread_cond_broadcast(&e->idle_cv);
        pthread_mutex_unlock(&e->mu);
    }
}

/* ---- engine thread: a sampled token ---- */

/* Moves the part of s->hold that can no longer be (part of) a stop string to the channel, at a
 * character boundary; on a match cuts there and sets s->stopped. final: the stream ends, hold
 * nothing back. Returns the number of bytes to emit. */
static size_t stop_scan(struct seq *s, bool final)
{
    const struct hs_engine_handle *h = s->req;
    size_t safe = s->hold.len;
    /* stop strings apply to the answer, never to a thinking block */
    const int32_t n_stop = hs_reasoning_in_answer(&s->rs) || !h->reasoning.enabled ? h->n_stop : 0;
    for (int32_t i = 0; i < n_stop; i++) {
        const char *hit = memmem(s->hold.p, s->hold.len, h->stop[i], h->stop_len[i]);
        if (hit) {
            s->stopped = true;
            safe = HS_MIN(safe, (size_t)(hit - s->hold.p));
        }
    }
    if (!s->stopped && !final) {
        for (int32_t i = 0; i < n_stop; i++) {
            size_t k = HS_MIN(h->stop_len[i] - 1, s->hold.len);
            for (; k > 0; k--) {
                if (!memcmp(s->hold.p + s->hold.len - k, h->stop[i], k)) {
                    safe = HS_MIN(safe, s->hold.len - k);
                    break;
                }
            }
        }
    }
    while (safe > 0 && safe < s->hold.len && ((unsigned char)s->hold.p[safe] & 0xC0) == 0x80) {
        safe--; /* never split a character */
    }
    return safe;
}

/* Appends detokenized text to the hold buffer. */
static bool hold_append(struct seq *s, const char *p, size_t n)
{
    return hs__buf_add(&s->hold, p, n) == HS_OK;
}

/* A draw that failed (t < -1): the request's detail and *status say why. */
static void sample_failed(struct seq *s, hs_token t, hs_status *status)
{
    struct hs_engine_handle *h = s->req;
    /* The grammar allows nothing here (or only tokens logit_bias bans): an error the client
     * sees, never a silent stop. Nothing was drawn, so nothing is counted. */
    pthread_mutex_lock(&h->mu);
    if (!h->detail) {
        h->detail = hs_sample_result_str(hs_sampler_last_result(s->smp));
    }
    pthread_mutex_unlock(&h->mu);
    *status = t == -4 ? hs_sampler_constraint_status(s->smp) : HS_E_INVAL;
}

hs_token hs__output_verify(struct seq *s, const float *logits, hs_token draft, bool *accepted,
                           hs_status *status)
{
    const hs_token t = hs_sampler_verify(s->smp, logits, draft, accepted);
    if (t < -1) {
        sample_failed(s, t, status);
    }
    return t;
}

hs_token hs__output_sample(struct seq *s, const float *logits, hs_status *status)
{
    const hs_token t = hs_sampler_sample(s->smp, logits);
    if (t < -1) {
        sample_failed(s, t, status);
    }
    return t;
}

/* Below this many logits to draw from in a step (sequences x vocabulary), waking the compute
 * threads costs more than it saves: the engine thread draws them (a 512-token vocabulary takes
 * microseconds a sequence; Qwen3's 151k, about half a millisecond). */
#define DRAW_TASKS_MIN_LOGITS (1 << 16)

/* A draw run off the engine thread: it touches only its sequence's sampler (its scratch, RNG,
 * penalties, a reasoning tracker's own state) and reads the logits. */
static void draw_task(void *ctx, int32_t i)
{
    struct draw *d = (struct draw *)ctx + i;
    if (!d->drawn) {
        d->t = hs_sampler_sample(d->s->smp, d->logits);
    }
}

/* True when s's constraint reaches state that other sequences share: a grammar cache is one per
 * request, shared by its choices. */
static bool draw_on_engine_thread(const struct seq *s)
{
    return s->gm && s->req->n_choices > 1;
}

void hs__output_take_tokens(struct hs_engine *e, struct draw *draws, int32_t n, int64_t t_ns)
{
    /* Drawn apart from the emits: sampling is O(vocabulary) a sequence, emitting is cheap but
     * touches the engine's scratch and the channels. Sequences that share state are drawn here
     * first; the tasks skip them. */
    const int64_t t0 = now_ns();
    int32_t n_left = n;
    for (int32_t i = 0; i < n; i++) {
        draws[i].drawn = false;
        if (e->serial_sampling || draw_on_engine_thread(draws[i].s)) {
            draw_task(draws, i);
            draws[i].drawn = true;
            n_left--;
        }
    }
    if (n_left > 1 && (int64_t)n_left * e->n_vocab >= DRAW_TASKS_MIN_LOGITS) {
        hs_backend_run_tasks(hs_context_backend(e->ctx), n, draw_task, draws);
    } else {
        for (int32_t i = 0; i < n; i++) {
            draw_task(draws, i);
        }
        n_left = 0;
    }
    INC(e->m.draws, (uint64_t)n);
    INC(e->m.draws_in_tasks, (uint64_t)n_left);
    INC(e->m.sampling_ns, (uint64_t)(now_ns() - t0));
    for (int32_t i = 0; i < n; i++) {
        struct seq *s = draws[i].s;
        hs_status st = HS_OK;
        enum hs_finish_reason why = HS_FINISH_ERROR;
        if (draws[i].t < -1) {
            sample_failed(s, draws[i].t, &st);
        } else {
            why = hs__output_emit(e, s, draws[i].t, draws[i].logits, t_ns, &st);
        }
        if (why != HS_FINISH_NONE) {
            hs__output_finish_seq(e, s, why, st);
        }
    }
}

/* Emits an already sampled token t (or -1: nothing could be drawn) drawn from logits: counts it,
 * advances the sampler's state, detokenizes, checks stops and max_tokens, pushes output. */
enum hs_finish_reason hs__output_emit(struct hs_engine *e, struct seq *s, hs_token t,
                                      const float *logits, int64_t t_ns, hs_status *status)
{
    struct hs_engine_handle *h = s->req;
    HS_ASSERT(t >= -1); /* callers end the sequence on hs__output_sample's errors */
    /* t == -1: every token is banned (no constraint) and the sequence ends with a stop; nothing
     * was produced, so nothing is counted (usage, TTFT and TPOT see only drawn tokens). */
    if (t >= 0) {
        s->n_gen++;
        INC(e->m.gen_tokens, 1);
        if (!s->t_first_ns) {
            s->t_first_ns = t_ns;
        }
        s->t_last_ns = t_ns;
        if (!h->t_first_ns) {
            h->t_first_ns = t_ns;
            hs__metrics_observe(&e->m.ttft, hs_engine_ttft_bounds_s, HS_ENGINE_TTFT_BUCKETS,
                                (double)(t_ns - h->t_submit_ns) / 1e9);
        }
    }
    bool eog = t < 0 || (!h->ignore_eos && hs_vocab_is_eog(e->vocab, t));
    bool at_len = s->n_gen >= h->max_tokens;
    bool listed = !eog || (h->report_eos && t >= 0);
    size_t n_piece = 0;
    struct hs_token_logprob *lp = NULL;
    if (listed && h->logprobs) {
        lp = &e->lp_scratch;
        lp->token = t;
        lp->n_top = hs_logprobs_top_k(logits, e->n_vocab, h->top_logprobs, e->lp_ids, e->lp_vals, t,
                                      &lp->logprob);
        lp->top_ids = e->lp_ids;
        lp->top_logprobs = e->lp_vals;
    }
    if (!eog || s->gm) {
        /* a grammar sees the end-of-generation token too: it completes the output */
        const hs_status ast = hs_sampler_accept(s->smp, t);
        if (ast != HS_OK) {
            pthread_mutex_lock(&h->mu);
            if (!h->detail) {
                h->detail = "the grammar could not advance over the sampled token";
            }
            pthread_mutex_unlock(&h->mu);
            *status = ast;
            return HS_FINISH_ERROR;
        }
    }
    if (!eog) {
        if (!hs__grow((void **)&s->toks, &s->cap_toks, (size_t)s->n_all + 1, sizeof(*s->toks))) {
            *status = HS_E_NOMEM;
            return HS_FINISH_ERROR;
        }
        s->toks[s->n_all++] = t;
        n_piece = hs_detok_push(&s->dt, t, e->piece, e->cap_piece);
    }
    if (eog || at_len) {
        n_piece += hs_detok_flush(&s->dt, e->piece + n_piece, e->cap_piece - n_piece);
    }
    bool ok = hold_append(s, e->piece, n_piece);
    size_t safe = 0;
    if (ok) {
        safe = stop_scan(s, eog || at_len);
    }
    pthread_mutex_lock(&h->mu);
    struct outbuf *o = &h->prod[s->index];
    if (ok && listed) {
        ok = hs__channel_outbuf_token(o, t, lp);
    }
    if (ok && safe > 0) {
        ok = hs__channel_outbuf_text(o, s->hold.p, safe);
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    mark_touched(e, h);
    if (!ok) {
        *status = HS_E_NOMEM;
        return HS_FINISH_ERROR;
    }
    hs__buf_consume(&s->hold, safe);
    if (s->stopped) {
        hs__buf_clear(&s->hold); /* the stop string and what follows are never emitted */
        return HS_FINISH_STOP;
    }
    if (eog) {
        return HS_FINISH_STOP;
    }
    return at_len ? HS_FINISH_LENGTH : HS_FINISH_NONE;
}
