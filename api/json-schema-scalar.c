/* JSON Schema -> GBNF, the leaves (api/json-schema-impl.h): text building, the primitive rules,
 * strings (lengths, formats), integers (bounds as digit ranges), enum and const. */
#include "api/json-schema-impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- strings ---- */

/* GBNF literal of bytes s[0..n) (UTF-8 from jansson): quotes, backslashes and controls escaped. */
void hs__js_literal(struct hs__buf *b, const char *s, size_t n)
{
    hs__buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            hs__buf_add(b, e, 2);
        } else if (ch < 0x20 || ch == 0x7F) {
            hs__buf_printf(b, "\\x%02X", ch);
        } else {
            hs__buf_add(b, (const char *)&ch, 1);
        }
    }
    hs__buf_add(b, "\"", 1);
}

/* ---- primitive rules ---- */

struct prim {
    const char *name;
    const char *body;
    const char *deps[3];
};

static const struct prim prims[] = {
    {"space", "( \" \" | \"\\n\" [ \\t]{0,20} )?", {NULL}},
    {"boolean", "( \"true\" | \"false\" ) space", {"space"}},
    {"null", "\"null\" space", {"space"}},
    {"integral-part", "[0] | [1-9] [0-9]{0,15}", {NULL}},
    {"decimal-part", "[0-9]{1,16}", {NULL}},
    {"number",
     "\"-\"? integral-part ( \".\" decimal-part )? ( [eE] [-+]? [0-9]{1,2} )? space",
     {"integral-part", "decimal-part", "space"}},
    {"integer", "\"-\"? integral-part space", {"integral-part", "space"}},
    /* no \uD800-\uDFFF escapes: a validator counts an escaped pair as one character */
    {"char",
     "[^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( [0-9a-cA-Ce-fE-F] "
     "[0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) )",
     {NULL}},
    {"string", "\"\\\"\" char* \"\\\"\" space", {"char", "space"}},
    {"value", "object | array | string | number | boolean | null", {"object", "array", "string"}},
    {"object",
     "\"{\" space ( string \":\" space value ( \",\" space string \":\" space value )* )? "
     "\"}\" space",
     {"string", "value", "space"}},
    {"array", "\"[\" space ( value ( \",\" space value )* )? \"]\" space", {"value", "space"}},
    {"akey-char", "[^\"\\\\\\x7F\\x00-\\x1F]", {NULL}},
    {"year",
     "[1-9] [0-9]{3} | \"0\" ( [1-9] [0-9]{2} | \"0\" ( [1-9] [0-9] | \"0\" [1-9] ) )",
     {NULL}},
    {"date",
     "year \"-\" ( ( \"0\" [13578] | \"1\" [02] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] ) "
     "| ( \"0\" [469] | \"11\" ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"30\" ) | \"02-\" ( \"0\" "
     "[1-9] | \"1\" [0-9] | \"2\" [0-8] ) )",
     {"year"}},
    {"time",
     "( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )? ( "
     "\"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )",
     {NULL}},
    {"date-time", "date \"T\" time", {"date", "time"}},
    {"date-string", "\"\\\"\" date \"\\\"\" space", {"date", "space"}},
    {"time-string", "\"\\\"\" time \"\\\"\" space", {"time", "space"}},
    {"date-time-string", "\"\\\"\" date-time \"\\\"\" space", {"date-time", "space"}},
    {"uuid-string",
     "\"\\\"\" [0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} "
     "\"-\" [0-9a-fA-F]{12} \"\\\"\" space",
     {"space"}},
    {"email-atom", "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+", {NULL}},
    {"email-label", "[a-zA-Z0-9] ( [a-zA-Z0-9-]{0,61} [a-zA-Z0-9] )?", {NULL}},
    {"email-string",
     "\"\\\"\" email-atom ( \".\" email-atom )* \"@\" email-label ( \".\" email-label )+ "
     "\"\\\"\" space",
     {"email-atom", "email-label", "space"}},
};

