/* NPU configuration: presets, `key = value` files, --npu-tenants specs. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/npu/npu.h"

const char *hs_npu_preset_str(enum hs_npu_preset p)
{
    switch (p) {
    case HS_NPU_PRESET_VNPU:
        return "vnpu";
    case HS_NPU_PRESET_WORMHOLE:
        return "wormhole";
    case HS_NPU_PRESET_COUNT:
        break;
    }
    return "unknown";
}

const char *hs_npu_mapper_str(enum hs_npu_mapper m)
{
    switch (m) {
    case HS_NPU_MAPPER_BEST:
        return "best";
    case HS_NPU_MAPPER_ZIGZAG:
        return "zigzag";
    case HS_NPU_MAPPER_MIG:
        return "mig";
    case HS_NPU_MAPPER_COUNT:
        break;
    }
    return "unknown";
}

const char *hs_npu_split_str(enum hs_npu_split s)
{
    switch (s) {
    case HS_NPU_SPLIT_AUTO:
        return "auto";
    case HS_NPU_SPLIT_NEVER:
        return "never";
    case HS_NPU_SPLIT_ALWAYS:
        return "always";
    case HS_NPU_SPLIT_COUNT:
        break;
    }
    return "unknown";
}

/* ---- presets ----
 *
 * vnpu: vNPU's DCRA simulator configuration (HARDWARE.md): 6 x 6 cores at 500 MHz, ~30 MB of
 * SRAM and a 128 x 128 systolic array per core, 360 GB/s of HBM; muchiSim's NoC defaults (1 cycle
 * per hop, 32-bit links); 128 route-table entries as the FPGA prototype. wormhole: HARDWARE.md's
 * Tensix facts (1 GHz, 1464 KiB SRAM, 32-byte flits, 9 cycles router to router, 2-D torus NoCs)
 * on an 80-core 10 x 8 grid. The rest are assumptions, listed in the README. */
void hs_npu_config_preset(enum hs_npu_preset p, struct hs_npu_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->preset, sizeof(c->preset), "%s", hs_npu_preset_str(p));
    c->sram_kv_fraction = 0.75;
    c->route_cycles = 1;
    c->offchip_granule_bytes = (int64_t)2 << 20;
    c->offchip_share = 0.0;
    c->mem_edges = HS_NPU_EDGE_WEST | HS_NPU_EDGE_EAST;
    c->route_entries = 128;
    c->range_entries = 16;
    c->range_walk_cycles = 1;
    c->elem_bytes = 2;
    c->mapper = HS_NPU_MAPPER_BEST;
    c->seq_split = HS_NPU_SPLIT_AUTO;
    c->min_chunk_tokens = 512;
    c->map_budget = 50000;
    if (p == HS_NPU_PRESET_WORMHOLE) {
        c->mesh_x = 10;
        c->mesh_y = 8;
        c->torus = true;
        c->clock_hz = 1e9;
        c->sram_bytes = (int64_t)1464 << 10;
        c->systolic = 23;
        c->sram_bytes_per_cycle = 64;
        c->link_bytes = 32;
        c->hop_cycles = 9;
        c->offchip_bytes_per_s = 288e9;
        c->offchip_bytes = (int64_t)12 << 30;
        return;
    }
    c->mesh_x = 6;
    c->mesh_y = 6;
    c->torus = false;
    c->clock_hz = 500e6;
    c->sram_bytes = (int64_t)30 << 20;
    c->systolic = 128;
    c->sram_bytes_per_cycle = 256;
    c->link_bytes = 4;
    c->hop_cycles = 1;
    c->offchip_bytes_per_s = 360e9;
    c->offchip_bytes = (int64_t)16 << 30;
}

