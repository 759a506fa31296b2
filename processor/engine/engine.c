/*
 * engine.c: the stream-processing loop (Kafka Streams' StreamThread): start,
 * poll, commit, rebalance, close; and the one place that decides recovery.
 *
 * Design note.
 *
 * The loop thread owns the engine. One iteration of sl_engine_poll:
 *
 *   rewind_to_committed (if a rewind is owed) -> globals_poll ->
 *   restore_poll (one slice) -> consumer poll: task_process per record
 *   (task_punctuate on stream time) -> task_punctuate (wall clock) ->
 *   commit every commit.interval.ms (or early: store.pending.max.bytes)
 *
 * The parts below the loop (tasks.c, restore.c, collector.c) never abort,
 * rewind or recreate anything. They return classified errors, and
 * recover() acts on them:
 *
 *   SL_ERR_KAFKA_ABORTABLE  abort_and_rewind: collector_abort,
 *                           collector_drop_pending, rewind_to_committed
 *   SL_ERR_KAFKA_FATAL      reset_after_fatal: destroy and recreate the
 *                           producer, tasks_recreate_all (wipe + restore),
 *                           rewind_to_committed
 *
 * Engine states (the transaction states are in collector.c, the task
 * states in tasks.c):
 *
 *              sl_engine_new                 sl_engine_start
 *   (none) ------------------> STOPPED ---------------------------> RUNNING
 *                                                                  |  ^   |
 *             recover(ABORTABLE): abort_and_rewind                 |  |   |
 *             recover(FATAL):     reset_after_fatal, producer back +--+   |
 *                                                                         |
 *   RUNNING --reset_after_fatal: the producer cannot be recreated--> FAILED
 *             (every task closed dirty; engine->failed is sticky: every
 *             sl_engine_poll returns it)
 *   RUNNING/FAILED --sl_engine_close--> CLOSED --sl_engine_destroy--> (none)
 *
 * Invariants:
 *   - One transaction covers every task of the instance; it is begun at the
 *     first record after a commit (collector_begin) and committed every
 *     commit.interval.ms with the consumed offsets (collector_commit).
 *   - Abortable error: abort, drop every pending batch, rewind every
 *     assigned partition to its committed offset. Fatal error (fenced):
 *     recreate the producer, close every task dirty, recreate the tasks
 *     (wipe + restore) and rewind. If the producer cannot be recreated,
 *     every task closes dirty and the engine stops (FAILED above).
 *   - A rewind that could not read the committed offsets is owed
 *     (needs_rewind) and retried at the top of the next iteration.
 *   - The rebalance callback runs inside the consumer poll, on the loop
 *     thread: a revoke commits first (recovering as above) and closes the
 *     tasks clean; a lost assignment aborts, drops and closes them dirty.
 *   - Restore reads at most restore.batch.records per iteration, so the
 *     group consumer is polled regularly and never misses
 *     max.poll.interval.ms.
 */
#include "processor/engine/engine.h"

#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "processor/base/clock.h"
#include "processor/engine/engine_int.h"

/* ------------------------------------------------------------------------ */
/* Recovery: the only place that aborts, rewinds or recreates the producer  */

/* Seek every assigned partition of one group back to its committed offset.
 * False if it must be tried again. */
