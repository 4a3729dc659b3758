/* Every op on every registered backend against the float64 references in tests/ref/, in the
 * spirit of ggml's test-backend-ops; plus argument validation, stats and the CPU thread pool.
 * The layer-sized ops (attention, FFN, MoE) are in test-backend-ops-layers.c. */
#include "backends/cpu/cpu.h"
#include "backends/cpu/pool.h"
#include "tests/backends/backend-ops-fixtures.h"

/* ---- matmul ---- */

static void check_matmul(struct hs_backend *be, struct hs_rng *rng, enum hs_type type, int64_t n_in,
                         int64_t n_out, int64_t n_rows)
{
    struct weights w;
    make_weights(&w, rng, type, n_in, n_out);
    float *x = rand_floats(rng, n_in * n_rows, -1.0f, 1.0f);
    float *y = rand_floats(rng, n_out * n_rows, -9.0f, 9.0f);
    float *ref = malloc((size_t)(n_out * n_rows) * sizeof(float));
    struct hs_tensor tx, ty;
    cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, n_rows, x), HS_OK);
    cr_assert_eq(hs_tensor_init_2d(&ty, HS_TYPE_F32, n_out, n_rows, y), HS_OK);
    hs_status st = hs_backend_matmul(be, &w.t, &tx, &ty);
    cr_assert_eq(st, HS_OK, "%s matmul %s: %s", hs_backend_name(be), hs_type_str(type),
                 hs_status_str(st));
    hs_ref_matmul(w.deq, x, ref, n_out, n_in, n_rows);
    const double err = hs_ref_rel_err(y, ref, n_out * n_rows);
    cr_assert(err < matmul_tol(type),
              "%s matmul %s n_in=%lld n_out=%lld n_rows=%lld nth=%d: "
              "err %g",
              hs_backend_name(be), hs_type_str(type), (long long)n_in, (long long)n_out,
              (long long)n_rows, hs_backend_n_threads(be), err);
    free(ref);
    free(y);
    free(x);
    free_weights(&w);
}

Test(backend_ops, matmul_every_weight_type_shape_and_thread_count)
{
    static const int64_t rows[] = {1, 3, 17, 64};
    static const int64_t ins[] = {256, 512, 1024};
    static const int64_t outs[] = {67, 16, 5};
    struct hs_rng rng;
    hs_rng_seed(&rng, 1234);
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t k = 0; k < HS_ARRAY_LEN(weight_types); k++) {
                if (!hs_backend_supports(be, HS_OP_MATMUL, weight_types[k])) {
                    cr_assert_neq(reg, 0, "cpu must support %s", hs_type_str(weight_types[k]));
                    continue;
                }
                for (size_t r = 0; r < HS_ARRAY_LEN(rows); r++) {
                    const size_t i = (r + k) % HS_ARRAY_LEN(ins);
                    const size_t o = (r + ti) % HS_ARRAY_LEN(outs);
                    check_matmul(be, &rng, weight_types[k], ins[i], outs[o], rows[r]);
                }
            }
            hs_backend_destroy(be);
        }
    }
}

/* Batch invariance, which the engine's lossless speculative decoding and batched decode rest
 * on: every row of a matmul of 1..17, 31..33 and 63..67 activation rows is, bit for bit, the
 * matmul of that row alone, whatever tile or form it lands in (rows and outputs no multiple of
 * the 4 x 4 tiles, 2 x 4 register passes, groups of 16 or the thread's chunks; the split form
 * from 16 or 64 rows, the group form from 32), and near the float64 reference (over all 67
 * rows: a handful of outputs is too few for a relative error). The CPU backend on the best ISA,
 * every weight type (Q4_K's tiles of 4 activation rows once followed ggml's gemm order, and a
 * request's tokens then depended on the requests batched beside it). */
