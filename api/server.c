/* api/server.c: routes, authentication, responses and SSE streams over libmicrohttpd. */
#include "api/api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/request.h"
#include "model/chat-template.h"
#include "model/model.h"
#include "model/vocab.h"
#include "server/engine.h"

#define WAIT_SLICE_MS 50 /* channel wait between checks of the client's socket */

struct hs_api_server {
    struct MHD_Daemon *d;
    struct hs_model *model;
    struct hs_engine *eng;
    const struct hs_vocab *vocab;
    struct hs_chat_template *tmpl;
    struct hs_api_params p;
    char *api_key;
    char *model_name;
    uint16_t port;
    int64_t created;
    struct hs__api_ctx pctx;
    _Atomic uint64_t next_id;
    _Atomic int n_conns;
    _Atomic bool quiesced;
};

/* ---- status -> HTTP: the one table ---- */

static const struct {
    hs_status st;
    int http;
} status_http[] = {
    {HS_OK, 200},      {HS_E_NOMEM, 503},  {HS_E_INVAL, 400},    {HS_E_FORMAT, 400},
    {HS_E_IO, 500},    {HS_E_NOTSUP, 400}, {HS_E_BUSY, 429},     {HS_E_DEVICE, 500},
    {HS_E_RANGE, 400}, {HS_E_NOENT, 404},  {HS_E_CANCELED, 503}, {HS_E_INTERNAL, 500},
};

int hs_api_http_status(hs_status st)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(status_http); i++) {
        if (status_http[i].st == st) {
            return status_http[i].http;
        }
    }
    return 500;
}

static const char *error_type(int http)
{
    switch (http) {
    case 400:
    case 413:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 404:
        return "not_found_error";
    case 405:
        return "invalid_request_error";
    case 429:
        return "rate_limit_error";
    case 503:
        return "service_unavailable_error";
    default:
        return "server_error";
    }
}

/* ---- growable text buffer ---- */

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = HS_MAX(b->cap * 2, b->len + n + 1024);
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) {
        buf_add(b, tmp, HS_MIN((size_t)n, sizeof(tmp) - 1));
    }
}

/* ---- connection state ---- */

struct conn {
    uint64_t id;
    struct buf body;
    bool too_big;
    int status; /* answered HTTP status, for the log line */
};

static bool client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) {
        return false;
    }
    struct pollfd pfd = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&pfd, 1, 0) <= 0) {
        return false;
    }
    if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
        return true;
    }
    char ch;
    ssize_t n = recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
}

static void add_common_headers(struct hs_api_server *s, struct MHD_Response *r)
{
    if (s->p.cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    }
}

static enum MHD_Result send_text(struct hs_api_server *s, struct MHD_Connection *c, struct conn *cs,
                                 unsigned code, const char *ctype, char *text, size_t len,
                                 const char *h1, const char *v1)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, text, text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (h1) {
        MHD_add_response_header(r, h1, v1);
    }
    add_common_headers(s, r);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    cs->status = (int)code;
    return ret;
}

/* Sends j (reference stolen). */
static enum MHD_Result send_json(struct hs_api_server *s, struct MHD_Connection *c, struct conn *cs,
                                 unsigned code, json_t *j, const char *h1, const char *v1)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                            "\"param\":null,\"code\":null}}";
        struct MHD_Response *r =
            MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
        if (!r) {
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result ret = MHD_queue_response(c, 503, r);
        MHD_destroy_response(r);
        cs->status = 503;
        return ret;
    }
    return send_text(s, c, cs, code, "application/json", text, strlen(text), h1, v1);
}

static json_t *error_body(int http, const char *param, const char *message)
{
    const char *code = NULL;
    if (http == 401) {
        code = "invalid_api_key";
    } else if (http == 429) {
        code = "rate_limit_exceeded";
    } else if (http == 413) {
        code = "request_too_large";
    }
    json_t *msg = hs__api_json_str(message, strlen(message));
    return json_pack("{s:{s:o?,s:s,s:s?,s:s?}}", "error", "message", msg, "type", error_type(http),
                     "param", param && *param ? param : NULL, "code", code);
}

#if defined(__GNUC__)
__attribute__((format(printf, 6, 7)))
#endif
static enum MHD_Result
send_error(struct hs_api_server *s, struct MHD_Connection *c, struct conn *cs, int http,
           const char *param, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *h = NULL, *v = NULL;
    if (http == 429 || http == 503) {
        h = "Retry-After";
        v = "1";
    } else if (http == 401) {
        h = "WWW-Authenticate";
        v = "Bearer";
    }
    if (http >= 500) {
        HS_LOG_WARN("req=%llu error %d: %s", (unsigned long long)cs->id, http, msg);
    }
    return send_json(s, c, cs, (unsigned)http, error_body(http, param, msg), h, v);
}

/* ---- generation jobs ---- */

struct choice {
    struct buf text;
    enum hs_finish_reason fin;
    json_t *lp_content; /* chat: logprobs.content entries; completions: the four arrays */
    json_t *lp_tokens, *lp_token_logprobs, *lp_top, *lp_offset;
    size_t text_offset;
    bool role_sent;
};

struct job {
    struct hs_api_server *s;
    struct MHD_Connection *c;
    uint64_t id;
    enum hs__api_kind kind;
    bool stream, include_usage, logprobs;
    int32_t n;   /* choices per prompt */
    int32_t n_h; /* engine requests (prompts) */
    struct hs_engine_handle *h[HS__API_MAX_PROMPTS];
    bool h_done[HS__API_MAX_PROMPTS];
    int32_t n_done;
    struct choice *ch; /* [n_h * n] */
    struct hs_engine_usage usage;
    hs_status fail_status;
    double ttft_ms;
    char cid[48];
    int64_t created;
    struct buf out; /* streaming: SSE bytes not yet handed to MHD */
    size_t out_pos;
    bool finished; /* streaming: [DONE] queued */
    bool failed;   /* client gone or out of memory */
};

