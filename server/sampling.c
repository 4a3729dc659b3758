/* Token sampling: the llama.cpp chain (bias, penalties, constraint, top-k, top-p, min-p,
 * temperature, draw) over a candidate array preallocated for n_vocab; top-k and top-p use heaps so
 * that no step sorts the whole vocabulary. */
#include "server/sampling.h"
#include "server/sampling-impl.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest penalty window accepted: the ring is preallocated, so the cap bounds memory. */
#define HS__PENALTY_LAST_N_MAX (1 << 20)

struct hs__cand {
    hs_token id;
    float logit;
};

struct hs_sampler {
    struct hs_sampling_params p; /* p.logit_bias points at bias */
    struct hs_logit_bias *bias;  /* owns, [p.n_logit_bias] */
    int32_t n_vocab;
    struct hs_rng rng;
    bool penalties_on;
    int32_t *counts;   /* owns, [n_vocab] occurrences inside the window */
    hs_token *ring;    /* owns, [p.penalty_last_n] when > 0: the window */
    int32_t ring_head; /* oldest entry */
    int32_t ring_len;
    struct hs__cand *cand; /* owns, [n_vocab] */
    struct hs__cand *tmp;  /* owns, [n_vocab] */
    double *w;             /* owns, [n_vocab] softmax weights of the candidates */
    bool has_constraint;
    struct hs_sampler_constraint constraint;
    enum hs_sample_result last_result;
    hs_status constraint_status; /* of the last allowed() call */
};

struct hs_sampling_params hs_sampling_default_params(void)
{
    struct hs_sampling_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repetition_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0xFFFFFFFFu,
        .logit_bias = NULL,
        .n_logit_bias = 0,
    };
    return p;
}

hs_status hs_sampling_params_check(const struct hs_sampling_params *p, int32_t n_vocab,
                                   struct hs_error *err)
{
    if (!p) {
        return hs_error_set(err, HS_E_INVAL, "sampling params missing");
    }
    if (n_vocab <= 0) {
        return hs_error_set(err, HS_E_INVAL, "n_vocab must be > 0, got %d", (int)n_vocab);
    }
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature)) {
        return hs_error_set(err, HS_E_INVAL, "temperature must be finite and >= 0, got %g",
                            (double)p->temperature);
    }
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        return hs_error_set(err, HS_E_INVAL, "top_p must be in (0, 1], got %g", (double)p->top_p);
    }
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) {
        return hs_error_set(err, HS_E_INVAL, "min_p must be in [0, 1], got %g", (double)p->min_p);
    }
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty)) {
        return hs_error_set(err, HS_E_INVAL, "repetition_penalty must be finite and > 0, got %g",
                            (double)p->repetition_penalty);
    }
    if (!isfinite(p->presence_penalty)) {
        return hs_error_set(err, HS_E_INVAL, "presence_penalty must be finite, got %g",
                            (double)p->presence_penalty);
    }
    if (!isfinite(p->frequency_penalty)) {
        return hs_error_set(err, HS_E_INVAL, "frequency_penalty must be finite, got %g",
                            (double)p->frequency_penalty);
    }
    if (p->penalty_last_n < -1 || p->penalty_last_n > HS__PENALTY_LAST_N_MAX) {
        return hs_error_set(err, HS_E_INVAL, "penalty_last_n must be in [-1, %d], got %d",
                            HS__PENALTY_LAST_N_MAX, (int)p->penalty_last_n);
    }
    if (p->n_logit_bias < 0) {
        return hs_error_set(err, HS_E_INVAL, "n_logit_bias must be >= 0, got %d",
                            (int)p->n_logit_bias);
    }
    if (p->n_logit_bias > 0 && !p->logit_bias) {
        return hs_error_set(err, HS_E_INVAL, "logit_bias is NULL but n_logit_bias is %d",
                            (int)p->n_logit_bias);
    }
    for (int32_t i = 0; i < p->n_logit_bias; i++) {
        const struct hs_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= n_vocab) {
            return hs_error_set(err, HS_E_INVAL, "logit_bias[%d].token must be in [0, %d), got %d",
                                (int)i, (int)n_vocab, (int)b->token);
        }
        if (!isfinite(b->bias) && !(isinf(b->bias) && b->bias < 0.0f)) {
            return hs_error_set(err, HS_E_INVAL,
                                "logit_bias[%d].bias must be finite or -inf, got %g", (int)i,
                                (double)b->bias);
        }
    }
    return HS_OK;
}