Test(backend_ops, matmul_rows_are_batch_invariant_bit_for_bit)
{
    static const int64_t outs[] = {37, 6};
    struct hs_rng rng;
    hs_rng_seed(&rng, 4321);
    for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
        struct hs_backend *be = make_backend(0, thread_counts[ti]);
        for (size_t k = 0; k < HS_ARRAY_LEN(weight_types); k++) {
            const enum hs_type type = weight_types[k];
            const int64_t n_in = hs_type_traits(type)->blck_size == HS_QK_K ? 768 : 576;
            const int64_t n_out = outs[(k + ti) % HS_ARRAY_LEN(outs)];
            struct weights w;
            make_weights(&w, &rng, type, n_in, n_out);
            const int64_t max_rows = 67;
            float *x = rand_floats(&rng, n_in * max_rows, -1.0f, 1.0f);
            float *y = malloc((size_t)(n_out * max_rows) * sizeof(float));
            float *alone = malloc((size_t)(n_out * max_rows) * sizeof(float));
            float *ref = malloc((size_t)(n_out * max_rows) * sizeof(float));
            cr_assert(y && alone && ref);
            struct hs_tensor tx, ty;
            for (int64_t r = 0; r < max_rows; r++) {
                cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, 1, x + r * n_in), HS_OK);
                cr_assert_eq(hs_tensor_init_2d(&ty, HS_TYPE_F32, n_out, 1, alone + r * n_out),
                             HS_OK);
                cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_OK);
            }
            hs_ref_matmul(w.deq, x, ref, n_out, n_in, max_rows);
            cr_assert(hs_ref_rel_err(alone, ref, n_out * max_rows) < matmul_tol(type), "%s",
                      hs_type_str(type));
            /* 1..17, then around the split and group forms' thresholds (split_min_rows: 16
             * and 64; group_min_rows: 32) */
            for (int64_t n_rows = 1; n_rows <= max_rows; n_rows = n_rows == 17   ? 31
                                                                  : n_rows == 33 ? 63
                                                                                 : n_rows + 1) {
                cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, n_rows, x), HS_OK);
                cr_assert_eq(hs_tensor_init_2d(&ty, HS_TYPE_F32, n_out, n_rows, y), HS_OK);
                cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_OK);
                for (int64_t i = 0; i < n_out * n_rows; i++) {
                    cr_assert(memcmp(&y[i], &alone[i], sizeof(float)) == 0,
                              "%s nth=%d %lld rows: row %lld out %lld: %.9g batched, %.9g alone",
                              hs_type_str(type), thread_counts[ti], (long long)n_rows,
                              (long long)(i / n_out), (long long)(i % n_out), y[i], alone[i]);
                }
            }
            free(ref);
            free(alone);
            free(y);
            free(x);
            free_weights(&w);
        }
        hs_backend_destroy(be);
    }
}

Test(backend_ops, matmul_reuses_scratch_across_shrinking_and_growing_shapes)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 99);
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend *be = make_backend(reg, 2);
        check_matmul(be, &rng, HS_TYPE_Q8_0, 512, 40, 33);
        check_matmul(be, &rng, HS_TYPE_Q8_0, 256, 12, 2);
        check_matmul(be, &rng, HS_TYPE_Q4_K, 768, 9, 70);
        hs_backend_destroy(be);
    }
}

/* ---- get_rows ---- */

Test(backend_ops, get_rows_dequantizes_every_weight_type)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 5);
    const int64_t n_in = 512, n_vocab = 37;
    const hs_token ids[] = {0, 36, 5, 5, 17, 1, 30};
    const int64_t n = (int64_t)HS_ARRAY_LEN(ids);
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t k = 0; k < HS_ARRAY_LEN(weight_types); k++) {
                struct weights w;
                make_weights(&w, &rng, weight_types[k], n_in, n_vocab);
                float *y = rand_floats(&rng, n_in * n, -1.0f, 1.0f);
                struct hs_tensor ty;
                cr_assert_eq(hs_tensor_init_2d(&ty, HS_TYPE_F32, n_in, n, y), HS_OK);
                cr_assert_eq(hs_backend_get_rows(be, &w.t, ids, &ty), HS_OK);
                for (int64_t r = 0; r < n; r++) {
                    const double err = hs_ref_rel_err(y + r * n_in, w.deq + ids[r] * n_in, n_in);
                    cr_assert(err < 1e-6, "get_rows %s row %lld err %g",
                              hs_type_str(weight_types[k]), (long long)r, err);
                }
                free(y);
                free_weights(&w);
            }
            hs_backend_destroy(be);
        }
    }
}

/* ---- rms_norm, add, mul, swiglu ---- */

