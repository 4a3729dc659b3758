/* The serving engine against a naive single-sequence greedy loop (hs_model_forward + argmax +
 * float64 log-softmax), on the trained stories260K model: batching, chunked prefill, prefix
 * caching and preemption must never change a greedy result; stop strings cut exactly;
 * cancellation, timeouts, queue limits and drain behave as engine.h says. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/cli.h"
#include "server/engine.h"
#include "tests/server/engine-fixtures.h"

static struct hs_model *load_model(void)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert(dir, "HS_MODELS_DIR is not set");
    char path[1024];
    snprintf(path, sizeof(path), "%s/stories260K.gguf", dir);
    return load_file(path);
}

/* ---- naive reference: one sequence, whole prompt, argmax (lowest id on ties) ---- */

struct ref {
    hs_token toks[MAX_GEN];
    double lp[MAX_GEN]; /* log-softmax of the chosen token */
    int n;              /* generated, EOS excluded */
    bool eos;           /* ended on EOS */
    char text[TEXT_CAP];
    size_t n_text;
};

static void ref_greedy(struct hs_model *m, const hs_token *prompt, int n_prompt, int max_tokens,
                       bool ignore_eos, struct ref *r)
{
    memset(r, 0, sizeof(*r));
    const int n_ctx = 512;
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = n_ctx;
    cp.kv_type = HS_TYPE_F32;
    cp.backend_params.n_threads = 1;
    struct hs_context *ctx = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_context_create(m, &cp, &ctx, &err), HS_OK, "%s", err.message);
    int32_t table[512 / 16];
    for (int i = 0; i < 512 / 16; i++) {
        table[i] = i;
    }
    hs_token *all = malloc(sizeof(hs_token) * (size_t)(n_prompt + max_tokens + 1));
    memcpy(all, prompt, sizeof(hs_token) * (size_t)n_prompt);
    const int32_t n_vocab = hs_model_hparams(m)->n_vocab;
    const struct hs_vocab *v = hs_model_vocab(m);
    struct hs_forward_seq fs = {all, n_prompt, 0, table, 1, 0};
    cr_assert_eq(hs_model_forward(ctx, &fs, 1), HS_OK);
    int n_all = n_prompt;
    struct hs_detok dt;
    hs_detok_init(&dt, v, false);
    char piece[1024];
    for (int step = 0; step < max_tokens; step++) {
        const float *lg = hs_context_logits(ctx);
        int best = 0;
        double mx = -INFINITY;
        for (int i = 0; i < n_vocab; i++) {
            if ((double)lg[i] > mx) {
                mx = lg[i];
                best = i;
            }
        }
        double sum = 0;
        for (int i = 0; i < n_vocab; i++) {
            sum += exp((double)lg[i] - mx);
        }
        if (!ignore_eos && hs_vocab_is_eog(v, best)) {
            r->eos = true;
            break;
        }
        r->lp[r->n] = (double)lg[best] - mx - log(sum);
        r->toks[r->n++] = best;
        size_t k = hs_detok_push(&dt, best, piece, sizeof(piece));
        memcpy(r->text + r->n_text, piece, k);
        r->n_text += k;
        all[n_all++] = best;
        if (step + 1 == max_tokens) {
            break;
        }
        fs = (struct hs_forward_seq){all + n_all - 1, 1, n_all - 1, table, 1, 0};
        cr_assert_eq(hs_model_forward(ctx, &fs, 1), HS_OK);
    }
    r->n_text += hs_detok_flush(&dt, r->text + r->n_text, TEXT_CAP - r->n_text);
    r->text[r->n_text] = '\0';
    free(all);
    hs_context_destroy(ctx);
}

/* ---- engine side ---- */

/* A greedy request of max_tokens tokens after prompt[n_prompt], the rest as defaults. */
static void greedy_request(struct hs_engine_request *rq, const hs_token *prompt, int n_prompt,
                           int max_tokens)
{
    hs_engine_request_init(rq);
    rq->prompt = prompt;
    rq->n_prompt = n_prompt;
    rq->max_tokens = max_tokens;
    rq->sampling.temperature = 0;
}

static struct hs_engine_handle *submit(struct hs_engine *e, const hs_token *prompt, int n_prompt,
                                       int max_tokens, bool ignore_eos)
{
    struct hs_engine_request rq;
    greedy_request(&rq, prompt, n_prompt, max_tokens);
    rq.ignore_eos = ignore_eos;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    cr_assert_not_null(h);
    return h;
}

static void assert_same_as_ref(const struct result *r, int c, const struct ref *ref, int max_tokens,
                               const char *what)
{
    cr_assert_eq(r->n_toks[c], ref->n, "%s: %d tokens, alone %d", what, r->n_toks[c], ref->n);
    for (int i = 0; i < ref->n; i++) {
        cr_assert_eq(r->toks[c][i], ref->toks[i], "%s: token %d is %d, alone %d", what, i,
                     r->toks[c][i], ref->toks[i]);
    }
    cr_assert_eq(r->n_text[c], ref->n_text, "%s: text '%.*s' vs alone '%s'", what,
                 (int)r->n_text[c], r->text[c], ref->text);
    cr_assert(!memcmp(r->text[c], ref->text, ref->n_text), "%s: text differs", what);
    cr_assert_eq(r->n_final[c], 1);
    enum hs_finish_reason want = ref->eos ? HS_FINISH_STOP : HS_FINISH_LENGTH;
    cr_assert_eq(r->fin[c], want, "%s: finish %s, expected %s", what,
                 hs_finish_reason_str(r->fin[c]), hs_finish_reason_str(want));
    (void)max_tokens;
}

/* ---- tests ---- */