static bool rewind_group(sl_engine *engine, rd_kafka_t *consumer) {
    rd_kafka_topic_partition_list_t *assignment = NULL;
    if (rd_kafka_assignment(consumer, &assignment) || !assignment)
        return true;
    if (assignment->cnt == 0) { /* nothing assigned (all lost): nothing to rewind */
        rd_kafka_topic_partition_list_destroy(assignment);
        return true;
    }
    rd_kafka_resp_err_t code = rd_kafka_committed(consumer, assignment, ADMIN_TIMEOUT_MS);
    if (code) {
        LOG(engine, SL_LOG_WARN, "rewind: cannot read committed offsets: %s; will retry",
            rd_kafka_err2str(code));
        rd_kafka_topic_partition_list_destroy(assignment);
        return false;
    }
    for (int i = 0; i < assignment->cnt; i++)
        if (assignment->elems[i].offset < 0)
            assignment->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_error_t *error = rd_kafka_seek_partitions(consumer, assignment, ADMIN_TIMEOUT_MS);
    rd_kafka_topic_partition_list_destroy(assignment);
    if (error) {
        LOG(engine, SL_LOG_WARN, "rewind: seek failed: %s; will retry",
            rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return false;
    }
    return true;
}

/* Seek every assigned partition of every group back to its committed
 * offset, so the records of a dropped batch are processed again. One
 * transaction carries the offsets of every group, so all rewind together. */
static void rewind_to_committed(sl_engine *engine) {
    bool done = true;
    for (size_t src = 0; src < engine->topology->n_sources; src++)
        if (engine->consumers[src])
            done &= rewind_group(engine, engine->consumers[src]);
    engine->needs_rewind = !done;
}

/* Fenced or otherwise fatal: the producer is unusable and whether the last
 * transaction committed is unknown, so the local state is distrusted too. */
static sl_err reset_after_fatal(sl_engine *engine) {
    sl_counter_add(engine->m.producer_resets, 1);
    LOG(engine, SL_LOG_WARN, "fatal producer error: recreating the producer and the tasks");
    clients_destroy_producer(engine);
    /* What failed went with the old producer and its transaction: nothing
     * is in flight for the new one, and the rewind redoes the batch. */
    engine->delivery_failed = false;
    collector_drop_pending(engine);
    char why[512];
    sl_err err = clients_create_producer(engine, why, sizeof(why));
    if (err) {
        LOG(engine, SL_LOG_ERROR, "cannot recreate the producer: %s", why);
        /* The engine stops. Its tasks close dirty now: their state is
         * distrusted, so no checkpoint, and a clean close would need the
         * producer (changelog end offsets) that is gone. */
        tasks_close_all(engine, false);
        engine->failed = err;
        return err;
    }
    tasks_recreate_all(engine);
    rewind_to_committed(engine);
    return SL_OK;
}

static void abort_and_rewind(sl_engine *engine, const char *why) {
    sl_counter_add(engine->m.aborts, 1);
    LOG(engine, SL_LOG_WARN, "aborting the transaction and rewinding: %s", why);
    if (collector_abort(engine) == SL_ERR_KAFKA_FATAL) {
        reset_after_fatal(engine);
        return;
    }
    collector_drop_pending(engine);
    engine->delivery_failed = false;
    rewind_to_committed(engine);
}

/* Act on a classified error of the parts below the loop. Returns SL_OK once
 * recovered, or the sticky error when the engine cannot go on. */
static sl_err recover(sl_engine *engine, sl_err err, const char *why) {
    if (!err)
        return SL_OK;
    if (err == SL_ERR_KAFKA_FATAL)
        return reset_after_fatal(engine);
    abort_and_rewind(engine, why);
    return engine->failed;
}

/* Commit everything processed since the last commit, recovering from a
 * failed commit. The settle counters let a query wait for the apply that
 * follows a visible commit; the notification wakes the queries that wait
 * for a key to appear (sl_engine_await_applied). */
static sl_err commit(sl_engine *engine) {
    uint64_t begun = atomic_fetch_add(&engine->commits_begun, 1) + 1;
    char why[512] = "";
    sl_err err = recover(engine, collector_commit(engine, why, sizeof(why)), why);
    atomic_store(&engine->commits_settled, begun);
    engine_notify_applied(engine);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Rebalancing                                                               */

/* Partitions lost: another member may own them already, so committing what
 * was processed is no longer ours to do. */
static void drop_uncommitted(sl_engine *engine) {
    if (collector_txn_open(engine)) {
        collector_abort(engine); /* the revoke goes on whatever the outcome */
        sl_counter_add(engine->m.aborts, 1);
        engine->delivery_failed = false; /* the abort purged the queue */
    }
    collector_drop_pending(engine);
}

static void on_revoke(sl_engine *engine, int source, rd_kafka_topic_partition_list_t *partitions,
                      bool lost) {
    if (lost) {
        drop_uncommitted(engine);
    } else {
        commit(engine);
    }
    tasks_revoke(engine, source, partitions, !lost);
    if (lost)
        rewind_to_committed(engine);
}

/* librdkafka declared the group consumer of `src` failed for good. With
 * 2.0 that is a static member fenced by another member with its
 * group.instance.id: librdkafka's own rejoin after a broker bounce can do
 * it (its issue #3437), and so can a second instance started on a copy of
 * this state directory. The group's partitions are lost, as in a lost
 * revoke; the other groups go on; a new consumer joins after a backoff. */
static void group_failed(sl_engine *engine, size_t src) {
    char why[512] = "";
    rd_kafka_fatal_error(engine->consumers[src], why, sizeof(why));
    sl_counter_add(engine->m.group_rejoins, 1);
    LOG(engine, SL_LOG_ERROR,
        "%s: the consumer failed: %s; its tasks close and a new consumer joins (if another "
        "instance runs on a copy of this state directory, this repeats)",
        engine->group_id[src], why);
    drop_uncommitted(engine);
    for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++)
        if (engine->tasks[src][p])
            task_close(engine, engine->tasks[src][p], false);
    standby_revisit(engine);
    clients_drop_group(engine, src);
    rewind_to_committed(engine);
}

void engine_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque) {
    sl_engine *engine = opaque;
    int source = clients_source_of(engine, rk);
    if (source < 0)
        return;
    engine->joined[source] = true;
    const char *group = engine->group_id[source];
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        LOG(engine, SL_LOG_INFO, "%s: assigned %d partition%s", group, partitions->cnt,
            partitions->cnt == 1 ? "" : "s");
        tasks_assign(engine, source, partitions);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        bool lost = rd_kafka_assignment_lost(rk);
        LOG(engine, lost ? SL_LOG_WARN : SL_LOG_INFO, "%s: %s %d partition%s", group,
            lost ? "lost" : "revoked", partitions->cnt, partitions->cnt == 1 ? "" : "s");
        on_revoke(engine, source, partitions, lost);
    } else {
        LOG(engine, SL_LOG_ERROR, "%s: rebalance error: %s", group, rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Construction, start, loop, close                                          */

sl_engine *sl_engine_new(const sl_config *config, const sl_topology *topology,
                         const char *bootstrap, const sl_logger *logger, char *errstr,
                         size_t errstr_size) {
    if (topology->n_sources == 0) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "topology has no source");
        return NULL;
    }
    sl_engine *engine = calloc(1, sizeof(*engine));
    if (!engine) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    engine->logger = *logger;
    engine->wake[0] = engine->wake[1] = -1;
    pthread_mutex_init(&engine->standby_lock, NULL);
    pthread_mutex_init(&engine->applied_lock, NULL);
    pthread_condattr_t applied_attr;
    pthread_condattr_init(&applied_attr);
    pthread_condattr_setclock(&applied_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&engine->applied_cond, &applied_attr);
    pthread_condattr_destroy(&applied_attr);
    engine->config = config;
    engine->topology = topology;
    engine->bootstrap = strdup(bootstrap);
    snprintf(engine->app_id, sizeof(engine->app_id), "%s", sl_config_get(config, "application.id"));
    engine->eos = strcmp(sl_config_get(config, "processing.guarantee"), "exactly_once_v2") == 0;
    engine->commit_interval_ms = sl_config_get_int(config, "commit.interval.ms");
    engine->poll_batch = (int)sl_config_get_int(config, "poll.batch.records");
    engine->restore_batch = (int)sl_config_get_int(config, "restore.batch.records");
    engine->pending_max_bytes = (size_t)sl_config_get_int(config, "store.pending.max.bytes");
    engine->replication_factor = (int)sl_config_get_int(config, "topic.replication.factor");
    engine->warm_max_ms = sl_config_get_int(config, "warmup.max.ms");
    engine->acceptable_lag = sl_config_get_int(config, "acceptable.recovery.lag");
    atomic_store(&engine->warmup_plan, -1);
    engine->emit_cache = sl_emit_cache_new((size_t)sl_config_get_int(config, "cache.max.bytes"));
    if (!engine->bootstrap || !engine->emit_cache ||
        snprintf(engine->state_path, sizeof(engine->state_path), "%s/%s",
                 sl_config_get(config, "state.dir"),
                 engine->app_id) >= (int)sizeof(engine->state_path)) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long or out of memory");
        goto fail;
    }
    if (topics_name(engine, errstr, errstr_size) ||
        clients_load_instance_id(engine, errstr, errstr_size))
        goto fail;
    engine->metrics = sl_metrics_new(4096);
    if (!engine->metrics) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    engine->own_metrics = true;
    stats_register(engine);
    engine->env = sl_store_env_new((size_t)sl_config_get_int(config, "rocksdb.block.cache.bytes"),
                                   (size_t)sl_config_get_int(config, "rocksdb.write.buffer.bytes"),
                                   errstr, errstr_size);
    if (!engine->env)
        goto fail;
    return engine;
