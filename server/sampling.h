/* Token sampling: penalties, logit bias, an optional constraint (grammar, forced tokens), top-k,
 * top-p, min-p, temperature, seeded draws. Order: logit bias -> penalties -> constraint -> top-k
 * -> top-p -> min-p -> temperature -> draw (llama.cpp's default chain, with the constraint
 * applied after bias and penalties so that a banned token can never be drawn, even when the
 * constraint allows it). temperature <= 0 is greedy (argmax of what survives the constraint).
 * Thread: a sampler belongs to one request, used by the engine thread. */
#ifndef HS_SERVER_SAMPLING_H
#define HS_SERVER_SAMPLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

struct hs_logit_bias {
    hs_token token;
    float bias; /* -INFINITY bans the token */
};

struct hs_sampling_params {
    float temperature;        /* <= 0: greedy; default 0.8 */
    int32_t top_k;            /* <= 0: off; default 40 */
    float top_p;              /* >= 1: off; default 0.95 */
    float min_p;              /* <= 0: off; default 0.05 */
    float repetition_penalty; /* 1: off (llama.cpp's repeat_penalty) */
    float presence_penalty;   /* 0: off (OpenAI) */
    float frequency_penalty;  /* 0: off (OpenAI) */
    int32_t penalty_last_n;   /* window of recent tokens the penalties look at; -1: all,
                               * 0: penalties off; at most 1 << 20 (the window is preallocated) */
    uint64_t seed;            /* same seed, same draws */
    const struct hs_logit_bias *logit_bias; /* borrowed, [n_logit_bias] */
    int32_t n_logit_bias;
};

/* llama.cpp's defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, penalties off,
 * penalty_last_n 64), with a fixed seed 0xFFFFFFFF where llama.cpp would pick a random one. */
struct hs_sampling_params hs_sampling_default_params(void);

/* Validates ranges (temperature >= 0, top_p in (0,1], min_p in [0,1], penalties finite,
 * repetition_penalty > 0, penalty_last_n in [-1, 1 << 20], bias tokens in [0, n_vocab), biases
 * finite or -inf, n_vocab > 0): HS_E_INVAL with err (may be NULL) naming the field and value,
 * e.g. "top_p must be in (0, 1], got 1.5". Thread: any. */
hs_status hs_sampling_params_check(const struct hs_sampling_params *p, int32_t n_vocab,
                                   struct hs_error *err);

struct hs_sampler;

/* Returns new (free with hs_sampler_destroy); copies p (and its logit_bias). Allocates all
 * scratch for n_vocab up front: sampling allocates nothing per token. The draws come from an
 * hs_rng seeded with p->seed. HS_E_INVAL: p fails hs_sampling_params_check (call it first for
 * the message); HS_E_NOMEM. *out stays NULL on failure. */
hs_status hs_sampler_create(const struct hs_sampling_params *p, int32_t n_vocab,
                            struct hs_sampler **out);
void hs_sampler_destroy(struct hs_sampler *s);

/* ---- constraints: what may come next (structured output, tool calls, reasoning budgets) ---- */

enum hs_token_set_kind {
    HS_TOKEN_SET_ALL,    /* no restriction at this step */
    HS_TOKEN_SET_MASK,   /* the tokens whose bit is set in mask (none set: nothing allowed) */
    HS_TOKEN_SET_FORCED, /* exactly forced[0], then forced[1], ... (n_forced >= 1) */
    HS_TOKEN_SET_KIND_COUNT,
};
const char *hs_token_set_kind_str(enum hs_token_set_kind k);

/* Bit t % 32 of word t / 32 stands for token t; a mask over n tokens has HS_TOKEN_MASK_WORDS(n)
 * words and bits past n are ignored. */
#define HS_TOKEN_MASK_WORDS(n_tokens) (((size_t)(n_tokens) + 31) / 32)

static inline bool hs_token_mask_test(const uint32_t *mask, hs_token t)
{
    return (mask[(uint32_t)t >> 5] >> ((uint32_t)t & 31)) & 1u;
}

static inline void hs_token_mask_set(uint32_t *mask, hs_token t)
{
    mask[(uint32_t)t >> 5] |= 1u << ((uint32_t)t & 31);
}

/* The allowed set for one step, filled by a constraint's `allowed`. */
struct hs_token_set {
    enum hs_token_set_kind kind;
    const uint32_t *mask;   /* MASK: borrowed until the constraint's next call,
                             * [HS_TOKEN_MASK_WORDS(n_vocab)] */
    const hs_token *forced; /* FORCED: borrowed likewise, [n_forced]; the sampler draws forced[0]
                             * (an engine may take the rest without running the model) */
    int32_t n_forced;
};

