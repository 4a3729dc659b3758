/* api/tools.c: tool calls (api/tools.h): template probes, request fields, the call grammar, and
 * the output parser. */
#include "api/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json-schema.h"
#include "model/chat/chat-template.h"
#include "model/tokenizer/vocab.h"

#define NOMEM(err)  hs__api_fail((err), 503, NULL, "out of memory")
#define LIT(b, lit) hs__buf_add((b), (lit), strlen(lit))

const char *hs__tool_format_str(enum hs__tool_format f)
{
    static const char *const names[HS__TOOLS_FORMAT_COUNT] = {"hermes", "llama3", "mistral",
                                                              "generic"};
    return (unsigned)f < HS__TOOLS_FORMAT_COUNT ? names[f] : "unknown";
}

/* ---- probing a template ---- */

#define PROBE_TOOLS                                                                                \
    "[{\"type\": \"function\", \"function\": {\"name\": \"hs_probe_fn\", \"description\": "        \
    "\"hs probe\", \"parameters\": {\"type\": \"object\", \"properties\": {\"hs_probe_arg\": "     \
    "{\"type\": \"string\"}}, \"required\": [\"hs_probe_arg\"]}}}]"

/* Renders the messages (JSON text) with the probe tools (when with_tools); new text or NULL
 * when the template refuses. */
static char *probe_render(const struct hs_chat_template *t, const struct hs_vocab *v,
                          const char *messages, bool with_tools)
{
    json_t *m = json_loads(messages, 0, NULL);
    json_t *tools = with_tools ? json_loads(PROBE_TOOLS, 0, NULL) : NULL;
    struct hs_tmpl_value *ctx = hs_tmpl_object();
    char *out = NULL;
    size_t n = 0;
    hs_token bos = hs_vocab_bos(v), eos = hs_vocab_eos(v);
    const char *bos_text = bos >= 0 ? hs_vocab_token_text(v, bos) : NULL;
    const char *eos_text = eos >= 0 ? hs_vocab_token_text(v, eos) : NULL;
    if (m && ctx && (!with_tools || tools) &&
        hs_tmpl_object_set(ctx, "messages", hs__api_to_tmpl(m)) == HS_OK &&
        hs_tmpl_object_set(ctx, "add_generation_prompt", hs_tmpl_bool(true)) == HS_OK &&
        hs_tmpl_object_set(ctx, "bos_token", hs_tmpl_string(bos_text ? bos_text : "")) == HS_OK &&
        hs_tmpl_object_set(ctx, "eos_token", hs_tmpl_string(eos_text ? eos_text : "")) == HS_OK &&
        (!with_tools || hs_tmpl_object_set(ctx, "tools", hs__api_to_tmpl(tools)) == HS_OK)) {
        struct hs_error e = {0};
        if (hs_chat_template_render(t, ctx, &out, &n, &e) != HS_OK) {
            out = NULL;
        }
    }
    hs_tmpl_value_destroy(ctx);
    json_decref(m);
    json_decref(tools);
    return out;
}

void hs__tools_probe(const struct hs_chat_template *t, const struct hs_vocab *v,
                     struct hs__tools_caps *out)
{
    *out = (struct hs__tools_caps){.format = HS__TOOLS_GENERIC};
    if (!t) {
        out->renders_tool_role = true; /* ChatML writes any role */
        out->renders_system = true;
        return;
    }
    char *a =
        probe_render(t, v, "[{\"role\": \"user\", \"content\": \"hs-probe-question\"}]", true);
    char *b = probe_render(
        t, v,
        "[{\"role\": \"user\", \"content\": \"hs-probe-question\"}, {\"role\": \"assistant\", "
        "\"content\": \"\", \"tool_calls\": [{\"id\": \"hsProbe01\", \"type\": \"function\", "
        "\"function\": {\"name\": \"hs_probe_fn\", \"arguments\": {\"hs_probe_arg\": "
        "\"hs-probe-value\"}}}]}, {\"role\": \"tool\", \"tool_call_id\": \"hsProbe01\", \"name\": "
        "\"hs_probe_fn\", \"content\": \"hs-probe-result\"}]",
        true);
    char *c = probe_render(t, v,
                           "[{\"role\": \"system\", \"content\": \"hs-probe-system\"}, {\"role\": "
                           "\"user\", \"content\": \"hs-probe-question\"}]",
                           false);
    out->renders_tools = a && strstr(a, "hs_probe_fn");
    out->renders_calls = b && strstr(b, "hs-probe-value");
    out->renders_tool_role = b && strstr(b, "hs-probe-result");
    out->renders_system = c && strstr(c, "hs-probe-system");
    const char *ab[2] = {a ? a : "", b ? b : ""};
    for (int i = 0; i < 2 && out->format == HS__TOOLS_GENERIC; i++) {
        if (strstr(ab[i], "<tool_call>")) {
            out->format = HS__TOOLS_HERMES;
        } else if (strstr(ab[i], "[TOOL_CALLS]") || strstr(ab[i], "[AVAILABLE_TOOLS]")) {
            out->format = HS__TOOLS_MISTRAL;
        } else if (strstr(ab[i], "\"parameters\": {\"hs_probe_arg\"") ||
                   strstr(ab[i], "{\"name\": function name, \"parameters\"")) {
            out->format = HS__TOOLS_LLAMA3;
        }
    }
    if (!out->renders_tools) {
        out->format = HS__TOOLS_GENERIC; /* the tools are described in our words, our format */
    }
    free(a);
    free(b);
    free(c);
}

