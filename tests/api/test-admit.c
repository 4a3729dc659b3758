/* tests/api: admission (api/admit.c). The key file's format and its errors, the constant-time
 * key lookup, the rate-limit buckets on a fake clock, the reset-duration format; then in
 * process on 127.0.0.1 port 0: a key over its limits gets 429 with Retry-After and OpenAI's
 * x-ratelimit-* headers while another key is served, and a server without a model answers 503
 * "loading" until one is attached. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api.h"
#include "api/server-impl.h"
#include "model/model.h"
#include "server/engine.h"

/* ---- the key file ---- */

static hs_status parse(struct hs__keyring *kr, const char *text, struct hs_error *err)
{
    hs__keyring_init(kr);
    return hs__keyring_parse(kr, "keys.txt", text, strlen(text), err);
}

Test(admit, key_file_keys_limits_comments_and_crlf)
{
    struct hs__keyring kr;
    struct hs_error err = {0};
    const char *text = "# tenants\n"
                       "\n"
                       "sk-alice rpm=60 tpm=100000\r\n"
                       "   sk-bob\t tpm=5  # a comment after the fields\n"
                       "sk-carol rpm=1000000000";
    cr_assert_eq(parse(&kr, text, &err), HS_OK, "%s", err.message);
    cr_assert_eq(kr.n, 3);
    cr_assert(kr.limited);
    cr_assert_eq(kr.keys[0].len, 8);
    cr_assert_eq(kr.keys[0].req.limit, 60);
    cr_assert_eq(kr.keys[0].tok.limit, 100000);
    cr_assert_eq(kr.keys[0].line, 3);
    cr_assert_eq(kr.keys[1].req.limit, 0);
    cr_assert_eq(kr.keys[1].tok.limit, 5);
    cr_assert_eq(kr.keys[2].req.limit, 1000000000);
    cr_assert_eq(hs__keyring_find(&kr, "sk-alice", 8), 1);
    cr_assert_eq(hs__keyring_find(&kr, "sk-bob", 6), 2);
    cr_assert_eq(hs__keyring_find(&kr, "sk-carol", 8), 3);
    hs__keyring_finish(&kr);
}

Test(admit, malformed_key_files_name_the_line_and_never_the_key)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"k1\nk2 rpm=5 burst=3\n", "keys.txt:2: field 3 is not rpm=N or tpm=N"},
        {"k1 k2\n", "keys.txt:1: field 2"},
        {"\n\nk1 rpm=0\n", "keys.txt:3: rpm must be a whole number from 1 to"},
        {"k1 tpm=12x\n", "keys.txt:1: tpm must be"},
        {"k1 rpm=99999999999\n", "keys.txt:1: rpm must be"},
        {"k1 rpm=\n", "keys.txt:1: field 2 is not"},
        {"k1 rpm=1 rpm=2\n", "keys.txt:1: rpm is given twice"},
        {"k1\n# x\nk1 rpm=3\n", "keys.txt:3: an API key is given twice (first on line 1)"},
        {"k\x01x\n", "keys.txt:1: the key must be 1 to 256 visible ASCII"},
        {"caf\xc3\xa9\n", "keys.txt:1: the key must be"},
        {"", "keys.txt: no keys"},
        {"# only a comment\n\n  \n", "keys.txt: no keys"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hs__keyring kr;
        struct hs_error err = {0};
        cr_assert_eq(parse(&kr, cases[i].text, &err), HS_E_FORMAT, "case %zu passed", i);
        cr_assert(strstr(err.message, cases[i].want), "case %zu: %s", i, err.message);
        cr_assert_null(strstr(err.message, "k1 "), "case %zu quotes a key: %s", i, err.message);
        cr_assert_null(strstr(err.message, "k2"), "case %zu quotes a key: %s", i, err.message);
        hs__keyring_finish(&kr);
    }
    char big[400];
    memset(big, 'a', 257);
    big[257] = '\0';
    struct hs__keyring kr;
    struct hs_error err = {0};
    cr_assert_eq(parse(&kr, big, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "keys.txt:1:"), "%s", err.message);
    hs__keyring_finish(&kr);
    const char nul[] = "k1\nk\0z\n";
    hs__keyring_init(&kr);
    cr_assert_eq(hs__keyring_parse(&kr, "keys.txt", nul, sizeof(nul) - 1, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "NUL"), "%s", err.message);
    hs__keyring_finish(&kr);
}

