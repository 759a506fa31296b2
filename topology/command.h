/*
 * command.h: what the domain topologies (identity, dialogs) share about
 * commands: the longest command id, the reply to a command's sender, the
 * outcome of a command (event, reply, and the remembered outcome that
 * answers a repeated command id: idempotency), and expiry indexes (a store
 * keyed by big-endian expiry time + key, swept by a punctuator, so expired
 * entries are found by a range read instead of a full scan).
 *
 * Idempotency. A topology remembers a command's outcome (a
 * sluice.v1.CommandOutcome: the reply's type and payload) in a store under
 * the command's idempotency key, with an entry in an expiry index (8-byte
 * big-endian expiry + key) that its sweep punctuator reads; a command whose
 * key has an outcome is answered from it and changes nothing
 * (sl_command_answer_repeat before deciding, sl_command_outcome after).
 *
 * Every function runs on the engine's loop thread, inside a processor or a
 * punctuator (it takes the sl_ctx).
 */
#ifndef SLUICE_TOPOLOGY_COMMAND_H
#define SLUICE_TOPOLOGY_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/arena.h"
#include "processor/topology.h"
#include "sluice/v1/meta.pb-c.h"

/* Longest command id (CommandMeta.command_id) a topology accepts, in bytes. */
#define SL_COMMAND_ID_MAX 128

/* Longest key an expiry index entry may point at, and entries taken per
 * sweep (the rest waits for the next punctuation). */
#define SL_EXPIRY_KEY_MAX 512
#define SL_EXPIRY_BATCH   512

/* `value` as 8 big-endian bytes (negative as 0), so byte order is time order. */
void sl_be64_put(uint8_t out[8], int64_t value);

/* Produce the outcome `type` (payload: the serialized outcome message) as a
 * sluice.v1.Reply to meta->reply_to with key meta->reply_key, in the
 * current transaction; nothing when the command asked for no reply. The
 * Reply is packed into `arena`: SL_ERR_FULL when it does not fit. */
sl_err sl_command_reply(sl_ctx *ctx, sl_arena *arena, const Sluice__V1__CommandMeta *meta,
                        const char *type, const uint8_t *payload, size_t payload_len);

/* The idempotency key of a command: meta->command_id, or
 * "<scope>/<command id>" when scope is not NULL (a command id unique only
 * within the scope, e.g. a dialog). Written NUL-terminated into out; its
 * length, or 0 when the command has no usable id (missing, longer than
 * SL_COMMAND_ID_MAX) or out is too small. */
size_t sl_command_key(const char *scope, const Sluice__V1__CommandMeta *meta, char *out,
                      size_t out_size);

/* Where and how long a command's outcome is remembered (see the top). */
typedef struct sl_command_memory {
    const char *store;     /* idempotency key -> CommandOutcome */
    const char *ttl_index; /* 8-byte expiry + idempotency key -> "" */
    const char *key;       /* from sl_command_key; at most SL_EXPIRY_KEY_MAX bytes */
    size_t key_len;
    int64_t expires_at_ms;
} sl_command_memory;

/* The end of a decided command: emit `event` (a protobuf-c message, packed
 * into `arena`) to `sink` under event_key, reply `payload_message` (type:
 * its descriptor's full name) to meta's sender, and remember that reply as
 * `memory` says (nothing is remembered when memory is NULL or its key_len
 * is 0). SL_ERR_FULL when a message does not fit the arena; store and
 * produce errors as they come. */
sl_err sl_command_outcome(sl_ctx *ctx, sl_arena *arena, const Sluice__V1__CommandMeta *meta,
                          const char *sink, const void *event_key, size_t event_key_len,
                          const void *event, const void *payload_message,
                          const sl_command_memory *memory);

/* The first call of a command's processor. It continues the trace named
 * by meta->traceparent when the record carried no traceparent header
 * (sl_ctx_adopt_trace). A command whose idempotency key (key_len bytes; 0:
 * none) has an outcome in `store`: reply with the remembered outcome to
 * meta's sender and set *answered. *answered is false when the key is new.
 * SL_ERR_STORE when the remembered outcome does not decode. */
sl_err sl_command_answer_repeat(sl_ctx *ctx, sl_arena *arena, const char *store, const char *key,
                                size_t key_len, const Sluice__V1__CommandMeta *meta,
                                bool *answered);

/* Expiry index entries (8-byte expiry + key) read by sl_expiry_find. */
typedef struct sl_expired {
    size_t n;
    size_t len[SL_EXPIRY_BATCH];
    uint8_t key[SL_EXPIRY_BATCH][8 + SL_EXPIRY_KEY_MAX];
} sl_expired;

/* The first SL_EXPIRY_BATCH entries of `index` whose expiry is < `before`,
 * in expiry order, into *list (caller's; large: allocate it). Entry i's
 * indexed key is list->key[i] + 8, list->len[i] - 8 bytes. */
sl_err sl_expiry_find(sl_ctx *ctx, const char *index, int64_t before, sl_expired *list);

/* Delete every entry of `index` that expired before `before`, and the key it
 * points at in `store` (up to SL_EXPIRY_BATCH per call). */
sl_err sl_expiry_sweep(sl_ctx *ctx, const char *index, const char *store, int64_t before);

#endif
