/* tests/api: the thinking block of chat answers (api/reasoning.c, server/reasoning.c): the
 * splitter alone, then in-process over HTTP on the Qwen3 vocabulary model with its real chat
 * template. The random model is made to think with logit_bias on <think> (every token it writes
 * is then "<think>" until the budget forces "</think>" and the separator). */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/reasoning.h"
#include "model/gguf/gguf.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"

/* A Hunyuan-A13B-style chat template: its turn tokens, "/no_think" and enable_thinking false
 * writing an empty block, and, as some slow-thinking templates do, a generation prompt that
 * opens the block when enable_thinking is true. */
#define HUNYUAN_TEMPLATE                                                                           \
    "{%- for m in messages -%}{%- if loop.first %}<|startoftext|>{% endif -%}"                     \
    "{%- if m.role == 'system' %}{{ m.content }}<|extra_4|>"                                       \
    "{%- elif m.role == 'user' %}{{ m.content }}<|extra_0|>"                                       \
    "{%- else %}{{ m.content }}<|eos|>{% endif -%}{%- endfor -%}"                                  \
    "{%- if add_generation_prompt -%}"                                                             \
    "{%- if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n"            \
    "{%- elif enable_thinking is defined and enable_thinking %}<think>\n{% endif -%}"              \
    "{%- endif -%}"

/* ---- the splitter ---- */

struct parts {
    struct hs__buf r, c;
};

static void on_r(void *u, const char *s, size_t n)
{
    hs__buf_add(&((struct parts *)u)->r, s, n);
}

static void on_c(void *u, const char *s, size_t n)
{
    hs__buf_add(&((struct parts *)u)->c, s, n);
}

/* The answer's wrapper of the next split (NULL: none). */
static const char *wrap_open, *wrap_close;

/* Splits text fed in pieces of `step` bytes (0: at once). */
static void split(const char *text, bool in_block, size_t step, struct parts *out)
{
    struct hs__reasoning_split p;
    const struct hs__reasoning_sink sink = {on_r, on_c, out};
    *out = (struct parts){0};
    hs__reasoning_split_init(&p, "<think>", "</think>", in_block);
    hs__reasoning_split_wrap(&p, wrap_open, wrap_close);
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t k = step ? HS_MIN(step, n - i) : n;
        hs__reasoning_split_feed(&p, text + i, k, &sink);
        i += k;
    }
    hs__reasoning_split_finish(&p, &sink);
    hs__reasoning_split_free(&p);
    hs__buf_add(&out->r, "", 0);
    hs__buf_add(&out->c, "", 0);
}

struct split_case {
    const char *text;
    bool in_block;
    const char *r, *c;
};

/* Each case split at once and in pieces of 1 to 5 bytes gives its reasoning and content. */
static void check_splits(const struct split_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t step = 0; step <= 5; step++) {
            struct parts p;
            split(cases[i].text, cases[i].in_block, step, &p);
            cr_assert_str_eq(p.r.p, cases[i].r, "case %zu step %zu: reasoning \"%s\"", i, step,
                             p.r.p);
            cr_assert_str_eq(p.c.p, cases[i].c, "case %zu step %zu: content \"%s\"", i, step,
                             p.c.p);
            hs__buf_free(&p.r);
            hs__buf_free(&p.c);
        }
    }
}

Test(reasoning_split, separates_block_and_answer_at_every_chunking)
{
    static const struct split_case cases[] = {
        {"<think>\nLet me see.\n</think>\n\nThe answer is 4.", false, "Let me see.",
         "The answer is 4."},
        {"Let me see. 2 < 3\n</think>\n\n42", true, "Let me see. 2 < 3", "42"},
        {"Hello <think> world", false, "", "Hello <think> world"},
        {"\n<think>unfinished  thought\n", false, "unfinished  thought", ""},
        {"<think></think>\n\nplain", false, "", "plain"},
        {"<thin", false, "", "<thin"},
        {"a </think", true, "a </think", ""},
    };
    check_splits(cases, sizeof(cases) / sizeof(cases[0]));
}

