/* Pieces shared by the vision transformers of model/vision (Qwen2-VL's and SigLIP's): views,
 * linear layers and attention as backend matmuls, LayerNorm, GELU and softmax on the calling
 * thread. */
#include <math.h>
#include <stdlib.h>

#include "model/vision/vision-impl.h"

struct hs_tensor hs__vit_view(float *data, int64_t n_cols, int64_t n_rows, int64_t row_stride)
{
    struct hs_tensor t = {.type = HS_TYPE_F32, .n_dims = 2, .data = data};
    t.ne[0] = n_cols;
    t.ne[1] = n_rows;
    t.ne[2] = t.ne[3] = 1;
    t.nb[0] = sizeof(float);
    t.nb[1] = (size_t)row_stride * sizeof(float);
    t.nb[2] = t.nb[3] = t.nb[1] * (size_t)n_rows;
    return t;
}

hs_status hs__vit_scratch_init(struct hs__vit_scratch *s, const struct hs_vision_hparams *hp,
                               int64_t n, int64_t n_ffw)
{
    const size_t nd = (size_t)n * hp->n_embd * sizeof(float);
    *s = (struct hs__vit_scratch){0};
    s->patches = malloc((size_t)n * 3 * hp->patch_size * hp->patch_size * sizeof(float));
    s->x = malloc(nd);
    s->h = malloc(nd);
    s->tmp = malloc(nd);
    s->q = malloc(nd);
    s->k = malloc(nd);
    s->v = malloc(nd);
    s->attn = malloc(nd);
    s->vt = malloc((size_t)n * (hp->n_embd / hp->n_head) * sizeof(float));
    s->scores = malloc((size_t)HS_MIN(n, (int64_t)HS_VIT_ATTN_CHUNK_ROWS) * n * sizeof(float));
    s->ff = malloc((size_t)n * n_ffw * sizeof(float));
    if (!s->patches || !s->x || !s->h || !s->tmp || !s->q || !s->k || !s->v || !s->attn || !s->vt ||
        !s->scores || !s->ff) {
        hs__vit_scratch_finish(s);
        return HS_E_NOMEM;
    }
    return HS_OK;
}

void hs__vit_scratch_finish(struct hs__vit_scratch *s)
{
    float *bufs[] = {s->patches, s->x,    s->h,  s->tmp,    s->q, s->k,
                     s->v,       s->attn, s->vt, s->scores, s->ff};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        free(bufs[i]);
    }
    *s = (struct hs__vit_scratch){0};
}

struct hs__vit_views hs__vit_scratch_views(const struct hs__vit_scratch *s,
                                           const struct hs_vision_hparams *hp, int64_t n)
{
    const int64_t d = hp->n_embd, kk = 3LL * hp->patch_size * hp->patch_size;
    return (struct hs__vit_views){
        .patches = hs__vit_view(s->patches, kk, n, kk),
        .x = hs__vit_view(s->x, d, n, d),
        .h = hs__vit_view(s->h, d, n, d),
        .tmp = hs__vit_view(s->tmp, d, n, d),
        .q = hs__vit_view(s->q, d, n, d),
        .k = hs__vit_view(s->k, d, n, d),
        .v = hs__vit_view(s->v, d, n, d),
        .attn = hs__vit_view(s->attn, d, n, d),
        .ff = hs__vit_view(s->ff, hp->n_ff, n, hp->n_ff),
    };
}

hs_status hs__vit_linear(struct hs_backend *be, const struct hs_tensor *w,
                         const struct hs_tensor *b, const struct hs_tensor *x, struct hs_tensor *y)
{
    HS_TRY(hs_backend_matmul(be, w, x, y));
    return b ? hs_backend_add(be, y, b, y) : HS_OK;
}

void hs__vit_layer_norm(const float *x, float *y, int64_t n_rows, int64_t n, const float *w,
                        const float *b, float eps)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) {
            sum += xr[i];
        }
        const float mean = (float)(sum / (double)n);
        double var = 0.0;
        for (int64_t i = 0; i < n; i++) {
            var += (double)(xr[i] - mean) * (xr[i] - mean);
        }
        const float inv = 1.0f / sqrtf((float)(var / (double)n) + eps);
        for (int64_t i = 0; i < n; i++) {
            yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
        }
    }
}

void hs__vit_gelu(float *x, int64_t n)
{
    const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
}

static void softmax_rows(float *s, int64_t n_rows, int64_t n, float scale)
{
    for (int64_t r = 0; r < n_rows; r++) {
        float *row = s + r * n;
        float mx = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            row[i] *= scale;
            mx = row[i] > mx ? row[i] : mx;
        }
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) {
            row[i] = expf(row[i] - mx);
            sum += row[i];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < n; i++) {
            row[i] *= inv;
        }
    }
}

hs_status hs__vit_attention(struct hs_backend *be, int32_t n_head, int64_t d, int64_t a, int64_t b,
                            const float *q, const float *k, const float *v, float *vt,
                            float *scores, float *attn)
{
    const int64_t n = b - a;
    const int32_t hd = (int32_t)(d / n_head);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int32_t h = 0; h < n_head; h++) {
        for (int64_t r = 0; r < n; r++) {
            for (int32_t i = 0; i < hd; i++) {
                vt[i * n + r] = v[(a + r) * d + h * hd + i];
            }
        }
        const struct hs_tensor kh = hs__vit_view((float *)k + a * d + h * hd, hd, n, d);
        const struct hs_tensor vth = hs__vit_view(vt, n, hd, n);
        for (int64_t r0 = a; r0 < b; r0 += HS_VIT_ATTN_CHUNK_ROWS) {
            const int64_t nr = HS_MIN((int64_t)HS_VIT_ATTN_CHUNK_ROWS, b - r0);
            const struct hs_tensor qh = hs__vit_view((float *)q + r0 * d + h * hd, hd, nr, d);
            struct hs_tensor sc = hs__vit_view(scores, n, nr, n);
            HS_TRY(hs_backend_matmul(be, &kh, &qh, &sc));
            softmax_rows(scores, nr, n, scale);
            struct hs_tensor oh = hs__vit_view(attn + r0 * d + h * hd, hd, nr, d);
            HS_TRY(hs_backend_matmul(be, &vth, &sc, &oh));
        }
    }
    return HS_OK;
}
