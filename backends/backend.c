/* Backend registry and the wrappers around the interface: the only caller of iface. Each
 * wrapper validates shapes and types once, asks supports_op, supplies the default for a NULL
 * slot and counts stats, so implementations see only well-formed arguments. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend-impl.h"
#include "backends/cpu/pool.h"
#include "backends/cpu/quants.h"
#include "hs-config.h"

/* ---- registry ---- */

struct hs__backend_reg {
    const char *name;
    hs_backend_create_fn create;
};

static const struct hs__backend_reg backend_regs[] = {
    {"cpu", hs__backend_cpu_create},
    {"npu", hs__backend_npu_create}, /* simulated: always compiled in */
    {"pim", hs__backend_pim_create}, /* simulated: always compiled in */
    /* #if HS_HAVE_CUDA: {"cuda", hs__backend_cuda_create}, once backends/cuda lands. */
};

int hs_backend_reg_count(void)
{
    return (int)HS_ARRAY_LEN(backend_regs);
}

const char *hs_backend_reg_name(int i)
{
    if (i < 0 || i >= hs_backend_reg_count()) {
        return NULL;
    }
    return backend_regs[i].name;
}

int hs_backend_physical_cores(void)
{
    return hs__pool_physical_cores();
}

struct hs_backend_params hs_backend_default_params(void)
{
    return (struct hs_backend_params){.n_threads = 0, .pin_threads = true};
}

hs_status hs_backend_create(const char *name, const struct hs_backend_params *params,
                            struct hs_backend **out)
{
    if (!out) {
        return HS_E_INVAL;
    }
    *out = NULL;
    if (!name) {
        return HS_E_INVAL;
    }
    struct hs_backend_params def = hs_backend_default_params();
    if (!params) {
        params = &def;
    }
    for (int i = 0; i < hs_backend_reg_count(); i++) {
        if (strcmp(backend_regs[i].name, name) != 0) {
            continue;
        }
        struct hs_backend *be = NULL;
        hs_status st = backend_regs[i].create(params, &be);
        if (st != HS_OK) {
            return st;
        }
        HS_ASSERT(be && be->iface && be->iface->version == HS_BACKEND_IFACE_VERSION);
        HS_ASSERT(be->iface->destroy && be->iface->supports_op);
        memset(&be->stats, 0, sizeof(be->stats));
        *out = be;
        return HS_OK;
    }
    return HS_E_NOENT;
}

void hs_backend_destroy(struct hs_backend *be)
{
    if (be) {
        be->iface->destroy(be);
    }
}

const char *hs_backend_name(const struct hs_backend *be)
{
    return be ? be->iface->name : "none";
}

int32_t hs_backend_n_threads(const struct hs_backend *be)
{
    return be ? be->n_threads : 0;
}

bool hs_backend_supports(struct hs_backend *be, enum hs_op op, enum hs_type t)
{
    if (!be || (unsigned)op >= HS_OP_COUNT || !hs_type_is_known((uint32_t)t)) {
        return false;
    }
    return be->iface->supports_op(be, op, t);
}

const char *hs_op_str(enum hs_op op)
{
    static const char *const names[HS_OP_COUNT] = {
        [HS_OP_MATMUL] = "matmul", [HS_OP_GET_ROWS] = "get_rows", [HS_OP_RMS_NORM] = "rms_norm",
        [HS_OP_ROPE] = "rope",     [HS_OP_ADD] = "add",           [HS_OP_MUL] = "mul",
        [HS_OP_SWIGLU] = "swiglu", [HS_OP_KV_STORE] = "kv_store", [HS_OP_ATTENTION] = "attention",
        [HS_OP_FFN] = "ffn",       [HS_OP_MOE_FFN] = "moe_ffn",
    };
    return (unsigned)op < HS_OP_COUNT ? names[op] : "unknown";
}

const char *hs_rope_mode_str(enum hs_rope_mode m)
{
    switch (m) {
    case HS_ROPE_NORM:
        return "norm";
    case HS_ROPE_NEOX:
        return "neox";
    case HS_ROPE_MODE_COUNT:
        break;
    }
    return "unknown";
}

hs_status hs_backend_synchronize(struct hs_backend *be)
{
    if (!be) {
        return HS_E_INVAL;
    }
    return be->iface->synchronize ? be->iface->synchronize(be) : HS_OK;
}

void hs_backend_bind_caller(struct hs_backend *be)
{
    if (be && be->iface->bind_caller) {
        be->iface->bind_caller(be);
    }
}

/* hs_backend_run_tasks's work, shared out by a counter each thread draws from. */
struct run_tasks {
    hs_backend_task_fn fn;
    void *ctx;
    int32_t n_tasks;
    _Atomic int32_t next;
};

static void run_tasks_thread(void *ctx, int ith, int nth)
{
    (void)ith;
    (void)nth;
    struct run_tasks *rt = ctx;
    for (;;) {
        const int32_t i = atomic_fetch_add_explicit(&rt->next, 1, memory_order_relaxed);
        if (i >= rt->n_tasks) {
            return;
        }
        rt->fn(rt->ctx, i);
    }
}

void hs__backend_run_host(struct hs_backend *be, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    if (be && be->iface->run_host) {
        be->iface->run_host(be, fn, ctx);
    } else {
        fn(ctx, 0, 1);
    }
}

