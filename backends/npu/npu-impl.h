/* The simulated NPU, for its implementation (mesh.c, map.c, memory.c, cost.c, npu.c) and its
 * tests. Users include backends/npu/npu.h.
 *
 * Cores are numbered y * mesh_x + x. Directed links are numbered core * 4 + dir (the link that
 * leaves core in direction dir), then two per memory port: n_cores * 4 + 2p into the port's edge
 * core and + 1 out of it. */
#ifndef HS_BACKENDS_NPU_NPU_IMPL_H
#define HS_BACKENDS_NPU_NPU_IMPL_H

#include "backends/backend.h"
#include "backends/npu/npu.h"

enum {
    HS__NPU_EAST,  /* +x */
    HS__NPU_WEST,  /* -x */
    HS__NPU_SOUTH, /* +y */
    HS__NPU_NORTH, /* -y */
    HS__NPU_DIRS,
};

/* One range translation entry: virtual [vbase, vbase + size) is physical [pbase, ...). */
struct hs__npu_range {
    uint64_t vbase, pbase, size;
};

/* Host memory given a place in a tenant's virtual off-chip space (a backend buffer; or, for the
 * cost model's own workloads, a range with no host memory behind it). */
struct hs__npu_region {
    uintptr_t host; /* address of its first byte (a token when there is no memory) */
    uint64_t size;
    uint64_t vbase;
};

struct hs__npu_tenant {
    bool live;
    int32_t w, h, k; /* virtual mesh, k = w * h cores */
    enum hs_npu_mapper mapper;
    /* route virtualisation */
    int32_t *v2p;      /* [k] route table: physical core of each virtual core */
    int32_t *p2v;      /* [n_cores] its inverse, -1 for cores not the tenant's */
    uint8_t *next_dir; /* [k][k] at virtual core i, the direction towards virtual core j: the
                        * XY direction, or where XY would leave the tenant a direction along a
                        * shortest path inside it (pinned); HS__NPU_DIRS at j itself */
    uint8_t *hops;     /* [k][k] hops of that route */
    bool *outside;     /* [k][k] no path inside the tenant (a disconnected zig-zag set): the
                        * route is the physical XY route */
    int32_t edit_distance, edges_kept, dilation, n_pinned;
    int32_t *reserved; /* [n_reserved] cores held unused (MIG) */
    int32_t n_reserved;
    /* the virtual tree q is multicast down and outputs gathered up: X along virtual row 0,
     * then Y down each virtual column, rooted at virtual core 0 */
    int32_t *parent;   /* [k], -1 at the root; a parent's id is below its children's */
    int32_t *serp;     /* [k] virtual cores in serpentine order (head groups take runs) */
    int32_t root_port; /* the memory port nearest the root: the host's way in and out */
    /* memory virtualisation */
    struct hs__npu_range *ranges; /* [n_ranges] sorted by vbase */
    int32_t n_ranges;
    struct hs__npu_region *regions;
    int32_t n_regions, cap_regions;
    uint64_t vtop; /* next free virtual address */
    /* off-chip traffic: a core's bytes spread over every port, each along the port's XY
     * route: per core, the links crossed and the share of the core's bytes each carries */
    int32_t *mem_off; /* [k + 1] into mem_link / mem_share */
    int32_t *mem_link;
    double *mem_share;
};

struct hs_npu_mesh {
    struct hs_npu_config cfg;
    int32_t n_cores, n_ports, n_links;
    int32_t *owner;                 /* [n_cores] tenant id or -1 */
    int32_t *port_core;             /* [n_ports] */
    double *link_width;             /* [n_links] bytes per cycle; 0 for links that do not exist */
    struct hs__npu_tenant *tenants; /* [cap_tenants], ids index it */
    int32_t cap_tenants;
    uint8_t *granule; /* [n_granules] off-chip granules in use */
    int64_t n_granules;
    /* cost-model scratch (one thread at a time) */
    double *load;    /* [n_links] */
    int32_t *stamp;  /* [n_links] */
    int32_t *vstamp; /* [max tenant cores] */
    int32_t stamp_now;
    double *vbytes; /* [3][max tenant cores] per-core bytes and latencies of a phase */
    double *pref;   /* [cap_pref] per-block prefix sums of one call's sequences */
    size_t cap_pref;
    size_t *pref_at; /* [cap_pref_at] where each sequence's sums start */
    size_t cap_pref_at;
};

/* ---- mesh.c: topology, routes, tenants ---- */

