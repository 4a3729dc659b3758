/* api/chat.c: chat prompts. OpenAI messages are checked and normalised (roles, null content, an
 * assistant's tool calls and the tool results that answer them, as llama.cpp's and vLLM's
 * template handling does), rendered through the model's chat template with every string of the
 * request marked as client text, and tokenized so that only the template's own markup becomes
 * special tokens: a message that writes "<|im_end|>" gets those characters, not the token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "api/reasoning.h"
#include "api/request.h"
#include "api/vision.h"
#include "api/tools.h"
#include "model/chat/chat-template.h"
#include "model/tokenizer/vocab.h"

#define fail       hs__api_fail
#define NOMEM(err) fail((err), 503, NULL, "out of memory")

/* ---- JSON -> template values ---- */

struct hs_tmpl_value *hs__api_to_tmpl(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct hs_tmpl_value *o = hs_tmpl_object();
        const char *k;
        json_t *v;
        if (!o) {
            return NULL;
        }
        json_object_foreach((json_t *)j, k, v)
        {
            if (hs_tmpl_object_set(o, k, hs__api_to_tmpl(v)) != HS_OK) {
                hs_tmpl_value_destroy(o);
                return NULL;
            }
        }
        return o;
    }
    case JSON_ARRAY: {
        struct hs_tmpl_value *a = hs_tmpl_array();
        size_t i;
        json_t *v;
        if (!a) {
            return NULL;
        }
        json_array_foreach(j, i, v)
        {
            if (hs_tmpl_array_push(a, hs__api_to_tmpl(v)) != HS_OK) {
                hs_tmpl_value_destroy(a);
                return NULL;
            }
        }
        return a;
    }
    case JSON_STRING:
        return hs_tmpl_string_n(json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return hs_tmpl_int(json_integer_value(j));
    case JSON_REAL:
        return hs_tmpl_float(json_real_value(j));
    case JSON_TRUE:
        return hs_tmpl_bool(true);
    case JSON_FALSE:
        return hs_tmpl_bool(false);
    case JSON_NULL:
    default:
        return hs_tmpl_null();
    }
}

static struct hs_tmpl_value *token_text(const struct hs_vocab *v, hs_token t)
{
    const char *s = t >= 0 ? hs_vocab_token_text(v, t) : NULL;
    return hs_tmpl_string(s ? s : "");
}

/* ---- messages ---- */

static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};

/* Where image parts go: the request and its context (NULL: images are refused). */
struct img_sink {
    const struct hs__api_ctx *c;
    struct hs__api_req *r;
};

/* Image part j (image_url: a string or {"url": ...}) encoded into the request; its marker goes
 * into b. */
static hs_status image_part(struct img_sink *sink, const json_t *part, const char *param,
                            struct hs__buf *b, struct hs__api_err *err)
{
    struct hs__api_req *r = sink->r;
    const json_t *u = json_object_get(part, "image_url");
    if (json_is_object(u)) {
        u = json_object_get(u, "url");
    }
    if (!json_is_string(u)) {
        return fail(err, 400, param, "%s.image_url must be a URL string or {\"url\": ...}", param);
    }
    if (r->n_images >= HS__API_MAX_IMAGES) {
        return fail(err, 400, param, "%s: at most %d images per request", param,
                    HS__API_MAX_IMAGES);
    }
    HS_TRY(hs__api_vision_image(sink->c->vision, json_string_value(u), json_string_length(u), param,
                                &r->images[r->n_images], err));
    char marker[64];
    hs__api_vision_marker(r, r->n_images, marker);
    r->n_images++;
    hs__buf_add(b, marker, strlen(marker));
    return b->oom ? NOMEM(err) : HS_OK;
}

/* A message's content as one string: a string as it is, text parts joined (images as their
 * markers when sink takes them), null or absent "". Returns new (json_decref) or NULL with err
 * filled. */
