/* Topology mapping: which physical cores a tenant's w x h virtual mesh gets.
 *
 * best (vNPU's best-effort mapping): an exact free rectangle if there is one (either way round,
 *   the one that touches most of the chip's edge and of other tenants, so free space stays in
 *   one piece); otherwise connected sets of k free cores: one grown greedily from each free core
 *   (most links into the set first), then every one (Wernicke's ESU enumeration: each connected
 *   set once, disconnected ones never) up to map_budget sets, each scored by the
 *   topology edit distance of its best mapping (request edges that are not links plus links
 *   that are not request edges; branch and bound), then by dilation (the hops of the request's
 *   edges routed inside the set), then by contact; of the winner's symmetric relabelings, the
 *   one whose edges weighted by the traffic of the tenant's multicast tree cross fewest hops
 *   (q comes in at the root's port and goes down the tree, outputs come up: a missing link near
 *   the root costs more than one at a leaf, and a root away from a port costs them all). Sets of
 * the same shape up to translation, rotation and reflection have isomorphic induced graphs, so a
 * shape's best mapping is computed once and reused (the isomorphic candidates are pruned). Branch
 * and bound gets a budget per shape and one for the whole placement, after which a shape's greedy
 * first mapping stands: best effort, in bounded time however large the request. zigzag (the
 * baseline): virtual core i (row-major ids) on the i-th free core in serpentine order, as a
 * compiler that numbers cores along the snake would place them. mig: fixed slices, as GPU MIG
 * partitions: the chip's quarters, halves (two quarters) and the whole; a tenant takes the smallest
 * free slice that holds its rectangle and leaves the rest of it unused. */
#include <stdlib.h>
#include <string.h>

#include "backends/npu/npu-impl.h"

/* Branch-and-bound nodes spent on one shape's mapping (then the best found so far), and on all
 * the shapes of one placement (then each new shape's first, greedy mapping): a few seconds at
 * most on a slow core. */
#define HS__NPU_SHAPE_BUDGET     50000
#define HS__NPU_PLACEMENT_BUDGET 20000000

int32_t hs__npu_mesh_edges(int32_t w, int32_t h)
{
    return w * (h - 1) + h * (w - 1);
}

void hs__npu_serpentine(int32_t w, int32_t h, int32_t *order)
{
    int32_t n = 0;
    for (int32_t y = 0; y < h; y++) {
        for (int32_t i = 0; i < w; i++) {
            order[n++] = y * w + (y % 2 == 0 ? i : w - 1 - i);
        }
    }
}

static bool adjacent(const struct hs_npu_mesh *m, int32_t a, int32_t b)
{
    for (int d = 0; d < HS__NPU_DIRS; d++) {
        if (a != b && hs__npu_neighbor(m, a, d) == b) {
            return true;
        }
    }
    return false;
}

/* Links among the cores marked in in[] (undirected, each pair once). */
static int32_t induced_edges(const struct hs_npu_mesh *m, const int32_t *cells, int32_t k,
                             const int32_t *in)
{
    int32_t e = 0;
    for (int32_t i = 0; i < k; i++) {
        int32_t seen[HS__NPU_DIRS];
        int32_t n_seen = 0;
        for (int d = 0; d < HS__NPU_DIRS; d++) {
            const int32_t n = hs__npu_neighbor(m, cells[i], d);
            bool dup = false;
            for (int32_t s = 0; s < n_seen; s++) {
                dup |= seen[s] == n;
            }
            if (n > cells[i] && in[n] >= 0 && !dup) {
                seen[n_seen++] = n;
                e++;
            }
        }
    }
    return e;
}

int32_t hs__npu_edit_distance(const struct hs_npu_mesh *m, int32_t w, int32_t h, const int32_t *v2p,
                              int32_t *kept)
{
    const int32_t k = w * h;
    int32_t *in = malloc((size_t)m->n_cores * sizeof(*in));
    HS_ASSERT(in);
    for (int32_t c = 0; c < m->n_cores; c++) {
        in[c] = -1;
    }
    for (int32_t v = 0; v < k; v++) {
        in[v2p[v]] = v;
    }
    int32_t common = 0;
    for (int32_t v = 0; v < k; v++) {
        common += v % w + 1 < w && adjacent(m, v2p[v], v2p[v + 1]);
        common += v + w < k && adjacent(m, v2p[v], v2p[v + w]);
    }
    const int32_t eh = induced_edges(m, v2p, k, in);
    free(in);
    if (kept) {
        *kept = common;
    }
    return hs__npu_mesh_edges(w, h) - common + eh - common;
}

