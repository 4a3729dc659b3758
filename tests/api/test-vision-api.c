/* Image input through the HTTP API (api/vision.c, api/chat.c): the MobiAgent request shape with a
 * PNG screenshot as a data: URL is served (and reads differently from the text alone), a repeated
 * screenshot is answered from the encoder's cache, and broken, huge, unsupported or fetched images
 * get 400s naming the content part. Models: a random qwen2vl language model and its projector,
 * written here. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <png.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/server-impl.h"
#include "api/vision.h"
#include "model/mkproj.h"
#include "model/model.h"
#include "server/engine.h"

static struct {
    int32_t http_threads;   /* 0: the default */
    enum hs_proj_type proj; /* the projector's family (0: Qwen2-VL) */
    char trace[128];        /* the engine's --trace, "": none */
    bool no_image_tokens;   /* idefics3: a vocabulary without SmolVLM's image tokens */
    char lpath[128], ppath[128];
    struct hs_model *model;
    struct hs_engine *eng;
    struct hs_api_server *srv;
    uint16_t port;
} g;

static void start(void)
{
    struct hs_error err = {0};
    snprintf(g.ppath, sizeof(g.ppath), "/tmp/hs-test-vapi-p-%d.gguf", (int)getpid());
    snprintf(g.lpath, sizeof(g.lpath), "/tmp/hs-test-vapi-l-%d.gguf", (int)getpid());
    const bool idefics3 = g.proj == HS_PROJ_IDEFICS3;
    struct hs_mkproj_params pp = hs_mkproj_default_params(g.proj);
    pp.proj_dim = 128;
    pp.image_size = idefics3 ? 112 : pp.image_size; /* SmolVLM: with a llama model */
    cr_assert_eq(hs_mkproj_write(&pp, g.ppath, &err), HS_OK, "%s", err.message);
    struct hs_mkmodel_params mp = hs_mkmodel_default_params();
    mp.arch = idefics3 ? HS_ARCH_LLAMA : HS_ARCH_QWEN2VL;
    mp.image_tokens = idefics3 && !g.no_image_tokens;
    mp.n_embd = 128;
    mp.n_head = 4;
    mp.n_head_kv = 2;
    mp.n_ff = 256;
    mp.n_vocab = 1024;
    mp.n_ctx = 1024;
    cr_assert_eq(hs_mkmodel_write(&mp, g.lpath, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_model_load(g.lpath, &g.model, &err), HS_OK, "%s", err.message);
    struct hs_engine_params ep = hs_engine_default_params();
    ep.n_ctx = 1024;
    ep.n_parallel = 4;
    ep.n_threads = 1;
    ep.trace_path = g.trace[0] ? g.trace : NULL;
    cr_assert_eq(hs_engine_create(g.model, &ep, &g.eng, &err), HS_OK, "%s", err.message);
    struct hs_api_params ap = hs_api_default_params();
    ap.port = 0;
    ap.mmproj = g.ppath;
    ap.vision_threads = 1;
    if (g.http_threads > 0) {
        ap.http_threads = g.http_threads;
    }
    cr_assert_eq(hs_api_server_start(g.model, g.eng, &ap, &g.srv, &err), HS_OK, "%s", err.message);
    g.port = hs_api_server_port(g.srv);
}

static void start_qwen25vl(void)
{
    g.proj = HS_PROJ_QWEN25VL;
    start();
}

static void stop(void)
{
    hs_api_server_stop(g.srv);
    hs_engine_destroy(g.eng);
    hs_model_destroy(g.model);
    unlink(g.lpath);
    unlink(g.ppath);
    memset(&g, 0, sizeof(g));
}

static size_t on_body(char *p, size_t sz, size_t n, void *user)
{
    char **b = user;
    size_t len = *b ? strlen(*b) : 0;
    *b = realloc(*b, len + sz * n + 1);
    memcpy(*b + len, p, sz * n);
    (*b)[len + sz * n] = '\0';
    return sz * n;
}

/* POSTs body to /v1/chat/completions; returns the status, *out the parsed answer (NULL when
 * the client gave up after timeout_ms: status 0). */
static long post_timeout(const char *body, json_t **out, long timeout_ms)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", (unsigned)g.port);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char *resp = NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    const CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        free(resp);
        *out = NULL;
        return 0;
    }
    cr_assert_eq(rc, CURLE_OK, "%s", curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    json_error_t e;
    *out = json_loads(resp ? resp : "", 0, &e);
    cr_assert_not_null(*out, "not JSON: %s", resp ? resp : "");
    free(resp);
    return status;
}

static long post(const char *body, json_t **out)
{
    return post_timeout(body, out, 60000L);
}