static json_t *content_text(const json_t *content, size_t idx, struct img_sink *sink,
                            struct hs__api_err *err)
{
    char param[64];
    if (!content || json_is_null(content)) {
        json_t *s = json_string("");
        return s ? s : (NOMEM(err), NULL);
    }
    if (json_is_string(content)) {
        return json_incref((json_t *)content);
    }
    if (!json_is_array(content)) {
        snprintf(param, sizeof(param), "messages[%zu].content", idx);
        fail(err, 400, param, "%s must be a string, an array of parts or null", param);
        return NULL;
    }
    struct hs__buf b = {0};
    size_t j;
    const json_t *part;
    json_array_foreach(content, j, part)
    {
        snprintf(param, sizeof(param), "messages[%zu].content[%zu]", idx, j);
        const char *t = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !t) {
            hs__buf_free(&b);
            fail(err, 400, param, "%s must be an object with a string \"type\"", param);
            return NULL;
        }
        if (!strcmp(t, "text") || !strcmp(t, "input_text")) {
            const json_t *text = json_object_get(part, "text");
            if (!json_is_string(text)) {
                hs__buf_free(&b);
                fail(err, 400, param, "%s.text must be a string", param);
                return NULL;
            }
            hs__buf_add(&b, json_string_value(text), json_string_length(text));
            continue;
        }
        const bool image =
            !strcmp(t, "image_url") || !strcmp(t, "input_image") || !strcmp(t, "image");
        if (image && sink && sink->c->vision) {
            if (image_part(sink, part, param, &b, err) != HS_OK) {
                hs__buf_free(&b);
                return NULL;
            }
            continue;
        }
        hs__buf_free(&b);
        if (image) {
            fail(err, 400, param,
                 "%s is an image, but the loaded model has no vision support (it takes text "
                 "only)",
                 param);
        } else if (!strcmp(t, "input_audio") || !strcmp(t, "audio")) {
            fail(err, 400, param, "%s is audio, but the loaded model has no audio support", param);
        } else {
            fail(err, 400, param, "%s has unknown type \"%s\"", param, t);
        }
        return NULL;
    }
    json_t *s = b.oom ? NULL : json_stringn(b.p ? b.p : "", b.len);
    hs__buf_free(&b);
    return s ? s : (NOMEM(err), NULL);
}

/* Appends s[0..n) to the string content of message m (after sep when it is not empty). */
static hs_status append_content(json_t *m, const char *sep, const char *s, size_t n, bool before,
                                struct hs__api_err *err)
{
    const json_t *c = json_object_get(m, "content");
    struct hs__buf b = {0};
    size_t nc = json_string_length(c);
    if (before) {
        hs__buf_add(&b, s, n);
    }
    if (nc > 0) {
        if (before) {
            hs__buf_add(&b, sep, strlen(sep));
        }
        hs__buf_add(&b, json_string_value(c), nc);
        if (!before) {
            hs__buf_add(&b, sep, strlen(sep));
        }
    }
    if (!before) {
        hs__buf_add(&b, s, n);
    }
    hs_status st =
        b.oom || json_object_set_new(m, "content", json_stringn(b.p ? b.p : "", b.len)) != 0
            ? NOMEM(err)
            : HS_OK;
    hs__buf_free(&b);
    return st;
}

/* An assistant's tool_calls, checked: {"id", "type": "function", "function": {"name",
 * "arguments"}} with arguments given as JSON text parsed to a value for the template (templates
 * write them with tojson). Returns new, or NULL with err filled. */
static json_t *normalize_calls(const json_t *calls, size_t idx, struct hs__api_err *err)
{
    char param[64];
    snprintf(param, sizeof(param), "messages[%zu].tool_calls", idx);
    if (!json_is_array(calls)) {
        fail(err, 400, param, "%s must be an array", param);
        return NULL;
    }
    json_t *out = json_array();
    size_t j;
    const json_t *call;
    json_array_foreach(calls, j, call)
    {
        const json_t *fn = json_object_get(call, "function");
        const json_t *name = json_object_get(fn, "name");
        const json_t *args = json_object_get(fn, "arguments");
        const json_t *id = json_object_get(call, "id");
        if (!json_is_object(call) || !json_is_object(fn) || !json_is_string(name) ||
            (id && !json_is_null(id) && !json_is_string(id))) {
            json_decref(out);
            fail(err, 400, param,
                 "%s[%zu] must be {\"id\": string, \"type\": \"function\", \"function\": "
                 "{\"name\": string, \"arguments\": string}}",
                 param, j);
            return NULL;
        }
        json_t *a = NULL;
        if (json_is_string(args)) {
            a = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY,
                           NULL);
            if (!json_is_object(a)) { /* not an object: handed over as the text it is */
                json_decref(a);
                a = json_incref((json_t *)args);
            }
        } else {
            a = args && !json_is_null(args) ? json_deep_copy(args) : json_object();
        }
        json_t *f = json_object();
        json_t *c = json_object();
        if (!a || !f || !c || json_object_set(f, "name", (json_t *)name) ||
            json_object_set_new(f, "arguments", a) ||
            json_object_set_new(c, "type", json_string("function")) ||
            json_object_set_new(c, "function", f) ||
            (json_is_string(id) && json_object_set(c, "id", (json_t *)id)) ||
            json_array_append_new(out, c)) {
            json_decref(out);
            NOMEM(err);
            return NULL;
        }
    }
    return out;
}

