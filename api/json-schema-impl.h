/* Internals of the JSON Schema converter shared by json-schema.c (rules, $ref, objects, arrays,
 * combinators) and json-schema-scalar.c (text building, primitive rules, strings, integers,
 * enum and const). */
#ifndef HS_API_JSON_SCHEMA_IMPL_H
#define HS_API_JSON_SCHEMA_IMPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "api/json-schema.h"
#include "common/buf.h"

#define HS__JS_MAX_DEPTH      64
#define HS__JS_MAX_BYTES      ((size_t)1 << 20)
#define HS__JS_MAX_COUNT      10000 /* the grammar's repetition limit */
#define HS__JS_INT_DIGITS     16    /* integral digits a number may have */
#define HS__JS_NAME_MAX_BYTES 48    /* of the schema-derived part of a rule name */

/* A GBNF literal of UTF-8 bytes s[0..n): quotes, backslashes and controls escaped. */
void hs__js_literal(struct hs__buf *b, const char *s, size_t n);
/* The suffix for x{min,max} (max < 0: unbounded): *, +, ?, {m}, {m,}, {m,n}. */
void hs__js_repeat(struct hs__buf *b, int64_t min, int64_t max);

struct rule {
    char *name;
    char *body; /* NULL while a $ref's body is being built */
};

struct ref {
    char *ref;
    size_t rule;
    bool open;
    int value_depth; /* where it was entered: a cycle back at the same depth consumes nothing */
};

struct conv {
    const json_t *root;
    struct hs_error *err;
    hs_status st;
    int depth;
    int value_depth;
    size_t bytes;
    struct rule *rules;
    size_t n_rules, cap_rules;
    int32_t *names; /* rule index by name hash, open addressing; -1 empty */
    size_t cap_names;
    struct ref *refs;
    size_t n_refs, cap_refs;
    char path[256]; /* JSON pointer of the schema being visited, for messages */
};

/* Records the first error (message + " at <path>"); returns false. */
bool hs__js_fail(struct conv *c, hs_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
bool hs__js_nomem(struct conv *c);
/* The index of the rule called name, or -1. */
ssize_t hs__js_find_rule(const struct conv *c, const char *name);
/* Adds `name ::= body` (takes body; NULL reserves the name), or finds a rule of that name and
 * body; a different body under the name gets a numbered one. Returns the index or -1. */
ssize_t hs__js_add_rule(struct conv *c, const char *hint, char *body);
/* Takes b's text as the body of a rule named after hint; the rule's name, NULL on error. */
const char *hs__js_rule_from(struct conv *c, const char *hint, struct hs__buf *b);
/* The primitive rule called name (space, string, number, ...), added with what it uses. */
const char *hs__js_prim(struct conv *c, const char *name);
/* A count keyword (minItems, maxLength, ...) in [0, HS__JS_MAX_COUNT]; -1 when absent. */
bool hs__js_get_count(struct conv *c, const json_t *s, const char *key, int64_t *out);
/* Writes the compact JSON text of v as a literal. */
bool hs__js_const(struct conv *c, struct hs__buf *b, const json_t *v);

const char *hs__js_visit_string(struct conv *c, const json_t *s, const char *hint);
const char *hs__js_visit_integer(struct conv *c, const json_t *s, const char *hint);
const char *hs__js_visit_enum(struct conv *c, const json_t *s, const json_t *values,
                              const char *hint, bool is_const);

#endif
