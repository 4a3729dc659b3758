/* Option parsing shared by the hetserve commands: numbers with ranges, and the engine's
 * split-execution flags (serve, generate and bench take them alike). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/npu/npu.h"
#include "backends/pim/pim-timing.h"
#include "server/cli.h"
#include "server/engine.h"
#include "model/model.h"

bool hs__cli_parse_int(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "hetserve: %s wants an integer in [%lld, %lld], got '%s'\n", flag,
                (long long)lo, (long long)hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool hs__cli_parse_float(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "hetserve: %s wants a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

/* ---- split execution ---- */

int hs__cli_parse_split(int c, const char *arg, struct hs_engine_params *p, const char *cmd,
                        const char *opt)
{
    int64_t iv;
    switch (c) {
    case HS__CLI_OPT_FFN_BACKEND:
        p->backend = arg;
        return 1;
    case HS__CLI_OPT_ATTN_BACKEND:
        p->attn_backend = arg;
        return 1;
    case HS__CLI_OPT_ATTN_THREADS:
        if (!hs__cli_parse_int("--attn-threads", arg, 1, 1024, &iv)) {
            return 0;
        }
        p->attn_threads = (int32_t)iv;
        return 1;
    case HS__CLI_OPT_LONG_CONTEXT:
        if (!hs__cli_parse_int("--long-context", arg, 0, 1 << 24, &iv)) {
            return 0;
        }
        p->long_context = (int32_t)iv;
        return 1;
    case HS__CLI_OPT_PINGPONG:
        p->pingpong = true;
        return 1;
    case HS__CLI_OPT_PINGPONG_BALANCE:
        for (int b = 0; b < HS_PINGPONG_BALANCE_COUNT; b++) {
            if (!strcmp(arg, hs_pingpong_balance_str((enum hs_pingpong_balance)b))) {
                p->pingpong_balance = (enum hs_pingpong_balance)b;
                return 1;
            }
        }
        fprintf(stderr, "hetserve: --pingpong-balance wants cut, kv or length, got '%s'\n", arg);
        return 0;
    case HS__CLI_OPT_TRACE:
        p->trace_path = arg;
        return 1;
    case HS__CLI_OPT_SCHEDULE:
        if (!strcmp(arg, "fifo")) {
            p->order = HS_SCHED_FIFO;
        } else if (!strcmp(arg, "length")) {
            p->order = HS_SCHED_LENGTH;
        } else {
            fprintf(stderr, "hetserve: --schedule wants fifo or length, got '%s'\n", arg);
            return 0;
        }
        return 1;
    case HS__CLI_OPT_FAIR_WAIT_MS:
        if (!hs__cli_parse_int("--fair-wait-ms", arg, 1, 86400000, &iv)) {
            return 0;
        }
        p->fair_wait_ms = (int32_t)iv;
        return 1;
    case HS__CLI_OPT_SEGMENT_TOKENS:
        if (!hs__cli_parse_int("--segment-tokens", arg, 0, 1 << 24, &iv)) {
            return 0;
        }
        p->segment_tokens = (int32_t)iv;
        return 1;
    case HS__CLI_OPT_NPU_CONFIG:
        p->backend_config = arg;
        return 1;
    case HS__CLI_OPT_NPU_TENANTS:
        p->backend_tenants = arg;
        return 1;
    case HS__CLI_OPT_PIM_CONFIG: {
        /* read now, so a mistake is one line naming the file's line before anything loads */
        struct hs_pim_config pc;
        struct hs_error perr = {0};
        if (hs_pim_config_load(arg, &pc, &perr) != HS_OK) {
            fprintf(stderr, "hetserve: --pim-config: %s\n", perr.message);
            return 0;
        }
        p->backend_config = arg;
        return 1;
    }
    case HS__CLI_OPT_SPECULATIVE:
        if (!strcmp(arg, "off")) {
            p->spec_max_draft = 0;
        } else if (!strcmp(arg, "suffix")) {
            p->spec_max_draft = p->spec_max_draft > 0 ? p->spec_max_draft : HS__CLI_SPEC_DRAFT;
        } else {
            fprintf(stderr, "hetserve: --speculative wants suffix or off, got '%s'\n", arg);
            return 0;
        }
        return 1;
    case HS__CLI_OPT_SPEC_MAX_DRAFT:
        if (!hs__cli_parse_int("--spec-max-draft", arg, 0, HS_ENGINE_MAX_DRAFT, &iv)) {
            return 0;
        }
        p->spec_max_draft = (int32_t)iv;
        return 1;
    case HS__CLI_OPT_SPEC_STORE_MIB:
        if (!hs__cli_parse_int("--spec-store-mib", arg, 1, 1 << 16, &iv)) {
            return 0;
        }
        p->spec_store_bytes = (size_t)iv << 20;
        return 1;
    default:
        if (cmd) {
            fprintf(stderr, "hetserve %s: unknown or incomplete option '%s'; see --help\n", cmd,
                    opt);
        }
        return -1;
    }
}

