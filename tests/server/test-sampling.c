/* Sampling chain against a naive float64 reference with full sorts. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/sampling-impl.h"
#include "server/sampling.h"

/* ---- naive reference ---- */

struct ref_cand {
    int id;
    double l;
};

static int ref_cmp(const void *pa, const void *pb)
{
    const struct ref_cand *a = pa;
    const struct ref_cand *b = pb;
    if (a->l != b->l) {
        return a->l > b->l ? -1 : 1;
    }
    return a->id < b->id ? -1 : 1;
}

static void ref_softmax(const struct ref_cand *c, int n, double inv_t, double *p)
{
    double max = -INFINITY;
    for (int i = 0; i < n; i++) {
        max = fmax(max, c[i].l);
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        p[i] = exp((c[i].l - max) * inv_t);
        sum += p[i];
    }
    for (int i = 0; i < n; i++) {
        p[i] /= sum;
    }
}

/* counts: occurrences of each token in the penalty window. Writes the surviving candidates
 * sorted by id, with their probabilities after temperature; returns how many. */
static int ref_chain(const float *logits, int nv, const struct hs_sampling_params *p,
                     const int *counts, int *ids, double *probs)
{
    struct ref_cand *c = malloc((size_t)nv * sizeof(*c));
    double *pr = malloc((size_t)nv * sizeof(*pr));
    int n = 0;
    for (int i = 0; i < nv; i++) {
        double l = logits[i];
        for (int j = 0; j < p->n_logit_bias; j++) {
            if (p->logit_bias[j].token == i) {
                l += p->logit_bias[j].bias;
            }
        }
        if (counts && counts[i] > 0) {
            l = l <= 0 ? l * p->repetition_penalty : l / p->repetition_penalty;
            l -= counts[i] * (double)p->frequency_penalty + p->presence_penalty;
        }
        if (isinf(l) && l < 0) {
            continue;
        }
        c[n].id = i;
        c[n].l = l;
        n++;
    }
    qsort(c, (size_t)n, sizeof(*c), ref_cmp);
    if (p->temperature <= 0) {
        n = n > 0 ? 1 : 0;
    } else {
        if (p->top_k > 0 && p->top_k < n) {
            n = p->top_k;
        }
        if (p->top_p < 1.0f) {
            ref_softmax(c, n, 1.0, pr);
            double cum = 0.0;
            for (int i = 0; i < n; i++) {
                cum += pr[i];
                if (cum >= p->top_p) {
                    n = i + 1;
                    break;
                }
            }
        }
        if (p->min_p > 0.0f) {
            ref_softmax(c, n, 1.0, pr);
            int m = 0;
            for (int i = 0; i < n; i++) {
                if (pr[i] >= p->min_p * pr[0]) {
                    c[m++] = c[i];
                }
            }
            n = m;
        }
    }
    ref_softmax(c, n, p->temperature > 0 ? 1.0 / p->temperature : 1.0, pr);
    /* sort by id for comparison */
    for (int i = 0; i < n; i++) {
        ids[i] = c[i].id;
        probs[i] = pr[i];
    }
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            int ti = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = ti;
            double tp = probs[j];
            probs[j] = probs[j - 1];
            probs[j - 1] = tp;
        }
    }
    free(c);
    free(pr);
    return n;
}

/* ---- helpers ---- */

static void random_logits(struct hs_rng *rng, float *l, int n, double scale)
{
    for (int i = 0; i < n; i++) {
        l[i] = (float)(scale * hs_rng_normal(rng));
    }
}

/* Logits on a coarse grid, so that many tokens tie and every cut falls inside a tie group. */
static void tied_logits(struct hs_rng *rng, float *l, int n)
{
    for (int i = 0; i < n; i++) {
        l[i] = (float)floor(2.0 * hs_rng_normal(rng)) * 0.5f;
    }
}

static struct hs_sampling_params plain_params(void)
{
    struct hs_sampling_params p = hs_sampling_default_params();
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    return p;
}

static int cmp_pair_id(const void *a, const void *b)
{
    const int *x = a;
    const int *y = b;
    return (*x > *y) - (*x < *y);
}

/* Compares the sampler's surviving candidates with the reference's. */
static void check_chain(const struct hs_sampling_params *p, const float *logits, int nv,
                        const hs_token *accepted, int n_accepted)
{
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(p, nv, &s), HS_OK);
    int *counts = calloc((size_t)nv, sizeof(*counts));
    int window = p->penalty_last_n < 0 ? n_accepted : HS_MIN(p->penalty_last_n, n_accepted);
    for (int i = 0; i < n_accepted; i++) {
        hs_sampler_accept(s, accepted[i]);
        if (i >= n_accepted - window) {
            counts[accepted[i]]++;
        }
    }
    if (p->penalty_last_n == 0) {
        memset(counts, 0, (size_t)nv * sizeof(*counts));
    }
    int *ref_ids = malloc((size_t)nv * sizeof(int));
    double *ref_p = malloc((size_t)nv * sizeof(double));
    int n_ref = ref_chain(logits, nv, p, counts, ref_ids, ref_p);

    hs_token *ids = malloc((size_t)nv * sizeof(hs_token));
    double *probs = malloc((size_t)nv * sizeof(double));
    int n = hs__sampler_candidates(s, logits, ids, NULL, probs);
    cr_assert_eq(n, n_ref, "kept %d candidates, reference kept %d", n, n_ref);
    /* sort sampler output by id */
    struct {
        int id;
        int pad;
        double p;
    } *pairs = malloc((size_t)n * sizeof(*pairs));
    for (int i = 0; i < n; i++) {
        pairs[i].id = ids[i];
        pairs[i].p = probs[i];
    }
    qsort(pairs, (size_t)n, sizeof(*pairs), cmp_pair_id);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(pairs[i].id, ref_ids[i], "candidate %d: id %d vs reference %d", i, pairs[i].id,
                     ref_ids[i]);
        cr_assert(fabs(pairs[i].p - ref_p[i]) < 1e-5, "token %d: p %g vs reference %g", ref_ids[i],
                  pairs[i].p, ref_p[i]);
    }
    /* every draw lands in the reference's set */
    for (int t = 0; t < 50; t++) {
        hs_token tok = hs_sampler_sample(s, logits);
        cr_assert(bsearch(&tok, ref_ids, (size_t)n_ref, sizeof(int), cmp_pair_id) != NULL,
                  "drew token %d outside the kept set", tok);
    }
    free(pairs);
    free(ids);
    free(probs);
    free(ref_ids);
    free(ref_p);
    free(counts);
    hs_sampler_destroy(s);
}

