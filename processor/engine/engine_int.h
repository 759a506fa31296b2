/*
 * engine_int.h: the engine's private bodies and the calls between its files.
 *
 * The engine is cut where Kafka Streams cuts its runtime:
 *   engine.c     the loop (StreamThread): poll, commit, rebalance, and the
 *                only place that decides recovery (abort + rewind, producer
 *                reset)
 *   tasks.c      the task manager: create, start, close, process, punctuate
 *   restore.c    the changelog reader (StoreChangelogReader)
 *   collector.c  produce, dead letters, the transaction state, apply after
 *                commit (RecordCollector + the transaction manager)
 *   globals.c    global stores       context.c  the sl_ctx_* API
 *   queries.c    interactive queries topics.c   topic creation and checks
 *   clients.c    Kafka clients (a group consumer per source), the instance id
 *   standby.c    standby replicas (StandbyTask): changelogs of tasks owned
 *                elsewhere, followed into local stores
 *   stats.c      metrics and sl_engine_stats
 * Functions below tasks.c, restore.c and collector.c never abort, rewind or
 * recreate anything: they return classified errors (SL_ERR_KAFKA_FATAL,
 * SL_ERR_KAFKA_ABORTABLE, ...) and the loop acts on them.
 *
 * Every function declared here runs on the engine's loop thread unless its
 * comment says otherwise. Not for use outside processor/engine/.
 */
#ifndef SLUICE_ENGINE_INT_H
#define SLUICE_ENGINE_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "processor/engine/emit_cache.h"
#include "processor/engine/engine.h"
#include "processor/topology_int.h"
#include "state/store.h"

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

/* A task's life cycle: see the design note of tasks.c. */
typedef enum task_state {
    TASK_CREATED,   /* stores open, restore offsets chosen */
    TASK_RESTORING, /* some store behind its changelog end; source paused */
    TASK_RUNNING,   /* processing; source resumed */
    TASK_CLOSING,   /* withdrawn from queries; stores being closed */
    TASK_CLOSED,    /* about to be freed */
} task_state;

