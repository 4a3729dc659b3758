/* bench-sampling: the serving engine's draw phase (each decoding sequence's next token from its
 * logit row, O(vocabulary) a sequence) at S concurrent streams, drawn one by one on the engine
 * thread (serial_sampling) against as tasks on the compute threads, in the same run. Each stream
 * samples with llama.cpp's default chain (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05) and
 * its own seed, ignore_eos, N tokens. Reports, per mode, the median over the repetitions of the
 * decode throughput (all tokens over the time from the first submission to the last DONE), of
 * the draw phase's wall time per step and of its share of the run, the ratios of tasks to serial,
 * whether the two modes drew the same tokens (they must), and the machine's load.
 *
 *   bench-sampling [-m MODEL.gguf] [-s STREAMS] [-n TOKENS] [-t THREADS] [-r REPS]
 *
 * Without -m it loads qwen3-vocab-f16.gguf (Qwen3's 151,669-token vocabulary on a tiny random
 * model, so that sampling is a large part of a step) from $HS_MODELS_DIR (default
 * ../shared/models). The modes run REPS times, interleaved (serial, tasks, serial, ...). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench-util.h"
#include "backends/backend.h"
#include "model/model.h"
#include "server/engine.h"

#define MAX_STREAMS 256
#define MAX_TOKENS  4096
#define MAX_REPS    31

struct opts {
    const char *model;
    int streams, tokens, threads, reps;
};

struct run {
    double tok_s;      /* all generated tokens / makespan */
    double draw_ms;    /* draw phase wall time per step */
    double draw_share; /* draw phase wall time / makespan */
    double in_tasks;   /* share of the draws run as tasks (a step with one sequence draws on the
                        * engine thread) */
};