/* The calls of an assistant message as text in the template family's form, after its content
 * (for templates that do not render tool_calls). */
static hs_status calls_as_text(json_t *m, const json_t *calls, enum hs__tool_format f,
                               struct hs__api_err *err)
{
    size_t j;
    const json_t *call;
    json_array_foreach(calls, j, call)
    {
        const json_t *fn = json_object_get(call, "function");
        const json_t *a = json_object_get(fn, "arguments");
        char *args = json_is_string(a) ? strdup(json_string_value(a))
                                       : json_dumps(a, JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        char *text = args ? hs__tools_call_text(f, json_string_value(json_object_get(fn, "name")),
                                                args, strlen(args))
                          : NULL;
        free(args);
        if (!text) {
            return NOMEM(err);
        }
        hs_status st = append_content(m, "\n", text, strlen(text), false, err);
        free(text);
        HS_TRY(st);
    }
    return HS_OK;
}

/* The messages as the template is given them (a new array in *out). */
static hs_status normalize(const struct hs__tools_caps *caps, const json_t *messages, json_t **out,
                           struct img_sink *sink, struct hs__api_err *err)
{
    json_t *arr = json_array();
    bool prev_tool = false; /* the last message is a tool result turned into a user message */
    if (!arr) {
        return NOMEM(err);
    }
    size_t i;
    const json_t *m;
    json_array_foreach(messages, i, m)
    {
        char param[64];
        hs_status st = HS_OK;
        snprintf(param, sizeof(param), "messages[%zu]", i);
        if (!json_is_object(m)) {
            st = fail(err, 400, param, "%s must be an object", param);
            goto fail;
        }
        const char *role = json_string_value(json_object_get(m, "role"));
        int r = -1;
        for (int k = 0; role && k < (int)HS_ARRAY_LEN(roles) && r < 0; k++) {
            r = strcmp(role, roles[k]) == 0 ? k : -1;
        }
        if (r < 0) {
            snprintf(param, sizeof(param), "messages[%zu].role", i);
            st = fail(err, 400, param,
                      "%s must be one of \"system\", \"developer\", \"user\", "
                      "\"assistant\" or \"tool\"",
                      param);
            goto fail;
        }
        json_t *content = content_text(json_object_get(m, "content"), i, sink, err);
        if (!content) {
            st = err->http == 503 ? HS_E_NOMEM : HS_E_INVAL;
            goto fail;
        }
        json_t *nm = json_object();
        if (!nm) {
            json_decref(content);
        }
        if (!nm || json_object_set_new(nm, "role", json_string(r == 1 ? "system" : role)) ||
            json_object_set_new(nm, "content", content)) {
            json_decref(nm);
            st = NOMEM(err);
            goto fail;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)m, k, v)
        {
            if (strcmp(k, "role") && strcmp(k, "content") && strcmp(k, "tool_calls") &&
                json_object_set(nm, k, v)) {
                st = NOMEM(err);
            }
        }
        const json_t *calls = json_object_get(m, "tool_calls");
        if (st == HS_OK && r == 3 && calls && !json_is_null(calls)) {
            json_t *nc = normalize_calls(calls, i, err);
            if (!nc) {
                st = err->http == 503 ? HS_E_NOMEM : HS_E_INVAL;
            } else if (json_array_size(nc) == 0) {
                json_decref(nc);
            } else if (caps->renders_calls) {
                st = json_object_set_new(nm, "tool_calls", nc) ? NOMEM(err) : HS_OK;
            } else {
                st = calls_as_text(nm, nc, caps->format, err);
                json_decref(nc);
            }
        }
        const bool as_user = r == 4 && !caps->renders_tool_role;
        if (st == HS_OK && as_user) {
            const json_t *c = json_object_get(nm, "content");
            struct hs__buf b = {0};
            hs__buf_add(&b, "<tool_response>\n", 16);
            hs__buf_add(&b, json_string_value(c), json_string_length(c));
            hs__buf_add(&b, "\n</tool_response>", 17);
            if (b.oom) {
                st = NOMEM(err);
            } else if (prev_tool) { /* results of one turn go in one user message */
                st = append_content(json_array_get(arr, json_array_size(arr) - 1), "\n", b.p, b.len,
                                    false, err);
                json_decref(nm);
                nm = NULL;
            } else if (json_object_set_new(nm, "role", json_string("user")) ||
                       json_object_set_new(nm, "content", json_stringn(b.p, b.len))) {
                st = NOMEM(err);
            }
            hs__buf_free(&b);
        }
        prev_tool = as_user;
        if (st != HS_OK || (nm && json_array_append_new(arr, nm))) {
            json_decref(st == HS_OK ? NULL : nm);
            st = st != HS_OK ? st : NOMEM(err);
            goto fail;
        }
        continue;
    fail:
        json_decref(arr);
        return st;
    }
    *out = arr;
    return HS_OK;
}

