/* The CPU backend's oneDNN path (backends/cpu/onednn.h): prompt-sized F32 / F16 / BF16 products,
 * the QKV-style matmul_multi and the FFN through oneDNN agree with the backend's own kernels
 * (HS_ONEDNN=0) within 1e-5 relative, both near the float64 reference; HS_ONEDNN=0 leaves the
 * own kernels' bits. Skipped where the build or the machine has no oneDNN. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend-impl.h"
#include "backends/cpu/cpu-impl.h"
#include "backends/cpu/cpu.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/quants.h"
#include "tests/backends/backend-ops-fixtures.h"
#include "tests/ref/ref-ops.h"

/* Largest normalised difference oneDNN's other summation order may make. */
#define ONEDNN_TOL 1e-5

/* A CPU backend with oneDNN on, or the test skipped where there is none. */
static struct hs_backend *make_cpu_onednn(int n_threads)
{
    struct hs_backend *be = make_backend(0, n_threads);
    const hs_status st = hs__cpu_set_onednn(be, true);
    if (st == HS_E_NOTSUP) {
        hs_backend_destroy(be);
        cr_skip_test("no oneDNN in this build or on this machine");
    }
    cr_assert_eq(st, HS_OK, "%s", hs_status_str(st));
    return be;
}

static const enum hs_type float_types[] = {HS_TYPE_F32, HS_TYPE_F16, HS_TYPE_BF16};

/* y = x w^T with oneDNN on or off; x rows x_ld floats apart. */
static void matmul(struct hs_backend *be, bool onednn, const struct weights *w, const float *x,
                   int64_t x_ld, int64_t n_rows, float *y)
{
    cr_assert_eq(hs__cpu_set_onednn(be, onednn), HS_OK);
    struct hs_tensor tx, ty;
    cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, w->t.ne[0], n_rows, (void *)x), HS_OK);
    tx.nb[1] = (size_t)x_ld * sizeof(float);
    tx.nb[2] = tx.nb[3] = tx.nb[1] * (size_t)n_rows;
    cr_assert_eq(hs_tensor_init_2d(&ty, HS_TYPE_F32, w->t.ne[1], n_rows, y), HS_OK);
    cr_assert_eq(hs_backend_matmul(be, &w->t, &tx, &ty), HS_OK);
}

/* Prefill-sized products of every float weight type, rows above the threshold and no multiple
 * of a tile, x rows strided (a view), 1 and 2 threads; and an F16 weight of more rows than one
 * widened panel holds. */
Test(onednn, prefill_matmul_agrees_with_own_kernels)
{
    static const struct {
        int64_t n_in, n_out, n_rows;
    } shapes[] = {{576, 100, HS__ONEDNN_MIN_ROWS}, {256, 37, 301}, {576, 4000, 70}};
    struct hs_rng rng;
    hs_rng_seed(&rng, 20);
    for (int nth = 1; nth <= 2; nth++) {
        struct hs_backend *be = make_cpu_onednn(nth);
        for (size_t s = 0; s < HS_ARRAY_LEN(shapes); s++) {
            for (size_t k = 0; k < HS_ARRAY_LEN(float_types); k++) {
                const enum hs_type type = float_types[k];
                if (s == 2 && (type != HS_TYPE_F16 || nth != 2)) {
                    continue; /* the panel case: once */
                }
                const int64_t n_in = shapes[s].n_in, n_out = shapes[s].n_out;
                const int64_t n_rows = shapes[s].n_rows, x_ld = n_in + 16;
                struct weights w;
                make_weights(&w, &rng, type, n_in, n_out);
                float *x = rand_floats(&rng, x_ld * n_rows, -1.0f, 1.0f);
                float *xd = malloc((size_t)(n_in * n_rows) * sizeof(float));
                float *own = malloc((size_t)(n_out * n_rows) * sizeof(float));
                float *dnn = malloc((size_t)(n_out * n_rows) * sizeof(float));
                float *ref = malloc((size_t)(n_out * n_rows) * sizeof(float));
                cr_assert(xd && own && dnn && ref);
                for (int64_t r = 0; r < n_rows; r++) {
                    memcpy(xd + r * n_in, x + r * x_ld, (size_t)n_in * sizeof(float));
                }
                matmul(be, false, &w, x, x_ld, n_rows, own);
                matmul(be, true, &w, x, x_ld, n_rows, dnn);
                hs_ref_matmul(w.deq, xd, ref, n_out, n_in, n_rows);
                const double diff = hs_ref_rel_err(dnn, own, n_out * n_rows);
                cr_assert(diff < ONEDNN_TOL, "%s %lld x %lld -> %lld nth=%d: %g", hs_type_str(type),
                          (long long)n_rows, (long long)n_in, (long long)n_out, nth, diff);
                cr_assert(hs_ref_rel_err(dnn, ref, n_out * n_rows) < matmul_tol(type), "%s",
                          hs_type_str(type));
                free(ref);
                free(dnn);
                free(own);
                free(xd);
                free(x);
                free_weights(&w);
            }
        }
        hs_backend_destroy(be);
    }
}

