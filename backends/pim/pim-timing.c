/* The DIMM-PIM timing model (pim-timing.h): presets, the configuration file, derived
 * bandwidths, and rank and layer times. */
#include "backends/pim/pim-timing.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *hs_pim_level_str(enum hs_pim_level l)
{
    switch (l) {
    case HS_PIM_LEVEL_BANK:
        return "bank";
    case HS_PIM_LEVEL_RANK:
        return "rank";
    case HS_PIM_LEVEL_HOST:
        return "host";
    case HS_PIM_LEVEL_COUNT:
        break;
    }
    return "unknown";
}

/* ---- presets ---- */

/* CHIME Table I: DDR4-3200, 16 channels x 2 DIMMs x 2 ranks of 8 x8 chips with 4 x 4 banks,
 * 2 TB; DRAMsim3's DDR4_8Gb_x8_3200 timing; the GPUs' PCIe 5.0 x16 links (8 x 63 GB/s). */
static const struct hs_pim_config pim_chime = {
    .level = HS_PIM_LEVEL_BANK,
    .channels = 16,
    .dimms_per_channel = 2,
    .ranks_per_dimm = 2,
    .chips_per_rank = 8,
    .bank_groups = 4,
    .banks_per_group = 4,
    .chip_width_bits = 8,
    .row_bytes = 1024,
    .rank_bytes = (int64_t)32 << 30,
    .tck_ns = 0.625,
    .bl = 8,
    .tccd_s = 4,
    .tccd_l = 8,
    .trcd = 22,
    .trp = 22,
    .tras = 52,
    .cl = 22,
    .trfc = 560,
    .trefi = 12480,
    .n_cmr = 0,
    .chips_per_head = 0,
    .rank_bus_gbs = 0.0,
    .host_gbs = 406.0,
    .link_gbs = 8 * 63.0,
    .rank_tokens_max = 0,
};

hs_status hs_pim_config_preset(const char *name, struct hs_pim_config *out)
{
    if (!name || !out) {
        return HS_E_INVAL;
    }
    if (!strcmp(name, "chime")) {
        *out = pim_chime;
    } else if (!strcmp(name, "rpim")) {
        *out = pim_chime;
        out->level = HS_PIM_LEVEL_RANK;
    } else if (!strcmp(name, "host")) {
        *out = pim_chime;
        out->level = HS_PIM_LEVEL_HOST;
        out->host_gbs = 0.0; /* measured when the backend starts */
    } else {
        return HS_E_NOENT;
    }
    return HS_OK;
}

/* ---- the configuration file ---- */

enum hs__pim_kind { KIND_I32, KIND_I64, KIND_F64 };

struct hs__pim_key {
    const char *name;
    enum hs__pim_kind kind;
    size_t offset;
    double lo, hi; /* inclusive range */
};

/* clang-format off */
#define I32(f, lo, hi) {#f, KIND_I32, offsetof(struct hs_pim_config, f), lo, hi}
#define I64(f, lo, hi) {#f, KIND_I64, offsetof(struct hs_pim_config, f), lo, hi}
#define F64(f, lo, hi) {#f, KIND_F64, offsetof(struct hs_pim_config, f), lo, hi}
/* clang-format on */

static const struct hs__pim_key pim_keys[] = {
    I32(channels, 1, 1024),
    I32(dimms_per_channel, 1, 64),
    I32(ranks_per_dimm, 1, 64),
    I32(chips_per_rank, 1, HS_PIM_CHIPS_MAX),
    I32(bank_groups, 1, 64),
    I32(banks_per_group, 1, 64),
    I32(chip_width_bits, 1, 64),
    I64(row_bytes, 8, 1 << 20),
    I64(rank_bytes, 1 << 20, 1e15),
    F64(tck_ns, 1e-3, 1e3),
    I32(bl, 1, 64),
    I32(tccd_s, 1, 1 << 16),
    I32(tccd_l, 1, 1 << 16),
    I32(trcd, 0, 1 << 16),
    I32(trp, 0, 1 << 16),
    I32(tras, 0, 1 << 16),
    I32(cl, 0, 1 << 16),
    I32(trfc, 0, 1 << 24),
    I32(trefi, 1, 1 << 24),
    I32(n_cmr, 0, 1024),
    I32(chips_per_head, 0, HS_PIM_CHIPS_MAX),
    F64(rank_bus_gbs, 0, 1e6),
    F64(host_gbs, 0, 1e6),
    F64(link_gbs, 1e-3, 1e6),
    I64(rank_tokens_max, 0, 1e15),
};

