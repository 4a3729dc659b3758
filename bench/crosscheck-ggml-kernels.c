/* crosscheck-ggml-kernels: our weight quantizers, activation quantizers and dot products against
 * the ones in a llama.cpp build's own shared libraries, on the same bytes. A development
 * yardstick (like bench/crosscheck-llamacpp.mjs), never a test dependency: it loads ggml at run
 * time, so nothing here links against it.
 *
 *   crosscheck-ggml-kernels LIBGGML_CPU.so [type-name ...]   (default: every weight type)
 *
 * LIBGGML_CPU.so is a ggml CPU backend variant (Debian's llama.cpp ships one per x86 level in
 * /usr/lib/x86_64-linux-gnu/ggml/backends0/; pick one this CPU runs). libggml-base.so.0 must be
 * loadable beside it. Through ../shared/peers/llamacpp.sh, from the repository root:
 *
 *   PEER_MODELS=build/bench ../shared/peers/llamacpp.sh run /models/crosscheck-ggml-kernels \
 *       /usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cpu-haswell.so
 *
 * For each type and 200 random rows it prints how many weight blocks our reference quantizer
 * writes byte for byte as ggml_quantize_chunk does, how many activation rows our from_float (the
 * best ISA here) writes as ggml's, and how many dot products give the same float bits (and the
 * largest relative difference of the others). Our SIMD kernels follow llama.cpp's AVX-512
 * arithmetic, so against an AVX2 build the K-quants' dots are expected to differ in the last
 * bits; the 32-element types run the same code on both and must match, but Q4_0: llama.cpp
 * repacks Q4_0 matmul weights into 8-row blocks on AVX2 / AVX-512 CPUs and never runs its Q4_0
 * vec_dot there, so ours follows the repacked kernels, which the last two lines check (q4_0x8:
 * ggml_gemv / ggml_gemm_q4_0_8x8_q8_0 on block_q4_0x8 weights and block_q8_0x4 activations). */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/quants.h"
#include "common/common.h"
#include "common/rng.h"

/* ggml-cpu.h's struct ggml_type_traits_cpu and its function types. */
typedef void (*ggml_from_float_t)(const float *x, void *y, int64_t k);
typedef void (*ggml_vec_dot_t)(int n, float *s, size_t bs, const void *x, size_t bx, const void *y,
                               size_t by, int nrc);
struct ggml_type_traits_cpu {
    ggml_from_float_t from_float;
    ggml_vec_dot_t vec_dot;
    int vec_dot_type;
    int64_t nrows;
};
typedef const struct ggml_type_traits_cpu *(*get_traits_fn)(int type);
typedef size_t (*quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start,
                                    int64_t nrows, int64_t n_per_row, const float *imatrix);

#define N_TRIALS 200

static void fill(struct hs_rng *rng, float *x, int64_t n)
{
    const float scale = 0.05f + 2.0f * (float)hs_rng_uniform(rng);
    for (int64_t i = 0; i < n; i++) {
        x[i] = scale * (float)hs_rng_normal(rng);
    }
}

