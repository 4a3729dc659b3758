/* The mesh: topology and XY routing, memory ports, tenants with their route tables (virtual to
 * physical core ids, directions pinned where XY would leave the tenant), the virtual tree that
 * multicasts q, and what a core's off-chip traffic crosses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/npu/npu-impl.h"

/* ---- topology ---- */

int32_t hs__npu_neighbor(const struct hs_npu_mesh *m, int32_t core, int dir)
{
    const int32_t X = m->cfg.mesh_x, Y = m->cfg.mesh_y;
    int32_t x = core % X, y = core / X;
    switch (dir) {
    case HS__NPU_EAST:
        x++;
        break;
    case HS__NPU_WEST:
        x--;
        break;
    case HS__NPU_SOUTH:
        y++;
        break;
    case HS__NPU_NORTH:
        y--;
        break;
    default:
        return -1;
    }
    if (x < 0 || x >= X || y < 0 || y >= Y) {
        if (!m->cfg.torus || (X == 1 && (dir == HS__NPU_EAST || dir == HS__NPU_WEST)) ||
            (Y == 1 && (dir == HS__NPU_SOUTH || dir == HS__NPU_NORTH))) {
            return -1;
        }
        x = (x + X) % X;
        y = (y + Y) % Y;
    }
    return y * X + x;
}

/* Steps from a to b along one dimension of size n: forward (+1), back (-1) or none, and how
 * many. On a torus the shorter way (forward on a tie). */
static int32_t axis_step(int32_t a, int32_t b, int32_t n, bool torus, int32_t *dist)
{
    if (a == b) {
        *dist = 0;
        return 0;
    }
    if (!torus) {
        *dist = b > a ? b - a : a - b;
        return b > a ? 1 : -1;
    }
    const int32_t fwd = (b - a + n) % n;
    *dist = fwd <= n - fwd ? fwd : n - fwd;
    return fwd <= n - fwd ? 1 : -1;
}

int hs__npu_xy_dir(const struct hs_npu_mesh *m, int32_t a, int32_t b)
{
    const int32_t X = m->cfg.mesh_x;
    int32_t d;
    const int32_t sx = axis_step(a % X, b % X, X, m->cfg.torus, &d);
    if (sx) {
        return sx > 0 ? HS__NPU_EAST : HS__NPU_WEST;
    }
    const int32_t sy = axis_step(a / X, b / X, m->cfg.mesh_y, m->cfg.torus, &d);
    if (sy) {
        return sy > 0 ? HS__NPU_SOUTH : HS__NPU_NORTH;
    }
    return HS__NPU_DIRS;
}

int32_t hs__npu_xy_hops(const struct hs_npu_mesh *m, int32_t a, int32_t b)
{
    const int32_t X = m->cfg.mesh_x;
    int32_t dx, dy;
    axis_step(a % X, b % X, X, m->cfg.torus, &dx);
    axis_step(a / X, b / X, m->cfg.mesh_y, m->cfg.torus, &dy);
    return dx + dy;
}

int32_t hs__npu_xy_links(const struct hs_npu_mesh *m, int32_t a, int32_t b, int32_t *links)
{
    int32_t n = 0;
    while (a != b) {
        const int d = hs__npu_xy_dir(m, a, b);
        links[n++] = a * HS__NPU_DIRS + d;
        a = hs__npu_neighbor(m, a, d);
    }
    return n;
}

/* ---- the mesh ---- */

