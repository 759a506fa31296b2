/* Unit tests: the metrics registry and its Prometheus text rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/http/server.h"
#include "processor/base/metrics.h"
#include "processor/http/metrics.h"
#include "tests/support/testutil.h"

#define OWN_COUNTERS                                                                               \
    "# HELP sluice_metrics_series_dropped_total Series not registered because the registry "       \
    "was full (max_series) or out of memory; their updates are lost.\n"                            \
    "# TYPE sluice_metrics_series_dropped_total counter\n"                                         \
    "sluice_metrics_series_dropped_total 0\n"                                                      \
    "# HELP sluice_metrics_misuse_total Metric registrations rejected as invalid (metric or "      \
    "label name, histogram bounds) or conflicting with an earlier registration of the same "       \
    "name.\n"                                                                                      \
    "# TYPE sluice_metrics_misuse_total counter\n"                                                 \
    "sluice_metrics_misuse_total 0\n"

#define THREADS    4
#define ITERATIONS 100000

/* One registry per test; the last rendering is freed by the teardown even if
 * an assertion fails. */
typedef struct fixture {
    sl_metrics *m;
    char *text;
} fixture;

static size_t default_max_series = 100, two_series = 2;

static int setup(void **state) {
    const size_t *max_series = *state ? *state : &default_max_series;
    fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    fx->m = sl_metrics_new(*max_series);
    if (!fx->m) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    sl_metrics_destroy(fx->m);
    free(fx->text);
    free(fx);
    return 0;
}

/* The whole rendering (owned by the fixture, valid until the next call). */
static const char *render_all(fixture *fx) {
    free(fx->text);
    fx->text = NULL;
    size_t len = 0;
    assert_int_equal(sl_metrics_render(fx->m, &fx->text, &len), SL_OK);
    assert_non_null(fx->text);
    assert_int_equal(strlen(fx->text), len);
    return fx->text;
}

/* The rendering without the registry's own two families (their six lines
 * come first): what the caller registered. */
static const char *render_caller_series(fixture *fx) {
    const char *text = render_all(fx);
    for (int line = 0; line < 6; line++) {
        text = strchr(text, '\n');
        assert_non_null(text);
        text++;
    }
    return text;
}

static void new_registry_renders_only_its_own_counters(void **state) {
    assert_string_equal(render_all(*state), OWN_COUNTERS);
}

static void counter_renders_its_value_as_an_integer(void **state) {
    fixture *fx = *state;
    const char *labels[] = {"queue", "orders", NULL};
    sl_counter *jobs = sl_metrics_counter(fx->m, "jobs_total", "Jobs done.", labels);
    sl_counter_add(jobs, 3);
    sl_counter_add(jobs, 4);
    assert_string_equal(render_caller_series(fx), "# HELP jobs_total Jobs done.\n"
                                                  "# TYPE jobs_total counter\n"
                                                  "jobs_total{queue=\"orders\"} 7\n");
}

static void gauge_renders_set_and_added_values(void **state) {
    fixture *fx = *state;
    sl_gauge *temperature = sl_metrics_gauge(fx->m, "temperature_celsius", "Temperature.", NULL);
    sl_gauge_set(temperature, 20.5);
    sl_gauge_add(temperature, -0.25);
    assert_string_equal(render_caller_series(fx), "# HELP temperature_celsius Temperature.\n"
                                                  "# TYPE temperature_celsius gauge\n"
                                                  "temperature_celsius 20.25\n");
}

static void histogram_renders_cumulative_buckets_then_sum_and_count(void **state) {
    fixture *fx = *state;
    const char *labels[] = {"op", "get", NULL};
    const double bounds[] = {0.1, 1, 10};
    sl_histogram *latency =
        sl_metrics_histogram(fx->m, "latency_seconds", "Latency.", labels, bounds, 3);
    const double observations[] = {0.0625, 1 /* on a bound: that bucket */, 0.5, 5, 50};
    for (size_t i = 0; i < 5; i++)
        sl_histogram_observe(latency, observations[i]);
    assert_string_equal(render_caller_series(fx),
                        "# HELP latency_seconds Latency.\n"
                        "# TYPE latency_seconds histogram\n"
                        "latency_seconds_bucket{op=\"get\",le=\"0.1\"} 1\n"
                        "latency_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
                        "latency_seconds_bucket{op=\"get\",le=\"10\"} 4\n"
                        "latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 5\n"
                        "latency_seconds_sum{op=\"get\"} 56.5625\n"
                        "latency_seconds_count{op=\"get\"} 5\n");
}

