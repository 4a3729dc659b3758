/* The exact merge of flash-decoding partials (m, l, o) of disjoint KV ranges, over host memory:
 * the arithmetic attention/ uses to merge the spans of a sequence across backends, and a
 * backend uses to merge the partials of its own units (pim's ranks). See attention/attention.h
 * for the formulas.
 *
 * Thread: any. */
#ifndef HS_BACKENDS_ATTN_PARTIAL_H
#define HS_BACKENDS_ATTN_PARTIAL_H

#include <stdint.h>

/* One partial: n_vec = n_rows * n_head vectors of head_dim. Borrowed pointers. */
struct hs_attn_partial {
    float *o; /* [n_vec][head_dim] unnormalised weighted sum of V */
    float *m; /* [n_vec] max scaled score, -INFINITY for an empty range */
    float *l; /* [n_vec] sum of exp(score - m), 0 for an empty range */
};

/* Sets acc to the empty partial (m = -INFINITY, l = 0, o = 0). */
void hs_attn_partial_clear(const struct hs_attn_partial *acc, int64_t n_vec, int64_t head_dim);

/* acc = acc (+) part, the exact combination above, vector by vector. An empty side leaves the
 * other unchanged bit for bit (its scale is exp(0) = 1 and the empty one's terms are 0). */
void hs_attn_partial_combine(const struct hs_attn_partial *acc, const struct hs_attn_partial *part,
                             int64_t n_vec, int64_t head_dim);

/* out = o * (1 / l) per vector (0 where l is 0): the same arithmetic as a backend that
 * normalises itself, so one partial finalised equals the monolithic op's bits. out may be o. */
void hs_attn_partial_finalize(const struct hs_attn_partial *p, int64_t n_vec, int64_t head_dim,
                              float *out);

/* Clears acc, combines parts[0 .. n_parts) in order into it and finalises into out. acc may be
 * parts[0] (it is then overwritten). */
void hs_attn_merge(const struct hs_attn_partial *parts, int n_parts,
                   const struct hs_attn_partial *acc, int64_t n_vec, int64_t head_dim, float *out);

#endif
