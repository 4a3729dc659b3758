/* JSON Schema -> GBNF (api/json-schema.h). One rule per subschema, named after its path
 * ("root-parameters-x", "ref-Action"); fixed primitive rules (string, number, space, ...) added
 * when used. Rules never nest parentheses deeper than a few levels, so any schema within the
 * limits gives a grammar the GBNF parser takes. */
#include "api/json-schema-impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* ---- rules ---- */

bool hs__js_fail(struct conv *c, hs_status st, const char *fmt, ...)
{
    if (c->st != HS_OK) {
        return false;
    }
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->st = st;
    hs_error_set(c->err, st, "%s at %s", msg, c->path[0] ? c->path : "/ (the root)");
    return false;
}

bool hs__js_nomem(struct conv *c)
{
    if (c->st == HS_OK) {
        c->st = HS_E_NOMEM;
        hs_error_set(c->err, HS_E_NOMEM, "out of memory converting the JSON Schema");
    }
    return false;
}

static size_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 0x100000001b3u;
    }
    return (size_t)(h ^ (h >> 31));
}

ssize_t hs__js_find_rule(const struct conv *c, const char *name)
{
    if (c->cap_names == 0) {
        return -1;
    }
    for (size_t h = name_hash(name) & (c->cap_names - 1);; h = (h + 1) & (c->cap_names - 1)) {
        int32_t i = c->names[h];
        if (i < 0 || strcmp(c->rules[i].name, name) == 0) {
            return i;
        }
    }
}

/* Indexes rule i by name, growing the table at half load. */
static bool index_name(struct conv *c, size_t i)
{
    if ((c->n_rules + 1) * 2 > c->cap_names) {
        size_t cap = c->cap_names ? c->cap_names * 2 : 256;
        int32_t *t = malloc(cap * sizeof(*t));
        if (!t) {
            return false;
        }
        memset(t, 0xFF, cap * sizeof(*t));
        for (size_t k = 0; k < c->cap_names; k++) {
            int32_t r = c->names[k];
            if (r >= 0) {
                size_t h = name_hash(c->rules[r].name) & (cap - 1);
                while (t[h] >= 0) {
                    h = (h + 1) & (cap - 1);
                }
                t[h] = r;
            }
        }
        free(c->names);
        c->names = t;
        c->cap_names = cap;
    }
    size_t h = name_hash(c->rules[i].name) & (c->cap_names - 1);
    while (c->names[h] >= 0) {
        h = (h + 1) & (c->cap_names - 1);
    }
    c->names[h] = (int32_t)i;
    return true;
}

/* Adds `name ::= body` (takes body; NULL reserves the name), or finds a rule of that name and
 * body; a different body under the name gets a numbered one. Returns the index or -1. */
ssize_t hs__js_add_rule(struct conv *c, const char *hint, char *body)
{
    if (c->st != HS_OK) {
        free(body);
        return -1;
    }
    char base[HS__JS_NAME_MAX_BYTES + 16];
    size_t n = 0;
    for (const char *s = hint; *s && n < HS__JS_NAME_MAX_BYTES; s++) {
        char ch = *s;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        base[n++] = ok ? ch : '-';
    }
    base[n] = '\0';
    char name[HS__JS_NAME_MAX_BYTES + 32];
    snprintf(name, sizeof(name), "%s", base);
    for (unsigned k = 1;; k++) {
        ssize_t i = hs__js_find_rule(c, name);
        if (i < 0) {
            break;
        }
        if (body && c->rules[i].body && strcmp(c->rules[i].body, body) == 0) {
            free(body);
            return i;
        }
        snprintf(name, sizeof(name), "%s-%u", base, k);
    }
    size_t nb = strlen(name) + (body ? strlen(body) : 0) + 8;
    c->bytes += nb;
    if (c->bytes > HS__JS_MAX_BYTES) {
        free(body);
        hs__js_fail(c, HS_E_RANGE, "the schema's grammar is over %zu bytes", HS__JS_MAX_BYTES);
        return -1;
    }
    if (!hs__grow((void **)&c->rules, &c->cap_rules, c->n_rules + 1, sizeof(*c->rules))) {
        free(body);
        hs__js_nomem(c);
        return -1;
    }
    char *nm = strdup(name);
    if (!nm) {
        free(body);
        hs__js_nomem(c);
        return -1;
    }
    c->rules[c->n_rules] = (struct rule){nm, body};
    if (!index_name(c, c->n_rules)) {
        free(nm);
        free(body);
        hs__js_nomem(c);
        return -1;
    }
    return (ssize_t)c->n_rules++;
}

static void set_body(struct conv *c, size_t i, char *body)
{
    c->bytes += strlen(body);
    if (c->bytes > HS__JS_MAX_BYTES) {
        hs__js_fail(c, HS_E_RANGE, "the schema's grammar is over %zu bytes", HS__JS_MAX_BYTES);
    }
    c->rules[i].body = body;
}

