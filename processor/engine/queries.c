/*
 * queries.c: interactive queries (sl_engine_query_*): reads of the
 * committed state of task stores from any thread (HTTP handlers).
 *
 * HTTP threads read task stores while the loop thread opens and closes them.
 * One query_slot per source partition, with a writer-preferring rwlock:
 *
 *   task_create --query_publish--> RESTORING --query_set_running--> RUNNING
 *   RESTORING/RUNNING --query_withdraw (task_close, before any store is
 *   closed)--> ABSENT
 *
 * Readers hold the read lock only while they call RocksDB; the loop thread
 * takes the write lock for a pointer swap, so it waits at most for the
 * reads in flight. Stores hold committed state only (apply-after-commit),
 * and a RESTORING store is never read: a query answers SL_ERR_NOT_READY,
 * never a partial answer. query_version changes on every transition so the
 * membership publisher notices a new assignment at once.
 */
#include <string.h>
#include <time.h>

#include "processor/base/clock.h"
#include "processor/engine/engine_int.h"

sl_err queries_init(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    for (size_t src = 0; src < topology->n_sources; src++) {
        size_t n = (size_t)engine->source_partitions[src];
        engine->query_slots[src] = calloc(n ? n : 1, sizeof(query_slot));
        if (!engine->query_slots[src]) {
            pthread_rwlockattr_destroy(&attr);
            return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        }
        for (size_t p = 0; p < n; p++)
            pthread_rwlock_init(&engine->query_slots[src][p].lock, &attr);
    }
    pthread_rwlockattr_destroy(&attr);
    atomic_store_explicit(&engine->queries_open, true, memory_order_release);
    return SL_OK;
}

void queries_free(sl_engine *engine) {
    for (size_t src = 0; src < SL_TOPOLOGY_MAX_NODES; src++) {
        if (!engine->query_slots[src])
            continue;
        for (int32_t p = 0; p < engine->source_partitions[src]; p++)
            pthread_rwlock_destroy(&engine->query_slots[src][p].lock);
        free(engine->query_slots[src]);
        engine->query_slots[src] = NULL;
    }
}

static query_slot *query_slot_of(sl_engine *engine, const task *t) {
    return engine->query_slots[t->source] ? &engine->query_slots[t->source][t->partition] : NULL;
}

void query_publish(sl_engine *engine, const task *t) {
    query_slot *slot = query_slot_of(engine, t);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    for (size_t s = 0; s < engine->topology->n_stores; s++)
        slot->stores[s] = t->stores[s].store;
    slot->state = t->state == TASK_RUNNING ? QUERY_RUNNING : QUERY_RESTORING;
    pthread_rwlock_unlock(&slot->lock);
    atomic_fetch_add(&engine->query_version, 1);
    engine_notify_applied(engine);
}

void query_set_running(sl_engine *engine, const task *t) {
    query_slot *slot = query_slot_of(engine, t);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    if (slot->state != QUERY_ABSENT)
        slot->state = QUERY_RUNNING;
    pthread_rwlock_unlock(&slot->lock);
    atomic_fetch_add(&engine->query_version, 1);
    engine_notify_applied(engine);
}

void query_withdraw(sl_engine *engine, const task *t) {
    query_slot *slot = query_slot_of(engine, t);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    slot->state = QUERY_ABSENT;
    memset(slot->stores, 0, sizeof(slot->stores));
    pthread_rwlock_unlock(&slot->lock);
    atomic_fetch_add(&engine->query_version, 1);
    engine_notify_applied(engine); /* a waiter learns it is no longer the owner */
}

static query_slot *standby_slot(sl_engine *engine, const standby *sb) {
    return engine->query_slots[sb->source] ? &engine->query_slots[sb->source][sb->partition] : NULL;
}

void query_publish_standby(sl_engine *engine, const standby *sb) {
    query_slot *slot = standby_slot(engine, sb);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    if (slot->state == QUERY_ABSENT) { /* never over a task's stores */
        for (size_t s = 0; s < engine->topology->n_stores; s++)
            slot->stores[s] = sb->stores[s].store;
        atomic_store(&slot->lag, INT64_MAX);
        slot->state = QUERY_STANDBY;
    }
    pthread_rwlock_unlock(&slot->lock);
}

