/* Grammar internals shared by the parser (grammar-parse.c), the matcher (grammar-match.c) and
 * the token masks (grammar-mask.c), and exposed to tests and fuzz targets.
 *
 * A compiled grammar is llama.cpp's shape: rules of alternatives, each alternative a sequence of
 * elements ended by END; an element is a terminal (a character class over code points) or a
 * reference to a rule. Repetitions and groups were rewritten into generated rules by the parser.
 *
 * The matcher's state is a set of stacks, as llama_grammar's: each stack is a chain of frames
 * (an element position, the frame to return to), hash-consed so that equal stacks are one id;
 * a state is an interned, sorted set of stack ids whose tops are terminals (or frame 0, the empty
 * stack: the input so far is a complete sentence). Transitions between states are memoised, so
 * the set-of-stacks work is done once per (state, code point) and the hot path is a lookup: a
 * lazily built DFA over UTF-8 bytes. */
#ifndef HS_SERVER_GRAMMAR_IMPL_H
#define HS_SERVER_GRAMMAR_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "server/grammar.h"

#define HS__CP_MAX 0x10FFFFu

enum hs__gelem_type {
    HS__GE_END,   /* ends an alternative */
    HS__GE_REF,   /* value: rule id */
    HS__GE_CLASS, /* value: class id; matches one code point */
    HS__GE_TYPE_COUNT,
};

struct hs__gelem {
    uint32_t type;
    uint32_t value;
};

/* A character class: sorted, merged, disjoint ranges; negated classes match what no range
 * covers. A literal character is a class of one range. */
struct hs__gclass {
    uint32_t first_range; /* into hs_grammar.ranges */
    uint32_t n_ranges;
    bool negated;
};

struct hs__grule {
    uint32_t first_alt; /* into hs_grammar.alts */
    uint32_t n_alts;
    uint32_t name;    /* offset into hs_grammar.names (NUL-terminated) */
    uint32_t origin;  /* the user-written rule a generated one came from (itself otherwise) */
    uint32_t def_off; /* byte offset of its definition (the origin's for generated rules) */
    bool nullable;    /* derives the empty string */
};

struct hs_grammar {
    struct hs__gelem *elems; /* owns, [n_elems] */
    uint32_t n_elems;
    uint32_t *alts; /* owns, [n_alts]: element index where each alternative starts */
    uint32_t n_alts;
    struct hs__grule *rules; /* owns, [n_rules] */
    uint32_t n_rules;
    struct hs__gclass *classes; /* owns, [n_classes] */
    uint32_t n_classes;
    uint32_t *ranges; /* owns, [2 * n_ranges]: lo, hi inclusive */
    uint32_t n_ranges;
    char *names; /* owns, [n_names_bytes] */
    uint32_t n_names_bytes;
    uint32_t root;
};

bool hs__gclass_match(const struct hs_grammar *g, uint32_t class_id, uint32_t cp);
/* Whether the class matches some code point in [lo, hi]. */
bool hs__gclass_match_range(const struct hs_grammar *g, uint32_t class_id, uint32_t lo,
                            uint32_t hi);
/* Whether the class matches every code point in [lo, hi]. */
bool hs__gclass_covers(const struct hs_grammar *g, uint32_t class_id, uint32_t lo, uint32_t hi);

/* Whether b may follow the nb bytes (lead first) of an incomplete UTF-8 character: a
 * continuation byte, with the lead's limits on the second byte (no overlongs, surrogates or
 * values past U+10FFFF). */
static inline bool grammar_utf8_cont_ok(uint32_t lead, uint32_t nb, uint8_t b)
{
    if ((b & 0xC0) != 0x80) {
        return false;
    }
    if (nb == 1) {
        switch (lead) {
        case 0xE0:
            return b >= 0xA0;
        case 0xED:
            return b <= 0x9F;
        case 0xF0:
            return b >= 0x90;
        case 0xF4:
            return b <= 0x8F;
        default:
            break;
        }
    }
    return true;
}

/* Decodes one UTF-8 character of s[0..n) strictly (no overlongs, surrogates or values past
 * U+10FFFF): returns its length and writes *cp, or 0 when s does not start with a valid one. */
size_t hs__utf8_next(const uint8_t *s, size_t n, uint32_t *cp);

