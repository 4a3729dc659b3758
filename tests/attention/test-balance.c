/* The sub-batch balancer (attention/balance.c): the online fit recovers known linear costs, the
 * chosen split minimises the predicted pipeline among the allowed ones (against a brute force),
 * and the constraints (attention rows on both sides, 4-row boundaries) hold. */
#include <criterion/criterion.h>
#include <math.h>

#include "attention/attention.h"

Test(balance, fit_recovers_linear_costs)
{
    struct hs_split_model m;
    hs_split_model_init(&m);
    struct hs_rng rng;
    hs_rng_seed(&rng, 5);
    /* F = 20 us + 3 us/row; T = 5 us + 2 ns/token + 1 us/seq, with 1% noise */
    for (int i = 0; i < 400; i++) {
        const int32_t rows = 1 + (int32_t)(hs_rng_next(&rng) % 64);
        const double f = 20e-6 + 3e-6 * rows;
        hs_split_model_observe_ffn(&m, rows, f * (1.0 + 0.01 * hs_rng_range(&rng, -1, 1)));
        const int32_t seqs = 1 + (int32_t)(hs_rng_next(&rng) % 32);
        const int64_t kv = seqs * (int64_t)(16 + hs_rng_next(&rng) % 2000);
        const double t = 5e-6 + 2e-9 * (double)kv + 1e-6 * seqs;
        hs_split_model_observe_attn(&m, kv, seqs, t * (1.0 + 0.01 * hs_rng_range(&rng, -1, 1)));
    }
    cr_assert_eq(m.n_obs_f, 400);
    cr_assert_eq(m.n_obs_a, 400);
    for (int32_t rows = 1; rows <= 64; rows *= 2) {
        const double want = 20e-6 + 3e-6 * rows;
        const double got = hs_split_predict_ffn(&m, rows);
        cr_assert(fabs(got - want) / want < 0.03, "F(%d) = %g, want %g", rows, got, want);
    }
    for (int32_t seqs = 1; seqs <= 32; seqs *= 2) {
        const int64_t kv = seqs * 1000;
        const double want = 5e-6 + 2e-9 * (double)kv + 1e-6 * seqs;
        const double got = hs_split_predict_attn(&m, kv, seqs);
        cr_assert(fabs(got - want) / want < 0.03, "T(%lld, %d) = %g, want %g", (long long)kv, seqs,
                  got, want);
    }
    /* garbage observations are ignored, not folded in */
    hs_split_model_observe_ffn(&m, 8, NAN);
    hs_split_model_observe_ffn(&m, 0, 1.0);
    hs_split_model_observe_attn(&m, 100, 0, 1.0);
    hs_split_model_observe_attn(&m, -1, 3, 1.0);
    cr_assert_eq(m.n_obs_f, 400);
    cr_assert_eq(m.n_obs_a, 400);
    cr_assert_eq(hs_split_predict_ffn(&m, 0), 0.0);
    cr_assert_eq(hs_split_predict_attn(&m, 0, 0), 0.0);
}

/* The period of split k, computed the long way. */
static double period_of(const struct hs_split_model *m, const struct hs_split_item *it, int32_t n,
                        int32_t k)
{
    int32_t rows[2] = {0}, seqs[2] = {0};
    int64_t kv[2] = {0};
    for (int32_t i = 0; i < n; i++) {
        const int s = i >= k;
        rows[s] += it[i].rows;
        if (it[i].remote) {
            seqs[s]++;
            kv[s] += it[i].kv_tokens;
        }
    }
    const double fa = hs_split_predict_ffn(m, rows[0]), fb = hs_split_predict_ffn(m, rows[1]);
    const double ta = hs_split_predict_attn(m, kv[0], seqs[0]);
    const double tb = hs_split_predict_attn(m, kv[1], seqs[1]);
    return fmax(fa, tb) + fmax(fb, ta);
}

