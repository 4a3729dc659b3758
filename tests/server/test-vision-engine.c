/* Images through the engine (server/mm.c): a request whose prompt holds an image's placeholder
 * span, with the encoder's rows, generates what llama.cpp predicts for the same prompt
 * (tests/model/data/vision-qwen2vl-lm-112x84.txt), differs from the placeholders alone, leaves a
 * text request beside it unchanged, and malformed spans are refused. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/mkproj.h"
#include "model/model.h"
#include "model/vision/vision.h"
#include "server/engine.h"
#include "tests/model/vision-lm.h"

#ifndef HS_VISION_DATA_DIR
#error "HS_VISION_DATA_DIR must be defined by the build"
#endif

#define N_GEN 8

struct fixture {
    char lpath[128], ppath[128];
    struct hs_model *m;
    struct hs_engine *e;
    hs_token prompt[64];
    int n_prompt, img0, n_img, gx, gy;
    float *rows;
    float ref_logits[1024];
};

static void setup(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    struct hs_error err;
    snprintf(f->ppath, sizeof(f->ppath), "/tmp/hs-test-vengine-p-%d.gguf", (int)getpid());
    snprintf(f->lpath, sizeof(f->lpath), "/tmp/hs-test-vengine-l-%d.gguf", (int)getpid());
    struct hs_mkproj_params pp = hs_mkproj_default_params(HS_PROJ_QWEN2VL);
    pp.proj_dim = 128;
    cr_assert_eq(hs_mkproj_write(&pp, f->ppath, &err), HS_OK, "%s", err.message);
    write_vision_lm(f->lpath, HS_ARCH_QWEN2VL, false);

    /* the prompt of the reference: its text tokens around the image's placeholders */
    FILE *fp = fopen(HS_VISION_DATA_DIR "/vision-qwen2vl-lm-112x84.txt", "r");
    cr_assert_not_null(fp);
    int n = 0, n_pos = 0, n_vocab = 0;
    cr_assert_eq(fscanf(fp, " text %d", &n), 1);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(fscanf(fp, "%d", &f->prompt[f->n_prompt++]), 1);
    }
    cr_assert_eq(fscanf(fp, " image %d %d %d %d", &f->n_img, &f->gx, &f->gy, &n_pos), 4);
    f->img0 = f->n_prompt;
    for (int i = 0; i < f->n_img; i++) {
        f->prompt[f->n_prompt++] = 3 + (hs_token)((0x9e3779b9u * (unsigned)(i + 1)) % 1000u);
    }
    cr_assert_eq(fscanf(fp, " text %d", &n), 1);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(fscanf(fp, "%d", &f->prompt[f->n_prompt++]), 1);
    }
    cr_assert_eq(fscanf(fp, " logits %d", &n_vocab), 1);
    cr_assert_eq(n_vocab, 1024);
    for (int i = 0; i < n_vocab; i++) {
        cr_assert_eq(fscanf(fp, "%f", &f->ref_logits[i]), 1);
    }
    fclose(fp);

    /* the image's rows */
    struct hs_vision *v = NULL;
    cr_assert_eq(hs_vision_load(f->ppath, &v, &err), HS_OK, "%s", err.message);
    struct hs_image img = {.nx = 112, .ny = 84, .rgb = malloc(112 * 84 * 3)};
    for (int y = 0; y < 84; y++) {
        for (int x = 0; x < 112; x++) {
            for (int c = 0; c < 3; c++) {
                img.rgb[(y * 112 + x) * 3 + c] =
                    (uint8_t)((x * 7 + y * 13 + c * 50 + (x * y) % 17 * 5) & 255);
            }
        }
    }
    struct hs_vision_input in;
    cr_assert_eq(hs_vision_preprocess(v, &img, &in, &err), HS_OK);
    struct hs_backend_params bp = hs_backend_default_params();
    bp.n_threads = 2;
    struct hs_backend *be = NULL;
    cr_assert_eq(hs_backend_create("cpu", &bp, &be), HS_OK);
    f->rows = malloc((size_t)f->n_img * 128 * sizeof(float));
    cr_assert_eq(hs_vision_encode(v, be, &in, f->rows, &err), HS_OK, "%s", err.message);
    hs_backend_destroy(be);
    hs_vision_input_finish(&in);
    hs_image_finish(&img);
    hs_vision_free(v);

    cr_assert_eq(hs_model_load(f->lpath, &f->m, &err), HS_OK, "%s", err.message);
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = 4;
    p.n_ctx = 128;
    p.n_kv_blocks = 64;
    p.n_batch_tokens = 128;
    p.kv_type = HS_TYPE_F32;
    p.n_threads = 2;
    cr_assert_eq(hs_engine_create(f->m, &p, &f->e, &err), HS_OK, "%s", err.message);
}

static void teardown(struct fixture *f)
{
    hs_engine_destroy(f->e);
    hs_model_destroy(f->m);
    free(f->rows);
    unlink(f->lpath);
    unlink(f->ppath);
}

static struct hs_engine_handle *submit_salted(struct fixture *f, const hs_token *prompt,
                                              int n_prompt, const struct hs_engine_image *im,
                                              int n_images, uint64_t salt)
{
    struct hs_engine_request r;
    hs_engine_request_init(&r);
    r.prompt = prompt;
    r.n_prompt = n_prompt;
    r.max_tokens = N_GEN;
    r.ignore_eos = true;
    r.sampling.temperature = 0;
    r.images = im;
    r.n_images = n_images;
    r.cache_salt = salt;
    struct hs_engine_handle *h = NULL;
    struct hs_error err;
    cr_assert_eq(hs_engine_submit(f->e, &r, &h, &err), HS_OK, "%s", err.message);
    return h;
}