Test(backend_ops, rms_norm_with_and_without_weight)
{
    static const int64_t rows[] = {1, 3, 17, 64};
    static const int64_t ns[] = {256, 576, 1024, 896};
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t c = 0; c < HS_ARRAY_LEN(rows); c++) {
                const int64_t n = ns[c], nr = rows[c];
                const float eps = c % 2 ? 1e-6f : 1e-5f;
                float *x = rand_floats(&rng, n * nr, -3.0f, 3.0f);
                float *w = rand_floats(&rng, n, 0.5f, 1.5f);
                float *y = rand_floats(&rng, n * nr, -1.0f, 1.0f);
                float *ref = malloc((size_t)(n * nr) * sizeof(float));
                struct hs_tensor tx, tw, ty;
                hs_tensor_init_2d(&tx, HS_TYPE_F32, n, nr, x);
                hs_tensor_init_2d(&tw, HS_TYPE_F32, n, 1, w);
                hs_tensor_init_2d(&ty, HS_TYPE_F32, n, nr, y);
                for (int with_w = 0; with_w < 2; with_w++) {
                    cr_assert_eq(hs_backend_rms_norm(be, &tx, with_w ? &tw : NULL, eps, &ty),
                                 HS_OK);
                    hs_ref_rms_norm(x, with_w ? w : NULL, eps, ref, n, nr);
                    const double err = hs_ref_rel_err(y, ref, n * nr);
                    cr_assert(err < 1e-6, "rms_norm n=%lld rows=%lld w=%d err %g", (long long)n,
                              (long long)nr, with_w, err);
                }
                free(ref);
                free(y);
                free(w);
                free(x);
            }
            hs_backend_destroy(be);
        }
    }
}

Test(backend_ops, add_mul_swiglu_with_broadcast)
{
    static const int64_t rows[] = {1, 3, 17, 64};
    struct hs_rng rng;
    hs_rng_seed(&rng, 31);
    const int64_t n = 768;
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t c = 0; c < HS_ARRAY_LEN(rows); c++) {
                const int64_t nr = rows[c];
                float *a = rand_floats(&rng, n * nr, -4.0f, 4.0f);
                float *b = rand_floats(&rng, n * nr, -4.0f, 4.0f);
                float *y = rand_floats(&rng, n * nr, -1.0f, 1.0f);
                float *ref = malloc((size_t)(n * nr) * sizeof(float));
                struct hs_tensor ta, tb, tb1, ty;
                hs_tensor_init_2d(&ta, HS_TYPE_F32, n, nr, a);
                hs_tensor_init_2d(&tb, HS_TYPE_F32, n, nr, b);
                hs_tensor_init_2d(&tb1, HS_TYPE_F32, n, 1, b);
                hs_tensor_init_2d(&ty, HS_TYPE_F32, n, nr, y);
                for (int op = 0; op < 2; op++) {
                    for (int bc = 0; bc < 2; bc++) {
                        const struct hs_tensor *tbb = bc ? &tb1 : &tb;
                        hs_status st = op == 0 ? hs_backend_add(be, &ta, tbb, &ty)
                                               : hs_backend_mul(be, &ta, tbb, &ty);
                        cr_assert_eq(st, HS_OK);
                        hs_ref_binary(op, a, b, bc ? 1 : nr, ref, n, nr);
                        const double err = hs_ref_rel_err(y, ref, n * nr);
                        cr_assert(err < 1e-7, "op %d bcast %d rows %lld err %g", op, bc,
                                  (long long)nr, err);
                    }
                }
                cr_assert_eq(hs_backend_swiglu(be, &ta, &tb, &ty), HS_OK);
                hs_ref_swiglu(a, b, ref, n * nr);
                const double err = hs_ref_rel_err(y, ref, n * nr);
                cr_assert(err < 1e-6, "swiglu rows %lld err %g", (long long)nr, err);
                free(ref);
                free(y);
                free(b);
                free(a);
            }
            hs_backend_destroy(be);
        }
    }
}

/* ---- rope ---- */

Test(backend_ops, rope_norm_and_neox_full_and_partial)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 8);
    const int64_t hd = 64, n_head = 6;
    static const int64_t rows[] = {1, 3, 17, 64};
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg, thread_counts[ti]);
            for (size_t c = 0; c < HS_ARRAY_LEN(rows); c++) {
                for (int mode = 0; mode < HS_ROPE_MODE_COUNT; mode++) {
                    const int64_t nr = rows[c];
                    const struct hs_rope_params p = {
                        .mode = (enum hs_rope_mode)mode,
                        .n_rot = c % 2 ? 32 : 64,
                        .freq_base = c < 2 ? 10000.0f : 1000000.0f,
                        .freq_scale = c == 3 ? 0.25f : 1.0f,
                    };
                    float *x = rand_floats(&rng, hd * n_head * nr, -2.0f, 2.0f);
                    float *ref = malloc((size_t)(hd * n_head * nr) * sizeof(float));
                    memcpy(ref, x, (size_t)(hd * n_head * nr) * sizeof(float));
                    int32_t *pos = malloc((size_t)nr * sizeof(int32_t));
                    for (int64_t r = 0; r < nr; r++) {
                        pos[r] = (int32_t)(hs_rng_next(&rng) % 300);
                    }
                    struct hs_tensor tx;
                    const int64_t ne[3] = {hd, n_head, nr};
                    hs_tensor_init(&tx, HS_TYPE_F32, 3, ne, x);
                    cr_assert_eq(hs_backend_rope(be, &tx, pos, &p), HS_OK);
                    hs_ref_rope(ref, pos, nr, n_head, hd, mode, p.n_rot, p.freq_base, p.freq_scale);
                    const double err = hs_ref_rel_err(x, ref, hd * n_head * nr);
                    cr_assert(err < 1e-4, "rope %s rows %lld n_rot %d err %g",
                              hs_rope_mode_str(p.mode), (long long)nr, p.n_rot, err);
                    free(pos);
                    free(ref);
                    free(x);
                }
            }
            hs_backend_destroy(be);
        }
    }
}

