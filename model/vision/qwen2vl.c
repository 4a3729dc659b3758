/* The Qwen2-VL and Qwen2.5-VL vision encoders (llama.cpp's clip graph for "qwen2vl_merger" and
 * "qwen2.5vl_merger"): a patch-embedding conv (two temporal kernels summed, one frame), ViT blocks
 * with 2D rotary over (row, column), then the patch merger: a norm, and an MLP over each 2x2 group
 * of patches to the language model's width. Qwen2-VL's blocks use LayerNorm and quick-GELU MLPs;
 * Qwen2.5-VL's RMSNorm and SiLU-gated MLPs, and attend within windows of 112x112 pixels (4x4
 * merged groups; smaller at the right and bottom edges) except in every n_wa_pattern-th layer.
 *
 * Patches are laid out merged-group-major from the start (each n_merge x n_merge group's patches
 * adjacent), as llama.cpp does, so the merger is a reshape. The groups go window by window (raster
 * order within a window, windows in raster order; Qwen2-VL: one window, the whole image), so a
 * window is a contiguous run of rows, and the merger's output rows go back to raster order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/vision/vision-impl.h"

/* Qwen2.5-VL's attention window side in pixels: llama.cpp's constant (HF's window_size); the
 * converter writes no key for it. */
#define WINDOW_PX 112

/* The block's norm: LayerNorm, or RMSNorm where the file has no bias (Qwen2.5-VL). */
static void norm(const float *x, float *y, int64_t n_rows, int64_t n, const struct hs_tensor *w,
                 const struct hs_tensor *b, float eps)
{
    if (b->data) {
        hs__vit_layer_norm(x, y, n_rows, n, w->data, b->data, eps);
        return;
    }
    const float *wd = w->data;
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) {
            ss += (double)xr[i] * xr[i];
        }
        const float inv = 1.0f / sqrtf((float)(ss / (double)n) + eps);
        for (int64_t i = 0; i < n; i++) {
            yr[i] = xr[i] * inv * wd[i];
        }
    }
}

/* g = silu(g) * u (Qwen2.5-VL's gated MLP). */
static void swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

static void quick_gelu(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
    }
}

/* Qwen2-VL's vision rotary on [n][n_head][hd] rows: dims i and i + hd/2 (i < hd/2) rotate by
 * row * theta^(-4i/hd) for i < hd/4 and by column * theta^(-4(i - hd/4)/hd) above. */
static void rope_2d(float *x, int64_t n, int32_t n_head, int32_t hd, const int32_t *pos_r,
                    const int32_t *pos_c, float *cs)
{
    const int32_t half = hd / 2, quarter = hd / 4;
    for (int64_t r = 0; r < n; r++) {
        for (int32_t i = 0; i < half; i++) {
            const int32_t j = i < quarter ? i : i - quarter;
            const float p = (float)(i < quarter ? pos_r[r] : pos_c[r]);
            const float theta = p * powf(10000.0f, -4.0f * (float)j / (float)hd);
            cs[2 * i] = cosf(theta);
            cs[2 * i + 1] = sinf(theta);
        }
        for (int32_t h = 0; h < n_head; h++) {
            float *v = x + (r * n_head + h) * hd;
            for (int32_t i = 0; i < half; i++) {
                const float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
                v[i + half] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
            }
        }
    }
}

/* What Qwen's layout and rotary add to the ViT scratch (each owned). */
struct layout {
    int32_t *pos_r, *pos_c; /* [n] each patch's row and column */
    float *cs;              /* [hd] */
    int32_t *order;         /* [n_tok] the raster index of each merged group, in layout order */
    int64_t *win;           /* [n_tok + 1] windows' first rows (patches); win[n_win] = n */
};

static void layout_free(struct layout *lo)
{
    free(lo->pos_r);
    free(lo->pos_c);
    free(lo->cs);
    free(lo->order);
    free(lo->win);
}

/* Copies merged group (gx, gy)'s m x m patches into rows idx.. of s->patches, each as (channel,
 * ky, kx) like the conv kernel's rows, with their (row, column) for the rotary. */
