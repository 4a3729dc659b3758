/* Speculative decoding from history (SuffixDecoding, arXiv 2411.04975; RhymeRL's HistoSpec,
 * arXiv 2508.18588): drafts come from suffix tries (server/suffix.h) over the sequence's own
 * prompt and output and over earlier responses (the same prompt's first), and are verified in
 * the same forward pass as every other sequence's decode.
 *
 * Data flow in a step: the scheduler builds the batch (sched.c); hs__spec_plan then extends
 * decode entries with drafts under the leftover token budget: a draft's token i is kept while
 * its estimated acceptance (the trie path's score times the sequence's recent acceptance rate)
 * pays for the row it adds under the cost model below, and while KV blocks can be reserved
 * without preempting anyone. The forward pass returns 1 + n_draft logit rows for such an entry;
 * hs__spec_verify walks them: row i either accepts draft token i (hs_sampler_verify: greedy
 * when it is the argmax, sampled with probability p(token) under the full chain, so the
 * output's distribution is that of plain decoding) and emits it through the normal output path
 * (stop strings, max_tokens, grammar, reasoning budget), or gives the correction token and
 * stops; after a fully accepted draft the last row gives a bonus token. KV of accepted positions
 * is committed one by one, the rest is rolled back (truncate to what was committed).
 *
 * Cost model: a step of R rows takes about a + b R (a: reading the weights and the step's fixed
 * work, b: one row's compute and sampling), fitted online from the steps' (rows, seconds) with
 * decaying weights, or held at the engine's spec_knee; only the knee a / b matters (at least 1).
 * Adding a draft token of acceptance probability q to a step producing E expected tokens in R
 * rows improves tokens per second iff q > E / (a / b + R): cheap while the batch is
 * memory-bound, near-certain drafts only once it is compute-bound.
 *
 * Draft length adapts per sequence: doubled after a fully accepted draft, halved after one
 * rejected before its middle.
 *
 * Owns the engine's draft store (earlier responses, bounded, LRU) and each sequence's own
 * suffix text. Thread: engine only, except hs__spec_create/destroy (create's and destroy's). */
#include "server/engine.h"
#include "server/engine-impl.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define SPEC_MIN_SCORE  0.02f /* drafts below this path score are not even considered */
#define SPEC_RATE_INIT  1.0f  /* optimistic: the first drafts teach it */
#define SPEC_KNEE_PRIOR 2.0   /* rows a step's fixed cost is worth before any measurement */
#define SPEC_DECAY      0.98  /* weight of the cost model's past per observation */
/* A draft is at most this many times as long as the context it matched (SuffixDecoding's
 * max_spec_factor): a path's counts say how often it went on, not how much evidence found it,
 * and a one-token match of an unrelated response scores as well as a long one of the same. */
#define SPEC_MATCH_FACTOR 2
/* Calibration of a source's scores: its drafts' expected and accepted tokens, decayed per draft
 * verified (a window of some 20 drafts) and per step (so that a source muted long ago is tried
 * again), over a prior of SPEC_CAL_PRIOR tokens as expected. */
#define SPEC_CAL_DECAY      0.95
#define SPEC_CAL_STEP_DECAY 0.999
#define SPEC_CAL_PRIOR      2.0

/* The store's gauges, after it changed. */
static void count_store(struct hs_engine *e)
{
    atomic_store_explicit(&e->m.spec_store_bytes, hs_suffix_store_bytes(e->spec_store),
                          memory_order_relaxed);
    atomic_store_explicit(&e->m.spec_store_responses,
                          (uint64_t)hs_suffix_store_n_responses(e->spec_store),
                          memory_order_relaxed);
}

/* Moves s's own trie's bytes (0 once destroyed) into the gauge of all of them. */
static void count_text(struct hs_engine *e, struct seq *s)
{
    const size_t now = s->sfx ? hs_suffix_text_bytes(s->sfx) : 0;
    if (now >= s->sfx_bytes) {
        INC(e->m.spec_text_bytes, now - s->sfx_bytes);
    } else {
        atomic_fetch_sub_explicit(&e->m.spec_text_bytes, s->sfx_bytes - now, memory_order_relaxed);
    }
    s->sfx_bytes = now;
}

