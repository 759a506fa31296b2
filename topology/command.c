/*
 * command.c: replies to commands and expiry indexes, shared by the domain
 * topologies. See command.h.
 */
#include "topology/command.h"

#include <stdlib.h>
#include <string.h>

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