void hs_backend_run_tasks(struct hs_backend *be, int32_t n_tasks, hs_backend_task_fn fn, void *ctx)
{
    if (n_tasks <= 0) {
        return;
    }
    struct run_tasks rt = {.fn = fn, .ctx = ctx, .n_tasks = n_tasks};
    atomic_init(&rt.next, 0);
    if (n_tasks == 1) {
        run_tasks_thread(&rt, 0, 1);
        return;
    }
    hs__backend_run_host(be, run_tasks_thread, &rt);
}

/* ---- weights for writing ---- */

bool hs_quantize_supports(enum hs_type t)
{
    switch (t) {
    case HS_TYPE_F32:
    case HS_TYPE_F16:
    case HS_TYPE_BF16:
    case HS_TYPE_Q8_0:
    case HS_TYPE_Q4_0:
    case HS_TYPE_Q5_0:
    case HS_TYPE_Q4_1:
    case HS_TYPE_Q5_1:
    case HS_TYPE_Q8_1:
    case HS_TYPE_Q4_K:
    case HS_TYPE_Q5_K:
    case HS_TYPE_Q6_K:
    case HS_TYPE_Q8_K:
        return true;
    default:
        return false;
    }
}

hs_status hs_quantize_rows(enum hs_type t, const float *x, void *y, int64_t n_rows,
                           int64_t n_per_row)
{
    if (!hs_quantize_supports(t) || n_per_row <= 0 || n_rows < 0 ||
        n_per_row % hs_type_traits(t)->blck_size != 0) {
        return HS_E_INVAL;
    }
    const size_t row = hs_type_row_size(t, n_per_row);
    for (int64_t r = 0; r < n_rows; r++) {
        hs__quantize_row_ref(t, x + r * n_per_row, (char *)y + (size_t)r * row, n_per_row);
    }
    return HS_OK;
}

void hs_backend_get_stats(const struct hs_backend *be, struct hs_backend_stats *out)
{
    if (!out) {
        return;
    }
    if (!be) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = be->stats;
}

void hs_backend_reset_stats(struct hs_backend *be)
{
    if (be) {
        const uint64_t held = be->stats.buffer_bytes; /* gauges, not counters */
        const uint64_t repacked = be->stats.repacked_bytes;
        memset(&be->stats, 0, sizeof(be->stats));
        be->stats.buffer_bytes = held;
        be->stats.repacked_bytes = repacked;
    }
}

/* ---- tensors ---- */

hs_status hs_tensor_init(struct hs_tensor *t, enum hs_type type, int n_dims, const int64_t *ne,
                         void *data)
{
    if (!t || !ne || n_dims < 1 || n_dims > 4 || !hs_type_is_known((uint32_t)type)) {
        return HS_E_INVAL;
    }
    const struct hs_type_traits *tr = hs_type_traits(type);
    if (!tr->name || tr->blck_size <= 0) {
        return HS_E_INVAL;
    }
    struct hs_tensor r = {.type = type, .n_dims = n_dims, .data = data};
    for (int i = 0; i < 4; i++) {
        r.ne[i] = i < n_dims ? ne[i] : 1;
        if (r.ne[i] < 0) {
            return HS_E_INVAL;
        }
    }
    if (r.ne[0] % tr->blck_size != 0) {
        return HS_E_INVAL;
    }
    r.nb[0] = tr->type_size;
    r.nb[1] = (size_t)(r.ne[0] / tr->blck_size) * tr->type_size;
    for (int i = 2; i < 4; i++) {
        if (hs_mul_overflow(r.nb[i - 1], (size_t)r.ne[i - 1], &r.nb[i])) {
            return HS_E_INVAL;
        }
    }
    size_t total;
    if (hs_mul_overflow(r.nb[3], (size_t)r.ne[3], &total)) {
        return HS_E_INVAL;
    }
    *t = r;
    return HS_OK;
}

hs_status hs_tensor_init_2d(struct hs_tensor *t, enum hs_type type, int64_t cols, int64_t rows,
                            void *data)
{
    const int64_t ne[2] = {cols, rows};
    return hs_tensor_init(t, type, 2, ne, data);
}

struct hs_tensor hs_tensor_f32_2d(float *data, int64_t cols, int64_t rows)
{
    struct hs_tensor t;
    hs_tensor_init_2d(&t, HS_TYPE_F32, cols, rows, data);
    return t;
}

int64_t hs_tensor_n_rows(const struct hs_tensor *t)
{
    return t->ne[1] * t->ne[2] * t->ne[3];
}

struct hs_tensor hs_tensor_rows(const struct hs_tensor *t, int64_t row0, int64_t n_rows)
{
    struct hs_tensor r = *t;
    r.data = (char *)t->data + (size_t)row0 * t->nb[1];
    r.ne[1] = n_rows;
    return r;
}

