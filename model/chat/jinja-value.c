/* Chat-template values: constructors for callers, and Python's str/repr/json.dumps/== on them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat/jinja-impl.h"

const char *hs_tmpl_kind_str(enum hs_tmpl_kind k)
{
    static const char *const names[] = {"null",   "bool",  "int",   "float",
                                        "string", "array", "object"};
    return (unsigned)k < HS_ARRAY_LEN(names) ? names[k] : "unknown";
}

/* ==== constructors ==== */

static struct hs_tmpl_value *value_new(int kind)
{
    struct hs_tmpl_value *v = calloc(1, sizeof(*v));
    if (v) {
        v->kind = kind;
    }
    return v;
}

struct hs_tmpl_value *hs_tmpl_null(void)
{
    return value_new(HS_TMPL_NULL);
}

struct hs_tmpl_value *hs_tmpl_bool(bool b)
{
    struct hs_tmpl_value *v = value_new(HS_TMPL_BOOL);
    if (v) {
        v->u.b = b;
    }
    return v;
}

struct hs_tmpl_value *hs_tmpl_int(int64_t i)
{
    struct hs_tmpl_value *v = value_new(HS_TMPL_INT);
    if (v) {
        v->u.i = i;
    }
    return v;
}

struct hs_tmpl_value *hs_tmpl_float(double f)
{
    struct hs_tmpl_value *v = value_new(HS_TMPL_FLOAT);
    if (v) {
        v->u.f = f;
    }
    return v;
}

struct hs_tmpl_value *hs_tmpl_string_n(const char *s, size_t len)
{
    struct hs_tmpl_value *v = value_new(HS_TMPL_STRING);
    if (!v) {
        return NULL;
    }
    v->u.s.p = malloc(len + 1);
    if (!v->u.s.p) {
        free(v);
        return NULL;
    }
    if (len) {
        memcpy(v->u.s.p, s, len);
    }
    v->u.s.p[len] = '\0';
    v->u.s.len = len;
    return v;
}

struct hs_tmpl_value *hs_tmpl_string(const char *s)
{
    return hs_tmpl_string_n(s ? s : "", s ? strlen(s) : 0);
}

struct hs_tmpl_value *hs_tmpl_array(void)
{
    return value_new(HS_TMPL_ARRAY);
}

struct hs_tmpl_value *hs_tmpl_object(void)
{
    return value_new(HS_TMPL_OBJECT);
}

hs_status hs_tmpl_array_push(struct hs_tmpl_value *arr, struct hs_tmpl_value *item)
{
    if (!item) {
        return HS_E_NOMEM;
    }
    if (!arr || arr->kind != HS_TMPL_ARRAY || arr->pooled) {
        hs_tmpl_value_destroy(item);
        return HS_E_INVAL;
    }
    if (arr->u.a.n == arr->u.a.cap) {
        size_t cap = arr->u.a.cap ? arr->u.a.cap * 2 : 4;
        struct hs_tmpl_value **v = realloc(arr->u.a.v, cap * sizeof(*v));
        if (!v) {
            hs_tmpl_value_destroy(item);
            return HS_E_NOMEM;
        }
        arr->u.a.v = v;
        arr->u.a.cap = cap;
    }
    arr->u.a.v[arr->u.a.n++] = item;
    return HS_OK;
}

ptrdiff_t hs__tmpl_object_find(const struct hs_tmpl_value *obj, const char *key, size_t len)
{
    for (size_t i = 0; i < obj->u.o.n; i++) {
        /* keys never hold NUL bytes, so a key with one matches nothing */
        if (strlen(obj->u.o.k[i]) == len && memcmp(obj->u.o.k[i], key, len) == 0) {
            return (ptrdiff_t)i;
        }
    }
    return -1;
}

hs_status hs_tmpl_object_set(struct hs_tmpl_value *obj, const char *key, struct hs_tmpl_value *v)
{
    if (!v) {
        return HS_E_NOMEM;
    }
    if (!obj || obj->kind != HS_TMPL_OBJECT || obj->pooled || !key) {
        hs_tmpl_value_destroy(v);
        return HS_E_INVAL;
    }
    ptrdiff_t at = hs__tmpl_object_find(obj, key, strlen(key));
    if (at >= 0) {
        hs_tmpl_value_destroy(obj->u.o.v[at]);
        obj->u.o.v[at] = v;
        return HS_OK;
    }
    if (obj->u.o.n == obj->u.o.cap) {
        size_t cap = obj->u.o.cap ? obj->u.o.cap * 2 : 4;
        char **k = realloc(obj->u.o.k, cap * sizeof(*k));
        if (!k) {
            goto fail;
        }
        obj->u.o.k = k;
        struct hs_tmpl_value **vv = realloc(obj->u.o.v, cap * sizeof(*vv));
        if (!vv) {
            goto fail;
        }
        obj->u.o.v = vv;
        obj->u.o.cap = cap;
    }
    char *kc = strdup(key);
    if (!kc) {
        goto fail;
    }
    obj->u.o.k[obj->u.o.n] = kc;
    obj->u.o.v[obj->u.o.n++] = v;
    return HS_OK;
fail:
    hs_tmpl_value_destroy(v);
    return HS_E_NOMEM;
}