/* QKV-style matmul_multi (F32, F16, BF16 weights over one x) and the FFN slot, on and off. */
Test(onednn, matmul_multi_and_ffn_agree_with_own_kernels)
{
    const int64_t n_in = 192, n_rows = 96, n_ff = 320;
    static const int64_t n_out[3] = {192, 64, 64};
    struct hs_rng rng;
    hs_rng_seed(&rng, 21);
    struct hs_backend *be = make_cpu_onednn(2);
    struct weights w[3];
    for (int i = 0; i < 3; i++) {
        make_weights(&w[i], &rng, float_types[i], n_in, n_out[i]);
    }
    float *x = rand_floats(&rng, n_in * n_rows, -1.0f, 1.0f);
    struct hs_tensor tx;
    cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, n_rows, x), HS_OK);
    float *y[2][3];
    struct hs_tensor ty[2][3];
    for (int on = 0; on < 2; on++) {
        const struct hs_tensor *ws[3];
        struct hs_tensor *ys[3];
        for (int i = 0; i < 3; i++) {
            y[on][i] = malloc((size_t)(n_out[i] * n_rows) * sizeof(float));
            cr_assert_not_null(y[on][i]);
            cr_assert_eq(hs_tensor_init_2d(&ty[on][i], HS_TYPE_F32, n_out[i], n_rows, y[on][i]),
                         HS_OK);
            ws[i] = &w[i].t;
            ys[i] = &ty[on][i];
        }
        cr_assert_eq(hs__cpu_set_onednn(be, on), HS_OK);
        cr_assert_eq(hs_backend_matmul_multi(be, 3, ws, &tx, ys), HS_OK);
    }
    for (int i = 0; i < 3; i++) {
        const double d = hs_ref_rel_err(y[1][i], y[0][i], n_out[i] * n_rows);
        cr_assert(d < ONEDNN_TOL, "multi %s: %g", hs_type_str(float_types[i]), d);
        free(y[0][i]);
        free(y[1][i]);
    }

    /* FFN: F16 gate, BF16 up, F32 down (a BF16 or F16 down would round the SwiGLU output to
     * its type, and a rounding flipped by the other order moves a product by a whole ulp of
     * it: more than the bound, for reasons no matmul's own). */
    struct weights fg, fu, fd;
    make_weights(&fg, &rng, HS_TYPE_F16, n_in, n_ff);
    make_weights(&fu, &rng, HS_TYPE_BF16, n_in, n_ff);
    make_weights(&fd, &rng, HS_TYPE_F32, n_ff, n_in);
    float *out[2], *sg = malloc((size_t)(n_ff * n_rows) * sizeof(float)),
                   *su = malloc((size_t)(n_ff * n_rows) * sizeof(float));
    cr_assert(sg && su);
    for (int on = 0; on < 2; on++) {
        out[on] = malloc((size_t)(n_in * n_rows) * sizeof(float));
        cr_assert_not_null(out[on]);
        struct hs_tensor to, tsg, tsu;
        cr_assert_eq(hs_tensor_init_2d(&to, HS_TYPE_F32, n_in, n_rows, out[on]), HS_OK);
        cr_assert_eq(hs_tensor_init_2d(&tsg, HS_TYPE_F32, n_ff, n_rows, sg), HS_OK);
        cr_assert_eq(hs_tensor_init_2d(&tsu, HS_TYPE_F32, n_ff, n_rows, su), HS_OK);
        const struct hs_ffn_args a = {.w_gate = &fg.t,
                                      .w_up = &fu.t,
                                      .w_down = &fd.t,
                                      .x = &tx,
                                      .y = &to,
                                      .scratch_gate = &tsg,
                                      .scratch_up = &tsu};
        cr_assert_eq(hs__cpu_set_onednn(be, on), HS_OK);
        cr_assert_eq(hs_backend_ffn(be, &a), HS_OK);
    }
    const double d = hs_ref_rel_err(out[1], out[0], n_in * n_rows);
    cr_assert(d < ONEDNN_TOL, "ffn: %g", d);
    free(out[0]);
    free(out[1]);
    free(sg);
    free(su);
    free_weights(&fg);
    free_weights(&fu);
    free_weights(&fd);
    free(x);
    for (int i = 0; i < 3; i++) {
        free_weights(&w[i]);
    }
    hs_backend_destroy(be);
}

