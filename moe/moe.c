/* Mixture-of-experts layers (see moe/moe.h for the data flow). */
#include "moe/moe.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

const char *hs_moe_gating_str(enum hs_moe_gating g)
{
    switch (g) {
    case HS_MOE_GATING_SOFTMAX:
        return "softmax";
    case HS_MOE_GATING_SIGMOID:
        return "sigmoid";
    case HS_MOE_GATING_SOFTMAX_WEIGHT:
        return "softmax_weight";
    case HS_MOE_GATING_COUNT:
        break;
    }
    return "unknown";
}

hs_status hs_moe_router_check(const struct hs_moe_router *r, struct hs_error *err)
{
    if (r->n_expert < 1 || r->n_expert > HS_MOE_MAX_EXPERTS) {
        return hs_error_set(err, HS_E_INVAL, "expert count %d is out of range (1..%d)", r->n_expert,
                            HS_MOE_MAX_EXPERTS);
    }
    if (r->n_expert_used < 1 || r->n_expert_used > r->n_expert ||
        r->n_expert_used > HS_MOE_MAX_USED) {
        return hs_error_set(err, HS_E_INVAL,
                            "expert_used_count %d is out of range (1..%d with %d experts)",
                            r->n_expert_used, HS_MIN(r->n_expert, HS_MOE_MAX_USED), r->n_expert);
    }
    if (r->gating != HS_MOE_GATING_SOFTMAX && r->gating != HS_MOE_GATING_SIGMOID &&
        r->gating != HS_MOE_GATING_SOFTMAX_WEIGHT) {
        return hs_error_set(err, HS_E_INVAL,
                            "expert gating function %d is not supported (1 softmax, 2 sigmoid, "
                            "3 softmax over the chosen weights)",
                            (int)r->gating);
    }
    if (!isfinite(r->w_scale)) {
        return hs_error_set(err, HS_E_INVAL, "expert_weights_scale is not a finite number");
    }
    return HS_OK;
}

/* ---- routing ---- */

/* y = softmax(x) over n values as ggml_soft_max on the CPU: exponentials of x - max summed in
 * double, then one multiply by the float reciprocal of the sum. */
static void softmax_row(const float *x, float *y, int32_t n)
{
    float max = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        max = x[i] > max ? x[i] : max;
    }
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        const float v = expf(x[i] - max);
        sum += (double)v;
        y[i] = v;
    }
    const float inv = (float)(1.0 / sum);
    for (int32_t i = 0; i < n; i++) {
        y[i] *= inv;
    }
}

/* The k largest of p[0..n) (ties to the lower index), best first: an insertion into a sorted
 * list of k, which for router sizes (k <= 64, n <= 1024) beats sorting. */
static void top_k(const float *p, int32_t n, int32_t k, int32_t *ids)
{
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        if (m == k && !(p[i] > p[ids[k - 1]])) {
            continue;
        }
        int32_t j = m < k ? m++ : k - 1;
        while (j > 0 && p[i] > p[ids[j - 1]]) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
}

void hs_moe_route(const struct hs_moe_router *r, const float *logits, int32_t n_rows, int32_t *ids,
                  float *weights, float *probs_out)
{
    const int32_t n = r->n_expert;
    const int32_t k = r->n_expert_used;
    float probs[HS_MOE_MAX_EXPERTS];
    for (int32_t row = 0; row < n_rows; row++) {
        const float *lg = logits + (size_t)row * (size_t)n;
        int32_t *id = ids + (size_t)row * (size_t)k;
        float *w = weights + (size_t)row * (size_t)k;
        switch (r->gating) {
        case HS_MOE_GATING_SIGMOID:
            for (int32_t i = 0; i < n; i++) {
                probs[i] = 1.0f / (1.0f + expf(-lg[i]));
            }
            break;
        case HS_MOE_GATING_SOFTMAX_WEIGHT:
            memcpy(probs, lg, (size_t)n * sizeof(float));
            break;
        case HS_MOE_GATING_SOFTMAX:
        default:
            softmax_row(lg, probs, n);
            break;
        }
        if (probs_out) {
            memcpy(probs_out + (size_t)row * (size_t)n, probs, (size_t)n * sizeof(float));
        }
        top_k(probs, n, k, id);
        if (k > 1) {
            /* ggml_top_k leaves its first two in swapped order; the weighted sum follows it. */
            const int32_t t = id[0];
            id[0] = id[1];
            id[1] = t;
        }
        for (int32_t j = 0; j < k; j++) {
            w[j] = probs[id[j]];
        }
        if (r->gating == HS_MOE_GATING_SOFTMAX_WEIGHT) {
            float sm[HS_MOE_MAX_USED];
            softmax_row(w, sm, k);
            memcpy(w, sm, (size_t)k * sizeof(float));
        }
        if (r->norm_w) {
            double sum = 0.0;
            for (int32_t j = 0; j < k; j++) {
                sum += (double)w[j];
            }
            /* As llama.cpp: the float sum, clamped away from zero, divides each weight. */
            const float s = HS_MAX((float)sum, 6.103515625e-5f);
            for (int32_t j = 0; j < k; j++) {
                w[j] = w[j] / s;
            }
        }
        if (r->w_scale != 0.0f && r->w_scale != 1.0f) {
            for (int32_t j = 0; j < k; j++) {
                w[j] *= r->w_scale;
            }
        }
    }
}

