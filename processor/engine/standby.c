/*
 * standby.c: standby replicas (Kafka Streams' standby tasks).
 *
 * A standby is a copy of the stores of a task this instance does not own,
 * kept in the task's own directory (<state>/<source>_<p>) by following the
 * task's changelog partitions with an assign-only read_committed consumer
 * of its own. When the group later assigns the task here, task_create finds
 * the standby's checkpoint and restores only the tail it has not read yet.
 *
 * Which standbys to keep is decided outside the engine, from the membership
 * table (gateway/members.c: the num.standby.replicas instances after the
 * owner in the ring of live instance ids), and handed in by
 * sl_engine_set_standbys from the members thread. The loop reconciles on
 * its own thread: open a standby for each wanted partition that has no
 * task here, close the standbys no longer wanted.
 *
 * Life of a standby:
 *   open     read the directory's checkpoint; a store without an entry
 *            starts from the beginning (under EOS its files are wiped
 *            first, exactly as task_create would)
 *   follow   records are collected per store, latest per key, and written
 *            as one RocksDB batch per slice, WAL off (the changelog is the
 *            log)
 *   checkpoint  every STANDBY_CHECKPOINT_MS: flush, then write the
 *            positions (a crash loses at most what came after: the replay
 *            from an older position converges to the same values, a KV
 *            changelog being last-write-wins in order)
 *   close    flush + checkpoint at the current position (the task is
 *            coming here: the tail to restore is what the standby had not
 *            read), or drop without a checkpoint on a write error
 * A standby and a task never hold one directory at once: tasks_assign
 * closes the standby before it creates the task, and a standby is opened
 * only where no task is.
 */
#include <string.h>

#include "processor/base/clock.h"
#include "processor/engine/engine_int.h"
#include "state/checkpoint.h"

#define STANDBY_CHECKPOINT_MS 30000

static const char *source_name(const sl_engine *engine, int source) {
    return engine->topology->sources[source].name;
}

static bool source_has_stores(const sl_engine *engine, size_t source) {
    for (size_t s = 0; s < engine->topology->n_stores; s++)
        if (engine->topology->store_source[s] == (int)source)
            return true;
    return false;
}

sl_err standby_init(sl_engine *engine, char *errstr, size_t errstr_size) {
    for (size_t src = 0; src < engine->topology->n_sources; src++) {
        int32_t n = engine->source_partitions[src];
        engine->standbys[src] = calloc((size_t)(n > 0 ? n : 1), sizeof(standby *));
        engine->standby_wanted[src] = calloc((size_t)(n > 0 ? n : 1), sizeof(unsigned char));
        engine->standby_snapshot[src] = calloc((size_t)(n > 0 ? n : 1), sizeof(unsigned char));
        if (!engine->standbys[src] || !engine->standby_wanted[src] ||
            !engine->standby_snapshot[src])
            return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    }
    return SL_OK;
}

void sl_engine_set_standbys(sl_engine *engine, const char *const *topics, const int32_t *partitions,
                            const bool *wanted, size_t n) {
    if (!atomic_load(&engine->standby_ready))
        return;
    bool changed = false;
    pthread_mutex_lock(&engine->standby_lock);
    for (size_t i = 0; i < n; i++) {
        int src = tasks_source_of_topic(engine, topics[i]);
        if (src < 0 || partitions[i] < 0 || partitions[i] >= engine->source_partitions[src])
            continue;
        unsigned char value = wanted[i] ? STANDBY_WANTED : STANDBY_NOT_WANTED;
        changed |= engine->standby_wanted[src][partitions[i]] != value;
        engine->standby_wanted[src][partitions[i]] = value;
    }
    pthread_mutex_unlock(&engine->standby_lock);
    if (changed)
        atomic_fetch_add(&engine->standby_version, 1);
}

/* The standby consumer's assignment: every standby store at its position. */
static void standby_reassign(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->standbys[src] && p < engine->source_partitions[src]; p++) {
            const standby *sb = engine->standbys[src][p];
            for (size_t s = 0; sb && s < topology->n_stores; s++)
                if (sb->stores[s].store)
                    rd_kafka_topic_partition_list_add(list, engine->changelog_topic[s], p)->offset =
                        sb->stores[s].position;
        }
    rd_kafka_resp_err_t code = rd_kafka_assign(engine->standby_consumer, list);
    if (code)
        LOG(engine, SL_LOG_ERROR, "standby consumer assign: %s", rd_kafka_err2str(code));
    rd_kafka_topic_partition_list_destroy(list);
}

