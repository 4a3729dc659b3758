/* hetserve serve: start the OpenAI-compatible HTTP server (503 "loading" at first), load the
 * model and start the engine on a loader thread, then serve; on SIGTERM/SIGINT stop accepting,
 * drain requests in flight up to a deadline, exit 0; a second signal ends the process at once
 * (as does the first one while the model is still loading). */
#include "api/cli-serve.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "model/model.h"
#include "server/cli.h"
#include "server/engine.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: hetserve serve -m MODEL [options]\n"
               "\n"
               "Serves the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions,\n"
               "POST /v1/completions, GET /v1/models, GET /health, GET /metrics (Prometheus),\n"
               "POST /tokenize, POST /detokenize.\n"
               "\n"
               "  -m, --model FILE        GGUF model to serve (required)\n"
               "      --host ADDR         numeric address to listen on (default 127.0.0.1)\n"
               "      --port N            TCP port; 0 picks a free one (default 8080)\n"
               "      --api-key KEY       require 'Authorization: Bearer KEY' (default: the\n"
               "                          HETSERVE_API_KEY environment variable; none if unset).\n"
               "                          Repeat for several keys: each key is a tenant with a\n"
               "                          prefix cache of its own. An empty key is an error\n"
               "      --api-key-file FILE more keys, one per line, each optionally limited:\n"
               "                            KEY [rpm=N] [tpm=N]\n"
               "                          rpm: requests per minute, tpm: tokens per minute\n"
               "                          (prompt + max_tokens of each choice, settled with\n"
               "                          the actual usage when the request ends); past a\n"
               "                          limit a request gets 429 with Retry-After. Blank\n"
               "                          lines and '#' comments are skipped; a malformed line\n"
               "                          stops the start naming it. Adds to --api-key; with\n"
               "                          either, HETSERVE_API_KEY is not read\n"
               "  -c, --ctx N             context length of one request (default: the model's\n"
               "                          trained context, bounded by what KV memory allows)\n"
               "      --parallel N        sequences decoded at once (default 8)\n"
               "      --max-queue N       requests that may wait for a sequence; past that a\n"
               "                          request gets 429 with Retry-After (default 256)\n"
               "      --kv-memory MIB     KV cache size in MiB (default: parallel x ctx tokens)\n"
               "  -t, --threads N         compute threads of the FFN backend (default: physical\n"
               "                          cores, less --attn-threads)\n");
    hs__cli_split_usage(f, 26);
    fprintf(f,
            "      --expert-placement RULES\n"
            "                          mixture-of-experts models: where experts run, as\n"
            "                          comma-separated REGEX=BACKEND[:N] rules (alias\n"
            "                          --override-tensor). A rule's extended regex is searched\n"
            "                          in each expert's name, blk.L.expert.E (the shared one:\n"
            "                          blk.L.expert.shared), and in its tensors' names\n"
            "                          (blk.L.ffn_up_exps.weight, ...); the first match wins.\n"
            "                          BACKEND:N is another instance with its own threads.\n"
            "                          E.g. 'blk\\.[0-9]+\\.expert\\.[0-3]$=cpu:1'. /metrics\n"
            "                          counts the tokens routed to each expert.\n"
            "      --max-body-bytes N  larger request bodies get 413 (default 4194304)\n"
            "      --timeout S         per-request time limit in seconds; 0 = none (default 600)\n"
            "      --drain-timeout S   on SIGTERM, wait this long for requests in flight, then\n"
            "                          up to 5 s for their answers to go out (default 20: the\n"
            "                          whole shutdown fits Kubernetes' 30 s grace period). A\n"
            "                          second SIGTERM/SIGINT exits at once\n"
            "      --cors              allow cross-origin browser requests (default off)\n"
            "      --reasoning-format F\n"
            "                          where a chat answer's thinking block goes:\n"
            "                          reasoning_content (default), reasoning (vLLM's newer\n"
            "                          name) or none (left inline in content)\n"
            "      --reasoning-markers think|hunyuan|OPEN,CLOSE\n"
            "                          the thinking block's format: think (<think>…</think>,\n"
            "                          then \"\\n\\n\"), hunyuan (<think>…</think> then\n"
            "                          <answer>…</answer>), or other markers, one token or\n"
            "                          several (default: from the chat template)\n"
            "      --mmproj FILE       image input: the model's projector GGUF (llama.cpp's\n"
            "                          mmproj; Qwen2-VL or SmolVLM). Chat image parts take\n"
            "                          data: URLs\n"
            "      --allow-image-urls  let http(s) image URLs past the refusal (fetching them\n"
            "                          is not implemented yet: still a 400)\n"
            "      --reasoning-auto on|off\n"
            "                          chat requests that say nothing about thinking get\n"
            "                          reasoning_effort \"auto\" when the template has both\n"
            "                          modes (Qwen3's; default on), else its own default\n"
            "\n"
            "Limits against hostile clients (README \"Security\"):\n"
            "      --allowed-host NAME accept Host/Origin NAME besides IP addresses, localhost\n"
            "                          and this machine's name (repeatable; '*.example.com'\n"
            "                          for subdomains; '*' turns the check off)\n"
            "      --max-connections N open connections; past it requests get 503 (default\n"
            "                          1024)\n"
            "      --max-connections-per-ip N\n"
            "                          from one client address, more are closed; 0: no limit\n"
            "                          (default 256; behind a proxy use 0)\n"
            "      --http-threads N    threads polling the connections (default 4)\n"
            "      --header-timeout S  a request's headers must arrive within S (default 10)\n"
            "      --body-timeout S    its body within S; also the longest a connection may\n"
            "                          make no progress (default 30)\n"
            "      --keepalive-timeout S\n"
            "                          idle keep-alive connections close after S (default 5)\n"
            "      --max-body-memory MIB\n"
            "                          request bodies held at once, all connections (default 64)\n"
            "      --max-output-items N\n"
            "                          per request: prompts x n (or best_of) x max_tokens x\n"
            "                          (1 + top_logprobs when logprobs are asked) (default\n"
            "                          262144)\n"
            "  -v, --verbose           log every request (req=<id>) and debug detail\n"
            "  -h, --help              this help\n");
}