/* GENERIC templates: the tools described in the system message (a new one first when there is
 * none), or in the first user message when the template writes no system message. */
static hs_status describe_tools(const struct hs__tools_caps *caps, json_t *msgs,
                                const json_t *tools, struct hs__api_err *err)
{
    char *text = hs__tools_generic_prompt(tools);
    if (!text) {
        return NOMEM(err);
    }
    hs_status st = HS_OK;
    json_t *first = json_array_get(msgs, 0);
    const char *role = json_string_value(json_object_get(first, "role"));
    if (caps->renders_system && role && !strcmp(role, "system")) {
        st = append_content(first, "\n\n", text, strlen(text), false, err);
    } else if (caps->renders_system) {
        json_t *sys = json_pack("{s:s, s:s}", "role", "system", "content", text);
        st = !sys || json_array_insert_new(msgs, 0, sys) ? NOMEM(err) : HS_OK;
    } else {
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m)
        {
            if (!strcmp(json_string_value(json_object_get(m, "role")), "user")) {
                st = append_content(m, "\n\n", text, strlen(text), true, err);
                break;
            }
        }
    }
    free(text);
    return st;
}

static hs_status render(const struct hs__api_ctx *c, const struct hs__tools_caps *caps,
                        const json_t *messages, const json_t *kwargs, const json_t *tools,
                        const struct hs__api_tools *tr, struct img_sink *sink, char **out,
                        size_t *out_len, uint8_t **client, struct hs__api_err *err)
{
    *out = NULL;
    *out_len = 0;
    *client = NULL;
    if (!json_is_array(messages)) {
        return fail(err, 400, "messages", "messages must be an array of message objects");
    }
    if (json_array_size(messages) == 0) {
        return fail(err, 400, "messages", "messages must not be empty");
    }
    if (kwargs && !json_is_object(kwargs) && !json_is_null(kwargs)) {
        return fail(err, 400, "chat_template_kwargs", "chat_template_kwargs must be an object");
    }
    json_t *norm = NULL;
    HS_TRY(normalize(caps, messages, &norm, sink, err));
    const bool has_tools = json_is_array(tools) && json_array_size(tools) > 0;
    hs_status st = HS_OK;
    if (has_tools && !caps->renders_tools && tr && tr->choice != HS__TOOL_CHOICE_NONE) {
        st = describe_tools(caps, norm, tools, err);
    }
    struct hs_tmpl_value *ctx = hs_tmpl_object();
    struct hs_tmpl_value *msgs = st == HS_OK ? hs__api_to_tmpl(norm) : NULL;
    json_decref(norm);
    if (st != HS_OK || !ctx || !msgs) {
        hs_tmpl_value_destroy(msgs);
        st = st != HS_OK ? st : NOMEM(err);
        goto fail;
    }
    hs_tmpl_value_mark_client(msgs);
    if (!c->tmpl) {
        struct hs_error e = {0};
        st = hs_chat_template_render_chatml_marked(msgs, true, out, out_len, client, &e);
        hs_tmpl_value_destroy(msgs);
        if (st != HS_OK) {
            fail(err, st == HS_E_NOMEM ? 503 : 400, "messages", "messages: %s", e.message);
        }
        goto fail;
    }
    if (hs_tmpl_object_set(ctx, "messages", msgs) != HS_OK ||
        hs_tmpl_object_set(ctx, "add_generation_prompt", hs_tmpl_bool(true)) != HS_OK ||
        hs_tmpl_object_set(ctx, "bos_token", token_text(c->vocab, hs_vocab_bos(c->vocab))) !=
            HS_OK ||
        hs_tmpl_object_set(ctx, "eos_token", token_text(c->vocab, hs_vocab_eos(c->vocab))) !=
            HS_OK) {
        st = NOMEM(err);
        goto fail;
    }
    if (has_tools) {
        struct hs_tmpl_value *tv = hs__api_to_tmpl(tools);
        hs_tmpl_value_mark_client(tv);
        if (hs_tmpl_object_set(ctx, "tools", tv) != HS_OK) {
            st = NOMEM(err);
            goto fail;
        }
    }
    if (json_is_object(kwargs)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)kwargs, k, v)
        {
            struct hs_tmpl_value *tv = hs__api_to_tmpl(v);
            hs_tmpl_value_mark_client(tv);
            if (hs_tmpl_object_set(ctx, k, tv) != HS_OK) {
                st = NOMEM(err);
                goto fail;
            }
        }
    }
    struct hs_error e = {0};
    st = hs_chat_template_render_marked(c->tmpl, ctx, out, out_len, client, &e);
    if (st == HS_E_NOMEM) {
        NOMEM(err);
    } else if (st != HS_OK) {
        fail(err, 400, "messages", "the model's chat template failed on these messages: %s",
             e.message);
    }
