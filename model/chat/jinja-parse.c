/* Chat-template parser: tokens (jinja-lex.c) -> syntax tree (model/jinja-impl.h), by recursive
 * descent with Jinja's operator precedence; nesting deeper than MAX_DEPTH is a syntax error, so
 * neither parsing nor rendering can exhaust the stack. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat/jinja-impl.h"

#define MAX_DEPTH 96

/* ==== parser ==== */

static struct hs__jtok *peek(struct hs__jparser *p)
{
    return &p->toks[p->pos];
}

static struct hs__jtok *peek_at(struct hs__jparser *p, size_t ahead)
{
    size_t i = p->pos + ahead;
    return &p->toks[i < p->n_toks ? i : p->n_toks - 1];
}

static void advance(struct hs__jparser *p)
{
    if (p->toks[p->pos].kind != HS__JT_EOF) {
        p->pos++;
    }
}

static bool is_op(const struct hs__jtok *t, const char *op)
{
    return t->kind == HS__JT_OP && strcmp(t->s, op) == 0;
}

static bool is_name(const struct hs__jtok *t, const char *name)
{
    return t->kind == HS__JT_NAME && strcmp(t->s, name) == 0;
}

static bool accept_op(struct hs__jparser *p, const char *op)
{
    if (is_op(peek(p), op)) {
        advance(p);
        return true;
    }
    return false;
}

static bool accept_name(struct hs__jparser *p, const char *name)
{
    if (is_name(peek(p), name)) {
        advance(p);
        return true;
    }
    return false;
}

static hs_status expect_op(struct hs__jparser *p, const char *op)
{
    if (accept_op(p, op)) {
        return HS_OK;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "expected '%s'", op);
    return hs__jsyntax_error(p, peek(p)->off, msg);
}

static struct hs__jnode *new_node(struct hs__jparser *p, enum hs__jnode_kind kind,
                                  const struct hs__jtok *at)
{
    struct hs__jnode *n = hs__jarena_alloc(p->ar, sizeof(*n));
    if (n) {
        n->kind = kind;
        n->line = at->line;
        n->col = at->col;
    }
    return n;
}

static struct hs_tmpl_value *new_lit(struct hs__jparser *p, struct hs_tmpl_value *v)
{
    if (v) {
        v->pool_next = p->ar->lits;
        p->ar->lits = v;
    }
    return v;
}

#define NEW(var, kind, at)                                                                         \
    do {                                                                                           \
        (var) = new_node(p, (kind), (at));                                                         \
        if (!(var)) {                                                                              \
            return HS_E_NOMEM;                                                                     \
        }                                                                                          \
    } while (0)

static hs_status parse_expr(struct hs__jparser *p, struct hs__jnode **out);
static hs_status parse_or(struct hs__jparser *p, struct hs__jnode **out);
static hs_status parse_unary(struct hs__jparser *p, struct hs__jnode **out, bool with_filter);
static hs_status parse_primary(struct hs__jparser *p, struct hs__jnode **out);

static hs_status enter(struct hs__jparser *p)
{
    if (++p->depth > MAX_DEPTH) {
        return hs__jsyntax_error(p, peek(p)->off, "nesting too deep");
    }
    return HS_OK;
}

/* '(' already consumed: arguments up to ')'. */
static hs_status parse_args(struct hs__jparser *p, struct hs__jnode **out)
{
    struct hs__jnode **tail = out;
    while (!accept_op(p, ")")) {
        struct hs__jnode *arg;
        struct hs__jtok *t = peek(p);
        if (t->kind == HS__JT_NAME && is_op(peek_at(p, 1), "=")) {
            NEW(arg, HS__J_KWARG, t);
            arg->name = t->s;
            advance(p);
            advance(p);
            HS_TRY(parse_expr(p, &arg->a));
        } else {
            HS_TRY(parse_expr(p, &arg));
        }
        *tail = arg;
        tail = &arg->next;
        if (!accept_op(p, ",")) {
            HS_TRY(expect_op(p, ")"));
            break;
        }
    }
    return HS_OK;
}

