#include <criterion/criterion.h>
#include <ctype.h>
#include <string.h>

#include "common/common.h"

Test(status, names_and_messages_cover_every_code)
{
    cr_assert_str_eq(hs_status_name(HS_OK), "OK");
    cr_assert_str_eq(hs_status_name(HS_E_NOMEM), "E_NOMEM");
    cr_assert_str_eq(hs_status_str(HS_E_FORMAT), "malformed input");
    cr_assert_str_eq(hs_status_name((hs_status)-999), "UNKNOWN");
}

Test(status, error_set_at_appends_offset)
{
    struct hs_error err;
    hs_status st = hs_error_set_at(&err, HS_E_FORMAT, 42, "bad %s", "magic");
    cr_assert_eq(st, HS_E_FORMAT);
    cr_assert_eq(err.offset, 42);
    cr_assert_str_eq(err.message, "bad magic (at byte offset 42)");
}

Test(common, hex_digit_reads_both_cases_and_refuses_the_rest)
{
    const char *digits = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(hs_hex_digit(digits[i]), i);
        cr_assert_eq(hs_hex_digit(toupper((unsigned char)digits[i])), i);
    }
    for (int c = -1; c < 256; c++) {
        if (!isxdigit(c)) {
            cr_assert_eq(hs_hex_digit(c), -1, "%d", c);
        }
    }
}
