/* The simulated inter-core-connected NPU (after vNPU, arXiv 2506.11446), for its users: the
 * backend registered as "npu", the `hetserve sim vnpu` reproduction, the CLI flags that
 * configure it.
 *
 * The chip is an X x Y mesh (or torus) of cores, each with SRAM and an N x N matrix unit, joined
 * by links of a given width and per-hop latency, with off-chip memory reached through ports on
 * some edges. Tenants (virtual NPUs) ask for a virtual topology, a w x h mesh of virtual cores;
 * a mapper picks free physical cores for it (the best-effort mapper minimising topology edit
 * distance, the zig-zag baseline, or MIG-style fixed slices), a per-tenant route table turns
 * virtual core ids into physical ones (with routes pinned where plain XY routing would leave the
 * tenant) and a range translation table turns the tenant's virtual off-chip addresses into
 * physical ones. The cost model charges attention by where the tenant's cores are: q multicast
 * and partial reduction over the mesh (hops x hop latency + bytes / link width, per link), KV
 * read from SRAM or streamed from off-chip memory, the matrix unit's cycles.
 *
 * Thread: a mesh and its tenants belong to one thread at a time (the backend's driver). */
#ifndef HS_BACKENDS_NPU_NPU_H
#define HS_BACKENDS_NPU_NPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ---- configuration ---- */

enum hs_npu_preset {
    HS_NPU_PRESET_VNPU,     /* vNPU's simulator (DCRA): 6 x 6, 500 MHz, 360 GB/s HBM */
    HS_NPU_PRESET_WORMHOLE, /* Tenstorrent-Wormhole-like: 10 x 8 torus, 1 GHz */
    HS_NPU_PRESET_COUNT,
};
const char *hs_npu_preset_str(enum hs_npu_preset p);

/* How a tenant's cores are chosen. */
enum hs_npu_mapper {
    HS_NPU_MAPPER_BEST,   /* best-effort: connected free cores of least topology edit distance */
    HS_NPU_MAPPER_ZIGZAG, /* baseline: virtual core i on the i-th free core in serpentine order */
    HS_NPU_MAPPER_MIG,    /* fixed slices (quarters, halves, the whole chip), as GPU MIG */
    HS_NPU_MAPPER_COUNT,
};
const char *hs_npu_mapper_str(enum hs_npu_mapper m);

/* When a sequence's KV range is cut into chunks on several cores (flash-decoding partials
 * merged on the chip). Whole sequences are spread over a head's cores in any case. */
enum hs_npu_split {
    HS_NPU_SPLIT_AUTO,   /* when a sequence is longer than its cores' fair share, its chunks
                          * would be at least min_chunk_tokens long, and the cost model says
                          * the reduction costs less than it saves */
    HS_NPU_SPLIT_NEVER,  /* never: every (sequence, head) is one partial, the CPU's bits */
    HS_NPU_SPLIT_ALWAYS, /* over every core of the head, a block or more each (tests) */
    HS_NPU_SPLIT_COUNT,
};
const char *hs_npu_split_str(enum hs_npu_split s);

/* Edges of the mesh with off-chip memory ports: one port per core of such an edge. */
#define HS_NPU_EDGE_WEST  1u
#define HS_NPU_EDGE_EAST  2u
#define HS_NPU_EDGE_NORTH 4u
#define HS_NPU_EDGE_SOUTH 8u

/* A chip. Units in the names; everything per core unless said. Config files set these by name
 * (the key is the field name: `mesh_x = 6`); see hs_npu_config_parse. */