static void job_free(struct job *j)
{
    if (!j) {
        return;
    }
    for (int32_t i = 0; i < j->n_h; i++) {
        hs_engine_release(j->h[i]); /* cancels what has not finished */
    }
    if (j->ch) {
        for (int32_t i = 0; i < j->n_h * j->n; i++) {
            struct choice *c = &j->ch[i];
            free(c->text.p);
            json_decref(c->lp_content);
            json_decref(c->lp_tokens);
            json_decref(c->lp_token_logprobs);
            json_decref(c->lp_top);
            json_decref(c->lp_offset);
        }
    }
    free(j->ch);
    free(j->out.p);
    free(j);
}

static json_t *token_json(const struct hs_vocab *v, hs_token t, json_t **bytes)
{
    char piece[256];
    size_t n = hs_vocab_piece(v, t, true, piece, sizeof(piece));
    n = HS_MIN(n, sizeof(piece));
    if (bytes) {
        *bytes = json_array();
        for (size_t i = 0; i < n && *bytes; i++) {
            json_array_append_new(*bytes, json_integer((unsigned char)piece[i]));
        }
    }
    return hs__api_json_str(piece, n);
}

/* Logprobs of one event's tokens, appended to the choice's arrays (created on first use). */
static void add_logprobs(struct job *j, struct choice *c, const struct hs_engine_event *ev)
{
    const struct hs_vocab *v = j->s->vocab;
    for (int32_t t = 0; t < ev->n_tokens; t++) {
        const struct hs_token_logprob *lp = &ev->logprobs[t];
        if (j->kind == HS__API_CHAT) {
            if (!c->lp_content) {
                c->lp_content = json_array();
            }
            json_t *bytes, *tops = json_array();
            json_t *tok = token_json(v, lp->token, &bytes);
            for (int32_t k = 0; k < lp->n_top; k++) {
                json_t *tb;
                json_t *tt = token_json(v, lp->top_ids[k], &tb);
                json_array_append_new(tops, json_pack("{s:o?,s:f,s:o?}", "token", tt, "logprob",
                                                      (double)lp->top_logprobs[k], "bytes", tb));
            }
            json_array_append_new(c->lp_content,
                                  json_pack("{s:o?,s:f,s:o?,s:o?}", "token", tok, "logprob",
                                            isfinite(lp->logprob) ? (double)lp->logprob : -9999.0,
                                            "bytes", bytes, "top_logprobs", tops));
        } else {
            if (!c->lp_tokens) {
                c->lp_tokens = json_array();
                c->lp_token_logprobs = json_array();
                c->lp_top = json_array();
                c->lp_offset = json_array();
            }
            json_t *tok = token_json(v, lp->token, NULL);
            size_t tlen = tok ? json_string_length(tok) : 0;
            json_array_append_new(c->lp_tokens, tok);
            json_array_append_new(c->lp_token_logprobs,
                                  json_real(isfinite(lp->logprob) ? lp->logprob : -9999.0));
            json_t *top = json_object();
            for (int32_t k = 0; k < lp->n_top; k++) {
                json_t *tt = token_json(v, lp->top_ids[k], NULL);
                if (tt) {
                    json_object_set_new(top, json_string_value(tt), json_real(lp->top_logprobs[k]));
                    json_decref(tt);
                }
            }
            json_array_append_new(c->lp_top, top);
            json_array_append_new(c->lp_offset, json_integer((json_int_t)c->text_offset));
            c->text_offset += tlen;
        }
    }
}

static json_t *logprobs_json(struct job *j, struct choice *c)
{
    if (!j->logprobs) {
        return json_null();
    }
    if (j->kind == HS__API_CHAT) {
        return json_pack("{s:O}", "content", c->lp_content ? c->lp_content : json_array());
    }
    json_t *empty = json_array();
    json_t *r = json_pack("{s:O,s:O,s:O,s:O}", "tokens", c->lp_tokens ? c->lp_tokens : empty,
                          "token_logprobs", c->lp_token_logprobs ? c->lp_token_logprobs : empty,
                          "top_logprobs", c->lp_top ? c->lp_top : empty, "text_offset",
                          c->lp_offset ? c->lp_offset : empty);
    json_decref(empty);
    return r;
}

static void clear_logprobs(struct choice *c)
{
    json_decref(c->lp_content);
    json_decref(c->lp_tokens);
    json_decref(c->lp_token_logprobs);
    json_decref(c->lp_top);
    json_decref(c->lp_offset);
    c->lp_content = c->lp_tokens = c->lp_token_logprobs = c->lp_top = c->lp_offset = NULL;
}

static const char *finish_str(enum hs_finish_reason f)
{
    return f == HS_FINISH_NONE ? NULL : hs_finish_reason_str(f);
}

static json_t *usage_json(const struct hs_engine_usage *u)
{
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", u->prompt_tokens,
                     "completion_tokens", u->completion_tokens, "total_tokens",
                     u->prompt_tokens + u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", u->cached_tokens);
}

static void sse_add(struct job *j, json_t *chunk)
{
    char *text = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    json_decref(chunk);
    if (!text) {
        j->out.oom = true;
        return;
    }
    buf_add(&j->out, "data: ", 6);
    buf_add(&j->out, text, strlen(text));
    buf_add(&j->out, "\n\n", 2);
    free(text);
}

