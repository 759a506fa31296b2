/*
 * engine.h: runs a topology: consumer group, tasks, state stores,
 * changelogs, restore, exactly-once commits, global stores, punctuation and
 * dead letters.
 *
 * Threading: every function runs on the one thread that owns the engine
 * (the instance's loop thread), except sl_engine_ready,
 * sl_engine_stats_get, sl_engine_instance_id, sl_engine_application_id,
 * sl_engine_global_get and the interactive queries (sl_engine_query_*),
 * which any thread may call.
 */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "processor/base/config.h"
#include "processor/kafka/admin.h"
#include "processor/base/error.h"
#include "processor/kafka/client.h"
#include "processor/base/log.h"
#include "processor/base/metrics.h"
#include "processor/topology.h"

/* typedef struct sl_engine sl_engine: in processor/topology.h. */

/* Counters for tests, metrics and logs. Monotonic unless noted. */
typedef struct sl_engine_stats {
    uint64_t records_in;        /* records consumed from sources */
    uint64_t records_out;       /* records emitted to sinks */
    uint64_t records_dlq;       /* records sent to the dead-letter topic */
    uint64_t records_wrong_partition; /* of those: a keyed record on another
                                         partition than its key's */
    uint64_t changelog_records; /* store writes sent to changelogs */
    uint64_t commits;           /* successful commits */
    uint64_t aborts;            /* aborted transactions */
    uint64_t producer_resets;   /* fatal producer errors recovered */
    uint64_t group_rejoins;     /* group consumers recreated after a fatal error */
    uint64_t restored_records;  /* changelog records applied during restore */
    uint64_t restore_ms;        /* wall time spent restoring */
    uint64_t global_records;    /* records applied to global stores */
    uint64_t punctuations;      /* punctuator calls */
    uint64_t cache_emitted;     /* records the record cache produced */
    uint64_t cache_coalesced;   /* cached records replaced before being produced */
    int64_t tasks_assigned;     /* gauge */
    int64_t tasks_running;      /* gauge */
} sl_engine_stats;

/* A stopped engine for `topology` (borrowed; must outlive the engine) on the
 * cluster at `bootstrap`. `config` and `logger` are borrowed too. The state
 * directory <state.dir>/<application.id> must already be locked by the
 * caller (sl_app does). NULL + errstr on failure. */
sl_engine *sl_engine_new(const sl_config *config, const sl_topology *topology,
                         const char *bootstrap, const sl_logger *logger, char *errstr,
                         size_t errstr_size);

/* Publish the engine's metrics in `metrics` (borrowed; must outlive the
 * engine) instead of the engine's private registry. Only before
 * sl_engine_start; SL_ERR_INVALID afterwards. */
sl_err sl_engine_set_metrics(sl_engine *engine, sl_metrics *metrics);

/* Run on the embedded broker (kafka.h): it has no admin API, so the
 * engine creates its changelog and dead-letter topics on `cluster` instead
 * of through CreateTopics, and checks only their partition counts. Call
 * before sl_engine_start. `cluster` is borrowed and must outlive the
 * engine. */
void sl_engine_use_embedded_cluster(sl_engine *engine, sl_embedded_cluster *cluster);

/* Create `spec`'s topic if missing, or check the one that exists (see
 * admin.h), on the engine's cluster: through the mock API on the embedded
 * broker, which answers no CreateTopics. After sl_engine_start; any thread. */
sl_err sl_engine_ensure_topic(sl_engine *engine, const sl_topic_spec *spec, char *errstr,
                              size_t errstr_size);

/* Check and create topics (changelogs, dead-letter topic), create the
 * clients, subscribe, and start bootstrapping global stores. A changelog
 * whose partition count differs from the sources', or a missing source
 * topic, is an error here. */
sl_err sl_engine_start(sl_engine *engine, char *errstr, size_t errstr_size);

/* One iteration of the loop: poll, restore, process, punctuate, and commit
 * when commit.interval.ms has passed. Waits at most timeout_ms for input.
 * Errors are handled inside (abort and rewind, producer reset); a returned
 * error is one the engine cannot recover from (the producer could not be
 * recreated). It is sticky: every later call returns it, and only
 * sl_engine_close and sl_engine_destroy are left. */
sl_err sl_engine_poll(sl_engine *engine, int timeout_ms);

/* Finish the open transaction, checkpoint and close every task and standby,
 * leave every consumer group. The engine can only be destroyed afterwards. */
sl_err sl_engine_close(sl_engine *engine);

