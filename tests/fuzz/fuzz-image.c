/* libFuzzer target: the image decoders (model/vision/image.c) on arbitrary bytes, both as an
 * encoded image and as a data: URL. Limits are small (1 Mpx) so a header that claims more must be
 * refused, never decoded; a decoded image's every pixel is read under ASan. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/vision/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void check(const struct hs_image *img, const struct hs_image_limits *lim)
{
    if (img->nx <= 0 || img->ny <= 0 || img->nx > lim->max_side || img->ny > lim->max_side ||
        (int64_t)img->nx * img->ny > lim->max_pixels) {
        __builtin_trap(); /* the decoder let an image past its limits */
    }
    uint64_t acc = 0;
    for (size_t i = 0; i < (size_t)img->nx * img->ny * 3; i++) {
        acc += img->rgb[i];
    }
    sink += acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hs_image_limits lim = hs_image_default_limits();
    lim.max_side = 2048;
    lim.max_pixels = 1 << 20;
    struct hs_image img;
    struct hs_error err;
    if (hs_image_decode(data, size, &lim, &img, &err) == HS_OK) {
        check(&img, &lim);
    } else if (img.rgb || err.message[0] == '\0') {
        __builtin_trap(); /* failures leave nothing behind and say why */
    }
    hs_image_finish(&img);
    if (hs_image_decode_url((const char *)data, size, false, &lim, &img, &err) == HS_OK) {
        check(&img, &lim);
    }
    hs_image_finish(&img);
    return 0;
}
