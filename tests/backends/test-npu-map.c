/* The simulated NPU's virtualisation (backends/npu): configuration files and tenant specs, the
 * mappers (vNPU's two 3x3 tenants on a 5x5 chip, MIG-style slices, the zig-zag order, edit
 * distances of known shapes, release and re-map), the route tables and the range translation
 * tables. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/npu/npu-impl.h"

static struct hs_npu_mesh *make_mesh(int32_t x, int32_t y)
{
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
    c.mesh_x = x;
    c.mesh_y = y;
    struct hs_npu_mesh *m = NULL;
    cr_assert_eq(hs_npu_mesh_create(&c, &m), HS_OK);
    return m;
}

/* Every virtual core of tenant id is a distinct core the mesh says is the tenant's. */
static void expect_owned(struct hs_npu_mesh *m, int32_t id)
{
    struct hs_npu_tenant_info ti;
    cr_assert_eq(hs_npu_tenant_info(m, id, &ti), HS_OK);
    for (int32_t v = 0; v < ti.n_cores; v++) {
        cr_assert_eq(m->owner[ti.phys[v]], id, "virtual core %d", v);
        for (int32_t u = 0; u < v; u++) {
            cr_assert_neq(ti.phys[u], ti.phys[v]);
        }
    }
}

/* Cores reachable from the tenant's first core through its own cores. */
static int32_t connected_cores(struct hs_npu_mesh *m, int32_t id)
{
    struct hs_npu_tenant_info ti;
    hs_npu_tenant_info(m, id, &ti);
    int32_t seen[128] = {0}, queue[128], head = 0, tail = 0;
    struct hs__npu_tenant *t = hs__npu_tenant_get(m, id);
    seen[0] = 1;
    queue[tail++] = 0;
    while (head < tail) {
        const int32_t v = queue[head++];
        for (int d = 0; d < HS__NPU_DIRS; d++) {
            const int32_t n = hs__npu_neighbor(m, ti.phys[v], d);
            const int32_t u = n >= 0 ? t->p2v[n] : -1;
            if (u >= 0 && !seen[u]) {
                seen[u] = 1;
                queue[tail++] = u;
            }
        }
    }
    return tail;
}

/* ---- the mapping example ---- */

Test(npu_map, two_3x3_tenants_on_a_5x5_chip_both_placed)
{
    struct hs_npu_mesh *m = make_mesh(5, 5);
    int32_t a, b;
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &a), HS_OK);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &b), HS_OK);
    struct hs_npu_tenant_info ia, ib;
    hs_npu_tenant_info(m, a, &ia);
    hs_npu_tenant_info(m, b, &ib);
    cr_assert_eq(ia.edit_distance, 0, "the first gets an exact 3x3");
    cr_assert_eq(ia.edges_kept, 12);
    cr_assert_eq(ia.dilation, 12);
    cr_assert_gt(ib.edit_distance, 0, "the second cannot be square");
    cr_assert_eq(connected_cores(m, b), 9, "the second is one connected piece");
    expect_owned(m, a);
    expect_owned(m, b);
    cr_assert_eq(hs_npu_mesh_free_cores(m), 25 - 18);
    /* the first sits in a corner, so the rest stays in one piece */
    char map[128];
    hs_npu_mesh_draw(m, map, sizeof(map));
    cr_assert(strncmp(map, "A A A", 5) == 0, "map:\n%s", map);
    /* the best-effort mapper's second placement: as good as any connected 9 of the 16 free
     * cores (the L of width 2 left by a corner square: its best is a 2x4 with one more core) */
    cr_assert_leq(ib.edit_distance, 5, "edit distance %d", ib.edit_distance);
    hs_npu_mesh_destroy(m);
}