/* ---- grouping ---- */

void hs_moe_plan_build(struct hs_moe_plan *plan, const int32_t *ids, int32_t n_rows, int32_t n_used,
                       int32_t n_expert)
{
    plan->n_rows = n_rows;
    plan->n_used = n_used;
    plan->n_expert = n_expert;
    int32_t *begin = plan->begin;
    memset(begin, 0, (size_t)(n_expert + 1) * sizeof(*begin));
    const int32_t n_pairs = n_rows * n_used;
    for (int32_t i = 0; i < n_pairs; i++) {
        begin[ids[i] + 1]++;
    }
    for (int32_t e = 0; e < n_expert; e++) {
        begin[e + 1] += begin[e];
    }
    /* A counting sort: begin[e] walks forward as pairs are placed, then is restored. */
    for (int32_t i = 0; i < n_pairs; i++) {
        const int32_t p = begin[ids[i]]++;
        plan->pos[i] = p;
        plan->src_row[p] = i / n_used;
    }
    for (int32_t e = n_expert; e > 0; e--) {
        begin[e] = begin[e - 1];
    }
    begin[0] = 0;
}

/* ---- layers ---- */

struct hs_moe {
    struct hs_moe_params p;
    struct hs_backend **be;   /* [n_layer][n_expert + 1] placement (slot 0: shared expert); NULL =
                                 the forward call's backend; borrowed */
    _Atomic uint64_t *tokens; /* [n_layer][n_expert] rows routed */

    /* Per-call buffers for n_rows_max rows (n_pairs_max = n_rows_max * n_expert_used). */
    void *mem;
    float *logits;  /* [n_rows_max][n_expert] */
    float *weights; /* [n_pairs_max] */
    int32_t *ids;   /* [n_pairs_max] */
    struct hs_moe_plan plan;
    float *xg;       /* [n_pairs_max][n_embd] rows gathered by expert */
    float *yg;       /* [n_pairs_max][n_embd] expert outputs, grouped */
    float *sg;       /* [n_pairs_max][n_ff] gate scratch */
    float *su;       /* [n_pairs_max][n_ff] up scratch */
    float *sh;       /* [n_rows_max][n_embd] shared expert output */
    float *sh_gate;  /* [n_rows_max] shared expert gate logits */
    float *shg;      /* [n_rows_max][n_ff_shexp] shared gate scratch */
    float *shu;      /* [n_rows_max][n_ff_shexp] shared up scratch */
    int32_t *groups; /* [n_expert] experts of one backend's call */
    int32_t *bounds; /* [2 * n_expert + 2] their row bounds */
};

