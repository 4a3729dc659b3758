/* Fixtures shared by test-engine.c (the engine against the naive greedy loop, and its
 * contracts) and test-engine-split.c (split execution: ping-pong, the attention backends, the
 * balances): one test program, server/engine. */
#ifndef HS_TESTS_SERVER_ENGINE_FIXTURES_H
#define HS_TESTS_SERVER_ENGINE_FIXTURES_H

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

#define MAX_GEN  512
#define TEXT_CAP 8192

static inline struct hs_model *load_file(const char *path)
{
    struct hs_model *m = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_model_load(path, &m, &err), HS_OK, "%s: %s", path, err.message);
    return m;
}

static inline int tokenize(const struct hs_model *m, const char *text, hs_token *out, int cap)
{
    size_t n = 0;
    cr_assert_eq(
        hs_tokenize(hs_model_vocab(m), text, strlen(text), true, false, out, (size_t)cap, &n),
        HS_OK);
    cr_assert(n > 0);
    return (int)n;
}

struct result {
    hs_token toks[HS_ENGINE_MAX_CHOICES][MAX_GEN];
    float lp[HS_ENGINE_MAX_CHOICES][MAX_GEN];
    int n_top[HS_ENGINE_MAX_CHOICES][MAX_GEN];
    hs_token top0[HS_ENGINE_MAX_CHOICES][MAX_GEN];
    int n_toks[HS_ENGINE_MAX_CHOICES];
    char text[HS_ENGINE_MAX_CHOICES][TEXT_CAP];
    size_t n_text[HS_ENGINE_MAX_CHOICES];
    enum hs_finish_reason fin[HS_ENGINE_MAX_CHOICES];
    int n_final[HS_ENGINE_MAX_CHOICES];
    int n_deltas;
    bool done;
    struct hs_engine_usage usage;
    hs_status status;
};

/* Reads events until DONE, checking the channel's contracts on the way. */
static inline void collect(struct hs_engine_handle *h, struct result *r)
{
    struct hs_engine_event ev;
    for (;;) {
        hs_status st = hs_engine_wait(h, &ev, 30000);
        cr_assert_eq(st, HS_OK, "no event within 30 s: %s", hs_status_name(st));
        if (ev.type == HS_EVENT_DONE) {
            r->done = true;
            r->usage = ev.usage;
            r->status = ev.status;
            break;
        }
        cr_assert_eq(ev.type, HS_EVENT_DELTA);
        int c = ev.choice;
        cr_assert(c >= 0 && c < HS_ENGINE_MAX_CHOICES);
        cr_assert_eq(r->n_final[c], 0, "choice %d got output after its final event", c);
        cr_assert_eq(ev.text[ev.n_text], '\0');
        cr_assert(r->n_text[c] + ev.n_text < TEXT_CAP);
        memcpy(r->text[c] + r->n_text[c], ev.text, ev.n_text);
        r->n_text[c] += ev.n_text;
        for (int i = 0; i < ev.n_tokens; i++) {
            cr_assert(r->n_toks[c] < MAX_GEN);
            if (ev.logprobs) {
                const struct hs_token_logprob *l = &ev.logprobs[i];
                cr_assert_eq(l->token, ev.tokens[i]);
                cr_assert(l->logprob <= 0.0f);
                for (int k = 1; k < l->n_top; k++) {
                    cr_assert(l->top_logprobs[k] <= l->top_logprobs[k - 1]);
                }
                r->lp[c][r->n_toks[c]] = l->logprob;
                r->n_top[c][r->n_toks[c]] = l->n_top;
                r->top0[c][r->n_toks[c]] = l->n_top > 0 ? l->top_ids[0] : -1;
            }
            r->toks[c][r->n_toks[c]++] = ev.tokens[i];
        }
        if (ev.finish_reason != HS_FINISH_NONE) {
            r->fin[c] = ev.finish_reason;
            r->n_final[c]++;
        }
        r->n_deltas++;
    }
    cr_assert_eq(hs_engine_poll(h, &ev), HS_E_NOENT, "events after DONE");
}

static inline struct hs_engine *make_engine(struct hs_model *m, int n_parallel, int n_ctx,
                                            int n_blocks, int n_batch)
{
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = n_parallel;
    p.n_ctx = n_ctx;
    p.n_kv_blocks = n_blocks;
    p.n_batch_tokens = n_batch;
    p.kv_type = HS_TYPE_F32;
    p.n_threads = getenv("T") ? atoi(getenv("T")) : 2;
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_engine_create(m, &p, &e, &err), HS_OK, "%s", err.message);
    return e;
}

static inline void wait_idle(struct hs_engine *e)
{
    struct hs_engine_metrics mt;
    for (int i = 0; i < 5000; i++) {
        hs_engine_get_metrics(e, &mt);
        if (mt.n_running == 0 && mt.n_waiting == 0 && mt.n_seqs_running == 0) {
            return;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("engine did not go idle");
}

static const char *const base_prompts[8] = {
    "Once upon a time",
    "Lily and Tom went to the park",
    "The little dog was sad because",
    "One day, a big red ball",
    "Tim saw a bird in the sky. He",
    "Mom said to Sue",
    "The sun was hot and the kids wanted to",
    "There was a cat who liked to",
};

static inline int make_prompt(struct hs_model *m, int i, hs_token *out, int cap)
{
    static const char *const lead[4] = {"", "It was a sunny day. ", "Ben had a toy. ",
                                        "The End. Once more: "};
    char text[256];
    snprintf(text, sizeof(text), "%s%s", lead[(i / 8) % 4], base_prompts[i % 8]);
    return tokenize(m, text, out, cap);
}

#endif
