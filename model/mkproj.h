/* hetserve mkmodel --projector: random-weight multimodal projector GGUFs ("mmproj" files) with
 * llama.cpp's clip tensor names and metadata, so tests of image input need no downloads. */
#ifndef HS_MODEL_MKPROJ_H
#define HS_MODEL_MKPROJ_H

#include <stdint.h>

#include "common/dtype.h"
#include "common/error.h"

/* The projector families written (clip.projector_type in parentheses). */
enum hs_proj_type {
    HS_PROJ_QWEN2VL,  /* "qwen2vl_merger": ViT with 2D M-RoPE, LayerNorm, quick-GELU MLP, 2x2
                       * patch merger MLP */
    HS_PROJ_QWEN25VL, /* "qwen2.5vl_merger": as Qwen2-VL with RMSNorm, SiLU-gated MLP and window
                       * attention in all but every n_wa_pattern-th layer */
    HS_PROJ_IDEFICS3, /* "idefics3": SigLIP ViT (learned positions, GELU MLP), pixel shuffle by
                       * scale_factor, one bias-free linear projection (SmolVLM) */
    HS_PROJ_COUNT,
};

/* The llama.cpp projector_type string of t; "unknown" outside the enum. */
const char *hs_proj_type_str(enum hs_proj_type t);
/* The type named s (the llama.cpp string or the short names qwen2vl, qwen25vl, idefics3);
 * HS_PROJ_COUNT when none is. */
enum hs_proj_type hs_proj_type_from_str(const char *s);

struct hs_mkproj_params {
    enum hs_proj_type type;
    int32_t n_embd, n_layer, n_head, n_ff; /* the vision transformer */
    int32_t proj_dim;                      /* output width: the language model's n_embd */
    int32_t image_size, patch_size;        /* pixels */
    int32_t n_merge;      /* Qwen: spatial merge side (2); idefics3: pixel-shuffle scale factor */
    int32_t n_wa_pattern; /* qwen2.5vl: every n-th layer attends fully, the others within
                           * windows of 112 pixels (llama.cpp's fixed size; no key holds it) */
    enum hs_type wtype;   /* matrices: F32 or F16 (norms, biases and positions stay F32) */
    uint64_t seed;
    int32_t longest_edge; /* idefics3: clip.vision.preproc_image_size (0: not written) */
};

/* Defaults for type t: a tiny encoder (dim 64, 2 layers, 4 heads, ffn 128) projecting to 64,
 * patch 14, image_size 56, merge (Qwen) or pixel-shuffle scale (idefics3) 2. Qwen images are
 * sized by the image itself, not image_size: llama.cpp scales them to 8..4096 merged tokens. */
struct hs_mkproj_params hs_mkproj_default_params(enum hs_proj_type t);

/* Writes a random-weight projector GGUF (general.architecture "clip"). Errors: HS_E_INVAL (bad
 * shape: err says which), HS_E_IO, HS_E_NOMEM. Thread: any. */
hs_status hs_mkproj_write(const struct hs_mkproj_params *p, const char *path, struct hs_error *err);

#endif