/* ---- texts: calls for history, the generic tools prompt ---- */

char *hs__tools_call_text(enum hs__tool_format f, const char *name, const char *args, size_t n_args)
{
    struct hs__buf b = {0};
    if (f == HS__TOOLS_MISTRAL) {
        LIT(&b, "[TOOL_CALLS] [");
    } else if (f != HS__TOOLS_LLAMA3) {
        LIT(&b, "<tool_call>\n");
    }
    LIT(&b, "{\"name\": ");
    hs__buf_json_str(&b, name, strlen(name));
    LIT(&b, f == HS__TOOLS_LLAMA3 ? ", \"parameters\": " : ", \"arguments\": ");
    hs__buf_add(&b, args, n_args);
    LIT(&b, "}");
    if (f == HS__TOOLS_MISTRAL) {
        LIT(&b, "]");
    } else if (f != HS__TOOLS_LLAMA3) {
        LIT(&b, "\n</tool_call>");
    }
    if (b.oom) {
        hs__buf_free(&b);
        return NULL;
    }
    return b.p;
}

char *hs__tools_generic_prompt(const json_t *tools)
{
    struct hs__buf b = {0};
    LIT(&b, "# Tools\n\nYou may call one or more functions to assist with the user query. The "
            "functions, each with a JSON Schema of its parameters:\n");
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t)
    {
        char *s = json_dumps(json_object_get(t, "function"), JSON_PRESERVE_ORDER);
        if (!s) {
            b.oom = true;
            break;
        }
        hs__buf_add(&b, s, strlen(s));
        LIT(&b, "\n");
        free(s);
    }
    LIT(&b, "\nTo call functions, answer with one block per call, each holding a JSON object with "
            "the function's name and arguments:\n<tool_call>\n{\"name\": <function-name>, "
            "\"arguments\": <args-json-object>}\n</tool_call>");
    if (b.oom) {
        hs__buf_free(&b);
        return NULL;
    }
    return b.p;
}

/* ---- the request ---- */

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* Appends grammar g with every rule name prefixed (names, not literals, classes, repetition
 * counts or comments). */
static void gbnf_prefix(struct hs__buf *out, const char *g, const char *prefix)
{
    const size_t np = strlen(prefix);
    for (const char *p = g; *p;) {
        const char *q = p + 1;
        if (*p == '#') {
            while (*q && *q != '\n') {
                q++;
            }
            p = q;
            continue;
        }
        if (*p == '"' || *p == '[' || *p == '{') {
            const char close = *p == '"' ? '"' : *p == '[' ? ']' : '}';
            while (*q && *q != close) {
                q += (*q == '\\' && q[1]) ? 2 : 1;
            }
            q += *q ? 1 : 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '_' || *p == '-') {
            while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                   (*q >= '0' && *q <= '9') || *q == '_' || *q == '-') {
                q++;
            }
            hs__buf_add(out, prefix, np);
        }
        hs__buf_add(out, p, (size_t)(q - p));
        p = q;
    }
}

/* A GBNF literal of s. */
static void gbnf_lit(struct hs__buf *b, const char *s)
{
    LIT(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            hs__buf_printf(b, "\\%c", *s);
        } else if (*s == '\n') {
            LIT(b, "\\n");
        } else {
            hs__buf_add(b, s, 1);
        }
    }
    LIT(b, "\"");
}

