/* An image's tokens in the prompt, laid out as llama.cpp's libmtmd lays them out for each
 * projector (vision.h: hs_vision_prompt). */
#include <stdio.h>
#include <string.h>

#include "model/tokenizer/vocab.h"
#include "model/vision/vision-impl.h"

/* The first token whose piece (specials rendered) is text, as libmtmd's lookup_token; -1: none. */
static hs_token lookup(const struct hs_vocab *vocab, const char *text)
{
    const size_t n = strlen(text);
    char buf[64];
    for (hs_token t = 0; t < hs_vocab_n_tokens(vocab); t++) {
        if (hs_vocab_piece(vocab, t, true, buf, sizeof(buf)) == n && memcmp(buf, text, n) == 0) {
            return t;
        }
    }
    return -1;
}

struct out {
    hs_token *p;
    size_t n, cap;
};

static void put(struct out *o, hs_token t)
{
    if (o->n < o->cap) {
        o->p[o->n] = t;
    }
    o->n++;
}

/* Text tokenized with its special tokens parsed and nothing added (libmtmd's add_text(s, true));
 * the layout's texts are short. */
static hs_status put_text(struct out *o, const struct hs_vocab *vocab, const char *text)
{
    hs_token tmp[128];
    size_t n = 0;
    HS_TRY(hs_tokenize(vocab, text, strlen(text), false, true, tmp, HS_ARRAY_LEN(tmp), &n));
    for (size_t i = 0; i < n; i++) {
        put(o, tmp[i]);
    }
    return HS_OK;
}

static hs_status put_lookup(struct out *o, const struct hs_vocab *vocab, const char *text,
                            struct hs_error *err)
{
    const hs_token t = lookup(vocab, text);
    if (t < 0) {
        return hs_error_set(err, HS_E_FORMAT,
                            "the language model's vocabulary has no token \"%s\", which the "
                            "projector's image layout needs",
                            strcmp(text, "\n\n") == 0 ? "\\n\\n"
                            : strcmp(text, "\n") == 0 ? "\\n"
                                                      : text);
    }
    put(o, t);
    return HS_OK;
}

static void put_view(struct out *o, hs_token placeholder, int32_t n, int32_t *first)
{
    *first = (int32_t)o->n;
    for (int32_t i = 0; i < n; i++) {
        put(o, placeholder);
    }
}

hs_status hs_vision_prompt(const struct hs_vision *v, const struct hs_vocab *vocab, int32_t nx,
                           int32_t ny, hs_token placeholder, hs_token *out, size_t cap,
                           size_t *n_out, int32_t *view_first, struct hs_error *err)
{
    hs_error_clear(err);
    struct out o = {out, 0, out ? cap : 0};
    int32_t tnx, tny;
    hs_vision_target_size(v, nx, ny, &tnx, &tny);
    if (v->hp.type != HS_PROJ_IDEFICS3) {
        /* Qwen: <|vision_start|> rows <|vision_end|> */
        HS_TRY(put_text(&o, vocab, "<|vision_start|>"));
        put_view(&o, placeholder, hs_vision_n_tokens(v, tnx, tny), &view_first[0]);
        HS_TRY(put_text(&o, vocab, "<|vision_end|>"));
    } else {
        /* idefics3 (libmtmd's slice template, overview last): each tile after
         * "<fake_token_around_image><row_R_col_C>", "\n" between rows of tiles, then "\n\n"
         * <fake_token_around_image> <global-img>, the overview, <fake_token_around_image>. */
        int32_t gx, gy;
        hs_vision_tiles(v, nx, ny, &gx, &gy);
        const int32_t per_view = hs_vision_n_tokens(v, tnx, v->hp.image_size);
        for (int32_t r = 0; r < gy; r++) {
            for (int32_t c = 0; c < gx; c++) {
                char t[96];
                snprintf(t, sizeof(t), "<fake_token_around_image><row_%d_col_%d>", (int)r + 1,
                         (int)c + 1);
                HS_TRY(put_text(&o, vocab, t));
                put_view(&o, placeholder, per_view, &view_first[r * gx + c]);
            }
            if (r + 1 < gy) {
                HS_TRY(put_lookup(&o, vocab, "\n", err));
            }
        }
        HS_TRY(put_lookup(&o, vocab, "\n\n", err));
        HS_TRY(put_lookup(&o, vocab, "<fake_token_around_image>", err));
        HS_TRY(put_lookup(&o, vocab, "<global-img>", err));
        put_view(&o, placeholder, per_view, &view_first[gx * gy]);
        HS_TRY(put_lookup(&o, vocab, "<fake_token_around_image>", err));
    }
    *n_out = o.n;
    return o.n <= cap && out ? HS_OK : HS_E_RANGE;
}

int32_t hs_vision_n_views(const struct hs_vision *v, int32_t nx, int32_t ny)
{
    int32_t gx, gy;
    hs_vision_tiles(v, nx, ny, &gx, &gy);
    return gx * gy + 1;
}
