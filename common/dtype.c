#include "common/dtype.h"

static const struct hs_type_traits type_traits[HS_TYPE_COUNT] = {
    [HS_TYPE_F32] = {"f32", 1, sizeof(float), true},
    [HS_TYPE_F16] = {"f16", 1, sizeof(uint16_t), true},
    [HS_TYPE_Q4_0] = {"q4_0", 32, sizeof(struct hs_block_q4_0), true},
    [HS_TYPE_Q4_1] = {"q4_1", 32, sizeof(struct hs_block_q4_1), true},
    [HS_TYPE_Q5_0] = {"q5_0", 32, sizeof(struct hs_block_q5_0), true},
    [HS_TYPE_Q5_1] = {"q5_1", 32, sizeof(struct hs_block_q5_1), true},
    [HS_TYPE_Q8_0] = {"q8_0", 32, sizeof(struct hs_block_q8_0), true},
    [HS_TYPE_Q8_1] = {"q8_1", 32, sizeof(struct hs_block_q8_1), false},
    [HS_TYPE_Q2_K] = {"q2_K", HS_QK_K, 84, false},
    [HS_TYPE_Q3_K] = {"q3_K", HS_QK_K, 110, false},
    [HS_TYPE_Q4_K] = {"q4_K", HS_QK_K, sizeof(struct hs_block_q4_k), true},
    [HS_TYPE_Q5_K] = {"q5_K", HS_QK_K, sizeof(struct hs_block_q5_k), true},
    [HS_TYPE_Q6_K] = {"q6_K", HS_QK_K, sizeof(struct hs_block_q6_k), true},
    [HS_TYPE_Q8_K] = {"q8_K", HS_QK_K, sizeof(struct hs_block_q8_k), false},
    [HS_TYPE_I8] = {"i8", 1, 1, false},
    [HS_TYPE_I16] = {"i16", 1, 2, false},
    [HS_TYPE_I32] = {"i32", 1, 4, false},
    [HS_TYPE_I64] = {"i64", 1, 8, false},
    [HS_TYPE_F64] = {"f64", 1, 8, false},
    [HS_TYPE_BF16] = {"bf16", 1, sizeof(uint16_t), true},
};

_Static_assert(sizeof(struct hs_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(struct hs_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(struct hs_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(struct hs_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(struct hs_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(struct hs_block_q8_1) == 36, "q8_1 block");
_Static_assert(sizeof(struct hs_block_q4_k) == 144, "q4_K block");
_Static_assert(sizeof(struct hs_block_q5_k) == 176, "q5_K block");
_Static_assert(sizeof(struct hs_block_q6_k) == 210, "q6_K block");
_Static_assert(sizeof(struct hs_block_q8_k) == 292, "q8_K block");

bool hs_type_is_known(uint32_t t)
{
    return t < HS_TYPE_COUNT && type_traits[t].name != NULL;
}

const struct hs_type_traits *hs_type_traits(enum hs_type t)
{
    static const struct hs_type_traits unknown = {0};
    return hs_type_is_known((uint32_t)t) ? &type_traits[t] : &unknown;
}

const char *hs_type_str(enum hs_type t)
{
    const struct hs_type_traits *tr = hs_type_traits(t);
    return tr->name ? tr->name : "unknown";
}

size_t hs_type_row_size(enum hs_type t, int64_t n)
{
    const struct hs_type_traits *tr = hs_type_traits(t);
    if (!tr->name || n < 0 || n % tr->blck_size != 0) {
        return 0;
    }
    return (size_t)(n / tr->blck_size) * tr->type_size;
}
