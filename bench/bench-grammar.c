/* Grammar-constrained decoding cost: the time to get the allowed-token mask and accept the token,
 * per token per request, walking realistic JSON outputs (agent actions, tool arguments, nested
 * and pretty-printed objects, CJK text, escapes) token by token.
 *
 *   bench-grammar [--models DIR] [--rounds N]
 *
 * Vocabularies: a synthetic 49,152-token SentencePiece one (the SmolLM-135M shape, written by
 * hs_mkmodel_write to a temporary file) and Qwen3's real 151,669-token byte-level BPE
 * (DIR/qwen3-vocab-f16.gguf). Grammars: generic JSON and a MobiAgent-style action schema.
 * Scenarios:
 *   cold    every request compiles its own grammar and cache (nothing shared but the trie)
 *   shared  16 concurrent requests share one cache (same grammar), interleaved step by step
 * Reported per scenario: mean, p50, p99 and max microseconds per token per request, and the
 * cost of one engine step for 16 requests (16 x mean) against the ~8-10 ms an unconstrained
 * 16-stream decode step takes on 2 cores. Also: the sampler with a mask vs without. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-util.h"
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
    "string ::= \"\\\"\" char* \"\\\"\" ws\n"
    "char   ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "number ::= (\"-\"? ([0] | [1-9] [0-9]{0,15})) (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? "
    "ws\n"
    "ws     ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

/* What the JSON Schema converter writes for {"reasoning": str, "action": enum, "parameters":
 * {...}} (api/json-schema.c's shape: fixed key order, bounded whitespace). */
static const char *action_gbnf =
    "root ::= \"{\" space \"\\\"reasoning\\\"\" space \":\" space string \",\" space "
    "\"\\\"action\\\"\" space \":\" space action \",\" space \"\\\"parameters\\\"\" space \":\" "
    "space params \"}\" space\n"
    "action ::= (\"\\\"click\\\"\" | \"\\\"swipe\\\"\" | \"\\\"type\\\"\" | \"\\\"wait\\\"\" | "
    "\"\\\"done\\\"\") space\n"
    "params ::= \"{\" space ( params-kv ( \",\" space params-kv )* )? \"}\" space\n"
    "params-kv ::= ( \"\\\"target_element\\\"\" space \":\" space string | \"\\\"x\\\"\" space "
    "\":\" space integer | \"\\\"y\\\"\" space \":\" space integer | \"\\\"text\\\"\" space \":\" "
    "space string | \"\\\"direction\\\"\" space \":\" space (\"\\\"up\\\"\" | \"\\\"down\\\"\") "
    "space )\n"
    "string ::= \"\\\"\" char* \"\\\"\" space\n"
    "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "integer ::= (\"-\"? ([0] | [1-9] [0-9]{0,15})) space\n"
    "space ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const char *json_docs[] = {
    "{\"reasoning\": \"The user wants to search for flights to Tokyo. The search box is at the "
    "top of the screen, so I will tap it first and then type the destination.\", \"action\": "
    "\"click\", \"parameters\": {\"target_element\": \"\xe6\x90\x9c\xe7\xb4\xa2\xe6\xa1\x86\", "
    "\"x\": 540, \"y\": 1203}}",
    "{\"location\": \"San Francisco, CA\", \"unit\": \"celsius\", \"days\": 5, \"include\": "
    "[\"humidity\", \"wind\", \"uv_index\"]}",
    "{\n  \"products\": [\n    {\n      \"id\": 1041,\n      \"name\": \"Wireless mouse\",\n      "
    "\"price\": 24.99,\n      \"in_stock\": true,\n      \"tags\": [\"usb\", \"ergonomic\"]\n    "
    "},\n    {\n      \"id\": 1042,\n      \"name\": \"Mechanical keyboard\",\n      \"price\": "
    "89.5,\n      \"in_stock\": false,\n      \"tags\": []\n    }\n  ],\n  \"total\": 2,\n  "
    "\"next\": null\n}",
    "{\"title\": \"\xe4\xbb\x8a\xe5\xa4\xa9\xe7\x9a\x84\xe5\xa4\xa9\xe6\xb0\x94\xe5\xbe\x88\xe5"
    "\xa5\xbd\xef\xbc\x8c\xe6\x88\x91\xe4\xbb\xac\xe5\x8e\xbb\xe5\x85\xac\xe5\x9b\xad\xe6\x95"
    "\xa3\xe6\xad\xa5\xe5\x90\xa7\", \"emoji\": \"\xf0\x9f\x98\x80\xf0\x9f\x8e\x89\", \"lang\": "
    "\"zh-CN\"}",
    "{\"series\": [1.5, -2e10, 300, 0.000125, 42, -7, 3.14159265358979, 1e-5], \"count\": 8}",
    "{\"code\": \"def f(x):\\n    return \\\"a\\\\b\\\" + str(x)\\n\", \"note\": \"tab\\there, "
    "quote \\\" and unicode \\u00e9\"}",
};