/* The CPU backend keeps the cos / sin of the last rope's positions: a call with other positions
 * in the same array, other frequencies or another n_rot must not rotate by the kept ones. Each
 * call is checked bit for bit against a fresh backend that never rotated anything before. */
Test(backend_ops, rope_cache_follows_positions_and_params)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 81);
    const int64_t hd = 64, n_head = 3, nr = 40;
    int32_t pos[40];
    for (int64_t r = 0; r < nr; r++) {
        pos[r] = (int32_t)r;
    }
    struct hs_rope_params p;
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend *be = make_backend(reg, 2);
        p = (struct hs_rope_params){
            .mode = HS_ROPE_NORM, .n_rot = 64, .freq_base = 10000.0f, .freq_scale = 1.0f};
        for (int call = 0; call < 8; call++) {
            switch (call) {
            case 2:
                pos[17] += 1;
                break; /* one position moved, same array */
            case 3:
                p.freq_base = 500000.0f;
                break; /* other frequencies */
            case 4:
                p.freq_scale = 0.5f;
                break;
            case 5:
                p.n_rot = 32;
                break; /* fewer rotated dims */
            case 6:
                pos[0] = 299;
                break; /* and the first position */
            case 7:
                p.mode = HS_ROPE_NEOX;
                break; /* the other pairing */
            default:
                break; /* 0, 1: the same again */
            }
            float *x = rand_floats(&rng, hd * n_head * nr, -2.0f, 2.0f);
            float *fresh = malloc((size_t)(hd * n_head * nr) * sizeof(float));
            memcpy(fresh, x, (size_t)(hd * n_head * nr) * sizeof(float));
            const int64_t ne[3] = {hd, n_head, nr};
            struct hs_tensor tx, tf;
            hs_tensor_init(&tx, HS_TYPE_F32, 3, ne, x);
            hs_tensor_init(&tf, HS_TYPE_F32, 3, ne, fresh);
            cr_assert_eq(hs_backend_rope(be, &tx, pos, &p), HS_OK);
            struct hs_backend *fb = make_backend(reg, 2);
            cr_assert_eq(hs_backend_rope(fb, &tf, pos, &p), HS_OK);
            hs_backend_destroy(fb);
            cr_assert(memcmp(x, fresh, (size_t)(hd * n_head * nr) * sizeof(float)) == 0,
                      "backend %d call %d: rotated by stale cos / sin", reg, call);
            free(fresh);
            free(x);
        }
        hs_backend_destroy(be);
    }
}

/* ---- matmul_multi ---- */