fail:
    sl_engine_destroy(engine);
    return NULL;
}

sl_err sl_engine_start(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    sl_err err = clients_create_producer(engine, errstr, errstr_size);
    if (!err)
        err = topics_prepare(engine, errstr, errstr_size);
    if (!err)
        err = queries_init(engine, errstr, errstr_size);
    if (!err)
        err = standby_init(engine, errstr, errstr_size);
    if (!err)
        err = clients_create_consumers(engine, errstr, errstr_size);
    if (!err)
        err = globals_start(engine, errstr, errstr_size);
    if (err)
        return err;
    /* A new instance may warm up before it joins (warm_up); any other joins
     * now, with its identity. */
    engine->join_pending = engine->fresh && engine->warm_max_ms > 0;
    atomic_store(&engine->warming, engine->join_pending);
    engine->warm_started_ms = sl_clock_mono_ms();
    if (!engine->join_pending) {
        err = clients_subscribe(engine, errstr, errstr_size);
        if (err)
            return err;
    }
    engine->last_commit_ms = sl_clock_mono_ms();
    LOG(engine, SL_LOG_INFO,
        "started: %s, commit every %lld ms, transactional.id %s-%s, %zu group%s (%s-<source>)",
        engine->eos ? "exactly_once_v2" : "at_least_once", (long long)engine->commit_interval_ms,
        engine->app_id, engine->instance_id, topology->n_sources,
        topology->n_sources == 1 ? "" : "s", engine->app_id);
    return SL_OK;
}