static const char *action_docs[] = {
    "{\"reasoning\": \"The user wants to search for flights to Tokyo. The search box is at the "
    "top of the screen, so I will tap it first.\", \"action\": \"click\", \"parameters\": "
    "{\"target_element\": \"\xe6\x90\x9c\xe7\xb4\xa2\xe6\xa1\x86\", \"x\": 540, \"y\": 1203}}",
    "{\"reasoning\": \"Now type the destination into the focused field.\", \"action\": \"type\", "
    "\"parameters\": {\"text\": \"Tokyo Haneda\"}}",
    "{\n\"reasoning\": \"The results list continues below; scroll to see more flights.\",\n"
    "\"action\": \"swipe\",\n\"parameters\": {\"direction\": \"up\", \"x\": 540, \"y\": 1600}}",
    "{\"reasoning\": \"The booking is confirmed on screen.\", \"action\": \"done\", "
    "\"parameters\": {}}",
};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ---- tokenizing documents ---- */

struct seq {
    hs_token *t;
    size_t n;
};

/* Longest vocabulary pieces left to right (the synthetic SentencePiece vocabulary would write
 * its word prefix as bytes before punctuation, which is no text a model writes). */
static struct seq greedy(const struct hs_vocab *v, char **pieces, size_t *lens, const char *doc)
{
    size_t len = strlen(doc);
    struct seq s = {malloc((len + 1) * sizeof(hs_token)), 0};
    for (size_t at = 0; at < len;) {
        hs_token best = -1;
        size_t best_len = 0;
        for (hs_token k = 0; k < hs_vocab_n_tokens(v); k++) {
            if (lens[k] > best_len && lens[k] <= len - at && pieces[k][0] == doc[at] &&
                memcmp(pieces[k], doc + at, lens[k]) == 0) {
                best = k;
                best_len = lens[k];
            }
        }
        if (best < 0) {
            fprintf(stderr, "bench-grammar: no token for byte %zu\n", at);
            exit(1);
        }
        s.t[s.n++] = best;
        at += best_len;
    }
    return s;
}

static struct seq *tokenize_docs(const struct hs_vocab *v, const char *const *docs, size_t n)
{
    struct seq *out = calloc(n, sizeof(*out));
    char **pieces = NULL;
    size_t *lens = NULL;
    int32_t nv = hs_vocab_n_tokens(v);
    if (hs_vocab_type(v) == HS_VOCAB_SPM) {
        pieces = calloc((size_t)nv, sizeof(*pieces));
        lens = calloc((size_t)nv, sizeof(*lens));
        for (hs_token k = 0; k < nv; k++) {
            enum hs_token_attr a = hs_vocab_token_attr(v, k);
            if (a != HS_TOKEN_NORMAL && a != HS_TOKEN_BYTE) {
                continue;
            }
            lens[k] = hs_vocab_piece(v, k, false, NULL, 0);
            pieces[k] = malloc(lens[k] + 1);
            hs_vocab_piece(v, k, false, pieces[k], lens[k]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (pieces) {
            out[i] = greedy(v, pieces, lens, docs[i]);
            continue;
        }
        size_t need = 0;
        hs_tokenize(v, docs[i], strlen(docs[i]), false, false, NULL, 0, &need);
        out[i].t = malloc((need + 1) * sizeof(hs_token));
        hs_tokenize(v, docs[i], strlen(docs[i]), false, false, out[i].t, need, &out[i].n);
    }
    if (pieces) {
        for (hs_token k = 0; k < nv; k++) {
            free(pieces[k]);
        }
    }
    free(pieces);
    free(lens);
    return out;
}

/* ---- scenarios ---- */

struct timings {
    double *us;
    size_t n, cap;
};

static void add(struct timings *t, double us)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 4096;
        t->us = realloc(t->us, t->cap * sizeof(*t->us));
    }
    t->us[t->n++] = us;
}

static void report(const char *vocab, const char *grammar, const char *scenario, struct timings *t)
{
    qsort(t->us, t->n, sizeof(*t->us), bench_cmp_double);
    double sum = 0.0;
    for (size_t i = 0; i < t->n; i++) {
        sum += t->us[i];
    }
    double mean = sum / (double)t->n;
    printf("%-14s %-7s %-7s tokens %6zu  mean %8.2f us  p50 %7.2f  p99 %8.1f  max %8.1f  "
           "16 streams/step %6.3f ms (%4.1f%% of 9 ms)\n",
           vocab, grammar, scenario, t->n, mean, t->us[t->n / 2], t->us[t->n * 99 / 100],
           t->us[t->n - 1], 16.0 * mean / 1000.0, 16.0 * mean / 9000.0 * 100.0);
    t->n = 0;
}

