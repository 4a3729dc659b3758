/* Multimodal input for the language model: rows given in place of token embeddings (an image's
 * embeddings) and Qwen2-VL's M-RoPE, where an image token's rotary pairs turn by its time, row or
 * column position depending on their section. The backend rotates every row by its time position;
 * the rows whose row/column positions differ (image tokens) get the difference here, on the host
 * (activations are host memory: context.c requires it). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/gguf/gguf.h"
#include "model/model-impl.h"

hs_status hs__mrope_load_sections(const struct hs_gguf *g, const char *an,
                                  struct hs_model_hparams *hp, struct hs_error *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.rope.dimension_sections", an);
    const struct hs_gguf_value *arr = NULL;
    if (hs_gguf_get_arr(g, key, HS_GGUF_TYPE_COUNT, &arr) != HS_OK || arr->arr.n != 4) {
        return hs_error_set(err, HS_E_FORMAT, "%s must be an array of 4 integers", key);
    }
    int64_t sum = 0;
    for (int i = 0; i < 3; i++) {
        const int64_t v = hs_gguf_arr_get_int(arr, (uint64_t)i);
        if (v < 0 || v > hp->rope.n_rot) {
            return hs_error_set(err, HS_E_FORMAT, "%s[%d] = %lld is out of range", key, i,
                                (long long)v);
        }
        hp->rope_sections[i] = (int32_t)v;
        sum += v;
    }
    if (hs_gguf_arr_get_int(arr, 3) != 0) {
        return hs_error_set(err, HS_E_NOTSUP, "%s: a fourth M-RoPE section is not supported", key);
    }
    if (sum != hp->rope.n_rot / 2 || hp->rope_sections[0] == 0) {
        return hs_error_set(err, HS_E_FORMAT,
                            "%s: sections sum to %lld, not rope.dimension_count / 2 = %d", key,
                            (long long)sum, hp->rope.n_rot / 2);
    }
    return HS_OK;
}

hs_status hs__mrope_row(struct hs_context *ctx, const struct hs_forward_mm *mm, int32_t i,
                        int32_t row)
{
    int32_t *d = ctx->mrope_dhw + 2 * (size_t)row;
    d[0] = d[1] = 0;
    if (!mm || !mm->mrope_pos) {
        return HS_OK;
    }
    const int32_t *mp = mm->mrope_pos + 3 * (size_t)i;
    if (mp[0] < 0 || mp[1] < 0 || mp[2] < 0) {
        return HS_E_INVAL;
    }
    ctx->pos[row] = mp[0];
    d[0] = mp[1] - mp[0];
    d[1] = mp[2] - mp[0];
    ctx->mrope_any = ctx->mrope_any || d[0] != 0 || d[1] != 0;
    return HS_OK;
}

void hs__mrope_adjust(const struct hs_context *ctx, float *x, int32_t n_head, size_t r0, int32_t n)
{
    const struct hs_model_hparams *hp = &ctx->model->hp;
    const int32_t hd = hp->head_dim, half = hp->rope.n_rot / 2;
    const int32_t s0 = hp->rope_sections[0], s01 = s0 + hp->rope_sections[1];
    const int32_t sect = s01 + hp->rope_sections[2];
    for (int32_t r = 0; r < n; r++) {
        const int32_t *d = ctx->mrope_dhw + 2 * (r0 + (size_t)r);
        if (d[0] == 0 && d[1] == 0) {
            continue;
        }
        float *xr = x + (size_t)r * n_head * hd;
        for (int32_t i = 0; i < half; i++) {
            const int32_t sector = i % sect;
            const int32_t delta = sector < s0 ? 0 : sector < s01 ? d[0] : d[1];
            if (delta == 0) {
                continue;
            }
            const float theta = (float)delta * hp->rope.freq_scale *
                                powf(hp->rope.freq_base, -2.0f * (float)i / (float)hp->rope.n_rot);
            const float c = cosf(theta), s = sinf(theta);
            for (int32_t h = 0; h < n_head; h++) {
                float *v = xr + (size_t)h * hd;
                const float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        }
    }
}

void hs__embd_rows_set(struct hs_context *ctx, const struct hs_forward_seq *seqs,
                       const struct hs_forward_mm *mm, int32_t n_seqs)
{
    const size_t n_embd = (size_t)ctx->model->hp.n_embd;
    size_t row = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        for (int32_t i = 0; i < seqs[s].n_tokens; i++, row++) {
            if (mm[s].embd && mm[s].embd[i]) {
                memcpy(ctx->x + row * n_embd, mm[s].embd[i], n_embd * sizeof(float));
            }
        }
    }
}
