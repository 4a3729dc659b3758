/* backends/pim: the timing model (pim-timing.h) against numbers computed by hand from
 * ../shared/HARDWARE.md's DIMM and DRAM parameters, its configuration file, and the rank mapping
 * (pim-map.h). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/pim/pim-map.h"
#include "backends/pim/pim-timing.h"

static struct hs_pim_config preset(const char *name)
{
    struct hs_pim_config c;
    cr_assert_eq(hs_pim_config_preset(name, &c), HS_OK);
    return c;
}

static void near(double got, double want, double rel, const char *what)
{
    cr_assert(fabs(got - want) <= rel * fabs(want), "%s: %.9g, want %.9g", what, got, want);
}

/* ---- derived bandwidths (HARDWARE.md's "Derived" line) ---- */

Test(pim_timing, chime_bandwidths_are_the_hand_computed_ones)
{
    const struct hs_pim_config c = preset("chime");
    cr_assert_eq(hs_pim_n_ranks(&c), 64);
    cr_assert_eq(hs_pim_n_ranksets(&c), 4);
    cr_assert_eq(hs_pim_n_banks(&c), 8192);
    near(hs_pim_capacity_bytes(&c), 2.0 * (1ull << 40), 1e-12, "capacity 2 TiB");
    /* an 8-byte burst (x8, BL 8) per tCCD_L = 8 * 0.625 ns = 5 ns */
    near(hs_pim_burst_bytes(&c), 8.0, 0.0, "burst");
    near(hs_pim_bank_bytes_per_s(&c), 1.6e9, 1e-12, "per bank 1.6 GB/s");
    near(hs_pim_peak_bytes_per_s(&c), 8192 * 1.6e9, 1e-12, "bank level 13.1 TB/s");
    /* a rank's 128 banks stream 204.8 GB/s inside, 25.6 GB/s at its pins */
    near(128 * hs_pim_bank_bytes_per_s(&c), 204.8e9, 1e-12, "rank internal");
    near(hs_pim_rank_pin_bytes_per_s(&c), 25.6e9, 1e-12, "rank pins");
    /* row switch: 1024 B rows stream in 128 bursts x 8 tCK = 1024 tCK, then tRP + tRCD = 44 */
    near(hs_pim_row_efficiency(&c), 1024.0 / 1068.0, 1e-12, "row efficiency 0.959");
    near(hs_pim_refresh_efficiency(&c), 1.0 - 560.0 / 12480.0, 1e-12, "refresh 0.955");
    cr_assert(fabs(hs_pim_row_efficiency(&c) - 0.959) < 5e-4);
    cr_assert(fabs(hs_pim_refresh_efficiency(&c) - 0.955) < 5e-4);
    near(hs_pim_effective_bytes_per_s(&c), 13.1072e12 * (1024.0 / 1068.0) * (11920.0 / 12480.0),
         1e-12, "effective");

    const struct hs_pim_config r = preset("rpim");
    near(hs_pim_peak_bytes_per_s(&r), 64 * 25.6e9, 1e-12, "rank level 1.6 TB/s");
    near(hs_pim_row_efficiency(&r), 1.0, 0.0, "rank level hides activations");
    near(hs_pim_effective_bytes_per_s(&r), 1.6384e12 * (11920.0 / 12480.0), 1e-12, "rpim eff");
    const struct hs_pim_config h = preset("host");
    cr_assert_eq(h.level, HS_PIM_LEVEL_HOST);
    cr_assert_eq(h.host_gbs, 0.0, "measured when the backend starts");
    struct hs_pim_config bad;
    cr_assert_eq(hs_pim_config_preset("hbm", &bad), HS_E_NOENT);
}

/* ---- one rank: bank streaming, MAC passes, the rank bus ---- */

