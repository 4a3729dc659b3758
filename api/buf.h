/* api/ internals: a growable NUL-terminated text buffer, shared by the HTTP layer (responses,
 * SSE events, /metrics) and the JSON Schema converter (grammar text).
 * Thread: any; a buffer belongs to one thread at a time. */
#ifndef HS_API_BUF_H
#define HS_API_BUF_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes p[0, len) followed by a NUL; oom sticks once an allocation failed (later adds do
 * nothing), so callers check it once at the end. Zero-initialise; free with hs__buf_free (or
 * take p, which the caller then frees). */
struct hs__buf {
    char *p;
    size_t len, cap;
    bool oom;
};

void hs__buf_add(struct hs__buf *b, const char *s, size_t n);
void hs__buf_puts(struct hs__buf *b, const char *s);
/* Appends the whole formatted text, however long. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void hs__buf_printf(struct hs__buf *b, const char *fmt, ...);
void hs__buf_free(struct hs__buf *b);

#endif
