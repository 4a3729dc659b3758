/* The driver: one thread, one curl multi handle, every request in flight on it. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/loadgen-impl.h"
#include "common/common.h"

#define LG_MAX_BODY_BYTES (64u << 20) /* non-streamed or error bodies kept at most */

const char *hs_lg_endpoint_str(enum hs_lg_endpoint e)
{
    switch (e) {
    case HS_LG_ENDPOINT_CHAT: return "chat";
    case HS_LG_ENDPOINT_COMPLETIONS: return "completions";
    default: return "unknown";
    }
}

const char *hs_lg_workload_str(enum hs_lg_workload w)
{
    switch (w) {
    case HS_LG_WORKLOAD_RANDOM: return "random";
    case HS_LG_WORKLOAD_FIXED: return "fixed";
    case HS_LG_WORKLOAD_JSONL: return "jsonl";
    case HS_LG_WORKLOAD_AGENT: return "agent";
    default: return "unknown";
    }
}

const char *hs_lg_error_kind_str(enum hs_lg_error_kind k)
{
    switch (k) {
    case HS_LG_ERR_NONE: return "none";
    case HS_LG_ERR_CONNECT: return "connect";
    case HS_LG_ERR_HTTP: return "http_status";
    case HS_LG_ERR_TIMEOUT: return "timeout";
    case HS_LG_ERR_MALFORMED: return "malformed_stream";
    case HS_LG_ERR_DISCONNECT: return "disconnect";
    case HS_LG_ERR_OTHER: return "other";
    default: return "unknown";
    }
}

