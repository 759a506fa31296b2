/*
 * dialogs.c: the dialogs topology (see dialogs.h for the picture).
 *
 * Design note.
 *
 * Sharding. dialogs.commands is keyed by the dialog id, the two user ids in
 * ascending order: every message of one dialog is decided by the one task
 * that owns the dialog's partition, which gives the per-dialog sequence
 * without coordination (read dialogs-heads, add one, write; the engine
 * processes a task's records one at a time and reads its own uncommitted
 * writes). A user who writes to many partners touches many dialog ids,
 * which murmur2 spreads over every partition: no hot shard for the "Lady
 * Gaga" user. The messages of a dialog are the keys "<dialog id><8-byte
 * big-endian sequence>" of dialogs-messages: one ordered range, read with
 * a prefix scan and skip/limit.
 *
 * Idempotency. Each outcome that cannot change (MessageSent, INVALID) is
 * remembered under "<dialog id>/<command id>" with an expiry index, as in
 * identity; a repeated id is answered from it and stores nothing.
 * UNKNOWN_RECIPIENT is not remembered: it changes once the recipient's
 * registration reaches dialogs.users, so a retry decides again.
 *
 * Recipients. users-by-id belongs to identity's users-by-id task, and a
 * task cannot read another source's store; a repartition round trip
 * (command -> recipient's partition -> back) would double the latency of
 * every message. Instead the dialogs-users-feed processor copies each
 * UserRegistered of users.events (user id only, no profile or password
 * hash) to the compacted dialogs.users topic, which every instance reads
 * into the global store dialogs-users; the check is a local lookup. Lag
 * is closed at both ends: POST /user/register answers only once the user
 * is in dialogs-users (so in the topic, committed), and a lookup that
 * misses reads the topic up to its ends as of now before it answers
 * (globals_catch_up), so a message to a user whose registration was
 * acknowledged before the message was sent is never refused.
 * UNKNOWN_RECIPIENT stays for ids that are not registered (or were
 * registered around the engine, straight on users.commands, and not fed
 * yet: retry). Compaction keeps every user.
 *
 * The per-user index. Each message produces the whole new DialogSummary of
 * both participants (absolute values: last sequence, preview, unread
 * count) and hands them to the record cache (sl_ctx_emit_coalesced) under
 * "<user id><dialog id>", keyed by the user id for the repartition: a hot
 * user's partition receives one update per dialog per commit, not one per
 * message. The dialogs-by-user processor keeps an update only if its
 * sequence is not older than the stored one.
 *
 * Memory: every decode and every pack uses one bounded arena, reset at the
 * start of each callback (all callbacks run on the loop thread).
 */
#include "topology/dialogs/dialogs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/base/arena.h"
#include "processor/base/text.h"
#include "topology/command.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"
#include "sluice/v1/meta.pb-c.h"

#define ARENA_CAP      (1u * 1024 * 1024) /* > 2x the largest record we accept */
#define IDEM_KEY_MAX   (SL_DIALOGS_ID_LEN + 1 + SL_COMMAND_ID_MAX)

#define SRC_DIALOGS     "dialogs"
#define SRC_USERS_FEED  "dialogs-users-feed"
#define REPARTITION_IDX "dialogs-by-user"
#define SINK_EVENTS     "dialogs-events"
#define SINK_USERS      "dialogs-users-out"
#define STORE_IDEM      "dialogs-idempotency"
#define STORE_IDEM_TTL  "dialogs-idempotency-ttl"

struct sl_dialogs {
    sl_dialogs_options options;
    char prefix[128];
    char application_id[256];
    char users_events[250];
    char commands[250], events[250], users[250];
    sl_arena *arena;
};

/* ------------------------------------------------------------------------ */
/* Keys and checks (any thread)                                              */

bool sl_dialogs_valid_user_id(const char *s) {
    return sl_uuid_valid(s);
}

bool sl_dialogs_id(const char *a, const char *b, char out[SL_DIALOGS_ID_LEN + 1]) {
    if (!sl_dialogs_valid_user_id(a) || !sl_dialogs_valid_user_id(b))
        return false;
    int order = strcmp(a, b);
    if (order == 0)
        return false;
    snprintf(out, SL_DIALOGS_ID_LEN + 1, "%s:%s", order < 0 ? a : b, order < 0 ? b : a);
    return true;
}

