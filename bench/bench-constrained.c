/* bench-constrained: N concurrent decode streams through the serving engine, unconstrained and
 * grammar-constrained (structured output), in the same run. Prints decode throughput of each and
 * its ratio to the unconstrained streams.
 *
 *   bench-constrained [-m MODEL.gguf] [-n STREAMS] [-p PROMPT] [-g GEN] [-t THREADS] [-r REPS]
 *
 * Without -m it writes the SmolLM-135M-shaped Q8_0 model (hetserve mkmodel --preset
 * smollm-135m --type q8_0) to /tmp once. Configurations, run REPS times interleaved, medians
 * reported:
 *   free         no constraint (ignore_eos, so every stream makes GEN tokens)
 *   json_object  response_format {"type": "json_object"}: the grammar of any JSON object
 *   schema       response_format json_schema: a MobiAgent-style action ({"reasoning": string,
 *                "action": enum, "parameters": {...}}) as the server's JSON Schema converter
 *                writes it
 *   tool call    tool_choice required with two tools (the Hermes <tool_call> wrapper around
 *                each function's parameters schema), as api/tools.c writes it
 * All sample at temperature 1 with a seed per stream. A constrained stream may finish before GEN
 * tokens (its grammar completes: a random model closes a json_object early), and fewer streams
 * per step decode fewer tokens per second, so each constrained run is compared with an
 * unconstrained run in which every stream makes exactly as many tokens as it did constrained
 * (same seeds, so the same lengths): the ratio is constrained / matched. Throughput counts the
 * generated tokens of all streams over the wall time of the measured pass, after a first pass
 * that prefilled the same prompts (found again in the prefix cache) and compiled the grammar, so
 * prompt processing is left out of both. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "api/json-schema.h"
#include "api/tools.h"
#include "model/model.h"
#include "server/engine.h"

#define MAX_STREAMS 64
#define N_CONF      4

static const char *const conf_names[N_CONF] = {"free", "json_object", "schema", "tool call"};

static const char *action_schema =
    "{\"type\": \"object\", \"properties\": {\"reasoning\": {\"type\": \"string\"}, \"action\": "
    "{\"enum\": [\"click\", \"swipe\", \"type\", \"wait\", \"done\"]}, \"parameters\": {\"type\": "
    "\"object\", \"properties\": {\"target_element\": {\"type\": \"string\"}, \"x\": {\"type\": "
    "\"integer\"}, \"y\": {\"type\": \"integer\"}, \"text\": {\"type\": \"string\"}, "
    "\"direction\": {\"enum\": [\"up\", \"down\", \"left\", \"right\"]}}, "
    "\"additionalProperties\": false}}, \"required\": [\"reasoning\", \"action\", "
    "\"parameters\"], \"additionalProperties\": false}";

static const char *tools_body =
    "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, "
    "\"days\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 14}}, \"required\": "
    "[\"city\"]}}}, {\"type\": \"function\", \"function\": {\"name\": \"search\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"query\": {\"type\": \"string\"}, \"limit\": "
    "{\"type\": \"integer\"}}, \"required\": [\"query\"]}}}], \"tool_choice\": \"required\"}";

struct run {
    double tok_s;
    int64_t tokens;
};

/* The grammar text of configuration conf (NULL for free), new (free()). */
static char *conf_grammar(int conf)
{
    char *g = NULL;
    struct hs_error err = {0};
    if (conf == 1) {
        g = strdup(hs_json_object_gbnf());
    } else if (conf == 2) {
        json_t *s = json_loads(action_schema, 0, NULL);
        if (hs_json_schema_to_gbnf(s, &g, &err) != HS_OK) {
            fprintf(stderr, "bench-constrained: %s\n", err.message);
        }
        json_decref(s);
    } else if (conf == 3) {
        json_t *b = json_loads(tools_body, 0, NULL);
        struct hs__tools_caps caps = {.format = HS__TOOLS_HERMES, .renders_tools = true};
        struct hs__api_tools t;
        struct hs__api_err e = {0};
        if (hs__tools_parse_request(b, &caps, false, &t, &g, &e) != HS_OK) {
            fprintf(stderr, "bench-constrained: %s\n", e.message);
        }
        json_decref(b);
    }
    return g;
}

