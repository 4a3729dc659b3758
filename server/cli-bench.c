/* hetserve bench: prompt processing (pp) and text generation (tg) speed with llama-bench's
 * definitions, plus decode bandwidth as a fraction of a memory bandwidth measured here. */
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

#include "model/gguf.h"
#include "model/model.h"
#include "server/cli.h"

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
               "  -t, --threads N     compute threads (default: physical cores)\n"
               "  -r, --repetitions N runs of each test (default 5)\n"
               "      --kv-type T     f16 (default) or f32\n"
               "      --no-probes     skip the memory-bandwidth and touched-pages measurements\n"
               "      --expert-placement RULES\n"
               "                      MoE models: place experts on backends, REGEX=BACKEND[:N]\n"
               "                      rules as for `hetserve serve` (see its --help)\n"
               "\n"
               "pp: tokens/s processing an N-token prompt in one batch; tg: tokens/s generating N\n"
               "tokens one at a time from an empty context (as llama-bench). Each is reported as\n"
               "mean +- stddev over the repetitions, after one warm-up run.\n"
               "\n"
               "Then the weights one decoded token reads, three ways: as the backends count them,\n"
               "as pages of the model file the token touches (accessed bits cleared through\n"
               "/proc/self/clear_refs before each probe token, read back from /proc/self/smaps),\n"
               "and as the active parameters (for MoE models: k of each layer's experts) times\n"
               "their sizes.\n");
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

/* Mean bytes of the model file one decode step reads, over n probe tokens after position
 * n_past: the accessed bits of the mapping's pages are cleared (/proc/self/clear_refs) before
 * each token, and the pages the CPU marked accessed are counted after it. Unlike a count kept
 * by the kernels, this sees every load the process made, whoever made it. -1 when the kernel
 * does not tell. */
