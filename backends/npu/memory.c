/* Memory virtualisation (vNPU's range translation): each tenant sees one virtual off-chip space
 * that grows as its buffers are mapped; physical off-chip memory is handed out in granules,
 * first fit, and each physically contiguous run a buffer gets is one entry (virtual base,
 * physical base, size) of the tenant's range table. DMA translates through the table with a
 * cursor that starts where the last translation hit: tensor-sized, monotonic, repeating
 * accesses step over no entry, or one. */
#include <stdlib.h>
#include <string.h>

#include "backends/npu/npu-impl.h"

/* The first run of free granules at or after *from, at most want long; 0 when none. */
static int64_t next_run(const struct hs_npu_mesh *m, int64_t *from, int64_t want)
{
    int64_t g = *from;
    while (g < m->n_granules && m->granule[g]) {
        g++;
    }
    int64_t n = 0;
    while (g + n < m->n_granules && !m->granule[g + n] && n < want) {
        n++;
    }
    *from = g;
    return n;
}

hs_status hs__npu_region_map(struct hs_npu_mesh *m, struct hs__npu_tenant *t, uintptr_t host,
                             uint64_t size)
{
    const uint64_t gb = (uint64_t)m->cfg.offchip_granule_bytes;
    const int64_t want = (int64_t)((size + gb - 1) / gb);
    if (size == 0 || want > m->n_granules) {
        return HS_E_NOMEM;
    }
    /* Count the runs first, so that a failure changes nothing. */
    int64_t left = want, from = 0;
    int32_t n_runs = 0;
    while (left > 0) {
        const int64_t n = next_run(m, &from, left);
        if (n == 0) {
            return HS_E_NOMEM; /* off-chip memory full */
        }
        n_runs++;
        left -= n;
        from += n;
    }
    if (t->n_ranges + n_runs > m->cfg.range_entries) {
        return HS_E_NOMEM; /* range table full */
    }
    if (t->n_regions == t->cap_regions) {
        const int32_t cap = t->cap_regions ? 2 * t->cap_regions : 4;
        struct hs__npu_region *r = realloc(t->regions, (size_t)cap * sizeof(*r));
        if (!r) {
            return HS_E_NOMEM;
        }
        t->regions = r;
        t->cap_regions = cap;
    }
    struct hs__npu_range *rg = realloc(t->ranges, (size_t)(t->n_ranges + n_runs) * sizeof(*rg));
    if (!rg) {
        return HS_E_NOMEM;
    }
    t->ranges = rg;
    const uint64_t vbase = t->vtop;
    uint64_t v = vbase;
    left = want;
    from = 0;
    while (left > 0) {
        const int64_t n = next_run(m, &from, left);
        memset(m->granule + from, 1, (size_t)n);
        t->ranges[t->n_ranges++] = (struct hs__npu_range){
            .vbase = v, .pbase = (uint64_t)from * gb, .size = (uint64_t)n * gb};
        v += (uint64_t)n * gb;
        left -= n;
        from += n;
    }
    t->vtop = v;
    t->regions[t->n_regions++] =
        (struct hs__npu_region){.host = host, .size = size, .vbase = vbase};
    return HS_OK;
}

void hs__npu_region_unmap(struct hs_npu_mesh *m, struct hs__npu_tenant *t, uintptr_t host)
{
    int32_t r = 0;
    while (r < t->n_regions && t->regions[r].host != host) {
        r++;
    }
    if (r == t->n_regions) {
        return;
    }
    const uint64_t gb = (uint64_t)m->cfg.offchip_granule_bytes;
    const uint64_t v0 = t->regions[r].vbase;
    const uint64_t v1 = v0 + (t->regions[r].size + gb - 1) / gb * gb;
    int32_t kept = 0;
    for (int32_t i = 0; i < t->n_ranges; i++) {
        const struct hs__npu_range *e = &t->ranges[i];
        if (e->vbase >= v0 && e->vbase < v1) {
            memset(m->granule + e->pbase / gb, 0, (size_t)(e->size / gb));
        } else {
            t->ranges[kept++] = *e;
        }
    }
    t->n_ranges = kept;
    memmove(&t->regions[r], &t->regions[r + 1],
            (size_t)(t->n_regions - r - 1) * sizeof(*t->regions));
    t->n_regions--;
}

const struct hs__npu_region *hs__npu_region_find(const struct hs__npu_tenant *t, uintptr_t a)
{
    for (int32_t r = 0; r < t->n_regions; r++) {
        if (a >= t->regions[r].host && a - t->regions[r].host < t->regions[r].size) {
            return &t->regions[r];
        }
    }
    return NULL;
}

hs_status hs__npu_translate(const struct hs__npu_tenant *t, int32_t *cursor, uint64_t vaddr,
                            uint64_t *paddr, int32_t *steps)
{
    const int32_t n = t->n_ranges;
    const int32_t start = *cursor >= 0 && *cursor < n ? *cursor : 0;
    for (int32_t s = 0; s < n; s++) {
        const int32_t i = (start + s) % n;
        const struct hs__npu_range *e = &t->ranges[i];
        if (vaddr >= e->vbase && vaddr - e->vbase < e->size) {
            *paddr = e->pbase + (vaddr - e->vbase);
            *cursor = i;
            if (steps) {
                *steps = s;
            }
            return HS_OK;
        }
    }
    return HS_E_RANGE;
}

hs_status hs__npu_translate_back(const struct hs__npu_tenant *t, uint64_t paddr, uint64_t *vaddr)
{
    for (int32_t i = 0; i < t->n_ranges; i++) {
        const struct hs__npu_range *e = &t->ranges[i];
        if (paddr >= e->pbase && paddr - e->pbase < e->size) {
            *vaddr = e->vbase + (paddr - e->pbase);
            return HS_OK;
        }
    }
    return HS_E_RANGE;
}

void hs__npu_memory_release(struct hs_npu_mesh *m, struct hs__npu_tenant *t)
{
    const uint64_t gb = (uint64_t)m->cfg.offchip_granule_bytes;
    for (int32_t i = 0; i < t->n_ranges; i++) {
        memset(m->granule + t->ranges[i].pbase / gb, 0, (size_t)(t->ranges[i].size / gb));
    }
    t->n_ranges = 0;
    t->n_regions = 0;
}