Test(backend_ops, matmul_multi_equals_separate_matmuls_bit_for_bit)
{
    /* Q, K, V-like products: mixed types, one with another activation type (f16), different
     * output widths; row counts for decode, a small and a bigger batch. The second set shares
     * one conversion of x among types whose weights take different forms (Q5_0 splits its
     * weights from 16 rows on AVX-512 VNNI, Q8_0 reads them as they are). */
    static const enum hs_type type_sets[2][3] = {{HS_TYPE_Q4_K, HS_TYPE_Q6_K, HS_TYPE_F16},
                                                 {HS_TYPE_Q5_0, HS_TYPE_Q8_0, HS_TYPE_Q5_0}};
    static const int64_t n_out[3] = {256, 64, 96};
    static const int64_t rows[] = {1, 3, 37};
    struct hs_rng rng;
    hs_rng_seed(&rng, 808);
    const int64_t n_in = 256;
    for (int reg = 0; reg < hs_backend_reg_count() * 2; reg++) {
        const enum hs_type *types = type_sets[reg % 2];
        for (size_t ti = 0; ti < HS_ARRAY_LEN(thread_counts); ti++) {
            struct hs_backend *be = make_backend(reg / 2, thread_counts[ti]);
            struct weights w[3];
            for (int i = 0; i < 3; i++) {
                make_weights(&w[i], &rng, types[i], n_in, n_out[i]);
            }
            for (size_t ri = 0; ri < HS_ARRAY_LEN(rows); ri++) {
                const int64_t nr = rows[ri];
                float *x = rand_floats(&rng, n_in * nr, -1.0f, 1.0f);
                float *a[3], *b[3];
                struct hs_tensor tx, ta[3], tb[3];
                hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, nr, x);
                const struct hs_tensor *ws[3];
                struct hs_tensor *ya[3];
                for (int i = 0; i < 3; i++) {
                    a[i] = rand_floats(&rng, n_out[i] * nr, -1.0f, 1.0f);
                    b[i] = rand_floats(&rng, n_out[i] * nr, -1.0f, 1.0f);
                    hs_tensor_init_2d(&ta[i], HS_TYPE_F32, n_out[i], nr, a[i]);
                    hs_tensor_init_2d(&tb[i], HS_TYPE_F32, n_out[i], nr, b[i]);
                    ws[i] = &w[i].t;
                    ya[i] = &ta[i];
                    cr_assert_eq(hs_backend_matmul(be, &w[i].t, &tx, &tb[i]), HS_OK);
                }
                hs_backend_reset_stats(be);
                cr_assert_eq(hs_backend_matmul_multi(be, 3, ws, &tx, ya), HS_OK);
                struct hs_backend_stats st;
                hs_backend_get_stats(be, &st);
                cr_assert_eq(st.n_ops[HS_OP_MATMUL], 3);
                for (int i = 0; i < 3; i++) {
                    cr_assert_eq(memcmp(a[i], b[i], (size_t)(n_out[i] * nr) * sizeof(float)), 0,
                                 "product %d (%s), %lld rows", i, hs_type_str(types[i]),
                                 (long long)nr);
                    free(a[i]);
                    free(b[i]);
                }
                /* A shape mismatch anywhere fails the whole call. */
                struct hs_tensor bad = ta[2];
                bad.ne[0] = 32;
                ya[2] = &bad;
                cr_assert_eq(hs_backend_matmul_multi(be, 3, ws, &tx, ya), HS_E_INVAL);
                cr_assert_eq(hs_backend_matmul_multi(be, 0, ws, &tx, ya), HS_E_INVAL);
                cr_assert_eq(hs_backend_matmul_multi(be, HS_MATMUL_MULTI_MAX + 1, ws, &tx, ya),
                             HS_E_INVAL);
                free(x);
            }
            for (int i = 0; i < 3; i++) {
                free_weights(&w[i]);
            }
            hs_backend_destroy(be);
        }
    }
}

/* ---- validation, registry and stats ---- */

Test(backend_ops, registry_and_unknown_names)
{
    cr_assert_geq(hs_backend_reg_count(), 1);
    cr_assert_str_eq(hs_backend_reg_name(0), "cpu");
    cr_assert_null(hs_backend_reg_name(-1));
    cr_assert_null(hs_backend_reg_name(hs_backend_reg_count()));
    struct hs_backend *be = (struct hs_backend *)&be;
    cr_assert_eq(hs_backend_create("no-such-backend", NULL, &be), HS_E_NOENT);
    cr_assert_null(be);
    cr_assert_eq(hs_backend_create("cpu", NULL, &be), HS_OK);
    cr_assert_str_eq(hs_backend_name(be), "cpu");
    cr_assert_eq(hs_backend_n_threads(be), hs__pool_physical_cores());
    cr_assert(hs_backend_supports(be, HS_OP_MATMUL, HS_TYPE_Q4_K));
    cr_assert_not(hs_backend_supports(be, HS_OP_MATMUL, HS_TYPE_Q2_K));
    cr_assert_not(hs_backend_supports(be, HS_OP_ATTENTION, HS_TYPE_Q8_0));
    cr_assert_not(hs_backend_supports(be, HS_OP_COUNT, HS_TYPE_F32));
    cr_assert_eq(hs_backend_synchronize(be), HS_OK);
    hs_backend_destroy(be);
    hs_backend_destroy(NULL);
    cr_assert_str_eq(hs_op_str(HS_OP_ATTENTION), "attention");
    cr_assert_str_eq(hs_rope_mode_str(HS_ROPE_NEOX), "neox");
}

