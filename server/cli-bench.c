/* hetserve bench: prompt processing (pp) and text generation (tg) speed with llama-bench's
 * definitions, plus decode bandwidth as a fraction of a memory bandwidth measured here. Every
 * run is a request of the engine that serve runs (server/engine.h), so the engine's flags (split
 * execution, tracing) work here too. */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "model/gguf/gguf.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/cli.h"
#include "server/engine.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: hetserve bench -m MODEL [options]\n"
               "\n"
               "  -m, --model FILE    GGUF model (required)\n"
               "  -p, --n-prompt N    prompt tokens for the pp test (default 512; 0 = skip)\n"
               "  -n, --n-gen N       generated tokens for the tg test (default 128; 0 = skip)\n"
               "  -t, --threads N     compute threads of the FFN backend (default: physical\n"
               "                      cores, less --attn-threads)\n"
               "  -r, --repetitions N runs of each test (default 5)\n"
               "  -b, --batch N       also decode N sequences together (tg with -b N: each a\n"
               "                      BOS then -n tokens; total tokens/s; default 1 = off)\n"
               "  -d, --depth N       run pp and tg after N tokens of context (llama-bench's\n"
               "                      -d; reported as 'tg128 @ dN'; default 0). With -b, each\n"
               "                      sequence has N random prompt tokens of its own, prefilled\n"
               "                      together, and the decode steps after them are timed\n"
               "      --kv-type T     f16 (default) or f32\n"
               "      --no-probes     skip the memory-bandwidth and touched-pages measurements\n"
               "      --expert-placement RULES\n"
               "                      MoE models: place experts on backends, REGEX=BACKEND[:N]\n"
               "                      rules as for `hetserve serve` (see its --help)\n");
    hs__cli_split_usage(f, 22);
    fprintf(f, "\n"
               "Each run is one request of the engine that serve runs, timed by the engine from\n"
               "its submission. pp: tokens/s processing an N-token prompt (fresh random tokens,\n"
               "so the prefix cache never helps) in one step, to the first sampled token. tg:\n"
               "tokens/s generating N tokens greedily, past end-of-generation, from a one-token\n"
               "context (BOS): N forward passes of one token at positions 0 .. N-1, to the Nth\n"
               "token (llama-bench's tg). Each is reported as mean +- stddev over the\n"
               "repetitions, after one warm-up run. With -d N, pp first sends N random tokens\n"
               "(untimed, so the prefix cache holds them) and then those N and the pp prompt,\n"
               "counting the tokens the cache did not hold over the time to the first token;\n"
               "tg generates after N random tokens and times the decode steps alone.\n"
               "\n"
               "Then the weights one decoded token reads, three ways: as the backends count them\n"
               "over the tg runs, as pages of the model file one token touches (requests of one\n"
               "token, each one forward pass, with the accessed bits cleared through\n"
               "/proc/self/clear_refs before each and read back from /proc/self/smaps after it),\n"
               "and as the active parameters (for MoE models: k of each layer's experts) times\n"
               "their sizes. Models of 8 MiB or more are read into 2 MiB huge pages; the\n"
               "touched pages are measured on the mmap'd file only (HS_MMAP=1).\n");
}

/* ---- one engine request, waited for without a wakeup per token ---- */

struct bench_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hs_engine_handle *h; /* set under mu before the first notify can look */
    int32_t n_tokens;           /* generated */
    bool done;
    hs_status status;
    double ttft_ms, e2e_ms; /* the engine's: submit to the first sampled token, to the end */
    int32_t cached_tokens;  /* prompt tokens the prefix cache held */
};

/* Engine thread: takes the events itself, so the waiting thread wakes once, at DONE, and stays
 * off the cores the forward pass runs on. */