hs_status hs_sampler_create(const struct hs_sampling_params *p, int32_t n_vocab,
                            struct hs_sampler **out)
{
    *out = NULL;
    hs_status st = hs_sampling_params_check(p, n_vocab, NULL);
    if (st != HS_OK) {
        return st;
    }
    struct hs_sampler *s = calloc(1, sizeof(*s));
    if (!s) {
        return HS_E_NOMEM;
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    if (p->n_logit_bias > 0) {
        s->bias = malloc((size_t)p->n_logit_bias * sizeof(*s->bias));
        if (!s->bias) {
            goto fail;
        }
        memcpy(s->bias, p->logit_bias, (size_t)p->n_logit_bias * sizeof(*s->bias));
    }
    s->p.logit_bias = s->bias;
    s->penalties_on =
        p->penalty_last_n != 0 && (p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
                                   p->frequency_penalty != 0.0f);
    s->counts = calloc((size_t)n_vocab, sizeof(*s->counts));
    s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
    s->tmp = malloc((size_t)n_vocab * sizeof(*s->tmp));
    s->w = malloc((size_t)n_vocab * sizeof(*s->w));
    if (!s->counts || !s->cand || !s->tmp || !s->w) {
        goto fail;
    }
    if (p->penalty_last_n > 0) {
        s->ring = malloc((size_t)p->penalty_last_n * sizeof(*s->ring));
        if (!s->ring) {
            goto fail;
        }
    }
    hs_rng_seed(&s->rng, p->seed);
    *out = s;
    return HS_OK;

fail:
    hs_sampler_destroy(s);
    return HS_E_NOMEM;
}

void hs_sampler_destroy(struct hs_sampler *s)
{
    if (!s) {
        return;
    }
    free(s->bias);
    free(s->counts);
    free(s->ring);
    free(s->cand);
    free(s->tmp);
    free(s->w);
    free(s);
}

void hs_sampler_set_constraint(struct hs_sampler *s, const struct hs_sampler_constraint *c)
{
    s->has_constraint = c != NULL;
    if (c) {
        s->constraint = *c;
    }
}

hs_status hs_sampler_accept(struct hs_sampler *s, hs_token t)
{
    int32_t last_n = s->p.penalty_last_n;
    if (t >= 0 && t < s->n_vocab && last_n != 0) {
        if (last_n > 0) {
            if (s->ring_len == last_n) {
                s->counts[s->ring[s->ring_head]]--;
                s->ring[s->ring_head] = t;
                s->ring_head = (s->ring_head + 1) % last_n;
            } else {
                s->ring[(s->ring_head + s->ring_len) % last_n] = t;
                s->ring_len++;
            }
        }
        if (s->counts[t] < INT32_MAX) {
            s->counts[t]++;
        }
    }
    if (s->has_constraint && s->constraint.accept) {
        return s->constraint.accept(s->constraint.user, t);
    }
    return HS_OK;
}

const char *hs_token_set_kind_str(enum hs_token_set_kind k)
{
    switch (k) {
    case HS_TOKEN_SET_ALL:
        return "all";
    case HS_TOKEN_SET_MASK:
        return "mask";
    case HS_TOKEN_SET_FORCED:
        return "forced";
    case HS_TOKEN_SET_KIND_COUNT:
        break;
    }
    return "unknown";
}

const char *hs_sample_result_str(enum hs_sample_result r)
{
    switch (r) {
    case HS_SAMPLE_OK:
        return "ok";
    case HS_SAMPLE_ALL_BANNED:
        return "every token is banned by logit_bias or penalties";
    case HS_SAMPLE_CONSTRAINT_EMPTY:
        return "the output constraint allows no token here";
    case HS_SAMPLE_CONSTRAINT_BANNED:
        return "every token the output constraint allows is banned by logit_bias";
    case HS_SAMPLE_CONSTRAINT_ERROR:
        return "the output constraint failed";
    case HS_SAMPLE_RESULT_COUNT:
        break;
    }
    return "unknown";
}

enum hs_sample_result hs_sampler_last_result(const struct hs_sampler *s)
{
    return s->last_result;
}

hs_status hs_sampler_constraint_status(const struct hs_sampler *s)
{
    return s->constraint_status;
}

/* ---- candidate ordering: higher logit first, lower id on ties ---- */

static inline bool cand_better(const struct hs__cand *a, const struct hs__cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Min-heap by cand_better (root is the worst): sift element i down in h[0..n). */
static void heap_sift_down_worst(struct hs__cand *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1;
        int32_t r = l + 1;
        int32_t w = i;
        if (l < n && cand_better(&h[w], &h[l])) {
            w = l;
        }
        if (r < n && cand_better(&h[w], &h[r])) {
            w = r;
        }
        if (w == i) {
            return;
        }
        struct hs__cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* h[0..k) made a heap with the worst at the root. */
static void heap_make_worst(struct hs__cand *h, int32_t k)
{
    for (int32_t i = k / 2 - 1; i >= 0; i--) {
        heap_sift_down_worst(h, k, i);
    }
}

/* Offers c to the heap h[0..k) of the best so far: it replaces the worst if better. */
static inline void heap_offer(struct hs__cand *h, int32_t k, const struct hs__cand *c)
{
    if (cand_better(c, &h[0])) {
        h[0] = *c;
        heap_sift_down_worst(h, k, 0);
    }
}

/* Heapsort of the heap h[0..k): moving the worst to the end each time leaves it best first. */
static void heap_sort_best_first(struct hs__cand *h, int32_t k)
{
    for (int32_t m = k - 1; m > 0; m--) {
        struct hs__cand t = h[0];
        h[0] = h[m];
        h[m] = t;
        heap_sift_down_worst(h, m, 0);
    }
}

/* Writes the best k of c[0..n) to out[0..k), best first. O(n log k). */
static void select_top_k(const struct hs__cand *c, int32_t n, int32_t k, struct hs__cand *out)
{
    memcpy(out, c, (size_t)k * sizeof(*out));
    heap_make_worst(out, k);
    for (int32_t i = k; i < n; i++) {
        heap_offer(out, k, &c[i]);
    }
    heap_sort_best_first(out, k);
}

/* ---- the chain ---- */

static float cand_max_logit(const struct hs__cand *c, int32_t n)
{
    float max = c[0].logit;
    for (int32_t i = 1; i < n; i++) {
        max = c[i].logit > max ? c[i].logit : max;
    }
    return max;
}

static void swap_cand(struct hs__cand *c, double *w, int32_t i, int32_t j)
{
    struct hs__cand tc = c[i];
    c[i] = c[j];
    c[j] = tc;
    double tw = w[i];
    w[i] = w[j];
    w[j] = tw;
}

/* Keeps the smallest best-first prefix whose probability reaches top_p. Sorted input is scanned;
 * otherwise a quickselect on probability mass finds the cut in expected O(n) without ordering
 * the kept tokens (later steps do not need an order). */
static int32_t apply_top_p(struct hs_sampler *s, int32_t n, bool sorted)
{
    struct hs__cand *c = s->cand;
    double *w = s->w;
    double p = (double)s->p.top_p;
    double max = (double)(sorted ? c[0].logit : cand_max_logit(c, n));
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        w[i] = exp((double)c[i].logit - max);
        sum += w[i];
    }
    if (sorted) {
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += w[i] / sum;
            if (cum >= p) {
                return i + 1;
            }
        }
        return n;
    }
    /* Invariant: [0, lo) all belong to the kept prefix and hold probability `above`; the cut
     * lies in [lo, hi). */
    int32_t lo = 0;
    int32_t hi = n;
    double above = 0.0;
    uint64_t pick = 0x9e3779b97f4a7c15u;
    while (lo < hi) {
        pick = pick * 6364136223846793005u + 1442695040888963407u; /* deterministic pivots */
        int32_t piv = lo + (int32_t)((pick >> 33) % (uint64_t)(hi - lo));
        swap_cand(c, w, piv, hi - 1);
        struct hs__cand pc = c[hi - 1];
        int32_t m = lo;
        double mass = 0.0;
        for (int32_t i = lo; i < hi - 1; i++) {
            if (cand_better(&c[i], &pc)) {
                mass += w[i] / sum;
                swap_cand(c, w, i, m);
                m++;
            }
        }
        swap_cand(c, w, m, hi - 1); /* pivot at m: [lo, m) better, (m, hi) worse */
        if (above + mass >= p) {
            hi = m;
        } else if (above + mass + w[m] / sum >= p) {
            return m + 1;
        } else {
            above += mass + w[m] / sum;
            lo = m + 1;
        }
    }
    return lo > 0 ? lo : 1; /* p never reached (rounding): everything before lo */
}

static int32_t apply_min_p(struct hs_sampler *s, int32_t n, bool sorted)
{
    struct hs__cand *c = s->cand;
    double max = (double)(sorted ? c[0].logit : cand_max_logit(c, n));
    /* p_i >= min_p * p_max  <=>  logit_i - max >= log(min_p). */
    double thr = log((double)s->p.min_p);
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        if ((double)c[i].logit - max >= thr) {
            c[m++] = c[i];
        }
    }
    return m;
}