static void update_ready(sl_engine *engine) {
    bool joined = true;
    for (size_t src = 0; src < engine->topology->n_sources; src++)
        joined &= engine->joined[src];
    bool ready =
        joined && engine->globals_bootstrapped &&
        sl_gauge_value(engine->m.tasks_running) == sl_gauge_value(engine->m.tasks_assigned);
    atomic_store(&engine->ready, ready);
}

/* A record of a task that is not RUNNING (fetched before the pause took
 * effect, or while the global stores bootstrap): put it back. */
static void put_back(rd_kafka_t *consumer, const task *t, const rd_kafka_message_t *m) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, rd_kafka_topic_name(m->rkt), m->partition)->offset =
        m->offset;
    rd_kafka_error_t *error = rd_kafka_seek_partitions(consumer, list, 5000);
    if (error)
        rd_kafka_error_destroy(error);
    if (t && t->state != TASK_RUNNING)
        rd_kafka_pause_partitions(consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
}

/* KIP-441's warm-up, for a new instance: it joins the groups only once its
 * standbys of every task the running instances own are within
 * acceptable.recovery.lag records of their changelogs' ends, so a task
 * that moves here restores only that tail and its current owner serves it
 * until then. The group's assignor decides which tasks move, so every one
 * is warmed; the standbys the ring does not want here close once the
 * assignment is published. Joins anyway after warmup.max.ms, or at once
 * with no membership to plan it (no gateway) or nobody running. */