void query_withdraw_standby(sl_engine *engine, const standby *sb) {
    query_slot *slot = standby_slot(engine, sb);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    if (slot->state == QUERY_STANDBY) {
        slot->state = QUERY_ABSENT;
        memset(slot->stores, 0, sizeof(slot->stores));
    }
    pthread_rwlock_unlock(&slot->lock);
}

void query_set_standby_lag(sl_engine *engine, const standby *sb, int64_t lag) {
    query_slot *slot = standby_slot(engine, sb);
    if (slot)
        atomic_store(&slot->lag, lag);
}

sl_err sl_engine_query_partition(sl_engine *engine, const char *store, const void *key,
                                 size_t key_len, int32_t *partition, const char **topic) {
    *partition = -1;
    if (topic)
        *topic = NULL;
    int s = sl_topology_store_index(engine->topology, store);
    if (s < 0)
        return SL_ERR_NOT_FOUND;
    if (!atomic_load_explicit(&engine->queries_open, memory_order_acquire))
        return SL_ERR_NOT_READY;
    int src = engine->topology->store_source[s];
    int32_t n = engine->source_partitions[src];
    if (n <= 0)
        return SL_ERR_NOT_READY;
    /* With a non-NULL key murmur2_random is plain murmur2 (the Java
     * client's partitioner); an empty key still hashes (not "random"). */
    static const char empty[1] = "";
    *partition =
        rd_kafka_msg_partitioner_murmur2_random(NULL, key ? key : empty, key_len, n, NULL, NULL);
    if (topic)
        *topic = engine->source_topic[src];
    return SL_OK;
}

/* Read-lock the slot that owns `key` and return the store, or an error
 * (the slot is then not locked). stale: only a standby's store, and its
 * lag in *lag. */
static sl_err acquire_partition(sl_engine *engine, const char *store, int32_t partition, bool stale,
                                query_slot **slot_out, sl_store **store_out, int64_t *lag);

static sl_err query_acquire(sl_engine *engine, const char *store, const void *key, size_t key_len,
                            bool stale, int32_t *partition, query_slot **slot_out,
                            sl_store **store_out, int64_t *lag) {
    sl_err err = sl_engine_query_partition(engine, store, key, key_len, partition, NULL);
    if (err)
        return err;
    return acquire_partition(engine, store, *partition, stale, slot_out, store_out, lag);
}

/* query_acquire of a known partition. */
static sl_err acquire_partition(sl_engine *engine, const char *store, int32_t partition, bool stale,
                                query_slot **slot_out, sl_store **store_out, int64_t *lag) {
    int s = sl_topology_store_index(engine->topology, store);
    if (s < 0)
        return SL_ERR_NOT_FOUND;
    if (!atomic_load_explicit(&engine->queries_open, memory_order_acquire))
        return SL_ERR_NOT_READY;
    int src = engine->topology->store_source[s];
    if (partition < 0 || partition >= engine->source_partitions[src])
        return SL_ERR_INVALID;
    query_slot *slot = &engine->query_slots[src][partition];
    sl_err err = SL_OK;
    pthread_rwlock_rdlock(&slot->lock);
    bool from_standby = stale && slot->state == QUERY_STANDBY &&
                        atomic_load(&slot->lag) != INT64_MAX; /* caught up once */
    if ((slot->state != QUERY_RUNNING && !from_standby) || !slot->stores[s]) {
        err = slot->state == QUERY_RESTORING ? SL_ERR_NOT_READY : SL_ERR_NOT_OWNER;
        pthread_rwlock_unlock(&slot->lock);
        return err;
    }
    if (lag)
        *lag = from_standby ? atomic_load(&slot->lag) : 0;
    *slot_out = slot;
    *store_out = slot->stores[s];
    return SL_OK;
}

static sl_err query_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                        bool stale, char **value, size_t *value_len, int32_t *partition,
                        int64_t *lag) {
    query_slot *slot;
    sl_store *st;
    *value = NULL;
    *value_len = 0;
    sl_err err = query_acquire(engine, store, key, key_len, stale, partition, &slot, &st, lag);
    if (err)
        return err;
    char why[256];
    err = sl_store_get(st, key, key_len, value, value_len, why, sizeof(why));
    pthread_rwlock_unlock(&slot->lock);
    if (err && err != SL_ERR_NOT_FOUND)
        LOG(engine, SL_LOG_WARN, "query of store %s [%d]: %s", store, *partition, why);
    return err;
}

