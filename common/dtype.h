/* Element types of weights and activations. Values are GGML's type ids, as stored in GGUF. */
#ifndef HS_COMMON_DTYPE_H
#define HS_COMMON_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum hs_type {
    HS_TYPE_F32 = 0,
    HS_TYPE_F16 = 1,
    HS_TYPE_Q4_0 = 2,
    HS_TYPE_Q4_1 = 3,
    HS_TYPE_Q5_0 = 6,
    HS_TYPE_Q5_1 = 7,
    HS_TYPE_Q8_0 = 8,
    HS_TYPE_Q8_1 = 9,
    HS_TYPE_Q2_K = 10,
    HS_TYPE_Q3_K = 11,
    HS_TYPE_Q4_K = 12,
    HS_TYPE_Q5_K = 13,
    HS_TYPE_Q6_K = 14,
    HS_TYPE_Q8_K = 15,
    HS_TYPE_I8 = 24,
    HS_TYPE_I16 = 25,
    HS_TYPE_I32 = 26,
    HS_TYPE_I64 = 27,
    HS_TYPE_F64 = 28,
    HS_TYPE_BF16 = 30,
    HS_TYPE_COUNT = 40, /* one past the largest id GGUF may name; ids in between are unknown */
};

#define HS_QK_K 256 /* super-block size of the K-quants */

/* A token id of the model's vocabulary. */
typedef int32_t hs_token;

/* Block layouts (as in GGUF files). Scales are IEEE half (uint16_t bits) unless noted. */
struct hs_block_q8_0 {
    uint16_t d;
    int8_t qs[32];
};
struct hs_block_q4_0 {
    uint16_t d;
    uint8_t qs[16]; /* low nibbles: elements 0..15, high nibbles: 16..31 */
};
struct hs_block_q4_1 { /* value = d * q + m, q the nibble (0..15) */
    uint16_t d;
    uint16_t m;
    uint8_t qs[16];
};
struct hs_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];  /* bit j (little-endian uint32): the fifth bit of element j */
    uint8_t qs[16]; /* low four bits, laid out as Q4_0's */
};
struct hs_block_q5_1 { /* value = d * q + m, q in 0..31 laid out as Q5_0's */
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[16];
};
struct hs_block_q8_1 { /* activations only (for Q4_1 / Q5_1): s = d * sum(qs) */
    uint16_t d;
    uint16_t s;
    int8_t qs[32];
};
struct hs_block_q4_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12]; /* 8 x (6-bit scale, 6-bit min), packed */
    uint8_t qs[HS_QK_K / 2];
};
struct hs_block_q5_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[HS_QK_K / 8];
    uint8_t qs[HS_QK_K / 2];
};
struct hs_block_q6_k {
    uint8_t ql[HS_QK_K / 2];
    uint8_t qh[HS_QK_K / 4];
    int8_t scales[HS_QK_K / 16];
    uint16_t d;
};
struct hs_block_q8_k { /* activations only */
    float d;
    int8_t qs[HS_QK_K];
    int16_t bsums[HS_QK_K / 16];
};

struct hs_type_traits {
    const char *name;  /* "q4_K" as GGUF/llama.cpp spell it; NULL for unknown ids */
    int64_t blck_size; /* elements per block */
    size_t type_size;  /* bytes per block */
    bool supported;    /* weights of this type can be computed with */
};

/* Returns the traits of t, or a zeroed entry (name NULL) for ids outside the known set. */
const struct hs_type_traits *hs_type_traits(enum hs_type t);

/* "q8_0", or "unknown". */
const char *hs_type_str(enum hs_type t);

/* True for ids that name a type in the table. */
bool hs_type_is_known(uint32_t t);

/* Bytes of a row of n elements; 0 when n is not a multiple of the block size or t is unknown. */
size_t hs_type_row_size(enum hs_type t, int64_t n);

/* ---- half and bfloat16 conversions (portable; kernels use F16C where they can) ---- */

static inline float hs_fp32_from_bits(uint32_t w)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = w};
    return v.f;
}

static inline uint32_t hs_fp32_to_bits(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    return v.u;
}

static inline float hs_fp16_to_fp32(uint16_t h)
{
    /* Exact conversion, after Maratos' branch-free method. */
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = UINT32_C(0xE0) << 23;
    const float exp_scale = 0x1.0p-112f;
    const float normalized = hs_fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = UINT32_C(126) << 23;
    const float magic_bias = 0.5f;
    const float denormalized = hs_fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denormalized_cutoff = UINT32_C(1) << 27;
    const uint32_t result = sign | (two_w < denormalized_cutoff ? hs_fp32_to_bits(denormalized)
                                                                : hs_fp32_to_bits(normalized));
    return hs_fp32_from_bits(result);
}

static inline uint16_t hs_fp32_to_fp16(float f)
{
    /* Round to nearest even, as F16C's vcvtps2ph with rounding mode 0. */
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (f < 0 ? -f : f) * scale_to_inf;
    base *= scale_to_zero;
    const uint32_t w = hs_fp32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & UINT32_C(0x80000000);
    uint32_t bias = shl1_w & UINT32_C(0xFF000000);
    if (bias < UINT32_C(0x71000000)) {
        bias = UINT32_C(0x71000000);
    }
    base = hs_fp32_from_bits((bias >> 1) + UINT32_C(0x07800000)) + base;
    const uint32_t bits = hs_fp32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
    const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT16_C(0x7E00) : nonsign));
}

static inline float hs_bf16_to_fp32(uint16_t h)
{
    return hs_fp32_from_bits((uint32_t)h << 16);
}

static inline uint16_t hs_fp32_to_bf16(float f)
{
    uint32_t u = hs_fp32_to_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) { /* NaN: keep it quiet */
        return (uint16_t)((u >> 16) | 64);
    }
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

#endif
