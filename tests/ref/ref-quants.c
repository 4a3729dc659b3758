#include "tests/ref/ref-quants.h"

#include <math.h>
#include <string.h>

/* IEEE half -> double, by the definition (sign, 5-bit exponent, 10-bit fraction). */
static double half_to_double(uint16_t h)
{
    const int sign = h >> 15, e = (h >> 10) & 31, f = h & 1023;
    double v;
    if (e == 0) {
        v = ldexp((double)f, -24);
    } else if (e == 31) {
        v = f ? NAN : INFINITY;
    } else {
        v = ldexp((double)(f + 1024), e - 25);
    }
    return sign ? -v : v;
}

static double bf16_to_double(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* 6-bit scale (which = 0) or min (which = 1) of sub-block j from the 12 packed bytes:
 * j < 4: low 6 bits of byte j (scale) / byte j + 4 (min); j >= 4: low / high nibble of byte
 * j + 4, with the top two bits taken from bits 6..7 of byte j - 4 (scale) / byte j (min). */
static int k4_field(const uint8_t *s, int j, int which)
{
    if (j < 4) {
        return s[j + 4 * which] & 0x3F;
    }
    const int low4 = which ? (s[j + 4] >> 4) : (s[j + 4] & 0x0F);
    const int high2 = (which ? s[j] : s[j - 4]) >> 6;
    return low4 + 16 * high2;
}

int ref_dequantize(enum hs_type t, const void *vx, double *y, int64_t n)
{
    const uint8_t *x = vx;
    switch (t) {
    case HS_TYPE_F32:
        for (int64_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, x + 4 * i, 4);
            y[i] = f;
        }
        return 0;
    case HS_TYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            y[i] = half_to_double(rd16(x + 2 * i));
        }
        return 0;
    case HS_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            y[i] = bf16_to_double(rd16(x + 2 * i));
        }
        return 0;
    case HS_TYPE_Q8_0: /* 34 bytes: half d, 32 x int8 */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 34 * (i / 32);
            y[i] = half_to_double(rd16(blk)) * (int8_t)blk[2 + i % 32];
        }
        return 0;
    case HS_TYPE_Q4_0: /* 18 bytes: half d, 16 bytes; element j < 16 low nibble of byte j */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 18 * (i / 32);
            const int j = (int)(i % 32);
            const int q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
            y[i] = half_to_double(rd16(blk)) * (q - 8);
        }
        return 0;
    case HS_TYPE_Q5_0: /* 22 bytes: half d, 4 bytes of fifth bits (bit j: element j), 16 bytes
                          of low nibbles as Q4_0 */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 22 * (i / 32);
            const int j = (int)(i % 32);
            const int lo = j < 16 ? (blk[6 + j] & 15) : (blk[6 + j - 16] >> 4);
            const int hi = (blk[2 + j / 8] >> (j % 8)) & 1;
            y[i] = half_to_double(rd16(blk)) * ((lo | hi << 4) - 16);
        }
        return 0;
    case HS_TYPE_Q4_1: /* 20 bytes: half d, half m, 16 bytes of nibbles as Q4_0; d q + m */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 20 * (i / 32);
            const int j = (int)(i % 32);
            const int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
            y[i] = half_to_double(rd16(blk)) * q + half_to_double(rd16(blk + 2));
        }
        return 0;
    case HS_TYPE_Q5_1: /* 24 bytes: half d, half m, fifth bits and nibbles as Q5_0; d q + m */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 24 * (i / 32);
            const int j = (int)(i % 32);
            const int lo = j < 16 ? (blk[8 + j] & 15) : (blk[8 + j - 16] >> 4);
            const int hi = (blk[4 + j / 8] >> (j % 8)) & 1;
            y[i] = half_to_double(rd16(blk)) * (lo | hi << 4) + half_to_double(rd16(blk + 2));
        }
        return 0;
    case HS_TYPE_Q8_1: /* 36 bytes: half d, half s (d x the sum of the quants), 32 x int8 */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 36 * (i / 32);
            y[i] = half_to_double(rd16(blk)) * (int8_t)blk[4 + i % 32];
        }
        return 0;
    case HS_TYPE_Q8_K: /* float d, 256 x int8, 16 x int16 */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 292 * (i / 256);
            float d;
            memcpy(&d, blk, 4);
            y[i] = (double)d * (int8_t)blk[4 + i % 256];
        }
        return 0;
    case HS_TYPE_Q4_K:   /* 144 bytes: d, dmin, 12 scale bytes, 128 quant bytes */
    case HS_TYPE_Q5_K: { /* 176 bytes: d, dmin, 12 scale bytes, 32 high-bit bytes, 128 */
        const int five = t == HS_TYPE_Q5_K;
        const int bsize = five ? 176 : 144;
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + bsize * (i / 256);
            const int e = (int)(i % 256), sub = e / 32, l = e % 32;
            const uint8_t *qs = blk + 16 + (five ? 32 : 0);
            /* Sub-blocks 2c and 2c + 1 share bytes 32c..32c+31: low then high nibbles. */
            int q = (qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 15;
            if (five) {
                q += 16 * ((blk[16 + l] >> sub) & 1);
            }
            const double d = half_to_double(rd16(blk)), dmin = half_to_double(rd16(blk + 2));
            y[i] = d * k4_field(blk + 4, sub, 0) * q - dmin * k4_field(blk + 4, sub, 1);
        }
        return 0;
    }
    case HS_TYPE_Q6_K: /* 210 bytes: ql[128], qh[64], int8 scales[16], half d */
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = x + 210 * (i / 256);
            const int e = (int)(i % 256), half = e / 128, r = e % 128, l = r % 32;
            const int quarter = r / 32; /* 0: ql low (l), 1: ql low (l+32), 2: high, 3: high */
            const uint8_t qlb = blk[64 * half + l + (quarter % 2 ? 32 : 0)];
            const int lo = quarter < 2 ? (qlb & 15) : (qlb >> 4);
            const int hi = (blk[128 + 32 * half + l] >> (2 * quarter)) & 3;
            const int scale = (int8_t)blk[192 + e / 16];
            y[i] = half_to_double(rd16(blk + 208)) * scale * ((lo + 16 * hi) - 32);
        }
        return 0;
    default:
        return -1;
    }
}

