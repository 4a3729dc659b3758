/* Token masks on real vocabularies: Qwen3's 151k byte-level BPE (hs_model_load) and a synthetic
 * SentencePiece one with byte fallback. At every step of walking valid JSON documents the mask
 * equals a brute force over the whole vocabulary (each token's bytes tried on a copy of the
 * matcher); special tokens are never allowed and end-of-generation exactly at completion; the
 * LRU and cache resets change nothing; a sampler with the grammar as its constraint writes
 * valid output. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf/gguf.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/grammar.h"
#include "server/sampling.h"

static const char *json_gbnf =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" "
    "[0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9]{1,4})? ws\n"
    "ws     ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const char *docs[] = {
    "{\"reasoning\": \"The search box is at the top; tap it first.\", \"action\": \"click\", "
    "\"parameters\": {\"x\": 540, \"y\": 1203, \"target\": \"\\u641c\\u7d22\"}}",
    "{\n  \"name\": \"caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\",\n  \"tags\": "
    "[\"a\", \"b\\\"c\", \"\\\\\"],\n  \"n\": -12.5e3,\n  \"ok\": true,\n  \"none\": null\n}",
    "{\"a\":[1,2,3,{\"b\":[[],{}]}],\"c\":\"\\n\\t\"}",
};

struct vocab_env {
    struct hs_model *model;
    const struct hs_vocab *v;
    struct hs_gguf *gguf;
    struct hs_vocab *own;
    struct hs_token_trie *trie;
};

static const char *models_dir(void)
{
    const char *d = getenv("HS_MODELS_DIR");
    return d ? d : "../shared/models";
}

static struct vocab_env qwen3(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/qwen3-vocab-f16.gguf", models_dir());
    struct vocab_env e = {0};
    struct hs_error err = {0};
    cr_assert_eq(hs_model_load(path, &e.model, &err), HS_OK, "%s: %s", path, err.message);
    e.v = hs_model_vocab(e.model);
    cr_assert_eq(hs_token_trie_create(e.v, &e.trie), HS_OK);
    return e;
}

static struct vocab_env spm(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/tiny-f32.gguf", models_dir());
    struct vocab_env e = {0};
    struct hs_error err = {0};
    cr_assert_eq(hs_gguf_open(path, &e.gguf, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_vocab_load(e.gguf, &e.own, &err), HS_OK, "%s", err.message);
    e.v = e.own;
    cr_assert_eq(hs_token_trie_create(e.v, &e.trie), HS_OK);
    return e;
}

static void vocab_free(struct vocab_env *e)
{
    hs_token_trie_destroy(e->trie);
    hs_model_destroy(e->model);
    hs_vocab_destroy(e->own);
    hs_gguf_close(e->gguf);
}

static hs_token *tokenize(const struct hs_vocab *v, const char *s, size_t *n)
{
    size_t need = 0;
    hs_tokenize(v, s, strlen(s), false, false, NULL, 0, &need);
    hs_token *t = malloc((need + 1) * sizeof(*t));
    cr_assert_eq(hs_tokenize(v, s, strlen(s), false, false, t, need, n), HS_OK);
    return t;
}

static bool is_special(const struct hs_vocab *v, hs_token t)
{
    enum hs_token_attr a = hs_vocab_token_attr(v, t);
    return a == HS_TOKEN_CONTROL || a == HS_TOKEN_UNKNOWN || a == HS_TOKEN_UNUSED;
}

/* The mask at m's place against trying every token on a clone; returns how many are allowed. */
static int check_mask(struct hs_grammar_matcher *m, const struct hs_vocab *v, int step)
{
    const uint32_t *mask = NULL;
    cr_assert_eq(hs_grammar_matcher_mask(m, &mask), HS_OK);
    int32_t nv = hs_vocab_n_tokens(v);
    uint32_t *copy = malloc(HS_TOKEN_MASK_WORDS(nv) * sizeof(uint32_t));
    memcpy(copy, mask, HS_TOKEN_MASK_WORDS(nv) * sizeof(uint32_t)); /* clones share the cache */
    int n_allowed = 0;
    for (hs_token t = 0; t < nv; t++) {
        struct hs_grammar_matcher *k = NULL;
        cr_assert_eq(hs_grammar_matcher_clone(m, &k), HS_OK);
        hs_status st = hs_grammar_matcher_accept_token(k, t);
        cr_assert(st == HS_OK || st == HS_E_INVAL);
        bool brute = st == HS_OK;
        bool got = hs_token_mask_test(copy, t);
        cr_assert_eq(got, brute, "step %d token %d ('%s'): mask %d, brute force %d", step, t,
                     hs_vocab_token_text(v, t), got, brute);
        if (is_special(v, t) && !hs_vocab_is_eog(v, t)) {
            cr_assert_not(got, "special token %d allowed", t);
        }
        if (hs_vocab_is_eog(v, t)) {
            cr_assert_eq(got, hs_grammar_matcher_can_complete(m), "eog %d at step %d", t, step);
        }
        n_allowed += got;
        hs_grammar_matcher_destroy(k);
    }
    free(copy);
    if (getenv("HS_DEBUG_MASK")) {
        fprintf(stderr, "step %d: %d allowed\n", step, n_allowed);
    }
    return n_allowed;
}

