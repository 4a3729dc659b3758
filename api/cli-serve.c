/* hetserve serve: load a model, start the engine and the OpenAI-compatible HTTP server; on
 * SIGTERM/SIGINT stop accepting, drain requests in flight up to a deadline, exit 0. */
#include "api/cli-serve.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "backends/pim/pim-timing.h"
#include "model/model.h"
#include "server/cli.h"
#include "server/engine.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hetserve serve -m MODEL [options]\n"
            "\n"
            "Serves the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions,\n"
            "POST /v1/completions, GET /v1/models, GET /health, GET /metrics (Prometheus),\n"
            "POST /tokenize, POST /detokenize.\n"
            "\n"
            "  -m, --model FILE        GGUF model to serve (required)\n"
            "      --host ADDR         numeric address to listen on (default 127.0.0.1)\n"
            "      --port N            TCP port; 0 picks a free one (default 8080)\n"
            "      --api-key KEY       require 'Authorization: Bearer KEY' (default: the\n"
            "                          HETSERVE_API_KEY environment variable; none if unset)\n"
            "  -c, --ctx N             context length of one request (default: the model's,\n"
            "                          at most 4096)\n"
            "      --parallel N        sequences decoded at once (default 8)\n"
            "      --kv-memory MIB     KV cache size in MiB (default: parallel x ctx tokens)\n"
            "  -t, --threads N         compute threads of the FFN backend (default: physical\n"
            "                          cores, less --attn-threads)\n"
            "      --ffn-backend NAME  where dense and expert layers run (default cpu)\n"
            "      --attn-backend NAME where decode attention runs: a backend of its own, with\n"
            "                          its own KV pool and threads (split execution). Without it\n"
            "                          (and without --attn-threads) attention runs beside the\n"
            "                          FFN, unsplit\n"
            "      --attn-threads N    threads of the attention backend, on cores apart from the\n"
            "                          FFN backend's; with --attn-backend cpu (the default name)\n"
            "                          this makes two CPU backends (default 1 when split)\n"
            "      --pim-config FILE   the simulated DIMM-PIM's hardware (--attn-backend pim):\n"
            "                          one 'key = value' a line, e.g. 'preset = rpim' (rank-level\n"
            "                          units only), 'preset = host' (this machine's DRAM,\n"
            "                          measured), 'channels = 8'; the keys are in\n"
            "                          backends/pim/pim-timing.h (default: CHIME's Table I)\n"
            "      --long-context N    split: a request decodes on the attention backend once its\n"
            "                          context passes N tokens (its KV blocks move then), on the\n"
            "                          FFN backend before; 0 = from the start (default 0). A\n"
            "                          request may ask otherwise: {\"hetserve\": {\"attention\":\n"
            "                          \"auto\"|\"attention\"|\"ffn\", \"long_context\": N}}\n"
            "      --pingpong          split: run the decode batch as two sub-batches that take\n"
            "                          turns on the two backends (L3/CHIME), balanced by a\n"
            "                          fitted time model (default off)\n"
            "      --trace FILE.json   write every engine step as Chrome trace events (open in\n"
            "                          ui.perfetto.dev): stages per layer and sub-batch on one\n"
            "                          track per backend thread, KV blocks held per backend\n"
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
            "      --drain-timeout S   on SIGTERM, wait this long for requests in flight\n"
            "                          (default 30)\n"
            "      --cors              allow cross-origin browser requests (default off)\n"
            "  -v, --verbose           log every request (req=<id>) and debug detail\n"
            "  -h, --help              this help\n");
}

enum {
    OPT_HOST = 256,
    OPT_PORT,
    OPT_KEY,
    OPT_PARALLEL,
    OPT_KV,
    OPT_BODY,
    OPT_TIMEOUT,
    OPT_DRAIN,
    OPT_CORS,
    OPT_EXPERTS,
    OPT_FFN_BE,
    OPT_ATTN_BE,
    OPT_ATTN_THREADS,
    OPT_LONG_CTX,
    OPT_PINGPONG,
    OPT_TRACE,
    OPT_PIM_CONFIG,
};