sl_err sl_engine_query_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                           char **value, size_t *value_len, int32_t *partition) {
    return query_get(engine, store, key, key_len, false, value, value_len, partition, NULL);
}

sl_err sl_engine_query_get_stale(sl_engine *engine, const char *store, const void *key,
                                 size_t key_len, char **value, size_t *value_len,
                                 int32_t *partition, int64_t *lag) {
    return query_get(engine, store, key, key_len, true, value, value_len, partition, lag);
}

static sl_err scan_acquired(sl_engine *engine, const char *store, int32_t partition,
                            query_slot *slot, sl_store *st, const sl_query_range *range,
                            sl_query_visit_fn *visit, void *opaque, size_t *visited);

static sl_err query_range(sl_engine *engine, const char *store, const void *routing_key,
                          size_t routing_key_len, bool stale, const sl_query_range *range,
                          sl_query_visit_fn *visit, void *opaque, size_t *visited,
                          int32_t *partition, int64_t *lag) {
    query_slot *slot;
    sl_store *st;
    if (visited)
        *visited = 0;
    sl_err err = query_acquire(engine, store, routing_key, routing_key_len, stale, partition, &slot,
                               &st, lag);
    if (err)
        return err;
    return scan_acquired(engine, store, *partition, slot, st, range, visit, opaque, visited);
}

sl_err sl_engine_query_scan(sl_engine *engine, const char *store, int32_t partition, bool stale,
                            const sl_query_range *range, sl_query_visit_fn *visit, void *opaque,
                            size_t *visited, int64_t *lag) {
    query_slot *slot;
    sl_store *st;
    if (visited)
        *visited = 0;
    sl_err err = acquire_partition(engine, store, partition, stale, &slot, &st, lag);
    if (err)
        return err;
    return scan_acquired(engine, store, partition, slot, st, range, visit, opaque, visited);
}

/* Scan the read-locked `st` of `slot`, then unlock it. */
static sl_err scan_acquired(sl_engine *engine, const char *store, int32_t partition,
                            query_slot *slot, sl_store *st, const sl_query_range *range,
                            sl_query_visit_fn *visit, void *opaque, size_t *visited) {
    char why[256];
    sl_err err = queries_scan_store(st, range, visit, opaque, visited, why, sizeof(why));
    pthread_rwlock_unlock(&slot->lock);
    if (err)
        LOG(engine, SL_LOG_WARN, "range query of store %s [%d]: %s", store, partition, why);
    return err;
}

sl_err queries_scan_store(sl_store *st, const sl_query_range *range, sl_query_visit_fn *visit,
                          void *opaque, size_t *visited, char *why, size_t why_size) {
    size_t seen = 0, count = 0;
    if (visited)
        *visited = 0;
    sl_store_iter *iter = range->prefix ? sl_store_iter_prefix(st, range->prefix, range->prefix_len)
                                        : sl_store_iter_range(st, range->from, range->from_len,
                                                              range->to, range->to_len);
    if (!iter)
        return sl_fail(why, why_size, SL_ERR_NOMEM, "no memory for an iterator");
    const void *k, *v;
    size_t k_len, v_len;
    while (count < range->limit && sl_store_iter_next(iter, &k, &k_len, &v, &v_len)) {
        if (seen++ < range->skip)
            continue;
        count++;
        if (!visit(opaque, k, k_len, v, v_len))
            break;
    }
    sl_err err = sl_store_iter_error(iter, why, why_size);
    sl_store_iter_destroy(iter);
    if (visited)
        *visited = count;
    return err;
}

sl_err sl_engine_query_range(sl_engine *engine, const char *store, const void *routing_key,
                             size_t routing_key_len, const sl_query_range *range,
                             sl_query_visit_fn *visit, void *opaque, size_t *visited,
                             int32_t *partition) {
    return query_range(engine, store, routing_key, routing_key_len, false, range, visit, opaque,
                       visited, partition, NULL);
}