struct hs_npu_config {
    char preset[16];               /* the preset it started from */
    int32_t mesh_x, mesh_y;        /* cores per row, rows (1..64 each) */
    bool torus;                    /* wrap-around links in both dimensions */
    double clock_hz;               /* core and NoC clock */
    int64_t sram_bytes;            /* SRAM of one core */
    double sram_kv_fraction;       /* of it, the part that keeps KV resident (0..1) */
    int32_t systolic;              /* the matrix unit is systolic x systolic MACs */
    int32_t sram_bytes_per_cycle;  /* what one core reads from its SRAM per cycle */
    int32_t link_bytes;            /* bytes per cycle of one link in one direction */
    int32_t hop_cycles;            /* router-to-router latency */
    int32_t route_cycles;          /* route-table lookup and rewrite at the injecting router */
    double offchip_bytes_per_s;    /* off-chip bandwidth, all ports together */
    int64_t offchip_bytes;         /* off-chip capacity */
    int64_t offchip_granule_bytes; /* allocation unit of off-chip memory (a power of two) */
    double offchip_share;          /* of the bandwidth, what one tenant gets; 0: an equal
                                    * share among the tenants on the chip */
    uint32_t mem_edges;            /* HS_NPU_EDGE_* bits */
    int32_t route_entries;         /* route table entries: virtual cores of one tenant */
    int32_t range_entries;         /* range translation table entries of one tenant */
    int32_t range_walk_cycles;     /* per entry the translation cursor steps over */
    int32_t elem_bytes;            /* q and outputs on the chip: bytes per element */
    enum hs_npu_mapper mapper;     /* how the backend places its tenants */
    enum hs_npu_split seq_split;   /* see enum hs_npu_split */
    int32_t min_chunk_tokens;      /* auto: a chunk has at least this many positions, so
                                    * sequences shorter than twice it stay whole (and exact) */
    int64_t map_budget;            /* connected candidate sets the best-effort mapper examines */
};

/* The preset's values (HARDWARE.md's "Mesh NPU (vNPU)"; README "Simulated NPU" lists them with
 * their sources). Thread: any. */
void hs_npu_config_preset(enum hs_npu_preset p, struct hs_npu_config *out);

/* Applies `key = value` lines to cfg: '#' starts a comment, blank lines are skipped, a
 * `preset = vnpu|wormhole` line resets every field to that preset first. source names the text
 * in errors. HS_E_FORMAT (a line that is not key = value, an unknown key, a bad value: the
 * message says "SOURCE:LINE: ..."), HS_E_INVAL (values that do not make a chip, from
 * hs_npu_config_check); cfg is left partly applied on error. Thread: any. */
hs_status hs_npu_config_parse(struct hs_npu_config *cfg, const char *text, const char *source,
                              struct hs_error *err);
/* Reads the file at path and parses it over the vNPU preset. HS_E_IO when it cannot be read;
 * otherwise as hs_npu_config_parse. */
hs_status hs_npu_config_load(struct hs_npu_config *cfg, const char *path, struct hs_error *err);
/* HS_E_INVAL, with the field named, unless every value is in range. */
hs_status hs_npu_config_check(const struct hs_npu_config *cfg, struct hs_error *err);

/* ---- tenant requests: --npu-tenants ---- */

#define HS_NPU_TENANTS_MAX 32

struct hs_npu_tenant_req {
    char name[32]; /* "" when unnamed */
    int32_t w, h;  /* virtual mesh */
    bool own;      /* the backend's own tenant: marked '*', else the first */
};

/* Parses "[*][NAME=]WxH[,...]" (e.g. "3x3,3x3" or "*qwen=3x3,llama=2x4"): the tenants in the
 * order they are placed; exactly one is the backend's own (the one marked '*', or the first).
 * HS_E_FORMAT with a message naming the bad item. Thread: any. */
hs_status hs_npu_tenants_parse(const char *spec, struct hs_npu_tenant_req *out, int32_t max,
                               int32_t *n, struct hs_error *err);

/* ---- the mesh and its tenants ---- */

struct hs_npu_mesh;

/* A chip with no tenants. HS_E_INVAL (cfg fails hs_npu_config_check), HS_E_NOMEM. Free with
 * hs_npu_mesh_destroy (which releases every tenant). */
hs_status hs_npu_mesh_create(const struct hs_npu_config *cfg, struct hs_npu_mesh **out);
void hs_npu_mesh_destroy(struct hs_npu_mesh *m);
const struct hs_npu_config *hs_npu_mesh_config(const struct hs_npu_mesh *m);
int32_t hs_npu_mesh_n_cores(const struct hs_npu_mesh *m);
int32_t hs_npu_mesh_free_cores(const struct hs_npu_mesh *m);
int32_t hs_npu_mesh_n_tenants(const struct hs_npu_mesh *m);

