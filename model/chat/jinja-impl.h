/* Internals of the chat-template interpreter (model/chat-template.h): values, the syntax tree
 * and the parser. For model/chat-template.c, model/jinja-*.c and their tests. */
#ifndef HS_MODEL_JINJA_IMPL_H
#define HS_MODEL_JINJA_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "model/chat/chat-template.h"

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
    /* Client text (hs_tmpl_value_mark_client): a string whose every byte is, or an object whose
     * keys are. A string made while rendering from client and template text has cmask instead:
     * [u.s.len] bytes, 1 where the byte came from the client (NULL: none did). */
    bool client;
    uint8_t *cmask;
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

/* Growable byte buffer (common/buf.h's) with client marks. m: NULL, or [cap_m >= buf.len] bytes
 * marking which of buf's bytes are client text (made by the first marked append). */
struct hs__jbuf {
    struct hs__buf buf;
    uint8_t *m;
    size_t cap_m;
};
/* Appends template (unmarked) bytes. */
hs_status hs__jbuf_append(struct hs__jbuf *b, const char *s, size_t n);
hs_status hs__jbuf_putc(struct hs__jbuf *b, char c);
/* Appends bytes [off, off + n) of string value s with their client marks. */
hs_status hs__jbuf_append_val(struct hs__jbuf *b, const struct hs_tmpl_value *s, size_t off,
                              size_t n);
/* Marks bytes [from, len) as client text. */
hs_status hs__jbuf_mark(struct hs__jbuf *b, size_t from);
void hs__jbuf_free(struct hs__jbuf *b);

/* Byte i of string s is client text. */
bool hs__client_at(const struct hs_tmpl_value *s, size_t i);
/* v holds client text: a string with a marked byte, an object with client keys, or a container
 * holding one (searched to depth 64; deeper counts as client). */
bool hs__has_client(const struct hs_tmpl_value *v);

/* Python-style text of a value as {{ }} prints it (str()): strings raw, None, True, floats as
 * repr, containers as repr with single quotes. Client marks: a string's are kept, a container
 * holding client text is marked whole (as is tojson's output below). */
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
    HS__J_TEXT,    /* lit (string) */
    HS__J_OUTPUT,  /* {{ a }} */
    HS__J_IF,      /* if a: body b, else c (an IF node for elif, or a body list) */
    HS__J_FOR,     /* for targets(names at d) in a [if c]: body b, else e */
    HS__J_SET,     /* set target = b; target a (NAME or ATTR, or a LIST of NAMEs); block body c */
    HS__J_MACRO,   /* macro name(params at a: NAME or KWARG with default): body b */
    HS__J_CALLBLK, /* call(params at a) expression b: body c */
    HS__J_BREAK,
    HS__J_CONTINUE,
    HS__J_BLOCK, /* generation / filter bodies: body b; filter name in name (NULL: none) */
    HS__J_DO,    /* do a */
    HS__J_KIND_COUNT,
};

/* Operators of UNARY and BINARY nodes. */
enum hs__jop {
    HS__OP_NOT,
    HS__OP_NEG,
    HS__OP_POS,
    HS__OP_AND,
    HS__OP_OR,
    HS__OP_EQ,
    HS__OP_NE,
    HS__OP_LT,
    HS__OP_LE,
    HS__OP_GT,
    HS__OP_GE,
    HS__OP_IN,
    HS__OP_NOTIN,
    HS__OP_ADD,
    HS__OP_SUB,
    HS__OP_MUL,
    HS__OP_DIV,
    HS__OP_FLOORDIV,
    HS__OP_MOD,
    HS__OP_POW,
    HS__OP_CONCAT,
};