/* The grammar of a reply made of calls of the tools (only `only` when not NULL). */
static hs_status call_grammar(const json_t *tools, const char *only, enum hs__tool_format fmt,
                              bool parallel, char **out, struct hs__api_err *err)
{
    struct hs__buf rules = {0}, alts = {0}, g = {0};
    hs_status st = HS_OK;
    const bool hermes = fmt == HS__TOOLS_HERMES || fmt == HS__TOOLS_GENERIC;
    size_t i;
    const json_t *t;
    int32_t k = 0;
    json_array_foreach(tools, i, t)
    {
        const json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (only && strcmp(name, only) != 0) {
            continue;
        }
        const json_t *params = json_object_get(fn, "parameters");
        char *args = NULL;
        if (!params || json_is_null(params)) {
            args = strdup(hs_json_object_gbnf());
            st = args ? HS_OK : HS_E_NOMEM;
        } else {
            struct hs_error e = {0};
            st = hs_json_schema_to_gbnf(params, &args, &e);
            if (st != HS_OK && st != HS_E_NOMEM) {
                char param[64];
                snprintf(param, sizeof(param), "tools[%zu].function.parameters", i);
                st = hs__api_fail(err, 400, param,
                                  "%s: %s (tool_choice required or a named function constrains "
                                  "the arguments to this schema)",
                                  param, e.message);
                goto done;
            }
        }
        if (st != HS_OK) {
            goto nomem;
        }
        char prefix[16];
        snprintf(prefix, sizeof(prefix), "t%d-", (int)k);
        gbnf_prefix(&rules, args, prefix);
        free(args);
        char open[192];
        snprintf(open, sizeof(open), "%s{\"name\": \"%s\", \"%s\": ", hermes ? "<tool_call>\n" : "",
                 name, fmt == HS__TOOLS_LLAMA3 ? "parameters" : "arguments");
        hs__buf_printf(&rules, "call-%d ::= ", (int)k);
        gbnf_lit(&rules, open);
        hs__buf_printf(&rules, " t%d-root ", (int)k);
        gbnf_lit(&rules, hermes ? "}\n</tool_call>" : "}");
        LIT(&rules, "\n");
        hs__buf_printf(&alts, "%scall-%d", k ? " | " : "", (int)k);
        k++;
    }
    const bool many = parallel && fmt != HS__TOOLS_LLAMA3;
    if (fmt == HS__TOOLS_MISTRAL) {
        LIT(&g,
            many ? "root ::= \"[\" call (\", \" call)* \"]\"\n" : "root ::= \"[\" call \"]\"\n");
    } else {
        LIT(&g, many && hermes ? "root ::= call (\"\\n\" call)*\n" : "root ::= call\n");
    }
    LIT(&g, "call ::= ");
    hs__buf_add(&g, alts.p ? alts.p : "", alts.len);
    LIT(&g, "\n");
    hs__buf_add(&g, rules.p ? rules.p : "", rules.len);
    if (g.oom || rules.oom || alts.oom) {
        goto nomem;
    }
    *out = g.p;
    g.p = NULL;
    goto done;
nomem:
    st = NOMEM(err);
done:
    hs__buf_free(&rules);
    hs__buf_free(&alts);
    hs__buf_free(&g);
    return st;
}

