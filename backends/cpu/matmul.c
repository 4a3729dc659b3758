/* The CPU backend's weight products: matmul, matmul_multi, the FFN and the MoE FFN, and the
 * repacked copies of weights they read (cpu.c holds the other ops and the backend's lifetime).
 *
 * Activations are converted once per call to the weight type's vec_dot_type into a scratch
 * buffer owned by the backend (grown only when a bigger shape arrives; for 2+ rows, on kernels
 * that have it, to the split or group form, the weights then split a chunk at a time too:
 * mm_range), then weight rows are shared out across threads in chunks claimed as they go.
 * Arguments were validated by backend.c. */
#include <stdlib.h>
#include <string.h>

#include "backends/backend-impl.h"
#include "backends/cpu/cpu-impl.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/quants.h"
#include "backends/cpu/repack.h"
#include "hs-config.h"

/* Activation conversions run on the caller alone below this many elements: a batched decode's
 * rows (16 x 1536 for SmolLM-135M's ffn_down) convert in a few microseconds, less than a
 * dispatch and its barrier cost, and far less when the cores are shared and the workers wake
 * late. The bits do not depend on which thread converts a row. */
#define HS__CPU_PAR_MIN_CONVERT 65536
/* Products of fewer multiply-adds than this (routers, gates: a few rows of weights) run on the
 * caller alone. */
#define HS__CPU_PAR_MIN_MACS 32768
/* Bytes of weight rows a thread keeps hot while it sweeps all activation rows: one row (decode)
 * streams 16 KiB at a time; 2 or more take 8 KiB, whose next chunk is prefetched a share per
 * group of 4 activation rows (SmolLM-135M Q8_0, 2 Zen 5 threads, `bench -b 16`, interleaved:
 * 16 -> 8 KiB 652-663 -> 723-734 tok/s on AVX-512, 414-416 -> 420-447 on AVX2, pp512 the same;
 * 32 KiB 592-627; one row at 8 KiB lost 5-7% on AVX2). */
#define HS__CPU_W_CHUNK_BYTES      16384
#define HS__CPU_W_CHUNK_BYTES_ROWS 8192

/* ---- matmul ---- */

struct hs__mm_task {
    const struct hs_quant_kernels *k;
    const struct hs_tensor *w; /* [n_out][n_in] */
    const struct hs_tensor *x; /* [n_rows][n_in] f32 */
    struct hs_tensor *y;       /* [n_rows][n_out] f32 */
    char *xq;                  /* converted activations, rows xq_stride bytes apart */
    size_t xq_stride;
    const uint8_t *wr; /* w's first wr_rows rows repacked (repack.h), or NULL; borrowed */
    int64_t wr_rows;   /* a multiple of wr_group */
    int64_t wr_group;  /* rows a group of the copy: 8, or 16 (Q5_0 on AVX-512) */
    /* the copy's kernel (hs_cpu_repacked.gemv for Q5_0, .gemm for Q4_0) */
    void (*wr_gemv)(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x);
    void (*wr_gemm)(int64_t n, float *s, size_t bs, const void *wr, int64_t n_groups, const void *x,
                    size_t xs, int nc);
    bool split;      /* xq in the split form: k->from_float_split, k->gemm_tile_split */
    bool xsplit;     /* xq in the split form, w in the file's: k->gemm_tile_xsplit */
    bool group;      /* xq in the group form, w's chunks made groups: k->gemm_group */
    uint8_t *wsplit; /* with split or group: thread ith's chunk of weight rows at ith *
                      * wsplit_bytes */
    size_t wsplit_bytes;
};

static void mm_convert(void *ctx, int ith, int nth)
{
    struct hs__mm_task *t = ctx;
    int64_t r0, r1;
    split_range(t->x->ne[1], ith, nth, 1, &r0, &r1);
    void (*from_float)(const float *, void *, int64_t) = t->group ? t->k->from_float_group
                                                         : t->split || t->xsplit
                                                             ? t->k->from_float_split
                                                             : t->k->from_float;
    for (int64_t r = r0; r < r1; r++) {
        from_float((const float *)row_at(t->x, r), t->xq + (size_t)r * t->xq_stride, t->x->ne[0]);
    }
}

/* Bytes of one group of rows of t's repacked copy. */
static size_t mm_group_bytes(const struct hs__mm_task *t)
{
    const int64_t n_in = t->w->ne[0];
    return t->w->type == HS_TYPE_Q4_0 ? hs__q4_0x8_bytes(1, n_in)
           : t->wr_group == 16        ? hs__q5_0x16_bytes(1, n_in)
                                      : hs__q5_0x8_bytes(1, n_in);
}

/* Whether mm_range reads output rows from o0 on in t's repacked copy: Q4_0's serves every
 * product, Q5_0's the one-row ones. */
static bool mm_reads_repacked(const struct hs__mm_task *t, int64_t o0)
{
    return t->wr && o0 < t->wr_rows && (t->w->type == HS_TYPE_Q4_0 || t->x->ne[1] == 1);
}

/* Rows [o0, o1) of y = x w^T from w's repacked copy, o0 a multiple of wr_group and o1 <=
 * wr_rows: groups of 8 weight rows against 4 activation rows at a time, a chunk of weight rows
 * (kept hot in cache) against all activation rows; Q5_0's groups against its one row. */
static void mm_range_repacked(const struct hs__mm_task *t, int64_t o0, int64_t o1)
{
    const int64_t n_in = t->w->ne[0];
    const int64_t n_rows = t->x->ne[1];
    const size_t y_stride = t->y->nb[1] / sizeof(float);
    const size_t group_bytes = mm_group_bytes(t);
    if (t->w->type == HS_TYPE_Q5_0) { /* one activation row (mm_range) */
        const int64_t g = t->wr_group;
        t->wr_gemv(n_in, (float *)t->y->data + o0, t->wr + (size_t)(o0 / g) * group_bytes,
                   (o1 - o0) / g, t->xq);
        return;
    }
    const int64_t oc_rows = HS_MAX((int64_t)(HS__CPU_W_CHUNK_BYTES / group_bytes), 1) * 8;
    for (int64_t oc = o0; oc < o1; oc += oc_rows) {
        const int64_t oe = HS_MIN(oc + oc_rows, o1);
        for (int64_t r = 0; r < n_rows; r += 4) {
            t->wr_gemm(n_in, (float *)t->y->data + (size_t)r * y_stride + oc, y_stride,
                       t->wr + (size_t)(oc / 8) * group_bytes, (oe - oc) / 8,
                       t->xq + (size_t)r * t->xq_stride, t->xq_stride, (int)HS_MIN(4, n_rows - r));
        }
    }
}

