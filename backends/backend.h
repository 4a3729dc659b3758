/* Backends, for their users: the model and the scheduler place operations on a backend.
 *
 * A backend runs operations on tensors: attention over a batch of sequences and the dense FFN
 * are separate operations, so a caller can put the attention of chosen sequences on one backend
 * (e.g. simulated PIM) while another runs the FFN. All calls are synchronous unless the backend
 * says otherwise; hs_backend_synchronize() waits for queued work.
 *
 * Thread: a backend is used by one thread at a time (the engine thread); it may run its own
 * worker threads inside a call. */
#ifndef HS_BACKENDS_BACKEND_H
#define HS_BACKENDS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

struct hs_backend;

/* A view of memory with a type and a shape. Borrows data (valid as long as its owner: the mmap'd
 * model, a backend buffer, or the caller). ne[0] is the innermost (contiguous) dimension; nb[i]
 * is the byte stride of dimension i (nb[0] is the block size in bytes for quantized types). */
struct hs_tensor {
    enum hs_type type;
    int32_t n_dims;
    int64_t ne[4];
    size_t nb[4];
    void *data;
};

/* Fills t as a contiguous tensor of the given shape over data (trailing ne default to 1).
 * Returns HS_E_INVAL when ne[0] is not a multiple of the type's block size. */
hs_status hs_tensor_init(struct hs_tensor *t, enum hs_type type, int n_dims, const int64_t *ne,
                         void *data);

/* Contiguous 2-D tensor helpers: [rows][cols]. */
hs_status hs_tensor_init_2d(struct hs_tensor *t, enum hs_type type, int64_t cols, int64_t rows,
                            void *data);

/* A contiguous f32 matrix [rows][cols] over data (borrowed), for scratch views. */
struct hs_tensor hs_tensor_f32_2d(float *data, int64_t cols, int64_t rows);

/* Rows of a tensor laid out as [n_rows][ne0]: ne[1] * ne[2] * ne[3]. */
int64_t hs_tensor_n_rows(const struct hs_tensor *t);

/* A view of rows [row0, row0 + n_rows) of the outermost-but-row dimension (ne[1]) of a 2-D
 * tensor. */
struct hs_tensor hs_tensor_rows(const struct hs_tensor *t, int64_t row0, int64_t n_rows);

/* Plane i2 (dimension 2) of a tensor as a tensor of its own (e.g. one expert of a stack of
 * expert matrices). */
struct hs_tensor hs_tensor_plane(const struct hs_tensor *t, int64_t i2);

int64_t hs_tensor_nelements(const struct hs_tensor *t);
size_t hs_tensor_nbytes(const struct hs_tensor *t);
bool hs_tensor_is_contiguous(const struct hs_tensor *t);

/* ---- operations ---- */

enum hs_op {
    HS_OP_MATMUL,    /* y[r][o] = sum_i x[r][i] * w[o][i] */
    HS_OP_GET_ROWS,  /* y[r] = dequant(w[ids[r]]) */
    HS_OP_RMS_NORM,  /* y = x / rms(x) * w */
    HS_OP_ROPE,      /* rotary embedding in place */
    HS_OP_ADD,       /* y = a + b (b broadcast over rows when it has one row) */
    HS_OP_MUL,       /* y = a * b (same broadcast) */
    HS_OP_SWIGLU,    /* y = silu(gate) * up */
    HS_OP_KV_STORE,  /* write K or V rows into cache slots */
    HS_OP_ATTENTION, /* causal attention of a batch of sequences over a paged KV cache */
    HS_OP_FFN,       /* dense SwiGLU FFN: down(silu(gate(x)) * up(x)) */
    HS_OP_MOE_FFN,   /* expert FFN: the SwiGLU FFN of chosen experts, each over its own rows */
    HS_OP_COUNT,
};
const char *hs_op_str(enum hs_op op);

enum hs_rope_mode {
    HS_ROPE_NORM, /* pairs (2i, 2i+1): llama */
    HS_ROPE_NEOX, /* pairs (i, i + n_rot/2): qwen2, qwen3 */
    HS_ROPE_MODE_COUNT,
};
const char *hs_rope_mode_str(enum hs_rope_mode m);

