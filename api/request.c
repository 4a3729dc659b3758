/* api/request.c: JSON bodies -> validated generation requests. */
#include "api/request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/json-schema.h"
#include "model/chat/chat-template.h"
#include "model/tokenizer/vocab.h"
#include "model/vision/image.h"

hs_status hs__api_fail(struct hs__api_err *err, int http, const char *param, const char *fmt, ...)
{
    err->http = http;
    snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return http == 503 ? HS_E_NOMEM : HS_E_INVAL;
}

#define fail       hs__api_fail
#define NOMEM(err) fail((err), 503, NULL, "out of memory")

/* ---- nesting depth, JSON strings, log escaping ---- */

bool hs__api_depth_ok(const char *body, size_t len, int32_t max_depth, struct hs__api_err *err)
{
    int32_t depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char ch = body[i];
        if (in_str) {
            if (ch == '\\') {
                i++;
            } else if (ch == '"') {
                in_str = false;
            }
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max_depth) {
                fail(err, 400, NULL, "request body nests JSON deeper than %d levels",
                     (int)max_depth);
                return false;
            }
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return true;
}

json_t *hs__api_load_object(const char *body, size_t len, int32_t max_depth,
                            struct hs__api_err *err)
{
    if (!hs__api_depth_ok(body, len, max_depth, err)) {
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        fail(err, 400, NULL, "request body is not valid JSON: %s (line %d, column %d)", je.text,
             je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        fail(err, 400, NULL, "request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[0..n), 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
        return 0;
    }
    return len;
}

void hs__buf_json_str(struct hs__buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    hs__buf_add(b, "\"", 1);
    size_t run = 0; /* bytes from i - run that go out unchanged */
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        const char *rep = NULL;
        char esc[8];
        if (k == 0 || u[i] == 0) {
            rep = "\xEF\xBF\xBD";
            k = 1;
        } else if (u[i] == '"' || u[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)u[i];
            esc[2] = '\0';
            rep = esc;
        } else if (u[i] < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[u[i] >> 4];
            esc[5] = hex[u[i] & 15];
            esc[6] = '\0';
            rep = u[i] == '\n' ? "\\n" : u[i] == '\t' ? "\\t" : u[i] == '\r' ? "\\r" : esc;
        }
        if (rep) {
            hs__buf_add(b, s + i - run, run);
            hs__buf_add(b, rep, strlen(rep));
            run = 0;
        } else {
            run += k;
        }
        i += k;
    }
    hs__buf_add(b, s + n - run, run);
    hs__buf_add(b, "\"", 1);
}

void hs__api_log_escape(char *dst, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool plain = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
        size_t need = plain ? 1 : 4;
        if (o + need + (i + 1 < n ? 3 : 0) >= cap) {
            if (o + 3 < cap) {
                memcpy(dst + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (plain) {
            dst[o++] = (char)ch;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        }
    }
    dst[o] = '\0';
}

json_t *hs__api_json_str(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    bool clean = true;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (k == 0 || u[i] == 0) {
            clean = false;
            break;
        }
        i += k;
    }
    if (clean) {
        return json_stringn(s, n);
    }
    char *buf = malloc(n * 3 + 1);
    if (!buf) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (k == 0 || u[i] == 0) {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        }
    }
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j;
}

/* ---- field readers: absent or null leaves *out unchanged ---- */

static hs_status get_number(const json_t *o, const char *key, double lo, double hi, double *out,
                            struct hs__api_err *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        return HS_OK;
    }
    if (!json_is_number(v)) {
        return fail(err, 400, key, "%s must be a number", key);
    }
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) {
        return fail(err, 400, key, "%s must be in [%g, %g], got %g", key, lo, hi, d);
    }
    *out = d;
    return HS_OK;
}

static hs_status get_float(const json_t *o, const char *key, double lo, double hi, float *out,
                           struct hs__api_err *err)
{
    double d = *out;
    HS_TRY(get_number(o, key, lo, hi, &d, err));
    *out = (float)d;
    return HS_OK;
}