enum {
    OPT_HOST = 256,
    OPT_PORT,
    OPT_KEY,
    OPT_KEY_FILE,
    OPT_PARALLEL,
    OPT_MAX_QUEUE,
    OPT_KV,
    OPT_BODY,
    OPT_TIMEOUT,
    OPT_DRAIN,
    OPT_CORS,
    OPT_REASONING_FORMAT,
    OPT_REASONING_MARKERS,
    OPT_MMPROJ,
    OPT_ALLOW_IMAGE_URLS,
    OPT_REASONING_AUTO,
    OPT_EXPERTS,
    /* connection limits (issue 17) */
    OPT_ALLOWED_HOST = 512,
    OPT_MAX_CONNS,
    OPT_MAX_CONNS_IP,
    OPT_HTTP_THREADS,
    OPT_HEADER_TMO,
    OPT_BODY_TMO,
    OPT_KEEPALIVE_TMO,
    OPT_BODY_MEMORY,
    OPT_OUTPUT_ITEMS,
};

/* Repeatable flags (--api-key, --allowed-host) collect here; freed by the caller. */
struct str_list {
    const char **v;
    int32_t n;
};

static bool str_list_add(struct str_list *l, const char *s)
{
    const char **v = realloc(l->v, (size_t)(l->n + 1) * sizeof(*v));
    if (!v) {
        return false;
    }
    v[l->n++] = s;
    l->v = v;
    return true;
}

/* The connection-limit flags; returns 0 when handled, 2 on a bad value, -1 when c is not one
 * of them. */