hs_status hs__tools_parse_request(const json_t *b, const struct hs__tools_caps *caps,
                                  bool has_format, struct hs__api_tools *out, char **grammar,
                                  struct hs__api_err *err)
{
    *grammar = NULL;
    memset(out, 0, sizeof(*out));
    out->parallel = true;
    out->format = caps->format;
    const json_t *tools = json_object_get(b, "tools");
    size_t n_tools = 0;
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) {
            return hs__api_fail(err, 400, "tools", "tools must be an array of tool objects");
        }
        n_tools = json_array_size(tools);
        size_t i;
        const json_t *t;
        json_array_foreach(tools, i, t)
        {
            char param[48];
            snprintf(param, sizeof(param), "tools[%zu]", i);
            const json_t *type = json_object_get(t, "type");
            const json_t *fn = json_object_get(t, "function");
            const json_t *name = json_object_get(fn, "name");
            const json_t *params = json_object_get(fn, "parameters");
            if (!json_is_object(t) ||
                (type && !json_is_null(type) &&
                 !(json_is_string(type) && !strcmp(json_string_value(type), "function")))) {
                return hs__api_fail(err, 400, param, "%s must be an object of type \"function\"",
                                    param);
            }
            if (!json_is_object(fn) || !json_is_string(name) ||
                !name_ok(json_string_value(name), json_string_length(name))) {
                return hs__api_fail(err, 400, param,
                                    "%s.function must be an object whose name is 1 to 64 "
                                    "letters, digits, '_' or '-'",
                                    param);
            }
            if (params && !json_is_null(params) && !json_is_object(params)) {
                return hs__api_fail(err, 400, param,
                                    "%s.function.parameters must be a JSON Schema object", param);
            }
            for (size_t j = 0; j < i; j++) {
                const json_t *o =
                    json_object_get(json_object_get(json_array_get(tools, j), "function"), "name");
                if (json_equal(o, name)) {
                    return hs__api_fail(err, 400, param, "%s: tool name '%s' given twice", param,
                                        json_string_value(name));
                }
            }
        }
    }
    const json_t *ptc = json_object_get(b, "parallel_tool_calls");
    if (ptc && !json_is_null(ptc)) {
        if (!json_is_boolean(ptc)) {
            return hs__api_fail(err, 400, "parallel_tool_calls",
                                "parallel_tool_calls must be true or false");
        }
        out->parallel = json_is_true(ptc);
    }
    out->choice = n_tools ? HS__TOOL_CHOICE_AUTO : HS__TOOL_CHOICE_NONE;
    const json_t *tc = json_object_get(b, "tool_choice");
    if (tc && !json_is_null(tc)) {
        const char *s = json_string_value(tc);
        const json_t *fn = json_object_get(tc, "function");
        const json_t *name = json_object_get(fn, "name");
        if (s && !strcmp(s, "none")) {
            out->choice = HS__TOOL_CHOICE_NONE;
        } else if (s && !strcmp(s, "auto")) {
            out->choice = n_tools ? HS__TOOL_CHOICE_AUTO : HS__TOOL_CHOICE_NONE;
        } else if (s && !strcmp(s, "required")) {
            out->choice = HS__TOOL_CHOICE_REQUIRED;
        } else if (json_is_object(tc) && json_is_string(name) &&
                   json_string_length(name) < sizeof(out->name)) {
            out->choice = HS__TOOL_CHOICE_NAMED;
            memcpy(out->name, json_string_value(name), json_string_length(name) + 1);
        } else {
            return hs__api_fail(err, 400, "tool_choice",
                                "tool_choice must be \"none\", \"auto\", \"required\" or "
                                "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        }
    }
    if (out->choice >= HS__TOOL_CHOICE_REQUIRED) {
        if (n_tools == 0) {
            return hs__api_fail(err, 400, "tool_choice",
                                "tool_choice asks for a tool call, but the request has no tools");
        }
        if (has_format) {
            return hs__api_fail(err, 400, "tool_choice",
                                "tool_choice required or a named function cannot be combined "
                                "with response_format or grammar");
        }
        bool found = out->choice == HS__TOOL_CHOICE_REQUIRED;
        for (size_t i = 0; i < n_tools && !found; i++) {
            const json_t *o =
                json_object_get(json_object_get(json_array_get(tools, i), "function"), "name");
            found = !strcmp(json_string_value(o), out->name);
        }
        if (!found) {
            return hs__api_fail(err, 400, "tool_choice",
                                "tool_choice names function '%.100s', which is not among the "
                                "tools",
                                out->name);
        }
        HS_TRY(call_grammar(tools, out->choice == HS__TOOL_CHOICE_NAMED ? out->name : NULL,
                            out->format, out->parallel, grammar, err));
    }
    out->parse = out->choice != HS__TOOL_CHOICE_NONE && !has_format;
    return HS_OK;
}

/* ---- the output parser ---- */

enum {
    ST_TEXT,  /* content; looking for an opener */
    ST_START, /* LLAMA3 / MISTRAL: the reply's start, which may open calls */
    ST_HEAD,  /* a call's {"name": "...", "arguments": */
    ST_ARGS,  /* its arguments, streamed */
    ST_TAIL,  /* the rest of the call object and its closer */
    ST_LIST,  /* MISTRAL: after a call, "," or "]" */
    ST_FULL,  /* a call object that is not in the usual order: read whole, then parsed */
    ST_DONE,  /* no more calls wanted (parallel_tool_calls false): the rest is dropped */
};

#define NO_WS SIZE_MAX

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && is_ws(s[i])) {
        i++;
    }
    return i;
}

