/* tests/api: the HTTP layer, in-process on 127.0.0.1 (port 0), spoken to with libcurl and raw
 * sockets. Generated text is checked against a naive greedy loop over hs_model_forward, token
 * counts against hs_tokenize of hand-written prompts. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "model/gguf/gguf.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"

/* ---- fixture ---- */

static struct {
    struct hs_model *model;
    struct hs_engine *eng;
    struct hs_api_server *srv;
    uint16_t port;
} g;

static char *model_path(const char *name)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert_not_null(dir, "HS_MODELS_DIR is not set");
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static void start_with(const char *model, const struct hs_engine_params *ep,
                       const struct hs_api_params *ap)
{
    struct hs_error err = {0};
    char *path = model_path(model);
    cr_assert_eq(hs_model_load(path, &g.model, &err), HS_OK, "load %s: %s", path, err.message);
    free(path);
    cr_assert_eq(hs_engine_create(g.model, ep, &g.eng, &err), HS_OK, "engine: %s", err.message);
    cr_assert_eq(hs_api_server_start(g.model, g.eng, ap, &g.srv, &err), HS_OK, "server: %s",
                 err.message);
    g.port = hs_api_server_port(g.srv);
    cr_assert_neq(g.port, 0);
}

static struct hs_engine_params test_engine_params(void)
{
    struct hs_engine_params ep = hs_engine_default_params();
    ep.n_ctx = 512;
    ep.n_parallel = 4;
    ep.n_threads = 1;
    return ep;
}

static struct hs_api_params test_api_params(void)
{
    struct hs_api_params ap = hs_api_default_params();
    ap.port = 0;
    ap.model_name = "test-model";
    return ap;
}

static void start_default(void)
{
    struct hs_engine_params ep = test_engine_params();
    struct hs_api_params ap = test_api_params();
    start_with("stories260K.gguf", &ep, &ap);
}

static void stop_all(void)
{
    hs_api_server_stop(g.srv);
    hs_engine_destroy(g.eng);
    hs_model_destroy(g.model);
    memset(&g, 0, sizeof(g));
}

/* ---- HTTP client ---- */

struct resp {
    long status;
    char *body;
    size_t len;
    char headers[4096];
    size_t hlen;
    size_t abort_after; /* > 0: fail the transfer once this many body bytes arrived */
};

static size_t on_body(char *p, size_t sz, size_t n, void *user)
{
    struct resp *r = user;
    size_t k = sz * n;
    r->body = realloc(r->body, r->len + k + 1);
    memcpy(r->body + r->len, p, k);
    r->len += k;
    r->body[r->len] = '\0';
    if (r->abort_after && r->len >= r->abort_after) {
        return 0;
    }
    return k;
}

static size_t on_header(char *p, size_t sz, size_t n, void *user)
{
    struct resp *r = user;
    size_t k = sz * n;
    size_t c = HS_MIN(k, sizeof(r->headers) - 1 - r->hlen);
    memcpy(r->headers + r->hlen, p, c);
    r->hlen += c;
    r->headers[r->hlen] = '\0';
    return k;
}

/* Performs a request; body NULL: GET (unless method says otherwise). Returns the curl code. */
static CURLcode http_ex(const char *method, const char *path, const char *body, const char *auth,
                        struct resp *r)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", (unsigned)g.port, path);
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (auth) {
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    if (method) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r->body) {
        r->body = calloc(1, 1);
    }
    return cc;
}

static struct resp http(const char *method, const char *path, const char *body)
{
    struct resp r = {0};
    CURLcode cc = http_ex(method, path, body, NULL, &r);
    cr_assert_eq(cc, CURLE_OK, "%s %s: %s", method ? method : "GET", path, curl_easy_strerror(cc));
    return r;
}

static json_t *parse(const struct resp *r)
{
    json_error_t e;
    json_t *j = json_loads(r->body, 0, &e);
    cr_assert_not_null(j, "response is not JSON (%s): %.300s", e.text, r->body);
    return j;
}

/* POST body to path, expect status, return the parsed JSON. */
static json_t *post_json(const char *path, const char *body, long want)
{
    struct resp r = http("POST", path, body);
    cr_assert_eq(r.status, want, "POST %s %.200s: status %ld, body %.400s", path, body, r.status,
                 r.body);
    json_t *j = parse(&r);
    free(r.body);
    return j;
}

static void expect_error(const char *path, const char *body, long want, const char *param,
                         const char *needle)
{
    json_t *j = post_json(path, body, want);
    json_t *e = json_object_get(j, "error");
    cr_assert(json_is_object(e), "no error object for %s", body);
    cr_assert(json_is_string(json_object_get(e, "message")));
    cr_assert(json_is_string(json_object_get(e, "type")));
    cr_assert(json_object_get(e, "param") && json_object_get(e, "code"),
              "error must carry param and code (maybe null)");
    if (param) {
        cr_assert_str_eq(json_string_value(json_object_get(e, "param")), param, "param for %s",
                         body);
    }
    if (needle) {
        cr_assert(strstr(json_string_value(json_object_get(e, "message")), needle),
                  "message '%s' lacks '%s'", json_string_value(json_object_get(e, "message")),
                  needle);
    }
    json_decref(j);
}

/* Value of a metric line "name{...} v" (first match), -1 when absent. */
static double metric(const char *name)
{
    struct resp r = http(NULL, "/metrics", NULL);
    cr_assert_eq(r.status, 200);
    double v = -1;
    size_t nl = strlen(name);
    for (char *line = r.body; line && *line;) {
        char *end = strchr(line, '\n');
        if (end) {
            *end = '\0';
        }
        if (!strncmp(line, name, nl) && (line[nl] == '{' || line[nl] == ' ')) {
            char *sp = strrchr(line, ' ');
            v = strtod(sp + 1, NULL);
            break;
        }
        line = end ? end + 1 : NULL;
    }
    free(r.body);
    return v;
}

/* ---- references ---- */

static int32_t ref_tokenize(const char *text, bool add_special, hs_token *out, int32_t cap)
{
    size_t n = 0;
    cr_assert_eq(hs_tokenize(hs_model_vocab(g.model), text, strlen(text), add_special, true, out,
                             (size_t)cap, &n),
                 HS_OK);
    return (int32_t)n;
}

/* Naive greedy continuation of prompt: a fresh context, argmax of the logits each step, stop at
 * an end-of-generation token. Writes the generated ids (EOG excluded), returns how many; the
 * first step's log-softmax of token out[0] in *first_logprob. */
