/* GGUF reader: one pass over the header, every count and length checked against the bytes left
 * before anything is allocated or read. Keys, tensor names and the arrays of strings or values
 * live in one arena owned by the reader; string values and numeric arrays borrow the mapping. */
#include "model/gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC         "GGUF"
#define GGUF_MAX_DEPTH     8 /* arrays nested deeper than this are refused */
#define GGUF_MAX_ALIGNMENT (UINT32_C(1) << 30)
#define GGUF_MIN_KV_BYTES  14 /* key length 8 + key 1 + type 4 + smallest value 1 */
#define GGUF_MIN_TI_BYTES  25 /* name length 8 + name 1 + n_dims 4 + type 4 + offset 8 */

const char *hs_gguf_type_str(enum hs_gguf_type t)
{
    static const char *const names[HS_GGUF_TYPE_COUNT] = {
        "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
        "bool",  "string", "array",  "uint64", "int64",  "float64",
    };
    return (unsigned)t < HS_GGUF_TYPE_COUNT ? names[t] : "unknown";
}

size_t hs_gguf_type_size(uint32_t t)
{
    switch (t) {
    case HS_GGUF_TYPE_UINT8:
    case HS_GGUF_TYPE_INT8:
    case HS_GGUF_TYPE_BOOL:
        return 1;
    case HS_GGUF_TYPE_UINT16:
    case HS_GGUF_TYPE_INT16:
        return 2;
    case HS_GGUF_TYPE_UINT32:
    case HS_GGUF_TYPE_INT32:
    case HS_GGUF_TYPE_FLOAT32:
        return 4;
    case HS_GGUF_TYPE_UINT64:
    case HS_GGUF_TYPE_INT64:
    case HS_GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static bool is_int_type(enum hs_gguf_type t)
{
    return t == HS_GGUF_TYPE_UINT8 || t == HS_GGUF_TYPE_INT8 || t == HS_GGUF_TYPE_UINT16 ||
           t == HS_GGUF_TYPE_INT16 || t == HS_GGUF_TYPE_UINT32 || t == HS_GGUF_TYPE_INT32 ||
           t == HS_GGUF_TYPE_UINT64 || t == HS_GGUF_TYPE_INT64;
}

static bool is_unsigned_type(enum hs_gguf_type t)
{
    return t == HS_GGUF_TYPE_UINT8 || t == HS_GGUF_TYPE_UINT16 || t == HS_GGUF_TYPE_UINT32 ||
           t == HS_GGUF_TYPE_UINT64;
}

/* The es = hs_gguf_type_size(t) bytes of a fixed-size value at p, little-endian (the host's order,
 * as everywhere in this reader), as the low bytes of a uint64_t. */
static uint64_t scalar_bits(const uint8_t *p, size_t es)
{
    uint64_t bits = 0;
    memcpy(&bits, p, es);
    return bits;
}

/* Those bits as the two's-complement integer of es bytes (all 8: the bits of an int64_t). */
static int64_t scalar_signed(uint64_t bits, size_t es)
{
    const uint64_t sign = (uint64_t)1 << (8 * es - 1);
    const uint64_t ext = (bits ^ sign) - sign;
    int64_t x;
    memcpy(&x, &ext, 8);
    return x;
}

/* Those bits as the FLOAT32 or FLOAT64 (t) they hold. */
static double scalar_float(uint64_t bits, enum hs_gguf_type t)
{
    if (t == HS_GGUF_TYPE_FLOAT32) {
        float x;
        memcpy(&x, &bits, 4);
        return x;
    }
    double x;
    memcpy(&x, &bits, 8);
    return x;
}

bool hs_gguf_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        if (c < 0x80) {
            if (c == 0) {
                return false;
            }
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        uint32_t min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < n) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            unsigned cc = p[i + k];
            if ((cc & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

bool hs_gguf_str_eq(struct hs_gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.data, c, n) == 0);
}

/* ======================================================================================== */
/* Arena: bump allocation in chunks; big requests get a block of their own. */

struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

struct arena {
    struct arena_block *head;
};

#define ARENA_CHUNK ((size_t)64 * 1024)

static void *arena_alloc(struct arena *a, size_t n)
{
    if (n > SIZE_MAX - 64) {
        return NULL;
    }
    n = hs_align_up(n == 0 ? 1 : n, alignof(max_align_t));
    struct arena_block *b = a->head;
    if (b && b->cap - b->used >= n) {
        void *p = (unsigned char *)b->data + b->used;
        b->used += n;
        return p;
    }
    size_t cap = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
    struct arena_block *nb = malloc(sizeof(*nb) + cap);
    if (!nb) {
        return NULL;
    }
    nb->cap = cap;
    nb->used = n;
    if (b && cap != ARENA_CHUNK) {
        /* Keep the current chunk in front: its free space is still usable. */
        nb->next = b->next;
        b->next = nb;
    } else {
        nb->next = b;
        a->head = nb;
    }
    return nb->data;
}

static void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ======================================================================================== */
/* Name index: open addressing over indices, FNV-1a. */

struct name_index {
    int64_t *slots; /* -1: empty */
    size_t mask;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static hs_status index_init(struct name_index *ix, int64_t n)
{
    size_t cap = 8;
    while (cap < (size_t)n * 2) {
        cap *= 2;
    }
    ix->slots = malloc(cap * sizeof(*ix->slots));
    if (!ix->slots) {
        return HS_E_NOMEM;
    }
    for (size_t i = 0; i < cap; i++) {
        ix->slots[i] = -1;
    }
    ix->mask = cap - 1;
    return HS_OK;
}

/* ======================================================================================== */
/* The reader. */

struct gguf_kv {
    const char *key; /* arena */
    struct hs_gguf_value value;
};

struct hs_gguf {
    const uint8_t *base;
    size_t size;
    void *map; /* non-NULL when we mapped it (the file, or anonymous huge pages) */
    size_t map_size;
    enum hs_gguf_backing backing;

    uint32_t version;
    uint32_t alignment;
    size_t data_offset;

    int64_t n_kv;
    struct gguf_kv *kv; /* [n_kv] */
    struct name_index kv_index;

    int64_t n_tensors;
    struct hs_gguf_tensor *tensors; /* [n_tensors] */
    struct name_index tensor_index;

    struct arena arena;
};

static const char *kv_name_at(const void *ctx, int64_t i)
{
    return ((const struct hs_gguf *)ctx)->kv[i].key;
}

static const char *tensor_name_at(const void *ctx, int64_t i)
{
    return ((const struct hs_gguf *)ctx)->tensors[i].name;
}

/* Index of name in ix, or -1. With insert >= 0, inserts that index when absent. */
static int64_t index_find(const struct name_index *ix, const struct hs_gguf *g,
                          const char *(*name_at)(const void *, int64_t), const char *name,
                          size_t len, int64_t insert)
{
    size_t i = (size_t)hash_bytes(name, len) & ix->mask;
    for (;;) {
        int64_t v = ix->slots[i];
        if (v < 0) {
            if (insert >= 0) {
                ix->slots[i] = insert;
            }
            return -1;
        }
        const char *s = name_at(g, v);
        if (strncmp(s, name, len) == 0 && s[len] == '\0') {
            return v;
        }
        i = (i + 1) & ix->mask;
    }
}

struct rd {
    const uint8_t *p;
    size_t size;
    size_t pos;
    struct hs_error *err;
    struct arena *arena;
};

static size_t rd_left(const struct rd *r)
{
    return r->size - r->pos;
}

/* Prefixes err's message with "<what> '<name>': " unless it already names it; returns st. */
static hs_status err_context(struct hs_error *err, hs_status st, const char *what, const char *name)
{
    char prefix[128];
    if (!err || st == HS_E_NOMEM) {
        return st;
    }
    snprintf(prefix, sizeof(prefix), "%s '%s': ", what, name);
    if (strncmp(err->message, prefix, strlen(prefix)) == 0) {
        return st;
    }
    size_t pl = strlen(prefix);
    size_t ml = strlen(err->message);
    if (pl + ml >= sizeof(err->message)) {
        ml = sizeof(err->message) - 1 - pl;
    }
    memmove(err->message + pl, err->message, ml);
    memcpy(err->message, prefix, pl);
    err->message[pl + ml] = '\0';
    return st;
}

static hs_status rd_need(struct rd *r, size_t n, const char *what)
{
    if (n > rd_left(r)) {
        return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)r->pos,
                               "truncated file: %s needs %zu bytes but only %zu are left", what, n,
                               rd_left(r));
    }
    return HS_OK;
}

static hs_status rd_u32(struct rd *r, uint32_t *out, const char *what)
{
    HS_TRY(rd_need(r, 4, what));
    memcpy(out, r->p + r->pos, 4);
    r->pos += 4;
    return HS_OK;
}

static hs_status rd_u64(struct rd *r, uint64_t *out, const char *what)
{
    HS_TRY(rd_need(r, 8, what));
    memcpy(out, r->p + r->pos, 8);
    r->pos += 8;
    return HS_OK;
}

/* Reads a string's length and bytes; the result borrows the input. */
static hs_status rd_str(struct rd *r, struct hs_gguf_str *out, const char *what)
{
    uint64_t len;
    size_t at = r->pos;
    HS_TRY(rd_u64(r, &len, what));
    if (len > rd_left(r)) {
        return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)at,
                               "%s: string length %" PRIu64
                               " runs past the end of the file (%zu bytes left)",
                               what, len, rd_left(r));
    }
    out->data = (const char *)r->p + r->pos;
    out->len = len;
    r->pos += (size_t)len;
    return HS_OK;
}

