/* llama.cpp's reference outputs (JSON in the ../shared/models/reference format: "cases", each
 * with its "prompt", llama.cpp's "prompt_tokens" and greedy "steps", each step with its "top"
 * tokens and log-probabilities) read back for tests and benchmarks: a case's prompt tokenized and
 * checked against llama.cpp's, and the first step's top log-probabilities compared three ways,
 * ours, llama.cpp's and the float64 forward pass of tests/ref/ref-model.h. */
#ifndef HS_TESTS_REF_REF_LLAMACPP_H
#define HS_TESTS_REF_REF_LLAMACPP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "model/model.h"

/* log(sum(exp(x[i]))) over x[0..n), in double. */
double hs_ref_logsumexp(const float *x, int n);

/* Tokenizes case c's prompt (BOS and special tokens as llama.cpp does) into toks[cap], *n
 * tokens. With check, the tokens must be c's "prompt_tokens". HS_E_FORMAT with why[why_cap]
 * saying which differs. */
hs_status hs_ref_case_tokens(const struct hs_vocab *v, const json_t *c, bool check, hs_token *toks,
                             size_t cap, size_t *n, char *why, size_t why_cap);

/* The first step's top log-probabilities of every compared case: |ours - exact|,
 * |theirs - exact| and |ours - theirs| (exact: the float64 pass; theirs: llama.cpp's), their
 * largest values and sums. */
struct hs_ref_accuracy {
    int n_cmp; /* log-probabilities compared */
    double max_ours, max_theirs, max_diff;
    double sum_ours, sum_theirs, sum_diff;
};

/* Runs the first step of every stride-th case of ref (stride >= 1) through m, on a context of
 * its own (256 positions, 2 threads, default KV type), and through the float64 pass, and adds
 * the comparisons to *acc (zero it first). check: as in hs_ref_case_tokens. An error (a prompt
 * that does not tokenize or differs, a failed forward pass, no memory) leaves the cases so far
 * in *acc and says why in why[why_cap]. */
hs_status hs_ref_first_step_accuracy(struct hs_model *m, const json_t *ref, size_t stride,
                                     bool check, struct hs_ref_accuracy *acc, char *why,
                                     size_t why_cap);

#endif