static void die(const char *what, hs_status st)
{
    fprintf(stderr, "bench-grammar: %s: %s\n", what, hs_status_name(st));
    exit(1);
}

/* One token: the mask (as the sampler asks for it), then accepting the document's token. */
static double step(struct hs_grammar_matcher *m, hs_token t)
{
    const uint32_t *mask;
    double t0 = now_us();
    hs_status st = hs_grammar_matcher_mask(m, &mask);
    if (st != HS_OK) {
        die("mask", st);
    }
    if (!hs_token_mask_test(mask, t)) {
        fprintf(stderr, "bench-grammar: a document token is not allowed\n");
        exit(1);
    }
    st = hs_grammar_matcher_accept_token(m, t);
    if (st != HS_OK) {
        die("accept", st);
    }
    return now_us() - t0;
}

/* Every request on its own grammar and cache, as when each compiles its own. */
static void cold(const struct hs_token_trie *trie, const char *gbnf, const struct seq *docs,
                 size_t n_docs, int rounds, struct timings *t)
{
    for (int r = 0; r < rounds; r++) {
        for (size_t d = 0; d < n_docs; d++) {
            struct hs_grammar *g = NULL;
            struct hs_grammar_cache *c = NULL;
            struct hs_grammar_matcher *m = NULL;
            double t0 = now_us();
            hs_status st = hs_grammar_parse(gbnf, strlen(gbnf), NULL, NULL, &g, NULL);
            if (st == HS_OK) {
                st = hs_grammar_cache_create(g, trie, NULL, &c);
            }
            if (st == HS_OK) {
                st = hs_grammar_matcher_create(c, &m);
            }
            if (st != HS_OK) {
                die("setup", st);
            }
            double setup = now_us() - t0; /* charged to the first token */
            for (size_t i = 0; i < docs[d].n; i++) {
                add(t, step(m, docs[d].t[i]) + (i == 0 ? setup : 0.0));
            }
            hs_grammar_matcher_destroy(m);
            hs_grammar_cache_destroy(c);
            hs_grammar_destroy(g);
        }
    }
}

/* 16 requests on one cache, one token each per engine step, each walking a document. */
static void shared(const struct hs_token_trie *trie, const char *gbnf, const struct seq *docs,
                   size_t n_docs, int rounds, struct timings *t)
{
    struct hs_grammar *g = NULL;
    struct hs_grammar_cache *c = NULL;
    if (hs_grammar_parse(gbnf, strlen(gbnf), NULL, NULL, &g, NULL) != HS_OK ||
        hs_grammar_cache_create(g, trie, NULL, &c) != HS_OK) {
        die("setup", HS_E_INTERNAL);
    }
    for (int r = 0; r < rounds; r++) {
        struct hs_grammar_matcher *m[16];
        size_t doc[16], pos[16];
        for (int k = 0; k < 16; k++) {
            if (hs_grammar_matcher_create(c, &m[k]) != HS_OK) {
                die("matcher", HS_E_NOMEM);
            }
            doc[k] = (size_t)(k + r) % n_docs;
            pos[k] = 0;
        }
        bool any = true;
        while (any) {
            any = false;
            for (int k = 0; k < 16; k++) {
                if (pos[k] < docs[doc[k]].n) {
                    add(t, step(m[k], docs[doc[k]].t[pos[k]++]));
                    any = true;
                }
            }
        }
        for (int k = 0; k < 16; k++) {
            hs_grammar_matcher_destroy(m[k]);
        }
    }
    struct hs_grammar_cache_stats st;
    hs_grammar_cache_stats(c, &st);
    printf("    (shared cache: %lld states, %lld mask walks, %lld LRU hits)\n",
           (long long)st.n_states, (long long)st.n_mask_walks, (long long)st.n_mask_hits);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
}

