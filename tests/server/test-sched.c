/* Scheduling of long outputs: the output length predictor (server/lengthpred.h), the LENGTH
 * admission order with its fairness bound, and segments (a long generation yields its slot to
 * waiting requests and comes back on its own KV) — on the trained stories260K model, where
 * segments must never change a greedy result's tokens or logprobs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"
#include "server/lengthpred.h"

/* ---- the predictor ---- */

static struct hs_lengthpred_key key(uint64_t prompt, uint64_t client, int32_t max_tokens)
{
    return (struct hs_lengthpred_key){.prompt_hash = prompt,
                                      .client = client,
                                      .mode = HS_LENGTHPRED_MODE_PLAIN,
                                      .budget_tokens = -1,
                                      .max_tokens = max_tokens};
}

Test(lengthpred, falls_back_from_prompt_to_client_to_mode_to_prior)
{
    struct hs_lengthpred *p = NULL;
    cr_assert_eq(hs_lengthpred_create(64, &p), HS_OK);
    enum hs_lengthpred_source src;
    struct hs_lengthpred_key a = key(1111, 7, 4096);
    cr_assert_eq(hs_lengthpred_predict(p, &a, &src), HS_LENGTHPRED_PRIOR_TOKENS);
    cr_assert_eq(src, HS_LENGTHPRED_PRIOR);
    struct hs_lengthpred_key small = key(1111, 7, 20);
    cr_assert_eq(hs_lengthpred_predict(p, &small, &src), 20, "capped by max_tokens");
    small.ignore_eos = true;
    cr_assert_eq(hs_lengthpred_predict(p, &small, &src), 20);
    cr_assert_eq(src, HS_LENGTHPRED_EXACT);

    for (int i = 0; i < 3; i++) {
        hs_lengthpred_record(p, &a, 40 + i); /* mean 41 */
    }
    cr_assert_eq(hs_lengthpred_predict(p, &a, &src), 41);
    cr_assert_eq(src, HS_LENGTHPRED_PROMPT);
    /* another prompt of the same client: the client's history */
    struct hs_lengthpred_key b = key(2222, 7, 4000);
    hs_lengthpred_record(p, &b, 1000);
    struct hs_lengthpred_key c = key(3333, 7, 3000); /* same max_tokens bucket (2048, 4096] */
    cr_assert_eq(hs_lengthpred_predict(p, &c, &src), (41 * 3 + 1000) / 4 + 1, "mean of 4");
    cr_assert_eq(src, HS_LENGTHPRED_CLIENT);
    /* another client: any request of the mode and bucket */
    struct hs_lengthpred_key d = key(3333, 8, 4096);
    cr_assert_eq(src, HS_LENGTHPRED_CLIENT);
    hs_lengthpred_predict(p, &d, &src);
    cr_assert_eq(src, HS_LENGTHPRED_MODE);
    /* thinking requests are their own workload */
    d.mode = HS_LENGTHPRED_MODE_THINK;
    cr_assert_eq(hs_lengthpred_predict(p, &d, &src), HS_LENGTHPRED_PRIOR_TOKENS);
    cr_assert_eq(src, HS_LENGTHPRED_PRIOR);
    /* a key's history follows a drift: after many long answers, it predicts long */
    for (int i = 0; i < 40; i++) {
        hs_lengthpred_record(p, &a, 900);
    }
    int32_t v = hs_lengthpred_predict(p, &a, &src);
    cr_assert(v > 850 && v <= 900, "drifted prediction %d", v);
    hs_lengthpred_destroy(p);
}

Test(lengthpred, memory_stays_fixed_whatever_the_keys)
{
    struct hs_lengthpred *p = NULL;
    cr_assert_eq(hs_lengthpred_create(100, &p), HS_OK);
    const size_t bytes = hs_lengthpred_bytes(p);
    cr_assert_leq(bytes, 3 * 128 * 16 + 64, "%zu bytes for 128 slots a table", bytes);
    for (uint64_t i = 0; i < 100000; i++) {
        struct hs_lengthpred_key k = key(i * 2654435761u, i % 977, (int32_t)(i % 5000) + 1);
        hs_lengthpred_record(p, &k, (int32_t)(i % 300));
        enum hs_lengthpred_source src;
        const int32_t v = hs_lengthpred_predict(p, &k, &src);
        cr_assert(v >= 1 && v <= k.max_tokens);
    }
    cr_assert_eq(hs_lengthpred_bytes(p), bytes);
    hs_lengthpred_destroy(p);
}

/* ---- the engine ---- */