static void histogram_without_labels_has_only_le_in_braces(void **state) {
    fixture *fx = *state;
    const double bounds[] = {2.5};
    sl_histogram *size = sl_metrics_histogram(fx->m, "batch_size", "Batch size.", NULL, bounds, 1);
    sl_histogram_observe(size, 3);
    assert_string_equal(render_caller_series(fx), "# HELP batch_size Batch size.\n"
                                                  "# TYPE batch_size histogram\n"
                                                  "batch_size_bucket{le=\"2.5\"} 0\n"
                                                  "batch_size_bucket{le=\"+Inf\"} 1\n"
                                                  "batch_size_sum 3\n"
                                                  "batch_size_count 1\n");
}

static void nan_observation_counts_only_in_the_inf_bucket(void **state) {
    fixture *fx = *state;
    const double bounds[] = {1};
    sl_histogram *h = sl_metrics_histogram(fx->m, "h", "H.", NULL, bounds, 1);
    sl_histogram_observe(h, NAN);
    assert_string_equal(render_caller_series(fx), "# HELP h H.\n"
                                                  "# TYPE h histogram\n"
                                                  "h_bucket{le=\"1\"} 0\n"
                                                  "h_bucket{le=\"+Inf\"} 1\n"
                                                  "h_sum NaN\n"
                                                  "h_count 1\n");
}

static void same_name_and_labels_return_the_same_series(void **state) {
    fixture *fx = *state;
    const char *labels[] = {"topic", "orders", "partition", "3", NULL};
    sl_counter *first = sl_metrics_counter(fx->m, "records_total", "Records.", labels);
    sl_counter *again = sl_metrics_counter(fx->m, "records_total", "Records.", labels);
    assert_ptr_equal(first, again);
    const char *other_partition[] = {"topic", "orders", "partition", "4", NULL};
    assert_ptr_not_equal(first,
                         sl_metrics_counter(fx->m, "records_total", "Records.", other_partition));
}

static void labels_given_in_another_order_name_the_same_series(void **state) {
    fixture *fx = *state;
    const char *labels[] = {"topic", "orders", "partition", "3", NULL};
    const char *swapped[] = {"partition", "3", "topic", "orders", NULL};
    sl_gauge *first = sl_metrics_gauge(fx->m, "lag", "Lag.", labels);
    assert_ptr_equal(sl_metrics_gauge(fx->m, "lag", "Lag.", swapped), first);
}

static void series_with_different_label_values_share_one_help_and_type(void **state) {
    fixture *fx = *state;
    const char *p0[] = {"partition", "0", NULL};
    const char *p1[] = {"partition", "1", NULL};
    sl_counter_add(sl_metrics_counter(fx->m, "records_total", "Records.", p0), 10);
    sl_counter_add(sl_metrics_counter(fx->m, "records_total", "Records.", p1), 20);
    assert_string_equal(render_caller_series(fx), "# HELP records_total Records.\n"
                                                  "# TYPE records_total counter\n"
                                                  "records_total{partition=\"0\"} 10\n"
                                                  "records_total{partition=\"1\"} 20\n");
}

static void families_render_in_order_of_first_registration(void **state) {
    fixture *fx = *state;
    const char *p0[] = {"partition", "0", NULL};
    const char *p1[] = {"partition", "1", NULL};
    sl_metrics_counter(fx->m, "b_total", "B.", p0);
    sl_metrics_gauge(fx->m, "a", "A.", NULL);
    sl_metrics_counter(fx->m, "b_total", "B.", p1);
    assert_string_equal(render_caller_series(fx), "# HELP b_total B.\n"
                                                  "# TYPE b_total counter\n"
                                                  "b_total{partition=\"0\"} 0\n"
                                                  "b_total{partition=\"1\"} 0\n"
                                                  "# HELP a A.\n"
                                                  "# TYPE a gauge\n"
                                                  "a 0\n");
}

static void label_values_are_escaped(void **state) {
    fixture *fx = *state;
    const char *labels[] = {"key", "a\\b\"c\nd", NULL};
    sl_metrics_counter(fx->m, "keys_total", "Keys.", labels);
    assert_string_equal(render_caller_series(fx), "# HELP keys_total Keys.\n"
                                                  "# TYPE keys_total counter\n"
                                                  "keys_total{key=\"a\\\\b\\\"c\\nd\"} 0\n");
}