hs_status hs_npu_mesh_create(const struct hs_npu_config *cfg, struct hs_npu_mesh **out)
{
    *out = NULL;
    if (!cfg || hs_npu_config_check(cfg, NULL) != HS_OK) {
        return HS_E_INVAL;
    }
    struct hs_npu_mesh *m = calloc(1, sizeof(*m));
    if (!m) {
        return HS_E_NOMEM;
    }
    m->cfg = *cfg;
    const int32_t X = cfg->mesh_x, Y = cfg->mesh_y;
    m->n_cores = X * Y;
    const uint32_t e = cfg->mem_edges;
    m->n_ports = ((e & HS_NPU_EDGE_WEST) ? Y : 0) + ((e & HS_NPU_EDGE_EAST) ? Y : 0) +
                 ((e & HS_NPU_EDGE_NORTH) ? X : 0) + ((e & HS_NPU_EDGE_SOUTH) ? X : 0);
    m->n_links = m->n_cores * HS__NPU_DIRS + 2 * m->n_ports;
    m->n_granules = cfg->offchip_bytes / cfg->offchip_granule_bytes;
    const int32_t max_k = HS_MIN(m->n_cores, cfg->route_entries);
    m->owner = malloc((size_t)m->n_cores * sizeof(*m->owner));
    m->port_core = malloc((size_t)m->n_ports * sizeof(*m->port_core));
    m->link_width = calloc((size_t)m->n_links, sizeof(*m->link_width));
    m->granule = calloc((size_t)m->n_granules, 1);
    m->load = calloc((size_t)m->n_links, sizeof(*m->load));
    m->stamp = calloc((size_t)m->n_links, sizeof(*m->stamp));
    m->vstamp = calloc((size_t)max_k, sizeof(*m->vstamp));
    m->vbytes = calloc((size_t)max_k * 3, sizeof(*m->vbytes));
    if (!m->owner || !m->port_core || !m->link_width || !m->granule || !m->load || !m->stamp ||
        !m->vstamp || !m->vbytes) {
        hs_npu_mesh_destroy(m);
        return HS_E_NOMEM;
    }
    for (int32_t c = 0; c < m->n_cores; c++) {
        m->owner[c] = -1;
        for (int d = 0; d < HS__NPU_DIRS; d++) {
            if (hs__npu_neighbor(m, c, d) >= 0) {
                m->link_width[c * HS__NPU_DIRS + d] = cfg->link_bytes;
            }
        }
    }
    int32_t p = 0;
    for (int32_t y = 0; y < Y && (e & HS_NPU_EDGE_WEST); y++) {
        m->port_core[p++] = y * X;
    }
    for (int32_t y = 0; y < Y && (e & HS_NPU_EDGE_EAST); y++) {
        m->port_core[p++] = y * X + X - 1;
    }
    for (int32_t x = 0; x < X && (e & HS_NPU_EDGE_NORTH); x++) {
        m->port_core[p++] = x;
    }
    for (int32_t x = 0; x < X && (e & HS_NPU_EDGE_SOUTH); x++) {
        m->port_core[p++] = (Y - 1) * X + x;
    }
    /* A port moves its share of the off-chip bandwidth, per cycle. */
    const double port_width = cfg->offchip_bytes_per_s / cfg->clock_hz / m->n_ports;
    for (p = 0; p < m->n_ports; p++) {
        m->link_width[m->n_cores * HS__NPU_DIRS + 2 * p] = port_width;
        m->link_width[m->n_cores * HS__NPU_DIRS + 2 * p + 1] = port_width;
    }
    *out = m;
    return HS_OK;
}

static void tenant_free(struct hs_npu_mesh *m, struct hs__npu_tenant *t)
{
    hs__npu_memory_release(m, t);
    free(t->v2p);
    free(t->p2v);
    free(t->next_dir);
    free(t->hops);
    free(t->outside);
    free(t->reserved);
    free(t->parent);
    free(t->serp);
    free(t->ranges);
    free(t->regions);
    free(t->mem_off);
    free(t->mem_link);
    free(t->mem_share);
    memset(t, 0, sizeof(*t));
}

void hs_npu_mesh_destroy(struct hs_npu_mesh *m)
{
    if (!m) {
        return;
    }
    for (int32_t i = 0; i < m->cap_tenants; i++) {
        if (m->tenants[i].live) {
            tenant_free(m, &m->tenants[i]);
        }
    }
    free(m->tenants);
    free(m->owner);
    free(m->port_core);
    free(m->link_width);
    free(m->granule);
    free(m->load);
    free(m->stamp);
    free(m->vstamp);
    free(m->vbytes);
    free(m->pref);
    free(m->pref_at);
    free(m);
}

const struct hs_npu_config *hs_npu_mesh_config(const struct hs_npu_mesh *m)
{
    return &m->cfg;
}

int32_t hs_npu_mesh_n_cores(const struct hs_npu_mesh *m)
{
    return m->n_cores;
}

int32_t hs_npu_mesh_free_cores(const struct hs_npu_mesh *m)
{
    int32_t n = 0;
    for (int32_t c = 0; c < m->n_cores; c++) {
        n += m->owner[c] < 0;
    }
    return n;
}

int32_t hs_npu_mesh_n_tenants(const struct hs_npu_mesh *m)
{
    int32_t n = 0;
    for (int32_t i = 0; i < m->cap_tenants; i++) {
        n += m->tenants[i].live;
    }
    return n;
}

