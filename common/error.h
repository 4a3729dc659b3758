/* Error detail for boundaries (model load, request validation): a status plus a human message. */
#ifndef HS_COMMON_ERROR_H
#define HS_COMMON_ERROR_H

#include <stdint.h>

#include "common/status.h"

struct hs_error {
    hs_status status;
    int64_t offset; /* byte offset in the input the message refers to; -1 when none */
    char message[384];
};

/* Fills err (may be NULL) and returns status, so `return hs_error_set(err, HS_E_FORMAT, ...)`
 * works. Thread: any. */
hs_status hs_error_set(struct hs_error *err, hs_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Same, recording the byte offset; the message gets " (at byte offset N)" appended. */
hs_status hs_error_set_at(struct hs_error *err, hs_status status, int64_t offset, const char *fmt,
                          ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Resets err to HS_OK with an empty message. */
void hs_error_clear(struct hs_error *err);

#endif
