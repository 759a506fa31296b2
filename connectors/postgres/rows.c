/*
 * rows.c: the Postgres sink's batch (see sink.c): records decoded into rows
 * in the batch arena, undecodable ones set aside for the dead-letter topic,
 * and message rows that a later row of the batch repeats marked superseded.
 */
#include "connectors/postgres/sink.h"
#include "connectors/postgres/sink_int.h"

#include <stdio.h>
#include <string.h>

#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"

/* ---- the batch ---------------------------------------------------------- */

void sl_pgsink_batch_clear(sl_pgsink *sink) {
    for (size_t i = 0; i < sink->n_msgs; i++)
        rd_kafka_message_destroy(sink->msgs[i].m);
    sink->n_msgs = sink->n_rows = sink->n_dlq = 0;
    sl_arena_reset(sink->arena);
    for (int t = 0; t < N_TOPICS; t++)
        for (int p = 0; p < MAX_PARTITIONS; p++)
            sink->parts[t][p].pending_next = sink->parts[t][p].committed_next;
}

void sl_pgsink_add_dlq(sl_pgsink *sink, size_t msg, const char *reason) {
    dlq_item *d = &sink->dlq[sink->n_dlq++]; /* at most one per message */
    d->msg = msg;
    snprintf(d->reason, sizeof(d->reason), "%s", reason);
}

/* Decode a record value into the batch arena. protobuf-c keeps strings as C
 * strings, so a string with a NUL byte would silently lose its tail: a
 * value whose re-encoding has another size than the record is refused
 * rather than written shortened. */
void sl_pgsink_decode_record(sl_pgsink *sink, size_t msg, int topic) {
    const rd_kafka_message_t *m = sink->msgs[msg].m;
    ProtobufCAllocator allocator = sl_arena_protobuf_allocator(sink->arena);
    const uint8_t *value = m->payload ? m->payload : (const uint8_t *)"";
    const ProtobufCMessage *base = NULL;
    const void *event = NULL;
    const char *what = topic == T_USERS ? "UsersEvent" : "DialogsEvent";
    bool empty = false;
    if (topic == T_USERS) {
        Sluice__V1__UsersEvent *ev = sluice__v1__users_event__unpack(&allocator, m->len, value);
        base = ev ? &ev->base : NULL;
        if (ev && ev->event_case == SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED)
            event = ev->user_registered;
        empty = ev && ev->event_case == SLUICE__V1__USERS_EVENT__EVENT__NOT_SET;
    } else {
        Sluice__V1__DialogsEvent *ev = sluice__v1__dialogs_event__unpack(&allocator, m->len, value);
        base = ev ? &ev->base : NULL;
        if (ev && ev->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT)
            event = ev->message_sent;
        empty = ev && ev->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT__NOT_SET;
    }
    char reason[256];
    if (!base) {
        snprintf(reason, sizeof(reason), "pgsink: value is not a valid %s", what);
    } else if (empty) {
        snprintf(reason, sizeof(reason), "pgsink: %s envelope has no event set", what);
    } else if (protobuf_c_message_get_packed_size(base) != m->len) {
        snprintf(reason, sizeof(reason),
                 "pgsink: %s re-encodes to another size (a string with a NUL byte, or a "
                 "non-canonical encoding)",
                 what);
    } else {
        if (event) /* other event types (rejections, password changes) make no row */
            sink->rows[sink->n_rows++] = (batch_row){.msg = msg, .topic = topic, .event = event};
        return;
    }
    sl_pgsink_add_dlq(sink, msg, reason);
}

static uint64_t message_key_hash(const Sluice__V1__MessageSent *ms) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)ms->dialog_id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h ^= (uint64_t)ms->sequence;
    h *= 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static bool same_message_key(const Sluice__V1__MessageSent *a, const Sluice__V1__MessageSent *b) {
    return a->sequence == b->sequence && strcmp(a->dialog_id, b->dialog_id) == 0;
}

/* Mark every message row that a later row of the batch repeats (same
 * dialog_id and sequence) as superseded: the last one wins, as in the
 * staged path's DISTINCT ON. The set has at least twice as many slots as
 * the batch has rows, so probing always ends. */
void sl_pgsink_dedupe_messages(sl_pgsink *sink) {
    size_t mask = sink->n_key_slots - 1;
    memset(sink->key_slots, 0, sink->n_key_slots * sizeof(*sink->key_slots));
    for (size_t i = 0; i < sink->n_rows; i++) {
        batch_row *row = &sink->rows[i];
        row->superseded = false;
        if (row->topic != T_MESSAGES)
            continue;
        const Sluice__V1__MessageSent *ms = row->event;
        for (size_t slot = message_key_hash(ms) & mask;; slot = (slot + 1) & mask) {
            uint32_t held = sink->key_slots[slot];
            if (held == 0) {
                sink->key_slots[slot] = (uint32_t)i + 1;
                break;
            }
            if (same_message_key(sink->rows[held - 1].event, ms)) {
                sink->rows[held - 1].superseded = true;
                sink->key_slots[slot] = (uint32_t)i + 1;
                break;
            }
        }
    }
}