/* Reads a key or tensor name: non-empty valid UTF-8 without NUL, copied NUL-terminated. */
static hs_status rd_name(struct rd *r, const char **out, struct hs_gguf_str *raw, const char *what)
{
    size_t at = r->pos;
    struct hs_gguf_str s;
    HS_TRY(rd_str(r, &s, what));
    if (s.len == 0) {
        return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)at, "%s is empty", what);
    }
    if (!hs_gguf_utf8_valid(s.data, (size_t)s.len)) {
        return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)at,
                               "%s is not valid UTF-8 (or contains NUL)", what);
    }
    char *copy = arena_alloc(r->arena, (size_t)s.len + 1);
    if (!copy) {
        return hs_error_set(r->err, HS_E_NOMEM, "out of memory copying %s", what);
    }
    memcpy(copy, s.data, (size_t)s.len);
    copy[s.len] = '\0';
    *out = copy;
    *raw = s;
    return HS_OK;
}

static hs_status rd_value(struct rd *r, uint32_t type, struct hs_gguf_value *v, int depth,
                          const char *key);

/* Array body (element type, count, elements) into v. depth counts enclosing arrays. */
static hs_status rd_array(struct rd *r, struct hs_gguf_value *v, int depth, const char *key)
{
    size_t at = r->pos;
    uint32_t elem;
    uint64_t n;
    if (depth >= GGUF_MAX_DEPTH) {
        return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)at,
                               "key '%s': arrays nested deeper than %d", key, GGUF_MAX_DEPTH);
    }
    HS_TRY(rd_u32(r, &elem, "array element type"));
    HS_TRY(rd_u64(r, &n, "array length"));
    v->type = HS_GGUF_TYPE_ARRAY;
    v->arr.type = (enum hs_gguf_type)elem;
    v->arr.n = n;
    v->arr.data = NULL;

    size_t es = hs_gguf_type_size(elem);
    size_t min_elem = es ? es : elem == HS_GGUF_TYPE_STRING ? 8 : 12;
    if (elem >= HS_GGUF_TYPE_COUNT) {
        return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)at,
                               "key '%s': unknown array element type %" PRIu32, key, elem);
    }
    if (n > rd_left(r) / min_elem) {
        return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)at + 4,
                               "key '%s': array of %" PRIu64 " %s elements needs at least %" PRIu64
                               " bytes but only %zu are left",
                               key, n, hs_gguf_type_str(elem),
                               n > UINT64_MAX / min_elem ? UINT64_MAX : n * min_elem, rd_left(r));
    }
    if (es) {
        v->arr.data = r->p + r->pos;
        r->pos += (size_t)n * es;
        return HS_OK;
    }
    if (elem == HS_GGUF_TYPE_STRING) {
        struct hs_gguf_str *strs = arena_alloc(r->arena, (size_t)n * sizeof(*strs));
        if (!strs) {
            return hs_error_set(r->err, HS_E_NOMEM, "key '%s': out of memory", key);
        }
        /* The hot loop of a tokenizer's vocabulary: locals only; a bad string is read again
         * through rd_str for its message. */
        const uint8_t *p = r->p;
        const size_t size = r->size;
        size_t pos = r->pos;
        uint64_t i = 0;
        for (; i < n; i++) {
            uint64_t len;
            if (size - pos < 8) {
                break;
            }
            memcpy(&len, p + pos, 8);
            if (len > size - pos - 8) {
                break;
            }
            strs[i].data = (const char *)p + pos + 8;
            strs[i].len = len;
            pos += 8 + (size_t)len;
        }
        r->pos = pos;
        if (i < n) {
            HS_TRY(rd_str(r, &strs[i], "array string"));
            return hs_error_set(r->err, HS_E_INTERNAL, "key '%s': string %" PRIu64, key, i);
        }
        v->arr.data = strs;
        return HS_OK;
    }
    struct hs_gguf_value *vals = arena_alloc(r->arena, (size_t)n * sizeof(*vals));
    if (!vals) {
        return hs_error_set(r->err, HS_E_NOMEM, "key '%s': out of memory", key);
    }
    for (uint64_t i = 0; i < n; i++) {
        HS_TRY(rd_value(r, HS_GGUF_TYPE_ARRAY, &vals[i], depth + 1, key));
    }
    v->arr.data = vals;
    return HS_OK;
}

