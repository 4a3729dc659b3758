/* Draft sources for speculative decoding from history (SuffixDecoding, arXiv 2411.04975; RhymeRL's
 * HistoSpec, arXiv 2508.18588): suffix trees over token ids, depth-bounded as SuffixDecoding's
 * are. Each is a trie of every substring of at most HS_SUFFIX_DEPTH tokens of the texts put in,
 * each node counting how often its string occurs, so that count(child) / count(node) estimates
 * how often the node's string went on with the child's token.
 *
 * Two kinds of source:
 *   hs_suffix_text   one growing text: a sequence's prompt and output so far (its own patterns);
 *   hs_suffix_store  earlier responses, each kept in the trie of its prompt (a key hashed from
 *                    the prompt and the tenant's salt, so that a repeated prompt finds its own
 *                    earlier answers first) and in the trie of all responses of its salt;
 *                    bounded in bytes, whole responses evicted least recently used first.
 *
 * Drafting: the longest suffix of the context (at most HS_SUFFIX_MAX_MATCH tokens) that the trie
 * holds with a continuation is matched; from there the most frequent child is followed, the
 * path scored by the product of child/parent counts, until the score drops below the caller's
 * threshold or the draft is long enough. A path that reaches the trie's depth is matched again
 * from a shorter suffix of the context and the draft so far.
 *
 * Memory: tries grow geometrically, then in chunks of about 1 MiB, up to their bound (amortised,
 * no allocation per token once grown). Thread: an object belongs to one thread at a time (the
 * engine thread); nothing here locks. */
#ifndef HS_SERVER_SUFFIX_H
#define HS_SERVER_SUFFIX_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define HS_SUFFIX_DEPTH     48 /* longest string a trie holds: a match and its draft */
#define HS_SUFFIX_MAX_MATCH 32 /* longest suffix of the context matched */
#define HS_SUFFIX_MAX_DRAFT 32 /* longest draft */
/* Default bounds: a sequence's own trie (nodes) and the store of earlier responses (bytes). A
 * token of new text costs up to HS_SUFFIX_DEPTH nodes of 24 bytes in a trie (the store puts it
 * in two), so these hold about 680 new tokens per sequence and some 2,100 new tokens of
 * responses (far more of the repetitive text they are for). See README "Speculative decoding". */
#define HS_SUFFIX_TEXT_NODES  (1 << 15)
#define HS_SUFFIX_STORE_BYTES ((size_t)8 << 20)

enum hs_suffix_source {
    HS_SUFFIX_SOURCE_REQUEST, /* the sequence's own prompt and output */
    HS_SUFFIX_SOURCE_PROMPT,  /* earlier responses to the same prompt (and salt) */
    HS_SUFFIX_SOURCE_GLOBAL,  /* every earlier response of the salt */
    HS_SUFFIX_SOURCE_COUNT,
};

/* "request", "prompt", "global", "none"; static. Thread: any. */
const char *hs_suffix_source_str(enum hs_suffix_source s);

/* A proposed continuation. */
struct hs_suffix_draft {
    int32_t n_tokens; /* 0: nothing worth proposing */
    hs_token tokens[HS_SUFFIX_MAX_DRAFT];
    float score[HS_SUFFIX_MAX_DRAFT]; /* [n_tokens] estimated probability that tokens 0..i are
                                       * all right: the product of child/parent counts along the
                                       * path, non-increasing */
    float expected;                   /* sum of score: the expected number of accepted tokens */
    int32_t match_len;                /* context tokens matched before the draft */
    enum hs_suffix_source source;
};

/* ---- one growing text ---- */

struct hs_suffix_text;

/* Returns new (free with hs_suffix_text_destroy): an empty text whose trie grows up to max_nodes
 * nodes (<= 0: HS_SUFFIX_TEXT_NODES), in chunks as tokens come; past that, new substrings are no
 * longer recorded (drafting goes on with what is there). HS_E_NOMEM. */
hs_status hs_suffix_text_create(int32_t max_nodes, struct hs_suffix_text **out);
void hs_suffix_text_destroy(struct hs_suffix_text *t);

