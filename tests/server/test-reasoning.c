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
        cr_assert_eq(hs_reasoning_init(&r, &p, &ic, N_VOCAB), HS_OK);
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
    cr_assert_eq(hs_reasoning_init(&r, &p, &ic, N_VOCAB), HS_OK);
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
    cr_assert_eq(hs_reasoning_init(&r, &p, NULL, N_VOCAB), HS_OK);
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
    cr_assert_eq(hs_reasoning_init(&r, &p, NULL, N_VOCAB), HS_OK);
    hs_token out[3];
    run(&r, CLOSE, false, 1, out);
    cr_assert_not(hs_reasoning_in_answer(&r), "the close marker itself is not the answer");
    run(&r, WORD, false, 1, out);
    cr_assert(hs_reasoning_in_answer(&r));
    cr_assert_eq(r.n_think, 0);

    const struct hs_reasoning_params q = params(8, false);
    cr_assert_eq(hs_reasoning_init(&r, &q, NULL, N_VOCAB), HS_OK);
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