/* ---- the best mapping onto a given set: branch and bound ---- */

struct bnb {
    int32_t w, k, eg, eh;
    const int32_t *adj;     /* [k][k] 1 when local cells i and j are links */
    const int32_t *dist;    /* [k][k] hops between them inside the set */
    const int32_t *decided; /* [k + 1] request edges with both ends below v */
    int32_t *assign, *best, *used;
    int32_t best_common, best_dil;
    int64_t nodes, budget;
};

/* Weight of a request edge: the cores below it in the multicast tree (along virtual row 0,
 * then down each virtual column) for a tree edge, 1 for the others; wopen[v] sums the weights
 * of the edges whose later end is v or after. */
static void edge_weights(int32_t w, int32_t h, int32_t *wleft, int32_t *wup, int32_t *wopen)
{
    const int32_t k = w * h;
    for (int32_t v = 0; v < k; v++) {
        const int32_t vx = v % w, vy = v / w;
        wleft[v] = vx == 0 ? 0 : vy == 0 ? (w - vx) * h : 1;
        wup[v] = vy == 0 ? 0 : h - vy;
    }
    wopen[k] = 0;
    for (int32_t v = k - 1; v >= 0; v--) {
        wopen[v] = wopen[v + 1] + wleft[v] + wup[v];
    }
}

/* used_links: links of the set between cells already assigned. Every request edge kept from
 * here on is a link with an end among the cells not yet assigned, so at most eh - used_links
 * more are kept (a tight bound for sparse, irregular sets), and at most the open edges. */
static void bnb_search(struct bnb *b, int32_t v, int32_t common, int32_t dil, int32_t used_links)
{
    if (b->nodes++ > b->budget) {
        return;
    }
    if (v == b->k) {
        if (common > b->best_common) {
            b->best_common = common;
            b->best_dil = dil;
            memcpy(b->best, b->assign, (size_t)b->k * sizeof(*b->best));
        }
        return;
    }
    const int32_t open = b->eg - b->decided[v];
    const int32_t ub = common + HS_MIN(open, b->eh - used_links);
    if (ub <= b->best_common) {
        return; /* only a mapping that keeps more edges is worth finding */
    }
    const int32_t left = v % b->w > 0 ? b->assign[v - 1] : -1;
    const int32_t up = v >= b->w ? b->assign[v - b->w] : -1;
    /* cells that keep both, then one, then none of v's edges to placed neighbours */
    for (int want = 2; want >= 0; want--) {
        for (int32_t c = 0; c < b->k; c++) {
            if (b->used[c]) {
                continue;
            }
            const int32_t gain = (left >= 0 && b->adj[(size_t)left * b->k + c]) +
                                 (up >= 0 && b->adj[(size_t)up * b->k + c]);
            if (gain != want) {
                continue;
            }
            const int32_t d = (left >= 0 ? b->dist[(size_t)left * b->k + c] : 0) +
                              (up >= 0 ? b->dist[(size_t)up * b->k + c] : 0);
            int32_t links = 0;
            for (int32_t j = 0; j < b->k; j++) {
                links += b->used[j] && b->adj[(size_t)c * b->k + j];
            }
            b->used[c] = 1;
            b->assign[v] = c;
            bnb_search(b, v + 1, common + gain, dil + d, used_links + links);
            b->used[c] = 0;
            if (b->nodes > b->budget) {
                return;
            }
        }
    }
}

/* Best mapping of w x h onto cells[k] (local cell index per virtual core into local[]): the
 * most request edges kept (the first such found: cells that keep edges are tried first, so it
 * tends to short routes for the others); returns them and *dil its dilation. */
