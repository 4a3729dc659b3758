/* The request channel: what an HTTP thread holds of a request (struct hs_engine_handle) and how
 * output travels from the engine thread to it.
 *
 * Owns the handles: submit validates a request, allocates its handle (with one sequence per
 * choice) and queues it for the engine; the handle is freed when both the caller's reference
 * (hs_engine_release) and the engine's (dropped after the final notify) are gone. Owns the
 * output buffers: the engine thread appends to h->prod[] (hs__channel_outbuf_*) under h->mu and
 * a reader swaps a choice's buffer into h->cons to build an event (poll/wait).
 *
 * Threads: submit, poll, wait, cancel and release run on any thread (HTTP threads); the outbuf
 * appends and hs__channel_notify_touched run on the engine thread only. */
#include "server/engine.h"
#include "server/engine-impl.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- output buffers ---- */

bool hs__channel_outbuf_text(struct outbuf *o, const char *s, size_t n)
{
    return hs__buf_add(&o->text, s, n) == HS_OK;
}

bool hs__channel_outbuf_token(struct outbuf *o, hs_token t, const struct hs_token_logprob *lp)
{
    size_t cap = (size_t)o->cap_tokens;
    size_t need = (size_t)o->n_tokens + 1;
    if (need > cap) {
        size_t c1 = cap, c2 = cap;
        if (!hs__grow((void **)&o->tokens, &c1, need, sizeof(*o->tokens))) {
            return false;
        }
        if (lp && !hs__grow((void **)&o->lps, &c2, need, sizeof(*o->lps))) {
            return false;
        }
        if (lp && c1 != c2) {
            return false; /* both grow the same way from the same start */
        }
        o->cap_tokens = (int32_t)c1;
    }
    if (lp) {
        const size_t n_top = (size_t)lp->n_top;
        size_t c1 = o->cap_top, c2 = o->cap_top;
        if (!hs__grow((void **)&o->top_ids, &c1, o->n_top + n_top, sizeof(*o->top_ids)) ||
            !hs__grow((void **)&o->top_lps, &c2, o->n_top + n_top, sizeof(*o->top_lps)) ||
            c1 != c2) {
            return false;
        }
        o->cap_top = c1;
        if (n_top > 0) { /* the arrays may still be NULL (no alternatives asked so far) */
            memcpy(o->top_ids + o->n_top, lp->top_ids, n_top * sizeof(*o->top_ids));
            memcpy(o->top_lps + o->n_top, lp->top_logprobs, n_top * sizeof(*o->top_lps));
            o->n_top += n_top;
        }
        o->lps[o->n_tokens] = (struct hs_token_logprob){lp->token, lp->logprob, lp->n_top, 0, 0};
    }
    o->tokens[o->n_tokens] = t;
    o->n_tokens++;
    return true;
}

/* Points each token's alternatives into o's arrays, now that o is an event's. */
static void outbuf_link_tops(struct outbuf *o)
{
    size_t off = 0;
    for (int32_t i = 0; i < o->n_tokens; i++) {
        o->lps[i].top_ids = o->lps[i].n_top > 0 ? o->top_ids + off : NULL;
        o->lps[i].top_logprobs = o->lps[i].n_top > 0 ? o->top_lps + off : NULL;
        off += (size_t)o->lps[i].n_top;
    }
}

static void outbuf_free(struct outbuf *o)
{
    hs__buf_free(&o->text);
    free(o->tokens);
    free(o->lps);
    free(o->top_ids);
    free(o->top_lps);
}

/* ---- handles ---- */

static void handle_free(struct hs_engine_handle *h)
{
    for (int32_t i = 0; i < HS_ENGINE_MAX_CHOICES; i++) {
        outbuf_free(&h->prod[i]);
        free(h->seqs[i].toks);
        hs_suffix_text_destroy(h->seqs[i].sfx); /* NULL unless the engine stopped midway */
        hs__buf_free(&h->seqs[i].hold);
        hs_sampler_destroy(h->seqs[i].smp);
        hs_grammar_matcher_destroy(h->seqs[i].gm); /* before their cache */
        hs_reasoning_finish(&h->seqs[i].rs);
    }
    hs__mm_free(h);
    hs_grammar_cache_destroy(h->grammar_cache);
    hs_grammar_destroy(h->grammar);
    outbuf_free(&h->cons);
    for (int32_t i = 0; i < h->n_stop; i++) {
        free(h->stop[i]);
    }
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->nmu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

static void handle_unref(struct hs_engine_handle *h)
{
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1) {
        handle_free(h);
    }
}