/* A random sentence of g (for tests and fuzzing): a derivation that picks alternatives and code
 * points with rng, and past max_depth nested rules (or once cap / 2 bytes are written) takes the
 * alternative with the shortest derivation. Writes at most cap bytes (UTF-8, no NUL) and returns
 * the sentence's full length (more than cap: it was cut). Returns -1 when no sentence could be
 * made (the root derives no finite sentence, a class holds only surrogates, out of memory). */
int64_t hs__grammar_generate(const struct hs_grammar *g, struct hs_rng *rng, int32_t max_depth,
                             char *buf, size_t cap);

/* Writes the compiled rules as GBNF text (generated rules included) for debugging; returns the
 * length it needs (writes at most cap bytes, NUL-terminated when cap > 0). */
size_t hs__grammar_dump(const struct hs_grammar *g, char *buf, size_t cap);

/* ---- the matcher's cache (grammar-match.c) ---- */

#define HS__STATE_DEAD     (-1)
#define HS__STATE_ERROR    (-2)
#define HS__ASCII_UNKNOWN  (-3)
#define HS__NONASCII_MIXED (-4) /* non-ASCII characters do not all lead to one state */

/* Bytes grouped into 64 buckets for the trie's per-subtree summaries: controls, DEL, digits,
 * lower and upper letters, each ASCII punctuation character (space included), non-ASCII. */
static inline uint32_t grammar_byte_bucket(uint8_t b)
{
    if (b >= 0x80) {
        return 63;
    }
    if (b < 0x20) {
        return 0;
    }
    if (b == 0x7F) {
        return 1;
    }
    if (b >= '0' && b <= '9') {
        return 2;
    }
    if (b >= 'a' && b <= 'z') {
        return 3;
    }
    if (b >= 'A' && b <= 'Z') {
        return 4;
    }
    return b < 0x30   ? 5 + (b - 0x20u)   /* 5..20: space ! " # ... / */
           : b < 0x41 ? 21 + (b - 0x3Au)  /* 21..27: : ; < = > ? @ */
           : b < 0x61 ? 28 + (b - 0x5Bu)  /* 28..33: [ \ ] ^ _ ` */
                      : 34 + (b - 0x7Bu); /* 34..37: { | } ~ */
}

struct hs__frame {
    uint32_t pos;    /* element index (never an END) */
    uint32_t parent; /* frame id; 0: the empty stack */
};

struct hs__state {
    uint32_t off; /* into cache.stack_pool */
    uint32_t n;   /* stacks (frame ids, ascending) */
    bool complete;
    int32_t *ascii;    /* [128] next state per ASCII byte, or NULL; HS__ASCII_UNKNOWN unknown */
    int32_t nonascii;  /* the state every non-ASCII character leads to, DEAD when none may come,
                        * HS__NONASCII_MIXED, or HS__ASCII_UNKNOWN until needed */
    int32_t mask_slot; /* grammar-mask.c: cached mask or -1 */
    bool loops_known;
    uint64_t breakers; /* buckets holding a byte that leaves the state (when loops_known) */
    uint64_t hash;
};

/* An open-addressing map from a 128-bit key to an int32 value. */
struct hs__htab {
    uint64_t *ka;
    uint64_t *kb;
    int32_t *val; /* INT32_MIN: empty */
    uint32_t cap; /* power of two or 0 */
    uint32_t n;
};

struct hs__matcher_link {
    struct hs__matcher_link *prev, *next;
};

struct hs_grammar_cache {
    const struct hs_grammar *g;       /* borrows */
    const struct hs_token_trie *trie; /* borrows; may be NULL */
    struct hs_grammar_cache_params p;
    uint64_t generation; /* bumped by every reset */
    hs_status error;     /* what made the last step fail with HS__STATE_ERROR */
    bool frames_full;    /* frame_get refused a frame past cache_hard_frames (HS_E_RANGE) */

    struct hs__frame *frames; /* [n_frames]; frames[0] is the empty stack */
    size_t n_frames, cap_frames;
    struct hs__htab frame_tab; /* (pos, parent) -> frame id */

    struct hs__state *states;
    size_t n_states, cap_states;
    uint32_t *stack_pool;
    size_t n_pool, cap_pool;
    int32_t *state_tab; /* open addressing over states by hash; -1 empty */
    uint32_t cap_state_tab;

    struct hs__htab trans;   /* (state, symbol) -> next state */
    struct hs__htab vec_tab; /* (state, matched-stacks vector) -> next state */
    int32_t **ascii_blocks;  /* owns the ascii tables, 256 tables a block */
    size_t n_ascii_blocks, cap_ascii_blocks;
    uint32_t ascii_used; /* tables used in the last block */