static int check_type(enum hs_type t, get_traits_fn traits, quantize_chunk_fn quantize)
{
    const struct hs_quant_kernels *k = hs__cpu_kernels(t, HS_ISA_COUNT);
    const struct ggml_type_traits_cpu *g = traits((int)t);
    /* A type's own from_float quantizes to it; the activations take the vec_dot type's. */
    const struct ggml_type_traits_cpu *ga = g ? traits(g->vec_dot_type) : NULL;
    if (!k || !g || !g->vec_dot || !ga || !ga->from_float) {
        fprintf(stderr, "%s: not computed by both\n", hs_type_str(t));
        return 1;
    }
    if (g->vec_dot_type != (int)k->vec_dot_type) {
        fprintf(stderr, "%s: ggml dots it with %d, we with %s\n", hs_type_str(t), g->vec_dot_type,
                hs_type_str(k->vec_dot_type));
        return 1;
    }
    const int64_t n = hs_type_traits(t)->blck_size == HS_QK_K ? 4096 : 576 * 2;
    const size_t wrow = hs_type_row_size(t, n), xrow = hs_type_row_size(k->vec_dot_type, n);
    const int64_t nblk = n / hs_type_traits(t)->blck_size;
    const size_t bsize = hs_type_traits(t)->type_size;
    float *w = malloc((size_t)n * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
    float *wd = malloc((size_t)n * sizeof(float)), *xd = malloc((size_t)n * sizeof(float));
    uint8_t *wq_ours = malloc(wrow), *wq_ggml = malloc(wrow);
    uint8_t *xq_ours = malloc(xrow), *xq_ggml = malloc(xrow);
    struct hs_rng rng;
    hs_rng_seed(&rng, 1000 + (uint64_t)t);
    int64_t blocks_same = 0, acts_same = 0, dots_same = 0;
    double worst = 0.0;
    for (int trial = 0; trial < N_TRIALS; trial++) {
        fill(&rng, w, n);
        fill(&rng, x, n);
        hs__quantize_row_ref(t, w, wq_ours, n);
        quantize((int)t, w, wq_ggml, 0, 1, n, NULL);
        for (int64_t b = 0; b < nblk; b++) {
            blocks_same += !memcmp(wq_ours + b * bsize, wq_ggml + b * bsize, bsize);
        }
        k->from_float(x, xq_ours, n);
        ga->from_float(x, xq_ggml, n);
        acts_same += !memcmp(xq_ours, xq_ggml, xrow);
        /* Both dots on ggml's bytes, so only the arithmetic differs. */
        float ours, theirs;
        k->vec_dot(n, &ours, wq_ggml, xq_ggml);
        g->vec_dot((int)n, &theirs, 0, wq_ggml, 0, xq_ggml, 0, 1);
        if (memcmp(&ours, &theirs, sizeof(float)) == 0) {
            dots_same++;
        } else {
            /* The difference relative to the sum of |products| (the dot itself may be ~0). */
            hs__dequantize_row_ref(t, wq_ggml, wd, n);
            hs__dequantize_row_ref(k->vec_dot_type, xq_ggml, xd, n);
            double asum = 0.0;
            for (int64_t i = 0; i < n; i++) {
                asum += fabs((double)wd[i] * xd[i]);
            }
            worst = fmax(worst, fabs((double)ours - theirs) / fmax(asum, 1e-30));
        }
    }
    printf("%-5s weight blocks %6lld/%-6lld activation rows %3d/%d  dots %3lld/%d bit-equal",
           hs_type_str(t), (long long)blocks_same, (long long)(nblk * N_TRIALS), (int)acts_same,
           N_TRIALS, (long long)dots_same, N_TRIALS);
    if (dots_same < N_TRIALS) {
        printf(" (others within %.2g of sum |w x|)", worst);
    }
    printf("\n");
    free(w);
    free(x);
    free(wd);
    free(xd);
    free(wq_ours);
    free(wq_ggml);
    free(xq_ours);
    free(xq_ggml);
    return 0;
}

/* llama.cpp's own Q4_0 path on AVX2 / AVX-512 CPUs: matmul weights repacked to 8-row blocks
 * (block_q4_0x8: the 8 rows' scales, then their nibbles XOR 0x88 in 8-byte pieces, row by row)
 * and its gemv over them. Compares that gemv with our vec_dot and with a scalar model of
 * "one exact integer total per block, acc += total * (d_w * d_x)" accumulated with one fma. */
typedef void (*gemv_fn)(int n, float *s, size_t bs, const void *vx, const void *vy, int nr, int nc);

typedef void (*quantize_mat_fn)(const float *x, void *y, int64_t k);

/* The repacked kernels' arithmetic, written out: per block the exact integer dot, then one fma
 * by d_w * d_x. */
static float q4_0_model_dot(const struct hs_block_q4_0 *wb, const struct hs_block_q8_0 *xb,
                            int64_t nb)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ((wb[b].qs[j] & 0xF) - 8) * xb[b].qs[j];
            isum += ((wb[b].qs[j] >> 4) - 8) * xb[b].qs[j + 16];
        }
        acc = fmaf((float)isum, hs_fp16_to_fp32(wb[b].d) * hs_fp16_to_fp32(xb[b].d), acc);
    }
    return acc;
}