static int http_option(int c, const char *arg, struct hs_api_params *ap, struct str_list *hosts)
{
    int64_t iv;
    double dv;
    switch (c) {
    case OPT_ALLOWED_HOST:
        return str_list_add(hosts, arg) ? 0 : 2;
    case OPT_MAX_CONNS:
        if (!hs__cli_parse_int("--max-connections", arg, 1, 1 << 20, &iv)) {
            return 2;
        }
        ap->max_connections = (int32_t)iv;
        return 0;
    case OPT_MAX_CONNS_IP:
        if (!hs__cli_parse_int("--max-connections-per-ip", arg, 0, 1 << 20, &iv)) {
            return 2;
        }
        ap->max_connections_per_ip = (int32_t)iv;
        return 0;
    case OPT_HTTP_THREADS:
        if (!hs__cli_parse_int("--http-threads", arg, 1, 256, &iv)) {
            return 2;
        }
        ap->http_threads = (int32_t)iv;
        return 0;
    case OPT_HEADER_TMO:
    case OPT_BODY_TMO:
    case OPT_KEEPALIVE_TMO: {
        const char *name = c == OPT_HEADER_TMO ? "--header-timeout"
                           : c == OPT_BODY_TMO ? "--body-timeout"
                                               : "--keepalive-timeout";
        if (!hs__cli_parse_float(name, arg, 0.1, 86400, &dv)) {
            return 2;
        }
        int64_t ms = (int64_t)(dv * 1000);
        *(c == OPT_HEADER_TMO ? &ap->header_timeout_ms
          : c == OPT_BODY_TMO ? &ap->body_timeout_ms
                              : &ap->keepalive_timeout_ms) = ms;
        return 0;
    }
    case OPT_BODY_MEMORY:
        if (!hs__cli_parse_int("--max-body-memory", arg, 1, 1 << 20, &iv)) {
            return 2;
        }
        ap->max_body_memory_bytes = (size_t)iv << 20;
        return 0;
    case OPT_OUTPUT_ITEMS:
        if (!hs__cli_parse_int("--max-output-items", arg, 1, (int64_t)1 << 40, &iv)) {
            return 2;
        }
        ap->max_output_items = iv;
        return 0;
    default:
        return -1;
    }
}

/* The model load and engine start, off the main thread so that the server answers (503) and
 * signals are heard meanwhile. */
struct loader {
    const char *path;
    struct hs_engine_params ep;
    pthread_t main_thread; /* woken with SIGUSR1 when done */
    atomic_bool done;
    /* results, read after done */
    struct hs_model *model;
    struct hs_engine *eng;
    const char *ctx_why;
    hs_status st;
    int rc; /* exit status on failure */
    char msg[512];
};

static void *loader_main(void *arg)
{
    struct loader *ld = arg;
    /* Tests only (tests/hostile): a slow load, to see the server answer while it loads. */
    const char *delay = getenv("HETSERVE_TEST_LOAD_DELAY_MS");
    long ms = delay ? strtol(delay, NULL, 10) : 0;
    if (ms > 0) {
        struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&d, NULL);
    }
    struct hs_error err = {0};
    ld->st = hs_model_load(ld->path, &ld->model, &err);
    if (ld->st != HS_OK) {
        snprintf(ld->msg, sizeof(ld->msg), "cannot load %s: %s", ld->path, err.message);
        ld->rc = ld->st == HS_E_NOMEM ? 1 : 2;
    } else {
        ld->ctx_why = hs__cli_default_ctx(ld->model, &ld->ep);
        ld->st = hs_engine_create(ld->model, &ld->ep, &ld->eng, &err);
        if (ld->st != HS_OK) {
            snprintf(ld->msg, sizeof(ld->msg), "cannot start the engine: %s", err.message);
            ld->rc = ld->st == HS_E_INVAL ? 2 : 1;
        }
    }
    atomic_store(&ld->done, true);
    pthread_kill(ld->main_thread, SIGUSR1);
    return NULL;
}

