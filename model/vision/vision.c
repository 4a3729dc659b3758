/* Projector loading (clip.* metadata and v.* / mm.* tensors) and llama.cpp's preprocessing. */
#include "model/vision/vision-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- loading ---- */

static hs_status get_i32(const struct hs_gguf *g, const char *key, int32_t lo, int32_t hi,
                         bool required, int32_t *out, struct hs_error *err)
{
    int64_t v = 0;
    hs_status st = hs_gguf_get_int(g, key, &v);
    if (st == HS_E_NOENT && !required) {
        return HS_OK;
    }
    if (st != HS_OK) {
        return hs_error_set(err, HS_E_FORMAT, "projector: %s: %s", key,
                            st == HS_E_NOENT ? "missing" : "not an integer");
    }
    if (v < lo || v > hi) {
        return hs_error_set(err, HS_E_FORMAT, "projector: %s = %lld, outside [%d, %d]", key,
                            (long long)v, (int)lo, (int)hi);
    }
    *out = (int32_t)v;
    return HS_OK;
}

static hs_status get_rgb(const struct hs_gguf *g, const char *key, float out[3],
                         struct hs_error *err)
{
    const struct hs_gguf_value *arr = NULL;
    if (hs_gguf_get_arr(g, key, HS_GGUF_TYPE_COUNT, &arr) != HS_OK || arr->arr.n != 3) {
        return hs_error_set(err, HS_E_FORMAT, "projector: %s must be an array of 3 numbers", key);
    }
    for (int c = 0; c < 3; c++) {
        out[c] = (float)hs_gguf_arr_get_float(arr, (uint64_t)c);
        if (!isfinite(out[c])) {
            return hs_error_set(err, HS_E_FORMAT, "projector: %s[%d] is not finite", key, c);
        }
    }
    return HS_OK;
}

/* The tensor name as a view of shape ne (trailing 0s end it); matrices may be f32 or f16, vectors
 * (vec) must be f32. */
static hs_status get_tensor(const struct hs_gguf *g, const char *name, int64_t n0, int64_t n1,
                            bool vec, struct hs_tensor *out, struct hs_error *err)
{
    const struct hs_gguf_tensor *t = hs_gguf_find_tensor(g, name);
    if (!t) {
        return hs_error_set(err, HS_E_FORMAT, "projector: tensor %s is missing", name);
    }
    /* Matrices by their outermost dimension (a conv kernel [d][3][p][p] is [d][3 p p]). */
    const int64_t n_el = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    const int64_t outer = t->n_dims >= 2 ? t->ne[t->n_dims - 1] : 1;
    if (outer != (n1 > 0 ? n1 : 1) || n_el != n0 * outer) {
        return hs_error_set(err, HS_E_FORMAT,
                            "projector: tensor %s is [%lld x %lld x %lld x %lld], expected "
                            "[%lld x %lld]",
                            name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                            (long long)t->ne[3], (long long)n0, (long long)(n1 > 0 ? n1 : 1));
    }
    if (t->type != HS_TYPE_F32 && (vec || t->type != HS_TYPE_F16)) {
        return hs_error_set(err, HS_E_NOTSUP, "projector: tensor %s is %s; %s", name,
                            hs_type_str(t->type), vec ? "f32 expected" : "f32 or f16 expected");
    }
    const int64_t ne[2] = {n0, n1 > 0 ? n1 : 1};
    return hs_tensor_init(out, t->type, 2, ne, (void *)t->data);
}

