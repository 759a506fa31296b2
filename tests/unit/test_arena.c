/* Unit tests: the bounded arena and protobuf decoding through it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdalign.h>
#include <stdint.h>
#include <string.h>

#include "processor/base/arena.h"
#include "sluice/v1/meta.pb-c.h"

static void allocations_are_aligned_and_counted(void **state) {
    (void)state;
    sl_arena *arena = sl_arena_new(1 << 20);
    for (size_t size = 1; size < 100; size += 7) {
        void *p = sl_arena_alloc(arena, size);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
        memset(p, 0xab, size);
    }
    assert_true(sl_arena_used(arena) > 0);
    sl_arena_destroy(arena);
}

static void cap_is_a_hard_limit(void **state) {
    (void)state;
    sl_arena *arena = sl_arena_new(1000);
    assert_non_null(sl_arena_alloc(arena, 500));
    assert_null(sl_arena_alloc(arena, 600));
    assert_null(sl_arena_alloc(arena, SIZE_MAX)); /* no overflow on huge sizes */
    assert_non_null(sl_arena_alloc(arena, 100));
    assert_true(sl_arena_used(arena) <= 1000);
    sl_arena_destroy(arena);
}

static void reset_frees_everything_for_reuse(void **state) {
    (void)state;
    sl_arena *arena = sl_arena_new(64 * 1024);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 100; i++)
            assert_non_null(sl_arena_alloc(arena, 500));
        assert_null(sl_arena_alloc(arena, 32 * 1024));
        sl_arena_reset(arena);
        assert_int_equal(sl_arena_used(arena), 0);
    }
    sl_arena_destroy(arena);
}

static size_t pack_meta(uint8_t *buf, size_t size) {
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.command_id = "cmd-1";
    meta.correlation_id = "corr-9";
    meta.reply_to = "gateway.replies";
    meta.issued_at_ms = 1763900000000;
    assert_true(sluice__v1__command_meta__get_packed_size(&meta) <= size);
    return sluice__v1__command_meta__pack(&meta, buf);
}

static void protobuf_unpacks_into_the_arena(void **state) {
    (void)state;
    uint8_t buf[256];
    size_t len = pack_meta(buf, sizeof(buf));
    sl_arena *arena = sl_arena_new(4096);
    ProtobufCAllocator allocator = sl_arena_protobuf_allocator(arena);
    Sluice__V1__CommandMeta *meta = sluice__v1__command_meta__unpack(&allocator, len, buf);
    assert_non_null(meta);
    assert_string_equal(meta->command_id, "cmd-1");
    assert_string_equal(meta->reply_to, "gateway.replies");
    assert_int_equal(meta->issued_at_ms, 1763900000000);
    assert_true(sl_arena_used(arena) > 0);
    sl_arena_destroy(arena); /* frees the message: no free_unpacked */
}

static void protobuf_unpack_fails_cleanly_when_the_arena_is_full(void **state) {
    (void)state;
    uint8_t buf[256];
    size_t len = pack_meta(buf, sizeof(buf));
    sl_arena *arena = sl_arena_new(32);
    ProtobufCAllocator allocator = sl_arena_protobuf_allocator(arena);
    assert_null(sluice__v1__command_meta__unpack(&allocator, len, buf));
    sl_arena_destroy(arena);
}

static void garbage_does_not_decode(void **state) {
    (void)state;
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    sl_arena *arena = sl_arena_new(4096);
    ProtobufCAllocator allocator = sl_arena_protobuf_allocator(arena);
    assert_null(sluice__v1__command_meta__unpack(&allocator, sizeof(garbage), garbage));
    sl_arena_destroy(arena);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allocations_are_aligned_and_counted),
        cmocka_unit_test(cap_is_a_hard_limit),
        cmocka_unit_test(reset_frees_everything_for_reuse),
        cmocka_unit_test(protobuf_unpacks_into_the_arena),
        cmocka_unit_test(protobuf_unpack_fails_cleanly_when_the_arena_is_full),
        cmocka_unit_test(garbage_does_not_decode),
    };
    return cmocka_run_group_tests_name("arena", tests, NULL, NULL);
}