/* Weight rows of one chunk of mm_range: HS__CPU_W_CHUNK_BYTES(_ROWS) of them, a multiple of 4
 * (in the group form: of its group's rows, at least one group). */
static int64_t mm_chunk_rows(const struct hs__mm_task *t)
{
    const size_t w_stride = t->w->nb[1];
    const size_t bytes = t->x->ne[1] > 1 ? HS__CPU_W_CHUNK_BYTES_ROWS : HS__CPU_W_CHUNK_BYTES;
    const int64_t align = t->group ? t->k->group_rows : 4;
    return HS_MAX((int64_t)(bytes / (w_stride ? w_stride : 1)) / align * align, align);
}

/* Bytes of one group of weight rows of t in the group form. */
static size_t mm_group_form_bytes(const struct hs__mm_task *t)
{
    return (size_t)(t->w->ne[0] / 32) * t->k->group_block_bytes;
}

/* Bytes between rows of n elements in the split form, weights and activations alike. */
static size_t mm_split_stride(int64_t n)
{
    return hs_align_up(hs_quant_split_row_size(n), 64);
}

/* Rows [o0, o1) of y = x w^T on thread ith, one chunk of weight rows at a time (kept hot in
 * cache; with split activations, first converted to the split form in the thread's scratch, or
 * with the group form to groups of the kernels' rows for gemm_group) against all activation rows,
 * in gemm_tile blocks of up to 4 x 4 (or from the repacked copy where w has one, one activation row
 * too: its 8-row groups give 8 outputs without horizontal adds, where the file layout's gemv
 * reduces 8 rows' totals with hadds; the same bits, SmolLM-135M Q4_0 tg128 on 2 Zen 3 threads
 * 159-161 -> 229-239 t/s). */
static void mm_range(const struct hs__mm_task *t, int64_t o0, int64_t o1, int ith)
{
    if (mm_reads_repacked(t, o0)) {
        const int64_t e = HS_MIN(o1, t->wr_rows);
        mm_range_repacked(t, o0, e);
        o0 = e;
        if (o0 >= o1) {
            return;
        }
    }
    const int64_t n_in = t->w->ne[0];
    const int64_t n_rows = t->x->ne[1];
    const size_t w_stride = t->w->nb[1];
    const size_t y_stride = t->y->nb[1] / sizeof(float);
    const char *wd = t->w->data;
    float *yd = t->y->data;
    const int64_t oc_rows = mm_chunk_rows(t);
    const size_t ss = mm_split_stride(n_in), gs = t->group ? mm_group_form_bytes(t) : 0;
    uint8_t *sw = t->split ? t->wsplit + (size_t)ith * t->wsplit_bytes : NULL;
    uint8_t *sg = t->group ? t->wsplit + (size_t)ith * t->wsplit_bytes : NULL;

    for (int64_t oc = o0; oc < o1; oc += oc_rows) {
        const int64_t oe = HS_MIN(oc + oc_rows, o1);
        if (sw) { /* the chunk's rows in the split form, once for all activation rows */
            t->k->split_weights(wd + (size_t)oc * w_stride, w_stride, oe - oc, n_in, sw, ss);
        }
        if (sg) { /* or in groups (oc_rows: a multiple of the group's rows) */
            t->k->split_group(wd + (size_t)oc * w_stride, w_stride, oe - oc, n_in, sg, gs);
        }
        /* the next chunk's weights, a share before each activation group: the first group
         * would otherwise wait on memory for every chunk (SmolLM-135M Q8_0, `bench -b 16`, 2
         * Zen 5 threads: 467-500 -> 596-608 tok/s on AVX-512, 434-438 -> 458-465 on AVX2) */
        const char *pf = wd + (size_t)oe * w_stride;
        const size_t pf_bytes = (size_t)(HS_MIN(oe + oc_rows, o1) - oe) * w_stride;
        const size_t pf_share =
            n_rows > 1 ? (pf_bytes / (size_t)((n_rows + 3) / 4) + 63) & ~(size_t)63 : 0;
        size_t pf_at = 0;
        for (int64_t r = 0; r < n_rows; r += 4) {
            const int nc = (int)HS_MIN(4, n_rows - r);
            const char *xr = t->xq + (size_t)r * t->xq_stride;
            for (size_t e = HS_MIN(pf_at + pf_share, pf_bytes); pf_at < e; pf_at += 64) {
                __builtin_prefetch(pf + pf_at, 0, 3);
            }
            if (sg) {
                const int gr = t->k->group_rows;
                for (int64_t o = oc; o < oe; o += gr) {
                    t->k->gemm_group(n_in, yd + (size_t)r * y_stride + o, y_stride,
                                     sg + (size_t)(o - oc) / (size_t)gr * gs, xr, t->xq_stride,
                                     (int)HS_MIN(gr, oe - o), nc);
                }
                continue;
            }
            if (t->xsplit) {
                for (int64_t o = oc; o < oe; o += 4) {
                    t->k->gemm_tile_xsplit(n_in, yd + (size_t)r * y_stride + o, y_stride,
                                           wd + (size_t)o * w_stride, w_stride, xr, t->xq_stride,
                                           (int)HS_MIN(4, oe - o), nc);
                }
                continue;
            }
            if (sw) {
                for (int64_t o = oc; o < oe; o += 4) {
                    t->k->gemm_tile_split(n_in, yd + (size_t)r * y_stride + o, y_stride,
                                          sw + (size_t)(o - oc) * ss, ss, xr, t->xq_stride,
                                          (int)HS_MIN(4, oe - o), nc);
                }
                continue;
            }
            if (nc == 1 && t->k->gemv) {
                t->k->gemv(n_in, yd + (size_t)r * y_stride + oc, wd + (size_t)oc * w_stride,
                           w_stride, xr, oe - oc);
                continue;
            }
            for (int64_t o = oc; o < oe; o += 4) {
                const int nr = (int)HS_MIN(4, oe - o);
                float *s = yd + (size_t)r * y_stride + o;
                const char *wr = wd + (size_t)o * w_stride;
                if (t->k->gemm_tile) {
                    t->k->gemm_tile(n_in, s, y_stride, wr, w_stride, xr, t->xq_stride, nr, nc);
                    continue;
                }
                for (int j = 0; j < nc; j++) {
                    for (int i = 0; i < nr; i++) {
                        t->k->vec_dot(n_in, &s[(size_t)j * y_stride + (size_t)i],
                                      wr + (size_t)i * w_stride, xr + (size_t)j * t->xq_stride);
                    }
                }
            }
        }
    }
}

