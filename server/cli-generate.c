/* hetserve generate: stream a completion of a prompt, or print per-step log-probabilities. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/pim/pim-timing.h"
#include "model/model.h"
#include "model/vocab.h"
#include "server/cli.h"
#include "server/sampling.h"

#define MAX_STOPS 8

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hetserve generate -m MODEL -p TEXT [options]\n"
            "\n"
            "  -m, --model FILE          GGUF model to run (required)\n"
            "  -p, --prompt TEXT         prompt text (required)\n"
            "  -n, --n-predict N         tokens to generate (default 128)\n"
            "  -c, --ctx N               context length (default: the model's, at most 4096)\n"
            "  -t, --threads N           compute threads (default: physical cores)\n"
            "      --temp T              temperature; 0 = greedy (default 0.8)\n"
            "      --top-k K             keep the K most likely tokens; 0 = off (default 40)\n"
            "      --top-p P             nucleus sampling; 1 = off (default 0.95)\n"
            "      --min-p P             drop tokens below P x the best; 0 = off (default 0.05)\n"
            "      --repeat-penalty R    penalise recent tokens; 1 = off (default 1)\n"
            "      --presence-penalty X  OpenAI presence penalty (default 0)\n"
            "      --frequency-penalty X OpenAI frequency penalty (default 0)\n"
            "      --repeat-last-n N     window of the penalties; -1 = all (default 64)\n"
            "      --logit-bias ID=B     add B to token ID's logit (repeatable; B may be -inf)\n"
            "  -s, --seed N              random seed; the same seed gives the same text\n"
            "      --stop TEXT           stop when TEXT is generated (repeatable, never printed)\n"
            "      --ignore-eos          keep going past end-of-generation tokens\n"
            "      --logprobs K          print one JSON line per step (token id, text, top-K\n"
            "                            natural-log probabilities) instead of the text\n"
            "      --kv-type f16|f32     KV cache element type (default f16)\n"
            "      --attn-backend NAME   split: decode attention on a backend of its own (e.g.\n"
            "                            pim, the simulated DIMM-PIM), with its own KV pool and\n"
            "                            --attn-threads N threads (default 1); the simulated time\n"
            "                            it charged goes to stderr at the end\n"
            "      --attn-threads N      threads of the attention backend (split)\n"
            "      --pim-config FILE     the simulated DIMM-PIM's hardware (see hetserve serve\n"
            "                            --help)\n"
            "      --expert-placement RULES\n"
            "                            MoE models: REGEX=BACKEND[:N] rules placing experts\n"
            "                            (see hetserve serve --help)\n");
}

/* ---- output: stop strings are held back until they can no longer match ---- */

struct out_state {
    const char *stops[MAX_STOPS];
    int n_stops;
    char *buf; /* generated text not yet printed */
    size_t len, cap;
    bool stopped;
};

static bool out_append(struct out_state *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            return false;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
    return true;
}

/* Prints what can no longer be part of a stop string; sets stopped on a full match. */
static void out_flush(struct out_state *o, bool final)
{
    size_t safe = o->len;
    for (int i = 0; i < o->n_stops; i++) {
        const char *hit = strstr(o->buf, o->stops[i]);
        if (hit) {
            o->stopped = true;
            safe = HS_MIN(safe, (size_t)(hit - o->buf));
        }
    }
    if (!o->stopped && !final) {
        /* Hold back the longest suffix that is a prefix of some stop string. */
        for (int i = 0; i < o->n_stops; i++) {
            size_t sl = strlen(o->stops[i]);
            for (size_t k = HS_MIN(sl - 1, o->len); k > 0; k--) {
                if (!memcmp(o->buf + o->len - k, o->stops[i], k)) {
                    safe = HS_MIN(safe, o->len - k);
                    break;
                }
            }
        }
    }
    fwrite(o->buf, 1, safe, stdout);
    fflush(stdout);
    memmove(o->buf, o->buf + safe, o->len - safe);
    o->len -= safe;
    o->buf[o->len] = '\0';
}

