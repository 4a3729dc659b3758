/* The Qwen2-VL / Qwen2.5-VL vision encoder's time per image (model/vision/): a random projector
 * of the given shape written to /tmp, a synthetic screenshot, preprocessing and encoding timed
 * separately (median of --reps runs) on a CPU backend.
 *
 *   bench-vision [--projector qwen2vl|qwen25vl] [--wa-pattern N] [--image WxH] [--vision-dim N]
 *                [--vision-layers N] [--vision-heads N] [--vision-ffn N] [--threads N] [--reps N]
 *
 * Defaults: a 1080x2400 phone screenshot (MobiAgent's size: 3354 tokens, 13416 patches) through
 * mkmodel's tiny projector (dim 64, 2 layers); Qwen2-VL-2B's ViT is --vision-dim 1280
 * --vision-layers 32 --vision-heads 16 --vision-ffn 5120 (hours on two cores at this size). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "model/mkproj.h"
#include "model/vision/vision.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int main(int argc, char **argv)
{
    int nx = 1080, ny = 2400, threads = 2, reps = 3;
    struct hs_mkproj_params pp = hs_mkproj_default_params(HS_PROJ_QWEN2VL);
    /* The projector's family first: its defaults, then the other options over them. */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--projector")) {
            const enum hs_proj_type t = hs_proj_type_from_str(argv[i + 1]);
            if (t != HS_PROJ_QWEN2VL && t != HS_PROJ_QWEN25VL) {
                fprintf(stderr, "bench-vision: --projector is qwen2vl or qwen25vl\n");
                return 2;
            }
            pp = hs_mkproj_default_params(t);
        }
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--projector")) {
        } else if (!strcmp(k, "--wa-pattern")) {
            pp.n_wa_pattern = atoi(v);
        } else if (!strcmp(k, "--image") && sscanf(v, "%dx%d", &nx, &ny) == 2) {
        } else if (!strcmp(k, "--vision-dim")) {
            pp.n_embd = atoi(v);
        } else if (!strcmp(k, "--vision-layers")) {
            pp.n_layer = atoi(v);
        } else if (!strcmp(k, "--vision-heads")) {
            pp.n_head = atoi(v);
        } else if (!strcmp(k, "--vision-ffn")) {
            pp.n_ff = atoi(v);
        } else if (!strcmp(k, "--threads")) {
            threads = atoi(v);
        } else if (!strcmp(k, "--reps")) {
            reps = atoi(v);
        } else {
            fprintf(stderr, "bench-vision: unknown option %s\n", k);
            return 2;
        }
    }
    if (nx <= 0 || ny <= 0 || reps <= 0 || reps > 100) {
        fprintf(stderr, "bench-vision: bad --image or --reps\n");
        return 2;
    }
    char path[64];
    snprintf(path, sizeof(path), "/tmp/bench-vision-%d.gguf", (int)getpid());
    struct hs_error err;
    struct hs_vision *v = NULL;
    if (hs_mkproj_write(&pp, path, &err) != HS_OK || hs_vision_load(path, &v, &err) != HS_OK) {
        fprintf(stderr, "bench-vision: %s\n", err.message);
        unlink(path);
        return 1;
    }
    unlink(path);
    struct hs_image img = {.nx = nx, .ny = ny, .rgb = malloc((size_t)nx * ny * 3)};
    for (size_t i = 0; i < (size_t)nx * ny * 3; i++) {
        img.rgb[i] = (uint8_t)(i * 7 + i / (size_t)(nx * 3) * 13);
    }
    struct hs_backend_params bp = hs_backend_default_params();
    bp.n_threads = threads;
    struct hs_backend *be = NULL;
    if (hs_backend_create("cpu", &bp, &be) != HS_OK) {
        return 1;
    }
    double *pre = calloc((size_t)reps, sizeof(double)), *enc = calloc((size_t)reps, sizeof(double));
    int32_t n_tok = 0, rx = 0, ry = 0;
    for (int r = 0; r < reps; r++) {
        struct hs_vision_input in;
        double t0 = now_ms();
        if (hs_vision_preprocess(v, &img, &in, &err) != HS_OK) {
            return 1;
        }
        double t1 = now_ms();
        n_tok = hs_vision_n_tokens(v, in.nx, in.ny);
        rx = in.nx;
        ry = in.ny;
        float *out = malloc((size_t)n_tok * pp.proj_dim * sizeof(float));
        if (hs_vision_encode(v, be, &in, out, &err) != HS_OK) {
            fprintf(stderr, "bench-vision: %s\n", err.message);
            return 1;
        }
        enc[r] = now_ms() - t1;
        pre[r] = t1 - t0;
        free(out);
        hs_vision_input_finish(&in);
    }
    qsort(pre, (size_t)reps, sizeof(double), bench_cmp_double);
    qsort(enc, (size_t)reps, sizeof(double), bench_cmp_double);
    printf("%s: image %dx%d -> %dx%d, %d tokens (%d patches); ViT dim %d, %d layers, %d heads, "
           "ffn %d; %d threads\n",
           hs_proj_type_str(pp.type), nx, ny, rx, ry, n_tok, n_tok * 4, pp.n_embd, pp.n_layer,
           pp.n_head, pp.n_ff, threads);
    if (pp.type == HS_PROJ_QWEN25VL) {
        printf("window attention in %d of %d layers\n",
               pp.n_layer - pp.n_layer / pp.n_wa_pattern, pp.n_layer);
    }
    printf("preprocess %.1f ms, encode %.1f ms (median of %d; min %.1f, max %.1f)\n",
           pre[reps / 2], enc[reps / 2], reps, enc[0], enc[reps - 1]);
    free(pre);
    free(enc);
    hs_image_finish(&img);
    hs_backend_destroy(be);
    hs_vision_free(v);
    return 0;
}
