/* hetserve sim chime: the analytic reproduction of CHIME's comparison. --json gives one object
 * per cell that parses; every CHIME and R-PIM cell is within +-15% of the paper unless it is
 * declared off (with its reason), and every declared-off cell is indeed off, so the list stays
 * true; the model's trends (the reservation the paper leaves out, the scaling study). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "backends/pim/pim-system.h"

static int find(const char *name, const char *(*str)(int), int n)
{
    for (int i = 0; i < n; i++) {
        if (!strcmp(name, str(i))) {
            return i;
        }
    }
    return -1;
}

static const char *trace_name(int i)
{
    return hs_sim_trace_str((enum hs_sim_trace)i);
}
static const char *model_name(int i)
{
    return hs_sim_model_str((enum hs_sim_model)i);
}
static const char *system_name(int i)
{
    return hs_sim_system_str((enum hs_sim_system)i);
}

/* The default parameters with one run of each cell, the scale of these tests. */
static struct hs_sim_params one_run_params(void)
{
    struct hs_sim_params p = hs_sim_default_params();
    p.n_runs = 1;
    return p;
}

/* ours within tol (relative) of the paper's figure. */
static void assert_near_paper(double ours, double paper, double tol)
{
    cr_assert(fabs(ours / paper - 1.0) <= tol, "%.2f, the paper's %.2f", ours, paper);
}

Test(sim, chime_json_parses_and_every_cell_of_the_aim_is_within_15_percent_or_declared_off,
     .timeout = 120)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/api/hetserve sim chime --json", getenv("HS_BUILD_DIR"));
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char line[1024];
    int n = 0, n_aim = 0, n_in = 0, n_off = 0;
    bool seen[HS_SIM_TRACE_COUNT][HS_SIM_MODEL_COUNT][HS_SIM_SYSTEM_COUNT] = {{{false}}};
    while (fgets(line, sizeof(line), f)) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        cr_assert_not_null(o, "line %d does not parse: %s: %s", n + 1, jerr.text, line);
        cr_assert(json_is_object(o) && json_object_size(o) == 5, "%s", line);
        const int t =
            find(json_string_value(json_object_get(o, "trace")), trace_name, HS_SIM_TRACE_COUNT);
        const int m =
            find(json_string_value(json_object_get(o, "model")), model_name, HS_SIM_MODEL_COUNT);
        const int s =
            find(json_string_value(json_object_get(o, "system")), system_name, HS_SIM_SYSTEM_COUNT);
        cr_assert(t >= 0 && m >= 0 && s >= 0, "%s", line);
        cr_assert(!seen[t][m][s], "cell twice: %s", line);
        seen[t][m][s] = true;
        const json_t *jo = json_object_get(o, "ours"), *jp = json_object_get(o, "paper");
        cr_assert(json_is_number(jo) || json_is_null(jo), "%s", line);
        cr_assert(json_is_number(jp) || json_is_null(jp), "%s", line);
        const double paper = hs_sim_paper(t, m, s);
        cr_assert(json_is_null(jp) ? isnan(paper) : fabs(json_number_value(jp) - paper) < 1e-9);
        if (hs_sim_in_aim(t, m, s)) {
            n_aim++;
            const double ours = json_is_null(jo) ? NAN : json_number_value(jo);
            const bool within = !isnan(ours) && fabs(ours / paper - 1.0) <= 0.15;
            const char *why = hs_sim_off_reason(t, m, s);
            if (why) {
                n_off++;
                cr_assert(!within, "%s is declared off (%s) but is within the aim: %.3f vs %.2f",
                          line, why, ours, paper);
            } else {
                n_in++;
                cr_assert(within, "out of the aim: %s", line);
            }
        }
        json_decref(o);
        n++;
    }
    cr_assert_eq(pclose(f), 0);
    cr_assert_eq(n, HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT * HS_SIM_SYSTEM_COUNT);
    cr_assert_eq(n_aim, 22);
    cr_assert_eq(n_in + n_off, n_aim);
    cr_assert_geq(n_in, 12, "%d cells within the aim", n_in);
}

