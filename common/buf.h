/* common/: the growable memory under the tree's buffers: hs__grow for arrays of any element,
 * struct hs__buf for bytes and text (HTTP responses and SSE events, grammar text, GGUF metadata,
 * rendered chat templates, a request's streamed output).
 * Thread: any; a buffer belongs to one thread at a time. */
#ifndef HS_COMMON_BUF_H
#define HS_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

/* Grows *p, an array of *cap elements of elem bytes, to hold at least need: the capacity
 * doubles from 16, size arithmetic overflow-checked. false: out of memory (or a size past
 * SIZE_MAX), *p and *cap left as they were. */
bool hs__grow(void **p, size_t *cap, size_t need, size_t elem);

/* Bytes p[0, len) followed by a NUL (p is NULL until the first add); oom sticks once an
 * allocation failed (later adds do nothing and fail again), so callers may check it once at the
 * end. Zero-initialise; free with hs__buf_free (or take p, which the caller then frees). */
struct hs__buf {
    char *p;
    size_t len, cap;
    bool oom;
};

/* Appends n bytes of s (s NULL: n zero bytes). HS_E_NOMEM: b->oom set, b's bytes unchanged. */
hs_status hs__buf_add(struct hs__buf *b, const void *s, size_t n);
hs_status hs__buf_puts(struct hs__buf *b, const char *s);
hs_status hs__buf_putc(struct hs__buf *b, char c);
/* Appends the whole formatted text, however long. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
hs_status
hs__buf_printf(struct hs__buf *b, const char *fmt, ...);
/* Drops the first n (<= len) bytes; the rest moves to the front. */
void hs__buf_consume(struct hs__buf *b, size_t n);
/* Empties b, keeping its memory (and its oom). */
void hs__buf_clear(struct hs__buf *b);
void hs__buf_free(struct hs__buf *b);

#endif