static int32_t bnb_map(const struct hs_npu_mesh *m, int32_t w, int32_t h, const int32_t *cells,
                       int64_t budget, int32_t *local, int32_t *dil_out, int64_t *nodes)
{
    const int32_t k = w * h;
    int32_t *adj = calloc((size_t)k * k, sizeof(*adj));
    int32_t *dist = malloc((size_t)k * k * sizeof(*dist));
    int32_t *decided = malloc((size_t)(k + 1) * sizeof(*decided));
    int32_t *assign = malloc((size_t)k * sizeof(*assign));
    int32_t *used = calloc((size_t)k, sizeof(*used));
    int32_t *queue = malloc((size_t)k * sizeof(*queue));
    HS_ASSERT(adj && dist && decided && assign && used && queue);
    int32_t eh = 0;
    for (int32_t i = 0; i < k; i++) {
        for (int32_t j = i + 1; j < k; j++) {
            if (adjacent(m, cells[i], cells[j])) {
                adj[(size_t)i * k + j] = adj[(size_t)j * k + i] = 1;
                eh++;
            }
        }
    }
    for (int32_t s = 0; s < k; s++) {
        int32_t *d = dist + (size_t)s * k;
        for (int32_t i = 0; i < k; i++) {
            d[i] = -1;
        }
        int32_t head = 0, tail = 0;
        d[s] = 0;
        queue[tail++] = s;
        while (head < tail) {
            const int32_t u = queue[head++];
            for (int32_t v = 0; v < k; v++) {
                if (adj[(size_t)u * k + v] && d[v] < 0) {
                    d[v] = d[u] + 1;
                    queue[tail++] = v;
                }
            }
        }
        for (int32_t i = 0; i < k; i++) {
            if (d[i] < 0) { /* another component: as far as the whole set */
                d[i] = k;
            }
        }
    }
    decided[0] = 0;
    for (int32_t v = 0; v < k; v++) {
        decided[v + 1] = decided[v] + (v % w > 0) + (v >= w);
    }
    struct bnb b = {.w = w,
                    .k = k,
                    .eg = hs__npu_mesh_edges(w, h),
                    .eh = eh,
                    .adj = adj,
                    .dist = dist,
                    .decided = decided,
                    .assign = assign,
                    .best = local,
                    .used = used,
                    .best_common = -1,
                    .best_dil = INT32_MAX,
                    .budget = budget};
    bnb_search(&b, 0, 0, 0, 0);
    HS_ASSERT(b.best_common >= 0); /* the first path down is always complete */
    *dil_out = b.best_dil;
    *nodes = b.nodes;
    free(queue);
    free(used);
    free(assign);
    free(decided);
    free(dist);
    free(adj);
    return b.best_common;
}

/* Of the mappings v2p composed with the symmetries of the w x h mesh (which relabel the same
 * placement: the same edit distance and dilation), the one whose request edges, weighted by
 * the traffic of the tenant's multicast tree, cross fewest hops inside the set, counting the
 * hops from the nearest memory port to the root for all k cores' traffic: a missing link is
 * cheapest far from the root, and the root best sits at a port. v2p is rewritten with it. */
static void orient(const struct hs_npu_mesh *m, int32_t w, int32_t h, int32_t *v2p)
{
    const int32_t k = w * h;
    int32_t *idx = malloc((size_t)m->n_cores * sizeof(*idx));
    int32_t *dist = malloc((size_t)k * k * sizeof(*dist));
    int32_t *queue = malloc((size_t)k * sizeof(*queue));
    int32_t *wt = malloc((size_t)(3 * k + 1) * sizeof(*wt));
    int32_t *cand = malloc((size_t)k * sizeof(*cand));
    int32_t *best = malloc((size_t)k * sizeof(*best));
    HS_ASSERT(idx && dist && queue && wt && cand && best);
    for (int32_t c = 0; c < m->n_cores; c++) {
        idx[c] = -1;
    }
    for (int32_t v = 0; v < k; v++) {
        idx[v2p[v]] = v;
    }
    for (int32_t s = 0; s < k; s++) { /* hops inside the set, by position in v2p */
        int32_t *d = dist + (size_t)s * k;
        for (int32_t i = 0; i < k; i++) {
            d[i] = -1;
        }
        int32_t head = 0, tail = 0;
        d[s] = 0;
        queue[tail++] = s;
        while (head < tail) {
            const int32_t u = queue[head++];
            for (int dir = 0; dir < HS__NPU_DIRS; dir++) {
                const int32_t n = hs__npu_neighbor(m, v2p[u], dir);
                if (n >= 0 && idx[n] >= 0 && d[idx[n]] < 0) {
                    d[idx[n]] = d[u] + 1;
                    queue[tail++] = idx[n];
                }
            }
        }
        for (int32_t i = 0; i < k; i++) {
            d[i] = d[i] < 0 ? k : d[i];
        }
    }
    edge_weights(w, h, wt, wt + k, wt + 2 * k);
    int64_t best_cost = INT64_MAX;
    for (int t = 0; t < 8; t++) {
        if ((t & 4) && w != h) {
            continue; /* a transpose is a symmetry of square meshes only */
        }
        for (int32_t v = 0; v < k; v++) {
            int32_t x = v % w, y = v / w;
            if (t & 4) {
                const int32_t s = x;
                x = y;
                y = s;
            }
            x = t & 1 ? w - 1 - x : x;
            y = t & 2 ? h - 1 - y : y;
            cand[v] = y * w + x; /* virtual core v takes the place of cand[v] */
        }
        /* the host's leg: every core's q comes in from the port nearest the root */
        int32_t port_hops = INT32_MAX;
        for (int32_t p = 0; p < m->n_ports; p++) {
            port_hops = HS_MIN(port_hops, hs__npu_xy_hops(m, m->port_core[p], v2p[cand[0]]));
        }
        int64_t cost = (int64_t)k * port_hops;
        for (int32_t v = 0; v < k; v++) {
            if (v % w > 0) {
                cost += (int64_t)wt[v] * dist[(size_t)cand[v - 1] * k + cand[v]];
            }
            if (v >= w) {
                cost += (int64_t)wt[k + v] * dist[(size_t)cand[v - w] * k + cand[v]];
            }
        }
        if (cost < best_cost) {
            best_cost = cost;
            for (int32_t v = 0; v < k; v++) {
                best[v] = v2p[cand[v]];
            }
        }
    }
    memcpy(v2p, best, (size_t)k * sizeof(*v2p));
    free(best);
    free(cand);
    free(wt);
    free(queue);
    free(dist);
    free(idx);
}