/* Finishes a body buffer into a rule; the rule's name or NULL. */
const char *hs__js_rule_from(struct conv *c, const char *hint, struct hs__buf *b)
{
    if (b->oom) {
        free(b->p);
        hs__js_nomem(c);
        return NULL;
    }
    ssize_t i = hs__js_add_rule(c, hint, b->p ? b->p : strdup(""));
    return i < 0 ? NULL : c->rules[i].name;
}

/* ---- keywords ---- */

static const char *const annotations[] = {
    "title",      "description", "default",   "examples",      "$schema", "$id",         "$comment",
    "deprecated", "readOnly",    "writeOnly", "discriminator", "$defs",   "definitions",
};

static const char *const keywords[] = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "minLength",
    "maxLength",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
};

static bool in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(k, list[i])) {
            return true;
        }
    }
    return false;
}

static bool is_annotation(const char *k)
{
    return in_list(k, annotations, HS_ARRAY_LEN(annotations)) || !strncmp(k, "x-", 2);
}

/* Every key of s is a keyword we handle or an annotation. */
static bool check_keywords(struct conv *c, const json_t *s)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v)
    {
        if (is_annotation(k)) {
            continue;
        }
        if (!in_list(k, keywords, HS_ARRAY_LEN(keywords))) {
            return hs__js_fail(c, HS_E_NOTSUP, "unsupported JSON Schema keyword '%.64s'", k);
        }
        if (!strcmp(k, "uniqueItems") && json_is_true(v)) {
            return hs__js_fail(c, HS_E_NOTSUP,
                               "unsupported JSON Schema keyword 'uniqueItems' (true)");
        }
    }
    return true;
}

/* Path helpers: push a segment, and restore the previous length. */
static size_t path_push(struct conv *c, const char *seg)
{
    size_t at = strlen(c->path);
    size_t room = sizeof(c->path) - at;
    if (room > 1) {
        snprintf(c->path + at, room, "/%s", seg);
    }
    return at;
}

static void path_pop(struct conv *c, size_t at)
{
    c->path[at] = '\0';
}

static const char *visit(struct conv *c, const json_t *s, const char *hint);

/* ---- $ref ---- */

static const json_t *resolve(struct conv *c, const char *ref)
{
    if (ref[0] != '#') {
        hs__js_fail(c, HS_E_NOTSUP, "$ref '%.80s' (only local references '#/...' are supported)",
                    ref);
        return NULL;
    }
    const json_t *t = c->root;
    const char *p = ref + 1;
    while (*p) {
        if (*p != '/') {
            hs__js_fail(c, HS_E_NOTSUP, "$ref '%.80s' (only JSON pointers '#/...' are supported)",
                        ref);
            return NULL;
        }
        p++;
        char seg[256];
        size_t n = 0;
        while (*p && *p != '/' && n + 1 < sizeof(seg)) {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
                seg[n++] = p[1] == '0' ? '~' : '/';
                p += 2;
            } else {
                seg[n++] = *p++;
            }
        }
        seg[n] = '\0';
        if (json_is_object(t)) {
            t = json_object_get(t, seg);
        } else if (json_is_array(t) && n > 0 && strspn(seg, "0123456789") == n && n < 10) {
            t = json_array_get(t, (size_t)strtoul(seg, NULL, 10));
        } else {
            t = NULL;
        }
        if (!t) {
            hs__js_fail(c, HS_E_INVAL, "$ref '%.80s' resolves to nothing", ref);
            return NULL;
        }
    }
    return t;
}

static const char *visit_ref(struct conv *c, const char *ref)
{
    for (size_t i = 0; i < c->n_refs; i++) {
        if (strcmp(c->refs[i].ref, ref) != 0) {
            continue;
        }
        if (c->refs[i].open && c->refs[i].value_depth == c->value_depth) {
            hs__js_fail(c, HS_E_INVAL,
                        "$ref '%.80s' refers back to itself without a value in between", ref);
            return NULL;
        }
        return c->rules[c->refs[i].rule].name;
    }
    const json_t *target = resolve(c, ref);
    if (!target) {
        return NULL;
    }
    const char *last = strrchr(ref, '/');
    char hint[HS__JS_NAME_MAX_BYTES + 8];
    snprintf(hint, sizeof(hint), "ref-%s", last ? last + 1 : "root");
    ssize_t r = hs__js_add_rule(c, hint, NULL);
    char *dup = strdup(ref);
    if (r < 0 || !dup ||
        !hs__grow((void **)&c->refs, &c->cap_refs, c->n_refs + 1, sizeof(*c->refs))) {
        free(dup);
        if (r >= 0) {
            hs__js_nomem(c);
        }
        return NULL;
    }
    size_t me = c->n_refs++;
    c->refs[me] = (struct ref){dup, (size_t)r, true, c->value_depth};
    char saved[sizeof(c->path)];
    memcpy(saved, c->path, sizeof(saved));
    snprintf(c->path, sizeof(c->path), "%s", ref + 1);
    const char *body = visit(c, target, c->rules[r].name);
    memcpy(c->path, saved, sizeof(saved));
    c->refs[me].open = false;
    if (!body) {
        return NULL;
    }
    char *b = strdup(body);
    if (!b) {
        hs__js_nomem(c);
        return NULL;
    }
    set_body(c, (size_t)r, b);
    return c->st == HS_OK ? c->rules[r].name : NULL;
}

