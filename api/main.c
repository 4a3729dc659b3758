/* hetserve: command line. Subcommands serve (api/), generate, bench, mkmodel and sim
 * (server/). The only place that prints to stdout, exits, and parses flags. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hs-config.h"
#include "api/cli-serve.h"
#include "server/cli.h"

static void usage_main(FILE *f)
{
    fprintf(f,
            "hetserve %s - an LLM inference server for GGUF models\n"
            "\n"
            "usage: hetserve COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  serve      serve a model over an OpenAI-compatible HTTP API\n"
            "  generate   generate text from a prompt (streams to stdout)\n"
            "  bench      measure prompt processing (pp) and generation (tg) speed\n"
            "  mkmodel    write a random-weight GGUF model of a chosen shape and type\n"
            "  sim        simulator reproductions of the papers behind the simulated backends\n"
            "             ('sim chime': CHIME's attention systems; 'sim vnpu': vNPU's mapping)\n"
            "\n"
            "Run 'hetserve COMMAND --help' for the options of a command.\n"
            "Models: any GGUF file of architecture llama, qwen2, qwen3, qwen2moe, qwen3moe,\n"
            "olmoe, hunyuan-moe or hunyuan-large with weights in f32, f16, bf16, q8_0, q4_0,\n"
            "q4_1, q5_0, q5_1, q4_K, q5_K or q6_K.\n"
            "\n"
            "environment (CPU engine):\n"
            "  HS_MMAP=1              keep model files mmap'd (4 KiB pages of the page cache)\n"
            "                         instead of reading files of 8 MiB or more into 2 MiB\n"
            "                         huge pages (faster decode)\n"
            "  HS_CPU_ISA=avx2|scalar cap the CPU kernels below what the CPU has\n"
            "  HS_CPU_AVXVNNI=0       AVX2 kernels without AVX-VNNI even where the CPU has it\n"
            "  HS_CPU_HINT_KB=N       KiB of the next product's weights an idle CPU worker\n"
            "                         prefetches (default 128; 0: none)\n"
            "  HS_CPU_REPACK=0        no repacked copy of Q4_0 and Q5_0 weights\n"
            "                         (less memory; slower prompt processing and decode)\n"
            "  HS_CPU_GEMM_ORDER=ggml Q4_K prompt logits in llama.cpp's order (not batch-\n"
            "                         invariant)\n"
            "  HS_ONEDNN=1            F32/F16/BF16 products of 64+ rows through oneDNN (not\n"
            "                         batch-invariant)\n"
            "  HS_PROFILE=1           per-op CPU timings, logged when the engine stops\n",
            HS_VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage_main(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("hetserve %s\n", HS_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "serve")) {
        return hs__cli_serve(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "generate")) {
        return hs__cli_generate(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "bench")) {
        return hs__cli_bench(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "mkmodel")) {
        return hs__cli_mkmodel(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "sim")) {
        return hs__cli_sim(argc - 1, argv + 1);
    }
    fprintf(stderr, "hetserve: unknown command '%s'; run 'hetserve --help' for the list\n", cmd);
    return 2;
}
