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

enum { BEFORE, THINK, ANSWER_LEAD, ANSWER, ANSWER_AFTER };

/* ---- families ---- */

static const struct family {
    const char *name;
    const char *open, *close;
    const char *forced; /* what a spent budget forces: the close marker and the separator */
    const char *answer_open, *answer_close;
    const char *text_open, *text_close; /* the markers as the engine tracks them on the text
                                         * when they are no tokens (whitespace they own) */
} families[HS__REASONING_FAMILY_COUNT] = {
    [HS__REASONING_FAMILY_THINK] = {"think", "<think>", "</think>", "</think>\n\n", "", "",
                                    "<think>", "</think>"},
    /* Hunyuan-A13B/TurboS: "<think>\n...\n</think>\n<answer>\n...\n</answer>", every marker
     * several tokens of its vocabulary; the newlines belong to the markers (as in vLLM's
     * hunyuan_a13b reasoning parser), so they are not counted as thinking */
    [HS__REASONING_FAMILY_HUNYUAN] = {"hunyuan", "<think>", "</think>", "\n</think>\n<answer>\n",
                                      "<answer>", "</answer>", "<think>\n", "\n</think>"},
};

const char *hs__reasoning_family_str(enum hs__reasoning_family f)
{
    return f >= 0 && f < HS__REASONING_FAMILY_COUNT ? families[f].name : "unknown";
}

enum hs__reasoning_family hs__reasoning_template_family(const char *src)
{
    if (src &&
        (strstr(src, "<|extra_0|>") || strstr(src, "hy_Assistant") || strstr(src, "<answer>"))) {
        return HS__REASONING_FAMILY_HUNYUAN;
    }
    return HS__REASONING_FAMILY_THINK;
}

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
    int fam = c->reasoning_family >= 0 && c->reasoning_family < HS__REASONING_FAMILY_COUNT
                  ? c->reasoning_family
                  : HS__REASONING_FAMILY_THINK;
    const char *mk = c->reasoning_markers;
    for (int i = 0; mk && i < HS__REASONING_FAMILY_COUNT; i++) {
        fam = strcmp(mk, families[i].name) ? fam : i;
    }
    const struct family *fy = &families[fam];
    snprintf(q->open, sizeof(q->open), "%s", fy->open);
    snprintf(q->close, sizeof(q->close), "%s", fy->close);
    snprintf(q->forced, sizeof(q->forced), "%s", fy->forced);
    snprintf(q->answer_open, sizeof(q->answer_open), "%s", fy->answer_open);
    snprintf(q->answer_close, sizeof(q->answer_close), "%s", fy->answer_close);
    snprintf(q->text_open, sizeof(q->text_open), "%s", fy->text_open);
    snprintf(q->text_close, sizeof(q->text_close), "%s", fy->text_close);
    const char *comma = mk ? strchr(mk, ',') : NULL;
    /* named markers (the flag, or a family that spells them in several tokens) are tracked on
     * the text; <think> and </think> by default only where they are tokens */
    bool named = fam == HS__REASONING_FAMILY_HUNYUAN;
    if (comma && (size_t)(comma - mk) < sizeof(q->open) && strlen(comma + 1) < sizeof(q->close) &&
        strlen(comma + 1) + 2 < sizeof(q->forced)) {
        snprintf(q->open, sizeof(q->open), "%.*s", (int)(comma - mk), mk);
        snprintf(q->close, sizeof(q->close), "%s", comma + 1);
        snprintf(q->forced, sizeof(q->forced), "%s\n\n", comma + 1);
        snprintf(q->text_open, sizeof(q->text_open), "%s", q->open);
        snprintf(q->text_close, sizeof(q->text_close), "%s", q->close);
        q->answer_open[0] = q->answer_close[0] = '\0';
        named = true;
    }
    q->open_tok = hs_vocab_find(c->vocab, q->open);
    q->close_tok = hs_vocab_find(c->vocab, q->close);
    q->markers = (q->open_tok >= 0 && q->close_tok >= 0) || named;

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
    while (k > 0 && strchr(" \t\r\n", m[k - 1])) {
        k--;
    }
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
    memcpy(o->answer_open, q->answer_open, sizeof(o->answer_open));
    memcpy(o->answer_close, q->answer_close, sizeof(o->answer_close));
    o->in_block = ends_with_marker(text, n, q->open);
    o->split = q->format != HS__REASONING_NONE;
    struct hs_reasoning_params *p = &r->er.reasoning;
    *p = (struct hs_reasoning_params){.enabled = true,
                                      .open_in_prompt = o->in_block,
                                      .open = q->open_tok,
                                      .close = q->close_tok,
                                      .budget_tokens = q->budget};
    if (q->open_tok < 0) {
        snprintf(p->open_text, sizeof(p->open_text), "%s", q->text_open);
    }
    if (q->close_tok < 0) {
        snprintf(p->close_text, sizeof(p->close_text), "%s", q->text_close);
    }
    /* what the family writes between the close marker and the answer */
    const char *after = strstr(q->forced, q->close);
    snprintf(p->after_close, sizeof(p->after_close), "%s", after ? after + strlen(q->close) : "");
    if (r->grammar && !o->in_block && q->thinking != 1 && q->budget < 0) {
        /* structured output the client did not ask to think before: the grammar applies from
         * the first token, as without a reasoning model */
        p->open = -1;
        p->open_text[0] = '\0';
    }
    /* the forced close: the marker as its token where it is one (a tokenizer could spell the
     * text otherwise), then the separator; a multi-token marker is tokenized with it */
    const bool lead = q->close_tok >= 0 && after == q->forced;
    const char *ftext = lead ? q->forced + strlen(q->close) : q->forced;
    struct hs__api_prompt seq = {0};
    hs_status st = hs__api_tokenize(c, ftext, strlen(ftext), false, NULL, &seq, err);
    if (st != HS_OK) {
        return st;
    }
    if (seq.n + (lead ? 1 : 0) > HS_REASONING_MAX_CLOSE) {
        free(seq.ids);
        return fail(err, 500, NULL,
                    "the thinking block's close marker and separator take %d tokens, over %d",
                    (int)seq.n + (lead ? 1 : 0), HS_REASONING_MAX_CLOSE);
    }
    if (lead) {
        p->close_seq[p->n_close_seq++] = q->close_tok;
    }
    for (int32_t i = 0; i < seq.n; i++) {
        p->close_seq[p->n_close_seq++] = seq.ids[i];
    }
    free(seq.ids);
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

