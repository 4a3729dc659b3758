/* Subcommands of the hetserve binary. Each takes argv starting at the subcommand's name and
 * returns the process exit code: 0 success, 2 bad input (a one-line error was printed), 1 other
 * failure. Thread: main. */
#ifndef HS_SERVER_CLI_H
#define HS_SERVER_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct hs_engine_params;

int hs__cli_generate(int argc, char **argv);
int hs__cli_bench(int argc, char **argv);
int hs__cli_mkmodel(int argc, char **argv);
/* `hetserve sim WHAT`: the simulator reproductions (cli-sim.c dispatches on WHAT). */
int hs__cli_sim(int argc, char **argv);
int hs__cli_sim_chime(int argc, char **argv);
int hs__cli_sim_vnpu(int argc, char **argv);

/* Shared flag parsing helpers: print a one-line error naming flag and return false on bad
 * values. */
bool hs__cli_parse_int(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out);
bool hs__cli_parse_float(const char *flag, const char *s, double lo, double hi, double *out);
/* Reads --npu-config's file and parses --npu-tenants (either may be NULL), so that a mistake is
 * one line naming it (the file's line) before anything loads; false after printing it. */
bool hs__cli_check_npu(const char *cmd, const char *config, const char *tenants);

/* The engine's split-execution flags, the same in every command that runs the engine (serve,
 * generate, bench): --ffn-backend, --attn-backend, --attn-threads, --long-context, --pingpong,
 * --trace, the scheduling of long outputs (--schedule, --fair-wait-ms, --segment-tokens) and
 * speculative decoding (--speculative, --spec-max-draft, --spec-store-mib). A command puts
 * HS__CLI_SPLIT_OPTIONS in its getopt_long table (<getopt.h>); the values are above any command's
 * own. */
/* --speculative suffix's longest draft unless --spec-max-draft says otherwise; serve's default
 * (generate and bench default to off: one request has no history to draft from). */
#define HS__CLI_SPEC_DRAFT 16

enum {
    HS__CLI_OPT_FFN_BACKEND = 0x1000,
    HS__CLI_OPT_ATTN_BACKEND,
    HS__CLI_OPT_ATTN_THREADS,
    HS__CLI_OPT_LONG_CONTEXT,
    HS__CLI_OPT_PINGPONG,
    HS__CLI_OPT_TRACE,
    HS__CLI_OPT_NPU_CONFIG,
    HS__CLI_OPT_NPU_TENANTS,
    HS__CLI_OPT_PIM_CONFIG,
    HS__CLI_OPT_SCHEDULE,
    HS__CLI_OPT_FAIR_WAIT_MS,
    HS__CLI_OPT_SEGMENT_TOKENS,
    HS__CLI_OPT_SPECULATIVE,
    HS__CLI_OPT_SPEC_MAX_DRAFT,
    HS__CLI_OPT_SPEC_STORE_MIB,
    HS__CLI_OPT_PINGPONG_BALANCE,
};
/* clang-format off */
#define HS__CLI_SPLIT_OPTIONS                                                                      \
    {"ffn-backend", required_argument, NULL, HS__CLI_OPT_FFN_BACKEND},                             \
    {"attn-backend", required_argument, NULL, HS__CLI_OPT_ATTN_BACKEND},                           \
    {"attn-threads", required_argument, NULL, HS__CLI_OPT_ATTN_THREADS},                           \
    {"long-context", required_argument, NULL, HS__CLI_OPT_LONG_CONTEXT},                           \
    {"pingpong", no_argument, NULL, HS__CLI_OPT_PINGPONG},                                         \
    {"trace", required_argument, NULL, HS__CLI_OPT_TRACE},                                         \
    {"npu-config", required_argument, NULL, HS__CLI_OPT_NPU_CONFIG},                               \
    {"npu-tenants", required_argument, NULL, HS__CLI_OPT_NPU_TENANTS},                             \
    {"pim-config", required_argument, NULL, HS__CLI_OPT_PIM_CONFIG},                               \
    {"schedule", required_argument, NULL, HS__CLI_OPT_SCHEDULE},                                   \
    {"fair-wait-ms", required_argument, NULL, HS__CLI_OPT_FAIR_WAIT_MS},                           \
    {"segment-tokens", required_argument, NULL, HS__CLI_OPT_SEGMENT_TOKENS},                       \
    {"speculative", required_argument, NULL, HS__CLI_OPT_SPECULATIVE},                             \
    {"spec-max-draft", required_argument, NULL, HS__CLI_OPT_SPEC_MAX_DRAFT},                       \
    {"spec-store-mib", required_argument, NULL, HS__CLI_OPT_SPEC_STORE_MIB},                       \
    {"pingpong-balance", required_argument, NULL, HS__CLI_OPT_PINGPONG_BALANCE}
/* clang-format on */

/* After the options: checks what the split flags named that can be checked before anything
 * loads (the NPU's config file and tenants), printing one line naming the mistake; false then.
 * cmd is the command's name. */
bool hs__cli_split_check(const char *cmd, const struct hs_engine_params *p);

/* The default branch of a command's getopt_long switch: applies split flag c, with its argument
 * arg, to *p and returns 1 (p borrows arg: argv outlives the command). On a bad value prints a
 * one-line error and returns 0. When c is no split flag returns -1, after printing "hetserve CMD:
 * unknown or incomplete option 'OPT'; see --help" for a command name cmd (NULL: nothing; opt is
 * the option as written, argv[optind - 1]). */
int hs__cli_parse_split(int c, const char *arg, struct hs_engine_params *p, const char *cmd,
                        const char *opt);

struct hs_model;

/* When p->n_ctx <= 0 sets it to the model's trained context, bounded by what the KV memory
 * allows one sequence: p->n_kv_blocks or p->kv_bytes when given, else half the available
 * physical memory shared by p->n_parallel sequences (default 8); rounded down to whole
 * blocks. Returns how the length was chosen, for the start-up line ("set by --ctx", "the
 * model's trained context", "bounded by KV memory"; static). Thread: any. */
const char *hs__cli_default_ctx(const struct hs_model *m, struct hs_engine_params *p);

/* Prints the split flags' help as the command's other flags: each description from column col,
 * wrapped before column 80. */
void hs__cli_split_usage(FILE *f, int col);

#endif