Test(pim_timing, rank_time_by_hand)
{
    const struct hs_pim_config c = preset("chime");
    const double eff = (1024.0 / 1068.0) * (11920.0 / 12480.0);
    const double chip_bw = 16 * 1.6e9 * eff; /* a chip's 16 banks */

    /* MHA: one head of 1024 f16 positions over 8 chips: 2 * 1024 * 128 * 2 = 512 KiB, 64 KiB a
     * chip; 1024 scores per chip to the rank unit (16 KiB at 25.6 GB/s = 0.64 us). */
    struct hs_pim_rank_load l;
    memset(&l, 0, sizeof(l));
    cr_assert_eq(hs_pim_chips_per_head(&c, 1), 8);
    hs_pim_load_add(&c, &l, 0, 8, 1024, 128, 2, 1);
    near(l.chip_bytes[0], 65536.0, 0.0, "chip bytes");
    near(l.comm_bytes, 16384.0, 0.0, "scores");
    near(hs_pim_rank_time_s(&c, &l), 65536.0 / chip_bw, 1e-12, "MHA rank time");
    cr_assert(hs_pim_rank_time_s(&c, &l) > 16384.0 / 25.6e9, "compute-bound, bus hidden");

    /* GQA-8: the head on one chip streams all 512 KiB (8 times the time), and sends g = 8 scores
     * per position; the other chips idle. */
    memset(&l, 0, sizeof(l));
    cr_assert_eq(hs_pim_chips_per_head(&c, 8), 1);
    cr_assert_eq(hs_pim_mac_passes(&c, 8), 1, "n_cmr = g by default");
    hs_pim_load_add(&c, &l, 3, 1, 1024, 128, 2, 8);
    near(l.chip_bytes[3], 524288.0, 0.0, "one chip");
    near(l.chip_bytes[0], 0.0, 0.0, "others idle");
    near(l.comm_bytes, 1024.0 * 8 * 2, 0.0, "L * g scores");
    near(hs_pim_rank_time_s(&c, &l), 524288.0 / chip_bw, 1e-12, "GQA rank time");

    /* MACs for half the group: ceil(8 / 4) = 2 passes over every element. */
    struct hs_pim_config c4 = c;
    c4.n_cmr = 4;
    struct hs_pim_rank_load l4;
    memset(&l4, 0, sizeof(l4));
    cr_assert_eq(hs_pim_mac_passes(&c4, 8), 2);
    hs_pim_load_add(&c4, &l4, 3, 1, 1024, 128, 2, 8);
    near(hs_pim_rank_time_s(&c4, &l4), 2 * 524288.0 / chip_bw, 1e-12, "two passes");

    /* A bus slow enough to be the bottleneck. */
    struct hs_pim_config slow = c;
    slow.rank_bus_gbs = 0.001;
    near(hs_pim_rank_time_s(&slow, &l), 16384.0 / 1e6, 1e-12, "rank bus decides");

    /* Rank level: the rank's bytes through its pins; host level: through host_gbs. */
    struct hs_pim_config r = preset("rpim");
    near(hs_pim_rank_time_s(&r, &l), 524288.0 / (25.6e9 * 11920.0 / 12480.0), 1e-12, "R-PIM");
    struct hs_pim_config h = preset("host");
    h.host_gbs = 100.0;
    near(hs_pim_rank_time_s(&h, &l), 524288.0 / 100e9, 1e-12, "host");
}

/* ---- one layer: the slowest rank decides; the link overlaps with two or more ranksets ---- */