const char *hs__js_prim(struct conv *c, const char *name)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(prims); i++) {
        if (strcmp(prims[i].name, name) != 0) {
            continue;
        }
        if (hs__js_find_rule(c, name) < 0) {
            char *body = strdup(prims[i].body);
            if (!body) {
                hs__js_nomem(c);
                return NULL;
            }
            if (hs__js_add_rule(c, name, body) < 0) {
                return NULL;
            }
            for (int k = 0; k < 3 && prims[i].deps[k]; k++) {
                if (!hs__js_prim(c, prims[i].deps[k])) {
                    return NULL;
                }
            }
            if (!strcmp(name, "value") && (!hs__js_prim(c, "number") ||
                                           !hs__js_prim(c, "boolean") || !hs__js_prim(c, "null"))) {
                return NULL;
            }
        }
        return name;
    }
    HS_ASSERT(false);
    return NULL;
}

/* A count keyword (minItems, maxLength, ...): -1 when absent. */
bool hs__js_get_count(struct conv *c, const json_t *s, const char *key, int64_t *out)
{
    *out = -1;
    const json_t *v = json_object_get(s, key);
    if (!v) {
        return true;
    }
    double d = json_number_value(v);
    if (!json_is_number(v) || d < 0 || d != floor(d)) {
        return hs__js_fail(c, HS_E_INVAL, "'%s' must be a non-negative integer", key);
    }
    if (d > HS__JS_MAX_COUNT) {
        return hs__js_fail(c, HS_E_RANGE, "'%s' of %.0f is above %d, the largest the grammar takes",
                           key, d, HS__JS_MAX_COUNT);
    }
    *out = (int64_t)d;
    return true;
}

/* x{min,max} written for the grammar (max < 0: unbounded). */
void hs__js_repeat(struct hs__buf *b, int64_t min, int64_t max)
{
    if (min == 0 && max < 0) {
        hs__buf_puts(b, "*");
    } else if (min == 1 && max < 0) {
        hs__buf_puts(b, "+");
    } else if (min == 0 && max == 1) {
        hs__buf_puts(b, "?");
    } else if (max < 0) {
        hs__buf_printf(b, "{%lld,}", (long long)min);
    } else if (min == max) {
        hs__buf_printf(b, "{%lld}", (long long)min);
    } else {
        hs__buf_printf(b, "{%lld,%lld}", (long long)min, (long long)max);
    }
}

/* ---- scalars ---- */

const char *hs__js_visit_string(struct conv *c, const json_t *s, const char *hint)
{
    int64_t min, max;
    if (!hs__js_get_count(c, s, "minLength", &min) || !hs__js_get_count(c, s, "maxLength", &max)) {
        return NULL;
    }
    const json_t *fmt = json_object_get(s, "format");
    if (fmt) {
        if (!json_is_string(fmt)) {
            hs__js_fail(c, HS_E_INVAL, "'format' must be a string");
            return NULL;
        }
        if (min >= 0 || max >= 0) {
            hs__js_fail(c, HS_E_NOTSUP, "'minLength'/'maxLength' together with 'format'");
            return NULL;
        }
        const char *f = json_string_value(fmt);
        static const char *const known[][2] = {{"date", "date-string"},
                                               {"time", "time-string"},
                                               {"date-time", "date-time-string"},
                                               {"uuid", "uuid-string"},
                                               {"email", "email-string"}};
        for (size_t i = 0; i < HS_ARRAY_LEN(known); i++) {
            if (!strcmp(f, known[i][0])) {
                return hs__js_prim(c, known[i][1]);
            }
        }
        hs__js_fail(c, HS_E_NOTSUP,
                    "unsupported string format '%.40s' (date, time, date-time, uuid "
                    "and email are)",
                    f);
        return NULL;
    }
    if (min < 0 && max < 0) {
        return hs__js_prim(c, "string");
    }
    if (max >= 0 && min > max) {
        hs__js_fail(c, HS_E_INVAL, "minLength %lld > maxLength %lld", (long long)min,
                    (long long)max);
        return NULL;
    }
    if (!hs__js_prim(c, "char") || !hs__js_prim(c, "space")) {
        return NULL;
    }
    struct hs__buf b = {0};
    hs__buf_puts(&b, "\"\\\"\" char");
    hs__js_repeat(&b, min < 0 ? 0 : min, max);
    hs__buf_puts(&b, " \"\\\"\" space");
    return hs__js_rule_from(c, hint, &b);
}

