/* The CPU backend: the reference implementation of every op, parallelised over a thread pool.
 * This file holds the row-wise ops, rope, get_rows, kv_store and the backend's lifetime; the
 * weight products (matmul, matmul_multi, ffn, moe_ffn) and repacked weights are in matmul.c,
 * attention in attention.c, prefetch hints in hints.c. Numerics follow ggml's CPU backend
 * (rms_norm sums in double, rope's cos/sin cache; flash attention's f16 paths in attention.c)
 * so that outputs match llama.cpp closely. Arguments were validated by backend.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend-impl.h"
#include "backends/cpu/cpu-impl.h"
#include "backends/cpu/cpu.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/quants.h"
#include "hs-config.h"

/* Elementwise ops run on the caller alone below this many elements (dispatch would cost
 * more). */
#define HS__CPU_PAR_MIN_ELEMS 16384

/* ---- helpers ---- */

hs_status hs__cpu_reserve(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return HS_OK;
    }
    void *p = hs_alloc_aligned(need);
    if (!p) {
        return HS_E_NOMEM;
    }
    hs_free_aligned(*buf);
    *buf = p;
    *cap = need;
    return HS_OK;
}

hs_status hs__cpu_reserve_tls(struct hs_cpu_backend *cpu, size_t n)
{
    if (n <= cpu->tls_stride) {
        return HS_OK;
    }
    n = hs_align_up(n, HS_ALIGN_BYTES / sizeof(float));
    float *p = hs_alloc_aligned(n * sizeof(float) * (size_t)cpu->base.n_threads);
    if (!p) {
        return HS_E_NOMEM;
    }
    hs_free_aligned(cpu->tls);
    cpu->tls = p;
    cpu->tls_stride = n;
    return HS_OK;
}

/* ---- get_rows ---- */

struct hs__rows_task {
    const struct hs_quant_kernels *k;
    const struct hs_tensor *w;
    const hs_token *ids;
    struct hs_tensor *y;
};

static void get_rows_fn(void *ctx, int ith, int nth)
{
    struct hs__rows_task *t = ctx;
    int64_t r0, r1;
    split_range(t->y->ne[1], ith, nth, 1, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        t->k->to_float(row_at(t->w, t->ids[r]), (float *)row_at(t->y, r), t->w->ne[0]);
    }
}

static hs_status cpu_get_rows(struct hs_backend *be, const struct hs_tensor *w, const hs_token *ids,
                              struct hs_tensor *y)
{
    struct hs__rows_task t = {
        .k = hs__cpu_kernels(w->type, HS_ISA_COUNT), .w = w, .ids = ids, .y = y};
    if (!t.k) {
        return HS_E_NOTSUP;
    }
    if (hs_tensor_nelements(y) < HS__CPU_PAR_MIN_ELEMS) {
        hs__pool_run1_named(cpu_backend_of(be)->pool, get_rows_fn, &t, "get-rows");
    } else {
        hs__pool_run_named(cpu_backend_of(be)->pool, get_rows_fn, &t, "get-rows");
    }
    return HS_OK;
}

/* ---- row-wise f32 ops: rms_norm, add, mul, swiglu ---- */

/* The portable SwiGLU: libm expf per element. */
static void swiglu_f32_scalar(int64_t n, float *y, const float *g, const float *u)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = g[i];
        y[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

/* SwiGLU with ggml's AVX-512 vector expf, which llama.cpp uses on AVX-512 CPUs (where its
 * references come from), on AVX-512 and on AVX2 + FMA CPUs alike; else the portable one. The
 * vector kernels leave a row's n % 16 tail to libm expf. */
hs__swiglu_fn hs__cpu_swiglu_kernel(const struct hs_cpu_backend *cpu)
{
    switch (cpu->isa) {
    case HS_ISA_AVX512:
        return hs__swiglu_f32_avx512;
    case HS_ISA_AVX2:
        return hs__swiglu_f32_avx2;
    default:
        return swiglu_f32_scalar;
    }
}

enum hs__ew_kind { HS__EW_RMS_NORM, HS__EW_ADD, HS__EW_MUL, HS__EW_SWIGLU };

static const char *const ew_names[] = {"rms-norm", "add", "mul", "swiglu"};

struct hs__ew_task {
    enum hs__ew_kind kind;
    const struct hs_tensor *a; /* x, a or gate */
    const struct hs_tensor *b; /* norm weight (may be NULL), b (maybe one row) or up */
    struct hs_tensor *y;
    float eps;
    hs__swiglu_fn swiglu; /* SwiGLU: cpu_swiglu_kernel's */
};

static void rms_norm_row(const float *x, const float *w, float eps, float *y, int64_t n)
{
    /* As ggml: squares in float, summed in double; the scale in float. */
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += (double)(x[i] * x[i]);
    }
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    if (w) {
        for (int64_t i = 0; i < n; i++) {
            y[i] = (x[i] * scale) * w[i];
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            y[i] = x[i] * scale;
        }
    }
}