static int32_t ref_greedy(const hs_token *prompt, int32_t n_prompt, int32_t max_tokens,
                          hs_token *out, double *first_logprob)
{
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = 512;
    cp.backend_params.n_threads = 1;
    struct hs_context *ctx = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_context_create(g.model, &cp, &ctx, &err), HS_OK, "%s", err.message);
    int32_t table[64];
    for (int32_t i = 0; i < 64; i++) {
        table[i] = i;
    }
    const struct hs_vocab *v = hs_model_vocab(g.model);
    int32_t n_vocab = hs_vocab_n_tokens(v);
    struct hs_forward_seq fs = {prompt, n_prompt, 0, table, 1, 0};
    cr_assert_eq(hs_model_forward(ctx, &fs, 1), HS_OK);
    int32_t n_past = n_prompt, n = 0;
    while (n < max_tokens) {
        const float *l = hs_context_logits(ctx);
        hs_token best = 0;
        for (int32_t t = 1; t < n_vocab; t++) {
            if (l[t] > l[best]) {
                best = t;
            }
        }
        if (n == 0 && first_logprob) {
            double m = l[best], s = 0;
            for (int32_t t = 0; t < n_vocab; t++) {
                s += exp((double)l[t] - m);
            }
            *first_logprob = -log(s);
        }
        if (hs_vocab_is_eog(v, best)) {
            break;
        }
        out[n++] = best;
        if (n == max_tokens) {
            break;
        }
        struct hs_forward_seq st = {&out[n - 1], 1, n_past++, table, 1, 0};
        cr_assert_eq(hs_model_forward(ctx, &st, 1), HS_OK);
    }
    hs_context_destroy(ctx);
    return n;
}

/* Text of ids, piece by piece (the reference detokenizer: raw pieces joined). */
static char *ref_text(const hs_token *ids, int32_t n)
{
    size_t cap = (size_t)n * 64 + 1, len = 0;
    char *s = malloc(cap);
    for (int32_t i = 0; i < n; i++) {
        len += hs_vocab_piece(hs_model_vocab(g.model), ids[i], false, s + len, cap - len);
    }
    s[len] = '\0';
    return s;
}

static const char *choice_text(json_t *resp, size_t i)
{
    json_t *c = json_array_get(json_object_get(resp, "choices"), i);
    json_t *m = json_object_get(c, "message");
    return json_string_value(m ? json_object_get(m, "content") : json_object_get(c, "text"));
}

static const char *finish(json_t *resp, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(resp, "choices"), i), "finish_reason"));
}

static json_int_t usage(json_t *resp, const char *field)
{
    json_t *u = json_object_get(resp, "usage");
    if (!strcmp(field, "cached_tokens")) {
        return json_integer_value(
            json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    }
    return json_integer_value(json_object_get(u, field));
}

/* ---- SSE ---- */

struct sse {
    json_t *events[512];
    int n;
    bool done_last; /* "data: [DONE]" was the last event */
};

static void parse_sse(const char *body, struct sse *s)
{
    memset(s, 0, sizeof(*s));
    const char *p = body;
    while (*p) {
        cr_assert(!strncmp(p, "data: ", 6), "SSE line must start with 'data: ': %.80s", p);
        const char *end = strstr(p, "\n\n");
        cr_assert_not_null(end, "SSE event must end with a blank line");
        size_t n = (size_t)(end - p - 6);
        cr_assert(!s->done_last, "events after [DONE]");
        if (n == 6 && !strncmp(p + 6, "[DONE]", 6)) {
            s->done_last = true;
        } else {
            json_error_t e;
            cr_assert_lt(s->n, 512);
            s->events[s->n] = json_loadb(p + 6, n, 0, &e);
            cr_assert_not_null(s->events[s->n], "chunk is not JSON: %.*s", (int)n, p + 6);
            s->n++;
        }
        p = end + 2;
    }
}

static void free_sse(struct sse *s)
{
    for (int i = 0; i < s->n; i++) {
        json_decref(s->events[i]);
    }
}

/* ======================================================================================== */

TestSuite(api, .init = start_default, .fini = stop_all, .timeout = 120);

Test(api, health_models_and_unknown_routes)
{
    struct resp r = http(NULL, "/health", NULL);
    cr_assert_eq(r.status, 200);
    json_t *j = parse(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    free(r.body);

    r = http(NULL, "/v1/models", NULL);
    cr_assert_eq(r.status, 200);
    j = parse(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "list");
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(m, "id")), "test-model");
    cr_assert_str_eq(json_string_value(json_object_get(m, "object")), "model");
    cr_assert(json_is_integer(json_object_get(m, "created")));
    cr_assert(json_is_string(json_object_get(m, "owned_by")));
    json_decref(j);
    free(r.body);

    r = http(NULL, "/v1/nothing", NULL);
    cr_assert_eq(r.status, 404);
    j = parse(&r);
    cr_assert(json_is_string(json_object_get(json_object_get(j, "error"), "message")));
    json_decref(j);
    free(r.body);

    r = http("DELETE", "/v1/models", NULL);
    cr_assert_eq(r.status, 405);
    free(r.body);
    r = http(NULL, "/v1/chat/completions", NULL);
    cr_assert_eq(r.status, 405);
    free(r.body);
    /* CORS is off by default */
    r = http(NULL, "/health", NULL);
    cr_assert_null(strcasestr(r.headers, "Access-Control-Allow-Origin"));
    free(r.body);
}

Test(api, completion_matches_naive_greedy_loop)
{
    const char *prompt = "Once upon a time";
    hs_token ptok[64], ref[64];
    int32_t np = ref_tokenize(prompt, true, ptok, 64);
    double lp0;
    int32_t n = ref_greedy(ptok, np, 24, ref, &lp0);
    char *want = ref_text(ref, n);

    json_t *j = post_json("/v1/completions",
                          "{\"model\":\"test-model\",\"prompt\":\"Once upon a time\","
                          "\"max_tokens\":24,\"temperature\":0,\"logprobs\":3,\"unknown\":1}",
                          200);
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "text_completion");
    cr_assert_str_eq(json_string_value(json_object_get(j, "model")), "test-model");
    cr_assert(!strncmp(json_string_value(json_object_get(j, "id")), "cmpl-", 5));
    cr_assert(json_is_integer(json_object_get(j, "created")));
    cr_assert_str_eq(choice_text(j, 0), want);
    cr_assert_str_eq(finish(j, 0), n == 24 ? "length" : "stop");
    cr_assert_eq(usage(j, "prompt_tokens"), np);
    cr_assert_eq(usage(j, "completion_tokens"), n);
    cr_assert_eq(usage(j, "total_tokens"), np + n);
    json_t *lp = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs");
    json_t *tl = json_object_get(lp, "token_logprobs");
    cr_assert_eq(json_array_size(tl), (size_t)n);
    cr_assert_eq(json_array_size(json_object_get(lp, "tokens")), (size_t)n);
    cr_assert_float_eq(json_number_value(json_array_get(tl, 0)), lp0, 1e-3, "first logprob");
    json_t *top0 = json_array_get(json_object_get(lp, "top_logprobs"), 0);
    cr_assert_eq(json_object_size(top0), 3);
    json_decref(j);

    /* the same prompt as token ids, and as an array of token-id arrays */
    char body[1024];
    int o = snprintf(body, sizeof(body), "{\"prompt\":[");
    for (int32_t i = 0; i < np; i++) {
        o += snprintf(body + o, sizeof(body) - (size_t)o, "%s%d", i ? "," : "", ptok[i]);
    }
    snprintf(body + o, sizeof(body) - (size_t)o, "],\"max_tokens\":24,\"temperature\":0}");
    j = post_json("/v1/completions", body, 200);
    cr_assert_str_eq(choice_text(j, 0), want);
    json_decref(j);
    free(want);
}

