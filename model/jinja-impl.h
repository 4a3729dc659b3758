/* Internals of the chat-template interpreter (model/chat-template.h): values, the syntax tree
 * and the parser. For model/chat-template.c, model/jinja-*.c and their tests. */
#ifndef HS_MODEL_JINJA_IMPL_H
#define HS_MODEL_JINJA_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/chat-template.h"

/* ---- values ---- */

/* Kinds that only exist while rendering, after the public ones. */
enum {
    HS__TMPL_UNDEFINED = HS_TMPL_KIND_COUNT,
    HS__TMPL_MACRO,
    HS__TMPL_LOOP, /* the loop variable of a for loop: fields computed when read */
};

struct hs__jnode;
struct hs__frame;

struct hs_tmpl_value {
    int kind;
    /* Made while rendering: owned by the render's pool (freed all at once), its children are
     * borrowed. Otherwise made by a caller: owns its children. */
    bool pooled;
    bool is_namespace; /* namespace(): attributes may be assigned */
    bool is_tuple;     /* an array that Python would hold as a tuple: printed "(a, b)" */
    struct hs_tmpl_value *pool_next;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            char *p; /* NUL-terminated; len excludes the NUL */
            size_t len;
        } s;
        struct {
            struct hs_tmpl_value **v;
            size_t n, cap;
        } a;
        struct {
            char **k; /* NUL-terminated keys */
            struct hs_tmpl_value **v;
            size_t n, cap;
        } o;
        struct {
            const struct hs__jnode *node; /* MACRO node, or a CALL block's body list */
            struct hs__frame *frame;      /* caller(): the frame of the call site */
            bool is_caller;
        } m;
        struct {
            struct hs_tmpl_value *items; /* the array iterated (may grow while looping) */
            size_t index0, length;
        } loop;
    } u;
};

/* Growable byte buffer. */
struct hs__jbuf {
    char *p;
    size_t len, cap;
};
hs_status hs__jbuf_append(struct hs__jbuf *b, const char *s, size_t n);
hs_status hs__jbuf_putc(struct hs__jbuf *b, char c);

/* Python-style text of a value as {{ }} prints it (str()): strings raw, None, True, floats as
 * repr, containers as repr with single quotes. */
hs_status hs__tmpl_str(struct hs__jbuf *b, const struct hs_tmpl_value *v);
/* Python repr(). */
hs_status hs__tmpl_repr(struct hs__jbuf *b, const struct hs_tmpl_value *v);
/* json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: none, ", " and ": "
 * separators). Errors: HS_E_INVAL for values JSON cannot hold (macros), HS_E_RANGE when nesting
 * exceeds 64 levels. */
hs_status hs__tmpl_json(struct hs__jbuf *b, const struct hs_tmpl_value *v, int indent);
/* Python ==. */
bool hs__tmpl_equal(const struct hs_tmpl_value *a, const struct hs_tmpl_value *b);
/* Python truthiness. */
bool hs__tmpl_truthy(const struct hs_tmpl_value *v);
/* Index of key in obj's keys, or -1. */
ptrdiff_t hs__tmpl_object_find(const struct hs_tmpl_value *obj, const char *key, size_t len);
/* Frees the buffers a value holds itself (string bytes, item and key arrays) and the value;
 * children only when !pooled. */
void hs__tmpl_value_free(struct hs_tmpl_value *v);

/* ---- syntax tree ---- */

enum hs__jnode_kind {
    /* expressions */
    HS__J_LITERAL, /* lit */
    HS__J_NAME,    /* name */
    HS__J_ATTR,    /* a.name */
    HS__J_INDEX,   /* a[b] */
    HS__J_SLICE,   /* a[b:c:d], each of b c d may be NULL */
    HS__J_CALL,    /* a(args...) with args as list at b (KWARG nodes for name=value) */
    HS__J_FILTER,  /* a | name(args at b) */
    HS__J_TEST,    /* a is [not] name(args at b); op = 1 when negated */
    HS__J_UNARY,   /* op a */
    HS__J_BINARY,  /* a op b */
    HS__J_TERNARY, /* b if a else c (c may be NULL) */
    HS__J_LIST,    /* [items at a]; op = 1 for a tuple (a, b) */
    HS__J_DICT,    /* {pairs at a: KWARG nodes with key at a, value at b} */
    HS__J_KWARG,   /* name=a */
    /* statements */
    HS__J_TEXT,     /* lit (string) */
    HS__J_OUTPUT,   /* {{ a }} */
    HS__J_IF,       /* if a: body b, else c (an IF node for elif, or a body list) */
    HS__J_FOR,      /* for targets(names at d) in a [if c]: body b, else e */
    HS__J_SET,      /* set target = b; target a (NAME or ATTR, or a LIST of NAMEs); block body c */
    HS__J_MACRO,    /* macro name(params at a: NAME or KWARG with default): body b */
    HS__J_CALLBLK,  /* call(params at a) expression b: body c */
    HS__J_BREAK,
    HS__J_CONTINUE,
    HS__J_BLOCK,    /* generation / filter bodies: body b; filter name in name (NULL: none) */
    HS__J_DO,       /* do a */
    HS__J_KIND_COUNT,
};

/* Operators of UNARY and BINARY nodes. */
enum hs__jop {
    HS__OP_NOT, HS__OP_NEG, HS__OP_POS,
    HS__OP_AND, HS__OP_OR,
    HS__OP_EQ, HS__OP_NE, HS__OP_LT, HS__OP_LE, HS__OP_GT, HS__OP_GE, HS__OP_IN, HS__OP_NOTIN,
    HS__OP_ADD, HS__OP_SUB, HS__OP_MUL, HS__OP_DIV, HS__OP_FLOORDIV, HS__OP_MOD, HS__OP_POW,
    HS__OP_CONCAT,
};

struct hs__jnode {
    enum hs__jnode_kind kind;
    int op;
    int line, col;
    const char *name; /* interned in the template's arena */
    struct hs_tmpl_value *lit; /* owned by the template */
    struct hs__jnode *a, *b, *c, *d, *e;
    struct hs__jnode *next; /* next in a list (statements, arguments) */
};

/* Arena of the template: nodes, names and literals. */
struct hs__jarena {
    struct hs__jchunk *chunks;
    struct hs_tmpl_value *lits; /* literal values, chained by pool_next */
};
void *hs__jarena_alloc(struct hs__jarena *ar, size_t n);
void hs__jarena_free(struct hs__jarena *ar);

/* Parses src into a statement list (*out may be NULL for an empty template). Errors:
 * HS_E_FORMAT with line and column in err, HS_E_NOMEM. */
hs_status hs__jinja_parse(struct hs__jarena *ar, const char *src, size_t len,
                          struct hs__jnode **out, struct hs_error *err);

#endif