struct hs__npu_tenant *hs__npu_tenant_get(struct hs_npu_mesh *m, int32_t id)
{
    return id >= 0 && id < m->cap_tenants && m->tenants[id].live ? &m->tenants[id] : NULL;
}

/* ---- route tables ---- */

hs_status hs__npu_route(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t, int32_t vid,
                        int32_t *pid)
{
    if (vid < 0 || vid >= t->k || vid >= m->cfg.route_entries) {
        return HS_E_RANGE;
    }
    *pid = t->v2p[vid];
    return HS_OK;
}

int32_t hs__npu_route_back(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t, int32_t pid)
{
    return pid >= 0 && pid < m->n_cores ? t->p2v[pid] : -1;
}

int32_t hs__npu_route_links(const struct hs_npu_mesh *m, const struct hs__npu_tenant *t, int32_t i,
                            int32_t j, int32_t *links)
{
    if (t->outside[(size_t)i * t->k + j]) {
        return hs__npu_xy_links(m, t->v2p[i], t->v2p[j], links);
    }
    int32_t n = 0;
    while (i != j) {
        const int d = t->next_dir[(size_t)i * t->k + j];
        links[n++] = t->v2p[i] * HS__NPU_DIRS + d;
        i = t->p2v[hs__npu_neighbor(m, t->v2p[i], d)];
    }
    return n;
}

/* The route table's directions: for each destination, a breadth-first search inside the tenant
 * gives every core's distance to it; a core takes the XY direction when that is a step closer
 * inside the tenant, otherwise the first direction that is (the entry is then pinned). A
 * destination out of reach inside the tenant is routed XY over the whole chip. */
static hs_status build_routes(const struct hs_npu_mesh *m, struct hs__npu_tenant *t)
{
    const int32_t k = t->k;
    int32_t *dist = malloc((size_t)k * sizeof(*dist));
    int32_t *queue = malloc((size_t)k * sizeof(*queue));
    if (!dist || !queue) {
        free(dist);
        free(queue);
        return HS_E_NOMEM;
    }
    t->n_pinned = 0;
    for (int32_t j = 0; j < k; j++) {
        for (int32_t i = 0; i < k; i++) {
            dist[i] = -1;
        }
        int32_t head = 0, tail = 0;
        dist[j] = 0;
        queue[tail++] = j;
        while (head < tail) {
            const int32_t v = queue[head++];
            for (int d = 0; d < HS__NPU_DIRS; d++) {
                const int32_t n = hs__npu_neighbor(m, t->v2p[v], d);
                const int32_t u = n >= 0 ? t->p2v[n] : -1;
                if (u >= 0 && dist[u] < 0) {
                    dist[u] = dist[v] + 1;
                    queue[tail++] = u;
                }
            }
        }
        for (int32_t i = 0; i < k; i++) {
            const size_t at = (size_t)i * k + j;
            const int xy = hs__npu_xy_dir(m, t->v2p[i], t->v2p[j]);
            t->outside[at] = dist[i] < 0;
            if (i == j || dist[i] < 0) {
                t->next_dir[at] = (uint8_t)xy;
                t->hops[at] = (uint8_t)HS_MIN(255, hs__npu_xy_hops(m, t->v2p[i], t->v2p[j]));
                continue;
            }
            t->hops[at] = (uint8_t)HS_MIN(255, dist[i]);
            int chosen = -1;
            for (int pass = 0; pass < 2 && chosen < 0; pass++) {
                for (int d = 0; d < HS__NPU_DIRS && chosen < 0; d++) {
                    if (pass == 0 && d != xy) {
                        continue;
                    }
                    const int32_t n = hs__npu_neighbor(m, t->v2p[i], d);
                    const int32_t u = n >= 0 ? t->p2v[n] : -1;
                    if (u >= 0 && dist[u] == dist[i] - 1) {
                        chosen = d;
                    }
                }
            }
            HS_ASSERT(chosen >= 0);
            t->next_dir[at] = (uint8_t)chosen;
            t->n_pinned += chosen != xy;
        }
    }
    free(queue);
    free(dist);
    return HS_OK;
}

/* What a core's off-chip bytes cross: an equal share from every port (channels interleave
 * finely), each along the port's XY route to the core, plus the port's own link. */
