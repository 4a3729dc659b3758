/* Logging: level checked before formatting; one sink, set by main; whole lines in one write. */
#ifndef HS_COMMON_LOG_H
#define HS_COMMON_LOG_H

#include <stdarg.h>

enum hs_log_level {
    HS_LOG_LEVEL_ERROR,
    HS_LOG_LEVEL_WARN,
    HS_LOG_LEVEL_INFO,
    HS_LOG_LEVEL_DEBUG,
    HS_LOG_LEVEL_COUNT,
};

/* Sink: receives one whole line without its trailing newline. Called on the logging thread. */
typedef void (*hs_log_sink_fn)(enum hs_log_level level, const char *line, void *user);

extern enum hs_log_level hs__log_level;

/* Sets the level (default WARN) and the sink (NULL: stderr). Thread: main, before other threads. */
void hs_log_set_level(enum hs_log_level level);
void hs_log_set_sink(hs_log_sink_fn sink, void *user);
const char *hs_log_level_str(enum hs_log_level level);

void hs__log(enum hs_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#define HS__LOG(lvl, ...)                                                                          \
    do {                                                                                           \
        if ((lvl) <= hs__log_level) {                                                              \
            hs__log((lvl), __VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

#define HS_LOG_ERROR(...) HS__LOG(HS_LOG_LEVEL_ERROR, __VA_ARGS__)
#define HS_LOG_WARN(...)  HS__LOG(HS_LOG_LEVEL_WARN, __VA_ARGS__)
#define HS_LOG_INFO(...)  HS__LOG(HS_LOG_LEVEL_INFO, __VA_ARGS__)
#define HS_LOG_DEBUG(...) HS__LOG(HS_LOG_LEVEL_DEBUG, __VA_ARGS__)

/* Broken invariant: stays on in release builds. Never for input from outside. */
#define HS_ASSERT(x)                                                                               \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            hs__assert_fail(#x, __FILE__, __LINE__);                                               \
        }                                                                                          \
    } while (0)

_Noreturn void hs__assert_fail(const char *expr, const char *file, int line);

#endif
