/* Reasoning tracker and budget constraint (server/reasoning.h). */
#include "server/reasoning.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

const char *hs_reasoning_phase_str(enum hs_reasoning_phase p)
{
    static const char *const names[HS_REASONING_PHASE_COUNT] = {"before", "think", "closing",
                                                                "separator", "answer"};
    return p >= 0 && p < HS_REASONING_PHASE_COUNT ? names[p] : "unknown";
}

hs_status hs_reasoning_params_check(const struct hs_reasoning_params *p, int32_t n_vocab,
                                    struct hs_error *err)
{
    if (!p->enabled) {
        return HS_OK;
    }
    if (!memchr(p->open_text, '\0', sizeof(p->open_text)) ||
        !memchr(p->close_text, '\0', sizeof(p->close_text)) ||
        !memchr(p->after_close, '\0', sizeof(p->after_close))) {
        return hs_error_set(err, HS_E_INVAL, "reasoning text markers must be under %d bytes",
                            HS_REASONING_MAX_MARKER);
    }
    if (p->open >= n_vocab || p->open < -1) {
        return hs_error_set(err, HS_E_INVAL, "reasoning open token %d is not in the vocabulary",
                            (int)p->open);
    }
    if ((p->close < 0 && !p->close_text[0]) || p->close >= n_vocab) {
        return hs_error_set(err, HS_E_INVAL, "reasoning close token %d is not in the vocabulary",
                            (int)p->close);
    }
    if (p->n_close_seq < 0 || p->n_close_seq > HS_REASONING_MAX_CLOSE ||
        (p->budget_tokens >= 0 && p->n_close_seq < 1)) {
        return hs_error_set(err, HS_E_INVAL, "reasoning close sequence must have 1 to %d tokens",
                            HS_REASONING_MAX_CLOSE);
    }
    for (int32_t i = 0; i < p->n_close_seq; i++) {
        if (p->close_seq[i] < 0 || p->close_seq[i] >= n_vocab) {
            return hs_error_set(err, HS_E_INVAL,
                                "reasoning close sequence token %d is not in the vocabulary",
                                (int)p->close_seq[i]);
        }
    }
    return HS_OK;
}

/* Enters THINK, or CLOSING straight away when the budget is already spent. */
static void enter_think(struct hs_reasoning *r)
{
    r->phase = r->p.budget_tokens >= 0 && r->n_think >= r->p.budget_tokens ? HS_REASONING_CLOSING
                                                                           : HS_REASONING_THINK;
}

hs_status hs_reasoning_init(struct hs_reasoning *r, const struct hs_reasoning_params *p,
                            const struct hs_sampler_constraint *inner, const struct hs_vocab *vocab,
                            int32_t n_vocab)
{
    *r = (struct hs_reasoning){.p = *p, .n_vocab = n_vocab, .vocab = vocab};
    if (!vocab) {
        r->p.open_text[0] = r->p.close_text[0] = r->p.after_close[0] = '\0';
    }
    if (inner) {
        r->inner = *inner;
        /* a text open marker is several tokens: the grammar decides from the first one */
        if (r->p.open_text[0]) {
            r->p.open_text[0] = '\0';
            r->p.open = -1;
        }
    }
    if (inner && p->enabled && !p->open_in_prompt && r->p.open >= 0) {
        r->mask = malloc(HS_TOKEN_MASK_WORDS(n_vocab) * sizeof(*r->mask));
        if (!r->mask) {
            *r = (struct hs_reasoning){0};
            return HS_E_NOMEM;
        }
    }
    r->phase = HS_REASONING_BEFORE;
    if (!p->enabled) {
        r->phase = HS_REASONING_ANSWER;
    } else if (p->open_in_prompt) {
        enter_think(r);
    }
    return HS_OK;
}

void hs_reasoning_finish(struct hs_reasoning *r)
{
    free(r->mask);
    r->mask = NULL;
}

/* ---- text markers ---- */