void hs_lg_config_defaults(struct hs_lg_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->endpoint = HS_LG_ENDPOINT_CHAT;
    cfg->stream = true;
    cfg->workload = HS_LG_WORKLOAD_RANDOM;
    cfg->input_len = 256;
    cfg->output_len = 128;
    cfg->concurrency = 1;
    cfg->num_requests = 100;
    cfg->timeout_s = 600;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- one transfer ---- */

struct lg_xfer {
    struct lg_xfer *prev, *next; /* in lg_run's in-flight list */
    CURL *easy;
    char *body;
    double t_start;
    bool measured;
    int index; /* into run->reqs when measured */
    bool stream;
    bool is_chat;
    bool status_checked, http_ok, malformed, done_seen;
    int64_t usage_in, usage_out; /* -1: not reported */
    int64_t n_events;
    char *buf; /* pending partial line (stream) or whole body */
    size_t len, cap;
    double *chunks; /* content chunk times since t_start */
    int n_chunks, cap_chunks;
    char errbuf[CURL_ERROR_SIZE];
};

struct lg_run {
    const struct hs_lg_config *cfg;
    CURLM *multi;
    struct curl_slist *headers;
    char *url;
    struct hs__lg_workload *wl;
    double t0;
    struct hs_lg_request_result *reqs;
    int n_reqs, cap_reqs;
    int64_t *in_est; /* [cap_reqs] */
    int64_t n_events;
    char first_error[HS_LG_ERR_COUNT][160];
    struct lg_xfer *inflight; /* list head */
    int active, done_phase, errors_phase;
    double last_progress;
};

static void xfer_free(struct lg_xfer *x)
{
    if (!x) {
        return;
    }
    if (x->easy) {
        curl_easy_cleanup(x->easy);
    }
    free(x->body);
    free(x->buf);
    free(x->chunks);
    free(x);
}

static bool buf_append(struct lg_xfer *x, const char *p, size_t n)
{
    if (x->len + n + 1 > x->cap) {
        if (x->len + n + 1 > LG_MAX_BODY_BYTES) {
            return false;
        }
        size_t cap = x->cap ? x->cap * 2 : 4096;
        while (cap < x->len + n + 1) {
            cap *= 2;
        }
        char *q = realloc(x->buf, cap);
        if (!q) {
            return false;
        }
        x->buf = q;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, p, n);
    x->len += n;
    x->buf[x->len] = 0;
    return true;
}

static void read_usage(struct lg_xfer *x, json_t *obj)
{
    json_t *usage = json_object_get(obj, "usage");
    if (json_is_object(usage)) {
        json_t *pt = json_object_get(usage, "prompt_tokens");
        json_t *ct = json_object_get(usage, "completion_tokens");
        if (json_is_integer(pt)) {
            x->usage_in = json_integer_value(pt);
        }
        if (json_is_integer(ct)) {
            x->usage_out = json_integer_value(ct);
        }
    }
}

/* Content text of choices[0]: delta.content / delta.reasoning_content for chat chunks,
 * message.content for chat bodies, text for completions. */
static const char *choice_text(const struct lg_xfer *x, json_t *obj, bool *has_choices)
{
    json_t *choices = json_object_get(obj, "choices");
    *has_choices = json_is_array(choices);
    json_t *c0 = json_array_get(choices, 0);
    if (!c0) {
        return NULL;
    }
    if (!x->is_chat) {
        return json_string_value(json_object_get(c0, "text"));
    }
    json_t *d = json_object_get(c0, x->stream ? "delta" : "message");
    const char *s = json_string_value(json_object_get(d, "content"));
    if (!s || !*s) {
        s = json_string_value(json_object_get(d, "reasoning_content"));
    }
    return s;
}

static void add_chunk(struct lg_xfer *x, double t)
{
    if (x->n_chunks == x->cap_chunks) {
        int cap = x->cap_chunks ? x->cap_chunks * 2 : 64;
        double *p = realloc(x->chunks, (size_t)cap * sizeof(*p));
        if (!p) {
            x->malformed = true; /* counted, not crashed */
            return;
        }
        x->chunks = p;
        x->cap_chunks = cap;
    }
    x->chunks[x->n_chunks++] = t;
}

/* One SSE line (without its newline). Returns false when the stream is malformed. */
static bool sse_line(struct lg_xfer *x, char *line, size_t n, double t)
{
    if (n && line[n - 1] == '\r') {
        line[--n] = 0;
    }
    if (n == 0 || line[0] == ':') {
        return true; /* event separator or comment */
    }
    if (strncmp(line, "data:", 5) != 0) {
        /* event:, id:, retry: are legal SSE fields; anything else is not */
        return !strncmp(line, "event:", 6) || !strncmp(line, "id:", 3) ||
               !strncmp(line, "retry:", 6);
    }
    char *p = line + 5;
    if (*p == ' ') {
        p++;
    }
    x->n_events++;
    if (!strcmp(p, "[DONE]")) {
        x->done_seen = true;
        return true;
    }
    json_t *obj = json_loads(p, 0, NULL);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return false;
    }
    bool ok = !json_object_get(obj, "error");
    bool has_choices;
    const char *s = choice_text(x, obj, &has_choices);
    if (s && *s) {
        add_chunk(x, t);
    }
    read_usage(x, obj);
    json_decref(obj);
    return ok;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct lg_xfer *x = userdata;
    size_t n = size * nmemb;
    double t = now_s() - x->t_start;
    if (!x->status_checked) {
        long code = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
        x->http_ok = code >= 200 && code < 300;
        x->status_checked = true;
    }
    if (!x->stream || !x->http_ok) {
        if (!buf_append(x, ptr, n)) {
            x->malformed = x->http_ok;
            return x->http_ok ? 0 : n; /* drop the excess of an error body */
        }
        return n;
    }
    /* Split into lines; keep the unterminated tail in buf. */
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] != '\n') {
            continue;
        }
        char *line;
        size_t len;
        if (x->len) {
            if (!buf_append(x, ptr + start, i - start)) {
                x->malformed = true;
                return 0;
            }
            line = x->buf;
            len = x->len;
            x->len = 0;
        } else {
            /* in place: temporarily terminate */
            line = ptr + start;
            len = i - start;
        }
        char save = line[len];
        line[len] = 0;
        bool ok = sse_line(x, line, len, t);
        line[len] = save;
        if (!ok) {
            x->malformed = true;
            return 0;
        }
        start = i + 1;
    }
    if (start < n && !buf_append(x, ptr + start, n - start)) {
        x->malformed = true;
        return 0;
    }
    return n;
}

