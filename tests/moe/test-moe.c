/* moe/: every router variant and whole MoE layers against the float64 references of
 * tests/ref/ref-moe.c; grouping; expert placement across backends; bad input. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/cpu/quants.h"
#include "moe/moe.h"
#include "tests/ref/ref-moe.h"
#include "tests/ref/ref-ops.h"

static float *rand_floats(struct hs_rng *rng, int64_t n, float lo, float hi)
{
    float *p = malloc((size_t)n * sizeof(float));
    cr_assert_not_null(p);
    for (int64_t i = 0; i < n; i++) {
        p[i] = hs_rng_range(rng, lo, hi);
    }
    return p;
}

/* ---- routing ---- */

Test(moe, every_router_variant_matches_the_float64_reference)
{
    static const int n_experts[] = {8, 16, 60, 128};
    static const int ks[] = {1, 2, 4, 8};
    static const float scales[] = {1.0f, 2.5f};
    struct hs_rng rng;
    hs_rng_seed(&rng, 31);
    int n_checked = 0;
    for (int gating = 1; gating <= 3; gating++) {
        for (int norm = 0; norm < 2; norm++) {
            for (size_t si = 0; si < HS_ARRAY_LEN(scales); si++) {
                for (size_t ni = 0; ni < HS_ARRAY_LEN(n_experts); ni++) {
                    for (size_t ki = 0; ki < HS_ARRAY_LEN(ks); ki++) {
                        const int n = n_experts[ni], k = ks[ki];
                        if (k > n) {
                            continue;
                        }
                        const struct hs_moe_router r = {.n_expert = n,
                                                        .n_expert_used = k,
                                                        .gating = (enum hs_moe_gating)gating,
                                                        .norm_w = norm,
                                                        .w_scale = scales[si]};
                        cr_assert_eq(hs_moe_router_check(&r, NULL), HS_OK);
                        const int n_rows = 20;
                        float *logits = rand_floats(&rng, (int64_t)n_rows * n, -4.0f, 4.0f);
                        int32_t *ids = malloc((size_t)(n_rows * k) * sizeof(int32_t));
                        float *w = malloc((size_t)(n_rows * k) * sizeof(float));
                        float *probs = malloc((size_t)(n_rows * n) * sizeof(float));
                        hs_moe_route(&r, logits, n_rows, ids, w, probs);
                        for (int row = 0; row < n_rows; row++) {
                            int ref_ids[8];
                            double ref_w[8];
                            hs_ref_moe_route(logits + row * n, n, k, gating, norm, scales[si],
                                             ref_ids, ref_w);
                            /* Our slots are llama.cpp's: the reference's best-first order
                             * with the first two swapped. */
                            for (int j = 0; j < k; j++) {
                                const int rj = k > 1 && j < 2 ? 1 - j : j;
                                cr_assert_eq(ids[row * k + j], ref_ids[rj],
                                             "gating %d norm %d n %d k %d row %d slot %d: "
                                             "expert %d, reference %d",
                                             gating, norm, n, k, row, j, ids[row * k + j],
                                             ref_ids[rj]);
                                const double got = w[row * k + j];
                                cr_assert(fabs(got - ref_w[rj]) <= 1e-6 * fabs(ref_w[rj]) + 1e-7,
                                          "gating %d norm %d scale %g n %d k %d: weight %.9g, "
                                          "reference %.9g",
                                          gating, norm, (double)scales[si], n, k, got, ref_w[rj]);
                            }
                            if (norm) {
                                double s = 0.0;
                                for (int j = 0; j < k; j++) {
                                    s += w[row * k + j];
                                }
                                const double want = scales[si] == 1.0f ? 1.0 : scales[si];
                                cr_assert(fabs(s - want) < 1e-5, "renormalised weights sum %g", s);
                            }
                            if (gating == 1) {
                                double s = 0.0;
                                for (int e = 0; e < n; e++) {
                                    s += probs[row * n + e];
                                }
                                cr_assert(fabs(s - 1.0) < 1e-5, "softmax sums to %g", s);
                            }
                        }
                        n_checked++;
                        free(probs);
                        free(w);
                        free(ids);
                        free(logits);
                    }
                }
            }
        }
    }
    cr_assert_eq(n_checked, 3 * 2 * 2 * 16);
}

