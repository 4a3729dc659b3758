/* Reasoning (thinking) blocks in the output: a per-choice tracker of where the output is (before
 * the block, inside it, forcing its close, in the answer) that doubles as the sampler's
 * constraint. It counts thinking tokens, and when the budget is spent it forces the close marker
 * and the template's separator (HS_TOKEN_SET_FORCED); the answer is then handed to an inner
 * constraint (a grammar), which never sees the thinking. Stop strings look at the answer only:
 * output.c asks hs_reasoning_in_answer before matching them.
 * Thread: a tracker belongs to one sequence, used by the engine thread. */
#ifndef HS_SERVER_REASONING_H
#define HS_SERVER_REASONING_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"
#include "model/tokenizer/vocab.h"
#include "server/sampling.h"

#define HS_REASONING_MAX_CLOSE  32 /* tokens of the forced close marker + separator */
#define HS_REASONING_MAX_MARKER 32 /* bytes of a text marker, its NUL included */

/* A request's reasoning settings (hs_engine_request.reasoning); zeroed: no tracking (stops
 * apply to everything, nothing forced). */
struct hs_reasoning_params {
    bool enabled;          /* the output may hold a thinking block */
    bool open_in_prompt;   /* the prompt ends inside the block (DeepSeek-R1 distills, Qwen3's
                            * generation prompt when it opens <think>) */
    hs_token open;         /* the token that opens the block (-1: only open_in_prompt opens it) */
    hs_token close;        /* the token that closes it (the close marker as one token) */
    int32_t budget_tokens; /* < 0: no limit; else at most this many thinking tokens (the open
                            * token not counted), then close[] is forced */
    hs_token close_seq[HS_REASONING_MAX_CLOSE]; /* forced on budget: close marker and the
                                                 * separator before the answer, [n_close_seq] */
    int32_t n_close_seq;
    /* Markers that are no single token of the vocabulary (Hunyuan's "<think>" is "<th" "ink"
     * ">\n"): matched on the output's text, whatever tokens spell it. Non-empty open_text
     * replaces open, non-empty close_text replaces close. after_close: text that follows the
     * close marker in the family's format (Hunyuan's "\n<answer>\n"): the tokens spelling it
     * right after the marker are not the answer yet (stop strings and the inner constraint
     * start after it). Text markers need hs_reasoning_init's vocabulary. */
    char open_text[HS_REASONING_MAX_MARKER], close_text[HS_REASONING_MAX_MARKER];
    char after_close[HS_REASONING_MAX_MARKER];
};

enum hs_reasoning_phase {
    HS_REASONING_BEFORE,  /* nothing generated yet and the block not open */
    HS_REASONING_THINK,   /* inside the block */
    HS_REASONING_CLOSING, /* the budget is spent: forcing close_seq */
    HS_REASONING_SEP,     /* after a text close marker, while the output spells after_close */
    HS_REASONING_ANSWER,  /* after the block (or there was none) */
    HS_REASONING_PHASE_COUNT,
};
const char *hs_reasoning_phase_str(enum hs_reasoning_phase p);

struct hs_reasoning {
    struct hs_reasoning_params p;
    enum hs_reasoning_phase phase;
    int32_t n_think;  /* thinking tokens accepted so far */
    int32_t n_forced; /* CLOSING: tokens of close_seq accepted */
    int32_t n_answer; /* tokens accepted after the block (the close marker not counted) */
    struct hs_sampler_constraint inner; /* the answer's constraint; allowed NULL: none */
    uint32_t *mask; /* BEFORE with an inner constraint: what it allows plus the open token,
                     * [HS_TOKEN_MASK_WORDS(n_vocab)]; owns */
    int32_t n_vocab;
    /* text markers: the tail of the current phase's text, and where the last tokens end in it
     * (a ring, so that the tokens spelling a close marker are not counted as thinking) */
    const struct hs_vocab *vocab; /* borrowed from init */
    char win[2 * HS_REASONING_MAX_MARKER];
    int32_t n_win;
    int64_t n_text;                           /* bytes of the phase's text so far */
    int64_t tok_end[HS_REASONING_MAX_MARKER]; /* ring of the last tokens' end offsets */
    int32_t n_ring;
};

/* Validates p (tokens in [0, n_vocab) where used, n_close_seq in range and, with a budget, at
 * least one, text markers NUL-terminated): HS_E_INVAL with err naming the field. Thread: any. */
hs_status hs_reasoning_params_check(const struct hs_reasoning_params *p, int32_t n_vocab,
                                    struct hs_error *err);

/* Starts a tracker on caller memory; inner (may be NULL) is copied and gets only the answer's
 * tokens. Before the block is open, the first token may be the open marker or whatever inner
 * allows (a grammar never cuts the thinking off); a text open marker is not offered next to an
 * inner constraint (inner decides from the first token, as with open -1). vocab (borrowed, valid
 * while r is) spells the tokens for text markers; NULL: text markers are ignored. HS_E_NOMEM
 * (r is then zeroed); free with hs_reasoning_finish. */
hs_status hs_reasoning_init(struct hs_reasoning *r, const struct hs_reasoning_params *p,
                            const struct hs_sampler_constraint *inner, const struct hs_vocab *vocab,
                            int32_t n_vocab);
/* Frees what init allocated; zeroed r: nothing. */
void hs_reasoning_finish(struct hs_reasoning *r);

/* The constraint view of r (borrows r: valid while r is). */
struct hs_sampler_constraint hs_reasoning_constraint(struct hs_reasoning *r);

/* True once an answer token was accepted: the text from that token on is the answer (stop
 * strings apply from there; the close marker and separator themselves are never matched). */
bool hs_reasoning_in_answer(const struct hs_reasoning *r);

/* Thinking tokens so far: those inside the block, its markers (and tokens spelling a text
 * marker) not counted. */
int32_t hs_reasoning_n_think(const struct hs_reasoning *r);

#endif