Test(pim_timing, slowest_rank_decides_and_the_link_overlaps)
{
    const struct hs_pim_config c = preset("chime");
    struct hs_pim_rank_load loads[3];
    memset(loads, 0, sizeof(loads));
    hs_pim_load_add(&c, &loads[0], 0, 8, 1000, 128, 2, 1);
    hs_pim_load_add(&c, &loads[1], 0, 8, 3000, 128, 2, 1); /* the slowest */
    hs_pim_load_add(&c, &loads[2], 0, 8, 2000, 128, 2, 1);
    const double t1 = hs_pim_rank_time_s(&c, &loads[1]);
    int32_t slowest = -1;
    near(hs_pim_layer_time_s(&c, loads, 3, 0.0, &slowest), t1, 1e-15, "slowest");
    cr_assert_eq(slowest, 1);
    near(t1, 3 * hs_pim_rank_time_s(&c, &loads[0]), 1e-12, "linear in positions");
    /* the link: 4 ranksets hide it behind the ranks (and decide when longer) */
    const double small = 0.5 * t1 * 504e9, big = 3.0 * t1 * 504e9;
    near(hs_pim_layer_time_s(&c, loads, 3, small, NULL), t1, 1e-12, "link hidden");
    near(hs_pim_layer_time_s(&c, loads, 3, big, NULL), 3.0 * t1, 1e-12, "link decides");
    /* one rankset cannot overlap: link + ranks */
    struct hs_pim_config one = c;
    one.dimms_per_channel = 1;
    one.ranks_per_dimm = 1;
    near(hs_pim_layer_time_s(&one, loads, 3, small, NULL), 1.5 * t1, 1e-12, "serial");
    /* q, k, v, out of one decode row: (2 * 32 + 2 * 8) heads * 128 * 2 bytes */
    near(hs_pim_link_bytes(1, 1, 32, 8, 128, 2), 80.0 * 256, 0.0, "link bytes");
    /* the balanced layer: the same functions over an even spread */
    struct hs_pim_rank_load even;
    memset(&even, 0, sizeof(even));
    const double per_rank = 64000.0 / 64;
    for (int h = 0; h < 8; h++) {
        hs_pim_load_add(&c, &even, h, 1, (int64_t)(per_rank / 8), 128, 2, 8);
    }
    near(hs_pim_balanced_layer_time_s(&c, 64000.0, 128, 2, 8, 0.0), hs_pim_rank_time_s(&c, &even),
         1e-12, "balanced");
    /* 64000 positions of 512 B over the effective 12.0 TB/s */
    near(hs_pim_balanced_layer_time_s(&c, 64000.0, 128, 2, 8, 0.0),
         64000.0 * 512 / hs_pim_effective_bytes_per_s(&c), 1e-12, "bandwidth-bound");
}

/* ---- the configuration file ---- */

static hs_status parse(const char *text, struct hs_pim_config *c, struct hs_error *err)
{
    memset(err, 0, sizeof(*err));
    return hs_pim_config_parse(text, c, err);
}

Test(pim_timing, config_file_parses_and_names_bad_lines)
{
    struct hs_pim_config c;
    struct hs_error err;
    cr_assert_eq(
        parse("# CHIME with slower refresh\n\n channels = 8  # half\ntrfc=700\n", &c, &err), HS_OK,
        "%s", err.message);
    cr_assert_eq(c.channels, 8);
    cr_assert_eq(c.trfc, 700);
    cr_assert_eq(c.level, HS_PIM_LEVEL_BANK);
    cr_assert_eq(parse("preset = rpim\nlink_gbs = 63\n", &c, &err), HS_OK);
    cr_assert_eq(c.level, HS_PIM_LEVEL_RANK);
    cr_assert_eq(c.link_gbs, 63.0);
    cr_assert_eq(parse("level = host\nhost_gbs = 12.5\r\n", &c, &err), HS_OK);
    cr_assert_eq(c.host_gbs, 12.5);

    static const struct {
        const char *text;
        const char *want;
    } bad[] = {
        {"channels = 16\n\nbanks = 4\n", "line 3: unknown key 'banks'"},
        {"channels 16\n", "line 1: expected 'key = value'"},
        {"# x\nchannels = sixteen\n", "line 2: channels: 'sixteen' is not a number"},
        {"channels = 2.5\n", "line 1: channels: '2.5' is not an integer"},
        {"channels = 0\n", "line 1: channels must be in [1, 1024], not 0"},
        {"level = dimm\n", "line 1: level must be bank, rank or host, not 'dimm'"},
        {"preset = hbm\n", "line 1: unknown preset 'hbm'"},
        {"tck_ns =\n", "line 1: expected 'key = value'"},
        {"trefi = 500\n", "trefi (500) must exceed trfc (560)"},
        {"chips_per_head = 9\nchips_per_rank = 8\n", "chips_per_head (9) exceeds"},
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        c.channels = 77;
        cr_assert_eq(parse(bad[i].text, &c, &err), HS_E_FORMAT, "%s", bad[i].text);
        cr_assert(strstr(err.message, bad[i].want), "'%s' gave '%s', want '%s'", bad[i].text,
                  err.message, bad[i].want);
        cr_assert_eq(c.channels, 77, "untouched on error");
    }

    char path[64];
    snprintf(path, sizeof(path), "/tmp/hs-pim-cfg-%d.txt", (int)getpid());
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("preset = chime\nrank_tokens_max = 16\nfoo = 1\n", f);
    fclose(f);
    memset(&err, 0, sizeof(err));
    cr_assert_eq(hs_pim_config_load(path, &c, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, path) && strstr(err.message, "line 3: unknown key 'foo'"), "%s",
              err.message);
    unlink(path);
    cr_assert_eq(hs_pim_config_load(path, &c, &err), HS_E_IO);
    cr_assert(strstr(err.message, "cannot open"), "%s", err.message);
}

