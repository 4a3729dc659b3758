#include <criterion/criterion.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf/gguf.h"

/* ---- helpers ---- */

static uint8_t *copy_bytes(const void *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    cr_assert_not_null(c);
    memcpy(c, p, n);
    return c;
}

static void fill_random(struct hs_rng *rng, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(hs_rng_next(rng) >> 24);
    }
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Byte offset of the (unique) string s in buf; fails the test when absent. */
static size_t find(const uint8_t *buf, size_t size, const char *s)
{
    const uint8_t *p = memmem(buf, size, s, strlen(s));
    cr_assert_not_null(p, "'%s' not found in the file", s);
    cr_assert_null(memmem(p + 1, size - (size_t)(p + 1 - buf), s, strlen(s)), "'%s' twice", s);
    return (size_t)(p - buf);
}

/* ======================================================================================== */
/* (1) writer -> reader round trip */

struct tensor_case {
    const char *name;
    enum hs_type type;
    uint32_t n_dims;
    int64_t ne[4];
};

static const struct tensor_case round_trip_tensors[] = {
    {"t.f32", HS_TYPE_F32, 2, {8, 3, 1, 1}},     {"t.f16", HS_TYPE_F16, 1, {17, 1, 1, 1}},
    {"t.q8_0", HS_TYPE_Q8_0, 2, {64, 2, 1, 1}},  {"t.q4_k", HS_TYPE_Q4_K, 3, {256, 2, 2, 1}},
    {"t.q4_1", HS_TYPE_Q4_1, 1, {32, 1, 1, 1}},  {"t.bf16", HS_TYPE_BF16, 4, {4, 2, 2, 3}},
    {"t.q6_k", HS_TYPE_Q6_K, 2, {512, 1, 1, 1}},
};

/* Reference size from the GGML block layouts, written out here rather than taken from dtype. */
static size_t ref_tensor_bytes(const struct tensor_case *tc)
{
    int64_t n = tc->ne[0] * tc->ne[1] * tc->ne[2] * tc->ne[3];
    switch (tc->type) {
    case HS_TYPE_F32:
        return (size_t)n * 4;
    case HS_TYPE_F16:
    case HS_TYPE_BF16:
        return (size_t)n * 2;
    case HS_TYPE_Q8_0:
        return (size_t)n / 32 * 34;
    case HS_TYPE_Q4_1:
        return (size_t)n / 32 * 20;
    case HS_TYPE_Q4_K:
        return (size_t)n / 256 * 144;
    case HS_TYPE_Q6_K:
        return (size_t)n / 256 * 210;
    default:
        cr_assert_fail("no reference size");
        return 0;
    }
}

struct rt_file {
    void *data;
    size_t size;
    uint8_t *tensor_data[HS_ARRAY_LEN(round_trip_tensors)];
};

static const uint8_t arr_u8[] = {0, 1, 255};
static const int8_t arr_i8[] = {-128, 0, 127};
static const uint16_t arr_u16[] = {0, 65535, 1234};
static const int16_t arr_i16[] = {-32768, 32767, -1};
static const uint32_t arr_u32[] = {0, UINT32_MAX, 77};
static const int32_t arr_i32[] = {INT32_MIN, INT32_MAX, -7};
static const float arr_f32[] = {1.5f, -0.25f, 3.0e38f};
static const uint8_t arr_bool[] = {1, 0, 1};
static const uint64_t arr_u64[] = {0, UINT64_MAX, 1ull << 40};
static const int64_t arr_i64[] = {INT64_MIN, INT64_MAX, -3};
static const double arr_f64[] = {0.1, -1e300, 2.5};
static const char *const arr_strs[] = {"hello", "", "w\xc3\xb6rld \xe2\x96\x81", "<0x0A>"};

static void build_round_trip(struct rt_file *f, uint32_t alignment)
{
    struct hs_gguf_writer *w = NULL;
    struct hs_rng rng;
    hs_rng_seed(&rng, 42);
    cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);

    if (alignment) {
        cr_assert_eq(hs_gguf_writer_set_u32(w, "general.alignment", alignment), HS_OK);
    }
    cr_assert_eq(hs_gguf_writer_set_str(w, "general.architecture", "llama"), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_u32(w, "v.u32", 4000000000u), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_i32(w, "v.i32", -123456), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_u64(w, "v.u64", UINT64_MAX - 5), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_f32(w, "v.f32", 1e-5f), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_bool(w, "v.bool", true), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_str(w, "v.str", "caf\xc3\xa9"), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_str(w, "v.empty", ""), HS_OK);

    struct hs_gguf_value v = {.type = HS_GGUF_TYPE_UINT8, .u64 = 200};
    cr_assert_eq(hs_gguf_writer_set_value(w, "v.u8", &v), HS_OK);
    v = (struct hs_gguf_value){.type = HS_GGUF_TYPE_INT8, .i64 = -100};
    cr_assert_eq(hs_gguf_writer_set_value(w, "v.i8", &v), HS_OK);
    v = (struct hs_gguf_value){.type = HS_GGUF_TYPE_UINT16, .u64 = 60000};
    cr_assert_eq(hs_gguf_writer_set_value(w, "v.u16", &v), HS_OK);
    v = (struct hs_gguf_value){.type = HS_GGUF_TYPE_INT16, .i64 = -30000};
    cr_assert_eq(hs_gguf_writer_set_value(w, "v.i16", &v), HS_OK);
    v = (struct hs_gguf_value){.type = HS_GGUF_TYPE_INT64, .i64 = INT64_MIN + 1};
    cr_assert_eq(hs_gguf_writer_set_value(w, "v.i64", &v), HS_OK);
    v = (struct hs_gguf_value){.type = HS_GGUF_TYPE_FLOAT64, .f64 = -2.718281828459045};
    cr_assert_eq(hs_gguf_writer_set_value(w, "v.f64", &v), HS_OK);

    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.u8", HS_GGUF_TYPE_UINT8, arr_u8, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.i8", HS_GGUF_TYPE_INT8, arr_i8, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.u16", HS_GGUF_TYPE_UINT16, arr_u16, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.i16", HS_GGUF_TYPE_INT16, arr_i16, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.u32", HS_GGUF_TYPE_UINT32, arr_u32, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.i32", HS_GGUF_TYPE_INT32, arr_i32, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.f32", HS_GGUF_TYPE_FLOAT32, arr_f32, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.bool", HS_GGUF_TYPE_BOOL, arr_bool, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.u64", HS_GGUF_TYPE_UINT64, arr_u64, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.i64", HS_GGUF_TYPE_INT64, arr_i64, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.f64", HS_GGUF_TYPE_FLOAT64, arr_f64, 3), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr(w, "a.empty", HS_GGUF_TYPE_INT32, NULL, 0), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr_str(w, "a.str", arr_strs, 4), HS_OK);

    /* [[i32 x3], [str x2], [[f32 x1], []]] */
    static const int32_t in_i32[] = {1, -2, 3};
    static const float in_f32[] = {0.5f};
    struct hs_gguf_str in_strs[] = {{"ab", 2}, {"", 0}};
    struct hs_gguf_value deepest[] = {
        {.type = HS_GGUF_TYPE_ARRAY, .arr = {HS_GGUF_TYPE_FLOAT32, 1, in_f32}},
        {.type = HS_GGUF_TYPE_ARRAY, .arr = {HS_GGUF_TYPE_UINT8, 0, NULL}},
    };
    struct hs_gguf_value inner[] = {
        {.type = HS_GGUF_TYPE_ARRAY, .arr = {HS_GGUF_TYPE_INT32, 3, in_i32}},
        {.type = HS_GGUF_TYPE_ARRAY, .arr = {HS_GGUF_TYPE_STRING, 2, in_strs}},
        {.type = HS_GGUF_TYPE_ARRAY, .arr = {HS_GGUF_TYPE_ARRAY, 2, deepest}},
    };
    v = (struct hs_gguf_value){.type = HS_GGUF_TYPE_ARRAY, .arr = {HS_GGUF_TYPE_ARRAY, 3, inner}};
    cr_assert_eq(hs_gguf_writer_set_value(w, "a.nested", &v), HS_OK);

    /* replacing keeps one entry and the new value */
    cr_assert_eq(hs_gguf_writer_set_u32(w, "v.replaced", 1), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_str(w, "v.replaced", "second"), HS_OK);

    cr_assert_eq(hs_gguf_writer_set_u32(w, "", 1), HS_E_INVAL);
    cr_assert_eq(hs_gguf_writer_set_u32(w, "bad\xff", 1), HS_E_INVAL);

    for (size_t i = 0; i < HS_ARRAY_LEN(round_trip_tensors); i++) {
        const struct tensor_case *tc = &round_trip_tensors[i];
        size_t n = ref_tensor_bytes(tc);
        f->tensor_data[i] = malloc(n);
        cr_assert_not_null(f->tensor_data[i]);
        fill_random(&rng, f->tensor_data[i], n);
        cr_assert_eq(
            hs_gguf_writer_add_tensor(w, tc->name, tc->type, tc->n_dims, tc->ne, f->tensor_data[i]),
            HS_OK, "%s", tc->name);
    }
    int64_t bad_ne[2] = {48, 1};
    cr_assert_eq(hs_gguf_writer_add_tensor(w, "t.f32", HS_TYPE_F32, 1, bad_ne, arr_u8), HS_E_INVAL,
                 "duplicate tensor name");
    cr_assert_eq(hs_gguf_writer_add_tensor(w, "t.bad", HS_TYPE_Q8_0, 1, bad_ne, arr_u8), HS_E_INVAL,
                 "48 is not a multiple of 32");

    cr_assert_eq(hs_gguf_writer_write_memory(w, &f->data, &f->size), HS_OK);
    hs_gguf_writer_destroy(w);
}