#define MAX_GEN 512

static struct hs_model *load_model(void)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert(dir, "HS_MODELS_DIR is not set");
    char path[1024];
    snprintf(path, sizeof(path), "%s/stories260K.gguf", dir);
    struct hs_model *m = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_model_load(path, &m, &err), HS_OK, "%s: %s", path, err.message);
    return m;
}

static int tokenize(const struct hs_model *m, const char *text, hs_token *out, int cap)
{
    size_t n = 0;
    cr_assert_eq(
        hs_tokenize(hs_model_vocab(m), text, strlen(text), true, false, out, (size_t)cap, &n),
        HS_OK);
    return (int)n;
}

struct out {
    hs_token toks[MAX_GEN];
    float lp[MAX_GEN];
    int n;
    enum hs_finish_reason fin;
    double ttft_ms, e2e_ms;
    bool done;
};

/* Takes what is there without blocking; true once DONE was taken. */
static bool drain(struct hs_engine_handle *h, struct out *o)
{
    struct hs_engine_event ev;
    while (!o->done && hs_engine_poll(h, &ev) == HS_OK) {
        if (ev.type == HS_EVENT_DONE) {
            cr_assert_eq(ev.status, HS_OK);
            o->done = true;
            o->ttft_ms = ev.ttft_ms;
            o->e2e_ms = ev.e2e_ms;
            break;
        }
        if (ev.choice != 0) {
            continue; /* the blocker's other choices: only consumed */
        }
        for (int i = 0; i < ev.n_tokens; i++) {
            cr_assert(o->n < MAX_GEN);
            o->lp[o->n] = ev.logprobs ? ev.logprobs[i].logprob : 0.0f;
            o->toks[o->n++] = ev.tokens[i];
        }
        if (ev.finish_reason != HS_FINISH_NONE) {
            o->fin = ev.finish_reason;
        }
    }
    return o->done;
}

static void wait_done(struct hs_engine_handle *h, struct out *o)
{
    for (int i = 0; i < 60000 && !drain(h, o); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert(o->done, "no DONE within 60 s");
}

struct engine_cfg {
    int n_parallel, n_ctx, n_blocks;
    enum hs_sched_order order;
    int fair_wait_ms, segment_tokens;
};

static struct hs_engine *make_engine(struct hs_model *m, const struct engine_cfg *c)
{
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = c->n_parallel;
    p.n_ctx = c->n_ctx;
    p.n_kv_blocks = c->n_blocks;
    p.n_batch_tokens = 64;
    p.kv_type = HS_TYPE_F32;
    p.n_threads = 1;
    p.order = c->order;
    p.fair_wait_ms = c->fair_wait_ms;
    p.segment_tokens = c->segment_tokens;
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_create(m, &p, &e, &err), HS_OK, "%s", err.message);
    return e;
}

static struct hs_engine_handle *submit(struct hs_engine *e, const hs_token *prompt, int n_prompt,
                                       int max_tokens, bool ignore_eos)
{
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = prompt;
    rq.n_prompt = n_prompt;
    rq.max_tokens = max_tokens;
    rq.ignore_eos = ignore_eos;
    rq.logprobs = true;
    rq.sampling.temperature = 0;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    return h;
}