Test(backend_ops, bad_shapes_are_rejected_and_outputs_untouched)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 3);
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend *be = make_backend(reg, 2);
        struct weights w;
        make_weights(&w, &rng, HS_TYPE_Q8_0, 256, 8);
        float *x = rand_floats(&rng, 512 * 4, -1.0f, 1.0f);
        float *y = rand_floats(&rng, 512 * 4, -1.0f, 1.0f);
        float *y0 = malloc(512 * 4 * sizeof(float));
        memcpy(y0, y, 512 * 4 * sizeof(float));
        struct hs_tensor tx, ty, tbad;

        /* matmul: n_in mismatch, n_out mismatch, row mismatch, wrong x type, NULLs. */
        hs_tensor_init_2d(&tx, HS_TYPE_F32, 512, 2, x);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 8, 2, y);
        cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_E_INVAL);
        hs_tensor_init_2d(&tx, HS_TYPE_F32, 256, 2, x);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 9, 2, y);
        cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_E_INVAL);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 8, 3, y);
        cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_E_INVAL);
        hs_tensor_init_2d(&tbad, HS_TYPE_F16, 256, 2, x);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 8, 2, y);
        cr_assert_eq(hs_backend_matmul(be, &w.t, &tbad, &ty), HS_E_INVAL);
        cr_assert_eq(hs_backend_matmul(be, NULL, &tx, &ty), HS_E_INVAL);
        cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, NULL), HS_E_INVAL);
        struct hs_tensor wbad = w.t;
        wbad.type = HS_TYPE_Q2_K; /* known, well-formed (256 wide), not supported */
        wbad.nb[0] = hs_type_traits(HS_TYPE_Q2_K)->type_size;
        wbad.nb[1] = hs_type_row_size(HS_TYPE_Q2_K, 256);
        cr_assert_eq(hs_backend_matmul(be, &wbad, &tx, &ty), HS_E_NOTSUP);
        wbad = w.t;
        wbad.type = (enum hs_type)5; /* a hole in the id space */
        cr_assert_eq(hs_backend_matmul(be, &wbad, &tx, &ty), HS_E_INVAL);
        wbad = w.t;
        wbad.ne[1] = -3;
        cr_assert_eq(hs_backend_matmul(be, &wbad, &tx, &ty), HS_E_INVAL);

        /* get_rows: id out of range. */
        const hs_token bad_ids[2] = {1, 8};
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 256, 2, y);
        cr_assert_eq(hs_backend_get_rows(be, &w.t, bad_ids, &ty), HS_E_INVAL);
        const hs_token neg_ids[2] = {-1, 0};
        cr_assert_eq(hs_backend_get_rows(be, &w.t, neg_ids, &ty), HS_E_INVAL);

        /* rms_norm: weight length, shapes; add: b rows neither 1 nor n_rows; swiglu: no bcast. */
        struct hs_tensor ta, tb;
        hs_tensor_init_2d(&ta, HS_TYPE_F32, 128, 4, x);
        hs_tensor_init_2d(&tb, HS_TYPE_F32, 127, 1, x);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 128, 4, y);
        cr_assert_eq(hs_backend_rms_norm(be, &ta, &tb, 1e-6f, &ty), HS_E_INVAL);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 128, 3, y);
        cr_assert_eq(hs_backend_rms_norm(be, &ta, NULL, 1e-6f, &ty), HS_E_INVAL);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 128, 4, y);
        cr_assert_eq(hs_backend_rms_norm(be, &ta, NULL, NAN, &ty), HS_E_INVAL);
        hs_tensor_init_2d(&tb, HS_TYPE_F32, 128, 2, x);
        cr_assert_eq(hs_backend_add(be, &ta, &tb, &ty), HS_E_INVAL);
        cr_assert_eq(hs_backend_mul(be, &ta, &tb, &ty), HS_E_INVAL);
        hs_tensor_init_2d(&tb, HS_TYPE_F32, 128, 1, x);
        cr_assert_eq(hs_backend_swiglu(be, &ta, &tb, &ty), HS_E_INVAL);

        /* rope: odd n_rot, n_rot > head_dim, bad base, bad mode. */
        struct hs_tensor tr;
        const int64_t rne[3] = {64, 2, 4};
        hs_tensor_init(&tr, HS_TYPE_F32, 3, rne, y);
        const int32_t pos[4] = {0, 1, 2, 3};
        struct hs_rope_params rp = {HS_ROPE_NORM, 31, 10000.0f, 1.0f};
        cr_assert_eq(hs_backend_rope(be, &tr, pos, &rp), HS_E_INVAL);
        rp.n_rot = 66;
        cr_assert_eq(hs_backend_rope(be, &tr, pos, &rp), HS_E_INVAL);
        rp.n_rot = 64;
        rp.freq_base = -1.0f;
        cr_assert_eq(hs_backend_rope(be, &tr, pos, &rp), HS_E_INVAL);
        rp.freq_base = 10000.0f;
        rp.mode = HS_ROPE_MODE_COUNT;
        cr_assert_eq(hs_backend_rope(be, &tr, pos, &rp), HS_E_INVAL);
        cr_assert_eq(memcmp(y, y0, 512 * 4 * sizeof(float)), 0, "outputs touched");

        /* kv_store: slot out of range, head count mismatch. */
        uint16_t *cache = calloc(4 * 16 * 2 * 64, sizeof(uint16_t));
        struct hs_tensor tc, ts;
        const int64_t cne[4] = {64, 2, 16, 4};
        hs_tensor_init(&tc, HS_TYPE_F16, 4, cne, cache);
        const int64_t sne[3] = {64, 2, 2};
        hs_tensor_init(&ts, HS_TYPE_F32, 3, sne, x);
        const int32_t bad_slots[2] = {3, 64};
        cr_assert_eq(hs_backend_kv_store(be, &ts, &tc, bad_slots), HS_E_INVAL);
        const int32_t ok_slots[2] = {3, 63};
        cr_assert_eq(hs_backend_kv_store(be, &ts, &tc, ok_slots), HS_OK);
        const int64_t sne3[3] = {64, 3, 2};
        hs_tensor_init(&ts, HS_TYPE_F32, 3, sne3, x);
        cr_assert_eq(hs_backend_kv_store(be, &ts, &tc, ok_slots), HS_E_INVAL);

        /* attention: block id out of range, rows past q, GQA not dividing, block size. */
        struct hs_tensor tq, to;
        const int64_t qne[3] = {64, 4, 2};
        hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, x);
        hs_tensor_init(&to, HS_TYPE_F32, 3, qne, y);
        const int32_t table_bad[1] = {4};
        const int32_t table_ok[1] = {1};
        struct hs_attn_seq seq = {.n_past = 3, .n_new = 2, .q_row = 0, .block_table = table_bad};
        struct hs_attn_args aa = {.q = &tq,
                                  .out = &to,
                                  .k_cache = &tc,
                                  .v_cache = &tc,
                                  .block_size = 16,
                                  .seqs = &seq,
                                  .n_seqs = 1,
                                  .scale = 0.125f};
        cr_assert_eq(hs_backend_attention(be, &aa), HS_E_INVAL);
        seq.block_table = table_ok;
        seq.q_row = 1;
        cr_assert_eq(hs_backend_attention(be, &aa), HS_E_INVAL);
        seq.q_row = 0;
        aa.block_size = 8;
        cr_assert_eq(hs_backend_attention(be, &aa), HS_E_INVAL);
        aa.block_size = 16;
        const int64_t qne3[3] = {64, 3, 2};
        hs_tensor_init(&tq, HS_TYPE_F32, 3, qne3, x);
        hs_tensor_init(&to, HS_TYPE_F32, 3, qne3, y);
        cr_assert_eq(hs_backend_attention(be, &aa), HS_E_INVAL);
        cr_assert_eq(memcmp(y, y0, 512 * 4 * sizeof(float)), 0, "outputs touched");
        hs_tensor_init(&tq, HS_TYPE_F32, 3, qne, x);
        hs_tensor_init(&to, HS_TYPE_F32, 3, qne, y);
        cr_assert_eq(hs_backend_attention(be, &aa), HS_OK);

        /* ffn: down's input width differs from n_ff. */
        struct hs_tensor sg, su;
        hs_tensor_init_2d(&tx, HS_TYPE_F32, 256, 1, x);
        hs_tensor_init_2d(&sg, HS_TYPE_F32, 8, 1, y);
        hs_tensor_init_2d(&su, HS_TYPE_F32, 8, 1, y + 8);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, 256, 1, y + 16);
        const struct hs_ffn_args fa = {.w_gate = &w.t,
                                       .w_up = &w.t,
                                       .w_down = &w.t,
                                       .x = &tx,
                                       .y = &ty,
                                       .scratch_gate = &sg,
                                       .scratch_up = &su};
        cr_assert_eq(hs_backend_ffn(be, &fa), HS_E_INVAL);

        /* tensor init: ne[0] not a block multiple. */
        cr_assert_eq(hs_tensor_init_2d(&tbad, HS_TYPE_Q8_0, 33, 1, x), HS_E_INVAL);

        free(cache);
        free(y0);
        free(y);
        free(x);
        free_weights(&w);
        hs_backend_destroy(be);
    }
}