/* One run of o->streams streams; their tokens go to toks[stream][o->tokens]. */
static int run_once(struct hs_model *m, const struct opts *o, bool serial, hs_token *toks,
                    struct run *out)
{
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = o->streams;
    p.n_ctx = o->tokens + 16;
    p.n_threads = o->threads;
    p.serial_sampling = serial;
    /* Steps under 64 rows (when streams < 64): the logits then do not depend on which prompts
     * share a step (the CPU attention switches to f32 accumulation from 64 rows on), so both
     * modes draw from the same bits however the requests arrive. */
    p.n_batch_tokens = 32;
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    if (hs_engine_create(m, &p, &e, &err) != HS_OK) {
        fprintf(stderr, "bench-sampling: %s\n", err.message);
        return 1;
    }
    const int32_t n_vocab = hs_model_hparams(m)->n_vocab;
    struct hs_engine_handle *h[MAX_STREAMS];
    hs_token prompt[MAX_STREAMS][4];
    const double t0 = bench_now_s();
    for (int i = 0; i < o->streams; i++) {
        for (int k = 0; k < 4; k++) {
            prompt[i][k] = (hs_token)((1000 + 7919 * (i * 4 + k)) % n_vocab);
        }
        struct hs_engine_request r;
        hs_engine_request_init(&r);
        r.prompt = prompt[i];
        r.n_prompt = 4;
        r.max_tokens = o->tokens;
        r.ignore_eos = true;
        r.sampling.seed = 1234 + (uint64_t)i;
        if (hs_engine_submit(e, &r, &h[i], &err) != HS_OK) {
            fprintf(stderr, "bench-sampling: submit: %s\n", err.message);
            hs_engine_destroy(e);
            return 1;
        }
    }
    int64_t total = 0;
    int rc = 0;
    for (int i = 0; i < o->streams; i++) {
        int n = 0;
        struct hs_engine_event ev;
        for (;;) {
            if (hs_engine_wait(h[i], &ev, 600000) != HS_OK) {
                fprintf(stderr, "bench-sampling: stream %d: no event in 600 s\n", i);
                rc = 1;
                break;
            }
            for (int k = 0; k < ev.n_tokens && n < o->tokens; k++) {
                toks[(size_t)i * (size_t)o->tokens + (size_t)n++] = ev.tokens[k];
            }
            if (ev.type == HS_EVENT_DONE) {
                if (ev.status != HS_OK || ev.usage.completion_tokens != o->tokens) {
                    fprintf(stderr, "bench-sampling: stream %d: %s, %d tokens\n", i,
                            hs_status_str(ev.status), ev.usage.completion_tokens);
                    rc = 1;
                }
                total += ev.usage.completion_tokens;
                break;
            }
        }
        hs_engine_release(h[i]);
    }
    const double dt = bench_now_s() - t0;
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(e, &mt);
    out->tok_s = (double)total / dt;
    out->draw_ms = mt.steps ? 1e3 * mt.sampling_s / (double)mt.steps : 0.0;
    out->draw_share = mt.sampling_s / dt;
    out->in_tasks = mt.draws ? (double)mt.draws_in_tasks / (double)mt.draws : 0.0;
    hs_engine_destroy(e);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o = {.streams = 16, .tokens = 64, .threads = 0, .reps = 5};
    int c;
    while ((c = getopt(argc, argv, "m:s:n:t:r:h")) != -1) {
        switch (c) {
        case 'm':
            o.model = optarg;
            break;
        case 's':
            o.streams = atoi(optarg);
            break;
        case 'n':
            o.tokens = atoi(optarg);
            break;
        case 't':
            o.threads = atoi(optarg);
            break;
        case 'r':
            o.reps = atoi(optarg);
            break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: bench-sampling [-m MODEL.gguf] [-s STREAMS] [-n TOKENS] [-t THREADS] "
                    "[-r REPS]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (o.streams < 1 || o.streams > MAX_STREAMS || o.tokens < 1 || o.tokens > MAX_TOKENS ||
        o.reps < 1 || o.reps > MAX_REPS || o.threads < 0) {
        fprintf(stderr, "bench-sampling: streams 1..%d, tokens 1..%d, reps 1..%d, threads >= 0\n",
                MAX_STREAMS, MAX_TOKENS, MAX_REPS);
        return 2;
    }
    char path[1024];
    if (!o.model) {
        const char *dir = getenv("HS_MODELS_DIR");
        snprintf(path, sizeof(path), "%s/qwen3-vocab-f16.gguf", dir ? dir : "../shared/models");
        o.model = path;
    }
    if (o.threads == 0) {
        o.threads = hs_backend_physical_cores();
    }
    struct hs_model *m = NULL;
    struct hs_error err = {0};
    if (hs_model_load(o.model, &m, &err) != HS_OK) {
        fprintf(stderr, "bench-sampling: %s: %s\n", o.model, err.message);
        return 1;
    }
    const size_t n_toks = (size_t)o.streams * (size_t)o.tokens;
    hs_token *toks[2] = {malloc(n_toks * sizeof(hs_token)), malloc(n_toks * sizeof(hs_token))};
    hs_token *first = malloc(n_toks * sizeof(hs_token));
    struct run runs[2][MAX_REPS];
    bool same = true;
    int rc = 0;
    if (!toks[0] || !toks[1] || !first) {
        fprintf(stderr, "bench-sampling: out of memory\n");
        rc = 1;
        goto done;
    }
    double load0[3];
    getloadavg(load0, 3);
    for (int r = 0; r < o.reps && rc == 0; r++) {
        for (int mode = 0; mode < 2 && rc == 0; mode++) {
            rc = run_once(m, &o, mode == 0, toks[mode], &runs[mode][r]);
            fprintf(stderr,
                    "rep %d %-6s %8.1f tok/s, draw %.3f ms/step (%.0f%% of the run; %.0f%% of the "
                    "draws as tasks)\n",
                    r, mode == 0 ? "serial" : "tasks", runs[mode][r].tok_s, runs[mode][r].draw_ms,
                    100.0 * runs[mode][r].draw_share, 100.0 * runs[mode][r].in_tasks);
            if (r == 0 && mode == 0) {
                memcpy(first, toks[0], n_toks * sizeof(hs_token));
            }
            if (memcmp(first, toks[mode], n_toks * sizeof(hs_token))) {
                fprintf(stderr, "rep %d %s: other tokens than rep 0's serial run\n", r,
                        mode == 0 ? "serial" : "tasks");
                same = false;
            }
        }
    }
    if (rc == 0) {
        double load1[3];
        getloadavg(load1, 3);
        double v[2][3][MAX_REPS];
        double med[2][3];
        for (int mode = 0; mode < 2; mode++) {
            for (int r = 0; r < o.reps; r++) {
                v[mode][0][r] = runs[mode][r].tok_s;
                v[mode][1][r] = runs[mode][r].draw_ms;
                v[mode][2][r] = runs[mode][r].draw_share;
            }
            for (int k = 0; k < 3; k++) {
                med[mode][k] = bench_median(v[mode][k], o.reps);
            }
        }
        printf("model %s (vocabulary %d), %d streams x %d tokens, %d threads, %d reps "
               "(medians); load average %.2f before, %.2f after\n",
               o.model, (int)hs_model_hparams(m)->n_vocab, o.streams, o.tokens, o.threads, o.reps,
               load0[0], load1[0]);
        printf("%-8s %12s %16s %14s\n", "mode", "tok/s", "draw ms/step", "draw share");
        for (int mode = 0; mode < 2; mode++) {
            printf("%-8s %12.1f %16.3f %13.1f%%\n", mode == 0 ? "serial" : "tasks", med[mode][0],
                   med[mode][1], 100.0 * med[mode][2]);
        }
        printf("tasks/serial: throughput x%.2f, draw phase x%.2f faster; tokens identical: %s\n",
               med[1][0] / med[0][0], med[0][1] / med[1][1], same ? "yes" : "NO");
        if (!same) {
            rc = 1;
        }
    }
done:
    free(toks[0]);
    free(toks[1]);
    free(first);
    hs_model_destroy(m);
    return rc;
}
