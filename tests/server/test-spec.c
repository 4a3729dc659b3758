/* Speculative decoding (server/spec.c) against the same engine without it: at temperature 0 the
 * tokens, logprobs, text and finish reasons are identical on every model of ../shared/models
 * (16 concurrent requests, repeated prompts so that drafts happen and are accepted, stops, n > 1,
 * logprobs and max_tokens ending inside accepted drafts); at temperature > 0 the sampled
 * distribution is unchanged (a chi-square of two samples with fixed seeds); KV blocks balance to
 * zero after every workload.
 *
 * Both engines run with a step budget under 64 tokens: the CPU attention picks its
 * accumulation precision from the batch's row count (backends/cpu/attention.c, as ggml does), so
 * only batches on the same side of that line give the same bits. */
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
#include "server/suffix.h"

#define MAX_GEN  160
#define TEXT_CAP 4096
#define N_REQ    16

static struct hs_model *load(const char *name)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert(dir, "HS_MODELS_DIR is not set");
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct hs_model *m = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_model_load(path, &m, &err), HS_OK, "%s: %s", path, err.message);
    return m;
}

static size_t g_store_bytes; /* the draft store's bound (0: the default) */

static struct hs_engine *make_engine_kv(struct hs_model *m, int max_draft, int n_parallel,
                                        int n_blocks)
{
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = n_parallel;
    p.n_kv_blocks = n_blocks;
    p.n_ctx = 512;
    p.n_batch_tokens = 48;
    p.kv_type = HS_TYPE_F32;
    p.n_threads = 2;
    p.spec_max_draft = max_draft;
    p.spec_store_bytes = g_store_bytes;
    /* the knee a memory-bound step has here, fixed: which drafts pay must not depend on how
     * loaded the machine running the tests is (fitted, a loaded run once drafted nothing) */
    p.spec_knee = 16.0;
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_create(m, &p, &e, &err), HS_OK, "%s", err.message);
    return e;
}

static struct hs_engine *make_engine(struct hs_model *m, int max_draft, int n_parallel)
{
    return make_engine_kv(m, max_draft, n_parallel, 0);
}

struct result {
    hs_token toks[HS_ENGINE_MAX_CHOICES][MAX_GEN];
    float lp[HS_ENGINE_MAX_CHOICES][MAX_GEN];
    hs_token top[HS_ENGINE_MAX_CHOICES][MAX_GEN][3];
    float top_lp[HS_ENGINE_MAX_CHOICES][MAX_GEN][3];
    int n_toks[HS_ENGINE_MAX_CHOICES];
    char text[HS_ENGINE_MAX_CHOICES][TEXT_CAP];
    size_t n_text[HS_ENGINE_MAX_CHOICES];
    enum hs_finish_reason fin[HS_ENGINE_MAX_CHOICES];
    struct hs_engine_usage usage;
    hs_status status;
};

static void collect(struct hs_engine_handle *h, struct result *r)
{
    memset(r, 0, sizeof(*r));
    struct hs_engine_event ev;
    for (;;) {
        hs_status st = hs_engine_wait(h, &ev, 60000);
        cr_assert_eq(st, HS_OK, "no event within 60 s");
        if (ev.type == HS_EVENT_DONE) {
            r->usage = ev.usage;
            r->status = ev.status;
            break;
        }
        const int c = ev.choice;
        cr_assert(r->n_text[c] + ev.n_text < TEXT_CAP);
        memcpy(r->text[c] + r->n_text[c], ev.text, ev.n_text);
        r->n_text[c] += ev.n_text;
        for (int i = 0; i < ev.n_tokens; i++) {
            const int k = r->n_toks[c]++;
            cr_assert(k < MAX_GEN);
            r->toks[c][k] = ev.tokens[i];
            if (ev.logprobs) {
                const struct hs_token_logprob *l = &ev.logprobs[i];
                r->lp[c][k] = l->logprob;
                for (int j = 0; j < l->n_top && j < 3; j++) {
                    r->top[c][k][j] = l->top_ids[j];
                    r->top_lp[c][k][j] = l->top_logprobs[j];
                }
            }
        }
        if (ev.finish_reason != HS_FINISH_NONE) {
            r->fin[c] = ev.finish_reason;
        }
    }
}