Test(npu_map, mig_slices_fit_only_one_3x3_on_5x5)
{
    struct hs_npu_mesh *m = make_mesh(5, 5);
    int32_t a, b = -2;
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_MIG, &a), HS_OK);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_MIG, &b), HS_E_BUSY);
    cr_assert_eq(b, -1);
    struct hs_npu_tenant_info ia;
    hs_npu_tenant_info(m, a, &ia);
    cr_assert_eq(ia.edit_distance, 0);
    cr_assert_eq(ia.n_reserved, 0, "the 3x3 quarter is exactly 3x3");
    /* a 2x2 takes the 2x2 quarter; a 2x3 the 2x3 one, rotated or not */
    int32_t c, d;
    cr_assert_eq(hs_npu_tenant_create(m, 2, 2, HS_NPU_MAPPER_MIG, &c), HS_OK);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 2, HS_NPU_MAPPER_MIG, &d), HS_OK);
    struct hs_npu_tenant_info id;
    hs_npu_tenant_info(m, d, &id);
    cr_assert_eq(id.edit_distance, 0);
    /* MIG leaves the rest of a slice unused: a 1x1 in the last quarter holds it all */
    int32_t e;
    cr_assert_eq(hs_npu_tenant_create(m, 1, 1, HS_NPU_MAPPER_MIG, &e), HS_OK);
    struct hs_npu_tenant_info ie;
    hs_npu_tenant_info(m, e, &ie);
    cr_assert_eq(ie.n_reserved, 5);
    cr_assert_eq(hs_npu_mesh_free_cores(m), 0);
    /* the best-effort mapper, on the same chip, places the second 3x3 (above) */
    hs_npu_mesh_destroy(m);
}

Test(npu_map, zigzag_takes_free_cores_in_serpentine_order)
{
    struct hs_npu_mesh *m = make_mesh(6, 6);
    int32_t a;
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_ZIGZAG, &a), HS_OK);
    struct hs_npu_tenant_info ti;
    hs_npu_tenant_info(m, a, &ti);
    /* virtual cores 0..8 on the physical serpentine 0..5, 11 10 9 */
    static const int32_t want[9] = {0, 1, 2, 3, 4, 5, 11, 10, 9};
    for (int v = 0; v < 9; v++) {
        cr_assert_eq(ti.phys[v], want[v], "virtual core %d on %d", v, ti.phys[v]);
    }
    cr_assert_gt(ti.edit_distance, 0);
    /* the next takes up after it, skipping what is taken */
    int32_t b;
    cr_assert_eq(hs_npu_tenant_create(m, 2, 1, HS_NPU_MAPPER_ZIGZAG, &b), HS_OK);
    hs_npu_tenant_info(m, b, &ti);
    cr_assert_eq(ti.phys[0], 8);
    cr_assert_eq(ti.phys[1], 7);
    hs_npu_mesh_destroy(m);
}

Test(npu_map, edit_distance_of_known_shapes)
{
    struct hs_npu_mesh *m = make_mesh(6, 6);
    int32_t v2p[9];
    /* a 2x2 on a row of four: the cycle loses one edge */
    const int32_t row4[4] = {0, 1, 2, 3};
    cr_assert_eq(hs__npu_map_onto(m, 2, 2, row4, 100000, v2p), 1);
    /* a 2x3 (7 edges) on a row of six (5 links, a Hamiltonian path of it) */
    const int32_t row6[6] = {0, 1, 2, 3, 4, 5};
    cr_assert_eq(hs__npu_map_onto(m, 2, 3, row6, 100000, v2p), 2);
    /* a 2x2 on a T (a star of 3 links): 2 kept, 2 removed, 1 added */
    const int32_t tee[4] = {0, 1, 2, 7};
    cr_assert_eq(hs__npu_map_onto(m, 2, 2, tee, 100000, v2p), 3);
    /* a 3x3 on a 3x3 */
    const int32_t sq[9] = {0, 1, 2, 6, 7, 8, 12, 13, 14};
    cr_assert_eq(hs__npu_map_onto(m, 3, 3, sq, 100000, v2p), 0);
    int32_t kept;
    cr_assert_eq(hs__npu_edit_distance(m, 3, 3, v2p, &kept), 0);
    cr_assert_eq(kept, 12);
    /* a 2x2 on a 2x2 square with its diagonals swapped: 2 edges kept of 4, 2 links unused */
    const int32_t twisted[4] = {0, 7, 1, 6};
    cr_assert_eq(hs__npu_edit_distance(m, 2, 2, twisted, &kept), 4);
    cr_assert_eq(kept, 2);
    cr_assert_eq(hs__npu_mesh_edges(3, 3), 12);
    cr_assert_eq(hs__npu_mesh_edges(1, 5), 4);
    hs_npu_mesh_destroy(m);
}