static void free_round_trip(struct rt_file *f)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(round_trip_tensors); i++) {
        free(f->tensor_data[i]);
    }
    free(f->data);
}

static void check_int_arr(const struct hs_gguf *g, const char *key, enum hs_gguf_type t,
                          const int64_t *want, size_t n)
{
    const struct hs_gguf_value *a = NULL;
    cr_assert_eq(hs_gguf_get_arr(g, key, t, &a), HS_OK, "%s", key);
    cr_assert_eq(a->arr.n, n, "%s", key);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(hs_gguf_arr_get_int(a, i), want[i], "%s[%zu]", key, i);
    }
}

static void check_round_trip(const struct hs_gguf *g, const struct rt_file *f, uint32_t align)
{
    int64_t iv = 0;
    double dv = 0;
    bool bv = false;
    struct hs_gguf_str sv;

    cr_assert_eq(hs_gguf_version(g), 3);
    cr_assert_eq(hs_gguf_alignment(g), align);
    cr_assert_eq(hs_gguf_n_kv(g), 29 + (align != 32 ? 1 : 0));
    cr_assert_eq(hs_gguf_get_str(g, "general.architecture", &sv), HS_OK);
    cr_assert(hs_gguf_str_eq(sv, "llama"));
    cr_assert_eq(hs_gguf_get_int(g, "v.u32", &iv), HS_OK);
    cr_assert_eq(iv, 4000000000);
    cr_assert_eq(hs_gguf_get_int(g, "v.i32", &iv), HS_OK);
    cr_assert_eq(iv, -123456);
    cr_assert_eq(hs_gguf_get(g, "v.u64")->type, HS_GGUF_TYPE_UINT64);
    cr_assert_eq(hs_gguf_get(g, "v.u64")->u64, UINT64_MAX - 5);
    iv = 99;
    cr_assert_eq(hs_gguf_get_int(g, "v.u64", &iv), HS_E_RANGE);
    cr_assert_eq(iv, 99);
    cr_assert_eq(hs_gguf_get_float(g, "v.f32", &dv), HS_OK);
    cr_assert_eq((float)dv, 1e-5f);
    cr_assert_eq(hs_gguf_get_bool(g, "v.bool", &bv), HS_OK);
    cr_assert(bv);
    cr_assert_eq(hs_gguf_get_str(g, "v.str", &sv), HS_OK);
    cr_assert(hs_gguf_str_eq(sv, "caf\xc3\xa9"));
    cr_assert_eq(hs_gguf_get_str(g, "v.empty", &sv), HS_OK);
    cr_assert_eq(sv.len, 0);
    cr_assert_eq(hs_gguf_get_int(g, "v.u8", &iv), HS_OK);
    cr_assert_eq(iv, 200);
    cr_assert_eq(hs_gguf_get(g, "v.u8")->type, HS_GGUF_TYPE_UINT8);
    cr_assert_eq(hs_gguf_get_int(g, "v.i8", &iv), HS_OK);
    cr_assert_eq(iv, -100);
    cr_assert_eq(hs_gguf_get_int(g, "v.u16", &iv), HS_OK);
    cr_assert_eq(iv, 60000);
    cr_assert_eq(hs_gguf_get_int(g, "v.i16", &iv), HS_OK);
    cr_assert_eq(iv, -30000);
    cr_assert_eq(hs_gguf_get_int(g, "v.i64", &iv), HS_OK);
    cr_assert_eq(iv, INT64_MIN + 1);
    cr_assert_eq(hs_gguf_get_float(g, "v.f64", &dv), HS_OK);
    cr_assert_eq(dv, -2.718281828459045);
    cr_assert_eq(hs_gguf_get_str(g, "v.replaced", &sv), HS_OK);
    cr_assert(hs_gguf_str_eq(sv, "second"));

    /* type mismatches and absence */
    iv = 5;
    cr_assert_eq(hs_gguf_get_int(g, "nope", &iv), HS_E_NOENT);
    cr_assert_eq(iv, 5);
    cr_assert_null(hs_gguf_get(g, "nope"));
    cr_assert_null(hs_gguf_get(g, "v.u3"), "prefix of a key");
    cr_assert_eq(hs_gguf_get_int(g, "v.str", &iv), HS_E_FORMAT);
    cr_assert_eq(hs_gguf_get_float(g, "v.i32", &dv), HS_E_FORMAT);
    cr_assert_eq(hs_gguf_get_bool(g, "v.u8", &bv), HS_E_FORMAT);
    cr_assert_eq(hs_gguf_get_str(g, "a.str", &sv), HS_E_FORMAT);
    const struct hs_gguf_value *a = NULL;
    cr_assert_eq(hs_gguf_get_arr(g, "a.str", HS_GGUF_TYPE_INT32, &a), HS_E_FORMAT);
    cr_assert_eq(hs_gguf_get_arr(g, "v.u8", HS_GGUF_TYPE_COUNT, &a), HS_E_FORMAT);

    /* arrays */
    check_int_arr(g, "a.u8", HS_GGUF_TYPE_UINT8, (int64_t[]){0, 1, 255}, 3);
    check_int_arr(g, "a.i8", HS_GGUF_TYPE_INT8, (int64_t[]){-128, 0, 127}, 3);
    check_int_arr(g, "a.u16", HS_GGUF_TYPE_UINT16, (int64_t[]){0, 65535, 1234}, 3);
    check_int_arr(g, "a.i16", HS_GGUF_TYPE_INT16, (int64_t[]){-32768, 32767, -1}, 3);
    check_int_arr(g, "a.u32", HS_GGUF_TYPE_UINT32, (int64_t[]){0, UINT32_MAX, 77}, 3);
    check_int_arr(g, "a.i32", HS_GGUF_TYPE_INT32, (int64_t[]){INT32_MIN, INT32_MAX, -7}, 3);
    check_int_arr(g, "a.bool", HS_GGUF_TYPE_BOOL, (int64_t[]){1, 0, 1}, 3);
    check_int_arr(g, "a.i64", HS_GGUF_TYPE_INT64, (int64_t[]){INT64_MIN, INT64_MAX, -3}, 3);
    check_int_arr(g, "a.empty", HS_GGUF_TYPE_INT32, NULL, 0);
    cr_assert_eq(hs_gguf_get_arr(g, "a.u64", HS_GGUF_TYPE_UINT64, &a), HS_OK);
    cr_assert_eq((uint64_t)hs_gguf_arr_get_int(a, 1), UINT64_MAX);
    cr_assert_eq((uint64_t)hs_gguf_arr_get_int(a, 2), 1ull << 40);
    cr_assert_eq(hs_gguf_get_arr(g, "a.f32", HS_GGUF_TYPE_FLOAT32, &a), HS_OK);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq((float)hs_gguf_arr_get_float(a, (uint64_t)i), arr_f32[i]);
    }
    /* float elements read as integers truncate and saturate */
    cr_assert_eq(hs_gguf_arr_get_int(a, 0), 1);
    cr_assert_eq(hs_gguf_arr_get_int(a, 1), 0);
    cr_assert_eq(hs_gguf_arr_get_int(a, 2), INT64_MAX);
    cr_assert_eq(hs_gguf_get_arr(g, "a.f64", HS_GGUF_TYPE_FLOAT64, &a), HS_OK);
    cr_assert_eq(hs_gguf_arr_get_int(a, 1), INT64_MIN);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(hs_gguf_arr_get_float(a, (uint64_t)i), arr_f64[i]);
    }
    cr_assert_eq(hs_gguf_get_arr(g, "a.str", HS_GGUF_TYPE_STRING, &a), HS_OK);
    cr_assert_eq(a->arr.n, 4);
    const struct hs_gguf_str *strs = a->arr.data;
    for (int i = 0; i < 4; i++) {
        cr_assert(hs_gguf_str_eq(strs[i], arr_strs[i]), "a.str[%d]", i);
    }

    cr_assert_eq(hs_gguf_get_arr(g, "a.nested", HS_GGUF_TYPE_ARRAY, &a), HS_OK);
    cr_assert_eq(a->arr.n, 3);
    const struct hs_gguf_value *in = a->arr.data;
    cr_assert_eq(in[0].type, HS_GGUF_TYPE_ARRAY);
    cr_assert_eq(in[0].arr.type, HS_GGUF_TYPE_INT32);
    cr_assert_eq(in[0].arr.n, 3);
    cr_assert_eq(hs_gguf_arr_get_int(&in[0], 0), 1);
    cr_assert_eq(hs_gguf_arr_get_int(&in[0], 1), -2);
    cr_assert_eq(hs_gguf_arr_get_int(&in[0], 2), 3);
    cr_assert_eq(in[1].arr.type, HS_GGUF_TYPE_STRING);
    cr_assert_eq(in[1].arr.n, 2);
    const struct hs_gguf_str *is = in[1].arr.data;
    cr_assert(hs_gguf_str_eq(is[0], "ab"));
    cr_assert(hs_gguf_str_eq(is[1], ""));
    cr_assert_eq(in[2].arr.type, HS_GGUF_TYPE_ARRAY);
    cr_assert_eq(in[2].arr.n, 2);
    const struct hs_gguf_value *dp = in[2].arr.data;
    cr_assert_eq(dp[0].arr.type, HS_GGUF_TYPE_FLOAT32);
    cr_assert_eq(dp[0].arr.n, 1);
    cr_assert_eq((float)hs_gguf_arr_get_float(&dp[0], 0), 0.5f);
    cr_assert_eq(dp[1].arr.type, HS_GGUF_TYPE_UINT8);
    cr_assert_eq(dp[1].arr.n, 0);

    /* kv order is insertion order */
    cr_assert_str_eq(hs_gguf_kv_key(g, hs_gguf_n_kv(g) - 1), "v.replaced");
    cr_assert_null(hs_gguf_kv_key(g, hs_gguf_n_kv(g)));

    /* tensors */
    cr_assert_eq(hs_gguf_n_tensors(g), (int64_t)HS_ARRAY_LEN(round_trip_tensors));
    cr_assert_eq(hs_gguf_data_offset(g) % align, 0);
    for (size_t i = 0; i < HS_ARRAY_LEN(round_trip_tensors); i++) {
        const struct tensor_case *tc = &round_trip_tensors[i];
        const struct hs_gguf_tensor *t = hs_gguf_tensor(g, (int64_t)i);
        cr_assert_not_null(t);
        cr_assert_eq(hs_gguf_find_tensor(g, tc->name), t, "%s", tc->name);
        cr_assert_str_eq(t->name, tc->name);
        cr_assert_eq(t->type, tc->type);
        cr_assert_eq(t->n_dims, tc->n_dims);
        for (int d = 0; d < 4; d++) {
            cr_assert_eq(t->ne[d], tc->ne[d], "%s ne[%d]", tc->name, d);
        }
        size_t n = ref_tensor_bytes(tc);
        cr_assert_eq(t->size_bytes, n, "%s", tc->name);
        cr_assert_eq(t->offset % align, 0);
        const uint8_t *expect_at = (const uint8_t *)f->data + hs_gguf_data_offset(g) + t->offset;
        cr_assert_eq((const uint8_t *)t->data, expect_at, "%s", tc->name);
        cr_assert_eq(memcmp(t->data, f->tensor_data[i], n), 0, "%s data", tc->name);
    }
    cr_assert_null(hs_gguf_find_tensor(g, "t.f3"));
    cr_assert_null(hs_gguf_find_tensor(g, "nope"));
}

