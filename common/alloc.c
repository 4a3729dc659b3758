#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>

void *hs_alloc_aligned(size_t size_bytes)
{
    size_t n = hs_align_up(size_bytes ? size_bytes : 1, HS_ALIGN_BYTES);
    void *p = aligned_alloc(HS_ALIGN_BYTES, n);
    if (p) {
        memset(p, 0, n);
    }
    return p;
}

void hs_free_aligned(void *p)
{
    free(p);
}