/* Fills s->w with the candidates' softmax weights at the sampler's temperature (relative to the
 * best) and returns their sum. */
static double cand_weights(struct hs_sampler *s, int32_t n)
{
    const struct hs__cand *c = s->cand;
    double inv_t = s->p.temperature > 0.0f ? 1.0 / (double)s->p.temperature : 1.0;
    double max = (double)cand_max_logit(c, n);
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        s->w[i] = exp(((double)c[i].logit - max) * inv_t);
        sum += s->w[i];
    }
    return sum;
}

static hs_token draw(struct hs_sampler *s, int32_t n)
{
    double sum = cand_weights(s, n);
    double u = hs_rng_uniform(&s->rng) * sum;
    double cum = 0.0;
    hs_token last = s->cand[0].id;
    for (int32_t i = 0; i < n; i++) {
        if (s->w[i] > 0.0) {
            last = s->cand[i].id;
        }
        cum += s->w[i];
        if (u < cum) {
            return s->cand[i].id;
        }
    }
    return last; /* u rounded past the total: the last token with mass */
}

/* Asks the constraint for this step's set; false (with s->last_result set) when it failed or
 * broke its contract. */
static bool constraint_set(struct hs_sampler *s, struct hs_token_set *set)
{
    *set = (struct hs_token_set){.kind = HS_TOKEN_SET_ALL};
    s->constraint_status = HS_OK;
    if (!s->has_constraint || !s->constraint.allowed) {
        return true;
    }
    hs_status st = s->constraint.allowed(s->constraint.user, set);
    bool bad_mask = set->kind == HS_TOKEN_SET_MASK && !set->mask;
    bool bad_forced =
        set->kind == HS_TOKEN_SET_FORCED &&
        (!set->forced || set->n_forced < 1 || set->forced[0] < 0 || set->forced[0] >= s->n_vocab);
    bool bad_kind = set->kind < HS_TOKEN_SET_ALL || set->kind >= HS_TOKEN_SET_KIND_COUNT;
    if (st == HS_OK && (bad_mask || bad_forced || bad_kind)) {
        st = HS_E_INTERNAL; /* a constraint that breaks its contract fails the request */
    }
    if (st != HS_OK) {
        s->constraint_status = st;
        s->last_result = HS_SAMPLE_CONSTRAINT_ERROR;
        return false;
    }
    return true;
}