typedef struct task {
    int source; /* index into topology->sources */
    int32_t partition;
    task_state state; /* changed only by task_set_state (tasks.c) */
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

/* A standby replica of a task owned elsewhere (see standby.c). */
typedef struct standby_store {
    sl_store *store;
    sl_store_pending *batch; /* the slice's records, latest per key */
    int64_t position;        /* next changelog offset to read */
    bool caught_up;          /* reached the changelog's end once */
} standby_store;

typedef struct standby {
    int source;
    int32_t partition;
    uint64_t applied_since_checkpoint;
    char dir[PATH_MAX];
    standby_store stores[SL_TOPOLOGY_MAX_NODES]; /* indexed like topology->stores */
} standby;

/* engine->standby_wanted: what the membership said of a partition. */
enum { STANDBY_UNKNOWN = 0, STANDBY_WANTED = 1, STANDBY_NOT_WANTED = 2 };

/* What HTTP threads may read of one task (see queries.c). */
typedef enum query_state {
    QUERY_ABSENT,
    QUERY_RESTORING,
    QUERY_RUNNING,
    QUERY_STANDBY, /* a standby replica: read only when the client allows stale */
} query_state;

typedef struct query_slot {
    pthread_rwlock_t lock;
    query_state state;                       /* written under the write lock */
    sl_store *stores[SL_TOPOLOGY_MAX_NODES]; /* indexed like topology->stores */
    _Atomic int64_t lag;                     /* QUERY_STANDBY: records behind the changelog end */
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
    /* Wall time at which the last completed catch-up (globals_catch_up)
     * asked for the topic's ends; INT64_MIN: none yet. */
    int64_t caught_up_asked_ms;
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

/* The producer's transaction state: see the design note of collector.c. */
typedef enum txn_state {
    TXN_INIT,            /* no producer */
    TXN_READY,           /* no transaction open (at-least-once: always) */
    TXN_IN_TRANSACTION,  /* begun; the batch's records are in it */
    TXN_COMMITTING,      /* send_offsets_to_transaction + commit_transaction */
    TXN_ABORTABLE_ERROR, /* the commit failed: only an abort is left */
    TXN_ABORTING,        /* abort_transaction */
    TXN_FATAL_ERROR,     /* the producer is unusable: only a reset is left */
} txn_state;

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

    /* One group consumer per source (sub-topology), in its own group
     * <application.id>-<source name>, so each sub-topology is balanced on
     * its own (see clients.c); [src]. */
    rd_kafka_t *consumers[SL_TOPOLOGY_MAX_NODES];
    char group_id[SL_TOPOLOGY_MAX_NODES][SL_TOPOLOGY_MAX_NAME + 300];
    bool joined[SL_TOPOLOGY_MAX_NODES]; /* the consumer got its first assignment */
    size_t next_source;                 /* the group polled first next time */
    /* A group whose consumer failed fatally (fenced) is joined again with a
     * new consumer at group_rejoin_ms (clients_drop_group); [src]. */
    int64_t group_rejoin_ms[SL_TOPOLOGY_MAX_NODES];
    int64_t group_fenced_ms[SL_TOPOLOGY_MAX_NODES];
    int group_fences[SL_TOPOLOGY_MAX_NODES];
    /* Warm-up before joining (engine.c, warm_up): a new instance joins the
     * groups only once its standbys of the running instances' tasks caught
     * up. fresh: the instance id was created by this start. */
    bool fresh, join_pending;
    int64_t warm_started_ms, warm_max_ms, acceptable_lag, warm_logged_ms;
    atomic_bool warmup_expected, warming;
    atomic_llong warmup_plan; /* -1 until the membership planned; else partitions named */
    int wake[2]; /* pipe: every group consumer's queue writes a byte to wake[1]
                    when it becomes non-empty, so the loop waits on all */
    rd_kafka_t *producer, *restore_consumer, *global_consumer;
    /* Standby replicas (standby.c): [src][p] on the loop thread; what the
     * membership wants, [src][p], under standby_lock (any thread). */
    rd_kafka_t *standby_consumer;
    rd_kafka_queue_t *standby_queue;
    standby **standbys[SL_TOPOLOGY_MAX_NODES];
    unsigned char *standby_wanted[SL_TOPOLOGY_MAX_NODES];
    unsigned char *standby_snapshot[SL_TOPOLOGY_MAX_NODES]; /* loop thread's copy */
    pthread_mutex_t standby_lock;
    atomic_uint standby_version;
    atomic_bool standby_ready;
    unsigned standby_seen_version;
    int64_t standby_checkpoint_ms;
    sl_embedded_cluster *embedded;   /* borrowed; NULL on a real cluster */
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

    txn_state txn;        /* changed only by txn_set_state (collector.c) */
    bool dirty;           /* records processed since the last commit */
    bool delivery_failed; /* a write of the open batch was lost */
    bool needs_rewind;
    int64_t last_commit_ms;
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
        sl_counter *records_dlq, *records_wrong_partition, *changelog_records, *commits,
            *early_commits, *aborts, *producer_resets, *group_rejoins, *global_catch_ups,
            *restored_records, *restore_ms, *global_records, *punctuations, *replies,
            *replies_ignored, *cache_emitted, *cache_coalesced;
        sl_gauge *tasks_assigned, *tasks_running, *restore_remaining, *block_cache_bytes,
            *standby_tasks;
        sl_counter *standby_records;
        sl_histogram *process_seconds, *commit_seconds;
    } m;
    int64_t last_store_stats_ms;

    /* The record cache (sl_ctx_emit_coalesced): flushed by collector_commit
     * before the transaction commits, cleared by collector_drop_pending. */
    sl_emit_cache *emit_cache;
    /* Read-your-writes (sl_engine_query_settle): commits begun, and the
     * number begun when the last one finished applying. */
    atomic_uint_fast64_t commits_begun, commits_settled;
    /* Waiters for new readable state (sl_engine_await_applied): the loop
     * thread bumps applied_generation under applied_lock and broadcasts
     * applied_cond after each commit's apply, each global store batch and
     * each task that became queryable (engine_notify_applied). */
    pthread_mutex_t applied_lock;
    pthread_cond_t applied_cond;
    uint64_t applied_generation; /* under applied_lock */
    int applied_waiters;         /* under applied_lock: skip the broadcast when 0 */
};

