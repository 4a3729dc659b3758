/* Chat templates: the renderer (statements, expressions, filters, tests, methods) and the
 * public API. Values made while rendering live in a per-render pool freed at the end; values
 * from the context are only read. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

#include "model/jinja-impl.h"

#define MAX_ARGS 16

struct hs_chat_template {
    struct hs__jarena arena;
    struct hs__jnode *body;
    struct hs_chat_template_limits limits;
};

/* Frames live until the render ends: a caller() value keeps the frame of its call site. */
struct hs__frame {
    struct hs__frame *parent;
    struct hs__frame *next_alloc;
    struct hs_tmpl_value *vars; /* pooled object */
};

struct render {
    const struct hs_chat_template *t;
    const struct hs_tmpl_value *ctx;
    struct hs_chat_template_limits lim;
    struct hs_tmpl_value *pool;
    struct hs__frame *frames;
    size_t mem;
    uint64_t iters;
    int call_depth;
    struct hs__frame *globals;
    struct hs__frame *cur;
    struct hs_tmpl_value *pending_caller;
    int ctl; /* 1 break, 2 continue */
    hs_status st;
    struct hs_error *err;
};

static struct hs_tmpl_value v_undef = {.kind = HS__TMPL_UNDEFINED};
static struct hs_tmpl_value v_none = {.kind = HS_TMPL_NULL};
static struct hs_tmpl_value v_true = {.kind = HS_TMPL_BOOL, .u.b = true};
static struct hs_tmpl_value v_false = {.kind = HS_TMPL_BOOL, .u.b = false};

/* ==== errors ==== */

static struct hs_tmpl_value *fail(struct render *r, const struct hs__jnode *n, hs_status st,
                                  const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static struct hs_tmpl_value *fail(struct render *r, const struct hs__jnode *n, hs_status st,
                                  const char *fmt, ...)
{
    if (r->st != HS_OK) {
        return NULL;
    }
    r->st = st;
    if (r->err) {
        char msg[300];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n) {
            hs_error_set(r->err, st, "template error at line %d, column %d: %s", n->line, n->col,
                         msg);
        } else {
            hs_error_set(r->err, st, "template error: %s", msg);
        }
    }
    return NULL;
}

static struct hs_tmpl_value *oom(struct render *r)
{
    return fail(r, NULL, HS_E_NOMEM, "out of memory");
}

static bool charge(struct render *r, size_t bytes)
{
    r->mem += bytes;
    if (r->mem > r->lim.max_memory_bytes) {
        fail(r, NULL, HS_E_RANGE, "template used more than %zu bytes of memory",
             r->lim.max_memory_bytes);
        return false;
    }
    return true;
}

/* ==== pooled values ==== */

static struct hs_tmpl_value *p_new(struct render *r, int kind)
{
    if (!charge(r, sizeof(struct hs_tmpl_value))) {
        return NULL;
    }
    struct hs_tmpl_value *v = calloc(1, sizeof(*v));
    if (!v) {
        return oom(r);
    }
    v->kind = kind;
    v->pooled = true;
    v->pool_next = r->pool;
    r->pool = v;
    return v;
}

static struct hs_tmpl_value *p_int(struct render *r, int64_t i)
{
    struct hs_tmpl_value *v = p_new(r, HS_TMPL_INT);
    if (v) {
        v->u.i = i;
    }
    return v;
}

static struct hs_tmpl_value *p_float(struct render *r, double f)
{
    struct hs_tmpl_value *v = p_new(r, HS_TMPL_FLOAT);
    if (v) {
        v->u.f = f;
    }
    return v;
}

static struct hs_tmpl_value *p_bool(bool b)
{
    return b ? &v_true : &v_false;
}

/* Takes a malloc'd buffer (NUL-terminated) into a pooled string; frees it on failure. */
static struct hs_tmpl_value *p_str_take(struct render *r, char *s, size_t len)
{
    if (!s) {
        return oom(r);
    }
    if (!charge(r, len)) {
        free(s);
        return NULL;
    }
    struct hs_tmpl_value *v = p_new(r, HS_TMPL_STRING);
    if (!v) {
        free(s);
        return NULL;
    }
    v->u.s.p = s;
    v->u.s.len = len;
    return v;
}

static struct hs_tmpl_value *p_str(struct render *r, const char *s, size_t len)
{
    if (len > r->lim.max_memory_bytes) {
        return fail(r, NULL, HS_E_RANGE, "string too long");
    }
    char *d = malloc(len + 1);
    if (d) {
        if (len) {
            memcpy(d, s, len);
        }
        d[len] = '\0';
    }
    return p_str_take(r, d, len);
}

static struct hs_tmpl_value *p_buf(struct render *r, struct hs__jbuf *b)
{
    if (!b->p) {
        return p_str(r, "", 0);
    }
    return p_str_take(r, b->p, b->len);
}

static bool p_push(struct render *r, struct hs_tmpl_value *arr, struct hs_tmpl_value *item)
{
    if (arr->u.a.n == arr->u.a.cap) {
        size_t cap = arr->u.a.cap ? arr->u.a.cap * 2 : 4;
        if (!charge(r, (cap - arr->u.a.cap) * sizeof(void *))) {
            return false;
        }
        struct hs_tmpl_value **v = realloc(arr->u.a.v, cap * sizeof(*v));
        if (!v) {
            oom(r);
            return false;
        }
        arr->u.a.v = v;
        arr->u.a.cap = cap;
    }
    arr->u.a.v[arr->u.a.n++] = item;
    return true;
}

static bool p_set(struct render *r, struct hs_tmpl_value *obj, const char *key, size_t klen,
                  struct hs_tmpl_value *v)
{
    ptrdiff_t at = hs__tmpl_object_find(obj, key, klen);
    if (at >= 0) {
        obj->u.o.v[at] = v;
        return true;
    }
    if (obj->u.o.n == obj->u.o.cap) {
        size_t cap = obj->u.o.cap ? obj->u.o.cap * 2 : 4;
        if (!charge(r, (cap - obj->u.o.cap) * 2 * sizeof(void *))) {
            return false;
        }
        char **k = realloc(obj->u.o.k, cap * sizeof(*k));
        if (!k) {
            oom(r);
            return false;
        }
        obj->u.o.k = k;
        struct hs_tmpl_value **vv = realloc(obj->u.o.v, cap * sizeof(*vv));
        if (!vv) {
            oom(r);
            return false;
        }
        obj->u.o.v = vv;
        obj->u.o.cap = cap;
    }
    if (!charge(r, klen + 1)) {
        return false;
    }
    char *kc = malloc(klen + 1);
    if (!kc) {
        oom(r);
        return false;
    }
    memcpy(kc, key, klen);
    kc[klen] = '\0';
    obj->u.o.k[obj->u.o.n] = kc;
    obj->u.o.v[obj->u.o.n++] = v;
    return true;
}

static void pool_free(struct render *r)
{
    while (r->frames) {
        struct hs__frame *n = r->frames->next_alloc;
        free(r->frames);
        r->frames = n;
    }
    while (r->pool) {
        struct hs_tmpl_value *n = r->pool->pool_next;
        hs__tmpl_value_free(r->pool);
        r->pool = n;
    }
}

static const char *kind_name(const struct hs_tmpl_value *v)
{
    switch (v->kind) {
    case HS__TMPL_UNDEFINED: return "undefined";
    case HS__TMPL_MACRO: return "macro";
    case HS__TMPL_LOOP: return "loop";
    case HS_TMPL_NULL: return "none";
    case HS_TMPL_OBJECT: return "dict";
    case HS_TMPL_ARRAY: return "list";
    default: return hs_tmpl_kind_str((enum hs_tmpl_kind)v->kind);
    }
}

/* ==== UTF-8 helpers ==== */

static size_t utf8_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return n;
}

/* Byte offsets of each code point start, plus len at the end: returns n code points. */
static size_t *utf8_offsets(const char *s, size_t len, size_t *n_out)
{
    size_t n = utf8_count(s, len);
    size_t *off = malloc((n + 2) * sizeof(*off)); /* + 1 for the lone-continuation case */
    if (!off) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            off[k++] = i;
        }
    }
    if (k == 0 && len > 0) { /* only continuation bytes: treat as one unit */
        off[k++] = 0;
        n = 1;
    }
    off[k] = len;
    *n_out = k;
    return off;
}

typedef utf8proc_int32_t (*case_fn)(utf8proc_int32_t);

/* mode 0: map all with f; 1: title case; 2: capitalize */
static struct hs_tmpl_value *str_case(struct render *r, const struct hs_tmpl_value *v, case_fn f,
                                      int mode)
{
    struct hs__jbuf b = {0};
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)v->u.s.p;
    utf8proc_ssize_t len = (utf8proc_ssize_t)v->u.s.len, i = 0;
    bool prev_cased = false, first = true;
    while (i < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, len - i, &cp);
        if (k <= 0) {
            if (hs__jbuf_putc(&b, (char)s[i]) != HS_OK) {
                free(b.p);
                return oom(r);
            }
            i++;
            prev_cased = false;
            first = false;
            continue;
        }
        utf8proc_int32_t m = cp;
        if (mode == 0) {
            m = f(cp);
        } else if (mode == 1) {
            m = prev_cased ? utf8proc_tolower(cp) : utf8proc_toupper(cp);
            const utf8proc_property_t *pr = utf8proc_get_property(cp);
            prev_cased = pr->category == UTF8PROC_CATEGORY_LU ||
                         pr->category == UTF8PROC_CATEGORY_LL ||
                         pr->category == UTF8PROC_CATEGORY_LT;
        } else {
            m = first ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
        }
        first = false;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t el = utf8proc_encode_char(m, enc);
        if (hs__jbuf_append(&b, (const char *)enc, (size_t)el) != HS_OK) {
            free(b.p);
            return oom(r);
        }
        i += k;
    }
    return p_buf(r, &b);
}

static bool in_set(char c, const char *chars, size_t n)
{
    if (!chars) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
    }
    return memchr(chars, c, n) != NULL;
}

/* which: 1 left, 2 right, 3 both. chars NULL: whitespace. (Byte-wise: chars are ASCII in
 * practice.) */
static struct hs_tmpl_value *str_strip(struct render *r, const struct hs_tmpl_value *v,
                                       const struct hs_tmpl_value *chars, int which)
{
    const char *cs = NULL;
    size_t cn = 0;
    if (chars && chars->kind == HS_TMPL_STRING) {
        cs = chars->u.s.p;
        cn = chars->u.s.len;
    }
    size_t a = 0, b = v->u.s.len;
    if (which & 1) {
        while (a < b && in_set(v->u.s.p[a], cs, cn)) {
            a++;
        }
    }
    if (which & 2) {
        while (b > a && in_set(v->u.s.p[b - 1], cs, cn)) {
            b--;
        }
    }
    return p_str(r, v->u.s.p + a, b - a);
}

static const char *memfind(const char *h, size_t hn, const char *n, size_t nn)
{
    if (nn == 0) {
        return h;
    }
    for (size_t i = 0; i + nn <= hn; i++) {
        if (h[i] == n[0] && memcmp(h + i, n, nn) == 0) {
            return h + i;
        }
    }
    return NULL;
}

static const char *memrfind(const char *h, size_t hn, const char *n, size_t nn)
{
    if (nn > hn) {
        return NULL;
    }
    for (size_t i = hn - nn + 1; i-- > 0;) {
        if (memcmp(h + i, n, nn) == 0) {
            return h + i;
        }
    }
    return NULL;
}

