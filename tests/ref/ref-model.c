#include "tests/ref/ref-model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/quants.h"
#include "model/model-impl.h"
#include "tests/ref/ref-moe.h"

/* Row r of a 2-D (or stacked 3-D) weight tensor in double. */
static void row_d(const struct hs_tensor *t, int64_t r, double *out)
{
    float *f = malloc((size_t)t->ne[0] * sizeof(float));
    hs__dequantize_row_ref(t->type, (const char *)t->data + (size_t)r * t->nb[1], f, t->ne[0]);
    for (int64_t i = 0; i < t->ne[0]; i++) {
        out[i] = f[i];
    }
    free(f);
}

/* All rows of t as floats (for the MoE reference, which takes float weights). */
static float *all_f(const struct hs_tensor *t)
{
    const int64_t rows = t->ne[1] * t->ne[2];
    float *f = malloc((size_t)(rows * t->ne[0]) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        hs__dequantize_row_ref(t->type, (const char *)t->data + (size_t)r * t->nb[1],
                               f + r * t->ne[0], t->ne[0]);
    }
    return f;
}

/* y[o] = sum_i w[o][i] x[i] (+ b[o]). */
static void matvec(const struct hs_tensor *w, const struct hs_tensor *b, const double *x, double *y)
{
    double *row = malloc((size_t)w->ne[0] * sizeof(double));
    double *bias = NULL;
    if (b && b->data) {
        bias = malloc((size_t)b->ne[0] * sizeof(double));
        row_d(b, 0, bias);
    }
    for (int64_t o = 0; o < w->ne[1]; o++) {
        row_d(w, o, row);
        double s = 0.0;
        for (int64_t i = 0; i < w->ne[0]; i++) {
            s += row[i] * x[i];
        }
        y[o] = s + (bias ? bias[o] : 0.0);
    }
    free(bias);
    free(row);
}

/* In place: x[0..n) / rms * w. */
static void rmsnorm(double *x, int64_t n, const struct hs_tensor *w, double eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ss += x[i] * x[i];
    }
    const double scale = 1.0 / sqrt(ss / (double)n + eps);
    double *wd = malloc((size_t)n * sizeof(double));
    row_d(w, 0, wd);
    for (int64_t i = 0; i < n; i++) {
        x[i] = x[i] * scale * wd[i];
    }
    free(wd);
}

static void rope(double *v, int64_t n_head, int64_t hd, int32_t pos,
                 const struct hs_rope_params *rp)
{
    for (int64_t h = 0; h < n_head; h++) {
        double *x = v + h * hd;
        for (int i = 0; i < rp->n_rot / 2; i++) {
            const double theta = (double)pos * (double)rp->freq_scale *
                                 pow((double)rp->freq_base, -2.0 * i / (double)rp->n_rot);
            const int i0 = rp->mode == HS_ROPE_NEOX ? i : 2 * i;
            const int i1 = rp->mode == HS_ROPE_NEOX ? i + rp->n_rot / 2 : 2 * i + 1;
            const double x0 = x[i0], x1 = x[i1];
            x[i0] = x0 * cos(theta) - x1 * sin(theta);
            x[i1] = x0 * sin(theta) + x1 * cos(theta);
        }
    }
}

static void qk_norm(const struct hs_model_hparams *hp, const struct hs_layer *l, double *q,
                    double *k)
{
    if (hp->qk_norm == HS_QK_NORM_FULL) {
        rmsnorm(q, (int64_t)hp->n_head * hp->head_dim, &l->q_norm, hp->norm_eps);
        if (k) {
            rmsnorm(k, (int64_t)hp->n_head_kv * hp->head_dim, &l->k_norm, hp->norm_eps);
        }
        return;
    }
    for (int h = 0; h < hp->n_head; h++) {
        rmsnorm(q + (int64_t)h * hp->head_dim, hp->head_dim, &l->q_norm, hp->norm_eps);
    }
    for (int h = 0; k && h < hp->n_head_kv; h++) {
        rmsnorm(k + (int64_t)h * hp->head_dim, hp->head_dim, &l->k_norm, hp->norm_eps);
    }
}

