/*
 * context.c: the processor context (sl_ctx_* of processor/topology.h), what
 * a processor or punctuator sees of its task: reads of its stores (the
 * pending writes first, then RocksDB), writes (to the changelog at once and
 * to the pending writes), emits, replies, rejects (to the dead-letter
 * topic), and read-only lookups in global stores.
 */
#include <string.h>

#include "processor/base/trace.h"
#include "processor/engine/engine_int.h"

static task_store *ctx_store(sl_ctx *ctx, const char *store) {
    int s = sl_topology_store_index(ctx->engine->topology, store);
    if (s < 0 || !ctx->task || ctx->engine->topology->store_source[s] != ctx->task->source)
        return NULL;
    return &ctx->task->stores[s];
}

sl_err sl_ctx_get(sl_ctx *ctx, const char *store, const void *key, size_t key_len, char **value,
                  size_t *value_len) {
    task_store *ts = ctx_store(ctx, store);
    if (!ts)
        return SL_ERR_INVALID;
    char why[256];
    return sl_store_pending_get(ts->store, ts->pending, key, key_len, value, value_len, why,
                                sizeof(why));
}

static sl_err ctx_write(sl_ctx *ctx, const char *store, const void *key, size_t key_len,
                        const void *value, size_t value_len, bool is_delete) {
    sl_engine *engine = ctx->engine;
    int s = sl_topology_store_index(engine->topology, store);
    task_store *ts = ctx_store(ctx, store);
    if (!ts || !key)
        return SL_ERR_INVALID;
    sl_err err = collector_produce(engine, engine->changelog_topic[s], ctx->task->partition, key,
                                   key_len, is_delete ? NULL : value, is_delete ? 0 : value_len,
                                   NULL);
    if (err)
        return err;
    size_t before = sl_store_pending_bytes(ts->pending);
    err = is_delete ? sl_store_pending_delete(ts->pending, key, key_len)
                    : sl_store_pending_put(ts->pending, key, key_len, value, value_len);
    if (err) {
        /* The changelog has a write the local state lacks: the transaction
         * must not commit (collector_commit has the loop abort and
         * rewind on this flag). */
        LOG(engine, SL_LOG_ERROR, "store %s: no memory for a pending write", store);
        engine->delivery_failed = true;
        return SL_ERR_KAFKA;
    }
    engine->pending_bytes += sl_store_pending_bytes(ts->pending);
    engine->pending_bytes -= before;
    if (engine->pending_bytes > engine->pending_max_bytes)
        engine->commit_requested = true;
    sl_counter_add(engine->m.changelog_records, 1);
    return SL_OK;
}

sl_err sl_ctx_put(sl_ctx *ctx, const char *store, const void *key, size_t key_len,
                  const void *value, size_t value_len) {
    return ctx_write(ctx, store, key, key_len, value ? value : "", value_len, false);
}

sl_err sl_ctx_delete(sl_ctx *ctx, const char *store, const void *key, size_t key_len) {
    return ctx_write(ctx, store, key, key_len, NULL, 0, true);
}

sl_err sl_ctx_range(sl_ctx *ctx, const char *store, const void *from, size_t from_len,
                    const void *to, size_t to_len, sl_visit_fn *visit, void *opaque) {
    task_store *ts = ctx_store(ctx, store);
    if (!ts)
        return SL_ERR_INVALID;
    sl_store_iter *iter =
        sl_store_pending_iter_range(ts->store, ts->pending, from, from_len, to, to_len);
    if (!iter)
        return SL_ERR_NOMEM;
    const void *key, *value;
    size_t key_len, value_len;
    while (sl_store_iter_next(iter, &key, &key_len, &value, &value_len))
        if (!visit(key, key_len, value, value_len, opaque))
            break;
    char why[256];
    sl_err err = sl_store_iter_error(iter, why, sizeof(why));
    sl_store_iter_destroy(iter);
    return err;
}

sl_err sl_ctx_prefix(sl_ctx *ctx, const char *store, const void *prefix, size_t prefix_len,
                     sl_visit_fn *visit, void *opaque) {
    /* [prefix, successor(prefix)): the successor drops trailing 0xff bytes
     * and increments the last remaining one; none left means open-ended. */
    unsigned char end[512];
    size_t end_len = prefix_len < sizeof(end) ? prefix_len : 0;
    if (prefix_len >= sizeof(end))
        return SL_ERR_INVALID;
    memcpy(end, prefix, prefix_len);
    while (end_len > 0 && end[end_len - 1] == 0xff)
        end_len--;
    if (end_len > 0)
        end[end_len - 1]++;
    return sl_ctx_range(ctx, store, prefix, prefix_len, end_len ? end : NULL, end_len, visit,
                        opaque);
}