/* ---- objects ---- */

/* Whether akey-char alone spells s: no quote, backslash, DEL or control byte. */
static bool key_chars_only(const unsigned char *s)
{
    for (; *s; s++) {
        if (*s < 0x20 || *s == '"' || *s == '\\' || *s == 0x7F) {
            return false;
        }
    }
    return true;
}

/* A rule for property names that are none of names[0..n) (written without escapes). */
static const char *not_names(struct conv *c, const char *hint, const char *const *names, size_t n)
{
    /* a trie of the names' code points, one rule per node with children */
    struct node {
        uint32_t cp;
        int32_t first_child, next;
        bool end;
    };
    struct node *t = NULL;
    size_t nt = 0, cap = 0;
    if (!hs__grow((void **)&t, &cap, 1, sizeof(*t))) {
        hs__js_nomem(c);
        return NULL;
    }
    t[nt++] = (struct node){0, -1, -1, false};
    for (size_t i = 0; i < n; i++) {
        int32_t at = 0;
        const unsigned char *p = (const unsigned char *)names[i];
        if (!key_chars_only(p)) {
            continue; /* akey-char cannot spell it, so no exclusion is needed (nor writable) */
        }
        while (*p) {
            uint32_t cp = *p++;
            int extra = cp >= 0xF0 ? 3 : cp >= 0xE0 ? 2 : cp >= 0xC0 ? 1 : 0;
            cp &= extra == 3 ? 0x07 : extra == 2 ? 0x0F : extra == 1 ? 0x1F : 0x7F;
            for (int k = 0; k < extra && *p; k++) {
                cp = cp << 6 | (*p++ & 0x3F);
            }
            int32_t ch = t[at].first_child;
            while (ch >= 0 && t[ch].cp != cp) {
                ch = t[ch].next;
            }
            if (ch < 0) {
                if (!hs__grow((void **)&t, &cap, nt + 1, sizeof(*t))) {
                    free(t);
                    hs__js_nomem(c);
                    return NULL;
                }
                t[nt] = (struct node){cp, -1, t[at].first_child, false};
                t[at].first_child = (int32_t)nt;
                ch = (int32_t)nt++;
            }
            at = ch;
        }
        t[at].end = true;
    }
    if (!hs__js_prim(c, "akey-char")) {
        free(t);
        return NULL;
    }
    /* Node rules are named hint-N; children are referred to before they exist, by name. */
    const char *result = NULL;
    char base[HS__JS_NAME_MAX_BYTES + 16];
    ssize_t r0 = hs__js_add_rule(c, hint, NULL);
    if (r0 < 0) {
        free(t);
        return NULL;
    }
    snprintf(base, sizeof(base), "%s", c->rules[r0].name);
    for (size_t i = 0; i < nt && c->st == HS_OK; i++) {
        if (i > 0 && t[i].first_child < 0) {
            continue;
        }
        struct hs__buf b = {0};
        hs__buf_puts(&b, "( ");
        struct hs__buf excl = {0};
        for (int32_t ch = t[i].first_child; ch >= 0; ch = t[ch].next) {
            hs__buf_printf(&b, "[\\U%08X] ", (unsigned)t[ch].cp);
            if (t[ch].first_child >= 0) {
                hs__buf_printf(&b, "%s-%d", base, ch);
            } else {
                hs__buf_puts(&b, t[ch].end ? "akey-char+" : "akey-char*");
            }
            hs__buf_puts(&b, " | ");
            hs__buf_printf(&excl, "\\U%08X", (unsigned)t[ch].cp);
        }
        hs__buf_printf(&b, "[^\"\\\\\\x7F\\x00-\\x1F%s] akey-char* )%s", excl.p ? excl.p : "",
                       t[i].end ? "" : "?");
        free(excl.p);
        if (excl.oom || b.oom) {
            free(b.p);
            hs__js_nomem(c);
            break;
        }
        if (i == 0) {
            set_body(c, (size_t)r0, b.p);
            continue;
        }
        char nm[sizeof(base) + 24];
        snprintf(nm, sizeof(nm), "%s-%zu", base, i);
        if (hs__js_find_rule(c, nm) >= 0) { /* the name is taken: fail rather than misnumber */
            free(b.p);
            hs__js_fail(c, HS_E_INTERNAL, "rule name clash building '%s'", nm);
            break;
        }
        hs__js_add_rule(c, nm, b.p);
    }
    free(t);
    if (c->st == HS_OK) {
        result = c->rules[r0].name;
    }
    return result;
}