static const char *const texts[6] = {
    "Once upon a time",        "Lily and Tom went to the park", "The little dog was sad because",
    "One day, a big red ball", "Tim saw a bird in the sky. He", "Mom said to Sue",
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* A blocker runs (n_parallel 1: its 6 choices one after another, far longer than a
 * millisecond) while three requests of exact lengths 60, 12 and 36 queue behind it in that
 * order; writes the order in which they got their first token (submission time + TTFT: on a
 * loaded machine the submitting thread may be descheduled between two submissions for longer
 * than a request runs, so TTFTs alone, each from its own arrival, need not be in that order).
 * Returns false, judging nothing, when the blocker had finished before all three were queued. */
static bool admission_order(struct hs_model *m, enum hs_sched_order order, int fair_wait_ms,
                            int first[3])
{
    const struct engine_cfg c = {1, 512, 0, order, fair_wait_ms, 0};
    struct hs_engine *e = make_engine(m, &c);
    hs_token p[4][64];
    int n[4];
    for (int i = 0; i < 4; i++) {
        n[i] = tokenize(m, texts[i], p[i], 64);
    }
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p[3];
    rq.n_prompt = n[3];
    rq.max_tokens = 300;
    rq.ignore_eos = true;
    rq.n = 6;
    struct hs_engine_handle *blocker = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &blocker, &err), HS_OK, "%s", err.message);
    struct out *ob = calloc(1, sizeof(*ob));
    while (ob->n == 0) { /* the blocker runs: the others surely queue */
        drain(blocker, ob);
    }
    static const int lens[3] = {60, 12, 36};
    struct hs_engine_handle *h[3];
    double first_at[3];
    for (int i = 0; i < 3; i++) {
        first_at[i] = now_ms();
        h[i] = submit(e, p[i], n[i], lens[i], true);
    }
    const bool queued = !drain(blocker, ob);
    wait_done(blocker, ob);
    for (int i = 0; i < 3; i++) {
        struct out *o = calloc(1, sizeof(*o));
        wait_done(h[i], o);
        cr_assert_eq(o->n, lens[i]);
        first_at[i] += o->ttft_ms;
        free(o);
        hs_engine_release(h[i]);
    }
    for (int k = 0; k < 3; k++) { /* rank by first token */
        int r = 0;
        for (int j = 0; j < 3; j++) {
            r += first_at[j] < first_at[k];
        }
        first[r] = k;
    }
    hs_engine_release(blocker);
    free(ob);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.length_error.count, 6 + 3, "every finished choice's error is observed");
    cr_assert_eq(mt.length_abs_error_tokens, 0, "ignore_eos lengths are known exactly");
    cr_assert_eq(mt.predicted_tokens, 6 * 300 + 60 + 12 + 36);
    hs_engine_destroy(e);
    return queued;
}

/* admission_order until the three queued behind the blocker (a few tries). */
static void admission_order_queued(struct hs_model *m, enum hs_sched_order order, int fair_wait_ms,
                                   int first[3])
{
    bool queued = false;
    for (int t = 0; t < 5 && !queued; t++) {
        queued = admission_order(m, order, fair_wait_ms, first);
    }
    cr_assert(queued, "the blocker finished before the three requests were queued, 5 times");
}

Test(sched, length_order_admits_the_shortest_predicted_first)
{
    struct hs_model *m = load_model();
    int first[3];
    admission_order_queued(m, HS_SCHED_FIFO, 0, first);
    cr_assert(first[0] == 0 && first[1] == 1 && first[2] == 2, "fifo: %d %d %d", first[0], first[1],
              first[2]);
    admission_order_queued(m, HS_SCHED_LENGTH, 600000, first);
    cr_assert(first[0] == 1 && first[1] == 2 && first[2] == 0, "length: %d %d %d", first[0],
              first[1], first[2]);
    hs_model_destroy(m);
}

Test(sched, fairness_bound_admits_the_oldest_first_once_passed)
{
    /* every waiting request is overdue after 1 ms (the blocker runs far longer): oldest first */
    struct hs_model *m = load_model();
    int first[3];
    admission_order_queued(m, HS_SCHED_LENGTH, 1, first);
    cr_assert(first[0] == 0 && first[1] == 1 && first[2] == 2, "length, 1 ms bound: %d %d %d",
              first[0], first[1], first[2]);
    hs_model_destroy(m);
}

/* Two long generations (ignore_eos) run; once each has made `after` tokens short ones arrive.
 * Returns the outputs; with segments and a pool with room for all, checks that every short
 * request finished while both long ones were still generating. */
enum { N_LONG = 2, N_SHORT = 4, LONG_TOK = 240, SHORT_TOK = 10 };

static void long_and_short(struct hs_model *m, const struct engine_cfg *c, int after,
                           struct out outs[N_LONG + N_SHORT], struct hs_engine_metrics *mt)
{
    struct hs_engine *e = make_engine(m, c);
    hs_token p[N_LONG + N_SHORT][64];
    int n[N_LONG + N_SHORT];
    struct hs_engine_handle *h[N_LONG + N_SHORT];
    for (int i = 0; i < N_LONG + N_SHORT; i++) {
        n[i] = tokenize(m, texts[i], p[i], 64);
    }
    for (int i = 0; i < N_LONG; i++) {
        h[i] = submit(e, p[i], n[i], LONG_TOK, true);
    }
    while (outs[0].n < after || outs[1].n < after) {
        drain(h[0], &outs[0]);
        drain(h[1], &outs[1]);
    }
    for (int i = N_LONG; i < N_LONG + N_SHORT; i++) {
        h[i] = submit(e, p[i], n[i], SHORT_TOK, false);
    }
    for (int i = N_LONG; i < N_LONG + N_SHORT; i++) {
        wait_done(h[i], &outs[i]);
        drain(h[0], &outs[0]);
        drain(h[1], &outs[1]);
        if (c->segment_tokens > 0 && c->n_blocks == 0) { /* a pool with room for all */
            cr_assert(!outs[0].done && !outs[1].done,
                      "short request %d waited for a long one to finish", i);
            cr_assert(outs[0].n < LONG_TOK && outs[1].n < LONG_TOK);
        } else if (c->n_blocks == 0) {
            cr_assert(outs[0].done || outs[1].done, "without segments no slot frees earlier");
        }
    }
    for (int i = 0; i < N_LONG; i++) {
        wait_done(h[i], &outs[i]);
    }
    for (int i = 0; i < N_LONG + N_SHORT; i++) {
        hs_engine_release(h[i]);
    }
    hs_engine_get_metrics(e, mt);
    cr_assert_eq(mt->kv_blocks_used, 0);
    hs_engine_destroy(e);
}