/* Places a tenant asking for a w x h virtual mesh with mapper how; *id >= 0 names it until
 * released. HS_E_INVAL (w or h < 1, more virtual cores than the route table holds),
 * HS_E_BUSY (the mapper finds no room: too few free cores, no connected set of them, or no
 * free MIG slice that holds w x h), HS_E_NOMEM. The mesh is unchanged on error. */
hs_status hs_npu_tenant_create(struct hs_npu_mesh *m, int32_t w, int32_t h, enum hs_npu_mapper how,
                               int32_t *id);
/* Frees the tenant's cores, off-chip memory and tables. Unknown ids: no-op. */
void hs_npu_tenant_release(struct hs_npu_mesh *m, int32_t id);

struct hs_npu_tenant_info {
    int32_t w, h, n_cores;
    enum hs_npu_mapper mapper;
    int32_t edit_distance; /* edges added + removed between the request and the placement */
    int32_t edges_kept;    /* edges of the request that are physical links */
    int32_t dilation;      /* sum over the request's edges of their routes' hops */
    int32_t n_pinned;      /* route entries whose direction is pinned (XY would leave it) */
    int32_t n_reserved;    /* cores held but unused (the rest of a MIG slice) */
    int32_t n_ranges;      /* range translation entries in use */
    const int32_t *phys;   /* [n_cores] physical core of each virtual core (y * mesh_x + x);
                            * borrowed until the tenant is released */
};
/* HS_E_NOENT for an unknown id. */
hs_status hs_npu_tenant_info(const struct hs_npu_mesh *m, int32_t id,
                             struct hs_npu_tenant_info *out);

/* Draws the mesh into buf, one text row per mesh row: '.' a free core, 'A' + id a tenant's
 * core (ids past 25 wrap), lower case a core a tenant holds unused. Returns the length it
 * needs (as snprintf). */
size_t hs_npu_mesh_draw(const struct hs_npu_mesh *m, char *buf, size_t cap);

/* ---- the cost model, on a workload of its own ---- */

/* Decode attention of a batch of sequences, one query row each, over an f16/f32 paged cache. */
struct hs_npu_workload {
    int32_t n_layer, n_head, n_kv_head, head_dim;
    int32_t kv_elem_bytes; /* 2 for an f16 cache */
    int32_t block_size;    /* tokens per KV block */
    int32_t n_seqs;
    const int32_t *n_ctx; /* [n_seqs] positions each sequence attends to; borrowed */
};

/* What one attention call (or a step's calls, summed) costs, in seconds and bytes. */
struct hs_npu_cost {
    double total_s;
    double scatter_s; /* q from the host to the tenant's cores over its virtual tree */
    double compute_s; /* the slowest of: a core's matrix unit and SRAM, off-chip bandwidth,
                       * the mesh links that carry off-chip data */
    double reduce_s;  /* partials of a chunked sequence to the core that merges them */
    double gather_s;  /* outputs back to the host */
    double offchip_s; /* of compute_s: the off-chip bandwidth bound */
    int64_t sram_bytes, offchip_bytes;
    int64_t noc_bytes;    /* bytes times links crossed */
    int64_t range_walks;  /* translation entries the cursors stepped over */
    int32_t n_merged;     /* vectors merged from several partials */
    int32_t n_cores_busy; /* cores with work */
};

/* The cost of one decode step of w (all layers: one layer's call times n_layer) on tenant id,
 * computed by the code the backend charges its attention with, over a KV cache of the
 * workload's blocks (each sequence's blocks numbered after the previous one's, the whole pool
 * in the tenant's off-chip memory, the blocks that fit kept in SRAM). HS_E_NOENT (no such
 * tenant), HS_E_INVAL (a bad workload), HS_E_NOMEM (the cache does not fit off-chip). */
hs_status hs_npu_estimate_decode(struct hs_npu_mesh *m, int32_t id, const struct hs_npu_workload *w,
                                 struct hs_npu_cost *out);

#endif