struct hs_rope_params {
    enum hs_rope_mode mode;
    int32_t n_rot;    /* dimensions rotated, <= head_dim, even */
    float freq_base;  /* theta */
    float freq_scale; /* 1 / linear scaling factor */
};

/* One sequence of an attention batch. Its n_new query rows are rows [q_row, q_row + n_new) of q;
 * their K/V were already stored at positions [n_past, n_past + n_new). Query row j attends to
 * positions [kv_begin, min(kv_end, n_past + j + 1)): the whole causal prefix [0, n_past + j]
 * when kv_begin and kv_end are 0 (zero-initialised), a range of it otherwise (flash-decoding's
 * split of the KV: each range gives partials, attention/ merges them). Only the block table
 * entries of the range are read (and checked), so a range's blocks may live in one backend's
 * cache and the rest in another's. HS_E_INVAL unless 0 <= kv_begin <= n_past + n_new and, when
 * kv_end is set, kv_begin <= kv_end <= n_past + n_new. */
struct hs_attn_seq {
    int32_t n_past;
    int32_t n_new;
    int32_t q_row;
    const int32_t *block_table; /* [ceil((n_past + n_new) / block_size)] block ids; borrowed */
    int32_t kv_begin;           /* first position of the range (>= 0) */
    int32_t kv_end;             /* one past its last position; 0: no upper bound */
};

struct hs_attn_args {
    const struct hs_tensor *q; /* [n_rows][n_head][head_dim] f32 (ne = hd, n_head, n_rows) */
    struct hs_tensor *out;     /* same shape as q, f32 */
    /* [n_blocks][block_size][n_kv_head][head_dim] f16 or f32: a whole cache, or a view of some
     * of its KV heads (data at the first, ne[1] the count, the cache's strides), which is how a
     * backend hands a subset of heads to another (q, out, m and l then view the matching query
     * heads: ne[1] = the subset's query heads, the whole rows' strides) */
    const struct hs_tensor *k_cache;
    const struct hs_tensor *v_cache; /* same shape as k_cache */
    int32_t block_size;              /* tokens per block */
    const struct hs_attn_seq *seqs;  /* [n_seqs] */
    int32_t n_seqs;
    float scale; /* usually 1/sqrt(head_dim) */
    /* Partials (flash decoding): when m and l are given, out receives the unnormalised
     * sum_p exp(s_p - m) v_p of each query row and head over its range, m the maximum scaled
     * score s_p = scale * q.k_p (-INFINITY when the range is empty) and l the sum of
     * exp(s_p - m) (0 when empty). The normalised attention is out / l; hs_attn_merge
     * (attention/) combines partials of disjoint ranges exactly. When both are NULL, out is the
     * normalised attention; computing partials and finalising them gives the same bits. */
    struct hs_tensor *m; /* [n_rows][n_head] f32 (ne = n_head, n_rows), or NULL */
    struct hs_tensor *l; /* same shape as m, or NULL */
    /* Query rows of the whole forward batch this call is part of (0: q's rows). The CPU
     * backend picks its precision path from it as ggml does from the batch (f32 accumulation
     * from 64 rows on), so that splitting a batch over calls or backends keeps every bit. */
    int32_t n_batch_rows;
};

struct hs_ffn_args {
    const struct hs_tensor *w_gate; /* [n_ff][n_embd] */
    const struct hs_tensor *w_up;   /* [n_ff][n_embd] */
    const struct hs_tensor *w_down; /* [n_embd][n_ff] */
    const struct hs_tensor *x;      /* [n_rows][n_embd] f32 */
    struct hs_tensor *y;            /* [n_rows][n_embd] f32, overwritten */
    struct hs_tensor *scratch_gate; /* [n_rows][n_ff] f32 */
    struct hs_tensor *scratch_up;   /* [n_rows][n_ff] f32 */
};

/* The expert FFN of a mixture-of-experts layer, over rows already grouped by expert (moe/ does
 * the routing, the grouping and the weighted combine). Group g runs expert experts[g] on rows
 * [row_begin[g], row_begin[g + 1]) of x and writes the same rows of y; rows of no group are left
 * untouched. Expert weights are 3-D: plane e of w_gate is expert e's [n_ff][n_embd] matrix. */