/* The parameter the paper leaves out: reserving each request's whole final KV at admission is
 * what lifts OpenR1 GPT-175B from the back-of-envelope ~1.7-1.9x to the paper's 2.95x; the
 * ratio falls monotonically as less is reserved. */
Test(sim, reserving_the_final_length_is_what_reaches_the_paper, .timeout = 120)
{
    struct hs_sim_params p = one_run_params();
    double prev = INFINITY;
    for (int i = 0; i <= 4; i++) {
        p.reserve = 1.0 - 0.25 * i;
        struct hs_sim_result g, c;
        cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, HS_SIM_GPU, &p, &g), HS_OK);
        cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, HS_SIM_CHIME, &p, &c), HS_OK);
        const double r = c.tokens_per_s / g.tokens_per_s;
        cr_assert_lt(r, prev, "reserve %.2f: %.3f after %.3f", p.reserve, r, prev);
        prev = r;
        if (i == 0) {
            cr_assert(fabs(r / 2.95 - 1.0) <= 0.15, "%.3f", r);
            cr_assert_eq(c.preemptions, 0);
        }
        if (i == 4) {
            cr_assert(r > 1.5 && r < 2.0, "paged: %.3f", r);
        }
    }
    struct hs_sim_params bad = hs_sim_default_params();
    struct hs_sim_result r;
    bad.reserve = 1.5;
    cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, HS_SIM_GPU, &bad, &r), HS_E_INVAL);
}

/* HARDWARE.md's "1 rankset of 512 GB": a quarter of Table I in both, as bandwidth-bound as the
 * whole, so the single factors come out the other way round from the paper's. */
Test(sim, scaling_from_one_rankset_is_bandwidth_bound, .timeout = 120)
{
    struct hs_sim_params p = one_run_params();
    struct hs_sim_scaling s;
    cr_assert_eq(hs_sim_scaling(&p, 1, &s), HS_OK);
    cr_assert(s.both_x8 > 7.0 && s.both_x8 < 9.0, "%.2f", s.both_x8);
    /* a single rankset is bandwidth-bound: capacity alone buys nothing, bandwidth some */
    cr_assert(fabs(s.capacity_x8 - 1.0) < 0.05, "%.2f", s.capacity_x8);
    cr_assert(s.bandwidth_x8 > 1.5, "%.2f", s.bandwidth_x8);
    /* 8x the KV at the same bandwidth: attention decides; 8x the bandwidth hides more of it */
    cr_assert_gt(s.capacity.r.attn_share, 0.9, "%.2f", s.capacity.r.attn_share);
    cr_assert_lt(s.bandwidth.r.attn_share, s.base.r.attn_share, "%.2f", s.bandwidth.r.attn_share);
    cr_assert_eq(hs_sim_scaling(&p, 0, &s), HS_E_INVAL);
    cr_assert_eq(hs_sim_scaling(&p, 65, &s), HS_E_INVAL);
}

/* The base of the study: 512 GiB over n ranksets, n times one rankset's banks. By hand: one
 * rankset is 16 ranks x 8 chips x 16 banks x 1.6 GB/s = 3.2768 TB/s peak, times the row
 * (1024 / 1068) and refresh (1 - 560 / 12480) efficiencies = 3.0007 TB/s; four ranksets are
 * Table I's 64 ranks, its whole bandwidth over a quarter of its capacity. 8x the capacity
 * (rank_bytes) and 8x the banks scale exactly those. */