static hs_status get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out,
                         struct hs__api_err *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        return HS_OK;
    }
    int64_t i;
    if (json_is_integer(v)) {
        i = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e18) {
        i = (int64_t)json_real_value(v);
    } else {
        return fail(err, 400, key, "%s must be an integer", key);
    }
    if (i < lo || i > hi) {
        return fail(err, 400, key, "%s must be in [%lld, %lld], got %lld", key, (long long)lo,
                    (long long)hi, (long long)i);
    }
    *out = i;
    return HS_OK;
}

static hs_status get_bool(const json_t *o, const char *key, bool *out, struct hs__api_err *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        return HS_OK;
    }
    if (!json_is_boolean(v)) {
        return fail(err, 400, key, "%s must be true or false", key);
    }
    *out = json_is_true(v);
    return HS_OK;
}

/* hetserve's own extension object: {"hetserve": {"attention": "auto" | "attention" | "ffn",
 * "long_context": N, "speculative": BOOL}}: where this request's decode attention runs on a
 * split server (see hs_engine_request.place; ignored by an unsplit one), and whether it may
 * use speculative decoding when the server has it on (default true). */
static hs_status parse_extension(const json_t *b, struct hs_engine_request *er,
                                 struct hs__api_err *err)
{
    const json_t *x = json_object_get(b, "hetserve");
    if (!x || json_is_null(x)) {
        return HS_OK;
    }
    if (!json_is_object(x)) {
        return fail(err, 400, "hetserve", "hetserve must be an object");
    }
    const json_t *a = json_object_get(x, "attention");
    if (a && !json_is_null(a)) {
        static const char *const names[HS_PLACE_COUNT] = {"auto", "attention", "ffn"};
        int found = -1;
        for (int i = 0; i < HS_PLACE_COUNT && json_is_string(a); i++) {
            found = strcmp(json_string_value(a), names[i]) == 0 ? i : found;
        }
        if (found < 0) {
            return fail(err, 400, "hetserve.attention",
                        "hetserve.attention must be \"auto\", \"attention\" or \"ffn\"");
        }
        er->place = (enum hs_place)found;
    }
    int64_t lc = -1;
    HS_TRY(get_int(x, "long_context", 0, INT32_MAX, &lc, err));
    er->long_context = (int32_t)lc;
    bool spec = true;
    HS_TRY(get_bool(x, "speculative", &spec, err));
    er->no_speculation = !spec;
    return HS_OK;
}

/* r->grammar from a JSON Schema given in the request's field `param`. */
static hs_status schema_grammar(const json_t *schema, const char *param, struct hs__api_req *r,
                                struct hs__api_err *err)
{
    struct hs_error serr = {0};
    const hs_status st = hs_json_schema_to_gbnf(schema, &r->grammar, &serr);
    if (st == HS_E_NOMEM) {
        return fail(err, 503, NULL, "out of memory");
    }
    if (st != HS_OK) {
        return fail(err, 400, param, "%s", serr.message);
    }
    return HS_OK;
}

/* Structured output: `response_format` ({"type": "text"}; {"type": "json_object"}, optionally
 * with "schema" as llama.cpp's server and vLLM accept; {"type": "json_schema", "json_schema":
 * {"name", "schema", "strict"}}), or llama.cpp's `grammar` (GBNF text) or `json_schema` (a
 * schema), at most one of the three, into r->grammar. A schema keyword the converter does not
 * support is a 400 naming it, never a silent relaxation. */