static hs_status rd_value(struct rd *r, uint32_t type, struct hs_gguf_value *v, int depth,
                          const char *key)
{
    const size_t es = hs_gguf_type_size(type);
    v->type = (enum hs_gguf_type)type;
    if (es) {
        HS_TRY(rd_need(r, es, "metadata value"));
        const uint64_t bits = scalar_bits(r->p + r->pos, es);
        r->pos += es;
        if (type == HS_GGUF_TYPE_FLOAT32 || type == HS_GGUF_TYPE_FLOAT64) {
            v->f64 = scalar_float(bits, v->type);
        } else if (type == HS_GGUF_TYPE_BOOL) {
            v->b = bits != 0;
        } else if (is_unsigned_type(v->type)) {
            v->u64 = bits;
        } else {
            v->i64 = scalar_signed(bits, es);
        }
        return HS_OK;
    }
    if (type == HS_GGUF_TYPE_STRING) {
        return rd_str(r, &v->str, "string value");
    }
    if (type == HS_GGUF_TYPE_ARRAY) {
        return rd_array(r, v, depth, key);
    }
    return hs_error_set_at(r->err, HS_E_FORMAT, (int64_t)r->pos - 4,
                           "key '%s': unknown value type %" PRIu32, key, type);
}

static hs_status parse_header(struct hs_gguf *g, struct hs_error *err)
{
    struct rd r = {.p = g->base, .size = g->size, .pos = 0, .err = err, .arena = &g->arena};
    hs_status st;
    size_t *ti_at = NULL; /* byte offset of each tensor info, for messages */

    if (g->size == 0) {
        return hs_error_set_at(err, HS_E_FORMAT, 0, "file is empty, too small to be GGUF");
    }
    if (g->size < 4) {
        return hs_error_set_at(err, HS_E_FORMAT, 0, "file of %zu bytes is too small to be GGUF",
                               g->size);
    }
    if (memcmp(g->base, GGUF_MAGIC, 4) != 0) {
        const uint8_t *m = g->base;
        return hs_error_set_at(err, HS_E_FORMAT, 0,
                               "bad magic %02x %02x %02x %02x: not a GGUF file (expected 'GGUF')",
                               m[0], m[1], m[2], m[3]);
    }
    r.pos = 4;
    HS_TRY(rd_u32(&r, &g->version, "version"));
    if (g->version == 1) {
        return hs_error_set_at(err, HS_E_NOTSUP, 4,
                               "GGUF version 1 is not supported (re-convert the model to v3)");
    }
    if (g->version != 2 && g->version != 3) {
        if (g->version != 0 && (g->version & 0xffff) == 0) {
            return hs_error_set_at(err, HS_E_NOTSUP, 4,
                                   "GGUF version 0x%08" PRIx32 ": big-endian files are not "
                                   "supported",
                                   g->version);
        }
        return hs_error_set_at(err, HS_E_NOTSUP, 4, "unknown GGUF version %" PRIu32, g->version);
    }

    uint64_t n_tensors;
    uint64_t n_kv;
    HS_TRY(rd_u64(&r, &n_tensors, "tensor count"));
    HS_TRY(rd_u64(&r, &n_kv, "metadata count"));
    if (n_tensors > rd_left(&r) / GGUF_MIN_TI_BYTES) {
        return hs_error_set_at(err, HS_E_FORMAT, 8,
                               "tensor count %" PRIu64 " is impossible: only %zu bytes are left",
                               n_tensors, rd_left(&r));
    }
    if (n_kv > rd_left(&r) / GGUF_MIN_KV_BYTES ||
        n_kv * GGUF_MIN_KV_BYTES + n_tensors * GGUF_MIN_TI_BYTES > rd_left(&r)) {
        return hs_error_set_at(err, HS_E_FORMAT, 16,
                               "metadata count %" PRIu64 " is impossible: only %zu bytes are left",
                               n_kv, rd_left(&r));
    }

    /* ---- metadata ---- */
    g->kv = arena_alloc(&g->arena, (size_t)n_kv * sizeof(*g->kv));
    if (!g->kv || index_init(&g->kv_index, (int64_t)n_kv) != HS_OK) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory for %" PRIu64 " keys", n_kv);
    }
    g->alignment = HS_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gguf_kv *kv = &g->kv[i];
        struct hs_gguf_str raw;
        size_t key_at = r.pos;
        uint32_t type;
        HS_TRY(rd_name(&r, &kv->key, &raw, "metadata key"));
        if (index_find(&g->kv_index, g, kv_name_at, kv->key, (size_t)raw.len, (int64_t)i) >= 0) {
            return hs_error_set_at(err, HS_E_FORMAT, (int64_t)key_at, "duplicate key '%s'",
                                   kv->key);
        }
        g->n_kv = (int64_t)i + 1;
        if ((st = rd_u32(&r, &type, "value type")) != HS_OK) {
            return err_context(err, st, "key", kv->key);
        }
        size_t value_at = r.pos;
        if ((st = rd_value(&r, type, &kv->value, 0, kv->key)) != HS_OK) {
            return err_context(err, st, "key", kv->key);
        }
        if (strcmp(kv->key, "general.alignment") == 0) {
            const struct hs_gguf_value *v = &kv->value;
            if (!is_int_type(v->type) || (!is_unsigned_type(v->type) && v->i64 < 0)) {
                return hs_error_set_at(err, HS_E_FORMAT, (int64_t)value_at,
                                       "general.alignment has type %s, not an unsigned integer",
                                       hs_gguf_type_str(v->type));
            }
            if (v->u64 == 0 || (v->u64 & (v->u64 - 1)) != 0 || v->u64 > GGUF_MAX_ALIGNMENT) {
                return hs_error_set_at(err, HS_E_FORMAT, (int64_t)value_at,
                                       "general.alignment %" PRIu64
                                       " is not a non-zero power of two (at most 2^30)",
                                       v->u64);
            }
            g->alignment = (uint32_t)v->u64;
        }
    }

    /* ---- tensor infos ---- */
    g->tensors = arena_alloc(&g->arena, (size_t)n_tensors * sizeof(*g->tensors));
    ti_at = malloc(((size_t)n_tensors + 1) * sizeof(*ti_at));
    if (!g->tensors || !ti_at || index_init(&g->tensor_index, (int64_t)n_tensors) != HS_OK) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory for %" PRIu64 " tensors", n_tensors);
        goto fail;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        struct hs_gguf_tensor *t = &g->tensors[i];
        struct hs_gguf_str raw;
        size_t at = r.pos;
        ti_at[i] = at;
        st = rd_name(&r, &t->name, &raw, "tensor name");
        if (st != HS_OK) {
            goto fail;
        }
        if (index_find(&g->tensor_index, g, tensor_name_at, t->name, (size_t)raw.len, (int64_t)i) >=
            0) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)at, "duplicate tensor name '%s'",
                                 t->name);
            goto fail;
        }
        g->n_tensors = (int64_t)i + 1;
        size_t dims_at = r.pos;
        if ((st = rd_u32(&r, &t->n_dims, "tensor n_dims")) != HS_OK) {
            err_context(err, st, "tensor", t->name);
            goto fail;
        }
        if (t->n_dims > 4) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)dims_at,
                                 "tensor '%s': n_dims %" PRIu32 " is more than 4", t->name,
                                 t->n_dims);
            goto fail;
        }
        int64_t n_rows = 1;
        for (uint32_t d = 0; d < 4; d++) {
            t->ne[d] = 1;
        }
        for (uint32_t d = 0; d < t->n_dims; d++) {
            size_t ne_at = r.pos;
            uint64_t ne;
            if ((st = rd_u64(&r, &ne, "tensor dimension")) != HS_OK) {
                err_context(err, st, "tensor", t->name);
                goto fail;
            }
            if (ne == 0 || ne > INT64_MAX) {
                st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)ne_at,
                                     "tensor '%s': ne[%" PRIu32 "] = %" PRId64 " is not positive",
                                     t->name, d, (int64_t)ne);
                goto fail;
            }
            t->ne[d] = (int64_t)ne;
            if (d > 0 && __builtin_mul_overflow(n_rows, t->ne[d], &n_rows)) {
                st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)ne_at,
                                     "tensor '%s': element count overflows", t->name);
                goto fail;
            }
        }
        if (__builtin_mul_overflow(n_rows, t->ne[0], &(int64_t){0})) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)dims_at,
                                 "tensor '%s': element count overflows", t->name);
            goto fail;
        }
        size_t type_at = r.pos;
        uint32_t type;
        if ((st = rd_u32(&r, &type, "tensor type")) != HS_OK) {
            err_context(err, st, "tensor", t->name);
            goto fail;
        }
        if (!hs_type_is_known(type)) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)type_at,
                                 "tensor '%s': unknown type id %" PRIu32, t->name, type);
            goto fail;
        }
        t->type = (enum hs_type)type;
        const struct hs_type_traits *tr = hs_type_traits(t->type);
        if (t->ne[0] % tr->blck_size != 0) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)dims_at,
                                 "tensor '%s': ne[0] = %" PRId64
                                 " is not a multiple of the %s block size %" PRId64,
                                 t->name, t->ne[0], tr->name, tr->blck_size);
            goto fail;
        }
        size_t row = hs_type_row_size(t->type, t->ne[0]);
        if (row == 0 || (uint64_t)n_rows > SIZE_MAX ||
            hs_mul_overflow(row, (size_t)n_rows, &t->size_bytes)) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)dims_at,
                                 "tensor '%s': size in bytes overflows", t->name);
            goto fail;
        }
        size_t off_at = r.pos;
        if ((st = rd_u64(&r, &t->offset, "tensor offset")) != HS_OK) {
            err_context(err, st, "tensor", t->name);
            goto fail;
        }
        if (t->offset % g->alignment != 0) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)off_at,
                                 "tensor '%s': offset %" PRIu64 " is not aligned to %" PRIu32,
                                 t->name, t->offset, g->alignment);
            goto fail;
        }
        ti_at[i] = off_at;
    }

    /* ---- data section ---- */
    g->data_offset = hs_align_up(r.pos, g->alignment);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct hs_gguf_tensor *t = &g->tensors[i];
        size_t avail = g->size > g->data_offset ? g->size - g->data_offset : 0;
        if (t->offset > avail || t->size_bytes > avail - (size_t)t->offset) {
            st = hs_error_set_at(err, HS_E_FORMAT, (int64_t)ti_at[i],
                                 "tensor '%s': data at offset %" PRIu64 " + %zu bytes runs past "
                                 "the end of the file (%zu bytes of data)",
                                 t->name, t->offset, t->size_bytes, avail);
            goto fail;
        }
        t->data = g->base + g->data_offset + t->offset;
    }
    free(ti_at);
    return HS_OK;