Test(backend_ops, stats_count_ops_and_weight_bytes)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 11);
    struct hs_backend *be = make_backend(0, 1);
    struct weights w;
    make_weights(&w, &rng, HS_TYPE_Q4_0, 256, 10);
    float *x = rand_floats(&rng, 256 * 3, -1.0f, 1.0f);
    float *y = rand_floats(&rng, 256 * 3, -1.0f, 1.0f);
    struct hs_tensor tx, ty;
    hs_tensor_init_2d(&tx, HS_TYPE_F32, 256, 3, x);
    hs_tensor_init_2d(&ty, HS_TYPE_F32, 10, 3, y);
    cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_OK);
    cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_OK);
    const hs_token ids[2] = {9, 2};
    hs_tensor_init_2d(&ty, HS_TYPE_F32, 256, 2, y);
    cr_assert_eq(hs_backend_get_rows(be, &w.t, ids, &ty), HS_OK);
    hs_tensor_init_2d(&ty, HS_TYPE_F32, 11, 3, y);
    cr_assert_eq(hs_backend_matmul(be, &w.t, &tx, &ty), HS_E_INVAL); /* not counted */
    struct hs_backend_stats st;
    hs_backend_get_stats(be, &st);
    cr_assert_eq(st.n_ops[HS_OP_MATMUL], 2);
    cr_assert_eq(st.n_ops[HS_OP_GET_ROWS], 1);
    cr_assert_eq(st.weight_bytes_read, 2 * 10 * 144 + 2 * 144);
    cr_assert_eq(st.sim_time_s, 0.0);
    hs_backend_reset_stats(be);
    hs_backend_get_stats(be, &st);
    cr_assert_eq(st.n_ops[HS_OP_MATMUL], 0);
    cr_assert_eq(st.weight_bytes_read, 0);
    free(y);
    free(x);
    free_weights(&w);
    hs_backend_destroy(be);
}