int32_t hs__npu_map_onto(const struct hs_npu_mesh *m, int32_t w, int32_t h, const int32_t *cells,
                         int64_t budget, int32_t *v2p)
{
    const int32_t k = w * h;
    int32_t *local = malloc((size_t)k * sizeof(*local));
    HS_ASSERT(local);
    int32_t dil;
    int64_t nodes;
    bnb_map(m, w, h, cells, budget, local, &dil, &nodes);
    for (int32_t v = 0; v < k; v++) {
        v2p[v] = cells[local[v]];
    }
    free(local);
    return hs__npu_edit_distance(m, w, h, v2p, NULL);
}

/* ---- shapes up to symmetry ---- */

static int cmp_u32(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* A set of cells as a shape: the least, over the 8 symmetries of the square, of its sorted
 * packed coordinates (translated to start at 0). perm[i] gets the index in the key of cell i. */
static void shape_key(const struct hs_npu_mesh *m, const int32_t *cells, int32_t k, uint32_t *key,
                      int32_t *perm, uint32_t *tmp)
{
    const int32_t X = m->cfg.mesh_x;
    bool have = false;
    int best_t = 0;
    for (int t = 0; t < 8; t++) {
        int32_t minx = INT32_MAX, miny = INT32_MAX;
        for (int32_t i = 0; i < k; i++) {
            int32_t x = cells[i] % X, y = cells[i] / X;
            if (t & 4) {
                const int32_t s = x;
                x = y;
                y = s;
            }
            x = t & 1 ? -x : x;
            y = t & 2 ? -y : y;
            minx = HS_MIN(minx, x);
            miny = HS_MIN(miny, y);
            tmp[i] = 0;
            tmp[k + i] = (uint32_t)x;
            tmp[2 * k + i] = (uint32_t)y;
        }
        for (int32_t i = 0; i < k; i++) {
            tmp[i] = ((uint32_t)((int32_t)tmp[k + i] - minx) << 16) |
                     (uint32_t)((int32_t)tmp[2 * k + i] - miny);
        }
        uint32_t *s = tmp + 3 * k;
        memcpy(s, tmp, (size_t)k * sizeof(*s));
        qsort(s, (size_t)k, sizeof(*s), cmp_u32);
        if (!have || memcmp(s, key, (size_t)k * sizeof(*s)) < 0) {
            memcpy(key, s, (size_t)k * sizeof(*key));
            memcpy(tmp + 4 * k, tmp, (size_t)k * sizeof(*tmp)); /* the cells' packed coords */
            best_t = t;
            have = true;
        }
    }
    (void)best_t;
    for (int32_t i = 0; i < k; i++) {
        int32_t lo = 0, hi = k - 1;
        while (lo < hi) {
            const int32_t mid = (lo + hi) / 2;
            if (key[mid] < tmp[4 * k + i]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        perm[i] = lo;
    }
}

/* Shapes seen so far: open addressing on the key; per shape the request edges kept, the
 * dilation and the virtual core of each key cell. */
struct shape_cache {
    int32_t k;
    size_t cap, n;
    uint32_t *keys; /* [cap][k] */
    int32_t *vals;  /* [cap][k + 2]: kept, dilation, virtual core per key cell */
    bool *full;
};

static uint64_t key_hash(const uint32_t *key, int32_t k)
{
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < k; i++) {
        h = (h ^ key[i]) * 1099511628211ull;
    }
    return h;
}

static bool cache_grow(struct shape_cache *c)
{
    struct shape_cache n = {.k = c->k, .cap = c->cap ? c->cap * 2 : 256};
    n.keys = malloc(n.cap * (size_t)c->k * sizeof(*n.keys));
    n.vals = malloc(n.cap * (size_t)(c->k + 2) * sizeof(*n.vals));
    n.full = calloc(n.cap, sizeof(*n.full));
    if (!n.keys || !n.vals || !n.full) {
        free(n.keys);
        free(n.vals);
        free(n.full);
        return false;
    }
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->full[i]) {
            continue;
        }
        size_t at = key_hash(c->keys + i * c->k, c->k) & (n.cap - 1);
        while (n.full[at]) {
            at = (at + 1) & (n.cap - 1);
        }
        n.full[at] = true;
        memcpy(n.keys + at * c->k, c->keys + i * c->k, (size_t)c->k * sizeof(*n.keys));
        memcpy(n.vals + at * (c->k + 2), c->vals + i * (c->k + 2),
               (size_t)(c->k + 2) * sizeof(*n.vals));
        n.n++;
    }
    free(c->keys);
    free(c->vals);
    free(c->full);
    *c = n;
    return true;
}

