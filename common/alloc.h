/* Allocation helpers. */
#ifndef HS_COMMON_ALLOC_H
#define HS_COMMON_ALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define HS_ALIGN_BYTES 64

/* Returns new zeroed memory aligned to HS_ALIGN_BYTES (free with hs_free_aligned), or NULL. */
void *hs_alloc_aligned(size_t size_bytes);
void hs_free_aligned(void *p);

/* Overflow-checked arithmetic: true on overflow (result unspecified then). */
static inline bool hs_mul_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
static inline bool hs_add_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

static inline size_t hs_align_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

/* Lays out a buffer piece by piece: returns *off, where a piece of bytes goes, and moves *off past
 * it to the next HS_ALIGN_BYTES boundary. */
static inline size_t hs_carve(size_t *off, size_t bytes)
{
    const size_t at = *off;
    *off += hs_align_up(bytes, HS_ALIGN_BYTES);
    return at;
}

#endif