/* HS_ONEDNN=0 or unset at creation: no oneDNN, the own kernels' bits; =1: oneDNN on. Below the row
 * threshold the own kernels run either way, bit for bit (batch invariance rests on it). */
Test(onednn, environment_switch_and_row_threshold)
{
    const int64_t n_in = 256, n_out = 48, n_rows = 2 * HS__ONEDNN_MIN_ROWS;
    struct hs_rng rng;
    hs_rng_seed(&rng, 22);
    struct hs_backend *probe = make_cpu_onednn(2); /* skips where there is none */
    hs_backend_destroy(probe);

    cr_assert_eq(setenv("HS_ONEDNN", "0", 1), 0);
    struct hs_backend *off = make_backend(0, 2);
    cr_assert(!cpu_backend_of(off)->onednn);
    cr_assert_eq(unsetenv("HS_ONEDNN"), 0);
    struct hs_backend *unset = make_backend(0, 2);
    cr_assert(!cpu_backend_of(unset)->onednn, "oneDNN is opt-in");
    hs_backend_destroy(unset);
    cr_assert_eq(setenv("HS_ONEDNN", "1", 1), 0);
    struct hs_backend *on = make_backend(0, 2);
    cr_assert(cpu_backend_of(on)->onednn);

    struct weights w;
    make_weights(&w, &rng, HS_TYPE_F32, n_in, n_out);
    float *x = rand_floats(&rng, n_in * n_rows, -1.0f, 1.0f);
    float *a = malloc((size_t)(n_out * n_rows) * sizeof(float));
    float *b = malloc((size_t)(n_out * n_rows) * sizeof(float));
    cr_assert(a && b);
    struct hs_tensor tx, ta, tb;
    /* Made on the first product it takes, not before, not for fewer rows. */
    cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, HS__ONEDNN_MIN_ROWS - 1, x), HS_OK);
    cr_assert_eq(hs_tensor_init_2d(&tb, HS_TYPE_F32, n_out, HS__ONEDNN_MIN_ROWS - 1, b), HS_OK);
    cr_assert_eq(hs_backend_matmul(on, &w.t, &tx, &tb), HS_OK);
    cr_assert_null(cpu_backend_of(on)->dnn);
    cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, n_rows, x), HS_OK);
    cr_assert_eq(hs_tensor_init_2d(&ta, HS_TYPE_F32, n_out, n_rows, a), HS_OK);
    cr_assert_eq(hs_tensor_init_2d(&tb, HS_TYPE_F32, n_out, n_rows, b), HS_OK);
    cr_assert_eq(hs_backend_matmul(on, &w.t, &tx, &tb), HS_OK);
    cr_assert_not_null(cpu_backend_of(on)->dnn);
    cr_assert_eq(hs_backend_matmul(off, &w.t, &tx, &ta), HS_OK);
    cr_assert_null(cpu_backend_of(off)->dnn);
    cr_assert(hs_ref_rel_err(b, a, n_out * n_rows) < ONEDNN_TOL);
    for (int64_t rows = HS__ONEDNN_MIN_ROWS - 1; rows <= n_rows; rows += n_rows / 2 + 1) {
        cr_assert_eq(hs_tensor_init_2d(&tx, HS_TYPE_F32, n_in, rows, x), HS_OK);
        cr_assert_eq(hs_tensor_init_2d(&ta, HS_TYPE_F32, n_out, rows, a), HS_OK);
        cr_assert_eq(hs_tensor_init_2d(&tb, HS_TYPE_F32, n_out, rows, b), HS_OK);
        cr_assert_eq(hs_backend_matmul(off, &w.t, &tx, &ta), HS_OK);
        cr_assert_eq(hs__cpu_set_onednn(on, false), HS_OK);
        cr_assert_eq(hs_backend_matmul(on, &w.t, &tx, &tb), HS_OK);
        cr_assert_eq(memcmp(a, b, (size_t)(n_out * rows) * sizeof(float)), 0, "%lld rows",
                     (long long)rows);
        cr_assert_eq(hs__cpu_set_onednn(on, true), HS_OK);
        cr_assert_eq(hs_backend_matmul(on, &w.t, &tx, &tb), HS_OK);
        if (rows < HS__ONEDNN_MIN_ROWS) {
            cr_assert_eq(memcmp(a, b, (size_t)(n_out * rows) * sizeof(float)), 0);
        } else {
            cr_assert(hs_ref_rel_err(b, a, n_out * rows) < ONEDNN_TOL);
        }
    }
    free(a);
    free(b);
    free(x);
    free_weights(&w);
    hs_backend_destroy(off);
    hs_backend_destroy(on);
}
