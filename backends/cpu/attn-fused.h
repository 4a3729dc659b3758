/* The CPU backend's fused f16 decode attention (attn-fused.c), built once per kernel ISA and
 * picked by attention.c. Internal to backends/cpu. */
#ifndef HS_BACKENDS_CPU_ATTN_FUSED_H
#define HS_BACKENDS_CPU_ATTN_FUSED_H

#include <stdint.h>

#include "backends/backend.h"

/* Positions per chunk: their scores, softmax weights and row pointers sit in scratch. */
#define HS__ATTN_CHUNK 128
/* K rows fetched this many positions ahead of their scores. */
#define HS__ATTN_PREFETCH 16
/* Query heads taken at once (one GQA group, or a part of a larger one). */
#define HS__ATTN_GROUP_MAX 4

struct hs__attn_fused {
    const struct hs_attn_args *a;
    int64_t hd; /* a multiple of 64, at most 256 */
    /* y[i] = expf(x[i]) for n (a multiple of 8) values with libm's bits */
    void (*expf)(int64_t n, float *y, const float *x);
};

/* Attention of nh (1..HS__ATTN_GROUP_MAX) query heads of KV head kvh over positions [p0, p1) of
 * seq, for one query row: qf holds the nh rows of q rounded to f16 and widened; out[g] gets head
 * g's result, or with ml (partials) its unnormalised sum and ml[2g], ml[2g + 1] its maximum and
 * denominator (attention.c's attn_row contract). scratch: attention.c's attn_row_floats. */
typedef void (*hs__attn_group_fn)(const struct hs__attn_fused *t, const struct hs_attn_seq *seq,
                                  const float *qf, int64_t kvh, int64_t p0, int64_t p1,
                                  float *const *out, float *const *ml, float *scratch, int nh);
void hs__attn_group_f16_avx2(const struct hs__attn_fused *t, const struct hs_attn_seq *seq,
                             const float *qf, int64_t kvh, int64_t p0, int64_t p1,
                             float *const *out, float *const *ml, float *scratch, int nh);
void hs__attn_group_f16_avx512(const struct hs__attn_fused *t, const struct hs_attn_seq *seq,
                               const float *qf, int64_t kvh, int64_t p0, int64_t p1,
                               float *const *out, float *const *ml, float *scratch, int nh);

#endif