static void help_text_escapes_backslash_and_newline_only(void **state) {
    fixture *fx = *state;
    sl_metrics_gauge(fx->m, "g", "first line\nback\\slash \"quoted\"", NULL);
    assert_string_equal(render_caller_series(fx), "# HELP g first line\\nback\\\\slash \"quoted\"\n"
                                                  "# TYPE g gauge\n"
                                                  "g 0\n");
}

static void long_label_value_is_truncated_at_a_character_boundary(void **state) {
    fixture *fx = *state;
    /* 255 bytes of 'x' then a 2-byte 'é': the 'é' would cross the cap. */
    char value[SL_METRICS_MAX_LABEL_VALUE + 8];
    memset(value, 'x', SL_METRICS_MAX_LABEL_VALUE - 1);
    memcpy(value + SL_METRICS_MAX_LABEL_VALUE - 1, "\xc3\xa9tail", sizeof("\xc3\xa9tail"));
    const char *labels[] = {"key", value, NULL};
    sl_metrics_counter(fx->m, "c_total", "C.", labels);
    char expected[512];
    snprintf(expected, sizeof(expected),
             "# HELP c_total C.\n# TYPE c_total counter\nc_total{key=\"%.*s\"} 0\n",
             SL_METRICS_MAX_LABEL_VALUE - 1, value);
    assert_string_equal(render_caller_series(fx), expected);
}

static void values_equal_up_to_the_cap_name_one_series(void **state) {
    fixture *fx = *state;
    char a[SL_METRICS_MAX_LABEL_VALUE + 2], b[SL_METRICS_MAX_LABEL_VALUE + 2];
    memset(a, 'v', sizeof(a) - 1);
    memcpy(b, a, sizeof(b));
    a[sizeof(a) - 2] = 'a';
    a[sizeof(a) - 1] = '\0';
    b[sizeof(b) - 2] = 'b';
    b[sizeof(b) - 1] = '\0';
    const char *labels_a[] = {"key", a, NULL};
    const char *labels_b[] = {"key", b, NULL};
    assert_ptr_equal(sl_metrics_counter(fx->m, "c_total", "C.", labels_a),
                     sl_metrics_counter(fx->m, "c_total", "C.", labels_b));
}

static void invalid_utf8_in_a_label_value_becomes_question_marks(void **state) {
    fixture *fx = *state;
    /* a stray byte, a truncated sequence, an overlong '/', a surrogate */
    const char *labels[] = {"key", "ok\xff|\xc3(|\xc0\xaf|\xed\xa0\x80|\xe2\x82\xac", NULL};
    sl_metrics_counter(fx->m, "c_total", "C.", labels);
    assert_string_equal(render_caller_series(fx),
                        "# HELP c_total C.\n"
                        "# TYPE c_total counter\n"
                        "c_total{key=\"ok?|?(|??|???|\xe2\x82\xac\"} 0\n");
}