/* Hunyuan's shape: <think>\n...\n</think>\n<answer>\n...\n</answer>, with and without the
 * block, unfinished, and the wrapper's markers split at every byte. */
Test(reasoning_split, hunyuan_answer_wrapper_at_every_chunking)
{
    static const struct split_case cases[] = {
        {"<think>\nLet me see.\n</think>\n<answer>\nThe answer is 4.\n</answer>", false,
         "Let me see.", "The answer is 4."},
        {"<answer>\n42\n</answer>", false, "", "42"},
        {"\n\n</think>\n<answer>\nno thought\n</answer>", true, "", "no thought"},
        {"a < b\n</think>\n<answer>\nx </answ", true, "a < b", "x </answ"},
        {"<think>\nhmm</think><answer>4</answer>\n", false, "hmm", "4"},
        {"<think>\nunfinished", false, "unfinished", ""},
        {"plain answer, no wrapper", false, "", "plain answer, no wrapper"},
        {"<answer>\ncut short", false, "", "cut short"},
    };
    wrap_open = "<answer>";
    wrap_close = "</answer>";
    check_splits(cases, sizeof(cases) / sizeof(cases[0]));
    wrap_open = wrap_close = NULL;
    cr_assert_eq(hs__reasoning_template_family(HUNYUAN_TEMPLATE), HS__REASONING_FAMILY_HUNYUAN);
    cr_assert_eq(hs__reasoning_template_family("{{ '<|im_start|>' }}<think>"),
                 HS__REASONING_FAMILY_THINK);
    cr_assert_eq(hs__reasoning_template_family(NULL), HS__REASONING_FAMILY_THINK);
}

/* ---- over HTTP ---- */

static struct {
    struct hs_model *model;
    struct hs_engine *eng;
    struct hs_api_server *srv;
    uint16_t port;
    hs_token open;
} g;

static const char *start_format, *start_markers; /* hs_api_params of the next start */
static bool start_auto_off;
static const char *start_model; /* the next start's model file (NULL: the Qwen3 vocabulary) */

static void start(void)
{
    struct hs_error err = {0};
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert_not_null(dir, "HS_MODELS_DIR is not set");
    char path[1024];
    snprintf(path, sizeof(path), "%s/qwen3-vocab-f16.gguf", dir);
    if (start_model) {
        snprintf(path, sizeof(path), "%s", start_model);
    }
    cr_assert_eq(hs_model_load(path, &g.model, &err), HS_OK, "load %s: %s", path, err.message);
    struct hs_engine_params ep = hs_engine_default_params();
    ep.n_ctx = 512;
    ep.n_parallel = 4;
    ep.n_threads = 1;
    cr_assert_eq(hs_engine_create(g.model, &ep, &g.eng, &err), HS_OK, "engine: %s", err.message);
    struct hs_api_params ap = hs_api_default_params();
    ap.port = 0;
    ap.reasoning_format = start_format;
    ap.reasoning_markers = start_markers;
    ap.reasoning_auto = !start_auto_off;
    cr_assert_eq(hs_api_server_start(g.model, g.eng, &ap, &g.srv, &err), HS_OK, "server: %s",
                 err.message);
    g.port = hs_api_server_port(g.srv);
    g.open = hs_vocab_find(hs_engine_vocab(g.eng), start_model ? "x" : "<think>");
    cr_assert_geq(g.open, 0, "the Qwen3 vocabulary has <think>");
}

static void stop(void)
{
    hs_api_server_stop(g.srv);
    hs_engine_destroy(g.eng);
    hs_model_destroy(g.model);
    memset(&g, 0, sizeof(g));
}

static size_t on_body(char *p, size_t sz, size_t n, void *user)
{
    hs__buf_add(user, p, sz * n);
    return sz * n;
}

/* POSTs body to /v1/chat/completions; returns the body text (free) and the status in *status. */
static char *post(const char *body, long *status)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", (unsigned)g.port);
    struct hs__buf out = {0};
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    cr_assert_eq(cc, CURLE_OK, "%s", curl_easy_strerror(cc));
    hs__buf_add(&out, "", 0);
    return out.p;
}