static json_t *chunk_head(struct job *j)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", j->cid, "object",
                     j->kind == HS__API_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)j->created, "model", j->s->model_name);
}

static void stream_delta(struct job *j, int32_t idx, struct choice *c,
                         const struct hs_engine_event *ev)
{
    json_t *chunk = chunk_head(j);
    json_t *choice;
    const char *fin = finish_str(ev->finish_reason);
    if (j->logprobs && ev->logprobs) {
        add_logprobs(j, c, ev);
    }
    json_t *lp = j->logprobs && (c->lp_content || c->lp_tokens) ? logprobs_json(j, c) : json_null();
    clear_logprobs(c);
    json_t *text = hs__api_json_str(ev->text ? ev->text : "", ev->n_text);
    if (j->kind == HS__API_CHAT) {
        json_t *delta = json_object();
        if (!c->role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            c->role_sent = true;
        }
        if (ev->n_text > 0 || !fin) {
            json_object_set(delta, "content", text);
        }
        choice = json_pack("{s:i,s:o?,s:o?,s:s?}", "index", idx, "delta", delta, "logprobs", lp,
                           "finish_reason", fin);
    } else {
        choice = json_pack("{s:i,s:O?,s:o?,s:s?}", "index", idx, "text", text, "logprobs", lp,
                           "finish_reason", fin);
    }
    json_decref(text);
    if (!chunk || !choice) {
        json_decref(chunk);
        json_decref(choice);
        j->out.oom = true;
        return;
    }
    json_object_set_new(chunk, "choices", json_pack("[o]", choice));
    sse_add(j, chunk);
}

static void handle_event(struct job *j, int32_t hi, const struct hs_engine_event *ev)
{
    if (ev->type == HS_EVENT_DONE) {
        j->h_done[hi] = true;
        j->n_done++;
        j->usage.prompt_tokens += ev->usage.prompt_tokens;
        j->usage.completion_tokens += ev->usage.completion_tokens;
        j->usage.cached_tokens += ev->usage.cached_tokens;
        if (ev->status != HS_OK && j->fail_status == HS_OK) {
            j->fail_status = ev->status;
        }
        if (hi == 0) {
            j->ttft_ms = ev->ttft_ms;
        }
        return;
    }
    int32_t idx = hi * j->n + ev->choice;
    struct choice *c = &j->ch[idx];
    if (ev->finish_reason != HS_FINISH_NONE) {
        c->fin = ev->finish_reason;
    }
    if (j->stream) {
        stream_delta(j, idx, c, ev);
        return;
    }
    buf_add(&c->text, ev->text ? ev->text : "", ev->n_text);
    if (j->logprobs && ev->logprobs) {
        add_logprobs(j, c, ev);
    }
}

/* Takes the events that are ready; when none was, waits up to wait_ms on one channel. */
static void pump(struct job *j, int64_t wait_ms)
{
    struct hs_engine_event ev;
    bool any = false;
    int32_t first = -1;
    for (int32_t i = 0; i < j->n_h; i++) {
        if (j->h_done[i]) {
            continue;
        }
        if (first < 0) {
            first = i;
        }
        while (!j->h_done[i] && hs_engine_poll(j->h[i], &ev) == HS_OK) {
            handle_event(j, i, &ev);
            any = true;
        }
    }
    if (!any && first >= 0 && wait_ms > 0 && hs_engine_wait(j->h[first], &ev, wait_ms) == HS_OK) {
        handle_event(j, first, &ev);
    }
}

static void stream_finish(struct job *j)
{
    if (j->fail_status != HS_OK) {
        int http = hs_api_http_status(j->fail_status);
        sse_add(j, error_body(http, NULL, hs_status_str(j->fail_status)));
    }
    if (j->include_usage) {
        json_t *chunk = chunk_head(j);
        if (chunk) {
            json_object_set_new(chunk, "choices", json_array());
            json_object_set_new(chunk, "usage", usage_json(&j->usage));
        }
        sse_add(j, chunk);
    }
    buf_add(&j->out, "data: [DONE]\n\n", 14);
    j->finished = true;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct job *j = cls;
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
        if (j->n_done == j->n_h) {
            stream_finish(j);
            continue;
        }
        size_t before = j->out.len;
        pump(j, WAIT_SLICE_MS);
        if (j->out.len == before && j->n_done < j->n_h && client_gone(j->c)) {
            HS_LOG_INFO("req=%llu client disconnected; canceling", (unsigned long long)j->id);
            return MHD_CONTENT_READER_END_WITH_ERROR; /* stream_free releases -> cancel */
        }
    }
}

static void stream_free(void *cls)
{
    struct job *j = cls;
    HS_LOG_INFO("req=%llu stream closed (prompt %d, completion %d, cached %d tokens)",
                (unsigned long long)j->id, j->usage.prompt_tokens, j->usage.completion_tokens,
                j->usage.cached_tokens);
    job_free(j);
}

static json_t *final_json(struct job *j)
{
    json_t *choices = json_array();
    for (int32_t i = 0; i < j->n_h * j->n; i++) {
        struct choice *c = &j->ch[i];
        json_t *text = hs__api_json_str(c->text.p ? c->text.p : "", c->text.len);
        json_t *choice;
        if (j->kind == HS__API_CHAT) {
            choice = json_pack("{s:i,s:{s:s,s:o?},s:o?,s:s?}", "index", i, "message", "role",
                               "assistant", "content", text, "logprobs", logprobs_json(j, c),
                               "finish_reason", finish_str(c->fin));
        } else {
            choice = json_pack("{s:i,s:o?,s:o?,s:s?}", "index", i, "text", text, "logprobs",
                               logprobs_json(j, c), "finish_reason", finish_str(c->fin));
        }
        json_array_append_new(choices, choice);
    }
    return json_pack("{s:s,s:s,s:I,s:s,s:o?,s:o?}", "id", j->cid, "object",
                     j->kind == HS__API_CHAT ? "chat.completion" : "text_completion", "created",
                     (json_int_t)j->created, "model", j->s->model_name, "choices", choices, "usage",
                     usage_json(&j->usage));
}

