/* Grammars for constrained decoding: llama.cpp's GBNF syntax, compiled to a matcher over UTF-8
 * that yields the set of tokens allowed next as a mask over the vocabulary.
 *
 *   struct hs_grammar        compiled rules; immutable after hs_grammar_parse: any thread
 *   struct hs_token_trie     a vocabulary's token bytes as a trie; immutable, built once per
 *                            vocabulary and shared by every request: any thread
 *   struct hs_grammar_cache  one grammar against one trie: the lazily built automaton and an
 *                            LRU of masks per grammar state; mutable, one thread at a time (the
 *                            engine's), shared by the matchers of requests with that grammar
 *   struct hs_grammar_matcher  one request's position in the grammar; same thread as its cache
 *
 * GBNF, as llama.cpp reads it (grammars/README.md there):
 *   name ::= alternatives          one rule per line (a rule continues across lines only
 *                                  inside parentheses or after '|'); names [a-zA-Z0-9_-]+
 *   a b     a | b     ( ... )      sequence, alternatives, group
 *   x*  x+  x?  x{m}  x{m,}  x{m,n}   repetitions of the item before them
 *   "lit"   [a-z0-9_]   [^"\\]   .   literal, class, negated class, any character
 *   escapes in literals and classes: \n \r \t \\ \" \[ \] \- \xHH \uHHHH \UHHHHHHHH
 *   # a comment to the end of the line
 * The start rule is `root` unless another is named. Left recursion (a rule that can reach itself
 * at its start without consuming input, where that would nest deeper each time) is an error. */
#ifndef HS_SERVER_GRAMMAR_H
#define HS_SERVER_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "server/sampling.h"

struct hs_vocab;

/* Bounds on what a grammar from a client may cost. */
struct hs_grammar_limits {
    size_t max_text_bytes; /* grammar text; default 1 MiB */
    int32_t max_rules;     /* rules, generated ones included; default 65536 */
    int32_t max_elements;  /* compiled elements (repetitions expand); default 1 << 20 */
    int32_t max_repeat;    /* largest m or n in x{m,n}; default 10000 */
    int32_t max_nesting;   /* depth of nested parentheses; default 128 */
};

struct hs_grammar_limits hs_grammar_default_limits(void);

struct hs_grammar;

/* Parses and compiles GBNF text[0..len) (UTF-8; need not be NUL-terminated) with start rule
 * root (NULL: "root"); lim NULL takes the defaults. Errors, with err (may be NULL) saying where
 * ("3:14: expected ')' to close the group opened at 3:2") and err->offset the byte offset:
 *   HS_E_FORMAT  a syntax error, an undefined or doubly defined rule, no start rule, left
 *                recursion, invalid UTF-8 or escape
 *   HS_E_RANGE   a limit of lim exceeded
 *   HS_E_NOMEM
 * Returns new (free with hs_grammar_destroy) in *out, left NULL on failure. Thread: any. */
hs_status hs_grammar_parse(const char *text, size_t len, const char *root,
                           const struct hs_grammar_limits *lim, struct hs_grammar **out,
                           struct hs_error *err);
void hs_grammar_destroy(struct hs_grammar *g);

/* Rules of the compiled grammar, the generated ones (groups, repetitions) included. */
int32_t hs_grammar_n_rules(const struct hs_grammar *g);

/* ---- the vocabulary ---- */

struct hs_token_trie;

/* Builds the trie of v's tokens as they detokenize (hs_vocab_piece without special text).
 * Control, unknown, unused and user-defined tokens are never allowed by a grammar, with one
 * exception: end-of-generation tokens (hs_vocab_is_eog) are allowed exactly when the grammar can
 * complete. Errors: HS_E_INVAL (v NULL or empty), HS_E_NOMEM. Returns new (free with
 * hs_token_trie_destroy); v may be freed afterwards. Thread: any; takes about as long as
 * detokenizing the vocabulary once. */
hs_status hs_token_trie_create(const struct hs_vocab *v, struct hs_token_trie **out);
void hs_token_trie_destroy(struct hs_token_trie *t);
int32_t hs_token_trie_n_vocab(const struct hs_token_trie *t);
/* Nodes in the trie, the root included. */
int64_t hs_token_trie_n_nodes(const struct hs_token_trie *t);

/* ---- a grammar against a vocabulary ---- */