static void put_group(struct hs__vit_scratch *s, struct layout *lo,
                      const struct hs_vision_input *in, int32_t p, int32_t m, int32_t gx,
                      int32_t gy, int64_t idx)
{
    const size_t plane = (size_t)in->nx * in->ny, kk = 3 * (size_t)p * p;
    for (int32_t dy = 0; dy < m; dy++) {
        for (int32_t dx = 0; dx < m; dx++, idx++) {
            const int32_t py = gy * m + dy, px = gx * m + dx;
            float *dst = s->patches + (size_t)idx * kk;
            for (int c = 0; c < 3; c++) {
                for (int32_t ky = 0; ky < p; ky++) {
                    const float *src =
                        in->data + c * plane + (size_t)(py * p + ky) * in->nx + (size_t)px * p;
                    memcpy(dst + ((size_t)c * p + ky) * p, src, (size_t)p * sizeof(float));
                }
            }
            lo->pos_r[idx] = py;
            lo->pos_c[idx] = px;
        }
    }
}

static hs_status run(struct hs_vision *vis, struct hs_backend *be, const struct hs_vision_input *in,
                     float *out, struct hs__vit_scratch *s, struct layout *lo)
{
    const struct hs_vision_hparams *hp = &vis->hp;
    const int32_t p = hp->patch_size, m = hp->n_merge;
    const int64_t d = hp->n_embd;
    const int32_t npx = in->nx / p, npy = in->ny / p;
    const int64_t n = (int64_t)npx * npy;
    /* Windows' side in merged groups (llama.cpp's integer division); one window without them. */
    const int32_t pw = npx / m, ph = npy / m;
    const int32_t gw = hp->n_wa_pattern > 0 ? HS_MAX(1, WINDOW_PX / p / m) : HS_MAX(pw, ph);
    /* Patches, merged-group-major in window order. */
    int64_t idx = 0;
    int32_t n_win = 0, k = 0;
    for (int32_t wy = 0; wy < ph; wy += gw) {
        for (int32_t wx = 0; wx < pw; wx += gw) {
            lo->win[n_win++] = idx;
            for (int32_t gy = wy; gy < HS_MIN(wy + gw, ph); gy++) {
                for (int32_t gx = wx; gx < HS_MIN(wx + gw, pw); gx++) {
                    lo->order[k++] = gy * pw + gx;
                    put_group(s, lo, in, p, m, gx, gy, idx);
                    idx += (int64_t)m * m;
                }
            }
        }
    }
    lo->win[n_win] = n;
    struct hs__vit_views t = hs__vit_scratch_views(s, hp, n);
    struct hs_tensor tg = hs__vit_view(s->ff + n * hp->n_ff, hp->n_ff, n, hp->n_ff);
    HS_TRY(hs_backend_matmul(be, &vis->patch_w0, &t.patches, &t.x));
    HS_TRY(hs_backend_matmul(be, &vis->patch_w1, &t.patches, &t.tmp));
    HS_TRY(hs_backend_add(be, &t.x, &t.tmp, &t.x));
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const struct hs_vision_layer *l = &vis->layers[il];
        norm(s->x, s->h, n, d, &l->ln1_w, &l->ln1_b, hp->eps);
        const struct hs_tensor *ws[3] = {&l->q_w, &l->k_w, &l->v_w};
        struct hs_tensor *ys[3] = {&t.q, &t.k, &t.v};
        HS_TRY(hs_backend_matmul_multi(be, 3, ws, &t.h, ys));
        HS_TRY(hs_backend_add(be, &t.q, &l->q_b, &t.q));
        HS_TRY(hs_backend_add(be, &t.k, &l->k_b, &t.k));
        HS_TRY(hs_backend_add(be, &t.v, &l->v_b, &t.v));
        rope_2d(s->q, n, hp->n_head, (int32_t)(d / hp->n_head), lo->pos_r, lo->pos_c, lo->cs);
        rope_2d(s->k, n, hp->n_head, (int32_t)(d / hp->n_head), lo->pos_r, lo->pos_c, lo->cs);
        const bool full = hp->n_wa_pattern == 0 || (il + 1) % hp->n_wa_pattern == 0;
        for (int32_t w = 0; w < (full ? 1 : n_win); w++) {
            HS_TRY(hs__vit_attention(be, hp->n_head, d, full ? 0 : lo->win[w],
                                     full ? n : lo->win[w + 1], s->q, s->k, s->v, s->vt, s->scores,
                                     s->attn));
        }
        HS_TRY(hs__vit_linear(be, &l->o_w, &l->o_b, &t.attn, &t.tmp));
        HS_TRY(hs_backend_add(be, &t.x, &t.tmp, &t.x));
        norm(s->x, s->h, n, d, &l->ln2_w, &l->ln2_b, hp->eps);
        if (l->gate_w.data) {
            const struct hs_tensor *wu[2] = {&l->up_w, &l->gate_w};
            struct hs_tensor *yu[2] = {&t.ff, &tg};
            HS_TRY(hs_backend_matmul_multi(be, 2, wu, &t.h, yu));
            HS_TRY(hs_backend_add(be, &t.ff, &l->up_b, &t.ff));
            HS_TRY(hs_backend_add(be, &tg, &l->gate_b, &tg));
            swiglu(s->ff + n * hp->n_ff, s->ff, n * hp->n_ff);
            HS_TRY(hs__vit_linear(be, &l->down_w, &l->down_b, &tg, &t.tmp));
        } else {
            HS_TRY(hs__vit_linear(be, &l->up_w, &l->up_b, &t.h, &t.ff));
            quick_gelu(s->ff, n * hp->n_ff);
            HS_TRY(hs__vit_linear(be, &l->down_w, &l->down_b, &t.ff, &t.tmp));
        }
        HS_TRY(hs_backend_add(be, &t.x, &t.tmp, &t.x));
    }
    norm(s->x, s->h, n, d, &vis->post_ln_w, &vis->post_ln_b, hp->eps);
    /* The merger: each group's m*m adjacent rows are one row of m*m*d. The MLP is row-wise, so
     * the groups go back to raster order (the output's) before it. */
    const int64_t dm = d * m * m, n_tok = n / (m * m);
    for (int64_t g = 0; g < n_tok; g++) {
        memcpy(s->x + lo->order[g] * dm, s->h + g * dm, (size_t)dm * sizeof(float));
    }
    const struct hs_tensor hm = hs__vit_view(s->x, dm, n_tok, dm);
    struct hs_tensor fm = hs__vit_view(s->ff, dm, n_tok, dm);
    HS_TRY(hs__vit_linear(be, &vis->mm0_w, &vis->mm0_b, &hm, &fm));
    hs__vit_gelu(s->ff, n_tok * dm);
    struct hs_tensor to = hs__vit_view(out, hp->proj_dim, n_tok, hp->proj_dim);
    return hs__vit_linear(be, &vis->mm2_w, &vis->mm2_b, &fm, &to);
}