    /* scratch for advancing a state */
    uint32_t *work;
    size_t cap_work;
    uint32_t *result;
    size_t cap_result;
    uint32_t *seen; /* [cap_seen] per frame id: == seen_stamp when met in this expansion */
    size_t cap_seen;
    uint32_t seen_stamp;
    struct hs_grammar_cache_stats stats;

    int32_t initial;                  /* the start state, -1 until built */
    struct hs__matcher_link matchers; /* live matchers (for resets) */

    /* grammar-mask.c: an LRU of masks, one slot per state (partial == 0) */
    size_t mask_words;
    uint32_t *masks;                             /* [cap_slots][mask_words] */
    int32_t *slot_state, *slot_prev, *slot_next; /* [cap_slots] */
    size_t cap_slots;                            /* allocated, grows up to n_slots */
    int32_t n_slots, slot_head, slot_tail, n_used_slots;
    uint32_t *scratch_mask; /* [words] for states that cannot be cached */
    uint32_t (*walk)[2];    /* [trie max depth + 1] (state, partial) per depth */
};

/* Frames no step may go past (a mask walk, which cannot reset the cache under itself, or one
 * expansion): four times max_frames, at least 2M. */
static inline uint64_t cache_hard_frames(const struct hs_grammar_cache *c)
{
    return HS_MAX(4 * (uint64_t)c->p.max_frames, (uint64_t)1 << 21);
}

struct hs_grammar_matcher {
    struct hs__matcher_link link; /* first: the cache's list of live matchers */
    struct hs_grammar_cache *c;
    int32_t sid;
    uint32_t partial; /* bytes of an incomplete UTF-8 character: count << 24 | bytes, or 0 */
    bool done;        /* an end-of-generation token was accepted */
    uint32_t *saved;  /* the stacks, serialised across a cache reset */
    size_t n_saved, cap_saved;
};

/* The start state (HS__STATE_ERROR with c->error set on failure). */
int32_t hs__cache_initial(struct hs_grammar_cache *c);
/* The state after byte b from (sid, *partial); updates *partial. HS__STATE_DEAD when b cannot
 * follow, HS__STATE_ERROR (c->error) when the cache failed. */
int32_t hs__cache_step(struct hs_grammar_cache *c, int32_t sid, uint32_t *partial, uint8_t b);
/* The buckets (grammar_byte_bucket) holding some byte that does not lead from sid back to sid:
 * a trie subtree whose bytes avoid them is all allowed and ends in sid (when its bytes are valid
 * UTF-8 from a character boundary). ~0 when the cache failed (c->error). */
uint64_t hs__cache_breakers(struct hs_grammar_cache *c, int32_t sid);
/* Resets the cache when it has grown past its limits, carrying live matchers over; call only
 * where no state id is held outside matchers. */
hs_status hs__cache_maybe_reset(struct hs_grammar_cache *c);

/* grammar-mask.c hooks the cache calls */
hs_status hs__cache_masks_init(struct hs_grammar_cache *c);
void hs__cache_masks_clear(struct hs_grammar_cache *c);
void hs__cache_masks_free(struct hs_grammar_cache *c);

/* ---- the vocabulary trie (grammar-mask.c) ---- */

/* Every allowed token's bytes, sorted, as a trie laid out in depth-first preorder: a subtree is
 * the index range [i, end[i]), so a walk skips a dead subtree with one assignment. */
struct hs_token_trie {
    int32_t n_vocab;
    uint32_t n_nodes;  /* node 0 is the root */
    uint8_t *byte;     /* [n_nodes] the byte on the edge into the node */
    uint16_t *depth;   /* [n_nodes] */
    uint32_t *end;     /* [n_nodes] index past the node's subtree */
    uint32_t *tok_off; /* [n_nodes + 1] tokens ending at node i: toks[tok_off[i]..tok_off[i+1]) */
    uint64_t *below;   /* [n_nodes] buckets of the bytes under the node (its own excluded) */
    uint8_t *valid;    /* [n_nodes] every path through the node is valid UTF-8 (or a valid
                        * start of it) from the root to every leaf under it */
    hs_token *toks;
    uint32_t *piece_off; /* [n_vocab + 1] each token's bytes in pieces; empty for excluded */
    uint8_t *pieces;
    bool *is_eog;  /* [n_vocab] */
    hs_token *eog; /* [n_eog] end-of-generation tokens */
    int32_t n_eog;
    uint16_t max_depth;
};

#endif
