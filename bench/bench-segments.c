/* bench-segments: very long and short generations through the serving engine, FIFO against
 * length-aware admission and segments, in the same run. Long requests (8k tokens by default,
 * ignore_eos, so their lengths are fixed) fill the slots; short ones arrive at a steady rate
 * while they run. Reports the short requests' TTFT (p50, p99) and the total throughput (all
 * generated tokens over the time from the first submission to the last DONE) of each
 * configuration, and the ratios to FIFO. On a shared machine the wall-clock throughput follows
 * the machine's load; the throughput per CPU second of the engine's threads (the process's CPU
 * time less this polling thread's) does not, and is reported beside it.
 *
 *   bench-segments [-m MODEL.gguf] [-L LONGS] [-G LONG_TOKENS] [-N SHORTS] [-g SHORT_TOKENS]
 *                  [-i INTERVAL_MS] [-P PARALLEL] [-S SEGMENT_TOKENS] [-t THREADS] [-r REPS] [-a]
 *
 * Without -m it loads stories260K from $HS_MODELS_DIR (default ../shared/models). Each
 * configuration (fifo and length+segments; with -a also length alone and fifo+segments) runs
 * REPS times, interleaved (fifo, length+segments, fifo, ...); medians are reported. The short
 * requests' lengths are exact (ignore_eos) too, so their predictions are exact; the long ones' come
 * from the same history (exact as well): this measures the scheduling, not the predictor (its error
 * is in /metrics). */
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "model/model.h"
#include "server/engine.h"

#define MAX_REQS 1024
#define MAX_REPS 15

struct opts {
    const char *model;
    int n_long, long_tokens, n_short, short_tokens, interval_ms, parallel, segment, threads, reps;
    bool all; /* -a: the four configurations, else fifo and length+segments */
};

struct config {
    const char *name;
    enum hs_sched_order order;
    bool segments;
};

static const struct config configs[] = {
    {"fifo", HS_SCHED_FIFO, false},
    {"length+segments", HS_SCHED_LENGTH, true},
    {"length", HS_SCHED_LENGTH, false},
    {"fifo+segments", HS_SCHED_FIFO, true},
};
#define N_CONFIGS ((int)(sizeof(configs) / sizeof(configs[0])))

struct run {
    double ttft_p50_ms, ttft_p99_ms; /* short requests */
    double long_e2e_ms;              /* mean over the long requests */
    double tok_s;                    /* all generated tokens / makespan */
    double tok_cpu_s;                /* all generated tokens / the engine thread's CPU seconds */
    uint64_t yields;
};