Test(npu_map, release_and_remap)
{
    struct hs_npu_mesh *m = make_mesh(5, 5);
    int32_t a, b, c;
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &a), HS_OK);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &b), HS_OK);
    struct hs_npu_tenant_info ia;
    hs_npu_tenant_info(m, a, &ia);
    int32_t a_cores[9];
    memcpy(a_cores, ia.phys, sizeof(a_cores));
    /* a third does not fit, until the first leaves; it then gets a square again */
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &c), HS_E_BUSY);
    hs_npu_tenant_release(m, a);
    cr_assert_eq(hs_npu_tenant_info(m, a, &ia), HS_E_NOENT);
    cr_assert_eq(hs_npu_mesh_free_cores(m), 16);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &c), HS_OK);
    cr_assert_eq(c, a, "the id is reused");
    struct hs_npu_tenant_info ic;
    hs_npu_tenant_info(m, c, &ic);
    cr_assert_eq(ic.edit_distance, 0);
    for (int v = 0; v < 9; v++) {
        cr_assert_eq(ic.phys[v], a_cores[v]);
    }
    hs_npu_tenant_release(m, b);
    hs_npu_tenant_release(m, c);
    hs_npu_tenant_release(m, c); /* twice: a no-op */
    cr_assert_eq(hs_npu_mesh_free_cores(m), 25);
    cr_assert_eq(hs_npu_mesh_n_tenants(m), 0);
    /* requests that cannot be */
    cr_assert_eq(hs_npu_tenant_create(m, 6, 5, HS_NPU_MAPPER_BEST, &c), HS_E_BUSY);
    cr_assert_eq(hs_npu_tenant_create(m, 0, 5, HS_NPU_MAPPER_BEST, &c), HS_E_INVAL);
    hs_npu_mesh_destroy(m);
}

Test(npu_map, fragmented_free_cores_map_to_a_connected_piece_or_busy)
{
    struct hs_npu_mesh *m = make_mesh(4, 4);
    /* eight 1x1 tenants by zig-zag fill the first two rows; a 4x2 then fits exactly */
    int32_t ids[16], t;
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(hs_npu_tenant_create(m, 1, 1, HS_NPU_MAPPER_ZIGZAG, &ids[i]), HS_OK);
    }
    cr_assert_eq(hs_npu_tenant_create(m, 4, 2, HS_NPU_MAPPER_BEST, &t), HS_OK);
    struct hs_npu_tenant_info ti;
    hs_npu_tenant_info(m, t, &ti);
    cr_assert_eq(ti.edit_distance, 0);
    cr_assert_eq(ti.phys[0] / 4, 2);
    hs_npu_tenant_release(m, t);
    /* fill the rest, then free a checkerboard: no two free cores are neighbours */
    for (int i = 8; i < 16; i++) {
        cr_assert_eq(hs_npu_tenant_create(m, 1, 1, HS_NPU_MAPPER_ZIGZAG, &ids[i]), HS_OK);
    }
    for (int i = 0; i < 16; i++) {
        hs_npu_tenant_info(m, ids[i], &ti);
        const int32_t c = ti.phys[0];
        if ((c % 4 + c / 4) % 2 == 0) {
            hs_npu_tenant_release(m, ids[i]);
        }
    }
    cr_assert_eq(hs_npu_mesh_free_cores(m), 8);
    cr_assert_eq(hs_npu_tenant_create(m, 2, 1, HS_NPU_MAPPER_BEST, &t), HS_E_BUSY,
                 "no connected pair of free cores");
    cr_assert_eq(hs_npu_tenant_create(m, 2, 1, HS_NPU_MAPPER_ZIGZAG, &t), HS_OK,
                 "zig-zag takes them anyway");
    hs_npu_tenant_info(m, t, &ti);
    cr_assert_eq(ti.edges_kept, 0);
    cr_assert_eq(ti.edit_distance, 1);
    /* its routes leave it (XY over the chip): nothing inside connects its two cores */
    struct hs__npu_tenant *tt = hs__npu_tenant_get(m, t);
    cr_assert(tt->outside[1]);
    hs_npu_mesh_destroy(m);
}