/* Write the slice's records of every store of `sb`. False on a write error. */
static bool standby_write(sl_engine *engine, standby *sb) {
    char why[512];
    for (size_t s = 0; s < engine->topology->n_stores; s++) {
        standby_store *ss = &sb->stores[s];
        if (!ss->store || sl_store_pending_count(ss->batch) == 0)
            continue;
        if (sl_store_pending_apply(ss->store, ss->batch, true, why, sizeof(why))) {
            LOG(engine, SL_LOG_ERROR, "standby %s_%d: write failed: %s",
                source_name(engine, sb->source), sb->partition, why);
            return false;
        }
    }
    return true;
}

/* Flush every store of `sb` and write its positions as the checkpoint. */
static bool standby_checkpoint(sl_engine *engine, standby *sb) {
    const sl_topology *topology = engine->topology;
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t n = 0;
    char why[512];
    if (!standby_write(engine, sb))
        return false;
    for (size_t s = 0; s < topology->n_stores && n < SL_CHECKPOINT_MAX_ENTRIES; s++) {
        standby_store *ss = &sb->stores[s];
        if (!ss->store)
            continue;
        if (ss->position < 0)
            return true; /* nothing read yet: the old checkpoint (if any) stands */
        if (sl_store_flush(ss->store, why, sizeof(why))) {
            LOG(engine, SL_LOG_WARN, "standby %s_%d: flush failed: %s",
                source_name(engine, sb->source), sb->partition, why);
            return false;
        }
        snprintf(entries[n].store, sizeof(entries[n].store), "%s", topology->stores[s]);
        entries[n].partition = sb->partition;
        entries[n].offset = ss->position;
        n++;
    }
    char path[PATH_MAX + 16];
    tasks_checkpoint_path(sb->dir, path, sizeof(path));
    if (sl_checkpoint_write(path, entries, n, why, sizeof(why))) {
        LOG(engine, SL_LOG_WARN, "standby %s_%d: checkpoint: %s", source_name(engine, sb->source),
            sb->partition, why);
        return false;
    }
    sb->applied_since_checkpoint = 0;
    return true;
}

static void standby_free(const sl_engine *engine, standby *sb) {
    for (size_t s = 0; s < engine->topology->n_stores; s++) {
        sl_store_close(sb->stores[s].store);
        sl_store_pending_destroy(sb->stores[s].batch);
    }
    free(sb);
}

/* Close one standby: checkpointed (clean), or dropped with its checkpoint
 * removed (its files may be ahead of or behind any position we know). */
static void standby_close(sl_engine *engine, standby *sb, bool clean) {
    query_withdraw_standby(engine, sb); /* before any store closes */
    bool kept = clean && standby_checkpoint(engine, sb);
    if (!kept) {
        char path[PATH_MAX + 16], why[256];
        tasks_checkpoint_path(sb->dir, path, sizeof(path));
        sl_checkpoint_remove(path, why, sizeof(why));
    }
    engine->standbys[sb->source][sb->partition] = NULL;
    sl_gauge_add(engine->m.standby_tasks, -1);
    LOG(engine, SL_LOG_INFO, "standby %s_%d closed%s", source_name(engine, sb->source),
        sb->partition, kept ? " (checkpointed)" : " (no checkpoint)");
    standby_free(engine, sb);
}

