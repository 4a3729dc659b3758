/* api/reasoning.c: thinking controls of a chat request and the splitter of its output
 * (api/reasoning.h). */
#include "api/reasoning.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/tokenizer/vocab.h"

#define fail hs__api_fail

enum { BEFORE, THINK, ANSWER };

/* ---- request ---- */

/* The last user message's text (string content or its text parts joined by nothing). */
static bool last_user_has(const json_t *messages, const char *cue)
{
    for (size_t i = json_array_size(messages); i-- > 0;) {
        const json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || strcmp(role, "user")) {
            continue;
        }
        const json_t *c = json_object_get(m, "content");
        if (json_is_string(c)) {
            return strstr(json_string_value(c), cue) != NULL;
        }
        size_t k;
        const json_t *part;
        json_array_foreach(c, k, part)
        {
            const char *t = json_string_value(json_object_get(part, "text"));
            if (t && strstr(t, cue)) {
                return true;
            }
        }
        return false;
    }
    return false;
}

/* ---- auto mode ---- */

/* Per class: requests seen and their mean thinking tokens (exponential, x16), relaxed atomics
 * (a lost update only blurs the mean). */
static atomic_int auto_n[HS__REASONING_AUTO_CLASSES];
static atomic_int auto_mean16[HS__REASONING_AUTO_CLASSES];

static bool has_word(const char *t, size_t n, const char *w)
{
    size_t k = strlen(w);
    for (size_t i = 0; i + k <= n; i++) {
        if (!strncasecmp(t + i, w, k)) {
            return true;
        }
    }
    return false;
}

bool hs__reasoning_auto_choose(const char *t, size_t n, int *cls)
{
    static const char *const cues[] = {
        "prove",  "solve",  "calculate", "compute", "step by step", "derive",   "how many", "why",
        "puzzle", "optimi", "algorithm", "```",     "integral",     "equation", "theorem"};
    bool cue = false;
    for (size_t i = 0; i < sizeof(cues) / sizeof(cues[0]) && !cue; i++) {
        cue = has_word(t, n, cues[i]);
    }
    int ops = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        ops += isdigit((unsigned char)t[i]) && strchr("+-*/^=<>%", t[i + 1]) != NULL;
    }
    cue |= ops > 0;
    int lb = 0;
    while (lb < 7 && ((size_t)16 << lb) < n) {
        lb++;
    }
    *cls = lb * 2 + (cue ? 1 : 0);
    if (cue) {
        return true;
    }
    if (n < 48) {
        return false;
    }
    int seen = atomic_load_explicit(&auto_n[*cls], memory_order_relaxed);
    int mean16 = atomic_load_explicit(&auto_mean16[*cls], memory_order_relaxed);
    return !(seen >= 4 && mean16 < 32 * 16);
}

void hs__reasoning_auto_record(int cls, int32_t n_tokens)
{
    if (cls < 0 || cls >= HS__REASONING_AUTO_CLASSES) {
        return;
    }
    int seen = atomic_fetch_add_explicit(&auto_n[cls], 1, memory_order_relaxed);
    int old = atomic_load_explicit(&auto_mean16[cls], memory_order_relaxed);
    int x = n_tokens > (1 << 20) ? (1 << 24) : n_tokens * 16;
    atomic_store_explicit(&auto_mean16[cls], seen == 0 ? x : old + (x - old) / 4,
                          memory_order_relaxed);
}

/* The last user message's text (string content or its first text part), "" when none. */
static const char *last_user_text(const json_t *messages, size_t *n)
{
    for (size_t i = json_array_size(messages); i-- > 0;) {
        const json_t *m = json_array_get(messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || strcmp(role, "user")) {
            continue;
        }
        const json_t *c = json_object_get(m, "content");
        if (!json_is_string(c)) {
            c = json_object_get(json_array_get(c, 0), "text");
        }
        if (json_is_string(c)) {
            *n = json_string_length(c);
            return json_string_value(c);
        }
        break;
    }
    *n = 0;
    return "";
}

hs_status hs__reasoning_parse(const struct hs__api_ctx *c, const json_t *b,
                              struct hs__reasoning_req *q, struct hs__api_err *err)
{
    *q = (struct hs__reasoning_req){
        .thinking = -1, .budget = -1, .open_tok = -1, .close_tok = -1, .auto_class = -1};
    snprintf(q->open, sizeof(q->open), "<think>");
    snprintf(q->close, sizeof(q->close), "</think>");
    const char *mk = c->reasoning_markers;
    const char *comma = mk ? strchr(mk, ',') : NULL;
    if (comma && (size_t)(comma - mk) < sizeof(q->open) && strlen(comma + 1) < sizeof(q->close)) {
        snprintf(q->open, sizeof(q->open), "%.*s", (int)(comma - mk), mk);
        snprintf(q->close, sizeof(q->close), "%s", comma + 1);
    }
    q->open_tok = hs_vocab_find(c->vocab, q->open);
    q->close_tok = hs_vocab_find(c->vocab, q->close);
    q->markers = q->open_tok >= 0 && q->close_tok >= 0;

