#include "tests/ref/ref-ops.h"

#include <math.h>

void hs_ref_matmul(const float *w, const float *x, float *y, int64_t n_out, int64_t n_in,
                   int64_t n_rows)
{
    for (int64_t r = 0; r < n_rows; r++) {
        for (int64_t o = 0; o < n_out; o++) {
            double s = 0.0;
            for (int64_t i = 0; i < n_in; i++) {
                s += (double)w[o * n_in + i] * (double)x[r * n_in + i];
            }
            y[r * n_out + o] = (float)s;
        }
    }
}

void hs_ref_rms_norm(const float *x, const float *w, float eps, float *y, int64_t n, int64_t n_rows)
{
    for (int64_t r = 0; r < n_rows; r++) {
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) {
            ss += (double)x[r * n + i] * (double)x[r * n + i];
        }
        const double scale = 1.0 / sqrt(ss / (double)n + (double)eps);
        for (int64_t i = 0; i < n; i++) {
            y[r * n + i] = (float)((double)x[r * n + i] * scale * (w ? (double)w[i] : 1.0));
        }
    }
}

void hs_ref_rope(float *x, const int32_t *pos, int64_t n_rows, int64_t n_head, int64_t hd, int mode,
                 int n_rot, float freq_base, float freq_scale)
{
    for (int64_t r = 0; r < n_rows; r++) {
        for (int64_t h = 0; h < n_head; h++) {
            float *v = x + (r * n_head + h) * hd;
            for (int i = 0; i < n_rot / 2; i++) {
                const double theta = (double)pos[r] * (double)freq_scale *
                                     pow((double)freq_base, -2.0 * i / (double)n_rot);
                const int i0 = mode == 1 ? i : 2 * i;
                const int i1 = mode == 1 ? i + n_rot / 2 : 2 * i + 1;
                const double x0 = v[i0];
                const double x1 = v[i1];
                v[i0] = (float)(x0 * cos(theta) - x1 * sin(theta));
                v[i1] = (float)(x0 * sin(theta) + x1 * cos(theta));
            }
        }
    }
}

void hs_ref_binary(int op, const float *a, const float *b, int64_t b_rows, float *y, int64_t n,
                   int64_t n_rows)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const float *br = b + (b_rows == 1 ? 0 : r) * n;
        for (int64_t i = 0; i < n; i++) {
            const double av = a[r * n + i];
            const double bv = br[i];
            y[r * n + i] = (float)(op == 0 ? av + bv : av * bv);
        }
    }
}

void hs_ref_swiglu(const float *g, const float *u, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const double gv = g[i];
        y[i] = (float)(gv / (1.0 + exp(-gv)) * (double)u[i]);
    }
}

void hs_ref_attention_row(const float *q, const float *k, const float *v, int64_t n_ctx, int64_t hd,
                          float scale, float *out)
{
    double m = -INFINITY;
    for (int64_t p = 0; p < n_ctx; p++) {
        double s = 0.0;
        for (int64_t d = 0; d < hd; d++) {
            s += (double)q[d] * (double)k[p * hd + d];
        }
        s *= scale;
        m = s > m ? s : m;
    }
    double sum = 0.0;
    for (int64_t d = 0; d < hd; d++) {
        out[d] = 0.0f;
    }
    /* Two passes keep the reference obviously right: weights, then the weighted sum. */
    for (int64_t d = 0; d < hd; d++) {
        double acc = 0.0;
        sum = 0.0;
        for (int64_t p = 0; p < n_ctx; p++) {
            double s = 0.0;
            for (int64_t e = 0; e < hd; e++) {
                s += (double)q[e] * (double)k[p * hd + e];
            }
            const double w = exp(s * scale - m);
            sum += w;
            acc += w * (double)v[p * hd + d];
        }
        out[d] = (float)(acc / sum);
    }
}

double hs_ref_rel_err(const float *a, const float *b, int64_t n)
{
    double num = 0.0;
    double den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0.0) {
        return num == 0.0 ? 0.0 : INFINITY;
    }
    return sqrt(num / den);
}