static hs_status build_mem_routes(const struct hs_npu_mesh *m, struct hs__npu_tenant *t)
{
    double *share = calloc((size_t)m->n_links, sizeof(*share));
    int32_t *touched = malloc((size_t)m->n_links * sizeof(*touched));
    int32_t *links = malloc((size_t)(m->cfg.mesh_x + m->cfg.mesh_y + 2) * sizeof(*links));
    size_t cap = (size_t)t->k * 16, n = 0;
    t->mem_off = malloc((size_t)(t->k + 1) * sizeof(*t->mem_off));
    t->mem_link = malloc(cap * sizeof(*t->mem_link));
    t->mem_share = malloc(cap * sizeof(*t->mem_share));
    hs_status st = HS_OK;
    if (!share || !touched || !links || !t->mem_off || !t->mem_link || !t->mem_share) {
        st = HS_E_NOMEM;
        goto done;
    }
    const double w = 1.0 / m->n_ports;
    for (int32_t c = 0; c < t->k; c++) {
        int32_t n_touched = 0;
        for (int32_t p = 0; p < m->n_ports; p++) {
            const int32_t in = m->n_cores * HS__NPU_DIRS + 2 * p;
            if (share[in] == 0) {
                touched[n_touched++] = in;
            }
            share[in] += w;
            const int32_t nl = hs__npu_xy_links(m, m->port_core[p], t->v2p[c], links);
            for (int32_t i = 0; i < nl; i++) {
                if (share[links[i]] == 0) {
                    touched[n_touched++] = links[i];
                }
                share[links[i]] += w;
            }
        }
        t->mem_off[c] = (int32_t)n;
        if (n + (size_t)n_touched > cap) {
            cap = (n + (size_t)n_touched) * 2;
            int32_t *l2 = realloc(t->mem_link, cap * sizeof(*l2));
            double *s2 = l2 ? realloc(t->mem_share, cap * sizeof(*s2)) : NULL;
            if (l2) {
                t->mem_link = l2;
            }
            if (!s2) {
                st = HS_E_NOMEM;
                goto done;
            }
            t->mem_share = s2;
        }
        for (int32_t i = 0; i < n_touched; i++) {
            t->mem_link[n] = touched[i];
            t->mem_share[n++] = share[touched[i]];
            share[touched[i]] = 0;
        }
    }
    t->mem_off[t->k] = (int32_t)n;
done:
    free(links);
    free(touched);
    free(share);
    return st;
}

/* ---- tenants ---- */

