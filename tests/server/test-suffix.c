/* Draft sources (server/suffix.h) against a brute-force reference that counts substrings in the
 * texts directly: the longest matched suffix, the most frequent continuation, the scores, the
 * open occurrence at the end of a growing text; the store's prompt and salt tries, its LRU
 * eviction of whole responses within its bytes, and counts that stay exact through evictions. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/suffix.h"

/* ---- brute-force reference ---- */

struct texts {
    const hs_token *t[512];
    int32_t n[512];
    int32_t count;
};

/* Occurrences of s [len] in the texts. */
static int64_t occ(const struct texts *x, const hs_token *s, int32_t len)
{
    int64_t c = 0;
    for (int32_t i = 0; i < x->count; i++) {
        for (int32_t p = 0; p + len <= x->n[i]; p++) {
            if (!memcmp(x->t[i] + p, s, (size_t)len * sizeof(*s))) {
                c++;
            }
        }
    }
    return c;
}

/* The draft the documented rule gives, for drafts that never reach the trie's depth. open: the
 * context is itself text 0 (a growing text), whose suffixes have one occurrence without a
 * continuation. */
static void ref_draft(const struct texts *x, const hs_token *ctx, int32_t n_ctx, bool open,
                      int32_t max_draft, float min_score, const hs_token *alphabet, int32_t n_alpha,
                      struct hs_suffix_draft *d)
{
    hs_token buf[256];
    d->n_tokens = 0;
    d->expected = 0;
    d->match_len = 0;
    int32_t m = HS_MIN(n_ctx, HS_SUFFIX_MAX_MATCH);
    for (; m >= 1; m--) {
        memcpy(buf, ctx + n_ctx - m, (size_t)m * sizeof(*buf));
        bool cont = false;
        for (int32_t a = 0; a < n_alpha && !cont; a++) {
            buf[m] = alphabet[a];
            cont = occ(x, buf, m + 1) > 0;
        }
        if (cont) {
            break;
        }
    }
    if (m == 0) {
        return;
    }
    d->match_len = m;
    memcpy(buf, ctx + n_ctx - m, (size_t)m * sizeof(*buf));
    int32_t len = m;
    double score = 1.0;
    while (d->n_tokens < max_draft) {
        int64_t best = 0;
        hs_token bt = -1;
        for (int32_t a = 0; a < n_alpha; a++) {
            buf[len] = alphabet[a];
            int64_t c = occ(x, buf, len + 1);
            if (c > best || (c == best && c > 0 && alphabet[a] < bt)) {
                best = c;
                bt = alphabet[a];
            }
        }
        if (best == 0) {
            break;
        }
        int64_t denom = occ(x, buf, len);
        if (open && len <= n_ctx && !memcmp(buf, ctx + n_ctx - len, (size_t)len * sizeof(*buf))) {
            denom--;
        }
        score *= (double)best / (double)denom;
        if (score < (double)min_score) {
            break;
        }
        buf[len++] = bt;
        d->tokens[d->n_tokens] = bt;
        d->score[d->n_tokens] = (float)score;
        d->expected += (float)score;
        d->n_tokens++;
    }
}

static void assert_same_draft(const struct hs_suffix_draft *a, const struct hs_suffix_draft *b,
                              const char *what, int i)
{
    cr_assert_eq(a->n_tokens, b->n_tokens, "%s %d: %d tokens, reference %d", what, i, a->n_tokens,
                 b->n_tokens);
    if (a->n_tokens > 0) {
        cr_assert_eq(a->match_len, b->match_len, "%s %d: matched %d, reference %d", what, i,
                     a->match_len, b->match_len);
    }
    for (int32_t k = 0; k < a->n_tokens; k++) {
        cr_assert_eq(a->tokens[k], b->tokens[k], "%s %d: token %d", what, i, k);
        cr_assert_eq(a->score[k], b->score[k], "%s %d: score %d: %g vs %g", what, i, k,
                     (double)a->score[k], (double)b->score[k]);
    }
}

/* ---- one growing text ---- */

