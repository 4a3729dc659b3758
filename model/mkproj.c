/* hetserve mkmodel --projector: random-weight projector GGUFs with llama.cpp's clip layout
 * (tools/mtmd: clip.projector_type, clip.vision.*, v.* and mm.* tensors). */
#include "model/mkproj.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "backends/backend.h"
#include "common/rng.h"
#include "model/gguf/gguf.h"

static const char *const proj_names[HS_PROJ_COUNT] = {
    [HS_PROJ_QWEN2VL] = "qwen2vl_merger",
    [HS_PROJ_QWEN25VL] = "qwen2.5vl_merger",
    [HS_PROJ_IDEFICS3] = "idefics3",
};
static const char *const proj_short[HS_PROJ_COUNT] = {
    [HS_PROJ_QWEN2VL] = "qwen2vl",
    [HS_PROJ_QWEN25VL] = "qwen25vl",
    [HS_PROJ_IDEFICS3] = "idefics3",
};

const char *hs_proj_type_str(enum hs_proj_type t)
{
    return (unsigned)t < HS_PROJ_COUNT ? proj_names[t] : "unknown";
}

enum hs_proj_type hs_proj_type_from_str(const char *s)
{
    int t = 0;
    while (t < HS_PROJ_COUNT && strcmp(s, proj_names[t]) != 0 && strcmp(s, proj_short[t]) != 0) {
        t++;
    }
    return (enum hs_proj_type)t;
}

struct hs_mkproj_params hs_mkproj_default_params(enum hs_proj_type t)
{
    struct hs_mkproj_params p = {
        .type = t,
        .n_embd = 64,
        .n_layer = 2,
        .n_head = 4,
        .n_ff = 128,
        .proj_dim = 64,
        .image_size = 56,
        .patch_size = 14,
        .n_merge = 2,
        .n_wa_pattern = t == HS_PROJ_QWEN25VL ? 2 : 0,
        .wtype = HS_TYPE_F32,
        .seed = 1,
    };
    return p;
}

struct proj_state {
    struct hs_gguf_writer *w;
    struct hs_rng rng;
    float *f32;
    void *qbuf;
};

/* A tensor of up to four dimensions (ne[d] <= 0 ends the shape) of uniform random values. */
static hs_status add_rand(struct proj_state *s, const char *name, enum hs_type type,
                          const int64_t ne_in[4], float center, float spread)
{
    int64_t ne[4] = {1, 1, 1, 1};
    uint32_t n_dims = 0;
    while (n_dims < 4 && ne_in[n_dims] > 0) {
        ne[n_dims] = ne_in[n_dims];
        n_dims++;
    }
    const int64_t n_rows = ne[1] * ne[2] * ne[3];
    for (int64_t i = 0; i < ne[0] * n_rows; i++) {
        s->f32[i] = center + hs_rng_range(&s->rng, -spread, spread);
    }
    if (type == HS_TYPE_F32) {
        return hs_gguf_writer_add_tensor(s->w, name, type, n_dims, ne, s->f32);
    }
    HS_TRY(hs_quantize_rows(type, s->f32, s->qbuf, n_rows, ne[0]));
    return hs_gguf_writer_add_tensor(s->w, name, type, n_dims, ne, s->qbuf);
}

static hs_status check(const struct hs_mkproj_params *p, struct hs_error *err)
{
    if ((unsigned)p->type >= HS_PROJ_COUNT) {
        return hs_error_set(err, HS_E_INVAL, "unknown projector type");
    }
    if (p->n_embd <= 0 || p->n_layer <= 0 || p->n_head <= 0 || p->n_ff <= 0 || p->proj_dim <= 0 ||
        p->patch_size <= 0 || p->image_size <= 0 || p->n_merge <= 0) {
        return hs_error_set(err, HS_E_INVAL, "projector dimensions must be positive");
    }
    if (p->n_embd % p->n_head != 0 || (p->n_embd / p->n_head) % 4 != 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "vision n_embd must split into heads of a multiple of 4 (2D RoPE)");
    }
    if (p->image_size % (p->patch_size * p->n_merge) != 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "image_size must be a multiple of patch_size * merge (%d)",
                            p->patch_size * p->n_merge);
    }
    if (p->longest_edge < 0 || (p->longest_edge > 0 && p->type != HS_PROJ_IDEFICS3)) {
        return hs_error_set(err, HS_E_INVAL, "longest_edge is for idefics3 projectors only");
    }
    if (p->wtype != HS_TYPE_F32 && p->wtype != HS_TYPE_F16) {
        return hs_error_set(err, HS_E_INVAL, "projector weights are f32 or f16");
    }
    if (p->type == HS_PROJ_QWEN25VL && p->n_wa_pattern <= 0) {
        return hs_error_set(err, HS_E_INVAL, "qwen2.5vl needs n_wa_pattern");
    }
    return HS_OK;
}