/* Weight bytes of one dynamic work chunk: small enough that a thread that starts late (or a
 * slower core) costs at most a chunk of imbalance, large enough that claiming is noise. */
#define HS__CPU_DYN_CHUNK_BYTES (32 * 1024)

/* Chunks per thread at most: a late thread costs at most one chunk. The chunks are claimed
 * through hs__pool_chunks, each thread through its own contiguous share first, so that a thread
 * streams one run of weights per product, not every nth chunk of them: SmolLM-135M tg128 on the
 * Zen 5 VM, 2 threads, 4 rounds interleaved, Q8_0 180-191 -> 205-230 t/s, Q4_K_M 240-287 ->
 * 277-316 (a single shared counter before). */
#define HS__CPU_DYN_CHUNKS_PER_THREAD 4

/* Products of 2 or more activation rows (batched decode, speculative verification, prompts)
 * spend 2 to hundreds of times the compute a weight byte that one row does, so a chunk's worth
 * of imbalance costs as much more: they take up to 4x as many, smaller chunks (mm_range still
 * re-reads each 16 KiB of weight rows from cache for every activation group, whatever the
 * chunk). SmolLM-135M Q8_0, HS_PROFILE=1, 2 threads, imbalance thread-ms of matmul + gate/up,
 * 4 -> 16 chunks a thread: 16 sequences (`bench -b 16`, five runs each) 338-596 -> 260-333 of
 * ~12,000 of work; pp512 (three runs each) 151-194 -> 89-138 of ~5,500. */
#define HS__CPU_DYN_CHUNKS_PER_THREAD_FINE 16

/* Output rows per chunk for w against n_rows activation rows, on multiples of align: a multiple
 * of the thread count of chunks (an odd chunk left over would make one thread do a whole chunk
 * more while the others wait), up to HS__CPU_DYN_CHUNKS_PER_THREAD(_FINE) each, of at least about
 * HS__CPU_DYN_CHUNK_BYTES of weights where there are enough: work split by bytes, not rows. */
static int64_t dyn_chunk_rows(const struct hs_cpu_backend *cpu, const struct hs_tensor *w,
                              int64_t n_rows, int64_t align)
{
    const int64_t nth = hs__pool_n_threads(cpu->pool);
    const int64_t bytes = w->ne[1] * (int64_t)w->nb[1];
    int64_t per_thread = bytes / (HS__CPU_DYN_CHUNK_BYTES * nth);
    const int64_t cap =
        n_rows > 1 ? HS__CPU_DYN_CHUNKS_PER_THREAD_FINE : HS__CPU_DYN_CHUNKS_PER_THREAD;
    per_thread = HS_MIN(HS_MAX(per_thread, 1), cap);
    const int64_t rows = (w->ne[1] + nth * per_thread - 1) / (nth * per_thread);
    return HS_MAX((rows + align - 1) / align * align, align);
}

/* ---- repacked weights ---- */

/* The repacked copy of w, or NULL (none was made: not Q4_0 / Q5_0, off, or no memory). Binary
 * search over the copies, sorted by src. */
static const struct hs_cpu_repacked *cpu_find_repacked(const struct hs_cpu_backend *cpu,
                                                       const void *src)
{
    size_t lo = 0, hi = cpu->n_repacked;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const uintptr_t m = (uintptr_t)cpu->repacked[mid].src;
        if (m == (uintptr_t)src) {
            return &cpu->repacked[mid];
        }
        if (m < (uintptr_t)src) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* The types repacked (repack.h): Q4_0 for every product, Q5_0 for decode (on AVX2 CPUs). */
static bool cpu_repacks(enum hs_type type)
{
    return type == HS_TYPE_Q4_0 || type == HS_TYPE_Q5_0;
}

/* Points t at w's repacked copy (its rows in whole groups of 8) where w has one. */
static void mm_use_repacked(const struct hs_cpu_backend *cpu, struct hs__mm_task *t)
{
    if (!cpu_repacks(t->w->type) || !cpu->n_repacked) {
        return;
    }
    const struct hs_cpu_repacked *rp = cpu_find_repacked(cpu, t->w->data);
    const int64_t rows = rp ? HS_MIN(rp->rows, t->w->ne[1] / rp->group * rp->group) : 0;
    if (rows > 0 && rp->n_in == t->w->ne[0] && rp->w_stride == t->w->nb[1]) {
        t->wr = rp->dst;
        t->wr_rows = rows;
        t->wr_group = rp->group;
        t->wr_gemv = rp->gemv;
        t->wr_gemm = rp->gemm;
    }
}

hs_status hs__cpu_prepare_weight(struct hs_backend *be, const struct hs_tensor *w)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    /* Q5_0 on AVX-512 in groups of 16 rows (repack-avx512.c), else of 8 */
    const bool x16 = w->type == HS_TYPE_Q5_0 && cpu->isa >= HS_ISA_AVX512;
    const int64_t group = x16 ? 16 : 8;
    const int64_t n_groups = w->ne[1] / group;
    if (!cpu->repack || !cpu_repacks(w->type) || n_groups == 0 ||
        w->ne[0] / 32 > HS__REPACK_MAX_BLOCKS || cpu_find_repacked(cpu, w->data)) {
        return HS_OK;
    }
    if (cpu->n_repacked == cpu->cap_repacked) {
        const size_t cap = cpu->cap_repacked ? 2 * cpu->cap_repacked : 64;
        struct hs_cpu_repacked *p = realloc(cpu->repacked, cap * sizeof(*p));
        if (!p) {
            return HS_E_NOMEM;
        }
        cpu->repacked = p;
        cpu->cap_repacked = cap;
    }
    const bool q4 = w->type == HS_TYPE_Q4_0;
    const size_t bytes = q4    ? hs__q4_0x8_bytes(n_groups, w->ne[0])
                         : x16 ? hs__q5_0x16_bytes(n_groups, w->ne[0])
                               : hs__q5_0x8_bytes(n_groups, w->ne[0]);
    void *dst = hs_alloc_aligned(bytes);
    if (!dst) {
        return HS_E_NOMEM;
    }
    void (*gemv)(int64_t, float *, const void *, int64_t, const void *) = NULL;
    void (*gemm)(int64_t, float *, size_t, const void *, int64_t, const void *, size_t, int) = NULL;
    if (q4) {
        hs__repack_q4_0x8(w->data, w->nb[1], n_groups, w->ne[0], dst);
        gemm = cpu->isa >= HS_ISA_AVX512 && hs__cpu_has_avx512vnni() ? hs__gemm_q4_0x8_avx512vnni
                                                                     : hs__gemm_q4_0x8_avx2;
    } else if (x16) {
        hs__repack_q5_0x16(w->data, w->nb[1], n_groups, w->ne[0], dst);
        gemv = hs__cpu_has_avx512vnni() ? hs__gemv_q5_0x16_avx512vnni : hs__gemv_q5_0x16_avx512;
    } else {
        hs__repack_q5_0x8(w->data, w->nb[1], n_groups, w->ne[0], dst);
        gemv = hs__cpu_has_avxvnni() ? hs__gemv_q5_0x8_avxvnni : hs__gemv_q5_0x8_avx2;
    }
    size_t i = cpu->n_repacked;
    while (i > 0 && (uintptr_t)cpu->repacked[i - 1].src > (uintptr_t)w->data) {
        cpu->repacked[i] = cpu->repacked[i - 1];
        i--;
    }
    cpu->repacked[i] = (struct hs_cpu_repacked){.src = w->data,
                                                .dst = dst,
                                                .bytes = bytes,
                                                .n_in = w->ne[0],
                                                .rows = group * n_groups,
                                                .w_stride = w->nb[1],
                                                .group = group,
                                                .gemv = gemv,
                                                .gemm = gemm};
    cpu->n_repacked++;
    cpu->base.stats.repacked_bytes += bytes;
    return HS_OK;
}

