/* libFuzzer target: JSON Schema text -> api/json-schema.c -> GBNF, which must always parse (a
 * limit, HS_E_RANGE, aside: a syntax error or left recursion there is the converter's bug).
 * Random sentences of the grammar must be JSON (jansson) and accepted by the matcher. Failed
 * conversions must say why. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json-schema.h"
#include "server/grammar-impl.h"
#include "server/grammar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what, const char *detail)
{
    if (!ok) {
        fprintf(stderr, "fuzz-json-schema: %s\n%s\n", what, detail ? detail : "");
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t je;
    json_t *schema = json_loadb((const char *)data, size, JSON_DECODE_ANY, &je);
    if (!schema) {
        return 0;
    }
    char *gbnf = NULL;
    struct hs_error err = {0};
    hs_status st = hs_json_schema_to_gbnf(schema, &gbnf, &err);
    if (st != HS_OK) {
        check(gbnf == NULL && err.message[0] != '\0', "a failure without a message", NULL);
        check(st == HS_E_NOTSUP || st == HS_E_INVAL || st == HS_E_RANGE || st == HS_E_NOMEM,
              "unexpected status", err.message);
        json_decref(schema);
        return 0;
    }
    struct hs_grammar *g = NULL;
    st = hs_grammar_parse(gbnf, strlen(gbnf), NULL, NULL, &g, &err);
    check(st == HS_OK || st == HS_E_RANGE, err.message, gbnf);
    if (st == HS_OK) {
        struct hs_grammar_cache *c = NULL;
        check(hs_grammar_cache_create(g, NULL, NULL, &c) == HS_OK, "cache", NULL);
        struct hs_rng rng;
        hs_rng_seed(&rng, size);
        char *buf = malloc(4096);
        for (int k = 0; k < 3 && buf; k++) {
            int64_t n = hs__grammar_generate(g, &rng, 10, buf, 4095);
            if (n < 0 || n > 4095) {
                continue;
            }
            buf[n] = '\0';
            /* "\u0000" is valid JSON; jansson decodes it only when asked */
            json_t *j = json_loadb(buf, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            check(j != NULL, "a sentence of the schema's grammar is not JSON", buf);
            json_decref(j);
            struct hs_grammar_matcher *m = NULL;
            if (hs_grammar_matcher_create(c, &m) == HS_OK) {
                hs_status as = hs_grammar_matcher_accept_bytes(m, buf, (size_t)n);
                check(as == HS_E_RANGE || (as == HS_OK && hs_grammar_matcher_can_complete(m)),
                      "a sentence was rejected", buf);
                hs_grammar_matcher_destroy(m);
            }
        }
        free(buf);
        hs_grammar_cache_destroy(c);
        hs_grammar_destroy(g);
    }
    free(gbnf);
    json_decref(schema);
    return 0;
}