Test(sim, scaling_base_spreads_512_gib_over_n_ranksets, .timeout = 120)
{
    struct hs_sim_params p = one_run_params();
    const double gib = 1073741824.0;
    const double one = 16 * 8 * 16 * 1.6e9 * (1024.0 / 1068.0) * (1.0 - 560.0 / 12480.0);
    struct hs_pim_config table1;
    hs_pim_config_preset("chime", &table1);
    double prev_cap = 0.0, prev_bw = INFINITY;
    for (int32_t n = 1; n <= 4; n *= 2) {
        struct hs_sim_scaling s;
        cr_assert_eq(hs_sim_scaling(&p, n, &s), HS_OK);
        cr_assert_float_eq(s.base.capacity_bytes, 512 * gib, 1.0, "%d: %g", n,
                           s.base.capacity_bytes);
        cr_assert_float_eq(s.base.bytes_per_s, n * one, 1e3, "%d: %g", n, s.base.bytes_per_s);
        cr_assert_float_eq(s.capacity.capacity_bytes, 8 * 512 * gib, 8.0);
        cr_assert_float_eq(s.capacity.bytes_per_s, n * one, 1e3);
        cr_assert_float_eq(s.bandwidth.capacity_bytes, 512 * gib, 1.0);
        cr_assert_float_eq(s.bandwidth.bytes_per_s, 8 * n * one, 1e4);
        cr_assert_float_eq(s.both.capacity_bytes, 8 * 512 * gib, 8.0);
        cr_assert_float_eq(s.both.bytes_per_s, 8 * n * one, 1e4);
        /* the capacity-limited batch follows the capacity, not the bandwidth */
        cr_assert_float_eq(s.bandwidth.r.mean_batch, s.base.r.mean_batch, 1e-9);
        cr_assert_gt(s.capacity.r.mean_batch, 7.0 * s.base.r.mean_batch);
        if (n == 4) {
            cr_assert_float_eq(s.base.bytes_per_s, hs_pim_effective_bytes_per_s(&table1), 1e3);
        }
        /* more bandwidth per byte at the base: capacity pays more, bandwidth less */
        cr_assert_gt(s.capacity_x8, prev_cap, "%d: %.2f", n, s.capacity_x8);
        cr_assert_lt(s.bandwidth_x8, prev_bw, "%d: %.2f", n, s.bandwidth_x8);
        prev_cap = s.capacity_x8;
        prev_bw = s.bandwidth_x8;
    }
}

/* The paper's figures against each other, by hand: CHIME / R-PIM on OpenR1 GPT-175B is
 * 2.95 / 0.39 = 7.5641; the effective bandwidths' ratio is (8192 x 1.6 GB/s x 1024 / 1068) /
 * (64 x 25.6 GB/s) = 8 x 0.958801 = 7.67041 (refresh cancels), so attention takes at least
 * 0.98614 of the FC time at 2 TB; capacity x8 alone at 2.28x allows at most 1 / 2.28 = 0.438596
 * at the base; the base needs 0.98614 / 0.438596 = 2.2484x a rankset's bandwidth per byte. */
Test(sim, scaling_bounds_from_the_papers_figures_by_hand)
{
    struct hs_sim_scaling_bounds b;
    hs_sim_scaling_bounds(&b);
    const double full = (2.95 / 0.39) / (8.0 * 1024.0 / 1068.0);
    cr_assert_float_eq(full, 0.98614, 1e-5);
    cr_assert_float_eq(b.full_attn_over_fc_min, full, 1e-9, "%.6f", b.full_attn_over_fc_min);
    cr_assert_float_eq(b.base_attn_over_fc_max, 1.0 / 2.28, 1e-12);
    cr_assert_float_eq(b.base_bw_factor_min, full * 2.28, 1e-9, "%.6f", b.base_bw_factor_min);
    cr_assert_float_eq(b.base_bw_factor_min, 2.2484, 1e-4);
}

/* The default base, 512 GiB over Table I's 64 ranks: capacity x8 alone and both x8 within the
 * aim of the paper's 2.28x and 8.23x; bandwidth x8 alone stays off (README: with a small,
 * weight-bound batch our scheduler runs a step whole, so the base's attention is exposed and
 * more bandwidth removes it). Splitting every step hides it and brings all three within the
 * aim, at the cost of the table (next test). */