sl_err sl_ctx_global_get(sl_ctx *ctx, const char *store, const void *key, size_t key_len,
                         char **value, size_t *value_len) {
    int g = sl_topology_global_index(ctx->engine->topology, store);
    if (g < 0 || !ctx->engine->globals[g].store)
        return SL_ERR_INVALID;
    char why[256];
    sl_err err = sl_store_get(ctx->engine->globals[g].store, key, key_len, value, value_len, why,
                              sizeof(why));
    /* Read-your-writes across instances: what was committed to the global
     * topic before this record was produced must be seen, however far this
     * instance's global consumer lags. */
    if (err == SL_ERR_NOT_FOUND && ctx->record) {
        globals_catch_up(ctx->engine, g, ctx->record->timestamp_ms);
        err = sl_store_get(ctx->engine->globals[g].store, key, key_len, value, value_len, why,
                           sizeof(why));
    }
    return err;
}

sl_err sl_ctx_emit(sl_ctx *ctx, const char *sink, const void *key, size_t key_len,
                   const void *value, size_t value_len, int32_t partition) {
    sl_engine *engine = ctx->engine;
    int i = sl_topology_sink_index(engine->topology, sink);
    if (i < 0)
        return SL_ERR_INVALID;
    sl_err err = collector_produce(engine, engine->sink_topic[i],
                                   partition < 0 ? RD_KAFKA_PARTITION_UA : partition, key, key_len,
                                   value, value_len, collector_trace_headers(NULL));
    if (!err)
        sl_counter_add(engine->m.records_out[i], 1);
    return err;
}

sl_err sl_ctx_emit_coalesced(sl_ctx *ctx, const char *sink, const void *cache_key,
                             size_t cache_key_len, const void *key, size_t key_len,
                             const void *value, size_t value_len) {
    sl_engine *engine = ctx->engine;
    int i = sl_topology_sink_index(engine->topology, sink);
    if (i < 0)
        return SL_ERR_INVALID;
    if (!engine->emit_cache)
        return sl_ctx_emit(ctx, sink, key, key_len, value, value_len, -1);
    bool coalesced = false;
    sl_err err = sl_emit_cache_put(engine->emit_cache, i, cache_key, cache_key_len, key, key_len,
                                   value, value_len, &coalesced);
    if (err == SL_ERR_FULL) {
        /* Flush early, in the same transaction, and cache it again. */
        if ((err = sl_emit_cache_flush(engine->emit_cache, collector_emit_cached, engine)))
            return err;
        err = sl_emit_cache_put(engine->emit_cache, i, cache_key, cache_key_len, key, key_len,
                                value, value_len, &coalesced);
    }
    if (err == SL_ERR_INVALID) /* larger than the whole cache */
        return sl_ctx_emit(ctx, sink, key, key_len, value, value_len, -1);
    if (!err && coalesced)
        sl_counter_add(engine->m.cache_coalesced, 1);
    return err;
}

sl_err sl_ctx_reply(sl_ctx *ctx, const char *reply_to, const void *key, size_t key_len,
                    const void *value, size_t value_len) {
    sl_engine *engine = ctx->engine;
    if (!reply_to || !reply_to[0])
        return SL_OK;
    if (!engine->topology->replies || strcmp(reply_to, engine->reply_topic) != 0) {
        sl_counter_add(engine->m.replies_ignored, 1);
        return SL_OK;
    }
    sl_err err = collector_produce(engine, engine->reply_topic, RD_KAFKA_PARTITION_UA, key, key_len,
                                   value, value_len, collector_trace_headers(NULL));
    if (!err)
        sl_counter_add(engine->m.replies, 1);
    return err;
}

void sl_ctx_adopt_trace(sl_ctx *ctx, const char *traceparent) {
    (void)ctx;
    if (sl_trace_current() || !traceparent || !traceparent[0])
        return;
    size_t len = strlen(traceparent);
    if (!sl_traceparent_valid(traceparent, len))
        return;
    char span[SL_TRACEPARENT_LEN + 1];
    sl_trace_child(traceparent, len, span);
    sl_trace_set_current(span);
}

void sl_ctx_reject(sl_ctx *ctx, const char *reason) {
    snprintf(ctx->reject_buf, sizeof(ctx->reject_buf), "%s", reason ? reason : "rejected");
    ctx->reject_reason = ctx->reject_buf;
}

bool sl_record_header(const sl_record *record, const char *name, const void **value, size_t *size) {
    rd_kafka_headers_t *headers = NULL;
    if (!record->message ||
        rd_kafka_message_headers((const rd_kafka_message_t *)record->message, &headers) || !headers)
        return false;
    return rd_kafka_header_get_last(headers, name, value, size) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

int32_t sl_ctx_partition(const sl_ctx *ctx) {
    return ctx->task ? ctx->task->partition : -1;
}

const char *sl_ctx_source(const sl_ctx *ctx) {
    return ctx->task ? ctx->engine->topology->sources[ctx->task->source].name : "";
}

int64_t sl_ctx_stream_time(const sl_ctx *ctx) {
    return ctx->task ? ctx->task->stream_time : -1;
}