enum hs_tmpl_kind hs_tmpl_value_kind(const struct hs_tmpl_value *v)
{
    if (!v || v->kind >= HS_TMPL_KIND_COUNT) {
        return HS_TMPL_NULL;
    }
    return (enum hs_tmpl_kind)v->kind;
}

const struct hs_tmpl_value *hs_tmpl_object_get(const struct hs_tmpl_value *obj, const char *key)
{
    if (!obj || obj->kind != HS_TMPL_OBJECT || !key) {
        return NULL;
    }
    ptrdiff_t at = hs__tmpl_object_find(obj, key, strlen(key));
    return at >= 0 ? obj->u.o.v[at] : NULL;
}

void hs__tmpl_value_free(struct hs_tmpl_value *v)
{
    if (!v) {
        return;
    }
    switch (v->kind) {
    case HS_TMPL_STRING:
        free(v->u.s.p);
        free(v->cmask);
        break;
    case HS_TMPL_ARRAY:
        if (!v->pooled) {
            for (size_t i = 0; i < v->u.a.n; i++) {
                hs__tmpl_value_free(v->u.a.v[i]);
            }
        }
        free(v->u.a.v);
        break;
    case HS_TMPL_OBJECT:
        for (size_t i = 0; i < v->u.o.n; i++) {
            free(v->u.o.k[i]);
            if (!v->pooled) {
                hs__tmpl_value_free(v->u.o.v[i]);
            }
        }
        free(v->u.o.k);
        free(v->u.o.v);
        break;
    default:
        break;
    }
    free(v);
}

void hs_tmpl_value_destroy(struct hs_tmpl_value *v)
{
    hs__tmpl_value_free(v);
}

struct hs_tmpl_value *hs_tmpl_message(const char *role, const char *content)
{
    struct hs_tmpl_value *m = hs_tmpl_object();
    if (!m) {
        return NULL;
    }
    if (hs_tmpl_object_set(m, "role", hs_tmpl_string(role)) != HS_OK ||
        hs_tmpl_object_set(m, "content", content ? hs_tmpl_string(content) : hs_tmpl_null()) !=
            HS_OK) {
        hs_tmpl_value_destroy(m);
        return NULL;
    }
    return m;
}

/* ==== buffers ==== */

hs_status hs__jbuf_append(struct hs__jbuf *b, const char *s, size_t n)
{
    const size_t at = b->buf.len;
    if (b->m && !hs__grow((void **)&b->m, &b->cap_m, at + n, 1)) {
        return HS_E_NOMEM;
    }
    HS_TRY(hs__buf_add(&b->buf, s, n));
    if (b->m && n) {
        memset(b->m + at, 0, n);
    }
    return HS_OK;
}

hs_status hs__jbuf_mark(struct hs__jbuf *b, size_t from)
{
    if (from >= b->buf.len) {
        return HS_OK;
    }
    if (!b->m) {
        if (!hs__grow((void **)&b->m, &b->cap_m, b->buf.len, 1)) {
            return HS_E_NOMEM;
        }
        memset(b->m, 0, from);
    }
    memset(b->m + from, 1, b->buf.len - from);
    return HS_OK;
}

hs_status hs__jbuf_append_val(struct hs__jbuf *b, const struct hs_tmpl_value *s, size_t off,
                              size_t n)
{
    size_t at = b->buf.len;
    HS_TRY(hs__jbuf_append(b, s->u.s.p + off, n));
    if (s->client) {
        return hs__jbuf_mark(b, at);
    }
    if (s->cmask && memchr(s->cmask + off, 1, n)) {
        HS_TRY(hs__jbuf_mark(b, at));
        memcpy(b->m + at, s->cmask + off, n);
    }
    return HS_OK;
}

void hs__jbuf_free(struct hs__jbuf *b)
{
    hs__buf_free(&b->buf);
    free(b->m);
    *b = (struct hs__jbuf){0};
}

