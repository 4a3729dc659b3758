/* common/buf.h: the growable byte buffer (text with a NUL after it, zero padding, consuming from
 * the front) and the array grower, including the failures that must end as HS_E_NOMEM. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

Test(buf, appends_text_with_a_nul_after_it)
{
    struct hs__buf b = {0};
    cr_assert_eq(hs__buf_add(&b, "ab", 2), HS_OK);
    cr_assert_eq(hs__buf_puts(&b, "cd"), HS_OK);
    cr_assert_eq(hs__buf_putc(&b, 'e'), HS_OK);
    cr_assert_eq(hs__buf_printf(&b, "%d-%s", 42, "x"), HS_OK);
    cr_assert_eq(b.len, 9);
    cr_assert_str_eq(b.p, "abcde42-x");
    cr_assert_geq(b.cap, b.len + 1);
    hs__buf_free(&b);
    cr_assert(b.p == NULL && b.len == 0 && b.cap == 0 && !b.oom);
}

Test(buf, printf_longer_than_the_stack_copy_is_whole)
{
    char *big = malloc(2001);
    cr_assert_not_null(big);
    for (int i = 0; i < 2000; i++) {
        big[i] = (char)('a' + i % 26);
    }
    big[2000] = '\0';
    struct hs__buf b = {0};
    cr_assert_eq(hs__buf_puts(&b, "<"), HS_OK);
    cr_assert_eq(hs__buf_printf(&b, "%s>", big), HS_OK);
    cr_assert_eq(b.len, 2002);
    cr_assert(b.p[0] == '<' && b.p[2001] == '>' && b.p[2002] == '\0');
    cr_assert(!memcmp(b.p + 1, big, 2000));
    hs__buf_free(&b);
    free(big);
}

Test(buf, null_source_pads_with_zero_bytes)
{
    struct hs__buf b = {0};
    cr_assert_eq(hs__buf_add(&b, "GGUF", 4), HS_OK);
    cr_assert_eq(hs__buf_add(&b, NULL, 28), HS_OK);
    cr_assert_eq(b.len, 32);
    for (size_t i = 4; i < 32; i++) {
        cr_assert_eq(b.p[i], 0, "byte %zu", i);
    }
    hs__buf_free(&b);
}

Test(buf, consume_moves_the_rest_to_the_front_and_clear_empties)
{
    struct hs__buf b = {0};
    cr_assert_eq(hs__buf_puts(&b, "hello world"), HS_OK);
    hs__buf_consume(&b, 6);
    cr_assert_eq(b.len, 5);
    cr_assert_str_eq(b.p, "world");
    hs__buf_consume(&b, 0);
    cr_assert_str_eq(b.p, "world");
    const size_t cap = b.cap;
    hs__buf_clear(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_str_eq(b.p, "");
    cr_assert_eq(b.cap, cap, "clear keeps the memory");
    hs__buf_free(&b);
    struct hs__buf empty = {0};
    hs__buf_clear(&empty); /* never added to: nothing to write */
    cr_assert_null(empty.p);
}

Test(buf, a_failed_add_sticks_and_leaves_the_bytes)
{
    struct hs__buf b = {0};
    cr_assert_eq(hs__buf_puts(&b, "kept"), HS_OK);
    cr_assert_eq(hs__buf_add(&b, NULL, SIZE_MAX), HS_E_NOMEM); /* the size overflows */
    cr_assert(b.oom);
    cr_assert_eq(b.len, 4);
    cr_assert_str_eq(b.p, "kept");
    cr_assert_eq(hs__buf_puts(&b, "more"), HS_E_NOMEM, "oom sticks");
    cr_assert_eq(hs__buf_printf(&b, "%d", 1), HS_E_NOMEM);
    cr_assert_eq(b.len, 4);
    hs__buf_free(&b);
}

Test(buf, grow_doubles_and_refuses_sizes_past_size_max)
{
    int32_t *a = NULL;
    size_t cap = 0;
    cr_assert(hs__grow((void **)&a, &cap, 10, sizeof(*a)));
    cr_assert_eq(cap, 16);
    a[15] = 7;
    cr_assert(hs__grow((void **)&a, &cap, 16, sizeof(*a)));
    cr_assert_eq(cap, 16, "room enough: no growth");
    cr_assert(hs__grow((void **)&a, &cap, 17, sizeof(*a)));
    cr_assert_eq(cap, 32);
    cr_assert_eq(a[15], 7, "kept across the realloc");
    int32_t *const before = a;
    cr_assert_not(hs__grow((void **)&a, &cap, SIZE_MAX / 2 + 2, sizeof(*a)));
    cr_assert_not(hs__grow((void **)&a, &cap, SIZE_MAX / 4, sizeof(*a)), "bytes overflow");
    cr_assert(a == before && cap == 32, "a failed grow leaves the array");
    free(a);
}