#define LOG(engine, level, ...) sl_log(&(engine)->logger, level, "engine", __VA_ARGS__)

/* snprintf's result fits its buffer: every path and topic name is bounded,
 * and a name that does not fit is an error, never a silent truncation. */
static inline bool fits(int written, size_t size) {
    return written >= 0 && (size_t)written < size;
}

/* Every task of the engine, as `t` at [src][p]. The body may close (free)
 * `t`; `break` leaves only the current task (use a flag to stop early). */
#define FOR_EACH_TASK(engine, src, p, t)                                                           \
    for (size_t src = 0; src < (engine)->topology->n_sources; src++)                               \
        for (int32_t p = 0; (engine)->tasks[src] && p < (engine)->source_partitions[src]; p++)     \
            for (task *t = (engine)->tasks[src][p]; t; t = NULL)

/* ---- engine.c ----------------------------------------------------------- */
/* The group consumers' rebalance callback (clients.c installs it). */
void engine_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque);

/* ---- tasks.c ------------------------------------------------------------ */
int tasks_source_of_topic(const sl_engine *engine, const char *topic);
/* The task of a source partition, or NULL. */
task *tasks_of(const sl_engine *engine, const char *topic, int32_t partition);
/* Pause (true) or resume one partition of source `source`'s consumer. */
void tasks_pause_partition(sl_engine *engine, int source, int32_t partition, bool pause);
/* Create the task of a source partition (CREATED, then RESTORING or
 * RUNNING). The engine owns the task (engine->tasks). */
sl_err task_create(sl_engine *engine, int source, int32_t partition, char *errstr,
                   size_t errstr_size);
/* RESTORING -> RUNNING: the last store reached its changelog end. */
void task_start_running(sl_engine *engine, task *t);
/* Close and free a task: clean (its pending writes are applied) writes a
 * checkpoint, dirty leaves none. */
void task_close(sl_engine *engine, task *t, bool clean);
/* Close `t` dirty and create it again (paused), so it wipes (EOS) and
 * restores; the caller reassigns the restore consumer. */
sl_err task_recreate(sl_engine *engine, task *t);
/* Every task closed dirty and created again (after a producer reset). */
void tasks_recreate_all(sl_engine *engine);
/* Every task closed: clean, or dirty. */
void tasks_close_all(sl_engine *engine, bool clean);
/* The group of `source` assigned `partitions`: take them, paused, and
 * create tasks. */
void tasks_assign(sl_engine *engine, int source, rd_kafka_topic_partition_list_t *partitions);
/* Close the tasks of revoked `partitions` (clean or dirty) and give the
 * partitions up in the group of `source`. */
void tasks_revoke(sl_engine *engine, int source, rd_kafka_topic_partition_list_t *partitions,
                  bool clean);
/* Process one record of a RUNNING task. SL_OK also when the record went to
 * the dead-letter topic. SL_ERR_KAFKA_FATAL: the producer is unusable;
 * SL_ERR_KAFKA_ABORTABLE: the transaction may not commit (*why says why).
 * Then the record is not consumed and the loop must recover. */
sl_err task_process(sl_engine *engine, task *t, const rd_kafka_message_t *m, const char **why);
/* Run the punctuators that are due (wall-clock only, or stream-time too). */
void task_punctuate(sl_engine *engine, task *t, bool wall_clock_only);

