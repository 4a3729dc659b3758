/* JSON Schema -> GBNF: a corpus of schemas (tests/api/schema-corpus.json: MobiAgent-style
 * actions, pydantic-generated ones with $defs/$ref, discriminated unions and recursion, tool
 * parameters, formats, integer bounds, arrays, unions, allOf) compiles; its valid instances are
 * accepted and its invalid ones rejected by the grammar; random sentences of each grammar are
 * JSON. (That they validate against the schema is checked with python3-jsonschema by
 * check-schema-walk.py.) Unsupported keywords and malformed schemas give errors that name
 * them. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json-schema.h"
#include "server/grammar-impl.h"
#include "server/grammar.h"

struct compiled {
    char *gbnf;
    struct hs_grammar *g;
    struct hs_grammar_cache *c;
};

static struct compiled compile_schema(const json_t *schema, const char *name)
{
    struct compiled r = {0};
    struct hs_error err = {0};
    hs_status st = hs_json_schema_to_gbnf(schema, &r.gbnf, &err);
    cr_assert_eq(st, HS_OK, "%s: %s", name, err.message);
    st = hs_grammar_parse(r.gbnf, strlen(r.gbnf), NULL, NULL, &r.g, &err);
    cr_assert_eq(st, HS_OK, "%s: the grammar does not compile: %s\n%s", name, err.message, r.gbnf);
    cr_assert_eq(hs_grammar_cache_create(r.g, NULL, NULL, &r.c), HS_OK);
    return r;
}

static void compiled_free(struct compiled *r)
{
    hs_grammar_cache_destroy(r->c);
    hs_grammar_destroy(r->g);
    free(r->gbnf);
}

static bool accepts(struct hs_grammar_cache *c, const char *text)
{
    struct hs_grammar_matcher *m = NULL;
    cr_assert_eq(hs_grammar_matcher_create(c, &m), HS_OK);
    bool ok = hs_grammar_matcher_accept_bytes(m, text, strlen(text)) == HS_OK &&
              hs_grammar_matcher_can_complete(m);
    hs_grammar_matcher_destroy(m);
    return ok;
}

static json_t *corpus(void)
{
    json_error_t e;
    json_t *j = json_load_file(HS_SCHEMA_CORPUS, 0, &e);
    cr_assert_not_null(j, "%s: %s", HS_SCHEMA_CORPUS, e.text);
    return j;
}

Test(json_schema, corpus_valid_accepted_invalid_rejected)
{
    json_t *cases = corpus();
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs)
    {
        const char *name = json_string_value(json_object_get(cs, "name"));
        struct compiled r = compile_schema(json_object_get(cs, "schema"), name);
        size_t k;
        json_t *t;
        json_array_foreach(json_object_get(cs, "valid_text"), k, t)
        {
            cr_assert(accepts(r.c, json_string_value(t)), "%s: valid %s rejected\n%s", name,
                      json_string_value(t), r.gbnf);
        }
        json_array_foreach(json_object_get(cs, "invalid_text"), k, t)
        {
            cr_assert_not(accepts(r.c, json_string_value(t)), "%s: invalid %s accepted\n%s", name,
                          json_string_value(t), r.gbnf);
        }
        compiled_free(&r);
    }
    json_decref(cases);
}

Test(json_schema, random_sentences_are_json)
{
    json_t *cases = corpus();
    struct hs_rng rng;
    hs_rng_seed(&rng, 2024);
    size_t i;
    json_t *cs;
    char *buf = malloc(16384);
    json_array_foreach(cases, i, cs)
    {
        const char *name = json_string_value(json_object_get(cs, "name"));
        struct compiled r = compile_schema(json_object_get(cs, "schema"), name);
        int made = 0;
        for (int k = 0; k < 60; k++) {
            int64_t n = hs__grammar_generate(r.g, &rng, 24, buf, 16383);
            cr_assert_geq(n, 0, "%s: no sentence", name);
            if (n > 16383) {
                continue;
            }
            buf[n] = '\0';
            json_error_t e;
            /* duplicate names can come from additionalProperties (JSON allows them) */
            json_t *j = json_loads(buf, JSON_DECODE_ANY, &e);
            cr_assert_not_null(j, "%s: not JSON (%s): %s", name, e.text, buf);
            json_decref(j);
            cr_assert(accepts(r.c, buf));
            made++;
        }
        cr_assert_gt(made, 30, "%s: most sentences were too long", name);
        compiled_free(&r);
    }
    free(buf);
    json_decref(cases);
}