static struct hs_tmpl_value *str_replace(struct render *r, const struct hs__jnode *n,
                                         const struct hs_tmpl_value *s,
                                         const struct hs_tmpl_value *old,
                                         const struct hs_tmpl_value *new_,
                                         const struct hs_tmpl_value *count)
{
    if (!old || !new_ || old->kind != HS_TMPL_STRING || new_->kind != HS_TMPL_STRING) {
        return fail(r, n, HS_E_INVAL, "replace() needs two strings");
    }
    int64_t max = count && count->kind == HS_TMPL_INT ? count->u.i : -1;
    struct hs__jbuf b = {0};
    const char *p = s->u.s.p, *end = s->u.s.p + s->u.s.len;
    int64_t done = 0;
    hs_status st = HS_OK;
    if (old->u.s.len == 0) {
        /* Python inserts new before every character and at the end */
        size_t cnt;
        size_t *off = utf8_offsets(p, s->u.s.len, &cnt);
        if (!off) {
            return oom(r);
        }
        for (size_t i = 0; i <= cnt && st == HS_OK; i++) {
            if (max < 0 || done < max) {
                st = hs__jbuf_append(&b, new_->u.s.p, new_->u.s.len);
                done++;
            }
            if (i < cnt && st == HS_OK) {
                st = hs__jbuf_append(&b, p + off[i], off[i + 1] - off[i]);
            }
            if (b.len > r->lim.max_memory_bytes) {
                break;
            }
        }
        free(off);
    } else {
        while (st == HS_OK && (max < 0 || done < max)) {
            const char *f = memfind(p, (size_t)(end - p), old->u.s.p, old->u.s.len);
            if (!f) {
                break;
            }
            st = hs__jbuf_append(&b, p, (size_t)(f - p));
            if (st == HS_OK) {
                st = hs__jbuf_append(&b, new_->u.s.p, new_->u.s.len);
            }
            p = f + old->u.s.len;
            done++;
            if (b.len > r->lim.max_memory_bytes) {
                break;
            }
        }
        if (st == HS_OK) {
            st = hs__jbuf_append(&b, p, (size_t)(end - p));
        }
    }
    if (st != HS_OK) {
        free(b.p);
        return oom(r);
    }
    if (b.len > r->lim.max_memory_bytes) {
        free(b.p);
        return fail(r, n, HS_E_RANGE, "string too long");
    }
    return p_buf(r, &b);
}

/* Python str.split / rsplit. sep NULL: runs of whitespace. */
static struct hs_tmpl_value *str_split(struct render *r, const struct hs__jnode *n,
                                       const struct hs_tmpl_value *s,
                                       const struct hs_tmpl_value *sep,
                                       const struct hs_tmpl_value *maxsplit, bool right)
{
    int64_t max = maxsplit && maxsplit->kind == HS_TMPL_INT ? maxsplit->u.i : -1;
    struct hs_tmpl_value *arr = p_new(r, HS_TMPL_ARRAY);
    if (!arr) {
        return NULL;
    }
    const char *p = s->u.s.p;
    size_t len = s->u.s.len;
    if (sep && sep->kind == HS_TMPL_STRING) {
        if (sep->u.s.len == 0) {
            return fail(r, n, HS_E_INVAL, "empty separator");
        }
        /* collect pieces in order; for rsplit, split from the right then reverse */
        size_t a = 0, b = len;
        int64_t done = 0;
        struct hs_tmpl_value *tmp = p_new(r, HS_TMPL_ARRAY);
        if (!tmp) {
            return NULL;
        }
        while (max < 0 || done < max) {
            const char *f = right ? memrfind(p + a, b - a, sep->u.s.p, sep->u.s.len)
                                  : memfind(p + a, b - a, sep->u.s.p, sep->u.s.len);
            if (!f) {
                break;
            }
            size_t at = (size_t)(f - p);
            struct hs_tmpl_value *piece = right ? p_str(r, f + sep->u.s.len,
                                                        b - at - sep->u.s.len)
                                                : p_str(r, p + a, at - a);
            if (!piece || !p_push(r, tmp, piece)) {
                return NULL;
            }
            if (right) {
                b = at;
            } else {
                a = at + sep->u.s.len;
            }
            done++;
        }
        struct hs_tmpl_value *last = p_str(r, p + a, b - a);
        if (!last || !p_push(r, tmp, last)) {
            return NULL;
        }
        for (size_t i = 0; i < tmp->u.a.n; i++) {
            if (!p_push(r, arr, tmp->u.a.v[right ? tmp->u.a.n - 1 - i : i])) {
                return NULL;
            }
        }
        return arr;
    }
    /* whitespace split (left only; rsplit without sep and maxsplit behaves the same) */
    size_t i = 0;
    int64_t done = 0;
    while (i < len) {
        while (i < len && in_set(p[i], NULL, 0)) {
            i++;
        }
        if (i >= len) {
            break;
        }
        size_t j = i;
        if (max >= 0 && done >= max) {
            j = len;
            while (j > i && in_set(p[j - 1], NULL, 0)) {
                j--;
            }
        } else {
            while (j < len && !in_set(p[j], NULL, 0)) {
                j++;
            }
        }
        struct hs_tmpl_value *piece = p_str(r, p + i, j - i);
        if (!piece || !p_push(r, arr, piece)) {
            return NULL;
        }
        done++;
        i = j;
    }
    return arr;
}

/* ==== conversions ==== */

static struct hs_tmpl_value *to_str(struct render *r, const struct hs_tmpl_value *v)
{
    if (v->kind == HS_TMPL_STRING) {
        return (struct hs_tmpl_value *)v;
    }
    struct hs__jbuf b = {0};
    if (hs__tmpl_str(&b, v) != HS_OK) {
        free(b.p);
        return fail(r, NULL, HS_E_RANGE, "value nested too deeply to print");
    }
    return p_buf(r, &b);
}

static bool is_num(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_INT || v->kind == HS_TMPL_FLOAT || v->kind == HS_TMPL_BOOL;
}

static double num_of(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_FLOAT ? v->u.f : v->kind == HS_TMPL_INT ? (double)v->u.i : v->u.b;
}

static int64_t int_of(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_INT ? v->u.i : v->u.b;
}

static bool is_intlike(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_INT || v->kind == HS_TMPL_BOOL;
}

/* Elements of an iterable as a new pooled array (items of arrays, keys of objects, code points of
 * strings); undefined gives an empty one. NULL + error otherwise. */
static struct hs_tmpl_value *to_list(struct render *r, const struct hs__jnode *n,
                                     const struct hs_tmpl_value *v)
{
    struct hs_tmpl_value *arr = p_new(r, HS_TMPL_ARRAY);
    if (!arr) {
        return NULL;
    }
    switch (v->kind) {
    case HS__TMPL_UNDEFINED:
        return arr;
    case HS_TMPL_ARRAY:
        for (size_t i = 0; i < v->u.a.n; i++) {
            if (!p_push(r, arr, v->u.a.v[i])) {
                return NULL;
            }
        }
        return arr;
    case HS_TMPL_OBJECT:
        for (size_t i = 0; i < v->u.o.n; i++) {
            struct hs_tmpl_value *k = p_str(r, v->u.o.k[i], strlen(v->u.o.k[i]));
            if (!k || !p_push(r, arr, k)) {
                return NULL;
            }
        }
        return arr;
    case HS_TMPL_STRING: {
        size_t cnt;
        size_t *off = utf8_offsets(v->u.s.p, v->u.s.len, &cnt);
        if (!off) {
            return oom(r);
        }
        for (size_t i = 0; i < cnt; i++) {
            struct hs_tmpl_value *c = p_str(r, v->u.s.p + off[i], off[i + 1] - off[i]);
            if (!c || !p_push(r, arr, c)) {
                free(off);
                return NULL;
            }
        }
        free(off);
        return arr;
    }
    default:
        return fail(r, n, HS_E_INVAL, "'%s' object is not iterable", kind_name(v));
    }
}

static struct hs_tmpl_value *items_of(struct render *r, const struct hs__jnode *n,
                                      const struct hs_tmpl_value *obj)
{
    if (obj->kind == HS__TMPL_UNDEFINED) {
        return p_new(r, HS_TMPL_ARRAY);
    }
    if (obj->kind != HS_TMPL_OBJECT) {
        return fail(r, n, HS_E_INVAL, "items() needs a dict, got %s", kind_name(obj));
    }
    struct hs_tmpl_value *arr = p_new(r, HS_TMPL_ARRAY);
    if (!arr) {
        return NULL;
    }
    for (size_t i = 0; i < obj->u.o.n; i++) {
        struct hs_tmpl_value *pair = p_new(r, HS_TMPL_ARRAY);
        if (pair) {
            pair->is_tuple = true;
        }
        struct hs_tmpl_value *k = pair ? p_str(r, obj->u.o.k[i], strlen(obj->u.o.k[i])) : NULL;
        if (!k || !p_push(r, pair, k) || !p_push(r, pair, obj->u.o.v[i]) ||
            !p_push(r, arr, pair)) {
            return NULL;
        }
    }
    return arr;
}

/* -1, 0, 1; sets r->st when not comparable. */
static int compare(struct render *r, const struct hs__jnode *n, const struct hs_tmpl_value *a,
                   const struct hs_tmpl_value *b)
{
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b)) {
            int64_t x = int_of(a), y = int_of(b);
            return x < y ? -1 : x > y;
        }
        double x = num_of(a), y = num_of(b);
        return x < y ? -1 : x > y;
    }
    if (a->kind == HS_TMPL_STRING && b->kind == HS_TMPL_STRING) {
        size_t m = HS_MIN(a->u.s.len, b->u.s.len);
        int c = memcmp(a->u.s.p, b->u.s.p, m);
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        return a->u.s.len < b->u.s.len ? -1 : a->u.s.len > b->u.s.len;
    }
    fail(r, n, HS_E_INVAL, "cannot compare %s with %s", kind_name(a), kind_name(b));
    return 0;
}

static bool contains(struct render *r, const struct hs__jnode *n,
                     const struct hs_tmpl_value *needle, const struct hs_tmpl_value *hay)
{
    switch (hay->kind) {
    case HS_TMPL_STRING:
        if (needle->kind != HS_TMPL_STRING) {
            fail(r, n, HS_E_INVAL, "'in <string>' needs a string on the left");
            return false;
        }
        return memfind(hay->u.s.p, hay->u.s.len, needle->u.s.p, needle->u.s.len) != NULL;
    case HS_TMPL_ARRAY:
        for (size_t i = 0; i < hay->u.a.n; i++) {
            if (hs__tmpl_equal(needle, hay->u.a.v[i])) {
                return true;
            }
        }
        return false;
    case HS_TMPL_OBJECT:
        return needle->kind == HS_TMPL_STRING &&
               hs__tmpl_object_find(hay, needle->u.s.p, needle->u.s.len) >= 0;
    case HS__TMPL_UNDEFINED:
        return false;
    default:
        fail(r, n, HS_E_INVAL, "argument of type '%s' is not iterable", kind_name(hay));
        return false;
    }
}

/* ==== arguments ==== */

struct args {
    int n, nk;
    struct hs_tmpl_value *pos[MAX_ARGS];
    const char *kname[MAX_ARGS];
    struct hs_tmpl_value *kval[MAX_ARGS];
};

static struct hs_tmpl_value *eval(struct render *r, const struct hs__jnode *n);

static bool eval_args(struct render *r, const struct hs__jnode *list, struct args *a)
{
    a->n = a->nk = 0;
    for (const struct hs__jnode *x = list; x; x = x->next) {
        if (a->n + a->nk >= MAX_ARGS) {
            fail(r, x, HS_E_INVAL, "too many arguments");
            return false;
        }
        struct hs_tmpl_value *v = eval(r, x->kind == HS__J_KWARG ? x->a : x);
        if (!v) {
            return false;
        }
        if (x->kind == HS__J_KWARG) {
            a->kname[a->nk] = x->name;
            a->kval[a->nk++] = v;
        } else {
            a->pos[a->n++] = v;
        }
    }
    return true;
}

