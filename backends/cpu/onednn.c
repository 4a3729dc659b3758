/* oneDNN GEMMs for prompt-sized products; see onednn.h. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "backends/cpu/cpu-impl.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/quants.h"

/* Bytes of f32 weights widened per panel (F16, and BF16 without a bf16 kernel): whole
 * projections of small models in one panel, an output head in a few. */
#define HS__ONEDNN_PANEL_BYTES ((size_t)8 << 20)

/* Primitives kept per backend, one per (type, shape, strides). */
#define HS__ONEDNN_CACHE 16

/* ---- the library, loaded once per process ---- */

#define DNNL_FNS(X)                                                                                \
    X(dnnl_engine_create)                                                                          \
    X(dnnl_engine_destroy)                                                                         \
    X(dnnl_stream_create)                                                                          \
    X(dnnl_stream_destroy)                                                                         \
    X(dnnl_stream_wait)                                                                            \
    X(dnnl_memory_desc_init_by_strides)                                                            \
    X(dnnl_matmul_desc_init)                                                                       \
    X(dnnl_primitive_desc_create)                                                                  \
    X(dnnl_primitive_desc_query)                                                                   \
    X(dnnl_primitive_desc_destroy)                                                                 \
    X(dnnl_primitive_create)                                                                       \
    X(dnnl_primitive_destroy)                                                                      \
    X(dnnl_primitive_execute)                                                                      \
    X(dnnl_memory_create)                                                                          \
    X(dnnl_memory_set_data_handle)                                                                 \
    X(dnnl_memory_destroy)

static struct {
    void *lib;
#define X(f) __typeof__(f) *f;
    DNNL_FNS(X)
#undef X
    void (*omp_set_num_threads)(int n);
    bool ok;
} dnnl;

static pthread_once_t dnnl_once = PTHREAD_ONCE_INIT;

static void dnnl_load(void)
{
    /* Before libgomp loads (with libdnnl): it reads them once. The user's own values win. */
    if (dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD)) {
        HS_LOG_WARN("onednn: libgomp was loaded before libdnnl; OMP_WAIT_POLICY=passive may "
                    "not apply and its threads may spin beside the pool's");
    }
    setenv("OMP_WAIT_POLICY", "passive", 0);
    setenv("GOMP_SPINCOUNT", "0", 0);
    dnnl.lib = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!dnnl.lib) {
        dnnl.lib = dlopen("libdnnl.so", RTLD_NOW | RTLD_LOCAL);
    }
    if (!dnnl.lib) {
        HS_LOG_WARN("onednn: %s; products run on the backend's own kernels", dlerror());
        return;
    }
