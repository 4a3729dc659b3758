#include "tests/ref/ref-llamacpp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/vocab.h"
#include "tests/ref/ref-model.h"

double hs_ref_logsumexp(const float *x, int n)
{
    double m = -INFINITY, s = 0;
    for (int i = 0; i < n; i++) {
        m = x[i] > m ? x[i] : m;
    }
    for (int i = 0; i < n; i++) {
        s += exp((double)x[i] - m);
    }
    return m + log(s);
}

hs_status hs_ref_case_tokens(const struct hs_vocab *v, const json_t *c, bool check, hs_token *toks,
                             size_t cap, size_t *n, char *why, size_t why_cap)
{
    const char *prompt = json_string_value(json_object_get(c, "prompt"));
    if (!prompt) {
        snprintf(why, why_cap, "a case has no prompt");
        return HS_E_FORMAT;
    }
    hs_status st = hs_tokenize(v, prompt, strlen(prompt), true, true, toks, cap, n);
    if (st != HS_OK) {
        snprintf(why, why_cap, "cannot tokenize \"%s\": %s", prompt, hs_status_str(st));
        return st;
    }
    if (!check) {
        return HS_OK;
    }
    const json_t *want = json_object_get(c, "prompt_tokens");
    if (*n != json_array_size(want)) {
        snprintf(why, why_cap, "\"%s\": %zu tokens, llama.cpp has %zu", prompt, *n,
                 json_array_size(want));
        return HS_E_FORMAT;
    }
    for (size_t i = 0; i < *n; i++) {
        if (toks[i] != json_integer_value(json_array_get(want, i))) {
            snprintf(why, why_cap, "\"%s\": token %zu differs", prompt, i);
            return HS_E_FORMAT;
        }
    }
    return HS_OK;
}

hs_status hs_ref_first_step_accuracy(struct hs_model *m, const json_t *ref, size_t stride,
                                     bool check, struct hs_ref_accuracy *acc, char *why,
                                     size_t why_cap)
{
    const int nv = hs_model_hparams(m)->n_vocab;
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = 256;
    cp.backend_params.n_threads = 2;
    struct hs_context *ctx = NULL;
    struct hs_error err = {0};
    hs_status st = hs_context_create(m, &cp, &ctx, &err);
    if (st != HS_OK) {
        snprintf(why, why_cap, "%s", err.message);
        return st;
    }
    int32_t table[16];
    for (int i = 0; i < 16; i++) {
        table[i] = i;
    }
    float *exact = NULL;
    size_t ci;
    const json_t *c;
    json_array_foreach(json_object_get(ref, "cases"), ci, c)
    {
        if (ci % stride != 0) {
            continue;
        }
        hs_token toks[256];
        size_t n = 0;
        st = hs_ref_case_tokens(hs_model_vocab(m), c, check, toks, 256, &n, why, why_cap);
        if (st != HS_OK) {
            break;
        }
        struct hs_forward_seq fs = {toks, (int32_t)n, 0, table, 1, 0};
        st = hs_model_forward(ctx, &fs, 1);
        if (st != HS_OK) {
            snprintf(why, why_cap, "case %zu: forward pass: %s", ci, hs_status_str(st));
            break;
        }
        const float *ours = hs_context_logits(ctx);
        free(exact);
        exact = malloc(n * (size_t)nv * sizeof(float));
        if (!exact) {
            snprintf(why, why_cap, "out of memory");
            st = HS_E_NOMEM;
            break;
        }
        hs_ref_model_logits(m, toks, (int)n, exact);
        const float *ex = exact + (n - 1) * (size_t)nv;
        const double lse_o = hs_ref_logsumexp(ours, nv), lse_e = hs_ref_logsumexp(ex, nv);
        const json_t *top = json_object_get(json_array_get(json_object_get(c, "steps"), 0), "top");
        size_t k;
        const json_t *e;
        json_array_foreach(top, k, e)
        {
            const int t = (int)json_integer_value(json_object_get(e, "token"));
            const double theirs = json_real_value(json_object_get(e, "logprob"));
            const double o = ours[t] - lse_o, x = ex[t] - lse_e;
            acc->max_ours = fmax(acc->max_ours, fabs(o - x));
            acc->max_theirs = fmax(acc->max_theirs, fabs(theirs - x));
            acc->max_diff = fmax(acc->max_diff, fabs(o - theirs));
            acc->sum_ours += fabs(o - x);
            acc->sum_theirs += fabs(theirs - x);
            acc->sum_diff += fabs(o - theirs);
            acc->n_cmp++;
        }
    }
    free(exact);
    hs_context_destroy(ctx);
    return st;
}