static struct hs_engine_handle *submit(struct fixture *f, const hs_token *prompt, int n_prompt,
                                       const struct hs_engine_image *im, int n_images)
{
    return submit_salted(f, prompt, n_prompt, im, n_images, 0);
}

static int collect(struct hs_engine_handle *h, hs_token *out)
{
    int n = 0;
    struct hs_engine_event ev;
    for (;;) {
        cr_assert_eq(hs_engine_wait(h, &ev, 30000), HS_OK);
        if (ev.type == HS_EVENT_DONE) {
            cr_assert_eq(ev.status, HS_OK);
            break;
        }
        for (int i = 0; i < ev.n_tokens && n < N_GEN; i++) {
            out[n++] = ev.tokens[i];
        }
    }
    hs_engine_release(h);
    return n;
}

Test(vision_engine, image_request_follows_llama_cpp_and_leaves_text_requests_alone)
{
    struct fixture f;
    setup(&f);
    const struct hs_engine_image im = {f.img0, f.n_img, f.gx, f.gy, f.rows};
    /* llama.cpp's next token, and its margin over the runner-up (our logits are within 1.6e-4
     * normalised of its: tests/model/test-vision.c) */
    int best = 0;
    for (int i = 1; i < 1024; i++) {
        best = f.ref_logits[i] > f.ref_logits[best] ? i : best;
    }
    float second = -INFINITY;
    for (int i = 0; i < 1024; i++) {
        second = i != best && f.ref_logits[i] > second ? f.ref_logits[i] : second;
    }
    cr_log_info("llama.cpp's next token %d, margin %.4f", best, f.ref_logits[best] - second);

    hs_token text_alone[N_GEN], with_img[N_GEN], without[N_GEN], text_beside[N_GEN];
    hs_token text_prompt[20];
    for (int i = 0; i < 20; i++) {
        text_prompt[i] = (hs_token)(5 + 37 * i % 900);
    }
    cr_assert_eq(collect(submit(&f, text_prompt, 20, NULL, 0), text_alone), N_GEN);

    /* the image request and a text request in the same steps */
    struct hs_engine_handle *hi = submit(&f, f.prompt, f.n_prompt, &im, 1);
    struct hs_engine_handle *ht = submit(&f, text_prompt, 20, NULL, 0);
    cr_assert_eq(collect(hi, with_img), N_GEN);
    cr_assert_eq(collect(ht, text_beside), N_GEN);
    cr_assert_eq(with_img[0], best, "first token %d, llama.cpp's %d", with_img[0], best);
    cr_assert_eq(memcmp(text_alone, text_beside, sizeof(text_alone)), 0,
                 "a text request beside an image request changed");

    /* the placeholders without the image's rows read differently (another cache namespace:
     * in the same one the prefix cache serves the image's KV for the same placeholder ids,
     * which is why callers derive them from the image's hash) */
    cr_assert_eq(collect(submit_salted(&f, f.prompt, f.n_prompt, NULL, 0, 1), without), N_GEN);
    cr_assert_neq(memcmp(with_img, without, sizeof(with_img)), 0);
    cr_assert_eq(collect(submit(&f, f.prompt, f.n_prompt, NULL, 0), without), N_GEN);
    cr_assert_eq(memcmp(with_img, without, sizeof(with_img)), 0);

    /* the same image again (its KV now cached under the same placeholder ids) */
    hs_token again[N_GEN];
    cr_assert_eq(collect(submit(&f, f.prompt, f.n_prompt, &im, 1), again), N_GEN);
    cr_assert_eq(memcmp(with_img, again, sizeof(again)), 0);
    teardown(&f);
}

Test(vision_engine, malformed_image_spans_are_refused)
{
    struct fixture f;
    setup(&f);
    const struct hs_engine_image bad[] = {
        {f.n_prompt - 4, 12, 4, 3, f.rows}, /* past the prompt */
        {f.img0, 12, 5, 3, f.rows},         /* grid of 15 for 12 tokens */
        {f.img0, 12, 4, 3, NULL},           /* no rows */
        {-1, 12, 4, 3, f.rows},             /* before the prompt */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct hs_engine_request r;
        hs_engine_request_init(&r);
        r.prompt = f.prompt;
        r.n_prompt = f.n_prompt;
        r.images = &bad[i];
        r.n_images = 1;
        struct hs_engine_handle *h = NULL;
        struct hs_error err;
        cr_assert_eq(hs_engine_submit(f.e, &r, &h, &err), HS_E_INVAL, "case %zu", i);
        cr_assert_null(h);
        cr_assert(strstr(err.message, "image 0"), "%s", err.message);
    }
    /* two images out of order */
    const struct hs_engine_image two[] = {{f.img0 + 6, 6, 3, 2, f.rows}, {f.img0, 6, 3, 2, f.rows}};
    struct hs_engine_request r;
    hs_engine_request_init(&r);
    r.prompt = f.prompt;
    r.n_prompt = f.n_prompt;
    r.images = two;
    r.n_images = 2;
    struct hs_engine_handle *h = NULL;
    struct hs_error err;
    cr_assert_eq(hs_engine_submit(f.e, &r, &h, &err), HS_E_INVAL);
    teardown(&f);
}