/* The slot of key: its values when found (*found), else where to store them (NULL when out of
 * memory). */
static int32_t *cache_slot(struct shape_cache *c, const uint32_t *key, bool *found)
{
    if ((c->n + 1) * 2 > c->cap && !cache_grow(c)) {
        return NULL;
    }
    size_t at = key_hash(key, c->k) & (c->cap - 1);
    while (c->full[at] && memcmp(c->keys + at * c->k, key, (size_t)c->k * sizeof(*key)) != 0) {
        at = (at + 1) & (c->cap - 1);
    }
    *found = c->full[at];
    if (!*found) {
        c->full[at] = true;
        memcpy(c->keys + at * c->k, key, (size_t)c->k * sizeof(*key));
        c->n++;
    }
    return c->vals + at * (c->k + 2);
}

/* ---- connected sets of free cores (ESU) ---- */

struct esu {
    const struct hs_npu_mesh *m;
    int32_t w, h, k, words;
    uint64_t *ext, *nb; /* [k + 1][words] per depth */
    int32_t *sub;
    int64_t n_sets, budget, nodes;
    /* scoring */
    struct shape_cache cache;
    uint32_t *key, *tmp;
    int32_t *perm, *local, *cand;
    int32_t best_ed, best_dil, best_contact;
    int32_t *best; /* v2p */
    bool found, oom;
    int64_t bnb_left; /* branch-and-bound nodes left for this placement (then greedy only) */
};

static bool bit(const uint64_t *s, int32_t i)
{
    return (s[i >> 6] >> (i & 63)) & 1u;
}

static void set_bit(uint64_t *s, int32_t i)
{
    s[i >> 6] |= (uint64_t)1 << (i & 63);
}

/* Neighbouring sides of the set that are the chip's edge or another tenant's core. */
static int32_t contact(const struct hs_npu_mesh *m, const int32_t *cells, int32_t k,
                       const uint64_t *in)
{
    int32_t n = 0;
    for (int32_t i = 0; i < k; i++) {
        for (int d = 0; d < HS__NPU_DIRS; d++) {
            const int32_t c = hs__npu_neighbor(m, cells[i], d);
            n += c < 0 || (m->owner[c] >= 0 && !bit(in, c));
        }
    }
    return n;
}

/* True when two cells of the set are neighbours only through a wrap-around link (on a torus),
 * so the shape's coordinates do not tell its links. */
static bool wraps(const struct hs_npu_mesh *m, const int32_t *cells, int32_t k, const uint64_t *in)
{
    if (!m->cfg.torus) {
        return false;
    }
    const int32_t X = m->cfg.mesh_x;
    for (int32_t i = 0; i < k; i++) {
        for (int d = 0; d < HS__NPU_DIRS; d++) {
            const int32_t c = hs__npu_neighbor(m, cells[i], d);
            if (c >= 0 && bit(in, c) &&
                abs(c % X - cells[i] % X) + abs(c / X - cells[i] / X) != 1) {
                return true;
            }
        }
    }
    return false;
}

