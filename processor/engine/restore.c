/*
 * restore.c: changelog restore (Kafka Streams' StoreChangelogReader).
 *
 * A task's store restores from its checkpointed offset (or the beginning)
 * to the changelog end through the restore consumer, which is assigned
 * every store still restoring at its current position (restore_reassign,
 * after every change of that set). The loop calls restore_poll once per
 * iteration: one slice of at most restore.batch.records records and
 * RESTORE_SLICE_MS, so the group consumer is polled regularly and never
 * misses max.poll.interval.ms. A slice collects the latest value per key
 * (restore_batch) and writes it as one RocksDB batch, without the WAL (the
 * changelog is the log). A store that reaches its end (partition EOF,
 * read_committed: the last stable offset) is finished; the task's last
 * one starts the task (task_start_running, tasks.c).
 *
 * Nothing here decides recovery: a store that cannot be written stays
 * restoring and is retried (next slice, or next assignment).
 */
#include <string.h>

#include "processor/base/clock.h"
#include "processor/engine/engine_int.h"

/* The end offset of a changelog partition: where the next restore starts. */
sl_err restore_changelog_end(sl_engine *engine, const char *topic, int32_t partition,
                             int64_t *end) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t code = rd_kafka_query_watermark_offsets(engine->producer, topic, partition,
                                                                &low, &high, ADMIN_TIMEOUT_MS);
    if (code) {
        LOG(engine, SL_LOG_WARN, "watermarks of %s [%d]: %s", topic, partition,
            rd_kafka_err2str(code));
        return SL_ERR_KAFKA;
    }
    *end = high;
    return SL_OK;
}

/* The restore consumer's assignment is every store still restoring, each at
 * its current position (rd_kafka_assign replaces the whole assignment). */
void restore_reassign(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    FOR_EACH_TASK(engine, src, p, t) {
        for (size_t s = 0; s < topology->n_stores; s++)
            if (t->stores[s].restoring)
                rd_kafka_topic_partition_list_add(list, engine->changelog_topic[s], p)->offset =
                    t->stores[s].restore_position;
    }
    rd_kafka_resp_err_t code = rd_kafka_assign(engine->restore_consumer, list);
    if (code)
        LOG(engine, SL_LOG_ERROR, "restore consumer assign: %s", rd_kafka_err2str(code));
    rd_kafka_topic_partition_list_destroy(list);
}

static void restore_finish_store(sl_engine *engine, task *t, size_t s) {
    task_store *ts = &t->stores[s];
    char why[512];
    /* The flush is started, not waited for: no checkpoint depends on it (a
     * clean close flushes and waits before it writes one; under EOS a crash
     * wipes the store anyway; at-least-once restores again from the old
     * checkpoint, and the changelog holds every write since). Waiting here
     * stalled every other task's restore for the length of the flush. */
    if (sl_store_pending_apply(ts->store, ts->restore_batch, true, why, sizeof(why)) ||
        sl_store_flush_start(ts->store, why, sizeof(why))) {
        LOG(engine, SL_LOG_ERROR, "restore of %s [%d] failed: %s", engine->changelog_topic[s],
            t->partition, why);
        return; /* stays restoring; retried on the next assignment */
    }
    ts->restoring = false;
    t->stores_restoring--;
    if (t->stores_restoring == 0)
        task_start_running(engine, t);
}

static int store_of_changelog(const sl_engine *engine, const char *topic) {
    for (size_t s = 0; s < engine->topology->n_stores; s++)
        if (strcmp(engine->changelog_topic[s], topic) == 0)
            return (int)s;
    return -1;
}

/* Remaining records of every store still restoring (against the changelog
 * end seen when its restore began), and a progress line per task every 5 s. */
static void restore_report(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    int64_t remaining_all = 0, now = sl_clock_mono_ms();
    FOR_EACH_TASK(engine, src, p, t) {
        if (t->stores_restoring == 0)
            continue;
        int64_t remaining = 0;
        for (size_t s = 0; s < topology->n_stores; s++) {
            const task_store *ts = &t->stores[s];
            if (ts->restoring && ts->restore_end > 0)
                remaining +=
                    ts->restore_end - (ts->restore_position > 0 ? ts->restore_position : 0);
        }
        remaining_all += remaining > 0 ? remaining : 0;
        if (now - t->restore_logged_ms >= 5000) {
            int64_t elapsed = now - t->restore_started_ms;
            t->restore_logged_ms = now;
            LOG(engine, SL_LOG_INFO,
                "task %s_%d restoring: %llu records in %lld ms (%.0f records/s), ~%lld "
                "remaining",
                topology->sources[src].name, p, (unsigned long long)t->restored_records,
                (long long)elapsed,
                elapsed > 0 ? (double)t->restored_records * 1000.0 / (double)elapsed : 0.0,
                (long long)(remaining > 0 ? remaining : 0));
        }
    }
    sl_gauge_set(engine->m.restore_remaining, (double)remaining_all);
}