/* A JSON string opening at s[i] ('"'): 1 and *end after it when complete, 0 when cut. */
static int scan_string(const char *s, size_t i, size_t n, size_t *end)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\') {
            i++;
        } else if (s[i] == '"') {
            *end = i + 1;
            return 1;
        }
    }
    return 0;
}

/* Skips JSON text from s[i] at nesting depth `depth` until that depth closes: 1 and *end after
 * the closing bracket, 0 when cut. */
static int scan_close(const char *s, size_t i, size_t n, int32_t depth, size_t *end)
{
    for (; i < n; i++) {
        if (s[i] == '"') {
            size_t e;
            if (!scan_string(s, i, n, &e)) {
                return 0;
            }
            i = e - 1;
        } else if (s[i] == '{' || s[i] == '[') {
            depth++;
        } else if ((s[i] == '}' || s[i] == ']') && --depth == 0) {
            *end = i + 1;
            return 1;
        }
    }
    return 0;
}

/* A JSON value at s[i]: 1 and *end when complete, 0 when cut, -1 when it is no value. */
static int scan_value(const char *s, size_t i, size_t n, size_t *end)
{
    if (i >= n) {
        return 0;
    }
    if (s[i] == '{' || s[i] == '[') {
        return scan_close(s, i + 1, n, 1, end);
    }
    if (s[i] == '"') {
        return scan_string(s, i, n, end);
    }
    if (!strchr("-0123456789tfn", s[i])) {
        return -1;
    }
    for (size_t k = i; k < n; k++) {
        if (strchr(",}] \t\r\n", s[k])) {
            *end = k;
            return 1;
        }
    }
    return 0;
}

/* Expects literal lit at s[*i]: 1 (and advances), 0 when s ends inside a prefix of it, -1. */
static int expect(const char *s, size_t *i, size_t n, const char *lit)
{
    size_t l = strlen(lit), have = HS_MIN(l, n - *i);
    if (memcmp(s + *i, lit, have) != 0) {
        return -1;
    }
    if (have < l) {
        return 0;
    }
    *i += l;
    return 1;
}

void hs__tool_parser_init(struct hs__tool_parser *p, enum hs__tool_format fmt, bool parallel,
                          uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->fmt = fmt;
    p->parallel = parallel;
    p->ws_from = NO_WS;
    p->state = fmt == HS__TOOLS_LLAMA3 || fmt == HS__TOOLS_MISTRAL ? ST_START : ST_TEXT;
    p->rng = seed | 1;
}

void hs__tool_parser_free(struct hs__tool_parser *p)
{
    hs__buf_free(&p->text);
}

/* Content text[pos, to): a trailing run of whitespace is held back until text follows (then it
 * goes out), a call opens (dropped) or the output ends (dropped after a call). */
static void text_out(struct hs__tool_parser *p, size_t to, const struct hs__tool_sink *sink)
{
    const char *s = p->text.p;
    size_t from = p->ws_from != NO_WS ? p->ws_from : p->pos;
    size_t e = to;
    while (e > p->pos && is_ws(s[e - 1])) {
        e--;
    }
    if (e == p->pos) { /* only whitespace so far */
        p->ws_from = to > p->pos ? from : p->ws_from;
        p->pos = to;
        return;
    }
    p->after_call = false;
    sink->content(sink->user, s + from, e - from);
    p->ws_from = e < to ? e : NO_WS;
    p->pos = to;
}

static void new_call(struct hs__tool_parser *p, const char *name, size_t n_name,
                     const struct hs__tool_sink *sink)
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    char id[40];
    size_t o = 0, len = p->fmt == HS__TOOLS_MISTRAL ? 9 : 24;
    if (p->fmt != HS__TOOLS_MISTRAL) {
        memcpy(id, "call_", 5);
        o = 5;
    }
    for (size_t i = 0; i < len; i++) {
        p->rng ^= p->rng << 13;
        p->rng ^= p->rng >> 7;
        p->rng ^= p->rng << 17;
        id[o++] = alnum[p->rng % (sizeof(alnum) - 1)];
    }
    id[o] = '\0';
    sink->call(sink->user, p->n_calls, id, name, n_name);
}