/* Appends tokens [n] to the text, O(HS_SUFFIX_DEPTH) per token. HS_E_NOMEM: the trie could not
 * grow; the text is then counted as appended but its newest substrings are missing (drafts
 * stay correct, only fewer). */
hs_status hs_suffix_text_append(struct hs_suffix_text *t, const hs_token *tokens, int32_t n);

/* Tokens appended so far. */
int32_t hs_suffix_text_n_tokens(const struct hs_suffix_text *t);

/* Bytes held. */
size_t hs_suffix_text_bytes(const struct hs_suffix_text *t);

/* Drafts at most max_draft (<= HS_SUFFIX_MAX_DRAFT) tokens continuing the text, each with a
 * score >= min_score, into *d (source HS_SUFFIX_SOURCE_REQUEST). text: the caller's copy of
 * the text, [hs_suffix_text_n_tokens(t)] (read when a path reaches the trie's depth). An
 * occurrence at the very end of the text, which has no continuation yet, does not count
 * against its continuations. */
void hs_suffix_text_draft(const struct hs_suffix_text *t, const hs_token *text, int32_t max_draft,
                          float min_score, struct hs_suffix_draft *d);

/* ---- earlier responses ---- */

struct hs_suffix_store;

/* Returns new (free with hs_suffix_store_destroy): an empty store that allocates at most max_bytes
 * (tries, hash tables, the responses' tokens and records; 0: HS_SUFFIX_STORE_BYTES), nothing of
 * it up front: its node array grows in chunks of about 1 MiB as responses come. HS_E_NOMEM. */
hs_status hs_suffix_store_create(size_t max_bytes, struct hs_suffix_store **out);
void hs_suffix_store_destroy(struct hs_suffix_store *s);

/* The key of a prompt for a tenant's salt (0: shared): a 64-bit hash of both. Thread: any. */
uint64_t hs_suffix_prompt_key(uint64_t salt, const hs_token *prompt, int32_t n_prompt);

/* Records a response: resp [n_resp] to the prompt whose key is prompt_key, led by the prompt's
 * last tokens (prompt [n_prompt]; at most HS_SUFFIX_MAX_MATCH are used, so that the response's
 * beginning is found from the prompt's end), in the prompt's trie and in the salt's. Whole
 * responses are evicted, least recently used first, when the nodes run out and until the store
 * is within its bytes; a response longer than an empty store surely holds is cut to its
 * beginning. n_resp 0: nothing. HS_E_NOMEM: not recorded (the allocator failed; responses may
 * have been evicted). */
hs_status hs_suffix_store_add(struct hs_suffix_store *s, uint64_t salt, uint64_t prompt_key,
                              const hs_token *prompt, int32_t n_prompt, const hs_token *resp,
                              int32_t n_resp);

/* Marks the responses to prompt_key as used now (a request with that prompt arrived). */
void hs_suffix_store_touch(struct hs_suffix_store *s, uint64_t prompt_key);

/* Drafts the continuation of text [n] (a prompt and what followed) from the responses to
 * prompt_key and from all responses of salt, whichever expects more accepted tokens (the
 * prompt's on ties), as hs_suffix_text_draft does. */
void hs_suffix_store_draft(const struct hs_suffix_store *s, uint64_t salt, uint64_t prompt_key,
                           const hs_token *text, int32_t n, int32_t max_draft, float min_score,
                           struct hs_suffix_draft *d);

/* As hs_suffix_store_draft from one source only (HS_SUFFIX_SOURCE_PROMPT: the responses to
 * prompt_key; HS_SUFFIX_SOURCE_GLOBAL: all responses of salt); d->n_tokens 0 for another. */
void hs_suffix_store_draft_from(const struct hs_suffix_store *s, enum hs_suffix_source source,
                                uint64_t salt, uint64_t prompt_key, const hs_token *text, int32_t n,
                                int32_t max_draft, float min_score, struct hs_suffix_draft *d);

/* Bytes held, responses held, responses evicted so far. */
size_t hs_suffix_store_bytes(const struct hs_suffix_store *s);
int32_t hs_suffix_store_n_responses(const struct hs_suffix_store *s);
uint64_t hs_suffix_store_n_evicted(const struct hs_suffix_store *s);

#endif