Test(sim, scaling_from_512_gib_over_64_ranks, .timeout = 120)
{
    struct hs_sim_params p = one_run_params();
    struct hs_sim_scaling s;
    cr_assert_eq(hs_sim_scaling(&p, HS_SIM_SCALING_BASE_RANKSETS, &s), HS_OK);
    assert_near_paper(s.capacity_x8, HS_SIM_PAPER_CAPACITY_X8, 0.15);
    assert_near_paper(s.both_x8, HS_SIM_PAPER_BOTH_X8, 0.15);
    cr_assert_gt(s.bandwidth_x8, 1.15 * HS_SIM_PAPER_BANDWIDTH_X8, "%.2f", s.bandwidth_x8);
    cr_assert_gt(s.base.r.attn_share, 0.2, "%.2f", s.base.r.attn_share);

    p.split = HS_SIM_SPLIT_ALWAYS;
    cr_assert_eq(hs_sim_scaling(&p, HS_SIM_SCALING_BASE_RANKSETS, &s), HS_OK);
    assert_near_paper(s.capacity_x8, HS_SIM_PAPER_CAPACITY_X8, 0.15);
    assert_near_paper(s.bandwidth_x8, HS_SIM_PAPER_BANDWIDTH_X8, 0.15);
    assert_near_paper(s.both_x8, HS_SIM_PAPER_BOTH_X8, 0.15);
    cr_assert_lt(s.base.r.attn_share, 0.01, "%.2f", s.base.r.attn_share);
}

/* Splitting every step never makes a step shorter than choosing the shorter of whole and split;
 * it is the same for the GPU (attention after the FC layers, no split) and costs HBM-PIM-EXT
 * (fast attention beside the GPUs) a second weight read on most steps. */
Test(sim, splitting_every_step_is_never_faster, .timeout = 120)
{
    const struct hs_sim_params shorter = one_run_params();
    struct hs_sim_params always = shorter;
    always.split = HS_SIM_SPLIT_ALWAYS;
    static const enum hs_sim_system systems[] = {HS_SIM_GPU, HS_SIM_HBM_PIM_EXT, HS_SIM_RPIM,
                                                 HS_SIM_CHIME};
    for (size_t i = 0; i < sizeof(systems) / sizeof(systems[0]); i++) {
        struct hs_sim_result a, b;
        cr_assert_eq(hs_sim_run(HS_SIM_QWEN_72B, HS_SIM_DOLPHIN_SHORT, systems[i], &shorter, &a),
                     HS_OK);
        cr_assert_eq(hs_sim_run(HS_SIM_QWEN_72B, HS_SIM_DOLPHIN_SHORT, systems[i], &always, &b),
                     HS_OK);
        cr_assert_eq(a.tokens, b.tokens);
        cr_assert_float_eq(a.mean_batch, b.mean_batch, 1e-9); /* admission does not change */
        cr_assert_leq(b.tokens_per_s, a.tokens_per_s * (1 + 1e-12), "%s",
                      hs_sim_system_str(systems[i]));
        if (systems[i] == HS_SIM_GPU) {
            cr_assert_float_eq(b.tokens_per_s, a.tokens_per_s, 1e-9 * a.tokens_per_s);
        }
        if (systems[i] == HS_SIM_HBM_PIM_EXT) {
            cr_assert_lt(b.tokens_per_s, 0.8 * a.tokens_per_s, "%.1f vs %.1f", b.tokens_per_s,
                         a.tokens_per_s);
        }
    }
    always.split = HS_SIM_SPLIT_COUNT;
    struct hs_sim_result r;
    cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, HS_SIM_CHIME, &always, &r), HS_E_INVAL);
}

/* --split and --gpu-gqa: a bad value is one clear error (exit 2); a good split changes the table.
 */
Test(sim, split_option_is_checked_and_used, .timeout = 120)
{
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof(cmd), "%s/api/hetserve sim chime --split sideways 2>&1",
             getenv("HS_BUILD_DIR"));
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    const size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    const int st = pclose(f);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%d: %s", st, out);
    cr_assert_not_null(strstr(out, "--split must be one of shorter, always, attacc, hidden"), "%s",
                       out);
    snprintf(cmd, sizeof(cmd), "%s/api/hetserve sim chime --gpu-gqa twice 2>&1",
             getenv("HS_BUILD_DIR"));
    f = popen(cmd, "r");
    cr_assert_not_null(f);
    const size_t n2 = fread(out, 1, sizeof(out) - 1, f);
    out[n2] = '\0';
    const int st2 = pclose(f);
    cr_assert(WIFEXITED(st2) && WEXITSTATUS(st2) == 2, "%d: %s", st2, out);
    cr_assert_not_null(strstr(out, "--gpu-gqa must be one of shared, per-query-head, not 'twice'"),
                       "%s", out);

    snprintf(cmd, sizeof(cmd), "%s/api/hetserve sim chime --split always --runs 1 --json",
             getenv("HS_BUILD_DIR"));
    f = popen(cmd, "r");
    cr_assert_not_null(f);
    char line[1024];
    int lines = 0;
    double ext = NAN;
    while (fgets(line, sizeof(line), f)) {
        lines++;
        if (strstr(line, "\"OpenR1\"") && strstr(line, "\"GPT-175B\"") &&
            strstr(line, "\"HBM-PIM-EXT\"")) {
            json_t *o = json_loads(line, 0, NULL);
            cr_assert_not_null(o);
            ext = json_number_value(json_object_get(o, "ours"));
            json_decref(o);
        }
    }
    cr_assert_eq(pclose(f), 0);
    cr_assert_eq(lines, HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT * HS_SIM_SYSTEM_COUNT);
    /* a second weight read on every step: well below the default's ~1.08 */
    cr_assert_lt(ext, 0.8, "%.2f", ext);
}

