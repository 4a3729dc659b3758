/* The SigLIP vision encoder of SmolVLM (llama.cpp's projector type "idefics3"): a patch-embedding
 * conv with a bias, learned position embeddings, pre-LayerNorm ViT blocks with GELU MLPs, a final
 * LayerNorm, then a pixel shuffle (each scale x scale group of patches concatenated into one row)
 * and one bias-free linear projection to the language model's width.
 *
 * libmtmd cuts an image into image_size tiles (after scaling its longer side to the projector's
 * preproc_image_size when the file has one) and adds an overview of the whole image at
 * image_size; the prompt carries the tiles row by row, then the overview. Each view is encoded
 * on its own, so views stack vertically in the input and their rows follow each other. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/vision/vision-impl.h"

/* ---- preprocessing ---- */

/* With a preproc_image_size (longest_edge), libmtmd follows transformers' Idefics3 processor:
 * the image is first resized so that its longer side is longest_edge, keeping its aspect (the
 * other side truncated, then rounded up to even). */
static void scaled_size(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *w, int32_t *h)
{
    const int32_t le = v->hp.longest_edge;
    const double aspect = (double)nx / (double)ny;
    if (nx >= ny) {
        *w = le;
        *h = HS_MAX(1, (int32_t)((double)le / aspect));
        *h += *h % 2;
    } else {
        *h = le;
        *w = HS_MAX(1, (int32_t)((double)le * aspect));
        *w += *w % 2;
    }
}

/* The size the image is resized to before it is cut into tiles: multiples of image_size (the
 * scaled size rounded up; without a longest_edge, the image's own sides rounded to nearest). */
static void refined_size(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *rw,
                         int32_t *rh)
{
    const int32_t s = v->hp.image_size;
    if (v->hp.longest_edge > 0) {
        int32_t w, h;
        scaled_size(v, nx, ny, &w, &h);
        *rw = (w + s - 1) / s * s;
        *rh = (h + s - 1) / s * s;
    } else {
        *rw = HS_MAX(s, (int32_t)roundf((float)nx / (float)s) * s);
        *rh = HS_MAX(s, (int32_t)roundf((float)ny / (float)s) * s);
    }
}

void hs_vision_tiles(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *grid_x,
                     int32_t *grid_y)
{
    *grid_x = *grid_y = 0;
    if (v->hp.type == HS_PROJ_IDEFICS3 && nx > 0 && ny > 0) {
        int32_t rw, rh;
        refined_size(v, nx, ny, &rw, &rh);
        *grid_x = rw / v->hp.image_size;
        *grid_y = rh / v->hp.image_size;
    }
}

void hs__siglip_target_size(const struct hs_vision *v, int32_t nx, int32_t ny, int32_t *out_nx,
                            int32_t *out_ny)
{
    int32_t gx, gy;
    hs_vision_tiles(v, nx, ny, &gx, &gy);
    *out_nx = v->hp.image_size;
    *out_ny = v->hp.image_size * (gx * gy + 1);
}

/* Normalises the s x s window at (x0, y0) of img into view k of out. */
static void put_view(const struct hs_vision *v, const struct hs_image *img, int32_t x0, int32_t y0,
                     int32_t k, struct hs_vision_input *out)
{
    const int32_t s = v->hp.image_size;
    const size_t plane = (size_t)out->nx * out->ny;
    for (int c = 0; c < 3; c++) {
        const float m = v->hp.mean[c], sd = v->hp.std[c];
        float *dst = out->data + c * plane + (size_t)k * s * s;
        for (int32_t y = 0; y < s; y++) {
            const uint8_t *src = img->rgb + ((size_t)(y0 + y) * img->nx + x0) * 3 + c;
            for (int32_t x = 0; x < s; x++) {
                dst[(size_t)y * s + x] = ((float)src[(size_t)x * 3] / 255.0f - m) / sd;
            }
        }
    }
}

