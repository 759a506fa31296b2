/* Unit tests: the error table. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "processor/base/error.h"

static void every_code_has_a_distinct_name_and_a_message(void **state) {
    (void)state;
    for (int i = 0; i < SL_ERR__COUNT; i++) {
        assert_non_null(strstr(sl_err_name((sl_err)i), "SL_"));
        assert_true(strlen(sl_err_msg((sl_err)i)) > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(sl_err_name((sl_err)i), sl_err_name((sl_err)j));
    }
    assert_string_equal(sl_err_name(SL_OK), "SL_OK");
    assert_string_equal(sl_err_name(SL_ERR_TIMEOUT), "SL_ERR_TIMEOUT");
}

static void unknown_code_is_named_unknown(void **state) {
    (void)state;
    assert_string_equal(sl_err_name((sl_err)9999), "SL_ERR_UNKNOWN");
    assert_string_equal(sl_err_name((sl_err)-1), "SL_ERR_UNKNOWN");
}

static void fail_formats_truncates_and_returns_the_code(void **state) {
    (void)state;
    char small[8];
    assert_int_equal(sl_fail(small, sizeof(small), SL_ERR_CONFIG, "key %s is bad", "abc"),
                     SL_ERR_CONFIG);
    assert_string_equal(small, "key abc");
    assert_int_equal(sl_fail(NULL, 0, SL_ERR_IO, "ignored"), SL_ERR_IO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_has_a_distinct_name_and_a_message),
        cmocka_unit_test(unknown_code_is_named_unknown),
        cmocka_unit_test(fail_formats_truncates_and_returns_the_code),
    };
    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