fail:
    free(ti_at);
    return st;
}

static hs_status open_common(struct hs_gguf *g, struct hs_gguf **out, struct hs_error *err)
{
    hs_status st = parse_header(g, err);
    if (st != HS_OK) {
        hs_gguf_close(g);
        return st;
    }
    *out = g;
    return HS_OK;
}

hs_status hs_gguf_open_memory(const void *data, size_t size, struct hs_gguf **out,
                              struct hs_error *err)
{
    *out = NULL;
    if (!data && size > 0) {
        return hs_error_set(err, HS_E_INVAL, "NULL buffer of %zu bytes", size);
    }
    struct hs_gguf *g = calloc(1, sizeof(*g));
    if (!g) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    g->base = data;
    g->size = size;
    return open_common(g, out, err);
}

/* Files of at least this size are read into transparent huge pages (see hs_gguf_open). */
#define HUGE_PAGE     ((size_t)2 << 20)
#define HUGE_MIN_FILE (4 * HUGE_PAGE)

/* Whether to read a file of size bytes into huge pages: not with HS_MMAP=1, not when the
 * kernel's THP mode is "never", not for small files (nothing to gain) nor for files over half
 * the machine's memory (the page cache holds a second copy while we read). */
static bool want_huge_pages(size_t size)
{
    const char *e = getenv("HS_MMAP");
    if ((e && strcmp(e, "0") != 0) || size < HUGE_MIN_FILE) {
        return false;
    }
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && size > (size_t)pages * (size_t)page / 2) {
        return false;
    }
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) {
        return false;
    }
    char mode[128] = "";
    const bool ok = fgets(mode, sizeof(mode), f) != NULL;
    fclose(f);
    return ok && strstr(mode, "[never]") == NULL;
}