static hs_status load_weights(struct hs_vision *v, struct hs_error *err)
{
    const struct hs_gguf *g = v->gguf;
    const struct hs_vision_hparams *hp = &v->hp;
    const int64_t d = hp->n_embd, ff = hp->n_ff, k = 3LL * hp->patch_size * hp->patch_size;
    const int64_t dm = d * hp->n_merge * hp->n_merge;
    const bool siglip = hp->type == HS_PROJ_IDEFICS3;
    HS_TRY(get_tensor(g, "v.patch_embd.weight", k, d, false, &v->patch_w0, err));
    /* The conv kernel [d][3][p][p] is the matrix [d][3 * p * p] (ne0 = kx fastest). */
    if (hs_gguf_find_tensor(g, "v.patch_embd.weight")->ne[0] != hp->patch_size) {
        return hs_error_set(err, HS_E_FORMAT, "projector: v.patch_embd.weight is not %dx%d",
                            hp->patch_size, hp->patch_size);
    }
    if (siglip) {
        /* SigLIP: a conv bias and a learned position per patch of the image_size square */
        const int64_t side = hp->image_size / hp->patch_size;
        HS_TRY(get_tensor(g, "v.patch_embd.bias", d, 0, true, &v->patch_b, err));
        HS_TRY(get_tensor(g, "v.position_embd.weight", d, side * side, false, &v->pos_embd, err));
        if (v->pos_embd.type != HS_TYPE_F32) {
            return hs_error_set(err, HS_E_NOTSUP, "projector: v.position_embd.weight must be f32");
        }
        if (hs_gguf_find_tensor(g, "v.pre_ln.weight")) {
            return hs_error_set(err, HS_E_NOTSUP,
                                "projector: a pre-LayerNorm (v.pre_ln) is not "
                                "implemented for idefics3");
        }
    } else {
        HS_TRY(get_tensor(g, "v.patch_embd.weight.1", k, d, false, &v->patch_w1, err));
    }
    if (!siglip && hs_gguf_find_tensor(g, "v.patch_embd.bias")) {
        return hs_error_set(err, HS_E_NOTSUP,
                            "projector: a patch embedding bias is not "
                            "implemented for qwen2vl");
    }
    /* Qwen2.5-VL: RMSNorms (no biases) and a SiLU-gated MLP. */
    const bool q25 = hp->type == HS_PROJ_QWEN25VL;
    for (int il = 0; il < hp->n_layer; il++) {
        struct hs_vision_layer *l = &v->layers[il];
        char n[96];
#define T(field, suffix, n0, n1, vec)                                                              \
    do {                                                                                           \
        snprintf(n, sizeof(n), "v.blk.%d.%s", il, suffix);                                         \
        HS_TRY(get_tensor(g, n, (n0), (n1), (vec), &l->field, err));                               \
    } while (0)
        T(ln1_w, "ln1.weight", d, 0, true);
        if (!q25) {
            T(ln1_b, "ln1.bias", d, 0, true);
        }
        T(q_w, "attn_q.weight", d, d, false);
        T(q_b, "attn_q.bias", d, 0, true);
        T(k_w, "attn_k.weight", d, d, false);
        T(k_b, "attn_k.bias", d, 0, true);
        T(v_w, "attn_v.weight", d, d, false);
        T(v_b, "attn_v.bias", d, 0, true);
        T(o_w, "attn_out.weight", d, d, false);
        T(o_b, "attn_out.bias", d, 0, true);
        T(ln2_w, "ln2.weight", d, 0, true);
        if (!q25) {
            T(ln2_b, "ln2.bias", d, 0, true);
        } else {
            T(gate_w, "ffn_gate.weight", d, ff, false);
            T(gate_b, "ffn_gate.bias", ff, 0, true);
        }
        T(up_w, "ffn_up.weight", d, ff, false);
        T(up_b, "ffn_up.bias", ff, 0, true);
        T(down_w, "ffn_down.weight", ff, d, false);
        T(down_b, "ffn_down.bias", d, 0, true);
#undef T
    }
    HS_TRY(get_tensor(g, "v.post_ln.weight", d, 0, true, &v->post_ln_w, err));
    if (!q25) {
        HS_TRY(get_tensor(g, "v.post_ln.bias", d, 0, true, &v->post_ln_b, err));
    }
    if (siglip) {
        /* one bias-free projection of each pixel-shuffled group of n_merge^2 patches */
        return get_tensor(g, "mm.model.fc.weight", dm, hp->proj_dim, false, &v->fc_w, err);
    }
    HS_TRY(get_tensor(g, "mm.0.weight", dm, dm, false, &v->mm0_w, err));
    HS_TRY(get_tensor(g, "mm.0.bias", dm, 0, true, &v->mm0_b, err));
    HS_TRY(get_tensor(g, "mm.2.weight", dm, hp->proj_dim, false, &v->mm2_w, err));
    HS_TRY(get_tensor(g, "mm.2.bias", hp->proj_dim, 0, true, &v->mm2_b, err));
    return HS_OK;
}

