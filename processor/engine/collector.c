/*
 * collector.c: what the engine writes to Kafka and when it becomes local
 * (Kafka Streams' RecordCollector and the transaction manager): produce
 * (outputs, changelog records, replies, dead letters), the producer's
 * transaction, the commit of a batch, and apply-after-commit.
 *
 * Transaction states (exactly_once_v2; at-least-once stays READY), after
 * librdkafka's rdkafka_txnmgr.c. Every change goes through txn_set_state,
 * which checks it against txn_transition_valid:
 *
 *            clients_create_producer
 *   INIT -----------------------------> READY <---------------------------+
 *    ^        (collector_producer_created)  |                             |
 *    |                                      | collector_begin             |
 *    | clients_destroy_producer             v                             |
 *    | (from any state: the reset)    IN_TRANSACTION                      |
 *    |                                 |          \ collector_abort       |
 *    |               collector_commit  |           \                      |
 *    |                                 v            v                     |
 *    |                            COMMITTING ----> ABORTING --------------+
 *    |                             |     |  \        ^     abort done     |
 *    |                             |     |   \       | collector_abort    |
 *    |                             |     |    v      |                    |
 *    |                             |     | ABORTABLE_ERROR                |
 *    |                             |     +--------------------------------+
 *    |                             v          committed
 *    +------------------------ FATAL_ERROR  (also from begin or abort)
 *
 * Invariants:
 *   - Store writes go to the changelog at once (inside the open
 *     transaction under EOS) and into the task's pending writes; RocksDB
 *     sees them only after the transaction (or, at-least-once, the flush +
 *     offset commit) succeeded (apply_pending): local state is never ahead
 *     of what Kafka committed.
 *   - A lost write (delivery_failed: a produce or a pending write failed)
 *     means the open batch may not commit.
 *   - Nothing here aborts on its own initiative or recreates anything: a
 *     failed commit returns SL_ERR_KAFKA_ABORTABLE (with the reason) or
 *     SL_ERR_KAFKA_FATAL, and the loop (engine.c) calls collector_abort,
 *     collector_drop_pending and the producer reset.
 */
#include <assert.h>
#include <string.h>

#include "processor/base/clock.h"
#include "processor/base/trace.h"
#include "processor/engine/engine_int.h"
#include "processor/kafka/client.h"

static const char *const txn_state_names[] = {
    [TXN_INIT] = "INIT",
    [TXN_READY] = "READY",
    [TXN_IN_TRANSACTION] = "IN_TRANSACTION",
    [TXN_COMMITTING] = "COMMITTING",
    [TXN_ABORTABLE_ERROR] = "ABORTABLE_ERROR",
    [TXN_ABORTING] = "ABORTING",
    [TXN_FATAL_ERROR] = "FATAL_ERROR",
};

static bool txn_transition_valid(txn_state from, txn_state to) {
    switch (to) {
    case TXN_INIT:
        return true; /* the producer was destroyed, whatever it was doing */
    case TXN_READY:
        return from == TXN_INIT || from == TXN_COMMITTING || from == TXN_ABORTING;
    case TXN_IN_TRANSACTION:
        return from == TXN_READY;
    case TXN_COMMITTING:
        return from == TXN_IN_TRANSACTION;
    case TXN_ABORTABLE_ERROR:
        return from == TXN_COMMITTING;
    case TXN_ABORTING:
        return from == TXN_IN_TRANSACTION || from == TXN_COMMITTING ||
               from == TXN_ABORTABLE_ERROR;
    case TXN_FATAL_ERROR:
        return from != TXN_INIT;
    }
    return false;
}

static void txn_set_state(sl_engine *engine, txn_state to) {
    if (engine->txn == to)
        return;
    if (!txn_transition_valid(engine->txn, to)) {
        LOG(engine, SL_LOG_ERROR, "BUG: invalid transaction state transition %s -> %s",
            txn_state_names[engine->txn], txn_state_names[to]);
        assert(!"invalid transaction state transition");
    }
    engine->txn = to;
}

bool collector_txn_open(const sl_engine *engine) {
    return engine->txn == TXN_IN_TRANSACTION || engine->txn == TXN_COMMITTING ||
           engine->txn == TXN_ABORTABLE_ERROR;
}

void collector_producer_created(sl_engine *engine) {
    txn_set_state(engine, TXN_READY);
}

