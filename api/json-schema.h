/* JSON Schema -> GBNF for structured output (response_format json_schema / json_object, tool
 * arguments): the grammar text that server/grammar.h compiles. Modelled on llama.cpp's
 * json-schema-to-grammar: properties in the schema's order, required ones first as written and
 * the optional ones after them, each at most once; whitespace bounded (a space, or a newline and
 * at most 20 spaces or tabs of indentation, between tokens) so a model cannot loop on blanks.
 *
 * Supported: type (a name or a list; "json_object" = any object), properties, required,
 * additionalProperties (bool or schema; absent = no other properties, as llama.cpp and OpenAI's
 * strict mode), items (a schema, or a list as prefixItems of older drafts), prefixItems,
 * additionalItems, minItems, maxItems, enum, const, anyOf, oneOf (as anyOf: write disjoint
 * alternatives), allOf (one schema, or objects merged), $ref to "#" or "#/..." with $defs and
 * definitions, minLength, maxLength, format (date, time, date-time, uuid, email), integer
 * minimum / maximum / exclusiveMinimum / exclusiveMaximum, uniqueItems false. Annotations are
 * ignored: title, description, default, examples, $schema, $id, $comment, deprecated,
 * readOnly, writeOnly, discriminator, x-* extensions.
 * Anything else is an error naming the keyword, never a silent relaxation. The grammar may be
 * stricter than the schema where the schema is not regular or too costly: numbers have at most
 * 16 integral and 16 fractional digits and a 2-digit exponent (doubles stay finite), strings
 * use no \uD800-\uDFFF escapes, extra property names no escapes, dates no February 29, const
 * and enum values are written compactly, properties come in the schema's order. */
#ifndef HS_API_JSON_SCHEMA_H
#define HS_API_JSON_SCHEMA_H

#include <jansson.h>

#include "common/common.h"

/* Converts schema (borrowed) to GBNF text with start rule "root". Errors, with err (may be NULL)
 * naming the keyword and the schema location as a JSON pointer ("unsupported JSON Schema
 * keyword 'pattern' at /properties/name"):
 *   HS_E_NOTSUP  a keyword, format, type or $ref form we do not support
 *   HS_E_INVAL   a malformed schema (a keyword of the wrong type, an empty enum, a $ref that
 *                resolves to nothing, a schema that allows no value, a $ref cycle that
 *                consumes no input)
 *   HS_E_RANGE   the schema nests deeper than 64, or its grammar would exceed 1 MiB
 *   HS_E_NOMEM
 * Returns new NUL-terminated text in *out (free with free()), left NULL on failure.
 * Thread: any. */
hs_status hs_json_schema_to_gbnf(const json_t *schema, char **out, struct hs_error *err);

/* The grammar of any JSON object (response_format {"type": "json_object"}): static text. */
const char *hs_json_object_gbnf(void);

#endif