static hs_status parse_structured(const json_t *b, struct hs__api_req *r, struct hs__api_err *err)
{
    const json_t *rf = json_object_get(b, "response_format");
    const json_t *g = json_object_get(b, "grammar");
    const json_t *js_top = json_object_get(b, "json_schema");
    const bool has_rf = rf && !json_is_null(rf);
    const bool has_g = g && !json_is_null(g);
    const bool has_js = js_top && !json_is_null(js_top);
    if (has_rf + has_g + has_js > 1) {
        return fail(err, 400, has_g ? "grammar" : "json_schema",
                    "give one of grammar, json_schema and response_format, not several");
    }
    if (has_g) {
        if (!json_is_string(g) || json_string_length(g) == 0) {
            return fail(err, 400, "grammar", "grammar must be a non-empty string of GBNF");
        }
        r->grammar = strndup(json_string_value(g), json_string_length(g));
        return r->grammar ? HS_OK : fail(err, 503, NULL, "out of memory");
    }
    if (has_js) {
        return schema_grammar(js_top, "json_schema", r, err);
    }
    if (!has_rf) {
        return HS_OK;
    }
    const char *type = json_is_object(rf) ? json_string_value(json_object_get(rf, "type")) : NULL;
    if (!type) {
        return fail(err, 400, "response_format",
                    "response_format must be an object with a type: text, json_object or "
                    "json_schema");
    }
    const json_t *schema = NULL;
    if (!strcmp(type, "text")) {
        return HS_OK;
    } else if (!strcmp(type, "json_object")) {
        schema = json_object_get(rf, "schema");
        if (!schema || json_is_null(schema)) {
            r->grammar = strdup(hs_json_object_gbnf());
            return r->grammar ? HS_OK : fail(err, 503, NULL, "out of memory");
        }
    } else if (!strcmp(type, "json_schema")) {
        const json_t *js = json_object_get(rf, "json_schema");
        schema = json_is_object(js) ? json_object_get(js, "schema") : NULL;
        if (!schema) {
            return fail(err, 400, "response_format.json_schema.schema",
                        "response_format json_schema needs json_schema.schema");
        }
    } else {
        return fail(err, 400, "response_format.type",
                    "response_format type must be text, json_object or json_schema, not '%s'",
                    type);
    }
    return schema_grammar(schema, "response_format", r, err);
}

/* ---- prompts ---- */

hs_status hs__api_tokenize(const struct hs__api_ctx *c, const char *text, size_t len,
                           bool add_special, const uint8_t *client, struct hs__api_prompt *p,
                           struct hs__api_err *err)
{
    size_t cap = len + 8, n = 0;
    for (int tries = 0; tries < 2; tries++) {
        p->ids = malloc(cap * sizeof(hs_token));
        if (!p->ids) {
            return NOMEM(err);
        }
        hs_status st =
            client ? hs_tokenize_marked(c->vocab, text, len, add_special, client, p->ids, cap, &n)
                   : hs_tokenize(c->vocab, text, len, add_special, true, p->ids, cap, &n);
        if (st == HS_OK && n == 0) {
            return fail(err, 400, "prompt", "the prompt is empty (it gives no tokens)");
        }
        if (st == HS_OK) {
            p->n = (int32_t)n;
            return HS_OK;
        }
        free(p->ids);
        p->ids = NULL;
        if (st != HS_E_RANGE) {
            return st == HS_E_NOMEM ? NOMEM(err)
                                    : fail(err, 400, "prompt", "the prompt cannot be tokenized");
        }
        cap = n;
    }
    return fail(err, 500, "prompt", "tokenizer size mismatch");
}

static hs_status ids_prompt(const struct hs__api_ctx *c, const json_t *arr, const char *param,
                            struct hs__api_prompt *p, struct hs__api_err *err)
{
    size_t n = json_array_size(arr);
    int32_t n_vocab = hs_vocab_n_tokens(c->vocab);
    if (n == 0) {
        return fail(err, 400, param, "%s must not be empty", param);
    }
    p->ids = malloc(n * sizeof(hs_token));
    if (!p->ids) {
        return NOMEM(err);
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        json_int_t t = json_is_integer(v) ? json_integer_value(v) : -1;
        if (t < 0 || t >= n_vocab) {
            return fail(err, 400, param, "%s[%zu] must be a token id in [0, %d)", param, i,
                        (int)n_vocab);
        }
        p->ids[i] = (hs_token)t;
    }
    p->n = (int32_t)n;
    return HS_OK;
}