Test(moe, ties_go_to_the_lower_expert_and_top_1_is_not_swapped)
{
    const float logits[8] = {0.5f, 2.0f, 2.0f, -1.0f, 2.0f, 0.0f, 0.5f, 1.0f};
    const struct hs_moe_router r = {.n_expert = 8,
                                    .n_expert_used = 3,
                                    .gating = HS_MOE_GATING_SOFTMAX,
                                    .norm_w = false,
                                    .w_scale = 1.0f};
    int32_t ids[3];
    float w[3];
    hs_moe_route(&r, logits, 1, ids, w, NULL);
    /* Best first would be 1, 2, 4; the first two are swapped. */
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(ids[1], 1);
    cr_assert_eq(ids[2], 4);
    cr_assert_eq(w[0], w[1]);
    /* Top-1 without renormalisation (Hunyuan-Large): the winner's softmax probability. */
    const struct hs_moe_router r1 = {.n_expert = 8,
                                     .n_expert_used = 1,
                                     .gating = HS_MOE_GATING_SOFTMAX,
                                     .norm_w = false,
                                     .w_scale = 1.0f};
    const float l1[8] = {0.1f, -0.3f, 0.2f, 1.5f, 0.0f, 0.4f, -2.0f, 0.9f};
    hs_moe_route(&r1, l1, 1, ids, w, NULL);
    int ref_id;
    double ref_w;
    hs_ref_moe_route(l1, 8, 1, 1, false, 1.0f, &ref_id, &ref_w);
    cr_assert_eq(ids[0], 3);
    cr_assert_eq(ref_id, 3);
    cr_assert(fabs(w[0] - ref_w) < 1e-7 && w[0] < 0.5f, "top-1 weight %g (not renormalised)",
              (double)w[0]);
}

Test(moe, bad_router_options_are_rejected_with_a_reason)
{
    struct hs_error err = {0};
    struct hs_moe_router r = {
        .n_expert = 8, .n_expert_used = 9, .gating = HS_MOE_GATING_SOFTMAX, .w_scale = 1.0f};
    cr_assert_eq(hs_moe_router_check(&r, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "expert_used_count"), "%s", err.message);
    r.n_expert_used = 2;
    r.gating = (enum hs_moe_gating)7;
    cr_assert_eq(hs_moe_router_check(&r, &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "gating"), "%s", err.message);
    r.gating = HS_MOE_GATING_SIGMOID;
    r.n_expert = 0;
    cr_assert_eq(hs_moe_router_check(&r, &err), HS_E_INVAL);
    r.n_expert = 8;
    r.w_scale = NAN;
    cr_assert_eq(hs_moe_router_check(&r, &err), HS_E_INVAL);
    r.w_scale = 1.0f;
    cr_assert_eq(hs_moe_router_check(&r, &err), HS_OK);
    cr_assert_str_eq(hs_moe_gating_str(HS_MOE_GATING_SIGMOID), "sigmoid");
}

/* ---- grouping ---- */

Test(moe, plan_groups_pairs_by_expert_in_row_order)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 5);
    const int32_t n_rows = 37, k = 3, n_exp = 10;
    int32_t ids[37 * 3];
    for (int32_t r = 0; r < n_rows; r++) {
        /* k distinct experts per row, skewed towards low ids (some experts get none). */
        for (int32_t j = 0; j < k; j++) {
            int32_t e;
            bool dup;
            do {
                e = (int32_t)(hs_rng_range(&rng, 0.0f, 1.0f) * hs_rng_range(&rng, 0.0f, 1.0f) *
                              (float)n_exp);
                e = HS_MIN(e, n_exp - 1);
                dup = false;
                for (int32_t i = 0; i < j; i++) {
                    dup = dup || ids[r * k + i] == e;
                }
            } while (dup);
            ids[r * k + j] = e;
        }
    }
    int32_t begin[11], src[37 * 3], pos[37 * 3];
    struct hs_moe_plan plan = {.begin = begin, .src_row = src, .pos = pos};
    hs_moe_plan_build(&plan, ids, n_rows, k, n_exp);
    cr_assert_eq(begin[0], 0);
    cr_assert_eq(begin[n_exp], n_rows * k);
    for (int32_t e = 0; e < n_exp; e++) {
        int32_t count = 0;
        for (int32_t i = 0; i < n_rows * k; i++) {
            count += ids[i] == e;
        }
        cr_assert_eq(begin[e + 1] - begin[e], count, "expert %d", e);
        for (int32_t p = begin[e] + 1; p < begin[e + 1]; p++) {
            cr_assert_lt(src[p - 1], src[p], "rows of expert %d in order", e);
        }
    }
    for (int32_t i = 0; i < n_rows * k; i++) {
        const int32_t p = pos[i];
        cr_assert_eq(src[p], i / k);
        cr_assert(p >= begin[ids[i]] && p < begin[ids[i] + 1]);
    }
}

