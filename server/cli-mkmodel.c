/* hetserve mkmodel: write a random-weight model. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/mkproj.h"
#include "model/model.h"
#include "server/cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: hetserve mkmodel -o FILE [options]\n"
               "\n"
               "Writes a GGUF model with random weights and a synthetic SentencePiece vocabulary,\n"
               "loadable by hetserve and llama.cpp. Its text is gibberish by construction.\n"
               "\n"
               "  -o, --output FILE     where to write (required)\n"
               "      --preset NAME     tiny (dim 64, 2 layers; default), smollm-135m\n"
               "                        (dim 576, 30 layers, 9/3 heads, ffn 1536, vocab 49152),\n"
               "                        qwen2moe-bench (dim 256, 4 layers, 8 experts / 4 used of\n"
               "                        ffn 512, shared expert 512, vocab 4096, q8_0) or\n"
               "                        hunyuan-large-tiny (dim 128, 4 layers, K/V shared by\n"
               "                        pairs of layers, 16 experts / top-1, shared MLP, f32)\n"
               "      --arch A          llama (default), qwen2, qwen3, qwen2moe, qwen3moe, olmoe,\n"
               "                        hunyuan-moe, hunyuan-large or qwen2vl (M-RoPE)\n"
               "      --type T          f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1,\n"
               "                        q4_K (the types llama-quantize's Q4_K_M picks), q5_K\n"
               "                        or q6_K (default: f32; smollm-135m: q8_0)\n"
               "      --dim N --layers N --heads N --kv-heads N --ffn N --vocab N --ctx N\n"
               "                        override the preset's shape\n"
               "      --tied            tie the output projection to the embeddings\n"
               "      --image-tokens    end the vocabulary with SmolVLM's image tokens\n"
               "                        (<fake_token_around_image>, <global-img>, \"\\n\\n\"),\n"
               "                        for an idefics3 projector\n"
               "\n"
               "Mixture of experts (the *moe and hunyuan architectures; llama takes them too):\n"
               "      --experts N       experts per layer\n"
               "      --experts-used K  experts each token runs (top-k)\n"
               "      --ffn-exp N       rows of each expert (default: --ffn)\n"
               "      --ffn-shexp N     width of the shared expert (qwen2moe, hunyuan-*)\n"
               "      --gating G        softmax, sigmoid or softmax_weight (written as\n"
               "                        expert_gating_func; default: the architecture's)\n"
               "      --weights-norm B  0 or 1: renormalise the chosen experts' weights\n"
               "      --weights-scale F multiply the weights by F\n"
               "      --cla N           hunyuan-large: N layers share one layer's K/V\n"
               "      --seed N          weights' random seed (default 1)\n"
               "\n"
               "Multimodal projector (an mmproj file for --mmproj, llama.cpp's clip layout):\n"
               "      --projector P     write a projector instead: qwen2vl, qwen25vl or idefics3\n"
               "                        (vision dim 64, 2 layers, 4 heads, ffn 128, patch 14,\n"
               "                        image 56); --dim N is the language model's width\n"
               "      --vision-dim N --vision-layers N --vision-heads N --vision-ffn N\n"
               "      --image-size N --patch-size N --merge N --type f32|f16 --seed N\n"
               "      --wa-pattern N    qwen25vl: every N-th layer attends fully, the others in\n"
               "                        112-pixel windows (default 2)\n"
               "      --longest-edge N  idefics3: scale an image's longer side to N before\n"
               "                        cutting it into tiles (preproc_image_size; default 0:\n"
               "                        not written, sides rounded to whole tiles)\n");
}

/* hetserve mkmodel --projector P: the projector writer's own options. */
static int mkproj_main(int argc, char **argv, const char *type)
{
    const enum hs_proj_type t = hs_proj_type_from_str(type);
    if (t == HS_PROJ_COUNT) {
        fprintf(stderr, "hetserve: unknown --projector '%s' (qwen2vl, qwen25vl, idefics3)\n", type);
        return 2;
    }
    struct hs_mkproj_params p = hs_mkproj_default_params(t);
    const char *out = NULL;
    int64_t v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hetserve mkmodel: option '%s' needs a value; see --help\n", a);
            return 2;
        }
        const char *val = argv[++i];
        int32_t *field = NULL;
        int64_t lo = 1;
        int64_t hi = 1 << 16;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out = val;
        } else if (!strcmp(a, "--projector")) {
        } else if (!strcmp(a, "--type")) {
            if (!strcasecmp(val, "f32") || !strcasecmp(val, "f16")) {
                p.wtype = !strcasecmp(val, "f32") ? HS_TYPE_F32 : HS_TYPE_F16;
            } else {
                fprintf(stderr, "hetserve: projector --type is f32 or f16\n");
                return 2;
            }
        } else if (!strcmp(a, "--seed")) {
            if (!hs__cli_parse_int("--seed", val, 0, INT64_MAX, &v)) {
                return 2;
            }
            p.seed = (uint64_t)v;
        } else if (!strcmp(a, "--dim")) {
            field = &p.proj_dim;
        } else if (!strcmp(a, "--vision-dim")) {
            field = &p.n_embd;
        } else if (!strcmp(a, "--vision-layers")) {
            field = &p.n_layer;
        } else if (!strcmp(a, "--vision-heads")) {
            field = &p.n_head;
        } else if (!strcmp(a, "--vision-ffn")) {
            field = &p.n_ff;
        } else if (!strcmp(a, "--image-size")) {
            field = &p.image_size;
        } else if (!strcmp(a, "--patch-size")) {
            field = &p.patch_size;
        } else if (!strcmp(a, "--longest-edge")) {
            field = &p.longest_edge;
            lo = 0;
        } else if (!strcmp(a, "--merge")) {
            field = &p.n_merge;
            hi = 8;
        } else if (!strcmp(a, "--wa-pattern")) {
            field = &p.n_wa_pattern;
            hi = 256;
        } else {
            fprintf(stderr, "hetserve mkmodel: option '%s' does not apply to --projector\n", a);
            return 2;
        }
        if (field) {
            if (!hs__cli_parse_int(a, val, lo, hi, &v)) {
                return 2;
            }
            *field = (int32_t)v;
        }
    }
    if (!out) {
        fprintf(stderr, "hetserve mkmodel: -o FILE is required; see --help\n");
        return 2;
    }
    struct hs_error err = {0};
    if (hs_mkproj_write(&p, out, &err) != HS_OK) {
        fprintf(stderr, "hetserve: mkmodel --projector: %s\n", err.message);
        return 1;
    }
    fprintf(stderr, "hetserve: wrote %s (%s projector, vision dim %d, %d layers, to dim %d)\n", out,
            hs_proj_type_str(p.type), p.n_embd, p.n_layer, p.proj_dim);
    return 0;
}

