/* The DIMM-PIM timing model (L3/CHIME), as pure functions of a hardware configuration: what the
 * pim backend charges for each attention call, and what `hetserve sim chime` charges for each
 * simulated decode step (one model, two uses).
 *
 * The hardware: channels x DIMMs x ranks per DIMM x chips per rank x bank groups x banks. Decode
 * attention streams each KV head's K and V rows once per step; the time is set by
 *   - bank level (CHIME): every bank streams its own rows into its MAC unit, one burst
 *     (chip_width_bits * bl / 8 bytes) per tCCD_L; a bank cannot hide its own row switches
 *     (tRP + tRCD after each row of row_bytes), and refresh takes tRFC of every tREFI;
 *   - rank level (R-PIM): a unit on the buffer chip streams the rank through its pins, one burst
 *     of every chip per tCCD_S (bank groups interleaved, so activations hide behind other banks'
 *     bursts: refresh only);
 *   - host level (CPU offload, NEO-style): the host CPU reads at host_gbs.
 * A head of a sequence sits on n_chips chips of one rank (pim-map.h). A chip's time is its
 * bytes over its banks' bandwidth, times ceil(g / n_cmr) passes when its MACs cannot serve the g
 * query heads of a GQA group in one; the chips send L * g partial scores each to the rank unit
 * (softmax, adder) over the rank bus; the two pipeline (CHIME's bubble-free design), so a rank
 * takes the longer. The slowest rank decides a layer. The host link carries q, the new k and v,
 * and the output of each query row; with two or more ranksets (one rank of each channel) it
 * streams to one rankset while the others compute, so a layer takes the longer of link and
 * ranks, else their sum.
 *
 * Thread: all functions are pure (any thread) except hs_pim_config_measure_host. */
#ifndef HS_BACKENDS_PIM_TIMING_H
#define HS_BACKENDS_PIM_TIMING_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"

#define HS_PIM_CHIPS_MAX 32

enum hs_pim_level {
    HS_PIM_LEVEL_BANK, /* a MAC unit per bank (CHIME) */
    HS_PIM_LEVEL_RANK, /* a unit per rank on the buffer chip (R-PIM) */
    HS_PIM_LEVEL_HOST, /* the host CPU over its DRAM (CPU offload; "PIM" without PIM) */
    HS_PIM_LEVEL_COUNT,
};
const char *hs_pim_level_str(enum hs_pim_level l);

struct hs_pim_config {
    enum hs_pim_level level;
    /* organisation */
    int32_t channels;
    int32_t dimms_per_channel;
    int32_t ranks_per_dimm;
    int32_t chips_per_rank;
    int32_t bank_groups; /* per chip */
    int32_t banks_per_group;
    int32_t chip_width_bits; /* x8 */
    int64_t row_bytes;       /* one row of one bank of one chip (the page) */
    int64_t rank_bytes;      /* capacity of one rank */
    /* DRAM timing, in clock cycles of tck_ns (DRAMsim3 DDR4_8Gb_x8_3200) */
    double tck_ns;
    int32_t bl; /* burst length (beats) */
    int32_t tccd_s, tccd_l, trcd, trp, tras, cl, trfc, trefi;
    /* PIM units */
    int32_t n_cmr;           /* MACs per streamed element; 0: as many as the model's GQA group */
    int32_t chips_per_head;  /* chips one KV head spreads over; 0: chips / g (8 for MHA, 1 for
                              * GQA-8), at least 1 */
    double rank_bus_gbs;     /* chips -> rank unit, GB/s; 0: the rank's pin bandwidth */
    double host_gbs;         /* host level: the CPU's DRAM bandwidth, GB/s; 0: measure it */
    double link_gbs;         /* host <-> accelerator link (q, k, v, out), GB/s */
    int64_t rank_tokens_max; /* tokens of one KV head of one sequence a rank holds before the
                              * rest spills to the next rank of its rankset; 0: as many as fit
                              * rank_bytes */
};

/* The presets: "chime" (CHIME Table I, the default), "rpim" (the same DIMMs with rank-level
 * units only), "host" (this machine's DRAM, host_gbs measured when the backend starts).
 * HS_E_NOENT for another name; *out untouched then. Thread: any. */
hs_status hs_pim_config_preset(const char *name, struct hs_pim_config *out);

/* Parses a configuration text: one `key = value` per line, '#' starts a comment, blank lines
 * are skipped; `preset = NAME` resets every key to that preset (so it comes first); the keys
 * are the field names above (level = bank | rank | host). Starts from the chime preset. Errors
 * (HS_E_FORMAT: unknown key, a line without '=', a value that is not a number or out of its
 * range) name the line in err ("LINE: ..."); *out is untouched on error. Thread: any. */
hs_status hs_pim_config_parse(const char *text, struct hs_pim_config *out, struct hs_error *err);