/* ---- layers ---- */

/* Expert weights: a stack of n matrices [rows][cols] of type t, random, with their exact
 * dequantization for the reference. */
struct stack {
    void *q;
    float *deq;
    struct hs_tensor t;
};

static void make_stack(struct stack *s, struct hs_rng *rng, enum hs_type t, int64_t cols,
                       int64_t rows, int64_t n)
{
    const size_t row = hs_type_row_size(t, cols);
    float *f = rand_floats(rng, cols * rows * n, -0.2f, 0.2f);
    s->q = malloc(row * (size_t)(rows * n));
    s->deq = malloc((size_t)(cols * rows * n) * sizeof(float));
    cr_assert(s->q && s->deq);
    for (int64_t r = 0; r < rows * n; r++) {
        hs__quantize_row_ref(t, f + r * cols, (char *)s->q + (size_t)r * row, cols);
        hs__dequantize_row_ref(t, (char *)s->q + (size_t)r * row, s->deq + r * cols, cols);
    }
    free(f);
    const int64_t ne[3] = {cols, rows, n};
    cr_assert_eq(hs_tensor_init(&s->t, t, n > 1 ? 3 : 2, ne, s->q), HS_OK);
}

static void free_stack(struct stack *s)
{
    free(s->q);
    free(s->deq);
}

static struct hs_backend *cpu(int n_threads)
{
    struct hs_backend_params p = hs_backend_default_params();
    p.n_threads = n_threads;
    p.pin_threads = false;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("cpu", &p, &be), HS_OK);
    return be;
}

struct layer_case {
    enum hs_type type;
    int n_expert, k, gating;
    bool norm;
    float scale;
    int shared; /* 0 none, 1 ungated (Hunyuan), 2 sigmoid-gated (qwen2moe) */
};

struct layer {
    struct stack router, gate, up, down, sh_gate, sh_up, sh_down, sh_inp;
    struct hs_moe_layer w;
};

static void make_layer(struct layer *l, struct hs_rng *rng, const struct layer_case *c, int n_embd,
                       int n_ff, int n_ff_sh)
{
    memset(l, 0, sizeof(*l));
    make_stack(&l->router, rng, HS_TYPE_F32, n_embd, c->n_expert, 1);
    for (int64_t i = 0; i < (int64_t)n_embd * c->n_expert; i++) {
        l->router.deq[i] *= 10.0f; /* spread the logits so routing is decisive */
        ((float *)l->router.q)[i] = l->router.deq[i];
    }
    make_stack(&l->gate, rng, c->type, n_embd, n_ff, c->n_expert);
    make_stack(&l->up, rng, c->type, n_embd, n_ff, c->n_expert);
    make_stack(&l->down, rng, c->type, n_ff, n_embd, c->n_expert);
    l->w = (struct hs_moe_layer){.gate_inp = &l->router.t,
                                 .gate_exps = &l->gate.t,
                                 .up_exps = &l->up.t,
                                 .down_exps = &l->down.t};
    if (c->shared) {
        make_stack(&l->sh_gate, rng, c->type, n_embd, n_ff_sh, 1);
        make_stack(&l->sh_up, rng, c->type, n_embd, n_ff_sh, 1);
        make_stack(&l->sh_down, rng, c->type, n_ff_sh, n_embd, 1);
        l->w.gate_shexp = &l->sh_gate.t;
        l->w.up_shexp = &l->sh_up.t;
        l->w.down_shexp = &l->sh_down.t;
    }
    if (c->shared == 2) {
        make_stack(&l->sh_inp, rng, HS_TYPE_F32, n_embd, 1, 1);
        l->sh_inp.t.n_dims = 1;
        l->w.gate_inp_shexp = &l->sh_inp.t;
    }
}