static enum MHD_Result handle_generate(struct hs_api_server *s, struct MHD_Connection *c,
                                       struct conn *cs, enum hs__api_kind kind)
{
    struct hs__api_req req;
    struct hs__api_err perr = {0};
    hs_status st =
        hs__api_parse(&s->pctx, kind, cs->body.p ? cs->body.p : "", cs->body.len, &req, &perr);
    if (st != HS_OK) {
        hs__api_req_free(&req);
        return send_error(s, c, cs, perr.http ? perr.http : 400, perr.param, "%s", perr.message);
    }
    struct job *j = calloc(1, sizeof(*j));
    if (!j || !(j->ch = calloc((size_t)(req.n_prompts * req.er.n), sizeof(*j->ch)))) {
        free(j);
        hs__api_req_free(&req);
        return send_error(s, c, cs, 503, NULL, "out of memory");
    }
    j->s = s;
    j->c = c;
    j->id = cs->id;
    j->kind = kind;
    j->stream = req.stream;
    j->include_usage = req.include_usage;
    j->logprobs = req.er.logprobs;
    j->n = req.er.n;
    j->created = (int64_t)time(NULL);
    snprintf(j->cid, sizeof(j->cid), "%s-%llx%06llu", kind == HS__API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)s->created, (unsigned long long)cs->id);
    req.er.id = cs->id;
    req.er.notify = NULL;
    HS_LOG_INFO("req=%llu %s: %d prompt(s), first %d tokens, n %d, max_tokens %d%s%s%s",
                (unsigned long long)cs->id, kind == HS__API_CHAT ? "chat" : "completion",
                req.n_prompts, req.prompts[0].n, req.er.n, req.er.max_tokens,
                req.stream ? ", stream" : "", req.user[0] ? ", user " : "", req.user);
    for (int32_t i = 0; i < req.n_prompts; i++) {
        struct hs_error err = {0};
        req.er.prompt = req.prompts[i].ids;
        req.er.n_prompt = req.prompts[i].n;
        st = hs_engine_submit(s->eng, &req.er, &j->h[i], &err);
        if (st != HS_OK) {
            hs__api_req_free(&req);
            job_free(j);
            int http = hs_api_http_status(st);
            const char *param = strstr(err.message, "prompt") ? "prompt" : NULL;
            if (st == HS_E_BUSY) {
                return send_error(s, c, cs, http, NULL,
                                  "the server is busy (request queue full); retry later");
            }
            if (st == HS_E_CANCELED) {
                return send_error(s, c, cs, http, NULL, "the server is shutting down");
            }
            return send_error(s, c, cs, http, param, "%s",
                              err.message[0] ? err.message : hs_status_str(st));
        }
        j->n_h = i + 1;
    }
    hs__api_req_free(&req);

    if (j->stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
                                                                   stream_reader, j, stream_free);
        if (!r) {
            job_free(j);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        add_common_headers(s, r);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        cs->status = 200;
        return ret;
    }
    while (j->n_done < j->n_h) {
        pump(j, WAIT_SLICE_MS);
        if (j->n_done < j->n_h && client_gone(c)) {
            HS_LOG_INFO("req=%llu client disconnected; canceling", (unsigned long long)j->id);
            job_free(j);
            cs->status = 499;
            return MHD_NO;
        }
    }
    if (j->fail_status != HS_OK) {
        hs_status fs = j->fail_status;
        job_free(j);
        return send_error(s, c, cs, hs_api_http_status(fs), NULL, "generation failed: %s",
                          hs_status_str(fs));
    }
    json_t *out = final_json(j);
    HS_LOG_INFO("req=%llu done (prompt %d, completion %d, cached %d tokens, ttft %.1f ms)",
                (unsigned long long)j->id, j->usage.prompt_tokens, j->usage.completion_tokens,
                j->usage.cached_tokens, j->ttft_ms);
    job_free(j);
    return send_json(s, c, cs, 200, out, NULL, NULL);
}

/* ---- small routes ---- */

static enum MHD_Result handle_models(struct hs_api_server *s, struct MHD_Connection *c,
                                     struct conn *cs)
{
    const struct hs_model_hparams *hp = hs_model_hparams(s->model);
    (void)hp;
    json_t *j = json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:{s:i,s:i,s:I,s:I}}]}", "object", "list",
                          "data", "id", s->model_name, "object", "model", "created",
                          (json_int_t)s->created, "owned_by", "hetserve", "meta", "n_ctx_train",
                          (int)hs_engine_n_ctx(s->eng), "n_vocab", (int)hs_vocab_n_tokens(s->vocab),
                          "n_params", (json_int_t)hs_model_n_params(s->model), "size",
                          (json_int_t)hs_model_size_bytes(s->model));
    return send_json(s, c, cs, 200, j, NULL, NULL);
}

static enum MHD_Result handle_health(struct hs_api_server *s, struct MHD_Connection *c,
                                     struct conn *cs)
{
    if (atomic_load(&s->quiesced)) {
        return send_json(s, c, cs, 503, json_pack("{s:s}", "status", "draining"), "Retry-After",
                         "1");
    }
    return send_json(s, c, cs, 200, json_pack("{s:s}", "status", "ok"), NULL, NULL);
}