hs_status hs_pim_config_check(const struct hs_pim_config *c, struct hs_error *err)
{
    if (!c || (unsigned)c->level >= HS_PIM_LEVEL_COUNT) {
        return hs_error_set(err, HS_E_INVAL, "level must be bank, rank or host");
    }
    for (size_t i = 0; i < HS_ARRAY_LEN(pim_keys); i++) {
        const struct hs__pim_key *k = &pim_keys[i];
        const char *p = (const char *)c + k->offset;
        double v;
        if (k->kind == KIND_I32) {
            v = (double)*(const int32_t *)p;
        } else if (k->kind == KIND_I64) {
            v = (double)*(const int64_t *)p;
        } else {
            v = *(const double *)p;
        }
        if (!(v >= k->lo && v <= k->hi)) {
            return hs_error_set(err, HS_E_RANGE, "%s must be in [%g, %g], not %g", k->name, k->lo,
                                k->hi, v);
        }
    }
    if (c->trefi <= c->trfc) {
        return hs_error_set(err, HS_E_RANGE, "trefi (%d) must exceed trfc (%d)", c->trefi, c->trfc);
    }
    if (c->chips_per_head > c->chips_per_rank) {
        return hs_error_set(err, HS_E_RANGE, "chips_per_head (%d) exceeds chips_per_rank (%d)",
                            c->chips_per_head, c->chips_per_rank);
    }
    if ((int64_t)c->channels * c->dimms_per_channel * c->ranks_per_dimm > 1 << 16) {
        return hs_error_set(err, HS_E_RANGE, "more than 65536 ranks");
    }
    return HS_OK;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r') {
        s++;
    }
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) {
        *--e = '\0';
    }
    return s;
}

/* One `key = value` into c. */
static hs_status set_key(struct hs_pim_config *c, const char *key, const char *val,
                         struct hs_error *err)
{
    if (!strcmp(key, "preset")) {
        if (hs_pim_config_preset(val, c) != HS_OK) {
            return hs_error_set(err, HS_E_FORMAT, "unknown preset '%s' (chime, rpim, host)", val);
        }
        return HS_OK;
    }
    if (!strcmp(key, "level")) {
        for (int l = 0; l < HS_PIM_LEVEL_COUNT; l++) {
            if (!strcmp(val, hs_pim_level_str((enum hs_pim_level)l))) {
                c->level = (enum hs_pim_level)l;
                return HS_OK;
            }
        }
        return hs_error_set(err, HS_E_FORMAT, "level must be bank, rank or host, not '%s'", val);
    }
    for (size_t i = 0; i < HS_ARRAY_LEN(pim_keys); i++) {
        const struct hs__pim_key *k = &pim_keys[i];
        if (strcmp(key, k->name) != 0) {
            continue;
        }
        char *end = NULL;
        errno = 0;
        const double v = strtod(val, &end);
        if (end == val || *end != '\0' || errno != 0 || !isfinite(v)) {
            return hs_error_set(err, HS_E_FORMAT, "%s: '%s' is not a number", key, val);
        }
        if (k->kind != KIND_F64 && v != floor(v)) {
            return hs_error_set(err, HS_E_FORMAT, "%s: '%s' is not an integer", key, val);
        }
        if (!(v >= k->lo && v <= k->hi)) {
            return hs_error_set(err, HS_E_FORMAT, "%s must be in [%g, %g], not %s", key, k->lo,
                                k->hi, val);
        }
        char *p = (char *)c + k->offset;
        if (k->kind == KIND_I32) {
            *(int32_t *)p = (int32_t)v;
        } else if (k->kind == KIND_I64) {
            *(int64_t *)p = (int64_t)v;
        } else {
            *(double *)p = v;
        }
        return HS_OK;
    }
    return hs_error_set(err, HS_E_FORMAT, "unknown key '%s'", key);
}

