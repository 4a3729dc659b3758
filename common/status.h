/* hetserve status codes: 0 is success, negatives are errors (libuv style). */
#ifndef HS_COMMON_STATUS_H
#define HS_COMMON_STATUS_H

/* X(name, value, message) */
#define HS_STATUS_MAP(X)                                                                           \
    X(OK, 0, "success")                                                                            \
    X(E_NOMEM, -1, "out of memory")                                                                \
    X(E_INVAL, -2, "invalid argument")                                                             \
    X(E_FORMAT, -3, "malformed input")                                                             \
    X(E_IO, -4, "input/output error")                                                              \
    X(E_NOTSUP, -5, "not supported")                                                               \
    X(E_BUSY, -6, "resource busy")                                                                 \
    X(E_DEVICE, -7, "device error")                                                                \
    X(E_RANGE, -8, "value out of range")                                                           \
    X(E_NOENT, -9, "not found")                                                                    \
    X(E_CANCELED, -10, "canceled")                                                                 \
    X(E_INTERNAL, -11, "internal error")

typedef enum hs_status_code {
#define HS__STATUS_ENUM(name, value, msg) HS_##name = value,
    HS_STATUS_MAP(HS__STATUS_ENUM)
#undef HS__STATUS_ENUM
} hs_status;

#define HS_STATUS_COUNT 12

/* Returns a static string: the code's name ("E_NOMEM"); "UNKNOWN" for values not in the map.
 * Thread: any. */
const char *hs_status_name(hs_status s);

/* Returns a static human-readable message ("out of memory"). Thread: any. */
const char *hs_status_str(hs_status s);

/* Runs x; on error returns it from the enclosing function. */
#define HS_TRY(x)                                                                                  \
    do {                                                                                           \
        hs_status hs__try_st = (x);                                                                \
        if (hs__try_st != HS_OK) {                                                                 \
            return hs__try_st;                                                                     \
        }                                                                                          \
    } while (0)

#endif