/* Integers in [a, b] written with the same number of digits (a, b as digit strings). */
static void same_len(struct hs__buf *out, const char *a, const char *b, size_t n)
{
    if (n == 1) {
        if (a[0] == b[0]) {
            hs__buf_printf(out, "[%c]", a[0]);
        } else {
            hs__buf_printf(out, "[%c-%c]", a[0], b[0]);
        }
        return;
    }
    if (a[0] == b[0]) {
        hs__buf_printf(out, "[%c] (", a[0]);
        same_len(out, a + 1, b + 1, n - 1);
        hs__buf_puts(out, ")");
        return;
    }
    char zeros[HS__JS_INT_DIGITS + 1], nines[HS__JS_INT_DIGITS + 1];
    memset(zeros, '0', n - 1);
    memset(nines, '9', n - 1);
    bool a_zero = strncmp(a + 1, zeros, n - 1) == 0;
    bool b_nine = strncmp(b + 1, nines, n - 1) == 0;
    char lo = a[0], hi = b[0];
    bool first = true;
    if (!a_zero) {
        hs__buf_printf(out, "[%c] (", a[0]);
        same_len(out, a + 1, nines, n - 1);
        hs__buf_puts(out, ")");
        lo++;
        first = false;
    }
    if (!b_nine) {
        hi--;
    }
    if (lo <= hi) {
        hs__buf_printf(out, "%s[%c-%c] [0-9]{%zu}", first ? "" : " | ", lo, hi, n - 1);
        first = false;
    }
    if (!b_nine) {
        hs__buf_printf(out, "%s[%c] (", first ? "" : " | ", b[0]);
        same_len(out, zeros, b + 1, n - 1);
        hs__buf_puts(out, ")");
    }
}

/* Non-negative integers in [a, b] (b < 0: up to HS__JS_INT_DIGITS digits). */
static void nonneg_range(struct hs__buf *out, int64_t a, int64_t b)
{
    char as[24], bs[24], nines[HS__JS_INT_DIGITS + 1];
    int la = snprintf(as, sizeof(as), "%lld", (long long)a);
    int lb = b < 0 ? HS__JS_INT_DIGITS : snprintf(bs, sizeof(bs), "%lld", (long long)b);
    bool first = true;
    for (int len = la; len <= lb; len++) {
        hs__buf_puts(out, first ? "" : " | ");
        first = false;
        if (b < 0 && len > la) { /* every longer number, in one alternative */
            hs__buf_printf(out, "[1-9] [0-9]{%d,%d}", len - 1, HS__JS_INT_DIGITS - 1);
            break;
        }
        char lo[24], hi[24];
        if (len == la) {
            memcpy(lo, as, (size_t)la + 1);
        } else {
            lo[0] = '1';
            memset(lo + 1, '0', (size_t)len - 1);
            lo[len] = '\0';
        }
        if (b >= 0 && len == lb) {
            memcpy(hi, bs, (size_t)lb + 1);
        } else {
            memset(nines, '9', (size_t)len);
            memcpy(hi, nines, (size_t)len);
            hi[len] = '\0';
        }
        hs__buf_puts(out, "(");
        same_len(out, lo, hi, (size_t)len);
        hs__buf_puts(out, ")");
    }
}

/* A bound keyword as an integer bound: lower bounds round up, upper ones down; false when the
 * keyword is absent. Draft 4's boolean exclusive forms are read too. */
static bool int_bound(struct conv *c, const json_t *s, bool lower, int64_t *out)
{
    const char *inc = lower ? "minimum" : "maximum";
    const char *exc = lower ? "exclusiveMinimum" : "exclusiveMaximum";
    const json_t *vi = json_object_get(s, inc), *ve = json_object_get(s, exc);
    const double lim = 1e16 - 1;
    bool have = false;
    double best = 0;
    if (vi && !json_is_number(vi)) {
        return hs__js_fail(c, HS_E_INVAL, "'%s' must be a number", inc);
    }
    if (ve && !json_is_number(ve) && !json_is_boolean(ve)) {
        return hs__js_fail(c, HS_E_INVAL, "'%s' must be a number", exc);
    }
    if (vi) {
        double d = json_number_value(vi);
        bool ex = json_is_true(ve);
        best = lower ? (ex ? floor(d) + 1 : ceil(d)) : (ex ? ceil(d) - 1 : floor(d));
        have = true;
    }
    if (ve && json_is_number(ve)) {
        double d = json_number_value(ve);
        double e = lower ? floor(d) + 1 : ceil(d) - 1;
        best = !have ? e : lower ? fmax(best, e) : fmin(best, e);
        have = true;
    }
    if (have) {
        best = fmax(-lim, fmin(lim, best)); /* numbers have at most 16 digits */
        *out = (int64_t)best;
    }
    return have;
}