Test(suffix, text_drafts_what_followed_the_same_suffix_before)
{
    struct hs_suffix_text *t = NULL;
    cr_assert_eq(hs_suffix_text_create(0, &t), HS_OK);
    const hs_token text[] = {1, 2, 3, 4, 5, 1, 2, 3};
    cr_assert_eq(hs_suffix_text_append(t, text, 8), HS_OK);
    cr_assert_eq(hs_suffix_text_n_tokens(t), 8);
    struct hs_suffix_draft d;
    hs_suffix_text_draft(t, text, 16, 0.1f, &d);
    /* "1 2 3" went on with "4 5 1 2 3"; the whole text is its own open end, so it stops there */
    const hs_token want[] = {4, 5, 1, 2, 3};
    cr_assert_eq(d.n_tokens, 5);
    cr_assert_eq(d.match_len, 3);
    cr_assert_eq(d.source, HS_SUFFIX_SOURCE_REQUEST);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(d.tokens[i], want[i]);
        cr_assert_float_eq(d.score[i], 1.0f, 0.0f);
    }
    cr_assert_float_eq(d.expected, 5.0f, 1e-6f);
    hs_suffix_text_draft(t, text, 2, 0.1f, &d);
    cr_assert_eq(d.n_tokens, 2, "max_draft bounds the draft");
    hs_suffix_text_destroy(t);
}

Test(suffix, text_follows_the_most_frequent_continuation_and_stops_below_the_threshold)
{
    struct hs_suffix_text *t = NULL;
    cr_assert_eq(hs_suffix_text_create(0, &t), HS_OK);
    /* after "7 8": 9, 9, 10; then the text ends in "7 8" */
    const hs_token text[] = {7, 8, 9, 1, 7, 8, 9, 2, 7, 8, 10, 3, 7, 8};
    const int32_t n = HS_ARRAY_LEN(text);
    cr_assert_eq(hs_suffix_text_append(t, text, n), HS_OK);
    struct hs_suffix_draft d;
    hs_suffix_text_draft(t, text, 8, 0.05f, &d);
    cr_assert_geq(d.n_tokens, 2);
    cr_assert_eq(d.tokens[0], 9);
    cr_assert_float_eq(d.score[0], 2.0f / 3.0f, 1e-6f);
    cr_assert_eq(d.tokens[1], 1, "9 went on with 1 and 2 once each: the lower id wins");
    cr_assert_float_eq(d.score[1], 1.0f / 3.0f, 1e-6f);
    hs_suffix_text_draft(t, text, 8, 0.7f, &d);
    cr_assert_eq(d.n_tokens, 0, "2/3 is below the threshold 0.7");
    hs_suffix_text_destroy(t);
}

Test(suffix, text_goes_on_past_the_trie_depth_from_a_shorter_suffix)
{
    struct hs_suffix_text *t = NULL;
    cr_assert_eq(hs_suffix_text_create(0, &t), HS_OK);
    enum { P = 60 };
    hs_token text[P + 40];
    for (int i = 0; i < P + 40; i++) {
        text[i] = 100 + i % P;
    }
    cr_assert_eq(hs_suffix_text_append(t, text, P + 40), HS_OK);
    struct hs_suffix_draft d;
    hs_suffix_text_draft(t, text, HS_SUFFIX_MAX_DRAFT, 0.5f, &d);
    cr_assert_eq(d.n_tokens, HS_SUFFIX_MAX_DRAFT);
    cr_assert_eq(d.match_len, HS_SUFFIX_MAX_MATCH);
    for (int i = 0; i < d.n_tokens; i++) {
        cr_assert_eq(d.tokens[i], 100 + (40 + i) % P, "token %d", i);
    }
    hs_suffix_text_destroy(t);
}

Test(suffix, text_matches_the_brute_force_reference)
{
    const hs_token alphabet[] = {0, 1, 2, 3, 4};
    struct hs_rng rng;
    hs_rng_seed(&rng, 42);
    for (int trial = 0; trial < 20; trial++) {
        struct hs_suffix_text *t = NULL;
        cr_assert_eq(hs_suffix_text_create(0, &t), HS_OK);
        hs_token text[160];
        int32_t n = 0;
        const int32_t len = 20 + (int32_t)(hs_rng_next(&rng) % 140);
        const int32_t skew = (int32_t)(hs_rng_next(&rng) % 3);
        while (n < len) {
            /* a skewed alphabet repeats itself enough to have long matches */
            hs_token tok = (hs_token)(hs_rng_next(&rng) % 5);
            if (skew && tok > 2) {
                tok = (hs_token)(hs_rng_next(&rng) % 2);
            }
            text[n++] = tok;
            cr_assert_eq(hs_suffix_text_append(t, &tok, 1), HS_OK);
            struct texts x = {.t = {text}, .n = {n}, .count = 1};
            struct hs_suffix_draft a, b;
            hs_suffix_text_draft(t, text, 8, 0.05f, &a);
            ref_draft(&x, text, n, true, 8, 0.05f, alphabet, 5, &b);
            assert_same_draft(&a, &b, "text length", n);
        }
        cr_assert_gt(hs_suffix_text_bytes(t), 0);
        hs_suffix_text_destroy(t);
    }
}

