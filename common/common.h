/* common/: status codes, logging, types, allocation, RNG. Depends on nothing. */
#ifndef HS_COMMON_COMMON_H
#define HS_COMMON_COMMON_H

#include "common/alloc.h"
#include "common/error.h"
#include "common/dtype.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/status.h"

#define HS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define HS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define HS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