static double touched_per_token(struct hs_model *model, struct hs_context *ctx,
                                const int32_t *table, int32_t n_past, int n)
{
    const struct hs_gguf *g = hs_model_gguf(model);
    if (hs_gguf_n_tensors(g) == 0) {
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
        struct hs_forward_seq fs = {&t, 1, n_past + i, table, 1, 0};
        if (hs_model_forward(ctx, &fs, 1) != HS_OK) {
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

static void *bw_worker(void *a)
{
    struct bw_arg *b = a;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= b->n; i += 4) {
        s0 += b->p[i];
        s1 += b->p[i + 1];
        s2 += b->p[i + 2];
        s3 += b->p[i + 3];
    }
    b->sum = s0 + s1 + s2 + s3;
    return NULL;
}

static double measure_bandwidth(int n_threads)
{
    const size_t bytes = (size_t)1 << 30;
    uint64_t *buf = malloc(bytes);
    if (!buf) {
        return 0;
    }
    memset(buf, 1, bytes);
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
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

int hs__cli_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"n-prompt", required_argument, 0, 'p'},
        {"n-gen", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},
        {"repetitions", required_argument, 0, 'r'},
        {"kv-type", required_argument, 0, 'k'},
        {"expert-placement", required_argument, 0, 'x'},
        {"no-probes", no_argument, 0, 'P'},
        {"override-tensor", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *path = NULL;
    int64_t n_prompt = 512, n_gen = 128, n_threads = 0, reps = 5;
    enum hs_type kv_type = HS_TYPE_F16;
    const char *placement = NULL;
    bool probes = true;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:p:n:t:r:h", opts, NULL)) != -1) {
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
            break;
        case 'r':
            if (!hs__cli_parse_int("-r", optarg, 1, 1000, &reps)) {
                return 2;
            }
            break;
        case 'k':
            if (strcmp(optarg, "f16") && strcmp(optarg, "f32")) {
                fprintf(stderr, "hetserve: --kv-type must be f16 or f32\n");
                return 2;
            }
            kv_type = strcmp(optarg, "f16") ? HS_TYPE_F32 : HS_TYPE_F16;
            break;
        case 'x':
            placement = optarg;
            break;
        case 'P':
            probes = false;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "hetserve bench: unknown or incomplete option '%s'; see --help\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (!path || optind < argc) {
        fprintf(stderr, "hetserve bench: -m MODEL is required; see --help\n");
        return 2;
    }
    struct hs_error err = {0};
    struct hs_model *model = NULL;
    struct hs_context *ctx = NULL;
    hs_token *toks = NULL;
    int32_t *table = NULL;
    int rc = 1;
    hs_status st = hs_model_load(path, &model, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: cannot load model '%s': %s\n", path, err.message);
        return st == HS_E_NOMEM ? 1 : 2;
    }
    const struct hs_model_hparams *hp = hs_model_hparams(model);
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = (int32_t)HS_MAX(n_prompt, n_gen) + 1;
    cp.n_batch = (int32_t)HS_MAX(n_prompt, 1);
    cp.kv_type = kv_type;
    cp.backend_params.n_threads = (int32_t)n_threads;
    cp.expert_placement = placement;
    if ((st = hs_context_create(model, &cp, &ctx, &err)) != HS_OK) {
        fprintf(stderr, "hetserve: cannot create a context: %s\n", err.message);
        rc = st == HS_E_INVAL ? 2 : 1;
        goto done;
    }
    const int32_t nt = hs_backend_n_threads(hs_context_backend(ctx));
    toks = malloc((size_t)HS_MAX(n_prompt, 1) * sizeof(*toks));
    int32_t n_blocks =
        (hs_context_n_ctx(ctx) + hs_context_block_size(ctx) - 1) / hs_context_block_size(ctx);
    table = malloc((size_t)n_blocks * sizeof(*table));
    if (!toks || !table) {
        goto done;
    }
    for (int32_t i = 0; i < n_blocks; i++) {
        table[i] = i;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 42);
    for (int64_t i = 0; i < n_prompt; i++) {
        toks[i] = (hs_token)(hs_rng_next(&rng) % (uint64_t)hp->n_vocab);
    }
    printf("model: %s, %.2f MiB, %.2f M params (%.2f M active per token), %d threads\n",
           hs_model_desc(model), (double)hs_model_size_bytes(model) / (1 << 20),
           (double)hs_model_n_params(model) / 1e6, (double)hs_model_n_active_params(model) / 1e6,
           nt);
    printf("| test   |          t/s |\n|--------|--------------|\n");
    double *v = calloc((size_t)reps, sizeof(double));
    if (!v) {
        goto done;
    }
    double tg_mean = 0;
    double counted_per_tok = 0; /* weight bytes the backends counted per decoded token */
    for (int test = 0; test < 2; test++) {
        int64_t n = test == 0 ? n_prompt : n_gen;
        if (n == 0) {
            continue;
        }
        for (int64_t r = -1; r < reps; r++) { /* r == -1: warm-up */
            if (test == 1 && r == 0) {
                hs_context_reset_stats(ctx);
            }
            double t0 = now_s();
            if (test == 0) {
                struct hs_forward_seq fs = {toks, (int32_t)n, 0, table, 1, 0};
                st = hs_model_forward(ctx, &fs, 1);
            } else {
                hs_token t = 1;
                for (int32_t i = 0; i < n && st == HS_OK; i++) {
                    struct hs_forward_seq fs = {&t, 1, i, table, 1, 0};
                    st = hs_model_forward(ctx, &fs, 1);
                    t = (hs_token)((t * 31 + 7) % hp->n_vocab);
                }
            }
            if (st != HS_OK) {
                fprintf(stderr, "hetserve: forward pass failed: %s\n", hs_status_str(st));
                free(v);
                goto done;
            }
            if (r >= 0) {
                v[r] = (double)n / (now_s() - t0);
            }
        }
        double mean, sd;
        mean_std(v, (int)reps, &mean, &sd);
        printf("| %s%-4lld | %7.2f ± %-4.2f |\n", test == 0 ? "pp" : "tg", (long long)n, mean, sd);
        if (test == 1) {
            tg_mean = mean;
            struct hs_backend_stats bst;
            hs_context_get_stats(ctx, &bst);
            counted_per_tok = (double)bst.weight_bytes_read / (double)(n * reps);
        }
    }
    free(v);
    /* Peak RSS of the engine itself, before the bandwidth probe allocates its buffer. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double rss_mib = (double)ru.ru_maxrss / 1024.0;
    if (tg_mean > 0 && probes) {
        const double mib = 1 << 20;
        const double touched = touched_per_token(model, ctx, table, 0, 8);
        printf("weights per decoded token: %.2f MiB counted by the backends, ",
               counted_per_tok / mib);
        if (touched >= 0) {
            printf("%.2f MiB of the model file touched, ", touched / mib);
        } else {
            printf("pages touched unknown, ");
        }
        printf("%.2f MiB active (%.2f M params)\n", (double)hs_model_active_bytes(model) / mib,
               (double)hs_model_n_active_params(model) / 1e6);
        double bw = measure_bandwidth(nt);
        /* Bytes read per generated token: the weights it runs once, plus the mean KV read. */
        double kv_row = (double)hp->n_head_kv * hp->head_dim * (kv_type == HS_TYPE_F16 ? 2 : 4);
        double per_tok = (double)hs_model_active_bytes(model) +
                         2.0 * hp->n_layer_kv * kv_row * (double)n_gen / 2.0;
        double used = per_tok * tg_mean;
        printf("decode: %.2f GB/s of %.2f GB/s measured memory bandwidth (%.0f%%)\n", used / 1e9,
               bw / 1e9, 100.0 * used / bw);
    }
    printf("peak RSS: %.1f MiB (weights mmap'd: %.1f MiB, KV cache %.1f MiB)\n", rss_mib,
           (double)hs_model_size_bytes(model) / (1 << 20),
           (double)hs_context_kv_bytes(ctx) / (1 << 20));
    rc = 0;
done:
    free(toks);
    free(table);
    hs_context_destroy(ctx);
    hs_model_destroy(model);
    return rc;
}
