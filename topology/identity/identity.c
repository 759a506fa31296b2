/*
 * identity.c: the identity topology (see identity.h for the picture).
 *
 * Design note.
 *
 * Uniqueness by e-mail. users.commands is keyed by the normalized e-mail, so
 * every command about one e-mail lands on one partition, which one task of
 * one instance owns; the engine processes a task's records one at a time
 * and reads its own uncommitted writes, so "is users-by-email[key] free?"
 * followed by "put" cannot interleave with another registration of the same
 * key. Two instances never both own the partition inside one committed
 * transaction (the group generation fences a zombie), so exactly one of N
 * concurrent registrations of an e-mail wins.
 *
 * Idempotency. Every outcome (success or rejection) is remembered under its
 * command id in users-idempotency, with an entry in users-idempotency-ttl
 * whose key starts with the 8-byte big-endian expiry: the sweep punctuator
 * reads that index in key order from the start up to "now" and stops, so it
 * never scans live entries. A repeated command id is answered from the
 * remembered outcome and changes nothing. A command id is only unique per
 * partition (per record key); the gateway uses UUIDs, so that is enough.
 *
 * users-by-id. The users task emits the UserRecord to the repartition topic
 * keyed by user id; the users-by-id task stores it. A user id that arrives
 * with a different e-mail than the stored one (two registrations that chose
 * the same UUID) keeps the first record and is logged: USER_ID_TAKEN cannot
 * be decided on the e-mail's partition (it would need a cross-partition
 * read), and v4 UUIDs make it practically impossible.
 *
 * Revocations. tokens-revocations holds what was revoked and by which
 * command; a repeat of that command is answered as before, another command
 * gets already_revoked = true (refresh-token reuse detection) and nothing is
 * emitted. The expiry index works like the idempotency index: once
 * expires_at_ms + grace has passed, the sweep writes a tombstone to
 * tokens.revoked (so compaction drops the revocation and every instance's
 * blacklist forgets it) and deletes both store entries.
 *
 * Memory: every decode and every pack uses one bounded arena, reset at the
 * start of each callback (all callbacks run on the loop thread).
 */
#include "topology/identity/identity.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/base/arena.h"
#include "processor/base/text.h"
#include "topology/command.h"
#include "topology/identity/rules.h"
#include "sluice/v1/identity.pb-c.h"
#include "sluice/v1/meta.pb-c.h"

#define ARENA_CAP      (8u * 1024 * 1024) /* > 2x the largest record we accept */
#define MAX_KEY        512
#define MAX_TOKEN_ID   256 /* jti, session id */

#define SRC_USERS        "users"
#define SRC_TOKENS       "tokens"
#define REPARTITION_BYID "users-by-id"
#define SINK_EVENTS      "users-events"
#define SINK_REVOKED     "tokens-revoked"
#define STORE_IDEM       "users-idempotency"
#define STORE_IDEM_TTL   "users-idempotency-ttl"
#define STORE_REVOKED    "tokens-revocations"
#define STORE_REVOKED_EX "tokens-revocations-expiry"

struct sl_identity {
    sl_identity_options options;
    char prefix[128];
    char application_id[256];
    char users_commands[250], users_events[250], tokens_commands[250], tokens_revoked[250];
    sl_arena *arena;
};

/* ------------------------------------------------------------------------ */
/* Field checks. Each returns NULL when fine, else a detail naming the field
 * (never the value: details go to topics and logs). */

static bool valid_utf8_text(const char *s, bool allow_newlines) {
    return sl_text_valid(s, strlen(s), allow_newlines);
}

static const char *check_text(const char *value, size_t max, bool newlines, const char *too_long,
                              const char *bad) {
    if (strlen(value) > max)
        return too_long;
    return valid_utf8_text(value, newlines) ? NULL : bad;
}

/* The record key a user's commands must carry. */
static bool key_matches(const sl_record *record, const char *email, const char *user_id) {
    char expected[MAX_KEY];
    int n = email[0] ? snprintf(expected, sizeof(expected), "%s", email)
                     : snprintf(expected, sizeof(expected), "id:%s", user_id);
    return n > 0 && (size_t)n < sizeof(expected) && record->key && record->key_len == (size_t)n &&
           memcmp(record->key, expected, (size_t)n) == 0;
}