hs_status hs_mkproj_write(const struct hs_mkproj_params *p, const char *path, struct hs_error *err)
{
    hs_error_clear(err);
    HS_TRY(check(p, err));
    hs_status st;
    struct proj_state s = {0};
    hs_rng_seed(&s.rng, p->seed);
    const bool qwen = p->type == HS_PROJ_QWEN2VL || p->type == HS_PROJ_QWEN25VL;
    const bool rms = p->type == HS_PROJ_QWEN25VL;
    const int64_t d = p->n_embd;
    const int64_t n_side = p->image_size / p->patch_size;
    const int64_t merged = qwen ? d * 4 : d * p->n_merge * p->n_merge;
    const int64_t biggest = HS_MAX(HS_MAX(d * p->n_ff, merged * merged),
                                   HS_MAX(merged * (int64_t)p->proj_dim, d * n_side * n_side));
    s.f32 = malloc((size_t)biggest * sizeof(float));
    s.qbuf = malloc((size_t)biggest * sizeof(float));
    st = hs_gguf_writer_create(&s.w);
    if (st != HS_OK || !s.f32 || !s.qbuf) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto done;
    }
    /* Qwen's processors normalise with CLIP's statistics, SigLIP's with 0.5. */
    const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    const float half[3] = {0.5f, 0.5f, 0.5f};
    struct hs_gguf_writer *w = s.w;
    if ((st = hs_gguf_writer_set_str(w, "general.architecture", "clip")) != HS_OK ||
        (st = hs_gguf_writer_set_str(w, "general.name", "hetserve random projector")) != HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "general.alignment", 32)) != HS_OK ||
        (st = hs_gguf_writer_set_bool(w, "clip.has_vision_encoder", true)) != HS_OK ||
        (st = hs_gguf_writer_set_str(w, "clip.projector_type", proj_names[p->type])) != HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "clip.vision.image_size", (uint32_t)p->image_size)) !=
            HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "clip.vision.patch_size", (uint32_t)p->patch_size)) !=
            HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "clip.vision.embedding_length", (uint32_t)d)) != HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "clip.vision.feed_forward_length", (uint32_t)p->n_ff)) !=
            HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "clip.vision.block_count", (uint32_t)p->n_layer)) !=
            HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "clip.vision.attention.head_count", (uint32_t)p->n_head)) !=
            HS_OK ||
        (st = hs_gguf_writer_set_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-6f)) !=
            HS_OK ||
        (st = hs_gguf_writer_set_u32(w, "clip.vision.projection_dim", (uint32_t)p->proj_dim)) !=
            HS_OK ||
        (st = hs_gguf_writer_set_arr(w, "clip.vision.image_mean", HS_GGUF_TYPE_FLOAT32,
                                     qwen ? clip_mean : half, 3)) != HS_OK ||
        (st = hs_gguf_writer_set_arr(w, "clip.vision.image_std", HS_GGUF_TYPE_FLOAT32,
                                     qwen ? clip_std : half, 3)) != HS_OK) {
        goto done;
    }
    /* Activation: Qwen2-VL quick-GELU (neither flag), Qwen2.5-VL SiLU, SigLIP GELU. */
    if (p->type == HS_PROJ_QWEN25VL) {
        if ((st = hs_gguf_writer_set_bool(w, "clip.use_silu", true)) != HS_OK ||
            (st = hs_gguf_writer_set_u32(w, "clip.vision.n_wa_pattern",
                                         (uint32_t)p->n_wa_pattern)) != HS_OK) {
            goto done;
        }
    } else if (p->type == HS_PROJ_IDEFICS3) {
        if ((st = hs_gguf_writer_set_bool(w, "clip.use_gelu", true)) != HS_OK ||
            (st = hs_gguf_writer_set_u32(w, "clip.vision.projector.scale_factor",
                                         (uint32_t)p->n_merge)) != HS_OK) {
            goto done;
        }
        if (p->longest_edge > 0 &&
            (st = hs_gguf_writer_set_u32(w, "clip.vision.preproc_image_size",
                                         (uint32_t)p->longest_edge)) != HS_OK) {
            goto done;
        }
    }
    if (qwen && (st = hs_gguf_writer_set_u32(w, "clip.vision.spatial_merge_size",
                                             (uint32_t)p->n_merge)) != HS_OK) {
        goto done;
    }

    const enum hs_type wt = p->wtype;
    const float ws = 0.08f;
    char name[96];
