/*
 * identity.h: the identity topology: users (registration unique by e-mail,
 * password changes, a users-by-id index) and token revocations (the
 * tokens.revoked topic and the global blacklist every instance keeps).
 *
 * Topics (see proto/sluice/v1/identity.proto for keys and values; every
 * name gets identity.topic.prefix in front):
 *
 *   users.commands  --> [users] --> users.events
 *                          |  \---> <app>-replies (sl_ctx_reply)
 *                          \--> <app>-users-by-id-repartition --> [users-by-id]
 *   tokens.commands --> [tokens] --> tokens.revoked --> global store blacklist
 *                           \-----> <app>-replies
 *
 * Stores (RocksDB, changelog <app>-<store>-changelog):
 *   users-by-email             record key (e-mail or "id:<uuid>") -> UserRecord
 *   users-idempotency          command id -> CommandOutcome
 *   users-idempotency-ttl      8-byte big-endian expiry + command id -> ""
 *   users-by-id                user id -> UserRecord
 *   tokens-revocations         "jti:<jti>" / "sid:<sid>" -> RevocationRecord
 *   tokens-revocations-expiry  8-byte big-endian expiry + that key -> ""
 *   blacklist (global)         tokens.revoked: "jti:"/"sid:"/"uid:" key -> TokenRevoked
 *
 * Threading: sl_identity_add and sl_identity_destroy on the thread that
 * builds the topology; the callbacks run on the engine's loop thread;
 * sl_identity_token_revoked on any thread (HTTP threads).
 */
#ifndef SLUICE_TOPOLOGY_IDENTITY_H
#define SLUICE_TOPOLOGY_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/config.h"
#include "processor/base/error.h"
#include "processor/topology.h"
#include "topology/identity/rules.h" /* limits of RegisterUser's fields */

#define SL_IDENTITY_STORE_USERS_BY_EMAIL "users-by-email"
#define SL_IDENTITY_STORE_USERS_BY_ID    "users-by-id"
#define SL_IDENTITY_STORE_BLACKLIST      "blacklist"
/* RevokeToken.reason of a refresh token's rotation: refused (answered
 * already_revoked) when the token's session is revoked. */
#define SL_IDENTITY_REASON_ROTATED "rotated"

typedef struct sl_identity sl_identity;

typedef struct sl_identity_options {
    const char *application_id; /* replies go to <application_id>-replies */
    const char *topic_prefix;   /* "" in production */
    int topic_partitions;       /* of the four topics, created if missing */
    int64_t idempotency_ttl_ms;
    int64_t idempotency_sweep_interval_ms;
    int64_t revocation_sweep_interval_ms;
    int64_t revocation_grace_ms; /* kept this long after the token's exp */
} sl_identity_options;

/* Options from the identity.* keys of `config` (borrowed: the strings
 * point into it). */
void sl_identity_options_from_config(sl_identity_options *options, const sl_config *config);

/* Add the identity topology to `topology`. The returned handle holds the
 * callbacks' state: it must outlive the engine, and is freed with
 * sl_identity_destroy. `options` is copied. NULL + errstr on failure (a
 * bad prefix, a topology that already has nodes of these names). */
sl_identity *sl_identity_add(sl_topology *topology, const sl_identity_options *options,
                             char *errstr, size_t errstr_size);

void sl_identity_destroy(sl_identity *identity);

/* Whether the token with `jti` or its session `session_id` (either may be
 * NULL or empty) is revoked, from this instance's blacklist. Any thread.
 * SL_ERR_UNAVAILABLE while the blacklist is still bootstrapping (answer 503,
 * never "not revoked"); other errors are store errors. */
sl_err sl_identity_token_revoked(sl_engine *engine, const char *jti, const char *session_id,
                                 bool *revoked);

/* Whether a token of `user_id`, session `session_id`, issued at
 * `issued_at_s` (its iat) is revoked by a password change (every session
 * of the user but the changing one, at or before the change; a token
 * issued in the same second as the change, after it, counts as before:
 * log in again). As sl_identity_token_revoked. */
sl_err sl_identity_user_revoked(sl_engine *engine, const char *user_id, const char *session_id,
                                int64_t issued_at_s, bool *revoked);

#endif
