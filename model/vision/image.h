/* Images from requests: data: URLs (base64) decoded from PNG or JPEG into 8-bit RGB, with bounds
 * on dimensions and memory checked from the header before any pixel is decoded. */
#ifndef HS_MODEL_VISION_IMAGE_H
#define HS_MODEL_VISION_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* An 8-bit RGB image. Owns rgb (free with hs_image_finish). */
struct hs_image {
    int32_t nx, ny; /* width, height in pixels */
    uint8_t *rgb;   /* [ny][nx][3] */
};

/* What a decoder accepts: both bounds are checked against the image header before decoding, so
 * a small file that claims a huge image (a decompression bomb) costs nothing. */
struct hs_image_limits {
    int32_t max_side;       /* widest / tallest image in pixels */
    int64_t max_pixels;     /* nx * ny */
    size_t max_input_bytes; /* encoded size (after base64) */
};

/* Defaults: sides up to 8192, 16 Mpx (48 MiB of RGB), 32 MiB encoded. */
struct hs_image_limits hs_image_default_limits(void);

/* Decodes a PNG or JPEG (told apart by their signatures) into out (zeroed first, left zeroed on
 * failure). Alpha is dropped; grey, palette and 16-bit PNGs become 8-bit RGB. Errors, each with a
 * message in err: HS_E_FORMAT (not PNG/JPEG, or corrupt/truncated), HS_E_RANGE (over lim),
 * HS_E_NOMEM. Thread: any (each call is independent). */
hs_status hs_image_decode(const void *data, size_t n_bytes, const struct hs_image_limits *lim,
                          struct hs_image *out, struct hs_error *err);

/* Decodes a request's image URL: "data:image/...;base64,<data>". http(s) URLs get HS_E_NOTSUP
 * ("fetching is disabled") unless allow_fetch, and HS_E_NOTSUP ("not implemented") even then:
 * hetserve does not fetch URLs. Other schemes, a data URL without ;base64, or bad base64 give
 * HS_E_INVAL; the image itself errs as in hs_image_decode. Thread: any. */
hs_status hs_image_decode_url(const char *url, size_t url_len, bool allow_fetch,
                              const struct hs_image_limits *lim, struct hs_image *out,
                              struct hs_error *err);

/* Decodes standard base64 (whitespace skipped, padding optional) of src into dst, which has room
 * for cap bytes; *n_out gets the length. HS_E_INVAL on a bad character or length, HS_E_RANGE
 * when the result exceeds cap. Thread: any. */
hs_status hs_base64_decode(const char *src, size_t n, uint8_t *dst, size_t cap, size_t *n_out);

/* Frees the pixels and zeroes img; NULL or zeroed input is fine. */
void hs_image_finish(struct hs_image *img);

#endif