static hs_status parse_postfix(struct hs__jparser *p, struct hs__jnode **node)
{
    for (;;) {
        struct hs__jtok *t = peek(p);
        struct hs__jnode *n;
        if (is_op(t, ".")) {
            advance(p);
            struct hs__jtok *name = peek(p);
            if (name->kind != HS__JT_NAME && name->kind != HS__JT_INT) {
                return hs__jsyntax_error(p, name->off, "expected attribute name after '.'");
            }
            if (name->kind == HS__JT_INT) {
                NEW(n, HS__J_INDEX, t);
                NEW(n->b, HS__J_LITERAL, name);
                n->b->lit = new_lit(p, hs_tmpl_int(name->i));
                if (!n->b->lit) {
                    return HS_E_NOMEM;
                }
            } else {
                NEW(n, HS__J_ATTR, t);
                n->name = name->s;
            }
            advance(p);
            n->a = *node;
            *node = n;
        } else if (is_op(t, "[")) {
            advance(p);
            struct hs__jnode *parts[3] = {NULL, NULL, NULL};
            int n_colons = 0;
            for (;;) {
                struct hs__jtok *u = peek(p);
                if (is_op(u, "]")) {
                    break;
                }
                if (is_op(u, ":")) {
                    if (++n_colons > 2) {
                        return hs__jsyntax_error(p, u->off, "too many ':' in slice");
                    }
                    advance(p);
                    continue;
                }
                if (parts[n_colons]) {
                    return hs__jsyntax_error(p, u->off, "expected ']'");
                }
                HS_TRY(parse_expr(p, &parts[n_colons]));
            }
            HS_TRY(expect_op(p, "]"));
            if (n_colons == 0) {
                if (!parts[0]) {
                    return hs__jsyntax_error(p, t->off, "empty subscript");
                }
                NEW(n, HS__J_INDEX, t);
                n->b = parts[0];
            } else {
                NEW(n, HS__J_SLICE, t);
                n->b = parts[0];
                n->c = parts[1];
                n->d = parts[2];
            }
            n->a = *node;
            *node = n;
        } else if (is_op(t, "(")) {
            advance(p);
            NEW(n, HS__J_CALL, t);
            n->a = *node;
            HS_TRY(parse_args(p, &n->b));
            *node = n;
        } else {
            return HS_OK;
        }
    }
}

static hs_status parse_filters(struct hs__jparser *p, struct hs__jnode **node)
{
    for (;;) {
        struct hs__jtok *t = peek(p);
        struct hs__jnode *n;
        if (is_op(t, "|")) {
            advance(p);
            struct hs__jtok *name = peek(p);
            if (name->kind != HS__JT_NAME) {
                return hs__jsyntax_error(p, name->off, "expected filter name after '|'");
            }
            advance(p);
            NEW(n, HS__J_FILTER, name);
            n->name = name->s;
            n->a = *node;
            if (accept_op(p, "(")) {
                HS_TRY(parse_args(p, &n->b));
            }
            *node = n;
        } else if (is_name(t, "is")) {
            advance(p);
            NEW(n, HS__J_TEST, t);
            n->op = accept_name(p, "not") ? 1 : 0;
            struct hs__jtok *name = peek(p);
            if (name->kind != HS__JT_NAME) {
                return hs__jsyntax_error(p, name->off, "expected test name after 'is'");
            }
            advance(p);
            n->name = name->s;
            n->a = *node;
            struct hs__jtok *u = peek(p);
            if (accept_op(p, "(")) {
                HS_TRY(parse_args(p, &n->b));
            } else if (u->kind == HS__JT_STRING || u->kind == HS__JT_INT ||
                       u->kind == HS__JT_FLOAT || is_name(u, "none") || is_name(u, "None") ||
                       is_name(u, "true") || is_name(u, "false") || is_name(u, "True") ||
                       is_name(u, "False")) {
                HS_TRY(parse_primary(p, &n->b));
            }
            *node = n;
        } else {
            return HS_OK;
        }
    }
}

