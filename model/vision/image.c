/* Image decoding with Debian's libpng and libjpeg-turbo: both are fuzzed continuously (OSS-Fuzz)
 * and patched by Debian's security team, which a vendored decoder would not be. Every size is
 * checked from the header before a pixel buffer is allocated. */
#include "model/vision/image.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jpeglib.h>
#include <png.h>

#include "common/common.h"

struct hs_image_limits hs_image_default_limits(void)
{
    struct hs_image_limits l = {
        .max_side = 8192,
        .max_pixels = 16 << 20,
        .max_input_bytes = (size_t)32 << 20,
    };
    return l;
}

void hs_image_finish(struct hs_image *img)
{
    if (img) {
        free(img->rgb);
        memset(img, 0, sizeof(*img));
    }
}

static hs_status check_size(int64_t nx, int64_t ny, const struct hs_image_limits *lim,
                            struct hs_error *err)
{
    if (nx <= 0 || ny <= 0) {
        return hs_error_set(err, HS_E_FORMAT, "image has no pixels (%lldx%lld)", (long long)nx,
                            (long long)ny);
    }
    if (nx > lim->max_side || ny > lim->max_side) {
        return hs_error_set(err, HS_E_RANGE, "image is %lldx%lld pixels; sides are limited to %d",
                            (long long)nx, (long long)ny, (int)lim->max_side);
    }
    if (nx * ny > lim->max_pixels) {
        return hs_error_set(
            err, HS_E_RANGE, "image is %lldx%lld = %lld pixels, more than the limit of %lld",
            (long long)nx, (long long)ny, (long long)(nx * ny), (long long)lim->max_pixels);
    }
    return HS_OK;
}

/* ---- PNG: libpng's simplified API (it keeps its own setjmp inside) ---- */

static hs_status decode_png(const uint8_t *data, size_t n, const struct hs_image_limits *lim,
                            struct hs_image *out, struct hs_error *err)
{
    png_image pi;
    memset(&pi, 0, sizeof(pi));
    pi.version = PNG_IMAGE_VERSION;
    uint8_t *rgba = NULL;
    hs_status st;
    if (!png_image_begin_read_from_memory(&pi, data, n)) {
        st = hs_error_set(err, HS_E_FORMAT, "bad PNG image: %s", pi.message);
        goto fail;
    }
    if ((st = check_size(pi.width, pi.height, lim, err)) != HS_OK) {
        goto fail;
    }
    /* RGBA, then alpha dropped (as stb_image, llama.cpp's decoder, does): libpng would otherwise
     * composite onto a background. */
    pi.format = PNG_FORMAT_RGBA;
    const size_t n_px = (size_t)pi.width * pi.height;
    rgba = malloc(n_px * 4);
    out->rgb = malloc(n_px * 3);
    if (!rgba || !out->rgb) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory for a %ux%u image", pi.width, pi.height);
        goto fail;
    }
    if (!png_image_finish_read(&pi, NULL, rgba, 0, NULL)) {
        st = hs_error_set(err, HS_E_FORMAT, "bad PNG image: %s", pi.message);
        goto fail;
    }
    for (size_t i = 0; i < n_px; i++) {
        memcpy(out->rgb + i * 3, rgba + i * 4, 3);
    }
    out->nx = (int32_t)pi.width;
    out->ny = (int32_t)pi.height;
    free(rgba);
    png_image_free(&pi);
    return HS_OK;
fail:
    free(rgba);
    png_image_free(&pi);
    hs_image_finish(out);
    return st;
}

/* ---- JPEG: libjpeg with errors turned into a longjmp ---- */

/* A progressive JPEG of thousands of tiny scans costs seconds of CPU on a few KiB of input
 * (libjpeg-turbo's djpeg -maxscans guards against the same). */
#define JPEG_MAX_SCANS    256
#define JPEG_MAX_WARNINGS 64

struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jmp;
    char message[JMSG_LENGTH_MAX];
    int n_warnings;
};

static void jpeg_on_error(j_common_ptr cinfo)
{
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
    cinfo->err->format_message(cinfo, e->message);
    longjmp(e->jmp, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
    if (level < 0 && ++e->n_warnings > JPEG_MAX_WARNINGS) {
        snprintf(e->message, sizeof(e->message), "more than %d corrupt-data warnings",
                 JPEG_MAX_WARNINGS);
        longjmp(e->jmp, 1);
    }
}

static void jpeg_on_progress(j_common_ptr cinfo)
{
    const struct jpeg_decompress_struct *d = (const struct jpeg_decompress_struct *)cinfo;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
        snprintf(e->message, sizeof(e->message), "more than %d progressive scans", JPEG_MAX_SCANS);
        longjmp(e->jmp, 1);
    }
}