/* Starts a phase's text (window and token ring), with the bytes s[n] already in it. */
static void text_reset(struct hs_reasoning *r, const char *s, size_t n)
{
    n = HS_MIN(n, sizeof(r->win));
    memmove(r->win, s, n);
    r->n_win = (int32_t)n;
    r->n_text = (int64_t)n;
    r->n_ring = 0;
}

/* Appends token t's text to the window; *buf gets the old window plus the whole piece (the
 * window then keeps its tail). Returns the bytes in *buf; *base is the phase offset of buf[0]. */
static size_t text_push(struct hs_reasoning *r, hs_token t, bool skip_ws, char *buf, size_t cap,
                        int64_t *base)
{
    char piece[256];
    size_t n = HS_MIN(hs_vocab_piece(r->vocab, t, true, piece, sizeof(piece)), sizeof(piece));
    const char *q = piece;
    while (skip_ws && r->n_win == 0 && n > 0 && strchr(" \t\r\n", *q)) {
        q++; /* leading whitespace before a marker is not part of it */
        n--;
    }
    *base = r->n_text - r->n_win;
    memcpy(buf, r->win, (size_t)r->n_win);
    size_t len = (size_t)r->n_win + HS_MIN(n, cap - (size_t)r->n_win);
    memcpy(buf + r->n_win, q, len - (size_t)r->n_win);
    r->n_text += (int64_t)(len - (size_t)r->n_win);
    r->tok_end[r->n_ring++ % HS_REASONING_MAX_MARKER] = r->n_text;
    const size_t keep = HS_MIN(len, sizeof(r->win));
    memcpy(r->win, buf + len - keep, keep);
    r->n_win = (int32_t)keep;
    return len;
}

/* SEP: true while the window still spells a prefix of after_close (ANSWER once it is whole). */
static bool sep_continues(struct hs_reasoning *r)
{
    const size_t k = strlen(r->p.after_close);
    if ((size_t)r->n_win > k || memcmp(r->win, r->p.after_close, (size_t)r->n_win)) {
        return false;
    }
    if ((size_t)r->n_win == k) {
        r->phase = HS_REASONING_ANSWER;
    }
    return true;
}

/* THINK with a text close marker: token t was counted as thinking; when it completes the
 * marker, the tokens spelling it are taken back off the count and the block ends. */
static void think_text(struct hs_reasoning *r, hs_token t)
{
    char buf[sizeof(r->win) + 256];
    int64_t base = 0;
    const size_t len = text_push(r, t, false, buf, sizeof(buf), &base);
    const size_t k = strlen(r->p.close_text);
    const char *hit = memmem(buf, len, r->p.close_text, k);
    if (!hit) {
        enter_think(r);
        return;
    }
    const int64_t m = base + (hit - buf); /* where the marker starts in the block's text */
    for (int32_t i = 0; i < HS_MIN(r->n_ring, HS_REASONING_MAX_MARKER); i++) {
        r->n_think -= r->tok_end[(r->n_ring - 1 - i) % HS_REASONING_MAX_MARKER] > m;
    }
    const size_t after = (size_t)(hit - buf) + k;
    text_reset(r, buf + after, len - after);
    r->phase = HS_REASONING_SEP;
    /* an inner constraint (a grammar) takes the answer right after the marker, as it must see
     * every token it allowed */
    if (!r->p.after_close[0] || r->inner.accept || !sep_continues(r)) {
        r->phase = HS_REASONING_ANSWER;
    }
}

/* BEFORE with a text open marker: returns true while t may still be (part of) the marker or
 * the whitespace before it; the block opens once the marker is whole. */
static bool before_text(struct hs_reasoning *r, hs_token t)
{
    char buf[sizeof(r->win) + 256];
    int64_t base = 0;
    const size_t len = text_push(r, t, true, buf, sizeof(buf), &base);
    const size_t k = strlen(r->p.open_text);
    if (len >= k && !memcmp(buf, r->p.open_text, k)) {
        text_reset(r, buf + k, len - k);
        enter_think(r);
        return true;
    }
    return len < k && !memcmp(buf, r->p.open_text, len);
}

