/* api/buf.c: the growable text buffer of api/buf.h. */
#include "api/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

void hs__buf_add(struct hs__buf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = HS_MAX(b->cap * 2, b->len + n + 1024);
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->p + b->len, s, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
}

void hs__buf_puts(struct hs__buf *b, const char *s)
{
    hs__buf_add(b, s, strlen(s));
}

void hs__buf_printf(struct hs__buf *b, const char *fmt, ...)
{
    /* Most texts are short: format into the stack first, and only a longer one a second time
     * into a heap copy of its exact size (no silent cut of a long rule or response line). */
    char tmp[512];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    const int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof(tmp)) {
        hs__buf_add(b, tmp, (size_t)n);
    } else if (n > 0) {
        char *big = malloc((size_t)n + 1);
        if (!big) {
            b->oom = true;
        } else {
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
            hs__buf_add(b, big, (size_t)n);
            free(big);
        }
    }
    va_end(ap2);
}

void hs__buf_free(struct hs__buf *b)
{
    free(b->p);
    *b = (struct hs__buf){0};
}
