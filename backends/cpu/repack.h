/* Weights repacked once into layouts that suit the matmul kernels (repack-avx2.c), for prompt
 * processing and decode alike (repack-avx512.c: Q5_0 decode on AVX-512); the CPU backend owns
 * the copies. Internal to backends/cpu (and tests). Thread: any; the functions keep no state.
 * Only on CPUs with AVX2 + FMA + F16C (the _avxvnni ones: and AVX-VNNI; the _avx512 ones: AVX-512
 * F/BW/VL/DQ; _avx512vnni: and AVX512_VNNI). */
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

/* hs__gemm_q4_0x8_avx2's product and bits with AVX-512 VNNI: two groups (16 rows) a register, a
 * block's 8 quads of each row summed exactly by 8 vpdpbusd (an odd last group, and one
 * activation row, go to the AVX2 kernel). */
void hs__gemm_q4_0x8_avx512vnni(int64_t n, float *s, size_t bs, const void *wr, int64_t n_groups,
                                const void *x, size_t xs, int nc);

/* Bytes of one block of a group of 8 Q5_0 rows, repacked: 8 scales, 128 of nibbles, 32 of fifth
 * bits. */
#define HS__Q5_0X8_BLOCK_BYTES 176

/* Bytes of n_groups groups of 8 Q5_0 rows of n elements, repacked (as many as in the file). */
size_t hs__q5_0x8_bytes(int64_t n_groups, int64_t n);

/* Repacks rows [0, 8 * n_groups) of a Q5_0 matrix into out (hs__q5_0x8_bytes of them): per
 * group and block, the 8 rows' f16 scales; 4 chunks of 32 bytes, byte 4r + j of chunk c being
 * byte 4c + j of row r's qs (low nibble: element 4c + j, high: 16 + 4c + j); then 32 bytes, bit
 * k of byte 4r + j being row r's fifth bit of element 4k + j. */
void hs__repack_q5_0x8(const void *w, size_t w_stride, int64_t n_groups, int64_t n, void *out);

/* s[i] = dot(weight row i, x) for i < 8 * n_groups over the repacked groups wr (starting at the
 * first group wanted) and one Q8_0 activation row x; n / 32 <= HS__REPACK_MAX_BLOCKS. The bits
 * of the Q5_0 vec_dot and gemv (vec_dot's 8 float lanes per row, lane k the exact int32 sum of
 * elements 4k .. 4k + 3, hsum_ps at the end): here the 8 rows of a group share each register, so
 * lane k of all 8 rows comes out of one maddubs with no horizontal adds, and the hsum is 7
 * vector adds over the 8 lane accumulators. For decode (one row); 2+ rows stay on the file
 * layout's tiles. */
void hs__gemv_q5_0x8_avx2(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x);

/* hs__gemv_q5_0x8_avx2's product and bits with AVX-VNNI (the VEX-coded vpdpbusd of Alder Lake and
 * Zen 5; hs__cpu_has_avxvnni): each lane's exact int32 sum in one instruction, started from the
 * offset, where maddubs, madd and a subtraction make it on AVX2. */
void hs__gemv_q5_0x8_avxvnni(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x);

/* Bytes of n_groups groups of 16 Q5_0 rows of n elements, repacked for AVX-512 (as many as in
 * the file). */
size_t hs__q5_0x16_bytes(int64_t n_groups, int64_t n);

/* Repacks rows [0, 16 * n_groups) of a Q5_0 matrix into out (hs__q5_0x16_bytes of them): per
 * group and block, 4 chunks of 64 bytes, byte 4r + j of chunk c being byte 4c + j of row r's qs
 * (low nibble: element 4c + j, high: 16 + 4c + j); then 8 masks of 64 bits, bit 4r + j of mask
 * k being row r's fifth bit of element 4k + j; then the 16 rows' f16 scales. */
void hs__repack_q5_0x16(const void *w, size_t w_stride, int64_t n_groups, int64_t n, void *out);

/* hs__gemv_q5_0x8_avx2's product and bits on AVX-512 (with VNNI, and without) over groups of
 * 16 rows (hs__repack_q5_0x16's layout): a register holds lane k of 16 rows, so each activation
 * quad is broadcast once for 16 rows and the fifth bits are one masked add. */
void hs__gemv_q5_0x16_avx512(int64_t n, float *s, const void *wr, int64_t n_groups, const void *x);
void hs__gemv_q5_0x16_avx512vnni(int64_t n, float *s, const void *wr, int64_t n_groups,
                                 const void *x);

#endif