static const char *visit_object(struct conv *c, const json_t *s, const char *hint)
{
    const json_t *props = json_object_get(s, "properties");
    const json_t *req = json_object_get(s, "required");
    const json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) {
        hs__js_fail(c, HS_E_INVAL, "'properties' must be an object");
        return NULL;
    }
    if (req && !json_is_array(req)) {
        hs__js_fail(c, HS_E_INVAL, "'required' must be an array");
        return NULL;
    }
    if (addl && !json_is_object(addl) && !json_is_boolean(addl)) {
        hs__js_fail(c, HS_E_INVAL, "'additionalProperties' must be a schema or a boolean");
        return NULL;
    }
    if (!props && !req && (!addl || json_is_true(addl))) {
        return hs__js_prim(c, "object"); /* any object */
    }
    size_t np = props ? json_object_size(props) : 0;
    size_t nr = req ? json_array_size(req) : 0;
    size_t cap = np + nr + 1;
    const char **kv = calloc(cap, sizeof(*kv));       /* kv rule per property */
    const char **names = calloc(cap, sizeof(*names)); /* property names */
    bool *required = calloc(cap, sizeof(*required));
    const char *result = NULL;
    size_t n = 0;
    if (!kv || !names || !required || !hs__js_prim(c, "space")) {
        if (c->st == HS_OK) {
            hs__js_nomem(c);
        }
        goto done;
    }
    /* declared properties in order, then required names that are not declared (any value) */
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)props, k, v)
    {
        names[n++] = k;
    }
    for (size_t i = 0; i < nr; i++) {
        const json_t *r = json_array_get(req, i);
        if (!json_is_string(r)) {
            hs__js_fail(c, HS_E_INVAL, "'required' must hold strings");
            goto done;
        }
        size_t j = 0;
        while (j < n && strcmp(names[j], json_string_value(r)) != 0) {
            j++;
        }
        if (j == n) {
            names[n++] = json_string_value(r);
        }
        required[j] = true;
    }
    c->value_depth++;
    for (size_t i = 0; i < n && c->st == HS_OK; i++) {
        const json_t *ps = props ? json_object_get(props, names[i]) : NULL;
        char h[HS__JS_NAME_MAX_BYTES * 2];
        snprintf(h, sizeof(h), "%s-%s", hint, names[i]);
        size_t at = path_push(c, "properties");
        path_push(c, names[i]);
        const char *val = ps ? visit(c, ps, h) : hs__js_prim(c, "value");
        path_pop(c, at);
        if (!val) {
            break;
        }
        struct hs__buf b = {0};
        json_t *key = json_string(names[i]);
        if (!key) {
            hs__js_nomem(c);
            break;
        }
        hs__js_const(c, &b, key);
        json_decref(key);
        hs__buf_printf(&b, " space \":\" space %s", val);
        char hk[HS__JS_NAME_MAX_BYTES * 2 + 4];
        snprintf(hk, sizeof(hk), "%s-kv", h);
        kv[i] = hs__js_rule_from(c, hk, &b);
    }
    const char *extra = NULL;
    if (c->st == HS_OK && addl && !json_is_false(addl)) {
        char h[HS__JS_NAME_MAX_BYTES * 2];
        snprintf(h, sizeof(h), "%s-additional", hint);
        size_t at = path_push(c, "additionalProperties");
        const char *val = json_is_object(addl) ? visit(c, addl, h) : hs__js_prim(c, "value");
        path_pop(c, at);
        snprintf(h, sizeof(h), "%s-additional-k", hint);
        const char *key = val ? not_names(c, h, names, n) : NULL;
        if (key) {
            struct hs__buf b = {0};
            hs__buf_printf(&b, "\"\\\"\" %s \"\\\"\" space \":\" space %s", key, val);
            snprintf(h, sizeof(h), "%s-additional-kv", hint);
            extra = hs__js_rule_from(c, h, &b);
        }
    }
    c->value_depth--;
    if (c->st != HS_OK) {
        goto done;
    }
    /* "{" required in order, then the optional ones in order, each at most once */
    struct hs__buf b = {0};
    hs__buf_puts(&b, "\"{\" space");
    size_t n_req = 0;
    for (size_t i = 0; i < n; i++) {
        if (required[i]) {
            hs__buf_printf(&b, "%s%s", n_req++ ? " \",\" space " : " ", kv[i]);
        }
    }
    const char **opt = calloc(n + 1, sizeof(*opt));
    size_t n_opt = 0;
    if (!opt) {
        free(b.p);
        hs__js_nomem(c);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (!required[i]) {
            opt[n_opt++] = kv[i];
        }
    }
    if (extra) {
        opt[n_opt++] = extra; /* last, and may repeat */
    }
    if (n_opt > 0) {
        /* rest[j]: any in-order subset of opt[j..] each led by a comma, as a rule */
        const char **rest = calloc(n_opt + 1, sizeof(*rest));
        if (!rest) {
            free(opt);
            free(b.p);
            hs__js_nomem(c);
            goto done;
        }
        for (size_t j = n_opt; j-- > 1 && c->st == HS_OK;) {
            struct hs__buf r = {0};
            bool rep = extra && j == n_opt - 1;
            hs__buf_printf(&r, "( \",\" space %s )%s%s%s", opt[j], rep ? "*" : "?",
                           rest[j + 1] ? " " : "", rest[j + 1] ? rest[j + 1] : "");
            char h[HS__JS_NAME_MAX_BYTES * 2];
            snprintf(h, sizeof(h), "%s-rest", hint);
            rest[j] = hs__js_rule_from(c, h, &r);
        }
        hs__buf_puts(&b, n_req ? " ( \",\" space ( " : " ( ");
        for (size_t i = 0; i < n_opt; i++) {
            bool rep = extra && i == n_opt - 1;
            hs__buf_printf(&b, "%s%s%s%s%s%s", i ? " | " : "", opt[i], rep ? " ( \",\" space " : "",
                           rep ? opt[i] : "", rep ? " )*" : "", rest[i + 1] ? " " : "");
            hs__buf_puts(&b, rest[i + 1] ? rest[i + 1] : "");
        }
        hs__buf_puts(&b, n_req ? " ) )?" : " )?");
        free(rest);
    }
    free(opt);
    hs__buf_puts(&b, " \"}\" space");
    if (c->st == HS_OK) {
        result = hs__js_rule_from(c, hint, &b);
    } else {
        free(b.p);
    }