/* The call's end: its closer, then more calls or text. */
static void call_done(struct hs__tool_parser *p)
{
    p->n_calls++;
    p->after_call = true;
    p->ws_from = NO_WS;
    if (!p->parallel) {
        p->state = ST_DONE;
    } else {
        p->state = p->fmt == HS__TOOLS_MISTRAL && p->in_list ? ST_LIST : ST_TEXT;
    }
}

/* Moves p->scan over the JSON text there is, tracking strings and nesting (p->depth, p->in_str,
 * p->esc); true when a bracket brings the depth back to 0, p->scan just after it. Each byte is
 * looked at once however the text arrives. */
static bool json_advance(struct hs__tool_parser *p)
{
    const char *s = p->text.p;
    const size_t n = p->text.len;
    for (; p->scan < n; p->scan++) {
        const char c = s[p->scan];
        if (p->in_str) {
            if (p->esc) {
                p->esc = false;
            } else if (c == '\\') {
                p->esc = true;
            } else if (c == '"') {
                p->in_str = false;
            }
        } else if (c == '"') {
            p->in_str = true;
        } else if (c == '{' || c == '[') {
            p->depth++;
        } else if ((c == '}' || c == ']') && --p->depth <= 0) {
            p->scan++;
            p->depth = 0;
            return true;
        }
    }
    return false;
}

/* Starts the scanner at i with nesting depth (0: before a value, 1: inside an object). */
static void scan_from(struct hs__tool_parser *p, size_t i, int32_t depth)
{
    p->scan = i;
    p->depth = depth;
    p->in_str = p->esc = false;
}

/* A call's head longer than this (a huge name, or blanks) is read whole (ST_FULL). */
#define MAX_HEAD 512

/* ST_HEAD at p->start: 1 when the head is read (name reported, p->pos at the arguments), 0 when
 * more text is needed, -1 when the object is not in the usual order. The answer depends only on
 * the text, never on how much of it has come (so pieces and the whole agree). */
static int read_head_in(struct hs__tool_parser *p, size_t n, const struct hs__tool_sink *sink)
{
    const char *s = p->text.p;
    size_t i = skip_ws(s, p->start, n), e, name_a, name_b;
    int r;
    if ((r = expect(s, &i, n, "{")) <= 0) {
        return r;
    }
    i = skip_ws(s, i, n);
    if ((r = expect(s, &i, n, "\"name\"")) <= 0) {
        return r;
    }
    i = skip_ws(s, i, n);
    if ((r = expect(s, &i, n, ":")) <= 0) {
        return r;
    }
    i = skip_ws(s, i, n);
    if (i >= n) {
        return 0;
    }
    if (s[i] != '"') {
        return -1;
    }
    if (!scan_string(s, i, n, &e)) {
        return 0;
    }
    name_a = i;
    name_b = e;
    i = skip_ws(s, e, n);
    if ((r = expect(s, &i, n, ",")) <= 0) {
        return r;
    }
    i = skip_ws(s, i, n);
    size_t k1 = i, k2 = i;
    int r1 = expect(s, &k1, n, "\"arguments\"");
    int r2 = expect(s, &k2, n, "\"parameters\"");
    if (r1 < 0 && r2 < 0) {
        return -1;
    }
    if (r1 <= 0 && r2 <= 0) {
        return 0;
    }
    i = skip_ws(s, r1 > 0 ? k1 : k2, n);
    if ((r = expect(s, &i, n, ":")) <= 0) {
        return r;
    }
    i = skip_ws(s, i, n);
    if (i >= n) {
        return 0;
    }
    if (i - p->start > MAX_HEAD) {
        return -1;
    }
    json_t *name = json_loadb(s + name_a, name_b - name_a, JSON_DECODE_ANY, NULL);
    if (!json_is_string(name)) {
        json_decref(name);
        return -1;
    }
    new_call(p, json_string_value(name), json_string_length(name), sink);
    json_decref(name);
    p->pos = i;
    scan_from(p, i, 0);
    return 1;
}

static int read_head(struct hs__tool_parser *p, const struct hs__tool_sink *sink)
{
    const bool capped = p->text.len - p->start > MAX_HEAD;
    const int r = read_head_in(p, capped ? p->start + MAX_HEAD + 1 : p->text.len, sink);
    return r == 0 && capped ? -1 : r; /* more than MAX_HEAD bytes and still no head */
}