static void invalid_metric_names_return_the_sink_and_are_not_rendered(void **state) {
    fixture *fx = *state;
    char too_long[SL_METRICS_MAX_NAME + 2];
    memset(too_long, 'n', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    const char *invalid[] = {"", "1abc", "a-b", "a b", "é", too_long};
    sl_counter *sink = sl_metrics_counter(fx->m, NULL, "No name.", NULL);
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        assert_ptr_equal(sl_metrics_counter(fx->m, invalid[i], "Bad.", NULL), sink);
    sl_counter_add(sink, 5); /* harmless */
    assert_non_null(strstr(render_all(fx), "\nsluice_metrics_misuse_total 7\n"));
    assert_string_equal(render_caller_series(fx), "");
    too_long[SL_METRICS_MAX_NAME] = '\0'; /* exactly at the limit: valid */
    assert_ptr_not_equal(sl_metrics_counter(fx->m, too_long, "Long.", NULL), sink);
    assert_ptr_not_equal(sl_metrics_counter(fx->m, "ns:sub_total", "Colons.", NULL), sink);
}

static void invalid_label_names_return_the_sink_and_are_not_rendered(void **state) {
    fixture *fx = *state;
    const char *reserved[] = {"__name", "x", NULL};
    const char *digit_first[] = {"1x", "x", NULL};
    const char *dash[] = {"a-b", "x", NULL};
    const char *colon[] = {"a:b", "x", NULL};
    const char *empty[] = {"", "x", NULL};
    const char *no_value[] = {"a", NULL};
    const char *duplicate[] = {"a", "1", "a", "2", NULL};
    const char *const *invalid[] = {reserved, digit_first, dash, colon, empty, no_value, duplicate};
    sl_gauge *sink = sl_metrics_gauge(fx->m, "g", "G.", reserved);
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        assert_ptr_equal(sl_metrics_gauge(fx->m, "g", "G.", invalid[i]), sink);
    assert_non_null(strstr(render_all(fx), "\nsluice_metrics_misuse_total 8\n"));
    assert_string_equal(render_caller_series(fx), "");
}

static void too_many_labels_return_the_sink(void **state) {
    fixture *fx = *state;
    char names[SL_METRICS_MAX_LABELS + 1][16];
    const char *labels[2 * (SL_METRICS_MAX_LABELS + 1) + 1];
    for (unsigned i = 0; i <= SL_METRICS_MAX_LABELS; i++) {
        snprintf(names[i], sizeof(names[i]), "l%u", i);
        labels[2 * i] = names[i];
        labels[2 * i + 1] = "v";
    }
    labels[2 * SL_METRICS_MAX_LABELS] = NULL; /* exactly the maximum: fine */
    sl_counter *at_max = sl_metrics_counter(fx->m, "wide_total", "Wide.", labels);
    labels[2 * SL_METRICS_MAX_LABELS] = names[SL_METRICS_MAX_LABELS];
    labels[2 * SL_METRICS_MAX_LABELS + 2] = NULL;
    sl_counter *over = sl_metrics_counter(fx->m, "wider_total", "Wider.", labels);
    assert_ptr_not_equal(at_max, over);
    assert_ptr_equal(over, sl_metrics_counter(fx->m, "1", "Sink.", NULL));
}

static void le_label_on_a_histogram_returns_the_sink(void **state) {
    fixture *fx = *state;
    const char *labels[] = {"le", "1", NULL};
    sl_histogram *sink = sl_metrics_histogram(fx->m, "1", "Sink.", NULL, NULL, 0);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", labels, NULL, 0), sink);
    assert_ptr_not_equal(sl_metrics_counter(fx->m, "c_total", "le is fine here.", labels),
                         sl_metrics_counter(fx->m, "1", "Sink.", NULL));
}

static void invalid_histogram_bounds_return_the_sink(void **state) {
    fixture *fx = *state;
    const double decreasing[] = {2, 1};
    const double equal[] = {1, 1};
    const double with_nan[] = {1, NAN};
    const double with_inf[] = {1, INFINITY};
    double too_many[SL_METRICS_MAX_BOUNDS + 1];
    for (size_t i = 0; i < SL_METRICS_MAX_BOUNDS + 1; i++)
        too_many[i] = (double)i;
    sl_histogram *sink = sl_metrics_histogram(fx->m, "h", "H.", NULL, decreasing, 2);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", NULL, equal, 2), sink);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", NULL, with_nan, 2), sink);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", NULL, with_inf, 2), sink);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", NULL, NULL, 1), sink);
    assert_ptr_equal(
        sl_metrics_histogram(fx->m, "h", "H.", NULL, too_many, SL_METRICS_MAX_BOUNDS + 1), sink);
    assert_string_equal(render_caller_series(fx), "");
    assert_ptr_not_equal(
        sl_metrics_histogram(fx->m, "h", "H.", NULL, too_many, SL_METRICS_MAX_BOUNDS), sink);
}

static void series_past_max_series_return_the_sink_and_count_as_dropped(void **state) {
    fixture *fx = *state; /* max_series = 2 */
    const char *p0[] = {"partition", "0", NULL};
    const char *p1[] = {"partition", "1", NULL};
    const char *p2[] = {"partition", "2", NULL};
    sl_counter *first = sl_metrics_counter(fx->m, "records_total", "Records.", p0);
    sl_metrics_counter(fx->m, "records_total", "Records.", p1);
    sl_counter *third = sl_metrics_counter(fx->m, "records_total", "Records.", p2);
    sl_gauge *other = sl_metrics_gauge(fx->m, "lag", "Lag.", NULL);
    sl_counter_add(third, 99); /* lost */
    assert_ptr_equal(sl_metrics_counter(fx->m, "records_total", "Records.", p0), first);
    assert_string_equal(render_all(fx),
                        "# HELP sluice_metrics_series_dropped_total Series not registered "
                        "because the registry was full (max_series) or out of memory; their "
                        "updates are lost.\n"
                        "# TYPE sluice_metrics_series_dropped_total counter\n"
                        "sluice_metrics_series_dropped_total 2\n"
                        "# HELP sluice_metrics_misuse_total Metric registrations rejected as "
                        "invalid (metric or label name, histogram bounds) or conflicting with an "
                        "earlier registration of the same name.\n"
                        "# TYPE sluice_metrics_misuse_total counter\n"
                        "sluice_metrics_misuse_total 0\n"
                        "# HELP records_total Records.\n"
                        "# TYPE records_total counter\n"
                        "records_total{partition=\"0\"} 0\n"
                        "records_total{partition=\"1\"} 0\n");
    sl_gauge_set(other, 1); /* the gauge sink: also harmless */
}

