/* Vision encoders: a projector GGUF ("mmproj", llama.cpp's clip.* layout) loaded beside the
 * language model, images preprocessed as llama.cpp's libmtmd does, and encoded into rows of the
 * language model's embedding width that replace an image's placeholder tokens in the prompt.
 *
 * Supported: Qwen2-VL ("qwen2vl_merger"), Qwen2.5-VL ("qwen2.5vl_merger") and SmolVLM's SigLIP
 * ("idefics3"). Other projector types load with HS_E_NOTSUP.
 *
 * idefics3 cuts an image into tiles of image_size pixels and adds an overview of the whole image
 * at that size (libmtmd's order: tiles row by row, then the overview); the preprocessed input
 * stacks these views vertically (nx = image_size, ny = image_size * views) and the rows come out
 * view after view. Qwen has one view.
 * Thread: a loaded encoder is immutable except through hs_vision_encode, which one thread at a
 * time calls (the server's encoder thread, api/vision.c); loading and preprocessing may run on
 * any thread. */
#ifndef HS_MODEL_VISION_VISION_H
#define HS_MODEL_VISION_VISION_H

#include <stdint.h>

#include "backends/backend.h"
#include "common/error.h"
#include "model/mkproj.h"
#include "model/vision/image.h"

struct hs_vision;

struct hs_vision_hparams {
    enum hs_proj_type type;
    int32_t n_embd, n_layer, n_head, n_ff; /* the ViT */
    int32_t proj_dim;                      /* output rows' width: the LM's n_embd */
    int32_t image_size, patch_size;        /* pixels */
    int32_t n_merge;                       /* merged patches per side (2: 2x2 -> one token) */
    int32_t n_wa_pattern;                  /* Qwen2.5-VL: layers il with (il + 1) % n_wa_pattern
                                            * == 0 attend fully, the others by window; 0: all */
    float eps;                             /* layer norm epsilon */
    float mean[3], std[3];                 /* per-channel normalisation of [0, 1] pixels */
    int64_t min_pixels, max_pixels;        /* resized image area bounds */
    int32_t longest_edge; /* idefics3: the longer side is scaled to this before tiling
                           * (clip.vision.preproc_image_size; 0: not scaled) */
};

/* Loads the projector at path (mmap'd; borrowed tensors live as long as the encoder). Errors:
 * HS_E_IO / HS_E_FORMAT (not a readable GGUF, a missing clip.* key or tensor, a wrong shape: err
 * names it), HS_E_NOTSUP (a projector type or weight type not implemented), HS_E_NOMEM. *out
 * stays NULL on error. Returns new (free with hs_vision_free). Thread: any. */
hs_status hs_vision_load(const char *path, struct hs_vision **out, struct hs_error *err);
void hs_vision_free(struct hs_vision *v);

/* Borrowed; valid until hs_vision_free. */
const struct hs_vision_hparams *hs_vision_get_hparams(const struct hs_vision *v);

/* Preprocessed pixels: what the encoder takes. Owns data (hs_vision_input_finish). */
struct hs_vision_input {
    int32_t nx, ny; /* multiples of patch_size * n_merge */
    float *data;    /* [3][ny][nx] normalised */
};

/* The size an nx x ny image is resized to (llama.cpp's smart resize: aspect kept, sides rounded
 * to multiples of patch_size * n_merge, area within [min_pixels, max_pixels]). Thread: any. */
void hs_vision_target_size(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *out_nx,
                           int32_t *out_ny);

/* Resizes and normalises img as libmtmd does for Qwen: kept as is at the target size, otherwise
 * fitted with its aspect kept (sides rounded up) by Pillow's bicubic and centred on black.
 * HS_E_NOMEM only. Thread: any. */
hs_status hs_vision_preprocess(const struct hs_vision *v, const struct hs_image *img,
                               struct hs_vision_input *out, struct hs_error *err);
void hs_vision_input_finish(struct hs_vision_input *in);

/* idefics3: the tile grid an nx x ny image is cut into (its views are grid_x * grid_y tiles and
 * the overview); Qwen: 0 x 0 (one view). Thread: any. */
void hs_vision_tiles(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *grid_x,
                     int32_t *grid_y);

/* The views of an nx x ny image: idefics3 grid_x * grid_y + 1, Qwen 1. Thread: any. */
int32_t hs_vision_n_views(const struct hs_vision *v, int32_t nx, int32_t ny);

struct hs_vocab;

/* The prompt tokens of an nx x ny image as libmtmd lays them out, its rows' places written as
 * placeholder (the caller replaces them): Qwen "<|vision_start|>", the rows, "<|vision_end|>";
 * idefics3 each tile after "<fake_token_around_image><row_R_col_C>" (tokenized with specials
 * parsed), "\n" between rows of tiles, then "\n\n", <fake_token_around_image>, <global-img> (looked
 * up by their text as libmtmd does), the overview's rows and <fake_token_around_image>. Writes at
 * most cap ids to out (NULL with cap 0 measures) and the number needed to *n_out; view_first
 * ([hs_vision_n_views]) gets each view's first row's index in out. Errors: HS_E_RANGE (cap too
 * small), HS_E_FORMAT (the vocabulary lacks a token the layout needs: err names it),
 * HS_E_NOMEM. Thread: any. */
hs_status hs_vision_prompt(const struct hs_vision *v, const struct hs_vocab *vocab, int32_t nx,
                           int32_t ny, hs_token placeholder, hs_token *out, size_t cap,
                           size_t *n_out, int32_t *view_first, struct hs_error *err);

/* Embedding rows in.nx x in.ny pixels become: one per n_merge x n_merge patches. */
int32_t hs_vision_n_tokens(const struct hs_vision *v, int32_t nx, int32_t ny);

/* Encodes in on be (a host-memory backend: cpu or a simulated one) into out, [n_tokens][proj_dim]
 * f32 rows in the merged raster order (row-major over the grid of merged patches). The matrix
 * products (patch embedding, projections, attention scores and sums, MLPs) run as backend
 * matmuls and adds; norms, rotary, softmax and activations run on the calling thread. Errors:
 * HS_E_INVAL (sizes not multiples of patch * merge), HS_E_NOMEM, or the backend's status.
 * Thread: the thread that drives be. */
hs_status hs_vision_encode(struct hs_vision *v, struct hs_backend *be,
                           const struct hs_vision_input *in, float *out, struct hs_error *err);

#endif