    const json_t *f = json_object_get(b, "reasoning_format");
    const char *dflt = c->reasoning_format;
    if (dflt && !strcmp(dflt, "reasoning")) {
        q->format = HS__REASONING_FIELD;
    } else if (dflt && !strcmp(dflt, "none")) {
        q->format = HS__REASONING_NONE;
    }
    if (f && !json_is_null(f)) {
        const char *s = json_string_value(f);
        if (s && !strcmp(s, "reasoning_content")) {
            q->format = HS__REASONING_CONTENT;
        } else if (s && !strcmp(s, "reasoning")) {
            q->format = HS__REASONING_FIELD;
        } else if (s && !strcmp(s, "none")) {
            q->format = HS__REASONING_NONE;
        } else {
            return fail(err, 400, "reasoning_format",
                        "reasoning_format must be \"reasoning_content\", \"reasoning\" or "
                        "\"none\"");
        }
    }
    const json_t *e = json_object_get(b, "reasoning_effort");
    if (e && !json_is_null(e)) {
        const char *s = json_string_value(e);
        if (s && !strcmp(s, "none")) {
            q->thinking = 0;
        } else if (s && !strcmp(s, "auto")) {
            size_t n = 0;
            const char *t = last_user_text(json_object_get(b, "messages"), &n);
            q->auto_long = hs__reasoning_auto_choose(t, n, &q->auto_class);
            q->thinking = q->auto_long ? 1 : 0;
        } else if (s && !strcmp(s, "low")) {
            q->budget = HS__REASONING_BUDGET_LOW;
        } else if (s && !strcmp(s, "medium")) {
            q->budget = HS__REASONING_BUDGET_MEDIUM;
        } else if (!s || strcmp(s, "high")) {
            return fail(err, 400, "reasoning_effort",
                        "reasoning_effort must be \"none\", \"low\", \"medium\", \"high\" or "
                        "\"auto\"");
        }
    }
    const json_t *bt = json_object_get(b, "thinking_budget_tokens");
    if (bt && !json_is_null(bt)) {
        if (!json_is_integer(bt) || json_integer_value(bt) < 0 ||
            json_integer_value(bt) > INT32_MAX) {
            return fail(err, 400, "thinking_budget_tokens",
                        "thinking_budget_tokens must be an integer >= 0");
        }
        q->budget = (int32_t)json_integer_value(bt);
    }
    const json_t *kw = json_object_get(b, "chat_template_kwargs");
    const json_t *et = json_is_object(kw) ? json_object_get(kw, "enable_thinking") : NULL;
    if (et && !json_is_boolean(et)) {
        return fail(err, 400, "chat_template_kwargs.enable_thinking",
                    "chat_template_kwargs.enable_thinking must be a boolean");
    }
    if (et) {
        q->thinking = json_is_true(et);
    } else if (q->thinking < 0) {
        const json_t *msgs = json_object_get(b, "messages");
        if (last_user_has(msgs, "/no_think")) {
            q->thinking = 0;
        } else if (last_user_has(msgs, "/think")) {
            q->thinking = 1;
        }
    }
    const json_t *rf = json_object_get(b, "response_format");
    const json_t *gr = json_object_get(b, "grammar");
    const bool structured = (rf && !json_is_null(rf)) || (gr && !json_is_null(gr)) ||
                            json_array_size(json_object_get(b, "tools")) > 0;
    if (c->reasoning_auto && q->markers && q->thinking < 0 && q->budget < 0 &&
        (!e || json_is_null(e)) && !structured) {
        /* nothing said about thinking, and the template has both modes: auto is the default
         * (structured output and tools keep their own rule: the grammar from the first token) */
        size_t n = 0;
        const char *t = last_user_text(json_object_get(b, "messages"), &n);
        q->auto_long = hs__reasoning_auto_choose(t, n, &q->auto_class);
        q->thinking = q->auto_long ? 1 : 0;
    }
    if (q->thinking == 0) {
        q->budget = 0; /* the template may not close the block itself: the budget does */
    }
    return HS_OK;
}

bool hs__reasoning_template_has_modes(const char *src)
{
    return src && strstr(src, "enable_thinking") != NULL;
}

/* True when text[n] ends with marker m followed only by whitespace. */
static bool ends_with_marker(const char *text, size_t n, const char *m)
{
    while (n > 0 && strchr(" \t\r\n", text[n - 1])) {
        n--;
    }
    size_t k = strlen(m);
    return n >= k && !memcmp(text + n - k, m, k);
}

