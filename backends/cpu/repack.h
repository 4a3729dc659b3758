/* Weights repacked once into layouts that suit the matmul kernels (repack-avx2.c), for prompt
 * processing and decode alike; the CPU backend owns the copies. Internal to backends/cpu (and
 * tests). Thread: any; the functions keep no state. Only on CPUs with AVX2 + FMA + F16C. */
#ifndef HS_BACKENDS_CPU_REPACK_H
#define HS_BACKENDS_CPU_REPACK_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* Longest row the repacked kernels take, in 32-element blocks (their per-call scratch). */
#define HS__REPACK_MAX_BLOCKS 512

/* Bytes of n_groups groups of 8 Q4_0 rows of n elements, repacked. */
size_t hs__q4_0x8_bytes(int64_t n_groups, int64_t n);

/* Repacks rows [0, 8 * n_groups) of a Q4_0 matrix (rows w_stride bytes apart, n elements each)
 * into out (hs__q4_0x8_bytes of them). */
void hs__repack_q4_0x8(const void *w, size_t w_stride, int64_t n_groups, int64_t n, void *out);

/* s[c * bs + i] = dot(weight row i, x row c) for i < 8 * n_groups, c < nc (1..4), over the
 * repacked groups wr (hs__repack_q4_0x8's layout, starting at the first group wanted) and nc
 * Q8_0 activation rows xs bytes apart; n / 32 <= HS__REPACK_MAX_BLOCKS (else HS_ASSERT). The
 * bits of hs__gemm_tile_q4_0_avx2 for the same rows. */
void hs__gemm_q4_0x8_avx2(int64_t n, float *s, size_t bs, const void *wr, int64_t n_groups,
                          const void *x, size_t xs, int nc);

#endif
