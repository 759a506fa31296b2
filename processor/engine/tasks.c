/*
 * tasks.c: the task manager (Kafka Streams' TaskManager and StreamTask):
 * one task per source partition, with its stores; create, start, close,
 * process a record, punctuate.
 *
 * Task states (task->state, changed only by task_set_state, which checks
 * the transition against task_transition_valid):
 *
 *              task_create: open stores, choose each restore's start
 *              (wipe under EOS without a checkpoint), query_publish
 *   (none) -------------------------------------------------> CREATED
 *                                                              |    |
 *        some store behind its changelog end (task_create)     |    | none
 *                 +--------------------------------------------+    |
 *                 v                                                 |
 *             RESTORING ---------------------------------------+    |
 *                 |   restore_poll (restore.c): the last store |    |
 *                 |   reached its end                          v    v
 *                 |                     task_start_running: resume the
 *                 |                     source, remove the checkpoint
 *                 |                     (EOS: a crash now means wipe)
 *                 |                                          RUNNING
 *                 |                                             |
 *                 +-----------> CLOSING <-----------------------+
 *                  task_close: query_withdraw, clean: flush and
 *                  checkpoint at the changelog end (or at the restore
 *                  position mid-restore); dirty: no checkpoint
 *                                  |
 *                                  v
 *                               CLOSED (freed by task_close)
 *
 * Who closes: a revoke closes clean after the loop committed
 * (tasks_revoke); a lost assignment, a fatal error (tasks_recreate_all,
 * tasks_close_all) or a store that cannot apply a commit (task_recreate)
 * close dirty, and the next owner wipes and restores.
 *
 * Invariants:
 *   - A task processes records only while RUNNING; its source partition is
 *     paused otherwise (a record that slips through is rewound by the loop).
 *   - task_process and task_punctuate never abort, rewind or recreate the
 *     producer: a Kafka error comes back classified and the loop decides.
 */
#include <assert.h>
#include <string.h>

#include "processor/base/clock.h"
#include "processor/base/trace.h"
#include "processor/engine/engine_int.h"

static const char *const task_state_names[] = {
    [TASK_CREATED] = "CREATED", [TASK_RESTORING] = "RESTORING", [TASK_RUNNING] = "RUNNING",
    [TASK_CLOSING] = "CLOSING", [TASK_CLOSED] = "CLOSED",
};

static bool task_transition_valid(task_state from, task_state to) {
    switch (to) {
    case TASK_CREATED:
        return false; /* only a new task starts there */
    case TASK_RESTORING:
        return from == TASK_CREATED;
    case TASK_RUNNING:
        return from == TASK_CREATED || from == TASK_RESTORING;
    case TASK_CLOSING:
        return from == TASK_CREATED || from == TASK_RESTORING || from == TASK_RUNNING;
    case TASK_CLOSED:
        return from == TASK_CLOSING;
    }
    return false;
}

static void task_set_state(sl_engine *engine, task *t, task_state to) {
    if (!task_transition_valid(t->state, to)) {
        LOG(engine, SL_LOG_ERROR, "BUG: task %s_%d: invalid state transition %s -> %s",
            engine->topology->sources[t->source].name, t->partition, task_state_names[t->state],
            task_state_names[to]);
        assert(!"invalid task state transition");
    }
    t->state = to;
}

int tasks_source_of_topic(const sl_engine *engine, const char *topic) {
    for (size_t i = 0; i < engine->topology->n_sources; i++)
        if (strcmp(engine->source_topic[i], topic) == 0)
            return (int)i;
    return -1;
}

task *tasks_of(const sl_engine *engine, const char *topic, int32_t partition) {
    int source = tasks_source_of_topic(engine, topic);
    if (source < 0 || partition < 0 || partition >= engine->source_partitions[source])
        return NULL;
    return engine->tasks[source][partition];
}

void tasks_checkpoint_path(const char *dir, char *buf, size_t size) {
    snprintf(buf, size, "%s/.checkpoint", dir);
}

static void checkpoint_path(const task *t, char *buf, size_t size) {
    tasks_checkpoint_path(t->dir, buf, size);
}

void tasks_pause_partition(sl_engine *engine, int source, int32_t partition, bool pause) {
    rd_kafka_t *consumer = engine->consumers[source];
    if (!consumer)
        return;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, engine->source_topic[source], partition);
    if (pause)
        rd_kafka_pause_partitions(consumer, list);
    else
        rd_kafka_resume_partitions(consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
}

