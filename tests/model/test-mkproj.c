/* The projector writer: llama.cpp's clip layout (keys and tensor names and shapes it loads). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gguf/gguf.h"
#include "model/mkproj.h"

static struct hs_gguf *write_and_open(const struct hs_mkproj_params *p, char *path, size_t n)
{
    snprintf(path, n, "/tmp/hs-test-mkproj-%d-%d.gguf", (int)getpid(), (int)p->type);
    struct hs_error err = {0};
    cr_assert_eq(hs_mkproj_write(p, path, &err), HS_OK, "%s", err.message);
    struct hs_gguf *g = NULL;
    cr_assert_eq(hs_gguf_open(path, &g, &err), HS_OK, "%s", err.message);
    return g;
}

static void assert_str(const struct hs_gguf *g, const char *key, const char *want)
{
    struct hs_gguf_str s = {0};
    cr_assert_eq(hs_gguf_get_str(g, key, &s), HS_OK, "%s", key);
    cr_assert(s.len == strlen(want) && !memcmp(s.data, want, s.len), "%s", key);
}

static void assert_shape(const struct hs_gguf *g, const char *name, int64_t n0, int64_t n1,
                         int64_t n2, int64_t n3)
{
    const struct hs_gguf_tensor *t = hs_gguf_find_tensor(g, name);
    cr_assert_not_null(t, "%s missing", name);
    cr_assert(t->ne[0] == n0 && t->ne[1] == n1 && t->ne[2] == n2 && t->ne[3] == n3,
              "%s is [%lld %lld %lld %lld]", name, (long long)t->ne[0], (long long)t->ne[1],
              (long long)t->ne[2], (long long)t->ne[3]);
}

Test(mkproj, qwen2vl_has_the_clip_layout)
{
    struct hs_mkproj_params p = hs_mkproj_default_params(HS_PROJ_QWEN2VL);
    p.proj_dim = 96;
    char path[128];
    struct hs_gguf *g = write_and_open(&p, path, sizeof(path));
    assert_str(g, "general.architecture", "clip");
    assert_str(g, "clip.projector_type", "qwen2vl_merger");
    int64_t v = 0;
    cr_assert_eq(hs_gguf_get_int(g, "clip.vision.projection_dim", &v), HS_OK);
    cr_assert_eq(v, 96);
    cr_assert_eq(hs_gguf_get_int(g, "clip.vision.patch_size", &v), HS_OK);
    cr_assert_eq(v, 14);
    assert_shape(g, "v.patch_embd.weight", 14, 14, 3, 64);
    assert_shape(g, "v.patch_embd.weight.1", 14, 14, 3, 64);
    assert_shape(g, "v.blk.1.attn_q.weight", 64, 64, 1, 1);
    assert_shape(g, "v.blk.1.ln2.bias", 64, 1, 1, 1);
    assert_shape(g, "mm.0.weight", 256, 256, 1, 1);
    assert_shape(g, "mm.2.weight", 256, 96, 1, 1);
    cr_assert_null(hs_gguf_find_tensor(g, "v.blk.0.ffn_gate.weight"));
    cr_assert_null(hs_gguf_find_tensor(g, "v.blk.2.ln1.weight"));
    hs_gguf_close(g);
    unlink(path);
}

Test(mkproj, qwen25vl_uses_rms_norm_gate_and_windows)
{
    struct hs_mkproj_params p = hs_mkproj_default_params(HS_PROJ_QWEN25VL);
    char path[128];
    struct hs_gguf *g = write_and_open(&p, path, sizeof(path));
    assert_str(g, "clip.projector_type", "qwen2.5vl_merger");
    int64_t v = 0;
    cr_assert_eq(hs_gguf_get_int(g, "clip.vision.n_wa_pattern", &v), HS_OK);
    cr_assert_eq(v, 2);
    /* llama.cpp's window is a fixed 112 px for Qwen2.5-VL: no key, as its converter writes */
    cr_assert_eq(hs_gguf_get_int(g, "clip.vision.window_size", &v), HS_E_NOENT);
    assert_shape(g, "v.blk.0.ffn_gate.weight", 64, 128, 1, 1);
    cr_assert_null(hs_gguf_find_tensor(g, "v.blk.0.ln1.bias"));
    cr_assert_null(hs_gguf_find_tensor(g, "v.post_ln.bias"));
    hs_gguf_close(g);
    unlink(path);
}

Test(mkproj, idefics3_has_positions_and_a_shuffle_projection)
{
    struct hs_mkproj_params p = hs_mkproj_default_params(HS_PROJ_IDEFICS3);
    char path[128];
    struct hs_gguf *g = write_and_open(&p, path, sizeof(path));
    assert_str(g, "clip.projector_type", "idefics3");
    assert_shape(g, "v.position_embd.weight", 64, 16, 1, 1); /* (56 / 14)^2 patches */
    assert_shape(g, "v.patch_embd.bias", 64, 1, 1, 1);
    assert_shape(g, "mm.model.fc.weight", 64 * 4, 64, 1, 1);
    hs_gguf_close(g);
    unlink(path);
}

Test(mkproj, rejects_shapes_llama_cpp_cannot_run)
{
    struct hs_error err = {0};
    struct hs_mkproj_params p = hs_mkproj_default_params(HS_PROJ_QWEN2VL);
    p.image_size = 60; /* not a multiple of patch 14 x merge 2 */
    cr_assert_eq(hs_mkproj_write(&p, "/tmp/hs-test-mkproj-never.gguf", &err), HS_E_INVAL);
    cr_assert(strstr(err.message, "multiple") != NULL, "%s", err.message);
    p = hs_mkproj_default_params(HS_PROJ_QWEN2VL);
    p.n_head = 32; /* head dim 2: the 2D RoPE needs a multiple of 4 */
    cr_assert_eq(hs_mkproj_write(&p, "/tmp/hs-test-mkproj-never.gguf", &err), HS_E_INVAL);
    cr_assert_eq(access("/tmp/hs-test-mkproj-never.gguf", F_OK), -1);
    cr_assert_eq(hs_proj_type_from_str("qwen2.5vl_merger"), HS_PROJ_QWEN25VL);
    cr_assert_eq(hs_proj_type_from_str("qwen25vl"), HS_PROJ_QWEN25VL);
    cr_assert_eq(hs_proj_type_from_str("llava"), HS_PROJ_COUNT);
}