/* Positional argument i, else keyword name, else NULL. */
static struct hs_tmpl_value *arg(const struct args *a, int i, const char *name)
{
    if (i >= 0 && i < a->n) {
        return a->pos[i];
    }
    for (int k = 0; name && k < a->nk; k++) {
        if (strcmp(a->kname[k], name) == 0) {
            return a->kval[k];
        }
    }
    return NULL;
}

/* ==== variables ==== */

static struct hs_tmpl_value *lookup(struct render *r, const char *name)
{
    size_t len = strlen(name);
    for (struct hs__frame *f = r->cur; f; f = f->parent) {
        ptrdiff_t at = hs__tmpl_object_find(f->vars, name, len);
        if (at >= 0) {
            return f->vars->u.o.v[at];
        }
    }
    ptrdiff_t at = hs__tmpl_object_find(r->ctx, name, len);
    if (at >= 0) {
        return r->ctx->u.o.v[at];
    }
    return NULL;
}

static struct hs__frame *new_frame(struct render *r, struct hs__frame *parent)
{
    if (!charge(r, sizeof(struct hs__frame))) {
        return NULL;
    }
    struct hs__frame *f = calloc(1, sizeof(*f));
    if (!f) {
        oom(r);
        return NULL;
    }
    f->next_alloc = r->frames;
    r->frames = f;
    f->parent = parent;
    f->vars = p_new(r, HS_TMPL_OBJECT);
    return f->vars ? f : NULL;
}

/* ==== filters, tests, methods ==== */

static bool count_iteration(struct render *r, const struct hs__jnode *n);

static bool run_test(struct render *r, const struct hs__jnode *n, const char *name,
                     const struct hs_tmpl_value *v, const struct args *a, int first_arg);

static struct hs_tmpl_value *get_attr(struct render *r, const struct hs__jnode *n,
                                      struct hs_tmpl_value *obj, const char *name);

static struct hs_tmpl_value *apply_filter(struct render *r, const struct hs__jnode *n,
                                          const char *f, struct hs_tmpl_value *v,
                                          const struct args *a);

/* select/reject/selectattr/rejectattr/map */
static struct hs_tmpl_value *filter_seq(struct render *r, const struct hs__jnode *n,
                                        const char *f, struct hs_tmpl_value *v,
                                        const struct args *a)
{
    struct hs_tmpl_value *items = to_list(r, n, v);
    struct hs_tmpl_value *out = items ? p_new(r, HS_TMPL_ARRAY) : NULL;
    if (!out) {
        return NULL;
    }
    bool attr = strcmp(f, "selectattr") == 0 || strcmp(f, "rejectattr") == 0;
    bool reject = f[0] == 'r';
    if (strcmp(f, "map") == 0) {
        struct hs_tmpl_value *at = arg(a, -1, "attribute");
        struct hs_tmpl_value *fname = arg(a, 0, NULL);
        struct hs_tmpl_value *dflt = arg(a, -1, "default");
        if (!at && (!fname || fname->kind != HS_TMPL_STRING)) {
            return fail(r, n, HS_E_INVAL, "map needs a filter name or attribute=");
        }
        struct args sub = {0};
        for (int i = 1; i < a->n; i++) {
            sub.pos[sub.n++] = a->pos[i];
        }
        for (size_t i = 0; i < items->u.a.n; i++) {
            struct hs_tmpl_value *x;
            if (at) {
                if (at->kind != HS_TMPL_STRING) {
                    return fail(r, n, HS_E_INVAL, "map attribute must be a string");
                }
                x = get_attr(r, n, items->u.a.v[i], at->u.s.p);
                if (x && x->kind == HS__TMPL_UNDEFINED && dflt) {
                    x = dflt;
                }
            } else {
                x = apply_filter(r, n, fname->u.s.p, items->u.a.v[i], &sub);
            }
            if (!x || !p_push(r, out, x)) {
                return NULL;
            }
        }
        return out;
    }
    struct hs_tmpl_value *at = NULL;
    int targ = 0;
    if (attr) {
        at = arg(a, 0, NULL);
        if (!at || at->kind != HS_TMPL_STRING) {
            return fail(r, n, HS_E_INVAL, "%s needs an attribute name", f);
        }
        targ = 1;
    }
    struct hs_tmpl_value *test = arg(a, targ, NULL);
    if (test && test->kind != HS_TMPL_STRING) {
        return fail(r, n, HS_E_INVAL, "%s needs a test name", f);
    }
    for (size_t i = 0; i < items->u.a.n; i++) {
        struct hs_tmpl_value *x = items->u.a.v[i];
        struct hs_tmpl_value *subject = at ? get_attr(r, n, x, at->u.s.p) : x;
        if (!subject) {
            return NULL;
        }
        bool ok = test ? run_test(r, n, test->u.s.p, subject, a, targ + 1)
                       : hs__tmpl_truthy(subject);
        if (r->st != HS_OK) {
            return NULL;
        }
        if (ok != reject && !p_push(r, out, x)) {
            return NULL;
        }
    }
    return out;
}

static struct hs_tmpl_value *filter_indent(struct render *r, const struct hs__jnode *n,
                                           struct hs_tmpl_value *v, const struct args *a)
{
    struct hs_tmpl_value *w = arg(a, 0, "width");
    struct hs_tmpl_value *first = arg(a, 1, "first");
    struct hs_tmpl_value *blank = arg(a, 2, "blank");
    struct hs__jbuf pad = {0};
    hs_status st = HS_OK;
    if (w && w->kind == HS_TMPL_STRING) {
        st = hs__jbuf_append(&pad, w->u.s.p, w->u.s.len);
    } else {
        int64_t k = w && is_intlike(w) ? int_of(w) : 4;
        for (int64_t i = 0; i < k && i < 1024 && st == HS_OK; i++) {
            st = hs__jbuf_putc(&pad, ' ');
        }
    }
    struct hs__jbuf b = {0};
    const char *s = v->u.s.p;
    size_t len = v->u.s.len, i = 0;
    bool is_first = true;
    while (i <= len && st == HS_OK) {
        size_t j = i;
        while (j < len && s[j] != '\n') {
            j++;
        }
        bool empty = j == i;
        bool do_pad = (!is_first || (first && hs__tmpl_truthy(first))) &&
                      (!empty || (blank && hs__tmpl_truthy(blank)));
        if (do_pad && pad.len) {
            st = hs__jbuf_append(&b, pad.p, pad.len);
        }
        if (st == HS_OK) {
            st = hs__jbuf_append(&b, s + i, j - i + (j < len ? 1 : 0));
        }
        is_first = false;
        if (j >= len) {
            break;
        }
        i = j + 1;
        if (i == len) {
            break; /* trailing newline: no padded empty line after it */
        }
        if (b.len > r->lim.max_memory_bytes) {
            break;
        }
    }
    free(pad.p);
    if (st != HS_OK) {
        free(b.p);
        return oom(r);
    }
    return p_buf(r, &b);
}

static int cmp_for_sort(struct render *r, const struct hs__jnode *n, struct hs_tmpl_value *x,
                        struct hs_tmpl_value *y, bool ci)
{
    if (ci && x->kind == HS_TMPL_STRING && y->kind == HS_TMPL_STRING) {
        size_t m = HS_MIN(x->u.s.len, y->u.s.len);
        for (size_t i = 0; i < m; i++) {
            int cx = (unsigned char)x->u.s.p[i], cy = (unsigned char)y->u.s.p[i];
            cx = cx >= 'A' && cx <= 'Z' ? cx + 32 : cx;
            cy = cy >= 'A' && cy <= 'Z' ? cy + 32 : cy;
            if (cx != cy) {
                return cx < cy ? -1 : 1;
            }
        }
        return x->u.s.len < y->u.s.len ? -1 : x->u.s.len > y->u.s.len;
    }
    return compare(r, n, x, y);
}