void task_start_running(sl_engine *engine, task *t) {
    const sl_source_def *source = &engine->topology->sources[t->source];
    if (engine->eos) {
        /* From now on the store changes while the changelog moves on: only a
         * clean close may leave a checkpoint behind. */
        char path[PATH_MAX + 16], why[256];
        checkpoint_path(t, path, sizeof(path));
        if (sl_checkpoint_remove(path, why, sizeof(why)))
            LOG(engine, SL_LOG_WARN, "task %s_%d: %s", source->name, t->partition, why);
    }
    task_set_state(engine, t, TASK_RUNNING);
    query_set_running(engine, t);
    sl_gauge_add(engine->m.tasks_running, 1);
    int64_t now = sl_clock_wall_ms();
    for (size_t i = 0; i < engine->topology->n_punctuators; i++)
        t->next_punctuation[i] = engine->topology->punctuators[i].type == SL_PUNCTUATE_WALL_CLOCK
                                     ? now + engine->topology->punctuators[i].interval_ms
                                     : INT64_MIN;
    tasks_pause_partition(engine, t->source, t->partition, false);
    int64_t took = sl_clock_mono_ms() - t->restore_started_ms;
    sl_counter_add(engine->m.restore_ms, (uint64_t)took);
    LOG(engine, SL_LOG_INFO, "task %s_%d running (restored %llu records in %lld ms)", source->name,
        t->partition, (unsigned long long)t->restored_records, (long long)took);
}

/* Open the task's stores and decide where each restore starts. */
sl_err task_create(sl_engine *engine, int source, int32_t partition, char *errstr,
                   size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    task *t = calloc(1, sizeof(*t));
    if (!t)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    t->state = TASK_CREATED;
    t->source = source;
    t->partition = partition;
    t->consumed_next = -1;
    t->position = -1;
    t->stream_time = INT64_MIN;
    t->restore_started_ms = sl_clock_mono_ms();
    t->restore_logged_ms = t->restore_started_ms;
    if (!fits(snprintf(t->dir, sizeof(t->dir), "%s/%s_%d", engine->state_path,
                       topology->sources[source].name, partition),
              sizeof(t->dir))) {
        free(t);
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
    }
    char cp_path[PATH_MAX + 16];
    checkpoint_path(t, cp_path, sizeof(cp_path));
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t n_entries = 0;
    char why[512];
    sl_err cp = sl_checkpoint_read(cp_path, entries, SL_CHECKPOINT_MAX_ENTRIES, &n_entries, why,
                                   sizeof(why));
    if (cp && cp != SL_ERR_NOT_FOUND)
        LOG(engine, SL_LOG_WARN, "task %s_%d: ignoring checkpoint: %s",
            topology->sources[source].name, partition, why);
    for (size_t s = 0; s < topology->n_stores; s++) {
        if (topology->store_source[s] != source)
            continue;
        task_store *ts = &t->stores[s];
        if (!fits(snprintf(ts->path, sizeof(ts->path), "%s/%s", t->dir, topology->stores[s]),
                  sizeof(ts->path))) {
            sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
            goto fail;
        }
        int64_t from = -1;
        for (size_t e = 0; cp == SL_OK && e < n_entries; e++)
            if (strcmp(entries[e].store, topology->stores[s]) == 0 &&
                entries[e].partition == partition)
                from = entries[e].offset;
        if (from < 0) {
            /* No checkpoint: under EOS the local files may hold writes of a
             * transaction that never committed (or miss some that did), so
             * start from nothing. Under at-least-once replaying the whole
             * changelog over old state converges to the same values. */
            if (engine->eos && sl_store_destroy_files(ts->path, errstr, errstr_size) != SL_OK)
                goto fail;
            from = RD_KAFKA_OFFSET_BEGINNING;
        }
        ts->store = sl_store_open(engine->env, ts->path, errstr, errstr_size);
        ts->pending = sl_store_pending_new();
        ts->restore_batch = sl_store_pending_new();
        if (!ts->store || !ts->pending || !ts->restore_batch)
            goto fail;
        int64_t end = -1;
        if (restore_changelog_end(engine, engine->changelog_topic[s], partition, &end) == SL_OK &&
            (end == 0 || (from >= 0 && from >= end)))
            continue; /* already at the changelog's end: nothing to restore */
        ts->restoring = true;
        ts->restore_position = from;
        ts->restore_end = end;
        t->stores_restoring++;
    }
    char partition_label[16];
    snprintf(partition_label, sizeof(partition_label), "%d", partition);
    const char *lag_labels[] = {"topic", engine->source_topic[source], "partition", partition_label,
                                NULL};
    t->lag = sl_metrics_gauge(engine->metrics, "sluice_consumer_lag_records",
                              "Records between the task's position and the end of its source",
                              lag_labels);
    for (size_t s = 0; s < topology->n_stores; s++) {
        if (!t->stores[s].store)
            continue;
        const char *store_labels[] = {"store", topology->stores[s], "partition", partition_label,
                                      NULL};
        t->store_keys[s] =
            sl_metrics_gauge(engine->metrics, "sluice_store_estimated_keys",
                             "RocksDB's estimate of the keys in a store", store_labels);
        t->store_bytes[s] = sl_metrics_gauge(engine->metrics, "sluice_store_disk_bytes",
                                             "Bytes of live SST files of a store", store_labels);
    }
    engine->tasks[source][partition] = t;
    query_publish(engine, t);
    sl_gauge_add(engine->m.tasks_assigned, 1);
    LOG(engine, SL_LOG_INFO, "task %s_%d created (%d store%s to restore)",
        topology->sources[source].name, partition, t->stores_restoring,
        t->stores_restoring == 1 ? "" : "s");
    if (t->stores_restoring > 0)
        task_set_state(engine, t, TASK_RESTORING);
    else
        task_start_running(engine, t);
    return SL_OK;
fail:
    for (size_t s = 0; s < topology->n_stores; s++) {
        sl_store_close(t->stores[s].store);
        sl_store_pending_destroy(t->stores[s].pending);
        sl_store_pending_destroy(t->stores[s].restore_batch);
    }
    free(t);
    return SL_ERR_STORE;
}

