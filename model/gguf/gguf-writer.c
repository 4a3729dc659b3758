/* GGUF writer (v3). Each value is serialised when it is set, so writing is concatenation:
 * header, metadata, tensor infos, padding, then each tensor's data padded to the alignment. */
#include "model/gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"

#define WRITER_MAX_DEPTH 8

struct wkv {
    char *key;
    char *bytes; /* value type (u32) then the value, as in the file */
    size_t len;
};

struct wtensor {
    char *name;
    enum hs_type type;
    uint32_t n_dims;
    int64_t ne[4];
    void *data; /* [size_bytes] */
    size_t size_bytes;
};

struct hs_gguf_writer {
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *tensors;
    size_t n_tensors, cap_tensors;
};

/* ---- serialising into a byte buffer (common/buf.h's; a failed add sticks in oom) ---- */

static void buf_u32(struct hs__buf *b, uint32_t v)
{
    hs__buf_add(b, &v, 4);
}

static void buf_u64(struct hs__buf *b, uint64_t v)
{
    hs__buf_add(b, &v, 8);
}

static void buf_str(struct hs__buf *b, const char *s, uint64_t len)
{
    buf_u64(b, len);
    hs__buf_add(b, s, (size_t)len);
}

/* ---- lifetime ---- */

hs_status hs_gguf_writer_create(struct hs_gguf_writer **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? HS_OK : HS_E_NOMEM;
}

void hs_gguf_writer_destroy(struct hs_gguf_writer *w)
{
    if (!w) {
        return;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].bytes);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->kv);
    free(w->tensors);
    free(w);
}

/* ---- metadata ---- */

static bool name_ok(const char *s)
{
    return s && s[0] != '\0' && hs_gguf_utf8_valid(s, strlen(s));
}

/* Takes ownership of b's bytes (freed on failure too). */
static hs_status put_kv(struct hs_gguf_writer *w, const char *key, struct hs__buf *b)
{
    if (b->oom) {
        free(b->p);
        return HS_E_NOMEM;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].bytes);
            w->kv[i].bytes = b->p;
            w->kv[i].len = b->len;
            return HS_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        struct wkv *kv = realloc(w->kv, cap * sizeof(*kv));
        if (!kv) {
            free(b->p);
            return HS_E_NOMEM;
        }
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(b->p);
        return HS_E_NOMEM;
    }
    w->kv[w->n_kv++] = (struct wkv){.key = k, .bytes = b->p, .len = b->len};
    return HS_OK;
}

static hs_status set_scalar(struct hs_gguf_writer *w, const char *key, enum hs_gguf_type type,
                            const void *v)
{
    if (!name_ok(key)) {
        return HS_E_INVAL;
    }
    struct hs__buf b = {0};
    buf_u32(&b, type);
    hs__buf_add(&b, v, hs_gguf_type_size(type));
    return put_kv(w, key, &b);
}

hs_status hs_gguf_writer_set_u32(struct hs_gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, HS_GGUF_TYPE_UINT32, &v);
}

hs_status hs_gguf_writer_set_i32(struct hs_gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, HS_GGUF_TYPE_INT32, &v);
}

hs_status hs_gguf_writer_set_u64(struct hs_gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, HS_GGUF_TYPE_UINT64, &v);
}

hs_status hs_gguf_writer_set_f32(struct hs_gguf_writer *w, const char *key, float v)
{
    return set_scalar(w, key, HS_GGUF_TYPE_FLOAT32, &v);
}

hs_status hs_gguf_writer_set_bool(struct hs_gguf_writer *w, const char *key, bool v)
{
    uint8_t x = v ? 1 : 0;
    return set_scalar(w, key, HS_GGUF_TYPE_BOOL, &x);
}

hs_status hs_gguf_writer_set_str(struct hs_gguf_writer *w, const char *key, const char *v)
{
    if (!name_ok(key) || !v) {
        return HS_E_INVAL;
    }
    struct hs__buf b = {0};
    buf_u32(&b, HS_GGUF_TYPE_STRING);
    buf_str(&b, v, strlen(v));
    return put_kv(w, key, &b);
}

hs_status hs_gguf_writer_set_arr(struct hs_gguf_writer *w, const char *key, enum hs_gguf_type elem,
                                 const void *data, uint64_t n)
{
    size_t es = hs_gguf_type_size(elem);
    size_t bytes;
    if (!name_ok(key) || es == 0 || (n > 0 && !data) || n > SIZE_MAX ||
        hs_mul_overflow((size_t)n, es, &bytes)) {
        return HS_E_INVAL;
    }
    struct hs__buf b = {0};
    buf_u32(&b, HS_GGUF_TYPE_ARRAY);
    buf_u32(&b, elem);
    buf_u64(&b, n);
    hs__buf_add(&b, data, bytes);
    return put_kv(w, key, &b);
}