/* IEEE half of a float, round to nearest even, by the definition (normal and subnormal). */
static uint16_t float_to_half(float f)
{
    const double v = f;
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs(v);
    if (a == 0) {
        return sign;
    }
    int e;
    frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int exp = e - 1 + 15;
    if (exp <= 0) { /* subnormal: units of 2^-24 */
        const double q = nearbyint(a * 16777216.0);
        return (uint16_t)(sign | (uint16_t)q);
    }
    double m = nearbyint(ldexp(a, 10 - (e - 1))); /* 1024..2048 */
    if (m >= 2048) {
        m /= 2;
        exp++;
    }
    if (exp >= 31) {
        return (uint16_t)(sign | 0x7C00);
    }
    return (uint16_t)(sign | (exp << 10) | ((int)m - 1024));
}

void ref_quantize_q8_0_x86(const float *x, void *vy, int64_t n)
{
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) {
            if (fabsf(x[32 * b + j]) > amax) {
                amax = fabsf(x[32 * b + j]);
            }
        }
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const uint16_t dh = float_to_half(d);
        uint8_t *blk = y + 34 * b;
        blk[0] = (uint8_t)(dh & 0xFF);
        blk[1] = (uint8_t)(dh >> 8);
        for (int j = 0; j < 32; j++) {
            /* Half to even (the default rounding mode). */
            blk[2 + j] = (uint8_t)(int8_t)rintf(x[32 * b + j] * id);
        }
    }
}

void ref_quantize_q8_0(const float *x, void *vy, int64_t n)
{
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) {
            if (fabsf(x[32 * b + j]) > amax) {
                amax = fabsf(x[32 * b + j]);
            }
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = float_to_half(d);
        uint8_t *blk = y + 34 * b;
        blk[0] = (uint8_t)(dh & 0xFF);
        blk[1] = (uint8_t)(dh >> 8);
        for (int j = 0; j < 32; j++) {
            const float v = x[32 * b + j] * id;
            /* Half away from zero. */
            const double r = v < 0 ? -floor(-(double)v + 0.5) : floor((double)v + 0.5);
            blk[2 + j] = (uint8_t)(int8_t)r;
        }
    }
}