/* Close a task. clean: its pending writes are already applied (the caller
 * committed), so flush the stores and write a checkpoint at the changelog
 * end. dirty: drop pending writes and leave no checkpoint. */
void task_close(sl_engine *engine, task *t, bool clean) {
    const sl_topology *topology = engine->topology;
    const char *source = topology->sources[t->source].name;
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t n = 0;
    bool restoring = t->stores_restoring > 0;
    bool was_running = t->state == TASK_RUNNING;
    char why[512];
    task_set_state(engine, t, TASK_CLOSING);
    query_withdraw(engine, t);
    for (size_t s = 0; s < topology->n_stores; s++) {
        task_store *ts = &t->stores[s];
        if (!ts->store)
            continue;
        if (clean && !ts->restoring && sl_store_pending_count(ts->pending) == 0 &&
            sl_store_flush(ts->store, why, sizeof(why)) == SL_OK && n < SL_CHECKPOINT_MAX_ENTRIES) {
            int64_t end;
            if (restore_changelog_end(engine, engine->changelog_topic[s], t->partition, &end) ==
                SL_OK) {
                snprintf(entries[n].store, sizeof(entries[n].store), "%s", topology->stores[s]);
                entries[n].partition = t->partition;
                entries[n].offset = end;
                n++;
            }
        } else if (clean && ts->restoring && ts->restore_position >= 0 &&
                   n < SL_CHECKPOINT_MAX_ENTRIES) {
            /* Revoked mid-restore: keep the progress made so far. */
            sl_store_pending_apply(ts->store, ts->restore_batch, true, why, sizeof(why));
            if (sl_store_flush(ts->store, why, sizeof(why)) == SL_OK) {
                snprintf(entries[n].store, sizeof(entries[n].store), "%s", topology->stores[s]);
                entries[n].partition = t->partition;
                entries[n].offset = ts->restore_position;
                n++;
            }
        }
        sl_store_close(ts->store);
        sl_store_pending_destroy(ts->pending);
        sl_store_pending_destroy(ts->restore_batch);
    }
    size_t expected = 0;
    for (size_t s = 0; s < topology->n_stores; s++)
        expected += topology->store_source[s] == t->source;
    if (clean && n == expected && expected > 0) {
        char path[PATH_MAX + 16];
        checkpoint_path(t, path, sizeof(path));
        if (sl_checkpoint_write(path, entries, n, why, sizeof(why)))
            LOG(engine, SL_LOG_WARN, "task %s_%d: checkpoint not written: %s", source, t->partition,
                why);
    }
    sl_metrics_remove(engine->metrics, t->lag);
    for (size_t s = 0; s < topology->n_stores; s++) {
        if (t->store_keys[s])
            sl_metrics_remove(engine->metrics, t->store_keys[s]);
        if (t->store_bytes[s])
            sl_metrics_remove(engine->metrics, t->store_bytes[s]);
    }
    if (was_running)
        sl_gauge_add(engine->m.tasks_running, -1);
    sl_gauge_add(engine->m.tasks_assigned, -1);
    engine->tasks[t->source][t->partition] = NULL;
    LOG(engine, SL_LOG_INFO, "task %s_%d closed %s", source, t->partition,
        clean ? "cleanly" : "dirty (no checkpoint: the next owner restores from scratch)");
    task_set_state(engine, t, TASK_CLOSED);
    free(t);
    if (restoring)
        restore_reassign(engine);
}


