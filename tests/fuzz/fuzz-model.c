/* libFuzzer target: a GGUF image -> hs_model_load_memory (hyper-parameters, MoE router keys,
 * cross-layer attention, tokenizer, tensor shapes) and, when it loads, a context and a forward
 * pass of two tokens. A damaged file must give an error, never a crash, an out-of-bounds read or
 * undefined behaviour. Seeds: small models from `hetserve mkmodel` (scripts/dev.sh). */
#include <stdint.h>
#include <stdlib.h>

#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hs_model *m = NULL;
    struct hs_error err = {0};
    if (hs_model_load_memory(data, size, &m, &err) != HS_OK) {
        if (m != NULL || err.message[0] == '\0') {
            __builtin_trap(); /* errors leave no model and always say why */
        }
        return 0;
    }
    const struct hs_model_hparams *hp = hs_model_hparams(m);
    /* Models too big to run in a fuzzing loop are only loaded. */
    if ((int64_t)hp->n_embd * hp->n_layer * (hp->n_ff + hp->n_ff_exp + hp->n_ff_shexp) >
        (1 << 24)) {
        hs_model_destroy(m);
        return 0;
    }
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = 8;
    cp.n_batch = 4;
    cp.backend_params.n_threads = 1;
    cp.backend_params.pin_threads = false;
    struct hs_context *ctx = NULL;
    if (hs_context_create(m, &cp, &ctx, &err) == HS_OK) {
        const hs_token toks[2] = {1, hp->n_vocab > 5 ? 5 : 0};
        const int32_t table[1] = {0};
        const struct hs_forward_seq fs = {toks, 2, 0, table, 1, 0};
        if (hs_model_forward(ctx, &fs, 1) == HS_OK && hs_context_n_logit_rows(ctx) != 1) {
            __builtin_trap();
        }
        hs_context_destroy(ctx);
    }
    hs_model_destroy(m);
    return 0;
}
