/* Reference image embeddings from llama.cpp's libmtmd (not built by meson: it links against the
 * llama.cpp of the peer chroot, see tests/model/data/README.md). Prints the embeddings of one
 * raw RGB image as "n_tokens n_embd nx ny" and then one float per line.
 *
 *   gcc -O1 tests/ref/mtmd-embd.c -o mtmd-embd -L$CH/usr/lib/x86_64-linux-gnu \
 *       -l:libmtmd.so.0 -l:libllama.so.0 -l:libggml.so.0 -Wl,--allow-shlib-undefined
 *   chroot $CH /tmp/x/mtmd-embd LM.gguf MMPROJ.gguf IMAGE.rgb NX NY
 *
 * The chroot ships libmtmd without its header, so the few prototypes are declared here; parameter
 * structs are passed through buffers larger than the library's (returned and passed by value in
 * memory on x86-64, so only their prefix is read), keeping the library's defaults. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct llama_model;
struct mtmd_context;
struct mtmd_bitmap;
struct mtmd_input_chunks;
struct mtmd_input_chunk;
struct mtmd_image_tokens;

struct big_params {
    unsigned char bytes[4096];
};

struct mtmd_input_text {
    const char *text;
    bool add_special;
    bool parse_special;
};

void ggml_backend_load_all(void);
void llama_backend_init(void);
struct big_params llama_model_default_params(void);
struct llama_model *llama_model_load_from_file(const char *path, struct big_params params);
struct big_params mtmd_context_params_default(void);
struct mtmd_context *mtmd_init_from_file(const char *mmproj, const struct llama_model *model,
                                         struct big_params params);
struct mtmd_bitmap *mtmd_bitmap_init(uint32_t nx, uint32_t ny, const unsigned char *data);
struct mtmd_input_chunks *mtmd_input_chunks_init(void);
size_t mtmd_input_chunks_size(const struct mtmd_input_chunks *chunks);
const struct mtmd_input_chunk *mtmd_input_chunks_get(const struct mtmd_input_chunks *chunks,
                                                     size_t idx);
int32_t mtmd_tokenize(struct mtmd_context *ctx, struct mtmd_input_chunks *out,
                      const struct mtmd_input_text *text, const struct mtmd_bitmap **bitmaps,
                      size_t n_bitmaps);
int mtmd_input_chunk_get_type(const struct mtmd_input_chunk *chunk); /* 1: image */
const struct mtmd_image_tokens *mtmd_input_chunk_get_tokens_image(
    const struct mtmd_input_chunk *chunk);
size_t mtmd_image_tokens_get_n_tokens(const struct mtmd_image_tokens *t);
size_t mtmd_image_tokens_get_nx(const struct mtmd_image_tokens *t);
size_t mtmd_image_tokens_get_ny(const struct mtmd_image_tokens *t);
int32_t mtmd_encode_chunk(struct mtmd_context *ctx, const struct mtmd_input_chunk *chunk);
float *mtmd_get_output_embd(struct mtmd_context *ctx);
const char *mtmd_default_marker(void);
int32_t llama_model_n_embd(const struct llama_model *model);

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s LM.gguf MMPROJ.gguf IMAGE.rgb NX NY\n", argv[0]);
        return 2;
    }
    const uint32_t nx = (uint32_t)atoi(argv[4]), ny = (uint32_t)atoi(argv[5]);
    unsigned char *rgb = malloc((size_t)nx * ny * 3);
    FILE *f = fopen(argv[3], "rb");
    if (!rgb || !f || fread(rgb, 3, (size_t)nx * ny, f) != (size_t)nx * ny) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 1;
    }
    fclose(f);
    ggml_backend_load_all();
    llama_backend_init();
    struct llama_model *model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        return 1;
    }
    struct mtmd_context *ctx = mtmd_init_from_file(argv[2], model, mtmd_context_params_default());
    if (!ctx) {
        return 1;
    }
    const struct mtmd_bitmap *bmp = mtmd_bitmap_init(nx, ny, rgb);
    struct mtmd_input_chunks *chunks = mtmd_input_chunks_init();
    char text[256];
    snprintf(text, sizeof(text), "look: %s", mtmd_default_marker());
    struct mtmd_input_text in = {text, true, true};
    if (mtmd_tokenize(ctx, chunks, &in, &bmp, 1) != 0) {
        fprintf(stderr, "mtmd_tokenize failed\n");
        return 1;
    }
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
        const struct mtmd_input_chunk *c = mtmd_input_chunks_get(chunks, i);
        if (mtmd_input_chunk_get_type(c) != 1) {
            continue;
        }
        const struct mtmd_image_tokens *t = mtmd_input_chunk_get_tokens_image(c);
        const size_t n = mtmd_image_tokens_get_n_tokens(t);
        if (mtmd_encode_chunk(ctx, c) != 0) {
            fprintf(stderr, "mtmd_encode_chunk failed\n");
            return 1;
        }
        const float *e = mtmd_get_output_embd(ctx);
        const int32_t d = llama_model_n_embd(model);
        printf("%zu %d %zu %zu\n", n, d, mtmd_image_tokens_get_nx(t), mtmd_image_tokens_get_ny(t));
        for (size_t j = 0; j < n * (size_t)d; j++) {
            printf("%.9g\n", e[j]);
        }
        return 0;
    }
    fprintf(stderr, "no image chunk\n");
    return 1;
}