Test(suffix, text_past_its_node_budget_keeps_drafting)
{
    struct hs_suffix_text *t = NULL;
    cr_assert_eq(hs_suffix_text_create(100, &t), HS_OK);
    hs_token text[400];
    for (int i = 0; i < 400; i++) {
        text[i] = i % 7;
    }
    cr_assert_eq(hs_suffix_text_append(t, text, 400), HS_OK, "the budget is no error");
    struct hs_suffix_draft d;
    hs_suffix_text_draft(t, text, 4, 0.1f, &d);
    cr_assert_geq(d.n_tokens, 1);
    for (int i = 0; i < d.n_tokens; i++) {
        cr_assert_eq(d.tokens[i], (400 + i) % 7);
    }
    cr_assert_lt(hs_suffix_text_bytes(t), 64 << 10);
    hs_suffix_text_destroy(t);
}

/* ---- earlier responses ---- */

Test(suffix, store_prefers_the_same_prompt_and_keeps_salts_apart)
{
    struct hs_suffix_store *s = NULL;
    cr_assert_eq(hs_suffix_store_create(0, &s), HS_OK);
    cr_assert_lt(hs_suffix_store_bytes(s), 4 << 10, "the default bound is not reserved up front");
    const hs_token p1[] = {50, 51, 52, 53, 60};
    const hs_token p2[] = {70, 71, 72, 73, 60};
    const uint64_t k1 = hs_suffix_prompt_key(0, p1, 5);
    const uint64_t k2 = hs_suffix_prompt_key(0, p2, 5);
    cr_assert_neq(k1, k2);
    cr_assert_neq(hs_suffix_prompt_key(1, p1, 5), k1, "the salt is part of the key");
    const hs_token r1[] = {1, 2, 3, 4, 5, 6};
    const hs_token r2[] = {1, 2, 9, 9, 9, 9};
    /* p1 was answered r1 once; p2 was answered r2 three times */
    cr_assert_eq(hs_suffix_store_add(s, 0, k1, p1, 5, r1, 6), HS_OK);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(hs_suffix_store_add(s, 0, k2, p2, 5, r2, 6), HS_OK);
    }
    cr_assert_eq(hs_suffix_store_n_responses(s), 4);
    struct hs_suffix_draft d;
    /* p1 again: its own answer, from the prompt's end on */
    hs_suffix_store_draft(s, 0, k1, p1, 5, 8, 0.1f, &d);
    cr_assert_eq(d.source, HS_SUFFIX_SOURCE_PROMPT);
    cr_assert_eq(d.n_tokens, 6);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(d.tokens[i], r1[i]);
    }
    /* a third prompt with the same last token: the most frequent answer of all */
    const hs_token p3[] = {80, 81, 60};
    hs_suffix_store_draft(s, 0, hs_suffix_prompt_key(0, p3, 3), p3, 3, 8, 0.1f, &d);
    cr_assert_eq(d.source, HS_SUFFIX_SOURCE_GLOBAL);
    cr_assert_geq(d.n_tokens, 3);
    cr_assert_eq(d.tokens[0], 1);
    cr_assert_eq(d.tokens[2], 9);
    cr_assert_float_eq(d.score[2], 0.75f, 1e-6f);
    /* another tenant sees nothing of these */
    hs_suffix_store_draft(s, 7, hs_suffix_prompt_key(7, p1, 5), p1, 5, 8, 0.0f, &d);
    cr_assert_eq(d.n_tokens, 0);
    hs_suffix_store_destroy(s);
}

/* Adds random responses over an alphabet of n_alpha tokens to a 256 KiB store, comparing its
 * drafts after each with the brute-force count over the responses it kept. */