Test(npu_map, large_requests_on_a_fragmented_chip_are_placed_in_bounded_time, .timeout = 60)
{
    /* 10 x 8 with four scattered 1x1 tenants: no free 5x4 rectangle either way round */
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_WORMHOLE, &c);
    c.torus = false;
    struct hs_npu_mesh *m;
    cr_assert_eq(hs_npu_mesh_create(&c, &m), HS_OK);
    int32_t ids[80];
    for (int i = 0; i < 80; i++) {
        cr_assert_eq(hs_npu_tenant_create(m, 1, 1, HS_NPU_MAPPER_ZIGZAG, &ids[i]), HS_OK);
    }
    static const int32_t keep[4] = {3 * 10 + 3, 4 * 10 + 6, 6 * 10 + 2, 1 * 10 + 8};
    for (int i = 0; i < 80; i++) {
        struct hs_npu_tenant_info ti;
        hs_npu_tenant_info(m, ids[i], &ti);
        bool kept = false;
        for (int j = 0; j < 4; j++) {
            kept |= ti.phys[0] == keep[j];
        }
        if (!kept) {
            hs_npu_tenant_release(m, ids[i]);
        }
    }
    int32_t t;
    cr_assert_eq(hs_npu_tenant_create(m, 5, 4, HS_NPU_MAPPER_BEST, &t), HS_OK);
    struct hs_npu_tenant_info ti;
    hs_npu_tenant_info(m, t, &ti);
    cr_assert_gt(ti.edit_distance, 0);
    cr_assert_leq(ti.edit_distance, 8, "edit distance %d", ti.edit_distance);
    cr_assert_eq(connected_cores(m, t), 20);
    hs_npu_mesh_destroy(m);
}

/* ---- route tables ---- */

Test(npu_routes, translation_round_trips_and_refuses_out_of_range)
{
    struct hs_npu_mesh *m = make_mesh(5, 5);
    int32_t a, b;
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &a), HS_OK);
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &b), HS_OK);
    for (int32_t id = a; id <= b; id++) {
        struct hs__npu_tenant *t = hs__npu_tenant_get(m, id);
        for (int32_t v = 0; v < 9; v++) {
            int32_t p;
            cr_assert_eq(hs__npu_route(m, t, v, &p), HS_OK);
            cr_assert_eq(hs__npu_route_back(m, t, p), v);
        }
        int32_t p = 77;
        cr_assert_eq(hs__npu_route(m, t, 9, &p), HS_E_RANGE);
        cr_assert_eq(hs__npu_route(m, t, -1, &p), HS_E_RANGE);
        cr_assert_eq(p, 77);
        cr_assert_eq(hs__npu_route_back(m, t, 25), -1);
        cr_assert_eq(hs__npu_route_back(m, t, hs__npu_tenant_get(m, a + b - id)->v2p[0]), -1);
        /* every route stays inside the tenant, ends where it should, as long as the table says */
        for (int32_t i = 0; i < 9; i++) {
            for (int32_t j = 0; j < 9; j++) {
                int32_t links[64];
                const int32_t n = hs__npu_route_links(m, t, i, j, links);
                cr_assert_eq(n, t->hops[i * 9 + j]);
                int32_t at = t->v2p[i];
                for (int32_t l = 0; l < n; l++) {
                    cr_assert_eq(links[l] / HS__NPU_DIRS, at);
                    at = hs__npu_neighbor(m, at, links[l] % HS__NPU_DIRS);
                    cr_assert_eq(m->owner[at], id, "route %d -> %d leaves the tenant", i, j);
                }
                cr_assert_eq(at, t->v2p[j]);
                cr_assert_geq(n, hs__npu_xy_hops(m, t->v2p[i], t->v2p[j]));
            }
        }
    }
    /* the exact square needs no pinned entry; the irregular one does whenever XY would step
     * outside it */
    struct hs_npu_tenant_info ia, ib;
    hs_npu_tenant_info(m, a, &ia);
    hs_npu_tenant_info(m, b, &ib);
    cr_assert_eq(ia.n_pinned, 0);
    cr_assert_geq(ib.dilation, hs__npu_mesh_edges(3, 3));
    hs_npu_mesh_destroy(m);
}

