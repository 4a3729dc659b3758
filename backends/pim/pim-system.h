/* An analytic model of whole serving systems, to reproduce CHIME's end-to-end comparison
 * (its Fig. 11; ../shared/HARDWARE.md has the numbers): 8 x A100 running GPT-175B, QWEN-72B or
 * OPT-66B over 1,000 requests whose lengths follow a trace's published statistics, with decode
 * attention on the GPUs (GPU), on HBM-PIM inside them (HBM-PIM) or beside them (HBM-PIM-EXT),
 * on the host CPU (CPU offload), or on DIMM-PIM with rank-level (R-PIM) or bank-level (CHIME)
 * units. The DIMM systems' attention time is pim-timing.h's, the very functions the pim backend
 * charges at run time (one model, two uses).
 *
 * The model, per data-parallel replica (tp GPUs; the DIMMs, host bandwidth and HBM-PIM-EXT are
 * shared out evenly between replicas), step by step:
 *   - the FC layers (QKV, output, FFN, LM head) on the GPUs: per matrix
 *     max(FLOPs / (peak * 0.8), bytes / (bandwidth * 0.85)) (AttAcc's defaults);
 *   - attention on the GPUs at their full bandwidth ("the paper's baselines all assume maximal
 *     accelerator bandwidth utilisation during attention"), after the FC layers (one device);
 *   - attention elsewhere overlaps with the FC layers as CHIME's scheduler does: the batch is
 *     split into two halves that take turns, period max(F_A, T_B) + max(F_B, T_A), or run
 *     whole (F + T) when that is shorter (small batches: the weights are read once; --split,
 *     enum hs_sim_split);
 *   - prefill of an admitted request on the GPUs (and its K/V over the link to the DIMMs);
 *   - the batch is whatever capacity allows: requests are admitted first come first served
 *     while the KV reserved for them fits (see reserve below); a request that could never fit
 *     makes the system "out of memory" for the trace, as the paper marks it;
 *   - throughput is output tokens over the time of the whole run (the slowest replica's).
 *
 * The parameter the paper leaves out, chosen once for every cell: `reserve`, the share of a
 * request's output whose KV is reserved when it is admitted. 1 (the default): the whole final
 * length, as AttAcc's simulator (the source of the GPU model above) sizes its batches, so live
 * KV averages about half the capacity over long outputs; 0: paged allocation that grows on
 * demand and preempts (vLLM). See the README's "Simulated PIM" for the evidence and the
 * sensitivity. Thread: any (pure, but each run takes up to a second). */
#ifndef HS_BACKENDS_PIM_SYSTEM_H
#define HS_BACKENDS_PIM_SYSTEM_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/pim/pim-timing.h"

enum hs_sim_system {
    HS_SIM_GPU,
    HS_SIM_HBM_PIM,
    HS_SIM_HBM_PIM_EXT,
    HS_SIM_CPU,
    HS_SIM_RPIM,
    HS_SIM_CHIME,
    HS_SIM_SYSTEM_COUNT,
};
const char *hs_sim_system_str(enum hs_sim_system s);

enum hs_sim_model {
    HS_SIM_GPT_175B,
    HS_SIM_QWEN_72B,
    HS_SIM_OPT_66B,
    HS_SIM_MODEL_COUNT,
};
const char *hs_sim_model_str(enum hs_sim_model m);

enum hs_sim_trace {
    HS_SIM_OPENR1,
    HS_SIM_OPENTHOUGHTS,
    HS_SIM_DOLPHIN,
    HS_SIM_DOLPHIN_SHORT,
    HS_SIM_TRACE_COUNT,
};
const char *hs_sim_trace_str(enum hs_sim_trace t);

struct hs_sim_model_desc {
    const char *name;
    int32_t n_layer, d_model, n_head, n_kv_head, head_dim, n_ff, n_vocab;
    bool glu; /* gated FFN (three matrices) */
    int32_t tp, dp;
};
const struct hs_sim_model_desc *hs_sim_model_desc(enum hs_sim_model m);

