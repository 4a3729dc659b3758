/* The language model the vision references ran (tests/model/data/README.md), for the tests that
 * feed it image rows: tests/model/test-vision.c and tests/server/test-vision-engine.c. */
#ifndef HS_TESTS_MODEL_VISION_LM_H
#define HS_TESTS_MODEL_VISION_LM_H

#include <criterion/criterion.h>
#include <stdbool.h>

#include "model/model.h"

/* Writes hetserve mkmodel --arch ARCH --dim 128 --heads 4 --kv-heads 2 --ffn 256 --vocab 1024
 * --ctx 512 (--image-tokens) to path. */
static inline void write_vision_lm(const char *path, enum hs_arch arch, bool image_tokens)
{
    struct hs_mkmodel_params mp = hs_mkmodel_default_params();
    mp.arch = arch;
    mp.n_embd = 128;
    mp.n_head = 4;
    mp.n_head_kv = 2;
    mp.n_ff = 256;
    mp.n_vocab = 1024;
    mp.n_ctx = 512;
    mp.image_tokens = image_tokens;
    struct hs_error err;
    cr_assert_eq(hs_mkmodel_write(&mp, path, &err), HS_OK, "%s", err.message);
}

#endif
