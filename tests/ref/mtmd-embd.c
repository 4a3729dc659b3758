/* Reference image embeddings from llama.cpp's libmtmd (not built by meson: it links against the
 * llama.cpp of the peer chroot, see tests/model/data/README.md). Prints the embeddings of one
 * raw RGB image: for each image chunk, "n_tokens n_embd nx ny" and then one float per line.
 *
 *   gcc -O1 tests/ref/mtmd-embd.c -o mtmd-embd -L$CH/usr/lib/x86_64-linux-gnu \
 *       -l:libmtmd.so.0 -l:libllama.so.0 -l:libggml.so.0 -Wl,--allow-shlib-undefined
 *   chroot $CH /tmp/x/mtmd-embd LM.gguf MMPROJ.gguf IMAGE.rgb NX NY [logits [N_TAIL] | chunks]
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
const struct mtmd_image_tokens *
mtmd_input_chunk_get_tokens_image(const struct mtmd_input_chunk *chunk);
size_t mtmd_image_tokens_get_n_tokens(const struct mtmd_image_tokens *t);
size_t mtmd_image_tokens_get_nx(const struct mtmd_image_tokens *t);
size_t mtmd_image_tokens_get_ny(const struct mtmd_image_tokens *t);
int32_t mtmd_encode_chunk(struct mtmd_context *ctx, const struct mtmd_input_chunk *chunk);
float *mtmd_get_output_embd(struct mtmd_context *ctx);
const char *mtmd_default_marker(void);
int32_t llama_model_n_embd(const struct llama_model *model);
struct llama_context;
struct big_params llama_context_default_params(void);
struct llama_context *llama_init_from_model(struct llama_model *model, struct big_params params);
float *llama_get_logits_ith(struct llama_context *ctx, int32_t i);
const int32_t *mtmd_input_chunk_get_tokens_text(const struct mtmd_input_chunk *chunk,
                                                size_t *n_tokens);
int32_t mtmd_input_chunk_get_n_pos(const struct mtmd_input_chunk *chunk);
const struct llama_vocab *llama_model_get_vocab(const struct llama_model *model);
int32_t llama_vocab_n_tokens(const struct llama_vocab *vocab);

struct llama_batch {
    int32_t n_tokens;
    int32_t *token;
    float *embd;
    int32_t *pos;
    int32_t *n_seq_id;
    int32_t **seq_id;
    int8_t *logits;
};
struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);
void llama_batch_free(struct llama_batch batch);
int32_t llama_decode(struct llama_context *ctx, struct llama_batch batch);
int32_t mtmd_helper_eval_chunk_single(struct mtmd_context *ctx, struct llama_context *lctx,
                                      const struct mtmd_input_chunk *chunk, int32_t n_past,
                                      int32_t seq_id, int32_t n_batch, bool logits_last,
                                      int32_t *new_n_past);

/* One chunk's line: "text N ids..." or "image n_tokens nx ny n_pos". */
static void print_chunk(const struct mtmd_input_chunk *c)
{
    if (mtmd_input_chunk_get_type(c) == 1) {
        const struct mtmd_image_tokens *t = mtmd_input_chunk_get_tokens_image(c);
        printf("image %zu %zu %zu %d\n", mtmd_image_tokens_get_n_tokens(t),
               mtmd_image_tokens_get_nx(t), mtmd_image_tokens_get_ny(t),
               mtmd_input_chunk_get_n_pos(c));
        return;
    }
    size_t n = 0;
    const int32_t *tok = mtmd_input_chunk_get_tokens_text(c, &n);
    printf("text %zu", n);
    for (size_t j = 0; j < n; j++) {
        printf(" %d", tok[j]);
    }
    printf("\n");
}

/* The text after the last image is evaluated here, not by mtmd_helper_eval_chunks: this libmtmd
 * tokenizes bytes past the end of the prompt into the chunk after an image (its tokens vary from
 * run to run), so only that chunk's leading n_tail tokens, which spell the end-of-image marker
 * (Qwen: 14, "<|vision_end|>" in bytes; idefics3: 1, <fake_token_around_image>), are kept. The
 * chunks before it are printed and evaluated whole: text ("text N ids...") and images ("image
 * n_tokens nx ny n_pos"). */
static int print_logits(struct mtmd_context *ctx, struct llama_model *model,
                        struct mtmd_input_chunks *chunks, int32_t n_tail)
{
    struct llama_context *lctx = llama_init_from_model(model, llama_context_default_params());
    const size_t n_chunks = mtmd_input_chunks_size(chunks);
    if (!lctx || n_chunks < 3 || n_tail < 1) {
        return 1;
    }
    int32_t n_past = 0;
    for (size_t i = 0; i + 1 < n_chunks; i++) {
        const struct mtmd_input_chunk *c = mtmd_input_chunks_get(chunks, i);
        print_chunk(c);
        if (mtmd_helper_eval_chunk_single(ctx, lctx, c, n_past, 0, 512, false, &n_past) != 0) {
            fprintf(stderr, "mtmd_helper_eval_chunk_single failed\n");
            return 1;
        }
    }
    size_t n = 0;
    const int32_t *tok =
        mtmd_input_chunk_get_tokens_text(mtmd_input_chunks_get(chunks, n_chunks - 1), &n);
    if (n < (size_t)n_tail) {
        return 1;
    }
    struct llama_batch b = llama_batch_init(n_tail, 0, 1);
    printf("text %d", n_tail);
    for (int32_t j = 0; j < n_tail; j++) {
        b.token[j] = tok[j];
        b.pos[j] = n_past + j;
        b.n_seq_id[j] = 1;
        b.seq_id[j][0] = 0;
        b.logits[j] = j == n_tail - 1;
        printf(" %d", tok[j]);
    }
    printf("\n");
    b.n_tokens = n_tail;
    if (llama_decode(lctx, b) != 0) {
        return 1;
    }
    llama_batch_free(b);
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const float *lg = llama_get_logits_ith(lctx, -1);
    printf("logits %d\n", n_vocab);
    for (int32_t i = 0; i < n_vocab; i++) {
        printf("%.9g\n", lg[i]);
    }
    return 0;
}

/* "chunks": the chunk layout only (text ids, image token counts), for projectors whose layout
 * is unknown. */
static int print_chunks(struct mtmd_input_chunks *chunks)
{
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
        const struct mtmd_input_chunk *c = mtmd_input_chunks_get(chunks, i);
        print_chunk(c);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 8) {
        fprintf(stderr,
                "usage: %s LM.gguf MMPROJ.gguf IMAGE.rgb NX NY [logits [N_TAIL] | chunks]\n",
                argv[0]);
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
    if (argc == 7 && argv[6][0] == 'c') {
        return print_chunks(chunks);
    }
    if (argc >= 7) {
        return print_logits(ctx, model, chunks, argc == 8 ? atoi(argv[7]) : 14);
    }
    /* Every image chunk in order (Qwen: one; idefics3: its tiles then the overview). */
    int n_images = 0;
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
        n_images++;
    }
    if (n_images == 0) {
        fprintf(stderr, "no image chunk\n");
        return 1;
    }
    return 0;
}
