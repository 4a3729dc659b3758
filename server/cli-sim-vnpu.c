/* hetserve sim vnpu: vNPU's (arXiv 2506.11446) topology-mapping results on the simulated mesh
 * NPU, with the cost model the npu backend charges its attention with (backends/npu):
 *   1. the mapping example: two 3x3 virtual NPUs on a 5x5 chip, by the best-effort mapper, by
 *      zig-zag, by MIG-style fixed slices;
 *   2. mapping quality: the best-effort mapper against zig-zag, GPT-style decode attention on
 *      the tenants of a few arrival sequences;
 *   3. sharing: the best-effort mapper against MIG-style fixed slices on the same sequences.
 * Tenants arrive in order; every tenant that fits is placed and runs, the others wait for the
 * next round (when every running tenant has done its steps and left). The time to give every
 * tenant the same number of decode steps (the makespan) compares the policies. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/npu/npu.h"
#include "server/cli.h"

/* GPT-style models (GPT-2's published shapes; head dim 64, MHA, fp16 KV). */
static const struct gpt {
    const char *name;
    int32_t n_layer, n_head;
} gpts[] = {
    {"gpt2", 12, 12},
    {"gpt2-medium", 24, 16},
    {"gpt2-large", 36, 20},
    {"gpt2-xl", 48, 25},
};

struct scenario {
    const char *name;
    int32_t mesh_x, mesh_y; /* 0: the configured chip's */
    int32_t n;
    int32_t w[6], h[6];
};

/* Arrival sequences: the paper's example, then a few mixes on the whole chip. */
static const struct scenario scenarios[] = {
    {"5x5: 3x3, 3x3 (the example)", 5, 5, 2, {3, 3}, {3, 3}},
    {"3x3 alone", 0, 0, 1, {3}, {3}},
    {"4x4 alone", 0, 0, 1, {4}, {4}},
    {"3x3, 3x3, 3x3, 3x3", 0, 0, 4, {3, 3, 3, 3}, {3, 3, 3, 3}},
    {"4x2, 4x2, 2x2, 2x2", 0, 0, 4, {4, 4, 2, 2}, {2, 2, 2, 2}},
    {"2x2, 4x4, 2x3, 2x2", 0, 0, 4, {2, 4, 2, 2}, {2, 4, 3, 2}},
    {"2x5, 3x3, 3x3, 2x2", 0, 0, 4, {2, 3, 3, 2}, {5, 3, 3, 2}},
};

struct outcome {
    double makespan_s; /* every tenant one decode step, round after round */
    int32_t rounds;
    int32_t edit[6];  /* each tenant's edit distance */
    double step_s[6]; /* each tenant's step time */
};

/* Runs the scenario's tenants in rounds on a chip cfg with mapper how. */
static hs_status run_rounds(const struct hs_npu_config *cfg, const struct scenario *sc,
                            enum hs_npu_mapper how, const struct hs_npu_workload *w,
                            struct outcome *out)
{
    struct hs_npu_config c = *cfg;
    if (sc->mesh_x > 0) {
        c.mesh_x = sc->mesh_x;
        c.mesh_y = sc->mesh_y;
    }
    struct hs_npu_mesh *m = NULL;
    HS_TRY(hs_npu_mesh_create(&c, &m));
    memset(out, 0, sizeof(*out));
    bool done[6] = {false};
    int32_t left = sc->n;
    hs_status st = HS_OK;
    while (left > 0 && st == HS_OK) {
        int32_t ids[6], which[6], n = 0;
        for (int32_t i = 0; i < sc->n; i++) {
            if (!done[i] && hs_npu_tenant_create(m, sc->w[i], sc->h[i], how, &ids[n]) == HS_OK) {
                which[n++] = i;
            }
        }
        if (n == 0) {
            st = HS_E_BUSY; /* one never fits */
            break;
        }
        double slowest = 0.0;
        for (int32_t j = 0; j < n && st == HS_OK; j++) {
            struct hs_npu_cost cost;
            struct hs_npu_tenant_info ti;
            st = hs_npu_estimate_decode(m, ids[j], w, &cost);
            hs_npu_tenant_info(m, ids[j], &ti);
            out->edit[which[j]] = ti.edit_distance;
            out->step_s[which[j]] = cost.total_s;
            slowest = cost.total_s > slowest ? cost.total_s : slowest;
        }
        out->makespan_s += slowest;
        out->rounds++;
        for (int32_t j = 0; j < n; j++) {
            hs_npu_tenant_release(m, ids[j]);
            done[which[j]] = true;
            left--;
        }
    }
    hs_npu_mesh_destroy(m);
    return st;
}

static void print_map(const struct hs_npu_mesh *m)
{
    char buf[4096];
    hs_npu_mesh_draw(m, buf, sizeof(buf));
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        printf("      %s\n", line);
    }
}