static char *b64(const uint8_t *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc((n + 2) / 3 * 4 + 1), *o = s;
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                           (i + 2 < n ? p[i + 2] : 0);
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? t[v & 63] : '=';
    }
    *o = '\0';
    return s;
}

/* A PNG "screenshot" of nx x ny as a data URL (shade selects the picture). */
static char *png_url(int nx, int ny, int shade)
{
    uint8_t *px = malloc((size_t)nx * ny * 3);
    for (int i = 0; i < nx * ny * 3; i++) {
        px[i] = (uint8_t)((i * 7 + (i / (nx * 3)) * 13 + shade) & 255);
    }
    png_image pi;
    memset(&pi, 0, sizeof(pi));
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)nx;
    pi.height = (png_uint_32)ny;
    pi.format = PNG_FORMAT_RGB;
    png_alloc_size_t n = 0;
    png_image_write_to_memory(&pi, NULL, &n, 0, px, 0, NULL);
    uint8_t *buf = malloc(n);
    cr_assert(png_image_write_to_memory(&pi, buf, &n, 0, px, 0, NULL));
    char *enc = b64(buf, n);
    char *url = malloc(strlen(enc) + 32);
    sprintf(url, "data:image/png;base64,%s", enc);
    free(enc);
    free(buf);
    free(px);
    return url;
}

/* The MobiAgent shape: system prompt, [screenshot, instruction], JSON response_format. */
#define AGENT_FMT                                                                                  \
    "{\"messages\":[{\"role\":\"system\",\"content\":\"You are a phone agent.\"},"                 \
    "{\"role\":\"user\",\"content\":[%s%s%s{\"type\":\"text\",\"text\":\"Next action?\"}]}],"      \
    "\"max_tokens\":12,\"temperature\":0,\"response_format\":{\"type\":\"json_object\"}}"

static char *agent_body(const char *url)
{
    char *b = malloc(sizeof(AGENT_FMT) + (url ? strlen(url) : 0) + 128);
    sprintf(b, AGENT_FMT, url ? "{\"type\":\"image_url\",\"image_url\":{\"url\":\"" : "",
            url ? url : "", url ? "\"}}," : "");
    return b;
}

static const char *content(json_t *j)
{
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    return json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
}

static json_int_t prompt_tokens(json_t *j)
{
    return json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
}

Test(vision_api, screenshot_request_is_served_and_cached, .init = start, .fini = stop)
{
    char *url = png_url(280, 140, 0); /* 10 x 5 merged patches: 50 image tokens */
    char *with = agent_body(url);
    char *without = agent_body(NULL);
    json_t *a, *b, *c;
    cr_assert_eq(post(with, &a), 200, "%s", json_dumps(a, 0));
    cr_assert_eq(post(without, &b), 200);
    cr_assert_not_null(content(a));
    /* response_format's grammar holds with an image (12 tokens of a random model: cut short) */
    cr_assert_eq(content(a)[0], '{', "%s", content(a));
    /* the image's 50 placeholders plus the vision markers' tokens */
    cr_assert_geq(prompt_tokens(a) - prompt_tokens(b), 50);
    cr_assert_str_neq(content(a), content(b));
    struct hs__api_vision_stats vs;
    hs__api_vision_get_stats(g.srv->vision, &vs);
    cr_assert(vs.n_encoded == 1 && vs.n_hits == 0 && vs.encode_s > 0.0);
    cr_assert_eq(post(with, &c), 200);
    cr_assert_str_eq(content(a), content(c));
    hs__api_vision_get_stats(g.srv->vision, &vs);
    cr_assert(vs.n_encoded == 1 && vs.n_hits == 1, "encoded %llu, hits %llu",
              (unsigned long long)vs.n_encoded, (unsigned long long)vs.n_hits);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    free(with);
    free(without);
    free(url);
}

/* A Qwen2.5-VL projector (window attention) is served the same way: 168x140 is 6x5 merged
 * patches, windows of 4x4 of them, so the window order is not the raster order. */
Test(vision_api, qwen25vl_screenshot_is_served, .init = start_qwen25vl, .fini = stop)
{
    char *url = png_url(168, 140, 0);
    char *with = agent_body(url);
    char *without = agent_body(NULL);
    json_t *a, *b;
    cr_assert_eq(post(with, &a), 200, "%s", json_dumps(a, 0));
    cr_assert_eq(post(without, &b), 200);
    cr_assert_eq(content(a)[0], '{', "%s", content(a));
    cr_assert_geq(prompt_tokens(a) - prompt_tokens(b), 30);
    struct hs__api_vision_stats vs;
    hs__api_vision_get_stats(g.srv->vision, &vs);
    cr_assert(vs.n_encoded == 1 && vs.encode_s > 0.0);
    json_decref(a);
    json_decref(b);
    free(with);
    free(without);
    free(url);
}

