/*
 * engine.c: the stream-processing engine.
 *
 * Clients (all created through sl_kafka_conf_new):
 *   consumer          the group member (group.id = application.id,
 *                     cooperative-sticky, read_committed, manual commits);
 *                     subscribed to every source topic
 *   producer          one per instance; transactional under exactly_once_v2
 *                     (transactional.id = <application.id>-<instance id>,
 *                     the instance id persisted in the state directory so a
 *                     restart fences and aborts its own previous transaction
 *                     at once instead of leaving it hanging)
 *   restore consumer  assign-only, read_committed, reads changelogs
 *   global consumer   assign-only, read_committed, reads global topics
 *
 * Task life cycle (one task per source partition, see topology.h):
 *
 *          assign (rebalance_cb)           all stores at changelog end
 *   (none) ---------------------> RESTORING -----------------------> RUNNING
 *            task_create: open stores,     restore_poll, then
 *            pause source partition,       task_start_running: resume the
 *            wipe if EOS and no checkpoint partition, remove the checkpoint
 *                                          (EOS: a crash now means wipe)
 *   RUNNING/RESTORING --revoke--> commit all, task_close(clean): flush,
 *                                  checkpoint = changelog end, close stores
 *   any --lost / fatal error--> task_close(dirty): no checkpoint (next
 *                                  assignment wipes and restores)
 *
 * Invariants:
 *   - A task processes records only while RUNNING; its source partition is
 *     paused otherwise (a record that slips through is rewound).
 *   - Store writes go to the changelog at once (inside the open transaction
 *     under EOS) and into the task's pending writes (a per-key record
 *     cache, applied as one entry per key); RocksDB sees them only
 *     after the transaction (or, at-least-once, the flush + offset commit)
 *     succeeded: local state is never ahead of what Kafka committed.
 *   - One transaction covers every task of the instance; it is begun at the
 *     first record after a commit and committed every commit.interval.ms
 *     with the consumed offsets (send_offsets_to_transaction).
 *   - Abortable error: abort, drop every pending batch, rewind every
 *     assigned partition to its committed offset. Fatal error (fenced):
 *     recreate the producer, close every task dirty, recreate the tasks
 *     (wipe + restore) and rewind. If the producer cannot be recreated,
 *     every task closes dirty and the engine stops: engine->failed is
 *     sticky, sl_engine_poll returns it, only close and destroy are left.
 *   - Restore reads at most restore.batch.records per loop iteration, so
 *     the group consumer is polled regularly and never misses
 *     max.poll.interval.ms.
 */
#include "processor/engine/engine.h"
#include "processor/base/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"
#include "processor/engine/emit_cache.h"
#include "processor/base/metrics.h"
#include "state/store.h"
#include "processor/topology_int.h"

#define MAX_PARTITIONS   4096
#define TXN_TIMEOUT_MS   60000
#define ADMIN_TIMEOUT_MS 30000
#define RESTORE_SLICE_MS 100
/* Messages taken off the restore consumer's queue per call. */
#define RESTORE_FETCH_BATCH 1024

typedef struct task_store {
    sl_store *store;
    sl_store_pending *pending;
    sl_store_pending *restore_batch; /* the slice's records, latest per key */
    bool restoring;
    bool reseeking;           /* out of memory mid-slice: skip until restore_position again */
    int64_t restore_position; /* next changelog offset to read */
    int64_t restore_end;      /* changelog end when the restore began */
    char path[PATH_MAX];
} task_store;

typedef struct task {
    int source; /* index into topology->sources */
    int32_t partition;
    bool running;
    int stores_restoring;
    int64_t consumed_next; /* next offset to commit; -1: nothing new */
    int64_t position;      /* next offset to process; -1: none processed yet */
    int64_t stream_time;
    int64_t next_punctuation[SL_TOPOLOGY_MAX_NODES];
    int64_t restore_started_ms;
    uint64_t restored_records;
    int64_t restore_logged_ms;
    sl_gauge *lag;                                /* records behind the source's end */
    sl_gauge *store_keys[SL_TOPOLOGY_MAX_NODES];  /* RocksDB's estimate */
    sl_gauge *store_bytes[SL_TOPOLOGY_MAX_NODES]; /* live SST bytes */
    char dir[PATH_MAX];
    task_store stores[SL_TOPOLOGY_MAX_NODES]; /* indexed like topology->stores */
} task;

/* What HTTP threads may read of one task (see "Interactive queries"). */
typedef enum query_state { QUERY_ABSENT, QUERY_RESTORING, QUERY_RUNNING } query_state;

typedef struct query_slot {
    pthread_rwlock_t lock;
    query_state state;                       /* written under the write lock */
    sl_store *stores[SL_TOPOLOGY_MAX_NODES]; /* indexed like topology->stores */
} query_slot;

typedef struct global_partition {
    int32_t partition;
    int64_t next_offset;
    bool at_end;
} global_partition;

typedef struct global_state {
    sl_store *store;
    global_partition *partitions;
    int n_partitions;
    char path[PATH_MAX];
} global_state;

struct sl_ctx {
    sl_engine *engine;
    task *task;
    const sl_record *record;
    const char *node; /* processor or punctuator name, for the DLQ header */
    const char *reject_reason;
    char reject_buf[256];
};

struct sl_engine {
    sl_logger logger; /* first member: rd_kafka_opaque() is the engine and
                         librdkafka's log callback reads it as an sl_logger */
    const sl_config *config;
    const sl_topology *topology;
    char *bootstrap;
    char app_id[256];
    char state_path[PATH_MAX];
    char instance_id[33];
    bool eos;
    int64_t commit_interval_ms;
    int poll_batch;
    int restore_batch;
    size_t pending_max_bytes; /* store.pending.max.bytes */
    size_t pending_bytes;     /* of every task's pending writes (approximate) */
    bool commit_requested;    /* pending_max_bytes passed: commit after this record */
    int replication_factor;

    rd_kafka_t *consumer, *producer, *restore_consumer, *global_consumer;
    sl_embedded_cluster *embedded; /* borrowed; NULL on a real cluster */
    rd_kafka_queue_t *restore_queue; /* the restore consumer's queue, for batch reads */
    sl_store_env *env;

    int32_t source_partitions[SL_TOPOLOGY_MAX_NODES];
    task **tasks[SL_TOPOLOGY_MAX_NODES]; /* [source][partition] */
    char changelog_topic[SL_TOPOLOGY_MAX_NODES][256];
    char source_topic[SL_TOPOLOGY_MAX_NODES][256]; /* resolved: repartition */
    char sink_topic[SL_TOPOLOGY_MAX_NODES][256];   /* topics get the app id */
    char dlq_topic[256];
    char reply_topic[256]; /* <application.id>-replies (sl_ctx_reply) */

    global_state globals[SL_TOPOLOGY_MAX_NODES];
    bool globals_bootstrapped;
    atomic_bool globals_readable; /* sl_engine_global_get may read */

    bool txn_open;
    bool dirty; /* records processed since the last commit */
    bool delivery_failed;
    bool needs_rewind;
    int64_t last_commit_ms;
    bool joined;
    bool closed;
    sl_err failed; /* sticky: the producer could not be recreated, so only
                      close and destroy are left (producer is NULL) */

    atomic_bool ready;

    /* Interactive queries: [source][partition], allocated once by
     * queries_init (then queries_open is set) and freed by destroy. */
    query_slot *query_slots[SL_TOPOLOGY_MAX_NODES];
    atomic_bool queries_open;
    atomic_uint_fast64_t query_version;

    /* Metrics: the single source of truth for the counters, also behind
     * sl_engine_stats_get. The registry is the app's (sl_engine_set_metrics)
     * or the engine's own. */
    sl_metrics *metrics;
    bool own_metrics;
    struct {
        sl_counter *records_in[SL_TOPOLOGY_MAX_NODES];  /* per source topic */
        sl_counter *records_out[SL_TOPOLOGY_MAX_NODES]; /* per sink topic */
        sl_counter *records_dlq, *changelog_records, *commits, *early_commits, *aborts,
            *producer_resets, *restored_records, *restore_ms, *global_records, *punctuations,
            *replies, *replies_ignored, *cache_emitted, *cache_coalesced;
        sl_gauge *tasks_assigned, *tasks_running, *restore_remaining, *block_cache_bytes;
        sl_histogram *process_seconds, *commit_seconds;
    } m;
    int64_t last_store_stats_ms;