Test(gguf, round_trip_every_value_type_and_tensor_type)
{
    struct rt_file f = {0};
    struct hs_gguf *g = NULL;
    struct hs_error err;
    build_round_trip(&f, 0);
    /* Exact-size copy so that sanitizers see any read past the end. */
    uint8_t *copy = copy_bytes(f.data, f.size);
    free(f.data);
    f.data = copy;
    cr_assert_eq(hs_gguf_open_memory(f.data, f.size, &g, &err), HS_OK, "%s", err.message);
    check_round_trip(g, &f, 32);
    hs_gguf_close(g);
    free_round_trip(&f);
}

Test(gguf, round_trip_with_alignment_64)
{
    struct rt_file f = {0};
    struct hs_gguf *g = NULL;
    struct hs_error err;
    build_round_trip(&f, 64);
    cr_assert_eq(hs_gguf_open_memory(f.data, f.size, &g, &err), HS_OK, "%s", err.message);
    check_round_trip(g, &f, 64);
    hs_gguf_close(g);
    free_round_trip(&f);
}

Test(gguf, write_file_matches_memory_and_leaves_no_temp_file)
{
    struct rt_file f = {0};
    struct hs_gguf *g = NULL;
    struct hs_error err;
    char dir[] = "/tmp/hs-gguf-test-XXXXXX";
    char path[128];
    build_round_trip(&f, 0);

    struct hs_gguf_writer *w = NULL;
    cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_str(w, "general.architecture", "x"), HS_OK);
    int64_t ne[1] = {8};
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    cr_assert_eq(hs_gguf_writer_add_tensor(w, "w", HS_TYPE_F32, 1, ne, data), HS_OK);

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/out.gguf", dir);
    cr_assert_eq(hs_gguf_writer_write_file(w, path, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_gguf_n_tensors(g), 1);
    cr_assert_eq(memcmp(hs_gguf_tensor(g, 0)->data, data, sizeof(data)), 0);
    hs_gguf_close(g);

    void *mem = NULL;
    size_t mem_size = 0;
    cr_assert_eq(hs_gguf_writer_write_memory(w, &mem, &mem_size), HS_OK);
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp);
    uint8_t *disk = malloc(mem_size + 1);
    cr_assert_eq(fread(disk, 1, mem_size + 1, fp), mem_size, "same length");
    cr_assert_eq(memcmp(disk, mem, mem_size), 0, "same bytes");
    fclose(fp);
    free(disk);
    free(mem);

    /* only out.gguf is in the directory */
    DIR *d = opendir(dir);
    int n_entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            cr_assert_str_eq(e->d_name, "out.gguf");
            n_entries++;
        }
    }
    closedir(d);
    cr_assert_eq(n_entries, 1);

    char bad[160];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/x.gguf", dir);
    cr_assert_eq(hs_gguf_writer_write_file(w, bad, &err), HS_E_IO);
    cr_assert(strstr(err.message, "no/such/dir") != NULL, "%s", err.message);

    unlink(path);
    rmdir(dir);
    hs_gguf_writer_destroy(w);
    free_round_trip(&f);
}