/* A chat body asking the model to think (logit_bias on <think>), with extra fields. */
static char *body_with(const char *extra, const char *user)
{
    char *b = malloc(2048);
    snprintf(b, 2048,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":24,"
             "\"temperature\":0,\"logit_bias\":{\"%d\":100}%s%s}",
             user, (int)g.open, extra[0] ? "," : "", extra);
    return b;
}

static json_t *chat(const char *extra, const char *user)
{
    char *b = body_with(extra, user);
    long st = 0;
    char *r = post(b, &st);
    cr_assert_eq(st, 200, "%s -> %ld %s", b, st, r);
    json_t *j = json_loads(r, 0, NULL);
    cr_assert_not_null(j, "%s", r);
    free(b);
    free(r);
    return j;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s ? strstr(s, needle) : NULL; p; p = strstr(p + 1, needle)) {
        n++;
    }
    return n;
}

static json_int_t reasoning_tokens(json_t *j)
{
    json_t *d = json_object_get(json_object_get(j, "usage"), "completion_tokens_details");
    cr_assert(json_is_integer(json_object_get(d, "reasoning_tokens")));
    return json_integer_value(json_object_get(d, "reasoning_tokens"));
}

TestSuite(reasoning, .init = start, .fini = stop, .timeout = 120);

Test(reasoning, budget_gives_b_thinking_tokens_then_the_close_marker_then_the_answer)
{
    for (int budget = 0; budget <= 6; budget += 3) {
        char extra[128];
        snprintf(extra, sizeof(extra), "\"thinking_budget_tokens\":%d,\"logprobs\":true", budget);
        json_t *j = chat(extra, "What is 2+2?");
        json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
        const char *rc = json_string_value(json_object_get(m, "reasoning_content"));
        const char *content = json_string_value(json_object_get(m, "content"));
        cr_assert_not_null(content);
        cr_assert_eq(reasoning_tokens(j), budget);
        cr_assert_eq(count(rc, "<think>"), budget, "budget %d: reasoning %s", budget, rc);
        cr_assert_eq(count(content, "</think>") + count(rc, "</think>"), 0);
        /* the tokens: <think>, B thinking tokens, </think>, the separator, then the answer */
        json_t *lp = json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs"),
            "content");
        cr_assert_gt(json_array_size(lp), (size_t)budget + 3);
        const char *close =
            json_string_value(json_object_get(json_array_get(lp, budget + 1), "token"));
        cr_assert_str_eq(close, "</think>", "budget %d: token %d is %s", budget, budget + 1, close);
        cr_assert_gt(strlen(content), 0, "an answer follows");
        json_decref(j);
    }
}

/* Reasoning and content of a stream, concatenated from its deltas under key. */
static void stream_parts(const char *extra, const char *key, struct parts *p)
{
    char *b = body_with(extra, "Think, then answer.");
    long st = 0;
    char *r = post(b, &st);
    cr_assert_eq(st, 200, "%s", r);
    *p = (struct parts){0};
    for (char *line = strstr(r, "data: {"); line; line = strstr(line + 1, "data: {")) {
        char *end = strstr(line, "\n\n");
        json_t *ev = json_loadb(line + 6, (size_t)(end - line - 6), 0, NULL);
        cr_assert_not_null(ev);
        json_t *d = json_object_get(json_array_get(json_object_get(ev, "choices"), 0), "delta");
        const json_t *rr = json_object_get(d, key);
        const json_t *cc = json_object_get(d, "content");
        hs__buf_add(&p->r, json_string_value(rr) ? json_string_value(rr) : "",
                    json_string_length(rr));
        hs__buf_add(&p->c, json_string_value(cc) ? json_string_value(cc) : "",
                    json_string_length(cc));
        json_decref(ev);
    }
    hs__buf_add(&p->r, "", 0);
    hs__buf_add(&p->c, "", 0);
    free(b);
    free(r);
}