/* The core next to core in direction dir, or -1 at an edge without wrap-around. */
int32_t hs__npu_neighbor(const struct hs_npu_mesh *m, int32_t core, int dir);
/* Hops of the physical XY route from a to b (shorter way round on a torus). */
int32_t hs__npu_xy_hops(const struct hs_npu_mesh *m, int32_t a, int32_t b);
/* The direction XY routing takes at a towards b (HS__NPU_DIRS when a == b). */
int hs__npu_xy_dir(const struct hs_npu_mesh *m, int32_t a, int32_t b);
/* Appends the links of the physical XY route from a to b to links; returns how many. */
int32_t hs__npu_xy_links(const struct hs_npu_mesh *m, int32_t a, int32_t b, int32_t *links);

struct hs__npu_tenant *hs__npu_tenant_get(struct hs_npu_mesh *m, int32_t id);
/* Route translation: the physical core of virtual core vid. HS_E_RANGE when vid is not one of
 * the tenant's (or past the route table's entries). */
hs_status hs__npu_route(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t, int32_t vid,
                        int32_t *pid);
/* The virtual core of physical core pid in t, or -1 when it is not t's. */
int32_t hs__npu_route_back(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t,
                           int32_t pid);
/* The links of the tenant's route from virtual core i to j (as the route table sends it);
 * returns how many (at most mesh_x + mesh_y + k). */
int32_t hs__npu_route_links(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t, int32_t i,
                            int32_t j, int32_t *links);

/* ---- map.c: the mappers ---- */

/* Edges of the w x h virtual mesh. */
int32_t hs__npu_mesh_edges(int32_t w, int32_t h);
/* Topology edit distance between the w x h virtual mesh and the physical cores v2p[] (k of
 * them) under that mapping: request edges whose cores are not physical neighbours plus
 * physical links among the cores that are no request edge. *kept (may be NULL) gets the
 * request edges that are links. */
int32_t hs__npu_edit_distance(const struct hs_npu_mesh *m, int32_t w, int32_t h, const int32_t *v2p,
                              int32_t *kept);
/* The best mapping of the w x h virtual mesh onto exactly the k = w * h physical cores
 * cells[] (most request edges kept), by branch and bound
 * within budget nodes (best found so far past it). v2p gets it; returns its edit distance. */
int32_t hs__npu_map_onto(const struct hs_npu_mesh *m, int32_t w, int32_t h, const int32_t *cells,
                         int64_t budget, int32_t *v2p);
/* Physical cores in serpentine order (row 0 left to right, row 1 right to left, ...). */
void hs__npu_serpentine(int32_t w, int32_t h, int32_t *order);
/* Places a w x h tenant with how: v2p[k] and, for MIG, the cores of its slice it leaves unused
 * (reserved, at most n_cores). HS_E_BUSY when there is no room. Reads m->owner only. */
hs_status hs__npu_map(const struct hs_npu_mesh *m, int32_t w, int32_t h, enum hs_npu_mapper how,
                      int32_t *v2p, int32_t *reserved, int32_t *n_reserved);

/* ---- memory.c: off-chip memory and range translation ---- */

/* Gives [host, host + size) a place in t's virtual off-chip space, backed by free off-chip
 * granules (one range entry per physically contiguous run). HS_E_NOMEM when off-chip memory or
 * the range table is full; nothing changes then. */
hs_status hs__npu_region_map(struct hs_npu_mesh *m, struct hs__npu_tenant *t, uintptr_t host,
                             uint64_t size);
/* Frees the region that starts at host (no-op when there is none). */
void hs__npu_region_unmap(struct hs_npu_mesh *m, struct hs__npu_tenant *t, uintptr_t host);
/* The region holding address a, or NULL. */
const struct hs__npu_region *hs__npu_region_find(const struct hs__npu_tenant *t, uintptr_t a);
/* Translates vaddr through t's range table, walking from entry *cursor (then left there);
 * *steps (may be NULL) gets the entries stepped over. HS_E_RANGE when no entry holds vaddr. */
hs_status hs__npu_translate(const struct hs__npu_tenant *t, int32_t *cursor, uint64_t vaddr,
                            uint64_t *paddr, int32_t *steps);
/* The inverse: the virtual address of physical paddr in t. HS_E_RANGE when it is not t's. */
hs_status hs__npu_translate_back(const struct hs__npu_tenant *t, uint64_t paddr, uint64_t *vaddr);
/* Frees every region and range of t. */
void hs__npu_memory_release(struct hs_npu_mesh *m, struct hs__npu_tenant *t);