struct hs_grammar_cache_params {
    size_t mask_cache_bytes; /* LRU of masks, one per grammar state met; default 8 MiB */
    int32_t max_states;      /* automaton states kept before a reset; default 1 << 17 */
    int32_t max_frames;      /* stack frames kept before a reset; default 1 << 20 */
    int32_t max_stacks;      /* stacks in one state (an ambiguous grammar's); default 4096 */
};

struct hs_grammar_cache_params hs_grammar_cache_default_params(void);

struct hs_grammar_cache;

/* A cache for grammar g (borrowed: it must outlive the cache) against trie t (borrowed; NULL
 * for a matcher over bytes only, without masks or tokens); p NULL takes the defaults. Errors:
 * HS_E_INVAL (g NULL, a parameter <= 0), HS_E_NOMEM. Returns new (free with
 * hs_grammar_cache_destroy, after its matchers). Thread: the cache and its matchers belong to
 * one thread at a time. Memory grows with the states met, up to the limits of p; past them the
 * cache starts over (matchers keep their place), so it never grows without bound. */
hs_status hs_grammar_cache_create(const struct hs_grammar *g, const struct hs_token_trie *t,
                                  const struct hs_grammar_cache_params *p,
                                  struct hs_grammar_cache **out);
void hs_grammar_cache_destroy(struct hs_grammar_cache *c);

/* Counters since create: automaton states, masks computed by walking the trie, masks served
 * from the LRU, resets. */
struct hs_grammar_cache_stats {
    int64_t n_states;
    int64_t n_mask_walks;
    int64_t n_mask_hits;
    int64_t n_resets;
};
void hs_grammar_cache_stats(const struct hs_grammar_cache *c, struct hs_grammar_cache_stats *out);

struct hs_grammar_matcher;

/* A matcher at the start of the grammar. Errors: HS_E_NOMEM, HS_E_RANGE (the start state has
 * more stacks than max_stacks). Returns new (free with hs_grammar_matcher_destroy). */
hs_status hs_grammar_matcher_create(struct hs_grammar_cache *c, struct hs_grammar_matcher **out);
/* A second matcher at the same place as m (same cache). Errors: HS_E_NOMEM. */
hs_status hs_grammar_matcher_clone(const struct hs_grammar_matcher *m,
                                   struct hs_grammar_matcher **out);
void hs_grammar_matcher_destroy(struct hs_grammar_matcher *m);

/* Advances over bytes[0..n) (UTF-8; a character may be split across calls), all or nothing:
 * HS_E_INVAL when the grammar does not allow them (or the matcher is done) and m is unchanged;
 * HS_E_RANGE (too many stacks: an ambiguous grammar) or HS_E_NOMEM, m unchanged. */
hs_status hs_grammar_matcher_accept_bytes(struct hs_grammar_matcher *m, const void *bytes,
                                          size_t n);

/* Advances over token t's bytes (the cache needs a trie). An end-of-generation token is accepted
 * when the grammar can complete and makes the matcher done. Errors as accept_bytes; HS_E_INVAL
 * also for a token the trie excludes or out of range, HS_E_NOTSUP without a trie. */
hs_status hs_grammar_matcher_accept_token(struct hs_grammar_matcher *m, hs_token t);

/* The input so far is a complete sentence of the grammar (more may still be allowed). */
bool hs_grammar_matcher_can_complete(const struct hs_grammar_matcher *m);
/* An end-of-generation token was accepted: nothing more is allowed. */
bool hs_grammar_matcher_is_done(const struct hs_grammar_matcher *m);

/* The tokens allowed next: *mask (borrowed until the next call on m's cache) has
 * HS_TOKEN_MASK_WORDS(n_vocab) words, bit t set when token t may come next (see
 * hs_token_trie_create for special tokens). A done matcher allows nothing. Errors: HS_E_NOTSUP
 * (no trie), HS_E_RANGE, HS_E_NOMEM (*mask NULL then). Cost: a lookup when this grammar state's
 * mask is in the LRU; otherwise a walk of the trie pruned by the grammar. */
hs_status hs_grammar_matcher_mask(struct hs_grammar_matcher *m, const uint32_t **mask);

/* m as a sampler constraint (allowed: its mask; accept: accept_token). m is borrowed: it must
 * outlive the sampler's use of the constraint. */
struct hs_sampler_constraint hs_grammar_matcher_constraint(struct hs_grammar_matcher *m);

#endif
