/* Simulated backends (pim, npu), for their implementers: a simulated backend computes every
 * result through an inner CPU backend (so its results equal the CPU backend's) and adds the time
 * its model of the hardware charges to its stats (sim_time_s). It embeds struct hs__sim_base as
 * its first member and points the slots it does not model at the forwarders below, which run the
 * op on the inner backend; attention (and whatever else the hardware model charges) is its own.
 *
 * Thread: as any backend, one driving thread at a time. */
#ifndef HS_BACKENDS_SIM_IMPL_H
#define HS_BACKENDS_SIM_IMPL_H

#include "backends/backend-impl.h"

struct hs__sim_base {
    struct hs_backend base;   /* first */
    struct hs_backend *inner; /* the CPU backend that computes; owns */
};

/* Creates the inner CPU backend with params (threads, pinning, first core) into sb->inner and
 * copies its thread count into sb->base. Errors as hs_backend_create. */
hs_status hs__sim_init(struct hs__sim_base *sb, const struct hs_backend_params *params);
/* Destroys the inner backend (not sb itself). */
void hs__sim_finish(struct hs__sim_base *sb);

/* Adds seconds of simulated hardware time to be's stats. */
void hs__sim_charge(struct hs_backend *be, double seconds);

/* Forwarders: the op on sb->inner (be must embed struct hs__sim_base first). */
bool hs__sim_supports_op(struct hs_backend *be, enum hs_op op, enum hs_type t);
hs_status hs__sim_matmul(struct hs_backend *be, const struct hs_tensor *w,
                         const struct hs_tensor *x, struct hs_tensor *y);
hs_status hs__sim_get_rows(struct hs_backend *be, const struct hs_tensor *w, const hs_token *ids,
                           struct hs_tensor *y);
hs_status hs__sim_rms_norm(struct hs_backend *be, const struct hs_tensor *x,
                           const struct hs_tensor *w, float eps, struct hs_tensor *y);
hs_status hs__sim_rope(struct hs_backend *be, struct hs_tensor *x, const int32_t *pos,
                       const struct hs_rope_params *p);
hs_status hs__sim_add(struct hs_backend *be, const struct hs_tensor *a, const struct hs_tensor *b,
                      struct hs_tensor *y);
hs_status hs__sim_mul(struct hs_backend *be, const struct hs_tensor *a, const struct hs_tensor *b,
                      struct hs_tensor *y);
hs_status hs__sim_swiglu(struct hs_backend *be, const struct hs_tensor *gate,
                         const struct hs_tensor *up, struct hs_tensor *y);
hs_status hs__sim_kv_store(struct hs_backend *be, const struct hs_tensor *src,
                           struct hs_tensor *cache, const int32_t *slots);
hs_status hs__sim_attention(struct hs_backend *be, const struct hs_attn_args *args);
hs_status hs__sim_ffn(struct hs_backend *be, const struct hs_ffn_args *args);
hs_status hs__sim_moe_ffn(struct hs_backend *be, const struct hs_moe_ffn_args *args);
hs_status hs__sim_matmul_multi(struct hs_backend *be, int n, const struct hs_tensor *const *ws,
                               const struct hs_tensor *x, struct hs_tensor *const *ys);
void hs__sim_bind_caller(struct hs_backend *be);
void hs__sim_run_host(struct hs_backend *be, void (*fn)(void *ctx, int ith, int nth), void *ctx);

#endif