/* A generic constraint: function pointers and a user pointer, no knowledge of what is behind
 * them (a grammar matcher, a forced sequence, a budget). */
struct hs_sampler_constraint {
    /* Fills *set with what the next token may be. Must not change the constraint's state: the
     * sampler may ask more than once per step. An error fails the step
     * (HS_SAMPLE_CONSTRAINT_ERROR) and is kept for hs_sampler_constraint_status. */
    hs_status (*allowed)(void *user, struct hs_token_set *set);
    /* Advances the constraint past generated token t; an error (t was not allowed, out of
     * memory) is returned by hs_sampler_accept. */
    hs_status (*accept)(void *user, hs_token t);
    void *user; /* borrowed: valid while the constraint is set */
};

/* Sets (copies c) or clears (c NULL) the sampler's constraint. Set it after the prompt's tokens
 * were recorded: every later hs_sampler_accept passes its token to c->accept. Thread: engine. */
void hs_sampler_set_constraint(struct hs_sampler *s, const struct hs_sampler_constraint *c);

/* Records an accepted token for the penalties (prompt or generated; tokens outside [0, n_vocab)
 * are ignored; once penalty_last_n tokens are recorded the oldest drops out) and, with a
 * constraint set, advances it: HS_OK, or the constraint's accept error (the penalties have
 * recorded t all the same). */
hs_status hs_sampler_accept(struct hs_sampler *s, hs_token t);

/* Why hs_sampler_sample drew nothing; it returns the negated value (so -1 is still "every token
 * banned"), and a client-visible error can say which. */
enum hs_sample_result {
    HS_SAMPLE_OK,
    HS_SAMPLE_ALL_BANNED,        /* no constraint set: every token banned by logit bias,
                                  * penalties or NaN logits */
    HS_SAMPLE_CONSTRAINT_EMPTY,  /* the constraint allows no token at all (an empty mask) */
    HS_SAMPLE_CONSTRAINT_BANNED, /* the constraint allows tokens, but bias/NaN bans all of them */
    HS_SAMPLE_CONSTRAINT_ERROR,  /* allowed() failed: see hs_sampler_constraint_status */
    HS_SAMPLE_RESULT_COUNT,
};
/* A static string: "ok", "every token is banned by logit_bias", ... */
const char *hs_sample_result_str(enum hs_sample_result r);

/* Draws the next token from logits [n_vocab] (not modified). Ties in greedy mode and in the
 * top-k/top-p ordering go to the lower id. NaN logits count as banned. Returns the token, or
 * -(int)result of the hs_sample_result that says why none could be drawn: -1 every token banned
 * (no constraint), -2 the constraint allows nothing, -3 it allows only banned tokens, -4 its
 * callback failed. Calls the constraint's allowed(), never its accept(). */
hs_token hs_sampler_sample(struct hs_sampler *s, const float *logits);

/* Verifies a speculative draft token against logits [n_vocab] (the model's output at the
 * draft's position), losslessly: the token returned is distributed exactly as hs_sampler_sample's
 * would be. The draft is accepted (*accepted true, draft returned) with probability p(draft)
 * under the whole chain (bias, penalties, constraint, filters, temperature; in greedy mode: when
 * it is the argmax); otherwise the token is drawn from p with the draft removed and
 * renormalised. Errors as hs_sampler_sample (*accepted false). Consumes at most two draws.
 * Advances nothing: the caller accepts the token (hs_sampler_accept) as after a sample. */
hs_token hs_sampler_verify(struct hs_sampler *s, const float *logits, hs_token draft,
                           bool *accepted);

/* The result of the last hs_sampler_sample (HS_SAMPLE_OK after a draw). */
enum hs_sample_result hs_sampler_last_result(const struct hs_sampler *s);

/* The status the constraint's allowed() returned in the last hs_sampler_sample (HS_OK unless
 * that call's result was HS_SAMPLE_CONSTRAINT_ERROR). */
hs_status hs_sampler_constraint_status(const struct hs_sampler *s);

/* Log-softmax of the raw logits (no sampling transforms), as OpenAI's logprobs report:
 * writes the min(k, n_vocab) most likely tokens in descending order (ties: lower id first) to
 * ids/logprobs [k] and returns how many (0 when k <= 0). The normaliser is a logsumexp in
 * double. Also returns the log-probability of token `chosen` in *chosen_logprob when non-NULL
 * (-inf when chosen is out of range). NaN logits count as -inf. Allocates nothing.
 * Thread: any. */
int32_t hs_logprobs_top_k(const float *logits, int32_t n_vocab, int32_t k, hs_token *ids,
                          float *logprobs, hs_token chosen, float *chosen_logprob);

#endif
