/*
 * command.h: what the domain topologies (identity, dialogs) share about
 * commands: the reply to a command's sender, and expiry indexes (a store
 * keyed by big-endian expiry time + key, swept by a punctuator, so expired
 * entries are found by a range read instead of a full scan).
 *
 * Every function runs on the engine's loop thread, inside a processor or a
 * punctuator (it takes the sl_ctx).
 */
#ifndef SLUICE_TOPOLOGY_COMMAND_H
#define SLUICE_TOPOLOGY_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "processor/base/arena.h"
#include "processor/topology.h"
#include "sluice/v1/meta.pb-c.h"

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
