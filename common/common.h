/* common/: status codes, logging, types, allocation, RNG. Depends on nothing. */
#ifndef HS_COMMON_COMMON_H
#define HS_COMMON_COMMON_H

#include <stdint.h>

#include "common/alloc.h"
#include "common/error.h"
#include "common/dtype.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/status.h"

#define HS_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define HS_MAX(a, b)    ((a) > (b) ? (a) : (b))
#define HS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The block and offset of position pos in a paged KV cache, as one flat slot id
 * (block * block_size + offset), given the sequence's block table: the one place this
 * arithmetic is written (kvcache/, the forward pass and the backends' kernels use it). */
static inline int64_t hs_kv_slot(const int32_t *block_table, int32_t block_size, int64_t pos)
{
    return (int64_t)block_table[pos / block_size] * block_size + pos % block_size;
}

/* The value of hexadecimal digit c ('0'-'9', 'a'-'f', 'A'-'F'), or -1 (any other c, EOF too). */
static inline int hs_hex_digit(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

#endif
