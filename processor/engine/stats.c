/*
 * stats.c: the engine's metrics: the instance-wide series (looked up once;
 * the hot paths keep the pointers), the sampled gauges, and the
 * sl_engine_stats snapshot read from them.
 */
#include <string.h>

#include "processor/base/clock.h"
#include "processor/engine/engine_int.h"


static const double process_bounds[] = {0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005,
                                        0.01,    0.05,    0.1,    0.5,    1};
static const double commit_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,   1,    2.5,   5,    10};

/* Look every instance-wide series up once; the hot paths keep the pointers. */
void stats_register(sl_engine *engine) {
    sl_metrics *m = engine->metrics;
    const sl_topology *topology = engine->topology;
    for (size_t i = 0; i < topology->n_sources; i++) {
        const char *labels[] = {"topic", engine->source_topic[i], NULL};
        engine->m.records_in[i] = sl_metrics_counter(
            m, "sluice_records_consumed_total", "Records consumed from a source topic", labels);
    }
    for (size_t i = 0; i < topology->n_sinks; i++) {
        const char *labels[] = {"topic", engine->sink_topic[i], NULL};
        engine->m.records_out[i] = sl_metrics_counter(m, "sluice_records_produced_total",
                                                      "Records produced to a sink topic", labels);
    }
    engine->m.records_dlq = sl_metrics_counter(m, "sluice_records_dead_lettered_total",
                                               "Records sent to the dead-letter topic", NULL);
    engine->m.records_wrong_partition = sl_metrics_counter(
        m, "sluice_records_wrong_partition_total",
        "Records of a keyed source whose key belongs to another partition (sent to the "
        "dead-letter topic)",
        NULL);
    engine->m.changelog_records = sl_metrics_counter(m, "sluice_changelog_records_total",
                                                     "Store writes sent to changelog topics", NULL);
    engine->m.commits =
        sl_metrics_counter(m, "sluice_commits_total", "Successful commits (transactions)", NULL);
    engine->m.early_commits = sl_metrics_counter(
        m, "sluice_commits_early_total",
        "Commits made before commit.interval.ms because store.pending.max.bytes was reached", NULL);
    engine->m.aborts =
        sl_metrics_counter(m, "sluice_transaction_aborts_total", "Aborted transactions", NULL);
    engine->m.producer_resets = sl_metrics_counter(m, "sluice_producer_resets_total",
                                                   "Producers recreated after a fatal error", NULL);
    engine->m.group_rejoins = sl_metrics_counter(
        m, "sluice_group_rejoins_total",
        "Group consumers recreated after a fatal error (a fenced static member)", NULL);
    engine->m.restored_records = sl_metrics_counter(
        m, "sluice_restore_records_total", "Changelog records applied while restoring", NULL);
    engine->m.restore_ms = sl_metrics_counter(m, "sluice_restore_milliseconds_total",
                                              "Wall time tasks spent restoring", NULL);
    engine->m.global_catch_ups = sl_metrics_counter(
        m, "sluice_global_store_catch_ups_total",
        "Global store lookups that missed and read the store's topic to its end first", NULL);
    engine->m.global_records = sl_metrics_counter(m, "sluice_global_store_records_total",
                                                  "Records applied to global stores", NULL);
    engine->m.punctuations =
        sl_metrics_counter(m, "sluice_punctuations_total", "Punctuator calls", NULL);
    engine->m.replies =
        sl_metrics_counter(m, "sluice_replies_total", "Replies produced to the reply topic", NULL);
    engine->m.replies_ignored = sl_metrics_counter(
        m, "sluice_replies_ignored_total",
        "Commands whose reply_to named a topic other than <application.id>-replies", NULL);
    engine->m.cache_emitted = sl_metrics_counter(
        m, "sluice_record_cache_emitted_total",
        "Records the record cache produced at commits (one per cache key per commit)", NULL);
    engine->m.cache_coalesced = sl_metrics_counter(
        m, "sluice_record_cache_coalesced_total",
        "Coalescing emits that replaced a cached record instead of producing one", NULL);
    engine->m.tasks_assigned =
        sl_metrics_gauge(m, "sluice_tasks_assigned", "Tasks assigned to this instance", NULL);
    engine->m.tasks_running =
        sl_metrics_gauge(m, "sluice_tasks_running", "Assigned tasks that finished restoring", NULL);
    engine->m.restore_remaining =
        sl_metrics_gauge(m, "sluice_restore_remaining_records",
                         "Changelog records still to restore on this instance", NULL);
    engine->m.standby_tasks =
        sl_metrics_gauge(m, "sluice_standby_tasks", "Standby replicas kept on this instance", NULL);
    engine->m.standby_records = sl_metrics_counter(
        m, "sluice_standby_records_total", "Changelog records applied to standby replicas", NULL);
    engine->m.block_cache_bytes =
        sl_metrics_gauge(m, "sluice_rocksdb_block_cache_bytes",
                         "Bytes held by the RocksDB block cache shared by all stores", NULL);
    engine->m.process_seconds = sl_metrics_histogram(
        m, "sluice_process_seconds", "Time to process one record (validation and processors)", NULL,
        process_bounds, sizeof(process_bounds) / sizeof(process_bounds[0]));
    engine->m.commit_seconds = sl_metrics_histogram(
        m, "sluice_commit_seconds", "Time to commit (offsets and transaction, or flush)", NULL,
        commit_bounds, sizeof(commit_bounds) / sizeof(commit_bounds[0]));
}