static void free_layer(struct layer *l)
{
    struct stack *s[] = {&l->router,  &l->gate,  &l->up,      &l->down,
                         &l->sh_gate, &l->sh_up, &l->sh_down, &l->sh_inp};
    for (size_t i = 0; i < HS_ARRAY_LEN(s); i++) {
        free_stack(s[i]);
    }
}

Test(moe, layers_match_the_float64_reference)
{
    static const struct layer_case cases[] = {
        {HS_TYPE_F32, 8, 2, 1, true, 1.0f, 0},   /* Mixtral */
        {HS_TYPE_F32, 8, 4, 1, false, 1.0f, 2},  /* qwen2moe */
        {HS_TYPE_Q8_0, 16, 4, 1, true, 1.0f, 0}, /* qwen3moe */
        {HS_TYPE_F32, 16, 1, 1, false, 1.0f, 1}, /* Hunyuan-Large: top-1, shared MLP */
        {HS_TYPE_F32, 12, 3, 2, true, 2.5f, 1},  /* sigmoid gate, scaled (DeepSeek-style) */
        {HS_TYPE_Q8_0, 8, 8, 3, false, 1.0f, 2}, /* softmax over the chosen, all experts */
    };
    static const int rows[] = {1, 6, 41};
    const int n_embd = 64, n_ff = 96, n_ff_sh = 128;
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    struct hs_backend *be = cpu(2);
    for (size_t ci = 0; ci < HS_ARRAY_LEN(cases); ci++) {
        const struct layer_case *c = &cases[ci];
        struct layer l;
        make_layer(&l, &rng, c, n_embd, n_ff, n_ff_sh);
        const struct hs_moe_params mp = {.router = {.n_expert = c->n_expert,
                                                    .n_expert_used = c->k,
                                                    .gating = (enum hs_moe_gating)c->gating,
                                                    .norm_w = c->norm,
                                                    .w_scale = c->scale},
                                         .n_layer = 2,
                                         .n_embd = n_embd,
                                         .n_ff = n_ff,
                                         .n_ff_shexp = n_ff_sh,
                                         .n_rows_max = 64};
        struct hs_moe *moe = NULL;
        struct hs_error err = {0};
        cr_assert_eq(hs_moe_create(&mp, &moe, &err), HS_OK, "%s", err.message);
        uint64_t counts[16] = {0};
        for (size_t ri = 0; ri < HS_ARRAY_LEN(rows); ri++) {
            const int n = rows[ri];
            float *x = rand_floats(&rng, (int64_t)n * n_embd, -1.0f, 1.0f);
            float *y = rand_floats(&rng, (int64_t)n * n_embd, -1.0f, 1.0f);
            float *ref = malloc((size_t)(n * n_embd) * sizeof(float));
            hs_ref_moe_layer(x, n, n_embd, l.router.deq, c->n_expert, c->k, c->gating, c->norm,
                             c->scale, l.gate.deq, l.up.deq, l.down.deq, n_ff,
                             c->shared ? l.sh_gate.deq : NULL, l.sh_up.deq, l.sh_down.deq, n_ff_sh,
                             c->shared == 2 ? l.sh_inp.deq : NULL, ref, counts);
            struct hs_tensor tx, ty;
            hs_tensor_init_2d(&tx, HS_TYPE_F32, n_embd, n, x);
            hs_tensor_init_2d(&ty, HS_TYPE_F32, n_embd, n, y);
            cr_assert_eq(hs_moe_forward(moe, be, 1, &l.w, &tx, &ty), HS_OK);
            const double tol = c->type == HS_TYPE_F32 ? 1e-5 : 2e-2;
            const double e = hs_ref_rel_err(y, ref, (int64_t)n * n_embd);
            cr_assert(e < tol, "case %zu (%s, %d experts, k %d) rows %d: error %g", ci,
                      hs_type_str(c->type), c->n_expert, c->k, n, e);
            free(ref);
            free(y);
            free(x);
        }
        /* Hot-expert counters: every routed row, per expert, as the reference routed them. */
        uint64_t total = 0;
        for (int e = 0; e < c->n_expert; e++) {
            cr_assert_eq(hs_moe_expert_tokens(moe, 1, e), counts[e], "case %zu expert %d", ci, e);
            cr_assert_eq(hs_moe_expert_tokens(moe, 0, e), 0);
            total += counts[e];
        }
        cr_assert_eq(total, (uint64_t)(1 + 6 + 41) * (uint64_t)c->k);
        hs_moe_destroy(moe);
        free_layer(&l);
    }
    hs_backend_destroy(be);
}