uint64_t hs_engine_handle_id(const struct hs_engine_handle *h)
{
    return h->id;
}

void hs_engine_cancel(struct hs_engine_handle *h)
{
    if (h) {
        atomic_store_explicit(&h->cancel, true, memory_order_relaxed);
    }
}

/* The handle whose notify hook the engine thread is running (it holds that handle's nmu). */
static _Thread_local struct hs_engine_handle *tls_notifying;

void hs_engine_release(struct hs_engine_handle *h)
{
    if (!h) {
        return;
    }
    if (tls_notifying == h) {
        h->released = true; /* from inside its own notify hook: nmu is held already */
    } else {
        pthread_mutex_lock(&h->nmu);
        h->released = true;
        pthread_mutex_unlock(&h->nmu);
    }
    if (!atomic_load(&h->done)) {
        hs_engine_cancel(h);
    }
    handle_unref(h);
}

/* ---- notify (engine thread) ---- */

/* Counts a finished request that had a choice canceled, by where it was: a finished request
 * passes through here exactly once (its last touch). */
static void count_cancel(struct hs_engine *e, const struct hs_engine_handle *h)
{
    for (int32_t i = 0; i < h->n_choices; i++) {
        if (h->fin[i] == HS_FINISH_CANCELED) {
            enum hs_cancel_phase p = !h->admitted_once ? HS_CANCEL_QUEUE
                                     : !h->t_first_ns  ? HS_CANCEL_PREFILL
                                                       : HS_CANCEL_DECODE;
            INC(e->m.cancelled[p], 1);
            return;
        }
    }
}

/* Calls the notify hooks of the requests touched this step; drops the engine's reference of
 * the finished ones. */
void hs__channel_notify_touched(struct hs_engine *e)
{
    struct hs_engine_handle *h = e->touched_head;
    e->touched_head = NULL;
    while (h) {
        struct hs_engine_handle *next = h->next_touched;
        h->touched = false;
        h->next_touched = NULL;
        if (h->n_finished == h->n_choices) {
            count_cancel(e, h); /* before the notify: whoever sees DONE sees the count */
        }
        pthread_mutex_lock(&h->nmu);
        if (!h->released && h->notify) {
            tls_notifying = h;
            h->notify(h->notify_user);
            tls_notifying = NULL;
        }
        pthread_mutex_unlock(&h->nmu);
        if (h->n_finished == h->n_choices) {
            handle_unref(h);
        }
        h = next;
    }
}

/* ---- reading events (HTTP threads) ---- */

/* Fills ev from the channel; h->mu held. */
static hs_status take_event(struct hs_engine_handle *h, struct hs_engine_event *ev)
{
    if (h->done_taken) {
        return HS_E_NOENT;
    }
    for (int32_t k = 0; k < h->n_choices; k++) {
        int32_t c = (h->rr + k) % h->n_choices;
        struct outbuf *p = &h->prod[c];
        bool fin_pending = h->fin[c] != HS_FINISH_NONE && !h->fin_sent[c];
        if (p->text.len == 0 && p->n_tokens == 0 && !fin_pending) {
            continue;
        }
        struct outbuf t = h->cons;
        h->cons = *p;
        *p = t;
        hs__buf_clear(&p->text);
        p->n_tokens = 0;
        p->n_top = 0;
        if (h->logprobs) {
            outbuf_link_tops(&h->cons);
        }
        memset(ev, 0, sizeof(*ev));
        ev->type = HS_EVENT_DELTA;
        ev->choice = c;
        ev->text = h->cons.text.p ? h->cons.text.p : "";
        ev->n_text = h->cons.text.len;
        ev->tokens = h->cons.tokens;
        ev->n_tokens = h->cons.n_tokens;
        ev->logprobs = h->logprobs ? h->cons.lps : NULL;
        if (fin_pending) {
            ev->finish_reason = h->fin[c];
            h->fin_sent[c] = true;
        }
        h->rr = (c + 1) % h->n_choices;
        return HS_OK;
    }
    if (!h->done_ready) {
        return HS_E_BUSY;
    }
    memset(ev, 0, sizeof(*ev));
    ev->type = HS_EVENT_DONE;
    ev->usage = h->usage;
    ev->status = h->status;
    ev->detail = h->detail;
    ev->ttft_ms = h->ttft_ms;
    ev->e2e_ms = h->e2e_ms;
    ev->text = "";
    h->done_taken = true;
    return HS_OK;
}