static void removing_a_series_frees_its_place_under_max_series(void **state) {
    fixture *fx = *state; /* max_series = 2 */
    const char *p0[] = {"partition", "0", NULL};
    const char *p1[] = {"partition", "1", NULL};
    const char *p2[] = {"partition", "2", NULL};
    sl_counter *first = sl_metrics_counter(fx->m, "records_total", "Records.", p0);
    sl_metrics_counter(fx->m, "records_total", "Records.", p1);
    sl_counter *sink = sl_metrics_counter(fx->m, "records_total", "Records.", p2);
    sl_metrics_remove(fx->m, first);
    sl_counter *third = sl_metrics_counter(fx->m, "records_total", "Records.", p2);
    assert_ptr_not_equal(third, sink);
    assert_non_null(strstr(render_caller_series(fx), "records_total{partition=\"2\"} 0\n"));
}

static void type_mismatch_for_an_existing_name_returns_the_sink(void **state) {
    fixture *fx = *state;
    sl_counter_add(sl_metrics_counter(fx->m, "jobs_total", "Jobs.", NULL), 1);
    sl_gauge *sink = sl_metrics_gauge(fx->m, "1", "Sink.", NULL);
    assert_ptr_equal(sl_metrics_gauge(fx->m, "jobs_total", "Jobs.", NULL), sink);
    assert_ptr_equal((void *)sl_metrics_histogram(fx->m, "jobs_total", "Jobs.", NULL, NULL, 0),
                     (void *)sl_metrics_histogram(fx->m, "1", "Sink.", NULL, NULL, 0));
    assert_non_null(strstr(render_all(fx), "\nsluice_metrics_misuse_total 4\n"));
    assert_string_equal(render_caller_series(fx), "# HELP jobs_total Jobs.\n"
                                                  "# TYPE jobs_total counter\n"
                                                  "jobs_total 1\n");
}

static void other_help_or_label_names_for_an_existing_name_return_the_sink(void **state) {
    fixture *fx = *state;
    const char *topic[] = {"topic", "orders", NULL};
    const char *store[] = {"store", "orders", NULL};
    const char *topic_and_store[] = {"topic", "orders", "store", "s", NULL};
    sl_counter *series = sl_metrics_counter(fx->m, "records_total", "Records.", topic);
    sl_counter *sink = sl_metrics_counter(fx->m, "1", "Sink.", NULL);
    assert_ptr_not_equal(series, sink);
    assert_ptr_equal(sl_metrics_counter(fx->m, "records_total", "Other help.", topic), sink);
    assert_ptr_equal(sl_metrics_counter(fx->m, "records_total", "Records.", store), sink);
    assert_ptr_equal(sl_metrics_counter(fx->m, "records_total", "Records.", topic_and_store), sink);
    assert_ptr_equal(sl_metrics_counter(fx->m, "records_total", "Records.", NULL), sink);
}

static void other_bounds_for_an_existing_histogram_return_the_sink(void **state) {
    fixture *fx = *state;
    const double bounds[] = {1, 2};
    const double other[] = {1, 3};
    sl_histogram *h = sl_metrics_histogram(fx->m, "h", "H.", NULL, bounds, 2);
    sl_histogram *sink = sl_metrics_histogram(fx->m, "1", "Sink.", NULL, NULL, 0);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", NULL, bounds, 2), h);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", NULL, other, 2), sink);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "h", "H.", NULL, bounds, 1), sink);
}

static void names_colliding_with_histogram_samples_return_the_sink(void **state) {
    fixture *fx = *state;
    sl_metrics_histogram(fx->m, "latency_seconds", "Latency.", NULL, NULL, 0);
    sl_metrics_gauge(fx->m, "queue_sum", "Queue sum.", NULL);
    sl_counter *counter_sink = sl_metrics_counter(fx->m, "1", "Sink.", NULL);
    assert_ptr_equal(sl_metrics_counter(fx->m, "latency_seconds_count", "C.", NULL), counter_sink);
    assert_ptr_equal(sl_metrics_counter(fx->m, "latency_seconds_bucket", "C.", NULL), counter_sink);
    assert_ptr_equal(sl_metrics_histogram(fx->m, "queue", "Q.", NULL, NULL, 0),
                     sl_metrics_histogram(fx->m, "1", "Sink.", NULL, NULL, 0));
    assert_ptr_not_equal(sl_metrics_counter(fx->m, "latency_seconds_total", "C.", NULL),
                         counter_sink);
}