#define X(f)                                                                                       \
    *(void **)&dnnl.f = dlsym(dnnl.lib, #f);                                                       \
    if (!dnnl.f) {                                                                                 \
        HS_LOG_WARN("onednn: libdnnl lacks %s; products run on the backend's own kernels", #f);    \
        return;                                                                                    \
    }
    DNNL_FNS(X)
#undef X
    /* NULL where libdnnl does not run on OpenMP: then it keeps its own thread count. */
    *(void **)&dnnl.omp_set_num_threads = dlsym(dnnl.lib, "omp_set_num_threads");
    dnnl.ok = true;
}

void *hs__onednn_sym(const char *name)
{
    return dnnl.ok ? dlsym(dnnl.lib, name) : NULL;
}

/* ---- per backend ---- */

struct hs__onednn_prim {
    dnnl_primitive_t prim; /* NULL: free slot */
    dnnl_memory_t src, wei, dst;
    dnnl_data_type_t dt;
    int64_t m, k, n, x_ld, w_ld, y_ld; /* elements */
};

struct hs__onednn {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    struct hs_pool *pool; /* borrowed */
    int n_threads;
    int64_t min_rows;
    bool bf16_native; /* oneDNN has an optimised bf16 matmul here */
    char impl[2][48]; /* f32, bf16 matmul implementations' names */
    void *wbuf;       /* widened weight panel (f32); owns */
    size_t wbuf_bytes;
    void *xbuf; /* widened activations (f32); owns */
    size_t xbuf_bytes;
    struct hs__onednn_prim cache[HS__ONEDNN_CACHE];
    int next_evict;
};

static void prim_clear(struct hs__onednn_prim *p)
{
    if (!p->prim) {
        return;
    }
    dnnl.dnnl_primitive_destroy(p->prim);
    dnnl.dnnl_memory_destroy(p->src);
    dnnl.dnnl_memory_destroy(p->wei);
    dnnl.dnnl_memory_destroy(p->dst);
    memset(p, 0, sizeof(*p));
}

/* A primitive descriptor of y[m][n] = x[m][k] w[n][k]^T in dt (f32 or bf16), row strides in
 * elements; NULL when oneDNN refuses. */
static dnnl_primitive_desc_t matmul_pd(struct hs__onednn *dnn, dnnl_data_type_t dt, int64_t m,
                                       int64_t k, int64_t n, int64_t x_ld, int64_t w_ld,
                                       int64_t y_ld, dnnl_memory_desc_t md[3])
{
    const dnnl_dims_t sd = {m, k}, ss = {x_ld, 1};
    const dnnl_dims_t wd = {k, n}, ws = {1, w_ld}; /* w^T: column j is weight row j */
    const dnnl_dims_t dd = {m, n}, ds = {y_ld, 1};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl.dnnl_memory_desc_init_by_strides(&md[0], 2, sd, dt, ss) != dnnl_success ||
        dnnl.dnnl_memory_desc_init_by_strides(&md[1], 2, wd, dt, ws) != dnnl_success ||
        dnnl.dnnl_memory_desc_init_by_strides(&md[2], 2, dd, dnnl_f32, ds) != dnnl_success ||
        dnnl.dnnl_matmul_desc_init(&desc, &md[0], &md[1], NULL, &md[2]) != dnnl_success ||
        dnnl.dnnl_primitive_desc_create(&pd, &desc, NULL, dnn->engine, NULL) != dnnl_success) {
        return NULL;
    }
    return pd;
}

/* The cached primitive for this product, made on a miss; NULL when oneDNN fails. */
static struct hs__onednn_prim *prim_get(struct hs__onednn *dnn, dnnl_data_type_t dt, int64_t m,
                                        int64_t k, int64_t n, int64_t x_ld, int64_t w_ld,
                                        int64_t y_ld)
{
    for (int i = 0; i < HS__ONEDNN_CACHE; i++) {
        struct hs__onednn_prim *p = &dnn->cache[i];
        if (p->prim && p->dt == dt && p->m == m && p->k == k && p->n == n && p->x_ld == x_ld &&
            p->w_ld == w_ld && p->y_ld == y_ld) {
            return p;
        }
    }
    struct hs__onednn_prim *p = &dnn->cache[dnn->next_evict];
    dnn->next_evict = (dnn->next_evict + 1) % HS__ONEDNN_CACHE;
    prim_clear(p);
    dnnl_memory_desc_t md[3];
    dnnl_primitive_desc_t pd = matmul_pd(dnn, dt, m, k, n, x_ld, w_ld, y_ld, md);
    if (!pd) {
        return NULL;
    }
    const bool ok = dnnl.dnnl_primitive_create(&p->prim, pd) == dnnl_success;
    dnnl.dnnl_primitive_desc_destroy(pd);
    if (!ok) {
        p->prim = NULL;
        return NULL;
    }
    if (dnnl.dnnl_memory_create(&p->src, &md[0], dnn->engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl.dnnl_memory_create(&p->wei, &md[1], dnn->engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl.dnnl_memory_create(&p->dst, &md[2], dnn->engine, DNNL_MEMORY_NONE) != dnnl_success) {
        prim_clear(p); /* dnnl_memory_destroy accepts NULL */
        return NULL;
    }
    *p = (struct hs__onednn_prim){.prim = p->prim,
                                  .src = p->src,
                                  .wei = p->wei,
                                  .dst = p->dst,
                                  .dt = dt,
                                  .m = m,
                                  .k = k,
                                  .n = n,
                                  .x_ld = x_ld,
                                  .w_ld = w_ld,
                                  .y_ld = y_ld};
    return p;
}

/* Runs one product on the calling thread and n_threads OpenMP threads. */
static hs_status run_matmul(struct hs__onednn *dnn, dnnl_data_type_t dt, int64_t m, int64_t k,
                            int64_t n, const void *x, int64_t x_ld, const void *w, int64_t w_ld,
                            float *y, int64_t y_ld)
{
    struct hs__onednn_prim *p = prim_get(dnn, dt, m, k, n, x_ld, w_ld, y_ld);
    if (!p) {
        return HS_E_DEVICE;
    }
    const dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, p->wei}, {DNNL_ARG_DST, p->dst}};
    if (dnnl.omp_set_num_threads) {
        dnnl.omp_set_num_threads(dnn->n_threads);
    }
    if (dnnl.dnnl_memory_set_data_handle(p->src, (void *)x) != dnnl_success ||
        dnnl.dnnl_memory_set_data_handle(p->wei, (void *)w) != dnnl_success ||
        dnnl.dnnl_memory_set_data_handle(p->dst, y) != dnnl_success ||
        dnnl.dnnl_primitive_execute(p->prim, dnn->stream, 3, args) != dnnl_success ||
        dnnl.dnnl_stream_wait(dnn->stream) != dnnl_success) {
        return HS_E_DEVICE;
    }
    return HS_OK;
}