/* How a system whose attention runs beside the GPUs (HBM-PIM-EXT, CPU offload, R-PIM, CHIME)
 * overlaps it with the FC layers. A split step runs the batch as two halves that take turns,
 * period max(F_A, T_B) + max(F_B, T_A), each half's FC layers while the other's attention runs
 * ("fills two sub-batches", CHIME's scheduler in HARDWARE.md); each half reads the weights
 * again, so with a small, weight-bound batch the split costs about another F.
 *   SHORTER (the default): a step runs whole (F + T) when that is shorter, as a scheduler that
 *     predicts both times (CHIME's does, with a linear model) can choose;
 *   ALWAYS: every step is split, attention hidden behind a second weight read;
 *   ATTACC: the whole batch, attention pipelined head by head with the attention block's own
 *     FC layers (QKV and output projections), the FFN after it: F + max(0, T - F_qkvo), one
 *     weight read (AttAcc's simulator's pipeline option);
 *   HIDDEN: the whole batch, attention hidden behind all the FC layers with one weight read,
 *     max(F, T): what the paper's bandwidth-x8-alone 1.01x implies, no scheduler described.
 * ATTACC and HIDDEN are sensitivities (README, "Simulated PIM"). */
enum hs_sim_split {
    HS_SIM_SPLIT_SHORTER,
    HS_SIM_SPLIT_ALWAYS,
    HS_SIM_SPLIT_ATTACC,
    HS_SIM_SPLIT_HIDDEN,
    HS_SIM_SPLIT_COUNT,
};
const char *hs_sim_split_str(enum hs_sim_split s);

/* How attention on the GPU side (GPU, HBM-PIM, HBM-PIM-EXT) reads a GQA model's KV:
 *   SHARED (the default): each KV head once for its g query heads (a GQA kernel);
 *   PER_QUERY_HEAD: once per query head, g times the bytes, as AttAcc's simulator (the source
 *     of the GPU model) models every attention (its layers know query heads only).
 * The DIMM systems always read each KV head once (CHIME's n_cmr = g). A sensitivity, not the
 * default: see the README's "Simulated PIM". */
enum hs_sim_gqa {
    HS_SIM_GQA_SHARED,
    HS_SIM_GQA_PER_QUERY_HEAD,
    HS_SIM_GQA_COUNT,
};
const char *hs_sim_gqa_str(enum hs_sim_gqa g);

struct hs_sim_params {
    double reserve;          /* share of the output's KV reserved at admission, [0, 1]; default 1 */
    int32_t n_requests;      /* per run; default 1000 */
    int32_t n_runs;          /* independent runs (samples of the lengths), pooled; default 4 */
    uint64_t seed;           /* of the first run's request lengths (run i: seed + i); default 1 */
    double hbm_pim_factor;   /* HBM-PIM's bank-level bandwidth over the HBM's external; default 4 */
    enum hs_sim_split split; /* default HS_SIM_SPLIT_SHORTER */
    enum hs_sim_gqa gpu_gqa; /* default HS_SIM_GQA_SHARED */
    /* DIMM configuration of R-PIM and CHIME (NULL: the rpim / chime presets) */
    const struct hs_pim_config *chime;
    const struct hs_pim_config *rpim;
};
struct hs_sim_params hs_sim_default_params(void);

struct hs_sim_result {
    bool oom; /* a request of the trace can never fit */
    double tokens_per_s;
    double time_s;
    int64_t tokens;
    double mean_batch; /* decode sequences per step, averaged over steps (per replica) */
    double attn_share; /* share of the time that is attention not hidden behind the FC layers
                        * (all of it when a step runs whole, the excess of each half's attention
                        * over the other half's FC when split) */
    int64_t preemptions;
    /* where the time goes (shares of time_s, averaged over runs and replicas like the above) */
    double prefill_share; /* prefill on the GPUs (and its K/V over the link) */
    double tail_share;    /* decode after the last request was admitted: the drain */
    double max_batch;     /* the largest decode batch (per replica) */
    double mean_fc_s;     /* per decode step, averaged over steps: the FC layers of the whole */
    double mean_attn_s;   /* batch, and its attention, each alone (the bounds a step overlaps) */
};

/* Simulates one cell. HS_E_INVAL for bad params, HS_E_NOMEM. Thread: any. */
hs_status hs_sim_run(enum hs_sim_model m, enum hs_sim_trace t, enum hs_sim_system s,
                     const struct hs_sim_params *p, struct hs_sim_result *out);

/* ---- the comparison table ---- */

/* The paper's value (HARDWARE.md, read from CHIME's Fig. 11), NAN where it shows none; and
 * whether that row is normalised to CHIME (OPT-66B on OpenR1 and OpenThoughts, where the GPU
 * runs out of memory) rather than to GPU-only. */
double hs_sim_paper(enum hs_sim_trace t, enum hs_sim_model m, enum hs_sim_system s);
bool hs_sim_row_by_chime(enum hs_sim_trace t, enum hs_sim_model m);

/* Whether a cell is one of the aim (every CHIME and R-PIM cell within +-15% of the paper; not
 * the CHIME cell of a row normalised to CHIME), and when it is but cannot be reached honestly,
 * why (NULL when it is reached). */
