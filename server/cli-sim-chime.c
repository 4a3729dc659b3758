/* hetserve sim chime: CHIME's end-to-end comparison from the analytic system model
 * (backends/pim/pim-system.h) beside the paper's values, the sensitivity of the table to the
 * parameter the paper leaves out, and the capacity / bandwidth scaling study. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/pim/pim-system.h"
#include "server/cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: hetserve sim chime [options]\n"
               "\n"
               "Reproduces CHIME's (L3's) end-to-end comparison with an analytic model of each\n"
               "system: throughput normalised to GPU-only for GPT-175B, QWEN-72B and OPT-66B on\n"
               "the OpenR1, OpenThoughts, Dolphin and Dolphin-short traces (1,000 requests with\n"
               "the traces' published length statistics), for GPU, HBM-PIM, HBM-PIM-EXT, CPU\n"
               "offload, R-PIM and CHIME, beside the paper's values; then the table's\n"
               "sensitivity to the KV reserved at admission and to the split, and the\n"
               "capacity / bandwidth scaling study.\n"
               "\n"
               "      --json             one JSON object per cell:\n"
               "                         {\"trace\",\"model\",\"system\",\"ours\",\"paper\"}\n"
               "      --detail           where each cell's time goes: decode batch, FC and\n"
               "                         attention time per step, attention not hidden,\n"
               "                         prefill and drain shares\n"
               "      --reserve R        share of a request's output KV reserved when it is\n"
               "                         admitted, 0..1 (default 1: the whole final length)\n"
               "      --requests N       requests per run (default 1000)\n"
               "      --runs N           independent runs (samples of the lengths), pooled as\n"
               "                         total tokens over total time (default 4)\n"
               "      --seed N           seed of the request lengths (default 1)\n"
               "      --pim-config FILE  CHIME's DIMMs (pim-timing.h's format; default Table I)\n"
               "      --split MODE       how attention beside the GPUs overlaps the FC layers:\n"
               "                         shorter (default: two sub-batches taking turns, or the\n"
               "                         whole batch when that is shorter), always (every\n"
               "                         step in two sub-batches), attacc (head by head with\n"
               "                         the QKV and output projections, FFN after) or hidden\n"
               "                         (behind all FC layers, one weight read)\n"
               "      --gpu-gqa MODE     how GPU-side attention reads a GQA model's KV: shared\n"
               "                         (default: each KV head once) or per-query-head (as\n"
               "                         AttAcc's simulator models attention)\n"
               "  -h, --help             this help\n");
}

static const char *split_name(int k)
{
    return hs_sim_split_str((enum hs_sim_split)k);
}

static const char *gqa_name(int k)
{
    return hs_sim_gqa_str((enum hs_sim_gqa)k);
}

/* The k in [0, n) whose name(k) is arg, or -1 after one line on stderr naming the choices. */
static int parse_choice(const char *flag, const char *arg, const char *(*name)(int), int n)
{
    for (int k = 0; k < n; k++) {
        if (!strcmp(arg, name(k))) {
            return k;
        }
    }
    fprintf(stderr, "hetserve sim: %s must be one of", flag);
    for (int k = 0; k < n; k++) {
        fprintf(stderr, "%s %s", k ? "," : "", name(k));
    }
    fprintf(stderr, ", not '%s'\n", arg);
    return -1;
}

static const double sensitivity[] = {1.0, 0.75, 0.5, 0.25, 0.0};

static void print_json_num(const char *key, double v)
{
    if (isnan(v)) {
        printf(",\"%s\":null", key);
    } else {
        printf(",\"%s\":%.4f", key, v);
    }
}

/* Cells of the aim, and how many are within +-15% (off cells counted apart). */
static void aim_count(const struct hs_sim_cell *cells, int *n_aim, int *n_in, int *n_off)
{
    *n_aim = *n_in = *n_off = 0;
    for (int i = 0; i < HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT * HS_SIM_SYSTEM_COUNT; i++) {
        const struct hs_sim_cell *c = &cells[i];
        if (!hs_sim_in_aim(c->trace, c->model, c->system)) {
            continue;
        }
        (*n_aim)++;
        if (hs_sim_off_reason(c->trace, c->model, c->system)) {
            (*n_off)++;
        } else if (!isnan(c->ours) && fabs(c->ours / c->paper - 1.0) <= 0.15) {
            (*n_in)++;
        }
    }
}