/* ---- issue and finish ---- */

static hs_status grow_reqs(struct lg_run *run)
{
    if (run->n_reqs < run->cap_reqs) {
        return HS_OK;
    }
    int cap = run->cap_reqs ? run->cap_reqs * 2 : 256;
    struct hs_lg_request_result *r = realloc(run->reqs, (size_t)cap * sizeof(*r));
    if (!r) {
        return HS_E_NOMEM;
    }
    run->reqs = r;
    int64_t *e = realloc(run->in_est, (size_t)cap * sizeof(*e));
    if (!e) {
        return HS_E_NOMEM;
    }
    run->in_est = e;
    run->cap_reqs = cap;
    return HS_OK;
}

static hs_status issue(struct lg_run *run, bool measured)
{
    const struct hs_lg_config *cfg = run->cfg;
    hs_status st = HS_E_NOMEM;
    struct lg_xfer *x = calloc(1, sizeof(*x));
    if (!x) {
        return HS_E_NOMEM;
    }
    x->usage_in = x->usage_out = -1;
    x->stream = cfg->stream;
    x->is_chat = cfg->endpoint == HS_LG_ENDPOINT_CHAT;
    x->measured = measured;
    int64_t in_est = 0;
    st = hs__lg_workload_next(run->wl, &x->body, &in_est);
    if (st != HS_OK) {
        goto fail;
    }
    if (measured && (st = grow_reqs(run)) != HS_OK) {
        goto fail;
    }
    st = HS_E_INTERNAL;
    x->easy = curl_easy_init();
    if (!x->easy) {
        goto fail;
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, run->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, run->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(x->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    if (cfg->timeout_s > 0) {
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)ceil(cfg->timeout_s * 1000.0));
    }
    x->t_start = now_s();
    if (curl_multi_add_handle(run->multi, e) != CURLM_OK) {
        goto fail;
    }
    if (measured) {
        x->index = run->n_reqs++;
        struct hs_lg_request_result *r = &run->reqs[x->index];
        memset(r, 0, sizeof(*r));
        r->ttft_s = r->tpot_s = -1;
        r->error = HS_LG_ERR_OTHER; /* until finished */
        r->start_s = x->t_start - run->t0;
        run->in_est[x->index] = in_est;
    }
    x->next = run->inflight;
    if (run->inflight) {
        run->inflight->prev = x;
    }
    run->inflight = x;
    run->active++;
    return HS_OK;
fail:
    xfer_free(x);
    return st;
}

static enum hs_lg_error_kind classify(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return HS_LG_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return HS_LG_ERR_TIMEOUT;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
        return HS_LG_ERR_DISCONNECT;
    default:
        return HS_LG_ERR_OTHER;
    }
}