Test(engine, batching_never_changes_greedy_results)
{
    enum { N = 32, MAX_TOK = 40 };
    struct hs_model *m = load_model();
    static hs_token prompts[N][64];
    static int n_prompt[N];
    static struct ref refs[N];
    for (int i = 0; i < N; i++) {
        n_prompt[i] = make_prompt(m, i, prompts[i], 64);
        ref_greedy(m, prompts[i], n_prompt[i], MAX_TOK, false, &refs[i]);
    }
    int longest = 0;
    for (int i = 0; i < N; i++) {
        longest = HS_MAX(longest, n_prompt[i]);
    }
    cr_assert_gt(longest, 2 * 12, "some prompt needs three chunks");
    /* 8 running at once, a 12-token budget: prompts are prefilled in chunks beside decodes */
    struct hs_engine *e = make_engine(m, 8, 256, 0, 12);
    struct hs_engine_handle *h[N];
    for (int i = 0; i < N; i++) {
        h[i] = submit(e, prompts[i], n_prompt[i], MAX_TOK, false);
    }
    struct result *r = calloc(1, sizeof(*r));
    int total_completion = 0, total_prompt = 0;
    for (int i = 0; i < N; i++) {
        memset(r, 0, sizeof(*r));
        collect(h[i], r);
        char what[32];
        snprintf(what, sizeof(what), "request %d", i);
        assert_same_as_ref(r, 0, &refs[i], MAX_TOK, what);
        cr_assert_eq(r->status, HS_OK);
        cr_assert_eq(r->usage.prompt_tokens, n_prompt[i]);
        cr_assert_eq(r->usage.completion_tokens, refs[i].n + (refs[i].eos ? 1 : 0));
        total_completion += r->usage.completion_tokens;
        total_prompt += n_prompt[i];
        hs_engine_release(h[i]);
    }
    wait_idle(e);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.requests_submitted, N);
    cr_assert_eq(mt.generation_tokens, (uint64_t)total_completion);
    cr_assert_eq(mt.prompt_tokens, (uint64_t)total_prompt);
    cr_assert_eq(mt.e2e.count, N);
    cr_assert_eq(mt.ttft.count, N);
    cr_assert_eq(mt.kv_blocks_used, 0);
    cr_assert(mt.steps < (uint64_t)total_completion, "no batching: %llu steps",
              (unsigned long long)mt.steps);
    cr_assert_eq(mt.requests_finished[HS_FINISH_STOP] + mt.requests_finished[HS_FINISH_LENGTH], N);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

/* Mixture-of-experts models (routing groups rows of many sequences by expert) and Hunyuan-Large's
 * cross-layer attention (one K/V copy per group of layers in the paged cache) batch like any. */
Test(engine, moe_and_shared_kv_models_batch_like_alone)
{
    enum { N = 12, MAX_TOK = 24 };
    char paths[2][1024];
    snprintf(paths[0], sizeof(paths[0]), "%s/moe-qwen3-mini-q8_0.gguf", getenv("HS_MODELS_DIR"));
    snprintf(paths[1], sizeof(paths[1]), "/tmp/hs-test-engine-cla-%d.gguf", (int)getpid());
    struct hs_mkmodel_params mp = hs_mkmodel_hunyuan_large_params();
    mp.n_expert_used = 2;
    struct hs_error err = {0};
    cr_assert_eq(hs_mkmodel_write(&mp, paths[1], &err), HS_OK, "%s", err.message);
    for (int mi = 0; mi < 2; mi++) {
        struct hs_model *m = load_file(paths[mi]);
        static hs_token prompts[N][64];
        static int n_prompt[N];
        static struct ref refs[N];
        for (int i = 0; i < N; i++) {
            n_prompt[i] = make_prompt(m, i, prompts[i], 64);
            ref_greedy(m, prompts[i], n_prompt[i], MAX_TOK, true, &refs[i]);
        }
        struct hs_engine *e = make_engine(m, 6, 128, 0, 12);
        struct hs_engine_handle *h[N];
        for (int i = 0; i < N; i++) {
            h[i] = submit(e, prompts[i], n_prompt[i], MAX_TOK, true);
        }
        struct result *r = calloc(1, sizeof(*r));
        for (int i = 0; i < N; i++) {
            memset(r, 0, sizeof(*r));
            collect(h[i], r);
            char what[64];
            snprintf(what, sizeof(what), "%s request %d", hs_model_desc(m), i);
            assert_same_as_ref(r, 0, &refs[i], MAX_TOK, what);
            hs_engine_release(h[i]);
        }
        free(r);
        wait_idle(e);
        struct hs_engine_metrics mt;
        hs_engine_get_metrics(e, &mt);
        cr_assert_eq(mt.kv_blocks_used, 0);
        /* every token through the first layer chose k experts */
        uint64_t routed = 0;
        for (int x = 0; x < hs_model_hparams(m)->router.n_expert; x++) {
            routed += hs_engine_expert_tokens(e, 0, x);
        }
        cr_assert_eq(routed, mt.batch_tokens * (uint64_t)hs_model_hparams(m)->router.n_expert_used);
        hs_engine_destroy(e);
        hs_model_destroy(m);
    }
    unlink(paths[1]);
}

Test(engine, cancel_returns_every_kv_block)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 4, 512, 0, 64);
    hs_token p[64];
    struct hs_engine_handle *h[5];
    for (int i = 0; i < 4; i++) {
        int n = make_prompt(m, i, p, 64);
        h[i] = submit(e, p, n, 450, true);
    }
    /* wait for output from each, then cancel mid-generation */
    struct hs_engine_event ev;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(hs_engine_wait(h[i], &ev, 10000), HS_OK);
        cr_assert_eq(ev.type, HS_EVENT_DELTA);
        hs_engine_cancel(h[i]);
    }
    struct result *r = calloc(1, sizeof(*r));
    for (int i = 0; i < 4; i++) {
        memset(r, 0, sizeof(*r));
        collect(h[i], r);
        cr_assert_eq(r->fin[0], HS_FINISH_CANCELED);
        cr_assert_lt(r->usage.completion_tokens, 450);
        hs_engine_release(h[i]);
    }
    /* a request released without being read is canceled too */
    int n = make_prompt(m, 5, p, 64);
    h[4] = submit(e, p, n, 450, true);
    hs_engine_release(h[4]);
    wait_idle(e);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.kv_blocks_used, 0, "%d blocks still held", mt.kv_blocks_used);
    cr_assert_eq(mt.kv_blocks_free + mt.kv_blocks_cached, mt.kv_blocks_total);
    cr_assert_eq(mt.requests_finished[HS_FINISH_CANCELED], 5);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