Test(admit, key_lookup_matches_whole_keys_only)
{
    struct hs__keyring kr;
    hs__keyring_init(&kr);
    char k256[HS__MAX_KEY_BYTES + 2];
    memset(k256, 'z', sizeof(k256));
    const char *keys[] = {"abc", "abcd", "xbc"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(hs__keyring_add(&kr, keys[i], strlen(keys[i]), 0, 0, 0, NULL), HS_OK);
    }
    cr_assert_eq(hs__keyring_add(&kr, k256, HS__MAX_KEY_BYTES, 0, 0, 0, NULL), HS_OK);
    cr_assert_eq(hs__keyring_add(&kr, k256, HS__MAX_KEY_BYTES + 1, 0, 0, 0, NULL), HS_E_INVAL);
    cr_assert_eq(hs__keyring_add(&kr, "", 0, 0, 0, 0, NULL), HS_E_INVAL);
    cr_assert_eq(hs__keyring_add(&kr, "a b", 3, 0, 0, 0, NULL), HS_E_INVAL);
    cr_assert_eq(hs__keyring_add(&kr, "abc", 3, 0, 0, 0, NULL), HS_E_INVAL, "a duplicate");
    cr_assert_eq(hs__keyring_find(&kr, "abc", 3), 1);
    cr_assert_eq(hs__keyring_find(&kr, "abcd", 4), 2);
    cr_assert_eq(hs__keyring_find(&kr, "xbc", 3), 3);
    cr_assert_eq(hs__keyring_find(&kr, k256, HS__MAX_KEY_BYTES), 4);
    /* prefixes, extensions, a token padded with NULs, one byte off anywhere */
    cr_assert_eq(hs__keyring_find(&kr, "ab", 2), -1);
    cr_assert_eq(hs__keyring_find(&kr, "abcde", 5), -1);
    cr_assert_eq(hs__keyring_find(&kr, "abc\0", 4), -1);
    cr_assert_eq(hs__keyring_find(&kr, "", 0), -1);
    cr_assert_eq(hs__keyring_find(&kr, k256, HS__MAX_KEY_BYTES + 1), -1);
    cr_assert_eq(hs__keyring_find(&kr, k256, HS__MAX_KEY_BYTES - 1), -1);
    char probe[HS__MAX_KEY_BYTES];
    for (size_t at = 0; at < sizeof(probe); at += 51) {
        memset(probe, 'z', sizeof(probe));
        probe[at] = 'y';
        cr_assert_eq(hs__keyring_find(&kr, probe, sizeof(probe)), -1, "differs at %zu", at);
    }
    char huge[4096];
    memset(huge, 'z', sizeof(huge));
    cr_assert_eq(hs__keyring_find(&kr, huge, sizeof(huge)), -1);
    hs__keyring_finish(&kr);
}

/* ---- buckets on a fake clock ---- */

Test(admit, requests_per_minute_refill_continuously)
{
    struct hs__keyring kr;
    hs__keyring_init(&kr);
    cr_assert_eq(hs__keyring_add(&kr, "a", 1, 3, 0, 0, NULL), HS_OK);
    cr_assert_eq(hs__keyring_add(&kr, "b", 1, 3, 0, 0, NULL), HS_OK);
    int64_t t = kr.keys[0].req.t_ms;
    struct hs__rl_refusal why;
    for (int i = 0; i < 3; i++) {
        cr_assert(hs__keyring_charge(&kr, 1, 1, 0, t, &why), "request %d", i);
    }
    cr_assert_not(hs__keyring_charge(&kr, 1, 1, 0, t, &why));
    cr_assert_not(why.tokens);
    cr_assert_not(why.never);
    cr_assert_eq(why.limit, 3);
    cr_assert_eq(why.retry_s, 20, "3 per minute: one every 20 s, got %lld", (long long)why.retry_s);
    cr_assert(hs__keyring_charge(&kr, 2, 1, 0, t, &why), "another key is unaffected");
    cr_assert_not(hs__keyring_charge(&kr, 1, 1, 0, t + 19999, &why));
    cr_assert_eq(why.retry_s, 1);
    cr_assert(hs__keyring_charge(&kr, 1, 1, 0, t + 20000, &why));
    struct hs__rl_view v[2];
    cr_assert(hs__keyring_view(&kr, 1, t + 20000, v));
    cr_assert_eq(v[0].limit, 3);
    cr_assert_eq(v[0].remaining, 0);
    cr_assert_eq(v[0].reset_ms, 60000);
    cr_assert_eq(v[1].limit, 0, "no token limit");
    /* an hour idle refills one minute's worth, no more */
    cr_assert(hs__keyring_view(&kr, 1, t + 3600000, v));
    cr_assert_eq(v[0].remaining, 3);
    cr_assert_eq(v[0].reset_ms, 0);
    /* tenant 0 (no keys) and keys without limits always pass */
    cr_assert(hs__keyring_charge(&kr, 0, 1000, 1000, t, &why));
    hs__keyring_finish(&kr);
}

