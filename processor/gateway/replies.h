/*
 * replies.h: the gateway's reply path. The gateway produces a command whose
 * CommandMeta says correlation_id = a fresh unguessable id, reply_to =
 * "<application.id>-replies", reply_key = this instance's id; the processor
 * answers with a sluice.v1.Reply on that topic, keyed by reply_key, inside
 * the transaction that applies the command. This module reads the one
 * partition of the reply topic that murmur2(instance id) selects (the
 * partition every reply for this instance lands on), with read_committed,
 * from its end at start, and hands each Reply to the HTTP thread waiting
 * for its correlation id.
 *
 * Two parts:
 *   sl_waiters  a fixed-size table of waiters keyed by correlation id
 *               (usable alone; unit-tested without Kafka)
 *   sl_replies  the consumer thread and an idempotent producer for commands
 *
 * A reply nobody waits for (unknown id, or the waiter gave up) is dropped
 * and counted; a waiter that times out frees its slot, so a late reply
 * finds nothing and leaks nothing. The command is not lost on a timeout: it
 * was produced, and a retry with the same command id is answered with the
 * original outcome (processors are idempotent by command id).
 */
#ifndef SLUICE_REPLIES_H
#define SLUICE_REPLIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/config.h"
#include "processor/base/error.h"
#include "processor/base/log.h"
#include "sluice/v1/meta.pb-c.h"

/* "<8 hex digits: slot><32 hex digits: 128 random bits>" + NUL */
#define SL_CORRELATION_ID_SIZE 41

/* Free a reply handed out by sl_waiters_wait / sl_replies_request. NULL is
 * fine. */
void sl_reply_free(Sluice__V1__Reply *reply);

/* ---- the waiter table ---------------------------------------------------- */

typedef struct sl_waiters sl_waiters;

/* A table of `capacity` waiters (1..1,000,000). NULL when out of memory.
 * Every function is thread-safe. */
sl_waiters *sl_waiters_new(size_t capacity);
/* Waiters must be gone (no thread inside sl_waiters_wait). Undelivered
 * replies are freed. NULL is fine. */
void sl_waiters_destroy(sl_waiters *waiters);

/* Reserve a slot under a fresh correlation id (written to `id`).
 * SL_ERR_FULL when every slot is taken (answer 503); SL_ERR_IO if the
 * system's random source fails. */
sl_err sl_waiters_register(sl_waiters *waiters, char id[SL_CORRELATION_ID_SIZE]);

/* Hand `reply` (taken on true) to the waiter of `id`. False if nobody waits
 * for it (unknown, already answered, or gave up): the caller keeps the
 * reply and drops it. */
bool sl_waiters_deliver(sl_waiters *waiters, const char *id, Sluice__V1__Reply *reply);

/* Tell the waiter of `id` that its command could not be produced (`err`).
 * False if nobody waits. */
bool sl_waiters_fail(sl_waiters *waiters, const char *id, sl_err err);

/* Wait at most timeout_ms for the reply of `id`, then free the slot
 * whatever happened. SL_OK with *reply (caller frees with sl_reply_free);
 * SL_ERR_TIMEOUT; the error given to sl_waiters_fail; SL_ERR_NOT_FOUND if
 * `id` is not registered. */
sl_err sl_waiters_wait(sl_waiters *waiters, const char *id, int timeout_ms,
                       Sluice__V1__Reply **reply);

/* Free the slot of `id` without waiting (the command was never sent). */
void sl_waiters_cancel(sl_waiters *waiters, const char *id);

/* Slots in use now. */
size_t sl_waiters_in_use(sl_waiters *waiters);

/* ---- the reply consumer and command producer ---------------------------- */

typedef struct sl_replies sl_replies;

typedef struct sl_replies_stats {
    uint64_t delivered;   /* replies handed to a waiter */
    uint64_t dropped;     /* replies nobody waited for (unknown or late) */
    uint64_t undecodable; /* records that are not a Reply */
    uint64_t produced;    /* commands produced by sl_replies_request */
    int32_t partition;    /* the reply partition read */
} sl_replies_stats;

/* Start reading `reply_topic` (must exist) on `bootstrap` for
 * `instance_id`, with a table of `max_waiters`. `config` (kafka.* settings)
 * and `logger` are borrowed and must outlive the object; strings are
 * copied. Returns once the start offset (the partition's end) is fixed, so
 * a reply produced after this returns is seen. NULL + errstr on failure. */
sl_replies *sl_replies_new(const sl_config *config, const char *bootstrap, const char *reply_topic,
                           const char *instance_id, size_t max_waiters, const sl_logger *logger,
                           char *errstr, size_t errstr_size);

/* Stop the consumer thread, flush the producer, free everything. Every
 * caller of sl_replies_request must have returned. NULL is fine. */
void sl_replies_destroy(sl_replies *replies);

/* The table (borrowed), to register and wait directly. */
sl_waiters *sl_replies_waiters(sl_replies *replies);

/* The partition of the reply topic a key selects (murmur2 like the Java
 * client), e.g. for the instance id. */
int32_t sl_replies_partition_of(const char *key, int32_t partitions);

void sl_replies_stats_get(sl_replies *replies, sl_replies_stats *stats);

/* Serialize a command around `meta` (borrowed, valid during the call; the
 * encoder copies it into its envelope or points at it while packing) into
 * a malloc'd buffer that the caller takes. */
typedef sl_err sl_command_encode_fn(void *opaque, const Sluice__V1__CommandMeta *meta, void **value,
                                    size_t *value_len);

/* The usual end of an encoder: pack the protobuf-c `message` (borrowed)
 * into a malloc'd buffer (at least 1 byte) that *value takes. SL_ERR_NOMEM. */
sl_err sl_command_pack(const void *message, void **value, size_t *value_len);

/* Produce a command to `topic` keyed by `key` (murmur2_random, idempotent,
 * acks=all) with a fresh correlation id (copied to correlation_id if not
 * NULL), reply_to = the reply topic, reply_key = the instance id,
 * issued_at_ms = now, and wait at most timeout_ms for its Reply.
 * SL_OK + *reply (sl_reply_free); SL_ERR_FULL (too many waiters);
 * SL_ERR_TIMEOUT (no reply in time: the command may still be applied);
 * SL_ERR_KAFKA (the command could not be produced); the encoder's error.
 * Any thread. */
sl_err sl_replies_request(sl_replies *replies, const char *topic, const void *key, size_t key_len,
                          sl_command_encode_fn *encode, void *opaque, int timeout_ms,
                          Sluice__V1__Reply **reply, char correlation_id[SL_CORRELATION_ID_SIZE]);

#endif