static struct hs_tmpl_value *apply_filter(struct render *r, const struct hs__jnode *n,
                                          const char *f, struct hs_tmpl_value *v,
                                          const struct args *a)
{
    bool str = v->kind == HS_TMPL_STRING;
    if (strcmp(f, "default") == 0 || strcmp(f, "d") == 0) {
        struct hs_tmpl_value *dv = arg(a, 0, "default_value");
        struct hs_tmpl_value *boolean = arg(a, 1, "boolean");
        bool use = v->kind == HS__TMPL_UNDEFINED ||
                   (boolean && hs__tmpl_truthy(boolean) && !hs__tmpl_truthy(v));
        if (use) {
            return dv ? dv : p_str(r, "", 0);
        }
        return v;
    }
    if (strcmp(f, "safe") == 0) {
        return v;
    }
    if (strcmp(f, "string") == 0) {
        return to_str(r, v);
    }
    if (strcmp(f, "tojson") == 0) {
        struct hs_tmpl_value *ind = arg(a, 0, "indent");
        int indent = ind && is_intlike(ind) ? (int)HS_MAX(0, HS_MIN(int_of(ind), 64)) : -1;
        struct hs__jbuf b = {0};
        hs_status st = hs__tmpl_json(&b, v, indent);
        if (st != HS_OK) {
            free(b.p);
            return st == HS_E_NOMEM ? oom(r)
                                    : fail(r, n, HS_E_INVAL, "value cannot be written as JSON");
        }
        return p_buf(r, &b);
    }
    if (strcmp(f, "length") == 0 || strcmp(f, "count") == 0) {
        switch (v->kind) {
        case HS_TMPL_STRING:
            return p_int(r, (int64_t)utf8_count(v->u.s.p, v->u.s.len));
        case HS_TMPL_ARRAY:
            return p_int(r, (int64_t)v->u.a.n);
        case HS_TMPL_OBJECT:
            return p_int(r, (int64_t)v->u.o.n);
        case HS__TMPL_UNDEFINED:
            return p_int(r, 0);
        default:
            return fail(r, n, HS_E_INVAL, "object of type '%s' has no length", kind_name(v));
        }
    }
    if (strcmp(f, "first") == 0 || strcmp(f, "last") == 0) {
        struct hs_tmpl_value *l = to_list(r, n, v);
        if (!l) {
            return NULL;
        }
        if (l->u.a.n == 0) {
            return &v_undef;
        }
        return l->u.a.v[f[0] == 'f' ? 0 : l->u.a.n - 1];
    }
    if (strcmp(f, "list") == 0) {
        return to_list(r, n, v);
    }
    if (strcmp(f, "items") == 0) {
        return items_of(r, n, v);
    }
    if (strcmp(f, "unique") == 0 || strcmp(f, "reverse") == 0) {
        bool rev = f[0] == 'r';
        struct hs_tmpl_value *l = to_list(r, n, v);
        struct hs_tmpl_value *out = l ? p_new(r, HS_TMPL_ARRAY) : NULL;
        if (!out) {
            return NULL;
        }
        for (size_t i = 0; i < l->u.a.n; i++) {
            struct hs_tmpl_value *x = l->u.a.v[rev ? l->u.a.n - 1 - i : i];
            bool seen = false;
            for (size_t j = 0; !rev && j < out->u.a.n && !seen; j++) {
                if (!count_iteration(r, n)) { /* quadratic: counts against the loop limit */
                    return NULL;
                }
                seen = hs__tmpl_equal(out->u.a.v[j], x);
            }
            if (!seen && !p_push(r, out, x)) {
                return NULL;
            }
        }
        if (rev && str) {
            struct hs__jbuf b = {0};
            for (size_t i = 0; i < out->u.a.n; i++) {
                if (hs__jbuf_append(&b, out->u.a.v[i]->u.s.p, out->u.a.v[i]->u.s.len) != HS_OK) {
                    free(b.p);
                    return oom(r);
                }
            }
            return p_buf(r, &b);
        }
        return out;
    }
    if (strcmp(f, "join") == 0) {
        struct hs_tmpl_value *sep = arg(a, 0, "d");
        struct hs_tmpl_value *at = arg(a, 1, "attribute");
        struct hs_tmpl_value *l = to_list(r, n, v);
        if (!l) {
            return NULL;
        }
        struct hs__jbuf b = {0};
        hs_status st = HS_OK;
        for (size_t i = 0; i < l->u.a.n && st == HS_OK; i++) {
            struct hs_tmpl_value *x = l->u.a.v[i];
            if (at && at->kind == HS_TMPL_STRING) {
                x = get_attr(r, n, x, at->u.s.p);
                if (!x) {
                    free(b.p);
                    return NULL;
                }
            }
            if (i && sep && sep->kind == HS_TMPL_STRING) {
                st = hs__jbuf_append(&b, sep->u.s.p, sep->u.s.len);
            }
            if (st == HS_OK) {
                st = hs__tmpl_str(&b, x);
            }
            if (b.len > r->lim.max_memory_bytes) {
                free(b.p);
                return fail(r, n, HS_E_RANGE, "string too long");
            }
        }
        if (st != HS_OK) {
            free(b.p);
            return oom(r);
        }
        return p_buf(r, &b);
    }
    if (strcmp(f, "select") == 0 || strcmp(f, "reject") == 0 || strcmp(f, "selectattr") == 0 ||
        strcmp(f, "rejectattr") == 0 || strcmp(f, "map") == 0) {
        return filter_seq(r, n, f, v, a);
    }
    if (strcmp(f, "dictsort") == 0 || strcmp(f, "sort") == 0) {
        bool dict = f[0] == 'd';
        struct hs_tmpl_value *l = dict ? items_of(r, n, v) : to_list(r, n, v);
        if (!l) {
            return NULL;
        }
        struct hs_tmpl_value *cs = arg(a, dict ? 0 : 1, "case_sensitive");
        struct hs_tmpl_value *rev = arg(a, dict ? 2 : 0, "reverse");
        struct hs_tmpl_value *at = dict ? NULL : arg(a, 2, "attribute");
        bool ci = !(cs && hs__tmpl_truthy(cs));
        bool desc = rev && hs__tmpl_truthy(rev);
        /* insertion sort: stable, and lists here are short */
        for (size_t i = 1; i < l->u.a.n; i++) {
            struct hs_tmpl_value *x = l->u.a.v[i];
            size_t j = i;
            while (j > 0) {
                if (!count_iteration(r, n)) {
                    return NULL;
                }
                struct hs_tmpl_value *kx = x, *ky = l->u.a.v[j - 1];
                if (dict) {
                    kx = kx->u.a.v[0];
                    ky = ky->u.a.v[0];
                } else if (at && at->kind == HS_TMPL_STRING) {
                    kx = get_attr(r, n, kx, at->u.s.p);
                    ky = kx ? get_attr(r, n, ky, at->u.s.p) : NULL;
                    if (!ky) {
                        return NULL;
                    }
                }
                int c = cmp_for_sort(r, n, ky, kx, ci);
                if (r->st != HS_OK) {
                    return NULL;
                }
                if (desc ? c >= 0 : c <= 0) {
                    break;
                }
                l->u.a.v[j] = l->u.a.v[j - 1];
                j--;
            }
            l->u.a.v[j] = x;
        }
        return l;
    }
    if (strcmp(f, "int") == 0 || strcmp(f, "float") == 0) {
        bool want_int = f[0] == 'i';
        struct hs_tmpl_value *dflt = arg(a, 0, "default");
        double d = 0;
        bool ok = true;
        if (is_num(v)) {
            if (want_int && is_intlike(v)) {
                return p_int(r, int_of(v));
            }
            d = num_of(v);
        } else if (str) {
            char *end;
            d = strtod(v->u.s.p, &end);
            ok = end != v->u.s.p;
            while (ok && *end && in_set(*end, NULL, 0)) {
                end++;
            }
            ok = ok && *end == '\0';
        } else {
            ok = false;
        }
        if (!ok) {
            if (dflt) {
                return dflt;
            }
            return want_int ? p_int(r, 0) : p_float(r, 0.0);
        }
        if (want_int) {
            if (!(d > -9.2e18 && d < 9.2e18)) {
                return fail(r, n, HS_E_INVAL, "number out of integer range");
            }
            return p_int(r, (int64_t)d);
        }
        return p_float(r, d);
    }
    if (strcmp(f, "abs") == 0) {
        if (v->kind == HS_TMPL_FLOAT) {
            return p_float(r, fabs(v->u.f));
        }
        if (is_intlike(v)) {
            int64_t i = int_of(v);
            if (i == INT64_MIN) {
                return fail(r, n, HS_E_RANGE, "integer overflow");
            }
            return p_int(r, i < 0 ? -i : i);
        }
        return fail(r, n, HS_E_INVAL, "bad operand type for abs(): '%s'", kind_name(v));
    }
    if (strcmp(f, "round") == 0) {
        struct hs_tmpl_value *prec = arg(a, 0, "precision");
        struct hs_tmpl_value *method = arg(a, 1, "method");
        if (!is_num(v)) {
            return fail(r, n, HS_E_INVAL, "round needs a number");
        }
        int64_t pr = prec && is_intlike(prec) ? int_of(prec) : 0;
        pr = HS_MAX(-20, HS_MIN(pr, 20));
        double scale = pow(10.0, (double)pr), x = num_of(v) * scale;
        const char *m = method && method->kind == HS_TMPL_STRING ? method->u.s.p : "common";
        if (strcmp(m, "ceil") == 0) {
            x = ceil(x);
        } else if (strcmp(m, "floor") == 0) {
            x = floor(x);
        } else if (pr >= 0 && isfinite(num_of(v))) {
            /* Python's round(): half-even on the exact decimal value, which printf gives */
            char buf[400];
            snprintf(buf, sizeof(buf), "%.*f", (int)pr, num_of(v));
            return p_float(r, strtod(buf, NULL));
        } else {
            x = nearbyint(x);
        }
        return p_float(r, x / scale);
    }
    if (strcmp(f, "attr") == 0) {
        struct hs_tmpl_value *name = arg(a, 0, NULL);
        if (!name || name->kind != HS_TMPL_STRING) {
            return fail(r, n, HS_E_INVAL, "attr needs a name");
        }
        return get_attr(r, n, v, name->u.s.p);
    }
    /* string filters */
    if (!str && v->kind == HS__TMPL_UNDEFINED) {
        v = p_str(r, "", 0);
        if (!v) {
            return NULL;
        }
        str = true;
    }
    static const char *const str_filters[] = {"trim", "upper", "lower", "title", "capitalize",
                                              "replace", "indent", "center", "wordcount", "e",
                                              "escape"};
    bool is_str_filter = false;
    for (size_t i = 0; i < HS_ARRAY_LEN(str_filters); i++) {
        is_str_filter |= strcmp(f, str_filters[i]) == 0;
    }
    if (is_str_filter && !str) {
        v = to_str(r, v);
        if (!v) {
            return NULL;
        }
    }
    if (strcmp(f, "trim") == 0) {
        return str_strip(r, v, arg(a, 0, "chars"), 3);
    }
    if (strcmp(f, "upper") == 0) {
        return str_case(r, v, utf8proc_toupper, 0);
    }
    if (strcmp(f, "lower") == 0) {
        return str_case(r, v, utf8proc_tolower, 0);
    }
    if (strcmp(f, "title") == 0) {
        return str_case(r, v, NULL, 1);
    }
    if (strcmp(f, "capitalize") == 0) {
        return str_case(r, v, NULL, 2);
    }
    if (strcmp(f, "replace") == 0) {
        return str_replace(r, n, v, arg(a, 0, "old"), arg(a, 1, "new"), arg(a, 2, "count"));
    }
    if (strcmp(f, "indent") == 0) {
        return filter_indent(r, n, v, a);
    }
    if (strcmp(f, "center") == 0) {
        struct hs_tmpl_value *w = arg(a, 0, "width");
        int64_t width = w && is_intlike(w) ? HS_MIN(int_of(w), 100000) : 80;
        int64_t len = (int64_t)utf8_count(v->u.s.p, v->u.s.len);
        if (width <= len) {
            return v;
        }
        int64_t total = width - len, left = total / 2 + (total & width & 1);
        struct hs__jbuf b = {0};
        hs_status st = HS_OK;
        for (int64_t i = 0; i < left && st == HS_OK; i++) {
            st = hs__jbuf_putc(&b, ' ');
        }
        if (st == HS_OK) {
            st = hs__jbuf_append(&b, v->u.s.p, v->u.s.len);
        }
        for (int64_t i = 0; i < total - left && st == HS_OK; i++) {
            st = hs__jbuf_putc(&b, ' ');
        }
        if (st != HS_OK) {
            free(b.p);
            return oom(r);
        }
        return p_buf(r, &b);
    }
    if (strcmp(f, "wordcount") == 0) {
        struct hs_tmpl_value *words = str_split(r, n, v, NULL, NULL, false);
        return words ? p_int(r, (int64_t)words->u.a.n) : NULL;
    }
    if (strcmp(f, "e") == 0 || strcmp(f, "escape") == 0) {
        struct hs__jbuf b = {0};
        hs_status st = HS_OK;
        for (size_t i = 0; i < v->u.s.len && st == HS_OK; i++) {
            char c = v->u.s.p[i];
            const char *rep = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;"
                            : c == '"' ? "&#34;" : c == '\'' ? "&#39;" : NULL;
            st = rep ? hs__jbuf_append(&b, rep, strlen(rep)) : hs__jbuf_putc(&b, c);
        }
        if (st != HS_OK) {
            free(b.p);
            return oom(r);
        }
        return p_buf(r, &b);
    }
    return fail(r, n, HS_E_INVAL, "unknown filter '%s'", f);
}