int hs__cli_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"api-key", required_argument, NULL, OPT_KEY},
        {"api-key-file", required_argument, NULL, OPT_KEY_FILE},
        {"ctx", required_argument, NULL, 'c'},
        {"parallel", required_argument, NULL, OPT_PARALLEL},
        {"max-queue", required_argument, NULL, OPT_MAX_QUEUE},
        {"kv-memory", required_argument, NULL, OPT_KV},
        {"threads", required_argument, NULL, 't'},
        {"max-body-bytes", required_argument, NULL, OPT_BODY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN},
        {"cors", no_argument, NULL, OPT_CORS},
        {"reasoning-format", required_argument, NULL, OPT_REASONING_FORMAT},
        {"reasoning-markers", required_argument, NULL, OPT_REASONING_MARKERS},
        {"mmproj", required_argument, NULL, OPT_MMPROJ},
        {"allow-image-urls", no_argument, NULL, OPT_ALLOW_IMAGE_URLS},
        {"reasoning-auto", required_argument, NULL, OPT_REASONING_AUTO},
        {"expert-placement", required_argument, NULL, OPT_EXPERTS},
        {"override-tensor", required_argument, NULL, OPT_EXPERTS},
        HS__CLI_SPLIT_OPTIONS,
        {"allowed-host", required_argument, NULL, OPT_ALLOWED_HOST},
        {"max-connections", required_argument, NULL, OPT_MAX_CONNS},
        {"max-connections-per-ip", required_argument, NULL, OPT_MAX_CONNS_IP},
        {"http-threads", required_argument, NULL, OPT_HTTP_THREADS},
        {"header-timeout", required_argument, NULL, OPT_HEADER_TMO},
        {"body-timeout", required_argument, NULL, OPT_BODY_TMO},
        {"keepalive-timeout", required_argument, NULL, OPT_KEEPALIVE_TMO},
        {"max-body-memory", required_argument, NULL, OPT_BODY_MEMORY},
        {"max-output-items", required_argument, NULL, OPT_OUTPUT_ITEMS},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_path = NULL;
    struct hs_api_params ap = hs_api_default_params();
    struct hs_engine_params ep = hs_engine_default_params();
    /* drafts from earlier responses: lossless, and free where they do not help (README) */
    ep.spec_max_draft = HS__CLI_SPEC_DRAFT;
    int64_t iv;
    double timeout_s = 600, drain_s = 20;
    bool verbose = false;
    struct str_list keys = {0}, hosts = {0};
    const char *env_key = getenv("HETSERVE_API_KEY");
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:c:t:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_path = optarg;
            break;
        case OPT_HOST:
            ap.host = optarg;
            break;
        case OPT_PORT:
            if (!hs__cli_parse_int("--port", optarg, 0, 65535, &iv)) {
                return 2;
            }
            ap.port = (uint16_t)iv;
            break;
        case OPT_KEY:
            if (!*optarg) {
                fprintf(stderr, "hetserve serve: --api-key must not be empty (an empty key "
                                "would turn authentication off; omit the flag for none)\n");
                return 2;
            }
            if (!str_list_add(&keys, optarg)) {
                return 1;
            }
            break;
        case OPT_KEY_FILE:
            ap.api_key_file = optarg;
            break;
        case 'c':
            if (!hs__cli_parse_int("--ctx", optarg, 1, 1 << 20, &iv)) {
                return 2;
            }
            ep.n_ctx = (int32_t)iv;
            break;
        case OPT_PARALLEL:
            if (!hs__cli_parse_int("--parallel", optarg, 1, 1024, &iv)) {
                return 2;
            }
            ep.n_parallel = (int32_t)iv;
            break;
        case OPT_MAX_QUEUE:
            if (!hs__cli_parse_int("--max-queue", optarg, 1, 1 << 20, &iv)) {
                return 2;
            }
            ep.max_waiting = (int32_t)iv;
            break;
        case OPT_KV:
            if (!hs__cli_parse_int("--kv-memory", optarg, 1, 1 << 22, &iv)) {
                return 2;
            }
            ep.kv_bytes = (size_t)iv << 20;
            break;
        case 't':
            if (!hs__cli_parse_int("--threads", optarg, 1, 1024, &iv)) {
                return 2;
            }
            ep.n_threads = (int32_t)iv;
            break;
        case OPT_BODY:
            if (!hs__cli_parse_int("--max-body-bytes", optarg, 1024, (int64_t)1 << 32, &iv)) {
                return 2;
            }
            ap.max_body_bytes = (size_t)iv;
            break;
        case OPT_TIMEOUT:
            if (!hs__cli_parse_float("--timeout", optarg, 0, 1e7, &timeout_s)) {
                return 2;
            }
            break;
        case OPT_DRAIN:
            if (!hs__cli_parse_float("--drain-timeout", optarg, 0, 1e7, &drain_s)) {
                return 2;
            }
            break;
        case OPT_CORS:
            ap.cors = true;
            break;
        case OPT_REASONING_FORMAT:
            if (strcmp(optarg, "reasoning_content") && strcmp(optarg, "reasoning") &&
                strcmp(optarg, "none")) {
                fprintf(stderr,
                        "hetserve serve: --reasoning-format must be reasoning_content, "
                        "reasoning or none, got '%s'\n",
                        optarg);
                return 2;
            }
            ap.reasoning_format = optarg;
            break;
        case OPT_REASONING_MARKERS: {
            const char *comma = strchr(optarg, ',');
            const bool family = !strcmp(optarg, "think") || !strcmp(optarg, "hunyuan");
            if (!family && (!comma || comma == optarg || !comma[1] || strchr(comma + 1, ',') ||
                            comma - optarg >= 32 || strlen(comma + 1) >= 30)) {
                fprintf(stderr,
                        "hetserve serve: --reasoning-markers must be think, hunyuan or "
                        "OPEN,CLOSE (OPEN 1 to 31 bytes, CLOSE 1 to 29), got '%s'\n",
                        optarg);
                return 2;
            }
            ap.reasoning_markers = optarg;
            break;
        }
        case OPT_MMPROJ:
            ap.mmproj = optarg;
            break;
        case OPT_ALLOW_IMAGE_URLS:
            ap.allow_image_urls = true;
            break;
        case OPT_REASONING_AUTO:
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
                fprintf(stderr, "hetserve serve: --reasoning-auto wants on or off, got '%s'\n",
                        optarg);
                return 2;
            }
            ap.reasoning_auto = !strcmp(optarg, "on");
            break;
        case OPT_EXPERTS:
            ep.expert_placement = optarg;
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default: {
            const int k = hs__cli_parse_split(c, optarg, &ep, NULL, NULL);
            if (k > 0) {
                break;
            }
            const int r = k < 0 ? http_option(c, optarg, &ap, &hosts) : 2;
            if (r == 0) {
                break;
            }
            free(keys.v);
            free(hosts.v);
            if (r < 0) {
                usage(stderr);
            }
            return 2;
        }
        }
    }
    if (keys.n == 0 && !ap.api_key_file && env_key) {
        if (!*env_key) {
            fprintf(stderr, "hetserve serve: HETSERVE_API_KEY is set but empty (an empty key "
                            "would turn authentication off; unset it for none)\n");
            free(hosts.v);
            return 2;
        }
        str_list_add(&keys, env_key);
    }
    ap.api_keys = keys.v;
    ap.n_api_keys = keys.n;
    ap.allowed_hosts = hosts.v;
    ap.n_allowed_hosts = hosts.n;
    int rc = 2;
    if (optind < argc) {
        fprintf(stderr, "hetserve serve: unexpected argument '%s'\n", argv[optind]);
        goto args;
    }
    if (!model_path) {
        fprintf(stderr, "hetserve serve: -m MODEL is required (see --help)\n");
        goto args;
    }
    if (!hs__cli_split_check("serve", &ep)) {
        goto args;
    }
    ep.timeout_ms = (int64_t)(timeout_s * 1000);
    hs_log_set_level(verbose ? HS_LOG_LEVEL_DEBUG : HS_LOG_LEVEL_INFO);

    /* Signals go to a sigwait on this thread: block them before any thread starts. SIGUSR1 is
     * the loader thread saying it has finished. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    signal(SIGTERM, SIG_DFL); /* an inherited "ignore" would hide them from sigwait */
    signal(SIGINT, SIG_DFL);
    sigset_t waits = sigs;
    sigaddset(&waits, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &waits, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = 1;
    struct hs_error err = {0};
    struct hs_model *model = NULL;
    struct hs_engine *eng = NULL;
    struct hs_api_server *srv = NULL;
    struct loader *ld = NULL;
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    char name[256];
    snprintf(name, sizeof(name), "%s", base);
    size_t nl = strlen(name);
    if (nl > 5 && !strcmp(name + nl - 5, ".gguf")) {
        name[nl - 5] = '\0';
    }
    ap.model_name = name;
    hs_status st = hs_api_server_listen(&ap, &srv, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve serve: %s\n", err.message);
        rc = st == HS_E_INVAL || st == HS_E_FORMAT ? 2 : 1;
        goto done;
    }
    ld = calloc(1, sizeof(*ld));
    if (!ld) {
        goto done;
    }
    ld->path = model_path;
    ld->ep = ep;
    ld->main_thread = pthread_self();
    pthread_t loader_thread;
    if (pthread_create(&loader_thread, NULL, loader_main, ld) != 0) {
        fprintf(stderr, "hetserve serve: cannot start the loader thread\n");
        goto done;
    }
    fprintf(stderr, "hetserve: loading %s; http://%s:%u answers 503 until it is ready\n", name,
            ap.host, (unsigned)hs_api_server_port(srv));
    int sig = 0;
    while (!atomic_load(&ld->done)) {
        sigwait(&waits, &sig);
        if (sig != SIGUSR1) {
            /* The load cannot be interrupted: leave the loader (and ld, which it uses) to the
             * process's exit. */
            fprintf(stderr, "hetserve: %s while loading the model: exiting\n",
                    sig == SIGINT ? "SIGINT" : "SIGTERM");
            pthread_detach(loader_thread);
            ld = NULL;
            rc = 0;
            goto done;
        }
    }
    pthread_join(loader_thread, NULL);
    model = ld->model;
    eng = ld->eng;
    if (ld->st != HS_OK) {
        fprintf(stderr, "hetserve serve: %s\n", ld->msg);
        rc = ld->rc;
        goto done;
    }
    st = hs_api_server_attach(srv, model, eng, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve serve: %s\n", err.message);
        rc = st == HS_E_INVAL || st == HS_E_FORMAT ? 2 : 1;
        goto done;
    }
    fprintf(stderr, "hetserve: serving %s (%s) on http://%s:%u (context %d: %s; trained %d)%s\n",
            name, hs_model_desc(model), ap.host, (unsigned)hs_api_server_port(srv),
            (int)hs_engine_n_ctx(eng), ld->ctx_why, (int)hs_model_hparams(model)->n_ctx_train,
            keys.n > 0 || ap.api_key_file ? ", API key required" : "");
    /* The port line on stdout once requests are served, for scripts that started us with
     * --port 0. */
    printf("listening on %s:%u\n", ap.host, (unsigned)hs_api_server_port(srv));
    fflush(stdout);

    do {
        sigwait(&waits, &sig);
    } while (sig == SIGUSR1);
    fprintf(stderr,
            "hetserve: %s: no new connections; draining requests in flight (up to %g s); "
            "send it again to exit at once\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", drain_s);
    /* Only this thread has them unblocked now, and their default action ends the process. */
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    hs_api_server_quiesce(srv);
    st = hs_engine_drain(eng, (int64_t)(drain_s * 1000));
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: drain deadline passed; remaining requests canceled\n");
    }
    if (!hs_api_server_wait_idle(srv, 5000)) {
        fprintf(stderr, "hetserve: closing connections still open\n");
    }
    rc = 0;
done:
    hs_api_server_stop(srv);
    hs_engine_destroy(eng);
    hs_model_destroy(model);
    free(ld);
    if (rc == 0) {
        fprintf(stderr, "hetserve: stopped\n");
    }
args:
    free(keys.v);
    free(hosts.v);
    return rc;
}