Test(api, completion_prompt_arrays_give_one_choice_each)
{
    hs_token p0[64], p1[64], r0[16], r1[16];
    int32_t n0 = ref_tokenize("Once upon a time", true, p0, 64);
    int32_t n1 = ref_tokenize("The dog", true, p1, 64);
    char *w0 = ref_text(r0, ref_greedy(p0, n0, 8, r0, NULL));
    char *w1 = ref_text(r1, ref_greedy(p1, n1, 8, r1, NULL));
    json_t *j = post_json("/v1/completions",
                          "{\"prompt\":[\"Once upon a time\",\"The dog\"],\"max_tokens\":8,"
                          "\"temperature\":0}",
                          200);
    json_t *ch = json_object_get(j, "choices");
    cr_assert_eq(json_array_size(ch), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(ch, 1), "index")), 1);
    cr_assert_str_eq(choice_text(j, 0), w0);
    cr_assert_str_eq(choice_text(j, 1), w1);
    cr_assert_eq(usage(j, "prompt_tokens"), n0 + n1);
    json_decref(j);
    free(w0);
    free(w1);
}

Test(api, chat_chatml_fallback_token_count_and_text)
{
    /* stories260K has no chat template: ChatML */
    const char *rendered = "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nTell me a "
                           "story.<|im_end|>\n<|im_start|>assistant\n";
    hs_token ptok[256], ref[32];
    int32_t np = ref_tokenize(rendered, true, ptok, 256);
    int32_t n = ref_greedy(ptok, np, 12, ref, NULL);
    char *want = ref_text(ref, n);
    json_t *j =
        post_json("/v1/chat/completions",
                  "{\"model\":\"\",\"messages\":[{\"role\":\"system\",\"content\":\"Be kind.\"},"
                  "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Tell me \"},"
                  "{\"type\":\"text\",\"text\":\"a story.\"}]}],\"max_completion_tokens\":12,"
                  "\"temperature\":0,\"user\":\"u1\"}",
                  200);
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion");
    cr_assert(!strncmp(json_string_value(json_object_get(j, "id")), "chatcmpl-", 9));
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    cr_assert_str_eq(json_string_value(json_object_get(msg, "role")), "assistant");
    cr_assert_str_eq(choice_text(j, 0), want);
    cr_assert_eq(usage(j, "prompt_tokens"), np);
    cr_assert_eq(usage(j, "completion_tokens"), n);
    cr_assert(json_is_null(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs")));
    json_decref(j);
    free(want);
}

Test(api, streaming_format_and_same_text)
{
    json_t *full = post_json("/v1/chat/completions",
                             "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                             "\"max_tokens\":20,\"temperature\":0}",
                             200);
    struct resp r = http("POST", "/v1/chat/completions",
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":20,"
                         "\"temperature\":0,\"stream\":true,"
                         "\"stream_options\":{\"include_usage\":true}}");
    cr_assert_eq(r.status, 200);
    cr_assert(strcasestr(r.headers, "content-type: text/event-stream"), "%s", r.headers);
    struct sse s;
    parse_sse(r.body, &s);
    cr_assert(s.done_last, "stream must end with data: [DONE]");
    cr_assert_geq(s.n, 2);
    char text[4096] = "";
    const char *id0 = json_string_value(json_object_get(s.events[0], "id"));
    const char *fin = NULL;
    for (int i = 0; i < s.n - 1; i++) {
        json_t *e = s.events[i];
        cr_assert_str_eq(json_string_value(json_object_get(e, "object")), "chat.completion.chunk");
        cr_assert_str_eq(json_string_value(json_object_get(e, "id")), id0);
        json_t *c = json_array_get(json_object_get(e, "choices"), 0);
        json_t *d = json_object_get(c, "delta");
        cr_assert_eq(json_object_get(d, "role") != NULL, i == 0, "role only in the first delta");
        if (json_object_get(d, "content")) {
            strcat(text, json_string_value(json_object_get(d, "content")));
        }
        cr_assert_null(fin, "no chunk after the finish_reason chunk but usage");
        if (json_is_string(json_object_get(c, "finish_reason"))) {
            fin = json_string_value(json_object_get(c, "finish_reason"));
        }
    }
    cr_assert_str_eq(fin, finish(full, 0));
    cr_assert_str_eq(text, choice_text(full, 0));
    json_t *last = s.events[s.n - 1];
    cr_assert_eq(json_array_size(json_object_get(last, "choices")), 0);
    cr_assert_eq(usage(last, "completion_tokens"), usage(full, "completion_tokens"));
    cr_assert_eq(usage(last, "prompt_tokens"), usage(full, "prompt_tokens"));
    free_sse(&s);
    free(r.body);

    /* two choices: each index gets its own role-first delta and one finish_reason; logprobs */
    r = http("POST", "/v1/chat/completions",
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":6,"
             "\"temperature\":1,\"seed\":5,\"n\":2,\"stream\":true,\"logprobs\":true}");
    parse_sse(r.body, &s);
    cr_assert(s.done_last);
    int seen[2] = {0, 0}, fins[2] = {0, 0}, n_lp = 0;
    for (int i = 0; i < s.n; i++) {
        json_t *c = json_array_get(json_object_get(s.events[i], "choices"), 0);
        json_int_t idx = json_integer_value(json_object_get(c, "index"));
        cr_assert(idx == 0 || idx == 1);
        bool has_role = json_object_get(json_object_get(c, "delta"), "role") != NULL;
        cr_assert_eq(has_role, seen[idx] == 0, "role only in choice %d's first delta", (int)idx);
        seen[idx]++;
        fins[idx] += json_is_string(json_object_get(c, "finish_reason"));
        json_t *lp = json_object_get(c, "logprobs");
        if (json_is_object(lp)) {
            n_lp += (int)json_array_size(json_object_get(lp, "content"));
        }
    }
    cr_assert(seen[0] > 0 && seen[1] > 0);
    cr_assert(fins[0] == 1 && fins[1] == 1);
    cr_assert_gt(n_lp, 0, "logprobs in the stream");
    free_sse(&s);
    free(r.body);

    /* completions stream, no usage asked */
    r = http("POST", "/v1/completions",
             "{\"prompt\":\"Once\",\"max_tokens\":5,\"temperature\":0,\"stream\":true}");
    parse_sse(r.body, &s);
    cr_assert(s.done_last);
    for (int i = 0; i < s.n; i++) {
        cr_assert_str_eq(json_string_value(json_object_get(s.events[i], "object")),
                         "text_completion");
        cr_assert_null(json_object_get(s.events[i], "usage"));
    }
    free_sse(&s);
    free(r.body);
    json_decref(full);
}

Test(api, stop_strings_cut_the_text)
{
    json_t *j =
        post_json("/v1/completions",
                  "{\"prompt\":\"Once upon a time\",\"max_tokens\":30,\"temperature\":0}", 200);
    char *full = strdup(choice_text(j, 0));
    json_decref(j);
    /* stop at the second word of the continuation */
    const char *sp = strchr(full + 1, ' ');
    cr_assert_not_null(sp, "continuation '%s' has no second word", full);
    char stop[16] = {0};
    memcpy(stop, sp, HS_MIN(strcspn(sp + 1, " ") + 1, sizeof(stop) - 1));
    char body[512];
    snprintf(body, sizeof(body),
             "{\"prompt\":\"Once upon a time\",\"max_tokens\":30,\"temperature\":0,"
             "\"stop\":[\"zzzz\",\"%s\"]}",
             stop);
    j = post_json("/v1/completions", body, 200);
    cr_assert_eq(strlen(choice_text(j, 0)), (size_t)(sp - full), "'%s' stop '%s' -> '%s'", full,
                 stop, choice_text(j, 0));
    cr_assert(!strncmp(choice_text(j, 0), full, (size_t)(sp - full)));
    cr_assert_str_eq(finish(j, 0), "stop");
    json_decref(j);
    /* stop as one string */
    snprintf(body, sizeof(body),
             "{\"prompt\":\"Once upon a time\",\"max_tokens\":30,\"temperature\":0,"
             "\"stop\":\"%s\"}",
             stop);
    j = post_json("/v1/completions", body, 200);
    cr_assert_eq(strlen(choice_text(j, 0)), (size_t)(sp - full));
    json_decref(j);
    free(full);
}

Test(api, n_choices_and_seeds)
{
    const char *body = "{\"prompt\":\"Once upon a time\",\"max_tokens\":12,\"temperature\":1.5,"
                       "\"top_k\":0,\"top_p\":1,\"min_p\":0,\"seed\":7,\"n\":3}";
    json_t *a = post_json("/v1/completions", body, 200);
    json_t *b = post_json("/v1/completions", body, 200);
    json_t *ch = json_object_get(a, "choices");
    cr_assert_eq(json_array_size(ch), 3);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(json_integer_value(json_object_get(json_array_get(ch, i), "index")),
                     (json_int_t)i);
        cr_assert_str_eq(choice_text(a, i), choice_text(b, i), "same seed, same text");
        cr_assert_not_null(finish(a, i));
    }
    /* every choice generates at least one token and at most max_tokens */
    cr_assert_geq(usage(a, "completion_tokens"), 3);
    cr_assert_leq(usage(a, "completion_tokens"), 36);
    cr_assert_eq(usage(a, "completion_tokens"), usage(b, "completion_tokens"));
    bool differ = strcmp(choice_text(a, 0), choice_text(a, 1)) ||
                  strcmp(choice_text(a, 1), choice_text(a, 2));
    cr_assert(differ, "three choices at temperature 1.5 should not all be equal");
    json_decref(a);
    json_decref(b);
}

Test(api, chat_logprobs_against_reference)
{
    const char *rendered = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    hs_token ptok[128], ref[16];
    int32_t np = ref_tokenize(rendered, true, ptok, 128);
    double lp0;
    int32_t n = ref_greedy(ptok, np, 6, ref, &lp0);
    cr_assert_gt(n, 0);
    json_t *j = post_json("/v1/chat/completions",
                          "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                          "\"max_tokens\":6,\"temperature\":0,\"logprobs\":true,"
                          "\"top_logprobs\":4}",
                          200);
    json_t *content = json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs"), "content");
    cr_assert_eq(json_array_size(content), (size_t)n);
    for (size_t i = 0; i < (size_t)n; i++) {
        json_t *e = json_array_get(content, i);
        double lp = json_number_value(json_object_get(e, "logprob"));
        cr_assert_leq(lp, 0);
        json_t *top = json_object_get(e, "top_logprobs");
        cr_assert_eq(json_array_size(top), 4);
        double best = json_number_value(json_object_get(json_array_get(top, 0), "logprob"));
        cr_assert_float_eq(lp, best, 1e-6, "greedy token is the most likely");
        double p = 0;
        for (size_t k = 0; k < 4; k++) {
            double v = json_number_value(json_object_get(json_array_get(top, k), "logprob"));
            if (k) {
                double prev =
                    json_number_value(json_object_get(json_array_get(top, k - 1), "logprob"));
                cr_assert_leq(v, prev);
            }
            p += exp(v);
        }
        cr_assert_leq(p, 1.0 + 1e-4);
        cr_assert(json_is_array(json_object_get(e, "bytes")));
        char piece[64];
        size_t pl = hs_vocab_piece(hs_model_vocab(g.model), ref[i], true, piece, sizeof(piece));
        piece[pl] = '\0';
        cr_assert_str_eq(json_string_value(json_object_get(e, "token")), piece);
    }
    cr_assert_float_eq(json_number_value(json_object_get(json_array_get(content, 0), "logprob")),
                       lp0, 1e-3);
    json_decref(j);
    expect_error("/v1/chat/completions",
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"top_logprobs\":2}", 400,
                 "top_logprobs", NULL);
}

Test(api, prefix_cache_reuse_reports_cached_tokens)
{
    const char *body = "{\"messages\":[{\"role\":\"system\",\"content\":\"You are a storyteller "
                       "who tells short stories about cats and dogs and birds.\"},"
                       "{\"role\":\"user\",\"content\":\"Tell me a story about a cat.\"}],"
                       "\"max_tokens\":4,\"temperature\":0}";
    json_t *a = post_json("/v1/chat/completions", body, 200);
    json_t *b = post_json("/v1/chat/completions", body, 200);
    cr_assert_eq(usage(a, "cached_tokens"), 0);
    cr_assert_gt(usage(b, "cached_tokens"), 0);
    cr_assert_leq(usage(b, "cached_tokens"), usage(b, "prompt_tokens"));
    cr_assert_gt(metric("hetserve:prefix_cache_hit_rate"), 0);
    json_decref(a);
    json_decref(b);
}

Test(api, disconnect_mid_stream_cancels_and_frees_blocks)
{
    struct resp r = {0};
    r.abort_after = 200; /* hang up after the first chunk or so */
    CURLcode cc = http_ex("POST", "/v1/completions",
                          "{\"prompt\":\"Once upon a time\",\"max_tokens\":400,\"ignore_eos\":true,"
                          "\"stream\":true}",
                          NULL, &r);
    cr_assert_eq(cc, CURLE_WRITE_ERROR, "curl: %s", curl_easy_strerror(cc));
    free(r.body);
    /* within a few engine steps the request is canceled and its blocks go back */
    double canceled = -1, used = -1, running = -1, in_decode = -1;
    for (int i = 0; i < 200; i++) {
        running = metric("hetserve:num_requests_running");
        used = metric("hetserve:kv_blocks_used");
        struct resp m = http(NULL, "/metrics", NULL);
        const char *line = strstr(m.body, "finished_reason=\"canceled\"");
        canceled = line ? strtod(strchr(line, ' ') + 1, NULL) : -1;
        line = strstr(m.body, "requests_cancelled_total{phase=\"decode\"");
        in_decode = line ? strtod(strchr(line, ' ') + 1, NULL) : -1;
        free(m.body);
        if (running == 0 && used == 0 && canceled >= 1 && in_decode >= 1) {
            break;
        }
        usleep(20000);
    }
    cr_assert_eq(in_decode, 1, "requests_cancelled_total{phase=\"decode\"} %g", in_decode);
    cr_assert_eq(running, 0, "running %g used %g canceled %g", running, used, canceled);
    cr_assert_eq(used, 0, "KV blocks still held after disconnect");
    cr_assert_geq(canceled, 1, "the request was not canceled");
    double gen = metric("hetserve:generation_tokens_total");
    cr_assert_lt(gen, 400, "generation went on after the client left (%g tokens)", gen);
}

Test(api, mobiagent_image_part_is_a_documented_400)
{
    /* model "", a key although none is configured, [image_url, text] */
    struct resp r = {0};
    CURLcode cc = http_ex(
        "POST", "/v1/chat/completions",
        "{\"model\":\"\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},{\"type\":\"text\","
        "\"text\":\"What is on the screen? Answer with an action.\"}]}],\"max_tokens\":64,"
        "\"temperature\":0.1}",
        "Authorization: Bearer sk-anything", &r);
    cr_assert_eq(cc, CURLE_OK);
    cr_assert_eq(r.status, 400);
    json_t *j = parse(&r);
    json_t *e = json_object_get(j, "error");
    cr_assert(strstr(json_string_value(json_object_get(e, "message")), "no vision support"));
    cr_assert_str_eq(json_string_value(json_object_get(e, "type")), "invalid_request_error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "param")), "messages[0].content[0]");
    json_decref(j);
    free(r.body);
}

Test(api, invalid_values_name_the_field)
{
    const char *chat = "/v1/chat/completions", *cmpl = "/v1/completions";
    expect_error(chat,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":"
                 "\"hot\"}",
                 400, "temperature", "number");
    expect_error(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":1.5}", 400,
                 "top_p", NULL);
    expect_error(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":0}", 400, "n",
                 NULL);
    expect_error(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":-3}",
                 400, "max_tokens", NULL);
    expect_error(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", 400,
                 "stop", NULL);
    expect_error(
        chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"abc\":1}}",
        400, "logit_bias", NULL);
    expect_error(chat, "{\"messages\":[]}", 400, "messages", NULL);
    expect_error(chat, "{\"model\":\"test-model\"}", 400, "messages", NULL);
    expect_error(chat, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role", NULL);
    expect_error(chat, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400,
                 "messages[0].content", NULL);
    expect_error(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":1.5}", 400,
                 "seed", NULL);
    expect_error(chat, "{\"messages\": [", 400, NULL, "not valid JSON");
    expect_error(chat, "[1,2]", 400, NULL, "object");
    expect_error(cmpl, "{\"prompt\":[99999]}", 400, "prompt", NULL);
    expect_error(cmpl, "{\"prompt\":[]}", 400, "prompt", NULL);
    expect_error(cmpl, "{\"prompt\":\"x\",\"logprobs\":50}", 400, "logprobs", NULL);
    /* OpenAI's 20 alternatives at most, though the engine takes more (hetserve generate) */
    expect_error(cmpl, "{\"prompt\":\"x\",\"logprobs\":21}", 400, "logprobs", NULL);
    expect_error(chat,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
                 "\"top_logprobs\":21}",
                 400, "top_logprobs", NULL);
    expect_error(cmpl, "{\"prompt\":\"x\",\"stream\":\"yes\"}", 400, "stream", NULL);
    /* a prompt longer than the context */
    char *big = malloc(20000);
    strcpy(big, "{\"prompt\":\"");
    for (int i = 0; i < 1200; i++) {
        strcat(big, "a b c d ");
    }
    strcat(big, "\"}");
    expect_error(cmpl, big, 400, NULL, NULL);
    free(big);
    /* nesting deeper than the limit */
    char deep[300];
    int o = snprintf(deep, sizeof(deep), "{\"prompt\":\"x\",\"extra\":");
    for (int i = 0; i < 100; i++) {
        deep[o++] = '[';
    }
    for (int i = 0; i < 100; i++) {
        deep[o++] = ']';
    }
    snprintf(deep + o, sizeof(deep) - (size_t)o, "}");
    expect_error(cmpl, deep, 400, NULL, "deeper");
    /* the server still works */
    json_t *j = post_json(cmpl, "{\"prompt\":\"x\",\"max_tokens\":1}", 200);
    json_decref(j);
}

Test(api, tokenize_and_detokenize)
{
    hs_token ref[64];
    int32_t n = ref_tokenize("Hello world", false, ref, 64);
    json_t *j = post_json("/tokenize", "{\"content\":\"Hello world\"}", 200);
    json_t *t = json_object_get(j, "tokens");
    cr_assert_eq(json_array_size(t), (size_t)n);
    for (int32_t i = 0; i < n; i++) {
        cr_assert_eq(json_integer_value(json_array_get(t, (size_t)i)), ref[i]);
    }
    json_decref(j);
    j = post_json("/tokenize", "{\"content\":\"Hello\",\"add_special\":true,\"with_pieces\":true}",
                  200);
    t = json_object_get(j, "tokens");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(t, 0), "id")),
                 hs_vocab_bos(hs_model_vocab(g.model)));
    cr_assert(json_is_string(json_object_get(json_array_get(t, 1), "piece")));
    json_decref(j);

    char body[512];
    int o = snprintf(body, sizeof(body), "{\"tokens\":[");
    for (int32_t i = 0; i < n; i++) {
        o += snprintf(body + o, sizeof(body) - (size_t)o, "%s%d", i ? "," : "", ref[i]);
    }
    snprintf(body + o, sizeof(body) - (size_t)o, "]}");
    j = post_json("/detokenize", body, 200);
    char *want = ref_text(ref, n);
    cr_assert_str_eq(json_string_value(json_object_get(j, "content")), want);
    cr_assert(strstr(want, "Hello world"));
    free(want);
    json_decref(j);
    expect_error("/detokenize", "{\"tokens\":[-1]}", 400, "tokens", NULL);
    expect_error("/tokenize", "{\"content\":3}", 400, "content", NULL);
}

