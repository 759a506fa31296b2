/*
 * arena.h: bounded bump allocator for batch-scoped memory.
 *
 * A poll batch or an HTTP request allocates from an arena and frees it all
 * at once with sl_arena_reset. The arena has a hard cap: past it,
 * sl_arena_alloc returns NULL ("full" is an ordinary outcome, e.g. a record
 * whose decoded form would be absurdly large goes to the dead-letter topic
 * instead of growing memory). protobuf-c's unpack takes it as an allocator.
 * Not thread-safe: one arena per thread or per batch.
 */
#ifndef SLUICE_ARENA_H
#define SLUICE_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_arena sl_arena;

/* An empty arena that will hand out at most `cap_bytes` in total (including
 * alignment padding) between resets. NULL on allocation failure. */
sl_arena *sl_arena_new(size_t cap_bytes);

/* `size` bytes aligned for any type, or NULL if the cap would be exceeded or
 * memory is exhausted. Valid until the next reset or destroy. */
void *sl_arena_alloc(sl_arena *arena, size_t size);

/* Bytes handed out since the last reset. */
size_t sl_arena_used(const sl_arena *arena);

/* Free everything allocated so far (keeps the first chunk for reuse). */
void sl_arena_reset(sl_arena *arena);

void sl_arena_destroy(sl_arena *arena);

/* An allocator for protobuf_c_message_unpack drawing from `arena` (borrowed).
 * Its free is a no-op: release with sl_arena_reset, never
 * protobuf_c_message_free_unpacked. */
ProtobufCAllocator sl_arena_protobuf_allocator(sl_arena *arena);

/* Unpack `len` bytes of `data` as `descriptor` into `arena`: NULL if they do
 * not decode or the arena is full. The message lives until the arena is
 * reset. */
void *sl_arena_unpack(sl_arena *arena, const ProtobufCMessageDescriptor *descriptor,
                      const void *data, size_t len);

/* Pack `message` (a ProtobufCMessage) into `arena`; *len gets its size. NULL
 * when the arena is full. */
uint8_t *sl_arena_pack(sl_arena *arena, const void *message, size_t *len);

#endif