static const struct {
    const char *flag, *help;
} split_help[] = {
    {"--ffn-backend NAME", "where dense and expert layers run (default cpu)"},
    {"--attn-backend NAME",
     "where decode attention runs: a backend of its own, with its own KV pool and threads (split "
     "execution). Without it (and without --attn-threads) attention runs beside the FFN, "
     "unsplit"},
    {"--attn-threads N",
     "threads of the attention backend, on cores apart from the FFN backend's; with "
     "--attn-backend cpu (the default name) this makes two CPU backends (default 1 when split)"},
    {"--long-context N",
     "split: a request decodes on the attention backend once its context passes N tokens (its KV "
     "blocks move then), on the FFN backend before; 0 = from the start (default 0). A served "
     "request may ask otherwise: {\"hetserve\": {\"attention\": \"auto\"|\"attention\"|\"ffn\", "
     "\"long_context\": N}}"},
    {"--pingpong", "split: run the decode batch as two sub-batches that take turns on the two "
                   "backends (L3/CHIME), balanced by a fitted time model (default off)"},
    {"--pingpong-balance cut|kv|length",
     "with --pingpong: the order the split point cuts: cut = admission order (default), kv = "
     "laid out each step for the least predicted step time, length = laid out when the decoding "
     "sequences change, for the least predicted time over their predicted remaining outputs, "
     "and kept (README \"Split execution\")"},
    {"--npu-config FILE",
     "with --attn-backend npu: the simulated NPU, as key = value lines (README \"Simulated NPU\"); "
     "default: vNPU's 6x6 chip"},
    {"--npu-tenants SPEC",
     "virtual NPUs placed on it in order, e.g. '3x3,3x3' or '*qwen=3x3,llama=2x4': the first (or "
     "the one marked '*') runs this model's attention, the others share the chip; default: one "
     "tenant of the whole chip"},
    {"--pim-config FILE",
     "the simulated DIMM-PIM's hardware (--attn-backend pim): one 'key = value' a line, e.g. "
     "'preset = rpim' (rank-level units only), 'preset = host' (this machine's DRAM, measured), "
     "'channels = 8'; the keys are in backends/pim/pim-timing.h (default: CHIME's Table I)"},
    {"--schedule fifo|length",
     "the order waiting requests start in: fifo (default), or length: shortest predicted output "
     "first (predicted from the history of the same prompt, client, reasoning mode and "
     "max_tokens), within --fair-wait-ms"},
    {"--fair-wait-ms MS",
     "with --schedule length: a request waiting longer than MS starts before any that has not, "
     "oldest first (default 1000)"},
    {"--segment-tokens S",
     "decode long generations in segments of S tokens: between segments a request may give its "
     "slot to waiting ones, keeping its KV, so short requests start while long ones run; the "
     "output is the same (default 0: off)"},
    {"--speculative suffix|off",
     "speculative decoding drafted from history: suffix trees over each request's prompt and "
     "output and over earlier responses (the same prompt's first) propose tokens that the model "
     "verifies in the same batched step; lossless (greedy output identical, sampled output "
     "identically distributed). A request may opt out: {\"hetserve\": {\"speculative\": false}} "
     "(default: suffix for serve, off for generate and bench)"},
    {"--spec-max-draft N",
     "the longest draft, 1-32 (default 16 with --speculative suffix); 0 = off. Drafts shrink "
     "below it after rejections and when the batch is compute-bound"},
    {"--spec-store-mib N",
     "the most memory the store of earlier responses allocates, in MiB, 1-65536 (default 8: "
     "about 2,000 tokens of new text, many times that of the repetitive text drafts come from; "
     "taken as responses come, the least recently used evicted whole). Each running sequence's "
     "own trie is bounded apart (32768 nodes, at most 0.9 MiB)"},
    {"--trace FILE.json",
     "write every engine step as Chrome trace events (open in ui.perfetto.dev): stages per layer "
     "and sub-batch on one track per backend thread, KV blocks held per backend"},
};