Test(api, metrics_count_requests)
{
    json_t *j = post_json("/v1/completions",
                          "{\"prompt\":\"Once upon a time\",\"max_tokens\":7,\"temperature\":0,"
                          "\"ignore_eos\":true}",
                          200);
    cr_assert_eq(usage(j, "completion_tokens"), 7);
    struct resp r = http(NULL, "/metrics", NULL);
    cr_assert(strcasestr(r.headers, "content-type: text/plain"));
    cr_assert(strstr(r.body, "# TYPE hetserve:time_to_first_token_seconds histogram"));
    cr_assert(strstr(r.body, "hetserve:e2e_request_latency_seconds_bucket{le=\"+Inf\""));
    free(r.body);
    cr_assert_eq(metric("hetserve:prompt_tokens_total"), (double)usage(j, "prompt_tokens"),
                 "%g vs %d", metric("hetserve:prompt_tokens_total"),
                 (int)usage(j, "prompt_tokens"));
    cr_assert_eq(metric("hetserve:generation_tokens_total"), 7);
    cr_assert_eq(metric("hetserve:time_to_first_token_seconds_count"), 1);
    cr_assert_eq(metric("hetserve:e2e_request_latency_seconds_count"), 1);
    cr_assert_eq(metric("hetserve:time_per_output_token_seconds_count"), 1);
    cr_assert_gt(metric("hetserve:kv_blocks_total"), 0);
    cr_assert_eq(metric("hetserve:num_preemptions_total"), 0);
    cr_assert_eq(metric("hetserve:num_requests_running"), 0);
    cr_assert_eq(metric("hetserve:num_requests_waiting"), 0);
    json_decref(j);
}