static void score_set(struct esu *e, const uint64_t *in)
{
    const int32_t k = e->k;
    const struct hs_npu_mesh *m = e->m;
    int32_t kept, dil;
    const bool cacheable = !wraps(m, e->sub, k, in);
    int32_t *vals = NULL;
    bool found = false;
    if (cacheable) {
        shape_key(m, e->sub, k, e->key, e->perm, e->tmp);
        vals = cache_slot(&e->cache, e->key, &found);
        if (!vals) {
            e->oom = true;
            return;
        }
    }
    if (found) {
        kept = vals[0];
        dil = vals[1];
    } else {
        int64_t nodes;
        const int64_t budget = HS_MAX((int64_t)k, HS_MIN(HS__NPU_SHAPE_BUDGET, e->bnb_left));
        kept = bnb_map(m, e->w, e->h, e->sub, budget, e->local, &dil, &nodes);
        e->bnb_left -= nodes;
        if (vals) {
            vals[0] = kept;
            vals[1] = dil;
            for (int32_t v = 0; v < k; v++) {
                vals[2 + e->perm[e->local[v]]] = v;
            }
        }
    }
    /* edit distance = request edges - kept + set links - kept */
    int32_t eh = 0;
    for (int32_t i = 0; i < k; i++) {
        int32_t seen[HS__NPU_DIRS], n_seen = 0;
        for (int d = 0; d < HS__NPU_DIRS; d++) {
            const int32_t n = hs__npu_neighbor(m, e->sub[i], d);
            bool dup = false;
            for (int32_t j = 0; j < n_seen; j++) {
                dup |= seen[j] == n;
            }
            if (n > e->sub[i] && bit(in, n) && !dup) {
                seen[n_seen++] = n;
                eh++;
            }
        }
    }
    const int32_t ed = hs__npu_mesh_edges(e->w, e->h) - kept + eh - kept;
    if (e->found && (ed > e->best_ed || (ed == e->best_ed && dil > e->best_dil))) {
        return;
    }
    const int32_t ct = contact(m, e->sub, k, in);
    if (e->found && ed == e->best_ed && dil == e->best_dil && ct <= e->best_contact) {
        return;
    }
    e->found = true;
    e->best_ed = ed;
    e->best_dil = dil;
    e->best_contact = ct;
    if (found || vals) {
        /* virtual core of key cell perm[i] is at cell i */
        for (int32_t i = 0; i < k; i++) {
            e->best[vals[2 + e->perm[i]]] = e->sub[i];
        }
    } else {
        for (int32_t v = 0; v < k; v++) {
            e->best[v] = e->sub[e->local[v]];
        }
    }
}

static void esu_extend(struct esu *e, int32_t depth, int32_t v)
{
    if (e->n_sets >= e->budget || e->oom || e->nodes++ > 64 * e->budget) {
        return;
    }
    const int32_t words = e->words;
    uint64_t *ext = e->ext + (size_t)depth * words;
    uint64_t *nb = e->nb + (size_t)depth * words;
    if (depth == e->k) {
        e->n_sets++;
        uint64_t *in = e->ext + (size_t)(e->k + 1) * words; /* the set as bits */
        memset(in, 0, (size_t)words * sizeof(*in));
        for (int32_t i = 0; i < e->k; i++) {
            set_bit(in, e->sub[i]);
        }
        score_set(e, in);
        return;
    }
    for (int32_t wi = 0; wi < words; wi++) {
        while (ext[wi]) {
            const int32_t w = wi * 64 + __builtin_ctzll(ext[wi]);
            ext[wi] &= ext[wi] - 1;
            uint64_t *ext2 = e->ext + (size_t)(depth + 1) * words;
            uint64_t *nb2 = e->nb + (size_t)(depth + 1) * words;
            memcpy(ext2, ext, (size_t)words * sizeof(*ext2));
            memcpy(nb2, nb, (size_t)words * sizeof(*nb2));
            set_bit(nb2, w);
            for (int d = 0; d < HS__NPU_DIRS; d++) {
                const int32_t u = hs__npu_neighbor(e->m, w, d);
                if (u < 0 || e->m->owner[u] >= 0) {
                    continue;
                }
                if (u > v && !bit(nb, u)) {
                    set_bit(ext2, u); /* an exclusive neighbour of w */
                }
                set_bit(nb2, u);
            }
            e->sub[depth] = w;
            esu_extend(e, depth + 1, v);
            if (e->n_sets >= e->budget || e->oom) {
                return;
            }
        }
    }
}