static void bench_notify(void *user)
{
    struct bench_req *b = user;
    pthread_mutex_lock(&b->mu); /* held by run_request only while it submits */
    struct hs_engine_event ev;
    while (!b->done && hs_engine_poll(b->h, &ev) == HS_OK) {
        if (ev.type == HS_EVENT_DELTA) {
            b->n_tokens += ev.n_tokens;
            continue;
        }
        b->done = true;
        b->status = ev.status;
        b->ttft_ms = ev.ttft_ms;
        b->e2e_ms = ev.e2e_ms;
        b->cached_tokens = ev.usage.cached_tokens;
        pthread_cond_signal(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
}

/* Submits a greedy request (EOS ignored) of max_tokens tokens after prompt whose events
 * bench_notify counts into b; called with b->mu held, which bench_notify waits for. Errors (a line
 * printed): those of hs_engine_submit. */
static hs_status submit_greedy(struct hs_engine *e, const hs_token *prompt, int32_t n_prompt,
                               int32_t max_tokens, struct bench_req *b)
{
    struct hs_engine_request r;
    hs_engine_request_init(&r);
    r.prompt = prompt;
    r.n_prompt = n_prompt;
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    r.notify = bench_notify;
    r.notify_user = b;
    struct hs_error err = {0};
    b->done = false;
    b->n_tokens = 0;
    const hs_status st = hs_engine_submit(e, &r, &b->h, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: %s\n", err.message);
    }
    return st;
}

/* Runs one greedy request (EOS ignored) of max_tokens tokens after prompt and waits for it.
 * Errors (a line printed): those of hs_engine_submit, the forward pass's, or HS_E_INTERNAL when
 * fewer tokens came than asked. */
static hs_status run_request(struct hs_engine *e, const hs_token *prompt, int32_t n_prompt,
                             int32_t max_tokens, struct bench_req *b)
{
    pthread_mutex_lock(&b->mu);
    const hs_status st = submit_greedy(e, prompt, n_prompt, max_tokens, b);
    while (st == HS_OK && !b->done) {
        pthread_cond_wait(&b->cv, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    if (st != HS_OK) {
        return st;
    }
    hs_engine_release(b->h);
    b->h = NULL;
    if (b->status != HS_OK) {
        fprintf(stderr, "hetserve: forward pass failed: %s\n", hs_status_str(b->status));
    } else if (b->n_tokens != max_tokens) {
        fprintf(stderr, "hetserve: the request ended after %d of %d tokens\n", b->n_tokens,
                max_tokens);
        b->status = HS_E_INTERNAL;
    }
    return b->status;
}

/* Runs n_seq greedy requests (EOS ignored), submitted together so that the engine decodes them
 * as one batch, and waits for all. Without depth (d == 0, prompts NULL): each BOS then n tokens,
 * *tps their tokens per second of wall time, first submission to last completion. At depth d:
 * sequence i's prompt is prompts[i * d ..] (d tokens, prefilled together in one step when the
 * budget allows), then n + 1 tokens, *tps the n_seq * n decode tokens over the time from the
 * last first token to the last completion (the engine's times). Errors as run_request's. */
static hs_status run_batch(struct hs_engine *e, int32_t n_seq, int32_t n, int32_t d,
                           const hs_token *prompts, struct bench_req *bs, double *tps)
{
    const hs_token bos = HS_MAX(hs_vocab_bos(hs_engine_vocab(e)), 0);
    hs_status st = HS_OK;
    int32_t n_sub = 0;
    const double t0 = now_s();
    for (; n_sub < n_seq; n_sub++) {
        struct bench_req *b = &bs[n_sub];
        pthread_mutex_lock(&b->mu);
        st = d > 0 ? submit_greedy(e, prompts + (size_t)n_sub * (size_t)d, d, n + 1, b)
                   : submit_greedy(e, &bos, 1, n, b);
        pthread_mutex_unlock(&b->mu);
        if (st != HS_OK) {
            break;
        }
    }
    const int32_t want = d > 0 ? n + 1 : n;
    double last_first_ms = 0, last_end_ms = 0;
    for (int32_t i = 0; i < n_sub; i++) {
        struct bench_req *b = &bs[i];
        pthread_mutex_lock(&b->mu);
        while (!b->done) {
            pthread_cond_wait(&b->cv, &b->mu);
        }
        pthread_mutex_unlock(&b->mu);
        hs_engine_release(b->h);
        b->h = NULL;
        if (st == HS_OK && b->status != HS_OK) {
            fprintf(stderr, "hetserve: forward pass failed: %s\n", hs_status_str(b->status));
            st = b->status;
        } else if (st == HS_OK && b->n_tokens != want) {
            fprintf(stderr, "hetserve: a request ended after %d of %d tokens\n", b->n_tokens, want);
            st = HS_E_INTERNAL;
        }
        last_first_ms = HS_MAX(last_first_ms, b->ttft_ms);
        last_end_ms = HS_MAX(last_end_ms, b->e2e_ms);
    }
    *tps = d > 0 ? (double)n_seq * n / ((last_end_ms - last_first_ms) / 1e3)
                 : (double)n_seq * n / (now_s() - t0);
    return st;
}

/* ---- weights a decoded token touches: referenced pages of the model mapping ---- */

/* "Referenced:" in bytes of the mapping that contains addr, from /proc/self/smaps: the pages
 * whose accessed bit the CPU set since the last clear_refs; -1 if unknown. */
static long long mapping_referenced(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) {
        return -1;
    }
    char line[512];
    bool inside = false;
    long long ref = -1;
    const uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        const char *dash = strchr(line, '-'), *space = strchr(line, ' ');
        if (dash && space && dash < space && sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
            inside = a >= lo && a < hi;
            continue;
        }
        long long kb;
        if (inside && sscanf(line, "Referenced: %lld kB", &kb) == 1) {
            ref = kb * 1024;
            break;
        }
    }
    fclose(f);
    return ref;
}

/* Mean bytes of the model file one decode step reads, over n probe tokens: each a request of
 * one prompt token and one generated token, i.e. exactly one forward pass of one token (at
 * position 0), with the accessed bits of the mapping's pages cleared (/proc/self/clear_refs)
 * before it and the pages the CPU marked accessed counted after it. Unlike a count kept by the
 * kernels, this sees every load the process made, whoever made it (the engine's sampling and
 * detokenizing read heap copies, not the file). -1 when the kernel does not tell. */
static double touched_per_token(struct hs_model *model, struct hs_engine *eng, struct bench_req *b,
                                int n)
{
    const struct hs_gguf *g = hs_model_gguf(model);
    /* Only a file mapping can drop its pages and fault them back as 4 KiB ones: MADV_DONTNEED
     * would zero weights read into anonymous huge pages (HS_MMAP=1 maps the file). */
    if (hs_gguf_n_tensors(g) == 0 || hs_gguf_backing(g) != HS_GGUF_FILE_MAP) {
        return -1;
    }
    const struct hs_gguf_tensor *t0 = hs_gguf_tensor(g, 0);
    const void *data = t0->data;
    /* Accessed bits per 4 KiB page: a large page-cache folio mapped by one PMD would mark 2 MiB
     * at a time. Map the data section with small pages for the probe (the pages stay cached). */
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t start = (uintptr_t)t0->data - (uintptr_t)t0->offset;
    const uintptr_t lo = start / page * page;
    const size_t len = hs_gguf_file_size(g) - hs_gguf_data_offset(g) + (size_t)(start - lo);
    if (madvise((void *)lo, len, MADV_NOHUGEPAGE) != 0 ||
        madvise((void *)lo, len, MADV_DONTNEED) != 0) {
        return -1;
    }
    /* Fault every page in now, so no fault during a probe token maps neighbours it never
     * reads (fault-around maps them young). */
    volatile uint8_t sink = 0;
    for (uintptr_t p = lo; p < lo + len; p += page) {
        sink ^= *(const volatile uint8_t *)p;
    }
    (void)sink;
    double sum = 0;
    hs_token t = 7;
    for (int i = 0; i < n; i++) {
        FILE *cr = fopen("/proc/self/clear_refs", "w");
        if (!cr) {
            return -1;
        }
        const bool cleared = fputs("1", cr) >= 0;
        if (fclose(cr) != 0 || !cleared) {
            return -1;
        }
        if (run_request(eng, &t, 1, 1, b) != HS_OK) {
            return -1;
        }
        const long long ref = mapping_referenced(data);
        if (ref < 0) {
            return -1;
        }
        sum += (double)ref;
        t = (hs_token)((t * 31 + 7) % hs_model_hparams(model)->n_vocab);
    }
    return sum / n;
}

/* ---- memory bandwidth: threads summing a buffer far larger than the caches ---- */

struct bw_arg {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
};

/* Two 64-bit lanes a vector (SSE2 on baseline x86-64), eight loads in flight an iteration: the
 * scalar loop this replaced kept too few loads going and read 20-21 GB/s on a Zen 3 VM where
 * 16- and 32-byte loads read 22-27. */
typedef uint64_t bw_v2 __attribute__((vector_size(16)));

static void *bw_worker(void *a)
{
    struct bw_arg *b = a;
    const bw_v2 *p = (const bw_v2 *)(const void *)b->p;
    bw_v2 s0 = {0, 0}, s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 8 <= b->n / 2; i += 8) {
        s0 += p[i] + p[i + 4];
        s1 += p[i + 1] + p[i + 5];
        s2 += p[i + 2] + p[i + 6];
        s3 += p[i + 3] + p[i + 7];
    }
    const bw_v2 s = s0 + s1 + s2 + s3;
    b->sum = s[0] + s[1];
    return NULL;
}

static double measure_bandwidth(int n_threads)
{
    const size_t bytes = (size_t)1 << 30;
    uint64_t *buf = aligned_alloc(64, bytes);
    if (!buf) {
        return 0;
    }
    memset(buf, 1, bytes);
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        pthread_t th[64];
        struct bw_arg args[64];
        int n = HS_MIN(HS_MAX(n_threads, 1), 64);
        size_t per = bytes / sizeof(uint64_t) / (size_t)n;
        double t0 = now_s();
        for (int i = 0; i < n; i++) {
            args[i] = (struct bw_arg){buf + per * (size_t)i, per, 0};
            pthread_create(&th[i], NULL, bw_worker, &args[i]);
        }
        for (int i = 0; i < n; i++) {
            pthread_join(th[i], NULL);
        }
        double dt = now_s() - t0;
        best = HS_MAX(best, (double)bytes / dt);
    }
    free(buf);
    return best;
}