/* ---- raw sockets ---- */

static int raw_last_fd = -1; /* read_until's buffer belongs to this connection */

static int connect_raw(void)
{
    raw_last_fd = -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_post(int fd, const char *path, const char *body)
{
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     path, strlen(body), body);
    cr_assert_eq(write(fd, req, (size_t)n), n);
}

/* Reads until needle appears in what this connection sent so far (or EOF/timeout); returns all
 * of it (static; reset when fd changes). */
static const char *read_until(int fd, const char *needle)
{
    static char buf[1 << 18];
    static size_t len;
    if (fd != raw_last_fd) {
        len = 0;
        buf[0] = '\0';
        raw_last_fd = fd;
    }
    while (len < sizeof(buf) - 1 && !strstr(buf, needle)) {
        ssize_t k = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (k <= 0) {
            break;
        }
        len += (size_t)k;
        buf[len] = '\0';
    }
    return buf;
}

Test(api, malformed_http_does_not_hurt)
{
    int fd = connect_raw();
    const char *junk = "GARBAGE\x01\x02 / \r\n\r\n";
    cr_assert_eq(write(fd, junk, strlen(junk)), (ssize_t)strlen(junk));
    const char *got = read_until(fd, "\r\n\r\n");
    cr_assert(strlen(got) == 0 || !strncmp(got, "HTTP/1.1 4", 10), "got %.80s", got);
    close(fd);
    fd = connect_raw();
    const char *lie =
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{";
    cr_assert_eq(write(fd, lie, strlen(lie)), (ssize_t)strlen(lie));
    close(fd); /* hang up with the body unfinished */
    struct resp r = http(NULL, "/health", NULL);
    cr_assert_eq(r.status, 200);
    free(r.body);
}

#define RAW(s) s, sizeof(s) - 1 /* a request literal and its length, NUL bytes included */

Test(api, foreign_host_framing_and_content_type_are_refused)
{
    static const struct {
        const char *req;
        size_t len;
        const char *status;
    } cases[] = {
        {RAW("GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n"), "HTTP/1.1 403"},
        {RAW("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"), "HTTP/1.1 200"},
        {RAW("GET /health\0x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), "HTTP/1.1 400"},
        {RAW("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
             "application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
         "HTTP/1.1 400"},
        {RAW("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
             "Content-Length: 2\r\n\r\n{}"),
         "HTTP/1.1 415"},
        {RAW("PUT /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), "HTTP/1.1 405"},
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        int fd = connect_raw();
        cr_assert_eq(write(fd, cases[i].req, cases[i].len), (ssize_t)cases[i].len);
        const char *got = read_until(fd, "\r\n\r\n");
        cr_assert(!strncmp(got, cases[i].status, strlen(cases[i].status)), "case %zu: %.60s", i,
                  got);
        if (!strcmp(cases[i].status, "HTTP/1.1 405")) {
            cr_assert(strcasestr(got, "\r\nAllow: POST"), "%s", got);
        }
        close(fd);
    }
}

static void start_small_queue(void)
{
    struct hs_engine_params ep = test_engine_params();
    ep.n_parallel = 1;
    ep.max_waiting = 1;
    ep.n_ctx = 2048;
    struct hs_api_params ap = test_api_params();
    start_with("stories260K.gguf", &ep, &ap);
}

Test(api, full_queue_answers_429_with_retry_after, .init = start_small_queue, .fini = stop_all,
     .timeout = 120)
{
    const char *long_req = "{\"prompt\":\"Once\",\"max_tokens\":2000,\"ignore_eos\":true,"
                           "\"stream\":true}";
    int a = connect_raw();
    send_post(a, "/v1/completions", long_req);
    cr_assert(strstr(read_until(a, "data: "), "data: "), "first stream did not start");
    int b = connect_raw();
    send_post(b, "/v1/completions", long_req);
    for (int i = 0; i < 100 && metric("hetserve:num_requests_waiting") < 1; i++) {
        usleep(10000);
    }
    cr_assert_eq(metric("hetserve:num_requests_waiting"), 1);
    struct resp r = http("POST", "/v1/completions", "{\"prompt\":\"Once\",\"max_tokens\":2}");
    cr_assert_eq(r.status, 429, "status %ld %s", r.status, r.body);
    cr_assert(strcasestr(r.headers, "Retry-After:"), "%s", r.headers);
    json_t *j = parse(&r);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                     "rate_limit_error");
    json_decref(j);
    free(r.body);
    close(a);
    close(b);
    /* Both requests end: the first at once, the second (waiting) only once it runs and writes,
     * so the blocks can read 0 between the two. Up to 30 s: under sanitizers beside another test
     * noticing both disconnects took longer than 6 s once. */
    bool gone = false;
    for (int i = 0; i < 1500 && !gone; i++) {
        gone = metric("hetserve:num_requests_waiting") == 0 &&
               metric("hetserve:num_requests_running") == 0 &&
               metric("hetserve:kv_blocks_used") == 0;
        if (!gone) {
            usleep(20000);
        }
    }
    cr_assert(gone, "the disconnected requests did not end and return their blocks");
}

static void start_with_key(void)
{
    struct hs_engine_params ep = test_engine_params();
    struct hs_api_params ap = test_api_params();
    ap.api_key = "sekret-key";
    ap.max_body_bytes = 2048;
    ap.cors = true;
    start_with("stories260K.gguf", &ep, &ap);
}

Test(api, api_key_body_limit_and_cors, .init = start_with_key, .fini = stop_all, .timeout = 120)
{
    const char *body = "{\"prompt\":\"Once\",\"max_tokens\":2}";
    struct resp r = {0};
    cr_assert_eq(http_ex("POST", "/v1/completions", body, NULL, &r), CURLE_OK);
    cr_assert_eq(r.status, 401);
    json_t *j = parse(&r);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                     "invalid_api_key");
    json_decref(j);
    free(r.body);
    const char *wrong[] = {"Authorization: Bearer sekret-kex", "Authorization: Bearer sekret",
                           "Authorization: Bearer sekret-key2", "Authorization: sekret-key"};
    for (size_t i = 0; i < HS_ARRAY_LEN(wrong); i++) {
        r = (struct resp){0};
        cr_assert_eq(http_ex("POST", "/v1/completions", body, wrong[i], &r), CURLE_OK);
        cr_assert_eq(r.status, 401, "%s", wrong[i]);
        free(r.body);
    }
    r = (struct resp){0};
    cr_assert_eq(http_ex("POST", "/v1/completions", body, "Authorization: Bearer sekret-key ", &r),
                 CURLE_OK);
    cr_assert_eq(r.status, 200, "a trailing space is not part of the key: %s", r.body);
    free(r.body);
    r = (struct resp){0};
    cr_assert_eq(http_ex("POST", "/v1/completions", body, "Authorization: Bearer sekret-key", &r),
                 CURLE_OK);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strcasestr(r.headers, "Access-Control-Allow-Origin: *"));
    free(r.body);
    r = http(NULL, "/health", NULL); /* no key needed */
    cr_assert_eq(r.status, 200);
    free(r.body);

    /* 413 with the key given */
    char *big = malloc(5000);
    memset(big, ' ', 4999);
    big[4999] = '\0';
    memcpy(big, "{\"prompt\":\"x\"}", 14);
    r = (struct resp){0};
    cr_assert_eq(http_ex("POST", "/v1/completions", big, "Authorization: Bearer sekret-key", &r),
                 CURLE_OK);
    cr_assert_eq(r.status, 413);
    free(r.body);
    free(big);

    /* CORS preflight */
    r = http("OPTIONS", "/v1/chat/completions", NULL);
    cr_assert_eq(r.status, 204);
    cr_assert(strcasestr(r.headers, "Access-Control-Allow-Headers:"));
    free(r.body);
}

static void start_qwen3(void)
{
    struct hs_engine_params ep = test_engine_params();
    struct hs_api_params ap = test_api_params();
    ap.reasoning_auto = false; /* the template's own default, not auto mode's choice */
    start_with("qwen3-vocab-f16.gguf", &ep, &ap);
}

Test(api, qwen3_chat_template_and_kwargs, .init = start_qwen3, .fini = stop_all, .timeout = 120)
{
    /* Qwen3's own template: with enable_thinking false it writes an empty think block */
    const char *plain = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
    const char *nothink = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
                          "<think>\n\n</think>\n\n";
    hs_token t[256];
    int32_t n_plain = ref_tokenize(plain, false, t, 256);
    int32_t n_nothink = ref_tokenize(nothink, false, t, 256);
    cr_assert_gt(n_nothink, n_plain);
    json_t *a = post_json("/v1/chat/completions",
                          "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"}],"
                          "\"max_tokens\":2,\"temperature\":0}",
                          200);
    json_t *b = post_json("/v1/chat/completions",
                          "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"}],"
                          "\"max_tokens\":2,\"temperature\":0,"
                          "\"chat_template_kwargs\":{\"enable_thinking\":false}}",
                          200);
    cr_assert_eq(usage(a, "prompt_tokens"), n_plain);
    cr_assert_eq(usage(b, "prompt_tokens"), n_nothink);
    json_decref(a);
    json_decref(b);
}