/* Dynamic matmul: chunks of chunk_rows output rows claimed from next by every thread. */
struct hs__mm_dyn_task {
    struct hs__mm_task t;
    int64_t chunk_rows;
    struct hs__pool_chunks chunks;
};

/* ---- hints (hints.c): where each thread starts reading a product ---- */

/* The weight bytes output rows [o0, o1) of t read first: of its repacked copy, or of w. */
static struct hs__pool_span mm_rows_span(const struct hs__mm_task *t, int64_t o0, int64_t o1)
{
    if (mm_reads_repacked(t, o0)) {
        const int64_t g = t->wr_group;
        const size_t gb = mm_group_bytes(t);
        const int64_t e = HS_MIN(o1, t->wr_rows);
        return (struct hs__pool_span){t->wr + (size_t)(o0 / g) * gb,
                                      (size_t)((e - o0 + g - 1) / g) * gb};
    }
    return (struct hs__pool_span){(const char *)t->w->data + (size_t)o0 * t->w->nb[1],
                                  (size_t)(o1 - o0) * t->w->nb[1]};
}

static void mm_compute(void *ctx, int ith, int nth)
{
    struct hs__mm_dyn_task *d = ctx;
    (void)nth;
    const int64_t n_out = d->t.w->ne[1];
    for (int64_t c; (c = hs__pool_chunks_claim(&d->chunks, ith)) >= 0;) {
        const int64_t o0 = c * d->chunk_rows;
        mm_range(&d->t, o0, HS_MIN(o0 + d->chunk_rows, n_out), ith);
    }
}

/* Whether t's activations go to the group form: kernels for it and at least their
 * group_min_rows rows, 2 or more (Q8_0 and Q5_0 on AVX-512 VNNI or AVX-VNNI: prompts). */
static bool mm_group(const struct hs__mm_task *t)
{
    return t->k->gemm_group && t->x->ne[1] >= HS_MAX(2, (int64_t)t->k->group_min_rows);
}

/* Whether t's activations go to the split form: kernels for it and at least their
 * split_min_rows rows, 2 or more (prompts; one row keeps the form gemv and vec_dot read), and
 * not the group form. */
static bool mm_split(const struct hs__mm_task *t)
{
    return t->k->gemm_tile_split && t->x->ne[1] >= HS_MAX(2, (int64_t)t->k->split_min_rows) &&
           !mm_group(t);
}

/* Whether t's activations alone go to the split form, its weights read as they are: 2+ rows
 * below split_min_rows, where the kernels have a tile for it. */
static bool mm_xsplit(const struct hs__mm_task *t)
{
    return t->k->gemm_tile_xsplit && t->x->ne[1] >= 2 && !mm_split(t) && !mm_group(t);
}

/* Sets t's split, xsplit and group from its rows. */
static void mm_set_form(struct hs__mm_task *t)
{
    t->group = mm_group(t);
    t->split = mm_split(t);
    t->xsplit = mm_xsplit(t);
}

/* Bytes between t's converted activation rows. */
static size_t mm_act_stride(const struct hs__mm_task *t)
{
    if (mm_group(t)) {
        return hs_align_up(hs_quant_group_x_size(t->x->ne[0]), 64);
    }
    return mm_split(t) || mm_xsplit(t)
               ? mm_split_stride(t->x->ne[0])
               : hs_align_up(hs_type_row_size(t->k->vec_dot_type, t->x->ne[0]), 64);
}

/* The converter of t's activations (mm_convert's). */
static void (*mm_act_converter(const struct hs__mm_task *t))(const float *, void *, int64_t)
{
    return mm_group(t)                   ? t->k->from_float_group
           : mm_split(t) || mm_xsplit(t) ? t->k->from_float_split
                                         : t->k->from_float;
}

/* Whether tasks a and b can share one conversion of the same x: the same vec_dot_type in the
 * file's blocks, or the same converter to the split or group form. */