/* <dir>/.checkpoint, the checkpoint of a task directory. */
void tasks_checkpoint_path(const char *dir, char *buf, size_t size);

/* ---- standby.c ---------------------------------------------------------- */
/* Size the standby tables (after topics_prepare). */
sl_err standby_init(sl_engine *engine, char *errstr, size_t errstr_size);
/* Reconcile with what the membership wants, read and write one slice,
 * checkpoint when due. True if the slice was full (more may be waiting). */
bool standby_poll(sl_engine *engine);
/* The task of (source, partition) is coming here: close its standby with a
 * checkpoint at its position, so the task restores only the tail. */
void standby_release(sl_engine *engine, int source, int32_t partition);
/* A task went away: see on the next poll whether a standby is wanted. */
void standby_revisit(sl_engine *engine);
/* Close every standby with a checkpoint (sl_engine_close). */
void standby_close_all(sl_engine *engine);
/* Warm-up: whether every wanted standby (of a source with stores) is open
 * and within `acceptable` records of its changelogs' ends, once the loop
 * has applied the membership's latest wanted set; *n: how many there are. */
bool standby_warm(sl_engine *engine, int64_t acceptable, size_t *n);
/* Free what is left (sl_engine_destroy). */
void standby_free_all(sl_engine *engine);

/* ---- restore.c ---------------------------------------------------------- */
/* The end offset of a changelog partition (where a restore ends). */
sl_err restore_changelog_end(sl_engine *engine, const char *topic, int32_t partition,
                             int64_t *end);
/* Assign the restore consumer every store still restoring, at its position. */
void restore_reassign(sl_engine *engine);
/* One restore slice. True while some store is still restoring. */
bool restore_poll(sl_engine *engine);

/* ---- collector.c -------------------------------------------------------- */
/* The producer's delivery report callback (clients.c installs it). */
void collector_delivery_cb(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque);
/* `headers` (NULL: new ones, when needed) with a traceparent header of the
 * thread's current trace added; unchanged when there is none. */
rd_kafka_headers_t *collector_trace_headers(rd_kafka_headers_t *headers);

/* Produce one record (copied; `headers` taken). SL_ERR_KAFKA_FATAL or
 * SL_ERR_KAFKA on failure, which also marks the batch failed. */
sl_err collector_produce(sl_engine *engine, const char *topic, int32_t partition, const void *key,
                         size_t key_len, const void *value, size_t value_len,
                         rd_kafka_headers_t *headers);
/* Produce a record of the record cache to sink `sink` (sl_emit_cache_flush). */
sl_err collector_emit_cached(void *opaque, int sink, const void *key, size_t key_len,
                             const void *value, size_t value_len);
/* Send `record` to the dead-letter topic with headers saying where from. */
void collector_send_to_dlq(sl_engine *engine, task *t, const sl_record *record, const char *node,
                           const char *reason);
/* Mark the batch dirty and, under EOS, begin a transaction if none is open.
 * The error of begin_transaction, classified. */
sl_err collector_begin(sl_engine *engine);
/* A transaction is open (EOS only): it must be committed or aborted. */
bool collector_txn_open(const sl_engine *engine);
/* The producer was created (READY) or destroyed (INIT). */
void collector_producer_created(sl_engine *engine);
void collector_producer_destroyed(sl_engine *engine);
/* Abort the open transaction, if any. SL_ERR_KAFKA_FATAL if the producer
 * is unusable afterwards; otherwise SL_OK (an abort error is logged). */
sl_err collector_abort(sl_engine *engine);
/* Commit the batch: the record cache, the consumed offsets, the
 * transaction (or flush + offset commit), then apply the pending writes to
 * the stores. SL_OK; SL_ERR_KAFKA_FATAL (reset the producer); or
 * SL_ERR_KAFKA_ABORTABLE with the reason in `why` (abort and rewind). */
sl_err collector_commit(sl_engine *engine, char *why, size_t why_size);
/* Drop every pending write and the record cache (after an abort). */
void collector_drop_pending(sl_engine *engine);