hs_status hs_pim_config_parse(const char *text, struct hs_pim_config *out, struct hs_error *err)
{
    if (!text || !out) {
        return hs_error_set(err, HS_E_INVAL, "no configuration");
    }
    struct hs_pim_config c = pim_chime;
    char line[512];
    int lineno = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        const size_t n = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        if (n >= sizeof(line)) {
            return hs_error_set(err, HS_E_FORMAT, "line %d: longer than %zu bytes", lineno,
                                sizeof(line) - 1);
        }
        memcpy(line, p, n);
        line[n] = '\0';
        p += n + (nl ? 1 : 0);
        char *hash = strchr(line, '#');
        if (hash) {
            *hash = '\0';
        }
        char *s = trim(line);
        if (!*s) {
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            return hs_error_set(err, HS_E_FORMAT, "line %d: expected 'key = value', got '%s'",
                                lineno, s);
        }
        *eq = '\0';
        const char *key = trim(s);
        const char *val = trim(eq + 1);
        struct hs_error e = {0};
        if (!*key || !*val) {
            return hs_error_set(err, HS_E_FORMAT, "line %d: expected 'key = value'", lineno);
        }
        if (set_key(&c, key, val, &e) != HS_OK) {
            return hs_error_set(err, HS_E_FORMAT, "line %d: %s", lineno, e.message);
        }
    }
    struct hs_error e = {0};
    if (hs_pim_config_check(&c, &e) != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "%s", e.message);
    }
    *out = c;
    return HS_OK;
}

hs_status hs_pim_config_load(const char *path, struct hs_pim_config *out, struct hs_error *err)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        return hs_error_set(err, HS_E_IO, "cannot open PIM configuration '%s': %s",
                            path ? path : "(null)", strerror(errno));
    }
    enum { MAX = 1 << 20 };
    char *buf = malloc(MAX + 1);
    if (!buf) {
        fclose(f);
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    const size_t n = fread(buf, 1, MAX + 1, f);
    const bool bad = ferror(f) != 0;
    fclose(f);
    hs_status st;
    if (bad || n > MAX) {
        st = hs_error_set(err, bad ? HS_E_IO : HS_E_FORMAT, "%s: %s", path,
                          bad ? "read error" : "larger than 1 MiB");
    } else if (memchr(buf, '\0', n)) {
        st = hs_error_set(err, HS_E_FORMAT, "%s: not a text file", path);
    } else {
        buf[n] = '\0';
        struct hs_error e = {0};
        st = hs_pim_config_parse(buf, out, &e);
        if (st != HS_OK) {
            st = hs_error_set(err, st, "%s: %s", path, e.message);
        }
    }
    free(buf);
    return st;
}

/* ---- the host probe ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

hs_status hs_pim_config_measure_host(struct hs_pim_config *c)
{
    /* 256 MiB, read three times after a first touch: the best pass is the bandwidth one thread
     * streams, which is what the attention thread gets. */
    const size_t bytes = (size_t)256 << 20;
    const size_t n = bytes / sizeof(uint64_t);
    uint64_t *buf = hs_alloc_aligned(bytes);
    if (!buf) {
        return HS_E_NOMEM;
    }
    for (size_t i = 0; i < n; i += 512) {
        buf[i] = i;
    }
    double best = 0.0;
    volatile uint64_t sink = 0;
    for (int pass = 0; pass < 3; pass++) {
        const double t0 = now_s();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i < n; i += 4) {
            s0 += buf[i];
            s1 += buf[i + 1];
            s2 += buf[i + 2];
            s3 += buf[i + 3];
        }
        const double dt = now_s() - t0;
        sink += s0 + s1 + s2 + s3;
        if (dt > 0 && (double)bytes / dt > best) {
            best = (double)bytes / dt;
        }
    }
    (void)sink;
    hs_free_aligned(buf);
    c->host_gbs = best > 0 ? best * 1e-9 : 1.0;
    return HS_OK;
}

/* ---- derived quantities ---- */

int32_t hs_pim_n_ranks(const struct hs_pim_config *c)
{
    return c->channels * c->dimms_per_channel * c->ranks_per_dimm;
}