Test(balance, choice_is_the_best_allowed_split)
{
    struct hs_split_model m;
    hs_split_model_init(&m);
    m.f[0] = 30e-6;
    m.f[1] = 4e-6;
    m.a[0] = 8e-6;
    m.a[1] = 3e-9;
    m.a[2] = 2e-6;
    struct hs_rng rng;
    hs_rng_seed(&rng, 11);
    for (int trial = 0; trial < 500; trial++) {
        struct hs_split_item it[40];
        const int32_t n = 2 + (int32_t)(hs_rng_next(&rng) % 38);
        for (int32_t i = 0; i < n; i++) {
            const bool prefill = hs_rng_next(&rng) % 5 == 0;
            it[i].rows = prefill ? 1 + (int32_t)(hs_rng_next(&rng) % 9) : 1;
            it[i].out_rows = prefill && hs_rng_next(&rng) % 2 ? 0 : 1;
            it[i].kv_tokens = 1 + (int32_t)(hs_rng_next(&rng) % 4000);
            it[i].remote = !prefill && hs_rng_next(&rng) % 4 != 0;
        }
        const int32_t align = trial % 2 ? 4 : 1;
        double period = 0;
        const int32_t k = hs_split_choose(&m, it, n, align, &period);
        /* brute force over the allowed splits */
        double best = INFINITY;
        int32_t rows_a = 0, out_a = 0, rem_a = 0, rem = 0;
        for (int32_t i = 0; i < n; i++) {
            rem += it[i].remote;
        }
        for (int32_t j = 1; j < n; j++) {
            rows_a += it[j - 1].rows;
            out_a += it[j - 1].out_rows;
            rem_a += it[j - 1].remote;
            if (rem_a == 0 || rem_a == rem || rows_a % align || out_a % align) {
                continue;
            }
            best = fmin(best, period_of(&m, it, n, j));
        }
        if (isinf(best)) {
            cr_assert_eq(k, 0, "trial %d: split %d where none is allowed", trial, k);
            cr_assert_float_eq(period, period_of(&m, it, n, 0), 1e-12); /* sequential F + T */
            continue;
        }
        cr_assert_gt(k, 0, "trial %d: no split chosen", trial);
        cr_assert_float_eq(period, best, 1e-12, "trial %d: %g, best %g", trial, period, best);
        cr_assert_float_eq(period_of(&m, it, n, k), best, 1e-12);
        int32_t ra = 0, oa = 0, rma = 0;
        for (int32_t i = 0; i < k; i++) {
            ra += it[i].rows;
            oa += it[i].out_rows;
            rma += it[i].remote;
        }
        cr_assert(ra % align == 0 && oa % align == 0, "trial %d: split off a tile", trial);
        cr_assert(rma > 0 && rma < rem, "trial %d: one side has no attention", trial);
    }
}

/* Balanced work goes to the middle; attention-heavy sequences pull the split so that each side's
 * attention hides under the other's dense layers. */
Test(balance, splits_where_the_work_balances)
{
    struct hs_split_model m;
    hs_split_model_init(&m);
    m.f[0] = 0;
    m.f[1] = 10e-6;
    m.a[0] = 0;
    m.a[1] = 10e-9;
    m.a[2] = 0;
    struct hs_split_item it[16];
    for (int i = 0; i < 16; i++) {
        it[i] = (struct hs_split_item){.rows = 1, .out_rows = 1, .kv_tokens = 1000, .remote = true};
    }
    cr_assert_eq(hs_split_choose(&m, it, 16, 4, NULL), 8);
    /* the first 4 hold most of the KV: A = those 4 balances B's dense layers best */
    for (int i = 0; i < 4; i++) {
        it[i].kv_tokens = 6000;
    }
    double p4 = 0;
    const int32_t k = hs_split_choose(&m, it, 16, 4, &p4);
    cr_assert_eq(k, 4, "split at %d", k);
    /* one remote sequence: nothing to overlap */
    for (int i = 1; i < 16; i++) {
        it[i].remote = false;
    }
    cr_assert_eq(hs_split_choose(&m, it, 16, 1, NULL), 0);
    cr_assert_eq(hs_split_choose(&m, it, 1, 1, NULL), 0);
}
