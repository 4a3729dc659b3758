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
#include <stdio.h>

#include "model/model.h"
#include "tests/ref/ref-llamacpp.h"

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
    int rc = 0;
    for (int a = 2; a < argc && rc == 0; a++) {
        json_error_t jerr;
        json_t *ref = json_load_file(argv[a], 0, &jerr);
        if (!ref) {
            fprintf(stderr, "%s: %s\n", argv[a], jerr.text);
            rc = 1;
            break;
        }
        struct hs_ref_accuracy acc = {0};
        char why[512] = "";
        if (hs_ref_first_step_accuracy(m, ref, 1, false, &acc, why, sizeof(why)) != HS_OK) {
            fprintf(stderr, "%s: %s\n", argv[a], why);
            rc = 1;
        } else {
            const int n = acc.n_cmp;
            printf("%s vs %s (%d logprobs), max / mean: |ours - exact| %.2e / %.2e  "
                   "|theirs - exact| %.2e / %.2e  |ours - theirs| %.2e / %.2e\n",
                   argv[1], argv[a], n, acc.max_ours, acc.sum_ours / n, acc.max_theirs,
                   acc.sum_theirs / n, acc.max_diff, acc.sum_diff / n);
        }
        json_decref(ref);
    }
    hs_model_destroy(m);
    return rc;
}