static hs_status parse_primary(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(enter(p));
    struct hs__jtok *t = peek(p);
    struct hs__jnode *n = NULL;
    switch (t->kind) {
    case HS__JT_STRING: {
        /* adjacent literals concatenate */
        size_t total = 0, k = p->pos;
        for (; p->toks[k].kind == HS__JT_STRING; k++) {
            total += p->toks[k].len;
        }
        char *s = malloc(total + 1);
        if (!s) {
            return HS_E_NOMEM;
        }
        size_t o = 0;
        for (; peek(p)->kind == HS__JT_STRING; advance(p)) {
            memcpy(s + o, peek(p)->s, peek(p)->len);
            o += peek(p)->len;
        }
        NEW(n, HS__J_LITERAL, t);
        n->lit = new_lit(p, hs_tmpl_string_n(s, total));
        free(s);
        if (!n->lit) {
            return HS_E_NOMEM;
        }
        break;
    }
    case HS__JT_INT:
    case HS__JT_FLOAT:
        NEW(n, HS__J_LITERAL, t);
        n->lit = new_lit(p, t->kind == HS__JT_INT ? hs_tmpl_int(t->i) : hs_tmpl_float(t->f));
        if (!n->lit) {
            return HS_E_NOMEM;
        }
        advance(p);
        break;
    case HS__JT_NAME:
        NEW(n, HS__J_LITERAL, t);
        if (is_name(t, "true") || is_name(t, "True")) {
            n->lit = new_lit(p, hs_tmpl_bool(true));
        } else if (is_name(t, "false") || is_name(t, "False")) {
            n->lit = new_lit(p, hs_tmpl_bool(false));
        } else if (is_name(t, "none") || is_name(t, "None")) {
            n->lit = new_lit(p, hs_tmpl_null());
        } else {
            n->kind = HS__J_NAME;
            n->name = t->s;
        }
        if (n->kind == HS__J_LITERAL && !n->lit) {
            return HS_E_NOMEM;
        }
        advance(p);
        break;
    case HS__JT_OP:
        if (accept_op(p, "(")) {
            if (accept_op(p, ")")) {
                NEW(n, HS__J_LIST, t); /* empty tuple */
                n->op = 1;
                break;
            }
            HS_TRY(parse_expr(p, &n));
            if (is_op(peek(p), ",")) {
                struct hs__jnode *list;
                NEW(list, HS__J_LIST, t);
                list->op = 1; /* a tuple */
                list->a = n;
                struct hs__jnode **tail = &n->next;
                while (accept_op(p, ",") && !is_op(peek(p), ")")) {
                    HS_TRY(parse_expr(p, tail));
                    tail = &(*tail)->next;
                }
                n = list;
            }
            HS_TRY(expect_op(p, ")"));
        } else if (accept_op(p, "[")) {
            NEW(n, HS__J_LIST, t);
            struct hs__jnode **tail = &n->a;
            while (!accept_op(p, "]")) {
                HS_TRY(parse_expr(p, tail));
                tail = &(*tail)->next;
                if (!accept_op(p, ",")) {
                    HS_TRY(expect_op(p, "]"));
                    break;
                }
            }
        } else if (accept_op(p, "{")) {
            NEW(n, HS__J_DICT, t);
            struct hs__jnode **tail = &n->a;
            while (!accept_op(p, "}")) {
                struct hs__jtok *u = peek(p);
                NEW(*tail, HS__J_KWARG, u); /* a pair: key at a, value at b */
                HS_TRY(parse_expr(p, &(*tail)->a));
                HS_TRY(expect_op(p, ":"));
                HS_TRY(parse_expr(p, &(*tail)->b));
                tail = &(*tail)->next;
                if (!accept_op(p, ",")) {
                    HS_TRY(expect_op(p, "}"));
                    break;
                }
            }
        } else {
            return hs__jsyntax_error(p, t->off, "unexpected operator in expression");
        }
        break;
    default:
        return hs__jsyntax_error(p, t->off, "expected an expression");
    }
    p->depth--;
    *out = n;
    return HS_OK;
}

/* As Jinja: "-x | f" is "(-x) | f"; filters bind after the sign. */
static hs_status parse_unary(struct hs__jparser *p, struct hs__jnode **out, bool with_filter)
{
    HS_TRY(enter(p));
    struct hs__jtok *t = peek(p);
    if (is_op(t, "-") || is_op(t, "+")) {
        advance(p);
        struct hs__jnode *n;
        NEW(n, HS__J_UNARY, t);
        n->op = t->s[0] == '-' ? HS__OP_NEG : HS__OP_POS;
        HS_TRY(parse_unary(p, &n->a, false));
        *out = n;
    } else {
        HS_TRY(parse_primary(p, out));
        HS_TRY(parse_postfix(p, out));
    }
    if (with_filter) {
        HS_TRY(parse_filters(p, out));
    }
    p->depth--;
    return HS_OK;
}