static hs_status parse_prompts(const struct hs__api_ctx *c, const json_t *body,
                               struct hs__api_req *r, struct hs__api_err *err)
{
    const json_t *p = json_object_get(body, "prompt");
    if (json_is_string(p)) {
        r->n_prompts = 1;
        return hs__api_tokenize(c, json_string_value(p), json_string_length(p), true, NULL,
                                &r->prompts[0], err);
    }
    if (!json_is_array(p) || json_array_size(p) == 0) {
        return fail(err, 400, "prompt",
                    "prompt is required: a string, an array of strings, an array of token ids or "
                    "an array of token-id arrays");
    }
    const json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) {
        r->n_prompts = 1;
        return ids_prompt(c, p, "prompt", &r->prompts[0], err);
    }
    if (json_array_size(p) > HS__API_MAX_PROMPTS) {
        return fail(err, 400, "prompt", "prompt holds %zu prompts; at most %d", json_array_size(p),
                    HS__API_MAX_PROMPTS);
    }
    size_t i;
    json_t *v;
    json_array_foreach(p, i, v)
    {
        char param[32];
        snprintf(param, sizeof(param), "prompt[%zu]", i);
        r->n_prompts = (int32_t)i + 1;
        if (json_is_string(v)) {
            HS_TRY(hs__api_tokenize(c, json_string_value(v), json_string_length(v), true, NULL,
                                    &r->prompts[i], err));
        } else if (json_is_array(v)) {
            HS_TRY(ids_prompt(c, v, param, &r->prompts[i], err));
        } else {
            return fail(err, 400, param, "%s must be a string or an array of token ids", param);
        }
    }
    return HS_OK;
}

/* echo: prompt i's text as given, or its token ids detokenized. */
static hs_status capture_echo(const struct hs__api_ctx *c, const json_t *p, struct hs__api_req *r,
                              struct hs__api_err *err)
{
    for (int32_t i = 0; i < r->n_prompts; i++) {
        const json_t *v = json_is_string(p) ? p : json_array_get(p, (size_t)i);
        struct hs__buf t = {0};
        if (json_is_string(v)) {
            hs__buf_add(&t, json_string_value(v), json_string_length(v));
        } else {
            for (int32_t k = 0; k < r->prompts[i].n; k++) {
                char piece[256];
                size_t n =
                    hs_vocab_piece(c->vocab, r->prompts[i].ids[k], true, piece, sizeof(piece));
                hs__buf_add(&t, piece, HS_MIN(n, sizeof(piece)));
            }
            hs__buf_add(&t, "", 0);
        }
        if (t.oom) {
            hs__buf_free(&t);
            return NOMEM(err);
        }
        r->echo_text[i] = t.p;
        r->n_echo_text[i] = t.len;
    }
    return HS_OK;
}

static hs_status parse_stop(const json_t *body, struct hs__api_req *r, struct hs__api_err *err)
{
    const json_t *s = json_object_get(body, "stop");
    const json_t *items[HS_ENGINE_MAX_STOP];
    size_t n = 0;
    if (!s || json_is_null(s)) {
        return HS_OK;
    }
    if (json_is_string(s)) {
        items[n++] = s;
    } else if (json_is_array(s)) {
        if (json_array_size(s) > HS_ENGINE_MAX_STOP) {
            return fail(err, 400, "stop", "stop holds %zu strings; at most %d", json_array_size(s),
                        HS_ENGINE_MAX_STOP);
        }
        size_t i;
        json_t *v;
        json_array_foreach(s, i, v)
        {
            if (!json_is_string(v)) {
                return fail(err, 400, "stop", "stop[%zu] must be a string", i);
            }
            items[n++] = v;
        }
    } else {
        return fail(err, 400, "stop", "stop must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = json_string_length(items[i]);
        if (len == 0) {
            continue; /* OpenAI ignores empty stop strings */
        }
        if (len > HS_ENGINE_MAX_STOP_BYTES) {
            return fail(err, 400, "stop", "stop strings are at most %d bytes, got %zu",
                        HS_ENGINE_MAX_STOP_BYTES, len);
        }
        char *copy = strdup(json_string_value(items[i]));
        if (!copy) {
            return NOMEM(err);
        }
        r->stops[r->er.n_stop++] = copy;
    }
    r->er.stop = (const char *const *)r->stops;
    return HS_OK;
}

static hs_status parse_logit_bias(const struct hs__api_ctx *c, const json_t *body,
                                  struct hs__api_req *r, struct hs__api_err *err)
{
    const json_t *lb = json_object_get(body, "logit_bias");
    if (!lb || json_is_null(lb)) {
        return HS_OK;
    }
    if (!json_is_object(lb)) {
        return fail(err, 400, "logit_bias", "logit_bias must be an object of token id -> bias");
    }
    size_t n = json_object_size(lb);
    if (n == 0) {
        return HS_OK;
    }
    if (n > HS__API_MAX_LOGIT_BIAS) {
        return fail(err, 400, "logit_bias", "logit_bias holds %zu entries; at most %d", n,
                    HS__API_MAX_LOGIT_BIAS);
    }
    r->bias = calloc(n, sizeof(*r->bias));
    if (!r->bias) {
        return NOMEM(err);
    }
    int32_t n_vocab = hs_vocab_n_tokens(c->vocab);
    const char *k;
    json_t *v;
    int32_t i = 0;
    json_object_foreach((json_t *)lb, k, v)
    {
        /* Canonical decimal only ("5", not " 5", "+5", "05" or "5.0"): every token has one
         * spelling, so the duplicate-key check sees every duplicate. */
        size_t kl = strlen(k);
        bool canon =
            kl >= 1 && kl <= 10 && strspn(k, "0123456789") == kl && (k[0] != '0' || kl == 1);
        long long t = canon ? strtoll(k, NULL, 10) : -1;
        if (t < 0 || t >= n_vocab) {
            return fail(err, 400, "logit_bias",
                        "logit_bias key \"%.40s\" must be a token id in [0, %d) written in decimal "
                        "without sign, spaces or leading zeros",
                        k, (int)n_vocab);
        }
        if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
            fabs(json_number_value(v)) > 100) {
            return fail(err, 400, "logit_bias", "logit_bias[%lld] must be a number in [-100, 100]",
                        t);
        }
        double b = json_number_value(v);
        r->bias[i].token = (hs_token)t;
        r->bias[i].bias = b <= -100 ? -INFINITY : (float)b;
        i++;
    }
    r->er.sampling.logit_bias = r->bias;
    r->er.sampling.n_logit_bias = i;
    return HS_OK;
}