hs_status hs_vision_encode(struct hs_vision *v, struct hs_backend *be,
                           const struct hs_vision_input *in, float *out, struct hs_error *err)
{
    if (v->hp.type == HS_PROJ_IDEFICS3) {
        return hs__siglip_encode(v, be, in, out, err);
    }
    hs_error_clear(err);
    const struct hs_vision_hparams *hp = &v->hp;
    const int32_t f = hp->patch_size * hp->n_merge;
    if (in->nx <= 0 || in->ny <= 0 || in->nx % f != 0 || in->ny % f != 0 || !in->data) {
        return hs_error_set(err, HS_E_INVAL, "image of %dx%d is not a multiple of %d pixels",
                            in->nx, in->ny, f);
    }
    const int64_t n = (int64_t)(in->nx / hp->patch_size) * (in->ny / hp->patch_size);
    const int64_t d = hp->n_embd, hd = d / hp->n_head;
    const int64_t n_tok = n / ((int64_t)hp->n_merge * hp->n_merge);
    const int64_t n_ffw = HS_MAX((int64_t)hp->n_ff * (v->layers[0].gate_w.data ? 2 : 1),
                                 d * hp->n_merge * hp->n_merge);
    struct hs__vit_scratch s;
    struct layout lo = {0};
    hs_status st = hs__vit_scratch_init(&s, hp, n, n_ffw);
    lo.pos_r = malloc((size_t)n * sizeof(int32_t));
    lo.pos_c = malloc((size_t)n * sizeof(int32_t));
    lo.cs = malloc((size_t)hd * sizeof(float));
    lo.order = malloc((size_t)n_tok * sizeof(int32_t));
    lo.win = malloc((size_t)(n_tok + 1) * sizeof(int64_t));
    if (st != HS_OK || !lo.pos_r || !lo.pos_c || !lo.cs || !lo.order || !lo.win) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory encoding a %dx%d image", in->nx, in->ny);
    } else if ((st = run(v, be, in, out, &s, &lo)) != HS_OK) {
        hs_error_set(err, st, "vision encoder failed on the %s backend: %s", hs_backend_name(be),
                     hs_status_str(st));
    }
    hs__vit_scratch_finish(&s);
    layout_free(&lo);
    return st;
}