static void remove_drops_the_series_from_the_output(void **state) {
    fixture *fx = *state;
    const char *p0[] = {"partition", "0", NULL};
    const char *p1[] = {"partition", "1", NULL};
    sl_counter_add(sl_metrics_counter(fx->m, "records_total", "Records.", p0), 1);
    sl_counter *revoked = sl_metrics_counter(fx->m, "records_total", "Records.", p1);
    sl_counter_add(revoked, 2);
    sl_metrics_remove(fx->m, revoked);
    assert_string_equal(render_caller_series(fx), "# HELP records_total Records.\n"
                                                  "# TYPE records_total counter\n"
                                                  "records_total{partition=\"0\"} 1\n");
}

static void removing_the_last_series_drops_the_family(void **state) {
    fixture *fx = *state;
    const double bounds[] = {1};
    sl_histogram *h = sl_metrics_histogram(fx->m, "task_latency", "Latency.", NULL, bounds, 1);
    sl_metrics_remove(fx->m, h);
    assert_string_equal(render_caller_series(fx), "");
    /* The name is free again, even for another type. */
    sl_gauge *g = sl_metrics_gauge(fx->m, "task_latency", "Now a gauge.", NULL);
    assert_ptr_not_equal(g, sl_metrics_gauge(fx->m, "1", "Sink.", NULL));
    assert_string_equal(render_caller_series(fx), "# HELP task_latency Now a gauge.\n"
                                                  "# TYPE task_latency gauge\n"
                                                  "task_latency 0\n");
}

static void removing_the_sink_or_the_registry_counters_is_a_noop(void **state) {
    fixture *fx = *state;
    sl_metrics_gauge(fx->m, "g", "G.", NULL);
    sl_counter *sink = sl_metrics_counter(fx->m, "1", "Sink.", NULL);
    sl_counter *own = sl_metrics_counter(fx->m, "sluice_metrics_misuse_total",
                                         "Metric registrations rejected as invalid (metric or "
                                         "label name, histogram bounds) or conflicting with an "
                                         "earlier registration of the same name.",
                                         NULL);
    assert_ptr_not_equal(own, sink);
    int not_a_series = 0;
    sl_metrics_remove(fx->m, sink);
    sl_metrics_remove(fx->m, own);
    sl_metrics_remove(fx->m, &not_a_series);
    sl_metrics_remove(fx->m, NULL);
    sl_metrics_remove(NULL, own);
    sl_counter_add(own, 1);
    assert_string_equal(render_caller_series(fx), "# HELP g G.\n# TYPE g gauge\ng 0\n");
    assert_non_null(strstr(render_all(fx), "\nsluice_metrics_misuse_total 2\n"));
}

static void non_finite_gauges_render_as_prometheus_spells_them(void **state) {
    fixture *fx = *state;
    const char *plus[] = {"v", "plus", NULL};
    const char *minus[] = {"v", "minus", NULL};
    const char *nan[] = {"v", "nan", NULL};
    sl_gauge_set(sl_metrics_gauge(fx->m, "g", "G.", plus), INFINITY);
    sl_gauge_set(sl_metrics_gauge(fx->m, "g", "G.", minus), -INFINITY);
    sl_gauge_set(sl_metrics_gauge(fx->m, "g", "G.", nan), NAN);
    assert_string_equal(render_caller_series(fx), "# HELP g G.\n"
                                                  "# TYPE g gauge\n"
                                                  "g{v=\"plus\"} +Inf\n"
                                                  "g{v=\"minus\"} -Inf\n"
                                                  "g{v=\"nan\"} NaN\n");
}

static void floats_render_in_their_shortest_exact_form(void **state) {
    fixture *fx = *state;
    const char *a[] = {"v", "a", NULL};
    const char *b[] = {"v", "b", NULL};
    const char *c[] = {"v", "c", NULL};
    const char *d[] = {"v", "d", NULL};
    sl_gauge_set(sl_metrics_gauge(fx->m, "g", "G.", a), 0.1);
    sl_gauge_set(sl_metrics_gauge(fx->m, "g", "G.", b), 0.1 + 0.2);
    sl_gauge_set(sl_metrics_gauge(fx->m, "g", "G.", c), 1e-9);
    sl_gauge_set(sl_metrics_gauge(fx->m, "g", "G.", d), -12345678.5);
    assert_string_equal(render_caller_series(fx), "# HELP g G.\n"
                                                  "# TYPE g gauge\n"
                                                  "g{v=\"a\"} 0.1\n"
                                                  "g{v=\"b\"} 0.30000000000000004\n"
                                                  "g{v=\"c\"} 1e-09\n"
                                                  "g{v=\"d\"} -12345678.5\n");
}