/* ST_ARGS: streams argument bytes from p->pos; true when the value is complete. */
static bool read_args(struct hs__tool_parser *p, const struct hs__tool_sink *sink)
{
    const char *s = p->text.p;
    const size_t n = p->text.len, i = p->pos;
    if (i >= n) {
        return false;
    }
    if (p->depth == 0 && s[i] != '{' && s[i] != '[') { /* a scalar: whole */
        size_t e;
        int r = scan_value(s, i, n, &e);
        if (r == 0) {
            return false;
        }
        e = r < 0 ? i : e;
        sink->args(sink->user, p->n_calls, s + i, e - i);
        p->pos = e;
        return true;
    }
    const bool done = json_advance(p);
    if (p->scan > i) {
        sink->args(sink->user, p->n_calls, s + i, p->scan - i);
    }
    p->pos = p->scan;
    return done;
}

/* ST_FULL: a whole call object from p->start; 1 done, 0 more needed. A value that is no call
 * goes out as content from p->open. */
static int read_full(struct hs__tool_parser *p, const struct hs__tool_sink *sink)
{
    const char *s = p->text.p;
    const size_t n = p->text.len, i = skip_ws(s, p->start, n);
    if (i == n) {
        return 0;
    }
    size_t e = i;
    json_t *o = NULL;
    if (s[i] == '{') {
        if (!json_advance(p)) {
            return 0;
        }
        e = p->scan;
        o = json_loadb(s + i, e - i, 0, NULL);
    }
    const json_t *name = json_object_get(o, "name");
    const json_t *args = json_object_get(o, "arguments");
    args = args ? args : json_object_get(o, "parameters");
    if (json_is_string(name) && args) {
        char *a = json_is_string(args)
                      ? strdup(json_string_value(args))
                      : json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        if (!a) {
            p->oom = true;
        } else {
            new_call(p, json_string_value(name), json_string_length(name), sink);
            sink->args(sink->user, p->n_calls, a, strlen(a));
            free(a);
        }
        json_decref(o);
        p->pos = e;
        if (p->fmt == HS__TOOLS_HERMES || p->fmt == HS__TOOLS_GENERIC) {
            p->state = ST_TAIL;
            scan_from(p, e, 0); /* the object is closed: only the closer is left */
            return 1;
        }
        call_done(p);
        return 1;
    }
    json_decref(o); /* no call: the opener and what was read are text, and reading goes on */
    p->ws_from = NO_WS;
    p->after_call = false;
    sink->content(sink->user, s + p->open, e - p->open);
    p->pos = e;
    p->state = ST_TEXT;
    return 1;
}

