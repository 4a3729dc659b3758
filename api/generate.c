/* api/generate.c: completion jobs. A job submits one engine request per prompt and turns their
 * events into OpenAI JSON: server-sent events for streams, one body otherwise. It never blocks
 * an HTTP thread: with nothing to send it suspends its connection, and the engine's notify
 * resumes it (so does the encoder's, for a chat request whose images it had to encode first).
 * Output is written as JSON text as it arrives (no tree of objects per token), so a non-streamed
 * answer costs about its own size, and the per-request cap on output items (request.c) bounds
 * that. */
#include "api/server-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/reasoning.h"
#include "api/vision.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"

#define MAX_TOP 20 /* alternatives per token a request may ask for (OpenAI's limit) */

/* Appends a string literal, or a choice of literals (strlen, not sizeof, for those). */
#define LIT(b, lit) hs__buf_add((b), (lit), strlen(lit))

/* A tool call found in a choice's output (non-streamed answers). */
struct call {
    char id[40];
    struct hs__buf name, args;
};

/* One choice's output so far. Non-streamed: everything; streamed: this chunk's logprobs. */
struct choice {
    struct hs__job *job;
    int32_t idx;
    struct hs__buf text;  /* with tool calls parsed: the content outside them */
    struct hs__buf lp[4]; /* chat: [0] logprobs.content entries; completions: tokens,
                           * token_logprobs, top_logprobs, text_offset entries */
    enum hs_finish_reason fin;
    double sum_logprob; /* best_of's ranking */
    size_t text_offset;
    bool role_sent;
    bool echo_sent;
    bool tp_on; /* the output is parsed for tool calls */
    struct hs__tool_parser tp;
    struct call *calls; /* non-streamed: [n_calls] */
    int32_t n_calls, cap_calls;
    bool lp_pending; /* streamed: this event's logprobs still to send */
    bool rp_on;      /* the thinking block is split out of the output */
    struct hs__reasoning_split rp;
    struct hs__buf reasoning; /* non-streamed: the thinking text */
    struct hs__buf content;   /* scratch: an event's text after the block is taken out */
};

struct hs__job {
    struct hs_api_server *s;
    struct MHD_Connection *c;
    uint64_t id;
    enum hs__api_kind kind;
    bool stream, include_usage;
    struct hs__api_tools tools;
    struct hs__api_reasoning rs;
    int32_t reasoning_tokens; /* thinking tokens of all choices */
    bool want_lp;             /* the client asked for logprobs */
    int32_t n;                /* choices generated per prompt (best_of) */
    int32_t n_ret;            /* choices returned per prompt (n) */
    int32_t n_h;              /* engine requests: one per prompt */
    struct hs_engine_handle *h[HS__API_MAX_PROMPTS];
    bool h_done[HS__API_MAX_PROMPTS];
    int32_t n_done;
    struct choice *ch; /* [n_h * n] */
    char *echo[HS__API_MAX_PROMPTS];
    size_t n_echo[HS__API_MAX_PROMPTS];
    struct hs_engine_usage usage;
    hs_status fail_status;
    const char *fail_detail; /* the engine's reason (static), NULL: fail_status says it */
    bool any_timeout, any_canceled;
    double ttft_ms;
    char cid[48];
    int64_t created;
    struct hs__buf out; /* streams: SSE bytes not yet handed to MHD */
    size_t out_pos;
    bool finished; /* streams: [DONE] is in out */

    /* Suspension: the HTTP thread suspends only when no notify came since it last looked
     * (pending), and the notify resumes only what is suspended. */
    pthread_mutex_t mu;
    bool suspended, pending;
    atomic_bool gone; /* the client hung up */

    /* A request whose images the encoder's thread is encoding (api/vision.h): it owns the
     * parsed request until hs__generate_resume takes it back; NULL: none. */
    struct hs__api_vision_task *vtask;

    /* The key's tokens-per-minute charge (admit.c), settled with the usage in hs__job_free. */
    int32_t tenant;
    int64_t tok_charged;  /* 0: nothing charged */
    int64_t tok_prompt;   /* prompt tokens of all prompts */
    int64_t tok_streamed; /* generated tokens seen in events (usage may never arrive) */
};

/* ---- suspension ---- */

static void job_notify(void *user)
{
    struct hs__job *j = user;
    pthread_mutex_lock(&j->mu);
    j->pending = true;
    if (j->suspended) {
        j->suspended = false;
        MHD_resume_connection(j->c);
    }
    pthread_mutex_unlock(&j->mu);
}

static void job_clear_pending(struct hs__job *j)
{
    pthread_mutex_lock(&j->mu);
    j->pending = false;
    pthread_mutex_unlock(&j->mu);
}

/* Suspends the connection unless something happened since job_clear_pending (then the caller
 * looks again). True when suspended. */
static bool job_wait(struct hs__job *j)
{
    bool wait;
    pthread_mutex_lock(&j->mu);
    wait = !j->pending && !atomic_load(&j->s->stopping) && !atomic_load(&j->gone);
    if (wait) {
        j->suspended = true;
        MHD_suspend_connection(j->c);
    }
    j->pending = false;
    pthread_mutex_unlock(&j->mu);
    return wait;
}

void hs__job_wake(struct hs__job *j)
{
    pthread_mutex_lock(&j->mu);
    if (j->suspended) {
        j->suspended = false;
        MHD_resume_connection(j->c);
    }
    pthread_mutex_unlock(&j->mu);
}