static void evicting_store_drafts_as_counted(int32_t n_alpha)
{
    hs_token alphabet[64];
    for (int32_t a = 0; a < n_alpha; a++) {
        alphabet[a] = a;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 7);
    enum { N = 300, MAXLEN = 60 };
    static hs_token texts[N][MAXLEN + HS_SUFFIX_MAX_MATCH];
    static int32_t lens[N];
    const hs_token prompt[] = {3, 2, 1};
    struct hs_suffix_store *s = NULL;
    const size_t budget = 256 << 10;
    cr_assert_eq(hs_suffix_store_create(budget, &s), HS_OK);
    const uint64_t key = hs_suffix_prompt_key(0, prompt, 3);
    for (int i = 0; i < N; i++) {
        hs_token resp[MAXLEN];
        const int32_t n = 5 + (int32_t)(hs_rng_next(&rng) % (MAXLEN - 5));
        for (int32_t k = 0; k < n; k++) {
            resp[k] = (hs_token)(hs_rng_next(&rng) % (uint32_t)n_alpha);
        }
        cr_assert_eq(hs_suffix_store_add(s, 0, key, prompt, 3, resp, n), HS_OK);
        memcpy(texts[i], prompt, sizeof(prompt));
        memcpy(texts[i] + 3, resp, (size_t)n * sizeof(*resp));
        lens[i] = n + 3;
        cr_assert_leq(hs_suffix_store_bytes(s), budget);
        /* the kept responses are the newest ones (nothing touched): compare with them */
        const int32_t kept = hs_suffix_store_n_responses(s);
        cr_assert(kept >= 1 && kept <= i + 1);
        struct texts x = {.count = kept};
        for (int32_t k = 0; k < kept; k++) {
            x.t[k] = texts[i - k];
            x.n[k] = lens[i - k];
        }
        hs_token ctx[8];
        for (int k = 0; k < 8; k++) {
            ctx[k] = (hs_token)(hs_rng_next(&rng) % (uint32_t)n_alpha);
        }
        struct hs_suffix_draft a, b;
        hs_suffix_store_draft(s, 0, key, ctx, 8, 8, 0.02f, &a);
        ref_draft(&x, ctx, 8, false, 8, 0.02f, alphabet, n_alpha, &b);
        assert_same_draft(&a, &b, "response", i);
    }
    cr_assert_gt(hs_suffix_store_n_evicted(s), 0, "the budget never forced an eviction");
    cr_assert_eq(hs_suffix_store_n_evicted(s) + (uint64_t)hs_suffix_store_n_responses(s), N);
    hs_suffix_store_destroy(s);
}

Test(suffix, store_evicts_least_recently_used_responses_and_counts_stay_exact)
{
    evicting_store_drafts_as_counted(4);
}

Test(suffix, store_out_of_nodes_takes_a_response_back_and_counts_stay_exact)
{
    /* nearly every substring new: the nodes run out midway through most responses (as they do
     * in the 4-token case too), which are taken back count for count before the least recently
     * used are evicted */
    evicting_store_drafts_as_counted(64);
}

Test(suffix, store_touch_keeps_a_prompts_answers_and_oversized_responses_are_cut)
{
    struct hs_suffix_store *s = NULL;
    const size_t budget = 64 << 10;
    cr_assert_eq(hs_suffix_store_create(budget, &s), HS_OK);
    const hs_token pa[] = {900, 901};
    const uint64_t ka = hs_suffix_prompt_key(0, pa, 2);
    const hs_token ra[] = {10, 11, 12, 13, 14, 15, 16, 17};
    cr_assert_eq(hs_suffix_store_add(s, 0, ka, pa, 2, ra, 8), HS_OK);
    hs_token resp[40];
    for (int i = 0; i < 400; i++) {
        for (int k = 0; k < 40; k++) {
            resp[k] = 1000 + i * 40 + k; /* all different: many nodes */
        }
        const hs_token pb[] = {i, i + 1};
        cr_assert_eq(hs_suffix_store_add(s, 0, hs_suffix_prompt_key(0, pb, 2), pb, 2, resp, 40),
                     HS_OK);
        hs_suffix_store_touch(s, ka); /* prompt a keeps coming back */
        cr_assert_leq(hs_suffix_store_bytes(s), budget);
    }
    cr_assert_gt(hs_suffix_store_n_evicted(s), 0);
    struct hs_suffix_draft d;
    hs_suffix_store_draft(s, 0, ka, pa, 2, 8, 0.1f, &d);
    cr_assert_eq(d.n_tokens, 8, "the touched answer was evicted");
    cr_assert_eq(d.tokens[7], 17);
    /* one response longer than the whole store could hold is cut to its beginning, which a
     * repeat of its prompt drafts */
    static hs_token big[4096];
    for (int k = 0; k < 4096; k++) {
        big[k] = 100000 + k;
    }
    const hs_token pc[] = {902, 903};
    const uint64_t kc = hs_suffix_prompt_key(0, pc, 2);
    cr_assert_eq(hs_suffix_store_add(s, 0, kc, pc, 2, big, 4096), HS_OK);
    cr_assert_geq(hs_suffix_store_n_responses(s), 1);
    cr_assert_leq(hs_suffix_store_bytes(s), budget);
    hs_suffix_store_draft(s, 0, kc, pc, 2, 8, 0.0f, &d);
    cr_assert_eq(d.n_tokens, 8);
    for (int k = 0; k < 8; k++) {
        cr_assert_eq(d.tokens[k], big[k]);
    }
    const hs_token pe[] = {904, 905};
    hs_suffix_store_draft(s, 0, hs_suffix_prompt_key(0, pe, 2), pe, 2, 8, 0.0f, &d);
    cr_assert_eq(d.n_tokens, 0, "no answer to an unseen prompt's end");
    hs_suffix_store_destroy(s);
}
