/* tests/server: the thinking-block tracker as a sampler constraint (server/reasoning.c): budgets
 * force the close sequence, the inner constraint sees only the answer, stop phase. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/reasoning.h"
#include "server/sampling.h"

#define N_VOCAB 64
enum { OPEN = 10, CLOSE = 11, SEP = 12, WORD = 20, ONLY = 30 };

/* An inner constraint allowing only token ONLY, logging what it accepted. */
struct inner {
    uint32_t mask[HS_TOKEN_MASK_WORDS(N_VOCAB)];
    hs_token log[64];
    int n;
};

static hs_status inner_allowed(void *u, struct hs_token_set *set)
{
    struct inner *in = u;
    *set = (struct hs_token_set){.kind = HS_TOKEN_SET_MASK, .mask = in->mask};
    return HS_OK;
}

static hs_status inner_accept(void *u, hs_token t)
{
    struct inner *in = u;
    in->log[in->n++] = t;
    return t == ONLY ? HS_OK : HS_E_INVAL;
}

/* Greedy generation of n tokens where the model's favourite is `fav` (then OPEN at step 0 when
 * think_first). Writes the tokens to out. */
static void run(struct hs_reasoning *r, hs_token fav, bool think_first, int n, hs_token *out)
{
    struct hs_sampling_params p = hs_sampling_default_params();
    p.temperature = 0;
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, N_VOCAB, &s), HS_OK);
    const struct hs_sampler_constraint c = hs_reasoning_constraint(r);
    hs_sampler_set_constraint(s, &c);
    float logits[N_VOCAB];
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < N_VOCAB; k++) {
            logits[k] = (float)(k % 7) * 0.01f;
        }
        logits[OPEN] = -1.0f; /* the model opens the block only when think_first says so */
        logits[i == 0 && think_first ? OPEN : fav] = 5.0f;
        out[i] = hs_sampler_sample(s, logits);
        cr_assert_geq(out[i], 0, "step %d: %s", i, hs_sample_result_str(hs_sampler_last_result(s)));
        cr_assert_eq(hs_sampler_accept(s, out[i]), HS_OK, "step %d token %d", i, out[i]);
    }
    hs_sampler_destroy(s);
}

static struct hs_reasoning_params params(int32_t budget, bool in_prompt)
{
    struct hs_reasoning_params p = {.enabled = true,
                                    .open_in_prompt = in_prompt,
                                    .open = OPEN,
                                    .close = CLOSE,
                                    .budget_tokens = budget,
                                    .close_seq = {CLOSE, SEP},
                                    .n_close_seq = 2};
    return p;
}

Test(reasoning, budget_forces_close_then_inner_constraint_takes_the_answer)
{
    for (int32_t budget = 0; budget <= 4; budget++) {
        struct inner in = {0};
        hs_token_mask_set(in.mask, ONLY);
        const struct hs_sampler_constraint ic = {inner_allowed, inner_accept, &in};
        struct hs_reasoning r;
        const struct hs_reasoning_params p = params(budget, false);
        cr_assert_eq(hs_reasoning_params_check(&p, N_VOCAB, NULL), HS_OK);
        cr_assert_eq(hs_reasoning_init(&r, &p, &ic, NULL, N_VOCAB), HS_OK);
        hs_token out[12];
        run(&r, WORD, true, 12, out);
        cr_assert_eq(out[0], OPEN);
        for (int i = 1; i <= budget; i++) {
            cr_assert_eq(out[i], WORD, "thinking is unconstrained (budget %d, step %d)", budget, i);
        }
        cr_assert_eq(out[budget + 1], CLOSE, "budget %d", budget);
        cr_assert_eq(out[budget + 2], SEP);
        for (int i = budget + 3; i < 12; i++) {
            cr_assert_eq(out[i], ONLY, "the answer follows the inner constraint");
        }
        cr_assert_eq(in.n, 12 - (budget + 3), "the inner constraint saw only the answer");
        cr_assert_eq(r.n_think, budget);
        cr_assert(hs_reasoning_in_answer(&r));
        hs_reasoning_finish(&r);
    }
}

Test(reasoning, before_the_block_the_first_token_is_the_open_marker_or_the_inner_set)
{
    struct inner in = {0};
    hs_token_mask_set(in.mask, ONLY);
    const struct hs_sampler_constraint ic = {inner_allowed, inner_accept, &in};
    struct hs_reasoning r;
    const struct hs_reasoning_params p = params(4, false);
    cr_assert_eq(hs_reasoning_init(&r, &p, &ic, NULL, N_VOCAB), HS_OK);
    hs_token out[4];
    run(&r, WORD, false, 4, out); /* the model wants WORD, which neither allows */
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(out[i], ONLY, "step %d: the grammar's token, not %d", i, out[i]);
    }
    cr_assert_eq(in.n, 4);
    hs_reasoning_finish(&r);
}

