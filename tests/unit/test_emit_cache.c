/* Unit tests: the record cache of coalescing emits. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "processor/base/trace.h"
#include "processor/engine/emit_cache.h"

typedef struct seen {
    int n;
    int sink[64];
    char key[64][32];
    char value[64][32];
    bool tombstone[64];
} seen;

static sl_err record(void *opaque, int sink, const void *key, size_t key_len, const void *value,
                     size_t value_len) {
    seen *s = opaque;
    s->sink[s->n] = sink;
    snprintf(s->key[s->n], sizeof(s->key[0]), "%.*s", (int)key_len, (const char *)key);
    snprintf(s->value[s->n], sizeof(s->value[0]), "%.*s", (int)value_len,
             value ? (const char *)value : "");
    s->tombstone[s->n] = value == NULL;
    s->n++;
    return SL_OK;
}

/* Records the thread's trace during each emit. */
static sl_err record_trace(void *opaque, int sink, const void *key, size_t key_len,
                           const void *value, size_t value_len) {
    (void)sink, (void)key, (void)key_len, (void)value, (void)value_len;
    char(*traces)[64] = opaque;
    for (int i = 0; i < 8; i++)
        if (!traces[i][0]) {
            const char *t = sl_trace_current();
            snprintf(traces[i], sizeof(traces[i]), "%s", t ? t : "none");
            break;
        }
    return SL_OK;
}

static void put(sl_emit_cache *c, int sink, const char *ck, const char *key, const char *value,
                bool expect_coalesced) {
    bool coalesced = !expect_coalesced;
    assert_int_equal(sl_emit_cache_put(c, sink, ck, strlen(ck), key, strlen(key), value,
                                       value ? strlen(value) : 0, &coalesced),
                     SL_OK);
    assert_int_equal(coalesced, expect_coalesced);
}

static void latest_value_per_cache_key_is_emitted_once_in_first_put_order(void **state) {
    (void)state;
    sl_emit_cache *c = sl_emit_cache_new(1 << 20);
    put(c, 0, "u1|d1", "u1", "v1", false);
    put(c, 0, "u1|d2", "u1", "w1", false);
    put(c, 0, "u1|d1", "u1", "v2", true);
    put(c, 1, "u1|d1", "u1", "other sink", false); /* the sink is part of the key */
    put(c, 0, "u1|d1", "u1", "v3", true);
    assert_int_equal(sl_emit_cache_entries(c), 3);
    seen s = {0};
    assert_int_equal(sl_emit_cache_flush(c, record, &s), SL_OK);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.value[0], "v3");
    assert_string_equal(s.value[1], "w1");
    assert_string_equal(s.value[2], "other sink");
    assert_int_equal(s.sink[2], 1);
    assert_string_equal(s.key[0], "u1");
    assert_int_equal(sl_emit_cache_entries(c), 0);
    assert_int_equal(sl_emit_cache_bytes(c), 0);
    sl_emit_cache_destroy(c);
}

static void tombstones_are_kept_as_tombstones(void **state) {
    (void)state;
    sl_emit_cache *c = sl_emit_cache_new(4096);
    put(c, 0, "a", "k", "v", false);
    put(c, 0, "a", "k", NULL, true);
    seen s = {0};
    assert_int_equal(sl_emit_cache_flush(c, record, &s), SL_OK);
    assert_int_equal(s.n, 1);
    assert_true(s.tombstone[0]);
    sl_emit_cache_destroy(c);
}

static void a_full_cache_says_full_and_an_oversized_record_is_invalid(void **state) {
    (void)state;
    sl_emit_cache *c = sl_emit_cache_new(1024);
    char value[600];
    memset(value, 'x', sizeof(value));
    bool coalesced;
    assert_int_equal(sl_emit_cache_put(c, 0, "a", 1, "k", 1, value, 500, &coalesced), SL_OK);
    assert_int_equal(sl_emit_cache_put(c, 0, "b", 1, "k", 1, value, 500, &coalesced), SL_ERR_FULL);
    /* Replacing the same key frees its old charge first. */
    assert_int_equal(sl_emit_cache_put(c, 0, "a", 1, "k", 1, value, 520, &coalesced), SL_OK);
    assert_true(coalesced);
    char big[2000] = {0};
    assert_int_equal(sl_emit_cache_put(c, 0, "c", 1, "k", 1, big, sizeof(big), &coalesced),
                     SL_ERR_INVALID);
    assert_true(sl_emit_cache_bytes(c) <= 1024);
    sl_emit_cache_clear(c);
    assert_int_equal(sl_emit_cache_entries(c), 0);
    assert_int_equal(sl_emit_cache_put(c, 0, "b", 1, "k", 1, value, 500, &coalesced), SL_OK);
    sl_emit_cache_destroy(c);
}

static void many_keys_survive_rehashing(void **state) {
    (void)state;
    sl_emit_cache *c = sl_emit_cache_new(1 << 24);
    char ck[32];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 5000; i++) {
            snprintf(ck, sizeof(ck), "key-%d", i);
            bool coalesced;
            assert_int_equal(sl_emit_cache_put(c, 0, ck, strlen(ck), ck, strlen(ck), "v", 1,
                                               &coalesced),
                             SL_OK);
            assert_int_equal(coalesced, round == 1);
        }
    assert_int_equal(sl_emit_cache_entries(c), 5000);
    sl_emit_cache_destroy(c); /* frees what was never flushed */
}

/* A coalesced record carries the trace of its last update; the thread's
 * own trace is back after the flush. */
static void each_record_is_emitted_in_the_trace_of_its_last_put(void **state) {
    (void)state;
    const char *t1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const char *t2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    const char *outer = "00-11111111111111111111111111111111-2222222222222222-00";
    sl_emit_cache *c = sl_emit_cache_new(1 << 20);
    sl_trace_set_current(t1);
    put(c, 0, "a", "k", "v1", false);
    put(c, 0, "b", "k", "w1", false);
    sl_trace_set_current(t2);
    put(c, 0, "a", "k", "v2", true);
    sl_trace_set_current(NULL);
    put(c, 0, "c", "k", "x1", false);
    sl_trace_set_current(outer);
    char traces[8][64] = {{0}};
    assert_int_equal(sl_emit_cache_flush(c, record_trace, traces), SL_OK);
    assert_string_equal(traces[0], t2);
    assert_string_equal(traces[1], t1);
    assert_string_equal(traces[2], "none");
    assert_string_equal(sl_trace_current(), outer);
    sl_trace_set_current(NULL);
    sl_emit_cache_destroy(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(latest_value_per_cache_key_is_emitted_once_in_first_put_order),
        cmocka_unit_test(tombstones_are_kept_as_tombstones),
        cmocka_unit_test(a_full_cache_says_full_and_an_oversized_record_is_invalid),
        cmocka_unit_test(many_keys_survive_rehashing),
        cmocka_unit_test(each_record_is_emitted_in_the_trace_of_its_last_put),
    };
    return cmocka_run_group_tests_name("emit_cache", tests, NULL, NULL);
}