bool hs__client_at(const struct hs_tmpl_value *s, size_t i)
{
    return s->client || (s->cmask && s->cmask[i]);
}

static bool has_client_depth(const struct hs_tmpl_value *v, int depth)
{
    if (depth > 64) {
        return true;
    }
    switch (v->kind) {
    case HS_TMPL_STRING:
        return v->client || (v->cmask && memchr(v->cmask, 1, v->u.s.len));
    case HS_TMPL_ARRAY:
        for (size_t i = 0; i < v->u.a.n; i++) {
            if (has_client_depth(v->u.a.v[i], depth + 1)) {
                return true;
            }
        }
        return false;
    case HS_TMPL_OBJECT:
        if (v->client) {
            return true;
        }
        for (size_t i = 0; i < v->u.o.n; i++) {
            if (has_client_depth(v->u.o.v[i], depth + 1)) {
                return true;
            }
        }
        return false;
    default:
        return false;
    }
}

bool hs__has_client(const struct hs_tmpl_value *v)
{
    return has_client_depth(v, 0);
}

void hs_tmpl_value_mark_client(struct hs_tmpl_value *v)
{
    if (!v) {
        return;
    }
    if (v->kind == HS_TMPL_STRING || v->kind == HS_TMPL_OBJECT) {
        v->client = true;
    }
    if (v->kind == HS_TMPL_ARRAY) {
        for (size_t i = 0; i < v->u.a.n; i++) {
            hs_tmpl_value_mark_client(v->u.a.v[i]);
        }
    } else if (v->kind == HS_TMPL_OBJECT) {
        for (size_t i = 0; i < v->u.o.n; i++) {
            hs_tmpl_value_mark_client(v->u.o.v[i]);
        }
    }
}

hs_status hs__jbuf_putc(struct hs__jbuf *b, char c)
{
    return hs__jbuf_append(b, &c, 1);
}

static hs_status jbuf_puts(struct hs__jbuf *b, const char *s)
{
    return hs__jbuf_append(b, s, strlen(s));
}

/* ==== str / repr ==== */

/* Python's float repr: shortest digits that round-trip, fixed notation for exponents in
 * [-4, 16), else d.ddde+XX. */