/* ---- tests ---- */

Test(sampling, greedy_picks_argmax_lowest_id_on_ties)
{
    float l[6] = {0.5f, 2.0f, -1.0f, 3.0f, 3.0f, 1.0f};
    struct hs_sampling_params p = plain_params();
    p.temperature = 0.0f;
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 6, &s), HS_OK);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(hs_sampler_sample(s, l), 3);
    }
    hs_sampler_destroy(s);

    struct hs_rng rng;
    hs_rng_seed(&rng, 7);
    float big[5000];
    random_logits(&rng, big, 5000, 2.0);
    int am = 0;
    for (int i = 1; i < 5000; i++) {
        if (big[i] > big[am]) {
            am = i;
        }
    }
    cr_assert_eq(hs_sampler_create(&p, 5000, &s), HS_OK);
    cr_assert_eq(hs_sampler_sample(s, big), am);
    hs_sampler_destroy(s);
}

Test(sampling, logit_bias_neg_inf_bans)
{
    float l[5] = {1.0f, 5.0f, 2.0f, 4.9f, 0.0f};
    struct hs_logit_bias ban[2] = {{1, -INFINITY}, {3, -INFINITY}};
    struct hs_sampling_params p = plain_params();
    p.temperature = 0.0f;
    p.logit_bias = ban;
    p.n_logit_bias = 2;
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 5, &s), HS_OK);
    cr_assert_eq(hs_sampler_sample(s, l), 2);
    hs_sampler_destroy(s);

    p.temperature = 1.5f;
    cr_assert_eq(hs_sampler_create(&p, 5, &s), HS_OK);
    for (int i = 0; i < 2000; i++) {
        hs_token t = hs_sampler_sample(s, l);
        cr_assert(t != 1 && t != 3 && t >= 0 && t < 5, "drew banned token %d", t);
    }
    hs_sampler_destroy(s);

    struct hs_logit_bias all[5] = {
        {0, -INFINITY}, {1, -INFINITY}, {2, -INFINITY}, {3, -INFINITY}, {4, -INFINITY}};
    p.logit_bias = all;
    p.n_logit_bias = 5;
    cr_assert_eq(hs_sampler_create(&p, 5, &s), HS_OK);
    cr_assert_eq(hs_sampler_sample(s, l), -1);
    hs_sampler_destroy(s);
}

Test(sampling, positive_bias_shifts_logit)
{
    float l[4] = {1.0f, 2.0f, 3.0f, 0.5f};
    struct hs_logit_bias b[1] = {{0, 2.5f}};
    struct hs_sampling_params p = plain_params();
    p.logit_bias = b;
    p.n_logit_bias = 1;
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 4, &s), HS_OK);
    hs_token ids[4];
    float cl[4];
    cr_assert_eq(hs__sampler_candidates(s, l, ids, cl, NULL), 4);
    for (int i = 0; i < 4; i++) {
        float want = ids[i] == 0 ? 3.5f : l[ids[i]];
        cr_assert_float_eq(cl[i], want, 1e-6f);
    }
    hs_sampler_destroy(s);
}

Test(sampling, top_k_matches_reference)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 11);
    int nv = 3000;
    float *l = malloc((size_t)nv * sizeof(float));
    int ks[] = {1, 2, 7, 40, 2999, 3000, 5000};
    for (size_t i = 0; i < HS_ARRAY_LEN(ks); i++) {
        random_logits(&rng, l, nv, 2.0);
        l[17] = l[18]; /* a tie */
        struct hs_sampling_params p = plain_params();
        p.top_k = ks[i];
        check_chain(&p, l, nv, NULL, 0);
        tied_logits(&rng, l, nv);
        check_chain(&p, l, nv, NULL, 0);
    }
    free(l);
}

Test(sampling, top_p_matches_reference)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 12);
    int nv = 2000;
    float *l = malloc((size_t)nv * sizeof(float));
    float ps[] = {0.05f, 0.3f, 0.5f, 0.9f, 0.95f, 0.999f};
    for (size_t i = 0; i < HS_ARRAY_LEN(ps); i++) {
        random_logits(&rng, l, nv, 3.0);
        struct hs_sampling_params p = plain_params();
        p.top_p = ps[i];
        check_chain(&p, l, nv, NULL, 0); /* unsorted path (quickselect) */
        p.top_k = 100;
        check_chain(&p, l, nv, NULL, 0); /* after top-k (sorted path) */
        tied_logits(&rng, l, nv);
        p.top_k = 0;
        check_chain(&p, l, nv, NULL, 0);
        p.top_k = 300;
        check_chain(&p, l, nv, NULL, 0);
    }
    free(l);
}