Test(npu_routes, pinned_directions_keep_an_l_shape_inside)
{
    struct hs_npu_mesh *m = make_mesh(4, 4);
    /* occupy a 3x3 so that the free cores are an L: column 3 and row 3 */
    int32_t sq, l;
    cr_assert_eq(hs_npu_tenant_create(m, 3, 3, HS_NPU_MAPPER_BEST, &sq), HS_OK);
    cr_assert_eq(hs_npu_tenant_create(m, 7, 1, HS_NPU_MAPPER_BEST, &l), HS_OK);
    struct hs_npu_tenant_info ti;
    hs_npu_tenant_info(m, l, &ti);
    cr_assert_eq(ti.edit_distance, 0, "a line of 7 bends along the L");
    /* from one end of the L to the other XY would cut through the square: pinned */
    cr_assert_gt(ti.n_pinned, 0);
    struct hs__npu_tenant *t = hs__npu_tenant_get(m, l);
    cr_assert_eq(t->hops[0 * 7 + 6], 6);
    hs_npu_mesh_destroy(m);
}

Test(npu_routes, xy_hops_average_two_thirds_of_the_side)
{
    /* Mean |dx| over uniform pairs in [0, k) is (k^2 - 1) / (3k); XY hops add both axes, about
     * 2k/3 (HARDWARE.md). */
    for (int32_t k = 2; k <= 8; k++) {
        struct hs_npu_mesh *m = make_mesh(k, k);
        double sum = 0;
        for (int32_t a = 0; a < k * k; a++) {
            for (int32_t b = 0; b < k * k; b++) {
                sum += hs__npu_xy_hops(m, a, b);
                int32_t links[32];
                cr_assert_eq(hs__npu_xy_links(m, a, b, links), hs__npu_xy_hops(m, a, b));
            }
        }
        const double mean = sum / ((double)k * k * k * k);
        cr_assert_float_eq(mean, 2.0 * (k * k - 1) / (3.0 * k), 1e-12, "k %d: %g", k, mean);
        cr_assert_lt(fabs(mean - 2.0 * k / 3.0), 1.0 / k + 1e-12);
        hs_npu_mesh_destroy(m);
    }
    /* a torus goes the short way round */
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_WORMHOLE, &c);
    struct hs_npu_mesh *m;
    cr_assert_eq(hs_npu_mesh_create(&c, &m), HS_OK);
    cr_assert_eq(hs__npu_xy_hops(m, 0, 9), 1);
    cr_assert_eq(hs__npu_xy_hops(m, 0, 7 * 10), 1);
    cr_assert_eq(hs__npu_xy_hops(m, 0, 5 + 4 * 10), 9);
    hs_npu_mesh_destroy(m);
}

/* ---- range translation ---- */