Test(reasoning, block_open_in_the_prompt_and_no_budget)
{
    struct hs_reasoning r;
    const struct hs_reasoning_params p = params(-1, true);
    cr_assert_eq(hs_reasoning_init(&r, &p, NULL, NULL, N_VOCAB), HS_OK);
    hs_token out[20];
    run(&r, WORD, false, 20, out);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(out[i], WORD, "no budget: nothing is forced");
    }
    cr_assert_eq(r.n_think, 20);
    cr_assert_not(hs_reasoning_in_answer(&r), "stops stay off inside the block");
}

Test(reasoning, model_closing_itself_and_answering_without_a_block)
{
    struct hs_reasoning r;
    const struct hs_reasoning_params p = params(8, true);
    cr_assert_eq(hs_reasoning_init(&r, &p, NULL, NULL, N_VOCAB), HS_OK);
    hs_token out[3];
    run(&r, CLOSE, false, 1, out);
    cr_assert_not(hs_reasoning_in_answer(&r), "the close marker itself is not the answer");
    run(&r, WORD, false, 1, out);
    cr_assert(hs_reasoning_in_answer(&r));
    cr_assert_eq(r.n_think, 0);

    const struct hs_reasoning_params q = params(8, false);
    cr_assert_eq(hs_reasoning_init(&r, &q, NULL, NULL, N_VOCAB), HS_OK);
    run(&r, WORD, false, 1, out);
    cr_assert(hs_reasoning_in_answer(&r), "no open marker first: an answer");
}

Test(reasoning, params_check_names_bad_tokens)
{
    struct hs_error err = {0};
    struct hs_reasoning_params p = params(4, false);
    p.close_seq[1] = N_VOCAB;
    cr_assert_eq(hs_reasoning_params_check(&p, N_VOCAB, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "close sequence"), "%s", err.message);
    p = params(4, false);
    p.n_close_seq = 0;
    cr_assert_eq(hs_reasoning_params_check(&p, N_VOCAB, &err), HS_E_INVAL);
    p = params(4, false);
    p.enabled = false;
    p.close = -5;
    cr_assert_eq(hs_reasoning_params_check(&p, N_VOCAB, &err), HS_OK, "disabled: unchecked");
}

/* ---- text markers: Hunyuan's format on a vocabulary without <think> tokens ---- */

#include <stdio.h>
#include <stdlib.h>

#include "model/gguf/gguf.h"
#include "model/tokenizer/vocab.h"

static struct hs_vocab *load_vocab(const char *file)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert_not_null(dir, "HS_MODELS_DIR is not set");
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    struct hs_gguf *g = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s", err.message);
    struct hs_vocab *v = NULL;
    cr_assert_eq(hs_vocab_load(g, &v, &err), HS_OK, "%s", err.message);
    hs_gguf_close(g);
    return v;
}

static int32_t tokenize(const struct hs_vocab *v, const char *s, hs_token *out, size_t cap)
{
    size_t n = 0;
    cr_assert_eq(hs_tokenize(v, s, strlen(s), false, false, out, cap, &n), HS_OK);
    return (int32_t)n;
}

static struct hs_reasoning_params hunyuan_params(int32_t budget)
{
    struct hs_reasoning_params p = {
        .enabled = true, .open = -1, .close = -1, .budget_tokens = budget};
    snprintf(p.open_text, sizeof(p.open_text), "<think>\n");
    snprintf(p.close_text, sizeof(p.close_text), "\n</think>");
    snprintf(p.after_close, sizeof(p.after_close), "\n<answer>\n");
    return p;
}

/* Feeds the tokens of text; returns the index of the first token the tracker counts as the
 * answer (n when none). */
static int32_t feed(struct hs_reasoning *r, const hs_token *t, int32_t n)
{
    const struct hs_sampler_constraint c = hs_reasoning_constraint(r);
    int32_t first = n;
    for (int32_t i = 0; i < n; i++) {
        cr_assert_eq(c.accept(c.user, t[i]), HS_OK, "token %d", i);
        if (first == n && hs_reasoning_in_answer(r)) {
            first = i;
        }
    }
    return first;
}