static bool run_test(struct render *r, const struct hs__jnode *n, const char *t,
                     const struct hs_tmpl_value *v, const struct args *a, int first_arg)
{
    const struct hs_tmpl_value *x = arg(a, first_arg, NULL);
    int k = v->kind;
    if (strcmp(t, "defined") == 0) {
        return k != HS__TMPL_UNDEFINED;
    }
    if (strcmp(t, "undefined") == 0) {
        return k == HS__TMPL_UNDEFINED;
    }
    if (strcmp(t, "none") == 0) {
        return k == HS_TMPL_NULL;
    }
    if (strcmp(t, "string") == 0) {
        return k == HS_TMPL_STRING;
    }
    if (strcmp(t, "mapping") == 0) {
        return k == HS_TMPL_OBJECT;
    }
    if (strcmp(t, "iterable") == 0) {
        return k == HS_TMPL_STRING || k == HS_TMPL_ARRAY || k == HS_TMPL_OBJECT;
    }
    if (strcmp(t, "sequence") == 0) {
        return k == HS_TMPL_STRING || k == HS_TMPL_ARRAY || k == HS_TMPL_OBJECT;
    }
    if (strcmp(t, "number") == 0) {
        return k == HS_TMPL_INT || k == HS_TMPL_FLOAT;
    }
    if (strcmp(t, "integer") == 0) {
        return k == HS_TMPL_INT;
    }
    if (strcmp(t, "float") == 0) {
        return k == HS_TMPL_FLOAT;
    }
    if (strcmp(t, "boolean") == 0) {
        return k == HS_TMPL_BOOL;
    }
    if (strcmp(t, "true") == 0) {
        return k == HS_TMPL_BOOL && v->u.b;
    }
    if (strcmp(t, "false") == 0) {
        return k == HS_TMPL_BOOL && !v->u.b;
    }
    if (strcmp(t, "callable") == 0) {
        return k == HS__TMPL_MACRO;
    }
    if (strcmp(t, "lower") == 0 || strcmp(t, "upper") == 0) {
        if (k != HS_TMPL_STRING) {
            return false;
        }
        bool up = t[0] == 'u';
        for (size_t i = 0; i < v->u.s.len; i++) {
            char c = v->u.s.p[i];
            if (up ? (c >= 'a' && c <= 'z') : (c >= 'A' && c <= 'Z')) {
                return false;
            }
        }
        return true;
    }
    if (strcmp(t, "odd") == 0 || strcmp(t, "even") == 0 || strcmp(t, "divisibleby") == 0) {
        if (!is_intlike(v)) {
            fail(r, n, HS_E_INVAL, "test '%s' needs an integer", t);
            return false;
        }
        int64_t i = int_of(v);
        if (t[0] == 'o') {
            return i % 2 != 0;
        }
        if (t[0] == 'e') {
            return i % 2 == 0;
        }
        if (!x || !is_intlike(x) || int_of(x) == 0) {
            fail(r, n, HS_E_INVAL, "divisibleby needs a non-zero integer");
            return false;
        }
        return int_of(x) == -1 || i % int_of(x) == 0;
    }
    if (!x) {
        fail(r, n, HS_E_INVAL, "unknown test '%s' or missing argument", t);
        return false;
    }
    if (strcmp(t, "equalto") == 0 || strcmp(t, "eq") == 0 || strcmp(t, "==") == 0 ||
        strcmp(t, "sameas") == 0) {
        return hs__tmpl_equal(v, x);
    }
    if (strcmp(t, "ne") == 0) {
        return !hs__tmpl_equal(v, x);
    }
    if (strcmp(t, "in") == 0) {
        return contains(r, n, v, x);
    }
    int c;
    if (strcmp(t, "lt") == 0 || strcmp(t, "lessthan") == 0) {
        c = compare(r, n, v, x);
        return c < 0;
    }
    if (strcmp(t, "le") == 0) {
        return compare(r, n, v, x) <= 0;
    }
    if (strcmp(t, "gt") == 0 || strcmp(t, "greaterthan") == 0) {
        return compare(r, n, v, x) > 0;
    }
    if (strcmp(t, "ge") == 0) {
        return compare(r, n, v, x) >= 0;
    }
    fail(r, n, HS_E_INVAL, "unknown test '%s'", t);
    return false;
}

/* Attribute access: dict keys, loop fields; undefined for anything else. */
static struct hs_tmpl_value *get_attr(struct render *r, const struct hs__jnode *n,
                                      struct hs_tmpl_value *obj, const char *name)
{
    if (obj->kind == HS__TMPL_UNDEFINED) {
        return fail(r, n, HS_E_INVAL, "cannot read attribute '%s' of an undefined value", name);
    }
    if (obj->kind == HS_TMPL_OBJECT) {
        ptrdiff_t at = hs__tmpl_object_find(obj, name, strlen(name));
        return at >= 0 ? obj->u.o.v[at] : &v_undef;
    }
    if (obj->kind == HS__TMPL_LOOP) {
        size_t i = obj->u.loop.index0, len = obj->u.loop.length;
        if (strcmp(name, "index") == 0) {
            return p_int(r, (int64_t)i + 1);
        }
        if (strcmp(name, "index0") == 0) {
            return p_int(r, (int64_t)i);
        }
        if (strcmp(name, "revindex") == 0) {
            return p_int(r, (int64_t)(len - i));
        }
        if (strcmp(name, "revindex0") == 0) {
            return p_int(r, (int64_t)(len - i - 1));
        }
        if (strcmp(name, "first") == 0) {
            return p_bool(i == 0);
        }
        if (strcmp(name, "last") == 0) {
            return p_bool(i + 1 == len);
        }
        if (strcmp(name, "length") == 0) {
            return p_int(r, (int64_t)len);
        }
        const struct hs_tmpl_value *items = obj->u.loop.items;
        if (strcmp(name, "previtem") == 0) {
            return i > 0 && i - 1 < items->u.a.n ? items->u.a.v[i - 1] : &v_undef;
        }
        if (strcmp(name, "nextitem") == 0) {
            return i + 1 < len && i + 1 < items->u.a.n ? items->u.a.v[i + 1] : &v_undef;
        }
    }
    return &v_undef;
}

static struct hs_tmpl_value *get_index(struct render *r, const struct hs__jnode *n,
                                       struct hs_tmpl_value *obj, struct hs_tmpl_value *idx)
{
    switch (obj->kind) {
    case HS_TMPL_OBJECT:
        if (idx->kind == HS_TMPL_STRING) {
            ptrdiff_t at = hs__tmpl_object_find(obj, idx->u.s.p, idx->u.s.len);
            return at >= 0 ? obj->u.o.v[at] : &v_undef;
        }
        return &v_undef;
    case HS_TMPL_ARRAY:
    case HS_TMPL_STRING: {
        if (!is_intlike(idx)) {
            if (idx->kind == HS_TMPL_STRING) {
                return get_attr(r, n, obj, idx->u.s.p);
            }
            return fail(r, n, HS_E_INVAL, "indices must be integers");
        }
        int64_t i = int_of(idx);
        if (obj->kind == HS_TMPL_ARRAY) {
            int64_t len = (int64_t)obj->u.a.n;
            if (i < 0) {
                i += len;
            }
            return i >= 0 && i < len ? obj->u.a.v[i] : &v_undef;
        }
        size_t cnt;
        size_t *off = utf8_offsets(obj->u.s.p, obj->u.s.len, &cnt);
        if (!off) {
            return oom(r);
        }
        if (i < 0) {
            i += (int64_t)cnt;
        }
        struct hs_tmpl_value *res = &v_undef;
        if (i >= 0 && i < (int64_t)cnt) {
            res = p_str(r, obj->u.s.p + off[i], off[i + 1] - off[i]);
        }
        free(off);
        return res;
    }
    case HS__TMPL_UNDEFINED:
        return fail(r, n, HS_E_INVAL, "cannot index an undefined value");
    case HS__TMPL_LOOP:
        if (idx->kind == HS_TMPL_STRING) {
            return get_attr(r, n, obj, idx->u.s.p);
        }
        return &v_undef;
    default:
        return &v_undef;
    }
}

static struct hs_tmpl_value *get_slice(struct render *r, const struct hs__jnode *n,
                                       struct hs_tmpl_value *obj, struct hs_tmpl_value *sa,
                                       struct hs_tmpl_value *sb, struct hs_tmpl_value *sc)
{
    if (obj->kind != HS_TMPL_ARRAY && obj->kind != HS_TMPL_STRING) {
        return fail(r, n, HS_E_INVAL, "cannot slice a %s", kind_name(obj));
    }
    struct hs_tmpl_value *bounds[3] = {sa, sb, sc};
    for (int i = 0; i < 3; i++) {
        if (bounds[i] && bounds[i]->kind == HS_TMPL_NULL) {
            bounds[i] = NULL;
        }
        if (bounds[i] && !is_intlike(bounds[i])) {
            return fail(r, n, HS_E_INVAL, "slice indices must be integers");
        }
    }
    int64_t step = bounds[2] ? int_of(bounds[2]) : 1;
    if (step == 0) {
        return fail(r, n, HS_E_INVAL, "slice step cannot be zero");
    }
    size_t cnt = obj->u.a.n;
    size_t *off = NULL;
    if (obj->kind == HS_TMPL_STRING) {
        off = utf8_offsets(obj->u.s.p, obj->u.s.len, &cnt);
        if (!off) {
            return oom(r);
        }
    }
    int64_t len = (int64_t)cnt;
    /* Python's slice.indices */
    int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? len - 1 : len;
    int64_t start = step < 0 ? hi : lo, stop = step < 0 ? lo : hi;
    if (bounds[0]) {
        start = int_of(bounds[0]);
        start = start < 0 ? HS_MAX(start + len, lo) : HS_MIN(start, hi);
    }
    if (bounds[1]) {
        stop = int_of(bounds[1]);
        stop = stop < 0 ? HS_MAX(stop + len, lo) : HS_MIN(stop, hi);
    }
    struct hs_tmpl_value *out = NULL;
    struct hs__jbuf b = {0};
    if (obj->kind == HS_TMPL_ARRAY) {
        out = p_new(r, HS_TMPL_ARRAY);
    }
    bool ok = obj->kind == HS_TMPL_STRING || out;
    for (int64_t i = start; ok && (step > 0 ? i < stop : i > stop);) {
        if (out) {
            ok = p_push(r, out, obj->u.a.v[i]);
        } else if (hs__jbuf_append(&b, obj->u.s.p + off[i], off[i + 1] - off[i]) != HS_OK) {
            oom(r);
            ok = false;
        }
        if (__builtin_add_overflow(i, step, &i)) {
            break;
        }
    }
    free(off);
    if (!ok) {
        free(b.p);
        return NULL;
    }
    return out ? out : p_buf(r, &b);
}

/* ==== calls ==== */

static void exec_list(struct render *r, const struct hs__jnode *n, struct hs__jbuf *out);

static struct hs_tmpl_value *call_macro(struct render *r, const struct hs__jnode *site,
                                        struct hs_tmpl_value *m, const struct args *a)
{
    if (r->call_depth >= r->lim.max_call_depth) {
        return fail(r, site, HS_E_RANGE, "macro calls nested deeper than %d",
                    r->lim.max_call_depth);
    }
    const struct hs__jnode *def = m->u.m.node;
    const struct hs__jnode *params = def->a;
    const struct hs__jnode *body = m->u.m.is_caller ? def->c : def->b;
    struct hs_tmpl_value *caller = r->pending_caller;
    r->pending_caller = NULL;
    struct hs__frame *f = new_frame(r, m->u.m.is_caller ? m->u.m.frame : r->globals);
    if (!f) {
        return NULL;
    }
    struct hs__frame *saved = r->cur;
    r->cur = f;
    int i = 0;
    for (const struct hs__jnode *p = params; p; p = p->next, i++) {
        struct hs_tmpl_value *v = arg(a, i, p->name);
        if (!v) {
            v = p->kind == HS__J_KWARG ? eval(r, p->a) : &v_undef;
            if (!v) {
                r->cur = saved;
                return NULL;
            }
        }
        if (!p_set(r, f->vars, p->name, strlen(p->name), v)) {
            r->cur = saved;
            return NULL;
        }
    }
    if (caller && !p_set(r, f->vars, "caller", 6, caller)) {
        r->cur = saved;
        return NULL;
    }
    struct hs__jbuf b = {0};
    r->call_depth++;
    exec_list(r, body, &b);
    r->call_depth--;
    r->ctl = 0;
    r->cur = saved;
    if (r->st != HS_OK) {
        free(b.p);
        return NULL;
    }
    return p_buf(r, &b);
}