done:
    free(kv);
    free(names);
    free(required);
    return result;
}

/* ---- arrays ---- */

static const char *visit_array(struct conv *c, const json_t *s, const char *hint)
{
    const json_t *items = json_object_get(s, "items");
    const json_t *prefix = json_object_get(s, "prefixItems");
    const json_t *more = NULL; /* the schema of items past the prefix; NULL: none allowed */
    if (json_is_array(items)) {
        if (prefix) {
            hs__js_fail(c, HS_E_INVAL, "'items' is an array beside 'prefixItems'");
            return NULL;
        }
        prefix = items; /* older drafts' tuple form */
        more = json_object_get(s, "additionalItems");
        more = more ? more : json_true();
    } else {
        more = items ? items : json_true();
    }
    if (prefix && !json_is_array(prefix)) {
        hs__js_fail(c, HS_E_INVAL, "'prefixItems' must be an array");
        return NULL;
    }
    if (!json_is_object(more) && !json_is_boolean(more)) {
        hs__js_fail(c, HS_E_INVAL, "'items' must be a schema or a boolean");
        return NULL;
    }
    int64_t min, max;
    if (!hs__js_get_count(c, s, "minItems", &min) || !hs__js_get_count(c, s, "maxItems", &max)) {
        return NULL;
    }
    min = min < 0 ? 0 : min;
    size_t np = prefix ? json_array_size(prefix) : 0;
    if (json_is_false(more) && (max < 0 || max > (int64_t)np)) {
        max = (int64_t)np;
    }
    if (max >= 0 && min > max) {
        hs__js_fail(c, HS_E_INVAL, "minItems %lld cannot be met (at most %lld items)",
                    (long long)min, (long long)max);
        return NULL;
    }
    if (!hs__js_prim(c, "space")) {
        return NULL;
    }
    const char **el = calloc(np + 1, sizeof(*el));
    if (!el) {
        hs__js_nomem(c);
        return NULL;
    }
    const char *rest = NULL;
    c->value_depth++;
    for (size_t i = 0; i < np && c->st == HS_OK && (max < 0 || (int64_t)i < max); i++) {
        char h[HS__JS_NAME_MAX_BYTES * 2], seg[24];
        snprintf(h, sizeof(h), "%s-%zu", hint, i);
        snprintf(seg, sizeof(seg), "%zu", i);
        size_t at = path_push(c, "prefixItems");
        path_push(c, seg);
        el[i] = visit(c, json_array_get(prefix, i), h);
        path_pop(c, at);
    }
    if (c->st == HS_OK && !json_is_false(more) && (max < 0 || max > (int64_t)np)) {
        char h[HS__JS_NAME_MAX_BYTES * 2];
        snprintf(h, sizeof(h), "%s-item", hint);
        size_t at = path_push(c, "items");
        rest = json_is_object(more) ? visit(c, more, h) : hs__js_prim(c, "value");
        path_pop(c, at);
    }
    c->value_depth--;
    const char *result = NULL;
    struct hs__buf b = {0};
    if (c->st != HS_OK) {
        goto done;
    }
    size_t last = max >= 0 && (size_t)max < np ? (size_t)max : np; /* prefix items used */
    /* tail[i]: what may follow item i (1-based), as a rule; items past the prefix repeat */
    const char **tail = calloc(last + 2, sizeof(*tail));
    if (!tail) {
        hs__js_nomem(c);
        goto done;
    }
    if (rest && np > 0) {
        struct hs__buf r = {0};
        hs__buf_printf(&r, "( \",\" space %s )", rest);
        int64_t lo = min > (int64_t)np ? min - (int64_t)np : 0;
        hs__js_repeat(&r, lo, max < 0 ? -1 : max - (int64_t)np);
        char h[HS__JS_NAME_MAX_BYTES * 2];
        snprintf(h, sizeof(h), "%s-more", hint);
        tail[np] = hs__js_rule_from(c, h, &r);
    }
    for (size_t i = last; i-- > 1 && c->st == HS_OK;) { /* tail[i] after item i */
        struct hs__buf r = {0};
        bool optional = (int64_t)(i + 1) > min;
        hs__buf_printf(&r, "%s\",\" space %s%s%s%s", optional ? "( " : "", el[i],
                       tail[i + 1] ? " " : "", tail[i + 1] ? tail[i + 1] : "",
                       optional ? " )?" : "");
        char h[HS__JS_NAME_MAX_BYTES * 2];
        snprintf(h, sizeof(h), "%s-tail", hint);
        tail[i] = hs__js_rule_from(c, h, &r);
    }
    hs__buf_puts(&b, "\"[\" space ");
    if (c->st != HS_OK) {
        free(tail);
        goto done;
    }
    if (np > 0 && last > 0) {
        hs__buf_printf(&b, "%s%s%s%s%s", min == 0 ? "( " : "", el[0], tail[1] ? " " : "",
                       tail[1] ? tail[1] : "", min == 0 ? " )?" : "");
    } else if (rest && max != 0) { /* no prefix: item ( "," item ){min-1, max-1} */
        hs__buf_printf(&b, "%s%s ( \",\" space %s )", min == 0 ? "( " : "", rest, rest);
        hs__js_repeat(&b, min > 0 ? min - 1 : 0, max < 0 ? -1 : max - 1);
        hs__buf_puts(&b, min == 0 ? " )?" : "");
    }
    free(tail);
    hs__buf_puts(&b, " \"]\" space");
    result = hs__js_rule_from(c, hint, &b);
    b.p = NULL;
done:
    free(b.p);
    free(el);
    return result;
}