static int print_table(const struct hs_sim_cell *cells, const struct hs_sim_params *p)
{
    printf("CHIME end-to-end throughput, normalised to GPU-only (OPT-66B on OpenR1 and "
           "OpenThoughts: to CHIME), ours / paper; reserve = %.2f\n\n",
           p->reserve);
    printf("%-14s %-9s", "trace", "model");
    for (int s = 0; s < HS_SIM_SYSTEM_COUNT; s++) {
        printf(" %15s", hs_sim_system_str((enum hs_sim_system)s));
    }
    printf("\n");
    for (int t = 0; t < HS_SIM_TRACE_COUNT; t++) {
        for (int m = 0; m < HS_SIM_MODEL_COUNT; m++) {
            const struct hs_sim_cell *row =
                cells + (t * HS_SIM_MODEL_COUNT + m) * HS_SIM_SYSTEM_COUNT;
            printf("%-14s %-9s", hs_sim_trace_str((enum hs_sim_trace)t),
                   hs_sim_model_str((enum hs_sim_model)m));
            for (int s = 0; s < HS_SIM_SYSTEM_COUNT; s++) {
                char a[16], b[16];
                snprintf(a, sizeof(a),
                         row[s].raw.oom       ? "oom"
                         : isnan(row[s].ours) ? "n/a"
                                              : "%.2f",
                         row[s].ours);
                snprintf(b, sizeof(b), isnan(row[s].paper) ? "-" : "%.2f", row[s].paper);
                const bool off = hs_sim_in_aim(row[s].trace, row[s].model, row[s].system) &&
                                 hs_sim_off_reason(row[s].trace, row[s].model, row[s].system);
                printf(" %6s / %5s%s", a, b, off ? "*" : " ");
            }
            printf("\n");
        }
    }
    int n_aim, n_in, n_off;
    aim_count(cells, &n_aim, &n_in, &n_off);
    printf("\nCHIME and R-PIM cells within +-15%% of the paper: %d of %d (%d off, marked *):\n",
           n_in, n_aim - n_off, n_off);
    for (int i = 0; i < HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT * HS_SIM_SYSTEM_COUNT; i++) {
        const struct hs_sim_cell *c = &cells[i];
        const char *why = hs_sim_in_aim(c->trace, c->model, c->system)
                              ? hs_sim_off_reason(c->trace, c->model, c->system)
                              : NULL;
        if (why) {
            printf("  * %s %s %s: %s\n", hs_sim_trace_str(c->trace), hs_sim_model_str(c->model),
                   hs_sim_system_str(c->system), why);
        }
    }
    return n_in == n_aim - n_off ? 0 : 1;
}

/* One row of a sensitivity table: the table under q (into alt), its OpenR1 GPT-175B CHIME and
 * R-PIM cells, how many cells of the aim are within +-15%, the median and worst error. */
static bool sensitivity_row(const struct hs_sim_params *q, struct hs_sim_cell *alt,
                            const char *label)
{
    const int n_cells = HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT * HS_SIM_SYSTEM_COUNT;
    if (hs_sim_table(q, alt) != HS_OK) {
        return false;
    }
    double errs[64];
    int n_err = 0, n_in = 0;
    for (int i = 0; i < n_cells; i++) {
        const struct hs_sim_cell *c = &alt[i];
        if (!hs_sim_in_aim(c->trace, c->model, c->system)) {
            continue;
        }
        if (isnan(c->ours)) {
            continue; /* out of memory, or its base is */
        }
        const double e = fabs(c->ours / c->paper - 1.0);
        errs[n_err++] = e;
        n_in += e <= 0.15;
    }
    for (int i = 1; i < n_err; i++) { /* insertion sort */
        for (int j = i; j > 0 && errs[j - 1] > errs[j]; j--) {
            const double x = errs[j];
            errs[j] = errs[j - 1];
            errs[j - 1] = x;
        }
    }
    const struct hs_sim_cell *r =
        &alt[(HS_SIM_OPENR1 * HS_SIM_MODEL_COUNT + HS_SIM_GPT_175B) * HS_SIM_SYSTEM_COUNT];
    printf("  %14s %17.2f %9.2f %6d/%-2d %8.0f%% %8.0f%%\n", label, r[HS_SIM_CHIME].ours,
           r[HS_SIM_RPIM].ours, n_in, n_err, 100 * errs[n_err / 2], 100 * errs[n_err - 1]);
    return true;
}

