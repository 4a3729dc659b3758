#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Allocations of HS__ALLOC_HUGE_MIN bytes or more (KV caches, activation buffers) are aligned
 * to and advised as 2 MiB pages before they are first touched (the memset below would otherwise
 * fault them in as 4 KiB pages): a decode step reads a KV head's rows a whole position apart
 * across the cache, a new small page every few positions (SmolLM-135M tg64 @ d2048: 2-9%
 * faster). */
#define HS__ALLOC_HUGE_PAGE ((size_t)2 << 20)
#define HS__ALLOC_HUGE_MIN  ((size_t)4 << 20)

void *hs_alloc_aligned(size_t size_bytes)
{
    size_t n = hs_align_up(size_bytes ? size_bytes : 1, HS_ALIGN_BYTES);
    size_t align = HS_ALIGN_BYTES;
    if (n >= HS__ALLOC_HUGE_MIN) {
        align = HS__ALLOC_HUGE_PAGE;
        n = hs_align_up(n, align);
    }
    void *p = aligned_alloc(align, n);
    if (!p) {
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    if (align == HS__ALLOC_HUGE_PAGE) {
        (void)madvise(p, n, MADV_HUGEPAGE); /* advice: an error only means small pages */
    }
#endif
    memset(p, 0, n);
    return p;
}

void hs_free_aligned(void *p)
{
    free(p);
}