hs_status hs__reasoning_finish(const struct hs__api_ctx *c, const struct hs__reasoning_req *q,
                               const char *text, size_t n, struct hs__api_req *r,
                               struct hs__api_err *err)
{
    struct hs__api_reasoning *o = &r->reasoning;
    *o = (struct hs__api_reasoning){.format = (int)q->format,
                                    .open_tok = q->open_tok,
                                    .close_tok = q->close_tok,
                                    .auto_class = q->auto_class,
                                    .auto_long = q->auto_long};
    if (!q->markers) {
        return HS_OK; /* no thinking block in this model's vocabulary */
    }
    memcpy(o->open, q->open, sizeof(o->open));
    memcpy(o->close, q->close, sizeof(o->close));
    o->in_block = ends_with_marker(text, n, q->open);
    o->split = q->format != HS__REASONING_NONE;
    struct hs_reasoning_params *p = &r->er.reasoning;
    *p = (struct hs_reasoning_params){.enabled = true,
                                      .open_in_prompt = o->in_block,
                                      .open = q->open_tok,
                                      .close = q->close_tok,
                                      .budget_tokens = q->budget};
    /* the separator Qwen3's and DeepSeek-R1's templates write after the block */
    struct hs__api_prompt sep = {0};
    hs_status st = hs__api_tokenize(c, "\n\n", 2, false, NULL, &sep, err);
    if (st != HS_OK) {
        return st;
    }
    if (r->grammar && !o->in_block && q->thinking != 1 && q->budget < 0) {
        /* structured output the client did not ask to think before: the grammar applies from
         * the first token, as without a reasoning model */
        p->open = -1;
    }
    p->close_seq[p->n_close_seq++] = q->close_tok;
    for (int32_t i = 0; i < sep.n && p->n_close_seq < HS_REASONING_MAX_CLOSE; i++) {
        p->close_seq[p->n_close_seq++] = sep.ids[i];
    }
    free(sep.ids);
    return HS_OK;
}

/* ---- splitter ---- */

void hs__reasoning_split_init(struct hs__reasoning_split *p, const char *open, const char *close,
                              bool in_block)
{
    *p = (struct hs__reasoning_split){.state = in_block ? THINK : BEFORE, .lead = true};
    snprintf(p->open, sizeof(p->open), "%s", open);
    snprintf(p->close, sizeof(p->close), "%s", close);
}

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Length of the longest suffix of s[n] that is a proper prefix of m. */
static size_t partial(const char *s, size_t n, const char *m)
{
    size_t k = strlen(m);
    for (size_t l = k - 1 < n ? k - 1 : n; l > 0; l--) {
        if (!memcmp(s + n - l, m, l)) {
            return l;
        }
    }
    return 0;
}

/* Emits s[n] as a part (reasoning or content), dropping its leading whitespace. */
static void emit(struct hs__reasoning_split *p, bool reasoning, const char *s, size_t n,
                 const struct hs__reasoning_sink *sink)
{
    while (p->lead && n > 0 && is_ws(*s)) {
        s++;
        n--;
    }
    if (n == 0) {
        return;
    }
    p->lead = false;
    (reasoning ? sink->reasoning : sink->content)(sink->user, s, n);
}

void hs__reasoning_split_feed(struct hs__reasoning_split *p, const char *s, size_t n,
                              const struct hs__reasoning_sink *sink)
{
    hs__buf_add(&p->hold, s, n);
    if (p->hold.oom) {
        return;
    }
    for (;;) {
        char *t = p->hold.p;
        size_t len = p->hold.len;
        if (!t) {
            return;
        }
        if (p->state == ANSWER) {
            emit(p, false, t, len, sink);
            p->hold.len = 0;
            return;
        }
        if (p->state == BEFORE) {
            size_t i = 0;
            while (i < len && is_ws(t[i])) {
                i++;
            }
            size_t k = strlen(p->open);
            if (len - i >= k && !memcmp(t + i, p->open, k)) {
                p->state = THINK;
                p->lead = true;
                memmove(t, t + i + k, len - i - k);
                p->hold.len = len - i - k;
                continue;
            }
            if (len - i < k && !memcmp(t + i, p->open, len - i)) {
                return; /* could still become the open marker */
            }
            p->state = ANSWER;
            continue;
        }
        /* THINK */
        const char *hit = memmem(t, len, p->close, strlen(p->close));
        size_t upto = hit ? (size_t)(hit - t) : len - partial(t, len, p->close);
        size_t keep = upto;
        while (keep > 0 && is_ws(t[keep - 1])) {
            keep--; /* trailing whitespace waits: it may end the block */
        }
        emit(p, true, t, keep, sink);
        if (hit) {
            size_t after = upto + strlen(p->close);
            memmove(t, t + after, len - after);
            p->hold.len = len - after;
            p->state = ANSWER;
            p->lead = true;
            continue;
        }
        memmove(t, t + keep, len - keep);
        p->hold.len = len - keep;
        return;
    }
}

void hs__reasoning_split_finish(struct hs__reasoning_split *p,
                                const struct hs__reasoning_sink *sink)
{
    if (p->hold.len > 0 && p->hold.p) {
        size_t n = p->hold.len;
        if (p->state == THINK) {
            while (n > 0 && is_ws(p->hold.p[n - 1])) {
                n--;
            }
        }
        emit(p, p->state == THINK, p->hold.p, n, sink);
    }
    p->hold.len = 0;
}

void hs__reasoning_split_free(struct hs__reasoning_split *p)
{
    hs__buf_free(&p->hold);
}