hs_status hs_engine_poll(struct hs_engine_handle *h, struct hs_engine_event *ev)
{
    pthread_mutex_lock(&h->mu);
    hs_status st = take_event(h, ev);
    pthread_mutex_unlock(&h->mu);
    return st;
}

struct timespec hs__engine_deadline(int64_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms > 0) {
        dl.tv_sec += (time_t)(timeout_ms / 1000);
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    return dl;
}

hs_status hs_engine_wait(struct hs_engine_handle *h, struct hs_engine_event *ev, int64_t timeout_ms)
{
    const struct timespec dl = hs__engine_deadline(timeout_ms);
    pthread_mutex_lock(&h->mu);
    hs_status st;
    while ((st = take_event(h, ev)) == HS_E_BUSY && timeout_ms != 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&h->cv, &h->mu);
        } else if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT) {
            st = take_event(h, ev);
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return st;
}

/* ---- submit (HTTP threads) ---- */

void hs_engine_request_init(struct hs_engine_request *r)
{
    memset(r, 0, sizeof(*r));
    r->n = 1;
    r->max_tokens = 16;
    r->sampling = hs_sampling_default_params();
    r->place = HS_PLACE_AUTO;
    r->long_context = -1;
}

static hs_status check_request(const struct hs_engine *e, const struct hs_engine_request *r,
                               struct hs_error *err)
{
    if (!r->prompt || r->n_prompt < 1) {
        return hs_error_set(err, HS_E_INVAL, "the prompt is empty");
    }
    if (r->n_prompt >= e->n_ctx) {
        return hs_error_set(err, HS_E_INVAL,
                            "the prompt has %d tokens; the context holds %d (prompt and at least "
                            "one generated token)",
                            r->n_prompt, e->n_ctx);
    }
    HS_TRY(hs__mm_check(e, r, err));
    for (int32_t i = 0; i < r->n_prompt; i++) {
        if (r->prompt[i] < 0 || r->prompt[i] >= e->n_vocab) {
            return hs_error_set(err, HS_E_INVAL, "prompt token %d at %d is outside the vocab",
                                r->prompt[i], i);
        }
    }
    if (r->n < 1 || r->n > HS_ENGINE_MAX_CHOICES) {
        return hs_error_set(err, HS_E_INVAL, "n must be in [1, %d], got %d", HS_ENGINE_MAX_CHOICES,
                            r->n);
    }
    if (r->n_stop < 0 || r->n_stop > HS_ENGINE_MAX_STOP || (r->n_stop > 0 && !r->stop)) {
        return hs_error_set(err, HS_E_INVAL, "at most %d stop strings, got %d", HS_ENGINE_MAX_STOP,
                            r->n_stop);
    }
    for (int32_t i = 0; i < r->n_stop; i++) {
        size_t n = r->stop[i] ? strlen(r->stop[i]) : 0;
        if (n < 1 || n > HS_ENGINE_MAX_STOP_BYTES) {
            return hs_error_set(err, HS_E_INVAL, "stop string %d must have 1 to %d bytes", i,
                                HS_ENGINE_MAX_STOP_BYTES);
        }
    }
    if (r->top_logprobs < 0 || r->top_logprobs > HS_ENGINE_MAX_TOP_LOGPROBS) {
        return hs_error_set(err, HS_E_INVAL, "top_logprobs must be in [0, %d], got %d",
                            HS_ENGINE_MAX_TOP_LOGPROBS, r->top_logprobs);
    }
    if (r->top_logprobs > 0 && !r->logprobs) {
        return hs_error_set(err, HS_E_INVAL, "top_logprobs needs logprobs");
    }
    if ((unsigned)r->place >= HS_PLACE_COUNT) {
        return hs_error_set(err, HS_E_INVAL, "unknown attention placement %d", (int)r->place);
    }
    return hs_sampling_params_check(&r->sampling, e->n_vocab, err);
}