Test(moe, experts_placed_on_another_backend_give_the_same_bits)
{
    const struct layer_case c = {HS_TYPE_Q8_0, 8, 4, 1, false, 1.0f, 2};
    const int n_embd = 64, n_ff = 64, n_ff_sh = 64, n = 9;
    struct hs_rng rng;
    hs_rng_seed(&rng, 99);
    struct layer l;
    make_layer(&l, &rng, &c, n_embd, n_ff, n_ff_sh);
    const struct hs_moe_params mp = {.router = {.n_expert = 8,
                                                .n_expert_used = 4,
                                                .gating = HS_MOE_GATING_SOFTMAX,
                                                .w_scale = 1.0f},
                                     .n_layer = 1,
                                     .n_embd = n_embd,
                                     .n_ff = n_ff,
                                     .n_ff_shexp = n_ff_sh,
                                     .n_rows_max = n};
    struct hs_moe *one = NULL, *two = NULL;
    cr_assert_eq(hs_moe_create(&mp, &one, NULL), HS_OK);
    cr_assert_eq(hs_moe_create(&mp, &two, NULL), HS_OK);
    struct hs_backend *a = cpu(2), *b = cpu(1);
    /* Odd experts and the shared expert on b: a's experts are not adjacent in the grouping. */
    for (int e = 1; e < 8; e += 2) {
        cr_assert_eq(hs_moe_set_backend(two, 0, e, b), HS_OK);
    }
    cr_assert_eq(hs_moe_set_backend(two, 0, -1, b), HS_OK);
    cr_assert_eq(hs_moe_get_backend(two, 0, 3), b);
    cr_assert_null(hs_moe_get_backend(two, 0, 2));
    cr_assert_eq(hs_moe_set_backend(two, 0, 8, b), HS_E_INVAL);
    cr_assert_eq(hs_moe_set_backend(two, 1, 0, b), HS_E_INVAL);

    float *x = rand_floats(&rng, (int64_t)n * n_embd, -1.0f, 1.0f);
    float *y1 = rand_floats(&rng, (int64_t)n * n_embd, -1.0f, 1.0f);
    float *y2 = rand_floats(&rng, (int64_t)n * n_embd, -1.0f, 1.0f);
    struct hs_tensor tx, t1, t2;
    hs_tensor_init_2d(&tx, HS_TYPE_F32, n_embd, n, x);
    hs_tensor_init_2d(&t1, HS_TYPE_F32, n_embd, n, y1);
    hs_tensor_init_2d(&t2, HS_TYPE_F32, n_embd, n, y2);
    cr_assert_eq(hs_moe_forward(one, a, 0, &l.w, &tx, &t1), HS_OK);
    hs_backend_reset_stats(a);
    cr_assert_eq(hs_moe_forward(two, a, 0, &l.w, &tx, &t2), HS_OK);
    cr_assert_eq(memcmp(y1, y2, (size_t)(n * n_embd) * sizeof(float)), 0);

    /* Each backend read exactly the experts placed on it that some row chose. */
    const uint64_t expert_bytes = 3 * (uint64_t)n_ff * hs_type_row_size(HS_TYPE_Q8_0, n_embd);
    uint64_t want_a = 0, want_b = 0;
    for (int e = 0; e < 8; e++) {
        if (hs_moe_expert_tokens(two, 0, e) > 0) {
            *(e % 2 ? &want_b : &want_a) += expert_bytes;
        }
    }
    struct hs_backend_stats sa, sb;
    hs_backend_get_stats(a, &sa);
    hs_backend_get_stats(b, &sb);
    cr_assert_gt(sa.n_ops[HS_OP_MOE_FFN], 0);
    cr_assert_gt(sb.n_ops[HS_OP_MOE_FFN], 0);
    cr_assert_eq(sb.n_ops[HS_OP_FFN], 1, "the shared expert ran on b");
    cr_assert_eq(sa.n_ops[HS_OP_FFN], 0);
    const uint64_t router = (uint64_t)8 * hs_type_row_size(HS_TYPE_F32, n_embd);
    const uint64_t sh = 3 * (uint64_t)n_ff_sh * hs_type_row_size(HS_TYPE_Q8_0, n_embd) +
                        hs_type_row_size(HS_TYPE_F32, n_embd);
    cr_assert_eq(sa.weight_bytes_read, want_a + router);
    cr_assert_eq(sb.weight_bytes_read, want_b + sh);
    hs_backend_destroy(b);
    hs_backend_destroy(a);
    hs_moe_destroy(two);
    hs_moe_destroy(one);
    free(y2);
    free(y1);
    free(x);
    free_layer(&l);
}