static void expect(const char *schema, hs_status want, const char *msg)
{
    json_error_t e;
    json_t *j = json_loads(schema, JSON_DECODE_ANY, &e);
    cr_assert_not_null(j, "%s", schema);
    char *out = NULL;
    struct hs_error err = {0};
    hs_status st = hs_json_schema_to_gbnf(j, &out, &err);
    cr_assert_eq(st, want, "%s: %s (%s)", schema, hs_status_name(st), err.message);
    cr_assert_null(out);
    cr_assert(strstr(err.message, msg) != NULL, "%s: message '%s' lacks '%s'", schema, err.message,
              msg);
    json_decref(j);
}

Test(json_schema, unsupported_keywords_are_named)
{
    expect("{\"type\": \"string\", \"pattern\": \"^a+$\"}", HS_E_NOTSUP,
           "unsupported JSON Schema keyword 'pattern' at / (the root)");
    expect("{\"properties\": {\"a\": {\"type\": \"array\", \"uniqueItems\": true}}}", HS_E_NOTSUP,
           "'uniqueItems' (true) at /properties/a");
    expect("{\"type\": \"object\", \"minProperties\": 1}", HS_E_NOTSUP, "'minProperties'");
    expect("{\"type\": \"number\", \"minimum\": 0.5}", HS_E_NOTSUP,
           "'minimum'/'maximum' on numbers");
    expect("{\"type\": \"string\", \"format\": \"uri\"}", HS_E_NOTSUP, "format 'uri'");
    expect("{\"$ref\": \"https://example.com/s.json\"}", HS_E_NOTSUP, "only local references");
    expect("{\"type\": \"integer\", \"multipleOf\": 2}", HS_E_NOTSUP, "'multipleOf'");
    expect("{\"anyOf\": [{\"type\": \"string\"}], \"format\": \"date\"}", HS_E_NOTSUP,
           "'format' beside 'anyOf'");
    expect("{\"type\": \"tuple\"}", HS_E_NOTSUP, "unsupported type 'tuple'");
    expect("{\"type\": \"string\", \"format\": \"date\", \"maxLength\": 3}", HS_E_NOTSUP,
           "together with 'format'");
    expect("{\"type\": \"object\", \"patternProperties\": {\"^a\": {}}}", HS_E_NOTSUP,
           "'patternProperties'");
    expect("{\"allOf\": [{\"type\": \"string\"}, {\"maxLength\": 2}]}", HS_E_NOTSUP, "'allOf'");
}

Test(json_schema, malformed_schemas)
{
    expect("false", HS_E_INVAL, "allows no value");
    expect("{\"enum\": []}", HS_E_INVAL, "non-empty array");
    expect("{\"type\": \"string\", \"enum\": [1, 2]}", HS_E_INVAL, "no value of 'enum'");
    expect("{\"$ref\": \"#/$defs/missing\"}", HS_E_INVAL, "resolves to nothing");
    expect("{\"$ref\": \"#/$defs/a\", \"$defs\": {\"a\": {\"anyOf\": [{\"$ref\": \"#/$defs/a\"}, "
           "{\"type\": \"null\"}]}}}",
           HS_E_INVAL, "refers back to itself without a value in between");
    expect("{\"$ref\": \"#\"}", HS_E_INVAL, "refers back to itself");
    expect("{\"type\": \"integer\", \"minimum\": 5, \"maximum\": 4}", HS_E_INVAL,
           "no integer lies between");
    expect("{\"type\": \"string\", \"minLength\": 3, \"maxLength\": 2}", HS_E_INVAL,
           "minLength 3 > maxLength 2");
    expect("{\"type\": \"array\", \"maxLength\": -1, \"minItems\": 2.5}", HS_E_INVAL,
           "'minItems' must be a non-negative integer");
    expect("{\"type\": \"string\", \"maxLength\": 20000}", HS_E_RANGE, "above 10000");
    expect("{\"properties\": 5}", HS_E_INVAL, "'properties' must be an object");
    expect("[1]", HS_E_INVAL, "a schema must be an object or a boolean");
    expect("{\"type\": \"array\", \"prefixItems\": [{}], \"items\": false, \"minItems\": 2}",
           HS_E_INVAL, "minItems 2 cannot be met");
    /* nesting past 64 */
    char deep[4096] = "";
    for (int i = 0; i < 70; i++) {
        strcat(deep, "{\"type\": \"array\", \"items\": ");
    }
    strcat(deep, "{}");
    for (int i = 0; i < 70; i++) {
        strcat(deep, "}");
    }
    expect(deep, HS_E_RANGE, "nests deeper than 64");
}

Test(json_schema, recursion_through_a_value_is_fine)
{
    json_t *j = json_loads("{\"type\": \"object\", \"properties\": {\"next\": {\"anyOf\": "
                           "[{\"$ref\": \"#\"}, {\"type\": \"null\"}]}}, \"required\": [\"next\"]}",
                           0, NULL);
    struct compiled r = compile_schema(j, "linked list");
    cr_assert(accepts(r.c, "{\"next\": {\"next\": {\"next\": null}}}"));
    cr_assert_not(accepts(r.c, "{\"next\": {\"next\": {}}}"));
    compiled_free(&r);
    json_decref(j);
}

