/* hetserve generate: stream a completion of a prompt, or print per-step log-probabilities; one
 * request through the engine (server/engine.h), so every engine flag works here as in serve. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/cli.h"
#include "server/engine.h"
#include "server/sampling.h"

#define MAX_STOPS 8

static void usage(FILE *f)
{
    fprintf(
        f, "usage: hetserve generate -m MODEL -p TEXT [options]\n"
           "\n"
           "  -m, --model FILE          GGUF model to run (required)\n"
           "  -p, --prompt TEXT         prompt text (required)\n"
           "  -n, --n-predict N         tokens to generate (default 128)\n"
           "  -c, --ctx N               context length (default: the model's, at most 4096)\n"
           "  -t, --threads N           compute threads of the FFN backend (default: physical\n"
           "                            cores, less --attn-threads)\n"
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
           "      --stop TEXT           stop when TEXT is generated (repeatable, never printed;\n"
           "                            not with --logprobs, which shows every step)\n"
           "      --ignore-eos          keep going past end-of-generation tokens\n"
           "      --logprobs K          print one JSON line per step (token id, text, bytes,\n"
           "                            top-K natural-log probabilities, K <= 100) instead of the\n"
           "                            text, the step that ends the generation included\n"
           "      --kv-type f16|f32     KV cache element type (default f16)\n"
           "      --expert-placement RULES\n"
           "                            MoE models: REGEX=BACKEND[:N] rules placing experts\n"
           "                            (see hetserve serve --help)\n");
    hs__cli_split_usage(f, 28);
    fprintf(f, "\nThe generation runs as one request of the engine that serve runs.\n");
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (1-4), or 0 when it is malformed or cut
 * short (overlong forms, surrogates and code points past U+10FFFF are malformed). */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xc2 && c <= 0xdf ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f)) {
        return 0;
    }
    return len;
}

/* Writes s[0..n) as a JSON string that is always valid UTF-8: a byte that does not start a
 * well-formed sequence (a token holding part of a character) becomes U+FFFD, as OpenAI's
 * logprobs text does; the exact bytes go out separately (print_json_bytes). */
static void print_json_string(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    putchar('"');
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        size_t len = utf8_seq_len(u + i, n - i);
        if (len == 0) {
            fputs("\ufffd", stdout);
            i++;
            continue;
        }
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c == '\n') {
            fputs("\\n", stdout);
        } else if (c == '\t') {
            fputs("\\t", stdout);
        } else if (c == '\r') {
            fputs("\\r", stdout);
        } else if (c < 0x20 || c == 0x7f) {
            printf("\\u%04x", c);
        } else {
            fwrite(u + i, 1, len, stdout);
        }
        i += len;
    }
    putchar('"');
}

/* Writes s[0..n) as a JSON array of byte values (OpenAI's logprobs "bytes"). */
static void print_json_bytes(const char *s, size_t n)
{
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        printf("%s%u", i ? "," : "", (unsigned)(unsigned char)s[i]);
    }
    putchar(']');
}

/* ---- one engine request ---- */

struct gen_opts {
    const char *model;
    const char *prompt;
    int64_t n_predict;
    int64_t logprobs;
    bool ignore_eos;
    const char *stops[MAX_STOPS];
    int n_stops;
    struct hs_engine_params ep;
    struct hs_sampling_params sp;
    struct hs_logit_bias bias[64];
};

/* One JSON line per token of a DELTA: step, id, the token's own text and the top alternatives. */
static void print_logprob_lines(const struct hs_vocab *vocab, const struct hs_engine_event *ev,
                                int64_t *step)
{
    char piece[512];
    for (int32_t i = 0; i < ev->n_tokens; i++) {
        const hs_token t = ev->tokens[i];
        const struct hs_token_logprob *lp = &ev->logprobs[i];
        size_t n = hs_vocab_piece(vocab, t, false, piece, sizeof(piece));
        printf("{\"step\":%lld,\"token\":%d,\"text\":", (long long)(*step)++, t);
        print_json_string(piece, HS_MIN(n, sizeof(piece)));
        printf(",\"bytes\":");
        print_json_bytes(piece, HS_MIN(n, sizeof(piece)));
        printf(",\"top\":[");
        for (int32_t k = 0; k < lp->n_top; k++) {
            printf("%s{\"token\":%d,\"logprob\":%.9g}", k ? "," : "", lp->top_ids[k],
                   (double)lp->top_logprobs[k]);
        }
        printf("]}\n");
    }
}

/* Streams the request's events to stdout: the text as it comes (never split inside a character:
 * the engine holds incomplete ones back), or the --logprobs lines. Returns the DONE status. */
static hs_status stream(struct hs_engine_handle *h, const struct hs_vocab *vocab, bool logprobs)
{
    struct hs_engine_event ev;
    int64_t step = 0;
    hs_status st;
    while ((st = hs_engine_wait(h, &ev, -1)) == HS_OK && ev.type == HS_EVENT_DELTA) {
        if (logprobs) {
            print_logprob_lines(vocab, &ev, &step);
        } else {
            fwrite(ev.text, 1, ev.n_text, stdout);
        }
        fflush(stdout);
    }
    return st != HS_OK ? st : ev.status;
}

/* With a simulated attention backend: the hardware time it charged, and the steps' time on the
 * timeline (real FFN stages, simulated attention), to stderr after the output. */
