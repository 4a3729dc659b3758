/* Reasoning tracker and budget constraint (server/reasoning.h). */
#include "server/reasoning.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

const char *hs_reasoning_phase_str(enum hs_reasoning_phase p)
{
    static const char *const names[HS_REASONING_PHASE_COUNT] = {"before", "think", "closing",
                                                                "answer"};
    return p >= 0 && p < HS_REASONING_PHASE_COUNT ? names[p] : "unknown";
}

hs_status hs_reasoning_params_check(const struct hs_reasoning_params *p, int32_t n_vocab,
                                    struct hs_error *err)
{
    if (!p->enabled) {
        return HS_OK;
    }
    if (p->open >= n_vocab || p->open < -1) {
        return hs_error_set(err, HS_E_INVAL, "reasoning open token %d is not in the vocabulary",
                            (int)p->open);
    }
    if (p->close < 0 || p->close >= n_vocab) {
        return hs_error_set(err, HS_E_INVAL, "reasoning close token %d is not in the vocabulary",
                            (int)p->close);
    }
    if (p->n_close_seq < 0 || p->n_close_seq > HS_REASONING_MAX_CLOSE ||
        (p->budget_tokens >= 0 && p->n_close_seq < 1)) {
        return hs_error_set(err, HS_E_INVAL, "reasoning close sequence must have 1 to %d tokens",
                            HS_REASONING_MAX_CLOSE);
    }
    for (int32_t i = 0; i < p->n_close_seq; i++) {
        if (p->close_seq[i] < 0 || p->close_seq[i] >= n_vocab) {
            return hs_error_set(err, HS_E_INVAL,
                                "reasoning close sequence token %d is not in the vocabulary",
                                (int)p->close_seq[i]);
        }
    }
    return HS_OK;
}

/* Enters THINK, or CLOSING straight away when the budget is already spent. */
static void enter_think(struct hs_reasoning *r)
{
    r->phase = r->p.budget_tokens >= 0 && r->n_think >= r->p.budget_tokens ? HS_REASONING_CLOSING
                                                                           : HS_REASONING_THINK;
}

hs_status hs_reasoning_init(struct hs_reasoning *r, const struct hs_reasoning_params *p,
                            const struct hs_sampler_constraint *inner, int32_t n_vocab)
{
    *r = (struct hs_reasoning){.p = *p, .n_vocab = n_vocab};
    if (inner) {
        r->inner = *inner;
    }
    if (inner && p->enabled && !p->open_in_prompt && p->open >= 0) {
        r->mask = malloc(HS_TOKEN_MASK_WORDS(n_vocab) * sizeof(*r->mask));
        if (!r->mask) {
            *r = (struct hs_reasoning){0};
            return HS_E_NOMEM;
        }
    }
    r->phase = HS_REASONING_BEFORE;
    if (!p->enabled) {
        r->phase = HS_REASONING_ANSWER;
    } else if (p->open_in_prompt) {
        enter_think(r);
    }
    return HS_OK;
}

void hs_reasoning_finish(struct hs_reasoning *r)
{
    free(r->mask);
    r->mask = NULL;
}

/* BEFORE with an inner constraint: the open marker or what inner allows first. */
static hs_status allowed_before(struct hs_reasoning *r, struct hs_token_set *set)
{
    struct hs_token_set in;
    HS_TRY(r->inner.allowed(r->inner.user, &in));
    if (in.kind == HS_TOKEN_SET_ALL) {
        *set = in;
        return HS_OK;
    }
    const size_t words = HS_TOKEN_MASK_WORDS(r->n_vocab);
    if (in.kind == HS_TOKEN_SET_MASK) {
        memcpy(r->mask, in.mask, words * sizeof(*r->mask));
    } else {
        memset(r->mask, 0, words * sizeof(*r->mask));
        hs_token_mask_set(r->mask, in.forced[0]);
    }
    hs_token_mask_set(r->mask, r->p.open);
    *set = (struct hs_token_set){.kind = HS_TOKEN_SET_MASK, .mask = r->mask};
    return HS_OK;
}

bool hs_reasoning_in_answer(const struct hs_reasoning *r)
{
    return r->n_answer > 0;
}

static hs_status allowed(void *user, struct hs_token_set *set)
{
    struct hs_reasoning *r = user;
    switch (r->phase) {
    case HS_REASONING_CLOSING:
        set->kind = HS_TOKEN_SET_FORCED;
        set->forced = r->p.close_seq + r->n_forced;
        set->n_forced = r->p.n_close_seq - r->n_forced;
        set->mask = NULL;
        return HS_OK;
    case HS_REASONING_ANSWER:
        if (r->inner.allowed) {
            return r->inner.allowed(r->inner.user, set);
        }
        break;
    case HS_REASONING_BEFORE:
        if (r->mask) {
            return allowed_before(r, set);
        }
        if (r->inner.allowed) { /* no open token: inner decides from the first token on */
            return r->inner.allowed(r->inner.user, set);
        }
        break;
    default:
        break;
    }
    *set = (struct hs_token_set){.kind = HS_TOKEN_SET_ALL};
    return HS_OK;
}

static hs_status accept(void *user, hs_token t)
{
    struct hs_reasoning *r = user;
    switch (r->phase) {
    case HS_REASONING_BEFORE:
        if (t == r->p.open && t >= 0) {
            enter_think(r);
            return HS_OK;
        }
        r->phase = HS_REASONING_ANSWER; /* the model answered without thinking */
        r->n_answer++;
        return r->inner.accept ? r->inner.accept(r->inner.user, t) : HS_OK;
    case HS_REASONING_THINK:
        if (t == r->p.close) {
            r->phase = HS_REASONING_ANSWER;
            return HS_OK;
        }
        r->n_think++;
        enter_think(r);
        return HS_OK;
    case HS_REASONING_CLOSING:
        if (t != r->p.close_seq[r->n_forced]) {
            return HS_E_INVAL; /* the sampler draws only the forced token */
        }
        if (++r->n_forced == r->p.n_close_seq) {
            r->phase = HS_REASONING_ANSWER;
        }
        return HS_OK;
    case HS_REASONING_ANSWER:
    default:
        r->n_answer++;
        return r->inner.accept ? r->inner.accept(r->inner.user, t) : HS_OK;
    }
}

struct hs_sampler_constraint hs_reasoning_constraint(struct hs_reasoning *r)
{
    return (struct hs_sampler_constraint){allowed, accept, r};
}