hs_status hs__siglip_preprocess(const struct hs_vision *v, const struct hs_image *img,
                                struct hs_vision_input *out, struct hs_error *err)
{
    memset(out, 0, sizeof(*out));
    const int32_t s = v->hp.image_size;
    int32_t rw, rh;
    refined_size(v, img->nx, img->ny, &rw, &rh);
    const int32_t gx = rw / s, gy = rh / s;
    out->nx = s;
    out->ny = s * (gx * gy + 1);
    out->data = malloc((size_t)out->nx * out->ny * 3 * sizeof(float));
    /* libmtmd's resizes. With a longest_edge (transformers' way): Lanczos to the scaled size,
     * Lanczos again (stretched) to whole tiles, and the overview is that image Lanczos'd to one
     * tile. Without: the tiles' image bicubic, fitted and padded with black (its image_pad_rf),
     * the overview the image stretched to one tile by the bicubic. */
    struct hs_image scaled = {0}, refined = {0}, overview = {0};
    hs_status st = out->data ? HS_OK : HS_E_NOMEM;
    if (st == HS_OK && v->hp.longest_edge > 0) {
        int32_t w, h;
        scaled_size(v, img->nx, img->ny, &w, &h);
        st = hs__vision_resize_lanczos(img, w, h, &scaled);
        if (st == HS_OK) {
            st = hs__vision_resize_lanczos(&scaled, rw, rh, &refined);
        }
        if (st == HS_OK) {
            st = hs__vision_resize_lanczos(&refined, s, s, &overview);
        }
    } else if (st == HS_OK) {
        st = hs__vision_resize_fit_pad(img, rw, rh, &refined);
        if (st == HS_OK) {
            st = hs__vision_resize_bicubic(img, s, s, &overview);
        }
    }
    hs_image_finish(&scaled);
    if (st != HS_OK) {
        hs_image_finish(&refined);
        hs_image_finish(&overview);
        hs_vision_input_finish(out);
        return hs_error_set(err, HS_E_NOMEM, "out of memory preprocessing a %dx%d image", img->nx,
                            img->ny);
    }
    for (int32_t ty = 0; ty < gy; ty++) {
        for (int32_t tx = 0; tx < gx; tx++) {
            put_view(v, &refined, tx * s, ty * s, ty * gx + tx, out);
        }
    }
    put_view(v, &overview, 0, 0, gx * gy, out);
    hs_image_finish(&refined);
    hs_image_finish(&overview);
    return HS_OK;
}

/* ---- the encoder ---- */