    /* The record cache (sl_ctx_emit_coalesced): flushed by commit() before
     * the transaction commits, cleared by drop_pending(). */
    sl_emit_cache *emit_cache;
    /* Read-your-writes (sl_engine_query_settle): commits begun, and the
     * number begun when the last one finished applying. */
    atomic_uint_fast64_t commits_begun, commits_settled;
};

/* snprintf's result fits its buffer: every path and topic name is bounded,
 * and a name that does not fit is an error, never a silent truncation. */
static bool fits(int written, size_t size) {
    return written >= 0 && (size_t)written < size;
}

#define LOG(engine, level, ...) sl_log(&(engine)->logger, level, "engine", __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Instance id and client creation                                           */

/* The instance id survives restarts (it names the transactional id), and is
 * new for every state directory. */
static sl_err load_instance_id(sl_engine *engine, char *errstr, size_t errstr_size) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/instance.id", engine->state_path) >= (int)sizeof(path))
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
    FILE *file = fopen(path, "r");
    if (file) {
        char buf[64] = "";
        bool ok = fgets(buf, sizeof(buf), file) != NULL;
        fclose(file);
        size_t n = ok ? strcspn(buf, "\r\n") : 0;
        if (n == 32 && strspn(buf, "0123456789abcdef") >= 32) {
            memcpy(engine->instance_id, buf, 32);
            engine->instance_id[32] = '\0';
            return SL_OK;
        }
        LOG(engine, SL_LOG_WARN, "%s is malformed; generating a new instance id", path);
    }
    unsigned char random[16];
    if (getrandom(random, sizeof(random), 0) != (ssize_t)sizeof(random))
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "getrandom failed: %s", strerror(errno));
    for (int i = 0; i < 16; i++)
        snprintf(engine->instance_id + 2 * i, 3, "%02x", random[i]);
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    file = fopen(tmp, "w");
    if (!file || fprintf(file, "%s\n", engine->instance_id) < 0 || fflush(file) != 0 ||
        fsync(fileno(file)) != 0) {
        if (file)
            fclose(file);
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    fclose(file);
    if (rename(tmp, path) != 0)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot rename %s: %s", tmp,
                       strerror(errno));
    return SL_OK;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque);

static void delivery_cb(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque) {
    (void)rk;
    sl_engine *engine = opaque;
    if (message->err && !engine->delivery_failed) {
        engine->delivery_failed = true;
        LOG(engine, SL_LOG_WARN, "delivery to %s [%d] failed: %s",
            rd_kafka_topic_name(message->rkt), message->partition, rd_kafka_err2str(message->err));
    }
}

/* A client with the engine as its opaque; `settings` is {"key", "value", ...,
 * NULL}. The group consumer passes with_rebalance_cb. */
static rd_kafka_t *new_client(sl_engine *engine, rd_kafka_type_t type, const char *const *settings,
                              bool with_rebalance_cb, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = sl_kafka_conf_new(type, engine->bootstrap, engine->config,
                                              &engine->logger, errstr, errstr_size);
    if (!conf)
        return NULL;
    for (const char *const *s = settings; s && s[0]; s += 2) {
        if (sl_kafka_conf_set(conf, s[0], s[1], errstr, errstr_size)) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_conf_set_opaque(conf, engine);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, delivery_cb);
    if (with_rebalance_cb)
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot create Kafka client: %s", why);
    }
    return rk;
}

static sl_err create_producer(sl_engine *engine, char *errstr, size_t errstr_size) {
    char txn_id[512];
    snprintf(txn_id, sizeof(txn_id), "%s-%s", engine->app_id, engine->instance_id);
    /* A crashed instance's open transaction blocks read_committed readers of
     * its outputs until it times out (or the instance restarts and fences
     * it): 10 s, as Kafka Streams uses, unless the user chose otherwise. */
    bool user_timeout = false;
    for (size_t i = 0; i < sl_config_kafka_count(engine->config); i++) {
        const char *key, *value;
        sl_config_kafka_at(engine->config, i, &key, &value);
        user_timeout |= strcmp(key, "transaction.timeout.ms") == 0 ||
                        strcmp(key, "producer.transaction.timeout.ms") == 0;
    }
    const char *const eos_settings[] = {"transactional.id",
                                        txn_id,
                                        "enable.idempotence",
                                        "true",
                                        "acks",
                                        "all",
                                        user_timeout ? NULL : "transaction.timeout.ms",
                                        "10000",
                                        NULL};
    const char *const alos_settings[] = {"enable.idempotence", "true", "acks", "all", NULL};
    engine->producer =
        new_client(engine, RD_KAFKA_PRODUCER, engine->eos ? eos_settings : alos_settings, false,
                   errstr, errstr_size);
    if (!engine->producer)
        return SL_ERR_KAFKA;
    if (!engine->eos)
        return SL_OK;
    rd_kafka_error_t *error = rd_kafka_init_transactions(engine->producer, TXN_TIMEOUT_MS);
    if (error) {
        sl_err err = sl_fail(errstr, errstr_size, sl_kafka_classify(0, error),
                             "init_transactions: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rd_kafka_destroy(engine->producer);
        engine->producer = NULL;
        return err;
    }
    return SL_OK;
}

/* ------------------------------------------------------------------------ */
/* Construction                                                              */

static const double process_bounds[] = {0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005,
                                        0.01,    0.05,    0.1,    0.5,    1};
static const double commit_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,   1,    2.5,   5,    10};

/* Look every instance-wide series up once; the hot paths keep the pointers. */
static void register_metrics(sl_engine *engine) {
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
    engine->m.restored_records = sl_metrics_counter(
        m, "sluice_restore_records_total", "Changelog records applied while restoring", NULL);
    engine->m.restore_ms = sl_metrics_counter(m, "sluice_restore_milliseconds_total",
                                              "Wall time tasks spent restoring", NULL);
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
    if (!metrics || engine->consumer)
        return SL_ERR_INVALID; /* only before sl_engine_start */
    if (engine->own_metrics)
        sl_metrics_destroy(engine->metrics);
    engine->metrics = metrics;
    engine->own_metrics = false;
    register_metrics(engine);
    return SL_OK;
}

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
    engine->emit_cache = sl_emit_cache_new((size_t)sl_config_get_int(config, "cache.max.bytes"));
    if (!engine->bootstrap || !engine->emit_cache ||
        snprintf(engine->state_path, sizeof(engine->state_path), "%s/%s",
                                       sl_config_get(config, "state.dir"),
                                       engine->app_id) >= (int)sizeof(engine->state_path)) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long or out of memory");
        goto fail;
    }
    bool names_fit =
        fits(snprintf(engine->dlq_topic, sizeof(engine->dlq_topic), "%s-dlq", engine->app_id),
             sizeof(engine->dlq_topic)) &&
        fits(snprintf(engine->reply_topic, sizeof(engine->reply_topic), "%s-replies",
                      engine->app_id),
             sizeof(engine->reply_topic));
    for (size_t i = 0; i < topology->n_sources; i++)
        names_fit &=
            fits(snprintf(engine->source_topic[i], sizeof(engine->source_topic[i]),
                          topology->sources[i].repartition ? "%s-%s-repartition" : "%.0s%s",
                          engine->app_id, topology->sources[i].topic),
                 sizeof(engine->source_topic[i]));
    for (size_t i = 0; i < topology->n_sinks; i++)
        names_fit &= fits(snprintf(engine->sink_topic[i], sizeof(engine->sink_topic[i]),
                                   topology->sinks[i].repartition ? "%s-%s-repartition" : "%.0s%s",
                                   engine->app_id, topology->sinks[i].topic),
                          sizeof(engine->sink_topic[i]));
    for (size_t s = 0; s < topology->n_stores; s++)
        names_fit &= fits(snprintf(engine->changelog_topic[s], sizeof(engine->changelog_topic[s]),
                                   "%s-%s-changelog", engine->app_id, topology->stores[s]),
                          sizeof(engine->changelog_topic[s]));
    if (!names_fit) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                "application.id and store names make a topic name longer than 249 bytes");
        goto fail;
    }
    if (load_instance_id(engine, errstr, errstr_size))
        goto fail;
    engine->metrics = sl_metrics_new(4096);
    if (!engine->metrics) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    engine->own_metrics = true;
    register_metrics(engine);
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