Test(json_schema, any_object_grammar)
{
    const char *t = hs_json_object_gbnf();
    struct hs_grammar *g = NULL;
    struct hs_error err = {0};
    cr_assert_eq(hs_grammar_parse(t, strlen(t), NULL, NULL, &g, &err), HS_OK, "%s", err.message);
    struct hs_grammar_cache *c = NULL;
    cr_assert_eq(hs_grammar_cache_create(g, NULL, NULL, &c), HS_OK);
    cr_assert(accepts(c, "{\"a\": [1, 2.5e-3, \"\\u00e9\", {\"b\": null}], \"c\": true}"));
    cr_assert(accepts(c, "{}"));
    cr_assert_not(accepts(c, "[]"));
    cr_assert_not(accepts(c, "{\"a\": 1,}"));
    cr_assert_not(accepts(c, "{\"a\": \"\\ud800\"}")); /* no surrogate escapes */
    char ws[64];
    snprintf(ws, sizeof(ws), "{\n%21s\"a\": 1}", "");
    cr_assert_not(accepts(c, ws), "whitespace is bounded");
    hs_grammar_cache_destroy(c);
    hs_grammar_destroy(g);
}

/* Rule text longer than any fixed formatting buffer: 40 property names with 40 different first
 * characters beside additionalProperties make one character class of 400-odd bytes, which must
 * come out whole (a cut one does not compile, or admits what it should not). */
Test(json_schema, long_rules_are_written_whole)
{
    json_t *props = json_object();
    char name[2] = {0};
    for (int i = 0; i < 40; i++) {
        name[0] = (char)(i < 26 ? 'a' + i : 'A' + i - 26);
        json_object_set_new(props, name, json_pack("{s:s}", "type", "integer"));
    }
    json_t *schema = json_pack("{s:s, s:o, s:b}", "type", "object", "properties", props,
                               "additionalProperties", 1);
    struct compiled r = compile_schema(schema, "40 names and additionalProperties");
    cr_assert(accepts(r.c, "{\"a\": 1, \"N\": 2, \"Z\": \"extra\", \"aa\": [true]}"));
    cr_assert_not(accepts(r.c, "{\"a\": \"x\"}"), "a named property keeps its type");
    cr_assert_not(accepts(r.c, "{\"N\": null}"), "so does the 40th");
    compiled_free(&r);
    json_decref(schema);
}

/* Integer ranges against every value near their edges (the digit-range construction). */
Test(json_schema, integer_ranges_exact)
{
    const long long bounds[][2] = {{0, 0},    {0, 9},     {0, 10},   {5, 5},     {7, 123},
                                   {-15, -3}, {-120, 37}, {99, 101}, {100, 999}, {1, 100000},
                                   {-1, 1},   {19, 21},   {1, 1},    {-9, 0},    {10, 1099}};
    for (size_t b = 0; b < HS_ARRAY_LEN(bounds); b++) {
        char s[256];
        snprintf(s, sizeof(s), "{\"type\": \"integer\", \"minimum\": %lld, \"maximum\": %lld}",
                 bounds[b][0], bounds[b][1]);
        json_t *j = json_loads(s, 0, NULL);
        struct compiled r = compile_schema(j, s);
        for (long long v = bounds[b][0] - 150; v <= bounds[b][1] + 150; v++) {
            char t[32];
            snprintf(t, sizeof(t), "%lld", v);
            bool want = v >= bounds[b][0] && v <= bounds[b][1];
            cr_assert_eq(accepts(r.c, t), want, "%s: %lld", s, v);
        }
        cr_assert_not(accepts(r.c, "-0") && bounds[b][0] > 0);
        cr_assert_not(accepts(r.c, "007"));
        compiled_free(&r);
        json_decref(j);
    }
    /* one-sided */
    json_t *j = json_loads("{\"type\": \"integer\", \"minimum\": 250}", 0, NULL);
    struct compiled r = compile_schema(j, "min 250");
    cr_assert(accepts(r.c, "250"));
    cr_assert(accepts(r.c, "1000"));
    cr_assert(accepts(r.c, "9999999999999999"));
    cr_assert_not(accepts(r.c, "249"));
    cr_assert_not(accepts(r.c, "-300"));
    compiled_free(&r);
    json_decref(j);
    j = json_loads("{\"type\": \"integer\", \"exclusiveMaximum\": -250}", 0, NULL);
    r = compile_schema(j, "max < -250");
    cr_assert(accepts(r.c, "-251"));
    cr_assert(accepts(r.c, "-100000"));
    cr_assert_not(accepts(r.c, "-250"));
    cr_assert_not(accepts(r.c, "5"));
    compiled_free(&r);
    json_decref(j);
}