void hs_ref_model_logits(const struct hs_model *m, const hs_token *toks, int n, float *logits)
{
    const struct hs_model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim;
    const int64_t nq = hd * hp->n_head, nkv = hd * hp->n_head_kv;
    const int64_t n_ff_max = HS_MAX(hp->n_ff, HS_MAX(hp->n_ff_exp, hp->n_ff_shexp));
    double *x = malloc((size_t)(n * E) * sizeof(double));
    double *K = calloc((size_t)(hp->n_layer_kv * n * nkv), sizeof(double));
    double *V = calloc((size_t)(hp->n_layer_kv * n * nkv), sizeof(double));
    double *h = malloc((size_t)E * sizeof(double));
    double *q = malloc((size_t)nq * sizeof(double));
    double *k = malloc((size_t)nkv * sizeof(double));
    double *v = malloc((size_t)nkv * sizeof(double));
    double *att = malloc((size_t)nq * sizeof(double));
    double *o = malloc((size_t)E * sizeof(double));
    double *g = malloc((size_t)n_ff_max * sizeof(double));
    double *u = malloc((size_t)n_ff_max * sizeof(double));
    double *sc = malloc((size_t)n * sizeof(double));
    float *hf = malloc((size_t)E * sizeof(float));
    float *yf = malloc((size_t)E * sizeof(float));
    for (int p = 0; p < n; p++) {
        row_d(&m->tok_embd, toks[p], x + p * E);
    }
    for (int il = 0; il < hp->n_layer; il++) {
        const struct hs_layer *l = &m->layers[il];
        const bool own = l->wk.data != NULL;
        double *Kl = K + (int64_t)l->kv_layer * n * nkv;
        double *Vl = V + (int64_t)l->kv_layer * n * nkv;
        float *router = NULL, *eg = NULL, *eu = NULL, *ed = NULL;
        float *sg = NULL, *su = NULL, *sd = NULL, *sgate = NULL;
        if (l->ffn_gate_inp.data) {
            router = all_f(&l->ffn_gate_inp);
            eg = all_f(&l->ffn_gate_exps);
            eu = all_f(&l->ffn_up_exps);
            ed = all_f(&l->ffn_down_exps);
            if (l->ffn_gate_shexp.data) {
                sg = all_f(&l->ffn_gate_shexp);
                su = all_f(&l->ffn_up_shexp);
                sd = all_f(&l->ffn_down_shexp);
            }
            if (l->ffn_gate_inp_shexp.data) {
                sgate = all_f(&l->ffn_gate_inp_shexp);
            }
        }
        /* Attention: every position in order, each seeing positions <= its own. */
        for (int p = 0; p < n; p++) {
            double *xp = x + p * E;
            memcpy(h, xp, (size_t)E * sizeof(double));
            rmsnorm(h, E, &l->attn_norm, hp->norm_eps);
            matvec(&l->wq, &l->bq, h, q);
            if (own) {
                matvec(&l->wk, &l->bk, h, k);
                matvec(&l->wv, &l->bv, h, v);
            }
            const bool after = hp->qk_norm == HS_QK_NORM_HEAD_AFTER;
            if (hp->qk_norm != HS_QK_NORM_NONE && !after) {
                qk_norm(hp, l, q, own ? k : NULL);
            }
            rope(q, hp->n_head, hd, p, &hp->rope);
            if (own) {
                rope(k, hp->n_head_kv, hd, p, &hp->rope);
            }
            if (after) {
                qk_norm(hp, l, q, own ? k : NULL);
            }
            if (own) {
                memcpy(Kl + p * nkv, k, (size_t)nkv * sizeof(double));
                memcpy(Vl + p * nkv, v, (size_t)nkv * sizeof(double));
            }
            const int group = hp->n_head / hp->n_head_kv;
            for (int hh = 0; hh < hp->n_head; hh++) {
                const int kvh = hh / group;
                double mx = -INFINITY;
                for (int t = 0; t <= p; t++) {
                    double s = 0.0;
                    for (int64_t d = 0; d < hd; d++) {
                        s += q[hh * hd + d] * Kl[t * nkv + kvh * hd + d];
                    }
                    sc[t] = s / sqrt((double)hd);
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                double sum = 0.0;
                for (int t = 0; t <= p; t++) {
                    sc[t] = exp(sc[t] - mx);
                    sum += sc[t];
                }
                for (int64_t d = 0; d < hd; d++) {
                    double a = 0.0;
                    for (int t = 0; t <= p; t++) {
                        a += sc[t] * Vl[t * nkv + kvh * hd + d];
                    }
                    att[hh * hd + d] = a / sum;
                }
            }
            matvec(&l->wo, NULL, att, o);
            /* The residual is updated after all positions' attention (which reads only K/V),
             * so updating in place here is the same. */
            for (int64_t i = 0; i < E; i++) {
                xp[i] += o[i];
            }
        }
        for (int p = 0; p < n; p++) {
            double *xp = x + p * E;
            memcpy(h, xp, (size_t)E * sizeof(double));
            rmsnorm(h, E, &l->ffn_norm, hp->norm_eps);
            if (router) {
                for (int64_t i = 0; i < E; i++) {
                    hf[i] = (float)h[i];
                }
                const struct hs_moe_router *r = &hp->router;
                hs_ref_moe_layer(hf, 1, (int)E, router, r->n_expert, r->n_expert_used,
                                 (int)r->gating, r->norm_w, r->w_scale, eg, eu, ed, hp->n_ff_exp,
                                 sg, su, sd, hp->n_ff_shexp, sgate, yf, NULL);
                for (int64_t i = 0; i < E; i++) {
                    xp[i] += yf[i];
                }
                continue;
            }
            matvec(&l->ffn_gate, NULL, h, g);
            matvec(&l->ffn_up, NULL, h, u);
            for (int64_t i = 0; i < hp->n_ff; i++) {
                g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            }
            matvec(&l->ffn_down, NULL, g, o);
            for (int64_t i = 0; i < E; i++) {
                xp[i] += o[i];
            }
        }
        free(router), free(eg), free(eu), free(ed), free(sg), free(su), free(sd), free(sgate);
    }
    double *lg = malloc((size_t)hp->n_vocab * sizeof(double));
    for (int p = 0; p < n; p++) {
        memcpy(h, x + p * E, (size_t)E * sizeof(double));
        rmsnorm(h, E, &m->output_norm, hp->norm_eps);
        matvec(&m->output, NULL, h, lg);
        for (int i = 0; i < hp->n_vocab; i++) {
            logits[(int64_t)p * hp->n_vocab + i] = (float)lg[i];
        }
    }
    free(lg);
    free(yf), free(hf), free(sc), free(u), free(g), free(o), free(att), free(v), free(k), free(q);
    free(h), free(V), free(K), free(x);
}