Test(admit, tokens_are_charged_up_front_and_settled_with_usage)
{
    struct hs__keyring kr;
    hs__keyring_init(&kr);
    cr_assert_eq(hs__keyring_add(&kr, "a", 1, 0, 150, 0, NULL), HS_OK);
    int64_t t = kr.keys[0].tok.t_ms;
    struct hs__rl_refusal why;
    cr_assert(hs__keyring_charge(&kr, 1, 1, 100, t, &why));
    cr_assert_not(hs__keyring_charge(&kr, 1, 1, 100, t, &why));
    cr_assert(why.tokens);
    cr_assert_eq(why.need, 100);
    cr_assert_eq(why.retry_s, 20, "50 short at 150/min: 20 s, got %lld", (long long)why.retry_s);
    hs__keyring_settle(&kr, 1, 100, 10, t); /* it used 10 of 100 */
    struct hs__rl_view v[2];
    cr_assert(hs__keyring_view(&kr, 1, t, v));
    cr_assert_eq(v[1].remaining, 140);
    cr_assert(hs__keyring_charge(&kr, 1, 1, 100, t, &why));
    /* more than a minute's worth can never pass */
    cr_assert_not(hs__keyring_charge(&kr, 1, 1, 151, t + 3600000, &why));
    cr_assert(why.never);
    cr_assert_eq(why.limit, 150);
    /* an overrun is a debt: nothing remains until it is paid off */
    hs__keyring_settle(&kr, 1, 10, 400, t + 3600000);
    cr_assert(hs__keyring_view(&kr, 1, t + 3600000, v));
    cr_assert_eq(v[1].remaining, 0);
    cr_assert_gt(v[1].reset_ms, 60000);
    hs__keyring_finish(&kr);
}

Test(admit, reset_durations_print_as_openai_does)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {{0, "0ms"},       {17, "17ms"},       {999, "999ms"},  {1000, "1s"},
                 {1500, "1.5s"},   {59964, "59.964s"}, {60000, "1m0s"}, {61250, "1m1.25s"},
                 {360000, "6m0s"}, {7200000, "120m0s"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[40];
        hs__rl_duration(out, sizeof(out), cases[i].ms);
        cr_assert_str_eq(out, cases[i].want, "%lld ms", (long long)cases[i].ms);
    }
}

/* ---- in process ---- */

struct reply {
    int status;
    char head[4096];
    char *body;
};

static void reply_free(struct reply *r)
{
    free(r->body);
}

