/* Statistics, the text summary, the JSON result file and the SVG plot. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/loadgen-impl.h"
#include "common/common.h"

/* ---- statistics ---- */

double hs_lg_percentile(const double *sorted, int64_t n, double p)
{
    if (n <= 0) {
        return 0;
    }
    double pos = p / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos);
    int64_t hi = lo + 1 < n ? lo + 1 : n - 1;
    double f = pos - (double)lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * f;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place; values in seconds, stats in ms. */
static struct hs_lg_stat stat_of(double *v, int64_t n)
{
    struct hs_lg_stat s = {0};
    s.n = n;
    if (n == 0) {
        return s;
    }
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += v[i];
    }
    double mean = sum / (double)n;
    double var = 0;
    for (int64_t i = 0; i < n; i++) {
        var += (v[i] - mean) * (v[i] - mean);
    }
    s.mean = mean * 1e3;
    s.std = sqrt(var / (double)n) * 1e3;
    s.median = hs_lg_percentile(v, n, 50) * 1e3;
    s.p90 = hs_lg_percentile(v, n, 90) * 1e3;
    s.p99 = hs_lg_percentile(v, n, 99) * 1e3;
    s.min = v[0] * 1e3;
    s.max = v[n - 1] * 1e3;
    return s;
}

void hs__lg_report_finish(struct hs_lg_report *rep)
{
    int64_t n_itl = 0;
    for (int i = 0; i < rep->n_requests; i++) {
        if (rep->reqs[i].error == HS_LG_ERR_NONE && rep->reqs[i].n_chunks > 1) {
            n_itl += rep->reqs[i].n_chunks - 1;
        }
    }
    size_t n = (size_t)rep->n_requests + 1;
    double *ttft = malloc(n * sizeof(double)), *tpot = malloc(n * sizeof(double));
    double *e2e = malloc(n * sizeof(double)), *itl = malloc(((size_t)n_itl + 1) * sizeof(double));
    int64_t nt = 0, np = 0, ne = 0, ni = 0;
    memset(rep->errors, 0, sizeof(rep->errors));
    rep->completed = rep->good = 0;
    rep->total_input_tokens = rep->total_output_tokens = 0;
    for (int i = 0; i < rep->n_requests; i++) {
        const struct hs_lg_request_result *r = &rep->reqs[i];
        rep->errors[r->error]++;
        if (r->error != HS_LG_ERR_NONE) {
            continue;
        }
        rep->completed++;
        rep->total_input_tokens += r->input_tokens;
        rep->total_output_tokens += r->output_tokens;
        bool good = true;
        if (r->ttft_s >= 0) {
            if (ttft) {
                ttft[nt++] = r->ttft_s;
            }
            good = good && (rep->slo_ttft_ms <= 0 || r->ttft_s * 1e3 <= rep->slo_ttft_ms);
        } else if (rep->slo_ttft_ms > 0) {
            good = false;
        }
        if (r->tpot_s >= 0) {
            if (tpot) {
                tpot[np++] = r->tpot_s;
            }
            good = good && (rep->slo_tpot_ms <= 0 || r->tpot_s * 1e3 <= rep->slo_tpot_ms);
        }
        if (e2e) {
            e2e[ne++] = r->e2e_s;
        }
        for (int k = 1; itl && k < r->n_chunks; k++) {
            itl[ni++] = r->chunk_s[k] - r->chunk_s[k - 1];
        }
        rep->good += good;
    }
    rep->errors[HS_LG_ERR_NONE] = 0;
    rep->n_errors = rep->n_requests - rep->completed;
    rep->ttft = stat_of(ttft, nt);
    rep->tpot = stat_of(tpot, np);
    rep->e2el = stat_of(e2e, ne);
    rep->itl = stat_of(itl, ni);
    free(ttft);
    free(tpot);
    free(e2e);
    free(itl);
    double d = rep->duration_s > 0 ? rep->duration_s : 1e-9;
    rep->request_throughput = rep->completed / d;
    rep->output_throughput = (double)rep->total_output_tokens / d;
    rep->total_token_throughput =
        (double)(rep->total_input_tokens + rep->total_output_tokens) / d;
    rep->goodput = rep->good / d;
}

void hs_lg_report_destroy(struct hs_lg_report *rep)
{
    if (!rep) {
        return;
    }
    for (int i = 0; i < rep->n_requests; i++) {
        free(rep->reqs[i].chunk_s);
    }
    free(rep->reqs);
    free(rep->model);
    free(rep->base_url);
    free(rep->endpoint);
    free(rep->workload);
    free(rep);
}

/* ---- text ---- */