static void start_moe(void)
{
    struct hs_engine_params ep = test_engine_params();
    ep.expert_placement = "blk\\.[0-9]+\\.expert\\.[0-3]$=cpu:1";
    struct hs_api_params ap = test_api_params();
    start_with("moe-qwen2-mini-q8_0.gguf", &ep, &ap);
}

/* Sum of hetserve:moe_expert_tokens_total over the lines of one layer; the backend label of
 * expert e in that layer into be_of[e]. */
static double expert_tokens(int layer, char be_of[8][16])
{
    struct resp r = http(NULL, "/metrics", NULL);
    cr_assert_eq(r.status, 200);
    char want[64];
    snprintf(want, sizeof(want), "hetserve:moe_expert_tokens_total{layer=\"%d\",", layer);
    double sum = 0;
    int n = 0;
    for (char *line = strstr(r.body, want); line; line = strstr(line + 1, want)) {
        int e = -1;
        char be[16] = "";
        cr_assert_eq(sscanf(line + strlen(want), "expert=\"%d\",backend=\"%15[^\"]\"", &e, be), 2,
                     "%.120s", line);
        cr_assert(e >= 0 && e < 8);
        snprintf(be_of[e], 16, "%s", be);
        sum += strtod(strchr(line, '}') + 1, NULL);
        n++;
    }
    free(r.body);
    cr_assert_eq(n, 8, "one line per expert of layer %d", layer);
    return sum;
}