/* BEFORE with an inner constraint: the open marker or what inner allows first. */
static hs_status allowed_before(struct hs_reasoning *r, struct hs_token_set *set)
{
    struct hs_token_set in;
    HS_TRY(r->inner.allowed(r->inner.user, &in));
    if (in.kind == HS_TOKEN_SET_ALL) {
        *set = in;
        return HS_OK;
    }
    const size_t words = HS_TOKEN_MASK_WORDS(r->n_vocab);
    if (in.kind == HS_TOKEN_SET_MASK) {
        memcpy(r->mask, in.mask, words * sizeof(*r->mask));
    } else {
        memset(r->mask, 0, words * sizeof(*r->mask));
        hs_token_mask_set(r->mask, in.forced[0]);
    }
    hs_token_mask_set(r->mask, r->p.open);
    *set = (struct hs_token_set){.kind = HS_TOKEN_SET_MASK, .mask = r->mask};
    return HS_OK;
}

bool hs_reasoning_in_answer(const struct hs_reasoning *r)
{
    return r->n_answer > 0;
}

int32_t hs_reasoning_n_think(const struct hs_reasoning *r)
{
    return r->n_think;
}

static hs_status allowed(void *user, struct hs_token_set *set)
{
    struct hs_reasoning *r = user;
    switch (r->phase) {
    case HS_REASONING_CLOSING:
        set->kind = HS_TOKEN_SET_FORCED;
        set->forced = r->p.close_seq + r->n_forced;
        set->n_forced = r->p.n_close_seq - r->n_forced;
        set->mask = NULL;
        return HS_OK;
    case HS_REASONING_ANSWER:
        if (r->inner.allowed) {
            return r->inner.allowed(r->inner.user, set);
        }
        break;
    case HS_REASONING_BEFORE:
        if (r->mask) {
            return allowed_before(r, set);
        }
        if (r->inner.allowed) { /* no open token: inner decides from the first token on */
            return r->inner.allowed(r->inner.user, set);
        }
        break;
    default:
        break;
    }
    *set = (struct hs_token_set){.kind = HS_TOKEN_SET_ALL};
    return HS_OK;
}

static hs_status accept(void *user, hs_token t)
{
    struct hs_reasoning *r = user;
    switch (r->phase) {
    case HS_REASONING_BEFORE:
        if (r->p.open_text[0]) {
            if (before_text(r, t)) {
                return HS_OK;
            }
        } else if (t == r->p.open && t >= 0) {
            enter_think(r);
            return HS_OK;
        }
        r->phase = HS_REASONING_ANSWER; /* the model answered without thinking */
        r->n_answer++;
        return r->inner.accept ? r->inner.accept(r->inner.user, t) : HS_OK;
    case HS_REASONING_THINK:
        if (!r->p.close_text[0] && t == r->p.close) {
            r->phase = HS_REASONING_ANSWER;
            return HS_OK;
        }
        r->n_think++;
        if (r->p.close_text[0]) {
            think_text(r, t);
        } else {
            enter_think(r);
        }
        return HS_OK;
    case HS_REASONING_SEP: {
        char buf[sizeof(r->win) + 256];
        int64_t base = 0;
        text_push(r, t, false, buf, sizeof(buf), &base);
        if (sep_continues(r)) {
            return HS_OK;
        }
        r->phase = HS_REASONING_ANSWER; /* the answer started without the rest of it */
        r->n_answer++;
        return r->inner.accept ? r->inner.accept(r->inner.user, t) : HS_OK;
    }
    case HS_REASONING_CLOSING:
        if (t != r->p.close_seq[r->n_forced]) {
            return HS_E_INVAL; /* the sampler draws only the forced token */
        }
        if (++r->n_forced == r->p.n_close_seq) {
            r->phase = HS_REASONING_ANSWER;
        }
        return HS_OK;
    case HS_REASONING_ANSWER:
    default:
        r->n_answer++;
        return r->inner.accept ? r->inner.accept(r->inner.user, t) : HS_OK;
    }
}

struct hs_sampler_constraint hs_reasoning_constraint(struct hs_reasoning *r)
{
    return (struct hs_sampler_constraint){allowed, accept, r};
}