static hs_status decode_jpeg(const uint8_t *data, size_t n, const struct hs_image_limits *lim,
                             struct hs_image *out, struct hs_error *err)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_err je;
    struct jpeg_progress_mgr progress = {.progress_monitor = jpeg_on_progress};
    memset(&je, 0, sizeof(je));
    /* volatile: read after longjmp; err_set: err already holds the message. */
    volatile hs_status st = HS_E_FORMAT;
    volatile bool err_set = false;
    cinfo.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_on_error;
    je.mgr.emit_message = jpeg_on_message;
    if (setjmp(je.jmp)) {
        if (!err_set) {
            hs_error_set(err, HS_E_FORMAT, "bad JPEG image: %s", je.message);
        }
        jpeg_destroy_decompress(&cinfo);
        hs_image_finish(out);
        return st;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &progress;
    /* Bounds libjpeg's own working memory (a progressive image's coefficients). */
    cinfo.mem->max_memory_to_use = (long)HS_MIN((int64_t)lim->max_pixels * 16, 1L << 30);
    jpeg_mem_src(&cinfo, data, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    hs_status sz = check_size(cinfo.image_width, cinfo.image_height, lim, err);
    if (sz != HS_OK) {
        st = sz;
        err_set = true;
        longjmp(je.jmp, 1);
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3) {
        snprintf(je.message, sizeof(je.message), "%d output components", cinfo.output_components);
        longjmp(je.jmp, 1);
    }
    const size_t row = (size_t)cinfo.output_width * 3;
    out->rgb = malloc(row * cinfo.output_height);
    if (!out->rgb) {
        st = hs_error_set(err, HS_E_NOMEM, "out of memory for a %ux%u image", cinfo.output_width,
                          cinfo.output_height);
        err_set = true;
        longjmp(je.jmp, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW rowp = out->rgb + row * cinfo.output_scanline;
        if (jpeg_read_scanlines(&cinfo, &rowp, 1) != 1) {
            snprintf(je.message, sizeof(je.message), "truncated data");
            longjmp(je.jmp, 1);
        }
    }
    out->nx = (int32_t)cinfo.output_width;
    out->ny = (int32_t)cinfo.output_height;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return HS_OK;
}

hs_status hs_image_decode(const void *data, size_t n_bytes, const struct hs_image_limits *lim,
                          struct hs_image *out, struct hs_error *err)
{
    hs_error_clear(err);
    memset(out, 0, sizeof(*out));
    const struct hs_image_limits def = hs_image_default_limits();
    lim = lim ? lim : &def;
    const uint8_t *p = data;
    if (n_bytes > lim->max_input_bytes) {
        return hs_error_set(err, HS_E_RANGE, "image is %zu bytes, more than the limit of %zu",
                            n_bytes, lim->max_input_bytes);
    }
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n_bytes >= 8 && memcmp(p, png_sig, 8) == 0) {
        return decode_png(p, n_bytes, lim, out, err);
    }
    if (n_bytes >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        return decode_jpeg(p, n_bytes, lim, out, err);
    }
    return hs_error_set(err, HS_E_FORMAT,
                        "unsupported image format (%zu bytes): PNG and JPEG are supported",
                        n_bytes);
}

/* ---- data: URLs ---- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

hs_status hs_base64_decode(const char *src, size_t n, uint8_t *dst, size_t cap, size_t *n_out)
{
    uint32_t acc = 0;
    int n_bits = 0;
    size_t o = 0;
    size_t n_pad = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)src[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
            continue;
        }
        if (c == '=') {
            n_pad++;
            continue;
        }
        const int v = b64_value(c);
        if (v < 0 || n_pad > 0) { /* nothing but padding after padding */
            return HS_E_INVAL;
        }
        acc = (acc << 6) | (uint32_t)v;
        n_bits += 6;
        if (n_bits >= 8) {
            n_bits -= 8;
            if (o >= cap) {
                return HS_E_RANGE;
            }
            dst[o++] = (uint8_t)(acc >> n_bits);
            acc &= (1u << n_bits) - 1;
        }
    }
    /* 6 leftover bits would be a lone character: no whole byte. */
    if (n_bits >= 6 || n_pad > 2) {
        return HS_E_INVAL;
    }
    *n_out = o;
    return HS_OK;
}

hs_status hs_image_decode_url(const char *url, size_t url_len, bool allow_fetch,
                              const struct hs_image_limits *lim, struct hs_image *out,
                              struct hs_error *err)
{
    hs_error_clear(err);
    memset(out, 0, sizeof(*out));
    const struct hs_image_limits def = hs_image_default_limits();
    lim = lim ? lim : &def;
    if ((url_len >= 7 && strncasecmp(url, "http://", 7) == 0) ||
        (url_len >= 8 && strncasecmp(url, "https://", 8) == 0)) {
        if (!allow_fetch) {
            return hs_error_set(err, HS_E_NOTSUP,
                                "image URLs are not fetched (the server does not allow it): send "
                                "the image inline as a data:image/png;base64,... URL");
        }
        return hs_error_set(err, HS_E_NOTSUP,
                            "fetching http(s) image URLs is not implemented: send the image "
                            "inline as a data:image/png;base64,... URL");
    }
    if (url_len < 5 || strncasecmp(url, "data:", 5) != 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "image URL must be a data: URL (data:image/png;base64,...)");
    }
    const char *comma = memchr(url, ',', url_len);
    if (!comma) {
        return hs_error_set(err, HS_E_INVAL, "data: URL has no ',' before its data");
    }
    const size_t n_meta = (size_t)(comma - url);
    if (n_meta < 12 || strncasecmp(comma - 7, ";base64", 7) != 0) {
        return hs_error_set(err, HS_E_INVAL,
                            "data: URL must be base64 (data:image/png;base64,...)");
    }
    const char *b64 = comma + 1;
    const size_t n_b64 = url_len - n_meta - 1;
    const size_t cap = n_b64 / 4 * 3 + 3;
    if (cap > lim->max_input_bytes + 3) {
        return hs_error_set(err, HS_E_RANGE,
                            "image data is about %zu bytes, more than the limit of %zu",
                            n_b64 / 4 * 3, lim->max_input_bytes);
    }
    uint8_t *bytes = malloc(cap);
    if (!bytes) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory for %zu bytes of image", cap);
    }
    size_t n_bytes = 0;
    hs_status st = hs_base64_decode(b64, n_b64, bytes, cap, &n_bytes);
    if (st != HS_OK) {
        free(bytes);
        return hs_error_set(err, HS_E_INVAL, "image data URL is not valid base64");
    }
    st = hs_image_decode(bytes, n_bytes, lim, out, err);
    free(bytes);
    return st;
}