hs_status hs_npu_tenant_create(struct hs_npu_mesh *m, int32_t w, int32_t h, enum hs_npu_mapper how,
                               int32_t *id)
{
    *id = -1;
    if (w < 1 || h < 1 || w > 64 || h > 64 || (unsigned)how >= HS_NPU_MAPPER_COUNT) {
        return HS_E_INVAL;
    }
    const int32_t k = w * h;
    if (k > m->cfg.route_entries) {
        return HS_E_INVAL;
    }
    if (k > m->n_cores) {
        return HS_E_BUSY;
    }
    int32_t slot = 0;
    while (slot < m->cap_tenants && m->tenants[slot].live) {
        slot++;
    }
    if (slot == m->cap_tenants) {
        const int32_t cap = m->cap_tenants ? 2 * m->cap_tenants : 4;
        struct hs__npu_tenant *nt = realloc(m->tenants, (size_t)cap * sizeof(*nt));
        if (!nt) {
            return HS_E_NOMEM;
        }
        memset(nt + m->cap_tenants, 0, (size_t)(cap - m->cap_tenants) * sizeof(*nt));
        m->tenants = nt;
        m->cap_tenants = cap;
    }
    struct hs__npu_tenant *t = &m->tenants[slot];
    memset(t, 0, sizeof(*t));
    t->w = w;
    t->h = h;
    t->k = k;
    t->mapper = how;
    t->v2p = malloc((size_t)k * sizeof(*t->v2p));
    t->p2v = malloc((size_t)m->n_cores * sizeof(*t->p2v));
    t->reserved = malloc((size_t)m->n_cores * sizeof(*t->reserved));
    t->next_dir = malloc((size_t)k * (size_t)k);
    t->hops = malloc((size_t)k * (size_t)k);
    t->outside = malloc((size_t)k * (size_t)k * sizeof(*t->outside));
    t->parent = malloc((size_t)k * sizeof(*t->parent));
    t->serp = malloc((size_t)k * sizeof(*t->serp));
    hs_status st = HS_E_NOMEM;
    if (!t->v2p || !t->p2v || !t->reserved || !t->next_dir || !t->hops || !t->outside ||
        !t->parent || !t->serp) {
        goto fail;
    }
    st = hs__npu_map(m, w, h, how, t->v2p, t->reserved, &t->n_reserved);
    if (st != HS_OK) {
        goto fail;
    }
    for (int32_t c = 0; c < m->n_cores; c++) {
        t->p2v[c] = -1;
    }
    for (int32_t v = 0; v < k; v++) {
        HS_ASSERT(m->owner[t->v2p[v]] < 0 && t->p2v[t->v2p[v]] < 0);
        t->p2v[t->v2p[v]] = v;
    }
    if ((st = build_routes(m, t)) != HS_OK || (st = build_mem_routes(m, t)) != HS_OK) {
        goto fail;
    }
    /* The virtual tree: along virtual row 0, then down each virtual column. */
    for (int32_t v = 0; v < k; v++) {
        t->parent[v] = v >= w ? v - w : v - 1;
    }
    hs__npu_serpentine(w, h, t->serp);
    t->root_port = 0;
    for (int32_t p = 1; p < m->n_ports; p++) {
        if (hs__npu_xy_hops(m, m->port_core[p], t->v2p[0]) <
            hs__npu_xy_hops(m, m->port_core[t->root_port], t->v2p[0])) {
            t->root_port = p;
        }
    }
    t->edit_distance = hs__npu_edit_distance(m, w, h, t->v2p, &t->edges_kept);
    t->dilation = 0;
    for (int32_t v = 0; v < k; v++) {
        const int32_t vx = v % w;
        if (vx + 1 < w) {
            t->dilation += t->hops[(size_t)v * k + v + 1];
        }
        if (v + w < k) {
            t->dilation += t->hops[(size_t)v * k + v + w];
        }
    }
    t->live = true;
    for (int32_t v = 0; v < k; v++) {
        m->owner[t->v2p[v]] = slot;
    }
    for (int32_t i = 0; i < t->n_reserved; i++) {
        m->owner[t->reserved[i]] = slot;
    }
    *id = slot;
    return HS_OK;
fail:
    tenant_free(m, t);
    return st;
}

void hs_npu_tenant_release(struct hs_npu_mesh *m, int32_t id)
{
    struct hs__npu_tenant *t = m ? hs__npu_tenant_get(m, id) : NULL;
    if (!t) {
        return;
    }
    for (int32_t v = 0; v < t->k; v++) {
        m->owner[t->v2p[v]] = -1;
    }
    for (int32_t i = 0; i < t->n_reserved; i++) {
        m->owner[t->reserved[i]] = -1;
    }
    tenant_free(m, t);
}

hs_status hs_npu_tenant_info(const struct hs_npu_mesh *m, int32_t id,
                             struct hs_npu_tenant_info *out)
{
    const struct hs__npu_tenant *t = hs__npu_tenant_get((struct hs_npu_mesh *)m, id);
    if (!t) {
        return HS_E_NOENT;
    }
    *out = (struct hs_npu_tenant_info){
        .w = t->w,
        .h = t->h,
        .n_cores = t->k,
        .mapper = t->mapper,
        .edit_distance = t->edit_distance,
        .edges_kept = t->edges_kept,
        .dilation = t->dilation,
        .n_pinned = t->n_pinned,
        .n_reserved = t->n_reserved,
        .n_ranges = t->n_ranges,
        .phys = t->v2p,
    };
    return HS_OK;
}

size_t hs_npu_mesh_draw(const struct hs_npu_mesh *m, char *buf, size_t cap)
{
    size_t n = 0, written = 0;
    for (int32_t c = 0; c < m->n_cores; c++) {
        const int32_t id = m->owner[c];
        char ch = '.';
        if (id >= 0) {
            const bool used = m->tenants[id].p2v[c] >= 0;
            ch = (char)((used ? 'A' : 'a') + id % 26);
        }
        const bool eol = (c + 1) % m->cfg.mesh_x == 0;
        if (buf && n + 2 < cap) {
            buf[n] = ch;
            buf[n + 1] = eol ? '\n' : ' ';
            written = n + 2;
        }
        n += 2;
    }
    if (buf && cap > 0) {
        buf[written] = '\0';
    }
    return n;
}
