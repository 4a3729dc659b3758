/* Vision encoder internals shared by the files of model/vision and by tests. */
#ifndef HS_MODEL_VISION_VISION_IMPL_H
#define HS_MODEL_VISION_VISION_IMPL_H

#include "model/gguf/gguf.h"
#include "model/vision/vision.h"

/* One ViT block's weights; views into the mmap'd projector (borrowed). Shapes as ne[1] x ne[0]
 * (rows x cols), d = n_embd. Qwen2.5-VL's norms are RMSNorms: their biases (ln*_b, post_ln_b)
 * have data NULL. */
struct hs_vision_layer {
    struct hs_tensor ln1_w, ln1_b;       /* [d] f32 */
    struct hs_tensor q_w, k_w, v_w, o_w; /* [d][d] */
    struct hs_tensor q_b, k_b, v_b, o_b; /* [d] f32 */
    struct hs_tensor ln2_w, ln2_b;       /* [d] f32 */
    struct hs_tensor up_w, down_w;       /* [n_ff][d], [d][n_ff] */
    struct hs_tensor up_b, down_b;       /* [n_ff], [d] f32 */
    struct hs_tensor gate_w, gate_b;     /* Qwen2.5-VL's SiLU gate [n_ff][d], [n_ff]; else
                                          * data NULL */
};

struct hs_vision {
    struct hs_vision_hparams hp;
    struct hs_gguf *gguf;                  /* owns the mapping */
    struct hs_tensor patch_w0, patch_w1;   /* [d][3 * patch * patch] (c, ky, kx) */
    struct hs_vision_layer *layers;        /* [n_layer], owned */
    struct hs_tensor post_ln_w, post_ln_b; /* [d] f32 (Qwen's merger ln_q) */
    struct hs_tensor mm0_w, mm0_b;         /* [4d][4d], [4d] */
    struct hs_tensor mm2_w, mm2_b;         /* [proj_dim][4d], [proj_dim] */
    /* idefics3 (siglip.c): one conv kernel (patch_w0) with a bias, learned positions, and the
     * projection of each pixel-shuffled group (no bias) */
    struct hs_tensor patch_b;  /* [d] f32 */
    struct hs_tensor pos_embd; /* [(image_size / patch)^2][d] f32 */
    struct hs_tensor fc_w;     /* [proj_dim][d * n_merge^2] */
};

/* ---- the SigLIP family (siglip.c): projector type idefics3 (SmolVLM) ---- */

/* hs_vision_target_size / hs_vision_preprocess / hs_vision_encode for idefics3. */
void hs__siglip_target_size(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *out_nx,
                            int32_t *out_ny);
hs_status hs__siglip_preprocess(const struct hs_vision *v, const struct hs_image *img,
                                struct hs_vision_input *out, struct hs_error *err);
hs_status hs__siglip_encode(struct hs_vision *v, struct hs_backend *be,
                            const struct hs_vision_input *in, float *out, struct hs_error *err);

/* ---- shared ViT pieces (vit.c) ---- */

/* Query rows per attention chunk: bounds the scores to chunk x n_patches floats. */
#define HS_VIT_ATTN_CHUNK_ROWS 256

/* One ViT pass's activations over n patches (each buffer owned; d = n_embd, hd = d / n_head). */
struct hs__vit_scratch {
    float *patches;          /* [n][3 p p] */
    float *x, *h, *tmp;      /* [n][d]: the residual stream, normed, a sublayer's output */
    float *q, *k, *v, *attn; /* [n][d] */
    float *vt;               /* [hd][n] one head's values, transposed */
    float *scores;           /* [min(n, HS_VIT_ATTN_CHUNK_ROWS)][n] */
    float *ff;               /* [n][n_ffw] (the caller's width, at least n_ff) */
};

/* The 2-D views of a scratch's buffers (borrowed from it): patches [n][3 p p], x h tmp q k v attn
 * [n][d], ff [n][n_ff]. */
struct hs__vit_views {
    struct hs_tensor patches, x, h, tmp, q, k, v, attn, ff;
};

/* Allocates s's buffers for n patches of hp's shape, ff with n_ffw floats a row. HS_E_NOMEM with
 * s finished (all NULL). Thread: any. */
hs_status hs__vit_scratch_init(struct hs__vit_scratch *s, const struct hs_vision_hparams *hp,
                               int64_t n, int64_t n_ffw);
/* Frees s's buffers and zeroes it; a zeroed s does nothing. */
void hs__vit_scratch_finish(struct hs__vit_scratch *s);
/* s's views for n patches of hp's shape. */
struct hs__vit_views hs__vit_scratch_views(const struct hs__vit_scratch *s,
                                           const struct hs_vision_hparams *hp, int64_t n);

/* A 2-D f32 view: n_rows rows of n_cols floats, row_stride floats apart. */
struct hs_tensor hs__vit_view(float *data, int64_t n_cols, int64_t n_rows, int64_t row_stride);
/* y = w x + b (b: one f32 row, or NULL) on be. */
hs_status hs__vit_linear(struct hs_backend *be, const struct hs_tensor *w,
                         const struct hs_tensor *b, const struct hs_tensor *x, struct hs_tensor *y);
/* LayerNorm of n_rows rows of n floats, scaled by w and shifted by b. */
void hs__vit_layer_norm(const float *x, float *y, int64_t n_rows, int64_t n, const float *w,
                        const float *b, float eps);
/* GELU in place, tanh form (ggml_gelu's). */
void hs__vit_gelu(float *x, int64_t n);
/* Multi-head self-attention among rows [a, b) of q, k, v ([rows][d], heads of d / n_head; all
 * rows, or one window) into the same rows of attn; scores and sums as backend matmuls. Scratch:
 * vt [d / n_head][b - a], scores [min(b - a, HS_VIT_ATTN_CHUNK_ROWS)][b - a]. */
hs_status hs__vit_attention(struct hs_backend *be, int32_t n_head, int64_t d, int64_t a, int64_t b,
                            const float *q, const float *k, const float *v, float *vt,
                            float *scores, float *attn);

/* Pillow's bicubic resampling (llama.cpp's RESIZE_ALGO_BICUBIC for Qwen): a copy at the same
 * size. dst->rgb is new (free with hs_image_finish). HS_E_NOMEM. Thread: any. */
hs_status hs__vision_resize_bicubic(const struct hs_image *src, int32_t nx, int32_t ny,
                                    struct hs_image *dst);
/* As hs__vision_resize_bicubic with Pillow's Lanczos-3 filter (libmtmd's for SmolVLM). */
hs_status hs__vision_resize_lanczos(const struct hs_image *src, int32_t nx, int32_t ny,
                                    struct hs_image *dst);
/* llama.cpp's resize with padding (PAD_CEIL): a copy at the same size; otherwise the bicubic
 * scaled to fit inside nx x ny keeping its aspect (sides rounded up), centred on black. dst->rgb
 * is new. HS_E_NOMEM. Thread: any. */
hs_status hs__vision_resize_fit_pad(const struct hs_image *src, int32_t nx, int32_t ny,
                                    struct hs_image *dst);

#endif