static void metric(struct buf *b, const char *name, const char *type, const char *help,
                   const char *model, double v)
{
    buf_printf(b, "# HELP hetserve:%s %s\n# TYPE hetserve:%s %s\n", name, help, name, type);
    buf_printf(b, "hetserve:%s{model_name=\"%s\"} %.17g\n", name, model, v);
}

static void histogram(struct buf *b, const char *name, const char *help, const char *model,
                      const struct hs_engine_histogram *h)
{
    buf_printf(b, "# HELP hetserve:%s %s\n# TYPE hetserve:%s histogram\n", name, help, name);
    for (int32_t i = 0; i < h->n_buckets; i++) {
        buf_printf(b, "hetserve:%s_bucket{le=\"%g\",model_name=\"%s\"} %llu\n", name,
                   h->bounds_s[i], model, (unsigned long long)h->le[i]);
    }
    buf_printf(b, "hetserve:%s_bucket{le=\"+Inf\",model_name=\"%s\"} %llu\n", name, model,
               (unsigned long long)h->count);
    buf_printf(b, "hetserve:%s_sum{model_name=\"%s\"} %.17g\n", name, model, h->sum_s);
    buf_printf(b, "hetserve:%s_count{model_name=\"%s\"} %llu\n", name, model,
               (unsigned long long)h->count);
}

/* Hot-expert statistics of MoE models: tokens routed per (layer, expert), with the backend the
 * expert runs on, so a dashboard can see which experts are hot and where they live. */
static void moe_metrics(struct hs_api_server *s, struct buf *b)
{
    const struct hs_model_hparams *hp = hs_model_hparams(s->model);
    if (hp->router.n_expert == 0) {
        return;
    }
    buf_printf(b, "# HELP hetserve:moe_expert_tokens_total Tokens routed to each expert.\n"
                  "# TYPE hetserve:moe_expert_tokens_total counter\n");
    for (int32_t il = 0; il < hp->n_layer; il++) {
        for (int32_t e = 0; e < hp->router.n_expert; e++) {
            const char *be = hs_engine_expert_backend(s->eng, il, e);
            if (!be) {
                break; /* a dense layer */
            }
            buf_printf(b,
                       "hetserve:moe_expert_tokens_total{layer=\"%d\",expert=\"%d\","
                       "backend=\"%s\",model_name=\"%s\"} %llu\n",
                       il, e, be, s->model_name,
                       (unsigned long long)hs_engine_expert_tokens(s->eng, il, e));
        }
    }
}

/* Per-backend placement: busy and simulated seconds, bytes moved, sequences placed and KV blocks
 * held, labelled by backend and role; and the split execution's figures. */
static void placement_metrics(struct buf *b, const struct hs_engine_metrics *m, const char *mn)
{
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"backend_busy_seconds_total", "counter", "Time spent in forward-pass stages, per backend."},
        {"backend_simulated_seconds_total", "counter", "Simulated hardware time, per backend."},
        {"backend_bytes_in_total", "counter", "Bytes copied into a backend from another."},
        {"backend_bytes_out_total", "counter", "Bytes copied out of a backend to another."},
        {"backend_sequences", "gauge", "Running sequences whose KV a backend holds."},
        {"backend_kv_blocks_used", "gauge", "KV blocks a backend holds for running sequences."},
        {"backend_kv_blocks_total", "gauge", "KV blocks of a backend's pool."},
    };
    for (size_t f = 0; f < HS_ARRAY_LEN(fams); f++) {
        buf_printf(b, "# HELP hetserve:%s %s\n# TYPE hetserve:%s %s\n", fams[f].name, fams[f].help,
                   fams[f].name, fams[f].type);
        for (int32_t i = 0; i < m->n_backends; i++) {
            const struct hs_engine_backend_metrics *be = &m->backends[i];
            const double v[] = {be->busy_s, be->sim_s, (double)be->bytes_in, (double)be->bytes_out,
                                be->n_seqs, be->kv_blocks_used, be->kv_blocks_total};
            buf_printf(b, "hetserve:%s{backend=\"%s\",role=\"%s\",model_name=\"%s\"} %.9g\n",
                       fams[f].name, be->name, be->role, mn, v[f]);
        }
    }
    metric(b, "kv_migrations_total", "counter",
           "Sequences whose KV moved to the attention backend.", mn, (double)m->migrations);
    metric(b, "kv_migrated_bytes_total", "counter", "KV bytes moved between backends.", mn,
           (double)m->migrated_bytes);
    metric(b, "split_steps_total", "counter", "Forward passes that used the attention backend.", mn,
           (double)m->split.n_steps);
    metric(b, "pingpong_steps_total", "counter", "Of those, run as two ping-pong sub-batches.", mn,
           (double)m->split.n_steps_split);
    metric(b, "split_overlap_seconds_total", "counter",
           "Time both backends were busy at once in split steps.", mn, m->split.overlap_s);
    metric(b, "split_wall_seconds_total", "counter", "Wall time of the split steps' layers.", mn,
           m->split.wall_s);
    metric(b, "split_predicted_seconds_total", "counter",
           "The balancer's predicted time of those layers.", mn, m->split.predicted_s);
    metric(b, "split_prediction_abs_error_seconds_total", "counter",
           "Sum over split steps of |predicted - measured| layer time.", mn, m->split.abs_err_s);
}