/* doc as the longest vocabulary pieces from left to right (byte tokens where nothing longer
 * fits): SentencePiece's tokenizer would write the word prefix U+2581 as bytes where the
 * synthetic vocabulary has no token for it, which is not the text a model writes. */
static hs_token *greedy_tokens(const struct hs_vocab *v, const char *doc, size_t *n)
{
    size_t len = strlen(doc);
    hs_token *t = malloc((len + 1) * sizeof(*t));
    *n = 0;
    char piece[256];
    for (size_t at = 0; at < len;) {
        hs_token best = -1;
        size_t best_len = 0;
        for (hs_token k = 0; k < hs_vocab_n_tokens(v); k++) {
            if (is_special(v, k)) {
                continue;
            }
            size_t pl = hs_vocab_piece(v, k, false, piece, sizeof(piece));
            if (pl > best_len && pl <= len - at && memcmp(piece, doc + at, pl) == 0) {
                best = k;
                best_len = pl;
            }
        }
        cr_assert_geq(best, 0, "no token for byte %zu", at);
        t[(*n)++] = best;
        at += best_len;
    }
    return t;
}

/* Walks doc token by token, checking the mask at every stride-th step and at the end. */
static void walk_doc(struct hs_grammar_cache *c, const struct hs_vocab *v, const char *doc,
                     int stride)
{
    struct hs_grammar_matcher *m = NULL;
    cr_assert_eq(hs_grammar_matcher_create(c, &m), HS_OK);
    size_t n = 0;
    hs_token *toks =
        hs_vocab_type(v) == HS_VOCAB_SPM ? greedy_tokens(v, doc, &n) : tokenize(v, doc, &n);
    for (size_t i = 0; i < n; i++) {
        if ((int)i % stride == 0) {
            int k = check_mask(m, v, (int)i);
            cr_assert_gt(k, 0);
        }
        const uint32_t *mask = NULL;
        cr_assert_eq(hs_grammar_matcher_mask(m, &mask), HS_OK);
        cr_assert(hs_token_mask_test(mask, toks[i]), "doc token %zu (%d) not allowed", i, toks[i]);
        cr_assert_eq(hs_grammar_matcher_accept_token(m, toks[i]), HS_OK, "token %zu", i);
    }
    cr_assert(hs_grammar_matcher_can_complete(m));
    check_mask(m, v, (int)n);
    hs_token eog = hs_vocab_eos(v);
    cr_assert_eq(hs_grammar_matcher_accept_token(m, eog), HS_OK);
    cr_assert(hs_grammar_matcher_is_done(m));
    const uint32_t *mask = NULL;
    cr_assert_eq(hs_grammar_matcher_mask(m, &mask), HS_OK);
    for (size_t w = 0; w < HS_TOKEN_MASK_WORDS(hs_vocab_n_tokens(v)); w++) {
        cr_assert_eq(mask[w], 0u, "a done matcher allows nothing");
    }
    cr_assert_eq(hs_grammar_matcher_accept_token(m, toks[0]), HS_E_INVAL);
    free(toks);
    hs_grammar_matcher_destroy(m);
}

static struct hs_grammar *compile(const char *text)
{
    struct hs_grammar *g = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_grammar_parse(text, strlen(text), NULL, NULL, &g, &err), HS_OK, "%s",
                 err.message);
    return g;
}

