/* Chat templates: the renderer (values pool, expressions, statements, macros) and the public
 * API; filters, tests and methods are in jinja-builtins.c. Values made while rendering live in a
 * per-render pool freed at the end; values from the context are only read. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat/jinja-impl.h"

struct hs_chat_template {
    struct hs__jarena arena;
    struct hs__jnode *body;
    struct hs_chat_template_limits limits;
};

/* Shared read-only values (never pooled, never modified). */
struct hs_tmpl_value hs__v_undef = {.kind = HS__TMPL_UNDEFINED};
struct hs_tmpl_value hs__v_none = {.kind = HS_TMPL_NULL};
struct hs_tmpl_value hs__v_true = {.kind = HS_TMPL_BOOL, .u.b = true};
struct hs_tmpl_value hs__v_false = {.kind = HS_TMPL_BOOL, .u.b = false};

/* ==== errors ==== */

struct hs_tmpl_value *hs__fail(struct hs__render *r, const struct hs__jnode *n, hs_status st,
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

struct hs_tmpl_value *hs__oom(struct hs__render *r)
{
    return hs__fail(r, NULL, HS_E_NOMEM, "out of memory");
}

bool hs__charge(struct hs__render *r, size_t bytes)
{
    r->mem += bytes;
    if (r->mem > r->lim.max_memory_bytes) {
        hs__fail(r, NULL, HS_E_RANGE, "template used more than %zu bytes of memory",
                 r->lim.max_memory_bytes);
        return false;
    }
    return true;
}

/* ==== pooled values ==== */

struct hs_tmpl_value *hs__p_new(struct hs__render *r, int kind)
{
    if (!hs__charge(r, sizeof(struct hs_tmpl_value))) {
        return NULL;
    }
    struct hs_tmpl_value *v = calloc(1, sizeof(*v));
    if (!v) {
        return hs__oom(r);
    }
    v->kind = kind;
    v->pooled = true;
    v->pool_next = r->pool;
    r->pool = v;
    return v;
}

struct hs_tmpl_value *hs__p_int(struct hs__render *r, int64_t i)
{
    struct hs_tmpl_value *v = hs__p_new(r, HS_TMPL_INT);
    if (v) {
        v->u.i = i;
    }
    return v;
}

struct hs_tmpl_value *hs__p_float(struct hs__render *r, double f)
{
    struct hs_tmpl_value *v = hs__p_new(r, HS_TMPL_FLOAT);
    if (v) {
        v->u.f = f;
    }
    return v;
}

struct hs_tmpl_value *hs__p_bool(bool b)
{
    return b ? &hs__v_true : &hs__v_false;
}

/* Takes a malloc'd buffer (NUL-terminated) into a pooled string; frees it on failure. */
struct hs_tmpl_value *hs__p_str_take(struct hs__render *r, char *s, size_t len)
{
    if (!s) {
        return hs__oom(r);
    }
    if (!hs__charge(r, len)) {
        free(s);
        return NULL;
    }
    struct hs_tmpl_value *v = hs__p_new(r, HS_TMPL_STRING);
    if (!v) {
        free(s);
        return NULL;
    }
    v->u.s.p = s;
    v->u.s.len = len;
    return v;
}

struct hs_tmpl_value *hs__p_str(struct hs__render *r, const char *s, size_t len)
{
    if (len > r->lim.max_memory_bytes) {
        return hs__fail(r, NULL, HS_E_RANGE, "string too long");
    }
    char *d = malloc(len + 1);
    if (d) {
        if (len) {
            memcpy(d, s, len);
        }
        d[len] = '\0';
    }
    return hs__p_str_take(r, d, len);
}

struct hs_tmpl_value *hs__p_buf(struct hs__render *r, struct hs__jbuf *b)
{
    if (!b->buf.p) {
        free(b->m);
        b->m = NULL;
        return hs__p_str(r, "", 0);
    }
    uint8_t *m = b->m && memchr(b->m, 1, b->buf.len) ? b->m : NULL;
    if (!m) {
        free(b->m);
    }
    b->m = NULL;
    if (m && !hs__charge(r, b->buf.len)) {
        free(m);
        free(b->buf.p);
        return NULL;
    }
    struct hs_tmpl_value *v = hs__p_str_take(r, b->buf.p, b->buf.len);
    if (!v) {
        free(m);
        return NULL;
    }
    v->cmask = m;
    return v;
}

struct hs_tmpl_value *hs__p_substr(struct hs__render *r, const struct hs_tmpl_value *s, size_t off,
                                   size_t n)
{
    struct hs_tmpl_value *v = hs__p_str(r, s->u.s.p + off, n);
    if (!v || (!s->client && !(s->cmask && memchr(s->cmask + off, 1, n)))) {
        return v;
    }
    if (s->client) {
        v->client = true;
        return v;
    }
    if (!hs__charge(r, n)) {
        return NULL;
    }
    v->cmask = malloc(n ? n : 1);
    if (!v->cmask) {
        return hs__oom(r);
    }
    memcpy(v->cmask, s->cmask + off, n);
    return v;
}

struct hs_tmpl_value *hs__p_client_if(struct hs_tmpl_value *v, bool client)
{
    if (v && client && v->kind == HS_TMPL_STRING) {
        v->client = true;
    }
    return v;
}

bool hs__p_push(struct hs__render *r, struct hs_tmpl_value *arr, struct hs_tmpl_value *item)
{
    if (arr->u.a.n == arr->u.a.cap) {
        size_t cap = arr->u.a.cap ? arr->u.a.cap * 2 : 4;
        if (!hs__charge(r, (cap - arr->u.a.cap) * sizeof(void *))) {
            return false;
        }
        struct hs_tmpl_value **v = realloc(arr->u.a.v, cap * sizeof(*v));
        if (!v) {
            hs__oom(r);
            return false;
        }
        arr->u.a.v = v;
        arr->u.a.cap = cap;
    }
    arr->u.a.v[arr->u.a.n++] = item;
    return true;
}

bool hs__p_set(struct hs__render *r, struct hs_tmpl_value *obj, const char *key, size_t klen,
               struct hs_tmpl_value *v)
{
    ptrdiff_t at = hs__tmpl_object_find(obj, key, klen);
    if (at >= 0) {
        obj->u.o.v[at] = v;
        return true;
    }
    if (obj->u.o.n == obj->u.o.cap) {
        size_t cap = obj->u.o.cap ? obj->u.o.cap * 2 : 4;
        if (!hs__charge(r, (cap - obj->u.o.cap) * 2 * sizeof(void *))) {
            return false;
        }
        char **k = realloc(obj->u.o.k, cap * sizeof(*k));
        if (!k) {
            hs__oom(r);
            return false;
        }
        obj->u.o.k = k;
        struct hs_tmpl_value **vv = realloc(obj->u.o.v, cap * sizeof(*vv));
        if (!vv) {
            hs__oom(r);
            return false;
        }
        obj->u.o.v = vv;
        obj->u.o.cap = cap;
    }
    if (!hs__charge(r, klen + 1)) {
        return false;
    }
    char *kc = malloc(klen + 1);
    if (!kc) {
        hs__oom(r);
        return false;
    }
    memcpy(kc, key, klen);
    kc[klen] = '\0';
    obj->u.o.k[obj->u.o.n] = kc;
    obj->u.o.v[obj->u.o.n++] = v;
    return true;
}

static void pool_free(struct hs__render *r)
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

const char *hs__kind_name(const struct hs_tmpl_value *v)
{
    switch (v->kind) {
    case HS__TMPL_UNDEFINED:
        return "undefined";
    case HS__TMPL_MACRO:
        return "macro";
    case HS__TMPL_LOOP:
        return "loop";
    case HS_TMPL_NULL:
        return "none";
    case HS_TMPL_OBJECT:
        return "dict";
    case HS_TMPL_ARRAY:
        return "list";
    default:
        return hs_tmpl_kind_str((enum hs_tmpl_kind)v->kind);
    }
}

/* ==== UTF-8 helpers ==== */

size_t hs__utf8_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return n;
}