Test(backend_ops, views_and_in_place_elementwise)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 2024);
    const int64_t n_in = 256, n_out = 12, n_all = 9;
    for (int reg = 0; reg < hs_backend_reg_count(); reg++) {
        struct hs_backend *be = make_backend(reg, 3);
        struct weights w;
        make_weights(&w, &rng, HS_TYPE_Q8_0, n_in, n_out);
        float *x = rand_floats(&rng, n_in * n_all, -1.0f, 1.0f);
        float *y = rand_floats(&rng, n_out * n_all, -1.0f, 1.0f);
        float *y0 = malloc((size_t)(n_out * n_all) * sizeof(float));
        memcpy(y0, y, (size_t)(n_out * n_all) * sizeof(float));
        float ref[5 * 12];
        /* Rows [2, 7) of x into rows [2, 7) of y; the rest of y stays as it was. */
        struct hs_tensor tx, ty;
        hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, n_all, x);
        hs_tensor_init_2d(&ty, HS_TYPE_F32, n_out, n_all, y);
        struct hs_tensor vx = hs_tensor_rows(&tx, 2, 5), vy = hs_tensor_rows(&ty, 2, 5);
        cr_assert_eq(hs_backend_matmul(be, &w.t, &vx, &vy), HS_OK);
        hs_ref_matmul(w.deq, x + 2 * n_in, ref, n_out, n_in, 5);
        cr_assert_lt(hs_ref_rel_err(y + 2 * n_out, ref, 5 * n_out), matmul_tol(HS_TYPE_Q8_0));
        cr_assert_eq(memcmp(y, y0, 2 * n_out * sizeof(float)), 0);
        cr_assert_eq(memcmp(y + 7 * n_out, y0 + 7 * n_out, 2 * n_out * sizeof(float)), 0);

        /* In place: x = x + b (broadcast row), then x = rms_norm(x). */
        float *b = rand_floats(&rng, n_in, -1.0f, 1.0f);
        float *r = malloc((size_t)(n_in * n_all) * sizeof(float));
        struct hs_tensor tb;
        hs_tensor_init_2d(&tb, HS_TYPE_F32, n_in, 1, b);
        hs_ref_binary(0, x, b, 1, r, n_in, n_all);
        hs_ref_rms_norm(r, NULL, 1e-6f, r, n_in, n_all);
        cr_assert_eq(hs_backend_add(be, &tx, &tb, &tx), HS_OK);
        cr_assert_eq(hs_backend_rms_norm(be, &tx, NULL, 1e-6f, &tx), HS_OK);
        cr_assert_lt(hs_ref_rel_err(x, r, n_in * n_all), 1e-6);
        free(r);
        free(b);
        free(y0);
        free(y);
        free(x);
        free_weights(&w);
        hs_backend_destroy(be);
    }
}