void collector_producer_destroyed(sl_engine *engine) {
    txn_set_state(engine, TXN_INIT);
}

void collector_delivery_cb(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque) {
    (void)rk;
    sl_engine *engine = opaque;
    if (message->err && !engine->delivery_failed) {
        engine->delivery_failed = true;
        LOG(engine, SL_LOG_WARN, "delivery to %s [%d] failed: %s",
            rd_kafka_topic_name(message->rkt), message->partition, rd_kafka_err2str(message->err));
    }
}

rd_kafka_headers_t *collector_trace_headers(rd_kafka_headers_t *headers) {
    const char *trace = sl_trace_current();
    if (!trace)
        return headers;
    if (!headers)
        headers = rd_kafka_headers_new(1);
    rd_kafka_header_add(headers, SL_TRACEPARENT_HEADER, -1, trace, -1);
    return headers;
}

sl_err collector_produce(sl_engine *engine, const char *topic, int32_t partition, const void *key,
                      size_t key_len, const void *value, size_t value_len,
                      rd_kafka_headers_t *headers) {
    for (int attempt = 0;; attempt++) {
        rd_kafka_resp_err_t code = rd_kafka_producev(
            engine->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY((void *)key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
        if (!code)
            return SL_OK;
        if (code == RD_KAFKA_RESP_ERR__QUEUE_FULL && attempt < 600) {
            /* Backpressure: let librdkafka drain, then try again. */
            rd_kafka_poll(engine->producer, 100);
            continue;
        }
        if (headers)
            rd_kafka_headers_destroy(headers);
        LOG(engine, SL_LOG_WARN, "produce to %s: %s", topic, rd_kafka_err2str(code));
        engine->delivery_failed = true;
        return sl_kafka_classify(code, NULL) == SL_ERR_KAFKA_FATAL ? SL_ERR_KAFKA_FATAL
                                                                   : SL_ERR_KAFKA;
    }
}

void collector_send_to_dlq(sl_engine *engine, task *t, const sl_record *record, const char *node,
                        const char *reason) {
    char partition[16], offset[32];
    snprintf(partition, sizeof(partition), "%d", record->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)record->offset);
    rd_kafka_headers_t *headers = rd_kafka_headers_new(5);
    rd_kafka_header_add(headers, "sluice.dlq.topic", -1, record->topic, -1);
    rd_kafka_header_add(headers, "sluice.dlq.partition", -1, partition, -1);
    rd_kafka_header_add(headers, "sluice.dlq.offset", -1, offset, -1);
    rd_kafka_header_add(headers, "sluice.dlq.processor", -1, node, -1);
    rd_kafka_header_add(headers, "sluice.dlq.error", -1, reason, -1);
    headers = collector_trace_headers(headers);
    if (collector_produce(engine, engine->dlq_topic, t->partition % engine->source_partitions[0],
                          record->key, record->key_len, record->value, record->value_len,
                          headers) == SL_OK)
        sl_counter_add(engine->m.records_dlq, 1);
    LOG(engine, SL_LOG_WARN, "record %s [%d] @%lld to %s: %s", record->topic, record->partition,
        (long long)record->offset, engine->dlq_topic, reason);
}


sl_err collector_emit_cached(void *opaque, int sink, const void *key, size_t key_len,
                             const void *value, size_t value_len) {
    sl_engine *engine = opaque;
    sl_err err = collector_produce(engine, engine->sink_topic[sink], RD_KAFKA_PARTITION_UA, key,
                                   key_len, value, value_len, collector_trace_headers(NULL));
    if (!err) {
        sl_counter_add(engine->m.records_out[sink], 1);
        sl_counter_add(engine->m.cache_emitted, 1);
    }
    return err;
}

sl_err collector_begin(sl_engine *engine) {
    engine->dirty = true;
    if (!engine->eos || collector_txn_open(engine))
        return SL_OK;
    rd_kafka_error_t *error = rd_kafka_begin_transaction(engine->producer);
    if (error) {
        sl_err cls = sl_kafka_classify(0, error);
        LOG(engine, SL_LOG_WARN, "begin_transaction: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        if (cls == SL_ERR_KAFKA_FATAL)
            txn_set_state(engine, TXN_FATAL_ERROR);
        return cls == SL_OK ? SL_ERR_KAFKA : cls;
    }
    txn_set_state(engine, TXN_IN_TRANSACTION);
    return SL_OK;
}

sl_err collector_abort(sl_engine *engine) {
    if (!engine->eos || !collector_txn_open(engine))
        return SL_OK;
    txn_set_state(engine, TXN_ABORTING);
    rd_kafka_error_t *error = rd_kafka_abort_transaction(engine->producer, TXN_TIMEOUT_MS);
    if (error) {
        sl_err cls = sl_kafka_classify(0, error);
        LOG(engine, SL_LOG_WARN, "abort_transaction: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        if (cls == SL_ERR_KAFKA_FATAL) {
            txn_set_state(engine, TXN_FATAL_ERROR);
            return SL_ERR_KAFKA_FATAL;
        }
        /* An unclassified abort error (a timeout, say) leaves the
         * transaction's fate unknown: the producer is not to be trusted. */
        txn_set_state(engine, TXN_READY);
        if (cls == SL_ERR_KAFKA)
            return SL_ERR_KAFKA_FATAL;
        return SL_OK;
    }
    txn_set_state(engine, TXN_READY);
    return SL_OK;
}

void collector_drop_pending(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    FOR_EACH_TASK(engine, src, p, t) {
        for (size_t s = 0; s < topology->n_stores; s++)
            if (t->stores[s].pending)
                sl_store_pending_clear(t->stores[s].pending);
        t->consumed_next = -1;
    }
    if (engine->emit_cache)
        sl_emit_cache_clear(engine->emit_cache);
    engine->dirty = false;
    engine->pending_bytes = 0;
    engine->commit_requested = false;
}

/* The offsets to commit in the group of `source`. */
static rd_kafka_topic_partition_list_t *consumed_offsets(sl_engine *engine, size_t source) {
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(16);
    FOR_EACH_TASK(engine, src, p, t) {
        if (src == source && t->consumed_next >= 0)
            rd_kafka_topic_partition_list_add(offsets, engine->source_topic[src], p)->offset =
                t->consumed_next;
    }
    return offsets;
}

/* EOS: the consumed offsets of one group into the transaction, retried (up
 * to 5 times) while librdkafka calls the error retriable. The transaction
 * coordinator checks them against that group's generation, so a member the
 * group has moved on from cannot commit them. */
static rd_kafka_error_t *send_group_offsets(sl_engine *engine, size_t src) {
    rd_kafka_topic_partition_list_t *offsets = consumed_offsets(engine, src);
    if (offsets->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(offsets);
        return NULL;
    }
    rd_kafka_consumer_group_metadata_t *group =
        rd_kafka_consumer_group_metadata(engine->consumers[src]);
    rd_kafka_error_t *error = NULL;
    for (int attempt = 0; attempt < 5; attempt++) {
        if (error)
            rd_kafka_error_destroy(error);
        error =
            rd_kafka_send_offsets_to_transaction(engine->producer, offsets, group, TXN_TIMEOUT_MS);
        if (!error || !rd_kafka_error_is_retriable(error))
            break;
    }
    rd_kafka_consumer_group_metadata_destroy(group);
    rd_kafka_topic_partition_list_destroy(offsets);
    return error;
}

/* After a successful commit: make the committed writes local. */
static void apply_pending(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    char why[512];
    FOR_EACH_TASK(engine, src, p, t) {
        t->consumed_next = -1;
        for (size_t s = 0; s < topology->n_stores; s++) {
            task_store *ts = &t->stores[s];
            if (!ts->pending || sl_store_pending_count(ts->pending) == 0)
                continue;
            /* Under EOS without the WAL: a crash leaves no checkpoint, so
             * the store is wiped and restored from the changelog, and a
             * clean close flushes before it writes one. */
            if (sl_store_pending_apply(ts->store, ts->pending, engine->eos, why, sizeof(why))) {
                /* Kafka committed what RocksDB could not take: the only
                 * safe state is a fresh restore. */
                LOG(engine, SL_LOG_ERROR, "task %s_%d: store %s apply failed (%s): restoring",
                    topology->sources[src].name, p, topology->stores[s], why);
                if (task_recreate(engine, t) == SL_OK)
                    restore_reassign(engine);
                break; /* t is gone */
            }
        }
    }
    engine->pending_bytes = 0;
    engine->commit_requested = false;
}

static sl_err abortable(char *why, size_t why_size, const char *reason) {
    snprintf(why, why_size, "%s", reason);
    return SL_ERR_KAFKA_ABORTABLE;
}

/* EOS: the consumed offsets of every group into the transaction, then
 * commit it, retried (up to 5 times) while librdkafka calls the error
 * retriable. */
static sl_err commit_transaction(sl_engine *engine, char *why, size_t why_size) {
    /* Without an open transaction (a punctuator's begin failed, yet the
     * batch is dirty) librdkafka refuses the calls below, and the batch is
     * aborted like any other failed commit. */
    if (engine->txn == TXN_IN_TRANSACTION)
        txn_set_state(engine, TXN_COMMITTING);
    rd_kafka_error_t *error = NULL;
    for (size_t src = 0; !error && src < engine->topology->n_sources; src++)
        error = send_group_offsets(engine, src);
    for (int attempt = 0; !error && attempt < 5; attempt++) {
        error = rd_kafka_commit_transaction(engine->producer, TXN_TIMEOUT_MS);
        if (!error || !rd_kafka_error_is_retriable(error))
            break;
        if (attempt < 4) {
            rd_kafka_error_destroy(error);
            error = NULL;
        }
    }
    if (!error) {
        if (engine->txn == TXN_COMMITTING)
            txn_set_state(engine, TXN_READY);
        return SL_OK;
    }
    sl_err cls = sl_kafka_classify(0, error);
    snprintf(why, why_size, "%s", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    if (cls == SL_ERR_KAFKA_FATAL) {
        txn_set_state(engine, TXN_FATAL_ERROR);
        return SL_ERR_KAFKA_FATAL;
    }
    if (engine->txn == TXN_COMMITTING)
        txn_set_state(engine, TXN_ABORTABLE_ERROR);
    return SL_ERR_KAFKA_ABORTABLE;
}

/* At-least-once: every output durable first, then the offsets. */
static sl_err commit_flush(sl_engine *engine, char *why, size_t why_size) {
    rd_kafka_resp_err_t code = rd_kafka_flush(engine->producer, TXN_TIMEOUT_MS);
    if (code || engine->delivery_failed)
        return abortable(why, why_size, code ? rd_kafka_err2str(code) : "a delivery failed");
    for (size_t src = 0; src < engine->topology->n_sources; src++) {
        rd_kafka_topic_partition_list_t *offsets = consumed_offsets(engine, src);
        code = offsets->cnt > 0 ? rd_kafka_commit(engine->consumers[src], offsets, 0)
                                : RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_topic_partition_list_destroy(offsets);
        if (code)
            /* The outputs are durable; only the offsets are not: the
             * records will be processed again (at-least-once). */
            LOG(engine, SL_LOG_WARN, "offset commit failed (%s): %s", engine->group_id[src],
                rd_kafka_err2str(code));
    }
    return SL_OK;
}

/* The record cache is produced first, inside the open transaction, so it
 * commits or aborts with the batch. */
sl_err collector_commit(sl_engine *engine, char *why, size_t why_size) {
    if (engine->dirty && engine->emit_cache && sl_emit_cache_entries(engine->emit_cache) &&
        sl_emit_cache_flush(engine->emit_cache, collector_emit_cached, engine))
        return abortable(why, why_size, "the record cache could not be produced");
    engine->last_commit_ms = sl_clock_mono_ms();
    if (!engine->dirty)
        return SL_OK;
    int64_t started = sl_clock_mono_ms();
    if (engine->eos && engine->delivery_failed)
        /* A changelog record whose pending write was lost (out of memory),
         * or an output that failed: none of this transaction may commit. */
        return abortable(why, why_size, "a write of this transaction failed");
    sl_err err = engine->eos ? commit_transaction(engine, why, why_size)
                             : commit_flush(engine, why, why_size);
    if (err)
        return err;
    apply_pending(engine);
    engine->dirty = false;
    sl_counter_add(engine->m.commits, 1);
    int64_t took = sl_clock_mono_ms() - started;
    sl_histogram_observe(engine->m.commit_seconds, (double)took / 1000.0);
    if (took > 1000)
        LOG(engine, SL_LOG_WARN, "commit took %lld ms", (long long)took);
    return SL_OK;
}