/* ======================================================================================== */
/* (2) damaged files */

/* The base file: two string-ish keys, two u32 keys, a string array, three tensors. */
static void build_base(uint8_t **out, size_t *size)
{
    struct hs_gguf_writer *w = NULL;
    static const char *const strs[] = {"x", "yy"};
    static uint8_t q8[2 * 34];
    static float wa[8], wb[8];
    for (int i = 0; i < 8; i++) {
        wa[i] = (float)i;
        wb[i] = (float)-i;
    }
    memset(q8, 0x11, sizeof(q8));
    cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_str(w, "general.architecture", "llama"), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_u32(w, "general.alignment", 32), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_u32(w, "test.key_a", 1), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_u32(w, "test.key_b", 2), HS_OK);
    cr_assert_eq(hs_gguf_writer_set_arr_str(w, "test.arr", strs, 2), HS_OK);
    cr_assert_eq(hs_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", HS_TYPE_Q8_0, 2,
                                           (int64_t[]){64, 1}, q8),
                 HS_OK);
    cr_assert_eq(hs_gguf_writer_add_tensor(w, "blk.0.w_a", HS_TYPE_F32, 2, (int64_t[]){4, 2}, wa),
                 HS_OK);
    cr_assert_eq(hs_gguf_writer_add_tensor(w, "blk.0.w_b", HS_TYPE_F32, 1, (int64_t[]){8}, wb),
                 HS_OK);
    void *data = NULL;
    cr_assert_eq(hs_gguf_writer_write_memory(w, &data, size), HS_OK);
    hs_gguf_writer_destroy(w);
    *out = data;
}

/* Offsets of fields in the base file, found by searching for the names. */
struct base_layout {
    size_t arch_len;                /* general.architecture value's length field */
    size_t align_type, align_value; /* general.alignment */
    size_t key_a_len, key_a, key_a_type;
    size_t key_b_len, key_b;
    size_t arr_elem_type, arr_n;                                        /* test.arr */
    size_t q_ndims, q_ne0, q_type;                                      /* blk.0.attn_q.weight */
    size_t a_name_len, a_name, a_ndims, a_ne0, a_ne1, a_type, a_offset; /* blk.0.w_a */
    size_t b_name_len, b_name, b_offset;                                /* blk.0.w_b */
    size_t data_offset;
};