/* Submits the n streams (prompt i from seed 1000 + i; stream i makes at most per[i] tokens, or
 * max_tokens when per is NULL) and waits for all of them; made[i] (not NULL) gets the tokens each
 * made. Returns the wall time from submission to the last DONE, or a negative value on failure. */
static double serve_all(struct hs_engine *e, int32_t n_vocab, int n, int n_prompt, int max_tokens,
                        const int *per, int *made, const char *grammar)
{
    hs_token *prompt = malloc((size_t)n_prompt * sizeof(hs_token));
    struct hs_engine_handle *h[MAX_STREAMS];
    struct hs_error err = {0};
    const double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
        struct hs_rng rng;
        hs_rng_seed(&rng, 1000 + (uint64_t)i);
        prompt[0] = 1;
        for (int j = 1; j < n_prompt; j++) {
            prompt[j] = (hs_token)(hs_rng_next(&rng) % (uint64_t)(n_vocab - 3)) + 3;
        }
        struct hs_engine_request rq;
        hs_engine_request_init(&rq);
        rq.prompt = prompt;
        rq.n_prompt = n_prompt;
        rq.max_tokens = per ? per[i] : max_tokens;
        rq.ignore_eos = grammar == NULL;
        rq.sampling.temperature = 1;
        rq.sampling.seed = 77 + (uint64_t)i;
        rq.grammar = grammar;
        rq.n_grammar = grammar ? strlen(grammar) : 0;
        if (hs_engine_submit(e, &rq, &h[i], &err) != HS_OK) {
            fprintf(stderr, "bench-constrained: %s\n", err.message);
            free(prompt);
            return -1;
        }
    }
    free(prompt);
    for (int i = 0; i < n; i++) {
        struct hs_engine_event ev;
        do {
            if (hs_engine_wait(h[i], &ev, 600000) != HS_OK) {
                fprintf(stderr, "bench-constrained: a stream stalled\n");
                return -1;
            }
        } while (ev.type != HS_EVENT_DONE);
        if (made) {
            made[i] = ev.usage.completion_tokens;
        }
        if (ev.status != HS_OK) {
            fprintf(stderr, "bench-constrained: a stream failed: %s\n",
                    ev.detail ? ev.detail : hs_status_str(ev.status));
            return -1;
        }
        hs_engine_release(h[i]);
    }
    return bench_now_s() - t0;
}

/* Configuration conf (per NULL), or the unconstrained run matching per's lengths (conf 0);
 * made (not NULL) gets each stream's length. */