static bool mm_same_act(const struct hs__mm_task *a, const struct hs__mm_task *b)
{
    const bool fa = mm_group(a) || mm_split(a) || mm_xsplit(a);
    const bool fb = mm_group(b) || mm_split(b) || mm_xsplit(b);
    return a->k->vec_dot_type == b->k->vec_dot_type && fa == fb &&
           (!fa || mm_act_converter(a) == mm_act_converter(b));
}

/* What t's dynamic chunks of output rows are multiples of: its repacked copy's groups, the
 * group form's, else 4 (the tiles'). */
static int64_t mm_rows_align(const struct hs__mm_task *t)
{
    return t->wr ? t->wr_group : mm_group(t) ? t->k->group_rows : 4;
}

/* Scratch bytes the activations of t need in their vec_dot_type (0 for f32: used in place). */
static size_t mm_act_bytes(const struct hs__mm_task *t)
{
    if (t->k->vec_dot_type == HS_TYPE_F32) {
        return 0;
    }
    return mm_act_stride(t) * (size_t)t->x->ne[1];
}

/* Points t->xq at the activations in the kernels' vec_dot_type: converted into the backend's
 * scratch at byte offset off (reserved by the caller), or x itself for f32. */
static void mm_prepare(struct hs_cpu_backend *cpu, struct hs__mm_task *t, size_t off)
{
    if (t->k->vec_dot_type == HS_TYPE_F32) {
        t->xq = t->x->data;
        t->xq_stride = t->x->nb[1];
        return;
    }
    mm_set_form(t);
    t->xq_stride = mm_act_stride(t);
    t->xq = (char *)cpu->act + off;
    if (t->x->ne[1] * t->x->ne[0] < HS__CPU_PAR_MIN_CONVERT) {
        hs__pool_run1_named(cpu->pool, mm_convert, t, "act-convert");
    } else {
        hs__pool_run_named(cpu->pool, mm_convert, t, "act-convert");
    }
}

/* Points the split tasks among ts[0 .. n) (prepared) at per-thread scratch for their chunks of
 * weight rows in the split form (mm_range), reserved for the largest. */
static hs_status mm_reserve_wsplit(struct hs_cpu_backend *cpu, struct hs__mm_task *const *ts, int n)
{
    size_t per_thread = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i]->split) {
            per_thread =
                HS_MAX(per_thread, (size_t)mm_chunk_rows(ts[i]) * mm_split_stride(ts[i]->w->ne[0]));
        } else if (ts[i]->group) {
            per_thread = HS_MAX(per_thread, (size_t)(mm_chunk_rows(ts[i]) / ts[i]->k->group_rows) *
                                                mm_group_form_bytes(ts[i]));
        }
    }
    if (per_thread == 0) {
        return HS_OK;
    }
    HS_TRY(hs__cpu_reserve(&cpu->wsplit, &cpu->wsplit_bytes,
                           per_thread * (size_t)hs__pool_n_threads(cpu->pool)));
    for (int i = 0; i < n; i++) {
        ts[i]->wsplit = cpu->wsplit;
        ts[i]->wsplit_bytes = per_thread;
    }
    return HS_OK;
}

/* Whether oneDNN takes products of w's type over x's rows (onednn.h). It is made on the first
 * product it would take: a process that never runs one does not load libdnnl; where that fails,
 * the backend's own kernels take everything from then on. */
static bool mm_onednn_wants(struct hs_cpu_backend *cpu, const struct hs_tensor *w,
                            const struct hs_tensor *x)
{
#if HS_HAVE_ONEDNN
    if (!cpu->onednn || !hs__onednn_wants(cpu->dnn, w->type, x->ne[1])) {
        return false;
    }
    if (!cpu->dnn && hs__onednn_create(cpu->pool, &cpu->dnn) != HS_OK) {
        cpu->onednn = false;
        return false;
    }
    return true;
#else
    (void)cpu;
    (void)w;
    (void)x;
    return false;
#endif
}

/* t's product through oneDNN, its activations prepared (mm_onednn_wants said yes). */
static hs_status mm_onednn(struct hs_cpu_backend *cpu, const struct hs__mm_task *t)
{
#if HS_HAVE_ONEDNN
    return hs__onednn_matmul(cpu->dnn, t->w, t->xq, t->xq_stride, t->y);
#else
    return HS_E_NOTSUP;
#endif
}

hs_status hs__cpu_matmul(struct hs_backend *be, const struct hs_tensor *w,
                         const struct hs_tensor *x, struct hs_tensor *y)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    struct hs__mm_dyn_task d = {
        .t = {.k = hs__cpu_kernels(w->type, HS_ISA_COUNT), .w = w, .x = x, .y = y},
    };
    if (!d.t.k) {
        return HS_E_NOTSUP;
    }
    mm_use_repacked(cpu, &d.t);
    d.chunk_rows = dyn_chunk_rows(cpu, w, x->ne[1], mm_rows_align(&d.t));
    const int nth = hs__pool_n_threads(cpu->pool);
    hs__pool_chunks_init(&d.chunks, (w->ne[1] + d.chunk_rows - 1) / d.chunk_rows, nth);
    struct hs__cpu_hint_op *h = hs__cpu_hint_enter(cpu, w->data);
    for (int i = 0; h && i < nth; i++) {
        int64_t c0, c1;
        hs__pool_chunks_share(&d.chunks, i, &c0, &c1);
        const int64_t o0 = c0 * d.chunk_rows, o1 = HS_MIN(c1 * d.chunk_rows, w->ne[1]);
        if (o0 < o1) {
            hs__cpu_hint_fill(h, i, mm_rows_span(&d.t, o0, o1), (struct hs__pool_span){0});
        }
    }
    HS_TRY(hs__cpu_reserve(&cpu->act, &cpu->act_bytes, mm_act_bytes(&d.t)));
    mm_prepare(cpu, &d.t, 0);
    struct hs__mm_task *const dt = &d.t;
    HS_TRY(mm_reserve_wsplit(cpu, &dt, 1));
    if (mm_onednn_wants(cpu, w, x)) {
        return mm_onednn(cpu, &d.t);
    }
    if (w->ne[0] * w->ne[1] * x->ne[1] < HS__CPU_PAR_MIN_MACS) {
        hs__pool_run1_named(cpu->pool, mm_compute, &d, "matmul");
    } else {
        hs__pool_run_dyn_named(cpu->pool, mm_compute, &d, "matmul");
    }
    return HS_OK;
}

/* ---- matmul_multi: several weights over one x ---- */