Test(reasoning, stream_and_non_stream_agree_in_both_dialects)
{
    static const char *const formats[] = {"reasoning_content", "reasoning"};
    for (int f = 0; f < 2; f++) {
        char extra[160];
        snprintf(extra, sizeof(extra), "\"thinking_budget_tokens\":4,\"reasoning_format\":\"%s\"",
                 formats[f]);
        json_t *j = chat(extra, "Think, then answer.");
        json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
        const char *rc = json_string_value(json_object_get(m, formats[f]));
        cr_assert_null(json_object_get(m, formats[1 - f]), "only the asked field");
        cr_assert_not_null(rc);
        cr_assert_eq(count(rc, "<think>"), 4);
        char sextra[256];
        snprintf(sextra, sizeof(sextra), "%s,\"stream\":true", extra);
        struct parts p;
        stream_parts(sextra, formats[f], &p);
        cr_assert_str_eq(p.r.p, rc, "streamed reasoning");
        cr_assert_str_eq(p.c.p, json_string_value(json_object_get(m, "content")));
        hs__buf_free(&p.r);
        hs__buf_free(&p.c);
        json_decref(j);
    }
}

Test(reasoning, format_none_leaves_the_block_inline)
{
    json_t *j = chat("\"thinking_budget_tokens\":2,\"reasoning_format\":\"none\"", "hi");
    json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    cr_assert_null(json_object_get(m, "reasoning_content"));
    const char *content = json_string_value(json_object_get(m, "content"));
    cr_assert(strstr(content, "<think><think><think></think>") == content, "%s", content);
    json_decref(j);
}

Test(reasoning, enable_thinking_false_and_no_think_give_no_reasoning)
{
    const char *const extras[] = {"\"chat_template_kwargs\":{\"enable_thinking\":false}",
                                  "\"reasoning_effort\":\"none\"", ""};
    const char *const users[] = {"Hi", "Hi", "Hi /no_think"};
    for (int i = 0; i < 3; i++) {
        json_t *j = chat(extras[i], users[i]);
        json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
        cr_assert_null(json_object_get(m, "reasoning_content"), "case %d", i);
        cr_assert_eq(reasoning_tokens(j), 0, "case %d", i);
        json_decref(j);
    }
    /* without them the same request thinks */
    json_t *j = chat("\"thinking_budget_tokens\":2", "Hi");
    cr_assert_eq(reasoning_tokens(j), 2);
    json_decref(j);
}

Test(reasoning, stop_strings_never_cut_the_thinking)
{
    json_t *j = chat("\"thinking_budget_tokens\":5,\"stop\":[\"<think>\"]", "hi");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    json_t *m = json_object_get(c0, "message");
    cr_assert_eq(count(json_string_value(json_object_get(m, "reasoning_content")), "<think>"), 5);
    cr_assert_str_eq(json_string_value(json_object_get(m, "content")), "");
    cr_assert_str_eq(json_string_value(json_object_get(c0, "finish_reason")), "stop");
    json_decref(j);
}

Test(reasoning, bad_values_are_400_naming_the_field)
{
    static const struct {
        const char *extra, *param;
    } cases[] = {
        {"\"reasoning_effort\":\"extreme\"", "reasoning_effort"},
        {"\"thinking_budget_tokens\":-1", "thinking_budget_tokens"},
        {"\"thinking_budget_tokens\":\"5\"", "thinking_budget_tokens"},
        {"\"reasoning_format\":\"xml\"", "reasoning_format"},
        {"\"chat_template_kwargs\":{\"enable_thinking\":\"no\"}",
         "chat_template_kwargs.enable_thinking"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = body_with(cases[i].extra, "hi");
        long st = 0;
        char *r = post(b, &st);
        cr_assert_eq(st, 400, "%s -> %ld", b, st);
        json_t *j = json_loads(r, 0, NULL);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "param")),
                         cases[i].param);
        json_decref(j);
        free(b);
        free(r);
    }
}

