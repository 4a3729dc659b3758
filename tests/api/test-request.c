/* tests/api: request validation at the parsing level (api/request.c), against hostile bodies:
 * max_tokens 0, unknown models, logit_bias key spellings and counts, echo / suffix / best_of,
 * the per-request output cap, cache_salt; and the helpers that keep client strings out of log
 * lines and write JSON strings. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/request.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/vocab.h"

static struct hs_gguf *gguf;
static struct hs_vocab *vocab;

static void load(void)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert_not_null(dir, "HS_MODELS_DIR is not set");
    char path[1024];
    struct hs_error err = {0};
    snprintf(path, sizeof(path), "%s/stories260K.gguf", dir);
    cr_assert_eq(hs_gguf_open(path, &gguf, &err), HS_OK, "%s: %s", path, err.message);
    cr_assert_eq(hs_vocab_load(gguf, &vocab, &err), HS_OK, "%s", err.message);
}

static void unload(void)
{
    hs_vocab_destroy(vocab);
    hs_gguf_close(gguf);
}

TestSuite(request, .init = load, .fini = unload, .timeout = 60);

static struct hs__api_ctx ctx(void)
{
    return (struct hs__api_ctx){.vocab = vocab,
                                .max_depth = 32,
                                .model_name = "served",
                                .n_ctx = 512,
                                .max_output_items = 10000};
}

/* Parses body as a completions (or chat) request; returns the status, err filled. */
static hs_status parse_as(enum hs__api_kind kind, const char *body, struct hs__api_req *r,
                          struct hs__api_err *err)
{
    struct hs__api_ctx c = ctx();
    memset(err, 0, sizeof(*err));
    return hs__api_parse(&c, kind, body, strlen(body), r, err);
}

static void expect(enum hs__api_kind kind, const char *body, int http, const char *param)
{
    struct hs__api_req r;
    struct hs__api_err err;
    hs_status st = parse_as(kind, body, &r, &err);
    if (http == 200) {
        cr_assert_eq(st, HS_OK, "%s: %d %s", body, err.http, err.message);
    } else {
        cr_assert_neq(st, HS_OK, "%s was accepted", body);
        cr_assert_eq(err.http, http, "%s: http %d, want %d (%s)", body, err.http, http,
                     err.message);
        if (param) {
            cr_assert_str_eq(err.param, param, "%s: %s", body, err.message);
        }
    }
    hs__api_req_free(&r);
}

#define CMPL HS__API_COMPLETION
#define CHAT HS__API_CHAT

Test(request, max_tokens_zero_is_refused)
{
    expect(CMPL, "{\"prompt\":\"x\",\"max_tokens\":0}", 400, "max_tokens");
    expect(CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", 400,
           "max_tokens");
    expect(CHAT,
           "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}",
           400, "max_completion_tokens");
    expect(CMPL, "{\"prompt\":\"x\",\"max_tokens\":1}", 200, NULL);
}

Test(request, unknown_model_is_404_model_not_found)
{
    struct hs__api_req r;
    struct hs__api_err err;
    cr_assert_eq(parse_as(CMPL, "{\"model\":\"gpt-4o\",\"prompt\":\"x\"}", &r, &err), HS_E_NOENT);
    cr_assert_eq(err.http, 404);
    cr_assert_str_eq(err.code, "model_not_found");
    cr_assert_str_eq(err.param, "model");
    hs__api_req_free(&r);
    expect(CMPL, "{\"model\":\"\",\"prompt\":\"x\"}", 200, NULL);
    expect(CMPL, "{\"model\":\"served\",\"prompt\":\"x\"}", 200, NULL);
    expect(CMPL, "{\"model\":null,\"prompt\":\"x\"}", 200, NULL);
    expect(CMPL, "{\"model\":\"Served\",\"prompt\":\"x\"}", 404, "model");
    /* no served name configured: any name */
    struct hs__api_ctx c = ctx();
    c.model_name = NULL;
    const char *body = "{\"model\":\"anything\",\"prompt\":\"x\"}";
    cr_assert_eq(hs__api_parse(&c, CMPL, body, strlen(body), &r, &err), HS_OK);
    hs__api_req_free(&r);
}