/* One view (image_size square at rows y0 of in) into n / scale^2 rows of out. */
static hs_status encode_view(struct hs_vision *vis, struct hs_backend *be,
                             const struct hs_vision_input *in, int32_t y0, float *out,
                             struct hs__vit_scratch *s)
{
    const struct hs_vision_hparams *hp = &vis->hp;
    const int32_t p = hp->patch_size, m = hp->n_merge, side = hp->image_size / p;
    const int64_t d = hp->n_embd, kk = 3LL * p * p, n = (int64_t)side * side;
    const size_t plane = (size_t)in->nx * in->ny;
    /* Patches group-major (each m x m group adjacent, groups in raster order): the pixel shuffle
     * is then a reshape. Each keeps its raster position for the learned embedding. */
    int32_t *pos = (int32_t *)s->tmp; /* free until the first block */
    int64_t idx = 0;
    for (int32_t gy = 0; gy < side; gy += m) {
        for (int32_t gx = 0; gx < side; gx += m) {
            for (int32_t dy = 0; dy < m; dy++) {
                for (int32_t dx = 0; dx < m; dx++, idx++) {
                    const int32_t py = gy + dy, px = gx + dx;
                    float *dst = s->patches + idx * kk;
                    for (int c = 0; c < 3; c++) {
                        for (int32_t ky = 0; ky < p; ky++) {
                            const float *src = in->data + c * plane +
                                               (size_t)(y0 + py * p + ky) * in->nx + (size_t)px * p;
                            memcpy(dst + ((size_t)c * p + ky) * p, src, (size_t)p * sizeof(float));
                        }
                    }
                    pos[idx] = py * side + px;
                }
            }
        }
    }
    struct hs__vit_views t = hs__vit_scratch_views(s, hp, n);
    HS_TRY(hs__vit_linear(be, &vis->patch_w0, &vis->patch_b, &t.patches, &t.x));
    const float *pe = vis->pos_embd.data;
    for (int64_t r = 0; r < n; r++) {
        const float *pr = pe + (size_t)pos[r] * d;
        for (int64_t i = 0; i < d; i++) {
            s->x[r * d + i] += pr[i];
        }
    }
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const struct hs_vision_layer *l = &vis->layers[il];
        hs__vit_layer_norm(s->x, s->h, n, d, l->ln1_w.data, l->ln1_b.data, hp->eps);
        const struct hs_tensor *ws[3] = {&l->q_w, &l->k_w, &l->v_w};
        struct hs_tensor *ys[3] = {&t.q, &t.k, &t.v};
        HS_TRY(hs_backend_matmul_multi(be, 3, ws, &t.h, ys));
        HS_TRY(hs_backend_add(be, &t.q, &l->q_b, &t.q));
        HS_TRY(hs_backend_add(be, &t.k, &l->k_b, &t.k));
        HS_TRY(hs_backend_add(be, &t.v, &l->v_b, &t.v));
        HS_TRY(hs__vit_attention(be, hp->n_head, d, 0, n, s->q, s->k, s->v, s->vt, s->scores,
                                 s->attn));
        HS_TRY(hs__vit_linear(be, &l->o_w, &l->o_b, &t.attn, &t.tmp));
        HS_TRY(hs_backend_add(be, &t.x, &t.tmp, &t.x));
        hs__vit_layer_norm(s->x, s->h, n, d, l->ln2_w.data, l->ln2_b.data, hp->eps);
        HS_TRY(hs__vit_linear(be, &l->up_w, &l->up_b, &t.h, &t.ff));
        hs__vit_gelu(s->ff, n * hp->n_ff);
        HS_TRY(hs__vit_linear(be, &l->down_w, &l->down_b, &t.ff, &t.tmp));
        HS_TRY(hs_backend_add(be, &t.x, &t.tmp, &t.x));
    }
    hs__vit_layer_norm(s->x, s->h, n, d, vis->post_ln_w.data, vis->post_ln_b.data, hp->eps);
    const int64_t dm = d * m * m, n_tok = n / (m * m);
    const struct hs_tensor hm = hs__vit_view(s->h, dm, n_tok, dm);
    struct hs_tensor to = hs__vit_view(out, hp->proj_dim, n_tok, hp->proj_dim);
    return hs_backend_matmul(be, &vis->fc_w, &hm, &to);
}

hs_status hs__siglip_encode(struct hs_vision *v, struct hs_backend *be,
                            const struct hs_vision_input *in, float *out, struct hs_error *err)
{
    hs_error_clear(err);
    const struct hs_vision_hparams *hp = &v->hp;
    const int32_t sz = hp->image_size;
    if (in->nx != sz || in->ny <= 0 || in->ny % sz != 0 || !in->data) {
        return hs_error_set(err, HS_E_INVAL, "input of %dx%d is not a stack of %dx%d views", in->nx,
                            in->ny, sz, sz);
    }
    const int64_t side = sz / hp->patch_size, n = side * side;
    const int64_t n_tok = n / ((int64_t)hp->n_merge * hp->n_merge);
    struct hs__vit_scratch s;
    hs_status st = hs__vit_scratch_init(&s, hp, n, hp->n_ff);
    if (st != HS_OK) {
        hs_error_set(err, st, "out of memory encoding a %dx%d image", in->nx, in->ny);
    }
    for (int32_t k = 0; st == HS_OK && k < in->ny / sz; k++) {
        st = encode_view(v, be, in, k * sz, out + (size_t)k * n_tok * hp->proj_dim, &s);
        if (st != HS_OK) {
            hs_error_set(err, st, "vision encoder failed on the %s backend: %s",
                         hs_backend_name(be), hs_status_str(st));
        }
    }
    hs__vit_scratch_finish(&s);
    return st;
}