static int run_once(struct hs_engine *e, int32_t n_vocab, int conf, int n, int n_prompt, int n_gen,
                    const int *per, int *made, struct run *out)
{
    char *g = conf_grammar(conf);
    if (conf > 0 && !g) {
        return -1;
    }
    struct hs_engine_metrics m0, m1;
    if (serve_all(e, n_vocab, n, n_prompt, 1, NULL, NULL, g) < 0) {
        free(g);
        return -1;
    }
    hs_engine_get_metrics(e, &m0);
    const double wall = serve_all(e, n_vocab, n, n_prompt, n_gen, per, made, g);
    free(g);
    if (wall < 0) {
        return -1;
    }
    hs_engine_get_metrics(e, &m1);
    out->tokens = (int64_t)(m1.generation_tokens - m0.generation_tokens);
    out->tok_s = (double)out->tokens / wall;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-constrained [-m MODEL.gguf] [-n STREAMS] [-p PROMPT] [-g GEN]\n"
               "                         [-t THREADS] [-r REPS]\n"
               "N concurrent decode streams through the engine, unconstrained and with the\n"
               "grammars of json_object, a JSON Schema and a required tool call; medians of REPS\n"
               "interleaved runs. Defaults: the SmolLM-135M shape at Q8_0 (written to /tmp),\n"
               "16 streams, 64-token prompts, 64 generated, 2 threads, 3 reps.\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int n = 16, n_prompt = 64, n_gen = 64, threads = 2, reps = 3;
    int c;
    while ((c = getopt(argc, argv, "m:n:p:g:t:r:h")) != -1) {
        switch (c) {
        case 'm':
            path = optarg;
            break;
        case 'n':
            n = atoi(optarg);
            break;
        case 'p':
            n_prompt = atoi(optarg);
            break;
        case 'g':
            n_gen = atoi(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'r':
            reps = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (n < 1 || n > MAX_STREAMS || n_prompt < 2 || n_gen < 2 || threads < 1 || reps < 1 ||
        reps > 50) {
        usage(stderr);
        return 2;
    }
    char tmp[128];
    struct hs_error err = {0};
    if (!path) {
        snprintf(tmp, sizeof(tmp), "/tmp/hetserve-bench-split-smollm-q8_0.gguf");
        if (access(tmp, R_OK) != 0) {
            fprintf(stderr, "bench-constrained: writing the SmolLM-135M-shaped Q8_0 model to %s\n",
                    tmp);
            struct hs_mkmodel_params mp = hs_mkmodel_smollm_params();
            mp.wtype = HS_TYPE_Q8_0;
            if (hs_mkmodel_write(&mp, tmp, &err) != HS_OK) {
                fprintf(stderr, "bench-constrained: %s\n", err.message);
                return 1;
            }
        }
        path = tmp;
    }
    struct hs_model *m = NULL;
    if (hs_model_load(path, &m, &err) != HS_OK) {
        fprintf(stderr, "bench-constrained: %s: %s\n", path, err.message);
        return 1;
    }
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = n;
    p.n_ctx = n_prompt + n_gen + 8;
    p.n_batch_tokens = 512;
    p.n_threads = threads;
    struct hs_engine *e = NULL;
    if (hs_engine_create(m, &p, &e, &err) != HS_OK) {
        fprintf(stderr, "bench-constrained: %s\n", err.message);
        return 1;
    }
    const int32_t n_vocab = hs_model_hparams(m)->n_vocab;
    /* [conf][rep]: conf 0 free; for conf > 0, runs[conf] constrained and matched[conf] its
     * unconstrained twin */
    static struct run runs[N_CONF][50], matched[N_CONF][50];
    int made[MAX_STREAMS];
    for (int r = 0; r < reps; r++) {
        for (int conf = 0; conf < N_CONF; conf++) {
            if (run_once(e, n_vocab, conf, n, n_prompt, n_gen, NULL, made, &runs[conf][r]) != 0 ||
                (conf > 0 &&
                 run_once(e, n_vocab, 0, n, n_prompt, n_gen, made, NULL, &matched[conf][r]) != 0)) {
                return 1;
            }
            fprintf(stderr, "bench-constrained: rep %d %-12s %8.1f tok/s (%lld tokens)", r + 1,
                    conf_names[conf], runs[conf][r].tok_s, (long long)runs[conf][r].tokens);
            if (conf > 0) {
                fprintf(stderr, ", matched free %8.1f tok/s", matched[conf][r].tok_s);
            }
            fprintf(stderr, "\n");
        }
    }
    printf("bench-constrained: %s, %d streams, %d-token prompts, up to %d generated each; %d "
           "threads; median of %d interleaved reps\n",
           hs_model_desc(m), n, n_prompt, n_gen, threads, reps);
    printf("%-12s %9s %9s %13s %7s\n", "config", "tokens", "tok/s", "matched free", "ratio");
    for (int conf = 0; conf < N_CONF; conf++) {
        double v[50], w[50], q[50], tok[50];
        for (int r = 0; r < reps; r++) {
            v[r] = runs[conf][r].tok_s;
            w[r] = conf > 0 ? matched[conf][r].tok_s : v[r];
            q[r] = w[r] > 0 ? v[r] / w[r] : 0;
            tok[r] = (double)runs[conf][r].tokens;
        }
        qsort(v, (size_t)reps, sizeof(double), bench_cmp_double);
        qsort(w, (size_t)reps, sizeof(double), bench_cmp_double);
        qsort(q, (size_t)reps, sizeof(double), bench_cmp_double);
        qsort(tok, (size_t)reps, sizeof(double), bench_cmp_double);
        if (conf == 0) {
            printf("%-12s %9.0f %9.1f %13s %7s\n", conf_names[conf], tok[reps / 2], v[reps / 2],
                   "-", "-");
        } else {
            printf("%-12s %9.0f %9.1f %13.1f %6.2fx\n", conf_names[conf], tok[reps / 2],
                   v[reps / 2], w[reps / 2], q[reps / 2]);
        }
    }
    hs_engine_destroy(e);
    hs_model_destroy(m);
    return 0;
}