/* ---- cost.c: splitting attention over a tenant's cores, and its cost ---- */

struct hs__npu_shape {
    int32_t n_head, n_kv_head, head_dim;
    int32_t kv_elem_bytes; /* 2 (f16) or 4 (f32) */
    int32_t block_size;
};

/* Where the KV of one layer lives: its blocks' virtual addresses and which stay in SRAM. */
struct hs__npu_kv {
    bool mapped;           /* in a region of the tenant (else: no translation to do) */
    uint64_t k_vbase;      /* virtual address of block 0 of K */
    uint64_t v_vbase;      /* of V */
    uint64_t block_bytes;  /* bytes of one block of K (all its heads) */
    int64_t n_sram_blocks; /* blocks with ids below this are resident in SRAM */
};

/* One core's share of a (sequence, head group): KV positions [begin, end) of sequence seq,
 * chunk `chunk` of n_chunks (in position order). */
struct hs__npu_share {
    int32_t seq, group, core; /* core: virtual */
    int32_t begin, end;
    int16_t chunk, n_chunks;
};

/* How one attention call is split: head groups (KV heads [kvh0, kvh0 + n_kvh), each on the
 * virtual cores serp[core0 .. core0 + n_cores)), then shares, grouped by core (shares of a core
 * are contiguous, in sequence order). */
struct hs__npu_plan {
    int32_t n_groups;
    int32_t *kvh0, *n_kvh, *core0, *n_cores; /* [n_groups] */
    int32_t *group_of_core;                  /* [k] by virtual core */
    struct hs__npu_share *shares;            /* [n_shares] by core */
    struct hs__npu_share *made; /* [n_shares] the same in the order made: the chunks of a
                                 * (sequence, group) next to each other */
    int32_t n_shares;
    int32_t *core_first, *core_n; /* [k] each core's shares */
    double *load;                 /* [k] scratch */
    int32_t *pick;                /* [k] scratch */
    int32_t cap_groups, cap_shares, cap_cores;
};

void hs__npu_plan_free(struct hs__npu_plan *p);
/* Splits the attention of seqs over t's cores: heads first (groups of KV heads, one per core,
 * when there are at least as many KV heads as cores), else each KV head on a run of cores
 * over which its sequences are spread whole, the long ones cut into chunks by split. Every
 * (sequence with rows, group) gets at least one share. HS_E_NOMEM. */
hs_status hs__npu_plan_build(struct hs__npu_plan *p, const struct hs_npu_mesh *m,
                             const struct hs__npu_tenant *t, const struct hs__npu_shape *sh,
                             const struct hs_attn_seq *seqs, int32_t n_seqs,
                             enum hs_npu_split split);
/* The blocks a tenant keeps in SRAM when one block id's KV (K and V of every layer) takes
 * bytes_per_block: what its most loaded core's SRAM holds of its share of each block. */
int64_t hs__npu_sram_blocks(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t,
                            const struct hs__npu_shape *sh, uint64_t bytes_per_block);
/* The cost of running plan p (for seqs over kv) on t, into *out. HS_E_RANGE when a block's
 * address is not in the tenant's range table. */
hs_status hs__npu_cost(struct hs_npu_mesh *m, struct hs__npu_tenant *t,
                       const struct hs__npu_shape *sh, const struct hs__npu_kv *kv,
                       const struct hs_attn_seq *seqs, int32_t n_seqs, const struct hs__npu_plan *p,
                       struct hs_npu_cost *out);
/* Adds b into a (every field; total_s included). */
void hs__npu_cost_add(struct hs_npu_cost *a, const struct hs_npu_cost *b);

/* ---- npu.c: the backend ---- */

struct hs_backend;
/* The backend's mesh and own tenant id (for tests and the sim command). */
struct hs_npu_mesh *hs__npu_backend_mesh(struct hs_backend *be);
int32_t hs__npu_backend_tenant(struct hs_backend *be);
/* Wall time spent in attention calls since creation, and of it in the inner CPU backend's
 * calls (the real computation); the rest is what simulating the chip costs the host. */
void hs__npu_backend_host_time(struct hs_backend *be, double *attention_s, double *inner_s);
/* The cost of the last attention call, and the sum since creation. */
void hs__npu_backend_costs(struct hs_backend *be, struct hs_npu_cost *last,
                           struct hs_npu_cost *sum);

#endif