Test(npu_memory, range_table_round_trips_walks_and_refuses)
{
    struct hs_npu_config c;
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
    c.offchip_granule_bytes = 4096;
    c.offchip_bytes = 16 * 4096;
    c.range_entries = 3;
    struct hs_npu_mesh *m;
    cr_assert_eq(hs_npu_mesh_create(&c, &m), HS_OK);
    int32_t a, b;
    cr_assert_eq(hs_npu_tenant_create(m, 2, 2, HS_NPU_MAPPER_BEST, &a), HS_OK);
    cr_assert_eq(hs_npu_tenant_create(m, 2, 2, HS_NPU_MAPPER_BEST, &b), HS_OK);
    struct hs__npu_tenant *ta = hs__npu_tenant_get(m, a), *tb = hs__npu_tenant_get(m, b);
    /* a hole: b takes granules 0-2, a 3-4, b's go, a's third buffer gets 0-2 and 5-6 */
    cr_assert_eq(hs__npu_region_map(m, tb, 0x1000, 3 * 4096), HS_OK);
    cr_assert_eq(hs__npu_region_map(m, ta, 0x9000, 2 * 4096 - 100), HS_OK);
    hs__npu_region_unmap(m, tb, 0x1000);
    cr_assert_eq(hs__npu_region_map(m, ta, 0x20000, 5 * 4096), HS_OK);
    cr_assert_eq(ta->n_ranges, 3);
    cr_assert_eq(ta->ranges[0].pbase, 3 * 4096);
    cr_assert_eq(ta->ranges[1].pbase, 0);
    cr_assert_eq(ta->ranges[2].pbase, 5 * 4096);
    const struct hs__npu_region *r = hs__npu_region_find(ta, 0x20000 + 4 * 4096 + 7);
    cr_assert_not_null(r);
    cr_assert_eq(r->vbase, 2 * 4096);
    cr_assert_null(hs__npu_region_find(ta, 0x20000 + 5 * 4096));
    /* round trips, and a monotonic walk steps over an entry only at a run's end */
    int32_t cursor = 0, total_steps = 0;
    for (uint64_t v = 0; v < 7 * 4096; v += 512) {
        uint64_t p, back;
        int32_t steps;
        cr_assert_eq(hs__npu_translate(ta, &cursor, v, &p, &steps), HS_OK);
        cr_assert_eq(hs__npu_translate_back(ta, p, &back), HS_OK);
        cr_assert_eq(back, v);
        total_steps += steps;
    }
    cr_assert_eq(total_steps, 2);
    uint64_t p = 5;
    cr_assert_eq(hs__npu_translate(ta, &cursor, 7 * 4096, &p, NULL), HS_E_RANGE);
    cr_assert_eq(p, 5);
    cr_assert_eq(hs__npu_translate_back(ta, 8 * 4096, &p), HS_E_RANGE);
    /* a fourth run would overflow the 3-entry table: refused, nothing changes */
    cr_assert_eq(hs__npu_region_map(m, tb, 0x1000, 4096), HS_OK); /* granule 7 */
    cr_assert_eq(hs__npu_region_map(m, ta, 0x80000, 4096), HS_E_NOMEM);
    cr_assert_eq(ta->n_ranges, 3);
    /* nor does asking for more than there is */
    cr_assert_eq(hs__npu_region_map(m, tb, 0x2000, 9 * 4096), HS_E_NOMEM);
    /* releasing a tenant frees its granules */
    hs_npu_tenant_release(m, a);
    cr_assert_eq(hs__npu_region_map(m, tb, 0x2000, 8 * 4096), HS_OK);
    hs_npu_mesh_destroy(m);
}

/* ---- configuration ---- */