/* ---- combinators and dispatch ---- */

static const char *visit_union(struct conv *c, const json_t *alts, const char *kw, const char *hint)
{
    if (!json_is_array(alts) || json_array_size(alts) == 0) {
        hs__js_fail(c, HS_E_INVAL, "'%s' must be a non-empty array", kw);
        return NULL;
    }
    struct hs__buf b = {0};
    for (size_t i = 0; i < json_array_size(alts) && c->st == HS_OK; i++) {
        char h[HS__JS_NAME_MAX_BYTES * 2], seg[24];
        snprintf(h, sizeof(h), "%s-%zu", hint, i);
        snprintf(seg, sizeof(seg), "%zu", i);
        size_t at = path_push(c, kw);
        path_push(c, seg);
        const char *r = visit(c, json_array_get(alts, i), h);
        path_pop(c, at);
        if (r) {
            hs__buf_printf(&b, "%s%s", i ? " | " : "", r);
        }
    }
    if (c->st != HS_OK) {
        free(b.p);
        return NULL;
    }
    return hs__js_rule_from(c, hint, &b);
}

/* A copy of s with "type" set to t (for a list of types). */
static const char *visit_typed(struct conv *c, const json_t *s, const char *t, const char *hint)
{
    if (!strcmp(t, "string")) {
        return hs__js_visit_string(c, s, hint);
    }
    if (!strcmp(t, "integer")) {
        return hs__js_visit_integer(c, s, hint);
    }
    if (!strcmp(t, "number")) {
        if (json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
            json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum")) {
            hs__js_fail(c, HS_E_NOTSUP,
                        "'minimum'/'maximum' on numbers (they are supported on "
                        "integers)");
            return NULL;
        }
        return hs__js_prim(c, "number");
    }
    if (!strcmp(t, "boolean")) {
        return hs__js_prim(c, "boolean");
    }
    if (!strcmp(t, "null")) {
        return hs__js_prim(c, "null");
    }
    if (!strcmp(t, "object")) {
        return visit_object(c, s, hint);
    }
    if (!strcmp(t, "json_object")) {
        return hs__js_prim(c, "object");
    }
    if (!strcmp(t, "array")) {
        return visit_array(c, s, hint);
    }
    hs__js_fail(c, HS_E_NOTSUP, "unsupported type '%.40s'", t);
    return NULL;
}