static hs_status put_float(struct hs__jbuf *b, double x, bool json)
{
    if (isnan(x)) {
        return jbuf_puts(b, json ? "NaN" : "nan");
    }
    if (isinf(x)) {
        return jbuf_puts(b, x > 0 ? (json ? "Infinity" : "inf") : (json ? "-Infinity" : "-inf"));
    }
    char e[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec - 1, x);
        if (strtod(e, NULL) == x) {
            break;
        }
    }
    /* e = [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; *p && *p != 'e'; p++) {
        if (*p >= '0' && *p <= '9' && nd < sizeof(digits) - 1) {
            digits[nd++] = *p;
        }
    }
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
    }
    char out[64];
    size_t o = 0;
    if (neg) {
        out[o++] = '-';
    }
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -exp10 - 1; i++) {
                out[o++] = '0';
            }
            for (size_t i = 0; i < nd; i++) {
                out[o++] = digits[i];
            }
        } else {
            for (int i = 0; i <= exp10; i++) {
                out[o++] = (size_t)i < nd ? digits[i] : '0';
            }
            out[o++] = '.';
            if ((size_t)exp10 + 1 < nd) {
                for (size_t i = (size_t)exp10 + 1; i < nd; i++) {
                    out[o++] = digits[i];
                }
            } else {
                out[o++] = '0';
            }
        }
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (size_t i = 1; i < nd; i++) {
                out[o++] = digits[i];
            }
        }
        o += (size_t)snprintf(out + o, sizeof(out) - o, "e%c%02d", exp10 < 0 ? '-' : '+',
                              exp10 < 0 ? -exp10 : exp10);
    }
    return hs__jbuf_append(b, out, o);
}

static hs_status put_int(struct hs__jbuf *b, int64_t i)
{
    char t[32];
    int n = snprintf(t, sizeof(t), "%lld", (long long)i);
    return hs__jbuf_append(b, t, (size_t)n);
}

static hs_status repr_string(struct hs__jbuf *b, const char *s, size_t len)
{
    char q = memchr(s, '\'', len) && !memchr(s, '"', len) ? '"' : '\'';
    HS_TRY(hs__jbuf_putc(b, q));
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char t[8];
        if (c == '\\') {
            esc = "\\\\";
        } else if (c == (unsigned char)q) {
            esc = q == '\'' ? "\\'" : "\\\"";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(t, sizeof(t), "\\x%02x", c);
            esc = t;
        }
        if (esc) {
            HS_TRY(jbuf_puts(b, esc));
        } else {
            HS_TRY(hs__jbuf_putc(b, (char)c));
        }
    }
    return hs__jbuf_putc(b, q);
}

static hs_status repr_depth(struct hs__jbuf *b, const struct hs_tmpl_value *v, int depth)
{
    if (depth > 64) {
        return HS_E_RANGE;
    }
    switch (v->kind) {
    case HS_TMPL_STRING:
        return repr_string(b, v->u.s.p, v->u.s.len);
    case HS_TMPL_ARRAY:
        HS_TRY(hs__jbuf_putc(b, v->is_tuple ? '(' : '['));
        for (size_t i = 0; i < v->u.a.n; i++) {
            if (i) {
                HS_TRY(jbuf_puts(b, ", "));
            }
            HS_TRY(repr_depth(b, v->u.a.v[i], depth + 1));
        }
        if (v->is_tuple && v->u.a.n == 1) {
            HS_TRY(hs__jbuf_putc(b, ','));
        }
        return hs__jbuf_putc(b, v->is_tuple ? ')' : ']');
    case HS_TMPL_OBJECT:
        HS_TRY(hs__jbuf_putc(b, '{'));
        for (size_t i = 0; i < v->u.o.n; i++) {
            if (i) {
                HS_TRY(jbuf_puts(b, ", "));
            }
            HS_TRY(repr_string(b, v->u.o.k[i], strlen(v->u.o.k[i])));
            HS_TRY(jbuf_puts(b, ": "));
            HS_TRY(repr_depth(b, v->u.o.v[i], depth + 1));
        }
        return hs__jbuf_putc(b, '}');
    default:
        return hs__tmpl_str(b, v);
    }
}

hs_status hs__tmpl_repr(struct hs__jbuf *b, const struct hs_tmpl_value *v)
{
    return repr_depth(b, v, 0);
}

hs_status hs__tmpl_str(struct hs__jbuf *b, const struct hs_tmpl_value *v)
{
    switch (v->kind) {
    case HS_TMPL_NULL:
        return jbuf_puts(b, "None");
    case HS__TMPL_UNDEFINED:
        return HS_OK;
    case HS_TMPL_BOOL:
        return jbuf_puts(b, v->u.b ? "True" : "False");
    case HS_TMPL_INT:
        return put_int(b, v->u.i);
    case HS_TMPL_FLOAT:
        return put_float(b, v->u.f, false);
    case HS_TMPL_STRING:
        return hs__jbuf_append_val(b, v, 0, v->u.s.len);
    case HS_TMPL_ARRAY:
    case HS_TMPL_OBJECT: {
        size_t at = b->buf.len;
        HS_TRY(repr_depth(b, v, 0));
        return hs__has_client(v) ? hs__jbuf_mark(b, at) : HS_OK;
    }
    case HS__TMPL_MACRO:
        return jbuf_puts(b, "<macro>");
    case HS__TMPL_LOOP:
        return jbuf_puts(b, "<loop>");
    default:
        return HS_E_INVAL;
    }
}

/* ==== json.dumps ==== */

static hs_status json_string(struct hs__jbuf *b, const char *s, size_t len)
{
    HS_TRY(hs__jbuf_putc(b, '"'));
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        HS_TRY(hs__jbuf_append(b, s + run, i - run));
        run = i + 1;
        char t[8];
        const char *esc = t;
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            snprintf(t, sizeof(t), "\\u%04x", c);
            break;
        }
        HS_TRY(jbuf_puts(b, esc));
    }
    HS_TRY(hs__jbuf_append(b, s + run, len - run));
    return hs__jbuf_putc(b, '"');
}

static hs_status json_newline(struct hs__jbuf *b, int indent, int depth)
{
    HS_TRY(hs__jbuf_putc(b, '\n'));
    for (int i = 0; i < indent * depth; i++) {
        HS_TRY(hs__jbuf_putc(b, ' '));
    }
    return HS_OK;
}