static void print_stat(FILE *f, const char *name, const struct hs_lg_stat *s)
{
    fprintf(f, "%-5s (ms)  mean %9.2f  p50 %9.2f  p90 %9.2f  p99 %9.2f   (n=%lld)\n", name,
            s->mean, s->median, s->p90, s->p99, (long long)s->n);
}

void hs_lg_report_print(const struct hs_lg_report *rep, FILE *f)
{
    fprintf(f, "============ hetserve-bench result ============\n");
    fprintf(f, "%-32s %s (%s, %s workload)\n", "target:", rep->base_url, rep->endpoint,
            rep->workload);
    fprintf(f, "%-32s %d of %d\n", "completed requests:", rep->completed, rep->n_requests);
    fprintf(f, "%-32s %.3f\n", "duration (s):", rep->duration_s);
    fprintf(f, "%-32s %lld\n", "total input tokens:", (long long)rep->total_input_tokens);
    fprintf(f, "%-32s %lld\n", "total output tokens:", (long long)rep->total_output_tokens);
    fprintf(f, "%-32s %.3f\n", "request throughput (req/s):", rep->request_throughput);
    fprintf(f, "%-32s %.2f\n", "output throughput (tok/s):", rep->output_throughput);
    fprintf(f, "%-32s %.2f\n", "total token throughput (tok/s):", rep->total_token_throughput);
    fprintf(f, "%-32s %.1f\n", "SSE events/s:",
            rep->duration_s > 0 ? (double)rep->n_sse_events / rep->duration_s : 0.0);
    if (rep->slo_ttft_ms > 0 || rep->slo_tpot_ms > 0) {
        fprintf(f, "%-32s %.3f (%d requests within ttft<=%.0fms tpot<=%.0fms)\n",
                "goodput (req/s):", rep->goodput, rep->good, rep->slo_ttft_ms, rep->slo_tpot_ms);
    }
    fprintf(f, "----------------- latency ---------------------\n");
    print_stat(f, "TTFT", &rep->ttft);
    print_stat(f, "TPOT", &rep->tpot);
    print_stat(f, "ITL", &rep->itl);
    print_stat(f, "E2E", &rep->e2el);
    fprintf(f, "----------------- errors ----------------------\n");
    fprintf(f, "%-32s %lld\n", "total:", (long long)rep->n_errors);
    for (int k = 1; k < HS_LG_ERR_COUNT; k++) {
        if (rep->errors[k]) {
            fprintf(f, "  %-30s %lld   first: %s\n", hs_lg_error_kind_str(k),
                    (long long)rep->errors[k], rep->first_error[k]);
        }
    }
    fprintf(f, "===============================================\n");
}

/* ---- JSON ---- */

static int put_stat(json_t *o, const char *name, const struct hs_lg_stat *s)
{
    char key[64];
    int rc = 0;
    struct {
        const char *p;
        double v;
    } f[] = {{"mean", s->mean}, {"median", s->median}, {"std", s->std},
             {"p90", s->p90},   {"p99", s->p99}};
    for (size_t i = 0; i < HS_ARRAY_LEN(f); i++) {
        snprintf(key, sizeof(key), "%s_%s_ms", f[i].p, name);
        rc |= json_object_set_new(o, key, json_real(f[i].v));
    }
    return rc;
}