static struct base_layout layout_of(const uint8_t *f, size_t size)
{
    struct base_layout l;
    size_t k = find(f, size, "general.architecture");
    l.arch_len = k + strlen("general.architecture") + 4;
    k = find(f, size, "general.alignment");
    l.align_type = k + strlen("general.alignment");
    l.align_value = l.align_type + 4;
    l.key_a = find(f, size, "test.key_a");
    l.key_a_len = l.key_a - 8;
    l.key_a_type = l.key_a + 10;
    l.key_b = find(f, size, "test.key_b");
    l.key_b_len = l.key_b - 8;
    l.arr_elem_type = find(f, size, "test.arr") + 8 + 4;
    l.arr_n = l.arr_elem_type + 4;
    l.q_ndims = find(f, size, "blk.0.attn_q.weight") + strlen("blk.0.attn_q.weight");
    l.q_ne0 = l.q_ndims + 4;
    l.q_type = l.q_ne0 + 16;
    l.a_name = find(f, size, "blk.0.w_a");
    l.a_name_len = l.a_name - 8;
    l.a_ndims = l.a_name + 9;
    l.a_ne0 = l.a_ndims + 4;
    l.a_ne1 = l.a_ne0 + 8;
    l.a_type = l.a_ne1 + 8;
    l.a_offset = l.a_type + 4;
    l.b_name = find(f, size, "blk.0.w_b");
    l.b_name_len = l.b_name - 8;
    l.b_offset = l.b_name + 9 + 4 + 8 + 4;
    l.data_offset = (l.b_offset + 8 + 31) / 32 * 32;
    /* sanity of the layout as the GGUF spec has it, independent of the reader */
    cr_assert_eq(get_le(f + l.key_a_len, 8), 10);
    cr_assert_eq(get_le(f + l.key_a_type, 4), HS_GGUF_TYPE_UINT32);
    cr_assert_eq(get_le(f + l.align_type, 4), HS_GGUF_TYPE_UINT32);
    cr_assert_eq(get_le(f + l.align_value, 4), 32);
    cr_assert_eq(get_le(f + l.arr_elem_type, 4), HS_GGUF_TYPE_STRING);
    cr_assert_eq(get_le(f + l.arr_n, 8), 2);
    cr_assert_eq(get_le(f + l.q_ndims, 4), 2);
    cr_assert_eq(get_le(f + l.q_type, 4), HS_TYPE_Q8_0);
    cr_assert_eq(get_le(f + l.a_ndims, 4), 2);
    cr_assert_eq(get_le(f + l.a_ne1, 8), 2);
    cr_assert_eq(get_le(f + l.a_type, 4), HS_TYPE_F32);
    cr_assert_eq(get_le(f + l.a_offset, 8), 96, "q8_0 64x1 = 68 bytes, padded to 96");
    cr_assert_eq(get_le(f + l.b_offset, 8), 128);
    cr_assert_eq(size, l.data_offset + 128 + 32, "the last tensor ends the file");
    return l;
}

struct damage {
    const char *name;
    hs_status want;
    const char *want_msg; /* substring of the message */
    /* Damages f (size may shrink); returns the expected error offset, or -1 for "any". */
    int64_t (*apply)(uint8_t *f, size_t *size, const struct base_layout *l);
};

#define DAMAGE(fn, body)                                                                           \
    static int64_t fn(uint8_t *f, size_t *size, const struct base_layout *l)                       \
    {                                                                                              \
        (void)f, (void)size, (void)l;                                                              \
        body                                                                                       \
    }

DAMAGE(d_magic, {
    f[0] = 'X';
    return 0;
})
DAMAGE(d_magic_ggml, {
    memcpy(f, "GGML", 4);
    return 0;
})
DAMAGE(d_version1, {
    put_le(f + 4, 1, 4);
    return 4;
})
DAMAGE(d_version99, {
    put_le(f + 4, 99, 4);
    return 4;
})
DAMAGE(d_version_be, {
    put_le(f + 4, 0x03000000, 4);
    return 4;
})
DAMAGE(d_huge_tensors, {
    put_le(f + 8, 1ull << 60, 8);
    return 8;
})
DAMAGE(d_max_tensors, {
    put_le(f + 8, UINT64_MAX, 8);
    return 8;
})
DAMAGE(d_huge_kv, {
    put_le(f + 16, 1ull << 60, 8);
    return 16;
})
DAMAGE(d_kv_one_more, {
    put_le(f + 16, 6, 8);
    return -1;
})
DAMAGE(d_string_past_end, {
    put_le(f + l->arch_len, *size - l->arch_len - 8 + 1, 8);
    return (int64_t)l->arch_len;
})
DAMAGE(d_string_huge, {
    put_le(f + l->arch_len, 1ull << 63, 8);
    return (int64_t)l->arch_len;
})
DAMAGE(d_key_len_huge, {
    put_le(f + l->key_a_len, UINT64_MAX, 8);
    return (int64_t)l->key_a_len;
})
DAMAGE(d_key_empty, {
    put_le(f + l->key_a_len, 0, 8);
    return (int64_t)l->key_a_len;
})
DAMAGE(d_key_utf8, {
    f[l->key_a] = 0xff;
    return (int64_t)l->key_a_len;
})
DAMAGE(d_key_overlong, {
    f[l->key_a] = 0xc0;
    f[l->key_a + 1] = 0xae;
    return (int64_t)l->key_a_len;
})
DAMAGE(d_key_nul, {
    f[l->key_a + 4] = 0;
    return (int64_t)l->key_a_len;
})
DAMAGE(d_dup_key, {
    f[l->key_b + 9] = 'a';
    return (int64_t)l->key_b_len;
})
DAMAGE(d_value_type, {
    put_le(f + l->key_a_type, 13, 4);
    return (int64_t)l->key_a_type;
})
DAMAGE(d_arr_elem_type, {
    put_le(f + l->arr_elem_type, 42, 4);
    return (int64_t)l->arr_elem_type;
})
DAMAGE(d_arr_count, {
    put_le(f + l->arr_n, 1ull << 62, 8);
    return (int64_t)l->arr_n;
})
DAMAGE(d_align0, {
    put_le(f + l->align_value, 0, 4);
    return (int64_t)l->align_value;
})
DAMAGE(d_align3, {
    put_le(f + l->align_value, 3, 4);
    return (int64_t)l->align_value;
})
DAMAGE(d_align_type, {
    put_le(f + l->align_type, HS_GGUF_TYPE_FLOAT32, 4);
    return (int64_t)l->align_value;
})
DAMAGE(d_ndims5, {
    put_le(f + l->a_ndims, 5, 4);
    return (int64_t)l->a_ndims;
})
DAMAGE(d_ne0_zero, {
    put_le(f + l->a_ne0, 0, 8);
    return (int64_t)l->a_ne0;
})
DAMAGE(d_ne1_negative, {
    put_le(f + l->a_ne1, (uint64_t)-1, 8);
    return (int64_t)l->a_ne1;
})
DAMAGE(d_ne_product_overflow, {
    put_le(f + l->a_ne0, 1ull << 40, 8);
    put_le(f + l->a_ne1, 1ull << 40, 8);
    return (int64_t)l->a_ndims;
})
DAMAGE(d_bytes_overflow, {
    put_le(f + l->a_ne0, 1ull << 62, 8);
    put_le(f + l->a_ne1, 1, 8);
    return (int64_t)l->a_ndims;
})
DAMAGE(d_ne_too_big_for_file, {
    put_le(f + l->a_ne1, 1ull << 20, 8);
    return (int64_t)l->a_offset;
})
DAMAGE(d_block_multiple, {
    put_le(f + l->q_ne0, 48, 8);
    return (int64_t)l->q_ndims;
})
DAMAGE(d_type5, {
    put_le(f + l->a_type, 5, 4);
    return (int64_t)l->a_type;
})
DAMAGE(d_type99, {
    put_le(f + l->a_type, 99, 4);
    return (int64_t)l->a_type;
})
DAMAGE(d_misaligned, {
    put_le(f + l->a_offset, 97, 8);
    return (int64_t)l->a_offset;
})
DAMAGE(d_offset_past_end, {
    put_le(f + l->b_offset, 1ull << 40, 8);
    return (int64_t)l->b_offset;
})
DAMAGE(d_offset_wraps, {
    put_le(f + l->b_offset, UINT64_MAX - 31, 8);
    return (int64_t)l->b_offset;
})
DAMAGE(d_data_truncated, {
    *size -= 1;
    return (int64_t)l->b_offset;
})
DAMAGE(d_dup_tensor, {
    f[l->b_name + 8] = 'a';
    return (int64_t)l->b_name_len;
})
DAMAGE(d_tensor_name_utf8, {
    f[l->a_name + 2] = 0x80;
    return (int64_t)l->a_name_len;
})
DAMAGE(d_tensor_name_empty, {
    put_le(f + l->a_name_len, 0, 8);
    return (int64_t)l->a_name_len;
})