static bool mask_any(const uint32_t *mask, int32_t n_vocab)
{
    size_t nw = HS_TOKEN_MASK_WORDS(n_vocab);
    for (size_t w = 0; w < nw; w++) {
        uint32_t bits = mask[w];
        if (w == nw - 1 && n_vocab % 32 != 0) {
            bits &= (1u << (n_vocab % 32)) - 1u;
        }
        if (bits) {
            return true;
        }
    }
    return false;
}

/* A forced token survives alone unless bias bans it (or its logit is NaN/-inf). */
static int32_t forced_candidate(struct hs_sampler *s, const float *logits, hs_token t)
{
    float l = logits[t];
    for (int32_t i = 0; i < s->p.n_logit_bias; i++) {
        if (s->bias[i].token == t) {
            l += s->bias[i].bias;
        }
    }
    if (!(l > -INFINITY)) {
        s->last_result = HS_SAMPLE_CONSTRAINT_BANNED;
        return 0;
    }
    s->cand[0].id = t;
    s->cand[0].logit = l > FLT_MAX ? FLT_MAX : l;
    return 1;
}

/* A logit as the chain's filter takes it: NaN for a banned token (-inf or NaN), +inf clamped. */
static inline float cand_logit(float l)
{
    return !(l > -INFINITY) ? NAN : l > FLT_MAX ? FLT_MAX : l;
}