/* size bytes of fd read into anonymous memory on 2 MiB-aligned transparent huge pages, then made
 * read-only; *len gets the mapping's length. NULL (errno set) if it cannot be mapped or read. */
static void *read_huge(int fd, size_t size, size_t *len)
{
    const size_t n = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    char *a = mmap(NULL, n + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) {
        return NULL;
    }
    /* Keep the 2 MiB-aligned n bytes inside: a huge page needs an aligned virtual range. */
    char *p = (char *)(((uintptr_t)a + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > a) {
        munmap(a, (size_t)(p - a));
    }
    if (p + n < a + n + HUGE_PAGE) {
        munmap(p + n, (size_t)(a + n + HUGE_PAGE - (p + n)));
    }
    madvise(p, n, MADV_HUGEPAGE); /* advice: an error only means small pages */
    size_t off = 0;
    while (off < size) {
        const ssize_t k = pread(fd, p + off, size - off, (off_t)off);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            const int e = k < 0 ? errno : EIO;
            munmap(p, n);
            errno = e;
            return NULL;
        }
        off += (size_t)k;
    }
    if (mprotect(p, n, PROT_READ) != 0) {
        const int e = errno;
        munmap(p, n);
        errno = e;
        return NULL;
    }
    *len = n;
    return p;
}