/* The sampler's own cost with a mask against without, on random logits. */
static void sampler_cost(const char *name, const struct hs_token_trie *trie, int32_t nv)
{
    struct hs_grammar *g = NULL;
    struct hs_grammar_cache *c = NULL;
    struct hs_grammar_matcher *m = NULL;
    if (hs_grammar_parse(json_gbnf, strlen(json_gbnf), NULL, NULL, &g, NULL) != HS_OK ||
        hs_grammar_cache_create(g, trie, NULL, &c) != HS_OK ||
        hs_grammar_matcher_create(c, &m) != HS_OK ||
        hs_grammar_matcher_accept_bytes(m, "{\"k\": \"", 7) != HS_OK) {
        die("sampler setup", HS_E_INTERNAL);
    }
    float *logits = malloc((size_t)nv * sizeof(float));
    struct hs_rng rng;
    hs_rng_seed(&rng, 3);
    for (int32_t i = 0; i < nv; i++) {
        logits[i] = (float)(2.0 * hs_rng_normal(&rng));
    }
    struct hs_sampling_params sp = hs_sampling_default_params();
    double us[2];
    for (int with = 0; with < 2; with++) {
        struct hs_sampler *s = NULL;
        hs_sampler_create(&sp, nv, &s);
        struct hs_sampler_constraint hook = hs_grammar_matcher_constraint(m);
        if (with) {
            hs_sampler_set_constraint(s, &hook); /* inside a string: most tokens allowed */
        }
        double t0 = now_us();
        for (int i = 0; i < 200; i++) {
            (void)hs_sampler_sample(s, logits);
        }
        us[with] = (now_us() - t0) / 200.0;
        hs_sampler_destroy(s);
    }
    printf("%-14s sampler draw (default chain): %.1f us unconstrained, %.1f us with a mask "
           "(cached)\n",
           name, us[0], us[1]);
    free(logits);
    hs_grammar_matcher_destroy(m);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
}

static void run_vocab(const char *name, const struct hs_vocab *v, int rounds)
{
    double t0 = now_us();
    struct hs_token_trie *trie = NULL;
    hs_status st = hs_token_trie_create(v, &trie);
    if (st != HS_OK) {
        die("trie", st);
    }
    printf("%-14s %d tokens, trie of %lld nodes built in %.1f ms (once per vocabulary)\n", name,
           hs_vocab_n_tokens(v), (long long)hs_token_trie_n_nodes(trie), (now_us() - t0) / 1e3);
    struct seq *jd = tokenize_docs(v, json_docs, HS_ARRAY_LEN(json_docs));
    struct seq *ad = tokenize_docs(v, action_docs, HS_ARRAY_LEN(action_docs));
    struct timings t = {0};
    cold(trie, json_gbnf, jd, HS_ARRAY_LEN(json_docs), rounds, &t);
    report(name, "json", "cold", &t);
    shared(trie, json_gbnf, jd, HS_ARRAY_LEN(json_docs), rounds, &t);
    report(name, "json", "shared", &t);
    cold(trie, action_gbnf, ad, HS_ARRAY_LEN(action_docs), rounds, &t);
    report(name, "action", "cold", &t);
    shared(trie, action_gbnf, ad, HS_ARRAY_LEN(action_docs), rounds, &t);
    report(name, "action", "shared", &t);
    sampler_cost(name, trie, hs_vocab_n_tokens(v));
    for (size_t i = 0; i < HS_ARRAY_LEN(json_docs); i++) {
        free(jd[i].t);
    }
    for (size_t i = 0; i < HS_ARRAY_LEN(action_docs); i++) {
        free(ad[i].t);
    }
    free(jd);
    free(ad);
    free(t.us);
    hs_token_trie_destroy(trie);
}

int main(int argc, char **argv)
{
    const char *dir = getenv("HS_MODELS_DIR") ? getenv("HS_MODELS_DIR") : "../shared/models";
    int rounds = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench-grammar [--models DIR] [--rounds N]\n");
            return 2;
        }
    }
    struct hs_error err = {0};
    /* 49,152 tokens: the SmolLM-135M vocabulary size, synthetic pieces, tiny weights */
    char tmp[] = "/tmp/bench-grammar-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    close(fd);
    struct hs_mkmodel_params mp = hs_mkmodel_default_params();
    mp.n_vocab = 49152;
    mp.tied_output = true;
    struct hs_gguf *gg = NULL;
    struct hs_vocab *sv = NULL;
    if (hs_mkmodel_write(&mp, tmp, &err) != HS_OK || hs_gguf_open(tmp, &gg, &err) != HS_OK ||
        hs_vocab_load(gg, &sv, &err) != HS_OK) {
        fprintf(stderr, "bench-grammar: synthetic vocabulary: %s\n", err.message);
        unlink(tmp);
        return 1;
    }
    run_vocab("spm-49152", sv, rounds);
    hs_vocab_destroy(sv);
    hs_gguf_close(gg);
    unlink(tmp);

    char path[1024];
    snprintf(path, sizeof(path), "%s/qwen3-vocab-f16.gguf", dir);
    struct hs_model *model = NULL;
    if (hs_model_load(path, &model, &err) != HS_OK) {
        fprintf(stderr, "bench-grammar: %s: %s\n", path, err.message);
        return 1;
    }
    run_vocab("qwen3-151669", hs_model_vocab(model), rounds);
    hs_model_destroy(model);
    return 0;
}