void ref_quantize_q8_k(const float *x, void *vy, int64_t n)
{
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / 256; b++) {
        const float *xb = x + 256 * b;
        uint8_t *blk = y + 292 * b;
        memset(blk, 0, 292);
        float amax = 0, max = 0;
        for (int j = 0; j < 256; j++) {
            if (fabsf(xb[j]) > amax) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        }
        if (amax == 0) {
            continue;
        }
        const float iscale = -127.0f / max;
        int16_t bsums[16] = {0};
        for (int j = 0; j < 256; j++) {
            const float v = iscale * xb[j];
            /* Half to even (the default rounding mode). */
            double r = nearbyint((double)v);
            if (r > 127) {
                r = 127;
            }
            blk[4 + j] = (uint8_t)(int8_t)r;
            bsums[j / 16] = (int16_t)(bsums[j / 16] + (int)r);
        }
        const float d = 1.0f / iscale;
        memcpy(blk, &d, 4);
        memcpy(blk + 260, bsums, sizeof(bsums));
    }
}

/* Lane l of 16: (a0 + a2) + (a1 + a3) of the four accumulators, then _mm512_reduce_add_ps's
 * tree (halves 16 -> 8 -> 4, then (0 + 2) + (1 + 3)). */
static float reduce_avx512_f32(float acc[4][16])
{
    float v[16], h8[8], h4[4];
    for (int l = 0; l < 16; l++) {
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    for (int l = 0; l < 8; l++) {
        h8[l] = v[l] + v[l + 8];
    }
    for (int l = 0; l < 4; l++) {
        h4[l] = h8[l] + h8[l + 4];
    }
    return (h4[0] + h4[2]) + (h4[1] + h4[3]);
}

float ref_dot_ggml_avx512(enum hs_type t, const void *vw, const void *vx, int64_t n)
{
    const uint8_t *w = vw, *x = vx;
    float acc[4][16] = {{0}};
    const int64_t np = n & ~(int64_t)63;
    if (t == HS_TYPE_F32) {
        const float *wf = vw, *xf = vx;
        for (int64_t i = 0; i < np; i += 64) {
            for (int k = 0; k < 4; k++) {
                for (int l = 0; l < 16; l++) {
                    acc[k][l] = fmaf(wf[i + 16 * k + l], xf[i + 16 * k + l], acc[k][l]);
                }
            }
        }
        float sum = reduce_avx512_f32(acc);
        for (int64_t i = np; i < n; i++) {
            const float p = wf[i] * xf[i];
            sum += p;
        }
        return sum;
    }
    if (t == HS_TYPE_F16) {
        for (int64_t i = 0; i < np; i += 64) {
            for (int k = 0; k < 4; k++) {
                for (int l = 0; l < 16; l++) {
                    const int64_t e = i + 16 * k + l;
                    acc[k][l] = fmaf((float)half_to_double(rd16(w + 2 * e)),
                                     (float)half_to_double(rd16(x + 2 * e)), acc[k][l]);
                }
            }
        }
        double sum = reduce_avx512_f32(acc);
        for (int64_t i = np; i < n; i++) {
            const float p =
                (float)half_to_double(rd16(w + 2 * i)) * (float)half_to_double(rd16(x + 2 * i));
            sum += (double)p;
        }
        return (float)sum;
    }
    if (t == HS_TYPE_Q4_0) {
        /* llama.cpp's repacked Q4_0 kernels (ggml_gemv / ggml_gemm_q4_0_8x8_q8_0), which it runs
         * for Q4_0 matmuls on AVX2 / AVX-512 CPUs: per block the exact integer dot t, then
         * acc = fma(t, d_w * d_x, acc). */
        float q4acc = 0.0f;
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *wb = w + (size_t)b * 18, *xb = x + (size_t)b * 34;
            int32_t tot = 0;
            for (int j = 0; j < 16; j++) {
                tot += ((wb[2 + j] & 15) - 8) * (int8_t)xb[2 + j];
                tot += ((wb[2 + j] >> 4) - 8) * (int8_t)xb[2 + j + 16];
            }
            const float d = (float)half_to_double(rd16(wb)) * (float)half_to_double(rd16(xb));
            q4acc = fmaf((float)tot, d, q4acc);
        }
        return q4acc;
    }
    if (t == HS_TYPE_Q8_0 || t == HS_TYPE_Q5_0) {
        /* ggml_vec_dot_{q8_0,q5_0}_q8_0 on x86: per 32-element block, int32 lane l holds the
         * products of elements 4l..4l+3; acc_l = fma(d_w * d_x, lane_l, acc_l); then the sum of
         * the 8 lanes as hsum_float_8: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). */
        const size_t wsize = hs_type_row_size(t, 32);
        double wv[32];
        float a8[8] = {0};
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *wb = w + (size_t)b * wsize, *xb = x + (size_t)b * 34;
            ref_dequantize(t, wb, wv, 32);
            const double dw = half_to_double(rd16(wb));
            const float d = (float)dw * (float)half_to_double(rd16(xb));
            for (int l = 0; l < 8; l++) {
                int32_t lane = 0;
                for (int k = 4 * l; k < 4 * l + 4; k++) {
                    /* The integer weight: its value over d (exact: |q| <= 127, d a half). */
                    const int32_t q = dw != 0.0 ? (int32_t)lround(wv[k] / dw) : 0;
                    lane += q * (int8_t)xb[2 + k];
                }
                a8[l] = fmaf(d, (float)lane, a8[l]);
            }
        }
        const float s0 = a8[0] + a8[4], s1 = a8[1] + a8[5], s2 = a8[2] + a8[6], s3 = a8[3] + a8[7];
        return (s0 + s2) + (s1 + s3);
    }
    if (t == HS_TYPE_Q4_1 || t == HS_TYPE_Q5_1) {
        /* ggml_vec_dot_q4_1_q8_1 / _q5_1_q8_1 on x86: the unsigned quants' lanes as above with
         * acc_l = fma(d_w * d_x, lane_l, acc_l), beside summs += m_w * s_x; then
         * hsum_float_8(acc) + summs (m_w s_x, two halves, is exact in float). */
        const size_t wsize = hs_type_row_size(t, 32);
        double wv[32];
        float a8[8] = {0}, summs = 0.0f;
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *wb = w + (size_t)b * wsize, *xb = x + (size_t)b * 36;
            ref_dequantize(t, wb, wv, 32);
            const double dw = half_to_double(rd16(wb)), mw = half_to_double(rd16(wb + 2));
            const float d = (float)dw * (float)half_to_double(rd16(xb));
            for (int l = 0; l < 8; l++) {
                int32_t lane = 0;
                for (int k = 4 * l; k < 4 * l + 4; k++) {
                    const int32_t q = dw != 0.0 ? (int32_t)lround((wv[k] - mw) / dw) : 0;
                    lane += q * (int8_t)xb[4 + k];
                }
                a8[l] = fmaf(d, (float)lane, a8[l]);
            }
            summs += (float)mw * (float)half_to_double(rd16(xb + 2));
        }
        const float s0 = a8[0] + a8[4], s1 = a8[1] + a8[5], s2 = a8[2] + a8[6], s3 = a8[3] + a8[7];
        return ((s0 + s2) + (s1 + s3)) + summs;
    }
    return NAN;
}

