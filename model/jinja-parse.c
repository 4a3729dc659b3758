/* Chat-template lexer and parser: Jinja source -> syntax tree (model/jinja-impl.h).
 *
 * Whitespace follows Hugging Face's environment: trim_blocks (the first newline after a block or
 * comment tag is dropped), lstrip_blocks (spaces and tabs before a block or comment tag that
 * starts a line are dropped, unless the tag opens with "{%+"), "-" on a tag strips all
 * whitespace on that side, and one trailing newline of the template is dropped. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/jinja-impl.h"

#define MAX_DEPTH 96

/* ==== arena ==== */

struct hs__jchunk {
    struct hs__jchunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *hs__jarena_alloc(struct hs__jarena *ar, size_t n)
{
    n = hs_align_up(n ? n : 1, sizeof(max_align_t));
    struct hs__jchunk *c = ar->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        c = malloc(sizeof(*c) + cap);
        if (!c) {
            return NULL;
        }
        c->next = ar->chunks;
        c->used = 0;
        c->cap = cap;
        ar->chunks = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void hs__jarena_free(struct hs__jarena *ar)
{
    while (ar->chunks) {
        struct hs__jchunk *n = ar->chunks->next;
        free(ar->chunks);
        ar->chunks = n;
    }
    while (ar->lits) {
        struct hs_tmpl_value *n = ar->lits->pool_next;
        hs__tmpl_value_free(ar->lits);
        ar->lits = n;
    }
}

/* ==== lexer ==== */

enum tok_kind {
    T_TEXT,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_INT,
    T_FLOAT,
    T_STRING,
    T_OP,
    T_EOF,
};

struct tok {
    enum tok_kind kind;
    size_t off;
    int line, col;
    const char *s; /* TEXT, NAME, STRING: arena copy; OP: static spelling */
    size_t len;
    int64_t i;
    double f;
};

struct parser {
    struct hs__jarena *ar;
    const char *src;
    size_t len;
    struct tok *toks;
    size_t n_toks, cap_toks;
    size_t pos; /* parser cursor */
    int depth;
    /* line/col cursor: positions are computed moving forward */
    size_t lc_off;
    int lc_line, lc_col;
    struct hs_error *err;
};

static void line_col(struct parser *p, size_t off, int *line, int *col)
{
    if (off < p->lc_off) {
        p->lc_off = 0;
        p->lc_line = 1;
        p->lc_col = 1;
    }
    for (; p->lc_off < off && p->lc_off < p->len; p->lc_off++) {
        if (p->src[p->lc_off] == '\n') {
            p->lc_line++;
            p->lc_col = 1;
        } else if (((unsigned char)p->src[p->lc_off] & 0xC0) != 0x80) {
            p->lc_col++;
        }
    }
    *line = p->lc_line;
    *col = p->lc_col;
}

static hs_status syntax_error(struct parser *p, size_t off, const char *what)
{
    int line, col;
    line_col(p, off, &line, &col);
    hs_status st = hs_error_set(p->err, HS_E_FORMAT, "template syntax error at line %d, column %d: %s",
                                line, col, what);
    if (p->err) {
        p->err->offset = (int64_t)off;
    }
    return st;
}

static char *arena_strndup(struct hs__jarena *ar, const char *s, size_t n)
{
    char *d = hs__jarena_alloc(ar, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static struct tok *push_tok(struct parser *p, enum tok_kind kind, size_t off)
{
    if (p->n_toks == p->cap_toks) {
        size_t cap = p->cap_toks ? p->cap_toks * 2 : 256;
        struct tok *t = realloc(p->toks, cap * sizeof(*t));
        if (!t) {
            return NULL;
        }
        p->toks = t;
        p->cap_toks = cap;
    }
    struct tok *t = &p->toks[p->n_toks++];
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->off = off;
    line_col(p, off, &t->line, &t->col);
    return t;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_ident(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static size_t put_utf8(char *d, uint32_t cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads a quoted string at *i (the quote), decoding Python escapes. */
static hs_status lex_string(struct parser *p, size_t *i)
{
    size_t start = *i;
    char q = p->src[start];
    size_t j = start + 1;
    /* decoded text is never longer than the source */
    size_t end = j;
    while (end < p->len && p->src[end] != q) {
        end += p->src[end] == '\\' ? 2 : 1;
    }
    if (end >= p->len) {
        return syntax_error(p, start, "unterminated string literal");
    }
    char *d = hs__jarena_alloc(p->ar, end - j + 1);
    if (!d) {
        return HS_E_NOMEM;
    }
    size_t n = 0;
    while (j < end) {
        char c = p->src[j++];
        if (c != '\\') {
            d[n++] = c;
            continue;
        }
        char e = p->src[j++];
        int nhex = 0;
        switch (e) {
        case 'n': d[n++] = '\n'; break;
        case 't': d[n++] = '\t'; break;
        case 'r': d[n++] = '\r'; break;
        case 'b': d[n++] = '\b'; break;
        case 'f': d[n++] = '\f'; break;
        case 'v': d[n++] = '\v'; break;
        case 'a': d[n++] = '\a'; break;
        case '0': d[n++] = '\0'; break;
        case '\\': d[n++] = '\\'; break;
        case '\'': d[n++] = '\''; break;
        case '"': d[n++] = '"'; break;
        case '\n': break;
        case 'x': nhex = 2; break;
        case 'u': nhex = 4; break;
        case 'U': nhex = 8; break;
        default:
            d[n++] = '\\';
            d[n++] = e;
            break;
        }
        if (nhex) {
            uint32_t cp = 0;
            for (int k = 0; k < nhex; k++) {
                int h = j < end ? hexval(p->src[j]) : -1;
                if (h < 0) {
                    return syntax_error(p, j, "bad escape in string literal");
                }
                cp = cp * 16 + (uint32_t)h;
                j++;
            }
            if (cp > 0x10FFFF) {
                return syntax_error(p, j, "bad escape in string literal");
            }
            /* \x/\u escapes are at most 2 + nhex source bytes, >= their UTF-8 length */
            n += put_utf8(d + n, cp);
        }
    }
    d[n] = '\0';
    struct tok *t = push_tok(p, T_STRING, start);
    if (!t) {
        return HS_E_NOMEM;
    }
    t->s = d;
    t->len = n;
    *i = end + 1;
    return HS_OK;
}

static const char *const two_char_ops[] = {"==", "!=", "<=", ">=", "//", "**"};
static const char *const one_char_ops[] = {"+", "-", "*", "/", "%", "~", "<", ">", "=", "(",
                                           ")", "[", "]", "{", "}", ".", ",", ":", "|", "!"};

/* Tokenizes the inside of a {{ }} or {% %} tag from *i; stops after the closing delimiter.
 * *strip_after: the closing delimiter had "-". */
static hs_status lex_tag(struct parser *p, size_t *i, bool block, size_t open_off,
                         bool *strip_after)
{
    char close = block ? '%' : '}';
    int brackets = 0;
    size_t j = *i;
    for (;;) {
        while (j < p->len && is_space(p->src[j])) {
            j++;
        }
        if (j >= p->len) {
            return syntax_error(p, open_off, block ? "unclosed '{%' tag" : "unclosed '{{' tag");
        }
        const char *s = p->src + j;
        size_t rest = p->len - j;
        if (brackets == 0 || block) {
            if (rest >= 3 && s[0] == '-' && s[1] == close && s[2] == '}') {
                *strip_after = true;
                j += 3;
                break;
            }
            if (rest >= 2 && s[0] == close && s[1] == '}' && (brackets == 0 || block)) {
                *strip_after = false;
                j += 2;
                break;
            }
        }
        if (rest >= 2 && ((s[0] == '{' && (s[1] == '{' || s[1] == '%')) ||
                          (block && s[0] == '}' && s[1] == '}' && brackets == 0))) {
            return syntax_error(p, j, "unexpected tag delimiter inside a tag");
        }
        char c = s[0];
        if (c == '\'' || c == '"') {
            HS_TRY(lex_string(p, &j));
            continue;
        }
        if (is_ident(c, true)) {
            size_t k = j;
            while (k < p->len && is_ident(p->src[k], false)) {
                k++;
            }
            struct tok *t = push_tok(p, T_NAME, j);
            if (!t) {
                return HS_E_NOMEM;
            }
            t->s = arena_strndup(p->ar, s, k - j);
            if (!t->s) {
                return HS_E_NOMEM;
            }
            t->len = k - j;
            j = k;
            continue;
        }
        if (c >= '0' && c <= '9') {
            size_t k = j;
            bool is_float = false;
            while (k < p->len && p->src[k] >= '0' && p->src[k] <= '9') {
                k++;
            }
            if (k + 1 < p->len && p->src[k] == '.' && p->src[k + 1] >= '0' &&
                p->src[k + 1] <= '9') {
                is_float = true;
                k++;
                while (k < p->len && p->src[k] >= '0' && p->src[k] <= '9') {
                    k++;
                }
            }
            if (k < p->len && (p->src[k] == 'e' || p->src[k] == 'E')) {
                size_t m = k + 1;
                if (m < p->len && (p->src[m] == '+' || p->src[m] == '-')) {
                    m++;
                }
                if (m < p->len && p->src[m] >= '0' && p->src[m] <= '9') {
                    is_float = true;
                    k = m;
                    while (k < p->len && p->src[k] >= '0' && p->src[k] <= '9') {
                        k++;
                    }
                }
            }
            char num[64];
            if (k - j >= sizeof(num)) {
                return syntax_error(p, j, "number literal too long");
            }
            memcpy(num, s, k - j);
            num[k - j] = '\0';
            struct tok *t = push_tok(p, is_float ? T_FLOAT : T_INT, j);
            if (!t) {
                return HS_E_NOMEM;
            }
            errno = 0;
            if (is_float) {
                t->f = strtod(num, NULL);
            } else {
                long long v = strtoll(num, NULL, 10);
                if (errno == ERANGE) {
                    return syntax_error(p, j, "integer literal out of range");
                }
                t->i = v;
            }
            j = k;
            continue;
        }
        const char *op = NULL;
        for (size_t k = 0; k < HS_ARRAY_LEN(two_char_ops) && rest >= 2; k++) {
            if (s[0] == two_char_ops[k][0] && s[1] == two_char_ops[k][1]) {
                op = two_char_ops[k];
            }
        }
        for (size_t k = 0; k < HS_ARRAY_LEN(one_char_ops) && !op; k++) {
            if (s[0] == one_char_ops[k][0]) {
                op = one_char_ops[k];
            }
        }
        if (!op) {
            return syntax_error(p, j, "unexpected character in tag");
        }
        if (op[0] == '(' || op[0] == '[' || op[0] == '{') {
            brackets++;
        } else if ((op[0] == ')' || op[0] == ']' || op[0] == '}') && brackets > 0) {
            brackets--;
        }
        struct tok *t = push_tok(p, T_OP, j);
        if (!t) {
            return HS_E_NOMEM;
        }
        t->s = op;
        t->len = strlen(op);
        j += t->len;
    }
    *i = j;
    return HS_OK;
}

/* At j (just inside "{%" and its modifier): "raw" then "%}"? Sets *after past the tag. */
static bool match_word_tag(const struct parser *p, size_t j, const char *word, size_t *after,
                           bool *strip)
{
    while (j < p->len && is_space(p->src[j])) {
        j++;
    }
    size_t n = strlen(word);
    if (j + n > p->len || memcmp(p->src + j, word, n) != 0 ||
        (j + n < p->len && is_ident(p->src[j + n], false))) {
        return false;
    }
    j += n;
    while (j < p->len && is_space(p->src[j])) {
        j++;
    }
    *strip = false;
    if (j < p->len && p->src[j] == '-') {
        *strip = true;
        j++;
    }
    if (j + 2 > p->len || p->src[j] != '%' || p->src[j + 1] != '}') {
        return false;
    }
    *after = j + 2;
    return true;
}

/* {% raw %}...{% endraw %}: the body is text. Returns the offset after the closing tag. */
static hs_status lex_raw(struct parser *p, size_t open_off, size_t body, bool strip_open,
                         size_t *after, bool *strip_after)
{
    size_t bs = body;
    if (strip_open) {
        while (bs < p->len && is_space(p->src[bs])) {
            bs++;
        }
    } else if (bs < p->len && p->src[bs] == '\n') {
        bs++; /* trim_blocks */
    }
    for (size_t k = body; k + 1 < p->len; k++) {
        if (p->src[k] != '{' || p->src[k + 1] != '%') {
            continue;
        }
        char mod = k + 2 < p->len ? p->src[k + 2] : 0;
        size_t j = k + 2 + (mod == '-' || mod == '+' ? 1 : 0);
        if (!match_word_tag(p, j, "endraw", after, strip_after)) {
            continue;
        }
        size_t te = k;
        if (mod == '-') {
            while (te > bs && is_space(p->src[te - 1])) {
                te--;
            }
        }
        if (te > bs) {
            struct tok *t = push_tok(p, T_TEXT, bs);
            if (!t) {
                return HS_E_NOMEM;
            }
            t->s = p->src + bs;
            t->len = te - bs;
        }
        return HS_OK;
    }
    return syntax_error(p, open_off, "unexpected end of template: missing '{% endraw %}'");
}

static hs_status lex(struct parser *p)
{
    size_t i = 0;
    int strip_next = 0; /* 1: strip all leading whitespace; 2: drop one leading newline */
    while (i <= p->len) {
        size_t k = i;
        while (k + 1 < p->len &&
               !(p->src[k] == '{' && (p->src[k + 1] == '{' || p->src[k + 1] == '%' ||
                                      p->src[k + 1] == '#'))) {
            k++;
        }
        bool found = k + 1 < p->len;
        size_t text_end = found ? k : p->len;
        size_t ts = i, te = text_end;
        if (strip_next == 1) {
            while (ts < te && is_space(p->src[ts])) {
                ts++;
            }
        } else if (strip_next == 2) {
            if (ts < te && p->src[ts] == '\n') {
                ts++;
            } else if (ts + 1 < te && p->src[ts] == '\r' && p->src[ts + 1] == '\n') {
                ts += 2;
            }
        }
        char kind = found ? p->src[k + 1] : 0;
        char mod = found && k + 2 < p->len ? p->src[k + 2] : 0;
        if (found && mod == '-') {
            while (te > ts && is_space(p->src[te - 1])) {
                te--;
            }
        } else if (found && (kind == '%' || kind == '#') && mod != '+') {
            size_t b = text_end;
            while (b > 0 && (p->src[b - 1] == ' ' || p->src[b - 1] == '\t')) {
                b--;
            }
            if (b == 0 || p->src[b - 1] == '\n') {
                te = b > ts ? b : ts;
            }
        }
        if (te > ts) {
            struct tok *t = push_tok(p, T_TEXT, ts);
            if (!t) {
                return HS_E_NOMEM;
            }
            t->s = p->src + ts; /* the template keeps its source */
            t->len = te - ts;
        }
        if (!found) {
            break;
        }
        size_t j = k + 2 + (mod == '-' || mod == '+' ? 1 : 0);
        if (kind == '#') {
            const char *e = NULL;
            for (size_t m = j; m + 1 < p->len; m++) {
                if (p->src[m] == '#' && p->src[m + 1] == '}') {
                    e = p->src + m;
                    break;
                }
            }
            if (!e) {
                return syntax_error(p, k, "unclosed comment");
            }
            size_t m = (size_t)(e - p->src);
            strip_next = m > j && p->src[m - 1] == '-' ? 1 : 2;
            i = m + 2;
            continue;
        }
        bool block = kind == '%';
        size_t raw_body;
        bool raw_strip;
        if (block && match_word_tag(p, j, "raw", &raw_body, &raw_strip)) {
            bool strip_after = false;
            HS_TRY(lex_raw(p, k, raw_body, raw_strip, &i, &strip_after));
            strip_next = strip_after ? 1 : 2;
            continue;
        }
        if (!push_tok(p, block ? T_BLOCK_BEGIN : T_VAR_BEGIN, k)) {
            return HS_E_NOMEM;
        }
        bool strip_after = false;
        HS_TRY(lex_tag(p, &j, block, k, &strip_after));
        if (!push_tok(p, block ? T_BLOCK_END : T_VAR_END, j - 2)) {
            return HS_E_NOMEM;
        }
        strip_next = strip_after ? 1 : block ? 2 : 0;
        i = j;
    }
    return push_tok(p, T_EOF, p->len) ? HS_OK : HS_E_NOMEM;
}

/* ==== parser ==== */

static struct tok *peek(struct parser *p)
{
    return &p->toks[p->pos];
}

static struct tok *peek_at(struct parser *p, size_t ahead)
{
    size_t i = p->pos + ahead;
    return &p->toks[i < p->n_toks ? i : p->n_toks - 1];
}

static void advance(struct parser *p)
{
    if (p->toks[p->pos].kind != T_EOF) {
        p->pos++;
    }
}

static bool is_op(const struct tok *t, const char *op)
{
    return t->kind == T_OP && strcmp(t->s, op) == 0;
}

static bool is_name(const struct tok *t, const char *name)
{
    return t->kind == T_NAME && strcmp(t->s, name) == 0;
}

static bool accept_op(struct parser *p, const char *op)
{
    if (is_op(peek(p), op)) {
        advance(p);
        return true;
    }
    return false;
}

static bool accept_name(struct parser *p, const char *name)
{
    if (is_name(peek(p), name)) {
        advance(p);
        return true;
    }
    return false;
}

static hs_status expect_op(struct parser *p, const char *op)
{
    if (accept_op(p, op)) {
        return HS_OK;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "expected '%s'", op);
    return syntax_error(p, peek(p)->off, msg);
}

static struct hs__jnode *new_node(struct parser *p, enum hs__jnode_kind kind, const struct tok *at)
{
    struct hs__jnode *n = hs__jarena_alloc(p->ar, sizeof(*n));
    if (n) {
        n->kind = kind;
        n->line = at->line;
        n->col = at->col;
    }
    return n;
}

static struct hs_tmpl_value *new_lit(struct parser *p, struct hs_tmpl_value *v)
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

static hs_status parse_expr(struct parser *p, struct hs__jnode **out);
static hs_status parse_or(struct parser *p, struct hs__jnode **out);
static hs_status parse_unary(struct parser *p, struct hs__jnode **out, bool with_filter);
static hs_status parse_primary(struct parser *p, struct hs__jnode **out);

static hs_status enter(struct parser *p)
{
    if (++p->depth > MAX_DEPTH) {
        return syntax_error(p, peek(p)->off, "nesting too deep");
    }
    return HS_OK;
}

/* '(' already consumed: arguments up to ')'. */
static hs_status parse_args(struct parser *p, struct hs__jnode **out)
{
    struct hs__jnode **tail = out;
    while (!accept_op(p, ")")) {
        struct hs__jnode *arg;
        struct tok *t = peek(p);
        if (t->kind == T_NAME && is_op(peek_at(p, 1), "=")) {
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

static hs_status parse_postfix(struct parser *p, struct hs__jnode **node)
{
    for (;;) {
        struct tok *t = peek(p);
        struct hs__jnode *n;
        if (is_op(t, ".")) {
            advance(p);
            struct tok *name = peek(p);
            if (name->kind != T_NAME && name->kind != T_INT) {
                return syntax_error(p, name->off, "expected attribute name after '.'");
            }
            if (name->kind == T_INT) {
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
                struct tok *u = peek(p);
                if (is_op(u, "]")) {
                    break;
                }
                if (is_op(u, ":")) {
                    if (++n_colons > 2) {
                        return syntax_error(p, u->off, "too many ':' in slice");
                    }
                    advance(p);
                    continue;
                }
                if (parts[n_colons]) {
                    return syntax_error(p, u->off, "expected ']'");
                }
                HS_TRY(parse_expr(p, &parts[n_colons]));
            }
            HS_TRY(expect_op(p, "]"));
            if (n_colons == 0) {
                if (!parts[0]) {
                    return syntax_error(p, t->off, "empty subscript");
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

static hs_status parse_filters(struct parser *p, struct hs__jnode **node)
{
    for (;;) {
        struct tok *t = peek(p);
        struct hs__jnode *n;
        if (is_op(t, "|")) {
            advance(p);
            struct tok *name = peek(p);
            if (name->kind != T_NAME) {
                return syntax_error(p, name->off, "expected filter name after '|'");
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
            struct tok *name = peek(p);
            if (name->kind != T_NAME) {
                return syntax_error(p, name->off, "expected test name after 'is'");
            }
            advance(p);
            n->name = name->s;
            n->a = *node;
            struct tok *u = peek(p);
            if (accept_op(p, "(")) {
                HS_TRY(parse_args(p, &n->b));
            } else if (u->kind == T_STRING || u->kind == T_INT || u->kind == T_FLOAT ||
                       is_name(u, "none") || is_name(u, "None") || is_name(u, "true") ||
                       is_name(u, "false") || is_name(u, "True") || is_name(u, "False")) {
                HS_TRY(parse_primary(p, &n->b));
            }
            *node = n;
        } else {
            return HS_OK;
        }
    }
}

static hs_status parse_primary(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(enter(p));
    struct tok *t = peek(p);
    struct hs__jnode *n = NULL;
    switch (t->kind) {
    case T_STRING: {
        /* adjacent literals concatenate */
        size_t total = 0, k = p->pos;
        for (; p->toks[k].kind == T_STRING; k++) {
            total += p->toks[k].len;
        }
        char *s = malloc(total + 1);
        if (!s) {
            return HS_E_NOMEM;
        }
        size_t o = 0;
        for (; peek(p)->kind == T_STRING; advance(p)) {
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
    case T_INT:
    case T_FLOAT:
        NEW(n, HS__J_LITERAL, t);
        n->lit = new_lit(p, t->kind == T_INT ? hs_tmpl_int(t->i) : hs_tmpl_float(t->f));
        if (!n->lit) {
            return HS_E_NOMEM;
        }
        advance(p);
        break;
    case T_NAME:
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
    case T_OP:
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
                struct tok *u = peek(p);
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
            return syntax_error(p, t->off, "unexpected operator in expression");
        }
        break;
    default:
        return syntax_error(p, t->off, "expected an expression");
    }
    p->depth--;
    *out = n;
    return HS_OK;
}

/* As Jinja: "-x | f" is "(-x) | f"; filters bind after the sign. */
static hs_status parse_unary(struct parser *p, struct hs__jnode **out, bool with_filter)
{
    HS_TRY(enter(p));
    struct tok *t = peek(p);
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

static hs_status binary(struct parser *p, struct hs__jnode **out, const struct tok *at, int op,
                        struct hs__jnode *a, struct hs__jnode *b)
{
    struct hs__jnode *n;
    NEW(n, HS__J_BINARY, at);
    n->op = op;
    n->a = a;
    n->b = b;
    *out = n;
    return HS_OK;
}

static hs_status parse_pow(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(parse_unary(p, out, true));
    while (is_op(peek(p), "**")) {
        struct tok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_unary(p, &r, true));
        HS_TRY(binary(p, out, t, HS__OP_POW, *out, r));
    }
    return HS_OK;
}

static hs_status parse_math2(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(parse_pow(p, out));
    for (;;) {
        struct tok *t = peek(p);
        int op = is_op(t, "*") ? HS__OP_MUL : is_op(t, "/") ? HS__OP_DIV
                                          : is_op(t, "//") ? HS__OP_FLOORDIV
                                          : is_op(t, "%") ? HS__OP_MOD : -1;
        if (op < 0) {
            return HS_OK;
        }
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_pow(p, &r));
        HS_TRY(binary(p, out, t, op, *out, r));
    }
}

static hs_status parse_concat(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(parse_math2(p, out));
    while (is_op(peek(p), "~")) {
        struct tok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_math2(p, &r));
        HS_TRY(binary(p, out, t, HS__OP_CONCAT, *out, r));
    }
    return HS_OK;
}

static hs_status parse_math1(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(parse_concat(p, out));
    for (;;) {
        struct tok *t = peek(p);
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

static hs_status parse_compare(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(parse_math1(p, out));
    for (;;) {
        struct tok *t = peek(p);
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

static hs_status parse_not(struct parser *p, struct hs__jnode **out)
{
    struct tok *t = peek(p);
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

static hs_status parse_and(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(parse_not(p, out));
    while (is_name(peek(p), "and")) {
        struct tok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_not(p, &r));
        HS_TRY(binary(p, out, t, HS__OP_AND, *out, r));
    }
    return HS_OK;
}

static hs_status parse_or(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(parse_and(p, out));
    while (is_name(peek(p), "or")) {
        struct tok *t = peek(p);
        advance(p);
        struct hs__jnode *r;
        HS_TRY(parse_and(p, &r));
        HS_TRY(binary(p, out, t, HS__OP_OR, *out, r));
    }
    return HS_OK;
}

static hs_status parse_expr(struct parser *p, struct hs__jnode **out)
{
    HS_TRY(enter(p));
    HS_TRY(parse_or(p, out));
    while (is_name(peek(p), "if")) {
        struct tok *t = peek(p);
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

static hs_status parse_body(struct parser *p, const char *const *stops, struct hs__jnode **out);

static hs_status expect_block_end(struct parser *p)
{
    if (peek(p)->kind == T_BLOCK_END) {
        advance(p);
        return HS_OK;
    }
    return syntax_error(p, peek(p)->off, "expected end of tag '%}'");
}

/* After parse_body stopped at "{% word": consumes "word" (and an optional name) and "%}". */
static hs_status end_tag(struct parser *p)
{
    advance(p); /* the word */
    if (peek(p)->kind == T_NAME) {
        advance(p); /* {% endmacro name %} */
    }
    return expect_block_end(p);
}

static hs_status parse_targets(struct parser *p, struct hs__jnode **out)
{
    struct hs__jnode **tail = out;
    bool paren = accept_op(p, "(");
    do {
        struct tok *t = peek(p);
        if (t->kind != T_NAME) {
            return syntax_error(p, t->off, "expected a variable name");
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
static hs_status parse_params(struct parser *p, struct hs__jnode **out)
{
    struct hs__jnode **tail = out;
    while (!accept_op(p, ")")) {
        struct tok *t = peek(p);
        if (t->kind != T_NAME) {
            return syntax_error(p, t->off, "expected a parameter name");
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

static hs_status parse_if(struct parser *p, const struct tok *at, struct hs__jnode **out)
{
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    struct hs__jnode *n;
    NEW(n, HS__J_IF, at);
    HS_TRY(parse_expr(p, &n->a));
    HS_TRY(expect_block_end(p));
    HS_TRY(parse_body(p, stops, &n->b));
    struct tok *w = peek(p);
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

static hs_status parse_statement(struct parser *p, struct hs__jnode **out)
{
    struct tok *t = peek(p);
    if (t->kind != T_NAME) {
        return syntax_error(p, t->off, "expected a statement name");
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
            return syntax_error(p, peek(p)->off, "expected 'in' in for loop");
        }
        HS_TRY(parse_or(p, &n->a));
        if (accept_name(p, "if")) {
            HS_TRY(parse_expr(p, &n->c));
        }
        if (is_name(peek(p), "recursive")) {
            return syntax_error(p, peek(p)->off, "recursive loops are not supported");
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
        struct tok *name = peek(p);
        if (name->kind != T_NAME) {
            return syntax_error(p, name->off, "expected a variable name after 'set'");
        }
        if (is_op(peek_at(p, 1), ".")) {
            struct tok *attr = peek_at(p, 2);
            if (attr->kind != T_NAME) {
                return syntax_error(p, attr->off, "expected attribute name");
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
                return syntax_error(p, peek(p)->off, "expected '='");
            }
            HS_TRY(expect_block_end(p));
            HS_TRY(parse_body(p, end, &n->c));
            HS_TRY(end_tag(p));
        }
    } else if (is_name(t, "macro")) {
        static const char *const end[] = {"endmacro", NULL};
        NEW(n, HS__J_MACRO, t);
        struct tok *name = peek(p);
        if (name->kind != T_NAME) {
            return syntax_error(p, name->off, "expected a macro name");
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
            return syntax_error(p, t->off, "expected a macro call after 'call'");
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
        struct tok *name = peek(p);
        if (name->kind != T_NAME) {
            return syntax_error(p, name->off, "expected a filter name");
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
        return syntax_error(p, t->off, msg);
    }
    *out = n;
    return HS_OK;
}

/* Parses statements until EOF (stops NULL) or a "{% word" with word in stops (left unread
 * after the '{%'). */
static hs_status parse_body(struct parser *p, const char *const *stops, struct hs__jnode **out)
{
    HS_TRY(enter(p));
    struct hs__jnode **tail = out;
    size_t open_off = p->pos > 0 ? p->toks[p->pos - 1].off : 0;
    for (;;) {
        struct tok *t = peek(p);
        struct hs__jnode *n = NULL;
        if (t->kind == T_EOF) {
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
                return syntax_error(p, open_off, msg);
            }
            break;
        }
        if (t->kind == T_TEXT) {
            NEW(n, HS__J_TEXT, t);
            n->lit = new_lit(p, hs_tmpl_string_n(t->s, t->len));
            if (!n->lit) {
                return HS_E_NOMEM;
            }
            advance(p);
        } else if (t->kind == T_VAR_BEGIN) {
            advance(p);
            NEW(n, HS__J_OUTPUT, t);
            HS_TRY(parse_expr(p, &n->a));
            if (peek(p)->kind != T_VAR_END) {
                return syntax_error(p, peek(p)->off, "expected end of expression '}}'");
            }
            advance(p);
        } else if (t->kind == T_BLOCK_BEGIN) {
            struct tok *w = peek_at(p, 1);
            if (stops && w->kind == T_NAME) {
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
            return syntax_error(p, t->off, "unexpected token");
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
    struct parser p = {.ar = ar, .src = src, .len = len, .lc_line = 1, .lc_col = 1, .err = err};
    hs_status st = lex(&p);
    if (st == HS_OK) {
        st = parse_body(&p, NULL, out);
    }
    if (st == HS_E_NOMEM) {
        hs_error_set(err, st, "out of memory parsing template");
    }
    free(p.toks);
    return st;
}