/* The direct paths below scan a row in blocks of this many logits: a block is compared with the
 * bound a token must pass at once, and only the few blocks holding a logit above it are taken
 * token by token. */
#define HS__SAMPLER_SCAN_BLOCK 16

/* The first index from i on, stepping whole blocks of l[0 .. nv), where a logit may be above
 * bound: a block none of whose logits is above it (NaN is not) is skipped after a compare written
 * without branches, which the compiler makes a few vector compares. Every logit that could pass
 * bound after cand_logit is above it as it is (cand_logit only lowers +inf to FLT_MAX and bans
 * the rest), so a skipped block holds no candidate. */
static inline int32_t skip_blocks(const float *l, int32_t i, int32_t nv, float bound)
{
    for (; i + HS__SAMPLER_SCAN_BLOCK <= nv; i += HS__SAMPLER_SCAN_BLOCK) {
        int any = 0;
        for (int j = 0; j < HS__SAMPLER_SCAN_BLOCK; j++) {
            any |= l[i + j] > bound;
        }
        if (any) {
            break;
        }
    }
    return i;
}

/* Greedy on unmodified, unconstrained logits: the filter and the argmax in one pass over the
 * row, with no candidate array written (the first best, as the generic path picks it). 0 when
 * every token is banned. */
static int32_t argmax_direct(struct hs_sampler *s, const float *logits)
{
    const int32_t nv = s->n_vocab;
    int32_t best = -1;
    float bl = -INFINITY;
    for (int32_t i = 0; (i = skip_blocks(logits, i, nv, bl)) < nv;) {
        for (const int32_t end = HS_MIN(i + HS__SAMPLER_SCAN_BLOCK, nv); i < end; i++) {
            const float l = cand_logit(logits[i]);
            if (l > bl) { /* false for NaN: banned */
                best = i;
                bl = l;
            }
        }
    }
    if (best < 0) {
        return 0;
    }
    s->cand[0] = (struct hs__cand){.id = best, .logit = bl};
    return 1;
}

