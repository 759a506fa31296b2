/*
 * dialogs.h: the dialogs topology: messages sharded by dialog id, a
 * per-user index of dialogs, and the copy of registered users that
 * recipients are checked against.
 *
 * Topics (see proto/sluice/v1/dialogs.proto for keys and values; the
 * dialogs topics get dialogs.topic.prefix in front, users.events gets
 * identity.topic.prefix):
 *
 *   dialogs.commands --> [dialogs] --> dialogs.events
 *        (key: dialog id)   |   \----> <app>-replies (sl_ctx_reply)
 *                           \--(record cache)--> <app>-dialogs-by-user-repartition
 *                                   (key: user id) --> [dialogs-by-user]
 *   users.events --> [dialogs-users-feed] --> dialogs.users (compacted)
 *                                   --> global store dialogs-users
 *
 * Stores (RocksDB, changelog <app>-<store>-changelog):
 *   dialogs-messages         dialog id + 8-byte big-endian sequence -> MessageSent
 *   dialogs-heads            dialog id -> DialogHead (last sequence, unread counts)
 *   dialogs-idempotency      dialog id + "/" + command id -> CommandOutcome
 *   dialogs-idempotency-ttl  8-byte big-endian expiry + that key -> ""
 *   dialogs-by-user          user id + dialog id -> DialogSummary
 *   dialogs-users (global)   user id -> DialogUser
 *
 * Threading: sl_dialogs_add and sl_dialogs_destroy on the thread that
 * builds the topology; the callbacks run on the engine's loop thread; the
 * key helpers on any thread.
 */
#ifndef SLUICE_TOPOLOGY_DIALOGS_H
#define SLUICE_TOPOLOGY_DIALOGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/config.h"
#include "processor/base/error.h"
#include "processor/topology.h"

#define SL_DIALOGS_STORE_MESSAGES "dialogs-messages"
#define SL_DIALOGS_STORE_HEADS    "dialogs-heads"
#define SL_DIALOGS_STORE_BY_USER  "dialogs-by-user"
#define SL_DIALOGS_STORE_USERS    "dialogs-users"

#define SL_DIALOGS_MAX_TEXT    4096 /* bytes of UTF-8 */
#define SL_DIALOGS_USER_ID_LEN 36   /* a lower-case UUID */
/* "<lower id>:<higher id>" */
#define SL_DIALOGS_ID_LEN      (2 * SL_DIALOGS_USER_ID_LEN + 1)
#define SL_DIALOGS_PREVIEW_MAX 100 /* bytes of the last message in the index */

typedef struct sl_dialogs sl_dialogs;

typedef struct sl_dialogs_options {
    const char *application_id;     /* replies go to <application_id>-replies */
    const char *topic_prefix;       /* "" in production */
    const char *users_events_topic; /* identity's users.events (with its prefix) */
    int topic_partitions;           /* of dialogs.commands/events/users */
    int64_t idempotency_ttl_ms;
    int64_t idempotency_sweep_interval_ms;
} sl_dialogs_options;

/* Options from the dialogs.* keys of `config` (and identity.topic.prefix
 * for users.events). `users_events` is the caller's buffer for that name;
 * the other strings point into `config`. */
void sl_dialogs_options_from_config(sl_dialogs_options *options, const sl_config *config,
                                    char *users_events, size_t users_events_size);

/* Add the dialogs topology to `topology` (next to identity, which owns
 * users.events). The handle must outlive the engine; free it with
 * sl_dialogs_destroy. `options` is copied. NULL + errstr on failure. */
sl_dialogs *sl_dialogs_add(sl_topology *topology, const sl_dialogs_options *options, char *errstr,
                           size_t errstr_size);

void sl_dialogs_destroy(sl_dialogs *dialogs);

/* The dialog id of two user ids (ascending byte order, joined by ':') into
 * out[SL_DIALOGS_ID_LEN + 1]. False when either is not a lower-case UUID
 * or they are equal. Any thread. */
bool sl_dialogs_id(const char *user_a, const char *user_b, char out[SL_DIALOGS_ID_LEN + 1]);

/* The dialogs-messages key of (dialog id, sequence): the dialog id followed
 * by the sequence as 8 big-endian bytes, so one dialog is one ordered
 * range. Returns the key length. Any thread. */
size_t sl_dialogs_message_key(const char *dialog_id, int64_t sequence,
                              unsigned char out[SL_DIALOGS_ID_LEN + 8]);


/* A lower-case UUID (8-4-4-4-12 hex digits). */
bool sl_dialogs_valid_user_id(const char *id);

#endif