void sl_engine_destroy(sl_engine *engine);

/* True once the engine joined every group (one per source), every assigned task is running
 * (restored) and every global store is bootstrapped. Any thread. */
bool sl_engine_ready(const sl_engine *engine);

/* sl_engine_global_get: declared in processor/topology.h (domain code
 * reads global stores through it). */

/* A snapshot of the counters. Any thread. */
void sl_engine_stats_get(const sl_engine *engine, sl_engine_stats *stats);

/* Which partitions this instance should keep a standby replica of, as the
 * membership decides (gateway/members.c): for each (topics[i],
 * partitions[i]), wanted[i]. Partitions never named keep what they have.
 * The loop opens and closes standbys on its own thread. Any thread; a
 * no-op before sl_engine_start. */
void sl_engine_set_standbys(sl_engine *engine, const char *const *topics, const int32_t *partitions,
                            const bool *wanted, size_t n);

/* Warm-up before joining (Kafka Streams' KIP-441). A new instance (its
 * state directory had no instance id) with warmup.max.ms > 0 does not join
 * the groups at start when a membership will tell it what to warm up:
 * sl_engine_expect_warmup, called before the first sl_engine_poll, says so.
 * The membership then hands in, with sl_engine_set_standbys, a standby for
 * every partition the running instances own, and calls
 * sl_engine_warmup_planned with how many it named (0: nobody runs, join at
 * once). The engine joins once each standby is within
 * acceptable.recovery.lag records of its changelogs' ends, or after
 * warmup.max.ms. Until then the current owners keep serving. */
void sl_engine_expect_warmup(sl_engine *engine);
/* Whether the engine waits for a warm-up plan or for its standbys. */
bool sl_engine_warming(const sl_engine *engine);
void sl_engine_warmup_planned(sl_engine *engine, size_t partitions);

/* The persisted instance id (32 hex digits; it also names the
 * transactional id), and the application id. Borrowed from the engine;
 * immutable. Any thread. */
const char *sl_engine_instance_id(const sl_engine *engine);
const char *sl_engine_application_id(const sl_engine *engine);

/*
 * Interactive queries: reads of the committed state of task stores from
 * any thread (HTTP handlers). A task store holds only committed writes
 * (apply-after-commit), so a read never sees an uncommitted or aborted
 * change. The loop thread opens and closes task stores on rebalance; a
 * per-partition reader-writer lock (writer-preferring) keeps a store open
 * while a query reads it, so closing waits at most for the reads in flight,
 * never for new ones.
 *
 * Every query answers in *partition the partition that owns the key (or -1
 * when it cannot be known yet), so the caller can route elsewhere:
 *   SL_OK              answered from this instance
 *   SL_ERR_NOT_FOUND   the key is absent (get), or the store is unknown
 *                      (then *partition is -1)
 *   SL_ERR_NOT_READY   the partition is assigned here but still restoring,
 *                      or the engine has not started: retry later (503)
 *   SL_ERR_NOT_OWNER   the partition is not assigned to this instance
 *   SL_ERR_STORE       a RocksDB error
 */

/* Partition of `key` in `store` (murmur2 over the partition count of the
 * store's source topic, as the Java client and murmur2_random compute it),
 * and the source topic (borrowed from the engine; may be NULL). Any thread.
 * SL_ERR_NOT_FOUND for an unknown store, SL_ERR_NOT_READY before start. */
sl_err sl_engine_query_partition(sl_engine *engine, const char *store, const void *key,
                                 size_t key_len, int32_t *partition, const char **topic);

/* Look `key` up. On SL_OK *value is a malloc'd copy (the caller frees it) of
 * *value_len bytes. */
sl_err sl_engine_query_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                           char **value, size_t *value_len, int32_t *partition);

/* Called for each entry in key order; the pointers are valid during the
 * call only. Return false to stop. Runs on the caller's thread while the
 * store is held open: keep it short (copy what you need). */
typedef bool sl_query_visit_fn(void *opaque, const void *key, size_t key_len, const void *value,
                               size_t value_len);

/* A bounded scan of the partition that owns `routing_key` (for example a
 * dialog id, when the store's keys are "<dialog id><sequence>"): entries
 * with keys in [from, to) (a NULL bound is open; with prefix != NULL,
 * instead the keys starting with `prefix`), skipping the first `skip`
 * entries and visiting at most `limit`. *visited receives the number of
 * visits (may be NULL). The scan reads one RocksDB snapshot. */