static sl_err standby_open(sl_engine *engine, int source, int32_t partition) {
    const sl_topology *topology = engine->topology;
    char why[512];
    standby *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return SL_ERR_NOMEM;
    sb->source = source;
    sb->partition = partition;
    if (!fits(snprintf(sb->dir, sizeof(sb->dir), "%s/%s_%d", engine->state_path,
                       source_name(engine, source), partition),
              sizeof(sb->dir))) {
        free(sb);
        return SL_ERR_CONFIG;
    }
    char cp_path[PATH_MAX + 16];
    tasks_checkpoint_path(sb->dir, cp_path, sizeof(cp_path));
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t n_entries = 0;
    sl_err cp = sl_checkpoint_read(cp_path, entries, SL_CHECKPOINT_MAX_ENTRIES, &n_entries, why,
                                   sizeof(why));
    int64_t resumed = 0;
    for (size_t s = 0; s < topology->n_stores; s++) {
        if (topology->store_source[s] != source)
            continue;
        standby_store *ss = &sb->stores[s];
        char path[PATH_MAX];
        if (!fits(snprintf(path, sizeof(path), "%s/%s", sb->dir, topology->stores[s]),
                  sizeof(path)))
            goto fail;
        int64_t from = -1;
        for (size_t e = 0; cp == SL_OK && e < n_entries; e++)
            if (strcmp(entries[e].store, topology->stores[s]) == 0 &&
                entries[e].partition == partition)
                from = entries[e].offset;
        if (from < 0) {
            /* As in task_create: under EOS files without a checkpoint are
             * not to be trusted. */
            if (engine->eos && sl_store_destroy_files(path, why, sizeof(why)) != SL_OK)
                goto fail;
            from = RD_KAFKA_OFFSET_BEGINNING;
        } else {
            resumed++;
        }
        ss->store = sl_store_open(engine->env, path, why, sizeof(why));
        ss->batch = sl_store_pending_new();
        if (!ss->store || !ss->batch)
            goto fail;
        ss->position = from;
    }
    engine->standbys[source][partition] = sb;
    query_publish_standby(engine, sb);
    sl_gauge_add(engine->m.standby_tasks, 1);
    LOG(engine, SL_LOG_INFO, "standby %s_%d opened (%s)", source_name(engine, source), partition,
        resumed ? "from its checkpoint" : "from the beginning");
    return SL_OK;
fail:
    LOG(engine, SL_LOG_WARN, "standby %s_%d: cannot open: %s", source_name(engine, source),
        partition, why);
    standby_free(engine, sb);
    return SL_ERR_STORE;
}

/* Open and close standbys to match what the membership wants. The wanted
 * set is copied under the lock and acted on after: opening a store takes a
 * while, and the members thread (holding its table's lock, which HTTP
 * threads need) must not wait for it. */
static void standby_reconcile(sl_engine *engine) {
    bool changed = false;
    pthread_mutex_lock(&engine->standby_lock);
    for (size_t src = 0; src < engine->topology->n_sources; src++)
        memcpy(engine->standby_snapshot[src], engine->standby_wanted[src],
               (size_t)engine->source_partitions[src]);
    pthread_mutex_unlock(&engine->standby_lock);
    for (size_t src = 0; src < engine->topology->n_sources; src++) {
        if (!source_has_stores(engine, src))
            continue;
        for (int32_t p = 0; p < engine->source_partitions[src]; p++) {
            unsigned char wanted = engine->standby_snapshot[src][p];
            standby *sb = engine->standbys[src][p];
            bool active = engine->tasks[src] && engine->tasks[src][p];
            if (!sb && wanted == STANDBY_WANTED && !active)
                changed |= standby_open(engine, (int)src, p) == SL_OK;
            else if (sb && (wanted == STANDBY_NOT_WANTED || active)) {
                standby_close(engine, sb, true);
                changed = true;
            }
        }
    }
    if (changed)
        standby_reassign(engine);
}

void standby_release(sl_engine *engine, int source, int32_t partition) {
    standby *sb = engine->standbys[source] ? engine->standbys[source][partition] : NULL;
    if (!sb)
        return;
    standby_close(engine, sb, true);
    standby_reassign(engine);
}

void standby_revisit(sl_engine *engine) {
    engine->standby_seen_version = (unsigned)-1; /* reconcile on the next poll */
}

static int standby_message(sl_engine *engine, const rd_kafka_message_t *m, standby **dropped) {
    const sl_topology *topology = engine->topology;
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;
    int s = -1;
    for (size_t i = 0; topic && i < topology->n_stores; i++)
        if (strcmp(engine->changelog_topic[i], topic) == 0)
            s = (int)i;
    if (s < 0)
        return 0;
    int src = topology->store_source[s];
    standby *sb = m->partition >= 0 && m->partition < engine->source_partitions[src]
                      ? engine->standbys[src][m->partition]
                      : NULL;
    standby_store *ss = sb ? &sb->stores[s] : NULL;
    if (!ss || !ss->store)
        return 0;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        ss->position = m->offset;
        ss->caught_up = true;
        return 0;
    }
    if (m->err) {
        LOG(engine, SL_LOG_WARN, "standby read of %s [%d]: %s", topic, m->partition,
            rd_kafka_message_errstr(m));
        return 0;
    }
    if (ss->position >= 0 && m->offset < ss->position)
        return 0; /* read before a reassignment took effect */
    sl_err err = m->payload
                     ? sl_store_pending_put(ss->batch, m->key, m->key_len, m->payload, m->len)
                     : sl_store_pending_delete(ss->batch, m->key, m->key_len);
    if (err) {
        *dropped = sb; /* out of memory: drop it; it reopens from its checkpoint */
        return 0;
    }
    ss->position = m->offset + 1;
    sb->applied_since_checkpoint++;
    sl_counter_add(engine->m.standby_records, 1);
    return 1;
}