static void finish(struct lg_run *run, struct lg_xfer *x, CURLcode rc)
{
    double e2e = now_s() - x->t_start;
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    enum hs_lg_error_kind kind = HS_LG_ERR_NONE;
    if (x->malformed) {
        kind = HS_LG_ERR_MALFORMED;
    } else if (rc != CURLE_OK) {
        kind = classify(rc);
    } else if (code < 200 || code >= 300) {
        kind = HS_LG_ERR_HTTP;
    } else if (x->stream) {
        /* leftover unterminated line */
        if (x->len) {
            x->buf[x->len] = 0;
            if (!sse_line(x, x->buf, x->len, e2e)) {
                kind = HS_LG_ERR_MALFORMED;
            }
        }
        if (x->n_chunks == 0 && !x->done_seen) {
            kind = HS_LG_ERR_MALFORMED;
        }
    } else {
        json_t *obj = x->buf ? json_loadb(x->buf, x->len, 0, NULL) : NULL;
        bool has_choices = false;
        const char *s = obj ? choice_text(x, obj, &has_choices) : NULL;
        if (!json_is_object(obj) || !has_choices) {
            kind = HS_LG_ERR_MALFORMED;
        } else {
            read_usage(x, obj);
            if (s && *s) {
                add_chunk(x, e2e);
            }
        }
        json_decref(obj);
    }
    run->active--;
    if (kind != HS_LG_ERR_NONE) {
        run->errors_phase++;
    }
    run->done_phase++;
    if (!x->measured) {
        return;
    }
    run->n_events += x->n_events;
    char *first = run->first_error[kind];
    if (kind != HS_LG_ERR_NONE && !first[0]) {
        if (kind == HS_LG_ERR_HTTP) {
            snprintf(first, sizeof(run->first_error[0]), "HTTP %ld: %.120s", code,
                     x->buf ? x->buf : "");
        } else if (kind == HS_LG_ERR_MALFORMED) {
            snprintf(first, sizeof(run->first_error[0]), "%s",
                     x->n_chunks ? "unparseable event mid-stream" : "no completion in response");
        } else {
            snprintf(first, sizeof(run->first_error[0]), "%.150s",
                     x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        }
    }
    struct hs_lg_request_result *r = &run->reqs[x->index];
    r->error = kind;
    r->http_status = (int)code;
    r->e2e_s = e2e;
    r->usage_reported = x->usage_out >= 0;
    r->input_tokens = x->usage_in >= 0 ? x->usage_in : run->in_est[x->index];
    r->output_tokens = x->usage_out >= 0 ? x->usage_out : x->n_chunks;
    r->n_chunks = x->n_chunks;
    r->chunk_s = x->chunks;
    x->chunks = NULL;
    if (r->n_chunks > 0) {
        r->ttft_s = r->chunk_s[0];
    }
    if (r->ttft_s >= 0 && r->output_tokens >= 2) {
        r->tpot_s = (e2e - r->ttft_s) / (double)(r->output_tokens - 1);
    }
}

static void drain(struct lg_run *run)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(run->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct lg_xfer *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(run->multi, e);
        if (x->prev) {
            x->prev->next = x->next;
        } else {
            run->inflight = x->next;
        }
        if (x->next) {
            x->next->prev = x->prev;
        }
        finish(run, x, rc);
        xfer_free(x);
    }
}

/* ---- progress ---- */

static void progress(struct lg_run *run, const char *phase, int target, double elapsed, bool last)
{
    FILE *f = run->cfg->progress;
    if (!f) {
        return;
    }
    double dur = run->cfg->duration_s;
    double frac = target > 0 ? (double)run->done_phase / target : dur > 0 ? elapsed / dur : 0;
    if (frac > 1) {
        frac = 1;
    }
    if (run->cfg->progress_tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[30] = 0;
        fprintf(f, "\r%-7s [%s] %3.0f%% done %d  active %d  errors %d  %.1fs ", phase, bar,
                frac * 100, run->done_phase, run->active, run->errors_phase, elapsed);
        if (last) {
            fputc('\n', f);
        }
    } else {
        fprintf(f, "%s: %.0f%% done %d active %d errors %d elapsed %.1fs\n", phase, frac * 100,
                run->done_phase, run->active, run->errors_phase, elapsed);
    }
    fflush(f);
}

/* ---- phases ---- */

static double exp_gap(struct hs_rng *rng, double rate)
{
    return -log(1.0 - hs_rng_uniform(rng)) / rate;
}