/* Part 1: two 3x3 requests on a 5x5 chip, by each mapper. */
static int mapping_example(const struct hs_npu_config *cfg)
{
    struct hs_npu_config c = *cfg;
    c.mesh_x = c.mesh_y = 5;
    printf("1. The mapping example: two 3x3 virtual NPUs asked of a 5x5 chip\n");
    for (int how = 0; how < HS_NPU_MAPPER_COUNT; how++) {
        struct hs_npu_mesh *m = NULL;
        if (hs_npu_mesh_create(&c, &m) != HS_OK) {
            return 1;
        }
        static const char *const title[] = {"best-effort mapper", "zig-zag", "MIG-style slices"};
        printf("   %s:\n", title[how]);
        for (int i = 0; i < 2; i++) {
            int32_t id;
            const hs_status st = hs_npu_tenant_create(m, 3, 3, (enum hs_npu_mapper)how, &id);
            if (st != HS_OK) {
                printf("     %c: refused (%s): %s\n", 'A' + i, hs_status_str(st),
                       how == HS_NPU_MAPPER_MIG ? "no free slice holds a 3x3" : "no room");
                continue;
            }
            struct hs_npu_tenant_info ti;
            hs_npu_tenant_info(m, id, &ti);
            printf("     %c: placed, edit distance %d (%d of %d requested links kept), "
                   "dilation %d hops, %d pinned route entries\n",
                   'A' + id, (int)ti.edit_distance, (int)ti.edges_kept, 12, (int)ti.dilation,
                   (int)ti.n_pinned);
        }
        print_map(m);
        hs_npu_mesh_destroy(m);
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hetserve sim vnpu [options]\n"
            "\n"
            "Reproduces vNPU's topology-mapping results (arXiv 2506.11446) on the simulated\n"
            "mesh NPU, with the cost model the npu backend charges attention with: the mapping\n"
            "example (two 3x3 tenants on a 5x5 chip), the best-effort mapper against zig-zag,\n"
            "and against MIG-style fixed slices, on GPT-style decode attention.\n"
            "\n"
            "  --config FILE     the chip (key = value; default: vNPU's 6x6 preset); the example\n"
            "                    runs on it cut to 5x5\n"
            "  --link-bytes N    override the links' width in bytes per cycle\n"
            "  --model NAME      gpt2, gpt2-medium, gpt2-large or gpt2-xl (default gpt2)\n"
            "  --batch N         decoding sequences per tenant (default 8)\n"
            "  --ctx N           tokens of context of each (default 256: the KV stays in SRAM)\n"
            "  -h, --help        this help\n");
}