size_t sl_dialogs_message_key(const char *dialog_id, int64_t sequence,
                              unsigned char out[SL_DIALOGS_ID_LEN + 8]) {
    size_t n = strnlen(dialog_id, SL_DIALOGS_ID_LEN);
    memcpy(out, dialog_id, n);
    sl_be64_put(out + n, sequence);
    return n + 8;
}

/* The first bytes of `text`, at most SL_DIALOGS_PREVIEW_MAX, cut before a
 * UTF-8 continuation byte. */
static size_t preview_len(const char *text) {
    size_t n = strnlen(text, SL_DIALOGS_PREVIEW_MAX + 1);
    if (n <= SL_DIALOGS_PREVIEW_MAX)
        return n;
    n = SL_DIALOGS_PREVIEW_MAX;
    while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* NULL when fine, else a detail naming the field (never its value). */
static const char *check_send(const Sluice__V1__SendMessage *cmd, const sl_record *record,
                              char expected[SL_DIALOGS_ID_LEN + 1]) {
    if (!sl_dialogs_valid_user_id(cmd->sender_id))
        return "sender_id: not a lower-case UUID";
    if (!sl_dialogs_valid_user_id(cmd->recipient_id))
        return "recipient_id: not a lower-case UUID";
    if (!sl_dialogs_id(cmd->sender_id, cmd->recipient_id, expected))
        return "recipient_id: equals sender_id";
    if (strcmp(cmd->dialog_id, expected) != 0)
        return "dialog_id: not \"<lower user id>:<higher user id>\"";
    if (!record->key || record->key_len != SL_DIALOGS_ID_LEN ||
        memcmp(record->key, expected, SL_DIALOGS_ID_LEN) != 0)
        return "key: must be the dialog id";
    size_t len = strlen(cmd->text);
    if (len == 0)
        return "text: empty";
    if (len > SL_DIALOGS_MAX_TEXT)
        return "text: longer than 4096 bytes";
    if (!sl_utf8_valid(cmd->text, len))
        return "text: not valid UTF-8";
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* dialogs.commands                                                          */

static bool validate_command(const sl_record *record, char *reason, size_t reason_size,
                             void *opaque) {
    sl_dialogs *d = opaque;
    sl_arena_reset(d->arena);
    Sluice__V1__DialogsCommand *cmd =
        sl_arena_unpack(d->arena, &sluice__v1__dialogs_command__descriptor, record->value, record->value_len);
    const char *why = NULL;
    if (!cmd)
        why = "value is not a sluice.v1.DialogsCommand";
    else if (cmd->command_case != SLUICE__V1__DIALOGS_COMMAND__COMMAND_SEND_MESSAGE)
        why = "empty DialogsCommand envelope (no command set)";
    else if (!cmd->send_message->meta || !cmd->send_message->meta->command_id[0])
        why = "SendMessage.meta.command_id: missing";
    else if (strlen(cmd->send_message->meta->command_id) > SL_COMMAND_ID_MAX)
        why = "SendMessage.meta.command_id: longer than 128 bytes";
    if (why)
        snprintf(reason, reason_size, "%s", why);
    return why == NULL;
}

/* The idempotency key of a command in the dialog its record key names
 * (the key must name the record's partition, so an invalid dialog id is
 * remembered under the record key), or 0 (see sl_command_key). */
static size_t idempotency_key(const sl_record *record, const Sluice__V1__CommandMeta *meta,
                              char out[IDEM_KEY_MAX + 1]) {
    char key_id[SL_DIALOGS_ID_LEN + 1] = "";
    if (record->key && record->key_len <= SL_DIALOGS_ID_LEN)
        snprintf(key_id, sizeof(key_id), "%.*s", (int)record->key_len, (const char *)record->key);
    return sl_command_key(key_id, meta, out, IDEM_KEY_MAX + 1);
}

/* Emit the event, answer, and remember the outcome when `remember`. */
static sl_err outcome(sl_dialogs *d, sl_ctx *ctx, const sl_record *record,
                      const Sluice__V1__CommandMeta *meta, const Sluice__V1__DialogsEvent *event,
                      const void *payload_message, bool remember) {
    char key[IDEM_KEY_MAX + 1];
    sl_command_memory memory = {
        .store = STORE_IDEM,
        .ttl_index = STORE_IDEM_TTL,
        .key = key,
        .key_len = remember ? idempotency_key(record, meta, key) : 0,
        .expires_at_ms = record->timestamp_ms + d->options.idempotency_ttl_ms,
    };
    return sl_command_outcome(ctx, d->arena, meta, SINK_EVENTS, record->key, record->key_len,
                              event, payload_message, &memory);
}

static sl_err reject(sl_dialogs *d, sl_ctx *ctx, const sl_record *record,
                     const Sluice__V1__SendMessage *cmd, Sluice__V1__MessageRejected__Reason reason,
                     const char *detail) {
    Sluice__V1__MessageRejected rejected = SLUICE__V1__MESSAGE_REJECTED__INIT;
    rejected.meta = cmd->meta;
    rejected.dialog_id = cmd->dialog_id;
    rejected.sender_id = cmd->sender_id;
    rejected.recipient_id = cmd->recipient_id;
    rejected.reason = reason;
    rejected.detail = (char *)(detail ? detail : "");
    Sluice__V1__DialogsEvent event = SLUICE__V1__DIALOGS_EVENT__INIT;
    event.event_case = SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_REJECTED;
    event.message_rejected = &rejected;
    return outcome(d, ctx, record, cmd->meta, &event, &rejected,
                   reason != SLUICE__V1__MESSAGE_REJECTED__REASON__UNKNOWN_RECIPIENT);
}

/* Hand user_id's new index entry for this dialog to the record cache. */
static sl_err index_update(sl_dialogs *d, sl_ctx *ctx, const Sluice__V1__MessageSent *sent,
                           const char *user_id, const char *partner_id, int64_t unread) {
    Sluice__V1__DialogSummary summary = SLUICE__V1__DIALOG_SUMMARY__INIT;
    size_t preview = preview_len(sent->text);
    char *text = sl_arena_alloc(d->arena, preview + 1);
    if (!text)
        return SL_ERR_FULL;
    memcpy(text, sent->text, preview);
    text[preview] = '\0';
    summary.dialog_id = sent->dialog_id;
    summary.user_id = (char *)user_id;
    summary.partner_id = (char *)partner_id;
    summary.last_sequence = sent->sequence;
    summary.last_sender_id = sent->sender_id;
    summary.last_preview = text;
    summary.last_at_ms = sent->sent_at_ms;
    summary.unread = unread;
    size_t len;
    uint8_t *bytes = sl_arena_pack(d->arena, &summary, &len);
    if (!bytes)
        return SL_ERR_FULL;
    char cache_key[SL_DIALOGS_USER_ID_LEN + SL_DIALOGS_ID_LEN];
    memcpy(cache_key, user_id, SL_DIALOGS_USER_ID_LEN);
    memcpy(cache_key + SL_DIALOGS_USER_ID_LEN, sent->dialog_id, SL_DIALOGS_ID_LEN);
    return sl_ctx_emit_coalesced(ctx, REPARTITION_IDX, cache_key, sizeof(cache_key), user_id,
                                 SL_DIALOGS_USER_ID_LEN, bytes, len);
}

static sl_err send_message(sl_dialogs *d, sl_ctx *ctx, const sl_record *record,
                           const Sluice__V1__SendMessage *cmd) {
    /* A command id seen before in this dialog: answer it again. */
    char key[IDEM_KEY_MAX + 1];
    bool answered;
    sl_err err = sl_command_answer_repeat(ctx, d->arena, STORE_IDEM, key,
                                          idempotency_key(record, cmd->meta, key), cmd->meta,
                                          &answered);
    if (err || answered)
        return err;
    char dialog_id[SL_DIALOGS_ID_LEN + 1];
    const char *detail = check_send(cmd, record, dialog_id);
    if (detail)
        return reject(d, ctx, record, cmd, SLUICE__V1__MESSAGE_REJECTED__REASON__INVALID, detail);
    char *user;
    size_t user_len;
    err = sl_ctx_global_get(ctx, SL_DIALOGS_STORE_USERS, cmd->recipient_id,
                            strlen(cmd->recipient_id), &user, &user_len);
    if (err == SL_ERR_NOT_FOUND)
        return reject(d, ctx, record, cmd, SLUICE__V1__MESSAGE_REJECTED__REASON__UNKNOWN_RECIPIENT,
                      "recipient_id: not a registered user");
    if (err)
        return err;
    free(user);

    Sluice__V1__DialogHead *head = NULL;
    Sluice__V1__DialogHead fresh = SLUICE__V1__DIALOG_HEAD__INIT;
    char *stored;
    size_t stored_len;
    err = sl_ctx_get(ctx, SL_DIALOGS_STORE_HEADS, dialog_id, SL_DIALOGS_ID_LEN, &stored,
                     &stored_len);
    if (err == SL_OK) {
        head = sl_arena_unpack(d->arena, &sluice__v1__dialog_head__descriptor, stored, stored_len);
        free(stored);
        if (!head)
            return SL_ERR_STORE;
    } else if (err == SL_ERR_NOT_FOUND) {
        head = &fresh;
    } else {
        return err;
    }
    bool sender_is_lower = strcmp(cmd->sender_id, cmd->recipient_id) < 0;
    head->last_sequence++;
    head->last_at_ms = record->timestamp_ms;
    /* Answering means having read: the sender's count restarts. */
    if (sender_is_lower) {
        head->unread_lower = 0;
        head->unread_higher++;
    } else {
        head->unread_higher = 0;
        head->unread_lower++;
    }
    Sluice__V1__MessageSent sent = SLUICE__V1__MESSAGE_SENT__INIT;
    sent.meta = cmd->meta;
    sent.dialog_id = dialog_id;
    sent.sequence = head->last_sequence;
    sent.sender_id = cmd->sender_id;
    sent.recipient_id = cmd->recipient_id;
    sent.text = cmd->text;
    sent.sent_at_ms = record->timestamp_ms; /* a replay computes the same state */

    /* The stored message carries no meta: reply details are not state. */
    Sluice__V1__MessageSent stored_message = sent;
    stored_message.meta = NULL;
    size_t message_len, head_len;
    uint8_t *message_bytes = sl_arena_pack(d->arena, &stored_message, &message_len);
    uint8_t *head_bytes = sl_arena_pack(d->arena, head, &head_len);
    if (!message_bytes || !head_bytes)
        return SL_ERR_FULL;
    unsigned char message_key[SL_DIALOGS_ID_LEN + 8];
    size_t message_key_len = sl_dialogs_message_key(dialog_id, sent.sequence, message_key);
    if ((err = sl_ctx_put(ctx, SL_DIALOGS_STORE_MESSAGES, message_key, message_key_len,
                          message_bytes, message_len)) ||
        (err = sl_ctx_put(ctx, SL_DIALOGS_STORE_HEADS, dialog_id, SL_DIALOGS_ID_LEN, head_bytes,
                          head_len)) ||
        (err = index_update(d, ctx, &sent, cmd->sender_id, cmd->recipient_id, 0)) ||
        (err = index_update(d, ctx, &sent, cmd->recipient_id, cmd->sender_id,
                            sender_is_lower ? head->unread_higher : head->unread_lower)))
        return err;
    Sluice__V1__DialogsEvent event = SLUICE__V1__DIALOGS_EVENT__INIT;
    event.event_case = SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT;
    event.message_sent = &sent;
    return outcome(d, ctx, record, cmd->meta, &event, &sent, true);
}

static sl_err process_command(sl_ctx *ctx, const sl_record *record, void *opaque) {
    sl_dialogs *d = opaque;
    sl_arena_reset(d->arena);
    Sluice__V1__DialogsCommand *cmd =
        sl_arena_unpack(d->arena, &sluice__v1__dialogs_command__descriptor, record->value, record->value_len);
    if (!cmd || cmd->command_case != SLUICE__V1__DIALOGS_COMMAND__COMMAND_SEND_MESSAGE)
        return SL_ERR_INVALID;
    return send_message(d, ctx, record, cmd->send_message);
}

/* ------------------------------------------------------------------------ */
/* The per-user index                                                        */

static sl_err process_index_update(sl_ctx *ctx, const sl_record *record, void *opaque) {
    sl_dialogs *d = opaque;
    sl_arena_reset(d->arena);
    Sluice__V1__DialogSummary *summary =
        sl_arena_unpack(d->arena, &sluice__v1__dialog_summary__descriptor, record->value, record->value_len);
    if (!summary || !sl_dialogs_valid_user_id(summary->user_id) ||
        strlen(summary->dialog_id) != SL_DIALOGS_ID_LEN || !record->key ||
        record->key_len != SL_DIALOGS_USER_ID_LEN ||
        memcmp(record->key, summary->user_id, SL_DIALOGS_USER_ID_LEN) != 0) {
        sl_ctx_reject(ctx, "not a DialogSummary keyed by its user id");
        return SL_OK;
    }
    char key[SL_DIALOGS_USER_ID_LEN + SL_DIALOGS_ID_LEN];
    memcpy(key, summary->user_id, SL_DIALOGS_USER_ID_LEN);
    memcpy(key + SL_DIALOGS_USER_ID_LEN, summary->dialog_id, SL_DIALOGS_ID_LEN);
    char *stored;
    size_t stored_len;
    sl_err err = sl_ctx_get(ctx, SL_DIALOGS_STORE_BY_USER, key, sizeof(key), &stored, &stored_len);
    if (err == SL_OK) {
        Sluice__V1__DialogSummary *previous =
            sl_arena_unpack(d->arena, &sluice__v1__dialog_summary__descriptor, stored, stored_len);
        free(stored);
        if (previous && previous->last_sequence > summary->last_sequence)
            return SL_OK; /* older than what we have */
    } else if (err != SL_ERR_NOT_FOUND) {
        return err;
    }
    return sl_ctx_put(ctx, SL_DIALOGS_STORE_BY_USER, key, sizeof(key), record->value,
                      record->value_len);
}

/* ------------------------------------------------------------------------ */
/* The copy of registered users                                              */

static sl_err process_users_event(sl_ctx *ctx, const sl_record *record, void *opaque) {
    sl_dialogs *d = opaque;
    sl_arena_reset(d->arena);
    Sluice__V1__UsersEvent *event =
        sl_arena_unpack(d->arena, &sluice__v1__users_event__descriptor, record->value, record->value_len);
    if (!event || event->event_case != SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED)
        return SL_OK; /* only registrations matter here; identity owns the rest */
    const Sluice__V1__UserRegistered *registered = event->user_registered;
    if (!sl_dialogs_valid_user_id(registered->user_id))
        return SL_OK;
    Sluice__V1__DialogUser user = SLUICE__V1__DIALOG_USER__INIT;
    user.user_id = registered->user_id;
    user.registered_at_ms = registered->registered_at_ms;
    size_t len;
    uint8_t *bytes = sl_arena_pack(d->arena, &user, &len);
    if (!bytes)
        return SL_ERR_FULL;
    return sl_ctx_emit(ctx, SINK_USERS, user.user_id, strlen(user.user_id), bytes, len, -1);
}

/* ------------------------------------------------------------------------ */
/* Forgetting command ids                                                    */

static sl_err sweep_idempotency(sl_ctx *ctx, int64_t now_ms, void *opaque) {
    (void)opaque;
    if (strcmp(sl_ctx_source(ctx), SRC_DIALOGS) != 0)
        return SL_OK;
    return sl_expiry_sweep(ctx, STORE_IDEM_TTL, STORE_IDEM, now_ms + 1);
}

/* ------------------------------------------------------------------------ */
/* The topology, top to bottom                                               */

void sl_dialogs_options_from_config(sl_dialogs_options *options, const sl_config *config,
                                    char *users_events, size_t users_events_size) {
    options->application_id = sl_config_get(config, "application.id");
    options->topic_prefix = sl_config_get(config, "dialogs.topic.prefix");
    snprintf(users_events, users_events_size, "%susers.events",
             sl_config_get(config, "identity.topic.prefix"));
    options->users_events_topic = users_events;
    options->topic_partitions = (int)sl_config_get_int(config, "dialogs.topic.partitions");
    options->idempotency_ttl_ms = sl_config_get_int(config, "dialogs.idempotency.ttl.ms");
    options->idempotency_sweep_interval_ms =
        sl_config_get_int(config, "dialogs.idempotency.sweep.interval.ms");
}

static bool name_topic(char *out, size_t size, const char *prefix, const char *name) {
    int n = snprintf(out, size, "%s%s", prefix, name);
    return n >= 0 && (size_t)n < size;
}

sl_dialogs *sl_dialogs_add(sl_topology *t, const sl_dialogs_options *options, char *errstr,
                           size_t errstr_size) {
    sl_dialogs *d = calloc(1, sizeof(*d));
    if (!d) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    d->options = *options;
    const char *prefix = options->topic_prefix ? options->topic_prefix : "";
    if (!name_topic(d->prefix, sizeof(d->prefix), "", prefix) ||
        !name_topic(d->application_id, sizeof(d->application_id), "",
                    options->application_id ? options->application_id : "") ||
        !name_topic(d->users_events, sizeof(d->users_events), "",
                    options->users_events_topic ? options->users_events_topic : "") ||
        !d->users_events[0] ||
        !name_topic(d->commands, sizeof(d->commands), prefix, "dialogs.commands") ||
        !name_topic(d->events, sizeof(d->events), prefix, "dialogs.events") ||
        !name_topic(d->users, sizeof(d->users), prefix, "dialogs.users")) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                "dialogs.topic.prefix is too long or users.events is not named");
        goto fail;
    }
    d->options.topic_prefix = d->prefix;
    d->options.application_id = d->application_id;
    d->options.users_events_topic = d->users_events;
    d->arena = sl_arena_new(ARENA_CAP);
    if (!d->arena) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    int partitions = options->topic_partitions;
    sl_err err;
    const char *step = "topics (check dialogs.topic.prefix)";
    /* Topics the dialogs topology owns; dialogs.users must be compacted:
     * it is the recipients' source of truth. */
    if ((err = sl_topology_add_topic(t, d->commands, partitions, false)) ||
        (err = sl_topology_add_topic(t, d->events, partitions, false)) ||
        (err = sl_topology_add_topic(t, d->users, partitions, true)))
        goto topology_fail;
    /* users.events -> dialogs.users -> global store dialogs-users. */
    step = "users feed";
    if ((err = sl_topology_add_source(t, SRC_USERS_FEED, d->users_events, NULL, d)) ||
        (err = sl_topology_add_processor(t, "dialogs-users-feed", SRC_USERS_FEED,
                                         process_users_event, d)) ||
        (err = sl_topology_add_sink(t, SINK_USERS, d->users)) ||
        (err = sl_topology_add_global_store(t, SL_DIALOGS_STORE_USERS, d->users)))
        goto topology_fail;
    /* dialogs.commands -> messages, per-dialog sequences, events, replies. */
    step = "dialogs";
    if ((err = sl_topology_add_source(t, SRC_DIALOGS, d->commands, validate_command, d)) ||
        (err = sl_topology_set_keyed(t, SRC_DIALOGS)) ||
        (err = sl_topology_add_store(t, SL_DIALOGS_STORE_MESSAGES, SRC_DIALOGS)) ||
        (err = sl_topology_add_store(t, SL_DIALOGS_STORE_HEADS, SRC_DIALOGS)) ||
        (err = sl_topology_add_store(t, STORE_IDEM, SRC_DIALOGS)) ||
        (err = sl_topology_add_store(t, STORE_IDEM_TTL, SRC_DIALOGS)) ||
        (err = sl_topology_add_processor(t, "dialogs-commands", SRC_DIALOGS, process_command,
                                         d)) ||
        (err = sl_topology_add_sink(t, SINK_EVENTS, d->events)))
        goto topology_fail;
    /* -> the per-user index, through a repartition topic keyed by user id
     * (fed through the record cache). */
    step = "dialogs-by-user";
    if ((err = sl_topology_add_repartition(t, REPARTITION_IDX, partitions)) ||
        (err = sl_topology_add_store(t, SL_DIALOGS_STORE_BY_USER, REPARTITION_IDX)) ||
        (err = sl_topology_add_processor(t, "dialogs-by-user", REPARTITION_IDX,
                                         process_index_update, d)))
        goto topology_fail;
    /* What each store's values are, for the state endpoint. */
    step = "store types";
    if ((err = sl_topology_describe_store(t, SL_DIALOGS_STORE_MESSAGES,
                                          &sluice__v1__message_sent__descriptor)) ||
        (err = sl_topology_describe_store(t, SL_DIALOGS_STORE_HEADS,
                                          &sluice__v1__dialog_head__descriptor)) ||
        (err = sl_topology_describe_store(t, SL_DIALOGS_STORE_BY_USER,
                                          &sluice__v1__dialog_summary__descriptor)) ||
        (err =
             sl_topology_describe_store(t, STORE_IDEM, &sluice__v1__command_outcome__descriptor)) ||
        (err = sl_topology_describe_store(t, SL_DIALOGS_STORE_USERS,
                                          &sluice__v1__dialog_user__descriptor)))
        goto topology_fail;
    step = "punctuators";
    if ((err = sl_topology_add_punctuator(t, "dialogs-idempotency-sweep", SL_PUNCTUATE_WALL_CLOCK,
                                          options->idempotency_sweep_interval_ms,
                                          sweep_idempotency, d)))
        goto topology_fail;
    step = "replies";
    if ((err = sl_topology_add_replies(t)))
        goto topology_fail;
    return d;
topology_fail:
    sl_fail(errstr, errstr_size, err, "dialogs topology: cannot add %s: %s", step,
            sl_err_msg(err));
fail:
    sl_dialogs_destroy(d);
    return NULL;
}

void sl_dialogs_destroy(sl_dialogs *dialogs) {
    if (!dialogs)
        return;
    sl_arena_destroy(dialogs->arena);
    free(dialogs);
}
