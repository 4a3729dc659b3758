/* libFuzzer target: model output -> the tool-call parser (api/tools.c). The first byte picks the
 * format, parallel_tool_calls and the size of the pieces the rest is fed in; the rest is the
 * text. Checks: no crash or leak; fed whole and fed in pieces, the parser reports the same
 * content, calls and arguments (what makes streamed deltas add up to the non-streamed answer);
 * calls are numbered in order and their arguments follow them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct rec {
    struct hs__buf all; /* content, then \x01 name \x02 args per call, in order */
    int32_t n_calls;
};

static void on_content(void *u, const char *s, size_t n)
{
    struct rec *r = u;
    hs__buf_add(&r->all, s, n);
}

static void on_call(void *u, int32_t index, const char *id, const char *name, size_t n_name)
{
    struct rec *r = u;
    if (index != r->n_calls || !id || strlen(id) < 9) {
        abort();
    }
    r->n_calls++;
    hs__buf_add(&r->all, "\x01", 1);
    hs__buf_add(&r->all, name, n_name);
    hs__buf_add(&r->all, "\x02", 1);
}

static void on_args(void *u, int32_t index, const char *s, size_t n)
{
    struct rec *r = u;
    if (index != r->n_calls - 1) {
        abort();
    }
    hs__buf_add(&r->all, s, n);
}

static void run(enum hs__tool_format f, bool parallel, const char *text, size_t n, size_t step,
                struct rec *r)
{
    struct hs__tool_parser p;
    const struct hs__tool_sink sink = {on_content, on_call, on_args, r};
    hs__tool_parser_init(&p, f, parallel, 7);
    for (size_t i = 0; i < n;) {
        size_t k = step && step < n - i ? step : n - i;
        hs__tool_parser_feed(&p, text + i, k, &sink);
        i += k;
    }
    hs__tool_parser_finish(&p, &sink);
    if (p.n_calls != r->n_calls || p.oom) {
        abort();
    }
    hs__tool_parser_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const enum hs__tool_format f = (enum hs__tool_format)(data[0] % HS__TOOLS_FORMAT_COUNT);
    const bool parallel = (data[0] >> 2) & 1;
    const size_t step = 1 + (data[0] >> 3);
    const char *text = (const char *)data + 1;
    const size_t n = size - 1;
    struct rec whole = {0}, pieces = {0};
    run(f, parallel, text, n, 0, &whole);
    run(f, parallel, text, n, step, &pieces);
    if (whole.n_calls != pieces.n_calls || whole.all.len != pieces.all.len ||
        (whole.all.len && memcmp(whole.all.p, pieces.all.p, whole.all.len) != 0)) {
        fprintf(stderr, "fuzz-tool-parser: whole and piecewise (step %zu) differ\n", step);
        abort();
    }
    hs__buf_free(&whole.all);
    hs__buf_free(&pieces.all);
    return 0;
}
