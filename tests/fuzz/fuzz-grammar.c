/* libFuzzer target: GBNF text -> parse, then the matcher. The input is the grammar text up to
 * its first NUL byte and matcher input after it. Checks, beyond no crash, leak or hang:
 *   - a parse error has a message with a line:column, a success a start rule;
 *   - the rules' dump is GBNF that parses again;
 *   - the tail fed byte by byte and all at once gives the same verdict, and a rejected byte
 *     leaves the matcher where it was;
 *   - random sentences of the grammar are accepted (the generator and the matcher agree);
 *   - the token mask at the end equals trying tokens one by one (a 4096-token vocabulary with
 *     byte tokens, $HS_MODELS_DIR/tiny-f32.gguf), so the trie walk, its pruning and its
 *     shortcuts agree with the automaton.
 * Small cache limits make resets frequent. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf/gguf.h"
#include "model/tokenizer/vocab.h"
#include "server/grammar-impl.h"
#include "server/grammar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hs_gguf *gguf;
static struct hs_vocab *vocab;
static struct hs_token_trie *trie;

static void load(void)
{
    const char *dir = getenv("HS_MODELS_DIR");
    char path[1024];
    struct hs_error err = {0};
    snprintf(path, sizeof(path), "%s/tiny-f32.gguf", dir ? dir : "../shared/models");
    if (hs_gguf_open(path, &gguf, &err) != HS_OK || hs_vocab_load(gguf, &vocab, &err) != HS_OK ||
        hs_token_trie_create(vocab, &trie) != HS_OK) {
        fprintf(stderr, "fuzz-grammar: %s: %s (set HS_MODELS_DIR)\n", path, err.message);
        abort();
    }
}

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-grammar: %s\n", what);
        __builtin_trap();
    }
}

static void matcher_checks(struct hs_grammar_cache *c, const uint8_t *tail, size_t n)
{
    struct hs_grammar_matcher *a = NULL, *b = NULL;
    if (hs_grammar_matcher_create(c, &a) != HS_OK) {
        return; /* e.g. HS_E_RANGE: too ambiguous at the start */
    }
    size_t i = 0;
    hs_status st = HS_OK;
    for (; i < n; i++) {
        struct hs_grammar_matcher *before = NULL;
        check(hs_grammar_matcher_clone(a, &before) == HS_OK, "clone");
        st = hs_grammar_matcher_accept_bytes(a, tail + i, 1);
        if (st != HS_OK) {
            /* unchanged: what `before` accepts next, `a` accepts too */
            check(hs_grammar_matcher_can_complete(a) == hs_grammar_matcher_can_complete(before),
                  "a rejected byte changed the matcher");
            hs_grammar_matcher_destroy(before);
            break;
        }
        hs_grammar_matcher_destroy(before);
    }
    if (hs_grammar_matcher_create(c, &b) == HS_OK) {
        hs_status all = hs_grammar_matcher_accept_bytes(b, tail, n);
        if (st == HS_OK) {
            check(all == HS_OK, "bytes one by one pass, all at once fail");
            check(hs_grammar_matcher_can_complete(a) == hs_grammar_matcher_can_complete(b),
                  "completion differs");
        } else if (st == HS_E_INVAL) {
            check(all != HS_OK, "bytes all at once pass, one by one fail");
        }
        hs_grammar_matcher_destroy(b);
    }
    /* the mask at a's place against accepting tokens one by one */
    const uint32_t *mask = NULL;
    if (hs_grammar_matcher_mask(a, &mask) == HS_OK) {
        int32_t nv = hs_vocab_n_tokens(vocab);
        uint32_t *copy = malloc(HS_TOKEN_MASK_WORDS(nv) * sizeof(uint32_t));
        check(copy != NULL, "malloc");
        memcpy(copy, mask, HS_TOKEN_MASK_WORDS(nv) * sizeof(uint32_t));
        for (hs_token t = 0; t < nv; t += 1 + (hs_token)(n % 7)) {
            struct hs_grammar_matcher *k = NULL;
            check(hs_grammar_matcher_clone(a, &k) == HS_OK, "clone");
            hs_status ts = hs_grammar_matcher_accept_token(k, t);
            if (ts == HS_OK || ts == HS_E_INVAL) {
                check((ts == HS_OK) == hs_token_mask_test(copy, t), "mask != token by token");
            }
            hs_grammar_matcher_destroy(k);
        }
        free(copy);
    }
    hs_grammar_matcher_destroy(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!trie) {
        load();
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t len = nul ? (size_t)(nul - data) : size;
    const uint8_t *tail = nul ? nul + 1 : data + size;
    size_t n_tail = nul ? size - len - 1 : 0;

    struct hs_grammar_limits lim = hs_grammar_default_limits();
    lim.max_elements = 1 << 15; /* keep each run short */
    lim.max_repeat = 500;
    lim.max_rules = 4096;
    struct hs_grammar *g = NULL;
    struct hs_error err = {0};
    hs_status st = hs_grammar_parse((const char *)data, len, NULL, &lim, &g, &err);
    if (st != HS_OK) {
        check(g == NULL, "a failed parse returned a grammar");
        check(st == HS_E_FORMAT || st == HS_E_RANGE || st == HS_E_NOMEM, "unexpected status");
        check(err.message[0] != '\0', "an error without a message");
        return 0;
    }
    /* the dump parses again */
    size_t need = hs__grammar_dump(g, NULL, 0);
    char *dump = malloc(need + 1);
    check(dump != NULL, "malloc");
    hs__grammar_dump(g, dump, need + 1);
    struct hs_grammar *g2 = NULL;
    struct hs_grammar_limits big = hs_grammar_default_limits();
    big.max_text_bytes = need + 1;
    st = hs_grammar_parse(dump, need, NULL, &big, &g2, &err);
    check(st == HS_OK, err.message);
    hs_grammar_destroy(g2);
    free(dump);

    struct hs_grammar_cache_params p = hs_grammar_cache_default_params();
    p.max_states = 64;
    p.max_frames = 512;
    p.max_stacks = 256;
    p.mask_cache_bytes = 4096;
    struct hs_grammar_cache *c = NULL;
    check(hs_grammar_cache_create(g, trie, &p, &c) == HS_OK, "cache");
    matcher_checks(c, tail, n_tail);

    /* sentences of the grammar are accepted */
    struct hs_rng rng;
    hs_rng_seed(&rng, size);
    char buf[1024];
    for (int k = 0; k < 4; k++) {
        int64_t n = hs__grammar_generate(g, &rng, 6, buf, sizeof(buf));
        if (n < 0 || n > (int64_t)sizeof(buf)) {
            continue;
        }
        struct hs_grammar_matcher *m = NULL;
        if (hs_grammar_matcher_create(c, &m) != HS_OK) {
            break;
        }
        hs_status as = hs_grammar_matcher_accept_bytes(m, buf, (size_t)n);
        if (as != HS_E_RANGE) { /* too many stacks is a limit, not a disagreement */
            check(as == HS_OK, "a generated sentence was rejected");
            check(hs_grammar_matcher_can_complete(m), "a generated sentence is incomplete");
        }
        hs_grammar_matcher_destroy(m);
    }
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
    return 0;
}
