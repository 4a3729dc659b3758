#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

hs_status hs_error_set(struct hs_error *err, hs_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        err->status = status;
        err->offset = -1;
    }
    return status;
}

hs_status hs_error_set_at(struct hs_error *err, hs_status status, int64_t offset, const char *fmt,
                          ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof(err->message)) {
            snprintf(err->message + n, sizeof(err->message) - (size_t)n, " (at byte offset %lld)",
                     (long long)offset);
        }
        err->status = status;
        err->offset = offset;
    }
    return status;
}

void hs_error_clear(struct hs_error *err)
{
    if (err) {
        err->status = HS_OK;
        err->offset = -1;
        err->message[0] = '\0';
    }
}
