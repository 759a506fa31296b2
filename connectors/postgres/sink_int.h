/*
 * sink_int.h: private to connectors/postgres/: the body of the sink and the
 * functions its files share. The public API is sink.h; the design note
 * (invariants I1..I4, states) is at the top of sink.c.
 *
 *   sink.c       the loop: consume, batch, the flush transaction (rows and
 *                offsets together, dead letters before COMMIT), pause and
 *                backoff, resync, rebalances
 *   rows.c       the batch: records decoded into rows, duplicates marked
 *   copy.c       Postgres statements, COPY text and binary, the direct and
 *                staged writes, bisection of refused rows under savepoints
 *   tables.c     connections, migrations, and the rebuild into new tables
 *   lifecycle.c  new/destroy, the DLQ producer and topics, HTTP, metrics
 */
#ifndef SLUICE_PGSINK_INT_H
#define SLUICE_PGSINK_INT_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "connectors/postgres/sink.h"
#include "processor/base/arena.h"
#include "processor/base/log.h"
#include "processor/base/metrics.h"
#include "processor/http/server.h"

#define COMPONENT           "pgsink"
#define MAX_PARTITIONS      1024        /* per input topic */
#define ARENA_CAP           (64u << 20) /* decoded events of one batch */
#define COPY_BUF_CAP        ((size_t)512 << 20)
#define SEEK_TIMEOUT_MS     10000
#define DIRECT_SKIP_BATCHES 16 /* staged batches after a direct COPY failed */
#define ADMIN_TIMEOUT       10000
#define MIGRATION_LOCK      "7400312645101" /* pg_advisory_lock key: "sluice" schema */

enum { T_USERS, T_MESSAGES, N_TOPICS };

typedef struct part_state {
    bool assigned;
    bool eof;               /* rebuild: reached the end since the last seek */
    int64_t committed_next; /* next offset as stored in Postgres; -1: no row */
    int64_t pending_next;   /* after the records of the current batch */
} part_state;

typedef struct batch_msg {
    rd_kafka_message_t *m;
    int topic;
} batch_msg;

typedef struct batch_row {
    size_t msg; /* index into msgs */
    int topic;
    bool superseded;   /* a later row of the batch has the same key (dedupe_messages) */
    const void *event; /* Sluice__V1__UserRegistered / MessageSent, in the arena */
} batch_row;

typedef struct dlq_item {
    size_t msg;
    char reason[512];
} dlq_item;

typedef struct buf {
    char *data;
    size_t len, cap;
} buf;

/* Outcome of a Postgres step. */
typedef enum pg_res {
    PG_OK,
    PG_DATA,     /* the data was refused (SQLSTATE class 22 or 23) */
    PG_RETRY,    /* anything else: connection, server shutting down, ... */
    PG_CONFLICT, /* the stored offsets are not what we believed (I3) */
} pg_res;

struct sl_pgsink {
    sl_logger logger; /* first member: rd_kafka_opaque() is the sink */
    const sl_config *config;
    sl_pgsink_mode mode;
    const char *dsn;
    char group_id[256];
    char offsets_group[300];
    char topics[N_TOPICS][256];
    char dlq_topic[256];
    int dlq_partitions;
    const char *tables[N_TOPICS];
    int batch_rows, linger_ms, backoff_min_ms, backoff_max_ms;

    rd_kafka_t *consumer, *producer;
    bool group_mode; /* subscribed (run) vs assigned (rebuild) */
    PGconn *pg;
    _Atomic int state;
    int64_t pg_retry_at_ms, paused_since_ms;
    int backoff_ms;
    bool need_resync;
    char last_pg_error[512];

    part_state parts[N_TOPICS][MAX_PARTITIONS];
    int n_partitions[N_TOPICS];

    batch_msg *msgs;
    size_t n_msgs;
    batch_row *rows;
    size_t n_rows;
    dlq_item *dlq;
    size_t n_dlq;
    uint32_t *key_slots; /* dedupe_messages' open-addressing set: row index + 1, 0 = empty */
    size_t n_key_slots;  /* a power of two >= 2 * batch_rows */
    int direct_skip;     /* batches left to write through the stage after a direct COPY failed */
    int64_t batch_started_ms;
    sl_arena *arena;
    buf copy;
    _Atomic long dlq_delivery_failures;