hs_status hs_gguf_open(const char *path, struct hs_gguf **out, struct hs_error *err)
{
    struct hs_gguf *g = NULL;
    struct stat sb;
    hs_status st;
    *out = NULL;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return hs_error_set(err, HS_E_IO, "cannot open '%s': %s", path, strerror(errno));
    }
    if (fstat(fd, &sb) != 0) {
        st = hs_error_set(err, HS_E_IO, "cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = hs_error_set(err, HS_E_IO, "cannot read '%s': is a directory", path);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = hs_error_set(err, HS_E_IO, "cannot read '%s': not a regular file", path);
        goto fail;
    }
    if (sb.st_size == 0) {
        st =
            hs_error_set_at(err, HS_E_FORMAT, 0, "'%s': file is empty, too small to be GGUF", path);
        goto fail;
    }
    g = calloc(1, sizeof(*g));
    if (!g) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto fail;
    }
    g->size = (size_t)sb.st_size;
    /* Where the copy cannot be made (no memory, a read error), the file mapping serves. */
    if (want_huge_pages(g->size) && (g->map = read_huge(fd, g->size, &g->map_size)) != NULL) {
        g->backing = HS_GGUF_HUGE_PAGES;
    } else {
        g->map_size = g->size;
        g->map = mmap(NULL, g->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (g->map == MAP_FAILED) {
            g->map = NULL;
            st = hs_error_set(err, HS_E_IO, "cannot mmap '%s': %s", path, strerror(errno));
            goto fail;
        }
        g->backing = HS_GGUF_FILE_MAP;
    }
    close(fd);
    g->base = g->map;
    return open_common(g, out, err);

fail:
    free(g);
    close(fd);
    return st;
}

