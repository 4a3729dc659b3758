#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Allocations of this size or more (KV caches, activation buffers, repacked weights) start on a
 * 2 MiB boundary and ask for transparent huge pages before they are zeroed: a 1.5 GiB KV cache
 * faulted in 4 KiB pages took ~7 s of server start-up on a paravirtualised VM, and kernels that
 * stream these buffers every step miss the TLB every 4 KiB. */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN (2 * HUGE_PAGE)

void *hs_alloc_aligned(size_t size_bytes)
{
    size_t n = hs_align_up(size_bytes ? size_bytes : 1, HS_ALIGN_BYTES);
    const bool huge = n >= HUGE_MIN;
    if (huge) {
        n = hs_align_up(n, HUGE_PAGE);
    }
    void *p = aligned_alloc(huge ? HUGE_PAGE : HS_ALIGN_BYTES, n);
    if (p) {
        if (huge) {
            madvise(p, n, MADV_HUGEPAGE); /* advice: an error only means small pages */
        }
        memset(p, 0, n);
    }
    return p;
}

void hs_free_aligned(void *p)
{
    free(p);
}