static void null_registry_hands_out_usable_sinks(void **state) {
    (void)state;
    const double bounds[] = {1};
    sl_counter_add(sl_metrics_counter(NULL, "c_total", "C.", NULL), 1);
    sl_gauge_add(sl_metrics_gauge(NULL, "g", "G.", NULL), 1);
    sl_histogram_observe(sl_metrics_histogram(NULL, "h", "H.", NULL, bounds, 1), 2);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(sl_metrics_render(NULL, &text, &len), SL_ERR_INVALID);
    assert_null(text);
}

/* ---- concurrency ---- */

typedef struct worker {
    sl_counter *counter;
    sl_gauge *gauge;
    sl_histogram *histogram;
} worker;

static void *update_loop(void *arg) {
    worker *w = arg;
    for (int i = 0; i < ITERATIONS; i++) {
        if (w->counter)
            sl_counter_add(w->counter, 1);
        if (w->gauge)
            sl_gauge_add(w->gauge, 1.0);
        if (w->histogram)
            sl_histogram_observe(w->histogram, (double)(i % 4));
    }
    return NULL;
}

static void run_workers(worker *w) {
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, update_loop, w), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
}

static void counter_adds_from_four_threads_sum_exactly(void **state) {
    fixture *fx = *state;
    worker w = {.counter = sl_metrics_counter(fx->m, "ops_total", "Ops.", NULL)};
    run_workers(&w);
    assert_int_equal(sl_counter_value(w.counter), THREADS * ITERATIONS);
    assert_string_equal(render_caller_series(fx), "# HELP ops_total Ops.\n"
                                                  "# TYPE ops_total counter\n"
                                                  "ops_total 400000\n");
}

static void gauge_adds_from_four_threads_sum_exactly(void **state) {
    fixture *fx = *state;
    worker w = {.gauge = sl_metrics_gauge(fx->m, "in_flight", "In flight.", NULL)};
    run_workers(&w);
    assert_string_equal(render_caller_series(fx), "# HELP in_flight In flight.\n"
                                                  "# TYPE in_flight gauge\n"
                                                  "in_flight 400000\n");
}

static void histogram_observations_from_four_threads_count_exactly(void **state) {
    fixture *fx = *state;
    const double bounds[] = {0.5, 1.5};
    worker w = {.histogram = sl_metrics_histogram(fx->m, "h", "H.", NULL, bounds, 2)};
    run_workers(&w);
    assert_int_equal(sl_histogram_count(w.histogram), THREADS * ITERATIONS);
    /* Values 0,1,2,3 in turn: a quarter at most 0.5, half at most 1.5. */
    assert_string_equal(render_caller_series(fx), "# HELP h H.\n"
                                                  "# TYPE h histogram\n"
                                                  "h_bucket{le=\"0.5\"} 100000\n"
                                                  "h_bucket{le=\"1.5\"} 200000\n"
                                                  "h_bucket{le=\"+Inf\"} 400000\n"
                                                  "h_sum 600000\n"
                                                  "h_count 400000\n");
}

static void *register_and_remove_loop(void *arg) {
    sl_metrics *m = arg;
    for (int i = 0; i < 2000; i++) {
        char partition[16];
        snprintf(partition, sizeof(partition), "%d", i % 8);
        const char *labels[] = {"partition", partition, NULL};
        sl_counter *c = sl_metrics_counter(m, "churn_total", "Churn.", labels);
        sl_counter_add(c, 1);
        sl_metrics_remove(m, c);
    }
    return NULL;
}