static hs_status map_best(const struct hs_npu_mesh *m, int32_t w, int32_t h, int32_t *v2p)
{
    const int32_t X = m->cfg.mesh_x, Y = m->cfg.mesh_y, k = w * h;
    /* exact rectangles, either way round */
    int32_t best_ct = -1;
    int32_t *cells = malloc((size_t)k * sizeof(*cells));
    uint64_t *in = calloc((size_t)(m->n_cores + 63) / 64, sizeof(*in));
    if (!cells || !in) {
        free(cells);
        free(in);
        return HS_E_NOMEM;
    }
    for (int rot = 0; rot < (w == h ? 1 : 2); rot++) {
        const int32_t rw = rot ? h : w, rh = rot ? w : h;
        for (int32_t y0 = 0; y0 + rh <= Y; y0++) {
            for (int32_t x0 = 0; x0 + rw <= X; x0++) {
                bool free_all = true;
                for (int32_t v = 0; v < k && free_all; v++) {
                    const int32_t vx = v % w, vy = v / w;
                    cells[v] = rot ? (y0 + vx) * X + x0 + vy : (y0 + vy) * X + x0 + vx;
                    free_all = m->owner[cells[v]] < 0;
                }
                if (!free_all) {
                    continue;
                }
                memset(in, 0, (size_t)(m->n_cores + 63) / 64 * sizeof(*in));
                for (int32_t v = 0; v < k; v++) {
                    set_bit(in, cells[v]);
                }
                const int32_t ct = contact(m, cells, k, in);
                if (ct > best_ct) {
                    best_ct = ct;
                    memcpy(v2p, cells, (size_t)k * sizeof(*v2p));
                }
            }
        }
    }
    free(cells);
    free(in);
    if (best_ct >= 0) {
        return HS_OK;
    }
    /* connected sets */
    struct esu e = {.m = m,
                    .w = w,
                    .h = h,
                    .k = k,
                    .words = (m->n_cores + 63) / 64,
                    .budget = m->cfg.map_budget,
                    .best = v2p};
    e.cache.k = k;
    e.ext = calloc((size_t)(k + 2) * e.words, sizeof(*e.ext));
    e.nb = calloc((size_t)(k + 1) * e.words, sizeof(*e.nb));
    e.sub = malloc((size_t)k * sizeof(*e.sub));
    e.key = malloc((size_t)k * sizeof(*e.key));
    e.tmp = malloc((size_t)k * 5 * sizeof(*e.tmp));
    e.perm = malloc((size_t)k * sizeof(*e.perm));
    e.local = malloc((size_t)k * sizeof(*e.local));
    e.bnb_left = HS__NPU_PLACEMENT_BUDGET;
    hs_status st = HS_E_NOMEM;
    if (e.ext && e.nb && e.sub && e.key && e.tmp && e.perm && e.local) {
        /* Seeds first, so a good candidate is in hand however large k is: from every free core,
         * the set grown by the free neighbour with the most links into it. */
        uint64_t *bits = e.ext + (size_t)(k + 1) * e.words;
        for (int32_t v = 0; v < m->n_cores && !e.oom; v++) {
            if (m->owner[v] >= 0) {
                continue;
            }
            memset(bits, 0, (size_t)e.words * sizeof(*bits));
            set_bit(bits, v);
            e.sub[0] = v;
            int32_t n = 1;
            while (n < k) {
                int32_t best = -1, best_links = 0;
                for (int32_t i = 0; i < n; i++) {
                    for (int d = 0; d < HS__NPU_DIRS; d++) {
                        const int32_t u = hs__npu_neighbor(m, e.sub[i], d);
                        if (u < 0 || m->owner[u] >= 0 || bit(bits, u)) {
                            continue;
                        }
                        int32_t links = 0;
                        for (int d2 = 0; d2 < HS__NPU_DIRS; d2++) {
                            const int32_t x = hs__npu_neighbor(m, u, d2);
                            links += x >= 0 && bit(bits, x);
                        }
                        if (links > best_links || (links == best_links && u < best)) {
                            best = u;
                            best_links = links;
                        }
                    }
                }
                if (best < 0) {
                    break; /* this piece of free cores is too small */
                }
                set_bit(bits, best);
                e.sub[n++] = best;
            }
            if (n == k) {
                score_set(&e, bits);
            }
        }
        for (int32_t v = 0; v < m->n_cores && e.n_sets < e.budget && !e.oom; v++) {
            if (m->owner[v] >= 0) {
                continue;
            }
            /* depth 1: the set {v}; its exclusive neighbours above v to extend with */
            uint64_t *ext1 = e.ext + e.words, *nb1 = e.nb + e.words;
            memset(ext1, 0, (size_t)e.words * sizeof(*ext1));
            memset(nb1, 0, (size_t)e.words * sizeof(*nb1));
            set_bit(nb1, v);
            for (int d = 0; d < HS__NPU_DIRS; d++) {
                const int32_t u = hs__npu_neighbor(m, v, d);
                if (u >= 0 && m->owner[u] < 0) {
                    set_bit(nb1, u);
                    if (u > v) {
                        set_bit(ext1, u);
                    }
                }
            }
            e.sub[0] = v;
            if (k > 1) { /* a single core was a seed */
                esu_extend(&e, 1, v);
            }
        }
        st = e.oom ? HS_E_NOMEM : e.found ? HS_OK : HS_E_BUSY;
        if (st == HS_OK) {
            orient(m, w, h, v2p);
        }
    }
    free(e.ext);
    free(e.nb);
    free(e.sub);
    free(e.key);
    free(e.tmp);
    free(e.perm);
    free(e.local);
    free(e.cache.keys);
    free(e.cache.vals);
    free(e.cache.full);
    return st;
}

