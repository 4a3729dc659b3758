/* Vision encoders: a projector GGUF ("mmproj", llama.cpp's clip.* layout) loaded beside the
 * language model, images preprocessed as llama.cpp's libmtmd does, and encoded into rows of the
 * language model's embedding width that replace an image's placeholder tokens in the prompt.
 *
 * Supported: Qwen2-VL ("qwen2vl_merger") and Qwen2.5-VL ("qwen2.5vl_merger"). Other projector
 * types load with HS_E_NOTSUP.
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