static hs_status load_hparams(struct hs_vision *v, struct hs_error *err)
{
    const struct hs_gguf *g = v->gguf;
    struct hs_vision_hparams *hp = &v->hp;
    struct hs_gguf_str s;
    if (hs_gguf_get_str(g, "clip.projector_type", &s) != HS_OK || s.len >= 64) {
        return hs_error_set(err, HS_E_FORMAT,
                            "projector: clip.projector_type is missing (is "
                            "this an mmproj file?)");
    }
    char name[64];
    memcpy(name, s.data, s.len);
    name[s.len] = '\0';
    hp->type = hs_proj_type_from_str(name);
    if (hp->type != HS_PROJ_QWEN2VL && hp->type != HS_PROJ_QWEN25VL &&
        hp->type != HS_PROJ_IDEFICS3) {
        return hs_error_set(err, HS_E_NOTSUP,
                            "projector type \"%s\" is not implemented (supported: qwen2vl_merger, "
                            "qwen2.5vl_merger, idefics3)",
                            name);
    }
    const bool siglip = hp->type == HS_PROJ_IDEFICS3;
    bool has_vision = false;
    if (hs_gguf_get_bool(g, "clip.has_vision_encoder", &has_vision) != HS_OK || !has_vision) {
        return hs_error_set(err, HS_E_FORMAT, "projector has no vision encoder");
    }
    hp->n_merge = 2;
    float eps = 0.0f;
    double eps_d = 0.0;
    HS_TRY(get_i32(g, "clip.vision.image_size", 1, 1 << 14, true, &hp->image_size, err));
    HS_TRY(get_i32(g, "clip.vision.patch_size", 1, 64, true, &hp->patch_size, err));
    HS_TRY(get_i32(g, "clip.vision.embedding_length", 4, 1 << 14, true, &hp->n_embd, err));
    HS_TRY(get_i32(g, "clip.vision.feed_forward_length", 1, 1 << 17, true, &hp->n_ff, err));
    HS_TRY(get_i32(g, "clip.vision.block_count", 1, 256, true, &hp->n_layer, err));
    HS_TRY(get_i32(g, "clip.vision.attention.head_count", 1, 1024, true, &hp->n_head, err));
    HS_TRY(get_i32(g, "clip.vision.projection_dim", 1, 1 << 16, true, &hp->proj_dim, err));
    if (siglip) {
        /* llama.cpp's n_merge for idefics3: the pixel-shuffle scale factor */
        HS_TRY(get_i32(g, "clip.vision.projector.scale_factor", 1, 8, false, &hp->n_merge, err));
        HS_TRY(get_i32(g, "clip.vision.preproc_image_size", 0, 1 << 14, false, &hp->longest_edge,
                       err));
        if (hp->image_size % (hp->patch_size * hp->n_merge) != 0) {
            return hs_error_set(err, HS_E_FORMAT,
                                "projector: image_size %d is not a multiple of patch_size * "
                                "scale_factor (%d)",
                                hp->image_size, hp->patch_size * hp->n_merge);
        }
    } else {
        HS_TRY(get_i32(g, "clip.vision.spatial_merge_size", 1, 8, false, &hp->n_merge, err));
    }
    if (hs_gguf_get_float(g, "clip.vision.attention.layer_norm_epsilon", &eps_d) != HS_OK ||
        !(eps_d > 0.0 && eps_d < 1.0)) {
        return hs_error_set(err, HS_E_FORMAT,
                            "projector: clip.vision.attention.layer_norm_epsilon is missing or "
                            "not in (0, 1)");
    }
    eps = (float)eps_d;
    hp->eps = eps;
    HS_TRY(get_rgb(g, "clip.vision.image_mean", hp->mean, err));
    HS_TRY(get_rgb(g, "clip.vision.image_std", hp->std, err));
    for (int c = 0; c < 3; c++) {
        if (!(hp->std[c] > 0.0f)) {
            return hs_error_set(err, HS_E_FORMAT, "projector: clip.vision.image_std must be > 0");
        }
    }
    if (hp->n_embd % hp->n_head != 0 || (!siglip && (hp->n_embd / hp->n_head) % 4 != 0)) {
        return hs_error_set(err, HS_E_FORMAT,
                            "projector: %d heads do not split n_embd %d into heads of a multiple "
                            "of 4 (2D rotary)",
                            hp->n_head, hp->n_embd);
    }
    /* The MLP's activation: Qwen2-VL quick-GELU (no flag), Qwen2.5-VL SiLU (use_silu), SigLIP
     * GELU (use_gelu). */
    const bool q25 = hp->type == HS_PROJ_QWEN25VL;
    bool gelu = false, silu = false;
    hs_gguf_get_bool(g, "clip.use_gelu", &gelu);
    hs_gguf_get_bool(g, "clip.use_silu", &silu);
    if (gelu != siglip || silu != q25) {
        return hs_error_set(err, HS_E_NOTSUP, "projector: a %s ViT MLP is not implemented for %s",
                            gelu   ? "GELU"
                            : silu ? "SiLU"
                                   : "quick-GELU",
                            name);
    }
    if (q25) {
        /* Required, as llama.cpp does (its converter writes fullatt_block_indexes[0] + 1: 8 for
         * the released models). */
        HS_TRY(get_i32(g, "clip.vision.n_wa_pattern", 1, 256, true, &hp->n_wa_pattern, err));
    }
    /* llama.cpp bounds Qwen images to 8..4096 merged tokens unless the file says otherwise. */
    const int64_t area = (int64_t)hp->patch_size * hp->patch_size * hp->n_merge * hp->n_merge;
    hp->min_pixels = 8 * area;
    hp->max_pixels = 4096 * area;
    int64_t px = 0;
    if (hs_gguf_get_int(g, "clip.vision.image_min_pixels", &px) == HS_OK && px > 0) {
        hp->min_pixels = px;
    }
    if (hs_gguf_get_int(g, "clip.vision.image_max_pixels", &px) == HS_OK && px > 0 &&
        px >= hp->min_pixels && px <= ((int64_t)1 << 28)) {
        hp->max_pixels = px;
    }
    return HS_OK;
}

