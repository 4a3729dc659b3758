/* Vision encoder internals shared by the files of model/vision and by tests. */
#ifndef HS_MODEL_VISION_VISION_IMPL_H
#define HS_MODEL_VISION_VISION_IMPL_H

#include "model/gguf/gguf.h"
#include "model/vision/vision.h"

/* One ViT block's weights; views into the mmap'd projector (borrowed). Shapes as ne[1] x ne[0]
 * (rows x cols), d = n_embd. Qwen2.5-VL's norms are RMSNorms: their biases (ln*_b, post_ln_b)
 * have data NULL. */
struct hs_vision_layer {
    struct hs_tensor ln1_w, ln1_b;           /* [d] f32 */
    struct hs_tensor q_w, k_w, v_w, o_w;     /* [d][d] */
    struct hs_tensor q_b, k_b, v_b, o_b;     /* [d] f32 */
    struct hs_tensor ln2_w, ln2_b;           /* [d] f32 */
    struct hs_tensor up_w, down_w;           /* [n_ff][d], [d][n_ff] */
    struct hs_tensor up_b, down_b;           /* [n_ff], [d] f32 */
    struct hs_tensor gate_w, gate_b;         /* Qwen2.5-VL's SiLU gate [n_ff][d], [n_ff]; else
                                              * data NULL */
};

struct hs_vision {
    struct hs_vision_hparams hp;
    struct hs_gguf *gguf;                    /* owns the mapping */
    struct hs_tensor patch_w0, patch_w1;     /* [d][3 * patch * patch] (c, ky, kx) */
    struct hs_vision_layer *layers;          /* [n_layer], owned */
    struct hs_tensor post_ln_w, post_ln_b;   /* [d] f32 (Qwen's merger ln_q) */
    struct hs_tensor mm0_w, mm0_b;           /* [4d][4d], [4d] */
    struct hs_tensor mm2_w, mm2_b;           /* [proj_dim][4d], [proj_dim] */
};

/* Pillow's bicubic resampling (llama.cpp's RESIZE_ALGO_BICUBIC for Qwen): a copy at the same
 * size. dst->rgb is new (free with hs_image_finish). HS_E_NOMEM. Thread: any. */
hs_status hs__vision_resize_bicubic(const struct hs_image *src, int32_t nx, int32_t ny,
                                    struct hs_image *dst);

#endif