typedef struct sl_query_range {
    const void *from;
    size_t from_len;
    const void *to;
    size_t to_len;
    const void *prefix;
    size_t prefix_len;
    size_t skip;
    size_t limit;
} sl_query_range;

sl_err sl_engine_query_range(sl_engine *engine, const char *store, const void *routing_key,
                             size_t routing_key_len, const sl_query_range *range,
                             sl_query_visit_fn *visit, void *opaque, size_t *visited,
                             int32_t *partition);

/* The same reads from any replica of the partition here, for a client
 * that accepts a lagging answer (Kafka Streams' stale stores): the running
 * task (*lag 0, without the settle a fresh read does) or this instance's
 * standby (committed state, *lag records behind the changelog end as last
 * seen). SL_ERR_NOT_OWNER when this instance keeps neither (or its standby
 * has not caught up once yet). Any thread. */
sl_err sl_engine_query_get_stale(sl_engine *engine, const char *store, const void *key,
                                 size_t key_len, char **value, size_t *value_len,
                                 int32_t *partition, int64_t *lag);
sl_err sl_engine_query_range_stale(sl_engine *engine, const char *store, const void *routing_key,
                                   size_t routing_key_len, const sl_query_range *range,
                                   sl_query_visit_fn *visit, void *opaque, size_t *visited,
                                   int32_t *partition, int64_t *lag);

/* Read-your-writes after a reply: wait (at most timeout_ms) until every
 * commit this instance had begun when the call started has also been
 * applied to its task stores. A command's reply becomes visible to the
 * gateway when its transaction commits, which is a moment before the loop
 * thread applies the writes to RocksDB (apply-after-commit); a query that
 * settles first sees them. SL_OK, or SL_ERR_TIMEOUT. Any thread. */
sl_err sl_engine_query_settle(sl_engine *engine, int timeout_ms);

/* What the state endpoint lists: every task store and global store. */
typedef struct sl_store_info {
    const char *name;   /* borrowed from the engine */
    bool global;        /* a global store (every instance has all of it) */
    const char *topic;  /* task store: its source (or repartition) topic; global: its topic */
    int32_t partitions; /* of that topic (0 before start) */
    const struct ProtobufCMessageDescriptor *value_type; /* NULL: opaque bytes */
} sl_store_info;

/* Store `i` (task stores first, then globals) into *out; false past the
 * last. Any thread. */
bool sl_engine_query_store(sl_engine *engine, size_t i, sl_store_info *out);
/* The store named `name`; false if there is none. */
bool sl_engine_query_store_named(sl_engine *engine, const char *name, sl_store_info *out);

/* A bounded scan of partition `partition` of a task store (as
 * sl_engine_query_range, by partition instead of a routing key), from the
 * running task or, with `stale`, from the running task or this instance's
 * standby (*lag set as for sl_engine_query_get_stale). */
sl_err sl_engine_query_scan(sl_engine *engine, const char *store, int32_t partition, bool stale,
                            const sl_query_range *range, sl_query_visit_fn *visit, void *opaque,
                            size_t *visited, int64_t *lag);

/* A bounded scan of a global store (the local copy), from any thread:
 * SL_ERR_UNAVAILABLE until the global stores are bootstrapped. */
sl_err sl_engine_global_scan(sl_engine *engine, const char *store, const sl_query_range *range,
                             sl_query_visit_fn *visit, void *opaque, size_t *visited);

/* Waiting for a write to become readable without polling. The generation
 * grows each time the loop thread makes new state readable: after every
 * commit's apply to the task stores, every batch written to a global store,
 * and every task that starts, finishes restoring or goes. A reader takes the generation,
 * looks, and if what it wants is not there yet waits for the generation to
 * move: no change can slip between the look and the wait. Any thread. */
uint64_t sl_engine_applied_generation(sl_engine *engine);

/* Block until the generation differs from `seen` (SL_OK: look again) or
 * the monotonic deadline_ms (sl_clock_mono_ms) passes (SL_ERR_TIMEOUT).
 * Any thread but the loop thread, which is the one that moves it. */
sl_err sl_engine_await_applied(sl_engine *engine, uint64_t seen, int64_t deadline_ms);

/* The partitions of source topics assigned to this instance, for the
 * membership record: at most `max` entries into topics[]/partitions[]
 * (topics borrowed from the engine), count returned. *version changes every
 * time the assignment changes (may be NULL). Any thread. */
size_t sl_engine_query_assignment(sl_engine *engine, const char **topics, int32_t *partitions,
                                  size_t max, uint64_t *version);

#endif