static void mean_std(const double *v, int n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        s += v[i];
    }
    *mean = s / n;
    for (int i = 0; i < n; i++) {
        s2 += (v[i] - *mean) * (v[i] - *mean);
    }
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0;
}

/* ---- the tests ---- */

struct bench_opts {
    const char *path;
    int64_t n_prompt, n_gen, reps, n_seq, depth;
    bool probes;
    struct hs_engine_params ep;
};

/* Fills toks[0 .. n) with random tokens of the vocabulary. */
static void random_tokens(const struct hs_vocab *vocab, struct hs_rng *rng, hs_token *toks,
                          int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        toks[i] = (hs_token)(hs_rng_next(rng) % (uint64_t)hs_vocab_n_tokens(vocab));
    }
}

/* Runs test pp (a prompt of n fresh random tokens, one generated: its time to first token) or
 * tg (BOS, then n generated: submit to the end), once to warm up and then reps times, into v[]
 * as tokens/s. At depth d > 0 (llama-bench's -d) the test runs after d tokens of context: pp
 * submits a prompt of d fresh random tokens first (untimed; it leaves them in the prefix cache),
 * then those d and n more, and counts the prompt tokens the cache did not hold over the time to
 * the first token; tg generates n + 1 tokens after d random ones and times the n decode steps
 * after the first token. toks holds d + n tokens. */