Test(sampling, min_p_matches_reference)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 13);
    int nv = 2000;
    float *l = malloc((size_t)nv * sizeof(float));
    float ps[] = {0.001f, 0.05f, 0.2f, 0.7f, 1.0f};
    for (size_t i = 0; i < HS_ARRAY_LEN(ps); i++) {
        random_logits(&rng, l, nv, 3.0);
        struct hs_sampling_params p = plain_params();
        p.min_p = ps[i];
        check_chain(&p, l, nv, NULL, 0);
        p.top_k = 50;
        check_chain(&p, l, nv, NULL, 0);
    }
    free(l);
}

Test(sampling, full_chain_matches_reference)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 14);
    int nv = 4000;
    float *l = malloc((size_t)nv * sizeof(float));
    hs_token acc[200];
    struct hs_logit_bias bias[3] = {{5, 4.0f}, {6, -INFINITY}, {7, -3.0f}};
    for (int round = 0; round < 8; round++) {
        random_logits(&rng, l, nv, 2.5);
        for (int i = 0; i < 200; i++) {
            acc[i] = (hs_token)(hs_rng_next(&rng) % 300);
        }
        struct hs_sampling_params p = hs_sampling_default_params();
        p.seed = (uint64_t)round;
        p.temperature = 0.5f + 0.25f * (float)round;
        p.top_k = round % 2 ? 0 : 60;
        p.top_p = 0.8f + 0.02f * (float)round;
        p.min_p = 0.01f * (float)round;
        p.repetition_penalty = 1.3f;
        p.presence_penalty = 0.4f;
        p.frequency_penalty = 0.1f;
        p.penalty_last_n = round % 3 == 0 ? -1 : 64;
        p.logit_bias = bias;
        p.n_logit_bias = 3;
        check_chain(&p, l, nv, acc, 200);
    }
    free(l);
}

Test(sampling, top_k_one_equals_greedy)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 15);
    int nv = 1000;
    float *l = malloc((size_t)nv * sizeof(float));
    struct hs_sampling_params pk = plain_params();
    pk.top_k = 1;
    pk.temperature = 1.7f;
    struct hs_sampling_params pg = plain_params();
    pg.temperature = 0.0f;
    struct hs_sampler *sk = NULL;
    struct hs_sampler *sg = NULL;
    cr_assert_eq(hs_sampler_create(&pk, nv, &sk), HS_OK);
    cr_assert_eq(hs_sampler_create(&pg, nv, &sg), HS_OK);
    for (int i = 0; i < 30; i++) {
        random_logits(&rng, l, nv, 1.0);
        cr_assert_eq(hs_sampler_sample(sk, l), hs_sampler_sample(sg, l));
    }
    hs_sampler_destroy(sk);
    hs_sampler_destroy(sg);
    free(l);
}

static void draw_sequence(uint64_t seed, const float *l, int nv, hs_token *out, int n)
{
    struct hs_sampling_params p = hs_sampling_default_params();
    p.seed = seed;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 0.99f;
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, nv, &s), HS_OK);
    for (int i = 0; i < n; i++) {
        out[i] = hs_sampler_sample(s, l);
    }
    hs_sampler_destroy(s);
}

Test(sampling, same_seed_same_tokens)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 16);
    float l[500];
    random_logits(&rng, l, 500, 0.5);
    hs_token a[64], b[64], c[64];
    draw_sequence(42, l, 500, a, 64);
    draw_sequence(42, l, 500, b, 64);
    draw_sequence(43, l, 500, c, 64);
    cr_assert_arr_eq(a, b, sizeof(a));
    int same = 0;
    for (int i = 0; i < 64; i++) {
        same += a[i] == c[i];
    }
    cr_assert_lt(same, 16, "seeds 42 and 43 agree on %d of 64 tokens", same);
}

Test(sampling, empirical_frequencies_match_softmax)
{
    float l[8] = {0.3f, -1.2f, 1.5f, 0.0f, 2.1f, -0.4f, 0.9f, -2.5f};
    double ref[8];
    double max = 2.1, sum = 0.0;
    for (int i = 0; i < 8; i++) {
        ref[i] = exp((double)l[i] - max);
        sum += ref[i];
    }
    struct hs_sampling_params p = plain_params();
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 8, &s), HS_OK);
    int hist[8] = {0};
    int n = 100000;
    for (int i = 0; i < n; i++) {
        hs_token t = hs_sampler_sample(s, l);
        cr_assert(t >= 0 && t < 8);
        hist[t]++;
    }
    for (int i = 0; i < 8; i++) {
        double f = (double)hist[i] / n;
        cr_assert(fabs(f - ref[i] / sum) < 0.01, "token %d: frequency %g vs softmax %g", i, f,
                  ref[i] / sum);
    }
    hs_sampler_destroy(s);
}