sl_err sl_engine_query_range_stale(sl_engine *engine, const char *store, const void *routing_key,
                                   size_t routing_key_len, const sl_query_range *range,
                                   sl_query_visit_fn *visit, void *opaque, size_t *visited,
                                   int32_t *partition, int64_t *lag) {
    return query_range(engine, store, routing_key, routing_key_len, true, range, visit, opaque,
                       visited, partition, lag);
}

sl_err sl_engine_query_settle(sl_engine *engine, int timeout_ms) {
    uint64_t target = atomic_load(&engine->commits_begun);
    int64_t deadline = sl_clock_mono_ms() + timeout_ms;
    while (atomic_load(&engine->commits_settled) < target) {
        if (sl_clock_mono_ms() >= deadline)
            return SL_ERR_TIMEOUT;
        struct timespec pause = {0, 1000000}; /* 1 ms: a commit takes several */
        nanosleep(&pause, NULL);
    }
    return SL_OK;
}

void engine_notify_applied(sl_engine *engine) {
    pthread_mutex_lock(&engine->applied_lock);
    engine->applied_generation++;
    if (engine->applied_waiters > 0)
        pthread_cond_broadcast(&engine->applied_cond);
    pthread_mutex_unlock(&engine->applied_lock);
}

uint64_t sl_engine_applied_generation(sl_engine *engine) {
    pthread_mutex_lock(&engine->applied_lock);
    uint64_t generation = engine->applied_generation;
    pthread_mutex_unlock(&engine->applied_lock);
    return generation;
}

sl_err sl_engine_await_applied(sl_engine *engine, uint64_t seen, int64_t deadline_ms) {
    int64_t left = deadline_ms - sl_clock_mono_ms();
    if (left <= 0)
        return SL_ERR_TIMEOUT;
    struct timespec deadline = sl_clock_mono_deadline(left);
    pthread_mutex_lock(&engine->applied_lock);
    engine->applied_waiters++;
    int rc = 0;
    while (engine->applied_generation == seen && rc == 0)
        rc = pthread_cond_timedwait(&engine->applied_cond, &engine->applied_lock, &deadline);
    bool changed = engine->applied_generation != seen;
    engine->applied_waiters--;
    pthread_mutex_unlock(&engine->applied_lock);
    return changed ? SL_OK : SL_ERR_TIMEOUT;
}

size_t sl_engine_query_assignment(sl_engine *engine, const char **topics, int32_t *partitions,
                                  size_t max, uint64_t *version) {
    /* Read the version first: a change during the scan makes the caller
     * see a newer version next time and publish again. */
    if (version)
        *version = atomic_load(&engine->query_version);
    size_t n = 0;
    if (!atomic_load_explicit(&engine->queries_open, memory_order_acquire))
        return 0;
    for (size_t src = 0; src < engine->topology->n_sources; src++)
        for (int32_t p = 0; p < engine->source_partitions[src]; p++) {
            query_slot *slot = &engine->query_slots[src][p];
            pthread_rwlock_rdlock(&slot->lock);
            bool owned = slot->state == QUERY_RESTORING || slot->state == QUERY_RUNNING;
            pthread_rwlock_unlock(&slot->lock);
            if (owned && n < max) {
                topics[n] = engine->source_topic[src];
                partitions[n] = p;
                n++;
            }
        }
    return n;
}

bool sl_engine_query_store(sl_engine *engine, size_t i, sl_store_info *out) {
    const sl_topology *t = engine->topology;
    memset(out, 0, sizeof(*out));
    if (i < t->n_stores) {
        int src = t->store_source[i];
        out->name = t->stores[i];
        out->topic = engine->source_topic[src];
        out->partitions = engine->source_partitions[src];
        out->value_type = t->store_types[i];
        return true;
    }
    i -= t->n_stores;
    if (i >= t->n_globals)
        return false;
    out->name = t->globals[i].store;
    out->global = true;
    out->topic = t->globals[i].topic;
    out->partitions = engine->globals[i].n_partitions;
    out->value_type = t->globals[i].type;
    return true;
}

bool sl_engine_query_store_named(sl_engine *engine, const char *name, sl_store_info *out) {
    for (size_t i = 0; sl_engine_query_store(engine, i, out); i++)
        if (strcmp(out->name, name) == 0)
            return true;
    return false;
}
