#include "tests/ref/ref-moe.h"

#include <math.h>
#include <stdlib.h>

void hs_ref_moe_route(const float *logits, int n_expert, int k, int gating, bool norm, float scale,
                      int *ids, double *weights)
{
    double *p = malloc((size_t)n_expert * sizeof(double));
    double max = -INFINITY;
    for (int e = 0; e < n_expert; e++) {
        max = logits[e] > max ? logits[e] : max;
    }
    double sum = 0.0;
    for (int e = 0; e < n_expert; e++) {
        if (gating == 1) {
            p[e] = exp((double)logits[e] - max);
            sum += p[e];
        } else if (gating == 2) {
            p[e] = 1.0 / (1.0 + exp(-(double)logits[e]));
        } else {
            p[e] = logits[e];
        }
    }
    if (gating == 1) {
        for (int e = 0; e < n_expert; e++) {
            p[e] /= sum;
        }
    }
    /* Selection by repeated maximum: obviously right, quadratic, fine for tests. */
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n_expert; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++) {
                taken = taken || ids[i] == e;
            }
            if (!taken && (best < 0 || p[e] > p[best])) {
                best = e;
            }
        }
        ids[j] = best;
        weights[j] = p[best];
    }
    if (gating == 3) {
        const double top = weights[0];
        double s = 0.0;
        for (int j = 0; j < k; j++) {
            s += exp(weights[j] - top);
        }
        for (int j = 0; j < k; j++) {
            weights[j] = exp(weights[j] - top) / s;
        }
    }
    if (norm) {
        double s = 0.0;
        for (int j = 0; j < k; j++) {
            s += weights[j];
        }
        for (int j = 0; j < k; j++) {
            weights[j] /= s;
        }
    }
    if (scale != 0.0f && scale != 1.0f) {
        for (int j = 0; j < k; j++) {
            weights[j] *= scale;
        }
    }
    free(p);
}

/* out [n_embd] = down silu(gate x) * (up x), in double. */
static void ffn(const float *x, int n_embd, const float *gate, const float *up, const float *down,
                int n_ff, double *out)
{
    double *h = malloc((size_t)n_ff * sizeof(double));
    for (int o = 0; o < n_ff; o++) {
        double g = 0.0, u = 0.0;
        for (int i = 0; i < n_embd; i++) {
            g += (double)gate[(size_t)o * n_embd + i] * x[i];
            u += (double)up[(size_t)o * n_embd + i] * x[i];
        }
        h[o] = g / (1.0 + exp(-g)) * u;
    }
    for (int o = 0; o < n_embd; o++) {
        double s = 0.0;
        for (int i = 0; i < n_ff; i++) {
            s += (double)down[(size_t)o * n_ff + i] * h[i];
        }
        out[o] = s;
    }
    free(h);
}

void hs_ref_moe_layer(const float *x, int n_rows, int n_embd, const float *router, int n_expert,
                      int k, int gating, bool norm, float scale, const float *gate, const float *up,
                      const float *down, int n_ff, const float *sh_gate_w, const float *sh_up,
                      const float *sh_down, int n_ff_sh, const float *shexp_gate, float *y,
                      uint64_t *counts)
{
    float *logits = malloc((size_t)n_expert * sizeof(float));
    int *ids = malloc((size_t)k * sizeof(int));
    double *w = malloc((size_t)k * sizeof(double));
    double *acc = malloc((size_t)n_embd * sizeof(double));
    double *e_out = malloc((size_t)n_embd * sizeof(double));
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * n_embd;
        for (int e = 0; e < n_expert; e++) {
            double s = 0.0;
            for (int i = 0; i < n_embd; i++) {
                s += (double)router[(size_t)e * n_embd + i] * xr[i];
            }
            logits[e] = (float)s;
        }
        hs_ref_moe_route(logits, n_expert, k, gating, norm, scale, ids, w);
        for (int i = 0; i < n_embd; i++) {
            acc[i] = 0.0;
        }
        for (int j = 0; j < k; j++) {
            const size_t e = (size_t)ids[j];
            if (counts) {
                counts[e]++;
            }
            ffn(xr, n_embd, gate + e * n_ff * n_embd, up + e * n_ff * n_embd,
                down + e * n_embd * n_ff, n_ff, e_out);
            for (int i = 0; i < n_embd; i++) {
                acc[i] += w[j] * e_out[i];
            }
        }
        if (sh_gate_w) {
            ffn(xr, n_embd, sh_gate_w, sh_up, sh_down, n_ff_sh, e_out);
            double g = 1.0;
            if (shexp_gate) {
                double s = 0.0;
                for (int i = 0; i < n_embd; i++) {
                    s += (double)shexp_gate[i] * xr[i];
                }
                g = 1.0 / (1.0 + exp(-s));
            }
            for (int i = 0; i < n_embd; i++) {
                acc[i] += g * e_out[i];
            }
        }
        for (int i = 0; i < n_embd; i++) {
            y[(size_t)r * n_embd + i] = (float)acc[i];
        }
    }
    free(e_out);
    free(acc);
    free(w);
    free(ids);
    free(logits);
}