Test(sampling, penalties_change_the_right_logits)
{
    float l[6] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f};
    struct hs_sampling_params p = plain_params();
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.25f;
    p.frequency_penalty = 0.5f;
    p.penalty_last_n = 4;
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 6, &s), HS_OK);
    /* token 3 falls out of the 4-token window; 0 twice, 1 once, 2 once */
    hs_token acc[] = {3, 0, 1, 0, 2, 99, -1};
    for (size_t i = 0; i < HS_ARRAY_LEN(acc); i++) {
        hs_sampler_accept(s, acc[i]);
    }
    float want[6] = {
        2.0f / 2.0f - 0.25f - 2 * 0.5f,                    /* positive: divided */
        -1.0f * 2.0f - 0.25f - 0.5f,                       /* negative: multiplied */
        0.5f / 2.0f - 0.25f - 0.5f,     3.0f, -2.0f, 1.0f, /* untouched */
    };
    hs_token ids[6];
    float cl[6];
    cr_assert_eq(hs__sampler_candidates(s, l, ids, cl, NULL), 6);
    for (int i = 0; i < 6; i++) {
        cr_assert_float_eq(cl[i], want[ids[i]], 1e-6f, "token %d: %g vs %g", ids[i], cl[i],
                           want[ids[i]]);
    }
    hs_sampler_destroy(s);

    p.penalty_last_n = 0; /* off */
    cr_assert_eq(hs_sampler_create(&p, 6, &s), HS_OK);
    hs_sampler_accept(s, 0);
    cr_assert_eq(hs__sampler_candidates(s, l, ids, cl, NULL), 6);
    for (int i = 0; i < 6; i++) {
        cr_assert_float_eq(cl[i], l[ids[i]], 0.0f);
    }
    hs_sampler_destroy(s);
}

static int cmp_double_desc(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x < y) - (x > y);
}

Test(sampling, logprobs_normalised_and_ordered)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 17);
    int nv = 3000;
    float *l = malloc((size_t)nv * sizeof(float));
    random_logits(&rng, l, nv, 4.0);
    l[10] = l[20] = 50.0f; /* a tie at the top: lower id first */
    hs_token *ids = malloc((size_t)nv * sizeof(hs_token));
    float *lp = malloc((size_t)nv * sizeof(float));
    float chosen = 0.0f;
    cr_assert_eq(hs_logprobs_top_k(l, nv, nv + 5, ids, lp, 7, &chosen), nv);
    double total = 0.0;
    for (int i = 0; i < nv; i++) {
        total += exp((double)lp[i]);
        if (i > 0) {
            cr_assert(lp[i - 1] >= lp[i], "not descending at %d", i);
        }
    }
    cr_assert(fabs(total - 1.0) < 1e-5, "sum of probabilities %g", total);
    cr_assert_eq(ids[0], 10);
    cr_assert_eq(ids[1], 20);

    /* reference: float64 log-softmax, full sort */
    double max = -INFINITY, sum = 0.0;
    for (int i = 0; i < nv; i++) {
        max = fmax(max, l[i]);
    }
    for (int i = 0; i < nv; i++) {
        sum += exp(l[i] - max);
    }
    double lse = max + log(sum);
    double *ref = malloc((size_t)nv * sizeof(double));
    for (int i = 0; i < nv; i++) {
        ref[i] = l[i] - lse;
    }
    cr_assert(fabs(chosen - ref[7]) < 1e-5);
    qsort(ref, (size_t)nv, sizeof(double), cmp_double_desc);
    int k = 5;
    cr_assert_eq(hs_logprobs_top_k(l, nv, k, ids, lp, -3, &chosen), k);
    cr_assert(isinf(chosen) && chosen < 0);
    for (int i = 0; i < k; i++) {
        cr_assert(fabs(lp[i] - ref[i]) < 1e-5, "rank %d: %g vs %g", i, lp[i], ref[i]);
        cr_assert(fabs(lp[i] - (l[ids[i]] - lse)) < 1e-5);
    }
    cr_assert_eq(hs_logprobs_top_k(l, nv, 0, ids, lp, 0, NULL), 0);
    free(ref);
    free(ids);
    free(lp);
    free(l);
}

Test(sampling, params_check_names_the_field)
{
    struct hs_error err;
    struct hs_sampling_params p = hs_sampling_default_params();
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_OK);
    p.top_p = 1.5f;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert_str_eq(err.message, "top_p must be in (0, 1], got 1.5");
    p = hs_sampling_default_params();
    p.temperature = -1.0f;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "temperature") != NULL);
    p = hs_sampling_default_params();
    p.min_p = NAN;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "min_p") != NULL);
    p = hs_sampling_default_params();
    p.repetition_penalty = 0.0f;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "repetition_penalty") != NULL);
    p = hs_sampling_default_params();
    p.frequency_penalty = INFINITY;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "frequency_penalty") != NULL);
    p = hs_sampling_default_params();
    p.presence_penalty = NAN;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "presence_penalty") != NULL);
    p = hs_sampling_default_params();
    p.penalty_last_n = -2;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "penalty_last_n") != NULL);
    struct hs_logit_bias b[2] = {{3, 1.0f}, {100, 1.0f}};
    p = hs_sampling_default_params();
    p.logit_bias = b;
    p.n_logit_bias = 2;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert_str_eq(err.message, "logit_bias[1].token must be in [0, 100), got 100");
    b[1].token = 4;
    b[1].bias = NAN;
    cr_assert_eq(hs_sampling_params_check(&p, 100, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "logit_bias[1].bias") != NULL);
    struct hs_sampler *s = (struct hs_sampler *)&err; /* must be reset to NULL */
    cr_assert_eq(hs_sampler_create(&p, 100, &s), HS_E_INVAL);
    cr_assert_null(s);
}