sl_err sl_engine_set_metrics(sl_engine *engine, sl_metrics *metrics) {
    if (!metrics || engine->consumers[0])
        return SL_ERR_INVALID; /* only before sl_engine_start */
    if (engine->own_metrics)
        sl_metrics_destroy(engine->metrics);
    engine->metrics = metrics;
    engine->own_metrics = false;
    stats_register(engine);
    return SL_OK;
}

/* Gauges that are sampled, not counted: consumer lag (from the watermarks
 * librdkafka caches from fetch responses, so no request is sent), store
 * sizes and RocksDB memory (RocksDB properties). Every few seconds. */
void stats_sample(sl_engine *engine) {
    int64_t now = sl_clock_mono_ms();
    if (now - engine->last_store_stats_ms < 5000)
        return;
    engine->last_store_stats_ms = now;
    const sl_topology *topology = engine->topology;
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            if (!t)
                continue;
            int64_t low, high;
            if (t->position >= 0 &&
                rd_kafka_get_watermark_offsets(engine->consumers[src], engine->source_topic[src], p,
                                               &low, &high) == 0 &&
                high >= t->position)
                sl_gauge_set(t->lag, (double)(high - t->position));
            for (size_t s = 0; s < topology->n_stores; s++) {
                if (!t->stores[s].store || t->stores[s].restoring)
                    continue;
                sl_gauge_set(t->store_keys[s], (double)sl_store_estimate_keys(t->stores[s].store));
                sl_gauge_set(t->store_bytes[s], (double)sl_store_disk_bytes(t->stores[s].store));
            }
        }
    sl_gauge_set(engine->m.block_cache_bytes, (double)sl_store_env_memory_usage(engine->env));
}

void sl_engine_stats_get(const sl_engine *engine, sl_engine_stats *stats) {
    memset(stats, 0, sizeof(*stats));
    for (size_t i = 0; i < engine->topology->n_sources; i++)
        stats->records_in += sl_counter_value(engine->m.records_in[i]);
    for (size_t i = 0; i < engine->topology->n_sinks; i++)
        stats->records_out += sl_counter_value(engine->m.records_out[i]);
    stats->cache_emitted = sl_counter_value(engine->m.cache_emitted);
    stats->cache_coalesced = sl_counter_value(engine->m.cache_coalesced);
    stats->records_dlq = sl_counter_value(engine->m.records_dlq);
    stats->records_wrong_partition = sl_counter_value(engine->m.records_wrong_partition);
    stats->changelog_records = sl_counter_value(engine->m.changelog_records);
    stats->commits = sl_counter_value(engine->m.commits);
    stats->aborts = sl_counter_value(engine->m.aborts);
    stats->producer_resets = sl_counter_value(engine->m.producer_resets);
    stats->group_rejoins = sl_counter_value(engine->m.group_rejoins);
    stats->restored_records = sl_counter_value(engine->m.restored_records);
    stats->restore_ms = sl_counter_value(engine->m.restore_ms);
    stats->global_records = sl_counter_value(engine->m.global_records);
    stats->punctuations = sl_counter_value(engine->m.punctuations);
    stats->tasks_assigned = (int64_t)sl_gauge_value(engine->m.tasks_assigned);
    stats->tasks_running = (int64_t)sl_gauge_value(engine->m.tasks_running);
}