static void wait_idle(struct hs_engine *e)
{
    struct hs_engine_metrics mt;
    for (int i = 0; i < 5000; i++) {
        hs_engine_get_metrics(e, &mt);
        if (mt.n_running == 0 && mt.n_waiting == 0 && mt.n_seqs_running == 0) {
            cr_assert_eq(mt.kv_blocks_used, 0, "%d KV blocks still held", mt.kv_blocks_used);
            return;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("engine did not go idle");
}

static const char *const texts[4] = {
    "Once upon a time",
    "Lily and Tom went to the park",
    "The little dog was sad because",
    "One day, a big red ball",
};

/* Request i of a round: four prompts, each four times; varied max_tokens (so that some end
 * inside an accepted draft), a stop string on some, n = 2 on some, logprobs with alternatives. */
static void make_request(struct hs_model *m, int i, hs_token *prompt, struct hs_engine_request *rq,
                         const char *const *stop)
{
    size_t n = 0;
    const char *t = texts[i % 4];
    cr_assert_eq(hs_tokenize(hs_model_vocab(m), t, strlen(t), true, false, prompt, 64, &n), HS_OK);
    hs_engine_request_init(rq);
    rq->prompt = prompt;
    rq->n_prompt = (int32_t)n;
    rq->max_tokens = 40 + 13 * (i % 5) + (i / 4);
    rq->sampling.temperature = 0;
    rq->logprobs = true;
    rq->top_logprobs = 3;
    rq->ignore_eos = i % 3 == 0;
    rq->n = i % 7 == 3 ? 2 : 1;
    if (i % 5 == 2) {
        rq->stop = stop;
        rq->n_stop = 1;
    }
    if (i % 4 == 1) {
        /* penalties and a bias: verification must see the state each accepted token left */
        static const struct hs_logit_bias bias[1] = {{13, 2.5f}};
        rq->sampling.frequency_penalty = 0.4f;
        rq->sampling.presence_penalty = 0.2f;
        rq->sampling.repetition_penalty = 1.1f;
        rq->sampling.logit_bias = bias;
        rq->sampling.n_logit_bias = 1;
    }
    rq->id = (uint64_t)i;
}

/* Runs two rounds of N_REQ concurrent requests (the second finds the first's answers in the
 * draft store) and returns the results [2 * N_REQ]. */
static const char *g_grammar; /* GBNF every request follows (NULL: none) */

static void run_rounds(struct hs_engine *e, struct hs_model *m, struct result *res)
{
    static const char *const stop[1] = {"the"};
    hs_token prompts[N_REQ][64];
    for (int round = 0; round < 2; round++) {
        struct hs_engine_handle *h[N_REQ];
        for (int i = 0; i < N_REQ; i++) {
            struct hs_engine_request rq;
            make_request(m, i, prompts[i], &rq, stop);
            if (g_grammar) {
                rq.grammar = g_grammar;
                rq.n_grammar = strlen(g_grammar);
                rq.ignore_eos = false;
            }
            struct hs_error err = {0};
            cr_assert_eq(hs_engine_submit(e, &rq, &h[i], &err), HS_OK, "%s", err.message);
        }
        for (int i = 0; i < N_REQ; i++) {
            collect(h[i], &res[round * N_REQ + i]);
            hs_engine_release(h[i]);
        }
        wait_idle(e);
    }
}

/* Returns the preemptions of the engine with speculation. */
static uint64_t same_greedy_results_kv(const char *name, int n_blocks)
{
    struct hs_model *m = load(name);
    struct result *off = calloc(2 * N_REQ, sizeof(*off));
    struct result *on = calloc(2 * N_REQ, sizeof(*on));
    struct hs_engine *e = make_engine_kv(m, 0, N_REQ, n_blocks);
    run_rounds(e, m, off);
    hs_engine_destroy(e);
    e = make_engine_kv(m, 16, N_REQ, n_blocks);
    run_rounds(e, m, on);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    hs_engine_destroy(e);
    uint64_t drafted = 0, accepted = 0, drafts = 0;
    for (int s = 0; s < 3; s++) {
        drafted += mt.spec_drafted[s];
        accepted += mt.spec_accepted[s];
        drafts += mt.spec_drafts[s];
        cr_assert(mt.spec_accepted[s] <= mt.spec_drafted[s]);
    }
    cr_assert(mt.spec_cost_knee == 16.0, "%s: knee %g, not the one given", name, mt.spec_cost_knee);
    cr_assert(accepted > 0 && drafts > 0, "%s: no draft was accepted (drafted %llu)", name,
              (unsigned long long)drafted);
    /* the second round replays the first: earlier responses must have been drafted from */
    cr_assert(mt.spec_accepted[1] + mt.spec_accepted[2] > 0, "%s: the store drafted nothing", name);
    /* the store's gauges: what it holds, within its bound; the sequences' own tries are gone */
    const size_t bound = g_store_bytes ? g_store_bytes : HS_SUFFIX_STORE_BYTES;
    cr_assert(mt.spec_store_responses > 0 && mt.spec_store_responses <= 2 * N_REQ * 2);
    cr_assert(mt.spec_store_bytes > 0 && mt.spec_store_bytes <= bound, "%s: store %llu bytes", name,
              (unsigned long long)mt.spec_store_bytes);
    cr_assert_eq(mt.spec_text_bytes, 0, "%s: request tries left %llu bytes", name,
                 (unsigned long long)mt.spec_text_bytes);
    cr_assert(!g_store_bytes || mt.spec_store_responses < N_REQ,
              "%s: the small store held %llu responses, evicting none", name,
              (unsigned long long)mt.spec_store_responses);
    for (int r = 0; r < 2 * N_REQ; r++) {
        const struct result *a = &off[r];
        const struct result *b = &on[r];
        cr_assert_eq(a->status, HS_OK, "%s request %d failed: %d", name, r, a->status);
        cr_assert_eq(b->status, a->status);
        cr_assert_eq(b->usage.completion_tokens, a->usage.completion_tokens,
                     "%s request %d: %d completion tokens with speculation, %d without", name, r,
                     b->usage.completion_tokens, a->usage.completion_tokens);
        for (int c = 0; c < HS_ENGINE_MAX_CHOICES; c++) {
            cr_assert_eq(b->n_toks[c], a->n_toks[c], "%s request %d choice %d: %d tokens vs %d",
                         name, r, c, b->n_toks[c], a->n_toks[c]);
            cr_assert_eq(b->fin[c], a->fin[c]);
            for (int k = 0; k < a->n_toks[c]; k++) {
                cr_assert_eq(b->toks[c][k], a->toks[c][k], "%s request %d token %d: %d vs %d", name,
                             r, k, b->toks[c][k], a->toks[c][k]);
                cr_assert(b->lp[c][k] == a->lp[c][k],
                          "%s request %d token %d: logprob %.9g vs %.9g", name, r, k,
                          (double)b->lp[c][k], (double)a->lp[c][k]);
                for (int j = 0; j < 3; j++) {
                    cr_assert_eq(b->top[c][k][j], a->top[c][k][j]);
                    cr_assert(b->top_lp[c][k][j] == a->top_lp[c][k][j]);
                }
            }
            cr_assert_eq(b->n_text[c], a->n_text[c]);
            cr_assert(!memcmp(b->text[c], a->text[c], a->n_text[c]));
        }
    }
    free(off);
    free(on);
    hs_model_destroy(m);
    return mt.preemptions;
}

static void same_greedy_results(const char *name)
{
    same_greedy_results_kv(name, 0);
}

Test(spec, greedy_stories260k_is_unchanged, .timeout = 300)
{
    same_greedy_results("stories260K.gguf");
}

Test(spec, greedy_is_unchanged_when_the_kv_pool_preempts, .timeout = 300)
{
    /* 40 blocks of 16 for 16 sequences: preemption and failed draft reservations */
    cr_assert(same_greedy_results_kv("stories260K.gguf", 40) > 0, "nothing was preempted");
}

Test(spec, greedy_is_unchanged_with_a_store_that_evicts, .timeout = 300)
{
    /* 256 KiB hold a few of the 32 responses (cut to their beginnings): evictions between and
     * during the rounds change what is drafted, never the output */
    g_store_bytes = 256 << 10;
    same_greedy_results("stories260K.gguf");
    g_store_bytes = 0;
}

Test(spec, greedy_is_unchanged_under_a_grammar, .timeout = 300)
{
    /* a repetitive grammar: the constraint masks every verified row as it masks a decode */
    g_grammar = "root ::= (\"the cat sat on the mat\" | \" and the dog ran\" | \". \")+\n";
    same_greedy_results("stories260K.gguf");
    g_grammar = NULL;
}

/* Under valgrind (HS_VALGRIND; ~100 times slower) the next two tests run one file each, a
 * quantized dense model and an MoE one, with the same workload and checks. */
Test(spec, greedy_tiny_models_are_unchanged, .timeout = 600)
{
    same_greedy_results("tiny-q8_0.gguf");
    if (getenv("HS_VALGRIND")) {
        return;
    }
    same_greedy_results("tiny-f32.gguf");
    same_greedy_results("tiny-f16.gguf");
    same_greedy_results("tiny-q4_k_m.gguf");
}

Test(spec, greedy_bpe_and_moe_models_are_unchanged, .timeout = 600)
{
    same_greedy_results("moe-qwen3-mini-q8_0.gguf");
    if (getenv("HS_VALGRIND")) {
        return;
    }
    same_greedy_results("qwen2-bpe-f32.gguf");
    same_greedy_results("llama3-bpe-f32.gguf");
    same_greedy_results("qwen3-bpe-q8_0.gguf");
    same_greedy_results("moe-qwen2-mini-q8_0.gguf");
    same_greedy_results("moe-qwen2-mini-f32.gguf");
    same_greedy_results("moe-mixtral-mini-f32.gguf");
    same_greedy_results("qwen3-vocab-f16.gguf");
}

/* ---- the sampled distribution ---- */

#define N_SAMPLES 600
#define N_FIRST   3 /* tokens per sample */

/* Histogram of (token 1, token 2) after a fixed prompt at temperature 1 over N_SAMPLES seeds,
 * as pairs id1 * n_vocab + id2 into a sorted array. */
static int cmp_i64(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void sample_pairs(struct hs_engine *e, struct hs_model *m, int64_t *pairs, uint64_t seed0)
{
    hs_token prompt[64];
    size_t n = 0;
    const char *t = "Once upon a time";
    cr_assert_eq(hs_tokenize(hs_model_vocab(m), t, strlen(t), true, false, prompt, 64, &n), HS_OK);
    const int32_t nv = hs_model_hparams(m)->n_vocab;
    struct result *r = malloc(sizeof(*r));
    for (int b = 0; b < N_SAMPLES; b += 8) {
        struct hs_engine_handle *h[8];
        for (int i = 0; i < 8; i++) {
            struct hs_engine_request rq;
            hs_engine_request_init(&rq);
            rq.prompt = prompt;
            rq.n_prompt = (int32_t)n;
            rq.max_tokens = N_FIRST;
            rq.ignore_eos = true;
            rq.sampling.temperature = 1.0f;
            rq.sampling.top_k = 0;
            rq.sampling.top_p = 1.0f;
            rq.sampling.min_p = 0.0f;
            rq.sampling.seed = seed0 + (uint64_t)(b + i);
            struct hs_error err = {0};
            cr_assert_eq(hs_engine_submit(e, &rq, &h[i], &err), HS_OK, "%s", err.message);
        }
        for (int i = 0; i < 8; i++) {
            collect(h[i], r);
            hs_engine_release(h[i]);
            cr_assert_eq(r->n_toks[0], N_FIRST);
            pairs[b + i] = (int64_t)r->toks[0][1] * nv + r->toks[0][2];
        }
    }
    free(r);
    wait_idle(e);
    qsort(pairs, N_SAMPLES, sizeof(*pairs), cmp_i64);
}

Test(spec, sampled_distribution_is_unchanged, .timeout = 300)
{
    /* Tokens 2 and 3 of each sample come out of verification once the store holds the earlier
     * samples' answers to the same prompt. Two-sample chi-square over the pairs seen at least
     * 10 times in both samples together (the rest pooled), against the p = 0.001 bound. */
    struct hs_model *m = load("stories260K.gguf");
    int64_t *a = calloc(N_SAMPLES, sizeof(*a));
    int64_t *b = calloc(N_SAMPLES, sizeof(*b));
    struct hs_engine *e = make_engine(m, 0, 8);
    sample_pairs(e, m, a, 1000);
    hs_engine_destroy(e);
    e = make_engine(m, 8, 8);
    sample_pairs(e, m, b, 5000);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    hs_engine_destroy(e);
    uint64_t drafted = 0, accepted = 0;
    for (int s = 0; s < 3; s++) {
        drafted += mt.spec_drafted[s];
        accepted += mt.spec_accepted[s];
    }
    cr_assert(accepted > 50 && drafted > accepted,
              "verification must both accept and reject: %llu of %llu accepted",
              (unsigned long long)accepted, (unsigned long long)drafted);
    /* merge the sorted samples into bins */
    double chi = 0.0;
    int df = 0;
    int pool_a = 0, pool_b = 0;
    for (int i = 0, j = 0; i < N_SAMPLES || j < N_SAMPLES;) {
        const int64_t v = j >= N_SAMPLES || (i < N_SAMPLES && a[i] <= b[j]) ? a[i] : b[j];
        int ca = 0, cb = 0;
        for (; i < N_SAMPLES && a[i] == v; i++) {
            ca++;
        }
        for (; j < N_SAMPLES && b[j] == v; j++) {
            cb++;
        }
        if (ca + cb < 10) {
            pool_a += ca;
            pool_b += cb;
            continue;
        }
        chi += (double)(ca - cb) * (ca - cb) / (ca + cb);
        df++;
    }
    if (pool_a + pool_b > 0) {
        chi += (double)(pool_a - pool_b) * (pool_a - pool_b) / (pool_a + pool_b);
        df++;
    }
    df -= 1;
    cr_assert(df >= 3, "too few bins (%d) for the test to mean anything", df);
    /* chi-square quantile at 1 - 0.001 by Wilson-Hilferty */
    const double z = 3.0902;
    const double w = 1.0 - 2.0 / (9.0 * df) + z * sqrt(2.0 / (9.0 * df));
    const double bound = df * w * w * w;
    cr_assert(chi < bound, "chi-square %g over %d degrees of freedom >= %g", chi, df, bound);
    free(a);
    free(b);
    hs_model_destroy(m);
}
