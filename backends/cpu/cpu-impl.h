/* CPU backend internals shared by its source files: cpu.c (the row-wise ops, the iface,
 * lifetime), matmul.c (the weight products), attention.c (attention over the paged cache) and
 * hints.c. Internal to backends/cpu. */
#ifndef HS_BACKENDS_CPU_CPU_IMPL_H
#define HS_BACKENDS_CPU_CPU_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "backends/backend-impl.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/quants.h"

/* A weight's repacked copy (repack.h), made when a context is created (prepare_weight) and
 * used for every product of the weight: src is the weight's data (mmap'd, borrowed), dst the
 * copy (owns). */
struct hs_cpu_repacked {
    const void *src;
    void *dst;
    size_t bytes;
    int64_t n_in;    /* elements per row */
    int64_t rows;    /* rows repacked: the first group * (ne[1] / group) */
    size_t w_stride; /* the source's row stride */
    int64_t group;   /* rows a group: 8, or 16 (Q5_0 on AVX-512) */
    /* Q5_0: one activation row against n_groups groups from wr on (repack.h) */
    void (*gemv)(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x);
    /* Q4_0: nc (1..4) activation rows against n_groups groups from wr on (repack.h) */
    void (*gemm)(int64_t n, float *s, size_t bs, const void *wr, int64_t n_groups, const void *x,
                 size_t xs, int nc);
};

/* Products a step's order is remembered for, and threads their first weight bytes (hints.c); 30
 * layers of 4 products take 121. */
#define HS__CPU_HINT_OPS     512
#define HS__CPU_HINT_THREADS 8
/* KiB of each span a worker prefetches, unless HS_CPU_HINT_KB says otherwise (0: no hints). */
#define HS__CPU_HINT_KB 128

/* One product of a step: its first weight, and each thread's first weight rows (2 spans for the
 * FFN's gate and up). */
struct hs__cpu_hint_op {
    const void *key;
    struct hs__pool_span first[HS__CPU_HINT_THREADS][2];
};

struct hs_cpu_backend {
    struct hs_backend base; /* first */
    struct hs_pool *pool;
    void *act;        /* converted activations; owns */
    size_t act_bytes; /* capacity of act */
    void *wsplit;     /* per-thread chunks of weight rows in the split form (matmul.c); owns */
    size_t wsplit_bytes;
    float *tls;       /* per-thread scratch [n_threads][tls_stride]; owns */
    size_t tls_stride;
    enum hs_isa isa; /* detected at creation */
    bool simd;       /* AVX2 + FMA + F16C kernels enabled (fused f16 accumulation, f32 mad) */
    bool repack;     /* repack Q4_0 weights (AVX2; HS_CPU_REPACK=0: off) */
    struct hs_cpu_repacked *repacked; /* [n_repacked], sorted by src; owns */
    size_t n_repacked, cap_repacked;
    struct hs__onednn *dnn; /* prompt-sized F32/F16/BF16 products (onednn.h); owns; or NULL */
    bool onednn;            /* dnn in use (kept when switched off: its primitives stay made) */
    /* The cos / sin of the last rope's rows, [rope_n][n_rot], reused while the positions and
     * parameters repeat: every layer's q and k of a step rotate the same positions. */
    float *rope_cs;
    size_t rope_cs_bytes;
    int32_t *rope_pos; /* [rope_n]: the positions rope_cs was made for */
    size_t rope_pos_bytes;
    int64_t rope_n; /* 0: nothing cached */
    struct hs_rope_params rope_p;
    /* The products of a step in the order the last one took them, each with the weight bytes
     * its threads started on (hints.c), [HS__CPU_HINT_OPS]; owns; NULL: no hints. */
    struct hs__cpu_hint_op *hint_ops;
    int hint_n, hint_pos;
    size_t hint_bytes; /* the most a worker prefetches of a span */
};

static inline struct hs_cpu_backend *cpu_backend_of(struct hs_backend *be)
{
    return (struct hs_cpu_backend *)be;
}

/* Grows *buf (HS_ALIGN_BYTES-aligned, owned by the caller) to at least need bytes; what was
 * there is lost when it grows. HS_E_NOMEM leaves the old buffer. Thread: engine only. */
hs_status hs__cpu_reserve(void **buf, size_t *cap, size_t need);

/* Makes sure every thread has n floats of scratch (cpu->tls, tls_stride floats apart); what was
 * there is lost when it grows. HS_E_NOMEM leaves the old scratch. Thread: engine only. */
hs_status hs__cpu_reserve_tls(struct hs_cpu_backend *cpu, size_t n);

/* Prefetch hints (hints.c). At creation, after the pool: reads HS_CPU_HINT_KB and makes the
 * order's table (none with one thread or HS_CPU_HINT_KB=0). hs__cpu_hint_enter enters the product
 * whose first weight's data is key into the step's order, hints the workers at the next one's
 * first rows and returns the product's entry (NULL: no hints), whose threads' first rows
 * hs__cpu_hint_fill records (b may be empty). Thread: engine only. */
void hs__cpu_hints_init(struct hs_cpu_backend *cpu);
struct hs__cpu_hint_op *hs__cpu_hint_enter(struct hs_cpu_backend *cpu, const void *key);
void hs__cpu_hint_fill(struct hs__cpu_hint_op *h, int ith, struct hs__pool_span a,
                       struct hs__pool_span b);

/* The weight products (matmul.c); arguments validated by backend.c. hs__cpu_prepare_weight
 * makes a weight's repacked copy where its type and the CPU have one (context creation). */
hs_status hs__cpu_matmul(struct hs_backend *be, const struct hs_tensor *w,
                         const struct hs_tensor *x, struct hs_tensor *y);
hs_status hs__cpu_matmul_multi(struct hs_backend *be, int n, const struct hs_tensor *const *ws,
                               const struct hs_tensor *x, struct hs_tensor *const *ys);
hs_status hs__cpu_ffn(struct hs_backend *be, const struct hs_ffn_args *a);
hs_status hs__cpu_moe_ffn(struct hs_backend *be, const struct hs_moe_ffn_args *a);
hs_status hs__cpu_prepare_weight(struct hs_backend *be, const struct hs_tensor *w);

/* y = silu(g) * u over n values (y may alias g or u). */
typedef void (*hs__swiglu_fn)(int64_t n, float *y, const float *g, const float *u);

/* The SwiGLU kernel of the backend's ISA (cpu.c), and the swiglu op, which the FFN's oneDNN
 * path runs between its products. */
hs__swiglu_fn hs__cpu_swiglu_kernel(const struct hs_cpu_backend *cpu);
hs_status hs__cpu_swiglu(struct hs_backend *be, const struct hs_tensor *gate,
                         const struct hs_tensor *up, struct hs_tensor *y);

/* [*a, *b): this thread's share of n items, boundaries on multiples of align. */
static inline void split_range(int64_t n, int ith, int nth, int64_t align, int64_t *a, int64_t *b)
{
    int64_t chunk = (n + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    *a = HS_MIN((int64_t)ith * chunk, n);
    *b = HS_MIN(*a + chunk, n);
}

/* Row r of a tensor validated as [n_rows][ne0] with uniform row stride nb[1]. */
static inline char *row_at(const struct hs_tensor *t, int64_t r)
{
    return (char *)t->data + (size_t)r * t->nb[1];
}

/* The attention slot (attention.c); arguments validated by backend.c. */
hs_status hs__cpu_attention(struct hs_backend *be, const struct hs_attn_args *args);

#endif