#define ADD(nm, type, n0, n1, n2, n3, c, sp)                                                       \
    do {                                                                                           \
        const int64_t ne_[4] = {(n0), (n1), (n2), (n3)};                                           \
        if ((st = add_rand(&s, (nm), (type), ne_, (c), (sp))) != HS_OK) {                          \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    /* Patch embedding: a conv kernel [d][3][patch][patch]; Qwen splits its temporal pair of
     * frames into two kernels and has no bias. */
    ADD("v.patch_embd.weight", wt, p->patch_size, p->patch_size, 3, d, 0.0f, ws);
    if (qwen) {
        ADD("v.patch_embd.weight.1", wt, p->patch_size, p->patch_size, 3, d, 0.0f, ws);
    } else {
        ADD("v.patch_embd.bias", HS_TYPE_F32, d, 0, 0, 0, 0.0f, 0.1f);
        ADD("v.position_embd.weight", HS_TYPE_F32, d, n_side * n_side, 0, 0, 0.0f, 0.5f);
    }
    for (int il = 0; il < p->n_layer; il++) {
#define LAYER(suffix, type, n0, n1, c, sp)                                                         \
    do {                                                                                           \
        snprintf(name, sizeof(name), "v.blk.%d." suffix, il);                                      \
        ADD(name, (type), (n0), (n1), 0, 0, (c), (sp));                                            \
    } while (0)
        LAYER("ln1.weight", HS_TYPE_F32, d, 0, 1.0f, 0.1f);
        if (!rms) {
            LAYER("ln1.bias", HS_TYPE_F32, d, 0, 0.0f, 0.1f);
        }
        LAYER("attn_q.weight", wt, d, d, 0.0f, ws);
        LAYER("attn_q.bias", HS_TYPE_F32, d, 0, 0.0f, 0.1f);
        LAYER("attn_k.weight", wt, d, d, 0.0f, ws);
        LAYER("attn_k.bias", HS_TYPE_F32, d, 0, 0.0f, 0.1f);
        LAYER("attn_v.weight", wt, d, d, 0.0f, ws);
        LAYER("attn_v.bias", HS_TYPE_F32, d, 0, 0.0f, 0.1f);
        LAYER("attn_out.weight", wt, d, d, 0.0f, ws);
        LAYER("attn_out.bias", HS_TYPE_F32, d, 0, 0.0f, 0.1f);
        LAYER("ln2.weight", HS_TYPE_F32, d, 0, 1.0f, 0.1f);
        if (!rms) {
            LAYER("ln2.bias", HS_TYPE_F32, d, 0, 0.0f, 0.1f);
        }
        if (p->type == HS_PROJ_QWEN25VL) {
            LAYER("ffn_gate.weight", wt, d, p->n_ff, 0.0f, ws);
            LAYER("ffn_gate.bias", HS_TYPE_F32, p->n_ff, 0, 0.0f, 0.1f);
        }
        LAYER("ffn_up.weight", wt, d, p->n_ff, 0.0f, ws);
        LAYER("ffn_up.bias", HS_TYPE_F32, p->n_ff, 0, 0.0f, 0.1f);
        LAYER("ffn_down.weight", wt, p->n_ff, d, 0.0f, ws);
        LAYER("ffn_down.bias", HS_TYPE_F32, d, 0, 0.0f, 0.1f);
#undef LAYER
    }
    ADD("v.post_ln.weight", HS_TYPE_F32, d, 0, 0, 0, 1.0f, 0.1f);
    if (!rms) {
        ADD("v.post_ln.bias", HS_TYPE_F32, d, 0, 0, 0, 0.0f, 0.1f);
    }
    if (qwen) {
        /* The patch merger: an MLP over each 2x2 group of patches (mm.0, GELU, mm.2). */
        ADD("mm.0.weight", wt, merged, merged, 0, 0, 0.0f, ws);
        ADD("mm.0.bias", HS_TYPE_F32, merged, 0, 0, 0, 0.0f, 0.1f);
        ADD("mm.2.weight", wt, merged, p->proj_dim, 0, 0, 0.0f, ws);
        ADD("mm.2.bias", HS_TYPE_F32, p->proj_dim, 0, 0, 0, 0.0f, 0.1f);
    } else {
        ADD("mm.model.fc.weight", wt, merged, p->proj_dim, 0, 0, 0.0f, ws);
    }
#undef ADD
    st = hs_gguf_writer_write_file(s.w, path, err);
done:
    if (st != HS_OK && err && err->message[0] == '\0') {
        hs_error_set(err, st, "cannot write the projector: %s", hs_status_str(st));
    }
    hs_gguf_writer_destroy(s.w);
    free(s.f32);
    free(s.qbuf);
    return st;
}