Test(reasoning_auto, cues_length_and_history_decide)
{
    int cls = -1;
    cr_assert(hs__reasoning_auto_choose("Prove that sqrt(2) is irrational.", 34, &cls));
    cr_assert(hs__reasoning_auto_choose("what is 17*23", 13, &cls), "arithmetic is a cue");
    cr_assert_not(hs__reasoning_auto_choose("Hello there!", 12, &cls), "short, no cue");
    const char *mid = "Tell me a little about the weather in spring in the mountains near lakes.";
    cr_assert(hs__reasoning_auto_choose(mid, strlen(mid), &cls), "no history yet: long");
    for (int i = 0; i < 4; i++) {
        hs__reasoning_auto_record(cls, 3);
    }
    int cls2 = -1;
    cr_assert_not(hs__reasoning_auto_choose(mid, strlen(mid), &cls2),
                  "similar requests thought briefly: short");
    cr_assert_eq(cls2, cls);
}

Test(reasoning, auto_mode_reports_its_choice)
{
    json_t *j = chat("\"reasoning_effort\":\"auto\",\"thinking_budget_tokens\":3", "Hi");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(j, "hetserve"), "reasoning_mode")),
        "short");
    cr_assert_eq(reasoning_tokens(j), 0);
    json_decref(j);
    j = chat("\"reasoning_effort\":\"auto\",\"thinking_budget_tokens\":3",
             "Solve 12*7+5 step by step");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(j, "hetserve"), "reasoning_mode")),
        "long");
    cr_assert_eq(reasoning_tokens(j), 3);
    json_decref(j);
    j = chat("\"thinking_budget_tokens\":3", "Hi");
    cr_assert_null(json_object_get(j, "hetserve"), "no extension outside auto mode");
    json_decref(j);
}

/* --reasoning-format reasoning and --reasoning-markers with another pair of tokens: Qwen3's
 * <tool_call> and </tool_call> stand in for a family with other markers. */
static void start_flags(void)
{
    start_format = "reasoning";
    start_markers = "<tool_call>,</tool_call>";
    start();
    start_format = start_markers = NULL;
    g.open = hs_vocab_find(hs_engine_vocab(g.eng), "<tool_call>");
    cr_assert_geq(g.open, 0);
}

Test(reasoning_flags, server_format_and_markers, .init = start_flags, .fini = stop, .timeout = 120)
{
    json_t *j = chat("\"thinking_budget_tokens\":2", "hi");
    json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    cr_assert_null(json_object_get(m, "reasoning_content"));
    const char *r = json_string_value(json_object_get(m, "reasoning"));
    cr_assert_not_null(r, "the server's format names the field");
    cr_assert_str_eq(r, "<tool_call><tool_call>");
    cr_assert_eq(reasoning_tokens(j), 2);
    json_decref(j);
    j = chat("\"thinking_budget_tokens\":2,\"reasoning_format\":\"reasoning_content\"", "hi");
    m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    cr_assert_not_null(json_object_get(m, "reasoning_content"), "the request overrides it");
    json_decref(j);
}

static const char *mode_of(json_t *j)
{
    return json_string_value(json_object_get(json_object_get(j, "hetserve"), "reasoning_mode"));
}

/* Qwen3's template has both modes: a request that says nothing about thinking gets auto mode. */
Test(reasoning, auto_mode_is_the_default_when_the_template_has_both_modes)
{
    json_t *j = chat("", "Hi");
    cr_assert_not_null(mode_of(j), "auto mode chose");
    cr_assert_str_eq(mode_of(j), "short");
    cr_assert_eq(reasoning_tokens(j), 0);
    json_decref(j);
    j = chat("", "Solve 12*7+5 step by step");
    cr_assert_str_eq(mode_of(j), "long");
    cr_assert_gt(reasoning_tokens(j), 0);
    json_decref(j);
    /* any thinking control of the client's own turns the default off */
    j = chat("\"reasoning_effort\":\"high\"", "Hi");
    cr_assert_null(mode_of(j));
    cr_assert_gt(reasoning_tokens(j), 0);
    json_decref(j);
}

static void start_auto_off_server(void)
{
    start_auto_off = true;
    start();
    start_auto_off = false;
}

