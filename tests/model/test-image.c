/* Image decoding (model/vision/image.h): PNG and JPEG written here with libpng and libjpeg, decoded
 * back; headers that claim huge images are refused before decoding; data: URLs and base64. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "common/rng.h"
#include "model/vision/image.h"

/* A smooth gradient with noise, so JPEG stays close and PNG must be exact. */
static uint8_t *make_pixels(int nx, int ny, int channels, uint64_t seed)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, seed);
    uint8_t *px = malloc((size_t)nx * ny * channels);
    for (int y = 0; y < ny; y++) {
        for (int x = 0; x < nx; x++) {
            for (int c = 0; c < channels; c++) {
                const float v = 40.0f + 150.0f * (float)(x + y * c) / (float)(nx + ny * c) +
                                hs_rng_range(&rng, -8.0f, 8.0f);
                px[((size_t)y * nx + x) * channels + c] = (uint8_t)v;
            }
        }
    }
    return px;
}

static void *write_png(const uint8_t *px, int nx, int ny, png_uint_32 format, size_t *n_out)
{
    png_image pi;
    memset(&pi, 0, sizeof(pi));
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)nx;
    pi.height = (png_uint_32)ny;
    pi.format = format;
    png_alloc_size_t n = 0;
    cr_assert(png_image_write_to_memory(&pi, NULL, &n, 0, px, 0, NULL));
    void *buf = malloc(n);
    cr_assert(png_image_write_to_memory(&pi, buf, &n, 0, px, 0, NULL), "%s", pi.message);
    *n_out = n;
    return buf;
}

static void *write_jpeg(const uint8_t *rgb, int nx, int ny, int quality, size_t *n_out)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr em;
    c.err = jpeg_std_error(&em);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = (JDIMENSION)nx;
    c.image_height = (JDIMENSION)ny;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * nx * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *n_out = n;
    return buf;
}

Test(image, png_rgb_decodes_exactly)
{
    uint8_t *px = make_pixels(37, 23, 3, 1);
    size_t n;
    void *png = write_png(px, 37, 23, PNG_FORMAT_RGB, &n);
    struct hs_image img;
    struct hs_error err;
    cr_assert_eq(hs_image_decode(png, n, NULL, &img, &err), HS_OK, "%s", err.message);
    cr_assert_eq(img.nx, 37);
    cr_assert_eq(img.ny, 23);
    cr_assert_eq(memcmp(img.rgb, px, 37 * 23 * 3), 0);
    hs_image_finish(&img);
    free(png);
    free(px);
}

Test(image, png_alpha_is_dropped_and_grey_expands)
{
    uint8_t *px = make_pixels(16, 9, 4, 2);
    size_t n;
    void *png = write_png(px, 16, 9, PNG_FORMAT_RGBA, &n);
    struct hs_image img;
    struct hs_error err;
    cr_assert_eq(hs_image_decode(png, n, NULL, &img, &err), HS_OK, "%s", err.message);
    for (int i = 0; i < 16 * 9; i++) {
        cr_assert_eq(memcmp(img.rgb + i * 3, px + i * 4, 3), 0, "pixel %d", i);
    }
    hs_image_finish(&img);
    free(png);
    free(px);

    uint8_t *grey = make_pixels(8, 8, 1, 3);
    png = write_png(grey, 8, 8, PNG_FORMAT_GRAY, &n);
    cr_assert_eq(hs_image_decode(png, n, NULL, &img, &err), HS_OK, "%s", err.message);
    for (int i = 0; i < 64; i++) {
        cr_assert(img.rgb[i * 3] == grey[i] && img.rgb[i * 3 + 1] == grey[i] &&
                  img.rgb[i * 3 + 2] == grey[i]);
    }
    hs_image_finish(&img);
    free(png);
    free(grey);
}