/* Byte offsets of each code point start, plus len at the end: returns n code points. */
size_t *hs__utf8_offsets(const char *s, size_t len, size_t *n_out)
{
    size_t n = hs__utf8_count(s, len);
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

const char *hs__memfind(const char *h, size_t hn, const char *n, size_t nn)
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

/* ==== conversions ==== */

struct hs_tmpl_value *hs__to_str(struct hs__render *r, const struct hs_tmpl_value *v)
{
    if (v->kind == HS_TMPL_STRING) {
        return (struct hs_tmpl_value *)v;
    }
    struct hs__jbuf b = {0};
    if (hs__tmpl_str(&b, v) != HS_OK) {
        hs__jbuf_free(&b);
        return hs__fail(r, NULL, HS_E_RANGE, "value nested too deeply to print");
    }
    return hs__p_buf(r, &b);
}

bool hs__is_num(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_INT || v->kind == HS_TMPL_FLOAT || v->kind == HS_TMPL_BOOL;
}

double hs__num_of(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_FLOAT ? v->u.f : v->kind == HS_TMPL_INT ? (double)v->u.i : v->u.b;
}

int64_t hs__int_of(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_INT ? v->u.i : v->u.b;
}

bool hs__is_intlike(const struct hs_tmpl_value *v)
{
    return v->kind == HS_TMPL_INT || v->kind == HS_TMPL_BOOL;
}

/* Elements of an iterable as a new pooled array (items of arrays, keys of objects, code points of
 * strings); undefined gives an empty one. NULL + error otherwise. */
struct hs_tmpl_value *hs__to_list(struct hs__render *r, const struct hs__jnode *n,
                                  const struct hs_tmpl_value *v)
{
    struct hs_tmpl_value *arr = hs__p_new(r, HS_TMPL_ARRAY);
    if (!arr) {
        return NULL;
    }
    switch (v->kind) {
    case HS__TMPL_UNDEFINED:
        return arr;
    case HS_TMPL_ARRAY:
        for (size_t i = 0; i < v->u.a.n; i++) {
            if (!hs__p_push(r, arr, v->u.a.v[i])) {
                return NULL;
            }
        }
        return arr;
    case HS_TMPL_OBJECT:
        for (size_t i = 0; i < v->u.o.n; i++) {
            struct hs_tmpl_value *k =
                hs__p_client_if(hs__p_str(r, v->u.o.k[i], strlen(v->u.o.k[i])), v->client);
            if (!k || !hs__p_push(r, arr, k)) {
                return NULL;
            }
        }
        return arr;
    case HS_TMPL_STRING: {
        size_t cnt;
        size_t *off = hs__utf8_offsets(v->u.s.p, v->u.s.len, &cnt);
        if (!off) {
            return hs__oom(r);
        }
        for (size_t i = 0; i < cnt; i++) {
            struct hs_tmpl_value *c = hs__p_substr(r, v, off[i], off[i + 1] - off[i]);
            if (!c || !hs__p_push(r, arr, c)) {
                free(off);
                return NULL;
            }
        }
        free(off);
        return arr;
    }
    default:
        return hs__fail(r, n, HS_E_INVAL, "'%s' object is not iterable", hs__kind_name(v));
    }
}

struct hs_tmpl_value *hs__items_of(struct hs__render *r, const struct hs__jnode *n,
                                   const struct hs_tmpl_value *obj)
{
    if (obj->kind == HS__TMPL_UNDEFINED) {
        return hs__p_new(r, HS_TMPL_ARRAY);
    }
    if (obj->kind != HS_TMPL_OBJECT) {
        return hs__fail(r, n, HS_E_INVAL, "items() needs a dict, got %s", hs__kind_name(obj));
    }
    struct hs_tmpl_value *arr = hs__p_new(r, HS_TMPL_ARRAY);
    if (!arr) {
        return NULL;
    }
    for (size_t i = 0; i < obj->u.o.n; i++) {
        struct hs_tmpl_value *pair = hs__p_new(r, HS_TMPL_ARRAY);
        if (pair) {
            pair->is_tuple = true;
        }
        struct hs_tmpl_value *k =
            pair ? hs__p_client_if(hs__p_str(r, obj->u.o.k[i], strlen(obj->u.o.k[i])), obj->client)
                 : NULL;
        if (!k || !hs__p_push(r, pair, k) || !hs__p_push(r, pair, obj->u.o.v[i]) ||
            !hs__p_push(r, arr, pair)) {
            return NULL;
        }
    }
    return arr;
}

/* -1, 0, 1; sets r->st when not comparable. */
int hs__compare(struct hs__render *r, const struct hs__jnode *n, const struct hs_tmpl_value *a,
                const struct hs_tmpl_value *b)
{
    if (hs__is_num(a) && hs__is_num(b)) {
        if (hs__is_intlike(a) && hs__is_intlike(b)) {
            int64_t x = hs__int_of(a), y = hs__int_of(b);
            return x < y ? -1 : x > y;
        }
        double x = hs__num_of(a), y = hs__num_of(b);
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
    hs__fail(r, n, HS_E_INVAL, "cannot compare %s with %s", hs__kind_name(a), hs__kind_name(b));
    return 0;
}

bool hs__contains(struct hs__render *r, const struct hs__jnode *n,
                  const struct hs_tmpl_value *needle, const struct hs_tmpl_value *hay)
{
    switch (hay->kind) {
    case HS_TMPL_STRING:
        if (needle->kind != HS_TMPL_STRING) {
            hs__fail(r, n, HS_E_INVAL, "'in <string>' needs a string on the left");
            return false;
        }
        return hs__memfind(hay->u.s.p, hay->u.s.len, needle->u.s.p, needle->u.s.len) != NULL;
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
        hs__fail(r, n, HS_E_INVAL, "argument of type '%s' is not iterable", hs__kind_name(hay));
        return false;
    }
}

/* ==== arguments ==== */

static struct hs_tmpl_value *eval(struct hs__render *r, const struct hs__jnode *n);

static bool eval_args(struct hs__render *r, const struct hs__jnode *list, struct hs__args *a)
{
    a->n = a->nk = 0;
    for (const struct hs__jnode *x = list; x; x = x->next) {
        if (a->n + a->nk >= HS__MAX_ARGS) {
            hs__fail(r, x, HS_E_INVAL, "too many arguments");
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
struct hs_tmpl_value *hs__arg(const struct hs__args *a, int i, const char *name)
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

static struct hs_tmpl_value *lookup(struct hs__render *r, const char *name)
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

static struct hs__frame *new_frame(struct hs__render *r, struct hs__frame *parent)
{
    if (!hs__charge(r, sizeof(struct hs__frame))) {
        return NULL;
    }
    struct hs__frame *f = calloc(1, sizeof(*f));
    if (!f) {
        hs__oom(r);
        return NULL;
    }
    f->next_alloc = r->frames;
    r->frames = f;
    f->parent = parent;
    f->vars = hs__p_new(r, HS_TMPL_OBJECT);
    return f->vars ? f : NULL;
}

/* ==== calls ==== */

static void exec_list(struct hs__render *r, const struct hs__jnode *n, struct hs__jbuf *out);

struct hs_tmpl_value *hs__call_macro(struct hs__render *r, const struct hs__jnode *site,
                                     struct hs_tmpl_value *m, const struct hs__args *a)
{
    if (r->call_depth >= r->lim.max_call_depth) {
        return hs__fail(r, site, HS_E_RANGE, "macro calls nested deeper than %d",
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
        struct hs_tmpl_value *v = hs__arg(a, i, p->name);
        if (!v) {
            v = p->kind == HS__J_KWARG ? eval(r, p->a) : &hs__v_undef;
            if (!v) {
                r->cur = saved;
                return NULL;
            }
        }
        if (!hs__p_set(r, f->vars, p->name, strlen(p->name), v)) {
            r->cur = saved;
            return NULL;
        }
    }
    if (caller && !hs__p_set(r, f->vars, "caller", 6, caller)) {
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
        hs__jbuf_free(&b);
        return NULL;
    }
    return hs__p_buf(r, &b);
}

static struct hs_tmpl_value *eval_call(struct hs__render *r, const struct hs__jnode *n)
{
    struct hs__args a;
    const struct hs__jnode *callee = n->a;
    /* only a {% call %} block's own macro call receives caller() */
    struct hs_tmpl_value *caller = r->pending_caller;
    r->pending_caller = NULL;
    if (callee->kind == HS__J_ATTR) {
        struct hs_tmpl_value *obj = eval(r, callee->a);
        if (!obj || !eval_args(r, n->b, &a)) {
            return NULL;
        }
        return hs__call_method(r, n, obj, callee->name, &a);
    }
    if (callee->kind == HS__J_NAME) {
        struct hs_tmpl_value *v = lookup(r, callee->name);
        if (!eval_args(r, n->b, &a)) {
            return NULL;
        }
        if (v && v->kind == HS__TMPL_MACRO) {
            r->pending_caller = caller;
            return hs__call_macro(r, n, v, &a);
        }
        if (!v) {
            return hs__call_global(r, n, callee->name, &a);
        }
        return hs__fail(r, n, HS_E_INVAL, "'%s' is not callable", callee->name);
    }
    struct hs_tmpl_value *v = eval(r, callee);
    if (!v || !eval_args(r, n->b, &a)) {
        return NULL;
    }
    if (v->kind == HS__TMPL_MACRO) {
        return hs__call_macro(r, n, v, &a);
    }
    return hs__fail(r, n, HS_E_INVAL, "value is not callable");
}

/* ==== operators ==== */

static struct hs_tmpl_value *arith(struct hs__render *r, const struct hs__jnode *n, int op,
                                   struct hs_tmpl_value *x, struct hs_tmpl_value *y)
{
    if (op == HS__OP_CONCAT) {
        struct hs_tmpl_value *sx = hs__to_str(r, x), *sy = sx ? hs__to_str(r, y) : NULL;
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
            return hs__fail(r, n, HS_E_RANGE, "string too long");
        }
        struct hs__jbuf b = {0};
        if (hs__jbuf_append_val(&b, x, 0, x->u.s.len) != HS_OK ||
            hs__jbuf_append_val(&b, y, 0, y->u.s.len) != HS_OK) {
            hs__jbuf_free(&b);
            return hs__oom(r);
        }
        return hs__p_buf(r, &b);
    }
    if (op == HS__OP_ADD && x->kind == HS_TMPL_ARRAY && y->kind == HS_TMPL_ARRAY) {
        struct hs_tmpl_value *out = hs__p_new(r, HS_TMPL_ARRAY);
        for (size_t i = 0; out && i < x->u.a.n + y->u.a.n; i++) {
            if (!hs__p_push(r, out, i < x->u.a.n ? x->u.a.v[i] : y->u.a.v[i - x->u.a.n])) {
                return NULL;
            }
        }
        return out;
    }
    if (op == HS__OP_MUL && (x->kind == HS_TMPL_STRING || y->kind == HS_TMPL_STRING)) {
        struct hs_tmpl_value *s = x->kind == HS_TMPL_STRING ? x : y;
        struct hs_tmpl_value *k = s == x ? y : x;
        if (!hs__is_intlike(k)) {
            return hs__fail(r, n, HS_E_INVAL, "can't multiply string by non-int");
        }
        /* An empty string repeated is empty however many times (2 ** 36 copies of '' took the
         * fuzzer's copy loop minutes). */
        const int64_t times = s->u.s.len ? HS_MAX(hs__int_of(k), 0) : 0;
        if (s->u.s.len && (uint64_t)times > r->lim.max_memory_bytes / s->u.s.len) {
            return hs__fail(r, n, HS_E_RANGE, "string too long");
        }
        size_t len = s->u.s.len * (size_t)times;
        char *d = malloc(len + 1);
        for (int64_t i = 0; d && i < times; i++) {
            memcpy(d + (size_t)i * s->u.s.len, s->u.s.p, s->u.s.len);
        }
        if (d) {
            d[len] = '\0';
        }
        return hs__p_client_if(hs__p_str_take(r, d, len), hs__has_client(s));
    }
    if (!hs__is_num(x) || !hs__is_num(y)) {
        return hs__fail(r, n, HS_E_INVAL, "unsupported operand types: %s and %s", hs__kind_name(x),
                        hs__kind_name(y));
    }
    if (hs__is_intlike(x) && hs__is_intlike(y) && op != HS__OP_DIV) {
        int64_t a = hs__int_of(x), b = hs__int_of(y), c = 0;
        bool ovf = false;
        switch (op) {
        case HS__OP_ADD:
            ovf = __builtin_add_overflow(a, b, &c);
            break;
        case HS__OP_SUB:
            ovf = __builtin_sub_overflow(a, b, &c);
            break;
        case HS__OP_MUL:
            ovf = __builtin_mul_overflow(a, b, &c);
            break;
        case HS__OP_FLOORDIV:
        case HS__OP_MOD:
            if (b == 0) {
                return hs__fail(r, n, HS_E_INVAL, "integer division or modulo by zero");
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
                return hs__p_float(r, pow((double)a, (double)b));
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
        default:
            break;
        }
        if (ovf) {
            return hs__fail(r, n, HS_E_RANGE, "integer overflow");
        }
        return hs__p_int(r, c);
    }
    double a = hs__num_of(x), b = hs__num_of(y), c = 0;
    switch (op) {
    case HS__OP_ADD:
        c = a + b;
        break;
    case HS__OP_SUB:
        c = a - b;
        break;
    case HS__OP_MUL:
        c = a * b;
        break;
    case HS__OP_DIV:
    case HS__OP_FLOORDIV:
    case HS__OP_MOD:
        if (b == 0) {
            return hs__fail(r, n, HS_E_INVAL, "division by zero");
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
    case HS__OP_POW:
        c = pow(a, b);
        break;
    default:
        break;
    }
    return hs__p_float(r, c);
}

static struct hs_tmpl_value *eval_binary(struct hs__render *r, const struct hs__jnode *n)
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
    case HS__OP_EQ:
        return hs__p_bool(hs__tmpl_equal(x, y));
    case HS__OP_NE:
        return hs__p_bool(!hs__tmpl_equal(x, y));
    case HS__OP_LT:
    case HS__OP_LE:
    case HS__OP_GT:
    case HS__OP_GE:
        c = hs__compare(r, n, x, y);
        if (r->st != HS_OK) {
            return NULL;
        }
        return hs__p_bool(n->op == HS__OP_LT   ? c < 0
                          : n->op == HS__OP_LE ? c <= 0
                          : n->op == HS__OP_GT ? c > 0
                                               : c >= 0);
    case HS__OP_IN:
    case HS__OP_NOTIN: {
        bool in = hs__contains(r, n, x, y);
        if (r->st != HS_OK) {
            return NULL;
        }
        return hs__p_bool(n->op == HS__OP_IN ? in : !in);
    }
    default:
        return arith(r, n, n->op, x, y);
    }
}

static struct hs_tmpl_value *eval(struct hs__render *r, const struct hs__jnode *n)
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
        return x ? x : &hs__v_undef;
    case HS__J_ATTR:
        x = eval(r, n->a);
        return x ? hs__get_attr(r, n, x, n->name) : NULL;
    case HS__J_INDEX:
        x = eval(r, n->a);
        y = x ? eval(r, n->b) : NULL;
        return y ? hs__get_index(r, n, x, y) : NULL;
    case HS__J_SLICE: {
        x = eval(r, n->a);
        struct hs_tmpl_value *b[3] = {NULL, NULL, NULL};
        const struct hs__jnode *bn[3] = {n->b, n->c, n->d};
        for (int i = 0; i < 3 && x; i++) {
            if (bn[i] && !(b[i] = eval(r, bn[i]))) {
                return NULL;
            }
        }
        return x ? hs__get_slice(r, n, x, b[0], b[1], b[2]) : NULL;
    }
    case HS__J_CALL:
        return eval_call(r, n);
    case HS__J_FILTER: {
        struct hs__args a;
        x = eval(r, n->a);
        if (!x || !eval_args(r, n->b, &a)) {
            return NULL;
        }
        return hs__apply_filter(r, n, n->name, x, &a);
    }
    case HS__J_TEST: {
        struct hs__args a;
        x = eval(r, n->a);
        if (!x || !eval_args(r, n->b, &a)) {
            return NULL;
        }
        bool ok = hs__run_test(r, n, n->name, x, &a, 0);
        if (r->st != HS_OK) {
            return NULL;
        }
        return hs__p_bool(n->op ? !ok : ok);
    }
    case HS__J_UNARY:
        x = eval(r, n->a);
        if (!x) {
            return NULL;
        }
        if (n->op == HS__OP_NOT) {
            return hs__p_bool(!hs__tmpl_truthy(x));
        }
        if (x->kind == HS_TMPL_FLOAT) {
            return hs__p_float(r, n->op == HS__OP_NEG ? -x->u.f : x->u.f);
        }
        if (hs__is_intlike(x)) {
            if (n->op == HS__OP_NEG && hs__int_of(x) == INT64_MIN) {
                return hs__fail(r, n, HS_E_RANGE, "integer overflow");
            }
            return hs__p_int(r, n->op == HS__OP_NEG ? -hs__int_of(x) : hs__int_of(x));
        }
        return hs__fail(r, n, HS_E_INVAL, "bad operand type for unary %c: '%s'",
                        n->op == HS__OP_NEG ? '-' : '+', hs__kind_name(x));
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
        return n->c ? eval(r, n->c) : &hs__v_undef;
    case HS__J_LIST:
        x = hs__p_new(r, HS_TMPL_ARRAY);
        if (x) {
            x->is_tuple = n->op == 1;
        }
        for (const struct hs__jnode *i = n->a; x && i; i = i->next) {
            y = eval(r, i);
            if (!y || !hs__p_push(r, x, y)) {
                return NULL;
            }
        }
        return x;
    case HS__J_DICT:
        x = hs__p_new(r, HS_TMPL_OBJECT);
        for (const struct hs__jnode *i = n->a; x && i; i = i->next) {
            struct hs_tmpl_value *k = eval(r, i->a);
            if (!k) {
                return NULL;
            }
            if (k->kind != HS_TMPL_STRING) {
                k = hs__to_str(r, k);
                if (!k) {
                    return NULL;
                }
            }
            y = eval(r, i->b);
            if (!y || !hs__p_set(r, x, k->u.s.p, strlen(k->u.s.p), y)) {
                return NULL;
            }
            x->client |= hs__has_client(k);
        }
        return x;
    default:
        return hs__fail(r, n, HS_E_INTERNAL, "bad expression node");
    }
}

/* ==== statements ==== */

/* Appends template text s (v NULL) or string value v with its client marks. */
static void emit(struct hs__render *r, struct hs__jbuf *out, const struct hs__jnode *n,
                 const char *s, size_t len, const struct hs_tmpl_value *v)
{
    if (out->buf.len + len > r->lim.max_output_bytes) {
        hs__fail(r, n, HS_E_RANGE, "output longer than %zu bytes", r->lim.max_output_bytes);
        return;
    }
    if ((v ? hs__jbuf_append_val(out, v, 0, len) : hs__jbuf_append(out, s, len)) != HS_OK) {
        hs__oom(r);
    }
}

static bool assign(struct hs__render *r, const struct hs__jnode *target, struct hs_tmpl_value *v)
{
    if (target->kind == HS__J_NAME) {
        return hs__p_set(r, r->cur->vars, target->name, strlen(target->name), v);
    }
    if (target->kind == HS__J_ATTR) {
        struct hs_tmpl_value *ns = lookup(r, target->a->name);
        if (!ns || ns->kind != HS_TMPL_OBJECT || !ns->is_namespace) {
            hs__fail(r, target, HS_E_INVAL, "cannot assign attribute '%s': '%s' is not a namespace",
                     target->name, target->a->name);
            return false;
        }
        return hs__p_set(r, ns, target->name, strlen(target->name), v);
    }
    /* LIST of names: unpack */
    size_t k = 0;
    for (const struct hs__jnode *t = target->a; t; t = t->next) {
        k++;
    }
    if (v->kind != HS_TMPL_ARRAY || v->u.a.n != k) {
        hs__fail(r, target, HS_E_INVAL, "cannot unpack %s into %zu names", hs__kind_name(v), k);
        return false;
    }
    size_t i = 0;
    for (const struct hs__jnode *t = target->a; t; t = t->next, i++) {
        if (!hs__p_set(r, r->cur->vars, t->name, strlen(t->name), v->u.a.v[i])) {
            return false;
        }
    }
    return true;
}

static bool bind_targets(struct hs__render *r, const struct hs__jnode *targets,
                         struct hs_tmpl_value *item)
{
    if (!targets->next) {
        return hs__p_set(r, r->cur->vars, targets->name, strlen(targets->name), item);
    }
    struct hs__jnode list = {.kind = HS__J_LIST,
                             .a = (struct hs__jnode *)targets,
                             .line = targets->line,
                             .col = targets->col};
    return assign(r, &list, item);
}

bool hs__count_iteration(struct hs__render *r, const struct hs__jnode *n)
{
    if (++r->iters > r->lim.max_loop_iterations) {
        hs__fail(r, n, HS_E_RANGE, "more than %llu loop iterations",
                 (unsigned long long)r->lim.max_loop_iterations);
        return false;
    }
    return true;
}

static void exec_for(struct hs__render *r, const struct hs__jnode *n, struct hs__jbuf *out)
{
    struct hs_tmpl_value *seq = eval(r, n->a);
    if (!seq) {
        return;
    }
    if (seq->kind == HS_TMPL_OBJECT) {
        seq = hs__to_list(r, n, seq);
    } else if (seq->kind != HS_TMPL_ARRAY) {
        seq = hs__to_list(r, n, seq);
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
        items = hs__p_new(r, HS_TMPL_ARRAY);
        for (size_t i = 0; items && i < seq->u.a.n; i++) {
            if (!hs__count_iteration(r, n) || !bind_targets(r, n->d, seq->u.a.v[i])) {
                break;
            }
            struct hs_tmpl_value *c = eval(r, n->c);
            if (!c || (hs__tmpl_truthy(c) && !hs__p_push(r, items, seq->u.a.v[i]))) {
                break;
            }
        }
    }
    struct hs_tmpl_value *loop = r->st == HS_OK ? hs__p_new(r, HS__TMPL_LOOP) : NULL;
    if (loop) {
        loop->u.loop.items = items;
        loop->u.loop.length = items->u.a.n;
        if (hs__p_set(r, f->vars, "loop", 4, loop)) {
            for (size_t i = 0; i < items->u.a.n && r->st == HS_OK; i++) {
                if (!hs__count_iteration(r, n) || !bind_targets(r, n->d, items->u.a.v[i])) {
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

static void exec_node(struct hs__render *r, const struct hs__jnode *n, struct hs__jbuf *out)
{
    struct hs_tmpl_value *v;
    switch (n->kind) {
    case HS__J_TEXT:
        emit(r, out, n, n->lit->u.s.p, n->lit->u.s.len, NULL);
        break;
    case HS__J_OUTPUT:
        v = eval(r, n->a);
        if (v && v->kind == HS_TMPL_STRING) {
            emit(r, out, n, v->u.s.p, v->u.s.len, v);
        } else if (v) {
            struct hs__jbuf b = {0};
            hs_status st = hs__tmpl_str(&b, v);
            if (st != HS_OK) {
                hs__fail(r, n, st, "cannot print value");
            } else {
                size_t at = out->buf.len;
                emit(r, out, n, b.buf.p ? b.buf.p : "", b.buf.len, NULL);
                if (r->st == HS_OK && b.m && memchr(b.m, 1, b.buf.len) &&
                    hs__jbuf_mark(out, at) != HS_OK) { /* a container: marked whole */
                    hs__oom(r);
                }
            }
            hs__jbuf_free(&b);
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
            v = r->st == HS_OK ? hs__p_buf(r, &b) : NULL;
            if (!v) {
                hs__jbuf_free(&b);
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
        v = hs__p_new(r, HS__TMPL_MACRO);
        if (v) {
            v->u.m.node = n;
            hs__p_set(r, r->cur->vars, n->name, strlen(n->name), v);
        }
        break;
    case HS__J_CALLBLK:
        v = hs__p_new(r, HS__TMPL_MACRO);
        if (v) {
            v->u.m.node = n;
            v->u.m.frame = r->cur;
            v->u.m.is_caller = true;
            r->pending_caller = v;
            struct hs_tmpl_value *res = eval(r, n->b);
            r->pending_caller = NULL;
            if (res && res->kind == HS_TMPL_STRING) {
                emit(r, out, n, res->u.s.p, res->u.s.len, res);
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
            struct hs__args a;
            exec_list(r, n->b, &b);
            v = r->st == HS_OK ? hs__p_buf(r, &b) : NULL;
            if (!v) {
                hs__jbuf_free(&b);
                return;
            }
            if (!eval_args(r, n->d, &a)) {
                return;
            }
            struct hs_tmpl_value *res = hs__apply_filter(r, n, n->name, v, &a);
            res = res ? hs__to_str(r, res) : NULL;
            if (res) {
                emit(r, out, n, res->u.s.p, res->u.s.len, res);
            }
        }
        break;
    case HS__J_DO:
        eval(r, n->a);
        break;
    default:
        hs__fail(r, n, HS_E_INTERNAL, "bad statement node");
        break;
    }
}

static void exec_list(struct hs__render *r, const struct hs__jnode *n, struct hs__jbuf *out)
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

/* Hands b's text (and its client marks when client_mask is not NULL) to the caller. */
static hs_status give_out(struct hs__jbuf *b, char **out, size_t *out_len, uint8_t **client_mask,
                          struct hs_error *err)
{
    if (!b->buf.p && hs__jbuf_append(b, "", 0) != HS_OK) {
        hs__jbuf_free(b);
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    if (client_mask) {
        *client_mask = b->m && memchr(b->m, 1, b->buf.len) ? b->m : NULL;
        if (!*client_mask) {
            free(b->m);
        }
    } else {
        free(b->m);
    }
    *out = b->buf.p;
    if (out_len) {
        *out_len = b->buf.len;
    }
    return HS_OK;
}

hs_status hs_chat_template_render(const struct hs_chat_template *t,
                                  const struct hs_tmpl_value *context, char **out, size_t *out_len,
                                  struct hs_error *err)
{
    return hs_chat_template_render_marked(t, context, out, out_len, NULL, err);
}

hs_status hs_chat_template_render_marked(const struct hs_chat_template *t,
                                         const struct hs_tmpl_value *context, char **out,
                                         size_t *out_len, uint8_t **client_mask,
                                         struct hs_error *err)
{
    *out = NULL;
    if (out_len) {
        *out_len = 0;
    }
    if (client_mask) {
        *client_mask = NULL;
    }
    if (!t || !context || context->kind != HS_TMPL_OBJECT) {
        return hs_error_set(err, HS_E_INVAL, "render context must be an object");
    }
    struct hs__render r = {.t = t, .ctx = context, .lim = t->limits, .err = err};
    struct hs__jbuf b = {0};
    r.globals = new_frame(&r, NULL);
    if (r.globals) {
        r.cur = r.globals;
        exec_list(&r, t->body, &b);
    }
    pool_free(&r);
    if (r.st != HS_OK) {
        hs__jbuf_free(&b);
        return r.st;
    }
    return give_out(&b, out, out_len, client_mask, err);
}

/* ==== ChatML fallback ==== */

static hs_status chatml_content(struct hs__jbuf *b, const struct hs_tmpl_value *c)
{
    if (!c || c->kind == HS_TMPL_NULL) {
        return HS_OK;
    }
    if (c->kind == HS_TMPL_STRING) {
        return hs__jbuf_append_val(b, c, 0, c->u.s.len);
    }
    if (c->kind == HS_TMPL_ARRAY) {
        for (size_t i = 0; i < c->u.a.n; i++) {
            const struct hs_tmpl_value *text = hs_tmpl_object_get(c->u.a.v[i], "text");
            if (text && text->kind == HS_TMPL_STRING) {
                HS_TRY(hs__jbuf_append_val(b, text, 0, text->u.s.len));
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
    return hs_chat_template_render_chatml_marked(messages, add_generation_prompt, out, out_len,
                                                 NULL, err);
}

hs_status hs_chat_template_render_chatml_marked(const struct hs_tmpl_value *messages,
                                                bool add_generation_prompt, char **out,
                                                size_t *out_len, uint8_t **client_mask,
                                                struct hs_error *err)
{
    *out = NULL;
    if (out_len) {
        *out_len = 0;
    }
    if (client_mask) {
        *client_mask = NULL;
    }
    if (!messages || messages->kind != HS_TMPL_ARRAY) {
        return hs_error_set(err, HS_E_INVAL, "messages must be an array");
    }
    struct hs__jbuf b = {0};
    hs_status st = hs__jbuf_append(&b, "", 0);
    for (size_t i = 0; i < messages->u.a.n && st == HS_OK; i++) {
        const struct hs_tmpl_value *role = hs_tmpl_object_get(messages->u.a.v[i], "role");
        if (!role || role->kind != HS_TMPL_STRING) {
            hs__jbuf_free(&b);
            return hs_error_set(err, HS_E_INVAL, "message %zu has no string role", i);
        }
        st = hs__jbuf_append(&b, "<|im_start|>", 12);
        if (st == HS_OK) {
            st = hs__jbuf_append_val(&b, role, 0, role->u.s.len);
        }
        if (st == HS_OK) {
            st = hs__jbuf_putc(&b, '\n');
        }
        if (st == HS_OK) {
            st = chatml_content(&b, hs_tmpl_object_get(messages->u.a.v[i], "content"));
            if (st == HS_E_INVAL) {
                hs__jbuf_free(&b);
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
        hs__jbuf_free(&b);
        return hs_error_set(err, st, "out of memory");
    }
    return give_out(&b, out, out_len, client_mask, err);
}