hs_status hs__spec_create(struct hs_engine *e, const struct hs_engine_params *p)
{
    e->cm_fixed = p->spec_knee > 0.0;
    e->cm_knee = e->cm_fixed ? HS_MAX(1.0, p->spec_knee) : SPEC_KNEE_PRIOR;
    e->spec_on = p->spec_max_draft > 0;
    e->spec_max_draft = HS_MIN(p->spec_max_draft, HS_SUFFIX_MAX_DRAFT);
    if (!e->spec_on) {
        return HS_OK;
    }
    atomic_store_explicit(&e->m.spec_knee_milli, (uint64_t)(e->cm_knee * 1000.0),
                          memory_order_relaxed);
    const hs_status st = hs_suffix_store_create(p->spec_store_bytes, &e->spec_store);
    if (st == HS_OK) {
        count_store(e);
    }
    return st;
}

void hs__spec_destroy(struct hs_engine *e)
{
    hs_suffix_store_destroy(e->spec_store);
    e->spec_store = NULL;
}

/* ---- the cost model ---- */

void hs__spec_observe(struct hs_engine *e, int32_t rows, int64_t dt_ns)
{
    if (!e->spec_on || e->cm_fixed || rows <= 0 || dt_ns <= 0) {
        return;
    }
    const double x = rows;
    const double y = (double)dt_ns / 1e9;
    e->cm_w = e->cm_w * SPEC_DECAY + 1.0;
    e->cm_x = e->cm_x * SPEC_DECAY + x;
    e->cm_y = e->cm_y * SPEC_DECAY + y;
    e->cm_xx = e->cm_xx * SPEC_DECAY + x * x;
    e->cm_xy = e->cm_xy * SPEC_DECAY + x * y;
    const double mx = e->cm_x / e->cm_w;
    const double var = e->cm_xx / e->cm_w - mx * mx;
    if (e->cm_w < 8.0 || var < 0.25) {
        return; /* too few steps, or all of about one size: keep the knee we have */
    }
    const double my = e->cm_y / e->cm_w;
    const double b = (e->cm_xy / e->cm_w - mx * my) / var;
    const double a = my - b * mx;
    if (!(b > 0.0) || !isfinite(a)) {
        return;
    }
    /* a step reads every weight once whatever its rows: its fixed cost is worth a row at least */
    e->cm_knee = HS_MAX(1.0, HS_MIN(a / b, 512.0));
    atomic_store_explicit(&e->m.spec_knee_milli, (uint64_t)(e->cm_knee * 1000.0),
                          memory_order_relaxed);
}

/* ---- drafting ---- */

/* How many of the tokens source's scores expect its drafts actually get accepted (about 1 for an
 * honest source, near 0 for one whose drafts are all rejected). */
static double calibration(const struct hs_engine *e, enum hs_suffix_source src)
{
    return (e->cal_accepted[src] + SPEC_CAL_PRIOR) / (e->cal_expect[src] + SPEC_CAL_PRIOR);
}

/* Estimated probability that tokens 0..i of d are accepted: the path's score, calibrated to what
 * its source delivers, times the sequence's recent acceptance. */
static double accept_prob(const struct hs_engine *e, const struct seq *s,
                          const struct hs_suffix_draft *d, int32_t i)
{
    return HS_MIN(1.0, (double)d->score[i] * calibration(e, d->source)) * s->spec_rate;
}

/* Cuts d to max(1, SPEC_MATCH_FACTOR x its match) tokens, and weighs its expected tokens by its
 * source's calibration: what choosing it is worth. */
static double weigh(const struct hs_engine *e, struct hs_suffix_draft *d)
{
    const int32_t n = HS_MIN(d->n_tokens, HS_MAX(1, SPEC_MATCH_FACTOR * d->match_len));
    if (n < d->n_tokens) {
        d->n_tokens = n;
        d->expected = 0.0f;
        for (int32_t i = 0; i < n; i++) {
            d->expected += d->score[i];
        }
    }
    return (double)d->expected * calibration(e, d->source);
}

/* The sequence's best draft of at most max_d tokens from its own text and the store, from the
 * sources whose drafts may reach an acceptance probability of min_q (the others are not even
 * looked up: a muted source costs nothing). */