/* allOf: one schema, or objects whose properties and required lists are merged. */
static const char *visit_all_of(struct conv *c, const json_t *s, const json_t *all,
                                const char *hint)
{
    if (!json_is_array(all) || json_array_size(all) == 0) {
        hs__js_fail(c, HS_E_INVAL, "'allOf' must be a non-empty array");
        return NULL;
    }
    if (json_array_size(all) == 1 && json_object_size(s) == 1) {
        size_t at = path_push(c, "allOf/0");
        const char *r = visit(c, json_array_get(all, 0), hint);
        path_pop(c, at);
        return r;
    }
    json_t *merged = json_object();
    json_t *props = json_object();
    json_t *req = json_array();
    const char *result = NULL;
    if (!merged || !props || !req) {
        hs__js_nomem(c);
        goto done;
    }
    for (size_t i = 0; i <= json_array_size(all); i++) {
        const json_t *part = i < json_array_size(all) ? json_array_get(all, i) : s;
        for (int hops = 0; json_is_object(part) && json_object_get(part, "$ref") && hops < 16;
             hops++) {
            const json_t *r = json_object_get(part, "$ref");
            part = json_is_string(r) ? resolve(c, json_string_value(r)) : NULL;
        }
        if (c->st != HS_OK) {
            goto done;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)part, k, v)
        {
            if (is_annotation(k) || (i == json_array_size(all) && !strcmp(k, "allOf")) ||
                (!strcmp(k, "type") && json_is_string(v) &&
                 !strcmp(json_string_value(v), "object"))) {
                continue;
            }
            if (!strcmp(k, "properties") && json_is_object(v)) {
                json_object_update(props, v);
            } else if (!strcmp(k, "required") && json_is_array(v)) {
                json_array_extend(req, v);
            } else if (!strcmp(k, "additionalProperties") && json_is_false(v)) {
                json_object_set(merged, k, v);
            } else {
                hs__js_fail(c, HS_E_NOTSUP,
                            "'allOf' of anything but objects with 'properties' and "
                            "'required' (found '%.40s')",
                            k);
                goto done;
            }
        }
        if (!json_is_object(part)) {
            hs__js_fail(c, HS_E_NOTSUP, "'allOf' of anything but objects");
            goto done;
        }
    }
    json_object_set(merged, "properties", props);
    json_object_set(merged, "required", req);
    result = visit_object(c, merged, hint);
done:
    json_decref(merged);
    json_decref(props);
    json_decref(req);
    return result;
}