/* Top-k on unmodified, unconstrained logits: select_top_k fed straight from the row, without
 * first copying every surviving token (n_vocab candidates of 8 bytes a draw): the same first k
 * taken in order, heap and replacements, so the same survivors in the same order; with k or
 * fewer survivors, all of them in vocabulary order and *sorted false, as the generic path leaves
 * them. Returns the count (0: every token banned). */
static int32_t top_k_direct(struct hs_sampler *s, const float *logits, bool *sorted)
{
    const int32_t k = s->p.top_k;
    const int32_t nv = s->n_vocab;
    struct hs__cand *out = s->tmp;
    int32_t n = 0;
    bool heap = false;
    int32_t i = 0;
    for (; i < nv && !heap; i++) {
        const struct hs__cand c = {.id = i, .logit = cand_logit(logits[i])};
        if (c.logit != c.logit) {
            continue; /* banned */
        }
        if (n < k) {
            out[n++] = c;
            continue;
        }
        /* a (k + 1)-th survivor: select_top_k's heap of the first k */
        heap_make_worst(out, k);
        heap = true;
        heap_offer(out, k, &c);
    }
    /* Heap full: a later token (a higher id) replaces the worst only with a higher logit. */
    while (heap && (i = skip_blocks(logits, i, nv, out[0].logit)) < nv) {
        for (const int32_t end = HS_MIN(i + HS__SAMPLER_SCAN_BLOCK, nv); i < end; i++) {
            const struct hs__cand c = {.id = i, .logit = cand_logit(logits[i])};
            if (c.logit == c.logit) { /* not banned */
                heap_offer(out, k, &c);
            }
        }
    }
    *sorted = heap;
    if (heap) {
        heap_sort_best_first(out, k);
    }
    memcpy(s->cand, out, (size_t)n * sizeof(*out));
    return n;
}

/* The chain's cuts after top-k: top-p, then min-p, on c[0 .. n) (best first when sorted). */
static int32_t chain_cut(struct hs_sampler *s, int32_t n, bool sorted)
{
    if (s->p.top_p < 1.0f && n > 1) {
        n = apply_top_p(s, n, sorted);
    }
    if (s->p.min_p > 0.0f && n > 1) {
        n = apply_min_p(s, n, sorted);
    }
    return n;
}

/* Leaves the surviving candidates in s->cand and returns their count; in greedy mode only the
 * argmax survives. 0 with s->last_result saying why. */