static void propose(struct hs_engine *e, struct seq *s, int32_t max_d, double min_q,
                    struct hs_suffix_draft *d)
{
    struct hs_engine_handle *h = s->req;
    d->n_tokens = 0;
    d->expected = 0.0f;
    if (!h->spec_keyed) {
        h->spec_keyed = true;
        h->prompt_key = hs_suffix_prompt_key(h->cache_salt, s->toks, h->n_prompt);
        hs_suffix_store_touch(e->spec_store, h->prompt_key);
    }
    if (!s->sfx && hs_suffix_text_create(0, &s->sfx) != HS_OK) {
        s->sfx = NULL;
    }
    const double rate = s->spec_rate;
    double best = 0.0;
    if (s->sfx) {
        const int32_t have = hs_suffix_text_n_tokens(s->sfx);
        /* out of memory leaves the text short of its newest substrings, still valid */
        (void)hs_suffix_text_append(s->sfx, s->toks + have, s->n_all - have);
        count_text(e, s);
        if (HS_MIN(1.0, calibration(e, HS_SUFFIX_SOURCE_REQUEST)) * rate >= min_q) {
            hs_suffix_text_draft(s->sfx, s->toks, max_d, SPEC_MIN_SCORE, d);
            best = weigh(e, d);
        }
    }
    static const enum hs_suffix_source store_srcs[] = {HS_SUFFIX_SOURCE_PROMPT,
                                                       HS_SUFFIX_SOURCE_GLOBAL};
    for (size_t i = 0; i < HS_ARRAY_LEN(store_srcs); i++) {
        if (HS_MIN(1.0, calibration(e, store_srcs[i])) * rate < min_q) {
            continue; /* a score is at most 1: no draft of it could pay */
        }
        struct hs_suffix_draft g;
        hs_suffix_store_draft_from(e->spec_store, store_srcs[i], h->cache_salt, h->prompt_key,
                                   s->toks, s->n_all, max_d, SPEC_MIN_SCORE, &g);
        const double w = weigh(e, &g);
        if (w > best) {
            best = w;
            *d = g;
        }
    }
}

void hs__spec_plan(struct hs_engine *e, int32_t n)
{
    e->step_drafted = e->step_accepted = 0;
    if (!e->spec_on) {
        return;
    }
    for (int32_t i = 0; i < HS_SUFFIX_SOURCE_COUNT; i++) {
        e->cal_expect[i] *= SPEC_CAL_STEP_DECAY;
        e->cal_accepted[i] *= SPEC_CAL_STEP_DECAY;
    }
    int32_t rows = 0;
    double expect = 0.0; /* tokens this step is expected to produce */
    for (int32_t j = 0; j < n; j++) {
        const struct seq *s = e->batch[j];
        rows += e->batch_n[j];
        expect += hs_kv_seq_n_tokens(s->kv) + e->batch_n[j] == s->n_all;
    }
    int32_t budget = e->n_batch - rows;
    struct hs_suffix_draft d;
    for (int32_t j = 0; j < n && budget > 0; j++) {
        struct seq *s = e->batch[j];
        const struct hs_engine_handle *h = s->req;
        s->n_draft = 0;
        if (!h->spec || e->batch_n[j] != 1 || hs_kv_seq_n_tokens(s->kv) + 1 != s->n_all) {
            continue; /* only decodes speculate */
        }
        if (s->spec_len == 0) {
            s->spec_len = e->spec_max_draft;
            s->spec_rate = SPEC_RATE_INIT;
        }
        /* nothing past the context, nor past max_tokens (the last token emitted is never a
         * draft's) */
        int32_t max_d = HS_MIN(s->spec_len, budget);
        max_d = HS_MIN(max_d, e->n_ctx - s->n_all);
        max_d = HS_MIN(max_d, h->max_tokens - s->n_gen - 1);
        if (max_d <= 0) {
            continue;
        }
        /* the first draft token pays iff q (knee + rows) >= expect (see the top) */
        propose(e, s, max_d, expect / (e->cm_knee + rows), &d);
        const double expect0 = expect;
        int32_t k = 0;
        float pred = 0.0f;
        for (; k < d.n_tokens; k++) {
            const double q = accept_prob(e, s, &d, k);
            if (q * (e->cm_knee + rows) < expect) {
                break;
            }
            expect += q;
            rows++;
            pred += d.score[k];
        }
        if (k == 0) {
            continue;
        }
        if (!hs__grow((void **)&s->toks, &s->cap_toks, (size_t)s->n_all + (size_t)k,
                      sizeof(*s->toks)) ||
            hs_kv_seq_reserve(e->pools[s->store], s->kv, 1 + k) != HS_OK) {
            rows -= k; /* no room: this one decodes plainly */
            expect = expect0;
            continue;
        }
        memcpy(s->toks + s->n_all, d.tokens, (size_t)k * sizeof(*s->toks));
        s->n_draft = k;
        s->draft_src = d.source;
        s->draft_expect = pred;
        e->batch_n[j] += k;
        budget -= k;
        e->step_drafted += k;
    }
}

