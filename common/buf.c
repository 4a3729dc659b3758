/* common/buf.c: the growable arrays and byte buffers of common/buf.h. */
#include "common/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

bool hs__grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return true;
    }
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2) {
            return false;
        }
        n *= 2;
    }
    size_t bytes;
    if (hs_mul_overflow(n, elem, &bytes)) {
        return false;
    }
    void *q = realloc(*p, bytes);
    if (!q) {
        return false;
    }
    *p = q;
    *cap = n;
    return true;
}

hs_status hs__buf_add(struct hs__buf *b, const void *s, size_t n)
{
    size_t need;
    if (b->oom || hs_add_overflow(b->len, n, &need) || hs_add_overflow(need, 1, &need) ||
        !hs__grow((void **)&b->p, &b->cap, need, 1)) {
        b->oom = true;
        return HS_E_NOMEM;
    }
    if (s && n > 0) {
        memcpy(b->p + b->len, s, n);
    } else if (n > 0) {
        memset(b->p + b->len, 0, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
    return HS_OK;
}

hs_status hs__buf_puts(struct hs__buf *b, const char *s)
{
    return hs__buf_add(b, s, strlen(s));
}

hs_status hs__buf_putc(struct hs__buf *b, char c)
{
    return hs__buf_add(b, &c, 1);
}

hs_status hs__buf_printf(struct hs__buf *b, const char *fmt, ...)
{
    /* Most texts are short: format into the stack first, and only a longer one a second time
     * into a heap copy of its exact size (no silent cut of a long rule or response line). */
    char tmp[512];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    const int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    hs_status st = HS_OK;
    if (n > 0 && (size_t)n < sizeof(tmp)) {
        st = hs__buf_add(b, tmp, (size_t)n);
    } else if (n > 0) {
        char *big = malloc((size_t)n + 1);
        if (!big) {
            b->oom = true;
            st = HS_E_NOMEM;
        } else {
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
            st = hs__buf_add(b, big, (size_t)n);
            free(big);
        }
    }
    va_end(ap2);
    return st;
}

void hs__buf_consume(struct hs__buf *b, size_t n)
{
    if (n == 0) {
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    b->p[b->len] = '\0';
}

void hs__buf_clear(struct hs__buf *b)
{
    b->len = 0;
    if (b->p) {
        b->p[0] = '\0';
    }
}

void hs__buf_free(struct hs__buf *b)
{
    free(b->p);
    *b = (struct hs__buf){0};
}