struct hs__mm_multi_task {
    struct hs__mm_task t[HS_MATMUL_MULTI_MAX];
    int64_t chunk_rows[HS_MATMUL_MULTI_MAX];
    int64_t chunk_end[HS_MATMUL_MULTI_MAX]; /* chunks of t[0 .. i] */
    int n;
    struct hs__pool_chunks chunks; /* over all the weights, in order */
};

static void mm_multi_compute(void *ctx, int ith, int nth)
{
    struct hs__mm_multi_task *m = ctx;
    (void)nth;
    for (int64_t c; (c = hs__pool_chunks_claim(&m->chunks, ith)) >= 0;) {
        int i = 0;
        while (c >= m->chunk_end[i]) {
            i++;
        }
        const int64_t first = i ? m->chunk_end[i - 1] : 0;
        const int64_t o0 = (c - first) * m->chunk_rows[i];
        mm_range(&m->t[i], o0, HS_MIN(o0 + m->chunk_rows[i], m->t[i].w->ne[1]), ith);
    }
}

hs_status hs__cpu_matmul_multi(struct hs_backend *be, int n, const struct hs_tensor *const *ws,
                               const struct hs_tensor *x, struct hs_tensor *const *ys)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    struct hs__mm_multi_task m = {.n = n};
    int64_t macs = 0;
    bool onednn = true;
    /* x is converted once per distinct vec_dot_type: the first task of each type owns it. */
    size_t off[HS_MATMUL_MULTI_MAX];
    int owner[HS_MATMUL_MULTI_MAX];
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        m.t[i] = (struct hs__mm_task){
            .k = hs__cpu_kernels(ws[i]->type, HS_ISA_COUNT), .w = ws[i], .x = x, .y = ys[i]};
        if (!m.t[i].k) {
            return HS_E_NOTSUP;
        }
        mm_use_repacked(cpu, &m.t[i]);
        macs += ws[i]->ne[0] * ws[i]->ne[1] * x->ne[1];
        onednn = onednn && mm_onednn_wants(cpu, ws[i], x);
        owner[i] = i;
        for (int j = 0; j < i; j++) {
            if (owner[j] == j && mm_same_act(&m.t[j], &m.t[i])) {
                owner[i] = j;
                break;
            }
        }
        off[i] = total;
        if (owner[i] == i) {
            total += mm_act_bytes(&m.t[i]);
        }
    }
    HS_TRY(hs__cpu_reserve(&cpu->act, &cpu->act_bytes, total));
    for (int i = 0; i < n; i++) {
        if (owner[i] == i) {
            mm_prepare(cpu, &m.t[i], off[i]);
        } else {
            m.t[i].xq = m.t[owner[i]].xq;
            m.t[i].xq_stride = m.t[owner[i]].xq_stride;
            /* the same activations; the weights' form is each task's own (a Q5_0 task may
             * split its weights where a Q8_0 one reads them as they are) */
            mm_set_form(&m.t[i]);
        }
    }
    struct hs__mm_task *mts[HS_MATMUL_MULTI_MAX];
    for (int i = 0; i < n; i++) {
        mts[i] = &m.t[i];
    }
    HS_TRY(mm_reserve_wsplit(cpu, mts, n));
    for (int i = 0; onednn && i < n; i++) {
        HS_TRY(mm_onednn(cpu, &m.t[i]));
    }
    if (onednn) {
        return HS_OK;
    }
    int64_t n_chunks = 0;
    for (int i = 0; i < n; i++) {
        m.chunk_rows[i] = dyn_chunk_rows(cpu, ws[i], x->ne[1], mm_rows_align(&m.t[i]));
        n_chunks += (ws[i]->ne[1] + m.chunk_rows[i] - 1) / m.chunk_rows[i];
        m.chunk_end[i] = n_chunks;
    }
    const int nth = hs__pool_n_threads(cpu->pool);
    hs__pool_chunks_init(&m.chunks, n_chunks, nth);
    struct hs__cpu_hint_op *h = hs__cpu_hint_enter(cpu, ws[0]->data);
    for (int i = 0; h && i < nth; i++) {
        int64_t c0, c1;
        hs__pool_chunks_share(&m.chunks, i, &c0, &c1);
        int k = 0;
        while (k < n && c0 >= m.chunk_end[k]) {
            k++;
        }
        if (k < n && c0 < c1) {
            /* the share's rows of the weight it starts in */
            const int64_t base = k > 0 ? m.chunk_end[k - 1] : 0;
            const int64_t o0 = (c0 - base) * m.chunk_rows[k];
            const int64_t o1 =
                HS_MIN((HS_MIN(c1, m.chunk_end[k]) - base) * m.chunk_rows[k], ws[k]->ne[1]);
            hs__cpu_hint_fill(h, i, mm_rows_span(&m.t[k], o0, o1), (struct hs__pool_span){0});
        }
    }
    if (macs < HS__CPU_PAR_MIN_MACS) {
        hs__pool_run1_named(cpu->pool, mm_multi_compute, &m, "matmul-multi");
    } else {
        hs__pool_run_dyn_named(cpu->pool, mm_multi_compute, &m, "matmul-multi");
    }
    return HS_OK;
}

/* ---- ffn ---- */

struct hs__ffn_task {
    struct hs__mm_task gate; /* y = scratch_gate */
    struct hs__mm_task up;   /* y = scratch_up */
    hs__swiglu_fn swiglu;    /* as the swiglu op */
    int64_t chunk_rows;      /* multiple of 16 */
    struct hs__pool_chunks chunks;
};

/* Each thread computes the same rows [o0, o1) of the gate and up products, then silu(g) * u on
 * exactly those columns: no barrier needed between the products and the activation. */
static void ffn_gate_up(void *ctx, int ith, int nth)
{
    struct hs__ffn_task *t = ctx;
    (void)nth;
    const int64_t n_out = t->gate.w->ne[1];
    /* Chunk boundaries on multiples of 16: the vector swiglu then leaves exactly the row's
     * n % 16 tail to libm expf, as the swiglu op on whole rows does. */
    for (int64_t c; (c = hs__pool_chunks_claim(&t->chunks, ith)) >= 0;) {
        const int64_t o0 = c * t->chunk_rows;
        const int64_t o1 = HS_MIN(o0 + t->chunk_rows, n_out);
        mm_range(&t->gate, o0, o1, ith);
        mm_range(&t->up, o0, o1, ith);
        for (int64_t r = 0; r < t->gate.x->ne[1]; r++) {
            float *g = (float *)row_at(t->gate.y, r);
            const float *u = (const float *)row_at(t->up.y, r);
            t->swiglu(o1 - o0, g + o0, g + o0, u + o0); /* as the swiglu op */
        }
    }
}