static void ew_fn(void *ctx, int ith, int nth)
{
    const struct hs__ew_task *t = ctx;
    const int64_t n = t->a->ne[0];
    int64_t r0, r1;
    split_range(hs_tensor_n_rows(t->a), ith, nth, 1, &r0, &r1);
    const bool b_bcast = t->b && hs_tensor_n_rows(t->b) == 1;
    for (int64_t r = r0; r < r1; r++) {
        const float *a = (const float *)row_at(t->a, r);
        const float *b = t->b ? (const float *)row_at(t->b, b_bcast ? 0 : r) : NULL;
        float *y = (float *)row_at(t->y, r);
        switch (t->kind) {
        case HS__EW_RMS_NORM:
            rms_norm_row(a, t->b ? (const float *)t->b->data : NULL, t->eps, y, n);
            break;
        case HS__EW_ADD:
            for (int64_t i = 0; i < n; i++) {
                y[i] = a[i] + b[i];
            }
            break;
        case HS__EW_MUL:
            for (int64_t i = 0; i < n; i++) {
                y[i] = a[i] * b[i];
            }
            break;
        case HS__EW_SWIGLU:
            t->swiglu(n, y, a, b);
            break;
        }
    }
}

static hs_status cpu_ew(struct hs_backend *be, struct hs__ew_task *t)
{
    if (hs_tensor_nelements(t->a) < HS__CPU_PAR_MIN_ELEMS) {
        hs__pool_run1_named(cpu_backend_of(be)->pool, ew_fn, t, ew_names[t->kind]);
    } else {
        hs__pool_run_named(cpu_backend_of(be)->pool, ew_fn, t, ew_names[t->kind]);
    }
    return HS_OK;
}

static hs_status cpu_rms_norm(struct hs_backend *be, const struct hs_tensor *x,
                              const struct hs_tensor *w, float eps, struct hs_tensor *y)
{
    struct hs__ew_task t = {.kind = HS__EW_RMS_NORM, .a = x, .b = w, .y = y, .eps = eps};
    return cpu_ew(be, &t);
}

static hs_status cpu_add(struct hs_backend *be, const struct hs_tensor *a,
                         const struct hs_tensor *b, struct hs_tensor *y)
{
    struct hs__ew_task t = {.kind = HS__EW_ADD, .a = a, .b = b, .y = y};
    return cpu_ew(be, &t);
}

static hs_status cpu_mul(struct hs_backend *be, const struct hs_tensor *a,
                         const struct hs_tensor *b, struct hs_tensor *y)
{
    struct hs__ew_task t = {.kind = HS__EW_MUL, .a = a, .b = b, .y = y};
    return cpu_ew(be, &t);
}

hs_status hs__cpu_swiglu(struct hs_backend *be, const struct hs_tensor *gate,
                         const struct hs_tensor *up, struct hs_tensor *y)
{
    struct hs__ew_task t = {.kind = HS__EW_SWIGLU,
                            .a = gate,
                            .b = up,
                            .y = y,
                            .swiglu = hs__cpu_swiglu_kernel(cpu_backend_of(be))};
    return cpu_ew(be, &t);
}

/* ---- rope ---- */

typedef void (*hs__rope_rot_fn)(float *v, const float *cs, int n_rot);

