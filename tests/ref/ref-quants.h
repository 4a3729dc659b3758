/* Naive references for the weight-type kernels, written from the GGUF block layouts alone and
 * computed in double: tests compare the kernels against these, never against themselves. */
#ifndef HS_TESTS_REF_REF_QUANTS_H
#define HS_TESTS_REF_REF_QUANTS_H

#include <stdint.h>

#include "common/dtype.h"

/* Element values of a row of n elements of type t (F32, F16, BF16, Q8_0, Q8_1, Q4_0, Q5_0, Q4_1,
 * Q5_1, Q4_K, Q5_K, Q6_K, Q8_K) as doubles. Returns 0, or -1 for a type it does not know. */
int ref_dequantize(enum hs_type t, const void *x, double *y, int64_t n);

/* ggml's reference activation quantizers, element by element: Q8_0 (d = amax / 127 in float,
 * q = roundf(x * (1 / d))) and Q8_K (iscale = -127 / (first signed value of largest magnitude),
 * q = min(127, round-half-even(iscale * x)), d = 1 / iscale, bsums of 16). */
void ref_quantize_q8_0(const float *x, void *y, int64_t n);
/* ggml's x86 (AVX / AVX2 / AVX-512) quantize_row_q8_0, which llama.cpp runs on such CPUs:
 * id = 127 / amax instead of 1 / d, and round half to even. */
void ref_quantize_q8_0_x86(const float *x, void *y, int64_t n);
void ref_quantize_q8_k(const float *x, void *y, int64_t n);
/* ggml's quantize_row_q8_1_ref and its x86 quantize_row_q8_1: the matching Q8_0 block, and
 * s = fp16((amax / 127) * sum(q)). */
void ref_quantize_q8_1(const float *x, void *y, int64_t n);
void ref_quantize_q8_1_x86(const float *x, void *y, int64_t n);

/* dot(w, x) of one row each (w of type t, x of its vec_dot_type) in the float order of llama.cpp
 * on AVX-512 CPUs, which its references come from and our AVX2 and AVX-512 kernels reproduce bit
 * for bit. F32 and F16 (ggml_vec_dot_f32 / _f16): four 16-lane fma accumulators over 64-element
 * steps, (a0 + a2) + (a1 + a3), _mm512_reduce_add_ps's tree, then the n % 64 products added in
 * float (F32) or double (F16). Q8_0 and Q5_0 against Q8_0 (ggml's x86 block kernels, which
 * AVX-512 CPUs run too): one fma per block and lane into 8 float lanes, then hsum_float_8. Q4_0:
 * llama.cpp's repacked 8-row kernels (what it runs for Q4_0 matmuls on AVX2 / AVX-512 CPUs), one
 * fma per block of the exact integer total.
 * Q4_1 and Q5_1 against Q8_1: the same over the unsigned quants, plus the float sum of m_w * s_x.
 * NAN for other types. */
float ref_dot_ggml_avx512(enum hs_type t, const void *w, const void *x, int64_t n);

/* exp(x) as ggml's AVX-512 ggml_v_expf computes it in each lane (llama.cpp's SwiGLU and tiled
 * flash attention on AVX-512 CPUs): n = round(x / ln 2) by the 1.5 * 2^23 shifter, b = x - n ln 2
 * in two fmas, the degree-5 polynomial ((c5 b + c4) b^2 + (c3 b + c2)) b^2 + (c1 b + 1), scaled
 * by 2^n with one rounding (vscalefps); |n| > 192 gives +inf or 0. */
float ref_expf_ggml_avx512(float x);

#endif