Test(api, moe_metrics_count_routed_tokens_per_expert_and_backend, .init = start_moe,
     .fini = stop_all, .timeout = 120)
{
    char be[8][16];
    cr_assert_eq(expert_tokens(0, be), 0.0);
    json_t *r = post_json("/v1/completions",
                          "{\"prompt\":\"hello world\",\"max_tokens\":5,\"temperature\":0}", 200);
    const json_int_t n_prompt = usage(r, "prompt_tokens");
    const json_int_t n_gen = usage(r, "completion_tokens");
    cr_assert_gt(n_gen, 0);
    json_decref(r);
    /* Every token through layer 0 picks 4 of 8 experts; the last layer runs only the rows whose
     * logits are sampled (the prompt's last, then each decoded token). */
    cr_assert_eq(expert_tokens(0, be), 4.0 * (double)(n_prompt + n_gen - 1));
    for (int e = 0; e < 8; e++) {
        cr_assert_str_eq(be[e], e < 4 ? "cpu:1" : "cpu", "expert %d", e);
    }
    cr_assert_eq(expert_tokens(1, be), 4.0 * (double)n_gen);
}

Test(api, quiesce_and_drain_finish_requests_in_flight)
{
    int a = connect_raw();
    send_post(a, "/v1/completions",
              "{\"prompt\":\"Once\",\"max_tokens\":300,\"ignore_eos\":true,\"stream\":true}");
    cr_assert(strstr(read_until(a, "data: "), "data: "));
    cr_assert_eq(metric("hetserve:num_requests_running"), 1, "the request must be in flight");
    hs_api_server_quiesce(g.srv);
    cr_assert_eq(hs_engine_drain(g.eng, 30000), HS_OK);
    const char *rest = read_until(a, "data: [DONE]");
    cr_assert(strstr(rest, "data: [DONE]"), "the stream in flight must complete");
    close(a);
    cr_assert(hs_api_server_wait_idle(g.srv, 5000));
    /* no new connections */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(g.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_neq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
}

Test(api, status_table)
{
    cr_assert_eq(hs_api_http_status(HS_OK), 200);
    cr_assert_eq(hs_api_http_status(HS_E_INVAL), 400);
    cr_assert_eq(hs_api_http_status(HS_E_BUSY), 429);
    cr_assert_eq(hs_api_http_status(HS_E_CANCELED), 503);
    cr_assert_eq(hs_api_http_status(HS_E_NOMEM), 503);
    cr_assert_eq(hs_api_http_status(HS_E_INTERNAL), 500);
    cr_assert_eq(hs_api_http_status((hs_status)-99), 500);
}

/* ---- a malformed chat template is a load-time error ---- */

/* Copies stories260K with tokenizer.chat_template replaced by tmpl. */
static void write_with_template(const char *out, const char *tmpl)
{
    struct hs_error err = {0};
    char *src = model_path("stories260K.gguf");
    struct hs_gguf *gg = NULL;
    cr_assert_eq(hs_gguf_open(src, &gg, &err), HS_OK, "%s", err.message);
    free(src);
    struct hs_gguf_writer *w = NULL;
    cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);
    for (int64_t i = 0; i < hs_gguf_n_kv(gg); i++) {
        cr_assert_eq(hs_gguf_writer_set_value(w, hs_gguf_kv_key(gg, i), hs_gguf_kv_value(gg, i)),
                     HS_OK);
    }
    cr_assert_eq(hs_gguf_writer_set_str(w, "tokenizer.chat_template", tmpl), HS_OK);
    for (int64_t i = 0; i < hs_gguf_n_tensors(gg); i++) {
        const struct hs_gguf_tensor *t = hs_gguf_tensor(gg, i);
        cr_assert_eq(hs_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data),
                     HS_OK);
    }
    cr_assert_eq(hs_gguf_writer_write_file(w, out, &err), HS_OK, "%s", err.message);
    hs_gguf_writer_destroy(w);
    hs_gguf_close(gg);
}