Test(pim_timing, host_probe_measures_something)
{
    struct hs_pim_config c = preset("host");
    cr_assert_eq(hs_pim_config_measure_host(&c), HS_OK);
    /* memcheck (HS_VALGRIND, set by the valgrind test setup) runs loads and stores some 50 times
     * slower: the probe still has to measure a rate, not a real one */
    const double lo = getenv("HS_VALGRIND") ? 0.005 : 0.5;
    cr_assert(c.host_gbs > lo && c.host_gbs < 2000.0, "%g GB/s", c.host_gbs);
}

/* ---- the rank mapping ---- */

/* Every (layer, KV head, position) of every sequence lands on exactly one rank and chip range,
 * inside the configuration; positions of one segment stay together; consecutive layers move
 * one rankset on. */
Test(pim_map, every_unit_has_one_place_and_layers_rotate_ranksets)
{
    struct hs_pim_config c = preset("chime");
    c.rank_tokens_max = 24; /* spill: segments of 24 positions */
    static const int32_t shapes[][2] = {{8, 8}, {64, 8}, {8, 2}, {12, 3}, {96, 96}, {8, 1}};
    for (size_t si = 0; si < HS_ARRAY_LEN(shapes); si++) {
        struct hs_pim_map m;
        cr_assert_eq(hs_pim_map_init(&m, &c, shapes[si][0], shapes[si][1], 128, 2), HS_OK);
        cr_assert_eq(m.segment_tokens, 24);
        cr_assert_eq(m.n_ranks, 64);
        cr_assert(m.heads_per_rank * m.chips_per_head <= 8);
        uint32_t *count = calloc((size_t)64 * 8, sizeof(*count));
        int64_t units = 0;
        for (int64_t key = 0; key < 40; key += 3) {
            for (int32_t layer = 0; layer < 6; layer++) {
                for (int32_t h = 0; h < shapes[si][1]; h++) {
                    for (int64_t pos = 0; pos < 100; pos++) {
                        const int64_t seg = hs_pim_map_segment(&m, pos);
                        cr_assert_eq(seg, pos / 24);
                        const struct hs_pim_place pl = hs_pim_map_place(&m, key, layer, h, seg);
                        cr_assert(pl.rank >= 0 && pl.rank < 64);
                        cr_assert(pl.chip0 >= 0 && pl.chip0 + pl.n_chips <= 8);
                        cr_assert_eq(pl.n_chips, m.chips_per_head);
                        for (int32_t ch = pl.chip0; ch < pl.chip0 + pl.n_chips; ch++) {
                            count[pl.rank * 8 + ch]++;
                        }
                        units++;
                        /* the same segment: the same place */
                        const struct hs_pim_place p0 =
                            hs_pim_map_place(&m, key, layer, h, hs_pim_map_segment(&m, seg * 24));
                        cr_assert_eq(p0.rank, pl.rank);
                        /* the next layer: one rankset (16 ranks) further, same channel */
                        const struct hs_pim_place pn = hs_pim_map_place(&m, key, layer + 1, h, seg);
                        cr_assert_eq(pn.rank % 16, pl.rank % 16);
                        cr_assert_eq(pn.rank / 16, (pl.rank / 16 + 1) % 4);
                        cr_assert_eq(pn.chip0, pl.chip0);
                    }
                }
            }
        }
        uint64_t total = 0;
        for (int i = 0; i < 64 * 8; i++) {
            total += count[i];
        }
        cr_assert_eq(total, (uint64_t)units * (uint64_t)m.chips_per_head,
                     "each unit on exactly its chips");
        free(count);
    }
}