static const struct damage damages[] = {
    {"bad magic", HS_E_FORMAT, "magic", d_magic},
    {"legacy GGML magic", HS_E_FORMAT, "magic", d_magic_ggml},
    {"version 1", HS_E_NOTSUP, "version 1", d_version1},
    {"version 99", HS_E_NOTSUP, "99", d_version99},
    {"big-endian version", HS_E_NOTSUP, "big-endian", d_version_be},
    {"tensor count 2^60", HS_E_FORMAT, "tensor count", d_huge_tensors},
    {"tensor count 2^64-1", HS_E_FORMAT, "tensor count", d_max_tensors},
    {"kv count 2^60", HS_E_FORMAT, "metadata count", d_huge_kv},
    {"kv count one too many", HS_E_FORMAT, "", d_kv_one_more},
    {"string length past end", HS_E_FORMAT, "past the end", d_string_past_end},
    {"string length 2^63", HS_E_FORMAT, "past the end", d_string_huge},
    {"key length 2^64-1", HS_E_FORMAT, "metadata key", d_key_len_huge},
    {"empty key", HS_E_FORMAT, "empty", d_key_empty},
    {"invalid UTF-8 key", HS_E_FORMAT, "UTF-8", d_key_utf8},
    {"overlong UTF-8 key", HS_E_FORMAT, "UTF-8", d_key_overlong},
    {"NUL in key", HS_E_FORMAT, "UTF-8", d_key_nul},
    {"duplicate key", HS_E_FORMAT, "duplicate key 'test.key_a'", d_dup_key},
    {"unknown value type", HS_E_FORMAT, "unknown value type 13", d_value_type},
    {"unknown array element type", HS_E_FORMAT, "element type 42", d_arr_elem_type},
    {"array count 2^62", HS_E_FORMAT, "test.arr", d_arr_count},
    {"alignment 0", HS_E_FORMAT, "general.alignment 0", d_align0},
    {"alignment 3", HS_E_FORMAT, "general.alignment 3", d_align3},
    {"alignment as float", HS_E_FORMAT, "general.alignment", d_align_type},
    {"n_dims 5", HS_E_FORMAT, "n_dims 5", d_ndims5},
    {"ne 0", HS_E_FORMAT, "'blk.0.w_a': ne[0] = 0", d_ne0_zero},
    {"ne negative", HS_E_FORMAT, "ne[1] = -1", d_ne1_negative},
    {"ne product overflows", HS_E_FORMAT, "overflows", d_ne_product_overflow},
    {"byte size overflows", HS_E_FORMAT, "overflows", d_bytes_overflow},
    {"shape too big for the file", HS_E_FORMAT, "past the end", d_ne_too_big_for_file},
    {"ne[0] not a block multiple", HS_E_FORMAT, "block size", d_block_multiple},
    {"type id 5", HS_E_FORMAT, "unknown type id 5", d_type5},
    {"type id 99", HS_E_FORMAT, "unknown type id 99", d_type99},
    {"misaligned offset", HS_E_FORMAT, "'blk.0.w_a': offset 97 is not aligned to 32", d_misaligned},
    {"offset past end", HS_E_FORMAT, "'blk.0.w_b'", d_offset_past_end},
    {"offset wraps around", HS_E_FORMAT, "past the end", d_offset_wraps},
    {"data truncated", HS_E_FORMAT, "past the end", d_data_truncated},
    {"duplicate tensor name", HS_E_FORMAT, "duplicate tensor name 'blk.0.w_a'", d_dup_tensor},
    {"invalid UTF-8 tensor name", HS_E_FORMAT, "UTF-8", d_tensor_name_utf8},
    {"empty tensor name", HS_E_FORMAT, "empty", d_tensor_name_empty},
};