float ref_expf_ggml_avx512(float x)
{
    const float shifter = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, shifter);
    const float n = z - shifter;
    const float b_hi = fmaf(-n, 0x1.62e4p-1f, x);
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, b_hi);
    const float u = b * b;
    const float p45 = fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f);
    const float p23 = fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f);
    const float p01 = fmaf(0x1.ffffecp-1f, b, 1.0f);
    const float poly = fmaf(fmaf(p45, u, p23), u, p01);
    if (isnan(n)) {
        return poly;
    }
    if (fabsf(n) > 192.0f) {
        return n <= 0.0f ? 0.0f : INFINITY;
    }
    /* vscalefps: poly * 2^n, rounded once (ldexpf rounds a subnormal result correctly). */
    return ldexpf(poly, (int)n);
}

/* Q8_1 from a Q8_0 quantizer: the same block, and s = fp16((amax / 127) * sum(q)). */
static void q8_1_from_q8_0(const float *x, void *vy, int64_t n,
                           void (*q8_0)(const float *, void *, int64_t))
{
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / 32; b++) {
        uint8_t q0[34];
        q8_0(x + b * 32, q0, 32);
        float amax = 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            sum += (int8_t)q0[2 + j];
        }
        const uint16_t s = hs_fp32_to_fp16((amax / 127.0f) * (float)sum);
        memcpy(y + 36 * b, q0, 2);
        memcpy(y + 36 * b + 2, &s, 2);
        memcpy(y + 36 * b + 4, q0 + 2, 32);
    }
}

void ref_quantize_q8_1(const float *x, void *y, int64_t n)
{
    q8_1_from_q8_0(x, y, n, ref_quantize_q8_0);
}

void ref_quantize_q8_1_x86(const float *x, void *y, int64_t n)
{
    q8_1_from_q8_0(x, y, n, ref_quantize_q8_0_x86);
}