hs_status hs__cpu_ffn(struct hs_backend *be, const struct hs_ffn_args *a)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    struct hs__ffn_task t = {
        .gate = {.k = hs__cpu_kernels(a->w_gate->type, HS_ISA_COUNT),
                 .w = a->w_gate,
                 .x = a->x,
                 .y = a->scratch_gate},
        .up = {.k = hs__cpu_kernels(a->w_up->type, HS_ISA_COUNT),
               .w = a->w_up,
               .x = a->x,
               .y = a->scratch_up},
        .swiglu = hs__cpu_swiglu_kernel(cpu),
    };
    if (!t.gate.k || !t.up.k) {
        return HS_E_NOTSUP;
    }
    mm_use_repacked(cpu, &t.gate); /* chunk_rows below: multiples of 16 */
    mm_use_repacked(cpu, &t.up);
    /* x is converted once per distinct vec_dot_type. */
    const bool shared = mm_same_act(&t.gate, &t.up);
    const size_t gate_bytes = mm_act_bytes(&t.gate);
    const size_t up_bytes = shared ? 0 : mm_act_bytes(&t.up);
    HS_TRY(hs__cpu_reserve(&cpu->act, &cpu->act_bytes, gate_bytes + up_bytes));
    mm_prepare(cpu, &t.gate, 0);
    if (shared) {
        t.up.xq = t.gate.xq;
        t.up.xq_stride = t.gate.xq_stride;
        mm_set_form(&t.up);
    } else {
        mm_prepare(cpu, &t.up, gate_bytes);
    }
    struct hs__mm_task *const gu[2] = {&t.gate, &t.up};
    HS_TRY(mm_reserve_wsplit(cpu, gu, 2));
    if (mm_onednn_wants(cpu, a->w_gate, a->x) && mm_onednn_wants(cpu, a->w_up, a->x)) {
        HS_TRY(mm_onednn(cpu, &t.gate));
        HS_TRY(mm_onednn(cpu, &t.up));
        HS_TRY(hs__cpu_swiglu(be, a->scratch_gate, a->scratch_up, a->scratch_gate));
        return hs__cpu_matmul(be, a->w_down, a->scratch_gate, a->y);
    }
    /* Gate and up rows are claimed together: a chunk is half the bytes of each. */
    t.chunk_rows = dyn_chunk_rows(cpu, a->w_gate, a->x->ne[1], 16);
    const int nth = hs__pool_n_threads(cpu->pool);
    const int64_t n_ff = a->w_gate->ne[1];
    hs__pool_chunks_init(&t.chunks, (n_ff + t.chunk_rows - 1) / t.chunk_rows, nth);
    struct hs__cpu_hint_op *h = hs__cpu_hint_enter(cpu, a->w_gate->data);
    for (int i = 0; h && i < nth; i++) {
        int64_t c0, c1;
        hs__pool_chunks_share(&t.chunks, i, &c0, &c1);
        const int64_t o0 = c0 * t.chunk_rows, o1 = HS_MIN(c1 * t.chunk_rows, n_ff);
        if (o0 < o1) {
            hs__cpu_hint_fill(h, i, mm_rows_span(&t.gate, o0, o1), mm_rows_span(&t.up, o0, o1));
        }
    }
    hs__pool_run_dyn_named(cpu->pool, ffn_gate_up, &t, "ffn-gate-up");
    return hs__cpu_matmul(be, a->w_down, a->scratch_gate, a->y);
}

/* ---- moe_ffn: the experts of one layer, each over its own rows ---- */

struct hs__moe_task {
    const struct hs_moe_ffn_args *a;
    const struct hs_quant_kernels *kg, *ku, *kd;
    char *xg, *xu; /* x rows in gate's and up's vec_dot_type (xu == xg when shared) */
    size_t xg_stride, xu_stride;
    char *hq; /* silu(gate) * up rows in down's vec_dot_type */
    size_t hq_stride;
    int64_t work;         /* sum over groups of rows * n_out: the phase's total */
    int64_t n_out;        /* output rows of the phase's products (n_ff, then n_embd) */
    int64_t align;        /* phase split boundaries, in output rows */
    int phase;            /* 0: gate + up + swiglu, 1: down */
    hs__swiglu_fn swiglu; /* as the swiglu op */
};

/* The output rows [*o0, *o1) of group g that thread ith of nth computes in this phase: the
 * phase's work (rows x outputs, summed over groups) is cut into nth equal parts, each part's
 * boundaries rounded up to the alignment within the group they fall in, so the parts tile every
 * group exactly and a thread's share costs the same whatever the groups' sizes. */
static void moe_share(const struct hs__moe_task *t, int32_t g, int64_t w_start, int ith, int nth,
                      int64_t *o0, int64_t *o1)
{
    const int64_t n = t->a->row_begin[g + 1] - t->a->row_begin[g];
    int64_t bound[2];
    for (int i = 0; i < 2; i++) {
        const int64_t p = t->work * (ith + i) / nth - w_start;
        int64_t o = p <= 0 ? 0 : (p + n - 1) / n;
        o = (o + t->align - 1) / t->align * t->align;
        bound[i] = HS_MIN(o, t->n_out);
    }
    *o0 = bound[0];
    *o1 = bound[1];
}