static hs_status binary(struct hs__jparser *p, struct hs__jnode **out, const struct hs__jtok *at,
                        int op, struct hs__jnode *a, struct hs__jnode *b)
{
    struct hs__jnode *n;
    NEW(n, HS__J_BINARY, at);
    n->op = op;
    n->a = a;
    n->b = b;
    *out = n;
    return HS_OK;
}

static hs_status parse_pow(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(parse_unary(p, out, true));
    while (is_op(peek(p), "**")) {
        struct hs__jtok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_unary(p, &r, true));
        HS_TRY(binary(p, out, t, HS__OP_POW, *out, r));
    }
    return HS_OK;
}

static hs_status parse_math2(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(parse_pow(p, out));
    for (;;) {
        struct hs__jtok *t = peek(p);
        int op = is_op(t, "*")    ? HS__OP_MUL
                 : is_op(t, "/")  ? HS__OP_DIV
                 : is_op(t, "//") ? HS__OP_FLOORDIV
                 : is_op(t, "%")  ? HS__OP_MOD
                                  : -1;
        if (op < 0) {
            return HS_OK;
        }
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_pow(p, &r));
        HS_TRY(binary(p, out, t, op, *out, r));
    }
}

static hs_status parse_concat(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(parse_math2(p, out));
    while (is_op(peek(p), "~")) {
        struct hs__jtok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_math2(p, &r));
        HS_TRY(binary(p, out, t, HS__OP_CONCAT, *out, r));
    }
    return HS_OK;
}

static hs_status parse_math1(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(parse_concat(p, out));
    for (;;) {
        struct hs__jtok *t = peek(p);
        int op = is_op(t, "+") ? HS__OP_ADD : is_op(t, "-") ? HS__OP_SUB : -1;
        if (op < 0) {
            return HS_OK;
        }
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_concat(p, &r));
        HS_TRY(binary(p, out, t, op, *out, r));
    }
}

static hs_status parse_compare(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(parse_math1(p, out));
    for (;;) {
        struct hs__jtok *t = peek(p);
        int op = -1;
        if (is_op(t, "==")) {
            op = HS__OP_EQ;
        } else if (is_op(t, "!=")) {
            op = HS__OP_NE;
        } else if (is_op(t, "<")) {
            op = HS__OP_LT;
        } else if (is_op(t, "<=")) {
            op = HS__OP_LE;
        } else if (is_op(t, ">")) {
            op = HS__OP_GT;
        } else if (is_op(t, ">=")) {
            op = HS__OP_GE;
        } else if (is_name(t, "in")) {
            op = HS__OP_IN;
        } else if (is_name(t, "not") && is_name(peek_at(p, 1), "in")) {
            op = HS__OP_NOTIN;
            advance(p);
        }
        if (op < 0) {
            return HS_OK;
        }
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_math1(p, &r));
        HS_TRY(binary(p, out, t, op, *out, r));
    }
}

static hs_status parse_not(struct hs__jparser *p, struct hs__jnode **out)
{
    struct hs__jtok *t = peek(p);
    if (is_name(t, "not")) {
        HS_TRY(enter(p));
        advance(p);
        struct hs__jnode *n;
        NEW(n, HS__J_UNARY, t);
        n->op = HS__OP_NOT;
        HS_TRY(parse_not(p, &n->a));
        *out = n;
        p->depth--;
        return HS_OK;
    }
    return parse_compare(p, out);
}

static hs_status parse_and(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(parse_not(p, out));
    while (is_name(peek(p), "and")) {
        struct hs__jtok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_not(p, &r));
        HS_TRY(binary(p, out, t, HS__OP_AND, *out, r));
    }
    return HS_OK;
}

static hs_status parse_or(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(parse_and(p, out));
    while (is_name(peek(p), "or")) {
        struct hs__jtok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_and(p, &r));
        HS_TRY(binary(p, out, t, HS__OP_OR, *out, r));
    }
    return HS_OK;
}