/* One request on a fresh connection (Connection: close), read to the end. */
static struct reply http(uint16_t port, const char *method, const char *path, const char *key,
                         const char *body)
{
    struct reply r = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, key ? "Authorization: Bearer " : "", key ? key : "",
                     key ? "\r\n" : "", body ? "Content-Type: application/json\r\n" : "",
                     body ? strlen(body) : 0, body ? body : "");
    cr_assert_eq(write(fd, req, (size_t)n), n);
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    ssize_t k;
    while ((k = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)k;
        if (len + 1 == cap) {
            buf = realloc(buf, cap *= 2);
        }
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    cr_assert_not_null(sep, "no response: %s", buf);
    sscanf(buf, "HTTP/1.1 %d", &r.status);
    size_t hl = (size_t)(sep - buf);
    memcpy(r.head, buf, HS_MIN(hl, sizeof(r.head) - 1));
    for (char *p = r.head; *p; p++) {
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
    r.body = strdup(sep + 4);
    free(buf);
    return r;
}

/* The value of header name (lower case) in r, or NULL; static buffer. */
static const char *header(const struct reply *r, const char *name)
{
    static char v[256];
    char pat[96];
    snprintf(pat, sizeof(pat), "\r\n%s: ", name);
    const char *p = strstr(r->head, pat);
    if (!p) {
        return NULL;
    }
    p += strlen(pat);
    size_t n = strcspn(p, "\r");
    snprintf(v, sizeof(v), "%.*s", (int)HS_MIN(n, sizeof(v) - 1), p);
    return v;
}

static const char *error_code(const struct reply *r)
{
    static char code[64];
    json_t *j = json_loads(r->body, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", r->body);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    snprintf(code, sizeof(code), "%s", c ? c : "(none)");
    json_decref(j);
    return code;
}

static struct {
    struct hs_model *model;
    struct hs_engine *eng;
    struct hs_api_server *srv;
    char keyfile[64];
} g;

static void load_model(void)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert_not_null(dir, "HS_MODELS_DIR is not set");
    char path[1024];
    snprintf(path, sizeof(path), "%s/stories260K.gguf", dir);
    struct hs_error err = {0};
    cr_assert_eq(hs_model_load(path, &g.model, &err), HS_OK, "%s", err.message);
    struct hs_engine_params ep = hs_engine_default_params();
    ep.n_ctx = 256;
    ep.n_parallel = 2;
    ep.n_threads = 1;
    cr_assert_eq(hs_engine_create(g.model, &ep, &g.eng, &err), HS_OK, "%s", err.message);
}

static const char *write_keyfile(const char *text)
{
    snprintf(g.keyfile, sizeof(g.keyfile), "/tmp/hs-test-keys-XXXXXX");
    int fd = mkstemp(g.keyfile);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return g.keyfile;
}

static void stop_all(void)
{
    hs_api_server_stop(g.srv);
    hs_engine_destroy(g.eng);
    hs_model_destroy(g.model);
    if (g.keyfile[0]) {
        unlink(g.keyfile);
    }
    memset(&g, 0, sizeof(g));
}

Test(admit, key_over_its_limits_gets_429_and_another_key_is_served, .fini = stop_all, .timeout = 60)
{
    load_model();
    struct hs_api_params ap = hs_api_default_params();
    ap.port = 0;
    ap.api_key = "flag-key";
    ap.api_key_file = write_keyfile("slow rpm=2 tpm=100000\nsmall tpm=40\nfree\nsettle tpm=40\n");
    struct hs_error err = {0};
    cr_assert_eq(hs_api_server_start(g.model, g.eng, &ap, &g.srv, &err), HS_OK, "%s", err.message);
    uint16_t port = hs_api_server_port(g.srv);
    const char *body = "{\"prompt\":\"Once\",\"max_tokens\":4}";
    for (int i = 0; i < 2; i++) {
        struct reply r = http(port, "POST", "/v1/completions", "slow", body);
        cr_assert_eq(r.status, 200, "request %d: %s", i, r.body);
        cr_assert_str_eq(header(&r, "x-ratelimit-limit-requests"), "2");
        char want[8];
        snprintf(want, sizeof(want), "%d", 1 - i);
        cr_assert_str_eq(header(&r, "x-ratelimit-remaining-requests"), want);
        cr_assert_str_eq(header(&r, "x-ratelimit-limit-tokens"), "100000");
        cr_assert_not_null(header(&r, "x-ratelimit-reset-tokens"));
        reply_free(&r);
    }
    struct reply r = http(port, "POST", "/v1/completions", "slow", body);
    cr_assert_eq(r.status, 429, "%s", r.body);
    cr_assert_str_eq(error_code(&r), "rate_limit_exceeded");
    cr_assert(strstr(r.body, "\"type\":\"rate_limit_error\""), "%s", r.body);
    cr_assert_not_null(header(&r, "retry-after"));
    long retry = strtol(header(&r, "retry-after"), NULL, 10);
    cr_assert(retry >= 29 && retry <= 30, "Retry-After %ld at 2 requests per minute", retry);
    cr_assert_str_eq(header(&r, "x-ratelimit-remaining-requests"), "0");
    cr_assert_not_null(header(&r, "x-ratelimit-reset-requests"));
    reply_free(&r);
    /* other keys: unaffected, and unlimited keys carry no rate-limit headers */
    for (int i = 0; i < 4; i++) {
        r = http(port, "POST", "/v1/completions", i % 2 ? "free" : "flag-key", body);
        cr_assert_eq(r.status, 200, "%s", r.body);
        cr_assert_null(header(&r, "x-ratelimit-limit-requests"));
        reply_free(&r);
    }
    r = http(port, "GET", "/v1/models", "slowx", NULL);
    cr_assert_eq(r.status, 401);
    cr_assert_str_eq(error_code(&r), "invalid_api_key");
    reply_free(&r);
    /* tokens: prompt (2) + max_tokens; 60 can never fit 40 a minute */
    r = http(port, "POST", "/v1/completions", "small", "{\"prompt\":\"Once\",\"max_tokens\":60}");
    cr_assert_eq(r.status, 429, "%s", r.body);
    cr_assert_str_eq(error_code(&r), "rate_limit_exceeded");
    cr_assert_null(header(&r, "retry-after"), "waiting cannot help");
    cr_assert_str_eq(header(&r, "x-should-retry"), "false");
    reply_free(&r);
    /* 2 + 30 fits; settled with its usage (2 + 30: ignore_eos), the rest is refused */
    r = http(port, "POST", "/v1/completions", "small",
             "{\"prompt\":\"Once\",\"max_tokens\":30,\"ignore_eos\":true}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    reply_free(&r);
    r = http(port, "POST", "/v1/completions", "small", "{\"prompt\":\"Once\",\"max_tokens\":30}");
    cr_assert_eq(r.status, 429, "%s", r.body);
    cr_assert_not_null(header(&r, "retry-after"));
    reply_free(&r);
    /* an answer cut short by a stop string gives back what it did not use: charged 2 + 30,
     * it used 2 + 2, so a second such request fits (without the refund it would not) */
    const char *stopped = "{\"prompt\":\"Once\",\"max_tokens\":30,\"stop\":[\"a time\"]}";
    for (int i = 0; i < 2; i++) {
        r = http(port, "POST", "/v1/completions", "settle", stopped);
        cr_assert_eq(r.status, 200, "request %d: %s", i, r.body);
        json_t *j = json_loads(r.body, 0, NULL);
        json_int_t used =
            json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
        json_decref(j);
        cr_assert_lt(used, 8, "the stop string did not cut the answer (%d tokens)", (int)used);
        reply_free(&r);
    }
}

Test(admit, malformed_key_file_stops_the_start, .fini = stop_all)
{
    struct hs_api_params ap = hs_api_default_params();
    ap.port = 0;
    ap.api_key_file = write_keyfile("good rpm=5\nbad rpm=five\n");
    struct hs_error err = {0};
    cr_assert_eq(hs_api_server_listen(&ap, &g.srv, &err), HS_E_INVAL);
    cr_assert_null(g.srv);
    char want[96];
    snprintf(want, sizeof(want), "%s:2: rpm must be", g.keyfile);
    cr_assert(strstr(err.message, want), "%s", err.message);
    ap.api_key_file = "/nonexistent/keys";
    cr_assert_eq(hs_api_server_listen(&ap, &g.srv, &err), HS_E_IO);
    cr_assert(strstr(err.message, "/nonexistent/keys"), "%s", err.message);
    ap.api_key_file = NULL;
    const char *dup[] = {"k", "k"};
    ap.api_keys = dup;
    ap.n_api_keys = 2;
    cr_assert_eq(hs_api_server_listen(&ap, &g.srv, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "given twice"), "%s", err.message);
}

Test(admit, loading_answers_503_until_a_model_is_attached, .fini = stop_all, .timeout = 60)
{
    struct hs_api_params ap = hs_api_default_params();
    ap.port = 0;
    struct hs_error err = {0};
    cr_assert_eq(hs_api_server_listen(&ap, &g.srv, &err), HS_OK, "%s", err.message);
    uint16_t port = hs_api_server_port(g.srv);
    struct reply r = http(port, "GET", "/health", NULL, NULL);
    cr_assert_eq(r.status, 503);
    cr_assert_str_eq(r.body, "{\"status\":\"loading\"}");
    cr_assert_not_null(header(&r, "retry-after"));
    reply_free(&r);
    const char *paths[][2] = {{"POST", "/v1/completions"},
                              {"POST", "/v1/chat/completions"},
                              {"GET", "/v1/models"},
                              {"GET", "/metrics"},
                              {"POST", "/tokenize"}};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        bool post = !strcmp(paths[i][0], "POST");
        r = http(port, paths[i][0], paths[i][1], NULL, post ? "{\"prompt\":\"x\"}" : NULL);
        cr_assert_eq(r.status, 503, "%s %s", paths[i][0], paths[i][1]);
        cr_assert_str_eq(error_code(&r), "model_loading");
        cr_assert(strstr(r.body, "\"type\":\"service_unavailable_error\""), "%s", r.body);
        cr_assert_not_null(header(&r, "retry-after"));
        reply_free(&r);
    }
    load_model();
    cr_assert_eq(hs_api_server_attach(g.srv, g.model, g.eng, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_api_server_attach(g.srv, g.model, g.eng, &err), HS_E_INVAL, "twice");
    r = http(port, "GET", "/health", NULL, NULL);
    cr_assert_eq(r.status, 200);
    reply_free(&r);
    r = http(port, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\",\"max_tokens\":2}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    reply_free(&r);
}