static void assert_same(const struct out *a, const struct out *b, const char *what, int i)
{
    cr_assert_eq(a->n, b->n, "%s %d: %d tokens vs %d", what, i, a->n, b->n);
    cr_assert_eq(a->fin, b->fin, "%s %d: finish", what, i);
    for (int k = 0; k < a->n; k++) {
        cr_assert_eq(a->toks[k], b->toks[k], "%s %d: token %d: %d vs %d", what, i, k, a->toks[k],
                     b->toks[k]);
        cr_assert_float_eq(a->lp[k], b->lp[k], 1e-6f, "%s %d: logprob %d", what, i, k);
    }
}

static void segments_match(const struct engine_cfg *off, const struct engine_cfg *on, int after,
                           bool expect_evictions)
{
    struct hs_model *m = load_model();
    struct out *base = calloc(N_LONG + N_SHORT, sizeof(*base));
    struct out *seg = calloc(N_LONG + N_SHORT, sizeof(*seg));
    struct hs_engine_metrics m_off, m_on;
    /* Whether a parked sequence's blocks get taken depends on how far the long generations got
     * before this thread saw their 'after' tokens and sent the short ones: on a loaded machine the
     * engine runs ahead and the pool may never be short while one is parked. Every attempt must
     * give the same outputs; at least one of up to 8 must have evicted. */
    for (int attempt = 0; attempt < 8; attempt++) {
        memset(base, 0, (N_LONG + N_SHORT) * sizeof(*base));
        memset(seg, 0, (N_LONG + N_SHORT) * sizeof(*seg));
        long_and_short(m, off, after, base, &m_off);
        long_and_short(m, on, after, seg, &m_on);
        for (int i = 0; i < N_LONG + N_SHORT; i++) {
            assert_same(&seg[i], &base[i], i < N_LONG ? "long" : "short", i);
        }
        cr_assert_eq(m_off.segment_yields, 0);
        cr_assert_gt(m_on.segment_yields, 0);
        cr_assert_eq(m_on.segment_resumes + m_on.segment_evictions, m_on.segment_yields,
                     "every parked sequence came back: %llu yields, %llu resumes, %llu evictions",
                     (unsigned long long)m_on.segment_yields,
                     (unsigned long long)m_on.segment_resumes,
                     (unsigned long long)m_on.segment_evictions);
        if (!expect_evictions || m_on.segment_evictions > 0) {
            break;
        }
    }
    if (expect_evictions) {
        cr_assert_gt(m_on.segment_evictions, 0, "the pool was never short in 8 attempts");
    } else {
        cr_assert_eq(m_on.segment_evictions, 0);
        cr_assert_eq(m_on.recomputed_tokens, 0, "segments recomputed tokens");
    }
    free(base);
    free(seg);
    hs_model_destroy(m);
}

Test(sched, segments_let_short_requests_in_and_change_no_token)
{
    const struct engine_cfg off = {2, 512, 0, HS_SCHED_FIFO, 0, 0};
    struct engine_cfg on = off;
    on.segment_tokens = 16;
    segments_match(&off, &on, 4, false);
    on.order = HS_SCHED_LENGTH;
    on.fair_wait_ms = 600000;
    segments_match(&off, &on, 4, false);
}

Test(sched, segments_under_block_pressure_give_parked_blocks_back)
{
    /* 22 blocks of 16 tokens: the two long generations hold 20 of them when the short requests
     * arrive, and cannot both finish without preemption */
    const struct engine_cfg off = {2, 320, 22, HS_SCHED_FIFO, 0, 0};
    struct engine_cfg on = off;
    on.segment_tokens = 16;
    segments_match(&off, &on, 150, true);
}