bool hs_sim_in_aim(enum hs_sim_trace t, enum hs_sim_model m, enum hs_sim_system s);
const char *hs_sim_off_reason(enum hs_sim_trace t, enum hs_sim_model m, enum hs_sim_system s);

struct hs_sim_cell {
    enum hs_sim_trace trace;
    enum hs_sim_model model;
    enum hs_sim_system system;
    double ours;  /* normalised; NAN when out of memory */
    double paper; /* NAN where none */
    struct hs_sim_result raw;
};

/* Every cell (trace-major, then model, then system: HS_SIM_TRACE_COUNT * HS_SIM_MODEL_COUNT *
 * HS_SIM_SYSTEM_COUNT of them) into cells. */
hs_status hs_sim_table(const struct hs_sim_params *p, struct hs_sim_cell *cells);

/* The scaling study (GPT-175B on OpenR1, CHIME): from a base of 512 GiB of the chime preset's
 * DIMMs, the throughput with 8x the capacity (rank_bytes), with 8x the bank bandwidth (banks,
 * and the rank bus that carries their scores), and with both, each over the base's. The paper
 * (HARDWARE.md) starts from "1 rankset of 512 GB": base_ranksets = 1, 16 ranks of 32 GiB, a
 * quarter of Table I's 2 TB in both capacity and bandwidth. base_ranksets = n spreads the same
 * 512 GiB over n ranksets (16n ranks of 32/n GiB): n times the bank bandwidth per byte, for the
 * sensitivity of the study to the base (4: every bank of Table I over a quarter of its
 * capacity). HS_E_INVAL when base_ranksets is not in [1, 64]. */
#define HS_SIM_PAPER_CAPACITY_X8  2.28
#define HS_SIM_PAPER_BANDWIDTH_X8 1.01
#define HS_SIM_PAPER_BOTH_X8      8.23

/* The base the study starts from by default: 512 GiB over Table I's 64 ranks, 4 ranksets of
 * 8 GiB ranks, which is what Table I's organisation holds when built from the DRAMsim3 part it
 * names (DDR4_8Gb_x8_3200: 65536 rows x 1024 columns x 8 bits x 16 banks = 1 GiB per chip, 8 GiB
 * per rank of 8). The paper's own figures need a base with at least 2.25x a single rankset's
 * bandwidth per byte (hs_sim_scaling_bounds); one rankset of 32 GiB ranks (HARDWARE.md's "1
 * rankset of 512 GB") is printed beside it. */
#define HS_SIM_SCALING_BASE_RANKSETS 4

struct hs_sim_scaling_point {
    double capacity_bytes; /* the DIMMs' */
    double bytes_per_s;    /* their effective bank bandwidth (hs_pim_effective_bytes_per_s) */
    struct hs_sim_result r;
};
struct hs_sim_scaling {
    struct hs_sim_scaling_point base, capacity, bandwidth, both;
    double capacity_x8, bandwidth_x8, both_x8; /* throughput over the base's */
};
hs_status hs_sim_scaling(const struct hs_sim_params *p, int32_t base_ranksets,
                         struct hs_sim_scaling *out);

/* What the paper's own numbers say of its scaling base, whatever the model (README, "Simulated
 * PIM"). With a step of max(F, A) (FC time F, attention time A = live KV over bandwidth; with
 * a serial F + A the first bound rises far above 1 and the second to 0.56, which only
 * strengthens the third), batches filled to capacity, and F flat in the batch (GPT-175B's FC
 * layers are weight-bound below ~144 rows):
 *   - Fig. 11's OpenR1 GPT-175B CHIME / R-PIM (2.95 / 0.39) is nearly the ratio of their
 *     effective bandwidths (same DIMMs, same batch), so the 2 TB system is bandwidth-bound:
 *     A / F >= full_attn_over_fc_min = (paper ratio) / (bandwidth ratio) there;
 *   - capacity x8 alone giving g > 1 needs A / F <= base_attn_over_fc_max = 1 / g at the base
 *     (8x the batch reads 8x the KV at the same bandwidth);
 *   - a quarter of the 2 TB system in both has the same A / F as the whole, so the base needs at
 *     least base_bw_factor_min = min / max times a quarter's bandwidth per byte of capacity.
 * From the chime and rpim presets and the paper's figures. Thread: any. */
struct hs_sim_scaling_bounds {
    double full_attn_over_fc_min, base_attn_over_fc_max, base_bw_factor_min;
};
void hs_sim_scaling_bounds(struct hs_sim_scaling_bounds *out);

#endif