struct hs_moe_ffn_args {
    const struct hs_tensor *w_gate; /* [n_expert][n_ff][n_embd] (ne = n_embd, n_ff, n_expert) */
    const struct hs_tensor *w_up;   /* [n_expert][n_ff][n_embd] */
    const struct hs_tensor *w_down; /* [n_expert][n_embd][n_ff] */
    const struct hs_tensor *x;      /* [n_rows][n_embd] f32, grouped by expert */
    struct hs_tensor *y;            /* [n_rows][n_embd] f32 */
    const int32_t *experts;         /* [n_groups] expert ids, each at most once; borrowed */
    const int32_t *row_begin; /* [n_groups + 1] non-decreasing, row_begin[n_groups] <= n_rows */
    int32_t n_groups;
    struct hs_tensor *scratch_gate; /* [n_rows][n_ff] f32 */
    struct hs_tensor *scratch_up;   /* [n_rows][n_ff] f32 */
};

struct hs_backend_stats {
    uint64_t n_ops[HS_OP_COUNT];
    uint64_t weight_bytes_read; /* bytes of weights read by matmul/get_rows/ffn/moe_ffn (an expert
                                   FFN counts only the experts that have rows) */
    double sim_time_s;          /* simulated hardware time (simulated backends; 0 otherwise) */
    double busy_s;              /* wall time spent inside this backend's operations and copies */
    uint64_t bytes_copied_in;   /* bytes copied into this backend's buffers from another's */
    uint64_t bytes_copied_out;  /* bytes copied from this backend's buffers to another's */
    uint64_t buffer_bytes;      /* bytes of buffers allocated now */
    uint64_t repacked_bytes;    /* bytes of weight copies the backend made in its own layouts
                                   (hs_backend_prepare_weight), held now */
};

/* ---- backend lifetime and registry ---- */

struct hs_backend_params {
    int32_t n_threads;  /* <= 0: one per physical core */
    bool pin_threads;   /* pin workers to cores with hwloc where available */
    int32_t first_core; /* pinned threads take physical cores [first_core, first_core +
                         * n_threads) (wrapping around), so two backends can run on disjoint
                         * cores; default 0 */
    /* Backend-specific settings, ignored by backends that have none (borrowed for the call to
     * hs_backend_create). npu: config is a `key = value` file describing the chip
     * (backends/npu/npu.h; NULL: the vNPU preset) and tenants the virtual NPUs placed on it
     * ("3x3,3x3": the first, or the one marked '*', runs this backend's ops; NULL: one tenant
     * of the whole chip). pim: config is the simulated hardware (backends/pim/pim-timing.h's
     * format); a bad file fails the create with HS_E_FORMAT or HS_E_IO (logged with the line). */
    const char *config;
    const char *tenants;
};

/* Default parameters. */
struct hs_backend_params hs_backend_default_params(void);

/* Physical cores of this machine (hwloc), else the online CPUs; at least 1. Thread: any. */
int hs_backend_physical_cores(void);

/* Number of backends compiled in, and the name of each ("cpu", "pim", ...). */
int hs_backend_reg_count(void);
const char *hs_backend_reg_name(int i);

/* Creates the backend registered under name. Returns HS_E_NOENT for an unknown name,
 * HS_E_DEVICE when its device is absent, HS_E_IO / HS_E_FORMAT / HS_E_INVAL when its config
 * file cannot be read, does not parse, or asks for what cannot be (npu: tenants that do not
 * fit; the reason is logged); *out stays NULL on failure. Free with hs_backend_destroy.
 * Thread: any. */
hs_status hs_backend_create(const char *name, const struct hs_backend_params *params,
                            struct hs_backend **out);
void hs_backend_destroy(struct hs_backend *be);

const char *hs_backend_name(const struct hs_backend *be);
int32_t hs_backend_n_threads(const struct hs_backend *be);

/* True when the backend can run op with weights (or cache) of type t. */
bool hs_backend_supports(struct hs_backend *be, enum hs_op op, enum hs_type t);

