/* Image input on the API: the projector (--mmproj), image URLs of chat content parts decoded and
 * encoded into embedding rows (with a small cache keyed by the image's hash, so a repeated
 * screenshot is not re-encoded), and the prompt's placeholder tokens. Thread: HTTP threads; the
 * encoder runs under the vision's mutex on its own CPU backend. */
#ifndef HS_API_VISION_H
#define HS_API_VISION_H

#include <stdbool.h>
#include <stdint.h>

#include "api/request.h"

struct hs__api_vision;

/* Loads the projector at path for a language model of width lm_n_embd. Errors: the projector's
 * (HS_E_IO, HS_E_FORMAT, HS_E_NOTSUP), HS_E_INVAL when its output width is not lm_n_embd.
 * Returns new (free with hs__api_vision_destroy). */
hs_status hs__api_vision_create(const char *path, int32_t lm_n_embd, int32_t n_threads,
                                bool allow_urls, struct hs__api_vision **out,
                                struct hs_error *err);
void hs__api_vision_destroy(struct hs__api_vision *av);

/* Decodes and encodes the image at url into out (rows new, freed by hs__api_req_free). Errors
 * with err filled: 400 for a broken, huge or unsupported image, an http(s) or non-data URL; 503
 * for out of memory. */
hs_status hs__api_vision_image(struct hs__api_vision *av, const char *url, size_t n,
                               const char *param, struct hs__api_image *out,
                               struct hs__api_err *err);

/* Images encoded and answered from the cache so far, and the time spent preprocessing and
 * encoding them (for /metrics). */
struct hs__api_vision_stats {
    uint64_t n_encoded, n_hits;
    double encode_s;
};

/* Thread: any. av NULL: zeros. */
void hs__api_vision_get_stats(struct hs__api_vision *av, struct hs__api_vision_stats *out);

#endif

/* The marker api/chat.c writes for image k of r into the content, unguessable by the client
 * (r->marker_nonce): "<|hs-image-NONCE-k|>". buf holds 64 bytes. */
void hs__api_vision_marker(const struct hs__api_req *r, int32_t k, char *buf);

/* Tokenizes a rendered chat prompt holding image markers into r->prompts[0]: the text around
 * them as hs__api_tokenize would (add_special at the start only; client marks as there), each
 * marker becoming "<|vision_start|>", the image's placeholders (gx * gy ids drawn from its hash,
 * so the prefix cache tells images apart) and "<|vision_end|>"; r->er.images then lists the
 * spans. 400 when the template dropped or repeated an image. */
hs_status hs__api_tokenize_images(const struct hs__api_ctx *c, const char *text, size_t len,
                                  bool add_special, const uint8_t *client, struct hs__api_req *r,
                                  struct hs__api_err *err);
