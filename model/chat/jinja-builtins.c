/* Chat-template builtins: filters, tests, attribute and index access, string/dict/list methods
 * and global functions (range, namespace, raise_exception, strftime_now). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

#include "model/chat/jinja-impl.h"

/* ==== string helpers ==== */

typedef utf8proc_int32_t (*case_fn)(utf8proc_int32_t);

/* mode 0: map all with f; 1: title case; 2: capitalize */
static struct hs_tmpl_value *str_case(struct hs__render *r, const struct hs_tmpl_value *v,
                                      case_fn f, int mode)
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
                hs__jbuf_free(&b);
                return hs__oom(r);
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
            hs__jbuf_free(&b);
            return hs__oom(r);
        }
        i += k;
    }
    return hs__p_client_if(hs__p_buf(r, &b), hs__has_client(v));
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
static struct hs_tmpl_value *str_strip(struct hs__render *r, const struct hs_tmpl_value *v,
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
    return hs__p_substr(r, v, a, b - a);
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

static struct hs_tmpl_value *str_replace(struct hs__render *r, const struct hs__jnode *n,
                                         const struct hs_tmpl_value *s,
                                         const struct hs_tmpl_value *old,
                                         const struct hs_tmpl_value *new_,
                                         const struct hs_tmpl_value *count)
{
    if (!old || !new_ || old->kind != HS_TMPL_STRING || new_->kind != HS_TMPL_STRING) {
        return hs__fail(r, n, HS_E_INVAL, "replace() needs two strings");
    }
    int64_t max = count && count->kind == HS_TMPL_INT ? count->u.i : -1;
    struct hs__jbuf b = {0};
    const char *p = s->u.s.p, *end = s->u.s.p + s->u.s.len;
    int64_t done = 0;
    hs_status st = HS_OK;
    if (old->u.s.len == 0) {
        /* Python inserts new before every character and at the end */
        size_t cnt;
        size_t *off = hs__utf8_offsets(p, s->u.s.len, &cnt);
        if (!off) {
            return hs__oom(r);
        }
        for (size_t i = 0; i <= cnt && st == HS_OK; i++) {
            if (max < 0 || done < max) {
                st = hs__jbuf_append_val(&b, new_, 0, new_->u.s.len);
                done++;
            }
            if (i < cnt && st == HS_OK) {
                st = hs__jbuf_append_val(&b, s, off[i], off[i + 1] - off[i]);
            }
            if (b.buf.len > r->lim.max_memory_bytes) {
                break;
            }
        }
        free(off);
    } else {
        while (st == HS_OK && (max < 0 || done < max)) {
            const char *f = hs__memfind(p, (size_t)(end - p), old->u.s.p, old->u.s.len);
            if (!f) {
                break;
            }
            st = hs__jbuf_append_val(&b, s, (size_t)(p - s->u.s.p), (size_t)(f - p));
            if (st == HS_OK) {
                st = hs__jbuf_append_val(&b, new_, 0, new_->u.s.len);
            }
            p = f + old->u.s.len;
            done++;
            if (b.buf.len > r->lim.max_memory_bytes) {
                break;
            }
        }
        if (st == HS_OK) {
            st = hs__jbuf_append_val(&b, s, (size_t)(p - s->u.s.p), (size_t)(end - p));
        }
    }
    if (st != HS_OK) {
        hs__jbuf_free(&b);
        return hs__oom(r);
    }
    if (b.buf.len > r->lim.max_memory_bytes) {
        hs__jbuf_free(&b);
        return hs__fail(r, n, HS_E_RANGE, "string too long");
    }
    return hs__p_buf(r, &b);
}

/* Python str.split / rsplit. sep NULL: runs of whitespace. */
static struct hs_tmpl_value *str_split(struct hs__render *r, const struct hs__jnode *n,
                                       const struct hs_tmpl_value *s,
                                       const struct hs_tmpl_value *sep,
                                       const struct hs_tmpl_value *maxsplit, bool right)
{
    int64_t max = maxsplit && maxsplit->kind == HS_TMPL_INT ? maxsplit->u.i : -1;
    struct hs_tmpl_value *arr = hs__p_new(r, HS_TMPL_ARRAY);
    if (!arr) {
        return NULL;
    }
    const char *p = s->u.s.p;
    size_t len = s->u.s.len;
    if (sep && sep->kind == HS_TMPL_STRING) {
        if (sep->u.s.len == 0) {
            return hs__fail(r, n, HS_E_INVAL, "empty separator");
        }
        /* collect pieces in order; for rsplit, split from the right then reverse */
        size_t a = 0, b = len;
        int64_t done = 0;
        struct hs_tmpl_value *tmp = hs__p_new(r, HS_TMPL_ARRAY);
        if (!tmp) {
            return NULL;
        }
        while (max < 0 || done < max) {
            const char *f = right ? memrfind(p + a, b - a, sep->u.s.p, sep->u.s.len)
                                  : hs__memfind(p + a, b - a, sep->u.s.p, sep->u.s.len);
            if (!f) {
                break;
            }
            size_t at = (size_t)(f - p);
            struct hs_tmpl_value *piece =
                right ? hs__p_substr(r, s, at + sep->u.s.len, b - at - sep->u.s.len)
                      : hs__p_substr(r, s, a, at - a);
            if (!piece || !hs__p_push(r, tmp, piece)) {
                return NULL;
            }
            if (right) {
                b = at;
            } else {
                a = at + sep->u.s.len;
            }
            done++;
        }
        struct hs_tmpl_value *last = hs__p_substr(r, s, a, b - a);
        if (!last || !hs__p_push(r, tmp, last)) {
            return NULL;
        }
        for (size_t i = 0; i < tmp->u.a.n; i++) {
            if (!hs__p_push(r, arr, tmp->u.a.v[right ? tmp->u.a.n - 1 - i : i])) {
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
        struct hs_tmpl_value *piece = hs__p_substr(r, s, i, j - i);
        if (!piece || !hs__p_push(r, arr, piece)) {
            return NULL;
        }
        done++;
        i = j;
    }
    return arr;
}

/* ==== filters, tests, methods ==== */

/* select/reject/selectattr/rejectattr/map */
static struct hs_tmpl_value *filter_seq(struct hs__render *r, const struct hs__jnode *n,
                                        const char *f, struct hs_tmpl_value *v,
                                        const struct hs__args *a)
{
    struct hs_tmpl_value *items = hs__to_list(r, n, v);
    struct hs_tmpl_value *out = items ? hs__p_new(r, HS_TMPL_ARRAY) : NULL;
    if (!out) {
        return NULL;
    }
    bool attr = strcmp(f, "selectattr") == 0 || strcmp(f, "rejectattr") == 0;
    bool reject = f[0] == 'r';
    if (strcmp(f, "map") == 0) {
        struct hs_tmpl_value *at = hs__arg(a, -1, "attribute");
        struct hs_tmpl_value *fname = hs__arg(a, 0, NULL);
        struct hs_tmpl_value *dflt = hs__arg(a, -1, "default");
        if (!at && (!fname || fname->kind != HS_TMPL_STRING)) {
            return hs__fail(r, n, HS_E_INVAL, "map needs a filter name or attribute=");
        }
        struct hs__args sub = {0};
        for (int i = 1; i < a->n; i++) {
            sub.pos[sub.n++] = a->pos[i];
        }
        for (size_t i = 0; i < items->u.a.n; i++) {
            struct hs_tmpl_value *x;
            if (at) {
                if (at->kind != HS_TMPL_STRING) {
                    return hs__fail(r, n, HS_E_INVAL, "map attribute must be a string");
                }
                x = hs__get_attr(r, n, items->u.a.v[i], at->u.s.p);
                if (x && x->kind == HS__TMPL_UNDEFINED && dflt) {
                    x = dflt;
                }
            } else {
                x = hs__apply_filter(r, n, fname->u.s.p, items->u.a.v[i], &sub);
            }
            if (!x || !hs__p_push(r, out, x)) {
                return NULL;
            }
        }
        return out;
    }
    struct hs_tmpl_value *at = NULL;
    int targ = 0;
    if (attr) {
        at = hs__arg(a, 0, NULL);
        if (!at || at->kind != HS_TMPL_STRING) {
            return hs__fail(r, n, HS_E_INVAL, "%s needs an attribute name", f);
        }
        targ = 1;
    }
    struct hs_tmpl_value *test = hs__arg(a, targ, NULL);
    if (test && test->kind != HS_TMPL_STRING) {
        return hs__fail(r, n, HS_E_INVAL, "%s needs a test name", f);
    }
    for (size_t i = 0; i < items->u.a.n; i++) {
        struct hs_tmpl_value *x = items->u.a.v[i];
        struct hs_tmpl_value *subject = at ? hs__get_attr(r, n, x, at->u.s.p) : x;
        if (!subject) {
            return NULL;
        }
        bool ok =
            test ? hs__run_test(r, n, test->u.s.p, subject, a, targ + 1) : hs__tmpl_truthy(subject);
        if (r->st != HS_OK) {
            return NULL;
        }
        if (ok != reject && !hs__p_push(r, out, x)) {
            return NULL;
        }
    }
    return out;
}

static struct hs_tmpl_value *filter_indent(struct hs__render *r, const struct hs__jnode *n,
                                           struct hs_tmpl_value *v, const struct hs__args *a)
{
    struct hs_tmpl_value *w = hs__arg(a, 0, "width");
    struct hs_tmpl_value *first = hs__arg(a, 1, "first");
    struct hs_tmpl_value *blank = hs__arg(a, 2, "blank");
    struct hs__jbuf pad = {0};
    hs_status st = HS_OK;
    if (w && w->kind == HS_TMPL_STRING) {
        st = hs__jbuf_append(&pad, w->u.s.p, w->u.s.len);
    } else {
        int64_t k = w && hs__is_intlike(w) ? hs__int_of(w) : 4;
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
        if (do_pad && pad.buf.len) {
            st = hs__jbuf_append(&b, pad.buf.p, pad.buf.len);
        }
        if (st == HS_OK) {
            st = hs__jbuf_append_val(&b, v, i, j - i + (j < len ? 1 : 0));
        }
        is_first = false;
        if (j >= len) {
            break;
        }
        i = j + 1;
        if (i == len) {
            break; /* trailing newline: no padded empty line after it */
        }
        if (b.buf.len > r->lim.max_memory_bytes) {
            break;
        }
    }
    hs__jbuf_free(&pad);
    if (st != HS_OK) {
        hs__jbuf_free(&b);
        return hs__oom(r);
    }
    if (w && hs__has_client(w) && hs__jbuf_mark(&b, 0) != HS_OK) { /* client padding */
        hs__jbuf_free(&b);
        return hs__oom(r);
    }
    return hs__p_buf(r, &b);
}

static int cmp_for_sort(struct hs__render *r, const struct hs__jnode *n, struct hs_tmpl_value *x,
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
    return hs__compare(r, n, x, y);
}

struct hs_tmpl_value *hs__apply_filter(struct hs__render *r, const struct hs__jnode *n,
                                       const char *f, struct hs_tmpl_value *v,
                                       const struct hs__args *a)
{
    bool str = v->kind == HS_TMPL_STRING;
    if (strcmp(f, "default") == 0 || strcmp(f, "d") == 0) {
        struct hs_tmpl_value *dv = hs__arg(a, 0, "default_value");
        struct hs_tmpl_value *boolean = hs__arg(a, 1, "boolean");
        bool use = v->kind == HS__TMPL_UNDEFINED ||
                   (boolean && hs__tmpl_truthy(boolean) && !hs__tmpl_truthy(v));
        if (use) {
            return dv ? dv : hs__p_str(r, "", 0);
        }
        return v;
    }
    if (strcmp(f, "safe") == 0) {
        return v;
    }
    if (strcmp(f, "string") == 0) {
        return hs__to_str(r, v);
    }
    if (strcmp(f, "tojson") == 0) {
        struct hs_tmpl_value *ind = hs__arg(a, 0, "indent");
        int indent = ind && hs__is_intlike(ind) ? (int)HS_MAX(0, HS_MIN(hs__int_of(ind), 64)) : -1;
        struct hs__jbuf b = {0};
        hs_status st = hs__tmpl_json(&b, v, indent);
        if (st != HS_OK) {
            hs__jbuf_free(&b);
            return st == HS_E_NOMEM ? hs__oom(r)
                                    : hs__fail(r, n, HS_E_INVAL, "value cannot be written as JSON");
        }
        return hs__p_buf(r, &b);
    }
    if (strcmp(f, "length") == 0 || strcmp(f, "count") == 0) {
        switch (v->kind) {
        case HS_TMPL_STRING:
            return hs__p_int(r, (int64_t)hs__utf8_count(v->u.s.p, v->u.s.len));
        case HS_TMPL_ARRAY:
            return hs__p_int(r, (int64_t)v->u.a.n);
        case HS_TMPL_OBJECT:
            return hs__p_int(r, (int64_t)v->u.o.n);
        case HS__TMPL_UNDEFINED:
            return hs__p_int(r, 0);
        default:
            return hs__fail(r, n, HS_E_INVAL, "object of type '%s' has no length",
                            hs__kind_name(v));
        }
    }
    if (strcmp(f, "first") == 0 || strcmp(f, "last") == 0) {
        struct hs_tmpl_value *l = hs__to_list(r, n, v);
        if (!l) {
            return NULL;
        }
        if (l->u.a.n == 0) {
            return &hs__v_undef;
        }
        return l->u.a.v[f[0] == 'f' ? 0 : l->u.a.n - 1];
    }
    if (strcmp(f, "list") == 0) {
        return hs__to_list(r, n, v);
    }
    if (strcmp(f, "items") == 0) {
        return hs__items_of(r, n, v);
    }
    if (strcmp(f, "unique") == 0 || strcmp(f, "reverse") == 0) {
        bool rev = f[0] == 'r';
        struct hs_tmpl_value *l = hs__to_list(r, n, v);
        struct hs_tmpl_value *out = l ? hs__p_new(r, HS_TMPL_ARRAY) : NULL;
        if (!out) {
            return NULL;
        }
        for (size_t i = 0; i < l->u.a.n; i++) {
            struct hs_tmpl_value *x = l->u.a.v[rev ? l->u.a.n - 1 - i : i];
            bool seen = false;
            for (size_t j = 0; !rev && j < out->u.a.n && !seen; j++) {
                if (!hs__count_iteration(r, n)) { /* quadratic: counts against the loop limit */
                    return NULL;
                }
                seen = hs__tmpl_equal(out->u.a.v[j], x);
            }
            if (!seen && !hs__p_push(r, out, x)) {
                return NULL;
            }
        }
        if (rev && str) {
            struct hs__jbuf b = {0};
            for (size_t i = 0; i < out->u.a.n; i++) {
                if (hs__jbuf_append_val(&b, out->u.a.v[i], 0, out->u.a.v[i]->u.s.len) != HS_OK) {
                    hs__jbuf_free(&b);
                    return hs__oom(r);
                }
            }
            return hs__p_buf(r, &b);
        }
        return out;
    }
    if (strcmp(f, "join") == 0) {
        struct hs_tmpl_value *sep = hs__arg(a, 0, "d");
        struct hs_tmpl_value *at = hs__arg(a, 1, "attribute");
        struct hs_tmpl_value *l = hs__to_list(r, n, v);
        if (!l) {
            return NULL;
        }
        struct hs__jbuf b = {0};
        hs_status st = HS_OK;
        for (size_t i = 0; i < l->u.a.n && st == HS_OK; i++) {
            struct hs_tmpl_value *x = l->u.a.v[i];
            if (at && at->kind == HS_TMPL_STRING) {
                x = hs__get_attr(r, n, x, at->u.s.p);
                if (!x) {
                    hs__jbuf_free(&b);
                    return NULL;
                }
            }
            if (i && sep && sep->kind == HS_TMPL_STRING) {
                st = hs__jbuf_append_val(&b, sep, 0, sep->u.s.len);
            }
            if (st == HS_OK) {
                st = hs__tmpl_str(&b, x);
            }
            if (b.buf.len > r->lim.max_memory_bytes) {
                hs__jbuf_free(&b);
                return hs__fail(r, n, HS_E_RANGE, "string too long");
            }
        }
        if (st != HS_OK) {
            hs__jbuf_free(&b);
            return hs__oom(r);
        }
        return hs__p_buf(r, &b);
    }
    if (strcmp(f, "select") == 0 || strcmp(f, "reject") == 0 || strcmp(f, "selectattr") == 0 ||
        strcmp(f, "rejectattr") == 0 || strcmp(f, "map") == 0) {
        return filter_seq(r, n, f, v, a);
    }
    if (strcmp(f, "dictsort") == 0 || strcmp(f, "sort") == 0) {
        bool dict = f[0] == 'd';
        struct hs_tmpl_value *l = dict ? hs__items_of(r, n, v) : hs__to_list(r, n, v);
        if (!l) {
            return NULL;
        }
        struct hs_tmpl_value *cs = hs__arg(a, dict ? 0 : 1, "case_sensitive");
        struct hs_tmpl_value *rev = hs__arg(a, dict ? 2 : 0, "reverse");
        struct hs_tmpl_value *at = dict ? NULL : hs__arg(a, 2, "attribute");
        bool ci = !(cs && hs__tmpl_truthy(cs));
        bool desc = rev && hs__tmpl_truthy(rev);
        /* insertion sort: stable, and lists here are short */
        for (size_t i = 1; i < l->u.a.n; i++) {
            struct hs_tmpl_value *x = l->u.a.v[i];
            size_t j = i;
            while (j > 0) {
                if (!hs__count_iteration(r, n)) {
                    return NULL;
                }
                struct hs_tmpl_value *kx = x, *ky = l->u.a.v[j - 1];
                if (dict) {
                    kx = kx->u.a.v[0];
                    ky = ky->u.a.v[0];
                } else if (at && at->kind == HS_TMPL_STRING) {
                    kx = hs__get_attr(r, n, kx, at->u.s.p);
                    ky = kx ? hs__get_attr(r, n, ky, at->u.s.p) : NULL;
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
        struct hs_tmpl_value *dflt = hs__arg(a, 0, "default");
        double d = 0;
        bool ok = true;
        if (hs__is_num(v)) {
            if (want_int && hs__is_intlike(v)) {
                return hs__p_int(r, hs__int_of(v));
            }
            d = hs__num_of(v);
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
            return want_int ? hs__p_int(r, 0) : hs__p_float(r, 0.0);
        }
        if (want_int) {
            if (!(d > -9.2e18 && d < 9.2e18)) {
                return hs__fail(r, n, HS_E_INVAL, "number out of integer range");
            }
            return hs__p_int(r, (int64_t)d);
        }
        return hs__p_float(r, d);
    }
    if (strcmp(f, "abs") == 0) {
        if (v->kind == HS_TMPL_FLOAT) {
            return hs__p_float(r, fabs(v->u.f));
        }
        if (hs__is_intlike(v)) {
            int64_t i = hs__int_of(v);
            if (i == INT64_MIN) {
                return hs__fail(r, n, HS_E_RANGE, "integer overflow");
            }
            return hs__p_int(r, i < 0 ? -i : i);
        }
        return hs__fail(r, n, HS_E_INVAL, "bad operand type for abs(): '%s'", hs__kind_name(v));
    }
    if (strcmp(f, "round") == 0) {
        struct hs_tmpl_value *prec = hs__arg(a, 0, "precision");
        struct hs_tmpl_value *method = hs__arg(a, 1, "method");
        if (!hs__is_num(v)) {
            return hs__fail(r, n, HS_E_INVAL, "round needs a number");
        }
        int64_t pr = prec && hs__is_intlike(prec) ? hs__int_of(prec) : 0;
        pr = HS_MAX(-20, HS_MIN(pr, 20));
        double scale = pow(10.0, (double)pr), x = hs__num_of(v) * scale;
        const char *m = method && method->kind == HS_TMPL_STRING ? method->u.s.p : "common";
        if (strcmp(m, "ceil") == 0) {
            x = ceil(x);
        } else if (strcmp(m, "floor") == 0) {
            x = floor(x);
        } else if (pr >= 0 && isfinite(hs__num_of(v))) {
            /* Python's round(): half-even on the exact decimal value, which printf gives */
            char buf[400];
            snprintf(buf, sizeof(buf), "%.*f", (int)pr, hs__num_of(v));
            return hs__p_float(r, strtod(buf, NULL));
        } else {
            x = nearbyint(x);
        }
        return hs__p_float(r, x / scale);
    }
    if (strcmp(f, "attr") == 0) {
        struct hs_tmpl_value *name = hs__arg(a, 0, NULL);
        if (!name || name->kind != HS_TMPL_STRING) {
            return hs__fail(r, n, HS_E_INVAL, "attr needs a name");
        }
        return hs__get_attr(r, n, v, name->u.s.p);
    }
    /* string filters */
    if (!str && v->kind == HS__TMPL_UNDEFINED) {
        v = hs__p_str(r, "", 0);
        if (!v) {
            return NULL;
        }
        str = true;
    }
    static const char *const str_filters[] = {"trim",       "upper",   "lower",  "title",
                                              "capitalize", "replace", "indent", "center",
                                              "wordcount",  "e",       "escape"};
    bool is_str_filter = false;
    for (size_t i = 0; i < HS_ARRAY_LEN(str_filters); i++) {
        is_str_filter |= strcmp(f, str_filters[i]) == 0;
    }
    if (is_str_filter && !str) {
        v = hs__to_str(r, v);
        if (!v) {
            return NULL;
        }
    }
    if (strcmp(f, "trim") == 0) {
        return str_strip(r, v, hs__arg(a, 0, "chars"), 3);
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
        return str_replace(r, n, v, hs__arg(a, 0, "old"), hs__arg(a, 1, "new"),
                           hs__arg(a, 2, "count"));
    }
    if (strcmp(f, "indent") == 0) {
        return filter_indent(r, n, v, a);
    }
    if (strcmp(f, "center") == 0) {
        struct hs_tmpl_value *w = hs__arg(a, 0, "width");
        int64_t width = w && hs__is_intlike(w) ? HS_MIN(hs__int_of(w), 100000) : 80;
        int64_t len = (int64_t)hs__utf8_count(v->u.s.p, v->u.s.len);
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
            st = hs__jbuf_append_val(&b, v, 0, v->u.s.len);
        }
        for (int64_t i = 0; i < total - left && st == HS_OK; i++) {
            st = hs__jbuf_putc(&b, ' ');
        }
        if (st != HS_OK) {
            hs__jbuf_free(&b);
            return hs__oom(r);
        }
        return hs__p_buf(r, &b);
    }
    if (strcmp(f, "wordcount") == 0) {
        struct hs_tmpl_value *words = str_split(r, n, v, NULL, NULL, false);
        return words ? hs__p_int(r, (int64_t)words->u.a.n) : NULL;
    }
    if (strcmp(f, "e") == 0 || strcmp(f, "escape") == 0) {
        struct hs__jbuf b = {0};
        hs_status st = HS_OK;
        for (size_t i = 0; i < v->u.s.len && st == HS_OK; i++) {
            char c = v->u.s.p[i];
            const char *rep = c == '&'    ? "&amp;"
                              : c == '<'  ? "&lt;"
                              : c == '>'  ? "&gt;"
                              : c == '"'  ? "&#34;"
                              : c == '\'' ? "&#39;"
                                          : NULL;
            st = rep ? hs__jbuf_append(&b, rep, strlen(rep)) : hs__jbuf_putc(&b, c);
        }
        if (st != HS_OK) {
            hs__jbuf_free(&b);
            return hs__oom(r);
        }
        return hs__p_client_if(hs__p_buf(r, &b), hs__has_client(v));
    }
    return hs__fail(r, n, HS_E_INVAL, "unknown filter '%s'", f);
}

bool hs__run_test(struct hs__render *r, const struct hs__jnode *n, const char *t,
                  const struct hs_tmpl_value *v, const struct hs__args *a, int first_arg)
{
    const struct hs_tmpl_value *x = hs__arg(a, first_arg, NULL);
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
        if (!hs__is_intlike(v)) {
            hs__fail(r, n, HS_E_INVAL, "test '%s' needs an integer", t);
            return false;
        }
        int64_t i = hs__int_of(v);
        if (t[0] == 'o') {
            return i % 2 != 0;
        }
        if (t[0] == 'e') {
            return i % 2 == 0;
        }
        if (!x || !hs__is_intlike(x) || hs__int_of(x) == 0) {
            hs__fail(r, n, HS_E_INVAL, "divisibleby needs a non-zero integer");
            return false;
        }
        return hs__int_of(x) == -1 || i % hs__int_of(x) == 0;
    }
    if (!x) {
        hs__fail(r, n, HS_E_INVAL, "unknown test '%s' or missing argument", t);
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
        return hs__contains(r, n, v, x);
    }
    int c;
    if (strcmp(t, "lt") == 0 || strcmp(t, "lessthan") == 0) {
        c = hs__compare(r, n, v, x);
        return c < 0;
    }
    if (strcmp(t, "le") == 0) {
        return hs__compare(r, n, v, x) <= 0;
    }
    if (strcmp(t, "gt") == 0 || strcmp(t, "greaterthan") == 0) {
        return hs__compare(r, n, v, x) > 0;
    }
    if (strcmp(t, "ge") == 0) {
        return hs__compare(r, n, v, x) >= 0;
    }
    hs__fail(r, n, HS_E_INVAL, "unknown test '%s'", t);
    return false;
}

/* Attribute access: dict keys, loop fields; undefined for anything else. */
struct hs_tmpl_value *hs__get_attr(struct hs__render *r, const struct hs__jnode *n,
                                   struct hs_tmpl_value *obj, const char *name)
{
    if (obj->kind == HS__TMPL_UNDEFINED) {
        return hs__fail(r, n, HS_E_INVAL, "cannot read attribute '%s' of an undefined value", name);
    }
    if (obj->kind == HS_TMPL_OBJECT) {
        ptrdiff_t at = hs__tmpl_object_find(obj, name, strlen(name));
        return at >= 0 ? obj->u.o.v[at] : &hs__v_undef;
    }
    if (obj->kind == HS__TMPL_LOOP) {
        size_t i = obj->u.loop.index0, len = obj->u.loop.length;
        if (strcmp(name, "index") == 0) {
            return hs__p_int(r, (int64_t)i + 1);
        }
        if (strcmp(name, "index0") == 0) {
            return hs__p_int(r, (int64_t)i);
        }
        if (strcmp(name, "revindex") == 0) {
            return hs__p_int(r, (int64_t)(len - i));
        }
        if (strcmp(name, "revindex0") == 0) {
            return hs__p_int(r, (int64_t)(len - i - 1));
        }
        if (strcmp(name, "first") == 0) {
            return hs__p_bool(i == 0);
        }
        if (strcmp(name, "last") == 0) {
            return hs__p_bool(i + 1 == len);
        }
        if (strcmp(name, "length") == 0) {
            return hs__p_int(r, (int64_t)len);
        }
        const struct hs_tmpl_value *items = obj->u.loop.items;
        if (strcmp(name, "previtem") == 0) {
            return i > 0 && i - 1 < items->u.a.n ? items->u.a.v[i - 1] : &hs__v_undef;
        }
        if (strcmp(name, "nextitem") == 0) {
            return i + 1 < len && i + 1 < items->u.a.n ? items->u.a.v[i + 1] : &hs__v_undef;
        }
    }
    return &hs__v_undef;
}

struct hs_tmpl_value *hs__get_index(struct hs__render *r, const struct hs__jnode *n,
                                    struct hs_tmpl_value *obj, struct hs_tmpl_value *idx)
{
    switch (obj->kind) {
    case HS_TMPL_OBJECT:
        if (idx->kind == HS_TMPL_STRING) {
            ptrdiff_t at = hs__tmpl_object_find(obj, idx->u.s.p, idx->u.s.len);
            return at >= 0 ? obj->u.o.v[at] : &hs__v_undef;
        }
        return &hs__v_undef;
    case HS_TMPL_ARRAY:
    case HS_TMPL_STRING: {
        if (!hs__is_intlike(idx)) {
            if (idx->kind == HS_TMPL_STRING) {
                return hs__get_attr(r, n, obj, idx->u.s.p);
            }
            return hs__fail(r, n, HS_E_INVAL, "indices must be integers");
        }
        int64_t i = hs__int_of(idx);
        if (obj->kind == HS_TMPL_ARRAY) {
            int64_t len = (int64_t)obj->u.a.n;
            if (i < 0) {
                i += len;
            }
            return i >= 0 && i < len ? obj->u.a.v[i] : &hs__v_undef;
        }
        size_t cnt;
        size_t *off = hs__utf8_offsets(obj->u.s.p, obj->u.s.len, &cnt);
        if (!off) {
            return hs__oom(r);
        }
        if (i < 0) {
            i += (int64_t)cnt;
        }
        struct hs_tmpl_value *res = &hs__v_undef;
        if (i >= 0 && i < (int64_t)cnt) {
            res = hs__p_substr(r, obj, off[i], off[i + 1] - off[i]);
        }
        free(off);
        return res;
    }
    case HS__TMPL_UNDEFINED:
        return hs__fail(r, n, HS_E_INVAL, "cannot index an undefined value");
    case HS__TMPL_LOOP:
        if (idx->kind == HS_TMPL_STRING) {
            return hs__get_attr(r, n, obj, idx->u.s.p);
        }
        return &hs__v_undef;
    default:
        return &hs__v_undef;
    }
}

struct hs_tmpl_value *hs__get_slice(struct hs__render *r, const struct hs__jnode *n,
                                    struct hs_tmpl_value *obj, struct hs_tmpl_value *sa,
                                    struct hs_tmpl_value *sb, struct hs_tmpl_value *sc)
{
    if (obj->kind != HS_TMPL_ARRAY && obj->kind != HS_TMPL_STRING) {
        return hs__fail(r, n, HS_E_INVAL, "cannot slice a %s", hs__kind_name(obj));
    }
    struct hs_tmpl_value *bounds[3] = {sa, sb, sc};
    for (int i = 0; i < 3; i++) {
        if (bounds[i] && bounds[i]->kind == HS_TMPL_NULL) {
            bounds[i] = NULL;
        }
        if (bounds[i] && !hs__is_intlike(bounds[i])) {
            return hs__fail(r, n, HS_E_INVAL, "slice indices must be integers");
        }
    }
    int64_t step = bounds[2] ? hs__int_of(bounds[2]) : 1;
    if (step == 0) {
        return hs__fail(r, n, HS_E_INVAL, "slice step cannot be zero");
    }
    size_t cnt = obj->u.a.n;
    size_t *off = NULL;
    if (obj->kind == HS_TMPL_STRING) {
        off = hs__utf8_offsets(obj->u.s.p, obj->u.s.len, &cnt);
        if (!off) {
            return hs__oom(r);
        }
    }
    int64_t len = (int64_t)cnt;
    /* Python's slice.indices */
    int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? len - 1 : len;
    int64_t start = step < 0 ? hi : lo, stop = step < 0 ? lo : hi;
    if (bounds[0]) {
        start = hs__int_of(bounds[0]);
        start = start < 0 ? HS_MAX(start + len, lo) : HS_MIN(start, hi);
    }
    if (bounds[1]) {
        stop = hs__int_of(bounds[1]);
        stop = stop < 0 ? HS_MAX(stop + len, lo) : HS_MIN(stop, hi);
    }
    struct hs_tmpl_value *out = NULL;
    struct hs__jbuf b = {0};
    if (obj->kind == HS_TMPL_ARRAY) {
        out = hs__p_new(r, HS_TMPL_ARRAY);
    }
    bool ok = obj->kind == HS_TMPL_STRING || out;
    for (int64_t i = start; ok && (step > 0 ? i < stop : i > stop);) {
        if (out) {
            ok = hs__p_push(r, out, obj->u.a.v[i]);
        } else if (hs__jbuf_append_val(&b, obj, off[i], off[i + 1] - off[i]) != HS_OK) {
            hs__oom(r);
            ok = false;
        }
        if (__builtin_add_overflow(i, step, &i)) {
            break;
        }
    }
    free(off);
    if (!ok) {
        hs__jbuf_free(&b);
        return NULL;
    }
    return out ? out : hs__p_buf(r, &b);
}

struct hs_tmpl_value *hs__call_method(struct hs__render *r, const struct hs__jnode *n,
                                      struct hs_tmpl_value *obj, const char *m,
                                      const struct hs__args *a)
{
    struct hs_tmpl_value *x = hs__arg(a, 0, NULL), *y = hs__arg(a, 1, NULL);
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
            return str_split(r, n, obj, hs__arg(a, 0, "sep"), hs__arg(a, 1, "maxsplit"),
                             m[0] == 'r');
        }
        if (strcmp(m, "startswith") == 0 || strcmp(m, "endswith") == 0) {
            bool start = m[0] == 's';
            if (!x) {
                return hs__fail(r, n, HS_E_INVAL, "%s() needs an argument", m);
            }
            size_t cnt = x->kind == HS_TMPL_ARRAY ? x->u.a.n : 1;
            for (size_t i = 0; i < cnt; i++) {
                struct hs_tmpl_value *s = x->kind == HS_TMPL_ARRAY ? x->u.a.v[i] : x;
                if (s->kind != HS_TMPL_STRING) {
                    return hs__fail(r, n, HS_E_INVAL, "%s() needs a string", m);
                }
                if (s->u.s.len <= obj->u.s.len &&
                    memcmp(obj->u.s.p + (start ? 0 : obj->u.s.len - s->u.s.len), s->u.s.p,
                           s->u.s.len) == 0) {
                    return hs__p_bool(true);
                }
            }
            return hs__p_bool(false);
        }
        if (strcmp(m, "find") == 0 || strcmp(m, "count") == 0 || strcmp(m, "rfind") == 0) {
            if (!x || x->kind != HS_TMPL_STRING) {
                return hs__fail(r, n, HS_E_INVAL, "%s() needs a string", m);
            }
            if (m[0] == 'c') {
                int64_t c = 0;
                const char *p = obj->u.s.p, *end = p + obj->u.s.len;
                if (x->u.s.len == 0) {
                    return hs__p_int(r, (int64_t)hs__utf8_count(p, obj->u.s.len) + 1);
                }
                while ((p = hs__memfind(p, (size_t)(end - p), x->u.s.p, x->u.s.len))) {
                    c++;
                    p += x->u.s.len;
                }
                return hs__p_int(r, c);
            }
            const char *f = m[0] == 'r'
                                ? memrfind(obj->u.s.p, obj->u.s.len, x->u.s.p, x->u.s.len)
                                : hs__memfind(obj->u.s.p, obj->u.s.len, x->u.s.p, x->u.s.len);
            return hs__p_int(r, f ? (int64_t)hs__utf8_count(obj->u.s.p, (size_t)(f - obj->u.s.p))
                                  : -1);
        }
        if (strcmp(m, "replace") == 0) {
            return str_replace(r, n, obj, x, y, hs__arg(a, 2, "count"));
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
            struct hs__args ja = {.n = 1, .pos = {obj}};
            return x ? hs__apply_filter(r, n, "join", x, &ja)
                     : hs__fail(r, n, HS_E_INVAL, "join()");
        }
        if (strcmp(m, "isdigit") == 0 || strcmp(m, "isspace") == 0) {
            bool ok = obj->u.s.len > 0;
            for (size_t i = 0; i < obj->u.s.len && ok; i++) {
                char c = obj->u.s.p[i];
                ok = m[2] == 'd' ? (c >= '0' && c <= '9') : in_set(c, NULL, 0);
            }
            return hs__p_bool(ok);
        }
    } else if (obj->kind == HS_TMPL_OBJECT) {
        if (strcmp(m, "get") == 0) {
            if (!x || x->kind != HS_TMPL_STRING) {
                return y ? y : &hs__v_none;
            }
            ptrdiff_t at = hs__tmpl_object_find(obj, x->u.s.p, x->u.s.len);
            return at >= 0 ? obj->u.o.v[at] : y ? y : &hs__v_none;
        }
        if (strcmp(m, "items") == 0) {
            return hs__items_of(r, n, obj);
        }
        if (strcmp(m, "keys") == 0) {
            return hs__to_list(r, n, obj);
        }
        if (strcmp(m, "values") == 0) {
            struct hs_tmpl_value *out = hs__p_new(r, HS_TMPL_ARRAY);
            for (size_t i = 0; out && i < obj->u.o.n; i++) {
                if (!hs__p_push(r, out, obj->u.o.v[i])) {
                    return NULL;
                }
            }
            return out;
        }
        ptrdiff_t at = hs__tmpl_object_find(obj, m, strlen(m));
        if (at >= 0 && obj->u.o.v[at]->kind == HS__TMPL_MACRO) {
            return hs__call_macro(r, n, obj->u.o.v[at], a);
        }
    } else if (obj->kind == HS_TMPL_ARRAY) {
        if (strcmp(m, "append") == 0) {
            if (!obj->pooled) {
                return hs__fail(r, n, HS_E_INVAL, "cannot modify a list from the context");
            }
            if (!x || !hs__p_push(r, obj, x)) {
                return x ? NULL : hs__fail(r, n, HS_E_INVAL, "append() needs an argument");
            }
            return &hs__v_none;
        }
        if (strcmp(m, "index") == 0 && x) {
            for (size_t i = 0; i < obj->u.a.n; i++) {
                if (hs__tmpl_equal(obj->u.a.v[i], x)) {
                    return hs__p_int(r, (int64_t)i);
                }
            }
            return hs__fail(r, n, HS_E_INVAL, "value not in list");
        }
    }
    return hs__fail(r, n, HS_E_INVAL, "'%s' has no method '%s'", hs__kind_name(obj), m);
}

static struct hs_tmpl_value *make_range(struct hs__render *r, const struct hs__jnode *n,
                                        const struct hs__args *a)
{
    int64_t v[3] = {0, 0, 1};
    if (a->n < 1 || a->n > 3) {
        return hs__fail(r, n, HS_E_INVAL, "range() takes 1 to 3 arguments");
    }
    for (int i = 0; i < a->n; i++) {
        if (!hs__is_intlike(a->pos[i])) {
            return hs__fail(r, n, HS_E_INVAL, "range() needs integers");
        }
    }
    if (a->n == 1) {
        v[1] = hs__int_of(a->pos[0]);
    } else {
        v[0] = hs__int_of(a->pos[0]);
        v[1] = hs__int_of(a->pos[1]);
        if (a->n == 3) {
            v[2] = hs__int_of(a->pos[2]);
        }
    }
    if (v[2] == 0) {
        return hs__fail(r, n, HS_E_INVAL, "range() step must not be zero");
    }
    struct hs_tmpl_value *out = hs__p_new(r, HS_TMPL_ARRAY);
    uint64_t count = 0;
    for (int64_t i = v[0]; out && (v[2] > 0 ? i < v[1] : i > v[1]); count++) {
        if (count >= r->lim.max_loop_iterations) {
            return hs__fail(r, n, HS_E_RANGE, "range() longer than the loop limit");
        }
        struct hs_tmpl_value *x = hs__p_int(r, i);
        if (!x || !hs__p_push(r, out, x)) {
            return NULL;
        }
        if (__builtin_add_overflow(i, v[2], &i)) {
            break;
        }
    }
    return out;
}

struct hs_tmpl_value *hs__call_global(struct hs__render *r, const struct hs__jnode *n,
                                      const char *name, const struct hs__args *a)
{
    if (strcmp(name, "range") == 0) {
        return make_range(r, n, a);
    }
    if (strcmp(name, "namespace") == 0 || strcmp(name, "dict") == 0) {
        struct hs_tmpl_value *o = hs__p_new(r, HS_TMPL_OBJECT);
        if (!o) {
            return NULL;
        }
        o->is_namespace = name[0] == 'n';
        if (a->n > 0 && a->pos[0]->kind == HS_TMPL_OBJECT) {
            for (size_t i = 0; i < a->pos[0]->u.o.n; i++) {
                const char *k = a->pos[0]->u.o.k[i];
                if (!hs__p_set(r, o, k, strlen(k), a->pos[0]->u.o.v[i])) {
                    return NULL;
                }
            }
        }
        for (int i = 0; i < a->nk; i++) {
            if (!hs__p_set(r, o, a->kname[i], strlen(a->kname[i]), a->kval[i])) {
                return NULL;
            }
        }
        return o;
    }
    if (strcmp(name, "raise_exception") == 0) {
        struct hs_tmpl_value *msg = a->n > 0 ? hs__to_str(r, a->pos[0]) : NULL;
        return hs__fail(r, n, HS_E_INVAL, "raise_exception: %s", msg ? msg->u.s.p : "");
    }
    if (strcmp(name, "strftime_now") == 0) {
        struct hs_tmpl_value *fmt = hs__arg(a, 0, NULL);
        if (!fmt || fmt->kind != HS_TMPL_STRING || fmt->u.s.len > 256) {
            return hs__fail(r, n, HS_E_INVAL, "strftime_now() needs a format string");
        }
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char buf[1024];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        size_t len = strftime(buf, sizeof(buf), fmt->u.s.p, &tm); /* the template's format */
#pragma GCC diagnostic pop
        return hs__p_str(r, buf, len);
    }
    return hs__fail(r, n, HS_E_INVAL, "'%s' is undefined or not callable", name);
}
