/* The GBNF parser (errors, limits, left recursion) and the matcher (JSON values, nesting, unicode,
 * escapes), checked against a naive set-of-stacks reference kept here (llama.cpp's algorithm,
 * without hash-consing or memoisation). Token masks are in test-grammar-mask.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/grammar-impl.h"
#include "server/grammar.h"

/* ---- helpers ---- */

static struct hs_grammar *compile(const char *text)
{
    struct hs_grammar *g = NULL;
    struct hs_error err = {0};
    hs_status st = hs_grammar_parse(text, strlen(text), NULL, NULL, &g, &err);
    cr_assert_eq(st, HS_OK, "grammar failed: %s\n%s", err.message, text);
    return g;
}

/* The parse error for text: its status, and err.message must contain want. */
static void expect_error(const char *text, hs_status want_st, const char *want)
{
    struct hs_grammar *g = NULL;
    struct hs_error err = {0};
    hs_status st = hs_grammar_parse(text, strlen(text), NULL, NULL, &g, &err);
    cr_assert_eq(st, want_st, "grammar %s: got %s (%s), want %s", text, hs_status_name(st),
                 err.message, hs_status_name(want_st));
    cr_assert_null(g);
    cr_assert(strstr(err.message, want) != NULL, "grammar %s: message '%s' lacks '%s'", text,
              err.message, want);
}

struct m {
    struct hs_grammar *g;
    struct hs_grammar_cache *c;
};

static struct m matcher_env(const char *text, const struct hs_grammar_cache_params *p)
{
    struct m e = {compile(text), NULL};
    cr_assert_eq(hs_grammar_cache_create(e.g, NULL, p, &e.c), HS_OK);
    return e;
}

static void env_free(struct m *e)
{
    hs_grammar_cache_destroy(e->c);
    hs_grammar_destroy(e->g);
}

/* 1: s is a complete sentence; 0: a viable prefix only; -1: rejected. */
static int match(struct hs_grammar_cache *c, const char *s, size_t n)
{
    struct hs_grammar_matcher *m = NULL;
    cr_assert_eq(hs_grammar_matcher_create(c, &m), HS_OK);
    hs_status st = hs_grammar_matcher_accept_bytes(m, s, n);
    cr_assert(st == HS_OK || st == HS_E_INVAL, "accept: %s", hs_status_name(st));
    int r = st != HS_OK ? -1 : hs_grammar_matcher_can_complete(m) ? 1 : 0;
    hs_grammar_matcher_destroy(m);
    return r;
}

static const char *json_gbnf =
    "root   ::= value\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" "
    "[0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9]{1,4})? ws\n"
    "ws     ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

/* ---- the naive reference: stacks as arrays of element positions ---- */

struct rstack {
    uint32_t *pos; /* bottom .. top */
    uint32_t n;
};

struct rset {
    struct rstack *s;
    size_t n, cap;
};

static bool rstack_eq(const struct rstack *a, const struct rstack *b)
{
    return a->n == b->n && memcmp(a->pos, b->pos, a->n * sizeof(*a->pos)) == 0;
}

static bool rset_has(const struct rset *r, const struct rstack *s)
{
    for (size_t i = 0; i < r->n; i++) {
        if (rstack_eq(&r->s[i], s)) {
            return true;
        }
    }
    return false;
}

static void rset_add(struct rset *r, const struct rstack *s)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->s = realloc(r->s, r->cap * sizeof(*r->s));
    }
    struct rstack c = {malloc((s->n + 1) * sizeof(uint32_t)), s->n};
    memcpy(c.pos, s->pos, s->n * sizeof(uint32_t));
    r->s[r->n++] = c;
}

static void rset_free(struct rset *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->s[i].pos);
    }
    free(r->s);
    memset(r, 0, sizeof(*r));
}

/* llama.cpp's advance_stack: pushes to out the stacks with a terminal (or nothing) on top. seen
 * stops the re-expansion of a stack already expanded (nullable loops). */