static enum MHD_Result handle_metrics(struct hs_api_server *s, struct MHD_Connection *c,
                                      struct conn *cs)
{
    struct hs_engine_metrics m;
    hs_engine_get_metrics(s->eng, &m);
    struct buf b = {0};
    const char *mn = s->model_name;
    metric(&b, "num_requests_running", "gauge", "Number of requests currently running.", mn,
           m.n_running);
    metric(&b, "num_requests_waiting", "gauge", "Number of requests waiting to be processed.", mn,
           m.n_waiting);
    metric(&b, "num_sequences_running", "gauge", "Number of sequences (choices) running.", mn,
           m.n_seqs_running);
    metric(&b, "prompt_tokens_total", "counter", "Number of prefill tokens processed.", mn,
           (double)m.prompt_tokens);
    metric(&b, "generation_tokens_total", "counter", "Number of generation tokens processed.", mn,
           (double)m.generation_tokens);
    metric(&b, "kv_blocks_used", "gauge", "KV cache blocks held by running sequences.", mn,
           m.kv_blocks_used);
    metric(&b, "kv_blocks_cached", "gauge", "KV cache blocks kept only for prefix reuse.", mn,
           m.kv_blocks_cached);
    metric(&b, "kv_blocks_free", "gauge", "KV cache blocks free.", mn, m.kv_blocks_free);
    metric(&b, "kv_blocks_total", "gauge", "KV cache blocks in the pool.", mn, m.kv_blocks_total);
    metric(&b, "kv_cache_usage_perc", "gauge", "KV cache usage; 1 means 100 percent.", mn,
           m.kv_blocks_total > 0 ? (double)m.kv_blocks_used / m.kv_blocks_total : 0.0);
    metric(&b, "prefix_cache_hit_rate", "gauge",
           "Prompt tokens found in the prefix cache / prompt tokens.", mn, m.prefix_hit_rate);
    metric(&b, "prefix_cache_queries_total", "counter", "Prompt tokens looked up.", mn,
           (double)m.prompt_tokens);
    metric(&b, "prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", mn,
           (double)m.prefix_hit_tokens);
    metric(&b, "num_preemptions_total", "counter", "Cumulative number of preemptions.", mn,
           (double)m.preemptions);
    metric(&b, "request_submitted_total", "counter", "Requests accepted by the engine.", mn,
           (double)m.requests_submitted);
    metric(&b, "request_rejected_total", "counter", "Requests refused with a full queue.", mn,
           (double)m.requests_rejected);
    buf_printf(&b, "# HELP hetserve:request_success_total Finished choices by reason.\n"
                   "# TYPE hetserve:request_success_total counter\n");
    for (int r = HS_FINISH_STOP; r < HS_FINISH_COUNT; r++) {
        buf_printf(&b,
                   "hetserve:request_success_total{finished_reason=\"%s\",model_name=\"%s\"} "
                   "%llu\n",
                   hs_finish_reason_str((enum hs_finish_reason)r), mn,
                   (unsigned long long)m.requests_finished[r]);
    }
    histogram(&b, "time_to_first_token_seconds", "Histogram of time to first token in seconds.", mn,
              &m.ttft);
    histogram(&b, "time_per_output_token_seconds", "Histogram of time per output token in seconds.",
              mn, &m.tpot);
    histogram(&b, "e2e_request_latency_seconds",
              "Histogram of end to end request latency in seconds.", mn, &m.e2e);
    moe_metrics(s, &b);
    placement_metrics(&b, &m, mn);
    if (b.oom) {
        free(b.p);
        return send_error(s, c, cs, 503, NULL, "out of memory");
    }
    return send_text(s, c, cs, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len, NULL,
                     NULL);
}

static enum MHD_Result handle_tokenize(struct hs_api_server *s, struct MHD_Connection *c,
                                       struct conn *cs)
{
    struct hs__api_err perr = {0};
    json_t *b =
        hs__api_load_object(cs->body.p ? cs->body.p : "", cs->body.len, s->p.max_json_depth, &perr);
    if (!b) {
        return send_error(s, c, cs, 400, perr.param, "%s", perr.message);
    }
    const json_t *content = json_object_get(b, "content");
    const json_t *add = json_object_get(b, "add_special");
    const json_t *parse = json_object_get(b, "parse_special");
    const json_t *pieces = json_object_get(b, "with_pieces");
    if (!json_is_string(content)) {
        json_decref(b);
        return send_error(s, c, cs, 400, "content", "content must be a string");
    }
    if ((add && !json_is_boolean(add)) || (parse && !json_is_boolean(parse)) ||
        (pieces && !json_is_boolean(pieces))) {
        json_decref(b);
        return send_error(s, c, cs, 400, NULL,
                          "add_special, parse_special and with_pieces must be true or false");
    }
    size_t len = json_string_length(content), n = 0, cap = len + 8;
    hs_token *ids = malloc(cap * sizeof(hs_token));
    hs_status st = ids ? hs_tokenize(s->vocab, json_string_value(content), len, json_is_true(add),
                                     !parse || json_is_true(parse), ids, cap, &n)
                       : HS_E_NOMEM;
    if (st == HS_E_RANGE) {
        free(ids);
        cap = n;
        ids = malloc(cap * sizeof(hs_token));
        st = ids ? hs_tokenize(s->vocab, json_string_value(content), len, json_is_true(add),
                               !parse || json_is_true(parse), ids, cap, &n)
                 : HS_E_NOMEM;
    }
    json_decref(b);
    if (st != HS_OK) {
        free(ids);
        return send_error(s, c, cs, hs_api_http_status(st), "content", "cannot tokenize: %s",
                          hs_status_str(st));
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        if (json_is_true(pieces)) {
            json_array_append_new(arr, json_pack("{s:i,s:o?}", "id", ids[i], "piece",
                                                 token_json(s->vocab, ids[i], NULL)));
        } else {
            json_array_append_new(arr, json_integer(ids[i]));
        }
    }
    free(ids);
    return send_json(s, c, cs, 200, json_pack("{s:o?}", "tokens", arr), NULL, NULL);
}