/* The one-weight-read overlaps, by their definitions: hidden's step max(F, T) is never longer
 * than the shorter of F + T and the split's 2 max(F_half, T / 2) (F_half >= F / 2), nor than
 * attacc's F + max(0, T - F_qkvo); admission does not change.
 * With hidden, the scaling study's bandwidth x8 alone comes within the paper's 1.01x (the
 * base's attention is hidden for free) and capacity x8 alone falls far below its 2.28x: the
 * README's reason for keeping the default. */
Test(sim, one_weight_read_overlaps_bound_the_split, .timeout = 120)
{
    struct hs_sim_params p[3] = {one_run_params(), one_run_params(), one_run_params()};
    p[1].split = HS_SIM_SPLIT_ATTACC;
    p[2].split = HS_SIM_SPLIT_HIDDEN;
    static const enum hs_sim_system systems[] = {HS_SIM_HBM_PIM_EXT, HS_SIM_CPU, HS_SIM_RPIM,
                                                 HS_SIM_CHIME};
    for (size_t i = 0; i < sizeof(systems) / sizeof(systems[0]); i++) {
        struct hs_sim_result r[3];
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_DOLPHIN, systems[i], &p[k], &r[k]),
                         HS_OK);
        }
        const char *name = hs_sim_system_str(systems[i]);
        cr_assert_eq(r[1].tokens, r[0].tokens);
        cr_assert_float_eq(r[2].mean_batch, r[0].mean_batch, 1e-9);
        cr_assert_geq(r[2].tokens_per_s, r[0].tokens_per_s * (1 - 1e-12), "%s", name);
        cr_assert_geq(r[2].tokens_per_s, r[1].tokens_per_s * (1 - 1e-12), "%s", name);
    }
    struct hs_sim_result g[2];
    cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_DOLPHIN, HS_SIM_GPU, &p[0], &g[0]), HS_OK);
    cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_DOLPHIN, HS_SIM_GPU, &p[2], &g[1]), HS_OK);
    cr_assert_float_eq(g[1].tokens_per_s, g[0].tokens_per_s, 1e-9 * g[0].tokens_per_s,
                       "the GPU's attention runs after its FC layers whatever the split");
    struct hs_sim_scaling s;
    cr_assert_eq(hs_sim_scaling(&p[2], HS_SIM_SCALING_BASE_RANKSETS, &s), HS_OK);
    assert_near_paper(s.bandwidth_x8, HS_SIM_PAPER_BANDWIDTH_X8, 0.05);
    cr_assert_lt(s.capacity_x8, 0.7 * HS_SIM_PAPER_CAPACITY_X8, "%.2f", s.capacity_x8);
    cr_assert_lt(s.base.r.attn_share, 0.05, "%.2f", s.base.r.attn_share);
}

/* --gpu-gqa per-query-head: GPU-side attention reads a GQA-8 KV head once per query head, 8x
 * the bytes, as AttAcc's simulator models attention. MHA models and the DIMM systems do not
 * change; QWEN-72B's GPU-only slows by the attention's part, and its R-PIM cells rise to the
 * paper's neighbourhood while CHIME's overshoot (the README's sensitivity). */