/* /v1/completions' echo, suffix and best_of. echo: the prompt's text goes before each
 * choice's text (not with logprobs: prompt logprobs are not computed). suffix: no model here
 * has a fill-in-the-middle template, so a non-empty one is refused. best_of: that many choices
 * are generated per prompt and the n with the highest cumulative logprob are returned (not
 * with stream, as OpenAI). */
static hs_status parse_completion_extras(const json_t *b, struct hs__api_req *r,
                                         struct hs__api_err *err)
{
    HS_TRY(get_bool(b, "echo", &r->echo, err));
    if (r->echo && r->want_logprobs) {
        return fail(err, 400, "echo",
                    "echo together with logprobs is not supported (prompt logprobs are not "
                    "computed); drop one of them");
    }
    const json_t *suffix = json_object_get(b, "suffix");
    if (suffix && !json_is_null(suffix)) {
        if (!json_is_string(suffix)) {
            return fail(err, 400, "suffix", "suffix must be a string");
        }
        if (json_string_length(suffix) > 0) {
            return fail(err, 400, "suffix",
                        "suffix (fill-in-the-middle) is not supported by this model");
        }
    }
    int64_t best_of = r->er.n;
    HS_TRY(get_int(b, "best_of", 1, HS_ENGINE_MAX_CHOICES, &best_of, err));
    if (best_of < r->er.n) {
        return fail(err, 400, "best_of", "best_of (%lld) must be at least n (%d)",
                    (long long)best_of, (int)r->er.n);
    }
    if (best_of > r->er.n) {
        if (r->stream) {
            return fail(err, 400, "best_of", "best_of cannot be used with stream");
        }
        r->er.n = (int32_t)best_of;
        r->er.logprobs = true; /* the ranking needs each token's logprob */
    }
    return HS_OK;
}