static void report_simulated(const struct hs_engine *eng)
{
    struct hs_engine_metrics mt;
    hs_engine_get_metrics(eng, &mt);
    for (int32_t b = 0; b < mt.n_backends; b++) {
        if (mt.backends[b].sim_s > 0) {
            fprintf(stderr,
                    "hetserve: attention backend %s: %.3f ms simulated; the steps' layers take "
                    "%.3f ms on the timeline (FFN real, attention simulated) against %.3f ms "
                    "measured\n",
                    mt.backends[b].name, mt.backends[b].sim_s * 1e3, mt.split.timeline_s * 1e3,
                    mt.split.wall_s * 1e3);
        }
    }
}

static int run(struct gen_opts *o)
{
    int rc = 1;
    struct hs_error err = {0};
    struct hs_model *model = NULL;
    struct hs_engine *eng = NULL;
    struct hs_engine_handle *h = NULL;
    hs_token *toks = NULL;

    hs_status st = hs_model_load(o->model, &model, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: cannot load model '%s': %s\n", o->model, err.message);
        return st == HS_E_NOMEM ? 1 : 2;
    }
    const struct hs_model_hparams *hp = hs_model_hparams(model);
    const struct hs_vocab *vocab = hs_model_vocab(model);

    o->ep.n_parallel = 1;
    if (o->ep.n_ctx <= 0) {
        o->ep.n_ctx = HS_MIN(hp->n_ctx_train, 4096);
    }
    if (o->ep.n_ctx > hp->n_ctx_train) {
        fprintf(stderr, "hetserve: warning: --ctx %d exceeds the model's trained context %d\n",
                o->ep.n_ctx, hp->n_ctx_train);
    }
    st = hs_engine_create(model, &o->ep, &eng, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: cannot create a context: %s\n", err.message);
        rc = st == HS_E_INVAL ? 2 : 1;
        goto done;
    }
    const int32_t n_ctx = hs_engine_n_ctx(eng);

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
    if (o->n_predict > 0) { /* -n 0: nothing to generate, an empty line */
        struct hs_engine_request r;
        hs_engine_request_init(&r);
        r.prompt = toks;
        r.n_prompt = (int32_t)n_prompt;
        r.max_tokens = (int32_t)o->n_predict;
        r.sampling = o->sp;
        r.ignore_eos = o->ignore_eos;
        r.logprobs = o->logprobs > 0;
        r.top_logprobs = (int32_t)o->logprobs;
        r.report_eos = r.logprobs; /* a line for the step that ended it too */
        /* --stop cuts the text; --logprobs lines show every step (as they always did) */
        r.stop = r.logprobs ? NULL : o->stops;
        r.n_stop = r.logprobs ? 0 : o->n_stops;
        st = hs_engine_submit(eng, &r, &h, &err);
        if (st != HS_OK) {
            fprintf(stderr, "hetserve: %s\n", err.message);
            rc = st == HS_E_INVAL ? 2 : 1;
            goto done;
        }
        st = stream(h, vocab, r.logprobs);
        if (st != HS_OK) {
            fprintf(stderr, "hetserve: forward pass failed: %s\n", hs_status_str(st));
            goto done;
        }
    }
    if (o->logprobs == 0) {
        putchar('\n');
    }
    report_simulated(eng);
    rc = 0;
done:
    hs_engine_release(h);
    hs_engine_destroy(eng);
    free(toks);
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
        HS__CLI_SPLIT_OPTIONS,
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static struct gen_opts o;
    memset(&o, 0, sizeof(o));
    o.n_predict = 128;
    o.ep = hs_engine_default_params();
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
            if (!hs__cli_parse_int("--ctx", optarg, 1, 1 << 24, &iv)) {
                return 2;
            }
            o.ep.n_ctx = (int32_t)iv;
            break;
        case 't':
            if (!hs__cli_parse_int("--threads", optarg, 1, 1024, &iv)) {
                return 2;
            }
            o.ep.n_threads = (int32_t)iv;
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
            if (o.n_stops == MAX_STOPS || optarg[0] == '\0') {
                fprintf(stderr, "hetserve: --stop takes a non-empty text, at most %d times\n",
                        MAX_STOPS);
                return 2;
            }
            o.stops[o.n_stops++] = optarg;
            break;
        case OPT_IGNORE_EOS:
            o.ignore_eos = true;
            break;
        case OPT_EXPERTS:
            o.ep.expert_placement = optarg;
            break;
        case OPT_LOGPROBS:
            if (!hs__cli_parse_int("--logprobs", optarg, 1, 100, &o.logprobs)) {
                return 2;
            }
            break;
        case OPT_KV_TYPE:
            if (!strcmp(optarg, "f16")) {
                o.ep.kv_type = HS_TYPE_F16;
            } else if (!strcmp(optarg, "f32")) {
                o.ep.kv_type = HS_TYPE_F32;
            } else {
                fprintf(stderr, "hetserve: --kv-type must be f16 or f32, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            if (hs__cli_parse_split(c, optarg, &o.ep, "generate", argv[optind - 1]) <= 0) {
                return 2;
            }
            break;
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
    if (!hs__cli_split_check("generate", &o.ep)) {
        return 2;
    }
    return run(&o);
}
