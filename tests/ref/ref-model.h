/* A naive float64 forward pass over a loaded model's weights, for tests: written from the
 * architectures' definitions (llama, qwen2/3, the MoE families, Hunyuan-Large's cross-layer
 * attention), one position at a time, exact K/V, no paging and no batching. It reads the
 * weights through the model's views and dequantizes them with the reference dequantizer; the
 * arithmetic shares nothing with model/forward.c, moe/ or the CPU backend. */
#ifndef HS_TESTS_REF_REF_MODEL_H
#define HS_TESTS_REF_REF_MODEL_H

#include "model/model.h"

/* logits [n][n_vocab]: the logits after each of the n tokens. */
void hs_ref_model_logits(const struct hs_model *m, const hs_token *toks, int n, float *logits);

#endif