hs_status hs_npu_config_check(const struct hs_npu_config *c, struct hs_error *err)
{
    const char *bad = NULL;
    if (c->mesh_x < 1 || c->mesh_x > 64 || c->mesh_y < 1 || c->mesh_y > 64) {
        bad = "mesh_x and mesh_y must be in [1, 64]";
    } else if (!(c->clock_hz >= 1e6 && c->clock_hz <= 1e11)) {
        bad = "clock_hz must be in [1e6, 1e11]";
    } else if (c->sram_bytes < 1024 || !(c->sram_kv_fraction >= 0 && c->sram_kv_fraction <= 1)) {
        bad = "sram_bytes must be at least 1024 and sram_kv_fraction in [0, 1]";
    } else if (c->systolic < 1 || c->systolic > 4096 || c->sram_bytes_per_cycle < 1) {
        bad = "systolic must be in [1, 4096] and sram_bytes_per_cycle at least 1";
    } else if (c->link_bytes < 1 || c->hop_cycles < 0 || c->route_cycles < 0 ||
               c->range_walk_cycles < 0) {
        bad = "link_bytes must be at least 1, the cycle counts not negative";
    } else if (!(c->offchip_bytes_per_s >= 1e6) || c->offchip_bytes < c->offchip_granule_bytes ||
               c->offchip_granule_bytes < 4096 ||
               (c->offchip_granule_bytes & (c->offchip_granule_bytes - 1)) != 0 ||
               c->offchip_bytes / c->offchip_granule_bytes > (int64_t)1 << 26) {
        bad = "offchip_bytes_per_s must be at least 1e6, offchip_granule_bytes a power of two of "
              "at least 4096, offchip_bytes at least one and at most 2^26 granules";
    } else if (!(c->offchip_share >= 0 && c->offchip_share <= 1)) {
        bad = "offchip_share must be in [0, 1]";
    } else if ((c->mem_edges & 15u) == 0 || (c->mem_edges & ~15u) != 0) {
        bad = "mem_edges must name at least one of west, east, north, south";
    } else if (c->route_entries < 1 || c->route_entries > 4096 || c->range_entries < 1 ||
               c->range_entries > 4096) {
        bad = "route_entries and range_entries must be in [1, 4096]";
    } else if (c->elem_bytes != 2 && c->elem_bytes != 4) {
        bad = "elem_bytes must be 2 or 4";
    } else if ((unsigned)c->mapper >= HS_NPU_MAPPER_COUNT ||
               (unsigned)c->seq_split >= HS_NPU_SPLIT_COUNT || c->map_budget < 1 ||
               c->min_chunk_tokens < 1) {
        bad = "mapper, seq_split, min_chunk_tokens or map_budget out of range";
    }
    return bad ? hs_error_set(err, HS_E_INVAL, "npu config: %s", bad) : HS_OK;
}

/* ---- key = value ---- */

enum kind { K_I32, K_I64, K_F64, K_BOOL, K_EDGES, K_MAPPER, K_SPLIT, K_BYTES };

struct key {
    const char *name;
    enum kind kind;
    size_t off;
};

#define KEY(f, k)                                                                                  \
    {                                                                                              \
#f, k, offsetof(struct hs_npu_config, f)                                                   \
    }
static const struct key keys[] = {
    KEY(mesh_x, K_I32),
    KEY(mesh_y, K_I32),
    KEY(torus, K_BOOL),
    KEY(clock_hz, K_F64),
    KEY(sram_bytes, K_BYTES),
    KEY(sram_kv_fraction, K_F64),
    KEY(systolic, K_I32),
    KEY(sram_bytes_per_cycle, K_I32),
    KEY(link_bytes, K_I32),
    KEY(hop_cycles, K_I32),
    KEY(route_cycles, K_I32),
    KEY(offchip_bytes_per_s, K_F64),
    KEY(offchip_bytes, K_BYTES),
    KEY(offchip_granule_bytes, K_BYTES),
    KEY(offchip_share, K_F64),
    KEY(mem_edges, K_EDGES),
    KEY(route_entries, K_I32),
    KEY(range_entries, K_I32),
    KEY(range_walk_cycles, K_I32),
    KEY(elem_bytes, K_I32),
    KEY(mapper, K_MAPPER),
    KEY(seq_split, K_SPLIT),
    KEY(min_chunk_tokens, K_I32),
    KEY(map_budget, K_I64),
};
#undef KEY

/* A byte count: an integer with an optional K, M, G (powers of 1024; KiB etc. too). */
static bool parse_bytes(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    const double d = strtod(v, &end);
    if (errno || end == v || !(d >= 0)) {
        return false;
    }
    double mul = 1;
    if (*end == 'K' || *end == 'k') {
        mul = 1024.0;
    } else if (*end == 'M') {
        mul = 1024.0 * 1024;
    } else if (*end == 'G') {
        mul = 1024.0 * 1024 * 1024;
    }
    if (mul > 1) {
        end++;
        if (!strcmp(end, "iB") || !strcmp(end, "B")) {
            end += strlen(end);
        }
    } else if (!strcmp(end, "B")) {
        end++;
    }
    if (*end || d * mul > 9.0e18 || d * mul != floor(d * mul)) {
        return false;
    }
    *out = (int64_t)(d * mul);
    return true;
}