struct hs__jnode {
    enum hs__jnode_kind kind;
    int op;
    int line, col;
    const char *name;          /* interned in the template's arena */
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

/* ==== lexer and parser state (jinja-lex.c, jinja-parse.c) ==== */

enum hs__jtok_kind {
    HS__JT_TEXT,
    HS__JT_VAR_BEGIN,
    HS__JT_VAR_END,
    HS__JT_BLOCK_BEGIN,
    HS__JT_BLOCK_END,
    HS__JT_NAME,
    HS__JT_INT,
    HS__JT_FLOAT,
    HS__JT_STRING,
    HS__JT_OP,
    HS__JT_EOF,
};

struct hs__jtok {
    enum hs__jtok_kind kind;
    size_t off;
    int line, col;
    const char *s; /* TEXT, NAME, STRING: arena copy; OP: static spelling */
    size_t len;
    int64_t i;
    double f;
};

struct hs__jparser {
    struct hs__jarena *ar;
    const char *src;
    size_t len;
    struct hs__jtok *toks;
    size_t n_toks, cap_toks;
    size_t pos; /* parser cursor */
    int depth;
    /* line/col cursor: positions are computed moving forward */
    size_t lc_off;
    int lc_line, lc_col;
    struct hs_error *err;
};

/* Records a syntax error at byte offset off (HS_E_FORMAT, "line L, column C" in the message). */
hs_status hs__jsyntax_error(struct hs__jparser *p, size_t off, const char *what);
/* Tokenizes p->src into p->toks (ending with HS__JT_EOF). Errors: HS_E_FORMAT, HS_E_NOMEM. */
hs_status hs__jinja_lex(struct hs__jparser *p);

/* Parses src into a statement list (*out may be NULL for an empty template). Errors:
 * HS_E_FORMAT with line and column in err, HS_E_NOMEM. */
hs_status hs__jinja_parse(struct hs__jarena *ar, const char *src, size_t len,
                          struct hs__jnode **out, struct hs_error *err);

/* ==== rendering (model/chat-template.c, model/jinja-builtins.c) ==== */

#define HS__MAX_ARGS 16

/* Frames live until the render ends: a caller() value keeps the frame of its call site. */
struct hs__frame {
    struct hs__frame *parent;
    struct hs__frame *next_alloc;
    struct hs_tmpl_value *vars; /* pooled object */
};

struct hs__render {
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

struct hs__args {
    int n, nk;
    struct hs_tmpl_value *pos[HS__MAX_ARGS];
    const char *kname[HS__MAX_ARGS];
    struct hs_tmpl_value *kval[HS__MAX_ARGS];
};

/* Shared read-only values: undefined, None, True, False. */
extern struct hs_tmpl_value hs__v_undef, hs__v_none, hs__v_true, hs__v_false;

/* Records a runtime error (the first one wins) with the node's line and column; returns NULL. */
struct hs_tmpl_value *hs__fail(struct hs__render *r, const struct hs__jnode *n, hs_status st,
                               const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Pooled values, conversions and helpers (chat-template.c): constructors return NULL after
 * recording an error (out of memory, memory limit). */
struct hs_tmpl_value *hs__oom(struct hs__render *r);
bool hs__charge(struct hs__render *r, size_t bytes);
struct hs_tmpl_value *hs__p_new(struct hs__render *r, int kind);
struct hs_tmpl_value *hs__p_int(struct hs__render *r, int64_t i);
struct hs_tmpl_value *hs__p_float(struct hs__render *r, double f);
struct hs_tmpl_value *hs__p_bool(bool b);
struct hs_tmpl_value *hs__p_str_take(struct hs__render *r, char *s, size_t len);
struct hs_tmpl_value *hs__p_str(struct hs__render *r, const char *s, size_t len);
/* Takes b's bytes and client marks. */
struct hs_tmpl_value *hs__p_buf(struct hs__render *r, struct hs__jbuf *b);
/* Bytes [off, off + n) of string s with their client marks. */
struct hs_tmpl_value *hs__p_substr(struct hs__render *r, const struct hs_tmpl_value *s, size_t off,
                                   size_t n);
/* v (a new pooled string) marked as client text when client is true; returns v. */
struct hs_tmpl_value *hs__p_client_if(struct hs_tmpl_value *v, bool client);
bool hs__p_push(struct hs__render *r, struct hs_tmpl_value *arr, struct hs_tmpl_value *item);
bool hs__p_set(struct hs__render *r, struct hs_tmpl_value *obj, const char *key, size_t klen,
               struct hs_tmpl_value *v);
const char *hs__kind_name(const struct hs_tmpl_value *v);
size_t hs__utf8_count(const char *s, size_t len);
size_t *hs__utf8_offsets(const char *s, size_t len, size_t *n_out);
const char *hs__memfind(const char *h, size_t hn, const char *n, size_t nn);
struct hs_tmpl_value *hs__to_str(struct hs__render *r, const struct hs_tmpl_value *v);
bool hs__is_num(const struct hs_tmpl_value *v);
double hs__num_of(const struct hs_tmpl_value *v);
int64_t hs__int_of(const struct hs_tmpl_value *v);
bool hs__is_intlike(const struct hs_tmpl_value *v);
struct hs_tmpl_value *hs__to_list(struct hs__render *r, const struct hs__jnode *n,
                                  const struct hs_tmpl_value *v);
struct hs_tmpl_value *hs__items_of(struct hs__render *r, const struct hs__jnode *n,
                                   const struct hs_tmpl_value *obj);
int hs__compare(struct hs__render *r, const struct hs__jnode *n, const struct hs_tmpl_value *a,
                const struct hs_tmpl_value *b);
bool hs__contains(struct hs__render *r, const struct hs__jnode *n,
                  const struct hs_tmpl_value *needle, const struct hs_tmpl_value *hay);
struct hs_tmpl_value *hs__arg(const struct hs__args *a, int i, const char *name);
struct hs_tmpl_value *hs__call_macro(struct hs__render *r, const struct hs__jnode *site,
                                     struct hs_tmpl_value *m, const struct hs__args *a);
bool hs__count_iteration(struct hs__render *r, const struct hs__jnode *n);
struct hs_tmpl_value *hs__apply_filter(struct hs__render *r, const struct hs__jnode *n,
                                       const char *f, struct hs_tmpl_value *v,
                                       const struct hs__args *a);
bool hs__run_test(struct hs__render *r, const struct hs__jnode *n, const char *t,
                  const struct hs_tmpl_value *v, const struct hs__args *a, int first_arg);
struct hs_tmpl_value *hs__get_attr(struct hs__render *r, const struct hs__jnode *n,
                                   struct hs_tmpl_value *obj, const char *name);
struct hs_tmpl_value *hs__get_index(struct hs__render *r, const struct hs__jnode *n,
                                    struct hs_tmpl_value *obj, struct hs_tmpl_value *idx);
struct hs_tmpl_value *hs__get_slice(struct hs__render *r, const struct hs__jnode *n,
                                    struct hs_tmpl_value *obj, struct hs_tmpl_value *sa,
                                    struct hs_tmpl_value *sb, struct hs_tmpl_value *sc);
struct hs_tmpl_value *hs__call_method(struct hs__render *r, const struct hs__jnode *n,
                                      struct hs_tmpl_value *obj, const char *m,
                                      const struct hs__args *a);
struct hs_tmpl_value *hs__call_global(struct hs__render *r, const struct hs__jnode *n,
                                      const char *name, const struct hs__args *a);

#endif