static hs_status parse_expr(struct hs__jparser *p, struct hs__jnode **out)
{
    HS_TRY(enter(p));
    HS_TRY(parse_or(p, out));
    while (is_name(peek(p), "if")) {
        struct hs__jtok *t = peek(p);
        advance(p);
        struct hs__jnode *n;
        NEW(n, HS__J_TERNARY, t);
        n->b = *out;
        HS_TRY(parse_or(p, &n->a));
        if (accept_name(p, "else")) {
            HS_TRY(parse_expr(p, &n->c));
        }
        *out = n;
    }
    p->depth--;
    return HS_OK;
}

/* ---- statements ---- */

static hs_status parse_body(struct hs__jparser *p, const char *const *stops,
                            struct hs__jnode **out);

static hs_status expect_block_end(struct hs__jparser *p)
{
    if (peek(p)->kind == HS__JT_BLOCK_END) {
        advance(p);
        return HS_OK;
    }
    return hs__jsyntax_error(p, peek(p)->off, "expected end of tag '%}'");
}

/* After parse_body stopped at "{% word": consumes "word" (and an optional name) and "%}". */
static hs_status end_tag(struct hs__jparser *p)
{
    advance(p); /* the word */
    if (peek(p)->kind == HS__JT_NAME) {
        advance(p); /* {% endmacro name %} */
    }
    return expect_block_end(p);
}

static hs_status parse_targets(struct hs__jparser *p, struct hs__jnode **out)
{
    struct hs__jnode **tail = out;
    bool paren = accept_op(p, "(");
    do {
        struct hs__jtok *t = peek(p);
        if (t->kind != HS__JT_NAME) {
            return hs__jsyntax_error(p, t->off, "expected a variable name");
        }
        NEW(*tail, HS__J_NAME, t);
        (*tail)->name = t->s;
        tail = &(*tail)->next;
        advance(p);
    } while (accept_op(p, ","));
    if (paren) {
        HS_TRY(expect_op(p, ")"));
    }
    return HS_OK;
}

/* Parameter list of macro/call: NAME or NAME=default. '(' consumed. */
static hs_status parse_params(struct hs__jparser *p, struct hs__jnode **out)
{
    struct hs__jnode **tail = out;
    while (!accept_op(p, ")")) {
        struct hs__jtok *t = peek(p);
        if (t->kind != HS__JT_NAME) {
            return hs__jsyntax_error(p, t->off, "expected a parameter name");
        }
        advance(p);
        if (accept_op(p, "=")) {
            NEW(*tail, HS__J_KWARG, t);
            HS_TRY(parse_expr(p, &(*tail)->a));
        } else {
            NEW(*tail, HS__J_NAME, t);
        }
        (*tail)->name = t->s;
        tail = &(*tail)->next;
        if (!accept_op(p, ",")) {
            HS_TRY(expect_op(p, ")"));
            break;
        }
    }
    return HS_OK;
}

static hs_status parse_if(struct hs__jparser *p, const struct hs__jtok *at, struct hs__jnode **out)
{
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    struct hs__jnode *n;
    NEW(n, HS__J_IF, at);
    HS_TRY(parse_expr(p, &n->a));
    HS_TRY(expect_block_end(p));
    HS_TRY(parse_body(p, stops, &n->b));
    struct hs__jtok *w = peek(p);
    if (is_name(w, "elif")) {
        advance(p);
        HS_TRY(enter(p));
        HS_TRY(parse_if(p, w, &n->c));
        n->c->op = 1; /* marks an elif, unlike an IF statement opening an else body */
        p->depth--;
    } else if (is_name(w, "else")) {
        static const char *const end[] = {"endif", NULL};
        advance(p);
        HS_TRY(expect_block_end(p));
        HS_TRY(parse_body(p, end, &n->c));
        HS_TRY(end_tag(p));
    } else {
        HS_TRY(end_tag(p));
    }
    *out = n;
    return HS_OK;
}