static void job_cancel(struct hs__job *j)
{
    for (int32_t i = 0; i < j->n_h; i++) {
        hs_engine_cancel(j->h[i]);
    }
}

void hs__job_client_gone(struct hs__job *j)
{
    if (atomic_exchange(&j->gone, true)) {
        return;
    }
    HS_LOG_INFO("req=%llu client disconnected; canceling", (unsigned long long)j->id);
    job_cancel(j);
    hs__job_wake(j);
}

void hs__job_free(struct hs__job *j)
{
    if (!j) {
        return;
    }
    hs__api_vision_task_abandon(j->vtask); /* no notify after this either */
    for (int32_t i = 0; i < j->n_h; i++) {
        hs_engine_release(j->h[i]); /* cancels what has not finished; no notify after this */
    }
    if (j->tok_charged > 0) {
        int64_t used = j->tok_prompt + HS_MAX((int64_t)j->usage.completion_tokens, j->tok_streamed);
        hs__keyring_settle(&j->s->keys, j->tenant, j->tok_charged, used, hs__now_ms());
    }
    if (j->stream) {
        HS_LOG_INFO("req=%llu stream closed (prompt %d, completion %d, cached %d tokens)",
                    (unsigned long long)j->id, j->usage.prompt_tokens, j->usage.completion_tokens,
                    j->usage.cached_tokens);
    }
    if (j->ch) {
        for (int32_t i = 0; i < j->n_h * j->n; i++) {
            struct choice *c = &j->ch[i];
            hs__buf_free(&c->text);
            for (int k = 0; k < 4; k++) {
                hs__buf_free(&c->lp[k]);
            }
            hs__tool_parser_free(&c->tp);
            hs__reasoning_split_free(&c->rp);
            hs__buf_free(&c->reasoning);
            hs__buf_free(&c->content);
            for (int32_t k = 0; k < c->n_calls; k++) {
                hs__buf_free(&c->calls[k].name);
                hs__buf_free(&c->calls[k].args);
            }
            free(c->calls);
        }
    }
    for (int32_t i = 0; i < HS__API_MAX_PROMPTS; i++) {
        free(j->echo[i]);
    }
    free(j->ch);
    hs__buf_free(&j->out);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

/* ---- JSON text pieces ---- */

static void piece_json(struct hs__buf *b, const struct hs_vocab *v, hs_token t, bool bytes)
{
    char piece[256];
    size_t n = HS_MIN(hs_vocab_piece(v, t, true, piece, sizeof(piece)), sizeof(piece));
    LIT(b, "\"token\":");
    hs__buf_json_str(b, piece, n);
    if (bytes) {
        LIT(b, ",\"bytes\":[");
        for (size_t i = 0; i < n; i++) {
            hs__buf_printf(b, i ? ",%u" : "%u", (unsigned)(unsigned char)piece[i]);
        }
        LIT(b, "]");
    }
}

static double finite_lp(float lp)
{
    return isfinite(lp) ? (double)lp : -9999.0;
}

/* Appends one event's logprobs to c->lp (comma-separated entries). */
static void add_logprobs(struct hs__job *j, struct choice *c, const struct hs_engine_event *ev)
{
    const struct hs_vocab *v = j->s->vocab;
    for (int32_t t = 0; t < ev->n_tokens; t++) {
        const struct hs_token_logprob *lp = &ev->logprobs[t];
        c->sum_logprob += finite_lp(lp->logprob);
        if (!j->want_lp) {
            continue;
        }
        if (j->kind == HS__API_CHAT) {
            struct hs__buf *b = &c->lp[0];
            LIT(b, b->len ? ",{" : "{");
            piece_json(b, v, lp->token, true);
            hs__buf_printf(b, ",\"logprob\":%.9g,\"top_logprobs\":[", finite_lp(lp->logprob));
            for (int32_t k = 0; k < lp->n_top; k++) {
                LIT(b, k ? ",{" : "{");
                piece_json(b, v, lp->top_ids[k], true);
                hs__buf_printf(b, ",\"logprob\":%.9g}", finite_lp(lp->top_logprobs[k]));
            }
            LIT(b, "]}");
            continue;
        }
        char piece[256];
        size_t n = HS_MIN(hs_vocab_piece(v, lp->token, true, piece, sizeof(piece)), sizeof(piece));
        bool first = c->lp[0].len == 0;
        if (!first) {
            for (int k = 0; k < 4; k++) {
                LIT(&c->lp[k], ",");
            }
        }
        hs__buf_json_str(&c->lp[0], piece, n);
        hs__buf_printf(&c->lp[1], "%.9g", finite_lp(lp->logprob));
        /* an object keyed by token text: a text seen twice keeps its first (higher) logprob */
        char tops[MAX_TOP][256];
        size_t n_tops[MAX_TOP];
        int32_t w = 0;
        LIT(&c->lp[2], "{");
        for (int32_t k = 0; k < HS_MIN(lp->n_top, MAX_TOP); k++) {
            size_t m = HS_MIN(hs_vocab_piece(v, lp->top_ids[k], true, tops[w], sizeof(tops[w])),
                              sizeof(tops[w]));
            bool dup = false;
            for (int32_t q = 0; q < w && !dup; q++) {
                dup = n_tops[q] == m && !memcmp(tops[q], tops[w], m);
            }
            if (dup) {
                continue;
            }
            n_tops[w] = m;
            if (w > 0) {
                LIT(&c->lp[2], ",");
            }
            hs__buf_json_str(&c->lp[2], tops[w], m);
            hs__buf_printf(&c->lp[2], ":%.9g", finite_lp(lp->top_logprobs[k]));
            w++;
        }
        LIT(&c->lp[2], "}");
        hs__buf_printf(&c->lp[3], "%zu", c->text_offset);
        c->text_offset += n;
    }
}

/* "logprobs": null, or the object made of c's entries. */
static void logprobs_json(struct hs__job *j, struct hs__buf *b, struct choice *c)
{
    if (!j->want_lp) {
        LIT(b, "null");
    } else if (j->kind == HS__API_CHAT) {
        LIT(b, "{\"content\":[");
        hs__buf_add(b, c->lp[0].p, c->lp[0].len);
        LIT(b, "]}");
    } else {
        static const char *const keys[4] = {"tokens", "token_logprobs", "top_logprobs",
                                            "text_offset"};
        for (int k = 0; k < 4; k++) {
            hs__buf_printf(b, "%s\"%s\":[", k ? "," : "{", keys[k]);
            hs__buf_add(b, c->lp[k].p, c->lp[k].len);
            LIT(b, "]");
        }
        LIT(b, "}");
    }
    for (int k = 0; k < 4; k++) {
        c->lp[k].len = 0;
    }
}

/* OpenAI's finish reasons; a choice cut by timeout, drain or error has none (the request's
 * error says why). */
static const char *finish_str(enum hs_finish_reason f)
{
    return f == HS_FINISH_STOP || f == HS_FINISH_LENGTH ? hs_finish_reason_str(f) : NULL;
}

/* A choice that stopped after writing tool calls finished with "tool_calls". */
static void finish_json(struct hs__buf *b, enum hs_finish_reason f, int32_t n_calls)
{
    const char *s = f == HS_FINISH_STOP && n_calls > 0 ? "tool_calls" : finish_str(f);
    hs__buf_printf(b, s ? "\"%s\"" : "null", s);
}

static void head_json(struct hs__job *j, struct hs__buf *b, const char *object)
{
    hs__buf_printf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", j->cid,
                   object, (long long)j->created);
    hs__buf_json_str(b, j->s->model_name, strlen(j->s->model_name));
}