static void rope_norm_scalar(float *v, const float *cs, int n_rot)
{
    for (int i = 0; i < n_rot; i += 2) {
        const float c = cs[i];
        const float s = cs[i + 1];
        const float x0 = v[i];
        const float x1 = v[i + 1];
        /* As llama.cpp's build, which contracts x0 * c - x1 * s into an FMA on the first
         * product (ggml's rotate_pairs under -ffp-contract=fast). */
        v[i] = fmaf(x0, c, -(x1 * s));
        v[i + 1] = fmaf(x0, s, x1 * c);
    }
}

static void rope_neox_scalar(float *v, const float *cs, int n_rot)
{
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        const float c = cs[i];
        const float s = cs[half + i];
        const float x0 = v[i];
        const float x1 = v[i + half];
        v[i] = fmaf(x0, c, -(x1 * s));
        v[i + half] = fmaf(x0, s, x1 * c);
    }
}

struct hs__rope_task {
    struct hs_tensor *x; /* [n_rows][n_head][head_dim] */
    const int32_t *pos;
    const struct hs_rope_params *p;
    /* [n_rows][2 n_rot], each row in rot's layout: NORM [c0 s0 c1 s1 ...][-s0 c0 -s1 c1 ...],
     * NEOX [c0 c1 ...][s0 s1 ...] */
    float *cs;
    bool make_cs; /* cs is to be made first (each thread its own rows) */
    hs__rope_rot_fn rot;
};

static void rope_fn(void *ctx, int ith, int nth)
{
    const struct hs__rope_task *t = ctx;
    const int n_rot = t->p->n_rot;
    const int half = n_rot / 2;
    const bool neox = t->p->mode == HS_ROPE_NEOX;
    const float theta_scale = t->make_cs ? powf(t->p->freq_base, -2.0f / (float)n_rot) : 0.0f;
    int64_t r0, r1;
    split_range(t->x->ne[2], ith, nth, 1, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *cs = t->cs + (size_t)r * 2 * (size_t)n_rot;
        if (t->make_cs) {
            /* As ggml's rope cache (rope_yarn with ext_factor 0): theta advanced by repeated
             * multiplication in float. */
            float theta = (float)t->pos[r];
            for (int i = 0; i < half; i++) {
                const float th = t->p->freq_scale * theta;
                const float c = cosf(th);
                const float s = sinf(th);
                if (neox) {
                    cs[i] = c;
                    cs[half + i] = s;
                } else {
                    cs[2 * i] = c;
                    cs[2 * i + 1] = s;
                    cs[n_rot + 2 * i] = -s;
                    cs[n_rot + 2 * i + 1] = c;
                }
                theta *= theta_scale;
            }
        }
        for (int64_t h = 0; h < t->x->ne[1]; h++) {
            t->rot(
                (float *)((char *)t->x->data + (size_t)r * t->x->nb[2] + (size_t)h * t->x->nb[1]),
                cs, n_rot);
        }
    }
}

/* Whether cpu->rope_cs holds the cos / sin of these n positions under p. */
static bool rope_cs_holds(const struct hs_cpu_backend *cpu, const int32_t *pos, int64_t n,
                          const struct hs_rope_params *p)
{
    return cpu->rope_n == n && cpu->rope_p.mode == p->mode && cpu->rope_p.n_rot == p->n_rot &&
           cpu->rope_p.freq_base == p->freq_base && cpu->rope_p.freq_scale == p->freq_scale &&
           memcmp(cpu->rope_pos, pos, (size_t)n * sizeof(*pos)) == 0;
}