hs_status hs_lg_report_write_json(const struct hs_lg_report *rep, const char *path,
                                  struct hs_error *err)
{
    json_t *o = json_object();
    json_t *errs = json_object();
    json_t *ttfts = json_array(), *itls = json_array(), *in = json_array(), *outs = json_array();
    json_t *kinds = json_array();
    int rc = !o || !errs || !ttfts || !itls || !in || !outs || !kinds;
    for (int k = 1; k < HS_LG_ERR_COUNT; k++) {
        rc |= json_object_set_new(errs, hs_lg_error_kind_str(k), json_integer(rep->errors[k]));
    }
    for (int i = 0; i < rep->n_requests && !rc; i++) {
        const struct hs_lg_request_result *r = &rep->reqs[i];
        rc |= json_array_append_new(ttfts, json_real(r->ttft_s >= 0 ? r->ttft_s : 0));
        json_t *il = json_array();
        for (int k = 1; il && k < r->n_chunks; k++) {
            rc |= json_array_append_new(il, json_real(r->chunk_s[k] - r->chunk_s[k - 1]));
        }
        rc |= json_array_append_new(itls, il);
        rc |= json_array_append_new(in, json_integer(r->input_tokens));
        rc |= json_array_append_new(outs, json_integer(r->output_tokens));
        rc |= json_array_append_new(kinds, json_string(r->error == HS_LG_ERR_NONE
                                                           ? ""
                                                           : hs_lg_error_kind_str(r->error)));
    }
    if (!rc) {
        rc |= json_object_set_new(o, "backend", json_string("openai-compatible"));
        rc |= json_object_set_new(o, "base_url", json_string(rep->base_url));
        rc |= json_object_set_new(o, "model_id", json_string(rep->model));
        rc |= json_object_set_new(o, "endpoint", json_string(rep->endpoint));
        rc |= json_object_set_new(o, "workload", json_string(rep->workload));
        rc |= json_object_set_new(o, "request_rate",
                                  rep->rate > 0 ? json_real(rep->rate) : json_string("inf"));
        rc |= json_object_set_new(o, "max_concurrency", json_integer(rep->concurrency));
        rc |= json_object_set_new(o, "num_prompts", json_integer(rep->n_requests));
        rc |= json_object_set_new(o, "duration", json_real(rep->duration_s));
        rc |= json_object_set_new(o, "completed", json_integer(rep->completed));
        rc |= json_object_set_new(o, "failed", json_integer(rep->n_errors));
        rc |= json_object_set_new(o, "total_input_tokens", json_integer(rep->total_input_tokens));
        rc |= json_object_set_new(o, "total_output_tokens",
                                  json_integer(rep->total_output_tokens));
        rc |= json_object_set_new(o, "request_throughput", json_real(rep->request_throughput));
        rc |= json_object_set_new(o, "request_goodput", json_real(rep->goodput));
        rc |= json_object_set_new(o, "output_throughput", json_real(rep->output_throughput));
        rc |= json_object_set_new(o, "total_token_throughput",
                                  json_real(rep->total_token_throughput));
        rc |= json_object_set_new(o, "sse_events", json_integer(rep->n_sse_events));
        rc |= put_stat(o, "ttft", &rep->ttft);
        rc |= put_stat(o, "tpot", &rep->tpot);
        rc |= put_stat(o, "itl", &rep->itl);
        rc |= put_stat(o, "e2el", &rep->e2el);
        rc |= json_object_set_new(o, "errors", errs);
        errs = NULL;
        rc |= json_object_set_new(o, "input_lens", in);
        rc |= json_object_set_new(o, "output_lens", outs);
        rc |= json_object_set_new(o, "ttfts", ttfts);
        rc |= json_object_set_new(o, "itls", itls);
        rc |= json_object_set_new(o, "request_errors", kinds);
        in = outs = ttfts = itls = kinds = NULL;
    }
    hs_status st = HS_OK;
    if (rc) {
        st = HS_E_NOMEM;
    } else if (json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
        st = hs_error_set(err, HS_E_IO, "cannot write %s", path);
    }
    json_decref(errs);
    json_decref(in);
    json_decref(outs);
    json_decref(ttfts);
    json_decref(itls);
    json_decref(kinds);
    json_decref(o);
    return st;
}

/* ---- SVG ---- */

#define SVG_W 1000
#define SVG_H 720
#define PW 400 /* panel plot area */
#define PH 230

static double nice_step(double range)
{
    double raw = range / 5.0;
    double p = pow(10, floor(log10(raw > 0 ? raw : 1)));
    double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* Axes, grid and labels for a panel whose plot area's top-left is (x0, y0). */
static void svg_axes(FILE *f, int x0, int y0, const char *title, const char *xl,
                     const char *yl, double xmax, double ymax)
{
    fprintf(f, "<text x='%d' y='%d' font-size='15' font-weight='bold'>%s</text>\n", x0,
            y0 - 12, title);
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#333'/>\n", x0,
            y0, PW, PH);
    double xs = nice_step(xmax), ys = nice_step(ymax);
    for (double v = 0; v <= xmax * 1.0001; v += xs) {
        int x = x0 + (int)(v / xmax * PW);
        fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#ddd'/>", x, y0, x, y0 + PH);
        fprintf(f, "<text x='%d' y='%d' font-size='11' text-anchor='middle'>%g</text>\n", x,
                y0 + PH + 14, v);
    }
    for (double v = 0; v <= ymax * 1.0001; v += ys) {
        int y = y0 + PH - (int)(v / ymax * PH);
        fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#ddd'/>", x0, y, x0 + PW, y);
        fprintf(f, "<text x='%d' y='%d' font-size='11' text-anchor='end'>%g</text>\n", x0 - 4,
                y + 4, v);
    }
    fprintf(f, "<text x='%d' y='%d' font-size='12' text-anchor='middle'>%s</text>\n",
            x0 + PW / 2, y0 + PH + 32, xl);
    fprintf(f,
            "<text x='%d' y='%d' font-size='12' text-anchor='middle' "
            "transform='rotate(-90 %d %d)'>%s</text>\n",
            x0 - 42, y0 + PH / 2, x0 - 42, y0 + PH / 2, yl);
}