Test(api, malformed_chat_template_is_a_load_time_error)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/hs-bad-template-%d.gguf", (int)getpid());
    write_with_template(path, "{% for m in messages %}{{ m.content }");
    struct hs_error err = {0};
    struct hs_model *m = NULL;
    cr_assert_eq(hs_model_load(path, &m, &err), HS_OK, "%s", err.message);
    struct hs_engine_params ep = test_engine_params();
    struct hs_engine *eng = NULL;
    cr_assert_eq(hs_engine_create(m, &ep, &eng, &err), HS_OK, "%s", err.message);
    struct hs_api_params ap = test_api_params();
    struct hs_api_server *srv = NULL;
    hs_status st = hs_api_server_start(m, eng, &ap, &srv, &err);
    cr_assert_eq(st, HS_E_FORMAT);
    cr_assert_null(srv);
    cr_assert(strstr(err.message, "chat template"), "%s", err.message);
    cr_assert(strstr(err.message, "line"), "the message should locate the error: %s", err.message);
    hs_engine_destroy(eng);
    hs_model_destroy(m);
    unlink(path);
}

/* ---- structured output ---- */

/* response_format json_schema (n = 2, streamed and not) and json_object answers parse and
 * follow the schema; grammar works; an unsupported keyword and a broken grammar are 400s that
 * say what. */
Test(api, structured_output_follows_the_schema)
{
    static const char *const bodies[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Tap or swipe?\"}],\"max_tokens\":400,"
        "\"n\":2,\"temperature\":1,\"seed\":3,\"response_format\":{\"type\":\"json_schema\","
        "\"json_schema\":"
        "{\"name\":\"act\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":"
        "{\"action\":{\"enum\":[\"tap\",\"swipe\"]},\"x\":{\"type\":\"integer\",\"minimum\":0,"
        "\"maximum\":9}},\"required\":[\"action\",\"x\"],\"additionalProperties\":false}}}}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Tap or swipe?\"}],\"max_tokens\":400,"
        "\"n\":2,\"temperature\":1,\"seed\":3,\"response_format\":{\"type\":\"json_object\","
        "\"schema\":"
        "{\"type\":\"object\",\"properties\":{\"action\":{\"enum\":[\"tap\",\"swipe\"]},"
        "\"x\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9}},\"required\":[\"action\","
        "\"x\"],\"additionalProperties\":false}}}",
    };
    for (size_t k = 0; k < HS_ARRAY_LEN(bodies); k++) {
        json_t *j = post_json("/v1/chat/completions", bodies[k], 200);
        json_t *choices = json_object_get(j, "choices");
        cr_assert_eq(json_array_size(choices), 2);
        for (size_t i = 0; i < 2; i++) {
            const json_t *msg = json_object_get(json_array_get(choices, i), "message");
            const char *content = json_string_value(json_object_get(msg, "content"));
            cr_assert_str_eq(finish(j, i), "stop", "body %zu choice %zu: %s", k, i, content);
            json_error_t e;
            json_t *out = json_loads(content, 0, &e);
            cr_assert_not_null(out, "body %zu choice %zu is not JSON: %s", k, i, content);
            const char *action = json_string_value(json_object_get(out, "action"));
            const json_t *x = json_object_get(out, "x");
            cr_assert(action && (!strcmp(action, "tap") || !strcmp(action, "swipe")), "%s",
                      content);
            cr_assert(json_is_integer(x) && json_integer_value(x) >= 0 &&
                          json_integer_value(x) <= 9,
                      "%s", content);
            cr_assert_eq(json_object_size(out), 2, "%s", content);
            json_decref(out);
        }
        json_decref(j);
    }
    /* streamed: the deltas concatenate to one JSON object */
    struct resp r = http("POST", "/v1/chat/completions",
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"stream\":true,"
                         "\"max_tokens\":60,\"response_format\":{\"type\":\"json_object\"}}");
    cr_assert_eq(r.status, 200);
    struct sse s;
    parse_sse(r.body, &s);
    char text[4096] = "";
    const char *fin = NULL;
    cr_assert(s.done_last);
    for (int i = 0; i < s.n; i++) {
        const json_t *ev = s.events[i];
        const json_t *c0 = json_array_get(json_object_get(ev, "choices"), 0);
        const char *d = json_string_value(json_object_get(json_object_get(c0, "delta"), "content"));
        if (d) {
            strncat(text, d, sizeof(text) - strlen(text) - 1);
        }
        if (json_is_string(json_object_get(c0, "finish_reason"))) {
            fin = strcmp(json_string_value(json_object_get(c0, "finish_reason")), "stop") == 0
                      ? "stop"
                      : "length";
        }
    }
    cr_assert_not_null(fin);
    cr_assert_eq(text[0], '{', "streamed json_object starts with '{': %s", text);
    if (!strcmp(fin, "stop")) {
        json_t *o = json_loads(text, 0, NULL);
        cr_assert(json_is_object(o), "not a JSON object: %s", text);
        json_decref(o);
    }
    free_sse(&s);
    free(r.body);
    /* grammar, as llama.cpp's server takes it */
    json_t *j = post_json("/v1/completions",
                          "{\"prompt\":\"Once\",\"max_tokens\":8,\"grammar\":\"root ::= \\\"ok\\\" "
                          "[0-9]\"}",
                          200);
    const char *t = choice_text(j, 0);
    cr_assert(strlen(t) == 3 && !strncmp(t, "ok", 2) && t[2] >= '0' && t[2] <= '9', "%s", t);
    json_decref(j);
    expect_error("/v1/chat/completions",
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{"
                 "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"schema\":{\"type\":"
                 "\"string\",\"pattern\":\"^a+$\"}}}}",
                 400, "response_format", "pattern");
    expect_error("/v1/completions", "{\"prompt\":\"x\",\"grammar\":\"root ::= (\\\"a\\\"\"}", 400,
                 NULL, "grammar");
    /* json_schema, as llama.cpp's server takes it (a schema, no wrapper) */
    j = post_json("/v1/completions",
                  "{\"prompt\":\"Once\",\"max_tokens\":40,\"json_schema\":{\"type\":\"object\","
                  "\"properties\":{\"n\":{\"type\":\"integer\",\"minimum\":3,\"maximum\":7}},"
                  "\"required\":[\"n\"],\"additionalProperties\":false}}",
                  200);
    t = choice_text(j, 0);
    json_t *o = json_loads(t, 0, NULL);
    cr_assert(json_is_object(o) && json_object_size(o) == 1, "%s", t);
    const json_int_t n = json_integer_value(json_object_get(o, "n"));
    cr_assert(json_is_integer(json_object_get(o, "n")) && n >= 3 && n <= 7, "%s", t);
    json_decref(o);
    json_decref(j);
    expect_error("/v1/completions",
                 "{\"prompt\":\"x\",\"json_schema\":{\"type\":\"string\",\"pattern\":\"a\"}}", 400,
                 "json_schema", "pattern");
    expect_error("/v1/completions",
                 "{\"prompt\":\"x\",\"grammar\":\"root ::= \\\"a\\\"\",\"json_schema\":{}}", 400,
                 "grammar", "one of");
    expect_error("/v1/completions", "{\"prompt\":\"x\",\"response_format\":{\"type\":\"yaml\"}}",
                 400, "response_format.type", "yaml");
}