Test(image, jpeg_decodes_close_to_its_source)
{
    uint8_t *px = make_pixels(64, 48, 3, 4);
    size_t n;
    void *jpg = write_jpeg(px, 64, 48, 95, &n);
    struct hs_image img;
    struct hs_error err;
    cr_assert_eq(hs_image_decode(jpg, n, NULL, &img, &err), HS_OK, "%s", err.message);
    cr_assert_eq(img.nx, 64);
    cr_assert_eq(img.ny, 48);
    double sum_abs = 0.0;
    for (int i = 0; i < 64 * 48 * 3; i++) {
        sum_abs += abs((int)img.rgb[i] - (int)px[i]);
    }
    /* quality 95 on noisy content: a few levels of error on average, far from random (~60) */
    cr_assert_lt(sum_abs / (64 * 48 * 3), 6.0);
    hs_image_finish(&img);
    free(jpg);
    free(px);
}

/* Rewrites IHDR's width and height (and its CRC) of a real PNG: a decompression bomb's header. */
static void png_claim_size(uint8_t *png, uint32_t w, uint32_t h)
{
    /* signature (8), length (4), "IHDR" (4), width, height, ... CRC over type + 13 data bytes */
    for (int i = 0; i < 4; i++) {
        png[16 + i] = (uint8_t)(w >> (24 - 8 * i));
        png[20 + i] = (uint8_t)(h >> (24 - 8 * i));
    }
    const uint32_t crc = (uint32_t)crc32(0L, png + 12, 17);
    for (int i = 0; i < 4; i++) {
        png[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
}

Test(image, huge_headers_are_refused_before_decoding)
{
    uint8_t *px = make_pixels(8, 8, 3, 5);
    size_t n;
    uint8_t *png = write_png(px, 8, 8, PNG_FORMAT_RGB, &n);
    struct hs_image img;
    struct hs_error err;
    png_claim_size(png, 60000, 60000);
    cr_assert_eq(hs_image_decode(png, n, NULL, &img, &err), HS_E_RANGE, "%s", err.message);
    cr_assert(strstr(err.message, "60000x60000") && strstr(err.message, "limited"), "%s",
              err.message);
    cr_assert_null(img.rgb);
    png_claim_size(png, 5000, 5000); /* each side fine, 25 Mpx over the 16 Mpx default */
    cr_assert_eq(hs_image_decode(png, n, NULL, &img, &err), HS_E_RANGE, "%s", err.message);
    cr_assert(strstr(err.message, "25000000 pixels"), "%s", err.message);
    free(png);

    uint8_t *jpg = write_jpeg(px, 8, 8, 90, &n);
    size_t i = 2;
    while (i + 9 < n && !(jpg[i] == 0xff && jpg[i + 1] == 0xc0)) {
        i++;
    }
    cr_assert_lt(i + 9, n, "no SOF0 marker");
    jpg[i + 5] = 0xea; /* height 60000 */
    jpg[i + 6] = 0x60;
    cr_assert_eq(hs_image_decode(jpg, n, NULL, &img, &err), HS_E_RANGE, "%s", err.message);
    cr_assert(strstr(err.message, "8x60000"), "%s", err.message);
    free(jpg);

    /* a caller's tighter limits */
    png = write_png(px, 8, 8, PNG_FORMAT_RGB, &n);
    struct hs_image_limits lim = hs_image_default_limits();
    lim.max_pixels = 63;
    cr_assert_eq(hs_image_decode(png, n, &lim, &img, &err), HS_E_RANGE);
    lim = hs_image_default_limits();
    lim.max_input_bytes = n - 1;
    cr_assert_eq(hs_image_decode(png, n, &lim, &img, &err), HS_E_RANGE);
    free(png);
    free(px);
}

Test(image, broken_and_unsupported_images_get_format_errors)
{
    uint8_t *px = make_pixels(32, 32, 3, 6);
    size_t n;
    uint8_t *png = write_png(px, 32, 32, PNG_FORMAT_RGB, &n);
    struct hs_image img;
    struct hs_error err;
    cr_assert_eq(hs_image_decode(png, n / 2, NULL, &img, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "PNG"), "%s", err.message);
    cr_assert_null(img.rgb);
    png[40] ^= 0x55; /* inside IDAT: a CRC or zlib error */
    cr_assert_eq(hs_image_decode(png, n, NULL, &img, &err), HS_E_FORMAT);
    free(png);

    uint8_t *jpg = write_jpeg(px, 32, 32, 90, &n);
    cr_assert_eq(hs_image_decode(jpg, 40, NULL, &img, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "JPEG"), "%s", err.message);
    free(jpg);

    const char gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00";
    cr_assert_eq(hs_image_decode(gif, sizeof(gif) - 1, NULL, &img, &err), HS_E_FORMAT);
    cr_assert(strstr(err.message, "PNG and JPEG"), "%s", err.message);
    cr_assert_eq(hs_image_decode("", 0, NULL, &img, &err), HS_E_FORMAT);
    free(px);
}

Test(image, base64_known_vectors)
{
    uint8_t out[16];
    size_t n = 99;
    cr_assert_eq(hs_base64_decode("TWFu", 4, out, sizeof(out), &n), HS_OK);
    cr_assert(n == 3 && memcmp(out, "Man", 3) == 0);
    cr_assert_eq(hs_base64_decode("TWE=", 4, out, sizeof(out), &n), HS_OK);
    cr_assert(n == 2 && memcmp(out, "Ma", 2) == 0);
    cr_assert_eq(hs_base64_decode("TQ", 2, out, sizeof(out), &n), HS_OK); /* no padding */
    cr_assert(n == 1 && out[0] == 'M');
    cr_assert_eq(hs_base64_decode("TW\nFu", 5, out, sizeof(out), &n), HS_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(hs_base64_decode("TW!u", 4, out, sizeof(out), &n), HS_E_INVAL);
    cr_assert_eq(hs_base64_decode("T", 1, out, sizeof(out), &n), HS_E_INVAL);
    cr_assert_eq(hs_base64_decode("TQ==TQ", 6, out, sizeof(out), &n), HS_E_INVAL);
    cr_assert_eq(hs_base64_decode("TWFuTWFu", 8, out, 5, &n), HS_E_RANGE);
}

static char *to_data_url(const char *prefix, const uint8_t *b, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const size_t np = strlen(prefix);
    char *s = malloc(np + (n + 2) / 3 * 4 + 1);
    memcpy(s, prefix, np);
    char *o = s + np;
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                           (i + 2 < n ? b[i + 2] : 0);
        *o++ = tbl[v >> 18];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? tbl[v & 63] : '=';
    }
    *o = '\0';
    return s;
}

Test(image, data_urls_decode_and_other_urls_are_refused)
{
    uint8_t *px = make_pixels(20, 10, 3, 7);
    size_t n;
    void *png = write_png(px, 20, 10, PNG_FORMAT_RGB, &n);
    char *url = to_data_url("data:image/png;base64,", png, n);
    struct hs_image img;
    struct hs_error err;
    cr_assert_eq(hs_image_decode_url(url, strlen(url), false, NULL, &img, &err), HS_OK, "%s",
                 err.message);
    cr_assert(img.nx == 20 && img.ny == 10 && memcmp(img.rgb, px, 600) == 0);
    hs_image_finish(&img);
    free(url);
    /* the declared type does not matter: the bytes say PNG */
    url = to_data_url("data:image/jpeg;base64,", png, n);
    cr_assert_eq(hs_image_decode_url(url, strlen(url), false, NULL, &img, &err), HS_OK);
    hs_image_finish(&img);
    free(url);

    const char *http = "https://example.com/a.png";
    cr_assert_eq(hs_image_decode_url(http, strlen(http), false, NULL, &img, &err), HS_E_NOTSUP);
    cr_assert(strstr(err.message, "not fetched"), "%s", err.message);
    cr_assert_eq(hs_image_decode_url(http, strlen(http), true, NULL, &img, &err), HS_E_NOTSUP);
    cr_assert(strstr(err.message, "not implemented"), "%s", err.message);
    const char *bad[] = {"file:///etc/passwd", "data:image/png,abcd", "data:image/png;base64",
                         "data:image/png;base64,!!!!", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(hs_image_decode_url(bad[i], strlen(bad[i]), true, NULL, &img, &err),
                     HS_E_INVAL, "%s", bad[i]);
        cr_assert_neq(err.message[0], '\0');
    }
    const char *notimg = "data:image/png;base64,aGVsbG8gd29ybGQ=";
    cr_assert_eq(hs_image_decode_url(notimg, strlen(notimg), false, NULL, &img, &err), HS_E_FORMAT);
    free(png);
    free(px);
}