Test(engine, shared_prompt_hits_the_prefix_cache)
{
    struct hs_model *m = load_model();
    const char *story =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
        "park. One day, she saw a big, red ball. She wanted to play with it, but it was too "
        "high. Lily asked her mom for help.";
    char text[512];
    hs_token p1[256], p2[256];
    snprintf(text, sizeof(text), "%s Her mom", story);
    int n1 = tokenize(m, text, p1, 256);
    snprintf(text, sizeof(text), "%s Then the dog", story);
    int n2 = tokenize(m, text, p2, 256);
    cr_assert_gt(n1, 40);
    struct ref ref2;
    ref_greedy(m, p2, n2, 20, false, &ref2);
    struct hs_engine *e = make_engine(m, 4, 512, 0, 512);
    struct result *r = calloc(1, sizeof(*r));
    struct hs_engine_handle *h = submit(e, p1, n1, 8, false);
    collect(h, r);
    cr_assert_eq(r->usage.cached_tokens, 0);
    hs_engine_release(h);
    memset(r, 0, sizeof(*r));
    h = submit(e, p2, n2, 20, false);
    collect(h, r);
    hs_engine_release(h);
    int common = 0;
    while (p1[common] == p2[common]) {
        common++;
    }
    cr_assert_gt(r->usage.cached_tokens, 0);
    cr_assert_eq(r->usage.cached_tokens % 16, 0, "only whole blocks are shared");
    cr_assert_leq(r->usage.cached_tokens, common);
    cr_assert_gt(r->usage.cached_tokens, common - 16);
    assert_same_as_ref(r, 0, &ref2, 20, "cached prompt");
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.prefix_hit_tokens, (uint64_t)r->usage.cached_tokens);
    cr_assert_float_eq(mt.prefix_hit_rate, (double)r->usage.cached_tokens / (n1 + n2), 1e-12);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