static void render_is_safe_while_other_threads_update_and_register(void **state) {
    fixture *fx = *state;
    worker w = {.counter = sl_metrics_counter(fx->m, "ops_total", "Ops.", NULL),
                .histogram = sl_metrics_histogram(fx->m, "h", "H.", NULL, NULL, 0)};
    pthread_t updater, churner;
    assert_int_equal(pthread_create(&updater, NULL, update_loop, &w), 0);
    assert_int_equal(pthread_create(&churner, NULL, register_and_remove_loop, fx->m), 0);
    unsigned long long previous = 0;
    for (int i = 0; i < 200; i++) {
        const char *line = strstr(render_all(fx), "\nops_total ");
        assert_non_null(line);
        unsigned long long seen = strtoull(line + strlen("\nops_total "), NULL, 10);
        assert_true(seen >= previous); /* a counter never goes back */
        previous = seen;
    }
    assert_int_equal(pthread_join(updater, NULL), 0);
    assert_int_equal(pthread_join(churner, NULL), 0);
    assert_null(strstr(render_all(fx), "churn_total"));
}

/* ---- HTTP ---- */

static void http_handler_answers_200_with_the_exposition_content_type(void **state) {
    fixture *fx = *state;
    sl_counter_add(sl_metrics_counter(fx->m, "requests_total", "Requests.", NULL), 42);
    sl_http_options options = {.host = "127.0.0.1",
                               .port = 0,
                               .threads = 2,
                               .max_connections = 4,
                               .connection_timeout_s = 5,
                               .max_body_bytes = 1024};
    char errstr[256];
    sl_http_server *server = sl_http_server_new(&options, &test_logger, errstr, sizeof(errstr));
    assert_non_null(server);
    assert_int_equal(sl_http_route(server, "GET", "/metrics", sl_metrics_http_handler, fx->m),
                     SL_OK);
    assert_int_equal(sl_http_server_start(server, errstr, sizeof(errstr)), SL_OK);
    char headers[4096], body[8192];
    int status = test_http(sl_http_server_port(server), "GET", "/metrics", NULL, NULL, 0, headers,
                           sizeof(headers), body, sizeof(body));
    sl_http_server_destroy(server);
    assert_int_equal(status, 200);
    assert_non_null(strstr(headers, "Content-Type: " SL_METRICS_CONTENT_TYPE "\r\n"));
    assert_string_equal(body, render_all(fx));
    assert_non_null(strstr(body, "\nrequests_total 42\n"));
}

#define T(f)       cmocka_unit_test_setup_teardown(f, setup, teardown)
#define T_SMALL(f) cmocka_unit_test_prestate_setup_teardown(f, setup, teardown, &two_series)
int main(void) {
    const struct CMUnitTest tests[] = {
        T(new_registry_renders_only_its_own_counters),
        T(counter_renders_its_value_as_an_integer),
        T(gauge_renders_set_and_added_values),
        T(histogram_renders_cumulative_buckets_then_sum_and_count),
        T(histogram_without_labels_has_only_le_in_braces),
        T(nan_observation_counts_only_in_the_inf_bucket),
        T(same_name_and_labels_return_the_same_series),
        T(labels_given_in_another_order_name_the_same_series),
        T(series_with_different_label_values_share_one_help_and_type),
        T(families_render_in_order_of_first_registration),
        T(label_values_are_escaped),
        T(help_text_escapes_backslash_and_newline_only),
        T(long_label_value_is_truncated_at_a_character_boundary),
        T(values_equal_up_to_the_cap_name_one_series),
        T(invalid_utf8_in_a_label_value_becomes_question_marks),
        T(invalid_metric_names_return_the_sink_and_are_not_rendered),
        T(invalid_label_names_return_the_sink_and_are_not_rendered),
        T(too_many_labels_return_the_sink),
        T(le_label_on_a_histogram_returns_the_sink),
        T(invalid_histogram_bounds_return_the_sink),
        T_SMALL(series_past_max_series_return_the_sink_and_count_as_dropped),
        T_SMALL(removing_a_series_frees_its_place_under_max_series),
        T(type_mismatch_for_an_existing_name_returns_the_sink),
        T(other_help_or_label_names_for_an_existing_name_return_the_sink),
        T(other_bounds_for_an_existing_histogram_return_the_sink),
        T(names_colliding_with_histogram_samples_return_the_sink),
        T(remove_drops_the_series_from_the_output),
        T(removing_the_last_series_drops_the_family),
        T(removing_the_sink_or_the_registry_counters_is_a_noop),
        T(non_finite_gauges_render_as_prometheus_spells_them),
        T(floats_render_in_their_shortest_exact_form),
        cmocka_unit_test(null_registry_hands_out_usable_sinks),
        T(counter_adds_from_four_threads_sum_exactly),
        T(gauge_adds_from_four_threads_sum_exactly),
        T(histogram_observations_from_four_threads_count_exactly),
        T(render_is_safe_while_other_threads_update_and_register),
        T(http_handler_answers_200_with_the_exposition_content_type),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