Test(moe, bad_shapes_are_rejected)
{
    const struct layer_case c = {HS_TYPE_F32, 8, 2, 1, true, 1.0f, 0};
    struct hs_rng rng;
    hs_rng_seed(&rng, 3);
    struct layer l;
    make_layer(&l, &rng, &c, 64, 32, 32);
    const struct hs_moe_params mp = {.router = {.n_expert = 8,
                                                .n_expert_used = 2,
                                                .gating = HS_MOE_GATING_SOFTMAX,
                                                .norm_w = true,
                                                .w_scale = 1.0f},
                                     .n_layer = 1,
                                     .n_embd = 64,
                                     .n_ff = 32,
                                     .n_rows_max = 4};
    struct hs_moe *moe = NULL;
    cr_assert_eq(hs_moe_create(&mp, &moe, NULL), HS_OK);
    struct hs_backend *be = cpu(1);
    float *x = rand_floats(&rng, 5 * 64, -1.0f, 1.0f);
    float *y = rand_floats(&rng, 5 * 64, -1.0f, 1.0f);
    struct hs_tensor tx, ty;
    hs_tensor_init_2d(&tx, HS_TYPE_F32, 64, 5, x);
    hs_tensor_init_2d(&ty, HS_TYPE_F32, 64, 5, y);
    cr_assert_eq(hs_moe_forward(moe, be, 0, &l.w, &tx, &ty), HS_E_INVAL, "more rows than max");
    hs_tensor_init_2d(&tx, HS_TYPE_F32, 64, 2, x);
    hs_tensor_init_2d(&ty, HS_TYPE_F32, 64, 3, y);
    cr_assert_eq(hs_moe_forward(moe, be, 0, &l.w, &tx, &ty), HS_E_INVAL, "row counts differ");
    hs_tensor_init_2d(&ty, HS_TYPE_F32, 64, 2, y);
    cr_assert_eq(hs_moe_forward(moe, be, 1, &l.w, &tx, &ty), HS_E_INVAL, "no such layer");
    struct hs_moe_layer w = l.w;
    w.gate_inp = &l.gate.t; /* 8 * 32 rows: not one per expert */
    cr_assert_eq(hs_moe_forward(moe, be, 0, &w, &tx, &ty), HS_E_INVAL);
    cr_assert_eq(hs_moe_forward(moe, be, 0, &l.w, &tx, &ty), HS_OK);
    struct hs_moe_params bad = mp;
    bad.router.n_expert_used = 0;
    struct hs_moe *m2 = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_moe_create(&bad, &m2, &err), HS_E_INVAL);
    cr_assert_null(m2);
    cr_assert(err.message[0]);
    hs_backend_destroy(be);
    hs_moe_destroy(moe);
    free(y);
    free(x);
    free_layer(&l);
}