/* Operations. Each validates shapes and types once, returns HS_E_INVAL on a mismatch and
 * HS_E_NOTSUP when the backend cannot run it; outputs are untouched on error. Outputs may alias
 * their inputs only in the elementwise ops (rms_norm, add, mul, swiglu: y == a exactly); matmul's
 * y must not overlap x. */
hs_status hs_backend_matmul(struct hs_backend *be, const struct hs_tensor *w,
                            const struct hs_tensor *x, struct hs_tensor *y);
/* ys[i] = x ws[i]^T for i < n (1..HS_MATMUL_MULTI_MAX weights over the same x, e.g. the Q, K
 * and V projections): the same results as n hs_backend_matmul calls, with x converted once per
 * activation type and all products in one parallel region. Counted as n matmuls. */
#define HS_MATMUL_MULTI_MAX 4
hs_status hs_backend_matmul_multi(struct hs_backend *be, int n, const struct hs_tensor *const *ws,
                                  const struct hs_tensor *x, struct hs_tensor *const *ys);
hs_status hs_backend_get_rows(struct hs_backend *be, const struct hs_tensor *w, const hs_token *ids,
                              struct hs_tensor *y);
/* Lets the backend prepare a weight for the products it will be in, once, at load: w is a 2-D
 * matrix [ne[1]][ne[0]] whose data stays constant and valid until the backend is destroyed (a
 * model's mmap'd weights). The CPU backend copies Q4_0 weights into the 8-row layout its
 * prompt-processing kernels read (same results; the copy's bytes in stats.repacked_bytes);
 * other backends and types: nothing. HS_E_INVAL for a malformed w; HS_E_NOMEM leaves w
 * unprepared (its products still run, on the file's layout). Thread: engine only. */
hs_status hs_backend_prepare_weight(struct hs_backend *be, const struct hs_tensor *w);
hs_status hs_backend_rms_norm(struct hs_backend *be, const struct hs_tensor *x,
                              const struct hs_tensor *w, float eps, struct hs_tensor *y);
/* x: [n_rows][n_head][head_dim] f32, rotated in place; pos: [n_rows] positions. */
hs_status hs_backend_rope(struct hs_backend *be, struct hs_tensor *x, const int32_t *pos,
                          const struct hs_rope_params *p);
hs_status hs_backend_add(struct hs_backend *be, const struct hs_tensor *a,
                         const struct hs_tensor *b, struct hs_tensor *y);
hs_status hs_backend_mul(struct hs_backend *be, const struct hs_tensor *a,
                         const struct hs_tensor *b, struct hs_tensor *y);
hs_status hs_backend_swiglu(struct hs_backend *be, const struct hs_tensor *gate,
                            const struct hs_tensor *up, struct hs_tensor *y);
/* src: [n_rows][n_kv_head][head_dim] f32; cache: [n_blocks][block_size][n_kv_head][head_dim]
 * (or a view of some of its heads, as in hs_attn_args); slots: [n_rows] flat slot ids
 * (block * block_size + offset). */
hs_status hs_backend_kv_store(struct hs_backend *be, const struct hs_tensor *src,
                              struct hs_tensor *cache, const int32_t *slots);
hs_status hs_backend_attention(struct hs_backend *be, const struct hs_attn_args *args);
hs_status hs_backend_ffn(struct hs_backend *be, const struct hs_ffn_args *args);
/* Runs each group's expert as hs_backend_ffn would on that expert's plane (same results, bit for
 * bit, as hs_backend_ffn on the group's rows); groups with no rows are skipped and read no
 * weights. */
hs_status hs_backend_moe_ffn(struct hs_backend *be, const struct hs_moe_ffn_args *args);

/* Waits for queued work. */
hs_status hs_backend_synchronize(struct hs_backend *be);

/* Binds the calling thread to the backend's cores (a pinned CPU backend runs its share of each
 * op on the thread that calls it): call it once from a thread that will drive be, e.g. the
 * attention backend's driver thread. A no-op for backends without pinned threads. */
void hs_backend_bind_caller(struct hs_backend *be);

/* A host task of hs_backend_run_tasks: task i of the call. */
typedef void (*hs_backend_task_fn)(void *ctx, int32_t i);

