/* Naive float64 references of mixture-of-experts routing and layers, for tests. One loop nest
 * per step in double precision, written from the models' definitions (Mixtral, Qwen-MoE,
 * DeepSeek-style sigmoid gates, Hunyuan), sharing no code with moe/. Arrays are dense row-major
 * f32 in the shapes named beside each argument. */
#ifndef HS_TESTS_REF_REF_MOE_H
#define HS_TESTS_REF_REF_MOE_H

#include <stdbool.h>
#include <stdint.h>

/* gating: 1 softmax over all experts, 2 sigmoid per expert, 3 softmax over the chosen k logits.
 * ids [k]: the k experts with the largest probability (largest logit for 3), best first;
 * weights [k]: their probabilities, renormalised to sum to one when norm, times scale when
 * scale is not 0 or 1. logits: [n_expert]. */
void hs_ref_moe_route(const float *logits, int n_expert, int k, int gating, bool norm, float scale,
                      int *ids, double *weights);

/* One MoE layer on n_rows rows of x [n_rows][n_embd]: y = sum_j w_j * expert_{id_j}(x) (+ shared
 * expert, times sigmoid(shexp_gate . x) when shexp_gate is not NULL). Experts are SwiGLU FFNs:
 * gate, up [n_expert][n_ff][n_embd], down [n_expert][n_embd][n_ff]; router [n_expert][n_embd];
 * shared gate/up [n_ff_sh][n_embd], down [n_embd][n_ff_sh] (NULL: none). counts [n_expert], when
 * not NULL, gets the number of rows that chose each expert added. */
void hs_ref_moe_layer(const float *x, int n_rows, int n_embd, const float *router, int n_expert,
                      int k, int gating, bool norm, float scale, const float *gate, const float *up,
                      const float *down, int n_ff, const float *sh_gate_w, const float *sh_up,
                      const float *sh_down, int n_ff_sh, const float *shexp_gate, float *y,
                      uint64_t *counts);

#endif