static void svg_cdf(FILE *f, int x0, int y0, const char *title, double *v, int64_t n,
                    const char *color)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double xmax = n ? v[n - 1] * 1.05 : 1;
    if (xmax <= 0) {
        xmax = 1;
    }
    svg_axes(f, x0, y0, title, "latency (ms)", "fraction of requests", xmax, 1.0);
    if (n == 0) {
        fprintf(f, "<text x='%d' y='%d' font-size='13'>no data</text>\n", x0 + PW / 2 - 25,
                y0 + PH / 2);
        return;
    }
    fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='%.1f,%d ", color,
            x0 + v[0] / xmax * PW, y0 + PH);
    for (int64_t i = 0; i < n; i++) {
        double x = x0 + v[i] / xmax * PW;
        fprintf(f, "%.1f,%.1f %.1f,%.1f ", x, y0 + PH - (double)i / (double)n * PH, x,
                y0 + PH - (double)(i + 1) / (double)n * PH);
    }
    fprintf(f, "'/>\n");
}

hs_status hs_lg_report_write_svg(const struct hs_lg_report *rep, const char *path,
                                 struct hs_error *err)
{
    size_t n = (size_t)rep->n_requests + 1;
    double *v = malloc(n * sizeof(double));
    enum { NB = 60 };
    double bins[NB] = {0};
    if (!v) {
        return HS_E_NOMEM;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        free(v);
        return hs_error_set(err, HS_E_IO, "%s: %s", path, strerror(errno));
    }
    fprintf(f,
            "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' "
            "width='%d' height='%d' viewBox='0 0 %d %d' font-family='sans-serif'>\n"
            "<rect width='100%%' height='100%%' fill='white'/>\n",
            SVG_W, SVG_H, SVG_W, SVG_H);
    fprintf(f,
            "<text x='20' y='24' font-size='14'>hetserve-bench: %s, %s workload, %d/%d "
            "completed, %.2f req/s, %.1f output tok/s</text>\n",
            rep->endpoint, rep->workload, rep->completed, rep->n_requests,
            rep->request_throughput, rep->output_throughput);
    static const struct {
        const char *title;
        int x, y;
        const char *color;
    } panels[3] = {{"TTFT CDF", 80, 70, "#1f77b4"},
                   {"TPOT CDF", 560, 70, "#ff7f0e"},
                   {"E2E latency CDF", 80, 420, "#2ca02c"}};
    for (int p = 0; p < 3; p++) {
        int64_t k = 0;
        for (int i = 0; i < rep->n_requests; i++) {
            const struct hs_lg_request_result *r = &rep->reqs[i];
            double x = p == 0 ? r->ttft_s : p == 1 ? r->tpot_s : r->e2e_s;
            if (r->error == HS_LG_ERR_NONE && x >= 0) {
                v[k++] = x * 1e3;
            }
        }
        svg_cdf(f, panels[p].x, panels[p].y, panels[p].title, v, k, panels[p].color);
    }
    /* Output throughput over time: each request's tokens spread over its content chunks. */
    double dur = rep->duration_s > 0 ? rep->duration_s : 1;
    double bw = dur / NB;
    for (int i = 0; i < rep->n_requests; i++) {
        const struct hs_lg_request_result *r = &rep->reqs[i];
        if (r->error != HS_LG_ERR_NONE || r->n_chunks == 0) {
            continue;
        }
        double per = (double)r->output_tokens / r->n_chunks;
        for (int c = 0; c < r->n_chunks; c++) {
            int b = (int)((r->start_s + r->chunk_s[c]) / bw);
            bins[b < 0 ? 0 : b >= NB ? NB - 1 : b] += per / bw;
        }
    }
    double ymax = 1;
    for (int b = 0; b < NB; b++) {
        ymax = fmax(ymax, bins[b] * 1.1);
    }
    svg_axes(f, 560, 420, "Output throughput over time", "time (s)", "tokens/s", dur, ymax);
    fprintf(f, "<polyline fill='none' stroke='#d62728' stroke-width='2' points='");
    for (int b = 0; b < NB; b++) {
        double y = 420 + PH - bins[b] / ymax * PH;
        fprintf(f, "%.1f,%.1f %.1f,%.1f ", 560 + (double)b / NB * PW, y,
                560 + (double)(b + 1) / NB * PW, y);
    }
    fprintf(f, "'/>\n</svg>\n");
    free(v);
    if (fclose(f) != 0) {
        return hs_error_set(err, HS_E_IO, "%s: write failed", path);
    }
    return HS_OK;
}