Test(sim, gpu_gqa_per_query_head_only_changes_gpu_side_gqa_attention, .timeout = 120)
{
    const struct hs_sim_params a = one_run_params();
    struct hs_sim_params b = a;
    b.gpu_gqa = HS_SIM_GQA_PER_QUERY_HEAD;
    struct hs_sim_result x, y;
    for (int s = 0; s < HS_SIM_SYSTEM_COUNT; s++) {
        cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, s, &a, &x), HS_OK);
        cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, s, &b, &y), HS_OK);
        cr_assert_float_eq(y.tokens_per_s, x.tokens_per_s, 1e-12 * x.tokens_per_s, "MHA %d", s);
        cr_assert_eq(hs_sim_run(HS_SIM_QWEN_72B, HS_SIM_OPENR1, s, &a, &x), HS_OK);
        cr_assert_eq(hs_sim_run(HS_SIM_QWEN_72B, HS_SIM_OPENR1, s, &b, &y), HS_OK);
        if (s == HS_SIM_CPU || s == HS_SIM_RPIM || s == HS_SIM_CHIME) {
            cr_assert_float_eq(y.tokens_per_s, x.tokens_per_s, 1e-12 * x.tokens_per_s, "%d", s);
        } else {
            /* the same batches, 8x the KV reads per step (HBM-PIM-EXT's link transfer of q, k,
             * v and out stays) */
            cr_assert_float_eq(y.mean_batch, x.mean_batch, 1e-9);
            if (s == HS_SIM_HBM_PIM_EXT) {
                cr_assert(y.mean_attn_s > 7.0 * x.mean_attn_s &&
                              y.mean_attn_s < 8.0 * x.mean_attn_s,
                          "%g vs %g", y.mean_attn_s, x.mean_attn_s);
            } else {
                cr_assert_float_eq(y.mean_attn_s, 8.0 * x.mean_attn_s, 1e-6 * y.mean_attn_s, "%d",
                                   s);
            }
            cr_assert_lt(y.tokens_per_s, x.tokens_per_s, "%d", s);
        }
    }
    b.gpu_gqa = HS_SIM_GQA_COUNT;
    cr_assert_eq(hs_sim_run(HS_SIM_QWEN_72B, HS_SIM_OPENR1, HS_SIM_GPU, &b, &x), HS_E_INVAL);
}

/* The bounds `sim chime --detail` prints, against the README's reasons for the off cells: the
 * QWEN-72B rows on the DIMMs admit all of a replica's 500 requests at once and spend most of
 * the run draining them; GPT-175B's OpenR1 CHIME is attention-bound (T > F per step) with a
 * batch far above the GPU's; the shares are shares. */
Test(sim, detail_bounds_show_the_drain_and_the_bound, .timeout = 120)
{
    struct hs_sim_params p = one_run_params();
    struct hs_sim_result q, c, g;
    cr_assert_eq(hs_sim_run(HS_SIM_QWEN_72B, HS_SIM_DOLPHIN, HS_SIM_CHIME, &p, &q), HS_OK);
    cr_assert_float_eq(q.max_batch, 500.0, 1e-9); /* 1,000 requests over two replicas */
    cr_assert_gt(q.tail_share, 0.9, "%.2f", q.tail_share);
    cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, HS_SIM_CHIME, &p, &c), HS_OK);
    cr_assert_eq(hs_sim_run(HS_SIM_GPT_175B, HS_SIM_OPENR1, HS_SIM_GPU, &p, &g), HS_OK);
    cr_assert_gt(c.mean_attn_s, c.mean_fc_s, "%.4f vs %.4f", c.mean_attn_s, c.mean_fc_s);
    cr_assert_gt(c.mean_batch, 4.0 * g.mean_batch, "%.1f vs %.1f", c.mean_batch, g.mean_batch);
    cr_assert_lt(c.tail_share, 0.2, "%.2f", c.tail_share);
    const struct hs_sim_result *all[] = {&q, &c, &g};
    for (int i = 0; i < 3; i++) {
        cr_assert(all[i]->tail_share >= 0 && all[i]->tail_share <= 1);
        cr_assert(all[i]->prefill_share >= 0 && all[i]->prefill_share < 1);
        cr_assert(all[i]->attn_share >= 0 && all[i]->attn_share <= 1);
    }
}
