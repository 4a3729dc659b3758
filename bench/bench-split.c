/* bench-split: N concurrent decode streams through the serving engine, unsplit and split (two
 * CPU backends: attention on its own thread and cores, with and without ping-pong), on the same
 * cores, in the same run. Prints decode throughput of each and its ratio to the unsplit engine,
 * the balancer's step-time prediction error and how much of the two backends' work overlapped.
 *
 *   bench-split [-m MODEL.gguf] [-n STREAMS] [-p PROMPT] [-g GEN] [-t THREADS] [-a ATTN_THREADS]
 *               [-r REPS]
 *
 * Without -m it writes the SmolLM-135M-shaped Q8_0 model (hetserve mkmodel --preset smollm-135m)
 * to /tmp once. Each configuration runs REPS times, interleaved (unsplit, split, ping-pong, ...);
 * the median is reported. Columns: decode tokens/s and its ratio to unsplit; steps run as two
 * ping-pong sub-batches; the balancer's prediction error against the wall time (summed
 * |predicted - measured| over the steps' layer loops, over their wall time); predicted over the
 * timeline (the ideal pipeline of the measured stages, i.e. what the model predicts) and the
 * timeline over the wall time (what hand-offs and the machine add); the overlap (time both
 * backends were busy at once over the less busy one's busy time); the attention thread's busy
 * share of the wall time. Throughput counts the generated tokens of all streams over the wall
 * time from the first stream's first token to the last stream's last, so the prefill of the
 * prompts (the same for every configuration) is left out.
 *
 *   bench-split -b [-m MODEL.gguf] [-A ATTN_BACKEND] [-C CONFIG] [-N REQUESTS] [-n SLOTS]
 *               [-p PROMPT] [-g GEN] [-t THREADS] [-a ATTN_THREADS] [-r REPS]
 *
 * -b compares the ping-pong balances (--pingpong-balance cut, kv, length) on a mixed workload,
 * interleaved in one run: REQUESTS requests (prompts of PROMPT/4 to PROMPT tokens, outputs of
 * GEN/4 to 5*GEN/4 tokens and one in four 4x that, ignore_eos, so the length predictor, which
 * knows ignore_eos, predicts each exactly: its best case) through SLOTS slots, so sequences end
 * and others start decoding all along. Columns: decode tokens/s (wall, noisy); ping-pong steps
 * and those the balance reordered; the mean KV imbalance of a ping-pong step
 * (|kv_A - kv_B| / (kv_A + kv_B) on the attention backend: what the order decides); the
 * attention side's critical path (the slower sub-batch's attention time per step, simulated on
 * pim/npu, summed) and its ratio to an even split (1: even, 2: one side has it all); the layer
 * loops' critical path on the modelled hardware (the timeline: real FFN stages, the attention
 * backend's simulated stages) in total, per step and against cut; the overlap. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "model/model.h"
#include "server/engine.h"

#define MAX_STREAMS 64

struct run {
    double tok_s;        /* decode tokens per second, all streams */
    double pred_err;     /* sum over split steps of |predicted - wall| / the wall time */
    double pred_tl;      /* predicted / timeline (the ideal pipeline of the measured stages) */
    double tl_wall;      /* timeline / wall: what the hand-offs and the machine's noise add */
    double overlap;      /* overlap seconds / the busier side's busy seconds */
    double attn_share;   /* attention thread busy / wall, split steps */
    uint64_t split_steps, pingpong_steps;
};

/* Submits a greedy ignore_eos request of n_prompt tokens (BOS, then random ones drawn from
 * rng) and max_tokens; prompt is scratch of n_prompt entries. */