fail:
    hs_tmpl_value_destroy(ctx);
    return st;
}

hs_status hs__api_chat_prompt(const struct hs__api_ctx *c, const json_t *b, struct hs__api_req *r,
                              struct hs__api_err *err)
{
    struct hs__tools_caps local;
    const struct hs__tools_caps *caps = c->tools;
    if (!caps) {
        hs__tools_probe(c->tmpl, c->vocab, &local);
        caps = &local;
    }
    char *grammar = NULL;
    HS_TRY(hs__tools_parse_request(b, caps, r->grammar != NULL, &r->tools, &grammar, err));
    if (grammar) {
        r->grammar = grammar; /* none before: tool_choice required refuses response_format */
    }
    struct hs__reasoning_req rq;
    HS_TRY(hs__reasoning_parse(c, b, &rq, err));
    /* enable_thinking reaches the template from /no_think, /think and reasoning_effort too */
    const json_t *kw0 = json_object_get(b, "chat_template_kwargs");
    json_t *kw = json_is_object(kw0) ? json_copy((json_t *)kw0) : json_object();
    if (!kw) {
        return NOMEM(err);
    }
    if (rq.thinking >= 0 && !json_object_get(kw, "enable_thinking") &&
        json_object_set_new(kw, "enable_thinking", json_boolean(rq.thinking))) {
        json_decref(kw);
        return NOMEM(err);
    }
    char *text = NULL;
    size_t n_text = 0;
    uint8_t *client = NULL;
    struct img_sink sink = {c, r};
    if (c->vision && getrandom(&r->marker_nonce, sizeof(r->marker_nonce), 0) !=
                         (ssize_t)sizeof(r->marker_nonce)) {
        r->marker_nonce = (uint64_t)(uintptr_t)r ^ (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL;
    }
    hs_status rst =
        render(c, caps, json_object_get(b, "messages"), kw0 && !json_is_object(kw0) ? kw0 : kw,
               json_object_get(b, "tools"), &r->tools, &sink, &text, &n_text, &client, err);
    json_decref(kw);
    HS_TRY(rst);
    rst = hs__reasoning_finish(c, &rq, text, n_text, r, err);
    if (rst != HS_OK) {
        free(text);
        free(client);
        return rst;
    }
    /* BOS as the model asks, unless the template wrote it already. */
    hs_token bos = hs_vocab_bos(c->vocab);
    const char *bos_text = bos >= 0 ? hs_vocab_token_text(c->vocab, bos) : NULL;
    bool add = !(bos_text && *bos_text && !strncmp(text, bos_text, strlen(bos_text)) &&
                 !(client && memchr(client, 1, strlen(bos_text))));
    r->n_prompts = 1;
    hs_status st = r->n_images > 0
                       ? hs__api_tokenize_images(c, text, n_text, add, client, r, err)
                       : hs__api_tokenize(c, text, n_text, add, client, &r->prompts[0], err);
    free(text);
    free(client);
    return st;
}