static hs_status time_test(struct hs_engine *eng, bool pp, int32_t n, int32_t d, int64_t reps,
                           struct hs_rng *rng, hs_token *toks, struct bench_req *b, double *v)
{
    const struct hs_vocab *vocab = hs_engine_vocab(eng);
    const hs_token bos = HS_MAX(hs_vocab_bos(vocab), 0);
    for (int64_t r = -1; r < reps; r++) { /* r == -1: warm-up */
        hs_status st;
        double rate;
        if (pp) {
            random_tokens(vocab, rng, toks, d + n);
            if (d > 0 && (st = run_request(eng, toks, d, 1, b)) != HS_OK) {
                return st;
            }
            if ((st = run_request(eng, toks, d + n, 1, b)) != HS_OK) {
                return st;
            }
            rate = (double)(d + n - b->cached_tokens) / (b->ttft_ms / 1e3);
        } else if (d > 0) {
            random_tokens(vocab, rng, toks, d);
            if ((st = run_request(eng, toks, d, n + 1, b)) != HS_OK) {
                return st;
            }
            rate = (double)n / ((b->e2e_ms - b->ttft_ms) / 1e3);
        } else {
            if ((st = run_request(eng, &bos, 1, n, b)) != HS_OK) {
                return st;
            }
            rate = (double)n / (b->e2e_ms / 1e3);
        }
        if (r >= 0) {
            v[r] = rate;
        }
    }
    return HS_OK;
}