/* Rows [0, n_rows) of src (type t, src_stride bytes apart, n elements each) widened to f32,
 * dst_ld floats apart, split over the pool. */
struct hs__onednn_widen {
    const struct hs_quant_kernels *k;
    const char *src;
    size_t src_stride;
    float *dst;
    int64_t dst_ld, n, n_rows;
};

static void widen_fn(void *ctx, int ith, int nth)
{
    const struct hs__onednn_widen *t = ctx;
    const int64_t chunk = (t->n_rows + nth - 1) / nth;
    const int64_t r1 = HS_MIN(t->n_rows, (int64_t)(ith + 1) * chunk);
    for (int64_t r = (int64_t)ith * chunk; r < r1; r++) {
        t->k->to_float(t->src + (size_t)r * t->src_stride, t->dst + r * t->dst_ld, t->n);
    }
}

static void widen(struct hs__onednn *dnn, enum hs_type t, const void *src, size_t src_stride,
                  int64_t n_rows, int64_t n, float *dst)
{
    struct hs__onednn_widen w = {.k = hs__cpu_kernels(t, HS_ISA_COUNT),
                                 .src = src,
                                 .src_stride = src_stride,
                                 .dst = dst,
                                 .dst_ld = n,
                                 .n = n,
                                 .n_rows = n_rows};
    hs__pool_run_named(dnn->pool, widen_fn, &w, "onednn-widen");
}

void hs__onednn_set_min_rows(struct hs__onednn *dnn, int64_t min_rows)
{
    dnn->min_rows = min_rows;
}

bool hs__onednn_wants(const struct hs__onednn *dnn, enum hs_type t, int64_t n_rows)
{
    return n_rows >= (dnn ? dnn->min_rows : HS__ONEDNN_MIN_ROWS) &&
           (t == HS_TYPE_F32 || t == HS_TYPE_F16 || t == HS_TYPE_BF16);
}