int hs__cli_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"api-key", required_argument, NULL, OPT_KEY},
        {"ctx", required_argument, NULL, 'c'},
        {"parallel", required_argument, NULL, OPT_PARALLEL},
        {"kv-memory", required_argument, NULL, OPT_KV},
        {"threads", required_argument, NULL, 't'},
        {"max-body-bytes", required_argument, NULL, OPT_BODY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN},
        {"cors", no_argument, NULL, OPT_CORS},
        {"expert-placement", required_argument, NULL, OPT_EXPERTS},
        {"override-tensor", required_argument, NULL, OPT_EXPERTS},
        {"ffn-backend", required_argument, NULL, OPT_FFN_BE},
        {"attn-backend", required_argument, NULL, OPT_ATTN_BE},
        {"attn-threads", required_argument, NULL, OPT_ATTN_THREADS},
        {"pim-config", required_argument, NULL, OPT_PIM_CONFIG},
        {"long-context", required_argument, NULL, OPT_LONG_CTX},
        {"pingpong", no_argument, NULL, OPT_PINGPONG},
        {"trace", required_argument, NULL, OPT_TRACE},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_path = NULL;
    struct hs_api_params ap = hs_api_default_params();
    struct hs_engine_params ep = hs_engine_default_params();
    int64_t iv;
    double timeout_s = 600, drain_s = 30;
    bool verbose = false;
    ap.api_key = getenv("HETSERVE_API_KEY");
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
            ap.api_key = optarg;
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
        case OPT_EXPERTS:
            ep.expert_placement = optarg;
            break;
        case OPT_FFN_BE:
            ep.backend = optarg;
            break;
        case OPT_ATTN_BE:
            ep.attn_backend = optarg;
            break;
        case OPT_ATTN_THREADS:
            if (!hs__cli_parse_int("--attn-threads", optarg, 1, 1024, &iv)) {
                return 2;
            }
            ep.attn_threads = (int32_t)iv;
            break;
        case OPT_PIM_CONFIG: {
            struct hs_pim_config pc;
            struct hs_error perr = {0};
            if (hs_pim_config_load(optarg, &pc, &perr) != HS_OK) {
                fprintf(stderr, "hetserve: --pim-config: %s\n", perr.message);
                return 2;
            }
            ep.backend_config = optarg;
            break;
        }
        case OPT_LONG_CTX:
            if (!hs__cli_parse_int("--long-context", optarg, 0, 1 << 24, &iv)) {
                return 2;
            }
            ep.long_context = (int32_t)iv;
            break;
        case OPT_PINGPONG:
            ep.pingpong = true;
            break;
        case OPT_TRACE:
            ep.trace_path = optarg;
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hetserve serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "hetserve serve: -m MODEL is required (see --help)\n");
        return 2;
    }
    ep.timeout_ms = (int64_t)(timeout_s * 1000);
    hs_log_set_level(verbose ? HS_LOG_LEVEL_DEBUG : HS_LOG_LEVEL_INFO);

    /* Signals go to a sigwait on this thread: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    struct hs_error err = {0};
    struct hs_model *model = NULL;
    struct hs_engine *eng = NULL;
    struct hs_api_server *srv = NULL;
    hs_status st = hs_model_load(model_path, &model, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve serve: cannot load %s: %s\n", model_path, err.message);
        return st == HS_E_NOMEM ? 1 : 2;
    }
    st = hs_engine_create(model, &ep, &eng, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve serve: cannot start the engine: %s\n", err.message);
        rc = st == HS_E_INVAL ? 2 : 1;
        goto done;
    }
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    char name[256];
    snprintf(name, sizeof(name), "%s", base);
    size_t nl = strlen(name);
    if (nl > 5 && !strcmp(name + nl - 5, ".gguf")) {
        name[nl - 5] = '\0';
    }
    ap.model_name = name;
    st = hs_api_server_start(model, eng, &ap, &srv, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve serve: %s\n", err.message);
        rc = st == HS_E_INVAL || st == HS_E_FORMAT ? 2 : 1;
        goto done;
    }
    fprintf(stderr, "hetserve: serving %s (%s) on http://%s:%u (context %d)%s\n", name,
            hs_model_desc(model), ap.host, (unsigned)hs_api_server_port(srv),
            (int)hs_engine_n_ctx(eng), ap.api_key && *ap.api_key ? ", API key required" : "");
    /* The port line on stdout, for scripts that started us with --port 0. */
    printf("listening on %s:%u\n", ap.host, (unsigned)hs_api_server_port(srv));
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "hetserve: %s: no new connections; draining requests in flight (up to %g s)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", drain_s);
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
    if (rc == 0) {
        fprintf(stderr, "hetserve: stopped\n");
    }
    return rc;
}