Test(gguf, base_file_for_damage_is_valid)
{
    uint8_t *base;
    size_t size;
    struct hs_gguf *g = NULL;
    struct hs_error err;
    build_base(&base, &size);
    struct base_layout l = layout_of(base, size);
    cr_assert_eq(hs_gguf_open_memory(base, size, &g, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_gguf_data_offset(g), l.data_offset);
    cr_assert_eq(hs_gguf_n_tensors(g), 3);
    hs_gguf_close(g);
    free(base);
}

Test(gguf, damaged_files_give_errors_with_offsets)
{
    uint8_t *base;
    size_t base_size;
    build_base(&base, &base_size);
    struct base_layout l = layout_of(base, base_size);
    for (size_t i = 0; i < HS_ARRAY_LEN(damages); i++) {
        const struct damage *d = &damages[i];
        uint8_t *f = copy_bytes(base, base_size);
        size_t size = base_size;
        int64_t want_off = d->apply(f, &size, &l);
        uint8_t *exact = copy_bytes(f, size); /* exact size: overreads trip the sanitizer */
        free(f);
        struct hs_gguf *g = (struct hs_gguf *)(uintptr_t)1;
        struct hs_error err = {0};
        hs_status st = hs_gguf_open_memory(exact, size, &g, &err);
        cr_assert_eq(st, d->want, "%s: status %s (%s)", d->name, hs_status_name(st), err.message);
        cr_assert_null(g, "%s: *out stays NULL", d->name);
        cr_assert_eq(err.status, d->want, "%s", d->name);
        cr_assert(strstr(err.message, d->want_msg) != NULL, "%s: message '%s' lacks '%s'", d->name,
                  err.message, d->want_msg);
        if (want_off >= 0) {
            cr_assert_eq(err.offset, want_off, "%s: offset %lld, want %lld (%s)", d->name,
                         (long long)err.offset, (long long)want_off, err.message);
        } else {
            cr_assert(err.offset >= 0 && (size_t)err.offset <= size, "%s: offset %lld", d->name,
                      (long long)err.offset);
        }
        cr_assert(strstr(err.message, "byte offset") != NULL, "%s: %s", d->name, err.message);
        free(exact);
    }
    free(base);
}

Test(gguf, every_truncation_fails_cleanly)
{
    uint8_t *base;
    size_t base_size;
    build_base(&base, &base_size);
    struct base_layout l = layout_of(base, base_size);
    for (size_t len = 0; len < base_size; len++) {
        uint8_t *f = copy_bytes(base, len);
        struct hs_gguf *g = NULL;
        struct hs_error err = {0};
        hs_status st = hs_gguf_open_memory(f, len, &g, &err);
        cr_assert_eq(st, HS_E_FORMAT, "length %zu: %s", len, hs_status_name(st));
        cr_assert_null(g);
        cr_assert(err.offset >= 0 && (size_t)err.offset <= len, "length %zu: offset %lld", len,
                  (long long)err.offset);
        if (len <= l.data_offset && len >= 24) {
            /* inside the header the error points at the field cut short, or at the tensor
             * whose data is missing */
            cr_assert(strstr(err.message, "left") || strstr(err.message, "past the end"),
                      "length %zu: %s", len, err.message);
        }
        free(f);
    }
    free(base);
}

/* A key whose value nests arrays `levels` deep, the innermost an empty u8 array. */
static uint8_t *nested_file(int levels, size_t *size, size_t *value_at)
{
    size_t cap = 64 + (size_t)levels * 12;
    uint8_t *f = calloc(1, cap);
    size_t p = 0;
    memcpy(f, "GGUF", 4);
    put_le(f + 4, 3, 4);
    put_le(f + 8, 0, 8);
    put_le(f + 16, 1, 8);
    p = 24;
    put_le(f + p, 4, 8);
    memcpy(f + p + 8, "bomb", 4);
    p += 12;
    put_le(f + p, HS_GGUF_TYPE_ARRAY, 4);
    p += 4;
    *value_at = p;
    for (int i = 0; i < levels - 1; i++) {
        put_le(f + p, HS_GGUF_TYPE_ARRAY, 4);
        put_le(f + p + 4, 1, 8);
        p += 12;
    }
    put_le(f + p, HS_GGUF_TYPE_UINT8, 4);
    put_le(f + p + 4, 0, 8);
    p += 12;
    *size = p;
    return f;
}

Test(gguf, nested_array_depth_is_limited)
{
    struct hs_gguf *g = NULL;
    struct hs_error err;
    size_t size, value_at;

    uint8_t *f = nested_file(8, &size, &value_at);
    cr_assert_eq(hs_gguf_open_memory(f, size, &g, &err), HS_OK, "8 levels: %s", err.message);
    const struct hs_gguf_value *v = hs_gguf_get(g, "bomb");
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(v->type, HS_GGUF_TYPE_ARRAY);
        cr_assert_eq(v->arr.type, HS_GGUF_TYPE_ARRAY);
        cr_assert_eq(v->arr.n, 1);
        v = v->arr.data;
    }
    cr_assert_eq(v->arr.type, HS_GGUF_TYPE_UINT8);
    cr_assert_eq(v->arr.n, 0);
    hs_gguf_close(g);
    free(f);

    f = nested_file(9, &size, &value_at);
    cr_assert_eq(hs_gguf_open_memory(f, size, &g, &err), HS_E_FORMAT);
    cr_assert_eq(err.offset, (int64_t)(value_at + 8 * 12), "%s", err.message);
    cr_assert(strstr(err.message, "nested") != NULL, "%s", err.message);
    free(f);

    f = nested_file(100000, &size, &value_at);
    cr_assert_eq(hs_gguf_open_memory(f, size, &g, &err), HS_E_FORMAT);
    cr_assert_eq(err.offset, (int64_t)(value_at + 8 * 12), "%s", err.message);
    free(f);
}

Test(gguf, huge_string_array_count_does_not_allocate)
{
    /* 2^59 strings claimed in a 60-byte file: the count is refused before any allocation. */
    size_t size, value_at;
    struct hs_gguf *g = NULL;
    struct hs_error err;
    uint8_t *f = nested_file(1, &size, &value_at);
    put_le(f + value_at, HS_GGUF_TYPE_STRING, 4);
    put_le(f + value_at + 4, 1ull << 59, 8);
    cr_assert_eq(hs_gguf_open_memory(f, size, &g, &err), HS_E_FORMAT);
    cr_assert_eq(err.offset, (int64_t)value_at + 4, "%s", err.message);
    free(f);
}

/* ======================================================================================== */
/* (3) a real file, (4) file-system errors */

static char *model_path(const char *name)
{
    const char *dir = getenv("HS_MODELS_DIR");
    cr_assert_not_null(dir, "HS_MODELS_DIR is not set");
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

Test(gguf, reads_tiny_q8_0)
{
    char *path = model_path("tiny-q8_0.gguf");
    struct hs_gguf *g = NULL;
    struct hs_error err;
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s", err.message);

    struct hs_gguf_str s;
    cr_assert_eq(hs_gguf_get_str(g, "general.architecture", &s), HS_OK);
    cr_assert(hs_gguf_str_eq(s, "llama"));
    int64_t n_layer = 0;
    cr_assert_eq(hs_gguf_get_int(g, "llama.block_count", &n_layer), HS_OK);
    cr_assert_eq(n_layer, 4);
    const struct hs_gguf_value *tokens = NULL;
    cr_assert_eq(hs_gguf_get_arr(g, "tokenizer.ggml.tokens", HS_GGUF_TYPE_STRING, &tokens), HS_OK);
    cr_assert_eq(tokens->arr.n, 4096);
    const struct hs_gguf_str *tok = tokens->arr.data;
    cr_assert(hs_gguf_str_eq(tok[0], "<unk>"));
    cr_assert(hs_gguf_str_eq(tok[1], "<s>"));
    cr_assert(hs_gguf_str_eq(tok[2], "</s>"));

    const struct hs_gguf_tensor *emb = hs_gguf_find_tensor(g, "token_embd.weight");
    cr_assert_not_null(emb);
    cr_assert_eq(emb->type, HS_TYPE_Q8_0);
    cr_assert_eq(emb->n_dims, 2);
    cr_assert_eq(emb->ne[0], 256);
    cr_assert_eq(emb->ne[1], 4096);
    cr_assert_eq(emb->size_bytes, (size_t)4096 * 256 / 32 * 34);

    /* Every tensor inside the file, aligned; bytes equal what stdio reads at that place. */
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp);
    cr_assert_eq(fseek(fp, 0, SEEK_END), 0);
    size_t file_size = (size_t)ftell(fp);
    cr_assert_eq(hs_gguf_file_size(g), file_size);
    uint8_t *whole = malloc(file_size);
    rewind(fp);
    cr_assert_eq(fread(whole, 1, file_size, fp), file_size);
    fclose(fp);
    size_t data_off = hs_gguf_data_offset(g);
    cr_assert_eq(data_off % hs_gguf_alignment(g), 0);
    cr_assert(hs_gguf_n_tensors(g) > 4 * 9, "a llama of 4 layers has more than 36 tensors");
    for (int64_t i = 0; i < hs_gguf_n_tensors(g); i++) {
        const struct hs_gguf_tensor *t = hs_gguf_tensor(g, i);
        cr_assert_eq(t->offset % hs_gguf_alignment(g), 0, "%s", t->name);
        cr_assert(data_off + t->offset + t->size_bytes <= file_size, "%s", t->name);
        cr_assert_eq(memcmp(t->data, whole + data_off + t->offset, t->size_bytes), 0, "%s",
                     t->name);
        cr_assert_eq(hs_gguf_find_tensor(g, t->name), t);
    }

    /* the same bytes through open_memory give the same answers */
    struct hs_gguf *m = NULL;
    cr_assert_eq(hs_gguf_open_memory(whole, file_size, &m, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_gguf_n_kv(m), hs_gguf_n_kv(g));
    cr_assert_eq(hs_gguf_n_tensors(m), hs_gguf_n_tensors(g));
    cr_assert_eq(hs_gguf_find_tensor(m, "token_embd.weight")->data, whole + data_off + emb->offset);
    hs_gguf_close(m);
    free(whole);
    hs_gguf_close(g);
    free(path);
}

Test(gguf, reads_every_shared_model)
{
    static const char *const names[] = {
        "stories260K.gguf",    "tiny-f32.gguf",        "tiny-f16.gguf",
        "tiny-q4_k_m.gguf",    "qwen3-vocab-f16.gguf", "moe-qwen3-mini-q8_0.gguf",
        "llama3-bpe-f32.gguf",
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++) {
        char *path = model_path(names[i]);
        struct hs_gguf *g = NULL;
        struct hs_error err;
        cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s: %s", names[i], err.message);
        cr_assert(hs_gguf_n_tensors(g) > 0);
        cr_assert_not_null(hs_gguf_get(g, "general.architecture"));
        hs_gguf_close(g);
        free(path);
    }
}

Test(gguf, missing_file_is_io_error_naming_the_path)
{
    struct hs_gguf *g = (struct hs_gguf *)(uintptr_t)1;
    struct hs_error err;
    const char *path = "/nonexistent/dir/model-xyz.gguf";
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_E_IO);
    cr_assert_null(g);
    cr_assert(strstr(err.message, path) != NULL, "%s", err.message);
}

