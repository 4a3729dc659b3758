/* libFuzzer target: the GGUF reader on arbitrary bytes. On success every key, value (nested
 * arrays included) and tensor is walked and touched, so a pointer the reader got wrong is read
 * under ASan. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/gguf/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t acc = 0;
    if (n > 0) {
        acc += b[0] + b[n - 1];
    }
    sink += acc;
}

static void walk_value(const struct hs_gguf_value *v, int depth)
{
    if (depth > 64) {
        __builtin_trap(); /* the reader promised a depth limit */
    }
    switch (v->type) {
    case HS_GGUF_TYPE_STRING:
        touch(v->str.data, (size_t)v->str.len);
        break;
    case HS_GGUF_TYPE_ARRAY:
        if (v->arr.type == HS_GGUF_TYPE_STRING) {
            const struct hs_gguf_str *s = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) {
                touch(s[i].data, (size_t)s[i].len);
            }
        } else if (v->arr.type == HS_GGUF_TYPE_ARRAY) {
            const struct hs_gguf_value *e = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) {
                walk_value(&e[i], depth + 1);
            }
        } else {
            for (uint64_t i = 0; i < v->arr.n; i++) {
                sink += (uint64_t)hs_gguf_arr_get_int(v, i);
                double f = hs_gguf_arr_get_float(v, i);
                sink += f == f ? 1 : 0;
            }
        }
        break;
    default:
        sink += v->u64;
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hs_gguf *g = NULL;
    struct hs_error err;
    if (hs_gguf_open_memory(data, size, &g, &err) != HS_OK) {
        if (g != NULL || err.offset < -1 || (err.offset >= 0 && (size_t)err.offset > size)) {
            __builtin_trap();
        }
        return 0;
    }
    for (int64_t i = 0; i < hs_gguf_n_kv(g); i++) {
        const char *key = hs_gguf_kv_key(g, i);
        const struct hs_gguf_value *v = hs_gguf_kv_value(g, i);
        if (hs_gguf_get(g, key) != v) {
            __builtin_trap(); /* keys are unique, so lookup finds this one */
        }
        touch(key, strlen(key) + 1);
        walk_value(v, 0);
        int64_t iv;
        double dv;
        bool bv;
        struct hs_gguf_str sv;
        const struct hs_gguf_value *av;
        sink += (uint64_t)hs_gguf_get_int(g, key, &iv) + (uint64_t)hs_gguf_get_float(g, key, &dv) +
                (uint64_t)hs_gguf_get_bool(g, key, &bv) + (uint64_t)hs_gguf_get_str(g, key, &sv) +
                (uint64_t)hs_gguf_get_arr(g, key, HS_GGUF_TYPE_COUNT, &av);
    }
    size_t data_off = hs_gguf_data_offset(g);
    for (int64_t i = 0; i < hs_gguf_n_tensors(g); i++) {
        const struct hs_gguf_tensor *t = hs_gguf_tensor(g, i);
        if (hs_gguf_find_tensor(g, t->name) != t || t->n_dims > 4 ||
            (const uint8_t *)t->data != data + data_off + t->offset ||
            data_off + t->offset + t->size_bytes > size) {
            __builtin_trap();
        }
        touch(t->name, strlen(t->name) + 1);
        touch(t->data, t->size_bytes);
    }
    hs_gguf_close(g);
    return 0;
}
