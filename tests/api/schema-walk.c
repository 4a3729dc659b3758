/* schema-walk CORPUS OUT.jsonl [N]: for every schema of the corpus, N random sentences of its
 * grammar (default 200), one JSON line each: {"case": name, "text": sentence}. Exits 1 when a
 * schema does not convert or compile, 0 otherwise. check-schema-walk.py validates the lines. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json-schema.h"
#include "server/grammar-impl.h"
#include "server/grammar.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: schema-walk CORPUS OUT.jsonl [N]\n");
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 200;
    json_error_t e;
    json_t *cases = json_load_file(argv[1], 0, &e);
    FILE *out = fopen(argv[2], "w");
    if (!cases || !out) {
        fprintf(stderr, "schema-walk: cannot read %s or write %s\n", argv[1], argv[2]);
        return 2;
    }
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    char *buf = malloc(1 << 16);
    int rc = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs)
    {
        const char *name = json_string_value(json_object_get(cs, "name"));
        char *gbnf = NULL;
        struct hs_grammar *g = NULL;
        struct hs_error err = {0};
        if (hs_json_schema_to_gbnf(json_object_get(cs, "schema"), &gbnf, &err) != HS_OK ||
            hs_grammar_parse(gbnf, strlen(gbnf), NULL, NULL, &g, &err) != HS_OK) {
            fprintf(stderr, "schema-walk: %s: %s\n", name, err.message);
            rc = 1;
            free(gbnf);
            continue;
        }
        for (int k = 0; k < n; k++) {
            int64_t len = hs__grammar_generate(g, &rng, 24, buf, (1 << 16) - 1);
            if (len < 0 || len > (1 << 16) - 1) {
                continue;
            }
            json_t *line = json_pack("{s:s, s:s%}", "case", name, "text", buf, (size_t)len);
            char *txt = line ? json_dumps(line, JSON_COMPACT) : NULL;
            if (!txt) {
                fprintf(stderr, "schema-walk: %s: a sentence is not UTF-8\n", name);
                rc = 1;
            } else {
                fprintf(out, "%s\n", txt);
            }
            free(txt);
            json_decref(line);
        }
        hs_grammar_destroy(g);
        free(gbnf);
    }
    free(buf);
    fclose(out);
    json_decref(cases);
    return rc;
}