int hs__cli_mkmodel(int argc, char **argv)
{
    enum {
        O_PRESET = 256,
        O_ARCH,
        O_TYPE,
        O_DIM,
        O_LAYERS,
        O_HEADS,
        O_KV,
        O_FFN,
        O_VOCAB,
        O_CTX,
        O_TIED,
        O_IMAGE_TOKENS,
        O_SEED,
        O_EXPERTS,
        O_USED,
        O_FFN_EXP,
        O_FFN_SH,
        O_GATING,
        O_NORM,
        O_SCALE,
        O_CLA
    };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},
        {"preset", required_argument, 0, O_PRESET},
        {"arch", required_argument, 0, O_ARCH},
        {"type", required_argument, 0, O_TYPE},
        {"dim", required_argument, 0, O_DIM},
        {"layers", required_argument, 0, O_LAYERS},
        {"heads", required_argument, 0, O_HEADS},
        {"kv-heads", required_argument, 0, O_KV},
        {"ffn", required_argument, 0, O_FFN},
        {"vocab", required_argument, 0, O_VOCAB},
        {"ctx", required_argument, 0, O_CTX},
        {"tied", no_argument, 0, O_TIED},
        {"image-tokens", no_argument, 0, O_IMAGE_TOKENS},
        {"seed", required_argument, 0, O_SEED},
        {"help", no_argument, 0, 'h'},
        {"experts", required_argument, 0, O_EXPERTS},
        {"experts-used", required_argument, 0, O_USED},
        {"ffn-exp", required_argument, 0, O_FFN_EXP},
        {"ffn-shexp", required_argument, 0, O_FFN_SH},
        {"gating", required_argument, 0, O_GATING},
        {"weights-norm", required_argument, 0, O_NORM},
        {"weights-scale", required_argument, 0, O_SCALE},
        {"cla", required_argument, 0, O_CLA},
        {0, 0, 0, 0},
    };
    /* Two passes: the preset first, so explicit flags override it wherever they appear. */
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--projector")) {
            return mkproj_main(argc, argv, argv[i + 1]);
        }
    }
    struct hs_mkmodel_params p = hs_mkmodel_default_params();
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--preset")) {
            if (!strcmp(argv[i + 1], "smollm-135m")) {
                p = hs_mkmodel_smollm_params();
            } else if (!strcmp(argv[i + 1], "qwen2moe-bench")) {
                p = hs_mkmodel_qwen2moe_params();
            } else if (!strcmp(argv[i + 1], "hunyuan-large-tiny")) {
                p = hs_mkmodel_hunyuan_large_params();
            } else if (strcmp(argv[i + 1], "tiny")) {
                fprintf(stderr,
                        "hetserve: unknown --preset '%s' (tiny, smollm-135m, qwen2moe-bench, "
                        "hunyuan-large-tiny)\n",
                        argv[i + 1]);
                return 2;
            }
        }
    }
    const char *out = NULL;
    int64_t v;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case O_PRESET:
            break;
        case O_ARCH: {
            const enum hs_arch a = hs_arch_from_str(optarg);
            if (a == HS_ARCH_COUNT) {
                fprintf(stderr, "hetserve: unknown --arch '%s'; see --help\n", optarg);
                return 2;
            }
            p.arch = a;
            break;
        }
        case O_TYPE: {
            int t = 0;
            while (t < HS_TYPE_COUNT && !(hs_type_traits((enum hs_type)t)->supported &&
                                          !strcasecmp(optarg, hs_type_str((enum hs_type)t)))) {
                t++;
            }
            if (t == HS_TYPE_COUNT) {
                fprintf(stderr, "hetserve: unknown --type '%s'; see --help\n", optarg);
                return 2;
            }
            p.wtype = (enum hs_type)t;
            break;
        }