hs_status hs__onednn_matmul(struct hs__onednn *dnn, const struct hs_tensor *w, const void *x,
                            size_t x_stride, struct hs_tensor *y)
{
    const int64_t k = w->ne[0], n = w->ne[1], m = y->ne[1];
    if (!hs__onednn_wants(dnn, w->type, m)) {
        return HS_E_NOTSUP;
    }
    const int64_t y_ld = (int64_t)(y->nb[1] / sizeof(float));
    if (w->type == HS_TYPE_F32) {
        return run_matmul(dnn, dnnl_f32, m, k, n, x, (int64_t)(x_stride / sizeof(float)), w->data,
                          (int64_t)(w->nb[1] / sizeof(float)), y->data, y_ld);
    }
    if (w->type == HS_TYPE_BF16 && dnn->bf16_native) {
        return run_matmul(dnn, dnnl_bf16, m, k, n, x, (int64_t)(x_stride / sizeof(uint16_t)),
                          w->data, (int64_t)(w->nb[1] / sizeof(uint16_t)), y->data, y_ld);
    }
    /* F16, BF16 without a bf16 kernel: f32 products of the same (exactly widened) values. */
    const int64_t panel =
        HS_MAX(1, (int64_t)(HS__ONEDNN_PANEL_BYTES / ((size_t)k * sizeof(float))));
    const int64_t rows = HS_MIN(panel, n);
    HS_TRY(hs__cpu_reserve(&dnn->xbuf, &dnn->xbuf_bytes, (size_t)(m * k) * sizeof(float)));
    HS_TRY(hs__cpu_reserve(&dnn->wbuf, &dnn->wbuf_bytes, (size_t)(rows * k) * sizeof(float)));
    widen(dnn, w->type, x, x_stride, m, k, dnn->xbuf);
    for (int64_t o = 0; o < n; o += rows) {
        const int64_t nr = HS_MIN(rows, n - o);
        widen(dnn, w->type, (const char *)w->data + (size_t)o * w->nb[1], w->nb[1], nr, k,
              dnn->wbuf);
        HS_TRY(run_matmul(dnn, dnnl_f32, m, k, nr, dnn->xbuf, k, dnn->wbuf, k, (float *)y->data + o,
                          y_ld));
    }
    return HS_OK;
}

const char *hs__onednn_impl(struct hs__onednn *dnn, enum hs_type t)
{
    return dnn->impl[t == HS_TYPE_BF16];
}

/* Names oneDNN's implementation of a 512 x 576 x 1536 product in dt into out. */
static void probe_impl(struct hs__onednn *dnn, dnnl_data_type_t dt, char *out, size_t cap)
{
    dnnl_memory_desc_t md[3];
    dnnl_primitive_desc_t pd = matmul_pd(dnn, dt, 512, 576, 1536, 576, 576, 1536, md);
    const char *name = NULL;
    if (!pd ||
        dnnl.dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success) {
        name = NULL;
    }
    snprintf(out, cap, "%s", name ? name : "-");
    if (pd) {
        dnnl.dnnl_primitive_desc_destroy(pd);
    }
}

hs_status hs__onednn_create(struct hs_pool *pool, struct hs__onednn **out)
{
    *out = NULL;
    pthread_once(&dnnl_once, dnnl_load);
    if (!dnnl.ok) {
        return HS_E_NOTSUP;
    }
    struct hs__onednn *dnn = calloc(1, sizeof(*dnn));
    if (!dnn) {
        return HS_E_NOMEM;
    }
    dnn->pool = pool;
    dnn->n_threads = hs__pool_n_threads(pool);
    dnn->min_rows = HS__ONEDNN_MIN_ROWS;
    if (dnnl.dnnl_engine_create(&dnn->engine, dnnl_cpu, 0) != dnnl_success) {
        goto fail;
    }
    if (dnnl.dnnl_stream_create(&dnn->stream, dnn->engine, dnnl_stream_default_flags) !=
        dnnl_success) {
        goto fail_engine;
    }
    probe_impl(dnn, dnnl_f32, dnn->impl[0], sizeof(dnn->impl[0]));
    probe_impl(dnn, dnnl_bf16, dnn->impl[1], sizeof(dnn->impl[1]));
    /* oneDNN falls back to its reference loops where the CPU lacks bf16 instructions: far
     * slower than widening to f32. */
    dnn->bf16_native = strcmp(dnn->impl[1], "-") != 0 && strncmp(dnn->impl[1], "ref", 3) != 0;
    *out = dnn;
    return HS_OK;

fail_engine:
    dnnl.dnnl_engine_destroy(dnn->engine);
fail:
    free(dnn);
    return HS_E_DEVICE;
}

void hs__onednn_destroy(struct hs__onednn *dnn)
{
    if (!dnn) {
        return;
    }
    for (int i = 0; i < HS__ONEDNN_CACHE; i++) {
        prim_clear(&dnn->cache[i]);
    }
    dnnl.dnnl_stream_destroy(dnn->stream);
    dnnl.dnnl_engine_destroy(dnn->engine);
    hs_free_aligned(dnn->wbuf);
    hs_free_aligned(dnn->xbuf);
    free(dnn);
}