static hs_status parse_statement(struct hs__jparser *p, struct hs__jnode **out)
{
    struct hs__jtok *t = peek(p);
    if (t->kind != HS__JT_NAME) {
        return hs__jsyntax_error(p, t->off, "expected a statement name");
    }
    advance(p);
    struct hs__jnode *n = NULL;
    if (is_name(t, "if")) {
        return parse_if(p, t, out);
    } else if (is_name(t, "for")) {
        static const char *const stops[] = {"else", "endfor", NULL};
        static const char *const end[] = {"endfor", NULL};
        NEW(n, HS__J_FOR, t);
        HS_TRY(parse_targets(p, &n->d));
        if (!accept_name(p, "in")) {
            return hs__jsyntax_error(p, peek(p)->off, "expected 'in' in for loop");
        }
        HS_TRY(parse_or(p, &n->a));
        if (accept_name(p, "if")) {
            HS_TRY(parse_expr(p, &n->c));
        }
        if (is_name(peek(p), "recursive")) {
            return hs__jsyntax_error(p, peek(p)->off, "recursive loops are not supported");
        }
        HS_TRY(expect_block_end(p));
        HS_TRY(parse_body(p, stops, &n->b));
        if (accept_name(p, "else")) {
            HS_TRY(expect_block_end(p));
            HS_TRY(parse_body(p, end, &n->e));
        }
        HS_TRY(end_tag(p));
    } else if (is_name(t, "set")) {
        static const char *const end[] = {"endset", NULL};
        NEW(n, HS__J_SET, t);
        struct hs__jtok *name = peek(p);
        if (name->kind != HS__JT_NAME) {
            return hs__jsyntax_error(p, name->off, "expected a variable name after 'set'");
        }
        if (is_op(peek_at(p, 1), ".")) {
            struct hs__jtok *attr = peek_at(p, 2);
            if (attr->kind != HS__JT_NAME) {
                return hs__jsyntax_error(p, attr->off, "expected attribute name");
            }
            NEW(n->a, HS__J_ATTR, name);
            NEW(n->a->a, HS__J_NAME, name);
            n->a->a->name = name->s;
            n->a->name = attr->s;
            advance(p);
            advance(p);
            advance(p);
        } else if (is_op(peek_at(p, 1), ",")) {
            NEW(n->a, HS__J_LIST, name);
            HS_TRY(parse_targets(p, &n->a->a));
        } else {
            NEW(n->a, HS__J_NAME, name);
            n->a->name = name->s;
            advance(p);
        }
        if (accept_op(p, "=")) {
            HS_TRY(parse_expr(p, &n->b));
            if (is_op(peek(p), ",")) {
                struct hs__jnode *list;
                NEW(list, HS__J_LIST, t);
                list->a = n->b;
                struct hs__jnode **tail = &n->b->next;
                while (accept_op(p, ",")) {
                    HS_TRY(parse_expr(p, tail));
                    tail = &(*tail)->next;
                }
                n->b = list;
            }
            HS_TRY(expect_block_end(p));
        } else {
            if (n->a->kind != HS__J_NAME) {
                return hs__jsyntax_error(p, peek(p)->off, "expected '='");
            }
            HS_TRY(expect_block_end(p));
            HS_TRY(parse_body(p, end, &n->c));
            HS_TRY(end_tag(p));
        }
    } else if (is_name(t, "macro")) {
        static const char *const end[] = {"endmacro", NULL};
        NEW(n, HS__J_MACRO, t);
        struct hs__jtok *name = peek(p);
        if (name->kind != HS__JT_NAME) {
            return hs__jsyntax_error(p, name->off, "expected a macro name");
        }
        n->name = name->s;
        advance(p);
        HS_TRY(expect_op(p, "("));
        HS_TRY(parse_params(p, &n->a));
        HS_TRY(expect_block_end(p));
        HS_TRY(parse_body(p, end, &n->b));
        HS_TRY(end_tag(p));
    } else if (is_name(t, "call")) {
        static const char *const end[] = {"endcall", NULL};
        NEW(n, HS__J_CALLBLK, t);
        if (accept_op(p, "(")) {
            HS_TRY(parse_params(p, &n->a));
        }
        HS_TRY(parse_expr(p, &n->b));
        if (n->b->kind != HS__J_CALL) {
            return hs__jsyntax_error(p, t->off, "expected a macro call after 'call'");
        }
        HS_TRY(expect_block_end(p));
        HS_TRY(parse_body(p, end, &n->c));
        HS_TRY(end_tag(p));
    } else if (is_name(t, "break") || is_name(t, "continue")) {
        NEW(n, is_name(t, "break") ? HS__J_BREAK : HS__J_CONTINUE, t);
        HS_TRY(expect_block_end(p));
    } else if (is_name(t, "generation")) {
        static const char *const end[] = {"endgeneration", NULL};
        NEW(n, HS__J_BLOCK, t);
        HS_TRY(expect_block_end(p));
        HS_TRY(parse_body(p, end, &n->b));
        HS_TRY(end_tag(p));
    } else if (is_name(t, "filter")) {
        static const char *const end[] = {"endfilter", NULL};
        NEW(n, HS__J_BLOCK, t);
        struct hs__jtok *name = peek(p);
        if (name->kind != HS__JT_NAME) {
            return hs__jsyntax_error(p, name->off, "expected a filter name");
        }
        n->name = name->s;
        advance(p);
        if (accept_op(p, "(")) {
            HS_TRY(parse_args(p, &n->d));
        }
        HS_TRY(expect_block_end(p));
        HS_TRY(parse_body(p, end, &n->b));
        HS_TRY(end_tag(p));
    } else if (is_name(t, "do")) {
        NEW(n, HS__J_DO, t);
        HS_TRY(parse_expr(p, &n->a));
        HS_TRY(expect_block_end(p));
    } else {
        char msg[96];
        snprintf(msg, sizeof(msg), "unknown or misplaced tag '%.40s'", t->s);
        return hs__jsyntax_error(p, t->off, msg);
    }
    *out = n;
    return HS_OK;
}