static sl_err warm_up(sl_engine *engine) {
    int64_t now = sl_clock_mono_ms(), waited = now - engine->warm_started_ms;
    long long plan = atomic_load(&engine->warmup_plan);
    size_t n = 0;
    if (!atomic_load(&engine->warmup_expected))
        LOG(engine, SL_LOG_INFO, "joining: no membership to warm up from");
    else if (plan == 0)
        LOG(engine, SL_LOG_INFO, "joining: no instance is running tasks, nothing to warm up");
    else if (waited >= engine->warm_max_ms)
        LOG(engine, SL_LOG_WARN, "joining before the warm-up caught up (warmup.max.ms %lld passed)",
            (long long)engine->warm_max_ms);
    else if (plan > 0 && standby_warm(engine, engine->acceptable_lag, &n))
        LOG(engine, SL_LOG_INFO,
            "joining: warmed up %zu task%s to within %lld records in %lld ms", n,
            n == 1 ? "" : "s", (long long)engine->acceptable_lag, (long long)waited);
    else {
        if (now - engine->warm_logged_ms >= 5000) {
            engine->warm_logged_ms = now;
            LOG(engine, SL_LOG_INFO, "warming up before joining: %s (%lld ms)",
                plan < 0 ? "waiting for the membership" : "standbys catching up",
                (long long)waited);
        }
        return SL_OK;
    }
    char why[512];
    sl_err err = clients_subscribe(engine, why, sizeof(why));
    if (err) {
        LOG(engine, SL_LOG_ERROR, "cannot join the groups: %s", why);
        engine->failed = err;
        return err;
    }
    engine->join_pending = false;
    atomic_store(&engine->warming, false);
    return SL_OK;
}

void sl_engine_expect_warmup(sl_engine *engine) {
    atomic_store(&engine->warmup_expected, true);
}

bool sl_engine_warming(const sl_engine *engine) {
    return atomic_load(&engine->warming);
}

void sl_engine_warmup_planned(sl_engine *engine, size_t partitions) {
    atomic_store(&engine->warmup_plan, (long long)partitions);
}

/* Up to poll.batch.records records of one group consumer, without waiting
 * (the consumer also serves its rebalances here). The number taken off its
 * queue; *full when the batch ended before the queue did. */
static int poll_source(sl_engine *engine, size_t src, bool *full) {
    rd_kafka_t *consumer = engine->consumers[src];
    int n = 0;
    for (; consumer && n < engine->poll_batch; n++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 0);
        if (!m)
            return n;
        if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
            rd_kafka_message_destroy(m);
            group_failed(engine, src);
            return n + 1;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                LOG(engine, SL_LOG_WARN, "consumer %s: %s", engine->group_id[src],
                    rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        task *t = tasks_of(engine, rd_kafka_topic_name(m->rkt), m->partition);
        if (!t || t->state != TASK_RUNNING || !engine->globals_bootstrapped) {
            put_back(consumer, t, m);
            rd_kafka_message_destroy(m);
            return n + 1;
        }
        int32_t partition = m->partition;
        const char *why = "";
        sl_err err = task_process(engine, t, m, &why);
        rd_kafka_message_destroy(m);
        recover(engine, err, why);
        if (engine->failed) /* a producer reset failed: the tasks are gone */
            return n + 1;
        /* A producer reset replaced every task. */
        t = engine->tasks[src][partition];
        if (engine->topology->n_punctuators && t && t->state == TASK_RUNNING)
            task_punctuate(engine, t, false);
        if (engine->commit_requested)
            break; /* commit, before the record cache grows further */
    }
    *full = true;
    return n;
}

/* One round over every group consumer, starting at a different one each
 * time so none waits behind the others. */
static int poll_sources(sl_engine *engine, bool *full) {
    size_t n_sources = engine->topology->n_sources;
    size_t first = engine->next_source++ % n_sources;
    int taken = 0;
    for (size_t i = 0; i < n_sources && !engine->failed && !engine->commit_requested; i++)
        taken += poll_source(engine, (first + i) % n_sources, full);
    return taken;
}

/* Wait until a group consumer's queue becomes non-empty (its io event
 * writes to the wake pipe) or timeout_ms pass. */
static void wait_for_sources(sl_engine *engine, int timeout_ms) {
    struct pollfd wake = {.fd = engine->wake[0], .events = POLLIN};
    if (poll(&wake, 1, timeout_ms) > 0) {
        char drain[64];
        while (read(engine->wake[0], drain, sizeof(drain)) > 0) {
        }
    }
}

