/* hetserve-bench's engine: a load generator for any OpenAI-compatible HTTP server.
 *
 * One thread drives every connection through libcurl's multi interface; requests come from a
 * seeded workload generator (random / fixed lengths, a JSONL file, or a MobiAgent-shaped agent
 * trace), arrive by a Poisson process or a closed loop, and each streamed response is timed per
 * SSE chunk. The report holds one record per measured request plus the aggregate statistics;
 * it can be printed, written as vLLM-`bench serve`-compatible JSON, or plotted as SVG.
 *
 * Token counts come from the server's `usage` object when it sends one (the harness asks for it
 * with stream_options.include_usage); otherwise one streamed content chunk counts as one token.
 * Prompts are built from a list of common English words, one word per intended token.
 *
 * Thread: everything here runs on the calling thread. */
#ifndef HS_BENCH_LOADGEN_CORE_H
#define HS_BENCH_LOADGEN_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "common/status.h"

enum hs_lg_endpoint {
    HS_LG_ENDPOINT_CHAT,        /* POST {base}/v1/chat/completions */
    HS_LG_ENDPOINT_COMPLETIONS, /* POST {base}/v1/completions */
    HS_LG_ENDPOINT_COUNT,
};
const char *hs_lg_endpoint_str(enum hs_lg_endpoint e);

enum hs_lg_workload {
    HS_LG_WORKLOAD_RANDOM, /* lengths uniform in [len*(1-r), len*(1+r)] */
    HS_LG_WORKLOAD_FIXED,  /* exactly input_len / output_len */
    HS_LG_WORKLOAD_JSONL,  /* one body object or {"prompt": ...} per line, cycled */
    HS_LG_WORKLOAD_AGENT,  /* MobiAgent-shaped: task prompt + growing JSON action history */
    HS_LG_WORKLOAD_COUNT,
};
const char *hs_lg_workload_str(enum hs_lg_workload w);

enum hs_lg_error_kind {
    HS_LG_ERR_NONE,
    HS_LG_ERR_CONNECT,    /* could not resolve or connect */
    HS_LG_ERR_HTTP,       /* HTTP status other than 2xx */
    HS_LG_ERR_TIMEOUT,    /* --timeout elapsed */
    HS_LG_ERR_MALFORMED,  /* unparseable SSE / JSON, or a 200 with no completion in it */
    HS_LG_ERR_DISCONNECT, /* connection dropped mid-response */
    HS_LG_ERR_OTHER,      /* any other transport error */
    HS_LG_ERR_COUNT,
};
const char *hs_lg_error_kind_str(enum hs_lg_error_kind k);

struct hs_lg_config {
    const char *base_url; /* borrowed; e.g. "http://127.0.0.1:8080" ("/v1/..." is appended) */
    const char *api_key;  /* borrowed; NULL: no Authorization header */
    const char *model;    /* borrowed; NULL: field omitted */
    enum hs_lg_endpoint endpoint;
    bool stream; /* SSE streaming (needed for TTFT / ITL) */

    enum hs_lg_workload workload;
    const char *jsonl_path; /* borrowed; for HS_LG_WORKLOAD_JSONL */
    int input_len;          /* words (= approximate tokens) */
    int output_len;         /* max_tokens = min_tokens, with ignore_eos; <= 0: not set */
    double range_ratio;     /* for RANDOM, in [0, 1] */

    double rate;     /* Poisson arrivals per second; <= 0: closed loop */
    int concurrency; /* max in flight (closed loop size, or cap under --rate); <= 0: 1 / none */
    int warmup;      /* requests sent and awaited first, excluded from every statistic */
    int num_requests;  /* measured requests; <= 0: until duration */
    double duration_s; /* stop issuing after this long; <= 0: until num_requests */
    uint64_t seed;
    double timeout_s; /* per request; <= 0: none */

    double slo_ttft_ms; /* goodput thresholds; <= 0: not applied */
    double slo_tpot_ms;

    FILE *progress;     /* borrowed; NULL: quiet */
    bool progress_tty;  /* redraw a bar with \r, else print a status line every 5 s */
};