/* The vocabulary's token trie, built by the first request with a grammar (any thread; the
 * engine thread never waits for it). */
static struct hs_token_trie *engine_trie(struct hs_engine *e)
{
    pthread_mutex_lock(&e->trie_mu);
    if (!e->trie && hs_token_trie_create(e->vocab, &e->trie) != HS_OK) {
        e->trie = NULL;
    }
    struct hs_token_trie *t = e->trie;
    pthread_mutex_unlock(&e->trie_mu);
    return t;
}

/* Wraps the choice's constraint (the grammar's, if any) in its thinking-block tracker, which
 * hands the grammar only the answer's tokens. */
static hs_status reasoning_install(const struct hs_engine *e, struct hs_engine_handle *h,
                                   struct seq *s)
{
    if (!h->reasoning.enabled) {
        return HS_OK;
    }
    struct hs_sampler_constraint inner = {0};
    if (s->gm) {
        inner = hs_grammar_matcher_constraint(s->gm);
    }
    if (hs_reasoning_init(&s->rs, &h->reasoning, s->gm ? &inner : NULL, e->vocab, h->n_vocab) !=
        HS_OK) {
        return HS_E_NOMEM;
    }
    const struct hs_sampler_constraint c = hs_reasoning_constraint(&s->rs);
    hs_sampler_set_constraint(s->smp, &c);
    return HS_OK;
}

/* Compiles r's grammar into h (grammar and cache; the choices' matchers come with their
 * samplers). HS_E_INVAL with err at a syntax error or a limit; HS_E_NOMEM. Thread: any. */
static hs_status grammar_init(struct hs_engine *e, struct hs_engine_handle *h,
                              const struct hs_engine_request *r, struct hs_error *err)
{
    struct hs_error gerr = {0};
    hs_status st = hs_grammar_parse(r->grammar, r->n_grammar, NULL, NULL, &h->grammar, &gerr);
    if (st == HS_E_NOMEM) {
        return hs_error_set(err, st, "out of memory");
    }
    if (st != HS_OK) {
        return hs_error_set(err, HS_E_INVAL, "grammar: %s", gerr.message);
    }
    struct hs_token_trie *trie = engine_trie(e);
    if (!trie) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory for the vocabulary's token trie");
    }
    st = hs_grammar_cache_create(h->grammar, trie, NULL, &h->grammar_cache);
    return st == HS_OK ? HS_OK : hs_error_set(err, st, "out of memory");
}