static void ref_expand(const struct hs_grammar *g, const struct rstack *s, struct rset *out,
                       struct rset *seen)
{
    if (rset_has(seen, s)) {
        return;
    }
    rset_add(seen, s);
    if (s->n == 0 || g->elems[s->pos[s->n - 1]].type == HS__GE_CLASS) {
        if (!rset_has(out, s)) {
            rset_add(out, s);
        }
        return;
    }
    uint32_t pos = s->pos[s->n - 1];
    const struct hs__grule *r = &g->rules[g->elems[pos].value];
    for (uint32_t a = 0; a < r->n_alts; a++) {
        uint32_t start = g->alts[r->first_alt + a];
        struct rstack n = {malloc((s->n + 2) * sizeof(uint32_t)), 0};
        memcpy(n.pos, s->pos, (s->n - 1) * sizeof(uint32_t));
        n.n = s->n - 1;
        if (g->elems[pos + 1].type != HS__GE_END) {
            n.pos[n.n++] = pos + 1;
        }
        if (g->elems[start].type != HS__GE_END) {
            n.pos[n.n++] = start;
        }
        ref_expand(g, &n, out, seen);
        free(n.pos);
    }
}

static struct rset ref_start(const struct hs_grammar *g)
{
    struct rset out = {0}, seen = {0};
    const struct hs__grule *r = &g->rules[g->root];
    for (uint32_t a = 0; a < r->n_alts; a++) {
        uint32_t start = g->alts[r->first_alt + a];
        struct rstack s = {&start, g->elems[start].type == HS__GE_END ? 0u : 1u};
        ref_expand(g, &s, &out, &seen);
    }
    rset_free(&seen);
    return out;
}

static struct rset ref_advance(const struct hs_grammar *g, const struct rset *in, uint32_t cp)
{
    struct rset out = {0}, seen = {0};
    for (size_t i = 0; i < in->n; i++) {
        const struct rstack *s = &in->s[i];
        if (s->n == 0) {
            continue;
        }
        uint32_t pos = s->pos[s->n - 1];
        if (!hs__gclass_match(g, g->elems[pos].value, cp)) {
            continue;
        }
        struct rstack n = {malloc((s->n + 1) * sizeof(uint32_t)), s->n};
        memcpy(n.pos, s->pos, s->n * sizeof(uint32_t));
        if (g->elems[pos + 1].type == HS__GE_END) {
            n.n--;
        } else {
            n.pos[n.n - 1] = pos + 1;
        }
        ref_expand(g, &n, &out, &seen);
        free(n.pos);
    }
    rset_free(&seen);
    return out;
}

/* The reference's verdict on s (valid UTF-8): 1 complete, 0 viable, -1 rejected. */
static int ref_match(const struct hs_grammar *g, const char *s, size_t n)
{
    struct rset cur = ref_start(g);
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = hs__utf8_next((const uint8_t *)s + i, n - i, &cp);
        cr_assert_gt(k, 0);
        i += k;
        struct rset next = ref_advance(g, &cur, cp);
        rset_free(&cur);
        cur = next;
        if (cur.n == 0) {
            rset_free(&cur);
            return -1;
        }
    }
    int r = 0;
    for (size_t j = 0; j < cur.n; j++) {
        if (cur.s[j].n == 0) {
            r = 1;
        }
    }
    rset_free(&cur);
    return r;
}

/* ---- parsing ---- */