/* ------------------------------------------------------------------------ */
/* Topics                                                                    */

void sl_engine_use_embedded_cluster(sl_engine *engine, sl_embedded_cluster *cluster) {
    engine->embedded = cluster;
}

/* The embedded broker has no CreateTopics: create the topic there, or check
 * the partition count of the one that exists. (Not the other way round: a
 * metadata request for a missing topic auto-creates it with the mock's
 * default partition count.) */
static sl_err ensure_embedded_topic(sl_engine *engine, const sl_topic_spec *spec, char *errstr,
                                    size_t errstr_size) {
    bool created = false;
    sl_err err = sl_embedded_cluster_create_topic(engine->embedded, spec->name, spec->partitions,
                                                  &created, errstr, errstr_size);
    if (err || created)
        return err;
    int partitions = 0;
    err = sl_admin_topic_partitions(engine->producer, spec->name, ADMIN_TIMEOUT_MS, &partitions,
                                    errstr, errstr_size);
    if (err)
        return err;
    if (partitions != spec->partitions)
        return sl_fail(errstr, errstr_size, SL_ERR_TOPIC_MISMATCH,
                       "topic %s exists with %d partitions, expected %d", spec->name, partitions,
                       spec->partitions);
    return SL_OK;
}

static sl_err ensure_topic(sl_engine *engine, const sl_topic_spec *spec, char *errstr,
                           size_t errstr_size) {
    if (engine->embedded)
        return ensure_embedded_topic(engine, spec, errstr, errstr_size);
    return sl_admin_ensure_topic(engine->producer, spec, ADMIN_TIMEOUT_MS, errstr, errstr_size);
}

sl_err sl_engine_ensure_topic(sl_engine *engine, const sl_topic_spec *spec, char *errstr,
                              size_t errstr_size) {
    if (!engine->producer)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "the engine is not started");
    return ensure_topic(engine, spec, errstr, errstr_size);
}

static bool owned_topic(const sl_topology *topology, const char *topic) {
    for (size_t i = 0; i < topology->n_topics; i++)
        if (strcmp(topology->topics[i].topic, topic) == 0)
            return true;
    return false;
}

static sl_err prepare_topics(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    /* Topics the topology owns (its inputs and outputs) and the reply topic
     * first, so that the checks of the sources below find them. */
    static const char *const compact[] = {"cleanup.policy", "compact", NULL};
    for (size_t i = 0; i < topology->n_topics; i++) {
        sl_topic_spec spec = {.name = topology->topics[i].topic,
                              .partitions = topology->topics[i].partitions,
                              .replication_factor = engine->replication_factor,
                              .configs = topology->topics[i].compacted ? compact : NULL};
        sl_err err = ensure_topic(engine, &spec, errstr, errstr_size);
        if (err)
            return err;
    }
    if (topology->replies) {
        sl_topic_spec spec = {.name = engine->reply_topic,
                              .partitions =
                                  (int)sl_config_get_int(engine->config, "reply.partitions"),
                              .replication_factor = engine->replication_factor};
        sl_err err = ensure_topic(engine, &spec, errstr, errstr_size);
        if (err)
            return err;
    }
    /* Input topics first (they must exist), then the repartition topics the
     * engine owns, which default to the first input's partition count. */
    int default_partitions = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < topology->n_sources; i++) {
            const sl_source_def *def = &topology->sources[i];
            if (def->repartition != (pass == 1))
                continue;
            char why[512] = "";
            int partitions = 0;
            sl_err err;
            if (def->repartition) {
                partitions = def->partitions ? def->partitions : default_partitions;
                sl_topic_spec spec = {.name = engine->source_topic[i],
                                      .partitions = partitions > 0 ? partitions : 1,
                                      .replication_factor = engine->replication_factor};
                err = ensure_topic(engine, &spec, why, sizeof(why));
                partitions = spec.partitions;
            } else {
                err = sl_admin_topic_partitions(engine->producer, engine->source_topic[i],
                                                ADMIN_TIMEOUT_MS, &partitions, why, sizeof(why));
                /* A topic the topology just created can be missing from
                 * the metadata for a moment: wait for it (bounded). */
                for (int attempt = 0; err == SL_ERR_NOT_FOUND && attempt < 50 &&
                                      owned_topic(topology, engine->source_topic[i]);
                     attempt++) {
                    struct timespec pause = {0, 200 * 1000000};
                    nanosleep(&pause, NULL);
                    err = sl_admin_topic_partitions(engine->producer, engine->source_topic[i],
                                                    ADMIN_TIMEOUT_MS, &partitions, why,
                                                    sizeof(why));
                }
                if (err == SL_ERR_NOT_FOUND)
                    snprintf(why, sizeof(why), "does not exist (create it first)");
            }
            if (err)
                return sl_fail(errstr, errstr_size, err, "source topic %s: %s",
                               engine->source_topic[i], why);
            if (partitions > MAX_PARTITIONS)
                return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                               "source topic %s has %d partitions (max %d)",
                               engine->source_topic[i], partitions, MAX_PARTITIONS);
            if (!default_partitions)
                default_partitions = partitions;
            engine->source_partitions[i] = partitions;
            engine->tasks[i] = calloc((size_t)partitions, sizeof(task *));
            if (!engine->tasks[i])
                return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        }
    }
    for (size_t s = 0; s < topology->n_stores; s++) {
        sl_topic_spec spec = {.name = engine->changelog_topic[s],
                              .partitions = engine->source_partitions[topology->store_source[s]],
                              .replication_factor = engine->replication_factor,
                              .configs = compact};
        sl_err err = ensure_topic(engine, &spec, errstr, errstr_size);
        if (err)
            return err;
    }
    sl_topic_spec dlq = {.name = engine->dlq_topic,
                         .partitions = engine->source_partitions[0],
                         .replication_factor = engine->replication_factor};
    return ensure_topic(engine, &dlq, errstr, errstr_size);
}

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */

static int source_of_topic(const sl_engine *engine, const char *topic) {
    for (size_t i = 0; i < engine->topology->n_sources; i++)
        if (strcmp(engine->source_topic[i], topic) == 0)
            return (int)i;
    return -1;
}

static task *task_of(const sl_engine *engine, const char *topic, int32_t partition) {
    int source = source_of_topic(engine, topic);
    if (source < 0 || partition < 0 || partition >= engine->source_partitions[source])
        return NULL;
    return engine->tasks[source][partition];
}

static void checkpoint_path(const task *t, char *buf, size_t size) {
    snprintf(buf, size, "%s/.checkpoint", t->dir);
}

static void partition_list_set(rd_kafka_t *rk, const char *topic, int32_t partition, bool pause) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition);
    if (pause)
        rd_kafka_pause_partitions(rk, list);
    else
        rd_kafka_resume_partitions(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
}

/* The restore consumer's assignment is every store still restoring, each at
 * its current position (rd_kafka_assign replaces the whole assignment). */
static void restore_reassign(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    for (size_t src = 0; src < topology->n_sources; src++) {
        for (int32_t p = 0; p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src] ? engine->tasks[src][p] : NULL;
            if (!t)
                continue;
            for (size_t s = 0; s < topology->n_stores; s++)
                if (t->stores[s].restoring)
                    rd_kafka_topic_partition_list_add(list, engine->changelog_topic[s], p)->offset =
                        t->stores[s].restore_position;
        }
    }
    rd_kafka_resp_err_t code = rd_kafka_assign(engine->restore_consumer, list);
    if (code)
        LOG(engine, SL_LOG_ERROR, "restore consumer assign: %s", rd_kafka_err2str(code));
    rd_kafka_topic_partition_list_destroy(list);
}

static void query_publish(sl_engine *engine, const task *t);
static void query_set_running(sl_engine *engine, const task *t);
static void query_withdraw(sl_engine *engine, const task *t);