void hs_gguf_close(struct hs_gguf *g)
{
    if (!g) {
        return;
    }
    if (g->map) {
        munmap(g->map, g->map_size);
    }
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    arena_free(&g->arena);
    free(g);
}

/* ======================================================================================== */
/* Accessors. */

uint32_t hs_gguf_version(const struct hs_gguf *g)
{
    return g->version;
}

uint32_t hs_gguf_alignment(const struct hs_gguf *g)
{
    return g->alignment;
}

size_t hs_gguf_data_offset(const struct hs_gguf *g)
{
    return g->data_offset;
}

size_t hs_gguf_file_size(const struct hs_gguf *g)
{
    return g->size;
}

enum hs_gguf_backing hs_gguf_backing(const struct hs_gguf *g)
{
    return g->backing;
}

int64_t hs_gguf_n_kv(const struct hs_gguf *g)
{
    return g->n_kv;
}

const char *hs_gguf_kv_key(const struct hs_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

const struct hs_gguf_value *hs_gguf_kv_value(const struct hs_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? &g->kv[i].value : NULL;
}

const struct hs_gguf_value *hs_gguf_get(const struct hs_gguf *g, const char *key)
{
    if (g->n_kv == 0) {
        return NULL;
    }
    int64_t i = index_find(&g->kv_index, g, kv_name_at, key, strlen(key), -1);
    return i >= 0 ? &g->kv[i].value : NULL;
}

hs_status hs_gguf_get_int(const struct hs_gguf *g, const char *key, int64_t *out)
{
    const struct hs_gguf_value *v = hs_gguf_get(g, key);
    if (!v) {
        return HS_E_NOENT;
    }
    if (!is_int_type(v->type)) {
        return HS_E_FORMAT;
    }
    if (v->type == HS_GGUF_TYPE_UINT64 && v->u64 > INT64_MAX) {
        return HS_E_RANGE;
    }
    *out = is_unsigned_type(v->type) ? (int64_t)v->u64 : v->i64;
    return HS_OK;
}

hs_status hs_gguf_get_float(const struct hs_gguf *g, const char *key, double *out)
{
    const struct hs_gguf_value *v = hs_gguf_get(g, key);
    if (!v) {
        return HS_E_NOENT;
    }
    if (v->type != HS_GGUF_TYPE_FLOAT32 && v->type != HS_GGUF_TYPE_FLOAT64) {
        return HS_E_FORMAT;
    }
    *out = v->f64;
    return HS_OK;
}

hs_status hs_gguf_get_bool(const struct hs_gguf *g, const char *key, bool *out)
{
    const struct hs_gguf_value *v = hs_gguf_get(g, key);
    if (!v) {
        return HS_E_NOENT;
    }
    if (v->type != HS_GGUF_TYPE_BOOL) {
        return HS_E_FORMAT;
    }
    *out = v->b;
    return HS_OK;
}

hs_status hs_gguf_get_str(const struct hs_gguf *g, const char *key, struct hs_gguf_str *out)
{
    const struct hs_gguf_value *v = hs_gguf_get(g, key);
    if (!v) {
        return HS_E_NOENT;
    }
    if (v->type != HS_GGUF_TYPE_STRING) {
        return HS_E_FORMAT;
    }
    *out = v->str;
    return HS_OK;
}

hs_status hs_gguf_get_arr(const struct hs_gguf *g, const char *key, enum hs_gguf_type elem,
                          const struct hs_gguf_value **out)
{
    const struct hs_gguf_value *v = hs_gguf_get(g, key);
    if (!v) {
        return HS_E_NOENT;
    }
    if (v->type != HS_GGUF_TYPE_ARRAY || (elem != HS_GGUF_TYPE_COUNT && v->arr.type != elem)) {
        return HS_E_FORMAT;
    }
    *out = v;
    return HS_OK;
}

/* Float to integer, saturating; NaN gives 0 (a plain cast is undefined out of range). */
static int64_t float_to_int(double x)
{
    if (x != x) {
        return 0;
    }
    if (x >= 0x1p63) {
        return INT64_MAX;
    }
    if (x < -0x1p63) {
        return INT64_MIN;
    }
    return (int64_t)x;
}

int64_t hs_gguf_arr_get_int(const struct hs_gguf_value *arr, uint64_t i)
{
    const enum hs_gguf_type t = arr->arr.type;
    const size_t es = hs_gguf_type_size(t);
    if (!es) {
        return 0;
    }
    const uint64_t bits = scalar_bits((const uint8_t *)arr->arr.data + i * es, es);
    if (t == HS_GGUF_TYPE_FLOAT32 || t == HS_GGUF_TYPE_FLOAT64) {
        return float_to_int(scalar_float(bits, t));
    }
    if ((is_unsigned_type(t) || t == HS_GGUF_TYPE_BOOL) && es < 8) {
        return (int64_t)bits; /* BOOL: its byte */
    }
    return scalar_signed(bits, es); /* UINT64: the int64_t of its bits */
}

double hs_gguf_arr_get_float(const struct hs_gguf_value *arr, uint64_t i)
{
    const enum hs_gguf_type t = arr->arr.type;
    if (t == HS_GGUF_TYPE_FLOAT32 || t == HS_GGUF_TYPE_FLOAT64 || t == HS_GGUF_TYPE_UINT64) {
        const size_t es = hs_gguf_type_size(t);
        const uint64_t bits = scalar_bits((const uint8_t *)arr->arr.data + i * es, es);
        return t == HS_GGUF_TYPE_UINT64 ? (double)bits : scalar_float(bits, t);
    }
    return (double)hs_gguf_arr_get_int(arr, i);
}

int64_t hs_gguf_n_tensors(const struct hs_gguf *g)
{
    return g->n_tensors;
}

const struct hs_gguf_tensor *hs_gguf_tensor(const struct hs_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct hs_gguf_tensor *hs_gguf_find_tensor(const struct hs_gguf *g, const char *name)
{
    if (g->n_tensors == 0) {
        return NULL;
    }
    int64_t i = index_find(&g->tensor_index, g, tensor_name_at, name, strlen(name), -1);
    return i >= 0 ? &g->tensors[i] : NULL;
}