/* ---- zig-zag and MIG ---- */

static hs_status map_zigzag(const struct hs_npu_mesh *m, int32_t w, int32_t h, int32_t *v2p)
{
    const int32_t k = w * h;
    int32_t *phys = malloc((size_t)m->n_cores * sizeof(*phys));
    if (!phys) {
        return HS_E_NOMEM;
    }
    hs__npu_serpentine(m->cfg.mesh_x, m->cfg.mesh_y, phys);
    int32_t n = 0;
    for (int32_t i = 0; i < m->n_cores && n < k; i++) {
        if (m->owner[phys[i]] < 0) {
            v2p[n++] = phys[i];
        }
    }
    free(phys);
    return n == k ? HS_OK : HS_E_BUSY;
}

static hs_status map_mig(const struct hs_npu_mesh *m, int32_t w, int32_t h, int32_t *v2p,
                         int32_t *reserved, int32_t *n_reserved)
{
    const int32_t X = m->cfg.mesh_x, Y = m->cfg.mesh_y;
    const int32_t xs = (X + 1) / 2, ys = (Y + 1) / 2;
    /* quarters (x0, y0, x1, y1), halves, the whole chip */
    const int32_t slices[9][4] = {
        {0, 0, xs, ys}, {xs, 0, X, ys}, {0, ys, xs, Y}, {xs, ys, X, Y}, /* quarters */
        {0, 0, X, ys},  {0, ys, X, Y},  {0, 0, xs, Y},  {xs, 0, X, Y},  /* halves */
        {0, 0, X, Y},
    };
    int best = -1;
    for (int s = 0; s < 9; s++) {
        const int32_t sw = slices[s][2] - slices[s][0], sh = slices[s][3] - slices[s][1];
        if (sw <= 0 || sh <= 0 || !((w <= sw && h <= sh) || (h <= sw && w <= sh))) {
            continue;
        }
        bool free_all = true;
        for (int32_t y = slices[s][1]; y < slices[s][3] && free_all; y++) {
            for (int32_t x = slices[s][0]; x < slices[s][2] && free_all; x++) {
                free_all = m->owner[y * X + x] < 0;
            }
        }
        if (free_all && (best < 0 || sw * sh < (slices[best][2] - slices[best][0]) *
                                                   (slices[best][3] - slices[best][1]))) {
            best = s;
        }
    }
    if (best < 0) {
        return HS_E_BUSY;
    }
    const int32_t *sl = slices[best];
    const bool rot = !(w <= sl[2] - sl[0] && h <= sl[3] - sl[1]);
    for (int32_t v = 0; v < w * h; v++) {
        const int32_t vx = v % w, vy = v / w;
        v2p[v] = rot ? (sl[1] + vx) * X + sl[0] + vy : (sl[1] + vy) * X + sl[0] + vx;
    }
    *n_reserved = 0;
    for (int32_t y = sl[1]; y < sl[3]; y++) {
        for (int32_t x = sl[0]; x < sl[2]; x++) {
            const int32_t lx = rot ? y - sl[1] : x - sl[0], ly = rot ? x - sl[0] : y - sl[1];
            if (lx >= w || ly >= h) {
                reserved[(*n_reserved)++] = y * X + x;
            }
        }
    }
    return HS_OK;
}

hs_status hs__npu_map(const struct hs_npu_mesh *m, int32_t w, int32_t h, enum hs_npu_mapper how,
                      int32_t *v2p, int32_t *reserved, int32_t *n_reserved)
{
    *n_reserved = 0;
    if (w * h > hs_npu_mesh_free_cores(m)) {
        return HS_E_BUSY;
    }
    switch (how) {
    case HS_NPU_MAPPER_ZIGZAG:
        return map_zigzag(m, w, h, v2p);
    case HS_NPU_MAPPER_MIG:
        return map_mig(m, w, h, v2p, reserved, n_reserved);
    case HS_NPU_MAPPER_BEST:
        return map_best(m, w, h, v2p);
    case HS_NPU_MAPPER_COUNT:
        break;
    }
    return HS_E_INVAL;
}