#define INT_FLAG(code, name, field, lo, hi)                                                        \
    case code:                                                                                     \
        if (!hs__cli_parse_int(name, optarg, lo, hi, &v)) {                                        \
            return 2;                                                                              \
        }                                                                                          \
        p.field = (int32_t)v;                                                                      \
        break;
            INT_FLAG(O_DIM, "--dim", n_embd, 2, 1 << 16)
            INT_FLAG(O_LAYERS, "--layers", n_layer, 1, 1024)
            INT_FLAG(O_HEADS, "--heads", n_head, 1, 1024)
            INT_FLAG(O_KV, "--kv-heads", n_head_kv, 1, 1024)
            INT_FLAG(O_FFN, "--ffn", n_ff, 1, 1 << 18)
            INT_FLAG(O_VOCAB, "--vocab", n_vocab, 300, 1 << 20)
            INT_FLAG(O_CTX, "--ctx", n_ctx, 1, 1 << 24)
            INT_FLAG(O_EXPERTS, "--experts", n_expert, 1, HS_MOE_MAX_EXPERTS)
            INT_FLAG(O_USED, "--experts-used", n_expert_used, 1, HS_MOE_MAX_USED)
            INT_FLAG(O_FFN_EXP, "--ffn-exp", n_ff_exp, 1, 1 << 18)
            INT_FLAG(O_FFN_SH, "--ffn-shexp", n_ff_shexp, 1, 1 << 18)
            INT_FLAG(O_NORM, "--weights-norm", weights_norm, 0, 1)
            INT_FLAG(O_CLA, "--cla", cla_share, 1, 1024)
#undef INT_FLAG
        case O_GATING: {
            int g = HS_MOE_GATING_SOFTMAX;
            while (g < HS_MOE_GATING_COUNT && strcmp(optarg, hs_moe_gating_str(g))) {
                g++;
            }
            if (g == HS_MOE_GATING_COUNT) {
                fprintf(stderr,
                        "hetserve: unknown --gating '%s' (softmax, sigmoid, softmax_weight)\n",
                        optarg);
                return 2;
            }
            p.gating = g;
            break;
        }
        case O_SCALE: {
            char *end = NULL;
            const double f = strtod(optarg, &end);
            if (end == optarg || *end || !(f > 0.0) || f > 1e6) {
                fprintf(stderr, "hetserve: --weights-scale '%s' must be a positive number\n",
                        optarg);
                return 2;
            }
            p.weights_scale = (float)f;
            break;
        }
        case O_TIED:
            p.tied_output = true;
            break;
        case O_IMAGE_TOKENS:
            p.image_tokens = true;
            break;
        case O_SEED:
            if (!hs__cli_parse_int("--seed", optarg, 0, INT64_MAX, &v)) {
                return 2;
            }
            p.seed = (uint64_t)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "hetserve mkmodel: unknown or incomplete option '%s'; see --help\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (!out || optind < argc) {
        fprintf(stderr, "hetserve mkmodel: -o FILE is required; see --help\n");
        return 2;
    }
    struct hs_error err = {0};
    hs_status st = hs_mkmodel_write(&p, out, &err);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve: mkmodel: %s\n", err.message);
        return st == HS_E_INVAL ? 2 : 1;
    }
    fprintf(stderr, "hetserve: wrote %s (%s, dim %d, %d layers, %s)\n", out, hs_arch_str(p.arch),
            p.n_embd, p.n_layer, hs_type_str(p.wtype));
    return 0;
}
