/* Which engine is closer to the exact result: the first-step log-probabilities of our forward
 * pass and of llama.cpp's (from reference JSON files in the ../shared/models/reference format)
 * against the float64 forward pass of tests/ref (the file's weights, dequantized exactly, with
 * float64 activations: no rounding of activations to the weights' dot-product type).
 *
 *   bench-ref-accuracy MODEL.gguf REF.json [REF2.json ...]
 *
 * Prints, per reference file, the largest and the mean |logprob difference| over the top-5
 * tokens of each prompt's first step: ours - exact, theirs - exact, ours - theirs. A yardstick, not
 * a test. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "tests/ref/ref-model.h"

static double logsumexp(const float *x, int n)
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

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf REF.json [REF2.json ...]\n", argv[0]);
        return 2;
    }
    struct hs_error err = {0};
    struct hs_model *m = NULL;
    if (hs_model_load(argv[1], &m, &err) != HS_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], err.message);
        return 1;
    }
    const int nv = hs_model_hparams(m)->n_vocab;
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = 256;
    cp.backend_params.n_threads = 2;
    struct hs_context *ctx = NULL;
    if (hs_context_create(m, &cp, &ctx, &err) != HS_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    int32_t table[16];
    for (int i = 0; i < 16; i++) {
        table[i] = i;
    }
    float *exact = NULL;
    for (int a = 2; a < argc; a++) {
        json_error_t jerr;
        json_t *ref = json_load_file(argv[a], 0, &jerr);
        if (!ref) {
            fprintf(stderr, "%s: %s\n", argv[a], jerr.text);
            return 1;
        }
        double w_ours = 0, w_theirs = 0, w_diff = 0, s_ours = 0, s_theirs = 0, s_diff = 0;
        int n_cmp = 0;
        size_t ci;
        json_t *c;
        json_array_foreach(json_object_get(ref, "cases"), ci, c)
        {
            const char *prompt = json_string_value(json_object_get(c, "prompt"));
            hs_token toks[256];
            size_t n = 0;
            if (hs_tokenize(hs_model_vocab(m), prompt, strlen(prompt), true, true, toks, 256, &n) !=
                HS_OK) {
                return 1;
            }
            struct hs_forward_seq fs = {toks, (int32_t)n, 0, table, 1, 0};
            if (hs_model_forward(ctx, &fs, 1) != HS_OK) {
                return 1;
            }
            const float *ours = hs_context_logits(ctx);
            free(exact);
            exact = malloc(n * (size_t)nv * sizeof(float));
            hs_ref_model_logits(m, toks, (int)n, exact);
            const float *ex = exact + (n - 1) * (size_t)nv;
            const double lse_o = logsumexp(ours, nv), lse_e = logsumexp(ex, nv);
            json_t *top = json_object_get(json_array_get(json_object_get(c, "steps"), 0), "top");
            size_t k;
            json_t *e;
            json_array_foreach(top, k, e)
            {
                const int t = (int)json_integer_value(json_object_get(e, "token"));
                const double theirs = json_real_value(json_object_get(e, "logprob"));
                const double o = ours[t] - lse_o, x = ex[t] - lse_e;
                w_ours = fmax(w_ours, fabs(o - x));
                w_theirs = fmax(w_theirs, fabs(theirs - x));
                w_diff = fmax(w_diff, fabs(o - theirs));
                s_ours += fabs(o - x);
                s_theirs += fabs(theirs - x);
                s_diff += fabs(o - theirs);
                n_cmp++;
            }
        }
        printf("%s vs %s (%d logprobs), max / mean: |ours - exact| %.2e / %.2e  "
               "|theirs - exact| %.2e / %.2e  |ours - theirs| %.2e / %.2e\n",
               argv[1], argv[a], n_cmp, w_ours, s_ours / n_cmp, w_theirs, s_theirs / n_cmp, w_diff,
               s_diff / n_cmp);
        json_decref(ref);
    }
    free(exact);
    hs_context_destroy(ctx);
    hs_model_destroy(m);
    return 0;
}
