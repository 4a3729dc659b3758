/* Token sampling: penalties, logit bias, top-k, top-p, min-p, temperature, seeded draws.
 * Order (as llama.cpp's default chain): logit bias -> penalties -> top-k -> top-p -> min-p ->
 * temperature -> draw. temperature <= 0 is greedy (argmax after bias and penalties).
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

/* Records an accepted token (prompt or generated) for the penalties; tokens outside
 * [0, n_vocab) are ignored. Once penalty_last_n tokens are recorded the oldest drops out. */
void hs_sampler_accept(struct hs_sampler *s, hs_token t);

/* Draws the next token from logits [n_vocab] (not modified). Ties in greedy mode and in the
 * top-k/top-p ordering go to the lower id. NaN logits count as banned. Returns -1 when every
 * token is banned (logit -inf after bias and penalties). */
hs_token hs_sampler_sample(struct hs_sampler *s, const float *logits);

/* Log-softmax of the raw logits (no sampling transforms), as OpenAI's logprobs report:
 * writes the min(k, n_vocab) most likely tokens in descending order (ties: lower id first) to
 * ids/logprobs [k] and returns how many (0 when k <= 0). The normaliser is a logsumexp in
 * double. Also returns the log-probability of token `chosen` in *chosen_logprob when non-NULL
 * (-inf when chosen is out of range). NaN logits count as -inf. Allocates nothing.
 * Thread: any. */
int32_t hs_logprobs_top_k(const float *logits, int32_t n_vocab, int32_t k, hs_token *ids,
                          float *logprobs, hs_token chosen, float *chosen_logprob);

#endif