/* Fills the defaults: chat, stream, random 256/128 words, r=0, concurrency 1, 100 requests,
 * seed 0, timeout 600 s, no SLO. */
void hs_lg_config_defaults(struct hs_lg_config *cfg);

struct hs_lg_request_result {
    enum hs_lg_error_kind error;
    int http_status;
    double start_s;  /* since the measured phase began */
    double ttft_s;   /* first content chunk; -1 if none */
    double e2e_s;
    double tpot_s;   /* (e2e - ttft) / (output_tokens - 1); -1 if output_tokens < 2 */
    int64_t input_tokens;  /* usage.prompt_tokens, else the workload's estimate */
    int64_t output_tokens; /* usage.completion_tokens, else content chunks */
    bool usage_reported;
    int n_chunks;          /* content-bearing chunks */
    double *chunk_s;       /* owned; [n_chunks] arrival times since the request's start */
};

struct hs_lg_stat {
    double mean, median, p90, p99, std, min, max; /* milliseconds; all 0 when n == 0 */
    int64_t n;
};

struct hs_lg_report {
    int n_requests;   /* measured requests */
    int completed;    /* without error */
    int64_t errors[HS_LG_ERR_COUNT];
    int64_t n_errors;
    double duration_s; /* first measured send to last measured completion */
    double t0_mono_s;  /* CLOCK_MONOTONIC seconds when the measured phase began (start_s is
                        * relative to it): lines the run up with server-side logs */
    int64_t total_input_tokens, total_output_tokens; /* over completed requests */
    double request_throughput, output_throughput, total_token_throughput; /* per second */
    struct hs_lg_stat ttft, tpot, itl, e2el;
    double slo_ttft_ms, slo_tpot_ms;
    int good;         /* completed and within both SLOs (all completed when no SLO) */
    double goodput;   /* good / duration_s */
    int64_t n_sse_events; /* every `data:` line seen, warmup excluded */
    char first_error[HS_LG_ERR_COUNT][160]; /* first message seen per kind, "" if none */
    struct hs_lg_request_result *reqs; /* owned; [n_requests] in issue order */
    /* echo of the config for the JSON file */
    char *model, *base_url, *endpoint, *workload;
    double rate;
    int concurrency;
};

/* Runs the benchmark described by cfg. On success *out is a new report (free with
 * hs_lg_report_destroy); individual request failures are counted in it, not returned.
 * Errors: HS_E_INVAL for an unusable config (message in err), HS_E_IO for an unreadable JSONL
 * file, HS_E_FORMAT for a JSONL line that is not an object, HS_E_NOMEM, HS_E_INTERNAL when
 * libcurl cannot be initialised. *out stays NULL on error. */
hs_status hs_lg_run(const struct hs_lg_config *cfg, struct hs_lg_report **out,
                    struct hs_error *err);

void hs_lg_report_destroy(struct hs_lg_report *rep);

/* Human-readable summary. */
void hs_lg_report_print(const struct hs_lg_report *rep, FILE *f);

/* vLLM `bench serve` field names where they overlap. HS_E_IO when the file cannot be written. */
hs_status hs_lg_report_write_json(const struct hs_lg_report *rep, const char *path,
                                  struct hs_error *err);

/* SVG with CDFs of TTFT / TPOT / E2E and output tokens/s over time. HS_E_IO on write failure. */
hs_status hs_lg_report_write_svg(const struct hs_lg_report *rep, const char *path,
                                 struct hs_error *err);

/* ---- pieces exposed for tests ---- */

/* Percentile p in [0, 100] of sorted v[n] with linear interpolation (numpy's default). */
double hs_lg_percentile(const double *sorted, int64_t n, double p);

/* Builds request body number `index` (0-based, deterministic in cfg->seed) as a JSON string.
 * *body_out: returns new (free()); *input_tokens_out: the workload's estimate. Loads the
 * JSONL file on every call, so meant for tests only. */
hs_status hs_lg_build_request(const struct hs_lg_config *cfg, int index, char **body_out,
                              int64_t *input_tokens_out, struct hs_error *err);

#endif