/* Where each cell's time goes: the bounds its steps overlap (FC layers of the whole batch and
 * its attention, each alone, per step), the batch capacity allowed, and the shares of the time
 * that are attention not hidden, prefill, and the drain after the last admission. */
static void print_detail(const struct hs_sim_cell *cells)
{
    printf("%-14s %-9s %-12s %13s %7s %7s %9s %9s %6s %8s %6s\n", "trace", "model", "system",
           "ours / paper", "batch", "max", "FC ms", "attn ms", "attn", "prefill", "drain");
    for (int i = 0; i < HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT * HS_SIM_SYSTEM_COUNT; i++) {
        const struct hs_sim_cell *c = &cells[i];
        const struct hs_sim_result *r = &c->raw;
        char v[24];
        snprintf(v, sizeof(v), r->oom ? "oom / %.2f" : "%.2f / %.2f", r->oom ? c->paper : c->ours,
                 c->paper);
        printf("%-14s %-9s %-12s %13s %7.1f %7.0f %9.2f %9.2f %5.0f%% %7.0f%% %5.0f%%%s\n",
               hs_sim_trace_str(c->trace), hs_sim_model_str(c->model), hs_sim_system_str(c->system),
               v, r->mean_batch, r->max_batch, 1e3 * r->mean_fc_s, 1e3 * r->mean_attn_s,
               100 * r->attn_share, 100 * r->prefill_share, 100 * r->tail_share,
               hs_sim_in_aim(c->trace, c->model, c->system)
                   ? (!isnan(c->ours) && fabs(c->ours / c->paper - 1.0) <= 0.15 ? "  in" : "  OFF")
                   : "");
    }
}

static void print_point(const char *name, const struct hs_sim_scaling_point *pt)
{
    printf("    %-13s %6.0f GiB %6.2f TB/s %7.1f %14.0f%%\n", name,
           pt->capacity_bytes / 1073741824.0, pt->bytes_per_s * 1e-12, pt->r.mean_batch,
           100 * pt->r.attn_share);
}

/* The scaling study, what the paper's own figures say of its base, and the study's sensitivity
 * to the base and to splitting every step. */