static enum MHD_Result handle_detokenize(struct hs_api_server *s, struct MHD_Connection *c,
                                         struct conn *cs)
{
    struct hs__api_err perr = {0};
    json_t *b =
        hs__api_load_object(cs->body.p ? cs->body.p : "", cs->body.len, s->p.max_json_depth, &perr);
    if (!b) {
        return send_error(s, c, cs, 400, perr.param, "%s", perr.message);
    }
    const json_t *toks = json_object_get(b, "tokens");
    if (!json_is_array(toks)) {
        json_decref(b);
        return send_error(s, c, cs, 400, "tokens", "tokens must be an array of token ids");
    }
    int32_t n_vocab = hs_vocab_n_tokens(s->vocab);
    struct buf out = {0};
    size_t i;
    json_t *v;
    json_array_foreach(toks, i, v)
    {
        json_int_t t = json_is_integer(v) ? json_integer_value(v) : -1;
        if (t < 0 || t >= n_vocab) {
            json_decref(b);
            free(out.p);
            return send_error(s, c, cs, 400, "tokens", "tokens[%zu] must be a token id in [0, %d)",
                              i, (int)n_vocab);
        }
        char piece[256];
        size_t n = hs_vocab_piece(s->vocab, (hs_token)t, true, piece, sizeof(piece));
        buf_add(&out, piece, HS_MIN(n, sizeof(piece)));
    }
    json_decref(b);
    json_t *text = hs__api_json_str(out.p ? out.p : "", out.len);
    bool oom = out.oom;
    free(out.p);
    if (oom) {
        json_decref(text);
        return send_error(s, c, cs, 503, NULL, "out of memory");
    }
    return send_json(s, c, cs, 200, json_pack("{s:o?}", "content", text), NULL, NULL);
}

/* ---- routing ---- */

enum route_id { R_CHAT, R_COMPLETIONS, R_MODELS, R_HEALTH, R_METRICS, R_TOKENIZE, R_DETOKENIZE };

static const struct {
    const char *path;
    const char *method;
    enum route_id id;
    bool auth;
} routes[] = {
    {"/v1/chat/completions", "POST", R_CHAT, true},
    {"/chat/completions", "POST", R_CHAT, true},
    {"/v1/completions", "POST", R_COMPLETIONS, true},
    {"/completions", "POST", R_COMPLETIONS, true},
    {"/v1/models", "GET", R_MODELS, true},
    {"/models", "GET", R_MODELS, true},
    {"/health", "GET", R_HEALTH, false},
    {"/metrics", "GET", R_METRICS, false},
    {"/tokenize", "POST", R_TOKENIZE, true},
    {"/detokenize", "POST", R_DETOKENIZE, true},
};

/* Constant time in the key's length: no early exit on the first difference. */
static bool key_ok(const char *want, const char *got)
{
    size_t lw = strlen(want), lg = strlen(got);
    unsigned char diff = (unsigned char)(lw != lg);
    for (size_t i = 0; i < lw; i++) {
        diff |= (unsigned char)(want[i] ^ (i < lg ? got[i] : 0));
    }
    return diff == 0;
}

static bool authorized(struct hs_api_server *s, struct MHD_Connection *c)
{
    if (!s->api_key) {
        return true;
    }
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        return false;
    }
    h += 7;
    while (*h == ' ') {
        h++;
    }
    return key_ok(s->api_key, h);
}

static enum MHD_Result dispatch(struct hs_api_server *s, struct MHD_Connection *c, struct conn *cs,
                                const char *url, const char *method)
{
    size_t ulen = strcspn(url, "?");
    bool path_known = false;
    for (size_t i = 0; i < HS_ARRAY_LEN(routes); i++) {
        if (strlen(routes[i].path) != ulen || strncmp(routes[i].path, url, ulen) != 0) {
            continue;
        }
        path_known = true;
        if (s->p.cors && !strcmp(method, "OPTIONS")) {
            struct MHD_Response *r =
                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            if (!r) {
                return MHD_NO;
            }
            MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
            MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type");
            MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
            enum MHD_Result ret = MHD_queue_response(c, 204, r);
            MHD_destroy_response(r);
            cs->status = 204;
            return ret;
        }
        if (strcmp(routes[i].method, method) != 0 &&
            !(!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
            continue;
        }
        if (cs->too_big) {
            return send_error(s, c, cs, 413, NULL, "request body exceeds the limit of %zu bytes",
                              s->p.max_body_bytes);
        }
        if (routes[i].auth && !authorized(s, c)) {
            return send_error(s, c, cs, 401, NULL,
                              "missing or wrong API key (send 'Authorization: Bearer <key>')");
        }
        switch (routes[i].id) {
        case R_CHAT:
            return handle_generate(s, c, cs, HS__API_CHAT);
        case R_COMPLETIONS:
            return handle_generate(s, c, cs, HS__API_COMPLETION);
        case R_MODELS:
            return handle_models(s, c, cs);
        case R_HEALTH:
            return handle_health(s, c, cs);
        case R_METRICS:
            return handle_metrics(s, c, cs);
        case R_TOKENIZE:
            return handle_tokenize(s, c, cs);
        case R_DETOKENIZE:
            return handle_detokenize(s, c, cs);
        }
    }
    if (path_known) {
        return send_error(s, c, cs, 405, NULL, "method %s is not allowed on %.*s", method,
                          (int)HS_MIN(ulen, 200), url);
    }
    return send_error(s, c, cs, 404, NULL, "no route %s %.*s", method, (int)HS_MIN(ulen, 200), url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    struct hs_api_server *s = cls;
    struct conn *cs = *con_cls;
    (void)version;
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs) {
            return MHD_NO;
        }
        cs->id = atomic_fetch_add(&s->next_id, 1) + 1;
        *con_cls = cs;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->p.max_body_bytes) {
            return send_error(s, c, cs, 413, NULL, "request body exceeds the limit of %zu bytes",
                              s->p.max_body_bytes);
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!cs->too_big && cs->body.len + *upload_size > s->p.max_body_bytes) {
            cs->too_big = true;
            free(cs->body.p);
            cs->body = (struct buf){0};
        }
        if (!cs->too_big) {
            buf_add(&cs->body, upload_data, *upload_size);
            if (cs->body.oom) {
                return MHD_NO;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(s, c, cs, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct conn *cs = *con_cls;
    (void)cls;
    if (!cs) {
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[64] = "?";
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, addr,
                  sizeof(addr));
    }
    HS_LOG_INFO("req=%llu %s -> %d%s", (unsigned long long)cs->id, addr, cs->status,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    free(cs->body.p);
    free(cs);
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct hs_api_server *s = cls;
    (void)c;
    (void)socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->n_conns, 1);
    } else {
        atomic_fetch_sub(&s->n_conns, 1);
    }
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 0)))
#endif
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    HS_LOG_DEBUG("http: %s", msg);
}