static void task_start_running(sl_engine *engine, task *t) {
    const sl_source_def *source = &engine->topology->sources[t->source];
    if (engine->eos) {
        /* From now on the store changes while the changelog moves on: only a
         * clean close may leave a checkpoint behind. */
        char path[PATH_MAX + 16], why[256];
        checkpoint_path(t, path, sizeof(path));
        if (sl_checkpoint_remove(path, why, sizeof(why)))
            LOG(engine, SL_LOG_WARN, "task %s_%d: %s", source->name, t->partition, why);
    }
    t->running = true;
    query_set_running(engine, t);
    sl_gauge_add(engine->m.tasks_running, 1);
    int64_t now = sl_clock_wall_ms();
    for (size_t i = 0; i < engine->topology->n_punctuators; i++)
        t->next_punctuation[i] = engine->topology->punctuators[i].type == SL_PUNCTUATE_WALL_CLOCK
                                     ? now + engine->topology->punctuators[i].interval_ms
                                     : INT64_MIN;
    partition_list_set(engine->consumer, engine->source_topic[t->source], t->partition, false);
    int64_t took = sl_clock_mono_ms() - t->restore_started_ms;
    sl_counter_add(engine->m.restore_ms, (uint64_t)took);
    LOG(engine, SL_LOG_INFO, "task %s_%d running (restored %llu records in %lld ms)", source->name,
        t->partition, (unsigned long long)t->restored_records, (long long)took);
}