static hs_status cpu_rope(struct hs_backend *be, struct hs_tensor *x, const int32_t *pos,
                          const struct hs_rope_params *p)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    const int64_t n = x->ne[2];
    const bool make_cs = !rope_cs_holds(cpu, pos, n, p);
    if (make_cs) {
        cpu->rope_n = 0; /* the buffers may be lost below */
        HS_TRY(hs__cpu_reserve((void **)&cpu->rope_cs, &cpu->rope_cs_bytes,
                               (size_t)n * 2 * (size_t)p->n_rot * sizeof(float)));
        HS_TRY(hs__cpu_reserve((void **)&cpu->rope_pos, &cpu->rope_pos_bytes,
                               (size_t)n * sizeof(*pos)));
    }
    const bool neox = p->mode == HS_ROPE_NEOX;
    struct hs__rope_task t = {
        .x = x,
        .pos = pos,
        .p = p,
        .cs = cpu->rope_cs,
        .make_cs = make_cs,
        .rot = cpu->simd ? (neox ? hs__rope_neox_f32_avx2 : hs__rope_norm_f32_avx2)
                         : (neox ? rope_neox_scalar : rope_norm_scalar),
    };
    if (hs_tensor_nelements(x) < HS__CPU_PAR_MIN_ELEMS) {
        hs__pool_run1_named(cpu->pool, rope_fn, &t, "rope");
    } else {
        hs__pool_run_named(cpu->pool, rope_fn, &t, "rope");
    }
    if (make_cs) {
        memcpy(cpu->rope_pos, pos, (size_t)n * sizeof(*pos));
        cpu->rope_p = *p;
        cpu->rope_n = n;
    }
    return HS_OK;
}

/* ---- kv_store ---- */

static hs_status cpu_kv_store(struct hs_backend *be, const struct hs_tensor *src,
                              struct hs_tensor *cache, const int32_t *slots)
{
    (void)be;
    const struct hs_quant_kernels *f16 = hs__cpu_kernels(HS_TYPE_F16, HS_ISA_COUNT);
    const int64_t hd = src->ne[0];
    for (int64_t r = 0; r < src->ne[2]; r++) {
        for (int64_t h = 0; h < src->ne[1]; h++) {
            const float *s = (const float *)((const char *)src->data + (size_t)r * src->nb[2] +
                                             (size_t)h * src->nb[1]);
            char *d =
                (char *)cache->data + (size_t)slots[r] * cache->nb[2] + (size_t)h * cache->nb[1];
            if (cache->type == HS_TYPE_F32) {
                memcpy(d, s, (size_t)hd * sizeof(float));
            } else if (f16) {
                f16->from_float(s, d, hd);
            } else {
                uint16_t *d16 = (uint16_t *)d;
                for (int64_t i = 0; i < hd; i++) {
                    d16[i] = hs_fp32_to_fp16(s[i]);
                }
            }
        }
    }
    return HS_OK;
}

/* ---- lifetime ---- */

static bool cpu_supports_op(struct hs_backend *be, enum hs_op op, enum hs_type t)
{
    (void)be;
    switch (op) {
    case HS_OP_MATMUL:
    case HS_OP_GET_ROWS:
    case HS_OP_FFN:
    case HS_OP_MOE_FFN:
        return hs__cpu_kernels(t, HS_ISA_COUNT) != NULL;
    case HS_OP_KV_STORE:
    case HS_OP_ATTENTION:
        return (t == HS_TYPE_F16 || t == HS_TYPE_F32) && hs__cpu_kernels(t, HS_ISA_COUNT) != NULL &&
               hs__cpu_kernels(HS_TYPE_F16, HS_ISA_COUNT) != NULL;
    case HS_OP_RMS_NORM:
    case HS_OP_ROPE:
    case HS_OP_ADD:
    case HS_OP_MUL:
    case HS_OP_SWIGLU:
        return t == HS_TYPE_F32;
    case HS_OP_COUNT:
        break;
    }
    return false;
}

static void cpu_destroy(struct hs_backend *be)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    if (!cpu) {
        return;
    }
#if HS_HAVE_ONEDNN
    hs__onednn_destroy(cpu->dnn);
#endif
    hs__pool_destroy(cpu->pool);
    hs_free_aligned(cpu->act);
    hs_free_aligned(cpu->wsplit);
    hs_free_aligned(cpu->tls);
    hs_free_aligned(cpu->rope_cs);
    hs_free_aligned(cpu->rope_pos);
    for (size_t i = 0; i < cpu->n_repacked; i++) {
        hs_free_aligned(cpu->repacked[i].dst);
    }
    free(cpu->repacked);
    free(cpu->hint_ops);
    free(cpu);
}