Test(request, logit_bias_keys_are_canonical_and_bounded)
{
    static const char *const bad[] = {"\" 5\"", "\"\\t5\"", "\"+5\"",  "\"05\"",         "\"5.0\"",
                                      "\"5 \"", "\"-0\"",   "\"1e1\"", "\"\"",           "\"0x5\"",
                                      "\"-5\"", "\"5a\"",   "\"00\"",  "\"99999999999\""};
    char body[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"prompt\":\"x\",\"logit_bias\":{%s:1}}", bad[i]);
        expect(CMPL, body, 400, "logit_bias");
    }
    expect(CMPL, "{\"prompt\":\"x\",\"logit_bias\":{\"0\":1,\"5\":-100,\"17\":100}}", 200, NULL);
    expect(CMPL, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":100.5}}", 400, "logit_bias");
    /* at most HS__API_MAX_LOGIT_BIAS entries: counted before any key is read */
    struct hs__buf b = {0};
    hs__buf_printf(&b, "{\"prompt\":\"x\",\"logit_bias\":{");
    for (int i = 0; i < HS__API_MAX_LOGIT_BIAS + 1; i++) {
        hs__buf_printf(&b, "%s\"%d\":1", i ? "," : "", i);
    }
    hs__buf_printf(&b, "}}");
    cr_assert(!b.oom);
    struct hs__api_req r;
    struct hs__api_err err;
    cr_assert_neq(parse_as(CMPL, b.p, &r, &err), HS_OK);
    cr_assert(strstr(err.message, "at most 1024"), "%s", err.message);
    hs__api_req_free(&r);
    hs__buf_free(&b);
}

Test(request, echo_suffix_and_best_of)
{
    struct hs__api_req r;
    struct hs__api_err err;
    cr_assert_eq(parse_as(CMPL, "{\"prompt\":[\"Once upon\",[1,2]],\"echo\":true}", &r, &err),
                 HS_OK, "%s", err.message);
    cr_assert(r.echo);
    cr_assert_eq(r.n_echo_text[0], 9);
    cr_assert_str_eq(r.echo_text[0], "Once upon");
    cr_assert_not_null(r.echo_text[1]); /* token ids, detokenized */
    hs__api_req_free(&r);
    expect(CMPL, "{\"prompt\":\"x\",\"echo\":true,\"logprobs\":2}", 400, "echo");
    expect(CMPL, "{\"prompt\":\"x\",\"suffix\":\"tail\"}", 400, "suffix");
    expect(CMPL, "{\"prompt\":\"x\",\"suffix\":\"\"}", 200, NULL);
    expect(CMPL, "{\"prompt\":\"x\",\"suffix\":null}", 200, NULL);
    expect(CMPL, "{\"prompt\":\"x\",\"n\":3,\"best_of\":2}", 400, "best_of");
    expect(CMPL, "{\"prompt\":\"x\",\"best_of\":2,\"stream\":true}", 400, "best_of");
    expect(CMPL, "{\"prompt\":\"x\",\"best_of\":17}", 400, "best_of");
    cr_assert_eq(parse_as(CMPL, "{\"prompt\":\"x\",\"n\":2,\"best_of\":5}", &r, &err), HS_OK);
    cr_assert_eq(r.er.n, 5);
    cr_assert_eq(r.n_return, 2);
    cr_assert(r.er.logprobs, "best_of ranks by logprob");
    cr_assert(!r.want_logprobs, "the client did not ask for logprobs");
    hs__api_req_free(&r);
    cr_assert_eq(
        parse_as(CMPL, "{\"prompt\":\"x\",\"n\":2,\"best_of\":2,\"stream\":true}", &r, &err),
        HS_OK);
    cr_assert_eq(r.n_return, 2);
    hs__api_req_free(&r);
}

Test(request, output_items_are_capped_per_request)
{
    /* cap 10000: 16 x 100 x (1 + 5) = 9600 fits, x (1 + 6) = 11200 does not */
    expect(CMPL, "{\"prompt\":\"x\",\"n\":16,\"max_tokens\":100,\"logprobs\":5}", 200, NULL);
    expect(CMPL, "{\"prompt\":\"x\",\"n\":16,\"max_tokens\":100,\"logprobs\":6}", 400,
           "max_tokens");
    /* prompts multiply; without logprobs a token is one item */
    expect(CMPL, "{\"prompt\":[\"a\",\"b\",\"c\"],\"n\":10,\"max_tokens\":300}", 200, NULL);
    expect(CMPL, "{\"prompt\":[\"a\",\"b\",\"c\",\"d\"],\"n\":10,\"max_tokens\":300}", 400,
           "max_tokens");
    /* max_tokens past the context counts as the rest of the context (512 here) */
    expect(CMPL, "{\"prompt\":\"x\",\"n\":16,\"max_tokens\":100000}", 200, NULL);
    /* chat without max_tokens fills the context: 16 x ~500 x 2 > 10000 */
    expect(CHAT,
           "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":16,\"logprobs\":true,"
           "\"top_logprobs\":1}",
           400, "max_tokens");
    /* best_of counts what is generated: 12 x 400 x 2 = 9600, 16 x 400 x 2 = 12800 */
    expect(CMPL, "{\"prompt\":\"x\",\"best_of\":12,\"max_tokens\":400,\"logprobs\":1}", 200, NULL);
    expect(CMPL, "{\"prompt\":\"x\",\"best_of\":16,\"max_tokens\":400,\"logprobs\":1}", 400,
           "max_tokens");
}