static int32_t run_chain(struct hs_sampler *s, const float *logits)
{
    struct hs__cand *c = s->cand;
    int32_t nv = s->n_vocab;
    struct hs_token_set set;
    s->last_result = HS_SAMPLE_OK;
    if (!constraint_set(s, &set)) {
        return 0;
    }
    if (set.kind == HS_TOKEN_SET_FORCED) {
        return forced_candidate(s, logits, set.forced[0]);
    }
    bool modified = s->p.n_logit_bias > 0 || s->penalties_on;
    int32_t n = 0;
    bool sorted = false;
    if (!modified && set.kind == HS_TOKEN_SET_ALL && (s->p.temperature <= 0.0f || s->p.top_k > 0)) {
        n = s->p.temperature <= 0.0f ? argmax_direct(s, logits) : top_k_direct(s, logits, &sorted);
        if (n == 0) {
            s->last_result = HS_SAMPLE_ALL_BANNED;
            return 0;
        }
        return s->p.temperature <= 0.0f ? 1 : chain_cut(s, n, sorted);
    }
    if (modified) {
        for (int32_t i = 0; i < nv; i++) {
            c[i].logit = logits[i];
        }
    }
    for (int32_t i = 0; i < s->p.n_logit_bias; i++) {
        c[s->bias[i].token].logit += s->bias[i].bias;
    }
    if (s->penalties_on) {
        float rep = s->p.repetition_penalty;
        float pres = s->p.presence_penalty;
        float freq = s->p.frequency_penalty;
        for (int32_t i = 0; i < nv; i++) {
            int32_t cnt = s->counts[i];
            if (cnt == 0) {
                continue;
            }
            float l = c[i].logit;
            l = l <= 0.0f ? l * rep : l / rep;
            l -= (float)cnt * freq + pres;
            c[i].logit = l;
        }
    }
    /* Drop banned tokens (-inf, or NaN from the model) and those the constraint does not allow;
     * clamp +inf so exp stays finite. When nothing modified the logits they are read straight
     * from the input (one pass); in place, entry n <= i is written only after entry i was
     * read. A mask is read a word at a time, so mostly-disallowed vocabularies skip fast. */
    const uint32_t *mask = set.kind == HS_TOKEN_SET_MASK ? set.mask : NULL;
    for (int32_t i0 = 0; i0 < nv; i0 += 32) {
        uint32_t bits = mask ? mask[i0 >> 5] : ~0u;
        int32_t end = i0 + 32 < nv ? i0 + 32 : nv;
        for (int32_t i = i0; i < end && bits; i++, bits >>= 1) {
            if (!(bits & 1u)) {
                continue;
            }
            float l = modified ? c[i].logit : logits[i];
            if (!(l > -INFINITY)) {
                continue;
            }
            c[n].id = i;
            c[n].logit = l > FLT_MAX ? FLT_MAX : l;
            n++;
        }
    }
    if (n == 0) {
        s->last_result = !mask                ? HS_SAMPLE_ALL_BANNED
                         : mask_any(mask, nv) ? HS_SAMPLE_CONSTRAINT_BANNED
                                              : HS_SAMPLE_CONSTRAINT_EMPTY;
        return 0;
    }
    if (s->p.temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++) {
            if (c[i].logit > c[best].logit) {
                best = i;
            }
        }
        c[0] = c[best];
        return 1;
    }
    if (s->p.top_k > 0 && s->p.top_k < n) {
        select_top_k(c, n, s->p.top_k, s->tmp);
        n = s->p.top_k;
        memcpy(c, s->tmp, (size_t)n * sizeof(*c));
        sorted = true;
    }
    return chain_cut(s, n, sorted);
}

hs_token hs_sampler_sample(struct hs_sampler *s, const float *logits)
{
    int32_t n = run_chain(s, logits);
    if (n == 0) {
        return -(hs_token)s->last_result;
    }
    if (n == 1) {
        return s->cand[0].id;
    }
    return draw(s, n);
}

hs_token hs_sampler_verify(struct hs_sampler *s, const float *logits, hs_token draft,
                           bool *accepted)
{
    *accepted = false;
    int32_t n = run_chain(s, logits);
    if (n == 0) {
        return -(hs_token)s->last_result;
    }
    if (n == 1) {
        *accepted = s->cand[0].id == draft;
        return s->cand[0].id;
    }
    /* The draft is deterministic (q(draft) = 1): accept it with probability p(draft), else draw
     * from p with the draft taken out, renormalised: (p - q)+ / (1 - p(draft)). */
    double sum = cand_weights(s, n);
    int32_t k = -1;
    for (int32_t i = 0; i < n; i++) {
        if (s->cand[i].id == draft) {
            k = i;
            break;
        }
    }
    if (k >= 0) {
        const double u = hs_rng_uniform(&s->rng) * sum;
        if (u < s->w[k] || s->w[k] >= sum) {
            *accepted = true;
            return draft;
        }
        sum -= s->w[k];
        s->w[k] = 0.0;
        if (!(sum > 0.0)) {
            *accepted = true; /* every other candidate rounds to nothing */
            return draft;
        }
    }
    double u = hs_rng_uniform(&s->rng) * sum;
    double cum = 0.0;
    hs_token last = -1;
    for (int32_t i = 0; i < n; i++) {
        if (s->w[i] > 0.0) {
            last = s->cand[i].id;
        }
        cum += s->w[i];
        if (u < cum && s->w[i] > 0.0) {
            return s->cand[i].id;
        }
    }
    return last >= 0 ? last : s->cand[0].id;
}