/* ---- globals.c ---------------------------------------------------------- */
sl_err globals_start(sl_engine *engine, char *errstr, size_t errstr_size);
void globals_poll(sl_engine *engine);
/* A lookup of global store `g` missed while processing a record produced
 * at `produced_ms` (wall): read the store's topic up to its ends as of now,
 * unless a catch-up that asked after produced_ms already did. */
void globals_catch_up(sl_engine *engine, int g, int64_t produced_ms);
void globals_checkpoint(sl_engine *engine);
void globals_free(sl_engine *engine);

/* ---- queries.c ---------------------------------------------------------- */
sl_err queries_init(sl_engine *engine, char *errstr, size_t errstr_size);
/* Visit `range` of an open store (skip, then at most limit entries) on the
 * caller's thread; the store must stay open meanwhile. why on error. */
sl_err queries_scan_store(sl_store *st, const sl_query_range *range, sl_query_visit_fn *visit,
                          void *opaque, size_t *visited, char *why, size_t why_size);
void queries_free(sl_engine *engine);
/* A task's stores become visible (RESTORING), readable (RUNNING), gone. */
void query_publish(sl_engine *engine, const task *t);
void query_set_running(sl_engine *engine, const task *t);
void query_withdraw(sl_engine *engine, const task *t);
/* Loop thread: state readable by queries changed (a commit applied, a
 * global store batch written, a task became queryable); wakes every
 * sl_engine_await_applied. */
void engine_notify_applied(sl_engine *engine);
/* A standby's stores become readable by stale queries, or gone (before any
 * of them is closed); its lag behind the changelog end. */
void query_publish_standby(sl_engine *engine, const standby *sb);
void query_withdraw_standby(sl_engine *engine, const standby *sb);
void query_set_standby_lag(sl_engine *engine, const standby *sb, int64_t lag);

/* ---- topics.c ----------------------------------------------------------- */
/* Fill in the topic names from application.id and the topology. */
sl_err topics_name(sl_engine *engine, char *errstr, size_t errstr_size);
/* Create or check every topic the engine uses; size engine->tasks. */
sl_err topics_prepare(sl_engine *engine, char *errstr, size_t errstr_size);

/* ---- clients.c ---------------------------------------------------------- */
sl_err clients_load_instance_id(sl_engine *engine, char *errstr, size_t errstr_size);
/* The producer (transactional under EOS, transactions initialised). */
sl_err clients_create_producer(sl_engine *engine, char *errstr, size_t errstr_size);
void clients_destroy_producer(sl_engine *engine);
/* The group consumers (one per source, each waking engine->wake), the
 * restore consumer (and its queue), the global consumer. */
sl_err clients_create_consumers(sl_engine *engine, char *errstr, size_t errstr_size);
/* Subscribe each group consumer to its source topic; a group that has no
 * committed offset yet first takes those of the single group of earlier
 * versions (group.id = application.id), so an upgrade does not reprocess. */
sl_err clients_subscribe(sl_engine *engine, char *errstr, size_t errstr_size);
/* The source whose group consumer `rk` is, or -1. */
int clients_source_of(const sl_engine *engine, const rd_kafka_t *rk);
/* Destroy the fatally failed consumer of group `src` (its tasks already
 * closed) and schedule a new one, backing off while fences repeat. */
void clients_drop_group(sl_engine *engine, size_t src);
/* Create and subscribe the consumers of dropped groups that are due. */
void clients_rejoin_groups(sl_engine *engine);
/* Leave every group (each revoke runs the rebalance callback). */
void clients_close_consumers(sl_engine *engine);
/* Destroy every client and close the wake pipe. */
void clients_destroy(sl_engine *engine);

/* ---- stats.c ------------------------------------------------------------ */
void stats_register(sl_engine *engine);
/* Sampled gauges (lag, store sizes, block cache), every few seconds. */
void stats_sample(sl_engine *engine);

#endif