Test(gguf, directory_and_empty_file_are_refused)
{
    struct hs_gguf *g = NULL;
    struct hs_error err;
    char dir[] = "/tmp/hs-gguf-empty-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(hs_gguf_open(dir, &g, &err), HS_E_IO);
    cr_assert(strstr(err.message, "directory") != NULL, "%s", err.message);

    char path[128];
    snprintf(path, sizeof(path), "%s/empty.gguf", dir);
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    fclose(fp);
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_E_FORMAT);
    cr_assert_null(g);
    cr_assert(strstr(err.message, "empty") != NULL, "%s", err.message);

    fp = fopen(path, "wb");
    fputs("GG", fp);
    fclose(fp);
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "too small") != NULL, "%s", err.message);

    fp = fopen(path, "wb");
    fputs("hello, this is a text file and not a model", fp);
    fclose(fp);
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "magic") != NULL, "%s", err.message);
    cr_assert_eq(err.offset, 0);

    unlink(path);
    rmdir(dir);
}

Test(gguf, truncation_messages_name_the_key_or_tensor)
{
    uint8_t *base;
    size_t base_size;
    build_base(&base, &base_size);
    struct base_layout l = layout_of(base, base_size);
    struct hs_gguf *g = NULL;
    struct hs_error err;

    size_t yy_len_at = l.arr_n + 8 + 8 + 1; /* test.arr = ["x", "yy"] */
    size_t len = yy_len_at + 8 + 1;         /* inside "yy" */
    uint8_t *f = copy_bytes(base, len);
    cr_assert_eq(hs_gguf_open_memory(f, len, &g, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "key 'test.arr'") != NULL, "%s", err.message);
    cr_assert_eq(err.offset, (int64_t)yy_len_at, "%s", err.message);
    free(f);

    len = l.a_type + 2; /* inside blk.0.w_a's type */
    f = copy_bytes(base, len);
    cr_assert_eq(hs_gguf_open_memory(f, len, &g, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "tensor 'blk.0.w_a'") != NULL, "%s", err.message);
    cr_assert_eq(err.offset, (int64_t)l.a_type);
    free(f);
    free(base);
}

/* Files of 8 MiB or more are read into huge pages (unless HS_MMAP=1 or THP is off), smaller
 * ones mmap'd; every way gives the file's bytes. */
static bool thp_never(void)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    char mode[128] = "[never]";
    if (f) {
        if (!fgets(mode, sizeof(mode), f)) {
            strcpy(mode, "[never]");
        }
        fclose(f);
    }
    return strstr(mode, "[never]") != NULL;
}

static enum hs_gguf_backing open_backing(const char *path, const float *want, size_t n)
{
    struct hs_gguf *g = NULL;
    struct hs_error err;
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s", err.message);
    const struct hs_gguf_tensor *t = hs_gguf_tensor(g, 0);
    cr_assert_eq(t->size_bytes, n * sizeof(float));
    cr_assert_eq(memcmp(t->data, want, n * sizeof(float)), 0, "the file's bytes");
    const enum hs_gguf_backing b = hs_gguf_backing(g);
    hs_gguf_close(g);
    return b;
}

Test(gguf, large_files_are_read_into_huge_pages_small_ones_mapped)
{
    const size_t big = 3 << 20, small = 1000; /* 12 MiB and 4 KB of f32 */
    float *data = malloc(big * sizeof(float));
    cr_assert_not_null(data);
    for (size_t i = 0; i < big; i++) {
        data[i] = (float)(i % 9973) - 17.5f;
    }
    char dir[] = "/tmp/hs-gguf-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path_big[128], path_small[128];
    snprintf(path_big, sizeof(path_big), "%s/big.gguf", dir);
    snprintf(path_small, sizeof(path_small), "%s/small.gguf", dir);
    const struct {
        const char *path;
        size_t n;
    } files[] = {{path_big, big}, {path_small, small}};
    for (int i = 0; i < 2; i++) {
        struct hs_gguf_writer *w = NULL;
        struct hs_error err;
        cr_assert_eq(hs_gguf_writer_create(&w), HS_OK);
        cr_assert_eq(hs_gguf_writer_set_str(w, "general.architecture", "x"), HS_OK);
        int64_t ne[1] = {(int64_t)files[i].n};
        cr_assert_eq(hs_gguf_writer_add_tensor(w, "w", HS_TYPE_F32, 1, ne, data), HS_OK);
        cr_assert_eq(hs_gguf_writer_write_file(w, files[i].path, &err), HS_OK, "%s", err.message);
        hs_gguf_writer_destroy(w);
    }

    unsetenv("HS_MMAP");
    cr_assert_eq(open_backing(path_big, data, big),
                 thp_never() ? HS_GGUF_FILE_MAP : HS_GGUF_HUGE_PAGES);
    cr_assert_eq(open_backing(path_small, data, small), HS_GGUF_FILE_MAP);
    setenv("HS_MMAP", "1", 1);
    cr_assert_eq(open_backing(path_big, data, big), HS_GGUF_FILE_MAP);
    unsetenv("HS_MMAP");

    unlink(path_big);
    unlink(path_small);
    rmdir(dir);
    free(data);
}
