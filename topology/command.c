/*
 * command.c: replies to commands, outcomes remembered by command id, and
 * expiry indexes, shared by the domain topologies. See command.h.
 */
#include "topology/command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/v1/identity.pb-c.h" /* CommandOutcome */

void sl_be64_put(uint8_t out[8], int64_t value) {
    uint64_t v = value < 0 ? 0 : (uint64_t)value;
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)(v & 0xff);
}

sl_err sl_command_reply(sl_ctx *ctx, sl_arena *arena, const Sluice__V1__CommandMeta *meta,
                        const char *type, const uint8_t *payload, size_t payload_len) {
    if (!meta || !meta->reply_to[0])
        return SL_OK;
    Sluice__V1__Reply answer = SLUICE__V1__REPLY__INIT;
    answer.correlation_id = meta->correlation_id;
    answer.command_id = meta->command_id;
    answer.type = (char *)type;
    answer.payload.data = (uint8_t *)payload;
    answer.payload.len = payload_len;
    size_t len;
    uint8_t *bytes = sl_arena_pack(arena, &answer, &len);
    if (!bytes)
        return SL_ERR_FULL;
    return sl_ctx_reply(ctx, meta->reply_to, meta->reply_key, strlen(meta->reply_key), bytes, len);
}

size_t sl_command_key(const char *scope, const Sluice__V1__CommandMeta *meta, char *out,
                      size_t out_size) {
    if (!meta || !meta->command_id[0] || strlen(meta->command_id) > SL_COMMAND_ID_MAX)
        return 0;
    int n = scope ? snprintf(out, out_size, "%s/%s", scope, meta->command_id)
                  : snprintf(out, out_size, "%s", meta->command_id);
    return n > 0 && (size_t)n < out_size ? (size_t)n : 0;
}

static sl_err remember(sl_ctx *ctx, sl_arena *arena, const sl_command_memory *memory,
                       const char *type, const uint8_t *payload, size_t payload_len) {
    if (memory->key_len > SL_EXPIRY_KEY_MAX)
        return SL_ERR_INVALID;
    Sluice__V1__CommandOutcome outcome = SLUICE__V1__COMMAND_OUTCOME__INIT;
    outcome.type = (char *)type;
    outcome.payload.data = (uint8_t *)payload;
    outcome.payload.len = payload_len;
    outcome.expires_at_ms = memory->expires_at_ms;
    size_t outcome_len;
    uint8_t *outcome_bytes = sl_arena_pack(arena, &outcome, &outcome_len);
    if (!outcome_bytes)
        return SL_ERR_FULL;
    uint8_t ttl_key[8 + SL_EXPIRY_KEY_MAX];
    sl_be64_put(ttl_key, memory->expires_at_ms);
    memcpy(ttl_key + 8, memory->key, memory->key_len);
    sl_err err =
        sl_ctx_put(ctx, memory->store, memory->key, memory->key_len, outcome_bytes, outcome_len);
    if (!err)
        err = sl_ctx_put(ctx, memory->ttl_index, ttl_key, 8 + memory->key_len, "", 0);
    return err;
}

sl_err sl_command_outcome(sl_ctx *ctx, sl_arena *arena, const Sluice__V1__CommandMeta *meta,
                          const char *sink, const void *event_key, size_t event_key_len,
                          const void *event, const void *payload_message,
                          const sl_command_memory *memory) {
    size_t event_len, payload_len;
    uint8_t *event_bytes = sl_arena_pack(arena, event, &event_len);
    uint8_t *payload = sl_arena_pack(arena, payload_message, &payload_len);
    if (!event_bytes || !payload)
        return SL_ERR_FULL;
    sl_err err = sl_ctx_emit(ctx, sink, event_key, event_key_len, event_bytes, event_len, -1);
    const char *type = ((const ProtobufCMessage *)payload_message)->descriptor->name;
    if (!err)
        err = sl_command_reply(ctx, arena, meta, type, payload, payload_len);
    if (err || !memory || memory->key_len == 0)
        return err;
    return remember(ctx, arena, memory, type, payload, payload_len);
}

sl_err sl_command_answer_repeat(sl_ctx *ctx, sl_arena *arena, const char *store, const char *key,
                                size_t key_len, const Sluice__V1__CommandMeta *meta,
                                bool *answered) {
    *answered = false;
    if (meta)
        sl_ctx_adopt_trace(ctx, meta->traceparent);
    if (key_len == 0)
        return SL_OK;
    char *value;
    size_t len;
    sl_err err = sl_ctx_get(ctx, store, key, key_len, &value, &len);
    if (err == SL_ERR_NOT_FOUND)
        return SL_OK;
    if (err)
        return err;
    Sluice__V1__CommandOutcome *outcome =
        sl_arena_unpack(arena, &sluice__v1__command_outcome__descriptor, value, len);
    free(value);
    if (!outcome)
        return SL_ERR_STORE;
    *answered = true;
    return sl_command_reply(ctx, arena, meta, outcome->type, outcome->payload.data,
                            outcome->payload.len);
}

static bool collect_expired(const void *key, size_t key_len, const void *value, size_t value_len,
                            void *opaque) {
    (void)value;
    (void)value_len;
    sl_expired *list = opaque;
    if (key_len <= 8 || key_len > sizeof(list->key[0]))
        return true; /* not an index entry; skip */
    memcpy(list->key[list->n], key, key_len);
    list->len[list->n++] = key_len;
    return list->n < SL_EXPIRY_BATCH;
}

sl_err sl_expiry_find(sl_ctx *ctx, const char *index, int64_t before, sl_expired *list) {
    uint8_t to[8];
    sl_be64_put(to, before);
    list->n = 0;
    return sl_ctx_range(ctx, index, NULL, 0, to, sizeof(to), collect_expired, list);
}

sl_err sl_expiry_sweep(sl_ctx *ctx, const char *index, const char *store, int64_t before) {
    sl_expired *list = malloc(sizeof(*list));
    if (!list)
        return SL_ERR_NOMEM;
    sl_err err = sl_expiry_find(ctx, index, before, list);
    for (size_t i = 0; !err && i < list->n; i++) {
        err = sl_ctx_delete(ctx, store, list->key[i] + 8, list->len[i] - 8);
        if (!err)
            err = sl_ctx_delete(ctx, index, list->key[i], list->len[i]);
    }
    free(list);
    return err;
}