Test(engine, tiny_kv_pool_preempts_and_still_matches)
{
    enum { N = 6, MAX_TOK = 60 };
    struct hs_model *m = load_model();
    static hs_token prompts[N][64];
    static int n_prompt[N];
    static struct ref refs[N];
    for (int i = 0; i < N; i++) {
        n_prompt[i] = make_prompt(m, i + 8, prompts[i], 64);
        ref_greedy(m, prompts[i], n_prompt[i], MAX_TOK, true, &refs[i]);
    }
    /* 6 blocks of 16: one context of 96 tokens; every request needs ~4-5 blocks */
    struct hs_engine *e = make_engine(m, 4, 96, 6, 10);
    struct hs_engine_handle *h[N];
    for (int i = 0; i < N; i++) {
        h[i] = submit(e, prompts[i], n_prompt[i], MAX_TOK, true);
    }
    struct result *r = calloc(1, sizeof(*r));
    for (int i = 0; i < N; i++) {
        memset(r, 0, sizeof(*r));
        collect(h[i], r);
        char what[32];
        snprintf(what, sizeof(what), "request %d", i);
        assert_same_as_ref(r, 0, &refs[i], MAX_TOK, what);
        hs_engine_release(h[i]);
    }
    wait_idle(e);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_gt(mt.preemptions, 0, "the pool was never short");
    cr_assert_eq(mt.kv_blocks_used, 0);
    cr_assert_eq(mt.kv_blocks_total, 6);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

/* Runs one greedy request with stop strings and checks its text is the reference text cut
 * before the earliest match. */
static void check_stop(struct hs_engine *e, struct hs_model *m, const hs_token *p, int n,
                       const struct ref *ref, const char *const *stops, int n_stop)
{
    struct hs_engine_request rq;
    greedy_request(&rq, p, n, 60);
    rq.stop = stops;
    rq.n_stop = n_stop;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    hs_engine_release(h);
    /* naive: earliest occurrence of any stop in the whole reference text */
    size_t cut = ref->n_text;
    for (int i = 0; i < n_stop; i++) {
        const char *hit = strstr(ref->text, stops[i]);
        if (hit && (size_t)(hit - ref->text) < cut) {
            cut = (size_t)(hit - ref->text);
        }
    }
    r->text[0][r->n_text[0]] = '\0';
    cr_assert_eq(r->n_text[0], cut, "stop '%s': got '%s', want '%.*s'", stops[0], r->text[0],
                 (int)cut, ref->text);
    cr_assert(!memcmp(r->text[0], ref->text, cut));
    if (cut < ref->n_text) {
        cr_assert_eq(r->fin[0], HS_FINISH_STOP);
        cr_assert_leq(r->n_toks[0], ref->n);
        /* the tokens are the reference's, up to the one that completed the match */
        for (int i = 0; i < r->n_toks[0]; i++) {
            cr_assert_eq(r->toks[0][i], ref->toks[i]);
        }
    } else {
        cr_assert_eq(r->fin[0], ref->eos ? HS_FINISH_STOP : HS_FINISH_LENGTH);
    }
    (void)m;
    free(r);
}

Test(engine, stop_strings_cut_exactly_and_never_leak)
{
    struct hs_model *m = load_model();
    hs_token p[64];
    int n = tokenize(m, "Once upon a time", p, 64);
    struct ref ref;
    ref_greedy(m, p, n, 60, false, &ref);
    cr_assert_gt(ref.n_text, 40);
    struct hs_engine *e = make_engine(m, 2, 256, 0, 64);
    /* texts taken from the reference itself so they do occur, at various places */
    char s_mid[16], s_word[16], s_one[4], s_end[16];
    memcpy(s_mid, ref.text + 20, 7); /* likely spans tokens */
    s_mid[7] = '\0';
    memcpy(s_word, ref.text + 5, 3);
    s_word[3] = '\0';
    s_one[0] = ref.text[ref.n_text / 2];
    s_one[1] = '\0';
    memcpy(s_end, ref.text + ref.n_text - 5, 5);
    s_end[5] = '\0';
    const char *a[] = {s_mid};
    check_stop(e, m, p, n, &ref, a, 1);
    const char *b[] = {s_mid, s_word}; /* the earlier one wins */
    check_stop(e, m, p, n, &ref, b, 2);
    const char *c[] = {s_one};
    check_stop(e, m, p, n, &ref, c, 1);
    const char *d[] = {"zzqqzz never", s_end};
    check_stop(e, m, p, n, &ref, d, 2);
    /* a stop that never occurs but whose first bytes often do: everything is emitted */
    char s_prefix[32];
    snprintf(s_prefix, sizeof(s_prefix), "%.3sXYZ", ref.text + 10);
    const char *f[] = {s_prefix};
    check_stop(e, m, p, n, &ref, f, 1);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

Test(engine, n_choices_share_the_prompt)
{
    struct hs_model *m = load_model();
    hs_token p[64];
    int n = make_prompt(m, 9, p, 64);
    struct ref ref;
    ref_greedy(m, p, n, 30, false, &ref);
    struct hs_engine *e = make_engine(m, 4, 256, 0, 64);
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p;
    rq.n_prompt = n;
    rq.max_tokens = 30;
    rq.n = 3;
    rq.sampling.temperature = 0;
    rq.logprobs = true;
    rq.top_logprobs = 3;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    hs_engine_release(h);
    int completion = 0;
    for (int c = 0; c < 3; c++) {
        assert_same_as_ref(r, c, &ref, 30, "greedy choice");
        for (int i = 0; i < ref.n; i++) {
            cr_assert(fabs(r->lp[c][i] - ref.lp[i]) < 1e-4, "logprob %d: %g vs %g", i,
                      (double)r->lp[c][i], ref.lp[i]);
            cr_assert_eq(r->n_top[c][i], 3);
            cr_assert_eq(r->top0[c][i], ref.toks[i], "greedy picks the most likely token");
        }
        completion += ref.n + (ref.eos ? 1 : 0);
    }
    cr_assert_eq(r->n_final[3], 0);
    cr_assert_eq(r->usage.completion_tokens, completion);
    cr_assert_eq(r->usage.prompt_tokens, n);

    /* sampled: three different seeds, three choices, each with exactly one final event */
    rq.sampling = hs_sampling_default_params();
    rq.sampling.temperature = 1.5f;
    rq.sampling.seed = 42;
    rq.ignore_eos = true;
    rq.logprobs = false;
    rq.top_logprobs = 0;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    memset(r, 0, sizeof(*r));
    collect(h, r);
    hs_engine_release(h);
    for (int c = 0; c < 3; c++) {
        cr_assert_eq(r->n_final[c], 1);
        cr_assert_eq(r->fin[c], HS_FINISH_LENGTH);
        cr_assert_eq(r->n_toks[c], 30);
    }
    cr_assert(memcmp(r->toks[0], r->toks[1], sizeof(r->toks[0])) ||
                  memcmp(r->toks[1], r->toks[2], sizeof(r->toks[0])),
              "three seeds gave three equal samples");
    cr_assert_eq(r->usage.completion_tokens, 90);
    wait_idle(e);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.kv_blocks_used, 0);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

/* report_eos: the EOS that ends a choice comes as the final DELTA's last token, with its
 * logprobs, and nothing else changes; alternatives go up to HS_ENGINE_MAX_TOP_LOGPROBS. */
Test(engine, report_eos_lists_the_ending_token_with_100_alternatives)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 1, 256, 0, 64);
    const hs_token eos = hs_vocab_eos(hs_model_vocab(m));
    cr_assert_geq(eos, 0);
    hs_token p[64];
    int n = make_prompt(m, 0, p, 64);
    /* EOS pushed up just enough for greedy decoding to end on it after a few tokens */
    const struct hs_logit_bias bias = {eos, 20.0f};
    struct hs_engine_request rq;
    greedy_request(&rq, p, n, 60);
    rq.sampling.logit_bias = &bias;
    rq.sampling.n_logit_bias = 1;
    rq.logprobs = true;
    rq.top_logprobs = HS_ENGINE_MAX_TOP_LOGPROBS;
    struct result *r[2];
    for (int i = 0; i < 2; i++) {
        rq.report_eos = i == 1;
        struct hs_engine_handle *h = NULL;
        struct hs_error err = {0};
        cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
        r[i] = calloc(1, sizeof(*r[i]));
        collect(h, r[i]);
        hs_engine_release(h);
    }
    const int n_gen = r[0]->n_toks[0];
    cr_assert_eq(r[0]->fin[0], HS_FINISH_STOP, "greedy decoding should end on EOS");
    cr_assert(n_gen > 0 && n_gen < 59, "%d tokens", n_gen);
    cr_assert_eq(r[1]->fin[0], HS_FINISH_STOP);
    cr_assert_eq(r[1]->n_toks[0], n_gen + 1);
    cr_assert(!memcmp(r[0]->toks[0], r[1]->toks[0], sizeof(hs_token) * (size_t)n_gen));
    cr_assert_eq(r[1]->toks[0][n_gen], eos);
    cr_assert_eq(r[0]->n_text[0], r[1]->n_text[0]);
    cr_assert(!memcmp(r[0]->text[0], r[1]->text[0], r[0]->n_text[0]), "EOS changed the text");
    for (int i = 0; i <= n_gen; i++) {
        cr_assert_eq(r[1]->n_top[0][i], HS_ENGINE_MAX_TOP_LOGPROBS);
        cr_assert(i == n_gen || r[1]->lp[0][i] == r[0]->lp[0][i]);
    }
    cr_assert_eq(r[0]->usage.completion_tokens, n_gen + 1);
    cr_assert_eq(r[1]->usage.completion_tokens, n_gen + 1);
    free(r[0]);
    free(r[1]);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

Test(engine, full_queue_gives_busy)
{
    struct hs_model *m = load_model();
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = 1;
    p.n_ctx = 512;
    p.max_waiting = 2;
    p.kv_type = HS_TYPE_F32;
    p.n_threads = 1;
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_create(m, &p, &e, &err), HS_OK, "%s", err.message);
    hs_token tok[64];
    int n = make_prompt(m, 0, tok, 64);
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = tok;
    rq.n_prompt = n;
    rq.max_tokens = 480;
    rq.ignore_eos = true;
    struct hs_engine_handle *h[10] = {0};
    int ok = 0, busy = 0;
    for (int i = 0; i < 10; i++) {
        hs_status st = hs_engine_submit(e, &rq, &h[ok], &err);
        if (st == HS_OK) {
            ok++;
        } else {
            cr_assert_eq(st, HS_E_BUSY, "%s", hs_status_name(st));
            cr_assert_null(h[ok]);
            cr_assert_gt(strlen(err.message), 0);
            busy++;
        }
    }
    cr_assert_leq(ok, 3, "one running plus max_waiting 2, got %d", ok);
    cr_assert_geq(ok, 2);
    cr_assert_eq(busy, 10 - ok);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.requests_rejected, (uint64_t)busy);
    for (int i = 0; i < ok; i++) {
        hs_engine_release(h[i]);
    }
    wait_idle(e);
    /* room again */
    rq.max_tokens = 4;
    struct hs_engine_handle *h2 = NULL;
    cr_assert_eq(hs_engine_submit(e, &rq, &h2, &err), HS_OK);
    hs_engine_release(h2);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