/* ---- verification ---- */

/* Commits the KV of one more position (its token t) of s. */
static hs_status commit(struct hs_engine *e, struct seq *s, hs_token t)
{
    return hs_kv_seq_append_tokens(e->pools[s->store], s->kv, &t, 1);
}

void hs__spec_verify(struct hs_engine *e, struct seq *s, const float *lg, int64_t t_ns)
{
    const int32_t k = s->n_draft;
    const enum hs_suffix_source src = s->draft_src;
    s->n_draft = 0;
    const int32_t n_past = hs_kv_seq_n_tokens(s->kv);
    /* the draft, copied before emitting writes over it */
    hs_token draft[HS_SUFFIX_MAX_DRAFT];
    memcpy(draft, s->toks + s->n_all, (size_t)k * sizeof(*draft));
    hs_status st = commit(e, s, s->toks[n_past]);
    if (st != HS_OK) {
        hs__output_finish_seq(e, s, HS_FINISH_ERROR, st);
        return;
    }
    int32_t acc = 0;
    enum hs_finish_reason why = HS_FINISH_NONE;
    for (int32_t i = 0; i <= k; i++) {
        const float *row = lg + (size_t)i * (size_t)e->n_vocab;
        bool accepted = false;
        hs_token t = i < k ? hs__output_verify(s, row, draft[i], &accepted, &st)
                           : hs__output_sample(s, row, &st);
        if (t < -1) {
            why = HS_FINISH_ERROR;
            break;
        }
        if (accepted) {
            acc++;
            /* its KV (written at the draft's position) is right: keep it before emitting, which
             * may end the sequence */
            st = commit(e, s, t);
            if (st != HS_OK) {
                why = HS_FINISH_ERROR;
                break;
            }
        }
        why = hs__output_emit(e, s, t, row, t_ns, &st);
        if (why != HS_FINISH_NONE || !accepted) {
            break;
        }
    }
    INC(e->m.spec_drafts[src], 1);
    INC(e->m.spec_drafted[src], (uint64_t)k);
    INC(e->m.spec_accepted[src], (uint64_t)acc);
    e->step_accepted += acc;
    e->cal_expect[src] = e->cal_expect[src] * SPEC_CAL_DECAY + s->draft_expect;
    e->cal_accepted[src] = e->cal_accepted[src] * SPEC_CAL_DECAY + acc;
    s->spec_rate = 0.7f * s->spec_rate + 0.3f * (float)acc / (float)k;
    if (acc == k) {
        s->spec_len = HS_MIN(2 * s->spec_len, e->spec_max_draft);
    } else if (2 * acc < k) {
        s->spec_len = HS_MAX(1, s->spec_len / 2);
    }
    if (why != HS_FINISH_NONE) {
        hs__output_finish_seq(e, s, why, st);
        return;
    }
    /* roll back the rejected positions: drop the blocks reserved past what was committed */
    struct hs_kv_block_copy cp;
    st = hs_kv_seq_truncate(e->pools[s->store], s->kv, hs_kv_seq_n_tokens(s->kv), &cp);
    HS_ASSERT(st == HS_OK && cp.src < 0); /* the count is the current one: nothing to copy */
    HS_ASSERT(hs_kv_seq_n_tokens(s->kv) + 1 == s->n_all);
}

void hs__spec_seq_end(struct hs_engine *e, struct seq *s, enum hs_finish_reason why)
{
    s->n_draft = 0;
    hs_suffix_text_destroy(s->sfx);
    s->sfx = NULL;
    count_text(e, s);
    const struct hs_engine_handle *h = s->req;
    if (!e->spec_store || s->state == SEQ_FINISHED ||
        (why != HS_FINISH_STOP && why != HS_FINISH_LENGTH) || s->n_all <= h->n_prompt) {
        return;
    }
    const uint64_t key =
        h->spec_keyed ? h->prompt_key : hs_suffix_prompt_key(h->cache_salt, s->toks, h->n_prompt);
    /* out of memory: the response is simply not remembered */
    (void)hs_suffix_store_add(e->spec_store, h->cache_salt, key, s->toks, h->n_prompt,
                              s->toks + h->n_prompt, s->n_all - h->n_prompt);
    count_store(e);
}