static struct hs_tmpl_value *call_method(struct render *r, const struct hs__jnode *n,
                                         struct hs_tmpl_value *obj, const char *m,
                                         const struct args *a)
{
    struct hs_tmpl_value *x = arg(a, 0, NULL), *y = arg(a, 1, NULL);
    if (obj->kind == HS_TMPL_STRING) {
        if (strcmp(m, "strip") == 0) {
            return str_strip(r, obj, x, 3);
        }
        if (strcmp(m, "lstrip") == 0) {
            return str_strip(r, obj, x, 1);
        }
        if (strcmp(m, "rstrip") == 0) {
            return str_strip(r, obj, x, 2);
        }
        if (strcmp(m, "split") == 0 || strcmp(m, "rsplit") == 0) {
            return str_split(r, n, obj, arg(a, 0, "sep"), arg(a, 1, "maxsplit"), m[0] == 'r');
        }
        if (strcmp(m, "startswith") == 0 || strcmp(m, "endswith") == 0) {
            bool start = m[0] == 's';
            if (!x) {
                return fail(r, n, HS_E_INVAL, "%s() needs an argument", m);
            }
            size_t cnt = x->kind == HS_TMPL_ARRAY ? x->u.a.n : 1;
            for (size_t i = 0; i < cnt; i++) {
                struct hs_tmpl_value *s = x->kind == HS_TMPL_ARRAY ? x->u.a.v[i] : x;
                if (s->kind != HS_TMPL_STRING) {
                    return fail(r, n, HS_E_INVAL, "%s() needs a string", m);
                }
                if (s->u.s.len <= obj->u.s.len &&
                    memcmp(obj->u.s.p + (start ? 0 : obj->u.s.len - s->u.s.len), s->u.s.p,
                           s->u.s.len) == 0) {
                    return p_bool(true);
                }
            }
            return p_bool(false);
        }
        if (strcmp(m, "find") == 0 || strcmp(m, "count") == 0 || strcmp(m, "rfind") == 0) {
            if (!x || x->kind != HS_TMPL_STRING) {
                return fail(r, n, HS_E_INVAL, "%s() needs a string", m);
            }
            if (m[0] == 'c') {
                int64_t c = 0;
                const char *p = obj->u.s.p, *end = p + obj->u.s.len;
                if (x->u.s.len == 0) {
                    return p_int(r, (int64_t)utf8_count(p, obj->u.s.len) + 1);
                }
                while ((p = memfind(p, (size_t)(end - p), x->u.s.p, x->u.s.len))) {
                    c++;
                    p += x->u.s.len;
                }
                return p_int(r, c);
            }
            const char *f = m[0] == 'r' ? memrfind(obj->u.s.p, obj->u.s.len, x->u.s.p, x->u.s.len)
                                        : memfind(obj->u.s.p, obj->u.s.len, x->u.s.p, x->u.s.len);
            return p_int(r, f ? (int64_t)utf8_count(obj->u.s.p, (size_t)(f - obj->u.s.p)) : -1);
        }
        if (strcmp(m, "replace") == 0) {
            return str_replace(r, n, obj, x, y, arg(a, 2, "count"));
        }
        if (strcmp(m, "upper") == 0) {
            return str_case(r, obj, utf8proc_toupper, 0);
        }
        if (strcmp(m, "lower") == 0) {
            return str_case(r, obj, utf8proc_tolower, 0);
        }
        if (strcmp(m, "title") == 0) {
            return str_case(r, obj, NULL, 1);
        }
        if (strcmp(m, "capitalize") == 0) {
            return str_case(r, obj, NULL, 2);
        }
        if (strcmp(m, "join") == 0) {
            struct args ja = {.n = 1, .pos = {obj}};
            return x ? apply_filter(r, n, "join", x, &ja) : fail(r, n, HS_E_INVAL, "join()");
        }
        if (strcmp(m, "isdigit") == 0 || strcmp(m, "isspace") == 0) {
            bool ok = obj->u.s.len > 0;
            for (size_t i = 0; i < obj->u.s.len && ok; i++) {
                char c = obj->u.s.p[i];
                ok = m[2] == 'd' ? (c >= '0' && c <= '9') : in_set(c, NULL, 0);
            }
            return p_bool(ok);
        }
    } else if (obj->kind == HS_TMPL_OBJECT) {
        if (strcmp(m, "get") == 0) {
            if (!x || x->kind != HS_TMPL_STRING) {
                return y ? y : &v_none;
            }
            ptrdiff_t at = hs__tmpl_object_find(obj, x->u.s.p, x->u.s.len);
            return at >= 0 ? obj->u.o.v[at] : y ? y : &v_none;
        }
        if (strcmp(m, "items") == 0) {
            return items_of(r, n, obj);
        }
        if (strcmp(m, "keys") == 0) {
            return to_list(r, n, obj);
        }
        if (strcmp(m, "values") == 0) {
            struct hs_tmpl_value *out = p_new(r, HS_TMPL_ARRAY);
            for (size_t i = 0; out && i < obj->u.o.n; i++) {
                if (!p_push(r, out, obj->u.o.v[i])) {
                    return NULL;
                }
            }
            return out;
        }
        ptrdiff_t at = hs__tmpl_object_find(obj, m, strlen(m));
        if (at >= 0 && obj->u.o.v[at]->kind == HS__TMPL_MACRO) {
            return call_macro(r, n, obj->u.o.v[at], a);
        }
    } else if (obj->kind == HS_TMPL_ARRAY) {
        if (strcmp(m, "append") == 0) {
            if (!obj->pooled) {
                return fail(r, n, HS_E_INVAL, "cannot modify a list from the context");
            }
            if (!x || !p_push(r, obj, x)) {
                return x ? NULL : fail(r, n, HS_E_INVAL, "append() needs an argument");
            }
            return &v_none;
        }
        if (strcmp(m, "index") == 0 && x) {
            for (size_t i = 0; i < obj->u.a.n; i++) {
                if (hs__tmpl_equal(obj->u.a.v[i], x)) {
                    return p_int(r, (int64_t)i);
                }
            }
            return fail(r, n, HS_E_INVAL, "value not in list");
        }
    }
    return fail(r, n, HS_E_INVAL, "'%s' has no method '%s'", kind_name(obj), m);
}

static struct hs_tmpl_value *make_range(struct render *r, const struct hs__jnode *n,
                                        const struct args *a)
{
    int64_t v[3] = {0, 0, 1};
    if (a->n < 1 || a->n > 3) {
        return fail(r, n, HS_E_INVAL, "range() takes 1 to 3 arguments");
    }
    for (int i = 0; i < a->n; i++) {
        if (!is_intlike(a->pos[i])) {
            return fail(r, n, HS_E_INVAL, "range() needs integers");
        }
    }
    if (a->n == 1) {
        v[1] = int_of(a->pos[0]);
    } else {
        v[0] = int_of(a->pos[0]);
        v[1] = int_of(a->pos[1]);
        if (a->n == 3) {
            v[2] = int_of(a->pos[2]);
        }
    }
    if (v[2] == 0) {
        return fail(r, n, HS_E_INVAL, "range() step must not be zero");
    }
    struct hs_tmpl_value *out = p_new(r, HS_TMPL_ARRAY);
    uint64_t count = 0;
    for (int64_t i = v[0]; out && (v[2] > 0 ? i < v[1] : i > v[1]); count++) {
        if (count >= r->lim.max_loop_iterations) {
            return fail(r, n, HS_E_RANGE, "range() longer than the loop limit");
        }
        struct hs_tmpl_value *x = p_int(r, i);
        if (!x || !p_push(r, out, x)) {
            return NULL;
        }
        if (__builtin_add_overflow(i, v[2], &i)) {
            break;
        }
    }
    return out;
}

static struct hs_tmpl_value *call_global(struct render *r, const struct hs__jnode *n,
                                         const char *name, const struct args *a)
{
    if (strcmp(name, "range") == 0) {
        return make_range(r, n, a);
    }
    if (strcmp(name, "namespace") == 0 || strcmp(name, "dict") == 0) {
        struct hs_tmpl_value *o = p_new(r, HS_TMPL_OBJECT);
        if (!o) {
            return NULL;
        }
        o->is_namespace = name[0] == 'n';
        if (a->n > 0 && a->pos[0]->kind == HS_TMPL_OBJECT) {
            for (size_t i = 0; i < a->pos[0]->u.o.n; i++) {
                const char *k = a->pos[0]->u.o.k[i];
                if (!p_set(r, o, k, strlen(k), a->pos[0]->u.o.v[i])) {
                    return NULL;
                }
            }
        }
        for (int i = 0; i < a->nk; i++) {
            if (!p_set(r, o, a->kname[i], strlen(a->kname[i]), a->kval[i])) {
                return NULL;
            }
        }
        return o;
    }
    if (strcmp(name, "raise_exception") == 0) {
        struct hs_tmpl_value *msg = a->n > 0 ? to_str(r, a->pos[0]) : NULL;
        return fail(r, n, HS_E_INVAL, "raise_exception: %s", msg ? msg->u.s.p : "");
    }
    if (strcmp(name, "strftime_now") == 0) {
        struct hs_tmpl_value *fmt = arg(a, 0, NULL);
        if (!fmt || fmt->kind != HS_TMPL_STRING || fmt->u.s.len > 256) {
            return fail(r, n, HS_E_INVAL, "strftime_now() needs a format string");
        }
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char buf[1024];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        size_t len = strftime(buf, sizeof(buf), fmt->u.s.p, &tm); /* the template's format */
#pragma GCC diagnostic pop
        return p_str(r, buf, len);
    }
    return fail(r, n, HS_E_INVAL, "'%s' is undefined or not callable", name);
}

static struct hs_tmpl_value *eval_call(struct render *r, const struct hs__jnode *n)
{
    struct args a;
    const struct hs__jnode *callee = n->a;
    /* only a {% call %} block's own macro call receives caller() */
    struct hs_tmpl_value *caller = r->pending_caller;
    r->pending_caller = NULL;
    if (callee->kind == HS__J_ATTR) {
        struct hs_tmpl_value *obj = eval(r, callee->a);
        if (!obj || !eval_args(r, n->b, &a)) {
            return NULL;
        }
        return call_method(r, n, obj, callee->name, &a);
    }
    if (callee->kind == HS__J_NAME) {
        struct hs_tmpl_value *v = lookup(r, callee->name);
        if (!eval_args(r, n->b, &a)) {
            return NULL;
        }
        if (v && v->kind == HS__TMPL_MACRO) {
            r->pending_caller = caller;
            return call_macro(r, n, v, &a);
        }
        if (!v) {
            return call_global(r, n, callee->name, &a);
        }
        return fail(r, n, HS_E_INVAL, "'%s' is not callable", callee->name);
    }
    struct hs_tmpl_value *v = eval(r, callee);
    if (!v || !eval_args(r, n->b, &a)) {
        return NULL;
    }
    if (v->kind == HS__TMPL_MACRO) {
        return call_macro(r, n, v, &a);
    }
    return fail(r, n, HS_E_INVAL, "value is not callable");
}

/* ==== operators ==== */