const char *hs__js_visit_integer(struct conv *c, const json_t *s, const char *hint)
{
    int64_t lo = 0, hi = 0;
    bool has_lo = int_bound(c, s, true, &lo);
    bool has_hi = int_bound(c, s, false, &hi);
    if (c->st != HS_OK) {
        return NULL;
    }
    if (!has_lo && !has_hi) {
        return hs__js_prim(c, "integer");
    }
    if (has_lo && has_hi && lo > hi) {
        hs__js_fail(c, HS_E_INVAL, "no integer lies between the minimum and the maximum");
        return NULL;
    }
    if (!hs__js_prim(c, "space")) {
        return NULL;
    }
    struct hs__buf b = {0};
    hs__buf_puts(&b, "( ");
    bool neg = !has_lo || lo < 0;
    bool pos = !has_hi || hi >= 0;
    if (neg) { /* "-" and the magnitudes in [max(1, -hi), -lo] */
        int64_t ma = has_hi && hi < 0 ? -hi : 1;
        hs__buf_puts(&b, "\"-\" ( ");
        nonneg_range(&b, ma, has_lo ? -lo : -1);
        hs__buf_puts(&b, " )");
    }
    if (pos) {
        hs__buf_puts(&b, neg ? " | " : "");
        nonneg_range(&b, has_lo && lo > 0 ? lo : 0, has_hi ? hi : -1);
    }
    hs__buf_puts(&b, " ) space");
    return hs__js_rule_from(c, hint, &b);
}

/* The compact JSON text of v as a literal. */
bool hs__js_const(struct conv *c, struct hs__buf *b, const json_t *v)
{
    char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!txt) {
        return hs__js_nomem(c);
    }
    hs__js_literal(b, txt, strlen(txt));
    free(txt);
    return true;
}

/* Whether v is an instance of the JSON type named t. */
static bool of_type(const json_t *v, const char *t)
{
    if (!strcmp(t, "string")) {
        return json_is_string(v);
    }
    if (!strcmp(t, "integer")) {
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    }
    if (!strcmp(t, "number")) {
        return json_is_number(v);
    }
    if (!strcmp(t, "boolean")) {
        return json_is_boolean(v);
    }
    if (!strcmp(t, "null")) {
        return json_is_null(v);
    }
    if (!strcmp(t, "object") || !strcmp(t, "json_object")) {
        return json_is_object(v);
    }
    if (!strcmp(t, "array")) {
        return json_is_array(v);
    }
    return false;
}

static bool type_ok(const json_t *type, const json_t *v)
{
    if (!type) {
        return true;
    }
    if (json_is_string(type)) {
        return of_type(v, json_string_value(type));
    }
    size_t i;
    json_t *t;
    json_array_foreach(type, i, t)
    {
        if (json_is_string(t) && of_type(v, json_string_value(t))) {
            return true;
        }
    }
    return false;
}

const char *hs__js_visit_enum(struct conv *c, const json_t *s, const json_t *values,
                              const char *hint, bool is_const)
{
    const json_t *type = json_object_get(s, "type");
    if (!is_const && (!json_is_array(values) || json_array_size(values) == 0)) {
        hs__js_fail(c, HS_E_INVAL, "'enum' must be a non-empty array");
        return NULL;
    }
    if (!hs__js_prim(c, "space")) {
        return NULL;
    }
    struct hs__buf b = {0};
    size_t n = 0;
    hs__buf_puts(&b, "( ");
    for (size_t i = 0; i < (is_const ? 1 : json_array_size(values)); i++) {
        const json_t *v = is_const ? values : json_array_get(values, i);
        if (!type_ok(type, v)) {
            continue; /* an instance must match the type as well */
        }
        hs__buf_puts(&b, n++ ? " | " : "");
        if (!hs__js_const(c, &b, v)) {
            free(b.p);
            return NULL;
        }
    }
    hs__buf_puts(&b, " ) space");
    if (n == 0) {
        free(b.p);
        hs__js_fail(c, HS_E_INVAL, "no value of '%s' has the schema's type",
                    is_const ? "const" : "enum");
        return NULL;
    }
    return hs__js_rule_from(c, hint, &b);
}
