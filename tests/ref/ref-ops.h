/* Naive float64 references of the backend ops, for tests. Deliberately simple: one loop nest
 * per op in double precision, no threading, no shared code with backends/. All arrays are dense
 * row-major f32 in the shapes named beside each argument. */
#ifndef HS_TESTS_REF_REF_OPS_H
#define HS_TESTS_REF_REF_OPS_H

#include <stdint.h>

/* y[r][o] = sum_i x[r][i] * w[o][i]; w: [n_out][n_in], x: [n_rows][n_in], y: [n_rows][n_out]. */
void hs_ref_matmul(const float *w, const float *x, float *y, int64_t n_out, int64_t n_in,
                   int64_t n_rows);

/* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (w NULL: no weight); x, y: [n_rows][n]. */
void hs_ref_rms_norm(const float *x, const float *w, float eps, float *y, int64_t n,
                     int64_t n_rows);

/* In place on x: [n_rows][n_head][hd]; mode 0 = pairs (2i, 2i+1), 1 = pairs (i, i + n_rot/2);
 * theta_i = pos * freq_scale * freq_base^(-2i/n_rot). */
void hs_ref_rope(float *x, const int32_t *pos, int64_t n_rows, int64_t n_head, int64_t hd, int mode,
                 int n_rot, float freq_base, float freq_scale);

/* y = a op b with b broadcast when b_rows == 1; op 0 = add, 1 = mul; a, y: [n_rows][n]. */
void hs_ref_binary(int op, const float *a, const float *b, int64_t b_rows, float *y, int64_t n,
                   int64_t n_rows);

/* y = silu(g) * u elementwise over n values. */
void hs_ref_swiglu(const float *g, const float *u, float *y, int64_t n);

/* Causal attention of one query row of one head over n_ctx positions.
 * q: [hd]; k, v: [n_ctx][hd] (the head's keys and values in position order); out: [hd]. */
void hs_ref_attention_row(const float *q, const float *k, const float *v, int64_t n_ctx, int64_t hd,
                          float scale, float *out);

/* sqrt(sum (a - b)^2 / sum b^2): error of a relative to the reference b (0 when both are 0). */
double hs_ref_rel_err(const float *a, const float *b, int64_t n);

#endif