static void print_json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c == '\n') {
            fputs("\\n", stdout);
        } else if (c == '\t') {
            fputs("\\t", stdout);
        } else if (c == '\r') {
            fputs("\\r", stdout);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

/* ---- the generation loop ---- */

struct gen_opts {
    const char *model;
    const char *prompt;
    int64_t n_predict;
    int64_t n_ctx;
    int64_t n_threads;
    int64_t logprobs;
    bool ignore_eos;
    const char *expert_placement;
    const char *attn_backend;
    int64_t attn_threads;
    const char *backend_config;
    enum hs_type kv_type;
    struct hs_sampling_params sp;
    struct hs_logit_bias bias[64];
    struct out_state out;
};

static int run(struct gen_opts *o)
{
    int rc = 1;
    struct hs_error err = {0};
    struct hs_model *model = NULL;
    struct hs_context *ctx = NULL;
    struct hs_sampler *smp = NULL;
    hs_token *toks = NULL;
    int32_t *table = NULL;
    float *lp = NULL;
    hs_token *lp_ids = NULL;

    hs_status st = hs_model_load(o->model, &model, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: cannot load model '%s': %s\n", o->model, err.message);
        return st == HS_E_NOMEM ? 1 : 2;
    }
    const struct hs_model_hparams *hp = hs_model_hparams(model);
    const struct hs_vocab *vocab = hs_model_vocab(model);

    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = o->n_ctx > 0 ? (int32_t)o->n_ctx : HS_MIN(hp->n_ctx_train, 4096);
    cp.kv_type = o->kv_type;
    cp.backend_params.n_threads = (int32_t)o->n_threads;
    cp.expert_placement = o->expert_placement;
    cp.attn_backend = o->attn_backend;
    cp.attn_threads = (int32_t)o->attn_threads;
    cp.backend_params.config = o->backend_config;
    if (cp.n_ctx > hp->n_ctx_train) {
        fprintf(stderr, "hetserve: warning: --ctx %d exceeds the model's trained context %d\n",
                cp.n_ctx, hp->n_ctx_train);
    }
    st = hs_context_create(model, &cp, &ctx, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: cannot create a context: %s\n", err.message);
        rc = st == HS_E_INVAL ? 2 : 1;
        goto done;
    }
    const int32_t n_ctx = hs_context_n_ctx(ctx);
    /* Split: the sequence's KV lives in the attention backend's store (the last). */
    const int32_t store = hs_context_n_stores(ctx) - 1;

    size_t plen = strlen(o->prompt), n_prompt = 0;
    size_t cap = plen + 16;
    toks = malloc(cap * sizeof(*toks));
    if (!toks) {
        goto done;
    }
    st = hs_tokenize(vocab, o->prompt, plen, true, true, toks, cap, &n_prompt);
    if (st != HS_OK || n_prompt == 0) {
        fprintf(stderr, "hetserve: the prompt gives no tokens\n");
        rc = 2;
        goto done;
    }
    if ((int64_t)n_prompt + o->n_predict > n_ctx) {
        fprintf(stderr,
                "hetserve: the prompt (%zu tokens) plus -n %lld exceeds the context of %d tokens; "
                "use a shorter prompt, a smaller -n or a larger --ctx\n",
                n_prompt, (long long)o->n_predict, n_ctx);
        rc = 2;
        goto done;
    }
    if (hs_sampling_params_check(&o->sp, hp->n_vocab, &err) != HS_OK) {
        fprintf(stderr, "hetserve: %s\n", err.message);
        rc = 2;
        goto done;
    }
    if (hs_sampler_create(&o->sp, hp->n_vocab, &smp) != HS_OK) {
        goto done;
    }
    const int32_t bs = hs_context_block_size(ctx);
    const int32_t n_blocks = (n_ctx + bs - 1) / bs;
    table = malloc((size_t)n_blocks * sizeof(*table));
    lp = malloc((size_t)(o->logprobs + 1) * sizeof(*lp));
    lp_ids = malloc((size_t)(o->logprobs + 1) * sizeof(*lp_ids));
    if (!table || !lp || !lp_ids) {
        goto done;
    }
    for (int32_t i = 0; i < n_blocks; i++) {
        table[i] = i;
    }
    for (size_t i = 0; i < n_prompt; i++) {
        hs_sampler_accept(smp, toks[i]);
    }

    /* Prompt, in chunks of the batch size. */
    const int32_t n_batch = hs_context_n_batch(ctx);
    int32_t n_past = 0;
    while ((size_t)n_past < n_prompt) {
        int32_t n = (int32_t)HS_MIN((size_t)n_batch, n_prompt - (size_t)n_past);
        struct hs_forward_seq fs = {toks + n_past, n, n_past, table,
                                    (size_t)(n_past + n) == n_prompt ? 1 : 0, store};
        if ((st = hs_model_forward(ctx, &fs, 1)) != HS_OK) {
            fprintf(stderr, "hetserve: forward pass failed: %s\n", hs_status_str(st));
            goto done;
        }
        n_past += n;
    }

    struct hs_detok dt;
    hs_detok_init(&dt, vocab, false);
    char piece[512];
    for (int64_t step = 0; step < o->n_predict; step++) {
        const float *logits = hs_context_logits(ctx);
        hs_token t = hs_sampler_sample(smp, logits);
        if (o->logprobs > 0) {
            int32_t k =
                hs_logprobs_top_k(logits, hp->n_vocab, (int32_t)o->logprobs, lp_ids, lp, t, NULL);
            size_t n = hs_vocab_piece(vocab, t, false, piece, sizeof(piece));
            printf("{\"step\":%lld,\"token\":%d,\"text\":", (long long)step, t);
            print_json_string(piece, HS_MIN(n, sizeof(piece)));
            printf(",\"top\":[");
            for (int32_t i = 0; i < k; i++) {
                printf("%s{\"token\":%d,\"logprob\":%.9g}", i ? "," : "", lp_ids[i], (double)lp[i]);
            }
            printf("]}\n");
            fflush(stdout);
        }
        if (!o->ignore_eos && hs_vocab_is_eog(vocab, t)) {
            break;
        }
        hs_sampler_accept(smp, t);
        if (o->logprobs == 0) {
            size_t n = hs_detok_push(&dt, t, piece, sizeof(piece));
            if (!out_append(&o->out, piece, n)) {
                goto done;
            }
            out_flush(&o->out, false);
            if (o->out.stopped) {
                break;
            }
        }
        if (step + 1 == o->n_predict) {
            break;
        }
        struct hs_forward_seq fs = {&t, 1, n_past, table, 1, store};
        if ((st = hs_model_forward(ctx, &fs, 1)) != HS_OK) {
            fprintf(stderr, "hetserve: forward pass failed: %s\n", hs_status_str(st));
            goto done;
        }
        n_past++;
    }
    if (o->logprobs == 0) {
        if (!o->out.stopped) {
            size_t n = hs_detok_flush(&dt, piece, sizeof(piece));
            out_append(&o->out, piece, n);
        }
        out_flush(&o->out, true);
        putchar('\n');
    }
    if (store > 0) {
        struct hs_backend_stats as;
        hs_backend_get_stats(hs_context_attn_backend(ctx), &as);
        if (as.sim_time_s > 0.0) {
            fprintf(stderr, "hetserve: attention backend %s: %.3f ms simulated\n",
                    hs_backend_name(hs_context_attn_backend(ctx)), as.sim_time_s * 1e3);
        }
    }
    rc = 0;
done:
    free(toks);
    free(table);
    free(lp);
    free(lp_ids);
    hs_sampler_destroy(smp);
    hs_context_destroy(ctx);
    hs_model_destroy(model);
    return rc;
}

enum {
    OPT_TEMP = 256,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_REPEAT,
    OPT_PRESENCE,
    OPT_FREQUENCY,
    OPT_LAST_N,
    OPT_BIAS,
    OPT_STOP,
    OPT_IGNORE_EOS,
    OPT_LOGPROBS,
    OPT_KV_TYPE,
    OPT_EXPERTS,
    OPT_ATTN_BE,
    OPT_ATTN_THREADS,
    OPT_PIM_CONFIG,
};

int hs__cli_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"prompt", required_argument, 0, 'p'},
        {"expert-placement", required_argument, 0, OPT_EXPERTS},
        {"override-tensor", required_argument, 0, OPT_EXPERTS},
        {"n-predict", required_argument, 0, 'n'},
        {"ctx", required_argument, 0, 'c'},
        {"threads", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},
        {"temp", required_argument, 0, OPT_TEMP},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"min-p", required_argument, 0, OPT_MIN_P},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT},
        {"presence-penalty", required_argument, 0, OPT_PRESENCE},
        {"frequency-penalty", required_argument, 0, OPT_FREQUENCY},
        {"repeat-last-n", required_argument, 0, OPT_LAST_N},
        {"logit-bias", required_argument, 0, OPT_BIAS},
        {"stop", required_argument, 0, OPT_STOP},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"logprobs", required_argument, 0, OPT_LOGPROBS},
        {"kv-type", required_argument, 0, OPT_KV_TYPE},
        {"attn-backend", required_argument, 0, OPT_ATTN_BE},
        {"attn-threads", required_argument, 0, OPT_ATTN_THREADS},
        {"pim-config", required_argument, 0, OPT_PIM_CONFIG},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static struct gen_opts o;
    memset(&o, 0, sizeof(o));
    o.n_predict = 128;
    o.kv_type = HS_TYPE_F16;
    o.sp = hs_sampling_default_params();
    int64_t iv;
    double fv;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:p:n:c:t:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.model = optarg;
            break;
        case 'p':
            o.prompt = optarg;
            break;
        case 'n':
            if (!hs__cli_parse_int("-n", optarg, 0, 1 << 24, &o.n_predict)) {
                return 2;
            }
            break;
        case 'c':
            if (!hs__cli_parse_int("--ctx", optarg, 1, 1 << 24, &o.n_ctx)) {
                return 2;
            }
            break;
        case 't':
            if (!hs__cli_parse_int("--threads", optarg, 1, 1024, &o.n_threads)) {
                return 2;
            }
            break;
        case 's':
            if (!hs__cli_parse_int("--seed", optarg, 0, INT64_MAX, &iv)) {
                return 2;
            }
            o.sp.seed = (uint64_t)iv;
            break;
        case OPT_TEMP:
            if (!hs__cli_parse_float("--temp", optarg, 0, 100, &fv)) {
                return 2;
            }
            o.sp.temperature = (float)fv;
            break;
        case OPT_TOP_K:
            if (!hs__cli_parse_int("--top-k", optarg, 0, INT32_MAX, &iv)) {
                return 2;
            }
            o.sp.top_k = (int32_t)iv;
            break;
        case OPT_TOP_P:
            if (!hs__cli_parse_float("--top-p", optarg, 1e-9, 1, &fv)) {
                return 2;
            }
            o.sp.top_p = (float)fv;
            break;
        case OPT_MIN_P:
            if (!hs__cli_parse_float("--min-p", optarg, 0, 1, &fv)) {
                return 2;
            }
            o.sp.min_p = (float)fv;
            break;
        case OPT_REPEAT:
            if (!hs__cli_parse_float("--repeat-penalty", optarg, 1e-6, 100, &fv)) {
                return 2;
            }
            o.sp.repetition_penalty = (float)fv;
            break;
        case OPT_PRESENCE:
            if (!hs__cli_parse_float("--presence-penalty", optarg, -2, 2, &fv)) {
                return 2;
            }
            o.sp.presence_penalty = (float)fv;
            break;
        case OPT_FREQUENCY:
            if (!hs__cli_parse_float("--frequency-penalty", optarg, -2, 2, &fv)) {
                return 2;
            }
            o.sp.frequency_penalty = (float)fv;
            break;
        case OPT_LAST_N:
            if (!hs__cli_parse_int("--repeat-last-n", optarg, -1, INT32_MAX, &iv)) {
                return 2;
            }
            o.sp.penalty_last_n = (int32_t)iv;
            break;
        case OPT_BIAS: {
            if (o.sp.n_logit_bias >= (int32_t)HS_ARRAY_LEN(o.bias)) {
                fprintf(stderr, "hetserve: at most %zu --logit-bias flags\n", HS_ARRAY_LEN(o.bias));
                return 2;
            }
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "hetserve: --logit-bias wants ID=BIAS, got '%s'\n", optarg);
                return 2;
            }
            *eq = '\0';
            struct hs_logit_bias *b = &o.bias[o.sp.n_logit_bias];
            if (!hs__cli_parse_int("--logit-bias id", optarg, 0, INT32_MAX, &iv)) {
                return 2;
            }
            b->token = (hs_token)iv;
            if (!strcmp(eq + 1, "-inf")) {
                b->bias = -INFINITY;
            } else if (!hs__cli_parse_float("--logit-bias value", eq + 1, -100, 100, &fv)) {
                return 2;
            } else {
                b->bias = (float)fv;
            }
            o.sp.n_logit_bias++;
            o.sp.logit_bias = o.bias;
            break;
        }
        case OPT_STOP:
            if (o.out.n_stops == MAX_STOPS || optarg[0] == '\0') {
                fprintf(stderr, "hetserve: --stop takes a non-empty text, at most %d times\n",
                        MAX_STOPS);
                return 2;
            }
            o.out.stops[o.out.n_stops++] = optarg;
            break;
        case OPT_IGNORE_EOS:
            o.ignore_eos = true;
            break;
        case OPT_EXPERTS:
            o.expert_placement = optarg;
            break;
        case OPT_ATTN_BE:
            o.attn_backend = optarg;
            break;
        case OPT_ATTN_THREADS:
            if (!hs__cli_parse_int("--attn-threads", optarg, 1, 1024, &o.attn_threads)) {
                return 2;
            }
            break;
        case OPT_PIM_CONFIG: {
            struct hs_pim_config pc;
            struct hs_error perr = {0};
            if (hs_pim_config_load(optarg, &pc, &perr) != HS_OK) {
                fprintf(stderr, "hetserve: --pim-config: %s\n", perr.message);
                return 2;
            }
            o.backend_config = optarg;
            break;
        }
        case OPT_LOGPROBS:
            if (!hs__cli_parse_int("--logprobs", optarg, 1, 100, &o.logprobs)) {
                return 2;
            }
            break;
        case OPT_KV_TYPE:
            if (!strcmp(optarg, "f16")) {
                o.kv_type = HS_TYPE_F16;
            } else if (!strcmp(optarg, "f32")) {
                o.kv_type = HS_TYPE_F32;
            } else {
                fprintf(stderr, "hetserve: --kv-type must be f16 or f32, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "hetserve generate: unknown or incomplete option '%s'; see --help\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hetserve generate: unexpected argument '%s'; see --help\n", argv[optind]);
        return 2;
    }
    if (!o.model || !o.prompt) {
        fprintf(stderr, "hetserve generate: -m MODEL and -p TEXT are required; see --help\n");
        return 2;
    }
    int rc = run(&o);
    free(o.out.buf);
    return rc;
}

bool hs__cli_parse_int(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "hetserve: %s wants an integer in [%lld, %lld], got '%s'\n", flag,
                (long long)lo, (long long)hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool hs__cli_parse_float(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "hetserve: %s wants a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}