/* Parses statements until EOF (stops NULL) or a "{% word" with word in stops (left unread
 * after the '{%'). */
static hs_status parse_body(struct hs__jparser *p, const char *const *stops, struct hs__jnode **out)
{
    HS_TRY(enter(p));
    struct hs__jnode **tail = out;
    size_t open_off = p->pos > 0 ? p->toks[p->pos - 1].off : 0;
    for (;;) {
        struct hs__jtok *t = peek(p);
        struct hs__jnode *n = NULL;
        if (t->kind == HS__JT_EOF) {
            if (stops) {
                char msg[96];
                snprintf(msg, sizeof(msg), "unexpected end of template: missing '{%% %s %%}'",
                         stops[0]);
                for (const char *const *s = stops; *s; s++) {
                    if (strncmp(*s, "end", 3) == 0) {
                        snprintf(msg, sizeof(msg),
                                 "unexpected end of template: missing '{%% %s %%}'", *s);
                    }
                }
                return hs__jsyntax_error(p, open_off, msg);
            }
            break;
        }
        if (t->kind == HS__JT_TEXT) {
            NEW(n, HS__J_TEXT, t);
            n->lit = new_lit(p, hs_tmpl_string_n(t->s, t->len));
            if (!n->lit) {
                return HS_E_NOMEM;
            }
            advance(p);
        } else if (t->kind == HS__JT_VAR_BEGIN) {
            advance(p);
            NEW(n, HS__J_OUTPUT, t);
            HS_TRY(parse_expr(p, &n->a));
            if (peek(p)->kind != HS__JT_VAR_END) {
                return hs__jsyntax_error(p, peek(p)->off, "expected end of expression '}}'");
            }
            advance(p);
        } else if (t->kind == HS__JT_BLOCK_BEGIN) {
            struct hs__jtok *w = peek_at(p, 1);
            if (stops && w->kind == HS__JT_NAME) {
                for (const char *const *s = stops; *s; s++) {
                    if (strcmp(w->s, *s) == 0) {
                        advance(p);
                        p->depth--;
                        return HS_OK;
                    }
                }
            }
            advance(p);
            HS_TRY(parse_statement(p, &n));
        } else {
            return hs__jsyntax_error(p, t->off, "unexpected token");
        }
        *tail = n;
        tail = &n->next;
    }
    p->depth--;
    return HS_OK;
}

hs_status hs__jinja_parse(struct hs__jarena *ar, const char *src, size_t len,
                          struct hs__jnode **out, struct hs_error *err)
{
    *out = NULL;
    /* keep_trailing_newline=False */
    if (len > 0 && src[len - 1] == '\n') {
        len--;
        if (len > 0 && src[len - 1] == '\r') {
            len--;
        }
    }
    struct hs__jparser p = {
        .ar = ar, .src = src, .len = len, .lc_line = 1, .lc_col = 1, .err = err};
    hs_status st = hs__jinja_lex(&p);
    if (st == HS_OK) {
        st = parse_body(&p, NULL, out);
    }
    if (st == HS_E_NOMEM) {
        hs_error_set(err, st, "out of memory parsing template");
    }
    free(p.toks);
    return st;
}
