/* Backends, for their implementers (and tests). Users include backends/backend.h only.
 *
 * An implementation embeds struct hs_backend as its first member and points iface at one static
 * struct hs_backend_iface. Only backends/backend.c calls through iface: it validates arguments,
 * checks supports_op, supplies defaults for NULL slots and counts stats. New slots go at the end
 * with a version bump. */
#ifndef HS_BACKENDS_BACKEND_IMPL_H
#define HS_BACKENDS_BACKEND_IMPL_H

#include "backends/backend.h"

#define HS_BACKEND_IFACE_VERSION 5

struct hs_backend_iface {
    uint32_t version; /* HS_BACKEND_IFACE_VERSION */
    const char *name;

    /* Frees everything the backend owns, including itself. Required. */
    void (*destroy)(struct hs_backend *be);

    /* Required: can this backend run op on weights/cache of type t? */
    bool (*supports_op)(struct hs_backend *be, enum hs_op op, enum hs_type t);

    /* Operations: arguments are validated by backend.c before the call. NULL means not
     * implemented (FFN falls back to matmul + swiglu + matmul). */
    hs_status (*matmul)(struct hs_backend *be, const struct hs_tensor *w, const struct hs_tensor *x,
                        struct hs_tensor *y);
    hs_status (*get_rows)(struct hs_backend *be, const struct hs_tensor *w, const hs_token *ids,
                          struct hs_tensor *y);
    hs_status (*rms_norm)(struct hs_backend *be, const struct hs_tensor *x,
                          const struct hs_tensor *w, float eps, struct hs_tensor *y);
    hs_status (*rope)(struct hs_backend *be, struct hs_tensor *x, const int32_t *pos,
                      const struct hs_rope_params *p);
    hs_status (*add)(struct hs_backend *be, const struct hs_tensor *a, const struct hs_tensor *b,
                     struct hs_tensor *y);
    hs_status (*mul)(struct hs_backend *be, const struct hs_tensor *a, const struct hs_tensor *b,
                     struct hs_tensor *y);
    hs_status (*swiglu)(struct hs_backend *be, const struct hs_tensor *gate,
                        const struct hs_tensor *up, struct hs_tensor *y);
    hs_status (*kv_store)(struct hs_backend *be, const struct hs_tensor *src,
                          struct hs_tensor *cache, const int32_t *slots);
    hs_status (*attention)(struct hs_backend *be, const struct hs_attn_args *args);
    hs_status (*ffn)(struct hs_backend *be, const struct hs_ffn_args *args); /* optional */

    hs_status (*synchronize)(struct hs_backend *be); /* optional: NULL = always synchronous */

    /* Version 2. Optional: NULL runs each group through ffn (or its default) on the expert's
     * plane. */
    hs_status (*moe_ffn)(struct hs_backend *be, const struct hs_moe_ffn_args *args);
    /* Optional: NULL runs n matmuls. */
    hs_status (*matmul_multi)(struct hs_backend *be, int n, const struct hs_tensor *const *ws,
                              const struct hs_tensor *x, struct hs_tensor *const *ys);

    /* Version 3: memory the backend owns. All optional: NULL slots give host memory
     * (hs_alloc_aligned, zero-filled) moved with memcpy, which is what cpu and the simulated
     * backends use. A backend with memory of its own (a GPU) sets them all and says
     * buffer_is_host false. Ranges were checked by backend.c. */
    hs_status (*buffer_alloc)(struct hs_backend *be, size_t bytes, void **base);
    void (*buffer_free)(struct hs_backend *be, void *base);
    bool (*buffer_is_host)(struct hs_backend *be);
    /* host -> buffer, buffer -> host, and buffer -> buffer within this backend */
    hs_status (*buffer_set)(struct hs_backend *be, void *dst, const void *src, size_t n);
    hs_status (*buffer_get)(struct hs_backend *be, void *dst, const void *src, size_t n);
    hs_status (*buffer_copy)(struct hs_backend *be, void *dst, const void *src, size_t n);
    /* Optional: binds the calling thread to where the backend's own threads run (pinned CPU
     * pools), before that thread drives it. NULL: nothing to do. */
    void (*bind_caller)(struct hs_backend *be);

    /* Version 4. Optional: runs fn(ctx, ith, nth) once on each of the backend's host threads
     * (ith 0 on the caller) and returns when all have finished. fn shares its work out through
     * a counter that every thread draws from (backend.c's), so a thread that never starts it
     * may be cancelled. NULL: the caller runs fn(ctx, 0, 1) alone. */
    void (*run_host)(struct hs_backend *be, void (*fn)(void *ctx, int ith, int nth), void *ctx);

    /* Version 5. Optional: prepares a constant weight for later products (the CPU backend
     * repacks Q4_0 weights for prompt processing). w validated by backend.c (2-D, rows nb[1]
     * apart). NULL: nothing to prepare. */
    hs_status (*prepare_weight)(struct hs_backend *be, const struct hs_tensor *w);
};

struct hs_backend {
    const struct hs_backend_iface *iface;
    int32_t n_threads;
    struct hs_backend_stats stats; /* counted by backend.c; sim_time_s added by the backend */
};

/* be's run_host, or fn(ctx, 0, 1) on the caller when it has none: for backends that hand
 * their host work to an inner backend (the simulated ones). */
void hs__backend_run_host(struct hs_backend *be, void (*fn)(void *ctx, int ith, int nth),
                          void *ctx);

/* Registry rows: one constructor per compiled backend. */
typedef hs_status (*hs_backend_create_fn)(const struct hs_backend_params *params,
                                          struct hs_backend **out);

/* Constructors of the backends compiled in (see backend.c's table). */
hs_status hs__backend_cpu_create(const struct hs_backend_params *params, struct hs_backend **out);
/* backends/npu/npu.c: the simulated mesh NPU (params->config, params->tenants). */
hs_status hs__backend_npu_create(const struct hs_backend_params *params, struct hs_backend **out);
/* backends/pim/pim.c: the simulated DIMM-PIM (params->config). */
hs_status hs__backend_pim_create(const struct hs_backend_params *params, struct hs_backend **out);

#endif