Test(sampling, large_vocab_top_k_path)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 18);
    int nv = 151936;
    float *l = malloc((size_t)nv * sizeof(float));
    random_logits(&rng, l, nv, 3.0);
    struct hs_sampling_params p = hs_sampling_default_params();
    p.seed = 5;
    check_chain(&p, l, nv, NULL, 0);
    free(l);
}

/* ---- constraints ---- */

/* A test constraint: a fixed set (mask, forced or error) and a log of accepted tokens. */
struct fake_constraint {
    struct hs_token_set set;
    hs_status allowed_status;
    hs_status accept_status;
    int n_allowed_calls;
    hs_token accepted[16];
    int n_accepted;
};

static hs_status fake_allowed(void *user, struct hs_token_set *set)
{
    struct fake_constraint *f = user;
    f->n_allowed_calls++;
    *set = f->set;
    return f->allowed_status;
}

static hs_status fake_accept(void *user, hs_token t)
{
    struct fake_constraint *f = user;
    if (f->n_accepted < 16) {
        f->accepted[f->n_accepted++] = t;
    }
    return f->accept_status;
}

static struct hs_sampler_constraint fake_hook(struct fake_constraint *f)
{
    return (struct hs_sampler_constraint){fake_allowed, fake_accept, f};
}

Test(sampling, mask_matches_reference_on_masked_logits)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 21);
    int nv = 2000;
    float *l = malloc((size_t)nv * sizeof(float));
    float *lm = malloc((size_t)nv * sizeof(float));
    uint32_t *mask = calloc(HS_TOKEN_MASK_WORDS(nv), sizeof(uint32_t));
    random_logits(&rng, l, nv, 2.0);
    for (int i = 0; i < nv; i++) {
        bool on = hs_rng_uniform(&rng) < 0.1 || (i >= 64 && i < 96); /* a full word too */
        if (on) {
            hs_token_mask_set(mask, i);
        }
        lm[i] = on ? l[i] : -INFINITY;
    }
    struct hs_logit_bias bias[2] = {{70, -INFINITY}, {71, 3.0f}};
    struct hs_sampling_params ps[3] = {plain_params(), plain_params(), plain_params()};
    ps[1].top_k = 40;
    ps[1].top_p = 0.9f;
    ps[1].min_p = 0.02f;
    ps[1].logit_bias = bias;
    ps[1].n_logit_bias = 2;
    ps[2].temperature = 0.0f;
    ps[2].repetition_penalty = 1.3f;
    ps[2].penalty_last_n = 8;
    for (int k = 0; k < 3; k++) {
        struct fake_constraint f = {.set = {.kind = HS_TOKEN_SET_MASK, .mask = mask}};
        struct hs_sampler_constraint hook = fake_hook(&f);
        struct hs_sampler *s = NULL;
        cr_assert_eq(hs_sampler_create(&ps[k], nv, &s), HS_OK);
        struct hs_sampler *r = NULL;
        cr_assert_eq(hs_sampler_create(&ps[k], nv, &r), HS_OK);
        hs_token hist[3] = {64, 65, 1999};
        for (int i = 0; i < 3; i++) {
            hs_sampler_accept(s, hist[i]); /* before the constraint: not forwarded */
            hs_sampler_accept(r, hist[i]);
        }
        hs_sampler_set_constraint(s, &hook);
        hs_token *ids = malloc((size_t)nv * sizeof(hs_token));
        hs_token *rids = malloc((size_t)nv * sizeof(hs_token));
        double *probs = malloc((size_t)nv * sizeof(double));
        double *rprobs = malloc((size_t)nv * sizeof(double));
        int n = hs__sampler_candidates(s, l, ids, NULL, probs);
        int nr = hs__sampler_candidates(r, lm, rids, NULL, rprobs);
        cr_assert_eq(n, nr, "params %d: %d candidates with the mask, %d on masked logits", k, n,
                     nr);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(ids[i], rids[i]);
            cr_assert(fabs(probs[i] - rprobs[i]) < 1e-9, "params %d: p %g vs %g", k, probs[i],
                      rprobs[i]);
            cr_assert(hs_token_mask_test(mask, ids[i]) && (k != 1 || ids[i] != 70));
        }
        for (int t = 0; t < 200; t++) {
            hs_token tok = hs_sampler_sample(s, l);
            cr_assert(tok >= 0 && hs_token_mask_test(mask, tok) && (k != 1 || tok != 70),
                      "drew %d outside the mask or banned", tok);
        }
        cr_assert_eq(hs_sampler_last_result(s), HS_SAMPLE_OK);
        cr_assert_eq(f.n_accepted, 0);
        free(ids);
        free(rids);
        free(probs);
        free(rprobs);
        hs_sampler_destroy(s);
        hs_sampler_destroy(r);
    }
    free(l);
    free(lm);
    free(mask);
}