int32_t hs_pim_n_ranksets(const struct hs_pim_config *c)
{
    return c->dimms_per_channel * c->ranks_per_dimm;
}

int32_t hs_pim_banks_per_chip(const struct hs_pim_config *c)
{
    return c->bank_groups * c->banks_per_group;
}

int64_t hs_pim_n_banks(const struct hs_pim_config *c)
{
    return (int64_t)hs_pim_n_ranks(c) * c->chips_per_rank * hs_pim_banks_per_chip(c);
}

double hs_pim_capacity_bytes(const struct hs_pim_config *c)
{
    return (double)hs_pim_n_ranks(c) * (double)c->rank_bytes;
}

double hs_pim_burst_bytes(const struct hs_pim_config *c)
{
    return (double)c->chip_width_bits * c->bl / 8.0;
}

double hs_pim_bank_bytes_per_s(const struct hs_pim_config *c)
{
    return hs_pim_burst_bytes(c) / ((double)c->tccd_l * c->tck_ns * 1e-9);
}

double hs_pim_rank_pin_bytes_per_s(const struct hs_pim_config *c)
{
    return c->chips_per_rank * hs_pim_burst_bytes(c) / ((double)c->tccd_s * c->tck_ns * 1e-9);
}

double hs_pim_rank_bus_bytes_per_s(const struct hs_pim_config *c)
{
    return c->rank_bus_gbs > 0 ? c->rank_bus_gbs * 1e9 : hs_pim_rank_pin_bytes_per_s(c);
}

double hs_pim_row_efficiency(const struct hs_pim_config *c)
{
    if (c->level != HS_PIM_LEVEL_BANK) {
        return 1.0;
    }
    /* A bank streams a row in row_bytes / burst bursts, one per tCCD_L, then closes it and
     * opens the next (tRP + tRCD) before its next burst. */
    const double stream = (double)c->row_bytes / hs_pim_burst_bytes(c) * c->tccd_l;
    return stream / (stream + c->trp + c->trcd);
}

double hs_pim_refresh_efficiency(const struct hs_pim_config *c)
{
    return c->level == HS_PIM_LEVEL_HOST ? 1.0 : 1.0 - (double)c->trfc / c->trefi;
}

double hs_pim_peak_bytes_per_s(const struct hs_pim_config *c)
{
    switch (c->level) {
    case HS_PIM_LEVEL_BANK:
        return (double)hs_pim_n_banks(c) * hs_pim_bank_bytes_per_s(c);
    case HS_PIM_LEVEL_RANK:
        return hs_pim_n_ranks(c) * hs_pim_rank_pin_bytes_per_s(c);
    case HS_PIM_LEVEL_HOST:
    case HS_PIM_LEVEL_COUNT:
        break;
    }
    return c->host_gbs * 1e9;
}

double hs_pim_effective_bytes_per_s(const struct hs_pim_config *c)
{
    return hs_pim_peak_bytes_per_s(c) * hs_pim_row_efficiency(c) * hs_pim_refresh_efficiency(c);
}

int32_t hs_pim_chips_per_head(const struct hs_pim_config *c, int32_t g)
{
    if (c->level == HS_PIM_LEVEL_HOST) {
        return 1;
    }
    int32_t n = c->chips_per_head > 0 ? c->chips_per_head : c->chips_per_rank / HS_MAX(g, 1);
    return HS_MAX(1, HS_MIN(n, c->chips_per_rank));
}

int32_t hs_pim_mac_passes(const struct hs_pim_config *c, int32_t g)
{
    if (c->level == HS_PIM_LEVEL_HOST || c->n_cmr <= 0 || g <= 1) {
        return 1;
    }
    return (g + c->n_cmr - 1) / c->n_cmr;
}

/* ---- loads and times ---- */