static void print_scaling(const struct hs_sim_params *p)
{
    struct hs_sim_scaling sc;
    if (hs_sim_scaling(p, HS_SIM_SCALING_BASE_RANKSETS, &sc) != HS_OK) {
        return;
    }
    printf("\nScaling (GPT-175B, OpenR1, CHIME, split %s), from 512 GiB over Table I's 64 ranks "
           "(DRAMsim3's\nDDR4_8Gb_x8 chips: 8 GiB ranks), ours / paper:\n",
           hs_sim_split_str(p->split));
    printf("  capacity x8 alone  %5.2fx / %.2fx\n", sc.capacity_x8, HS_SIM_PAPER_CAPACITY_X8);
    printf("  bandwidth x8 alone %5.2fx / %.2fx\n", sc.bandwidth_x8, HS_SIM_PAPER_BANDWIDTH_X8);
    printf("  both x8            %5.2fx / %.2fx\n", sc.both_x8, HS_SIM_PAPER_BOTH_X8);
    printf("    %-13s %10s %11s %7s %15s\n", "", "capacity", "bandwidth", "batch",
           "attn not hidden");
    print_point("base", &sc.base);
    print_point("capacity x8", &sc.capacity);
    print_point("bandwidth x8", &sc.bandwidth);
    print_point("both x8", &sc.both);

    struct hs_sim_scaling_bounds b;
    hs_sim_scaling_bounds(&b);
    printf("  The paper's figures, whatever the model: Fig. 11's CHIME / R-PIM (2.95 / 0.39) is "
           "nearly their\n"
           "  bandwidth ratio, so at 2 TB attention takes >= %.2f of the FC time; capacity x8 "
           "alone at %.2fx\n"
           "  allows <= %.2f at the base; so the base has >= %.2fx the bandwidth per byte of a "
           "quarter of the\n"
           "  2 TB (one rankset of 32 GiB ranks). Sensitivity to the base (the same 512 GiB over "
           "n ranksets)\n"
           "  and to the split:\n",
           b.full_attn_over_fc_min, HS_SIM_PAPER_CAPACITY_X8, b.base_attn_over_fc_max,
           b.base_bw_factor_min);
    printf("  %8s %11s %8s %12s %13s %8s\n", "ranksets", "bandwidth", "split", "capacity x8",
           "bandwidth x8", "both x8");
    static const int32_t spreads[] = {1, 2, 4};
    for (size_t i = 0; i < HS_ARRAY_LEN(spreads); i++) {
        for (int s = 0; s < HS_SIM_SPLIT_COUNT; s++) {
            struct hs_sim_params q = *p;
            q.split = (enum hs_sim_split)s;
            if (hs_sim_scaling(&q, spreads[i], &sc) != HS_OK) {
                return;
            }
            const bool def = spreads[i] == HS_SIM_SCALING_BASE_RANKSETS && q.split == p->split;
            printf("  %8d %6.2f TB/s %8s %11.2fx %12.2fx %7.2fx%s\n", spreads[i],
                   sc.base.bytes_per_s * 1e-12, hs_sim_split_str(q.split), sc.capacity_x8,
                   sc.bandwidth_x8, sc.both_x8,
                   def               ? "  (above)"
                   : spreads[i] == 1 ? "  (HARDWARE.md's \"1 rankset\")"
                                     : "");
        }
    }
    printf("  %8s %11s %8s %11.2fx %12.2fx %7.2fx\n", "paper", "", "", HS_SIM_PAPER_CAPACITY_X8,
           HS_SIM_PAPER_BANDWIDTH_X8, HS_SIM_PAPER_BOTH_X8);
}

static int run_chime(const struct hs_sim_params *p, bool json, bool detail)
{
    const int n_cells = HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT * HS_SIM_SYSTEM_COUNT;
    struct hs_sim_cell *cells = calloc((size_t)n_cells, sizeof(*cells));
    if (!cells) {
        return 1;
    }
    hs_status st = hs_sim_table(p, cells);
    if (st != HS_OK) {
        fprintf(stderr, "hetserve sim: %s\n", hs_status_str(st));
        free(cells);
        return 1;
    }
    if (detail) {
        print_detail(cells);
        free(cells);
        return 0;
    }
    if (json) {
        for (int i = 0; i < n_cells; i++) {
            const struct hs_sim_cell *c = &cells[i];
            printf("{\"trace\":\"%s\",\"model\":\"%s\",\"system\":\"%s\"",
                   hs_sim_trace_str(c->trace), hs_sim_model_str(c->model),
                   hs_sim_system_str(c->system));
            print_json_num("ours", c->ours);
            print_json_num("paper", c->paper);
            printf("}\n");
        }
        free(cells);
        return 0;
    }
    print_table(cells, p);

    /* Sensitivity to the parameter the paper leaves out, and to the split. */
    struct hs_sim_cell *alt = calloc((size_t)n_cells, sizeof(*alt));
    printf("\nSensitivity to the KV reserved at admission (share of the output; 1 = the whole "
           "final length, 0 = paged, preempting):\n");
    printf("  %14s %27s %9s %9s %9s\n", "reserve", "OpenR1 GPT-175B CHIME R-PIM", "in aim",
           "median", "worst");
    for (size_t k = 0; alt && k < HS_ARRAY_LEN(sensitivity); k++) {
        struct hs_sim_params q = *p;
        q.reserve = sensitivity[k];
        char label[16];
        snprintf(label, sizeof(label), "%.2f", sensitivity[k]);
        if (!sensitivity_row(&q, alt, label)) {
            break;
        }
    }
    printf("  (paper: 2.95 and 0.39; \"in aim\" counts every CHIME and R-PIM cell with a value, "
           "off ones included; median and worst |ours / paper - 1| over them)\n");
    printf("\nSensitivity to the split (reserve %.2f; see the scaling study below):\n", p->reserve);
    printf("  %14s %27s %9s %9s %9s\n", "split", "OpenR1 GPT-175B CHIME R-PIM", "in aim", "median",
           "worst");
    for (int s = 0; alt && s < HS_SIM_SPLIT_COUNT; s++) {
        struct hs_sim_params q = *p;
        q.split = (enum hs_sim_split)s;
        if (!sensitivity_row(&q, alt, hs_sim_split_str(q.split))) {
            break;
        }
    }
    printf("\nSensitivity to how GPU-side attention reads GQA-8's KV (QWEN-72B's rows only):\n");
    printf("  %14s %27s %9s %9s %9s\n", "gpu-gqa", "OpenR1 GPT-175B CHIME R-PIM", "in aim",
           "median", "worst");
    for (int g = 0; alt && g < HS_SIM_GQA_COUNT; g++) {
        struct hs_sim_params q = *p;
        q.gpu_gqa = (enum hs_sim_gqa)g;
        if (!sensitivity_row(&q, alt, hs_sim_gqa_str(q.gpu_gqa))) {
            break;
        }
    }
    free(alt);

    print_scaling(p);
    free(cells);
    return 0;
}