Test(npu_config, files_parse_and_errors_name_the_line)
{
    struct hs_npu_config c;
    struct hs_error err = {0};
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
    cr_assert_eq(hs_npu_config_parse(&c,
                                     "# a chip\n"
                                     "preset = wormhole\n"
                                     "mesh_x = 4   # narrower\n"
                                     "\n"
                                     "sram_bytes = 2MiB\n"
                                     "mem_edges = north,south\n"
                                     "mapper = zigzag\n"
                                     "torus = false\n",
                                     "t.conf", &err),
                 HS_OK, "%s", err.message);
    cr_assert_str_eq(c.preset, "wormhole");
    cr_assert_eq(c.mesh_x, 4);
    cr_assert_eq(c.mesh_y, 8);
    cr_assert_eq(c.hop_cycles, 9);
    cr_assert_eq(c.sram_bytes, 2 << 20);
    cr_assert_eq(c.mem_edges, HS_NPU_EDGE_NORTH | HS_NPU_EDGE_SOUTH);
    cr_assert_eq(c.mapper, HS_NPU_MAPPER_ZIGZAG);
    cr_assert(!c.torus);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"mesh_x = 4\nbogus = 1\n", "t.conf:2: unknown key 'bogus'"},
        {"mesh_x = 4\n\nmesh_y = four\n", "t.conf:3: bad value 'four' for mesh_y"},
        {"clock_hz\n", "t.conf:1: expected 'key = value'"},
        {"link_bytes =\n", "t.conf:1: 'link_bytes' has no value"},
        {"preset = tpu\n", "t.conf:1: unknown preset 'tpu'"},
        {"mapper = best\nseq_split = sometimes\n", "t.conf:2: bad value"},
        {"sram_bytes = 10.5\n", "t.conf:1: bad value"},
        {"mesh_x = 0\n", "mesh_x and mesh_y"},
        {"offchip_granule_bytes = 5000\n", "power of two"},
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        hs_npu_config_preset(HS_NPU_PRESET_VNPU, &c);
        const hs_status st = hs_npu_config_parse(&c, bad[i].text, "t.conf", &err);
        cr_assert_neq(st, HS_OK, "%s", bad[i].text);
        cr_assert(strstr(err.message, bad[i].want), "'%s': %s", bad[i].text, err.message);
    }
    /* from a file */
    char path[64];
    snprintf(path, sizeof(path), "/tmp/hs-npu-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs("mesh_x = 5\nmesh_y = 5\nlink_bytes = x\n", f);
    fclose(f);
    cr_assert_eq(hs_npu_config_load(&c, path, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, ":3: bad value 'x' for link_bytes"), "%s", err.message);
    cr_assert_eq(hs_npu_config_load(&c, "/nonexistent/npu.conf", &err), HS_E_IO);
    unlink(path);
}

Test(npu_config, tenant_specs)
{
    struct hs_npu_tenant_req r[HS_NPU_TENANTS_MAX];
    int32_t n;
    struct hs_error err = {0};
    cr_assert_eq(hs_npu_tenants_parse("3x3,3x3", r, HS_NPU_TENANTS_MAX, &n, &err), HS_OK);
    cr_assert_eq(n, 2);
    cr_assert(r[0].own && !r[1].own);
    cr_assert_eq(r[1].w, 3);
    cr_assert_eq(hs_npu_tenants_parse("llama=2x4,*qwen=3X3", r, HS_NPU_TENANTS_MAX, &n, &err),
                 HS_OK);
    cr_assert(!r[0].own && r[1].own);
    cr_assert_str_eq(r[0].name, "llama");
    cr_assert_eq(r[0].w, 2);
    cr_assert_eq(r[0].h, 4);
    static const char *const bad[] = {"",      "3x",        "x3",   "3x3,", "0x3",
                                      "3x3x3", "*1x1,*2x2", "=2x2", "a=b"};
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        cr_assert_eq(hs_npu_tenants_parse(bad[i], r, HS_NPU_TENANTS_MAX, &n, &err), HS_E_FORMAT,
                     "'%s'", bad[i]);
        cr_assert(strstr(err.message, "--npu-tenants"));
    }
}