void hs__cli_split_usage(FILE *f, int col)
{
    enum { WIDTH = 80 };
    for (size_t i = 0; i < HS_ARRAY_LEN(split_help); i++) {
        int x = fprintf(f, "      %s", split_help[i].flag);
        if (x >= col) {
            fputc('\n', f);
            x = 0;
        }
        fprintf(f, "%*s", col - x, "");
        x = col;
        for (const char *w = split_help[i].help; *w;) {
            const int len = (int)strcspn(w, " ");
            if (x > col && x + 1 + len > WIDTH) {
                fprintf(f, "\n%*s", col, "");
                x = col;
            } else if (x > col) {
                fputc(' ', f);
                x++;
            }
            fwrite(w, 1, (size_t)len, f);
            x += len;
            w += len;
            w += strspn(w, " ");
        }
        fputc('\n', f);
    }
}

bool hs__cli_check_npu(const char *cmd, const char *config, const char *tenants)
{
    struct hs_error err = {0};
    if (config) {
        struct hs_npu_config c;
        if (hs_npu_config_load(&c, config, &err) != HS_OK) {
            fprintf(stderr, "hetserve %s: --npu-config: %s\n", cmd, err.message);
            return false;
        }
    }
    if (tenants) {
        struct hs_npu_tenant_req r[HS_NPU_TENANTS_MAX];
        int32_t n;
        if (hs_npu_tenants_parse(tenants, r, HS_NPU_TENANTS_MAX, &n, &err) != HS_OK) {
            fprintf(stderr, "hetserve %s: %s\n", cmd, err.message);
            return false;
        }
    }
    return true;
}

bool hs__cli_split_check(const char *cmd, const struct hs_engine_params *p)
{
    return hs__cli_check_npu(cmd, p->backend_config, p->backend_tenants);
}

const char *hs__cli_default_ctx(const struct hs_model *m, struct hs_engine_params *p)
{
    if (p->n_ctx > 0) {
        return "set by --ctx";
    }
    const struct hs_model_hparams *hp = hs_model_hparams(m);
    const int64_t bs = p->block_size > 0 ? p->block_size : 16;
    const int64_t n_par = p->n_parallel > 0 ? p->n_parallel : 8;
    const enum hs_type kv = p->kv_type == HS_TYPE_F32 ? HS_TYPE_F32 : HS_TYPE_F16;
    const size_t per_token =
        hs_type_row_size(kv, (int64_t)hp->n_head_kv * hp->head_dim) * 2 * (size_t)hp->n_layer_kv;
    int64_t room; /* tokens one sequence may hold */
    if (p->n_kv_blocks > 0) {
        room = (int64_t)p->n_kv_blocks * bs;
    } else if (p->kv_bytes > 0) {
        room = per_token ? (int64_t)(p->kv_bytes / per_token) : INT32_MAX;
    } else {
        long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        double avail = pages > 0 && page > 0 ? (double)pages * (double)page : 1e9;
        double r = per_token ? avail / 2 / (double)n_par / (double)per_token : (double)INT32_MAX;
        room = r > INT32_MAX ? INT32_MAX : (int64_t)r;
    }
    int64_t ctx = hp->n_ctx_train > 0 ? hp->n_ctx_train : 4096;
    const char *why = "the model's trained context";
    if (room < ctx) {
        ctx = room;
        why = "bounded by KV memory";
    }
    ctx = ctx / bs * bs;
    if (ctx < 2 * bs) {
        ctx = 2 * bs; /* the engine then says the pool is too small, if it is */
    }
    p->n_ctx = (int32_t)ctx;
    return why;
}