static int run(struct bench_opts *o)
{
    struct hs_error err = {0};
    struct hs_model *model = NULL;
    struct hs_engine *eng = NULL;
    hs_token *toks = NULL;
    double *v = NULL;
    struct bench_req b = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    int rc = 1;
    hs_status st = hs_model_load(o->path, &model, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: cannot load model '%s': %s\n", o->path, err.message);
        return st == HS_E_NOMEM ? 1 : 2;
    }
    const struct hs_model_hparams *hp = hs_model_hparams(model);
    o->ep.n_parallel = (int32_t)o->n_seq;
    o->ep.n_ctx = (int32_t)(o->depth + HS_MAX(o->n_prompt, o->n_gen) + 1);
    o->ep.n_ctx = HS_MAX(o->ep.n_ctx, 2);
    /* pp's prompt (and the depth's) in one step */
    o->ep.n_batch_tokens = (int32_t)HS_MAX(HS_MAX(o->n_prompt, o->depth * o->n_seq), 1);
    if ((st = hs_engine_create(model, &o->ep, &eng, &err)) != HS_OK) {
        fprintf(stderr, "hetserve: cannot create a context: %s\n", err.message);
        rc = st == HS_E_INVAL ? 2 : 1;
        goto done;
    }
    toks = malloc((size_t)(o->depth + HS_MAX(o->n_prompt, o->n_gen) + 1) * sizeof(*toks));
    v = calloc((size_t)o->reps, sizeof(*v));
    if (!toks || !v) {
        goto done;
    }
    struct hs_engine_metrics m;
    hs_engine_get_metrics(eng, &m);
    int32_t nt = m.backends[0].n_threads;
    printf("model: %s, %.2f MiB, %.2f M params (%.2f M active per token), %d threads",
           hs_model_desc(model), (double)hs_model_size_bytes(model) / (1 << 20),
           (double)hs_model_n_params(model) / 1e6, (double)hs_model_n_active_params(model) / 1e6,
           nt);
    for (int32_t i = 1; i < m.n_backends; i++) {
        printf(", attention on %s with %d threads%s", m.backends[i].name, m.backends[i].n_threads,
               o->ep.pingpong ? " (ping-pong)" : "");
        nt += m.backends[i].n_threads;
    }
    printf("\n| test   |          t/s |\n|--------|--------------|\n");
    char at[32] = "";
    if (o->depth > 0) {
        snprintf(at, sizeof(at), " @ d%d", (int)o->depth);
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 42);
    double tg_mean = 0;
    double counted_per_tok = 0; /* weight bytes the backends counted per decoded token */
    for (int test = 0; test < 2; test++) {
        const int32_t n = (int32_t)(test == 0 ? o->n_prompt : o->n_gen);
        if (n == 0) {
            continue;
        }
        struct hs_backend_stats s0, s1;
        hs_engine_get_backend_stats(eng, &s0);
        if (time_test(eng, test == 0, n, (int32_t)o->depth, o->reps, &rng, toks, &b, v) != HS_OK) {
            goto done;
        }
        hs_engine_get_backend_stats(eng, &s1);
        double mean, sd;
        mean_std(v, (int)o->reps, &mean, &sd);
        char label[48];
        snprintf(label, sizeof(label), "%s%d%s", test == 0 ? "pp" : "tg", n, at);
        printf("| %-6s | %7.2f ± %-4.2f |\n", label, mean, sd);
        if (test == 1) {
            tg_mean = mean;
            /* the warm-up run counts too */
            counted_per_tok = (double)(s1.weight_bytes_read - s0.weight_bytes_read) /
                              ((double)n * (double)(o->reps + 1));
        }
    }
    if (o->n_seq > 1 && o->n_gen > 0) {
        struct bench_req *bs = calloc((size_t)o->n_seq, sizeof(*bs));
        hs_token *bprompts =
            o->depth > 0 ? malloc((size_t)(o->n_seq * o->depth) * sizeof(*bprompts)) : NULL;
        if (!bs || (o->depth > 0 && !bprompts)) {
            free(bs);
            free(bprompts);
            goto done;
        }
        for (int64_t i = 0; i < o->n_seq; i++) {
            pthread_mutex_init(&bs[i].mu, NULL);
            pthread_cond_init(&bs[i].cv, NULL);
        }
        hs_status bst = HS_OK;
        for (int64_t r = -1; r < o->reps && bst == HS_OK; r++) { /* r == -1: warm-up */
            double tps = 0;
            if (o->depth > 0) {
                random_tokens(hs_engine_vocab(eng), &rng, bprompts, (int32_t)(o->n_seq * o->depth));
            }
            bst = run_batch(eng, (int32_t)o->n_seq, (int32_t)o->n_gen, (int32_t)o->depth, bprompts,
                            bs, &tps);
            if (r >= 0) {
                v[r] = tps;
            }
        }
        for (int64_t i = 0; i < o->n_seq; i++) {
            pthread_mutex_destroy(&bs[i].mu);
            pthread_cond_destroy(&bs[i].cv);
        }
        free(bs);
        free(bprompts);
        if (bst != HS_OK) {
            goto done;
        }
        double mean, sd;
        mean_std(v, (int)o->reps, &mean, &sd);
        char label[48];
        snprintf(label, sizeof(label), o->depth > 0 ? "tg%d x%d%s" : "tg%-4d x%-3d%s",
                 (int)o->n_gen, (int)o->n_seq, at);
        printf("| %s | %7.2f ± %-4.2f | (%d sequences together, total tokens/s)\n", label, mean, sd,
               (int)o->n_seq);
    }
    /* Peak RSS of the engine itself, before the bandwidth probe allocates its buffer. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double rss_mib = (double)ru.ru_maxrss / 1024.0;
    if (tg_mean > 0 && o->probes) {
        const double mib = 1 << 20;
        const double touched = touched_per_token(model, eng, &b, 8);
        printf("weights per decoded token: %.2f MiB counted by the backends, ",
               counted_per_tok / mib);
        if (touched >= 0) {
            printf("%.2f MiB of the model file touched, ", touched / mib);
        } else {
            printf("pages touched unknown%s, ",
                   hs_gguf_backing(hs_model_gguf(model)) == HS_GGUF_HUGE_PAGES
                       ? " (weights in 2 MiB pages; HS_MMAP=1 measures them)"
                       : "");
        }
        printf("%.2f MiB active (%.2f M params)\n", (double)hs_model_active_bytes(model) / mib,
               (double)hs_model_n_active_params(model) / 1e6);
        double bw = measure_bandwidth(nt);
        /* Bytes read per generated token: the weights it runs once, plus the mean KV read. */
        double kv_row =
            (double)hp->n_head_kv * hp->head_dim * (o->ep.kv_type == HS_TYPE_F16 ? 2 : 4);
        double per_tok =
            (double)hs_model_active_bytes(model) +
            2.0 * hp->n_layer_kv * kv_row * ((double)o->depth + (double)o->n_gen / 2.0);
        double used = per_tok * tg_mean;
        printf("decode: %.2f GB/s of %.2f GB/s measured memory bandwidth (%.0f%%)\n", used / 1e9,
               bw / 1e9, 100.0 * used / bw);
    }
    struct hs_backend_stats bst;
    hs_engine_get_backend_stats(eng, &bst);
    printf("peak RSS: %.1f MiB (weights %s: %.1f MiB, repacked copies %.1f MiB, KV cache "
           "%.1f MiB)\n",
           rss_mib,
           hs_gguf_backing(hs_model_gguf(model)) == HS_GGUF_HUGE_PAGES ? "in 2 MiB pages"
                                                                       : "mmap'd",
           (double)hs_model_size_bytes(model) / (1 << 20), (double)bst.repacked_bytes / (1 << 20),
           (double)hs_engine_kv_bytes(eng) / (1 << 20));
    rc = 0;
