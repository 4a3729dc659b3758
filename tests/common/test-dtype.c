#include <criterion/criterion.h>
#include <math.h>

#include "common/common.h"

Test(dtype, row_sizes_match_gguf_block_layouts)
{
    cr_assert_eq(hs_type_row_size(HS_TYPE_F32, 10), 40);
    cr_assert_eq(hs_type_row_size(HS_TYPE_Q8_0, 64), 68);
    cr_assert_eq(hs_type_row_size(HS_TYPE_Q4_K, 512), 288);
    cr_assert_eq(hs_type_row_size(HS_TYPE_Q6_K, 256), 210);
    cr_assert_eq(hs_type_row_size(HS_TYPE_Q8_0, 33), 0, "not a block multiple");
    cr_assert_not(hs_type_is_known(5), "id 5 is a hole in GGML's numbering");
    cr_assert_str_eq(hs_type_str(HS_TYPE_Q4_K), "q4_K");
}

Test(dtype, fp16_round_trips_and_rounds_to_nearest_even)
{
    struct hs_rng rng;
    hs_rng_seed(&rng, 7);
    for (int i = 0; i < 100000; i++) {
        uint16_t h = (uint16_t)hs_rng_next(&rng);
        float f = hs_fp16_to_fp32(h);
        if (isnan(f)) {
            continue;
        }
        cr_assert_eq(hs_fp32_to_fp16(f), h, "h=0x%04x", h);
    }
    cr_assert_eq(hs_fp32_to_fp16(1.0f), 0x3c00);
    /* 1 + 2^-11 is halfway between 1 and the next half: ties to even (1.0). */
    cr_assert_eq(hs_fp32_to_fp16(1.0f + 0x1.0p-11f), 0x3c00);
    cr_assert_eq(hs_fp32_to_fp16(65520.0f), 0x7c00, "overflow to inf");
}

Test(dtype, bf16_rounds_to_nearest_even)
{
    cr_assert_eq(hs_fp32_to_bf16(1.0f), 0x3f80);
    cr_assert_float_eq(hs_bf16_to_fp32(hs_fp32_to_bf16(3.140625f)), 3.140625f, 0);
}
