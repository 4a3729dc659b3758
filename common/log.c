#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum hs_log_level hs__log_level = HS_LOG_LEVEL_WARN;

static hs_log_sink_fn log_sink;
static void *log_sink_user;

void hs_log_set_level(enum hs_log_level level)
{
    hs__log_level = level;
}

void hs_log_set_sink(hs_log_sink_fn sink, void *user)
{
    log_sink = sink;
    log_sink_user = user;
}

const char *hs_log_level_str(enum hs_log_level level)
{
    static const char *names[HS_LOG_LEVEL_COUNT] = {"error", "warn", "info", "debug"};
    return (unsigned)level < HS_LOG_LEVEL_COUNT ? names[level] : "?";
}

void hs__log(enum hs_log_level level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if (log_sink) {
        log_sink(level, line, log_sink_user);
        return;
    }
    /* One write per line so concurrent lines do not interleave. */
    char out[1100];
    int m = snprintf(out, sizeof(out), "hetserve: %s: %s\n", hs_log_level_str(level), line);
    if (m > 0) {
        ssize_t w =
            write(STDERR_FILENO, out, (size_t)m < sizeof(out) ? (size_t)m : sizeof(out) - 1);
        (void)w;
    }
}

void hs__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "hetserve: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