Test(sampling, greedy_follows_mask_not_argmax)
{
    float l[40];
    for (int i = 0; i < 40; i++) {
        l[i] = (float)i;
    }
    uint32_t mask[2] = {0, 0};
    hs_token_mask_set(mask, 3);
    hs_token_mask_set(mask, 33);
    hs_token_mask_set(mask, 7);
    struct hs_sampling_params p = plain_params();
    p.temperature = 0.0f;
    struct fake_constraint f = {.set = {.kind = HS_TOKEN_SET_MASK, .mask = mask}};
    struct hs_sampler_constraint hook = fake_hook(&f);
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 40, &s), HS_OK);
    hs_sampler_set_constraint(s, &hook);
    cr_assert_eq(hs_sampler_sample(s, l), 33);
    /* bias bans 33: the constraint is applied after bias, so the next best allowed wins */
    hs_sampler_destroy(s);
    struct hs_logit_bias b[1] = {{33, -INFINITY}};
    p.logit_bias = b;
    p.n_logit_bias = 1;
    cr_assert_eq(hs_sampler_create(&p, 40, &s), HS_OK);
    hs_sampler_set_constraint(s, &hook);
    cr_assert_eq(hs_sampler_sample(s, l), 7);
    hs_sampler_set_constraint(s, NULL); /* cleared: plain argmax again */
    cr_assert_eq(hs_sampler_sample(s, l), 39);
    hs_sampler_destroy(s);
}

Test(sampling, empty_mask_and_banned_mask_are_told_apart)
{
    float l[70];
    for (int i = 0; i < 70; i++) {
        l[i] = 0.1f * (float)i;
    }
    uint32_t mask[3] = {0, 0, 0};
    mask[2] = 0xFFFFFFC0u; /* bits past n_vocab = 70 only: nothing allowed */
    struct hs_sampling_params p = plain_params();
    struct fake_constraint f = {.set = {.kind = HS_TOKEN_SET_MASK, .mask = mask}};
    struct hs_sampler_constraint hook = fake_hook(&f);
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 70, &s), HS_OK);
    hs_sampler_set_constraint(s, &hook);
    cr_assert_eq(hs_sampler_sample(s, l), -(hs_token)HS_SAMPLE_CONSTRAINT_EMPTY);
    cr_assert_eq(hs_sampler_last_result(s), HS_SAMPLE_CONSTRAINT_EMPTY);
    cr_assert_eq(hs__sampler_candidates(s, l, NULL, NULL, NULL), 0);
    hs_sampler_destroy(s);

    hs_token_mask_set(mask, 5);
    hs_token_mask_set(mask, 69);
    struct hs_logit_bias b[2] = {{5, -INFINITY}, {69, -INFINITY}};
    p.logit_bias = b;
    p.n_logit_bias = 2;
    cr_assert_eq(hs_sampler_create(&p, 70, &s), HS_OK);
    hs_sampler_set_constraint(s, &hook);
    cr_assert_eq(hs_sampler_sample(s, l), -(hs_token)HS_SAMPLE_CONSTRAINT_BANNED);
    cr_assert_eq(hs_sampler_last_result(s), HS_SAMPLE_CONSTRAINT_BANNED);
    cr_assert_str_eq(hs_sample_result_str(HS_SAMPLE_CONSTRAINT_BANNED),
                     "every token the output constraint allows is banned by logit_bias");
    /* without a constraint, a fully banned vocabulary is still -1 */
    hs_sampler_set_constraint(s, NULL);
    l[5] = -INFINITY;
    for (int i = 0; i < 70; i++) {
        l[i] = -INFINITY;
    }
    cr_assert_eq(hs_sampler_sample(s, l), -1);
    cr_assert_eq(hs_sampler_last_result(s), HS_SAMPLE_ALL_BANNED);
    hs_sampler_destroy(s);
}

Test(sampling, forced_token_is_drawn_unless_banned)
{
    float l[8] = {5, 4, 3, 2, 1, 0, -1, NAN};
    hs_token forced[2] = {6, 2};
    struct hs_sampling_params p = plain_params();
    struct fake_constraint f = {
        .set = {.kind = HS_TOKEN_SET_FORCED, .forced = forced, .n_forced = 2}};
    struct hs_sampler_constraint hook = fake_hook(&f);
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 8, &s), HS_OK);
    hs_sampler_set_constraint(s, &hook);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(hs_sampler_sample(s, l), 6);
    }
    double prob = 0.0;
    hs_token id = -1;
    cr_assert_eq(hs__sampler_candidates(s, l, &id, NULL, &prob), 1);
    cr_assert_eq(id, 6);
    cr_assert_float_eq(prob, 1.0, 1e-12);
    forced[0] = 7; /* NaN logit: banned */
    cr_assert_eq(hs_sampler_sample(s, l), -(hs_token)HS_SAMPLE_CONSTRAINT_BANNED);
    hs_sampler_destroy(s);

    struct hs_logit_bias b[1] = {{2, -INFINITY}};
    p.logit_bias = b;
    p.n_logit_bias = 1;
    forced[0] = 2;
    cr_assert_eq(hs_sampler_create(&p, 8, &s), HS_OK);
    hs_sampler_set_constraint(s, &hook);
    cr_assert_eq(hs_sampler_sample(s, l), -(hs_token)HS_SAMPLE_CONSTRAINT_BANNED);
    hs_sampler_destroy(s);
}