hs_status hs_vision_load(const char *path, struct hs_vision **out, struct hs_error *err)
{
    hs_error_clear(err);
    *out = NULL;
    struct hs_vision *v = calloc(1, sizeof(*v));
    if (!v) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    hs_status st = hs_gguf_open(path, &v->gguf, err);
    if (st != HS_OK) {
        goto fail;
    }
    if ((st = load_hparams(v, err)) != HS_OK) {
        goto fail;
    }
    v->layers = calloc((size_t)v->hp.n_layer, sizeof(*v->layers));
    if (!v->layers) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = load_weights(v, err)) != HS_OK) {
        goto fail;
    }
    *out = v;
    return HS_OK;
fail:
    hs_vision_free(v);
    return st;
}

void hs_vision_free(struct hs_vision *v)
{
    if (v) {
        free(v->layers);
        hs_gguf_close(v->gguf);
        free(v);
    }
}

const struct hs_vision_hparams *hs_vision_get_hparams(const struct hs_vision *v)
{
    return &v->hp;
}

/* ---- preprocessing (libmtmd's, so that the same image gives the same pixels) ---- */

void hs_vision_target_size(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *out_nx,
                           int32_t *out_ny)
{
    if (v->hp.type == HS_PROJ_IDEFICS3) {
        hs__siglip_target_size(v, nx, ny, out_nx, out_ny);
        return;
    }
    const int32_t f = v->hp.patch_size * v->hp.n_merge;
    const float ff = (float)f;
    const int64_t area = (int64_t)nx * ny;
    int64_t h = HS_MAX(f, (int64_t)nearbyintf((float)ny / ff) * f);
    int64_t w = HS_MAX(f, (int64_t)nearbyintf((float)nx / ff) * f);
    if (h * w > v->hp.max_pixels) {
        const float beta = sqrtf((float)area / (float)v->hp.max_pixels);
        h = HS_MAX(f, (int64_t)floorf((float)ny / beta / ff) * f);
        w = HS_MAX(f, (int64_t)floorf((float)nx / beta / ff) * f);
    } else if (h * w < v->hp.min_pixels) {
        const float beta = sqrtf((float)v->hp.min_pixels / (float)area);
        h = (int64_t)ceilf((float)ny * beta / ff) * f;
        w = (int64_t)ceilf((float)nx * beta / ff) * f;
    }
    *out_nx = (int32_t)w;
    *out_ny = (int32_t)h;
}

