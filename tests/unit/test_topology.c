/* Unit tests: building a topology (names, references, bounds). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>

#include "processor/topology_int.h"

static sl_err process(sl_ctx *ctx, const sl_record *record, void *opaque) {
    (void)ctx, (void)record, (void)opaque;
    return SL_OK;
}

static sl_err punctuate(sl_ctx *ctx, int64_t now_ms, void *opaque) {
    (void)ctx, (void)now_ms, (void)opaque;
    return SL_OK;
}

static int setup(void **state) {
    *state = sl_topology_new();
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    sl_topology_destroy(*state);
    return 0;
}

static void a_topology_reads_top_to_bottom(void **state) {
    sl_topology *t = *state;
    assert_int_equal(sl_topology_add_source(t, "commands", "users.commands", NULL, NULL), SL_OK);
    assert_int_equal(sl_topology_add_store(t, "users", "commands"), SL_OK);
    assert_int_equal(sl_topology_add_processor(t, "register", "commands", process, NULL), SL_OK);
    assert_int_equal(sl_topology_add_sink(t, "events", "users.events"), SL_OK);
    assert_int_equal(sl_topology_add_global_store(t, "blacklist", "tokens.revoked"), SL_OK);
    assert_int_equal(
        sl_topology_add_punctuator(t, "expire", SL_PUNCTUATE_WALL_CLOCK, 1000, punctuate, NULL),
        SL_OK);
    assert_int_equal(sl_topology_store_index(t, "users"), 0);
    assert_int_equal(t->store_source[0], 0);
    assert_int_equal(sl_topology_sink_index(t, "events"), 0);
    assert_int_equal(sl_topology_global_index(t, "blacklist"), 0);
    assert_int_equal(sl_topology_store_index(t, "nope"), -1);
}

static void references_must_exist(void **state) {
    sl_topology *t = *state;
    assert_int_equal(sl_topology_add_store(t, "users", "no-such-source"), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_processor(t, "p", "no-such-source", process, NULL),
                     SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_source(t, "s", "topic", NULL, NULL), SL_OK);
    assert_int_equal(sl_topology_add_processor(t, "p", "s", NULL, NULL), SL_ERR_INVALID);
}

static void names_are_unique_and_safe_for_paths_and_topics(void **state) {
    sl_topology *t = *state;
    assert_int_equal(sl_topology_add_source(t, "s", "topic", NULL, NULL), SL_OK);
    assert_int_equal(sl_topology_add_source(t, "s", "other", NULL, NULL), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_source(t, "s2", "topic", NULL, NULL), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_store(t, "../etc", "s"), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_store(t, "..", "s"), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_store(t, "a b", "s"), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_store(t, "", "s"), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_store(t, "agg", "s"), SL_OK);
    assert_int_equal(sl_topology_add_store(t, "agg", "s"), SL_ERR_INVALID);
    /* a global store may not reuse a store's name, nor the reverse */
    assert_int_equal(sl_topology_add_global_store(t, "agg", "g"), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_global_store(t, "g", "g"), SL_OK);
    assert_int_equal(sl_topology_add_store(t, "g", "s"), SL_ERR_INVALID);
}

static void a_repartition_is_both_a_sink_and_a_source(void **state) {
    sl_topology *t = *state;
    assert_int_equal(sl_topology_add_repartition(t, "by-id", 0), SL_OK);
    assert_int_equal(sl_topology_sink_index(t, "by-id"), 0);
    assert_true(t->sinks[0].repartition);
    assert_true(t->sources[0].repartition);
    assert_int_equal(sl_topology_add_store(t, "users", "by-id"), SL_OK);
    assert_int_equal(sl_topology_add_processor(t, "index", "by-id", process, NULL), SL_OK);
    assert_int_equal(sl_topology_add_repartition(t, "by-id", 0), SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_repartition(t, "bad", -1), SL_ERR_INVALID);
}

static void punctuators_need_a_positive_interval(void **state) {
    sl_topology *t = *state;
    assert_int_equal(
        sl_topology_add_punctuator(t, "p", SL_PUNCTUATE_STREAM_TIME, 0, punctuate, NULL),
        SL_ERR_INVALID);
    assert_int_equal(
        sl_topology_add_punctuator(t, "p", (sl_punctuation_type)7, 10, punctuate, NULL),
        SL_ERR_INVALID);
    assert_int_equal(sl_topology_add_punctuator(t, "p", SL_PUNCTUATE_STREAM_TIME, 10, NULL, NULL),
                     SL_ERR_INVALID);
}

static void node_count_is_bounded(void **state) {
    sl_topology *t = *state;
    char name[32];
    for (int i = 0; i < SL_TOPOLOGY_MAX_NODES; i++) {
        snprintf(name, sizeof(name), "sink%d", i);
        assert_int_equal(sl_topology_add_sink(t, name, name), SL_OK);
    }
    assert_int_equal(sl_topology_add_sink(t, "one-more", "one-more"), SL_ERR_FULL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
int main(void) {
    const struct CMUnitTest tests[] = {
        T(a_topology_reads_top_to_bottom),
        T(references_must_exist),
        T(names_are_unique_and_safe_for_paths_and_topics),
        T(a_repartition_is_both_a_sink_and_a_source),
        T(punctuators_need_a_positive_interval),
        T(node_count_is_bounded),
    };
    return cmocka_run_group_tests_name("topology", tests, NULL, NULL);
}