Test(sampling, constraint_errors_and_broken_contracts_fail_the_step)
{
    float l[4] = {1, 2, 3, 4};
    struct hs_sampling_params p = plain_params();
    struct fake_constraint f = {.set = {.kind = HS_TOKEN_SET_ALL}, .allowed_status = HS_E_NOMEM};
    struct hs_sampler_constraint hook = fake_hook(&f);
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 4, &s), HS_OK);
    hs_sampler_set_constraint(s, &hook);
    cr_assert_eq(hs_sampler_sample(s, l), -(hs_token)HS_SAMPLE_CONSTRAINT_ERROR);
    cr_assert_eq(hs_sampler_constraint_status(s), HS_E_NOMEM);

    f.allowed_status = HS_OK;
    cr_assert_geq(hs_sampler_sample(s, l), 0); /* ALL: unrestricted */
    cr_assert_eq(hs_sampler_constraint_status(s), HS_OK);

    struct hs_token_set bad[3] = {
        {.kind = HS_TOKEN_SET_MASK, .mask = NULL},
        {.kind = HS_TOKEN_SET_FORCED, .forced = (const hs_token[]){4}, .n_forced = 1},
        {.kind = HS_TOKEN_SET_FORCED, .forced = (const hs_token[]){1}, .n_forced = 0},
    };
    for (int i = 0; i < 3; i++) {
        f.set = bad[i];
        cr_assert_eq(hs_sampler_sample(s, l), -(hs_token)HS_SAMPLE_CONSTRAINT_ERROR, "case %d", i);
        cr_assert_eq(hs_sampler_constraint_status(s), HS_E_INTERNAL);
    }
    hs_sampler_destroy(s);
}

Test(sampling, accept_forwards_to_the_constraint_after_it_is_set)
{
    struct hs_sampling_params p = plain_params();
    struct fake_constraint f = {.set = {.kind = HS_TOKEN_SET_ALL}};
    struct hs_sampler_constraint hook = fake_hook(&f);
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 10, &s), HS_OK);
    cr_assert_eq(hs_sampler_accept(s, 1), HS_OK); /* prompt */
    hs_sampler_set_constraint(s, &hook);
    cr_assert_eq(hs_sampler_accept(s, 2), HS_OK);
    cr_assert_eq(hs_sampler_accept(s, 9), HS_OK);
    f.accept_status = HS_E_INVAL;
    cr_assert_eq(hs_sampler_accept(s, 3), HS_E_INVAL);
    cr_assert_eq(f.n_accepted, 3);
    cr_assert_eq(f.accepted[0], 2);
    cr_assert_eq(f.accepted[1], 9);
    cr_assert_eq(f.accepted[2], 3);
    float l[10] = {0};
    (void)hs_sampler_sample(s, l);
    cr_assert_eq(f.n_accepted, 3, "sampling never accepts");
    cr_assert_geq(f.n_allowed_calls, 1);
    hs_sampler_destroy(s);
}

/* ---- speculative verification ---- */

/* Pearson's chi-square of hist[nv] (n draws) against the reference probabilities of the
 * surviving candidates (ids[nc], probs[nc]); a draw outside them counts as infinitely
 * unlikely. */
static double chi_square(const int *hist, int n, const int *ids, const double *probs, int nc)
{
    double chi = 0.0;
    int seen = 0;
    for (int i = 0; i < nc; i++) {
        double e = probs[i] * n;
        double d = hist[ids[i]] - e;
        chi += d * d / e;
        seen += hist[ids[i]];
    }
    return seen == n ? chi : INFINITY;
}

Test(sampling, verify_keeps_the_distribution_of_the_full_chain)
{
    /* A chain with every transform: bias, top-k, top-p, min-p, temperature. For each draft (the
     * likeliest, a middling one, one the filters drop) the tokens verify returns must follow the
     * chain's distribution exactly: accepted with p(draft), else drawn from the rest. */
    float l[8] = {0.3f, -1.2f, 1.5f, 0.0f, 2.1f, -0.4f, 0.9f, -2.5f};
    const struct hs_logit_bias bias[1] = {{3, 1.0f}};
    struct hs_sampling_params p = plain_params();
    p.temperature = 0.7f;
    p.top_k = 6;
    p.top_p = 0.97f;
    p.min_p = 0.02f;
    p.logit_bias = bias;
    p.n_logit_bias = 1;
    int ids[8];
    double probs[8];
    const int nc = ref_chain(l, 8, &p, NULL, ids, probs);
    cr_assert(nc >= 4 && nc < 8, "the chain keeps %d of 8", nc);
    const hs_token drafts[3] = {4, 0, 7}; /* 7 is filtered out: never accepted */
    const int n = 40000;
    /* chi-square bound for at most 7 degrees of freedom at p = 1e-4 */
    const double bound = 29.9;
    for (int k = 0; k < 3; k++) {
        struct hs_sampler *s = NULL;
        p.seed = 77 + (uint64_t)k;
        cr_assert_eq(hs_sampler_create(&p, 8, &s), HS_OK);
        int hist[8] = {0};
        int n_acc = 0;
        for (int i = 0; i < n; i++) {
            bool acc = false;
            const hs_token t = hs_sampler_verify(s, l, drafts[k], &acc);
            cr_assert(t >= 0 && t < 8);
            cr_assert_eq(acc, t == drafts[k]);
            n_acc += acc;
            hist[t]++;
        }
        hs_sampler_destroy(s);
        const double chi = chi_square(hist, n, ids, probs, nc);
        cr_assert(chi < bound, "draft %d: chi-square %g >= %g", drafts[k], chi, bound);
        double pd = 0.0;
        for (int i = 0; i < nc; i++) {
            pd += ids[i] == drafts[k] ? probs[i] : 0.0;
        }
        cr_assert(fabs((double)n_acc / n - pd) < 0.01, "draft %d accepted %g, p = %g", drafts[k],
                  (double)n_acc / n, pd);
        /* the bound has power: skipping the rejection step (always accepting) would fail it */
        int broken[8] = {0};
        broken[drafts[k]] = n;
        cr_assert(chi_square(broken, n, ids, probs, nc) > bound);
    }
}