hs_status hs_moe_create(const struct hs_moe_params *p, struct hs_moe **out, struct hs_error *err)
{
    *out = NULL;
    HS_TRY(hs_moe_router_check(&p->router, err));
    if (p->n_layer < 1 || p->n_embd < 1 || p->n_ff < 1 || p->n_ff_shexp < 0 || p->n_rows_max < 1 ||
        p->n_rows_max > (1 << 20) / p->router.n_expert_used) {
        return hs_error_set(err, HS_E_INVAL, "bad mixture-of-experts shape");
    }
    struct hs_moe *moe = calloc(1, sizeof(*moe));
    if (!moe) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    moe->p = *p;
    const size_t n_exp = (size_t)p->router.n_expert;
    const size_t rows = (size_t)p->n_rows_max;
    const size_t pairs = rows * (size_t)p->router.n_expert_used;
    const size_t f = sizeof(float);
    moe->be = calloc((size_t)p->n_layer * (n_exp + 1), sizeof(*moe->be));
    moe->tokens = calloc((size_t)p->n_layer * n_exp, sizeof(*moe->tokens));
    size_t off = 0;
    const size_t o_logits = hs_carve(&off, rows * n_exp * f);
    const size_t o_w = hs_carve(&off, pairs * f);
    const size_t o_ids = hs_carve(&off, pairs * sizeof(int32_t));
    const size_t o_begin = hs_carve(&off, (n_exp + 1) * sizeof(int32_t));
    const size_t o_src = hs_carve(&off, pairs * sizeof(int32_t));
    const size_t o_pos = hs_carve(&off, pairs * sizeof(int32_t));
    const size_t o_xg = hs_carve(&off, pairs * (size_t)p->n_embd * f);
    const size_t o_yg = hs_carve(&off, pairs * (size_t)p->n_embd * f);
    const size_t o_sg = hs_carve(&off, pairs * (size_t)p->n_ff * f);
    const size_t o_su = hs_carve(&off, pairs * (size_t)p->n_ff * f);
    const size_t o_sh = hs_carve(&off, rows * (size_t)p->n_embd * f);
    const size_t o_shgate = hs_carve(&off, rows * f);
    const size_t o_shg = hs_carve(&off, rows * (size_t)p->n_ff_shexp * f);
    const size_t o_shu = hs_carve(&off, rows * (size_t)p->n_ff_shexp * f);
    const size_t o_groups = hs_carve(&off, n_exp * sizeof(int32_t));
    const size_t o_bounds = hs_carve(&off, (2 * n_exp + 2) * sizeof(int32_t));
    moe->mem = hs_alloc_aligned(off);
    if (!moe->be || !moe->tokens || !moe->mem) {
        hs_moe_destroy(moe);
        return hs_error_set(err, HS_E_NOMEM,
                            "out of memory for mixture-of-experts buffers (%zu MiB)", off >> 20);
    }
    char *m = moe->mem;
    moe->logits = (float *)(m + o_logits);
    moe->weights = (float *)(m + o_w);
    moe->ids = (int32_t *)(m + o_ids);
    moe->plan.begin = (int32_t *)(m + o_begin);
    moe->plan.src_row = (int32_t *)(m + o_src);
    moe->plan.pos = (int32_t *)(m + o_pos);
    moe->xg = (float *)(m + o_xg);
    moe->yg = (float *)(m + o_yg);
    moe->sg = (float *)(m + o_sg);
    moe->su = (float *)(m + o_su);
    moe->sh = (float *)(m + o_sh);
    moe->sh_gate = (float *)(m + o_shgate);
    moe->shg = (float *)(m + o_shg);
    moe->shu = (float *)(m + o_shu);
    moe->groups = (int32_t *)(m + o_groups);
    moe->bounds = (int32_t *)(m + o_bounds);
    *out = moe;
    return HS_OK;
}

void hs_moe_destroy(struct hs_moe *moe)
{
    if (!moe) {
        return;
    }
    free(moe->be);
    free(moe->tokens);
    hs_free_aligned(moe->mem);
    free(moe);
}

const struct hs_moe_router *hs_moe_get_router(const struct hs_moe *moe)
{
    return &moe->p.router;
}

static bool index_ok(const struct hs_moe *moe, int32_t il, int32_t e)
{
    return il >= 0 && il < moe->p.n_layer && e >= -1 && e < moe->p.router.n_expert;
}

hs_status hs_moe_set_backend(struct hs_moe *moe, int32_t il, int32_t e, struct hs_backend *be)
{
    if (!moe || !index_ok(moe, il, e)) {
        return HS_E_INVAL;
    }
    moe->be[(size_t)il * (size_t)(moe->p.router.n_expert + 1) + (size_t)(e + 1)] = be;
    return HS_OK;
}

struct hs_backend *hs_moe_get_backend(const struct hs_moe *moe, int32_t il, int32_t e)
{
    if (!moe || !index_ok(moe, il, e)) {
        return NULL;
    }
    return moe->be[(size_t)il * (size_t)(moe->p.router.n_expert + 1) + (size_t)(e + 1)];
}

uint64_t hs_moe_expert_tokens(const struct hs_moe *moe, int32_t il, int32_t e)
{
    if (!moe || !index_ok(moe, il, e) || e < 0) {
        return 0;
    }
    return atomic_load_explicit(
        &moe->tokens[(size_t)il * (size_t)moe->p.router.n_expert + (size_t)e],
        memory_order_relaxed);
}