static void usage_json(struct hs__buf *b, const struct hs__job *j)
{
    const struct hs_engine_usage *u = &j->usage;
    hs__buf_printf(b,
                   "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":%d}",
                   u->prompt_tokens, u->completion_tokens, u->prompt_tokens + u->completion_tokens,
                   u->cached_tokens);
    if (j->kind == HS__API_CHAT) {
        hs__buf_printf(b, ",\"completion_tokens_details\":{\"reasoning_tokens\":%d}",
                       j->reasoning_tokens);
    }
    LIT(b, "}");
    if (j->rs.auto_class >= 0) { /* the extension: what auto mode chose */
        hs__buf_printf(b, ",\"hetserve\":{\"reasoning_mode\":\"%s\"}",
                       j->rs.auto_long ? "long" : "short");
    }
}

/* ---- reasoning ---- */

static const char *reasoning_key(const struct hs__job *j)
{
    return j->rs.format == HS__REASONING_FIELD ? "reasoning" : "reasoning_content";
}

static void sink_reasoning(void *user, const char *s, size_t n)
{
    struct choice *c = user;
    struct hs__job *j = c->job;
    if (!j->stream) {
        hs__buf_add(&c->reasoning, s, n);
        return;
    }
    struct hs__buf *b = &j->out;
    LIT(b, "data: ");
    head_json(j, b, "chat.completion.chunk");
    hs__buf_printf(b, ",\"choices\":[{\"index\":%d,\"delta\":{", (int)c->idx);
    if (!c->role_sent) {
        LIT(b, "\"role\":\"assistant\",");
        c->role_sent = true;
    }
    hs__buf_printf(b, "\"%s\":", reasoning_key(j));
    hs__buf_json_str(b, s, n);
    LIT(b, "},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

static void sink_answer(void *user, const char *s, size_t n)
{
    struct choice *c = user;
    hs__buf_add(&c->content, s, n);
}

/* Takes the thinking out of ev's text: *out is ev with only the answer's text. */
static void reasoning_event(struct hs__job *j, struct choice *c, const struct hs_engine_event *ev,
                            struct hs_engine_event *out)
{
    const struct hs__reasoning_sink sink = {sink_reasoning, sink_answer, c};
    *out = *ev;
    if (!c->rp_on) {
        return;
    }
    c->content.len = 0;
    hs__reasoning_split_feed(&c->rp, ev->text ? ev->text : "", ev->n_text, &sink);
    if (ev->finish_reason != HS_FINISH_NONE) {
        hs__reasoning_split_finish(&c->rp, &sink);
    }
    if (c->rp.hold.oom || c->content.oom) {
        (j->stream ? &j->out : &c->text)->oom = true;
    }
    out->text = c->content.p ? c->content.p : "";
    out->n_text = c->content.len;
}

/* ,"reasoning_content":"..." of a non-streamed message (nothing when there was none). */
static void reasoning_json(const struct hs__job *j, struct hs__buf *b, const struct choice *c)
{
    if (c->rp_on && c->reasoning.len > 0) {
        hs__buf_printf(b, ",\"%s\":", reasoning_key(j));
        hs__buf_json_str(b, c->reasoning.p, c->reasoning.len);
    }
    b->oom |= c->reasoning.oom;
}

/* ---- streams ---- */

static void stream_chunk(struct hs__job *j, int32_t idx, struct choice *c, const char *text,
                         size_t n_text, enum hs_finish_reason fin, bool with_lp)
{
    struct hs__buf *b = &j->out;
    const bool chat = j->kind == HS__API_CHAT;
    LIT(b, "data: ");
    head_json(j, b, chat ? "chat.completion.chunk" : "text_completion");
    hs__buf_printf(b, ",\"choices\":[{\"index\":%d,", (int)idx);
    if (chat) {
        LIT(b, "\"delta\":{");
        bool comma = false;
        if (!c->role_sent) {
            LIT(b, "\"role\":\"assistant\"");
            c->role_sent = comma = true;
        }
        if (n_text > 0 || !finish_str(fin)) {
            if (comma) {
                LIT(b, ",");
            }
            LIT(b, "\"content\":");
            hs__buf_json_str(b, text, n_text);
        }
        LIT(b, "},\"logprobs\":");
    } else {
        LIT(b, "\"text\":");
        hs__buf_json_str(b, text, n_text);
        LIT(b, ",\"logprobs\":");
    }
    if (with_lp) {
        logprobs_json(j, b, c);
    } else {
        LIT(b, "null");
    }
    LIT(b, ",\"finish_reason\":");
    finish_json(b, fin, c->tp.n_calls);
    LIT(b, "}]}\n\n");
}

/* ---- tool calls ---- */

/* A streamed chunk of choice c: role (first time), then content text or a tool_calls entry
 * (call: JSON text of one entry), logprobs when pending, finish reason. */
static void tool_chunk(struct choice *c, const char *text, size_t n_text, const char *call,
                       size_t n_call, enum hs_finish_reason fin)
{
    struct hs__job *j = c->job;
    struct hs__buf *b = &j->out;
    LIT(b, "data: ");
    head_json(j, b, "chat.completion.chunk");
    hs__buf_printf(b, ",\"choices\":[{\"index\":%d,\"delta\":{", (int)c->idx);
    bool comma = false;
    if (!c->role_sent) {
        LIT(b, "\"role\":\"assistant\"");
        c->role_sent = comma = true;
    }
    if (text) {
        LIT(b, comma ? ",\"content\":" : "\"content\":");
        hs__buf_json_str(b, text, n_text);
    } else if (call) {
        LIT(b, comma ? ",\"tool_calls\":[" : "\"tool_calls\":[");
        hs__buf_add(b, call, n_call);
        LIT(b, "]");
    }
    LIT(b, "},\"logprobs\":");
    if (c->lp_pending) {
        logprobs_json(j, b, c);
        c->lp_pending = false;
    } else {
        LIT(b, "null");
    }
    LIT(b, ",\"finish_reason\":");
    finish_json(b, fin, c->tp.n_calls);
    LIT(b, "}]}\n\n");
}

static void sink_content(void *user, const char *s, size_t n)
{
    struct choice *c = user;
    if (c->job->stream) {
        tool_chunk(c, s, n, NULL, 0, HS_FINISH_NONE);
    } else {
        hs__buf_add(&c->text, s, n);
    }
}

static void sink_call(void *user, int32_t index, const char *id, const char *name, size_t n_name)
{
    struct choice *c = user;
    if (c->job->stream) {
        struct hs__buf e = {0};
        hs__buf_printf(&e,
                       "{\"index\":%d,\"id\":\"%s\",\"type\":\"function\",\"function\":"
                       "{\"name\":",
                       (int)index, id);
        hs__buf_json_str(&e, name, n_name);
        LIT(&e, ",\"arguments\":\"\"}}");
        c->job->out.oom |= e.oom;
        tool_chunk(c, NULL, 0, e.p ? e.p : "", e.len, HS_FINISH_NONE);
        hs__buf_free(&e);
        return;
    }
    if (c->n_calls == c->cap_calls) {
        int32_t cap = c->cap_calls ? 2 * c->cap_calls : 4;
        struct call *q = realloc(c->calls, (size_t)cap * sizeof(*q));
        if (!q) {
            c->text.oom = true;
            return;
        }
        c->calls = q;
        c->cap_calls = cap;
    }
    struct call *k = &c->calls[c->n_calls++];
    *k = (struct call){0};
    snprintf(k->id, sizeof(k->id), "%s", id);
    hs__buf_add(&k->name, name, n_name);
    hs__buf_add(&k->args, "", 0);
}

static void sink_args(void *user, int32_t index, const char *s, size_t n)
{
    struct choice *c = user;
    if (c->job->stream) {
        struct hs__buf e = {0};
        hs__buf_printf(&e, "{\"index\":%d,\"function\":{\"arguments\":", (int)index);
        hs__buf_json_str(&e, s, n);
        LIT(&e, "}}");
        c->job->out.oom |= e.oom;
        tool_chunk(c, NULL, 0, e.p ? e.p : "", e.len, HS_FINISH_NONE);
        hs__buf_free(&e);
        return;
    }
    if (index < c->n_calls) {
        hs__buf_add(&c->calls[index].args, s, n);
    }
}

/* Feeds an event's text to the tool-call parser of c (and finishes it on the last one). */
static void tool_event(struct hs__job *j, struct choice *c, const struct hs_engine_event *ev)
{
    const struct hs__tool_sink sink = {sink_content, sink_call, sink_args, c};
    c->lp_pending = j->stream && j->want_lp && ev->logprobs;
    hs__tool_parser_feed(&c->tp, ev->text ? ev->text : "", ev->n_text, &sink);
    if (ev->finish_reason != HS_FINISH_NONE) {
        hs__tool_parser_finish(&c->tp, &sink);
    }
    if (c->tp.oom) {
        (j->stream ? &j->out : &c->text)->oom = true;
    }
    if (!j->stream) {
        return;
    }
    bool normal_end = finish_str(ev->finish_reason) != NULL;
    if (normal_end || c->lp_pending || !c->role_sent) {
        tool_chunk(c, normal_end ? NULL : "", 0, NULL, 0, ev->finish_reason);
    }
}

/* The message of a non-streamed choice with tool calls: content (null when empty) and
 * tool_calls. */
static void tool_message(struct hs__buf *b, struct choice *c)
{
    LIT(b, "\"message\":{\"role\":\"assistant\"");
    reasoning_json(c->job, b, c);
    LIT(b, ",\"content\":");
    if (c->text.len > 0 || c->n_calls == 0) {
        hs__buf_json_str(b, c->text.p ? c->text.p : "", c->text.len);
    } else {
        LIT(b, "null");
    }
    if (c->n_calls > 0) {
        LIT(b, ",\"tool_calls\":[");
        for (int32_t k = 0; k < c->n_calls; k++) {
            struct call *x = &c->calls[k];
            hs__buf_printf(b, "%s{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":",
                           k ? "," : "", x->id);
            hs__buf_json_str(b, x->name.p ? x->name.p : "", x->name.len);
            LIT(b, ",\"arguments\":");
            hs__buf_json_str(b, x->args.p ? x->args.p : "", x->args.len);
            LIT(b, "}}");
            b->oom |= x->name.oom || x->args.oom;
        }
        LIT(b, "]");
    }
    LIT(b, "}");
}

static void stream_event(struct hs__job *j, int32_t hi, const struct hs_engine_event *ev)
{
    int32_t idx = hi * j->n + ev->choice;
    struct choice *c = &j->ch[idx];
    if (j->echo[hi] && !c->echo_sent) {
        c->echo_sent = true;
        stream_chunk(j, idx, c, j->echo[hi], j->n_echo[hi], HS_FINISH_NONE, false);
    }
    if (ev->logprobs) {
        add_logprobs(j, c, ev);
    }
    if (c->tp_on) {
        tool_event(j, c, ev);
        return;
    }
    bool normal_end = finish_str(ev->finish_reason) != NULL;
    const bool no_tokens = ev->n_tokens == 0 || (c->rp_on && !(j->want_lp && ev->logprobs));
    if (ev->n_text == 0 && no_tokens && !normal_end && c->role_sent) {
        return; /* nothing a client could use */
    }
    stream_chunk(j, idx, c, ev->text ? ev->text : "", ev->n_text, ev->finish_reason,
                 j->want_lp && ev->logprobs);
}

/* ---- events ---- */

static void handle_event(struct hs__job *j, int32_t hi, const struct hs_engine_event *ev)
{
    if (ev->type == HS_EVENT_DONE) {
        j->h_done[hi] = true;
        j->n_done++;
        j->usage.prompt_tokens += ev->usage.prompt_tokens;
        j->usage.completion_tokens += ev->usage.completion_tokens;
        j->usage.cached_tokens += ev->usage.cached_tokens;
        j->reasoning_tokens += ev->usage.reasoning_tokens; /* the engine's tracker counts */
        if (ev->status != HS_OK && j->fail_status == HS_OK) {
            j->fail_status = ev->status;
            j->fail_detail = ev->detail;
        }
        if (hi == 0) {
            j->ttft_ms = ev->ttft_ms;
        }
        if (j->n_done == j->n_h && j->rs.auto_long && j->fail_status == HS_OK) {
            hs__reasoning_auto_record(j->rs.auto_class, j->reasoning_tokens / HS_MAX(1, j->n));
        }
        return;
    }
    j->tok_streamed += ev->n_tokens;
    struct choice *c = &j->ch[hi * j->n + ev->choice];
    struct hs_engine_event ra;
    if (j->kind == HS__API_CHAT) {
        reasoning_event(j, c, ev, &ra);
        ev = &ra;
    }
    if (ev->finish_reason != HS_FINISH_NONE) {
        c->fin = ev->finish_reason;
        j->any_timeout |= ev->finish_reason == HS_FINISH_TIMEOUT;
        j->any_canceled |= ev->finish_reason == HS_FINISH_CANCELED;
    }
    if (j->stream) {
        stream_event(j, hi, ev);
        return;
    }
    if (c->tp_on) {
        tool_event(j, c, ev);
    } else {
        hs__buf_add(&c->text, ev->text ? ev->text : "", ev->n_text);
    }
    if (ev->logprobs) {
        add_logprobs(j, c, ev);
    }
}

/* Takes every event that is ready, without waiting. */
static void pump(struct hs__job *j)
{
    struct hs_engine_event ev;
    for (int32_t i = 0; i < j->n_h; i++) {
        while (!j->h_done[i] && hs_engine_poll(j->h[i], &ev) == HS_OK) {
            handle_event(j, i, &ev);
        }
    }
}

/* Why a finished request failed, as HTTP: 0 when it did not. */
static int failure(const struct hs__job *j, const char **msg)
{
    if (j->fail_status != HS_OK) {
        *msg = j->fail_detail ? j->fail_detail : hs_status_str(j->fail_status);
        return hs_api_http_status(j->fail_status);
    }
    if (j->any_timeout) {
        *msg = "the request did not finish within its time limit (--timeout)";
        return 504;
    }
    if (j->any_canceled) {
        *msg = "the server is shutting down; retry on another replica";
        return 503;
    }
    return 0;
}

static void stream_finish(struct hs__job *j)
{
    const char *msg = NULL;
    int http = failure(j, &msg);
    if (http) {
        json_t *e = hs__error_body(http, NULL, NULL, msg);
        char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        if (!text) {
            j->out.oom = true;
            return;
        }
        hs__buf_printf(&j->out, "data: %s\n\n", text);
        free(text);
    }
    if (j->include_usage) {
        LIT(&j->out, "data: ");
        head_json(j, &j->out,
                  j->kind == HS__API_CHAT ? "chat.completion.chunk" : "text_completion");
        LIT(&j->out, ",\"choices\":[],\"usage\":");
        usage_json(&j->out, j);
        LIT(&j->out, "}\n\n");
    }
    LIT(&j->out, "data: [DONE]\n\n");
    j->finished = true;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct hs__job *j = cls;
    (void)pos;
    for (;;) {
        if (j->out.oom) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (j->out_pos < j->out.len) {
            size_t n = HS_MIN(max, j->out.len - j->out_pos);
            memcpy(buf, j->out.p + j->out_pos, n);
            j->out_pos += n;
            if (j->out_pos == j->out.len) {
                j->out_pos = j->out.len = 0;
            }
            return (ssize_t)n;
        }
        if (j->finished) {
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (atomic_load(&j->gone) || atomic_load(&j->s->stopping)) {
            return MHD_CONTENT_READER_END_WITH_ERROR; /* the release in job_free cancels */
        }
        if (j->n_done == j->n_h) {
            stream_finish(j);
            continue;
        }
        job_clear_pending(j);
        size_t before = j->out.len;
        int32_t done_before = j->n_done;
        pump(j);
        if (j->out.len == before && j->n_done == done_before && job_wait(j)) {
            return 0; /* suspended: the engine's notify resumes us */
        }
    }
}

/* ---- non-streamed answers ---- */

/* The best n_ret of prompt hi's choices by cumulative logprob (ties: lower index first). */
static void rank_choices(const struct hs__job *j, int32_t hi, int32_t *order)
{
    for (int32_t i = 0; i < j->n; i++) {
        order[i] = hi * j->n + i;
    }
    if (j->n == j->n_ret) {
        return;
    }
    for (int32_t i = 1; i < j->n; i++) {
        int32_t x = order[i], k = i;
        while (k > 0 && j->ch[order[k - 1]].sum_logprob < j->ch[x].sum_logprob) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = x;
    }
}

/* The whole body as text; each choice's buffers are freed once copied, so the peak is about the
 * answer's size plus one choice. */
static enum MHD_Result respond(struct hs_api_server *s, struct MHD_Connection *c,
                               struct hs__req *rq, struct hs__job *j)
{
    const char *msg = NULL;
    int http = failure(j, &msg);
    if (http) {
        return hs__send_error(s, c, rq, http, NULL, "generation failed: %s", msg);
    }
    const bool chat = j->kind == HS__API_CHAT;
    struct hs__buf b = {0};
    head_json(j, &b, chat ? "chat.completion" : "text_completion");
    LIT(&b, ",\"choices\":[");
    int32_t order[HS_ENGINE_MAX_CHOICES];
    for (int32_t hi = 0, out = 0; hi < j->n_h; hi++) {
        rank_choices(j, hi, order);
        for (int32_t r = 0; r < j->n_ret; r++, out++) {
            struct choice *ch = &j->ch[order[r]];
            hs__buf_printf(&b, "%s{\"index\":%d,", out ? "," : "", (int)out);
            if (ch->tp_on) {
                tool_message(&b, ch);
            } else if (chat) {
                LIT(&b, "\"message\":{\"role\":\"assistant\"");
                reasoning_json(j, &b, ch);
                LIT(&b, ",\"content\":");
            } else {
                LIT(&b, "\"text\":");
            }
            if (ch->tp_on) {
                /* the message is complete */
            } else if (j->echo[hi]) {
                struct hs__buf t = {0};
                hs__buf_add(&t, j->echo[hi], j->n_echo[hi]);
                hs__buf_add(&t, ch->text.p ? ch->text.p : "", ch->text.len);
                hs__buf_json_str(&b, t.p ? t.p : "", t.len);
                b.oom |= t.oom;
                hs__buf_free(&t);
            } else {
                hs__buf_json_str(&b, ch->text.p ? ch->text.p : "", ch->text.len);
            }
            if (chat && !ch->tp_on) {
                LIT(&b, "},\"logprobs\":");
            } else {
                LIT(&b, ",\"logprobs\":");
            }
            logprobs_json(j, &b, ch);
            LIT(&b, ",\"finish_reason\":");
            finish_json(&b, ch->fin, ch->n_calls);
            LIT(&b, "}");
            hs__buf_free(&ch->text);
            for (int k = 0; k < 4; k++) {
                hs__buf_free(&ch->lp[k]);
            }
        }
    }
    LIT(&b, "],\"usage\":");
    usage_json(&b, j);
    LIT(&b, "}");
    bool oom = b.oom;
    for (int32_t i = 0; i < j->n_h * j->n; i++) {
        oom |= j->ch[i].text.oom || j->ch[i].lp[0].oom || j->ch[i].lp[1].oom ||
               j->ch[i].lp[2].oom || j->ch[i].lp[3].oom;
    }
    if (oom) {
        hs__buf_free(&b);
        return hs__send_error(s, c, rq, 503, NULL, "out of memory");
    }
    HS_LOG_INFO("req=%llu done (prompt %d, completion %d, cached %d tokens, ttft %.1f ms)",
                (unsigned long long)j->id, j->usage.prompt_tokens, j->usage.completion_tokens,
                j->usage.cached_tokens, j->ttft_ms);
    return hs__send_text(s, c, rq, 200, "application/json", b.p, b.len, NULL, NULL);
}

static enum MHD_Result engine_start(struct hs_api_server *s, struct MHD_Connection *c,
                                    struct hs__req *rq, struct hs__job *j, struct hs__api_req *req);

static void req_drop(struct hs__api_req *req)
{
    hs__api_req_free(req);
    free(req);
}

enum MHD_Result hs__generate_resume(struct hs_api_server *s, struct MHD_Connection *c,
                                    struct hs__req *rq)
{
    struct hs__job *j = rq->job;
    for (;;) {
        if (atomic_load(&j->gone) || atomic_load(&s->stopping)) {
            rq->status = 499; /* nobody to answer, or no time to */
            return MHD_NO;
        }
        job_clear_pending(j);
        if (j->vtask) {
            struct hs__api_req *req;
            struct hs__api_err perr;
            hs_status st;
            if (!hs__api_vision_task_take(j->vtask, &req, &st, &perr)) {
                if (job_wait(j)) {
                    return MHD_YES; /* the encoder's notify resumes us */
                }
                continue;
            }
            j->vtask = NULL;
            if (st != HS_OK) {
                req_drop(req);
                j->tok_prompt = 0;
                return hs__send_error_ex(s, c, rq, perr.http, perr.param, NULL, NULL, NULL,
                                         perr.message);
            }
            return engine_start(s, c, rq, j, req);
        }
        pump(j);
        if (j->n_done == j->n_h) {
            return respond(s, c, rq, j);
        }
        if (job_wait(j)) {
            return MHD_YES;
        }
    }
}

/* ---- start ---- */

/* What a request may cost a key's tokens-per-minute budget, as OpenAI counts it: its prompts
 * plus the most every choice may generate (max_tokens, or the rest of the context). */
static void token_estimate(const struct hs_api_server *s, const struct hs__api_req *r,
                           int64_t *prompt, int64_t *need)
{
    const int64_t n_ctx = s->pctx.n_ctx;
    *prompt = 0;
    *need = 0;
    for (int32_t i = 0; i < r->n_prompts; i++) {
        int64_t room = n_ctx > 0 ? HS_MAX(n_ctx - r->prompts[i].n, 1) : INT32_MAX;
        int64_t mt = r->er.max_tokens > 0 ? HS_MIN((int64_t)r->er.max_tokens, room) : room;
        *prompt += r->prompts[i].n;
        *need += r->prompts[i].n + (int64_t)r->er.n * mt;
    }
}

/* Submits req's prompts (their images encoded) to the engine and starts the answer; req is
 * freed here. */
static enum MHD_Result engine_start(struct hs_api_server *s, struct MHD_Connection *c,
                                    struct hs__req *rq, struct hs__job *j, struct hs__api_req *req)
{
    for (int32_t i = 0; i < req->n_prompts; i++) {
        struct hs_error err = {0};
        req->er.prompt = req->prompts[i].ids;
        req->er.n_prompt = req->prompts[i].n;
        struct hs_engine_handle *h = NULL;
        hs_status st = hs_engine_submit(s->eng, &req->er, &h, &err);
        if (st != HS_OK) {
            req_drop(req);
            j->tok_prompt = 0; /* refused: the key's tokens come back whole (on_completed frees
                                * the job) */
            int http = hs_api_http_status(st);
            const char *param = strstr(err.message, "prompt") ? "prompt" : NULL;
            if (st == HS_E_BUSY) {
                return hs__send_error(s, c, rq, http, NULL,
                                      "the server is busy (request queue full); retry later");
            }
            if (st == HS_E_CANCELED) {
                return hs__send_error(s, c, rq, http, NULL, "the server is shutting down");
            }
            return hs__send_error(s, c, rq, http, param, "%s",
                                  err.message[0] ? err.message : hs_status_str(st));
        }
        pthread_mutex_lock(&s->conns_mu); /* the reaper's hs__job_client_gone reads them */
        j->h[i] = h;
        j->n_h = i + 1;
        pthread_mutex_unlock(&s->conns_mu);
        j->echo[i] = req->echo_text[i]; /* taken */
        j->n_echo[i] = req->n_echo_text[i];
        req->echo_text[i] = NULL;
    }
    req_drop(req);
    if (atomic_load(&j->gone)) {
        job_cancel(j); /* the client left while we submitted */
    }
    if (!j->stream) {
        return hs__generate_resume(s, c, rq);
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, j, NULL);
    if (!r) {
        return MHD_NO; /* on_completed frees the job */
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no"); /* nginx: pass events at once */
    return hs__queue_response(s, c, rq, 200, r);
}

enum MHD_Result hs__generate_start(struct hs_api_server *s, struct MHD_Connection *c,
                                   struct hs__req *rq, enum hs__api_kind kind)
{
    /* on the heap: a request with images to encode waits for the encoder's thread */
    struct hs__api_req *req = malloc(sizeof(*req));
    if (!req) {
        return hs__send_error(s, c, rq, 503, NULL, "out of memory");
    }
    struct hs__api_err perr = {0};
    hs_status st =
        hs__api_parse(&s->pctx, kind, rq->body.p ? rq->body.p : "", rq->body.len, req, &perr);
    if (st != HS_OK) {
        req_drop(req);
        return hs__send_error_ex(s, c, rq, perr.http ? perr.http : 400, perr.param, perr.code, NULL,
                                 NULL, perr.message);
    }
    int64_t tok_prompt = 0, tok_need = 0;
    if (rq->tenant > 0 && s->keys.limited) {
        token_estimate(s, req, &tok_prompt, &tok_need);
        struct hs__rl_refusal why;
        if (!hs__keyring_charge(&s->keys, rq->tenant, 0, tok_need, hs__now_ms(), &why)) {
            req_drop(req);
            return hs__rl_refuse(s, c, rq, &why);
        }
    }
    struct hs__job *j = calloc(1, sizeof(*j));
    if (!j || !(j->ch = calloc((size_t)(req->n_prompts * req->er.n), sizeof(*j->ch)))) {
        free(j);
        req_drop(req);
        hs__keyring_settle(&s->keys, rq->tenant, tok_need, 0, hs__now_ms());
        return hs__send_error(s, c, rq, 503, NULL, "out of memory");
    }
    pthread_mutex_init(&j->mu, NULL);
    j->s = s;
    j->tenant = rq->tenant;
    j->tok_charged = tok_need; /* from here hs__job_free settles it */
    j->tok_prompt = tok_prompt;
    j->c = c;
    j->id = rq->id;
    j->kind = kind;
    j->stream = req->stream;
    j->include_usage = req->include_usage;
    j->tools = req->tools;
    j->rs = req->reasoning;
    for (int32_t i = 0; i < req->n_prompts * req->er.n; i++) {
        struct choice *ch = &j->ch[i];
        ch->job = j;
        ch->idx = i;
        ch->tp_on = kind == HS__API_CHAT && req->tools.parse;
        ch->rp_on = kind == HS__API_CHAT && req->reasoning.split;
        if (ch->rp_on) {
            hs__reasoning_split_init(&ch->rp, req->reasoning.open, req->reasoning.close,
                                     req->reasoning.in_block);
            hs__reasoning_split_wrap(&ch->rp, req->reasoning.answer_open,
                                     req->reasoning.answer_close);
        }
        if (ch->tp_on) {
            hs__tool_parser_init(&ch->tp, req->tools.format, req->tools.parallel,
                                 rq->id * 0x9E3779B97F4A7C15u + (uint64_t)i + (uint64_t)time(NULL));
        }
    }
    j->want_lp = req->want_logprobs;
    j->n = req->er.n;
    j->n_ret = req->n_return;
    j->created = (int64_t)time(NULL);
    snprintf(j->cid, sizeof(j->cid), "%s-%llx%06llu", kind == HS__API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)s->created, (unsigned long long)rq->id);
    req->er.id = rq->id;
    req->er.notify = job_notify;
    req->er.notify_user = j;
    req->er.cache_salt = hs__tenant_salt(s, rq->tenant, req->cache_salt, req->n_cache_salt);
    /* who asks, for the output length history: the API key's tenant and the `user` field */
    req->er.client =
        hs__tenant_salt(s, rq->tenant, req->user[0] ? req->user : NULL, strlen(req->user));
    HS_LOG_INFO("req=%llu %s: %d prompt(s), first %d tokens, n %d, max_tokens %d%s%s%s",
                (unsigned long long)rq->id, kind == HS__API_CHAT ? "chat" : "completion",
                req->n_prompts, req->prompts[0].n, req->er.n, req->er.max_tokens,
                req->stream ? ", stream" : "", req->user[0] ? ", user " : "", req->user);
    pthread_mutex_lock(&s->conns_mu);
    rq->job = j; /* from now on the reaper watches the client and stop() can wake us */
    pthread_mutex_unlock(&s->conns_mu);
    if (hs__api_vision_pending(req)) {
        /* the encoder's thread takes the images; hs__generate_resume goes on when it is done */
        if (hs__api_vision_submit(s->vision, req, job_notify, j, &j->vtask) != HS_OK) {
            req_drop(req);
            j->tok_prompt = 0;
            return hs__send_error(s, c, rq, 503, NULL, "out of memory");
        }
        return hs__generate_resume(s, c, rq);
    }
    return engine_start(s, c, rq, j, req);
}
