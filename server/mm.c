/* Images in prompts: the engine's side of multimodal input. A request's images (placeholder
 * spans and their embedding rows, encoded by the caller) are copied at submit; each step, the
 * batch entries of requests with images get their rows and M-RoPE positions
 * (hs_model_forward_mm). The prefix cache needs nothing here: it matches placeholder token ids,
 * which the caller derives from the image's hash. */
#include <stdlib.h>
#include <string.h>

#include "server/engine-impl.h"

hs_status hs__mm_check(const struct hs_engine *e, const struct hs_engine_request *r,
                       struct hs_error *err)
{
    if (r->n_images == 0) {
        return HS_OK;
    }
    if (r->n_images < 0 || !r->images) {
        return hs_error_set(err, HS_E_INVAL, "n_images is %d without images", r->n_images);
    }
    int32_t end = 0;
    for (int32_t i = 0; i < r->n_images; i++) {
        const struct hs_engine_image *im = &r->images[i];
        if (!im->rows || im->n_tokens <= 0 || im->grid_x <= 0 || im->grid_y <= 0 ||
            (int64_t)im->grid_x * im->grid_y != im->n_tokens || im->first < end ||
            (int64_t)im->first + im->n_tokens > r->n_prompt) {
            return hs_error_set(err, HS_E_INVAL,
                                "image %d: tokens [%d, +%d) of a %dx%d grid do not fit the prompt "
                                "of %d tokens after the previous image",
                                i, im->first, im->n_tokens, im->grid_x, im->grid_y, r->n_prompt);
        }
        end = im->first + im->n_tokens;
    }
    (void)e;
    return HS_OK;
}

hs_status hs__mm_copy(const struct hs_engine *e, struct hs_engine_handle *h,
                      const struct hs_engine_request *r)
{
    if (r->n_images == 0) {
        return HS_OK;
    }
    const size_t n_embd = (size_t)hs_model_hparams(e->model)->n_embd;
    size_t n_rows = 0;
    for (int32_t i = 0; i < r->n_images; i++) {
        n_rows += (size_t)r->images[i].n_tokens;
    }
    h->images = malloc((size_t)r->n_images * sizeof(*h->images));
    h->image_rows = malloc(n_rows * n_embd * sizeof(float));
    if (!h->images || !h->image_rows) {
        return HS_E_NOMEM;
    }
    float *dst = h->image_rows;
    for (int32_t i = 0; i < r->n_images; i++) {
        h->images[i] = r->images[i];
        const size_t n = (size_t)r->images[i].n_tokens * n_embd;
        memcpy(dst, r->images[i].rows, n * sizeof(float));
        h->images[i].rows = dst;
        dst += n;
    }
    h->n_images = r->n_images;
    return HS_OK;
}

void hs__mm_free(struct hs_engine_handle *h)
{
    free(h->images);
    free(h->image_rows);
    h->images = NULL;
    h->image_rows = NULL;
    h->n_images = 0;
}

void hs__mm_engine_free(struct hs_engine *e)
{
    free(e->mm);
    free((void *)e->mm_embd);
    free(e->mm_pos);
}

/* Token k's input row (NULL: its embedding) and (time, row, column) positions: an image's
 * tokens sit at its time position, its row and column added; later tokens go on from there plus
 * max(grid_x, grid_y), so each image shifts them by n_tokens - max(grid_x, grid_y). */
static const float *token_mm(const struct hs_engine_handle *h, size_t n_embd, int32_t k,
                             int32_t pos[3])
{
    int32_t shift = 0;
    for (int32_t i = 0; i < h->n_images; i++) {
        const struct hs_engine_image *im = &h->images[i];
        if (k < im->first) {
            break;
        }
        if (k < im->first + im->n_tokens) {
            const int32_t j = k - im->first, t = im->first - shift;
            pos[0] = t;
            pos[1] = t + j / im->grid_x;
            pos[2] = t + j % im->grid_x;
            return im->rows + (size_t)j * n_embd;
        }
        shift += im->n_tokens - HS_MAX(im->grid_x, im->grid_y);
    }
    pos[0] = pos[1] = pos[2] = k - shift;
    return NULL;
}

hs_status hs__mm_forward(struct hs_engine *e, int32_t n)
{
    bool any = false;
    for (int32_t j = 0; j < n; j++) {
        any = any || e->batch[j]->req->n_images > 0;
    }
    if (!any) {
        return hs_model_forward(e->ctx, e->fwd, n);
    }
    if (!e->mm) {
        e->mm = calloc((size_t)e->n_parallel, sizeof(*e->mm));
        e->mm_embd = calloc((size_t)e->n_batch, sizeof(*e->mm_embd));
        e->mm_pos = calloc((size_t)e->n_batch * 3, sizeof(*e->mm_pos));
        if (!e->mm || !e->mm_embd || !e->mm_pos) {
            hs__mm_engine_free(e);
            e->mm = NULL;
            e->mm_embd = NULL;
            e->mm_pos = NULL;
            return HS_E_NOMEM;
        }
    }
    const struct hs_model_hparams *hp = hs_model_hparams(e->model);
    const bool mrope = hp->rope_sections[0] != 0;
    int32_t row = 0;
    for (int32_t j = 0; j < n; j++) {
        const struct hs_engine_handle *h = e->batch[j]->req;
        const struct hs_forward_seq *fs = &e->fwd[j];
        if (h->n_images == 0 || row + fs->n_tokens > e->n_batch) {
            e->mm[j] = (struct hs_forward_mm){0};
            row += fs->n_tokens;
            continue;
        }
        for (int32_t i = 0; i < fs->n_tokens; i++) {
            e->mm_embd[row + i] =
                token_mm(h, (size_t)hp->n_embd, fs->n_past + i, e->mm_pos + 3 * (size_t)(row + i));
        }
        e->mm[j] = (struct hs_forward_mm){e->mm_embd + row, mrope ? e->mm_pos + 3 * row : NULL};
        row += fs->n_tokens;
    }
    return hs_model_forward_mm(e->ctx, e->fwd, e->mm, n);
}