Test(grammar_mask, trie_holds_every_allowed_token, .timeout = 120)
{
    struct vocab_env e = qwen3();
    cr_assert_eq(hs_token_trie_n_vocab(e.trie), 151669);
    cr_assert_gt(hs_token_trie_n_nodes(e.trie), 151669 / 2);
    vocab_free(&e);
}

Test(grammar_mask, json_masks_equal_brute_force_on_qwen3, .timeout = 600)
{
    struct vocab_env e = qwen3();
    struct hs_grammar *g = compile(json_gbnf);
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, e.trie, NULL, &c), HS_OK);
    for (size_t i = 0; i < HS_ARRAY_LEN(docs); i++) {
        walk_doc(c, e.v, docs[i], i == 0 ? 1 : 3);
    }
    struct hs_grammar_cache_stats st;
    hs_grammar_cache_stats(c, &st);
    cr_assert_gt(st.n_mask_hits, 0, "states recur in JSON: the LRU must serve some masks");
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
    vocab_free(&e);
}

Test(grammar_mask, tiny_lru_and_resets_change_nothing, .timeout = 600)
{
    struct vocab_env e = qwen3();
    struct hs_grammar *g = compile(json_gbnf);
    struct hs_grammar_cache_params p = hs_grammar_cache_default_params();
    p.mask_cache_bytes = 1; /* one slot */
    p.max_states = 8;
    p.max_frames = 32;
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, e.trie, &p, &c), HS_OK);
    walk_doc(c, e.v, docs[1], 4);
    struct hs_grammar_cache_stats st;
    hs_grammar_cache_stats(c, &st);
    cr_assert_gt(st.n_resets, 0);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
    vocab_free(&e);
}

Test(grammar_mask, byte_fallback_vocabulary, .timeout = 300)
{
    struct vocab_env e = spm();
    struct hs_grammar *g = compile(json_gbnf);
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, e.trie, NULL, &c), HS_OK);
    for (size_t i = 0; i < HS_ARRAY_LEN(docs); i++) {
        walk_doc(c, e.v, docs[i], 1); /* non-ASCII goes byte by byte: partial characters */
    }
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
    vocab_free(&e);
}

/* The sampler with the grammar as constraint: random logits, greedy and sampled, give output
 * the grammar accepts, ending with end-of-generation. */
Test(grammar_mask, sampler_writes_what_the_grammar_allows, .timeout = 300)
{
    struct vocab_env e = qwen3();
    const char *gbnf = "root ::= \"{\\\"action\\\": \" act \", \\\"x\\\": \" [1-9] [0-9]{0,2} \", "
                       "\\\"note\\\": \\\"\" "
                       "[a-z ]{0,12} \"\\\"}\"\n"
                       "act ::= \"\\\"click\\\"\" | \"\\\"type\\\"\" | \"\\\"swipe\\\"\"\n";
    struct hs_grammar *g = compile(gbnf);
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, e.trie, NULL, &c), HS_OK);
    int32_t nv = hs_vocab_n_tokens(e.v);
    float *logits = malloc((size_t)nv * sizeof(float));
    struct hs_rng rng;
    hs_rng_seed(&rng, 7);
    for (int run = 0; run < 6; run++) {
        struct hs_sampling_params sp = hs_sampling_default_params();
        sp.seed = (uint64_t)run;
        sp.temperature = run % 3 == 0 ? 0.0f : 1.0f;
        sp.top_k = 0;
        struct hs_sampler *s = NULL;
        cr_assert_eq(hs_sampler_create(&sp, nv, &s), HS_OK);
        struct hs_grammar_matcher *m = NULL;
        cr_assert_eq(hs_grammar_matcher_create(c, &m), HS_OK);
        struct hs_sampler_constraint hook = hs_grammar_matcher_constraint(m);
        hs_sampler_set_constraint(s, &hook);
        char out[512];
        size_t n_out = 0;
        bool ended = false;
        for (int step = 0; step < 200 && !ended; step++) {
            for (int32_t i = 0; i < nv; i++) {
                logits[i] = (float)(3.0 * hs_rng_normal(&rng));
            }
            hs_token t = hs_sampler_sample(s, logits);
            cr_assert_geq(t, 0, "run %d step %d: %s", run, step,
                          hs_sample_result_str(hs_sampler_last_result(s)));
            cr_assert_eq(hs_sampler_accept(s, t), HS_OK);
            if (hs_vocab_is_eog(e.v, t)) {
                ended = true;
            } else {
                n_out += hs_vocab_piece(e.v, t, false, out + n_out, sizeof(out) - 1 - n_out);
            }
        }
        cr_assert(ended, "run %d never ended: %.*s", run, (int)n_out, out);
        out[n_out] = '\0';
        json_error_t jerr;
        json_t *j = json_loads(out, 0, &jerr);
        cr_assert_not_null(j, "run %d: not JSON: %s (%s)", run, out, jerr.text);
        const char *act = json_string_value(json_object_get(j, "action"));
        cr_assert(act && (!strcmp(act, "click") || !strcmp(act, "type") || !strcmp(act, "swipe")));
        json_int_t x = json_integer_value(json_object_get(j, "x"));
        cr_assert(x >= 1 && x <= 999);
        json_decref(j);
        /* done: nothing more can be drawn, and the sampler says why */
        hs_token t = hs_sampler_sample(s, logits);
        cr_assert_eq(t, -(hs_token)HS_SAMPLE_CONSTRAINT_EMPTY);
        hs_grammar_matcher_destroy(m);
        hs_sampler_destroy(s);
    }
    free(logits);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
    vocab_free(&e);
}