done:
    hs_engine_destroy(eng);
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);
    free(toks);
    free(v);
    hs_model_destroy(model);
    return rc;
}

int hs__cli_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"n-prompt", required_argument, 0, 'p'},
        {"n-gen", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},
        {"repetitions", required_argument, 0, 'r'},
        {"batch", required_argument, 0, 'b'},
        {"depth", required_argument, 0, 'd'},
        {"kv-type", required_argument, 0, 'k'},
        {"expert-placement", required_argument, 0, 'x'},
        {"no-probes", no_argument, 0, 'P'},
        {"override-tensor", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'},
        HS__CLI_SPLIT_OPTIONS,
        {0, 0, 0, 0},
    };
    const char *path = NULL;
    int64_t n_prompt = 512, n_gen = 128, n_threads = 0, reps = 5, n_seq = 1, depth = 0;
    struct hs_engine_params ep = hs_engine_default_params();
    bool probes = true;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:p:n:t:r:b:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            path = optarg;
            break;
        case 'p':
            if (!hs__cli_parse_int("-p", optarg, 0, 1 << 16, &n_prompt)) {
                return 2;
            }
            break;
        case 'n':
            if (!hs__cli_parse_int("-n", optarg, 0, 1 << 16, &n_gen)) {
                return 2;
            }
            break;
        case 't':
            if (!hs__cli_parse_int("-t", optarg, 1, 1024, &n_threads)) {
                return 2;
            }
            ep.n_threads = (int32_t)n_threads;
            break;
        case 'r':
            if (!hs__cli_parse_int("-r", optarg, 1, 1000, &reps)) {
                return 2;
            }
            break;
        case 'b':
            if (!hs__cli_parse_int("-b", optarg, 1, 256, &n_seq)) {
                return 2;
            }
            break;
        case 'd':
            if (!hs__cli_parse_int("-d", optarg, 0, 1 << 16, &depth)) {
                return 2;
            }
            break;
        case 'k':
            if (strcmp(optarg, "f16") && strcmp(optarg, "f32")) {
                fprintf(stderr, "hetserve: --kv-type must be f16 or f32\n");
                return 2;
            }
            ep.kv_type = strcmp(optarg, "f16") ? HS_TYPE_F32 : HS_TYPE_F16;
            break;
        case 'x':
            ep.expert_placement = optarg;
            break;
        case 'P':
            probes = false;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            if (hs__cli_parse_split(c, optarg, &ep, "bench", argv[optind - 1]) <= 0) {
                return 2;
            }
            break;
        }
    }
    if (!path || optind < argc) {
        fprintf(stderr, "hetserve bench: -m MODEL is required; see --help\n");
        return 2;
    }
    if (!hs__cli_split_check("bench", &ep)) {
        return 2;
    }
    struct bench_opts o = {path, n_prompt, n_gen, reps, n_seq, depth, probes, ep};
    return run(&o);
}