int hs__cli_sim_chime(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"detail", no_argument, NULL, 'd'},
        {"gpu-gqa", required_argument, NULL, 'g'},
        {"reserve", required_argument, NULL, 'r'},
        {"requests", required_argument, NULL, 'n'},
        {"runs", required_argument, NULL, 'u'},
        {"seed", required_argument, NULL, 's'},
        {"pim-config", required_argument, NULL, 'c'},
        {"split", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct hs_sim_params p = hs_sim_default_params();
    struct hs_pim_config chime;
    bool json = false, detail = false;
    int64_t iv;
    double fv;
    int c, k;
    optind = 1; /* argv[0] is "chime" */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 'd':
            detail = true;
            break;
        case 'g':
            if ((k = parse_choice("--gpu-gqa", optarg, gqa_name, HS_SIM_GQA_COUNT)) < 0) {
                return 2;
            }
            p.gpu_gqa = (enum hs_sim_gqa)k;
            break;
        case 'r':
            if (!hs__cli_parse_float("--reserve", optarg, 0.0, 1.0, &fv)) {
                return 2;
            }
            p.reserve = fv;
            break;
        case 'n':
            if (!hs__cli_parse_int("--requests", optarg, 1, 100000, &iv)) {
                return 2;
            }
            p.n_requests = (int32_t)iv;
            break;
        case 'u':
            if (!hs__cli_parse_int("--runs", optarg, 1, 1000, &iv)) {
                return 2;
            }
            p.n_runs = (int32_t)iv;
            break;
        case 's':
            if (!hs__cli_parse_int("--seed", optarg, 0, INT64_MAX, &iv)) {
                return 2;
            }
            p.seed = (uint64_t)iv;
            break;
        case 'c': {
            struct hs_error err = {0};
            if (hs_pim_config_load(optarg, &chime, &err) != HS_OK) {
                fprintf(stderr, "hetserve: --pim-config: %s\n", err.message);
                return 2;
            }
            p.chime = &chime;
            break;
        }
        case 'p':
            if ((k = parse_choice("--split", optarg, split_name, HS_SIM_SPLIT_COUNT)) < 0) {
                return 2;
            }
            p.split = (enum hs_sim_split)k;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "hetserve sim: unknown or incomplete option '%s'; see --help\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hetserve sim: unexpected argument '%s'; see --help\n", argv[optind]);
        return 2;
    }
    return run_chime(&p, json, detail);
}