sl_err sl_engine_poll(sl_engine *engine, int timeout_ms) {
    if (engine->failed)
        return engine->failed;
    if (engine->needs_rewind)
        rewind_to_committed(engine);
    clients_rejoin_groups(engine);
    globals_poll(engine);
    /* While restoring, the group consumers are only polled (to stay in
     * their groups and serve rebalances), never waited on: restore gets the
     * time. */
    if (restore_poll(engine))
        timeout_ms = 0;
    /* A queue wakes the pipe only when it goes from empty to non-empty, so
     * the wait comes after a round that found every queue empty. */
    bool full = standby_poll(engine);
    if (engine->join_pending && warm_up(engine))
        return engine->failed;
    if (poll_sources(engine, &full) == 0 && !full && timeout_ms > 0 && !engine->failed) {
        wait_for_sources(engine, timeout_ms);
        poll_sources(engine, &full);
    }
    if (engine->failed)
        return engine->failed;
    const sl_topology *topology = engine->topology;
    if (topology->n_punctuators)
        FOR_EACH_TASK(engine, src, p, t)
            if (t->state == TASK_RUNNING)
                task_punctuate(engine, t, true);
    rd_kafka_poll(engine->producer, 0);
    if (engine->commit_requested ||
        sl_clock_mono_ms() - engine->last_commit_ms >= engine->commit_interval_ms) {
        if (engine->commit_requested)
            sl_counter_add(engine->m.early_commits, 1);
        sl_err err = commit(engine);
        if (topology->n_globals && engine->globals_bootstrapped)
            globals_checkpoint(engine);
        if (err)
            return err;
    }
    stats_sample(engine);
    update_ready(engine);
    return SL_OK;
}

sl_err sl_engine_close(sl_engine *engine) {
    if (engine->closed)
        return SL_OK;
    engine->closed = true;
    /* consumer_close revokes everything through the rebalance callback,
     * which commits and closes every task cleanly. */
    clients_close_consumers(engine);
    /* Tasks the revoke did not reach (a failed rejoin, say): close them now. */
    commit(engine);
    tasks_close_all(engine, !collector_txn_open(engine));
    standby_close_all(engine);
    if (engine->topology->n_globals && engine->globals_bootstrapped)
        globals_checkpoint(engine);
    if (engine->producer)
        rd_kafka_flush(engine->producer, 10000);
    atomic_store(&engine->ready, false);
    LOG(engine, SL_LOG_INFO, "closed");
    return SL_OK;
}

void sl_engine_destroy(sl_engine *engine) {
    if (!engine)
        return;
    clients_destroy(engine);
    for (size_t src = 0; src < SL_TOPOLOGY_MAX_NODES; src++) {
        if (!engine->tasks[src])
            continue;
        for (int32_t p = 0; p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            if (!t)
                continue;
            for (size_t s = 0; s < SL_TOPOLOGY_MAX_NODES; s++) {
                sl_store_close(t->stores[s].store);
                sl_store_pending_destroy(t->stores[s].pending);
                sl_store_pending_destroy(t->stores[s].restore_batch);
            }
            free(t);
        }
        free(engine->tasks[src]);
    }
    queries_free(engine);
    standby_free_all(engine);
    pthread_mutex_destroy(&engine->standby_lock);
    pthread_cond_destroy(&engine->applied_cond);
    pthread_mutex_destroy(&engine->applied_lock);
    globals_free(engine);
    sl_store_env_destroy(engine->env);
    sl_emit_cache_destroy(engine->emit_cache);
    if (engine->own_metrics)
        sl_metrics_destroy(engine->metrics);
    free(engine->bootstrap);
    free(engine);
}

bool sl_engine_ready(const sl_engine *engine) {
    return atomic_load(&engine->ready);
}

const char *sl_engine_instance_id(const sl_engine *engine) {
    return engine->instance_id;
}

const char *sl_engine_application_id(const sl_engine *engine) {
    return engine->app_id;
}