Test(grammar, parses_the_gbnf_syntax)
{
    const char *text = "# a comment line\n"
                       "root ::= greeting (\" \" name)+ end? tail{2} pad{0,3} more{1,} # trailing\n"
                       "greeting ::= \"hi\" | \"hello\" | \"\\x48\\u00e9\\U0001F600\"\n"
                       "name ::= [A-Z] [a-z_\\-]* | [^\\n\\]] .\n"
                       "end ::= (\n"
                       "    \"!\" |\n"
                       "    \"?\"   # nested groups may span lines\n"
                       ")\n"
                       "tail ::= \"\\t\"\n"
                       "pad ::= \" \"\n"
                       "more ::= \"\\\\\" | \"\\\"\" | \"\\[\" | \"\\]\" | \"\\r\\n\" \n"
                       "unused_rule-2 ::= \"\"\n";
    struct hs_grammar *g = compile(text);
    cr_assert_gt(hs_grammar_n_rules(g), 8);
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, NULL, NULL, &c), HS_OK);
    const char *ok[] = {"hi Bob\t\t\\", "hello Al Cy!\t\t   \"\\",
                        "H\xc3\xa9\xf0\x9f\x98\x80 xy\t\t[]",
                        "hi \xe4\xb8\xad\xe6\x96\x87\t\t\r\n"};
    for (size_t i = 0; i < HS_ARRAY_LEN(ok); i++) {
        cr_assert_eq(match(c, ok[i], strlen(ok[i])), 1, "%s", ok[i]);
    }
    const char *bad[] = {"hi bob\t\t\\", "hi Bob\t\\", "hi Bob\t\t    \\", "hey", "hi \n"};
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        cr_assert_neq(match(c, bad[i], strlen(bad[i])), 1, "%s", bad[i]);
    }
    /* the dump is GBNF that compiles to the same language */
    size_t need = hs__grammar_dump(g, NULL, 0);
    char *dump = malloc(need + 1);
    hs__grammar_dump(g, dump, need + 1);
    struct hs_grammar *g2 = compile(dump);
    struct hs_grammar_cache *c2 = NULL;
    cr_assert_eq(hs_grammar_cache_create(g2, NULL, NULL, &c2), HS_OK);
    for (size_t i = 0; i < HS_ARRAY_LEN(ok); i++) {
        cr_assert_eq(match(c2, ok[i], strlen(ok[i])), 1);
    }
    hs_grammar_cache_destroy(c2);
    hs_grammar_destroy(g2);
    free(dump);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
}

Test(grammar, reports_syntax_errors_with_line_and_column)
{
    expect_error("root ::= \"a\"\nroot ::= \"b\"\n", HS_E_FORMAT,
                 "2:1: rule 'root' is defined twice (first at 1:1)");
    expect_error("root ::= foo\n", HS_E_FORMAT, "1:10: undefined rule 'foo'");
    expect_error("main ::= \"x\"\n", HS_E_FORMAT, "no rule 'root' (the start rule)");
    expect_error("root := \"x\"\n", HS_E_FORMAT, "1:6: expected '::=' after rule name 'root'");
    expect_error("root ::= \"abc\n", HS_E_FORMAT, "1:10: unterminated string literal");
    expect_error("root ::= [abc\n", HS_E_FORMAT, "1:10: unterminated character class");
    expect_error("root ::= []\n", HS_E_FORMAT, "empty character class");
    expect_error("root ::= [z-a]\n", HS_E_FORMAT, "1:11: character range is backwards");
    expect_error("root ::= (\"a\" | \"b\"\n", HS_E_FORMAT,
                 "expected ')' to close the group opened at 1:10");
    expect_error("root ::= \"a\" )\n", HS_E_FORMAT, "1:14: unexpected ')' with no group open");
    expect_error("root ::= * \"a\"\n", HS_E_FORMAT, "1:10: expected an item before '*'");
    expect_error("root ::= \"a\"{2,1}\n", HS_E_FORMAT, "has max < min");
    expect_error("root ::= \"a\"{x}\n", HS_E_FORMAT, "expected a number in the repetition");
    expect_error("root ::= \"a\"{1,2\n", HS_E_FORMAT, "expected '}'");
    expect_error("root ::= \"\\q\"\n", HS_E_FORMAT, "1:11: unknown escape '\\q'");
    expect_error("root ::= \"\\x4\"\n", HS_E_FORMAT, "expected 2 hex digits after '\\x'");
    expect_error("root ::= \"\\U00110000\"\n", HS_E_FORMAT, "past U+10FFFF");
    expect_error("root ::= \"\xff\"\n", HS_E_FORMAT, "1:11: invalid UTF-8");
    expect_error("root ::= \"a\" = \"b\"\n", HS_E_FORMAT,
                 "1:14: expected an item, '|' or the end of the line");
    expect_error("::= \"a\"\n", HS_E_FORMAT, "1:1: expected a rule name, got ':'");
    expect_error("root ::= \"a\"\n  | \"b\"\n", HS_E_FORMAT, "2:3: expected a rule name");
    expect_error("", HS_E_FORMAT, "no rule 'root'");
    /* the column counts characters, not bytes */
    expect_error("root ::= \"\xc3\xa9\xc3\xa9\" ?? )\n", HS_E_FORMAT, "1:18: unexpected ')'");
}