int64_t hs_tensor_nelements(const struct hs_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

size_t hs_tensor_nbytes(const struct hs_tensor *t)
{
    const struct hs_type_traits *tr = hs_type_traits(t->type);
    if (!tr->name || tr->blck_size <= 0 || hs_tensor_nelements(t) == 0) {
        return 0;
    }
    size_t n = (size_t)(t->ne[0] / tr->blck_size) * tr->type_size;
    for (int i = 1; i < 4; i++) {
        n += (size_t)(t->ne[i] - 1) * t->nb[i];
    }
    return n;
}

bool hs_tensor_is_contiguous(const struct hs_tensor *t)
{
    const struct hs_type_traits *tr = hs_type_traits(t->type);
    if (!tr->name || tr->blck_size <= 0 || t->nb[0] != tr->type_size) {
        return false;
    }
    size_t want = (size_t)(t->ne[0] / tr->blck_size) * tr->type_size;
    for (int i = 1; i < 4; i++) {
        if (t->ne[i] > 1 && t->nb[i] != want) {
            return false;
        }
        want *= (size_t)t->ne[i];
    }
    return true;
}

/* ---- validation ---- */

/* Well-formed view: known type, non-negative shape, innermost dimension of whole blocks stored
 * densely, data present. */
static bool t_ok(const struct hs_tensor *t, enum hs_type type)
{
    /* n_dims is informational: ne (trailing ones) describes the shape. */
    if (!t || t->type != type || !t->data) {
        return false;
    }
    const struct hs_type_traits *tr = hs_type_traits(type);
    if (!tr->name || tr->blck_size <= 0 || t->nb[0] != tr->type_size) {
        return false;
    }
    int64_t n = 1;
    for (int i = 0; i < 4; i++) {
        if (t->ne[i] < 1 || t->ne[i] > INT32_MAX || __builtin_mul_overflow(n, t->ne[i], &n)) {
            return false;
        }
    }
    if (t->ne[0] % tr->blck_size != 0) {
        return false;
    }
    const size_t row = (size_t)(t->ne[0] / tr->blck_size) * tr->type_size;
    return t->ne[1] == 1 || t->nb[1] >= row;
}

/* As t_ok, and a matrix of rows: rows ne[1]*ne[2]*ne[3] evenly spaced nb[1] apart. */
static bool rows_ok(const struct hs_tensor *t, enum hs_type type)
{
    if (!t_ok(t, type)) {
        return false;
    }
    const struct hs_type_traits *tr = hs_type_traits(type);
    const size_t row = (size_t)(t->ne[0] / tr->blck_size) * tr->type_size;
    size_t nb1 = t->ne[1] == 1 && t->ne[2] == 1 && t->ne[3] == 1 ? row : t->nb[1];
    if (nb1 < row || nb1 % sizeof(float) != 0) {
        return false;
    }
    return (t->ne[2] == 1 || t->nb[2] == nb1 * (size_t)t->ne[1]) &&
           (t->ne[3] == 1 || t->nb[3] == nb1 * (size_t)(t->ne[1] * t->ne[2]));
}

/* A 3-D view [ne2][ne1][ne0] f32 whose rows (dim 1) and planes (dim 2) may be strided. */
static bool t3_ok(const struct hs_tensor *t, enum hs_type type)
{
    if (!t_ok(t, type) || t->ne[3] != 1) {
        return false;
    }
    const size_t row = (size_t)t->ne[0] * hs_type_traits(type)->type_size;
    return (t->ne[1] == 1 || t->nb[1] >= row) &&
           (t->ne[2] == 1 || t->nb[2] >= t->nb[1] * (size_t)t->ne[1]);
}

static bool same_shape(const struct hs_tensor *a, const struct hs_tensor *b)
{
    return a->ne[0] == b->ne[0] && hs_tensor_n_rows(a) == hs_tensor_n_rows(b);
}

static bool weight_ok(const struct hs_tensor *w)
{
    /* Known but unsupported types pass here: supports_op turns them into HS_E_NOTSUP. */
    if (!w || !hs_type_is_known((uint32_t)w->type)) {
        return false;
    }
    return t_ok(w, w->type) && w->ne[2] == 1 && w->ne[3] == 1 &&
           (w->ne[1] == 1 || w->nb[1] >= hs_type_row_size(w->type, w->ne[0]));
}

static void count(struct hs_backend *be, enum hs_op op, uint64_t weight_bytes)
{
    be->stats.n_ops[op]++;
    be->stats.weight_bytes_read += weight_bytes;
}

/* ---- operations ---- */

static hs_status check_matmul(struct hs_backend *be, const struct hs_tensor *w,
                              const struct hs_tensor *x, const struct hs_tensor *y)
{
    if (!be || !weight_ok(w) || !rows_ok(x, HS_TYPE_F32) || !rows_ok(y, HS_TYPE_F32)) {
        return HS_E_INVAL;
    }
    if (x->ne[2] != 1 || x->ne[3] != 1 || y->ne[2] != 1 || y->ne[3] != 1 || x->ne[0] != w->ne[0] ||
        y->ne[0] != w->ne[1] || y->ne[1] != x->ne[1]) {
        return HS_E_INVAL;
    }
    return HS_OK;
}

hs_status hs_backend_matmul(struct hs_backend *be, const struct hs_tensor *w,
                            const struct hs_tensor *x, struct hs_tensor *y)
{
    HS_TRY(check_matmul(be, w, x, y));
    if (!be->iface->matmul || !be->iface->supports_op(be, HS_OP_MATMUL, w->type)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->matmul(be, w, x, y));
    count(be, HS_OP_MATMUL, hs_type_row_size(w->type, w->ne[0]) * (uint64_t)w->ne[1]);
    return HS_OK;
}

hs_status hs_backend_prepare_weight(struct hs_backend *be, const struct hs_tensor *w)
{
    if (!be || !w || !t_ok(w, w->type) || w->ne[2] != 1 || w->ne[3] != 1) {
        return HS_E_INVAL;
    }
    return be->iface->prepare_weight ? be->iface->prepare_weight(be, w) : HS_OK;
}

hs_status hs_backend_matmul_multi(struct hs_backend *be, int n, const struct hs_tensor *const *ws,
                                  const struct hs_tensor *x, struct hs_tensor *const *ys)
{
    if (!be || n < 1 || n > HS_MATMUL_MULTI_MAX || !ws || !ys) {
        return HS_E_INVAL;
    }
    bool native = be->iface->matmul_multi != NULL;
    for (int i = 0; i < n; i++) {
        HS_TRY(check_matmul(be, ws[i], x, ys[i]));
        if (!be->iface->matmul || !be->iface->supports_op(be, HS_OP_MATMUL, ws[i]->type)) {
            return HS_E_NOTSUP;
        }
    }
    if (native) {
        HS_TRY(be->iface->matmul_multi(be, n, ws, x, ys));
    } else {
        for (int i = 0; i < n; i++) {
            HS_TRY(be->iface->matmul(be, ws[i], x, ys[i]));
        }
    }
    for (int i = 0; i < n; i++) {
        count(be, HS_OP_MATMUL,
              hs_type_row_size(ws[i]->type, ws[i]->ne[0]) * (uint64_t)ws[i]->ne[1]);
    }
    return HS_OK;
}

hs_status hs_backend_get_rows(struct hs_backend *be, const struct hs_tensor *w, const hs_token *ids,
                              struct hs_tensor *y)
{
    if (!be || !ids || !weight_ok(w) || !rows_ok(y, HS_TYPE_F32) || y->ne[2] != 1 ||
        y->ne[3] != 1 || y->ne[0] != w->ne[0]) {
        return HS_E_INVAL;
    }
    for (int64_t r = 0; r < y->ne[1]; r++) {
        if (ids[r] < 0 || ids[r] >= w->ne[1]) {
            return HS_E_INVAL;
        }
    }
    if (!be->iface->get_rows || !be->iface->supports_op(be, HS_OP_GET_ROWS, w->type)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->get_rows(be, w, ids, y));
    count(be, HS_OP_GET_ROWS, hs_type_row_size(w->type, w->ne[0]) * (uint64_t)y->ne[1]);
    return HS_OK;
}

hs_status hs_backend_rms_norm(struct hs_backend *be, const struct hs_tensor *x,
                              const struct hs_tensor *w, float eps, struct hs_tensor *y)
{
    if (!be || !rows_ok(x, HS_TYPE_F32) || !rows_ok(y, HS_TYPE_F32) || !same_shape(x, y) ||
        !(eps >= 0.0f) || !isfinite(eps)) {
        return HS_E_INVAL;
    }
    if (w && (!rows_ok(w, HS_TYPE_F32) || !hs_tensor_is_contiguous(w) ||
              hs_tensor_nelements(w) != x->ne[0])) {
        return HS_E_INVAL;
    }
    if (!be->iface->rms_norm || !be->iface->supports_op(be, HS_OP_RMS_NORM, HS_TYPE_F32)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->rms_norm(be, x, w, eps, y));
    count(be, HS_OP_RMS_NORM, 0);
    return HS_OK;
}

hs_status hs_backend_rope(struct hs_backend *be, struct hs_tensor *x, const int32_t *pos,
                          const struct hs_rope_params *p)
{
    if (!be || !pos || !p || !t3_ok(x, HS_TYPE_F32)) {
        return HS_E_INVAL;
    }
    if ((unsigned)p->mode >= HS_ROPE_MODE_COUNT || p->n_rot <= 0 || p->n_rot % 2 != 0 ||
        p->n_rot > x->ne[0] || !(p->freq_base > 0.0f) || !isfinite(p->freq_base) ||
        !isfinite(p->freq_scale)) {
        return HS_E_INVAL;
    }
    if (!be->iface->rope || !be->iface->supports_op(be, HS_OP_ROPE, HS_TYPE_F32)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->rope(be, x, pos, p));
    count(be, HS_OP_ROPE, 0);
    return HS_OK;
}

static hs_status check_binary(struct hs_backend *be, const struct hs_tensor *a,
                              const struct hs_tensor *b, const struct hs_tensor *y,
                              bool allow_bcast)
{
    if (!be || !rows_ok(a, HS_TYPE_F32) || !rows_ok(b, HS_TYPE_F32) || !rows_ok(y, HS_TYPE_F32) ||
        !same_shape(a, y) || b->ne[0] != a->ne[0]) {
        return HS_E_INVAL;
    }
    if (hs_tensor_n_rows(b) != hs_tensor_n_rows(a) && !(allow_bcast && hs_tensor_n_rows(b) == 1)) {
        return HS_E_INVAL;
    }
    return HS_OK;
}

hs_status hs_backend_add(struct hs_backend *be, const struct hs_tensor *a,
                         const struct hs_tensor *b, struct hs_tensor *y)
{
    HS_TRY(check_binary(be, a, b, y, true));
    if (!be->iface->add || !be->iface->supports_op(be, HS_OP_ADD, HS_TYPE_F32)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->add(be, a, b, y));
    count(be, HS_OP_ADD, 0);
    return HS_OK;
}

hs_status hs_backend_mul(struct hs_backend *be, const struct hs_tensor *a,
                         const struct hs_tensor *b, struct hs_tensor *y)
{
    HS_TRY(check_binary(be, a, b, y, true));
    if (!be->iface->mul || !be->iface->supports_op(be, HS_OP_MUL, HS_TYPE_F32)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->mul(be, a, b, y));
    count(be, HS_OP_MUL, 0);
    return HS_OK;
}

hs_status hs_backend_swiglu(struct hs_backend *be, const struct hs_tensor *gate,
                            const struct hs_tensor *up, struct hs_tensor *y)
{
    HS_TRY(check_binary(be, gate, up, y, false));
    if (!be->iface->swiglu || !be->iface->supports_op(be, HS_OP_SWIGLU, HS_TYPE_F32)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->swiglu(be, gate, up, y));
    count(be, HS_OP_SWIGLU, 0);
    return HS_OK;
}

/* A paged cache [n_blocks][block_size][n_kv_head][head_dim], f16 or f32: each head's row dense,
 * slots evenly spaced (nb[2]) and blocks right after each other (nb[3] = block_size * nb[2]). A
 * whole cache is contiguous; a view of some of its heads (data at the first one, ne[1] fewer)
 * keeps the cache's nb[2], so a backend can hand a subset of heads to another. With
 * heads_dense, a slot's heads follow each other (nb[1] = the row: kv_store writes a token's heads
 * at once); attention also reads heads further apart (a group of heads: the kernels address
 * slot * nb[2] + head * nb[1]). */
static bool cache_layout_ok(const struct hs_tensor *c, bool heads_dense)
{
    if (!c || (c->type != HS_TYPE_F16 && c->type != HS_TYPE_F32) || !t_ok(c, c->type)) {
        return false;
    }
    const size_t row = (size_t)c->ne[0] * hs_type_traits(c->type)->type_size;
    return (heads_dense ? c->nb[1] == row : c->nb[1] >= row) &&
           c->nb[2] >= c->nb[1] * (size_t)c->ne[1] && c->nb[3] == c->nb[2] * (size_t)c->ne[2];
}

static bool cache_ok(const struct hs_tensor *c)
{
    return cache_layout_ok(c, true);
}

hs_status hs_backend_kv_store(struct hs_backend *be, const struct hs_tensor *src,
                              struct hs_tensor *cache, const int32_t *slots)
{
    if (!be || !slots || !t3_ok(src, HS_TYPE_F32) || !cache_ok(cache) ||
        src->ne[0] != cache->ne[0] || src->ne[1] != cache->ne[1]) {
        return HS_E_INVAL;
    }
    const int64_t n_slots = cache->ne[2] * cache->ne[3];
    for (int64_t r = 0; r < src->ne[2]; r++) {
        if (slots[r] < 0 || slots[r] >= n_slots) {
            return HS_E_INVAL;
        }
    }
    if (!be->iface->kv_store || !be->iface->supports_op(be, HS_OP_KV_STORE, cache->type)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->kv_store(be, src, cache, slots));
    count(be, HS_OP_KV_STORE, 0);
    return HS_OK;
}

/* The cache of an attention call: as cache_ok, or a view of some of the KV heads of such a
 * cache with heads further apart than a row. */
static bool attn_cache_ok(const struct hs_tensor *c)
{
    return cache_layout_ok(c, false);
}

/* A partial's m or l: [n_rows][n_head] f32 (ne = n_head, n_rows), rows evenly spaced. */
static bool attn_ml_ok(const struct hs_tensor *t, int64_t n_head, int64_t n_rows)
{
    return rows_ok(t, HS_TYPE_F32) && t->ne[0] == n_head && t->ne[1] == n_rows && t->ne[2] == 1 &&
           t->ne[3] == 1;
}

static hs_status check_attention(const struct hs_attn_args *a)
{
    if (!a || !t3_ok(a->q, HS_TYPE_F32) || !t3_ok(a->out, HS_TYPE_F32) ||
        !attn_cache_ok(a->k_cache) || !attn_cache_ok(a->v_cache)) {
        return HS_E_INVAL;
    }
    const struct hs_tensor *q = a->q;
    const struct hs_tensor *k = a->k_cache;
    const struct hs_tensor *v = a->v_cache;
    for (int i = 0; i < 4; i++) {
        if (a->out->ne[i] != q->ne[i] || v->ne[i] != k->ne[i]) {
            return HS_E_INVAL;
        }
    }
    const int64_t n_head = q->ne[1];
    const int64_t n_kv_head = k->ne[1];
    if (k->ne[0] != q->ne[0] || n_head % n_kv_head != 0 || a->block_size < 1 ||
        a->block_size != k->ne[2] || !isfinite(a->scale) || a->n_seqs < 0 ||
        (a->n_seqs > 0 && !a->seqs) || a->n_batch_rows < 0) {
        return HS_E_INVAL;
    }
    /* Partials: m and l together, one value per query row and head. */
    if (!a->m != !a->l ||
        (a->m && (!attn_ml_ok(a->m, n_head, q->ne[2]) || !attn_ml_ok(a->l, n_head, q->ne[2])))) {
        return HS_E_INVAL;
    }
    const int64_t n_blocks = k->ne[3];
    for (int32_t s = 0; s < a->n_seqs; s++) {
        const struct hs_attn_seq *seq = &a->seqs[s];
        if (seq->n_past < 0 || seq->n_new < 0 || seq->q_row < 0 ||
            (int64_t)seq->q_row + seq->n_new > q->ne[2]) {
            return HS_E_INVAL;
        }
        const int64_t n_ctx = (int64_t)seq->n_past + seq->n_new;
        /* The KV range: kv_end 0 is no upper bound, else kv_begin <= kv_end <= n_ctx. */
        if (seq->kv_begin < 0 || seq->kv_begin > n_ctx || seq->kv_end < 0 ||
            (seq->kv_end > 0 && (seq->kv_end < seq->kv_begin || seq->kv_end > n_ctx))) {
            return HS_E_INVAL;
        }
        const int64_t end = seq->kv_end > 0 ? seq->kv_end : n_ctx;
        if (seq->n_new == 0 || seq->kv_begin >= end) {
            continue; /* reads no position */
        }
        if (!seq->block_table) {
            return HS_E_INVAL;
        }
        /* Only the blocks of positions [kv_begin, end) are read. */
        for (int64_t b = seq->kv_begin / a->block_size; b <= (end - 1) / a->block_size; b++) {
            if (seq->block_table[b] < 0 || seq->block_table[b] >= n_blocks) {
                return HS_E_INVAL;
            }
        }
    }
    return HS_OK;
}

hs_status hs_backend_attention(struct hs_backend *be, const struct hs_attn_args *args)
{
    if (!be) {
        return HS_E_INVAL;
    }
    HS_TRY(check_attention(args));
    if (!be->iface->attention ||
        !be->iface->supports_op(be, HS_OP_ATTENTION, args->k_cache->type) ||
        !be->iface->supports_op(be, HS_OP_ATTENTION, args->v_cache->type)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->attention(be, args));
    count(be, HS_OP_ATTENTION, 0);
    return HS_OK;
}

/* Bytes of the three FFN matrices (2-D views). */
static uint64_t ffn_weight_bytes(const struct hs_tensor *g, const struct hs_tensor *u,
                                 const struct hs_tensor *d)
{
    return hs_type_row_size(g->type, g->ne[0]) * (uint64_t)g->ne[1] +
           hs_type_row_size(u->type, u->ne[0]) * (uint64_t)u->ne[1] +
           hs_type_row_size(d->type, d->ne[0]) * (uint64_t)d->ne[1];
}

static hs_status check_ffn(struct hs_backend *be, const struct hs_ffn_args *a)
{
    if (!be || !a) {
        return HS_E_INVAL;
    }
    const int64_t n_rows = a->x ? a->x->ne[1] : 0;
    HS_TRY(check_matmul(be, a->w_gate, a->x, a->scratch_gate));
    HS_TRY(check_matmul(be, a->w_up, a->x, a->scratch_up));
    HS_TRY(check_matmul(be, a->w_down, a->scratch_gate, a->y));
    if (a->scratch_up->ne[1] != n_rows || a->y->ne[1] != n_rows ||
        a->w_gate->ne[1] != a->w_up->ne[1] || a->y->ne[0] != a->x->ne[0]) {
        return HS_E_INVAL;
    }
    return HS_OK;
}

/* A validated FFN through the slot, or the default composition; nothing counted. */
static hs_status ffn_run(struct hs_backend *be, const struct hs_ffn_args *a)
{
    if (be->iface->ffn && be->iface->supports_op(be, HS_OP_FFN, a->w_gate->type) &&
        be->iface->supports_op(be, HS_OP_FFN, a->w_up->type) &&
        be->iface->supports_op(be, HS_OP_FFN, a->w_down->type)) {
        return be->iface->ffn(be, a);
    }
    /* Default: gate and up products, silu(gate) * up in place, down product. */
    if (!be->iface->matmul || !be->iface->swiglu ||
        !be->iface->supports_op(be, HS_OP_MATMUL, a->w_gate->type) ||
        !be->iface->supports_op(be, HS_OP_MATMUL, a->w_up->type) ||
        !be->iface->supports_op(be, HS_OP_MATMUL, a->w_down->type) ||
        !be->iface->supports_op(be, HS_OP_SWIGLU, HS_TYPE_F32)) {
        return HS_E_NOTSUP;
    }
    HS_TRY(be->iface->matmul(be, a->w_gate, a->x, a->scratch_gate));
    HS_TRY(be->iface->matmul(be, a->w_up, a->x, a->scratch_up));
    HS_TRY(be->iface->swiglu(be, a->scratch_gate, a->scratch_up, a->scratch_gate));
    return be->iface->matmul(be, a->w_down, a->scratch_gate, a->y);
}

hs_status hs_backend_ffn(struct hs_backend *be, const struct hs_ffn_args *a)
{
    HS_TRY(check_ffn(be, a));
    HS_TRY(ffn_run(be, a));
    count(be, HS_OP_FFN, ffn_weight_bytes(a->w_gate, a->w_up, a->w_down));
    return HS_OK;
}

/* ---- expert FFN ---- */

/* A stack of n_expert weight matrices [ne2][ne1][ne0], planes densely nb[2] apart. */
static bool experts_ok(const struct hs_tensor *w)
{
    if (!w || !hs_type_is_known((uint32_t)w->type) || !t_ok(w, w->type) || w->ne[3] != 1) {
        return false;
    }
    const size_t row = hs_type_row_size(w->type, w->ne[0]);
    return (w->ne[1] == 1 || w->nb[1] >= row) &&
           (w->ne[2] == 1 || w->nb[2] == w->nb[1] * (size_t)w->ne[1]);
}

struct hs_tensor hs_tensor_plane(const struct hs_tensor *t, int64_t i2)
{
    struct hs_tensor r = *t;
    r.data = (char *)t->data + (size_t)i2 * t->nb[2];
    r.ne[2] = 1;
    r.n_dims = HS_MIN(r.n_dims, 2);
    return r;
}

/* The FFN of group g as 2-D views: expert planes, and rows of x, y and the scratch buffers. */
static struct hs_ffn_args moe_group(const struct hs_moe_ffn_args *a, int32_t g,
                                    struct hs_tensor v[7])
{
    const int64_t r0 = a->row_begin[g];
    const int64_t n = a->row_begin[g + 1] - r0;
    v[0] = hs_tensor_plane(a->w_gate, a->experts[g]);
    v[1] = hs_tensor_plane(a->w_up, a->experts[g]);
    v[2] = hs_tensor_plane(a->w_down, a->experts[g]);
    v[3] = hs_tensor_rows(a->x, r0, n);
    v[4] = hs_tensor_rows(a->y, r0, n);
    v[5] = hs_tensor_rows(a->scratch_gate, r0, n);
    v[6] = hs_tensor_rows(a->scratch_up, r0, n);
    return (struct hs_ffn_args){.w_gate = &v[0],
                                .w_up = &v[1],
                                .w_down = &v[2],
                                .x = &v[3],
                                .y = &v[4],
                                .scratch_gate = &v[5],
                                .scratch_up = &v[6]};
}

hs_status hs_backend_moe_ffn(struct hs_backend *be, const struct hs_moe_ffn_args *a)
{
    if (!be || !a || !experts_ok(a->w_gate) || !experts_ok(a->w_up) || !experts_ok(a->w_down) ||
        !a->x || !a->y || !a->scratch_gate || !a->scratch_up || a->n_groups < 0 ||
        (a->n_groups > 0 && (!a->experts || !a->row_begin))) {
        return HS_E_INVAL;
    }
    const int64_t n_expert = a->w_gate->ne[2];
    if (a->w_up->ne[2] != n_expert || a->w_down->ne[2] != n_expert || !rows_ok(a->x, HS_TYPE_F32) ||
        !rows_ok(a->y, HS_TYPE_F32) || !rows_ok(a->scratch_gate, HS_TYPE_F32) ||
        !rows_ok(a->scratch_up, HS_TYPE_F32) || a->x->ne[2] != 1 || a->y->ne[2] != 1 ||
        a->scratch_gate->ne[2] != 1 || a->scratch_up->ne[2] != 1) {
        return HS_E_INVAL;
    }
    const int64_t n_rows = a->x->ne[1];
    if (a->y->ne[1] != n_rows || a->scratch_gate->ne[1] != n_rows ||
        a->scratch_up->ne[1] != n_rows) {
        return HS_E_INVAL;
    }
    uint64_t wbytes = 0;
    for (int32_t g = 0; g < a->n_groups; g++) {
        const int32_t e = a->experts[g];
        if (e < 0 || e >= n_expert || a->row_begin[g] < 0 ||
            a->row_begin[g + 1] < a->row_begin[g] || a->row_begin[g + 1] > n_rows) {
            return HS_E_INVAL;
        }
        for (int32_t h = 0; h < g; h++) {
            if (a->experts[h] == e) {
                return HS_E_INVAL;
            }
        }
    }
    /* Shapes once, on the first expert's planes (all planes share them). */
    struct hs_tensor v[7];
    const struct hs_moe_ffn_args probe = {.w_gate = a->w_gate,
                                          .w_up = a->w_up,
                                          .w_down = a->w_down,
                                          .x = a->x,
                                          .y = a->y,
                                          .experts = (const int32_t[]){0},
                                          .row_begin = (const int32_t[]){0, (int32_t)n_rows},
                                          .n_groups = 1,
                                          .scratch_gate = a->scratch_gate,
                                          .scratch_up = a->scratch_up};
    const struct hs_ffn_args f = moe_group(&probe, 0, v);
    HS_TRY(check_ffn(be, &f));
    const uint64_t expert_bytes = ffn_weight_bytes(f.w_gate, f.w_up, f.w_down);
    for (int32_t g = 0; g < a->n_groups; g++) {
        if (a->row_begin[g + 1] > a->row_begin[g]) {
            wbytes += expert_bytes;
        }
    }
    if (be->iface->moe_ffn && be->iface->supports_op(be, HS_OP_MOE_FFN, a->w_gate->type) &&
        be->iface->supports_op(be, HS_OP_MOE_FFN, a->w_up->type) &&
        be->iface->supports_op(be, HS_OP_MOE_FFN, a->w_down->type)) {
        HS_TRY(be->iface->moe_ffn(be, a));
    } else {
        for (int32_t g = 0; g < a->n_groups; g++) {
            if (a->row_begin[g + 1] == a->row_begin[g]) {
                continue;
            }
            const struct hs_ffn_args fg = moe_group(a, g, v);
            HS_TRY(ffn_run(be, &fg));
        }
    }
    count(be, HS_OP_MOE_FFN, wbytes);
    return HS_OK;
}

/* ---- buffers ---- */

struct hs_backend_buffer {
    struct hs_backend *be;
    void *base;
    size_t size;
    bool host;
};

static bool be_host(struct hs_backend *be)
{
    return !be->iface->buffer_is_host || be->iface->buffer_is_host(be);
}

hs_status hs_backend_buffer_alloc(struct hs_backend *be, size_t bytes,
                                  struct hs_backend_buffer **out)
{
    if (!out) {
        return HS_E_INVAL;
    }
    *out = NULL;
    if (!be || bytes == 0) {
        return HS_E_INVAL;
    }
    struct hs_backend_buffer *buf = calloc(1, sizeof(*buf));
    if (!buf) {
        return HS_E_NOMEM;
    }
    buf->be = be;
    buf->size = bytes;
    buf->host = be_host(be);
    hs_status st = HS_OK;
    if (be->iface->buffer_alloc) {
        st = be->iface->buffer_alloc(be, bytes, &buf->base);
    } else {
        buf->base = hs_alloc_aligned(bytes);
        st = buf->base ? HS_OK : HS_E_NOMEM;
    }
    if (st != HS_OK) {
        free(buf);
        return st;
    }
    be->stats.buffer_bytes += bytes;
    *out = buf;
    return HS_OK;
}

void hs_backend_buffer_free(struct hs_backend_buffer *buf)
{
    if (!buf) {
        return;
    }
    struct hs_backend *be = buf->be;
    if (be->iface->buffer_free) {
        be->iface->buffer_free(be, buf->base);
    } else {
        hs_free_aligned(buf->base);
    }
    be->stats.buffer_bytes -= buf->size;
    free(buf);
}

void *hs_backend_buffer_base(const struct hs_backend_buffer *buf)
{
    return buf ? buf->base : NULL;
}

size_t hs_backend_buffer_size(const struct hs_backend_buffer *buf)
{
    return buf ? buf->size : 0;
}

bool hs_backend_buffer_is_host(const struct hs_backend_buffer *buf)
{
    return buf && buf->host;
}

struct hs_backend *hs_backend_buffer_backend(const struct hs_backend_buffer *buf)
{
    return buf ? buf->be : NULL;
}

static bool range_ok(const struct hs_backend_buffer *buf, size_t offset, size_t n)
{
    return buf && offset <= buf->size && n <= buf->size - offset;
}

hs_status hs_backend_buffer_set(struct hs_backend_buffer *dst, size_t offset, const void *src,
                                size_t n)
{
    if (!range_ok(dst, offset, n) || (!src && n)) {
        return HS_E_RANGE;
    }
    char *d = (char *)dst->base + offset;
    if (n == 0) {
        return HS_OK;
    }
    if (dst->be->iface->buffer_set) {
        return dst->be->iface->buffer_set(dst->be, d, src, n);
    }
    memcpy(d, src, n);
    return HS_OK;
}

hs_status hs_backend_buffer_get(const struct hs_backend_buffer *src, size_t offset, void *dst,
                                size_t n)
{
    if (!range_ok(src, offset, n) || (!dst && n)) {
        return HS_E_RANGE;
    }
    const char *s = (const char *)src->base + offset;
    if (n == 0) {
        return HS_OK;
    }
    if (src->be->iface->buffer_get) {
        return src->be->iface->buffer_get(src->be, dst, s, n);
    }
    memcpy(dst, s, n);
    return HS_OK;
}

hs_status hs_backend_buffer_copy(const struct hs_backend_buffer *src, size_t src_offset,
                                 struct hs_backend_buffer *dst, size_t dst_offset, size_t n)
{
    if (!range_ok(src, src_offset, n) || !range_ok(dst, dst_offset, n)) {
        return HS_E_RANGE;
    }
    if (n == 0) {
        return HS_OK;
    }
    const char *s = (const char *)src->base + src_offset;
    char *d = (char *)dst->base + dst_offset;
    hs_status st = HS_OK;
    if (src->be == dst->be && src->be->iface->buffer_copy) {
        st = src->be->iface->buffer_copy(src->be, d, s, n);
    } else if (src->host && dst->host) {
        memmove(d, s, n);
    } else if (src->host) {
        st = hs_backend_buffer_set(dst, dst_offset, s, n);
    } else if (dst->host) {
        st = hs_backend_buffer_get(src, src_offset, d, n);
    } else {
        /* two device memories: through a host bounce buffer, a chunk at a time */
        enum { CHUNK = 1 << 20 };
        void *bounce = malloc(HS_MIN((size_t)CHUNK, n));
        if (!bounce) {
            return HS_E_NOMEM;
        }
        for (size_t done = 0; done < n && st == HS_OK; done += CHUNK) {
            const size_t k = HS_MIN((size_t)CHUNK, n - done);
            st = hs_backend_buffer_get(src, src_offset + done, bounce, k);
            if (st == HS_OK) {
                st = hs_backend_buffer_set(dst, dst_offset + done, bounce, k);
            }
        }
        free(bounce);
    }
    if (st == HS_OK && src->be != dst->be) {
        src->be->stats.bytes_copied_out += n;
        dst->be->stats.bytes_copied_in += n;
    }
    return st;
}