/* Pillow's separable bicubic resampling (a = -0.5), which llama.cpp's Qwen preprocessing uses:
 * a filter widened by the scale when shrinking, weights normalised then fixed point with 22
 * fractional bits, rows first then columns, each pass rounding to uint8. */
#define RESAMPLE_BITS 22

static double bicubic(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) {
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    }
    if (x < 2.0) {
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    }
    return 0.0;
}

/* Weights of each output pixel over its input window: bounds[2o] first input, bounds[2o + 1]
 * count; w[o * ksize + k]. Returns ksize, 0 when out of memory (*bounds, *w: free()). */
/* Pillow's Lanczos-3 (Image.LANCZOS): sinc(x) sinc(x / 3) on [-3, 3), which libmtmd's SmolVLM
 * preprocessing uses. */
static double lanczos(double x)
{
    if (x < -3.0 || x >= 3.0) {
        return 0.0;
    }
    const double pi = 3.14159265358979323846;
    const double a = x == 0.0 ? 1.0 : sin(pi * x) / (pi * x);
    const double b = x == 0.0 ? 1.0 : sin(pi * x / 3.0) / (pi * x / 3.0);
    return a * b;
}

static int resample_weights(int32_t n_in, int32_t n_out, bool use_lanczos, int32_t **bounds,
                            int32_t **w)
{
    const double scale = (double)n_in / (double)n_out;
    const double fscale = scale < 1.0 ? 1.0 : scale;
    const double support = (use_lanczos ? 3.0 : 2.0) * fscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    double *k = malloc((size_t)ksize * sizeof(double));
    *bounds = malloc((size_t)n_out * 2 * sizeof(int32_t));
    *w = calloc((size_t)n_out * (size_t)ksize, sizeof(int32_t));
    if (!k || !*bounds || !*w) {
        free(k);
        return 0;
    }
    for (int32_t o = 0; o < n_out; o++) {
        const double center = (o + 0.5) * scale;
        int32_t lo = (int32_t)(center - support + 0.5);
        int32_t hi = (int32_t)(center + support + 0.5);
        lo = lo < 0 ? 0 : lo;
        hi = hi > n_in ? n_in : hi;
        double sum = 0.0;
        for (int32_t i = 0; i < hi - lo; i++) {
            const double x = (i + lo - center + 0.5) / fscale;
            k[i] = use_lanczos ? lanczos(x) : bicubic(x);
            sum += k[i];
        }
        for (int32_t i = 0; i < hi - lo; i++) {
            const double v = sum != 0.0 ? k[i] / sum : k[i];
            const double f = v * (double)(1 << RESAMPLE_BITS);
            (*w)[(size_t)o * ksize + i] = (int32_t)(v < 0 ? f - 0.5 : f + 0.5);
        }
        (*bounds)[2 * o] = lo;
        (*bounds)[2 * o + 1] = hi - lo;
    }
    free(k);
    return ksize;
}

