/* The common part of the simulated backends: an inner CPU backend computes, the forwarders below
 * pass each op to it (see sim-impl.h). */
#include "backends/sim-impl.h"

#include <string.h>

static struct hs_backend *inner(struct hs_backend *be)
{
    return ((struct hs__sim_base *)be)->inner;
}

hs_status hs__sim_init(struct hs__sim_base *sb, const struct hs_backend_params *params)
{
    HS_TRY(hs__backend_cpu_create(params, &sb->inner));
    memset(&sb->inner->stats, 0, sizeof(sb->inner->stats));
    sb->base.n_threads = sb->inner->n_threads;
    return HS_OK;
}

void hs__sim_finish(struct hs__sim_base *sb)
{
    hs_backend_destroy(sb->inner);
    sb->inner = NULL;
}

void hs__sim_charge(struct hs_backend *be, double seconds)
{
    be->stats.sim_time_s += seconds;
}

bool hs__sim_supports_op(struct hs_backend *be, enum hs_op op, enum hs_type t)
{
    return hs_backend_supports(inner(be), op, t);
}

hs_status hs__sim_matmul(struct hs_backend *be, const struct hs_tensor *w,
                         const struct hs_tensor *x, struct hs_tensor *y)
{
    return hs_backend_matmul(inner(be), w, x, y);
}

hs_status hs__sim_get_rows(struct hs_backend *be, const struct hs_tensor *w, const hs_token *ids,
                           struct hs_tensor *y)
{
    return hs_backend_get_rows(inner(be), w, ids, y);
}

hs_status hs__sim_rms_norm(struct hs_backend *be, const struct hs_tensor *x,
                           const struct hs_tensor *w, float eps, struct hs_tensor *y)
{
    return hs_backend_rms_norm(inner(be), x, w, eps, y);
}

hs_status hs__sim_rope(struct hs_backend *be, struct hs_tensor *x, const int32_t *pos,
                       const struct hs_rope_params *p)
{
    return hs_backend_rope(inner(be), x, pos, p);
}

hs_status hs__sim_add(struct hs_backend *be, const struct hs_tensor *a, const struct hs_tensor *b,
                      struct hs_tensor *y)
{
    return hs_backend_add(inner(be), a, b, y);
}

hs_status hs__sim_mul(struct hs_backend *be, const struct hs_tensor *a, const struct hs_tensor *b,
                      struct hs_tensor *y)
{
    return hs_backend_mul(inner(be), a, b, y);
}

hs_status hs__sim_swiglu(struct hs_backend *be, const struct hs_tensor *gate,
                         const struct hs_tensor *up, struct hs_tensor *y)
{
    return hs_backend_swiglu(inner(be), gate, up, y);
}

hs_status hs__sim_kv_store(struct hs_backend *be, const struct hs_tensor *src,
                           struct hs_tensor *cache, const int32_t *slots)
{
    return hs_backend_kv_store(inner(be), src, cache, slots);
}

hs_status hs__sim_attention(struct hs_backend *be, const struct hs_attn_args *args)
{
    return hs_backend_attention(inner(be), args);
}

hs_status hs__sim_ffn(struct hs_backend *be, const struct hs_ffn_args *args)
{
    return hs_backend_ffn(inner(be), args);
}

hs_status hs__sim_moe_ffn(struct hs_backend *be, const struct hs_moe_ffn_args *args)
{
    return hs_backend_moe_ffn(inner(be), args);
}

hs_status hs__sim_matmul_multi(struct hs_backend *be, int n, const struct hs_tensor *const *ws,
                               const struct hs_tensor *x, struct hs_tensor *const *ys)
{
    return hs_backend_matmul_multi(inner(be), n, ws, x, ys);
}

void hs__sim_bind_caller(struct hs_backend *be)
{
    hs_backend_bind_caller(inner(be));
}

void hs__sim_run_host(struct hs_backend *be, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    hs__backend_run_host(inner(be), fn, ctx);
}