Test(engine, drain_finishes_in_flight_work)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 2, 256, 0, 64);
    hs_token p[64];
    struct hs_engine_handle *h[4];
    for (int i = 0; i < 4; i++) {
        int n = make_prompt(m, i, p, 64);
        h[i] = submit(e, p, n, 40, true); /* 4 requests, 2 at a time: 2 wait */
    }
    cr_assert_eq(hs_engine_drain(e, 30000), HS_OK);
    struct hs_engine_handle *late = NULL;
    struct hs_error err = {0};
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p;
    rq.n_prompt = 3;
    cr_assert_eq(hs_engine_submit(e, &rq, &late, &err), HS_E_CANCELED);
    cr_assert_null(late);
    struct result *r = calloc(1, sizeof(*r));
    for (int i = 0; i < 4; i++) {
        memset(r, 0, sizeof(*r));
        collect(h[i], r);
        cr_assert_eq(r->fin[0], HS_FINISH_LENGTH);
        cr_assert_eq(r->n_toks[0], 40);
        hs_engine_release(h[i]);
    }
    free(r);
    hs_engine_destroy(e);

    /* a deadline that passes cancels the rest */
    e = make_engine(m, 2, 512, 0, 64);
    int n = make_prompt(m, 1, p, 64);
    struct hs_engine_handle *g = submit(e, p, n, 480, true);
    cr_assert_eq(hs_engine_drain(e, 1), HS_E_BUSY);
    r = calloc(1, sizeof(*r));
    collect(g, r);
    cr_assert_eq(r->fin[0], HS_FINISH_CANCELED);
    hs_engine_release(g);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

Test(engine, timeouts_end_requests)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 2, 512, 0, 64);
    hs_token p[64];
    int n = make_prompt(m, 2, p, 64);
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p;
    rq.n_prompt = n;
    rq.max_tokens = 480;
    rq.ignore_eos = true;
    rq.timeout_ms = 5;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    hs_engine_release(h);
    cr_assert_eq(r->fin[0], HS_FINISH_TIMEOUT);
    cr_assert_lt(r->n_toks[0], 480);
    wait_idle(e);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.requests_finished[HS_FINISH_TIMEOUT], 1);
    cr_assert_eq(mt.kv_blocks_used, 0);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

/* A huge timeout (INT64_MAX ms) must mean "no deadline": multiplied into nanoseconds unbounded it
 * overflowed to a deadline in the past and timed the request out at once. */
Test(engine, huge_timeout_is_no_deadline)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 2, 256, 0, 64);
    hs_token p[64];
    int n = make_prompt(m, 2, p, 64);
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p;
    rq.n_prompt = n;
    rq.max_tokens = 8;
    rq.ignore_eos = true;
    rq.timeout_ms = INT64_MAX;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    hs_engine_release(h);
    cr_assert_eq(r->fin[0], HS_FINISH_LENGTH, "finish %s", hs_finish_reason_str(r->fin[0]));
    cr_assert_eq(r->n_toks[0], 8);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

/* The default context is the model's trained one (stories260K: 2048; it was capped at 4096
 * for every model), bounded by the KV memory one sequence may use; a given --ctx stays. */
Test(engine, default_context_is_trained_bounded_by_kv_memory)
{
    struct hs_model *m = load_model();
    const int32_t train = hs_model_hparams(m)->n_ctx_train;
    struct hs_engine_params p;
    p = hs_engine_default_params();
    cr_assert_str_eq(hs__cli_default_ctx(m, &p), "the model's trained context");
    cr_assert_eq(p.n_ctx, train);
    p = hs_engine_default_params();
    p.n_kv_blocks = 40; /* 640 tokens of 16 */
    cr_assert_str_eq(hs__cli_default_ctx(m, &p), "bounded by KV memory");
    cr_assert_eq(p.n_ctx, 640);
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_create(m, &p, &e, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_engine_n_ctx(e), 640);
    hs_engine_destroy(e);
    p = hs_engine_default_params();
    p.n_ctx = 300;
    cr_assert_str_eq(hs__cli_default_ctx(m, &p), "set by --ctx");
    cr_assert_eq(p.n_ctx, 300);
    hs_model_destroy(m);
}