static struct hs_tmpl_value *arith(struct render *r, const struct hs__jnode *n, int op,
                                   struct hs_tmpl_value *x, struct hs_tmpl_value *y)
{
    if (op == HS__OP_CONCAT) {
        struct hs_tmpl_value *sx = to_str(r, x), *sy = sx ? to_str(r, y) : NULL;
        if (!sy) {
            return NULL;
        }
        x = sx;
        y = sy;
        op = HS__OP_ADD;
    }
    if (op == HS__OP_ADD && x->kind == HS_TMPL_STRING && y->kind == HS_TMPL_STRING) {
        size_t len = x->u.s.len + y->u.s.len;
        if (len > r->lim.max_memory_bytes) {
            return fail(r, n, HS_E_RANGE, "string too long");
        }
        char *s = malloc(len + 1);
        if (s) {
            memcpy(s, x->u.s.p, x->u.s.len);
            memcpy(s + x->u.s.len, y->u.s.p, y->u.s.len);
            s[len] = '\0';
        }
        return p_str_take(r, s, len);
    }
    if (op == HS__OP_ADD && x->kind == HS_TMPL_ARRAY && y->kind == HS_TMPL_ARRAY) {
        struct hs_tmpl_value *out = p_new(r, HS_TMPL_ARRAY);
        for (size_t i = 0; out && i < x->u.a.n + y->u.a.n; i++) {
            if (!p_push(r, out, i < x->u.a.n ? x->u.a.v[i] : y->u.a.v[i - x->u.a.n])) {
                return NULL;
            }
        }
        return out;
    }
    if (op == HS__OP_MUL && (x->kind == HS_TMPL_STRING || y->kind == HS_TMPL_STRING)) {
        struct hs_tmpl_value *s = x->kind == HS_TMPL_STRING ? x : y;
        struct hs_tmpl_value *k = s == x ? y : x;
        if (!is_intlike(k)) {
            return fail(r, n, HS_E_INVAL, "can't multiply string by non-int");
        }
        int64_t times = HS_MAX(int_of(k), 0);
        if (s->u.s.len && (uint64_t)times > r->lim.max_memory_bytes / s->u.s.len) {
            return fail(r, n, HS_E_RANGE, "string too long");
        }
        size_t len = s->u.s.len * (size_t)times;
        char *d = malloc(len + 1);
        for (int64_t i = 0; d && i < times; i++) {
            memcpy(d + (size_t)i * s->u.s.len, s->u.s.p, s->u.s.len);
        }
        if (d) {
            d[len] = '\0';
        }
        return p_str_take(r, d, len);
    }
    if (!is_num(x) || !is_num(y)) {
        return fail(r, n, HS_E_INVAL, "unsupported operand types: %s and %s", kind_name(x),
                    kind_name(y));
    }
    if (is_intlike(x) && is_intlike(y) && op != HS__OP_DIV) {
        int64_t a = int_of(x), b = int_of(y), c = 0;
        bool ovf = false;
        switch (op) {
        case HS__OP_ADD: ovf = __builtin_add_overflow(a, b, &c); break;
        case HS__OP_SUB: ovf = __builtin_sub_overflow(a, b, &c); break;
        case HS__OP_MUL: ovf = __builtin_mul_overflow(a, b, &c); break;
        case HS__OP_FLOORDIV:
        case HS__OP_MOD:
            if (b == 0) {
                return fail(r, n, HS_E_INVAL, "integer division or modulo by zero");
            }
            if (a == INT64_MIN && b == -1) {
                ovf = op == HS__OP_FLOORDIV;
                c = 0;
                break;
            }
            c = op == HS__OP_FLOORDIV ? a / b : a % b;
            if (op == HS__OP_FLOORDIV && (a % b != 0) && ((a < 0) != (b < 0))) {
                c--;
            }
            if (op == HS__OP_MOD && c != 0 && ((c < 0) != (b < 0))) {
                c += b;
            }
            break;
        case HS__OP_POW:
            if (b < 0) {
                return p_float(r, pow((double)a, (double)b));
            }
            c = 1;
            for (int64_t i = 0; i < b && !ovf; i++) {
                ovf = __builtin_mul_overflow(c, a, &c);
                if (c == 0 || c == 1) {
                    break;
                }
                if (c == -1) {
                    c = (b - i - 1) % 2 == 0 ? -1 : 1;
                    break;
                }
            }
            break;
        default: break;
        }
        if (ovf) {
            return fail(r, n, HS_E_RANGE, "integer overflow");
        }
        return p_int(r, c);
    }
    double a = num_of(x), b = num_of(y), c = 0;
    switch (op) {
    case HS__OP_ADD: c = a + b; break;
    case HS__OP_SUB: c = a - b; break;
    case HS__OP_MUL: c = a * b; break;
    case HS__OP_DIV:
    case HS__OP_FLOORDIV:
    case HS__OP_MOD:
        if (b == 0) {
            return fail(r, n, HS_E_INVAL, "division by zero");
        }
        if (op == HS__OP_DIV) {
            c = a / b;
        } else if (op == HS__OP_FLOORDIV) {
            c = floor(a / b);
        } else {
            c = fmod(a, b);
            if (c != 0 && ((c < 0) != (b < 0))) {
                c += b;
            }
        }
        break;
    case HS__OP_POW: c = pow(a, b); break;
    default: break;
    }
    return p_float(r, c);
}

static struct hs_tmpl_value *eval_binary(struct render *r, const struct hs__jnode *n)
{
    struct hs_tmpl_value *x = eval(r, n->a);
    if (!x) {
        return NULL;
    }
    if (n->op == HS__OP_AND) {
        return hs__tmpl_truthy(x) ? eval(r, n->b) : x;
    }
    if (n->op == HS__OP_OR) {
        return hs__tmpl_truthy(x) ? x : eval(r, n->b);
    }
    struct hs_tmpl_value *y = eval(r, n->b);
    if (!y) {
        return NULL;
    }
    int c;
    switch (n->op) {
    case HS__OP_EQ: return p_bool(hs__tmpl_equal(x, y));
    case HS__OP_NE: return p_bool(!hs__tmpl_equal(x, y));
    case HS__OP_LT:
    case HS__OP_LE:
    case HS__OP_GT:
    case HS__OP_GE:
        c = compare(r, n, x, y);
        if (r->st != HS_OK) {
            return NULL;
        }
        return p_bool(n->op == HS__OP_LT ? c < 0 : n->op == HS__OP_LE ? c <= 0
                      : n->op == HS__OP_GT ? c > 0 : c >= 0);
    case HS__OP_IN:
    case HS__OP_NOTIN: {
        bool in = contains(r, n, x, y);
        if (r->st != HS_OK) {
            return NULL;
        }
        return p_bool(n->op == HS__OP_IN ? in : !in);
    }
    default:
        return arith(r, n, n->op, x, y);
    }
}

static struct hs_tmpl_value *eval(struct render *r, const struct hs__jnode *n)
{
    if (r->st != HS_OK) {
        return NULL;
    }
    struct hs_tmpl_value *x, *y;
    switch (n->kind) {
    case HS__J_LITERAL:
        return n->lit;
    case HS__J_NAME:
        x = lookup(r, n->name);
        return x ? x : &v_undef;
    case HS__J_ATTR:
        x = eval(r, n->a);
        return x ? get_attr(r, n, x, n->name) : NULL;
    case HS__J_INDEX:
        x = eval(r, n->a);
        y = x ? eval(r, n->b) : NULL;
        return y ? get_index(r, n, x, y) : NULL;
    case HS__J_SLICE: {
        x = eval(r, n->a);
        struct hs_tmpl_value *b[3] = {NULL, NULL, NULL};
        const struct hs__jnode *bn[3] = {n->b, n->c, n->d};
        for (int i = 0; i < 3 && x; i++) {
            if (bn[i] && !(b[i] = eval(r, bn[i]))) {
                return NULL;
            }
        }
        return x ? get_slice(r, n, x, b[0], b[1], b[2]) : NULL;
    }
    case HS__J_CALL:
        return eval_call(r, n);
    case HS__J_FILTER: {
        struct args a;
        x = eval(r, n->a);
        if (!x || !eval_args(r, n->b, &a)) {
            return NULL;
        }
        return apply_filter(r, n, n->name, x, &a);
    }
    case HS__J_TEST: {
        struct args a;
        x = eval(r, n->a);
        if (!x || !eval_args(r, n->b, &a)) {
            return NULL;
        }
        bool ok = run_test(r, n, n->name, x, &a, 0);
        if (r->st != HS_OK) {
            return NULL;
        }
        return p_bool(n->op ? !ok : ok);
    }
    case HS__J_UNARY:
        x = eval(r, n->a);
        if (!x) {
            return NULL;
        }
        if (n->op == HS__OP_NOT) {
            return p_bool(!hs__tmpl_truthy(x));
        }
        if (x->kind == HS_TMPL_FLOAT) {
            return p_float(r, n->op == HS__OP_NEG ? -x->u.f : x->u.f);
        }
        if (is_intlike(x)) {
            if (n->op == HS__OP_NEG && int_of(x) == INT64_MIN) {
                return fail(r, n, HS_E_RANGE, "integer overflow");
            }
            return p_int(r, n->op == HS__OP_NEG ? -int_of(x) : int_of(x));
        }
        return fail(r, n, HS_E_INVAL, "bad operand type for unary %c: '%s'",
                    n->op == HS__OP_NEG ? '-' : '+', kind_name(x));
    case HS__J_BINARY:
        return eval_binary(r, n);
    case HS__J_TERNARY:
        x = eval(r, n->a);
        if (!x) {
            return NULL;
        }
        if (hs__tmpl_truthy(x)) {
            return eval(r, n->b);
        }
        return n->c ? eval(r, n->c) : &v_undef;
    case HS__J_LIST:
        x = p_new(r, HS_TMPL_ARRAY);
        if (x) {
            x->is_tuple = n->op == 1;
        }
        for (const struct hs__jnode *i = n->a; x && i; i = i->next) {
            y = eval(r, i);
            if (!y || !p_push(r, x, y)) {
                return NULL;
            }
        }
        return x;
    case HS__J_DICT:
        x = p_new(r, HS_TMPL_OBJECT);
        for (const struct hs__jnode *i = n->a; x && i; i = i->next) {
            struct hs_tmpl_value *k = eval(r, i->a);
            if (!k) {
                return NULL;
            }
            if (k->kind != HS_TMPL_STRING) {
                k = to_str(r, k);
                if (!k) {
                    return NULL;
                }
            }
            y = eval(r, i->b);
            if (!y || !p_set(r, x, k->u.s.p, strlen(k->u.s.p), y)) {
                return NULL;
            }
        }
        return x;
    default:
        return fail(r, n, HS_E_INTERNAL, "bad expression node");
    }
}

/* ==== statements ==== */

static void emit(struct render *r, struct hs__jbuf *out, const struct hs__jnode *n,
                 const char *s, size_t len)
{
    if (out->len + len > r->lim.max_output_bytes) {
        fail(r, n, HS_E_RANGE, "output longer than %zu bytes", r->lim.max_output_bytes);
        return;
    }
    if (hs__jbuf_append(out, s, len) != HS_OK) {
        oom(r);
    }
}

static bool assign(struct render *r, const struct hs__jnode *target, struct hs_tmpl_value *v)
{
    if (target->kind == HS__J_NAME) {
        return p_set(r, r->cur->vars, target->name, strlen(target->name), v);
    }
    if (target->kind == HS__J_ATTR) {
        struct hs_tmpl_value *ns = lookup(r, target->a->name);
        if (!ns || ns->kind != HS_TMPL_OBJECT || !ns->is_namespace) {
            fail(r, target, HS_E_INVAL, "cannot assign attribute '%s': '%s' is not a namespace",
                 target->name, target->a->name);
            return false;
        }
        return p_set(r, ns, target->name, strlen(target->name), v);
    }
    /* LIST of names: unpack */
    size_t k = 0;
    for (const struct hs__jnode *t = target->a; t; t = t->next) {
        k++;
    }
    if (v->kind != HS_TMPL_ARRAY || v->u.a.n != k) {
        fail(r, target, HS_E_INVAL, "cannot unpack %s into %zu names", kind_name(v), k);
        return false;
    }
    size_t i = 0;
    for (const struct hs__jnode *t = target->a; t; t = t->next, i++) {
        if (!p_set(r, r->cur->vars, t->name, strlen(t->name), v->u.a.v[i])) {
            return false;
        }
    }
    return true;
}

static bool bind_targets(struct render *r, const struct hs__jnode *targets,
                         struct hs_tmpl_value *item)
{
    if (!targets->next) {
        return p_set(r, r->cur->vars, targets->name, strlen(targets->name), item);
    }
    struct hs__jnode list = {.kind = HS__J_LIST, .a = (struct hs__jnode *)targets,
                             .line = targets->line, .col = targets->col};
    return assign(r, &list, item);
}