Test(grammar_mask, special_and_eog_tokens)
{
    struct vocab_env e = qwen3();
    struct hs_grammar *g =
        compile("root ::= \"<think>\" [a-z]* | \"<|im_start|>\" | \"<|im_end|>\"?\n");
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, e.trie, NULL, &c), HS_OK);
    struct hs_grammar_matcher *m = NULL;
    cr_assert_eq(hs_grammar_matcher_create(c, &m), HS_OK);
    hs_token think = hs_vocab_find(e.v, "<think>");
    hs_token im_start = hs_vocab_find(e.v, "<|im_start|>");
    hs_token im_end = hs_vocab_find(e.v, "<|im_end|>");
    cr_assert_geq(think, 0);
    cr_assert_geq(im_start, 0);
    cr_assert_geq(im_end, 0);
    cr_assert_eq(hs_vocab_token_attr(e.v, think), HS_TOKEN_USER_DEFINED);
    cr_assert_eq(hs_vocab_token_attr(e.v, im_start), HS_TOKEN_CONTROL);
    const uint32_t *mask = NULL;
    cr_assert_eq(hs_grammar_matcher_mask(m, &mask), HS_OK);
    /* a user-defined token is text written as is (llama.cpp's grammar takes it by its text), so
     * a model that learned "<think>" or "<tool_call>" as one token may write it as one token */
    cr_assert(hs_token_mask_test(mask, think), "<think> is user-defined: its text matches");
    cr_assert_not(hs_token_mask_test(mask, im_start), "a control token is never text");
    cr_assert(hs_token_mask_test(mask, im_end), "<|im_end|> ends generation: the root is nullable");
    cr_assert(hs_token_mask_test(mask, hs_vocab_find(e.v, "<")), "the text '<' may start it");
    cr_assert_eq(hs_grammar_matcher_accept_token(m, im_start), HS_E_INVAL);
    struct hs_grammar_matcher *k = NULL;
    cr_assert_eq(hs_grammar_matcher_clone(m, &k), HS_OK);
    cr_assert_eq(hs_grammar_matcher_accept_token(k, think), HS_OK);
    cr_assert_eq(hs_grammar_matcher_accept_bytes(k, "ab", 2), HS_OK);
    cr_assert(hs_grammar_matcher_can_complete(k));
    hs_grammar_matcher_destroy(k);
    /* the same text in plain tokens is fine too */
    cr_assert_eq(hs_grammar_matcher_accept_bytes(m, "<think>ab", 9), HS_OK);
    cr_assert_eq(hs_grammar_matcher_mask(m, &mask), HS_OK);
    cr_assert(hs_token_mask_test(mask, im_end));
    cr_assert_eq(hs_grammar_matcher_accept_token(m, im_end), HS_OK);
    cr_assert(hs_grammar_matcher_is_done(m));
    hs_grammar_matcher_destroy(m);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
    vocab_free(&e);
}