/* The end offset of a changelog partition: where the next restore starts. */
static sl_err changelog_end(sl_engine *engine, const char *topic, int32_t partition, int64_t *end) {
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

/* Open the task's stores and decide where each restore starts. */
static sl_err task_create(sl_engine *engine, int source, int32_t partition, char *errstr,
                          size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    task *t = calloc(1, sizeof(*t));
    if (!t)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
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
        if (changelog_end(engine, engine->changelog_topic[s], partition, &end) == SL_OK &&
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
    if (t->stores_restoring == 0)
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
static void task_close(sl_engine *engine, task *t, bool clean) {
    const sl_topology *topology = engine->topology;
    const char *source = topology->sources[t->source].name;
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t n = 0;
    bool restoring = t->stores_restoring > 0;
    char why[512];
    query_withdraw(engine, t);
    for (size_t s = 0; s < topology->n_stores; s++) {
        task_store *ts = &t->stores[s];
        if (!ts->store)
            continue;
        if (clean && !ts->restoring && sl_store_pending_count(ts->pending) == 0 &&
            sl_store_flush(ts->store, why, sizeof(why)) == SL_OK && n < SL_CHECKPOINT_MAX_ENTRIES) {
            int64_t end;
            if (changelog_end(engine, engine->changelog_topic[s], t->partition, &end) == SL_OK) {
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
    if (t->running)
        sl_gauge_add(engine->m.tasks_running, -1);
    sl_gauge_add(engine->m.tasks_assigned, -1);
    engine->tasks[t->source][t->partition] = NULL;
    LOG(engine, SL_LOG_INFO, "task %s_%d closed %s", source, t->partition,
        clean ? "cleanly" : "dirty (no checkpoint: the next owner restores from scratch)");
    free(t);
    if (restoring)
        restore_reassign(engine);
}

/* ------------------------------------------------------------------------ */
/* Commit, abort, rewind                                                     */

static void drop_pending(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            if (!t)
                continue;
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

/* Seek every assigned partition back to its committed offset, so the records
 * of a dropped batch are processed again. */
static void rewind_to_committed(sl_engine *engine) {
    rd_kafka_topic_partition_list_t *assignment = NULL;
    if (rd_kafka_assignment(engine->consumer, &assignment) || !assignment)
        return;
    if (assignment->cnt == 0) { /* nothing assigned (all lost): nothing to rewind */
        engine->needs_rewind = false;
        rd_kafka_topic_partition_list_destroy(assignment);
        return;
    }
    rd_kafka_resp_err_t code = rd_kafka_committed(engine->consumer, assignment, ADMIN_TIMEOUT_MS);
    if (code) {
        LOG(engine, SL_LOG_WARN, "rewind: cannot read committed offsets: %s; will retry",
            rd_kafka_err2str(code));
        engine->needs_rewind = true;
        rd_kafka_topic_partition_list_destroy(assignment);
        return;
    }
    for (int i = 0; i < assignment->cnt; i++)
        if (assignment->elems[i].offset < 0)
            assignment->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_error_t *error =
        rd_kafka_seek_partitions(engine->consumer, assignment, ADMIN_TIMEOUT_MS);
    if (error) {
        LOG(engine, SL_LOG_WARN, "rewind: seek failed: %s; will retry",
            rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        engine->needs_rewind = true;
    } else {
        engine->needs_rewind = false;
    }
    rd_kafka_topic_partition_list_destroy(assignment);
}

static void recreate_tasks(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    char why[512];
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            if (!t)
                continue;
            task_close(engine, t, false);
            partition_list_set(engine->consumer, engine->source_topic[src], p, true);
            if (task_create(engine, (int)src, p, why, sizeof(why)))
                LOG(engine, SL_LOG_ERROR, "task %s_%d: cannot recreate: %s",
                    topology->sources[src].name, p, why);
        }
    restore_reassign(engine);
}

/* Fenced or otherwise fatal: the producer is unusable and whether the last
 * transaction committed is unknown, so the local state is distrusted too. */
static sl_err reset_after_fatal(sl_engine *engine) {
    sl_counter_add(engine->m.producer_resets, 1);
    LOG(engine, SL_LOG_WARN, "fatal producer error: recreating the producer and the tasks");
    rd_kafka_destroy(engine->producer);
    engine->producer = NULL;
    engine->txn_open = false;
    /* What failed went with the old producer and its transaction: nothing
     * is in flight for the new one, and the rewind redoes the batch. */
    engine->delivery_failed = false;
    drop_pending(engine);
    char why[512];
    sl_err err = create_producer(engine, why, sizeof(why));
    if (err) {
        LOG(engine, SL_LOG_ERROR, "cannot recreate the producer: %s", why);
        /* The engine stops. Its tasks close dirty now: their state is
         * distrusted, so no checkpoint, and a clean close would need the
         * producer (changelog end offsets) that is gone. */
        for (size_t src = 0; src < engine->topology->n_sources; src++)
            for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++)
                if (engine->tasks[src][p])
                    task_close(engine, engine->tasks[src][p], false);
        engine->failed = err;
        return err;
    }
    recreate_tasks(engine);
    rewind_to_committed(engine);
    return SL_OK;
}

static void abort_and_rewind(sl_engine *engine, const char *why) {
    sl_counter_add(engine->m.aborts, 1);
    LOG(engine, SL_LOG_WARN, "aborting the transaction and rewinding: %s", why);
    if (engine->eos && engine->txn_open) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(engine->producer, TXN_TIMEOUT_MS);
        engine->txn_open = false;
        if (error) {
            sl_err cls = sl_kafka_classify(0, error);
            LOG(engine, SL_LOG_WARN, "abort_transaction: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            if (cls == SL_ERR_KAFKA_FATAL || cls == SL_ERR_KAFKA) {
                reset_after_fatal(engine);
                return;
            }
        }
    }
    drop_pending(engine);
    engine->delivery_failed = false;
    rewind_to_committed(engine);
}

static rd_kafka_topic_partition_list_t *consumed_offsets(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(16);
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            if (t && t->consumed_next >= 0)
                rd_kafka_topic_partition_list_add(offsets, engine->source_topic[src], p)->offset =
                    t->consumed_next;
        }
    return offsets;
}

/* After a successful commit: make the committed writes local. */
static void apply_pending(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    char why[512];
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            if (!t)
                continue;
            t->consumed_next = -1;
            for (size_t s = 0; s < topology->n_stores; s++) {
                task_store *ts = &t->stores[s];
                if (!ts->pending || sl_store_pending_count(ts->pending) == 0)
                    continue;
                /* Under EOS without the WAL: a crash leaves no checkpoint,
                 * so the store is wiped and restored from the changelog,
                 * and a clean close flushes before it writes one. */
                if (sl_store_pending_apply(ts->store, ts->pending, engine->eos, why, sizeof(why))) {
                    /* Kafka committed what RocksDB could not take: the only
                     * safe state is a fresh restore. */
                    LOG(engine, SL_LOG_ERROR, "task %s_%d: store %s apply failed (%s): restoring",
                        topology->sources[src].name, p, topology->stores[s], why);
                    task_close(engine, t, false);
                    partition_list_set(engine->consumer, engine->source_topic[src], p, true);
                    if (task_create(engine, (int)src, p, why, sizeof(why)) == SL_OK)
                        restore_reassign(engine);
                    break;
                }
            }
        }
    engine->pending_bytes = 0;
    engine->commit_requested = false;
}

/* Commit everything processed since the last commit. Returns SL_OK also
 * when the batch had to be aborted and rewound (that is recovery, not
 * failure); an error only if the engine cannot go on (engine->failed). */
static sl_err commit_batch(sl_engine *engine) {
    engine->last_commit_ms = sl_clock_mono_ms();
    if (!engine->dirty)
        return SL_OK;
    int64_t started = sl_clock_mono_ms();
    if (engine->eos && engine->delivery_failed) {
        /* A changelog record whose pending write was lost (out of memory),
         * or an output that failed: none of this transaction may commit. */
        abort_and_rewind(engine, "a write of this transaction failed");
        return SL_OK;
    }
    rd_kafka_topic_partition_list_t *offsets = consumed_offsets(engine);
    if (engine->eos) {
        rd_kafka_consumer_group_metadata_t *group =
            rd_kafka_consumer_group_metadata(engine->consumer);
        rd_kafka_error_t *error = NULL;
        for (int attempt = 0; attempt < 5; attempt++) {
            if (error)
                rd_kafka_error_destroy(error);
            error = rd_kafka_send_offsets_to_transaction(engine->producer, offsets, group,
                                                         TXN_TIMEOUT_MS);
            if (!error || !rd_kafka_error_is_retriable(error))
                break;
        }
        for (int attempt = 0; !error && attempt < 5; attempt++) {
            error = rd_kafka_commit_transaction(engine->producer, TXN_TIMEOUT_MS);
            if (!error || !rd_kafka_error_is_retriable(error))
                break;
            if (attempt < 4) {
                rd_kafka_error_destroy(error);
                error = NULL;
            }
        }
        rd_kafka_consumer_group_metadata_destroy(group);
        rd_kafka_topic_partition_list_destroy(offsets);
        if (error) {
            sl_err cls = sl_kafka_classify(0, error);
            char why[512];
            snprintf(why, sizeof(why), "%s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            if (cls == SL_ERR_KAFKA_FATAL)
                return reset_after_fatal(engine);
            abort_and_rewind(engine, why);
            return engine->failed;
        }
        engine->txn_open = false;
    } else {
        rd_kafka_resp_err_t code = rd_kafka_flush(engine->producer, TXN_TIMEOUT_MS);
        if (code || engine->delivery_failed) {
            rd_kafka_topic_partition_list_destroy(offsets);
            abort_and_rewind(engine, code ? rd_kafka_err2str(code) : "a delivery failed");
            return engine->failed;
        }
        if (offsets->cnt > 0) {
            code = rd_kafka_commit(engine->consumer, offsets, 0);
            if (code)
                /* The outputs are durable; only the offsets are not: the
                 * records will be processed again (at-least-once). */
                LOG(engine, SL_LOG_WARN, "offset commit failed: %s", rd_kafka_err2str(code));
        }
        rd_kafka_topic_partition_list_destroy(offsets);
    }
    apply_pending(engine);
    engine->dirty = false;
    sl_counter_add(engine->m.commits, 1);
    int64_t took = sl_clock_mono_ms() - started;
    sl_histogram_observe(engine->m.commit_seconds, (double)took / 1000.0);
    if (took > 1000)
        LOG(engine, SL_LOG_WARN, "commit took %lld ms", (long long)took);
    return SL_OK;
}

static sl_err produce(sl_engine *engine, const char *topic, int32_t partition, const void *key,
                      size_t key_len, const void *value, size_t value_len,
                      rd_kafka_headers_t *headers);

static sl_err emit_cached(void *opaque, int sink, const void *key, size_t key_len,
                          const void *value, size_t value_len) {
    sl_engine *engine = opaque;
    sl_err err = produce(engine, engine->sink_topic[sink], RD_KAFKA_PARTITION_UA, key, key_len,
                         value, value_len, NULL);
    if (!err) {
        sl_counter_add(engine->m.records_out[sink], 1);
        sl_counter_add(engine->m.cache_emitted, 1);
    }
    return err;
}

/* The record cache is produced first, inside the open transaction, so it
 * commits or aborts with the batch; then commit_batch. The settle counters
 * let a query wait for the apply that follows a visible commit. */
static sl_err commit(sl_engine *engine) {
    uint64_t begun = atomic_fetch_add(&engine->commits_begun, 1) + 1;
    sl_err err = SL_OK;
    if (engine->dirty && engine->emit_cache && sl_emit_cache_entries(engine->emit_cache) &&
        sl_emit_cache_flush(engine->emit_cache, emit_cached, engine)) {
        abort_and_rewind(engine, "the record cache could not be produced");
        err = engine->failed;
    } else {
        err = commit_batch(engine);
    }
    atomic_store(&engine->commits_settled, begun);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Rebalancing                                                               */

static void on_assign(sl_engine *engine, rd_kafka_topic_partition_list_t *partitions) {
    rd_kafka_error_t *error = rd_kafka_incremental_assign(engine->consumer, partitions);
    if (error) {
        LOG(engine, SL_LOG_ERROR, "incremental_assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return;
    }
    /* Nothing is processed before its stores are restored. */
    rd_kafka_pause_partitions(engine->consumer, partitions);
    char why[512];
    for (int i = 0; i < partitions->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &partitions->elems[i];
        int source = source_of_topic(engine, tp->topic);
        if (source < 0 || tp->partition >= engine->source_partitions[source] ||
            engine->tasks[source][tp->partition])
            continue;
        if (task_create(engine, source, tp->partition, why, sizeof(why)))
            LOG(engine, SL_LOG_ERROR, "task %s_%d: %s", engine->topology->sources[source].name,
                tp->partition, why);
    }
    restore_reassign(engine);
}

static void on_revoke(sl_engine *engine, rd_kafka_topic_partition_list_t *partitions, bool lost) {
    if (lost) {
        /* Another member may own these partitions already: committing is no
         * longer ours to do. */
        if (engine->eos && engine->txn_open) {
            rd_kafka_error_t *error = rd_kafka_abort_transaction(engine->producer, TXN_TIMEOUT_MS);
            if (error)
                rd_kafka_error_destroy(error);
            engine->txn_open = false;
            sl_counter_add(engine->m.aborts, 1);
            engine->delivery_failed = false; /* the abort purged the queue */
        }
        drop_pending(engine);
    } else {
        commit(engine);
    }
    for (int i = 0; i < partitions->cnt; i++) {
        task *t = task_of(engine, partitions->elems[i].topic, partitions->elems[i].partition);
        if (t)
            task_close(engine, t, !lost);
    }
    rd_kafka_error_t *error = rd_kafka_incremental_unassign(engine->consumer, partitions);
    if (error) {
        LOG(engine, SL_LOG_ERROR, "incremental_unassign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    if (lost)
        rewind_to_committed(engine);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque) {
    (void)rk;
    sl_engine *engine = opaque;
    engine->joined = true;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        LOG(engine, SL_LOG_INFO, "assigned %d partition%s", partitions->cnt,
            partitions->cnt == 1 ? "" : "s");
        on_assign(engine, partitions);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        bool lost = rd_kafka_assignment_lost(engine->consumer);
        LOG(engine, lost ? SL_LOG_WARN : SL_LOG_INFO, "%s %d partition%s",
            lost ? "lost" : "revoked", partitions->cnt, partitions->cnt == 1 ? "" : "s");
        on_revoke(engine, partitions, lost);
    } else {
        LOG(engine, SL_LOG_ERROR, "rebalance error: %s", rd_kafka_err2str(err));
        rd_kafka_assign(engine->consumer, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Restore                                                                   */

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
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            if (!t || t->stores_restoring == 0)
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
static bool restore_poll(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    bool any = false, finished = false;
    for (size_t src = 0; !any && src < topology->n_sources; src++)
        for (int32_t p = 0; !any && engine->tasks[src] && p < engine->source_partitions[src]; p++)
            any = engine->tasks[src][p] && engine->tasks[src][p]->stores_restoring > 0;
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
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++) {
            task *t = engine->tasks[src][p];
            for (size_t s = 0; t && s < topology->n_stores; s++) {
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

/* ------------------------------------------------------------------------ */
/* Global stores                                                             */

static sl_err globals_start(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    if (topology->n_globals == 0) {
        engine->globals_bootstrapped = true;
        return SL_OK;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    sl_err err = SL_OK;
    for (size_t g = 0; g < topology->n_globals; g++) {
        global_state *gs = &engine->globals[g];
        int partitions = 0;
        err = sl_admin_topic_partitions(engine->producer, topology->globals[g].topic,
                                        ADMIN_TIMEOUT_MS, &partitions, errstr, errstr_size);
        if (err)
            break;
        if (!fits(snprintf(gs->path, sizeof(gs->path), "%s/global/%s", engine->state_path,
                           topology->globals[g].store),
                  sizeof(gs->path))) {
            err = sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
            break;
        }
        char cp_path[PATH_MAX + 16];
        snprintf(cp_path, sizeof(cp_path), "%s.checkpoint", gs->path);
        sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
        size_t n_entries = 0;
        char why[256];
        bool have_cp = sl_checkpoint_read(cp_path, entries, SL_CHECKPOINT_MAX_ENTRIES, &n_entries,
                                          why, sizeof(why)) == SL_OK;
        gs->store = sl_store_open(engine->env, gs->path, errstr, errstr_size);
        gs->partitions = calloc((size_t)partitions, sizeof(global_partition));
        if (!gs->store || !gs->partitions) {
            err = SL_ERR_STORE;
            break;
        }
        gs->n_partitions = partitions;
        for (int p = 0; p < partitions; p++) {
            gs->partitions[p].partition = p;
            gs->partitions[p].next_offset = RD_KAFKA_OFFSET_BEGINNING;
            for (size_t e = 0; have_cp && e < n_entries; e++)
                if (entries[e].partition == p)
                    gs->partitions[p].next_offset = entries[e].offset;
            rd_kafka_topic_partition_list_add(list, topology->globals[g].topic, p)->offset =
                gs->partitions[p].next_offset;
        }
    }
    if (!err && rd_kafka_assign(engine->global_consumer, list))
        err = sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot assign global topics");
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

static void globals_checkpoint(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    char why[256];
    for (size_t g = 0; g < topology->n_globals; g++) {
        global_state *gs = &engine->globals[g];
        if (!gs->store)
            continue;
        sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
        size_t n = 0;
        for (int p = 0; p < gs->n_partitions && n < SL_CHECKPOINT_MAX_ENTRIES; p++) {
            if (gs->partitions[p].next_offset < 0)
                continue;
            snprintf(entries[n].store, sizeof(entries[n].store), "%s", topology->globals[g].store);
            entries[n].partition = p;
            entries[n].offset = gs->partitions[p].next_offset;
            n++;
        }
        char cp_path[PATH_MAX + 16];
        snprintf(cp_path, sizeof(cp_path), "%s.checkpoint", gs->path);
        if (n > 0 && (sl_store_flush(gs->store, why, sizeof(why)) ||
                      sl_checkpoint_write(cp_path, entries, n, why, sizeof(why))))
            LOG(engine, SL_LOG_WARN, "global store %s: checkpoint: %s", topology->globals[g].store,
                why);
    }
}

static void globals_poll(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    if (topology->n_globals == 0)
        return;
    sl_store_batch *batch = sl_store_batch_new();
    int last_global = -1;
    char why[256];
    for (int n = 0; n < engine->restore_batch; n++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(engine->global_consumer, 0);
        if (!m)
            break;
        const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
        int g = -1;
        for (size_t i = 0; i < topology->n_globals; i++)
            if (strcmp(topology->globals[i].topic, topic) == 0)
                g = (int)i;
        global_state *gs = g >= 0 ? &engine->globals[g] : NULL;
        if (gs && m->partition >= 0 && m->partition < gs->n_partitions) {
            if (g != last_global && last_global >= 0) {
                sl_store_apply(engine->globals[last_global].store, batch, false, why, sizeof(why));
                sl_store_batch_clear(batch);
            }
            last_global = g;
            global_partition *gp = &gs->partitions[m->partition];
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                gp->at_end = true;
                gp->next_offset = m->offset;
            } else if (!m->err && m->key) {
                if (m->payload)
                    sl_store_batch_put(batch, m->key, m->key_len, m->payload, m->len);
                else
                    sl_store_batch_delete(batch, m->key, m->key_len);
                gp->next_offset = m->offset + 1;
                sl_counter_add(engine->m.global_records, 1);
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (last_global >= 0 && sl_store_batch_count(batch) > 0 &&
        sl_store_apply(engine->globals[last_global].store, batch, false, why, sizeof(why)))
        LOG(engine, SL_LOG_ERROR, "global store write: %s", why);
    sl_store_batch_destroy(batch);
    if (!engine->globals_bootstrapped) {
        bool all = true;
        for (size_t g = 0; all && g < topology->n_globals; g++)
            for (int p = 0; all && p < engine->globals[g].n_partitions; p++)
                all = engine->globals[g].partitions[p].at_end;
        if (all) {
            engine->globals_bootstrapped = true;
            atomic_store(&engine->globals_readable, true);
            globals_checkpoint(engine);
            LOG(engine, SL_LOG_INFO, "global stores bootstrapped");
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Processing                                                                */

static sl_err produce(sl_engine *engine, const char *topic, int32_t partition, const void *key,
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

static sl_err ensure_transaction(sl_engine *engine) {
    engine->dirty = true;
    if (!engine->eos || engine->txn_open)
        return SL_OK;
    rd_kafka_error_t *error = rd_kafka_begin_transaction(engine->producer);
    if (error) {
        sl_err cls = sl_kafka_classify(0, error);
        LOG(engine, SL_LOG_WARN, "begin_transaction: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return cls == SL_OK ? SL_ERR_KAFKA : cls;
    }
    engine->txn_open = true;
    return SL_OK;
}

static void send_to_dlq(sl_engine *engine, task *t, const sl_record *record, const char *node,
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
    if (produce(engine, engine->dlq_topic, t->partition % engine->source_partitions[0], record->key,
                record->key_len, record->value, record->value_len, headers) == SL_OK)
        sl_counter_add(engine->m.records_dlq, 1);
    LOG(engine, SL_LOG_WARN, "record %s [%d] @%lld to %s: %s", record->topic, record->partition,
        (long long)record->offset, engine->dlq_topic, reason);
}

static void process_record(sl_engine *engine, task *t, const rd_kafka_message_t *m) {
    const sl_topology *topology = engine->topology;
    const sl_source_def *source = &topology->sources[t->source];
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
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    if (ensure_transaction(engine) != SL_OK) {
        abort_and_rewind(engine, "cannot begin a transaction");
        return;
    }
    char reason[256];
    if (source->validate && !source->validate(&record, reason, sizeof(reason), source->opaque)) {
        send_to_dlq(engine, t, &record, source->name, reason);
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
                reset_after_fatal(engine);
                return;
            }
            if (err == SL_ERR_KAFKA) {
                /* An output could not be produced: the transaction is
                 * incomplete, so none of it may commit. */
                abort_and_rewind(engine, "an output could not be produced");
                return;
            }
            if (err || ctx.reject_reason) {
                send_to_dlq(engine, t, &record, proc->name,
                            ctx.reject_reason ? ctx.reject_reason : sl_err_name(err));
                break;
            }
        }
    }
    t->consumed_next = m->offset + 1;
    t->position = m->offset + 1;
    if (record.timestamp_ms > t->stream_time)
        t->stream_time = record.timestamp_ms;
    struct timespec done;
    clock_gettime(CLOCK_MONOTONIC, &done);
    sl_histogram_observe(engine->m.process_seconds,
                         (double)(done.tv_sec - started.tv_sec) +
                             (double)(done.tv_nsec - started.tv_nsec) / 1e9);
}

static void punctuate(sl_engine *engine, task *t, bool wall_clock_only) {
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
        if (ensure_transaction(engine) != SL_OK)
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

/* ------------------------------------------------------------------------ */
/* Context API                                                               */

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
    sl_err err = produce(engine, engine->changelog_topic[s], ctx->task->partition, key, key_len,
                         is_delete ? NULL : value, is_delete ? 0 : value_len, NULL);
    if (err)
        return err;
    size_t before = sl_store_pending_bytes(ts->pending);
    err = is_delete ? sl_store_pending_delete(ts->pending, key, key_len)
                    : sl_store_pending_put(ts->pending, key, key_len, value, value_len);
    if (err) {
        /* The changelog has a write the local state lacks: the transaction
         * must not commit (commit() aborts and rewinds on this flag). */
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
    return sl_store_get(ctx->engine->globals[g].store, key, key_len, value, value_len, why,
                        sizeof(why));
}

sl_err sl_ctx_emit(sl_ctx *ctx, const char *sink, const void *key, size_t key_len,
                   const void *value, size_t value_len, int32_t partition) {
    sl_engine *engine = ctx->engine;
    int i = sl_topology_sink_index(engine->topology, sink);
    if (i < 0)
        return SL_ERR_INVALID;
    sl_err err =
        produce(engine, engine->sink_topic[i], partition < 0 ? RD_KAFKA_PARTITION_UA : partition,
                key, key_len, value, value_len, NULL);
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
        if ((err = sl_emit_cache_flush(engine->emit_cache, emit_cached, engine)))
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
    sl_err err = produce(engine, engine->reply_topic, RD_KAFKA_PARTITION_UA, key, key_len, value,
                         value_len, NULL);
    if (!err)
        sl_counter_add(engine->m.replies, 1);
    return err;
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

/* ------------------------------------------------------------------------ */
/* Start, loop, close                                                        */

static sl_err queries_init(sl_engine *engine, char *errstr, size_t errstr_size);

sl_err sl_engine_start(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    sl_err err = create_producer(engine, errstr, errstr_size);
    if (err)
        return err;
    err = prepare_topics(engine, errstr, errstr_size);
    if (!err)
        err = queries_init(engine, errstr, errstr_size);
    if (err)
        return err;
    const char *const consumer_settings[] = {"group.id",
                                             engine->app_id,
                                             "partition.assignment.strategy",
                                             "cooperative-sticky",
                                             "isolation.level",
                                             "read_committed",
                                             "enable.auto.commit",
                                             "false",
                                             "enable.auto.offset.store",
                                             "false",
                                             "auto.offset.reset",
                                             "earliest",
                                             NULL};
    engine->consumer =
        new_client(engine, RD_KAFKA_CONSUMER, consumer_settings, true, errstr, errstr_size);
    if (!engine->consumer)
        return SL_ERR_KAFKA;
    const char *const side_settings[] = {"isolation.level",
                                         "read_committed",
                                         "enable.partition.eof",
                                         "true",
                                         "enable.auto.commit",
                                         "false",
                                         "group.id",
                                         engine->app_id,
                                         "max.partition.fetch.bytes",
                                         "8388608",
                                         NULL};
    engine->restore_consumer =
        new_client(engine, RD_KAFKA_CONSUMER, side_settings, false, errstr, errstr_size);
    if (!engine->restore_consumer)
        return SL_ERR_KAFKA;
    engine->restore_queue = rd_kafka_queue_get_consumer(engine->restore_consumer);
    if (!engine->restore_queue)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "restore consumer has no queue");
    engine->global_consumer =
        new_client(engine, RD_KAFKA_CONSUMER, side_settings, false, errstr, errstr_size);
    if (!engine->global_consumer)
        return SL_ERR_KAFKA;
    err = globals_start(engine, errstr, errstr_size);
    if (err)
        return err;
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)topology->n_sources);
    for (size_t i = 0; i < topology->n_sources; i++)
        rd_kafka_topic_partition_list_add(topics, engine->source_topic[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t code = rd_kafka_subscribe(engine->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (code)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "subscribe: %s", rd_kafka_err2str(code));
    engine->last_commit_ms = sl_clock_mono_ms();
    LOG(engine, SL_LOG_INFO, "started: %s, commit every %lld ms, transactional.id %s-%s",
        engine->eos ? "exactly_once_v2" : "at_least_once", (long long)engine->commit_interval_ms,
        engine->app_id, engine->instance_id);
    return SL_OK;
}

/* Gauges that are sampled, not counted: consumer lag (from the watermarks
 * librdkafka caches from fetch responses, so no request is sent), store
 * sizes and RocksDB memory (RocksDB properties). Every few seconds. */
static void sample_gauges(sl_engine *engine) {
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
                rd_kafka_get_watermark_offsets(engine->consumer, engine->source_topic[src], p, &low,
                                               &high) == 0 &&
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

static void update_ready(sl_engine *engine) {
    bool ready =
        engine->joined && engine->globals_bootstrapped &&
        sl_gauge_value(engine->m.tasks_running) == sl_gauge_value(engine->m.tasks_assigned);
    atomic_store(&engine->ready, ready);
}

sl_err sl_engine_poll(sl_engine *engine, int timeout_ms) {
    if (engine->failed)
        return engine->failed;
    if (engine->needs_rewind)
        rewind_to_committed(engine);
    globals_poll(engine);
    /* While restoring, the group consumer is only polled (to stay in the
     * group and serve rebalances), never waited on: restore gets the time. */
    if (restore_poll(engine))
        timeout_ms = 0;
    for (int n = 0; n < engine->poll_batch; n++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(engine->consumer, n ? 0 : timeout_ms);
        if (!m)
            break;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                LOG(engine, SL_LOG_WARN, "consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        const char *topic = rd_kafka_topic_name(m->rkt);
        task *t = task_of(engine, topic, m->partition);
        if (!t || !t->running || !engine->globals_bootstrapped) {
            /* Fetched before the pause took effect (or while the global
             * stores bootstrap): put it back. */
            rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(list, topic, m->partition)->offset = m->offset;
            rd_kafka_error_t *error = rd_kafka_seek_partitions(engine->consumer, list, 5000);
            if (error)
                rd_kafka_error_destroy(error);
            if (t && !t->running)
                rd_kafka_pause_partitions(engine->consumer, list);
            rd_kafka_topic_partition_list_destroy(list);
            rd_kafka_message_destroy(m);
            break;
        }
        int source = t->source;
        int32_t partition = m->partition;
        process_record(engine, t, m);
        rd_kafka_message_destroy(m);
        if (engine->failed) /* a producer reset failed: the tasks are gone */
            return engine->failed;
        /* A producer reset inside process_record replaced every task. */
        t = engine->tasks[source][partition];
        if (engine->topology->n_punctuators && t && t->running)
            punctuate(engine, t, false);
        if (engine->commit_requested)
            break; /* commit below, before the record cache grows further */
    }
    const sl_topology *topology = engine->topology;
    if (topology->n_punctuators)
        for (size_t src = 0; src < topology->n_sources; src++)
            for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++)
                if (engine->tasks[src][p] && engine->tasks[src][p]->running)
                    punctuate(engine, engine->tasks[src][p], true);
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
    sample_gauges(engine);
    update_ready(engine);
    return SL_OK;
}

sl_err sl_engine_close(sl_engine *engine) {
    if (engine->closed)
        return SL_OK;
    engine->closed = true;
    if (engine->consumer) {
        /* consumer_close revokes everything through rebalance_cb, which
         * commits and closes every task cleanly. */
        rd_kafka_resp_err_t code = rd_kafka_consumer_close(engine->consumer);
        if (code)
            LOG(engine, SL_LOG_WARN, "consumer close: %s", rd_kafka_err2str(code));
    }
    /* Tasks the revoke did not reach (a failed rejoin, say): close them now. */
    commit(engine);
    const sl_topology *topology = engine->topology;
    for (size_t src = 0; src < topology->n_sources; src++)
        for (int32_t p = 0; engine->tasks[src] && p < engine->source_partitions[src]; p++)
            if (engine->tasks[src][p])
                task_close(engine, engine->tasks[src][p], !engine->txn_open);
    if (topology->n_globals && engine->globals_bootstrapped)
        globals_checkpoint(engine);
    if (engine->producer)
        rd_kafka_flush(engine->producer, 10000);
    atomic_store(&engine->ready, false);
    LOG(engine, SL_LOG_INFO, "closed");
    return SL_OK;
}

static void queries_free(sl_engine *engine);

void sl_engine_destroy(sl_engine *engine) {
    if (!engine)
        return;
    if (engine->consumer)
        rd_kafka_destroy(engine->consumer);
    if (engine->restore_queue)
        rd_kafka_queue_destroy(engine->restore_queue);
    if (engine->restore_consumer) {
        rd_kafka_consumer_close(engine->restore_consumer);
        rd_kafka_destroy(engine->restore_consumer);
    }
    if (engine->global_consumer) {
        rd_kafka_consumer_close(engine->global_consumer);
        rd_kafka_destroy(engine->global_consumer);
    }
    if (engine->producer)
        rd_kafka_destroy(engine->producer);
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
    for (size_t g = 0; g < SL_TOPOLOGY_MAX_NODES; g++) {
        sl_store_close(engine->globals[g].store);
        free(engine->globals[g].partitions);
    }
    sl_store_env_destroy(engine->env);
    sl_emit_cache_destroy(engine->emit_cache);
    if (engine->own_metrics)
        sl_metrics_destroy(engine->metrics);
    free(engine->bootstrap);
    free(engine);
}

sl_err sl_engine_global_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                            char **value, size_t *value_len) {
    *value = NULL;
    *value_len = 0;
    int g = sl_topology_global_index(engine->topology, store);
    if (g < 0)
        return SL_ERR_INVALID;
    /* The store is opened before the flag is set and closed only by
     * sl_engine_destroy, so a reader that saw the flag reads an open store;
     * RocksDB's Get is thread-safe. */
    if (!atomic_load(&engine->globals_readable))
        return SL_ERR_UNAVAILABLE;
    char why[256];
    return sl_store_get(engine->globals[g].store, key, key_len, value, value_len, why, sizeof(why));
}

bool sl_engine_ready(const sl_engine *engine) {
    return atomic_load(&engine->ready);
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
    stats->changelog_records = sl_counter_value(engine->m.changelog_records);
    stats->commits = sl_counter_value(engine->m.commits);
    stats->aborts = sl_counter_value(engine->m.aborts);
    stats->producer_resets = sl_counter_value(engine->m.producer_resets);
    stats->restored_records = sl_counter_value(engine->m.restored_records);
    stats->restore_ms = sl_counter_value(engine->m.restore_ms);
    stats->global_records = sl_counter_value(engine->m.global_records);
    stats->punctuations = sl_counter_value(engine->m.punctuations);
    stats->tasks_assigned = (int64_t)sl_gauge_value(engine->m.tasks_assigned);
    stats->tasks_running = (int64_t)sl_gauge_value(engine->m.tasks_running);
}

/* ------------------------------------------------------------------------ */
/* Interactive queries                                                       */
/*
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

static sl_err queries_init(sl_engine *engine, char *errstr, size_t errstr_size) {
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

static void queries_free(sl_engine *engine) {
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

static void query_publish(sl_engine *engine, const task *t) {
    query_slot *slot = query_slot_of(engine, t);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    for (size_t s = 0; s < engine->topology->n_stores; s++)
        slot->stores[s] = t->stores[s].store;
    slot->state = t->running ? QUERY_RUNNING : QUERY_RESTORING;
    pthread_rwlock_unlock(&slot->lock);
    atomic_fetch_add(&engine->query_version, 1);
}

static void query_set_running(sl_engine *engine, const task *t) {
    query_slot *slot = query_slot_of(engine, t);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    if (slot->state != QUERY_ABSENT)
        slot->state = QUERY_RUNNING;
    pthread_rwlock_unlock(&slot->lock);
    atomic_fetch_add(&engine->query_version, 1);
}

static void query_withdraw(sl_engine *engine, const task *t) {
    query_slot *slot = query_slot_of(engine, t);
    if (!slot)
        return;
    pthread_rwlock_wrlock(&slot->lock);
    slot->state = QUERY_ABSENT;
    memset(slot->stores, 0, sizeof(slot->stores));
    pthread_rwlock_unlock(&slot->lock);
    atomic_fetch_add(&engine->query_version, 1);
}

const char *sl_engine_instance_id(const sl_engine *engine) {
    return engine->instance_id;
}

const char *sl_engine_application_id(const sl_engine *engine) {
    return engine->app_id;
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
 * (the slot is then not locked). */
static sl_err query_acquire(sl_engine *engine, const char *store, const void *key, size_t key_len,
                            int32_t *partition, query_slot **slot_out, sl_store **store_out) {
    sl_err err = sl_engine_query_partition(engine, store, key, key_len, partition, NULL);
    if (err)
        return err;
    int s = sl_topology_store_index(engine->topology, store);
    query_slot *slot = &engine->query_slots[engine->topology->store_source[s]][*partition];
    pthread_rwlock_rdlock(&slot->lock);
    if (slot->state != QUERY_RUNNING || !slot->stores[s]) {
        err = slot->state == QUERY_RESTORING ? SL_ERR_NOT_READY : SL_ERR_NOT_OWNER;
        pthread_rwlock_unlock(&slot->lock);
        return err;
    }
    *slot_out = slot;
    *store_out = slot->stores[s];
    return SL_OK;
}

sl_err sl_engine_query_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                           char **value, size_t *value_len, int32_t *partition) {
    query_slot *slot;
    sl_store *st;
    *value = NULL;
    *value_len = 0;
    sl_err err = query_acquire(engine, store, key, key_len, partition, &slot, &st);
    if (err)
        return err;
    char why[256];
    err = sl_store_get(st, key, key_len, value, value_len, why, sizeof(why));
    pthread_rwlock_unlock(&slot->lock);
    if (err && err != SL_ERR_NOT_FOUND)
        LOG(engine, SL_LOG_WARN, "query of store %s [%d]: %s", store, *partition, why);
    return err;
}

sl_err sl_engine_query_range(sl_engine *engine, const char *store, const void *routing_key,
                             size_t routing_key_len, const sl_query_range *range,
                             sl_query_visit_fn *visit, void *opaque, size_t *visited,
                             int32_t *partition) {
    query_slot *slot;
    sl_store *st;
    if (visited)
        *visited = 0;
    sl_err err = query_acquire(engine, store, routing_key, routing_key_len, partition, &slot, &st);
    if (err)
        return err;
    sl_store_iter *iter = range->prefix ? sl_store_iter_prefix(st, range->prefix, range->prefix_len)
                                        : sl_store_iter_range(st, range->from, range->from_len,
                                                              range->to, range->to_len);
    if (!iter) {
        pthread_rwlock_unlock(&slot->lock);
        return SL_ERR_NOMEM;
    }
    const void *k, *v;
    size_t k_len, v_len, seen = 0, count = 0;
    while (count < range->limit && sl_store_iter_next(iter, &k, &k_len, &v, &v_len)) {
        if (seen++ < range->skip)
            continue;
        count++;
        if (!visit(opaque, k, k_len, v, v_len))
            break;
    }
    char why[256];
    err = sl_store_iter_error(iter, why, sizeof(why));
    sl_store_iter_destroy(iter);
    pthread_rwlock_unlock(&slot->lock);
    if (err)
        LOG(engine, SL_LOG_WARN, "range query of store %s [%d]: %s", store, *partition, why);
    if (visited)
        *visited = count;
    return err;
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
            bool owned = slot->state != QUERY_ABSENT;
            pthread_rwlock_unlock(&slot->lock);
            if (owned && n < max) {
                topics[n] = engine->source_topic[src];
                partitions[n] = p;
                n++;
            }
        }
    return n;
}