/* Records the standby is behind its changelogs' ends (the ends the
 * standby consumer last saw, no request sent); INT64_MAX until every
 * store has reached its end once. */
static int64_t standby_lag(sl_engine *engine, const standby *sb) {
    int64_t lag = 0;
    for (size_t s = 0; s < engine->topology->n_stores; s++) {
        const standby_store *ss = &sb->stores[s];
        if (!ss->store)
            continue;
        int64_t low, high;
        if (!ss->caught_up ||
            rd_kafka_get_watermark_offsets(engine->standby_consumer, engine->changelog_topic[s],
                                           sb->partition, &low, &high)) {
            return INT64_MAX;
        }
        if (high > ss->position)
            lag += high - ss->position;
    }
    return lag;
}

static void update_lag(sl_engine *engine, standby *sb) {
    query_set_standby_lag(engine, sb, standby_lag(engine, sb));
}

bool standby_warm(sl_engine *engine, int64_t acceptable, size_t *n) {
    *n = 0;
    if (engine->standby_seen_version != atomic_load(&engine->standby_version))
        return false; /* the loop has not opened the latest wanted set yet */
    for (size_t src = 0; src < engine->topology->n_sources; src++) {
        if (!source_has_stores(engine, src))
            continue;
        for (int32_t p = 0; p < engine->source_partitions[src]; p++) {
            if (engine->standby_snapshot[src][p] != STANDBY_WANTED ||
                (engine->tasks[src] && engine->tasks[src][p]))
                continue;
            (*n)++;
            standby *sb = engine->standbys[src][p];
            if (!sb || standby_lag(engine, sb) > acceptable)
                return false;
        }
    }
    return true;
}

bool standby_poll(sl_engine *engine) {
    unsigned version = atomic_load(&engine->standby_version);
    if (version != engine->standby_seen_version) {
        engine->standby_seen_version = version;
        standby_reconcile(engine);
    }
    if (sl_gauge_value(engine->m.standby_tasks) == 0)
        return false;
    rd_kafka_message_t *batch[RESTORE_FETCH_BATCH];
    ssize_t got =
        rd_kafka_consume_batch_queue(engine->standby_queue, 0, batch, RESTORE_FETCH_BATCH);
    standby *dropped = NULL;
    for (ssize_t i = 0; i < got; i++) {
        standby_message(engine, batch[i], &dropped);
        rd_kafka_message_destroy(batch[i]);
    }
    const sl_topology *topology = engine->topology;
    int64_t now = sl_clock_mono_ms();
    bool due = now - engine->standby_checkpoint_ms >= STANDBY_CHECKPOINT_MS;
    bool reassign = false;
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->standbys[src] && p < engine->source_partitions[src]; p++) {
            standby *sb = engine->standbys[src][p];
            if (!sb)
                continue;
            bool ok = sb != dropped && standby_write(engine, sb);
            if (ok)
                update_lag(engine, sb);
            if (ok && due && sb->applied_since_checkpoint > 0)
                ok = standby_checkpoint(engine, sb);
            if (!ok) {
                standby_close(engine, sb, false);
                standby_revisit(engine); /* reopen from scratch */
                reassign = true;
            }
        }
    if (due)
        engine->standby_checkpoint_ms = now;
    if (reassign)
        standby_reassign(engine);
    return got == RESTORE_FETCH_BATCH;
}

void standby_close_all(sl_engine *engine) {
    for (size_t src = 0; src < engine->topology->n_sources; src++)
        for (int32_t p = 0; engine->standbys[src] && p < engine->source_partitions[src]; p++)
            if (engine->standbys[src][p])
                standby_close(engine, engine->standbys[src][p], true);
}

void standby_free_all(sl_engine *engine) {
    for (size_t src = 0; src < SL_TOPOLOGY_MAX_NODES; src++) {
        for (int32_t p = 0; engine->standbys[src] && p < engine->source_partitions[src]; p++)
            if (engine->standbys[src][p])
                standby_free(engine, engine->standbys[src][p]);
        free(engine->standbys[src]);
        free(engine->standby_wanted[src]);
        free(engine->standby_snapshot[src]);
    }
}