static const char *check_registration(const Sluice__V1__RegisterUser *cmd,
                                      const sl_record *record) {
    if (!cmd->meta || !cmd->meta->command_id[0])
        return "meta.command_id: missing";
    if (strlen(cmd->meta->command_id) > SL_COMMAND_ID_MAX)
        return "meta.command_id: longer than 128 bytes";
    if (!sl_uuid_valid(cmd->user_id))
        return "user_id: not a lower-case UUID";
    if (cmd->email[0] && !sl_email_normalized(cmd->email))
        return "email: not a normalized e-mail address";
    if (!key_matches(record, cmd->email, cmd->user_id))
        return cmd->email[0] ? "email: does not equal the record key"
                             : "key: must be \"id:<user_id>\" when email is empty";
    if (!sl_password_hash_acceptable(cmd->password_hash))
        return "password_hash: not an argon2id PHC string with accepted parameters";
    const Sluice__V1__Profile *profile = cmd->profile;
    if (!profile)
        return NULL;
    const char *detail;
    if ((detail = check_text(profile->first_name, SL_IDENTITY_MAX_NAME, false,
                             "profile.first_name: longer than 100 bytes",
                             "profile.first_name: not printable UTF-8")) ||
        (detail = check_text(profile->second_name, SL_IDENTITY_MAX_NAME, false,
                             "profile.second_name: longer than 100 bytes",
                             "profile.second_name: not printable UTF-8")) ||
        (detail = check_text(profile->city, SL_IDENTITY_MAX_NAME, false,
                             "profile.city: longer than 100 bytes",
                             "profile.city: not printable UTF-8")) ||
        (detail = check_text(profile->biography, SL_IDENTITY_MAX_BIOGRAPHY, true,
                             "profile.biography: longer than 2000 bytes",
                             "profile.biography: not printable UTF-8")))
        return detail;
    if (profile->birthdate[0] && !sl_date_valid(profile->birthdate))
        return "profile.birthdate: not a YYYY-MM-DD date";
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Users                                                                     */

static bool validate_users_command(const sl_record *record, char *reason, size_t reason_size,
                                   void *opaque) {
    sl_identity *id = opaque;
    sl_arena_reset(id->arena);
    if (!record->key || record->key_len == 0 || record->key_len >= MAX_KEY) {
        snprintf(reason, reason_size, "record key missing or longer than %d bytes", MAX_KEY - 1);
        return false;
    }
    Sluice__V1__UsersCommand *cmd =
        sl_arena_unpack(id->arena, &sluice__v1__users_command__descriptor, record->value, record->value_len);
    if (!cmd) {
        snprintf(reason, reason_size, "value is not a sluice.v1.UsersCommand");
        return false;
    }
    if (cmd->command_case == SLUICE__V1__USERS_COMMAND__COMMAND__NOT_SET) {
        snprintf(reason, reason_size, "empty UsersCommand envelope (no command set)");
        return false;
    }
    return true;
}

/* The outcome of a users command: the event to users.events (key: user
 * id), the reply, and the remembered outcome under the command id. */
static sl_err users_outcome(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                            const Sluice__V1__CommandMeta *meta, const char *user_id,
                            const Sluice__V1__UsersEvent *event, const void *payload_message) {
    char key[SL_COMMAND_ID_MAX + 1];
    sl_command_memory memory = {
        .store = STORE_IDEM,
        .ttl_index = STORE_IDEM_TTL,
        .key = key,
        .key_len = sl_command_key(NULL, meta, key, sizeof(key)),
        .expires_at_ms = record->timestamp_ms + id->options.idempotency_ttl_ms,
    };
    return sl_command_outcome(ctx, id->arena, meta, SINK_EVENTS, user_id, strlen(user_id), event,
                              payload_message, &memory);
}

static sl_err reject_registration(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                                  const Sluice__V1__RegisterUser *cmd,
                                  Sluice__V1__RegistrationRejected__Reason reason,
                                  const char *detail) {
    Sluice__V1__RegistrationRejected rejected = SLUICE__V1__REGISTRATION_REJECTED__INIT;
    rejected.meta = cmd->meta;
    rejected.user_id = cmd->user_id;
    rejected.email = cmd->email;
    rejected.reason = reason;
    rejected.detail = (char *)(detail ? detail : "");
    Sluice__V1__UsersEvent event = SLUICE__V1__USERS_EVENT__INIT;
    event.event_case = SLUICE__V1__USERS_EVENT__EVENT_REGISTRATION_REJECTED;
    event.registration_rejected = &rejected;
    return users_outcome(id, ctx, record, cmd->meta, cmd->user_id, &event, &rejected);
}

/* Store a user under its e-mail key and send it to the users-by-id index. */
static sl_err put_user(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                       const Sluice__V1__UserRecord *user) {
    size_t len;
    uint8_t *bytes = sl_arena_pack(id->arena, user, &len);
    if (!bytes)
        return SL_ERR_FULL;
    sl_err err =
        sl_ctx_put(ctx, SL_IDENTITY_STORE_USERS_BY_EMAIL, record->key, record->key_len, bytes, len);
    if (!err)
        err = sl_ctx_emit(ctx, REPARTITION_BYID, user->user_id, strlen(user->user_id), bytes, len,
                          -1);
    return err;
}

static sl_err register_user(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                            const Sluice__V1__RegisterUser *cmd) {
    const char *detail = check_registration(cmd, record);
    if (detail)
        return reject_registration(id, ctx, record, cmd,
                                   SLUICE__V1__REGISTRATION_REJECTED__REASON__INVALID, detail);
    char *existing;
    size_t existing_len;
    sl_err err = sl_ctx_get(ctx, SL_IDENTITY_STORE_USERS_BY_EMAIL, record->key, record->key_len,
                            &existing, &existing_len);
    if (err == SL_OK) {
        free(existing);
        return reject_registration(id, ctx, record, cmd,
                                   cmd->email[0]
                                       ? SLUICE__V1__REGISTRATION_REJECTED__REASON__EMAIL_TAKEN
                                       : SLUICE__V1__REGISTRATION_REJECTED__REASON__USER_ID_TAKEN,
                                   NULL);
    }
    if (err != SL_ERR_NOT_FOUND)
        return err;
    Sluice__V1__Profile empty_profile = SLUICE__V1__PROFILE__INIT;
    Sluice__V1__UserRecord user = SLUICE__V1__USER_RECORD__INIT;
    user.user_id = cmd->user_id;
    user.email = cmd->email;
    user.password_hash = cmd->password_hash;
    user.profile = cmd->profile ? cmd->profile : &empty_profile;
    user.registered_at_ms = record->timestamp_ms;
    if ((err = put_user(id, ctx, record, &user)))
        return err;
    Sluice__V1__UserRegistered registered = SLUICE__V1__USER_REGISTERED__INIT;
    registered.meta = cmd->meta;
    registered.user_id = cmd->user_id;
    registered.email = cmd->email;
    registered.profile = user.profile;
    registered.registered_at_ms = user.registered_at_ms;
    Sluice__V1__UsersEvent event = SLUICE__V1__USERS_EVENT__INIT;
    event.event_case = SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED;
    event.user_registered = &registered;
    return users_outcome(id, ctx, record, cmd->meta, cmd->user_id, &event, &registered);
}

static sl_err reject_password_change(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                                     const Sluice__V1__ChangePassword *cmd,
                                     Sluice__V1__PasswordChangeRejected__Reason reason,
                                     const char *detail) {
    Sluice__V1__PasswordChangeRejected rejected = SLUICE__V1__PASSWORD_CHANGE_REJECTED__INIT;
    rejected.meta = cmd->meta;
    rejected.user_id = cmd->user_id;
    rejected.reason = reason;
    rejected.detail = (char *)(detail ? detail : "");
    Sluice__V1__UsersEvent event = SLUICE__V1__USERS_EVENT__INIT;
    event.event_case = SLUICE__V1__USERS_EVENT__EVENT_PASSWORD_CHANGE_REJECTED;
    event.password_change_rejected = &rejected;
    return users_outcome(id, ctx, record, cmd->meta, cmd->user_id, &event, &rejected);
}

static sl_err change_password(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                              const Sluice__V1__ChangePassword *cmd) {
    const char *detail = NULL;
    if (!cmd->meta || !cmd->meta->command_id[0])
        detail = "meta.command_id: missing";
    else if (!sl_uuid_valid(cmd->user_id))
        detail = "user_id: not a lower-case UUID";
    else if (!key_matches(record, cmd->email, cmd->user_id))
        detail = cmd->email[0] ? "email: does not equal the record key"
                               : "key: must be \"id:<user_id>\" when email is empty";
    else if (!sl_password_hash_acceptable(cmd->new_password_hash))
        detail = "new_password_hash: not an argon2id PHC string with accepted parameters";
    if (detail)
        return reject_password_change(
            id, ctx, record, cmd, SLUICE__V1__PASSWORD_CHANGE_REJECTED__REASON__INVALID, detail);
    char *stored;
    size_t stored_len;
    sl_err err = sl_ctx_get(ctx, SL_IDENTITY_STORE_USERS_BY_EMAIL, record->key, record->key_len,
                            &stored, &stored_len);
    if (err == SL_ERR_NOT_FOUND)
        return reject_password_change(
            id, ctx, record, cmd, SLUICE__V1__PASSWORD_CHANGE_REJECTED__REASON__NOT_FOUND, NULL);
    if (err)
        return err;
    Sluice__V1__UserRecord *user =
        sl_arena_unpack(id->arena, &sluice__v1__user_record__descriptor, stored, stored_len);
    free(stored);
    if (!user)
        return SL_ERR_STORE;
    if (strcmp(user->user_id, cmd->user_id) != 0)
        return reject_password_change(id, ctx, record, cmd,
                                      SLUICE__V1__PASSWORD_CHANGE_REJECTED__REASON__INVALID,
                                      "user_id: does not match the user of the key");
    if (cmd->current_password_hash[0] &&
        strcmp(user->password_hash, cmd->current_password_hash) != 0)
        return reject_password_change(
            id, ctx, record, cmd, SLUICE__V1__PASSWORD_CHANGE_REJECTED__REASON__CURRENT_CHANGED,
            "the password was changed meanwhile");
    user->password_hash = cmd->new_password_hash;
    user->password_changed_at_ms = record->timestamp_ms;
    if ((err = put_user(id, ctx, record, user)))
        return err;
    Sluice__V1__PasswordChanged changed = SLUICE__V1__PASSWORD_CHANGED__INIT;
    changed.meta = cmd->meta;
    changed.user_id = cmd->user_id;
    changed.changed_at_ms = record->timestamp_ms;
    Sluice__V1__UsersEvent event = SLUICE__V1__USERS_EVENT__INIT;
    event.event_case = SLUICE__V1__USERS_EVENT__EVENT_PASSWORD_CHANGED;
    event.password_changed = &changed;
    return users_outcome(id, ctx, record, cmd->meta, cmd->user_id, &event, &changed);
}

static sl_err process_users_command(sl_ctx *ctx, const sl_record *record, void *opaque) {
    sl_identity *id = opaque;
    sl_arena_reset(id->arena);
    Sluice__V1__UsersCommand *cmd =
        sl_arena_unpack(id->arena, &sluice__v1__users_command__descriptor, record->value, record->value_len);
    if (!cmd)
        return SL_ERR_INVALID; /* the validator let it through: cannot happen */
    const Sluice__V1__CommandMeta *meta =
        cmd->command_case == SLUICE__V1__USERS_COMMAND__COMMAND_REGISTER_USER
            ? cmd->register_user->meta
            : cmd->change_password->meta;
    char key[SL_COMMAND_ID_MAX + 1];
    bool answered;
    sl_err err = sl_command_answer_repeat(ctx, id->arena, STORE_IDEM, key,
                                          sl_command_key(NULL, meta, key, sizeof(key)), meta,
                                          &answered);
    if (err || answered)
        return err;
    switch (cmd->command_case) {
    case SLUICE__V1__USERS_COMMAND__COMMAND_REGISTER_USER:
        return register_user(id, ctx, record, cmd->register_user);
    case SLUICE__V1__USERS_COMMAND__COMMAND_CHANGE_PASSWORD:
        return change_password(id, ctx, record, cmd->change_password);
    default:
        sl_ctx_reject(ctx, "unknown UsersCommand");
        return SL_OK;
    }
}

/* users-by-id: the repartitioned UserRecord, keyed by user id. */
static sl_err process_user_by_id(sl_ctx *ctx, const sl_record *record, void *opaque) {
    sl_identity *id = opaque;
    sl_arena_reset(id->arena);
    if (!record->key || !record->value)
        return SL_ERR_INVALID;
    Sluice__V1__UserRecord *user =
        sl_arena_unpack(id->arena, &sluice__v1__user_record__descriptor, record->value, record->value_len);
    if (!user)
        return SL_ERR_INVALID;
    char *stored;
    size_t stored_len;
    sl_err err = sl_ctx_get(ctx, SL_IDENTITY_STORE_USERS_BY_ID, record->key, record->key_len,
                            &stored, &stored_len);
    if (err == SL_OK) {
        Sluice__V1__UserRecord *previous =
            sl_arena_unpack(id->arena, &sluice__v1__user_record__descriptor, stored, stored_len);
        free(stored);
        if (previous && strcmp(previous->email, user->email) != 0) {
            /* Two registrations chose one user id: the first keeps it. */
            sl_ctx_reject(ctx, "user id already belongs to another e-mail");
            return SL_OK;
        }
    } else if (err != SL_ERR_NOT_FOUND) {
        return err;
    }
    return sl_ctx_put(ctx, SL_IDENTITY_STORE_USERS_BY_ID, record->key, record->key_len,
                      record->value, record->value_len);
}

/* ------------------------------------------------------------------------ */
/* Expiry indexes                                                            */

static sl_err sweep_idempotency(sl_ctx *ctx, int64_t now_ms, void *opaque) {
    (void)opaque;
    if (strcmp(sl_ctx_source(ctx), SRC_USERS) != 0)
        return SL_OK;
    return sl_expiry_sweep(ctx, STORE_IDEM_TTL, STORE_IDEM, now_ms + 1);
}

static sl_err sweep_revocations(sl_ctx *ctx, int64_t now_ms, void *opaque) {
    sl_identity *id = opaque;
    if (strcmp(sl_ctx_source(ctx), SRC_TOKENS) != 0)
        return SL_OK;
    sl_expired *list = malloc(sizeof(*list));
    if (!list)
        return SL_ERR_NOMEM;
    sl_err err =
        sl_expiry_find(ctx, STORE_REVOKED_EX, now_ms - id->options.revocation_grace_ms + 1, list);
    for (size_t i = 0; !err && i < list->n; i++) {
        const uint8_t *key = list->key[i] + 8;
        size_t key_len = list->len[i] - 8;
        /* The tombstone first: the blacklist forgets the revocation only
         * when the store entry is gone too (both in this transaction). */
        err = sl_ctx_emit(ctx, SINK_REVOKED, key, key_len, NULL, 0, -1);
        if (!err)
            err = sl_ctx_delete(ctx, STORE_REVOKED, key, key_len);
        if (!err)
            err = sl_ctx_delete(ctx, STORE_REVOKED_EX, list->key[i], list->len[i]);
    }
    free(list);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Tokens                                                                    */

static bool valid_token_id(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > MAX_TOKEN_ID)
        return false;
    for (const char *p = s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

static bool key_is(const sl_record *record, const char *expected) {
    size_t n = strlen(expected);
    return record->key && record->key_len == n && memcmp(record->key, expected, n) == 0;
}

static bool validate_tokens_command(const sl_record *record, char *reason, size_t reason_size,
                                    void *opaque) {
    sl_identity *id = opaque;
    sl_arena_reset(id->arena);
    Sluice__V1__TokensCommand *cmd =
        sl_arena_unpack(id->arena, &sluice__v1__tokens_command__descriptor, record->value, record->value_len);
    const char *why = NULL;
    if (!cmd)
        why = "value is not a sluice.v1.TokensCommand";
    else if (cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_TOKEN) {
        const Sluice__V1__RevokeToken *revoke = cmd->revoke_token;
        if (!valid_token_id(revoke->jti))
            why = "RevokeToken.jti: missing, too long or not printable";
        else if (!key_is(record, revoke->jti))
            why = "RevokeToken: the record key must be the jti";
        else if (revoke->expires_at_ms <= 0)
            why = "RevokeToken.expires_at_ms: missing";
        else if (!revoke->meta || !revoke->meta->command_id[0])
            why = "RevokeToken.meta.command_id: missing";
    } else if (cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_SESSION) {
        const Sluice__V1__RevokeSession *revoke = cmd->revoke_session;
        if (!valid_token_id(revoke->session_id))
            why = "RevokeSession.session_id: missing, too long or not printable";
        else if (!key_is(record, revoke->session_id))
            why = "RevokeSession: the record key must be the session id";
        else if (revoke->expires_at_ms <= 0)
            why = "RevokeSession.expires_at_ms: missing";
        else if (!revoke->meta || !revoke->meta->command_id[0])
            why = "RevokeSession.meta.command_id: missing";
    } else if (cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_USER_SESSIONS) {
        const Sluice__V1__RevokeUserSessions *revoke = cmd->revoke_user_sessions;
        if (!sl_uuid_valid(revoke->user_id))
            why = "RevokeUserSessions.user_id: not a lower-case UUID";
        else if (!key_is(record, revoke->user_id))
            why = "RevokeUserSessions: the record key must be the user id";
        else if (!valid_token_id(revoke->keep_session_id))
            why = "RevokeUserSessions.keep_session_id: missing, too long or not printable";
        else if (revoke->expires_at_ms <= 0)
            why = "RevokeUserSessions.expires_at_ms: missing";
        else if (!revoke->meta || !revoke->meta->command_id[0])
            why = "RevokeUserSessions.meta.command_id: missing";
    } else {
        why = "empty TokensCommand envelope (no command set)";
    }
    if (why)
        snprintf(reason, reason_size, "%s", why);
    return why == NULL;
}

static sl_err answer_revocation(sl_identity *id, sl_ctx *ctx, const Sluice__V1__CommandMeta *meta,
                                const Sluice__V1__TokenRevoked *revoked) {
    size_t len;
    uint8_t *bytes = sl_arena_pack(id->arena, revoked, &len);
    if (!bytes)
        return SL_ERR_FULL;
    return sl_command_reply(ctx, id->arena, meta, sluice__v1__token_revoked__descriptor.name, bytes, len);
}

static sl_err revoke(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                     const Sluice__V1__CommandMeta *meta, const char *kind, const char *what,
                     Sluice__V1__TokenRevoked *revoked) {
    char key[8 + MAX_KEY];
    int key_len = snprintf(key, sizeof(key), "%s:%s", kind, what);
    if (key_len < 0 || (size_t)key_len >= sizeof(key) - 8)
        return SL_ERR_INVALID;
    char *stored;
    size_t stored_len;
    sl_err err = sl_ctx_get(ctx, STORE_REVOKED, key, (size_t)key_len, &stored, &stored_len);
    if (err == SL_OK) {
        Sluice__V1__RevocationRecord *previous =
            sl_arena_unpack(id->arena, &sluice__v1__revocation_record__descriptor, stored, stored_len);
        free(stored);
        if (!previous || !previous->revoked)
            return SL_ERR_STORE;
        previous->revoked->already_revoked = strcmp(previous->command_id, meta->command_id) != 0;
        return answer_revocation(id, ctx, meta, previous->revoked);
    }
    if (err != SL_ERR_NOT_FOUND)
        return err;
    revoked->revoked_at_ms = record->timestamp_ms;
    size_t len;
    uint8_t *bytes = sl_arena_pack(id->arena, revoked, &len);
    Sluice__V1__RevocationRecord entry = SLUICE__V1__REVOCATION_RECORD__INIT;
    entry.revoked = revoked;
    entry.command_id = meta->command_id;
    size_t entry_len;
    uint8_t *entry_bytes = sl_arena_pack(id->arena, &entry, &entry_len);
    if (!bytes || !entry_bytes)
        return SL_ERR_FULL;
    uint8_t index_key[8 + MAX_KEY];
    sl_be64_put(index_key, revoked->expires_at_ms);
    memcpy(index_key + 8, key, (size_t)key_len);
    if ((err = sl_ctx_emit(ctx, SINK_REVOKED, key, (size_t)key_len, bytes, len, -1)) ||
        (err = sl_ctx_put(ctx, STORE_REVOKED, key, (size_t)key_len, entry_bytes, entry_len)) ||
        (err = sl_ctx_put(ctx, STORE_REVOKED_EX, index_key, 8 + (size_t)key_len, "", 0)))
        return err;
    return answer_revocation(id, ctx, meta, revoked);
}

/* Where a blacklist lookup reads: a processor's context (its lookup
 * catches the global store up on a miss), or, for HTTP threads, this
 * instance's copy as it is. */
typedef struct blacklist_reader {
    sl_ctx *ctx;
    sl_engine *engine;
} blacklist_reader;

/* The blacklist entry "<kind>:<what>" (malloc'd): SL_OK, SL_ERR_NOT_FOUND,
 * or an error. */
static sl_err blacklist_entry(blacklist_reader from, const char *kind, const char *what,
                              char **value, size_t *len) {
    char key[8 + MAX_KEY];
    int n = snprintf(key, sizeof(key), "%s:%s", kind, what);
    if (n < 0 || (size_t)n >= sizeof(key))
        return SL_ERR_INVALID;
    return from.ctx ? sl_ctx_global_get(from.ctx, SL_IDENTITY_STORE_BLACKLIST, key, (size_t)n,
                                        value, len)
                    : sl_engine_global_get(from.engine, SL_IDENTITY_STORE_BLACKLIST, key,
                                           (size_t)n, value, len);
}

/* Whether "<kind>:<what>" is in the blacklist (nothing is, for an empty
 * `what`). */
static sl_err blacklisted(blacklist_reader from, const char *kind, const char *what,
                          bool *revoked) {
    if (!what || !what[0])
        return SL_OK;
    char *value = NULL;
    size_t len = 0;
    sl_err err = blacklist_entry(from, kind, what, &value, &len);
    if (err == SL_ERR_NOT_FOUND)
        return SL_OK;
    if (!err)
        *revoked = true;
    free(value);
    return err;
}

/* Whether the user's sessions were revoked (RevokeUserSessions, the uid:
 * entry, a TokenRevoked) at or after `issued_at_ms`, for a token of
 * session `session_id`. */
static sl_err user_blacklisted(blacklist_reader from, const char *user_id,
                               const char *session_id, int64_t issued_at_ms, bool *revoked) {
    if (!user_id || !user_id[0])
        return SL_OK;
    char *value = NULL;
    size_t len = 0;
    sl_err err = blacklist_entry(from, "uid", user_id, &value, &len);
    if (err == SL_ERR_NOT_FOUND)
        return SL_OK;
    Sluice__V1__TokenRevoked *entry =
        err ? NULL : sluice__v1__token_revoked__unpack(NULL, len, (const uint8_t *)value);
    free(value);
    if (err)
        return err;
    if (!entry)
        return SL_ERR_STORE;
    *revoked = strcmp(entry->session_id, session_id ? session_id : "") != 0 &&
               issued_at_ms <= entry->revoked_at_ms;
    sluice__v1__token_revoked__free_unpacked(entry, NULL);
    return SL_OK;
}

/* A password change ends every other session: one entry per user, "uid:"
 * key, replaced by a later change (its old expiry index entry goes, so
 * the sweep does not drop the newer revocation at the older expiry). */
static sl_err revoke_user_sessions(sl_identity *id, sl_ctx *ctx, const sl_record *record,
                                   const Sluice__V1__RevokeUserSessions *r) {
    char key[8 + MAX_KEY];
    int key_len = snprintf(key, sizeof(key), "uid:%s", r->user_id);
    if (key_len < 0 || (size_t)key_len >= sizeof(key) - 8)
        return SL_ERR_INVALID;
    char *stored;
    size_t stored_len;
    sl_err err = sl_ctx_get(ctx, STORE_REVOKED, key, (size_t)key_len, &stored, &stored_len);
    if (err == SL_OK) {
        Sluice__V1__RevocationRecord *previous = sl_arena_unpack(
            id->arena, &sluice__v1__revocation_record__descriptor, stored, stored_len);
        free(stored);
        if (!previous || !previous->revoked)
            return SL_ERR_STORE;
        if (strcmp(previous->command_id, r->meta->command_id) == 0)
            return answer_revocation(id, ctx, r->meta, previous->revoked); /* a repeat */
        uint8_t old_index[8 + MAX_KEY];
        sl_be64_put(old_index, previous->revoked->expires_at_ms);
        memcpy(old_index + 8, key, (size_t)key_len);
        if ((err = sl_ctx_delete(ctx, STORE_REVOKED_EX, old_index, 8 + (size_t)key_len)))
            return err;
    } else if (err != SL_ERR_NOT_FOUND) {
        return err;
    }
    Sluice__V1__TokenRevoked revoked = SLUICE__V1__TOKEN_REVOKED__INIT;
    revoked.user_id = r->user_id;
    revoked.session_id = r->keep_session_id;
    revoked.expires_at_ms = r->expires_at_ms;
    revoked.revoked_at_ms = record->timestamp_ms;
    revoked.reason = r->reason;
    size_t len;
    uint8_t *bytes = sl_arena_pack(id->arena, &revoked, &len);
    Sluice__V1__RevocationRecord entry = SLUICE__V1__REVOCATION_RECORD__INIT;
    entry.revoked = &revoked;
    entry.command_id = r->meta->command_id;
    size_t entry_len;
    uint8_t *entry_bytes = sl_arena_pack(id->arena, &entry, &entry_len);
    if (!bytes || !entry_bytes)
        return SL_ERR_FULL;
    uint8_t index_key[8 + MAX_KEY];
    sl_be64_put(index_key, revoked.expires_at_ms);
    memcpy(index_key + 8, key, (size_t)key_len);
    if ((err = sl_ctx_emit(ctx, SINK_REVOKED, key, (size_t)key_len, bytes, len, -1)) ||
        (err = sl_ctx_put(ctx, STORE_REVOKED, key, (size_t)key_len, entry_bytes, entry_len)) ||
        (err = sl_ctx_put(ctx, STORE_REVOKED_EX, index_key, 8 + (size_t)key_len, "", 0)))
        return err;
    return answer_revocation(id, ctx, r->meta, &revoked);
}

static sl_err process_tokens_command(sl_ctx *ctx, const sl_record *record, void *opaque) {
    sl_identity *id = opaque;
    sl_arena_reset(id->arena);
    Sluice__V1__TokensCommand *cmd =
        sl_arena_unpack(id->arena, &sluice__v1__tokens_command__descriptor, record->value, record->value_len);
    if (!cmd)
        return SL_ERR_INVALID;
    const Sluice__V1__CommandMeta *meta =
        cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_TOKEN
            ? cmd->revoke_token->meta
        : cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_SESSION
            ? cmd->revoke_session->meta
        : cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_USER_SESSIONS
            ? cmd->revoke_user_sessions->meta
            : NULL;
    if (meta)
        sl_ctx_adopt_trace(ctx, meta->traceparent);
    Sluice__V1__TokenRevoked revoked = SLUICE__V1__TOKEN_REVOKED__INIT;
    if (cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_TOKEN) {
        const Sluice__V1__RevokeToken *r = cmd->revoke_token;
        revoked.jti = r->jti;
        revoked.expires_at_ms = r->expires_at_ms;
        revoked.reason = r->reason;
        if (strcmp(r->reason, SL_IDENTITY_REASON_ROTATED) == 0 && r->session_id[0]) {
            /* A rotation of a session revoked anywhere (a logout on another
             * instance a moment ago) is refused: the global lookup catches
             * up to what tokens.revoked held when this command was sent. */
            bool session_revoked = false;
            blacklist_reader from = {.ctx = ctx};
            sl_err err = blacklisted(from, "sid", r->session_id, &session_revoked);
            if (!err && !session_revoked && r->issued_at_ms > 0)
                err = user_blacklisted(from, r->user_id, r->session_id, r->issued_at_ms,
                                       &session_revoked);
            if (err)
                return err;
            if (session_revoked) {
                revoked.session_id = r->session_id;
                revoked.already_revoked = true;
                revoked.revoked_at_ms = record->timestamp_ms;
                return answer_revocation(id, ctx, r->meta, &revoked);
            }
        }
        return revoke(id, ctx, record, r->meta, "jti", r->jti, &revoked);
    }
    if (cmd->command_case == SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_USER_SESSIONS)
        return revoke_user_sessions(id, ctx, record, cmd->revoke_user_sessions);
    const Sluice__V1__RevokeSession *r = cmd->revoke_session;
    revoked.session_id = r->session_id;
    revoked.expires_at_ms = r->expires_at_ms;
    revoked.reason = r->reason;
    return revoke(id, ctx, record, r->meta, "sid", r->session_id, &revoked);
}

/* ------------------------------------------------------------------------ */
/* The topology, top to bottom                                               */

void sl_identity_options_from_config(sl_identity_options *options, const sl_config *config) {
    options->application_id = sl_config_get(config, "application.id");
    options->topic_prefix = sl_config_get(config, "identity.topic.prefix");
    options->topic_partitions = (int)sl_config_get_int(config, "identity.topic.partitions");
    options->idempotency_ttl_ms = sl_config_get_int(config, "identity.idempotency.ttl.ms");
    options->idempotency_sweep_interval_ms =
        sl_config_get_int(config, "identity.idempotency.sweep.interval.ms");
    options->revocation_sweep_interval_ms =
        sl_config_get_int(config, "identity.revocation.sweep.interval.ms");
    options->revocation_grace_ms = sl_config_get_int(config, "identity.revocation.grace.ms");
}

static bool name_topic(char *out, size_t size, const char *prefix, const char *name) {
    int n = snprintf(out, size, "%s%s", prefix, name);
    return n >= 0 && (size_t)n < size;
}

sl_identity *sl_identity_add(sl_topology *t, const sl_identity_options *options, char *errstr,
                             size_t errstr_size) {
    sl_identity *id = calloc(1, sizeof(*id));
    if (!id) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    id->options = *options;
    const char *prefix = options->topic_prefix ? options->topic_prefix : "";
    if (!name_topic(id->prefix, sizeof(id->prefix), "", prefix) ||
        !name_topic(id->application_id, sizeof(id->application_id), "",
                    options->application_id ? options->application_id : "") ||
        !name_topic(id->users_commands, sizeof(id->users_commands), prefix, "users.commands") ||
        !name_topic(id->users_events, sizeof(id->users_events), prefix, "users.events") ||
        !name_topic(id->tokens_commands, sizeof(id->tokens_commands), prefix, "tokens.commands") ||
        !name_topic(id->tokens_revoked, sizeof(id->tokens_revoked), prefix, "tokens.revoked")) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "identity.topic.prefix is too long");
        goto fail;
    }
    id->options.topic_prefix = id->prefix;
    id->options.application_id = id->application_id;
    id->arena = sl_arena_new(ARENA_CAP);
    if (!id->arena) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    int partitions = options->topic_partitions;
    sl_err err;
    const char *step;
    /* Topics the identity topology owns (created if missing; tokens.revoked
     * must be compacted: it is the blacklist's source of truth). */
    if ((err = sl_topology_add_topic(t, id->users_commands, partitions, false)) ||
        (err = sl_topology_add_topic(t, id->users_events, partitions, false)) ||
        (err = sl_topology_add_topic(t, id->tokens_commands, partitions, false)) ||
        (err = sl_topology_add_topic(t, id->tokens_revoked, partitions, true))) {
        step = "topics (check identity.topic.prefix)";
        goto topology_fail;
    }
    /* users.commands -> registrations and password changes, unique by key. */
    step = "users";
    if ((err = sl_topology_add_source(t, SRC_USERS, id->users_commands, validate_users_command,
                                      id)) ||
        (err = sl_topology_set_keyed(t, SRC_USERS)) ||
        (err = sl_topology_add_store(t, SL_IDENTITY_STORE_USERS_BY_EMAIL, SRC_USERS)) ||
        (err = sl_topology_add_store(t, STORE_IDEM, SRC_USERS)) ||
        (err = sl_topology_add_store(t, STORE_IDEM_TTL, SRC_USERS)) ||
        (err = sl_topology_add_processor(t, "users-commands", SRC_USERS, process_users_command,
                                         id)) ||
        (err = sl_topology_add_sink(t, SINK_EVENTS, id->users_events)))
        goto topology_fail;
    /* -> users-by-id, through a repartition topic keyed by user id. */
    step = "users-by-id";
    if ((err = sl_topology_add_repartition(t, REPARTITION_BYID, 0)) ||
        (err = sl_topology_add_store(t, SL_IDENTITY_STORE_USERS_BY_ID, REPARTITION_BYID)) ||
        (err =
             sl_topology_add_processor(t, "users-by-id", REPARTITION_BYID, process_user_by_id, id)))
        goto topology_fail;
    /* tokens.commands -> revocations -> tokens.revoked -> blacklist. */
    step = "tokens";
    if ((err = sl_topology_add_source(t, SRC_TOKENS, id->tokens_commands, validate_tokens_command,
                                      id)) ||
        (err = sl_topology_set_keyed(t, SRC_TOKENS)) ||
        (err = sl_topology_add_store(t, STORE_REVOKED, SRC_TOKENS)) ||
        (err = sl_topology_add_store(t, STORE_REVOKED_EX, SRC_TOKENS)) ||
        (err = sl_topology_add_processor(t, "tokens-commands", SRC_TOKENS, process_tokens_command,
                                         id)) ||
        (err = sl_topology_add_sink(t, SINK_REVOKED, id->tokens_revoked)) ||
        (err = sl_topology_add_global_store(t, SL_IDENTITY_STORE_BLACKLIST, id->tokens_revoked)))
        goto topology_fail;
    /* What each store's values are, for the state endpoint. */
    step = "store types";
    if ((err = sl_topology_describe_store(t, SL_IDENTITY_STORE_USERS_BY_EMAIL,
                                          &sluice__v1__user_record__descriptor)) ||
        (err = sl_topology_describe_store(t, SL_IDENTITY_STORE_USERS_BY_ID,
                                          &sluice__v1__user_record__descriptor)) ||
        (err =
             sl_topology_describe_store(t, STORE_IDEM, &sluice__v1__command_outcome__descriptor)) ||
        (err = sl_topology_describe_store(t, STORE_REVOKED,
                                          &sluice__v1__revocation_record__descriptor)) ||
        (err = sl_topology_describe_store(t, SL_IDENTITY_STORE_BLACKLIST,
                                          &sluice__v1__token_revoked__descriptor)))
        goto topology_fail;
    /* Timers that forget what can no longer matter. */
    step = "punctuators";
    if ((err = sl_topology_add_punctuator(t, "users-idempotency-sweep", SL_PUNCTUATE_WALL_CLOCK,
                                          options->idempotency_sweep_interval_ms, sweep_idempotency,
                                          id)) ||
        (err = sl_topology_add_punctuator(t, "tokens-revocations-sweep", SL_PUNCTUATE_WALL_CLOCK,
                                          options->revocation_sweep_interval_ms, sweep_revocations,
                                          id)))
        goto topology_fail;
    /* Outcomes to <application.id>-replies. */
    step = "replies";
    if ((err = sl_topology_add_replies(t)))
        goto topology_fail;
    return id;
topology_fail:
    sl_fail(errstr, errstr_size, err, "identity topology: cannot add %s: %s", step,
            sl_err_msg(err));
fail:
    sl_identity_destroy(id);
    return NULL;
}

void sl_identity_destroy(sl_identity *identity) {
    if (!identity)
        return;
    sl_arena_destroy(identity->arena);
    free(identity);
}

sl_err sl_identity_user_revoked(sl_engine *engine, const char *user_id, const char *session_id,
                                int64_t issued_at_s, bool *revoked) {
    *revoked = false;
    return user_blacklisted((blacklist_reader){.engine = engine}, user_id, session_id,
                            issued_at_s * 1000, revoked);
}

sl_err sl_identity_token_revoked(sl_engine *engine, const char *jti, const char *session_id,
                                 bool *revoked) {
    *revoked = false;
    blacklist_reader from = {.engine = engine};
    sl_err err = blacklisted(from, "jti", jti, revoked);
    if (!err && !*revoked)
        err = blacklisted(from, "sid", session_id, revoked);
    return err;
}