/* Sends `target` requests (<= 0: until duration) and waits for all of them. */
static hs_status run_phase(struct lg_run *run, bool measured, int target, double duration,
                           struct hs_rng *arrivals)
{
    const struct hs_lg_config *cfg = run->cfg;
    const char *name = measured ? "bench" : "warmup";
    int cap = cfg->concurrency > 0 ? cfg->concurrency : (cfg->rate > 0 ? 0 : 1);
    double t0 = now_s();
    double next_arrival = cfg->rate > 0 ? t0 + exp_gap(arrivals, cfg->rate) : t0;
    int issued = 0;
    run->done_phase = run->errors_phase = 0;
    run->last_progress = t0;
    if (measured) {
        run->t0 = t0;
    }
    double period = cfg->progress_tty ? 0.2 : 5.0;
    for (;;) {
        double now = now_s();
        bool more = (target <= 0 || issued < target) && (duration <= 0 || now - t0 < duration);
        if (!more && run->active == 0) {
            break;
        }
        while (more && (cap <= 0 || run->active < cap) && (cfg->rate <= 0 || now >= next_arrival)) {
            HS_TRY(issue(run, measured));
            issued++;
            if (cfg->rate > 0) {
                next_arrival += exp_gap(arrivals, cfg->rate);
            }
            more = (target <= 0 || issued < target) && (duration <= 0 || now - t0 < duration);
        }
        int running = 0;
        curl_multi_perform(run->multi, &running);
        drain(run);
        now = now_s();
        more = (target <= 0 || issued < target) && (duration <= 0 || now - t0 < duration);
        int wait_ms = 100;
        if (more && (cap <= 0 || run->active < cap)) {
            /* a slot is free: issue now (closed loop) or at the next arrival */
            double w = cfg->rate > 0 ? ceil((next_arrival - now) * 1000.0) : 0;
            wait_ms = w < 0 ? 0 : w > 100 ? 100 : (int)w;
        }
        if (more && duration > 0) {
            double w = ceil((t0 + duration - now) * 1000.0);
            if (w < wait_ms) {
                wait_ms = w < 0 ? 0 : (int)w;
            }
        }
        if (wait_ms > 0) {
            curl_multi_poll(run->multi, NULL, 0, wait_ms, NULL);
        }
        if (now - run->last_progress >= period) {
            run->last_progress = now;
            progress(run, name, target, now - t0, false);
        }
    }
    progress(run, name, target, now_s() - t0, true);
    return HS_OK;
}