hs_status hs_gguf_writer_set_arr_str(struct hs_gguf_writer *w, const char *key,
                                     const char *const *strs, uint64_t n)
{
    if (!name_ok(key) || (n > 0 && !strs)) {
        return HS_E_INVAL;
    }
    struct hs__buf b = {0};
    buf_u32(&b, HS_GGUF_TYPE_ARRAY);
    buf_u32(&b, HS_GGUF_TYPE_STRING);
    buf_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) {
            free(b.p);
            return HS_E_INVAL;
        }
        buf_str(&b, strs[i], strlen(strs[i]));
    }
    return put_kv(w, key, &b);
}

/* Serialises v's body (no type tag for scalars; array: element type, count, elements). */
static hs_status put_value_body(struct hs__buf *b, const struct hs_gguf_value *v, int depth)
{
    size_t es = hs_gguf_type_size(v->type);
    if (es) {
        uint8_t x[8];
        switch (v->type) {
        case HS_GGUF_TYPE_BOOL:
            x[0] = v->b ? 1 : 0;
            break;
        case HS_GGUF_TYPE_FLOAT32: {
            float f = (float)v->f64;
            memcpy(x, &f, 4);
            break;
        }
        case HS_GGUF_TYPE_FLOAT64:
            memcpy(x, &v->f64, 8);
            break;
        default: /* integers: the low es bytes, little-endian */
            memcpy(x, &v->u64, 8);
            break;
        }
        hs__buf_add(b, x, es);
        return HS_OK;
    }
    if (v->type == HS_GGUF_TYPE_STRING) {
        if (v->str.len > 0 && !v->str.data) {
            return HS_E_INVAL;
        }
        buf_str(b, v->str.data, v->str.len);
        return HS_OK;
    }
    if (v->type != HS_GGUF_TYPE_ARRAY || depth >= WRITER_MAX_DEPTH) {
        return HS_E_INVAL;
    }
    enum hs_gguf_type et = v->arr.type;
    uint64_t n = v->arr.n;
    if (n > 0 && !v->arr.data) {
        return HS_E_INVAL;
    }
    buf_u32(b, et);
    buf_u64(b, n);
    size_t ees = hs_gguf_type_size(et);
    if (ees) {
        size_t bytes;
        if (n > SIZE_MAX || hs_mul_overflow((size_t)n, ees, &bytes)) {
            return HS_E_INVAL;
        }
        hs__buf_add(b, v->arr.data, bytes);
        return HS_OK;
    }
    if (et == HS_GGUF_TYPE_STRING) {
        const struct hs_gguf_str *s = v->arr.data;
        for (uint64_t i = 0; i < n; i++) {
            if (s[i].len > 0 && !s[i].data) {
                return HS_E_INVAL;
            }
            buf_str(b, s[i].data, s[i].len);
        }
        return HS_OK;
    }
    if (et != HS_GGUF_TYPE_ARRAY) {
        return HS_E_INVAL;
    }
    const struct hs_gguf_value *vals = v->arr.data;
    for (uint64_t i = 0; i < n; i++) {
        if (vals[i].type != HS_GGUF_TYPE_ARRAY) {
            return HS_E_INVAL;
        }
        HS_TRY(put_value_body(b, &vals[i], depth + 1));
    }
    return HS_OK;
}

hs_status hs_gguf_writer_set_value(struct hs_gguf_writer *w, const char *key,
                                   const struct hs_gguf_value *v)
{
    if (!name_ok(key) || !v || (unsigned)v->type >= HS_GGUF_TYPE_COUNT) {
        return HS_E_INVAL;
    }
    struct hs__buf b = {0};
    buf_u32(&b, v->type);
    hs_status st = put_value_body(&b, v, 0);
    if (st != HS_OK) {
        free(b.p);
        return st;
    }
    return put_kv(w, key, &b);
}

/* ---- tensors ---- */

hs_status hs_gguf_writer_add_tensor(struct hs_gguf_writer *w, const char *name, enum hs_type type,
                                    uint32_t n_dims, const int64_t *ne, const void *data)
{
    if (!name_ok(name) || !hs_type_is_known((uint32_t)type) || n_dims > 4 || (n_dims > 0 && !ne) ||
        !data) {
        return HS_E_INVAL;
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (strcmp(w->tensors[i].name, name) == 0) {
            return HS_E_INVAL;
        }
    }
    struct wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    int64_t rows = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || (d > 0 && __builtin_mul_overflow(rows, ne[d], &rows))) {
            return HS_E_INVAL;
        }
        t.ne[d] = ne[d];
    }
    size_t row = hs_type_row_size(type, t.ne[0]);
    if (row == 0 || (uint64_t)rows > SIZE_MAX ||
        hs_mul_overflow(row, (size_t)rows, &t.size_bytes)) {
        return HS_E_INVAL;
    }
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 16;
        struct wtensor *ts = realloc(w->tensors, cap * sizeof(*ts));
        if (!ts) {
            return HS_E_NOMEM;
        }
        w->tensors = ts;
        w->cap_tensors = cap;
    }
    t.name = strdup(name);
    t.data = malloc(t.size_bytes);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return HS_E_NOMEM;
    }
    memcpy(t.data, data, t.size_bytes);
    w->tensors[w->n_tensors++] = t;
    return HS_OK;
}

