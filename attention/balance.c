/* The two-sub-batch balance of split execution (see attention.h): an online linear model of
 * each side's time per layer and the split point that minimises the predicted pipeline. */
#include <math.h>
#include <string.h>

#include "attention/attention.h"

/* Forgetting factor of the recursive least squares: about the last 1 / (1 - lambda) = 50
 * observations count. */
#define HS__RLS_LAMBDA 0.98
/* Initial covariance: a weak prior, so the first measurements take over at once. */
#define HS__RLS_P0 1e6

void hs_split_model_init(struct hs_split_model *m)
{
    memset(m, 0, sizeof(*m));
    /* Units as measured in seconds; the prior (1 us per row, 1 ns per KV token) only has to
     * rank splits sensibly before the first step is measured. */
    m->f[1] = 1e-6;
    m->a[1] = 1e-9;
    for (int i = 0; i < 2; i++) {
        m->pf[i][i] = HS__RLS_P0;
    }
    for (int i = 0; i < 3; i++) {
        m->pa[i][i] = HS__RLS_P0;
    }
}

/* One step of recursive least squares with forgetting on theta[n] with covariance p[n][n]
 * (row-major) for the observation y = phi . theta. */
static void rls(int n, double *theta, double *p, const double *phi, double y)
{
    double pphi[3] = {0};
    double denom = HS__RLS_LAMBDA;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            pphi[i] += p[i * n + j] * phi[j];
        }
        denom += phi[i] * pphi[i];
    }
    if (!(denom > 0) || !isfinite(denom)) {
        return;
    }
    double pred = 0;
    for (int i = 0; i < n; i++) {
        pred += phi[i] * theta[i];
    }
    const double err = y - pred;
    for (int i = 0; i < n; i++) {
        theta[i] += pphi[i] / denom * err;
    }
    /* P = (P - pphi pphi^T / denom) / lambda (P is symmetric, so phi^T P = pphi^T) */
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            p[i * n + j] = (p[i * n + j] - pphi[i] * pphi[j] / denom) / HS__RLS_LAMBDA;
        }
    }
}

void hs_split_model_observe_ffn(struct hs_split_model *m, int32_t rows, double seconds)
{
    if (rows <= 0 || !(seconds >= 0) || !isfinite(seconds)) {
        return;
    }
    const double phi[2] = {1.0, (double)rows};
    rls(2, m->f, &m->pf[0][0], phi, seconds);
    m->n_obs_f++;
}

void hs_split_model_observe_attn(struct hs_split_model *m, int64_t kv_tokens, int32_t n_seqs,
                                 double seconds)
{
    if (n_seqs <= 0 || kv_tokens < 0 || !(seconds >= 0) || !isfinite(seconds)) {
        return;
    }
    const double phi[3] = {1.0, (double)kv_tokens, (double)n_seqs};
    rls(3, m->a, &m->pa[0][0], phi, seconds);
    m->n_obs_a++;
}

double hs_split_predict_ffn(const struct hs_split_model *m, int32_t rows)
{
    if (rows <= 0) {
        return 0.0;
    }
    return fmax(0.0, m->f[0] + m->f[1] * rows);
}

double hs_split_predict_attn(const struct hs_split_model *m, int64_t kv_tokens, int32_t n_seqs)
{
    if (n_seqs <= 0) {
        return 0.0;
    }
    return fmax(0.0, m->a[0] + m->a[1] * (double)kv_tokens + m->a[2] * n_seqs);
}

int32_t hs_split_choose(const struct hs_split_model *m, const struct hs_split_item *items,
                        int32_t n, int32_t row_align, double *period_s)
{
    int32_t rows = 0, n_remote = 0;
    int64_t kv = 0;
    for (int32_t i = 0; i < n; i++) {
        rows += items[i].rows;
        if (items[i].remote) {
            n_remote++;
            kv += items[i].kv_tokens;
        }
    }
    double best = INFINITY;
    int32_t best_k = 0;
    /* Prefix sums walk every contiguous split once. */
    int32_t rows_a = 0, out_a = 0, remote_a = 0;
    int64_t kv_a = 0;
    row_align = HS_MAX(row_align, 1);
    for (int32_t k = 1; k < n; k++) {
        const struct hs_split_item *it = &items[k - 1];
        rows_a += it->rows;
        out_a += it->out_rows;
        if (it->remote) {
            remote_a++;
            kv_a += it->kv_tokens;
        }
        if (remote_a == 0 || remote_a == n_remote) {
            continue; /* one side would have no attention to overlap */
        }
        if (rows_a % row_align != 0 || out_a % row_align != 0) {
            continue;
        }
        const double fa = hs_split_predict_ffn(m, rows_a);
        const double fb = hs_split_predict_ffn(m, rows - rows_a);
        const double ta = hs_split_predict_attn(m, kv_a, remote_a);
        const double tb = hs_split_predict_attn(m, kv - kv_a, n_remote - remote_a);
        const double period = fmax(fa, tb) + fmax(fb, ta);
        if (period < best) {
            best = period;
            best_k = k;
        }
    }
    if (best_k == 0) {
        best = hs_split_predict_ffn(m, rows) + hs_split_predict_attn(m, kv, n_remote);
    }
    if (period_s) {
        *period_s = best;
    }
    return best_k;
}