/* hs_pim_config_parse on a file's contents; err names the file and line. HS_E_IO when it cannot
 * be read. */
hs_status hs_pim_config_load(const char *path, struct hs_pim_config *out, struct hs_error *err);

/* HS_OK when every field is in range (the parser checks each line with it). */
hs_status hs_pim_config_check(const struct hs_pim_config *c, struct hs_error *err);

/* Fills c->host_gbs with this machine's DRAM read bandwidth: a probe of a few tens of
 * milliseconds streaming a buffer much larger than the caches. HS_E_NOMEM. Thread: any (it runs
 * on the caller's thread). */
hs_status hs_pim_config_measure_host(struct hs_pim_config *c);

/* ---- derived quantities ---- */

int32_t hs_pim_n_ranks(const struct hs_pim_config *c);
int32_t hs_pim_n_ranksets(const struct hs_pim_config *c); /* ranks per channel */
int32_t hs_pim_banks_per_chip(const struct hs_pim_config *c);
int64_t hs_pim_n_banks(const struct hs_pim_config *c);
double hs_pim_capacity_bytes(const struct hs_pim_config *c);
double hs_pim_burst_bytes(const struct hs_pim_config *c);      /* one chip's burst */
double hs_pim_bank_bytes_per_s(const struct hs_pim_config *c); /* one bank, streaming */
double hs_pim_rank_pin_bytes_per_s(const struct hs_pim_config *c);
double hs_pim_rank_bus_bytes_per_s(const struct hs_pim_config *c);
double hs_pim_row_efficiency(const struct hs_pim_config *c);     /* 1 at rank and host level */
double hs_pim_refresh_efficiency(const struct hs_pim_config *c); /* 1 at host level */
/* Peak streaming bandwidth of the whole configuration (bank level: banks x per bank; rank
 * level: ranks x pins; host level: host_gbs), and that times both efficiencies. */
double hs_pim_peak_bytes_per_s(const struct hs_pim_config *c);
double hs_pim_effective_bytes_per_s(const struct hs_pim_config *c);
/* chips_per_head for a model whose KV heads serve g query heads each (the config's, or chips /
 * g, clamped to [1, chips]); ceil(g / n_cmr) MAC passes over each streamed element. */
int32_t hs_pim_chips_per_head(const struct hs_pim_config *c, int32_t g);
int32_t hs_pim_mac_passes(const struct hs_pim_config *c, int32_t g);

/* ---- loads and times ---- */

/* The work of one rank in one layer. */
struct hs_pim_rank_load {
    double chip_bytes[HS_PIM_CHIPS_MAX]; /* K and V bytes each chip streams, times MAC passes */
    double comm_bytes;                   /* partial scores sent to the rank unit */
};

/* Adds n_tokens positions of one KV head (head_dim elements of elem_bytes in K and in V, g query
 * heads) on chips [chip0, chip0 + n_chips) of the rank: each chip streams its share of the
 * rows, and sends n_tokens * g partial scores (elem_bytes each) to the rank unit. */
void hs_pim_load_add(const struct hs_pim_config *c, struct hs_pim_rank_load *l, int32_t chip0,
                     int32_t n_chips, int64_t n_tokens, int32_t head_dim, int32_t elem_bytes,
                     int32_t g);

/* Seconds one rank takes for its load: max(compute, rank-bus transfer) at bank level, its bytes
 * over its pins at rank level, over host_gbs at host level (the host is one "rank"). */
double hs_pim_rank_time_s(const struct hs_pim_config *c, const struct hs_pim_rank_load *l);

/* Seconds of the host link for bytes. */
double hs_pim_link_time_s(const struct hs_pim_config *c, double bytes);

/* One layer: the slowest of the n ranks' loads and the link's transfer of link_bytes, overlapped
 * when there are two or more ranksets (see the top). *slowest (may be NULL) gets the slowest
 * rank's index. */
double hs_pim_layer_time_s(const struct hs_pim_config *c, const struct hs_pim_rank_load *loads,
                           int32_t n, double link_bytes, int32_t *slowest);

/* Bytes the link carries for n_rows query rows (of which n_new are new K/V rows) of a layer:
 * q and out (n_head heads), k and v (n_kv_head heads), head_dim elements of elem_bytes. */
double hs_pim_link_bytes(int64_t n_rows, int64_t n_new, int32_t n_head, int32_t n_kv_head,
                         int32_t head_dim, int32_t elem_bytes);

/* The time of a layer whose n_tokens_total positions (of heads with g query heads each) spread
 * evenly over every rank and chip: what the analytic system model charges a big batch whose
 * placement is balanced (the same rank and layer functions as above). */
double hs_pim_balanced_layer_time_s(const struct hs_pim_config *c, double n_tokens_total,
                                    int32_t head_dim, int32_t elem_bytes, int32_t g,
                                    double link_bytes);

#endif