/* CPU seconds of the process (every thread, ended ones included) or of the calling thread. */
static double cpu_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The q-quantile of sorted v[n] (nearest rank). */
static double quantile(const double *v, int n, double q)
{
    int k = (int)(q * n + 0.999999) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static struct hs_engine_handle *submit(struct hs_engine *e, const hs_token *prompt, int n_prompt,
                                       int max_tokens, uint64_t id)
{
    struct hs_engine_request r;
    hs_engine_request_init(&r);
    r.prompt = prompt;
    r.n_prompt = n_prompt;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = 0;
    r.id = id;
    struct hs_engine_handle *h = NULL;
    struct hs_error err = {0};
    if (hs_engine_submit(e, &r, &h, &err) != HS_OK) {
        fprintf(stderr, "bench-segments: submit: %s\n", err.message);
        return NULL;
    }
    return h;
}

/* Drains h's events; true once DONE was taken (its TTFT/E2E and token count filled). */
static bool poll_done(struct hs_engine_handle *h, double *ttft_ms, double *e2e_ms, int *n_tok)
{
    struct hs_engine_event ev;
    while (hs_engine_poll(h, &ev) == HS_OK) {
        if (ev.type == HS_EVENT_DONE) {
            *ttft_ms = ev.ttft_ms;
            *e2e_ms = ev.e2e_ms;
            *n_tok = ev.usage.completion_tokens;
            return true;
        }
    }
    return false;
}

static int run_once(struct hs_model *m, const struct opts *o, const struct config *c,
                    struct run *out)
{
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = o->parallel;
    p.n_ctx = o->long_tokens + 64;
    p.n_threads = o->threads;
    p.order = c->order;
    p.fair_wait_ms = 1000;
    p.segment_tokens = c->segments ? o->segment : 0;
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    if (hs_engine_create(m, &p, &e, &err) != HS_OK) {
        fprintf(stderr, "bench-segments: %s\n", err.message);
        return 1;
    }
    const int32_t n_vocab = hs_model_hparams(m)->n_vocab;
    const int n_req = o->n_long + o->n_short;
    static hs_token prompts[MAX_REQS][16];
    static struct hs_engine_handle *h[MAX_REQS];
    static bool done[MAX_REQS];
    static double ttft[MAX_REQS];
    double e2e_long = 0;
    uint64_t tokens = 0;
    for (int i = 0; i < n_req; i++) {
        prompts[i][0] = 1; /* BOS, then a few ids of its own */
        for (int k = 1; k < 16; k++) {
            prompts[i][k] = (hs_token)(2 + (i * 131 + k * 17) % (n_vocab - 2));
        }
        done[i] = false;
        h[i] = NULL;
    }
    const double t0 = bench_now_s();
    const double proc0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID), main0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    int n_done = 0, next_short = 0, rc = 0;
    for (int i = 0; i < o->n_long; i++) {
        h[i] = submit(e, prompts[i], 16, o->long_tokens, (uint64_t)i);
        rc |= h[i] == NULL;
    }
    /* the short ones arrive from the first long token on, every interval_ms */
    double t_first = -1;
    while (n_done < n_req && rc == 0) {
        const double t = bench_now_s();
        if (t_first < 0) {
            struct hs_engine_metrics mt;
            hs_engine_get_metrics(e, &mt);
            if (mt.generation_tokens > 0) {
                t_first = t;
            }
        }
        while (t_first >= 0 && next_short < o->n_short &&
               t >= t_first + next_short * o->interval_ms / 1e3) {
            const int i = o->n_long + next_short++;
            h[i] = submit(e, prompts[i], 16, o->short_tokens, (uint64_t)i);
            rc |= h[i] == NULL;
        }
        for (int i = 0; i < n_req; i++) {
            double tt, ee;
            int nt;
            if (!h[i] || done[i] || !poll_done(h[i], &tt, &ee, &nt)) {
                continue;
            }
            done[i] = true;
            n_done++;
            tokens += (uint64_t)nt;
            if (i < o->n_long) {
                e2e_long += ee;
            } else {
                ttft[i - o->n_long] = tt;
            }
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    const double makespan = bench_now_s() - t0;
    /* the engine's threads: the process less this (polling) thread */
    const double engine_cpu =
        (cpu_s(CLOCK_PROCESS_CPUTIME_ID) - proc0) - (cpu_s(CLOCK_THREAD_CPUTIME_ID) - main0);
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    for (int i = 0; i < n_req; i++) {
        hs_engine_release(h[i]);
    }
    hs_engine_destroy(e);
    qsort(ttft, (size_t)o->n_short, sizeof(double), bench_cmp_double);
    out->ttft_p50_ms = quantile(ttft, o->n_short, 0.50);
    out->ttft_p99_ms = quantile(ttft, o->n_short, 0.99);
    out->long_e2e_ms = e2e_long / o->n_long;
    out->tok_s = (double)tokens / makespan;
    out->tok_cpu_s = engine_cpu > 0 ? (double)tokens / engine_cpu : 0.0;
    out->yields = mt.segment_yields;
    return rc;
}

static double median_of(const struct run *r, int n, size_t off)
{
    double v[MAX_REPS];
    for (int i = 0; i < n; i++) {
        v[i] = *(const double *)((const char *)&r[i] + off);
    }
    qsort(v, (size_t)n, sizeof(double), bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The machine's load (benchmarks here share it): /proc/loadavg's first three fields. */
static void print_load(const char *when)
{
    char load[128] = "?";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fgets(load, sizeof(load), f)) {
            load[strcspn(load, "\n")] = '\0';
        }
        fclose(f);
    }
    printf("loadavg at %s: %s\n", when, load);
}

static bool parse(int argc, char **argv, struct opts *o)
{
    int c;
    while ((c = getopt(argc, argv, "m:L:G:N:g:i:P:S:t:r:ah")) != -1) {
        int *dst = NULL;
        switch (c) {
        case 'a':
            o->all = true;
            continue;
        case 'm':
            o->model = optarg;
            continue;
        case 'L':
            dst = &o->n_long;
            break;
        case 'G':
            dst = &o->long_tokens;
            break;
        case 'N':
            dst = &o->n_short;
            break;
        case 'g':
            dst = &o->short_tokens;
            break;
        case 'i':
            dst = &o->interval_ms;
            break;
        case 'P':
            dst = &o->parallel;
            break;
        case 'S':
            dst = &o->segment;
            break;
        case 't':
            dst = &o->threads;
            break;
        case 'r':
            dst = &o->reps;
            break;
        default:
            return false;
        }
        char *end;
        long v = strtol(optarg, &end, 10);
        if (*end || v < 0 || v > 1 << 20) {
            return false;
        }
        *dst = (int)v;
    }
    return o->n_long >= 1 && o->n_short >= 1 && o->n_long + o->n_short <= MAX_REQS &&
           o->long_tokens >= 1 && o->short_tokens >= 1 && o->parallel >= 1 && o->segment >= 1 &&
           o->reps >= 1 && o->reps <= MAX_REPS;
}

int main(int argc, char **argv)
{
    struct opts o = {NULL, 4, 8192, 64, 32, 50, 4, 256, 1, 3, false};
    if (!parse(argc, argv, &o)) {
        fprintf(stderr,
                "usage: bench-segments [-m MODEL.gguf] [-L LONGS] [-G LONG_TOKENS] "
                "[-N SHORTS] [-g SHORT_TOKENS] [-i INTERVAL_MS] [-P PARALLEL] "
                "[-S SEGMENT_TOKENS] [-t THREADS] [-r REPS (<= %d)] [-a]\n",
                MAX_REPS);
        return 2;
    }
    char path[1024];
    if (!o.model) {
        const char *dir = getenv("HS_MODELS_DIR");
        snprintf(path, sizeof(path), "%s/stories260K.gguf", dir ? dir : "../shared/models");
        o.model = path;
    }
    struct hs_model *m = NULL;
    struct hs_error err = {0};
    if (hs_model_load(o.model, &m, &err) != HS_OK) {
        fprintf(stderr, "bench-segments: %s: %s\n", o.model, err.message);
        return 1;
    }
    print_load("start");
    printf("bench-segments: %s; %d long requests of %d tokens and %d short of %d arriving every "
           "%d ms; %d slots, segments of %d tokens, %d thread(s), %d rep(s)\n",
           o.model, o.n_long, o.long_tokens, o.n_short, o.short_tokens, o.interval_ms, o.parallel,
           o.segment, o.threads, o.reps);
    static struct run runs[N_CONFIGS][MAX_REPS];
    const int n_configs = o.all ? N_CONFIGS : 2;
    for (int r = 0; r < o.reps; r++) {
        for (int c = 0; c < n_configs; c++) {
            if (run_once(m, &o, &configs[c], &runs[c][r]) != 0) {
                hs_model_destroy(m);
                return 1;
            }
            fprintf(
                stderr, "  rep %d %-16s short TTFT p99 %8.1f ms, %8.1f tok/s, %8.1f tok/cpu-s\n", r,
                configs[c].name, runs[c][r].ttft_p99_ms, runs[c][r].tok_s, runs[c][r].tok_cpu_s);
        }
    }
    const double base_p99 = median_of(runs[0], o.reps, offsetof(struct run, ttft_p99_ms));
    const double base_tok = median_of(runs[0], o.reps, offsetof(struct run, tok_s));
    const double base_cpu = median_of(runs[0], o.reps, offsetof(struct run, tok_cpu_s));
    printf("%-16s %11s %11s %12s %8s %9s %11s %9s %9s %7s\n", "config", "TTFT p50 ms",
           "TTFT p99 ms", "long E2E ms", "tok/s", "tok/cpu-s", "p99 vs fifo", "tok/s x",
           "tok/cpu x", "yields");
    for (int c = 0; c < n_configs; c++) {
        const double p99 = median_of(runs[c], o.reps, offsetof(struct run, ttft_p99_ms));
        const double tok = median_of(runs[c], o.reps, offsetof(struct run, tok_s));
        const double cpu = median_of(runs[c], o.reps, offsetof(struct run, tok_cpu_s));
        printf("%-16s %11.1f %11.1f %12.1f %8.1f %9.1f %10.2fx %9.3f %9.3f %7llu\n",
               configs[c].name, median_of(runs[c], o.reps, offsetof(struct run, ttft_p50_ms)), p99,
               median_of(runs[c], o.reps, offsetof(struct run, long_e2e_ms)), tok, cpu,
               p99 > 0 ? base_p99 / p99 : 0.0, base_tok > 0 ? tok / base_tok : 0.0,
               base_cpu > 0 ? cpu / base_cpu : 0.0, (unsigned long long)runs[c][o.reps - 1].yields);
    }
    print_load("end");
    hs_model_destroy(m);
    return 0;
}