/* The experts placed on each backend, one expert FFN call per backend. */
static hs_status run_experts(struct hs_moe *moe, struct hs_backend *def, int32_t il,
                             const struct hs_moe_layer *w)
{
    const struct hs_moe_plan *plan = &moe->plan;
    const int32_t n_exp = moe->p.router.n_expert;
    const int32_t n_pairs = plan->begin[n_exp];
    struct hs_backend **placed = moe->be + (size_t)il * (size_t)(n_exp + 1) + 1;
    struct hs_tensor xg = hs_tensor_f32_2d(moe->xg, moe->p.n_embd, n_pairs);
    struct hs_tensor yg = hs_tensor_f32_2d(moe->yg, moe->p.n_embd, n_pairs);
    struct hs_tensor sg = hs_tensor_f32_2d(moe->sg, moe->p.n_ff, n_pairs);
    struct hs_tensor su = hs_tensor_f32_2d(moe->su, moe->p.n_ff, n_pairs);
    /* Backends in order of their first expert with rows; each runs its experts as groups. */
    uint64_t done[(HS_MOE_MAX_EXPERTS + 63) / 64] = {0};
    for (int32_t e0 = 0; e0 < n_exp; e0++) {
        if ((done[e0 / 64] >> (e0 % 64)) & 1 || plan->begin[e0 + 1] == plan->begin[e0]) {
            continue;
        }
        struct hs_backend *be = placed[e0] ? placed[e0] : def;
        int32_t n_groups = 0;
        for (int32_t e = e0; e < n_exp; e++) {
            struct hs_backend *b = placed[e] ? placed[e] : def;
            if (b != be || plan->begin[e + 1] == plan->begin[e]) {
                continue;
            }
            done[e / 64] |= 1ull << (e % 64);
            moe->groups[n_groups] = e;
            moe->bounds[2 * n_groups] = plan->begin[e];
            moe->bounds[2 * n_groups + 1] = plan->begin[e + 1];
            n_groups++;
        }
        /* Groups of one backend are not adjacent when experts alternate between backends:
         * run them as single-group calls then, so row_begin stays a list of bounds. */
        bool contiguous = true;
        for (int32_t g = 1; g < n_groups; g++) {
            contiguous = contiguous && moe->bounds[2 * g] == moe->bounds[2 * g - 1];
        }
        if (contiguous) {
            for (int32_t g = 1; g < n_groups; g++) {
                moe->bounds[g] = moe->bounds[2 * g];
            }
            moe->bounds[n_groups] = moe->bounds[2 * n_groups - 1];
            const struct hs_moe_ffn_args a = {.w_gate = w->gate_exps,
                                              .w_up = w->up_exps,
                                              .w_down = w->down_exps,
                                              .x = &xg,
                                              .y = &yg,
                                              .experts = moe->groups,
                                              .row_begin = moe->bounds,
                                              .n_groups = n_groups,
                                              .scratch_gate = &sg,
                                              .scratch_up = &su};
            HS_TRY(hs_backend_moe_ffn(be, &a));
            continue;
        }
        for (int32_t g = 0; g < n_groups; g++) {
            const int32_t rb[2] = {moe->bounds[2 * g], moe->bounds[2 * g + 1]};
            const struct hs_moe_ffn_args a = {.w_gate = w->gate_exps,
                                              .w_up = w->up_exps,
                                              .w_down = w->down_exps,
                                              .x = &xg,
                                              .y = &yg,
                                              .experts = &moe->groups[g],
                                              .row_begin = rb,
                                              .n_groups = 1,
                                              .scratch_gate = &sg,
                                              .scratch_up = &su};
            HS_TRY(hs_backend_moe_ffn(be, &a));
        }
    }
    return HS_OK;
}

static hs_status shared_expert(struct hs_moe *moe, struct hs_backend *def, int32_t il,
                               const struct hs_moe_layer *w, const struct hs_tensor *x)
{
    const int32_t n_rows = (int32_t)x->ne[1];
    struct hs_backend *be = hs_moe_get_backend(moe, il, -1);
    be = be ? be : def;
    struct hs_tensor sh = hs_tensor_f32_2d(moe->sh, moe->p.n_embd, n_rows);
    struct hs_tensor g = hs_tensor_f32_2d(moe->shg, w->gate_shexp->ne[1], n_rows);
    struct hs_tensor u = hs_tensor_f32_2d(moe->shu, w->gate_shexp->ne[1], n_rows);
    const struct hs_ffn_args a = {.w_gate = w->gate_shexp,
                                  .w_up = w->up_shexp,
                                  .w_down = w->down_shexp,
                                  .x = x,
                                  .y = &sh,
                                  .scratch_gate = &g,
                                  .scratch_up = &u};
    HS_TRY(hs_backend_ffn(be, &a));
    if (!w->gate_inp_shexp) {
        return HS_OK;
    }
    struct hs_tensor gw = *w->gate_inp_shexp; /* [n_embd] as a matrix of one row */
    gw.ne[1] = 1;
    struct hs_tensor gl = hs_tensor_f32_2d(moe->sh_gate, 1, n_rows);
    HS_TRY(hs_backend_matmul(be, &gw, x, &gl));
    for (int32_t r = 0; r < n_rows; r++) {
        /* llama.cpp's qwen2moe takes this sigmoid as silu(x) / x (two roundings). */
        const float z = moe->sh_gate[r];
        const float s = z == 0.0f ? 0.5f : z / (1.0f + expf(-z)) / z;
        float *row = moe->sh + (size_t)r * (size_t)moe->p.n_embd;
        for (int32_t i = 0; i < moe->p.n_embd; i++) {
            row[i] *= s;
        }
    }
    return HS_OK;
}