Test(pim_map, mha_spreads_a_head_over_a_rank_gqa_puts_a_head_on_a_chip)
{
    const struct hs_pim_config c = preset("chime");
    struct hs_pim_map m;
    /* MHA: each head over the 8 chips of its own rank; a sequence's 8 heads on 8 channels. */
    cr_assert_eq(hs_pim_map_init(&m, &c, 8, 8, 128, 2), HS_OK);
    cr_assert_eq(m.chips_per_head, 8);
    cr_assert_eq(m.heads_per_rank, 1);
    cr_assert_eq(m.groups_per_seq, 8);
    for (int32_t h = 0; h < 8; h++) {
        const struct hs_pim_place pl = hs_pim_map_place(&m, 5, 0, h, 0);
        cr_assert_eq(pl.chip0, 0);
        cr_assert_eq(pl.n_chips, 8);
        cr_assert_eq(pl.rank, (hs_pim_map_home(&m, 5) + h) % 64);
    }
    /* GQA-8 (QWEN-72B's 64 / 8): the 8 KV heads on the 8 chips of one rank, one each. */
    cr_assert_eq(hs_pim_map_init(&m, &c, 64, 8, 128, 2), HS_OK);
    cr_assert_eq(m.chips_per_head, 1);
    cr_assert_eq(m.heads_per_rank, 8);
    cr_assert_eq(m.groups_per_seq, 1);
    for (int32_t h = 0; h < 8; h++) {
        const struct hs_pim_place pl = hs_pim_map_place(&m, 5, 0, h, 0);
        cr_assert_eq(pl.rank, hs_pim_map_home(&m, 5));
        cr_assert_eq(pl.chip0, h);
        cr_assert_eq(pl.n_chips, 1);
    }
    /* GQA-4 with 2 KV heads: each head on 2 chips, both heads on one rank */
    cr_assert_eq(hs_pim_map_init(&m, &c, 8, 2, 64, 2), HS_OK);
    cr_assert_eq(m.chips_per_head, 2);
    cr_assert_eq(m.heads_per_rank, 4);
    cr_assert_eq(m.groups_per_seq, 1);
    cr_assert_eq(hs_pim_map_place(&m, 9, 0, 1, 0).chip0, 2);
    /* homes: every rank, about evenly, also for keys in strides of 64 (runs of blocks) */
    int32_t hits[64] = {0};
    for (int64_t key = 0; key < 64 * 640; key += 64) {
        const int32_t home = hs_pim_map_home(&m, key);
        cr_assert(home >= 0 && home < 64);
        cr_assert_eq(hs_pim_map_place(&m, key, 0, 0, 0).rank, home);
        hits[home]++;
    }
    for (int r = 0; r < 64; r++) {
        cr_assert(hits[r] >= 2 && hits[r] <= 25, "rank %d: %d of 640 homes", r, hits[r]);
    }
    /* a spilled segment: the next channel of the same rankset */
    for (int64_t key = 0; key < 40; key++) {
        const int32_t r0 = hs_pim_map_place(&m, key, 0, 0, 0).rank;
        const int32_t r2 = hs_pim_map_place(&m, key, 0, 0, 2).rank;
        cr_assert_eq(r2 / 16, r0 / 16);
        cr_assert_eq(r2 % 16, (r0 % 16 + 2) % 16);
    }
    /* the host level is one rank of one chip */
    const struct hs_pim_config h = preset("host");
    cr_assert_eq(hs_pim_map_init(&m, &h, 64, 8, 128, 2), HS_OK);
    cr_assert_eq(m.n_ranks, 1);
    cr_assert_eq(hs_pim_map_place(&m, 123, 7, 5, 0).rank, 0);
    cr_assert_eq(hs_pim_map_init(&m, &c, 8, 3, 128, 2), HS_E_INVAL);
}