/* Take one message of the restore consumer into its store's restore batch
 * (the message stays the caller's). Returns 1 if it was a changelog record,
 * 0 otherwise (end of partition, error, or a store no longer restoring).
 * Sets *finished when a store reached its end. */
static int restore_message(sl_engine *engine, const rd_kafka_message_t *m, bool *finished) {
    const sl_topology *topology = engine->topology;
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;
    int s = topic ? store_of_changelog(engine, topic) : -1;
    int src = s >= 0 ? topology->store_source[s] : 0;
    task *t = s >= 0 && m->partition >= 0 && m->partition < engine->source_partitions[src]
                  ? engine->tasks[src][m->partition]
                  : NULL;
    task_store *ts = t ? &t->stores[s] : NULL;
    if (!ts || !ts->restoring)
        return 0;
    if (ts->reseeking) {
        if (m->offset != ts->restore_position)
            return 0; /* read before the seek took effect */
        ts->reseeking = false;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        /* read_committed: the end is the last stable offset; commit
         * markers and compacted gaps are simply never delivered. */
        ts->restore_position = m->offset;
        restore_finish_store(engine, t, (size_t)s);
        *finished = true;
        return 0;
    }
    if (m->err) {
        LOG(engine, SL_LOG_WARN, "restore of %s [%d]: %s", topic, m->partition,
            rd_kafka_message_errstr(m));
        return 0;
    }
    sl_err err =
        m->payload ? sl_store_pending_put(ts->restore_batch, m->key, m->key_len, m->payload, m->len)
                   : sl_store_pending_delete(ts->restore_batch, m->key, m->key_len);
    if (err) {
        /* Not taken: read the changelog again from this record. */
        LOG(engine, SL_LOG_ERROR, "restore of %s [%d]: out of memory at offset %lld; seeking back",
            topic, m->partition, (long long)m->offset);
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, topic, m->partition)->offset = m->offset;
        rd_kafka_error_t *error = rd_kafka_seek_partitions(engine->restore_consumer, list, 5000);
        if (error)
            rd_kafka_error_destroy(error);
        rd_kafka_topic_partition_list_destroy(list);
        ts->restore_position = m->offset;
        ts->reseeking = true;
        return 0;
    }
    ts->restore_position = m->offset + 1;
    t->restored_records++;
    sl_counter_add(engine->m.restored_records, 1);
    return 1;
}

/* One restore slice. Returns true while some store is still restoring. */
bool restore_poll(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    bool any = false, finished = false;
    FOR_EACH_TASK(engine, src, p, t)
        any |= t->stores_restoring > 0;
    if (!any) {
        sl_gauge_set(engine->m.restore_remaining, 0);
        return false;
    }
    int64_t deadline = sl_clock_mono_ms() + RESTORE_SLICE_MS;
    char why[512];
    /* Read in batches straight off the restore consumer's queue (one lock
     * and wake-up per batch, not per record); wait (10 ms) only when the
     * slice has nothing yet. */
    rd_kafka_message_t *batch[RESTORE_FETCH_BATCH];
    for (int n = 0; n < engine->restore_batch && sl_clock_mono_ms() < deadline;) {
        size_t want = (size_t)(engine->restore_batch - n);
        if (want > RESTORE_FETCH_BATCH)
            want = RESTORE_FETCH_BATCH;
        ssize_t got = rd_kafka_consume_batch_queue(engine->restore_queue, 0, batch, want);
        if (got <= 0) {
            if (n > 0 || !(batch[0] = rd_kafka_consumer_poll(engine->restore_consumer, 10)))
                break;
            got = 1;
        }
        for (ssize_t i = 0; i < got; i++) {
            n += restore_message(engine, batch[i], &finished);
            rd_kafka_message_destroy(batch[i]);
        }
    }
    /* Write what this slice read (WAL off: the changelog is the log). */
    FOR_EACH_TASK(engine, src, p, t) {
        for (size_t s = 0; s < topology->n_stores; s++) {
            task_store *ts = &t->stores[s];
            if (!ts->restoring || sl_store_pending_count(ts->restore_batch) == 0)
                continue;
            /* One entry per key of the slice; on error the records stay
             * pending and are written with the next slice. */
            if (sl_store_pending_apply(ts->store, ts->restore_batch, true, why, sizeof(why)))
                LOG(engine, SL_LOG_ERROR, "restore write: %s", why);
        }
    }
    if (finished)
        restore_reassign(engine);
    restore_report(engine);
    return true;
}