static uint64_t random_seed(void)
{
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x =
        (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (++counter * 0x9E3779B97F4A7C15u);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9u;
    return x ^ (x >> 29);
}

static hs_status parse_common(const struct hs__api_ctx *c, const json_t *b, struct hs__api_req *r,
                              struct hs__api_err *err)
{
    struct hs_engine_request *er = &r->er;
    struct hs_sampling_params *sp = &er->sampling;
    const json_t *model = json_object_get(b, "model");
    if (model && !json_is_string(model) && !json_is_null(model)) {
        return fail(err, 400, "model", "model must be a string");
    }
    if (json_is_string(model) && json_string_length(model) > 0 && c->model_name &&
        strcmp(json_string_value(model), c->model_name) != 0) {
        fail(err, 404, "model", "The model '%.200s' does not exist; this server serves '%.100s'",
             json_string_value(model), c->model_name);
        snprintf(err->code, sizeof(err->code), "model_not_found");
        return HS_E_NOENT;
    }
    /* Absent: 16 for completions (OpenAI's default), the rest of the context for chat. An
     * explicit 0 is refused (as vLLM does) rather than read as "fill the context". */
    int64_t iv = r->kind == HS__API_COMPLETION ? 16 : 0;
    HS_TRY(get_int(b, "max_tokens", 1, INT32_MAX, &iv, err));
    HS_TRY(get_int(b, "max_completion_tokens", 1, INT32_MAX, &iv, err));
    er->max_tokens = (int32_t)iv;
    HS_TRY(get_float(b, "temperature", 0, 100, &sp->temperature, err));
    HS_TRY(get_float(b, "top_p", 0, 1, &sp->top_p, err));
    if (sp->top_p <= 0) {
        return fail(err, 400, "top_p", "top_p must be in (0, 1], got 0");
    }
    iv = sp->top_k;
    HS_TRY(get_int(b, "top_k", -1, INT32_MAX, &iv, err));
    sp->top_k = (int32_t)iv;
    HS_TRY(get_float(b, "min_p", 0, 1, &sp->min_p, err));
    HS_TRY(get_float(b, "presence_penalty", -2, 2, &sp->presence_penalty, err));
    HS_TRY(get_float(b, "frequency_penalty", -2, 2, &sp->frequency_penalty, err));
    HS_TRY(get_float(b, "repetition_penalty", 1e-3, 100, &sp->repetition_penalty, err));
    const json_t *seed = json_object_get(b, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) {
            return fail(err, 400, "seed", "seed must be an integer");
        }
        sp->seed = (uint64_t)json_integer_value(seed);
        r->seed_given = true;
    } else {
        sp->seed = random_seed();
    }
    iv = 1;
    HS_TRY(get_int(b, "n", 1, HS_ENGINE_MAX_CHOICES, &iv, err));
    er->n = (int32_t)iv;
    r->n_return = er->n;
    HS_TRY(get_bool(b, "stream", &r->stream, err));
    HS_TRY(get_bool(b, "ignore_eos", &er->ignore_eos, err));
    HS_TRY(parse_extension(b, er, err));
    HS_TRY(parse_structured(b, r, err));
    const json_t *so = json_object_get(b, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            return fail(err, 400, "stream_options", "stream_options must be an object");
        }
        HS_TRY(get_bool(so, "include_usage", &r->include_usage, err));
    }
    const json_t *user = json_object_get(b, "user");
    if (user && !json_is_null(user)) {
        if (!json_is_string(user)) {
            return fail(err, 400, "user", "user must be a string");
        }
        hs__api_log_escape(r->user, sizeof(r->user), json_string_value(user),
                           json_string_length(user));
    }
    const json_t *salt = json_object_get(b, "cache_salt");
    if (salt && !json_is_null(salt)) {
        if (!json_is_string(salt) || json_string_length(salt) == 0 ||
            json_string_length(salt) > HS__API_MAX_CACHE_SALT) {
            return fail(err, 400, "cache_salt", "cache_salt must be a string of 1 to %d bytes",
                        HS__API_MAX_CACHE_SALT);
        }
        r->n_cache_salt = json_string_length(salt);
        r->cache_salt = malloc(r->n_cache_salt + 1);
        if (!r->cache_salt) {
            return NOMEM(err);
        }
        memcpy(r->cache_salt, json_string_value(salt), r->n_cache_salt + 1);
    }
    HS_TRY(parse_stop(b, r, err));
    HS_TRY(parse_logit_bias(c, b, r, err));
    if (r->kind == HS__API_CHAT) {
        HS_TRY(get_bool(b, "logprobs", &er->logprobs, err));
        iv = 0;
        HS_TRY(get_int(b, "top_logprobs", 0, HS__API_MAX_TOP_LOGPROBS, &iv, err));
        if (iv > 0 && !er->logprobs) {
            return fail(err, 400, "top_logprobs", "top_logprobs needs logprobs set to true");
        }
        er->top_logprobs = (int32_t)iv;
    } else {
        const json_t *lp = json_object_get(b, "logprobs");
        if (json_is_boolean(lp)) {
            er->logprobs = json_is_true(lp);
        } else {
            iv = -1;
            HS_TRY(get_int(b, "logprobs", 0, HS__API_MAX_TOP_LOGPROBS, &iv, err));
            er->logprobs = iv >= 0;
            er->top_logprobs = (int32_t)HS_MAX(iv, 0);
        }
    }
    r->want_logprobs = er->logprobs;
    if (r->kind == HS__API_COMPLETION) {
        HS_TRY(parse_completion_extras(b, r, err));
    }
    struct hs_error e = {0};
    if (hs_sampling_params_check(sp, hs_vocab_n_tokens(c->vocab), &e) != HS_OK) {
        return fail(err, 400, NULL, "%s", e.message);
    }
    return HS_OK;
}

