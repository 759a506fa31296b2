/*
 * fuzz_command_meta.c: protobuf-c's unpack of sluice.v1.CommandMeta through
 * the bounded arena (sl_arena_protobuf_allocator), as the engine decodes
 * every command's metadata.
 *
 * Each input is decoded with a generous arena and with a small one whose cap
 * comes from the first byte, so allocation failures happen at every point of
 * the decode. The arena must never hand out more than its cap; a message
 * that decodes must hold NUL-terminated strings, decode the same under any
 * cap that suffices, and survive pack + unpack unchanged.
 *
 * protobuf-c 1.4.1 rejects field number 0 in a one-byte tag but accepts it
 * in an overlong one (0x81 0x00 is tag 1: field 0, wire type 1) and keeps it
 * as an unknown field, which pack then writes as the one-byte tag that
 * unpack rejects (corpus: protobuf_c_field_zero_overlong_tag.pb). sluice
 * never re-packs unknown fields today; whatever does must drop them or
 * reject field 0 itself. The round trip skips such messages.
 */
#include <stdbool.h>
#include <string.h>

#include "processor/base/arena.h"
#include "sluice/v1/meta.pb-c.h"
#include "tests/fuzz/fuzz.h"

#define LARGE_ARENA (64 * 1024)

static bool same_meta(const Sluice__V1__CommandMeta *a, const Sluice__V1__CommandMeta *b) {
    return strcmp(a->command_id, b->command_id) == 0 &&
           strcmp(a->correlation_id, b->correlation_id) == 0 &&
           strcmp(a->reply_to, b->reply_to) == 0 && a->issued_at_ms == b->issued_at_ms &&
           strcmp(a->traceparent, b->traceparent) == 0;
}

/* An unknown field numbered 0: accepted by protobuf-c's unpack only in an
 * overlong tag, and not re-packable (see the top). */
static bool has_field_zero(const Sluice__V1__CommandMeta *meta) {
    for (unsigned i = 0; i < meta->base.n_unknown_fields; i++)
        if (meta->base.unknown_fields[i].tag == 0)
            return true;
    return false;
}

/* Pack `meta`, unpack it with the default allocator: the same fields. */
static void check_round_trip(const Sluice__V1__CommandMeta *meta) {
    if (has_field_zero(meta))
        return;
    size_t packed_size = sluice__v1__command_meta__get_packed_size(meta);
    uint8_t *packed = malloc(packed_size ? packed_size : 1);
    FUZZ_CHECK(packed != NULL);
    FUZZ_CHECK(sluice__v1__command_meta__pack(meta, packed) == packed_size);
    Sluice__V1__CommandMeta *again = sluice__v1__command_meta__unpack(NULL, packed_size, packed);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(same_meta(meta, again));
    sluice__v1__command_meta__free_unpacked(again, NULL);
    free(packed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_arena *large = sl_arena_new(LARGE_ARENA);
    FUZZ_CHECK(large != NULL);
    ProtobufCAllocator large_allocator = sl_arena_protobuf_allocator(large);
    Sluice__V1__CommandMeta *meta = sluice__v1__command_meta__unpack(&large_allocator, size, data);
    FUZZ_CHECK(sl_arena_used(large) <= LARGE_ARENA);
    if (meta) {
        FUZZ_CHECK(meta->command_id && meta->correlation_id && meta->reply_to && meta->traceparent);
        check_round_trip(meta);
    }

    size_t small_cap = size ? (size_t)data[0] * 4 : 0;
    sl_arena *small = sl_arena_new(small_cap);
    FUZZ_CHECK(small != NULL);
    ProtobufCAllocator small_allocator = sl_arena_protobuf_allocator(small);
    Sluice__V1__CommandMeta *small_meta =
        sluice__v1__command_meta__unpack(&small_allocator, size, data);
    FUZZ_CHECK(sl_arena_used(small) <= small_cap);
    if (small_meta) {
        /* Less room can only make a decode fail, never change its result. */
        FUZZ_CHECK(meta != NULL);
        FUZZ_CHECK(same_meta(small_meta, meta));
    }

    /* Never protobuf_c_message_free_unpacked: the arenas own everything. */
    sl_arena_destroy(small);
    sl_arena_destroy(large);
    return 0;
}