Test(grammar, rejects_left_recursion_and_accepts_nullable_loops)
{
    expect_error("root ::= root \"a\" | \"b\"\n", HS_E_FORMAT,
                 "left recursion: rule 'root' can reach itself without consuming input");
    expect_error("root ::= expr\nexpr ::= term | expr \"+\" term\nterm ::= [0-9]\n", HS_E_FORMAT,
                 "2:1: left recursion: rule 'expr'");
    /* through a nullable prefix and another rule */
    expect_error("root ::= a \"x\"\na ::= b? c\nb ::= \"b\"\nc ::= \"\" root \"y\"\n", HS_E_FORMAT,
                 "left recursion");
    expect_error("root ::= (root \"a\")* \"b\"\n", HS_E_FORMAT, "left recursion: rule 'root'");
    /* right recursion and loops of nullable items are fine, and terminate */
    const char *fine[] = {
        "root ::= \"x\" root | \"\"\n",
        "root ::= (\"a\"?)* \"b\"\n",
        "root ::= (\"a\"* | \"b\"*)* \"c\"\n",
        "root ::= a\na ::= b | \"x\"\nb ::= a | \"y\"\n",
        "root ::= (\"\")* \"z\"\n",
    };
    const char *inputs[] = {"xxx", "aab", "abbac", "y", "z"};
    for (size_t i = 0; i < HS_ARRAY_LEN(fine); i++) {
        struct m e = matcher_env(fine[i], NULL);
        cr_assert_eq(match(e.c, inputs[i], strlen(inputs[i])), 1, "%s", fine[i]);
        cr_assert_eq(ref_match(e.g, inputs[i], strlen(inputs[i])), 1);
        env_free(&e);
    }
}

Test(grammar, enforces_limits)
{
    struct hs_grammar_limits lim = hs_grammar_default_limits();
    struct hs_grammar *g = NULL;
    struct hs_error err = {0};
    const char *t = "root ::= \"a\"\n";
    lim.max_text_bytes = 5;
    cr_assert_eq(hs_grammar_parse(t, strlen(t), NULL, &lim, &g, &err), HS_E_RANGE);
    cr_assert(strstr(err.message, "over the limit"));

    lim = hs_grammar_default_limits();
    lim.max_repeat = 100;
    t = "root ::= \"a\"{101}\n";
    cr_assert_eq(hs_grammar_parse(t, strlen(t), NULL, &lim, &g, &err), HS_E_RANGE);
    cr_assert(strstr(err.message, "repetition count above 100"), "%s", err.message);
    t = "root ::= \"a\"{1,99999999999999999999}\n";
    cr_assert_eq(hs_grammar_parse(t, strlen(t), NULL, &lim, &g, &err), HS_E_RANGE);

    lim = hs_grammar_default_limits();
    lim.max_elements = 1000;
    t = "root ::= (\"abcdefghij\"{100}){100}\n"; /* expansion, not text, is what is bounded */
    cr_assert_eq(hs_grammar_parse(t, strlen(t), NULL, &lim, &g, &err), HS_E_RANGE);
    cr_assert(strstr(err.message, "more than 1000 elements"), "%s", err.message);

    lim = hs_grammar_default_limits();
    lim.max_rules = 10;
    t = "root ::= \"a\"{0,20}\n";
    cr_assert_eq(hs_grammar_parse(t, strlen(t), NULL, &lim, &g, &err), HS_E_RANGE);
    cr_assert(strstr(err.message, "more than 10 rules"), "%s", err.message);

    /* nesting: 200 parentheses against the default 128 */
    char deep[1024] = "root ::= ";
    for (int i = 0; i < 200; i++) {
        strcat(deep, "(");
    }
    strcat(deep, "\"a\"");
    for (int i = 0; i < 200; i++) {
        strcat(deep, ")");
    }
    cr_assert_eq(hs_grammar_parse(deep, strlen(deep), NULL, NULL, &g, &err), HS_E_RANGE);
    cr_assert(strstr(err.message, "nested deeper than 128"), "%s", err.message);
    cr_assert_null(g);

    /* an ambiguous grammar meets max_stacks at match time, with an error and no crash */
    struct hs_grammar_cache_params p = hs_grammar_cache_default_params();
    p.max_stacks = 16;
    struct m e = matcher_env("root ::= x*\nx ::= \"a\" | \"a\" \"a\" | \"a\" x \"b\"\n", &p);
    struct hs_grammar_matcher *m = NULL;
    cr_assert_eq(hs_grammar_matcher_create(e.c, &m), HS_OK);
    hs_status st = HS_OK;
    for (int i = 0; i < 64 && st == HS_OK; i++) {
        st = hs_grammar_matcher_accept_bytes(m, "a", 1);
    }
    cr_assert_eq(st, HS_E_RANGE);
    hs_grammar_matcher_destroy(m);
    env_free(&e);

    /* stacked repetitions of something that may be empty double the ways to continue a level:
     * the start state's expansion meets the hard limit on frames (2M here) and is refused, where
     * it took 4 GiB (fuzz-grammar's find: 90 '+' on an empty rule) */
    char stacked[256] = "root ::= x";
    for (int i = 0; i < 90; i++) {
        strcat(stacked, "+");
    }
    strcat(stacked, "\nx ::= \n");
    p = hs_grammar_cache_default_params();
    p.max_states = 64; /* fuzz-grammar's */
    p.max_frames = 512;
    p.max_stacks = 256;
    e = matcher_env(stacked, &p);
    m = NULL;
    cr_assert_eq(hs_grammar_matcher_create(e.c, &m), HS_E_RANGE);
    cr_assert_null(m);
    env_free(&e);
    /* a few stack as they should (x++ is x+) */
    e = matcher_env("root ::= x+++\nx ::= \"a\" | \"b\" | \n", NULL);
    cr_assert_eq(match(e.c, "abba", 4), 1);
    cr_assert_eq(match(e.c, "", 0), 1);
    cr_assert_eq(match(e.c, "abc", 3), -1);
    env_free(&e);
}