static hs_status json_depth(struct hs__jbuf *b, const struct hs_tmpl_value *v, int indent,
                            int depth)
{
    if (depth > 64) {
        return HS_E_RANGE;
    }
    switch (v->kind) {
    case HS_TMPL_NULL:
    case HS__TMPL_UNDEFINED:
        return jbuf_puts(b, "null");
    case HS_TMPL_BOOL:
        return jbuf_puts(b, v->u.b ? "true" : "false");
    case HS_TMPL_INT:
        return put_int(b, v->u.i);
    case HS_TMPL_FLOAT:
        return put_float(b, v->u.f, true);
    case HS_TMPL_STRING:
        return json_string(b, v->u.s.p, v->u.s.len);
    case HS_TMPL_ARRAY:
    case HS_TMPL_OBJECT: {
        bool obj = v->kind == HS_TMPL_OBJECT;
        size_t n = obj ? v->u.o.n : v->u.a.n;
        HS_TRY(hs__jbuf_putc(b, obj ? '{' : '['));
        if (n == 0) {
            return hs__jbuf_putc(b, obj ? '}' : ']');
        }
        for (size_t i = 0; i < n; i++) {
            if (i) {
                HS_TRY(jbuf_puts(b, indent >= 0 ? "," : ", "));
            }
            if (indent >= 0) {
                HS_TRY(json_newline(b, indent, depth + 1));
            }
            if (obj) {
                HS_TRY(json_string(b, v->u.o.k[i], strlen(v->u.o.k[i])));
                HS_TRY(jbuf_puts(b, ": "));
            }
            HS_TRY(json_depth(b, obj ? v->u.o.v[i] : v->u.a.v[i], indent, depth + 1));
        }
        if (indent >= 0) {
            HS_TRY(json_newline(b, indent, depth));
        }
        return hs__jbuf_putc(b, obj ? '}' : ']');
    }
    default:
        return HS_E_INVAL;
    }
}

hs_status hs__tmpl_json(struct hs__jbuf *b, const struct hs_tmpl_value *v, int indent)
{
    size_t at = b->buf.len;
    HS_TRY(json_depth(b, v, indent, 0));
    return hs__has_client(v) ? hs__jbuf_mark(b, at) : HS_OK;
}

/* ==== comparisons ==== */

static bool is_num(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_INT || v->kind == HS_TMPL_FLOAT || v->kind == HS_TMPL_BOOL;
}

static double num(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_FLOAT ? v->u.f : v->kind == HS_TMPL_INT ? (double)v->u.i : v->u.b;
}

static bool equal_depth(const struct hs_tmpl_value *a, const struct hs_tmpl_value *b, int depth)
{
    if (depth > 64) {
        return false;
    }
    if (is_num(a) && is_num(b)) {
        if (a->kind != HS_TMPL_FLOAT && b->kind != HS_TMPL_FLOAT) {
            int64_t x = a->kind == HS_TMPL_INT ? a->u.i : a->u.b;
            int64_t y = b->kind == HS_TMPL_INT ? b->u.i : b->u.b;
            return x == y;
        }
        return num(a) == num(b);
    }
    if (a->kind != b->kind) {
        return false;
    }
    switch (a->kind) {
    case HS_TMPL_NULL:
    case HS__TMPL_UNDEFINED:
        return true;
    case HS_TMPL_STRING:
        return a->u.s.len == b->u.s.len && memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0;
    case HS_TMPL_ARRAY:
        if (a->u.a.n != b->u.a.n) {
            return false;
        }
        for (size_t i = 0; i < a->u.a.n; i++) {
            if (!equal_depth(a->u.a.v[i], b->u.a.v[i], depth + 1)) {
                return false;
            }
        }
        return true;
    case HS_TMPL_OBJECT:
        if (a->u.o.n != b->u.o.n) {
            return false;
        }
        for (size_t i = 0; i < a->u.o.n; i++) {
            ptrdiff_t j = hs__tmpl_object_find(b, a->u.o.k[i], strlen(a->u.o.k[i]));
            if (j < 0 || !equal_depth(a->u.o.v[i], b->u.o.v[j], depth + 1)) {
                return false;
            }
        }
        return true;
    default:
        return a == b;
    }
}

bool hs__tmpl_equal(const struct hs_tmpl_value *a, const struct hs_tmpl_value *b)
{
    return equal_depth(a, b, 0);
}

bool hs__tmpl_truthy(const struct hs_tmpl_value *v)
{
    switch (v->kind) {
    case HS_TMPL_BOOL:
        return v->u.b;
    case HS_TMPL_INT:
        return v->u.i != 0;
    case HS_TMPL_FLOAT:
        return v->u.f != 0.0;
    case HS_TMPL_STRING:
        return v->u.s.len != 0;
    case HS_TMPL_ARRAY:
        return v->u.a.n != 0;
    case HS_TMPL_OBJECT:
        return v->u.o.n != 0;
    case HS__TMPL_MACRO:
        return true;
    default:
        return false;
    }
}