Test(reasoning_text, multi_token_markers_whatever_tokens_spell_them)
{
    struct hs_vocab *v = load_vocab("qwen2-bpe-f32.gguf");
    cr_assert_lt(hs_vocab_find(v, "<think>"), 0, "the markers are not tokens here");
    const int32_t nv = hs_vocab_n_tokens(v);
    hs_token think[64], marker[16], t[128];
    const int32_t n_think = tokenize(v, "Two plus two is four", think, 64);
    const int32_t n_open = tokenize(v, "<think>\n", marker, 16);
    cr_assert_gt(n_open, 1, "<think> is several tokens");
    /* spelled as the tokenizer does, and spelled one character per token */
    const char *const closes[] = {"\n</think>\n<answer>\n", NULL};
    for (int variant = 0; variant < 2; variant++) {
        int32_t n = 0;
        n += tokenize(v, "<think>\n", t + n, 16);
        memcpy(t + n, think, (size_t)n_think * sizeof(*t));
        n += n_think;
        if (closes[variant]) {
            n += tokenize(v, closes[variant], t + n, 16);
        } else {
            for (const char *ch = "\n</think>\n<answer>\n"; *ch; ch++) {
                const char one[2] = {*ch, 0};
                cr_assert_eq(tokenize(v, one, t + n, 1), 1);
                n++;
            }
        }
        const int32_t answer_at = n;
        n += tokenize(v, "4\n</answer>", t + n, 16);
        struct hs_reasoning r;
        const struct hs_reasoning_params p = hunyuan_params(-1);
        cr_assert_eq(hs_reasoning_params_check(&p, nv, NULL), HS_OK);
        cr_assert_eq(hs_reasoning_init(&r, &p, NULL, v, nv), HS_OK);
        cr_assert_eq(feed(&r, t, n), answer_at, "variant %d: the answer starts after the separator",
                     variant);
        cr_assert_eq(hs_reasoning_n_think(&r), n_think,
                     "variant %d: the thinking tokens are counted, the markers' are not (%d)",
                     variant, hs_reasoning_n_think(&r));
        hs_reasoning_finish(&r);
    }
    /* no block: Hunyuan's answer without thinking is the answer from its first token */
    int32_t n = tokenize(v, "<answer>\n4\n</answer>", t, 16);
    struct hs_reasoning r;
    const struct hs_reasoning_params p = hunyuan_params(-1);
    cr_assert_eq(hs_reasoning_init(&r, &p, NULL, v, nv), HS_OK);
    cr_assert_eq(t[0], 60, "'<' alone (may start <think>)");
    cr_assert_eq(feed(&r, t, n), 1, "'<an' can no longer be <think>: the answer");
    cr_assert_eq(hs_reasoning_n_think(&r), 0);
    hs_vocab_destroy(v);
}

Test(reasoning_text, budget_forces_the_multi_token_close_and_separator)
{
    struct hs_vocab *v = load_vocab("qwen2-bpe-f32.gguf");
    const int32_t nv = hs_vocab_n_tokens(v);
    hs_token open[16], word[4];
    const int32_t n_open = tokenize(v, "<think>\n", open, 16);
    cr_assert_eq(tokenize(v, "x", word, 4), 1);
    for (int32_t budget = 0; budget <= 3; budget++) {
        struct hs_reasoning_params p = hunyuan_params(budget);
        p.n_close_seq = tokenize(v, "\n</think>\n<answer>\n", p.close_seq, HS_REASONING_MAX_CLOSE);
        cr_assert_gt(p.n_close_seq, 2, "the close is several tokens");
        struct hs_reasoning r;
        cr_assert_eq(hs_reasoning_init(&r, &p, NULL, v, nv), HS_OK);
        cr_assert_eq(feed(&r, open, n_open), n_open, "the open marker is no answer");
        const struct hs_sampler_constraint c = hs_reasoning_constraint(&r);
        for (int32_t i = 0; i < budget; i++) {
            struct hs_token_set set;
            cr_assert_eq(c.allowed(c.user, &set), HS_OK);
            cr_assert_eq(set.kind, HS_TOKEN_SET_ALL, "budget %d: thinking is free", budget);
            cr_assert_eq(c.accept(c.user, word[0]), HS_OK);
        }
        /* spent: the whole sequence is forced, then the answer is free */
        for (int32_t i = 0; i < p.n_close_seq; i++) {
            struct hs_token_set set;
            cr_assert_eq(c.allowed(c.user, &set), HS_OK);
            cr_assert_eq(set.kind, HS_TOKEN_SET_FORCED, "budget %d, close token %d", budget, i);
            cr_assert_eq(set.forced[0], p.close_seq[i]);
            cr_assert_eq(set.n_forced, p.n_close_seq - i);
            cr_assert_not(hs_reasoning_in_answer(&r), "the separator is not the answer");
            cr_assert_eq(c.accept(c.user, set.forced[0]), HS_OK);
        }
        struct hs_token_set set;
        cr_assert_eq(c.allowed(c.user, &set), HS_OK);
        cr_assert_eq(set.kind, HS_TOKEN_SET_ALL);
        cr_assert_eq(c.accept(c.user, word[0]), HS_OK);
        cr_assert(hs_reasoning_in_answer(&r));
        cr_assert_eq(hs_reasoning_n_think(&r), budget);
        hs_reasoning_finish(&r);
    }
    hs_vocab_destroy(v);
}