sl_err task_recreate(sl_engine *engine, task *t) {
    int source = t->source;
    int32_t partition = t->partition;
    char why[512];
    task_close(engine, t, false);
    tasks_pause_partition(engine, source, partition, true);
    sl_err err = task_create(engine, source, partition, why, sizeof(why));
    if (err)
        LOG(engine, SL_LOG_ERROR, "task %s_%d: cannot recreate: %s",
            engine->topology->sources[source].name, partition, why);
    return err;
}

void tasks_recreate_all(sl_engine *engine) {
    FOR_EACH_TASK(engine, src, p, t)
        task_recreate(engine, t);
    restore_reassign(engine);
}

void tasks_close_all(sl_engine *engine, bool clean) {
    FOR_EACH_TASK(engine, src, p, t)
        task_close(engine, t, clean);
}

void tasks_assign(sl_engine *engine, int source, rd_kafka_topic_partition_list_t *partitions) {
    rd_kafka_t *consumer = engine->consumers[source];
    rd_kafka_error_t *error = rd_kafka_incremental_assign(consumer, partitions);
    if (error) {
        LOG(engine, SL_LOG_ERROR, "incremental_assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return;
    }
    /* Nothing is processed before its stores are restored. */
    rd_kafka_pause_partitions(consumer, partitions);
    char why[512];
    for (int i = 0; i < partitions->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &partitions->elems[i];
        if (tasks_source_of_topic(engine, tp->topic) != source ||
            tp->partition >= engine->source_partitions[source] ||
            engine->tasks[source][tp->partition])
            continue;
        standby_release(engine, source, tp->partition);
        if (task_create(engine, source, tp->partition, why, sizeof(why)))
            LOG(engine, SL_LOG_ERROR, "task %s_%d: %s", engine->topology->sources[source].name,
                tp->partition, why);
    }
    restore_reassign(engine);
}

void tasks_revoke(sl_engine *engine, int source, rd_kafka_topic_partition_list_t *partitions,
                  bool clean) {
    for (int i = 0; i < partitions->cnt; i++) {
        task *t = tasks_of(engine, partitions->elems[i].topic, partitions->elems[i].partition);
        if (t)
            task_close(engine, t, clean);
    }
    standby_revisit(engine);
    rd_kafka_error_t *error = rd_kafka_incremental_unassign(engine->consumers[source], partitions);
    if (error) {
        LOG(engine, SL_LOG_ERROR, "incremental_unassign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

/* A keyed source's record belongs to the partition murmur2(key) selects
 * (sl_topology_set_keyed). With a non-NULL key murmur2_random is plain
 * murmur2, the Java client's partitioner, as in sl_engine_query_partition. */
static bool task_key_on_its_partition(const sl_engine *engine, const task *t,
                                      const sl_record *record) {
    int32_t partitions = engine->source_partitions[t->source];
    if (!engine->topology->sources[t->source].keyed || !record->key || partitions <= 0)
        return true;
    return rd_kafka_msg_partitioner_murmur2_random(NULL, record->key, record->key_len, partitions,
                                                   NULL, NULL) == record->partition;
}

static sl_err task_process_traced(sl_engine *engine, task *t, const sl_record *rec,
                                  const char **why);

sl_err task_process(sl_engine *engine, task *t, const rd_kafka_message_t *m, const char **why) {
    rd_kafka_timestamp_type_t ts_type;
    int64_t timestamp = rd_kafka_message_timestamp(m, &ts_type);
    sl_record record = {.topic = engine->source_topic[t->source],
                        .partition = m->partition,
                        .offset = m->offset,
                        .timestamp_ms = timestamp >= 0 ? timestamp : sl_clock_wall_ms(),
                        .key = m->key,
                        .key_len = m->key_len,
                        .value = m->payload,
                        .value_len = m->len,
                        .message = m};
    sl_counter_add(engine->m.records_in[t->source], 1);
    int64_t started_us = sl_clock_mono_us();
    if (collector_begin(engine) != SL_OK) {
        /* Whatever its class: the batch cannot go on without a transaction
         * (the abort finds none open, and drops and rewinds the batch). */
        *why = "cannot begin a transaction";
        return SL_ERR_KAFKA_ABORTABLE;
    }
    /* The record's span: a child of its traceparent, current on this
     * thread until the record is done (outputs and log lines carry it). */
    const void *parent = NULL;
    size_t parent_len = 0;
    if (sl_record_header(&record, SL_TRACEPARENT_HEADER, &parent, &parent_len) && parent &&
        sl_traceparent_valid(parent, parent_len)) {
        char span[SL_TRACEPARENT_LEN + 1];
        sl_trace_child(parent, parent_len, span);
        sl_trace_set_current(span);
    }
    sl_err result = task_process_traced(engine, t, &record, why);
    sl_trace_set_current(NULL);
    if (result)
        return result;
    t->consumed_next = m->offset + 1;
    t->position = m->offset + 1;
    if (record.timestamp_ms > t->stream_time)
        t->stream_time = record.timestamp_ms;
    sl_histogram_observe(engine->m.process_seconds,
                         (double)(sl_clock_mono_us() - started_us) / 1e6);
    return SL_OK;
}

/* task_process after the transaction is open: the checks, the DLQ or the
 * processors. */
static sl_err task_process_traced(sl_engine *engine, task *t, const sl_record *rec,
                                  const char **why) {
    const sl_topology *topology = engine->topology;
    const sl_source_def *source = &topology->sources[t->source];
    sl_record record = *rec;
    char reason[256];
    if (!task_key_on_its_partition(engine, t, &record)) {
        sl_counter_add(engine->m.records_wrong_partition, 1);
        collector_send_to_dlq(engine, t, &record, source->name, SL_DLQ_WRONG_PARTITION);
    } else if (source->validate && !source->validate(&record, reason, sizeof(reason), source->opaque)) {
        collector_send_to_dlq(engine, t, &record, source->name, reason);
    } else {
        sl_ctx ctx = {.engine = engine, .task = t, .record = &record};
        for (size_t i = 0; i < topology->n_processors; i++) {
            const sl_processor_def *proc = &topology->processors[i];
            if (proc->source != t->source)
                continue;
            ctx.node = proc->name;
            sl_err err = proc->process(&ctx, &record, proc->opaque);
            if (err == SL_ERR_KAFKA_FATAL) {
                /* The producer is unusable (fenced): there is nothing to
                 * abort; a new producer and a rewind redo the batch. */
                *why = "the producer is unusable";
                return SL_ERR_KAFKA_FATAL;
            }
            if (err == SL_ERR_KAFKA) {
                /* An output could not be produced: the transaction is
                 * incomplete, so none of it may commit. */
                *why = "an output could not be produced";
                return SL_ERR_KAFKA_ABORTABLE;
            }
            if (err || ctx.reject_reason) {
                collector_send_to_dlq(engine, t, &record, proc->name,
                            ctx.reject_reason ? ctx.reject_reason : sl_err_name(err));
                break;
            }
        }
    }
    return SL_OK;
}

void task_punctuate(sl_engine *engine, task *t, bool wall_clock_only) {
    const sl_topology *topology = engine->topology;
    for (size_t i = 0; i < topology->n_punctuators; i++) {
        const sl_punctuator_def *def = &topology->punctuators[i];
        int64_t now = def->type == SL_PUNCTUATE_WALL_CLOCK ? sl_clock_wall_ms() : t->stream_time;
        if (def->type == SL_PUNCTUATE_STREAM_TIME) {
            if (wall_clock_only || t->stream_time == INT64_MIN)
                continue;
            if (t->next_punctuation[i] == INT64_MIN)
                t->next_punctuation[i] = (now / def->interval_ms + 1) * def->interval_ms;
        }
        if (now < t->next_punctuation[i])
            continue;
        if (collector_begin(engine) != SL_OK)
            return;
        sl_ctx ctx = {.engine = engine, .task = t, .node = def->name};
        sl_err err = def->punctuate(&ctx, now, def->opaque);
        sl_counter_add(engine->m.punctuations, 1);
        if (err)
            LOG(engine, SL_LOG_WARN, "punctuator %s on task %d: %s", def->name, t->partition,
                sl_err_name(err));
        /* Skip missed intervals instead of firing a burst after a stall. */
        t->next_punctuation[i] = (now / def->interval_ms + 1) * def->interval_ms;
    }
}

