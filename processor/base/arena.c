/* arena.c: chunked bump allocation with a hard total cap. */
#include "processor/base/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

#define FIRST_CHUNK 4096

typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    alignas(max_align_t) unsigned char data[];
} chunk;

struct sl_arena {
    size_t cap, used;
    chunk *head; /* most recent chunk first; the last one is the first chunk */
};

sl_arena *sl_arena_new(size_t cap_bytes) {
    sl_arena *arena = calloc(1, sizeof(*arena));
    if (arena)
        arena->cap = cap_bytes;
    return arena;
}

static size_t align_up(size_t n) {
    const size_t a = alignof(max_align_t);
    return (n + a - 1) & ~(a - 1);
}

void *sl_arena_alloc(sl_arena *arena, size_t size) {
    size_t need = align_up(size ? size : 1);
    if (need < size || need > arena->cap - arena->used)
        return NULL;
    chunk *c = arena->head;
    if (!c || c->size - c->used < need) {
        size_t chunk_size = c ? c->size * 2 : FIRST_CHUNK;
        while (chunk_size < need)
            chunk_size *= 2;
        /* Never reserve more than the cap still allows (need fits, see above). */
        if (chunk_size > arena->cap - arena->used)
            chunk_size = arena->cap - arena->used;
        c = malloc(sizeof(chunk) + chunk_size);
        if (!c)
            return NULL;
        c->size = chunk_size;
        c->used = 0;
        c->next = arena->head;
        arena->head = c;
    }
    void *p = c->data + c->used;
    c->used += need;
    arena->used += need;
    return p;
}

size_t sl_arena_used(const sl_arena *arena) {
    return arena->used;
}

void sl_arena_reset(sl_arena *arena) {
    chunk *c = arena->head;
    while (c && c->next) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
    if (c)
        c->used = 0;
    arena->head = c;
    arena->used = 0;
}

void sl_arena_destroy(sl_arena *arena) {
    if (!arena)
        return;
    sl_arena_reset(arena);
    free(arena->head);
    free(arena);
}

static void *pb_alloc(void *data, size_t size) {
    return sl_arena_alloc(data, size);
}

static void pb_free(void *data, void *pointer) {
    (void)data, (void)pointer; /* released in bulk by sl_arena_reset */
}

ProtobufCAllocator sl_arena_protobuf_allocator(sl_arena *arena) {
    return (ProtobufCAllocator){.alloc = pb_alloc, .free = pb_free, .allocator_data = arena};
}

void *sl_arena_unpack(sl_arena *arena, const ProtobufCMessageDescriptor *descriptor,
                      const void *data, size_t len) {
    ProtobufCAllocator allocator = sl_arena_protobuf_allocator(arena);
    return protobuf_c_message_unpack(descriptor, &allocator, len, data);
}

uint8_t *sl_arena_pack(sl_arena *arena, const void *message, size_t *len) {
    *len = protobuf_c_message_get_packed_size(message);
    uint8_t *out = sl_arena_alloc(arena, *len ? *len : 1);
    if (out)
        protobuf_c_message_pack(message, out);
    return out;
}
