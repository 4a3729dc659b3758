/* Chat-template lexer: Jinja source -> tokens (text, tag delimiters, names, literals,
 * operators), and the template arena.
 *
 * Whitespace follows Hugging Face's environment: trim_blocks (the first newline after a block or
 * comment tag is dropped), lstrip_blocks (spaces and tabs before a block or comment tag that
 * starts a line are dropped, unless the tag opens with "{%+"), "-" on a tag strips all
 * whitespace on that side, and one trailing newline of the template is dropped (by the
 * parser's entry point). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat/jinja-impl.h"

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

static void line_col(struct hs__jparser *p, size_t off, int *line, int *col)
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

hs_status hs__jsyntax_error(struct hs__jparser *p, size_t off, const char *what)
{
    int line, col;
    line_col(p, off, &line, &col);
    hs_status st = hs_error_set(p->err, HS_E_FORMAT,
                                "template syntax error at line %d, column %d: %s", line, col, what);
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

static struct hs__jtok *push_tok(struct hs__jparser *p, enum hs__jtok_kind kind, size_t off)
{
    if (p->n_toks == p->cap_toks) {
        size_t cap = p->cap_toks ? p->cap_toks * 2 : 256;
        struct hs__jtok *t = realloc(p->toks, cap * sizeof(*t));
        if (!t) {
            return NULL;
        }
        p->toks = t;
        p->cap_toks = cap;
    }
    struct hs__jtok *t = &p->toks[p->n_toks++];
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
static hs_status lex_string(struct hs__jparser *p, size_t *i)
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
        return hs__jsyntax_error(p, start, "unterminated string literal");
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
        case 'n':
            d[n++] = '\n';
            break;
        case 't':
            d[n++] = '\t';
            break;
        case 'r':
            d[n++] = '\r';
            break;
        case 'b':
            d[n++] = '\b';
            break;
        case 'f':
            d[n++] = '\f';
            break;
        case 'v':
            d[n++] = '\v';
            break;
        case 'a':
            d[n++] = '\a';
            break;
        case '0':
            d[n++] = '\0';
            break;
        case '\\':
            d[n++] = '\\';
            break;
        case '\'':
            d[n++] = '\'';
            break;
        case '"':
            d[n++] = '"';
            break;
        case '\n':
            break;
        case 'x':
            nhex = 2;
            break;
        case 'u':
            nhex = 4;
            break;
        case 'U':
            nhex = 8;
            break;
        default:
            d[n++] = '\\';
            d[n++] = e;
            break;
        }
        if (nhex) {
            uint32_t cp = 0;
            for (int k = 0; k < nhex; k++) {
                int h = j < end ? hs_hex_digit(p->src[j]) : -1;
                if (h < 0) {
                    return hs__jsyntax_error(p, j, "bad escape in string literal");
                }
                cp = cp * 16 + (uint32_t)h;
                j++;
            }
            if (cp > 0x10FFFF) {
                return hs__jsyntax_error(p, j, "bad escape in string literal");
            }
            /* \x/\u escapes are at most 2 + nhex source bytes, >= their UTF-8 length */
            n += put_utf8(d + n, cp);
        }
    }
    d[n] = '\0';
    struct hs__jtok *t = push_tok(p, HS__JT_STRING, start);
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
static hs_status lex_tag(struct hs__jparser *p, size_t *i, bool block, size_t open_off,
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
            return hs__jsyntax_error(p, open_off,
                                     block ? "unclosed '{%' tag" : "unclosed '{{' tag");
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
            return hs__jsyntax_error(p, j, "unexpected tag delimiter inside a tag");
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
            struct hs__jtok *t = push_tok(p, HS__JT_NAME, j);
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
                return hs__jsyntax_error(p, j, "number literal too long");
            }
            memcpy(num, s, k - j);
            num[k - j] = '\0';
            struct hs__jtok *t = push_tok(p, is_float ? HS__JT_FLOAT : HS__JT_INT, j);
            if (!t) {
                return HS_E_NOMEM;
            }
            errno = 0;
            if (is_float) {
                t->f = strtod(num, NULL);
            } else {
                long long v = strtoll(num, NULL, 10);
                if (errno == ERANGE) {
                    return hs__jsyntax_error(p, j, "integer literal out of range");
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
            return hs__jsyntax_error(p, j, "unexpected character in tag");
        }
        if (op[0] == '(' || op[0] == '[' || op[0] == '{') {
            brackets++;
        } else if ((op[0] == ')' || op[0] == ']' || op[0] == '}') && brackets > 0) {
            brackets--;
        }
        struct hs__jtok *t = push_tok(p, HS__JT_OP, j);
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
static bool match_word_tag(const struct hs__jparser *p, size_t j, const char *word, size_t *after,
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
static hs_status lex_raw(struct hs__jparser *p, size_t open_off, size_t body, bool strip_open,
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
            struct hs__jtok *t = push_tok(p, HS__JT_TEXT, bs);
            if (!t) {
                return HS_E_NOMEM;
            }
            t->s = p->src + bs;
            t->len = te - bs;
        }
        return HS_OK;
    }
    return hs__jsyntax_error(p, open_off, "unexpected end of template: missing '{% endraw %}'");
}

hs_status hs__jinja_lex(struct hs__jparser *p)
{
    size_t i = 0;
    int strip_next = 0; /* 1: strip all leading whitespace; 2: drop one leading newline */
    while (i <= p->len) {
        size_t k = i;
        while (k + 1 < p->len &&
               !(p->src[k] == '{' &&
                 (p->src[k + 1] == '{' || p->src[k + 1] == '%' || p->src[k + 1] == '#'))) {
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
            struct hs__jtok *t = push_tok(p, HS__JT_TEXT, ts);
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
                return hs__jsyntax_error(p, k, "unclosed comment");
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
        if (!push_tok(p, block ? HS__JT_BLOCK_BEGIN : HS__JT_VAR_BEGIN, k)) {
            return HS_E_NOMEM;
        }
        bool strip_after = false;
        HS_TRY(lex_tag(p, &j, block, k, &strip_after));
        if (!push_tok(p, block ? HS__JT_BLOCK_END : HS__JT_VAR_END, j - 2)) {
            return HS_E_NOMEM;
        }
        strip_next = strip_after ? 1 : block ? 2 : 0;
        i = j;
    }
    return push_tok(p, HS__JT_EOF, p->len) ? HS_OK : HS_E_NOMEM;
}