void hs__reasoning_split_wrap(struct hs__reasoning_split *p, const char *open, const char *close)
{
    snprintf(p->aopen, sizeof(p->aopen), "%s", open ? open : "");
    snprintf(p->aclose, sizeof(p->aclose), "%s", close ? close : "");
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

/* After the block (or without one): the answer's wrapper is looked for when there is one. */
static int answer_state(const struct hs__reasoning_split *p)
{
    return p->aopen[0] ? ANSWER_LEAD : ANSWER;
}

/* Scans the held text for marker m (THINK: the close marker; ANSWER: the answer's close): what
 * comes before it goes out as a part (its trailing whitespace and a possible start of m wait).
 * Returns true when m was found and dropped (the hold then starts after it). */
static bool scan_to(struct hs__reasoning_split *p, const char *m, bool reasoning,
                    const struct hs__reasoning_sink *sink)
{
    char *t = p->hold.p;
    size_t len = p->hold.len;
    const char *hit = memmem(t, len, m, strlen(m));
    size_t upto = hit ? (size_t)(hit - t) : len - partial(t, len, m);
    size_t keep = upto;
    while (keep > 0 && is_ws(t[keep - 1])) {
        keep--; /* trailing whitespace waits: it may end the part */
    }
    emit(p, reasoning, t, keep, sink);
    if (hit) {
        size_t after = upto + strlen(m);
        memmove(t, t + after, len - after);
        p->hold.len = len - after;
        p->lead = true;
        return true;
    }
    memmove(t, t + keep, len - keep);
    p->hold.len = len - keep;
    return false;
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
        if (p->state == ANSWER_AFTER || (p->state == ANSWER && !p->aclose[0])) {
            emit(p, false, t, len, sink);
            p->hold.len = 0;
            return;
        }
        if (p->state == BEFORE || p->state == ANSWER_LEAD) {
            /* a marker at the start, after whitespace: the block's open, the answer's open */
            const char *m = p->state == BEFORE ? p->open : p->aopen;
            size_t i = 0;
            while (i < len && is_ws(t[i])) {
                i++;
            }
            size_t k = strlen(m);
            if (len - i >= k && !memcmp(t + i, m, k)) {
                p->state = p->state == BEFORE ? THINK : ANSWER;
                p->lead = true;
                memmove(t, t + i + k, len - i - k);
                p->hold.len = len - i - k;
                continue;
            }
            if (len - i < k && !memcmp(t + i, m, len - i)) {
                return; /* could still become the marker */
            }
            p->state = p->state == BEFORE ? answer_state(p) : ANSWER;
            continue;
        }
        if (p->state == THINK) {
            if (!scan_to(p, p->close, true, sink)) {
                return;
            }
            p->state = answer_state(p);
            continue;
        }
        /* ANSWER inside the wrapper */
        if (!scan_to(p, p->aclose, false, sink)) {
            return;
        }
        p->state = ANSWER_AFTER;
    }
}

void hs__reasoning_split_finish(struct hs__reasoning_split *p,
                                const struct hs__reasoning_sink *sink)
{
    if (p->hold.len > 0 && p->hold.p) {
        size_t n = p->hold.len;
        if (p->state == THINK || (p->state == ANSWER && p->aclose[0])) {
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