Test(request, cache_salt_is_kept_and_checked)
{
    struct hs__api_req r;
    struct hs__api_err err;
    cr_assert_eq(parse_as(CMPL, "{\"prompt\":\"x\",\"cache_salt\":\"tenant-a\"}", &r, &err), HS_OK);
    cr_assert_eq(r.n_cache_salt, 8);
    cr_assert_str_eq(r.cache_salt, "tenant-a");
    hs__api_req_free(&r);
    cr_assert_null(r.cache_salt);
    expect(CMPL, "{\"prompt\":\"x\",\"cache_salt\":\"\"}", 400, "cache_salt");
    expect(CMPL, "{\"prompt\":\"x\",\"cache_salt\":5}", 400, "cache_salt");
    char body[600];
    snprintf(body, sizeof(body), "{\"prompt\":\"x\",\"cache_salt\":\"%0257d\"}", 0);
    expect(CMPL, body, 400, "cache_salt");
}

Test(request, speculation_can_be_turned_off_per_request)
{
    struct hs__api_req r;
    struct hs__api_err err;
    cr_assert_eq(parse_as(CMPL, "{\"prompt\":\"x\"}", &r, &err), HS_OK);
    cr_assert(!r.er.no_speculation, "speculation is on unless a request turns it off");
    hs__api_req_free(&r);
    cr_assert_eq(
        parse_as(CMPL, "{\"prompt\":\"x\",\"hetserve\":{\"speculative\":false}}", &r, &err), HS_OK);
    cr_assert(r.er.no_speculation);
    hs__api_req_free(&r);
    expect(CMPL, "{\"prompt\":\"x\",\"hetserve\":{\"speculative\":\"off\"}}", 400, "speculative");
}

Test(request, user_is_escaped_for_logs)
{
    struct hs__api_req r;
    struct hs__api_err err;
    cr_assert_eq(
        parse_as(CMPL,
                 "{\"prompt\":\"x\",\"user\":\"a\\nhetserve: info: req=9 -> 200\\r\\u001b[31m\"}",
                 &r, &err),
        HS_OK);
    cr_assert_null(strpbrk(r.user, "\r\n\x1b"), "%s", r.user);
    cr_assert(!strncmp(r.user, "a\\x0ahetserve: info: req=9 -> 200\\x0d\\x1b[31m", 40), "%s",
              r.user);
    hs__api_req_free(&r);
}

Test(request, log_escape_cuts_and_escapes)
{
    char out[16];
    hs__api_log_escape(out, sizeof(out), "ok", 2);
    cr_assert_str_eq(out, "ok");
    hs__api_log_escape(out, sizeof(out), "a\"b\\c\n", 6);
    cr_assert_str_eq(out, "a\\x22b\\x5cc\\x0a");
    hs__api_log_escape(out, sizeof(out), "a\"b\\c\nd", 7);
    cr_assert_str_eq(out, "a\\x22b\\x5cc...");
    hs__api_log_escape(out, sizeof(out), "0123456789abcdefghij", 20);
    cr_assert_eq(strlen(out), 15);
    cr_assert_str_eq(out + 12, "...");
    hs__api_log_escape(out, sizeof(out), "\xff\x00z", 3);
    cr_assert_str_eq(out, "\\xff\\x00z");
}

Test(request, json_string_writer_round_trips)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want; /* UTF-8 after parsing back */
    } cases[] = {
        {"plain", 5, "plain"},
        {"q\"b\\s/", 6, "q\"b\\s/"},
        {"\n\t\r\x01\x1f", 5, "\n\t\r\x01\x1f"},
        {"caf\xc3\xa9 \xe2\x82\xac", 9, "caf\xc3\xa9 \xe2\x82\xac"},
        {"bad\xff\xc3(", 6, "bad\xef\xbf\xbd\xef\xbf\xbd("},
        {"nul\0x", 5, "nul\xef\xbf\xbdx"},
        {"", 0, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hs__buf b = {0};
        hs__buf_json_str(&b, cases[i].in, cases[i].n);
        cr_assert(!b.oom);
        json_error_t je;
        json_t *j = json_loadb(b.p, b.len, JSON_DECODE_ANY, &je);
        cr_assert_not_null(j, "case %zu: %s does not parse: %s", i, b.p, je.text);
        cr_assert_str_eq(json_string_value(j), cases[i].want, "case %zu: %s", i, b.p);
        json_decref(j);
        hs__buf_free(&b);
    }
}
