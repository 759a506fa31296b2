/* Unit tests: W3C trace context (processor/base/trace.c) and the trace id
 * in log lines. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "processor/base/log.h"
#include "processor/base/trace.h"

#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"
#define VALID    "00-" TRACE_ID "-00f067aa0ba902b7-01"

static bool valid(const char *s) {
    return sl_traceparent_valid(s, strlen(s));
}

/* The spec's examples and its rules for what a receiver must refuse. */
static void traceparents_are_checked_as_the_spec_says(void **state) {
    (void)state;
    assert_true(valid(VALID));
    assert_true(valid("00-" TRACE_ID "-00f067aa0ba902b7-00"));
    assert_true(valid("00-" TRACE_ID "-00f067aa0ba902b7-ff")); /* unknown flags: kept out later */
    /* a later version: its first 55 characters, then nothing or '-' */
    assert_true(valid("01-" TRACE_ID "-00f067aa0ba902b7-01"));
    assert_true(valid("01-" TRACE_ID "-00f067aa0ba902b7-01-what-comes-next"));
    const char *bad[] = {
        "",
        "00-" TRACE_ID "-00f067aa0ba902b7",     /* short */
        "00-" TRACE_ID "-00f067aa0ba902b7-01-", /* version 00 is exact */
        "00-" TRACE_ID "-00f067aa0ba902b7-011",
        "01-" TRACE_ID "-00f067aa0ba902b7-01x",                    /* no '-' after */
        "ff-" TRACE_ID "-00f067aa0ba902b7-01",                     /* forbidden version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-" TRACE_ID "-0000000000000000-01",                     /* zero parent id */
        "00_" TRACE_ID "-00f067aa0ba902b7-01",
        "00-" TRACE_ID "_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "0x-" TRACE_ID "-00f067aa0ba902b7-01",
        " 00-" TRACE_ID "-00f067aa0ba902b7-0",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (valid(bad[i]))
            fail_msg("accepted: \"%s\"", bad[i]);
    assert_false(sl_traceparent_valid(NULL, 55));
    /* length is what counts, not a NUL */
    assert_true(sl_traceparent_valid(VALID "garbage", 55));
}

static void a_child_keeps_the_trace_and_the_sampled_flag_with_a_new_span(void **state) {
    (void)state;
    char a[SL_TRACEPARENT_LEN + 1], b[SL_TRACEPARENT_LEN + 1];
    sl_trace_child(VALID, strlen(VALID), a);
    sl_trace_child(VALID, strlen(VALID), b);
    assert_true(valid(a));
    assert_memory_equal(a, "00-" TRACE_ID "-", 36);
    assert_memory_not_equal(a + 36, "00f067aa0ba902b7", 16);
    assert_memory_not_equal(a + 36, b + 36, 16); /* every span is new */
    assert_string_equal(a + 52, "-01");
    /* only the sampled bit passes on; a later version comes out as 00 */
    const char *later = "7f-" TRACE_ID "-00f067aa0ba902b7-fe-more";
    sl_trace_child(later, strlen(later), a);
    assert_true(valid(a));
    assert_memory_equal(a, "00-" TRACE_ID "-", 36);
    assert_string_equal(a + 52, "-00");
    /* nothing valid: a new trace, not sampled */
    const char *broken = "00-" TRACE_ID "-0000000000000000-01";
    sl_trace_child(broken, strlen(broken), a);
    sl_trace_child(NULL, 0, b);
    assert_true(valid(a) && valid(b));
    assert_memory_not_equal(a + 3, TRACE_ID, 32);
    assert_memory_not_equal(a + 3, b + 3, 32);
    assert_string_equal(a + 52, "-00");
}

static char last_line[1100];

static void capture(void *opaque, sl_log_level level, const char *component, const char *line) {
    (void)opaque, (void)level, (void)component;
    snprintf(last_line, sizeof(last_line), "%s", line);
}

/* The thread's trace: set, read, cleared (also by an invalid value); log
 * lines name it, even when the message fills the line. */
static void log_lines_name_the_current_trace(void **state) {
    (void)state;
    sl_logger logger = {.fn = capture, .level = SL_LOG_DEBUG};
    assert_null(sl_trace_current());
    sl_log(&logger, SL_LOG_INFO, "test", "no trace %d", 1);
    assert_string_equal(last_line, "no trace 1");
    sl_trace_set_current(VALID);
    assert_string_equal(sl_trace_current(), VALID);
    sl_log(&logger, SL_LOG_INFO, "test", "in a trace %d", 2);
    assert_string_equal(last_line, "in a trace 2 trace=" TRACE_ID);
    char long_text[2000];
    memset(long_text, 'x', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    sl_log(&logger, SL_LOG_INFO, "test", "%s", long_text);
    size_t n = strlen(last_line);
    assert_true(n < 1024);
    assert_string_equal(last_line + n - 39, " trace=" TRACE_ID);
    sl_trace_set_current("not a traceparent");
    assert_null(sl_trace_current());
    sl_trace_set_current(VALID);
    sl_trace_set_current(NULL);
    assert_null(sl_trace_current());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(traceparents_are_checked_as_the_spec_says),
        cmocka_unit_test(a_child_keeps_the_trace_and_the_sampled_flag_with_a_new_span),
        cmocka_unit_test(log_lines_name_the_current_trace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