int hs__cli_sim_vnpu(int argc, char **argv)
{
    enum { OPT_CONFIG = 256, OPT_LINK, OPT_MODEL, OPT_BATCH, OPT_CTX };
    static const struct option opts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"link-bytes", required_argument, NULL, OPT_LINK},
        {"model", required_argument, NULL, OPT_MODEL},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct hs_npu_config cfg;
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &cfg);
    const struct gpt *model = &gpts[0];
    int64_t batch = 8, ctx = 256, link = 0;
    struct hs_error err = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG:
            if (hs_npu_config_load(&cfg, optarg, &err) != HS_OK) {
                fprintf(stderr, "hetserve sim vnpu: --config: %s\n", err.message);
                return 2;
            }
            break;
        case OPT_LINK:
            if (!hs__cli_parse_int("--link-bytes", optarg, 1, 4096, &link)) {
                return 2;
            }
            break;
        case OPT_MODEL:
            model = NULL;
            for (size_t i = 0; i < sizeof(gpts) / sizeof(gpts[0]); i++) {
                if (!strcmp(optarg, gpts[i].name)) {
                    model = &gpts[i];
                }
            }
            if (!model) {
                fprintf(stderr,
                        "hetserve sim vnpu: --model must be gpt2, gpt2-medium, "
                        "gpt2-large or gpt2-xl, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_BATCH:
            if (!hs__cli_parse_int("--batch", optarg, 1, 1024, &batch)) {
                return 2;
            }
            break;
        case OPT_CTX:
            if (!hs__cli_parse_int("--ctx", optarg, 1, 1 << 20, &ctx)) {
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "hetserve sim vnpu: unknown or incomplete option '%s'; see --help\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hetserve sim vnpu: unexpected argument '%s'; see --help\n", argv[optind]);
        return 2;
    }
    if (link > 0) {
        cfg.link_bytes = (int32_t)link;
    }
    int32_t *n_ctx = malloc((size_t)batch * sizeof(*n_ctx));
    if (!n_ctx) {
        return 1;
    }
    for (int64_t i = 0; i < batch; i++) {
        n_ctx[i] = (int32_t)ctx;
    }
    const struct hs_npu_workload w = {.n_layer = model->n_layer,
                                      .n_head = model->n_head,
                                      .n_kv_head = model->n_head,
                                      .head_dim = 64,
                                      .kv_elem_bytes = 2,
                                      .block_size = 16,
                                      .n_seqs = (int32_t)batch,
                                      .n_ctx = n_ctx};
    printf("hetserve sim vnpu: vNPU's topology mapping on the simulated mesh NPU\n"
           "chip: %s preset%s, %dx%d cores at %g MHz, %g MiB SRAM and a %dx%d matrix unit "
           "each,\n      %d-byte links, %d cycle(s) a hop, %g GB/s off chip\n"
           "workload per tenant: %s decode attention (%d layers, %d heads of 64, fp16 KV), "
           "%lld sequences x %lld tokens\n\n",
           cfg.preset, link > 0 ? " (links overridden)" : "", (int)cfg.mesh_x, (int)cfg.mesh_y,
           cfg.clock_hz / 1e6, (double)cfg.sram_bytes / (1 << 20), (int)cfg.systolic,
           (int)cfg.systolic, (int)cfg.link_bytes, (int)cfg.hop_cycles,
           cfg.offchip_bytes_per_s / 1e9, model->name, (int)model->n_layer, (int)model->n_head,
           (long long)batch, (long long)ctx);
    int rc = mapping_example(&cfg);

    const size_t n_sc = sizeof(scenarios) / sizeof(scenarios[0]);
    struct outcome *res = calloc(n_sc * HS_NPU_MAPPER_COUNT, sizeof(*res));
    hs_status sts[sizeof(scenarios) / sizeof(scenarios[0])][HS_NPU_MAPPER_COUNT];
    if (!res) {
        free(n_ctx);
        return 1;
    }
    for (size_t s = 0; s < n_sc && rc == 0; s++) {
        for (int how = 0; how < HS_NPU_MAPPER_COUNT; how++) {
            sts[s][how] = run_rounds(&cfg, &scenarios[s], (enum hs_npu_mapper)how, &w,
                                     &res[s * HS_NPU_MAPPER_COUNT + how]);
            if (sts[s][how] != HS_OK && sts[s][how] != HS_E_BUSY) {
                fprintf(stderr, "hetserve sim vnpu: %s: %s\n", scenarios[s].name,
                        hs_status_str(sts[s][how]));
                rc = 1;
            }
        }
    }
    if (rc == 0) {
        printf("\n2. Mapping quality: the best-effort mapper against zig-zag\n"
               "   (time for every tenant to take one decode step; tenants that do not fit wait "
               "for the next round)\n"
               "   %-30s %10s %10s %8s   %s\n",
               "tenants, in arrival order", "best ms", "zig-zag ms", "speed-up",
               "edit distances best / zig-zag");
        double lo = 1e9, hi = 0;
        for (size_t s = 0; s < n_sc; s++) {
            const struct outcome *b = &res[s * HS_NPU_MAPPER_COUNT + HS_NPU_MAPPER_BEST];
            const struct outcome *z = &res[s * HS_NPU_MAPPER_COUNT + HS_NPU_MAPPER_ZIGZAG];
            const double sp = z->makespan_s / b->makespan_s;
            lo = sp < lo ? sp : lo;
            hi = sp > hi ? sp : hi;
            printf("   %-30s %10.4f %10.4f %7.2fx  ", scenarios[s].name, b->makespan_s * 1e3,
                   z->makespan_s * 1e3, sp);
            for (int32_t i = 0; i < scenarios[s].n; i++) {
                printf(" %d/%d", (int)b->edit[i], (int)z->edit[i]);
            }
            printf("\n");
        }
        printf("   best-effort vs zig-zag: %+.0f%% to %+.0f%% (vNPU: +6%% to +40%%)\n",
               (lo - 1) * 100, (hi - 1) * 100);
        printf("\n3. Sharing: the best-effort mapper (vNPU) against MIG-style fixed slices\n"
               "   %-30s %10s %10s %8s   %s\n",
               "tenants, in arrival order", "vNPU ms", "MIG ms", "speed-up", "rounds vNPU / MIG");
        hi = 0;
        for (size_t s = 0; s < n_sc; s++) {
            const struct outcome *b = &res[s * HS_NPU_MAPPER_COUNT + HS_NPU_MAPPER_BEST];
            const struct outcome *g = &res[s * HS_NPU_MAPPER_COUNT + HS_NPU_MAPPER_MIG];
            if (sts[s][HS_NPU_MAPPER_MIG] != HS_OK) {
                printf("   %-30s %10.4f %10s %8s   (a tenant fits no MIG slice)\n",
                       scenarios[s].name, b->makespan_s * 1e3, "-", "-");
                continue;
            }
            const double sp = g->makespan_s / b->makespan_s;
            hi = sp > hi ? sp : hi;
            printf("   %-30s %10.4f %10.4f %7.2fx   %d / %d\n", scenarios[s].name,
                   b->makespan_s * 1e3, g->makespan_s * 1e3, sp, (int)b->rounds, (int)g->rounds);
        }
        printf("   vNPU vs MIG-style: up to %.2fx (vNPU: up to 1.92x for GPT-style models)\n", hi);
    }
    free(res);
    free(n_ctx);
    return rc;
}