Test(reasoning_flags, auto_default_off_keeps_the_templates_default, .init = start_auto_off_server,
     .fini = stop, .timeout = 120)
{
    json_t *j = chat("", "Hi");
    cr_assert_null(mode_of(j), "no auto mode");
    cr_assert_gt(reasoning_tokens(j), 0, "Qwen3's template thinks by default");
    json_decref(j);
}

/* ---- Hunyuan: multi-token markers and the <answer> wrapper ---- */

static char hunyuan_path[64];

/* The Qwen2 BPE test model (no <think> token: every marker is several tokens, as in Hunyuan's
 * vocabulary) with a Hunyuan-style chat template, written with the GGUF writer. The random
 * model is made to write "x" with logit_bias. */
static void start_hunyuan(void)
{
    struct hs_error err = {0};
    char src[1024];
    snprintf(src, sizeof(src), "%s/qwen2-bpe-f32.gguf", getenv("HS_MODELS_DIR"));
    snprintf(hunyuan_path, sizeof(hunyuan_path), "/tmp/hs-hunyuan-%d.gguf", (int)getpid());
    struct hs_gguf *gg = NULL;
    cr_assert_eq(hs_gguf_open(src, &gg, &err), HS_OK, "%s", err.message);
    struct hs_gguf_writer *w = NULL;
    cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);
    for (int64_t i = 0; i < hs_gguf_n_kv(gg); i++) {
        cr_assert_eq(hs_gguf_writer_set_value(w, hs_gguf_kv_key(gg, i), hs_gguf_kv_value(gg, i)),
                     HS_OK);
    }
    cr_assert_eq(hs_gguf_writer_set_str(w, "tokenizer.chat_template", HUNYUAN_TEMPLATE), HS_OK);
    for (int64_t i = 0; i < hs_gguf_n_tensors(gg); i++) {
        const struct hs_gguf_tensor *t = hs_gguf_tensor(gg, i);
        cr_assert_eq(hs_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data),
                     HS_OK);
    }
    cr_assert_eq(hs_gguf_writer_write_file(w, hunyuan_path, &err), HS_OK, "%s", err.message);
    hs_gguf_writer_destroy(w);
    hs_gguf_close(gg);
    start_model = hunyuan_path;
    start();
    start_model = NULL;
    cr_assert_lt(hs_vocab_find(hs_engine_vocab(g.eng), "<think>"), 0);
    cr_assert_lt(hs_vocab_find(hs_engine_vocab(g.eng), "</think>"), 0);
}

static void stop_hunyuan(void)
{
    stop();
    unlink(hunyuan_path);
}

static const char *message_str(json_t *j, const char *key)
{
    json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    return json_string_value(json_object_get(m, key));
}

TestSuite(reasoning_hunyuan, .init = start_hunyuan, .fini = stop_hunyuan, .timeout = 120);

#define THINK_ON "\"chat_template_kwargs\":{\"enable_thinking\":true}"

Test(reasoning_hunyuan, budget_forces_the_multi_token_close_and_the_answer_is_unwrapped)
{
    for (int budget = 0; budget <= 6; budget += 3) {
        char extra[160];
        snprintf(extra, sizeof(extra), THINK_ON ",\"thinking_budget_tokens\":%d,\"logprobs\":true",
                 budget);
        json_t *j = chat(extra, "What is 2+2?");
        const char *rc = message_str(j, "reasoning_content");
        const char *content = message_str(j, "content");
        cr_assert_eq(reasoning_tokens(j), budget);
        cr_assert_eq(rc ? (int)strlen(rc) : 0, budget, "budget %d: reasoning \"%s\"", budget,
                     rc ? rc : "");
        cr_assert_eq(count(rc, "x"), budget);
        cr_assert_not_null(content);
        cr_assert_gt(strlen(content), 0, "an answer follows");
        cr_assert_eq(strspn(content, "x"), strlen(content), "the wrapper is stripped: \"%s\"",
                     content);
        /* the tokens: B thinking tokens, then "\n</think>\n<answer>\n" in several tokens */
        json_t *lp = json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs"),
            "content");
        char forced[64] = "";
        size_t i = (size_t)budget;
        for (; i < json_array_size(lp) && strlen(forced) < strlen("\n</think>\n<answer>\n"); i++) {
            strncat(forced, json_string_value(json_object_get(json_array_get(lp, i), "token")),
                    sizeof(forced) - strlen(forced) - 1);
        }
        cr_assert_str_eq(forced, "\n</think>\n<answer>\n", "budget %d", budget);
        cr_assert_gt(i - (size_t)budget, 2, "the close took several tokens");
        json_decref(j);
    }
}