/* ---- output ---- */

/* The alignment from general.alignment (an unsigned integer power of two), else 32. */
static hs_status writer_alignment(const struct hs_gguf_writer *w, size_t *out)
{
    *out = HS_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) {
            continue;
        }
        uint32_t type;
        uint64_t v = 0;
        memcpy(&type, w->kv[i].bytes, 4);
        size_t es = hs_gguf_type_size(type);
        if ((type != HS_GGUF_TYPE_UINT8 && type != HS_GGUF_TYPE_UINT16 &&
             type != HS_GGUF_TYPE_UINT32 && type != HS_GGUF_TYPE_UINT64)) {
            return HS_E_INVAL;
        }
        memcpy(&v, w->kv[i].bytes + 4, es);
        if (v == 0 || (v & (v - 1)) != 0 || v > (UINT64_C(1) << 30)) {
            return HS_E_INVAL;
        }
        *out = (size_t)v;
    }
    return HS_OK;
}

/* Header through the padding before the data section; total_out is the whole file's size. */
static hs_status build_header(const struct hs_gguf_writer *w, struct hs__buf *b, size_t *align_out,
                              size_t *total_out)
{
    size_t align;
    HS_TRY(writer_alignment(w, &align));
    hs__buf_add(b, "GGUF", 4);
    buf_u32(b, 3);
    buf_u64(b, w->n_tensors);
    buf_u64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        buf_str(b, w->kv[i].key, strlen(w->kv[i].key));
        hs__buf_add(b, w->kv[i].bytes, w->kv[i].len);
    }
    size_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        buf_str(b, t->name, strlen(t->name));
        buf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) {
            buf_u64(b, (uint64_t)t->ne[d]);
        }
        buf_u32(b, (uint32_t)t->type);
        buf_u64(b, off);
        if (hs_add_overflow(off, t->size_bytes, &off) || off > SIZE_MAX - align) {
            return HS_E_NOMEM;
        }
        off = hs_align_up(off, align);
    }
    hs__buf_add(b, NULL, hs_align_up(b->len, align) - b->len);
    if (b->oom || hs_add_overflow(b->len, off, total_out)) {
        return HS_E_NOMEM;
    }
    *align_out = align;
    return HS_OK;
}

hs_status hs_gguf_writer_write_memory(const struct hs_gguf_writer *w, void **out_data,
                                      size_t *out_size)
{
    struct hs__buf b = {0};
    size_t align;
    size_t total;
    *out_data = NULL;
    *out_size = 0;
    hs_status st = build_header(w, &b, &align, &total);
    if (st != HS_OK) {
        free(b.p);
        return st;
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        hs__buf_add(&b, t->data, t->size_bytes);
        hs__buf_add(&b, NULL, hs_align_up(b.len, align) - b.len);
    }
    if (b.oom) {
        free(b.p);
        return HS_E_NOMEM;
    }
    if (!b.p) { /* never: the magic is always there */
        return HS_E_INTERNAL;
    }
    *out_data = b.p;
    *out_size = b.len;
    return HS_OK;
}

static bool write_all(int fd, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        p += k;
        n -= (size_t)k;
    }
    return true;
}

hs_status hs_gguf_writer_write_file(const struct hs_gguf_writer *w, const char *path,
                                    struct hs_error *err)
{
    static const uint8_t zeros[256];
    struct hs__buf b = {0};
    size_t align;
    size_t total;
    char *tmp = NULL;
    int fd = -1;
    hs_status st = build_header(w, &b, &align, &total);
    if (st != HS_OK) {
        hs_error_set(err, st, "cannot write '%s': %s", path,
                     st == HS_E_INVAL ? "bad general.alignment" : "out of memory");
        goto fail;
    }
    size_t plen = strlen(path);
    tmp = malloc(plen + 16);
    if (!tmp) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    fd = mkstemp(tmp);
    if (fd < 0) {
        st = hs_error_set(err, HS_E_IO, "cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto fail;
    }
    size_t pos = b.len;
    bool ok = write_all(fd, b.p, b.len);
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        ok = write_all(fd, t->data, t->size_bytes);
        pos += t->size_bytes;
        size_t pad = hs_align_up(pos, align) - pos;
        while (ok && pad > 0) {
            size_t k = HS_MIN(pad, sizeof(zeros));
            ok = write_all(fd, zeros, k);
            pad -= k;
            pos += k;
        }
    }
    if (!ok || fchmod(fd, 0644) != 0 || fsync(fd) != 0) {
        st = hs_error_set(err, HS_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = hs_error_set(err, HS_E_IO, "cannot write '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = hs_error_set(err, HS_E_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                          strerror(errno));
        goto fail;
    }
    free(tmp);
    free(b.p);
    return HS_OK;

fail:
    if (fd >= 0) {
        close(fd);
    }
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(b.p);
    return st;
}