hs_status hs_moe_forward(struct hs_moe *moe, struct hs_backend *be, int32_t il,
                         const struct hs_moe_layer *w, const struct hs_tensor *x,
                         struct hs_tensor *y)
{
    const struct hs_moe_router *r = &moe->p.router;
    const int32_t n_embd = moe->p.n_embd;
    if (!be || !w || !x || !y || il < 0 || il >= moe->p.n_layer || x->type != HS_TYPE_F32 ||
        y->type != HS_TYPE_F32 || x->ne[0] != n_embd || y->ne[0] != n_embd ||
        x->ne[1] != y->ne[1] || x->ne[1] < 1 || x->ne[1] > moe->p.n_rows_max ||
        !hs_tensor_is_contiguous(x) || !hs_tensor_is_contiguous(y) || !w->gate_inp ||
        !w->gate_exps || !w->up_exps || !w->down_exps || w->gate_inp->ne[1] != r->n_expert ||
        w->gate_exps->ne[2] != r->n_expert || w->gate_exps->ne[1] != moe->p.n_ff ||
        (w->gate_shexp &&
         (!w->up_shexp || !w->down_shexp || w->gate_shexp->ne[1] > moe->p.n_ff_shexp))) {
        return HS_E_INVAL;
    }
    const int32_t n_rows = (int32_t)x->ne[1];
    const int32_t k = r->n_expert_used;

    struct hs_tensor lg = hs_tensor_f32_2d(moe->logits, r->n_expert, n_rows);
    HS_TRY(hs_backend_matmul(be, w->gate_inp, x, &lg));
    hs_moe_route(r, moe->logits, n_rows, moe->ids, moe->weights, NULL);
    hs_moe_plan_build(&moe->plan, moe->ids, n_rows, k, r->n_expert);
    for (int32_t e = 0; e < r->n_expert; e++) {
        const int32_t n = moe->plan.begin[e + 1] - moe->plan.begin[e];
        if (n > 0) {
            atomic_fetch_add_explicit(&moe->tokens[(size_t)il * (size_t)r->n_expert + (size_t)e],
                                      (uint64_t)n, memory_order_relaxed);
        }
    }
    const size_t row_bytes = (size_t)n_embd * sizeof(float);
    const int32_t n_pairs = n_rows * k;
    for (int32_t p = 0; p < n_pairs; p++) {
        memcpy(moe->xg + (size_t)p * (size_t)n_embd,
               (const char *)x->data + (size_t)moe->plan.src_row[p] * x->nb[1], row_bytes);
    }
    HS_TRY(run_experts(moe, be, il, w));
    if (w->gate_shexp) {
        HS_TRY(shared_expert(moe, be, il, w, x));
    }

    /* y = sum over slots of weight * expert output, each product rounded before it is added, in
     * slot order (llama.cpp multiplies, then adds the views one by one); then the shared
     * expert's output. */
    for (int32_t row = 0; row < n_rows; row++) {
        float *yr = (float *)((char *)y->data + (size_t)row * y->nb[1]);
        for (int32_t j = 0; j < k; j++) {
            const float wj = moe->weights[(size_t)row * (size_t)k + (size_t)j];
            const float *e =
                moe->yg + (size_t)moe->plan.pos[(size_t)row * (size_t)k + (size_t)j] * n_embd;
            if (j == 0) {
                for (int32_t i = 0; i < n_embd; i++) {
                    yr[i] = e[i] * wj;
                }
                continue;
            }
            for (int32_t i = 0; i < n_embd; i++) {
                const float t = e[i] * wj;
                yr[i] = yr[i] + t;
            }
        }
        if (w->gate_shexp) {
            const float *s = moe->sh + (size_t)row * (size_t)n_embd;
            for (int32_t i = 0; i < n_embd; i++) {
                yr[i] = yr[i] + s[i];
            }
        }
    }
    return HS_OK;
}