/* The output a request may make: prompts x choices x max_tokens (the rest of the context when
 * unset) x (1 + top_logprobs when logprobs are asked), against the per-request cap. Returns
 * HS_OK or 400 naming the product. */
static hs_status check_output_items(const struct hs__api_ctx *c, struct hs__api_req *r,
                                    struct hs__api_err *err)
{
    const int64_t cap = c->max_output_items > 0 ? c->max_output_items : HS__API_MAX_OUTPUT_ITEMS;
    const int64_t per_token = r->want_logprobs ? 1 + (int64_t)r->er.top_logprobs : 1;
    int64_t items = 0;
    for (int32_t i = 0; i < r->n_prompts; i++) {
        int64_t room = c->n_ctx > 0 ? HS_MAX((int64_t)c->n_ctx - r->prompts[i].n, 1) : INT32_MAX;
        int64_t mt = r->er.max_tokens > 0 ? HS_MIN((int64_t)r->er.max_tokens, room) : room;
        items += (int64_t)r->er.n * mt * per_token;
    }
    if (items > cap) {
        return fail(err, 400, "max_tokens",
                    "this request may generate %lld output items (prompts x choices (n, best_of) "
                    "x max_tokens x (1 + top_logprobs when logprobs are asked)); the limit is "
                    "%lld: lower max_tokens, n or top_logprobs, or split the request",
                    (long long)items, (long long)cap);
    }
    return HS_OK;
}

hs_status hs__api_parse(const struct hs__api_ctx *c, enum hs__api_kind kind, const char *body,
                        size_t len, struct hs__api_req *out, struct hs__api_err *err)
{
    memset(out, 0, sizeof(*out));
    out->kind = kind;
    hs_engine_request_init(&out->er);
    json_t *b = hs__api_load_object(body, len, c->max_depth, err);
    if (!b) {
        return HS_E_INVAL;
    }
    hs_status st = parse_common(c, b, out, err);
    if (st != HS_OK) {
        goto done;
    }
    if (kind == HS__API_CHAT) {
        st = hs__api_chat_prompt(c, b, out, err);
    } else {
        st = parse_prompts(c, b, out, err);
        if (st == HS_OK && out->echo) {
            st = capture_echo(c, json_object_get(b, "prompt"), out, err);
        }
    }
    if (st == HS_OK && out->grammar) {
        out->er.grammar = out->grammar;
        out->er.n_grammar = strlen(out->grammar);
    }
    if (st == HS_OK) {
        st = check_output_items(c, out, err);
    }
done:
    json_decref(b);
    return st;
}

void hs__api_req_free(struct hs__api_req *r)
{
    for (int32_t i = 0; i < HS__API_MAX_PROMPTS; i++) {
        free(r->prompts[i].ids);
        r->prompts[i].ids = NULL;
    }
    for (int32_t i = 0; i < HS_ENGINE_MAX_STOP; i++) {
        free(r->stops[i]);
        r->stops[i] = NULL;
    }
    for (int32_t i = 0; i < HS__API_MAX_PROMPTS; i++) {
        free(r->echo_text[i]);
        r->echo_text[i] = NULL;
    }
    free(r->cache_salt);
    r->cache_salt = NULL;
    free(r->grammar);
    r->grammar = NULL;
    free(r->bias);
    r->bias = NULL;
    for (int32_t i = 0; i < r->n_images; i++) {
        free(r->images[i].rows);
        r->images[i].rows = NULL;
        if (r->images[i].img) {
            hs_image_finish(r->images[i].img);
            free(r->images[i].img);
            r->images[i].img = NULL;
        }
    }
    r->n_images = 0;
}