static void expect_400(const char *url, const char *needle)
{
    char *body = agent_body(url);
    json_t *j;
    cr_assert_eq(post(body, &j), 400, "%s: %s", url, json_dumps(j, 0));
    json_t *e = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    cr_assert(msg && strstr(msg, needle), "%s: %s", needle, msg);
    cr_assert_str_eq(json_string_value(json_object_get(e, "param")), "messages[1].content[0]");
    json_decref(j);
    free(body);
}

Test(vision_api, bad_images_are_400s_naming_the_part, .init = start, .fini = stop)
{
    expect_400("https://example.com/screen.png", "not fetched");
    expect_400("data:image/png;base64,iVBORw0KGgo=", "PNG");
    expect_400("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "PNG and JPEG");
    expect_400("data:image/png;base64,!!!", "base64");
    char *url = png_url(9000, 2, 2); /* one side over the 8192 limit */
    expect_400(url, "limited");
    free(url);
}

/* ---- the encoder's own thread ---- */

static void start_one_http_thread(void)
{
    g.http_threads = 1;
    start();
}

static struct hs__api_vision_stats stats(void)
{
    struct hs__api_vision_stats vs;
    hs__api_vision_get_stats(g.srv->vision, &vs);
    return vs;
}

/* Waits up to 20 s for the encoder's queue to hold n requests (queued or being encoded). */
static void wait_pending(int32_t n)
{
    for (int i = 0; i < 2000 && stats().n_pending != n; i++) {
        usleep(10000);
    }
    cr_assert_eq(stats().n_pending, n);
}

struct bg_post {
    char *body;
    long status;
    json_t *answer;
    atomic_bool done;
};

static void *bg_post_main(void *arg)
{
    struct bg_post *b = arg;
    b->status = post(b->body, &b->answer);
    atomic_store(&b->done, true);
    return NULL;
}

/* One HTTP thread: while it encodes a screenshot (about a second here) the server still answers
 * a text-only chat request, which the old encoder on the HTTP thread made wait. */
Test(vision_api, an_encode_holds_no_http_thread, .init = start_one_http_thread, .fini = stop)
{
    char *url = png_url(420, 924, 3); /* 15 x 33 merged patches, 1980 patches */
    struct bg_post b = {.body = agent_body(url)};
    atomic_init(&b.done, false);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, bg_post_main, &b), 0);
    wait_pending(1);
    json_t *j;
    char *text = agent_body(NULL);
    cr_assert_eq(post(text, &j), 200);
    cr_assert_not_null(content(j));
    /* answered while the image was still being encoded */
    cr_assert(!atomic_load(&b.done) && stats().n_encoded == 0,
              "the text request waited for the encoder");
    pthread_join(t, NULL);
    cr_assert_eq(b.status, 200, "%s", json_dumps(b.answer, 0));
    cr_assert_eq(content(b.answer)[0], '{');
    cr_assert_eq(stats().n_encoded, 1);
    json_decref(j);
    json_decref(b.answer);
    free(text);
    free(b.body);
    free(url);
}

/* A client that leaves while its image waits or is encoded: nothing is answered to it, the
 * encoder's work is dropped or finished into the cache, and the server goes on (and stops
 * cleanly with an abandoned request queued behind a running one: .fini). */
Test(vision_api, a_client_leaving_during_encoding, .init = start_one_http_thread, .fini = stop)
{
    char *u1 = png_url(420, 924, 4), *u2 = png_url(420, 924, 5), *u3 = png_url(420, 924, 6);
    char *b1 = agent_body(u1), *b2 = agent_body(u2), *b3 = agent_body(u3);
    json_t *j;
    cr_assert_eq(post_timeout(b1, &j, 300L), 0, "answered within 300 ms?");
    /* encoded on (the task was running when the client left), into the cache */
    wait_pending(0);
    cr_assert_eq(stats().n_encoded, 1);
    cr_assert_eq(post(b1, &j), 200);
    cr_assert_eq(stats().n_hits, 1);
    json_decref(j);
    /* now two leave: the second's task is queued behind the first's and dropped unencoded or
     * finished; stop() must not wait on either's connection */
    cr_assert_eq(post_timeout(b2, &j, 100L), 0);
    cr_assert_eq(post_timeout(b3, &j, 100L), 0);
    free(b1);
    free(b2);
    free(b3);
    free(u1);
    free(u2);
    free(u3);
}

static void start_traced(void)
{
    snprintf(g.trace, sizeof(g.trace), "/tmp/hs-test-vapi-trace-%d.json", (int)getpid());
    start();
}

