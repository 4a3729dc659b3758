/* Subcommands of the hetserve binary. Each takes argv starting at the subcommand's name and
 * returns the process exit code: 0 success, 2 bad input (a one-line error was printed), 1 other
 * failure. Thread: main. */
#ifndef HS_SERVER_CLI_H
#define HS_SERVER_CLI_H

int hs__cli_generate(int argc, char **argv);
int hs__cli_bench(int argc, char **argv);
int hs__cli_mkmodel(int argc, char **argv);
int hs__cli_sim(int argc, char **argv);

/* Shared flag parsing helpers: print a one-line error naming flag and return false on bad
 * values. */
#include <stdbool.h>
#include <stdint.h>
bool hs__cli_parse_int(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out);
bool hs__cli_parse_float(const char *flag, const char *s, double lo, double hi, double *out);

#endif