Test(sampling, verify_in_greedy_mode_accepts_only_the_argmax)
{
    float l[6] = {0.5f, 2.0f, 2.0f, -1.0f, 1.9f, 0.0f};
    struct hs_sampling_params p = plain_params();
    p.temperature = 0.0f;
    struct hs_sampler *s = NULL;
    cr_assert_eq(hs_sampler_create(&p, 6, &s), HS_OK);
    for (hs_token d = 0; d < 6; d++) {
        bool acc = true;
        const hs_token t = hs_sampler_verify(s, l, d, &acc);
        cr_assert_eq(t, 1, "greedy gives the argmax (lowest id on ties), got %d", t);
        cr_assert_eq(acc, d == 1);
    }
    /* a ban of everything is reported as sampling reports it */
    float banned[6];
    for (int i = 0; i < 6; i++) {
        banned[i] = -INFINITY;
    }
    bool acc = true;
    cr_assert_eq(hs_sampler_verify(s, banned, 2, &acc), -1);
    cr_assert(!acc);
    hs_sampler_destroy(s);
}

/* Greedy and top-k on untouched logits take a one-pass path (no candidate array of the whole
 * vocabulary); a logit bias of 0 on one token changes no logit but sends the sampler down the
 * generic chain. Both must keep the same candidates in the same order, with the same logits,
 * and draw the same tokens from the same seed: over banned (-inf, NaN) and +inf tokens, ties,
 * and k below, at and above the surviving count. */
Test(sampling, direct_paths_match_the_generic_chain)
{
    enum { NV = 2000 };
    struct hs_rng rng;
    hs_rng_seed(&rng, 4242);
    float *l = malloc(NV * sizeof(float));
    hs_token *ids[2];
    float *cl[2];
    for (int v = 0; v < 2; v++) {
        ids[v] = malloc(NV * sizeof(hs_token));
        cl[v] = malloc(NV * sizeof(float));
        cr_assert(ids[v] && cl[v]);
    }
    struct hs_logit_bias zero = {.token = 5, .bias = 0.0f};
    static const int ks[] = {1, 3, 40, 1989, 1990, 1991, NV + 5};
    static const float temps[] = {0.0f, 0.8f};
    for (int round = 0; round < 2; round++) {
        if (round == 0) {
            random_logits(&rng, l, NV, 2.0);
        } else {
            tied_logits(&rng, l, NV);
        }
        for (int i = 0; i < 10; i++) { /* 10 banned tokens: 1990 survive */
            l[100 + 37 * i] = i % 2 ? -INFINITY : NAN;
        }
        l[700] = INFINITY; /* clamped to FLT_MAX, tied with the next one */
        l[1500] = FLT_MAX;
        for (size_t ti = 0; ti < HS_ARRAY_LEN(temps); ti++) {
            for (size_t ki = 0; ki < HS_ARRAY_LEN(ks); ki++) {
                struct hs_sampling_params p = hs_sampling_default_params();
                p.temperature = temps[ti];
                p.top_k = ks[ki];
                p.seed = 99;
                struct hs_sampler *s[2];
                int n[2];
                for (int v = 0; v < 2; v++) {
                    p.logit_bias = v ? &zero : NULL;
                    p.n_logit_bias = v;
                    cr_assert_eq(hs_sampler_create(&p, NV, &s[v]), HS_OK);
                    n[v] = hs__sampler_candidates(s[v], l, ids[v], cl[v], NULL);
                }
                cr_assert_eq(n[0], n[1], "t %g k %d: %d vs %d kept", temps[ti], ks[ki], n[0], n[1]);
                cr_assert(n[0] > 0);
                for (int i = 0; i < n[0]; i++) {
                    cr_assert(ids[0][i] == ids[1][i] &&
                                  memcmp(&cl[0][i], &cl[1][i], sizeof(float)) == 0,
                              "t %g k %d: candidate %d: %d (%g) vs %d (%g)", temps[ti], ks[ki], i,
                              ids[0][i], cl[0][i], ids[1][i], cl[1][i]);
                }
                if (temps[ti] == 0.0f) {
                    cr_assert_eq(ids[0][0], 700, "the first of the (clamped) maxima");
                }
                for (int t = 0; t < 20; t++) {
                    cr_assert_eq(hs_sampler_sample(s[0], l), hs_sampler_sample(s[1], l));
                }
                hs_sampler_destroy(s[0]);
                hs_sampler_destroy(s[1]);
            }
        }
    }
    for (int i = 0; i < NV; i++) { /* every token banned */
        l[i] = i % 2 ? -INFINITY : NAN;
    }
    for (size_t ti = 0; ti < HS_ARRAY_LEN(temps); ti++) {
        struct hs_sampling_params p = hs_sampling_default_params();
        p.temperature = temps[ti];
        struct hs_sampler *s = NULL;
        cr_assert_eq(hs_sampler_create(&p, NV, &s), HS_OK);
        cr_assert_eq(hs_sampler_sample(s, l), -(hs_token)HS_SAMPLE_ALL_BANNED);
        hs_sampler_destroy(s);
    }
    for (int v = 0; v < 2; v++) {
        free(ids[v]);
        free(cl[v]);
    }
    free(l);
}