static uint8_t clip8(int32_t v)
{
    v >>= RESAMPLE_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One pass along x (horizontal) or y of src (sx x sy) into dst (dx x dy; the other side equal). */
static hs_status resample_pass(const uint8_t *src, int32_t sx, int32_t sy, uint8_t *dst, int32_t dx,
                               int32_t dy, bool horizontal, bool use_lanczos)
{
    int32_t *bounds = NULL, *w = NULL;
    const int ksize =
        resample_weights(horizontal ? sx : sy, horizontal ? dx : dy, use_lanczos, &bounds, &w);
    if (ksize == 0) {
        free(bounds);
        free(w);
        return HS_E_NOMEM;
    }
    for (int32_t y = 0; y < dy; y++) {
        for (int32_t x = 0; x < dx; x++) {
            const int32_t o = horizontal ? x : y;
            const int32_t lo = bounds[2 * o], cnt = bounds[2 * o + 1];
            const int32_t *wo = w + (size_t)o * ksize;
            int32_t acc[3] = {1 << (RESAMPLE_BITS - 1), 1 << (RESAMPLE_BITS - 1),
                              1 << (RESAMPLE_BITS - 1)};
            for (int32_t i = 0; i < cnt; i++) {
                const uint8_t *p = horizontal ? src + ((size_t)y * sx + (size_t)(lo + i)) * 3
                                              : src + ((size_t)(lo + i) * sx + (size_t)x) * 3;
                for (int c = 0; c < 3; c++) {
                    acc[c] += (int32_t)p[c] * wo[i];
                }
            }
            for (int c = 0; c < 3; c++) {
                dst[((size_t)y * dx + x) * 3 + c] = clip8(acc[c]);
            }
        }
    }
    free(bounds);
    free(w);
    return HS_OK;
}

static hs_status resize(const struct hs_image *src, int32_t nx, int32_t ny, bool use_lanczos,
                        struct hs_image *dst)
{
    memset(dst, 0, sizeof(*dst));
    dst->rgb = malloc((size_t)nx * ny * 3);
    if (!dst->rgb) {
        return HS_E_NOMEM;
    }
    dst->nx = nx;
    dst->ny = ny;
    hs_status st = HS_OK;
    if (nx != src->nx && ny != src->ny) {
        uint8_t *tmp = malloc((size_t)nx * src->ny * 3);
        st = tmp ? resample_pass(src->rgb, src->nx, src->ny, tmp, nx, src->ny, true, use_lanczos)
                 : HS_E_NOMEM;
        if (st == HS_OK) {
            st = resample_pass(tmp, nx, src->ny, dst->rgb, nx, ny, false, use_lanczos);
        }
        free(tmp);
    } else if (nx != src->nx) {
        st = resample_pass(src->rgb, src->nx, src->ny, dst->rgb, nx, ny, true, use_lanczos);
    } else if (ny != src->ny) {
        st = resample_pass(src->rgb, src->nx, src->ny, dst->rgb, nx, ny, false, use_lanczos);
    } else {
        memcpy(dst->rgb, src->rgb, (size_t)nx * ny * 3);
    }
    if (st != HS_OK) {
        hs_image_finish(dst);
    }
    return st;
}

hs_status hs__vision_resize_bicubic(const struct hs_image *src, int32_t nx, int32_t ny,
                                    struct hs_image *dst)
{
    return resize(src, nx, ny, false, dst);
}

hs_status hs__vision_resize_lanczos(const struct hs_image *src, int32_t nx, int32_t ny,
                                    struct hs_image *dst)
{
    return resize(src, nx, ny, true, dst);
}

/* llama.cpp's resize for Qwen (padding on): the same size is copied; otherwise the image is
 * scaled to fit inside nx x ny keeping its aspect (sides rounded up) and centred on black. */
hs_status hs__vision_resize_fit_pad(const struct hs_image *src, int32_t nx, int32_t ny,
                                    struct hs_image *dst)
{
    memset(dst, 0, sizeof(*dst));
    if (nx == src->nx && ny == src->ny) {
        dst->rgb = malloc((size_t)nx * ny * 3);
        if (!dst->rgb) {
            return HS_E_NOMEM;
        }
        memcpy(dst->rgb, src->rgb, (size_t)nx * ny * 3);
        dst->nx = nx;
        dst->ny = ny;
        return HS_OK;
    }
    const float sw = (float)nx / (float)src->nx, sh = (float)ny / (float)src->ny;
    const float scale = sw < sh ? sw : sh;
    const int32_t iw = HS_MIN((int32_t)ceilf((float)src->nx * scale), nx);
    const int32_t ih = HS_MIN((int32_t)ceilf((float)src->ny * scale), ny);
    struct hs_image inner;
    HS_TRY(hs__vision_resize_bicubic(src, HS_MAX(iw, 1), HS_MAX(ih, 1), &inner));
    dst->rgb = calloc((size_t)nx * ny, 3);
    if (!dst->rgb) {
        hs_image_finish(&inner);
        return HS_E_NOMEM;
    }
    dst->nx = nx;
    dst->ny = ny;
    const int32_t ox = (nx - inner.nx) / 2, oy = (ny - inner.ny) / 2;
    for (int32_t y = 0; y < inner.ny; y++) {
        memcpy(dst->rgb + ((size_t)(y + oy) * nx + ox) * 3, inner.rgb + (size_t)y * inner.nx * 3,
               (size_t)inner.nx * 3);
    }
    hs_image_finish(&inner);
    return HS_OK;
}

hs_status hs_vision_preprocess(const struct hs_vision *v, const struct hs_image *img,
                               struct hs_vision_input *out, struct hs_error *err)
{
    if (v->hp.type == HS_PROJ_IDEFICS3) {
        return hs__siglip_preprocess(v, img, out, err);
    }
    memset(out, 0, sizeof(*out));
    int32_t nx, ny;
    hs_vision_target_size(v, img->nx, img->ny, &nx, &ny);
    struct hs_image r;
    if (hs__vision_resize_fit_pad(img, nx, ny, &r) != HS_OK) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory resizing to %dx%d", nx, ny);
    }
    out->data = malloc((size_t)nx * ny * 3 * sizeof(float));
    if (!out->data) {
        hs_image_finish(&r);
        return hs_error_set(err, HS_E_NOMEM, "out of memory for a %dx%d image", nx, ny);
    }
    out->nx = nx;
    out->ny = ny;
    const size_t plane = (size_t)nx * ny;
    for (int c = 0; c < 3; c++) {
        const float m = v->hp.mean[c], s = v->hp.std[c];
        for (size_t i = 0; i < plane; i++) {
            out->data[c * plane + i] = ((float)r.rgb[i * 3 + c] / 255.0f - m) / s;
        }
    }
    hs_image_finish(&r);
    return HS_OK;
}

void hs_vision_input_finish(struct hs_vision_input *in)
{
    if (in) {
        free(in->data);
        memset(in, 0, sizeof(*in));
    }
}

int32_t hs_vision_n_tokens(const struct hs_vision *v, int32_t nx, int32_t ny)
{
    const int32_t f = v->hp.patch_size * v->hp.n_merge;
    return (nx / f) * (ny / f);
}