static bool count_iteration(struct render *r, const struct hs__jnode *n)
{
    if (++r->iters > r->lim.max_loop_iterations) {
        fail(r, n, HS_E_RANGE, "more than %llu loop iterations",
             (unsigned long long)r->lim.max_loop_iterations);
        return false;
    }
    return true;
}

static void exec_for(struct render *r, const struct hs__jnode *n, struct hs__jbuf *out)
{
    struct hs_tmpl_value *seq = eval(r, n->a);
    if (!seq) {
        return;
    }
    if (seq->kind == HS_TMPL_OBJECT) {
        seq = to_list(r, n, seq);
    } else if (seq->kind != HS_TMPL_ARRAY) {
        seq = to_list(r, n, seq);
    }
    if (!seq) {
        return;
    }
    struct hs__frame *f = new_frame(r, r->cur);
    if (!f) {
        return;
    }
    struct hs__frame *saved = r->cur;
    r->cur = f;
    struct hs_tmpl_value *items = seq;
    if (n->c) { /* {% for x in xs if cond %}: filter first, so loop.length counts kept items */
        items = p_new(r, HS_TMPL_ARRAY);
        for (size_t i = 0; items && i < seq->u.a.n; i++) {
            if (!count_iteration(r, n) || !bind_targets(r, n->d, seq->u.a.v[i])) {
                break;
            }
            struct hs_tmpl_value *c = eval(r, n->c);
            if (!c || (hs__tmpl_truthy(c) && !p_push(r, items, seq->u.a.v[i]))) {
                break;
            }
        }
    }
    struct hs_tmpl_value *loop = r->st == HS_OK ? p_new(r, HS__TMPL_LOOP) : NULL;
    if (loop) {
        loop->u.loop.items = items;
        loop->u.loop.length = items->u.a.n;
        if (p_set(r, f->vars, "loop", 4, loop)) {
            for (size_t i = 0; i < items->u.a.n && r->st == HS_OK; i++) {
                if (!count_iteration(r, n) || !bind_targets(r, n->d, items->u.a.v[i])) {
                    break;
                }
                loop->u.loop.index0 = i;
                exec_list(r, n->b, out);
                if (r->ctl == 1) {
                    r->ctl = 0;
                    break;
                }
                r->ctl = 0;
            }
        }
    }
    r->cur = saved;
    if (r->st == HS_OK && items->u.a.n == 0 && n->e) {
        exec_list(r, n->e, out);
    }
}

static void exec_node(struct render *r, const struct hs__jnode *n, struct hs__jbuf *out)
{
    struct hs_tmpl_value *v;
    switch (n->kind) {
    case HS__J_TEXT:
        emit(r, out, n, n->lit->u.s.p, n->lit->u.s.len);
        break;
    case HS__J_OUTPUT:
        v = eval(r, n->a);
        if (v && v->kind == HS_TMPL_STRING) {
            emit(r, out, n, v->u.s.p, v->u.s.len);
        } else if (v) {
            struct hs__jbuf b = {0};
            hs_status st = hs__tmpl_str(&b, v);
            if (st != HS_OK) {
                fail(r, n, st, "cannot print value");
            } else {
                emit(r, out, n, b.p ? b.p : "", b.len);
            }
            free(b.p);
        }
        break;
    case HS__J_IF:
        for (const struct hs__jnode *c = n; c;) {
            v = eval(r, c->a);
            if (!v) {
                return;
            }
            if (hs__tmpl_truthy(v)) {
                exec_list(r, c->b, out);
                return;
            }
            if (c->c && c->c->kind == HS__J_IF && c->c->op == 1) { /* elif */
                c = c->c;
            } else {
                exec_list(r, c->c, out);
                return;
            }
        }
        break;
    case HS__J_FOR:
        exec_for(r, n, out);
        break;
    case HS__J_SET:
        if (n->c || !n->b) {
            struct hs__jbuf b = {0};
            exec_list(r, n->c, &b);
            v = r->st == HS_OK ? p_buf(r, &b) : NULL;
            if (!v) {
                free(b.p);
                return;
            }
        } else {
            v = eval(r, n->b);
        }
        if (v) {
            assign(r, n->a, v);
        }
        break;
    case HS__J_MACRO:
        v = p_new(r, HS__TMPL_MACRO);
        if (v) {
            v->u.m.node = n;
            p_set(r, r->cur->vars, n->name, strlen(n->name), v);
        }
        break;
    case HS__J_CALLBLK:
        v = p_new(r, HS__TMPL_MACRO);
        if (v) {
            v->u.m.node = n;
            v->u.m.frame = r->cur;
            v->u.m.is_caller = true;
            r->pending_caller = v;
            struct hs_tmpl_value *res = eval(r, n->b);
            r->pending_caller = NULL;
            if (res && res->kind == HS_TMPL_STRING) {
                emit(r, out, n, res->u.s.p, res->u.s.len);
            }
        }
        break;
    case HS__J_BREAK:
        r->ctl = 1;
        break;
    case HS__J_CONTINUE:
        r->ctl = 2;
        break;
    case HS__J_BLOCK:
        if (!n->name) {
            exec_list(r, n->b, out);
        } else {
            struct hs__jbuf b = {0};
            struct args a;
            exec_list(r, n->b, &b);
            v = r->st == HS_OK ? p_buf(r, &b) : NULL;
            if (!v) {
                free(b.p);
                return;
            }
            if (!eval_args(r, n->d, &a)) {
                return;
            }
            struct hs_tmpl_value *res = apply_filter(r, n, n->name, v, &a);
            res = res ? to_str(r, res) : NULL;
            if (res) {
                emit(r, out, n, res->u.s.p, res->u.s.len);
            }
        }
        break;
    case HS__J_DO:
        eval(r, n->a);
        break;
    default:
        fail(r, n, HS_E_INTERNAL, "bad statement node");
        break;
    }
}

static void exec_list(struct render *r, const struct hs__jnode *n, struct hs__jbuf *out)
{
    for (; n && r->st == HS_OK && r->ctl == 0; n = n->next) {
        exec_node(r, n, out);
    }
}

/* ==== public API ==== */

static const struct hs_chat_template_limits default_limits = {
    .max_output_bytes = 16u << 20,
    .max_memory_bytes = 256u << 20,
    .max_loop_iterations = 10000000,
    .max_call_depth = 64,
};

hs_status hs_chat_template_parse(const char *src, size_t len, struct hs_chat_template **out,
                                 struct hs_error *err)
{
    *out = NULL;
    if (!src && len) {
        return hs_error_set(err, HS_E_INVAL, "template source is NULL");
    }
    struct hs_chat_template *t = calloc(1, sizeof(*t));
    if (!t) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    t->limits = default_limits;
    hs_status st = hs__jinja_parse(&t->arena, src ? src : "", len, &t->body, err);
    if (st != HS_OK) {
        hs_chat_template_destroy(t);
        return st;
    }
    *out = t;
    return HS_OK;
}

void hs_chat_template_destroy(struct hs_chat_template *t)
{
    if (!t) {
        return;
    }
    hs__jarena_free(&t->arena);
    free(t);
}

void hs_chat_template_set_limits(struct hs_chat_template *t,
                                 const struct hs_chat_template_limits *limits)
{
    if (!t || !limits) {
        return;
    }
    t->limits = default_limits;
    if (limits->max_output_bytes) {
        t->limits.max_output_bytes = limits->max_output_bytes;
    }
    if (limits->max_memory_bytes) {
        t->limits.max_memory_bytes = limits->max_memory_bytes;
    }
    if (limits->max_loop_iterations) {
        t->limits.max_loop_iterations = limits->max_loop_iterations;
    }
    if (limits->max_call_depth) {
        t->limits.max_call_depth = limits->max_call_depth;
    }
}

hs_status hs_chat_template_render(const struct hs_chat_template *t,
                                  const struct hs_tmpl_value *context, char **out,
                                  size_t *out_len, struct hs_error *err)
{
    *out = NULL;
    if (out_len) {
        *out_len = 0;
    }
    if (!t || !context || context->kind != HS_TMPL_OBJECT) {
        return hs_error_set(err, HS_E_INVAL, "render context must be an object");
    }
    struct render r = {.t = t, .ctx = context, .lim = t->limits, .err = err};
    struct hs__jbuf b = {0};
    r.globals = new_frame(&r, NULL);
    if (r.globals) {
        r.cur = r.globals;
        exec_list(&r, t->body, &b);
    }
    pool_free(&r);
    if (r.st != HS_OK) {
        free(b.p);
        return r.st;
    }
    if (!b.p && hs__jbuf_append(&b, "", 0) != HS_OK) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    *out = b.p;
    if (out_len) {
        *out_len = b.len;
    }
    return HS_OK;
}

/* ==== ChatML fallback ==== */

static hs_status chatml_content(struct hs__jbuf *b, const struct hs_tmpl_value *c)
{
    if (!c || c->kind == HS_TMPL_NULL) {
        return HS_OK;
    }
    if (c->kind == HS_TMPL_STRING) {
        return hs__jbuf_append(b, c->u.s.p, c->u.s.len);
    }
    if (c->kind == HS_TMPL_ARRAY) {
        for (size_t i = 0; i < c->u.a.n; i++) {
            const struct hs_tmpl_value *text = hs_tmpl_object_get(c->u.a.v[i], "text");
            if (text && text->kind == HS_TMPL_STRING) {
                HS_TRY(hs__jbuf_append(b, text->u.s.p, text->u.s.len));
            }
        }
        return HS_OK;
    }
    return HS_E_INVAL;
}

hs_status hs_chat_template_render_chatml(const struct hs_tmpl_value *messages,
                                         bool add_generation_prompt, char **out, size_t *out_len,
                                         struct hs_error *err)
{
    *out = NULL;
    if (out_len) {
        *out_len = 0;
    }
    if (!messages || messages->kind != HS_TMPL_ARRAY) {
        return hs_error_set(err, HS_E_INVAL, "messages must be an array");
    }
    struct hs__jbuf b = {0};
    hs_status st = hs__jbuf_append(&b, "", 0);
    for (size_t i = 0; i < messages->u.a.n && st == HS_OK; i++) {
        const struct hs_tmpl_value *role = hs_tmpl_object_get(messages->u.a.v[i], "role");
        if (!role || role->kind != HS_TMPL_STRING) {
            free(b.p);
            return hs_error_set(err, HS_E_INVAL, "message %zu has no string role", i);
        }
        st = hs__jbuf_append(&b, "<|im_start|>", 12);
        if (st == HS_OK) {
            st = hs__jbuf_append(&b, role->u.s.p, role->u.s.len);
        }
        if (st == HS_OK) {
            st = hs__jbuf_putc(&b, '\n');
        }
        if (st == HS_OK) {
            st = chatml_content(&b, hs_tmpl_object_get(messages->u.a.v[i], "content"));
            if (st == HS_E_INVAL) {
                free(b.p);
                return hs_error_set(err, st, "message %zu has content of a bad type", i);
            }
        }
        if (st == HS_OK) {
            st = hs__jbuf_append(&b, "<|im_end|>\n", 11);
        }
    }
    if (st == HS_OK && add_generation_prompt) {
        st = hs__jbuf_append(&b, "<|im_start|>assistant\n", 22);
    }
    if (st != HS_OK) {
        free(b.p);
        return hs_error_set(err, st, "out of memory");
    }
    *out = b.p;
    if (out_len) {
        *out_len = b.len;
    }
    return HS_OK;
}