void hs_pim_load_add(const struct hs_pim_config *c, struct hs_pim_rank_load *l, int32_t chip0,
                     int32_t n_chips, int64_t n_tokens, int32_t head_dim, int32_t elem_bytes,
                     int32_t g)
{
    if (n_tokens <= 0) {
        return;
    }
    HS_ASSERT(n_chips >= 1 && chip0 >= 0 && chip0 + n_chips <= HS_PIM_CHIPS_MAX);
    const double bytes = 2.0 * (double)n_tokens * head_dim * elem_bytes; /* K and V */
    const double per_chip = bytes * hs_pim_mac_passes(c, g) / n_chips;
    for (int32_t i = chip0; i < chip0 + n_chips; i++) {
        l->chip_bytes[i] += per_chip;
    }
    l->comm_bytes += (double)n_tokens * HS_MAX(g, 1) * n_chips * elem_bytes;
}

double hs_pim_rank_time_s(const struct hs_pim_config *c, const struct hs_pim_rank_load *l)
{
    const int32_t n_chips = HS_MIN(c->chips_per_rank, HS_PIM_CHIPS_MAX);
    const double eff = hs_pim_row_efficiency(c) * hs_pim_refresh_efficiency(c);
    double total = 0.0, max_chip = 0.0;
    for (int32_t i = 0; i < n_chips; i++) {
        total += l->chip_bytes[i];
        max_chip = fmax(max_chip, l->chip_bytes[i]);
    }
    switch (c->level) {
    case HS_PIM_LEVEL_BANK: {
        const double chip_bw = hs_pim_banks_per_chip(c) * hs_pim_bank_bytes_per_s(c) * eff;
        const double comp = max_chip / chip_bw;
        const double comm = l->comm_bytes / hs_pim_rank_bus_bytes_per_s(c);
        return fmax(comp, comm);
    }
    case HS_PIM_LEVEL_RANK:
        return total / (hs_pim_rank_pin_bytes_per_s(c) * eff);
    case HS_PIM_LEVEL_HOST:
    case HS_PIM_LEVEL_COUNT:
        break;
    }
    return total / (c->host_gbs * 1e9);
}

double hs_pim_link_time_s(const struct hs_pim_config *c, double bytes)
{
    return bytes / (c->link_gbs * 1e9);
}

double hs_pim_layer_time_s(const struct hs_pim_config *c, const struct hs_pim_rank_load *loads,
                           int32_t n, double link_bytes, int32_t *slowest)
{
    double worst = 0.0;
    int32_t at = 0;
    for (int32_t r = 0; r < n; r++) {
        const double t = hs_pim_rank_time_s(c, &loads[r]);
        if (t > worst) {
            worst = t;
            at = r;
        }
    }
    if (slowest) {
        *slowest = at;
    }
    const double link = hs_pim_link_time_s(c, link_bytes);
    const bool overlapped = c->level != HS_PIM_LEVEL_HOST && hs_pim_n_ranksets(c) >= 2;
    return overlapped ? fmax(worst, link) : worst + link;
}

double hs_pim_link_bytes(int64_t n_rows, int64_t n_new, int32_t n_head, int32_t n_kv_head,
                         int32_t head_dim, int32_t elem_bytes)
{
    return ((double)n_rows * 2.0 * n_head + (double)n_new * 2.0 * n_kv_head) * head_dim *
           elem_bytes;
}

double hs_pim_balanced_layer_time_s(const struct hs_pim_config *c, double n_tokens_total,
                                    int32_t head_dim, int32_t elem_bytes, int32_t g,
                                    double link_bytes)
{
    struct hs_pim_rank_load l;
    memset(&l, 0, sizeof(l));
    const int32_t n_ranks = c->level == HS_PIM_LEVEL_HOST ? 1 : hs_pim_n_ranks(c);
    const int32_t n_chips = c->level == HS_PIM_LEVEL_HOST ? 1 : c->chips_per_rank;
    const int32_t cph = hs_pim_chips_per_head(c, g);
    /* Every chip carries the same share: the tokens of the rank, spread over its chips. */
    const double per_chip = 2.0 * n_tokens_total * head_dim * elem_bytes * hs_pim_mac_passes(c, g) /
                            ((double)n_ranks * n_chips);
    for (int32_t i = 0; i < n_chips; i++) {
        l.chip_bytes[i] = per_chip;
    }
    l.comm_bytes = n_tokens_total / n_ranks * HS_MAX(g, 1) * cph * elem_bytes;
    return hs_pim_layer_time_s(c, &l, 1, link_bytes, NULL);
}