static bool parse_edges(const char *v, uint32_t *out)
{
    uint32_t e = 0;
    while (*v) {
        size_t n = strcspn(v, ",+| ");
        if (n == 4 && !strncmp(v, "west", 4)) {
            e |= HS_NPU_EDGE_WEST;
        } else if (n == 4 && !strncmp(v, "east", 4)) {
            e |= HS_NPU_EDGE_EAST;
        } else if (n == 5 && !strncmp(v, "north", 5)) {
            e |= HS_NPU_EDGE_NORTH;
        } else if (n == 5 && !strncmp(v, "south", 5)) {
            e |= HS_NPU_EDGE_SOUTH;
        } else if (n == 3 && !strncmp(v, "all", 3)) {
            e |= 15u;
        } else if (n > 0) {
            return false;
        }
        v += n;
        v += *v != '\0';
    }
    *out = e;
    return e != 0;
}

/* Sets one field from value text; false when the value does not parse. */
static bool set_value(struct hs_npu_config *c, const struct key *k, const char *v)
{
    char *base = (char *)c + k->off;
    char *end;
    errno = 0;
    switch (k->kind) {
    case K_I32: {
        const long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < INT32_MIN || x > INT32_MAX) {
            return false;
        }
        *(int32_t *)base = (int32_t)x;
        return true;
    }
    case K_I64: {
        const long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end) {
            return false;
        }
        *(int64_t *)base = x;
        return true;
    }
    case K_BYTES:
        return parse_bytes(v, (int64_t *)base);
    case K_F64: {
        const double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x)) {
            return false;
        }
        *(double *)base = x;
        return true;
    }
    case K_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) {
            *(bool *)base = true;
        } else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) {
            *(bool *)base = false;
        } else {
            return false;
        }
        return true;
    case K_EDGES:
        return parse_edges(v, (uint32_t *)base);
    case K_MAPPER:
        for (int i = 0; i < HS_NPU_MAPPER_COUNT; i++) {
            if (!strcmp(v, hs_npu_mapper_str((enum hs_npu_mapper)i))) {
                *(enum hs_npu_mapper *)base = (enum hs_npu_mapper)i;
                return true;
            }
        }
        return false;
    case K_SPLIT:
        for (int i = 0; i < HS_NPU_SPLIT_COUNT; i++) {
            if (!strcmp(v, hs_npu_split_str((enum hs_npu_split)i))) {
                *(enum hs_npu_split *)base = (enum hs_npu_split)i;
                return true;
            }
        }
        return false;
    }
    return false;
}

/* Trims spaces at both ends of [s, s + n) in place; returns the start. */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) {
        s[--n] = '\0';
    }
    return s;
}

hs_status hs_npu_config_parse(struct hs_npu_config *cfg, const char *text, const char *source,
                              struct hs_error *err)
{
    if (!cfg || !text) {
        return hs_error_set(err, HS_E_INVAL, "npu config: nothing to parse");
    }
    if (!source) {
        source = "npu config";
    }
    int line = 0;
    char buf[512];
    for (const char *p = text; *p;) {
        const size_t n = strcspn(p, "\n");
        line++;
        if (n >= sizeof(buf)) {
            return hs_error_set(err, HS_E_FORMAT, "%s:%d: line too long", source, line);
        }
        memcpy(buf, p, n);
        buf[n] = '\0';
        p += n + (p[n] == '\n');
        char *hash = strchr(buf, '#');
        if (hash) {
            *hash = '\0';
        }
        char *s = trim(buf);
        if (!*s) {
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            return hs_error_set(err, HS_E_FORMAT, "%s:%d: expected 'key = value', got '%s'", source,
                                line, s);
        }
        *eq = '\0';
        char *key = trim(s);
        char *val = trim(eq + 1);
        if (!*val) {
            return hs_error_set(err, HS_E_FORMAT, "%s:%d: '%s' has no value", source, line, key);
        }
        if (!strcmp(key, "preset")) {
            int i = 0;
            for (; i < HS_NPU_PRESET_COUNT; i++) {
                if (!strcmp(val, hs_npu_preset_str((enum hs_npu_preset)i))) {
                    hs_npu_config_preset((enum hs_npu_preset)i, cfg);
                    break;
                }
            }
            if (i == HS_NPU_PRESET_COUNT) {
                return hs_error_set(err, HS_E_FORMAT, "%s:%d: unknown preset '%s' (vnpu, wormhole)",
                                    source, line, val);
            }
            continue;
        }
        const struct key *k = NULL;
        for (size_t i = 0; i < HS_ARRAY_LEN(keys); i++) {
            if (!strcmp(keys[i].name, key)) {
                k = &keys[i];
            }
        }
        if (!k) {
            return hs_error_set(err, HS_E_FORMAT, "%s:%d: unknown key '%s'", source, line, key);
        }
        if (!set_value(cfg, k, val)) {
            return hs_error_set(err, HS_E_FORMAT, "%s:%d: bad value '%s' for %s", source, line, val,
                                key);
        }
    }
    return hs_npu_config_check(cfg, err);
}