Test(engine, bad_requests_are_rejected_and_max_tokens_capped)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 2, 64, 0, 64);
    hs_token p[80];
    for (int i = 0; i < 80; i++) {
        p[i] = 100 + i;
    }
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    rq.n_prompt = 0;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    rq.n_prompt = 64; /* fills the context alone */
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "64"), "%s", err.message);
    rq.n_prompt = 10;
    rq.n = 0;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    rq.n = 1;
    rq.top_logprobs = 2;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    rq.logprobs = true;
    rq.top_logprobs = HS_ENGINE_MAX_TOP_LOGPROBS + 1;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    rq.logprobs = false;
    rq.top_logprobs = 0;
    rq.sampling.top_p = 1.5f;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "top_p"), "%s", err.message);
    rq.sampling.top_p = 0.9f;
    const char *stops[] = {""};
    rq.stop = stops;
    rq.n_stop = 1;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    rq.n_stop = 0;
    p[3] = 512; /* the vocab has 512 tokens */
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    cr_assert_null(h);
    p[3] = 103;
    /* too many tokens asked: capped to what the context allows */
    rq.n_prompt = 50;
    rq.max_tokens = 1000;
    rq.ignore_eos = true;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    hs_engine_release(h);
    cr_assert_eq(r->fin[0], HS_FINISH_LENGTH);
    cr_assert_eq(r->n_toks[0], 64 - 50);
    free(r);
    struct hs_engine_params bad = hs_engine_default_params();
    bad.n_ctx = 256;
    bad.n_kv_blocks = 8; /* 128 tokens < one context */
    struct hs_engine *e2 = NULL;
    cr_assert_eq(hs_engine_create(m, &bad, &e2, &err), HS_E_INVAL);
    cr_assert_null(e2);
    /* a speculation cost model's knee that is no number of rows */
    static const double bad_knees[] = {-1.0, NAN, INFINITY};
    for (size_t i = 0; i < HS_ARRAY_LEN(bad_knees); i++) {
        bad = hs_engine_default_params();
        bad.spec_max_draft = 4;
        bad.spec_knee = bad_knees[i];
        cr_assert_eq(hs_engine_create(m, &bad, &e2, &err), HS_E_INVAL, "knee %g", bad_knees[i]);
        cr_assert_null(e2);
        cr_assert(strstr(err.message, "knee"), "%s", err.message);
    }
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

static atomic_int notified;
static atomic_int notified_wrong_user;

/* Runs on the engine thread: no Criterion asserts here. */
static void on_notify(void *user)
{
    if (user != &notified) {
        atomic_fetch_add(&notified_wrong_user, 1);
    }
    atomic_fetch_add(&notified, 1);
}

Test(engine, notify_hook_and_destroy_with_live_handles)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 2, 256, 0, 64);
    hs_token p[64];
    int n = make_prompt(m, 3, p, 64);
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p;
    rq.n_prompt = n;
    rq.max_tokens = 12;
    rq.ignore_eos = true;
    rq.notify = on_notify;
    rq.notify_user = &notified;
    atomic_store(&notified, 0);
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    hs_engine_release(h);
    int k = atomic_load(&notified);
    cr_assert(k >= 1 && k <= 12, "%d notifications for 12 tokens", k);
    cr_assert_eq(atomic_load(&notified_wrong_user), 0);
    /* a long request still running when the engine is destroyed: canceled, handle still valid */
    rq.max_tokens = 400;
    rq.notify = NULL;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK);
    hs_engine_destroy(e);
    memset(r, 0, sizeof(*r));
    collect(h, r);
    cr_assert_eq(r->fin[0], HS_FINISH_CANCELED);
    hs_engine_release(h);
    free(r);
    hs_model_destroy(m);
}

/* An asynchronous reader as api/ will write one: everything happens in the notify hook,
 * which polls and finally releases the handle on the engine thread. */
struct async_reader {
    pthread_mutex_t mu;
    struct hs_engine_handle *h;
    atomic_bool released;
    atomic_int n_tokens;
    atomic_int n_done;
};

static void async_notify(void *user)
{
    struct async_reader *a = user;
    pthread_mutex_lock(&a->mu); /* until submit has returned the handle */
    struct hs_engine_handle *h = a->h;
    pthread_mutex_unlock(&a->mu);
    if (!h || atomic_load(&a->released)) {
        return;
    }
    struct hs_engine_event ev;
    while (hs_engine_poll(h, &ev) == HS_OK) {
        if (ev.type == HS_EVENT_DELTA) {
            atomic_fetch_add(&a->n_tokens, ev.n_tokens);
        } else {
            atomic_fetch_add(&a->n_done, 1);
            atomic_store(&a->released, true);
            hs_engine_release(h);
            return;
        }
    }
}

Test(engine, notify_hook_may_poll_and_release)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 2, 256, 0, 64);
    hs_token p[64];
    int n = make_prompt(m, 4, p, 64);
    static struct async_reader a;
    pthread_mutex_init(&a.mu, NULL);
    a.h = NULL;
    atomic_store(&a.released, false);
    atomic_store(&a.n_tokens, 0);
    atomic_store(&a.n_done, 0);
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = p;
    rq.n_prompt = n;
    rq.max_tokens = 20;
    rq.ignore_eos = true;
    rq.notify = async_notify;
    rq.notify_user = &a;
    struct hs_error err = {0};
    pthread_mutex_lock(&a.mu);
    cr_assert_eq(hs_engine_submit(e, &rq, &a.h, &err), HS_OK);
    pthread_mutex_unlock(&a.mu);
    for (int i = 0; i < 20000 && !atomic_load(&a.released); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert(atomic_load(&a.released), "the hook never saw DONE");
    cr_assert_eq(atomic_load(&a.n_tokens), 20);
    cr_assert_eq(atomic_load(&a.n_done), 1);
    wait_idle(e);
    hs_engine_destroy(e);
    pthread_mutex_destroy(&a.mu);
    hs_model_destroy(m);
}

/* ---- structured output ---- */

/* A grammar holds every choice's output to it (temperature 1, several choices, so the model's
 * own preferences are overruled), ends with a stop once complete, and a constraint that allows
 * no token ends the request with an error that says why, never a silent stop. */