Test(grammar, other_start_rule)
{
    struct hs_grammar *g = NULL;
    const char *t = "root ::= \"r\"\nitem ::= \"i\"+\n";
    cr_assert_eq(hs_grammar_parse(t, strlen(t), "item", NULL, &g, NULL), HS_OK);
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, NULL, NULL, &c), HS_OK);
    cr_assert_eq(match(c, "iii", 3), 1);
    cr_assert_eq(match(c, "r", 1), -1);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
}

/* ---- matching ---- */

Test(grammar, matches_json_values)
{
    struct m e = matcher_env(json_gbnf, NULL);
    const char *ok[] = {
        "{}",
        "[]",
        "0",
        "-0.5e+10",
        "true",
        "null",
        "\"\"",
        "{\"a\": 1, \"b\": [true, false, null, {\"c\": \"d\"}]}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "{\"esc\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\ude00\"}",
        "\"caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"",
        "{\n  \"k\": [\n    1,\n    2\n  ]\n}\n",
        "123456789012345",
        "{\"a\":{\"b\":{\"c\":{\"d\":[{\"e\":\"f\"}]}}}}",
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(ok); i++) {
        cr_assert_eq(match(e.c, ok[i], strlen(ok[i])), 1, "%s", ok[i]);
        cr_assert_eq(ref_match(e.g, ok[i], strlen(ok[i])), 1, "%s", ok[i]);
    }
    const char *prefix[] = {"{", "{\"a\"", "[1,", "\"abc", "tru", "-", "1.", "\"\\u00"};
    for (size_t i = 0; i < HS_ARRAY_LEN(prefix); i++) {
        cr_assert_eq(match(e.c, prefix[i], strlen(prefix[i])), 0, "%s", prefix[i]);
    }
    const char *bad[] = {
        "{,}",
        "[1,]",
        "01",
        "{\"a\" 1}",
        "\"\\x\"",
        "\"a\nb\"",
        "tRue",
        "{'a': 1}",
        "[1 2]",
        "\"\\u12G4\"",
        "1.e5",
        "\"\xc3\"x",
        "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xff\"",
        "\x80",
        "{}}",
        "nulll",
        "[1]\n\n",
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        cr_assert_eq(match(e.c, bad[i], strlen(bad[i])), -1, "%s", bad[i]);
    }
    /* whitespace is bounded: 20 spaces of indentation pass, 21 do not */
    char ws[64];
    snprintf(ws, sizeof(ws), "[1,\n%20s2]", "");
    cr_assert_eq(match(e.c, ws, strlen(ws)), 1);
    snprintf(ws, sizeof(ws), "[1,\n%21s2]", "");
    cr_assert_eq(match(e.c, ws, strlen(ws)), -1);
    env_free(&e);
}

Test(grammar, utf8_split_across_calls)
{
    struct m e = matcher_env("root ::= [\\u00e0-\\u00ff] [\\U0001F600-\\U0001F64F]+ \"!\"\n", NULL);
    struct hs_grammar_matcher *m = NULL;
    cr_assert_eq(hs_grammar_matcher_create(e.c, &m), HS_OK);
    const char *s = "\xc3\xa9\xf0\x9f\x98\x80\xf0\x9f\x99\x8f!";
    for (size_t i = 0; i < strlen(s); i++) {
        cr_assert_not(hs_grammar_matcher_can_complete(m));
        cr_assert_eq(hs_grammar_matcher_accept_bytes(m, s + i, 1), HS_OK, "byte %zu", i);
    }
    cr_assert(hs_grammar_matcher_can_complete(m));
    hs_grammar_matcher_destroy(m);
    /* a prefix no character of the class starts with is refused at its first byte */
    cr_assert_eq(match(e.c, "\xc3\xa9\xf0\x9f\x98", 5), 0);
    cr_assert_eq(match(e.c, "\xc3\xa9\xf0\x9f\x9a", 5), -1); /* U+1F680.. is outside */
    cr_assert_eq(match(e.c, "\xc2", 1), -1);                 /* U+0080..U+00BF is outside */
    cr_assert_eq(match(e.c, "\xc3", 1), 0);
    env_free(&e);
}

Test(grammar, rejected_bytes_leave_the_matcher_unchanged)
{
    struct m e = matcher_env(json_gbnf, NULL);
    struct hs_grammar_matcher *m = NULL, *k = NULL;
    cr_assert_eq(hs_grammar_matcher_create(e.c, &m), HS_OK);
    cr_assert_eq(hs_grammar_matcher_accept_bytes(m, "{\"a\":", 5), HS_OK);
    cr_assert_eq(hs_grammar_matcher_accept_bytes(m, "1}}", 3), HS_E_INVAL);
    cr_assert_eq(hs_grammar_matcher_clone(m, &k), HS_OK);
    cr_assert_eq(hs_grammar_matcher_accept_bytes(m, "1}", 2), HS_OK);
    cr_assert(hs_grammar_matcher_can_complete(m));
    cr_assert_not(hs_grammar_matcher_can_complete(k));
    cr_assert_eq(hs_grammar_matcher_accept_bytes(k, " [2]}", 5), HS_OK);
    cr_assert(hs_grammar_matcher_can_complete(k));
    hs_grammar_matcher_destroy(m);
    hs_grammar_matcher_destroy(k);
    env_free(&e);
}

/* Random sentences and random mutations of them: the matcher agrees with the reference on every
 * prefix, over several grammars, with a tiny cache (many resets) and a default one. */
Test(grammar, agrees_with_the_reference_on_random_inputs)
{
    const char *grammars[] = {
        json_gbnf,
        "root ::= (item \",\")* item\nitem ::= [a-c]+ | \"(\" root \")\" | \"x\"{2,4}\n",
        "root ::= a | b\na ::= \"ab\"* \"c\"?\nb ::= (\"a\" | \"ab\") (\"b\" | \"bc\")*\n",
        "root ::= [^abc]* \"a\" .? \"\\u00e9\"{0,2}\n",
        "root ::= s\ns ::= \"(\" s \")\" s | \"\"\n",
    };
    struct hs_rng rng;
    hs_rng_seed(&rng, 99);
    for (size_t gi = 0; gi < HS_ARRAY_LEN(grammars); gi++) {
        for (int tiny = 0; tiny < 2; tiny++) {
            struct hs_grammar_cache_params p = hs_grammar_cache_default_params();
            if (tiny) {
                p.max_states = 4;
                p.max_frames = 16;
            }
            struct m e = matcher_env(grammars[gi], &p);
            for (int k = 0; k < 60; k++) {
                char buf[512];
                int64_t n = hs__grammar_generate(e.g, &rng, 8, buf, sizeof(buf) - 8);
                cr_assert_geq(n, 0);
                if (n > (int64_t)sizeof(buf) - 8) {
                    continue;
                }
                cr_assert_eq(match(e.c, buf, (size_t)n), 1, "grammar %zu: generated '%.*s'", gi,
                             (int)n, buf);
                if (k % 2 == 1 && n > 0) { /* mutate one byte to a printable ASCII one */
                    buf[hs_rng_next(&rng) % (uint64_t)n] = (char)(0x20 + hs_rng_next(&rng) % 95);
                    uint32_t cp;
                    size_t off = 0;
                    while (off < (size_t)n) {
                        size_t a = hs__utf8_next((const uint8_t *)buf + off, (size_t)n - off, &cp);
                        if (a == 0) {
                            break;
                        }
                        off += a;
                    }
                    if (off < (size_t)n) {
                        continue; /* the mutation broke a character: the reference reads code
                                   * points only */
                    }
                }
                for (size_t cut = 0; cut <= (size_t)n; cut++) {
                    uint32_t cp;
                    if (cut < (size_t)n && ((uint8_t)buf[cut] & 0xC0) == 0x80) {
                        continue; /* compare at character boundaries */
                    }
                    (void)cp;
                    int want = ref_match(e.g, buf, cut);
                    cr_assert_eq(match(e.c, buf, cut), want, "grammar %zu tiny %d: '%.*s'", gi,
                                 tiny, (int)cut, buf);
                    if (want < 0) {
                        break;
                    }
                }
            }
            struct hs_grammar_cache_stats st;
            hs_grammar_cache_stats(e.c, &st);
            cr_assert(tiny == 0 || st.n_resets > 0, "the tiny cache never reset");
            env_free(&e);
        }
    }
}

/* A grammar that derives nothing (a cycle of bare references) compiles, matches nothing and
 * never completes (found by fuzzing: the empty start state). */
Test(grammar, grammar_with_no_sentence)
{
    const char *texts[] = {"root ::= root\n", "root ::= a\na ::= root\n", "root ::= root | root\n"};
    for (size_t i = 0; i < HS_ARRAY_LEN(texts); i++) {
        struct m e = matcher_env(texts[i], NULL);
        cr_assert_eq(match(e.c, "", 0), 0, "%s", texts[i]);
        cr_assert_eq(match(e.c, "a", 1), -1);
        struct hs_rng rng;
        hs_rng_seed(&rng, 1);
        char buf[8];
        cr_assert_eq(hs__grammar_generate(e.g, &rng, 4, buf, sizeof(buf)), -1);
        env_free(&e);
    }
}

/* Client grammars near the size limit compile in linear time: a 50,000-rule chain (nullable
 * propagating backwards, every rule defined far from the text's start) took seconds when
 * nullability was swept to a fixpoint and every rule's line was counted from the start. */
Test(grammar, long_rule_chains_compile_fast, .timeout = 60)
{
    size_t cap = (size_t)1 << 20, n = 0;
    char *t = malloc(cap);
    n += (size_t)snprintf(t + n, cap - n, "root ::= r0 \"x\"\n");
    for (int i = 0; i < 50000; i++) {
        n += (size_t)snprintf(t + n, cap - n, "r%d ::= r%d\n", i, i + 1);
    }
    n += (size_t)snprintf(t + n, cap - n, "r50000 ::= \"\"\n");
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct hs_grammar *g = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_grammar_parse(t, n, NULL, NULL, &g, &err), HS_OK, "%s", err.message);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    cr_assert_lt(s, 5.0, "took %.2f s", s);
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, NULL, NULL, &c), HS_OK);
    cr_assert_eq(match(c, "x", 1), 1);
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
    free(t);
}