Test(reasoning_hunyuan, stream_and_non_stream_agree_in_both_dialects)
{
    static const char *const formats[] = {"reasoning_content", "reasoning"};
    for (int f = 0; f < 2; f++) {
        char extra[200];
        snprintf(extra, sizeof(extra),
                 THINK_ON ",\"thinking_budget_tokens\":4,\"reasoning_format\":\"%s\"", formats[f]);
        json_t *j = chat(extra, "Think, then answer.");
        const char *rc = message_str(j, formats[f]);
        cr_assert_str_eq(rc, "xxxx");
        char sextra[256];
        snprintf(sextra, sizeof(sextra), "%s,\"stream\":true", extra);
        struct parts p;
        stream_parts(sextra, formats[f], &p);
        cr_assert_str_eq(p.r.p, rc, "streamed reasoning");
        cr_assert_str_eq(p.c.p, message_str(j, "content"), "streamed content");
        hs__buf_free(&p.r);
        hs__buf_free(&p.c);
        json_decref(j);
    }
}

Test(reasoning_hunyuan, stop_strings_never_cut_the_thinking_or_the_separator)
{
    /* "x" is every thinking token; "think" and "answer" are in the forced close */
    json_t *j =
        chat(THINK_ON ",\"thinking_budget_tokens\":5,\"stop\":[\"think\",\"answer\"]", "hi");
    cr_assert_str_eq(message_str(j, "reasoning_content"), "xxxxx");
    cr_assert_gt(strlen(message_str(j, "content")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "choices"), 0), "finish_reason")),
                     "length");
    json_decref(j);
    j = chat(THINK_ON ",\"thinking_budget_tokens\":5,\"stop\":[\"x\"]", "hi");
    cr_assert_str_eq(message_str(j, "reasoning_content"), "xxxxx");
    cr_assert_str_eq(message_str(j, "content"), "");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "choices"), 0), "finish_reason")),
                     "stop");
    json_decref(j);
}

Test(reasoning_hunyuan, thinking_off_gives_no_reasoning)
{
    const char *const extras[] = {"\"chat_template_kwargs\":{\"enable_thinking\":false}",
                                  "\"reasoning_effort\":\"none\""};
    const char *const users[] = {"Hi", "Hi /no_think"};
    for (int i = 0; i < 2; i++) {
        json_t *j = chat(extras[i], users[i]);
        cr_assert_null(message_str(j, "reasoning_content"), "case %d", i);
        cr_assert_eq(reasoning_tokens(j), 0, "case %d", i);
        cr_assert_gt(strlen(message_str(j, "content")), 0);
        json_decref(j);
    }
}

/* --reasoning-markers think overrides the template's family: <think> is no token of this
 * vocabulary, so nothing is tracked, split or forced (the budget has nothing to close). */
static void start_hunyuan_as_think(void)
{
    start_markers = "think";
    start_hunyuan();
    start_markers = NULL;
}

Test(reasoning_hunyuan_flags, the_flag_overrides_the_templates_family,
     .init = start_hunyuan_as_think, .fini = stop_hunyuan, .timeout = 120)
{
    json_t *j = chat(THINK_ON ",\"thinking_budget_tokens\":2", "hi");
    cr_assert_null(message_str(j, "reasoning_content"));
    cr_assert_eq(reasoning_tokens(j), 0);
    const char *content = message_str(j, "content");
    cr_assert_eq(strspn(content, "x"), strlen(content), "nothing forced: \"%s\"", content);
    cr_assert_eq(strlen(content), 24, "max_tokens of x");
    json_decref(j);
}