    sl_metrics *metrics;
    sl_http_server *http;
    struct {
        sl_counter *rows[N_TOPICS], *records, *dead_lettered, *transactions, *pg_failures, *resyncs;
        sl_histogram *batch_rows, *txn_seconds;
        sl_gauge *lag, *state[4];
    } m;
    int64_t rows_total; /* for progress logs */
};

#define LOG(sink, level, ...) sl_log(&(sink)->logger, level, COMPONENT, __VA_ARGS__)

/* ---- sink.c */

void sl_pgsink_set_state(sl_pgsink *sink, sl_pgsink_state state);
void sl_pgsink_pg_close(sl_pgsink *sink);
/* Postgres failed for a reason other than the data: drop the batch, pause,
 * retry with exponential backoff. Logs once per state change. */
void sl_pgsink_pg_failed(sl_pgsink *sink, const char *why);
/* Try to (re)connect; on success the caller resyncs. */
bool sl_pgsink_pg_connect(sl_pgsink *sink);
rd_kafka_t *sl_pgsink_new_consumer(sl_pgsink *sink, const char *group, bool group_mode,
                                   char *errstr, size_t errstr_size);
void sl_pgsink_close_consumer(sl_pgsink *sink);
void sl_pgsink_update_lag(sl_pgsink *sink);
bool sl_pgsink_all_at_end(const sl_pgsink *sink);
/* One loop iteration: reconnect, resync, poll, flush on size or linger. */
void sl_pgsink_step(sl_pgsink *sink);

/* ---- rows.c */

void sl_pgsink_batch_clear(sl_pgsink *sink);
void sl_pgsink_add_dlq(sl_pgsink *sink, size_t msg, const char *reason);
/* Decode a record value into the batch arena. protobuf-c keeps strings as C
 * strings, so a string with a NUL byte would silently lose its tail: a
 * value whose re-encoding has another size than the record is refused
 * rather than written shortened. */
void sl_pgsink_decode_record(sl_pgsink *sink, size_t msg, int topic);
/* Mark every message row that a later row of the batch repeats (same
 * dialog_id and sequence) as superseded: the last one wins, as in the
 * staged path's DISTINCT ON. The set has at least twice as many slots as
 * the batch has rows, so probing always ends. */
void sl_pgsink_dedupe_messages(sl_pgsink *sink);

/* ---- copy.c */

/* Classify a failed result (res may be NULL: the connection failed). Fills
 * why with the server's message (never a DSN). */
pg_res sl_pgsink_pg_classify(PGconn *conn, const PGresult *res, char *why, size_t why_size);
pg_res sl_pgsink_pg_run(PGconn *conn, const char *sql, int n_params, const char *const *params,
                        char *why, size_t why_size);
/* Rows [lo, hi): COPY into the stage tables, upsert into the targets, empty
 * the stages (they are reused within the transaction by write_range). With
 * direct, the messages take write_messages_direct instead (lo..hi must be
 * the whole batch). */
pg_res sl_pgsink_write_rows(sl_pgsink *sink, size_t lo, size_t hi, bool empty_stage, bool direct,
                            char *why, size_t why_size);
/* Bisection under savepoints: keep what Postgres accepts, dead-letter each
 * single row it refuses, with its SQL error. */
pg_res sl_pgsink_write_range(sl_pgsink *sink, size_t lo, size_t hi, char *why, size_t why_size);

/* ---- tables.c */

/* The tables a running sink writes: "users", "messages". */
extern const char *const sl_pgsink_default_tables[N_TOPICS];
/* libpq connection with a bounded connect time; the user's DSN wins for every
 * key it sets. NULL + why on failure. */
PGconn *sl_pgsink_pg_open(const char *dsn, char *why, size_t why_size);
void sl_pgsink_wait_for_pg(sl_pgsink *sink, volatile sig_atomic_t *stop);
/* Build users_rebuild/messages_rebuild from the beginning of the topics with
 * an assign-only consumer (running sinks keep serving the old tables), then
 * swap. Returns false only when stopped first. */
bool sl_pgsink_rebuild(sl_pgsink *sink, volatile sig_atomic_t *stop, char *errstr,
                       size_t errstr_size);

/* ---- lifecycle.c */

/* The DLQ producer, the input topics' existence and the DLQ topic. */
sl_err sl_pgsink_start_kafka(sl_pgsink *sink, char *errstr, size_t errstr_size);

#endif