static int submit(struct hs_engine *e, int32_t n_vocab, struct hs_rng *rng, hs_token *prompt,
                  int n_prompt, int max_tokens, struct hs_engine_handle **h)
{
    struct hs_error err = {0};
    prompt[0] = 1;
    for (int j = 1; j < n_prompt; j++) {
        prompt[j] = (hs_token)(hs_rng_next(rng) % (uint64_t)(n_vocab - 3)) + 3;
    }
    struct hs_engine_request rq;
    hs_engine_request_init(&rq);
    rq.prompt = prompt;
    rq.n_prompt = n_prompt;
    rq.max_tokens = max_tokens;
    rq.ignore_eos = true;
    rq.sampling.temperature = 0;
    if (hs_engine_submit(e, &rq, h, &err) != HS_OK) {
        fprintf(stderr, "bench-split: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* Waits for the DONE of the n requests (NULL entries skipped) and releases them. */
static int wait_all(struct hs_engine_handle **h, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        struct hs_engine_event ev;
        do {
            if (!h[i] || hs_engine_wait(h[i], &ev, 600000) != HS_OK) {
                if (h[i]) {
                    fprintf(stderr, "bench-split: a request stalled\n");
                    rc = -1;
                }
                break;
            }
        } while (ev.type != HS_EVENT_DONE);
        if (h[i]) {
            hs_engine_release(h[i]);
        }
    }
    return rc;
}

/* Submits the n streams' requests (prompt i from seed 1000 + i) and waits for all of them;
 * returns the wall time from submission to the last DONE, or a negative value on failure. */
static double serve_all(struct hs_engine *e, int32_t n_vocab, int n, int n_prompt, int max_tokens)
{
    hs_token *prompt = malloc((size_t)n_prompt * sizeof(hs_token));
    struct hs_engine_handle *h[MAX_STREAMS] = {0};
    const double t0 = bench_now_s();
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct hs_rng rng;
        hs_rng_seed(&rng, 1000 + (uint64_t)i);
        rc = submit(e, n_vocab, &rng, prompt, n_prompt, max_tokens, &h[i]);
    }
    free(prompt);
    rc |= wait_all(h, n);
    return rc == 0 ? bench_now_s() - t0 : -1;
}

/* One configuration: mode 0 unsplit, 1 split, 2 split with ping-pong. A first pass prefills the
 * prompts (one token each); the measured pass sends them again, finds them in the prefix cache
 * and decodes n_gen tokens per stream. */
static int run_once(struct hs_model *m, int mode, int n, int n_prompt, int n_gen, int threads,
                    int attn_threads, struct run *out)
{
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = n;
    p.n_ctx = n_prompt + n_gen + 8;
    p.n_batch_tokens = 512;
    p.n_threads = mode == 0 ? threads : threads - attn_threads;
    if (mode > 0) {
        p.attn_backend = "cpu";
        p.attn_threads = attn_threads;
        p.pingpong = mode == 2;
    }
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    if (hs_engine_create(m, &p, &e, &err) != HS_OK) {
        fprintf(stderr, "bench-split: %s\n", err.message);
        return -1;
    }
    const int32_t n_vocab = hs_model_hparams(m)->n_vocab;
    struct hs_engine_metrics m0, m1;
    if (serve_all(e, n_vocab, n, n_prompt, 1) < 0) {
        return -1;
    }
    hs_engine_get_metrics(e, &m0);
    const double wall = serve_all(e, n_vocab, n, n_prompt, n_gen);
    if (wall < 0) {
        return -1;
    }
    hs_engine_get_metrics(e, &m1);
    hs_engine_destroy(e);
    const struct hs_split_stats *a = &m0.split, *b = &m1.split;
    out->tok_s = (double)(m1.generation_tokens - m0.generation_tokens) / wall;
    out->split_steps = b->n_steps - a->n_steps;
    out->pingpong_steps = b->n_steps_split - a->n_steps_split;
    const double sw = b->wall_s - a->wall_s;
    const double ffn = b->ffn_busy_s - a->ffn_busy_s;
    const double attn = b->attn_busy_s - a->attn_busy_s;
    out->pred_err = sw > 0 ? (b->abs_err_s - a->abs_err_s) / sw : 0;
    const double tl = b->timeline_s - a->timeline_s;
    out->pred_tl = tl > 0 ? (b->predicted_s - a->predicted_s) / tl : 0;
    out->tl_wall = sw > 0 ? tl / sw : 0;
    out->overlap = HS_MIN(ffn, attn) > 0 ? (b->overlap_s - a->overlap_s) / HS_MIN(ffn, attn) : 0;
    out->attn_share = sw > 0 ? attn / sw : 0;
    return 0;
}

/* ---- -b: the ping-pong balances on a mixed workload ---- */

struct brun {
    double tok_s, imbalance, tl_s, tl_step_ms, overlap;
    double attn_max_s, attn_skew; /* the slower side's attention, summed; that over half both */
    uint64_t pp_steps, reorders;
};

static const char *attn_config; /* -C: the attention backend's config file (--pim-config) */

/* Runs the mixed workload through a split ping-pong engine with the given balance. */
static int run_balance(struct hs_model *m, enum hs_pingpong_balance bal, const char *attn,
                       int n_req, int slots, int n_prompt, int n_gen, int threads, int attn_threads,
                       struct brun *out)
{
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = slots;
    p.n_ctx = n_prompt + 5 * n_gen + 8;
    p.n_batch_tokens = 512;
    p.n_threads = threads - attn_threads;
    p.attn_backend = attn;
    p.attn_threads = attn_threads;
    p.pingpong = true;
    p.pingpong_balance = bal;
    p.backend_config = attn_config;
    struct hs_engine *e = NULL;
    struct hs_error err = {0};
    if (hs_engine_create(m, &p, &e, &err) != HS_OK) {
        fprintf(stderr, "bench-split: %s\n", err.message);
        return -1;
    }
    const int32_t n_vocab = hs_model_hparams(m)->n_vocab;
    struct hs_engine_handle **h = calloc((size_t)n_req, sizeof(*h));
    hs_token *prompt = malloc((size_t)n_prompt * sizeof(hs_token));
    struct hs_engine_metrics m0, m1;
    hs_engine_get_metrics(e, &m0);
    const double t0 = bench_now_s();
    int rc = 0;
    for (int i = 0; i < n_req && rc == 0; i++) {
        struct hs_rng rng;
        hs_rng_seed(&rng, 2000 + (uint64_t)i);
        const int np =
            n_prompt / 4 + (int)(hs_rng_next(&rng) % (uint64_t)(n_prompt - n_prompt / 4));
        int gen = n_gen / 4 + (int)(hs_rng_next(&rng) % (uint64_t)n_gen);
        gen *= hs_rng_next(&rng) % 4 == 0 ? 4 : 1;
        rc = submit(e, n_vocab, &rng, prompt, np, gen, &h[i]);
    }
    rc |= wait_all(h, n_req);
    const double wall = bench_now_s() - t0;
    hs_engine_get_metrics(e, &m1);
    hs_engine_destroy(e);
    free(prompt);
    free(h);
    const struct hs_split_stats *a = &m0.split, *b = &m1.split;
    out->tok_s = (double)(m1.generation_tokens - m0.generation_tokens) / wall;
    out->pp_steps = b->n_steps_split - a->n_steps_split;
    out->reorders = m1.pingpong_reorders - m0.pingpong_reorders;
    out->imbalance = out->pp_steps ? (b->kv_imbalance - a->kv_imbalance) / (double)out->pp_steps
                                   : 0;
    out->tl_s = b->timeline_s - a->timeline_s;
    out->attn_max_s = b->attn_max_s - a->attn_max_s;
    const double pair = b->attn_pair_s - a->attn_pair_s;
    out->attn_skew = pair > 0 ? out->attn_max_s / (pair / 2) : 0;
    const uint64_t steps = b->n_steps - a->n_steps;
    out->tl_step_ms = steps ? 1e3 * out->tl_s / (double)steps : 0;
    const double ffn = b->ffn_busy_s - a->ffn_busy_s, attn_b = b->attn_busy_s - a->attn_busy_s;
    out->overlap = HS_MIN(ffn, attn_b) > 0 ? (b->overlap_s - a->overlap_s) / HS_MIN(ffn, attn_b)
                                           : 0;
    return rc;
}

static int balance_main(struct hs_model *m, const char *attn, int n_req, int slots, int n_prompt,
                        int n_gen, int threads, int attn_threads, int reps)
{
    struct brun runs[HS_PINGPONG_BALANCE_COUNT][50];
    for (int r = 0; r < reps; r++) {
        for (int b = 0; b < HS_PINGPONG_BALANCE_COUNT; b++) {
            struct brun *o = &runs[b][r];
            if (run_balance(m, (enum hs_pingpong_balance)b, attn, n_req, slots, n_prompt, n_gen,
                            threads, attn_threads, o) != 0) {
                return 1;
            }
            fprintf(stderr,
                    "bench-split: rep %d balance %-6s %7.1f tok/s, imbalance %.3f, attention "
                    "max side %.4f s (x%.3f of even), timeline %.3f s (%.3f ms/step), %llu pp "
                    "steps, %llu reordered\n",
                    r + 1, hs_pingpong_balance_str((enum hs_pingpong_balance)b), o->tok_s,
                    o->imbalance, o->attn_max_s, o->attn_skew, o->tl_s, o->tl_step_ms,
                    (unsigned long long)o->pp_steps, (unsigned long long)o->reorders);
        }
    }
    printf("bench-split -b: %s, attention on %s, %d requests through %d slots, prompts %d-%d, "
           "outputs %d-%d (1 in 4 x4); %d threads (%d FFN + %d attention); median of %d\n",
           hs_model_desc(m), attn, n_req, slots, n_prompt / 4, n_prompt - 1, n_gen / 4,
           n_gen / 4 + n_gen - 1, threads, threads - attn_threads, attn_threads, reps);
    printf("%-8s %8s %8s %9s %9s %10s %8s %10s %8s %8s %8s\n", "balance", "tok/s",
           "pp steps", "reordered", "imbalance", "attn max s", "of even", "timeline s",
           "ms/step", "vs cut", "overlap");
    double base = 0;
    for (int b = 0; b < HS_PINGPONG_BALANCE_COUNT; b++) {
        double v[7][50];
        for (int r = 0; r < reps; r++) {
            v[0][r] = runs[b][r].tok_s;
            v[1][r] = runs[b][r].imbalance;
            v[2][r] = runs[b][r].tl_s;
            v[3][r] = runs[b][r].tl_step_ms;
            v[4][r] = runs[b][r].overlap;
            v[5][r] = runs[b][r].attn_max_s;
            v[6][r] = runs[b][r].attn_skew;
        }
        double med[7];
        for (int k = 0; k < 7; k++) {
            med[k] = bench_median(v[k], reps);
        }
        if (b == 0) {
            base = med[2];
        }
        printf("%-8s %8.1f %8llu %9llu %9.3f %10.4f %7.3fx %10.3f %8.3f %7.3fx %7.1f%%\n",
               hs_pingpong_balance_str((enum hs_pingpong_balance)b), med[0],
               (unsigned long long)runs[b][reps / 2].pp_steps,
               (unsigned long long)runs[b][reps / 2].reorders, med[1], med[5], med[6], med[2],
               med[3], base > 0 ? med[2] / base : 0, 100 * med[4]);
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-split [-m MODEL.gguf] [-n STREAMS] [-p PROMPT] [-g GEN] [-t THREADS]\n"
               "                   [-a ATTN_THREADS] [-r REPS]\n"
               "N concurrent decode streams through the engine: unsplit on THREADS threads, then\n"
               "split (FFN on THREADS - ATTN_THREADS, attention on ATTN_THREADS others) without\n"
               "and with ping-pong; medians of REPS interleaved runs. Defaults: the SmolLM-135M\n"
               "shape at Q8_0 (written to /tmp), 16 streams, 256-token prompts, 64 generated,\n"
               "2 threads, 1 attention thread, 3 reps.\n"
               "-b: the ping-pong balances (cut, kv, length) on a mixed workload of -N REQUESTS\n"
               "(default 48) through -n SLOTS (default 16), attention on -A BACKEND (default\n"
               "pim; -C FILE its --pim-config/--npu-config), prompts PROMPT/4..PROMPT, outputs\n"
               "GEN/4..5*GEN/4 (1 in 4 x4).\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int n = 16, n_prompt = 256, n_gen = 64, threads = 2, attn_threads = 1, reps = 3;
    int n_req = 48;
    bool balance = false;
    const char *attn = "pim";
    int c;
    while ((c = getopt(argc, argv, "m:n:p:g:t:a:r:bA:C:N:h")) != -1) {
        switch (c) {
        case 'C': attn_config = optarg; break;
        case 'b': balance = true; break;
        case 'A': attn = optarg; break;
        case 'N': n_req = atoi(optarg); break;
        case 'm': path = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 'p': n_prompt = atoi(optarg); break;
        case 'g': n_gen = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'a': attn_threads = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (n < 2 || n > MAX_STREAMS || n_prompt < 8 || n_gen < 4 || threads < 2 || n_req < 1 ||
        n_req > 100000 || attn_threads < 1 || attn_threads >= threads || reps < 1 || reps > 50) {
        usage(stderr);
        return 2;
    }
    char tmp[128];
    struct hs_error err = {0};
    if (!path) {
        snprintf(tmp, sizeof(tmp), "/tmp/hetserve-bench-split-smollm-q8_0.gguf");
        if (access(tmp, R_OK) != 0) {
            fprintf(stderr, "bench-split: writing the SmolLM-135M-shaped Q8_0 model to %s\n", tmp);
            struct hs_mkmodel_params mp = hs_mkmodel_smollm_params();
            mp.wtype = HS_TYPE_Q8_0;
            if (hs_mkmodel_write(&mp, tmp, &err) != HS_OK) {
                fprintf(stderr, "bench-split: %s\n", err.message);
                return 1;
            }
        }
        path = tmp;
    }
    struct hs_model *m = NULL;
    if (hs_model_load(path, &m, &err) != HS_OK) {
        fprintf(stderr, "bench-split: %s: %s\n", path, err.message);
        return 1;
    }
    if (balance) {
        const int rc = balance_main(m, attn, n_req, n, n_prompt, n_gen, threads, attn_threads,
                                    reps);
        hs_model_destroy(m);
        return rc;
    }
    static const char *const names[3] = {"unsplit", "split", "split+pingpong"};
    struct run runs[3][50];
    for (int r = 0; r < reps; r++) {
        for (int mode = 0; mode < 3; mode++) {
            if (run_once(m, mode, n, n_prompt, n_gen, threads, attn_threads, &runs[mode][r]) != 0) {
                return 1;
            }
            fprintf(stderr, "bench-split: rep %d %-15s %8.1f tok/s\n", r + 1, names[mode],
                    runs[mode][r].tok_s);
        }
    }
    printf("bench-split: %s, %d streams, %d-token prompts, %d generated each; %d threads "
           "(split: %d FFN + %d attention, pinned apart); median of %d\n",
           hs_model_desc(m), n, n_prompt, n_gen, threads, threads - attn_threads, attn_threads,
           reps);
    printf("%-15s %9s %7s %9s %9s %9s %9s %9s %9s\n", "config", "tok/s", "ratio", "pp steps",
           "pred err", "pred/tl", "tl/wall", "overlap", "attn busy");
    double base = 0;
    for (int mode = 0; mode < 3; mode++) {
        double v[50], pe[50], pt[50], tw[50], ov[50], as[50];
        for (int r = 0; r < reps; r++) {
            v[r] = runs[mode][r].tok_s;
            pe[r] = runs[mode][r].pred_err;
            pt[r] = runs[mode][r].pred_tl;
            tw[r] = runs[mode][r].tl_wall;
            ov[r] = runs[mode][r].overlap;
            as[r] = runs[mode][r].attn_share;
        }
        double *cols[] = {v, pe, pt, tw, ov, as};
        for (size_t col = 0; col < HS_ARRAY_LEN(cols); col++) {
            qsort(cols[col], (size_t)reps, sizeof(double), bench_cmp_double);
        }
        const double med = v[reps / 2];
        if (mode == 0) {
            base = med;
        }
        printf("%-15s %9.1f %6.2fx %9llu", names[mode], med, base > 0 ? med / base : 0,
               (unsigned long long)runs[mode][reps / 2].pingpong_steps);
        if (mode == 0) {
            printf(" %9s %9s %9s %9s %9s\n", "-", "-", "-", "-", "-");
        } else {
            const int h = reps / 2;
            printf(" %8.1f%% %9.2f %9.2f %8.1f%% %8.1f%%\n", 100 * pe[h], pt[h], tw[h], 100 * ov[h],
                   100 * as[h]);
        }
    }
    hs_model_destroy(m);
    return 0;
}