/* Runs fn(ctx, i) for every i in [0, n_tasks) on the backend's host threads (the CPU backend's
 * pool; a simulated backend's inner CPU pool), each exactly once, in no set order and on no set
 * thread, and returns when all have finished, their writes visible to the caller. It is for host
 * work between operations that splits into independent tasks, such as sampling each sequence of
 * a batch, and keeps it on the cores the backend's threads own. Backends without host threads
 * (and n_tasks 1) run the tasks on the caller, in order. fn must not call into be; tasks must
 * not depend on one another's order. n_tasks <= 0: nothing. Thread: the one driving be. */
void hs_backend_run_tasks(struct hs_backend *be, int32_t n_tasks, hs_backend_task_fn fn, void *ctx);

/* ---- weights for writing ----
 *
 * The reference quantizers (scalar, the CPU backend's; the same bytes on every machine), for
 * code that writes weights (the GGUF writer behind `hetserve mkmodel`, tests): callers above
 * backends/ use these, never a backend's own headers. */

/* True when hs_quantize_rows can write type t: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_1, Q5_1,
 * Q8_1, Q4_K, Q5_K, Q6_K, Q8_K. Thread: any. */
bool hs_quantize_supports(enum hs_type t);

/* Quantizes n_rows rows of n_per_row floats (x, rows n_per_row apart) into y, rows
 * hs_type_row_size(t, n_per_row) bytes apart, as llama.cpp's reference quantizers and
 * llama-quantize without an importance matrix do. HS_E_INVAL (y untouched) when t is not
 * supported or n_per_row is not a positive multiple of t's block size. Thread: any. */
hs_status hs_quantize_rows(enum hs_type t, const float *x, void *y, int64_t n_rows,
                           int64_t n_per_row);

/* ---- memory owned by a backend ----
 *
 * A buffer is memory of one backend (host memory for cpu and the simulated backends, device
 * memory for a GPU). Tensors are built over hs_backend_buffer_base(); only backends read or
 * write through their data pointers, and callers move bytes with set/get/copy. Nothing above
 * backends/ may dereference a tensor of a buffer that is not host memory. */
struct hs_backend_buffer;

/* Allocates bytes (aligned to HS_ALIGN_BYTES, zero-filled). HS_E_NOMEM when the backend has no
 * room (err-free: the caller says how much it asked for); *out stays NULL on failure. Free with
 * hs_backend_buffer_free before the backend is destroyed. Thread: engine only. */
hs_status hs_backend_buffer_alloc(struct hs_backend *be, size_t bytes,
                                  struct hs_backend_buffer **out);
void hs_backend_buffer_free(struct hs_backend_buffer *buf);
/* Base address for tensors in the buffer; a host pointer only when hs_backend_buffer_is_host. */
void *hs_backend_buffer_base(const struct hs_backend_buffer *buf);
size_t hs_backend_buffer_size(const struct hs_backend_buffer *buf);
bool hs_backend_buffer_is_host(const struct hs_backend_buffer *buf);
struct hs_backend *hs_backend_buffer_backend(const struct hs_backend_buffer *buf);

/* Byte transfers. dst/src address bytes [offset, offset + n) of the buffer. set uploads from host
 * memory, get downloads to host memory, copy moves bytes between two buffers, of the same or of
 * two backends (counted in the stats' bytes_copied_in/out when the backends differ); the ranges
 * may overlap within one buffer (memmove). HS_E_RANGE
 * when a range falls outside its buffer. Thread: engine only. */
hs_status hs_backend_buffer_set(struct hs_backend_buffer *dst, size_t offset, const void *src,
                                size_t n);
hs_status hs_backend_buffer_get(const struct hs_backend_buffer *src, size_t offset, void *dst,
                                size_t n);
hs_status hs_backend_buffer_copy(const struct hs_backend_buffer *src, size_t src_offset,
                                 struct hs_backend_buffer *dst, size_t dst_offset, size_t n);

void hs_backend_get_stats(const struct hs_backend *be, struct hs_backend_stats *out);
void hs_backend_reset_stats(struct hs_backend *be);

#endif