/* ---- lifecycle ---- */

struct hs_api_params hs_api_default_params(void)
{
    return (struct hs_api_params){
        .host = "127.0.0.1",
        .port = 8080,
        .api_key = NULL,
        .model_name = NULL,
        .max_body_bytes = (size_t)4 << 20,
        .max_json_depth = 64,
        .max_connections = 256,
        .cors = false,
    };
}

hs_status hs_api_server_start(struct hs_model *model, struct hs_engine *engine,
                              const struct hs_api_params *p, struct hs_api_server **out,
                              struct hs_error *err)
{
    *out = NULL;
    hs_status st = HS_OK;
    struct hs_api_server *s = calloc(1, sizeof(*s));
    if (!s) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    s->model = model;
    s->eng = engine;
    s->vocab = hs_model_vocab(model);
    s->p = *p;
    if (!s->p.host) {
        s->p.host = "127.0.0.1";
    }
    if (s->p.max_body_bytes == 0) {
        s->p.max_body_bytes = (size_t)4 << 20;
    }
    if (s->p.max_json_depth <= 0) {
        s->p.max_json_depth = 64;
    }
    if (s->p.max_connections <= 0) {
        s->p.max_connections = 256;
    }
    s->model_name = strdup(p->model_name && *p->model_name ? p->model_name : "hetserve");
    s->api_key = p->api_key && *p->api_key ? strdup(p->api_key) : NULL;
    if (!s->model_name || (p->api_key && *p->api_key && !s->api_key)) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto fail;
    }
    s->p.api_key = s->api_key;
    s->p.model_name = s->model_name;
    s->created = (int64_t)time(NULL);

    const char *src = hs_model_chat_template(model);
    if (src && *src) {
        struct hs_error te = {0};
        if (hs_chat_template_parse(src, strlen(src), &s->tmpl, &te) != HS_OK) {
            /* Rendering chats some other way would silently change every prompt: refuse. */
            s->tmpl = NULL;
            st = hs_error_set(err, HS_E_FORMAT,
                              "the model's chat template (tokenizer.chat_template) does not "
                              "parse: %s; use a model file with a valid template",
                              te.message);
            goto fail;
        }
    }
    s->pctx =
        (struct hs__api_ctx){.vocab = s->vocab, .tmpl = s->tmpl, .max_depth = s->p.max_json_depth};

    struct sockaddr_storage ss = {0};
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s->p.host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(s->p.port);
    } else if (inet_pton(AF_INET6, s->p.host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(s->p.port);
        flags |= MHD_USE_IPv6;
    } else {
        st = hs_error_set(err, HS_E_INVAL,
                          "--host must be a numeric IPv4 or IPv6 address, got "
                          "'%.100s'",
                          s->p.host);
        goto fail;
    }
    s->d = MHD_start_daemon(flags, s->p.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->p.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
    if (!s->d) {
        st = hs_error_set(err, HS_E_IO, "cannot listen on %s port %u: %s", s->p.host,
                          (unsigned)s->p.port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->p.port;
    *out = s;
    return HS_OK;
fail:
    hs_api_server_stop(s);
    return st;
}

uint16_t hs_api_server_port(const struct hs_api_server *s)
{
    return s->port;
}

void hs_api_server_quiesce(struct hs_api_server *s)
{
    if (atomic_exchange(&s->quiesced, true)) {
        return;
    }
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET) {
        close(fd);
    }
}

bool hs_api_server_wait_idle(struct hs_api_server *s, int64_t timeout_ms)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (atomic_load(&s->n_conns) <= 0) {
            return true;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (timeout_ms >= 0 && ms >= timeout_ms) {
            return false;
        }
        struct timespec d = {0, 10 * 1000000};
        nanosleep(&d, NULL);
    }
}

void hs_api_server_stop(struct hs_api_server *s)
{
    if (!s) {
        return;
    }
    if (s->d) {
        MHD_stop_daemon(s->d);
    }
    hs_chat_template_destroy(s->tmpl);
    free(s->model_name);
    free(s->api_key);
    free(s);
}