int32_t hs__sampler_candidates(struct hs_sampler *s, const float *logits, hs_token *ids,
                               float *cand_logits, double *probs)
{
    int32_t n = run_chain(s, logits);
    double sum = n > 0 ? cand_weights(s, n) : 1.0;
    for (int32_t i = 0; i < n; i++) {
        if (ids) {
            ids[i] = s->cand[i].id;
        }
        if (cand_logits) {
            cand_logits[i] = s->cand[i].logit;
        }
        if (probs) {
            probs[i] = s->w[i] / sum;
        }
    }
    return n;
}

/* ---- logprobs ---- */

/* Min-heap (worst at the root) over parallel arrays ids/vals, sifting element i down. */
static void pair_sift_down_worst(hs_token *ids, float *vals, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1;
        int32_t r = l + 1;
        int32_t w = i;
        struct hs__cand cw = {ids[i], vals[i]};
        if (l < n) {
            struct hs__cand cl = {ids[l], vals[l]};
            if (cand_better(&cw, &cl)) {
                w = l;
                cw = cl;
            }
        }
        if (r < n) {
            struct hs__cand cr = {ids[r], vals[r]};
            if (cand_better(&cw, &cr)) {
                w = r;
                cw = cr;
            }
        }
        if (w == i) {
            return;
        }
        ids[w] = ids[i];
        vals[w] = vals[i];
        ids[i] = cw.id;
        vals[i] = cw.logit;
        i = w;
    }
}

static float logprob_of(float l, double lse)
{
    if (isnan(l) || isinf(lse)) {
        return -INFINITY; /* NaN counts as -inf; no finite mass at all gives -inf everywhere */
    }
    return (float)((double)l - lse);
}

int32_t hs_logprobs_top_k(const float *logits, int32_t n_vocab, int32_t k, hs_token *ids,
                          float *logprobs, hs_token chosen, float *chosen_logprob)
{
    double max = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        if ((double)logits[i] > max) { /* false for NaN */
            max = (double)logits[i];
        }
    }
    double lse = max; /* +-inf stays as is */
    if (isfinite(max)) {
        double sum = 0.0;
        for (int32_t i = 0; i < n_vocab; i++) {
            if (!isnan(logits[i])) {
                sum += exp((double)logits[i] - max);
            }
        }
        lse = max + log(sum);
    }
    if (chosen_logprob) {
        *chosen_logprob =
            (chosen >= 0 && chosen < n_vocab) ? logprob_of(logits[chosen], lse) : -INFINITY;
    }
    if (k <= 0 || n_vocab <= 0) {
        return 0;
    }
    if (k > n_vocab) {
        k = n_vocab;
    }
    /* Best k in a min-heap held in the caller's arrays (logprobs holds logits meanwhile). */
    for (int32_t i = 0; i < k; i++) {
        ids[i] = i;
        logprobs[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    }
    for (int32_t i = k / 2 - 1; i >= 0; i--) {
        pair_sift_down_worst(ids, logprobs, k, i);
    }
    for (int32_t i = k; i < n_vocab; i++) {
        struct hs__cand a = {i, isnan(logits[i]) ? -INFINITY : logits[i]};
        struct hs__cand root = {ids[0], logprobs[0]};
        if (cand_better(&a, &root)) {
            ids[0] = a.id;
            logprobs[0] = a.logit;
            pair_sift_down_worst(ids, logprobs, k, 0);
        }
    }
    /* Heapsort: the worst moves to the end each round, leaving the arrays best first. */
    for (int32_t end = k - 1; end > 0; end--) {
        hs_token ti = ids[0];
        float tl = logprobs[0];
        ids[0] = ids[end];
        logprobs[0] = logprobs[end];
        ids[end] = ti;
        logprobs[end] = tl;
        pair_sift_down_worst(ids, logprobs, end, 0);
    }
    for (int32_t i = 0; i < k; i++) {
        logprobs[i] = logprob_of(logprobs[i], lse);
    }
    return k;
}