hs_status hs_engine_submit(struct hs_engine *e, const struct hs_engine_request *r,
                           struct hs_engine_handle **out, struct hs_error *err)
{
    *out = NULL;
    hs_status st = check_request(e, r, err);
    if (st != HS_OK) {
        return st;
    }
    struct hs_engine_handle *h = calloc(1, sizeof(*h));
    if (!h) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->nmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&h->refs, 2);
    atomic_init(&h->cancel, false);
    atomic_init(&h->done, false);
    h->id = r->id;
    h->notify = r->notify;
    h->notify_user = r->notify_user;
    h->n_choices = r->n;
    h->n_prompt = r->n_prompt;
    int32_t room = e->n_ctx - r->n_prompt;
    h->max_tokens = r->max_tokens <= 0 || r->max_tokens > room ? room : r->max_tokens;
    h->logprobs = r->logprobs;
    h->top_logprobs = r->top_logprobs;
    h->ignore_eos = r->ignore_eos;
    h->report_eos = r->report_eos;
    h->spec = e->spec_on && !r->no_speculation;
    h->place = r->place;
    h->long_context = r->long_context;
    h->cache_salt = r->cache_salt;
    h->client = r->client;
    if (hs_reasoning_params_check(&r->reasoning, e->n_vocab, err) != HS_OK) {
        handle_free(h);
        return HS_E_INVAL;
    }
    h->reasoning = r->reasoning;
    if (hs__mm_copy(e, h, r) != HS_OK) {
        handle_free(h);
        return hs_error_set(err, HS_E_NOMEM, "out of memory for the prompt's images");
    }
    h->n_vocab = e->n_vocab;
    h->usage.prompt_tokens = r->n_prompt;
    h->status = HS_OK;
    h->t_submit_ns = now_ns();
    int64_t tmo = r->timeout_ms == 0 ? e->timeout_ms : r->timeout_ms;
    /* A timeout past the int64 nanosecond range (~292 years) is no deadline, not an overflow. */
    bool bounded = tmo > 0 && tmo <= (INT64_MAX - h->t_submit_ns) / 1000000;
    h->deadline_ns = bounded ? h->t_submit_ns + tmo * 1000000 : 0;
    for (int32_t i = 0; i < r->n_stop; i++) {
        h->stop_len[i] = strlen(r->stop[i]);
        h->stop[i] = malloc(h->stop_len[i] + 1);
        if (!h->stop[i]) {
            goto nomem;
        }
        memcpy(h->stop[i], r->stop[i], h->stop_len[i] + 1);
        h->n_stop++;
    }
    if (r->grammar) {
        hs_status gst = grammar_init(e, h, r, err);
        if (gst != HS_OK) {
            handle_free(h);
            return gst;
        }
    }
    /* toks grows with the output (and, later, with drafts): a large max_tokens reserves nothing
     * up front */
    const size_t n_toks = (size_t)r->n_prompt + (size_t)HS_MIN(h->max_tokens, 256);
    for (int32_t c = 0; c < r->n; c++) {
        struct seq *s = &h->seqs[c];
        s->req = h;
        s->index = c;
        s->state = SEQ_WAITING;
        s->batch_slot = -1;
        s->toks = malloc(n_toks * sizeof(*s->toks));
        if (!s->toks) {
            goto nomem;
        }
        s->cap_toks = n_toks;
        memcpy(s->toks, r->prompt, (size_t)r->n_prompt * sizeof(*s->toks));
        s->n_all = r->n_prompt;
        struct hs_sampling_params sp = r->sampling;
        sp.seed += (uint64_t)c;
        if (hs_sampler_create(&sp, e->n_vocab, &s->smp) != HS_OK) {
            goto nomem;
        }
        for (int32_t i = 0; i < r->n_prompt; i++) {
            hs_sampler_accept(s->smp, r->prompt[i]);
        }
        if (h->grammar_cache) {
            /* after the prompt: the grammar constrains the output only */
            const hs_status gst = hs_grammar_matcher_create(h->grammar_cache, &s->gm);
            if (gst == HS_E_RANGE) {
                handle_free(h);
                return hs_error_set(err, HS_E_INVAL,
                                    "grammar: too ambiguous at its start (more ways to continue "
                                    "than the matcher keeps; stacked or nested repetitions such "
                                    "as x+++ multiply them)");
            }
            if (gst != HS_OK) {
                goto nomem;
            }
            const struct hs_sampler_constraint sc = hs_grammar_matcher_constraint(s->gm);
            hs_sampler_set_constraint(s->smp, &sc);
        }
        if (reasoning_install(e, h, s) != HS_OK) {
            goto nomem;
        }
        hs_detok_init(&s->dt, e->vocab, false);
    }

    pthread_mutex_lock(&e->mu);
    if (e->draining || e->stopping) {
        pthread_mutex_unlock(&e->mu);
        handle_free(h);
        return hs_error_set(err, HS_E_CANCELED, "the server is shutting down");
    }
    int32_t waiting =
        e->n_inflight - atomic_load_explicit(&e->m.n_running_req, memory_order_relaxed);
    if (waiting >= e->max_waiting) {
        pthread_mutex_unlock(&e->mu);
        INC(e->m.rejected, 1);
        handle_free(h);
        return hs_error_set(err, HS_E_BUSY, "%d requests are waiting already; retry later",
                            waiting);
    }
    if (e->in_tail) {
        e->in_tail->next_incoming = h;
    } else {
        e->in_head = h;
    }
    e->in_tail = h;
    e->n_inflight++;
    INC(e->m.submitted, 1);
    INC(e->m.prompt_tokens, (uint64_t)r->n_prompt);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    *out = h;
    return HS_OK;
nomem:
    handle_free(h);
    return hs_error_set(err, HS_E_NOMEM, "out of memory");
}