Test(engine, grammar_constrains_every_choice_and_reports_dead_ends)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 4, 128, 0, 32);
    hs_token prompt[64];
    const int np = make_prompt(m, 0, prompt, 64);
    static const char gbnf[] = "root ::= (\"yes\" | \"no\") \" \" [0-9] [0-9]?\n";
    struct hs_engine_request rq;
    greedy_request(&rq, prompt, np, 24);
    rq.sampling.temperature = 1.0f;
    rq.sampling.top_k = 0;
    rq.n = 4;
    rq.grammar = gbnf;
    rq.n_grammar = strlen(gbnf);
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    cr_assert_eq(r->status, HS_OK);
    for (int c = 0; c < 4; c++) {
        r->text[c][r->n_text[c]] = '\0';
        const char *t = r->text[c];
        const bool ok =
            (!strncmp(t, "yes ", 4) || !strncmp(t, "no ", 3)) &&
            strspn(t + (t[0] == 'y' ? 4 : 3), "0123456789") == strlen(t + (t[0] == 'y' ? 4 : 3)) &&
            strlen(t + (t[0] == 'y' ? 4 : 3)) >= 1 && strlen(t + (t[0] == 'y' ? 4 : 3)) <= 2;
        cr_assert(ok, "choice %d wrote '%s', outside the grammar", c, t);
        cr_assert_eq(r->fin[c], HS_FINISH_STOP, "choice %d: %s", c,
                     hs_finish_reason_str(r->fin[c]));
    }
    hs_engine_release(h);

    /* A dead end: the grammar wants only end of generation after "a", and logit_bias bans it. */
    static const char one[] = "root ::= \"a\"";
    struct hs_logit_bias ban = {.token = hs_vocab_eos(hs_model_vocab(m)), .bias = -INFINITY};
    greedy_request(&rq, prompt, np, 8);
    rq.grammar = one;
    rq.n_grammar = strlen(one);
    rq.sampling.logit_bias = &ban;
    rq.sampling.n_logit_bias = 1;
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    memset(r, 0, sizeof(*r));
    struct hs_engine_event ev;
    const char *detail = NULL;
    for (;;) {
        cr_assert_eq(hs_engine_wait(h, &ev, 30000), HS_OK);
        if (ev.type == HS_EVENT_DONE) {
            detail = ev.detail;
            cr_assert_neq(ev.status, HS_OK);
            break;
        }
        if (ev.finish_reason != HS_FINISH_NONE) {
            r->fin[0] = ev.finish_reason;
        }
        memcpy(r->text[0] + r->n_text[0], ev.text, ev.n_text);
        r->n_text[0] += ev.n_text;
    }
    cr_assert_eq(r->fin[0], HS_FINISH_ERROR);
    cr_assert_not_null(detail, "the client must be told why");
    cr_assert(strstr(detail, "ban") != NULL, "detail: %s", detail);
    r->text[0][r->n_text[0]] = '\0';
    cr_assert_str_eq(r->text[0], "a");
    hs_engine_release(h);

    /* A grammar that does not compile is refused at submit, saying where. */
    static const char bad[] = "root ::= (\"x\"";
    greedy_request(&rq, prompt, np, 8);
    rq.grammar = bad;
    rq.n_grammar = strlen(bad);
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_E_INVAL);
    cr_assert_null(h);
    cr_assert(strstr(err.message, "grammar") && strstr(err.message, "1:"), "%s", err.message);
    wait_idle(e);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.kv_blocks_used, 0);
    free(r);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

/* A logit_bias that bans every token ends the sequence with a stop and no output, and usage
 * counts no completion token: the "no token" draw is never counted as a generated token. */
Test(engine, a_sequence_that_can_draw_no_token_counts_no_completion_token)
{
    struct hs_model *m = load_model();
    struct hs_engine *e = make_engine(m, 4, 128, 0, 32);
    hs_token prompt[64];
    const int np = make_prompt(m, 0, prompt, 64);
    const int32_t n_vocab = hs_vocab_n_tokens(hs_model_vocab(m));
    struct hs_logit_bias *ban = calloc((size_t)n_vocab, sizeof(*ban));
    cr_assert_not_null(ban);
    for (int32_t i = 0; i < n_vocab; i++) {
        ban[i] = (struct hs_logit_bias){.token = i, .bias = -INFINITY};
    }
    struct hs_engine_request rq;
    greedy_request(&rq, prompt, np, 8);
    rq.sampling.logit_bias = ban;
    rq.sampling.n_logit_bias = n_vocab;
    rq.n = 2;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_submit(e, &rq, &h, &err), HS_OK, "%s", err.message);
    struct result *r = calloc(1, sizeof(*r));
    collect(h, r);
    for (int c = 0; c < 2; c++) {
        cr_assert_eq(r->n_toks[c], 0, "choice %d: %d tokens", c, r->n_toks[c]);
        cr_assert_eq(r->n_text[c], 0);
        cr_assert_eq(r->fin[c], HS_FINISH_STOP, "choice %d: %s", c,
                     hs_finish_reason_str(r->fin[c]));
    }
    cr_assert_eq(r->usage.completion_tokens, 0, "usage counts %d phantom tokens",
                 r->usage.completion_tokens);
    hs_engine_release(h);
    wait_idle(e);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    cr_assert_eq(mt.kv_blocks_used, 0);
    free(r);
    free(ban);
    hs_engine_destroy(e);
    hs_model_destroy(m);
}

/* ---- sampling as tasks on the compute threads ---- */

/* 16 sampled requests on Qwen3's 151k vocabulary: default chains, whole-vocabulary draws with
 * penalties and logprobs, two choices with logit_bias, grammars with one choice (drawn as a
 * task) and with two (whose shared grammar cache keeps them on the engine thread). */