hs_status hs_npu_config_load(struct hs_npu_config *cfg, const char *path, struct hs_error *err)
{
    hs_npu_config_preset(HS_NPU_PRESET_VNPU, cfg);
    FILE *f = fopen(path, "rb");
    if (!f) {
        return hs_error_set(err, HS_E_IO, "cannot open npu config '%s': %s", path, strerror(errno));
    }
    enum { MAX = 1 << 20 };
    char *text = malloc(MAX + 1);
    if (!text) {
        fclose(f);
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    const size_t n = fread(text, 1, MAX + 1, f);
    const bool failed = ferror(f) != 0;
    fclose(f);
    if (failed || n > MAX) {
        free(text);
        return hs_error_set(err, failed ? HS_E_IO : HS_E_FORMAT, "npu config '%s': %s", path,
                            failed ? "read error" : "larger than 1 MiB");
    }
    text[n] = '\0';
    const hs_status st = hs_npu_config_parse(cfg, text, path, err);
    free(text);
    return st;
}

/* ---- tenants ---- */

hs_status hs_npu_tenants_parse(const char *spec, struct hs_npu_tenant_req *out, int32_t max,
                               int32_t *n, struct hs_error *err)
{
    *n = 0;
    if (!spec || !*spec) {
        return hs_error_set(err, HS_E_FORMAT, "--npu-tenants: empty");
    }
    const size_t spec_len = strlen(spec);
    if (spec[spec_len - 1] == ',') {
        return hs_error_set(err, HS_E_FORMAT, "--npu-tenants: '%s' ends with a comma", spec);
    }
    int32_t own = -1;
    for (const char *p = spec; *p;) {
        const size_t len = strcspn(p, ",");
        char item[96];
        if (len == 0 || len >= sizeof(item)) {
            return hs_error_set(err, HS_E_FORMAT, "--npu-tenants: bad item '%.*s'",
                                (int)HS_MIN(len, (size_t)60), p);
        }
        memcpy(item, p, len);
        item[len] = '\0';
        char orig[96];
        memcpy(orig, item, len + 1);
        p += len + (p[len] == ',');
        if (*n == max) {
            return hs_error_set(err, HS_E_FORMAT, "--npu-tenants: more than %d tenants", max);
        }
        struct hs_npu_tenant_req *r = &out[*n];
        memset(r, 0, sizeof(*r));
        char *s = item;
        if (*s == '*') {
            if (own >= 0) {
                return hs_error_set(err, HS_E_FORMAT,
                                    "--npu-tenants: more than one tenant marked '*'");
            }
            own = *n;
            s++;
        }
        char *eq = strchr(s, '=');
        if (eq) {
            *eq = '\0';
            if (!*s || strlen(s) >= sizeof(r->name)) {
                return hs_error_set(err, HS_E_FORMAT, "--npu-tenants: bad name in '%s'", orig);
            }
            snprintf(r->name, sizeof(r->name), "%s", s);
            s = eq + 1;
        }
        char *end;
        errno = 0;
        const long w = strtol(s, &end, 10);
        long h = 0;
        bool ok = !errno && end != s && (*end == 'x' || *end == 'X');
        if (ok) {
            s = end + 1;
            h = strtol(s, &end, 10);
            ok = !errno && end != s && *end == '\0';
        }
        if (!ok || w < 1 || h < 1 || w > 64 || h > 64) {
            return hs_error_set(err, HS_E_FORMAT,
                                "--npu-tenants: '%s' is not [*][NAME=]WxH with W, H in [1, 64]",
                                orig);
        }
        r->w = (int32_t)w;
        r->h = (int32_t)h;
        (*n)++;
    }
    out[own >= 0 ? own : 0].own = true;
    return HS_OK;
}