/* Each encode is an event of the engine's --trace, on the encoder thread's own track. */
Test(vision_api, encodes_are_in_the_trace, .init = start_traced)
{
    char *url = png_url(280, 140, 7); /* 10 x 5 merged patches */
    char *body = agent_body(url);
    json_t *j;
    cr_assert_eq(post(body, &j), 200);
    json_decref(j);
    cr_assert_eq(post(body, &j), 200); /* a cache hit: no second event */
    json_decref(j);
    char trace[128];
    snprintf(trace, sizeof(trace), "%s", g.trace);
    stop(); /* the engine closes the trace */
    json_error_t e;
    json_t *ev = json_load_file(trace, 0, &e);
    unlink(trace);
    cr_assert_not_null(ev, "%s", e.text);
    int n_encode = 0, n_named = 0;
    size_t i;
    json_t *x;
    json_array_foreach(ev, i, x)
    {
        const char *name = json_string_value(json_object_get(x, "name"));
        const json_t *args = json_object_get(x, "args");
        const json_int_t tid = json_integer_value(json_object_get(x, "tid"));
        if (name && !strcmp(name, "encode")) {
            n_encode++;
            cr_assert_eq(tid, HS_ENGINE_TRACE_TID_VISION);
            cr_assert_str_eq(json_string_value(json_object_get(x, "cat")), "vision");
            cr_assert_eq(json_integer_value(json_object_get(args, "tokens")), 50);
            cr_assert_eq(json_integer_value(json_object_get(args, "width")), 280);
            cr_assert(json_real_value(json_object_get(x, "dur")) > 0.0);
        }
        const char *tn = json_string_value(json_object_get(args, "name"));
        if (name && !strcmp(name, "thread_name") && tid == HS_ENGINE_TRACE_TID_VISION && tn &&
            strstr(tn, "vision encoder")) {
            n_named++;
        }
    }
    cr_assert_eq(n_encode, 1);
    cr_assert_eq(n_named, 1);
    json_decref(ev);
    free(body);
    free(url);
}

/* ---- SmolVLM's SigLIP (idefics3) with a llama language model ---- */

static void start_idefics3(void)
{
    g.proj = HS_PROJ_IDEFICS3;
    start();
}

/* A 200x100 screenshot is two 112-pixel tiles and the overview: 3 x 16 rows in libmtmd's layout
 * (tests/model/test-vision.c checks that layout and the logits against llama.cpp's). */
Test(vision_api, siglip_pair_answers_an_image_request, .init = start_idefics3, .fini = stop)
{
    char *url = png_url(200, 100, 0), *url2 = png_url(200, 100, 99);
    char *with = agent_body(url), *with2 = agent_body(url2), *without = agent_body(NULL);
    json_t *a, *b, *c, *d;
    cr_assert_eq(post(with, &a), 200, "%s", json_dumps(a, 0));
    cr_assert_eq(post(without, &b), 200);
    cr_assert_eq(post(with2, &d), 200);
    cr_assert_not_null(content(a));
    cr_assert_eq(content(a)[0], '{', "%s", content(a));
    /* 48 rows, and the layout's tokens around them (<fake_token_around_image>, <global-img>...) */
    cr_assert_geq(prompt_tokens(a) - prompt_tokens(b), 48 + 5, "%lld vs %lld",
                  (long long)prompt_tokens(a), (long long)prompt_tokens(b));
    cr_assert_eq(prompt_tokens(a), prompt_tokens(d));
    /* the picture reaches the answer: without it, or with another, the greedy text differs */
    cr_assert_str_neq(content(a), content(b));
    cr_assert_str_neq(content(a), content(d), "%s", content(a));
    struct hs__api_vision_stats vs;
    hs__api_vision_get_stats(g.srv->vision, &vs);
    cr_assert(vs.n_encoded == 2 && vs.n_hits == 0, "encoded %llu",
              (unsigned long long)vs.n_encoded);
    cr_assert_eq(post(with, &c), 200);
    cr_assert_str_eq(content(a), content(c));
    hs__api_vision_get_stats(g.srv->vision, &vs);
    cr_assert(vs.n_encoded == 2 && vs.n_hits == 1);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
    free(with);
    free(with2);
    free(without);
    free(url);
    free(url2);
}

static void start_idefics3_plain_vocab(void)
{
    g.no_image_tokens = true;
    start_idefics3();
}

/* libmtmd looks the layout's tokens up by their text; a vocabulary without them is a 400 that
 * names the token, not a prompt with holes. */
Test(vision_api, siglip_layout_needs_its_tokens, .init = start_idefics3_plain_vocab, .fini = stop)
{
    char *url = png_url(112, 112, 0);
    char *body = agent_body(url);
    json_t *j;
    cr_assert_eq(post(body, &j), 400, "%s", json_dumps(j, 0));
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    cr_assert(msg && strstr(msg, "no token") && strstr(msg, "\\n\\n"), "%s", msg);
    json_decref(j);
    free(body);
    free(url);
}
