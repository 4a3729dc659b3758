/* hetserve-bench: load test any OpenAI-compatible server. See --help. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/loadgen-core.h"

static const char g_usage[] =
    "usage: hetserve-bench --base-url URL [options]\n"
    "Load-tests an OpenAI-compatible HTTP server (hetserve, vLLM, SGLang, llama.cpp server, ...)\n"
    "and reports throughput and latency. One thread drives all connections (libcurl multi).\n"
    "\n"
    "Target:\n"
    "  --base-url URL         http://host:port or http://host:port/v1 (the SDKs' form)\n"
    "  --api-key KEY          sent as 'Authorization: Bearer KEY' (default: none; env\n"
    "                         OPENAI_API_KEY is used when set)\n"
    "  --model NAME           the request's \"model\" field (default: omitted)\n"
    "  --endpoint chat|completions\n"
    "                         /v1/chat/completions (default) or /v1/completions\n"
    "  --no-stream            ask for whole responses; then TTFT = E2E and there is no ITL\n"
    "                         (default: SSE streaming with stream_options.include_usage)\n"
    "\n"
    "Workload (--workload, default random):\n"
    "  random                 prompt and output lengths drawn uniformly from\n"
    "                         [len*(1-r), len*(1+r)] with r = --range-ratio\n"
    "  fixed                  exactly --input-len / --output-len\n"
    "  jsonl:FILE             one JSON object per line, cycled: a full request body (model,\n"
    "                         stream and stream_options are set; max_tokens only if absent)\n"
    "                         or {\"prompt\": \"...\"} (sent as a user message to chat)\n"
    "  agent                  MobiAgent-shaped GUI-agent traffic: a fixed system prompt and\n"
    "                         task, a growing numbered history of previous JSON answers\n"
    "                         ({\"reasoning\", \"action\", \"params\"}), temperature 0, ~60-token\n"
    "                         answers; episodes of 4-12 near-identical requests (prefix\n"
    "                         caching / speculative decoding friendly)\n"
    "  --input-len N          prompt length in tokens (default 256). Tokens are approximated\n"
    "                         as one common English word each, drawn from a built-in list of\n"
    "                         ~250 short words; the server's usage.prompt_tokens is reported\n"
    "                         when it sends one\n"
    "  --output-len N         output tokens (default 128; 60 for agent), enforced with\n"
    "                         max_tokens = min_tokens = N and ignore_eos: true\n"
    "  --range-ratio R        spread for random lengths, 0..1 (default 0)\n"
    "\n"
    "Arrivals and stopping:\n"
    "  --rate R               Poisson arrivals at R requests/s (open loop)\n"
    "  --concurrency N        closed loop with N requests in flight (default 1); with --rate,\n"
    "                         a cap on requests in flight (default: none)\n"
    "  --num-requests N       measured requests (default 100 unless --duration is given)\n"
    "  --duration S           stop issuing after S seconds (with --num-requests: whichever\n"
    "                         comes first); in-flight requests are awaited\n"
    "  --warmup N             send N requests first, wait for them, exclude them (default 0)\n"
    "  --seed N               seeds prompts and arrival times: same seed, same stream\n"
    "                         (default 0)\n"
    "  --timeout S            per-request timeout in seconds (default 600; 0: none)\n"
    "\n"
    "Reporting:\n"
    "  --slo ttft=MS,tpot=MS  goodput: completed requests/s with TTFT <= ttft and TPOT <= tpot\n"
    "                         (either may be given alone)\n"
    "  --result-json FILE     write results with vLLM `bench serve` field names where they\n"
    "                         overlap, plus per-request lists and error counts\n"
    "  --plot FILE.svg        write an SVG: CDFs of TTFT, TPOT, E2E and output tokens/s over\n"
    "                         time\n"
    "  --quiet                no progress on stderr (default: a bar on a terminal, else a\n"
    "                         status line every 5 s)\n"
    "  -h, --help             this text\n"
    "\n"
    "Metrics: TTFT = time to the first SSE chunk carrying content; ITL = time between\n"
    "content-carrying chunks (per chunk, even if one carries several tokens; chunks that\n"
    "arrive in one network read share a timestamp); TPOT =\n"
    "(E2E - TTFT) / (output_tokens - 1); output tokens from usage.completion_tokens, else one\n"
    "per content chunk. Errors are counted by kind: connect, http_status, timeout,\n"
    "malformed_stream, disconnect, other. Exit status: 0 when the run finished (even with\n"
    "request errors), 1 when it could not run, 2 for bad usage.\n";

enum {
    OPT_BASE_URL = 256, OPT_API_KEY, OPT_MODEL, OPT_ENDPOINT, OPT_NO_STREAM, OPT_WORKLOAD,
    OPT_INPUT_LEN, OPT_OUTPUT_LEN, OPT_RANGE_RATIO, OPT_RATE, OPT_CONCURRENCY, OPT_NUM_REQUESTS,
    OPT_DURATION, OPT_WARMUP, OPT_SEED, OPT_TIMEOUT, OPT_SLO, OPT_RESULT_JSON, OPT_PLOT,
    OPT_QUIET,
};

static const struct option g_opts[] = {
    {"base-url", required_argument, NULL, OPT_BASE_URL},
    {"api-key", required_argument, NULL, OPT_API_KEY},
    {"model", required_argument, NULL, OPT_MODEL},
    {"endpoint", required_argument, NULL, OPT_ENDPOINT},
    {"no-stream", no_argument, NULL, OPT_NO_STREAM},
    {"workload", required_argument, NULL, OPT_WORKLOAD},
    {"input-len", required_argument, NULL, OPT_INPUT_LEN},
    {"output-len", required_argument, NULL, OPT_OUTPUT_LEN},
    {"range-ratio", required_argument, NULL, OPT_RANGE_RATIO},
    {"rate", required_argument, NULL, OPT_RATE},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"num-requests", required_argument, NULL, OPT_NUM_REQUESTS},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"seed", required_argument, NULL, OPT_SEED},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"slo", required_argument, NULL, OPT_SLO},
    {"result-json", required_argument, NULL, OPT_RESULT_JSON},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "hetserve-bench: %s (see --help)\n", msg);
    return 2;
}

static bool parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_slo(const char *s, double *ttft, double *tpot)
{
    char buf[256];
    if (strlen(s) >= sizeof(buf)) {
        return false;
    }
    strcpy(buf, s);
    char *save = NULL;
    bool any = false;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            return false;
        }
        *eq = 0;
        double *dst = !strcmp(tok, "ttft") ? ttft : !strcmp(tok, "tpot") ? tpot : NULL;
        if (!dst || !parse_num(eq + 1, 1e-6, 1e9, dst)) {
            return false;
        }
        any = true;
    }
    return any;
}

int main(int argc, char **argv)
{
    struct hs_lg_config cfg;
    hs_lg_config_defaults(&cfg);
    cfg.api_key = getenv("OPENAI_API_KEY");
    const char *result_json = NULL, *plot = NULL;
    bool quiet = false, out_len_set = false, num_set = false, conc_set = false;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", g_opts, NULL)) != -1) {
        const char *a = optarg;
        long l = 0;
        switch (c) {
        case 'h': fputs(g_usage, stdout); return 0;
        case OPT_BASE_URL: cfg.base_url = a; break;
        case OPT_API_KEY: cfg.api_key = a; break;
        case OPT_MODEL: cfg.model = a; break;
        case OPT_ENDPOINT:
            if (!strcmp(a, "chat")) {
                cfg.endpoint = HS_LG_ENDPOINT_CHAT;
            } else if (!strcmp(a, "completions")) {
                cfg.endpoint = HS_LG_ENDPOINT_COMPLETIONS;
            } else {
                return usage_error("--endpoint must be chat or completions, not '%s'", a);
            }
            break;
        case OPT_NO_STREAM: cfg.stream = false; break;
        case OPT_WORKLOAD:
            if (!strcmp(a, "random")) {
                cfg.workload = HS_LG_WORKLOAD_RANDOM;
            } else if (!strcmp(a, "fixed")) {
                cfg.workload = HS_LG_WORKLOAD_FIXED;
            } else if (!strcmp(a, "agent")) {
                cfg.workload = HS_LG_WORKLOAD_AGENT;
            } else if (!strncmp(a, "jsonl:", 6) && a[6]) {
                cfg.workload = HS_LG_WORKLOAD_JSONL;
                cfg.jsonl_path = a + 6;
            } else {
                return usage_error("unknown --workload '%s' (random, fixed, jsonl:FILE, agent)",
                                   a);
            }
            break;
        case OPT_INPUT_LEN:
            if (!parse_int(a, 1, 10000000, &l)) {
                return usage_error("bad --input-len '%s'", a);
            }
            cfg.input_len = (int)l;
            break;
        case OPT_OUTPUT_LEN:
            if (!parse_int(a, 1, 10000000, &l)) {
                return usage_error("bad --output-len '%s'", a);
            }
            cfg.output_len = (int)l;
            out_len_set = true;
            break;
        case OPT_RANGE_RATIO:
            if (!parse_num(a, 0, 1, &cfg.range_ratio)) {
                return usage_error("bad --range-ratio '%s' (0..1)", a);
            }
            break;
        case OPT_RATE:
            if (!parse_num(a, 1e-6, 1e9, &cfg.rate)) {
                return usage_error("bad --rate '%s'", a);
            }
            break;
        case OPT_CONCURRENCY:
            if (!parse_int(a, 1, 1000000, &l)) {
                return usage_error("bad --concurrency '%s'", a);
            }
            cfg.concurrency = (int)l;
            conc_set = true;
            break;
        case OPT_NUM_REQUESTS:
            if (!parse_int(a, 1, 1000000000, &l)) {
                return usage_error("bad --num-requests '%s'", a);
            }
            cfg.num_requests = (int)l;
            num_set = true;
            break;
        case OPT_DURATION:
            if (!parse_num(a, 1e-3, 1e9, &cfg.duration_s)) {
                return usage_error("bad --duration '%s'", a);
            }
            break;
        case OPT_WARMUP:
            if (!parse_int(a, 0, 1000000000, &l)) {
                return usage_error("bad --warmup '%s'", a);
            }
            cfg.warmup = (int)l;
            break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(a, &end, 10);
            if (errno || end == a || *end || a[0] == '-') {
                return usage_error("bad --seed '%s'", a);
            }
            cfg.seed = v;
            break;
        }
        case OPT_TIMEOUT:
            if (!parse_num(a, 0, 1e9, &cfg.timeout_s)) {
                return usage_error("bad --timeout '%s'", a);
            }
            break;
        case OPT_SLO:
            if (!parse_slo(a, &cfg.slo_ttft_ms, &cfg.slo_tpot_ms)) {
                return usage_error("bad --slo '%s' (want ttft=MS,tpot=MS)", a);
            }
            break;
        case OPT_RESULT_JSON: result_json = a; break;
        case OPT_PLOT: plot = a; break;
        case OPT_QUIET: quiet = true; break;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (!cfg.base_url) {
        return usage_error("--base-url is required");
    }
    if (cfg.workload == HS_LG_WORKLOAD_AGENT && !out_len_set) {
        cfg.output_len = 60;
    }
    if (cfg.duration_s > 0 && !num_set) {
        cfg.num_requests = 0;
    }
    if (cfg.rate > 0 && !conc_set) {
        cfg.concurrency = 0;
    }
    if (!quiet) {
        cfg.progress = stderr;
        cfg.progress_tty = isatty(STDERR_FILENO);
    }
    struct hs_error err = {0};
    struct hs_lg_report *rep = NULL;
    hs_status st = hs_lg_run(&cfg, &rep, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve-bench: %s\n", err.message[0] ? err.message : hs_status_str(st));
        return st == HS_E_INVAL ? 2 : 1;
    }
    hs_lg_report_print(rep, stdout);
    int rc = 0;
    if (result_json && hs_lg_report_write_json(rep, result_json, &err) != HS_OK) {
        fprintf(stderr, "hetserve-bench: %s\n", err.message[0] ? err.message : "write failed");
        rc = 1;
    }
    if (plot && hs_lg_report_write_svg(rep, plot, &err) != HS_OK) {
        fprintf(stderr, "hetserve-bench: %s\n", err.message[0] ? err.message : "write failed");
        rc = 1;
    }
    hs_lg_report_destroy(rep);
    return rc;
}
