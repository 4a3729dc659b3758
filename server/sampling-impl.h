/* Sampling internals exposed for tests. */
#ifndef HS_SERVER_SAMPLING_IMPL_H
#define HS_SERVER_SAMPLING_IMPL_H

#include "server/sampling.h"

/* Runs the chain up to, not including, the draw and writes the surviving candidates, best first
 * when a top-k or top-p step ordered them (id order otherwise): ids, logits after bias,
 * penalties and filters (before temperature), and draw probabilities after temperature, each
 * [n_vocab] (any may be NULL). Greedy mode yields one candidate with probability 1. Returns the
 * count (0 when every token is banned). Consumes no randomness. */
int32_t hs__sampler_candidates(struct hs_sampler *s, const float *logits, hs_token *ids,
                               float *cand_logits, double *probs);

#endif