void hs__tool_parser_feed(struct hs__tool_parser *p, const char *s, size_t n,
                          const struct hs__tool_sink *sink)
{
    hs__buf_add(&p->text, s, n);
    if (p->text.oom) {
        p->oom = true;
        return;
    }
    for (;;) {
        const char *t = p->text.p;
        const size_t len = p->text.len;
        size_t i;
        int r;
        switch (p->state) {
        case ST_START:
            i = skip_ws(t, p->pos, len);
            if (i == len) {
                return;
            }
            if (p->fmt == HS__TOOLS_LLAMA3) {
                size_t k = i;
                r = expect(t, &k, len, "<|python_tag|>");
                if (r == 0) {
                    return;
                }
                k = skip_ws(t, r > 0 ? k : i, len);
                if (k == len) {
                    return;
                }
                if (t[k] == '{') {
                    p->open = p->pos;
                    p->start = k;
                    p->state = ST_HEAD;
                    continue;
                }
            } else if (t[i] == '[') { /* MISTRAL without the control token's text */
                size_t k = skip_ws(t, i + 1, len);
                if (k == len) {
                    return;
                }
                if (t[k] == '{') {
                    p->in_list = true;
                    p->open = p->pos;
                    p->start = k;
                    p->state = ST_HEAD;
                    continue;
                }
            }
            p->state = ST_TEXT;
            continue;
        case ST_TEXT: {
            const char *opener = p->fmt == HS__TOOLS_MISTRAL  ? "[TOOL_CALLS]"
                                 : p->fmt == HS__TOOLS_LLAMA3 ? NULL
                                                              : "<tool_call>";
            if (!opener) {
                text_out(p, len, sink);
                return;
            }
            const size_t ol = strlen(opener);
            const char *hit = memmem(t + p->pos, len - p->pos, opener, ol);
            if (!hit) {
                size_t keep = 0; /* a suffix that may begin the opener */
                for (size_t k = HS_MIN(ol - 1, len - p->pos); k > 0 && !keep; k--) {
                    keep = memcmp(t + len - k, opener, k) == 0 ? k : 0;
                }
                text_out(p, len - keep, sink);
                return;
            }
            size_t at = (size_t)(hit - t);
            text_out(p, at, sink);
            /* whitespace before a call is dropped, or given back when no call follows */
            p->open = p->ws_from != NO_WS ? p->ws_from : at;
            p->ws_from = NO_WS;
            p->after_call = false;
            p->pos = at + ol;
            if (p->fmt == HS__TOOLS_MISTRAL) {
                i = skip_ws(t, p->pos, len);
                if (i == len) {
                    p->state = ST_LIST; /* waits for "[" */
                    p->in_list = false;
                    return;
                }
                if (t[i] != '[') {
                    sink->content(sink->user, t + p->open, i - p->open);
                    p->pos = i;
                    continue;
                }
                p->in_list = true;
                p->start = i + 1;
            } else {
                p->start = p->pos;
            }
            p->state = ST_HEAD;
            continue;
        }
        case ST_HEAD:
            r = read_head(p, sink);
            if (r == 0) {
                return;
            }
            p->state = r > 0 ? ST_ARGS : ST_FULL;
            if (r < 0) {
                scan_from(p, p->start, 0);
            }
            continue;
        case ST_ARGS:
            if (!read_args(p, sink)) {
                return;
            }
            p->state = ST_TAIL;
            scan_from(p, p->pos, 1); /* inside the call object */
            continue;
        case ST_TAIL:
            if (p->depth > 0) {
                if (!json_advance(p)) {
                    return;
                }
                p->pos = p->scan;
            }
            i = p->pos;
            if (p->fmt == HS__TOOLS_HERMES || p->fmt == HS__TOOLS_GENERIC) {
                size_t k = skip_ws(t, i, len);
                if (k == len) {
                    return; /* the closer may follow */
                }
                r = expect(t, &k, len, "</tool_call>");
                if (r == 0) {
                    return;
                }
                p->pos = r > 0 ? k : i; /* a missing closer is forgiven */
            }
            call_done(p);
            continue;
        case ST_LIST:
            i = skip_ws(t, p->pos, len);
            if (i == len) {
                return;
            }
            if (!p->in_list) { /* after [TOOL_CALLS]: the list opens, or it was text */
                if (t[i] == '[') {
                    p->in_list = true;
                    p->start = i + 1;
                    p->state = ST_HEAD;
                } else {
                    sink->content(sink->user, t + p->open, i - p->open);
                    p->state = ST_TEXT;
                }
                p->pos = i;
                continue;
            }
            if (t[i] == ',') {
                p->open = p->start = p->pos = i + 1;
                p->state = ST_HEAD;
            } else {
                p->in_list = false;
                p->pos = t[i] == ']' ? i + 1 : i;
                p->state = ST_TEXT;
            }
            continue;
        case ST_FULL:
            if (!read_full(p, sink)) {
                return;
            }
            continue;
        case ST_DONE:
        default:
            p->pos = len;
            return;
        }
    }
}

void hs__tool_parser_finish(struct hs__tool_parser *p, const struct hs__tool_sink *sink)
{
    const char *t = p->text.p ? p->text.p : "";
    const size_t len = p->text.len;
    switch (p->state) {
    case ST_START:
    case ST_TEXT:
    case ST_LIST:
        if (p->pos < len || (p->ws_from != NO_WS && !p->after_call)) {
            size_t from = p->ws_from != NO_WS && !p->after_call ? p->ws_from : p->pos;
            if (p->after_call) {
                from = skip_ws(t, from, len);
            }
            if (from < len) {
                sink->content(sink->user, t + from, len - from);
            }
        }
        break;
    case ST_HEAD:
    case ST_FULL:
        if (p->open < len) {
            sink->content(sink->user, t + p->open, len - p->open);
        }
        break;
    case ST_ARGS:
        if (p->text.p && p->pos < len && p->depth == 0) { /* a scalar cut short */
            sink->args(sink->user, p->n_calls, t + p->pos, len - p->pos);
        }
        p->n_calls++;
        break;
    case ST_TAIL:
        p->n_calls++;
        break;
    default:
        break;
    }
    p->pos = len;
    p->state = ST_DONE;
}