static void run_sampling_workload(struct hs_engine *e, struct hs_model *m, struct result *out)
{
    enum { N = 16 };
    static const char gbnf[] = "root ::= (\"yes\" | \"no\") \" \" [0-9] [0-9]?\n";
    static hs_token prompts[N][64];
    static const struct hs_logit_bias bias[] = {{.token = 11, .bias = 3.0f},
                                                {.token = 220, .bias = -INFINITY},
                                                {.token = 1000, .bias = 1.5f}};
    struct hs_engine_handle *h[N];
    for (int i = 0; i < N; i++) {
        struct hs_engine_request rq;
        hs_engine_request_init(&rq);
        rq.prompt = prompts[i];
        rq.n_prompt = make_prompt(m, i, prompts[i], 64);
        rq.max_tokens = 12;
        rq.ignore_eos = i % 4 != 3;
        rq.sampling.seed = 7000 + (uint64_t)i;
        switch (i % 4) {
        case 0:
            break; /* llama.cpp's default chain */
        case 1:
            rq.sampling.temperature = 1.3f;
            rq.sampling.top_k = 0;
            rq.sampling.top_p = 1.0f;
            rq.sampling.min_p = 0.0f;
            rq.sampling.presence_penalty = 0.5f;
            rq.sampling.frequency_penalty = 0.3f;
            rq.sampling.repetition_penalty = 1.1f;
            rq.logprobs = true;
            rq.top_logprobs = 5;
            break;
        case 2:
            rq.n = 2;
            rq.sampling.temperature = 0.7f;
            rq.sampling.top_p = 0.8f;
            rq.sampling.logit_bias = bias;
            rq.sampling.n_logit_bias = (int32_t)HS_ARRAY_LEN(bias);
            break;
        default:
            rq.n = i % 8 == 3 ? 1 : 2;
            rq.sampling.temperature = 1.0f;
            rq.sampling.top_k = 0;
            rq.grammar = gbnf;
            rq.n_grammar = strlen(gbnf);
            break;
        }
        struct hs_error err = {0};
        cr_assert_eq(hs_engine_submit(e, &rq, &h[i], &err), HS_OK, "%s", err.message);
    }
    for (int i = 0; i < N; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        collect(h[i], &out[i]);
        cr_assert_eq(out[i].status, HS_OK, "request %d: %s", i, hs_status_name(out[i].status));
        hs_engine_release(h[i]);
    }
}

/* Drawing the next tokens as tasks on the backend's threads gives the very bits of drawing them
 * one by one on the engine thread: each sequence has its own sampler and seed. Steps stay under
 * 64 rows, so the logits do not depend on which requests share a step. */
Test(engine, sampling_in_tasks_draws_the_bits_of_serial_sampling, .timeout = 300)
{
    enum { N = 16 };
    char path[1024];
    snprintf(path, sizeof(path), "%s/qwen3-vocab-f16.gguf", getenv("HS_MODELS_DIR"));
    struct hs_model *m = load_file(path);
    struct result *r[2] = {calloc(N, sizeof(struct result)), calloc(N, sizeof(struct result))};
    cr_assert(r[0] && r[1]);
    struct hs_engine_metrics mt[2];
    for (int mode = 0; mode < 2; mode++) {
        struct hs_engine_params p = hs_engine_default_params();
        p.n_parallel = 24;
        p.n_ctx = 128;
        p.n_batch_tokens = 32;
        p.kv_type = HS_TYPE_F32;
        p.n_threads = 3;
        p.serial_sampling = mode == 0;
        struct hs_engine *e = NULL;
        struct hs_error err = {0};
        cr_assert_eq(hs_engine_create(m, &p, &e, &err), HS_OK, "%s", err.message);
        run_sampling_workload(e, m, r[mode]);
        wait_idle(e);
        hs_engine_get_metrics(e, &mt[mode]);
        cr_assert_eq(mt[mode].kv_blocks_used, 0);
        hs_engine_destroy(e);
    }
    for (int i = 0; i < N; i++) {
        for (int c = 0; c < (i % 4 == 2 || i % 8 == 7 ? 2 : 1); c++) {
            const struct result *a = &r[0][i], *b = &r[1][i];
            cr_assert_gt(a->n_toks[c], 0, "request %d choice %d drew nothing", i, c);
            cr_assert_eq(b->n_toks[c], a->n_toks[c], "request %d choice %d: %d tokens, serial %d",
                         i, c, b->n_toks[c], a->n_toks[c]);
            for (int t = 0; t < a->n_toks[c]; t++) {
                cr_assert_eq(b->toks[c][t], a->toks[c][t], "request %d choice %d token %d", i, c,
                             t);
                cr_assert_eq(b->lp[c][t], a->lp[c][t]);
                cr_assert_eq(b->top0[c][t], a->top0[c][t]);
            }
            cr_assert_eq(b->n_text[c], a->n_text[c]);
            cr_assert(!memcmp(b->text[c], a->text[c], a->n_text[c]));
            cr_assert_eq(b->fin[c], a->fin[c]);
        }
    }
    /* what ran where: all on the engine thread when serial; as tasks but for the grammar's
     * two-choice requests (2 requests x 2 choices) otherwise */
    cr_assert_eq(mt[1].draws, mt[0].draws);
    cr_assert_gt(mt[0].draws, 0);
    cr_assert_eq(mt[0].draws_in_tasks, 0);
    uint64_t shared = 0; /* their tokens, and the end-of-generation draw of those that stop */
    for (int i = 7; i < N; i += 8) {
        for (int c = 0; c < 2; c++) {
            shared += (uint64_t)r[1][i].n_toks[c] + (r[1][i].fin[c] == HS_FINISH_STOP);
        }
    }
    /* (a step left with a single sequence to draw for draws it on the engine thread) */
    cr_assert(mt[1].draws_in_tasks <= mt[1].draws - shared &&
                  mt[1].draws_in_tasks > (mt[1].draws - shared) / 2,
              "%llu of %llu draws in tasks, %llu sharing a grammar cache",
              (unsigned long long)mt[1].draws_in_tasks, (unsigned long long)mt[1].draws,
              (unsigned long long)shared);
    cr_assert_gt(mt[1].sampling_s, 0.0);
    free(r[0]);
    free(r[1]);
    hs_model_destroy(m);
}