static int check_q4_0_repacked(gemv_fn gemv, gemv_fn gemm, quantize_mat_fn qmat)
{
    const int64_t n = 576 * 2, nb = n / 32;
    const size_t wrow = hs_type_row_size(HS_TYPE_Q4_0, n), xrow = hs_type_row_size(HS_TYPE_Q8_0, n);
    float *w = malloc((size_t)n * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
    uint8_t *wq = malloc(wrow * 8), *rp = malloc((size_t)nb * (16 + 128)), *xq = malloc(xrow);
    float *x4 = malloc((size_t)n * 4 * sizeof(float));
    uint8_t *xq4 = malloc(xrow * 4), *xp_ours = malloc((size_t)nb * (8 + 128)),
            *xp_ggml = malloc((size_t)nb * (8 + 128));
    int acts_same = 0, gemm_same = 0, gemm_total = 0, tiles_same = 0;
    const struct hs_quant_kernels *k = hs__cpu_kernels(HS_TYPE_Q4_0, HS_ISA_COUNT);
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    int same_ours = 0, same_model = 0, total = 0;
    for (int trial = 0; trial < N_TRIALS / 8; trial++) {
        for (int r = 0; r < 8; r++) {
            fill(&rng, w, n);
            hs__quantize_row_ref(HS_TYPE_Q4_0, w, wq + (size_t)r * wrow, n);
        }
        fill(&rng, x, n);
        k->from_float(x, xq, n);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *out = rp + (size_t)b * (16 + 128);
            for (int r = 0; r < 8; r++) {
                memcpy(out + 2 * r, wq + (size_t)r * wrow + (size_t)b * 18, 2);
            }
            for (int i = 0; i < 16; i++) {
                const uint8_t *src = wq + (size_t)(i % 8) * wrow + (size_t)b * 18 + 2 + (i / 8) * 8;
                for (int j = 0; j < 8; j++) {
                    out[16 + 8 * i + j] = src[j] ^ 0x88;
                }
            }
        }
        float theirs[8];
        gemv((int)n, theirs, 8, rp, xq, 1, 8);
        for (int r = 0; r < 8; r++) {
            const struct hs_block_q4_0 *wb =
                (const struct hs_block_q4_0 *)(const void *)(wq + (size_t)r * wrow);
            const struct hs_block_q8_0 *xb = (const struct hs_block_q8_0 *)(const void *)xq;
            float ours;
            k->vec_dot(n, &ours, wb, xb);
            const float model = q4_0_model_dot(wb, xb, nb);
            same_ours += memcmp(&ours, &theirs[r], 4) == 0;
            same_model += memcmp(&model, &theirs[r], 4) == 0;
            total++;
        }
        /* gemm: 4 activation rows packed as block_q8_0x4 (4 scales, then 8-byte pieces row by
         * row), by ggml's quantize_mat and by our quantizer. */
        for (int c = 0; c < 4; c++) {
            fill(&rng, x4 + (size_t)c * n, n);
            k->from_float(x4 + (size_t)c * n, xq4 + (size_t)c * xrow, n);
        }
        qmat(x4, xp_ggml, n);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *out = xp_ours + (size_t)b * (8 + 128);
            for (int c = 0; c < 4; c++) {
                memcpy(out + 2 * c, xq4 + (size_t)c * xrow + (size_t)b * 34, 2);
            }
            for (int i = 0; i < 16; i++) {
                memcpy(out + 8 + 8 * i,
                       xq4 + (size_t)(i % 4) * xrow + (size_t)b * 34 + 2 + (i / 4) * 8, 8);
            }
        }
        acts_same += memcmp(xp_ours, xp_ggml, (size_t)nb * (8 + 128)) == 0;
        float sg[4 * 8], so[4 * 8];
        gemm((int)n, sg, 8, rp, xp_ggml, 4, 8);
        /* Ours: two 4 x 4 tiles on the unpacked rows, laid out as ggml's s (row c: 8 outputs). */
        for (int r0 = 0; r0 < 8; r0 += 4) {
            k->gemm_tile(n, so + r0, 8, wq + (size_t)r0 * wrow, wrow, xq4, xrow, 4, 4);
        }
        for (int i = 0; i < 32; i++) {
            tiles_same += memcmp(&so[i], &sg[i], 4) == 0;
        }
        for (int c = 0; c < 4; c++) {
            const struct hs_block_q8_0 *xb =
                (const struct hs_block_q8_0 *)(const void *)(xq4 + (size_t)c * xrow);
            for (int r = 0; r < 8; r++) {
                const struct hs_block_q4_0 *wb =
                    (const struct hs_block_q4_0 *)(const void *)(wq + (size_t)r * wrow);
                const float model = q4_0_model_dot(wb, xb, nb);
                gemm_same += memcmp(&model, &sg[c * 8 + r], 4) == 0;
                gemm_total++;
            }
        }
    }
    printf("q4_0 repacked gemm (llama.cpp's path): activations packed as ggml's %d/%d, %d/%d "
           "bit-equal to our gemm tiles, %d/%d to one fma per block of the exact total\n",
           acts_same, N_TRIALS / 8, tiles_same, gemm_total, gemm_same, gemm_total);
    free(x4);
    free(xq4);
    free(xp_ours);
    free(xp_ggml);
    printf("q4_0 repacked gemv (llama.cpp's path): %d/%d bit-equal to our vec_dot, %d/%d to "
           "one fma per block of the exact total\n",
           same_ours, total, same_model, total);
    free(w);
    free(x);
    free(wq);
    free(rp);
    free(xq);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: crosscheck-ggml-kernels LIBGGML_CPU.so [type-name ...]\n");
        return 2;
    }
    void *base = dlopen("libggml-base.so.0", RTLD_NOW | RTLD_GLOBAL);
    void *cpu = dlopen(argv[1], RTLD_NOW);
    if (!base || !cpu) {
        fprintf(stderr, "crosscheck-ggml-kernels: %s\n", dlerror());
        return 2;
    }
    /* POSIX's dlsym idiom: ISO C has no object-to-function pointer cast. */
    void (*cpu_init)(void);
    get_traits_fn traits;
    quantize_chunk_fn quantize;
    *(void **)&cpu_init = dlsym(cpu, "ggml_cpu_init");
    *(void **)&traits = dlsym(cpu, "ggml_get_type_traits_cpu");
    *(void **)&quantize = dlsym(base, "ggml_quantize_chunk");
    if (!cpu_init || !traits || !quantize) {
        fprintf(stderr, "crosscheck-ggml-kernels: %s lacks the ggml entry points\n", argv[1]);
        return 2;
    }
    cpu_init();
    printf("ours: %s kernels\n", hs_isa_str(hs__cpu_detect_isa()));
    int rc = 0;
    for (int t = 0; t < HS_TYPE_COUNT; t++) {
        const struct hs_type_traits *tr = hs_type_traits((enum hs_type)t);
        if (!tr->supported || tr->blck_size == 1) {
            continue;
        }
        bool wanted = argc == 2;
        for (int i = 2; i < argc; i++) {
            wanted |= !strcmp(argv[i], tr->name);
        }
        if (wanted) {
            rc |= check_type((enum hs_type)t, traits, quantize);
        }
    }
    gemv_fn gemv, gemm;
    quantize_mat_fn qmat;
    *(void **)&gemv = dlsym(cpu, "ggml_gemv_q4_0_8x8_q8_0");
    *(void **)&gemm = dlsym(cpu, "ggml_gemm_q4_0_8x8_q8_0");
    *(void **)&qmat = dlsym(cpu, "ggml_quantize_mat_q8_0_4x8");
    if (gemv && gemm && qmat && (argc == 2 || !strcmp(argv[2], "q4_0x8"))) {
        rc |= check_q4_0_repacked(gemv, gemm, qmat);
    }
    return rc;
}