hs_status hs_lg_run(const struct hs_lg_config *cfg, struct hs_lg_report **out, struct hs_error *err)
{
    *out = NULL;
    if (!cfg->base_url || !*cfg->base_url) {
        return hs_error_set(err, HS_E_INVAL, "a base URL is required");
    }
    if (cfg->num_requests <= 0 && cfg->duration_s <= 0) {
        return hs_error_set(err, HS_E_INVAL, "give a number of requests or a duration");
    }
    if (cfg->rate <= 0 && cfg->concurrency <= 0) {
        return hs_error_set(err, HS_E_INVAL, "give a rate or a concurrency");
    }
    if ((unsigned)cfg->endpoint >= HS_LG_ENDPOINT_COUNT) {
        return hs_error_set(err, HS_E_INVAL, "unknown endpoint");
    }
    hs_status st = HS_OK;
    struct lg_run run = {.cfg = cfg};
    struct hs_lg_report *rep = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return hs_error_set(err, HS_E_INTERNAL, "curl_global_init failed");
    }
    st = hs__lg_workload_create(cfg, &run.wl, err);
    if (st != HS_OK) {
        goto fail;
    }
    st = HS_E_NOMEM;
    size_t blen = strlen(cfg->base_url);
    while (blen && cfg->base_url[blen - 1] == '/') {
        blen--;
    }
    /* Both the server root and the SDKs' form ending in /v1 name the same API. */
    if (blen >= 3 && memcmp(cfg->base_url + blen - 3, "/v1", 3) == 0) {
        blen -= 3;
    }
    const char *path =
        cfg->endpoint == HS_LG_ENDPOINT_CHAT ? "/v1/chat/completions" : "/v1/completions";
    run.url = malloc(blen + strlen(path) + 1);
    if (!run.url) {
        goto fail;
    }
    memcpy(run.url, cfg->base_url, blen);
    strcpy(run.url + blen, path);
    run.headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (cfg->stream) {
        run.headers = curl_slist_append(run.headers, "Accept: text/event-stream");
    }
    if (cfg->api_key) {
        char *auth = malloc(strlen(cfg->api_key) + 32);
        if (!auth) {
            goto fail;
        }
        sprintf(auth, "Authorization: Bearer %s", cfg->api_key);
        run.headers = curl_slist_append(run.headers, auth);
        free(auth);
    }
    run.multi = curl_multi_init();
    if (!run.headers || !run.multi) {
        st = hs_error_set(err, HS_E_INTERNAL, "curl initialisation failed");
        goto fail;
    }
    long conns = cfg->concurrency > 0 ? cfg->concurrency + 16 : 1024;
    curl_multi_setopt(run.multi, CURLMOPT_MAXCONNECTS, conns);

    struct hs_rng arrivals;
    hs_rng_seed(&arrivals, cfg->seed ^ 0x9e3779b97f4a7c15ull);
    if (cfg->warmup > 0) {
        st = run_phase(&run, false, cfg->warmup, 0, &arrivals);
        if (st != HS_OK) {
            goto fail;
        }
    }
    st = run_phase(&run, true, cfg->num_requests, cfg->duration_s, &arrivals);
    if (st != HS_OK) {
        goto fail;
    }
    double t_end = run.t0;
    for (int i = 0; i < run.n_reqs; i++) {
        t_end = fmax(t_end, run.t0 + run.reqs[i].start_s + run.reqs[i].e2e_s);
    }

    st = HS_E_NOMEM;
    rep = calloc(1, sizeof(*rep));
    if (!rep) {
        goto fail;
    }
    rep->reqs = run.reqs;
    rep->n_requests = run.n_reqs;
    run.reqs = NULL;
    rep->duration_s = t_end - run.t0;
    rep->t0_mono_s = run.t0;
    memcpy(rep->first_error, run.first_error, sizeof(rep->first_error));
    rep->n_sse_events = run.n_events;
    rep->slo_ttft_ms = cfg->slo_ttft_ms;
    rep->slo_tpot_ms = cfg->slo_tpot_ms;
    rep->rate = cfg->rate;
    rep->concurrency = cfg->concurrency;
    rep->base_url = strdup(cfg->base_url);
    rep->model = strdup(cfg->model ? cfg->model : "");
    rep->endpoint = strdup(hs_lg_endpoint_str(cfg->endpoint));
    rep->workload = strdup(hs_lg_workload_str(cfg->workload));
    if (!rep->base_url || !rep->model || !rep->endpoint || !rep->workload) {
        goto fail;
    }
    hs__lg_report_finish(rep);
    *out = rep;
    rep = NULL;
    st = HS_OK;
fail:
    hs_lg_report_destroy(rep);
    if (run.multi) {
        /* only reached with transfers in flight on an error path */
        while (run.inflight) {
            struct lg_xfer *x = run.inflight;
            run.inflight = x->next;
            curl_multi_remove_handle(run.multi, x->easy);
            xfer_free(x);
        }
        curl_multi_cleanup(run.multi);
    }
    if (run.reqs) {
        for (int i = 0; i < run.n_reqs; i++) {
            free(run.reqs[i].chunk_s);
        }
        free(run.reqs);
    }
    free(run.in_est);
    curl_slist_free_all(run.headers);
    free(run.url);
    hs__lg_workload_destroy(run.wl);
    curl_global_cleanup();
    return st;
}