static void moe_fn(void *ctx, int ith, int nth)
{
    const struct hs__moe_task *t = ctx;
    const struct hs_moe_ffn_args *a = t->a;
    int64_t w_start = 0;
    for (int32_t g = 0; g < a->n_groups; g++) {
        const int64_t r0 = a->row_begin[g];
        const int64_t n = a->row_begin[g + 1] - r0;
        if (n == 0) {
            continue;
        }
        int64_t o0, o1;
        moe_share(t, g, w_start, ith, nth, &o0, &o1);
        w_start += n * t->n_out;
        if (o0 >= o1) {
            continue;
        }
        const int64_t e = a->experts[g];
        struct hs_tensor sg = hs_tensor_rows(a->scratch_gate, r0, n);
        if (t->phase == 1) {
            const struct hs_tensor wd = hs_tensor_plane(a->w_down, e);
            struct hs_tensor y = hs_tensor_rows(a->y, r0, n);
            const struct hs__mm_task mt = {.k = t->kd,
                                           .w = &wd,
                                           .x = &sg,
                                           .y = &y,
                                           .xq = t->hq + (size_t)r0 * t->hq_stride,
                                           .xq_stride = t->hq_stride};
            mm_range(&mt, o0, o1, ith);
            continue;
        }
        const struct hs_tensor wg = hs_tensor_plane(a->w_gate, e);
        const struct hs_tensor wu = hs_tensor_plane(a->w_up, e);
        const struct hs_tensor x = hs_tensor_rows(a->x, r0, n);
        struct hs_tensor su = hs_tensor_rows(a->scratch_up, r0, n);
        const struct hs__mm_task gt = {.k = t->kg,
                                       .w = &wg,
                                       .x = &x,
                                       .y = &sg,
                                       .xq = t->xg + (size_t)r0 * t->xg_stride,
                                       .xq_stride = t->xg_stride};
        const struct hs__mm_task ut = {.k = t->ku,
                                       .w = &wu,
                                       .x = &x,
                                       .y = &su,
                                       .xq = t->xu + (size_t)r0 * t->xu_stride,
                                       .xq_stride = t->xu_stride};
        mm_range(&gt, o0, o1, ith);
        mm_range(&ut, o0, o1, ith);
        for (int64_t r = 0; r < n; r++) {
            float *gr = (float *)row_at(&sg, r);
            const float *ur = (const float *)row_at(&su, r);
            t->swiglu(o1 - o0, gr + o0, gr + o0, ur + o0); /* as the swiglu op */
        }
    }
}

/* Converts rows [0, n_rows) of x as kernels k want them into the backend's scratch at byte
 * offset off (rows stride bytes apart); f32 kernels read x in place. */
static void moe_convert(struct hs_cpu_backend *cpu, const struct hs_quant_kernels *k,
                        const struct hs_tensor *x, int64_t n_rows, size_t off, char **out,
                        size_t *stride)
{
    struct hs_tensor xr = hs_tensor_rows(x, 0, n_rows);
    struct hs__mm_task t = {.k = k, .x = &xr};
    if (k->vec_dot_type == HS_TYPE_F32) {
        *out = x->data;
        *stride = x->nb[1];
        return;
    }
    t.xq = (char *)cpu->act + off;
    t.xq_stride = hs_align_up(hs_type_row_size(k->vec_dot_type, x->ne[0]), 64);
    if (n_rows * x->ne[0] < HS__CPU_PAR_MIN_CONVERT) {
        hs__pool_run1_named(cpu->pool, mm_convert, &t, "act-convert");
    } else {
        hs__pool_run_named(cpu->pool, mm_convert, &t, "act-convert");
    }
    *out = t.xq;
    *stride = t.xq_stride;
}

static size_t moe_act_bytes(const struct hs_quant_kernels *k, int64_t n_in, int64_t n_rows)
{
    if (k->vec_dot_type == HS_TYPE_F32) {
        return 0;
    }
    return hs_align_up(hs_type_row_size(k->vec_dot_type, n_in), 64) * (size_t)n_rows;
}

hs_status hs__cpu_moe_ffn(struct hs_backend *be, const struct hs_moe_ffn_args *a)
{
    struct hs_cpu_backend *cpu = cpu_backend_of(be);
    struct hs__moe_task t = {
        .a = a,
        .kg = hs__cpu_kernels(a->w_gate->type, HS_ISA_COUNT),
        .ku = hs__cpu_kernels(a->w_up->type, HS_ISA_COUNT),
        .kd = hs__cpu_kernels(a->w_down->type, HS_ISA_COUNT),
        .swiglu = hs__cpu_swiglu_kernel(cpu),
    };
    if (!t.kg || !t.ku || !t.kd || a->n_groups == 0) {
        return t.kg && t.ku && t.kd ? HS_OK : HS_E_NOTSUP;
    }
    const int64_t n_embd = a->x->ne[0];
    const int64_t n_ff = a->w_gate->ne[1];
    int64_t n_rows = 0; /* rows [0, n_rows) cover every group */
    int64_t n_pairs = 0;
    for (int32_t g = 0; g < a->n_groups; g++) {
        n_rows = HS_MAX(n_rows, (int64_t)a->row_begin[g + 1]);
        n_pairs += a->row_begin[g + 1] - a->row_begin[g];
    }
    if (n_pairs == 0) {
        return HS_OK;
    }
    const bool shared = t.kg->vec_dot_type == t.ku->vec_dot_type;
    const size_t bg = moe_act_bytes(t.kg, n_embd, n_rows);
    const size_t bu = shared ? 0 : moe_act_bytes(t.ku, n_embd, n_rows);
    const size_t bd = moe_act_bytes(t.kd, n_ff, n_rows);
    HS_TRY(hs__cpu_reserve(&cpu->act, &cpu->act_bytes, bg + bu + bd));
    moe_convert(cpu, t.kg, a->x, n_rows, 0, &t.xg, &t.xg_stride);
    if (shared) {
        t.xu = t.xg;
        t.xu_stride = t.xg_stride;
    } else {
        moe_convert(cpu, t.ku, a->x, n_rows, bg, &t.xu, &t.xu_stride);
    }
    /* Gate, up and swiglu: boundaries on multiples of 16 leave each row's n % 16 tail to the
     * scalar expf, as the swiglu op on whole rows does. */
    t.phase = 0;
    t.n_out = n_ff;
    t.align = n_ff % 16 == 0 ? 16 : n_ff;
    t.work = n_pairs * n_ff;
    hs__pool_run_named(cpu->pool, moe_fn, &t, "moe");
    moe_convert(cpu, t.kd, a->scratch_gate, n_rows, bg + bu, &t.hq, &t.hq_stride);
    t.phase = 1;
    t.n_out = n_embd;
    t.align = 4;
    t.work = n_pairs * n_embd;
    hs__pool_run_named(cpu->pool, moe_fn, &t, "moe");
    return HS_OK;
}