static const char *visit(struct conv *c, const json_t *s, const char *hint)
{
    if (c->st != HS_OK) {
        return NULL;
    }
    if (json_is_true(s)) {
        return hs__js_prim(c, "value");
    }
    if (json_is_false(s)) {
        hs__js_fail(c, HS_E_INVAL, "schema 'false' allows no value");
        return NULL;
    }
    if (!json_is_object(s)) {
        hs__js_fail(c, HS_E_INVAL, "a schema must be an object or a boolean");
        return NULL;
    }
    if (++c->depth > HS__JS_MAX_DEPTH) {
        hs__js_fail(c, HS_E_RANGE, "the schema nests deeper than %d", HS__JS_MAX_DEPTH);
        return NULL;
    }
    const char *r = NULL;
    const json_t *ref = json_object_get(s, "$ref");
    const json_t *any = json_object_get(s, "anyOf");
    const json_t *one = json_object_get(s, "oneOf");
    const json_t *all = json_object_get(s, "allOf");
    const json_t *type = json_object_get(s, "type");
    const char *k;
    json_t *v;
    if (!check_keywords(c, s)) {
        goto out;
    }
    if (ref || any || one) {
        const char *kw = ref ? "$ref" : any ? "anyOf" : "oneOf";
        json_object_foreach((json_t *)s, k, v)
        {
            if (!is_annotation(k) && strcmp(k, kw) != 0) {
                hs__js_fail(c, HS_E_NOTSUP, "'%.40s' beside '%s'", k, kw);
                goto out;
            }
        }
        if (ref) {
            if (!json_is_string(ref)) {
                hs__js_fail(c, HS_E_INVAL, "'$ref' must be a string");
                goto out;
            }
            r = visit_ref(c, json_string_value(ref));
        } else {
            r = visit_union(c, any ? any : one, kw, hint);
        }
    } else if (all) {
        r = visit_all_of(c, s, all, hint);
    } else if (json_object_get(s, "const")) {
        r = hs__js_visit_enum(c, s, json_object_get(s, "const"), hint, true);
    } else if (json_object_get(s, "enum")) {
        r = hs__js_visit_enum(c, s, json_object_get(s, "enum"), hint, false);
    } else if (json_is_array(type)) {
        struct hs__buf b = {0};
        size_t i;
        json_array_foreach(type, i, v)
        {
            char h[HS__JS_NAME_MAX_BYTES * 2];
            snprintf(h, sizeof(h), "%s-%zu", hint, i);
            const char *t = json_is_string(v) ? visit_typed(c, s, json_string_value(v), h) : NULL;
            if (!t) {
                if (c->st == HS_OK) {
                    hs__js_fail(c, HS_E_INVAL, "'type' must hold strings");
                }
                break;
            }
            hs__buf_printf(&b, "%s%s", i ? " | " : "", t);
        }
        if (c->st == HS_OK && json_array_size(type) == 0) {
            hs__js_fail(c, HS_E_INVAL, "'type' is an empty list");
        }
        if (c->st == HS_OK) {
            r = hs__js_rule_from(c, hint, &b);
        } else {
            free(b.p);
        }
    } else if (type) {
        if (!json_is_string(type)) {
            hs__js_fail(c, HS_E_INVAL, "'type' must be a string or a list of strings");
            goto out;
        }
        r = visit_typed(c, s, json_string_value(type), hint);
    } else if (json_object_get(s, "properties") || json_object_get(s, "required") ||
               json_object_get(s, "additionalProperties")) {
        r = visit_object(c, s, hint); /* untyped: as llama.cpp, an object (stricter) */
    } else if (json_object_get(s, "items") || json_object_get(s, "prefixItems") ||
               json_object_get(s, "minItems") || json_object_get(s, "maxItems")) {
        r = visit_array(c, s, hint);
    } else if (json_object_get(s, "minLength") || json_object_get(s, "maxLength") ||
               json_object_get(s, "format")) {
        r = hs__js_visit_string(c, s, hint);
    } else if (json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
               json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum")) {
        r = hs__js_visit_integer(c, s, hint);
    } else {
        r = hs__js_prim(c, "value");
    }
out:
    c->depth--;
    return c->st == HS_OK ? r : NULL;
}

hs_status hs_json_schema_to_gbnf(const json_t *schema, char **out, struct hs_error *err)
{
    *out = NULL;
    struct conv c = {.root = schema, .err = err};
    const char *r = visit(&c, schema, "root");
    if (r && strcmp(r, "root") != 0) { /* a $ref, a primitive: root ::= it */
        char *body = strdup(r);
        if (!body) {
            hs__js_nomem(&c);
        } else {
            hs__js_add_rule(&c, "root", body);
        }
    }
    struct hs__buf b = {0};
    ssize_t root = hs__js_find_rule(&c, "root");
    for (size_t k = 0; k <= c.n_rules && c.st == HS_OK; k++) { /* root first */
        size_t i = k == 0 ? (size_t)root : k - 1;
        if (k > 0 && i == (size_t)root) {
            continue;
        }
        HS_ASSERT(c.rules[i].body != NULL);
        hs__buf_puts(&b, c.rules[i].name);
        hs__buf_puts(&b, " ::= ");
        hs__buf_puts(&b, c.rules[i].body);
        hs__buf_puts(&b, "\n");
    }
    if (c.st == HS_OK && b.oom) {
        hs__js_nomem(&c);
    }
    for (size_t i = 0; i < c.n_rules; i++) {
        free(c.rules[i].name);
        free(c.rules[i].body);
    }
    for (size_t i = 0; i < c.n_refs; i++) {
        free(c.refs[i].ref);
    }
    free(c.rules);
    free(c.names);
    free(c.refs);
    if (c.st != HS_OK) {
        free(b.p);
        return c.st;
    }
    *out = b.p;
    return HS_OK;
}

const char *hs_json_object_gbnf(void)
{
    return "root ::= object\n"
           "object ::= \"{\" space ( string \":\" space value ( \",\" space string \":\" space "
           "value )* )? \"}\" space\n"
           "value ::= object | array | string | number | boolean | null\n"
           "array ::= \"[\" space ( value ( \",\" space value )* )? \"]\" space\n"
           "string ::= \"\\\"\" char* \"\\\"\" space\n"
           "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( "
           "[0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) )\n"
           "number ::= \"-\"? integral-part ( \".\" decimal-part )? ( [eE] [-+]? [0-9]{1,2} "
           ")? space\n"
           "integral-part ::= [0] | [1-9] [0-9]{0,15}\n"
           "decimal-part ::= [0-9]{1,16}\n"
           "boolean ::= ( \"true\" | \"false\" ) space\n"
           "null ::= \"null\" space\n"
           "space ::= ( \" \" | \"\\n\" [ \\t]{0,20} )?\n";
}