static void cpu_bind_caller(struct hs_backend *be)
{
    hs__pool_bind_caller(cpu_backend_of(be)->pool);
}

static void cpu_run_host(struct hs_backend *be, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    hs__pool_run_dyn_named(cpu_backend_of(be)->pool, fn, ctx, "host-tasks");
}

static const struct hs_backend_iface cpu_iface = {
    /* .version     = */ HS_BACKEND_IFACE_VERSION,
    /* .name        = */ "cpu",
    /* .destroy     = */ cpu_destroy,
    /* .supports_op = */ cpu_supports_op,
    /* .matmul      = */ hs__cpu_matmul,
    /* .get_rows    = */ cpu_get_rows,
    /* .rms_norm    = */ cpu_rms_norm,
    /* .rope        = */ cpu_rope,
    /* .add         = */ cpu_add,
    /* .mul         = */ cpu_mul,
    /* .swiglu      = */ hs__cpu_swiglu,
    /* .kv_store    = */ cpu_kv_store,
    /* .attention   = */ hs__cpu_attention,
    /* .ffn         = */ hs__cpu_ffn,
    /* .synchronize = */ NULL,
    /* .moe_ffn     = */ hs__cpu_moe_ffn,
    /* .matmul_multi = */ hs__cpu_matmul_multi,
    /* .buffer_alloc = */ NULL,
    /* .buffer_free = */ NULL,
    /* .buffer_is_host = */ NULL,
    /* .buffer_set = */ NULL,
    /* .buffer_get = */ NULL,
    /* .buffer_copy = */ NULL,
    /* .bind_caller = */ cpu_bind_caller,
    /* .run_host    = */ cpu_run_host,
    /* .prepare_weight = */ hs__cpu_prepare_weight,
};

void hs__cpu_set_simd(struct hs_backend *be, bool on)
{
    HS_ASSERT(be->iface == &cpu_iface);
    cpu_backend_of(be)->simd = on && cpu_backend_of(be)->isa >= HS_ISA_AVX2;
}

hs_status hs__cpu_set_onednn(struct hs_backend *be, bool on)
{
    HS_ASSERT(be->iface == &cpu_iface);
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
#if HS_HAVE_ONEDNN
    cpu->onednn = false;
    if (on && !cpu->dnn) {
        HS_TRY(hs__onednn_create(cpu->pool, &cpu->dnn));
    }
    cpu->onednn = on;
    return HS_OK;
#else
    (void)cpu;
    return on ? HS_E_NOTSUP : HS_OK;
#endif
}

hs_status hs__backend_cpu_create(const struct hs_backend_params *params, struct hs_backend **out)
{
    hs_status st = HS_E_NOMEM;
    *out = NULL;
    struct hs_cpu_backend *cpu = calloc(1, sizeof(*cpu));
    if (!cpu) {
        goto fail;
    }
    cpu->base.iface = &cpu_iface;
    cpu->isa = hs__cpu_detect_isa();
    cpu->simd = cpu->isa >= HS_ISA_AVX2;
    const char *rp = getenv("HS_CPU_REPACK");
    cpu->repack = cpu->isa >= HS_ISA_AVX2 && !(rp && strcmp(rp, "0") == 0);
    st = hs__pool_create(params->n_threads, params->pin_threads, params->first_core, &cpu->pool);
    if (st != HS_OK) {
        goto fail_cpu;
    }
    cpu->base.n_threads = hs__pool_n_threads(cpu->pool);
    hs__cpu_hints_init(cpu);
    /* oneDNN only with HS_ONEDNN=1 (made on first use, mm_onednn_wants): its products of 64+
     * rows sum in another order than one row alone, and the engine's guarantees (a preempted or
     * segmented sequence recomputed, a request equal alone and in a crowd) rest on batch
     * invariance at every step size. */
    const char *dnn_env = getenv("HS_ONEDNN");
    cpu->onednn = HS_HAVE_ONEDNN && dnn_env && strcmp(dnn_env, "1") == 0;
    *out = &cpu->base;
    return HS_OK;

fail_cpu:
    free(cpu);
fail:
    return st;
}
